#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#include <utlist.h>

/* Limits on what a local client can make the daemon hold. */
#define CONTROL_MAX_CONNECTIONS 32
#define CONTROL_CONNECTION_TIMEOUT_S 10

/* One MHD daemon: the socket's, or the TCP metrics listener's. */
struct control_srv {
	struct control *ctl;
	struct MHD_Daemon *mhd;
	uv_poll_t poll;
	uv_timer_t timer;
	bool commands; /* the socket: everything; TCP: GET /metrics only */
};

struct control_req;

struct control {
	uv_loop_t *loop;
	struct control_req *pending; /* suspended until the daemon answers (utlist DL) */
	struct control_srv srv[2];
	size_t n_srv;
	struct control_handlers h;
	char *socket_path;
	dev_t sock_dev;
	ino_t sock_ino;
	unsigned open_handles;
};

static void control_srv_arm(struct control_srv *s);

static void control_run(struct control_srv *s)
{
	if (MHD_run(s->mhd) != MHD_YES)
		log_debug("control: MHD_run failed");
	control_srv_arm(s);
}

static void control_timer_cb(uv_timer_t *t)
{
	control_run(t->data);
}

/* Only when MHD asks: a connection's timeout, or work ready at once. */
static void control_srv_arm(struct control_srv *s)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
		uv_timer_start(&s->timer, control_timer_cb, (uint64_t)ms, 0);
	else
		uv_timer_stop(&s->timer);
}

static void control_poll_cb(uv_poll_t *p, int status, int events)
{
	(void)status;
	(void)events;
	control_run(p->data);
}

static enum MHD_Result control_respond(struct MHD_Connection *conn, unsigned code, char *body,
				       size_t len, const char *type)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (!body) {
		static const char oom[] = "{\"error\":\"out of memory\"}";
		resp = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom,
						       MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_INTERNAL_SERVER_ERROR;
		type = "application/json";
	} else {
		resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	}
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	r = MHD_queue_response(conn, code, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result control_error(struct MHD_Connection *conn, unsigned code, const char *msg)
{
	char *body = NULL;

	if (asprintf(&body, "{\"error\":\"%s\"}", msg) < 0)
		body = NULL;
	return control_respond(conn, code, body, body ? strlen(body) : 0, "application/json");
}

/* One request, from its headers to the end of its answer (freed in control_completed_cb). A
 * request that waits for the daemon (reload) is suspended in PENDING until control_reply. */
struct control_req {
	struct control_srv *srv;
	struct MHD_Connection *conn;
	struct control_req *prev, *next; /* the control's pending requests */
	bool waiting, answered;
	unsigned code;
	char *body;
};

static enum MHD_Result control_access_cb(void *cls, struct MHD_Connection *conn, const char *url,
					 const char *method, const char *version,
					 const char *upload_data, size_t *upload_data_size,
					 void **req_cls)
{
	struct control_srv *s = cls;
	struct control *c = s->ctl;
	const struct control_handlers *h = &c->h;
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	struct control_req *req = *req_cls;
	char *body = NULL;
	size_t len = 0;

	(void)version;
	(void)upload_data;
	if (!req) {
		/* The headers only: answer once the (ignored) body has been read. */
		req = calloc(1, sizeof(*req));
		if (!req)
			return MHD_NO;
		req->srv = s;
		req->conn = conn;
		*req_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->answered) {
		/* Resumed: the daemon's answer is there. */
		body = req->body;
		req->body = NULL;
		return control_respond(conn, req->code, body, body ? strlen(body) : 0,
				       "application/json");
	}
	if (req->waiting)
		return MHD_YES;
	if (strcmp(url, "/metrics") == 0) {
		if (!get)
			return control_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET");
		if (h->metrics(h->data, &body, &len) < 0)
			body = NULL;
		return control_respond(conn, MHD_HTTP_OK, body, len,
				       "text/plain; version=0.0.4; charset=utf-8");
	}
	if (!s->commands)
		return control_error(conn, MHD_HTTP_NOT_FOUND, "only /metrics is served here");
	if (strcmp(url, "/status") == 0) {
		if (!get)
			return control_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET");
		body = h->status(h->data);
		return control_respond(conn, MHD_HTTP_OK, body, body ? strlen(body) : 0,
				       "application/json");
	}
	if (strcmp(url, "/reload") == 0) {
		unsigned code;

		if (!post)
			return control_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST");
		code = h->reload(h->data, req, &body);
		if (code)
			return control_respond(conn, code, body, body ? strlen(body) : 0,
					       "application/json");
		/* The answer comes once the reload has ended: control_reply. */
		req->waiting = true;
		DL_APPEND(c->pending, req);
		MHD_suspend_connection(conn);
		return MHD_YES;
	}
	if (strcmp(url, "/pause") == 0 || strcmp(url, "/resume") == 0 ||
	    strcmp(url, "/retry") == 0) {
		unsigned code;

		if (!post)
			return control_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST");
		code = h->command(h->data, url + 1,
				  MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "folder"),
				  MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "file"),
				  &body);
		return control_respond(conn, code, body, body ? strlen(body) : 0,
				       "application/json");
	}
	return control_error(conn, MHD_HTTP_NOT_FOUND, "no such resource");
}

