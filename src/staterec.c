#include "staterec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "fsops.h"
#include "report.h"

void staterec_name(char buf[STATEREC_NAME_LEN + 1], const char *file)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int n = snprintf(buf, STATEREC_NAME_LEN + 1, ".state-");

	if (!EVP_Digest(file, strlen(file), md, &mdlen, EVP_sha256(), NULL))
		mdlen = 0;
	for (unsigned i = 0; i < 16; i++)
		n += snprintf(buf + n, STATEREC_NAME_LEN + 1 - (size_t)n, "%02x",
			      i < mdlen ? md[i] : 0);
}

char *staterec_encode(const char *file, const struct staterec *s)
{
	char claimed[32];
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return NULL;
	/* The name only helps a human: the record is found by the name's hash. */
	report_add_string(o, "file", file);
	if (s->sha256[0])
		cJSON_AddStringToObject(o, "sha256", s->sha256);
	cJSON_AddNumberToObject(o, "attempts", s->attempts);
	fsops_format_utc(claimed, s->claimed_at_ms / 1000, (int)(s->claimed_at_ms % 1000));
	cJSON_AddStringToObject(o, "claimed_at", claimed);
	cJSON_AddNumberToObject(o, "claimed_at_ms", (double)s->claimed_at_ms);
	if (s->import_id[0])
		cJSON_AddStringToObject(o, "import_id", s->import_id);
	if (s->uploaded_at_ms)
		cJSON_AddNumberToObject(o, "uploaded_at_ms", (double)s->uploaded_at_ms);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

static void copy_string(const cJSON *o, const char *key, char *dst, size_t size)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (cJSON_IsString(v) && strlen(v->valuestring) < size)
		snprintf(dst, size, "%s", v->valuestring);
}

static int64_t get_ms(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	/* Wall-clock milliseconds: anything outside 0 .. year 10000 is noise. */
	if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 253402300800000.0)
		return (int64_t)v->valuedouble;
	return 0;
}

int staterec_decode(const char *text, size_t len, struct staterec *ret)
{
	struct staterec s = {0};
	cJSON *o = cJSON_ParseWithLength(text, len);
	const cJSON *v;

	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return -EBADMSG;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "attempts");
	if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1000)
		s.attempts = (unsigned)v->valuedouble;
	s.claimed_at_ms = get_ms(o, "claimed_at_ms");
	s.uploaded_at_ms = get_ms(o, "uploaded_at_ms");
	copy_string(o, "import_id", s.import_id, sizeof(s.import_id));
	/* Absent: a record of version 0.1, taken on trust. Present but not a sha256: it can
	 * match no content. */
	v = cJSON_GetObjectItemCaseSensitive(o, "sha256");
	if (v) {
		copy_string(o, "sha256", s.sha256, sizeof(s.sha256));
		if (strlen(s.sha256) != 64 || strspn(s.sha256, "0123456789abcdef") != 64)
			snprintf(s.sha256, sizeof(s.sha256), "invalid");
	}
	cJSON_Delete(o);
	*ret = s;
	return 0;
}
