/* resend.c: request fields byte-for-byte as the official SDK sends them, error classes, lenient
 * response parsing. struct config_folder values are built by hand (no config.c needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "resend.h"

/* Copied verbatim from reference/sdk-capture.txt, request [1] (resend@6.38.0). */
#define SDK1_COLUMN_MAP                                                                            \
	"{\"email\":\"email\",\"first_name\":\"first\",\"last_name\":\"last\",\"unsubscribed\":"  \
	"\"unsub\",\"properties\":{\"plan\":{\"column\":\"plan\",\"type\":\"string\"},\"age\":{"   \
	"\"column\":\"age\",\"type\":\"number\"},\"vip\":{\"column\":\"vip\",\"type\":"            \
	"\"boolean\"}}}"
#define SDK1_SEGMENTS "[{\"id\":\"78261eea-8f8b-4381-83c6-79fa7120f1cf\"}]"
#define SDK1_TOPICS "[{\"id\":\"b6d24b8e-af0b-4c3c-be0c-359bbd97381e\",\"subscription\":\"opt_in\"}]"

#define SEG1 "78261eea-8f8b-4381-83c6-79fa7120f1cf"
#define SEG2 "059ac693-2fc8-4c13-8b27-01350d638a17"
#define TOPIC1 "b6d24b8e-af0b-4c3c-be0c-359bbd97381e"

/* A folder with nothing optional set: no column_map, no segments, no topics, upsert. */
static struct config_folder folder_empty(void)
{
	struct config_folder f;

	memset(&f, 0, sizeof(f));
	f.name = "newsletter";
	f.settings.on_conflict = CONFIG_ON_CONFLICT_UPSERT;
	return f;
}

static struct config_property sdk1_props[] = {
	{"plan", "plan", CONFIG_PROP_STRING},
	{"age", "age", CONFIG_PROP_NUMBER},
	{"vip", "vip", CONFIG_PROP_BOOLEAN},
};
static char sdk1_segments[1][CONFIG_UUID_LEN + 1] = {SEG1};
static struct config_topic sdk1_topics[1] = {{TOPIC1, CONFIG_SUB_OPT_IN}};

/* The settings of the SDK capture's request [1]. */
static struct config_folder folder_sdk1(void)
{
	struct config_folder f = folder_empty();

	f.column_map.present = true;
	f.column_map.email = "email";
	f.column_map.first_name = "first";
	f.column_map.last_name = "last";
	f.column_map.unsubscribed = "unsub";
	f.column_map.properties = sdk1_props;
	f.column_map.n_properties = 3;
	f.settings.on_conflict = CONFIG_ON_CONFLICT_SKIP;
	f.segments = sdk1_segments;
	f.n_segments = 1;
	f.topics = sdk1_topics;
	f.n_topics = 1;
	return f;
}

/* ---- resend_fields_build ---- */

static void test_fields_sdk_capture_byte_exact(void **state)
{
	struct config_folder f = folder_sdk1();
	struct resend_fields out;

	(void)state;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.column_map, SDK1_COLUMN_MAP);
	assert_string_equal(out.on_conflict, "skip");
	assert_string_equal(out.segments, SDK1_SEGMENTS);
	assert_string_equal(out.topics, SDK1_TOPICS);
	resend_fields_free(&out);
}

static void test_fields_absent_are_null(void **state)
{
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	memset(&out, 0x55, sizeof(out));
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_null(out.column_map);
	assert_null(out.segments);
	assert_null(out.topics);
	/* always sent, even when it is the documented default */
	assert_string_equal(out.on_conflict, "upsert");
	resend_fields_free(&out);
}

static void test_fields_email_only_like_sdk5(void **state)
{
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.column_map.present = true;
	f.column_map.email = "e";
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.column_map, "{\"email\":\"e\"}");
	resend_fields_free(&out);
}

static void test_fields_present_but_empty_map(void **state)
{
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.column_map.present = true;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.column_map, "{}");
	resend_fields_free(&out);
}

static void test_fields_partial_map_keeps_order(void **state)
{
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.column_map.present = true;
	f.column_map.unsubscribed = "U";
	f.column_map.first_name = "F";
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.column_map, "{\"first_name\":\"F\",\"unsubscribed\":\"U\"}");
	resend_fields_free(&out);
}

static void test_fields_properties_config_order_and_types(void **state)
{
	struct config_property props[] = {
		{"zeta", "Z col", CONFIG_PROP_BOOLEAN},
		{"alpha", "A col", CONFIG_PROP_STRING},
		{"mid_1", "M col", CONFIG_PROP_NUMBER},
	};
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.column_map.present = true;
	f.column_map.email = "Email";
	f.column_map.properties = props;
	f.column_map.n_properties = 3;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.column_map,
			    "{\"email\":\"Email\",\"properties\":{"
			    "\"zeta\":{\"column\":\"Z col\",\"type\":\"boolean\"},"
			    "\"alpha\":{\"column\":\"A col\",\"type\":\"string\"},"
			    "\"mid_1\":{\"column\":\"M col\",\"type\":\"number\"}}}");
	resend_fields_free(&out);
}

static void test_fields_properties_without_fixed_columns(void **state)
{
	struct config_property props[] = {{"plan", "Plan", CONFIG_PROP_STRING}};
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.column_map.present = true;
	f.column_map.properties = props;
	f.column_map.n_properties = 1;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.column_map,
			    "{\"properties\":{\"plan\":{\"column\":\"Plan\",\"type\":\"string\"}}}");
	resend_fields_free(&out);
}

