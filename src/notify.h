/* The service manager's side of the daemon (sd_notify(3)): READY, STATUS, WATCHDOG, RELOADING,
 * STOPPING, EXTEND_TIMEOUT_USEC. Without NOTIFY_SOCKET every call is a no-op and no handle is
 * ever started: an idle daemon outside systemd wakes for none of this.
 *
 * Costs while NOTIFY_SOCKET is set: a check of the status at the end of every loop turn the
 * loop makes anyway (a uv_prepare_t, which never wakes the loop itself; the daemon's callback
 * is O(folders)); STATUS= at most once a second, by a timer that runs only while a change
 * waits to be sent; with WATCHDOG_USEC, one wake-up every WATCHDOG_USEC / 2; while draining,
 * one every NOTIFY_EXTEND_PERIOD_S. */
#ifndef RDD_NOTIFY_H
#define RDD_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define NOTIFY_STATUS_INTERVAL_MS 1000
/* The first EXTEND_TIMEOUT_USEC at a drain covers its timeout plus this margin (the disk work
 * that follows the uploads); after that, while the loop still drains, it is extended by
 * NOTIFY_EXTEND_STEP_S every NOTIFY_EXTEND_PERIOD_S, up to NOTIFY_EXTEND_CAP_S past the
 * timeout. A loop that is stuck extends nothing, and systemd ends it. */
#define NOTIFY_DRAIN_MARGIN_S 15
#define NOTIFY_EXTEND_PERIOD_S 5
#define NOTIFY_EXTEND_STEP_S 15
#define NOTIFY_EXTEND_CAP_S 120

/* What STATUS= says: "3 folders, 12 waiting, 2 uploading, 1 following, 0 paused". */
struct notify_status {
	const char *phase; /* "stopping", "reloading" or NULL; a string literal */
	size_t folders, waiting, uploading, following, finishing, paused;
	size_t unavailable; /* folders that cannot be set up (said apart: an operator must act) */
	const char *pause_reason; /* a string literal, or NULL */
};

typedef void (*notify_status_cb)(void *data, struct notify_status *ret);

struct notify;

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC (sd_watchdog_enabled). STATUS_CB(DATA) is asked for
 * the status at the end of loop turns, and must not change anything. */
int notify_new(uv_loop_t *loop, notify_status_cb status_cb, void *data, struct notify **ret);

bool notify_enabled(const struct notify *n);
/* The watchdog period in ms (half WATCHDOG_USEC), 0 when there is no watchdog. */
uint64_t notify_watchdog_ms(const struct notify *n);

/* READY=1 with the current STATUS=: at start-up once the folders are watched, and after a
 * reload. */
void notify_ready(struct notify *n);
/* RELOADING=1 with MONOTONIC_USEC=now. */
void notify_reloading(struct notify *n);
/* STOPPING=1. */
void notify_stopping(struct notify *n);
/* A drain (stop or reload) has started that may take TIMEOUT_S plus its disk work:
 * EXTEND_TIMEOUT_USEC, now and while it lasts (see above). */
void notify_draining(struct notify *n, uint64_t timeout_s);
/* The drain is over: no more extensions. */
void notify_drained(struct notify *n);

/* Formats S as STATUS= shows it. Pure; for tests too. */
void notify_format_status(char *buf, size_t size, const struct notify_status *s);

/* Stops everything and frees N once its handles have closed. Accepts NULL. */
void notify_close(struct notify *n);

#endif
