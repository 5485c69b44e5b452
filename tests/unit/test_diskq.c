/* diskq: the disk thread with group commit, on a real libuv loop and real directories. What a
 * user gets from it: completions in order on the loop, one fsync per directory per batch
 * instead of one per file, and directories synced in the order that never loses a moved file. */
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
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "diskq.h"

#define GUARD_MS 10000
#define MAX_OPS 256
#define MAX_SYNCS 256

/* fsync is replaced for the whole test program: it logs the descriptors in the order they are
 * synced and can fail for one of them. It runs in the disk thread; the log is read on the loop
 * after the completions, which diskq's lock orders after the writes. */
static int sync_log[MAX_SYNCS];
static atomic_int n_syncs;
static int fail_fd = -1;

int fsync(int fd)
{
	int i = atomic_fetch_add(&n_syncs, 1);

	if (i < MAX_SYNCS)
		sync_log[i] = fd;
	if (fd == fail_fd) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}

struct fixture;

struct test_op {
	struct diskq_op op; /* first: done/work get it back by cast */
	struct fixture *fx;
	int id;
	int gained, lost;   /* what the work asks to sync */
	uv_sem_t *hold;     /* the work waits for this before it returns */
	uv_thread_t worker; /* the thread the work ran on */
	int syncs_at_done;  /* fsyncs already done when DONE ran */
	struct test_op *then; /* submitted from DONE, without a flush */
};

struct fixture {
	char dir[64];
	int dirs[4];
	uv_loop_t loop;
	uv_timer_t guard;
	uv_thread_t loop_thread;
	struct diskq *dq;
	struct test_op ops[MAX_OPS];
	int done_order[MAX_OPS];
	int n_done, want_done;
	bool closed;
};

static void op_work(struct diskq_op *op)
{
	struct test_op *t = (struct test_op *)op;

	t->worker = uv_thread_self();
	if (t->hold)
		uv_sem_wait(t->hold);
	op->result = t->id;
	op->sync_gained = t->gained;
	op->sync_lost = t->lost;
}

static void op_done(struct diskq_op *op)
{
	struct test_op *t = (struct test_op *)op;
	struct fixture *fx = t->fx;
	uv_thread_t self = uv_thread_self();

	/* On the loop thread, never the disk thread. */
	assert_true(uv_thread_equal(&self, &fx->loop_thread));
	assert_false(uv_thread_equal(&t->worker, &fx->loop_thread));
	assert_int_equal(op->result, t->id);
	t->syncs_at_done = atomic_load(&n_syncs);
	fx->done_order[fx->n_done++] = t->id;
	if (t->then)
		diskq_submit(fx->dq, &t->then->op);
	if (fx->n_done == fx->want_done)
		uv_stop(&fx->loop);
}

static struct test_op *op_init(struct fixture *fx, int id, int gained, int lost)
{
	struct test_op *t = &fx->ops[id];

	memset(t, 0, sizeof(*t));
	t->fx = fx;
	t->id = id;
	t->gained = gained;
	t->lost = lost;
	t->op.work = op_work;
	t->op.done = op_done;
	return t;
}

static void submit(struct fixture *fx, int id, int gained, int lost)
{
	diskq_submit(fx->dq, &op_init(fx, id, gained, lost)->op);
}

static void guard_cb(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop until WANT completions in all. */
static void run_until_done(struct fixture *fx, int want)
{
	fx->want_done = want;
	if (fx->n_done >= want)
		return;
	uv_timer_start(&fx->guard, guard_cb, GUARD_MS, 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	uv_timer_stop(&fx->guard);
	if (fx->n_done != want)
		fail_msg("hang guard: %d of %d completions after %d ms", fx->n_done, want, GUARD_MS);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	char p[128];

	strcpy(fx->dir, "/tmp/rdd-diskq-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	for (int i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s/d%d", fx->dir, i);
		if (mkdir(p, 0700) < 0)
			return -1;
		fx->dirs[i] = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fx->dirs[i] < 0)
			return -1;
	}
	atomic_store(&n_syncs, 0);
	fail_fd = -1;
	if (uv_loop_init(&fx->loop) < 0)
		return -1;
	uv_timer_init(&fx->loop, &fx->guard);
	fx->loop_thread = uv_thread_self();
	if (diskq_new(&fx->loop, &fx->dq) < 0)
		return -1;
	*state = fx;
	return 0;
}

static void dq_closed_cb(void *data)
{
	struct fixture *fx = data;

	fx->closed = true;
}

