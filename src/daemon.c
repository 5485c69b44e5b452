/* Start-up and shutdown order, signals and the service manager. Start: HTTP glue, jobs (which
 * create the processing directories), resume what a previous run left, then the watchers. Stop:
 * watchers first (no new claims), then drain the jobs, then close the HTTP glue. */
#include "daemon.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "http.h"
#include "control.h"
#include "job.h"
#include "ledger.h"
#include "ledgerq.h"
#include "jobs_control.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "status.h"
#include "watch.h"

/* Everything that depends on the configuration; a reload replaces it whole. */
struct pipeline {
	struct config *cfg;
	struct http *http;
	struct api *api;
	struct jobs *jobs;
	struct watch **watches;
};

struct daemon {
	uv_loop_t loop;
	const char *config_path;
	unsigned flags;
	struct pipeline pl;
	struct config *next_cfg; /* set while a reload drains the old pipeline */
	uv_signal_t sigterm, sigint, sighup, sigusr1;
	uv_timer_t once_check; /* --once: "are we done?", asked after the events that may say so */
	size_t offer_next;     /* the folder whose parked files are offered first */
	/* The control socket and what it counts outlive pipelines: a reload keeps them. */
	struct control *control;
	struct metrics *metrics;
	struct status_pauses *pauses;
	int64_t started_ms;
	struct notify *notify; /* the service manager; NULL if it could not be set up */
	/* The ledger outlives pipelines too (state_dir needs a restart); none in a dry run. */
	struct ledger *ledger;
	struct ledgerq *lq;
	char *state_dir;
	bool ledger_refused; /* start-up stopped on the ledger, and said why */
	uv_timer_t prune_timer;
	bool stopping;
	int exit_status;
};

static enum watch_verdict daemon_ready_cb(struct watch *w, const char *name,
					  const struct fsops_seen *seen, void *data);
static void daemon_watch_idle_cb(struct watch *w, void *data);
static int daemon_inbox_replaced_cb(struct watch *w, void *data);
static void daemon_claimed_cb(size_t folder, const char *name, enum jobs_claim how, void *data);
static void daemon_left_cb(size_t folder, const char *name, void *data);
static void daemon_capacity_cb(void *data);
static void daemon_idle_cb(void *data);
static void daemon_auth_failed_cb(void *data);
static void daemon_stop(struct daemon *d, int exit_status);

/* ---- the control socket (control.c serves, status.c answers) ------------------------------ */

static void daemon_status_src(struct daemon *d, struct status_src *s)
{
	*s = (struct status_src){
		.cfg = d->pl.cfg,
		.jobs = d->pl.jobs,
		.watches = d->pl.watches,
		.metrics = d->metrics,
		.pauses = d->pauses,
		.state = d->stopping ? "stopping" : d->next_cfg ? "reloading" : "running",
		.started_ms = d->started_ms,
		.loop_now_ms = uv_now(&d->loop),
		.resumed = daemon_capacity_cb,
		.data = d,
	};
}

static char *daemon_ctl_status(void *data)
{
	struct status_src s;

	daemon_status_src(data, &s);
	return status_json(&s);
}

static int daemon_ctl_metrics(void *data, char **ret, size_t *ret_len)
{
	struct status_src s;

	daemon_status_src(data, &s);
	return status_metrics(&s, ret, ret_len);
}

static unsigned daemon_ctl_command(void *data, const char *cmd, const char *folder,
				   const char *file, char **ret_body)
{
	struct status_src s;

	daemon_status_src(data, &s);
	return status_command(&s, cmd, folder, file, ret_body);
}

/* Before the first pipeline: what it counts into. */
static int daemon_control_prepare(struct daemon *d)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	d->started_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if (metrics_new(&d->metrics) < 0 || status_pauses_new(&d->pauses) < 0)
		return -ENOMEM;
	return 0;
}

/* Once the first pipeline holds its folders' locks (so that a second daemon on the same folders
 * is told so first); not for --once, which may run beside a daemon. A live daemon on the socket
 * is a refusal (-EWOULDBLOCK), like another daemon's folder. */
