/* ledgerq: the ledger's own thread, on a real libuv loop with a real SQLite ledger in a
 * temporary directory. What a user gets from it: records written in order and never lost while
 * the daemon runs; look-ups that see every record queued before them, answered on the loop;
 * one "failing" and one "recovered" when the ledger stops and starts taking writes; a stop that
 * writes what is queued, or gives up in bounded time and says what it lost.
 *
 * The ledger under the queue is a wrapper (its own struct ledger_ops, which is what the table
 * is for) around the SQLite one: it passes every call through, and can fail records, reads or
 * commits on demand, hold a look-up in the thread, and count the batches tried. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "ledger.h"
#include "ledgerq.h"
#include "log.h"

#define GUARD_MS 8000
#define MAX_CALLS 1024
#define MAX_ANSWERS 128

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SET_1 "1111111111111111111111111111111111111111111111111111111111111111"

/* ---- the wrapping ledger ------------------------------------------------------------------ */

enum { FAIL_UNFINISHED = 1, FAIL_IMPORTED = 2, FAIL_UPLOADED = 4 };

struct fake {
	struct ledger base;
	struct ledger *real;
	atomic_bool fail_records;
	atomic_bool fail_commits;
	atomic_int fail_reads; /* FAIL_* bits: these reads fail (EIO) */
	atomic_int failed_reads;
	atomic_int batches; /* begin calls: batches tried */
	/* When set, find_unfinished posts ENTERED and waits for RELEASE. */
	atomic_bool hold_lookups;
	uv_sem_t entered, release;
	/* Every record call, in order: its claimed_at_ms, negative when it was failed. */
	uv_mutex_t lock;
	int64_t calls[MAX_CALLS];
	int n_calls;
};

static void fake_log(struct fake *f, int64_t v)
{
	uv_mutex_lock(&f->lock);
	if (f->n_calls < MAX_CALLS)
		f->calls[f->n_calls++] = v;
	uv_mutex_unlock(&f->lock);
}

static int fake_pass(struct fake *f, int r)
{
	if (r < 0 && r != -ENOENT)
		snprintf(f->base.error, sizeof(f->base.error), "%s", f->real->error);
	return r;
}

/* True (the ledger's error set) when the read WHICH is to fail. */
static bool fake_read_fails(struct fake *f, int which)
{
	if (!(atomic_load(&f->fail_reads) & which))
		return false;
	atomic_fetch_add(&f->failed_reads, 1);
	snprintf(f->base.error, sizeof(f->base.error),
		 "ledger 'fake': cannot look a file up: disk I/O error");
	return true;
}

static int fake_record(struct ledger *l, const struct ledger_entry *e)
{
	struct fake *f = (struct fake *)l;

	if (atomic_load(&f->fail_records)) {
		fake_log(f, -e->claimed_at_ms);
		snprintf(f->base.error, sizeof(f->base.error),
			 "ledger 'fake': cannot record a file: database or disk is full");
		return -ENOSPC;
	}
	fake_log(f, e->claimed_at_ms);
	return fake_pass(f, ledger_record(f->real, e));
}

static int fake_find_imported(struct ledger *l, const char *folder, const char *sha256,
			      const char *settings_hash, int64_t since_ms, struct ledger_entry *ret)
{
	struct fake *f = (struct fake *)l;

	if (fake_read_fails(f, FAIL_IMPORTED))
		return -EIO;
	return fake_pass(f, ledger_find_imported(f->real, folder, sha256, settings_hash, since_ms,
						 ret));
}

static int fake_find_unfinished(struct ledger *l, const char *folder, const char *file,
				const char *sha256, struct ledger_entry *ret)
{
	struct fake *f = (struct fake *)l;

	if (atomic_load(&f->hold_lookups)) {
		uv_sem_post(&f->entered);
		uv_sem_wait(&f->release);
	}
	if (fake_read_fails(f, FAIL_UNFINISHED))
		return -EIO;
	return fake_pass(f, ledger_find_unfinished(f->real, folder, file, sha256, ret));
}

