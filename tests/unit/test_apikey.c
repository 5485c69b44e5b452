/* apikey: where the key comes from (the environment, the systemd credential, the key file),
 * what is refused as "not one key", and that no message ever holds the key. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "apikey.h"

#define KEY "re_Test_SECRET_1234"

static char dir[64];
static char why[1024];

static void put(const char *name, const void *data, size_t len)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static const char *at(const char *name)
{
	static char path[128];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/rdd-apikey-XXXXXX");
	assert_non_null(mkdtemp(dir));
	unsetenv("RESEND_API_KEY");
	unsetenv("CREDENTIALS_DIRECTORY");
	why[0] = '\0';
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	unsetenv("RESEND_API_KEY");
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

static void test_file_trimmed(void **state)
{
	struct apikey k = {0};

	(void)state;
	put("key", "  " KEY "\r\n\n", strlen(KEY) + 5);
	assert_int_equal(apikey_from_file(at("key"), &k, why, sizeof(why)), 0);
	assert_string_equal(k.key, KEY);
	assert_non_null(strstr(k.source, "/key'"));
	apikey_clear(&k);
	assert_null(k.key);
}

static void test_file_not_one_key(void **state)
{
	static const char *const bad[] = {"", "\n\n", "re_a re_b", "re_a\nre_b", "re_\x01x"};
	struct apikey k = {0};
	char big[APIKEY_MAX + 10];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put("key", bad[i], strlen(bad[i]));
		assert_int_equal(apikey_from_file(at("key"), &k, why, sizeof(why)), -EBADMSG);
		assert_non_null(strstr(why, "does not hold one key"));
		assert_null(k.key);
	}
	/* A NUL inside: not a key, and the message does not quote it. */
	put("key", KEY "\0tail", sizeof(KEY) + 4);
	assert_int_equal(apikey_from_file(at("key"), &k, why, sizeof(why)), -EBADMSG);
	assert_null(strstr(why, "SECRET"));
	memset(big, 'x', sizeof(big));
	put("key", big, sizeof(big));
	assert_int_equal(apikey_from_file(at("key"), &k, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "is larger than 4096 bytes"));
}

static void test_file_missing_names_it(void **state)
{
	struct apikey k = {0};

	(void)state;
	assert_int_equal(apikey_from_file(at("nope"), &k, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "cannot read API key file '"));
	assert_non_null(strstr(why, "/nope': No such file or directory"));
	/* A credential path outside the unit: say why it is not there. */
	assert_int_equal(apikey_from_file("/run/credentials/resend-dropd.service/api_key", &k, why,
					  sizeof(why)),
			 -ENOENT);
	assert_non_null(strstr(why, "systemd makes credentials only for the unit's own processes"));
}

static void test_env(void **state)
{
	struct apikey k = {0};

	(void)state;
	assert_int_equal(apikey_from_env("RDD_NO_SUCH_VAR", &k, why, sizeof(why)), -ENOENT);
	setenv("RDD_APIKEY_TEST", "re_two words", 1);
	assert_int_equal(apikey_from_env("RDD_APIKEY_TEST", &k, why, sizeof(why)), -EBADMSG);
	assert_null(strstr(why, "words"));
	setenv("RDD_APIKEY_TEST", KEY, 1);
	assert_int_equal(apikey_from_env("RDD_APIKEY_TEST", &k, why, sizeof(why)), 0);
	assert_string_equal(k.key, KEY);
	assert_string_equal(k.source, "environment variable RDD_APIKEY_TEST");
	apikey_clear(&k);
	unsetenv("RDD_APIKEY_TEST");
}

/* Outside systemd: RESEND_API_KEY, else the key file. */
static void test_default_by_hand(void **state)
{
	struct apikey k = {0};

	(void)state;
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "no API key: RESEND_API_KEY is not set, and '"));
	assert_non_null(strstr(why, "/api_key' does not exist (write the key there"));

	put("api_key", "re_from_file\n", 13);
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), 0);
	assert_string_equal(k.key, "re_from_file");
	assert_non_null(strstr(k.source, "file '"));
	apikey_clear(&k);

	setenv("RESEND_API_KEY", KEY, 1);
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), 0);
	assert_string_equal(k.key, KEY);
	apikey_clear(&k);

	/* Set but not a key: said, not passed over for the file. */
	setenv("RESEND_API_KEY", "re_a re_b", 1);
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), -EBADMSG);
}

/* Under systemd: RESEND_API_KEY, else the credential; the key file itself is not read (the
 * service user cannot), and the unit's placeholder means "the unit found no key file". */
static void test_default_under_systemd(void **state)
{
	char creds[96];
	struct apikey k = {0};

	(void)state;
	snprintf(creds, sizeof(creds), "%s/creds", dir);
	assert_int_equal(mkdir(creds, 0700), 0);
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	put("api_key", "re_from_file\n", 13);
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "the unit loads it as the credential 'api_key' when it starts"));
	assert_non_null(strstr(why, "systemctl restart resend-dropd"));

	put("creds/api_key", APIKEY_CREDENTIAL_PLACEHOLDER, strlen(APIKEY_CREDENTIAL_PLACEHOLDER));
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "does not exist (the unit loads it"));

	put("creds/api_key", KEY "\n", strlen(KEY) + 1);
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), 0);
	assert_string_equal(k.key, KEY);
	assert_string_equal(k.source, "the systemd credential 'api_key'");
	apikey_clear(&k);

	setenv("RESEND_API_KEY", "re_from_env", 1);
	assert_int_equal(apikey_default(at("api_key"), &k, why, sizeof(why)), 0);
	assert_string_equal(k.key, "re_from_env");
	apikey_clear(&k);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_file_trimmed),	     T(test_file_not_one_key), T(test_file_missing_names_it),
		T(test_env),		     T(test_default_by_hand),  T(test_default_under_systemd),
	};

	return cmocka_run_group_tests_name("apikey", tests, NULL, NULL);
}
