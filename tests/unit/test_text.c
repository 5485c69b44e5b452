/* text: UTF-8 well-formedness, the escaped form of untrusted text, UTC times, counts, hex, and
 * strings into JSON. */
#include "text.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NOW 1795665662 /* 2026-11-26T04:01:02Z */

/* ---- text_escape ------------------------------------------------------------------------------ */

/* Escapes SRC into a buffer of exactly the needed size and compares with WANT. Also checks that
 * the return value is the full length and that nothing past the buffer is touched. */
static void check_escape(const char *src, const char *want)
{
	size_t n = strlen(want);
	char *buf = malloc(n + 1 + 8);

	assert_non_null(buf);
	memset(buf, 'Z', n + 1 + 8);
	size_t r = text_escape(buf, n + 1, src);
	if (r != n || strcmp(buf, want) != 0) {
		print_message("escape of '%s':\n  expected (%zu): %s\n  actual   (%zu): %s\n", src, n,
			      want, r, buf);
		free(buf);
		fail_msg("text_escape gave a wrong result");
	}
	for (size_t i = n + 1; i < n + 1 + 8; i++)
		assert_int_equal(buf[i], 'Z');
	free(buf);
}

static void test_escape_plain(void **state)
{
	(void)state;
	check_escape("", "");
	check_escape("hello, world", "hello, world");
	check_escape("newsletter: 'contacts.csv' uploaded", "newsletter: 'contacts.csv' uploaded");
	check_escape(" !\"#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~", " !\"#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~");
}

static void test_escape_control_characters(void **state)
{
	(void)state;
	check_escape("a\nb", "a\\nb");
	check_escape("a\rb", "a\\rb");
	check_escape("a\tb", "a\\tb");
	check_escape("\x01", "\\x01");
	check_escape("\x1b[31mred", "\\x1b[31mred");
	check_escape("\x1f\x7f", "\\x1f\\x7f");
	check_escape("\b\f\v", "\\x08\\x0c\\x0b");
	check_escape("\n\n", "\\n\\n");
}

static void test_escape_backslash(void **state)
{
	(void)state;
	check_escape("\\", "\\\\");
	check_escape("C:\\dir\\x41", "C:\\\\dir\\\\x41");
	/* A literal "\n" in a file name stays distinguishable from an escaped newline. */
	check_escape("a\\nb", "a\\\\nb");
}

static void test_escape_valid_utf8_kept(void **state)
{
	(void)state;
	check_escape("caf\xc3\xa9", "caf\xc3\xa9");                     /* U+00E9 */
	check_escape("\xc2\x80", "\xc2\x80");                           /* U+0080, smallest 2-byte */
	check_escape("\xdf\xbf", "\xdf\xbf");                           /* U+07FF */
	check_escape("\xe0\xa0\x80", "\xe0\xa0\x80");                   /* U+0800, smallest 3-byte */
	check_escape("\xe2\x82\xac 5", "\xe2\x82\xac 5");               /* euro sign */
	check_escape("\xed\x9f\xbf", "\xed\x9f\xbf");                   /* U+D7FF, below surrogates */
	check_escape("\xee\x80\x80", "\xee\x80\x80");                   /* U+E000, above surrogates */
	check_escape("\xef\xbf\xbd", "\xef\xbf\xbd");                   /* U+FFFD */
	check_escape("\xf0\x90\x80\x80", "\xf0\x90\x80\x80");           /* U+10000 */
	check_escape("\xf0\x9f\x98\x80!", "\xf0\x9f\x98\x80!");         /* emoji */
	check_escape("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");           /* U+10FFFF */
	check_escape("\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac");
}

static void test_escape_invalid_utf8(void **state)
{
	(void)state;
	check_escape("\xff", "\\xff");
	check_escape("\xfe\xfd", "\\xfe\\xfd");
	check_escape("a\x80z", "a\\x80z");                 /* lone continuation byte */
	check_escape("\xc3", "\\xc3");                     /* truncated at the end */
	check_escape("\xc3(", "\\xc3(");                   /* bad continuation */
	check_escape("\xe2\x82", "\\xe2\\x82");             /* truncated 3-byte */
	check_escape("\xe2\x82z", "\\xe2\\x82z");
	check_escape("\xf0\x9f\x98", "\\xf0\\x9f\\x98");     /* truncated 4-byte */
	check_escape("\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80");
	check_escape("\xf8\x88\x80\x80\x80", "\\xf8\\x88\\x80\\x80\\x80");
	/* Latin-1 file names, as from an old Windows share. */
	check_escape("caf\xe9.csv", "caf\\xe9.csv");
	/* A valid character right after an invalid byte is kept. */
	check_escape("\xff\xc3\xa9", "\\xff\xc3\xa9");
}

