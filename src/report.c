/* The report and the outcome line: everything a reader learns about a file's end. */
#include "report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "text.h"

static const char *const stage_names[] = {"check", "upload", "import"};

const char *report_stage_name(enum report_stage stage)
{
	return stage_names[stage];
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

static void add_time(cJSON *o, const char *key, int64_t ms)
{
	char ts[32];

	if (ms == 0) {
		cJSON_AddNullToObject(o, key);
		return;
	}
	text_format_utc(ts, ms / 1000, (int)(ms % 1000));
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
	text_json_add_string(io, "status", imp->status);
	if (imp->has_counts) {
		cJSON *c = cJSON_AddObjectToObject(io, "counts");
		for (size_t i = 0; i < 5; i++) {
			if (vals[i] >= 0)
				cJSON_AddNumberToObject(c, keys[i], (double)vals[i]);
		}
	}
	if (imp->completed_at[0])
		text_json_add_string(io, "completed_at", imp->completed_at);
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
		text_json_add_string(e, "name", r->error.name);
	else
		cJSON_AddNullToObject(e, "name");
	text_json_add_string(e, "message", r->error.message);
}

static void add_csv(cJSON *o, const struct normalize *n, const char *rejects_file)
{
	char delim[2] = {n ? n->delimiter : 0, 0};
	cJSON *c, *x;

	if (!n || !n->read) {
		cJSON_AddNullToObject(o, "csv");
		return;
	}
	c = cJSON_AddObjectToObject(o, "csv");
	cJSON_AddStringToObject(c, "encoding_from", n->encoding_from);
	cJSON_AddStringToObject(c, "encoding_to", "utf-8");
	if (n->bom)
		cJSON_AddStringToObject(c, "bom", n->bom);
	else
		cJSON_AddNullToObject(c, "bom");
	cJSON_AddBoolToObject(c, "sep_line", n->sep_line);
	if (delim[0])
		cJSON_AddStringToObject(c, "delimiter", delim);
	else
		cJSON_AddNullToObject(c, "delimiter"); /* refused before one was chosen */
	cJSON_AddStringToObject(c, "header", config_header_name(n->header));
	x = cJSON_AddObjectToObject(c, "renamed_columns");
	for (size_t i = 0; i < n->n_renamed; i++)
		text_json_add_string(x, n->renamed_from[i], n->renamed_to[i]);
	cJSON_AddBoolToObject(c, "normalized", n->normalized);
	cJSON_AddNumberToObject(c, "rows", (double)n->rows);
	cJSON_AddNumberToObject(c, "rows_uploaded", (double)n->rows_uploaded);
	cJSON_AddNumberToObject(c, "rows_rejected", (double)n->rows_rejected);
	x = cJSON_AddObjectToObject(c, "rejected");
	for (int i = 0; i < NORMALIZE_N_REASONS; i++)
		cJSON_AddNumberToObject(x, normalize_reason_key(i), (double)n->rejected[i]);
	cJSON_AddStringToObject(c, "invalid_rows", config_invalid_rows_name(n->invalid_rows));
	if (rejects_file)
		text_json_add_string(c, "rejects_file", rejects_file);
	else
		cJSON_AddNullToObject(c, "rejects_file");
	cJSON_AddNumberToObject(c, "bytes_before", (double)n->bytes_before);
	cJSON_AddNumberToObject(c, "bytes_after", (double)n->bytes_after);
}

/* The earlier import of the same content (on_duplicate): which file, when, which import. */
static void add_duplicate(cJSON *o, const struct ledger_entry *d)
{
	cJSON *x, *ids;
	const char *p;

	if (!d) {
		cJSON_AddNullToObject(o, "duplicate_of");
		return;
	}
	x = cJSON_AddObjectToObject(o, "duplicate_of");
	text_json_add_string(x, "file", d->file ? d->file : "");
	add_time(x, "claimed_at", d->claimed_at_ms);
	add_time(x, "imported_at", d->finished_at_ms);
	ids = cJSON_AddArrayToObject(x, "import_ids");
	for (p = d->import_ids; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char id[64];

		snprintf(id, sizeof(id), "%.*s", (int)len, p);
		cJSON_AddItemToArray(ids, cJSON_CreateString(id));
		p = comma ? comma + 1 : NULL;
	}
}

static void add_parts(cJSON *o, const struct report *r)
{
	cJSON *a;

	if (r->n_parts < 2)
		return;
	a = cJSON_AddArrayToObject(o, "parts");
	for (size_t i = 0; i < r->n_parts; i++) {
		const struct report_part *p = &r->parts[i];
		cJSON *po = cJSON_CreateObject();

		if (!po)
			return;
		cJSON_AddItemToArray(a, po);
		cJSON_AddNumberToObject(po, "part", (double)(i + 1));
		cJSON_AddNumberToObject(po, "rows", (double)p->rows);
		cJSON_AddNumberToObject(po, "bytes", (double)p->bytes);
		cJSON_AddNumberToObject(po, "attempts", p->attempts);
		if (p->http_status)
			cJSON_AddNumberToObject(po, "http_status", p->http_status);
		else
			cJSON_AddNullToObject(po, "http_status");
		if (p->import_id[0])
			cJSON_AddStringToObject(po, "import_id", p->import_id);
		else
			cJSON_AddNullToObject(po, "import_id");
		add_import(po, &p->import);
	}
}

void report_sum_parts(struct report *r)
{
	struct resend_import *sum = &r->import;
	bool all = true, failed = false;
	int64_t *dst[] = {&sum->total, &sum->created, &sum->updated, &sum->skipped, &sum->failed};

	if (r->n_parts < 2)
		return;
	memset(sum, 0, sizeof(*sum));
	sum->has_counts = true;
	for (size_t i = 0; i < r->n_parts; i++) {
		const struct resend_import *p = &r->parts[i].import;
		const int64_t src[] = {p->total, p->created, p->updated, p->skipped, p->failed};

		all = all && p->state == RESEND_IMPORT_COMPLETED;
		failed = failed || p->state == RESEND_IMPORT_FAILED;
		for (size_t k = 0; k < 5; k++)
			*dst[k] += src[k] > 0 ? src[k] : 0;
	}
	sum->state = failed ? RESEND_IMPORT_FAILED
			    : all ? RESEND_IMPORT_COMPLETED : RESEND_IMPORT_IN_PROGRESS;
	snprintf(sum->status, sizeof(sum->status), "%s", resend_import_state_name(sum->state));
}

/* The batch a coalesced file was imported in: its id, files and rows, and what its counts are. */
static void add_batch(cJSON *o, const struct batch_info *b)
{
	cJSON *x, *files;

	if (!b)
		return;
	x = cJSON_AddObjectToObject(o, "batch");
	if (!x)
		return;
	cJSON_AddStringToObject(x, "id", b->id);
	cJSON_AddNumberToObject(x, "file_count", (double)b->n_files);
	if (b->files) {
		files = cJSON_AddArrayToObject(x, "files");
		for (size_t i = 0; files && i < b->n_files; i++) {
			cJSON *name = text_json_string(b->files[i] ? b->files[i] : "");

			if (name && !cJSON_AddItemToArray(files, name))
				cJSON_Delete(name);
		}
	} else {
		cJSON_AddNullToObject(x, "files"); /* resumed after a restart: only the count */
	}
	cJSON_AddNumberToObject(x, "rows", (double)b->rows);
	cJSON_AddStringToObject(x, "counts",
				"Resend counts per import: the import's counts cover every file of "
				"the batch; this file's own rows are csv.rows_uploaded");
}

char *report_json(const struct report *r, int64_t finished_ms)
{
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "outcome", r->failed ? "failed" : "done");
	cJSON_AddStringToObject(o, "folder", r->folder);
	text_json_add_string(o, "file", r->file);
	cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
	if (r->sha256[0])
		cJSON_AddStringToObject(o, "sha256", r->sha256);
	else
		cJSON_AddNullToObject(o, "sha256");
	cJSON_AddNumberToObject(o, "attempts", r->attempts);
	/* Requests refused for Resend's rate limit: waits, never counted as attempts. */
	cJSON_AddNumberToObject(o, "rate_limited", r->rate_limited);
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
	add_batch(o, r->batch);
	if (r->reconciled) {
		static const char *const outcomes[] = {"none", "adopted", "several"};
		cJSON *x = cJSON_AddObjectToObject(o, "reconciled");

		/* After a crash: was the upload in flight made? Resend's list was asked. */
		cJSON_AddStringToObject(x, "outcome", outcomes[(r->reconciled - 1) % 3]);
		cJSON_AddNumberToObject(x, "candidates", r->reconcile_candidates);
	}
	add_parts(o, r);
	add_duplicate(o, r->duplicate_of);
	add_csv(o, r->csv, r->rejects_file);
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
		n = append(buf, size, n, "%lld row%s", (long long)imp->total,
			   imp->total == 1 ? "" : "s");
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
	char counts[160], extra[240] = "";
	size_t n = 0;

	if (r->rate_limited)
		n = append(extra, sizeof(extra), n, ", %u wait%s for the rate limit",
			   r->rate_limited, r->rate_limited == 1 ? "" : "s");
	if (r->csv && r->csv->rows_rejected)
		n = append(extra, sizeof(extra), n, "; %llu row%s rejected%s%s%s",
			   (unsigned long long)r->csv->rows_rejected,
			   r->csv->rows_rejected == 1 ? "" : "s",
			   r->rejects_file ? " (listed in " : "",
			   r->rejects_file ? r->rejects_file : "", r->rejects_file ? ")" : "");
	if (r->failed) {
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){LOG_ID_FILE_FAILED, r->folder, r->file, import_id,
					       "failed"},
			  "%s: '%s' failed at %s: %s%s%s%s (moved to %s/%s, %u attempt%s)%s",
			  r->folder, r->file, stage_names[r->stage], e->message,
			  e->name[0] ? " [" : "", e->name, e->name[0] ? "]" : "", dir, final_name,
			  r->attempts, s, extra);
		return;
	}
	const struct log_fields done = {LOG_ID_FILE_DONE, r->folder, r->file, import_id, "done"};

	if (r->duplicate_of) {
		const struct ledger_entry *d = r->duplicate_of;
		char when[32];

		text_format_utc(when, d->finished_at_ms / 1000, -1);
		log_event(LOG_LEVEL_INFO,
			  &(struct log_fields){LOG_ID_FILE_DONE, r->folder, r->file, NULL, "skipped"},
			  "%s: '%s' skipped: the same content was imported from '%s' at %s as import "
			  "%s; nothing sent (moved to %s/%s)",
			  r->folder, r->file, d->file ? d->file : "?", when,
			  d->import_ids ? d->import_ids : "?", dir, final_name);
		return;
	}
	char parts[64] = "";

	if (r->n_parts > 1)
		snprintf(parts, sizeof(parts), " and %zu more (%zu parts)", r->n_parts - 1,
			 r->n_parts);
	if (imp->has_counts)
		format_counts(counts, sizeof(counts), imp);
	if (r->batch && r->csv && r->n_parts <= 1) {
		/* The counts are the import's, the batch's files together: said so. */
		char with[120];

		snprintf(with, sizeof(with), " (batch %s, with %zu other file%s)", r->batch->id,
			 r->batch->n_files - 1, r->batch->n_files == 2 ? "" : "s");
		if (imp->has_counts && counts[0])
			log_event(LOG_LEVEL_INFO, &done,
				  "%s: '%s' imported, import %s%s: its %llu row%s of the import's %s, "
				  "%u attempt%s%s",
				  r->folder, r->file, r->import_id, with,
				  (unsigned long long)r->csv->rows_uploaded,
				  r->csv->rows_uploaded == 1 ? "" : "s", counts, r->attempts, s, extra);
		else
			log_event(LOG_LEVEL_INFO, &done,
				  "%s: '%s' uploaded, import %s%s, %llu bytes, %u attempt%s%s",
				  r->folder, r->file, r->import_id, with, (unsigned long long)r->bytes,
				  r->attempts, s, extra);
		return;
	}
	if (imp->has_counts && counts[0])
		log_event(LOG_LEVEL_INFO, &done, "%s: '%s' imported, import %s%s, %s, %u attempt%s%s",
			  r->folder, r->file, r->import_id, parts, counts, r->attempts, s, extra);
	else
		log_event(LOG_LEVEL_INFO, &done,
			  "%s: '%s' uploaded, import %s%s, %llu bytes, %u attempt%s%s", r->folder,
			  r->file, r->import_id, parts, (unsigned long long)r->bytes, r->attempts, s,
			  extra);
}

