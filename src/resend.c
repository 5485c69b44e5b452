/* The Resend contact-import API as data: builds the multipart text fields, classifies answers
 * and parses the JSON bodies. Pure logic (cJSON and libcrypto only) so that unit tests need no
 * network. API facts: reference/resend-api.md; wire format: reference/sdk-capture.txt. */
#include "resend.h"

#include "scrub.h"
#include "text.h"
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

/* A non-JSON body (proxy error page) is quoted only this far: enough to recognise it in a
 * report, short enough not to flood a log line. */
#define RESEND_EXCERPT_MAX 200

/* Copies untrusted text into DST (DSTSZ bytes, always NUL-terminated) as one safe line: runs of
 * whitespace and control characters become one space (and are trimmed at both ends), so a body
 * cannot forge log lines; bytes that are not UTF-8 become '?'. With ASCII_ONLY every non-ASCII
 * character becomes one '?'. Truncation never splits a character. */
static void resend_copy_text(char *dst, size_t dstsz, const char *src, size_t len, bool ascii_only)
{
	const unsigned char *p = (const unsigned char *)src;
	size_t out = 0, i = 0;
	bool space = false;

	if (dstsz == 0)
		return;
	while (src && i < len) {
		unsigned char c = p[i];
		size_t n, w;

		if (c <= 0x20 || c == 0x7f) {
			space = out > 0;
			i++;
			continue;
		}
		n = text_utf8_len(p + i, len - i);
		w = (n == 0 || (ascii_only && n > 1)) ? 1 : n;
		if (out + (space ? 1 : 0) + w > dstsz - 1)
			break;
		if (space)
			dst[out++] = ' ';
		space = false;
		if (w == n)
			memcpy(dst + out, p + i, n);
		else
			dst[out] = '?';
		out += w;
		i += n == 0 ? 1 : n;
	}
	dst[out] = '\0';
}

/* The end of a build: when R says it went well, ROOT printed into *RET (malloc'd); ROOT freed
 * either way. R, or -ENOMEM. */
static int resend_print_free(cJSON *root, int r, char **ret)
{
	char *s = r < 0 ? NULL : cJSON_PrintUnformatted(root);

	cJSON_Delete(root);
	if (r < 0)
		return r;
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* A string the SDK would send; cJSON would pass invalid UTF-8 through and the server would then
 * reject the whole request as malformed JSON, so refuse it here where the cause is clear. */
static int resend_add_string(cJSON *obj, const char *key, const char *value)
{
	if (!text_utf8_valid(value))
		return -EILSEQ;
	return cJSON_AddStringToObject(obj, key, value) ? 0 : -ENOMEM;
}

/* OBJ's K1 and, when K2 is given, K2: in that order, which the wire keeps. */
static int resend_add_strings(cJSON *obj, const char *k1, const char *v1, const char *k2,
			      const char *v2)
{
	int r = resend_add_string(obj, k1, v1);

	return r < 0 || !k2 ? r : resend_add_string(obj, k2, v2);
}

/* A new object at the end of ARRAY, which owns it: its strings as resend_add_strings. */
static int resend_append_object(cJSON *array, const char *k1, const char *v1, const char *k2,
				const char *v2)
{
	cJSON *obj = cJSON_CreateObject();

	if (!obj)
		return -ENOMEM;
	if (!cJSON_AddItemToArray(array, obj)) {
		cJSON_Delete(obj);
		return -ENOMEM;
	}
	return resend_add_strings(obj, k1, v1, k2, v2);
}

static int resend_build_column_map(const struct config_column_map *map, char **ret)
{
	const struct {
		const char *key;
		const char *column;
	} fixed[] = {
		{"email", map->email},
		{"first_name", map->first_name},
		{"last_name", map->last_name},
		{"unsubscribed", map->unsubscribed},
	};
	cJSON *root, *props;
	int r = 0;

	if (map->n_properties > 0 && !map->properties)
		return -EINVAL;
	root = cJSON_CreateObject();
	if (!root)
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		if (!fixed[i].column)
			continue;
		r = resend_add_string(root, fixed[i].key, fixed[i].column);
		if (r < 0)
			goto out;
	}
	if (map->n_properties > 0) {
		props = cJSON_AddObjectToObject(root, "properties");
		if (!props) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < map->n_properties; i++) {
			const struct config_property *p = &map->properties[i];
			const char *type = config_prop_type_name(p->type);
			cJSON *prop;

			if (!p->key || !p->column || !type) {
				r = -EINVAL;
				goto out;
			}
			/* cJSON would happily emit the key twice; what the server makes of that is
			 * anybody's guess, so refuse it (config validation should already have). */
			if (cJSON_GetObjectItemCaseSensitive(props, p->key)) {
				r = -EINVAL;
				goto out;
			}
			if (!text_utf8_valid(p->key)) {
				r = -EILSEQ;
				goto out;
			}
			prop = cJSON_AddObjectToObject(props, p->key);
			if (!prop) {
				r = -ENOMEM;
				goto out;
			}
			r = resend_add_strings(prop, "column", p->column, "type", type);
			if (r < 0)
				goto out;
		}
	}
