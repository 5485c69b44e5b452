/* Where the Resend API key comes from, and reading it. It is never in the YAML and never
 * logged; what is said about it names only where it was looked for.
 *
 * With neither api.api_key_env nor api.api_key_file set, the key is the first of:
 *   1. the environment variable RESEND_API_KEY (a shell, a cron job, a unit's Environment=);
 *   2. the systemd credential "api_key" ($CREDENTIALS_DIRECTORY/api_key): the unit loads it
 *      from APIKEY_DEFAULT_FILE, and sets a placeholder (APIKEY_CREDENTIAL_PLACEHOLDER)
 *      when that file does not exist, so that the unit starts and the daemon can say what is
 *      missing instead of systemd failing with "243/CREDENTIALS";
 *   3. outside systemd (no $CREDENTIALS_DIRECTORY), APIKEY_DEFAULT_FILE itself (root only:
 *      `--check` before the first start, or a run by hand as root).
 * Pure: no libuv, no curl. */
#ifndef RDD_APIKEY_H
#define RDD_APIKEY_H

#include <stddef.h>

#define APIKEY_DEFAULT_ENV "RESEND_API_KEY"
#define APIKEY_CREDENTIAL "api_key"
/* What the unit's SetCredential= gives when the key file is missing: never a key. */
#define APIKEY_CREDENTIAL_PLACEHOLDER "unset"
#ifndef RDD_DEFAULT_KEY_FILE
#define RDD_DEFAULT_KEY_FILE "/etc/resend-dropd/api_key"
#endif
#define APIKEY_DEFAULT_FILE RDD_DEFAULT_KEY_FILE
#define APIKEY_MAX 4096

/* A key found, and where: "environment variable RESEND_API_KEY", "the systemd credential
 * 'api_key'", "file '/etc/...'" (for the start-up line). */
struct apikey {
	char *key; /* malloc'd; apikey_clear wipes it */
	char source[600];
};

void apikey_clear(struct apikey *k);

/* One key from the file PATH (surrounding white space trimmed): 0, or -errno with WHY, a
 * sentence naming the file. -ENOENT: missing; -EBADMSG: not one key. */
int apikey_from_file(const char *path, struct apikey *ret, char *why, size_t whysz);

/* The key in environment variable NAME: 0, -ENOENT (unset or empty), -EBADMSG (not one key),
 * with WHY. */
int apikey_from_env(const char *name, struct apikey *ret, char *why, size_t whysz);

/* The default chain above, KEY_FILE being APIKEY_DEFAULT_FILE (another in tests): 0, or
 * -ENOENT with WHY saying every place looked at and how to give a key, or the error of the
 * place that holds something that is not a key. */
int apikey_default(const char *key_file, struct apikey *ret, char *why, size_t whysz);

#endif
