#include "ledgerq.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define LEDGERQ_RETRY_FIRST_MS 500
#define LEDGERQ_RETRY_MAX_MS 30000
#define LEDGERQ_CLOSE_GIVE_UP_MS 5000

enum op_kind { OP_RECORD, OP_LOOKUP, OP_KNOWN, OP_PRUNE, OP_CALL, OP_PROBE };

struct op {
	enum op_kind kind;
	struct op *next;
	/* OP_RECORD: the entry (owned). OP_LOOKUP: its folder, file, sha256 and settings_hash
	 * are the question. */
	struct ledger_entry entry;
	int64_t since_ms;
	bool want_imported;
	struct ledgerq_lookup *res; /* OP_LOOKUP's answers */
	ledgerq_lookup_cb cb; /* NULL once cancelled (under the lock) */
	void (*written)(void *data); /* OP_RECORD: once committed; NULL once cancelled */
	void *data;
	int64_t before_ms;    /* OP_PRUNE */
	/* OP_KNOWN: the import ids asked about (owned), and the answers. */
	char **ids;
	bool *known;
	size_t n_ids;
	ledgerq_known_cb kcb; /* NULL once cancelled (under the lock) */
	/* OP_CALL: WORK in the thread, DONE on the loop (NULL once cancelled), RELEASE at
	 * the end whatever happened. */
	int (*work)(struct ledger *l, void *data);
	void (*call_done)(void *data);
	void (*release)(void *data);
};

struct ledgerq {
	uv_loop_t *loop;
	struct ledger *ledger;
	void (*health)(bool failing, const char *error, void *data);
	void *data;
	uv_thread_t thread;
	uv_mutex_t lock;
	uv_cond_t cond;
	uv_async_t async;
	/* Under LOCK. */
	struct op *head, *tail;       /* queued */
	struct op *done_head, *done_tail; /* answered, for the loop */
	bool stop, failing;
	unsigned failures;            /* times writing started failing */
	/* The loop's own: what HEALTH was last told, and of which failure. */
	bool told_failing;
	unsigned told_failures;
	char error[512];
	uint64_t lost;                /* records given up on at close */
};

static void push(struct op **head, struct op **tail, struct op *op)
{
	op->next = NULL;
	if (*tail)
		(*tail)->next = op;
	else
		*head = op;
	*tail = op;
}

static void op_free(struct op *op)
{
	if (op->release)
		op->release(op->data);
	for (size_t i = 0; i < op->n_ids; i++)
		free(op->ids[i]);
	free(op->ids);
	free(op->known);
	ledger_entry_clear(&op->entry);
	if (op->res) {
		ledger_entry_clear(&op->res->unfinished);
		ledger_entry_clear(&op->res->imported);
		ledger_entry_clear(&op->res->uploaded);
		ledger_entry_clear(&op->res->elsewhere);
		free(op->res);
	}
	free(op);
}

/* Runs one op; records and prunes in the open transaction. */
static int run_op(struct ledger *l, struct op *op)
{
	struct ledgerq_lookup *k;
	struct ledger_entry *e = &op->entry;
	uint64_t n;

	switch (op->kind) {
	case OP_RECORD:
		return ledger_record(l, &op->entry);
	case OP_PRUNE:
		return l->ops->prune(l, op->before_ms, &n);
	case OP_CALL:
		return op->work(l, op->data);
	case OP_PROBE:
		return 0; /* its batch's begin and commit are the test */
	case OP_KNOWN:
		for (size_t i = 0; i < op->n_ids; i++) {
			int r = ledger_knows_import(l, op->ids[i], op->since_ms);

			if (r < 0)
				return r; /* tried again with the batch, like any read */
			op->known[i] = r > 0;
		}
		return 0;
	case OP_LOOKUP:
		k = op->res;
		ledger_entry_clear(&k->unfinished);
		ledger_entry_clear(&k->imported);
		k->unfinished_result = ledger_find_unfinished(l, e->folder, e->file, e->sha256,
							      &k->unfinished);
		k->imported_result = op->want_imported
					     ? ledger_find_imported(l, e->folder, e->sha256,
								    e->settings_hash, op->since_ms,
								    &k->imported)
					     : -ENOENT;
		ledger_entry_clear(&k->uploaded);
		k->uploaded_result = op->want_imported
					     ? ledger_find_uploaded(l, e->folder, e->file, e->sha256,
								    e->settings_hash, &k->uploaded)
					     : -ENOENT;
		if (k->uploaded_result < 0 && k->uploaded_result != -ENOENT)
			return k->uploaded_result;
		ledger_entry_clear(&k->elsewhere);
		k->elsewhere_result = -ENOENT;
		if (op->want_imported && l->ops->fleet_reserve && l->host_id[0]) {
			int r = l->ops->fleet_reserve(l, e->folder, e->file, e->sha256,
						      e->settings_hash, &k->elsewhere);

			if (r < 0)
				return r;
			k->elsewhere_result = r ? -ENOENT : 0;
		}
		/* A read that fails is a failure like a write's: tried again with the batch. */
		if (k->unfinished_result < 0 && k->unfinished_result != -ENOENT)
			return k->unfinished_result;
		if (k->imported_result < 0 && k->imported_result != -ENOENT)
			return k->imported_result;
		return 0;
	}
	return -EINVAL;
}

