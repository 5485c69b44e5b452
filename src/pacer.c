#include "pacer.h"

#include <stddef.h>
#include <utlist.h>

#define PACER_FROM(ptr, member) \
	((struct pacer_entry *)((char *)(ptr) - offsetof(struct pacer_entry, member)))

static void pacer_run(struct pacer *s);

static void pacer_timer_cb(uv_timer_t *timer)
{
	pacer_run(timer->data);
}

int pacer_init(struct pacer *s, uv_loop_t *loop, size_t n_lanes, unsigned max_in_flight,
	       double requests_per_second, double rate_share, const struct pacer_events *ev)
{
	int r;

	*s = (struct pacer){.loop = loop, .ev = *ev, .max_in_flight = max_in_flight};
	dueq_init(&s->due);
	r = queue_init(&s->uploads, n_lanes);
	if (r < 0)
		return r;
	ratelimit_init(&s->rl, requests_per_second, rate_share, uv_now(loop));
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	return 0;
}

void pacer_entry_init(struct pacer_entry *e, size_t lane)
{
	*e = (struct pacer_entry){.upload = {.lane = lane}};
	dueq_entry_init(&e->due);
}

void pacer_entry_init_granted(struct pacer_entry *e, void (*granted)(struct pacer_entry *e))
{
	pacer_entry_init(e, 0);
	e->granted = granted;
}

/* Arms the timer for the next moment something can happen, given why the grant loop stopped:
 * TOKEN_WAIT > 0 when a request waits for a token or the end of a pause. */
static void pacer_arm(struct pacer *s, uint64_t now, uint64_t token_wait)
{
	const struct dueq_entry *first = dueq_peek(&s->due);
	uint64_t wait = token_wait;

	if (first) {
		uint64_t d = first->due > now ? first->due - now : 1;
		if (wait == 0 || d < wait)
			wait = d;
	}
	if (wait == 0)
		uv_timer_stop(&s->timer);
	else
		uv_timer_start(&s->timer, pacer_timer_cb, wait, 0);
}

/* Fires what is due and grants what the limits allow. The events may queue, cancel and free
 * slots again (they run from inside this loop): those changes set `again` instead of
 * recursing, and the loop goes round once more. */
static void pacer_run(struct pacer *s)
{
	uint64_t now, token_wait;

	if (s->running || s->held) {
		s->again = true;
		return;
	}
	s->running = true;
	do {
		struct dueq_entry *d;

		s->again = false;
		now = uv_now(s->loop);
		token_wait = 0;
		while ((d = dueq_peek(&s->due)) && d->due <= now) {
			dueq_remove(&s->due, d);
			s->ev.due(PACER_FROM(d, due), s->ev.data);
		}
		for (;;) {
			bool upload = s->uploads.ready > 0 && s->in_flight < s->max_in_flight;
			bool poll = s->polls != NULL;

			if (s->stopped || (!upload && !poll))
				break;
			if (s->paused_until > now) {
				token_wait = s->paused_until - now;
				break;
			}
			if (s->paused_until) {
				s->paused_until = 0;
				s->ev.unpaused(s->ev.data);
				continue;
			}
			token_wait = ratelimit_take(&s->rl, now);
			if (token_wait > 0)
				break;
			if (upload && poll) {
				upload = !s->poll_turn;
				s->poll_turn = !s->poll_turn;
			}
			if (upload) {
				struct queue_entry *q = queue_pop(&s->uploads);
				s->in_flight++;
				s->ev.upload(PACER_FROM(q, upload), s->ev.data);
			} else {
				struct pacer_entry *e = s->polls;
				DL_DELETE(s->polls, e);
				e->poll_queued = false;
				s->ev.poll(e, s->ev.data);
			}
		}
	} while (s->again);
	s->running = false;
	pacer_arm(s, now, token_wait);
}

