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

#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define IMPORT_ID "479e3145-dd38-476b-932c-529ceb705947"
/* 2026-11-26T04:01:02.123Z and a little later */
#define CLAIMED_MS 1795665662123
#define UPLOADED_MS 1795665663004
#define FINISHED_MS 1795665670999

/* Every report has every key, null where it does not apply, so that readers need no guessing. */
static const char *const report_keys[] = {
	"outcome",     "folder",      "file",	     "bytes",	  "sha256", "attempts", "claimed_at",
	"uploaded_at", "finished_at", "http_status", "import_id", "import", "csv",	"error", NULL};

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
	assert_int_equal(n, sizeof(report_keys) / sizeof(report_keys[0]) - 1);
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

static void test_format_count(void **state)
{
	char buf[REPORT_COUNT_LEN];

	(void)state;
	assert_string_equal(report_format_count(buf, 0), "0");
	assert_string_equal(report_format_count(buf, 999), "999");
	assert_string_equal(report_format_count(buf, 1000), "1,000");
	assert_string_equal(report_format_count(buf, 123456), "123,456");
	assert_string_equal(report_format_count(buf, 17377790), "17,377,790");
	assert_string_equal(report_format_count(buf, UINT64_MAX), "18,446,744,073,709,551,615");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_done_report),
		cmocka_unit_test(test_done_without_import),
		cmocka_unit_test(test_done_partial_counts),
		cmocka_unit_test(test_failed_at_check_report),
		cmocka_unit_test(test_failed_at_upload_report),
		cmocka_unit_test(test_failed_at_import_report),
		cmocka_unit_test(test_non_utf8_name_is_valid_json),
		cmocka_unit_test(test_log_done_with_counts),
		cmocka_unit_test(test_log_done_without_counts),
		cmocka_unit_test(test_log_done_partial_counts),
		cmocka_unit_test(test_log_failed),
		cmocka_unit_test(test_failed_after_import_keeps_its_id),
		cmocka_unit_test(test_format_count),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