/* The import ids of R's parts so far, comma-separated (malloc'd), or NULL. */
static char *report_import_ids(const struct report *r)
{
	size_t len = 0, n = 0;
	char *ids, *p;

	for (size_t i = 0; i < r->n_parts && r->parts[i].import_id[0]; i++, n++)
		len += strlen(r->parts[i].import_id) + 1;
	if (n == 0 && r->import_id[0])
		return strdup(r->import_id);
	if (n == 0 || !(ids = malloc(len)))
		return NULL;
	p = ids;
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s%s", i ? "," : "", r->parts[i].import_id);
	return ids;
}

char *report_receipt_json(const struct report *r, int64_t finished_ms, const char *rejects_name)
{
	cJSON *o = cJSON_CreateObject(), *rows, *e;
	char *out;

	if (!o)
		return NULL;
	text_json_add_string(o, "file", r->file);
	cJSON_AddStringToObject(o, "outcome", r->failed ? "failed"
					      : r->duplicate_of ? "skipped" : "imported");
	add_time(o, "received_at", r->claimed_at_ms);
	add_time(o, "finished_at", finished_ms);
	rows = cJSON_AddObjectToObject(o, "rows");
	if (rows && r->csv && r->csv->read) {
		cJSON_AddNumberToObject(rows, "read", (double)r->csv->rows);
		cJSON_AddNumberToObject(rows, "imported", r->failed ? 0 :
					(double)r->csv->rows_uploaded);
		cJSON_AddNumberToObject(rows, "rejected", (double)r->csv->rows_rejected);
	}
	if (rejects_name)
		text_json_add_string(o, "rejects_file", rejects_name);
	else
		cJSON_AddNullToObject(o, "rejects_file");
	add_import(o, &r->import);
	if (r->duplicate_of)
		cJSON_AddStringToObject(o, "note", "the same content was imported before: nothing "
						   "was sent again");
	if (r->failed) {
		e = cJSON_AddObjectToObject(o, "error");
		cJSON_AddStringToObject(e, "stage", stage_names[r->stage]);
		text_json_add_string(e, "message", r->error.message);
	} else {
		cJSON_AddNullToObject(o, "error");
	}
	out = cJSON_Print(o);
	cJSON_Delete(o);
	return out;
}

