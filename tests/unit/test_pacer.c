/* pacer: the one timer behind every job's waits, on a real libuv loop. Checks what a user
 * would see: waits end in due order, no more uploads at once than max_in_flight, folders take
 * turns, the request rate and pauses hold, and an idle daemon has no timer armed at all.
 * Timing is only ever checked as a lower bound (a busy machine can only make things later). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pacer.h"

#define GUARD_MS 10000
#define MAX_ITEMS 64
#define MAX_EVENTS 256

enum kind { EV_DUE, EV_UPLOAD, EV_POLL, EV_UNPAUSED };

struct event {
	enum kind kind;
	int id;
	uint64_t at; /* loop time */
};

struct item {
	struct pacer_entry pe;
	int id;
	int requeue; /* EV_DUE: queue itself again (delay 0) this many more times */
};

struct fixture {
	uv_loop_t loop;
	uv_timer_t guard;
	struct pacer p;
	bool pacer_up, pacer_closed;
	struct item items[MAX_ITEMS];
	struct event ev[MAX_EVENTS];
	int n_ev;
	int stop_after; /* uv_stop once this many events were recorded */
	unsigned outstanding, max_outstanding; /* upload grants not yet freed */
	bool free_at_once; /* the upload event frees its slot itself */
	bool guard_fired;
};

#define ITEM(e) ((struct item *)((char *)(e) - offsetof(struct item, pe)))

static void record(struct fixture *fx, enum kind kind, int id)
{
	if (fx->n_ev < MAX_EVENTS)
		fx->ev[fx->n_ev] = (struct event){kind, id, uv_now(&fx->loop)};
	fx->n_ev++;
	if (fx->n_ev == fx->stop_after)
		uv_stop(&fx->loop);
}

static void due_cb(struct pacer_entry *e, void *data)
{
	struct fixture *fx = data;
	struct item *it = ITEM(e);

	assert_false(dueq_queued(&e->due));
	record(fx, EV_DUE, it->id);
	if (it->requeue > 0) {
		it->requeue--;
		assert_int_equal(pacer_at(&fx->p, e, 0), 0);
	}
}

static void upload_cb(struct pacer_entry *e, void *data)
{
	struct fixture *fx = data;

	assert_false(e->upload.queued);
	fx->outstanding++;
	if (fx->outstanding > fx->max_outstanding)
		fx->max_outstanding = fx->outstanding;
	record(fx, EV_UPLOAD, ITEM(e)->id);
	if (fx->free_at_once) {
		fx->outstanding--;
		pacer_slot_free(&fx->p);
	}
}

static void poll_cb(struct pacer_entry *e, void *data)
{
	struct fixture *fx = data;

	assert_false(e->poll_queued);
	record(fx, EV_POLL, ITEM(e)->id);
}

static void unpaused_cb(void *data)
{
	record(data, EV_UNPAUSED, -1);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx || uv_loop_init(&fx->loop) < 0)
		return -1;
	uv_timer_init(&fx->loop, &fx->guard);
	fx->stop_after = -1;
	*state = fx;
	return 0;
}

static void start(struct fixture *fx, size_t lanes, unsigned max_in_flight, double rps)
{
	const struct pacer_events ev = {
		.due = due_cb, .upload = upload_cb, .poll = poll_cb, .unpaused = unpaused_cb,
		.data = fx};

	uv_update_time(&fx->loop);
	assert_int_equal(pacer_init(&fx->p, &fx->loop, lanes, max_in_flight, rps, 1, &ev), 0);
	fx->pacer_up = true;
	for (int i = 0; i < MAX_ITEMS; i++) {
		pacer_entry_init(&fx->items[i].pe, 0);
		fx->items[i].id = i;
	}
}

static struct pacer_entry *entry(struct fixture *fx, int id, size_t lane)
{
	struct item *it = &fx->items[id];

	pacer_entry_init(&it->pe, lane);
	it->id = id;
	return &it->pe;
}

static void pacer_closed_cb(void *data)
{
	struct fixture *fx = data;

	fx->pacer_closed = true;
}

static void closed_cb(uv_handle_t *h)
{
	(void)h;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	if (fx->pacer_up)
		pacer_close(&fx->p, pacer_closed_cb, fx);
	uv_close((uv_handle_t *)&fx->guard, closed_cb);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_true(!fx->pacer_up || fx->pacer_closed);
	/* Every handle closed: a leaked one would make this fail. */
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	free(fx);
	return 0;
}

static void guard_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	fx->guard_fired = true;
	uv_stop(t->loop);
}

