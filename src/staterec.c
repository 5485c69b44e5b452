#include "staterec.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

#define STATEREC_KEY_LEN (STATEREC_NAME_LEN - 7) /* the 32 hex digits */

static int staterec_key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, STATEREC_KEY_LEN);
}

/* The 32 hex digits of ENTRY when it is a record or a staged report, else NULL. */
static const char *staterec_entry_key(const char *entry)
{
	size_t len = strlen(entry);

	if (len == STATEREC_NAME_LEN && strncmp(entry, ".state-", 7) == 0)
		return entry + 7;
	if (len == STATEREC_NAME_LEN + 1 && strncmp(entry, ".report-", 8) == 0)
		return entry + 8;
	return NULL;
}

int staterec_sweep(int dir_fd, char *const *files, size_t n, size_t *ret_removed)
{
	char (*keys)[STATEREC_KEY_LEN] = n ? malloc(n * sizeof(*keys)) : NULL;
	struct dirent *de;
	DIR *dir = NULL;
	int fd, r = 0;

	*ret_removed = 0;
	if (n && !keys)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char name[STATEREC_NAME_LEN + 1];

		staterec_name(name, files[i]);
		memcpy(keys[i], name + 7, STATEREC_KEY_LEN);
	}
	if (n)
		qsort(keys, n, sizeof(*keys), staterec_key_cmp);
	/* fdopendir takes the descriptor over; the caller's stays open. */
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(dir = fdopendir(fd))) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		free(keys);
		return r;
	}
	errno = 0;
	while ((de = readdir(dir))) {
		const char *key = staterec_entry_key(de->d_name);

		if (key && !(n && bsearch(key, keys, n, sizeof(*keys), staterec_key_cmp)) &&
		    unlinkat(dir_fd, de->d_name, 0) == 0)
			(*ret_removed)++;
		errno = 0;
	}
	if (errno)
		r = -errno;
	closedir(dir);
	free(keys);
	return r;
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
	if (s->sent_at_ms)
		cJSON_AddNumberToObject(o, "sent_at_ms", (double)s->sent_at_ms);
	if (s->batch_id[0]) {
		cJSON *b = cJSON_AddObjectToObject(o, "batch");

		cJSON_AddStringToObject(b, "id", s->batch_id);
		cJSON_AddNumberToObject(b, "files", s->batch_files);
		cJSON_AddNumberToObject(b, "rows", (double)s->batch_rows);
	}
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
	s.sent_at_ms = get_ms(o, "sent_at_ms");
	copy_string(o, "import_id", s.import_id, sizeof(s.import_id));
	v = cJSON_GetObjectItemCaseSensitive(o, "batch");
	if (cJSON_IsObject(v)) {
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, "files");
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(v, "rows");

		copy_string(v, "id", s.batch_id, sizeof(s.batch_id));
		if (cJSON_IsNumber(f) && f->valuedouble >= 1 && f->valuedouble < 1e7)
			s.batch_files = (unsigned)f->valuedouble;
		if (cJSON_IsNumber(r) && r->valuedouble >= 0 && r->valuedouble < 1e15)
			s.batch_rows = (uint64_t)r->valuedouble;
		if (!s.batch_files)
			s.batch_id[0] = '\0';
	}
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

int staterec_from_report(const struct report *rep, unsigned attempts, const char *plan,
			 struct staterec *ret)
{
	struct staterec s = {
		.attempts = attempts,
		.claimed_at_ms = rep->claimed_at_ms,
		.uploaded_at_ms = rep->uploaded_at_ms,
	};

	memcpy(s.sha256, rep->sha256, sizeof(s.sha256));
	memcpy(s.import_id, rep->import_id, sizeof(s.import_id));
	s.sent_at_ms = rep->sent_at_ms;
	if (rep->batch) {
		snprintf(s.batch_id, sizeof(s.batch_id), "%s", rep->batch->id);
		s.batch_files = (unsigned)rep->batch->n_files;
		s.batch_rows = rep->batch->rows;
	}
	if (rep->n_parts > 1) {
		s.n_parts = (unsigned)rep->n_parts;
		snprintf(s.plan, sizeof(s.plan), "%s", plan);
		while (s.n_done < rep->n_parts && rep->parts[s.n_done].import_id[0])
			s.n_done++;
		s.done = calloc(s.n_done ? s.n_done : 1, sizeof(*s.done));
		if (!s.done)
			return -ENOMEM;
		for (size_t i = 0; i < s.n_done; i++) {
			memcpy(s.done[i].import_id, rep->parts[i].import_id,
			       sizeof(s.done[i].import_id));
			s.done[i].attempts = rep->parts[i].attempts;
		}
	}
	*ret = s;
	return 0;
}

int staterec_apply(const struct staterec *s, const char *plan, struct report *rep,
		   size_t *ret_done, bool *ret_foreign, char *why, size_t whysz)
{
	size_t n_done = 0;

	*ret_done = 0;
	*ret_foreign = s->sha256[0] && strcmp(s->sha256, rep->sha256) != 0;
	if (*ret_foreign)
		return 0;
	rep->attempts = s->attempts;
	if (s->claimed_at_ms)
		rep->claimed_at_ms = s->claimed_at_ms;
	rep->uploaded_at_ms = s->uploaded_at_ms;
	rep->sent_at_ms = s->sent_at_ms;
	snprintf(rep->import_id, sizeof(rep->import_id), "%s", s->import_id);
	/* The batch it was sent in (its names are not in the record: only how many). Out of
	 * memory, the report only lacks it. */
	if (s->batch_id[0] && !rep->batch)
		rep->batch = batch_info_new(s->batch_id, s->batch_rows, s->batch_files, false);
	if (rep->n_parts == 0)
		return 0; /* refused by the check: the report says what was imported */
	if (s->n_parts > 1)
		n_done = s->n_done;
	else if (s->import_id[0])
		n_done = 1;
	if (!n_done)
		return 0;
	if ((s->n_parts > 1 ? s->n_parts : 1) == rep->n_parts &&
	    (rep->n_parts == 1 || strcmp(s->plan, plan) == 0)) {
		for (size_t i = 0; i < n_done && i < rep->n_parts; i++) {
			const char *id = s->n_parts > 1 ? s->done[i].import_id : s->import_id;

			snprintf(rep->parts[i].import_id, sizeof(rep->parts[i].import_id), "%s", id);
			rep->parts[i].attempts = s->n_parts > 1 ? s->done[i].attempts : s->attempts;
		}
		/* The record's attempts are the next part's. */
		*ret_done = n_done < rep->n_parts ? n_done : rep->n_parts;
		return 0;
	}
	snprintf(why, whysz, "it was uploaded in %u part%s before a restart, %zu of them imported "
		 "(first import %s), and is split into %zu part%s now (were max_upload_bytes or "
		 "the csv settings changed?): nothing more is uploaded, so that no row is imported "
		 "twice; 'resend-dropd retry' imports it again whole",
		 s->n_parts > 1 ? s->n_parts : 1, s->n_parts > 1 ? "s" : "", n_done,
		 s->n_parts > 1 ? s->done[0].import_id : s->import_id, rep->n_parts,
		 rep->n_parts == 1 ? "" : "s");
	return -ESTALE;
}
