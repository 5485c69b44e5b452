/* Configuration loading: libyaml's document API gives us a node tree with positions; we walk it
 * against a fixed schema and collect every problem (with file:line:column and the key path)
 * before giving up, so that an operator fixes the whole file in one go. */
#include "config.h"

#include "apikey.h"
#include "fsops.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#define CONFIG_MAX_ERRORS 200
#define CONFIG_MAX_FOLDERS 256

struct error_entry {
	size_t line, column, seq;
	char *text;
};

struct ctx {
	const char *file;
	unsigned flags; /* enum config_load_flags */
	yaml_document_t *doc;
	struct error_entry *errors;
	size_t n_errors;
	bool truncated;
};

/* ---- error collection ------------------------------------------------------------------ */

static void ctx_error_at(struct ctx *c, size_t line, size_t column, const char *path,
			 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void ctx_error_at(struct ctx *c, size_t line, size_t column, const char *path,
			 const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (c->n_errors >= CONFIG_MAX_ERRORS) {
		c->truncated = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct error_entry *e = realloc(c->errors, (c->n_errors + 1) * sizeof(*e));
	if (!e)
		return;
	c->errors = e;
	e = &c->errors[c->n_errors];
	e->line = line;
	e->column = column;
	e->seq = c->n_errors;
	/* Line 0: a problem with the file as a whole, which has no position. */
	int n;
	if (line == 0)
		n = asprintf(&e->text, "%s: %s", c->file, msg);
	else if (path && *path)
		n = asprintf(&e->text, "%s:%zu:%zu: %s: %s", c->file, line, column, path, msg);
	else
		n = asprintf(&e->text, "%s:%zu:%zu: %s", c->file, line, column, msg);
	if (n < 0)
		return;
	c->n_errors++;
}

#define node_error(c, n, path, ...)                                                            \
	ctx_error_at((c), (n)->start_mark.line + 1, (n)->start_mark.column + 1, (path), __VA_ARGS__)

static int error_entry_cmp(const void *a, const void *b)
{
	const struct error_entry *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->column != y->column)
		return x->column < y->column ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sections are validated in dependency order (defaults before folders), but operators read a
 * file top to bottom: report in file order. */
static void ctx_flush_errors(struct ctx *c, struct config_errors *errs)
{
	qsort(c->errors, c->n_errors, sizeof(*c->errors), error_entry_cmp);
	for (size_t i = 0; i < c->n_errors; i++) {
		char **items = realloc(errs->items, (errs->count + 1) * sizeof(*items));
		if (!items) {
			free(c->errors[i].text);
			continue;
		}
		errs->items = items;
		errs->items[errs->count++] = c->errors[i].text;
	}
	if (c->truncated) {
		char **items = realloc(errs->items, (errs->count + 1) * sizeof(*items));
		if (items) {
			errs->items = items;
			if (asprintf(&errs->items[errs->count], "%s: too many errors, stopped after %d",
				     c->file, CONFIG_MAX_ERRORS) >= 0)
				errs->count++;
		}
	}
	free(c->errors);
	c->errors = NULL;
	c->n_errors = 0;
}

void config_errors_clear(struct config_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->count; i++)
		free(errs->items[i]);
	free(errs->items);
	errs->items = NULL;
	errs->count = 0;
}

int config_errors_add(struct config_errors *errs, const char *fmt, ...)
{
	char **v, *text;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	v = realloc(errs->items, (errs->count + 1) * sizeof(*v));
	if (!v) {
		free(text);
		return -ENOMEM;
	}
	errs->items = v;
	errs->items[errs->count++] = text;
	return 0;
}

/* ---- names ----------------------------------------------------------------------------- */

static const char *const on_conflict_names[] = {"upsert", "skip", NULL};
static const char *const prop_type_names[] = {"string", "number", "boolean", NULL};
static const char *const subscription_names[] = {"opt_in", "opt_out", NULL};
static const char *const log_level_names[] = {"error", "warning", "info", "debug", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const encoding_names[] = {"auto",       "utf-8",       "windows-1252",
					     "iso-8859-1", "iso-8859-15", "utf-16",
					     NULL};
static const char *const header_names[] = {"exact", "relaxed", NULL};
static const char *const invalid_rows_names[] = {"drop", "import", "fail_file", NULL};
static const char *const on_duplicate_names[] = {"skip", "import", "fail", NULL};

/* The tables are indexed by the enums: keep them in step. */
_Static_assert(sizeof(encoding_names) / sizeof(*encoding_names) == CONFIG_ENCODING_UTF16 + 2,
	       "encoding_names");
_Static_assert(sizeof(header_names) / sizeof(*header_names) == CONFIG_HEADER_RELAXED + 2,
	       "header_names");
_Static_assert(sizeof(invalid_rows_names) / sizeof(*invalid_rows_names) ==
		       CONFIG_INVALID_ROWS_FAIL_FILE + 2,
	       "invalid_rows_names");
_Static_assert(sizeof(on_duplicate_names) / sizeof(*on_duplicate_names) ==
		       CONFIG_ON_DUPLICATE_FAIL + 2,
	       "on_duplicate_names");

const char *config_on_conflict_name(enum config_on_conflict v)
{
	return on_conflict_names[v];
}

const char *config_prop_type_name(enum config_prop_type v)
{
	return prop_type_names[v];
}

const char *config_subscription_name(enum config_subscription v)
{
	return subscription_names[v];
}

const char *config_encoding_name(enum config_encoding v)
{
	return encoding_names[v];
}

const char *config_header_name(enum config_header v)
{
	return header_names[v];
}

const char *config_invalid_rows_name(enum config_invalid_rows v)
{
	return invalid_rows_names[v];
}

const char *config_on_duplicate_name(enum config_on_duplicate v)
{
	return on_duplicate_names[v];
}

/* ---- shared validators ----------------------------------------------------------------- */

bool config_is_uuid(const char *s)
{
	static const char layout[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(s) != CONFIG_UUID_LEN)
		return false;
	for (size_t i = 0; i < CONFIG_UUID_LEN; i++) {
		if (layout[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

bool config_is_property_key(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CONFIG_PROPERTY_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	}
	return true;
}

int config_parse_duration(const char *s, uint64_t *ret_seconds)
{
	uint64_t v = 0, unit;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	if (strcmp(s, "0") == 0) {
		*ret_seconds = 0;
		return 0;
	}
	for (; isdigit((unsigned char)*s); s++) {
		uint64_t d = (uint64_t)(*s - '0');
		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	switch (*s) {
	case 's':
		unit = 1;
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	case 'w':
		unit = 604800;
		break;
	default:
		return -EINVAL;
	}
	if (s[1] != '\0' || v > (uint64_t)INT64_MAX / unit)
		return -EINVAL;
	*ret_seconds = v * unit;
	return 0;
}

static bool host_is_loopback(const char *host)
{
	size_t n = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0)
		return true;
	/* 127.0.0.0/8, written as a dotted quad only: names that merely start with "127." are not
	 * addresses. */
	unsigned a, b, c, d;
	char tail;
	if (n <= 15 && sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4)
		return a == 127 && b < 256 && c < 256 && d < 256;
	return false;
}

bool config_url_host_is_loopback(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL;
	bool loopback = false;

	if (!u)
		return false;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
		loopback = host_is_loopback(host);
	curl_free(host);
	curl_url_cleanup(u);
	return loopback;
}

/* ---- node helpers ---------------------------------------------------------------------- */

static const char *node_type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return n->data.scalar.length == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
			       ? "an empty value"
			       : "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool scalar_is_plain(const yaml_node_t *n)
{
	return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* A plain empty scalar (`key:` with nothing after it) means "not set". */
static bool node_is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || !scalar_is_plain(n))
		return false;
	const char *s = scalar(n);
	return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0;
}

/* Scalars reach us as NUL-terminated strings; a NUL inside one would silently cut it short. */
static bool scalar_has_nul(const yaml_node_t *n)
{
	return strlen(scalar(n)) != n->data.scalar.length;
}

static void quote_for_message(char *buf, size_t sz, const char *s)
{
	size_t o = 0;

	for (; *s && o + 5 < sz; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(buf + o, sz - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	if (*s && o + 4 <= sz) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
}

#define QUOTED(buf, s) (quote_for_message((buf), sizeof(buf), (s)), (buf))

/* ---- typed value parsers: each reports its own error and returns false on a bad value --- */

static bool get_string(struct ctx *c, yaml_node_t *n, const char *path, bool allow_empty,
		       char **ret)
{
	if (n->type != YAML_SCALAR_NODE) {
		node_error(c, n, path, "expected a string, got %s", node_type_name(n));
		return false;
	}
	if (scalar_has_nul(n)) {
		node_error(c, n, path, "expected a string without NUL characters");
		return false;
	}
	if (!allow_empty && n->data.scalar.length == 0) {
		node_error(c, n, path, "expected a non-empty string");
		return false;
	}
	char *s = strdup(scalar(n));
	if (!s) {
		node_error(c, n, path, "out of memory");
		return false;
	}
	free(*ret);
	*ret = s;
	return true;
}

static bool get_uint(struct ctx *c, yaml_node_t *n, const char *path, uint64_t min, uint64_t max,
		     uint64_t *ret)
{
	char q[80];

	if (n->type != YAML_SCALAR_NODE || !scalar_is_plain(n) || n->data.scalar.length == 0) {
		node_error(c, n, path, "expected an integer from %" PRIu64 " to %" PRIu64 ", got %s",
			   min, max,
			   n->type == YAML_SCALAR_NODE && n->data.scalar.length
				   ? "a quoted string"
				   : node_type_name(n));
		return false;
	}
	const char *s = scalar(n);
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!isdigit((unsigned char)*s) || *end != '\0' || errno == ERANGE) {
		node_error(c, n, path, "expected an integer from %" PRIu64 " to %" PRIu64 ", got '%s'",
			   min, max, QUOTED(q, s));
		return false;
	}
	if (v < min || v > max) {
		node_error(c, n, path, "%llu is out of range: expected %" PRIu64 " to %" PRIu64, v, min,
			   max);
		return false;
	}
	*ret = v;
	return true;
}

static bool get_double(struct ctx *c, yaml_node_t *n, const char *path, double min, double max,
		       double *ret)
{
	char q[80];

	if (n->type != YAML_SCALAR_NODE || !scalar_is_plain(n) || n->data.scalar.length == 0) {
		node_error(c, n, path, "expected a number from %g to %g, got %s", min, max,
			   n->type == YAML_SCALAR_NODE && n->data.scalar.length ? "a quoted string"
									: node_type_name(n));
		return false;
	}
	const char *s = scalar(n);
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (*end != '\0' || errno == ERANGE || !isfinite(v) ||
	    !(isdigit((unsigned char)*s) || *s == '.')) {
		node_error(c, n, path, "expected a number from %g to %g, got '%s'", min, max,
			   QUOTED(q, s));
		return false;
	}
	if (v < min || v > max) {
		node_error(c, n, path, "%g is out of range: expected %g to %g", v, min, max);
		return false;
	}
	*ret = v;
	return true;
}

static bool get_bool(struct ctx *c, yaml_node_t *n, const char *path, bool *ret)
{
	char q[80];

	if (n->type == YAML_SCALAR_NODE && scalar_is_plain(n)) {
		if (strcasecmp(scalar(n), "true") == 0) {
			*ret = true;
			return true;
		}
		if (strcasecmp(scalar(n), "false") == 0) {
			*ret = false;
			return true;
		}
		node_error(c, n, path, "expected true or false, got '%s'", QUOTED(q, scalar(n)));
		return false;
	}
	node_error(c, n, path, "expected true or false, got %s",
		   n->type == YAML_SCALAR_NODE ? "a quoted string" : node_type_name(n));
	return false;
}

static void join_names(char *buf, size_t sz, const char *const *names)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i] && o < sz; i++)
		o += (size_t)snprintf(buf + o, sz - o, "%s%s", i ? ", " : "", names[i]);
}

static bool get_enum(struct ctx *c, yaml_node_t *n, const char *path, const char *const *names,
		     int *ret)
{
	char list[160], q[80];

	join_names(list, sizeof(list), names);
	if (n->type != YAML_SCALAR_NODE) {
		node_error(c, n, path, "expected one of %s, got %s", list, node_type_name(n));
		return false;
	}
	for (int i = 0; names[i] && !scalar_has_nul(n); i++) {
		if (strcmp(scalar(n), names[i]) == 0) {
			*ret = i;
			return true;
		}
	}
	node_error(c, n, path, "expected one of %s, got '%s'", list, QUOTED(q, scalar(n)));
	return false;
}

struct enum_alias {
	const char *name;
	int value;
};

/* As get_enum, ignoring ASCII case and taking ALIASES too (names people also write, such as
 * "latin1"); the message lists the canonical NAMES only. */
static bool get_enum_icase(struct ctx *c, yaml_node_t *n, const char *path,
			   const char *const *names, const struct enum_alias *aliases, int *ret)
{
	char list[160], q[80];

	join_names(list, sizeof(list), names);
	if (n->type != YAML_SCALAR_NODE) {
		node_error(c, n, path, "expected one of %s, got %s", list, node_type_name(n));
		return false;
	}
	for (int i = 0; names[i] && !scalar_has_nul(n); i++) {
		if (strcasecmp(scalar(n), names[i]) == 0) {
			*ret = i;
			return true;
		}
	}
	for (size_t i = 0; aliases[i].name && !scalar_has_nul(n); i++) {
		if (strcasecmp(scalar(n), aliases[i].name) == 0) {
			*ret = aliases[i].value;
			return true;
		}
	}
	node_error(c, n, path, "expected one of %s, got '%s'", list, QUOTED(q, scalar(n)));
	return false;
}

/* csv.delimiter: '\0' for auto. A TAB may be "\t" (YAML makes it the character itself), '\t'
 * or plain \t (a backslash and a t, which YAML leaves as they are), or the word tab. */
static bool get_delimiter(struct ctx *c, yaml_node_t *n, const char *path, char *ret)
{
	static const char list[] = "auto, \",\", \";\", \"\\t\", \"|\"";
	char q[80];

	if (n->type != YAML_SCALAR_NODE || (n->data.scalar.length == 0 && scalar_is_plain(n))) {
		node_error(c, n, path, "must be one of %s, got %s", list, node_type_name(n));
		return false;
	}
	const char *s = scalar(n);
	size_t len = n->data.scalar.length;
	if (len == 1 && s[0] && strchr(",;\t|", s[0])) {
		*ret = s[0];
		return true;
	}
	if (!scalar_has_nul(n)) {
		if (strcmp(s, "auto") == 0) {
			*ret = '\0';
			return true;
		}
		if (strcmp(s, "tab") == 0 || strcmp(s, "\\t") == 0) {
			*ret = '\t';
			return true;
		}
	}
	/* `delimiter: |` unquoted starts a block scalar, which is empty here. */
	if (len == 0 && n->data.scalar.style == YAML_LITERAL_SCALAR_STYLE) {
		node_error(c, n, path, "must be one of %s, got an empty block scalar (write \"|\" in "
				       "quotes)",
			   list);
		return false;
	}
	node_error(c, n, path, "must be one of %s, got '%s'", list, QUOTED(q, s));
	return false;
}

static bool get_uuid(struct ctx *c, yaml_node_t *n, const char *path,
		     char ret[CONFIG_UUID_LEN + 1])
{
	char q[80];

	if (n->type != YAML_SCALAR_NODE) {
		node_error(c, n, path, "expected a UUID, got %s", node_type_name(n));
		return false;
	}
	if (scalar_has_nul(n) || !config_is_uuid(scalar(n))) {
		node_error(c, n, path,
			   "expected a UUID (8-4-4-4-12 hexadecimal digits, as shown in the Resend "
			   "dashboard), got '%s'",
			   QUOTED(q, scalar(n)));
		return false;
	}
	memcpy(ret, scalar(n), CONFIG_UUID_LEN + 1);
	return true;
}

/* duplicate_window: a plain or quoted scalar ("30d" is a string to YAML either way). */
static bool get_duration(struct ctx *c, yaml_node_t *n, const char *path, uint64_t *ret)
{
	char q[80];

	if (n->type != YAML_SCALAR_NODE || (n->data.scalar.length == 0 && scalar_is_plain(n))) {
		node_error(c, n, path, "must be " CONFIG_DURATION_EXPECTED ", got %s",
			   node_type_name(n));
		return false;
	}
	if (scalar_has_nul(n) || config_parse_duration(scalar(n), ret) < 0) {
		node_error(c, n, path, "must be " CONFIG_DURATION_EXPECTED ", got '%s'",
			   QUOTED(q, scalar(n)));
		return false;
	}
	return true;
}

/* ---- mapping walker -------------------------------------------------------------------- */

/* Calls back for each key of a mapping, after rejecting non-scalar keys, unknown keys and
 * duplicate keys (libyaml accepts duplicates silently; the later one would win unnoticed). */
struct key_visit {
	const char *key;
	yaml_node_t *key_node;
	yaml_node_t *value;
	char path[256];
};

typedef void (*key_cb)(struct ctx *c, struct key_visit *kv, void *target);

static bool expect_mapping(struct ctx *c, yaml_node_t *n, const char *path)
{
	if (n->type == YAML_MAPPING_NODE)
		return true;
	node_error(c, n, path, "expected a mapping, got %s", node_type_name(n));
	return false;
}

static int key_index(const char *const *keys, const char *key)
{
	for (int i = 0; keys[i]; i++) {
		if (strcmp(keys[i], key) == 0)
			return i;
	}
	return -1;
}

#define MAX_KEYS 32

static void walk_mapping(struct ctx *c, yaml_node_t *map, const char *path,
			 const char *const *keys, key_cb cb, void *target)
{
	yaml_node_t *seen[MAX_KEYS] = {0};
	char list[512], q[80];

	join_names(list, sizeof(list), keys);
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		struct key_visit kv;
		kv.key_node = yaml_document_get_node(c->doc, p->key);
		kv.value = yaml_document_get_node(c->doc, p->value);
		if (kv.key_node->type != YAML_SCALAR_NODE) {
			node_error(c, kv.key_node, path, "expected a plain key, got %s",
				   node_type_name(kv.key_node));
			continue;
		}
		kv.key = scalar(kv.key_node);
		snprintf(kv.path, sizeof(kv.path), "%s%s%s", path, *path ? "." : "", kv.key);
		int i = key_index(keys, kv.key);
		if (i < 0) {
			node_error(c, kv.key_node, path[0] ? path : NULL,
				   "unknown key '%s' (expected one of: %s)", QUOTED(q, kv.key), list);
			continue;
		}
		if (seen[i]) {
			node_error(c, kv.key_node, kv.path, "duplicate key (first set at line %zu)",
				   seen[i]->start_mark.line + 1);
			continue;
		}
		seen[i] = kv.key_node;
		cb(c, &kv, target);
	}
}

/* ---- sections -------------------------------------------------------------------------- */

static const char *const api_keys[] = {"base_url",
				       "api_key_env",
				       "api_key_file",
				       "user_agent_suffix",
				       "max_in_flight",
				       "requests_per_second",
				       "connect_timeout_s",
				       "request_timeout_s",
				       "ca_file",
				       "shutdown_timeout_s",
				       NULL};

struct api_target {
	struct config_api *api;
	yaml_node_t *base_url, *key_env, *key_file, *ca_file;
};

static bool is_env_name(const char *s)
{
	if (!(isalpha((unsigned char)*s) || *s == '_'))
		return false;
	for (; *s; s++) {
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	}
	return true;
}

static void api_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct api_target *t = target;
	struct config_api *api = t->api;
	char q[80];

	if (strcmp(kv->key, "base_url") == 0) {
		if (get_string(c, kv->value, kv->path, false, &api->base_url))
			t->base_url = kv->value;
	} else if (strcmp(kv->key, "api_key_env") == 0) {
		if (!get_string(c, kv->value, kv->path, false, &api->api_key_env))
			return;
		if (!is_env_name(api->api_key_env))
			node_error(c, kv->value, kv->path,
				   "expected an environment variable name (letters, digits, "
				   "underscore), got '%s'",
				   QUOTED(q, api->api_key_env));
		else
			t->key_env = kv->value;
	} else if (strcmp(kv->key, "api_key_file") == 0) {
		if (node_is_null(kv->value))
			return;
		if (!get_string(c, kv->value, kv->path, false, &api->api_key_file))
			return;
		if (api->api_key_file[0] != '/')
			node_error(c, kv->value, kv->path, "expected an absolute path, got '%s'",
				   QUOTED(q, api->api_key_file));
		else
			t->key_file = kv->value;
	} else if (strcmp(kv->key, "user_agent_suffix") == 0) {
		if (node_is_null(kv->value))
			return;
		if (!get_string(c, kv->value, kv->path, true, &api->user_agent_suffix))
			return;
		for (const char *s = api->user_agent_suffix; *s; s++) {
			if ((unsigned char)*s < 0x20 || *s == 0x7f) {
				node_error(c, kv->value, kv->path,
					   "control characters are not allowed in a header value");
				break;
			}
		}
	} else if (strcmp(kv->key, "max_in_flight") == 0) {
		get_uint(c, kv->value, kv->path, 1, 64, &api->max_in_flight);
	} else if (strcmp(kv->key, "requests_per_second") == 0) {
		/* 0: no client-side ceiling (a local sink, a benchmark); the server's rate-limit
		 * headers are still obeyed. */
		get_double(c, kv->value, kv->path, 0, 1000, &api->requests_per_second);
	} else if (strcmp(kv->key, "connect_timeout_s") == 0) {
		get_uint(c, kv->value, kv->path, 1, 300, &api->connect_timeout_s);
	} else if (strcmp(kv->key, "request_timeout_s") == 0) {
		get_uint(c, kv->value, kv->path, 1, 86400, &api->request_timeout_s);
	} else if (strcmp(kv->key, "ca_file") == 0) {
		if (node_is_null(kv->value))
			return;
		if (get_string(c, kv->value, kv->path, false, &api->ca_file))
			t->ca_file = kv->value;
	} else if (strcmp(kv->key, "shutdown_timeout_s") == 0) {
		get_uint(c, kv->value, kv->path, 0, 3600, &api->shutdown_timeout_s);
	}
}