static void guard_closed_cb(uv_handle_t *h)
{
	(void)h;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int r = 0;

	fail_fd = -1;
	assert_int_equal(diskq_pending(fx->dq), 0);
	diskq_close(fx->dq, dq_closed_cb, fx);
	uv_close((uv_handle_t *)&fx->guard, guard_closed_cb);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_true(fx->closed);
	/* Every handle closed: a leaked one would make this fail. */
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	for (int i = 0; i < 4; i++)
		close(fx->dirs[i]);
	if (nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0)
		r = -1;
	free(fx);
	return r;
}

static int syncs(void)
{
	return atomic_load(&n_syncs);
}

/* Completions come back on the loop thread, in submission order, across batches. */
static void test_done_in_order_on_loop(void **state)
{
	struct fixture *fx = *state;
	int n = 0;

	for (; n < 40; n++)
		submit(fx, n, -1, -1);
	diskq_flush(fx->dq);
	for (; n < 100; n++)
		submit(fx, n, n % 2 ? fx->dirs[0] : -1, -1);
	diskq_flush(fx->dq);
	assert_int_equal(diskq_pending(fx->dq), 100);
	run_until_done(fx, 100);
	for (int i = 0; i < 100; i++)
		assert_int_equal(fx->done_order[i], i);
	assert_int_equal(diskq_pending(fx->dq), 0);
	assert_int_equal(diskq_stats(fx->dq).ops, 100);
}

/* N files moved in one loop turn from one directory to another: 2 directory fsyncs, not 2N. */
static void test_batch_shares_directory_fsyncs(void **state)
{
	struct fixture *fx = *state;
	struct diskq_stats st;
	const int n = 50;

	for (int i = 0; i < n; i++)
		submit(fx, i, fx->dirs[0], fx->dirs[1]);
	diskq_flush(fx->dq);
	run_until_done(fx, n);
	st = diskq_stats(fx->dq);
	assert_int_equal(st.batches, 1);
	assert_int_equal(st.ops, n);
	assert_int_equal(st.dir_fsyncs, 2);
	assert_int_equal(syncs(), 2);
	/* Where the file arrived first, then where it left. */
	assert_int_equal(sync_log[0], fx->dirs[0]);
	assert_int_equal(sync_log[1], fx->dirs[1]);
	/* Nobody heard "done" before the directories were synced. */
	for (int i = 0; i < n; i++)
		assert_int_equal(fx->ops[i].syncs_at_done, 2);
	for (int i = 0; i < n; i++)
		assert_int_equal(fx->ops[i].op.sync_result, 0);
}

/* Ops that ask for no durability cost no fsync. */
static void test_no_sync_requested_no_fsync(void **state)
{
	struct fixture *fx = *state;

	for (int i = 0; i < 10; i++)
		submit(fx, i, -1, -1);
	diskq_flush(fx->dq);
	run_until_done(fx, 10);
	assert_int_equal(diskq_stats(fx->dq).dir_fsyncs, 0);
	assert_int_equal(syncs(), 0);
}

/* What is submitted while a batch is with the thread waits for it and goes as the next batch,
 * all together. */
static void test_submitted_in_flight_go_in_next_batch(void **state)
{
	struct fixture *fx = *state;
	struct diskq_stats st;
	uv_sem_t hold;
	struct test_op *first;

	assert_int_equal(uv_sem_init(&hold, 0), 0);
	first = op_init(fx, 0, fx->dirs[0], -1);
	first->hold = &hold;
	diskq_submit(fx->dq, &first->op);
	diskq_flush(fx->dq); /* the thread now holds op 0 until HOLD is posted */
	for (int i = 1; i <= 5; i++)
		submit(fx, i, fx->dirs[0], -1);
	diskq_flush(fx->dq); /* busy: this must not start a second batch alongside */
	assert_int_equal(diskq_pending(fx->dq), 6);
	uv_sem_post(&hold);
	run_until_done(fx, 6);
	uv_sem_destroy(&hold);
	for (int i = 0; i < 6; i++)
		assert_int_equal(fx->done_order[i], i);
	st = diskq_stats(fx->dq);
	assert_int_equal(st.batches, 2);
	/* One fsync for op 0's batch, one shared by ops 1..5. */
	assert_int_equal(st.dir_fsyncs, 2);
	assert_int_equal(fx->ops[0].syncs_at_done, 1);
	for (int i = 1; i <= 5; i++)
		assert_int_equal(fx->ops[i].syncs_at_done, 2);
}

/* A completion may queue the next step of its file without a flush of its own. */
static void test_submit_from_done_runs(void **state)
{
	struct fixture *fx = *state;
	struct test_op *a = op_init(fx, 0, fx->dirs[0], -1);
	struct test_op *b = op_init(fx, 1, fx->dirs[1], fx->dirs[0]);

	a->then = b;
	diskq_submit(fx->dq, &a->op);
	diskq_flush(fx->dq);
	run_until_done(fx, 2);
	assert_int_equal(fx->done_order[0], 0);
	assert_int_equal(fx->done_order[1], 1);
	assert_int_equal(diskq_stats(fx->dq).batches, 2);
}

