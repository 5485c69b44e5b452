/* The engine around the files' state machine (job.c): the name index of everything in
 * processing, the slots (max_holding descriptors before upload), the resume backlog, the global
 * pauses, the end of each loop turn (admission, events to the daemon, the disk batch), and the
 * drain. */
#include "job_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utlist.h>

#include "log.h"

#define JOB_AUTH_PAUSE_MS (60 * 1000)
#define JOB_QUOTA_PAUSE_MS (60 * 60 * 1000)
/* Files claimed and holding a slot before their upload has succeeded (a descriptor, from the
 * check on): enough to keep every upload busy, few enough that a flood of files (or a backlog
 * in processing after a crash) cannot exhaust descriptors or memory. The rest wait in the inbox
 * (parked by the watch) or in the resume backlog. Lowered to fit RLIMIT_NOFILE, with room for
 * sockets, inotify, directories and libuv's own descriptors. */
#define JOBS_MAX_HOLDING 256
#define JOBS_MIN_HOLDING 4

void jobs_submit_disk(struct jobs *js, struct diskq_op *op)
{
	diskq_submit(js->dq, op);
	jobs_defer(js);
}

/* ---- the name index and the backlog ---------------------------------------------------- */

static struct claimed *claimed_new(size_t folder, const char *name)
{
	size_t len = strlen(name);
	struct claimed *c = calloc(1, sizeof(*c) + len + 1);

	if (!c)
		return NULL;
	c->folder = folder;
	memcpy(c->name, name, len + 1);
	return c;
}

static struct claimed *claimed_find(struct folder_rt *f, const char *name)
{
	struct claimed *c = NULL;

	HASH_FIND(hh, f->names, name, strlen(name), c);
	return c;
}

static void claimed_index(struct folder_rt *f, struct claimed *c)
{
	HASH_ADD_KEYPTR(hh, f->names, c->name, strlen(c->name), c);
	c->indexed = true;
}

void jobs_claimed_free(struct jobs *js, struct claimed *c)
{
	if (c->indexed)
		HASH_DELETE(hh, js->folders[c->folder].names, c);
	free(c);
}

void jobs_backlog_push(struct jobs *js, struct claimed *c)
{
	c->job = NULL;
	DL_APPEND(js->backlog_head, c);
	js->backlog++;
}

static struct claimed *backlog_pop(struct jobs *js)
{
	struct claimed *c = js->backlog_head;

	if (c) {
		DL_DELETE(js->backlog_head, c);
		js->backlog--;
	}
	return c;
}

bool jobs_events_on(const struct jobs *js)
{
	return !js->draining && !js->closing;
}

void jobs_pause(struct jobs *js, enum resend_class cls, const struct resend_error *e)
{
	bool auth = cls == RESEND_AUTH;
	uint64_t ms = auth ? JOB_AUTH_PAUSE_MS : JOB_QUOTA_PAUSE_MS;

	if (!js->paused || auth != js->auth_paused)
		log_event(LOG_LEVEL_ERROR, &(struct log_fields){.message_id = LOG_ID_API_PAUSED},
			  "all uploads paused for %llu s: %s%s%s%s (HTTP %ld)%s%s",
			  (unsigned long long)(ms / 1000), e->message, e->name[0] ? " [" : "",
			  e->name, e->name[0] ? "]" : "", e->status,
			  auth ? "; check the API key, which is from " : "",
			  auth ? js->cfg->api_key_source : "");
	js->paused = true;
	js->auth_paused = auth;
	pacer_pause(&js->pacer, ms);
	if (auth) {
		js->auth_failed_pending = true;
		jobs_defer(js);
	}
}

static void jobs_unpaused(void *data)
{
	struct jobs *js = data;

	if (js->auth_paused)
		log_info("retrying uploads after the API key was refused");
	js->paused = js->auth_paused = false;
}

/* ---- the end of a loop turn ------------------------------------------------------------ */

static bool jobs_idle(const struct jobs *js)
{
	return jobs_active(js) == 0;
}

/* Starts files from the resume backlog while there are slots: they were claimed before the
 * ones waiting in the inbox, so they go first. */
