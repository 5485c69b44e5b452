/* staterec: the per-file record a restart resumes from. Its name must fit any file name, and
 * its content must survive a round trip and older or damaged versions. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "staterec.h"

#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void assert_name_ok(const char *file)
{
	char buf[STATEREC_NAME_LEN + 1];

	memset(buf, 'X', sizeof(buf));
	staterec_name(buf, file);
	assert_int_equal(strlen(buf), STATEREC_NAME_LEN);
	/* A dot file: never taken for an inbox file, never listed by fsops_list. */
	assert_memory_equal(buf, ".state-", 7);
	assert_int_equal(strspn(buf + 7, "0123456789abcdef"), 32);
}

static void test_name_fixed_length(void **state)
{
	char longest[NAME_MAX + 1], bytes[NAME_MAX + 1];

	(void)state;
	memset(longest, 'n', NAME_MAX);
	longest[NAME_MAX] = '\0';
	for (size_t i = 0; i < NAME_MAX; i++)
		bytes[i] = (char)(0x80 + i % 0x7f); /* not UTF-8 */
	bytes[NAME_MAX] = '\0';
	assert_name_ok("a.csv");
	assert_name_ok("x");
	assert_name_ok(longest);
	assert_name_ok(bytes);
	assert_name_ok("\xff\xfe.csv");
	assert_name_ok("contacts ümlaut 😀.csv");
	/* Short enough that a temporary name for it (".<name>.tmp") fits NAME_MAX too. */
	assert_true(1 + STATEREC_NAME_LEN + 4 <= NAME_MAX);
}

static void test_name_stable_and_distinct(void **state)
{
	char a[STATEREC_NAME_LEN + 1], b[STATEREC_NAME_LEN + 1];
	char longest1[NAME_MAX + 1], longest2[NAME_MAX + 1];
	const char *names[] = {"a.csv", "b.csv", "A.csv", "a.csv ", "a.cs", "\xff.csv", "\xfe.csv",
			       "contacts.csv", "contacts.csv.json"};
	size_t n = sizeof(names) / sizeof(names[0]);
	char (*all)[STATEREC_NAME_LEN + 1] = calloc(n + 2, sizeof(*all));

	(void)state;
	staterec_name(a, "contacts.csv");
	staterec_name(b, "contacts.csv");
	assert_string_equal(a, b); /* found again after a restart */

	/* Names that differ only at the end, past what any prefix-based name would keep. */
	memset(longest1, 'n', NAME_MAX);
	memcpy(longest2, longest1, NAME_MAX);
	longest1[NAME_MAX] = longest2[NAME_MAX] = '\0';
	longest2[NAME_MAX - 1] = 'm';

	for (size_t i = 0; i < n; i++)
		staterec_name(all[i], names[i]);
	staterec_name(all[n], longest1);
	staterec_name(all[n + 1], longest2);
	for (size_t i = 0; i < n + 2; i++) {
		for (size_t j = i + 1; j < n + 2; j++) {
			if (strcmp(all[i], all[j]) == 0)
				fail_msg("names %zu and %zu share the record %s", i, j, all[i]);
		}
	}
	free(all);
}

static void test_round_trip(void **state)
{
	struct staterec s = {0}, back;
	char *text;

	(void)state;
	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA);
	s.attempts = 3;
	s.claimed_at_ms = 1795665662123;
	s.uploaded_at_ms = 1795665700456;
	snprintf(s.import_id, sizeof(s.import_id), "479e3145-dd38-476b-932c-529ceb705947");
	text = staterec_encode("contacts.csv", &s);
	assert_non_null(text);
	assert_true(strlen(text) <= STATEREC_MAX_BYTES);
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.sha256, SHA);
	assert_int_equal(back.attempts, 3);
	assert_int_equal(back.claimed_at_ms, 1795665662123);
	assert_int_equal(back.uploaded_at_ms, 1795665700456);
	assert_string_equal(back.import_id, "479e3145-dd38-476b-932c-529ceb705947");
	cJSON_free(text);
}

/* Before the upload: no import id, not uploaded. */
static void test_round_trip_before_upload(void **state)
{
	struct staterec s = {0}, back;
	char *text;

	(void)state;
	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA);
	s.attempts = 1;
	s.claimed_at_ms = 1000;
	text = staterec_encode("a.csv", &s);
	assert_non_null(text);
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.sha256, SHA);
	assert_int_equal(back.attempts, 1);
	assert_int_equal(back.claimed_at_ms, 1000);
	assert_int_equal(back.uploaded_at_ms, 0);
	assert_string_equal(back.import_id, "");
	cJSON_free(text);
}