static void check_base_url(struct ctx *c, struct config_api *api, yaml_node_t *n)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *query = NULL, *fragment = NULL;
	char q[80];
	const char *path = "api.base_url";

	if (!u) {
		node_error(c, n, path, "out of memory");
		return;
	}
	CURLUcode rc = curl_url_set(u, CURLUPART_URL, api->base_url, 0);
	if (rc != CURLUE_OK) {
		node_error(c, n, path, "'%s' is not a valid URL: %s", QUOTED(q, api->base_url),
			   curl_url_strerror(rc));
		goto out;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (!scheme || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
		node_error(c, n, path, "expected an https:// URL, got '%s'", QUOTED(q, api->base_url));
		goto out;
	}
	/* curl reports an empty fragment ("#") as none, but the endpoint appended after it would
	 * become the fragment: "https://host/v1#" + "/contacts/imports" calls https://host/v1. */
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK ||
	    strchr(api->base_url, '#')) {
		node_error(c, n, path, "a base URL takes no query or fragment, got '%s'",
			   QUOTED(q, api->base_url));
		goto out;
	}
	if (strcmp(scheme, "http") == 0 && (!host || !host_is_loopback(host))) {
		node_error(c, n, path,
			   "http:// would send the API key unencrypted; use https:// (plain http is "
			   "allowed only for loopback hosts such as 127.0.0.1, got '%s')",
			   QUOTED(q, host ? host : ""));
		goto out;
	}
	/* Endpoints are appended as "/contacts/imports": keep one slash between. */
	size_t len = strlen(api->base_url);
	while (len > 0 && api->base_url[len - 1] == '/')
		api->base_url[--len] = '\0';
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(u);
}