/* One batch, in one transaction: everything or nothing. */
static int run_batch(struct ledger *l, struct op *batch)
{
	int r = l->ops->begin(l);

	for (struct op *op = batch; r == 0 && op; op = op->next)
		r = run_op(l, op);
	if (r == 0)
		r = l->ops->commit(l);
	if (r < 0)
		(void)l->ops->rollback(l);
	return r;
}

static void thread_main(void *arg)
{
	struct ledgerq *q = arg;
	uint64_t delay_ms = 0, failing_since = 0;

	uv_mutex_lock(&q->lock);
	for (;;) {
		struct op *batch;
		int r;

		while (!q->head && !q->stop)
			uv_cond_wait(&q->cond, &q->lock);
		if (!q->head)
			break;
		batch = q->head;
		q->head = q->tail = NULL;
		uv_mutex_unlock(&q->lock);

		r = run_batch(q->ledger, batch);

		uv_mutex_lock(&q->lock);
		if (r == 0) {
			if (q->failing)
				q->failing = false;
			delay_ms = 0;
			failing_since = 0;
			while (batch) {
				struct op *next = batch->next;

				if (batch->kind == OP_LOOKUP || batch->kind == OP_KNOWN ||
				    batch->kind == OP_CALL || batch->written)
					push(&q->done_head, &q->done_tail, batch);
				else
					op_free(batch);
				batch = next;
			}
			uv_async_send(&q->async);
			continue;
		}
		/* Put back in front, in order, and wait before the next try. */
		{
			struct op *last = batch;

			while (last->next)
				last = last->next;
			last->next = q->head;
			q->head = batch;
			if (!q->tail)
				q->tail = last;
		}
		if (!q->failing) {
			q->failing = true;
			q->failures++;
			snprintf(q->error, sizeof(q->error), "%s", q->ledger->error);
			uv_async_send(&q->async);
		}
		delay_ms = delay_ms ? delay_ms * 2 : LEDGERQ_RETRY_FIRST_MS;
		if (delay_ms > LEDGERQ_RETRY_MAX_MS)
			delay_ms = LEDGERQ_RETRY_MAX_MS;
		if (!failing_since)
			failing_since = uv_hrtime() / 1000000;
		if (q->stop && uv_hrtime() / 1000000 - failing_since >= LEDGERQ_CLOSE_GIVE_UP_MS) {
			/* Closing with a ledger that still fails: what is queued is lost to
			 * history (not to recovery: the files' own records say that). */
			while (q->head) {
				struct op *op = q->head;

				q->head = op->next;
				q->lost += op->kind == OP_RECORD;
				op_free(op);
			}
			q->tail = NULL;
			break;
		}
		/* The whole wait, whatever is queued meanwhile. A stop, set before the wait or during
		 * it, ends it at the give-up moment when that comes first (so that the close gives up
		 * on time), or at once when the close left nothing to write; it never ends it sooner:
		 * a ledger that still fails at a stop is tried a few times, not one try after
		 * another (a full core for LEDGERQ_CLOSE_GIVE_UP_MS). One clock reading per turn:
		 * two could wrap the timeout past UNTIL. */
		{
			uint64_t until = uv_hrtime() + delay_ms * 1000000;
			uint64_t give_up = (failing_since + LEDGERQ_CLOSE_GIVE_UP_MS) * 1000000;

			for (;;) {
				uint64_t now = uv_hrtime(), end = until;

				if (q->stop && !q->head)
					break;
				if (q->stop && give_up < end)
					end = give_up;
				if (now >= end)
					break;
				(void)uv_cond_timedwait(&q->cond, &q->lock, end - now);
			}
		}
	}
	uv_mutex_unlock(&q->lock);
}