out:
	return resend_print_free(root, r, ret);
}

/* A fixed-size id array must hold a NUL-terminated string. */
static bool resend_id_ok(const char id[CONFIG_UUID_LEN + 1])
{
	return memchr(id, '\0', CONFIG_UUID_LEN + 1) != NULL;
}

static int resend_build_segments(const struct config_folder *folder, char **ret)
{
	cJSON *root;
	int r = 0;

	if (!folder->segments)
		return -EINVAL;
	root = cJSON_CreateArray();
	if (!root)
		return -ENOMEM;
	for (size_t i = 0; i < folder->n_segments; i++) {
		if (!resend_id_ok(folder->segments[i])) {
			r = -EINVAL;
			goto out;
		}
		r = resend_append_object(root, "id", folder->segments[i], NULL, NULL);
		if (r < 0)
			goto out;
	}
out:
	return resend_print_free(root, r, ret);
}

static int resend_build_topics(const struct config_folder *folder, char **ret)
{
	cJSON *root;
	int r = 0;

	if (!folder->topics)
		return -EINVAL;
	root = cJSON_CreateArray();
	if (!root)
		return -ENOMEM;
	for (size_t i = 0; i < folder->n_topics; i++) {
		const struct config_topic *t = &folder->topics[i];
		const char *sub = config_subscription_name(t->subscription);

		if (!resend_id_ok(t->id) || !sub) {
			r = -EINVAL;
			goto out;
		}
		r = resend_append_object(root, "id", t->id, "subscription", sub);
		if (r < 0)
			goto out;
	}
out:
	return resend_print_free(root, r, ret);
}

int resend_fields_build(const struct config_folder *folder, struct resend_fields *ret)
{
	struct resend_fields f = {0};
	int r;

	if (!folder || !ret)
		return -EINVAL;
	/* Sources disagree on the server's default, so on_conflict is always sent. */
	f.on_conflict = config_on_conflict_name(folder->settings.on_conflict);
	if (!f.on_conflict)
		return -EINVAL;
	if (folder->column_map.present) {
		r = resend_build_column_map(&folder->column_map, &f.column_map);
		if (r < 0)
			goto fail;
	}
	if (folder->n_segments > 0) {
		r = resend_build_segments(folder, &f.segments);
		if (r < 0)
			goto fail;
	}
	if (folder->n_topics > 0) {
		r = resend_build_topics(folder, &f.topics);
		if (r < 0)
			goto fail;
	}
	*ret = f;
	return 0;
fail:
	resend_fields_free(&f);
	return r;
}