static int fake_list(struct ledger *l, const struct ledger_query *q, ledger_list_cb cb,
		     void *data)
{
	struct fake *f = (struct fake *)l;

	return fake_pass(f, ledger_list(f->real, q, cb, data));
}

static int fake_prune(struct ledger *l, int64_t before_ms, uint64_t *ret_n)
{
	struct fake *f = (struct fake *)l;

	return fake_pass(f, ledger_prune(f->real, before_ms, ret_n));
}

static int fake_begin(struct ledger *l)
{
	struct fake *f = (struct fake *)l;

	atomic_fetch_add(&f->batches, 1);
	return fake_pass(f, f->real->ops->begin(f->real));
}

static int fake_commit(struct ledger *l)
{
	struct fake *f = (struct fake *)l;

	if (atomic_load(&f->fail_commits)) {
		snprintf(f->base.error, sizeof(f->base.error),
			 "ledger 'fake': cannot commit: disk I/O error");
		return -EIO; /* the queue rolls back */
	}
	return fake_pass(f, f->real->ops->commit(f->real));
}

static int fake_rollback(struct ledger *l)
{
	struct fake *f = (struct fake *)l;

	return fake_pass(f, f->real->ops->rollback(f->real));
}

static void fake_close(struct ledger *l)
{
	(void)l; /* the fixture owns both */
}

static int fake_find_uploaded(struct ledger *l, const char *folder, const char *file,
			      const char *sha256, const char *settings_hash,
			      struct ledger_entry *ret)
{
	struct fake *f = (struct fake *)l;

	if (fake_read_fails(f, FAIL_UPLOADED))
		return -EIO;
	return fake_pass(f, ledger_find_uploaded(f->real, folder, file, sha256, settings_hash,
						 ret));
}

static int fake_knows_import(struct ledger *l, const char *import_id, int64_t since_ms)
{
	struct fake *f = (struct fake *)l;

	return fake_pass(f, ledger_knows_import(f->real, import_id, since_ms));
}

static const struct ledger_ops fake_ops = {
	.name = "fake",
	.record = fake_record,
	.find_imported = fake_find_imported,
	.find_unfinished = fake_find_unfinished,
	.find_uploaded = fake_find_uploaded,
	.knows_import = fake_knows_import,
	.list = fake_list,
	.prune = fake_prune,
	.begin = fake_begin,
	.commit = fake_commit,
	.rollback = fake_rollback,
	.close = fake_close,
};

/* ---- the fixture -------------------------------------------------------------------------- */

struct answer {
	int id;
	bool on_loop;
	int unfinished_result, imported_result, uploaded_result;
	int64_t unfinished_claim;
	char imported_file[64];
};

struct fixture;

/* A look-up's DATA: who asked. */
struct tag {
	struct fixture *fx;
	int id;
};

struct fixture {
	char dir[64];
	uv_loop_t loop;
	uv_timer_t tick;
	uv_thread_t loop_thread;
	struct fake fake;
	struct ledgerq *q;
	/* Health, as the loop saw it. */
	int n_failing, n_recovered;
	bool health_on_loop;
	char health_error[512];
	/* Look-up answers, in the order they came. */
	struct answer answers[MAX_ANSWERS];
	int n_answers;
	struct tag tags[MAX_ANSWERS];
	/* The log. */
	FILE *log;
	char *log_buf;
	size_t log_len;
};

static void health_cb(bool failing, const char *error, void *data)
{
	struct fixture *fx = data;
	uv_thread_t self = uv_thread_self();

	if (!uv_thread_equal(&self, &fx->loop_thread))
		fx->health_on_loop = false;
	if (failing) {
		fx->n_failing++;
		snprintf(fx->health_error, sizeof(fx->health_error), "%s", error ? error : "");
	} else
		fx->n_recovered++;
}

