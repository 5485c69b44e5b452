/* The e-mails of e-mail receivers: what mail_compose writes for a file's failure, a daemon's
 * trouble and the daily digest (from, to, a one-line subject, the text); when the next digest is
 * due by the local clock (time zones, a DST gap); what digest_collect reads from a real SQLite
 * ledger; and the digest's event, whose msg_id every host of a fleet makes alike. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "digest.h"
#include "events.h"
#include "ledger.h"
#include "mail.h"

static char *to[] = {"ops@example.com", "Oncall <oncall@example.com>"};

static struct config_email receiver(void)
{
	return (struct config_email){
		.n = {.name = "ops", .events = CONFIG_EMAIL_EVENTS_DEFAULT},
		.from = "resend-dropd <dropd@example.com>",
		.to = to,
		.n_to = 2,
		.digest_minute = 8 * 60,
	};
}

static cJSON *compose(const char *payload)
{
	struct config_email m = receiver();
	char *body = NULL;
	cJSON *o;

	assert_int_equal(mail_compose(&m, payload, "msg_0123", &body), 0);
	o = cJSON_Parse(body);
	cJSON_free(body);
	assert_non_null(o);
	return o;
}

static const char *field(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	assert_true(cJSON_IsString(v));
	return v->valuestring;
}

static void test_a_failed_file(void **state)
{
	(void)state;
	cJSON *o = compose(
		"{\"type\":\"file.failed\",\"timestamp\":\"2026-12-08T01:00:00.000Z\",\"data\":{"
		"\"folder\":\"crm\",\"file\":\"bad\\nname.csv\",\"host\":\"sftp-1\","
		"\"outcome\":\"failed\",\"rows\":{\"read\":3,\"uploaded\":0,\"rejected\":0},"
		"\"import_id\":null,\"import\":null,\"error\":{\"stage\":\"check\","
		"\"http_status\":null,\"name\":null,\"message\":\"CSV header lacks column "
		"'email'\"}}}");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "to");
	const char *subject = field(o, "subject"), *text = field(o, "text");

	assert_string_equal(field(o, "from"), "resend-dropd <dropd@example.com>");
	assert_int_equal(cJSON_GetArraySize(t), 2);
	assert_string_equal(cJSON_GetArrayItem(t, 1)->valuestring, "Oncall <oncall@example.com>");
	/* One line, whatever the file's name holds; the host said. */
	assert_string_equal(subject, "resend-dropd: bad\\nname.csv failed in crm (sftp-1)");
	assert_null(strchr(subject, '\n'));
	/* The opening paragraph is wrapped for a plain-text reader, and names the way back. */
	for (const char *p = text; *p && *p != '\n'; p = strchr(p, '\n') + 1)
		assert_true(strcspn(p, "\n") <= 72);
	assert_non_null(strstr(text, "`resend-dropd retry crm bad\nname.csv`") ||
			strstr(text, "`resend-dropd retry crm"));
	assert_non_null(strstr(text, "Error:     CSV header lacks column 'email'"));
	assert_non_null(strstr(text, "Stage:     check"));
	assert_non_null(strstr(text, "Rows:      3 read, 0 uploaded, 0 rejected"));
	assert_non_null(strstr(text, "event msg_0123 (file.failed)"));
	assert_string_equal(
		cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(
			cJSON_GetObjectItemCaseSensitive(o, "tags"), 0), "value")->valuestring,
		"file_failed");
	cJSON_Delete(o);
}

static void test_a_daemons_trouble(void **state)
{
	(void)state;
	cJSON *o = compose("{\"type\":\"folder.stuck\",\"timestamp\":\"2026-12-08T01:00:00.000Z\","
			   "\"data\":{\"folder\":\"news\",\"message\":\"the folder cannot be "
			   "served: inbox missing\"}}");

	assert_string_equal(field(o, "subject"), "resend-dropd: news: a folder cannot be served");
	assert_non_null(strstr(field(o, "text"), "news: the folder cannot be served: inbox missing"));
	cJSON_Delete(o);
}

static void test_not_an_event(void **state)
{
	struct config_email m = receiver();
	char *body = (char *)"untouched";

	(void)state;
	assert_int_equal(mail_compose(&m, "not json", "msg_1", &body), -EBADMSG);
	assert_null(body);
	assert_int_equal(mail_compose(&m, "{\"type\":\"file.failed\"}", "msg_1", &body), -EBADMSG);
}

static int64_t ms(int year, int mon, int day, int hour, int min)
{
	struct tm tm = {.tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day,
			.tm_hour = hour, .tm_min = min, .tm_isdst = -1};

	return (int64_t)mktime(&tm) * 1000;
}

static void set_tz(const char *tz)
{
	setenv("TZ", tz, 1);
	tzset();
}

static void test_the_next_digest_by_the_local_clock(void **state)
{
	(void)state;
	set_tz("UTC");
	/* Later today, or tomorrow once the time has passed (or is now). */
	assert_int_equal(digest_next_ms(ms(2026, 12, 8, 7, 59), 8 * 60), ms(2026, 12, 8, 8, 0));
	assert_int_equal(digest_next_ms(ms(2026, 12, 8, 8, 0), 8 * 60), ms(2026, 12, 9, 8, 0));
	assert_int_equal(digest_next_ms(ms(2026, 12, 31, 23, 0), 30), ms(2027, 1, 1, 0, 30));
	/* Another zone (POSIX rules: no tzdata needed): 08:00 in Tokyo is 23:00 UTC the day
	 * before; at 07:00 UTC (16:00 there) the next is tonight's. */
	int64_t now = ms(2026, 12, 8, 7, 0), want = ms(2026, 12, 8, 23, 0);
	set_tz("JST-9");
	int64_t next = digest_next_ms(now, 8 * 60);
	set_tz("UTC");
	assert_int_equal(next, want);
	/* A DST gap: 02:30 does not exist in central Europe on 2026-03-29; mktime takes it as
	 * 03:30 CEST, which is 01:30 UTC. */
	now = ms(2026, 3, 29, 0, 0);
	want = ms(2026, 3, 29, 1, 30);
	set_tz("CET-1CEST,M3.5.0,M10.5.0/3");
	next = digest_next_ms(now, 2 * 60 + 30);
	set_tz("UTC");
	assert_int_equal(next, want);
}