/* Runs the loop until N events in all have been recorded; fails after GUARD_MS. */
static void run_until_events(struct fixture *fx, int n)
{
	if (fx->n_ev >= n)
		return;
	fx->stop_after = n;
	fx->guard.data = fx;
	uv_timer_start(&fx->guard, guard_cb, GUARD_MS, 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	uv_timer_stop(&fx->guard);
	fx->stop_after = -1;
	if (fx->n_ev < n)
		fail_msg("hang guard: %d of %d events after %d ms", fx->n_ev, n, GUARD_MS);
}

/* Runs the loop for MS of loop time, whatever happens. */
static void run_for(struct fixture *fx, uint64_t ms)
{
	fx->stop_after = -1;
	fx->guard.data = fx;
	uv_timer_start(&fx->guard, guard_cb, ms, 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	uv_timer_stop(&fx->guard);
	fx->guard_fired = false;
}

static bool timer_armed(const struct fixture *fx)
{
	return uv_is_active((const uv_handle_t *)&fx->p.timer);
}

static int count_kind(const struct fixture *fx, enum kind kind)
{
	int n = 0;

	for (int i = 0; i < fx->n_ev && i < MAX_EVENTS; i++)
		n += fx->ev[i].kind == kind;
	return n;
}

static void assert_event(const struct fixture *fx, int i, enum kind kind, int id)
{
	if (i >= fx->n_ev)
		fail_msg("event %d: only %d events", i, fx->n_ev);
	if (fx->ev[i].kind != kind || fx->ev[i].id != id)
		fail_msg("event %d: kind %d id %d, expected kind %d id %d", i, fx->ev[i].kind,
			 fx->ev[i].id, kind, id);
}

/* Waits end in due order, none before its time, and then nothing is armed. */
static void test_due_in_order(void **state)
{
	struct fixture *fx = *state;
	const uint64_t delays[] = {120, 20, 80, 40, 60, 20};
	const int order[] = {1, 5, 3, 4, 2, 0}; /* equal dues: either order, checked below */
	uint64_t t0;

	start(fx, 1, 4, 0);
	assert_false(timer_armed(fx));
	t0 = uv_now(&fx->loop);
	for (int i = 0; i < 6; i++)
		assert_int_equal(pacer_at(&fx->p, entry(fx, i, 0), delays[i]), 0);
	assert_true(timer_armed(fx));
	assert_int_equal(fx->n_ev, 0); /* nothing at once */
	run_until_events(fx, 6);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(fx->ev[i].kind, EV_DUE);
		assert_true(fx->ev[i].at >= t0 + delays[fx->ev[i].id]);
		if (i >= 2)
			assert_int_equal(fx->ev[i].id, order[i]);
	}
	assert_true((fx->ev[0].id == 1 && fx->ev[1].id == 5) ||
		    (fx->ev[0].id == 5 && fx->ev[1].id == 1));
	assert_false(timer_armed(fx));
}

/* A wait queued again from its own event (delay 0) is served on a later turn, not in a loop
 * that never ends. */
static void test_due_requeue_from_event(void **state)
{
	struct fixture *fx = *state;

	start(fx, 1, 4, 0);
	fx->items[0].requeue = 5;
	assert_int_equal(pacer_at(&fx->p, &fx->items[0].pe, 0), 0);
	assert_int_equal(fx->n_ev, 0);
	run_until_events(fx, 6);
	for (int i = 0; i < 6; i++)
		assert_event(fx, i, EV_DUE, 0);
	assert_false(timer_armed(fx));
}

/* At most max_in_flight uploads at once; each freed slot lets exactly one more go. */
static void test_max_in_flight(void **state)
{
	struct fixture *fx = *state;

	start(fx, 1, 2, 0);
	for (int i = 0; i < 5; i++)
		pacer_upload(&fx->p, entry(fx, i, 0), false);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 2);
	assert_int_equal(pacer_uploads_waiting(&fx->p), 3);
	/* Waiting for a slot is waiting for pacer_slot_free, not for time: nothing armed. */
	assert_false(timer_armed(fx));
	run_for(fx, 100);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 2);

	fx->outstanding--;
	pacer_slot_free(&fx->p);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 3);
	run_for(fx, 50);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 3);
	for (int i = 0; i < 2; i++) {
		fx->outstanding--;
		pacer_slot_free(&fx->p);
	}
	assert_int_equal(count_kind(fx, EV_UPLOAD), 5);
	assert_int_equal(fx->max_outstanding, 2);
	assert_int_equal(pacer_uploads_waiting(&fx->p), 0);
	for (int i = 0; i < 5; i++)
		assert_event(fx, i, EV_UPLOAD, i); /* FIFO within one folder */
	assert_false(timer_armed(fx));
}

