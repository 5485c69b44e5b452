/* Configuration loading: the schema of resend-dropd's YAML file. Each mapping is a table of
 * fields (a key, its type and range, where its value goes, what else to check) that the YAML
 * layer walks (yamlconf.h), every problem collected with file:line:column and the key path
 * before giving up, so that an operator fixes the whole file in one go. Here too: the values
 * with a grammar of their own (UUIDs, durations, csv.delimiter, column_map's properties), the
 * checks that span keys (the API key's source, retry's delays, the metrics listener, every
 * folder's directories against the others'), and the hash of a folder's import settings. */
#include "config.h"

#include "address.h"
#include "apikey.h"
#include "fsops.h"
#include "webhook.h"
#include "yamlconf.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CONFIG_MAX_ERRORS 200
#define CONFIG_MAX_FOLDERS 256
/* libyaml's loader costs time quadratic in nesting depth and in the number of anchors; a
 * configuration needs neither much. */
#define CONFIG_MAX_DEPTH 64
#define CONFIG_MAX_ANCHORS 1000

static const struct yamlconf_limits config_limits = {
	.max_bytes = CONFIG_MAX_FILE_SIZE,
	.max_depth = CONFIG_MAX_DEPTH,
	.max_anchors = CONFIG_MAX_ANCHORS,
	.max_errors = CONFIG_MAX_ERRORS,
	.noun = "configuration",
	.kind = "a resend-dropd configuration",
};

#define QUOTED YAMLCONF_QUOTED

/* ---- errors ---------------------------------------------------------------------------- */

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
static const char *const coalesce_names[] = {"auto", "off", NULL};

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
_Static_assert(sizeof(coalesce_names) / sizeof(*coalesce_names) == CONFIG_COALESCE_OFF + 2,
	       "coalesce_names");

/* The walk stores an enum as an int. */
#define INT_SIZED(e) _Static_assert(sizeof(enum e) == sizeof(int), #e " is not int-sized")
INT_SIZED(config_on_conflict);
INT_SIZED(config_prop_type);
INT_SIZED(config_subscription);
INT_SIZED(config_log_level);
INT_SIZED(config_log_format);
INT_SIZED(config_encoding);
INT_SIZED(config_header);
INT_SIZED(config_invalid_rows);
INT_SIZED(config_on_duplicate);
INT_SIZED(config_coalesce);

/* NAMES[V], or NULL when V is not one of its enum's values (the table ends with NULL). */
static const char *name_of(const char *const *names, size_t n, int v)
{
	return v >= 0 && (size_t)v < n - 1 ? names[v] : NULL;
}

#define NAME_OF(names, v) name_of((names), sizeof(names) / sizeof(*(names)), (int)(v))

const char *config_on_conflict_name(enum config_on_conflict v)
{
	return NAME_OF(on_conflict_names, v);
}

const char *config_prop_type_name(enum config_prop_type v)
{
	return NAME_OF(prop_type_names, v);
}

const char *config_subscription_name(enum config_subscription v)
{
	return NAME_OF(subscription_names, v);
}

const char *config_encoding_name(enum config_encoding v)
{
	return NAME_OF(encoding_names, v);
}

const char *config_header_name(enum config_header v)
{
	return NAME_OF(header_names, v);
}

const char *config_invalid_rows_name(enum config_invalid_rows v)
{
	return NAME_OF(invalid_rows_names, v);
}

const char *config_on_duplicate_name(enum config_on_duplicate v)
{
	return NAME_OF(on_duplicate_names, v);
}

