/* report: the JSON report beside each finished file and the outcome's log line, as an operator
 * (or a script reading the reports) sees them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "log.h"
#include "report.h"
#include "text.h"

#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define IMPORT_ID "479e3145-dd38-476b-932c-529ceb705947"
/* 2026-11-26T04:01:02.123Z and a little later */
#define CLAIMED_MS 1795665662123
#define UPLOADED_MS 1795665663004
#define FINISHED_MS 1795665670999

/* Every report has every key, null where it does not apply, so that readers need no guessing. */
static const char *const report_keys[] = {
	"outcome",     "folder",      "file",	     "bytes",	  "sha256", "attempts", "rate_limited", "claimed_at",
	"uploaded_at", "finished_at", "http_status", "import_id", "import", "duplicate_of", "csv", "error", NULL};

static cJSON *parse_report(const struct report *r, int64_t finished_ms)
{
	char *text = report_json(r, finished_ms);
	cJSON *o;
	size_t n = 0;

	assert_non_null(text);
	o = cJSON_Parse(text);
	if (!o)
		fail_msg("not JSON: %s", text);
	cJSON_free(text);
	assert_true(cJSON_IsObject(o));
	for (size_t i = 0; report_keys[i]; i++) {
		if (!cJSON_GetObjectItemCaseSensitive(o, report_keys[i]))
			fail_msg("report lacks '%s'", report_keys[i]);
	}
	for (cJSON *c = o->child; c; c = c->next)
		n++;
	/* "parts" only for a file split into several. */
	if (r->n_parts > 1 && !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "parts")))
		fail_msg("a report of %zu parts lacks \"parts\"", r->n_parts);
	if (r->n_parts < 2 && cJSON_GetObjectItemCaseSensitive(o, "parts"))
		fail_msg("a report of %zu part(s) has \"parts\"", r->n_parts);
	assert_int_equal(n, sizeof(report_keys) / sizeof(report_keys[0]) - 1 + (r->n_parts > 1));
	return o;
}

static const cJSON *get(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!v)
		fail_msg("no '%s'", key);
	return v;
}

static void assert_str(const cJSON *o, const char *key, const char *want)
{
	const cJSON *v = get(o, key);

	if (!cJSON_IsString(v))
		fail_msg("'%s' is not a string", key);
	assert_string_equal(v->valuestring, want);
}

static void assert_num(const cJSON *o, const char *key, double want)
{
	const cJSON *v = get(o, key);

	if (!cJSON_IsNumber(v))
		fail_msg("'%s' is not a number", key);
	assert_true(v->valuedouble == want);
}

static void assert_null_field(const cJSON *o, const char *key)
{
	if (!cJSON_IsNull(get(o, key)))
		fail_msg("'%s' is not null", key);
}

static void report_done(struct report *r)
{
	memset(r, 0, sizeof(*r));
	r->folder = "newsletter";
	r->file = "contacts.csv";
	r->bytes = 1234;
	snprintf(r->sha256, sizeof(r->sha256), "%s", SHA);
	r->attempts = 2;
	r->claimed_at_ms = CLAIMED_MS;
	r->uploaded_at_ms = UPLOADED_MS;
	r->http_status = 201;
	snprintf(r->import_id, sizeof(r->import_id), "%s", IMPORT_ID);
	r->import.state = RESEND_IMPORT_COMPLETED;
	snprintf(r->import.status, sizeof(r->import.status), "completed");
	r->import.has_counts = true;
	r->import.total = 3;
	r->import.created = 2;
	r->import.updated = 1;
	r->import.skipped = 0;
	r->import.failed = 0;
	snprintf(r->import.completed_at, sizeof(r->import.completed_at),
		 "2026-11-26T04:01:09.000Z");
}

/* What the ledger is told of a file: its key and content, the import ids of every part in
 * order, the import's counts (-1 when unknown), the error as "stage: message", what a skipped
 * file duplicated; an end time only once it ended. Every string its own. */
static void test_ledger_entry(void **state)
{
	struct report r;
	struct report_part parts[3] = {{0}};
	struct ledger_entry dup = {.file = (char *)"earlier.csv"}, e;

	(void)state;
	report_done(&r);
	assert_int_equal(report_ledger_entry(&r, "hash", LEDGER_UPLOADED, 99, &e), 0);
	assert_string_equal(e.folder, "newsletter");
	assert_string_equal(e.file, "contacts.csv");
	assert_true(e.folder != r.folder);
	assert_string_equal(e.sha256, SHA);
	assert_string_equal(e.settings_hash, "hash");
	assert_int_equal(e.claimed_at_ms, CLAIMED_MS);
	assert_int_equal(e.finished_at_ms, 0); /* not ended */
	assert_string_equal(e.import_ids, IMPORT_ID);
	assert_int_equal(e.total, 3);
	assert_int_equal(e.created, 2);
	assert_null(e.error);
	assert_null(e.duplicate_of);
	ledger_entry_clear(&e);

	/* Split: every part's id so far, in order; failed at upload; counts unknown. */
	r.n_parts = 3;
	r.parts = parts;
	snprintf(parts[0].import_id, sizeof(parts[0].import_id), "id-1");
	snprintf(parts[1].import_id, sizeof(parts[1].import_id), "id-2");
	r.import.has_counts = false;
	report_fail(&r, REPORT_STAGE_UPLOAD, 422, "validation_error", "bad part");
	assert_int_equal(report_ledger_entry(&r, "hash", LEDGER_FAILED, 1234, &e), 0);
	assert_string_equal(e.import_ids, "id-1,id-2");
	assert_int_equal(e.finished_at_ms, 1234);
	assert_int_equal(e.total, -1);
	assert_string_equal(e.error, "upload: bad part");
	assert_int_equal(e.status, LEDGER_FAILED);
	ledger_entry_clear(&e);

	/* A skipped duplicate: nothing sent, the earlier file named. */
	report_done(&r);
	r.import_id[0] = '\0';
	r.duplicate_of = &dup;
	assert_int_equal(report_ledger_entry(&r, NULL, LEDGER_SKIPPED, 5, &e), 0);
	assert_null(e.import_ids);
	assert_string_equal(e.duplicate_of, "earlier.csv");
	assert_string_equal(e.settings_hash, "");
	ledger_entry_clear(&e);
}

