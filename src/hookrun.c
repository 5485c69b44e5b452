#include "hookrun.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text.h"

#define HOOKRUN_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define HOOKRUN_N_ENV 8

struct hookrun {
	uv_process_t proc;
	uv_pipe_t in, out, err; /* the command's stdin, stdout, stderr (kept together) */
	uv_timer_t timer;
	uv_write_t write;
	unsigned open_handles;
	hookrun_cb cb;     /* NULL once aborted or called */
	void *data;
	char *input;       /* the event's JSON and a newline, written to stdin */
	char *env[HOOKRUN_N_ENV + 1];
	uint64_t timeout_ms;
	bool exited, timed_out, killed;
	int64_t exit_status;
	int term_signal;
	char output[HOOKRUN_OUTPUT_KEEP + 1];
	size_t output_len;
};

static void timer_cb(uv_timer_t *t);

static void hookrun_free(struct hookrun *r)
{
	for (size_t i = 0; i < HOOKRUN_N_ENV; i++)
		free(r->env[i]);
	free(r->input);
	free(r);
}

/* Every handle closed: the run is over. */
static void closed_cb(uv_handle_t *h)
{
	struct hookrun *r = h->data;
	char why[128], out[HOOKRUN_OUTPUT_KEEP * 4 + 1];

	if (--r->open_handles > 0)
		return;
	if (r->cb) {
		if (r->timed_out)
			snprintf(why, sizeof(why), "timed out after %llu s",
				 (unsigned long long)(r->timeout_ms / 1000));
		else if (r->term_signal)
			snprintf(why, sizeof(why), "killed by signal %d", r->term_signal);
		else
			snprintf(why, sizeof(why), "exit status %lld", (long long)r->exit_status);
		while (r->output_len && (r->output[r->output_len - 1] == '\n' ||
					 r->output[r->output_len - 1] == '\r'))
			r->output[--r->output_len] = '\0';
		text_escape(out, sizeof(out), r->output);
		r->cb(!r->timed_out && !r->term_signal && r->exit_status == 0, why, out, r->data);
	}
	hookrun_free(r);
}

static void close_handle(struct hookrun *r, void *h)
{
	(void)r;
	if (!uv_is_closing((uv_handle_t *)h))
		uv_close((uv_handle_t *)h, closed_cb);
}

static void close_all(struct hookrun *r)
{
	close_handle(r, &r->timer);
	close_handle(r, &r->in);
	close_handle(r, &r->out);
	close_handle(r, &r->err);
	close_handle(r, &r->proc);
}

/* Once it has exited and its output is read (its end seen, or a second after it exited: a
 * grandchild may hold the pipe open), the run ends. */
static void maybe_finish(struct hookrun *r)
{
	if (r->exited && uv_is_closing((uv_handle_t *)&r->out) &&
	    uv_is_closing((uv_handle_t *)&r->err))
		close_all(r);
}

static void exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
	struct hookrun *r = p->data;

	r->exited = true;
	r->exit_status = status;
	r->term_signal = r->timed_out ? 0 : term_signal;
	close_handle(r, &r->proc);
	uv_timer_start(&r->timer, timer_cb, 1000, 0);
	maybe_finish(r);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char sink[4096];

	(void)h;
	(void)suggested;
	*buf = uv_buf_init(sink, sizeof(sink));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct hookrun *r = s->data;

	if (n > 0) {
		size_t room = HOOKRUN_OUTPUT_KEEP - r->output_len;
		size_t k = (size_t)n < room ? (size_t)n : room;

		memcpy(r->output + r->output_len, buf->base, k);
		r->output_len += k;
		r->output[r->output_len] = '\0';
	} else if (n < 0) {
		close_handle(r, s);
		maybe_finish(r);
	}
}

static void write_cb(uv_write_t *w, int status)
{
	struct hookrun *r = w->data;

	(void)status; /* a command that does not read its stdin is its own business */
	close_handle(r, &r->in);
}

static void timer_cb(uv_timer_t *t)
{
	struct hookrun *r = t->data;

	if (r->exited) {
		close_all(r); /* its output, as far as it came */
		return;
	}
	if (!r->timed_out) {
		r->timed_out = true;
		uv_process_kill(&r->proc, SIGTERM);
		uv_timer_start(&r->timer, timer_cb, HOOKRUN_KILL_AFTER_MS, 0);
		return;
	}
	uv_process_kill(&r->proc, SIGKILL);
}

