#include "dueq.h"

#include <errno.h>
#include <stdlib.h>

void dueq_init(struct dueq *q)
{
	q->heap = NULL;
	q->n = q->cap = 0;
}

void dueq_free(struct dueq *q)
{
	for (size_t i = 0; i < q->n; i++)
		q->heap[i]->pos = DUEQ_NONE;
	free(q->heap);
	dueq_init(q);
}

static void dueq_place(struct dueq *q, size_t i, struct dueq_entry *e)
{
	q->heap[i] = e;
	e->pos = i;
}

static void dueq_up(struct dueq *q, size_t i)
{
	struct dueq_entry *e = q->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (q->heap[parent]->due <= e->due)
			break;
		dueq_place(q, i, q->heap[parent]);
		i = parent;
	}
	dueq_place(q, i, e);
}

static void dueq_down(struct dueq *q, size_t i)
{
	struct dueq_entry *e = q->heap[i];

	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= q->n)
			break;
		if (child + 1 < q->n && q->heap[child + 1]->due < q->heap[child]->due)
			child++;
		if (e->due <= q->heap[child]->due)
			break;
		dueq_place(q, i, q->heap[child]);
		i = child;
	}
	dueq_place(q, i, e);
}

int dueq_push(struct dueq *q, struct dueq_entry *e, uint64_t due)
{
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		struct dueq_entry **h = realloc(q->heap, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		q->heap = h;
		q->cap = cap;
	}
	e->due = due;
	q->heap[q->n] = e;
	e->pos = q->n++;
	dueq_up(q, e->pos);
	return 0;
}

struct dueq_entry *dueq_peek(const struct dueq *q)
{
	return q->n ? q->heap[0] : NULL;
}

void dueq_remove(struct dueq *q, struct dueq_entry *e)
{
	size_t i = e->pos;
	struct dueq_entry *last;

	if (i == DUEQ_NONE)
		return;
	e->pos = DUEQ_NONE;
	last = q->heap[--q->n];
	if (i == q->n)
		return;
	/* The last entry fills the hole and moves whichever way restores the order. */
	dueq_place(q, i, last);
	if (i > 0 && q->heap[(i - 1) / 2]->due > last->due)
		dueq_up(q, i);
	else
		dueq_down(q, i);
}