static void test_escape_overlong_and_surrogates(void **state)
{
	(void)state;
	check_escape("\xc0\xaf", "\\xc0\\xaf");                 /* overlong '/' */
	check_escape("\xc1\xbf", "\\xc1\\xbf");
	check_escape("\xc0\x8a", "\\xc0\\x8a");                 /* overlong '\n' */
	check_escape("\xe0\x80\xaf", "\\xe0\\x80\\xaf");         /* overlong 3-byte '/' */
	check_escape("\xe0\x9f\xbf", "\\xe0\\x9f\\xbf");         /* overlong U+07FF */
	check_escape("\xf0\x80\x80\xaf", "\\xf0\\x80\\x80\\xaf"); /* overlong 4-byte */
	check_escape("\xf0\x8f\xbf\xbf", "\\xf0\\x8f\\xbf\\xbf"); /* overlong U+FFFF */
	check_escape("\xed\xa0\x80", "\\xed\\xa0\\x80");         /* U+D800 */
	check_escape("\xed\xbf\xbf", "\\xed\\xbf\\xbf");         /* U+DFFF */
	check_escape("\xed\xa0\xbd\xed\xb8\x80", "\\xed\\xa0\\xbd\\xed\\xb8\\x80"); /* CESU-8 pair */
	check_escape("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"); /* U+110000 */
}

/* Input pieces and what each becomes: a truncated result must end on a piece boundary. */
static const struct {
	const char *in, *out;
} pieces[] = {
	{"a", "a"},          {"b", "b"},          {"\n", "\\n"},       {"\xc3\xa9", "\xc3\xa9"}, {"\x01", "\\x01"},
	{"\\", "\\\\"},      {"\xff", "\\xff"},   {"x", "x"},               {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
	{"\t", "\\t"},       {"\xe2\x82\xac", "\xe2\x82\xac"}, {"\r", "\\r"}, {"z", "z"},
};

static void test_escape_truncation(void **state)
{
	char src[128] = "", full[256] = "", buf[300];
	size_t bounds[64], nb = 0, outlen = 0;

	(void)state;
	bounds[nb++] = 0;
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		strcat(src, pieces[i].in);
		strcat(full, pieces[i].out);
		outlen += strlen(pieces[i].out);
		bounds[nb++] = outlen;
	}
	assert_int_equal(outlen, strlen(full));

	for (size_t sz = 0; sz <= outlen + 2; sz++) {
		memset(buf, 'Z', sizeof(buf));
		size_t r = text_escape(sz ? buf : NULL, sz, src);
		assert_int_equal(r, outlen); /* the full length, like snprintf */
		if (sz == 0)
			continue;
		size_t want = 0;
		for (size_t b = 0; b < nb; b++) {
			if (bounds[b] < sz)
				want = bounds[b];
		}
		size_t got = strnlen(buf, sizeof(buf));
		if (got != want || memcmp(buf, full, got) != 0) {
			print_message("size %zu: expected the first %zu bytes of '%s', got '%.*s'\n", sz,
				      want, full, (int)got, buf);
			fail_msg("truncation split an escape or a character");
		}
		for (size_t i = sz; i < sizeof(buf); i++)
			assert_int_equal(buf[i], 'Z');
	}
}

static void test_escape_small_buffers(void **state)
{
	char buf[8];

	(void)state;
	assert_int_equal(text_escape(NULL, 0, "\n"), 2);
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(text_escape(buf, 1, "abc"), 3);
	assert_string_equal(buf, "");
	assert_int_equal(buf[1], 'Z');
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(text_escape(buf, 4, "\x01"), 4); /* "\x01" needs 5 bytes with the NUL */
	assert_string_equal(buf, "");
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(text_escape(buf, 5, "\x01"), 4);
	assert_string_equal(buf, "\\x01");
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(text_escape(buf, 2, "\\"), 2);
	assert_string_equal(buf, "");
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(text_escape(buf, 3, "a\xc3\xa9"), 3);
	assert_string_equal(buf, "a");
}

