/* The fixture of the engine's tests: see job_fixture.h. */
#include "job_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "folder.h"
#include "log.h"
#include "resend.h"

struct fixture F;


void *keep(void *p)
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
void wake(void)
{
	uv_thread_t self = uv_thread_self();

	if (F.loop_open && uv_thread_equal(&self, &F.main_thread))
		uv_stop(&F.loop);
}

/* ---- small helpers: files, hashes, logs -------------------------------------------------- */

void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) || n != 32)
		abort();
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A file part from its segments with pread, as resend_client.c streams it (a segment without a
 * descriptor: line ends). What was read goes to *RET_SENT (malloc'd, NUL-terminated) when
 * RET_SENT is not NULL. */
static bool read_part_sha256(const struct resend_segment *segs, size_t n_segs, char out[65],
			     char **ret_sent)
{
	unsigned char md[EVP_MAX_MD_SIZE], buf[65536];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint64_t size = 0, off = 0;
	size_t seg = 0;
	uint64_t in = 0; /* read of segment SEG */

	for (size_t i = 0; i < n_segs; i++)
		size += segs[i].bytes;
	char *sent = ret_sent ? malloc((size_t)size + 1) : NULL;
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && (!ret_sent || sent);

	out[0] = '\0';
	while (ok && off < size) {
		while (in == segs[seg].bytes) {
			seg++;
			in = 0;
		}
		uint64_t left = segs[seg].bytes - in;
		size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		ssize_t r;

		if (segs[seg].fd < 0) {
			memset(buf, '\n', want);
			r = (ssize_t)want;
		} else {
			r = pread(segs[seg].fd, buf, want, (off_t)(segs[seg].offset + in));
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			ok = false;
		else {
			EVP_DigestUpdate(ctx, buf, (size_t)r);
			if (sent)
				memcpy(sent + off, buf, (size_t)r);
			off += (uint64_t)r;
			in += (uint64_t)r;
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

void path_of(char *buf, size_t size, const char *dir, const char *name)
{
	if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size)
		fail_msg("path too long: %s/%s", dir, name);
}

void put_file(const char *dir, const char *name, const void *data, size_t len)
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

void put_csv(const char *name, const char *text)
{
	put_file(F.inbox, name, text, strlen(text));
}

/* DIR/NAME whole, NUL-terminated, malloc'd; NULL when it does not exist. */
char *read_whole(const char *dir, const char *name, size_t *ret_len)
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
char *slurp(const char *dir, const char *name, size_t *ret_len)
{
	char *buf = read_whole(dir, name, ret_len);

	return buf ? keep(buf) : NULL;
}

void text_sha256(const char *text, char out[65])
{
	sha256_hex(text, strlen(text), out);
}

bool exists_in(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	path_of(path, sizeof(path), dir, name);
	return lstat(path, &st) == 0;
}

/* Entries of DIR (dotfiles too) whose names start with PREFIX and end with SUFFIX. */
size_t count_entries(const char *dir, const char *prefix, const char *suffix)
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
char *the_entry(const char *dir, const char *prefix, const char *suffix)
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

unsigned places_of(const char *name)
{
	return (exists_in(F.inbox, name) ? IN_INBOX : 0) |
	       (exists_in(F.proc, name) ? IN_PROCESSING : 0) |
	       (exists_in(F.done, name) ? IN_DONE : 0) |
	       (exists_in(F.failed, name) ? IN_FAILED : 0);
}

const char *places_str(unsigned p)
{
	static char buf[64];

	snprintf(buf, sizeof(buf), "%s%s%s%s%s", p & IN_INBOX ? " inbox" : "",
		 p & IN_PROCESSING ? " processing" : "", p & IN_DONE ? " done" : "",
		 p & IN_FAILED ? " failed" : "", p ? "" : " nowhere");
	return buf;
}

void assert_only_in_at(const char *file, int line, const char *name, unsigned place)
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

const char *log_text(void)
{
	fflush(F.log);
	return F.log_buf ? F.log_buf : "";
}

unsigned log_count(const char *needle)
{
	unsigned n = 0;

	for (const char *p = log_text(); (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

void dump_log(void)
{
	print_message("---- log of this test ----\n%s---- end of log ----\n", log_text());
}

/* ---- reports and records ------------------------------------------------------------------ */

/* DIR/NAME.json parsed (freed by teardown). */
cJSON *report(const char *dir, const char *name)
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

const cJSON *jget(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!v)
		fail_msg("report has no \"%s\"", key);
	return v;
}

const char *jstr(const cJSON *o, const char *key)
{
	const cJSON *v = jget(o, key);

	if (!cJSON_IsString(v))
		fail_msg("report: \"%s\" is not a string", key);
	return v->valuestring;
}

double jnum(const cJSON *o, const char *key)
{
	const cJSON *v = jget(o, key);

	if (!cJSON_IsNumber(v))
		fail_msg("report: \"%s\" is not a number", key);
	return v->valuedouble;
}

bool jnull(const cJSON *o, const char *key)
{
	return cJSON_IsNull(jget(o, key));
}

const cJSON *jobj(const cJSON *o, const char *key)
{
	const cJSON *v = jget(o, key);

	if (!cJSON_IsObject(v))
		fail_msg("report: \"%s\" is not an object", key);
	return v;
}

/* The state record of processing/NAME; false when there is none, or none whole: records
 * that need not survive the machine are rewritten in place by a disk thread, so a read while
 * the loop runs may see one being written (asserted after the loop has stopped, it is whole). */
bool read_record(const char *name, struct staterec *ret)
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

void write_record(const char *name, const struct staterec *s)
{
	char rec[STATEREC_NAME_LEN + 1];
	char *text = staterec_encode(name, s);

	assert_non_null(text);
	staterec_name(rec, name);
	put_file(F.proc, rec, text, strlen(text));
	cJSON_free(text);
}

/* ---- the stand-in's answers ---------------------------------------------------------------- */

void script_upload(struct answer a)
{
	assert_true(F.n_upload_script < MAX_SCRIPT);
	F.upload_script[F.n_upload_script++] = a;
}

void script_poll(struct answer a)
{
	assert_true(F.n_poll_script < MAX_SCRIPT);
	F.poll_script[F.n_poll_script++] = a;
}

/* Default polls: the first F.polls_in_progress answers for an import say in_progress. */
static const char *default_import_status(const char *id)
{
	unsigned seen = 0;

	for (size_t i = 0; i + 1 < F.n_calls; i++) {
		if ((F.calls[i].kind == CALL_POLL && strcmp(F.calls[i].import_id, id) == 0) ||
		    F.calls[i].kind == CALL_LIST)
			seen++;
	}
	return seen < F.polls_in_progress ? "in_progress" : "completed";
}

static char *make_body(size_t n, const struct answer *ans);

/* A page of the list: every import handed out so far, newest first, each as a GET of it would
 * answer (ANS's import_status, or the default). */
static char *make_list_body(size_t n, const struct answer *ans)
{
	cJSON *root = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(root, "data");
	char *text;

	cJSON_AddStringToObject(root, "object", "list");
	cJSON_AddBoolToObject(root, "has_more", false);
	for (size_t i = n; i-- > 0;) {
		const struct call_log *l = &F.calls[i];
		char id[sizeof(l->import_id)];
		char *item;

		if (l->kind != CALL_UPLOAD || !l->answered || l->status != 201)
			continue;
		/* As a poll of it would be answered, the same shapes: the call's log says it is a
		 * poll of it while its item is made. */
		memcpy(id, l->import_id, sizeof(id));
		memcpy(F.calls[n].import_id, id, sizeof(id));
		F.calls[n].kind = CALL_POLL;
		item = make_body(n, &(struct answer){.status = 200,
						     .import_status = ans->import_status});
		F.calls[n].kind = CALL_LIST;
		cJSON_AddItemToArray(data, cJSON_Parse(item));
		free(item);
	}
	snprintf(F.calls[n].import_id, sizeof(F.calls[n].import_id), "list");
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return text;
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
	if (l->kind == CALL_LIST)
		return make_list_body(n, ans);
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
	struct resend_call *call = timer->data;
	struct call_log *l = &F.calls[call->n];

	if (l->kind == CALL_UPLOAD)
		l->read_ok_at_answer = read_part_sha256(call->segs, call->n_segs,
							l->sha256_at_answer, NULL);
	l->answered = true;
	l->answered_seq = ++F.stub_seq;
	l->answered_ms = uv_now(timer->loop);
	l->status = call->ans.status;
	call->cb(call, call->data); /* may free CALL */
	wake();
}

static void stub_closed_cb(uv_handle_t *handle)
{
	struct resend_call *call = handle->data;

	free(call->body);
	free(call->segs);
	free(call);
}

static void stub_arm(struct resend_call *call)
{
	free(call->body);
	call->body = make_body(call->n, &call->ans);
	if (!call->body)
		abort();
	uv_timer_start(&call->timer, stub_answer_cb, call->ans.delay_ms, 0);
}

/* Answers held call N now, with ANS. */
void release_call(size_t n, struct answer ans)
{
	struct resend_call *call = F.calls[n].call;

	assert_true(n < F.n_calls);
	assert_non_null(call);
	assert_false(F.calls[n].answered);
	call->ans = ans;
	stub_arm(call);
}

static struct call_log *stub_new_call(enum call_kind kind, resend_call_cb cb, void *data,
				      struct resend_call **ret)
{
	struct resend_call *call;
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

int resend_client_new(struct http *http, const struct config *cfg, struct resend_client **ret)
{
	(void)http;
	(void)cfg;
	*ret = &F.api;
	return 0;
}

void resend_client_free(struct resend_client *api)
{
	(void)api;
}

int resend_client_create_import(struct resend_client *api, const struct resend_segment *segs,
				size_t n_segs, const char *filename,
				const struct resend_fields *fields, const char *idempotency_key,
				resend_call_cb cb, void *data, struct resend_call **ret)
{
	struct resend_call *call;
	struct call_log *l;
	uint64_t head = n_segs >= 2 ? segs[0].bytes : 0, from = n_segs >= 2 ? segs[1].offset : 0;

	/* One file: its header from 0, then rows after it (a file not split: all of it from 0).
	 * Several (coalesced): each one's rows after its header. */
	if (api != &F.api || n_segs < 2 || segs[0].offset != 0 || (head == 0 && from != 0) ||
	    (head != 0 && from < head))
		F.stub_errors++;
	l = stub_new_call(CALL_UPLOAD, cb, data, &call);
	if (!l)
		return -ENOMEM;
	call->segs = malloc(n_segs * sizeof(*segs));
	if (!call->segs)
		abort();
	memcpy(call->segs, segs, n_segs * sizeof(*segs));
	call->n_segs = n_segs;
	l->n_segs = n_segs;
	snprintf(l->filename, sizeof(l->filename), "%s", filename);
	snprintf(l->key, sizeof(l->key), "%s", idempotency_key ? idempotency_key : "");
	copy_field(l->column_map, sizeof(l->column_map), &l->has_column_map, fields->column_map);
	snprintf(l->on_conflict, sizeof(l->on_conflict), "%s",
		 fields->on_conflict ? fields->on_conflict : "");
	copy_field(l->segments, sizeof(l->segments), &l->has_segments, fields->segments);
	copy_field(l->topics, sizeof(l->topics), &l->has_topics, fields->topics);
	l->size = 0;
	for (size_t i = 0; i < n_segs; i++)
		l->size += segs[i].bytes;
	l->head = head;
	l->from = from;
	l->read_ok = read_part_sha256(segs, n_segs, l->sha256,
				      l->size <= 4 * 1024 * 1024 ? &l->sent : NULL);
	snprintf(l->import_id, sizeof(l->import_id), "00000000-0000-4000-8000-%012zx",
		 call->n + 1);
	call->ans = F.upload_next < F.n_upload_script ? F.upload_script[F.upload_next++]
						      : (struct answer){.status = 201};
	if (!call->ans.hold)
		stub_arm(call);
	*ret = call;
	return 0;
}

int resend_client_get_import(struct resend_client *api, const char *id, resend_call_cb cb, void *data,
	    struct resend_call **ret)
{
	struct resend_call *call;
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

int resend_client_list_imports(struct resend_client *api, unsigned limit, const char *after,
			       resend_call_cb cb, void *data, struct resend_call **ret)
{
	struct resend_call *call;
	struct call_log *l;

	if (api != &F.api || limit != 100 || (after && *after))
		F.stub_errors++;
	l = stub_new_call(CALL_LIST, cb, data, &call);
	if (!l)
		return -ENOMEM;
	snprintf(l->import_id, sizeof(l->import_id), "list");
	call->ans = F.poll_next < F.n_poll_script ? F.poll_script[F.poll_next++]
						  : (struct answer){.status = 200};
	if (!call->ans.hold)
		stub_arm(call);
	*ret = call;
	return 0;
}

long resend_call_status(const struct resend_call *call)
{
	return call->ans.status;
}

const char *resend_call_body(const struct resend_call *call, size_t *ret_len)
{
	const char *b = call->body ? call->body : "";

	if (ret_len)
		*ret_len = strlen(b);
	return b;
}

const char *resend_call_transport_error(const struct resend_call *call)
{
	if (call->ans.status != 0)
		return NULL;
	if (call->ans.local)
		return call->ans.local;
	return call->ans.transport ? call->ans.transport : "no answer";
}

const char *resend_call_local_error(const struct resend_call *call)
{
	return call->ans.status == 0 ? call->ans.local : NULL;
}

int resend_call_local_error_fd(const struct resend_call *call)
{
	return resend_call_local_error(call) && call->n_segs ? call->segs[call->n_segs - 1].fd : -1;
}

const char *resend_call_header(const struct resend_call *call, const char *name)
{
	for (size_t i = 0; i < 3 && call->ans.headers[i][0]; i++) {
		if (strcasecmp(call->ans.headers[i][0], name) == 0)
			return call->ans.headers[i][1];
	}
	return NULL;
}

double resend_call_seconds(const struct resend_call *call)
{
	(void)call;
	return 0.001;
}

void resend_call_free(struct resend_call *call)
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
size_t n_uploads(void)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_UPLOAD;
	return n;
}

size_t n_polls(void)
{
	return F.n_calls - n_uploads();
}

size_t n_lists(void)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_LIST;
	return n;
}

/* The Ith upload (0-based). */
const struct call_log *upload(size_t i)
{
	for (size_t k = 0; k < F.n_calls; k++) {
		if (F.calls[k].kind == CALL_UPLOAD && i-- == 0)
			return &F.calls[k];
	}
	fail_msg("there is no upload %zu (only %zu)", i, n_uploads());
	return NULL;
}

size_t uploads_of(const char *filename)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_UPLOAD && strcmp(F.calls[i].filename, filename) == 0;
	return n;
}

size_t polls_of(const char *import_id)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_POLL && strcmp(F.calls[i].import_id, import_id) == 0;
	return n;
}

unsigned successful_uploads(void)
{
	unsigned n = 0;

	for (size_t i = 0; i < F.n_calls; i++)
		n += F.calls[i].kind == CALL_UPLOAD && F.calls[i].answered &&
		     F.calls[i].status / 100 == 2;
	return n;
}

/* The upload carried FILE's bytes (as they are in DIR now), its name, its key and the folder's
 * settings, and could still read them when its answer came. */
void assert_upload_of(const struct call_log *l, const char *dir, const char *name,
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

size_t count_events(enum ev_kind kind, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < F.n_events; i++)
		n += F.events[i].kind == kind && (!name || strcmp(F.events[i].name, name) == 0);
	return n;
}

/* The Ith event of KIND for NAME (NULL: any name). */
const struct event *event_of(enum ev_kind kind, const char *name, size_t i)
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
enum engine_submit submit(const char *name)
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

void park(const char *name)
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

void loop_open(void)
{
	assert_int_equal(uv_loop_init(&F.loop), 0);
	F.loop_open = true;
	uv_timer_init(&F.loop, &F.guard);
	uv_timer_init(&F.loop, &F.sleeper);
	F.hung = false;
	uv_timer_start(&F.guard, guard_cb, GUARD_MS, 0);
}

void run_once_or_fail(const char *file, int line, const char *what)
{
	if (!F.hung)
		uv_run(&F.loop, UV_RUN_ONCE);
	if (F.hung) {
		dump_log();
		fail_msg("%s:%d: hang guard: after %d s still waiting for: %s", file, line,
			 GUARD_MS / 1000, what);
	}
}

/* Lets the loop run for MS (loop time). */
void run_for(uint64_t ms)
{
	F.slept = false;
	uv_timer_start(&F.sleeper, sleeper_cb, ms, 0);
	RUN_UNTIL(F.slept);
}

/* As daemon_ledger_health: the engine hears when the ledger's writes fail and work again. */
static void ledger_health_cb(bool failing, const char *error, void *data)
{
	(void)data;
	if (failing)
		F.n_ledger_failing++;
	else
		F.n_ledger_recovered++;
	if (F.js)
		engine_ledger_health(F.js, failing, error);
	else if (failing)
		log_error("%s", error);
	wake();
}

void start(unsigned flags)
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
	/* As daemon_ledger_open: the ledger's thread before the engine, none in a dry run. */
	if (F.ledger && !(flags & ENGINE_DRY_RUN)) {
		r = ledgerq_new(&F.loop, F.ledger, ledger_health_cb, NULL, &F.lq);
		if (r < 0)
			fail_msg("ledgerq_new: %s", strerror(-r));
	}
	r = engine_new(&F.loop, F.cfg, F.dirs, &F.api, flags, &events, &F.js);
	if (r < 0) {
		dump_log();
		fail_msg("engine_new: %s", strerror(-r));
	}
	if (F.lq)
		engine_set_ledger(F.js, F.lq);
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
	/* As daemon_close_signals, last: the records of the files that just finished are written
	 * first (the thread gives up after a few seconds if the ledger still fails). */
	ledgerq_close(F.lq);
	F.lq = NULL;
	wake();
}

void drain(uint64_t timeout_ms)
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
void stop_and_close_loop(void)
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
void restart(void)
{
	stop_and_close_loop();
	loop_open();
	start(0);
}

/* Every test ends here: what held for the whole run. */
void finish(void)
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

/* ---- FS_IMMUTABLE_FL: a directory or file even root cannot write into ------------------- */

static int set_immutable(const char *path, bool on)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
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

void make_immutable(const char *path)
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

void clear_immutable(void)
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

int setup(void **state)
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

int teardown(void **state)
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
