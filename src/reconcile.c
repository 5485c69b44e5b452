/* Reconciliation after a crash (reconcile.h). */
#include "reconcile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "api_answer.h"
#include "config.h"
#include "ledgerq.h"
#include "log.h"
#include "metrics.h"
#include "resend_client.h"

/* Resend's clock and this host's may differ by this much. */
#define RECONCILE_SKEW_MS (2 * 60 * 1000)
/* The files resumed at a start come in over a moment (each is checked first): one round. The
 * first waits longer: a request the daemon sent whole before it died may still be being
 * answered (its import made) by Resend. */
#define RECONCILE_GATHER_MS 300
#define RECONCILE_SETTLE_MS 5000
#define RECONCILE_PAGE 100
#define RECONCILE_MAX_PAGES 20
/* A candidate still running: the round is tried again, for at most about ten minutes. */
#define RECONCILE_WAIT_MS 15000
#define RECONCILE_MAX_WAITS 40
#define RECONCILE_RETRY_MS 2000

void reconcile_init(struct reconciler *rc, uv_loop_t *loop, struct pacer *pacer,
		    struct resend_client *api, const struct config *cfg,
		    const struct reconcile_events *ev)
{
	*rc = (struct reconciler){.loop = loop, .pacer = pacer, .api = api, .cfg = cfg,
				  .ev = *ev};
	pacer_entry_init(&rc->se, 0);
}

bool reconcile_owns(const struct reconciler *rc, const struct pacer_entry *e)
{
	return e == &rc->se;
}

static void reconcile_later(struct reconciler *rc, uint64_t ms)
{
	pacer_cancel(rc->pacer, &rc->se);
	if (pacer_at(rc->pacer, &rc->se, ms) < 0)
		log_error("out of memory: files to reconcile wait for the next one");
}

void reconcile_add(struct reconciler *rc, struct reconcile_entry *e)
{
	DL_APPEND(rc->waiting, e);
	e->queued = true;
	if (!rc->stopped && !rc->round && !dueq_queued(&rc->se.due) && !rc->se.poll_queued)
		reconcile_later(rc, rc->settled ? RECONCILE_GATHER_MS : RECONCILE_SETTLE_MS);
	rc->settled = true;
}

void reconcile_remove(struct reconciler *rc, struct reconcile_entry *e)
{
	bool in_round = false;

	if (!e->queued)
		return;
	for (struct reconcile_entry *x = rc->round; x; x = x->next)
		in_round = in_round || x == e;
	if (in_round)
		DL_DELETE(rc->round, e);
	else
		DL_DELETE(rc->waiting, e);
	e->queued = false;
	e->prev = e->next = NULL;
}

void reconcile_pacer_due(struct reconciler *rc)
{
	if (!rc->stopped && !rc->call && !rc->known_op)
		pacer_poll(rc->pacer, &rc->se);
}

static void reconcile_answer_cb(struct resend_call *call, void *data);

static void reconcile_ask(struct reconciler *rc)
{
	int r = resend_client_list_imports(rc->api, RECONCILE_PAGE, rc->after,
					   reconcile_answer_cb, rc, &rc->call);

	if (r < 0) {
		rc->call = NULL;
		reconcile_later(rc, RECONCILE_RETRY_MS);
	}
}

/* A token: the round's next page (a new round takes every file waiting). */
void reconcile_pacer_poll(struct reconciler *rc)
{
	if (rc->stopped || rc->call || rc->known_op)
		return;
	if (!rc->round) {
		if (!rc->waiting)
			return;
		rc->round = rc->waiting;
		rc->waiting = NULL;
		rc->oldest = INT64_MAX;
		for (struct reconcile_entry *e = rc->round; e; e = e->next)
			if (e->since_ms - RECONCILE_SKEW_MS < rc->oldest)
				rc->oldest = e->since_ms - RECONCILE_SKEW_MS;
		rc->n_seen = 0;
		rc->pages = 0;
		rc->after[0] = '\0';
	}
	reconcile_ask(rc);
}

static bool reconcile_final(const struct resend_import *imp)
{
	return imp->state == RESEND_IMPORT_COMPLETED || imp->state == RESEND_IMPORT_FAILED;
}

bool reconcile_decide(struct reconcile_entry *const *entries, size_t n,
		      const struct resend_listed_import *cand, const bool *known, size_t n_cand,
		      struct reconcile_result *results)
{
	size_t *claimant = calloc(n ? n : 1, sizeof(*claimant));
	unsigned *claims = calloc(n_cand ? n_cand : 1, sizeof(*claims));
	bool ok = claimant && claims;

