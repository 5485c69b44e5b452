/* scrub: the API key, and anything that looks like a key or a bearer token, never gets from
 * what the far end said into a log line or a report, not even in part. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "resend.h"
#include "scrub.h"

/* A key of Resend's shape, and one of no recognisable shape (found only because it is the
 * configured one). */
#define RE_KEY "re_Q7xK2mPz_9vLc4RtYw8NbJh3FsDg6AeU"
#define ODD_KEY "Zk4-opaque-Secret-Value-771"

static char out[2048];

/* IN as a copy into a buffer of SIZE bytes would hold it (cut to fit), then scrubbed. */
static const char *scrubbed(const char *in, size_t size, const char *key)
{
	assert_true(size <= sizeof(out));
	snprintf(out, size, "%s", in);
	scrub_secrets(out, size, key);
	assert_true(strlen(out) < size);
	return out;
}

/* Not even a part of KEY: no 6 bytes of it in a row. */
static void assert_no_piece_of(const char *text, const char *key)
{
	size_t n = strlen(key);

	for (size_t i = 0; i + 6 <= n; i++) {
		char piece[7];

		memcpy(piece, key + i, 6);
		piece[6] = '\0';
		if (strstr(text, piece))
			fail_msg("\"%s\" of the key is in \"%s\"", piece, text);
	}
}

static void assert_unchanged(const char *in, const char *key)
{
	assert_string_equal(scrubbed(in, sizeof(out), key), in);
}

static void test_configured_key_anywhere(void **state)
{
	(void)state;
	assert_string_equal(scrubbed("bad key " ODD_KEY " given", 512, ODD_KEY),
			    "bad key [redacted] given");
	assert_string_equal(scrubbed("the key was " ODD_KEY, 512, ODD_KEY),
			    "the key was [redacted]");
	assert_string_equal(scrubbed(ODD_KEY, 512, ODD_KEY), "[redacted]");
	/* glued to other text, twice, and as its own echo in quotes */
	assert_string_equal(scrubbed("k=" ODD_KEY "&again=x" ODD_KEY "x '" ODD_KEY "'", 512,
				     ODD_KEY),
			    "k=[redacted]&again=x[redacted]x '[redacted]'");
	/* without "Bearer" or a Resend shape, only the configured key is known */
	assert_unchanged("key: " ODD_KEY, NULL);
	assert_unchanged("key: " ODD_KEY, "");
}

static void test_a_cut_key_at_the_end(void **state)
{
	char buf[512];
	size_t n;
	const char *keys[] = {ODD_KEY, RE_KEY};

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		/* A 512-byte message that ends in the middle of the key, at every cut. */
		for (size_t cut = 1; cut < strlen(keys[k]); cut++) {
			memset(buf, 0, sizeof(buf));
			for (n = 0; n < sizeof(buf) - 1 - cut - 1; n++)
				buf[n] = (char)("the server said "[n % 16]);
			buf[n++] = ' ';
			memcpy(buf + n, keys[k], cut);
			assert_int_equal(strlen(buf), sizeof(buf) - 1);
			scrub_secrets(buf, sizeof(buf), keys[k]);
			assert_true(strlen(buf) < sizeof(buf));
			assert_no_piece_of(buf, keys[k]);
			if (cut >= 4)
				assert_non_null(strstr(buf, "[red"));
		}
	}

	/* Not knowing the key: a Resend-shaped start at a cut end still goes... */
	assert_string_equal(scrubbed("error from re_Q7xK2mPz_9vLc4RtYw8", 34, NULL),
			    "error from [redacted]");
	assert_string_equal(scrubbed("error: re_Q7x", 14, NULL), "error: [redac");
	/* ...but a short one where the text really ends is a word. */
	assert_unchanged("error: re_Q7x", NULL);
	/* Known, its start goes at any end: the text may have been cut before it was copied. */
	assert_string_equal(scrubbed("quoted: Zk4-opaq", 512, ODD_KEY), "quoted: [redacted]");
	assert_unchanged("quoted: Zk4", ODD_KEY); /* three bytes say nothing */
	/* a token after "Bearer" that runs into a cut end, whatever it looks like */
	assert_string_equal(scrubbed("header: Bearer abc", 19, NULL), "header: Bearer [re");
	assert_string_equal(scrubbed("header: Bearer abcdef", 22, NULL), "header: Bearer [redac");
}

static void test_resend_shaped_keys(void **state)
{
	(void)state;
	assert_string_equal(scrubbed("a " RE_KEY " b re_Zz99yyXXww c " ODD_KEY " d " ODD_KEY,
				     512, ODD_KEY),
			    "a [redacted] b [redacted] c [redacted] d [redacted]");
	assert_string_equal(scrubbed("key=" RE_KEY ".", 512, NULL), "key=[redacted].");
	assert_string_equal(scrubbed("\"" RE_KEY "\"", 512, "re_other_key"),
			    "\"[redacted]\"");
	assert_string_equal(scrubbed("re_12345678", 512, NULL), "[redacted]");
}