/* The record is JSON a human can read, with the file's name, even when that is not UTF-8. */
static void test_encode_is_valid_json_for_any_name(void **state)
{
	struct staterec s = {0}, back;
	char longest[NAME_MAX + 1];
	const char *names[] = {"a.csv", "\xff\xfe\"\\\n.csv", longest};
	char *text;
	cJSON *o;

	(void)state;
	memset(longest, '\xe9', NAME_MAX);
	longest[NAME_MAX] = '\0';
	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA);
	s.attempts = 2;
	for (size_t i = 0; i < 3; i++) {
		text = staterec_encode(names[i], &s);
		assert_non_null(text);
		assert_true(strlen(text) <= STATEREC_MAX_BYTES);
		o = cJSON_Parse(text);
		assert_non_null(o);
		assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "file")));
		cJSON_Delete(o);
		assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
		assert_int_equal(back.attempts, 2);
		assert_string_equal(back.sha256, SHA);
		cJSON_free(text);
	}
	text = staterec_encode("a.csv", &s);
	o = cJSON_Parse(text);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "file")->valuestring, "a.csv");
	cJSON_Delete(o);
	cJSON_free(text);
}

/* Records of version 0.1 had no sha256: taken on trust, with an empty sha256. */
static void test_decode_version_0_1(void **state)
{
	const char *text = "{\"attempts\":1,\"import_id\":\"x\"}";
	struct staterec back;

	(void)state;
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.sha256, "");
	assert_int_equal(back.attempts, 1);
	assert_string_equal(back.import_id, "x");
	assert_int_equal(back.claimed_at_ms, 0);
	assert_int_equal(back.uploaded_at_ms, 0);
}

/* A sha256 field that is there but is not a sha256 must match no content. */
static void test_decode_malformed_sha256(void **state)
{
	const char *bad[] = {
		"{\"sha256\":\"\",\"attempts\":1}",
		"{\"sha256\":\"abc\",\"attempts\":1}",
		"{\"sha256\":42,\"attempts\":1}",
		"{\"sha256\":null,\"attempts\":1}",
		"{\"sha256\":\"" SHA "0\",\"attempts\":1}",                       /* 65 */
		"{\"sha256\":\"zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}",
	};
	struct staterec back;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&back, 0x55, sizeof(back));
		assert_int_equal(staterec_decode(bad[i], strlen(bad[i]), &back), 0);
		if (strcmp(back.sha256, "invalid") != 0)
			fail_msg("%s: sha256 '%s'", bad[i], back.sha256);
		/* "invalid" itself is no sha256: it can equal no file's hash. */
		assert_int_not_equal(strlen(back.sha256), 64);
	}
}

static void test_decode_garbage(void **state)
{
	const char *bad[] = {"", "not json", "[1,2,3]", "\"string\"", "42", "null", "{\"attempts\":",
			     "{\"attempts\":1"};
	struct staterec back, before;

	(void)state;
	memset(&before, 0x55, sizeof(before));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		back = before;
		assert_int_equal(staterec_decode(bad[i], strlen(bad[i]), &back), -EBADMSG);
		assert_memory_equal(&back, &before, sizeof(back)); /* untouched */
	}
	/* LEN is what counts, not a NUL: a record cut short by a crash is garbage. */
	const char *whole = "{\"attempts\":2,\"import_id\":\"abc\"}";
	back = before;
	assert_int_equal(staterec_decode(whole, strlen(whole) - 1, &back), -EBADMSG);
}

static void test_decode_out_of_range_ignored(void **state)
{
	const char *cases[] = {
		"{\"attempts\":-1}",
		"{\"attempts\":1e300}",
		"{\"attempts\":4294967296}",
		"{\"attempts\":\"3\"}",
		"{\"attempts\":true}",
	};
	struct staterec back;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&back, 0x55, sizeof(back));
		assert_int_equal(staterec_decode(cases[i], strlen(cases[i]), &back), 0);
		if (back.attempts != 0)
			fail_msg("%s: attempts %u", cases[i], back.attempts);
	}

	const char *times = "{\"attempts\":2,\"claimed_at_ms\":-5,\"uploaded_at_ms\":1e300,"
			    "\"import_id\":7}";
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(times, strlen(times), &back), 0);
	assert_int_equal(back.attempts, 2);
	assert_int_equal(back.claimed_at_ms, 0);
	assert_int_equal(back.uploaded_at_ms, 0);
	assert_string_equal(back.import_id, "");

	/* An import id too long for any real one is not cut into a wrong one. */
	char text[256];
	snprintf(text, sizeof(text), "{\"import_id\":\"%0100d\"}", 7);
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.import_id, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_fixed_length),
		cmocka_unit_test(test_name_stable_and_distinct),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_round_trip_before_upload),
		cmocka_unit_test(test_encode_is_valid_json_for_any_name),
		cmocka_unit_test(test_decode_version_0_1),
		cmocka_unit_test(test_decode_malformed_sha256),
		cmocka_unit_test(test_decode_garbage),
		cmocka_unit_test(test_decode_out_of_range_ignored),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
