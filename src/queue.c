#include "queue.h"

#include <errno.h>
#include <stdlib.h>

int queue_init(struct queue *q, size_t n_lanes)
{
	q->lanes = calloc(n_lanes ? n_lanes : 1, sizeof(*q->lanes));
	if (!q->lanes)
		return -ENOMEM;
	q->n_lanes = n_lanes;
	q->next_lane = 0;
	q->count = 0;
	return 0;
}

void queue_free(struct queue *q)
{
	free(q->lanes);
	q->lanes = NULL;
	q->n_lanes = 0;
	q->count = 0;
}

void queue_push(struct queue *q, struct queue_entry *e)
{
	struct queue_lane *l = &q->lanes[e->lane];

	e->next = NULL;
	if (l->tail)
		l->tail->next = e;
	else
		l->head = e;
	l->tail = e;
	e->queued = true;
	q->count++;
}

void queue_push_front(struct queue *q, struct queue_entry *e)
{
	struct queue_lane *l = &q->lanes[e->lane];

	e->next = l->head;
	l->head = e;
	if (!l->tail)
		l->tail = e;
	e->queued = true;
	q->count++;
}

struct queue_entry *queue_pop(struct queue *q)
{
	for (size_t i = 0; i < q->n_lanes; i++) {
		size_t lane = (q->next_lane + i) % q->n_lanes;
		struct queue_lane *l = &q->lanes[lane];
		struct queue_entry *e = l->head;

		if (!e)
			continue;
		l->head = e->next;
		if (!l->head)
			l->tail = NULL;
		e->next = NULL;
		e->queued = false;
		q->count--;
		q->next_lane = (lane + 1) % q->n_lanes;
		return e;
	}
	return NULL;
}

bool queue_remove(struct queue *q, struct queue_entry *e)
{
	struct queue_lane *l;
	struct queue_entry *prev = NULL;

	if (!e->queued)
		return false;
	l = &q->lanes[e->lane];
	for (struct queue_entry *it = l->head; it; prev = it, it = it->next) {
		if (it != e)
			continue;
		if (prev)
			prev->next = e->next;
		else
			l->head = e->next;
		if (l->tail == e)
			l->tail = prev;
		e->next = NULL;
		e->queued = false;
		q->count--;
		return true;
	}
	return false;
}
