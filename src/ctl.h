/* The control commands (status, retry, pause, resume): a client of the running daemon's
 * control socket, over HTTP with libcurl's unix-socket support. */
#ifndef RDD_CTL_H
#define RDD_CTL_H

#include <stdbool.h>

/* Exit statuses: 0 done; 1 a usage error, or the daemon refused (unknown folder or file);
 * 2 the daemon is not running or cannot be reached. */
#define CTL_EXIT_REFUSED 1
#define CTL_EXIT_UNREACHABLE 2

/* Whether NAME is one of the commands. */
bool ctl_is_command(const char *name);

/* Runs command ARGV[0] with its ARGC - 1 arguments against SOCKET_PATH; the exit status. */
int ctl_run(const char *socket_path, int argc, char **argv);

#endif