static void test_done_report(void **state)
{
	struct report r;
	cJSON *o;
	const cJSON *imp, *counts;

	(void)state;
	report_done(&r);
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "outcome", "done");
	assert_str(o, "folder", "newsletter");
	assert_str(o, "file", "contacts.csv");
	assert_num(o, "bytes", 1234);
	assert_str(o, "sha256", SHA);
	assert_num(o, "attempts", 2);
	assert_str(o, "claimed_at", "2026-11-26T04:01:02.123Z");
	assert_str(o, "uploaded_at", "2026-11-26T04:01:03.004Z");
	assert_str(o, "finished_at", "2026-11-26T04:01:10.999Z");
	assert_num(o, "http_status", 201);
	assert_str(o, "import_id", IMPORT_ID);
	imp = get(o, "import");
	assert_true(cJSON_IsObject(imp));
	assert_str(imp, "status", "completed");
	assert_str(imp, "completed_at", "2026-11-26T04:01:09.000Z");
	counts = get(imp, "counts");
	assert_num(counts, "total", 3);
	assert_num(counts, "created", 2);
	assert_num(counts, "updated", 1);
	assert_num(counts, "skipped", 0);
	assert_num(counts, "failed", 0);
	assert_null_field(o, "error");
	cJSON_Delete(o);
}

/* follow_import off: uploaded, import never read. */
static void test_done_without_import(void **state)
{
	struct report r;
	cJSON *o;

	(void)state;
	report_done(&r);
	memset(&r.import, 0, sizeof(r.import));
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "outcome", "done");
	assert_str(o, "import_id", IMPORT_ID);
	assert_null_field(o, "import");
	assert_null_field(o, "error");
	cJSON_Delete(o);
}

/* Counts the API did not send are left out, not made up. */
static void test_done_partial_counts(void **state)
{
	struct report r;
	cJSON *o;
	const cJSON *counts;

	(void)state;
	report_done(&r);
	r.import.updated = r.import.skipped = r.import.failed = -1;
	r.import.completed_at[0] = '\0';
	o = parse_report(&r, FINISHED_MS);
	counts = get(get(o, "import"), "counts");
	assert_num(counts, "total", 3);
	assert_num(counts, "created", 2);
	assert_null(cJSON_GetObjectItemCaseSensitive(counts, "updated"));
	assert_null(cJSON_GetObjectItemCaseSensitive(counts, "skipped"));
	assert_null(cJSON_GetObjectItemCaseSensitive(counts, "failed"));
	cJSON_Delete(o);
}

/* Refused before any upload (a symlink: never read, so no sha256). */
static void test_failed_at_check_report(void **state)
{
	struct report r = {0};
	cJSON *o;
	const cJSON *err;

	(void)state;
	r.folder = "newsletter";
	r.file = "link.csv";
	r.claimed_at_ms = CLAIMED_MS;
	report_fail(&r, REPORT_STAGE_CHECK, 0, NULL, "%s", "is a symbolic link");
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "outcome", "failed");
	assert_str(o, "file", "link.csv");
	assert_num(o, "bytes", 0);
	assert_null_field(o, "sha256");
	assert_num(o, "attempts", 0);
	assert_str(o, "claimed_at", "2026-11-26T04:01:02.123Z");
	assert_null_field(o, "uploaded_at");
	assert_str(o, "finished_at", "2026-11-26T04:01:10.999Z");
	assert_null_field(o, "http_status");
	assert_null_field(o, "import_id");
	assert_null_field(o, "import");
	err = get(o, "error");
	assert_true(cJSON_IsObject(err));
	assert_str(err, "stage", "check");
	assert_null_field(err, "http_status");
	assert_null_field(err, "name");
	assert_str(err, "message", "is a symbolic link");
	cJSON_Delete(o);

	/* A header refusal: the file was read, so its hash is known. */
	snprintf(r.sha256, sizeof(r.sha256), "%s", SHA);
	r.bytes = 40;
	report_fail(&r, REPORT_STAGE_CHECK, 0, NULL, "CSV header lacks column '%s'", "Email");
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "sha256", SHA);
	assert_num(o, "bytes", 40);
	assert_str(get(o, "error"), "message", "CSV header lacks column 'Email'");
	cJSON_Delete(o);
}

