/* The metrics registry and its Prometheus text: families with # HELP and # TYPE, counters by
 * folder that only grow, cumulative histogram buckets, label values escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(struct metrics *m, const struct metrics_gauges *g)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(metrics_render(m, g, "1.2.3", &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

static void assert_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)); p++) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	}
	fail_msg("no line '%s' in:\n%s", line, text);
}

static void test_empty_registry_has_every_family(void **state)
{
	struct metrics *m;
	struct metrics_gauges g = {0};
	static const char *const families[] = {
		"resend_dropd_build_info gauge",
		"resend_dropd_files_total counter",
		"resend_dropd_files_waiting gauge",
		"resend_dropd_oldest_waiting_age_seconds gauge",
		"resend_dropd_files_in_flight gauge",
		"resend_dropd_uploads_in_flight gauge",
		"resend_dropd_paused gauge",
		"resend_dropd_api_paused gauge",
		"resend_dropd_api_requests_total counter",
		"resend_dropd_upload_retries_total counter",
		"resend_dropd_uploaded_bytes_total counter",
		"resend_dropd_upload_duration_seconds histogram",
		"resend_dropd_import_duration_seconds histogram",
	};
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	text = render(m, &g);
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		char type[128], help[128];
		const char *name_end = strchr(families[i], ' ');

		snprintf(type, sizeof(type), "# TYPE %s", families[i]);
		assert_line(text, type);
		snprintf(help, sizeof(help), "# HELP %.*s ", (int)(name_end - families[i]),
			 families[i]);
		assert_non_null(strstr(text, help));
	}
	assert_line(text, "resend_dropd_build_info{version=\"1.2.3\"} 1");
	assert_line(text, "resend_dropd_uploads_in_flight 0");
	assert_line(text, "resend_dropd_api_paused 0");
	assert_null(strstr(text, "folder=")); /* no folder yet */
	assert_int_equal(text[strlen(text) - 1], '\n');
	free(text);
	metrics_free(m);
}

static void test_counters_by_folder_and_outcome(void **state)
{
	struct metrics *m;
	struct metrics_folder *a, *b;
	struct metrics_gauges g = {0};
	char *text;

	(void)state;
	metrics_new(&m);
	a = metrics_folder(m, "news");
	b = metrics_folder(m, "crm");
	assert_ptr_equal(metrics_folder(m, "news"), a); /* found again, not made twice */
	metrics_file_finished(a, false);
	metrics_file_finished(a, false);
	metrics_file_finished(a, true);
	metrics_upload_retry(b);
	metrics_uploaded(a, 1000, 0.3);
	metrics_uploaded(a, 24, 0.3);
	metrics_api_request(m, METRICS_CREATE_IMPORT, 201);
	metrics_api_request(m, METRICS_CREATE_IMPORT, 201);
	metrics_api_request(m, METRICS_CREATE_IMPORT, 0);
	metrics_api_request(m, METRICS_GET_IMPORT, 429);
	metrics_api_request(m, METRICS_GET_IMPORT, 1234); /* nonsense: counted as no answer */
	metrics_file_finished(NULL, true);                 /* out of memory earlier: ignored */
	assert_int_equal(metrics_folder_done(a), 2);
	assert_int_equal(metrics_folder_failed(a), 1);
	assert_int_equal(metrics_folder_done(NULL), 0);
	text = render(m, &g);
	assert_line(text, "resend_dropd_files_total{folder=\"news\",outcome=\"done\"} 2");
	assert_line(text, "resend_dropd_files_total{folder=\"news\",outcome=\"failed\"} 1");
	assert_line(text, "resend_dropd_files_total{folder=\"crm\",outcome=\"done\"} 0");
	assert_line(text, "resend_dropd_upload_retries_total{folder=\"crm\"} 1");
	assert_line(text, "resend_dropd_upload_retries_total{folder=\"news\"} 0");
	assert_line(text, "resend_dropd_uploaded_bytes_total{folder=\"news\"} 1024");
	assert_line(text,
		    "resend_dropd_api_requests_total{endpoint=\"create_import\",code=\"201\"} 2");
	assert_line(text, "resend_dropd_api_requests_total{endpoint=\"create_import\",code=\"0\"} 1");
	assert_line(text, "resend_dropd_api_requests_total{endpoint=\"get_import\",code=\"429\"} 1");
	assert_line(text, "resend_dropd_api_requests_total{endpoint=\"get_import\",code=\"0\"} 1");
	assert_null(strstr(text, "code=\"1234\""));
	free(text);
	metrics_free(m);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
	struct metrics *m;
	struct metrics_folder *f;
	struct metrics_gauges g = {0};
	char *text;

	(void)state;
	metrics_new(&m);
	f = metrics_folder(m, "news");
	metrics_uploaded(f, 1, 0.05); /* on a bound: counts in it (le) */
	metrics_uploaded(f, 1, 0.2);
	metrics_uploaded(f, 1, 7);
	metrics_uploaded(f, 1, 5000); /* beyond the last bound: +Inf only */
	metrics_imported(f, 12.5);
	text = render(m, &g);
	assert_line(text, "resend_dropd_upload_duration_seconds_bucket{folder=\"news\",le=\"0.05\"} 1");
	assert_line(text, "resend_dropd_upload_duration_seconds_bucket{folder=\"news\",le=\"0.1\"} 1");
	assert_line(text, "resend_dropd_upload_duration_seconds_bucket{folder=\"news\",le=\"0.25\"} 2");
	assert_line(text, "resend_dropd_upload_duration_seconds_bucket{folder=\"news\",le=\"10\"} 3");
	assert_line(text, "resend_dropd_upload_duration_seconds_bucket{folder=\"news\",le=\"600\"} 3");
	assert_line(text, "resend_dropd_upload_duration_seconds_bucket{folder=\"news\",le=\"+Inf\"} 4");
	assert_line(text, "resend_dropd_upload_duration_seconds_count{folder=\"news\"} 4");
	assert_line(text, "resend_dropd_upload_duration_seconds_sum{folder=\"news\"} 5007.25");
	assert_line(text, "resend_dropd_import_duration_seconds_bucket{folder=\"news\",le=\"10\"} 0");
	assert_line(text, "resend_dropd_import_duration_seconds_bucket{folder=\"news\",le=\"30\"} 1");
	assert_line(text, "resend_dropd_import_duration_seconds_sum{folder=\"news\"} 12.5");
	free(text);
	metrics_free(m);
}

