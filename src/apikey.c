#include "apikey.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsops.h"
#include "text.h"

void apikey_clear(struct apikey *k)
{
	if (k->key) {
		explicit_bzero(k->key, strlen(k->key));
		free(k->key);
	}
	k->key = NULL;
	k->source[0] = '\0';
}

/* A key ends up in an HTTP header: anything but printable ASCII could forge headers. */
static bool apikey_is_sane(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++) {
		if (*k <= 0x20 || *k >= 0x7f)
			return false;
	}
	return true;
}

static char *apikey_trim(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	while (isspace((unsigned char)*s))
		s++;
	return s;
}

int apikey_from_file(const char *path, struct apikey *ret, char *why, size_t whysz)
{
	char q[512], *buf = NULL, *k;
	size_t len = 0;
	int r = fsops_read_path(path, APIKEY_MAX, &buf, &len);

	text_escape(q, sizeof(q), path);
	if (r == -EFBIG) {
		snprintf(why, whysz, "API key file '%s' is larger than %d bytes: is it the right file?",
			 q, APIKEY_MAX);
		return -EBADMSG;
	}
	if (r == -EINVAL) {
		snprintf(why, whysz, "API key file '%s' is not a regular file", q);
		return -EBADMSG;
	}
	if (r < 0) {
		const char *hint = "";

		if (r == -EACCES && geteuid() != 0)
			hint = " (a key file is readable by root only: run this as root)";
		else if (r == -ENOENT && strncmp(path, "/run/credentials/", 17) == 0)
			hint = " (systemd makes credentials only for the unit's own processes while "
			       "it runs; leave api_key_file unset and the key is read from the "
			       "credential under the unit, and from " APIKEY_DEFAULT_FILE
			       " outside it)";
		snprintf(why, whysz, "cannot read API key file '%s': %s%s", q, strerror(-r), hint);
		return r;
	}
	bool has_nul = strlen(buf) != len; /* before trimming writes some */
	k = apikey_trim(buf);
	if (has_nul || !apikey_is_sane(k)) {
		snprintf(why, whysz,
			 "API key file '%s' does not hold one key (printable characters, no spaces)",
			 q);
		r = -EBADMSG;
	} else if (!(ret->key = strdup(k))) {
		snprintf(why, whysz, "out of memory");
		r = -ENOMEM;
	} else {
		snprintf(ret->source, sizeof(ret->source), "file '%s'", q);
	}
	explicit_bzero(buf, len);
	free(buf);
	return r;
}

int apikey_from_env(const char *name, struct apikey *ret, char *why, size_t whysz)
{
	const char *env = getenv(name);

	if (!env || !*env) {
		snprintf(why, whysz, "environment variable %s is not set", name);
		return -ENOENT;
	}
	if (!apikey_is_sane(env)) {
		snprintf(why, whysz,
			 "environment variable %s does not hold one API key (printable characters, "
			 "no spaces)",
			 name);
		return -EBADMSG;
	}
	ret->key = strdup(env);
	if (!ret->key) {
		snprintf(why, whysz, "out of memory");
		return -ENOMEM;
	}
	snprintf(ret->source, sizeof(ret->source), "environment variable %s", name);
	return 0;
}

/* The credential api_key: 0, -ENOENT when there is none (no credentials, the file missing,
 * or the unit's placeholder), or the error of a credential that is not a key. */
static int apikey_from_credential(const char *dir, struct apikey *ret, char *why, size_t whysz)
{
	char path[4096];
	int r;

	if (snprintf(path, sizeof(path), "%s/%s", dir, APIKEY_CREDENTIAL) >= (int)sizeof(path))
		return -ENOENT;
	r = apikey_from_file(path, ret, why, whysz);
	if (r == 0 && strcmp(ret->key, APIKEY_CREDENTIAL_PLACEHOLDER) == 0) {
		apikey_clear(ret);
		return -ENOENT;
	}
	if (r == 0)
		snprintf(ret->source, sizeof(ret->source), "the systemd credential '%s'",
			 APIKEY_CREDENTIAL);
	return r;
}

int apikey_default(const char *key_file, struct apikey *ret, char *why, size_t whysz)
{
	char q[512];
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	int r;

	r = apikey_from_env(APIKEY_DEFAULT_ENV, ret, why, whysz);
	if (r != -ENOENT)
		return r;
	if (creds && *creds) {
		r = apikey_from_credential(creds, ret, why, whysz);
		if (r != -ENOENT)
			return r;
		/* Under systemd: the unit found no key file to load. */
		text_escape(q, sizeof(q), key_file);
		snprintf(why, whysz,
			 "no API key: '%s' does not exist (the unit loads it as the credential '%s' "
			 "when it starts: write the key there, readable by root only, then "
			 "systemctl restart resend-dropd), and %s is not set",
			 q, APIKEY_CREDENTIAL, APIKEY_DEFAULT_ENV);
		return -ENOENT;
	}
	r = apikey_from_file(key_file, ret, why, whysz);
	if (r == 0 || r != -ENOENT)
		return r;
	text_escape(q, sizeof(q), key_file);
	snprintf(why, whysz,
		 "no API key: %s is not set, and '%s' does not exist (write the key there, "
		 "readable by root only; or set %s; or set api.api_key_env or api.api_key_file)",
		 APIKEY_DEFAULT_ENV, q, APIKEY_DEFAULT_ENV);
	return -ENOENT;
}
