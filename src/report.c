/* The report and the outcome line: everything a reader learns about a file's end. */
#include "report.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "fsops.h"
#include "log.h"
#include "utf8.h"

static const char *const stage_names[] = {"check", "upload", "import"};

const char *report_stage_name(enum report_stage stage)
{
	return stage_names[stage];
}

const char *report_format_count(char buf[REPORT_COUNT_LEN], uint64_t n)
{
	char digits[21];
	int len = snprintf(digits, sizeof(digits), "%" PRIu64, n);
	size_t o = 0;

	for (int i = 0; i < len; i++) {
		if (i > 0 && (len - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = '\0';
	return buf;
}

void report_fail(struct report *r, enum report_stage stage, long status, const char *name,
		 const char *fmt, ...)
{
	va_list ap;

	r->failed = true;
	r->stage = stage;
	r->error.status = status;
	snprintf(r->error.name, sizeof(r->error.name), "%s", name ? name : "");
	va_start(ap, fmt);
	vsnprintf(r->error.message, sizeof(r->error.message), fmt, ap);
	va_end(ap);
}

void report_add_string(void *o, const char *key, const char *value)
{
	char buf[2048];

	if (utf8_valid(value)) {
		cJSON_AddStringToObject(o, key, value);
		return;
	}
	/* The escaped form the logs use, where a backslash is doubled, so the two cannot be
	 * confused. */
	log_escape(buf, sizeof(buf), value);
	cJSON_AddStringToObject(o, key, buf);
}

static void add_time(cJSON *o, const char *key, int64_t ms)
{
	char ts[32];

	if (ms == 0) {
		cJSON_AddNullToObject(o, key);
		return;
	}
	fsops_format_utc(ts, ms / 1000, (int)(ms % 1000));
	cJSON_AddStringToObject(o, key, ts);
}

static void add_import(cJSON *o, const struct resend_import *imp)
{
	static const char *const keys[] = {"total", "created", "updated", "skipped", "failed"};
	const int64_t vals[] = {imp->total, imp->created, imp->updated, imp->skipped, imp->failed};
	cJSON *io;

	if (!imp->status[0]) {
		cJSON_AddNullToObject(o, "import");
		return;
	}
	io = cJSON_AddObjectToObject(o, "import");
	report_add_string(io, "status", imp->status);
	if (imp->has_counts) {
		cJSON *c = cJSON_AddObjectToObject(io, "counts");
		for (size_t i = 0; i < 5; i++) {
			if (vals[i] >= 0)
				cJSON_AddNumberToObject(c, keys[i], (double)vals[i]);
		}
	}
	if (imp->completed_at[0])
		report_add_string(io, "completed_at", imp->completed_at);
}

static void add_error(cJSON *o, const struct report *r)
{
	cJSON *e;

	if (!r->failed) {
		cJSON_AddNullToObject(o, "error");
		return;
	}
	e = cJSON_AddObjectToObject(o, "error");
	cJSON_AddStringToObject(e, "stage", stage_names[r->stage]);
	if (r->error.status)
		cJSON_AddNumberToObject(e, "http_status", r->error.status);
	else
		cJSON_AddNullToObject(e, "http_status");
	if (r->error.name[0])
		report_add_string(e, "name", r->error.name);
	else
		cJSON_AddNullToObject(e, "name");
	report_add_string(e, "message", r->error.message);
}

char *report_json(const struct report *r, int64_t finished_ms)
{
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "outcome", r->failed ? "failed" : "done");
	cJSON_AddStringToObject(o, "folder", r->folder);
	report_add_string(o, "file", r->file);
	cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
	if (r->sha256[0])
		cJSON_AddStringToObject(o, "sha256", r->sha256);
	else
		cJSON_AddNullToObject(o, "sha256");
	cJSON_AddNumberToObject(o, "attempts", r->attempts);
	add_time(o, "claimed_at", r->claimed_at_ms);
	add_time(o, "uploaded_at", r->uploaded_at_ms);
	add_time(o, "finished_at", finished_ms);
	if (r->http_status)
		cJSON_AddNumberToObject(o, "http_status", r->http_status);
	else
		cJSON_AddNullToObject(o, "http_status");
	if (r->import_id[0])
		cJSON_AddStringToObject(o, "import_id", r->import_id);
	else
		cJSON_AddNullToObject(o, "import_id");
	add_import(o, &r->import);
	add_error(o, r);
	text = cJSON_Print(o);
	cJSON_Delete(o);
	return text;
}

static size_t append(char *buf, size_t size, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* snprintf at BUF + N; the new length, never past SIZE - 1. */
static size_t append(char *buf, size_t size, size_t n, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (n + 1 >= size)
		return n;
	va_start(ap, fmt);
	k = vsnprintf(buf + n, size - n, fmt, ap);
	va_end(ap);
	if (k < 0)
		return n;
	return n + (size_t)k < size ? n + (size_t)k : size - 1;
}

/* "3 rows (2 created, 1 failed)": the counts the API gave, and only those. */
static void format_counts(char *buf, size_t size, const struct resend_import *imp)
{
	static const char *const names[] = {"created", "updated", "skipped", "failed"};
	const int64_t vals[] = {imp->created, imp->updated, imp->skipped, imp->failed};
	size_t n = 0;
	bool open = false;

	buf[0] = '\0';
	if (imp->total >= 0)
		n = append(buf, size, n, "%lld rows", (long long)imp->total);
	for (size_t i = 0; i < 4; i++) {
		if (vals[i] < 0)
			continue;
		n = append(buf, size, n, "%s%lld %s", open ? ", " : n ? " (" : "(",
			   (long long)vals[i], names[i]);
		open = true;
	}
	if (open)
		append(buf, size, n, ")");
}

void report_log_outcome(const struct report *r, const char *dir, const char *final_name)
{
	const struct resend_error *e = &r->error;
	const struct resend_import *imp = &r->import;
	const char *s = r->attempts == 1 ? "" : "s";
	const char *import_id = r->import_id[0] ? r->import_id : NULL;
	char counts[160];

	if (r->failed) {
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){LOG_ID_FILE_FAILED, r->folder, r->file, import_id,
					       "failed"},
			  "%s: '%s' failed at %s: %s%s%s%s (moved to %s/%s, %u attempt%s)", r->folder,
			  r->file, stage_names[r->stage], e->message, e->name[0] ? " [" : "",
			  e->name, e->name[0] ? "]" : "", dir, final_name, r->attempts, s);
		return;
	}
	const struct log_fields done = {LOG_ID_FILE_DONE, r->folder, r->file, import_id, "done"};
	if (imp->has_counts)
		format_counts(counts, sizeof(counts), imp);
	if (imp->has_counts && counts[0])
		log_event(LOG_LEVEL_INFO, &done, "%s: '%s' imported, import %s, %s, %u attempt%s",
			  r->folder, r->file, r->import_id, counts, r->attempts, s);
	else
		log_event(LOG_LEVEL_INFO, &done, "%s: '%s' uploaded, import %s, %llu bytes, %u attempt%s",
			  r->folder, r->file, r->import_id, (unsigned long long)r->bytes, r->attempts,
			  s);
}
