#include "staterec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

void staterec_name(char buf[STATEREC_NAME_LEN + 1], const char *file)
{
	unsigned char md[EVP_MAX_MD_SIZE] = {0};
	unsigned int mdlen = 0;

	if (!EVP_Digest(file, strlen(file), md, &mdlen, EVP_sha256(), NULL) || mdlen < 16)
		memset(md, 0, 16);
	memcpy(buf, ".state-", 7);
	text_hex(buf + 7, md, 16);
}

char *staterec_encode(const char *file, const struct staterec *s)
{
	char claimed[32];
	cJSON *o = cJSON_CreateObject();
	char *text;

	if (!o)
		return NULL;
	/* The name only helps a human: the record is found by the name's hash. */
	text_json_add_string(o, "file", file);
	if (s->sha256[0])
		cJSON_AddStringToObject(o, "sha256", s->sha256);
	cJSON_AddNumberToObject(o, "attempts", s->attempts);
	text_format_utc(claimed, s->claimed_at_ms / 1000, (int)(s->claimed_at_ms % 1000));
	cJSON_AddStringToObject(o, "claimed_at", claimed);
	cJSON_AddNumberToObject(o, "claimed_at_ms", (double)s->claimed_at_ms);
	if (s->import_id[0])
		cJSON_AddStringToObject(o, "import_id", s->import_id);
	if (s->uploaded_at_ms)
		cJSON_AddNumberToObject(o, "uploaded_at_ms", (double)s->uploaded_at_ms);
	if (s->n_parts > 1) {
		cJSON *p = cJSON_AddObjectToObject(o, "parts");
		cJSON *a = cJSON_AddArrayToObject(p, "imported");

		cJSON_AddNumberToObject(p, "total", s->n_parts);
		cJSON_AddStringToObject(p, "plan", s->plan);
		for (size_t i = 0; i < s->n_done; i++) {
			cJSON *e = cJSON_CreateObject();

			if (!e || !cJSON_AddItemToArray(a, e)) {
				cJSON_Delete(e);
				cJSON_Delete(o);
				return NULL;
			}
			cJSON_AddStringToObject(e, "import_id", s->done[i].import_id);
			cJSON_AddNumberToObject(e, "attempts", s->done[i].attempts);
		}
	}
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
	v = cJSON_GetObjectItemCaseSensitive(o, "parts");
	if (cJSON_IsObject(v)) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "total");
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, "imported");
		const cJSON *e;
		int n = cJSON_GetArraySize(a);

		if (cJSON_IsNumber(t) && t->valuedouble > 1 && t->valuedouble < 1e7)
			s.n_parts = (unsigned)t->valuedouble;
		copy_string(v, "plan", s.plan, sizeof(s.plan));
		if (s.n_parts && cJSON_IsArray(a) && n > 0 && (unsigned)n <= s.n_parts) {
			s.done = calloc((size_t)n, sizeof(*s.done));
			if (!s.done) {
				cJSON_Delete(o);
				return -ENOMEM;
			}
			cJSON_ArrayForEach(e, a) {
				struct staterec_part *d = &s.done[s.n_done];
				const cJSON *at = cJSON_GetObjectItemCaseSensitive(e, "attempts");

				copy_string(e, "import_id", d->import_id, sizeof(d->import_id));
				if (!d->import_id[0])
					break; /* the rest cannot be trusted to be in order */
				if (cJSON_IsNumber(at) && at->valuedouble >= 0 && at->valuedouble < 1000)
					d->attempts = (unsigned)at->valuedouble;
				s.n_done++;
			}
		}
	}
	cJSON_Delete(o);
	*ret = s;
	return 0;
}

void staterec_clear(struct staterec *s)
{
	free(s->done);
	s->done = NULL;
	s->n_done = 0;
}
