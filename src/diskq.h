/* The disk threads: every claim, state record, report and move of the daemon runs here, off
 * the event loop, in batches. Operations submitted during one loop turn (and those submitted
 * while the threads were busy with the previous batch) form one batch; a few threads share its
 * work, then every directory it touched is fsynced once, for all of its operations (group
 * commit), and only then are their completions delivered on the loop, in submission order. One
 * batch at a time; the operations of a batch must not depend on each other (the engine has at
 * most one per file).
 *
 * Directory order: a directory that only gained entries is synced before one that gained and
 * lost them, and that before one that only lost them, so that a crash between the fsyncs can
 * leave a moved file named twice but never nowhere. */
#ifndef RDD_DISKQ_H
#define RDD_DISKQ_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct diskq;
struct diskq_op;

/* WORK runs in a disk thread and touches only the op's own data; it sets result, and the
 * directories to fsync (gained, lost; -1: none) when its change must be durable. DONE runs on
 * the loop once the batch's directories are synced. The op's memory is the submitter's and
 * must stay valid until DONE. */
struct diskq_op {
	struct diskq_op *prev, *next;
	void (*work)(struct diskq_op *op);
	void (*done)(struct diskq_op *op);
	int result;
	int sync_gained, sync_lost;
	int sync_result; /* 0, or the first fsync failure of this op's directories */
};

struct diskq_stats {
	uint64_t batches, ops, dir_fsyncs;
};

int diskq_new(uv_loop_t *loop, struct diskq **ret);

/* Queues OP. It goes to the thread at the next diskq_flush, or when the batch in progress has
 * ended. */
void diskq_submit(struct diskq *dq, struct diskq_op *op);

/* Hands what was submitted to the threads, unless they are busy (then it goes when they are
 * free, after a wait of a millisecond for more when there is little of it). Call once per loop
 * turn, after the turn's submissions. */
void diskq_flush(struct diskq *dq);

/* Submitted and not yet done. */
size_t diskq_pending(const struct diskq *dq);
struct diskq_stats diskq_stats(const struct diskq *dq);

/* Stops the thread and closes DQ; nothing may be pending. CB(DATA) once it is freed. */
void diskq_close(struct diskq *dq, void (*cb)(void *data), void *data);

#endif