void resend_fields_free(struct resend_fields *f)
{
	if (!f)
		return;
	/* Allocated by cJSON_PrintUnformatted: freed through cJSON's hooks, which may not be
	 * malloc's if someone installs their own. */
	cJSON_free(f->column_map);
	cJSON_free(f->segments);
	cJSON_free(f->topics);
	f->column_map = NULL;
	f->segments = NULL;
	f->topics = NULL;
	f->on_conflict = NULL;
}

/* ---- the import settings' hash ---------------------------------------------------------- */

/* The canonical text is, line by line (each ending in "\n"):
 *
 *   rdd-import-settings 1
 *   column_map 0|1                        (1: the folder has a column_map)
 *   email V
 *   first_name V
 *   last_name V
 *   unsubscribed V
 *   properties N                          (then N lines, in the file's order:)
 *   property V V TYPE                     (key, column, string|number|boolean)
 *   segments N                            (then N lines, in the file's order:)
 *   segment UUID
 *   topics N                              (then N lines, in the file's order:)
 *   topic UUID opt_in|opt_out
 *   on_conflict upsert|skip
 *
 * where V is a string as LENGTH:BYTES (so that no column name can pass for the text around
 * it) or "-" when unset, and UUID is in lowercase (Resend ignores its case; the configuration
 * refuses two that differ only in case). Order is kept rather than sorted: a list merely
 * reordered hashes differently, which can only cost one more import, never skip one that
 * should have run. The "1" is the version of this text. */
