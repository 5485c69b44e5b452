/* Start-up and shutdown order, signals and the service manager. Start: HTTP glue, the engine
 * (which creates the processing directories), resume what a previous run left, then the watchers. Stop:
 * watchers first (no new claims), then drain the engine, then close the HTTP glue. */
#include "daemon.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "control.h"
#include "control_path.h"
#include "control_requests.h"
#include "engine.h"
#include "folder.h"
#include "http.h"
#include "fleet.h"
#include "ledger.h"
#include "ledger_config.h"
#include "ledgerq.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "events.h"
#include "outbox.h"
#include "resend_client.h"
#include "watch.h"

/* Everything that depends on the configuration; a reload replaces it whole. */
struct pipeline {
	struct config *cfg;
	struct http *http;
	struct resend_client *api;
	struct engine *engine;
	struct watch **watches;
	struct outbox *outbox; /* webhooks' deliveries; NULL: none configured (or --once) */
};

/* What a reload sets up before it drains the running pipeline: the new configuration, its
 * folders (those it keeps are the running ones, the others opened now), and the done and failed
 * directories of the kept ones opened afresh (-1: none), swapped in once drained. */
struct reload {
	struct config *cfg;
	struct folder **folders;
	int (*finish_fds)[2];
	void *waiter; /* the control request to answer, or NULL (SIGHUP) */
};

struct daemon {
	uv_loop_t loop;
	const char *config_path;
	unsigned flags;
	struct pipeline pl;
	/* Each configured folder's directories, in the running configuration's order: they
	 * outlive pipelines (folder.h). The unavailable ones are tried again on a timer. */
	struct folder **folders;
	size_t n_folders;
	uv_timer_t folder_timer;
	uint64_t folder_delay_ms;
	struct reload next; /* next.cfg set while a reload drains the old pipeline */
	uv_signal_t sigterm, sigint, sighup, sigusr1;
	uv_timer_t once_check; /* --once: "are we done?", asked after the events that may say so */
	size_t offer_next;     /* the folder whose parked files are offered first */
	/* The control socket and what it counts outlive pipelines: a reload keeps them. */
	struct control *control;
	struct metrics *metrics;
	struct control_pauses *pauses;
	int64_t started_ms;
	struct notify *notify; /* the service manager; NULL if it could not be set up */
	/* The ledger outlives pipelines too (state_dir needs a restart); none in a dry run. */
	struct ledger *ledger;
	struct ledgerq *lq;
	char *state_dir;
	bool ledger_refused; /* start-up stopped on the ledger, and said why */
	uv_timer_t prune_timer;
	uv_timer_t receipts_timer; /* receipts: the backlog and old ones, hourly */
	uint64_t key_refused_ms;   /* when receivers last heard that the key was refused */
	/* A fleet's host (the PostgreSQL ledger): outlives pipelines like the ledger. */
	struct fleet *fleet;
	unsigned fleet_alive, fleet_index; /* as the last heartbeat saw the fleet */
	int64_t fleet_offset_ms;
	bool ledger_failing;    /* as the ledger's thread last said (status) */
	char ledger_error[512];
	bool stopping;
	int exit_status;
};

static enum watch_verdict daemon_ready_cb(struct watch *w, const char *name,
					  const struct fsops_seen *seen, void *data);
static void daemon_watch_idle_cb(struct watch *w, void *data);
static int daemon_inbox_replaced_cb(struct watch *w, void *data);
static void daemon_claimed_cb(size_t folder, const char *name, enum engine_claim how, void *data);
static void daemon_left_cb(size_t folder, const char *name, void *data);
static void daemon_capacity_cb(void *data);
static void daemon_idle_cb(void *data);
static void daemon_auth_failed_cb(void *data);
static void daemon_stop(struct daemon *d, int exit_status);
static unsigned daemon_reload(struct daemon *d, const char *how, void *waiter, char **ret_body);

/* ---- the control socket (control.c serves, control_requests.c answers) ------------------------------ */

static void daemon_control_view(struct daemon *d, struct control_view *s)
{
	*s = (struct control_view){
		.cfg = d->pl.cfg,
		.engine = d->pl.engine,
		.watches = d->pl.watches,
		.folders = d->folders,
		.metrics = d->metrics,
		.pauses = d->pauses,
		.state = d->stopping ? "stopping" : d->next.cfg ? "reloading" : "running",
		.started_ms = d->started_ms,
		.loop_now_ms = uv_now(&d->loop),
		.fleet = d->fleet,
		.ledger_backend = d->ledger ? d->ledger->ops->name : NULL,
		.ledger_error = d->ledger_failing ? d->ledger_error : NULL,
		.resumed = daemon_capacity_cb,
		.data = d,
	};
}

static char *daemon_ctl_status(void *data)
{
	struct control_view s;

	daemon_control_view(data, &s);
	return control_status_json(&s);
}

static int daemon_ctl_metrics(void *data, char **ret, size_t *ret_len)
{
	struct control_view s;

	daemon_control_view(data, &s);
	return control_metrics_text(&s, ret, ret_len);
}

static unsigned daemon_ctl_command(void *data, const char *cmd, const char *folder,
				   const char *file, char **ret_body)
{
	struct control_view s;

	daemon_control_view(data, &s);
	return control_command(&s, cmd, folder, file, ret_body);
}

static unsigned daemon_ctl_reload(void *data, void *waiter, char **ret_body)
{
	return daemon_reload(data, "reload", waiter, ret_body);
}