/* Every byte value, alone: output is printable ASCII or valid UTF-8, never a raw control. */
static void test_escape_every_byte(void **state)
{
	char src[2] = {0}, buf[16];

	(void)state;
	for (int b = 1; b < 256; b++) {
		src[0] = (char)b;
		size_t r = text_escape(buf, sizeof(buf), src);
		if (b >= 0x20 && b < 0x7f && b != '\\') {
			assert_int_equal(r, 1);
			assert_int_equal((unsigned char)buf[0], b);
			continue;
		}
		assert_true(r >= 2);
		for (size_t i = 0; i < r; i++) {
			unsigned char c = (unsigned char)buf[i];
			assert_true(c >= 0x20 && c < 0x7f);
		}
	}
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

static void test_utf8(void **state)
{
	static const char *const good[] = {"", "plain", "caf\xc3\xa9", "\xe2\x82\xac",
					   "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
	static const char *const bad[] = {
		"\xc0\xaf",	      /* overlong "/" */
		"\xe0\x80\xaf",    /* overlong, three bytes */
		"\xed\xa0\x80",    /* a surrogate */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"\xc3",	      /* cut short */
		"\x80",	      /* a continuation alone */
		"\xff",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(text_utf8_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(text_utf8_valid(bad[i]));
	assert_int_equal(text_utf8_len((const unsigned char *)"\xe2\x82\xac", 3), 3);
	assert_int_equal(text_utf8_len((const unsigned char *)"\xe2\x82\xac", 2), 0);
	assert_int_equal(text_utf8_len((const unsigned char *)"a", 1), 1);
}

/* ---- times, counts, hex ----------------------------------------------------------------------- */

static void test_format_utc(void **state)
{
	char buf[32];

	(void)state;
	text_format_utc(buf, NOW, -1);
	assert_string_equal(buf, "2026-11-26T04:01:02Z");
	text_format_utc(buf, NOW, 123);
	assert_string_equal(buf, "2026-11-26T04:01:02.123Z");
	text_format_utc(buf, NOW, 5);
	assert_string_equal(buf, "2026-11-26T04:01:02.005Z");
	text_format_utc(buf, 0, 0);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	text_format_utc(buf, 951782400, -1); /* a leap day */
	assert_string_equal(buf, "2000-02-29T00:00:00Z");
}

static void test_format_count(void **state)
{
	char buf[TEXT_COUNT_LEN];

	(void)state;
	assert_string_equal(text_format_count(buf, 0), "0");
	assert_string_equal(text_format_count(buf, 999), "999");
	assert_string_equal(text_format_count(buf, 1000), "1,000");
	assert_string_equal(text_format_count(buf, 123456), "123,456");
	assert_string_equal(text_format_count(buf, 17377790), "17,377,790");
	assert_string_equal(text_format_count(buf, UINT64_MAX), "18,446,744,073,709,551,615");
}

static void test_hex(void **state)
{
	static const unsigned char bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	char buf[2 * sizeof(bytes) + 1];

	(void)state;
	memset(buf, 'Z', sizeof(buf));
	text_hex(buf, bytes, sizeof(bytes));
	assert_string_equal(buf, "00017f80abff");
	text_hex(buf, bytes, 0);
	assert_string_equal(buf, "");
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void test_json_add_string(void **state)
{
	cJSON *o = cJSON_CreateObject();
	char *text;

	(void)state;
	text_json_add_string(o, "good", "caf\xc3\xa9");
	text_json_add_string(o, "bad", "a\xff" "b\\c\n");
	text = cJSON_PrintUnformatted(o);
	/* Valid UTF-8 as it is; anything else in the escaped form, a backslash doubled. */
	assert_string_equal(text, "{\"good\":\"caf\xc3\xa9\",\"bad\":\"a\\\\xffb\\\\\\\\c\\\\n\"}");
	cJSON_free(text);
	cJSON_Delete(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_plain),
		cmocka_unit_test(test_escape_control_characters),
		cmocka_unit_test(test_escape_backslash),
		cmocka_unit_test(test_escape_valid_utf8_kept),
		cmocka_unit_test(test_escape_invalid_utf8),
		cmocka_unit_test(test_escape_overlong_and_surrogates),
		cmocka_unit_test(test_escape_truncation),
		cmocka_unit_test(test_escape_small_buffers),
		cmocka_unit_test(test_escape_every_byte),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_format_utc),
		cmocka_unit_test(test_format_count),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_json_add_string),
	};

	return cmocka_run_group_tests_name("text", tests, NULL, NULL);
}