/* Reads the key from where the configuration says (apikey.h): an error names the key that
 * says where, or the api: section (the file's start without one) for the default chain. */
static void load_api_key(struct ctx *c, struct config *cfg, yaml_node_t *api_node,
			 struct api_target *t)
{
	struct config_api *api = &cfg->api;
	struct apikey k = {0};
	char why[1024];
	yaml_node_t *where;
	const char *keypath;
	int r;

	if (t->key_env && t->key_file) {
		node_error(c, t->key_file, "api.api_key_file",
			   "set either api_key_env or api_key_file, not both (or neither: then the "
			   "key is " APIKEY_DEFAULT_ENV ", else the systemd credential '"
			   APIKEY_CREDENTIAL "', else the key file)");
		return;
	}
	if ((api->api_key_file && !t->key_file) || (api->api_key_env && !t->key_env))
		return; /* already reported as invalid */
	/* An invalid name was reported where it is set; looking it up would print it unquoted. */
	if (api->api_key_env && !is_env_name(api->api_key_env))
		return;
	if (api->api_key_file) {
		r = apikey_from_file(api->api_key_file, &k, why, sizeof(why));
		where = t->key_file;
		keypath = "api.api_key_file";
	} else if (api->api_key_env) {
		r = apikey_from_env(api->api_key_env, &k, why, sizeof(why));
		if (r == -ENOENT)
			snprintf(why, sizeof(why),
				 "no API key: environment variable %s is not set (set it, or set "
				 "api.api_key_file, or neither)",
				 api->api_key_env);
		where = t->key_env;
		keypath = "api.api_key_env";
	} else {
		r = apikey_default(APIKEY_DEFAULT_FILE, &k, why, sizeof(why));
		where = api_node;
		keypath = "api";
	}
	if (r < 0) {
		ctx_error_at(c, where ? where->start_mark.line + 1 : 1,
			     where ? where->start_mark.column + 1 : 1, keypath, "%s", why);
		return;
	}
	cfg->api_key = k.key;
	k.key = NULL;
	snprintf(cfg->api_key_source, sizeof(cfg->api_key_source), "%s", k.source);
	apikey_clear(&k);
}