/* Before the first pipeline: what it counts into. */
static int daemon_control_prepare(struct daemon *d)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	d->started_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if (metrics_new(&d->metrics) < 0 || control_pauses_new(&d->pauses) < 0)
		return -ENOMEM;
	return 0;
}

/* Once the first pipeline holds its folders' locks (so that a second daemon on the same folders
 * is told so first); not for --once, which may run beside a daemon. A live daemon on the socket
 * is a refusal (-EWOULDBLOCK), like another daemon's folder. Where: control_path.h. A socket
 * the configuration names must work; the default place failing leaves the daemon doing its job
 * without one, said once. */
static int daemon_control_listen(struct daemon *d)
{
	const struct config *cfg = d->pl.cfg;
	const struct control_handlers h = {
		.status = daemon_ctl_status,
		.metrics = daemon_ctl_metrics,
		.command = daemon_ctl_command,
		.reload = daemon_ctl_reload,
		.data = d,
	};
	char path[CONTROL_PATH_MAX * 8];
	int r;

	if (d->flags & DAEMON_ONCE)
		return 0;
	r = control_path_daemon(cfg, path);
	if (r < 0) {
		log_warning("no control socket: '%s' is too long for a socket address (at most %d "
			    "bytes); set control.socket to serve status, metrics and commands",
			    path, CONTROL_PATH_MAX - 1);
		path[0] = '\0';
	}
	/* By hand, the default place is state_dir, which a dry run (no ledger) may not have made
	 * yet. */
	if (!cfg->control.socket && !getenv("RUNTIME_DIRECTORY") && mkdir(cfg->state_dir, 0750) < 0 &&
	    errno != EEXIST)
		log_warning("cannot make state_dir '%s' for the control socket: %s",
			    cfg->state_dir, strerror(errno));
	r = control_new(&d->loop, &h, &d->control);
	if (r < 0)
		return r;
	r = path[0] ? control_listen_socket(d->control, path) : -ENAMETOOLONG;
	if (r == -EADDRINUSE)
		return -EWOULDBLOCK;
	if (r < 0 && cfg->control.socket)
		return r;
	if (r < 0 && path[0])
		log_warning("the daemon goes on without a control socket (above); set control.socket "
			    "to serve status, metrics and commands");
	if (cfg->metrics.listen_host)
		return control_listen_metrics(d->control, cfg->metrics.listen_host,
					      cfg->metrics.listen_port);
	return 0;
}

/* A new pipeline's engine counts into the daemon's metrics and keep its paused folders. */
static void daemon_control_attach(struct daemon *d)
{
	struct control_view s;

	engine_set_metrics(d->pl.engine, d->metrics);
	daemon_control_view(d, &s);
	control_apply_pauses(&s);
}

static void daemon_http_closed_cb(void *data)
{
	(void)data;
}

/* Folder I's directories are open: its work starts (what an earlier run left in processing,
 * then the inbox's watch). */
static int pipeline_folder_start(struct daemon *d, size_t i)
{
	struct pipeline *pl = &d->pl;

	if (!(d->flags & DAEMON_DRY_RUN))
		engine_resume(pl->engine, i);
	return watch_new(&d->loop, &pl->cfg->folders[i], d->folders[i],
			 (d->flags & DAEMON_ONCE) ? WATCH_NO_EVENTS : 0, daemon_ready_cb,
			 daemon_watch_idle_cb, daemon_inbox_replaced_cb, d, &pl->watches[i]);
}