static int daemon_control_listen(struct daemon *d)
{
	const struct config *cfg = d->pl.cfg;
	const struct control_handlers h = {
		.status = daemon_ctl_status,
		.metrics = daemon_ctl_metrics,
		.command = daemon_ctl_command,
		.data = d,
	};
	int r;

	if (d->flags & DAEMON_ONCE)
		return 0;
	/* The default place is systemd's RuntimeDirectory: run by hand, without it, the daemon
	 * does its job without a control socket rather than not at all. A socket configured
	 * elsewhere must work. */
	if (strcmp(cfg->control.socket, CONFIG_CONTROL_SOCKET_DEFAULT) == 0 &&
	    access(CONFIG_CONTROL_SOCKET_DIR, F_OK) != 0) {
		log_warning("no control socket: '%s' does not exist (systemd makes it for the "
			    "service); set control.socket to serve status, metrics and commands%s",
			    CONFIG_CONTROL_SOCKET_DIR,
			    cfg->metrics.listen_host ? ", and metrics.listen with it" : "");
		return 0;
	}
	r = control_new(&d->loop, cfg->control.socket, cfg->metrics.listen_host,
			cfg->metrics.listen_port, &h, &d->control);
	return r == -EADDRINUSE ? -EWOULDBLOCK : r;
}

/* A new pipeline's jobs count into the daemon's metrics and keep its paused folders. */
static void daemon_control_attach(struct daemon *d)
{
	struct status_src s;

	jobs_control_set_metrics(d->pl.jobs, d->metrics);
	daemon_status_src(d, &s);
	status_apply_pauses(&s);
}

static void daemon_http_closed_cb(void *data)
{
	(void)data;
}

