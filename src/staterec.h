/* The per-file state record in the processing directory: what a restart needs to resume a
 * claimed file without uploading it twice. Pure (cJSON, OpenSSL's sha256).
 *
 * It is written before each upload attempt (so that a file whose upload always kills the
 * daemon cannot retry for ever) and, durably, once an import exists (so that a restart only
 * follows it). It carries the content's sha256: a record left behind by a crash between a
 * file's move to done/ and the record's removal never attaches to a new file of that name. */
#ifndef RDD_STATEREC_H
#define RDD_STATEREC_H

#include <stddef.h>
#include <stdint.h>

/* A record of a file in thousands of parts is long. */
#define STATEREC_MAX_BYTES (4 * 1024 * 1024)
/* ".state-" and 32 hex digits: fixed length, whatever the file's name ("<name>.state" plus a
 * temporary suffix would not fit NAME_MAX for long names). */
#define STATEREC_NAME_LEN 39

struct staterec_part {
	char import_id[64];
	unsigned attempts;
};

struct staterec {
	char sha256[65];    /* "" in records of version 0.1, which had none; "invalid" when
			     * the field is there but holds no sha256 */
	unsigned attempts;
	int64_t claimed_at_ms, uploaded_at_ms;
	char import_id[64]; /* "" until uploaded; a split file's: its first part's */
	/* A file uploaded in parts: how many, the fingerprint of how it was split (so that a
	 * restart that splits it otherwise is noticed), and the parts imported so far, in order.
	 * N_PARTS 0: not split. DONE is owned after staterec_decode (staterec_clear), borrowed
	 * by staterec_encode. */
	unsigned n_parts;
	char plan[17];
	struct staterec_part *done;
	size_t n_done;
};

/* BUF gets the record's file name for the claimed file FILE. */
void staterec_name(char buf[STATEREC_NAME_LEN + 1], const char *file);

/* The record as compact JSON (malloc'd, cJSON_free); FILE is stored for a human reader only.
 * NULL when out of memory. */
char *staterec_encode(const char *file, const struct staterec *s);

/* Parses a record leniently: missing or malformed fields are left at 0 / "". -EBADMSG when TEXT
 * is not a JSON object. */
int staterec_decode(const char *text, size_t len, struct staterec *ret);

void staterec_clear(struct staterec *s);

#endif
