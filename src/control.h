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
	/* POST /reload (socket only): the HTTP status and a JSON body (malloc'd) when it is
	 * answered at once (refused); 0 when the answer comes later, by control_reply(WAITER). */
	unsigned (*reload)(void *data, void *waiter, char **ret_body);
	void *data;
};

/* A control server with nothing to serve yet. -ENOMEM. */
int control_new(uv_loop_t *loop, const struct control_handlers *h, struct control **ret);

/* Serves everything on SOCKET_PATH (mode 0660; a stale socket that nobody answers on is
 * replaced). Logs what went wrong, once: -EADDRINUSE when a live daemon answers there. */
int control_listen_socket(struct control *c, const char *socket_path);

/* Serves GET /metrics only on HOST:PORT (TCP). Logs what went wrong, once. */
int control_listen_metrics(struct control *c, const char *host, uint16_t port);

/* Answers the request WAITER (from the reload handler) with CODE and BODY (malloc'd, taken).
 * C NULL or WAITER NULL: BODY is freed, nothing else. */
void control_reply(struct control *c, void *waiter, unsigned code, char *body);

/* Answers whoever still waits (503), closes every connection and handle, removes the socket file, and frees C in the last close
 * callback. NULL is fine. */
void control_close(struct control *c);

#endif
