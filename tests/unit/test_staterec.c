/* staterec: the per-file record a restart resumes from. Its name must fit any file name, and
 * its content must survive a round trip and older or damaged versions. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* A file uploaded in parts: how many, how it was split, and the parts imported so far, in
 * order, with their attempts. */
static void test_round_trip_parts(void **state)
{
	struct staterec_part done[2] = {
		{.import_id = "00000000-0000-4000-8000-000000000001", .attempts = 1},
		{.import_id = "00000000-0000-4000-8000-000000000002", .attempts = 3},
	};
	struct staterec s = {0}, back;
	char *text;

	(void)state;
	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA);
	s.attempts = 2;
	s.claimed_at_ms = 1795665662123;
	s.uploaded_at_ms = 1795665700456;
	snprintf(s.import_id, sizeof(s.import_id), "%s", done[0].import_id);
	s.n_parts = 5;
	snprintf(s.plan, sizeof(s.plan), "0123456789abcdef");
	s.done = done;
	s.n_done = 2;
	text = staterec_encode("big.csv", &s);
	assert_non_null(text);
	/* Encoding borrows DONE: it is left as it was. */
	assert_ptr_equal(s.done, done);
	assert_string_equal(done[1].import_id, "00000000-0000-4000-8000-000000000002");
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.sha256, SHA);
	assert_int_equal(back.attempts, 2);
	assert_int_equal(back.claimed_at_ms, 1795665662123);
	assert_int_equal(back.uploaded_at_ms, 1795665700456);
	assert_string_equal(back.import_id, done[0].import_id);
	assert_int_equal(back.n_parts, 5);
	assert_string_equal(back.plan, "0123456789abcdef");
	assert_int_equal(back.n_done, 2);
	assert_non_null(back.done);
	assert_ptr_not_equal(back.done, done); /* owned by BACK */
	assert_string_equal(back.done[0].import_id, done[0].import_id);
	assert_int_equal(back.done[0].attempts, 1);
	assert_string_equal(back.done[1].import_id, done[1].import_id);
	assert_int_equal(back.done[1].attempts, 3);
	staterec_clear(&back);
	assert_null(back.done);
	assert_int_equal(back.n_done, 0);
	cJSON_free(text);

	/* Split, none imported yet: the plan is kept, the list is empty. */
	s.n_done = 0;
	s.done = NULL;
	s.import_id[0] = '\0';
	text = staterec_encode("big.csv", &s);
	assert_non_null(text);
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_int_equal(back.n_parts, 5);
	assert_string_equal(back.plan, "0123456789abcdef");
	assert_int_equal(back.n_done, 0);
	assert_null(back.done);
	staterec_clear(&back);
	cJSON_free(text);

	/* One part is no split: the record has the shape it always had. */
	s.n_parts = 1;
	s.done = done;
	s.n_done = 1;
	text = staterec_encode("small.csv", &s);
	assert_non_null(text);
	assert_null(strstr(text, "\"parts\""));
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_int_equal(back.n_parts, 0);
	assert_int_equal(back.n_done, 0);
	assert_null(back.done);
	staterec_clear(&back);
	cJSON_free(text);
}

/* A record of thousands of parts still fits what is read back. */
static void test_round_trip_many_parts(void **state)
{
	const size_t n = 5000;
	struct staterec_part *done = calloc(n, sizeof(*done));
	struct staterec s = {0}, back;
	char *text;

	(void)state;
	assert_non_null(done);
	for (size_t i = 0; i < n; i++) {
		snprintf(done[i].import_id, sizeof(done[i].import_id),
			 "00000000-0000-4000-8000-%012zx", i + 1);
		done[i].attempts = (unsigned)(i % 7);
	}
	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA);
	s.n_parts = (unsigned)n + 1;
	snprintf(s.plan, sizeof(s.plan), "fedcba9876543210");
	s.done = done;
	s.n_done = n;
	text = staterec_encode("huge.csv", &s);
	assert_non_null(text);
	assert_true(strlen(text) <= STATEREC_MAX_BYTES);
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_int_equal(back.n_parts, n + 1);
	assert_int_equal(back.n_done, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(back.done[i].import_id, done[i].import_id);
		assert_int_equal(back.done[i].attempts, i % 7);
	}
	staterec_clear(&back);
	cJSON_free(text);
	free(done);
}

/* The imported parts are in order: after an entry without an import id nothing can be trusted
 * to be the part its place says. */
