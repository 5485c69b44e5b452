/* A file's life after it settled:
 *
 *   claim -> check (thread pool: open, header, sha256) -> queued -> uploading -> following -> finish
 *                                                            ^          |
 *                                                            +- retry <-+
 *
 * Every job owns its file descriptor, its timer and at most one API call; the job is freed in its
 * timer's close callback, so no callback can run on freed memory. */
#include "job.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "csvhead.h"
#include "fsops.h"
#include "log.h"
#include "queue.h"
#include "ratelimit.h"
#include "resend.h"
#include "utf8.h"

#define JOB_STATE_MAX 4096
#define JOB_AUTH_PAUSE_MS (60 * 1000)
#define JOB_QUOTA_PAUSE_MS (60 * 60 * 1000)
#define JOB_FOLLOW_FIRST_MS 500
#define JOB_FOLLOW_MAX_MS 30000
#define JOB_FOLLOW_LIMIT_MS (24ull * 60 * 60 * 1000)
#define JOB_HASH_CHUNK (1024 * 1024)
/* Files claimed and holding a descriptor before their upload has succeeded: enough to keep
 * every upload slot busy, few enough that a thousand files dropped at once (or found in
 * processing after a crash) cannot exhaust descriptors or memory. The rest wait their turn.
 * Lowered to fit RLIMIT_NOFILE, with room for sockets, inotify and libuv's own descriptors. */
#define JOBS_MAX_HOLDING 256
#define JOBS_MIN_HOLDING 4

enum job_state {
	JOB_CHECKING,
	JOB_QUEUED,
	JOB_UPLOADING,
	JOB_RETRY_WAIT,
	JOB_FOLLOWING,
	JOB_POLLING,
	JOB_CLOSING,
};

enum job_stage { STAGE_CHECK, STAGE_UPLOAD, STAGE_IMPORT };
static const char *const stage_names[] = {"check", "upload", "import"};

struct folder_rt {
	const struct config_folder *conf;
	char *processing;
	struct resend_fields fields;
	unsigned done, failed;
};

struct job {
	struct jobs *js;
	struct folder_rt *folder;
	size_t folder_index;
	char *name;
	enum job_state state;
	struct queue_entry qe;
	struct job *prev, *next; /* js->all */
	uv_timer_t timer;
	uv_work_t work;
	struct api_call *call;
	int fd;
	uint64_t bytes;
	char sha256[65];
	char idempotency_key[37];
	unsigned attempts;
	char import_id[64];
	bool dry_run;
	bool holds_slot; /* counted in js->holding */
	uint64_t follow_delay_ms;
	uint64_t follow_started_ms;
	int64_t claimed_at_ms, uploaded_at_ms;
	long http_status;
	struct resend_import import;
	/* The outcome, once decided. */
	bool failed;
	enum job_stage stage;
	struct resend_error error;
	int check_errno;
};

/* A file found in processing at start-up, waiting for a slot to be resumed. */
struct resume_entry {
	struct resume_entry *next;
	size_t folder;
	char name[];
};

struct jobs {
	uv_loop_t *loop;
	const struct config *cfg;
	struct api *api;
	unsigned flags;
	struct jobs_events events;
	struct folder_rt *folders;
	size_t n_folders;
	struct queue queue;
	struct ratelimit rl;
	uv_timer_t pump_timer;
	uv_timer_t drain_timer;
	struct job *all;
	size_t active;
	unsigned holding;
	unsigned max_holding;
	struct resume_entry *resume_head, *resume_tail;
	unsigned uploading;
	unsigned polling;
	uint64_t paused_until; /* loop ms; 0: not paused */
	bool auth_paused;
	bool draining;
	void (*drained_cb)(void *data);
	void *drained_data;
	unsigned failed_total, done_total;
	unsigned open_handles; /* our two timers and every job's timer */
	bool closing;
};

static void job_pump(struct jobs *js);
static void job_finish(struct job *job);
static void jobs_admit(struct jobs *js);

static int64_t now_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void format_ms(char buf[32], int64_t ms)
{
	fsops_format_utc(buf, ms / 1000, (int)(ms % 1000));
}

/* ---- life cycle of the job struct ------------------------------------------------------- */

static void jobs_free(struct jobs *js)
{
	while (js->resume_head) {
		struct resume_entry *e = js->resume_head;
		js->resume_head = e->next;
		free(e);
	}
	for (size_t i = 0; i < js->n_folders; i++) {
		resend_fields_free(&js->folders[i].fields);
		free(js->folders[i].processing);
	}
	free(js->folders);
	queue_free(&js->queue);
	free(js);
}

/* Every handle of JOBS and its jobs counts in open_handles; the last close frees it all. */
static void jobs_handle_closed(struct jobs *js)
{
	if (--js->open_handles == 0 && js->closing)
		jobs_free(js);
}

static void job_freed_cb(uv_handle_t *handle)
{
	struct job *job = handle->data;
	struct jobs *js = job->js;

	free(job->name);
	free(job);
	jobs_handle_closed(js);
}

/* The descriptor is needed until the upload has succeeded; after that the job only talks to
 * the API (following can take hours) and its slot goes to a waiting file. */