static void control_completed_cb(void *cls, struct MHD_Connection *conn, void **req_cls,
				 enum MHD_RequestTerminationCode how)
{
	struct control_req *req = *req_cls;

	(void)cls;
	(void)conn;
	(void)how;
	if (!req)
		return;
	if (req->waiting && !req->answered)
		DL_DELETE(req->srv->ctl->pending, req);
	free(req->body);
	free(req);
	*req_cls = NULL;
}

void control_reply(struct control *c, void *waiter, unsigned code, char *body)
{
	struct control_req *req = waiter;

	if (!c || !req) {
		free(body);
		return;
	}
	DL_DELETE(c->pending, req);
	req->answered = true;
	req->code = code;
	req->body = body;
	MHD_resume_connection(req->conn);
	control_run(req->srv);
}

static void control_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];

	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = '\0';
	log_debug("control: %s", buf);
}

static void control_free(struct control *c)
{
	free(c->socket_path);
	free(c);
}

static void control_closed_cb(uv_handle_t *h)
{
	struct control *c = h->data ? ((struct control_srv *)h->data)->ctl : NULL;

	if (c && --c->open_handles == 0)
		control_free(c);
}

/* LISTEN_FD (listening) is MHD's from here, closed by it, even on failure. */
static int control_srv_start(struct control *c, uv_loop_t *loop, int listen_fd, bool commands)
{
	struct control_srv *s = &c->srv[c->n_srv];
	const union MHD_DaemonInfo *info;
	int r;

	s->ctl = c;
	s->commands = commands;
	s->mhd = MHD_start_daemon(
		MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL,
		control_access_cb, s, MHD_OPTION_EXTERNAL_LOGGER, control_mhd_log, NULL,
		MHD_OPTION_NOTIFY_COMPLETED, control_completed_cb, NULL, MHD_OPTION_LISTEN_SOCKET,
		(MHD_socket)listen_fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONTROL_MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONTROL_CONNECTION_TIMEOUT_S,
		MHD_OPTION_END);
	if (!s->mhd) {
		close(listen_fd);
		return -EIO;
	}
	info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info) {
		MHD_stop_daemon(s->mhd);
		return -EIO;
	}
	r = uv_poll_init(loop, &s->poll, info->epoll_fd);
	if (r < 0) {
		MHD_stop_daemon(s->mhd);
		return r;
	}
	uv_timer_init(loop, &s->timer);
	s->poll.data = s->timer.data = s;
	c->n_srv++;
	c->open_handles += 2;
	uv_poll_start(&s->poll, UV_READABLE, control_poll_cb);
	return 0;
}

/* Is anybody listening on PATH? A socket file nobody answers on was left by a daemon that
 * died: it goes. 0 when PATH is free now. */
static int control_clear_stale(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		log_error("control socket '%s' exists and is not a socket; not replacing it", path);
		return -EEXIST;
	}
	/* Non-blocking: a live daemon with a full backlog says EAGAIN instead of making us
	 * wait; it is live all the same. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0 : -errno;
	close(fd);
	if (r == 0 || r == -EAGAIN) {
		log_error("another resend-dropd answers on the control socket '%s'; only one "
			  "daemon may use it (control.socket)",
			  path);
		return -EADDRINUSE;
	}
	if (r != -ECONNREFUSED) {
		log_error("cannot tell whether control socket '%s' is in use: %s", path,
			  strerror(-r));
		return r;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		log_error("cannot remove the stale control socket '%s': %s", path, strerror(errno));
		return -errno;
	}
	log_info("replaced the stale control socket '%s' of a daemon that is gone", path);
	return 0;
}

static int control_listen_unix(struct control *c, const char *path, int *ret_fd)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("control socket path '%s' is too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	r = control_clear_stale(path, &sa);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Owner and group only, from the moment it exists: Linux gives the file the socket
	 * inode's mode (less the umask), so fchmod before bind rather than only chmod after it
	 * (a moment with the umask's mode), and not umask (process-wide; the disk thread runs). */
	r = fchmod(fd, 0660) == 0 ? 0 : -errno;
	if (r == 0 && bind(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0)
		r = -errno;
	/* Then exactly 0660 whatever the umask took away (systemd's default 022 takes the
	 * group's write, which connect needs): never wider than that at any moment. */
	if (r == 0 && chmod(path, 0660) < 0)
		r = -errno;
	if (r == 0 && listen(fd, CONTROL_MAX_CONNECTIONS) < 0)
		r = -errno;
	if (r == 0 && stat(path, &st) < 0)
		r = -errno;
	if (r < 0) {
		log_error("cannot listen on control socket '%s': %s", path, strerror(-r));
		close(fd);
		return r;
	}
	c->sock_dev = st.st_dev;
	c->sock_ino = st.st_ino;
	*ret_fd = fd;
	return 0;
}