static void test_fields_escaping_round_trips(void **state)
{
	static const char *email = "He said \"hi\" \\ back";
	static const char *first = "Pr\xc3\xa9nom \xe2\x9c\x93 \xf0\x9f\x98\x80";
	static const char *last = "tab\there\nnewline\x01";
	struct config_property props[] = {{"k", "col \"q\"", CONFIG_PROP_STRING}};
	struct config_folder f = folder_empty();
	struct resend_fields out;
	cJSON *root, *item;

	(void)state;
	f.column_map.present = true;
	f.column_map.email = (char *)email;
	f.column_map.first_name = (char *)first;
	f.column_map.last_name = (char *)last;
	f.column_map.properties = props;
	f.column_map.n_properties = 1;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	/* one line, no raw control characters: it is a multipart field value */
	for (const char *p = out.column_map; *p; p++)
		assert_true((unsigned char)*p >= 0x20);
	assert_non_null(strstr(out.column_map, "\"email\":\"He said \\\"hi\\\" \\\\ back\""));

	root = cJSON_Parse(out.column_map);
	assert_non_null(root);
	item = cJSON_GetObjectItemCaseSensitive(root, "email");
	assert_true(cJSON_IsString(item));
	assert_string_equal(item->valuestring, email);
	item = cJSON_GetObjectItemCaseSensitive(root, "first_name");
	assert_string_equal(item->valuestring, first);
	item = cJSON_GetObjectItemCaseSensitive(root, "last_name");
	assert_string_equal(item->valuestring, last);
	item = cJSON_GetObjectItemCaseSensitive(root, "properties");
	item = cJSON_GetObjectItemCaseSensitive(item, "k");
	item = cJSON_GetObjectItemCaseSensitive(item, "column");
	assert_string_equal(item->valuestring, "col \"q\"");
	cJSON_Delete(root);
	resend_fields_free(&out);
}

static void test_fields_segments_topics_several(void **state)
{
	char segs[2][CONFIG_UUID_LEN + 1] = {SEG1, SEG2};
	struct config_topic topics[2] = {{TOPIC1, CONFIG_SUB_OPT_OUT}, {SEG2, CONFIG_SUB_OPT_IN}};
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.segments = segs;
	f.n_segments = 2;
	f.topics = topics;
	f.n_topics = 2;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_null(out.column_map);
	assert_string_equal(out.segments, "[{\"id\":\"" SEG1 "\"},{\"id\":\"" SEG2 "\"}]");
	assert_string_equal(out.topics, "[{\"id\":\"" TOPIC1 "\",\"subscription\":\"opt_out\"},"
					"{\"id\":\"" SEG2 "\",\"subscription\":\"opt_in\"}]");
	resend_fields_free(&out);
}

static void test_fields_segments_only(void **state)
{
	struct config_folder f = folder_empty();
	struct resend_fields out;

	(void)state;
	f.segments = sdk1_segments;
	f.n_segments = 1;
	assert_int_equal(resend_fields_build(&f, &out), 0);
	assert_string_equal(out.segments, SDK1_SEGMENTS);
	assert_null(out.topics);
	assert_null(out.column_map);
	resend_fields_free(&out);
}

/* On failure the output is not written (house style: ret_* only on success). */
static void expect_build_fails(const struct config_folder *f, int err)
{
	struct resend_fields out, before;

	memset(&out, 0xa5, sizeof(out));
	before = out;
	assert_int_equal(resend_fields_build(f, &out), err);
	assert_memory_equal(&out, &before, sizeof(out));
}

static void test_fields_invalid_input(void **state)
{
	struct config_property null_col[] = {{"plan", NULL, CONFIG_PROP_STRING}};
	struct config_property bad_type[] = {{"plan", "Plan", (enum config_prop_type)7}};
	struct config_property dup[] = {{"plan", "A", CONFIG_PROP_STRING},
					{"plan", "B", CONFIG_PROP_STRING}};
	struct config_topic bad_sub[] = {{TOPIC1, (enum config_subscription)9}};
	char unterminated[1][CONFIG_UUID_LEN + 1];
	struct config_folder f;

	(void)state;
	assert_int_equal(resend_fields_build(NULL, NULL), -EINVAL);

	f = folder_sdk1();
	f.settings.on_conflict = (enum config_on_conflict)42;
	expect_build_fails(&f, -EINVAL);

	f = folder_sdk1();
	f.column_map.properties = null_col;
	f.column_map.n_properties = 1;
	expect_build_fails(&f, -EINVAL);

	f = folder_sdk1();
	f.column_map.properties = bad_type;
	f.column_map.n_properties = 1;
	expect_build_fails(&f, -EINVAL);

	f = folder_sdk1();
	f.column_map.properties = dup;
	f.column_map.n_properties = 2;
	expect_build_fails(&f, -EINVAL);

	f = folder_sdk1();
	f.column_map.properties = NULL;
	expect_build_fails(&f, -EINVAL);

	/* invalid UTF-8 would make the whole request invalid JSON on the server's side */
	f = folder_sdk1();
	f.column_map.email = "bad \xff byte";
	expect_build_fails(&f, -EILSEQ);
	{
		/* overlong '/', overlong 3-byte, a UTF-16 surrogate, above U+10FFFF, cut short */
		static const char *bad_utf8[] = {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
						 "\xf4\x90\x80\x80", "ab\xe2\x9c"};

		for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
			f = folder_sdk1();
			f.column_map.last_name = (char *)bad_utf8[i];
			expect_build_fails(&f, -EILSEQ);
		}
	}

	f = folder_sdk1();
	f.topics = bad_sub;
	expect_build_fails(&f, -EINVAL);

	memset(unterminated, 'a', sizeof(unterminated));
	f = folder_sdk1();
	f.segments = unterminated;
	expect_build_fails(&f, -EINVAL);

	f = folder_sdk1();
	f.segments = NULL;
	expect_build_fails(&f, -EINVAL);
}

