/* job: the engine itself, from engine_submit to done/ or failed/, driven as daemon.c drives it,
 * against a stand-in for the API module.
 *
 * The stand-in: rddcore is a static archive, so the api_* functions defined below are the ones
 * the engine (job.c, engine.c) links against and src/api.c is never pulled in (every function
 * of api.h is defined here, so that nothing can pull it in by accident). It records every call
 * (what it would have sent: file name, size, the bytes read through the descriptor with pread
 * as api.c reads them (a part: its head bytes from offset 0, then its rows from its offset),
 * idempotency key, form fields) and answers as the test scripted it, always from a uv_timer, never from inside
 * api_create_import/api_get_import. An answer may be held back until the test releases it, or
 * for ever (the engine then frees the call, which must cancel it).
 *
 * Everything else is real: a struct config from config_load, temporary directories under /tmp,
 * a uv loop, the disk thread, the thread pool. Each test ends by draining the engine, closing it
 * and running the loop until it returns; uv_loop_close() must then be 0 (a leaked handle fails
 * the test) and every API call the engine made must have been freed. A 20 s hang guard fails a
 * test that waits for something that never comes. Assertions run only between uv_run() calls,
 * never inside a callback, so a failure leaves the loop in a state teardown can still close.
 *
 * Not covered: illegal transitions of the state machine (job_states[]): no sequence of public
 * calls reaches one. Every test does check that the engine never logged one ("internal error"). */
#include "folder.h"
#include "engine.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "api.h"
#include "config.h"
#include "fsops.h"
#include "log.h"
#include "resend.h"
#include "staterec.h"

#define GUARD_MS 20000
#define FOLDER "news"
#define SEGMENT "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6"
#define TOPIC "059ac693-2fc8-4c13-8b27-01350d638a17"
#define CREATED_AT "2026-11-26T04:01:02.000Z"
#define COMPLETED_AT "2026-11-26T04:01:05.000Z"

/* %s: the temporary root, three times. Small retry delays; no client-side request ceiling. */
#define CONFIG_YAML                                                                                \
	"api:\n"                                                                                   \
	"  base_url: http://127.0.0.1:9\n"                                                         \
	"  max_in_flight: 2\n"                                                                     \
	"  requests_per_second: 0\n"                                                               \
	"retry:\n"                                                                                 \
	"  max_attempts: 3\n"                                                                      \
	"  initial_delay_ms: 10\n"                                                                 \
	"  max_delay_ms: 20\n"                                                                     \
	"defaults:\n"                                                                              \
	"  follow_import: false\n"                                                                 \
	"folders:\n"                                                                               \
	"  - name: " FOLDER "\n"                                                                   \
	"    inbox: %s/in\n"                                                                       \
	"    done: %s/done\n"                                                                      \
	"    failed: %s/failed\n"                                                                  \
	"    on_conflict: skip\n"                                                                  \
	"    column_map:\n"                                                                        \
	"      email: Email\n"                                                                     \
	"      first_name: First Name\n"                                                           \
	"    segments: [" SEGMENT "]\n"                                                            \
	"    topics:\n"                                                                            \
	"      - { id: " TOPIC ", subscription: opt_in }\n"

/* What the folder's settings become on the wire. */
#define WIRE_COLUMN_MAP "{\"email\":\"Email\",\"first_name\":\"First Name\"}"
#define WIRE_SEGMENTS "[{\"id\":\"" SEGMENT "\"}]"
#define WIRE_TOPICS "[{\"id\":\"" TOPIC "\",\"subscription\":\"opt_in\"}]"

static const char CSV_GOOD[] = "Email,First Name\n"
			       "ada@example.com,Ada\n"
			       "bob@example.com,Bob\n"
			       "cy@example.com,Cy\n";
static const char CSV_GOOD_2[] = "Email,First Name\n"
				 "dora@example.com,Dora\n";
static const char CSV_NO_EMAIL[] = "Name,First Name\n"
				   "ada@example.com,Ada\n";

/* ---- the stand-in for api.c ------------------------------------------------------------- */

enum call_kind { CALL_UPLOAD, CALL_POLL };

/* One scripted answer. An all-zero answer is never scripted: see script_upload(). */
struct answer {
	long status;               /* 0: no HTTP answer, TRANSPORT says why */
	const char *transport;
	const char *local;         /* status 0: the file could not be read whole (ours) */
	const char *body;          /* NULL: the usual body (see make_body) */
	const char *import_status; /* polls with BODY NULL: "queued", "in_progress", ... */
	const char *headers[3][2];
	uint64_t delay_ms;
	bool hold; /* no answer until release_call() (or ever) */
};

/* What the stand-in saw of one call; kept after the engine freed it. */
struct call_log {
	enum call_kind kind;
	char filename[256];
	char key[64];
	char import_id[64]; /* the GET's id, or the one the 201 handed out */
	char column_map[256], on_conflict[16], segments[128], topics[160];
	bool has_column_map, has_segments, has_topics;
	uint64_t size;       /* what was sent: HEAD + the part's bytes */
	uint64_t head, from; /* the part: HEAD bytes from 0, then the rest from FROM */
	/* Read through the descriptor when the call was made and again when it was answered. */
	bool read_ok, read_ok_at_answer;
	char sha256[65], sha256_at_answer[65];
	char *sent; /* what was read when the call was made (freed by teardown); NULL if unread */
	unsigned made_seq, answered_seq; /* the stand-in's order of events */
	uint64_t made_ms, answered_ms;
	long status; /* as answered */
	bool answered, freed;
	struct api_call *call; /* NULL once freed */
};

struct api {
	int unused;
};

struct api_call {
	size_t n;  /* F.calls[n] */
	int fd;
	uint64_t head, from, bytes;
	struct answer ans;
	char *body;
	api_done_cb cb;
	void *data;
	uv_timer_t timer;
	bool freed;
};

/* ---- the fixture ------------------------------------------------------------------------- */

#define MAX_CALLS 512
#define MAX_SCRIPT 16
#define MAX_EVENTS 512
#define MAX_PARKED 64
#define MAX_KEEP 64

enum ev_kind { EV_CLAIMED, EV_LEFT, EV_AUTH_FAILED };

struct event {
	enum ev_kind kind;
	char name[128];
	enum engine_claim how;
	unsigned seq;
	/* EV_LEFT: where the file was when the event came. */
	bool in_processing, in_done, in_failed;
};

static struct fixture {
	char root[64];
	char inbox[128], proc[160], done[128], failed[128];
	struct config *cfg;
	uv_loop_t loop;
	bool loop_open;
	uv_timer_t guard, sleeper;
	bool hung, slept;
	bool loop_stuck; /* a handle stayed open: the loop is abandoned */
	struct api api;
	struct engine *js;
	struct folder *dirs[4]; /* the folders' directories, as the daemon holds them */
	bool draining, drained;

	/* Events, in order; idle and capacity only counted (they come at most turns). */
	struct event events[MAX_EVENTS];
	size_t n_events;
	unsigned seq, n_idle, last_idle_seq, n_capacity;
	bool in_submit;
	unsigned events_in_submit, events_after_drain;

	/* Files the watch would hold back after ENGINE_LATER, offered again at `capacity`. */
	char *parked[MAX_PARKED];
	size_t n_parked;
	int successes_at_first_capacity; /* -1: no capacity event while something was parked */
	unsigned accepted_at_capacity;

	/* The stand-in. */
	struct call_log calls[MAX_CALLS];
	size_t n_calls, live_calls;
	unsigned stub_errors;
	unsigned stub_seq;
	struct answer upload_script[MAX_SCRIPT], poll_script[MAX_SCRIPT];
	size_t n_upload_script, n_poll_script, upload_next, poll_next;
	unsigned polls_in_progress; /* default polls: this many "in_progress" per import first */

	/* Logs. */
	FILE *log;
	char *log_buf;
	size_t log_len;
	uv_thread_t main_thread;

	/* Undone by teardown whatever happens. */
	bool immutable;
	char immutable_path[128];
	bool nofile_lowered;
	struct rlimit nofile;
	void *keep[MAX_KEEP];
	size_t n_keep;
	cJSON *json[MAX_KEEP];
	size_t n_json;
	bool finished, skipped;
} F;

static void *keep(void *p)
{
	if (!p)
		fail_msg("out of memory");
	if (F.n_keep == MAX_KEEP)
		fail_msg("test harness: too many kept allocations");
	F.keep[F.n_keep++] = p;
	return p;
}

/* Something a RUN_UNTIL condition may look at has changed: uv_run(UV_RUN_ONCE) returns at the
 * end of this iteration instead of blocking in its poll phase (a change made in the prepare
 * phase, where the engine ends its turns, would otherwise wait for the next event). */
static void wake(void)
{
	uv_thread_t self = uv_thread_self();

	if (F.loop_open && uv_thread_equal(&self, &F.main_thread))
		uv_stop(&F.loop);
}

/* ---- small helpers: files, hashes, logs -------------------------------------------------- */

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) || n != 32)
		abort();
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A part from FD with pread, as api.c streams it: HEAD bytes from offset 0, then BYTES from
 * offset FROM (a file not split: HEAD and FROM 0, BYTES the whole). What was read goes to *RET_SENT
 * (malloc'd, NUL-terminated) when RET_SENT is not NULL. */
static bool read_part_sha256(int fd, uint64_t head, uint64_t from, uint64_t bytes, char out[65],
			     char **ret_sent)
{
	unsigned char md[EVP_MAX_MD_SIZE], buf[65536];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint64_t size = head + bytes, off = 0;
	char *sent = ret_sent ? malloc((size_t)size + 1) : NULL;
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && (!ret_sent || sent);

	out[0] = '\0';
	while (ok && off < size) {
		uint64_t left = off < head ? head - off : size - off;
		uint64_t at = off < head ? off : from + (off - head);
		size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		ssize_t r = pread(fd, buf, want, (off_t)at);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			ok = false;
		else {
			EVP_DigestUpdate(ctx, buf, (size_t)r);
			if (sent)
				memcpy(sent + off, buf, (size_t)r);
			off += (uint64_t)r;
		}
	}
	if (ok && (!EVP_DigestFinal_ex(ctx, md, &n) || n != 32))
		ok = false;
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; ok && i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	if (ret_sent) {
		if (ok)
			sent[size] = '\0';
		else {
			free(sent);
			sent = NULL;
		}
		*ret_sent = sent;
	}
	return ok;
}

static void path_of(char *buf, size_t size, const char *dir, const char *name)
{
	if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size)
		fail_msg("path too long: %s/%s", dir, name);
}

static void put_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[PATH_MAX];
	FILE *f;

	path_of(path, sizeof(path), dir, name);
	f = fopen(path, "wb");
	if (!f)
		fail_msg("cannot create %s: %s", path, strerror(errno));
	if (len && fwrite(data, 1, len, f) != len)
		fail_msg("cannot write %s", path);
	if (fclose(f) != 0)
		fail_msg("cannot close %s", path);
}

static void put_csv(const char *name, const char *text)
{
	put_file(F.inbox, name, text, strlen(text));
}