static int control_listen_tcp(const char *host, uint16_t port, int *ret_fd)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	char service[8];
	int fd = -1, r, one = 1;

	snprintf(service, sizeof(service), "%u", (unsigned)port);
	/* "localhost" is looked up in /etc/hosts; anything else must be numeric. */
	if (strcmp(host, "localhost") != 0)
		hints.ai_flags |= AI_NUMERICHOST;
	r = getaddrinfo(host, service, &hints, &res);
	if (r != 0) {
		log_error("metrics.listen '%s:%u': %s", host, (unsigned)port, gai_strerror(r));
		return -EINVAL;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	r = fd < 0 ? -errno : 0;
	if (r == 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (r == 0 && bind(fd, res->ai_addr, res->ai_addrlen) < 0)
		r = -errno;
	if (r == 0 && listen(fd, CONTROL_MAX_CONNECTIONS) < 0)
		r = -errno;
	freeaddrinfo(res);
	if (r < 0) {
		log_error("cannot serve metrics on %s:%u (metrics.listen): %s", host, (unsigned)port,
			  strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int control_new(uv_loop_t *loop, const struct control_handlers *h, struct control **ret)
{
	struct control *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->h = *h;
	*ret = c;
	return 0;
}

int control_listen_socket(struct control *c, const char *socket_path)
{
	int fd = -1, r;

	if (c->socket_path)
		return -EALREADY;
	c->socket_path = strdup(socket_path);
	if (!c->socket_path)
		return -ENOMEM;
	r = control_listen_unix(c, socket_path, &fd);
	if (r == 0)
		r = control_srv_start(c, c->loop, fd, true);
	if (r == -EIO)
		log_error("cannot start the control server on '%s'", socket_path);
	if (r < 0 && !c->sock_ino) {
		free(c->socket_path);
		c->socket_path = NULL;
	}
	return r;
}

int control_listen_metrics(struct control *c, const char *host, uint16_t port)
{
	int fd = -1, r = control_listen_tcp(host, port, &fd);

	if (r == 0)
		r = control_srv_start(c, c->loop, fd, false);
	if (r == -EIO)
		log_error("cannot start the metrics server on %s:%u", host, (unsigned)port);
	if (r == 0)
		log_info("serving metrics on http://%s%s%s:%u/metrics", strchr(host, ':') ? "[" : "",
			 host, strchr(host, ':') ? "]" : "", (unsigned)port);
	return r;
}

void control_close(struct control *c)
{
	struct stat st;

	if (!c)
		return;
	/* Only our own socket file: a path that names another one now is not ours to remove. */
	if (c->sock_ino && c->socket_path && lstat(c->socket_path, &st) == 0 &&
	    st.st_dev == c->sock_dev &&
	    st.st_ino == c->sock_ino)
		unlink(c->socket_path);
	/* MHD may not stop with a connection suspended: whoever still waits is told. */
	while (c->pending) {
		char *body = strdup("{\"error\":\"the daemon is stopping\"}");

		control_reply(c, c->pending, 503, body);
	}
	for (size_t i = 0; i < c->n_srv; i++) {
		struct control_srv *s = &c->srv[i];

		/* libuv stops watching the epoll descriptor at once, so MHD may close it now. */
		uv_close((uv_handle_t *)&s->poll, control_closed_cb);
		uv_close((uv_handle_t *)&s->timer, control_closed_cb);
		MHD_stop_daemon(s->mhd);
		s->mhd = NULL;
	}
	if (c->open_handles == 0)
		control_free(c);
}