static int pipeline_start(struct daemon *d)
{
	struct pipeline *pl = &d->pl;
	struct jobs_events events = {
		.claimed = daemon_claimed_cb,
		.left = daemon_left_cb,
		.capacity = daemon_capacity_cb,
		.idle = daemon_idle_cb,
		.auth_failed = daemon_auth_failed_cb,
		.data = d,
	};
	unsigned jflags = 0;
	int r;

	r = http_new(&d->loop, &pl->http);
	if (r < 0)
		return r;
	r = api_new(pl->http, pl->cfg, &pl->api);
	if (r < 0)
		return r;
	if (d->flags & DAEMON_DRY_RUN)
		jflags |= JOBS_DRY_RUN;
	r = jobs_new(&d->loop, pl->cfg, pl->api, jflags, &events, &pl->jobs);
	if (r < 0)
		return r;
	jobs_set_ledger(pl->jobs, d->lq);
	if (d->state_dir && strcmp(d->state_dir, pl->cfg->state_dir) != 0)
		log_warning("state_dir changed to '%s': the ledger stays in '%s' until a restart",
			    pl->cfg->state_dir, d->state_dir);
	daemon_control_attach(d);
	if (!(d->flags & DAEMON_DRY_RUN)) {
		for (size_t i = 0; i < pl->cfg->n_folders; i++)
			jobs_resume(pl->jobs, i);
	}
	pl->watches = calloc(pl->cfg->n_folders, sizeof(*pl->watches));
	if (!pl->watches)
		return -ENOMEM;
	for (size_t i = 0; i < pl->cfg->n_folders; i++) {
		r = watch_new(&d->loop, &pl->cfg->folders[i],
			      (d->flags & DAEMON_ONCE) ? WATCH_NO_EVENTS : 0, daemon_ready_cb,
			      daemon_watch_idle_cb, daemon_inbox_replaced_cb, d, &pl->watches[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Frees what a pipeline holds once its jobs are drained (or were never created). */
static void pipeline_teardown(struct daemon *d)
{
	struct pipeline *pl = &d->pl;

	for (size_t i = 0; pl->watches && i < pl->cfg->n_folders; i++) {
		if (pl->watches[i])
			watch_close(pl->watches[i]);
	}
	free(pl->watches);
	if (pl->jobs)
		jobs_close(pl->jobs);
	api_free(pl->api);
	if (pl->http)
		http_close(pl->http, daemon_http_closed_cb, d);
	/* Drained means no check or disk work of this pipeline is left to read its
	 * configuration, and nothing that closes reads it. */
	config_free(pl->cfg);
	memset(pl, 0, sizeof(*pl));
}

/* ---- the ledger ------------------------------------------------------------------------ */

#define DAEMON_PRUNE_EVERY_MS (6 * 60 * 60 * 1000)

static void daemon_ledger_health(bool failing, const char *error, void *data)
{
	struct daemon *d = data;

	if (d->pl.jobs)
		jobs_ledger_health(d->pl.jobs, failing, error);
	else if (failing)
		log_error("%s", error);
}

static void daemon_prune_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	uint64_t days = d->pl.cfg ? d->pl.cfg->ledger_keep_days : 0;
	struct timespec now;

	if (!days || !d->lq)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	(void)ledgerq_prune(d->lq, (int64_t)now.tv_sec * 1000 - (int64_t)days * 86400 * 1000);
}

/* Opens the ledger in state_dir (made when it is missing: systemd's StateDirectory= makes it for
 * the service; a run by hand may not have it) and its thread. Not in a dry run, which records
 * nothing. */
static int daemon_ledger_open(struct daemon *d)
{
	const char *dir = d->pl.cfg->state_dir;
	char err[640];
	int r;

	if (d->flags & DAEMON_DRY_RUN)
		return 0;
	if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
		log_error("cannot make state_dir '%s' for the ledger: %s", dir, strerror(errno));
		return -errno;
	}
	r = ledger_open(dir, false, &d->ledger, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		d->ledger_refused = true;
		return r;
	}
	d->state_dir = strdup(dir);
	r = d->state_dir ? ledgerq_new(&d->loop, d->ledger, daemon_ledger_health, d, &d->lq)
			 : -ENOMEM;
	if (r < 0) {
		log_error("cannot start the ledger's thread: %s", strerror(-r));
		return r;
	}
	uv_timer_start(&d->prune_timer, daemon_prune_cb, 1000, DAEMON_PRUNE_EVERY_MS);
	uv_unref((uv_handle_t *)&d->prune_timer);
	return 0;
}

static void daemon_close_signals(struct daemon *d)
{
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	uv_close((uv_handle_t *)&d->sighup, NULL);
	uv_close((uv_handle_t *)&d->sigusr1, NULL);
	control_close(d->control);
	d->control = NULL;
	notify_close(d->notify);
	d->notify = NULL;
	uv_close((uv_handle_t *)&d->once_check, NULL);
	uv_close((uv_handle_t *)&d->prune_timer, NULL);
	/* Last: the records of the files that just finished are written first. */
	ledgerq_close(d->lq);
	d->lq = NULL;
}

static void daemon_drained_cb(void *data)
{
	struct daemon *d = data;

	notify_drained(d->notify);
	pipeline_teardown(d);
	if (d->next_cfg && !d->stopping) {
		d->pl.cfg = d->next_cfg;
		d->next_cfg = NULL;
		log_configure((enum log_level)d->pl.cfg->log_level,
			      (enum log_format)d->pl.cfg->log_format);
		int r = pipeline_start(d);
		if (r == 0) {
			log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_RELOADED},
				  "configuration %s reloaded: %zu folder%s", d->config_path,
				  d->pl.cfg->n_folders, d->pl.cfg->n_folders == 1 ? "" : "s");
			notify_ready(d->notify);
			return;
		}
		log_event(LOG_LEVEL_ERROR, &(struct log_fields){.message_id = LOG_ID_RELOAD_FAILED},
			  "reload failed: %s; stopping", strerror(-r));
		d->stopping = true;
		d->exit_status = 2;
		if (d->pl.jobs) {
			jobs_drain(d->pl.jobs, 0, daemon_drained_cb, d);
			return;
		}
		pipeline_teardown(d);
	}
	config_free(d->next_cfg);
	d->next_cfg = NULL;
	daemon_close_signals(d);
}

/* Stops taking files and drains the pipeline; daemon_drained_cb decides what comes next. */
static void daemon_drain(struct daemon *d)
{
	struct pipeline *pl = &d->pl;

	for (size_t i = 0; i < pl->cfg->n_folders; i++) {
		if (pl->watches[i])
			watch_close(pl->watches[i]);
		pl->watches[i] = NULL;
	}
	notify_draining(d->notify, pl->cfg->api.shutdown_timeout_s);
	jobs_drain(pl->jobs, pl->cfg->api.shutdown_timeout_s * 1000, daemon_drained_cb, d);
}

static void daemon_stop(struct daemon *d, int exit_status)
{
	bool draining = d->next_cfg != NULL;

	if (d->stopping)
		return;
	d->stopping = true;
	d->exit_status = exit_status;
	notify_stopping(d->notify);
	uv_timer_stop(&d->once_check);
	/* A reload already drains: its callback sees `stopping` and does not start again. */
	if (!draining)
		daemon_drain(d);
}

/* Before a reload: a folder that NEXT adds must not be another daemon's. (The running ones are
 * ours; their locks pass from the old pipeline to the new one.) Says each one that is. */