static void test_fields_free_tolerates_null_and_twice(void **state)
{
	struct config_folder f = folder_sdk1();
	struct resend_fields out;
	struct resend_fields zero = {0};

	(void)state;
	resend_fields_free(NULL);
	resend_fields_free(&zero);
	assert_int_equal(resend_fields_build(&f, &out), 0);
	resend_fields_free(&out);
	assert_null(out.column_map);
	assert_null(out.segments);
	assert_null(out.topics);
	resend_fields_free(&out);
}

/* ---- resend_sanitize_filename ---- */

static void expect_sanitized(const char *in, const char *want)
{
	char *got = resend_sanitize_filename(in);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_sanitize_filename(void **state)
{
	(void)state;
	expect_sanitized("contacts.csv", "contacts.csv");
	expect_sanitized("/srv/drop/newsletter/in/contacts.csv", "contacts.csv");
	expect_sanitized("a/b/c", "c");
	expect_sanitized("a\"b\\c.csv", "a_b_c.csv");
	expect_sanitized("x\r\nContent-Type: text.csv", "x__Content-Type: text.csv");
	expect_sanitized("in/sub\\dir.csv", "sub_dir.csv");
}

static void test_sanitize_filename_controls(void **state)
{
	(void)state;
	expect_sanitized("a\r\nb.csv", "a__b.csv");
	expect_sanitized("\x01\x1f\x7f.csv", "___.csv");
	expect_sanitized("tab\there.csv", "tab_here.csv");
	/* non-ASCII names are kept: only what can break the header is replaced */
	expect_sanitized("Pr\xc3\xa9nom.csv", "Pr\xc3\xa9nom.csv");
	expect_sanitized("it's a (file).csv", "it's a (file).csv");
}

static void test_sanitize_filename_empty(void **state)
{
	(void)state;
	expect_sanitized("", "upload.csv");
	expect_sanitized("dir/", "upload.csv");
	expect_sanitized("/", "upload.csv");
	expect_sanitized(NULL, "upload.csv");
}

/* ---- a split file's parts: their names and keys ---- */

static void test_part_names_and_keys(void **state)
{
	char whole[37], one[37], two[37], again[37];
	char *n;

	(void)state;
	n = resend_part_filename("x.csv", 1, 7);
	assert_string_equal(n, "x.part-2-of-7.csv");
	free(n);
	n = resend_part_filename("noext", 0, 2);
	assert_string_equal(n, "noext.part-1-of-2");
	free(n);
	n = resend_part_filename(".hidden", 0, 2); /* a leading dot is no extension */
	assert_string_equal(n, ".hidden.part-1-of-2");
	free(n);
	n = resend_part_filename("a\"b.csv", 0, 1); /* one part: the sanitized name itself */
	assert_string_equal(n, "a_b.csv");
	free(n);

	/* One part: the file's own key; parts: one each, stable, all different. */
	resend_idempotency_key(whole, "news", "abc");
	resend_part_key(one, "news", "abc", 0, 1);
	assert_string_equal(one, whole);
	resend_part_key(one, "news", "abc", 0, 2);
	resend_part_key(two, "news", "abc", 1, 2);
	resend_part_key(again, "news", "abc", 1, 2);
	assert_string_not_equal(one, whole);
	assert_string_not_equal(one, two);
	assert_string_equal(two, again);
	resend_idempotency_key(again, "news", "abc/2/2");
	assert_string_equal(two, again);
}

/* ---- resend_idempotency_key ---- */

static void test_idempotency_key_known_value(void **state)
{
	char buf[37];

	(void)state;
	/* printf 'newsletter\nabc' | sha256sum
	 * = 62d205454adbdfbe30f0484deea0731451dd250c351d41dd09cc8b7124009f30 */
	resend_idempotency_key(buf, "newsletter", "abc");
	assert_string_equal(buf, "rdd-62d205454adbdfbe30f0484deea07314");
}

static void test_idempotency_key_shape_and_determinism(void **state)
{
	static const char *hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	char a[37], b[37];

	(void)state;
	memset(a, 'X', sizeof(a));
	resend_idempotency_key(a, "newsletter", hash);
	assert_int_equal(strlen(a), 36);
	assert_memory_equal(a, "rdd-", 4);
	for (size_t i = 4; i < 36; i++)
		assert_non_null(strchr("0123456789abcdef", a[i]));
	resend_idempotency_key(b, "newsletter", hash);
	assert_string_equal(a, b);
}

static void test_idempotency_key_differs(void **state)
{
	char base[37], other[37];

	(void)state;
	resend_idempotency_key(base, "newsletter", "abc");
	resend_idempotency_key(other, "customers", "abc");
	assert_string_not_equal(base, other);
	resend_idempotency_key(other, "newsletter", "abd");
	assert_string_not_equal(base, other);
	/* the separator keeps ("ab","c") and ("a","bc") apart */
	resend_idempotency_key(base, "ab", "c");
	resend_idempotency_key(other, "a", "bc");
	assert_string_not_equal(base, other);
}

/* ---- resend_classify ---- */

struct classify_case {
	long status;
	const char *body;
	enum resend_class want;
	const char *name; /* expected err->name; NULL: not checked */
};

static char *error_body(long status, const char *name, const char *message)
{
	char *s = NULL;

	assert_true(asprintf(&s, "{\"statusCode\":%ld,\"message\":\"%s\",\"name\":\"%s\"}", status,
			     message, name) > 0);
	return s;
}

/* Every status/name pair listed in resend-api.md, with Resend's error body shape. */
static void test_classify_documented_names(void **state)
{
	static const struct {
		long status;
		const char *name;
		enum resend_class want;
	} cases[] = {
		{400, "validation_error", RESEND_PERMANENT},
		{400, "invalid_idempotency_key", RESEND_PERMANENT},
		{401, "missing_api_key", RESEND_AUTH},
		{401, "restricted_api_key", RESEND_AUTH},
		{403, "invalid_api_key", RESEND_AUTH},
		{403, "restricted_api_key", RESEND_AUTH},
		{403, "validation_error", RESEND_PERMANENT},
		{404, "not_found", RESEND_PERMANENT},
		{405, "method_not_allowed", RESEND_PERMANENT},
		{409, "invalid_idempotent_request", RESEND_PERMANENT},
		{409, "concurrent_idempotent_requests", RESEND_RETRY},
		{409, "resource_locked", RESEND_RETRY},
		{422, "validation_error", RESEND_PERMANENT},
		{422, "invalid_parameter", RESEND_PERMANENT},
		{422, "missing_required_field", RESEND_PERMANENT},
		{429, "rate_limit_exceeded", RESEND_RATE_LIMITED},
		{429, "daily_quota_exceeded", RESEND_QUOTA},
		{429, "monthly_quota_exceeded", RESEND_QUOTA},
		{429, "something_new", RESEND_RATE_LIMITED},
		{500, "application_error", RESEND_RETRY},
		{500, "internal_server_error", RESEND_RETRY},
		{503, "service_unavailable", RESEND_RETRY},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *body = error_body(cases[i].status, cases[i].name, "Something went wrong.");
		struct resend_error err;
		enum resend_class got;

		memset(&err, 0x5a, sizeof(err));
		got = resend_classify(cases[i].status, body, strlen(body), &err);
		if (got != cases[i].want)
			fail_msg("%ld %s: class %d, want %d", cases[i].status, cases[i].name, (int)got,
				 (int)cases[i].want);
		assert_int_equal(err.status, cases[i].status);
		assert_string_equal(err.name, cases[i].name);
		assert_string_equal(err.message, "Something went wrong.");
		free(body);
	}
}

static void test_classify_statuses_without_body(void **state)
{
	static const struct {
		long status;
		enum resend_class want;
	} cases[] = {
		{0, RESEND_RETRY},	   {408, RESEND_RETRY},	    {429, RESEND_RATE_LIMITED},
		{500, RESEND_RETRY},	   {502, RESEND_RETRY},	    {503, RESEND_RETRY},
		{504, RESEND_RETRY},	   {599, RESEND_RETRY},	    {400, RESEND_PERMANENT},
		{401, RESEND_AUTH},	   {403, RESEND_PERMANENT}, {404, RESEND_PERMANENT},
		{409, RESEND_PERMANENT},   {413, RESEND_PERMANENT}, {418, RESEND_PERMANENT},
		{422, RESEND_PERMANENT},   {499, RESEND_PERMANENT},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct resend_error err;
		enum resend_class got;

		memset(&err, 0x5a, sizeof(err));
		got = resend_classify(cases[i].status, NULL, 0, &err);
		if (got != cases[i].want)
			fail_msg("status %ld: class %d, want %d", cases[i].status, (int)got,
				 (int)cases[i].want);
		assert_int_equal(err.status, cases[i].status);
		assert_string_equal(err.name, "");
		/* a report always has something to show */
		assert_true(strlen(err.message) > 0);
	}
}

static void test_classify_success_leaves_err_alone(void **state)
{
	static const long ok[] = {200, 201, 202, 204, 299};
	static const char *body = "{\"object\":\"contact_import\",\"id\":\"x\"}";

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct resend_error err, before;

		memset(&err, 0x5a, sizeof(err));
		before = err;
		assert_int_equal(resend_classify(ok[i], body, strlen(body), &err), RESEND_OK);
		assert_memory_equal(&err, &before, sizeof(err));
		assert_int_equal(resend_classify(ok[i], NULL, 0, NULL), RESEND_OK);
	}
}