static void closed_cb(uv_handle_t *h);

static void async_cb(uv_async_t *async)
{
	struct ledgerq *q = async->data;
	struct op *done;
	bool failing;
	unsigned failures;
	char error[512];

	uv_mutex_lock(&q->lock);
	done = q->done_head;
	q->done_head = q->done_tail = NULL;
	failing = q->failing;
	failures = q->failures;
	snprintf(error, sizeof(error), "%s", q->error);
	uv_mutex_unlock(&q->lock);
	/* A failure over before the loop heard of it is still told, then its end. */
	if ((failing || failures != q->told_failures) && !q->told_failing) {
		q->told_failing = true;
		if (q->health)
			q->health(true, error, q->data);
	}
	q->told_failures = failures;
	if (!failing && q->told_failing) {
		q->told_failing = false;
		if (q->health)
			q->health(false, error, q->data);
	}
	while (done) {
		struct op *next = done->next;
		ledgerq_lookup_cb cb;
		ledgerq_known_cb kcb;
		void (*written)(void *data), (*call_done)(void *data);

		uv_mutex_lock(&q->lock);
		cb = done->cb;
		kcb = done->kcb;
		written = done->written;
		call_done = done->call_done;
		uv_mutex_unlock(&q->lock);
		if (call_done)
			call_done(done->data);
		if (cb)
			cb(done->res, done->data);
		if (kcb)
			kcb(done->known, done->n_ids, done->data);
		if (written)
			written(done->data);
		op_free(done);
		done = next;
	}
}

int ledgerq_new(uv_loop_t *loop, struct ledger *l,
		void (*health)(bool failing, const char *error, void *data), void *data,
		struct ledgerq **ret)
{
	struct ledgerq *q = calloc(1, sizeof(*q));
	int r;

	if (!q)
		return -ENOMEM;
	q->loop = loop;
	q->ledger = l;
	q->health = health;
	q->data = data;
	if ((r = uv_mutex_init(&q->lock)) < 0) {
		free(q);
		return r;
	}
	if ((r = uv_cond_init(&q->cond)) < 0) {
		uv_mutex_destroy(&q->lock);
		free(q);
		return r;
	}
	if ((r = uv_async_init(loop, &q->async, async_cb)) < 0) {
		uv_cond_destroy(&q->cond);
		uv_mutex_destroy(&q->lock);
		free(q);
		return r;
	}
	q->async.data = q;
	/* A ledger that could not be reached at open (a database server down at start) fails
	 * from the start: the daemon takes no file (and has said so), and a probe, retried like
	 * any batch, tells it when the ledger answers. */
	if (l->error[0]) {
		struct op *probe = calloc(1, sizeof(*probe));

		if (!probe) {
			uv_close((uv_handle_t *)&q->async, closed_cb);
			return -ENOMEM;
		}
		probe->kind = OP_PROBE;
		push(&q->head, &q->tail, probe);
		q->failing = q->told_failing = true;
		q->failures = q->told_failures = 1;
		snprintf(q->error, sizeof(q->error), "%s", l->error);
	}
	if ((r = uv_thread_create(&q->thread, thread_main, q)) < 0) {
		/* Freed once the handle is closed. */
		uv_close((uv_handle_t *)&q->async, closed_cb);
		return r;
	}
	*ret = q;
	return 0;
}

static void submit(struct ledgerq *q, struct op *op)
{
	uv_mutex_lock(&q->lock);
	push(&q->head, &q->tail, op);
	uv_cond_signal(&q->cond);
	uv_mutex_unlock(&q->lock);
}

int ledgerq_record_then(struct ledgerq *q, const struct ledger_entry *e,
			void (*written)(void *data), void *data, void **ret)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op || ledger_entry_copy(&op->entry, e) < 0) {
		free(op);
		log_error("ledger: out of memory: '%s' is not recorded in the history",
			  e->file ? e->file : "?");
		return -ENOMEM;
	}
	op->kind = OP_RECORD;
	op->written = written;
	op->data = data;
	if (ret)
		*ret = op;
	submit(q, op);
	return 0;
}

int ledgerq_record(struct ledgerq *q, const struct ledger_entry *e)
{
	return ledgerq_record_then(q, e, NULL, NULL, NULL);
}