static void test_decode_parts_stop_at_entry_without_id(void **state)
{
	const char *cases[] = {
		"{\"parts\":{\"total\":4,\"plan\":\"0123456789abcdef\",\"imported\":["
		"{\"import_id\":\"a\",\"attempts\":1},{\"attempts\":2},"
		"{\"import_id\":\"c\",\"attempts\":1}]}}",
		"{\"parts\":{\"total\":4,\"plan\":\"0123456789abcdef\",\"imported\":["
		"{\"import_id\":\"a\",\"attempts\":1},{\"import_id\":\"\",\"attempts\":2},"
		"{\"import_id\":\"c\",\"attempts\":1}]}}",
		"{\"parts\":{\"total\":4,\"plan\":\"0123456789abcdef\",\"imported\":["
		"{\"import_id\":\"a\",\"attempts\":1},{\"import_id\":7},"
		"{\"import_id\":\"c\",\"attempts\":1}]}}",
		"{\"parts\":{\"total\":4,\"plan\":\"0123456789abcdef\",\"imported\":["
		"{\"import_id\":\"a\",\"attempts\":1},\"b\",{\"import_id\":\"c\"}]}}",
	};
	struct staterec back;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&back, 0x55, sizeof(back));
		assert_int_equal(staterec_decode(cases[i], strlen(cases[i]), &back), 0);
		assert_int_equal(back.n_parts, 4);
		assert_string_equal(back.plan, "0123456789abcdef");
		if (back.n_done != 1)
			fail_msg("%s: %zu parts taken as imported", cases[i], back.n_done);
		assert_string_equal(back.done[0].import_id, "a");
		assert_int_equal(back.done[0].attempts, 1);
		staterec_clear(&back);
	}

	/* The first one without an id: none imported. */
	const char *none = "{\"parts\":{\"total\":3,\"plan\":\"0123456789abcdef\",\"imported\":["
			   "{\"attempts\":1},{\"import_id\":\"b\",\"attempts\":1}]}}";
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(none, strlen(none), &back), 0);
	assert_int_equal(back.n_parts, 3);
	assert_int_equal(back.n_done, 0);
	staterec_clear(&back);
}

/* Records written before files were split have no "parts": not split. */
static void test_decode_without_parts(void **state)
{
	const char *text = "{\"file\":\"a.csv\",\"sha256\":\"" SHA "\",\"attempts\":1,"
			   "\"claimed_at_ms\":1000,\"import_id\":\"x\",\"uploaded_at_ms\":2000}";
	struct staterec back;

	(void)state;
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.sha256, SHA);
	assert_string_equal(back.import_id, "x");
	assert_int_equal(back.n_parts, 0);
	assert_string_equal(back.plan, "");
	assert_null(back.done);
	assert_int_equal(back.n_done, 0);
	staterec_clear(&back);

	/* Nor when "parts" is not an object. */
	const char *odd[] = {"{\"attempts\":1,\"parts\":3}", "{\"attempts\":1,\"parts\":null}",
			     "{\"attempts\":1,\"parts\":[{\"import_id\":\"a\"}]}"};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		memset(&back, 0x55, sizeof(back));
		assert_int_equal(staterec_decode(odd[i], strlen(odd[i]), &back), 0);
		assert_int_equal(back.attempts, 1);
		assert_int_equal(back.n_parts, 0);
		assert_int_equal(back.n_done, 0);
		assert_null(back.done);
		staterec_clear(&back);
	}
}

/* A total that cannot be a split (one part or fewer, absurdly many, not a number) is ignored,
 * and with it the parts listed; so are lists longer than the total, and attempts out of range. */