static int daemon_locks_free(const struct daemon *d, const struct config *next)
{
	const struct config *cur = d->pl.cfg;
	int r = 0;

	if (d->flags & DAEMON_DRY_RUN)
		return 0;
	for (size_t i = 0; i < next->n_folders; i++) {
		const struct config_folder *f = &next->folders[i];
		bool running = false;
		long pid;

		for (size_t j = 0; j < cur->n_folders && !running; j++)
			running = strcmp(cur->folders[j].inbox, f->inbox) == 0;
		if (running || fsops_lock_probe(f->inbox, &pid) == 0)
			continue;
		jobs_log_folder_locked(f, pid);
		r = -EWOULDBLOCK;
	}
	return r;
}

static void daemon_reload(struct daemon *d)
{
	struct config *next = NULL;
	struct config_errors errs = {0};

	if (d->stopping || d->next_cfg) {
		log_warning("SIGHUP ignored: already %s", d->stopping ? "stopping" : "reloading");
		return;
	}
	if (config_load(d->config_path, 0, &next, &errs) < 0) {
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){.message_id = LOG_ID_RELOAD_REJECTED},
			  "SIGHUP: configuration %s has %zu error%s; keeping the running "
			  "configuration",
			  d->config_path, errs.count, errs.count == 1 ? "" : "s");
		for (size_t i = 0; i < errs.count; i++)
			log_error("%s", errs.items[i]);
		config_errors_clear(&errs);
		return;
	}
	if (daemon_locks_free(d, next) < 0) {
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){.message_id = LOG_ID_RELOAD_REJECTED},
			  "SIGHUP: keeping the running configuration");
		config_free(next);
		return;
	}
	/* Uploads in flight finish (within shutdown_timeout_s) before the new folders start;
	 * whatever is left in processing is resumed by the new pipeline. */
	log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_RELOADING},
		  "SIGHUP: configuration %s is valid; reloading after uploads in flight finish",
		  d->config_path);
	notify_reloading(d->notify);
	d->next_cfg = next;
	daemon_drain(d);
}

/* STATUS=, asked by notify at the end of loop turns: O(folders). Waiting counts what the
 * inboxes hold that is not yet being claimed (settling, parked, waiting for a namesake or for
 * a claim to be tried again) and what is claimed but not yet uploading. */
static void daemon_status_cb(void *data, struct notify_status *ret)
{
	const struct daemon *d = data;
	const struct pipeline *pl = &d->pl;
	struct jobs_counts jc;

	ret->phase = d->stopping ? "stopping" : d->next_cfg ? "reloading" : NULL;
	if (!pl->cfg || !pl->jobs)
		return;
	ret->folders = pl->cfg->n_folders;
	for (size_t i = 0; pl->watches && i < pl->cfg->n_folders; i++) {
		struct watch_counts c;

		if (!pl->watches[i])
			continue;
		watch_counts(pl->watches[i], &c);
		ret->waiting += c.settling + c.parked + c.busy + c.retrying;
	}
	jobs_counts(pl->jobs, &jc);
	ret->waiting += jc.waiting;
	ret->uploading = jc.uploading;
	ret->following = jc.following;
	ret->finishing = jc.finishing;
	/* Folders paused: all of them while the API refuses us, else those paused by hand. */
	if (jc.paused) {
		ret->paused = pl->cfg->n_folders;
		ret->pause_reason = jc.auth_paused ? "the API key was refused" : "API quota";
	}
	for (size_t i = 0; !jc.paused && i < pl->cfg->n_folders; i++)
		ret->paused += jobs_control_paused(pl->jobs, i);
}

static void daemon_log_status(const struct daemon *d)
{
	const struct pipeline *pl = &d->pl;

	if (!pl->jobs)
		return;
	jobs_log_status(pl->jobs);
	for (size_t i = 0; pl->watches && i < pl->cfg->n_folders; i++) {
		struct watch_counts c;

		if (!pl->watches[i])
			continue;
		watch_counts(pl->watches[i], &c);
		log_info("status: %s: inbox: %zu settling, %zu waiting for a slot, %zu waiting for a "
			 "namesake to leave processing, %zu waiting to be claimed again",
			 pl->cfg->folders[i].name, c.settling, c.parked, c.busy, c.retrying);
		if (c.lost_reason)
			log_warning("status: %s: STUCK: inbox '%s' is lost: %s",
				    pl->cfg->folders[i].name, pl->cfg->folders[i].inbox,
				    fsops_dir_check_reason(c.lost_reason));
	}
}

