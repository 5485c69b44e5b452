/* What is known about one file from its claim to its end, and the two ways it is told: the JSON
 * report beside the file in done/ or failed/, and the outcome's log line. Pure (cJSON only). */
#ifndef RDD_REPORT_H
#define RDD_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "batch.h"
#include "ledger.h"
#include "normalize.h"
#include "resend.h"

enum report_stage { REPORT_STAGE_CHECK, REPORT_STAGE_UPLOAD, REPORT_STAGE_IMPORT };

/* One upload of a file split into parts. */
struct report_part {
	uint64_t rows, bytes; /* bytes: the upload's CSV, its header included */
	unsigned attempts;
	long http_status;
	char import_id[64];   /* "" until uploaded */
	struct resend_import import;
};

struct report {
	const char *folder; /* borrowed: the folder's name */
	const char *file;   /* borrowed: the file's name as claimed */
	uint64_t bytes;
	char sha256[65];    /* "" until hashed */
	unsigned attempts;
	unsigned rate_limited; /* requests refused for the rate limit (429): waits, not attempts */
	int64_t claimed_at_ms, uploaded_at_ms; /* wall clock; uploaded 0: not uploaded */
	int64_t sent_at_ms; /* wall clock: when the last upload request began; 0: none */
	long http_status;   /* the upload's answer, 0 when none */
	char import_id[64]; /* "" until uploaded */
	struct resend_import import; /* status[0] == '\0' until read; a split file's: the sum */
	/* What the CSV was found to be and what was made of it (borrowed; NULL: never read). */
	const struct normalize *csv;
	const char *rejects_file; /* borrowed: its name beside the report, or NULL */
	/* A duplicate (on_duplicate skip or fail): the earlier import of the same content
	 * (borrowed; NULL: none). Skipped when not failed: moved to done, nothing sent. */
	const struct ledger_entry *duplicate_of;
	/* Coalesced with other files into one import (batch.h): a reference the caller holds;
	 * NULL: imported on its own. */
	struct batch_info *batch;
	/* Resumed after a crash, its upload maybe made (reconcile.h): RECONCILED 0, not asked;
	 * else 1 + the outcome (adopted, none, several) and how many imports could have been
	 * its. */
	int reconciled;
	unsigned reconcile_candidates;
	/* The uploads (owned by the caller); a report lists them when there are several. */
	struct report_part *parts;
	size_t n_parts;
	/* The outcome, once decided. */
	bool failed;
	enum report_stage stage;
	struct resend_error error;
};

const char *report_stage_name(enum report_stage stage);

/* Records a failure at STAGE with an HTTP status (0: none), Resend's error name (NULL: none)
 * and a message. */
void report_fail(struct report *r, enum report_stage stage, long status, const char *name,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The report as pretty-printed JSON (malloc'd, cJSON_free), FINISHED_MS being the wall-clock
 * time the file leaves processing. Strings that are not valid UTF-8 (file names can be any
 * bytes) are written in the logs' escaped form. NULL when out of memory. */
char *report_json(const struct report *r, int64_t finished_ms);

/* R's receipt for the person who dropped the file (receipts.h): its name, the outcome, the
 * rows read, imported and rejected (REJECTS_NAME: the rejects file beside the receipt, or NULL),
 * the import's status and counts, the error in words; nothing of this host (no path, no key).
 * Pretty-printed JSON (malloc'd, cJSON_free); NULL when out of memory. */
char *report_receipt_json(const struct report *r, int64_t finished_ms, const char *rejects_name);
/* The notification of R's end as event TYPE ("file.done", ...): the Standard Webhooks
 * payload {type, timestamp, data}, data being what a person outside this host may see of it
 * (no path of this host, no key): folder, file, HOST (NULL: not in a fleet), outcome, rows,
 * the import and its counts (Resend's, for the whole import when coalesced), the batch, the
 * duplicate, the error. Compact JSON (malloc'd, cJSON_free); NULL when out of memory. */
char *report_event_json(const struct report *r, const char *type, int64_t finished_ms,
			const char *host);
/* What the ledger records of R now (STATUS; FINISHED_MS the file's end for done, failed and
 * skipped), with the folder's SETTINGS_HASH: every string its own (ledger_entry_clear). -ENOMEM. */
int report_ledger_entry(const struct report *r, const char *settings_hash,
			enum ledger_status status, int64_t finished_ms, struct ledger_entry *ret);

/* The sum of the parts' import results, with status "completed" when they all completed,
 * "failed" when one failed; the counts each part gave. */
void report_sum_parts(struct report *r);

/* Logs the outcome, one line: "news: 'a.csv' imported, import <id>, 3 rows (...), 1 attempt",
 * or "news: 'a.csv' failed at upload: ... (moved to DIR/FINAL, 3 attempts)". */
void report_log_outcome(const struct report *r, const char *dir, const char *final_name);

#endif
