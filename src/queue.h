/* A fair queue across folders: one FIFO lane per folder, served round-robin, so that a folder
 * with a thousand waiting files cannot starve a folder with one. O(1) push, pop and remove
 * (utlist's doubly-linked lists); pop is O(lanes). Pure logic. */
#ifndef RDD_QUEUE_H
#define RDD_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct queue_entry {
	struct queue_entry *prev, *next;
	size_t lane;
	bool queued;
};

struct queue_lane {
	struct queue_entry *head;
	size_t n;
	bool paused; /* queue_pop passes it by (resend-dropd pause) */
};

struct queue {
	struct queue_lane *lanes;
	size_t n_lanes;
	size_t next_lane; /* where the round-robin scan starts */
	size_t count;
	size_t ready; /* entries in lanes that are not paused */
};

int queue_init(struct queue *q, size_t n_lanes);
void queue_free(struct queue *q);

/* Appends E (whose lane is set) to its lane; a retried entry goes to the front so that it keeps
 * its place. */
void queue_push(struct queue *q, struct queue_entry *e);
void queue_push_front(struct queue *q, struct queue_entry *e);

/* Takes the head of the next non-empty lane after the last one served, or NULL. */
struct queue_entry *queue_pop(struct queue *q);

/* Removes E wherever it is; false if it was not queued. */
bool queue_remove(struct queue *q, struct queue_entry *e);

/* A paused lane keeps its entries but queue_pop passes it by. */
void queue_pause_lane(struct queue *q, size_t lane, bool paused);

#endif
