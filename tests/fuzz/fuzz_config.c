/* libFuzzer harness for config_load(): the input is a configuration file.
 *
 * As in tests/fixtures/config/, "@TMP@" in the input stands for a directory made once per
 * process, which holds a/, b/ and c/ (each with in/, done/, failed/), a regular file "notadir",
 * a readable "ca.pem" and a key file "key"; so valid folders can be written and the loader goes
 * past its directory checks. The loader only reads the file system (stat, access, and open of
 * api.api_key_file); it never creates anything.
 *
 * What is checked: a load either succeeds with the configuration every rule of config.c allows
 * (ranges, names, absolute and distinct directories, ...) and that resend.c can turn into
 * request fields, or fails with -EINVAL, leaves *ret_config alone and appends at least one error
 * "file:line:column: ..." (one line each, in file order) to what errs already held. */
#include "config.h"

#include "fuzz.h"
#include "resend.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* config.c's CONFIG_MAX_ERRORS and CONFIG_MAX_FOLDERS (private there). */
#define FUZZ_MAX_ERRORS 200
#define FUZZ_MAX_FOLDERS 256

static char tmpdir[PATH_MAX - 64];
static char cfg_path[PATH_MAX];
static int cfg_fd = -1;

static const char *const layout_dirs[] = {"a", "a/in", "a/done", "a/failed", "b", "b/in",
					  "b/done", "b/failed", "c", "c/in", "c/done", "c/failed",
					  NULL};
static const char *const layout_files[][2] = {
	{"notadir", "I am a file\n"},
	{"ca.pem", "-----BEGIN CERTIFICATE-----\n"},
	{"key", "re_fuzz_key_from_file\n"},
	{NULL, NULL},
};

static void layout_path(char *buf, size_t size, const char *name)
{
	if ((size_t)snprintf(buf, size, "%s/%s", tmpdir, name) >= size)
		abort();
}

/* Removes exactly what fuzz_setup made: nothing else is ever created there. */
static void fuzz_cleanup(void)
{
	char p[PATH_MAX];
	size_t n = 0;

	if (cfg_fd >= 0)
		close(cfg_fd);
	unlink(cfg_path);
	for (size_t i = 0; layout_files[i][0]; i++) {
		layout_path(p, sizeof(p), layout_files[i][0]);
		unlink(p);
	}
	while (layout_dirs[n])
		n++;
	while (n-- > 0) {
		layout_path(p, sizeof(p), layout_dirs[n]);
		rmdir(p);
	}
	rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("TMPDIR");
	char p[PATH_MAX];

	(void)argc;
	(void)argv;
	/* tmpfs when there is one: every input is written, stat'ed and read back. */
	if (access("/dev/shm", W_OK | X_OK) == 0)
		base = "/dev/shm";
	else if (!base || !*base)
		base = "/tmp";
	if ((size_t)snprintf(tmpdir, sizeof(tmpdir), "%s/rdd-fuzz-config.XXXXXX", base) >=
		    sizeof(tmpdir) ||
	    !mkdtemp(tmpdir)) {
		perror("fuzz_config: mkdtemp");
		exit(1);
	}
	atexit(fuzz_cleanup);
	for (size_t i = 0; layout_dirs[i]; i++) {
		layout_path(p, sizeof(p), layout_dirs[i]);
		if (mkdir(p, 0700) != 0) {
			perror("fuzz_config: mkdir");
			exit(1);
		}
	}
	for (size_t i = 0; layout_files[i][0]; i++) {
		size_t len = strlen(layout_files[i][1]);
		int fd;

		layout_path(p, sizeof(p), layout_files[i][0]);
		fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, layout_files[i][1], len) != (ssize_t)len || close(fd) != 0) {
			perror("fuzz_config: layout file");
			exit(1);
		}
	}
	layout_path(cfg_path, sizeof(cfg_path), "resend-dropd.yaml");
	cfg_fd = open(cfg_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (cfg_fd < 0) {
		perror("fuzz_config: open");
		exit(1);
	}
	/* As the unit tests do: the default variable and the one tests/fixtures' full.yaml names. */
	setenv("RESEND_API_KEY", "re_fuzz_default_key", 1);
	setenv("RDD_TEST_API_KEY", "re_fuzz_custom_key", 1);
	return 0;
}

/* DATA with every "@TMP@" replaced by tmpdir; malloc'd, *RET_LEN bytes (plus a NUL). */
static char *substitute(const uint8_t *data, size_t size, size_t *ret_len)
{
	size_t dlen = strlen(tmpdir), n = 0, o = 0;
	char *out;

	for (size_t i = 0; i + 5 <= size; i++)
		if (memcmp(data + i, "@TMP@", 5) == 0)
			n++;
	out = malloc(size + n * dlen + 1);
	if (!out)
		abort();
	for (size_t i = 0; i < size;) {
		if (i + 5 <= size && memcmp(data + i, "@TMP@", 5) == 0) {
			memcpy(out + o, tmpdir, dlen);
			o += dlen;
			i += 5;
		} else {
			out[o++] = (char)data[i++];
		}
	}
	out[o] = '\0';
	*ret_len = o;
	return out;
}