	for (size_t i = 0; ok && i < n_cand; i++)
		if (!known[i] && !reconcile_final(&cand[i].import))
			ok = false; /* its rows are not known yet */
	for (size_t k = 0; ok && k < n; k++) {
		claimant[k] = k;
		for (size_t j = 0; j < k && entries[k]->group[0]; j++)
			if (strcmp(entries[j]->group, entries[k]->group) == 0) {
				claimant[k] = claimant[j];
				break;
			}
	}
	/* How many claimants each candidate could be the import of (a batch is one). */
	for (size_t i = 0; ok && i < n_cand; i++) {
		for (size_t k = 0; k < n; k++) {
			const struct resend_import *imp = &cand[i].import;
			int64_t made = resend_time_ms(imp->created_at);

			if (claimant[k] != k || known[i] || !imp->has_counts || imp->total < 0 ||
			    (uint64_t)imp->total != entries[k]->rows ||
			    (made >= 0 && made < entries[k]->since_ms - RECONCILE_SKEW_MS))
				continue;
			claims[i]++;
		}
	}
	for (size_t k = 0; ok && k < n; k++) {
		struct reconcile_result *r = &results[k];
		const struct reconcile_entry *e = entries[claimant[k]];
		size_t match = n_cand;
		unsigned matches = 0;

		*r = (struct reconcile_result){.outcome = RECONCILE_NONE};
		for (size_t i = 0; i < n_cand; i++) {
			const struct resend_import *imp = &cand[i].import;
			int64_t made = resend_time_ms(imp->created_at);

			if (known[i] || !imp->has_counts || imp->total < 0 ||
			    (uint64_t)imp->total != e->rows ||
			    (made >= 0 && made < e->since_ms - RECONCILE_SKEW_MS))
				continue;
			matches++;
			match = i;
		}
		if (matches == 1 && claims[match] == 1) {
			r->outcome = RECONCILE_ADOPT;
			memcpy(r->import_id, cand[match].id, sizeof(r->import_id));
			r->import = cand[match].import;
		} else if (matches >= 1) {
			r->outcome = RECONCILE_SEVERAL;
			r->candidates = matches > 1 ? matches : claims[match];
		}
		r->candidates = r->candidates ? r->candidates : matches;
	}
	free(claimant);
	free(claims);
	return ok;
}

/* The round ends: each of its files told what becomes of it. */
static void reconcile_settle(struct reconciler *rc, const bool *known)
{
	struct reconcile_entry **entries = NULL, *e;
	struct reconcile_result *results = NULL;
	size_t n = 0;
	bool decided;

	DL_COUNT(rc->round, e, n);
	entries = calloc(n ? n : 1, sizeof(*entries));
	results = calloc(n ? n : 1, sizeof(*results));
	if (!entries || !results) {
		free(entries);
		free(results);
		log_error("out of memory while reconciling: tried again");
		reconcile_later(rc, RECONCILE_RETRY_MS);
		return;
	}
	n = 0;
	DL_FOREACH(rc->round, e)
		entries[n++] = e;
	decided = reconcile_decide(entries, n, rc->seen, known, rc->n_seen, results);
	if (!decided && ++rc->waits < RECONCILE_MAX_WAITS) {
		/* An import made since is still running: its rows will tell. The round again. */
		struct reconcile_entry *round = rc->round;

		rc->round = NULL;
		DL_CONCAT(round, rc->waiting);
		rc->waiting = round;
		free(entries);
		free(results);
		reconcile_later(rc, RECONCILE_WAIT_MS);
		return;
	}
	if (!decided) {
		/* Waited long enough: what has finished decides. */
		bool *finished_known = calloc(rc->n_seen ? rc->n_seen : 1, sizeof(bool));

		for (size_t i = 0; finished_known && i < rc->n_seen; i++)
			finished_known[i] = known[i] || !reconcile_final(&rc->seen[i].import);
		if (!finished_known ||
		    !reconcile_decide(entries, n, rc->seen, finished_known, rc->n_seen, results))
			memset(results, 0, n * sizeof(*results)); /* NONE: uploaded */
		free(finished_known);
	}
	rc->waits = 0;
	rc->round = NULL;
	for (size_t k = 0; k < n; k++) {
		entries[k]->queued = false;
		entries[k]->prev = entries[k]->next = NULL;
	}
	for (size_t k = 0; k < n; k++)
		rc->ev.done(entries[k], &results[k], rc->ev.data);
	free(entries);
	free(results);
	if (rc->waiting)
		reconcile_later(rc, RECONCILE_GATHER_MS);
}

