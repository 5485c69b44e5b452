/* A CSV file read as a stream of UTF-8 records, whatever its encoding and delimiter: iconv
 * decodes it (glibc), libcsv splits it, and this module says where each record starts (line,
 * byte offset in the decoded text) and keeps its original text. Bytes that no CSV export holds
 * (NUL, other C0 and C1 control characters, bytes invalid in the encoding) stop the scan with
 * their line
 * and column. Memory is bounded: one record at a time, at most CSVSCAN_MAX_ROW_BYTES. Pure: no
 * libuv, no I/O. */
#ifndef RDD_CSVSCAN_H
#define RDD_CSVSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSVSCAN_MAX_ROW_BYTES (1024 * 1024)

/* What the bytes are: the iconv name of the source encoding, NULL for UTF-8 (validated, not
 * converted). */
struct csvscan_dialect {
	const char *iconv_from;
	char delimiter;
	uint64_t skip;       /* source bytes before the CSV: a byte-order mark, a sep= line */
	uint64_t first_line; /* the line number of the first line after SKIP (1, or 2 after sep=) */
};

struct csvscan_record {
	char **fields;    /* NUL-terminated, valid UTF-8; owned by the scanner until the callback
			   * returns */
	size_t *lens;
	size_t n_fields;
	const char *raw;  /* the record's text, line end excluded */
	size_t raw_len;
	uint64_t line;    /* the line it starts on */
	uint64_t offset;  /* where it starts in the decoded text (after SKIP: offset 0 is SKIP) */
	uint64_t index;   /* 0 for the first record (the header) */
};

/* Called for each record; a negative return stops the scan with that error (csvscan_feed and
 * csvscan_finish return it). */
typedef int (*csvscan_record_cb)(const struct csvscan_record *rec, void *data);

struct csvscan_stats {
	uint64_t lines;       /* line breaks seen, plus one for a last line without one */
	uint64_t blank_lines; /* lines without any character, outside quoted fields */
	uint64_t lone_cr;     /* line breaks that are a CR alone (old Mac) */
	uint64_t decoded_bytes;
	bool bad_utf8;        /* the scan stopped at bytes that are not UTF-8 (iconv_from NULL) */
	uint64_t multibyte;   /* UTF-8 characters of more than one byte before it stopped */
};

struct csvscan;

/* -EINVAL: iconv cannot convert from D->iconv_from; -ENOMEM. */
int csvscan_new(const struct csvscan_dialect *d, csvscan_record_cb cb, void *data,
		struct csvscan **ret);
/* Source bytes, in order, from the file's start (the first D->skip bytes are passed over).
 * 0, or a negative errno with csvscan_error() saying what and where: -EILSEQ a byte that no
 * text holds, or invalid in the encoding; -E2BIG a row longer than CSVSCAN_MAX_ROW_BYTES; the
 * callback's error. */
int csvscan_feed(struct csvscan *s, const void *buf, size_t len);
/* The end of the file: -EBADMSG for a quoted field never closed, or bytes left that end in the
 * middle of a character. */
int csvscan_finish(struct csvscan *s);
const char *csvscan_error(const struct csvscan *s);
const struct csvscan_stats *csvscan_stats(const struct csvscan *s);
void csvscan_free(struct csvscan *s);

#endif