static void test_decode_parts_out_of_range_ignored(void **state)
{
	const char *totals[] = {
		"{\"parts\":{\"total\":1,\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"total\":0,\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"total\":-3,\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"total\":1e300,\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"total\":10000000,\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"total\":\"3\",\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"total\":true,\"imported\":[{\"import_id\":\"a\"}]}}",
		"{\"parts\":{\"imported\":[{\"import_id\":\"a\"}]}}",
	};
	struct staterec back;

	(void)state;
	for (size_t i = 0; i < sizeof(totals) / sizeof(totals[0]); i++) {
		memset(&back, 0x55, sizeof(back));
		assert_int_equal(staterec_decode(totals[i], strlen(totals[i]), &back), 0);
		if (back.n_parts != 0 || back.n_done != 0)
			fail_msg("%s: n_parts %u, n_done %zu", totals[i], back.n_parts,
				 back.n_done);
		assert_null(back.done);
		staterec_clear(&back);
	}

	/* More imported than there are parts: none of them trusted. */
	const char *more = "{\"parts\":{\"total\":2,\"imported\":[{\"import_id\":\"a\"},"
			   "{\"import_id\":\"b\"},{\"import_id\":\"c\"}]}}";
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(more, strlen(more), &back), 0);
	assert_int_equal(back.n_parts, 2);
	assert_int_equal(back.n_done, 0);
	assert_null(back.done);
	staterec_clear(&back);

	/* Attempts out of range are 0; the ids are kept. */
	const char *att = "{\"parts\":{\"total\":4,\"imported\":["
			  "{\"import_id\":\"a\",\"attempts\":-1},"
			  "{\"import_id\":\"b\",\"attempts\":1e9},"
			  "{\"import_id\":\"c\",\"attempts\":\"2\"}]}}";
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(att, strlen(att), &back), 0);
	assert_int_equal(back.n_parts, 4);
	assert_int_equal(back.n_done, 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(back.done[i].attempts, 0);
	assert_string_equal(back.done[2].import_id, "c");
	staterec_clear(&back);

	/* A plan too long for any fingerprint is not cut into one. */
	const char *plan = "{\"parts\":{\"total\":3,\"plan\":\"0123456789abcdef0123\"}}";
	memset(&back, 0x55, sizeof(back));
	assert_int_equal(staterec_decode(plan, strlen(plan), &back), 0);
	assert_int_equal(back.n_parts, 3);
	assert_string_equal(back.plan, "");
	staterec_clear(&back);
}

/* staterec_clear frees what decode made (ASan says if not) and can be called again, or on a
 * record that has nothing. */
/* ---- a report into a record, and back ---------------------------------------------------- */

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void report_of(struct report *r, struct report_part *parts, size_t n_parts)
{
	memset(r, 0, sizeof(*r));
	memset(parts, 0, n_parts * sizeof(*parts));
	r->folder = "news";
	r->file = "x.csv";
	snprintf(r->sha256, sizeof(r->sha256), "%s", SHA_A);
	r->claimed_at_ms = 1000;
	r->parts = parts;
	r->n_parts = n_parts;
}

/* What a split file uploaded so far survives a restart: the record made from its report,
 * applied to the same file checked again, gives back the parts done and where to go on. */
static void test_report_round_trip_parts(void **state)
{
	struct report r, again;
	struct report_part parts[3], parts2[3];
	struct staterec s, back;
	char why[512] = "", *text;
	size_t done;
	bool foreign;

	(void)state;
	report_of(&r, parts, 3);
	snprintf(parts[0].import_id, sizeof(parts[0].import_id), "id-1");
	parts[0].attempts = 2;
	snprintf(r.import_id, sizeof(r.import_id), "id-1");
	r.uploaded_at_ms = 2000;
	r.attempts = 1; /* the second part's, under way */
	assert_int_equal(staterec_from_report(&r, r.attempts + 1, "0123456789abcdef", &s), 0);
	assert_int_equal(s.attempts, 2);
	assert_int_equal(s.n_parts, 3);
	assert_int_equal(s.n_done, 1);
	text = staterec_encode("x.csv", &s);
	assert_non_null(text);
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	cJSON_free(text);

	report_of(&again, parts2, 3);
	assert_int_equal(staterec_apply(&back, "0123456789abcdef", &again, &done, &foreign, why,
					sizeof(why)),
			 0);
	assert_false(foreign);
	assert_int_equal(done, 1); /* the second part is next */
	assert_string_equal(parts2[0].import_id, "id-1");
	assert_int_equal(parts2[0].attempts, 2);
	assert_string_equal(parts2[1].import_id, "");
	assert_int_equal(again.attempts, 2);
	assert_int_equal(again.uploaded_at_ms, 2000);

	/* Split otherwise now: nothing can be trusted, and it is said why. */
	report_of(&again, parts2, 3);
	assert_int_equal(staterec_apply(&back, "fedcba9876543210", &again, &done, &foreign, why,
					sizeof(why)),
			 -ESTALE);
	assert_non_null(strstr(why, "uploaded in 3 parts before a restart, 1 of them imported "
				    "(first import id-1), and is split into 3 parts now"));
	report_of(&again, parts2, 2);
	assert_int_equal(staterec_apply(&back, "0123456789abcdef", &again, &done, &foreign, why,
					sizeof(why)),
			 -ESTALE);
	staterec_clear(&s);
	staterec_clear(&back);
}