static void job_drop_fd(struct job *job)
{
	if (job->fd >= 0)
		close(job->fd);
	job->fd = -1;
	if (job->holds_slot) {
		job->holds_slot = false;
		job->js->holding--;
		jobs_admit(job->js);
	}
}

/* Ends the job's life in memory. Its file is wherever the caller left it. */
static void job_release(struct job *job)
{
	struct jobs *js = job->js;

	if (job->state == JOB_CLOSING)
		return;
	if (job->qe.queued)
		queue_remove(&js->queue, &job->qe);
	if (job->call) {
		if (job->state == JOB_UPLOADING)
			js->uploading--;
		if (job->state == JOB_POLLING)
			js->polling--;
		api_call_free(job->call);
		job->call = NULL;
	}
	job->state = JOB_CLOSING;
	job_drop_fd(job);
	if (job->prev)
		job->prev->next = job->next;
	else
		js->all = job->next;
	if (job->next)
		job->next->prev = job->prev;
	js->active--;
	uv_timer_stop(&job->timer);
	uv_close((uv_handle_t *)&job->timer, job_freed_cb);
}

static void jobs_check_idle(struct jobs *js)
{
	if (js->closing)
		return;
	if (js->draining && js->uploading == 0 && js->polling == 0 && js->drained_cb) {
		void (*cb)(void *) = js->drained_cb;
		js->drained_cb = NULL;
		uv_timer_stop(&js->drain_timer);
		cb(js->drained_data);
		return;
	}
	if (js->active == 0 && js->events.idle)
		js->events.idle(js->events.data);
}

static struct job *job_new(struct jobs *js, size_t folder, const char *name)
{
	struct job *job = calloc(1, sizeof(*job));

	if (!job || !(job->name = strdup(name))) {
		free(job);
		return NULL;
	}
	job->js = js;
	job->folder = &js->folders[folder];
	job->folder_index = folder;
	job->fd = -1;
	job->qe.lane = folder;
	job->holds_slot = true;
	js->holding++;
	uv_timer_init(js->loop, &job->timer);
	job->timer.data = job;
	js->open_handles++;
	job->next = js->all;
	if (js->all)
		js->all->prev = job;
	js->all = job;
	js->active++;
	return job;
}

/* ---- state file: what a restart needs to resume without uploading twice ---------------- */

/* A fixed-length name derived from the file's name: ".<name>.state" plus the temporary
 * suffix would not fit NAME_MAX for long names, and a lost state means a second upload. */
static void state_name(char *buf, size_t sz, const char *name)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[33] = "";

	if (EVP_Digest(name, strlen(name), md, &mdlen, EVP_sha256(), NULL))
		for (unsigned i = 0; i < 16 && i < mdlen; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(buf, sz, ".state-%s", hex);
}

/* Strings in reports must be valid JSON text whatever the file name's bytes are. Valid UTF-8
 * goes in as it is (cJSON escapes control characters); anything else in the escaped form the
 * logs use, where a backslash is doubled, so the two cannot be confused. */
static void job_report_add_string(cJSON *o, const char *key, const char *value)
{
	char buf[2048];

	if (utf8_valid(value)) {
		cJSON_AddStringToObject(o, key, value);
		return;
	}
	log_escape(buf, sizeof(buf), value);
	cJSON_AddStringToObject(o, key, buf);
}

static void job_save_state(struct job *job)
{
	char sname[NAME_MAX + 16], claimed[32];
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return;
	format_ms(claimed, job->claimed_at_ms);
	/* The name is stored in escaped form: the state file is found by the name's hash, and
	 * this only helps a human reading it. */
	job_report_add_string(o, "file", job->name);
	cJSON_AddNumberToObject(o, "attempts", job->attempts);
	cJSON_AddStringToObject(o, "claimed_at", claimed);
	cJSON_AddNumberToObject(o, "claimed_at_ms", (double)job->claimed_at_ms);
	if (job->import_id[0])
		cJSON_AddStringToObject(o, "import_id", job->import_id);
	if (job->uploaded_at_ms)
		cJSON_AddNumberToObject(o, "uploaded_at_ms", (double)job->uploaded_at_ms);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!text)
		return;
	state_name(sname, sizeof(sname), job->name);
	int r = fsops_write_atomic(job->folder->processing, sname, text, strlen(text));
	if (r < 0)
		log_warning("%s: '%s': cannot save state in '%s': %s", job->folder->conf->name,
			    job->name, job->folder->processing, strerror(-r));
	cJSON_free(text);
}

static void job_load_state(struct job *job)
{
	char sname[NAME_MAX + 16];
	char *text = NULL;
	size_t len;

	state_name(sname, sizeof(sname), job->name);
	if (fsops_read_small(job->folder->processing, sname, JOB_STATE_MAX, &text, &len) < 0)
		return;
	cJSON *o = cJSON_ParseWithLength(text, len);
	free(text);
	if (!o)
		return;
	cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "attempts");
	if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1000)
		job->attempts = (unsigned)v->valuedouble;
	v = cJSON_GetObjectItemCaseSensitive(o, "claimed_at_ms");
	if (cJSON_IsNumber(v))
		job->claimed_at_ms = (int64_t)v->valuedouble;
	v = cJSON_GetObjectItemCaseSensitive(o, "uploaded_at_ms");
	if (cJSON_IsNumber(v))
		job->uploaded_at_ms = (int64_t)v->valuedouble;
	v = cJSON_GetObjectItemCaseSensitive(o, "import_id");
	if (cJSON_IsString(v) && strlen(v->valuestring) < sizeof(job->import_id))
		snprintf(job->import_id, sizeof(job->import_id), "%s", v->valuestring);
	cJSON_Delete(o);
}