/* DIR/NAME whole, NUL-terminated, malloc'd; NULL when it does not exist. */
static char *read_whole(const char *dir, const char *name, size_t *ret_len)
{
	char path[PATH_MAX];
	struct stat st;
	char *buf;
	FILE *f;
	size_t n;

	path_of(path, sizeof(path), dir, name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	if (fstat(fileno(f), &st) != 0)
		fail_msg("fstat %s: %s", path, strerror(errno));
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		fail_msg("out of memory");
	n = fread(buf, 1, (size_t)st.st_size, f);
	fclose(f);
	buf[n] = '\0';
	if (ret_len)
		*ret_len = n;
	return buf;
}

/* The same, freed by teardown. */
static char *slurp(const char *dir, const char *name, size_t *ret_len)
{
	char *buf = read_whole(dir, name, ret_len);

	return buf ? keep(buf) : NULL;
}

static void text_sha256(const char *text, char out[65])
{
	sha256_hex(text, strlen(text), out);
}

static bool exists_in(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	path_of(path, sizeof(path), dir, name);
	return lstat(path, &st) == 0;
}

/* Entries of DIR (dotfiles too) whose names start with PREFIX and end with SUFFIX. */
static size_t count_entries(const char *dir, const char *prefix, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0, pl = strlen(prefix), sl = strlen(suffix);

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (len >= pl + sl && strncmp(e->d_name, prefix, pl) == 0 &&
		    strcmp(e->d_name + len - sl, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* The one entry of DIR that starts with PREFIX and ends with SUFFIX (kept); fails otherwise. */
static char *the_entry(const char *dir, const char *prefix, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *found = NULL;
	size_t pl = strlen(prefix), sl = strlen(suffix);

	if (!d)
		fail_msg("cannot open %s", dir);
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len < pl + sl || strncmp(e->d_name, prefix, pl) != 0 ||
		    strcmp(e->d_name + len - sl, suffix) != 0)
			continue;
		if (found) {
			closedir(d);
			fail_msg("%s: more than one '%s*%s'", dir, prefix, suffix);
		}
		found = keep(strdup(e->d_name));
	}
	closedir(d);
	if (!found)
		fail_msg("%s: no '%s*%s'", dir, prefix, suffix);
	return found;
}

enum place { IN_INBOX = 1, IN_PROCESSING = 2, IN_DONE = 4, IN_FAILED = 8 };

static unsigned places_of(const char *name)
{
	return (exists_in(F.inbox, name) ? IN_INBOX : 0) |
	       (exists_in(F.proc, name) ? IN_PROCESSING : 0) |
	       (exists_in(F.done, name) ? IN_DONE : 0) |
	       (exists_in(F.failed, name) ? IN_FAILED : 0);
}

static const char *places_str(unsigned p)
{
	static char buf[64];

	snprintf(buf, sizeof(buf), "%s%s%s%s%s", p & IN_INBOX ? " inbox" : "",
		 p & IN_PROCESSING ? " processing" : "", p & IN_DONE ? " done" : "",
		 p & IN_FAILED ? " failed" : "", p ? "" : " nowhere");
	return buf;
}

#define assert_only_in(name, place) assert_only_in_at(__FILE__, __LINE__, name, place)
static void assert_only_in_at(const char *file, int line, const char *name, unsigned place)
{
	unsigned p = places_of(name);

	if (p != place)
		fail_msg("%s:%d: '%s' is in%s, expected only in%s", file, line, name, places_str(p),
			 places_str(place));
}

/* The log stream: every line is kept, and wakes the loop (a condition may wait for it). */
static ssize_t log_write_cb(void *cookie, const char *buf, size_t size)
{
	char *p = realloc(F.log_buf, F.log_len + size + 1);

	(void)cookie;
	if (!p)
		return -1;
	memcpy(p + F.log_len, buf, size);
	F.log_len += size;
	p[F.log_len] = '\0';
	F.log_buf = p;
	wake();
	return (ssize_t)size;
}

static const char *log_text(void)
{
	fflush(F.log);
	return F.log_buf ? F.log_buf : "";
}

static unsigned log_count(const char *needle)
{
	unsigned n = 0;

	for (const char *p = log_text(); (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void dump_log(void)
{
	print_message("---- log of this test ----\n%s---- end of log ----\n", log_text());
}

/* ---- reports and records ------------------------------------------------------------------ */

/* DIR/NAME.json parsed (freed by teardown). */
static cJSON *report(const char *dir, const char *name)
{
	char json_name[NAME_MAX + 1];
	char *text;
	cJSON *o;

	snprintf(json_name, sizeof(json_name), "%s.json", name);
	text = slurp(dir, json_name, NULL);
	if (!text)
		fail_msg("no report %s/%s", dir, json_name);
	o = cJSON_Parse(text);
	if (!cJSON_IsObject(o))
		fail_msg("report %s/%s is not a JSON object:\n%s", dir, json_name, text);
	if (F.n_json == MAX_KEEP)
		fail_msg("test harness: too many reports");
	F.json[F.n_json++] = o;
	return o;
}

static const cJSON *jget(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!v)
		fail_msg("report has no \"%s\"", key);
	return v;
}

static const char *jstr(const cJSON *o, const char *key)
{
	const cJSON *v = jget(o, key);

	if (!cJSON_IsString(v))
		fail_msg("report: \"%s\" is not a string", key);
	return v->valuestring;
}

static double jnum(const cJSON *o, const char *key)
{
	const cJSON *v = jget(o, key);

	if (!cJSON_IsNumber(v))
		fail_msg("report: \"%s\" is not a number", key);
	return v->valuedouble;
}

static bool jnull(const cJSON *o, const char *key)
{
	return cJSON_IsNull(jget(o, key));
}

static const cJSON *jobj(const cJSON *o, const char *key)
{
	const cJSON *v = jget(o, key);

	if (!cJSON_IsObject(v))
		fail_msg("report: \"%s\" is not an object", key);
	return v;
}

/* The state record of processing/NAME; false when there is none, or none whole: records
 * that need not survive the machine are rewritten in place by a disk thread, so a read while
 * the loop runs may see one being written (asserted after the loop has stopped, it is whole). */
static bool read_record(const char *name, struct staterec *ret)
{
	char rec[STATEREC_NAME_LEN + 1];
	size_t len;
	char *text;
	int r;

	staterec_name(rec, name);
	text = read_whole(F.proc, rec, &len);
	if (!text)
		return false;
	r = staterec_decode(text, len, ret);
	free(text);
	return r == 0;
}

static void write_record(const char *name, const struct staterec *s)
{
	char rec[STATEREC_NAME_LEN + 1];
	char *text = staterec_encode(name, s);

	assert_non_null(text);
	staterec_name(rec, name);
	put_file(F.proc, rec, text, strlen(text));
	cJSON_free(text);
}

/* ---- the stand-in's answers ---------------------------------------------------------------- */

static void script_upload(struct answer a)
{
	assert_true(F.n_upload_script < MAX_SCRIPT);
	F.upload_script[F.n_upload_script++] = a;
}

static void script_poll(struct answer a)
{
	assert_true(F.n_poll_script < MAX_SCRIPT);
	F.poll_script[F.n_poll_script++] = a;
}

/* Default polls: the first F.polls_in_progress answers for an import say in_progress. */
static const char *default_import_status(const char *id)
{
	unsigned seen = 0;

	for (size_t i = 0; i + 1 < F.n_calls; i++) {
		if (F.calls[i].kind == CALL_POLL && strcmp(F.calls[i].import_id, id) == 0)
			seen++;
	}
	return seen < F.polls_in_progress ? "in_progress" : "completed";
}

/* The body of ANS for call N, in the shapes the real API uses (tests/fake_resend). */
static char *make_body(size_t n, const struct answer *ans)
{
	const struct call_log *l = &F.calls[n];
	const char *st = ans->import_status;
	char *body = NULL;
	int r;

	if (ans->body || ans->status == 0)
		return strdup(ans->body ? ans->body : "");
	if (l->kind == CALL_UPLOAD)
		r = asprintf(&body, "{\"object\":\"contact_import\",\"id\":\"%s\"}", l->import_id);
	else if (!st)
		return make_body(n, &(struct answer){.status = ans->status,
						     .import_status = default_import_status(l->import_id)});
	else if (strcmp(st, "queued") == 0)
		r = asprintf(&body,
			     "{\"object\":\"contact_import\",\"id\":\"%s\",\"status\":\"queued\","
			     "\"created_at\":\"" CREATED_AT "\",\"completed_at\":null}",
			     l->import_id);
	else if (strcmp(st, "in_progress") == 0)
		r = asprintf(&body,
			     "{\"object\":\"contact_import\",\"id\":\"%s\",\"status\":\"in_progress\","
			     "\"created_at\":\"" CREATED_AT "\",\"completed_at\":null,\"counts\":"
			     "{\"total\":0,\"created\":0,\"updated\":0,\"skipped\":0,\"failed\":0}}",
			     l->import_id);
	else
		r = asprintf(&body,
			     "{\"object\":\"contact_import\",\"id\":\"%s\",\"status\":\"%s\","
			     "\"created_at\":\"" CREATED_AT "\",\"completed_at\":\"" COMPLETED_AT "\","
			     "\"counts\":{\"total\":3,\"created\":2,\"updated\":1,\"skipped\":0,"
			     "\"failed\":%d}}",
			     l->import_id, st, strcmp(st, "failed") == 0 ? 3 : 0);
	return r < 0 ? NULL : body;
}

static void stub_answer_cb(uv_timer_t *timer)
{
	struct api_call *call = timer->data;
	struct call_log *l = &F.calls[call->n];

	if (l->kind == CALL_UPLOAD)
		l->read_ok_at_answer = read_part_sha256(call->fd, call->head, call->from,
							call->bytes, l->sha256_at_answer, NULL);
	l->answered = true;
	l->answered_seq = ++F.stub_seq;
	l->answered_ms = uv_now(timer->loop);
	l->status = call->ans.status;
	call->cb(call, call->data); /* may free CALL */
	wake();
}

static void stub_closed_cb(uv_handle_t *handle)
{
	struct api_call *call = handle->data;

	free(call->body);
	free(call);
}

static void stub_arm(struct api_call *call)
{
	free(call->body);
	call->body = make_body(call->n, &call->ans);
	if (!call->body)
		abort();
	uv_timer_start(&call->timer, stub_answer_cb, call->ans.delay_ms, 0);
}

/* Answers held call N now, with ANS. */
static void release_call(size_t n, struct answer ans)
{
	struct api_call *call = F.calls[n].call;

	assert_true(n < F.n_calls);
	assert_non_null(call);
	assert_false(F.calls[n].answered);
	call->ans = ans;
	stub_arm(call);
}

static struct call_log *stub_new_call(enum call_kind kind, api_done_cb cb, void *data,
				      struct api_call **ret)
{
	struct api_call *call;
	struct call_log *l;

	if (F.n_calls == MAX_CALLS)
		return NULL;
	call = calloc(1, sizeof(*call));
	if (!call)
		return NULL;
	l = &F.calls[F.n_calls];
	memset(l, 0, sizeof(*l));
	l->kind = kind;
	l->made_ms = uv_now(&F.loop);
	l->made_seq = ++F.stub_seq;
	l->call = call;
	call->n = F.n_calls++;
	call->fd = -1;
	call->cb = cb;
	call->data = data;
	uv_timer_init(&F.loop, &call->timer);
	call->timer.data = call;
	F.live_calls++;
	*ret = call;
	return l;
}

static void copy_field(char *dst, size_t size, bool *present, const char *src)
{
	*present = src != NULL;
	snprintf(dst, size, "%s", src ? src : "");
}

int api_new(struct http *http, const struct config *cfg, struct api **ret)
{
	(void)http;
	(void)cfg;
	*ret = &F.api;
	return 0;
}

void api_free(struct api *api)
{
	(void)api;
}

int api_create_import(struct api *api, int fd, uint64_t head, uint64_t from, uint64_t bytes,
		      const char *filename, const struct resend_fields *fields,
		      const char *idempotency_key, api_done_cb cb, void *data,
		      struct api_call **ret)
{
	struct api_call *call;
	struct call_log *l;

	/* A file not split: the whole of FD. A part: its header, then rows after the header. */
	if (api != &F.api || (head == 0 && from != 0) || (head != 0 && from < head))
		F.stub_errors++;
	l = stub_new_call(CALL_UPLOAD, cb, data, &call);
	if (!l)
		return -ENOMEM;
	snprintf(l->filename, sizeof(l->filename), "%s", filename);
	snprintf(l->key, sizeof(l->key), "%s", idempotency_key ? idempotency_key : "");
	copy_field(l->column_map, sizeof(l->column_map), &l->has_column_map, fields->column_map);
	snprintf(l->on_conflict, sizeof(l->on_conflict), "%s",
		 fields->on_conflict ? fields->on_conflict : "");
	copy_field(l->segments, sizeof(l->segments), &l->has_segments, fields->segments);
	copy_field(l->topics, sizeof(l->topics), &l->has_topics, fields->topics);
	l->size = head + bytes;
	l->head = head;
	l->from = from;
	l->read_ok = read_part_sha256(fd, head, from, bytes, l->sha256,
				      l->size <= 4 * 1024 * 1024 ? &l->sent : NULL);
	snprintf(l->import_id, sizeof(l->import_id), "00000000-0000-4000-8000-%012zx",
		 call->n + 1);
	call->fd = fd;
	call->head = head;
	call->from = from;
	call->bytes = bytes;
	call->ans = F.upload_next < F.n_upload_script ? F.upload_script[F.upload_next++]
						      : (struct answer){.status = 201};
	if (!call->ans.hold)
		stub_arm(call);
	*ret = call;
	return 0;
}

int api_get_import(struct api *api, const char *id, api_done_cb cb, void *data,
		   struct api_call **ret)
{
	struct api_call *call;
	struct call_log *l;

	if (api != &F.api)
		F.stub_errors++;
	l = stub_new_call(CALL_POLL, cb, data, &call);
	if (!l)
		return -ENOMEM;
	snprintf(l->import_id, sizeof(l->import_id), "%s", id);
	call->ans = F.poll_next < F.n_poll_script ? F.poll_script[F.poll_next++]
						  : (struct answer){.status = 200};
	if (!call->ans.hold)
		stub_arm(call);
	*ret = call;
	return 0;
}

long api_call_status(const struct api_call *call)
{
	return call->ans.status;
}

const char *api_call_body(const struct api_call *call, size_t *ret_len)
{
	const char *b = call->body ? call->body : "";

	if (ret_len)
		*ret_len = strlen(b);
	return b;
}

const char *api_call_transport_error(const struct api_call *call)
{
	if (call->ans.status != 0)
		return NULL;
	if (call->ans.local)
		return call->ans.local;
	return call->ans.transport ? call->ans.transport : "no answer";
}

const char *api_call_local_error(const struct api_call *call)
{
	return call->ans.status == 0 ? call->ans.local : NULL;
}

const char *api_call_header(const struct api_call *call, const char *name)
{
	for (size_t i = 0; i < 3 && call->ans.headers[i][0]; i++) {
		if (strcasecmp(call->ans.headers[i][0], name) == 0)
			return call->ans.headers[i][1];
	}
	return NULL;
}

double api_call_seconds(const struct api_call *call)
{
	(void)call;
	return 0.001;
}

void api_call_free(struct api_call *call)
{
	if (!call)
		return;
	if (call->freed) {
		F.stub_errors++; /* freed twice */
		return;
	}
	call->freed = true;
	F.calls[call->n].freed = true;
	F.calls[call->n].call = NULL;
	F.live_calls--;
	uv_timer_stop(&call->timer);
	uv_close((uv_handle_t *)&call->timer, stub_closed_cb);
}

/* Call counts by kind. */
static size_t n_uploads(void)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_UPLOAD;
	return n;
}

static size_t n_polls(void)
{
	return F.n_calls - n_uploads();
}

/* The Ith upload (0-based). */
static const struct call_log *upload(size_t i)
{
	for (size_t k = 0; k < F.n_calls; k++) {
		if (F.calls[k].kind == CALL_UPLOAD && i-- == 0)
			return &F.calls[k];
	}
	fail_msg("there is no upload %zu (only %zu)", i, n_uploads());
	return NULL;
}

static size_t uploads_of(const char *filename)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_UPLOAD && strcmp(F.calls[i].filename, filename) == 0;
	return n;
}

static size_t polls_of(const char *import_id)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_POLL && strcmp(F.calls[i].import_id, import_id) == 0;
	return n;
}

static unsigned successful_uploads(void)
{
	unsigned n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_UPLOAD && F.calls[i].answered &&
		     F.calls[i].status / 100 == 2;
	return n;
}

/* The upload carried FILE's bytes (as they are in DIR now), its name, its key and the folder's
 * settings, and could still read them when its answer came. */
static void assert_upload_of(const struct call_log *l, const char *dir, const char *name,
			     const char *filename)
{
	char sha[65], key[37];
	size_t len;
	const char *text = slurp(dir, name, &len);

	assert_non_null(text);
	sha256_hex(text, len, sha);
	assert_int_equal(l->kind, CALL_UPLOAD);
	assert_string_equal(l->filename, filename);
	assert_int_equal(l->size, len);
	assert_true(l->read_ok);
	assert_string_equal(l->sha256, sha);
	if (l->answered) {
		assert_true(l->read_ok_at_answer);
		assert_string_equal(l->sha256_at_answer, sha);
	}
	resend_idempotency_key(key, FOLDER, sha);
	assert_string_equal(l->key, key);
	assert_true(l->has_column_map);
	assert_string_equal(l->column_map, WIRE_COLUMN_MAP);
	assert_string_equal(l->on_conflict, "skip");
	assert_true(l->has_segments);
	assert_string_equal(l->segments, WIRE_SEGMENTS);
	assert_true(l->has_topics);
	assert_string_equal(l->topics, WIRE_TOPICS);
}

/* ---- the engine's events, and driving it as daemon.c does ---------------------------------- */

static struct event *ev_add(enum ev_kind kind, const char *name)
{
	struct event *e;

	F.seq++;
	wake();
	if (F.in_submit)
		F.events_in_submit++;
	if (F.draining)
		F.events_after_drain++;
	if (F.n_events == MAX_EVENTS) {
		F.stub_errors++;
		return NULL;
	}
	e = &F.events[F.n_events++];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->seq = F.seq;
	snprintf(e->name, sizeof(e->name), "%s", name ? name : "");
	return e;
}

static size_t count_events(enum ev_kind kind, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_events; i++)
		n += F.events[i].kind == kind && (!name || strcmp(F.events[i].name, name) == 0);
	return n;
}

