/* webhook: the Standard Webhooks secret and signature, against the specification's own test
 * vector (the one its reference libraries test with), and secrets that are not secrets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webhook.h"

#define VECTOR_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VECTOR_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VECTOR_TS 1614265330
#define VECTOR_BODY "{\"test\": 2432232314}"
#define VECTOR_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void test_spec_vector(void **state)
{
	unsigned char *key;
	size_t len;
	char why[200], sig[WEBHOOK_SIGNATURE_SIZE];

	(void)state;
	assert_int_equal(webhook_secret_decode(VECTOR_SECRET, &key, &len, why, sizeof(why)), 0);
	assert_int_equal(len, 24);
	assert_int_equal(webhook_sign(key, len, VECTOR_ID, VECTOR_TS, VECTOR_BODY,
				      strlen(VECTOR_BODY), sig),
			 0);
	assert_string_equal(sig, VECTOR_SIG);
	/* Another byte of the body, the id or the time: another signature. */
	assert_int_equal(webhook_sign(key, len, VECTOR_ID, VECTOR_TS + 1, VECTOR_BODY,
				      strlen(VECTOR_BODY), sig),
			 0);
	assert_string_not_equal(sig, VECTOR_SIG);
	assert_int_equal(webhook_sign(key, len, VECTOR_ID, VECTOR_TS, VECTOR_BODY,
				      strlen(VECTOR_BODY) - 1, sig),
			 0);
	assert_string_not_equal(sig, VECTOR_SIG);
	free(key);
}

static void test_padded_secret(void **state)
{
	unsigned char *key;
	size_t len;
	char why[200];

	(void)state;
	/* 32 bytes: base64 with one '=' of padding, which is not part of the key. */
	assert_int_equal(webhook_secret_decode("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
					       &key, &len, why, sizeof(why)),
			 0);
	assert_int_equal(len, 32);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(key[i], i);
	free(key);
}

static void test_bad_secrets(void **state)
{
	static const struct {
		const char *secret, *says;
	} cases[] = {
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"},
		{"whsec_", "is not base64"},
		{"whsec_not base64!", "is not base64"},
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "is not base64"},
		{"whsec_MfK=Q9r8GKYqrTwjUPD8ILPZIo2LaLaS", "is not base64"},
		{"whsec_c2hvcnQ=", "a key of 5 bytes"},
	};
	unsigned char *key = (unsigned char *)"untouched";
	size_t len = 99;
	char why[300];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(webhook_secret_decode(cases[i].secret, &key, &len, why,
						       sizeof(why)),
				 -EINVAL);
		assert_null(key);
		assert_int_equal(len, 0);
		if (!strstr(why, cases[i].says))
			fail_msg("'%s': '%s' does not say '%s'", cases[i].secret, why,
				 cases[i].says);
		/* The secret is never quoted back. */
		if (strlen(cases[i].secret) > 8 && strstr(why, cases[i].secret + 6))
			fail_msg("'%s' is quoted in '%s'", cases[i].secret, why);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_vector),
		cmocka_unit_test(test_padded_secret),
		cmocka_unit_test(test_bad_secrets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
