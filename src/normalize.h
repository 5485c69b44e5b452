/* A claimed CSV file made into what Resend reads: its dialect found (byte-order mark, Excel's
 * sep= line, encoding, delimiter), its rows checked (field count, email, repeats), and, unless it
 * is already clean UTF-8 with commas and the exact header, a normalized copy written (UTF-8,
 * commas, fields quoted as needed, header names as mapped, rejected rows left out or kept as
 * invalid_rows says). Rejected rows are listed in a rejects file; a file bigger than
 * max_upload_bytes is planned as parts on row boundaries, each carrying the header. Runs in a
 * worker thread with bounded memory; pure POSIX, iconv, libcsv and xxhash, no libuv.
 *
 * Two passes at most. The first is fed the file by the caller (the hash's own reads, so that a
 * clean file is read once): it detects, checks and collects the emails. The second, only when
 * there is a copy or a rejects file to write, reads the file again. */
#ifndef RDD_NORMALIZE_H
#define RDD_NORMALIZE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Detection looks at this much of the file's start. */
#define NORMALIZE_DETECT_BYTES (64 * 1024)
#define NORMALIZE_REJECTS_SUFFIX ".rejects.csv"

enum normalize_reason {
	NORMALIZE_WRONG_FIELD_COUNT,
	NORMALIZE_EMPTY_EMAIL,
	NORMALIZE_INVALID_EMAIL,
	NORMALIZE_REPEATED_EMAIL,
	NORMALIZE_N_REASONS
};

/* "wrong_field_count", "empty_email", "invalid_email", "repeated_email" */
const char *normalize_reason_key(enum normalize_reason r);

/* One upload: the first head_bytes of the source, then BYTES from OFFSET. */
struct normalize_part {
	uint64_t offset, bytes, rows;
};

struct normalize {
	/* What was found, for the report. READ is false when the CSV was never read. */
	bool read;
	const char *encoding_from; /* "utf-8", "utf-16le", "windows-1252", ... (static) */
	const char *bom;           /* "utf-8", "utf-16le", "utf-16be" or NULL (static) */
	bool sep_line;
	char delimiter;
	enum config_header header;
	char **renamed_from, **renamed_to; /* header names changed by relaxed matching (owned) */
	size_t n_renamed;
	bool normalized; /* a copy is uploaded; false: the original bytes */
	uint64_t rows, rows_uploaded, rows_rejected;
	uint64_t rejected[NORMALIZE_N_REASONS];
	enum config_invalid_rows invalid_rows;
	bool rejects_written; /* the rejects file is in place, complete and synced */
	uint64_t bytes_before, bytes_after;
	/* The upload. FD: the copy (owned), or -1 when the original is uploaded. */
	int fd;
	uint64_t head_bytes;
	struct normalize_part *parts;
	size_t n_parts;
	/* For coalescing (config coalesce), a file uploaded in one part only. HEADER_LEN: the
	 * uploaded source's header, line end included (parts[0] starts at 0 and holds it).
	 * EMAILS: the 64-bit XXH3 hashes of its rows' emails, lower-cased (owned; NULL: not
	 * collected: coalesce off, more than coalesce_max_rows rows, or several parts).
	 * precheck fills in HEADER_HASH and ENDS_WITH_NEWLINE. */
	uint64_t header_len;
	uint64_t *emails;
	size_t n_emails;
	uint64_t header_hash;
	bool ends_with_newline;
	/* Refused for a reason of the machine's (the copy could not be written: a full disk, an
	 * I/O error): the file is not at fault, and the check should be tried again. */
	bool temporary;
};

struct normalizer;

/* For FOLDER's settings; SIZE is the file's; FIRST its first LEN bytes: all of them
 * (COMPLETE), or at least NORMALIZE_DETECT_BYTES. The copy and spill files are made in
 * TMP_DIR_FD (fsops_open_tmpfile); the rejects file is REJECTS_DIR_FD/REJECTS_NAME, created or
 * replaced (REJECTS_NAME NULL: none, as in a dry run). -ENOMEM. */
int normalizer_new(const struct config_folder *folder, uint64_t size, const void *first,
		   size_t len, bool complete, int tmp_dir_fd, int rejects_dir_fd,
		   const char *rejects_name, struct normalizer **ret);
/* The first pass: the file's bytes in order from its start. A problem is kept for finish. */
void normalizer_feed(struct normalizer *n, const void *buf, size_t len);
/* Ends the first pass and does the rest: the repeats, and a second pass over SRC_FD when there
 * is a copy or a rejects file that the first could not write. Returns 0 with RET filled, or a
 * negative errno with REASON saying why the file is refused (RET still says what was found;
 * RET->temporary when it is not the file's fault; -ECANCELED when CANCEL became true). */
int normalizer_finish(struct normalizer *n, int src_fd, const atomic_bool *cancel,
		      struct normalize *ret, char *reason, size_t reasonsz);
void normalizer_free(struct normalizer *n);

/* Frees what RET owns (closes the copy). */
void normalize_clear(struct normalize *ret);


#endif