const char *config_coalesce_name(enum config_coalesce v)
{
	return NAME_OF(coalesce_names, v);
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

/* ---- values with a grammar of their own: parsers for custom fields ------------------------ */

/* csv.delimiter: '\0' for auto. A TAB may be "\t" (YAML makes it the character itself), '\t'
 * or plain \t (a backslash and a t, which YAML leaves as they are), or the word tab. */
static bool parse_delimiter(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			    void *value)
{
	static const char list[] = "auto, \",\", \";\", \"\\t\", \"|\"";
	char *ret = value, q[80];

	if (n->type != YAML_SCALAR_NODE || yamlconf_is_empty(n)) {
		yamlconf_error(yc, n, path, "must be one of %s, got %s", list,
			       yamlconf_type_name(n));
		return false;
	}
	const char *s = yamlconf_scalar(n);
	size_t len = n->data.scalar.length;
	if (len == 1 && s[0] && strchr(",;\t|", s[0])) {
		*ret = s[0];
		return true;
	}
	if (!yamlconf_has_nul(n)) {
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
		yamlconf_error(
			yc, n, path,
			"must be one of %s, got an empty block scalar (write \"|\" in quotes)",
			list);
		return false;
	}
	yamlconf_error(yc, n, path, "must be one of %s, got '%s'", list, QUOTED(q, s));
	return false;
}

/* VALUE: char[CONFIG_UUID_LEN + 1]. */
static bool parse_uuid(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	char q[80];

	if (n->type != YAML_SCALAR_NODE) {
		yamlconf_error(yc, n, path, "expected a UUID, got %s", yamlconf_type_name(n));
		return false;
	}
	if (yamlconf_has_nul(n) || !config_is_uuid(yamlconf_scalar(n))) {
		yamlconf_error(yc, n, path,
			       "expected a UUID (8-4-4-4-12 hexadecimal digits, as shown in the "
			       "Resend dashboard), got '%s'",
			       QUOTED(q, yamlconf_scalar(n)));
		return false;
	}
	memcpy(value, yamlconf_scalar(n), CONFIG_UUID_LEN + 1);
	return true;
}

/* duplicate_window: a plain or quoted scalar ("30d" is a string to YAML either way). VALUE:
 * uint64_t seconds. */
static bool parse_duration(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	char q[80];

	if (n->type != YAML_SCALAR_NODE || yamlconf_is_empty(n)) {
		yamlconf_error(yc, n, path, "must be " CONFIG_DURATION_EXPECTED ", got %s",
			       yamlconf_type_name(n));
		return false;
	}
	if (yamlconf_has_nul(n) || config_parse_duration(yamlconf_scalar(n), value) < 0) {
		yamlconf_error(yc, n, path, "must be " CONFIG_DURATION_EXPECTED ", got '%s'",
			       QUOTED(q, yamlconf_scalar(n)));
		return false;
	}
	return true;
}

/* ---- checks of a value just stored -------------------------------------------------------- */

static bool check_absolute(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	const char *s = *(char **)value;
	char q[80];

	if (s[0] == '/')
		return true;
	yamlconf_error(yc, n, path, "expected an absolute path, got '%s'", QUOTED(q, s));
	return false;
}

/* ---- api --------------------------------------------------------------------------------- */

/* Where the keys that the checks after the walk need were found with good values. */
struct api_found {
	struct yamlconf_at base_url, key_env, key_file, ca_file;
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

static bool check_env_name(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	const char *s = *(char **)value;
	char q[80];

	if (is_env_name(s))
		return true;
	yamlconf_error(yc, n, path,
		       "expected an environment variable name (letters, digits, underscore), "
		       "got '%s'",
		       QUOTED(q, s));
	return false;
}

static bool check_header_value(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			       void *value)
{
	for (const char *s = *(char **)value; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f) {
			yamlconf_error(yc, n, path,
				       "control characters are not allowed in a header value");
			return false;
		}
	}
	return true;
}

#define API(member) offsetof(struct config_api, member)
#define API_FOUND(member) YAMLCONF_AT(struct api_found, member)
static const struct yamlconf_field api_fields[] = {
	{"base_url", YAMLCONF_STRING, .offset = API(base_url), .at = API_FOUND(base_url)},
	{"api_key_env", YAMLCONF_STRING, .offset = API(api_key_env), .check = check_env_name,
	 .at = API_FOUND(key_env)},
	{"api_key_file", YAMLCONF_STRING, .offset = API(api_key_file), .flags = YAMLCONF_NULL_OK,
	 .check = check_absolute, .at = API_FOUND(key_file)},
	{"user_agent_suffix", YAMLCONF_STRING, .offset = API(user_agent_suffix),
	 .flags = YAMLCONF_NULL_OK | YAMLCONF_EMPTY_OK, .check = check_header_value},
	{"max_in_flight", YAMLCONF_UINT, .offset = API(max_in_flight), .min = 1, .max = 64},
	/* 0: no client-side ceiling (a local sink, a benchmark); the server's rate-limit
	 * headers are still obeyed. */
	{"requests_per_second", YAMLCONF_DOUBLE, .offset = API(requests_per_second), .dmin = 0,
	 .dmax = 1000},
	{"rate_share", YAMLCONF_DOUBLE, .offset = API(rate_share), .dmin = 0.01, .dmax = 1},
	{"connect_timeout_s", YAMLCONF_UINT, .offset = API(connect_timeout_s), .min = 1,
	 .max = 300},
	{"request_timeout_s", YAMLCONF_UINT, .offset = API(request_timeout_s), .min = 1,
	 .max = 86400},
	{"ca_file", YAMLCONF_STRING, .offset = API(ca_file), .flags = YAMLCONF_NULL_OK,
	 .at = API_FOUND(ca_file)},
	{"shutdown_timeout_s", YAMLCONF_UINT, .offset = API(shutdown_timeout_s), .min = 0,
	 .max = 3600},
	{0},
};

static void check_base_url(struct yamlconf *yc, struct config_api *api,
			   const struct yamlconf_at *at)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *query = NULL, *fragment = NULL;
	char q[80];
	const yaml_node_t *n = at->node;
	const char *path = at->path;

	if (!u) {
		yamlconf_error(yc, n, path, "out of memory");
		return;
	}
	CURLUcode rc = curl_url_set(u, CURLUPART_URL, api->base_url, 0);
	if (rc != CURLUE_OK) {
		yamlconf_error(yc, n, path, "'%s' is not a valid URL: %s", QUOTED(q, api->base_url),
			       curl_url_strerror(rc));
		goto out;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (!scheme || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
		yamlconf_error(yc, n, path, "expected an https:// URL, got '%s'",
			       QUOTED(q, api->base_url));
		goto out;
	}
	/* curl reports an empty fragment ("#") as none, but the endpoint appended after it would
	 * become the fragment: "https://host/v1#" + "/contacts/imports" calls https://host/v1. */
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK ||
	    strchr(api->base_url, '#')) {
		yamlconf_error(yc, n, path, "a base URL takes no query or fragment, got '%s'",
			       QUOTED(q, api->base_url));
		goto out;
	}
	if (strcmp(scheme, "http") == 0 && (!host || !host_is_loopback(host))) {
		yamlconf_error(
			yc, n, path,
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
static void load_api_key(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *api_at,
			 const struct api_found *found)
{
	struct config_api *api = &cfg->api;
	struct apikey k = {0};
	char why[1024];
	const struct yamlconf_at *where;
	int r;

	if (found->key_env.node && found->key_file.node) {
		yamlconf_error(yc, found->key_file.node, found->key_file.path,
			       "set either api_key_env or api_key_file, not both (or neither: then "
			       "the key is " APIKEY_DEFAULT_ENV ", else the systemd credential '"
			       APIKEY_CREDENTIAL "', else the key file)");
		return;
	}
	if ((api->api_key_file && !found->key_file.node) ||
	    (api->api_key_env && !found->key_env.node))
		return; /* already reported as invalid */
	/* An invalid name was reported where it is set; looking it up would print it unquoted. */
	if (api->api_key_env && !is_env_name(api->api_key_env))
		return;
	if (api->api_key_file) {
		r = apikey_from_file(api->api_key_file, &k, why, sizeof(why));
		where = &found->key_file;
	} else if (api->api_key_env) {
		r = apikey_from_env(api->api_key_env, &k, why, sizeof(why));
		if (r == -ENOENT)
			snprintf(why, sizeof(why),
				 "no API key: environment variable %s is not set (set it, or set "
				 "api.api_key_file, or neither)",
				 api->api_key_env);
		where = &found->key_env;
	} else {
		r = apikey_default(APIKEY_DEFAULT_FILE, &k, why, sizeof(why));
		where = api_at;
	}
	if (r < 0) {
		yamlconf_error_at(yc, where->node ? where->node->start_mark.line + 1 : 1,
				  where->node ? where->node->start_mark.column + 1 : 1, where->path,
				  "%s", why);
		return;
	}
	cfg->api_key = k.key;
	k.key = NULL;
	snprintf(cfg->api_key_source, sizeof(cfg->api_key_source), "%s", k.source);
	apikey_clear(&k);
}

static void parse_api(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at,
		      unsigned flags)
{
	struct api_found found = {0};
	char q[80];

	if (at->node)
		yamlconf_walk(yc, at->node, at->path, api_fields, &cfg->api, &found);
	if (found.base_url.node)
		check_base_url(yc, &cfg->api, &found.base_url);
	if (found.ca_file.node && access(cfg->api.ca_file, R_OK) != 0)
		yamlconf_error(yc, found.ca_file.node, found.ca_file.path,
			       "cannot read CA file '%s': %s", QUOTED(q, cfg->api.ca_file),
			       strerror(errno));
	if (!(flags & CONFIG_LOAD_NO_API_KEY))
		load_api_key(yc, cfg, at, &found);
}

/* ---- retry ------------------------------------------------------------------------------- */

struct retry_found {
	struct yamlconf_at max_delay;
};

#define RETRY(member) offsetof(struct config_retry, member)
static const struct yamlconf_field retry_fields[] = {
	{"max_attempts", YAMLCONF_UINT, .offset = RETRY(max_attempts), .min = 1, .max = 100},
	{"initial_delay_ms", YAMLCONF_UINT, .offset = RETRY(initial_delay_ms), .min = 1,
	 .max = 3600000},
	{"max_delay_ms", YAMLCONF_UINT, .offset = RETRY(max_delay_ms), .min = 1, .max = 86400000,
	 .at = YAMLCONF_AT(struct retry_found, max_delay)},
	{0},
};

static void parse_retry(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at)
{
	struct retry_found found = {0};

	if (!at->node)
		return;
	yamlconf_walk(yc, at->node, at->path, retry_fields, &cfg->retry, &found);
	if (found.max_delay.node && cfg->retry.max_delay_ms < cfg->retry.initial_delay_ms)
		yamlconf_error(yc, found.max_delay.node, found.max_delay.path,
			       "must be at least initial_delay_ms (%" PRIu64 ")",
			       cfg->retry.initial_delay_ms);
}

/* ---- settings: under `defaults:`, and in each folder --------------------------------------- */

/* A part holds the header and at least some rows; below this, splitting would mostly send
 * headers. Above Resend's own limit (200 MiB) every part would be refused. */
#define CONFIG_UPLOAD_BYTES_MIN UINT64_C(65536)
#define CONFIG_UPLOAD_BYTES_MAX UINT64_C(209715200)

static const struct yamlconf_alias encoding_aliases[] = {
	{"utf8", CONFIG_ENCODING_UTF8},
	{"utf16", CONFIG_ENCODING_UTF16},
	{"cp1252", CONFIG_ENCODING_WINDOWS_1252},
	{"latin1", CONFIG_ENCODING_ISO_8859_1},
	{NULL, 0},
};

/* A folder's settings start as a copy of the defaults, so that its csv: overrides only the
 * keys it names. */
#define CSV(member) offsetof(struct config_csv, member)
static const struct yamlconf_field csv_fields[] = {
	{"delimiter", YAMLCONF_CUSTOM, .offset = CSV(delimiter), .parse = parse_delimiter},
	{"encoding", YAMLCONF_ENUM, .offset = CSV(encoding), .flags = YAMLCONF_ICASE,
	 .names = encoding_names, .aliases = encoding_aliases},
	{"header", YAMLCONF_ENUM, .offset = CSV(header), .names = header_names},
	{0},
};

/* A pattern matches file names. One refused leaves the one before it (the default's). */
static bool parse_pattern(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	char **pattern = value, *p = NULL, q[80];

	if (!yamlconf_get_string(yc, n, path, 0, &p))
		return false;
	if (strchr(p, '/')) {
		yamlconf_error(
			yc, n, path,
			"a pattern matches file names, not paths: '/' is not allowed in '%s'",
			QUOTED(q, p));
		free(p);
		return false;
	}
	free(*pattern);
	*pattern = p;
	return true;
}

#define SET(member) offsetof(struct config_settings, member)
static const struct yamlconf_field settings_fields[] = {
	{"settle_ms", YAMLCONF_UINT, .offset = SET(settle_ms), .min = 0, .max = 3600000},
	{"rescan_s", YAMLCONF_UINT, .offset = SET(rescan_s), .min = 1, .max = 86400},
	{"pattern", YAMLCONF_CUSTOM, .offset = SET(pattern), .parse = parse_pattern},
	{"max_file_bytes", YAMLCONF_UINT, .offset = SET(max_file_bytes), .min = 1,
	 .max = UINT64_C(1) << 40},
	{"on_conflict", YAMLCONF_ENUM, .offset = SET(on_conflict), .names = on_conflict_names},
	{"follow_import", YAMLCONF_BOOL, .offset = SET(follow_import)},
	{"max_upload_bytes", YAMLCONF_UINT, .offset = SET(max_upload_bytes),
	 .min = CONFIG_UPLOAD_BYTES_MIN, .max = CONFIG_UPLOAD_BYTES_MAX},
	{"invalid_rows", YAMLCONF_ENUM, .offset = SET(invalid_rows), .names = invalid_rows_names},
	{"csv", YAMLCONF_MAPPING, .offset = SET(csv), .fields = csv_fields},
	{"on_duplicate", YAMLCONF_ENUM, .offset = SET(on_duplicate), .names = on_duplicate_names},
	{"duplicate_window", YAMLCONF_CUSTOM, .offset = SET(duplicate_window_s),
	 .parse = parse_duration},
	{"coalesce", YAMLCONF_ENUM, .offset = SET(coalesce), .names = coalesce_names},
	{"coalesce_max_files", YAMLCONF_UINT, .offset = SET(coalesce_max_files), .min = 1,
	 .max = 100000},
	{"coalesce_max_rows", YAMLCONF_UINT, .offset = SET(coalesce_max_rows), .min = 1,
	 .max = 100000000},
	{0},
};

/* ---- log, control socket and metrics ------------------------------------------------------- */

static const struct yamlconf_field log_fields[] = {
	{"level", YAMLCONF_ENUM, .offset = offsetof(struct config, log_level),
	 .names = log_level_names},
	{"format", YAMLCONF_ENUM, .offset = offsetof(struct config, log_format),
	 .names = log_format_names},
	{0},
};

static bool check_socket(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	if (!check_absolute(yc, n, path, value))
		return false;
	if (strlen(*(char **)value) < 108) /* sizeof(sun_path) */
		return true;
	yamlconf_error(yc, n, path, "a socket path is at most 107 bytes long");
	return false;
}

static const struct yamlconf_field control_fields[] = {
	{"socket", YAMLCONF_STRING, .offset = offsetof(struct config_control, socket),
	 .check = check_socket},
	{0},
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

/* metrics.listen. VALUE: struct config_metrics (host and port). */
static bool read_listen(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	struct config_metrics *m = value;
	char q[80], *s = NULL;
	bool ok;

	if (!yamlconf_get_string(yc, n, path, 0, &s))
		return false;
	free(m->listen_host);
	m->listen_host = NULL;
	ok = parse_listen(s, &m->listen_host, &m->listen_port);
	if (!ok)
		yamlconf_error(yc, n, path,
			       "expected HOST:PORT (an IPv6 address in brackets), got '%s'",
			       QUOTED(q, s));
	free(s);
	return ok;
}

struct metrics_found {
	struct yamlconf_at listen;
};

static const struct yamlconf_field metrics_fields[] = {
	{"listen", YAMLCONF_CUSTOM, .flags = YAMLCONF_NULL_OK, .parse = read_listen,
	 .at = YAMLCONF_AT(struct metrics_found, listen)},
	{"allow_remote", YAMLCONF_BOOL, .offset = offsetof(struct config_metrics, allow_remote)},
	{0},
};

static void parse_metrics(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at)
{
	struct metrics_found found = {0};
	char q[80];

	if (!at->node)
		return;
	yamlconf_walk(yc, at->node, at->path, metrics_fields, &cfg->metrics, &found);
	if (found.listen.node && !cfg->metrics.allow_remote &&
	    !host_is_loopback(cfg->metrics.listen_host))
		yamlconf_error(
			yc, found.listen.node, found.listen.path,
			"'%s' is not a loopback address: metrics are served to this host only "
			"unless metrics.allow_remote is true",
			QUOTED(q, cfg->metrics.listen_host));
}

/* ---- ledger -------------------------------------------------------------------------------- */

static const char *const ledger_backend_names[] = {
	[CONFIG_LEDGER_SQLITE] = "sqlite",
	[CONFIG_LEDGER_POSTGRESQL] = "postgresql",
	NULL,
};

const char *config_ledger_backend_name(enum config_ledger_backend v)
{
	return (unsigned)v < CONFIG_LEDGER_POSTGRESQL + 1 ? ledger_backend_names[v] : NULL;
}

/* libpq's connection string, as libpq reads it, and without a password: the YAML is no place
 * for one (password_file, or a method without one: peer, certificates). */
static bool check_conninfo(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			   void *value)
{
	const char *s = *(char **)value;
	PQconninfoOption *opts;
	char *err = NULL;
	bool ok = true;

	opts = PQconninfoParse(s, &err);
	if (!opts) {
		char msg[200];
		size_t len;

		snprintf(msg, sizeof(msg), "%s", err ? err : "out of memory");
		len = strlen(msg);
		while (len && msg[len - 1] == '\n')
			msg[--len] = '\0';
		yamlconf_error(yc, n, path, "not a PostgreSQL connection string (libpq: %s)", msg);
		PQfreemem(err);
		return false;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val) {
			yamlconf_error(yc, n, path,
				       "has a password in it: the configuration is no place for "
				       "one; put it in ledger.password_file (libpq's .pgpass "
				       "format), or use a method without one (peer, certificates)");
			ok = false;
		}
	PQconninfoFree(opts);
	return ok;
}

struct ledger_found {
	struct yamlconf_at conninfo, password_file;
};

#define LEDGER(member) offsetof(struct config_ledger, member)
static const struct yamlconf_field ledger_fields[] = {
	{"backend", YAMLCONF_ENUM, .offset = LEDGER(backend), .names = ledger_backend_names},
	{"conninfo", YAMLCONF_STRING, .offset = LEDGER(conninfo), .check = check_conninfo,
	 .at = YAMLCONF_AT(struct ledger_found, conninfo)},
	{"password_file", YAMLCONF_STRING, .offset = LEDGER(password_file),
	 .check = check_absolute, .at = YAMLCONF_AT(struct ledger_found, password_file)},
	{0},
};

static void parse_ledger(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at)
{
	struct ledger_found found = {0};

	if (!at->node)
		return;
	yamlconf_walk(yc, at->node, at->path, ledger_fields, &cfg->ledger, &found);
	if (cfg->ledger.backend == CONFIG_LEDGER_POSTGRESQL && !cfg->ledger.conninfo &&
	    !found.conninfo.node)
		yamlconf_missing(yc, at->node, at->path, "conninfo",
				 "the PostgreSQL backend needs libpq's connection string, as in "
				 "'host=/run/postgresql dbname=resend_dropd'");
	if (cfg->ledger.backend == CONFIG_LEDGER_SQLITE &&
	    (found.conninfo.node || found.password_file.node)) {
		const struct yamlconf_at *f = found.conninfo.node ? &found.conninfo
								  : &found.password_file;

		yamlconf_error(yc, f->node, f->path,
			       "is for the postgresql backend; the sqlite backend keeps its file "
			       "in state_dir (set ledger.backend: postgresql)");
	}
}

/* ---- fleet --------------------------------------------------------------------------------- */

bool config_is_host_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CONFIG_HOST_ID_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
			return false;
	return true;
}

static bool check_host_id(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			  void *value)
{
	char q[80];

	if (config_is_host_id(*(char **)value))
		return true;
	yamlconf_error(yc, n, path,
		       "'%s' is not a host id: 1 to %d letters, digits, '.', '_' or '-' (it names "
		       "the host's processing directory)",
		       QUOTED(q, *(char **)value), CONFIG_HOST_ID_MAX);
	return false;
}

struct fleet_found {
	struct yamlconf_at host_id, heartbeat_s, lease_s;
};

struct fleet_values {
	char *host_id;
	uint64_t heartbeat_s, lease_s;
};

#define FLEET(member) offsetof(struct fleet_values, member)
#define FLEET_AT(member) YAMLCONF_AT(struct fleet_found, member)
static const struct yamlconf_field fleet_fields[] = {
	{"host_id", YAMLCONF_STRING, .offset = FLEET(host_id), .check = check_host_id,
	 .at = FLEET_AT(host_id)},
	{"heartbeat_s", YAMLCONF_UINT, .offset = FLEET(heartbeat_s), .min = 1, .max = 3600,
	 .at = FLEET_AT(heartbeat_s)},
	{"lease_s", YAMLCONF_UINT, .offset = FLEET(lease_s), .min = 2, .max = 86400,
	 .at = FLEET_AT(lease_s)},
	{0},
};

/* fleet: only with the PostgreSQL ledger, which is a fleet of one host or more. */
static void parse_fleet(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at)
{
	struct fleet_values v = {.heartbeat_s = 5, .lease_s = 30};
	struct fleet_found found = {0};
	char host[256];

	if (at->node)
		yamlconf_walk(yc, at->node, at->path, fleet_fields, &v, &found);
	if (cfg->ledger.backend != CONFIG_LEDGER_POSTGRESQL) {
		if (at->node)
			yamlconf_error(yc, at->node, at->path,
				       "a fleet shares the PostgreSQL ledger: set ledger.backend: "
				       "postgresql (with SQLite, one daemon serves a folder)");
		free(v.host_id);
		return;
	}
	if (found.heartbeat_s.node && found.lease_s.node && v.lease_s < 2 * v.heartbeat_s)
		yamlconf_error(yc, found.lease_s.node, found.lease_s.path,
			       "a lease of %" PRIu64 " s would end between two heartbeats %" PRIu64
			       " s apart: make it at least twice heartbeat_s",
			       v.lease_s, v.heartbeat_s);
	if (!v.host_id) {
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		/* The short name: the domain adds nothing between the hosts of one fleet. */
		if (strchr(host, '.') && !isdigit((unsigned char)host[0]))
			*strchr(host, '.') = '\0';
		if (!config_is_host_id(host) && at->node)
			yamlconf_error(yc, at->node, at->path,
				       "this machine's hostname is not a host id: set host_id");
		else if (!config_is_host_id(host))
			yamlconf_error_at(yc, 0, 0, "fleet",
					  "this machine's hostname is not a host id: set "
					  "fleet.host_id");
		v.host_id = strdup(host);
	}
	cfg->fleet.host_id = v.host_id;
	cfg->fleet.heartbeat_ms = v.heartbeat_s * 1000;
	cfg->fleet.lease_ms = v.lease_s * 1000;
}

/* ---- webhooks ------------------------------------------------------------------------------ */

static const char *const event_names[] = {"file.done",	   "file.failed",     "rows.rejected",
					  "folder.stuck",  "api_key.refused", "intake.paused",
					  "intake.resumed", NULL};

const char *config_event_name(enum config_event v)
{
	for (int i = 0; event_names[i]; i++)
		if ((unsigned)v == 1u << i)
			return event_names[i];
	return NULL;
}

bool config_notify_hears_of(const struct config_notify *n, const char *folder)
{
	if (!n->folders)
		return true;
	for (size_t i = 0; i < n->n_folders; i++)
		if (strcmp(n->folders[i], folder) == 0)
			return true;
	return false;
}

bool config_notify_wants(const struct config_notify *n, enum config_event ev,
			 const char *folder)
{
	return (n->events & ev) && config_notify_hears_of(n, folder);
}

static bool event_item(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *items,
		       size_t count)
{
	int *bits = items;
	int i;

	if (!yamlconf_get_enum(yc, n, path, event_names, NULL, 0, &i))
		return false;
	bits[count] = 1 << i;
	return true;
}

/* VALUE: unsigned, the bits. */
static bool parse_events(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	unsigned *events = value;
	void *items;
	size_t count;

	if (!yamlconf_get_list(yc, n, path, "a list of events", sizeof(int), event_item, &items,
			       &count))
		return false;
	*events = 0;
	for (size_t i = 0; i < count; i++)
		*events |= (unsigned)((int *)items)[i];
	free(items);
	if (count == 0 && yamlconf_count(n) == 0) {
		yamlconf_error(yc, n, path, "expected at least one event (file.done, file.failed, "
			       "rows.rejected, folder.stuck, api_key.refused, intake.paused, "
			       "intake.resumed)");
		return false;
	}
	return true;
}

static bool string_item(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			void *items, size_t count)
{
	char **names = items;

	return yamlconf_get_string(yc, n, path, 0, &names[count]);
}

/* What a webhook's or a hook's mapping holds beside its own keys: the receiver (its folders
 * checked against the folders after the walk), and the settings in whole units. */
struct notify_values {
	struct config_notify n;
	const yaml_node_t *folders;
	char folders_path[YAMLCONF_PATH_MAX];
	uint64_t timeout_s, give_up_h, retry_initial_s, retry_max_s;
};

/* VALUE: struct notify_values. */
static bool parse_notify_folders(struct yamlconf *yc, const yaml_node_t *n, const char *path,
				 void *value)
{
	struct notify_values *v = value;
	void *items;

	if (!yamlconf_get_list(yc, n, path, "a list of folder names", sizeof(char *), string_item,
			       &items, &v->n.n_folders))
		return false;
	v->n.folders = items;
	v->folders = n;
	snprintf(v->folders_path, sizeof(v->folders_path), "%s", path);
	return true;
}

static bool check_notify_name(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			      void *value)
{
	char q[80];

	if (config_is_host_id(*(char **)value))
		return true;
	yamlconf_error(yc, n, path, "'%s' is not a name: 1 to %d letters, digits, '.', '_' or '-'",
		       QUOTED(q, *(char **)value), CONFIG_WEBHOOK_NAME_MAX);
	return false;
}

#define NOTIFY(member) offsetof(struct notify_values, member)
static const struct yamlconf_field notify_fields[] = {
	{"name", YAMLCONF_STRING, .offset = NOTIFY(n.name), .flags = YAMLCONF_REQUIRED,
	 .check = check_notify_name},
	{"events", YAMLCONF_CUSTOM, .offset = NOTIFY(n.events), .parse = parse_events},
	{"folders", YAMLCONF_CUSTOM, .offset = 0, .parse = parse_notify_folders},
	{"timeout_s", YAMLCONF_UINT, .offset = NOTIFY(timeout_s), .min = 1, .max = 3600},
	{"give_up_after_h", YAMLCONF_UINT, .offset = NOTIFY(give_up_h), .min = 1, .max = 24 * 30},
	{"retry_initial_s", YAMLCONF_UINT, .offset = NOTIFY(retry_initial_s), .min = 1,
	 .max = 3600},
	{"retry_max_s", YAMLCONF_UINT, .offset = NOTIFY(retry_max_s), .min = 1, .max = 86400},
	{0},
};

static void notify_values_init(struct notify_values *v, uint64_t timeout_s)
{
	*v = (struct notify_values){.n.events = CONFIG_EVENT_ALL, .timeout_s = timeout_s,
				    .give_up_h = 72, .retry_initial_s = 5, .retry_max_s = 3600};
}

static void notify_clear(struct config_notify *n)
{
	free(n->name);
	for (size_t i = 0; i < n->n_folders; i++)
		free(n->folders[i]);
	free(n->folders);
	memset(n, 0, sizeof(*n));
}

/* After the walk: the folders exist, the name is not another's of KIND (NAMES, N_NAMES apart),
 * the times in ms. False when something was said. */
static bool notify_finish(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			  const struct config *cfg, struct notify_values *v, const char *kind,
			  const struct config_notify *others, size_t stride, size_t n_others)
{
	bool ok = true;

	for (size_t i = 0; ok && i < n_others; i++) {
		const struct config_notify *o =
			(const struct config_notify *)((const char *)others + i * stride);

		if (strcmp(o->name, v->n.name) == 0) {
			yamlconf_error(yc, n, path, "a second %s named '%s': a name is its queue's, "
				       "one each", kind, v->n.name);
			ok = false;
		}
	}
	for (size_t j = 0; ok && j < v->n.n_folders; j++) {
		size_t k = 0;

		while (k < cfg->n_folders && strcmp(cfg->folders[k].name, v->n.folders[j]) != 0)
			k++;
		if (k == cfg->n_folders) {
			yamlconf_error(yc, yamlconf_item(yc, v->folders, j), v->folders_path,
				       "no folder is named '%s'", v->n.folders[j]);
			ok = false;
		}
	}
	v->n.timeout_ms = v->timeout_s * 1000;
	v->n.give_up_ms = v->give_up_h * 3600 * 1000;
	v->n.retry_first_ms = v->retry_initial_s * 1000;
	v->n.retry_max_ms = (v->retry_max_s < v->retry_initial_s ? v->retry_initial_s
								 : v->retry_max_s) * 1000;
	return ok;
}

/* ---- webhooks ---- */

struct webhook_values {
	struct notify_values v; /* first: the included table's offsets are from here */
	char *url, *secret_file, *secret_credential;
};

static bool check_webhook_url(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			      void *value)
{
	const char *url = *(char **)value;
	char q[80];

	if (strncmp(url, "https://", 8) == 0 ||
	    (strncmp(url, "http://", 7) == 0 && config_url_host_is_loopback(url)))
		return true;
	yamlconf_error(yc, n, path, "expected an https:// URL (plain http:// only to a loopback "
		       "host such as 127.0.0.1), got '%s'", QUOTED(q, url));
	return false;
}

void config_webhook_clear(struct config_webhook *w)
{
	notify_clear(&w->n);
	free(w->url);
	free(w->secret_file);
	free(w->secret_credential);
	if (w->secret) {
		explicit_bzero(w->secret, w->secret_len);
		free(w->secret);
	}
	memset(w, 0, sizeof(*w));
}

struct webhook_found {
	struct yamlconf_at url, secret_file, secret_credential;
};

#define WEBHOOK(member) offsetof(struct webhook_values, member)
#define WEBHOOK_AT(member) YAMLCONF_AT(struct webhook_found, member)
static const struct yamlconf_field webhook_fields[] = {
	{"url", YAMLCONF_STRING, .offset = WEBHOOK(url), .flags = YAMLCONF_REQUIRED,
	 .check = check_webhook_url, .at = WEBHOOK_AT(url)},
	{"secret_file", YAMLCONF_STRING, .offset = WEBHOOK(secret_file), .check = check_absolute,
	 .at = WEBHOOK_AT(secret_file)},
	{"secret_credential", YAMLCONF_STRING, .offset = WEBHOOK(secret_credential),
	 .at = WEBHOOK_AT(secret_credential)},
	{.type = YAMLCONF_INCLUDE, .offset = 0, .fields = notify_fields},
	{0},
};

/* The secret, read now: --check says what is wrong with it, and a reload reads it again. */
static void webhook_read_secret(struct yamlconf *yc, const yaml_node_t *n, const char *path,
				struct webhook_values *v, struct config_webhook *w,
				const struct webhook_found *found)
{
	const struct yamlconf_at *at = found->secret_file.node ? &found->secret_file
							      : &found->secret_credential;
	char file[PATH_MAX], why[400], why2[400];
	struct apikey k = {0};
	const char *dir;
	int r;

	if (!!v->secret_file == !!v->secret_credential) {
		yamlconf_error(yc, n, path, "set one of secret_file or secret_credential (a "
			       "systemd credential): the secret that signs its requests");
		return;
	}
	if (v->secret_file) {
		snprintf(file, sizeof(file), "%s", v->secret_file);
	} else {
		dir = getenv("CREDENTIALS_DIRECTORY");
		if (!dir || !*dir) {
			yamlconf_error(yc, at->node, at->path, "there is no systemd credential "
				       "here ($CREDENTIALS_DIRECTORY is not set): run it under "
				       "systemd with LoadCredential=%s:..., or use secret_file",
				       v->secret_credential);
			return;
		}
		snprintf(file, sizeof(file), "%s/%s", dir, v->secret_credential);
	}
	r = apikey_from_file(file, &k, why, sizeof(why));
	if (r == 0)
		r = webhook_secret_decode(k.key, &w->secret, &w->secret_len, why2, sizeof(why2));
	else
		snprintf(why2, sizeof(why2), "%s", why);
	apikey_clear(&k);
	if (r < 0)
		yamlconf_error(yc, at->node, at->path, "the secret in '%s' %s", file,
			       r == -EINVAL ? why2 : strerror(-r));
}

/* Webhook N at PATH into CFG->webhooks[CFG->n_webhooks] (counted when good); the folders
 * are parsed already. */
static void webhook_item(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			 struct config *cfg)
{
	struct webhook_values v = {0};
	struct webhook_found found = {0};
	struct config_webhook w = {0};
	size_t errors = yamlconf_error_count(yc);

	if (!yamlconf_expect(yc, n, path, YAML_MAPPING_NODE, "a mapping {name, url, secret_file}"))
		return;
	notify_values_init(&v.v, 15);
	if (yamlconf_walk(yc, n, path, webhook_fields, &v, &found))
		webhook_read_secret(yc, n, path, &v, &w, &found);
	if (yamlconf_error_count(yc) == errors)
		notify_finish(yc, n, path, cfg, &v.v, "webhook", &cfg->webhooks[0].n,
			      sizeof(struct config_webhook), cfg->n_webhooks);
	w.n = v.v.n;
	w.url = v.url;
	w.secret_file = v.secret_file;
	w.secret_credential = v.secret_credential;
	if (yamlconf_error_count(yc) != errors) {
		config_webhook_clear(&w);
		return;
	}
	cfg->webhooks[cfg->n_webhooks++] = w;
}

/* ---- hooks ---- */

struct hook_values {
	struct notify_values v;
	char **argv;
	size_t argc;
	char *user;
};

/* VALUE: struct hook_values. */
static bool parse_command(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			  void *value)
{
	struct hook_values *h = value;
	void *items;
	char q[80];

	if (!yamlconf_get_list(yc, n, path, "a list: the program and its arguments (no shell)",
			       sizeof(char *), string_item, &items, &h->argc))
		return false;
	h->argv = realloc(items, (h->argc + 1) * sizeof(char *));
	if (!h->argv) {
		h->argv = items;
		yamlconf_error(yc, n, path, "out of memory");
		return false;
	}
	h->argv[h->argc] = NULL;
	if (h->argc == 0 || h->argv[0][0] != '/') {
		yamlconf_error(yc, n, path, "expected the program's absolute path first, got '%s'",
			       QUOTED(q, h->argc ? h->argv[0] : ""));
		return false;
	}
	return true;
}

void config_hook_clear(struct config_hook *h)
{
	notify_clear(&h->n);
	for (size_t i = 0; i < h->argc; i++)
		free(h->argv[i]);
	free(h->argv);
	free(h->user);
	memset(h, 0, sizeof(*h));
}

#define HOOK(member) offsetof(struct hook_values, member)
static const struct yamlconf_field hook_fields[] = {
	{"command", YAMLCONF_CUSTOM, .offset = 0, .flags = YAMLCONF_REQUIRED,
	 .parse = parse_command},
	{"user", YAMLCONF_STRING, .offset = HOOK(user)},
	{.type = YAMLCONF_INCLUDE, .offset = 0, .fields = notify_fields},
	{0},
};

static bool receipts_id(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			const char *s, bool group, unsigned *ret);

static void hook_item(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		      struct config *cfg)
{
	struct hook_values v = {0};
	struct config_hook h = {.uid = (uid_t)-1, .gid = (gid_t)-1};
	size_t errors = yamlconf_error_count(yc);
	unsigned id;

	if (!yamlconf_expect(yc, n, path, YAML_MAPPING_NODE, "a mapping {name, command}"))
		return;
	notify_values_init(&v.v, 30);
	if (yamlconf_walk(yc, n, path, hook_fields, &v, NULL) && v.user) {
		if (receipts_id(yc, n, path, v.user, false, &id)) {
			struct passwd *pw = getpwuid(id);

			h.uid = id;
			h.gid = pw ? pw->pw_gid : id;
		}
	}
	if (yamlconf_error_count(yc) == errors)
		notify_finish(yc, n, path, cfg, &v.v, "hook", &cfg->hooks[0].n,
			      sizeof(struct config_hook), cfg->n_hooks);
	h.n = v.v.n;
	h.argv = v.argv;
	h.argc = v.argc;
	h.user = v.user;
	if (yamlconf_error_count(yc) != errors) {
		config_hook_clear(&h);
		return;
	}
	cfg->hooks[cfg->n_hooks++] = h;
}

/* ---- e-mails ---- */

struct email_values {
	struct notify_values v;
	char *from, *digest;
	char **to;
	size_t n_to;
};

static bool check_email_address(struct yamlconf *yc, const yaml_node_t *n, const char *path,
				const char *s)
{
	const char *a, *why = "expected 'name@example.com' or 'Name <name@example.com>'";
	char q[80];
	size_t len;

	if (address_in_mailbox(s, &a, &len) && !(why = address_problem(a, len)))
		return true;
	yamlconf_error(yc, n, path, "'%s' is not an e-mail address: %s", QUOTED(q, s), why);
	return false;
}

static bool check_email_from(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			     void *value)
{
	return check_email_address(yc, n, path, *(char **)value);
}

static bool email_to_item(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			  void *items, size_t count)
{
	char **to = items;

	return yamlconf_get_string(yc, n, path, 0, &to[count]) &&
	       check_email_address(yc, n, path, to[count]);
}

/* VALUE: struct email_values. One address, or a list of 1 to CONFIG_EMAIL_TO_MAX. */
static bool parse_email_to(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			   void *value)
{
	struct email_values *m = value;
	void *items;

	if (n->type == YAML_SCALAR_NODE) {
		m->to = calloc(1, sizeof(char *));
		if (!m->to || !email_to_item(yc, n, path, m->to, 0))
			return false;
		m->n_to = 1;
		return true;
	}
	if (!yamlconf_get_list(yc, n, path, "an address or a list of addresses", sizeof(char *),
			       email_to_item, &items, &m->n_to))
		return false;
	m->to = items;
	if (m->n_to == 0 || m->n_to > CONFIG_EMAIL_TO_MAX) {
		yamlconf_error(yc, n, path, "expected 1 to %d addresses (Resend's limit), got %zu",
			       CONFIG_EMAIL_TO_MAX, m->n_to);
		return false;
	}
	return true;
}

/* "HH:MM" (local time) into minutes after midnight, or "off"/"false"/"no": -1. */
static bool email_digest_minute(struct yamlconf *yc, const yaml_node_t *n, const char *path,
				const char *s, int *ret)
{
	unsigned h, m;
	char q[80], end;

	if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0 || strcmp(s, "no") == 0) {
		*ret = -1;
		return true;
	}
	if (strlen(s) == 5 && sscanf(s, "%2u:%2u%c", &h, &m, &end) == 2 && h < 24 && m < 60 &&
	    s[2] == ':') {
		*ret = (int)(h * 60 + m);
		return true;
	}
	yamlconf_error(yc, n, path, "expected the daily digest's local time as HH:MM (\"08:00\"), "
		       "or off, got '%s'", QUOTED(q, s));
	return false;
}

void config_email_clear(struct config_email *m)
{
	notify_clear(&m->n);
	free(m->from);
	for (size_t i = 0; i < m->n_to; i++)
		free(m->to[i]);
	free(m->to);
	memset(m, 0, sizeof(*m));
}

struct email_found {
	struct yamlconf_at digest;
};

#define EMAIL(member) offsetof(struct email_values, member)
static const struct yamlconf_field email_fields[] = {
	{"from", YAMLCONF_STRING, .offset = EMAIL(from), .flags = YAMLCONF_REQUIRED,
	 .check = check_email_from},
	{"to", YAMLCONF_CUSTOM, .offset = 0, .flags = YAMLCONF_REQUIRED, .parse = parse_email_to},
	{"digest", YAMLCONF_STRING, .offset = EMAIL(digest),
	 .at = YAMLCONF_AT(struct email_found, digest)},
	{.type = YAMLCONF_INCLUDE, .offset = 0, .fields = notify_fields},
	{0},
};

static void email_item(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		       struct config *cfg)
{
	struct email_values v = {0};
	struct email_found found = {0};
	struct config_email m = {.digest_minute = 8 * 60};
	size_t errors = yamlconf_error_count(yc);

	if (!yamlconf_expect(yc, n, path, YAML_MAPPING_NODE, "a mapping {name, from, to}"))
		return;
	notify_values_init(&v.v, 15);
	v.v.n.events = CONFIG_EMAIL_EVENTS_DEFAULT;
	if (yamlconf_walk(yc, n, path, email_fields, &v, &found) && v.digest)
		email_digest_minute(yc, found.digest.node, found.digest.path, v.digest,
				    &m.digest_minute);
	if (yamlconf_error_count(yc) == errors)
		notify_finish(yc, n, path, cfg, &v.v, "e-mail receiver", &cfg->emails[0].n,
			      sizeof(struct config_email), cfg->n_emails);
	m.n = v.v.n;
	m.from = v.from;
	m.to = v.to;
	m.n_to = v.n_to;
	free(v.digest);
	if (yamlconf_error_count(yc) != errors) {
		config_email_clear(&m);
		return;
	}
	cfg->emails[cfg->n_emails++] = m;
}

/* A list of SIZE-byte receivers at AT, each read by ITEM into *RET (counted in *RET_N). */
static void parse_receivers(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at,
			    const char *what, size_t size, void **ret,
			    void (*item)(struct yamlconf *, const yaml_node_t *, const char *,
					 struct config *))
{
	char ipath[YAMLCONF_PATH_MAX + 24];
	size_t count;

	if (!at->node || yamlconf_is_null(at->node) ||
	    !yamlconf_expect(yc, at->node, at->path, YAML_SEQUENCE_NODE, what))
		return;
	count = yamlconf_count(at->node);
	if (count == 0)
		return;
	*ret = calloc(count, size);
	if (!*ret) {
		yamlconf_error(yc, at->node, at->path, "out of memory");
		return;
	}
	for (size_t i = 0; i < count; i++) {
		snprintf(ipath, sizeof(ipath), "%s[%zu]", at->path, i);
		item(yc, yamlconf_item(yc, at->node, i), ipath, cfg);
	}
}

/* ---- receipts ------------------------------------------------------------------------------ */

struct receipts_values {
	char *dir, *owner, *group, *mode;
	uint64_t keep_days;
};

#define RECEIPTS(member) offsetof(struct receipts_values, member)
static const struct yamlconf_field receipts_fields[] = {
	{"dir", YAMLCONF_STRING, .offset = RECEIPTS(dir), .flags = YAMLCONF_REQUIRED,
	 .check = check_absolute},
	{"owner", YAMLCONF_STRING, .offset = RECEIPTS(owner)},
	{"group", YAMLCONF_STRING, .offset = RECEIPTS(group)},
	{"mode", YAMLCONF_STRING, .offset = RECEIPTS(mode)},
	{"keep_days", YAMLCONF_UINT, .offset = RECEIPTS(keep_days), .max = 36500},
	{0},
};

/* A user or group by name or number: 0 with *RET, or false having said why. */
static bool receipts_id(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			const char *s, bool group, unsigned *ret)
{
	char *end, q[80];
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s && !*end && errno == 0 && v < UINT32_MAX) {
		*ret = (unsigned)v;
		return true;
	}
	if (group) {
		struct group *g = getgrnam(s);

		if (g) {
			*ret = g->gr_gid;
			return true;
		}
	} else {
		struct passwd *p = getpwnam(s);

		if (p) {
			*ret = p->pw_uid;
			return true;
		}
	}
	yamlconf_error(yc, n, path, "no %s '%s' on this system", group ? "group" : "user",
		       QUOTED(q, s));
	return false;
}

/* VALUE: struct config_receipts. */
static bool parse_receipts(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			   void *value)
{
	struct config_receipts *r = value;
	struct receipts_values v = {.keep_days = 30};
	unsigned id;
	char *end;
	bool ok;

	ok = yamlconf_walk(yc, n, path, receipts_fields, &v, NULL);
	free(r->dir);
	*r = (struct config_receipts){.dir = v.dir, .uid = (uid_t)-1, .gid = (gid_t)-1,
				      .mode = 0640, .keep_ms = v.keep_days * 86400 * 1000};
	if (ok && v.owner && receipts_id(yc, n, path, v.owner, false, &id))
		r->uid = id;
	else if (v.owner)
		ok = false;
	if (ok && v.group && receipts_id(yc, n, path, v.group, true, &id))
		r->gid = id;
	else if (v.group)
		ok = false;
	if (v.mode) {
		unsigned long m = strtoul(v.mode, &end, 8);

		if (!v.mode[0] || *end || m > 0777 || (m & 0022)) {
			yamlconf_error(yc, n, path, "mode: expected octal permissions such as "
				       "\"0640\" that no group or other may write, got '%s'",
				       v.mode);
			ok = false;
		} else {
			r->mode = (mode_t)m;
		}
	}
	free(v.owner);
	free(v.group);
	free(v.mode);
	return ok;
}

/* ---- folders ------------------------------------------------------------------------------- */

#define PROPERTY(member) offsetof(struct config_property, member)
static const struct yamlconf_field property_fields[] = {
	{"column", YAMLCONF_STRING, .offset = PROPERTY(column), .flags = YAMLCONF_REQUIRED_QUIET},
	{"type", YAMLCONF_ENUM, .offset = PROPERTY(type), .names = prop_type_names},
	{0},
};

/* column_map.properties: keys of the user's choosing. VALUE: struct config_column_map. */
static bool parse_properties(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			     void *value)
{
	struct config_column_map *m = value;
	char q[80], ppath[YAMLCONF_PATH_MAX];
	size_t count;

	if (!yamlconf_expect(yc, n, path, YAML_MAPPING_NODE, "a mapping"))
		return false;
	count = yamlconf_count(n);
	m->properties = calloc(count ? count : 1, sizeof(*m->properties));
	if (!m->properties) {
		yamlconf_error(yc, n, path, "out of memory");
		return false;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *k = yamlconf_pair_key(yc, n, i);
		const yaml_node_t *v = yamlconf_pair_value(yc, n, i);
		if (!yamlconf_expect(yc, k, path, YAML_SCALAR_NODE, "a property key"))
			continue;
		const char *key = yamlconf_scalar(k);
		snprintf(ppath, sizeof(ppath), "%s.%s", path, QUOTED(q, key));
		if (yamlconf_has_nul(k) || !config_is_property_key(key)) {
			yamlconf_error(
				yc, k, ppath,
				"invalid property key '%s': use letters, digits and underscore, "
				"at most %d characters",
				QUOTED(q, key), CONFIG_PROPERTY_KEY_MAX);
			continue;
		}
		bool dup = false;
		for (size_t j = 0; j < m->n_properties; j++)
			dup |= strcmp(m->properties[j].key, key) == 0;
		if (dup) {
			yamlconf_error(yc, k, ppath, "duplicate property key");
			continue;
		}
		struct config_property *p = &m->properties[m->n_properties];
		p->type = CONFIG_PROP_STRING;
		yamlconf_walk(yc, v, ppath, property_fields, p, NULL);
		if (!p->column)
			continue; /* said why */
		p->key = strdup(key);
		m->n_properties++;
	}
	return true;
}

static bool mark_present(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	(void)yc;
	(void)n;
	(void)path;
	((struct config_column_map *)value)->present = true;
	return true;
}

#define COLUMN(member) offsetof(struct config_column_map, member)
static const struct yamlconf_field column_map_fields[] = {
	{"email", YAMLCONF_STRING, .offset = COLUMN(email), .flags = YAMLCONF_REQUIRED_QUIET,
	 .missing = "name the CSV column that holds the email address"},
	{"first_name", YAMLCONF_STRING, .offset = COLUMN(first_name)},
	{"last_name", YAMLCONF_STRING, .offset = COLUMN(last_name)},
	{"unsubscribed", YAMLCONF_STRING, .offset = COLUMN(unsubscribed)},
	/* the whole column_map: properties and n_properties */
	{"properties", YAMLCONF_CUSTOM, .parse = parse_properties},
	{0},
};

static const struct yamlconf_field segment_fields[] = {
	{"id", YAMLCONF_CUSTOM, .flags = YAMLCONF_REQUIRED_QUIET, .parse = parse_uuid},
	{0},
};

/* A segment is an id, or a mapping {id: ...}. */
static bool segment_item(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *items,
			 size_t count)
{
	char(*segments)[CONFIG_UUID_LEN + 1] = items;
	char id[CONFIG_UUID_LEN + 1] = "";

	if (n->type == YAML_MAPPING_NODE) {
		yamlconf_walk(yc, n, path, segment_fields, id, NULL);
		if (!id[0])
			return false;
	} else if (!parse_uuid(yc, n, path, id)) {
		return false;
	}
	for (size_t j = 0; j < count; j++) {
		if (strcasecmp(segments[j], id) == 0) {
			yamlconf_error(yc, n, path, "segment %s is listed twice", id);
			return false;
		}
	}
	memcpy(segments[count], id, sizeof(id));
	return true;
}

/* VALUE: the folder (segments and n_segments). */
static bool parse_segments(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	struct config_folder *f = value;
	void *items;

	if (!yamlconf_get_list(yc, n, path, "a list of segment ids", sizeof(*f->segments),
			       segment_item, &items, &f->n_segments))
		return false;
	f->segments = items;
	return true;
}

#define TOPIC(member) offsetof(struct config_topic, member)
static const struct yamlconf_field topic_fields[] = {
	{"id", YAMLCONF_CUSTOM, .offset = TOPIC(id), .flags = YAMLCONF_REQUIRED_QUIET,
	 .parse = parse_uuid},
	{"subscription", YAMLCONF_ENUM, .offset = TOPIC(subscription),
	 .flags = YAMLCONF_REQUIRED_QUIET, .names = subscription_names},
	{0},
};

static bool topic_item(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *items,
		       size_t count)
{
	struct config_topic *topics = items, t = {0};

	if (!yamlconf_expect(yc, n, path, YAML_MAPPING_NODE,
			     "a mapping {id: <uuid>, subscription: opt_in|opt_out}") ||
	    !yamlconf_walk(yc, n, path, topic_fields, &t, NULL))
		return false;
	for (size_t j = 0; j < count; j++) {
		if (strcasecmp(topics[j].id, t.id) == 0) {
			yamlconf_error(yc, n, path, "topic %s is listed twice", t.id);
			return false;
		}
	}
	topics[count] = t;
	return true;
}

/* VALUE: the folder (topics and n_topics). */
static bool parse_topics(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	struct config_folder *f = value;
	void *items;

	if (!yamlconf_get_list(yc, n, path, "a list of {id, subscription} mappings",
			       sizeof(*f->topics), topic_item, &items, &f->n_topics))
		return false;
	f->topics = items;
	return true;
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

static bool check_folder_name(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			      void *value)
{
	const char *name = *(char **)value;
	char q[80];

	if (is_folder_name(name))
		return true;
	yamlconf_error(
		yc, n, path,
		"invalid folder name '%s': use letters, digits, '_', '.' and '-' (at most 64, "
		"not starting with '.' or '-')",
		QUOTED(q, name));
	return false;
}

/* inbox, done and failed, where found good, for the directory checks. */
struct folder_found {
	struct yamlconf_at dirs[3];
};

#define FOLDER(member) offsetof(struct config_folder, member)
#define FOLDER_DIR(i) YAMLCONF_AT(struct folder_found, dirs[i])
static const struct yamlconf_field folder_fields[] = {
	{"name", YAMLCONF_STRING, .offset = FOLDER(name), .flags = YAMLCONF_REQUIRED,
	 .check = check_folder_name},
	{"inbox", YAMLCONF_STRING, .offset = FOLDER(inbox), .flags = YAMLCONF_REQUIRED,
	 .at = FOLDER_DIR(0)},
	{"done", YAMLCONF_STRING, .offset = FOLDER(done), .flags = YAMLCONF_REQUIRED,
	 .at = FOLDER_DIR(1)},
	{"failed", YAMLCONF_STRING, .offset = FOLDER(failed), .flags = YAMLCONF_REQUIRED,
	 .at = FOLDER_DIR(2)},
	{"column_map", YAMLCONF_MAPPING, .offset = FOLDER(column_map), .fields = column_map_fields,
	 .check = mark_present},
	/* the whole folder: segments and n_segments, topics and n_topics */
	{"segments", YAMLCONF_CUSTOM, .parse = parse_segments},
	{"topics", YAMLCONF_CUSTOM, .parse = parse_topics},
	{"receipts", YAMLCONF_CUSTOM, .offset = FOLDER(receipts), .parse = parse_receipts},
	/* the settings of defaults:, each of which a folder may override */
	{.type = YAMLCONF_INCLUDE, .offset = FOLDER(settings), .fields = settings_fields},
	{0},
};

/* A folder directory that passed its own checks, for the cross-folder checks. */
struct dir_ref {
	const char *path;
	const yaml_node_t *node;
	char key[128];
	bool exists;
	struct stat st;
};

static bool dir_check(struct yamlconf *yc, unsigned flags, const yaml_node_t *n,
		      const char *keypath, const char *path, struct dir_ref *ret)
{
	char q[200];

	if (path[0] != '/') {
		yamlconf_error(yc, n, keypath, "expected an absolute path, got '%s'",
			       QUOTED(q, path));
		return false;
	}
	memset(ret, 0, sizeof(*ret));
	ret->path = path;
	ret->node = n;
	snprintf(ret->key, sizeof(ret->key), "%s", keypath);
	/* The rule the daemon applies when it opens the folder (fsops_path_dir). */
	int r = fsops_path_dir(AT_FDCWD, path, &ret->st);
	if (r == -ENOTDIR) {
		yamlconf_error(yc, n, keypath, "'%s' is not a directory", QUOTED(q, path));
		return false;
	}
	if (r < 0 && r != -ELOOP) {
		/* Not there yet (a share mounted later, say): the daemon says so when it sets the
		 * folder up, and waits for it, serving the others. */
		if (flags & CONFIG_LOAD_DIRS_LATER)
			return false;
		if (r == -ENOENT)
			yamlconf_error(
				yc, n, keypath,
				"directory '%s' does not exist (create it, or correct the path)",
				QUOTED(q, path));
		else
			yamlconf_error(yc, n, keypath, "cannot access '%s': %s", QUOTED(q, path),
				       strerror(-r));
		return false;
	}
	/* The daemon opens its folders without following a link (one swapped in later could
	 * send files anywhere); say so now rather than at the start. */
	if (r == -ELOOP) {
		char *real = realpath(path, NULL);
		char q2[200];
		struct stat rst;

		/* Named as the directory to use only when it is one. */
		if (real && (stat(real, &rst) != 0 || !S_ISDIR(rst.st_mode))) {
			free(real);
			real = NULL;
		}
		yamlconf_error(
			yc, n, keypath,
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

static void parse_folder(struct yamlconf *yc, unsigned flags, struct config *cfg,
			 const yaml_node_t *n, const char *path, size_t index,
			 struct dir_ref refs[3])
{
	struct config_folder *f = &cfg->folders[index];
	struct folder_found found = {0};
	char q[200];

	f->settings = cfg->defaults;
	f->settings.pattern = strdup(cfg->defaults.pattern);
	yamlconf_walk(yc, n, path, folder_fields, f, &found);

	const char *dp[3] = {f->inbox, f->done, f->failed};
	for (size_t i = 0; i < 3; i++) {
		if (found.dirs[i].node)
			dir_check(yc, flags, found.dirs[i].node, found.dirs[i].path, dp[i],
				  &refs[i]);
	}
	for (size_t i = 1; i < 3; i++) {
		if (!refs[0].exists || !refs[i].exists)
			continue;
		if (same_dir(&refs[0], &refs[i])) {
			yamlconf_error(
				yc, refs[i].node, refs[i].key,
				"is the same directory as the inbox: finished files would be "
				"picked up again");
		} else if (refs[0].st.st_dev != refs[i].st.st_dev) {
			yamlconf_error(
				yc, refs[i].node, refs[i].key,
				"is on another filesystem than the inbox '%s': files are moved by "
				"rename, which cannot cross filesystems",
				QUOTED(q, f->inbox));
		}
	}
	if (refs[1].exists && refs[2].exists && same_dir(&refs[1], &refs[2]))
		yamlconf_error(yc, refs[2].node, refs[2].key,
			       "is the same directory as done: success and failure would be "
			       "indistinguishable");
}

/* The ledger's directory must be nobody's inbox, done or failed: its files would be claimed
 * (pattern: "*") or reported as if they were finished exports. A state_dir that does not
 * exist yet is fine: systemd's StateDirectory= or the daemon creates it. */
static void check_state_dir(struct yamlconf *yc, const struct config *cfg,
			    const struct yamlconf_at *state, struct dir_ref (*refs)[3],
			    size_t count)
{
	struct dir_ref sd = {0};
	char q[200];

	if (!state || stat(cfg->state_dir, &sd.st) != 0 || !S_ISDIR(sd.st.st_mode))
		return;
	for (size_t i = 0; i < count; i++) {
		for (size_t k = 0; k < 3; k++) {
			if (!refs[i][k].exists || !same_dir(&sd, &refs[i][k]))
				continue;
			yamlconf_error(
				yc, state->node, state->path,
				"'%s' is also used by %s: the ledger needs a directory of its own",
				QUOTED(q, cfg->state_dir), refs[i][k].key);
		}
	}
}

/* STATE: where state_dir is, when it is good. */
static void parse_folders(struct yamlconf *yc, unsigned flags, struct config *cfg,
			  const struct yamlconf_at *at, const struct yamlconf_at *state)
{
	const yaml_node_t *n = at->node;
	char fpath[YAMLCONF_PATH_MAX + 24];

	if (!yamlconf_expect(yc, n, at->path, YAML_SEQUENCE_NODE, "a list of folders"))
		return;
	size_t count = yamlconf_count(n);
	if (count == 0) {
		yamlconf_error(yc, n, at->path, "expected at least one folder");
		return;
	}
	if (count > CONFIG_MAX_FOLDERS) {
		yamlconf_error(yc, n, at->path, "%zu folders is more than the limit of %d", count,
			       CONFIG_MAX_FOLDERS);
		return;
	}
	cfg->folders = calloc(count, sizeof(*cfg->folders));
	struct dir_ref(*refs)[3] = calloc(count, sizeof(*refs));
	if (!cfg->folders || !refs) {
		free(refs);
		yamlconf_error(yc, n, at->path, "out of memory");
		return;
	}
	cfg->n_folders = count;
	for (size_t i = 0; i < count; i++) {
		snprintf(fpath, sizeof(fpath), "%s[%zu]", at->path, i);
		parse_folder(yc, flags, cfg, yamlconf_item(yc, n, i), fpath, i, refs[i]);
	}

	/* A processing directory is the daemon's alone: no folder's inbox, done or failed may be
	 * one (a file finished there would be resumed, or claimed twice). Only one that exists can
	 * be compared; a configured directory that does not exist is an error already. */
	for (size_t i = 0; i < count; i++) {
		struct dir_ref proc = {0};
		char path[PATH_MAX];

		if (!refs[i][0].exists ||
		    snprintf(path, sizeof(path), "%s/" FSOPS_PROCESSING_DIR, refs[i][0].path) >=
			    (int)sizeof(path) ||
		    fsops_path_dir(AT_FDCWD, path, &proc.st) < 0)
			continue;
		for (size_t j = 0; j < count; j++) {
			for (size_t k = 0; k < 3; k++) {
				if (!refs[j][k].exists || !same_dir(&proc, &refs[j][k]))
					continue;
				char q[200];
				yamlconf_error(
					yc, refs[j][k].node, refs[j][k].key,
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
				char q[80];
				yamlconf_error(yc, yamlconf_item(yc, n, i), at->path,
					       "folder name '%s' is used twice (also %s[%zu])",
					       QUOTED(q, a), at->path, j);
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
					yamlconf_error(yc, refs[i][k].node, refs[i][k].key,
						       "'%s' is also used by %s: each folder "
						       "needs its own directories",
						       QUOTED(q, refs[i][k].path), refs[j][l].key);
				}
			}
		}
	}
	check_state_dir(yc, cfg, state, refs, count);
	free(refs);
}

/* ---- top level ------------------------------------------------------------------------- */

/* Sections are read in the order of what depends on what (defaults before folders, folders
 * before the state_dir check), whatever the file's order: the walk only notes them. */
struct top_found {
	struct yamlconf_at api, retry, defaults, log, folders, control, metrics, state_dir,
		ledger_keep_days, ledger, fleet, webhooks, hooks, emails;
};

#define TOP(member) YAMLCONF_AT(struct top_found, member)
static const struct yamlconf_field top_fields[] = {
	{"api", YAMLCONF_NODE, .at = TOP(api)},
	{"retry", YAMLCONF_NODE, .at = TOP(retry)},
	{"defaults", YAMLCONF_NODE, .at = TOP(defaults)},
	{"log", YAMLCONF_NODE, .at = TOP(log)},
	{"folders", YAMLCONF_NODE, .at = TOP(folders)},
	{"control", YAMLCONF_NODE, .at = TOP(control)},
	{"metrics", YAMLCONF_NODE, .at = TOP(metrics)},
	{"state_dir", YAMLCONF_NODE, .at = TOP(state_dir)},
	{"ledger_keep_days", YAMLCONF_NODE, .at = TOP(ledger_keep_days)},
	{"ledger", YAMLCONF_NODE, .at = TOP(ledger)},
	{"fleet", YAMLCONF_NODE, .at = TOP(fleet)},
	{"webhooks", YAMLCONF_NODE, .at = TOP(webhooks)},
	{"hooks", YAMLCONF_NODE, .at = TOP(hooks)},
	{"emails", YAMLCONF_NODE, .at = TOP(emails)},
	{0},
};

/* Whether state_dir is set and good (else it has said why). */
static bool parse_state_dir(struct yamlconf *yc, struct config *cfg, const struct yamlconf_at *at)
{
	char q[80], *s = NULL;

	if (!at->node || !yamlconf_get_string(yc, at->node, at->path, 0, &s))
		return false;
	if (s[0] != '/') {
		yamlconf_error(yc, at->node, at->path, "expected an absolute path, got '%s'",
			       QUOTED(q, s));
		free(s);
		return false;
	}
	size_t len = strlen(s);
	if (len > CONFIG_STATE_DIR_MAX) {
		yamlconf_error(yc, at->node, at->path, "a path is at most %d bytes long, got %zu",
			       CONFIG_STATE_DIR_MAX, len);
		free(s);
		return false;
	}
	while (len > 1 && s[len - 1] == '/')
		s[--len] = '\0';
	free(cfg->state_dir);
	cfg->state_dir = s;
	return true;
}

static void config_set_defaults(struct config *cfg)
{
	cfg->api.base_url = strdup("https://api.resend.com");
	cfg->api.max_in_flight = 4;
	cfg->api.requests_per_second = 10;
	cfg->api.rate_share = 1;
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
	cfg->defaults.coalesce = CONFIG_COALESCE_AUTO;
	cfg->defaults.coalesce_max_files = 500;
	cfg->defaults.coalesce_max_rows = 100000;
	cfg->state_dir = strdup(CONFIG_STATE_DIR_DEFAULT);
	cfg->ledger_keep_days = 365;
	cfg->log_level = CONFIG_LOG_INFO;
	cfg->log_format = CONFIG_LOG_TEXT;
}

static void walk_section(struct yamlconf *yc, const struct yamlconf_at *at,
			 const struct yamlconf_field *fields, void *target)
{
	if (at->node)
		yamlconf_walk(yc, at->node, at->path, fields, target, NULL);
}

static void parse_root(struct yamlconf *yc, struct config *cfg, const yaml_node_t *root,
		       unsigned flags)
{
	struct top_found top;

	if (!yamlconf_expect(yc, root, "configuration", YAML_MAPPING_NODE, "a mapping"))
		return;
	yamlconf_walk(yc, root, "", top_fields, NULL, &top);
	parse_api(yc, cfg, &top.api, flags);
	parse_retry(yc, cfg, &top.retry);
	walk_section(yc, &top.defaults, settings_fields, &cfg->defaults);
	walk_section(yc, &top.log, log_fields, cfg);
	walk_section(yc, &top.control, control_fields, &cfg->control);
	parse_metrics(yc, cfg, &top.metrics);
	parse_ledger(yc, cfg, &top.ledger);
	parse_fleet(yc, cfg, &top.fleet);
	bool state_ok = parse_state_dir(yc, cfg, &top.state_dir);
	if (top.ledger_keep_days.node)
		yamlconf_get_uint(yc, top.ledger_keep_days.node, top.ledger_keep_days.path, 0,
				  36500, &cfg->ledger_keep_days);
	if (top.folders.node)
		parse_folders(yc, flags, cfg, &top.folders, state_ok ? &top.state_dir : NULL);
	else
		yamlconf_missing(yc, root, NULL, top.folders.key, "nothing to watch");
	parse_receivers(yc, cfg, &top.webhooks, "a list of webhooks", sizeof(*cfg->webhooks),
			(void **)&cfg->webhooks, webhook_item);
	parse_receivers(yc, cfg, &top.hooks, "a list of hooks", sizeof(*cfg->hooks),
			(void **)&cfg->hooks, hook_item);
	parse_receivers(yc, cfg, &top.emails, "a list of e-mail receivers", sizeof(*cfg->emails),
			(void **)&cfg->emails, email_item);
}

int config_load(const char *path, unsigned flags, struct config **ret_config,
		struct config_errors *errs)
{
	struct yamlconf *yc = NULL;
	const yaml_node_t *root = NULL;
	struct config *cfg;
	int r;

	r = yamlconf_open(path, &config_limits, &yc);
	if (r < 0) {
		if (yc)
			yamlconf_flush_errors(yc, &errs->items, &errs->count);
		yamlconf_free(yc);
		return r;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || !(cfg->path = strdup(path))) {
		free(cfg);
		yamlconf_free(yc);
		return -ENOMEM;
	}
	config_set_defaults(cfg);

	r = yamlconf_load(yc, &root);
	if (r == 0 && !root) {
		yamlconf_error_at(yc, 1, 1, NULL,
				  "configuration is empty: expected a mapping with at least "
				  "'folders'");
	} else if (r == 0) {
		parse_root(yc, cfg, root, flags);
		yamlconf_expect_end(yc);
	}
	if (r < 0 || yamlconf_error_count(yc) > 0) {
		yamlconf_flush_errors(yc, &errs->items, &errs->count);
		yamlconf_free(yc);
		if (r != -ENOMEM && (flags & CONFIG_LOAD_KEEP_ON_ERROR)) {
			*ret_config = cfg;
			return -EINVAL;
		}
		config_free(cfg);
		return r == -ENOMEM ? r : -EINVAL;
	}
	yamlconf_free(yc);
	*ret_config = cfg;
	return 0;
}

/* ---- import settings hash ---------------------------------------------------------------- */

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
		free(f->receipts.dir);
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
	free(cfg->ledger.conninfo);
	free(cfg->ledger.password_file);
	free(cfg->fleet.host_id);
	for (size_t i = 0; i < cfg->n_webhooks; i++)
		config_webhook_clear(&cfg->webhooks[i]);
	free(cfg->webhooks);
	for (size_t i = 0; i < cfg->n_hooks; i++)
		config_hook_clear(&cfg->hooks[i]);
	free(cfg->hooks);
	for (size_t i = 0; i < cfg->n_emails; i++)
		config_email_clear(&cfg->emails[i]);
	free(cfg->emails);
	if (cfg->api_key) {
		explicit_bzero(cfg->api_key, strlen(cfg->api_key));
		free(cfg->api_key);
	}
	free(cfg->path);
	free(cfg);
}
