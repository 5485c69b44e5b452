/* The engine around the files' state machine (job.c): the name index of everything in
 * processing, the slots (max_holding descriptors before upload), the resume backlog, the global
 * pauses, the end of each loop turn (admission, events to the daemon, the disk batch), the
 * drain, and what the control socket reads. It calls into jobs; they answer through
 * struct job_host (engine_job_host below), never by name. */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <utlist.h>

#include "fleet.h"
#include "folder.h"
#include "job.h"
#include "log.h"

#define ENGINE_AUTH_PAUSE_MS (60 * 1000)
#define ENGINE_QUOTA_PAUSE_MS (60 * 60 * 1000)
/* Files claimed and holding a slot before their upload has succeeded (a descriptor, from the
 * check on): enough to keep every upload busy, few enough that a flood of files (or a backlog
 * in processing after a crash) cannot exhaust descriptors or memory. The rest wait in the inbox
 * (parked by the watch) or in the resume backlog. Lowered to fit RLIMIT_NOFILE, with room for
 * sockets, inotify, directories and libuv's own descriptors. */
#define ENGINE_MAX_HOLDING 256
#define ENGINE_MIN_HOLDING 4

/* A name in a folder's processing directory that the engine knows of: a job's, or one waiting
 * in the resume backlog. Indexed by name (uthash), so that a namesake is found in O(1). */
struct claimed {
	UT_hash_handle hh;
	struct job *job;             /* NULL while in the backlog */
	struct claimed *prev, *next; /* backlog */
	size_t folder;
	bool indexed;
	char name[];
};

/* An inbox file being claimed in the fleet's database (fleet_claim), before its job exists. */
struct fleet_wait {
	struct engine *e;
	struct claimed *c; /* indexed: a namesake waits */
	struct fsops_seen seen;
	bool has_seen;
	void *call;
	struct fleet_wait *prev, *next;
};

/* Moving a host's processing directory into this host's, in the disk thread. */
struct engine_takeover {
	struct diskq_op op;
	struct engine *e;
	size_t folder;
	char host[CONFIG_HOST_ID_MAX + 1]; /* "": the folder's directory of one host */
	char **names; /* the files moved (fsops_move_all) */
	size_t moved;
	unsigned left;
	struct engine_takeover_all *all;
};

struct engine_takeover_all {
	unsigned pending, moved, left;
	void (*done)(const char *host, unsigned moved, unsigned left, void *data);
	void *data;
	char host[CONFIG_HOST_ID_MAX + 1];
};

/* Listing a processing directory at start-up, in the disk thread. */
struct engine_list {
	struct diskq_op op;
	struct engine *e;
	size_t folder;
	char **names;
	size_t n;
};

struct engine {
	uv_loop_t *loop;
	const struct config *cfg;
	unsigned flags;
	struct engine_events events;
	struct job_env env; /* what every job works with; env.data is this engine */
	struct job_folder *folders;
	size_t n_folders;
	struct diskq *dq;
	struct pacer pacer;
	struct follower follow; /* every job's import follow-up */
	struct reconciler reconcile; /* resumed files whose upload may have been made */
	uv_timer_t drain_timer;
	/* End of the loop turn: admission, capacity and idle events, then the disk batch. */
	uv_prepare_t turn;
	struct job *jobs;
	/* engine_each_job: the job it visits next (a job that ends moves it on). */
	struct job *cursor;
	size_t n_jobs;
	unsigned n_state[JOB_N_STATES];
	unsigned holding, max_holding;
	struct claimed *backlog_head; /* utlist */
	size_t backlog;
	unsigned lists_pending; /* listings of processing and receipts sweeps in the disk thread */
	bool auth_paused, paused, auth_failed_pending;
	void (*drained_cb)(void *data);
	void *drained_data;
	unsigned failed_total, done_total;
	struct metrics *metrics; /* the daemon's, NULL: not counted */
	unsigned open_handles;
	bool closing;
	/* In a fleet: the claims asked of the database (their files count as held). */
	struct fleet *fleet;
	struct fleet_wait *fleet_waits;
	unsigned n_fleet_waits;
	unsigned fleet_alive; /* hosts alive, as the last heartbeat saw them */
};

static void engine_defer(struct engine *e);

/* FN on every job. A job that ends meanwhile (this one, or another it wakes as its content is
 * let go) is unlinked safely: the cursor moves past it. Jobs made meanwhile are not visited.
 * Not reentrant: FN never comes back here. */