static void jobs_admit(struct jobs *js)
{
	struct claimed *c;

	while (js->holding < js->max_holding && (c = backlog_pop(js))) {
		struct job *job = job_new(js, c);
		if (!job) {
			log_error("%s: out of memory resuming '%s'", js->folders[c->folder].conf->name,
				  c->name);
			jobs_claimed_free(js, c);
			continue;
		}
		job->resumed = true;
		job->rep.claimed_at_ms = jobs_now_wall_ms();
		job_enter(job, JOB_CHECKING);
	}
}

static void jobs_turn_cb(uv_prepare_t *prepare)
{
	struct jobs *js = prepare->data;

	uv_prepare_stop(prepare);
	if (js->auth_failed_pending) {
		/* It may drain JOBS (--once gives up): not from inside a job's callback. */
		js->auth_failed_pending = false;
		if (js->events.auth_failed && jobs_events_on(js))
			js->events.auth_failed(js->events.data);
	}
	if (!js->draining) {
		jobs_admit(js);
		/* The daemon submits parked files from inside this call. */
		if (js->holding < js->max_holding && js->backlog == 0 && !js->ledger_failing &&
		    js->events.capacity)
			js->events.capacity(js->events.data);
		if (jobs_idle(js) && js->events.idle)
			js->events.idle(js->events.data);
	} else if (jobs_idle(js) && js->drained_cb) {
		void (*cb)(void *) = js->drained_cb;
		js->drained_cb = NULL;
		uv_timer_stop(&js->drain_timer);
		cb(js->drained_data);
		return;
	}
	/* Everything this turn submitted, as one batch. */
	diskq_flush(js->dq);
}

void jobs_defer(struct jobs *js)
{
	if (!js->closing)
		uv_prepare_start(&js->turn, jobs_turn_cb);
}

/* ---- entry points ---------------------------------------------------------------------- */

enum jobs_submit jobs_submit(struct jobs *js, size_t folder, const char *name,
			     const struct fsops_seen *seen)
{
	struct folder_rt *f = &js->folders[folder];
	bool dry_run = js->flags & JOBS_DRY_RUN;
	struct claimed *c;
	struct job *job;

	if (js->draining || js->closing)
		return JOBS_STOPPING;
	if (!dry_run && claimed_find(f, name)) {
		log_info("%s: '%s' waits: a file of that name is still being processed",
			 f->conf->name, name);
		return JOBS_NAME_BUSY;
	}
	if (js->holding >= js->max_holding || js->backlog > 0 || js->ledger_failing)
		return JOBS_LATER;
	c = claimed_new(folder, name);
	job = c ? job_new(js, c) : NULL;
	if (!job) {
		free(c);
		log_error("%s: out of memory for '%s'", f->conf->name, name);
		return JOBS_LATER;
	}
	if (dry_run) {
		job->dry_run = true;
		job_enter(job, JOB_CHECKING);
		return JOBS_CHECKING_IN_PLACE;
	}
	claimed_index(f, c);
	if (seen) {
		job->seen = *seen;
		job->has_seen = true;
	}
	job_enter(job, JOB_CLAIMING);
	return JOBS_CLAIMING;
}

bool jobs_knows_name(struct jobs *js, size_t folder, const char *name)
{
	return claimed_find(&js->folders[folder], name) != NULL;
}

void jobs_set_ledger(struct jobs *js, struct ledgerq *lq)
{
	js->lq = lq;
	js->ledger_failing = lq && ledgerq_failing(lq);
}

void jobs_ledger_health(struct jobs *js, bool failing, const char *error)
{
	if (failing == js->ledger_failing)
		return;
	js->ledger_failing = failing;
	if (failing)
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){LOG_ID_LEDGER_FAILED, NULL, NULL, NULL, NULL},
			  "%s; no new file is taken from the inboxes until the ledger can be written "
			  "again (files in flight go on; nothing is lost or imported twice)",
			  error);
	else
		log_info("the ledger can be written again: files are taken from the inboxes again");
	/* Stopping with a ledger that fails: files waiting for it to record their end stay in
	 * processing for the next start, instead of holding the stop up. */
	if (failing && js->draining) {
		struct job *j, *next;

		for (j = js->jobs; j; j = next) {
			next = j->next;
			if (j->state == JOB_LEDGER_WAIT)
				job_release(j);
		}
	}
	jobs_defer(js);
}

static void jobs_list_work(struct diskq_op *op)
{
	struct jobs_list *l = (struct jobs_list *)op;

	op->result = fsops_list(l->js->folders[l->folder].dir->proc_fd, &l->names, &l->n);
}