static void daemon_signal_cb(uv_signal_t *sig, int signum)
{
	struct daemon *d = sig->data;

	switch (signum) {
	case SIGTERM:
	case SIGINT:
		log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_STOPPING},
			  "received %s; finishing uploads in flight (at most %llu s), taking no new "
			  "files",
			  signum == SIGTERM ? "SIGTERM" : "SIGINT",
			  (unsigned long long)d->pl.cfg->api.shutdown_timeout_s);
		daemon_stop(d, d->exit_status);
		break;
	case SIGUSR1:
		daemon_log_status(d);
		break;
	case SIGHUP:
		daemon_reload(d);
		break;
	}
}

static size_t daemon_folder_of(const struct daemon *d, const struct watch *w)
{
	size_t folder = 0;

	while (folder < d->pl.cfg->n_folders && d->pl.watches[folder] != w)
		folder++;
	return folder;
}

static enum watch_verdict daemon_ready_cb(struct watch *w, const char *name,
					  const struct fsops_seen *seen, void *data)
{
	struct daemon *d = data;
	size_t folder = daemon_folder_of(d, w);

	if (folder == d->pl.cfg->n_folders || d->stopping ||
	    jobs_control_paused(d->pl.jobs, folder))
		return WATCH_LATER;
	switch (jobs_submit(d->pl.jobs, folder, name, seen)) {
	case JOBS_CLAIMING:
		return WATCH_TAKEN;
	case JOBS_CHECKING_IN_PLACE:
		return WATCH_KEEP;
	case JOBS_NAME_BUSY:
		return WATCH_BUSY;
	case JOBS_LATER:
	case JOBS_STOPPING:
		break;
	}
	return WATCH_LATER;
}

static struct watch *daemon_watch(const struct daemon *d, size_t folder)
{
	return d->pl.watches && folder < d->pl.cfg->n_folders ? d->pl.watches[folder] : NULL;
}

static void daemon_claimed_cb(size_t folder, const char *name, enum jobs_claim how, void *data)
{
	static const enum watch_claim to_watch[] = {
		[JOBS_CLAIMED] = WATCH_CLAIM_LEFT,       [JOBS_GONE] = WATCH_CLAIM_LEFT,
		[JOBS_CHANGED] = WATCH_CLAIM_CHANGED,    [JOBS_BUSY] = WATCH_CLAIM_BUSY,
		[JOBS_CLAIM_FAILED] = WATCH_CLAIM_FAILED,
	};
	struct watch *w = daemon_watch(data, folder);

	if (w)
		watch_claimed(w, name, to_watch[how]);
}

static void daemon_left_cb(size_t folder, const char *name, void *data)
{
	struct watch *w = daemon_watch(data, folder);

	if (w)
		watch_poke(w, name);
}

/* Slots are free: parked files are offered folder by folder in turn, one at a time, until jobs
 * has no room left or nothing is parked. */
static void daemon_capacity_cb(void *data)
{
	struct daemon *d = data;
	size_t n = d->pl.cfg->n_folders, without = 0;

	while (without < n && !d->stopping) {
		struct watch *w = daemon_watch(d, d->offer_next);
		/* A paused folder's files stay parked; the others go on. */
		enum watch_offer r = w && !jobs_control_paused(d->pl.jobs, d->offer_next)
					     ? watch_offer(w)
					     : WATCH_OFFER_NONE;

		if (r == WATCH_OFFER_FULL)
			return;
		d->offer_next = (d->offer_next + 1) % n;
		without = r == WATCH_OFFER_NONE ? without + 1 : 0;
	}
}

/* --once: done when no watch has a file left and jobs holds nothing. */
static void daemon_once_check_cb(uv_timer_t *timer)
{
	struct daemon *d = timer->data;

	if (d->stopping)
		return;
	for (size_t i = 0; i < d->pl.cfg->n_folders; i++) {
		if (d->pl.watches[i] && !watch_idle(d->pl.watches[i]))
			return;
	}
	if (jobs_active(d->pl.jobs) > 0)
		return;
	unsigned failed = jobs_failed_total(d->pl.jobs);
	log_info("--once: inboxes processed%s", failed ? "; some files failed" : "");
	daemon_stop(d, failed ? 3 : 0);
}

/* Asks once the current callbacks are over, never inside them. */
static void daemon_once_schedule(struct daemon *d)
{
	if ((d->flags & DAEMON_ONCE) && !d->stopping)
		uv_timer_start(&d->once_check, daemon_once_check_cb, 0, 0);
}