/* An upload that ends at once (freeing its slot inside the event) lets the next one go in the
 * same pass. */
static void test_slot_freed_inside_event(void **state)
{
	struct fixture *fx = *state;

	start(fx, 1, 1, 0);
	fx->free_at_once = true;
	for (int i = 0; i < 5; i++)
		pacer_upload(&fx->p, entry(fx, i, 0), false);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 5);
	assert_int_equal(fx->max_outstanding, 1);
	assert_false(timer_armed(fx));
}

/* A folder with many files waiting does not starve the others; a retry keeps its place. */
static void test_uploads_round_robin(void **state)
{
	struct fixture *fx = *state;
	/* ids: lane 0: 0, 1, 2; lane 1: 10, 11; lane 2: 20 */
	const int want[] = {0, 10, 20, 3, 11, 1, 2};

	start(fx, 3, 1, 0);
	pacer_upload(&fx->p, entry(fx, 0, 0), false); /* goes at once */
	pacer_upload(&fx->p, entry(fx, 1, 0), false);
	pacer_upload(&fx->p, entry(fx, 2, 0), false);
	pacer_upload(&fx->p, entry(fx, 10, 1), false);
	pacer_upload(&fx->p, entry(fx, 11, 1), false);
	pacer_upload(&fx->p, entry(fx, 20, 2), false);
	pacer_upload(&fx->p, entry(fx, 3, 0), true); /* a retry: before 1 and 2 */
	assert_int_equal(pacer_uploads_waiting(&fx->p), 6);
	for (int i = 1; i < 7; i++) {
		fx->outstanding--;
		pacer_slot_free(&fx->p);
		assert_int_equal(count_kind(fx, EV_UPLOAD), i + 1);
	}
	for (int i = 0; i < 7; i++)
		assert_event(fx, i, EV_UPLOAD, want[i]);
	assert_int_equal(fx->max_outstanding, 1);
}

/* requests_per_second 20, and the team's limit announced as 20 before any request: the
 * assumed limit's burst of 2 at once, then no faster than 20 a second. */
static void test_rate_limit_lower_bound(void **state)
{
	struct fixture *fx = *state;
	const int n = 30;
	uint64_t t0;

	start(fx, 1, 64, 20);
	pacer_note_response(&fx->p, &(struct ratelimit_headers){.limit = "20"});
	assert_true(fx->p.rl.rate == 20);
	t0 = uv_now(&fx->loop);
	for (int i = 0; i < n; i++)
		pacer_upload(&fx->p, entry(fx, i, 0), false);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 2);
	assert_true(timer_armed(fx)); /* waiting for a token is waiting for time */
	run_until_events(fx, n);
	/* (30 - 2) / 20 per second = 1,400 ms at least; no upper bound. */
	if (fx->ev[n - 1].at - t0 < 1390)
		fail_msg("%d grants in %llu ms", n, (unsigned long long)(fx->ev[n - 1].at - t0));
	for (int i = 0; i < n; i++)
		assert_event(fx, i, EV_UPLOAD, i);
	assert_false(timer_armed(fx));
}

/* A pause holds every request back until it ends; `unpaused` says it has ended; the longer of
 * two pauses wins. */
static void test_pause_delays_grants(void **state)
{
	struct fixture *fx = *state;
	uint64_t t0;

	start(fx, 1, 8, 0);
	t0 = uv_now(&fx->loop);
	pacer_pause(&fx->p, 300);
	pacer_pause(&fx->p, 50); /* shorter: does not shorten the first */
	pacer_upload(&fx->p, entry(fx, 0, 0), false);
	pacer_upload(&fx->p, entry(fx, 1, 0), false);
	pacer_poll(&fx->p, entry(fx, 2, 0));
	assert_int_equal(fx->n_ev, 0);
	assert_true(timer_armed(fx));
	run_until_events(fx, 4);
	assert_event(fx, 0, EV_UNPAUSED, -1);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 2);
	assert_int_equal(count_kind(fx, EV_POLL), 1);
	for (int i = 0; i < 4; i++)
		assert_true(fx->ev[i].at >= t0 + 300);
	assert_int_equal(count_kind(fx, EV_UNPAUSED), 1);
	assert_false(timer_armed(fx));

	/* Not paused any more: the next request goes at once. */
	pacer_poll(&fx->p, entry(fx, 3, 0));
	assert_event(fx, 4, EV_POLL, 3);
}

/* The server said to wait (retry-after): no request before then, even without a client-side
 * ceiling. */