static void jobs_list_done(struct diskq_op *op)
{
	struct jobs_list *l = (struct jobs_list *)op;
	struct jobs *js = l->js;
	struct folder_rt *f = &js->folders[l->folder];

	js->lists_pending--;
	if (op->result < 0)
		log_error("%s: cannot list '%s/%s': %s; what is there is resumed at the next start",
			  f->conf->name, f->conf->inbox, FSOPS_PROCESSING_DIR, strerror(-op->result));
	for (size_t i = 0; op->result == 0 && i < l->n && !js->draining; i++) {
		struct claimed *c;

		if (claimed_find(f, l->names[i]))
			continue;
		c = claimed_new(l->folder, l->names[i]);
		if (!c) {
			log_error("%s: out of memory listing processing", f->conf->name);
			break;
		}
		claimed_index(f, c);
		jobs_backlog_push(js, c);
	}
	if (op->result == 0)
		fsops_names_free(l->names, l->n);
	free(l);
	jobs_defer(js);
}

void jobs_resume(struct jobs *js, size_t folder)
{
	struct jobs_list *l;

	if (js->flags & JOBS_DRY_RUN)
		return;
	l = calloc(1, sizeof(*l));
	if (!l) {
		log_error("%s: out of memory listing processing", js->folders[folder].conf->name);
		return;
	}
	l->js = js;
	l->folder = folder;
	l->op.work = jobs_list_work;
	l->op.done = jobs_list_done;
	js->lists_pending++;
	jobs_submit_disk(js, &l->op);
}

static unsigned jobs_max_holding(const struct config *cfg)
{
	struct rlimit rl;
	uint64_t reserve = 32 + 5 * cfg->n_folders + 2 * cfg->api.max_in_flight;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= reserve + JOBS_MAX_HOLDING)
		return JOBS_MAX_HOLDING;
	if (rl.rlim_cur <= reserve + JOBS_MIN_HOLDING)
		return JOBS_MIN_HOLDING;
	return (unsigned)(rl.rlim_cur - reserve);
}

static void folder_rt_close(struct folder_rt *f)
{
	resend_fields_free(&f->fields);
	inflight_clear(&f->inflight); /* empty once every job ended; a safety net */
}

/* What the engine keeps of a folder beside its directories (the daemon's). */
static int folder_rt_open(struct folder_rt *f)
{
	int r = resend_fields_build(f->conf, &f->fields);

	if (r < 0)
		return r;
	config_import_settings_hash(f->conf, f->settings_hash);
	return 0;
}

int jobs_folder_reopen(struct jobs *js, size_t folder)
{
	struct folder_rt *f = &js->folders[folder];
	int r = folder_reopen_inbox(f->dir, f->conf);

	if (r == 0 && !(js->flags & JOBS_DRY_RUN))
		log_info("%s: the processing directory '%s/%s' is set up again", f->conf->name,
			 f->conf->inbox, FSOPS_PROCESSING_DIR);
	return r;
}

static void jobs_free(struct jobs *js)
{
	for (size_t i = 0; i < js->n_folders; i++)
		folder_rt_close(&js->folders[i]);
	free(js->folders);
	free(js);
}

/* Every handle of JOBS counts in open_handles (the disk queue's too); the last close frees it. */
static void jobs_handle_closed(struct jobs *js)
{
	if (--js->open_handles == 0)
		jobs_free(js);
}

static void jobs_closed_cb(uv_handle_t *handle)
{
	jobs_handle_closed(handle->data);
}

static void jobs_part_closed(void *data)
{
	jobs_handle_closed(data);
}

static void jobs_drain_timeout_cb(uv_timer_t *timer);

int jobs_new(uv_loop_t *loop, const struct config *cfg, struct folder *const *dirs,
	     struct api *api, unsigned flags, const struct jobs_events *events, struct jobs **ret)
{
	const struct pacer_events sev = {
		.due = job_pacer_due,
		.upload = job_pacer_upload,
		.poll = job_pacer_poll,
		.unpaused = jobs_unpaused,
	};
	struct jobs *js = calloc(1, sizeof(*js));
	int r = -ENOMEM;