/* The Ith event of KIND for NAME (NULL: any name). */
static const struct event *event_of(enum ev_kind kind, const char *name, size_t i)
{
	for (size_t k = 0; k < F.n_events; k++) {
		const struct event *e = &F.events[k];
		if (e->kind == kind && (!name || strcmp(e->name, name) == 0) && i-- == 0)
			return e;
	}
	fail_msg("no such event (kind %d, '%s')", (int)kind, name ? name : "*");
	return NULL;
}

static void ev_claimed_cb(size_t folder, const char *name, enum engine_claim how, void *data)
{
	struct event *e = ev_add(EV_CLAIMED, name);

	(void)data;
	if (folder != 0)
		F.stub_errors++;
	if (e)
		e->how = how;
}

static void ev_left_cb(size_t folder, const char *name, void *data)
{
	struct event *e = ev_add(EV_LEFT, name);

	(void)data;
	if (folder != 0)
		F.stub_errors++;
	if (e) {
		e->in_processing = exists_in(F.proc, name);
		e->in_done = exists_in(F.done, name);
		e->in_failed = exists_in(F.failed, name);
	}
}

static enum engine_submit submit(const char *name);

/* As daemon_capacity_cb and the watch: parked files are offered until ENGINE_LATER. */
static void ev_capacity_cb(void *data)
{
	(void)data;
	wake();
	F.seq++;
	F.n_capacity++;
	if (F.in_submit)
		F.events_in_submit++;
	if (F.draining)
		F.events_after_drain++;
	if (F.n_parked > 0 && F.successes_at_first_capacity < 0)
		F.successes_at_first_capacity = (int)successful_uploads();
	while (F.n_parked > 0) {
		enum engine_submit r = submit(F.parked[0]);
		if (r != ENGINE_CLAIMING)
			break;
		free(F.parked[0]);
		memmove(F.parked, F.parked + 1, --F.n_parked * sizeof(F.parked[0]));
		F.accepted_at_capacity++;
	}
}

static void ev_idle_cb(void *data)
{
	(void)data;
	wake();
	F.seq++;
	F.n_idle++;
	F.last_idle_seq = F.seq;
	if (F.in_submit)
		F.events_in_submit++;
	if (F.draining)
		F.events_after_drain++;
}

static void ev_auth_failed_cb(void *data)
{
	(void)data;
	ev_add(EV_AUTH_FAILED, NULL);
}

/* As the watch offers a settled file: with its size and mtime from stat. */
static enum engine_submit submit(const char *name)
{
	char path[PATH_MAX];
	struct fsops_seen seen;
	struct stat st;
	enum engine_submit r;

	path_of(path, sizeof(path), F.inbox, name);
	if (stat(path, &st) != 0) {
		F.stub_errors++;
		return ENGINE_LATER;
	}
	seen.size = st.st_size;
	seen.mtime = st.st_mtim;
	F.in_submit = true;
	r = engine_submit(F.js, 0, name, &seen);
	F.in_submit = false;
	return r;
}

static void park(const char *name)
{
	assert_true(F.n_parked < MAX_PARKED);
	F.parked[F.n_parked++] = strdup(name);
}

static void guard_cb(uv_timer_t *timer)
{
	F.hung = true;
	uv_stop(timer->loop);
}

static void sleeper_cb(uv_timer_t *timer)
{
	(void)timer;
	F.slept = true;
	wake();
}

static void loop_open(void)
{
	assert_int_equal(uv_loop_init(&F.loop), 0);
	F.loop_open = true;
	uv_timer_init(&F.loop, &F.guard);
	uv_timer_init(&F.loop, &F.sleeper);
	F.hung = false;
	uv_timer_start(&F.guard, guard_cb, GUARD_MS, 0);
}

static void run_once_or_fail(const char *file, int line, const char *what)
{
	if (!F.hung)
		uv_run(&F.loop, UV_RUN_ONCE);
	if (F.hung) {
		dump_log();
		fail_msg("%s:%d: hang guard: after %d s still waiting for: %s", file, line,
			 GUARD_MS / 1000, what);
	}
}