static void test_bearer_and_authorization(void **state)
{
	(void)state;
	assert_string_equal(scrubbed("Authorization: Bearer abc.def-123", 512, NULL),
			    "Authorization: Bearer [redacted]");
	assert_string_equal(scrubbed("got bearer\tXyZ123456, expected more", 512, NULL),
			    "got bearer\t[redacted], expected more");
	assert_string_equal(scrubbed("BEARER  tok_9;", 512, NULL), "BEARER  [redacted];");
	assert_string_equal(scrubbed("{\"authorization\":\"Bearer eyJhbGciOi.x.y\"}", 512, NULL),
			    "{\"authorization\":\"Bearer [redacted]\"}");
	assert_string_equal(scrubbed("{'Authorization': 'opaque123'}", 512, NULL),
			    "{'Authorization': '[redacted]'}");
	assert_string_equal(scrubbed("?authorization=opaque123&x=1", 512, NULL),
			    "?authorization=[redacted]&x=1");
	assert_string_equal(scrubbed("Proxy-Authorization: Basic dXNlcjpwYXNz", 512, NULL),
			    "Proxy-Authorization: Basic [redacted]");
	assert_string_equal(scrubbed("Authorization: " ODD_KEY, 512, NULL),
			    "Authorization: [redacted]");
	/* the configured key, even if it reads like a word */
	assert_string_equal(scrubbed("Authorization: Bearer secret", 512, "secret"),
			    "Authorization: Bearer [redacted]");
}

static void test_no_false_positives(void **state)
{
	(void)state;
	assert_unchanged("please re_try later", RE_KEY);
	assert_unchanged("prefer_x and prefer_xxxxxxxxxx", RE_KEY);
	assert_unchanged("are_you_sure_about_this_1234", RE_KEY);
	assert_unchanged("re_contacts_file", RE_KEY);
	assert_unchanged("the re_ prefix; re_", RE_KEY);
	assert_unchanged("a Bearer token is required. Bearer Token. bearer", NULL);
	assert_unchanged("Missing API key in the authorization header. Include the following "
			 "header 'Authorization: Bearer YOUR_API_KEY' in the request.",
			 RE_KEY);
	assert_unchanged("Authorization: missing; authorization header", NULL);
	assert_unchanged("The `column_map` field is invalid.", RE_KEY);
	assert_unchanged("Colonne \xc2\xabPr\xc3\xa9nom\xc2\xbb manquante", RE_KEY);
	assert_unchanged("", RE_KEY);
}

static void test_again_changes_nothing(void **state)
{
	static const char *const inputs[] = {
		"Authorization: Bearer " RE_KEY,
		"x " ODD_KEY " y re_12345678 Bearer abc123",
		"authorization=Zk4-opaque",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		char once[512];

		snprintf(once, sizeof(once), "%s", scrubbed(inputs[i], 512, ODD_KEY));
		assert_string_equal(scrubbed(once, 512, ODD_KEY), once);
	}
}

static void test_never_longer_than_the_buffer(void **state)
{
	char buf[8];

	(void)state;
	/* a key shorter than the marker, many times in a full buffer */
	assert_string_equal(scrubbed("abc abc abc abc", 16, "abc"), "[redacted] [red");
	assert_string_equal(scrubbed("x abc", 6, "abc"), "x [re");
	/* a buffer without its NUL is cut where it ends */
	memset(buf, 'x', sizeof(buf));
	scrub_secrets(buf, sizeof(buf), RE_KEY);
	assert_string_equal(buf, "xxxxxxx");
	scrub_secrets(NULL, 10, RE_KEY);
	scrub_secrets(buf, 0, RE_KEY);
	assert_string_equal(buf, "xxxxxxx");
}

/* What resend_classify makes of an answer is scrubbed of key-like text, even where its excerpt
 * of a page cuts the key. */
static void test_classify_redacts(void **state)
{
	static const char *json = "{\"statusCode\":422,\"name\":\"validation_error\","
				  "\"message\":\"bad request (Authorization: Bearer " RE_KEY ")\"}";
	char page[400];
	struct resend_error err;
	int n;

	(void)state;
	assert_int_equal(resend_classify(422, json, strlen(json), &err), RESEND_PERMANENT);
	assert_string_equal(err.message, "bad request (Authorization: Bearer [redacted])");
	assert_string_equal(err.name, "validation_error");

	/* an HTML page whose 200-byte excerpt ends inside the key */
	n = snprintf(page, sizeof(page), "<html><body>%0*d " RE_KEY "</body></html>", 190 - 12,
		     0);
	assert_true(n > 0 && (size_t)n < sizeof(page));
	assert_int_equal(resend_classify(502, page, (size_t)n, &err), RESEND_RETRY);
	assert_true(strlen(err.message) <= 200);
	assert_no_piece_of(err.message, RE_KEY);
	assert_non_null(strstr(err.message, " [redacted")); /* cut to fit */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_configured_key_anywhere),
		cmocka_unit_test(test_a_cut_key_at_the_end),
		cmocka_unit_test(test_resend_shaped_keys),
		cmocka_unit_test(test_bearer_and_authorization),
		cmocka_unit_test(test_no_false_positives),
		cmocka_unit_test(test_again_changes_nothing),
		cmocka_unit_test(test_never_longer_than_the_buffer),
		cmocka_unit_test(test_classify_redacts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