static void test_failed_at_upload_report(void **state)
{
	struct report r = {0};
	cJSON *o;
	const cJSON *err;

	(void)state;
	r.folder = "newsletter";
	r.file = "contacts.csv";
	r.bytes = 99;
	snprintf(r.sha256, sizeof(r.sha256), "%s", SHA);
	r.attempts = 1;
	r.claimed_at_ms = CLAIMED_MS;
	r.http_status = 422;
	report_fail(&r, REPORT_STAGE_UPLOAD, 422, "validation_error",
		    "The `segments` field contains an unknown id.");
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "outcome", "failed");
	assert_num(o, "http_status", 422);
	assert_null_field(o, "uploaded_at");
	assert_null_field(o, "import_id");
	assert_null_field(o, "import");
	err = get(o, "error");
	assert_str(err, "stage", "upload");
	assert_num(err, "http_status", 422);
	assert_str(err, "name", "validation_error");
	assert_str(err, "message", "The `segments` field contains an unknown id.");
	cJSON_Delete(o);

	/* A transport failure after the retries were spent: no HTTP status anywhere. */
	r.http_status = 0;
	report_fail(&r, REPORT_STAGE_UPLOAD, 0, NULL, "Couldn't connect to server");
	r.attempts = 8;
	o = parse_report(&r, FINISHED_MS);
	assert_null_field(o, "http_status");
	err = get(o, "error");
	assert_null_field(err, "http_status");
	assert_null_field(err, "name");
	assert_num(o, "attempts", 8);
	cJSON_Delete(o);
}

static void test_failed_at_import_report(void **state)
{
	struct report r;
	cJSON *o;

	(void)state;
	report_done(&r);
	snprintf(r.import.status, sizeof(r.import.status), "failed");
	r.import.has_counts = false;
	r.import.completed_at[0] = '\0';
	report_fail(&r, REPORT_STAGE_IMPORT, 0, NULL, "import %s failed", IMPORT_ID);
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "outcome", "failed");
	assert_str(o, "import_id", IMPORT_ID);
	assert_str(get(o, "import"), "status", "failed");
	assert_null(cJSON_GetObjectItemCaseSensitive(get(o, "import"), "counts"));
	assert_str(get(o, "error"), "stage", "import");
	cJSON_Delete(o);
	assert_string_equal(report_stage_name(REPORT_STAGE_CHECK), "check");
	assert_string_equal(report_stage_name(REPORT_STAGE_UPLOAD), "upload");
	assert_string_equal(report_stage_name(REPORT_STAGE_IMPORT), "import");
}

/* File names can be any bytes; the report stays valid JSON (UTF-8), with the escaped form the
 * logs use. */
static void test_non_utf8_name_is_valid_json(void **state)
{
	struct report r;
	char *text;
	cJSON *o;

	(void)state;
	report_done(&r);
	r.file = "caf\xe9 \\ list.csv"; /* Latin-1 é, and a backslash */
	text = report_json(&r, FINISHED_MS);
	assert_non_null(text);
	/* Every byte of the text is UTF-8: no raw 0xe9 got through. */
	assert_null(strchr(text, '\xe9'));
	o = cJSON_Parse(text);
	assert_non_null(o);
	assert_str(o, "file", "caf\\xe9 \\\\ list.csv");
	cJSON_Delete(o);
	cJSON_free(text);

	/* A valid UTF-8 name is kept as it is, backslash and all. */
	r.file = "café \\ list.csv";
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "file", "café \\ list.csv");
	cJSON_Delete(o);

	/* The error message can carry a server's bytes too. */
	report_fail(&r, REPORT_STAGE_UPLOAD, 400, "bad\xff", "broken \xc3 message");
	o = parse_report(&r, FINISHED_MS);
	assert_str(get(o, "error"), "name", "bad\\xff");
	assert_str(get(o, "error"), "message", "broken \\xc3 message");
	cJSON_Delete(o);
}

/* The outcome line, captured through log_set_stream: the text after "<timestamp> <level>: ". */
static char *outcome_line(const struct report *r, const char *dir, const char *final,
			  const char *level)
{
	char *buf = NULL, *msg, *nl;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	char prefix[32];

	assert_non_null(f);
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	log_set_stream(f);
	report_log_outcome(r, dir, final);
	log_set_stream(NULL);
	fclose(f);
	/* One line. */
	nl = strchr(buf, '\n');
	assert_non_null(nl);
	assert_int_equal(nl[1], '\0');
	*nl = '\0';
	snprintf(prefix, sizeof(prefix), " %s: ", level);
	msg = strstr(buf, prefix);
	if (!msg)
		fail_msg("no '%s' in '%s'", prefix, buf);
	msg = strdup(msg + strlen(prefix));
	free(buf);
	return msg;
}

static bool ends_with_str(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	if (a < b || strcmp(s + a - b, suffix) != 0) {
		print_error("'%s' does not end with '%s'\n", s, suffix);
		return false;
	}
	return true;
}