#define RUN_UNTIL(cond)                                                                            \
	do {                                                                                       \
		while (!(cond))                                                                    \
			run_once_or_fail(__FILE__, __LINE__, #cond);                               \
	} while (0)

/* Lets the loop run for MS (loop time). */
static void run_for(uint64_t ms)
{
	F.slept = false;
	uv_timer_start(&F.sleeper, sleeper_cb, ms, 0);
	RUN_UNTIL(F.slept);
}

static void start(unsigned flags)
{
	const struct engine_events events = {
		.claimed = ev_claimed_cb,
		.left = ev_left_cb,
		.capacity = ev_capacity_cb,
		.idle = ev_idle_cb,
		.auth_failed = ev_auth_failed_cb,
	};
	int r;

	F.draining = F.drained = false;
	/* As daemon.c: the folders' directories first (their locks: one daemon per folder). */
	assert_true(F.cfg->n_folders <= 4);
	for (size_t i = 0; i < F.cfg->n_folders; i++) {
		assert_int_equal(folder_new(&F.cfg->folders[i], flags & ENGINE_DRY_RUN, &F.dirs[i]), 0);
		if (folder_open(F.dirs[i], &F.cfg->folders[i]) < 0) {
			dump_log();
			fail_msg("folder_open: %s", F.dirs[i]->reason);
		}
	}
	r = engine_new(&F.loop, F.cfg, F.dirs, &F.api, flags, &events, &F.js);
	if (r < 0) {
		dump_log();
		fail_msg("engine_new: %s", strerror(-r));
	}
	/* daemon.c resumes every folder, except in a dry run. */
	if (!(flags & ENGINE_DRY_RUN))
		engine_resume(F.js, 0);
}

/* As daemon_drained_cb: the engine is closed from inside its own callback. */
static void drained_cb(void *data)
{
	(void)data;
	F.drained = true;
	engine_close(F.js);
	F.js = NULL;
	/* As daemon.c: a stop closes the folders (their locks go). */
	for (size_t i = 0; i < 4; i++) {
		folder_free(F.dirs[i]);
		F.dirs[i] = NULL;
	}
	wake();
}

static void drain(uint64_t timeout_ms)
{
	F.draining = true;
	engine_drain(F.js, timeout_ms, drained_cb, NULL);
}

static void print_handle_cb(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (h != (uv_handle_t *)&F.guard)
		print_message("  open handle: %s%s\n", uv_handle_type_name(h->type),
			      uv_is_closing(h) ? " (closing)" : "");
}

/* Drains the engine (unless a drain is already under way), lets it close, and runs the loop
 * until it returns: then uv_loop_close() must be 0. */
static void stop_and_close_loop(void)
{
	int r;

	if (F.js && !F.draining)
		drain(1000);
	RUN_UNTIL(F.drained);
	/* The guard no longer keeps the loop alive, but still fires if something else does. */
	uv_close((uv_handle_t *)&F.sleeper, NULL);
	uv_timer_start(&F.guard, guard_cb, 10000, 0);
	uv_unref((uv_handle_t *)&F.guard);
	while (uv_run(&F.loop, UV_RUN_DEFAULT) != 0 && !F.hung)
		;
	if (F.hung) {
		F.loop_stuck = true;
		uv_walk(&F.loop, print_handle_cb, NULL);
		fail_msg("the loop did not end after engine_close: a handle is still open");
	}
	uv_close((uv_handle_t *)&F.guard, NULL);
	uv_run(&F.loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&F.loop);
	if (r != 0) {
		F.loop_stuck = true;
		uv_walk(&F.loop, print_handle_cb, NULL);
		fail_msg("uv_loop_close: %s", uv_strerror(r));
	}
	F.loop_open = false;
	if (F.live_calls != 0)
		fail_msg("%zu API call(s) never freed by the engine", F.live_calls);
}

/* A second start of the daemon on the same folders. */
static void restart(void)
{
	stop_and_close_loop();
	loop_open();
	start(0);
}

/* Every test ends here: what held for the whole run. */
static void finish(void)
{
	stop_and_close_loop();
	assert_int_equal(F.events_in_submit, 0);
	assert_int_equal(F.events_after_drain, 0);
	assert_int_equal(F.stub_errors, 0);
	if (log_count("internal error")) {
		dump_log();
		fail_msg("the engine logged an internal error (an illegal transition?)");
	}
	F.finished = true;
}

/* ---- FS_IMMUTABLE_FL: a directory even root cannot write into -------------------------- */

static int set_immutable(const char *path, bool on)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int flags, r = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) {
		r = -errno;
	} else {
		flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
		if (ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0)
			r = -errno;
	}
	close(fd);
	return r;
}

static void make_immutable(const char *path)
{
	int r;

	snprintf(F.immutable_path, sizeof(F.immutable_path), "%s", path);
	F.immutable = true; /* teardown clears it even if setting it half failed */
	r = set_immutable(path, true);
	if (r < 0) {
		F.immutable = false;
		F.skipped = true;
		print_message("skipped: chattr +i (FS_IOC_SETFLAGS) not possible on %s: %s\n", path,
			      strerror(-r));
		skip();
	}
}

static void clear_immutable(void)
{
	if (F.immutable && set_immutable(F.immutable_path, false) == 0)
		F.immutable = false;
	assert_false(F.immutable);
}

/* ---- setup and teardown --------------------------------------------------------------------- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct config_errors errs = {0};
	char yaml[2048], path[PATH_MAX];

	(void)state;
	memset(&F, 0, sizeof(F));
	F.successes_at_first_capacity = -1;
	strcpy(F.root, "/tmp/rdd-job-XXXXXX");
	if (!mkdtemp(F.root))
		return -1;
	snprintf(F.inbox, sizeof(F.inbox), "%s/in", F.root);
	snprintf(F.proc, sizeof(F.proc), "%s/" FSOPS_PROCESSING_DIR, F.inbox);
	snprintf(F.done, sizeof(F.done), "%s/done", F.root);
	snprintf(F.failed, sizeof(F.failed), "%s/failed", F.root);
	if (mkdir(F.inbox, 0755) || mkdir(F.done, 0755) || mkdir(F.failed, 0755))
		return -1;
	snprintf(yaml, sizeof(yaml), CONFIG_YAML, F.root, F.root, F.root);
	path_of(path, sizeof(path), F.root, "resend-dropd.yaml");
	put_file(F.root, "resend-dropd.yaml", yaml, strlen(yaml));
	if (config_load(path, CONFIG_LOAD_NO_API_KEY, &F.cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.count; i++)
			print_message("config: %s\n", errs.items[i]);
		config_errors_clear(&errs);
		return -1;
	}
	F.main_thread = uv_thread_self();
	F.log = fopencookie(NULL, "w", (cookie_io_functions_t){.write = log_write_cb});
	if (!F.log)
		return -1;
	log_set_stream(F.log);
	log_configure(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
	loop_open();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (!F.finished && !F.skipped)
		dump_log();
	/* A failed test may leave the engine running: drain it at once, let it close, and close
	 * the loop; whatever cannot be closed within the guard is abandoned, never waited for. */
	if (F.loop_open && !F.loop_stuck && !uv_is_closing((uv_handle_t *)&F.guard)) {
		F.hung = false;
		uv_ref((uv_handle_t *)&F.guard);
		uv_timer_start(&F.guard, guard_cb, 10000, 0);
		if (F.js && !F.draining)
			drain(0);
		while (F.js && !F.hung)
			uv_run(&F.loop, UV_RUN_ONCE);
		if (!F.js && !F.hung) {
			if (!uv_is_closing((uv_handle_t *)&F.sleeper))
				uv_close((uv_handle_t *)&F.sleeper, NULL);
			uv_unref((uv_handle_t *)&F.guard);
			uv_run(&F.loop, UV_RUN_DEFAULT);
		}
		if (!F.hung) {
			uv_close((uv_handle_t *)&F.guard, NULL);
			uv_run(&F.loop, UV_RUN_DEFAULT);
		}
	}
	if (F.loop_open && (F.loop_stuck || F.hung || uv_loop_close(&F.loop) != 0))
		print_message("teardown: the loop could not be closed; its memory is lost\n");
	if (F.immutable && set_immutable(F.immutable_path, false) != 0)
		print_message("teardown: cannot clear the immutable flag of %s: run chattr -i %s\n",
			      F.immutable_path, F.immutable_path);
	if (F.nofile_lowered && setrlimit(RLIMIT_NOFILE, &F.nofile) != 0)
		print_message("teardown: cannot restore RLIMIT_NOFILE\n");
	for (size_t i = 0; i < 4; i++) {
		folder_free(F.dirs[i]);
		F.dirs[i] = NULL;
	}
	log_set_stream(NULL);
	if (F.log)
		fclose(F.log);
	free(F.log_buf);
	for (size_t i = 0; i < F.n_parked; i++)
		free(F.parked[i]);
	for (size_t i = 0; i < F.n_keep; i++)
		free(F.keep[i]);
	for (size_t i = 0; i < F.n_json; i++)
		cJSON_Delete(F.json[i]);
	for (size_t i = 0; i < F.n_calls; i++)
		free(F.calls[i].sent);
	config_free(F.cfg);
	if (!F.immutable)
		nftw(F.root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* ---- 1. a good file ------------------------------------------------------------------------ */

static void test_good_file(void **state)
{
	char sha[65];
	const struct event *claimed, *left;
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	claimed = event_of(EV_CLAIMED, "x.csv", 0);
	assert_int_equal(claimed->how, ENGINE_CLAIMED);
	assert_int_equal(count_events(EV_CLAIMED, NULL), 1);

	assert_int_equal(F.n_calls, 1);
	assert_upload_of(upload(0), F.done, "x.csv", "x.csv");
	assert_true(upload(0)->freed);

	assert_only_in("x.csv", IN_DONE);
	assert_string_equal(slurp(F.done, "x.csv", NULL), CSV_GOOD);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "folder"), FOLDER);
	assert_string_equal(jstr(rep, "file"), "x.csv");
	assert_int_equal(jnum(rep, "bytes"), strlen(CSV_GOOD));
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "http_status"), 201);
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_true(jnull(rep, "error"));
	assert_true(jnull(rep, "import")); /* not followed */
	jstr(rep, "claimed_at");
	jstr(rep, "uploaded_at");
	jstr(rep, "finished_at");

	/* `left` comes once the file is in done/: a namesake may go now. */
	left = event_of(EV_LEFT, "x.csv", 0);
	assert_true(left->in_done);
	assert_false(left->in_processing);
	assert_true(left->seq > claimed->seq);
	/* Nothing left behind in processing: no file, no record, no temporary file. */
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(count_entries(F.done, "", ""), 2);
	assert_int_equal(count_entries(F.failed, "", ""), 0);

	RUN_UNTIL(F.last_idle_seq > left->seq);
	assert_int_equal(engine_active(F.js), 0);
	assert_int_equal(engine_failed_total(F.js), 0);
	assert_int_equal(log_count("'x.csv' uploaded, import "), 1);
	finish();
}

/* ---- 2. following the import ---------------------------------------------------------------- */

static void test_follow_import(void **state)
{
	struct staterec rec;
	char sha[65];
	const cJSON *rep, *imp, *counts;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	script_poll((struct answer){.status = 200, .import_status = "queued"});
	script_poll((struct answer){.status = 200, .import_status = "in_progress"});
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);

	/* While it is followed, the record beside it says which import it became. */
	RUN_UNTIL(n_polls() >= 1);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_true(read_record("x.csv", &rec));
	assert_string_equal(rec.import_id, upload(0)->import_id);
	assert_string_equal(rec.sha256, sha);
	assert_int_equal(rec.attempts, 1);
	assert_true(rec.uploaded_at_ms > 0);
	assert_true(rec.claimed_at_ms > 0);

	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(n_polls(), 3);
	assert_int_equal(polls_of(upload(0)->import_id), 3);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	imp = jobj(rep, "import");
	assert_string_equal(jstr(imp, "status"), "completed");
	assert_string_equal(jstr(imp, "completed_at"), COMPLETED_AT);
	counts = jobj(imp, "counts");
	assert_int_equal(jnum(counts, "total"), 3);
	assert_int_equal(jnum(counts, "created"), 2);
	assert_int_equal(jnum(counts, "updated"), 1);
	assert_int_equal(jnum(counts, "skipped"), 0);
	assert_int_equal(jnum(counts, "failed"), 0);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(log_count("'x.csv' imported, import "), 1);
	finish();
}

/* Resend says the import failed: failed/ at stage import, with the counts. */
static void test_follow_import_failed(void **state)
{
	const cJSON *rep, *err;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	script_poll((struct answer){.status = 200, .import_status = "failed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(n_polls(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "failed");
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "import");
	assert_non_null(strstr(jstr(err, "message"), upload(0)->import_id));
	assert_int_equal(engine_failed_total(F.js), 1);
	finish();
}

/* ---- 3. a file that fails its check ---------------------------------------------------------- */

static void test_header_lacks_mapped_column(void **state)
{
	char sha[65];
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_NO_EMAIL);
	text_sha256(CSV_NO_EMAIL, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_FAILED);
	assert_string_equal(slurp(F.failed, "x.csv", NULL), CSV_NO_EMAIL);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "attempts"), 0);
	assert_true(jnull(rep, "http_status"));
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	assert_true(jnull(err, "http_status"));
	assert_non_null(strstr(jstr(err, "message"), "'Email'"));
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(engine_failed_total(F.js), 1);
	finish();
}

/* ---- 4. a retryable failure, then success ---------------------------------------------------- */