	if (!js)
		return -ENOMEM;
	js->loop = loop;
	js->cfg = cfg;
	js->api = api;
	js->flags = flags;
	js->events = *events;
	js->max_holding = jobs_max_holding(cfg);
	js->folders = calloc(cfg->n_folders, sizeof(*js->folders));
	if (!js->folders) {
		free(js);
		return -ENOMEM;
	}
	js->n_folders = cfg->n_folders;
	for (size_t i = 0; i < cfg->n_folders; i++) {
		js->folders[i].conf = &cfg->folders[i];
		js->folders[i].dir = dirs[i];
	}
	for (size_t i = 0; i < cfg->n_folders; i++) {
		r = folder_rt_open(&js->folders[i]);
		if (r < 0)
			goto fail;
	}
	r = pacer_init(&js->pacer, loop, cfg->n_folders, (unsigned)cfg->api.max_in_flight,
		       cfg->api.requests_per_second, &sev);
	if (r < 0)
		goto fail;
	js->pacer.ev.data = js;
	r = diskq_new(loop, &js->dq);
	if (r < 0) {
		/* The pacer's timer is a handle already: free JOBS once it is closed. */
		js->open_handles = 1;
		pacer_close(&js->pacer, jobs_part_closed, js);
		return r;
	}
	uv_timer_init(loop, &js->drain_timer);
	uv_prepare_init(loop, &js->turn);
	js->drain_timer.data = js->turn.data = js;
	js->open_handles = 4; /* pacer, drain timer, turn, disk queue */
	*ret = js;
	return 0;
fail:
	jobs_free(js);
	return r;
}

size_t jobs_active(const struct jobs *js)
{
	return js->n_jobs + js->backlog + js->lists_pending;
}

unsigned jobs_failed_total(const struct jobs *js)
{
	return js->failed_total;
}

void jobs_log_status(const struct jobs *js)
{
	char states[512];
	size_t n = 0;
	struct diskq_stats ds = diskq_stats(js->dq);

	states[0] = '\0';
	for (int s = JOB_CLAIMING; s < JOB_ENDED && n < sizeof(states); s++) {
		if (js->n_state[s])
			n += (size_t)snprintf(states + n, sizeof(states) - n, "%s%u %s",
					      n ? ", " : "", js->n_state[s], job_state_info((enum job_state)s)->name);
	}
	uint64_t done = 0, failed = 0;

	/* The daemon's counters (they survive reloads, as status and /metrics show them); without
	 * them, this engine's own. */
	if (js->metrics)
		metrics_totals(js->metrics, &done, &failed);
	else
		done = js->done_total, failed = js->failed_total;
	log_info("status: %zu files in hand%s%s; %zu waiting in processing to be resumed; %llu "
		 "done, %llu failed since start%s; disk: %llu batches, %llu operations, %llu "
		 "directory fsyncs",
		 js->n_jobs, n ? ": " : "", states, js->backlog, (unsigned long long)done,
		 (unsigned long long)failed, js->paused ? "; uploads paused" : "",
		 (unsigned long long)ds.batches, (unsigned long long)ds.ops,
		 (unsigned long long)ds.dir_fsyncs);
	if (js->ledger_failing)
		log_warning("status: STUCK: the ledger cannot be written: no new file is taken from "
			    "the inboxes until it can");
	for (size_t i = 0; i < js->n_folders; i++) {
		const struct folder_rt *f = &js->folders[i];
		const struct config_folder *c = f->conf;

		log_info("status: %s: %llu done, %llu failed", c->name,
			 (unsigned long long)(f->metrics ? metrics_folder_done(f->metrics) : f->done),
			 (unsigned long long)(f->metrics ? metrics_folder_failed(f->metrics)
							 : f->failed));
		if (f->save_error)
			log_warning("status: %s: STUCK: state records cannot be written in '%s/%s', "
				    "so nothing is uploaded: %s",
				    c->name, c->inbox, FSOPS_PROCESSING_DIR, strerror(-f->save_error));
		if (f->claim_error)
			log_warning("status: %s: STUCK: files cannot be claimed from '%s': %s", c->name,
				    c->inbox, strerror(-f->claim_error));
		for (int k = 0; k < 2; k++) {
			if (f->dir_problem[k])
				log_warning("status: %s: STUCK: %s directory '%s' cannot be used: %s",
					    c->name, k ? "failed" : "done", k ? c->failed : c->done,
					    fsops_dir_check_reason(f->dir_problem[k]));
		}
		if (f->n_stuck) {
			int problem = f->dir_problem[f->stuck_failed_dir];

			log_warning("status: %s: STUCK: %u file%s waiting in '%s/%s' to be moved; "
				    "the last move to '%s' failed: %s",
				    c->name, f->n_stuck, f->n_stuck == 1 ? "" : "s", c->inbox,
				    FSOPS_PROCESSING_DIR, f->stuck_failed_dir ? c->failed : c->done,
				    problem ? fsops_dir_check_reason(problem)
					    : strerror(-f->stuck_error));
		}
	}
}