static void test_gauges_from_the_caller(void **state)
{
	struct metrics *m;
	const struct metrics_folder_gauges f[] = {
		{.name = "news", .waiting = 3, .oldest_waiting_s = 42.5, .processing = 1,
		 .uploading = 2, .retrying = 0, .following = 4, .paused = true},
		{.name = "crm", .oldest_waiting_s = -1},
	};
	struct metrics_gauges g = {.folders = f, .n_folders = 2, .uploads_in_flight = 2,
				   .api_paused = true};
	char *text;

	(void)state;
	metrics_new(&m);
	text = render(m, &g);
	assert_line(text, "resend_dropd_files_waiting{folder=\"news\"} 3");
	assert_line(text, "resend_dropd_oldest_waiting_age_seconds{folder=\"news\"} 42.5");
	assert_line(text, "resend_dropd_oldest_waiting_age_seconds{folder=\"crm\"} 0");
	assert_line(text, "resend_dropd_files_in_flight{folder=\"news\",state=\"processing\"} 1");
	assert_line(text, "resend_dropd_files_in_flight{folder=\"news\",state=\"uploading\"} 2");
	assert_line(text, "resend_dropd_files_in_flight{folder=\"news\",state=\"following\"} 4");
	assert_line(text, "resend_dropd_paused{folder=\"news\"} 1");
	assert_line(text, "resend_dropd_paused{folder=\"crm\"} 0");
	assert_line(text, "resend_dropd_uploads_in_flight 2");
	assert_line(text, "resend_dropd_api_paused 1");
	free(text);
	metrics_free(m);
}

static void test_label_values_are_escaped(void **state)
{
	struct metrics *m;
	struct metrics_gauges g = {0};
	char buf[8], *text, longname[600];

	(void)state;
	assert_int_equal(metrics_escape_label(buf, sizeof(buf), "a\"b\\c\nd"), 10);
	assert_string_equal(buf, "a\\\"b\\\\c"); /* truncated, terminated */
	metrics_new(&m);
	metrics_file_finished(metrics_folder(m, "we\"ird\\na\nme"), false);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	longname[10] = '"';
	metrics_file_finished(metrics_folder(m, longname), true);
	text = render(m, &g);
	assert_line(text, "resend_dropd_files_total{folder=\"we\\\"ird\\\\na\\nme\",outcome=\"done\"} 1");
	assert_non_null(strstr(text, "xxxxxxxxxx\\\"xxxx")); /* a long one, escaped too */
	free(text);
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_registry_has_every_family),
		cmocka_unit_test(test_counters_by_folder_and_outcome),
		cmocka_unit_test(test_histogram_buckets_are_cumulative),
		cmocka_unit_test(test_gauges_from_the_caller),
		cmocka_unit_test(test_label_values_are_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
