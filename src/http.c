/* curl's multi_socket API on libuv, after curl's docs/examples/multi-uv.c, with the traps a
 * daemon cannot afford fixed: completed transfers are drained after every socket action (not
 * only while handles run), poll errors reach curl as CURL_CSELECT_ERR, CURL_POLL_REMOVE may come
 * for a socket we never saw, and easy handles are removed only from the drain. */
#include "http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

struct http_socket {
	uv_poll_t poll;
	curl_socket_t fd;
	struct http *http;
	struct http_socket *next; /* http->sockets: closed on shutdown even if curl never says */
};

struct http_transfer {
	http_done_cb cb;
	void *data;
};

struct http {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct http_socket *sockets;
	unsigned running;
	unsigned pending_closes;
	bool kick; /* curl asked for a timeout of 0 */
	void (*closed_cb)(void *data);
	void *closed_data;
};

static void http_drain(struct http *http)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(http->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode result = msg->data.result;
		struct http_transfer *t = NULL;

		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
		curl_multi_remove_handle(http->multi, easy);
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		http->running--;
		if (t) {
			http_done_cb cb = t->cb;
			void *data = t->data;
			free(t);
			cb(easy, result, data);
		}
	}
}

/* How many times in a row curl may ask to be called again at once before the loop gets its
 * turn. */
#define HTTP_KICKS_MAX 8

static void http_socket_action(struct http *http, curl_socket_t fd, int flags)
{
	int running;

	for (int i = 0; i < HTTP_KICKS_MAX; i++) {
		http->kick = false;
		curl_multi_socket_action(http->multi, fd, flags, &running);
		http_drain(http);
		/* A transfer started from a completion just drained (the next upload, once a slot
		 * is free) asks for a timeout of 0: served here, it goes out now rather than after
		 * every other event of this loop turn. (The timer is armed too, for requests
		 * started outside this function.) */
		if (!http->kick)
			break;
		fd = CURL_SOCKET_TIMEOUT;
		flags = 0;
	}
}

static void http_poll_cb(uv_poll_t *poll, int status, int events)
{
	struct http_socket *s = poll->data;
	int flags = 0;

	if (status < 0) {
		flags = CURL_CSELECT_ERR;
	} else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	http_socket_action(s->http, s->fd, flags);
}

static void http_handle_closed_cb(uv_handle_t *handle)
{
	struct http *http;

	if (handle->type == UV_POLL) {
		struct http_socket *s = handle->data;
		http = s->http;
		free(s);
	} else {
		http = handle->data;
	}
	if (--http->pending_closes > 0 || !http->closed_cb)
		return;
	void (*cb)(void *) = http->closed_cb;
	void *data = http->closed_data;
	free(http);
	cb(data);
}

static void http_socket_close(struct http *http, struct http_socket *s)
{
	for (struct http_socket **p = &http->sockets; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	uv_poll_stop(&s->poll);
	http->pending_closes++;
	uv_close((uv_handle_t *)&s->poll, http_handle_closed_cb);
}

static int http_socket_cb(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
	struct http *http = userp;
	struct http_socket *s = socketp;
	int events = 0;

	(void)easy;
	if (action == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(http->multi, fd, NULL);
			http_socket_close(http, s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		if (uv_poll_init_socket(http->loop, &s->poll, fd) < 0) {
			free(s);
			return -1;
		}
		s->fd = fd;
		s->http = http;
		s->poll.data = s;
		s->next = http->sockets;
		http->sockets = s;
		curl_multi_assign(http->multi, fd, s);
	}
	if (action & CURL_POLL_IN)
		events |= UV_READABLE;
	if (action & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	return uv_poll_start(&s->poll, events, http_poll_cb) < 0 ? -1 : 0;
}

static void http_timeout_cb(uv_timer_t *timer)
{
	http_socket_action(timer->data, CURL_SOCKET_TIMEOUT, 0);
}

static int http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct http *http = userp;

	(void)multi;
	if (timeout_ms < 0)
		uv_timer_stop(&http->timer);
	else
		uv_timer_start(&http->timer, http_timeout_cb, (uint64_t)timeout_ms, 0);
	if (timeout_ms == 0)
		http->kick = true;
	return 0;
}

int http_new(uv_loop_t *loop, struct http **ret)
{
	struct http *http = calloc(1, sizeof(*http));
	int r;

	if (!http)
		return -ENOMEM;
	http->loop = loop;
	http->multi = curl_multi_init();
	if (!http->multi) {
		free(http);
		return -ENOMEM;
	}
	r = uv_timer_init(loop, &http->timer);
	if (r < 0) {
		curl_multi_cleanup(http->multi);
		free(http);
		return r;
	}
	http->timer.data = http;
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
	*ret = http;
	return 0;
}

int http_start(struct http *http, CURL *easy, http_done_cb cb, void *data)
{
	struct http_transfer *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->cb = cb;
	t->data = data;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
	if (curl_multi_add_handle(http->multi, easy) != CURLM_OK) {
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		free(t);
		return -EINVAL;
	}
	http->running++;
	return 0;
}

void http_abort(struct http *http, CURL *easy)
{
	struct http_transfer *t = NULL;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
	if (!t)
		return;
	curl_multi_remove_handle(http->multi, easy);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
	free(t);
	http->running--;
}

unsigned http_running(const struct http *http)
{
	return http->running;
}

void http_close(struct http *http, void (*cb)(void *data), void *data)
{
	http->closed_cb = cb;
	http->closed_data = data;
	/* Cleaning up the multi handle closes its cached connections; whatever sockets curl did
	 * not announce as removed are closed here. */
	curl_multi_cleanup(http->multi);
	http->multi = NULL;
	while (http->sockets)
		http_socket_close(http, http->sockets);
	uv_timer_stop(&http->timer);
	http->pending_closes++;
	uv_close((uv_handle_t *)&http->timer, http_handle_closed_cb);
}