static void test_log_done_with_counts(void **state)
{
	struct report r;
	char *line;

	(void)state;
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	r.attempts = 1;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' imported, import " IMPORT_ID
				  ", 3 rows (2 created, 1 updated, 0 skipped, 0 failed), 1 attempt");
	free(line);
}

/* One row is "1 row"; the waits for the rate limit are said apart from the attempts. */
static void test_log_done_one_row_and_waits(void **state)
{
	struct report r;
	char *line;
	cJSON *o;

	(void)state;
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	r.attempts = 1;
	r.rate_limited = 3;
	r.import.total = 1;
	r.import.created = 1;
	r.import.updated = r.import.skipped = r.import.failed = 0;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' imported, import " IMPORT_ID
				  ", 1 row (1 created, 0 updated, 0 skipped, 0 failed), 1 attempt, 3 "
				  "waits for the rate limit");
	free(line);
	o = parse_report(&r, 1764129662000);
	assert_num(o, "attempts", 1);
	assert_num(o, "rate_limited", 3);
	cJSON_Delete(o);
}

static void test_log_done_without_counts(void **state)
{
	struct report r;
	char *line;

	(void)state;
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	memset(&r.import, 0, sizeof(r.import));
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' uploaded, import " IMPORT_ID ", 1234 bytes, 2 attempts");
	free(line);
}

/* Counts the API left out must not show up as "-1 updated" in the log. */
static void test_log_done_partial_counts(void **state)
{
	struct report r;
	char *line;

	(void)state;
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	r.import.updated = r.import.skipped = r.import.failed = -1;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	bool made_up = strstr(line, "-1") != NULL;
	bool has_known = strstr(line, "3 rows") && strstr(line, "2 created");

	if (made_up || !has_known) {
		print_error("made-up or missing counts in '%s'\n", line);
		free(line);
		fail();
	}
	free(line);
}

static void test_log_failed(void **state)
{
	struct report r = {0};
	char *line;

	(void)state;
	r.folder = "news";
	r.file = "a.csv";
	r.attempts = 3;
	report_fail(&r, REPORT_STAGE_UPLOAD, 422, "validation_error", "Invalid segment");
	line = outcome_line(&r, "/srv/failed", "a.20261126T040102Z.csv", "error");
	assert_string_equal(line, "news: 'a.csv' failed at upload: Invalid segment [validation_error] "
				  "(moved to /srv/failed/a.20261126T040102Z.csv, 3 attempts)");
	free(line);

	/* No error name, one attempt, and a name that tries to start a log line of its own. */
	r.file = "evil\nnews: 'x.csv' imported.csv";
	r.attempts = 1;
	report_fail(&r, REPORT_STAGE_CHECK, 0, NULL, "is a FIFO");
	line = outcome_line(&r, "/srv/failed", "evil.csv", "error");
	assert_string_equal(line, "news: 'evil\\nnews: 'x.csv' imported.csv' failed at check: is a "
				  "FIFO (moved to /srv/failed/evil.csv, 1 attempt)");
	free(line);
}

/* Failed after Resend made an import (the file changed while it was uploaded): the import's
 * id stays in the report, for the operator to decide about it. */
static void test_failed_after_import_keeps_its_id(void **state)
{
	struct report r = {0};
	cJSON *o;
	const cJSON *err;

	(void)state;
	r.folder = "newsletter";
	r.file = "contacts.csv";
	r.bytes = 17377790;
	snprintf(r.sha256, sizeof(r.sha256), "%s", SHA);
	r.attempts = 1;
	r.claimed_at_ms = CLAIMED_MS;
	r.uploaded_at_ms = UPLOADED_MS;
	r.http_status = 201;
	snprintf(r.import_id, sizeof(r.import_id), "%s", IMPORT_ID);
	report_fail(&r, REPORT_STAGE_UPLOAD, 0, NULL,
		    "the file changed while it was being uploaded: 17,377,790 \u2192 17,390,180 "
		    "bytes; Resend made import %s from what was sent", IMPORT_ID);
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "outcome", "failed");
	assert_str(o, "import_id", IMPORT_ID);
	assert_num(o, "http_status", 201);
	assert_null_field(o, "import");
	err = get(o, "error");
	assert_str(err, "stage", "upload");
	assert_null_field(err, "http_status");
	assert_str(err, "message",
		   "the file changed while it was being uploaded: 17,377,790 \u2192 17,390,180 "
		   "bytes; Resend made import " IMPORT_ID " from what was sent");
	cJSON_Delete(o);
}

/* ---- the CSV: what it was found to be, what was made of it --------------------------------- */

static const char *const csv_keys[] = {
	"encoding_from", "encoding_to",	  "bom",	  "sep_line",	   "delimiter",
	"header",	 "renamed_columns", "normalized", "rows",	   "rows_uploaded",
	"rows_rejected", "rejected",	  "invalid_rows", "rejects_file", "bytes_before",
	"bytes_after",	 NULL};

static size_t n_children(const cJSON *o)
{
	size_t n = 0;

	for (const cJSON *c = o->child; c; c = c->next)
		n++;
	return n;
}

