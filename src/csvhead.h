/* The CSV header row: read it, check that the configured columns are there. */
#ifndef RDD_CSVHEAD_H
#define RDD_CSVHEAD_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define CSVHEAD_MAX_BYTES (64 * 1024) /* a header row longer than this is refused */

struct csvhead {
	char **fields; /* owned; UTF-8 BOM removed from the first field */
	size_t n_fields;
};

/* Reads the first record of the CSV open on FD (with pread from offset 0, so the descriptor's
 * offset is untouched). Quoted fields (with commas, doubled quotes, newlines), LF and CRLF line
 * ends and a leading UTF-8 BOM are handled. Returns 0, or a negative errno with a one-line
 * human reason in ERRBUF: -ENODATA empty file, -E2BIG header longer than CSVHEAD_MAX_BYTES,
 * -EILSEQ malformed (e.g. unterminated quote), or the read error. */
int csvhead_read(int fd, struct csvhead *ret, char *errbuf, size_t errsz);

/* The same from the first bytes of a file, already read (by the hash, say): DATA holds its
 * first LEN bytes, either the whole file (COMPLETE) or at least CSVHEAD_MAX_BYTES + 1 of them. */
int csvhead_parse(const void *data, size_t len, bool complete, struct csvhead *ret, char *errbuf,
		  size_t errsz);
void csvhead_free(struct csvhead *h);

/* Checks that every column named by MAP is in the header (exact, case-sensitive match, as
 * Resend does). Without a map (map->present false) the header must contain "email".
 * Returns 0, or -ENOENT with ERRBUF saying which columns are missing and which the file has,
 * e.g. "CSV header lacks column 'E-mail' (column_map.email); header has: 'Email', 'Name'". */
int csvhead_check(const struct csvhead *h, const struct config_column_map *map, char *errbuf,
		  size_t errsz);

/* The configured columns in a header, matched as csv.header says. */
struct csvhead_match {
	size_t email;       /* the index of the email column */
	const char **names; /* the header as it is to be uploaded: each field's own name, or the
			     * column_map name it matched when that differs (relaxed); borrowed
			     * from the header and the map, the array owned */
	size_t n_renamed;
};

/* csvhead_check with MODE (exact: the same as csvhead_check); on success RET is filled. */
int csvhead_match(const struct csvhead *h, const struct config_column_map *map,
		  enum config_header mode, struct csvhead_match *ret, char *errbuf, size_t errsz);
void csvhead_match_free(struct csvhead_match *m);

#endif