static void job_remove_state(struct job *job)
{
	char sname[NAME_MAX + 16], path[PATH_MAX];

	state_name(sname, sizeof(sname), job->name);
	snprintf(path, sizeof(path), "%s/%s", job->folder->processing, sname);
	unlink(path);
}

/* ---- outcome ---------------------------------------------------------------------------- */

static void job_fail(struct job *job, enum job_stage stage, long status, const char *name,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void job_fail(struct job *job, enum job_stage stage, long status, const char *name,
		     const char *fmt, ...)
{
	va_list ap;

	job->failed = true;
	job->stage = stage;
	job->error.status = status;
	snprintf(job->error.name, sizeof(job->error.name), "%s", name ? name : "");
	va_start(ap, fmt);
	vsnprintf(job->error.message, sizeof(job->error.message), fmt, ap);
	va_end(ap);
	job_finish(job);
}

static void job_fail_with(struct job *job, enum job_stage stage, const struct resend_error *e)
{
	job->failed = true;
	job->stage = stage;
	job->error = *e;
	job_finish(job);
}

static char *job_report(struct job *job, int64_t finished_ms)
{
	char ts[32];
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "outcome", job->failed ? "failed" : "done");
	cJSON_AddStringToObject(o, "folder", job->folder->conf->name);
	job_report_add_string(o, "file", job->name);
	cJSON_AddNumberToObject(o, "bytes", (double)job->bytes);
	if (job->sha256[0])
		cJSON_AddStringToObject(o, "sha256", job->sha256);
	else
		cJSON_AddNullToObject(o, "sha256");
	cJSON_AddNumberToObject(o, "attempts", job->attempts);
	format_ms(ts, job->claimed_at_ms);
	cJSON_AddStringToObject(o, "claimed_at", ts);
	if (job->uploaded_at_ms) {
		format_ms(ts, job->uploaded_at_ms);
		cJSON_AddStringToObject(o, "uploaded_at", ts);
	} else {
		cJSON_AddNullToObject(o, "uploaded_at");
	}
	format_ms(ts, finished_ms);
	cJSON_AddStringToObject(o, "finished_at", ts);
	if (job->http_status)
		cJSON_AddNumberToObject(o, "http_status", job->http_status);
	else
		cJSON_AddNullToObject(o, "http_status");
	if (job->import_id[0])
		cJSON_AddStringToObject(o, "import_id", job->import_id);
	else
		cJSON_AddNullToObject(o, "import_id");
	if (job->import.status[0]) {
		cJSON *imp = cJSON_AddObjectToObject(o, "import");
		job_report_add_string(imp, "status", job->import.status);
		if (job->import.has_counts) {
			cJSON *c = cJSON_AddObjectToObject(imp, "counts");
			const int64_t vals[] = {job->import.total, job->import.created,
						job->import.updated, job->import.skipped,
						job->import.failed};
			static const char *const keys[] = {"total", "created", "updated", "skipped",
							   "failed"};
			for (size_t i = 0; i < 5; i++) {
				if (vals[i] >= 0)
					cJSON_AddNumberToObject(c, keys[i], (double)vals[i]);
			}
		}
		if (job->import.completed_at[0])
			job_report_add_string(imp, "completed_at", job->import.completed_at);
	} else {
		cJSON_AddNullToObject(o, "import");
	}
	if (job->failed) {
		cJSON *e = cJSON_AddObjectToObject(o, "error");
		cJSON_AddStringToObject(e, "stage", stage_names[job->stage]);
		if (job->error.status)
			cJSON_AddNumberToObject(e, "http_status", job->error.status);
		else
			cJSON_AddNullToObject(e, "http_status");
		if (job->error.name[0])
			job_report_add_string(e, "name", job->error.name);
		else
			cJSON_AddNullToObject(e, "name");
		job_report_add_string(e, "message", job->error.message);
	} else {
		cJSON_AddNullToObject(o, "error");
	}
	text = cJSON_Print(o);
	cJSON_Delete(o);
	return text;
}

static void job_log_outcome(struct job *job, const char *final_name, const char *dir)
{
	const char *folder = job->folder->conf->name;

	if (job->failed) {
		log_error("%s: '%s' failed at %s: %s%s%s%s (moved to %s/%s, %u attempt%s)", folder,
			  job->name, stage_names[job->stage], job->error.message,
			  job->error.name[0] ? " [" : "", job->error.name,
			  job->error.name[0] ? "]" : "", dir, final_name, job->attempts,
			  job->attempts == 1 ? "" : "s");
	} else if (job->import.has_counts) {
		log_info("%s: '%s' imported, import %s, %lld rows (%lld created, %lld updated, %lld "
			 "skipped, %lld failed), %u attempt%s",
			 folder, job->name, job->import_id, (long long)job->import.total,
			 (long long)job->import.created, (long long)job->import.updated,
			 (long long)job->import.skipped, (long long)job->import.failed, job->attempts,
			 job->attempts == 1 ? "" : "s");
	} else {
		log_info("%s: '%s' uploaded, import %s, %llu bytes, %u attempt%s", folder, job->name,
			 job->import_id, (unsigned long long)job->bytes, job->attempts,
			 job->attempts == 1 ? "" : "s");
	}
}