static void parse_api(struct ctx *c, struct config *cfg, yaml_node_t *n, unsigned flags)
{
	struct api_target t = {.api = &cfg->api};
	char q[80];

	if (n && expect_mapping(c, n, "api"))
		walk_mapping(c, n, "api", api_keys, api_key_cb, &t);
	if (t.base_url)
		check_base_url(c, &cfg->api, t.base_url);
	if (t.ca_file && access(cfg->api.ca_file, R_OK) != 0)
		node_error(c, t.ca_file, "api.ca_file", "cannot read CA file '%s': %s",
			   QUOTED(q, cfg->api.ca_file), strerror(errno));
	if (!(flags & CONFIG_LOAD_NO_API_KEY))
		load_api_key(c, cfg, n, &t);
}

static const char *const retry_keys[] = {"max_attempts", "initial_delay_ms", "max_delay_ms",
					 NULL};

struct retry_target {
	struct config_retry *retry;
	yaml_node_t *max_delay;
};

static void retry_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct retry_target *t = target;

	if (strcmp(kv->key, "max_attempts") == 0)
		get_uint(c, kv->value, kv->path, 1, 100, &t->retry->max_attempts);
	else if (strcmp(kv->key, "initial_delay_ms") == 0)
		get_uint(c, kv->value, kv->path, 1, 3600000, &t->retry->initial_delay_ms);
	else if (strcmp(kv->key, "max_delay_ms") == 0 &&
		 get_uint(c, kv->value, kv->path, 1, 86400000, &t->retry->max_delay_ms))
		t->max_delay = kv->value;
}

static void parse_retry(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
	struct retry_target t = {.retry = &cfg->retry};

	if (!n || !expect_mapping(c, n, "retry"))
		return;
	walk_mapping(c, n, "retry", retry_keys, retry_key_cb, &t);
	if (t.max_delay && cfg->retry.max_delay_ms < cfg->retry.initial_delay_ms)
		node_error(c, t.max_delay, "retry.max_delay_ms",
			   "must be at least initial_delay_ms (%" PRIu64 ")",
			   cfg->retry.initial_delay_ms);
}

/* The settings keys, valid under `defaults:` and in each folder. */
static const char *const settings_keys[] = {
	"settle_ms",	    "rescan_s",	  "pattern",	    "max_file_bytes",
	"on_conflict",	    "follow_import", "max_upload_bytes", "invalid_rows",
	"csv",		    "on_duplicate",  "duplicate_window", NULL};

/* A part holds the header and at least some rows; below this, splitting would mostly send
 * headers. Above Resend's own limit (200 MiB) every part would be refused. */
#define CONFIG_UPLOAD_BYTES_MIN UINT64_C(65536)
#define CONFIG_UPLOAD_BYTES_MAX UINT64_C(209715200)

static const char *const csv_keys[] = {"delimiter", "encoding", "header", NULL};

static const struct enum_alias encoding_aliases[] = {
	{"utf8", CONFIG_ENCODING_UTF8},
	{"utf16", CONFIG_ENCODING_UTF16},
	{"cp1252", CONFIG_ENCODING_WINDOWS_1252},
	{"latin1", CONFIG_ENCODING_ISO_8859_1},
	{NULL, 0},
};

/* A folder's settings start as a copy of the defaults, so that its csv: overrides only the
 * keys it names. */
static void csv_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct config_csv *csv = target;
	int e;

	if (strcmp(kv->key, "delimiter") == 0) {
		get_delimiter(c, kv->value, kv->path, &csv->delimiter);
	} else if (strcmp(kv->key, "encoding") == 0) {
		if (get_enum_icase(c, kv->value, kv->path, encoding_names, encoding_aliases, &e))
			csv->encoding = (enum config_encoding)e;
	} else if (strcmp(kv->key, "header") == 0) {
		if (get_enum(c, kv->value, kv->path, header_names, &e))
			csv->header = (enum config_header)e;
	}
}

static bool is_settings_key(const char *key)
{
	return key_index(settings_keys, key) >= 0;
}

static void parse_setting(struct ctx *c, struct key_visit *kv, struct config_settings *s)
{
	char q[80];
	int e;

	if (strcmp(kv->key, "settle_ms") == 0) {
		get_uint(c, kv->value, kv->path, 0, 3600000, &s->settle_ms);
	} else if (strcmp(kv->key, "rescan_s") == 0) {
		get_uint(c, kv->value, kv->path, 1, 86400, &s->rescan_s);
	} else if (strcmp(kv->key, "pattern") == 0) {
		char *p = NULL;
		if (!get_string(c, kv->value, kv->path, false, &p))
			return;
		if (strchr(p, '/')) {
			node_error(c, kv->value, kv->path,
				   "a pattern matches file names, not paths: '/' is not allowed in "
				   "'%s'",
				   QUOTED(q, p));
			free(p);
			return;
		}
		free(s->pattern);
		s->pattern = p;
	} else if (strcmp(kv->key, "max_file_bytes") == 0) {
		get_uint(c, kv->value, kv->path, 1, UINT64_C(1) << 40, &s->max_file_bytes);
	} else if (strcmp(kv->key, "on_conflict") == 0) {
		if (get_enum(c, kv->value, kv->path, on_conflict_names, &e))
			s->on_conflict = (enum config_on_conflict)e;
	} else if (strcmp(kv->key, "follow_import") == 0) {
		get_bool(c, kv->value, kv->path, &s->follow_import);
	} else if (strcmp(kv->key, "max_upload_bytes") == 0) {
		get_uint(c, kv->value, kv->path, CONFIG_UPLOAD_BYTES_MIN, CONFIG_UPLOAD_BYTES_MAX,
			 &s->max_upload_bytes);
	} else if (strcmp(kv->key, "invalid_rows") == 0) {
		if (get_enum(c, kv->value, kv->path, invalid_rows_names, &e))
			s->invalid_rows = (enum config_invalid_rows)e;
	} else if (strcmp(kv->key, "csv") == 0) {
		if (expect_mapping(c, kv->value, kv->path))
			walk_mapping(c, kv->value, kv->path, csv_keys, csv_key_cb, &s->csv);
	} else if (strcmp(kv->key, "on_duplicate") == 0) {
		if (get_enum(c, kv->value, kv->path, on_duplicate_names, &e))
			s->on_duplicate = (enum config_on_duplicate)e;
	} else if (strcmp(kv->key, "duplicate_window") == 0) {
		get_duration(c, kv->value, kv->path, &s->duplicate_window_s);
	}
}

static void defaults_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	parse_setting(c, kv, target);
}

static const char *const log_keys[] = {"level", "format", NULL};

static void log_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct config *cfg = target;
	int e;

	if (strcmp(kv->key, "level") == 0) {
		if (get_enum(c, kv->value, kv->path, log_level_names, &e))
			cfg->log_level = (enum config_log_level)e;
	} else if (strcmp(kv->key, "format") == 0) {
		if (get_enum(c, kv->value, kv->path, log_format_names, &e))
			cfg->log_format = (enum config_log_format)e;
	}
}

/* ---- control socket and metrics ---------------------------------------------------------- */

static const char *const control_keys[] = {"socket", NULL};

static void control_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct config *cfg = target;
	char q[80], *s = NULL;

	if (strcmp(kv->key, "socket") != 0 || !get_string(c, kv->value, kv->path, false, &s))
		return;
	if (s[0] != '/')
		node_error(c, kv->value, kv->path, "expected an absolute path, got '%s'", QUOTED(q, s));
	else if (strlen(s) >= 108) /* sizeof(sun_path) */
		node_error(c, kv->value, kv->path, "a socket path is at most 107 bytes long");
	free(cfg->control.socket);
	cfg->control.socket = s;
}

static const char *const metrics_keys[] = {"listen", "allow_remote", NULL};

struct metrics_target {
	struct config *cfg;
	yaml_node_t *listen;
};

/* "HOST:PORT", with an IPv6 address in brackets. */
static bool parse_listen(const char *s, char **ret_host, uint16_t *ret_port)
{
	const char *colon = strrchr(s, ':'), *h = s, *he;
	char *end;
	unsigned long port;

	if (!colon || colon == s)
		return false;
	he = colon;
	if (*s == '[') {
		if (colon[-1] != ']')
			return false;
		h = s + 1;
		he = colon - 1;
	} else if (memchr(s, ':', (size_t)(colon - s))) {
		return false; /* IPv6 without brackets */
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || port == 0 || port > 65535 || he == h)
		return false;
	*ret_host = strndup(h, (size_t)(he - h));
	*ret_port = (uint16_t)port;
	return *ret_host != NULL;
}