static const cJSON *csv_of(const cJSON *o)
{
	const cJSON *c = get(o, "csv");

	if (!cJSON_IsObject(c))
		fail_msg("'csv' is not an object");
	for (size_t i = 0; csv_keys[i]; i++) {
		if (!cJSON_GetObjectItemCaseSensitive(c, csv_keys[i]))
			fail_msg("csv lacks '%s'", csv_keys[i]);
	}
	assert_int_equal(n_children(c), sizeof(csv_keys) / sizeof(csv_keys[0]) - 1);
	return c;
}

/* A legacy export: windows-1252, semicolons, a sep= line, two rows rejected. */
static void legacy_csv(struct normalize *n)
{
	memset(n, 0, sizeof(*n));
	n->read = true;
	n->encoding_from = "windows-1252";
	n->bom = NULL;
	n->sep_line = true;
	n->delimiter = ';';
	n->header = CONFIG_HEADER_EXACT;
	n->normalized = true;
	n->rows = 1000;
	n->rows_uploaded = 998;
	n->rows_rejected = 2;
	n->rejected[NORMALIZE_WRONG_FIELD_COUNT] = 1;
	n->rejected[NORMALIZE_INVALID_EMAIL] = 1;
	n->invalid_rows = CONFIG_INVALID_ROWS_DROP;
	n->bytes_before = 12345;
	n->bytes_after = 12000;
	n->fd = -1;
}

static void test_csv_report(void **state)
{
	struct report r;
	struct normalize n;
	cJSON *o;
	const cJSON *c, *rej;

	(void)state;
	report_done(&r);
	legacy_csv(&n);
	r.csv = &n;
	r.rejects_file = "contacts.csv.rejects.csv";
	o = parse_report(&r, FINISHED_MS);
	c = csv_of(o);
	assert_str(c, "encoding_from", "windows-1252");
	assert_str(c, "encoding_to", "utf-8");
	assert_null_field(c, "bom");
	assert_true(cJSON_IsTrue(get(c, "sep_line")));
	assert_str(c, "delimiter", ";");
	assert_str(c, "header", "exact");
	assert_true(cJSON_IsObject(get(c, "renamed_columns")));
	assert_int_equal(n_children(get(c, "renamed_columns")), 0);
	assert_true(cJSON_IsTrue(get(c, "normalized")));
	assert_num(c, "rows", 1000);
	assert_num(c, "rows_uploaded", 998);
	assert_num(c, "rows_rejected", 2);
	rej = get(c, "rejected");
	assert_true(cJSON_IsObject(rej));
	assert_int_equal(n_children(rej), 4);
	assert_num(rej, "wrong_field_count", 1);
	assert_num(rej, "empty_email", 0);
	assert_num(rej, "invalid_email", 1);
	assert_num(rej, "repeated_email", 0);
	assert_str(c, "invalid_rows", "drop");
	assert_str(c, "rejects_file", "contacts.csv.rejects.csv");
	assert_num(c, "bytes_before", 12345);
	assert_num(c, "bytes_after", 12000);
	cJSON_Delete(o);

	/* The fast path: clean UTF-8 with a BOM, commas, nothing rejected, no rejects file. */
	legacy_csv(&n);
	n.encoding_from = "utf-8";
	n.bom = "utf-8";
	n.sep_line = false;
	n.delimiter = ',';
	n.normalized = false;
	n.rows_uploaded = n.rows;
	n.rows_rejected = 0;
	memset(n.rejected, 0, sizeof(n.rejected));
	n.invalid_rows = CONFIG_INVALID_ROWS_IMPORT;
	n.bytes_after = n.bytes_before;
	r.rejects_file = NULL;
	o = parse_report(&r, FINISHED_MS);
	c = csv_of(o);
	assert_str(c, "encoding_from", "utf-8");
	assert_str(c, "bom", "utf-8");
	assert_false(cJSON_IsTrue(get(c, "sep_line")));
	assert_true(cJSON_IsBool(get(c, "sep_line")));
	assert_str(c, "delimiter", ",");
	assert_false(cJSON_IsTrue(get(c, "normalized")));
	assert_true(cJSON_IsBool(get(c, "normalized")));
	assert_num(c, "rows_rejected", 0);
	assert_str(c, "invalid_rows", "import");
	assert_null_field(c, "rejects_file");
	assert_num(c, "bytes_after", 12345);
	cJSON_Delete(o);

	/* A tab is the tab character itself; fail_file by its name. */
	n.delimiter = '\t';
	n.invalid_rows = CONFIG_INVALID_ROWS_FAIL_FILE;
	o = parse_report(&r, FINISHED_MS);
	c = csv_of(o);
	assert_str(c, "delimiter", "\t");
	assert_str(c, "invalid_rows", "fail_file");
	cJSON_Delete(o);
}

