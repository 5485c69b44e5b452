/* The control socket: HTTP over AF_UNIX (status, metrics, commands), and optionally metrics
 * over TCP, served by libmicrohttpd in external-epoll mode on the daemon's own loop: MHD's epoll
 * descriptor sits on a uv_poll_t, and a uv_timer_t is armed only when MHD_get_timeout asks for
 * one (an idle server with no connection asks for none: no wake-ups). No thread. */
#ifndef RDD_CONTROL_H
#define RDD_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct control;

struct control_handlers {
	/* GET /status: JSON text (malloc'd); NULL when out of memory. */
	char *(*status)(void *data);
	/* GET /metrics: Prometheus text (malloc'd). -ENOMEM. */
	int (*metrics)(void *data, char **ret, size_t *ret_len);
	/* POST /pause, /resume, /retry (socket only): the HTTP status, a JSON body (malloc'd). */
	unsigned (*command)(void *data, const char *cmd, const char *folder, const char *file,
			    char **ret_body);
	void *data;
};

/* Listens on SOCKET_PATH (mode 0660; a stale socket that nobody answers on is replaced) and,
 * when METRICS_HOST is not NULL, on METRICS_HOST:METRICS_PORT for GET /metrics only. Logs what
 * went wrong, once: -EADDRINUSE when a live daemon answers on SOCKET_PATH. */
int control_new(uv_loop_t *loop, const char *socket_path, const char *metrics_host,
		uint16_t metrics_port, const struct control_handlers *h, struct control **ret);

/* Closes every connection and handle, removes the socket file, and frees C in the last close
 * callback. NULL is fine. */
void control_close(struct control *c);

#endif