static void test_server_retry_after_holds_requests(void **state)
{
	struct fixture *fx = *state;
	uint64_t t0;

	start(fx, 1, 8, 0);
	t0 = uv_now(&fx->loop);
	pacer_note_response(&fx->p, &(struct ratelimit_headers){.retry_after = "0.3"});
	pacer_upload(&fx->p, entry(fx, 0, 0), false);
	assert_int_equal(fx->n_ev, 0);
	run_until_events(fx, 1);
	assert_event(fx, 0, EV_UPLOAD, 0);
	assert_true(fx->ev[0].at >= t0 + 300);
}

/* When uploads and polls both wait, they take turns: a backlog of uploads cannot keep a
 * finished import from being noticed. */
static void test_uploads_and_polls_take_turns(void **state)
{
	struct fixture *fx = *state;

	start(fx, 1, 8, 0);
	pacer_pause(&fx->p, 50);
	for (int i = 0; i < 3; i++)
		pacer_upload(&fx->p, entry(fx, i, 0), false);
	for (int i = 10; i < 13; i++)
		pacer_poll(&fx->p, entry(fx, i, 0));
	run_until_events(fx, 7);
	assert_event(fx, 0, EV_UNPAUSED, -1);
	for (int i = 1; i < 7; i += 2) {
		assert_int_not_equal(fx->ev[i].kind, fx->ev[i + 1].kind);
		assert_true(fx->ev[i].kind == EV_UPLOAD || fx->ev[i].kind == EV_POLL);
	}
	assert_int_equal(count_kind(fx, EV_UPLOAD), 3);
	assert_int_equal(count_kind(fx, EV_POLL), 3);
	/* Polls in the order they were queued. */
	int next_poll = 10;
	for (int i = 0; i < 7; i++) {
		if (fx->ev[i].kind == EV_POLL)
			assert_int_equal(fx->ev[i].id, next_poll++);
	}
}

/* An idle pacer has no timer armed: no wake-ups at all. */
static void test_idle_no_timer(void **state)
{
	struct fixture *fx = *state;

	start(fx, 2, 1, 2);
	assert_false(timer_armed(fx));
	/* A token is available: granted at once, nothing left to wait for. */
	pacer_poll(&fx->p, entry(fx, 0, 0));
	assert_int_equal(fx->n_ev, 1);
	assert_false(timer_armed(fx));
	/* A wait ends, and then there is nothing. */
	assert_int_equal(pacer_at(&fx->p, entry(fx, 1, 0), 30), 0);
	assert_true(timer_armed(fx));
	run_until_events(fx, 2);
	assert_false(timer_armed(fx));
	/* A pause with nothing waiting arms nothing either. */
	pacer_pause(&fx->p, 200);
	assert_false(timer_armed(fx));
	run_for(fx, 50);
	assert_int_equal(fx->n_ev, 2);
}

/* resend-dropd pause FOLDER: its uploads wait, with no timer armed for them, while the other
 * folders' go; resumed, they go at once, in their order. */
static void test_paused_lane(void **state)
{
	struct fixture *fx = *state;

	start(fx, 2, 4, 0);
	fx->free_at_once = true;
	pacer_pause_lane(&fx->p, 0, true);
	pacer_upload(&fx->p, entry(fx, 0, 0), false);
	pacer_upload(&fx->p, entry(fx, 1, 0), false);
	pacer_upload(&fx->p, entry(fx, 10, 1), false);
	assert_int_equal(fx->n_ev, 1);
	assert_event(fx, 0, EV_UPLOAD, 10);
	assert_false(timer_armed(fx));
	run_for(fx, 30);
	assert_int_equal(fx->n_ev, 1);
	assert_int_equal(pacer_uploads_waiting(&fx->p), 2);
	pacer_pause_lane(&fx->p, 0, false);
	assert_int_equal(fx->n_ev, 3);
	assert_event(fx, 1, EV_UPLOAD, 0);
	assert_event(fx, 2, EV_UPLOAD, 1);
	assert_false(timer_armed(fx));
}

/* Cancelling the only thing that waits leaves nothing armed (no wake-up for it). */
static void test_cancel_last_wait_disarms_timer(void **state)
{
	struct fixture *fx = *state;

	start(fx, 1, 1, 0);
	assert_int_equal(pacer_at(&fx->p, entry(fx, 0, 0), 60000), 0);
	assert_true(timer_armed(fx));
	pacer_cancel(&fx->p, &fx->items[0].pe);
	assert_false(dueq_queued(&fx->items[0].pe.due));
	assert_false(timer_armed(fx));
}