static void engine_each_job(struct engine *e, void (*fn)(struct job *job))
{
	struct job *j = e->jobs;

	for (; j; j = e->cursor) {
		e->cursor = j->next;
		fn(j);
	}
	e->cursor = NULL;
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

static struct claimed *claimed_find(struct job_folder *f, const char *name)
{
	struct claimed *c = NULL;

	HASH_FIND(hh, f->names, name, strlen(name), c);
	return c;
}

static void claimed_index(struct job_folder *f, struct claimed *c)
{
	HASH_ADD_KEYPTR(hh, f->names, c->name, strlen(c->name), c);
	c->indexed = true;
}

static void claimed_free(struct engine *e, struct claimed *c)
{
	if (c->indexed)
		HASH_DELETE(hh, e->folders[c->folder].names, c);
	free(c);
}

static void backlog_push(struct engine *e, struct claimed *c)
{
	c->job = NULL;
	DL_APPEND(e->backlog_head, c);
	e->backlog++;
}

static struct claimed *backlog_pop(struct engine *e)
{
	struct claimed *c = e->backlog_head;

	if (c) {
		DL_DELETE(e->backlog_head, c);
		e->backlog--;
	}
	return c;
}

/* Events go to the daemon only while it runs the pipeline (not while draining or closing). */
static bool engine_events_on(const struct engine *e)
{
	return !e->env.draining && !e->closing;
}

/* A job for C (from the backlog, or a settled inbox file), on the engine's list. */
static struct job *engine_job_new(struct engine *e, struct claimed *c)
{
	struct job *job = job_new(&e->env, &e->folders[c->folder], c, c->name);

	if (!job)
		return NULL;
	c->job = job;
	if (e->jobs)
		e->jobs->prev = job;
	job->next = e->jobs;
	e->jobs = job;
	e->n_jobs++;
	e->n_state[JOB_NEW]++;
	job->folder->n_state[JOB_NEW]++;
	return job;
}

/* ---- what jobs tell the engine (struct job_host) ----------------------------------------- */

static void engine_job_moved(void *data, struct job *job, enum job_state from, enum job_state to)
{
	struct engine *e = data;
	const struct job_state_info *was = job_state_info(from), *now = job_state_info(to);

	e->n_state[from]--;
	e->n_state[to]++;
	job->folder->n_state[from]--;
	job->folder->n_state[to]++;
	if (from == JOB_FINISH_WAIT)
		job->folder->n_stuck--;
	else if (to == JOB_FINISH_WAIT)
		job->folder->n_stuck++;
	if (was->holding && !now->holding) {
		/* Uploaded, finished or gone: the slot goes to a waiting file. */
		e->holding--;
		engine_defer(e);
	} else if (!was->holding && now->holding) {
		e->holding++;
	}
}

static void engine_job_ended(void *data, struct job *job, enum job_end how)
{
	struct engine *e = data;
	struct claimed *c = job->claimed;

	switch (how) {
	case JOB_END_FINISHED:
		if (job->rep.failed) {
			job->folder->failed++;
			e->failed_total++;
		} else {
			job->folder->done++;
			e->done_total++;
		}
		if (c && e->events.left && engine_events_on(e))
			e->events.left(job->folder->index, job->name, e->events.data);
		break;
	case JOB_END_VANISHED: /* its name left processing too */
		if (c && e->events.left && engine_events_on(e))
			e->events.left(job->folder->index, job->name, e->events.data);
		break;
	case JOB_END_UNCLAIMED:
		/* A dry run's file that would fail counts as failed (--once's exit status). */
		if (job->dry_run && job->rep.failed)
			e->failed_total++;
		break;
	case JOB_END_BUSY:
		/* A namesake nobody knew of is in processing: it is resumed like anything an
		 * earlier run left, and this name waits in the backlog behind it. */
		if (c && !e->env.draining) {
			backlog_push(e, c);
			c = NULL;
		}
		break;
	case JOB_END_RELEASED:
		break;
	}
	if (c)
		claimed_free(e, c);
	if (e->cursor == job)
		e->cursor = job->next;
	if (job->prev)
		job->prev->next = job->next;
	else
		e->jobs = job->next;
	if (job->next)
		job->next->prev = job->prev;
	e->n_jobs--;
	e->n_state[JOB_ENDED]--;
	job->folder->n_state[JOB_ENDED]--;
	engine_defer(e);
}

static void engine_job_claimed(void *data, struct job *job, enum engine_claim how)
{
	struct engine *e = data;

	/* The rename is the claim now (or it failed, and the file is free for any host). */
	if (e->fleet && !job->dry_run)
		fleet_release(e->fleet, job->folder->conf->name, job->name);

	if (engine_events_on(e) && e->events.claimed)
		e->events.claimed(job->folder->index, job->name, how, e->events.data);
}

static void engine_job_disk(void *data, struct diskq_op *op)
{
	struct engine *e = data;

	diskq_submit(e->dq, op);
	engine_defer(e);
}

static bool engine_job_knows(void *data, size_t folder, const char *name)
{
	struct engine *e = data;

	return claimed_find(&e->folders[folder], name) != NULL;
}

/* Pauses every request after the key (RESEND_AUTH) or the quota (RESEND_QUOTA) refused one. */
static void engine_job_refused(void *data, enum resend_class cls, const struct resend_error *err)
{
	struct engine *e = data;
	bool auth = cls == RESEND_AUTH;
	uint64_t ms = auth ? ENGINE_AUTH_PAUSE_MS : ENGINE_QUOTA_PAUSE_MS;

	if (!e->paused || auth != e->auth_paused)
		log_event(LOG_LEVEL_ERROR, &(struct log_fields){.message_id = LOG_ID_API_PAUSED},
			  "all uploads paused for %llu s: %s%s%s%s (HTTP %ld)%s%s",
			  (unsigned long long)(ms / 1000), err->message, err->name[0] ? " [" : "",
			  err->name, err->name[0] ? "]" : "", err->status,
			  auth ? "; check the API key, which is from " : "",
			  auth ? e->cfg->api_key_source : "");
	e->paused = true;
	e->auth_paused = auth;
	pacer_pause(&e->pacer, ms);
	if (auth) {
		e->auth_failed_pending = true;
		engine_defer(e);
	}
}

static const struct job_host engine_job_host = {
	.moved = engine_job_moved,
	.ended = engine_job_ended,
	.claimed = engine_job_claimed,
	.disk = engine_job_disk,
	.knows = engine_job_knows,
	.refused = engine_job_refused,
};

static void engine_unpaused(void *data)
{
	struct engine *e = data;

	if (e->auth_paused)
		log_info("retrying uploads after the API key was refused");
	e->paused = e->auth_paused = false;
}

/* ---- the end of a loop turn ------------------------------------------------------------ */

/* Starts files from the resume backlog while there are slots: they were claimed before the
 * ones waiting in the inbox, so they go first. */
static void engine_admit(struct engine *e)
{
	struct claimed *c;

	while (e->holding < e->max_holding && (c = backlog_pop(e))) {
		struct job *job = engine_job_new(e, c);

		if (!job) {
			log_error("%s: out of memory resuming '%s'", e->folders[c->folder].conf->name,
				  c->name);
			claimed_free(e, c);
			continue;
		}
		job_resume(job);
	}
}

static void engine_turn_cb(uv_prepare_t *prepare)
{
	struct engine *e = prepare->data;

	uv_prepare_stop(prepare);
	if (e->auth_failed_pending) {
		/* It may drain the engine (--once gives up): not from inside a job's callback. */
		e->auth_failed_pending = false;
		if (e->events.auth_failed && engine_events_on(e))
			e->events.auth_failed(e->events.data);
	}
	if (!e->env.draining) {
		engine_admit(e);
		/* The daemon submits parked files from inside this call. */
		if (e->holding < e->max_holding && e->backlog == 0 && !e->env.ledger_failing &&
		    e->events.capacity)
			e->events.capacity(e->events.data);
		if (engine_active(e) == 0 && e->events.idle)
			e->events.idle(e->events.data);
	} else if (engine_active(e) == 0 && e->drained_cb) {
		void (*cb)(void *) = e->drained_cb;

		e->drained_cb = NULL;
		uv_timer_stop(&e->drain_timer);
		cb(e->drained_data);
		return;
	}
	/* Everything this turn submitted, as one batch. */
	diskq_flush(e->dq);
}

/* Runs the end-of-turn work (admission, events, the disk batch) before the loop next sleeps. */
static void engine_defer(struct engine *e)
{
	if (!e->closing)
		uv_prepare_start(&e->turn, engine_turn_cb);
}

/* ---- entry points ---------------------------------------------------------------------- */

/* ---- a fleet: the database's claim before the rename ---------------------------------- */

static void engine_fleet_wait_free(struct engine *e, struct fleet_wait *w)
{
	DL_DELETE(e->fleet_waits, w);
	e->n_fleet_waits--;
	free(w);
}

static void engine_fleet_claimed(bool mine, void *data)
{
	struct fleet_wait *w = data;
	struct engine *e = w->e;
	struct claimed *c = w->c;
	struct fsops_seen seen = w->seen;
	bool has_seen = w->has_seen;
	struct job *job;

	engine_fleet_wait_free(e, w);
	if (!mine) {
		/* Another host has it: it renames it into its own processing directory, or lets
		 * it go and the next scan offers it again. */
		log_debug("%s: '%s' is claimed by another host of the fleet",
			  e->folders[c->folder].conf->name, c->name);
		if (engine_events_on(e) && e->events.claimed)
			e->events.claimed(c->folder, c->name, ENGINE_GONE, e->events.data);
		claimed_free(e, c);
		engine_defer(e);
		return;
	}
	job = engine_job_new(e, c);
	if (!job) {
		log_error("%s: out of memory for '%s'", e->folders[c->folder].conf->name, c->name);
		fleet_release(e->fleet, e->folders[c->folder].conf->name, c->name);
		if (engine_events_on(e) && e->events.claimed)
			e->events.claimed(c->folder, c->name, ENGINE_CLAIM_FAILED, e->events.data);
		claimed_free(e, c);
		engine_defer(e);
		return;
	}
	job_start(job, has_seen ? &seen : NULL);
}

static enum engine_submit engine_fleet_claim(struct engine *e, size_t folder, const char *name,
					     const struct fsops_seen *seen)
{
	struct job_folder *f = &e->folders[folder];
	struct fleet_wait *w;

	/* With other hosts alive, a host takes what it can start on soon, not the whole inbox:
	 * the others get their share of a burst. Alone, it takes what one host does (coalescing
	 * gathers what waits). */
	unsigned cap = 4 * e->cfg->api.max_in_flight;

	if (cap < 8)
		cap = 8;
	if (!fleet_can_claim(e->fleet) || (e->fleet_alive > 1 && e->holding + e->n_fleet_waits >= cap))
		return ENGINE_LATER;
	w = calloc(1, sizeof(*w));
	if (!w || !(w->c = claimed_new(folder, name))) {
		free(w);
		log_error("%s: out of memory for '%s'", f->conf->name, name);
		return ENGINE_LATER;
	}
	w->e = e;
	if (seen) {
		w->seen = *seen;
		w->has_seen = true;
	}
	if (fleet_claim(e->fleet, f->conf->name, name, engine_fleet_claimed, w, &w->call) < 0) {
		free(w->c);
		free(w);
		log_error("%s: out of memory for '%s'", f->conf->name, name);
		return ENGINE_LATER;
	}
	claimed_index(f, w->c);
	DL_APPEND(e->fleet_waits, w);
	e->n_fleet_waits++;
	return ENGINE_CLAIMING;
}

/* A drain: the claims asked for are let go (the files stay in the inbox). */
static void engine_fleet_drop_waits(struct engine *e)
{
	struct fleet_wait *w, *tmp;

	DL_FOREACH_SAFE(e->fleet_waits, w, tmp) {
		fleet_cancel(e->fleet, w->call);
		fleet_release(e->fleet, e->folders[w->c->folder].conf->name, w->c->name);
		claimed_free(e, w->c);
		engine_fleet_wait_free(e, w);
	}
}

void engine_set_fleet(struct engine *e, struct fleet *fleet)
{
	e->fleet = fleet;
}

void engine_fleet_ready(struct engine *e)
{
	engine_defer(e);
}

void engine_fleet_share(struct engine *e, unsigned alive, unsigned index, int64_t offset_ms)
{
	e->fleet_alive = alive;
	pacer_set_share(&e->pacer, e->cfg->api.rate_share / (alive ? alive : 1));
	pacer_set_turns(&e->pacer, alive, index, offset_ms);
}

void engine_fleet_pause(struct engine *e, uint64_t ms, bool news)
{
	if (news)
		log_warning("fleet: another host was told to wait %.1f s for Resend's rate limit: "
			    "every host waits", (double)ms / 1000.0);
	pacer_pause(&e->pacer, ms);
}

uint64_t engine_rate_blocked_ms(const struct engine *e)
{
	uint64_t until = e->pacer.rl.blocked_until_ms, now = uv_now(e->loop);

	return until > now ? until - now : 0;
}

static void engine_takeover_work(struct diskq_op *op)
{
	struct engine_takeover *t = (struct engine_takeover *)op;
	struct folder *dir = t->e->folders[t->folder].dir;
	int fleet_fd = -1, src_fd;

	if (t->host[0]) {
		fleet_fd = openat(dir->base_fd, FSOPS_FLEET_DIR,
				  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		src_fd = fleet_fd < 0 ? -1
				      : openat(fleet_fd, t->host,
					       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	} else {
		src_fd = openat(dir->base_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (src_fd < 0) {
		op->result = errno == ENOENT ? 0 : -errno; /* nothing of that host here */
	} else {
		op->result = fsops_move_all(src_fd, dir->proc_fd, &t->names, &t->moved, &t->left);
		close(src_fd);
		/* Its directory goes once empty (the next host of that name makes it again). */
		if (t->host[0] && t->left == 0 && op->result == 0)
			(void)unlinkat(fleet_fd, t->host, AT_REMOVEDIR);
	}
	if (fleet_fd >= 0)
		close(fleet_fd);
}

static void engine_takeover_done(struct diskq_op *op)
{
	struct engine_takeover *t = (struct engine_takeover *)op;
	struct engine *e = t->e;
	struct engine_takeover_all *all = t->all;
	struct job_folder *f = &e->folders[t->folder];

	if (op->result < 0 && op->result != -EEXIST)
		log_error("%s: cannot move the files of %s%s%s into '%s/%s/%s/%s': %s",
			  f->conf->name, t->host[0] ? "host '" : "the processing directory of one host",
			  t->host, t->host[0] ? "'" : "", f->conf->inbox, FSOPS_PROCESSING_DIR,
			  FSOPS_FLEET_DIR, fleet_host_id(e->fleet), strerror(-op->result));
	if (op->result < 0 && !t->left)
		t->left = 1;
	all->moved += (unsigned)t->moved;
	all->left += t->left;
	/* Resumed like anything an earlier run of this host left: followed or reconciled when
	 * their imports may exist, never uploaded again blindly. The names moved, not a listing
	 * of the directory: this host's own files there are in hand, and one may end (its name
	 * unknown again) while a listing is made. */
	for (size_t i = 0; i < t->moved && !e->env.draining; i++) {
		struct claimed *c;

		if (claimed_find(f, t->names[i]))
			continue;
		c = claimed_new(t->folder, t->names[i]);
		if (!c) {
			log_error("%s: out of memory resuming '%s'; it is resumed at the next start",
				  f->conf->name, t->names[i]);
			continue;
		}
		claimed_index(f, c);
		backlog_push(e, c);
	}
	if (t->names)
		fsops_names_free(t->names, t->moved);
	free(t);
	engine_defer(e);
	if (--all->pending == 0) {
		all->done(all->host, all->moved, all->left, all->data);
		free(all);
	}
}

int engine_take_over(struct engine *e, const char *host,
		     void (*done)(const char *host, unsigned moved, unsigned left, void *data),
		     void *data)
{
	struct engine_takeover_all *all = calloc(1, sizeof(*all));

	if (!all)
		return -ENOMEM;
	all->done = done;
	all->data = data;
	snprintf(all->host, sizeof(all->host), "%s", host ? host : "");
	all->pending = 1; /* until every folder's op is out */
	for (size_t i = 0; i < e->n_folders; i++) {
		struct engine_takeover *t;

		if (!folder_is_open(e->folders[i].dir) || e->folders[i].dir->base_fd < 0)
			continue;
		t = calloc(1, sizeof(*t));
		if (!t) {
			all->left++;
			continue;
		}
		t->e = e;
		t->folder = i;
		t->all = all;
		snprintf(t->host, sizeof(t->host), "%s", all->host);
		t->op.work = engine_takeover_work;
		t->op.done = engine_takeover_done;
		all->pending++;
		engine_job_disk(e, &t->op);
	}
	if (--all->pending == 0) {
		done(all->host, all->moved, all->left, data);
		free(all);
	}
	return 0;
}

enum engine_submit engine_submit(struct engine *e, size_t folder, const char *name,
				 const struct fsops_seen *seen)
{
	struct job_folder *f = &e->folders[folder];
	bool dry_run = e->flags & ENGINE_DRY_RUN;
	struct claimed *c;
	struct job *job;

	if (e->env.draining || e->closing)
		return ENGINE_STOPPING;
	if (!dry_run && claimed_find(f, name)) {
		log_info("%s: '%s' waits: a file of that name is still being processed",
			 f->conf->name, name);
		return ENGINE_NAME_BUSY;
	}
	if (e->holding + e->n_fleet_waits >= e->max_holding || e->backlog > 0 ||
	    e->env.ledger_failing)
		return ENGINE_LATER;
	if (e->fleet && !dry_run)
		return engine_fleet_claim(e, folder, name, seen);
	c = claimed_new(folder, name);
	job = c ? engine_job_new(e, c) : NULL;
	if (!job) {
		free(c);
		log_error("%s: out of memory for '%s'", f->conf->name, name);
		return ENGINE_LATER;
	}
	if (!dry_run)
		claimed_index(f, c);
	job_start(job, seen);
	return dry_run ? ENGINE_CHECKING_IN_PLACE : ENGINE_CLAIMING;
}

void engine_set_ledger(struct engine *e, struct ledgerq *lq)
{
	e->env.lq = lq;
	e->reconcile.lq = lq;
	e->env.ledger_failing = lq && ledgerq_failing(lq);
}

void engine_ledger_health(struct engine *e, bool failing, const char *error)
{
	if (failing == e->env.ledger_failing)
		return;
	e->env.ledger_failing = failing;
	if (failing)
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){LOG_ID_LEDGER_FAILED, NULL, NULL, NULL, NULL},
			  "%s; no new file is taken from the inboxes until the ledger can be written "
			  "again (files in flight go on; nothing is lost or imported twice)",
			  error);
	else
		log_info("the ledger can be written again: files are taken from the inboxes again");
	/* Files waiting for it to record their end: their imports go into their records (a
	 * crash meanwhile must not upload them again), and a drain lets them go instead of
	 * waiting for it. */
	if (failing)
		engine_each_job(e, job_ledger_failing);
	engine_defer(e);
}

static void engine_list_work(struct diskq_op *op)
{
	struct engine_list *l = (struct engine_list *)op;

	op->result = fsops_list(l->e->folders[l->folder].dir->proc_fd, &l->names, &l->n);
}

static void engine_list_done(struct diskq_op *op)
{
	struct engine_list *l = (struct engine_list *)op;
	struct engine *e = l->e;
	struct job_folder *f = &e->folders[l->folder];

	e->lists_pending--;
	if (op->result < 0)
		log_error("%s: cannot list '%s/%s': %s; what is there is resumed at the next start",
			  f->conf->name, f->conf->inbox, FSOPS_PROCESSING_DIR, strerror(-op->result));
	for (size_t i = 0; op->result == 0 && i < l->n && !e->env.draining; i++) {
		struct claimed *c;

		if (claimed_find(f, l->names[i]))
			continue;
		c = claimed_new(l->folder, l->names[i]);
		if (!c) {
			log_error("%s: out of memory listing processing", f->conf->name);
			break;
		}
		claimed_index(f, c);
		backlog_push(e, c);
	}
	if (op->result == 0)
		fsops_names_free(l->names, l->n);
	free(l);
	engine_defer(e);
}

/* ---- receipts: the backlog written again, old ones removed (receipts.h) ------------------- */

struct engine_sweep {
	struct diskq_op op;
	struct engine *e;
	size_t folder;
	int64_t now_ms;
	size_t removed;
	char why[400];
};

static void engine_sweep_work(struct diskq_op *op)
{
	struct engine_sweep *sw = (struct engine_sweep *)op;
	struct job_folder *f = &sw->e->folders[sw->folder];

	op->result = receipts_sweep(&f->conf->receipts, &f->dir->receipts, sw->now_ms,
				    &sw->removed, sw->why, sizeof(sw->why));
}

static void engine_sweep_done(struct diskq_op *op)
{
	struct engine_sweep *sw = (struct engine_sweep *)op;
	struct job_folder *f = &sw->e->folders[sw->folder];
	int *said = &f->dir->trouble.receipts_error;

	if (op->result < 0 && *said == 0)
		log_error("%s: cannot write receipts: %s; they wait and are written once the "
			  "directory can be written (the files themselves go on)",
			  f->conf->name, sw->why);
	else if (op->result == 0 && *said != 0)
		log_info("%s: receipts can be written to '%s' again (those that waited are "
			 "written)", f->conf->name, f->conf->receipts.dir);
	*said = op->result;
	sw->e->lists_pending--;
	if (sw->removed)
		log_info("%s: removed %zu receipt%s older than %llu days from '%s'", f->conf->name,
			 sw->removed, sw->removed == 1 ? "" : "s",
			 (unsigned long long)(f->conf->receipts.keep_ms / 86400000),
			 f->conf->receipts.dir);
	engine_defer(sw->e);
	free(sw);
}

void engine_receipts_sweep(struct engine *e, int64_t now_ms)
{
	if (e->flags & ENGINE_DRY_RUN || e->env.draining)
		return;
	for (size_t i = 0; i < e->n_folders; i++) {
		struct job_folder *f = &e->folders[i];
		struct engine_sweep *sw;

		if (!f->conf->receipts.dir || !folder_is_open(f->dir))
			continue;
		sw = calloc(1, sizeof(*sw));
		if (!sw)
			return;
		sw->e = e;
		sw->folder = i;
		sw->now_ms = now_ms;
		sw->op.work = engine_sweep_work;
		sw->op.done = engine_sweep_done;
		e->lists_pending++; /* a drain waits for it, like a listing */
		diskq_submit(e->dq, &sw->op);
	}
	diskq_flush(e->dq);
}

void engine_resume(struct engine *e, size_t folder)
{
	struct engine_list *l;

	if (e->flags & ENGINE_DRY_RUN)
		return;
	l = calloc(1, sizeof(*l));
	if (!l) {
		log_error("%s: out of memory listing processing", e->folders[folder].conf->name);
		return;
	}
	l->e = e;
	l->folder = folder;
	l->op.work = engine_list_work;
	l->op.done = engine_list_done;
	e->lists_pending++;
	engine_job_disk(e, &l->op);
}

int engine_folder_reopen(struct engine *e, size_t folder)
{
	struct job_folder *f = &e->folders[folder];
	int r = folder_reopen_inbox(f->dir, f->conf);

	if (r == 0 && !(e->flags & ENGINE_DRY_RUN))
		log_info("%s: the processing directory '%s/%s' is set up again", f->conf->name,
			 f->conf->inbox, FSOPS_PROCESSING_DIR);
	return r;
}

/* ---- life ---------------------------------------------------------------------------- */

static unsigned engine_max_holding(const struct config *cfg)
{
	struct rlimit rl;
	uint64_t reserve = 32 + 5 * cfg->n_folders + 2 * cfg->api.max_in_flight;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= reserve + ENGINE_MAX_HOLDING)
		return ENGINE_MAX_HOLDING;
	if (rl.rlim_cur <= reserve + ENGINE_MIN_HOLDING)
		return ENGINE_MIN_HOLDING;
	return (unsigned)(rl.rlim_cur - reserve);
}

/* What the engine keeps of a folder beside its directories (the daemon's). */
static int job_folder_open(struct job_folder *f)
{
	int r = resend_fields_build(f->conf, &f->fields);

	if (r < 0)
		return r;
	resend_settings_hash(f->conf, f->settings_hash);
	return 0;
}

static void job_folder_close(struct job_folder *f)
{
	resend_fields_free(&f->fields);
	inflight_clear(&f->inflight); /* empty once every job ended; a safety net */
}

static void engine_free(struct engine *e)
{
	follow_free(&e->follow);
	reconcile_free(&e->reconcile);
	for (size_t i = 0; i < e->n_folders; i++)
		job_folder_close(&e->folders[i]);
	free(e->folders);
	free(e);
}

/* Every handle of the engine counts in open_handles (the disk queue's too); the last close
 * frees it. */
static void engine_handle_closed(struct engine *e)
{
	if (--e->open_handles == 0)
		engine_free(e);
}

static void engine_closed_cb(uv_handle_t *handle)
{
	engine_handle_closed(handle->data);
}

static void engine_part_closed(void *data)
{
	engine_handle_closed(data);
}

/* The pacer's events: the follower's or the reconciler's own entry, a job's, or another
 * requester's (pacer_entry_init_granted). */
static void engine_pacer_due(struct pacer_entry *pe, void *data)
{
	struct engine *e = data;

	if (follow_owns(&e->follow, pe))
		follow_pacer_due(&e->follow);
	else if (reconcile_owns(&e->reconcile, pe))
		reconcile_pacer_due(&e->reconcile);
	else
		job_pacer_due(pe, data);
}

static void engine_pacer_poll(struct pacer_entry *pe, void *data)
{
	struct engine *e = data;

	if (follow_owns(&e->follow, pe))
		follow_pacer_poll(&e->follow);
	else if (reconcile_owns(&e->reconcile, pe))
		reconcile_pacer_poll(&e->reconcile);
	else if (pe->granted)
		pe->granted(pe);
}

struct pacer *engine_pacer(struct engine *e)
{
	return &e->pacer;
}

int engine_new(uv_loop_t *loop, const struct config *cfg, struct folder *const *dirs,
	       struct resend_client *api, unsigned flags, const struct engine_events *events,
	       struct engine **ret)
{
	const struct pacer_events sev = {
		.due = engine_pacer_due,
		.upload = job_pacer_upload,
		.poll = engine_pacer_poll,
		.unpaused = engine_unpaused,
	};
	struct engine *e = calloc(1, sizeof(*e));
	int r = -ENOMEM;

	if (!e)
		return -ENOMEM;
	e->loop = loop;
	e->cfg = cfg;
	e->flags = flags;
	e->events = *events;
	e->max_holding = engine_max_holding(cfg);
	e->env = (struct job_env){
		.loop = loop,
		.cfg = cfg,
		.api = api,
		.pacer = &e->pacer,
		.follow = &e->follow,
		.reconcile = &e->reconcile,
		.dry_run = flags & ENGINE_DRY_RUN,
		.host = &engine_job_host,
		.data = e,
	};
	e->folders = calloc(cfg->n_folders, sizeof(*e->folders));
	if (!e->folders) {
		free(e);
		return -ENOMEM;
	}
	e->n_folders = cfg->n_folders;
	for (size_t i = 0; i < cfg->n_folders; i++) {
		e->folders[i].conf = &cfg->folders[i];
		e->folders[i].index = i;
		e->folders[i].dir = dirs[i];
	}
	for (size_t i = 0; i < cfg->n_folders; i++) {
		r = job_folder_open(&e->folders[i]);
		if (r < 0)
			goto fail;
	}
	r = pacer_init(&e->pacer, loop, cfg->n_folders, (unsigned)cfg->api.max_in_flight,
		       cfg->api.requests_per_second, cfg->api.rate_share, &sev);
	if (r < 0)
		goto fail;
	e->pacer.ev.data = e;
	follow_init(&e->follow, loop, &e->pacer, api, cfg,
		    &(struct follow_events){job_follow_asked, job_follow_answered, e});
	reconcile_init(&e->reconcile, loop, &e->pacer, api, cfg,
		       &(struct reconcile_events){job_reconcile_done, e});
	r = diskq_new(loop, &e->dq);
	if (r < 0) {
		/* The pacer's timer is a handle already: free the engine once it is closed. */
		e->open_handles = 1;
		pacer_close(&e->pacer, engine_part_closed, e);
		return r;
	}
	uv_timer_init(loop, &e->drain_timer);
	uv_prepare_init(loop, &e->turn);
	e->drain_timer.data = e->turn.data = e;
	e->open_handles = 4; /* pacer, drain timer, turn, disk queue */
	*ret = e;
	return 0;
fail:
	engine_free(e);
	return r;
}

size_t engine_active(const struct engine *e)
{
	return e->n_jobs + e->backlog + e->lists_pending + e->n_fleet_waits;
}

unsigned engine_failed_total(const struct engine *e)
{
	return e->failed_total;
}

void engine_log_status(const struct engine *e)
{
	char states[512];
	size_t n = 0;
	struct diskq_stats ds = diskq_stats(e->dq);
	uint64_t done = 0, failed = 0;

	states[0] = '\0';
	for (int s = JOB_CLAIMING; s < JOB_ENDED && n < sizeof(states); s++) {
		if (e->n_state[s])
			n += (size_t)snprintf(states + n, sizeof(states) - n, "%s%u %s",
					      n ? ", " : "", e->n_state[s],
					      job_state_info((enum job_state)s)->name);
	}
	/* The daemon's counters (they survive reloads, as status and /metrics show them); without
	 * them, this engine's own. */
	if (e->metrics)
		metrics_totals(e->metrics, &done, &failed);
	else
		done = e->done_total, failed = e->failed_total;
	log_info("status: %zu files in hand%s%s; %zu waiting in processing to be resumed; %llu "
		 "done, %llu failed since start%s; disk: %llu batches, %llu operations, %llu "
		 "directory fsyncs",
		 e->n_jobs, n ? ": " : "", states, e->backlog, (unsigned long long)done,
		 (unsigned long long)failed, e->paused ? "; uploads paused" : "",
		 (unsigned long long)ds.batches, (unsigned long long)ds.ops,
		 (unsigned long long)ds.dir_fsyncs);
	if (e->env.ledger_failing)
		log_warning("status: STUCK: the ledger cannot be written: no new file is taken from "
			    "the inboxes until it can");
	for (size_t i = 0; i < e->n_folders; i++) {
		const struct job_folder *f = &e->folders[i];
		const struct folder_trouble *t = &f->dir->trouble;
		const struct config_folder *c = f->conf;

		log_info("status: %s: %llu done, %llu failed", c->name,
			 (unsigned long long)(f->metrics ? metrics_folder_done(f->metrics) : f->done),
			 (unsigned long long)(f->metrics ? metrics_folder_failed(f->metrics)
							 : f->failed));
		if (t->save_error)
			log_warning("status: %s: STUCK: state records cannot be written in '%s/%s', "
				    "so nothing is uploaded: %s",
				    c->name, c->inbox, FSOPS_PROCESSING_DIR, strerror(-t->save_error));
		if (t->claim_error)
			log_warning("status: %s: STUCK: files cannot be claimed from '%s': %s", c->name,
				    c->inbox, strerror(-t->claim_error));
		for (int k = 0; k < 2; k++) {
			if (t->dir_problem[k])
				log_warning("status: %s: STUCK: %s directory '%s' cannot be used: %s",
					    c->name, k ? "failed" : "done", k ? c->failed : c->done,
					    fsops_dir_check_reason(t->dir_problem[k]));
		}
		if (f->n_stuck) {
			int problem = t->dir_problem[t->stuck_failed_dir];

			log_warning("status: %s: STUCK: %u file%s waiting in '%s/%s' to be moved; "
				    "the last move to '%s' failed: %s",
				    c->name, f->n_stuck, f->n_stuck == 1 ? "" : "s", c->inbox,
				    FSOPS_PROCESSING_DIR, t->stuck_failed_dir ? c->failed : c->done,
				    problem ? fsops_dir_check_reason(problem)
					    : strerror(-t->stuck_error));
		}
	}
}

static void engine_drain_timeout_cb(uv_timer_t *timer)
{
	engine_each_job(timer->data, job_abort);
}

void engine_drain(struct engine *e, uint64_t timeout_ms, void (*done_cb)(void *data), void *data)
{
	struct claimed *c;
	unsigned calls;

	e->env.draining = true;
	e->drained_cb = done_cb;
	e->drained_data = data;
	pacer_stop(&e->pacer);
	while ((c = backlog_pop(e)))
		claimed_free(e, c);
	engine_fleet_drop_waits(e);
	engine_each_job(e, job_drain);
	calls = e->n_state[JOB_UPLOADING] + e->n_state[JOB_POLLING];
	if (calls)
		log_info("waiting up to %llu s for %u upload%s in flight",
			 (unsigned long long)(timeout_ms / 1000), calls, calls == 1 ? "" : "s");
	uv_timer_start(&e->drain_timer, engine_drain_timeout_cb, timeout_ms, 0);
	engine_defer(e);
}

void engine_close(struct engine *e)
{
	/* Drained: nothing uses the folders' directories any more (they are the daemon's). */
	e->closing = true;
	follow_stop(&e->follow);
	reconcile_stop(&e->reconcile);
	pacer_close(&e->pacer, engine_part_closed, e);
	uv_close((uv_handle_t *)&e->drain_timer, engine_closed_cb);
	uv_close((uv_handle_t *)&e->turn, engine_closed_cb);
	diskq_close(e->dq, engine_part_closed, e);
}

void engine_counts(const struct engine *e, struct engine_counts *ret)
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
		[JOB_RECONCILING] = C_WAITING,
		[JOB_DUP_WAIT] = C_WAITING,    [JOB_QUEUED] = C_WAITING,
		[JOB_BATCHING] = C_UPLOADING,  [JOB_BATCHED] = C_UPLOADING,
		[JOB_SAVING] = C_WAITING,      [JOB_UPLOADING] = C_UPLOADING,
		[JOB_RETRY_WAIT] = C_WAITING,  [JOB_RECORDING] = C_FOLLOWING,
		[JOB_FOLLOW_WAIT] = C_FOLLOWING, [JOB_POLLING] = C_FOLLOWING,
		[JOB_LEDGER_WAIT] = C_FINISHING,
		[JOB_FINISHING] = C_FINISHING, [JOB_FINISH_WAIT] = C_FINISHING,
		[JOB_ENDED] = C_NONE,
	};
	size_t n[C_NONE + 1] = {0};

	for (int s = 0; s < JOB_N_STATES; s++)
		n[kind[s]] += e->n_state[s];
	ret->waiting = n[C_WAITING] + e->backlog;
	ret->uploading = n[C_UPLOADING];
	ret->following = n[C_FOLLOWING];
	ret->finishing = n[C_FINISHING];
	ret->paused = e->paused;
	ret->auth_paused = e->auth_paused;
}