/* The event's fields for the environment, from its JSON payload. */
static int make_env(struct hookrun *r, const struct ledger_event *ev)
{
	cJSON *o = cJSON_Parse(ev->payload);
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "data");
	const char *keys[] = {"folder", "file", "outcome"};
	const char *names[] = {"RDD_FOLDER", "RDD_FILE", "RDD_OUTCOME"};
	size_t n = 0;
	int rc = 0;

	r->env[n++] = strdup(HOOKRUN_PATH);
	r->env[n++] = strdup("LANG=C.UTF-8");
	if (asprintf(&r->env[n++], "RDD_EVENT_ID=%s", ev->msg_id) < 0)
		r->env[n - 1] = NULL;
	if (asprintf(&r->env[n++], "RDD_EVENT_TYPE=%s", ev->type) < 0)
		r->env[n - 1] = NULL;
	for (size_t i = 0; i < 3; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, keys[i]);

		if (!cJSON_IsString(v))
			continue;
		if (asprintf(&r->env[n++], "%s=%s", names[i], v->valuestring) < 0)
			r->env[n - 1] = NULL;
	}
	for (size_t i = 0; i < n; i++)
		if (!r->env[i])
			rc = -ENOMEM;
	cJSON_Delete(o);
	return rc;
}

int hookrun_start(uv_loop_t *loop, const struct config_hook *h, const struct ledger_event *ev,
		  hookrun_cb cb, void *data, char *why, size_t whysz, struct hookrun **ret)
{
	struct hookrun *r = calloc(1, sizeof(*r));
	uv_process_options_t opt = {0};
	uv_stdio_container_t stdio[3];
	uv_buf_t buf;
	int e;

	if (!r || make_env(r, ev) < 0 || asprintf(&r->input, "%s\n", ev->payload) < 0) {
		if (r)
			hookrun_free(r);
		snprintf(why, whysz, "out of memory");
		return -ENOMEM;
	}
	r->cb = cb;
	r->data = data;
	r->timeout_ms = h->n.timeout_ms;
	uv_pipe_init(loop, &r->in, 0);
	uv_pipe_init(loop, &r->out, 0);
	uv_pipe_init(loop, &r->err, 0);
	uv_timer_init(loop, &r->timer);
	r->in.data = r->out.data = r->err.data = r->timer.data = r->proc.data = r->write.data = r;
	stdio[0] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_READABLE_PIPE,
					  .data.stream = (uv_stream_t *)&r->in};
	stdio[1] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
					  .data.stream = (uv_stream_t *)&r->out};
	stdio[2] = (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
					  .data.stream = (uv_stream_t *)&r->err};
	opt.file = h->argv[0];
	opt.args = h->argv;
	opt.env = r->env;
	opt.cwd = "/";
	opt.stdio = stdio;
	opt.stdio_count = 3;
	opt.exit_cb = exit_cb;
	if (h->uid != (uid_t)-1) {
		opt.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
		opt.uid = h->uid;
		opt.gid = h->gid;
	} else if (geteuid() == 0) {
		/* Never root unless the hook says so. */
		struct passwd *nobody = getpwnam("nobody");

		opt.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
		opt.uid = nobody ? nobody->pw_uid : 65534;
		opt.gid = nobody ? nobody->pw_gid : 65534;
	}
	e = uv_spawn(loop, &r->proc, &opt);
	r->open_handles = 5;
	if (e < 0) {
		snprintf(why, whysz, "cannot run '%s': %s", h->argv[0], uv_strerror(e));
		r->cb = NULL;
		r->exited = true;
		/* The process handle is closed too: uv_spawn initialised it even so. */
		close_all(r);
		return e;
	}
	uv_read_start((uv_stream_t *)&r->out, alloc_cb, read_cb);
	uv_read_start((uv_stream_t *)&r->err, alloc_cb, read_cb);
	buf = uv_buf_init(r->input, (unsigned)strlen(r->input));
	if (uv_write(&r->write, (uv_stream_t *)&r->in, &buf, 1, write_cb) < 0)
		close_handle(r, &r->in);
	uv_timer_start(&r->timer, timer_cb, r->timeout_ms, 0);
	*ret = r;
	return 0;
}

void hookrun_abort(struct hookrun *r)
{
	r->cb = NULL;
	if (r->exited) {
		close_all(r);
		return;
	}
	/* Killed, and its process handle kept open until it has exited: libuv reaps the children
	 * of open handles only, and one closed sooner would stay a zombie for as long as the
	 * daemon runs (a reload). exit_cb closes it, and maybe_finish the rest. */
	uv_process_kill(&r->proc, SIGKILL);
	close_handle(r, &r->timer);
	close_handle(r, &r->in);
	close_handle(r, &r->out);
	close_handle(r, &r->err);
}
