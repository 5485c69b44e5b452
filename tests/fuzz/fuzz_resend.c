/* libFuzzer harness for the parsers of Resend's answers: resend_classify(),
 * resend_parse_created() and resend_parse_import().
 *
 * Input: the first byte picks the HTTP status (byte % 12 into the table below, so the seed
 * files can start with '0'..'9', ':' or ';'); the rest is the response body, in a buffer of
 * exactly that size (libFuzzer's), so a read past its end is caught.
 *
 * What is checked is what resend.h promises: the class follows the status as documented, ERR
 * is filled for anything but RESEND_OK with a non-empty one-line message, an id is only ever
 * one that is safe in a URL path, an import status is one of the states or "unknown", counts
 * are -1 or non-negative, and nothing is written on failure. */
#include "resend.h"

#include "fuzz.h"
#include "text.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const long statuses[12] = {200, 201, 400, 401, 403, 404, 408, 409, 422, 429, 500, 503};

/* resend_copy_text()'s promise: one line, whitespace runs folded to one space, no leading space,
 * valid UTF-8 (ASCII only for names and timestamps). Not "no trailing space": scrub_secrets()
 * cuts the end of a full buffer when its marker is longer than the secret it replaces, and the
 * cut may fall after a space. */
static void check_text(const char *s, size_t size, bool ascii_only)
{
	size_t n;

	FUZZ_CHECK(fuzz_one_line(s, size));
	n = strlen(s);
	FUZZ_CHECK(text_utf8_valid(s));
	if (n > 0)
		FUZZ_CHECK(s[0] != ' ');
	FUZZ_CHECK(!strstr(s, "  "));
	if (ascii_only)
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK((unsigned char)s[i] < 0x80);
}

static void check_classify(long status, const char *body, size_t len)
{
	struct resend_error err, before;
	enum resend_class cls;

	/* memcpy, not assignment: padding bytes are compared too */
	memset(&err, 0x5a, sizeof(err));
	memcpy(&before, &err, sizeof(err));
	cls = resend_classify(status, body, len, &err);
	FUZZ_CHECK(resend_classify(status, body, len, NULL) == cls);

	switch (status) {
	case 200:
	case 201:
		FUZZ_CHECK(cls == RESEND_OK);
		break;
	case 401:
		FUZZ_CHECK(cls == RESEND_AUTH);
		break;
	case 400:
	case 403:
		FUZZ_CHECK(cls == RESEND_AUTH || cls == RESEND_PERMANENT);
		break;
	case 404:
	case 422:
		FUZZ_CHECK(cls == RESEND_PERMANENT);
		break;
	case 408:
	case 500:
	case 503:
		FUZZ_CHECK(cls == RESEND_RETRY);
		break;
	case 409:
		FUZZ_CHECK(cls == RESEND_RETRY || cls == RESEND_PERMANENT);
		break;
	case 429:
		FUZZ_CHECK(cls == RESEND_RATE_LIMITED || cls == RESEND_QUOTA);
		break;
	default:
		FUZZ_CHECK(0); /* a status outside the table */
	}

	if (cls == RESEND_OK) {
		FUZZ_CHECK(memcmp(&err, &before, sizeof(err)) == 0);
		return;
	}
	FUZZ_CHECK(err.status == status);
	check_text(err.name, sizeof(err.name), true);
	check_text(err.message, sizeof(err.message), false);
	FUZZ_CHECK(err.message[0]);
	/* the names that decide a class are plain ASCII and short: they survive the copy */
	if (cls == RESEND_QUOTA)
		FUZZ_CHECK(strcmp(err.name, "daily_quota_exceeded") == 0 ||
			   strcmp(err.name, "monthly_quota_exceeded") == 0);
	if (status == 409 && cls == RESEND_RETRY)
		FUZZ_CHECK(strcmp(err.name, "concurrent_idempotent_requests") == 0 ||
			   strcmp(err.name, "resource_locked") == 0);
}

static bool id_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static void check_created(const char *body, size_t len)
{
	char id[64], before[64];
	size_t n;
	int r;

	memset(id, 0x5a, sizeof(id));
	memcpy(before, id, sizeof(id));
	r = resend_parse_created(body, len, id);
	if (r != 0) {
		FUZZ_CHECK(r == -EBADMSG);
		FUZZ_CHECK(memcmp(id, before, sizeof(id)) == 0);
		return;
	}
	FUZZ_CHECK(memchr(id, '\0', sizeof(id)));
	n = strlen(id);
	FUZZ_CHECK(n >= 1 && n < sizeof(id));
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(id_char_ok(id[i]));
	FUZZ_CHECK(strcmp(id, ".") != 0 && strcmp(id, "..") != 0);
}

static void check_import(const char *body, size_t len)
{
	struct resend_import imp, before;
	const int64_t *counts[5];
	bool any = false;
	int r;

	memset(&imp, 0x5a, sizeof(imp));
	memcpy(&before, &imp, sizeof(imp));
	r = resend_parse_import(body, len, &imp);
	if (r != 0) {
		FUZZ_CHECK(r == -EBADMSG);
		FUZZ_CHECK(memcmp(&imp, &before, sizeof(imp)) == 0);
		return;
	}
	FUZZ_CHECK(imp.state >= RESEND_IMPORT_QUEUED && imp.state <= RESEND_IMPORT_UNKNOWN);
	FUZZ_CHECK(resend_import_state_name(imp.state));
	check_text(imp.status, sizeof(imp.status), true);
	if (imp.state != RESEND_IMPORT_UNKNOWN)
		FUZZ_CHECK(strcmp(imp.status, resend_import_state_name(imp.state)) == 0);
	counts[0] = &imp.total;
	counts[1] = &imp.created;
	counts[2] = &imp.updated;
	counts[3] = &imp.skipped;
	counts[4] = &imp.failed;
	for (size_t i = 0; i < 5; i++) {
		FUZZ_CHECK(*counts[i] >= -1);
		any |= *counts[i] >= 0;
	}
	FUZZ_CHECK(imp.has_counts == any);
	check_text(imp.created_at, sizeof(imp.created_at), true);
	check_text(imp.completed_at, sizeof(imp.completed_at), true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body;
	size_t len;
	long status;

	if (size == 0)
		return 0;
	status = statuses[data[0] % 12];
	/* An empty body is passed as NULL, which every parser accepts. */
	body = size > 1 ? (const char *)data + 1 : NULL;
	len = size - 1;

	check_classify(status, body, len);
	check_created(body, len);
	check_import(body, len);
	return 0;
}
