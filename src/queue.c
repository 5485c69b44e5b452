#include "queue.h"

#include <errno.h>
#include <stdlib.h>
#include <utlist.h>

int queue_init(struct queue *q, size_t n_lanes)
{
	q->lanes = calloc(n_lanes ? n_lanes : 1, sizeof(*q->lanes));
	if (!q->lanes)
		return -ENOMEM;
	q->n_lanes = n_lanes;
	q->next_lane = 0;
	q->count = q->ready = 0;
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
	DL_APPEND(q->lanes[e->lane].head, e);
	e->queued = true;
	q->count++;
	q->lanes[e->lane].n++;
	q->ready += !q->lanes[e->lane].paused;
}

void queue_push_front(struct queue *q, struct queue_entry *e)
{
	DL_PREPEND(q->lanes[e->lane].head, e);
	e->queued = true;
	q->count++;
	q->lanes[e->lane].n++;
	q->ready += !q->lanes[e->lane].paused;
}

bool queue_remove(struct queue *q, struct queue_entry *e)
{
	if (!e->queued)
		return false;
	DL_DELETE(q->lanes[e->lane].head, e);
	e->prev = e->next = NULL;
	e->queued = false;
	q->count--;
	q->lanes[e->lane].n--;
	q->ready -= !q->lanes[e->lane].paused;
	return true;
}

struct queue_entry *queue_pop(struct queue *q)
{
	for (size_t i = 0; i < q->n_lanes; i++) {
		size_t lane = (q->next_lane + i) % q->n_lanes;
		struct queue_entry *e = q->lanes[lane].head;

		if (!e || q->lanes[lane].paused)
			continue;
		queue_remove(q, e);
		q->next_lane = (lane + 1) % q->n_lanes;
		return e;
	}
	return NULL;
}

void queue_pause_lane(struct queue *q, size_t lane, bool paused)
{
	struct queue_lane *l = &q->lanes[lane];

	if (l->paused == paused)
		return;
	l->paused = paused;
	if (paused)
		q->ready -= l->n;
	else
		q->ready += l->n;
}
