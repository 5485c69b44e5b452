/* Where the control socket lives: one rule for the daemon that listens and the commands that
 * look for it.
 *
 *  - control.socket set: that path, and only that one;
 *  - else, under systemd ($RUNTIME_DIRECTORY, the unit's RuntimeDirectory=): control.sock
 *    there (/run/resend-dropd/control.sock for the shipped unit);
 *  - else (a run by hand): control.sock in state_dir, which the daemon's user owns and the
 *    commands find through the same configuration.
 * The commands look at the service's place first, then at state_dir's. Pure (no libuv). */
#ifndef RDD_CONTROL_PATH_H
#define RDD_CONTROL_PATH_H

#include <stddef.h>

#include "config.h"

/* sizeof(struct sockaddr_un.sun_path) on Linux. */
#define CONTROL_PATH_MAX 108
#define CONTROL_PATH_NAME "control.sock"
#define CONTROL_PATH_MAX_CANDIDATES 3

/* Where the daemon listens, in BUF: 0, or -ENAMETOOLONG (the path does not fit a socket
 * address; BUF still holds as much as fits, for the message). */
int control_path_daemon(const struct config *cfg, char buf[CONTROL_PATH_MAX * 8]);

/* Where a command looks, in order, without repeats: the number of paths written to BUFS.
 * CFG NULL: no configuration could be read (the service's places only). */
size_t control_path_candidates(const struct config *cfg,
			      char bufs[CONTROL_PATH_MAX_CANDIDATES][CONTROL_PATH_MAX * 8]);

#endif