static void test_retry_then_success(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 500,
				      .body = "{\"statusCode\":500,\"name\":\"application_error\","
					      "\"message\":\"Internal server error\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 2);
	assert_upload_of(upload(0), F.done, "x.csv", "x.csv");
	assert_upload_of(upload(1), F.done, "x.csv", "x.csv"); /* same key: the same upload */
	assert_int_equal(upload(0)->status, 500);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_int_equal(jnum(rep, "attempts"), 2);
	assert_int_equal(jnum(rep, "http_status"), 201);
	assert_string_equal(jstr(rep, "import_id"), upload(1)->import_id);
	assert_int_equal(log_count("'x.csv' upload attempt 1 failed: Internal server error"), 1);
	finish();
}

/* ---- 5. retries spent -------------------------------------------------------------------------- */

static void test_retries_spent(void **state)
{
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	/* An outage first, whose retry-after must hold the next attempt back for a second. */
	script_upload((struct answer){.status = 503,
				      .body = "<html>Service Unavailable</html>",
				      .headers = {{"retry-after", "1"}}});
	script_upload((struct answer){.status = 503, .body = "<html>Service Unavailable</html>"});
	script_upload((struct answer){
		.status = 0,
		.transport = "Failed to connect to 127.0.0.1 port 9: Connection refused"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_true(upload(1)->made_ms >= upload(0)->answered_ms + 1000);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_int_equal(jnum(rep, "attempts"), 3);
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_true(jnull(err, "http_status"));
	assert_non_null(strstr(jstr(err, "message"), "Connection refused"));
	assert_non_null(strstr(jstr(err, "message"), "gave up after 3 attempts"));
	finish();
}

/* ---- 5b. the rate limit: waits, never attempts --------------------------------------------- */

#define RATE_LIMITED_BODY                                                                          \
	"{\"statusCode\":429,\"name\":\"rate_limit_exceeded\",\"message\":\"Too many requests. "   \
	"You can only make 2 requests per second.\"}"

/* More 429s than max_attempts (3), then success: the file is done after one attempt, each
 * request went no sooner than the retry-after of the refusal before it, and the report counts
 * the waits apart. */
static void test_rate_limit_is_a_wait(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	for (int i = 0; i < 5; i++)
		script_upload((struct answer){.status = 429,
					      .body = RATE_LIMITED_BODY,
					      .headers = {{"retry-after", "0.2"},
							  {"ratelimit-remaining", "0"}}});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 6);
	for (size_t i = 1; i < 6; i++)
		assert_true(upload(i)->made_ms >= upload(i - 1)->answered_ms + 200);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "rate_limited"), 5);
	assert_int_equal(log_count("'x.csv' upload attempt"), 0);
	/* Said when the row of refusals began, not for every refusal. */
	assert_int_equal(log_count("Resend's rate limit was reached (HTTP 429, retry-after 0.2)"), 1);
	assert_int_equal(log_count("1 attempt, 5 waits for the rate limit"), 1);
	finish();
}

/* A 429 that names no time (a proxy's) still holds every request back: a second, then two. */
static void test_rate_limit_without_headers_backs_off(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 429, .body = "Too Many Requests"});
	script_upload((struct answer){.status = 429, .body = "Too Many Requests"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_true(upload(1)->made_ms >= upload(0)->answered_ms + 1000);
	assert_true(upload(2)->made_ms >= upload(1)->answered_ms + 2000);
	rep = report(F.done, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "rate_limited"), 2);
	finish();
}

/* Between attempts that do count, the waits do not: two 500s and three 429s with
 * max_attempts 3 still end in done, after 3 attempts. */
static void test_rate_limit_between_attempts(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 500, .body = "{\"name\":\"application_error\"}"});
	for (int i = 0; i < 3; i++)
		script_upload((struct answer){.status = 429,
					      .body = RATE_LIMITED_BODY,
					      .headers = {{"retry-after", "0.05"}}});
	script_upload((struct answer){.status = 500, .body = "{\"name\":\"application_error\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 6);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 3);
	assert_int_equal(jnum(rep, "rate_limited"), 3);
	finish();
}

/* A 429 to a poll: asked again after the wait; the import's end is reported all the same. */
static void test_rate_limit_on_poll(void **state)
{
	const cJSON *rep;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	script_poll((struct answer){.status = 429,
				    .body = RATE_LIMITED_BODY,
				    .headers = {{"retry-after", "0.3"}}});
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_polls(), 2);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "rate_limited"), 1);
	finish();
}

/* ---- 6. a permanent refusal --------------------------------------------------------------------- */

static void test_permanent_refusal(void **state)
{
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){
		.status = 422,
		.body = "{\"statusCode\":422,\"name\":\"validation_error\",\"message\":\"Invalid "
			"`column_map`: column `Email` not found in the CSV header.\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "http_status"), 422);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_int_equal(jnum(err, "http_status"), 422);
	assert_string_equal(jstr(err, "name"), "validation_error");
	assert_string_equal(jstr(err, "message"),
			    "Invalid `column_map`: column `Email` not found in the CSV header.");
	finish();
}

/* ---- 7. the API key is refused ------------------------------------------------------------------ */

static void test_key_refused_pauses(void **state)
{
	struct staterec rec;
	const char *first;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	script_upload((struct answer){
		.status = 401,
		.body = "{\"name\":\"validation_error\",\"message\":\"API key is invalid\"}"});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_AUTH_FAILED, NULL) == 1);
	first = upload(0)->filename;
	/* The refused attempt is not the file's fault: its record forgets it again. */
	RUN_UNTIL(read_record(first, &rec) && rec.attempts == 0);

	/* Uploads pause: neither file is tried again nor the other one sent. */
	run_for(1500);
	assert_int_equal(F.n_calls, 1);
	assert_int_equal(count_events(EV_AUTH_FAILED, NULL), 1);
	assert_only_in("a.csv", IN_PROCESSING);
	assert_only_in("b.csv", IN_PROCESSING);
	assert_int_equal(count_entries(F.failed, "", ""), 0);
	assert_int_equal(count_entries(F.done, "", ""), 0);
	assert_true(read_record(first, &rec));
	assert_int_equal(rec.attempts, 0);
	assert_int_equal(log_count("all uploads paused"), 1);
	assert_int_equal(engine_failed_total(F.js), 0);

	/* A drain releases both at once: they wait in processing for the next start. */
	drain(60000);
	RUN_UNTIL(F.drained);
	assert_only_in("a.csv", IN_PROCESSING);
	assert_only_in("b.csv", IN_PROCESSING);
	assert_true(read_record(first, &rec));
	assert_int_equal(rec.attempts, 0);

	/* With a good key the next start uploads both; the refusal is in no report. */
	restart();
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_only_in("a.csv", IN_DONE);
	assert_only_in("b.csv", IN_DONE);
	assert_int_equal(uploads_of(first), 2);
	assert_int_equal(jnum(report(F.done, first), "attempts"), 1);
	finish();
}

/* ---- 8. a namesake while the file is in processing ----------------------------------------- */

static void test_name_busy(void **state)
{
	const char *second;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);

	/* A new x.csv lands in the inbox while the first is being uploaded. */
	put_csv("x.csv", CSV_GOOD_2);
	assert_int_equal(submit("x.csv"), ENGINE_NAME_BUSY);
	assert_int_equal(count_events(EV_LEFT, "x.csv"), 0);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_string_equal(slurp(F.done, "x.csv", NULL), CSV_GOOD);
	assert_string_equal(slurp(F.inbox, "x.csv", NULL), CSV_GOOD_2);

	/* Now it may go; done/ already has an x.csv, so it gets a timestamped name. */
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 2);
	second = the_entry(F.done, "x.2", ".csv");
	assert_int_equal(n_uploads(), 2);
	assert_upload_of(upload(1), F.done, second, "x.csv");
	assert_string_equal(slurp(F.done, second, NULL), CSV_GOOD_2);
	assert_string_equal(jstr(report(F.done, second), "outcome"), "done");
	assert_string_equal(jstr(report(F.done, second), "file"), "x.csv");
	assert_int_equal(count_entries(F.done, "", ""), 4);
	assert_false(exists_in(F.inbox, "x.csv"));
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* A namesake nobody knew of is found in processing at the claim (left there by an earlier run,
 * say): the claim says ENGINE_BUSY, the one in processing goes first, then `left`. */
static void test_namesake_found_at_claim(void **state)
{
	const char *second;

	(void)state;
	assert_int_equal(mkdir(F.proc, 0700), 0);
	put_file(F.proc, "y.csv", CSV_GOOD, strlen(CSV_GOOD));
	put_csv("y.csv", CSV_GOOD_2);
	start(0);
	/* Offered before the resume has listed processing. */
	assert_int_equal(submit("y.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_CLAIMED, "y.csv") == 1);
	assert_int_equal(event_of(EV_CLAIMED, "y.csv", 0)->how, ENGINE_BUSY);
	RUN_UNTIL(count_events(EV_LEFT, "y.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_string_equal(slurp(F.done, "y.csv", NULL), CSV_GOOD);
	assert_string_equal(slurp(F.inbox, "y.csv", NULL), CSV_GOOD_2);

	assert_int_equal(submit("y.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "y.csv") == 2);
	assert_int_equal(event_of(EV_CLAIMED, "y.csv", 1)->how, ENGINE_CLAIMED);
	second = the_entry(F.done, "y.2", ".csv");
	assert_string_equal(slurp(F.done, second, NULL), CSV_GOOD_2);
	assert_int_equal(n_uploads(), 2);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* ---- 9. more files than slots -------------------------------------------------------------- */

static void test_capacity(void **state)
{
	enum { N_FILES = 10 };
	struct rlimit rl;
	unsigned reserve, slots, accepted = 0;
	char name[32];

	(void)state;
	/* the engine's max_holding: 256, lowered to the soft RLIMIT_NOFILE minus a reserve of
	 * 32 + 5 per folder + 2 per upload in flight, never below 4. */
	F.cfg->api.max_in_flight = 1;
	reserve = 32 + 5 * 1 + 2 * 1;
	slots = 6;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < reserve + slots)
		fail_msg("RLIMIT_NOFILE is already below %u", reserve + slots);
	F.nofile = rl;
	F.nofile_lowered = true;
	rl.rlim_cur = reserve + slots;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);

	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%02d.csv", i);
		put_csv(name, CSV_GOOD);
	}
	script_upload((struct answer){.status = 201, .delay_ms = 50});
	start(0);
	RUN_UNTIL(F.n_capacity > 0); /* the resume listed processing: empty */
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%02d.csv", i);
		if (F.n_parked == 0) {
			enum engine_submit r = submit(name);
			if (r == ENGINE_CLAIMING) {
				accepted++;
				continue;
			}
			assert_int_equal(r, ENGINE_LATER);
		}
		park(name); /* the watch holds it back until `capacity` */
	}
	assert_int_equal(accepted, slots);
	assert_int_equal(F.n_parked, N_FILES - slots);

	RUN_UNTIL(F.n_parked == 0);
	/* The first slot freed when an upload succeeded (the descriptor is closed then). */
	assert_true(F.successes_at_first_capacity >= 1);
	assert_int_equal(F.accepted_at_capacity, N_FILES - slots);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == N_FILES);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%02d.csv", i);
		assert_only_in(name, IN_DONE);
		assert_int_equal(uploads_of(name), 1);
		assert_string_equal(jstr(report(F.done, name), "outcome"), "done");
	}
	assert_int_equal(n_uploads(), N_FILES);
	assert_int_equal(log_count("Too many open files"), 0);
	finish();
}

/* ---- 10. resuming what an earlier run left in processing -------------------------------------- */

static void test_resume(void **state)
{
	static const char followed_id[] = "4f6c3b9e-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	static const char stale_id[] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
	struct staterec rec = {.attempts = 1,
			       .claimed_at_ms = 1795665662000,
			       .uploaded_at_ms = 1795665663000};
	const cJSON *rep;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	F.polls_in_progress = 1; /* every import is in progress once, then completed */
	assert_int_equal(mkdir(F.proc, 0700), 0);
	/* Claimed, never uploaded. */
	put_file(F.proc, "plain.csv", CSV_GOOD, strlen(CSV_GOOD));
	/* Uploaded as FOLLOWED_ID: only to be followed. */
	put_file(F.proc, "followed.csv", CSV_GOOD_2, strlen(CSV_GOOD_2));
	text_sha256(CSV_GOOD_2, rec.sha256);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", followed_id);
	write_record("followed.csv", &rec);
	/* A record left by an earlier stale.csv of other content: not this file's. */
	put_file(F.proc, "stale.csv", CSV_GOOD, strlen(CSV_GOOD));
	text_sha256(CSV_GOOD_2, rec.sha256);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", stale_id);
	write_record("stale.csv", &rec);

	start(0);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);
	/* The followed file first: its import was still in progress at the first look. */
	if (places_of("followed.csv") == IN_FAILED)
		fail_msg("followed.csv failed: %s",
			 jstr(jobj(report(F.failed, "followed.csv"), "error"), "message"));
	assert_only_in("followed.csv", IN_DONE);
	rep = report(F.done, "followed.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), followed_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_int_equal(count_events(EV_CLAIMED, NULL), 0);
	assert_int_equal(n_uploads(), 2);
	assert_int_equal(uploads_of("plain.csv"), 1);
	assert_int_equal(uploads_of("stale.csv"), 1);
	assert_int_equal(uploads_of("followed.csv"), 0);
	assert_int_equal(polls_of(followed_id), 2);
	assert_int_equal(polls_of(stale_id), 0);

	for (size_t i = 0; i < 2; i++) {
		const struct call_log *l = upload(i);
		assert_upload_of(l, F.done, l->filename, l->filename);
		assert_int_equal(polls_of(l->import_id), 2);
		rep = report(F.done, l->filename);
		assert_string_equal(jstr(rep, "outcome"), "done");
		assert_string_equal(jstr(rep, "import_id"), l->import_id);
		assert_int_equal(jnum(rep, "attempts"), 1);
		assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	}
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(log_count("ignoring a state record left by an earlier file"), 1);
	finish();
}

/* ---- 11. drain ------------------------------------------------------------------------------- */

/* An upload that never answers is aborted after the timeout; its file waits in processing and
 * the next start uploads it again. */
static void test_drain_aborts_upload(void **state)
{
	struct staterec rec;
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	drain(200);
	RUN_UNTIL(F.drained);
	assert_true(upload(0)->freed);
	assert_false(upload(0)->answered);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_true(read_record("x.csv", &rec));
	assert_int_equal(rec.attempts, 1);
	assert_int_equal(log_count("'x.csv': upload aborted at shutdown"), 1);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 2);
	assert_upload_of(upload(1), F.done, "x.csv", "x.csv");
	assert_string_equal(upload(1)->key, upload(0)->key);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_int_equal(jnum(rep, "attempts"), 2);
	finish();
}