/* A cancelled entry leaves whichever queue it was in, and nothing is granted for it. */
static void test_cancel_from_any_queue(void **state)
{
	struct fixture *fx = *state;

	start(fx, 2, 1, 0);
	/* Due queue. */
	assert_int_equal(pacer_at(&fx->p, entry(fx, 0, 0), 30), 0);
	assert_int_equal(pacer_at(&fx->p, entry(fx, 1, 0), 40), 0);
	pacer_cancel(&fx->p, &fx->items[0].pe);
	/* Upload queue: one slot, taken by 2; 3 and 4 wait, 3 is cancelled. */
	pacer_upload(&fx->p, entry(fx, 2, 0), false);
	pacer_upload(&fx->p, entry(fx, 3, 1), false);
	pacer_upload(&fx->p, entry(fx, 4, 1), false);
	pacer_cancel(&fx->p, &fx->items[3].pe);
	assert_false(fx->items[3].pe.upload.queued);
	assert_int_equal(pacer_uploads_waiting(&fx->p), 1);
	/* Poll queue, held by a pause. */
	pacer_pause(&fx->p, 60);
	pacer_poll(&fx->p, entry(fx, 5, 0));
	pacer_poll(&fx->p, entry(fx, 6, 0));
	pacer_cancel(&fx->p, &fx->items[5].pe);
	assert_false(fx->items[5].pe.poll_queued);
	/* Not in any queue: harmless. */
	pacer_cancel(&fx->p, entry(fx, 7, 0));

	fx->outstanding--;
	pacer_slot_free(&fx->p); /* lets 4 go after the pause */
	run_for(fx, 200);
	assert_int_equal(count_kind(fx, EV_DUE), 1);
	for (int i = 0; i < fx->n_ev; i++)
		assert_true(fx->ev[i].id != 0 && fx->ev[i].id != 3 && fx->ev[i].id != 5);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 2); /* 2, then 4 */
	assert_int_equal(count_kind(fx, EV_POLL), 1);   /* 6 */

	/* A cancelled entry can be queued again. */
	assert_int_equal(pacer_at(&fx->p, &fx->items[0].pe, 10), 0);
	run_until_events(fx, fx->n_ev + 1);
	assert_event(fx, fx->n_ev - 1, EV_DUE, 0);
}

/* A drain: nothing more is granted, uploads or polls, but waits still end. */
static void test_stop_grants_nothing_more(void **state)
{
	struct fixture *fx = *state;

	start(fx, 1, 1, 0);
	pacer_upload(&fx->p, entry(fx, 0, 0), false);
	pacer_upload(&fx->p, entry(fx, 1, 0), false);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 1);
	pacer_stop(&fx->p);
	fx->outstanding--;
	pacer_slot_free(&fx->p);
	pacer_upload(&fx->p, entry(fx, 2, 0), false);
	pacer_poll(&fx->p, entry(fx, 3, 0));
	assert_int_equal(pacer_at(&fx->p, entry(fx, 4, 0), 30), 0);
	run_until_events(fx, 2);
	assert_event(fx, 1, EV_DUE, 4);
	run_for(fx, 100);
	assert_int_equal(fx->n_ev, 2);
	assert_int_equal(count_kind(fx, EV_UPLOAD), 1);
	assert_int_equal(count_kind(fx, EV_POLL), 0);
	assert_false(timer_armed(fx));
}

/* Closing with entries still queued frees what the pacer holds (teardown: loop closes). */
static void test_close_with_entries_queued(void **state)
{
	struct fixture *fx = *state;

	start(fx, 2, 1, 1);
	for (int i = 0; i < 10; i++)
		assert_int_equal(pacer_at(&fx->p, entry(fx, i, 0), 1000 + (uint64_t)i), 0);
	for (int i = 10; i < 20; i++)
		pacer_upload(&fx->p, entry(fx, i, (size_t)i % 2), false);
	for (int i = 20; i < 25; i++)
		pacer_poll(&fx->p, entry(fx, i, 0));
	assert_true(timer_armed(fx));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_due_in_order),
		T(test_due_requeue_from_event),
		T(test_max_in_flight),
		T(test_slot_freed_inside_event),
		T(test_uploads_round_robin),
		T(test_rate_limit_lower_bound),
		T(test_pause_delays_grants),
		T(test_server_retry_after_holds_requests),
		T(test_uploads_and_polls_take_turns),
		T(test_idle_no_timer),
		T(test_paused_lane),
		T(test_cancel_last_wait_disarms_timer),
		T(test_cancel_from_any_queue),
		T(test_stop_grants_nothing_more),
		T(test_close_with_entries_queued),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