char *report_event_json(const struct report *r, const char *type, int64_t finished_ms,
			const char *host)
{
	cJSON *o = cJSON_CreateObject(), *d, *rows;
	char ts[TEXT_UTC_LEN];
	char *out;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "type", type);
	text_format_utc(ts, finished_ms / 1000, (int)(finished_ms % 1000));
	cJSON_AddStringToObject(o, "timestamp", ts);
	d = cJSON_AddObjectToObject(o, "data");
	if (!d) {
		cJSON_Delete(o);
		return NULL;
	}
	text_json_add_string(d, "folder", r->folder);
	text_json_add_string(d, "file", r->file);
	if (host && host[0])
		text_json_add_string(d, "host", host);
	cJSON_AddStringToObject(d, "outcome", r->failed ? "failed"
					      : r->duplicate_of ? "skipped" : "imported");
	if (r->sha256[0])
		cJSON_AddStringToObject(d, "sha256", r->sha256);
	cJSON_AddNumberToObject(d, "bytes", (double)r->bytes);
	add_time(d, "claimed_at", r->claimed_at_ms);
	add_time(d, "finished_at", finished_ms);
	rows = cJSON_AddObjectToObject(d, "rows");
	if (rows && r->csv && r->csv->read) {
		cJSON_AddNumberToObject(rows, "read", (double)r->csv->rows);
		cJSON_AddNumberToObject(rows, "uploaded", (double)r->csv->rows_uploaded);
		cJSON_AddNumberToObject(rows, "rejected", (double)r->csv->rows_rejected);
	}
	if (r->import_id[0])
		cJSON_AddStringToObject(d, "import_id", r->import_id);
	else
		cJSON_AddNullToObject(d, "import_id");
	add_import(d, &r->import);
	add_batch(d, r->batch);
	add_duplicate(d, r->duplicate_of);
	add_error(d, r);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