static void job_finish(struct job *job)
{
	struct jobs *js = job->js;
	const struct config_folder *f = job->folder->conf;
	const char *dir = job->failed ? f->failed : f->done;
	int64_t now = now_wall_ms();
	char *report, *final_name = NULL;
	int r;

	if (job->dry_run) {
		if (job->failed) {
			log_warning("%s: dry run: '%s' would fail at %s: %s", f->name, job->name,
				    stage_names[job->stage], job->error.message);
			js->failed_total++;
		}
		job_release(job);
		jobs_check_idle(js);
		return;
	}
	report = job_report(job, now);
	r = fsops_finish(job->folder->processing, job->name, dir, now / 1000, report, &final_name);
	free(report);
	if (r < 0) {
		/* The file stays in processing and is retried at the next start: losing it is worse
		 * than a stuck file, and the log says where it is. */
		log_error("%s: '%s' could not be moved to '%s': %s; it stays in '%s'", f->name,
			  job->name, dir, strerror(-r), job->folder->processing);
		job_release(job);
		jobs_check_idle(js);
		return;
	}
	job_remove_state(job);
	job_log_outcome(job, final_name, dir);
	/* While draining the watchers are gone, and after a reload the daemon's folders may no
	 * longer be these. */
	if (js->events.finished && !js->draining)
		js->events.finished(job->folder_index, job->name, js->events.data);
	free(final_name);
	if (job->failed) {
		job->folder->failed++;
		js->failed_total++;
	} else {
		job->folder->done++;
		js->done_total++;
	}
	job_release(job);
	jobs_check_idle(js);
}

/* ---- check: runs in libuv's thread pool, touches only the job's own fields --------------- */

