/* Start-up and shutdown order, signals and the service manager. Start: HTTP glue, jobs (which
 * create the processing directories), resume what a previous run left, then the watchers. Stop:
 * watchers first (no new claims), then drain the jobs, then close the HTTP glue. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "api.h"
#include "http.h"
#include "job.h"
#include "log.h"
#include "watch.h"

struct daemon {
	uv_loop_t loop;
	struct config *cfg;
	const char *config_path;
	unsigned flags;
	struct http *http;
	struct api *api;
	struct jobs *jobs;
	struct watch **watches;
	uv_signal_t sigterm, sigint, sighup, sigusr1;
	uv_idle_t once_check;
	bool stopping;
	int exit_status;
};

static void daemon_stop(struct daemon *d, int exit_status);

static void daemon_http_closed_cb(void *data)
{
	(void)data;
}

static void daemon_drained_cb(void *data)
{
	struct daemon *d = data;

	jobs_close(d->jobs);
	d->jobs = NULL;
	api_free(d->api);
	d->api = NULL;
	http_close(d->http, daemon_http_closed_cb, d);
	d->http = NULL;
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	uv_close((uv_handle_t *)&d->sighup, NULL);
	uv_close((uv_handle_t *)&d->sigusr1, NULL);
	uv_close((uv_handle_t *)&d->once_check, NULL);
}

static void daemon_stop(struct daemon *d, int exit_status)
{
	if (d->stopping)
		return;
	d->stopping = true;
	d->exit_status = exit_status;
	sd_notify(0, "STOPPING=1");
	for (size_t i = 0; i < d->cfg->n_folders; i++) {
		if (d->watches[i])
			watch_close(d->watches[i]);
		d->watches[i] = NULL;
	}
	uv_idle_stop(&d->once_check);
	jobs_drain(d->jobs, d->cfg->api.shutdown_timeout_s * 1000, daemon_drained_cb, d);
}

static void daemon_signal_cb(uv_signal_t *sig, int signum)
{
	struct daemon *d = sig->data;

	switch (signum) {
	case SIGTERM:
	case SIGINT:
		log_info("received %s; finishing uploads in flight (at most %llu s), taking no new "
			 "files",
			 signum == SIGTERM ? "SIGTERM" : "SIGINT",
			 (unsigned long long)d->cfg->api.shutdown_timeout_s);
		daemon_stop(d, d->exit_status);
		break;
	case SIGUSR1:
		jobs_log_status(d->jobs);
		break;
	case SIGHUP: {
		/* Folders, limits and the key are wired into running jobs; a new configuration is
		 * validated now so that a mistake shows at once, and applied by a restart. */
		struct config *next = NULL;
		struct config_errors errs = {0};
		if (config_load(d->config_path, 0, &next, &errs) < 0) {
			log_error("SIGHUP: configuration %s has %zu error%s; keeping the running "
				  "configuration",
				  d->config_path, errs.count, errs.count == 1 ? "" : "s");
			for (size_t i = 0; i < errs.count; i++)
				log_error("%s", errs.items[i]);
			config_errors_clear(&errs);
			break;
		}
		config_free(next);
		log_warning("SIGHUP: configuration %s is valid; restart the service to apply it "
			    "(live reload is not supported yet)",
			    d->config_path);
		break;
	}
	}
}

static void daemon_ready_cb(struct watch *w, const char *name, void *data)
{
	struct daemon *d = data;
	size_t folder = 0;

	while (folder < d->cfg->n_folders && d->watches[folder] != w)
		folder++;
	if (folder == d->cfg->n_folders || d->stopping)
		return;
	int r = jobs_submit(d->jobs, folder, name);
	if (r == -EEXIST) {
		/* A file of the same name is still in processing: look again on the next scan. */
		log_info("%s: '%s' waits: a file of that name is still being processed",
			 d->cfg->folders[folder].name, name);
		watch_forget(w, name);
	} else if (r < 0 && r != -ENOENT && r != -ECANCELED) {
		log_error("%s: cannot claim '%s': %s", d->cfg->folders[folder].name, name,
			  strerror(-r));
		watch_forget(w, name);
	}
}

/* --once: done when no watch has a file settling and no job is left. Checked from an idle
 * handle so that it runs after the callbacks of one loop turn, never inside them. */
static void daemon_once_check_cb(uv_idle_t *idle)
{
	struct daemon *d = idle->data;

	for (size_t i = 0; i < d->cfg->n_folders; i++) {
		if (d->watches[i] && watch_pending(d->watches[i]) > 0)
			return;
	}
	if (jobs_active(d->jobs) > 0)
		return;
	unsigned failed = jobs_failed_total(d->jobs);
	log_info("--once: inboxes processed%s", failed ? "; some files failed" : "");
	daemon_stop(d, failed ? 3 : 0);
}