static void daemon_watch_idle_cb(struct watch *w, void *data)
{
	(void)w;
	daemon_once_schedule(data);
}

static int daemon_inbox_replaced_cb(struct watch *w, void *data)
{
	struct daemon *d = data;
	size_t folder = daemon_folder_of(d, w);

	if (folder == d->pl.cfg->n_folders || d->stopping)
		return -ECANCELED;
	return jobs_folder_reopen(d->pl.jobs, folder);
}

static void daemon_idle_cb(void *data)
{
	daemon_once_schedule(data);
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

static void daemon_start_signals(struct daemon *d)
{
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	uv_signal_init(&d->loop, &d->sighup);
	uv_signal_init(&d->loop, &d->sigusr1);
	d->sigterm.data = d->sigint.data = d->sighup.data = d->sigusr1.data = d;
	uv_signal_start(&d->sigterm, daemon_signal_cb, SIGTERM);
	uv_signal_start(&d->sigint, daemon_signal_cb, SIGINT);
	uv_signal_start(&d->sighup, daemon_signal_cb, SIGHUP);
	uv_signal_start(&d->sigusr1, daemon_signal_cb, SIGUSR1);
	uv_timer_init(&d->loop, &d->once_check);
	d->once_check.data = d;
}

/* systemd's default soft limit of 1024 descriptors is meant for select(); we use epoll. */
static void daemon_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_debug("cannot raise the descriptor limit: %s", strerror(errno));
	}
}

int daemon_run(struct config *cfg, const char *config_path, unsigned flags)
{
	struct daemon d = {.config_path = config_path, .flags = flags, .pl = {.cfg = cfg}};
	int r;

	/* A read lease (see watch.c) that a writer breaks raises SIGIO, whose default is to end
	 * the process; we never rely on the signal, so ignore it. SIGPIPE: curl reports errors. */
	signal(SIGIO, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* Checks allocate large buffers for a short while, in the thread pool and the disk
	 * threads. glibc keeps freed memory in per-thread arenas and raises its mmap threshold
	 * after the first large free, so a daemon that once checked a few big files would hold
	 * that memory for good: a fixed threshold gives large buffers back, and two arenas bound
	 * what the threads keep. */
	(void)mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	(void)mallopt(M_ARENA_MAX, 2);
	daemon_raise_nofile();
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
	daemon_start_signals(&d);
	uv_timer_init(&d.loop, &d.prune_timer);
	d.prune_timer.data = &d;
	r = notify_new(&d.loop, daemon_status_cb, &d, &d.notify);
	if (r < 0)
		log_warning("cannot set up notifications to the service manager: %s", strerror(-r));
	r = daemon_control_prepare(&d);
	if (r == 0)
		r = daemon_ledger_open(&d);
	if (r == 0)
		r = pipeline_start(&d);
	if (r == 0)
		r = daemon_control_listen(&d);
	if (r < 0) {
		/* Another daemon's folder is a refusal, like a configuration error (said by jobs);
		 * the rest a failure. */
		if (r != -EWOULDBLOCK && !d.ledger_refused)
			log_error("start-up failed: %s", strerror(-r));
		d.stopping = true;
		d.exit_status = r == -EWOULDBLOCK ? 1 : 2;
		if (d.pl.jobs) {
			jobs_drain(d.pl.jobs, 0, daemon_drained_cb, &d);
		} else {
			pipeline_teardown(&d);
			daemon_close_signals(&d);
		}
	} else {
		log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_STARTED},
			  "resend-dropd %s started: %zu folder%s%s%s; the API key is from %s",
			  RDD_VERSION, cfg->n_folders, cfg->n_folders == 1 ? "" : "s",
			  (flags & DAEMON_ONCE) ? ", --once" : "",
			  (flags & DAEMON_DRY_RUN) ? ", --dry-run (nothing is uploaded or moved)" : "",
			  cfg->api_key_source);
		daemon_once_schedule(&d);
		/* The folders are watched (watch_new added the inotify watches): a file dropped
		 * from now on is seen. */
		notify_ready(d.notify);
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&d.loop);
	if (r < 0)
		log_error("event loop closed with handles still open: %s", uv_strerror(r));
	curl_global_cleanup();
	ledger_close(d.ledger);
	free(d.state_dir);
	metrics_free(d.metrics);
	status_pauses_free(d.pauses);
	log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_STOPPED}, "stopped");
	return d.exit_status;
}