static void write_config(const char *text, size_t len)
{
	size_t done = 0;

	if (ftruncate(cfg_fd, 0) != 0)
		abort();
	while (done < len) {
		ssize_t n = pwrite(cfg_fd, text + done, len - done, (off_t)done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
}

/* Whether the API key may be looked up for this text. api.api_key_file makes the loader open a
 * path of the input's choosing, and opening some device files has effects (a FIFO or a terminal
 * blocks, a watchdog device starts): so the key is only looked up when the text cannot name
 * api_key_file. A YAML key can only be spelt "api_key_file" literally, through a double-quoted
 * escape (which needs a backslash), or in UTF-16 (which libyaml takes only after a BOM). */
static bool key_lookup_is_safe(const char *text, size_t len)
{
	const unsigned char *u = (const unsigned char *)text;

	if (len >= 2 && ((u[0] == 0xff && u[1] == 0xfe) || (u[0] == 0xfe && u[1] == 0xff)))
		return false;
	return !memchr(text, '\\', len) && !memmem(text, len, "api_key_file", 12);
}

static bool is_env_name(const char *s)
{
	if (!(isalpha((unsigned char)*s) || *s == '_'))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

static bool is_folder_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
			return false;
	return true;
}

static bool is_api_key(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++)
		if (*k <= 0x20 || *k >= 0x7f)
			return false;
	return true;
}

static void check_settings(const struct config_settings *s)
{
	FUZZ_CHECK(s->settle_ms <= 3600000);
	FUZZ_CHECK(s->rescan_s >= 1 && s->rescan_s <= 86400);
	FUZZ_CHECK(s->pattern && s->pattern[0] && !strchr(s->pattern, '/'));
	FUZZ_CHECK(s->max_file_bytes >= 1 && s->max_file_bytes <= (UINT64_C(1) << 40));
	FUZZ_CHECK(s->on_conflict == CONFIG_ON_CONFLICT_UPSERT ||
		   s->on_conflict == CONFIG_ON_CONFLICT_SKIP);
}

static void check_optional_column(const char *column)
{
	FUZZ_CHECK(!column || column[0]);
}

static void check_column_map(const struct config_column_map *m)
{
	if (!m->present) {
		FUZZ_CHECK(!m->email && !m->first_name && !m->last_name && !m->unsubscribed);
		FUZZ_CHECK(m->n_properties == 0);
		return;
	}
	FUZZ_CHECK(m->email && m->email[0]);
	check_optional_column(m->first_name);
	check_optional_column(m->last_name);
	check_optional_column(m->unsubscribed);
	FUZZ_CHECK(m->n_properties == 0 || m->properties);
	for (size_t i = 0; i < m->n_properties; i++) {
		const struct config_property *p = &m->properties[i];

		FUZZ_CHECK(p->key && config_is_property_key(p->key));
		FUZZ_CHECK(p->column && p->column[0]);
		FUZZ_CHECK(p->type == CONFIG_PROP_STRING || p->type == CONFIG_PROP_NUMBER ||
			   p->type == CONFIG_PROP_BOOLEAN);
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(m->properties[j].key, p->key) != 0);
	}
}

static void check_folder(const struct config_folder *f)
{
	struct resend_fields fields;

	FUZZ_CHECK(f->name && is_folder_name(f->name));
	FUZZ_CHECK(f->inbox && f->inbox[0] == '/');
	FUZZ_CHECK(f->done && f->done[0] == '/');
	FUZZ_CHECK(f->failed && f->failed[0] == '/');
	check_column_map(&f->column_map);
	FUZZ_CHECK(f->n_segments == 0 || f->segments);
	for (size_t i = 0; i < f->n_segments; i++) {
		FUZZ_CHECK(config_is_uuid(f->segments[i]));
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcasecmp(f->segments[j], f->segments[i]) != 0);
	}
	FUZZ_CHECK(f->n_topics == 0 || f->topics);
	for (size_t i = 0; i < f->n_topics; i++) {
		FUZZ_CHECK(config_is_uuid(f->topics[i].id));
		FUZZ_CHECK(f->topics[i].subscription == CONFIG_SUB_OPT_IN ||
			   f->topics[i].subscription == CONFIG_SUB_OPT_OUT);
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcasecmp(f->topics[j].id, f->topics[i].id) != 0);
	}
	check_settings(&f->settings);

	/* What the loader accepts must be sendable: otherwise every file of the folder would fail
	 * at upload time instead of the configuration at load time. */
	FUZZ_CHECK(resend_fields_build(f, &fields) == 0);
	FUZZ_CHECK(fields.on_conflict);
	FUZZ_CHECK(!fields.column_map == !f->column_map.present);
	FUZZ_CHECK(!fields.segments == (f->n_segments == 0));
	FUZZ_CHECK(!fields.topics == (f->n_topics == 0));
	resend_fields_free(&fields);
}

