/* One run of a hook's command for one event (config.h's struct config_hook): argv as configured
 * (no shell), the event's JSON on stdin, the event in the environment (RDD_EVENT_ID,
 * RDD_EVENT_TYPE, RDD_FOLDER, RDD_FILE, RDD_OUTCOME and PATH; nothing of the daemon's own
 * environment, so never the API key), as the configured user (a daemon running as root runs it
 * as nobody unless the hook says user: root), killed after its timeout (SIGTERM, then SIGKILL
 * 5 s later). What it writes to stdout and stderr is kept (the first 2 KiB) for the log. Loop
 * thread (uv_spawn). */
#ifndef RDD_HOOKRUN_H
#define RDD_HOOKRUN_H

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "ledger.h"

#define HOOKRUN_OUTPUT_KEEP 2048
#define HOOKRUN_KILL_AFTER_MS 5000

struct hookrun;

/* How it went: OK (exit status 0), else WHY says how it ended ("exit status 3", "killed by
 * signal 9", "timed out after 30 s", "cannot run it: ..."), and OUTPUT what it wrote (may be
 * ""). The run is freed after the call. */
typedef void (*hookrun_cb)(bool ok, const char *why, const char *output, void *data);

/* Starts H's command for EV. 0, and CB later (never from within this call); or -errno when it
 * could not be started at all (WHY says why; no CB). */
int hookrun_start(uv_loop_t *loop, const struct config_hook *h, const struct ledger_event *ev,
		  hookrun_cb cb, void *data, char *why, size_t whysz, struct hookrun **ret);
/* Kills the command (SIGKILL) and forgets CB: the run frees itself once its handles close. */
void hookrun_abort(struct hookrun *r);

#endif