/* Relaxed matching lists the names it changed, from the file's to the mapped one. */
static void test_csv_report_renamed_columns(void **state)
{
	char *from[] = {" e-mail ", "FIRST NAME"}, *to[] = {"Email", "First Name"};
	struct report r;
	struct normalize n;
	cJSON *o;
	const cJSON *c, *ren;

	(void)state;
	report_done(&r);
	legacy_csv(&n);
	n.header = CONFIG_HEADER_RELAXED;
	n.renamed_from = from;
	n.renamed_to = to;
	n.n_renamed = 2;
	r.csv = &n;
	o = parse_report(&r, FINISHED_MS);
	c = csv_of(o);
	assert_str(c, "header", "relaxed");
	ren = get(c, "renamed_columns");
	assert_true(cJSON_IsObject(ren));
	assert_int_equal(n_children(ren), 2);
	assert_str(ren, " e-mail ", "Email");
	assert_str(ren, "FIRST NAME", "First Name");
	/* The rejects file is null without one, whatever else the CSV was. */
	assert_null_field(c, "rejects_file");
	cJSON_Delete(o);

	/* A header name of the file's bytes that is not UTF-8 still gives valid JSON. */
	from[0] = "e-mail\xe9";
	o = parse_report(&r, FINISHED_MS);
	ren = get(csv_of(o), "renamed_columns");
	assert_int_equal(n_children(ren), 2);
	assert_str(ren, "FIRST NAME", "First Name");
	cJSON_Delete(o);
}

/* Never read (not a regular file, failed before the CSV): null, whatever else it holds. */
static void test_csv_null_when_not_read(void **state)
{
	struct report r = {0};
	struct normalize n;
	cJSON *o;

	(void)state;
	r.folder = "newsletter";
	r.file = "link.csv";
	r.claimed_at_ms = CLAIMED_MS;
	report_fail(&r, REPORT_STAGE_CHECK, 0, NULL, "%s", "is a symbolic link");
	o = parse_report(&r, FINISHED_MS);
	assert_null_field(o, "csv");
	cJSON_Delete(o);

	legacy_csv(&n);
	n.read = false;
	r.csv = &n;
	r.rejects_file = "link.csv.rejects.csv";
	o = parse_report(&r, FINISHED_MS);
	assert_null_field(o, "csv");
	cJSON_Delete(o);

	/* Read, and refused for its rows: the CSV is described beside the error. */
	n.read = true;
	n.invalid_rows = CONFIG_INVALID_ROWS_FAIL_FILE;
	report_fail(&r, REPORT_STAGE_CHECK, 0, NULL, "2 of 1000 rows rejected");
	o = parse_report(&r, FINISHED_MS);
	assert_str(csv_of(o), "rejects_file", "link.csv.rejects.csv");
	assert_str(get(o, "error"), "stage", "check");
	cJSON_Delete(o);
}

/* ---- files split into parts ------------------------------------------------------------------ */

static void part_done(struct report_part *p, const char *id, int64_t total)
{
	memset(p, 0, sizeof(*p));
	p->rows = (uint64_t)total;
	p->bytes = 100 + (uint64_t)total * 10;
	p->attempts = 1;
	p->http_status = 201;
	snprintf(p->import_id, sizeof(p->import_id), "%s", id);
	p->import.state = RESEND_IMPORT_COMPLETED;
	snprintf(p->import.status, sizeof(p->import.status), "completed");
	p->import.has_counts = true;
	p->import.total = total;
	p->import.created = total - 1;
	p->import.updated = 1;
	p->import.skipped = 0;
	p->import.failed = 0;
	snprintf(p->import.completed_at, sizeof(p->import.completed_at),
		 "2026-11-26T04:01:09.000Z");
}

#define PART_ID(n) "00000000-0000-4000-8000-00000000000" #n
static const char *const part_keys[] = {"part",        "rows",	 "bytes", "attempts",
					"http_status", "import_id", "import", NULL};