/* Every directory of every folder is a directory, and no two are the same one (a folder's done
 * or failed being its inbox, or two folders sharing one, would have files picked up twice). */
static void check_directories(const struct config *cfg)
{
	size_t n = cfg->n_folders * 3;
	struct stat *st = calloc(n, sizeof(*st));

	FUZZ_CHECK(st);
	for (size_t i = 0; i < cfg->n_folders; i++) {
		const char *dirs[3] = {cfg->folders[i].inbox, cfg->folders[i].done,
				       cfg->folders[i].failed};

		for (size_t k = 0; k < 3; k++) {
			FUZZ_CHECK(stat(dirs[k], &st[i * 3 + k]) == 0);
			FUZZ_CHECK(S_ISDIR(st[i * 3 + k].st_mode));
			/* moved by rename: same filesystem as the inbox */
			FUZZ_CHECK(st[i * 3 + k].st_dev == st[i * 3].st_dev);
		}
	}
	for (size_t a = 0; a < n; a++)
		for (size_t b = 0; b < a; b++)
			FUZZ_CHECK(st[a].st_dev != st[b].st_dev || st[a].st_ino != st[b].st_ino);
	free(st);
}

/* Part WHAT of URL as curl sees it, or NULL; curl_free() it. */
static char *url_part(const char *url, CURLUPart what)
{
	CURLU *u = curl_url();
	char *part = NULL;

	FUZZ_CHECK(u);
	FUZZ_CHECK(curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK);
	if (curl_url_get(u, what, &part, 0) != CURLUE_OK)
		part = NULL;
	curl_url_cleanup(u);
	return part;
}

static bool same_part(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The URL the daemon calls (resend_client.c: base_url + "/contacts/imports") goes to the host the base
 * URL names, over https, or http to a loopback host only; the key travels with every request.
 * (Not a check of the spelling: curl accepts "https:/host" and so does the loader.) */
static void check_base_url(const char *base)
{
	static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_USER, CURLUPART_HOST,
					  CURLUPART_PORT};
	char *url, *scheme, *query, *fragment, *path;

	FUZZ_CHECK(asprintf(&url, "%s/contacts/imports", base) > 0);
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		char *a = url_part(base, parts[i]), *b = url_part(url, parts[i]);

		FUZZ_CHECK(same_part(a, b));
		curl_free(a);
		curl_free(b);
	}
	scheme = url_part(url, CURLUPART_SCHEME);
	FUZZ_CHECK(scheme);
	if (strcmp(scheme, "http") == 0)
		FUZZ_CHECK(config_url_host_is_loopback(url));
	else
		FUZZ_CHECK(strcmp(scheme, "https") == 0);
	query = url_part(url, CURLUPART_QUERY);
	fragment = url_part(url, CURLUPART_FRAGMENT);
	path = url_part(url, CURLUPART_PATH);
	FUZZ_CHECK(!query && !fragment);
	FUZZ_CHECK(path && strlen(path) >= 17 &&
		   strcmp(path + strlen(path) - 17, "/contacts/imports") == 0);
	curl_free(scheme);
	curl_free(path);
	free(url);
}