/* sha256 of the whole file, read in chunks: identifies the content in reports and keys. */
static int job_hash_file(int fd, uint64_t size, char hex[65], char *reason, size_t reasonsz)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *buf = malloc(JOB_HASH_CHUNK);
	uint64_t off = 0;
	int r = (ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) ? 0 : -ENOMEM;

	if (r < 0)
		snprintf(reason, reasonsz, "out of memory");
	while (r == 0 && off < size) {
		ssize_t n = pread(fd, buf, JOB_HASH_CHUNK, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			snprintf(reason, reasonsz, "reading the file failed: %s",
				 n < 0 ? strerror(errno) : "it shrank while being read");
			break;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += (uint64_t)n;
	}
	if (r == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen)) {
		for (unsigned i = 0; i < mdlen && i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
	}
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

static void job_check_work(uv_work_t *req)
{
	struct job *job = req->data;
	const struct config_folder *f = job->folder->conf;
	const char *dir = job->dry_run ? f->inbox : job->folder->processing;
	char reason[512];
	struct stat st;
	struct csvhead head = {0};
	int fd = -1, r;

	r = fsops_open_checked(dir, job->name, f->settings.max_file_bytes, &fd, &st, reason,
			       sizeof(reason));
	if (r < 0)
		goto fail;
	job->fd = fd;
	job->bytes = (uint64_t)st.st_size;
	/* The hash first: even a file refused for its header gets it in its report. */
	r = job_hash_file(fd, job->bytes, job->sha256, reason, sizeof(reason));
	if (r < 0)
		goto fail;
	r = csvhead_read(fd, &head, reason, sizeof(reason));
	if (r == 0) {
		r = csvhead_check(&head, &f->column_map, reason, sizeof(reason));
		csvhead_free(&head);
	}
	if (r < 0)
		goto fail;
	job->check_errno = 0;
	return;
fail:
	job->check_errno = r;
	snprintf(job->error.message, sizeof(job->error.message), "%s", reason);
}

static void job_enqueue(struct job *job, bool front)
{
	job->state = JOB_QUEUED;
	if (front)
		queue_push_front(&job->js->queue, &job->qe);
	else
		queue_push(&job->js->queue, &job->qe);
	job_pump(job->js);
}

static void job_follow_later(struct job *job);

static void job_dry_run_report(struct job *job)
{
	const struct resend_fields *fl = &job->folder->fields;

	log_info("%s: dry run: would upload '%s' (%llu bytes, sha256 %s) to %s/contacts/imports "
		 "with column_map=%s on_conflict=%s segments=%s topics=%s",
		 job->folder->conf->name, job->name, (unsigned long long)job->bytes, job->sha256,
		 job->js->cfg->api.base_url, fl->column_map ? fl->column_map : "(none)",
		 fl->on_conflict, fl->segments ? fl->segments : "(none)",
		 fl->topics ? fl->topics : "(none)");
}

static void job_check_done_cb(uv_work_t *req, int status)
{
	struct job *job = req->data;
	struct jobs *js = job->js;

	job->work.data = NULL;
	if (status == UV_ECANCELED || job->state == JOB_CLOSING) {
		job_release(job);
		jobs_check_idle(js);
		return;
	}
	if (job->check_errno < 0) {
		/* job_check_work left the reason in job->error.message. */
		job->failed = true;
		job->stage = STAGE_CHECK;
		job_finish(job);
		return;
	}
	if (job->dry_run) {
		job_dry_run_report(job);
		job_finish(job);
		return;
	}
	resend_idempotency_key(job->idempotency_key, job->folder->conf->name, job->sha256);
	if (js->draining) {
		job_release(job); /* stays in processing for the next start */
		jobs_check_idle(js);
		return;
	}
	if (job->import_id[0]) {
		/* Uploaded before a restart: never upload again, only learn the outcome. */
		if (job->folder->conf->settings.follow_import) {
			job->follow_started_ms = uv_now(js->loop);
			job->follow_delay_ms = 0;
			job_follow_later(job);
		} else {
			job_finish(job);
		}
		return;
	}
	job_enqueue(job, false);
}

static int job_start_check(struct job *job)
{
	job->state = JOB_CHECKING;
	job->work.data = job;
	int r = uv_queue_work(job->js->loop, &job->work, job_check_work, job_check_done_cb);
	if (r < 0) {
		job->work.data = NULL;
		log_error("%s: '%s': cannot start check: %s", job->folder->conf->name, job->name,
			  uv_strerror(r));
	}
	return r;
}

/* ---- upload ----------------------------------------------------------------------------- */

static uint64_t job_backoff_ms(const struct jobs *js, unsigned attempt)
{
	const struct config_retry *r = &js->cfg->retry;
	uint64_t d = r->initial_delay_ms;

	for (unsigned i = 1; i < attempt && d < r->max_delay_ms; i++)
		d *= 2;
	if (d > r->max_delay_ms)
		d = r->max_delay_ms;
	/* Full jitter on the upper half: many files failing together must not retry in step. */
	return d / 2 + (uint64_t)((double)(d / 2) * ((double)random() / RAND_MAX));
}

/* What an answer (or its absence) means, for uploads and polls alike. Every answer also feeds
 * the rate limiter, whatever its status. */
static enum resend_class job_call_outcome(struct jobs *js, struct api_call *call,
					  struct resend_error *err)
{
	const char *terr = api_call_transport_error(call);
	size_t len;
	const char *body = api_call_body(call, &len);

	ratelimit_note_response(&js->rl, uv_now(js->loop), api_call_header(call, "retry-after"),
				api_call_header(call, "ratelimit-remaining"),
				api_call_header(call, "ratelimit-reset"));
	if (terr) {
		err->status = 0;
		snprintf(err->message, sizeof(err->message), "%s", terr);
		return RESEND_RETRY;
	}
	return resend_classify(api_call_status(call), body, len, err);
}

static void jobs_pause(struct jobs *js, uint64_t ms, bool auth, const struct resend_error *e)
{
	uint64_t until = uv_now(js->loop) + ms;

	if (until <= js->paused_until)
		return;
	if (js->paused_until == 0 || auth != js->auth_paused)
		log_error("all uploads paused for %llu s: %s%s%s%s (HTTP %ld)%s",
			  (unsigned long long)(ms / 1000), e->message, e->name[0] ? " [" : "",
			  e->name, e->name[0] ? "]" : "", e->status,
			  auth ? "; check the API key (api.api_key_env / api.api_key_file)" : "");
	js->paused_until = until;
	js->auth_paused = auth;
	if (auth && js->events.auth_failed && !js->closing)
		js->events.auth_failed(js->events.data);
}

static void job_retry_cb(uv_timer_t *timer)
{
	struct job *job = timer->data;

	job_enqueue(job, true);
}

static void job_upload_done_cb(struct api_call *call, void *data)
{
	struct job *job = data;
	struct jobs *js = job->js;
	struct resend_error err = {0};
	size_t len;
	const char *body = api_call_body(call, &len);
	long status = api_call_status(call);
	enum resend_class cls = job_call_outcome(js, call, &err);

	js->uploading--;
	job->call = NULL;
	job->http_status = status;
	if (cls == RESEND_OK) {
		int r = resend_parse_created(body, len, job->import_id);
		api_call_free(call);
		if (r < 0) {
			job_fail(job, STAGE_UPLOAD, status, NULL,
				 "HTTP %ld but the answer holds no import id", status);
			goto out;
		}
		job->uploaded_at_ms = now_wall_ms();
		if (!job->folder->conf->settings.follow_import) {
			job_finish(job);
			goto out;
		}
		/* From here on a restart only follows the import, never uploads again. */
		job_save_state(job);
		if (js->draining) {
			job_release(job);
			goto out;
		}
		log_debug("%s: '%s' uploaded as import %s; following it", job->folder->conf->name,
			  job->name, job->import_id);
		job->follow_started_ms = uv_now(js->loop);
		job->follow_delay_ms = 0;
		job_follow_later(job);
		goto out;
	}
	api_call_free(call);
	switch (cls) {
	case RESEND_AUTH:
		job->attempts--; /* the key's fault, not the file's */
		job_save_state(job);
		jobs_pause(js, JOB_AUTH_PAUSE_MS, true, &err);
		if (!js->draining)
			job_enqueue(job, true);
		else
			job_release(job);
		break;
	case RESEND_QUOTA:
		job->attempts--;
		job_save_state(job);
		jobs_pause(js, JOB_QUOTA_PAUSE_MS, false, &err);
		if (!js->draining)
			job_enqueue(job, true);
		else
			job_release(job);
		break;
	case RESEND_RETRY:
		if (js->draining) {
			job_release(job);
			break;
		}
		if (job->attempts >= js->cfg->retry.max_attempts) {
			size_t used = strlen(err.message);
			snprintf(err.message + used, sizeof(err.message) - used,
				 " (gave up after %u attempts)", job->attempts);
			job_fail_with(job, STAGE_UPLOAD, &err);
			break;
		}
		uint64_t delay = job_backoff_ms(js, job->attempts);
		log_warning("%s: '%s' upload attempt %u failed: %s%s%s%s; retrying in %.1f s",
			    job->folder->conf->name, job->name, job->attempts, err.message,
			    err.name[0] ? " [" : "", err.name, err.name[0] ? "]" : "",
			    (double)delay / 1000);
		job_save_state(job);
		job->state = JOB_RETRY_WAIT;
		uv_timer_start(&job->timer, job_retry_cb, delay, 0);
		break;
	default:
		job_fail_with(job, STAGE_UPLOAD, &err);
		break;
	}
out:
	job_pump(js);
	jobs_check_idle(js);
}

static void job_start_upload(struct job *job)
{
	struct jobs *js = job->js;
	char *filename = resend_sanitize_filename(job->name);
	int r;

	job->attempts++;
	/* Counted before the request goes out: an upload cut off by a crash still used an
	 * attempt, so a file that always kills the upload cannot retry for ever. */
	job_save_state(job);
	r = filename ? api_create_import(js->api, job->fd, job->bytes, filename, &job->folder->fields,
					 job->idempotency_key, job_upload_done_cb, job, &job->call)
		     : -ENOMEM;
	free(filename);
	if (r < 0) {
		job_fail(job, STAGE_UPLOAD, 0, NULL, "cannot start the upload: %s", strerror(-r));
		return;
	}
	job->state = JOB_UPLOADING;
	js->uploading++;
	log_debug("%s: '%s' uploading (%llu bytes, attempt %u)", job->folder->conf->name,
		  job->name, (unsigned long long)job->bytes, job->attempts);
}

static void jobs_pump_cb(uv_timer_t *timer)
{
	job_pump(timer->data);
}

/* Starts as many queued uploads as the limits allow: max_in_flight, the request rate, and any
 * pause. Called whenever one of those may have changed. */
static void job_pump(struct jobs *js)
{
	while (!js->draining && js->queue.count > 0 &&
	       js->uploading < js->cfg->api.max_in_flight) {
		uint64_t now = uv_now(js->loop);
		uint64_t wait = 0;

		if (js->paused_until > now)
			wait = js->paused_until - now;
		else
			wait = ratelimit_take(&js->rl, now);
		if (wait > 0) {
			uv_timer_start(&js->pump_timer, jobs_pump_cb, wait, 0);
			return;
		}
		if (js->paused_until && js->auth_paused)
			log_info("retrying uploads after the API key was refused");
		js->paused_until = 0;
		struct queue_entry *e = queue_pop(&js->queue);
		struct job *job = (struct job *)((char *)e - offsetof(struct job, qe));
		job_start_upload(job);
	}
}

/* ---- follow the import ------------------------------------------------------------------ */

static void job_poll_done_cb(struct api_call *call, void *data)
{
	struct job *job = data;
	struct jobs *js = job->js;
	struct resend_error err = {0};
	size_t len;
	const char *body = api_call_body(call, &len);
	enum resend_class cls = job_call_outcome(js, call, &err);

	js->polling--;
	job->call = NULL;
	if (cls == RESEND_OK) {
		struct resend_import imp;
		if (resend_parse_import(body, len, &imp) == 0) {
			job->import = imp;
			if (imp.state == RESEND_IMPORT_COMPLETED) {
				api_call_free(call);
				job_finish(job);
				goto out;
			}
			if (imp.state == RESEND_IMPORT_FAILED) {
				api_call_free(call);
				job_fail(job, STAGE_IMPORT, 0, NULL,
					 "Resend reports import %s as failed", job->import_id);
				goto out;
			}
		}
	} else if (cls == RESEND_PERMANENT) {
		api_call_free(call);
		job_fail_with(job, STAGE_IMPORT, &err);
		goto out;
	} else if (cls == RESEND_AUTH || cls == RESEND_QUOTA) {
		jobs_pause(js, cls == RESEND_AUTH ? JOB_AUTH_PAUSE_MS : JOB_QUOTA_PAUSE_MS,
			   cls == RESEND_AUTH, &err);
	} else {
		log_debug("%s: '%s': reading import %s failed: %s; will ask again",
			  job->folder->conf->name, job->name, job->import_id, err.message);
	}
	api_call_free(call);
	if (js->draining) {
		job_release(job); /* state file holds the import id */
		goto out;
	}
	if (uv_now(js->loop) - job->follow_started_ms > JOB_FOLLOW_LIMIT_MS) {
		job_fail(job, STAGE_IMPORT, 0, NULL, "import %s did not finish within 24 hours",
			 job->import_id);
		goto out;
	}
	job_follow_later(job);
out:
	jobs_check_idle(js);
}

static void job_poll_cb(uv_timer_t *timer)
{
	struct job *job = timer->data;
	struct jobs *js = job->js;
	uint64_t now = uv_now(js->loop);
	uint64_t wait = js->paused_until > now ? js->paused_until - now : 0;

	if (js->draining) {
		job_release(job);
		jobs_check_idle(js);
		return;
	}
	if (wait == 0)
		wait = ratelimit_take(&js->rl, now);
	if (wait > 0) {
		uv_timer_start(&job->timer, job_poll_cb, wait, 0);
		return;
	}
	int r = api_get_import(js->api, job->import_id, job_poll_done_cb, job, &job->call);
	if (r < 0) {
		job_fail(job, STAGE_IMPORT, 0, NULL, "cannot ask for import '%s': %s",
			 job->import_id, strerror(-r));
		jobs_check_idle(js);
		return;
	}
	job->state = JOB_POLLING;
	js->polling++;
}

/* Asks again after a growing interval: imports take seconds to hours. */
static void job_follow_later(struct job *job)
{
	job_drop_fd(job);
	uint64_t d = job->follow_delay_ms ? job->follow_delay_ms * 2 : JOB_FOLLOW_FIRST_MS;

	if (d > JOB_FOLLOW_MAX_MS)
		d = JOB_FOLLOW_MAX_MS;
	job->follow_delay_ms = d;
	job->state = JOB_FOLLOWING;
	uv_timer_start(&job->timer, job_poll_cb, d, 0);
}

/* ---- entry points ----------------------------------------------------------------------- */

int jobs_submit(struct jobs *js, size_t folder, const char *name)
{
	struct folder_rt *f = &js->folders[folder];
	struct job *job;
	int r;

	if (js->draining)
		return -ECANCELED;
	/* Files already claimed (found in processing) go first. */
	if (js->holding >= js->max_holding || js->resume_head)
		return -EBUSY;
	if (!(js->flags & JOBS_DRY_RUN)) {
		r = fsops_claim(f->conf->inbox, f->processing, name);
		if (r < 0)
			return r;
	}
	job = job_new(js, folder, name);
	if (!job) {
		log_error("%s: out of memory for '%s'", f->conf->name, name);
		return -ENOMEM;
	}
	job->dry_run = js->flags & JOBS_DRY_RUN;
	job->claimed_at_ms = now_wall_ms();
	if (!job->dry_run)
		job_save_state(job);
	r = job_start_check(job);
	if (r < 0) {
		job_release(job);
		return r;
	}
	return 0;
}

/* Starts waiting resumed files while there are slots. */
static void jobs_admit(struct jobs *js)
{
	while (js->resume_head && js->holding < js->max_holding && !js->draining && !js->closing) {
		struct resume_entry *e = js->resume_head;
		struct folder_rt *f = &js->folders[e->folder];

		js->resume_head = e->next;
		if (!js->resume_head)
			js->resume_tail = NULL;
		struct job *job = job_new(js, e->folder, e->name);
		free(e);
		if (!job) {
			log_error("%s: out of memory resuming a file", f->conf->name);
			continue;
		}
		job->claimed_at_ms = now_wall_ms();
		job_load_state(job);
		log_info("%s: resuming '%s' left in processing%s%s", f->conf->name, job->name,
			 job->import_id[0] ? " (uploaded as import " : "",
			 job->import_id[0] ? job->import_id : "");
		if (job_start_check(job) < 0)
			job_release(job);
	}
}

int jobs_resume(struct jobs *js, size_t folder)
{
	struct folder_rt *f = &js->folders[folder];
	DIR *dir = opendir(f->processing);
	struct dirent *de;

	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		/* Our own files (state, temporaries) start with a dot; claimed files never do. */
		if (de->d_name[0] == '.')
			continue;
		size_t len = strlen(de->d_name);
		struct resume_entry *e = malloc(sizeof(*e) + len + 1);
		if (!e) {
			log_error("%s: out of memory listing '%s'", f->conf->name, f->processing);
			break;
		}
		e->next = NULL;
		e->folder = folder;
		memcpy(e->name, de->d_name, len + 1);
		if (js->resume_tail)
			js->resume_tail->next = e;
		else
			js->resume_head = e;
		js->resume_tail = e;
	}
	closedir(dir);
	jobs_admit(js);
	return 0;
}