/* What only waits (queued, waiting to retry) is released at once; an upload in flight may
 * still finish, and its file reaches done/. */
static void test_drain_releases_waiting(void **state)
{
	struct staterec rec;
	const char *retried, *held, *queued = NULL;
	const char *names[] = {"a.csv", "b.csv", "c.csv"};

	(void)state;
	F.cfg->api.max_in_flight = 1;
	F.cfg->retry.initial_delay_ms = 60000;
	F.cfg->retry.max_delay_ms = 60000;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	put_csv("c.csv", CSV_GOOD);
	script_upload((struct answer){.status = 503, .body = "{\"message\":\"busy\"}"});
	script_upload((struct answer){.hold = true});
	start(0);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(submit(names[i]), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 2);
	retried = upload(0)->filename;
	held = upload(1)->filename;
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(names[i], retried) != 0 && strcmp(names[i], held) != 0)
			queued = names[i];
	}
	assert_non_null(queued);
	assert_int_equal(engine_active(F.js), 3);

	drain(60000);
	RUN_UNTIL(engine_active(F.js) == 1);
	assert_false(upload(1)->answered); /* released before the upload in flight ended */
	run_for(100);
	assert_int_equal(F.n_calls, 2);
	release_call(1, (struct answer){.status = 201});
	RUN_UNTIL(F.drained);

	assert_int_equal(F.n_calls, 2);
	assert_only_in(held, IN_DONE);
	assert_string_equal(jstr(report(F.done, held), "outcome"), "done");
	assert_only_in(retried, IN_PROCESSING);
	assert_true(read_record(retried, &rec));
	assert_int_equal(rec.attempts, 1);
	assert_only_in(queued, IN_PROCESSING);
	finish();
}

/* A file released by a drain while it only waited for a slot was never uploaded: after the
 * next start its report counts the uploads that were made, not one more. */
static void test_drain_released_queued_keeps_attempts(void **state)
{
	struct staterec rec;
	const char *queued;
	const cJSON *rep;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	queued = strcmp(upload(0)->filename, "a.csv") == 0 ? "b.csv" : "a.csv";
	RUN_UNTIL(read_record(queued, &rec)); /* it waits in the queue now */
	drain(60000);
	RUN_UNTIL(engine_active(F.js) == 1);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(F.drained);
	assert_only_in(queued, IN_PROCESSING);
	assert_int_equal(uploads_of(queued), 0);
	assert_true(read_record(queued, &rec));
	print_message("record of the released %s: attempts %u (uploads made: 0)\n", queued,
		      rec.attempts);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, queued) == 1);
	assert_only_in(queued, IN_DONE);
	assert_int_equal(uploads_of(queued), 1);
	rep = report(F.done, queued);
	assert_string_equal(jstr(rep, "outcome"), "done");
	if (jnum(rep, "attempts") != 1)
		fail_msg("%s: report says %.0f attempts, but it was uploaded once: the drain left "
			 "an attempt on its record that was never made",
			 queued, jnum(rep, "attempts"));
	finish();
}

/* A drain while many files are being checked (hashed): every file ends up in exactly one
 * place, none fails, and the next start takes the rest to done/ with one upload each. */
static void test_drain_during_checks(void **state)
{
	enum { N_FILES = 32, FILE_BYTES = 1536 * 1024 };
	char name[32];
	char *big = keep(malloc(FILE_BYTES));
	size_t in_processing = 0, in_done = 0, len = 0;

	(void)state;
	/* Each file its own first row (fixed width), the same rows after it. */
	len = (size_t)snprintf(big, FILE_BYTES, "Email,First Name\nf00@example.com,First\n");
	while (len + 64 < FILE_BYTES)
		len += (size_t)snprintf(big + len, FILE_BYTES - len, "user%zu@example.com,U\n", len);
	for (int i = 0; i < N_FILES; i++) {
		char row[4];
		snprintf(name, sizeof(name), "big%02d.csv", i);
		snprintf(row, sizeof(row), "%02d", i);
		memcpy(big + strlen("Email,First Name\nf"), row, 2);
		put_file(F.inbox, name, big, len);
	}
	start(0);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "big%02d.csv", i);
		assert_int_equal(submit(name), ENGINE_CLAIMING);
	}
	/* The first check has ended; the others are hashing or waiting for a thread. */
	RUN_UNTIL(n_uploads() >= 1);
	drain(5000);
	RUN_UNTIL(F.drained);
	for (int i = 0; i < N_FILES; i++) {
		unsigned p;
		snprintf(name, sizeof(name), "big%02d.csv", i);
		p = places_of(name);
		if (p != IN_PROCESSING && p != IN_DONE && p != IN_INBOX)
			fail_msg("'%s' is in%s after the drain", name, places_str(p));
		in_processing += p == IN_PROCESSING;
		in_done += p == IN_DONE;
		assert_int_equal(uploads_of(name), p == IN_DONE);
	}
	print_message("drain during checks: %zu in processing, %zu done\n", in_processing,
		      in_done);
	assert_int_equal(count_entries(F.failed, "", ""), 0);
	assert_int_equal(count_entries(F.proc, ".", ""), count_entries(F.proc, ".state-", ""));

	restart();
	RUN_UNTIL(count_events(EV_LEFT, NULL) == in_processing);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "big%02d.csv", i);
		if (places_of(name) == IN_INBOX)
			continue; /* never claimed: the watch offers it again */
		assert_only_in(name, IN_DONE);
		assert_int_equal(uploads_of(name), 1);
	}
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* ---- 12. a temporary failure to move to done/ ----------------------------------------------- */

static void test_move_to_done_retried(void **state)
{
	const char *line;
	unsigned failures = 0;
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	start(0);
	make_immutable(F.done);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(log_count("'x.csv' could not be moved to") == 1);
	assert_only_in("x.csv", IN_PROCESSING);
	/* Still refused for a while: the move is tried again, logged once. */
	run_for(2500);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_int_equal(log_count("could not be moved"), 1);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	clear_immutable();

	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(log_count("could not be moved"), 1);
	line = strstr(log_text(), "'x.csv' could be moved after ");
	assert_non_null(line);
	assert_int_equal(sscanf(line, "'x.csv' could be moved after %u failed", &failures), 1);
	assert_true(failures >= 2);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(count_entries(F.done, ".", ""), 0); /* no temporary report left */
	finish();
}

/* The same, with a restart while the move still fails: the file was uploaded, so the next
 * start must only move it, not upload it again (follow_import off). */
static void test_move_retried_across_restart(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	start(0);
	make_immutable(F.done);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(log_count("'x.csv' could not be moved to") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_PROCESSING);

	restart();
	clear_immutable();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	if (n_uploads() != 1)
		fail_msg("uploaded %zu times: the import id of the 201 was not recorded, so the "
			 "restart uploaded the file again",
			 n_uploads());
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	finish();
}

/* ---- 13. dry run ------------------------------------------------------------------------------ */

static void test_dry_run(void **state)
{
	(void)state;
	put_csv("x.csv", CSV_GOOD);
	put_csv("bad.csv", CSV_NO_EMAIL);
	start(ENGINE_DRY_RUN);
	assert_int_equal(submit("x.csv"), ENGINE_CHECKING_IN_PLACE);
	assert_int_equal(submit("bad.csv"), ENGINE_CHECKING_IN_PLACE);
	RUN_UNTIL(log_count("dry run:") == 2 && F.n_idle > 0 && engine_active(F.js) == 0);
	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_INBOX);
	assert_only_in("bad.csv", IN_INBOX);
	assert_string_equal(slurp(F.inbox, "x.csv", NULL), CSV_GOOD);
	assert_false(exists_in(F.inbox, FSOPS_PROCESSING_DIR)); /* not even created */
	assert_int_equal(count_entries(F.done, "", ""), 0);
	assert_int_equal(count_entries(F.failed, "", ""), 0);
	assert_int_equal(count_events(EV_CLAIMED, NULL), 0);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	assert_int_equal(log_count("dry run: would upload 'x.csv'"), 1);
	assert_int_equal(log_count("dry run: 'bad.csv' would fail at check"), 1);
	assert_int_equal(engine_failed_total(F.js), 1);
	/* A dry run may check the same name again: nothing is ever in processing. */
	assert_int_equal(submit("x.csv"), ENGINE_CHECKING_IN_PLACE);
	RUN_UNTIL(log_count("dry run: would upload 'x.csv'") == 2);
	finish();
}

/* ---- 14. the uploaded file is the file reported ----------------------------------------------- */

static void append_to(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	path_of(path, sizeof(path), dir, name);
	f = fopen(path, "ab");
	if (!f)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	if (fputs(text, f) < 0 || fclose(f) != 0)
		fail_msg("cannot append to %s", path);
}