/* A record of an earlier file of the name (other content) is never taken; one from before an
 * upload gives its attempts and nothing done. */
static void test_report_apply_foreign_and_fresh(void **state)
{
	struct report r;
	struct report_part parts[1];
	struct staterec s = {.attempts = 3, .claimed_at_ms = 500};
	char why[64];
	size_t done = 9;
	bool foreign;

	(void)state;
	report_of(&r, parts, 1);
	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA_B);
	assert_int_equal(staterec_apply(&s, "", &r, &done, &foreign, why, sizeof(why)), 0);
	assert_true(foreign);
	assert_int_equal(done, 0);
	assert_int_equal(r.attempts, 0);
	assert_int_equal(r.claimed_at_ms, 1000);

	snprintf(s.sha256, sizeof(s.sha256), "%s", SHA_A);
	assert_int_equal(staterec_apply(&s, "", &r, &done, &foreign, why, sizeof(why)), 0);
	assert_false(foreign);
	assert_int_equal(done, 0);
	assert_int_equal(r.attempts, 3);
	assert_int_equal(r.claimed_at_ms, 500);

	/* Uploaded whole before the restart: only followed now. */
	snprintf(s.import_id, sizeof(s.import_id), "id-9");
	report_of(&r, parts, 1);
	assert_int_equal(staterec_apply(&s, "", &r, &done, &foreign, why, sizeof(why)), 0);
	assert_int_equal(done, 1);
	assert_string_equal(parts[0].import_id, "id-9");
	assert_string_equal(r.import_id, "id-9");
}

static void test_clear(void **state)
{
	const char *text = "{\"parts\":{\"total\":3,\"plan\":\"0123456789abcdef\",\"imported\":["
			   "{\"import_id\":\"a\",\"attempts\":1},"
			   "{\"import_id\":\"b\",\"attempts\":2}]}}";
	struct staterec back, empty = {0};

	(void)state;
	for (int i = 0; i < 3; i++) {
		memset(&back, 0, sizeof(back));
		assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
		assert_int_equal(back.n_done, 2);
		assert_non_null(back.done);
		staterec_clear(&back);
		assert_null(back.done);
		assert_int_equal(back.n_done, 0);
		staterec_clear(&back);
	}
	staterec_clear(&empty);
	assert_null(empty.done);
}

/* ---- leftovers of a stop between a file's move and its record's removal ------------------- */

static void touch_at(int dir_fd, const char *name)
{
	int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{}", 2), 2);
	close(fd);
}