static unsigned jobs_max_holding(const struct config *cfg)
{
	struct rlimit rl;
	uint64_t reserve = 32 + 2 * cfg->n_folders + 2 * cfg->api.max_in_flight;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= reserve + JOBS_MAX_HOLDING)
		return JOBS_MAX_HOLDING;
	if (rl.rlim_cur <= reserve + JOBS_MIN_HOLDING)
		return JOBS_MIN_HOLDING;
	return (unsigned)(rl.rlim_cur - reserve);
}

int jobs_new(uv_loop_t *loop, const struct config *cfg, struct api *api, unsigned flags,
	     const struct jobs_events *events, struct jobs **ret)
{
	struct jobs *js = calloc(1, sizeof(*js));
	int r = -ENOMEM;

	if (!js)
		return -ENOMEM;
	js->loop = loop;
	js->cfg = cfg;
	js->api = api;
	js->flags = flags;
	js->events = *events;
	js->n_folders = cfg->n_folders;
	js->folders = calloc(cfg->n_folders, sizeof(*js->folders));
	if (!js->folders || queue_init(&js->queue, cfg->n_folders) < 0)
		goto fail;
	ratelimit_init(&js->rl, cfg->api.requests_per_second, uv_now(loop));
	js->max_holding = jobs_max_holding(cfg);
	for (size_t i = 0; i < cfg->n_folders; i++) {
		struct folder_rt *f = &js->folders[i];
		f->conf = &cfg->folders[i];
		r = resend_fields_build(f->conf, &f->fields);
		if (r < 0)
			goto fail;
		if (flags & JOBS_DRY_RUN)
			continue;
		r = fsops_processing_dir(f->conf->inbox, &f->processing);
		if (r < 0) {
			log_error("%s: cannot set up the processing directory in '%s': %s",
				  f->conf->name, f->conf->inbox, strerror(-r));
			goto fail;
		}
	}
	uv_timer_init(loop, &js->pump_timer);
	uv_timer_init(loop, &js->drain_timer);
	js->pump_timer.data = js->drain_timer.data = js;
	js->open_handles = 2;
	*ret = js;
	return 0;
fail:
	if (!js->folders)
		js->n_folders = 0;
	jobs_free(js);
	return r;
}