static void metrics_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct metrics_target *t = target;
	struct config_metrics *m = &t->cfg->metrics;
	char q[80], *s = NULL;

	if (strcmp(kv->key, "allow_remote") == 0) {
		get_bool(c, kv->value, kv->path, &m->allow_remote);
		return;
	}
	if (node_is_null(kv->value) || !get_string(c, kv->value, kv->path, false, &s))
		return;
	free(m->listen_host);
	m->listen_host = NULL;
	if (!parse_listen(s, &m->listen_host, &m->listen_port))
		node_error(c, kv->value, kv->path,
			   "expected HOST:PORT (an IPv6 address in brackets), got '%s'", QUOTED(q, s));
	else
		t->listen = kv->value;
	free(s);
}

static void parse_metrics(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
	struct metrics_target t = {.cfg = cfg};
	char q[80];

	if (!n || !expect_mapping(c, n, "metrics"))
		return;
	walk_mapping(c, n, "metrics", metrics_keys, metrics_key_cb, &t);
	if (t.listen && !cfg->metrics.allow_remote && !host_is_loopback(cfg->metrics.listen_host))
		node_error(c, t.listen, "metrics.listen",
			   "'%s' is not a loopback address: metrics are served to this host only "
			   "unless metrics.allow_remote is true",
			   QUOTED(q, cfg->metrics.listen_host));
}

/* ---- folders --------------------------------------------------------------------------- */

static const char *const folder_keys[] = {
	"name",		  "inbox",	  "done",	   "failed",	      "column_map",
	"segments",	  "topics",	  "settle_ms",	   "rescan_s",	      "pattern",
	"max_file_bytes", "on_conflict", "follow_import", "max_upload_bytes", "invalid_rows",
	"csv",		  "on_duplicate", "duplicate_window", NULL};

static const char *const column_map_keys[] = {"email",	      "first_name", "last_name",
					      "unsubscribed", "properties", NULL};
static const char *const property_keys[] = {"column", "type", NULL};
static const char *const topic_keys[] = {"id", "subscription", NULL};
static const char *const segment_keys[] = {"id", NULL};

struct folder_target {
	struct config_folder *f;
	yaml_node_t *name, *inbox, *done, *failed; /* set when the value passed its checks */
	unsigned seen_required;                    /* bit per folder_required key, even if bad */
};

static const char *const folder_required[] = {"name", "inbox", "done", "failed", NULL};

static void property_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct config_property *p = target;
	int e;

	if (strcmp(kv->key, "column") == 0) {
		get_string(c, kv->value, kv->path, false, &p->column);
	} else if (strcmp(kv->key, "type") == 0) {
		if (get_enum(c, kv->value, kv->path, prop_type_names, &e))
			p->type = (enum config_prop_type)e;
	}
}

static void parse_properties(struct ctx *c, struct config_column_map *m, yaml_node_t *n,
			     const char *path)
{
	char q[80], ppath[256];
	size_t count;

	if (!expect_mapping(c, n, path))
		return;
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	m->properties = calloc(count ? count : 1, sizeof(*m->properties));
	if (!m->properties) {
		node_error(c, n, path, "out of memory");
		return;
	}
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = yaml_document_get_node(c->doc, pr->key);
		yaml_node_t *v = yaml_document_get_node(c->doc, pr->value);
		if (k->type != YAML_SCALAR_NODE) {
			node_error(c, k, path, "expected a property key, got %s", node_type_name(k));
			continue;
		}
		snprintf(ppath, sizeof(ppath), "%s.%s", path, QUOTED(q, scalar(k)));
		if (scalar_has_nul(k) || !config_is_property_key(scalar(k))) {
			node_error(c, k, ppath,
				   "invalid property key '%s': use letters, digits and underscore, at "
				   "most %d characters",
				   QUOTED(q, scalar(k)), CONFIG_PROPERTY_KEY_MAX);
			continue;
		}
		bool dup = false;
		for (size_t i = 0; i < m->n_properties; i++)
			dup |= strcmp(m->properties[i].key, scalar(k)) == 0;
		if (dup) {
			node_error(c, k, ppath, "duplicate property key");
			continue;
		}
		if (!expect_mapping(c, v, ppath))
			continue;
		struct config_property *p = &m->properties[m->n_properties];
		p->type = CONFIG_PROP_STRING;
		size_t before = c->n_errors;
		walk_mapping(c, v, ppath, property_keys, property_key_cb, p);
		if (!p->column) {
			/* A present but bad `column` was reported already. */
			if (c->n_errors == before)
				node_error(c, v, ppath, "missing required key 'column'");
			continue;
		}
		p->key = strdup(scalar(k));
		m->n_properties++;
	}
}

static void column_map_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct config_column_map *m = target;

	if (strcmp(kv->key, "email") == 0)
		get_string(c, kv->value, kv->path, false, &m->email);
	else if (strcmp(kv->key, "first_name") == 0)
		get_string(c, kv->value, kv->path, false, &m->first_name);
	else if (strcmp(kv->key, "last_name") == 0)
		get_string(c, kv->value, kv->path, false, &m->last_name);
	else if (strcmp(kv->key, "unsubscribed") == 0)
		get_string(c, kv->value, kv->path, false, &m->unsubscribed);
	else if (strcmp(kv->key, "properties") == 0)
		parse_properties(c, m, kv->value, kv->path);
}

static void parse_column_map(struct ctx *c, struct config_column_map *m, yaml_node_t *n,
			     const char *path)
{
	if (!expect_mapping(c, n, path))
		return;
	m->present = true;
	size_t before = c->n_errors;
	walk_mapping(c, n, path, column_map_keys, column_map_key_cb, m);
	if (!m->email && c->n_errors == before)
		node_error(c, n, path,
			   "missing required key 'email': name the CSV column that holds the email "
			   "address");
}

static void segment_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	get_uuid(c, kv->value, kv->path, target);
}

static void parse_segments(struct ctx *c, struct config_folder *f, yaml_node_t *n,
			   const char *path)
{
	char ipath[300];

	if (n->type != YAML_SEQUENCE_NODE) {
		node_error(c, n, path, "expected a list of segment ids, got %s", node_type_name(n));
		return;
	}
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	f->segments = calloc(count ? count : 1, sizeof(*f->segments));
	if (!f->segments)
		return;
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
		char id[CONFIG_UUID_LEN + 1] = "";
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (item->type == YAML_MAPPING_NODE) {
			size_t before = c->n_errors;
			walk_mapping(c, item, ipath, segment_keys, segment_key_cb, id);
			if (!id[0]) {
				if (c->n_errors == before)
					node_error(c, item, ipath, "missing required key 'id'");
				continue;
			}
		} else if (!get_uuid(c, item, ipath, id)) {
			continue;
		}
		bool dup = false;
		for (size_t j = 0; j < f->n_segments; j++)
			dup |= strcasecmp(f->segments[j], id) == 0;
		if (dup) {
			node_error(c, item, ipath, "segment %s is listed twice", id);
			continue;
		}
		memcpy(f->segments[f->n_segments++], id, sizeof(id));
	}
}

struct topic_parse {
	struct config_topic t;
	bool has_id, has_sub;
};

static void topic_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct topic_parse *tp = target;
	int e;

	if (strcmp(kv->key, "id") == 0) {
		tp->has_id = get_uuid(c, kv->value, kv->path, tp->t.id);
	} else if (strcmp(kv->key, "subscription") == 0) {
		tp->has_sub = get_enum(c, kv->value, kv->path, subscription_names, &e);
		tp->t.subscription = (enum config_subscription)e;
	}
}

static void parse_topics(struct ctx *c, struct config_folder *f, yaml_node_t *n, const char *path)
{
	char ipath[300];

	if (n->type != YAML_SEQUENCE_NODE) {
		node_error(c, n, path, "expected a list of {id, subscription} mappings, got %s",
			   node_type_name(n));
		return;
	}
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	f->topics = calloc(count ? count : 1, sizeof(*f->topics));
	if (!f->topics)
		return;
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
		struct topic_parse tp = {0};
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (item->type != YAML_MAPPING_NODE) {
			node_error(c, item, ipath,
				   "expected a mapping {id: <uuid>, subscription: opt_in|opt_out}, got "
				   "%s",
				   node_type_name(item));
			continue;
		}
		size_t before = c->n_errors;
		walk_mapping(c, item, ipath, topic_keys, topic_key_cb, &tp);
		if (c->n_errors != before)
			continue;
		if (!tp.has_id || !tp.has_sub) {
			node_error(c, item, ipath, "missing required key '%s'",
				   tp.has_id ? "subscription" : "id");
			continue;
		}
		bool dup = false;
		for (size_t j = 0; j < f->n_topics; j++)
			dup |= strcasecmp(f->topics[j].id, tp.t.id) == 0;
		if (dup) {
			node_error(c, item, ipath, "topic %s is listed twice", tp.t.id);
			continue;
		}
		f->topics[f->n_topics++] = tp.t;
	}
}