static int pipeline_start(struct daemon *d)
{
	struct pipeline *pl = &d->pl;
	struct engine_events events = {
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
	r = resend_client_new(pl->http, pl->cfg, &pl->api);
	if (r < 0)
		return r;
	if (d->flags & DAEMON_DRY_RUN)
		jflags |= ENGINE_DRY_RUN;
	r = engine_new(&d->loop, pl->cfg, d->folders, pl->api, jflags, &events, &pl->engine);
	if (r < 0)
		return r;
	engine_set_ledger(pl->engine, d->lq);
	if (d->fleet) {
		engine_set_fleet(pl->engine, d->fleet);
		engine_fleet_share(pl->engine, d->fleet_alive, d->fleet_index, d->fleet_offset_ms);
		if (!pl->cfg->fleet.host_id || strcmp(pl->cfg->fleet.host_id, fleet_host_id(d->fleet)) != 0)
			log_warning("the ledger or fleet settings changed: this daemon stays host '%s' "
				    "of the same ledger until a restart", fleet_host_id(d->fleet));
	} else if (d->lq && pl->cfg->fleet.host_id) {
		log_warning("the ledger settings changed: the ledger stays where it was until a "
			    "restart");
	}
	if (d->state_dir && strcmp(d->state_dir, pl->cfg->state_dir) != 0)
		log_warning("state_dir changed to '%s': the ledger stays in '%s' until a restart",
			    pl->cfg->state_dir, d->state_dir);
	daemon_control_attach(d);
	/* --once leaves its notifications in the ledger for the next run that delivers. */
	if (d->lq && pl->cfg->n_webhooks + pl->cfg->n_hooks + pl->cfg->n_emails &&
	    !(d->flags & (DAEMON_DRY_RUN | DAEMON_ONCE))) {
		const struct outbox_api api = {.client = pl->api,
					       .pacer = engine_pacer(pl->engine)};

		r = outbox_new(&d->loop, pl->cfg, d->lq, pl->http, &api, d->metrics, &pl->outbox);
		if (r < 0)
			return r;
	}
	pl->watches = calloc(pl->cfg->n_folders, sizeof(*pl->watches));
	if (!pl->watches)
		return -ENOMEM;
	for (size_t i = 0; i < pl->cfg->n_folders; i++) {
		if (!folder_is_open(d->folders[i]))
			continue; /* tried again on the folder timer */
		r = pipeline_folder_start(d, i);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- folders: set up at start and by reloads, tried again while they cannot be --------- */

#define DAEMON_FOLDER_RETRY_FIRST_MS 5000
#define DAEMON_FOLDER_RETRY_MAX_MS (5 * 60 * 1000)

static void daemon_folders_free(struct folder **folders, size_t n)
{
	for (size_t i = 0; folders && i < n; i++)
		folder_free(folders[i]);
	free(folders);
}

/* ---- notifications of the daemon's own (events.h): recorded in the outbox ---------------- */

struct daemon_note {
	struct daemon *d;
	struct ledger_event *evs;
	size_t n;
};

static int daemon_note_work(struct ledger *l, void *data)
{
	struct daemon_note *c = data;

	return l->ops->outbox_add(l, c->evs, c->n);
}

static void daemon_note_done(void *data)
{
	struct daemon_note *c = data;

	outbox_kick(c->d->pl.outbox);
}

static void daemon_note_release(void *data)
{
	struct daemon_note *c = data;

	for (size_t i = 0; i < c->n; i++)
		ledger_event_clear(&c->evs[i]);
	free(c->evs);
	free(c);
}

/* EV happened (to FOLDER, or NULL: the daemon): its receivers hear of it. Nothing in a dry run
 * or --once (nobody delivers), nor without a ledger; recorded in order with the ledger's other
 * writes (an intake paused because the ledger fails is recorded once it works again). */
static void daemon_note(struct daemon *d, enum config_event ev, const char *folder,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void daemon_note(struct daemon *d, enum config_event ev, const char *folder,
			const char *fmt, ...)
{
	const struct config *cfg = d->pl.cfg;
	struct daemon_note *c;
	struct timespec now;
	char message[1024];
	va_list ap;

	if (!d->lq || !cfg || d->flags & (DAEMON_DRY_RUN | DAEMON_ONCE) ||
	    cfg->n_webhooks + cfg->n_hooks + cfg->n_emails == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	c = calloc(1, sizeof(*c));
	if (!c || events_for_daemon(cfg, ev, folder, cfg->fleet.host_id, message,
				    (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, &c->evs,
				    &c->n) < 0) {
		free(c);
		log_error("out of memory recording a notification (%s)", config_event_name(ev));
		return;
	}
	c->d = d;
	if (c->n == 0 ||
	    ledgerq_call(d->lq, daemon_note_work, daemon_note_done, daemon_note_release, c,
			 NULL) < 0)
		daemon_note_release(c);
}

static void daemon_folder_said_unavailable(struct daemon *d, const struct config_folder *c,
					   const struct folder *f, uint64_t retry_ms, bool once)
{
	char when[64] = "; it is not served in this run";

	if (!once)
		snprintf(when, sizeof(when), "; it is tried again in %llu s",
			 (unsigned long long)(retry_ms / 1000));
	log_event(LOG_LEVEL_ERROR,
		  &(struct log_fields){LOG_ID_FOLDER_UNAVAILABLE, c->name, NULL, NULL, NULL},
		  "%s: the folder cannot be served: %s; the other folders are%s", c->name, f->reason,
		  when);
	daemon_note(d, CONFIG_EVENT_FOLDER_STUCK, c->name, "the folder cannot be served: %s",
		    f->reason);
}

static bool daemon_folders_all_open(const struct daemon *d)
{
	for (size_t i = 0; i < d->n_folders; i++) {
		if (!folder_is_open(d->folders[i]))
			return false;
	}
	return true;
}

static void daemon_folder_timer_cb(uv_timer_t *t);

static void daemon_folder_timer_arm(struct daemon *d)
{
	if (d->stopping || (d->flags & DAEMON_ONCE) || daemon_folders_all_open(d)) {
		uv_timer_stop(&d->folder_timer);
		d->folder_delay_ms = 0;
		return;
	}
	if (uv_is_active((uv_handle_t *)&d->folder_timer))
		return;
	if (!d->folder_delay_ms)
		d->folder_delay_ms = DAEMON_FOLDER_RETRY_FIRST_MS;
	uv_timer_start(&d->folder_timer, daemon_folder_timer_cb, d->folder_delay_ms, 0);
}

/* The folders that could not be set up are tried again; a reason that changed is said again. */
static void daemon_folder_timer_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	const struct config *cfg = d->pl.cfg;

	if (d->stopping || d->next.cfg || !d->pl.engine)
		return;
	d->folder_delay_ms = d->folder_delay_ms * 2 > DAEMON_FOLDER_RETRY_MAX_MS
				     ? DAEMON_FOLDER_RETRY_MAX_MS
				     : d->folder_delay_ms * 2;
	for (size_t i = 0; i < cfg->n_folders; i++) {
		struct folder *f = d->folders[i];
		char before[FOLDER_REASON_LEN];

		if (folder_is_open(f))
			continue;
		memcpy(before, f->reason, sizeof(before));
		if (folder_open(f, &cfg->folders[i]) < 0) {
			if (strcmp(before, f->reason) != 0)
				daemon_folder_said_unavailable(d, &cfg->folders[i], f,
							       d->folder_delay_ms, false);
			else
				log_debug("%s: still cannot be served: %s", cfg->folders[i].name,
					  f->reason);
			continue;
		}
		log_event(LOG_LEVEL_INFO,
			  &(struct log_fields){LOG_ID_FOLDER_AVAILABLE, cfg->folders[i].name, NULL,
					       NULL, NULL},
			  "%s: the folder can be served now", cfg->folders[i].name);
		if (pipeline_folder_start(d, i) < 0)
			log_error("%s: cannot watch the inbox '%s'", cfg->folders[i].name,
				  cfg->folders[i].inbox);
	}
	daemon_folder_timer_arm(d);
}

/* At start: each folder's directories. Another daemon's folder stops the start (-EWOULDBLOCK,
 * said); any other folder that cannot be set up is said, and left unavailable. */
static int daemon_folders_open(struct daemon *d)
{
	const struct config *cfg = d->pl.cfg;
	bool refused = false;

	d->folders = calloc(cfg->n_folders, sizeof(*d->folders));
	if (!d->folders)
		return -ENOMEM;
	d->n_folders = cfg->n_folders;
	for (size_t i = 0; i < cfg->n_folders; i++) {
		const struct config_folder *c = &cfg->folders[i];
		int r = folder_new(c, d->flags & DAEMON_DRY_RUN, &d->folders[i]);

		if (r == 0 && cfg->fleet.host_id && !(d->flags & DAEMON_DRY_RUN))
			r = folder_set_host(d->folders[i], cfg->fleet.host_id);
		if (r < 0)
			return r;
		r = folder_open(d->folders[i], c);
		if (r == -EWOULDBLOCK) {
			log_error("%s: %s", c->name, d->folders[i]->reason);
			refused = true;
		} else if (r < 0) {
			daemon_folder_said_unavailable(d, c, d->folders[i],
						       DAEMON_FOLDER_RETRY_FIRST_MS,
						       d->flags & DAEMON_ONCE);
		}
	}
	return refused ? -EWOULDBLOCK : 0;
}

/* A reload's folders, before anything stops: those the running configuration has (by inbox)
 * are kept, with their done and failed directories opened afresh (they may be others now);
 * the new ones are opened. Every reason one cannot be set up goes to ERRS (a refusal); a kept
 * folder that could not be set up before is no reason: it stays with the folder timer. */
static int daemon_reload_prepare(struct daemon *d, struct reload *rl, struct config_errors *errs)
{
	const struct config *next = rl->cfg;
	bool *fresh;
	int r = 0;

	rl->folders = calloc(next->n_folders, sizeof(*rl->folders));
	rl->finish_fds = calloc(next->n_folders, sizeof(*rl->finish_fds));
	fresh = calloc(next->n_folders, sizeof(*fresh));
	if (!rl->folders || !rl->finish_fds || !fresh) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < next->n_folders; i++)
		rl->finish_fds[i][0] = rl->finish_fds[i][1] = -1;
	for (size_t i = 0; i < next->n_folders && r != -ENOMEM; i++) {
		const struct config_folder *c = &next->folders[i];
		struct folder *kept = NULL;
		char why[FOLDER_REASON_LEN];

		for (size_t j = 0; j < d->n_folders && !kept; j++) {
			if (d->folders[j] && strcmp(d->folders[j]->inbox, c->inbox) == 0)
				kept = d->folders[j];
		}
		if (kept) {
			/* One that could not be set up stays with the folder timer. */
			rl->folders[i] = kept;
			if (folder_is_open(kept) && !kept->dry_run &&
			    folder_open_finish_dirs(c, &rl->finish_fds[i][0], &rl->finish_fds[i][1],
						    why, sizeof(why)) < 0) {
				config_errors_add(errs, "%s: %s", c->name, why);
				r = -EINVAL;
			}
			continue;
		}
		if (folder_new(c, d->flags & DAEMON_DRY_RUN, &rl->folders[i]) < 0 ||
		    (d->pl.cfg->fleet.host_id && !(d->flags & DAEMON_DRY_RUN) &&
		     folder_set_host(rl->folders[i], d->pl.cfg->fleet.host_id) < 0)) {
			r = -ENOMEM;
			break;
		}
		fresh[i] = true;
		if (folder_open(rl->folders[i], c) < 0) {
			config_errors_add(errs, "%s: %s", c->name, rl->folders[i]->reason);
			r = -EINVAL;
		}
	}
out:
	/* Refused: what was opened for it goes again; the kept folders are the running ones. */
	for (size_t i = 0; r < 0 && fresh && rl->folders && rl->finish_fds && i < next->n_folders;
	     i++) {
		if (fresh[i])
			folder_free(rl->folders[i]);
		for (int k = 0; k < 2; k++) {
			if (rl->finish_fds[i][k] >= 0)
				close(rl->finish_fds[i][k]);
		}
	}
	if (r < 0) {
		free(rl->folders);
		free(rl->finish_fds);
		rl->folders = NULL;
		rl->finish_fds = NULL;
	}
	free(fresh);
	return r;
}

/* Drained: the reload's folders take the running ones' place. Those the new configuration
 * does not have are closed (their locks go). */
static void daemon_reload_commit(struct daemon *d)
{
	struct reload *rl = &d->next;

	for (size_t j = 0; j < d->n_folders; j++) {
		bool kept = false;

		for (size_t i = 0; i < rl->cfg->n_folders && !kept; i++)
			kept = rl->folders[i] == d->folders[j];
		if (!kept)
			folder_free(d->folders[j]);
	}
	for (size_t i = 0; i < rl->cfg->n_folders; i++) {
		int r;

		if (rl->finish_fds[i][0] < 0)
			continue;
		r = folder_swap_finish_dirs(rl->folders[i], rl->finish_fds[i][0],
					    rl->finish_fds[i][1]);
		if (r < 0)
			log_error("%s: cannot take the reloaded done and failed directories: %s; the "
				  "earlier ones stay in use",
				  rl->cfg->folders[i].name, strerror(-r));
	}
	free(d->folders);
	free(rl->finish_fds);
	d->folders = rl->folders;
	d->n_folders = rl->cfg->n_folders;
	rl->folders = NULL;
	rl->finish_fds = NULL;
}

/* A reload that does not happen after all (the daemon stops first): what it set up goes. */
static void daemon_reload_abandon(struct daemon *d)
{
	struct reload *rl = &d->next;

	for (size_t i = 0; rl->folders && i < rl->cfg->n_folders; i++) {
		bool running = false;

		for (size_t j = 0; j < d->n_folders && !running; j++)
			running = d->folders[j] == rl->folders[i];
		if (!running)
			folder_free(rl->folders[i]);
		for (int k = 0; rl->finish_fds && k < 2; k++) {
			if (rl->finish_fds[i][k] >= 0)
				close(rl->finish_fds[i][k]);
		}
	}
	free(rl->folders);
	free(rl->finish_fds);
	config_free(rl->cfg);
	*rl = (struct reload){.waiter = rl->waiter};
}

/* Frees what a pipeline holds once its engine is drained (or were never created). */
static void pipeline_teardown(struct daemon *d)
{
	struct pipeline *pl = &d->pl;

	for (size_t i = 0; pl->watches && i < pl->cfg->n_folders; i++) {
		if (pl->watches[i])
			watch_close(pl->watches[i]);
	}
	free(pl->watches);
	/* The outbox first: its e-mails wait in the engine's pacer. */
	outbox_close(pl->outbox);
	if (pl->engine)
		engine_close(pl->engine);
	resend_client_free(pl->api);
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

	d->ledger_failing = failing;
	snprintf(d->ledger_error, sizeof(d->ledger_error), "%s", failing ? error : "");
	if (failing)
		daemon_note(d, CONFIG_EVENT_INTAKE_PAUSED, NULL,
			    "no new file is taken from the inboxes: %s", error);
	else
		daemon_note(d, CONFIG_EVENT_INTAKE_RESUMED, NULL,
			    "the ledger can be written again: files are taken from the inboxes");
	if (d->pl.engine)
		engine_ledger_health(d->pl.engine, failing, error);
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

#define DAEMON_RECEIPTS_EVERY_MS (60 * 60 * 1000)
#define DAEMON_KEY_NOTE_EVERY_MS (60 * 60 * 1000)

static void daemon_receipts_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	struct timespec now;

	if (!d->pl.engine || d->stopping)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	engine_receipts_sweep(d->pl.engine, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
}

/* ---- a fleet's host ------------------------------------------------------------------ */

static void daemon_fleet_ready(bool ready, void *data)
{
	struct daemon *d = data;

	if (ready && d->pl.engine && !d->stopping)
		engine_fleet_ready(d->pl.engine);
}

static void daemon_took_over(const char *host, unsigned moved, unsigned left, void *data)
{
	struct daemon *d = data;

	if (!host[0]) {
		if (moved)
			log_info("fleet: %u file%s left by a daemon without a fleet moved into this "
				 "host's processing directories and resumed",
				 moved, moved == 1 ? "" : "s");
		return;
	}
	if (d->fleet)
		fleet_took_over(d->fleet, host, moved, left);
}

static void daemon_fleet_take_over(const char *host, void *data)
{
	struct daemon *d = data;

	/* Between pipelines (a reload), or stopping: the next heartbeat asks again. */
	if (!d->pl.engine || d->stopping || d->next.cfg ||
	    engine_take_over(d->pl.engine, host, daemon_took_over, d) < 0)
		fleet_took_over(d->fleet, host, 0, 1);
}

static void daemon_fleet_share(unsigned alive, unsigned index, int64_t offset_ms, void *data)
{
	struct daemon *d = data;

	d->fleet_alive = alive;
	d->fleet_index = index;
	d->fleet_offset_ms = offset_ms;
	if (d->pl.engine)
		engine_fleet_share(d->pl.engine, alive, index, offset_ms);
}

static void daemon_fleet_pause(uint64_t ms, bool news, void *data)
{
	struct daemon *d = data;

	if (d->pl.engine)
		engine_fleet_pause(d->pl.engine, ms, news);
}

static void daemon_fleet_replaced(const char *by, void *data)
{
	struct daemon *d = data;

	(void)by;
	daemon_stop(d, 1);
}

static unsigned daemon_fleet_in_flight(void *data)
{
	struct daemon *d = data;

	return d->pl.engine ? (unsigned)engine_active(d->pl.engine) : 0;
}

static uint64_t daemon_fleet_own_pause(void *data)
{
	struct daemon *d = data;

	return d->pl.engine ? engine_rate_blocked_ms(d->pl.engine) : 0;
}

/* Whether this host's processing directories hold no file (a clean stop may then leave the
 * fleet; otherwise its row stays for a takeover). */
static bool daemon_processing_empty(const struct daemon *d)
{
	for (size_t i = 0; i < d->n_folders; i++) {
		char **names = NULL;
		size_t n = 0;

		if (!folder_is_open(d->folders[i]) || d->folders[i]->proc_fd < 0)
			continue;
		if (fsops_list(d->folders[i]->proc_fd, &names, &n) < 0)
			return false;
		fsops_names_free(names, n);
		if (n)
			return false;
	}
	return true;
}

static int daemon_fleet_start(struct daemon *d)
{
	const struct fleet_events ev = {
		.ready = daemon_fleet_ready,
		.take_over = daemon_fleet_take_over,
		.share = daemon_fleet_share,
		.pause = daemon_fleet_pause,
		.replaced = daemon_fleet_replaced,
		.in_flight = daemon_fleet_in_flight,
		.own_pause_ms = daemon_fleet_own_pause,
		.data = d,
	};

	if (!d->pl.cfg->fleet.host_id || !d->lq)
		return 0;
	d->fleet_alive = 1;
	return fleet_new(&d->loop, &d->pl.cfg->fleet, d->lq, &ev, &d->fleet);
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
	r = ledger_open_config(d->pl.cfg, false, &d->ledger, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		d->ledger_refused = true;
		return r;
	}
	/* A database server that is down at start is waited for (the ledger's thread says when
	 * it works): no file is taken meanwhile. */
	if (d->ledger->error[0])
		log_warning("%s: waiting for it; no file is taken until it answers",
			    d->ledger->error);
	/* Each file's row says which host took it. */
	if (d->pl.cfg->fleet.host_id)
		snprintf(d->ledger->host_id, sizeof(d->ledger->host_id), "%s",
			 d->pl.cfg->fleet.host_id);
	d->state_dir = strdup(dir);
	r = d->state_dir ? ledgerq_new(&d->loop, d->ledger, daemon_ledger_health, d, &d->lq)
			 : -ENOMEM;
	if (r < 0) {
		log_error("cannot start the ledger's thread: %s", strerror(-r));
		return r;
	}
	r = daemon_fleet_start(d);
	if (r < 0) {
		log_error("cannot join the fleet: %s", strerror(-r));
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
	uv_close((uv_handle_t *)&d->receipts_timer, NULL);
	uv_close((uv_handle_t *)&d->folder_timer, NULL);
	/* Before the ledger's thread stops: leaving is one more call there. */
	fleet_close(d->fleet, daemon_processing_empty(d));
	d->fleet = NULL;
	/* Last: the records of the files that just finished are written first. */
	ledgerq_close(d->lq);
	d->lq = NULL;
}

/* The answer to a `reload` command (JSON), NULL when out of memory: MESSAGE, and ERRS (each
 * reason the reload was refused) when not NULL. */
static char *daemon_reload_answer(const char *key, const char *message,
				  const struct config_errors *errs)
{
	cJSON *o = cJSON_CreateObject(), *a;
	char *text;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, key, message);
	a = errs ? cJSON_AddArrayToObject(o, "errors") : NULL;
	for (size_t i = 0; a && i < errs->count; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(errs->items[i]));
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

/* Answers the `reload` command that waits for this reload, if one does. */
static void daemon_reload_reply(struct daemon *d, unsigned code, const char *key,
				const char *message)
{
	if (!d->next.waiter)
		return;
	control_reply(d->control, d->next.waiter, code, daemon_reload_answer(key, message, NULL));
	d->next.waiter = NULL;
}

static void daemon_drained_cb(void *data)
{
	struct daemon *d = data;
	char msg[512];

	notify_drained(d->notify);
	if (d->next.cfg && d->stopping) {
		daemon_reload_reply(d, 503, "error", "the daemon stopped before the reload was done");
		daemon_reload_abandon(d);
	}
	pipeline_teardown(d);
	if (d->next.cfg && !d->stopping) {
		daemon_reload_commit(d);
		d->pl.cfg = d->next.cfg;
		d->next.cfg = NULL;
		log_configure((enum log_level)d->pl.cfg->log_level,
			      (enum log_format)d->pl.cfg->log_format);
		int r = pipeline_start(d);
		if (r == 0) {
			snprintf(msg, sizeof(msg), "configuration %s reloaded: %zu folder%s",
				 d->config_path, d->pl.cfg->n_folders,
				 d->pl.cfg->n_folders == 1 ? "" : "s");
			log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_RELOADED},
				  "%s", msg);
			daemon_folder_timer_arm(d);
			notify_ready(d->notify);
			/* Last: once the command returns, the new configuration is in force. */
			daemon_reload_reply(d, 200, "message", msg);
			return;
		}
		snprintf(msg, sizeof(msg), "reload failed: %s; stopping", strerror(-r));
		log_event(LOG_LEVEL_ERROR, &(struct log_fields){.message_id = LOG_ID_RELOAD_FAILED},
			  "%s", msg);
		daemon_reload_reply(d, 500, "error", msg);
		d->stopping = true;
		d->exit_status = 2;
		if (d->pl.engine) {
			engine_drain(d->pl.engine, 0, daemon_drained_cb, d);
			return;
		}
		pipeline_teardown(d);
	}
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
	uv_timer_stop(&d->folder_timer);
	notify_draining(d->notify, pl->cfg->api.shutdown_timeout_s);
	engine_drain(pl->engine, pl->cfg->api.shutdown_timeout_s * 1000, daemon_drained_cb, d);
}

static void daemon_stop(struct daemon *d, int exit_status)
{
	bool draining = d->next.cfg != NULL;

	if (d->stopping)
		return;
	d->stopping = true;
	d->exit_status = exit_status;
	notify_stopping(d->notify);
	uv_timer_stop(&d->once_check);
	uv_timer_stop(&d->folder_timer);
	/* A reload already drains: its callback sees `stopping` and does not start again. */
	if (!draining)
		daemon_drain(d);
}

/* A reload refused: said (each reason with the same MESSAGE_ID, so that `journalctl
 * MESSAGE_ID=...` shows why) and answered; the running configuration stays. */
static unsigned daemon_reload_refused(const char *how, const struct config_errors *errs,
				      const char *what, char **ret_body)
{
	const struct log_fields id = {.message_id = LOG_ID_RELOAD_REJECTED};
	char msg[640];

	snprintf(msg, sizeof(msg), "%s: %s; keeping the running configuration", how, what);
	log_event(LOG_LEVEL_ERROR, &id, "%s", msg);
	for (size_t i = 0; i < errs->count; i++)
		log_event(LOG_LEVEL_ERROR, &id, "%s", errs->items[i]);
	if (ret_body)
		*ret_body = daemon_reload_answer("error", msg, errs);
	return 422;
}

/* SIGHUP, or `resend-dropd reload` (WAITER: its request, answered once the new configuration
 * is in force). The new configuration is loaded and every folder it adds is set up before
 * anything stops: a reload that cannot be done is refused whole, with every reason. Returns
 * the HTTP status of an answer given at once (in *RET_BODY), or 0 when it comes later. */
static unsigned daemon_reload(struct daemon *d, const char *how, void *waiter, char **ret_body)
{
	struct reload rl = {.waiter = waiter};
	struct config_errors errs = {0};
	char what[640];
	unsigned code;
	int r;

	if (d->stopping || d->next.cfg) {
		log_warning("%s ignored: already %s", how, d->stopping ? "stopping" : "reloading");
		if (ret_body)
			*ret_body = daemon_reload_answer(
				"error", d->stopping ? "the daemon is stopping" : "a reload is under way",
				NULL);
		return d->stopping ? 503 : 409;
	}
	if (config_load(d->config_path, CONFIG_LOAD_DIRS_LATER, &rl.cfg, &errs) < 0) {
		snprintf(what, sizeof(what), "configuration %s has %zu error%s", d->config_path,
			 errs.count, errs.count == 1 ? "" : "s");
		code = daemon_reload_refused(how, &errs, what, ret_body);
		config_errors_clear(&errs);
		return code;
	}
	r = daemon_reload_prepare(d, &rl, &errs);
	if (r < 0) {
		snprintf(what, sizeof(what), "configuration %s is valid, but %s",
			 d->config_path,
			 r == -ENOMEM ? "out of memory" : "a folder it adds cannot be set up");
		code = daemon_reload_refused(how, &errs, what, ret_body);
		config_errors_clear(&errs);
		config_free(rl.cfg);
		return code;
	}
	/* Uploads in flight finish (within shutdown_timeout_s) before the new folders start;
	 * whatever is left in processing is resumed by the new pipeline. */
	log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_RELOADING},
		  "%s: configuration %s is valid; reloading after uploads in flight finish", how,
		  d->config_path);
	notify_reloading(d->notify);
	d->next = rl;
	daemon_drain(d);
	return 0;
}

/* STATUS=, asked by notify at the end of loop turns: O(folders). Waiting counts what the
 * inboxes hold that is not yet being claimed (settling, parked, waiting for a namesake or for
 * a claim to be tried again) and what is claimed but not yet uploading. */
static void daemon_status_cb(void *data, struct notify_status *ret)
{
	const struct daemon *d = data;
	const struct pipeline *pl = &d->pl;
	struct engine_counts jc;

	ret->phase = d->stopping ? "stopping" : d->next.cfg ? "reloading" : NULL;
	if (!pl->cfg || !pl->engine)
		return;
	ret->folders = pl->cfg->n_folders;
	for (size_t i = 0; i < d->n_folders; i++)
		ret->unavailable += !folder_is_open(d->folders[i]);
	for (size_t i = 0; pl->watches && i < pl->cfg->n_folders; i++) {
		struct watch_counts c;

		if (!pl->watches[i])
			continue;
		watch_counts(pl->watches[i], &c);
		ret->waiting += c.settling + c.parked + c.busy + c.retrying;
	}
	engine_counts(pl->engine, &jc);
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
		ret->paused += engine_folder_paused(pl->engine, i);
}

static void daemon_log_status(const struct daemon *d)
{
	const struct pipeline *pl = &d->pl;

	if (!pl->engine)
		return;
	engine_log_status(pl->engine);
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
	for (size_t i = 0; i < d->n_folders; i++) {
		if (!folder_is_open(d->folders[i]))
			log_warning("status: %s: STUCK: the folder cannot be served: %s%s",
				    pl->cfg->folders[i].name, d->folders[i]->reason,
				    (d->flags & DAEMON_ONCE) ? "" : "; it is tried again");
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
		(void)daemon_reload(d, "SIGHUP", NULL, NULL);
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
	    engine_folder_paused(d->pl.engine, folder))
		return WATCH_LATER;
	switch (engine_submit(d->pl.engine, folder, name, seen)) {
	case ENGINE_CLAIMING:
		return WATCH_TAKEN;
	case ENGINE_CHECKING_IN_PLACE:
		return WATCH_KEEP;
	case ENGINE_NAME_BUSY:
		return WATCH_BUSY;
	case ENGINE_LATER:
	case ENGINE_STOPPING:
		break;
	}
	return WATCH_LATER;
}

static struct watch *daemon_watch(const struct daemon *d, size_t folder)
{
	return d->pl.watches && folder < d->pl.cfg->n_folders ? d->pl.watches[folder] : NULL;
}

static void daemon_claimed_cb(size_t folder, const char *name, enum engine_claim how, void *data)
{
	static const enum watch_claim to_watch[] = {
		[ENGINE_CLAIMED] = WATCH_CLAIM_LEFT,       [ENGINE_GONE] = WATCH_CLAIM_LEFT,
		[ENGINE_CHANGED] = WATCH_CLAIM_CHANGED,    [ENGINE_BUSY] = WATCH_CLAIM_BUSY,
		[ENGINE_CLAIM_FAILED] = WATCH_CLAIM_FAILED,
	};
	struct watch *w = daemon_watch(data, folder);

	if (w)
		watch_claimed(w, name, to_watch[how]);
}

static void daemon_left_cb(size_t folder, const char *name, void *data)
{
	struct daemon *d = data;
	struct watch *w = daemon_watch(data, folder);

	if (w)
		watch_poke(w, name);
	/* Its end was recorded, with its notifications, before it left. */
	outbox_kick(d->pl.outbox);
}

/* Slots are free: parked files are offered folder by folder in turn, one at a time, until the
 * engine has no room left or nothing is parked. */
static void daemon_capacity_cb(void *data)
{
	struct daemon *d = data;
	size_t n = d->pl.cfg->n_folders, without = 0;

	while (without < n && !d->stopping) {
		struct watch *w = daemon_watch(d, d->offer_next);
		/* A paused folder's files stay parked; the others go on. */
		enum watch_offer r = w && !engine_folder_paused(d->pl.engine, d->offer_next)
					     ? watch_offer(w)
					     : WATCH_OFFER_NONE;

		if (r == WATCH_OFFER_FULL)
			return;
		d->offer_next = (d->offer_next + 1) % n;
		without = r == WATCH_OFFER_NONE ? without + 1 : 0;
	}
}

/* --once: done when no watch has a file left and the engine holds nothing. */
static void daemon_once_check_cb(uv_timer_t *timer)
{
	struct daemon *d = timer->data;

	if (d->stopping)
		return;
	for (size_t i = 0; i < d->pl.cfg->n_folders; i++) {
		if (d->pl.watches[i] && !watch_idle(d->pl.watches[i]))
			return;
	}
	if (engine_active(d->pl.engine) > 0)
		return;
	unsigned failed = engine_failed_total(d->pl.engine);
	bool all = daemon_folders_all_open(d);
	log_info("--once: inboxes processed%s%s", failed ? "; some files failed" : "",
		 all ? "" : "; some folders could not be served (said above)");
	/* A folder not served is the run's failure (2), before a file's (3). */
	daemon_stop(d, !all ? 2 : failed ? 3 : 0);
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
	return engine_folder_reopen(d->pl.engine, folder);
}

static void daemon_idle_cb(void *data)
{
	daemon_once_schedule(data);
}

static void daemon_auth_failed_cb(void *data)
{
	struct daemon *d = data;

	/* Each retry the key refuses again calls here: receivers hear of it once an hour. */
	if (!d->key_refused_ms || uv_now(&d->loop) - d->key_refused_ms >= DAEMON_KEY_NOTE_EVERY_MS) {
		d->key_refused_ms = uv_now(&d->loop);
		daemon_note(d, CONFIG_EVENT_KEY_REFUSED, NULL,
			    "Resend refused the API key (the journal says what it answered): every "
			    "upload waits, and is tried again now and then until the key is accepted");
	}
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
	uv_timer_init(&d.loop, &d.receipts_timer);
	d.receipts_timer.data = &d;
	uv_timer_start(&d.receipts_timer, daemon_receipts_cb, 1000, DAEMON_RECEIPTS_EVERY_MS);
	uv_unref((uv_handle_t *)&d.receipts_timer);
	uv_timer_init(&d.loop, &d.folder_timer);
	d.folder_timer.data = &d;
	r = notify_new(&d.loop, daemon_status_cb, &d, &d.notify);
	if (r < 0)
		log_warning("cannot set up notifications to the service manager: %s", strerror(-r));
	r = daemon_control_prepare(&d);
	if (r == 0)
		r = daemon_ledger_open(&d);
	if (r == 0)
		r = daemon_folders_open(&d);
	if (r == 0)
		r = pipeline_start(&d);
	if (r == 0)
		r = daemon_control_listen(&d);
	if (r < 0) {
		/* Another daemon's folder is a refusal, like a configuration error (said by the engine);
		 * the rest a failure. */
		if (r != -EWOULDBLOCK && !d.ledger_refused)
			log_error("start-up failed: %s", strerror(-r));
		d.stopping = true;
		d.exit_status = r == -EWOULDBLOCK ? 1 : 2;
		if (d.pl.engine) {
			engine_drain(d.pl.engine, 0, daemon_drained_cb, &d);
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
		/* A host of a fleet takes what a daemon without one left in .resend-dropd. */
		if (d.fleet && d.pl.engine)
			(void)engine_take_over(d.pl.engine, NULL, daemon_took_over, &d);
		daemon_once_schedule(&d);
		daemon_folder_timer_arm(&d);
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
	daemon_folders_free(d.folders, d.n_folders);
	free(d.state_dir);
	metrics_free(d.metrics);
	control_pauses_free(d.pauses);
	log_event(LOG_LEVEL_INFO, &(struct log_fields){.message_id = LOG_ID_STOPPED}, "stopped");
	return d.exit_status;
}