static void reconcile_known_cb(const bool *known, size_t n, void *data)
{
	struct reconciler *rc = data;

	(void)n;
	rc->known_op = NULL;
	reconcile_settle(rc, known);
}

/* Every page read: the ledger says which candidates are this daemon's own imports. */
static void reconcile_listed(struct reconciler *rc)
{
	const char **ids;
	bool *none;

	if (!rc->round) { /* every file of the round was let go meanwhile */
		if (rc->waiting)
			reconcile_later(rc, RECONCILE_GATHER_MS);
		return;
	}
	if (rc->lq && rc->n_seen) {
		ids = calloc(rc->n_seen, sizeof(*ids));
		for (size_t i = 0; ids && i < rc->n_seen; i++)
			ids[i] = rc->seen[i].id;
		if (ids && ledgerq_known_imports(rc->lq, ids, rc->n_seen, rc->oldest,
						 reconcile_known_cb, rc, &rc->known_op) == 0) {
			free(ids);
			return;
		}
		free(ids);
		log_error("out of memory while reconciling: tried again");
		reconcile_later(rc, RECONCILE_RETRY_MS);
		return;
	}
	none = calloc(rc->n_seen ? rc->n_seen : 1, sizeof(*none));
	if (!none) {
		reconcile_later(rc, RECONCILE_RETRY_MS);
		return;
	}
	reconcile_settle(rc, none);
	free(none);
}

static void reconcile_answer_cb(struct resend_call *call, void *data)
{
	struct reconciler *rc = data;
	struct resend_error err = {0};
	struct resend_import_list l = {0};
	enum resend_class cls;
	size_t len;
	const char *body = resend_call_body(call, &len);
	bool more = false;

	rc->call = NULL;
	cls = api_answer_classify(rc->pacer, rc->cfg->api_key, call, &err);
	metrics_api_request(rc->metrics, METRICS_LIST_IMPORTS, resend_call_status(call));
	if (cls == RESEND_OK && resend_parse_import_list(body, len, &l) == 0) {
		int64_t last = -1;

		rc->failures = 0;
		for (size_t i = 0; i < l.n; i++) {
			int64_t made = resend_time_ms(l.items[i].import.created_at);

			last = made;
			if (made >= 0 && made < rc->oldest)
				continue;
			if (rc->n_seen == rc->cap_seen) {
				size_t cap = rc->cap_seen ? rc->cap_seen * 2 : 64;
				struct resend_listed_import *g = realloc(rc->seen, cap * sizeof(*g));

				if (!g)
					break;
				rc->seen = g;
				rc->cap_seen = cap;
			}
			rc->seen[rc->n_seen++] = l.items[i];
		}
		more = l.has_more && l.n && (last < 0 || last >= rc->oldest) &&
		       ++rc->pages < RECONCILE_MAX_PAGES;
		if (more)
			snprintf(rc->after, sizeof(rc->after), "%s", l.items[l.n - 1].id);
		resend_import_list_clear(&l);
		resend_call_free(call);
		if (more)
			pacer_poll(rc->pacer, &rc->se);
		else
			reconcile_listed(rc);
		return;
	}
	resend_call_free(call);
	if (cls == RESEND_PERMANENT || (cls == RESEND_OK && ++rc->failures > 3)) {
		/* The list cannot be read: nothing can be reconciled, and the files are
		 * uploaded (as before reconciliation existed). Said once per round. */
		log_warning("the imports made before the restart cannot be listed (%s): %s file%s "
			    "whose upload may have reached Resend are uploaded again",
			    err.message[0] ? err.message : "an answer that is not a list",
			    rc->round && rc->round->next ? "the" : "a",
			    rc->round && rc->round->next ? "s" : "");
		rc->n_seen = 0;
		reconcile_listed(rc);
		return;
	}
	/* A wait (the rate limit, a server error): the same page again later. */
	reconcile_later(rc, RECONCILE_RETRY_MS);
}

void reconcile_stop(struct reconciler *rc)
{
	rc->stopped = true;
	if (rc->call) {
		resend_call_free(rc->call);
		rc->call = NULL;
	}
	if (rc->known_op && rc->lq)
		ledgerq_cancel(rc->lq, rc->known_op);
	rc->known_op = NULL;
	if (rc->pacer)
		pacer_cancel(rc->pacer, &rc->se);
}

void reconcile_free(struct reconciler *rc)
{
	reconcile_stop(rc);
	free(rc->seen);
	rc->seen = NULL;
}