/* ---- for the control socket ---------------------------------------------------------------- */

void engine_folder_view(const struct engine *e, size_t folder, struct engine_folder_view *ret)
{
	const struct job_folder *f = &e->folders[folder];
	const struct folder_trouble *t = &f->dir->trouble;
	const struct config_folder *c = f->conf;
	const unsigned *n = f->n_state;
	const struct claimed *b;
	const struct job *j;

	memset(ret, 0, sizeof(*ret));
	ret->waiting = n[JOB_QUEUED];
	/* O(files in hand), at most max_holding. */
	for (j = e->jobs; j && n[JOB_QUEUED]; j = j->next) {
		if (j->folder == f && j->state == JOB_QUEUED && j->rep.claimed_at_ms > 0 &&
		    (!ret->oldest_claimed_ms || j->rep.claimed_at_ms < ret->oldest_claimed_ms))
			ret->oldest_claimed_ms = j->rep.claimed_at_ms;
	}
	DL_FOREACH(e->backlog_head, b)
		ret->waiting += b->folder == folder;
	ret->processing = n[JOB_NEW] + n[JOB_CLAIMING] + n[JOB_CHECKING] + n[JOB_LOOKING_UP] +
			  n[JOB_RECONCILING] +
			  n[JOB_DUP_WAIT] + n[JOB_SAVING] + n[JOB_RECORDING] + n[JOB_LEDGER_WAIT] +
			  n[JOB_FINISHING] + n[JOB_FINISH_WAIT];
	ret->uploading = n[JOB_UPLOADING] + n[JOB_BATCHING] + n[JOB_BATCHED];
	ret->retrying = n[JOB_RETRY_WAIT];
	ret->following = n[JOB_FOLLOW_WAIT] + n[JOB_POLLING];
	ret->paused = f->paused;
	/* The most serious first: nothing can be finished, then nothing uploaded or claimed. */
	for (int k = 0; k < 2 && !ret->last_error[0]; k++) {
		if (t->dir_problem[k])
			snprintf(ret->last_error, sizeof(ret->last_error),
				 "%s directory '%s' cannot be used: %s", k ? "failed" : "done",
				 k ? c->failed : c->done, fsops_dir_check_reason(t->dir_problem[k]));
	}
	if (!ret->last_error[0] && f->n_stuck)
		snprintf(ret->last_error, sizeof(ret->last_error),
			 "%u file%s cannot be moved to '%s': %s", f->n_stuck,
			 f->n_stuck == 1 ? "" : "s", t->stuck_failed_dir ? c->failed : c->done,
			 strerror(-t->stuck_error));
	if (!ret->last_error[0] && t->save_error)
		snprintf(ret->last_error, sizeof(ret->last_error),
			 "state records cannot be written in '%s/%s': %s", c->inbox,
			 FSOPS_PROCESSING_DIR, strerror(-t->save_error));
	if (!ret->last_error[0] && t->claim_error)
		snprintf(ret->last_error, sizeof(ret->last_error),
			 "files cannot be claimed from '%s': %s", c->inbox, strerror(-t->claim_error));
}