int report_ledger_entry(const struct report *r, const char *settings_hash,
			enum ledger_status status, int64_t finished_ms, struct ledger_entry *ret)
{
	struct ledger_entry e = {
		.claimed_at_ms = r->claimed_at_ms,
		.bytes = r->bytes,
		.attempts = r->attempts,
		.uploaded_at_ms = r->uploaded_at_ms,
		.status = status,
		.total = -1, .created = -1, .updated = -1, .skipped = -1, .failed = -1,
	};
	bool has_ids = r->import_id[0] || (r->n_parts && r->parts[0].import_id[0]);

	memcpy(e.sha256, r->sha256, sizeof(e.sha256));
	snprintf(e.settings_hash, sizeof(e.settings_hash), "%s", settings_hash ? settings_hash : "");
	if (status == LEDGER_DONE || status == LEDGER_FAILED || status == LEDGER_SKIPPED)
		e.finished_at_ms = finished_ms;
	if (r->import.has_counts) {
		e.total = r->import.total;
		e.created = r->import.created;
		e.updated = r->import.updated;
		e.skipped = r->import.skipped;
		e.failed = r->import.failed;
	}
	e.folder = strdup(r->folder);
	e.file = strdup(r->file);
	e.import_ids = report_import_ids(r);
	if (r->failed && asprintf(&e.error, "%s: %s", report_stage_name(r->stage),
				  r->error.message) < 0)
		e.error = NULL;
	if (r->duplicate_of && r->duplicate_of->file)
		e.duplicate_of = strdup(r->duplicate_of->file);
	if (!e.folder || !e.file || (has_ids && !e.import_ids) || (r->failed && !e.error) ||
	    (r->duplicate_of && r->duplicate_of->file && !e.duplicate_of)) {
		ledger_entry_clear(&e);
		return -ENOMEM;
	}
	*ret = e;
	return 0;
}