static void tick_cb(uv_timer_t *t)
{
	(void)t; /* wakes the loop so that run_until looks again */
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	char err[512];

	if (!fx)
		return -1;
	strcpy(fx->dir, "/tmp/rdd-ledgerq-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	if (ledger_open(fx->dir, false, &fx->fake.real, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledger_open: %s\n", err);
		return -1;
	}
	fx->fake.base.ops = &fake_ops;
	if (uv_mutex_init(&fx->fake.lock) < 0 || uv_sem_init(&fx->fake.entered, 0) < 0 ||
	    uv_sem_init(&fx->fake.release, 0) < 0)
		return -1;
	unsetenv("JOURNAL_STREAM");
	log_init();
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	fx->log = open_memstream(&fx->log_buf, &fx->log_len);
	if (!fx->log)
		return -1;
	log_set_stream(fx->log);
	if (uv_loop_init(&fx->loop) < 0)
		return -1;
	uv_timer_init(&fx->loop, &fx->tick);
	uv_timer_start(&fx->tick, tick_cb, 5, 5);
	fx->loop_thread = uv_thread_self();
	fx->health_on_loop = true;
	for (int i = 0; i < MAX_ANSWERS; i++)
		fx->tags[i] = (struct tag){fx, i};
	if (ledgerq_new(&fx->loop, &fx->fake.base, health_cb, fx, &fx->q) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void tick_closed_cb(uv_handle_t *h)
{
	(void)h;
}

/* Closes the queue (when the test has not) and every handle: the loop must then close. */
static void close_queue(struct fixture *fx)
{
	if (!fx->q)
		return;
	atomic_store(&fx->fake.fail_records, false);
	atomic_store(&fx->fake.fail_commits, false);
	atomic_store(&fx->fake.fail_reads, 0);
	ledgerq_close(fx->q);
	fx->q = NULL;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int r = 0;

	close_queue(fx);
	uv_close((uv_handle_t *)&fx->tick, tick_closed_cb);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	/* Every handle closed: a leaked one would make this fail. */
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	assert_true(fx->health_on_loop);
	ledger_close(fx->fake.real);
	uv_sem_destroy(&fx->fake.entered);
	uv_sem_destroy(&fx->fake.release);
	uv_mutex_destroy(&fx->fake.lock);
	log_set_stream(NULL);
	fclose(fx->log);
	free(fx->log_buf);
	if (nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0)
		r = -1;
	free(fx);
	return r;
}

/* Runs the loop until COND(FX) or GUARD_MS; fails the test on the guard. */
#define run_until(fx, cond) run_until_(fx, cond, #cond)

static void run_until_(struct fixture *fx, bool (*cond)(struct fixture *), const char *what)
{
	uint64_t deadline = uv_hrtime() / 1000000 + GUARD_MS;

	while (!cond(fx)) {
		if (uv_hrtime() / 1000000 > deadline)
			fail_msg("hang guard: no %s after %d ms", what, GUARD_MS);
		uv_run(&fx->loop, UV_RUN_ONCE);
	}
}

/* Runs the loop for MS milliseconds. */
static void run_for(struct fixture *fx, uint64_t ms)
{
	uint64_t until = uv_hrtime() / 1000000 + ms;

	while (uv_hrtime() / 1000000 < until)
		uv_run(&fx->loop, UV_RUN_ONCE);
}

static void lookup_cb(const struct ledgerq_lookup *res, void *data)
{
	struct tag *tag = data;
	struct fixture *fx = tag->fx;
	int id = tag->id;
	uv_thread_t self = uv_thread_self();
	struct answer *a;

	assert_true(fx->n_answers < MAX_ANSWERS);
	a = &fx->answers[fx->n_answers++];
	a->id = id;
	a->on_loop = uv_thread_equal(&self, &fx->loop_thread);
	a->unfinished_result = res->unfinished_result;
	a->imported_result = res->imported_result;
	a->uploaded_result = res->uploaded_result;
	a->unfinished_claim = res->unfinished_result == 0 ? res->unfinished.claimed_at_ms : -1;
	if (res->imported_result == 0)
		snprintf(a->imported_file, sizeof(a->imported_file), "%s", res->imported.file);
}

/* Looks FILE up (ID is the answer's), with the duplicate question for SHA_A/SET_1. */
static void *lookup(struct fixture *fx, int id, const char *file, const char *sha)
{
	void *l = NULL;

	assert_int_equal(ledgerq_lookup(fx->q, "news", file, sha, SET_1, 0, true, lookup_cb,
					&fx->tags[id], &l),
			 0);
	assert_non_null(l);
	return l;
}

static int want_answers;

static bool answers_in(struct fixture *fx)
{
	return fx->n_answers >= want_answers;
}

static void run_until_answers(struct fixture *fx, int n)
{
	want_answers = n;
	run_until(fx, answers_in);
}

static struct ledger_entry entry(const char *file, int64_t claimed, const char *sha,
				 enum ledger_status status, int64_t finished)
{
	struct ledger_entry e = {
		.folder = "news",
		.file = (char *)file,
		.claimed_at_ms = claimed,
		.bytes = 10,
		.attempts = 1,
		.status = status,
		.finished_at_ms = finished,
		.total = -1, .created = -1, .updated = -1, .skipped = -1, .failed = -1,
	};

	snprintf(e.sha256, sizeof(e.sha256), "%s", sha);
	snprintf(e.settings_hash, sizeof(e.settings_hash), "%s", SET_1);
	return e;
}

static void record(struct fixture *fx, const struct ledger_entry *e)
{
	assert_int_equal(ledgerq_record(fx->q, e), 0);
}

/* What another connection (history's) sees: "claim:status,..." newest first. */
struct seen {
	char buf[4096];
	size_t n;
	int rows;
};

static int seen_cb(const struct ledger_entry *e, void *data)
{
	struct seen *s = data;

	s->n += (size_t)snprintf(s->buf + s->n, sizeof(s->buf) - s->n, "%s%lld:%s",
				 s->rows ? "," : "", (long long)e->claimed_at_ms,
				 ledger_status_name(e->status));
	s->rows++;
	return 0;
}

static const char *seen(struct fixture *fx, int *ret_rows)
{
	static struct seen s;
	struct ledger_query q = {0};
	struct ledger *ro;
	char err[512];

	memset(&s, 0, sizeof(s));
	if (ledger_open(fx->dir, true, &ro, err, sizeof(err)) < 0)
		fail_msg("read-only open: %s", err);
	assert_int_equal(ledger_list(ro, &q, seen_cb, &s), 0);
	ledger_close(ro);
	if (ret_rows)
		*ret_rows = s.rows;
	return s.buf;
}

static const char *log_text(struct fixture *fx)
{
	fflush(fx->log);
	return fx->log_buf ? fx->log_buf : "";
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Records go down in the order they were queued: for one key, the last one wins. */
static void test_records_in_order(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	char name[32];
	int rows;

	for (int round = 0; round < 3; round++)
		for (int i = 1; i <= 20; i++) {
			snprintf(name, sizeof(name), "%d.csv", i);
			e = entry(name, i * 10, SHA_A,
				  round == 0 ? LEDGER_CLAIMED
				  : round == 1 ? LEDGER_UPLOADED
					       : (i % 2 ? LEDGER_DONE : LEDGER_FAILED),
				  round == 2 ? i * 10 + 5 : 0);
			e.attempts = (unsigned)round + 1;
			record(fx, &e);
		}
	/* A barrier: answered after everything queued before it. */
	lookup(fx, 0, "1.csv", SHA_A);
	run_until_answers(fx, 1);
	assert_string_equal(seen(fx, &rows),
			    "200:failed,190:done,180:failed,170:done,160:failed,150:done,"
			    "140:failed,130:done,120:failed,110:done,100:failed,90:done,"
			    "80:failed,70:done,60:failed,50:done,40:failed,30:done,20:failed,"
			    "10:done");
	assert_int_equal(rows, 20);
	/* The ledger was called in queue order. */
	assert_int_equal(fx->fake.n_calls, 60);
	for (int k = 0; k < 60; k++)
		assert_int_equal(fx->fake.calls[k], (k % 20 + 1) * 10);
	assert_int_equal(fx->n_failing, 0);
	assert_false(ledgerq_failing(fx->q));
}

/* A look-up sees every record queued before it, answers both questions, copies its strings,
 * and is answered on the loop thread, in order. */
static void test_lookup_sees_records_on_loop(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	char file[32], sha[65];
	void *l;

	e = entry("first.csv", 100, SHA_A, LEDGER_DONE, 150);
	record(fx, &e);
	e = entry("crashed.csv", 200, SHA_A, LEDGER_UPLOADED, 0);
	record(fx, &e);
	/* Strings the caller reuses at once. */
	snprintf(file, sizeof(file), "crashed.csv");
	snprintf(sha, sizeof(sha), "%s", SHA_A);
	assert_int_equal(ledgerq_lookup(fx->q, "news", file, sha, SET_1, 0, true, lookup_cb,
					&fx->tags[0], &l),
			 0);
	memset(file, 'x', sizeof(file) - 1);
	memset(sha, 'y', sizeof(sha) - 1);
	/* Without the duplicate question. */
	assert_int_equal(ledgerq_lookup(fx->q, "news", "crashed.csv", SHA_A, SET_1, 0, false,
					lookup_cb, &fx->tags[1], &l),
			 0);
	/* Another content: neither. */
	lookup(fx, 2, "crashed.csv", SHA_B);
	/* Interleaved with records: each look-up sees the record just before it. */
	for (int i = 3; i < 40; i++) {
		snprintf(file, sizeof(file), "f%d.csv", i);
		e = entry(file, 1000 + i, SHA_B, LEDGER_CLAIMED, 0);
		record(fx, &e);
		lookup(fx, i, file, SHA_B);
	}
	run_until_answers(fx, 40);

	for (int i = 0; i < 40; i++) {
		assert_int_equal(fx->answers[i].id, i);
		assert_true(fx->answers[i].on_loop);
	}
	assert_int_equal(fx->answers[0].unfinished_result, 0);
	assert_int_equal(fx->answers[0].unfinished_claim, 200);
	assert_int_equal(fx->answers[0].imported_result, 0);
	assert_string_equal(fx->answers[0].imported_file, "first.csv");
	assert_int_equal(fx->answers[1].unfinished_result, 0);
	assert_int_equal(fx->answers[1].unfinished_claim, 200);
	assert_int_equal(fx->answers[1].imported_result, -ENOENT);
	assert_int_equal(fx->answers[2].unfinished_result, -ENOENT);
	assert_int_equal(fx->answers[2].imported_result, -ENOENT);
	for (int i = 3; i < 40; i++) {
		assert_int_equal(fx->answers[i].unfinished_result, 0);
		assert_int_equal(fx->answers[i].unfinished_claim, 1000 + i);
		assert_int_equal(fx->answers[i].imported_result, -ENOENT);
	}
}

/* A cancelled look-up's callback is never called: cancelled before the loop ran, or while the
 * thread was answering it. */
static void test_cancel(void **state)
{
	struct fixture *fx = *state;
	void *l;

	l = lookup(fx, 0, "a.csv", SHA_A);
	ledgerq_cancel(fx->q, l);
	lookup(fx, 1, "a.csv", SHA_A);
	run_until_answers(fx, 1);
	run_for(fx, 50);
	assert_int_equal(fx->n_answers, 1);
	assert_int_equal(fx->answers[0].id, 1);

	atomic_store(&fx->fake.hold_lookups, true);
	l = lookup(fx, 2, "a.csv", SHA_A);
	uv_sem_wait(&fx->fake.entered); /* the thread is in it */
	ledgerq_cancel(fx->q, l);
	atomic_store(&fx->fake.hold_lookups, false);
	uv_sem_post(&fx->fake.release);
	lookup(fx, 3, "a.csv", SHA_A);
	run_until_answers(fx, 2);
	run_for(fx, 50);
	assert_int_equal(fx->n_answers, 2);
	assert_int_equal(fx->answers[1].id, 3);
}

static bool told_failing(struct fixture *fx)
{
	return fx->n_failing > 0;
}

static bool told_recovered(struct fixture *fx)
{
	return fx->n_recovered > 0;
}

/* A ledger that stops taking writes: the daemon is told once, the records wait (in order,
 * nothing lost), and once it works again they are written and the daemon is told once more. */
static void test_failing_ledger_recovers(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	int rows, first_ok = -1;

	atomic_store(&fx->fake.fail_records, true);
	e = entry("1.csv", 10, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	e = entry("2.csv", 20, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	e = entry("1.csv", 10, SHA_A, LEDGER_DONE, 15);
	record(fx, &e);
	run_until(fx, told_failing);
	assert_int_equal(fx->n_failing, 1);
	assert_non_null(strstr(fx->health_error, "database or disk is full"));
	assert_true(ledgerq_failing(fx->q));
	/* A look-up waits behind the records, like them. */
	lookup(fx, 0, "2.csv", SHA_A);
	e = entry("3.csv", 30, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	/* Long enough for more than one retry: still one "failing", nothing written. */
	run_for(fx, 1200);
	assert_int_equal(fx->n_failing, 1);
	assert_int_equal(fx->n_recovered, 0);
	assert_int_equal(fx->n_answers, 0);
	seen(fx, &rows);
	assert_int_equal(rows, 0);
	assert_true(fx->fake.n_calls >= 2);

	atomic_store(&fx->fake.fail_records, false);
	run_until(fx, told_recovered);
	run_until_answers(fx, 1);
	assert_int_equal(fx->n_failing, 1);
	assert_int_equal(fx->n_recovered, 1);
	assert_false(ledgerq_failing(fx->q));
	assert_int_equal(fx->answers[0].unfinished_result, 0);
	assert_int_equal(fx->answers[0].unfinished_claim, 20);
	assert_string_equal(fx->answers[0].imported_file, "1.csv");
	assert_string_equal(seen(fx, &rows), "30:claimed,20:claimed,10:done");
	/* After the failures, the records were tried again in their order, each once. */
	for (int k = 0; k < fx->fake.n_calls; k++)
		if (fx->fake.calls[k] > 0) {
			first_ok = k;
			break;
		}
	assert_true(first_ok > 0);
	assert_int_equal(fx->fake.n_calls - first_ok, 4);
	assert_int_equal(fx->fake.calls[first_ok], 10);
	assert_int_equal(fx->fake.calls[first_ok + 1], 20);
	assert_int_equal(fx->fake.calls[first_ok + 2], 10);
	assert_int_equal(fx->fake.calls[first_ok + 3], 30);
	/* And it goes on working: no second "recovered". */
	e = entry("4.csv", 40, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	lookup(fx, 1, "4.csv", SHA_A);
	run_until_answers(fx, 2);
	assert_int_equal(fx->answers[1].unfinished_claim, 40);
	assert_int_equal(fx->n_failing, 1);
	assert_int_equal(fx->n_recovered, 1);
}

static int want_failed_reads;

/* The reads failed as often as wanted, or (wrongly) the look-up is answered. */
static bool reads_failed(struct fixture *fx)
{
	return atomic_load(&fx->fake.failed_reads) >= want_failed_reads ||
	       fx->n_answers >= want_answers;
}

static int want_recovered;

static bool recovered_again(struct fixture *fx)
{
	return fx->n_recovered >= want_recovered;
}

/* A look-up whose read fails is not answered with the error (the header: each result 0 or
 * -ENOENT; the engine takes anything but 0 for "none"): the read fails the ledger like a write
 * (the daemon is told, the look-up waits with its batch and is tried again after the backoff),
 * and the look-up is answered, once and right, when the ledger works again. Each of its three
 * reads in turn. */
static void test_failing_read_waits(void **state)
{
	static const int which[] = {FAIL_UNFINISHED, FAIL_IMPORTED, FAIL_UPLOADED};
	struct fixture *fx = *state;
	struct ledger_entry e;
	int n = (int)(sizeof(which) / sizeof(which[0]));

	e = entry("1.csv", 10, SHA_A, LEDGER_DONE, 15);
	record(fx, &e);
	e = entry("2.csv", 20, SHA_A, LEDGER_UPLOADED, 0);
	record(fx, &e);
	for (int i = 0; i < n; i++) {
		/* Tried (the first time, and tried again after the backoff): no answer. */
		want_failed_reads = atomic_load(&fx->fake.failed_reads) + (i == 0 ? 2 : 1);
		atomic_store(&fx->fake.fail_reads, which[i]);
		lookup(fx, i, "2.csv", SHA_A);
		want_answers = i + 1;
		run_until(fx, reads_failed);
		run_for(fx, 20);
		if (fx->n_answers > i)
			fail_msg("look-up %d answered while its read fails: unfinished %d, imported %d, "
				 "uploaded %d",
				 i, fx->answers[i].unfinished_result, fx->answers[i].imported_result,
				 fx->answers[i].uploaded_result);
		assert_int_equal(fx->n_failing, i + 1);
		assert_true(ledgerq_failing(fx->q));
		assert_non_null(strstr(fx->health_error, "cannot look a file up"));

		atomic_store(&fx->fake.fail_reads, 0);
		run_until_answers(fx, i + 1);
		want_recovered = i + 1;
		run_until(fx, recovered_again);
		assert_false(ledgerq_failing(fx->q));
		assert_int_equal(fx->answers[i].id, i);
		assert_true(fx->answers[i].on_loop);
		assert_int_equal(fx->answers[i].unfinished_result, 0);
		assert_int_equal(fx->answers[i].unfinished_claim, 20);
		assert_int_equal(fx->answers[i].imported_result, 0);
		assert_string_equal(fx->answers[i].imported_file, "1.csv");
		assert_int_equal(fx->answers[i].uploaded_result, -ENOENT);
	}
	/* Each answered once. */
	run_for(fx, 50);
	assert_int_equal(fx->n_answers, n);
	assert_int_equal(fx->n_failing, n);
	assert_int_equal(fx->n_recovered, n);
}

static int n_calls(struct fixture *fx)
{
	int n;

	uv_mutex_lock(&fx->fake.lock);
	n = fx->fake.n_calls;
	uv_mutex_unlock(&fx->fake.lock);
	return n;
}

static int failed_calls(struct fixture *fx)
{
	int n = 0;

	uv_mutex_lock(&fx->fake.lock);
	for (int k = 0; k < fx->fake.n_calls; k++)
		n += fx->fake.calls[k] < 0;
	uv_mutex_unlock(&fx->fake.lock);
	return n;
}

/* A failure that is over before the loop looks is still told, failing then recovered (the
 * header: HEALTH is called when writing starts failing and when it works again), so that the
 * daemon logs it. Here the loop is busy (not run) while the ledger fails once and works again
 * on the next record, which retries at once. */
static void test_brief_failure_is_told(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	uint64_t deadline = uv_hrtime() / 1000000 + GUARD_MS;

	atomic_store(&fx->fake.fail_records, true);
	e = entry("1.csv", 10, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	while (failed_calls(fx) == 0) {
		if (uv_hrtime() / 1000000 > deadline)
			fail_msg("hang guard: the record was never tried");
		usleep(1000);
	}
	/* The thread is now waiting out its first retry delay (500 ms). */
	usleep(100 * 1000);
	atomic_store(&fx->fake.fail_records, false);
	e = entry("2.csv", 20, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	/* Both written (the retry came at once, with the new record), and committed. */
	while (n_calls(fx) < 3) {
		if (uv_hrtime() / 1000000 > deadline)
			fail_msg("hang guard: the records were never tried again");
		usleep(1000);
	}
	usleep(100 * 1000);
	/* Only now does the loop look. */
	lookup(fx, 0, "2.csv", SHA_A);
	run_until_answers(fx, 1);
	run_for(fx, 50);
	assert_int_equal(fx->fake.n_calls, 3);
	assert_int_equal(fx->answers[0].unfinished_claim, 20);
	assert_false(ledgerq_failing(fx->q));
	if (fx->n_failing != 1 || fx->n_recovered != 1)
		fail_msg("a failure over before the loop looked: health said failing %d time(s), "
			 "recovered %d time(s); want 1 and 1",
			 fx->n_failing, fx->n_recovered);
}

/* Stopping writes what is queued before ledgerq_close returns; queued look-ups are dropped. */
static void test_close_writes_queued(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	char name[32];
	int rows;

	for (int i = 1; i <= 200; i++) {
		snprintf(name, sizeof(name), "%d.csv", i);
		e = entry(name, i, SHA_A, LEDGER_DONE, i + 1);
		record(fx, &e);
		if (i == 100)
			lookup(fx, 0, name, SHA_A);
	}
	assert_int_equal(ledgerq_prune(fx->q, 11), 0); /* 1..9 finished before 11 */
	ledgerq_close(fx->q);
	fx->q = NULL;
	seen(fx, &rows);
	assert_int_equal(rows, 191);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(fx->n_answers, 0);
	assert_int_equal(fx->n_failing, 0);
	assert_null(strstr(log_text(fx), "could not be written"));
}

/* Stopping with a ledger that never recovers gives up after its bound and says how many records
 * are lost to history. */
static void test_close_gives_up(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	uint64_t t0, took_ms;
	int rows;

	atomic_store(&fx->fake.fail_records, true);
	e = entry("1.csv", 10, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	run_until(fx, told_failing);
	e = entry("2.csv", 20, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	e = entry("3.csv", 30, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	lookup(fx, 0, "3.csv", SHA_A);

	t0 = uv_hrtime();
	ledgerq_close(fx->q);
	took_ms = (uv_hrtime() - t0) / 1000000;
	fx->q = NULL;
	print_message("ledgerq_close gave up after %llu ms\n", (unsigned long long)took_ms);
	/* "A few seconds" (LEDGERQ_CLOSE_GIVE_UP_MS is 5 s, counted from the first failure; the
	 * last wait is cut short to end then, and one more try is made). */
	assert_true(took_ms >= 3000);
	assert_true(took_ms < 9000);
	assert_non_null(strstr(log_text(fx), "3 file records could not be written"));
	assert_non_null(strstr(log_text(fx), "database or disk is full"));
	seen(fx, &rows);
	assert_int_equal(rows, 0);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(fx->n_answers, 0);
}

/* Stopping while the ledger still fails backs off between tries as before the stop, until it
 * gives up: a handful of tries (at 0.5, 1.5, 3.5 and 5 s from the first failure), not one try
 * after another for the whole 5 s (a core spent on it at every stop: thousands of tries, 4.7 s
 * of CPU). Counted, not timed: a machine however busy makes fewer tries, never more. */
static void test_close_backs_off(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	int before, tries, rows;

	atomic_store(&fx->fake.fail_commits, true);
	e = entry("1.csv", 10, SHA_A, LEDGER_CLAIMED, 0);
	record(fx, &e);
	run_until(fx, told_failing);
	assert_non_null(strstr(fx->health_error, "disk I/O error"));

	before = atomic_load(&fx->fake.batches);
	ledgerq_close(fx->q);
	fx->q = NULL;
	tries = atomic_load(&fx->fake.batches) - before;
	print_message("%d batch tries between ledgerq_close and its giving up\n", tries);
	assert_true(tries >= 1);
	if (tries > 20)
		fail_msg("%d tries while stopping with a failing ledger: it did not back off", tries);
	/* It still gave up, and said so as before. */
	assert_non_null(strstr(log_text(fx), "1 file record could not be written"));
	assert_non_null(strstr(log_text(fx), "disk I/O error"));
	seen(fx, &rows);
	assert_int_equal(rows, 0);
}

/* A queue that never did anything closes cleanly too (teardown checks the loop). */
static void test_idle_close(void **state)
{
	(void)state;
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_records_in_order),
		T(test_lookup_sees_records_on_loop),
		T(test_cancel),
		T(test_failing_ledger_recovers),
		T(test_failing_read_waits),
		T(test_brief_failure_is_told),
		T(test_close_writes_queued),
		T(test_close_gives_up),
		T(test_close_backs_off),
		T(test_idle_close),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