static bool hash_line(EVP_MD_CTX *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool hash_line(EVP_MD_CTX *md, const char *fmt, ...)
{
	char *line = NULL;
	va_list ap;

	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return false;
	bool ok = EVP_DigestUpdate(md, line, (size_t)n) == 1;
	free(line);
	return ok;
}

static bool hash_value(EVP_MD_CTX *md, const char *name, const char *v)
{
	if (!v)
		return hash_line(md, "%s -\n", name);
	return hash_line(md, "%s %zu:%s\n", name, strlen(v), v);
}

static bool hash_uuid(EVP_MD_CTX *md, const char *name, const char *id, const char *tail)
{
	char lower[CONFIG_UUID_LEN + 1];
	size_t i;

	for (i = 0; i < CONFIG_UUID_LEN && id[i]; i++)
		lower[i] = (char)tolower((unsigned char)id[i]);
	lower[i] = '\0';
	return hash_line(md, "%s %s%s%s\n", name, lower, tail ? " " : "", tail ? tail : "");
}

void resend_settings_hash(const struct config_folder *f, char out[65])
{
	const struct config_column_map *m = &f->column_map;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

	ok = ok && hash_line(md, "rdd-import-settings 1\ncolumn_map %d\n", m->present ? 1 : 0);
	ok = ok && hash_value(md, "email", m->email);
	ok = ok && hash_value(md, "first_name", m->first_name);
	ok = ok && hash_value(md, "last_name", m->last_name);
	ok = ok && hash_value(md, "unsubscribed", m->unsubscribed);
	ok = ok && hash_line(md, "properties %zu\n", m->n_properties);
	for (size_t i = 0; ok && i < m->n_properties; i++) {
		const struct config_property *p = &m->properties[i];
		ok = hash_line(md, "property %zu:%s %zu:%s %s\n", strlen(p->key), p->key,
			      strlen(p->column), p->column, config_prop_type_name(p->type));
	}
	ok = ok && hash_line(md, "segments %zu\n", f->n_segments);
	for (size_t i = 0; ok && i < f->n_segments; i++)
		ok = hash_uuid(md, "segment", f->segments[i], NULL);
	ok = ok && hash_line(md, "topics %zu\n", f->n_topics);
	for (size_t i = 0; ok && i < f->n_topics; i++)
		ok = hash_uuid(md, "topic", f->topics[i].id,
				   config_subscription_name(f->topics[i].subscription));
	ok = ok && hash_line(md, "on_conflict %s\n",
			    config_on_conflict_name(f->settings.on_conflict));
	ok = ok && EVP_DigestFinal_ex(md, digest, &len) == 1 && len == 32;
	EVP_MD_CTX_free(md);

	if (ok) {
		text_hex(out, digest, 32);
		return;
	}
	/* Only out of memory gets here, and the signature has no way to say so. A value that is
	 * not hex, and unique to this call, matches no import in the ledger: the file is taken
	 * for new and imported, rather than skipped as a duplicate of something it may not be. */
	static atomic_ulong counter;
	snprintf(out, 65, "!unhashed-%ld-%lu-%lld", (long)getpid(), atomic_fetch_add(&counter, 1),
		 (long long)time(NULL));
}

char *resend_sanitize_filename(const char *name)
{
	const char *base = NULL;
	char *out;

	if (name) {
		const char *slash = strrchr(name, '/');
		base = slash ? slash + 1 : name;
	}
	if (!base || !*base)
		return strdup("upload.csv");
	out = strdup(base);
	if (!out)
		return NULL;
	/* The name goes between quotes in a Content-Disposition header: a quote, backslash or line
	 * break there could end the parameter or the header itself. Bytes that are not UTF-8 (a
	 * Latin-1 name from an old export) would make the part header undecodable. */
	unsigned char *p = (unsigned char *)out;
	size_t left = strlen(out);
	while (left > 0) {
		size_t n = text_utf8_len(p, left);
		if (n == 0 || *p == '"' || *p == '\\' || *p < 0x20 || *p == 0x7f) {
			*p = '_';
			n = 1;
		}
		p += n;
		left -= n;
	}
	return out;
}

void resend_idempotency_key(char buf[37], const char *folder, const char *sha256_hex)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	size_t flen, hlen;
	char *input;
	bool ok = false;

	folder = folder ? folder : "";
	sha256_hex = sha256_hex ? sha256_hex : "";
	flen = strlen(folder);
	hlen = strlen(sha256_hex);
	input = malloc(flen + 1 + hlen);
	if (input) {
		memcpy(input, folder, flen);
		input[flen] = '\n';
		memcpy(input + flen + 1, sha256_hex, hlen);
		ok = EVP_Digest(input, flen + 1 + hlen, md, &md_len, EVP_sha256(), NULL) == 1 &&
		     md_len >= 16;
		free(input);
	}
	memcpy(buf, "rdd-", 4);
	if (ok) {
		text_hex(buf + 4, md, 16);
	} else {
		/* Only out of memory gets here, and the signature has no way to say so. A key that
		 * is unique to this attempt loses the server-side de-duplication, which the daemon
		 * never relies on (it keeps its own record); a constant or empty key could instead
		 * make the server answer with another file's import or refuse the request. */
		static unsigned counter;
		struct timespec ts = {0};
		unsigned char raw[16];
		uint64_t a, b;

		clock_gettime(CLOCK_REALTIME, &ts);
		a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		b = ((uint64_t)getpid() << 32) | ++counter;
		for (size_t i = 0; i < 8; i++) {
			raw[i] = (unsigned char)(a >> (8 * i));
			raw[8 + i] = (unsigned char)(b >> (8 * i));
		}
		text_hex(buf + 4, raw, sizeof(raw));
	}
	buf[36] = '\0';
}

