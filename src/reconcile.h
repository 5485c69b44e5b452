/* Reconciliation after a crash: a file (or a batch) whose upload may have reached Resend before
 * the daemon died (its record counts an attempt, but holds no import) is not sent again
 * blindly. The imports Resend lists as made since that attempt could have begun (minus clock
 * skew), less those the ledger knows, are its candidates; once they have finished, the single
 * one whose row count is the file's (the batch's) is adopted, and the file is followed as if
 * the answer had arrived. None: the file is uploaded. Several (or one that several files could
 * claim): uploaded, and the report says so. The files resumed together are reconciled in one
 * round (one listing), so that no import is adopted twice. Runs on the loop; its requests take
 * the pacer's poll turns and tokens. */
#ifndef RDD_RECONCILE_H
#define RDD_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "batch.h"
#include "pacer.h"
#include "resend.h"

struct config;
struct ledgerq;
struct metrics;
struct resend_client;
struct resend_call;

/* Embedded in a resumed file's job. */
struct reconcile_entry {
	int64_t since_ms;                 /* wall clock: its attempt began at or after */
	uint64_t rows;                    /* what its import counts (a batch's: the batch's) */
	char group[BATCH_ID_LEN + 1];     /* the files of one batch claim one import; "": alone */
	struct reconcile_entry *prev, *next;
	bool queued;
};

enum reconcile_outcome {
	RECONCILE_NONE,    /* no import of it: upload */
	RECONCILE_ADOPT,   /* IMPORT_ID is its import */
	RECONCILE_SEVERAL, /* CANDIDATES could be: upload, and say so */
};

struct reconcile_result {
	enum reconcile_outcome outcome;
	char import_id[64];
	struct resend_import import; /* ADOPT: as listed (finished, with its counts) */
	unsigned candidates;
};

struct reconcile_events {
	void (*done)(struct reconcile_entry *e, const struct reconcile_result *r, void *data);
	void *data;
};

struct reconciler {
	uv_loop_t *loop;
	struct pacer *pacer;
	struct resend_client *api;
	const struct config *cfg;
	struct ledgerq *lq;      /* NULL: no ledger (nothing is known) */
	struct metrics *metrics; /* NULL: not counted */
	struct reconcile_events ev;
	struct pacer_entry se;
	struct reconcile_entry *waiting; /* for the next round (utlist) */
	struct reconcile_entry *round;   /* in the round under way */
	struct resend_call *call;
	void *known_op;                  /* the ledger's answer awaited */
	struct resend_listed_import *seen; /* the round's imports, made since its oldest attempt */
	size_t n_seen, cap_seen;
	int64_t oldest;
	char after[64];
	unsigned pages, waits, failures;
	bool settled; /* the first round was scheduled */
	bool stopped;
};

void reconcile_init(struct reconciler *rc, uv_loop_t *loop, struct pacer *pacer,
		    struct resend_client *api, const struct config *cfg,
		    const struct reconcile_events *ev);
/* E (since_ms, rows and group set) is reconciled with the next round. */
void reconcile_add(struct reconciler *rc, struct reconcile_entry *e);
/* E is not reconciled any more (its file was let go). */
void reconcile_remove(struct reconciler *rc, struct reconcile_entry *e);
bool reconcile_owns(const struct reconciler *rc, const struct pacer_entry *e);
void reconcile_pacer_due(struct reconciler *rc);
void reconcile_pacer_poll(struct reconciler *rc);
void reconcile_stop(struct reconciler *rc);
void reconcile_free(struct reconciler *rc);

/* The decision of a round, pure: for the N entries ENTRIES, the candidates CAND (N_CAND, each
 * finished or not, KNOWN[i] when the ledger has it). False: a candidate has not finished, and
 * the round is to be tried again later. */
bool reconcile_decide(struct reconcile_entry *const *entries, size_t n,
		      const struct resend_listed_import *cand, const bool *known, size_t n_cand,
		      struct reconcile_result *results);

#endif