size_t jobs_active(const struct jobs *js)
{
	return js->active;
}

unsigned jobs_failed_total(const struct jobs *js)
{
	return js->failed_total;
}

void jobs_log_status(const struct jobs *js)
{
	unsigned checking = 0, following = 0, waiting = 0;

	for (const struct job *j = js->all; j; j = j->next) {
		if (j->state == JOB_CHECKING)
			checking++;
		else if (j->state == JOB_FOLLOWING || j->state == JOB_POLLING)
			following++;
		else if (j->state == JOB_RETRY_WAIT)
			waiting++;
	}
	log_info("status: %zu files active: %u checking, %zu queued, %u uploading, %u waiting to "
		 "retry, %u following imports; %u done, %u failed since start%s",
		 js->active, checking, js->queue.count, js->uploading, waiting, following,
		 js->done_total, js->failed_total, js->paused_until ? "; uploads paused" : "");
	for (size_t i = 0; i < js->n_folders; i++)
		log_info("status: %s: %u done, %u failed", js->folders[i].conf->name,
			 js->folders[i].done, js->folders[i].failed);
}

static void jobs_drain_timeout_cb(uv_timer_t *timer)
{
	struct jobs *js = timer->data;
	struct job *j, *next;

	for (j = js->all; j; j = next) {
		next = j->next;
		if (j->state == JOB_UPLOADING || j->state == JOB_POLLING) {
			log_warning("%s: '%s': %s aborted at shutdown; it stays in processing for the "
				    "next start",
				    j->folder->conf->name, j->name,
				    j->state == JOB_UPLOADING ? "upload" : "import check");
			job_release(j);
		}
	}
	jobs_check_idle(js);
}