static bool is_folder_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (; *s; s++) {
		if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
			return false;
	}
	return true;
}

static void folder_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	struct folder_target *t = target;
	struct config_folder *f = t->f;
	char q[80];
	int req = key_index(folder_required, kv->key);

	if (req >= 0)
		t->seen_required |= 1u << req;
	if (strcmp(kv->key, "name") == 0) {
		if (!get_string(c, kv->value, kv->path, false, &f->name))
			return;
		if (!is_folder_name(f->name)) {
			node_error(c, kv->value, kv->path,
				   "invalid folder name '%s': use letters, digits, '_', '.' and '-' "
				   "(at most 64, not starting with '.' or '-')",
				   QUOTED(q, f->name));
			return;
		}
		t->name = kv->value;
	} else if (strcmp(kv->key, "inbox") == 0) {
		if (get_string(c, kv->value, kv->path, false, &f->inbox))
			t->inbox = kv->value;
	} else if (strcmp(kv->key, "done") == 0) {
		if (get_string(c, kv->value, kv->path, false, &f->done))
			t->done = kv->value;
	} else if (strcmp(kv->key, "failed") == 0) {
		if (get_string(c, kv->value, kv->path, false, &f->failed))
			t->failed = kv->value;
	} else if (strcmp(kv->key, "column_map") == 0) {
		parse_column_map(c, &f->column_map, kv->value, kv->path);
	} else if (strcmp(kv->key, "segments") == 0) {
		parse_segments(c, f, kv->value, kv->path);
	} else if (strcmp(kv->key, "topics") == 0) {
		parse_topics(c, f, kv->value, kv->path);
	} else if (is_settings_key(kv->key)) {
		parse_setting(c, kv, &f->settings);
	}
}

/* A folder directory that passed its own checks, for the cross-folder checks. */
struct dir_ref {
	const char *path;
	yaml_node_t *node;
	char key[128];
	bool exists;
	struct stat st;
};

static bool dir_check(struct ctx *c, yaml_node_t *n, const char *keypath, const char *path,
		      struct dir_ref *ret)
{
	char q[200];

	if (path[0] != '/') {
		node_error(c, n, keypath, "expected an absolute path, got '%s'", QUOTED(q, path));
		return false;
	}
	memset(ret, 0, sizeof(*ret));
	ret->path = path;
	ret->node = n;
	snprintf(ret->key, sizeof(ret->key), "%s", keypath);
	if (stat(path, &ret->st) != 0) {
		/* Not there yet (a share mounted later, say): the daemon says so when it sets the
		 * folder up, and waits for it, serving the others. */
		if (c->flags & CONFIG_LOAD_DIRS_LATER)
			return false;
		if (errno == ENOENT)
			node_error(c, n, keypath,
				   "directory '%s' does not exist (create it, or correct the path)",
				   QUOTED(q, path));
		else
			node_error(c, n, keypath, "cannot access '%s': %s", QUOTED(q, path),
				   strerror(errno));
		return false;
	}
	if (!S_ISDIR(ret->st.st_mode)) {
		node_error(c, n, keypath, "'%s' is not a directory", QUOTED(q, path));
		return false;
	}
	/* The daemon opens its folders without following a link (one swapped in later could
	 * send files anywhere); say so now rather than at the start. */
	struct stat lst;
	if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
		char *real = realpath(path, NULL);
		char q2[200];
		node_error(c, n, keypath,
			   "'%s' is a symbolic link, which resend-dropd does not follow: name the "
			   "directory itself%s%s%s",
			   QUOTED(q, path), real ? " ('" : "", real ? QUOTED(q2, real) : "",
			   real ? "')" : "");
		free(real);
		return false;
	}
	ret->exists = true;
	return true;
}

static bool same_dir(const struct dir_ref *a, const struct dir_ref *b)
{
	return a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino;
}

static void parse_folder(struct ctx *c, struct config *cfg, yaml_node_t *n, size_t index,
			 struct dir_ref refs[3])
{
	struct config_folder *f = &cfg->folders[index];
	struct folder_target t = {.f = f};
	char path[64], kp[128], q[200];

	snprintf(path, sizeof(path), "folders[%zu]", index);
	f->settings = cfg->defaults;
	f->settings.pattern = strdup(cfg->defaults.pattern);
	if (!expect_mapping(c, n, path))
		return;
	walk_mapping(c, n, path, folder_keys, folder_key_cb, &t);

	for (unsigned i = 0; folder_required[i]; i++) {
		if (!(t.seen_required & (1u << i)))
			node_error(c, n, path, "missing required key '%s'", folder_required[i]);
	}

	yaml_node_t *dn[3] = {t.inbox, t.done, t.failed};
	const char *dp[3] = {f->inbox, f->done, f->failed};
	static const char *const dk[3] = {"inbox", "done", "failed"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(kp, sizeof(kp), "%s.%s", path, dk[i]);
		if (dn[i])
			dir_check(c, dn[i], kp, dp[i], &refs[i]);
	}
	for (size_t i = 1; i < 3; i++) {
		if (!refs[0].exists || !refs[i].exists)
			continue;
		if (same_dir(&refs[0], &refs[i])) {
			node_error(c, refs[i].node, refs[i].key,
				   "is the same directory as the inbox: finished files would be "
				   "picked up again");
		} else if (refs[0].st.st_dev != refs[i].st.st_dev) {
			node_error(c, refs[i].node, refs[i].key,
				   "is on another filesystem than the inbox '%s': files are moved by "
				   "rename, which cannot cross filesystems",
				   QUOTED(q, f->inbox));
		}
	}
	if (refs[1].exists && refs[2].exists && same_dir(&refs[1], &refs[2]))
		node_error(c, refs[2].node, refs[2].key,
			   "is the same directory as done: success and failure would be "
			   "indistinguishable");
}

/* The ledger's directory must be nobody's inbox, done or failed: its files would be claimed
 * (pattern: "*") or reported as if they were finished exports. A state_dir that does not
 * exist yet is fine: systemd's StateDirectory= or the daemon creates it. */
static void check_state_dir(struct ctx *c, const struct config *cfg, yaml_node_t *state_node,
			    struct dir_ref (*refs)[3], size_t count)
{
	struct dir_ref sd = {0};
	char q[200];

	if (!state_node || stat(cfg->state_dir, &sd.st) != 0 || !S_ISDIR(sd.st.st_mode))
		return;
	for (size_t i = 0; i < count; i++) {
		for (size_t k = 0; k < 3; k++) {
			if (!refs[i][k].exists || !same_dir(&sd, &refs[i][k]))
				continue;
			node_error(c, state_node, "state_dir",
				   "'%s' is also used by %s: the ledger needs a directory of its own",
				   QUOTED(q, cfg->state_dir), refs[i][k].key);
		}
	}
}

