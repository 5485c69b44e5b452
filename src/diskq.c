#include "diskq.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "fsops.h"

struct diskq {
	uv_loop_t *loop;
	uv_async_t async; /* the thread's "batch done" */
	uv_thread_t thread;
	uv_mutex_t lock;
	uv_cond_t cond;
	/* Loop thread only. */
	struct diskq_op *queued_head, *queued_tail;
	bool busy;      /* a batch is with the thread */
	size_t pending; /* submitted, DONE not yet called */
	struct diskq_stats stats;
	void (*closed_cb)(void *data);
	void *closed_data;
	/* Under lock. */
	struct diskq_op *batch;    /* handed to the thread */
	struct diskq_op *finished; /* handed back */
	uint64_t batch_fsyncs;
	bool quit;
};

struct diskq_dir {
	int fd;
	bool gained, lost;
	int result;
};

static int dir_rank(const struct diskq_dir *d)
{
	return d->gained && !d->lost ? 0 : d->gained ? 1 : 2;
}

static struct diskq_dir *dir_note(struct diskq_dir *dirs, size_t *n, int fd)
{
	for (size_t i = 0; i < *n; i++) {
		if (dirs[i].fd == fd)
			return &dirs[i];
	}
	dirs[*n] = (struct diskq_dir){.fd = fd};
	return &dirs[(*n)++];
}

static int dir_result(const struct diskq_dir *dirs, size_t n, int fd)
{
	for (size_t i = 0; i < n; i++) {
		if (dirs[i].fd == fd)
			return dirs[i].result;
	}
	return 0;
}

/* Disk thread: the batch's work, then one fsync per directory. Costs O(ops x directories),
 * and directories are few (four per folder). */
static uint64_t diskq_run_batch(struct diskq_op *batch)
{
	size_t n_ops = 0, n_dirs = 0;
	struct diskq_dir *dirs;
	uint64_t fsyncs = 0;

	for (struct diskq_op *op = batch; op; op = op->next) {
		op->sync_gained = op->sync_lost = -1;
		op->sync_result = 0;
		op->work(op);
		n_ops++;
	}
	dirs = malloc(2 * n_ops * sizeof(*dirs));
	if (!dirs) {
		/* No grouping without memory for it: each op's directories on their own. */
		for (struct diskq_op *op = batch; op; op = op->next) {
			int fds[2] = {op->sync_gained, op->sync_lost};
			for (int i = 0; i < 2; i++) {
				if (fds[i] >= 0) {
					int r = fsops_fsync_dir(fds[i]);
					if (r < 0 && op->sync_result == 0)
						op->sync_result = r;
					fsyncs++;
				}
			}
		}
		return fsyncs;
	}
	for (struct diskq_op *op = batch; op; op = op->next) {
		if (op->sync_gained >= 0)
			dir_note(dirs, &n_dirs, op->sync_gained)->gained = true;
		if (op->sync_lost >= 0)
			dir_note(dirs, &n_dirs, op->sync_lost)->lost = true;
	}
	for (int rank = 0; rank < 3; rank++) {
		for (size_t i = 0; i < n_dirs; i++) {
			if (dir_rank(&dirs[i]) == rank) {
				dirs[i].result = fsops_fsync_dir(dirs[i].fd);
				fsyncs++;
			}
		}
	}
	for (struct diskq_op *op = batch; op; op = op->next) {
		int a = op->sync_gained >= 0 ? dir_result(dirs, n_dirs, op->sync_gained) : 0;
		int b = op->sync_lost >= 0 ? dir_result(dirs, n_dirs, op->sync_lost) : 0;
		op->sync_result = a ? a : b;
	}
	free(dirs);
	return fsyncs;
}

