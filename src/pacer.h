/* When each job may act next: one timer for every job of the daemon.
 *
 *  - a queue ordered by due time (dueq): retry waits, the next look at an import, a move to
 *    retry after a temporary failure;
 *  - the upload queue, fair across folders (queue.c), served while fewer than max_in_flight
 *    uploads run;
 *  - the polls that are due;
 *  - one token bucket (ratelimit.c) and the global pause (refused key, quota) in front of both
 *    kinds of request, taking turns between uploads and polls when both wait.
 *
 * The timer is armed for the earliest of: the first due entry, the next token (only when a
 * request waits for one) and the end of a pause. Nothing waiting: no timer, no wake-ups. */
#ifndef RDD_PACER_H
#define RDD_PACER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "dueq.h"
#include "queue.h"
#include "ratelimit.h"

/* Embedded in a job: it is in at most one of the three queues at a time. */
struct pacer_entry {
	struct dueq_entry due;
	struct queue_entry upload; /* upload.lane: the folder */
	struct pacer_entry *prev, *next; /* polls */
	bool poll_queued;
	/* Set by a requester that is not the engine's (the outbox's e-mails): the engine hands it
	 * the token that pacer_poll waited for. */
	void (*granted)(struct pacer_entry *e);
};

struct pacer_events {
	void (*due)(struct pacer_entry *e, void *data);    /* its time has come */
	void (*upload)(struct pacer_entry *e, void *data); /* an upload slot and a token */
	void (*poll)(struct pacer_entry *e, void *data);   /* a token */
	void (*unpaused)(void *data);                      /* a pause has ended */
	void *data;
};

struct pacer {
	uv_loop_t *loop;
	uv_timer_t timer;
	struct pacer_events ev;
	struct dueq due;
	struct queue uploads;
	struct pacer_entry *polls;
	struct ratelimit rl;
	unsigned max_in_flight, in_flight;
	uint64_t paused_until; /* loop ms; 0: not paused */
	bool stopped;
	bool running, again;
	unsigned held; /* pacer_hold: grants wait */
	bool poll_turn;
	void (*closed_cb)(void *data);
	void *closed_data;
};

/* REQUESTS_PER_SECOND and RATE_SHARE: api.requests_per_second and api.rate_share
 * (ratelimit_init). */
int pacer_init(struct pacer *s, uv_loop_t *loop, size_t n_lanes, unsigned max_in_flight,
	       double requests_per_second, double rate_share, const struct pacer_events *ev);
void pacer_entry_init(struct pacer_entry *e, size_t lane);
/* E of a requester of its own: GRANTED(E) gets the token pacer_poll waits for. */
void pacer_entry_init_granted(struct pacer_entry *e, void (*granted)(struct pacer_entry *e));

/* E's `due` event in DELAY_MS. -ENOMEM. */
int pacer_at(struct pacer *s, struct pacer_entry *e, uint64_t delay_ms);
/* E waits for an upload slot and a token; FRONT: before the others of its folder (a retry
 * keeps its place). */
void pacer_upload(struct pacer *s, struct pacer_entry *e, bool front);
/* E waits for a token to ask about its import. */
void pacer_poll(struct pacer *s, struct pacer_entry *e);
/* The uploads waiting in folder LANE's queue, in their order: the first, and the one after E;
 * NULL at the end. */
struct pacer_entry *pacer_upload_first(struct pacer *s, size_t lane);
struct pacer_entry *pacer_upload_next(struct pacer *s, struct pacer_entry *e);
/* E leaves whatever queue it is in. */
void pacer_cancel(struct pacer *s, struct pacer_entry *e);

/* Nothing is granted until the matching pacer_unhold: several entries put back in the queue
 * (and slots freed) together are granted in the order they stand, not the first as it comes. */
void pacer_hold(struct pacer *s);
void pacer_unhold(struct pacer *s);
/* An upload granted by the `upload` event has ended; its slot is free again. */
void pacer_slot_free(struct pacer *s);
/* No request goes out for MS (longer pauses win). */
void pacer_pause(struct pacer *s, uint64_t ms);
/* The share of the team's limit this daemon spends (ratelimit_set_share). */
void pacer_set_share(struct pacer *s, double share);
/* A fleet's turns (ratelimit_set_turns; the offset against the loop's clock). */
void pacer_set_turns(struct pacer *s, unsigned n, unsigned i, int64_t offset_ms);
/* Feeds the rate-limit headers of an answer (ratelimit_note_response). */
void pacer_note_response(struct pacer *s, const struct ratelimit_headers *h);
/* The same for an answer that refused the request for the team's rate limit (a 429): no
 * request goes before the time it names (ratelimit_note_refusal). The wait, in ms. */
uint64_t pacer_note_refusal(struct pacer *s, const struct ratelimit_headers *h);
/* Grants nothing any more (a drain); due events still fire. */
void pacer_stop(struct pacer *s);

/* Uploads of folder LANE wait (PAUSED) or may go again; polls are not affected. */
void pacer_pause_lane(struct pacer *s, size_t lane, bool paused);

size_t pacer_uploads_waiting(const struct pacer *s);

/* Closes the timer; CLOSED_CB(DATA) once it is closed. */
void pacer_close(struct pacer *s, void (*closed_cb)(void *data), void *data);

#endif