/* Loop milliseconds to the wall clock. */
static int64_t engine_wall(const struct engine *e, uint64_t loop_ms)
{
	uint64_t now = uv_now(e->loop);

	if (!loop_ms)
		return 0;
	return job_now_wall_ms() + (loop_ms > now ? (int64_t)(loop_ms - now) : 0);
}

void engine_api_view(const struct engine *e, struct engine_api_view *ret)
{
	const struct pacer *p = &e->pacer;

	memset(ret, 0, sizeof(*ret));
	ret->paused = e->paused;
	ret->auth = e->auth_paused;
	if (e->paused)
		ret->paused_until_ms = engine_wall(e, p->paused_until);
	ret->rate = p->rl.rate;
	ret->tokens = p->rl.tokens;
	ret->ceiling = p->rl.ceiling;
	ret->share = p->rl.share;
	ret->announced = p->rl.announced;
	if (p->rl.blocked_until_ms > uv_now(e->loop))
		ret->blocked_until_ms = engine_wall(e, p->rl.blocked_until_ms);
	ret->in_flight = p->in_flight;
	ret->max_in_flight = p->max_in_flight;
}

void engine_pause_folder(struct engine *e, size_t folder, bool paused)
{
	e->folders[folder].paused = paused;
	pacer_pause_lane(&e->pacer, folder, paused);
}

bool engine_folder_paused(const struct engine *e, size_t folder)
{
	return e->folders[folder].paused;
}

int engine_unfail(struct engine *e, size_t folder, const char *name, char **ret_report)
{
	const struct job_folder *f = &e->folders[folder];

	if (f->dir->failed_fd < 0 || f->dir->inbox_fd < 0)
		return -EBADF; /* a dry run opens no failed directory; an unavailable folder none */
	/* Two renames on the loop thread: metadata the kernel holds, like the watch's fstatat. No
	 * fsync: should the machine crash before the directories are written, the file is still
	 * in exactly one place (failed/, or the inbox), and the operator retries it again. */
	return fsops_unfail(f->dir->failed_fd, f->dir->inbox_fd, name, job_now_wall_ms() / 1000,
			    ret_report);
}

void engine_set_metrics(struct engine *e, struct metrics *m)
{
	e->metrics = m;
	e->env.metrics = m;
	e->follow.metrics = m;
	e->reconcile.metrics = m;
	for (size_t i = 0; i < e->n_folders; i++)
		e->folders[i].metrics = m ? metrics_folder(m, e->folders[i].conf->name) : NULL;
}