static const char *resend_json_string(const cJSON *obj, const char *key)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Parses BODY leniently: NULL unless it is a JSON object. */
static cJSON *resend_parse_object(const char *body, size_t len)
{
	cJSON *root;

	if (!body || len == 0)
		return NULL;
	root = cJSON_ParseWithLength(body, len);
	if (root && !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static bool resend_says_key_invalid(const char *message)
{
	return message && strcasestr(message, "api key") && strcasestr(message, "invalid");
}

static enum resend_class resend_class_of(long status, const char *name, const char *message)
{
	if (status >= 200 && status <= 299)
		return RESEND_OK;
	/* 0: no answer at all (connection refused, timeout, TLS failure): worth another try. */
	if (status == 0 || status == 408 || (status >= 500 && status <= 599))
		return RESEND_RETRY;
	if (status == 429) {
		if (strcmp(name, "daily_quota_exceeded") == 0 ||
		    strcmp(name, "monthly_quota_exceeded") == 0)
			return RESEND_QUOTA;
		/* rate_limit_exceeded, or a 429 from something in between that has no Resend name */
		return RESEND_RATE_LIMITED;
	}
	/* Both say "not now" about something that will be free again shortly. */
	if (status == 409 && (strcmp(name, "concurrent_idempotent_requests") == 0 ||
			      strcmp(name, "resource_locked") == 0))
		return RESEND_RETRY;
	if (status == 401)
		return RESEND_AUTH;
	if (status == 403 && (strcmp(name, "invalid_api_key") == 0 ||
			      strcmp(name, "restricted_api_key") == 0))
		return RESEND_AUTH;
	/* A bad key has been seen as 400 validation_error "API key is invalid": pausing everything
	 * beats failing every file in turn. */
	if ((status == 400 || status == 403) && resend_says_key_invalid(message))
		return RESEND_AUTH;
	return RESEND_PERMANENT;
}

enum resend_class resend_classify(long status, const char *body, size_t len,
				  struct resend_error *err)
{
	cJSON *root = resend_parse_object(body, len);
	const char *name = root ? resend_json_string(root, "name") : NULL;
	const char *message = root ? resend_json_string(root, "message") : NULL;
	enum resend_class cls = resend_class_of(status, name ? name : "", message);

	if (cls != RESEND_OK && err) {
		char text[sizeof(err->message)], prefix[64] = "";
		size_t excerpt = sizeof(text), plen;

		memset(err, 0, sizeof(*err));
		err->status = status;
		if (name)
			resend_copy_text(err->name, sizeof(err->name), name, strlen(name), true);
		if (message) {
			resend_copy_text(text, sizeof(text), message, strlen(message), false);
		} else {
			/* Not Resend's error shape: quote the start of whatever came back. */
			if (excerpt > RESEND_EXCERPT_MAX + 1)
				excerpt = RESEND_EXCERPT_MAX + 1;
			resend_copy_text(text, excerpt, body, len, true);
		}
		/* Anything that looks like a key goes, here where the excerpt's cut is seen (the
		 * message is cut again below); the caller, which knows the configured key, scrubs
		 * for that too. */
		scrub_secrets(err->name, sizeof(err->name), NULL);
		scrub_secrets(text, message ? sizeof(text) : excerpt, NULL);
		if (!text[0])
			snprintf(text, sizeof(text), "%s",
				 status == 0 ? "no HTTP response" : "empty body");
		/* 1xx/3xx (the API does not redirect) and nonsense statuses carry no Resend error
		 * name, so the message has to say what went wrong. */
		if (status != 0 && (status < 200 || (status >= 300 && status < 400) || status > 599))
			snprintf(prefix, sizeof(prefix), "unexpected HTTP status %ld: ", status);
		plen = strlen(prefix);
		memcpy(err->message, prefix, plen);
		/* TEXT is already one safe line: copying again only truncates it without splitting
		 * a character. */
		resend_copy_text(err->message + plen, sizeof(err->message) - plen, text, strlen(text),
				 false);
	}
	cJSON_Delete(root);
	return cls;
}

/* The id ends up in a URL path (GET /contacts/imports/{id}), so only unreserved URL characters
 * are accepted: a '/', '?' or '%' from a confused server must not change which URL we call. */
static bool resend_id_is_safe(const char *id)
{
	if (!*id)
		return false;
	for (const char *p = id; *p; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.' || c == '~';
		if (!ok)
			return false;
	}
	return strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}

int resend_parse_created(const char *body, size_t len, char ret_id[64])
{
	cJSON *root = resend_parse_object(body, len);
	const char *id = root ? resend_json_string(root, "id") : NULL;
	int r = -EBADMSG;

	/* Too long is refused rather than truncated: a cut id would name another import or none. */
	if (id && strlen(id) < 64 && resend_id_is_safe(id)) {
		memcpy(ret_id, id, strlen(id) + 1);
		r = 0;
	}
	cJSON_Delete(root);
	return r;
}

/* A count as a JSON number (or, leniently, a string of digits); -1 when missing or not a
 * non-negative integer. */
static int64_t resend_count(const cJSON *counts, const char *key, bool *found)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(counts, key);

	if (cJSON_IsNumber(item)) {
		double v = item->valuedouble;

		/* 2^53: beyond it a double no longer holds every integer exactly */
		if (v >= 0 && v <= 9007199254740992.0 && (double)(int64_t)v == v) {
			*found = true;
			return (int64_t)v;
		}
	} else if (cJSON_IsString(item) && item->valuestring[0]) {
		int64_t v = 0;

		for (const char *p = item->valuestring; *p; p++) {
			if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10)
				return -1;
			v = v * 10 + (*p - '0');
		}
		*found = true;
		return v;
	}
	return -1;
}