static void parse_folders(struct ctx *c, struct config *cfg, yaml_node_t *n,
			  yaml_node_t *state_node)
{
	if (n->type != YAML_SEQUENCE_NODE) {
		node_error(c, n, "folders", "expected a list of folders, got %s", node_type_name(n));
		return;
	}
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count == 0) {
		node_error(c, n, "folders", "expected at least one folder");
		return;
	}
	if (count > CONFIG_MAX_FOLDERS) {
		node_error(c, n, "folders", "%zu folders is more than the limit of %d", count,
			   CONFIG_MAX_FOLDERS);
		return;
	}
	cfg->folders = calloc(count, sizeof(*cfg->folders));
	struct dir_ref(*refs)[3] = calloc(count, sizeof(*refs));
	if (!cfg->folders || !refs) {
		free(refs);
		node_error(c, n, "folders", "out of memory");
		return;
	}
	cfg->n_folders = count;
	for (size_t i = 0; i < count; i++)
		parse_folder(c, cfg, yaml_document_get_node(c->doc, n->data.sequence.items.start[i]),
			     i, refs[i]);

	/* A processing directory is the daemon's alone: no folder's inbox, done or failed may be
	 * one (a file finished there would be resumed, or claimed twice). Only one that exists can
	 * be compared; a configured directory that does not exist is an error already. */
	for (size_t i = 0; i < count; i++) {
		struct dir_ref proc = {0};
		char path[PATH_MAX];

		if (!refs[i][0].exists ||
		    snprintf(path, sizeof(path), "%s/" FSOPS_PROCESSING_DIR, refs[i][0].path) >=
			    (int)sizeof(path) ||
		    lstat(path, &proc.st) != 0 || !S_ISDIR(proc.st.st_mode))
			continue;
		for (size_t j = 0; j < count; j++) {
			for (size_t k = 0; k < 3; k++) {
				if (!refs[j][k].exists || !same_dir(&proc, &refs[j][k]))
					continue;
				char q[200];
				node_error(c, refs[j][k].node, refs[j][k].key,
					   "'%s' is the processing directory of %s: it belongs to the "
					   "daemon",
					   QUOTED(q, refs[j][k].path), refs[i][0].key);
			}
		}
	}

	/* Across folders: names identify folders in logs and reports; a directory shared by two
	 * folders would have both claim the same files. */
	for (size_t i = 0; i < count; i++) {
		for (size_t j = 0; j < i; j++) {
			const char *a = cfg->folders[i].name, *b = cfg->folders[j].name;
			if (a && b && strcmp(a, b) == 0) {
				yaml_node_t *fn = yaml_document_get_node(
					c->doc, n->data.sequence.items.start[i]);
				char q[80];
				node_error(c, fn, "folders",
					   "folder name '%s' is used twice (also folders[%zu])",
					   QUOTED(q, a), j);
			}
		}
		for (size_t k = 0; k < 3; k++) {
			if (!refs[i][k].exists)
				continue;
			for (size_t j = 0; j < i; j++) {
				for (size_t l = 0; l < 3; l++) {
					if (!refs[j][l].exists || !same_dir(&refs[i][k], &refs[j][l]))
						continue;
					char q[200];
					node_error(c, refs[i][k].node, refs[i][k].key,
						   "'%s' is also used by %s: each folder needs its own "
						   "directories",
						   QUOTED(q, refs[i][k].path), refs[j][l].key);
				}
			}
		}
	}
	check_state_dir(c, cfg, state_node, refs, count);
	free(refs);
}

/* ---- top level ------------------------------------------------------------------------- */

static const char *const top_keys[] = {"api",     "retry",   "defaults",  "log",
				       "folders", "control", "metrics",   "state_dir",
				       "ledger_keep_days", NULL};

struct top_target {
	yaml_node_t *nodes[9];
};

static void top_key_cb(struct ctx *c, struct key_visit *kv, void *target)
{
	(void)c;
	struct top_target *t = target;
	t->nodes[key_index(top_keys, kv->key)] = kv->value;
}

/* Returns N when it is a valid state_dir, else NULL (and has said why). */
static yaml_node_t *parse_state_dir(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
	char q[80], *s = NULL;

	if (!n || !get_string(c, n, "state_dir", false, &s))
		return NULL;
	if (s[0] != '/') {
		node_error(c, n, "state_dir", "expected an absolute path, got '%s'", QUOTED(q, s));
		free(s);
		return NULL;
	}
	size_t len = strlen(s);
	if (len > CONFIG_STATE_DIR_MAX) {
		node_error(c, n, "state_dir", "a path is at most %d bytes long, got %zu",
			   CONFIG_STATE_DIR_MAX, len);
		free(s);
		return NULL;
	}
	while (len > 1 && s[len - 1] == '/')
		s[--len] = '\0';
	free(cfg->state_dir);
	cfg->state_dir = s;
	return n;
}

static void config_set_defaults(struct config *cfg)
{
	cfg->api.base_url = strdup("https://api.resend.com");
	cfg->api.max_in_flight = 4;
	cfg->api.requests_per_second = 2;
	cfg->api.connect_timeout_s = 10;
	cfg->api.request_timeout_s = 600;
	cfg->api.shutdown_timeout_s = 30;
	cfg->retry.max_attempts = 8;
	cfg->retry.initial_delay_ms = 1000;
	cfg->retry.max_delay_ms = 300000;
	cfg->defaults.settle_ms = 2000;
	cfg->defaults.rescan_s = 30;
	cfg->defaults.pattern = strdup("*.csv");
	cfg->defaults.max_file_bytes = UINT64_C(2147483648); /* 2 GiB */
	cfg->defaults.on_conflict = CONFIG_ON_CONFLICT_UPSERT;
	cfg->defaults.follow_import = true;
	cfg->defaults.max_upload_bytes = 52428800;
	cfg->defaults.csv.delimiter = '\0';
	cfg->defaults.csv.encoding = CONFIG_ENCODING_AUTO;
	cfg->defaults.csv.header = CONFIG_HEADER_EXACT;
	cfg->defaults.invalid_rows = CONFIG_INVALID_ROWS_DROP;
	cfg->defaults.on_duplicate = CONFIG_ON_DUPLICATE_SKIP;
	cfg->defaults.duplicate_window_s = UINT64_C(30) * 86400; /* 30d */
	cfg->state_dir = strdup(CONFIG_STATE_DIR_DEFAULT);
	cfg->ledger_keep_days = 365;
	cfg->log_level = CONFIG_LOG_INFO;
	cfg->log_format = CONFIG_LOG_TEXT;
}

static void parse_root(struct ctx *c, struct config *cfg, yaml_node_t *root, unsigned flags)
{
	struct top_target t = {0};

	if (!expect_mapping(c, root, "configuration"))
		return;
	walk_mapping(c, root, "", top_keys, top_key_cb, &t);
	parse_api(c, cfg, t.nodes[0], flags);
	parse_retry(c, cfg, t.nodes[1]);
	if (t.nodes[2] && expect_mapping(c, t.nodes[2], "defaults")) {
		walk_mapping(c, t.nodes[2], "defaults", settings_keys, defaults_key_cb,
			     &cfg->defaults);
	}
	if (t.nodes[3] && expect_mapping(c, t.nodes[3], "log"))
		walk_mapping(c, t.nodes[3], "log", log_keys, log_key_cb, cfg);
	if (t.nodes[5] && expect_mapping(c, t.nodes[5], "control"))
		walk_mapping(c, t.nodes[5], "control", control_keys, control_key_cb, cfg);
	parse_metrics(c, cfg, t.nodes[6]);
	yaml_node_t *state_node = parse_state_dir(c, cfg, t.nodes[7]);
	if (t.nodes[8])
		get_uint(c, t.nodes[8], "ledger_keep_days", 0, 36500, &cfg->ledger_keep_days);
	if (t.nodes[4])
		parse_folders(c, cfg, t.nodes[4], state_node);
	else
		ctx_error_at(c, root->start_mark.line + 1, root->start_mark.column + 1, NULL,
			     "missing required key 'folders': nothing to watch");
}

/* libyaml's loader costs time quadratic in nesting depth and in the number of anchors; a
 * configuration needs neither much. One pass over the events refuses such input, with its
 * position, in milliseconds instead of minutes. Syntax errors are left to the loader, which
 * reports them the same way. */
#define CONFIG_MAX_DEPTH 64
#define CONFIG_MAX_ANCHORS 1000

static bool event_has_anchor(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return ev->data.scalar.anchor != NULL;
	case YAML_SEQUENCE_START_EVENT:
		return ev->data.sequence_start.anchor != NULL;
	case YAML_MAPPING_START_EVENT:
		return ev->data.mapping_start.anchor != NULL;
	default:
		return false;
	}
}

static bool config_prescan(struct ctx *c, const char *buf, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	int depth = 0, anchors = 0;
	bool ok = true;

	if (!yaml_parser_initialize(&p))
		return false;
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	while (yaml_parser_parse(&p, &ev)) {
		yaml_event_type_t type = ev.type;
		if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT)
			depth++;
		else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT)
			depth--;
		if (event_has_anchor(&ev))
			anchors++;
		if (depth > CONFIG_MAX_DEPTH || anchors > CONFIG_MAX_ANCHORS) {
			ctx_error_at(c, ev.start_mark.line + 1, ev.start_mark.column + 1, NULL,
				     depth > CONFIG_MAX_DEPTH
					     ? "nested more than %d levels deep: not a resend-dropd "
					       "configuration"
					     : "more than %d anchors: not a resend-dropd configuration",
				     depth > CONFIG_MAX_DEPTH ? CONFIG_MAX_DEPTH : CONFIG_MAX_ANCHORS);
			ok = false;
		}
		yaml_event_delete(&ev);
		if (!ok || type == YAML_STREAM_END_EVENT)
			break;
	}
	yaml_parser_delete(&p);
	return ok;
}

/* libyaml reports reader errors (bad encoding) by byte offset only. */
static void offset_to_position(const char *buf, size_t len, size_t offset, size_t *line,
			       size_t *column)
{
	*line = 1;
	*column = 1;
	for (size_t i = 0; i < offset && i < len; i++) {
		if (buf[i] == '\n') {
			(*line)++;
			*column = 1;
		} else {
			(*column)++;
		}
	}
}