int pacer_at(struct pacer *s, struct pacer_entry *e, uint64_t delay_ms)
{
	/* Never due at once: an entry that queues itself again from its own event would keep
	 * the loop above from ending. */
	int r = dueq_push(&s->due, &e->due, uv_now(s->loop) + (delay_ms ? delay_ms : 1));

	if (r == 0)
		pacer_run(s);
	return r;
}

void pacer_upload(struct pacer *s, struct pacer_entry *e, bool front)
{
	if (front)
		queue_push_front(&s->uploads, &e->upload);
	else
		queue_push(&s->uploads, &e->upload);
	pacer_run(s);
}

void pacer_poll(struct pacer *s, struct pacer_entry *e)
{
	DL_APPEND(s->polls, e);
	e->poll_queued = true;
	pacer_run(s);
}

struct pacer_entry *pacer_upload_first(struct pacer *s, size_t lane)
{
	struct queue_entry *q = lane < s->uploads.n_lanes ? s->uploads.lanes[lane].head : NULL;

	return q ? PACER_FROM(q, upload) : NULL;
}

struct pacer_entry *pacer_upload_next(struct pacer *s, struct pacer_entry *e)
{
	(void)s;
	return e->upload.next ? PACER_FROM(e->upload.next, upload) : NULL;
}

void pacer_cancel(struct pacer *s, struct pacer_entry *e)
{
	dueq_remove(&s->due, &e->due);
	queue_remove(&s->uploads, &e->upload);
	if (e->poll_queued) {
		DL_DELETE(s->polls, e);
		e->poll_queued = false;
	}
	/* The last one waiting gone: no wake-up for nothing. */
	if (!s->running && !dueq_peek(&s->due) && s->uploads.count == 0 && !s->polls)
		uv_timer_stop(&s->timer);
}

void pacer_hold(struct pacer *s)
{
	s->held++;
}

void pacer_unhold(struct pacer *s)
{
	if (--s->held == 0 && s->again && !s->running)
		pacer_run(s);
}

void pacer_slot_free(struct pacer *s)
{
	s->in_flight--;
	pacer_run(s);
}

void pacer_pause(struct pacer *s, uint64_t ms)
{
	uint64_t until = uv_now(s->loop) + ms;

	if (until > s->paused_until)
		s->paused_until = until;
	pacer_run(s);
}

void pacer_set_share(struct pacer *s, double share)
{
	ratelimit_set_share(&s->rl, share);
	pacer_run(s);
}

void pacer_set_turns(struct pacer *s, unsigned n, unsigned i, int64_t offset_ms)
{
	ratelimit_set_turns(&s->rl, n, i, offset_ms);
	pacer_run(s);
}

void pacer_note_response(struct pacer *s, const struct ratelimit_headers *h)
{
	double rate = s->rl.rate;

	ratelimit_note_response(&s->rl, uv_now(s->loop), h);
	/* A timer armed for a token at the old rate would be late at a higher one. */
	if (s->rl.rate != rate && !s->stopped)
		pacer_run(s);
}

uint64_t pacer_note_refusal(struct pacer *s, const struct ratelimit_headers *h)
{
	return ratelimit_note_refusal(&s->rl, uv_now(s->loop), h);
}

void pacer_stop(struct pacer *s)
{
	s->stopped = true;
	if (!s->running)
		pacer_arm(s, uv_now(s->loop), 0); /* due entries only, no token waits */
}

void pacer_pause_lane(struct pacer *s, size_t lane, bool paused)
{
	queue_pause_lane(&s->uploads, lane, paused);
	if (!paused)
		pacer_run(s);
}

size_t pacer_uploads_waiting(const struct pacer *s)
{
	return s->uploads.count;
}

static void pacer_closed_cb(uv_handle_t *handle)
{
	struct pacer *s = handle->data;

	dueq_free(&s->due);
	queue_free(&s->uploads);
	if (s->closed_cb)
		s->closed_cb(s->closed_data);
}

void pacer_close(struct pacer *s, void (*closed_cb)(void *data), void *data)
{
	s->closed_cb = closed_cb;
	s->closed_data = data;
	uv_close((uv_handle_t *)&s->timer, pacer_closed_cb);
}