static void test_classify_unexpected_statuses(void **state)
{
	static const long odd[] = {100, 101, 199, 300, 301, 302, 304, 399, 600, 999, -1};

	(void)state;
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		struct resend_error err;
		char want[32];

		assert_int_equal(resend_classify(odd[i], "Moved", 5, &err), RESEND_PERMANENT);
		snprintf(want, sizeof(want), "HTTP status %ld", odd[i]);
		assert_non_null(strstr(err.message, want));
		assert_non_null(strstr(err.message, "Moved"));
	}
}

static void test_classify_api_key_invalid_message(void **state)
{
	static const char *bad_key =
		"{\"statusCode\":400,\"message\":\"API key is invalid\",\"name\":\"validation_error\"}";
	static const char *bad_key_403 =
		"{\"statusCode\":403,\"message\":\"The api KEY provided is INVALID.\",\"name\":\"x\"}";
	static const char *other_422 =
		"{\"statusCode\":422,\"message\":\"API key is invalid\",\"name\":\"validation_error\"}";
	static const char *not_key = "{\"message\":\"Invalid email column\",\"name\":\"validation_error\"}";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(400, bad_key, strlen(bad_key), &err), RESEND_AUTH);
	assert_string_equal(err.name, "validation_error");
	assert_string_equal(err.message, "API key is invalid");
	assert_int_equal(resend_classify(403, bad_key_403, strlen(bad_key_403), &err), RESEND_AUTH);
	/* only 400/403 carry this meaning */
	assert_int_equal(resend_classify(422, other_422, strlen(other_422), &err), RESEND_PERMANENT);
	assert_int_equal(resend_classify(400, not_key, strlen(not_key), &err), RESEND_PERMANENT);
	assert_int_equal(resend_classify(403, not_key, strlen(not_key), &err), RESEND_PERMANENT);
}

