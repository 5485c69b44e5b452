/* Entries ordered by due time (a binary min-heap): the import polls, retry waits and finish
 * retries of every job are served from one queue and one timer, not from a timer each.
 * O(log n) push, pop and remove; O(1) peek. Pure. */
#ifndef RDD_DUEQ_H
#define RDD_DUEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded in whatever waits. pos is its place in the heap, DUEQ_NONE when not queued. */
struct dueq_entry {
	uint64_t due;
	size_t pos;
};

#define DUEQ_NONE ((size_t)-1)

struct dueq {
	struct dueq_entry **heap;
	size_t n, cap;
};

void dueq_init(struct dueq *q);
void dueq_free(struct dueq *q);
static inline void dueq_entry_init(struct dueq_entry *e)
{
	e->pos = DUEQ_NONE;
}
static inline bool dueq_queued(const struct dueq_entry *e)
{
	return e->pos != DUEQ_NONE;
}

/* Queues E (not queued yet) for DUE. -ENOMEM. */
int dueq_push(struct dueq *q, struct dueq_entry *e, uint64_t due);
/* The entry due first, or NULL. */
struct dueq_entry *dueq_peek(const struct dueq *q);
/* Removes E if it is queued. */
void dueq_remove(struct dueq *q, struct dueq_entry *e);

#endif
