/* The check of a claimed file before any API quota is spent: open it by descriptor (a regular
 * file with one link, within max_file_bytes), hash the content, read the CSV header and check
 * the mapped columns. Runs in a worker thread; pure POSIX, no libuv. */
#ifndef RDD_PRECHECK_H
#define RDD_PRECHECK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "normalize.h"

/* Reads of the hash: large, so that big files go at disk speed. */
#define PRECHECK_READ_BYTES (1024 * 1024)

struct precheck {
	int fd;           /* open on the file once it has passed; the caller closes it. -1 */
	uint64_t bytes;
	char sha256[65];  /* "" when the file could not be read whole */
	char reason[512]; /* why it was refused */
	/* The file that was hashed, from the fstat of FD before its first read (BYTES is its
	 * size): a later write, truncation, link or chmod shows against these, and so does
	 * another file renamed over its name. Zero when it could not be opened. */
	uint64_t dev, ino;
	struct timespec mtime, ctime;
	/* What the CSV is and what is uploaded (normalize.h): kept even when it was refused, for
	 * the report. Owned: normalize_clear. */
	struct normalize norm;
};

/* Checks DIR_FD/NAME for FOLDER, and normalizes it (normalize.h) with its copy and spill files
 * in WORK_DIR_FD and its rejects file as WORK_DIR_FD/REJECTS_NAME (NULL: none, a dry run).
 * RET->norm is overwritten: a former result must have been cleared (normalize_clear).
 * Returns 0 with RET filled and RET->fd open; or a negative errno with RET->reason saying why
 * the file is refused (RET->fd is -1; RET->norm.temporary when the refusal is the machine's,
 * not the file's). -ECANCELED when CANCEL became true (a shutdown): the check stopped early and
 * refused nothing. */
int precheck_run(int dir_fd, const char *name, const struct config_folder *folder,
		 int work_dir_fd, const char *rejects_name, const atomic_bool *cancel,
		 struct precheck *ret);

/* Whether ST (a later fstat of PC->fd, or a stat of its name) is still the file PC hashed: the
 * same inode with the same size, mtime and ctime. When not, WHAT says how, for a message:
 * "17,377,790 → 17,390,180 bytes", or what changed when the size did not. */
bool precheck_same_file(const struct precheck *pc, const struct stat *st, char *what,
			size_t whatsz);

#endif