static int truncate_in(const char *dir, const char *name, off_t size)
{
	char path[PATH_MAX];

	path_of(path, sizeof(path), dir, name);
	return truncate(path, size);
}

/* Appended through its processing path while the upload is out: Resend got the checked bytes
 * (the part's length was announced) and made an import, but the file is no longer what the
 * report would say. Failed, with that import's id, not followed, at once. */
static void test_grown_during_upload(void **state)
{
	static const char more[] = "eve@example.com,Eve\n";
	char sha[65], want[256];
	const cJSON *rep, *err;
	char *failed;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	append_to(F.proc, "x.csv", more);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_int_equal(n_polls(), 0);
	assert_int_equal(upload(0)->size, strlen(CSV_GOOD));
	assert_string_equal(upload(0)->sha256, sha);
	assert_only_in("x.csv", IN_FAILED);
	failed = slurp(F.failed, "x.csv", NULL);
	assert_int_equal(strlen(failed), strlen(CSV_GOOD) + strlen(more));
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_int_equal(jnum(rep, "bytes"), strlen(CSV_GOOD));
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "http_status"), 201);
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	snprintf(want, sizeof(want),
		 "the file changed while it was being uploaded: %zu \u2192 %zu bytes; Resend made "
		 "import %s from what was sent",
		 strlen(CSV_GOOD), strlen(CSV_GOOD) + strlen(more), upload(0)->import_id);
	assert_string_equal(jstr(err, "message"), want);
	assert_int_equal(log_count("'x.csv' failed at upload: the file changed while"), 1);
	assert_int_equal(count_entries(F.proc, ".state-", ""), 0);
	finish();
}

/* Another file renamed over its processing path: the descriptor still reads the old one, the
 * name does not. */
static void test_replaced_during_upload(void **state)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	const cJSON *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	put_file(F.proc, "x.csv.new", CSV_GOOD_2, strlen(CSV_GOOD_2));
	path_of(tmp, sizeof(tmp), F.proc, "x.csv.new");
	path_of(dst, sizeof(dst), F.proc, "x.csv");
	assert_int_equal(rename(tmp, dst), 0);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	err = jobj(report(F.failed, "x.csv"), "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_non_null(strstr(jstr(err, "message"),
			       "the file was replaced while it was being uploaded"));
	assert_string_equal(jstr(report(F.failed, "x.csv"), "import_id"), upload(0)->import_id);
	finish();
}

/* Changed between its check and an upload (here: while it waited to retry): refused before the
 * request, like a check's refusal; the attempt that was not made is not counted. */
static void test_changed_before_upload(void **state)
{
	char want[160];
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	release_call(0, (struct answer){.status = 503, .body = "busy"});
	assert_int_equal(truncate_in(F.proc, "x.csv", 20), 0);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	snprintf(want, sizeof(want), "the file changed after it was checked: %zu \u2192 20 bytes",
		 strlen(CSV_GOOD));
	assert_string_equal(jstr(err, "message"), want);
	finish();
}

/* The upload could not read the file whole (it shrank): the file's fault, known at once; a
 * retry would read the same file. The report says what the daemon found, not curl. */
static void test_local_read_error_not_retried(void **state)
{
	static const char msg[] = "the file shrank while it was being uploaded: read 20 of 75 bytes";
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 0,
				      .transport = "Operation was aborted by an application callback",
				      .local = msg});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	run_for(100); /* retries would come within 20 ms */
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_true(jnull(err, "http_status"));
	assert_string_equal(jstr(err, "message"), msg);
	assert_int_equal(log_count("retrying"), 0);
	assert_int_equal(log_count("aborted"), 0);
	assert_int_equal(log_count(msg), 1);
	finish();
}

/* ---- 15. files split into parts ---------------------------------------------------------- */

#define SPLIT_HEADER "Email,First Name\n"
#define SPLIT_ROWS 5600      /* 34 bytes each: about 190 KB, three parts of at most 64 KiB */
#define SPLIT_LIMIT 65536

/* A clean CSV of SPLIT_ROWS rows (kept); its length in *RET_LEN. */
static char *split_csv(size_t *ret_len)
{
	size_t cap = strlen(SPLIT_HEADER) + SPLIT_ROWS * 34 + 1, len;
	char *text = keep(malloc(cap));

	len = (size_t)snprintf(text, cap, "%s", SPLIT_HEADER);
	for (unsigned i = 0; i < SPLIT_ROWS; i++)
		len += (size_t)snprintf(text + len, cap - len, "user%06u@example.com,Name%06u\n", i,
					i);
	assert_int_equal(len, cap - 1);
	*ret_len = len;
	return text;
}

static void split_setup(void)
{
	F.cfg->folders[0].settings.max_upload_bytes = SPLIT_LIMIT;
	F.cfg->folders[0].settings.follow_import = true;
}

/* The key of part I (1-based) of N of content SHA. */
static void part_key(char key[37], const char *sha, size_t i, size_t n)
{
	char which[96];

	snprintf(which, sizeof(which), "%s/%zu/%zu", sha, i, n);
	resend_idempotency_key(key, FOLDER, which);
}

/* Upload L is part I (1-based) of N of TEXT: the header, then whole rows, carrying its own name
 * and key and the folder's settings. Returns the rows' bytes (kept), for the caller to piece
 * together. */
static const char *assert_part_upload(const struct call_log *l, const char *text, size_t i,
				      size_t n)
{
	char sha[65], key[37], filename[64];
	const char *rows;

	assert_int_equal(l->kind, CALL_UPLOAD);
	snprintf(filename, sizeof(filename), "x.part-%zu-of-%zu.csv", i, n);
	assert_string_equal(l->filename, filename);
	text_sha256(text, sha);
	part_key(key, sha, i, n);
	assert_string_equal(l->key, key);
	assert_true(l->read_ok);
	assert_non_null(l->sent);
	assert_int_equal(strlen(l->sent), l->size);
	if (l->answered) {
		assert_true(l->read_ok_at_answer);
		assert_string_equal(l->sha256_at_answer, l->sha256);
	}
	assert_true(l->size <= SPLIT_LIMIT);
	assert_int_equal(l->head, strlen(SPLIT_HEADER));
	if (strncmp(l->sent, SPLIT_HEADER, strlen(SPLIT_HEADER)) != 0)
		fail_msg("part %zu does not start with the header: '%.40s'", i, l->sent);
	rows = l->sent + strlen(SPLIT_HEADER);
	/* Whole rows only: it starts at a row and ends at a line end. */
	assert_true(strlen(rows) > 0);
	assert_memory_equal(rows, "user", 4);
	assert_int_equal(rows[strlen(rows) - 1], '\n');
	assert_true(strstr(text, rows) != NULL);
	assert_string_equal(l->column_map, WIRE_COLUMN_MAP);
	assert_string_equal(l->on_conflict, "skip");
	assert_string_equal(l->segments, WIRE_SEGMENTS);
	assert_string_equal(l->topics, WIRE_TOPICS);
	return rows;
}

/* Newlines in TEXT. */
static uint64_t lines_of(const char *text)
{
	uint64_t n = 0;

	for (; (text = strchr(text, '\n')); text++)
		n++;
	return n;
}

/* A file over max_upload_bytes: three uploads in order, each a header and its rows, each its own
 * import, followed; the report lists the parts and sums their counts; done/ gets the original. */
static void test_split_into_parts(void **state)
{
	size_t len, at;
	char *text = split_csv(&len), sha[65], *joined;
	const cJSON *rep, *parts, *imp, *counts, *csv;
	struct staterec rec;
	uint64_t sent = 0;
	char line[256];

	(void)state;
	split_setup();
	put_file(F.inbox, "x.csv", text, len);
	text_sha256(text, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	if (places_of("x.csv") != IN_DONE) {
		dump_log();
		fail_msg("x.csv is in%s", places_str(places_of("x.csv")));
	}
	assert_int_equal(n_uploads(), 3);
	assert_int_equal(n_polls(), 3);
	/* The rows, pieced together from the parts in order, are the file's. */
	joined = keep(calloc(1, len + 1));
	at = (size_t)snprintf(joined, len + 1, "%s", SPLIT_HEADER);
	for (size_t i = 0; i < 3; i++) {
		const struct call_log *l = upload(i);
		const char *rows = assert_part_upload(l, text, i + 1, 3);

		assert_true(at + strlen(rows) <= len);
		memcpy(joined + at, rows, strlen(rows));
		at += strlen(rows);
		sent += l->size;
		assert_true(l->answered);
		assert_int_equal(l->status, 201);
		assert_true(l->freed);
		/* One at a time: the next part only once this one was answered. */
		if (i > 0)
			assert_true(upload(i - 1)->answered_seq < l->made_seq);
		/* Each its own import, followed once (the stand-in completes it at once). */
		assert_int_equal(polls_of(l->import_id), 1);
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(upload(k)->key, l->key);
	}
	assert_int_equal(at, len);
	assert_string_equal(joined, text);

	assert_string_equal(slurp(F.done, "x.csv", NULL), text);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "bytes"), len);
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 3); /* one per part */
	assert_true(jnull(rep, "error"));
	parts = jget(rep, "parts");
	assert_true(cJSON_IsArray(parts));
	assert_int_equal(cJSON_GetArraySize(parts), 3);
	uint64_t rows = 0;
	for (int i = 0; i < 3; i++) {
		const cJSON *p = cJSON_GetArrayItem(parts, i);
		const struct call_log *l = upload((size_t)i);

		assert_int_equal(jnum(p, "part"), i + 1);
		assert_string_equal(jstr(p, "import_id"), l->import_id);
		assert_int_equal(jnum(p, "bytes"), l->size);
		assert_int_equal(jnum(p, "rows"), lines_of(l->sent) - 1);
		assert_int_equal(jnum(p, "attempts"), 1);
		assert_int_equal(jnum(p, "http_status"), 201);
		assert_string_equal(jstr(jobj(p, "import"), "status"), "completed");
		assert_int_equal(jnum(jobj(jobj(p, "import"), "counts"), "total"), 3);
		rows += (uint64_t)jnum(p, "rows");
	}
	assert_int_equal(rows, SPLIT_ROWS);
	imp = jobj(rep, "import");
	assert_string_equal(jstr(imp, "status"), "completed");
	counts = jobj(imp, "counts");
	assert_int_equal(jnum(counts, "total"), 9);
	assert_int_equal(jnum(counts, "created"), 6);
	assert_int_equal(jnum(counts, "updated"), 3);
	assert_int_equal(jnum(counts, "skipped"), 0);
	assert_int_equal(jnum(counts, "failed"), 0);
	csv = jobj(rep, "csv");
	assert_int_equal(jnum(csv, "rows"), SPLIT_ROWS);
	assert_int_equal(jnum(csv, "rows_uploaded"), SPLIT_ROWS);
	assert_int_equal(jnum(csv, "rows_rejected"), 0);
	assert_int_equal(jnum(csv, "bytes_before"), len);
	assert_int_equal(jnum(csv, "bytes_after"), sent);
	assert_true(jnull(csv, "rejects_file"));

	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(count_entries(F.done, "", ""), 2);
	assert_false(read_record("x.csv", &rec));
	snprintf(line, sizeof(line), "'x.csv' imported, import %s and 2 more (3 parts), 9 rows",
		 upload(0)->import_id);
	if (log_count(line) != 1) {
		dump_log();
		fail_msg("no outcome line '%s'", line);
	}
	finish();
}

/* A restart after part 1 was imported uploads parts 2 and 3 only, and the report has part 1 as
 * the record says. */