static bool exists_at(int dir_fd, const char *name)
{
	return faccessat(dir_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/* The stage name fsops_finish gets for a record that holds an import: ".report-" and the
 * record's 32 hex digits. */
static void stage_name_of(char buf[STATEREC_NAME_LEN + 2], const char *file)
{
	char rec[STATEREC_NAME_LEN + 1];

	staterec_name(rec, file);
	snprintf(buf, STATEREC_NAME_LEN + 2, ".report-%s", rec + 7);
}

/* The records and staged reports of files still there stay; those of files gone go, and
 * nothing else is touched: other dot files, names of another length, the files themselves. */
static void test_sweep_removes_only_records_of_files_gone(void **state)
{
	char dir[] = "/tmp/rdd-staterec-XXXXXX", rec[STATEREC_NAME_LEN + 1];
	char stage[STATEREC_NAME_LEN + 2], gone_rec[STATEREC_NAME_LEN + 1];
	char gone_stage[STATEREC_NAME_LEN + 2], kept_stage[STATEREC_NAME_LEN + 2];
	char *files[] = {"a.csv", "b.csv", "c d.csv"};
	const char *others[] = {".rejects-0123456789abcdef0123456789abcdef", ".state-short",
				".state-0123456789abcdef0123456789abcdef0", ".lock", "..x.tmp.keep"};
	size_t removed = 99;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	for (size_t i = 0; i < 3; i++)
		touch_at(fd, files[i]);
	staterec_name(rec, "a.csv");
	touch_at(fd, rec);
	stage_name_of(kept_stage, "c d.csv");
	touch_at(fd, kept_stage);
	staterec_name(gone_rec, "moved.csv");
	touch_at(fd, gone_rec);
	stage_name_of(gone_stage, "moved.csv");
	touch_at(fd, gone_stage);
	stage_name_of(stage, "other gone.csv");
	touch_at(fd, stage);
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		touch_at(fd, others[i]);

	assert_int_equal(staterec_sweep(fd, files, 3, &removed), 0);
	assert_int_equal(removed, 3);
	assert_false(exists_at(fd, gone_rec));
	assert_false(exists_at(fd, gone_stage));
	assert_false(exists_at(fd, stage));
	assert_true(exists_at(fd, rec));
	assert_true(exists_at(fd, kept_stage));
	for (size_t i = 0; i < 3; i++)
		assert_true(exists_at(fd, files[i]));
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		assert_true(exists_at(fd, others[i]));

	/* Nothing listed: every record goes, the rest stays. */
	assert_int_equal(staterec_sweep(fd, NULL, 0, &removed), 0);
	assert_int_equal(removed, 2);
	assert_false(exists_at(fd, rec));
	assert_false(exists_at(fd, kept_stage));
	assert_true(exists_at(fd, "a.csv"));

	for (size_t i = 0; i < 3; i++)
		assert_int_equal(unlinkat(fd, files[i], 0), 0);
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		assert_int_equal(unlinkat(fd, others[i], 0), 0);
	close(fd);
	assert_int_equal(rmdir(dir), 0);
}

/* Coalesced (issue 18): the batch a record names and when its request may have begun survive
 * the round trip; applied to a resumed file's report, the batch is known by its id, rows and
 * count (not its names); a record without them gives none. */
static void test_batch_and_sent_at(void **state)
{
	struct report r;
	struct report_part parts[1];
	struct batch_info *b = batch_info_new("0123456789abcdef", 42, 3, true);
	struct staterec s, back;
	char why[64], *text;
	size_t done;
	bool foreign;

	(void)state;
	assert_non_null(b);
	report_of(&r, parts, 1);
	snprintf(r.sha256, sizeof(r.sha256), "%s", SHA_A);
	r.batch = b;
	r.sent_at_ms = 1765000000123;
	assert_int_equal(staterec_from_report(&r, 2, "", &s), 0);
	text = staterec_encode("x.csv", &s);
	assert_non_null(text);
	assert_int_equal(staterec_decode(text, strlen(text), &back), 0);
	assert_string_equal(back.batch_id, "0123456789abcdef");
	assert_int_equal(back.batch_files, 3);
	assert_int_equal(back.batch_rows, 42);
	assert_int_equal(back.sent_at_ms, 1765000000123);
	cJSON_free(text);
	staterec_clear(&s);

	report_of(&r, parts, 1);
	snprintf(r.sha256, sizeof(r.sha256), "%s", SHA_A);
	assert_int_equal(staterec_apply(&back, "", &r, &done, &foreign, why, sizeof(why)), 0);
	assert_non_null(r.batch);
	assert_string_equal(r.batch->id, "0123456789abcdef");
	assert_int_equal(r.batch->rows, 42);
	assert_int_equal(r.batch->n_files, 3);
	assert_null(r.batch->files);
	assert_int_equal(r.sent_at_ms, 1765000000123);
	batch_info_unref(r.batch);
	staterec_clear(&back);
	batch_info_unref(b);

	/* A batch of no files is none. */
	{
		static const char text0[] = "{\"batch\":{\"id\":\"ab\",\"files\":0,\"rows\":3}}";

		assert_int_equal(staterec_decode(text0, strlen(text0), &back), 0);
	}
	assert_string_equal(back.batch_id, "");
	staterec_clear(&back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_fixed_length),
		cmocka_unit_test(test_batch_and_sent_at),
		cmocka_unit_test(test_name_stable_and_distinct),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_round_trip_before_upload),
		cmocka_unit_test(test_encode_is_valid_json_for_any_name),
		cmocka_unit_test(test_decode_version_0_1),
		cmocka_unit_test(test_decode_malformed_sha256),
		cmocka_unit_test(test_decode_garbage),
		cmocka_unit_test(test_decode_out_of_range_ignored),
		cmocka_unit_test(test_round_trip_parts),
		cmocka_unit_test(test_round_trip_many_parts),
		cmocka_unit_test(test_decode_parts_stop_at_entry_without_id),
		cmocka_unit_test(test_decode_without_parts),
		cmocka_unit_test(test_decode_parts_out_of_range_ignored),
		cmocka_unit_test(test_report_round_trip_parts),
		cmocka_unit_test(test_report_apply_foreign_and_fresh),
		cmocka_unit_test(test_clear),
		cmocka_unit_test(test_sweep_removes_only_records_of_files_gone),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