static void resend_timestamp(char *dst, size_t dstsz, const cJSON *obj, const char *key)
{
	const char *s = resend_json_string(obj, key);

	dst[0] = '\0';
	if (s)
		resend_copy_text(dst, dstsz, s, strlen(s), true);
}

/* An import object, as GET /contacts/imports/{id} answers it or as an item of the list. */
static int resend_import_from(const cJSON *root, struct resend_import *ret)
{
	static const struct {
		const char *name;
		enum resend_import_state state;
	} states[] = {
		{"queued", RESEND_IMPORT_QUEUED},
		{"in_progress", RESEND_IMPORT_IN_PROGRESS},
		{"completed", RESEND_IMPORT_COMPLETED},
		{"failed", RESEND_IMPORT_FAILED},
	};
	struct resend_import imp = {0};
	const char *status = root ? resend_json_string(root, "status") : NULL;
	const cJSON *counts;
	bool found = false;

	if (!status)
		return -EBADMSG;
	imp.state = RESEND_IMPORT_UNKNOWN;
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (strcmp(status, states[i].name) == 0)
			imp.state = states[i].state;
	resend_copy_text(imp.status, sizeof(imp.status), status, strlen(status), true);

	counts = cJSON_GetObjectItemCaseSensitive(root, "counts");
	if (!cJSON_IsObject(counts))
		counts = NULL;
	imp.total = resend_count(counts, "total", &found);
	imp.created = resend_count(counts, "created", &found);
	imp.updated = resend_count(counts, "updated", &found);
	imp.skipped = resend_count(counts, "skipped", &found);
	imp.failed = resend_count(counts, "failed", &found);
	imp.has_counts = found;

	resend_timestamp(imp.created_at, sizeof(imp.created_at), root, "created_at");
	resend_timestamp(imp.completed_at, sizeof(imp.completed_at), root, "completed_at");
	*ret = imp;
	return 0;
}

int resend_parse_import(const char *body, size_t len, struct resend_import *ret)
{
	cJSON *root = resend_parse_object(body, len);
	int r = resend_import_from(root, ret);

	cJSON_Delete(root);
	return r;
}