static void test_split_resume(void **state)
{
	static const char part1_id[] = "a1a1a1a1-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	size_t len;
	char *text = split_csv(&len), sha[65];
	struct staterec_part done = {.attempts = 2};
	struct staterec rec, mine = {0};
	const cJSON *rep, *parts;
	char plan[17];

	(void)state;
	split_setup();
	put_file(F.inbox, "x.csv", text, len);
	text_sha256(text, sha);

	/* A first run, stopped while part 2 is being uploaded: the plan it recorded. */
	script_upload((struct answer){.status = 201});
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 2);
	assert_true(read_record("x.csv", &rec));
	assert_int_equal(rec.n_parts, 3);
	assert_int_equal(rec.n_done, 1);
	assert_string_equal(rec.done[0].import_id, upload(0)->import_id);
	assert_string_equal(rec.import_id, upload(0)->import_id);
	assert_string_equal(rec.sha256, sha);
	assert_int_equal(strlen(rec.plan), 16);
	assert_int_equal(strspn(rec.plan, "0123456789abcdef"), 16);
	memcpy(plan, rec.plan, sizeof(plan));
	staterec_clear(&rec);
	drain(50);
	RUN_UNTIL(F.drained);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_false(upload(1)->answered);

	/* The record as a run that imported part 1 as PART1_ID, in two attempts, leaves it. */
	snprintf(mine.sha256, sizeof(mine.sha256), "%s", sha);
	mine.claimed_at_ms = 1795665662000;
	mine.uploaded_at_ms = 1795665663000;
	snprintf(mine.import_id, sizeof(mine.import_id), "%s", part1_id);
	mine.n_parts = 3;
	memcpy(mine.plan, plan, sizeof(mine.plan));
	snprintf(done.import_id, sizeof(done.import_id), "%s", part1_id);
	mine.done = &done;
	mine.n_done = 1;
	write_record("x.csv", &mine);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	if (places_of("x.csv") != IN_DONE) {
		dump_log();
		fail_msg("x.csv is in%s", places_str(places_of("x.csv")));
	}
	assert_int_equal(n_uploads(), 4);
	assert_part_upload(upload(2), text, 2, 3);
	assert_part_upload(upload(3), text, 3, 3);
	/* The same part 2 as the first run sent (same bytes, same key). */
	assert_string_equal(upload(2)->sent, upload(1)->sent);
	assert_string_equal(upload(2)->key, upload(1)->key);
	assert_true(upload(2)->answered_seq < upload(3)->made_seq);
	/* Part 1 followed under the recorded id, never uploaded again. */
	assert_int_equal(polls_of(part1_id), 1);
	assert_int_equal(polls_of(upload(0)->import_id), 0);
	assert_int_equal(polls_of(upload(2)->import_id), 1);
	assert_int_equal(polls_of(upload(3)->import_id), 1);

	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), part1_id);
	parts = jget(rep, "parts");
	assert_int_equal(cJSON_GetArraySize(parts), 3);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 0), "import_id"), part1_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 0), "attempts"), 2);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 1), "import_id"), upload(2)->import_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 1), "attempts"), 1);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 2), "import_id"), upload(3)->import_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 2), "attempts"), 1);
	assert_int_equal(jnum(rep, "attempts"), 4);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_int_equal(jnum(jobj(jobj(rep, "import"), "counts"), "total"), 9);
	assert_string_equal(slurp(F.done, "x.csv", NULL), text);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* A record whose parts were cut otherwise (another plan, or a file not split then) cannot say
 * which rows were imported: the file fails at check, nothing uploaded, and the message names
 * what was imported. */
static void test_split_record_of_another_plan(void **state)
{
	static const char id_a[] = "b2b2b2b2-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	static const char id_b[] = "c3c3c3c3-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	size_t len;
	char *text = split_csv(&len);
	struct staterec_part done = {.attempts = 1};
	struct staterec rec = {.attempts = 0,
			       .claimed_at_ms = 1795665662000,
			       .uploaded_at_ms = 1795665663000};
	const cJSON *rep, *err;
	const char *msg;

	(void)state;
	split_setup();
	assert_int_equal(mkdir(F.proc, 0700), 0);
	/* Split in 3 by another plan, part 1 imported as ID_A. */
	put_file(F.proc, "x.csv", text, len);
	text_sha256(text, rec.sha256);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", id_a);
	rec.n_parts = 3;
	snprintf(rec.plan, sizeof(rec.plan), "0123456789abcdef");
	snprintf(done.import_id, sizeof(done.import_id), "%s", id_a);
	rec.done = &done;
	rec.n_done = 1;
	write_record("x.csv", &rec);
	/* Uploaded whole as ID_B by a run that did not split it. */
	put_file(F.proc, "y.csv", text, len);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", id_b);
	rec.attempts = 1;
	rec.n_parts = 0;
	rec.plan[0] = '\0';
	rec.done = NULL;
	rec.n_done = 0;
	write_record("y.csv", &rec);

	start(0);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_int_equal(n_uploads(), 0);
	assert_int_equal(n_polls(), 0);

	assert_only_in("x.csv", IN_FAILED);
	assert_string_equal(slurp(F.failed, "x.csv", NULL), text);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "import_id"), id_a);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	msg = jstr(err, "message");
	if (!strstr(msg, "3 parts") || !strstr(msg, "1 of them imported") || !strstr(msg, id_a))
		fail_msg("x.csv: message '%s'", msg);

	assert_only_in("y.csv", IN_FAILED);
	rep = report(F.failed, "y.csv");
	assert_string_equal(jstr(rep, "import_id"), id_b);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	msg = jstr(err, "message");
	if (!strstr(msg, "1 of them imported") || !strstr(msg, id_b) || !strstr(msg, "3 parts now"))
		fail_msg("y.csv: message '%s'", msg);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(engine_failed_total(F.js), 2);
	finish();
}

/* A rejected row: the copy without it is uploaded, and the rejects file lands beside the file
 * and its report under the name the report gives, even when the file's own name was taken. */
static void test_rejects_file_beside_report(void **state)
{
	static const char csv_bad[] = "Email,First Name\n"
				      "ada@example.com,Ada\n"
				      "not-an-email,Bob\n"
				      "cy@example.com,Cy\n";
	const cJSON *rep, *csv;
	const char *final, *rejects, *text;
	char line[512];

	(void)state;
	put_file(F.done, "x.csv", "old", 3);
	put_file(F.done, "x.csv.json", "{}", 2);
	put_csv("x.csv", csv_bad);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_non_null(upload(0)->sent);
	assert_string_equal(upload(0)->sent, "Email,First Name\n"
					     "ada@example.com,Ada\n"
					     "cy@example.com,Cy\n");
	final = the_entry(F.done, "x.", "Z.csv"); /* x.<timestamp>.csv */
	assert_string_not_equal(final, "x.csv");
	assert_string_equal(slurp(F.done, final, NULL), csv_bad);
	assert_string_equal(slurp(F.done, "x.csv", NULL), "old");
	rep = report(F.done, final);
	assert_string_equal(jstr(rep, "outcome"), "done");
	csv = jobj(rep, "csv");
	assert_int_equal(jnum(csv, "rows"), 3);
	assert_int_equal(jnum(csv, "rows_uploaded"), 2);
	assert_int_equal(jnum(csv, "rows_rejected"), 1);
	assert_int_equal(jnum(jobj(csv, "rejected"), "invalid_email"), 1);
	assert_true(cJSON_IsTrue(jget(csv, "normalized")));
	rejects = jstr(csv, "rejects_file");
	snprintf(line, sizeof(line), "%s.rejects.csv", final);
	assert_string_equal(rejects, line);
	text = slurp(F.done, rejects, NULL);
	if (!text)
		fail_msg("no %s in done/", rejects);
	assert_memory_equal(text, "line,reason,row\n3,", 18);
	assert_non_null(strstr(text, "not-an-email"));
	/* The file, its report, its rejects file, and the two that were there. */
	assert_int_equal(count_entries(F.done, "", ""), 5);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	snprintf(line, sizeof(line), "; 1 row rejected (listed in %s)", rejects);
	assert_int_equal(log_count(line), 1);
	finish();
}

/* Part 2 refused for good: failed/ at upload, with part 1's import in the report (it exists:
 * the operator decides about it), part 3 never uploaded, each part's attempts counted. */
static void test_split_part_refused(void **state)
{
	size_t len;
	char *text = split_csv(&len);
	const cJSON *rep, *parts, *err;

	(void)state;
	split_setup();
	F.cfg->folders[0].settings.follow_import = false;
	put_file(F.inbox, "x.csv", text, len);
	script_upload((struct answer){.status = 201});
	script_upload((struct answer){.status = 503});
	script_upload((struct answer){
		.status = 422,
		.body = "{\"statusCode\":422,\"name\":\"validation_error\","
			"\"message\":\"bad part\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_part_upload(upload(0), text, 1, 3);
	assert_part_upload(upload(1), text, 2, 3);
	assert_part_upload(upload(2), text, 2, 3); /* the retry: the same part, the same key */
	assert_string_equal(upload(1)->sent, upload(2)->sent);
	assert_only_in("x.csv", IN_FAILED);
	assert_string_equal(slurp(F.failed, "x.csv", NULL), text);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 3);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_int_equal(jnum(err, "http_status"), 422);
	assert_string_equal(jstr(err, "message"), "bad part");
	parts = jget(rep, "parts");
	assert_int_equal(cJSON_GetArraySize(parts), 3);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 0), "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 0), "attempts"), 1);
	assert_true(jnull(cJSON_GetArrayItem(parts, 1), "import_id"));
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 1), "attempts"), 2);
	assert_true(jnull(cJSON_GetArrayItem(parts, 2), "import_id"));
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 2), "attempts"), 0);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* Resend fails part 2's import: every part is still followed, the file fails at import naming
 * the part, and the sum says failed. */
static void test_split_part_import_failed(void **state)
{
	size_t len;
	char *text = split_csv(&len);
	const cJSON *rep, *parts, *err;
	const char *msg;

	(void)state;
	split_setup();
	put_file(F.inbox, "x.csv", text, len);
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	script_poll((struct answer){.status = 200, .import_status = "failed"});
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_int_equal(n_polls(), 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(polls_of(upload(i)->import_id), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "import");
	msg = jstr(err, "message");
	if (!strstr(msg, upload(1)->import_id) || !strstr(msg, "part 2 of 3"))
		fail_msg("message '%s'", msg);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "failed");
	assert_int_equal(jnum(jobj(jobj(rep, "import"), "counts"), "failed"), 3);
	parts = jget(rep, "parts");
	assert_string_equal(jstr(jobj(cJSON_GetArrayItem(parts, 0), "import"), "status"),
			    "completed");
	assert_string_equal(jstr(jobj(cJSON_GetArrayItem(parts, 1), "import"), "status"), "failed");
	assert_string_equal(jstr(jobj(cJSON_GetArrayItem(parts, 2), "import"), "status"),
			    "completed");
	finish();
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_good_file),
		T(test_follow_import),
		T(test_follow_import_failed),
		T(test_header_lacks_mapped_column),
		T(test_retry_then_success),
		T(test_retries_spent),
		T(test_rate_limit_is_a_wait),
		T(test_rate_limit_without_headers_backs_off),
		T(test_rate_limit_between_attempts),
		T(test_rate_limit_on_poll),
		T(test_permanent_refusal),
		T(test_key_refused_pauses),
		T(test_name_busy),
		T(test_namesake_found_at_claim),
		T(test_capacity),
		T(test_resume),
		T(test_drain_aborts_upload),
		T(test_drain_releases_waiting),
		T(test_drain_released_queued_keeps_attempts),
		T(test_drain_during_checks),
		T(test_move_to_done_retried),
		T(test_move_retried_across_restart),
		T(test_dry_run),
		T(test_grown_during_upload),
		T(test_replaced_during_upload),
		T(test_changed_before_upload),
		T(test_local_read_error_not_retried),
		T(test_split_into_parts),
		T(test_split_resume),
		T(test_split_record_of_another_plan),
		T(test_rejects_file_beside_report),
		T(test_split_part_refused),
		T(test_split_part_import_failed),
	};

	return cmocka_run_group_tests_name("job", tests, NULL, NULL);
}