static void check_config(const struct config *cfg, unsigned flags)
{
	const struct config_api *api = &cfg->api;
	size_t len;

	FUZZ_CHECK(cfg->path && strcmp(cfg->path, cfg_path) == 0);

	FUZZ_CHECK(api->base_url);
	len = strlen(api->base_url);
	FUZZ_CHECK(len > 0 && api->base_url[len - 1] != '/');
	check_base_url(api->base_url);
	FUZZ_CHECK(!api->api_key_env || is_env_name(api->api_key_env));
	FUZZ_CHECK(!api->api_key_file || api->api_key_file[0] == '/');
	FUZZ_CHECK(!api->user_agent_suffix ||
		   fuzz_one_line(api->user_agent_suffix, strlen(api->user_agent_suffix) + 1));
	FUZZ_CHECK(!api->ca_file || api->ca_file[0]);
	FUZZ_CHECK(api->max_in_flight >= 1 && api->max_in_flight <= 64);
	FUZZ_CHECK(isfinite(api->requests_per_second) && api->requests_per_second >= 0 &&
		   api->requests_per_second <= 1000);
	FUZZ_CHECK(api->connect_timeout_s >= 1 && api->connect_timeout_s <= 300);
	FUZZ_CHECK(api->request_timeout_s >= 1 && api->request_timeout_s <= 86400);
	FUZZ_CHECK(api->shutdown_timeout_s <= 3600);
	if (flags & CONFIG_LOAD_NO_API_KEY)
		FUZZ_CHECK(!cfg->api_key);
	else
		FUZZ_CHECK(cfg->api_key && is_api_key(cfg->api_key));

	FUZZ_CHECK(cfg->retry.max_attempts >= 1 && cfg->retry.max_attempts <= 100);
	FUZZ_CHECK(cfg->retry.initial_delay_ms >= 1 && cfg->retry.initial_delay_ms <= 3600000);
	FUZZ_CHECK(cfg->retry.max_delay_ms >= 1 && cfg->retry.max_delay_ms <= 86400000);
	/* "max_delay_ms: must be at least initial_delay_ms" */
	FUZZ_CHECK(cfg->retry.max_delay_ms >= cfg->retry.initial_delay_ms);

	check_settings(&cfg->defaults);
	FUZZ_CHECK(cfg->log_level >= CONFIG_LOG_ERROR && cfg->log_level <= CONFIG_LOG_DEBUG);
	FUZZ_CHECK(cfg->log_format == CONFIG_LOG_TEXT || cfg->log_format == CONFIG_LOG_JSON);

	FUZZ_CHECK(cfg->n_folders >= 1 && cfg->n_folders <= FUZZ_MAX_FOLDERS && cfg->folders);
	for (size_t i = 0; i < cfg->n_folders; i++) {
		check_folder(&cfg->folders[i]);
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(cfg->folders[i].name, cfg->folders[j].name) != 0);
	}
	check_directories(cfg);
}

/* errs->items[FIRST..] are this load's errors: "<path>: message" for the file as a whole (first,
 * or the "too many errors" line last), else "<path>:<line>:<column>: ...", in file order. */
static void check_errors(const struct config_errors *errs, size_t first)
{
	size_t plen = strlen(cfg_path), last_line = 0, last_col = 0;
	bool positioned = false;

	FUZZ_CHECK(errs->count > first);
	FUZZ_CHECK(errs->count - first <= FUZZ_MAX_ERRORS + 1);
	for (size_t i = first; i < errs->count; i++) {
		const char *e = errs->items[i];
		char *end;

		FUZZ_CHECK(e);
		FUZZ_CHECK(fuzz_one_line(e, strlen(e) + 1));
		FUZZ_CHECK(strncmp(e, cfg_path, plen) == 0 && e[plen] == ':');
		e += plen + 1;
		if (*e == ' ') {
			/* no position: the file as a whole, before any positioned error, or the
			 * final line saying the list was cut */
			FUZZ_CHECK(!positioned || (i == errs->count - 1 &&
						   strncmp(e, " too many errors", 16) == 0));
			continue;
		}
		unsigned long line = strtoul(e, &end, 10), col;

		FUZZ_CHECK(end != e && *end == ':' && line >= 1);
		e = end + 1;
		col = strtoul(e, &end, 10);
		FUZZ_CHECK(end != e && *end == ':' && end[1] == ' ' && col >= 1);
		FUZZ_CHECK(line > last_line || (line == last_line && col >= last_col));
		last_line = line;
		last_col = col;
		positioned = true;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config untouched;
	struct config *cfg = &untouched;
	struct config_errors errs = {0};
	size_t len;
	char *text = substitute(data, size, &len), *earlier;
	unsigned flags;
	int r;

	write_config(text, len);
	flags = key_lookup_is_safe(text, len) ? 0 : CONFIG_LOAD_NO_API_KEY;
	free(text);

	/* errs is appended to, never reset: start with an error of an earlier load in it. */
	errs.items = malloc(sizeof(*errs.items));
	earlier = strdup("earlier error");
	FUZZ_CHECK(errs.items && earlier);
	errs.items[0] = earlier;
	errs.count = 1;

	r = config_load(cfg_path, flags, &cfg, &errs);
	FUZZ_CHECK(errs.items[0] == earlier);
	if (r == 0) {
		FUZZ_CHECK(cfg && cfg != &untouched);
		FUZZ_CHECK(errs.count == 1);
		check_config(cfg, flags);
		config_free(cfg);
	} else {
		FUZZ_CHECK(r == -EINVAL);
		FUZZ_CHECK(cfg == &untouched);
		check_errors(&errs, 1);
	}
	config_errors_clear(&errs);
	FUZZ_CHECK(errs.count == 0 && errs.items == NULL);
	return 0;
}