int resend_parse_import_list(const char *body, size_t len, struct resend_import_list *ret)
{
	cJSON *root = resend_parse_object(body, len);
	const cJSON *data = root ? cJSON_GetObjectItemCaseSensitive(root, "data") : NULL;
	const cJSON *item, *more;
	struct resend_import_list l = {0};

	if (!cJSON_IsArray(data)) {
		cJSON_Delete(root);
		return -EBADMSG;
	}
	more = cJSON_GetObjectItemCaseSensitive(root, "has_more");
	l.has_more = cJSON_IsTrue(more);
	l.items = calloc((size_t)cJSON_GetArraySize(data) + 1, sizeof(*l.items));
	if (!l.items) {
		cJSON_Delete(root);
		return -ENOMEM;
	}
	cJSON_ArrayForEach(item, data) {
		struct resend_listed_import *x = &l.items[l.n];
		const char *id = cJSON_IsObject(item) ? resend_json_string(item, "id") : NULL;

		/* An item without an id or a status says nothing usable: left out. */
		if (!id || !*id || strlen(id) >= sizeof(x->id) ||
		    resend_import_from(item, &x->import) < 0)
			continue;
		memcpy(x->id, id, strlen(id) + 1);
		l.n++;
	}
	cJSON_Delete(root);
	*ret = l;
	return 0;
}

void resend_import_list_clear(struct resend_import_list *l)
{
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

/* Digits at S, exactly N of them: their value, or -1. */
static int resend_digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int64_t resend_time_ms(const char *s)
{
	int y, mo, d, h, mi, sec, ms = 0;
	int64_t days;
	const char *p;

	/* 2026-05-15T18:32:37.823Z, or 2026-05-15 18:32:37.823+00 */
	if (!s || strlen(s) < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') ||
	    s[13] != ':' || s[16] != ':')
		return -1;
	y = resend_digits(s, 4);
	mo = resend_digits(s + 5, 2);
	d = resend_digits(s + 8, 2);
	h = resend_digits(s + 11, 2);
	mi = resend_digits(s + 14, 2);
	sec = resend_digits(s + 17, 2);
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 ||
	    mi > 59 || sec < 0 || sec > 60)
		return -1;
	p = s + 19;
	if (*p == '.') {
		int k = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, k++)
			if (k < 3)
				ms = ms * 10 + (*p - '0');
		for (; k < 3; k++)
			ms *= 10;
	}
	/* UTC only: Resend writes Z or +00 (a +00:00 too). */
	if (!(strcmp(p, "Z") == 0 || strcmp(p, "+00") == 0 || strcmp(p, "+00:00") == 0 ||
	      *p == '\0'))
		return -1;
	/* Days from the civil date (Howard Hinnant's algorithm). */
	y -= mo <= 2;
	{
		int64_t era = y / 400, yoe = y - era * 400;
		int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
		int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

		days = era * 146097 + doe - 719468;
	}
	return ((days * 24 + h) * 60 + mi) * 60000 + (int64_t)sec * 1000 + ms;
}

const char *resend_import_state_name(enum resend_import_state s)
{
	switch (s) {
	case RESEND_IMPORT_QUEUED:
		return "queued";
	case RESEND_IMPORT_IN_PROGRESS:
		return "in_progress";
	case RESEND_IMPORT_COMPLETED:
		return "completed";
	case RESEND_IMPORT_FAILED:
		return "failed";
	case RESEND_IMPORT_UNKNOWN:
		break;
	}
	return "unknown";
}

char *resend_part_filename(const char *name, size_t part, size_t n_parts)
{
	char *base = resend_sanitize_filename(name), *out;
	const char *dot;

	if (!base || n_parts < 2)
		return base;
	dot = strrchr(base, '.');
	if (!dot || dot == base)
		dot = base + strlen(base);
	if (asprintf(&out, "%.*s.part-%zu-of-%zu%s", (int)(dot - base), base, part + 1, n_parts,
		     dot) < 0)
		out = NULL;
	free(base);
	return out;
}

void resend_part_key(char buf[37], const char *folder, const char *sha256_hex, size_t part,
		     size_t n_parts)
{
	char which[96];

	if (n_parts < 2) {
		resend_idempotency_key(buf, folder, sha256_hex);
		return;
	}
	snprintf(which, sizeof(which), "%s/%zu/%zu", sha256_hex, part + 1, n_parts);
	resend_idempotency_key(buf, folder, which);
}
