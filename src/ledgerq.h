/* The ledger's own thread: every ledger call the daemon makes runs there, in order, never on the
 * loop. Records are written in groups (one transaction, one sync, for everything queued at
 * once) and retried, in order, until they are down; while they fail, the daemon is told once
 * (to pause its intake) and once more when they work again. Look-ups come back on the loop. */
#ifndef RDD_LEDGERQ_H
#define RDD_LEDGERQ_H

#include <stdbool.h>
#include <uv.h>

#include "ledger.h"

struct ledgerq;

/* A look-up's answers: the file's own unfinished entry (recovery), the latest import of the
 * same content under the same settings (duplicates) and another file of the content uploaded;
 * each result 0 or -ENOENT, never an error. A read that fails is a failure of the ledger like a
 * write's: the look-up is tried again with its batch, in order, while HEALTH says the ledger
 * fails, and is answered only once its reads work. */
struct ledgerq_lookup {
	int unfinished_result, imported_result, uploaded_result;
	struct ledger_entry unfinished, imported;
	struct ledger_entry uploaded; /* another file of the content, uploaded, not finished */
	/* A fleet: 0 when another file or host of the fleet imports the content now (ELSEWHERE:
	 * its file and host); else -ENOENT (this file has it, or no fleet). */
	int elsewhere_result;
	struct ledger_entry elsewhere;
};

typedef void (*ledgerq_lookup_cb)(const struct ledgerq_lookup *res, void *data);

/* HEALTH is called on the loop when writing starts failing (FAILING true, with the ledger's
 * error) and when it works again. */
int ledgerq_new(uv_loop_t *loop, struct ledger *l,
		void (*health)(bool failing, const char *error, void *data), void *data,
		struct ledgerq **ret);
/* Queues E (copied) to be recorded. -ENOMEM (said in the log: the entry is lost to history,
 * not to recovery, which the per-file records carry). */
int ledgerq_record(struct ledgerq *q, const struct ledger_entry *e);
/* The same, and WRITTEN(DATA) on the loop once E is committed (never while the ledger fails;
 * ledgerq_cancel with *RET stops the call). */
int ledgerq_record_then(struct ledgerq *q, const struct ledger_entry *e,
			void (*written)(void *data), void *data, void **ret);
/* Looks FOLDER/FILE of content SHA256 up (and, when WANT_IMPORTED, an import of that content
 * under SETTINGS_HASH finished at or after SINCE_MS, and another file of it uploaded but not
 * finished), in order after every record queued
 * before. CB(answers, DATA) on the loop; the answers live during the call. The strings are
 * copied. *RET is the look-up, for ledgerq_cancel until CB is called. */
int ledgerq_lookup(struct ledgerq *q, const char *folder, const char *file, const char *sha256,
		   const char *settings_hash, int64_t since_ms, bool want_imported,
		   ledgerq_lookup_cb cb, void *data, void **ret);
/* Which of the N import IDS a file uploaded at or after SINCE_MS has (ledger_knows_import), in
 * order after every record queued before: CB(KNOWN, N, DATA) on the loop, KNOWN[i] for IDS[i]
 * (alive during the call). A read that fails is retried like a look-up's. *RET as for
 * ledgerq_lookup. -ENOMEM. */
typedef void (*ledgerq_known_cb)(const bool *known, size_t n, void *data);
int ledgerq_known_imports(struct ledgerq *q, const char *const *ids, size_t n, int64_t since_ms,
			  ledgerq_known_cb cb, void *data, void **ret);
/* WORK(ledger, DATA) in the thread, in order after everything queued before and in the same
 * transaction as the records beside it (retried with them while the ledger fails: WORK must
 * be idempotent, and return a negative errno only for a failure of the ledger, saying other
 * outcomes in DATA); then DONE(DATA) on the loop. RELEASE(DATA) (may be NULL) when the call is
 * over, done, cancelled or dropped at close. *RET (may be NULL) for ledgerq_cancel. -ENOMEM. */
int ledgerq_call(struct ledgerq *q, int (*work)(struct ledger *l, void *data),
		 void (*done)(void *data), void (*release)(void *data), void *data, void **ret);
/* The caller of look-up L is gone: CB is never called. */
void ledgerq_cancel(struct ledgerq *q, void *l);
/* Removes entries finished before BEFORE_MS, in the thread. */
int ledgerq_prune(struct ledgerq *q, int64_t before_ms);
bool ledgerq_failing(const struct ledgerq *q);
/* Writes what is queued (giving up after a few seconds if the ledger still fails, with a log
 * line saying how many entries are lost to history), stops the thread and frees Q once its
 * handle is closed. Look-ups still queued are not answered: their callers are gone. */
void ledgerq_close(struct ledgerq *q);

#endif
