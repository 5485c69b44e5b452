/* sd_notify(3) from the daemon's loop. The watchdog is fed by a timer on the same loop that does
 * the work, not by a thread of its own: a loop that stops turning stops feeding it, and systemd
 * restarts the service. STATUS= is kept current by looking at the end of the turns the loop
 * makes anyway, so that it costs no wake-up of its own, and rate-limited, since a busy daemon
 * changes its counts many times a second and the service manager needs to hear of it once. */
#include "notify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

#define NOTIFY_STATUS_LEN 256

struct notify {
	uv_loop_t *loop;
	notify_status_cb status_cb;
	void *data;
	bool enabled, warned;
	uint64_t watchdog_ms;
	uv_prepare_t turn;       /* end of a loop turn: has the status changed? */
	uv_timer_t status_timer; /* a change waits for the rate limit */
	uv_timer_t watchdog;
	uv_timer_t extend; /* draining */
	struct notify_status sent;
	bool sent_any;
	uint64_t sent_ms;          /* loop time of the last STATUS= */
	uint64_t extended_until_ms; /* loop time the last EXTEND_TIMEOUT_USEC reaches */
	uint64_t extend_cap_ms;
	unsigned open_handles;
};

static void notify_send(struct notify *n, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void notify_send(struct notify *n, const char *fmt, ...)
{
	char buf[NOTIFY_STATUS_LEN + 64];
	va_list ap;
	int r;

	if (!n || !n->enabled)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	r = sd_notify(0, buf);
	/* Said once: a service manager that does not listen will not start to. */
	if (r < 0 && !n->warned) {
		n->warned = true;
		log_warning("cannot notify the service manager (NOTIFY_SOCKET): %s", strerror(-r));
	}
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool status_equal(const struct notify_status *a, const struct notify_status *b)
{
	return same_str(a->phase, b->phase) && a->folders == b->folders &&
	       a->waiting == b->waiting && a->uploading == b->uploading &&
	       a->following == b->following && a->finishing == b->finishing &&
	       a->paused == b->paused && same_str(a->pause_reason, b->pause_reason) &&
	       a->unavailable == b->unavailable;
}

void notify_format_status(char *buf, size_t size, const struct notify_status *s)
{
	char finishing[48] = "", unavailable[64] = "";

	if (s->finishing)
		snprintf(finishing, sizeof(finishing), ", %zu finishing", s->finishing);
	if (s->unavailable)
		snprintf(unavailable, sizeof(unavailable), " (%zu cannot be served)", s->unavailable);
	snprintf(buf, size,
		 "%s%s%zu folder%s%s, %zu waiting, %zu uploading, %zu following%s, %zu paused%s%s%s",
		 s->phase ? s->phase : "", s->phase ? ": " : "", s->folders,
		 s->folders == 1 ? "" : "s", unavailable, s->waiting, s->uploading, s->following,
		 finishing, s->paused, s->pause_reason ? " (" : "",
		 s->pause_reason ? s->pause_reason : "", s->pause_reason ? ")" : "");
}

static void notify_current(struct notify *n, struct notify_status *ret)
{
	memset(ret, 0, sizeof(*ret));
	n->status_cb(n->data, ret);
}

/* PREFIX (e.g. "READY=1\n") and STATUS=, which is then what was sent last. */
static void notify_send_status(struct notify *n, const char *prefix,
			       const struct notify_status *s)
{
	char text[NOTIFY_STATUS_LEN];

	notify_format_status(text, sizeof(text), s);
	notify_send(n, "%sSTATUS=%s", prefix, text);
	n->sent = *s;
	n->sent_any = true;
	n->sent_ms = uv_now(n->loop);
}

static void notify_status_timer_cb(uv_timer_t *timer)
{
	struct notify *n = timer->data;
	struct notify_status cur;

	notify_current(n, &cur);
	if (!status_equal(&cur, &n->sent))
		notify_send_status(n, "", &cur);
}

/* Runs before the loop sleeps, after every callback of the turn (the engine's own end-of-turn
 * work included: it is started later, and libuv runs the newest prepare handle first). */
static void notify_turn_cb(uv_prepare_t *prepare)
{
	struct notify *n = prepare->data;
	struct notify_status cur;
	uint64_t now, since;

	if (uv_is_active((uv_handle_t *)&n->status_timer))
		return; /* it looks again when it fires */
	notify_current(n, &cur);
	if (n->sent_any && status_equal(&cur, &n->sent))
		return;
	now = uv_now(n->loop);
	since = now - n->sent_ms;
	if (!n->sent_any || since >= NOTIFY_STATUS_INTERVAL_MS)
		notify_send_status(n, "", &cur);
	else
		uv_timer_start(&n->status_timer, notify_status_timer_cb,
			       NOTIFY_STATUS_INTERVAL_MS - since, 0);
}

static void notify_watchdog_cb(uv_timer_t *timer)
{
	notify_send(timer->data, "WATCHDOG=1");
}

static void notify_extend_cb(uv_timer_t *timer)
{
	struct notify *n = timer->data;
	uint64_t now = uv_now(n->loop);

	if (now >= n->extend_cap_ms) {
		uv_timer_stop(timer);
		return;
	}
	if (n->extended_until_ms < now + NOTIFY_EXTEND_STEP_S * 1000) {
		notify_send(n, "EXTEND_TIMEOUT_USEC=%" PRIu64,
			    (uint64_t)NOTIFY_EXTEND_STEP_S * 1000000);
		n->extended_until_ms = now + NOTIFY_EXTEND_STEP_S * 1000;
	}
}

int notify_new(uv_loop_t *loop, notify_status_cb status_cb, void *data, struct notify **ret)
{
	struct notify *n = calloc(1, sizeof(*n));
	const char *socket = getenv("NOTIFY_SOCKET");
	uint64_t usec = 0;

	if (!n)
		return -ENOMEM;
	n->loop = loop;
	n->status_cb = status_cb;
	n->data = data;
	n->enabled = socket && socket[0];
	uv_prepare_init(loop, &n->turn);
	uv_timer_init(loop, &n->status_timer);
	uv_timer_init(loop, &n->watchdog);
	uv_timer_init(loop, &n->extend);
	n->turn.data = n->status_timer.data = n->watchdog.data = n->extend.data = n;
	n->open_handles = 4;
	/* None of them keeps the loop running: they serve the work, and end with it. */
	uv_unref((uv_handle_t *)&n->turn);
	uv_unref((uv_handle_t *)&n->status_timer);
	uv_unref((uv_handle_t *)&n->watchdog);
	uv_unref((uv_handle_t *)&n->extend);
	if (n->enabled) {
		uv_prepare_start(&n->turn, notify_turn_cb);
		if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
			n->watchdog_ms = usec / 2000 ? usec / 2000 : 1;
			uv_timer_start(&n->watchdog, notify_watchdog_cb, n->watchdog_ms,
				       n->watchdog_ms);
		}
	}
	*ret = n;
	return 0;
}

bool notify_enabled(const struct notify *n)
{
	return n && n->enabled;
}

uint64_t notify_watchdog_ms(const struct notify *n)
{
	return n ? n->watchdog_ms : 0;
}

void notify_ready(struct notify *n)
{
	struct notify_status cur;

	if (!notify_enabled(n))
		return;
	notify_current(n, &cur);
	notify_send_status(n, "READY=1\n", &cur);
}

void notify_reloading(struct notify *n)
{
	struct timespec ts;

	if (!notify_enabled(n))
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	notify_send(n, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
		    (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
}

void notify_stopping(struct notify *n)
{
	notify_send(n, "STOPPING=1");
}

void notify_draining(struct notify *n, uint64_t timeout_s)
{
	uint64_t now, first_s;

	if (!notify_enabled(n))
		return;
	if (timeout_s > 86400)
		timeout_s = 86400;
	now = uv_now(n->loop);
	first_s = timeout_s + NOTIFY_DRAIN_MARGIN_S;
	notify_send(n, "EXTEND_TIMEOUT_USEC=%" PRIu64, first_s * 1000000);
	n->extended_until_ms = now + first_s * 1000;
	n->extend_cap_ms = now + (timeout_s + NOTIFY_EXTEND_CAP_S) * 1000;
	uv_timer_start(&n->extend, notify_extend_cb, NOTIFY_EXTEND_PERIOD_S * 1000,
		       NOTIFY_EXTEND_PERIOD_S * 1000);
}

void notify_drained(struct notify *n)
{
	if (n)
		uv_timer_stop(&n->extend);
}

static void notify_closed_cb(uv_handle_t *handle)
{
	struct notify *n = handle->data;

	if (--n->open_handles == 0)
		free(n);
}

void notify_close(struct notify *n)
{
	if (!n)
		return;
	uv_close((uv_handle_t *)&n->turn, notify_closed_cb);
	uv_close((uv_handle_t *)&n->status_timer, notify_closed_cb);
	uv_close((uv_handle_t *)&n->watchdog, notify_closed_cb);
	uv_close((uv_handle_t *)&n->extend, notify_closed_cb);
}