static void jobs_drain_timeout_cb(uv_timer_t *timer)
{
	struct jobs *js = timer->data;
	struct job *j, *next;

	for (j = js->jobs; j; j = next) {
		next = j->next;
		if (j->state == JOB_UPLOADING || j->state == JOB_POLLING) {
			log_warning("%s: '%s': %s aborted at shutdown; it stays in processing for the "
				    "next start",
				    j->folder->conf->name, j->name,
				    j->state == JOB_UPLOADING ? "upload" : "import check");
			job_end(j, JOB_END_RELEASED);
		}
	}
}

void jobs_drain(struct jobs *js, uint64_t timeout_ms, void (*done_cb)(void *data), void *data)
{
	struct job *j, *next;
	struct claimed *c;
	unsigned calls;

	js->draining = true;
	js->drained_cb = done_cb;
	js->drained_data = data;
	pacer_stop(&js->pacer);
	while ((c = backlog_pop(js)))
		jobs_claimed_free(js, c);
	for (j = js->jobs; j; j = next) {
		next = j->next;
		if (job_state_info(j->state)->waits) {
			job_release(j);
		} else if (j->state == JOB_CHECKING) {
			/* A check not yet started is cancelled; one hashing stops at its next read. */
			atomic_store(&j->cancel, true);
			uv_cancel((uv_req_t *)&j->work);
		}
	}
	calls = js->n_state[JOB_UPLOADING] + js->n_state[JOB_POLLING];
	if (calls)
		log_info("waiting up to %llu s for %u upload%s in flight",
			 (unsigned long long)(timeout_ms / 1000), calls, calls == 1 ? "" : "s");
	uv_timer_start(&js->drain_timer, jobs_drain_timeout_cb, timeout_ms, 0);
	jobs_defer(js);
}

void jobs_close(struct jobs *js)
{
	/* Drained: nothing uses the folders' directories any more (they are the daemon's). */
	js->closing = true;
	pacer_close(&js->pacer, jobs_part_closed, js);
	uv_close((uv_handle_t *)&js->drain_timer, jobs_closed_cb);
	uv_close((uv_handle_t *)&js->turn, jobs_closed_cb);
	diskq_close(js->dq, jobs_part_closed, js);
}

void jobs_counts(const struct jobs *js, struct jobs_counts *ret)
{
	static const enum {
		C_WAITING,
		C_UPLOADING,
		C_FOLLOWING,
		C_FINISHING,
		C_NONE
	} kind[JOB_N_STATES] = {
		[JOB_NEW] = C_WAITING,         [JOB_CLAIMING] = C_WAITING,
		[JOB_CHECKING] = C_WAITING,    [JOB_LOOKING_UP] = C_WAITING,
		[JOB_DUP_WAIT] = C_WAITING,    [JOB_QUEUED] = C_WAITING,
		[JOB_SAVING] = C_WAITING,      [JOB_UPLOADING] = C_UPLOADING,
		[JOB_RETRY_WAIT] = C_WAITING,  [JOB_RECORDING] = C_FOLLOWING,
		[JOB_FOLLOW_WAIT] = C_FOLLOWING, [JOB_POLLING] = C_FOLLOWING,
		[JOB_LEDGER_WAIT] = C_FINISHING,
		[JOB_FINISHING] = C_FINISHING, [JOB_FINISH_WAIT] = C_FINISHING,
		[JOB_ENDED] = C_NONE,
	};
	size_t n[C_NONE + 1] = {0};

	for (int s = 0; s < JOB_N_STATES; s++)
		n[kind[s]] += js->n_state[s];
	ret->waiting = n[C_WAITING] + js->backlog;
	ret->uploading = n[C_UPLOADING];
	ret->following = n[C_FOLLOWING];
	ret->finishing = n[C_FINISHING];
	ret->paused = js->paused;
	ret->auth_paused = js->auth_paused;
}