static void diskq_thread(void *arg)
{
	struct diskq *dq = arg;

	uv_mutex_lock(&dq->lock);
	for (;;) {
		while (!dq->batch && !dq->quit)
			uv_cond_wait(&dq->cond, &dq->lock);
		if (!dq->batch)
			break;
		struct diskq_op *batch = dq->batch;
		dq->batch = NULL;
		uv_mutex_unlock(&dq->lock);
		uint64_t fsyncs = diskq_run_batch(batch);
		uv_mutex_lock(&dq->lock);
		dq->finished = batch;
		dq->batch_fsyncs = fsyncs;
		uv_async_send(&dq->async);
	}
	uv_mutex_unlock(&dq->lock);
}

void diskq_flush(struct diskq *dq)
{
	struct diskq_op *batch = dq->queued_head;

	if (dq->busy || !batch)
		return;
	dq->queued_head = dq->queued_tail = NULL;
	dq->busy = true;
	uv_mutex_lock(&dq->lock);
	dq->batch = batch;
	uv_cond_signal(&dq->cond);
	uv_mutex_unlock(&dq->lock);
}

static void diskq_async_cb(uv_async_t *async)
{
	struct diskq *dq = async->data;
	struct diskq_op *op, *next;

	uint64_t fsyncs;

	uv_mutex_lock(&dq->lock);
	op = dq->finished;
	dq->finished = NULL;
	fsyncs = dq->batch_fsyncs;
	uv_mutex_unlock(&dq->lock);
	if (!op)
		return; /* uv_async_send coalesces; this one was already served */
	dq->stats.dir_fsyncs += fsyncs;
	dq->busy = false;
	dq->stats.batches++;
	for (; op; op = next) {
		next = op->next;
		dq->pending--;
		dq->stats.ops++;
		op->done(op);
	}
	/* What was submitted meanwhile, and by the completions just delivered. */
	diskq_flush(dq);
}

static void diskq_closed_cb(uv_handle_t *handle)
{
	struct diskq *dq = handle->data;
	void (*cb)(void *) = dq->closed_cb;
	void *data = dq->closed_data;

	uv_cond_destroy(&dq->cond);
	uv_mutex_destroy(&dq->lock);
	free(dq);
	if (cb)
		cb(data);
}

int diskq_new(uv_loop_t *loop, struct diskq **ret)
{
	struct diskq *dq = calloc(1, sizeof(*dq));
	int r;

	if (!dq)
		return -ENOMEM;
	dq->loop = loop;
	if ((r = uv_mutex_init(&dq->lock)) < 0)
		goto fail_free;
	if ((r = uv_cond_init(&dq->cond)) < 0)
		goto fail_mutex;
	if ((r = uv_async_init(loop, &dq->async, diskq_async_cb)) < 0)
		goto fail_cond;
	dq->async.data = dq;
	if ((r = uv_thread_create(&dq->thread, diskq_thread, dq)) < 0) {
		/* DQ is freed once the handle is closed, on the loop's next turn. */
		uv_close((uv_handle_t *)&dq->async, diskq_closed_cb);
		return r;
	}
	*ret = dq;
	return 0;
fail_cond:
	uv_cond_destroy(&dq->cond);
fail_mutex:
	uv_mutex_destroy(&dq->lock);
fail_free:
	free(dq);
	return r;
}

void diskq_submit(struct diskq *dq, struct diskq_op *op)
{
	op->next = NULL;
	if (dq->queued_tail)
		dq->queued_tail->next = op;
	else
		dq->queued_head = op;
	dq->queued_tail = op;
	dq->pending++;
}

size_t diskq_pending(const struct diskq *dq)
{
	return dq->pending;
}

struct diskq_stats diskq_stats(const struct diskq *dq)
{
	return dq->stats;
}

void diskq_close(struct diskq *dq, void (*cb)(void *data), void *data)
{
	dq->closed_cb = cb;
	dq->closed_data = data;
	uv_mutex_lock(&dq->lock);
	dq->quit = true;
	uv_cond_signal(&dq->cond);
	uv_mutex_unlock(&dq->lock);
	/* The thread is idle (nothing pending), so this returns at once. */
	uv_thread_join(&dq->thread);
	uv_close((uv_handle_t *)&dq->async, diskq_closed_cb);
}