void jobs_drain(struct jobs *js, uint64_t timeout_ms, void (*done_cb)(void *data), void *data)
{
	struct job *j, *next;

	js->draining = true;
	js->drained_cb = done_cb;
	js->drained_data = data;
	uv_timer_stop(&js->pump_timer);
	/* What waits (queued, retry timers, follow timers) stays in processing: release it now.
	 * Checks in the thread pool are cancelled or release themselves when they return. */
	for (j = js->all; j; j = next) {
		next = j->next;
		if (j->state == JOB_CHECKING)
			uv_cancel((uv_req_t *)&j->work);
		else if (j->state != JOB_UPLOADING && j->state != JOB_POLLING)
			job_release(j);
	}
	if (js->uploading || js->polling)
		log_info("waiting up to %llu s for %u upload%s in flight",
			 (unsigned long long)(timeout_ms / 1000), js->uploading + js->polling,
			 js->uploading + js->polling == 1 ? "" : "s");
	uv_timer_start(&js->drain_timer, jobs_drain_timeout_cb, timeout_ms, 0);
	jobs_check_idle(js);
}

static void jobs_timer_closed_cb(uv_handle_t *handle)
{
	jobs_handle_closed(handle->data);
}

void jobs_close(struct jobs *js)
{
	/* Jobs still checking in the thread pool release themselves when they return; the folders
	 * they read stay until the last handle is closed. */
	js->closing = true;
	uv_close((uv_handle_t *)&js->pump_timer, jobs_timer_closed_cb);
	uv_close((uv_handle_t *)&js->drain_timer, jobs_timer_closed_cb);
}
