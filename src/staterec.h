/* The per-file state record in the processing directory: what a restart needs to resume a
 * claimed file without uploading it twice. Pure (cJSON, OpenSSL's sha256).
 *
 * It is written before each upload attempt (so that a file whose upload always kills the
 * daemon cannot retry for ever) and, durably, once an import exists (so that a restart only
 * follows it). It carries the content's sha256: a record left behind by a crash between a
 * file's move to done/ and the record's removal never attaches to a new file of that name,
 * and the folder's next opening removes it (staterec_sweep). */
#ifndef RDD_STATEREC_H
#define RDD_STATEREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "report.h"

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
	/* Coalesced (batch.h): the batch it was sent in, written before the batch's request
	 * ("" when none), its files and rows (the import's), and when that request began (wall
	 * clock; 0: unknown). */
	char batch_id[BATCH_ID_LEN + 1];
	unsigned batch_files;
	uint64_t batch_rows;
	int64_t sent_at_ms;
};

/* BUF gets the record's file name for the claimed file FILE. */
void staterec_name(char buf[STATEREC_NAME_LEN + 1], const char *file);

/* Records in the processing directory DIR_FD, and reports staged beside them (".report-" and
 * the same 32 hex digits), whose file is none of FILES (the directory's N files, listed just
 * before, while nothing else writes there: folder_open, before any job of the folder runs):
 * a crash between a file's move to done/ or failed/ and their removal leaves them, and
 * nothing else would ever remove them. Removed; *RET_REMOVED how many. 0, or -errno when the
 * directory cannot be read (what was removed by then stays removed). */
int staterec_sweep(int dir_fd, char *const *files, size_t n, size_t *ret_removed);

/* The record as compact JSON (malloc'd, cJSON_free); FILE is stored for a human reader only.
 * NULL when out of memory. */
char *staterec_encode(const char *file, const struct staterec *s);

/* Parses a record leniently: missing or malformed fields are left at 0 / "". -EBADMSG when TEXT
 * is not a JSON object. */
int staterec_decode(const char *text, size_t len, struct staterec *ret);

void staterec_clear(struct staterec *s);

/* The record of what REP says was done, counting ATTEMPTS uploads of the part under way (the
 * caller counts the one about to start, when the record must), with PLAN the fingerprint of
 * how the file is split (used when REP has several parts). RET owns its parts
 * (staterec_clear). -ENOMEM. */
int staterec_from_report(const struct report *rep, unsigned attempts, const char *plan,
			 struct staterec *ret);

/* A resumed file, checked again (REP's parts planned), takes what its record S says: the
 * attempts, times and import ids of the parts imported before; *RET_DONE of them (the part to
 * upload next; REP->n_parts when all are), 0 when none. *RET_FOREIGN: S is an earlier file's
 * of that name (another content), and nothing is taken. -ESTALE, with WHY, when parts were
 * imported but the file is split otherwise now (other settings): none of them can be trusted
 * to be the same rows, and nothing more may be uploaded. */
int staterec_apply(const struct staterec *s, const char *plan, struct report *rep,
		   size_t *ret_done, bool *ret_foreign, char *why, size_t whysz);

#endif
