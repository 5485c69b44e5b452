/* The control commands (status, reload, retry, pause, resume): a client of the running daemon's
 * control socket, over HTTP with libcurl's unix-socket support. */
#ifndef RDD_CONTROL_CLIENT_H
#define RDD_CONTROL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Exit statuses: 0 done; 1 a usage error, or the daemon refused (unknown folder or file);
 * 2 the daemon is not running or cannot be reached. */
#define CTL_EXIT_REFUSED 1
#define CTL_EXIT_UNREACHABLE 2

/* Whether NAME is one of the commands. */
bool control_client_is_command(const char *name);

#define CTL_MAX_SOCKETS 4

/* Where the daemon may be: the control sockets to try, in order (the first that answers is
 * used), and the configuration whose folders' locks tell "not running" from "not answering"
 * (NULL: none could be read). */
struct control_target {
	const char *sockets[CTL_MAX_SOCKETS];
	size_t n_sockets;
	const struct config *cfg;
	long reload_timeout_s; /* how long `reload` waits for its answer */
};

/* Runs command ARGV[0] with its ARGC - 1 arguments; the exit status. */
int control_client_run(const struct control_target *t, int argc, char **argv);

#endif