static void assert_one_safe_line(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			fail_msg("unsafe byte 0x%02x in \"%s\"", *p, s);
}

static void test_classify_html_502(void **state)
{
	static const char *body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
				  "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n"
				  "</html>\r\n";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(502, body, strlen(body), &err), RESEND_RETRY);
	assert_int_equal(err.status, 502);
	assert_string_equal(err.name, "");
	assert_string_equal(err.message, "<html> <head><title>502 Bad Gateway</title></head> <body> "
					 "<center><h1>502 Bad Gateway</h1></center> </body> </html>");
}

static void test_classify_non_json_excerpt_is_short_and_safe(void **state)
{
	char body[10000];
	struct resend_error err;

	(void)state;
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)("ab\x01\xff\n\xc3\xa9z\x7f\t"[i % 10]);
	assert_int_equal(resend_classify(400, body, sizeof(body), &err), RESEND_PERMANENT);
	assert_string_equal(err.name, "");
	assert_true(strlen(err.message) > 0);
	assert_true(strlen(err.message) <= 200);
	assert_one_safe_line(err.message);
	assert_memory_equal(err.message, "ab ? ?z", 7);

	/* a 429 from a proxy, not Resend: still the rate-limit path */
	assert_int_equal(resend_classify(429, "Too Many Requests", 17, &err), RESEND_RATE_LIMITED);
	assert_string_equal(err.message, "Too Many Requests");
}

static void test_classify_trims_blanks(void **state)
{
	static const char *body = "\r\n\n   Bad   Gateway \r\n\t";
	static const char *json = "{\"name\":\" rate_limit_exceeded\",\"message\":\"\\n  Slow down. \"}";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(502, body, strlen(body), &err), RESEND_RETRY);
	assert_string_equal(err.message, "Bad Gateway");
	assert_int_equal(resend_classify(429, json, strlen(json), &err), RESEND_RATE_LIMITED);
	assert_string_equal(err.message, "Slow down.");
}

static void test_classify_json_but_not_resend_shape(void **state)
{
	static const char *no_name = "{\"message\":\"Upstream timed out\"}";
	static const char *no_message = "{\"name\":\"not_found\",\"statusCode\":404}";
	static const char *array = "[\"name\",\"message\"]";
	static const char *typed = "{\"name\":42,\"message\":{\"x\":1}}";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(504, no_name, strlen(no_name), &err), RESEND_RETRY);
	assert_string_equal(err.name, "");
	assert_string_equal(err.message, "Upstream timed out");

	assert_int_equal(resend_classify(404, no_message, strlen(no_message), &err), RESEND_PERMANENT);
	assert_string_equal(err.name, "not_found");
	assert_string_equal(err.message, no_message); /* the body itself, as an excerpt */

	assert_int_equal(resend_classify(400, array, strlen(array), &err), RESEND_PERMANENT);
	assert_string_equal(err.name, "");
	assert_string_equal(err.message, array);

	assert_int_equal(resend_classify(429, typed, strlen(typed), &err), RESEND_RATE_LIMITED);
	assert_string_equal(err.name, "");
}

static void test_classify_empty_body(void **state)
{
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(503, "", 0, &err), RESEND_RETRY);
	assert_string_equal(err.name, "");
	assert_string_equal(err.message, "empty body");
	assert_int_equal(resend_classify(503, "  \r\n ", 5, &err), RESEND_RETRY);
	assert_string_equal(err.message, "empty body");
	assert_int_equal(resend_classify(0, NULL, 0, &err), RESEND_RETRY);
	assert_int_equal(err.status, 0);
	assert_string_equal(err.message, "no HTTP response");
}

static void test_classify_uses_len_not_nul(void **state)
{
	/* the buffer goes on past LEN with junk and no NUL is needed at LEN */
	static const char buf[] = "{\"name\":\"daily_quota_exceeded\",\"message\":\"m\"}GARBAGE{{";
	struct resend_error err;
	size_t len = strlen(buf) - strlen("GARBAGE{{");

	(void)state;
	assert_int_equal(resend_classify(429, buf, len, &err), RESEND_QUOTA);
	assert_string_equal(err.name, "daily_quota_exceeded");
	assert_string_equal(err.message, "m");
}