static void test_parts_report(void **state)
{
	struct report_part parts[3];
	struct report r;
	cJSON *o;
	const cJSON *a, *p, *counts;

	(void)state;
	report_done(&r);
	part_done(&parts[0], PART_ID(1), 5);
	part_done(&parts[1], PART_ID(2), 7);
	part_done(&parts[2], PART_ID(3), 3);
	parts[1].attempts = 2;
	r.parts = parts;
	r.n_parts = 3;
	snprintf(r.import_id, sizeof(r.import_id), "%s", PART_ID(1));
	report_sum_parts(&r);
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "import_id", PART_ID(1)); /* the first part's */
	assert_str(get(o, "import"), "status", "completed");
	counts = get(get(o, "import"), "counts");
	assert_num(counts, "total", 15);
	assert_num(counts, "created", 12);
	assert_num(counts, "updated", 3);
	assert_num(counts, "skipped", 0);
	assert_num(counts, "failed", 0);
	a = get(o, "parts");
	assert_int_equal(cJSON_GetArraySize(a), 3);
	for (int i = 0; i < 3; i++) {
		p = cJSON_GetArrayItem(a, i);
		assert_true(cJSON_IsObject(p));
		for (size_t k = 0; part_keys[k]; k++) {
			if (!cJSON_GetObjectItemCaseSensitive(p, part_keys[k]))
				fail_msg("part %d lacks '%s'", i + 1, part_keys[k]);
		}
		assert_int_equal(n_children(p), sizeof(part_keys) / sizeof(part_keys[0]) - 1);
		assert_num(p, "part", i + 1);
		assert_num(p, "rows", (double)parts[i].rows);
		assert_num(p, "bytes", (double)parts[i].bytes);
		assert_num(p, "attempts", parts[i].attempts);
		assert_num(p, "http_status", 201);
		assert_str(p, "import_id", parts[i].import_id);
		assert_str(get(p, "import"), "status", "completed");
		assert_num(get(get(p, "import"), "counts"), "total", (double)parts[i].import.total);
		assert_str(get(p, "import"), "completed_at", "2026-11-26T04:01:09.000Z");
	}
	cJSON_Delete(o);

	/* Not uploaded yet (a file that failed after its first part), import not read: nulls. */
	memset(&parts[2], 0, sizeof(parts[2]));
	memset(&parts[1].import, 0, sizeof(parts[1].import));
	report_fail(&r, REPORT_STAGE_UPLOAD, 0, NULL, "Couldn't connect to server");
	o = parse_report(&r, FINISHED_MS);
	a = get(o, "parts");
	assert_int_equal(cJSON_GetArraySize(a), 3);
	p = cJSON_GetArrayItem(a, 1);
	assert_str(p, "import_id", PART_ID(2));
	assert_null_field(p, "import");
	p = cJSON_GetArrayItem(a, 2);
	assert_num(p, "part", 3);
	assert_null_field(p, "import_id");
	assert_null_field(p, "http_status");
	assert_null_field(p, "import");
	assert_num(p, "attempts", 0);
	cJSON_Delete(o);

	/* One part is no split: no "parts" (parse_report checks), the import as it was. */
	report_done(&r);
	part_done(&parts[0], IMPORT_ID, 3);
	r.parts = parts;
	r.n_parts = 1;
	report_sum_parts(&r);
	o = parse_report(&r, FINISHED_MS);
	assert_str(o, "import_id", IMPORT_ID);
	assert_num(get(get(o, "import"), "counts"), "total", 3);
	cJSON_Delete(o);
}

static void test_sum_parts(void **state)
{
	struct report_part parts[3];
	struct report r;

	(void)state;
	report_done(&r);
	part_done(&parts[0], PART_ID(1), 5);
	part_done(&parts[1], PART_ID(2), 7);
	part_done(&parts[2], PART_ID(3), 3);
	parts[1].import.skipped = 2;
	parts[2].import.failed = 1;
	r.parts = parts;
	r.n_parts = 3;
	report_sum_parts(&r);
	assert_int_equal(r.import.state, RESEND_IMPORT_COMPLETED);
	assert_string_equal(r.import.status, "completed");
	assert_true(r.import.has_counts);
	assert_int_equal(r.import.total, 15);
	assert_int_equal(r.import.created, 12);
	assert_int_equal(r.import.updated, 3);
	assert_int_equal(r.import.skipped, 2);
	assert_int_equal(r.import.failed, 1);

	/* Counts a part did not send (-1) add nothing. */
	parts[1].import.updated = -1;
	report_sum_parts(&r);
	assert_int_equal(r.import.updated, 2);
	assert_int_equal(r.import.total, 15);
	parts[1].import.updated = 1;

	/* One not completed yet: not completed. */
	parts[1].import.state = RESEND_IMPORT_IN_PROGRESS;
	snprintf(parts[1].import.status, sizeof(parts[1].import.status), "in_progress");
	report_sum_parts(&r);
	assert_int_equal(r.import.state, RESEND_IMPORT_IN_PROGRESS);
	assert_string_not_equal(r.import.status, "completed");
	assert_string_not_equal(r.import.status, "failed");
	assert_int_equal(r.import.total, 15);

	/* One failed: failed, whatever the others (and whichever it is). */
	for (int f = 0; f < 3; f++) {
		for (int i = 0; i < 3; i++) {
			parts[i].import.state =
				i == f ? RESEND_IMPORT_FAILED : RESEND_IMPORT_COMPLETED;
			snprintf(parts[i].import.status, sizeof(parts[i].import.status), "%s",
				 i == f ? "failed" : "completed");
		}
		report_sum_parts(&r);
		assert_int_equal(r.import.state, RESEND_IMPORT_FAILED);
		assert_string_equal(r.import.status, "failed");
		assert_int_equal(r.import.created, 12);
	}
	parts[0].import.state = RESEND_IMPORT_IN_PROGRESS;
	parts[1].import.state = RESEND_IMPORT_FAILED;
	report_sum_parts(&r);
	assert_int_equal(r.import.state, RESEND_IMPORT_FAILED);

	/* A part never read (no status) is not completed either. */
	for (int i = 0; i < 3; i++)
		part_done(&parts[i], PART_ID(1), 1);
	memset(&parts[2].import, 0, sizeof(parts[2].import));
	report_sum_parts(&r);
	assert_int_not_equal(r.import.state, RESEND_IMPORT_COMPLETED);
	assert_int_equal(r.import.total, 2);

	/* The sum is made afresh each time, not added to the last one. */
	part_done(&parts[2], PART_ID(3), 1);
	report_sum_parts(&r);
	report_sum_parts(&r);
	assert_int_equal(r.import.total, 3);
	assert_int_equal(r.import.state, RESEND_IMPORT_COMPLETED);

	/* A file in one part keeps its own import untouched. */
	report_done(&r);
	part_done(&parts[0], IMPORT_ID, 99);
	r.parts = parts;
	r.n_parts = 1;
	report_sum_parts(&r);
	assert_int_equal(r.import.total, 3);
	r.n_parts = 0;
	report_sum_parts(&r);
	assert_int_equal(r.import.total, 3);
	assert_string_equal(r.import.status, "completed");
}

