/* Which emails of a file repeat an earlier row's, with memory bounded whatever the file's size:
 * each email is kept as a 128-bit hash (xxHash's XXH3) with its line, in partitions by hash that
 * spill to unnamed temporary files when memory is full; each partition is then read back
 * through a hash table of its own. Pure POSIX and xxhash; no libuv. */
#ifndef RDD_EMAILSET_H
#define RDD_EMAILSET_H

#include <stddef.h>
#include <stdint.h>

/* In-memory entries, all partitions together (24 bytes each). */
#define EMAILSET_MEMORY_ENTRIES (48 * 1024)

struct emailset_repeat {
	uint64_t line;       /* the row that repeats an email */
	uint64_t first_line; /* the row that had it first */
};

struct emailset;

/* SIZE_HINT: the file's size, which sets how many partitions there are (about one per MiB, up
 * to 256, so that one partition's table stays small). Spill files are made in TMP_DIR_FD. */
int emailset_new(int tmp_dir_fd, uint64_t size_hint, struct emailset **ret);
/* EMAIL as it is to be compared: the caller trims and lower-cases it. */
int emailset_add(struct emailset *s, const char *email, size_t len, uint64_t line);
/* Every repeat, sorted by line: *RET malloc'd (NULL when none). A negative errno when a spill
 * file cannot be written or read. */
int emailset_repeats(struct emailset *s, struct emailset_repeat **ret, size_t *ret_n);
void emailset_free(struct emailset *s);

#endif