/* Directories that only gained entries first, then those that gained and lost, then those
 * that only lost: a crash between two fsyncs leaves a moved file in two places, never in
 * none. The submission order is the worst case for a first-seen order. */
static void test_sync_order_gained_both_lost(void **state)
{
	struct fixture *fx = *state;
	int gained_only = fx->dirs[0], both = fx->dirs[1], lost_only = fx->dirs[2];

	submit(fx, 0, -1, lost_only);
	submit(fx, 1, -1, both);
	submit(fx, 2, both, -1);
	submit(fx, 3, gained_only, -1);
	diskq_flush(fx->dq);
	run_until_done(fx, 4);
	assert_int_equal(syncs(), 3);
	assert_int_equal(diskq_stats(fx->dq).dir_fsyncs, 3);
	assert_int_equal(sync_log[0], gained_only);
	assert_int_equal(sync_log[1], both);
	assert_int_equal(sync_log[2], lost_only);
}

/* Two folders' moves in one batch: each gained directory before any lost one. */
static void test_sync_order_two_moves(void **state)
{
	struct fixture *fx = *state;

	submit(fx, 0, fx->dirs[1], fx->dirs[0]); /* d0 -> d1 */
	submit(fx, 1, fx->dirs[3], fx->dirs[2]); /* d2 -> d3 */
	submit(fx, 2, fx->dirs[1], fx->dirs[0]); /* d0 -> d1 again */
	diskq_flush(fx->dq);
	run_until_done(fx, 3);
	assert_int_equal(syncs(), 4);
	for (int i = 0; i < 2; i++)
		assert_true(sync_log[i] == fx->dirs[1] || sync_log[i] == fx->dirs[3]);
	assert_int_not_equal(sync_log[0], sync_log[1]);
	for (int i = 2; i < 4; i++)
		assert_true(sync_log[i] == fx->dirs[0] || sync_log[i] == fx->dirs[2]);
	assert_int_not_equal(sync_log[2], sync_log[3]);
}

/* A failed directory fsync reaches exactly the ops that needed that directory. */
static void test_sync_failure_reported(void **state)
{
	struct fixture *fx = *state;

	fail_fd = fx->dirs[0];
	submit(fx, 0, fx->dirs[0], -1);          /* gained in the failing one */
	submit(fx, 1, fx->dirs[1], -1);          /* elsewhere */
	submit(fx, 2, fx->dirs[1], fx->dirs[0]); /* lost from the failing one */
	submit(fx, 3, -1, -1);                   /* nothing to sync */
	diskq_flush(fx->dq);
	run_until_done(fx, 4);
	assert_int_equal(fx->ops[0].op.sync_result, -EIO);
	assert_int_equal(fx->ops[1].op.sync_result, 0);
	assert_int_equal(fx->ops[2].op.sync_result, -EIO);
	assert_int_equal(fx->ops[3].op.sync_result, 0);
	/* The work's own result is untouched by it. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(fx->ops[i].op.result, i);

	/* The fault is gone: the retry of the same step succeeds. */
	fail_fd = -1;
	submit(fx, 4, fx->dirs[0], -1);
	diskq_flush(fx->dq);
	run_until_done(fx, 5);
	assert_int_equal(fx->ops[4].op.sync_result, 0);
}

/* A queue that never did anything closes cleanly too (teardown checks the loop). */
static void test_close_unused(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(diskq_pending(fx->dq), 0);
	assert_int_equal(diskq_stats(fx->dq).batches, 0);
}

/* Many small batches in a row: nothing is lost or delivered twice. */
static void test_many_batches(void **state)
{
	struct fixture *fx = *state;
	int next = 0;

	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 5; i++, next++)
			submit(fx, next, fx->dirs[round % 4], fx->dirs[(round + 1) % 4]);
		diskq_flush(fx->dq);
		run_until_done(fx, next);
	}
	assert_int_equal(fx->n_done, 100);
	for (int i = 0; i < 100; i++)
		assert_int_equal(fx->done_order[i], i);
	assert_int_equal(diskq_stats(fx->dq).batches, 20);
	assert_int_equal(diskq_stats(fx->dq).dir_fsyncs, 40);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_done_in_order_on_loop),
		T(test_batch_shares_directory_fsyncs),
		T(test_no_sync_requested_no_fsync),
		T(test_submitted_in_flight_go_in_next_batch),
		T(test_submit_from_done_runs),
		T(test_sync_order_gained_both_lost),
		T(test_sync_order_two_moves),
		T(test_sync_failure_reported),
		T(test_close_unused),
		T(test_many_batches),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