static bool independent_utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 :
			   (*p & 0xf8) == 0xf0 ? 4 : 0;
		if (n == 0)
			return false;
		for (size_t i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += n;
	}
	return true;
}

static void test_classify_truncates_safely(void **state)
{
	struct resend_error err;
	char name[200], *body;
	size_t cap = 4000, len;

	(void)state;
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	body = malloc(cap);
	assert_non_null(body);
	/* "é" is two bytes: a cut in the middle of one would be invalid UTF-8 */
	len = (size_t)snprintf(body, cap, "{\"name\":\"%s\",\"message\":\"x", name);
	for (int i = 0; i < 600; i++)
		len += (size_t)snprintf(body + len, cap - len, "\xc3\xa9");
	len += (size_t)snprintf(body + len, cap - len, "\"}");
	assert_int_equal(resend_classify(422, body, len, &err), RESEND_PERMANENT);
	assert_int_equal(strlen(err.name), sizeof(err.name) - 1);
	assert_true(strlen(err.message) <= sizeof(err.message) - 1);
	assert_true(strlen(err.message) >= sizeof(err.message) - 3);
	assert_true(independent_utf8_valid(err.message));
	assert_int_equal(err.message[0], 'x');
	assert_int_equal(strlen(err.message) % 2, 1); /* "x" + whole "é"s */
	free(body);
}

static void test_classify_json_message_made_one_line(void **state)
{
	static const char *body =
		"{\"name\":\"validation_error\\r\\nX-Evil: 1\",\"message\":\"line1\\nline2\\u0007\\ttab "
		"caf\\u00e9\"}";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(422, body, strlen(body), &err), RESEND_PERMANENT);
	assert_string_equal(err.name, "validation_error X-Evil: 1");
	/* escaped control characters become spaces; the escaped é is kept as UTF-8 */
	assert_string_equal(err.message, "line1 line2 tab caf\xc3\xa9");
}

static void test_classify_keeps_utf8_message(void **state)
{
	static const char *body = "{\"name\":\"validation_error\",\"message\":\"Colonne \xc2\xabPr\xc3\xa9nom\xc2\xbb "
				  "manquante \xff!\"}";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(422, body, strlen(body), &err), RESEND_PERMANENT);
	assert_string_equal(err.message, "Colonne \xc2\xabPr\xc3\xa9nom\xc2\xbb manquante ?!");
}

static void test_classify_rejects_malformed_utf8(void **state)
{
	/* overlong, surrogate and out-of-range sequences are not passed on: byte by byte '?' */
	static const char *body = "{\"message\":\"a\xe0\x80\xaf" "b\xed\xa0\x80" "c\xf4\x90\x80\x80" "d\"}";
	struct resend_error err;

	(void)state;
	assert_int_equal(resend_classify(422, body, strlen(body), &err), RESEND_PERMANENT);
	assert_string_equal(err.message, "a???b???c????d");
}

/* ---- resend_parse_created ---- */

static void test_parse_created_ok(void **state)
{
	static const char *body =
		"{\"object\":\"contact_import\",\"id\":\"479e3145-dd38-476b-932c-529ceb705947\"}";
	static const char *extra = " {\"id\":\"abc_DEF-1.2~\",\"new_field\":[1,2,{}],\"object\":null} ";
	char id[64];

	(void)state;
	assert_int_equal(resend_parse_created(body, strlen(body), id), 0);
	assert_string_equal(id, "479e3145-dd38-476b-932c-529ceb705947");
	assert_int_equal(resend_parse_created(extra, strlen(extra), id), 0);
	assert_string_equal(id, "abc_DEF-1.2~");
}