/* The outcome line says what was rejected and where it is listed. */
static void test_log_rows_rejected(void **state)
{
	struct report r;
	struct normalize n;
	char *line;

	(void)state;
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	r.attempts = 1;
	legacy_csv(&n);
	r.csv = &n;
	r.rejects_file = "a.csv.rejects.csv";
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' imported, import " IMPORT_ID
				  ", 3 rows (2 created, 1 updated, 0 skipped, 0 failed), 1 attempt"
				  "; 2 rows rejected (listed in a.csv.rejects.csv)");
	free(line);

	/* One row; without counts. */
	n.rows_rejected = 1;
	memset(&r.import, 0, sizeof(r.import));
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' uploaded, import " IMPORT_ID ", 1234 bytes, "
				  "1 attempt; 1 row rejected (listed in a.csv.rejects.csv)");
	free(line);

	/* Failed for them (fail_file): the rejects file is beside it in failed/. */
	n.rows_rejected = 2;
	report_fail(&r, REPORT_STAGE_CHECK, 0, NULL, "2 of 1000 rows rejected");
	r.attempts = 0;
	r.rejects_file = "a.20261126T040102Z.csv.rejects.csv";
	line = outcome_line(&r, "/srv/failed", "a.20261126T040102Z.csv", "error");
	assert_string_equal(line, "news: 'a.csv' failed at check: 2 of 1000 rows rejected (moved "
				  "to /srv/failed/a.20261126T040102Z.csv, 0 attempts); 2 rows "
				  "rejected (listed in a.20261126T040102Z.csv.rejects.csv)");
	free(line);

	/* No rejects file (it could not be named): the count alone. */
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	r.attempts = 1;
	r.csv = &n;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_true(ends_with_str(line, ", 1 attempt; 2 rows rejected"));
	free(line);

	/* Nothing rejected, or never read: the line as it always was. */
	n.rows_rejected = 0;
	r.rejects_file = NULL;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_true(ends_with_str(line, ", 1 attempt"));
	free(line);
	r.csv = NULL;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_true(ends_with_str(line, ", 1 attempt"));
	free(line);
}

/* A split file: its first import, and how many more. */
static void test_log_parts(void **state)
{
	struct report_part parts[3];
	struct report r;
	struct normalize n;
	char *line;

	(void)state;
	report_done(&r);
	r.file = "a.csv";
	r.folder = "news";
	r.attempts = 3;
	part_done(&parts[0], PART_ID(1), 5);
	part_done(&parts[1], PART_ID(2), 7);
	part_done(&parts[2], PART_ID(3), 3);
	r.parts = parts;
	r.n_parts = 3;
	snprintf(r.import_id, sizeof(r.import_id), "%s", PART_ID(1));
	report_sum_parts(&r);
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' imported, import " PART_ID(1)
				  " and 2 more (3 parts), 15 rows (12 created, 3 updated, "
				  "0 skipped, 0 failed), 3 attempts");
	free(line);

	/* Not followed: uploaded, with the bytes; and rows rejected at the end. */
	memset(&r.import, 0, sizeof(r.import));
	r.n_parts = 2;
	legacy_csv(&n);
	r.csv = &n;
	r.rejects_file = "a.csv.rejects.csv";
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_string_equal(line, "news: 'a.csv' uploaded, import " PART_ID(1)
				  " and 1 more (2 parts), 1234 bytes, 3 attempts; 2 rows "
				  "rejected (listed in a.csv.rejects.csv)");
	free(line);

	/* One part: no "more". */
	r.n_parts = 1;
	r.csv = NULL;
	line = outcome_line(&r, "/srv/done", "a.csv", "info");
	assert_null(strstr(line, "more"));
	assert_null(strstr(line, "parts"));
	free(line);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ledger_entry),
		cmocka_unit_test(test_done_report),
		cmocka_unit_test(test_done_without_import),
		cmocka_unit_test(test_done_partial_counts),
		cmocka_unit_test(test_failed_at_check_report),
		cmocka_unit_test(test_failed_at_upload_report),
		cmocka_unit_test(test_failed_at_import_report),
		cmocka_unit_test(test_non_utf8_name_is_valid_json),
		cmocka_unit_test(test_log_done_with_counts),
		cmocka_unit_test(test_log_done_one_row_and_waits),
		cmocka_unit_test(test_log_done_without_counts),
		cmocka_unit_test(test_log_done_partial_counts),
		cmocka_unit_test(test_log_failed),
		cmocka_unit_test(test_failed_after_import_keeps_its_id),
		cmocka_unit_test(test_csv_report),
		cmocka_unit_test(test_csv_report_renamed_columns),
		cmocka_unit_test(test_csv_null_when_not_read),
		cmocka_unit_test(test_parts_report),
		cmocka_unit_test(test_sum_parts),
		cmocka_unit_test(test_log_rows_rejected),
		cmocka_unit_test(test_log_parts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