int ledgerq_lookup(struct ledgerq *q, const char *folder, const char *file, const char *sha256,
		   const char *settings_hash, int64_t since_ms, bool want_imported,
		   ledgerq_lookup_cb cb, void *data, void **ret)
{
	struct op *o = calloc(1, sizeof(*o));
	const struct ledger_entry question = {
		.folder = (char *)folder, .file = (char *)file,
	};

	if (!o || !(o->res = calloc(1, sizeof(*o->res))) ||
	    ledger_entry_copy(&o->entry, &question) < 0) {
		if (o)
			free(o->res);
		free(o);
		return -ENOMEM;
	}
	snprintf(o->entry.sha256, sizeof(o->entry.sha256), "%s", sha256);
	snprintf(o->entry.settings_hash, sizeof(o->entry.settings_hash), "%s", settings_hash);
	o->kind = OP_LOOKUP;
	o->since_ms = since_ms;
	o->want_imported = want_imported;
	o->cb = cb;
	o->data = data;
	*ret = o;
	submit(q, o);
	return 0;
}

int ledgerq_known_imports(struct ledgerq *q, const char *const *ids, size_t n, int64_t since_ms,
			  ledgerq_known_cb cb, void *data, void **ret)
{
	struct op *o = calloc(1, sizeof(*o));

	if (!o || !(o->ids = calloc(n ? n : 1, sizeof(*o->ids))) ||
	    !(o->known = calloc(n ? n : 1, sizeof(*o->known))))
		goto fail;
	for (; o->n_ids < n; o->n_ids++)
		if (!(o->ids[o->n_ids] = strdup(ids[o->n_ids])))
			goto fail;
	o->kind = OP_KNOWN;
	o->since_ms = since_ms;
	o->kcb = cb;
	o->data = data;
	*ret = o;
	submit(q, o);
	return 0;
fail:
	if (o)
		op_free(o);
	return -ENOMEM;
}

void ledgerq_cancel(struct ledgerq *q, void *l)
{
	struct op *o = l;

	uv_mutex_lock(&q->lock);
	o->cb = NULL;
	o->kcb = NULL;
	o->written = NULL;
	o->call_done = NULL;
	uv_mutex_unlock(&q->lock);
}

int ledgerq_call(struct ledgerq *q, int (*work)(struct ledger *l, void *data),
		 void (*done)(void *data), void (*release)(void *data), void *data, void **ret)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op)
		return -ENOMEM;
	op->kind = OP_CALL;
	op->work = work;
	op->call_done = done;
	op->release = release;
	op->data = data;
	if (ret)
		*ret = op;
	submit(q, op);
	return 0;
}

int ledgerq_prune(struct ledgerq *q, int64_t before_ms)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op)
		return -ENOMEM;
	op->kind = OP_PRUNE;
	op->before_ms = before_ms;
	submit(q, op);
	return 0;
}

bool ledgerq_failing(const struct ledgerq *q)
{
	return q->told_failing;
}

static void closed_cb(uv_handle_t *h)
{
	struct ledgerq *q = h->data;

	uv_cond_destroy(&q->cond);
	uv_mutex_destroy(&q->lock);
	free(q);
}

void ledgerq_close(struct ledgerq *q)
{
	struct op *op;

	if (!q)
		return;
	uv_mutex_lock(&q->lock);
	q->stop = true;
	/* Look-ups nobody waits for any more go; records stay to be written. */
	for (struct op **p = &q->head; (op = *p);) {
		if (op->kind == OP_LOOKUP || op->kind == OP_KNOWN || op->kind == OP_PROBE) {
			*p = op->next;
			op_free(op);
			continue;
		}
		p = &op->next;
	}
	q->tail = NULL;
	for (op = q->head; op; op = op->next)
		q->tail = op;
	uv_cond_signal(&q->cond);
	uv_mutex_unlock(&q->lock);
	/* At the end of the daemon's life: the records queued are written first. */
	uv_thread_join(&q->thread);
	while ((op = q->done_head)) {
		q->done_head = op->next;
		op_free(op);
	}
	if (q->lost)
		log_error("ledger: %llu file record%s could not be written before the daemon stopped "
			  "(%s); they are missing from the history",
			  (unsigned long long)q->lost, q->lost == 1 ? "" : "s", q->error);
	q->async.data = q;
	uv_close((uv_handle_t *)&q->async, closed_cb);
}