static void test_parse_created_bad(void **state)
{
	static const char *bad[] = {
		"",
		"not json",
		"<html>201</html>",
		"[]",
		"\"id\"",
		"{}",
		"{\"object\":\"contact_import\"}",
		"{\"id\":42}",
		"{\"id\":null}",
		"{\"id\":\"\"}",
		"{\"id\":\"../../emails\"}",
		"{\"id\":\"a/b\"}",
		"{\"id\":\"a?b\"}",
		"{\"id\":\"a%2fb\"}",
		"{\"id\":\"a b\"}",
		"{\"id\":\"..\"}",
		"{\"id\":\"1234567890123456789012345678901234567890123456789012345678901234\"}",
		"{\"id\":\"abc\"",
	};
	char id[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(id, 'Q', sizeof(id));
		if (resend_parse_created(bad[i], strlen(bad[i]), id) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(id[0], 'Q'); /* untouched on failure */
	}
	assert_int_equal(resend_parse_created(NULL, 0, id), -EBADMSG);
}

static void test_parse_created_longest_id(void **state)
{
	char body[128], id[64], want[64];

	(void)state;
	memset(want, 'a', 63);
	want[63] = '\0';
	snprintf(body, sizeof(body), "{\"id\":\"%s\"}", want);
	assert_int_equal(resend_parse_created(body, strlen(body), id), 0);
	assert_string_equal(id, want);
}

/* ---- resend_parse_import ---- */

static void test_parse_import_each_status(void **state)
{
	static const struct {
		const char *status;
		enum resend_import_state state;
	} cases[] = {
		{"queued", RESEND_IMPORT_QUEUED},
		{"in_progress", RESEND_IMPORT_IN_PROGRESS},
		{"completed", RESEND_IMPORT_COMPLETED},
		{"failed", RESEND_IMPORT_FAILED},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[256];
		struct resend_import imp;

		snprintf(body, sizeof(body),
			 "{\"object\":\"contact_import\",\"id\":\"x\",\"status\":\"%s\"}",
			 cases[i].status);
		assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
		assert_int_equal(imp.state, cases[i].state);
		assert_string_equal(imp.status, cases[i].status);
		assert_string_equal(resend_import_state_name(imp.state), cases[i].status);
	}
}

static void test_parse_import_full_iso(void **state)
{
	static const char *body =
		"{\"object\":\"contact_import\",\"id\":\"479e3145-dd38-476b-932c-529ceb705947\","
		"\"status\":\"completed\",\"created_at\":\"2026-05-15T18:32:37.823Z\","
		"\"completed_at\":\"2026-05-15T18:32:41.002Z\","
		"\"counts\":{\"total\":1250,\"created\":1000,\"updated\":200,\"skipped\":40,"
		"\"failed\":10}}";
	struct resend_import imp;

	(void)state;
	assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
	assert_int_equal(imp.state, RESEND_IMPORT_COMPLETED);
	assert_true(imp.has_counts);
	assert_int_equal(imp.total, 1250);
	assert_int_equal(imp.created, 1000);
	assert_int_equal(imp.updated, 200);
	assert_int_equal(imp.skipped, 40);
	assert_int_equal(imp.failed, 10);
	assert_string_equal(imp.created_at, "2026-05-15T18:32:37.823Z");
	assert_string_equal(imp.completed_at, "2026-05-15T18:32:41.002Z");
}

static void test_parse_import_postgres_timestamps_and_null(void **state)
{
	static const char *body = "{\"status\":\"in_progress\",\"created_at\":\"2026-05-15 18:32:37.823+00\","
				  "\"completed_at\":null,\"counts\":{\"total\":0,\"created\":0,"
				  "\"updated\":0,\"skipped\":0,\"failed\":0}}";
	struct resend_import imp;

	(void)state;
	assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
	assert_int_equal(imp.state, RESEND_IMPORT_IN_PROGRESS);
	assert_string_equal(imp.created_at, "2026-05-15 18:32:37.823+00");
	assert_string_equal(imp.completed_at, "");
	assert_true(imp.has_counts);
	assert_int_equal(imp.total, 0);
	assert_int_equal(imp.failed, 0);
}

static void test_parse_import_missing_counts(void **state)
{
	static const char *bodies[] = {
		"{\"status\":\"queued\"}",
		"{\"status\":\"queued\",\"counts\":null}",
		"{\"status\":\"queued\",\"counts\":{}}",
		"{\"status\":\"queued\",\"counts\":[1,2,3]}",
		"{\"status\":\"queued\",\"counts\":{\"total\":-1,\"created\":1.5,\"updated\":true,"
		"\"skipped\":\"12a\",\"failed\":1e300}}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct resend_import imp;

		assert_int_equal(resend_parse_import(bodies[i], strlen(bodies[i]), &imp), 0);
		if (imp.has_counts)
			fail_msg("has_counts for %s", bodies[i]);
		assert_int_equal(imp.total, -1);
		assert_int_equal(imp.created, -1);
		assert_int_equal(imp.updated, -1);
		assert_int_equal(imp.skipped, -1);
		assert_int_equal(imp.failed, -1);
		assert_string_equal(imp.created_at, "");
		assert_string_equal(imp.completed_at, "");
	}
}

static void test_parse_import_partial_counts(void **state)
{
	static const char *body = "{\"status\":\"in_progress\",\"counts\":{\"total\":500,"
				  "\"created\":\"42\",\"failed\":3.0}}";
	struct resend_import imp;

	(void)state;
	assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
	assert_true(imp.has_counts);
	assert_int_equal(imp.total, 500);
	assert_int_equal(imp.created, 42); /* numeric string accepted */
	assert_int_equal(imp.updated, -1);
	assert_int_equal(imp.skipped, -1);
	assert_int_equal(imp.failed, 3);
}

static void test_parse_import_large_count(void **state)
{
	static const char *body = "{\"status\":\"completed\",\"counts\":{\"total\":9007199254740992,"
				  "\"created\":\"9223372036854775808\"}}";
	struct resend_import imp;

	(void)state;
	assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
	assert_int_equal(imp.total, 9007199254740992LL);
	assert_int_equal(imp.created, -1); /* beyond int64: ignored */
}

static void test_parse_import_unknown_status_and_fields(void **state)
{
	static const char *body = "{\"status\":\"cancelled\",\"id\":\"x\",\"future\":{\"a\":[1]},"
				  "\"counts\":{\"total\":3,\"bogus\":9},\"created_at\":17}";
	struct resend_import imp;

	(void)state;
	assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
	assert_int_equal(imp.state, RESEND_IMPORT_UNKNOWN);
	assert_string_equal(imp.status, "cancelled");
	assert_string_equal(resend_import_state_name(imp.state), "unknown");
	assert_true(imp.has_counts);
	assert_int_equal(imp.total, 3);
	assert_string_equal(imp.created_at, ""); /* not a string */
}

static void test_parse_import_truncation(void **state)
{
	static const char *body =
		"{\"status\":\"a_status_name_that_is_much_longer_than_thirty_one_bytes\","
		"\"created_at\":\"2026-05-15T18:32:37.823456789+00:00 and then some more text\","
		"\"completed_at\":\"2026\\n05\"}";
	struct resend_import imp;

	(void)state;
	assert_int_equal(resend_parse_import(body, strlen(body), &imp), 0);
	assert_int_equal(imp.state, RESEND_IMPORT_UNKNOWN);
	assert_int_equal(strlen(imp.status), sizeof(imp.status) - 1);
	assert_memory_equal(imp.status, "a_status_name_that_is_much_long", 31);
	assert_int_equal(strlen(imp.created_at), sizeof(imp.created_at) - 1);
	assert_memory_equal(imp.created_at, "2026-05-15T18:32:37.823456789+00:00", 35);
	assert_string_equal(imp.completed_at, "2026 05");
}

static void test_parse_import_garbage(void **state)
{
	static const char *bad[] = {
		"",
		"null",
		"[{\"status\":\"completed\"}]",
		"<html>oops</html>",
		"{\"status\":null}",
		"{\"status\":3}",
		"{\"state\":\"completed\"}",
		"{\"status\":\"completed\"",
		"{\"counts\":{\"total\":1}}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct resend_import imp, before;

		memset(&imp, 0x3c, sizeof(imp));
		before = imp;
		if (resend_parse_import(bad[i], strlen(bad[i]), &imp) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
		assert_memory_equal(&imp, &before, sizeof(imp));
	}
	{
		struct resend_import imp;
		assert_int_equal(resend_parse_import(NULL, 0, &imp), -EBADMSG);
	}
}

static void test_import_state_names(void **state)
{
	(void)state;
	assert_string_equal(resend_import_state_name(RESEND_IMPORT_QUEUED), "queued");
	assert_string_equal(resend_import_state_name(RESEND_IMPORT_IN_PROGRESS), "in_progress");
	assert_string_equal(resend_import_state_name(RESEND_IMPORT_COMPLETED), "completed");
	assert_string_equal(resend_import_state_name(RESEND_IMPORT_FAILED), "failed");
	assert_string_equal(resend_import_state_name(RESEND_IMPORT_UNKNOWN), "unknown");
	assert_string_equal(resend_import_state_name((enum resend_import_state)77), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields_sdk_capture_byte_exact),
		cmocka_unit_test(test_fields_absent_are_null),
		cmocka_unit_test(test_fields_email_only_like_sdk5),
		cmocka_unit_test(test_fields_present_but_empty_map),
		cmocka_unit_test(test_fields_partial_map_keeps_order),
		cmocka_unit_test(test_fields_properties_config_order_and_types),
		cmocka_unit_test(test_fields_properties_without_fixed_columns),
		cmocka_unit_test(test_fields_escaping_round_trips),
		cmocka_unit_test(test_fields_segments_topics_several),
		cmocka_unit_test(test_fields_segments_only),
		cmocka_unit_test(test_fields_invalid_input),
		cmocka_unit_test(test_fields_free_tolerates_null_and_twice),
		cmocka_unit_test(test_sanitize_filename),
		cmocka_unit_test(test_sanitize_filename_controls),
		cmocka_unit_test(test_sanitize_filename_empty),
		cmocka_unit_test(test_part_names_and_keys),
		cmocka_unit_test(test_idempotency_key_known_value),
		cmocka_unit_test(test_idempotency_key_shape_and_determinism),
		cmocka_unit_test(test_idempotency_key_differs),
		cmocka_unit_test(test_classify_documented_names),
		cmocka_unit_test(test_classify_statuses_without_body),
		cmocka_unit_test(test_classify_success_leaves_err_alone),
		cmocka_unit_test(test_classify_unexpected_statuses),
		cmocka_unit_test(test_classify_api_key_invalid_message),
		cmocka_unit_test(test_classify_html_502),
		cmocka_unit_test(test_classify_non_json_excerpt_is_short_and_safe),
		cmocka_unit_test(test_classify_trims_blanks),
		cmocka_unit_test(test_classify_json_but_not_resend_shape),
		cmocka_unit_test(test_classify_empty_body),
		cmocka_unit_test(test_classify_uses_len_not_nul),
		cmocka_unit_test(test_classify_truncates_safely),
		cmocka_unit_test(test_classify_json_message_made_one_line),
		cmocka_unit_test(test_classify_keeps_utf8_message),
		cmocka_unit_test(test_classify_rejects_malformed_utf8),
		cmocka_unit_test(test_parse_created_ok),
		cmocka_unit_test(test_parse_created_bad),
		cmocka_unit_test(test_parse_created_longest_id),
		cmocka_unit_test(test_parse_import_each_status),
		cmocka_unit_test(test_parse_import_full_iso),
		cmocka_unit_test(test_parse_import_postgres_timestamps_and_null),
		cmocka_unit_test(test_parse_import_missing_counts),
		cmocka_unit_test(test_parse_import_partial_counts),
		cmocka_unit_test(test_parse_import_large_count),
		cmocka_unit_test(test_parse_import_unknown_status_and_fields),
		cmocka_unit_test(test_parse_import_truncation),
		cmocka_unit_test(test_parse_import_garbage),
		cmocka_unit_test(test_import_state_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