static void report_yaml_error(struct ctx *c, const yaml_parser_t *p, const char *buf, size_t len)
{
	size_t line, column;
	const char *problem = p->problem ? p->problem : "unknown error";

	if (p->error == YAML_READER_ERROR) {
		offset_to_position(buf, len, p->problem_offset, &line, &column);
		/* problem_value is -1 for a truncated sequence: show the byte itself. */
		unsigned byte = p->problem_offset < len ? (unsigned char)buf[p->problem_offset] : 0;
		ctx_error_at(c, line, column, NULL,
			     "invalid text: %s (byte 0x%02x); the file must be UTF-8 YAML", problem,
			     byte);
		return;
	}
	line = p->problem_mark.line + 1;
	column = p->problem_mark.column + 1;
	if (p->context)
		ctx_error_at(c, line, column, NULL, "YAML syntax error: %s %s (line %zu, column %zu)",
			     problem, p->context, p->context_mark.line + 1,
			     p->context_mark.column + 1);
	else
		ctx_error_at(c, line, column, NULL, "YAML syntax error: %s", problem);
}

static int read_whole_file(struct ctx *c, const char *path, char **ret_buf, size_t *ret_len)
{
	/* O_NONBLOCK: a FIFO given as the configuration must not hang us before fstat refuses it. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int r;

	if (fd < 0) {
		r = -errno;
		ctx_error_at(c, 0, 0, NULL, "cannot open configuration: %s", strerror(errno));
		return r;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		r = -EINVAL;
		ctx_error_at(c, 0, 0, NULL, "not a regular file");
		goto fail;
	}
	if ((uint64_t)st.st_size > CONFIG_MAX_FILE_SIZE) {
		r = -EFBIG;
		ctx_error_at(c, 0, 0, NULL,
			     "configuration is %jd bytes, over the limit of %u bytes: is it the right "
			     "file?",
			     (intmax_t)st.st_size, CONFIG_MAX_FILE_SIZE);
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto fail;
	}
	while (len <= (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			ctx_error_at(c, 0, 0, NULL, "cannot read configuration: %s", strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > (size_t)st.st_size) {
		r = -EFBIG;
		ctx_error_at(c, 0, 0, NULL, "configuration changed while being read");
		goto fail;
	}
	buf[len] = '\0';
	close(fd);
	*ret_buf = buf;
	*ret_len = len;
	return 0;
fail:
	free(buf);
	close(fd);
	return r;
}

int config_load(const char *path, unsigned flags, struct config **ret_config,
		struct config_errors *errs)
{
	struct ctx c = {.file = path, .flags = flags};
	yaml_parser_t parser;
	yaml_document_t doc;
	struct config *cfg = NULL;
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = read_whole_file(&c, path, &buf, &len);
	if (r < 0) {
		ctx_flush_errors(&c, errs);
		return r;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || !(cfg->path = strdup(path))) {
		free(cfg);
		free(buf);
		return -ENOMEM;
	}
	config_set_defaults(cfg);

	if (!yaml_parser_initialize(&parser)) {
		r = -ENOMEM;
		goto out;
	}
	if (!config_prescan(&c, buf, len)) {
		yaml_parser_delete(&parser);
		goto out;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		report_yaml_error(&c, &parser, buf, len);
		yaml_parser_delete(&parser);
		goto out;
	}
	c.doc = &doc;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root) {
		ctx_error_at(&c, 1, 1, NULL,
			     "configuration is empty: expected a mapping with at least 'folders'");
	} else {
		parse_root(&c, cfg, root, flags);
		/* A second document would be ignored silently: refuse it instead. */
		yaml_document_t extra;
		if (!yaml_parser_load(&parser, &extra)) {
			report_yaml_error(&c, &parser, buf, len);
		} else {
			yaml_node_t *x = yaml_document_get_root_node(&extra);
			if (x)
				ctx_error_at(&c, x->start_mark.line + 1, x->start_mark.column + 1, NULL,
					     "a second YAML document is not allowed here");
			yaml_document_delete(&extra);
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);

out:
	free(buf);
	if (c.n_errors > 0 || r < 0) {
		ctx_flush_errors(&c, errs);
		if (r == 0 && (flags & CONFIG_LOAD_KEEP_ON_ERROR)) {
			*ret_config = cfg;
			return -EINVAL;
		}
		config_free(cfg);
		return r < 0 ? r : -EINVAL;
	}
	*ret_config = cfg;
	return 0;
}

/* ---- import settings hash ---------------------------------------------------------------- */

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
static bool hash_add(EVP_MD_CTX *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool hash_add(EVP_MD_CTX *md, const char *fmt, ...)
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

static bool hash_add_value(EVP_MD_CTX *md, const char *name, const char *v)
{
	if (!v)
		return hash_add(md, "%s -\n", name);
	return hash_add(md, "%s %zu:%s\n", name, strlen(v), v);
}

static bool hash_add_uuid(EVP_MD_CTX *md, const char *name, const char *id, const char *tail)
{
	char lower[CONFIG_UUID_LEN + 1];
	size_t i;

	for (i = 0; i < CONFIG_UUID_LEN && id[i]; i++)
		lower[i] = (char)tolower((unsigned char)id[i]);
	lower[i] = '\0';
	return hash_add(md, "%s %s%s%s\n", name, lower, tail ? " " : "", tail ? tail : "");
}

void config_import_settings_hash(const struct config_folder *f, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	const struct config_column_map *m = &f->column_map;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

	ok = ok && hash_add(md, "rdd-import-settings 1\ncolumn_map %d\n", m->present ? 1 : 0);
	ok = ok && hash_add_value(md, "email", m->email);
	ok = ok && hash_add_value(md, "first_name", m->first_name);
	ok = ok && hash_add_value(md, "last_name", m->last_name);
	ok = ok && hash_add_value(md, "unsubscribed", m->unsubscribed);
	ok = ok && hash_add(md, "properties %zu\n", m->n_properties);
	for (size_t i = 0; ok && i < m->n_properties; i++) {
		const struct config_property *p = &m->properties[i];
		ok = hash_add(md, "property %zu:%s %zu:%s %s\n", strlen(p->key), p->key,
			      strlen(p->column), p->column, config_prop_type_name(p->type));
	}
	ok = ok && hash_add(md, "segments %zu\n", f->n_segments);
	for (size_t i = 0; ok && i < f->n_segments; i++)
		ok = hash_add_uuid(md, "segment", f->segments[i], NULL);
	ok = ok && hash_add(md, "topics %zu\n", f->n_topics);
	for (size_t i = 0; ok && i < f->n_topics; i++)
		ok = hash_add_uuid(md, "topic", f->topics[i].id,
				   config_subscription_name(f->topics[i].subscription));
	ok = ok && hash_add(md, "on_conflict %s\n",
			    config_on_conflict_name(f->settings.on_conflict));
	ok = ok && EVP_DigestFinal_ex(md, digest, &len) == 1 && len == 32;
	EVP_MD_CTX_free(md);

	if (ok) {
		for (unsigned i = 0; i < 32; i++) {
			out[2 * i] = hex[digest[i] >> 4];
			out[2 * i + 1] = hex[digest[i] & 0x0f];
		}
		out[64] = '\0';
		return;
	}
	/* Only out of memory gets here, and the signature has no way to say so. A value that is
	 * not hex, and unique to this call, matches no import in the ledger: the file is taken
	 * for new and imported, rather than skipped as a duplicate of something it may not be. */
	static atomic_ulong counter;
	snprintf(out, 65, "!unhashed-%ld-%lu-%lld", (long)getpid(), atomic_fetch_add(&counter, 1),
		 (long long)time(NULL));
}

static void column_map_free(struct config_column_map *m)
{
	free(m->email);
	free(m->first_name);
	free(m->last_name);
	free(m->unsubscribed);
	for (size_t i = 0; i < m->n_properties; i++) {
		free(m->properties[i].key);
		free(m->properties[i].column);
	}
	free(m->properties);
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_folders; i++) {
		struct config_folder *f = &cfg->folders[i];
		free(f->name);
		free(f->inbox);
		free(f->done);
		free(f->failed);
		column_map_free(&f->column_map);
		free(f->segments);
		free(f->topics);
		free(f->settings.pattern);
	}
	free(cfg->folders);
	free(cfg->api.base_url);
	free(cfg->api.api_key_env);
	free(cfg->api.api_key_file);
	free(cfg->api.user_agent_suffix);
	free(cfg->api.ca_file);
	free(cfg->defaults.pattern);
	free(cfg->control.socket);
	free(cfg->metrics.listen_host);
	free(cfg->state_dir);
	if (cfg->api_key) {
		explicit_bzero(cfg->api_key, strlen(cfg->api_key));
		free(cfg->api_key);
	}
	free(cfg->path);
	free(cfg);
}