static void record(struct ledger *l, const char *folder, const char *file, int64_t claimed,
		   int64_t finished, enum ledger_status status, const char *error)
{
	struct ledger_entry e = {
		.folder = (char *)folder, .file = (char *)file, .claimed_at_ms = claimed,
		.finished_at_ms = finished, .status = status, .error = (char *)error,
		.total = 2, .created = status == LEDGER_DONE ? 2 : -1, .updated = -1,
		.skipped = -1, .failed = -1,
	};

	assert_int_equal(ledger_record(l, &e), 0);
}

static void test_the_digest_of_a_day(void **state)
{
	char dir[] = "/tmp/rdd-test-mail-XXXXXX", err[512], path[600], *payload = NULL;
	struct config_notify crm_only = {.name = "ops", .events = CONFIG_EVENT_ALL,
					 .folders = (char *[]){"crm"}, .n_folders = 1};
	struct config_notify all = {.name = "ops", .events = CONFIG_EVENT_ALL};
	int64_t due = ms(2026, 12, 8, 8, 0), hour = 3600 * 1000;
	struct ledger *l;
	cJSON *o, *d, *t;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(ledger_open(dir, false, &l, err, sizeof(err)), 0);
	record(l, "crm", "a.csv", due - 2 * hour, due - hour, LEDGER_DONE, NULL);
	record(l, "crm", "b.csv", due - 3 * hour, due - 3 * hour, LEDGER_FAILED, "check: bad");
	record(l, "crm", "old.csv", due - 30 * hour, due - 25 * hour, LEDGER_DONE, NULL);
	record(l, "crm", "late.csv", due + hour, due + 2 * hour, LEDGER_DONE, NULL);
	record(l, "crm", "busy.csv", due - hour, 0, LEDGER_UPLOADED, NULL);
	record(l, "news", "n.csv", due - hour, due - hour / 2, LEDGER_SKIPPED, NULL);

	assert_int_equal(digest_collect(l, &all, "sftp-1", due, &payload), 0);
	o = cJSON_Parse(payload);
	cJSON_free(payload);
	d = cJSON_GetObjectItemCaseSensitive(o, "data");
	t = cJSON_GetObjectItemCaseSensitive(d, "totals");
	/* The day before DUE: not old.csv (finished before it), nor late.csv (after). */
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "files")->valueint, 3);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "imported")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "failed")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "skipped")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "in_hand")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(t, "created")->valueint, 2);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "folders")), 2);
	cJSON *failure = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "failures"), 0);
	assert_string_equal(field(failure, "file"), "b.csv");
	assert_string_equal(field(failure, "error"), "check: bad");
	assert_string_equal(field(d, "host"), "sftp-1");
	cJSON_Delete(o);

	/* A receiver of crm alone hears nothing of news. */
	assert_int_equal(digest_collect(l, &crm_only, NULL, due, &payload), 0);
	o = cJSON_Parse(payload);
	cJSON_free(payload);
	d = cJSON_GetObjectItemCaseSensitive(o, "data");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "folders")), 1);
	assert_null(cJSON_GetObjectItemCaseSensitive(d, "host"));
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(
				 cJSON_GetObjectItemCaseSensitive(d, "totals"), "skipped")->valueint,
			 0);
	cJSON_Delete(o);

	l->ops->close(l);
	snprintf(path, sizeof(path), "%s/%s", dir, LEDGER_FILE_NAME);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s-wal", dir, LEDGER_FILE_NAME);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s-shm", dir, LEDGER_FILE_NAME);
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

static void test_the_digest_event_is_the_same_on_every_host(void **state)
{
	struct ledger_event a, b, c;
	struct config_email m = receiver();
	char *body = NULL;

	(void)state;
	assert_int_equal(events_digest("email:ops", strdup("{\"type\":\"digest\",\"data\":{}}"),
				       1000, &a), 0);
	assert_int_equal(events_digest("email:ops", strdup("{\"type\":\"digest\",\"data\":{}}"),
				       1000, &b), 0);
	assert_int_equal(events_digest("email:ops", strdup("{\"type\":\"digest\",\"data\":{}}"),
				       2000, &c), 0);
	assert_string_equal(a.msg_id, b.msg_id);
	assert_string_not_equal(a.msg_id, c.msg_id);
	assert_string_equal(a.type, "digest");
	assert_int_equal(a.created_at_ms, 1000);
	/* An empty day still makes a digest: the daemon is alive and nothing came. */
	assert_int_equal(mail_compose(&m, a.payload, a.msg_id, &body), 0);
	assert_non_null(strstr(body, "No file finished, and none is in hand."));
	cJSON_free(body);
	ledger_event_clear(&a);
	ledger_event_clear(&b);
	ledger_event_clear(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_failed_file),
		cmocka_unit_test(test_a_daemons_trouble),
		cmocka_unit_test(test_not_an_event),
		cmocka_unit_test(test_the_next_digest_by_the_local_clock),
		cmocka_unit_test(test_the_digest_of_a_day),
		cmocka_unit_test(test_the_digest_event_is_the_same_on_every_host),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
