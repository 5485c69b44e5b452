/* The running daemon: one libuv loop owning the watchers, the job queue and the HTTP client. */
#ifndef RDD_DAEMON_H
#define RDD_DAEMON_H

#include "config.h"

enum daemon_flags {
	DAEMON_ONCE = 1 << 0,    /* process what is there now, then exit */
	DAEMON_DRY_RUN = 1 << 1, /* check and log; no upload, no move */
};

/* Runs until SIGTERM/SIGINT (or, with DAEMON_ONCE, until the inboxes are empty). Takes ownership
 * of CFG. Returns the process exit status: 0, 2 on a runtime failure, 3 when DAEMON_ONCE and a
 * file failed. */
int daemon_run(struct config *cfg, const char *config_path, unsigned flags);

#endif