static void daemon_auth_failed_cb(void *data)
{
	struct daemon *d = data;

	/* Unattended runs pause and retry; a batch run has nobody to wait for. */
	if (d->flags & DAEMON_ONCE) {
		log_error("--once: giving up: the API key was refused; claimed files stay in "
			  "processing and are resumed by the next run");
		daemon_stop(d, 2);
	}
}

static void daemon_idle_cb(void *data)
{
	(void)data;
}

static int daemon_start(struct daemon *d)
{
	struct jobs_events events = {
		.idle = daemon_idle_cb,
		.auth_failed = daemon_auth_failed_cb,
		.data = d,
	};
	unsigned jflags = 0;
	int r;

	r = http_new(&d->loop, &d->http);
	if (r < 0)
		return r;
	r = api_new(d->http, d->cfg, &d->api);
	if (r < 0)
		return r;
	if (d->flags & DAEMON_DRY_RUN)
		jflags |= JOBS_DRY_RUN;
	if (d->flags & DAEMON_ONCE)
		jflags |= JOBS_ONCE;
	r = jobs_new(&d->loop, d->cfg, d->api, jflags, &events, &d->jobs);
	if (r < 0)
		return r;
	if (!(d->flags & DAEMON_DRY_RUN)) {
		for (size_t i = 0; i < d->cfg->n_folders; i++)
			jobs_resume(d->jobs, i);
	}
	d->watches = calloc(d->cfg->n_folders, sizeof(*d->watches));
	if (!d->watches)
		return -ENOMEM;
	for (size_t i = 0; i < d->cfg->n_folders; i++) {
		r = watch_new(&d->loop, &d->cfg->folders[i],
			      (d->flags & DAEMON_ONCE) ? WATCH_NO_EVENTS : 0, daemon_ready_cb, d,
			      &d->watches[i]);
		if (r < 0)
			return r;
	}

	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	uv_signal_init(&d->loop, &d->sighup);
	uv_signal_init(&d->loop, &d->sigusr1);
	d->sigterm.data = d->sigint.data = d->sighup.data = d->sigusr1.data = d;
	uv_signal_start(&d->sigterm, daemon_signal_cb, SIGTERM);
	uv_signal_start(&d->sigint, daemon_signal_cb, SIGINT);
	uv_signal_start(&d->sighup, daemon_signal_cb, SIGHUP);
	uv_signal_start(&d->sigusr1, daemon_signal_cb, SIGUSR1);
	uv_idle_init(&d->loop, &d->once_check);
	d->once_check.data = d;
	if (d->flags & DAEMON_ONCE)
		uv_idle_start(&d->once_check, daemon_once_check_cb);
	return 0;
}

static void daemon_walk_close_cb(uv_handle_t *handle, void *arg)
{
	(void)arg;
	if (!uv_is_closing(handle))
		uv_close(handle, NULL);
}

int daemon_run(struct config *cfg, const char *config_path, unsigned flags)
{
	struct daemon d = {.cfg = cfg, .config_path = config_path, .flags = flags};
	int r;

	/* A read lease (see watch.c) that a writer breaks raises SIGIO, whose default is to end
	 * the process; we never rely on the signal, so ignore it. SIGPIPE: curl reports errors. */
	signal(SIGIO, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	srandom((unsigned)uv_hrtime());
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("cannot initialise libcurl");
		config_free(cfg);
		return 2;
	}
	r = uv_loop_init(&d.loop);
	if (r < 0) {
		log_error("cannot initialise the event loop: %s", uv_strerror(r));
		config_free(cfg);
		curl_global_cleanup();
		return 2;
	}
	r = daemon_start(&d);
	if (r < 0) {
		log_error("start-up failed: %s", strerror(-r));
		d.exit_status = 2;
		if (d.jobs) {
			d.stopping = false;
			daemon_stop(&d, 2);
		} else {
			if (d.api)
				api_free(d.api);
			if (d.http)
				http_close(d.http, daemon_http_closed_cb, &d);
			uv_walk(&d.loop, daemon_walk_close_cb, NULL);
		}
	} else {
		log_info("resend-dropd %s started: %zu folder%s%s%s", RDD_VERSION, cfg->n_folders,
			 cfg->n_folders == 1 ? "" : "s",
			 (flags & DAEMON_ONCE) ? ", --once" : "",
			 (flags & DAEMON_DRY_RUN) ? ", --dry-run (nothing is uploaded or moved)" : "");
		sd_notify(0, "READY=1");
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&d.loop);
	if (r < 0)
		log_error("event loop closed with handles still open: %s", uv_strerror(r));
	free(d.watches);
	config_free(cfg);
	curl_global_cleanup();
	log_info("stopped");
	return d.exit_status;
}
