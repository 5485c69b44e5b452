/* config: the YAML schema, every validation rule, and the exact position of every error.
 *
 * Each test gets a fresh temporary directory (E.dir) holding a/, b/ and c/ with in/, done/ and
 * failed/ each, a regular file "notadir" and a readable "ca.pem". YAML text may say @TMP@ for that
 * directory; expected errors may say @FILE@ for the configuration's path and @TMP@ as well.
 * Fixtures under $RDD_FIXTURES/config/ follow the same convention (see its README.md). */
#include "apikey.h"
#include "config.h"
#include "resend.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define KEY_DEFAULT "re_unit_SECRET_default_4f2a"
#define KEY_CUSTOM "re_unit_SECRET_custom_91bc"
#define MAX_FILE_DEFAULT (UINT64_C(2) << 30) /* max_file_bytes: 2 GiB */

/* The folder every inline configuration needs, on lines 2-5 after a "folders:" line 1. */
#define FOLDER_A                                                                                   \
	"  - name: a\n"                                                                            \
	"    inbox: @TMP@/a/in\n"                                                                  \
	"    done: @TMP@/a/done\n"                                                                 \
	"    failed: @TMP@/a/failed\n"
#define FOLDER_A_FLOW "  - { name: a, inbox: @TMP@/a/in, done: @TMP@/a/done, failed: @TMP@/a/failed }\n"

static struct {
	char dir[PATH_MAX];
	char file[PATH_MAX + 16]; /* the configuration file */
	struct config *cfg;
	struct config_errors errs;
	int r;
	void *scratch[2]; /* freed by teardown, also when an assertion fails */
} E;

/* ---- helpers ---------------------------------------------------------------------------- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void make_dir(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void make_dir(const char *fmt, ...)
{
	char path[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		fail_msg("mkdir %s: %s", path, strerror(errno));
}

static void make_folder_dirs(const char *name)
{
	make_dir("%s/%s", E.dir, name);
	make_dir("%s/%s/in", E.dir, name);
	make_dir("%s/%s/done", E.dir, name);
	make_dir("%s/%s/failed", E.dir, name);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f)
		fail_msg("cannot create %s: %s", path, strerror(errno));
	if (len && fwrite(data, 1, len, f) != len)
		fail_msg("cannot write %s", path);
	if (fclose(f) != 0)
		fail_msg("cannot close %s", path);
}

static void write_str(const char *name, const char *text)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", E.dir, name);
	write_file(path, text, strlen(text));
}

/* TEXT (LEN bytes) with every "@TMP@" replaced by E.dir and "@FILE@" by FILE. */
static char *expand_for(const char *file, const char *text, size_t len, size_t *ret_len)
{
	size_t dl = strlen(E.dir), fl = strlen(file), cap = len + 1, o = 0;
	char *out;

	for (size_t i = 0; i + 5 <= len; i++) {
		if (memcmp(text + i, "@TMP@", 5) == 0 || (i + 6 <= len && memcmp(text + i, "@FILE@", 6) == 0))
			cap += dl > fl ? dl : fl;
	}
	out = malloc(cap);
	assert_non_null(out);
	for (size_t i = 0; i < len;) {
		if (i + 5 <= len && memcmp(text + i, "@TMP@", 5) == 0) {
			memcpy(out + o, E.dir, dl);
			o += dl;
			i += 5;
		} else if (i + 6 <= len && memcmp(text + i, "@FILE@", 6) == 0) {
			memcpy(out + o, file, fl);
			o += fl;
			i += 6;
		} else {
			out[o++] = text[i++];
		}
	}
	out[o] = '\0';
	if (ret_len)
		*ret_len = o;
	return out;
}

static char *expand(const char *text, size_t len, size_t *ret_len)
{
	return expand_for(E.file, text, len, ret_len);
}

static char *xexpand(const char *text)
{
	return expand(text, strlen(text), NULL);
}

static void reset(void)
{
	config_free(E.cfg);
	E.cfg = NULL;
	config_errors_clear(&E.errs);
	E.r = 0;
}

static void print_errors(void)
{
	for (size_t i = 0; i < E.errs.count; i++)
		print_message("  error[%zu]: %s\n", i, E.errs.items[i]);
}

/* Rules that hold for every load: the result and the error list agree, and every error is one
 * line that starts with the file name (a control character in a message could forge a line). */
static void check_invariants(void)
{
	size_t fl = strlen(E.file);

	if (E.r == 0) {
		assert_non_null(E.cfg);
		assert_int_equal(E.errs.count, 0);
		return;
	}
	assert_true(E.r < 0);
	assert_null(E.cfg);
	if (E.errs.count == 0 && E.r == -EINVAL)
		fail_msg("config_load failed with -EINVAL but reported no error");
	for (size_t i = 0; i < E.errs.count; i++) {
		const char *s = E.errs.items[i];
		if (strncmp(s, E.file, fl) != 0 || s[fl] != ':') {
			print_errors();
			fail_msg("error %zu does not start with '%s:'", i, E.file);
		}
		for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
			if (*p < 0x20 || *p == 0x7f) {
				print_errors();
				fail_msg("error %zu holds control character 0x%02x at offset %td: one "
					 "error must be one line",
					 i, *p, (const char *)p - s);
			}
		}
	}
}

/* Writes TEXT (after expansion) as the configuration file and loads it. */
static int load_bytes(const char *text, size_t len, unsigned flags)
{
	size_t n;
	char *buf;

	reset();
	buf = expand(text, len, &n);
	write_file(E.file, buf, n);
	free(buf);
	E.r = config_load(E.file, flags, &E.cfg, &E.errs);
	check_invariants();
	return E.r;
}

/* Most tests are about other rules than the API key source. */
static int load(const char *text)
{
	return load_bytes(text, strlen(text), CONFIG_LOAD_NO_API_KEY);
}

static int load_with_key(const char *text)
{
	return load_bytes(text, strlen(text), 0);
}

#define assert_loaded()                                                                            \
	do {                                                                                       \
		if (E.r != 0) {                                                                    \
			print_errors();                                                            \
			fail_msg("config_load returned %d, expected success", E.r);                \
		}                                                                                  \
	} while (0)

/* The error list must be exactly EXP (NULL-terminated). An expected item ending in '*' matches
 * any error that starts with the text before the '*'. */
static void expect_errors_at(const char *file, int line, const char *const *exp)
{
	size_t n = 0;
	bool ok = true;

	while (exp[n])
		n++;
	if (E.r == 0) {
		print_message("%s:%d: configuration loaded, expected %zu error(s)\n", file, line, n);
		ok = false;
	}
	for (size_t i = 0; ok && i < n && i < E.errs.count; i++) {
		char *want = expand(exp[i], strlen(exp[i]), NULL);
		size_t wl = strlen(want);
		bool prefix = wl > 0 && want[wl - 1] == '*';
		bool match = prefix ? strncmp(E.errs.items[i], want, wl - 1) == 0
				    : strcmp(E.errs.items[i], want) == 0;
		if (!match) {
			print_message("%s:%d: error %zu differs:\n  expected: %s\n  actual:   %s\n",
				      file, line, i, want, E.errs.items[i]);
			ok = false;
		}
		free(want);
	}
	if (ok && n != E.errs.count) {
		print_message("%s:%d: expected %zu error(s), got %zu\n", file, line, n, E.errs.count);
		ok = false;
	}
	if (!ok) {
		print_errors();
		fail_msg("unexpected error list");
	}
}

#define EXPECT_ERRORS(...)                                                                         \
	expect_errors_at(__FILE__, __LINE__, (const char *const[]){__VA_ARGS__, NULL})

static const char *fixtures_dir(void)
{
	static char buf[PATH_MAX];
	const char *d = getenv("RDD_FIXTURES");

	if (d && *d)
		return d;
	/* Built by CMake, __FILE__ is absolute: tests/unit/test_config.c -> tests/fixtures. */
	snprintf(buf, sizeof(buf), "%s", __FILE__);
	char *s = strstr(buf, "tests/unit/");
	if (!s)
		return "tests/fixtures";
	strcpy(s, "tests/fixtures");
	return buf;
}

static char *read_all(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		fail_msg("cannot open %s: %s (is RDD_FIXTURES set?)", path, strerror(errno));
	do {
		if (len + 4096 + 1 > cap) {
			cap = (len + 4096 + 1) * 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, 4096, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	*ret_len = len;
	return buf;
}

static int load_fixture(const char *rel, unsigned flags)
{
	char path[PATH_MAX];
	size_t len;

	snprintf(path, sizeof(path), "%s/config/%s", fixtures_dir(), rel);
	char *text = read_all(path, &len);
	int r = load_bytes(text, len, flags);
	free(text);
	return r;
}

/* Loads that may crash or take too long run in a child process under a time limit, so that they
 * fail one test with a clear message instead of taking the whole binary down or stalling it.
 * The parent prepares the files (iso_add); the child only calls config_load and compares, with
 * no cmocka assertion (a failing one would longjmp into the parent's copy of the test). */
struct iso_case {
	char path[PATH_MAX + 32];
	char *want;   /* the only error, expanded; a trailing '*' matches a prefix; NULL: any error
		       * with a position */
	unsigned flags;
};

static struct iso_case iso[8];
static size_t n_iso;

static void iso_add(const char *name, const void *text, size_t len, unsigned flags,
		    const char *want)
{
	struct iso_case *c = &iso[n_iso++];
	size_t n;

	assert_true(n_iso <= sizeof(iso) / sizeof(iso[0]));
	snprintf(c->path, sizeof(c->path), "%s/%s", E.dir, name);
	if (text) {
		char *buf = expand_for(c->path, text, len, &n);
		write_file(c->path, buf, n);
		free(buf);
	}
	c->want = want ? expand_for(c->path, want, strlen(want), NULL) : NULL;
	c->flags = flags;
}

static void iso_clear(void)
{
	for (size_t i = 0; i < n_iso; i++)
		free(iso[i].want);
	n_iso = 0;
}

/* "FILE:LINE:COLUMN: " */
static bool has_position(const char *err, const char *file)
{
	size_t fl = strlen(file);
	const char *p = err + fl;

	if (strncmp(err, file, fl) != 0 || *p++ != ':' || !isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p++ != ':' || !isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p))
		p++;
	return p[0] == ':' && p[1] == ' ';
}

static int iso_child(void)
{
	int rc = 0;

	for (size_t i = 0; i < n_iso; i++) {
		struct iso_case *c = &iso[i];
		struct config *cfg = NULL;
		struct config_errors errs = {0};
		int r = config_load(c->path, c->flags, &cfg, &errs);
		bool ok;

		if (c->want) {
			size_t wl = strlen(c->want);
			bool prefix = wl && c->want[wl - 1] == '*';
			ok = r < 0 && errs.count == 1 &&
			     (prefix ? strncmp(errs.items[0], c->want, wl - 1) == 0
				     : strcmp(errs.items[0], c->want) == 0);
		} else {
			ok = r < 0 && errs.count >= 1;
			for (size_t j = 0; ok && j < errs.count; j++)
				ok = has_position(errs.items[j], c->path);
		}
		if (!ok) {
			fprintf(stderr, "%s: config_load returned %d with %zu error(s)%s%s\n",
				c->path, r, errs.count, c->want ? "; expected only: " : "",
				c->want ? c->want : "; expected errors with a position");
			for (size_t j = 0; j < errs.count; j++)
				fprintf(stderr, "  error[%zu]: %s\n", j, errs.items[j]);
			rc = 2;
		}
		config_errors_clear(&errs);
		config_free(cfg);
	}
	return rc;
}

static void iso_run(unsigned timeout_s, const char *what)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(timeout_s);
		_exit(iso_child());
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	iso_clear();
	if (WIFSIGNALED(status)) {
		if (WTERMSIG(status) == SIGALRM)
			fail_msg("%s: did not finish within %u s", what, timeout_s);
		fail_msg("%s: crashed with signal %d (%s)", what, WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	}
	if (WEXITSTATUS(status) != 0)
		fail_msg("%s: failed in the child (exit status %d; 1 is a sanitizer report)", what,
			 WEXITSTATUS(status));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- setup -------------------------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	memset(&E, 0, sizeof(E));
	strcpy(E.dir, "/tmp/rdd-config-XXXXXX");
	if (!mkdtemp(E.dir))
		return -1;
	snprintf(E.file, sizeof(E.file), "%s/config.yaml", E.dir);
	make_folder_dirs("a");
	make_folder_dirs("b");
	make_folder_dirs("c");
	write_str("notadir", "I am a file\n");
	write_str("ca.pem", "-----BEGIN CERTIFICATE-----\n");
	setenv("RESEND_API_KEY", KEY_DEFAULT, 1);
	setenv("RDD_TEST_API_KEY", KEY_CUSTOM, 1);
	unsetenv("RDD_UNSET_API_KEY");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	reset();
	iso_clear();
	free(E.scratch[0]);
	free(E.scratch[1]);
	return nftw(E.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- validators --------------------------------------------------------------------------- */

static void test_is_uuid(void **state)
{
	(void)state;
	assert_true(config_is_uuid("78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6"));
	assert_true(config_is_uuid("78E7A5C6-9A91-4C63-9D1F-3B9C0B5B9AB6"));
	assert_true(config_is_uuid("00000000-0000-0000-0000-000000000000"));
	assert_false(config_is_uuid(""));
	assert_false(config_is_uuid("78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab"));   /* 35 */
	assert_false(config_is_uuid("78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6a")); /* 37 */
	assert_false(config_is_uuid("78e7a5c69a914c639d1f3b9c0b5b9ab6"));     /* no dashes */
	assert_false(config_is_uuid("78e7a5c6-9a914-c63-9d1f-3b9c0b5b9ab6")); /* dash moved */
	assert_false(config_is_uuid("78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9abg")); /* not hex */
	assert_false(config_is_uuid("78e7a5c6_9a91_4c63_9d1f_3b9c0b5b9ab6"));
	assert_false(config_is_uuid("{8e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab}"));
	assert_false(config_is_uuid(" 8e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6"));
	assert_false(config_is_uuid("------------------------------------"));
}

static void test_is_property_key(void **state)
{
	char k[64];

	(void)state;
	assert_true(config_is_property_key("plan"));
	assert_true(config_is_property_key("a"));
	assert_true(config_is_property_key("Plan_2024"));
	assert_true(config_is_property_key("_"));
	memset(k, 'x', 50);
	k[50] = '\0';
	assert_true(config_is_property_key(k));
	k[50] = 'x';
	k[51] = '\0';
	assert_false(config_is_property_key(k));
	assert_false(config_is_property_key(""));
	assert_false(config_is_property_key("first-name"));
	assert_false(config_is_property_key("plan type"));
	assert_false(config_is_property_key("a.b"));
	assert_false(config_is_property_key("plan!"));
	assert_false(config_is_property_key("caf\xc3\xa9"));
	assert_false(config_is_property_key("tab\t"));
}

static void test_url_host_is_loopback(void **state)
{
	(void)state;
	assert_true(config_url_host_is_loopback("http://127.0.0.1"));
	assert_true(config_url_host_is_loopback("http://127.0.0.1:8025/v1"));
	assert_true(config_url_host_is_loopback("http://127.1.2.3/"));
	assert_true(config_url_host_is_loopback("http://localhost"));
	assert_true(config_url_host_is_loopback("http://LocalHost:3000"));
	assert_true(config_url_host_is_loopback("http://[::1]"));
	assert_true(config_url_host_is_loopback("http://[::1]:8080/x"));
	assert_true(config_url_host_is_loopback("https://127.0.0.1"));

	assert_false(config_url_host_is_loopback("http://api.resend.com"));
	assert_false(config_url_host_is_loopback("http://localhost.evil.example"));
	assert_false(config_url_host_is_loopback("http://127.0.0.1.evil.example"));
	assert_false(config_url_host_is_loopback("http://127.evil.example"));
	assert_false(config_url_host_is_loopback("http://128.0.0.1"));
	assert_false(config_url_host_is_loopback("http://10.0.0.1"));
	assert_false(config_url_host_is_loopback("http://[::2]"));
	assert_false(config_url_host_is_loopback("http://127.0.0.1@evil.example/"));
	assert_false(config_url_host_is_loopback("not a url"));
	assert_false(config_url_host_is_loopback(""));
}

static void test_enum_names(void **state)
{
	(void)state;
	assert_string_equal(config_on_conflict_name(CONFIG_ON_CONFLICT_UPSERT), "upsert");
	assert_string_equal(config_on_conflict_name(CONFIG_ON_CONFLICT_SKIP), "skip");
	assert_string_equal(config_prop_type_name(CONFIG_PROP_STRING), "string");
	assert_string_equal(config_prop_type_name(CONFIG_PROP_NUMBER), "number");
	assert_string_equal(config_prop_type_name(CONFIG_PROP_BOOLEAN), "boolean");
	assert_string_equal(config_subscription_name(CONFIG_SUB_OPT_IN), "opt_in");
	assert_string_equal(config_subscription_name(CONFIG_SUB_OPT_OUT), "opt_out");
	assert_string_equal(config_encoding_name(CONFIG_ENCODING_AUTO), "auto");
	assert_string_equal(config_encoding_name(CONFIG_ENCODING_UTF8), "utf-8");
	assert_string_equal(config_encoding_name(CONFIG_ENCODING_WINDOWS_1252), "windows-1252");
	assert_string_equal(config_encoding_name(CONFIG_ENCODING_ISO_8859_1), "iso-8859-1");
	assert_string_equal(config_encoding_name(CONFIG_ENCODING_ISO_8859_15), "iso-8859-15");
	assert_string_equal(config_encoding_name(CONFIG_ENCODING_UTF16), "utf-16");
	assert_string_equal(config_header_name(CONFIG_HEADER_EXACT), "exact");
	assert_string_equal(config_header_name(CONFIG_HEADER_RELAXED), "relaxed");
	assert_string_equal(config_invalid_rows_name(CONFIG_INVALID_ROWS_DROP), "drop");
	assert_string_equal(config_invalid_rows_name(CONFIG_INVALID_ROWS_IMPORT), "import");
	assert_string_equal(config_invalid_rows_name(CONFIG_INVALID_ROWS_FAIL_FILE), "fail_file");
	assert_string_equal(config_on_duplicate_name(CONFIG_ON_DUPLICATE_SKIP), "skip");
	assert_string_equal(config_on_duplicate_name(CONFIG_ON_DUPLICATE_IMPORT), "import");
	assert_string_equal(config_on_duplicate_name(CONFIG_ON_DUPLICATE_FAIL), "fail");
	config_free(NULL);
	config_errors_clear(NULL);
}

/* ---- fixtures: good/ must load, bad/NAME.yaml must give exactly bad/NAME.errors ------------ */

static void test_good_fixture(void **state)
{
	const char *name = *state ? *state : "good/?";

	load_fixture(name, 0);
	if (E.r != 0) {
		print_errors();
		fail_msg("%s: config_load returned %d, expected success", name, E.r);
	}
}

static void test_bad_fixture(void **state)
{
	const char *name = *state;
	char path[PATH_MAX];
	size_t len, n = 0;

	/* The API key rules are exercised by the api-key-* fixtures; the others are about other
	 * rules and must not depend on it. */
	load_fixture(name, strncmp(name, "bad/api-key", 11) == 0 ? 0 : CONFIG_LOAD_NO_API_KEY);
	snprintf(path, sizeof(path), "%s/config/%.*s.errors", fixtures_dir(),
		 (int)(strlen(name) - 5), name);
	char *exp = E.scratch[0] = read_all(path, &len);
	const char **lines = E.scratch[1] = calloc(len + 2, sizeof(*lines));
	assert_non_null(lines);
	for (char *s = exp, *nl; *s; s = nl + 1) {
		nl = strchr(s, '\n');
		if (!nl)
			nl = s + strlen(s) - 1;
		else
			*nl = '\0';
		if (*s)
			lines[n++] = s;
	}
	lines[n] = NULL;
	if (n == 0)
		fail_msg("%s lists no errors", path);
	expect_errors_at(name, 0, lines);
}

/* ---- success paths -------------------------------------------------------------------------- */

static void assert_path(const char *actual, const char *rel)
{
	char want[PATH_MAX + 64];

	snprintf(want, sizeof(want), "%s/%s", E.dir, rel);
	assert_non_null(actual);
	assert_string_equal(actual, want);
}

static void assert_settings(const struct config_settings *s, uint64_t settle, uint64_t rescan,
			    const char *pattern, uint64_t max_bytes, enum config_on_conflict oc,
			    bool follow)
{
	assert_int_equal(s->settle_ms, settle);
	assert_int_equal(s->rescan_s, rescan);
	assert_non_null(s->pattern);
	assert_string_equal(s->pattern, pattern);
	assert_int_equal(s->max_file_bytes, max_bytes);
	assert_int_equal(s->on_conflict, oc);
	assert_int_equal(s->follow_import, follow);
}

/* The issue 10 settings: upload parts, rejected rows and how the CSV is read. */
static void assert_csv_settings(const struct config_settings *s, uint64_t max_upload,
				enum config_invalid_rows invalid, char delimiter,
				enum config_encoding encoding, enum config_header header)
{
	assert_int_equal(s->max_upload_bytes, max_upload);
	assert_int_equal(s->invalid_rows, invalid);
	assert_int_equal(s->csv.delimiter, delimiter);
	assert_int_equal(s->csv.encoding, encoding);
	assert_int_equal(s->csv.header, header);
}

#define DEFAULT_CSV_SETTINGS                                                                     \
	52428800, CONFIG_INVALID_ROWS_DROP, '\0', CONFIG_ENCODING_AUTO, CONFIG_HEADER_EXACT

/* The issue 11 settings: what a file already imported becomes. */
static void assert_dup_settings(const struct config_settings *s, enum config_on_duplicate od,
				uint64_t window_s)
{
	assert_int_equal(s->on_duplicate, od);
	assert_int_equal(s->duplicate_window_s, window_s);
}

#define WINDOW_DEFAULT UINT64_C(2592000) /* duplicate_window: 30d */

static void test_full_example_every_key(void **state)
{
	(void)state;
	load_fixture("good/full.yaml", 0);
	assert_loaded();
	const struct config *c = E.cfg;

	assert_string_equal(c->path, E.file);
	assert_string_equal(c->api.base_url, "https://api.example.test/v1");
	assert_string_equal(c->api.api_key_env, "RDD_TEST_API_KEY");
	assert_null(c->api.api_key_file);
	assert_string_equal(c->api.user_agent_suffix, "acme-sync/2");
	assert_int_equal(c->api.max_in_flight, 8);
	assert_true(c->api.requests_per_second == 1.5);
	assert_int_equal(c->api.connect_timeout_s, 20);
	assert_int_equal(c->api.request_timeout_s, 900);
	assert_path(c->api.ca_file, "ca.pem");
	assert_int_equal(c->api.shutdown_timeout_s, 45);
	assert_int_equal(c->retry.max_attempts, 5);
	assert_int_equal(c->retry.initial_delay_ms, 500);
	assert_int_equal(c->retry.max_delay_ms, 60000);
	assert_settings(&c->defaults, 3000, 60, "*.txt", 1048576, CONFIG_ON_CONFLICT_SKIP, false);
	assert_csv_settings(&c->defaults, 1000000, CONFIG_INVALID_ROWS_IMPORT, ';',
			    CONFIG_ENCODING_WINDOWS_1252, CONFIG_HEADER_RELAXED);
	assert_dup_settings(&c->defaults, CONFIG_ON_DUPLICATE_FAIL, 12 * 3600);
	assert_path(c->state_dir, "state"); /* the trailing slash dropped */
	assert_int_equal(c->ledger_keep_days, 90);
	assert_int_equal(c->log_level, CONFIG_LOG_DEBUG);
	assert_int_equal(c->log_format, CONFIG_LOG_JSON);
	assert_non_null(c->api_key);
	assert_string_equal(c->api_key, KEY_CUSTOM);

	assert_int_equal(c->n_folders, 2);
	const struct config_folder *f = &c->folders[0];
	assert_string_equal(f->name, "newsletter");
	assert_path(f->inbox, "a/in");
	assert_path(f->done, "a/done");
	assert_path(f->failed, "a/failed");
	assert_true(f->column_map.present);
	assert_string_equal(f->column_map.email, "Email");
	assert_string_equal(f->column_map.first_name, "First Name");
	assert_string_equal(f->column_map.last_name, "Last Name");
	assert_string_equal(f->column_map.unsubscribed, "Unsubscribed");
	assert_int_equal(f->column_map.n_properties, 4);
	static const char *const pk[] = {"plan", "seats", "trial", "region"};
	static const char *const pc[] = {"Plan", "Seats", "Trial", "Region"};
	static const enum config_prop_type pt[] = {CONFIG_PROP_STRING, CONFIG_PROP_NUMBER,
						   CONFIG_PROP_BOOLEAN, CONFIG_PROP_STRING};
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(f->column_map.properties[i].key, pk[i]);
		assert_string_equal(f->column_map.properties[i].column, pc[i]);
		assert_int_equal(f->column_map.properties[i].type, pt[i]);
	}
	assert_int_equal(f->n_segments, 2);
	assert_string_equal(f->segments[0], "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6");
	assert_string_equal(f->segments[1], "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0");
	assert_int_equal(f->n_topics, 2);
	assert_string_equal(f->topics[0].id, "059ac693-2fc8-4c13-8b27-01350d638a17");
	assert_int_equal(f->topics[0].subscription, CONFIG_SUB_OPT_IN);
	assert_string_equal(f->topics[1].id, "159ac693-2fc8-4c13-8b27-01350d638a17");
	assert_int_equal(f->topics[1].subscription, CONFIG_SUB_OPT_OUT);
	assert_settings(&f->settings, 0, 5, "contacts-*.csv", 2048, CONFIG_ON_CONFLICT_UPSERT,
			true);
	/* csv: { delimiter: "\t" } keeps the defaults' encoding and header. */
	assert_csv_settings(&f->settings, 65536, CONFIG_INVALID_ROWS_FAIL_FILE, '\t',
			    CONFIG_ENCODING_WINDOWS_1252, CONFIG_HEADER_RELAXED);
	assert_dup_settings(&f->settings, CONFIG_ON_DUPLICATE_IMPORT, 0);

	f = &c->folders[1];
	assert_string_equal(f->name, "billing.eu-1");
	assert_path(f->inbox, "b/in/");
	assert_false(f->column_map.present);
	assert_null(f->column_map.email);
	assert_int_equal(f->column_map.n_properties, 0);
	assert_int_equal(f->n_segments, 0);
	assert_int_equal(f->n_topics, 0);
	/* Nothing overridden: the file's defaults, not the built-in ones. */
	assert_settings(&f->settings, 3000, 60, "*.txt", 1048576, CONFIG_ON_CONFLICT_SKIP, false);
	assert_csv_settings(&f->settings, 1000000, CONFIG_INVALID_ROWS_IMPORT, ';',
			    CONFIG_ENCODING_WINDOWS_1252, CONFIG_HEADER_RELAXED);
	assert_dup_settings(&f->settings, CONFIG_ON_DUPLICATE_FAIL, 12 * 3600);
	assert_ptr_not_equal(f->settings.pattern, c->defaults.pattern);
}

static void test_builtin_defaults(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A);
	assert_loaded();
	const struct config *c = E.cfg;

	assert_string_equal(c->api.base_url, "https://api.resend.com");
	assert_null(c->api.api_key_env); /* neither: the default chain (apikey.h) */
	assert_null(c->api.api_key_file);
	assert_null(c->api.user_agent_suffix);
	assert_int_equal(c->api.max_in_flight, 4);
	assert_true(c->api.requests_per_second == 10);
	assert_true(c->api.rate_share == 1);
	assert_int_equal(c->api.connect_timeout_s, 10);
	assert_int_equal(c->api.request_timeout_s, 600);
	assert_null(c->api.ca_file);
	assert_int_equal(c->api.shutdown_timeout_s, 30);
	assert_int_equal(c->retry.max_attempts, 8);
	assert_int_equal(c->retry.initial_delay_ms, 1000);
	assert_int_equal(c->retry.max_delay_ms, 300000);
	assert_settings(&c->defaults, 2000, 30, "*.csv", MAX_FILE_DEFAULT, CONFIG_ON_CONFLICT_UPSERT,
			true);
	assert_int_equal(c->log_level, CONFIG_LOG_INFO);
	assert_int_equal(c->log_format, CONFIG_LOG_TEXT);
	assert_int_equal(c->n_folders, 1);
	assert_settings(&c->folders[0].settings, 2000, 30, "*.csv", MAX_FILE_DEFAULT,
			CONFIG_ON_CONFLICT_UPSERT, true);
	assert_csv_settings(&c->defaults, DEFAULT_CSV_SETTINGS);
	assert_csv_settings(&c->folders[0].settings, DEFAULT_CSV_SETTINGS);
	assert_int_equal(c->folders[0].settings.coalesce, CONFIG_COALESCE_AUTO);
	assert_int_equal(c->folders[0].settings.coalesce_max_files, 500);
	assert_int_equal(c->folders[0].settings.coalesce_max_rows, 100000);
	assert_dup_settings(&c->defaults, CONFIG_ON_DUPLICATE_SKIP, WINDOW_DEFAULT);
	assert_dup_settings(&c->folders[0].settings, CONFIG_ON_DUPLICATE_SKIP, WINDOW_DEFAULT);
	assert_string_equal(c->state_dir, CONFIG_STATE_DIR_DEFAULT);
	assert_string_equal(c->state_dir, "/var/lib/resend-dropd");
	assert_int_equal(c->ledger_keep_days, 365);
	assert_false(c->folders[0].column_map.present);
	assert_int_equal(c->folders[0].n_segments, 0);
	assert_int_equal(c->folders[0].n_topics, 0);
}

static void test_empty_sections_and_null_values(void **state)
{
	(void)state;
	load("api:\n"
	     "  ca_file:\n"
	     "  api_key_file: ~\n"
	     "  user_agent_suffix: null\n"
	     "retry: {}\n"
	     "defaults: {}\n"
	     "log: {}\n"
	     "folders:\n" FOLDER_A);
	assert_loaded();
	assert_null(E.cfg->api.ca_file);
	assert_null(E.cfg->api.api_key_file);
	assert_null(E.cfg->api.user_agent_suffix);
	assert_int_equal(E.cfg->retry.max_attempts, 8);
	assert_settings(&E.cfg->defaults, 2000, 30, "*.csv", MAX_FILE_DEFAULT,
			CONFIG_ON_CONFLICT_UPSERT, true);
}

static void test_folder_overrides_every_setting(void **state)
{
	(void)state;
	load("defaults:\n"
	     "  settle_ms: 1500\n"
	     "  rescan_s: 45\n"
	     "  pattern: \"*.dat\"\n"
	     "  max_file_bytes: 5000\n"
	     "  on_conflict: skip\n"
	     "  follow_import: false\n"
	     "folders:\n"
	     "  - name: all\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "    settle_ms: 0\n"
	     "    rescan_s: 86400\n"
	     "    pattern: \"export_*.CSV\"\n"
	     "    max_file_bytes: 1099511627776\n"
	     "    on_conflict: upsert\n"
	     "    follow_import: true\n"
	     "  - name: none\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "  - name: some\n"
	     "    inbox: @TMP@/c/in\n"
	     "    done: @TMP@/c/done\n"
	     "    failed: @TMP@/c/failed\n"
	     "    pattern: \"*\"\n"
	     "    follow_import: TRUE\n");
	assert_loaded();
	assert_int_equal(E.cfg->n_folders, 3);
	assert_settings(&E.cfg->defaults, 1500, 45, "*.dat", 5000, CONFIG_ON_CONFLICT_SKIP, false);
	assert_settings(&E.cfg->folders[0].settings, 0, 86400, "export_*.CSV", UINT64_C(1) << 40,
			CONFIG_ON_CONFLICT_UPSERT, true);
	assert_settings(&E.cfg->folders[1].settings, 1500, 45, "*.dat", 5000,
			CONFIG_ON_CONFLICT_SKIP, false);
	assert_settings(&E.cfg->folders[2].settings, 1500, 45, "*", 5000, CONFIG_ON_CONFLICT_SKIP,
			true);
	/* An override does not leak into the defaults. */
	assert_string_equal(E.cfg->defaults.pattern, "*.dat");
}

/* Defaults may come after the folders in the file: a folder still inherits them. */
static void test_defaults_after_folders(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "defaults:\n"
	     "  rescan_s: 7\n"
	     "  on_conflict: skip\n");
	assert_loaded();
	assert_settings(&E.cfg->folders[0].settings, 2000, 7, "*.csv", MAX_FILE_DEFAULT,
			CONFIG_ON_CONFLICT_SKIP, true);
}

static void test_range_limits_accepted(void **state)
{
	(void)state;
	load("api:\n"
	     "  max_in_flight: 64\n"
	     "  requests_per_second: 1000\n"
	     "  connect_timeout_s: 300\n"
	     "  request_timeout_s: 86400\n"
	     "  shutdown_timeout_s: 0\n"
	     "retry:\n"
	     "  max_attempts: 100\n"
	     "  initial_delay_ms: 3600000\n"
	     "  max_delay_ms: 86400000\n"
	     "defaults:\n"
	     "  settle_ms: 3600000\n"
	     "  rescan_s: 1\n"
	     "  max_file_bytes: 1\n"
	     "folders:\n" FOLDER_A);
	assert_loaded();
	assert_int_equal(E.cfg->api.max_in_flight, 64);
	assert_true(E.cfg->api.requests_per_second == 1000);
	assert_int_equal(E.cfg->api.connect_timeout_s, 300);
	assert_int_equal(E.cfg->api.request_timeout_s, 86400);
	assert_int_equal(E.cfg->api.shutdown_timeout_s, 0);
	assert_int_equal(E.cfg->retry.max_attempts, 100);
	assert_int_equal(E.cfg->retry.initial_delay_ms, 3600000);
	assert_int_equal(E.cfg->retry.max_delay_ms, 86400000);
	assert_int_equal(E.cfg->defaults.settle_ms, 3600000);
	assert_int_equal(E.cfg->defaults.rescan_s, 1);
	assert_int_equal(E.cfg->defaults.max_file_bytes, 1);

	load("api:\n"
	     "  max_in_flight: 1\n"
	     "  requests_per_second: 0.01\n"
	     "folders:\n" FOLDER_A);
	assert_loaded();
	assert_true(E.cfg->api.requests_per_second == 0.01);

	/* 0: no client-side ceiling. */
	load("api:\n"
	     "  requests_per_second: 0\n"
	     "folders:\n" FOLDER_A);
	assert_loaded();
	assert_true(E.cfg->api.requests_per_second == 0);
	load("api:\n"
	     "  requests_per_second: -1\n"
	     "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:24: api.requests_per_second: expected a number from 0 to 1000, "
		      "got '-1'");
	load("api:\n"
	     "  requests_per_second: .nan\n"
	     "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:24: api.requests_per_second: expected a number from 0 to 1000, "
		      "got '.nan'");
	load("api:\n"
	     "  max_in_flight: 18446744073709551617\n"
	     "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:18: api.max_in_flight: expected an integer from 1 to 64, got "
		      "'18446744073709551617'");
}

static void test_base_url_trailing_slash_stripped(void **state)
{
	(void)state;
	load("api:\n  base_url: https://api.example.test/\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api.base_url, "https://api.example.test");
	load("api:\n  base_url: https://api.example.test/v1//\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api.base_url, "https://api.example.test/v1");
	load("api:\n  base_url: https://api.example.test:8443/v1\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api.base_url, "https://api.example.test:8443/v1");
}

static void test_http_base_url_loopback_only(void **state)
{
	static const char *const ok[] = {"http://127.0.0.1:8025", "http://localhost:8025/",
					 "http://[::1]:8025", "http://127.0.0.53"};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char yaml[512];
		snprintf(yaml, sizeof(yaml), "api:\n  base_url: %s\nfolders:\n" FOLDER_A, ok[i]);
		load(yaml);
		if (E.r != 0) {
			print_errors();
			fail_msg("base_url %s was refused", ok[i]);
		}
	}
	assert_string_equal(E.cfg->api.base_url, "http://127.0.0.53");

	load("api:\n  base_url: http://api.resend.com\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: http:// would send the API key unencrypted; use "
		      "https:// (plain http is allowed only for loopback hosts such as 127.0.0.1, "
		      "got 'api.resend.com')");
	load("api:\n  base_url: http://localhost.evil.example/\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: http:// would send the API key unencrypted*");
	load("api:\n  base_url: http://127.0.0.1.evil.example/\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: http:// would send the API key unencrypted*");
	load("api:\n  base_url: http://10.1.2.3\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: http:// would send the API key unencrypted*");
}

static void test_base_url_bad(void **state)
{
	(void)state;
	load("api:\n  base_url: ftp://api.resend.com\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: expected an https:// URL, got "
		      "'ftp://api.resend.com'");
	load("api:\n  base_url: api.resend.com\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: 'api.resend.com' is not a valid URL*");
	load("api:\n  base_url: \"https://api.resend.com#top\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: a base URL takes no query or fragment, got "
		      "'https://api.resend.com#top'");
	/* An empty fragment: curl says "none", but the endpoint would become the fragment
	 * (found by fuzzing). */
	load("api:\n  base_url: \"https://api.resend.com/v1#\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: a base URL takes no query or fragment, got "
		      "'https://api.resend.com/v1#'");
	load("api:\n  base_url: \"\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: api.base_url: expected a non-empty string");
}

/* ---- the API key ---------------------------------------------------------------------------- */

static void test_api_key_from_default_env(void **state)
{
	(void)state;
	/* An api: section that leaves the key source alone. */
	load_with_key("api:\n  max_in_flight: 2\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, KEY_DEFAULT);
}

/* The documented default (api_key_env: RESEND_API_KEY) holds without an api: section too. */
static void test_api_key_from_default_env_without_api_section(void **state)
{
	(void)state;
	load_with_key("folders:\n" FOLDER_A);
	assert_loaded();
	assert_non_null(E.cfg->api_key);
	assert_string_equal(E.cfg->api_key, KEY_DEFAULT);
}

static void test_api_key_from_named_env(void **state)
{
	(void)state;
	load_with_key("api:\n  api_key_env: RDD_TEST_API_KEY\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, KEY_CUSTOM);
	assert_string_equal(E.cfg->api.api_key_env, "RDD_TEST_API_KEY");
}

static void test_api_key_env_unset(void **state)
{
	(void)state;
	load_with_key("api:\n  api_key_env: RDD_UNSET_API_KEY\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:16: api.api_key_env: no API key: environment variable "
		      "RDD_UNSET_API_KEY is not set (set it, or set api.api_key_file, or neither)");

	setenv("RDD_UNSET_API_KEY", "", 1);
	load_with_key("api:\n  api_key_env: RDD_UNSET_API_KEY\nfolders:\n" FOLDER_A);
	unsetenv("RDD_UNSET_API_KEY");
	EXPECT_ERRORS("@FILE@:2:16: api.api_key_env: no API key: environment variable "
		      "RDD_UNSET_API_KEY is not set (set it, or set api.api_key_file, or neither)");
}

/* Neither api_key_env nor api_key_file: RESEND_API_KEY, else the systemd credential, else
 * the key file; the error says where it looked, at the api: section (or the file's start). */
static void test_api_key_default_chain(void **state)
{
	char dir[] = "/tmp/rdd-creds-XXXXXX", path[64];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	unsetenv("RESEND_API_KEY");
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	load_with_key("api:\n  max_in_flight: 2\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:3: api: no API key: '" APIKEY_DEFAULT_FILE "' does not exist (the "
		      "unit loads it as the credential 'api_key' when it starts: write the key "
		      "there, readable by root only, then systemctl restart resend-dropd), and "
		      "RESEND_API_KEY is not set");
	load_with_key("folders:\n" FOLDER_A);
	assert_int_equal(E.errs.count, 1);
	assert_non_null(strstr(E.errs.items[0], ":1:1: api: no API key: '"));

	/* The unit's placeholder is no key either. */
	snprintf(path, sizeof(path), "%s/api_key", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(APIKEY_CREDENTIAL_PLACEHOLDER, f);
	fclose(f);
	load_with_key("folders:\n" FOLDER_A);
	assert_int_equal(E.errs.count, 1);

	/* The credential... */
	f = fopen(path, "w");
	fputs("re_from_credential\n", f);
	fclose(f);
	load_with_key("folders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, "re_from_credential");
	assert_string_equal(E.cfg->api_key_source, "the systemd credential 'api_key'");

	/* ... which the environment variable beats. */
	setenv("RESEND_API_KEY", KEY_DEFAULT, 1);
	load_with_key("folders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, KEY_DEFAULT);
	assert_string_equal(E.cfg->api_key_source, "environment variable RESEND_API_KEY");

	unsetenv("CREDENTIALS_DIRECTORY");
	unlink(path);
	rmdir(dir);
}

static void test_api_key_env_bad_value_not_echoed(void **state)
{
	(void)state;
	setenv("RDD_TEST_API_KEY", "re_SECRET with spaces", 1);
	load_with_key("api:\n  api_key_env: RDD_TEST_API_KEY\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:16: api.api_key_env: environment variable RDD_TEST_API_KEY does not "
		      "hold one API key (printable characters, no spaces)");
	assert_null(strstr(E.errs.items[0], "SECRET"));
}

static void test_api_key_env_name_invalid(void **state)
{
	(void)state;
	load("api:\n  api_key_env: RESEND-API-KEY\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:16: api.api_key_env: expected an environment variable name "
		      "(letters, digits, underscore), got 'RESEND-API-KEY'");
	load("api:\n  api_key_env: 1KEY\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:16: api.api_key_env: expected an environment variable name*");
	/* Said once, escaped; not looked up as well (found by fuzzing: a second error printed
	 * the name with its control characters). */
	load("api:\n  api_key_env: \"RESEND\\tKEY\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:16: api.api_key_env: expected an environment variable name*");
}

static void test_api_key_file_trailing_newline_trimmed(void **state)
{
	(void)state;
	write_str("key", "re_file_SECRET_77\n");
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, "re_file_SECRET_77");
	assert_path(E.cfg->api.api_key_file, "key");

	write_str("key", "re_file_SECRET_78\r\n");
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, "re_file_SECRET_78");
}

static void test_api_key_file_without_newline(void **state)
{
	(void)state;
	write_str("key", "re_file_SECRET_79");
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->api_key, "re_file_SECRET_79");
}

static void test_api_key_file_bad(void **state)
{
	char big[5000];

	(void)state;
	load_with_key("api:\n  api_key_file: @TMP@/missing\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:17: api.api_key_file: cannot read API key file '@TMP@/missing': No "
		      "such file or directory");
	load_with_key("api:\n  api_key_file: @TMP@/a\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:17: api.api_key_file: API key file '@TMP@/a' is not a regular "
		      "file");

	write_str("key", "two SECRET_words\n");
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:17: api.api_key_file: API key file '@TMP@/key' does not hold one "
		      "key (printable characters, no spaces)");
	assert_null(strstr(E.errs.items[0], "SECRET"));

	write_str("key", "");
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:17: api.api_key_file: API key file '@TMP@/key' does not hold one*");

	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/key", E.dir);
	write_file(path, "re_SECRET\0tail", 14);
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:17: api.api_key_file: API key file '@TMP@/key' does not hold one*");

	memset(big, 'k', sizeof(big));
	write_file(path, big, sizeof(big));
	load_with_key("api:\n  api_key_file: @TMP@/key\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:17: api.api_key_file: API key file '@TMP@/key' is larger than 4096 "
		      "bytes: is it the right file?");
}

static void test_api_key_both_sources(void **state)
{
	(void)state;
	write_str("key", "re_file_SECRET");
	load_with_key("api:\n"
		      "  api_key_env: RESEND_API_KEY\n"
		      "  api_key_file: @TMP@/key\n"
		      "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:3:17: api.api_key_file: set either api_key_env or api_key_file, not "
		      "both (or neither: then the key is RESEND_API_KEY, else the systemd "
		      "credential 'api_key', else the key file)");
}

/* A relative api_key_file is one clear error (in a child: it used to crash). */
static void test_api_key_file_relative(void **state)
{
	(void)state;
	static const char yaml[] = "api:\n  api_key_file: relative/key\nfolders:\n" FOLDER_A;

	iso_add("relative.yaml", yaml, sizeof(yaml) - 1, 0,
		"@FILE@:2:17: api.api_key_file: expected an absolute path, got 'relative/key'");
	iso_run(10, "api_key_file: relative/key");
}

static void test_api_key_never_in_errors(void **state)
{
	(void)state;
	setenv("RESEND_API_KEY", "re_leak_SECRET_1234", 1);
	load_with_key("api:\n"
		      "  max_in_flight: 0\n"
		      "  base_url: http://example.com\n"
		      "folders:\n" FOLDER_A "    pattern: a/b\n");
	assert_true(E.r < 0);
	assert_true(E.errs.count >= 3);
	for (size_t i = 0; i < E.errs.count; i++) {
		assert_null(strstr(E.errs.items[i], "re_leak"));
		assert_null(strstr(E.errs.items[i], "SECRET"));
	}
}

/* ---- other values ------------------------------------------------------------------------------ */

static void test_ca_file_and_user_agent(void **state)
{
	(void)state;
	load("api:\n"
	     "  ca_file: @TMP@/ca.pem\n"
	     "  user_agent_suffix: \"\"\n"
	     "folders:\n" FOLDER_A);
	assert_loaded();
	assert_path(E.cfg->api.ca_file, "ca.pem");
	assert_non_null(E.cfg->api.user_agent_suffix);
	assert_string_equal(E.cfg->api.user_agent_suffix, "");

	load("api:\n"
	     "  ca_file: @TMP@/none.pem\n"
	     "  user_agent_suffix: \"x\\r\\nX-Injected: 1\"\n"
	     "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:12: api.ca_file: cannot read CA file '@TMP@/none.pem': No such file "
		      "or directory",
		      "@FILE@:3:22: api.user_agent_suffix: control characters are not allowed in a "
		      "header value");
}

static void test_log_levels_and_formats(void **state)
{
	static const char *const levels[] = {"error", "warning", "info", "debug"};
	char yaml[512];

	(void)state;
	for (int i = 0; i < 4; i++) {
		snprintf(yaml, sizeof(yaml), "log:\n  level: %s\n  format: %s\nfolders:\n" FOLDER_A,
			 levels[i], i % 2 ? "json" : "text");
		load(yaml);
		assert_loaded();
		assert_int_equal(E.cfg->log_level, i);
		assert_int_equal(E.cfg->log_format, i % 2 ? CONFIG_LOG_JSON : CONFIG_LOG_TEXT);
	}
	load("log:\n  level: INFO\n  format: [text]\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:10: log.level: expected one of error, warning, info, debug, got "
		      "'INFO'",
		      "@FILE@:3:11: log.format: expected one of text, json, got a list");
}

static void test_booleans(void **state)
{
	(void)state;
	load("defaults:\n  follow_import: False\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_false(E.cfg->defaults.follow_import);
	load("defaults:\n  follow_import: \"true\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:18: defaults.follow_import: expected true or false, got a quoted "
		      "string");
	load("defaults:\n  follow_import: 1\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:18: defaults.follow_import: expected true or false, got '1'");
}

static void test_folder_names(void **state)
{
	(void)state;
	load("folders:\n"
	     "  - name: Team_1.eu-west\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n");
	assert_loaded();
	assert_string_equal(E.cfg->folders[0].name, "Team_1.eu-west");

	load("folders:\n"
	     "  - name: -a\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "  - name: a/b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n");
	EXPECT_ERRORS("@FILE@:2:11: folders[0].name: invalid folder name '-a'*",
		      "@FILE@:6:11: folders[1].name: invalid folder name 'a/b'*");
}

static void test_duplicate_folder_names(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "  - { name: a, inbox: @TMP@/c/in, done: @TMP@/c/done, failed: @TMP@/c/failed }\n");
	EXPECT_ERRORS("@FILE@:10:5: folders: folder name 'a' is used twice (also folders[0])");
}

/* ---- folder directories --------------------------------------------------------------------- */

static void test_folders_share_a_directory(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "  - name: b\n"
	     "    inbox: @TMP@/a/done\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n");
	EXPECT_ERRORS("@FILE@:7:12: folders[1].inbox: '@TMP@/a/done' is also used by "
		      "folders[0].done: each folder needs its own directories");

	/* The same directory spelled differently, and through a symlink. */
	char target[PATH_MAX + 16], link[PATH_MAX + 16];
	snprintf(target, sizeof(target), "%s/a/in", E.dir);
	snprintf(link, sizeof(link), "%s/link-to-a-in", E.dir);
	assert_int_equal(symlink(target, link), 0);
	load("folders:\n" FOLDER_A "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/link-to-a-in\n"
	     "    failed: @TMP@//a//in/.\n");
	/* A symlink is refused for itself: the daemon never follows one to a folder. */
	EXPECT_ERRORS("@FILE@:8:11: folders[1].done: '@TMP@/link-to-a-in' is a symbolic link, "
		      "which resend-dropd does not follow: name the directory itself "
		      "('@TMP@/a/in')",
		      "@FILE@:9:13: folders[1].failed: '@TMP@//a//in/.' is also used by "
		      "folders[0].inbox: each folder needs its own directories");
}

/* --check applies the daemon's rule (fsops_path_dir): a link is refused whatever it points
 * to, even one that points nowhere yet, which the daemon could never open either. */
static void test_folder_links_refused_whatever_they_point_to(void **state)
{
	char path[PATH_MAX + 32];

	(void)state;
	snprintf(path, sizeof(path), "%s/nowhere", E.dir);
	assert_int_equal(symlink("/nonexistent/resend-dropd-test", path), 0);
	write_str("a-file", "x");
	snprintf(path, sizeof(path), "%s/to-file", E.dir);
	assert_int_equal(symlink("a-file", path), 0);
	load("folders:\n" FOLDER_A "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/nowhere\n"
	     "    failed: @TMP@/to-file\n");
	EXPECT_ERRORS("@FILE@:8:11: folders[1].done: '@TMP@/nowhere' is a symbolic link, "
		      "which resend-dropd does not follow: name the directory itself",
		      "@FILE@:9:13: folders[1].failed: '@TMP@/to-file' is a symbolic link, "
		      "which resend-dropd does not follow: name the directory itself");
}

/* A folder's processing directory is the daemon's: no folder may use it as a directory. */
static void test_a_processing_directory_is_nobodys_folder(void **state)
{
	char proc[PATH_MAX + 32];

	(void)state;
	snprintf(proc, sizeof(proc), "%s/a/in/.resend-dropd", E.dir);
	assert_int_equal(mkdir(proc, 0700), 0);
	load("folders:\n" FOLDER_A "  - name: b\n"
	     "    inbox: @TMP@/a/in/.resend-dropd\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n");
	EXPECT_ERRORS("@FILE@:7:12: folders[1].inbox: '@TMP@/a/in/.resend-dropd' is the "
		      "processing directory of folders[0].inbox: it belongs to the daemon");
	assert_int_equal(rmdir(proc), 0);
}

static void test_inbox_equal_to_done_or_failed(void **state)
{
	(void)state;
	load("folders:\n"
	     "  - name: a\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/in\n"
	     "    failed: @TMP@/a/in/\n");
	EXPECT_ERRORS("@FILE@:4:11: folders[0].done: is the same directory as the inbox: finished "
		      "files would be picked up again",
		      "@FILE@:5:13: folders[0].failed: is the same directory as the inbox: finished "
		      "files would be picked up again",
		      "@FILE@:5:13: folders[0].failed: is the same directory as done: success and "
		      "failure would be indistinguishable");
}

static void test_directory_missing_or_not_a_directory(void **state)
{
	(void)state;
	load("folders:\n"
	     "  - name: a\n"
	     "    inbox: @TMP@/nowhere/in\n"
	     "    done: @TMP@/notadir\n"
	     "    failed: a/failed\n");
	EXPECT_ERRORS("@FILE@:3:12: folders[0].inbox: directory '@TMP@/nowhere/in' does not exist "
		      "(create it, or correct the path)",
		      "@FILE@:4:11: folders[0].done: '@TMP@/notadir' is not a directory",
		      "@FILE@:5:13: folders[0].failed: expected an absolute path, got 'a/failed'");
}

static void test_done_on_another_filesystem(void **state)
{
	char other[] = "/dev/shm/rdd-config-XXXXXX";
	struct stat a, b;

	(void)state;
	if (stat("/dev/shm", &b) != 0 || stat(E.dir, &a) != 0 || a.st_dev == b.st_dev ||
	    !mkdtemp(other)) {
		skip();
		return;
	}
	char yaml[2048];
	snprintf(yaml, sizeof(yaml),
		 "folders:\n"
		 "  - name: a\n"
		 "    inbox: @TMP@/a/in\n"
		 "    done: @TMP@/a/done\n"
		 "    failed: %s\n",
		 other);
	load(yaml);
	rmdir(other);
	char want[1024];
	snprintf(want, sizeof(want),
		 "@FILE@:5:13: folders[0].failed: is on another filesystem than the inbox "
		 "'@TMP@/a/in': files are moved by rename, which cannot cross filesystems");
	EXPECT_ERRORS(want);
}

static void test_many_folders(void **state)
{
	size_t cap = 300 * 200, o = 0;
	char *yaml = malloc(cap);
	char name[32];

	(void)state;
	assert_non_null(yaml);
	o += (size_t)snprintf(yaml + o, cap - o, "folders:\n");
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "f%03d", i);
		make_folder_dirs(name);
		o += (size_t)snprintf(yaml + o, cap - o,
				      "  - name: %s\n    inbox: @TMP@/%s/in\n    done: @TMP@/%s/done\n"
				      "    failed: @TMP@/%s/failed\n",
				      name, name, name, name);
	}
	load(yaml);
	assert_loaded();
	assert_int_equal(E.cfg->n_folders, 200);
	assert_string_equal(E.cfg->folders[199].name, "f199");
	assert_path(E.cfg->folders[199].failed, "f199/failed");

	/* Past the limit: one error, not 257 folders' worth. */
	o = (size_t)snprintf(yaml, cap, "folders:\n");
	for (int i = 0; i < 257; i++)
		o += (size_t)snprintf(yaml + o, cap - o, "  - {name: f%d}\n", i);
	load(yaml);
	EXPECT_ERRORS("@FILE@:2:3: folders: 257 folders is more than the limit of 256");
	free(yaml);
}

/* ---- several errors, order, limits ---------------------------------------------------------- */

/* Checked in the order the code validates (api, retry, defaults, log, folders) but reported in
 * file order. */
static void test_errors_in_file_order(void **state)
{
	(void)state;
	load("folders:\n"
	     "  - name: a\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "    segments: [x]\n"
	     "log: {level: loud, format: xml}\n"
	     "defaults: {rescan_s: 0}\n"
	     "retry: {max_attempts: 0}\n"
	     "api: {max_in_flight: 99, connect_timeout_s: 0}\n");
	EXPECT_ERRORS("@FILE@:6:16: folders[0].segments[0]: expected a UUID (8-4-4-4-12 "
		      "hexadecimal digits, as shown in the Resend dashboard), got 'x'",
		      "@FILE@:7:14: log.level: expected one of error, warning, info, debug, got "
		      "'loud'",
		      "@FILE@:7:28: log.format: expected one of text, json, got 'xml'",
		      "@FILE@:8:22: defaults.rescan_s: 0 is out of range: expected 1 to 86400",
		      "@FILE@:9:23: retry.max_attempts: 0 is out of range: expected 1 to 100",
		      "@FILE@:10:22: api.max_in_flight: 99 is out of range: expected 1 to 64",
		      "@FILE@:10:45: api.connect_timeout_s: 0 is out of range: expected 1 to 300");
}

static void test_too_many_errors(void **state)
{
	size_t cap = 300 * 32 + 256, o = 0;
	char *yaml = malloc(cap);

	(void)state;
	assert_non_null(yaml);
	o += (size_t)snprintf(yaml + o, cap - o, "folders:\n" FOLDER_A "log:\n");
	for (int i = 0; i < 300; i++)
		o += (size_t)snprintf(yaml + o, cap - o, "  bogus%d: 1\n", i);
	load(yaml);
	free(yaml);
	assert_int_equal(E.r, -EINVAL);
	assert_int_equal(E.errs.count, 201);
	char *first = xexpand("@FILE@:7:3: log: unknown key 'bogus0' (expected one of: level, "
			      "format)");
	assert_string_equal(E.errs.items[0], first);
	free(first);
	char *last = xexpand("@FILE@: too many errors, stopped after 200");
	assert_string_equal(E.errs.items[200], last);
	free(last);
}

/* Errors left in errs by an earlier call are kept; a success appends nothing. */
static void test_errors_accumulate(void **state)
{
	struct config *cfg = NULL;

	(void)state;
	load("folders: []\n");
	assert_int_equal(E.errs.count, 1);
	assert_int_equal(config_load(E.file, CONFIG_LOAD_NO_API_KEY, &cfg, &E.errs), -EINVAL);
	assert_null(cfg);
	assert_int_equal(E.errs.count, 2);
	assert_string_equal(E.errs.items[0], E.errs.items[1]);

	load("folders:\n" FOLDER_A);
	assert_loaded();
	E.errs.items = malloc(sizeof(char *));
	E.errs.items[0] = strdup("earlier");
	E.errs.count = 1;
	struct config *again = NULL;
	assert_int_equal(config_load(E.file, CONFIG_LOAD_NO_API_KEY, &again, &E.errs), 0);
	assert_int_equal(E.errs.count, 1);
	config_free(again);
}

/* ---- the file itself -------------------------------------------------------------------------- */

static void test_config_file_missing_or_not_regular(void **state)
{
	struct config *cfg = (struct config *)0x1;
	char path[PATH_MAX + 16], want[PATH_MAX + 128];

	(void)state;
	snprintf(path, sizeof(path), "%s/absent.yaml", E.dir);
	assert_int_equal(config_load(path, 0, &cfg, &E.errs), -ENOENT);
	assert_ptr_equal(cfg, (struct config *)0x1); /* not written on failure */
	assert_int_equal(E.errs.count, 1);
	snprintf(want, sizeof(want), "%s: cannot open configuration: No such file or directory",
		 path);
	assert_string_equal(E.errs.items[0], want);
	config_errors_clear(&E.errs);

	snprintf(path, sizeof(path), "%s/a", E.dir);
	assert_true(config_load(path, 0, &cfg, &E.errs) < 0);
	assert_int_equal(E.errs.count, 1);
	snprintf(want, sizeof(want), "%s: not a regular file", path);
	assert_string_equal(E.errs.items[0], want);
}

/* A FIFO as the configuration (a typo, or /dev/stdin under a supervisor) must not hang. */
static void test_config_file_fifo(void **state)
{
	char path[PATH_MAX + 16];

	(void)state;
	snprintf(path, sizeof(path), "%s/fifo.yaml", E.dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	iso_add("fifo.yaml", NULL, 0, 0, "@FILE@: not a regular file");
	iso_run(30, "configuration that is a FIFO");
}

static void test_empty_file(void **state)
{
	(void)state;
	load("");
	EXPECT_ERRORS("@FILE@:1:1: configuration is empty: expected a mapping with at least "
		      "'folders'");
	load("# only a comment\n\n");
	EXPECT_ERRORS("@FILE@:1:1: configuration is empty: expected a mapping with at least "
		      "'folders'");
	load("---\n...\n");
	EXPECT_ERRORS("@FILE@:2:1: configuration: expected a mapping, got an empty value");
}

static void test_root_not_a_mapping(void **state)
{
	(void)state;
	load("- folders\n");
	EXPECT_ERRORS("@FILE@:1:1: configuration: expected a mapping, got a list");
	load("just text\n");
	EXPECT_ERRORS("@FILE@:1:1: configuration: expected a mapping, got a scalar");
}

static void test_huge_file(void **state)
{
	size_t n = CONFIG_MAX_FILE_SIZE + 1;
	char *buf = malloc(n);

	(void)state;
	assert_non_null(buf);
	memset(buf, '#', n);
	for (size_t i = 79; i < n; i += 80)
		buf[i] = '\n';
	write_file(E.file, buf, n);
	reset();
	E.r = config_load(E.file, 0, &E.cfg, &E.errs);
	check_invariants();
	assert_int_equal(E.r, -EFBIG);
	EXPECT_ERRORS("@FILE@: configuration is 4194305 bytes, over the limit of 4194304 bytes: is "
		      "it the right file?");

	/* Exactly at the limit is fine: a valid configuration padded with comments. */
	char *head = expand("folders:\n" FOLDER_A, strlen("folders:\n" FOLDER_A), NULL);
	size_t hl = strlen(head);
	memcpy(buf, head, hl);
	free(head);
	memset(buf + hl, '#', CONFIG_MAX_FILE_SIZE - hl);
	for (size_t i = hl + 79; i < CONFIG_MAX_FILE_SIZE; i += 80)
		buf[i] = '\n';
	buf[CONFIG_MAX_FILE_SIZE - 1] = '\n';
	write_file(E.file, buf, CONFIG_MAX_FILE_SIZE);
	free(buf);
	reset();
	E.r = config_load(E.file, CONFIG_LOAD_NO_API_KEY, &E.cfg, &E.errs);
	check_invariants();
	assert_loaded();
	assert_int_equal(E.cfg->n_folders, 1);
}

static void test_yaml_syntax_errors(void **state)
{
	(void)state;
	load("api:\n"
	     "  base_url: https://api.resend.com\n"
	     "  max_in_flight: [4\n"
	     "folders: []\n");
	EXPECT_ERRORS("@FILE@:4:8: YAML syntax error: did not find expected ',' or ']' while "
		      "parsing a flow sequence (line 3, column 18)");
	load("folders:\n"
	     "  - name: a\n"
	     "\tinbox: x\n");
	EXPECT_ERRORS("@FILE@:3:1: YAML syntax error: found a tab character that violates "
		      "indentation while scanning a plain scalar (line 2, column 11)");
	load("folders:\n"
	     "  - name: \"a\n");
	EXPECT_ERRORS("@FILE@:3:1: YAML syntax error: found unexpected end of stream while "
		      "scanning a quoted scalar (line 2, column 11)");
	load("folders: *nowhere\n");
	EXPECT_ERRORS("@FILE@:1:10: YAML syntax error: found undefined alias*");
	/* A syntax error in a second document is reported too. */
	load("folders:\n" FOLDER_A "---\n"
	     "a: [\n");
	EXPECT_ERRORS("@FILE@:8:1: YAML syntax error: did not find expected node content*");
}

static void test_invalid_text(void **state)
{
	static const char nul[] = "folders:\n  - name: a\0b\n";
	static const char bad[] = "log:\n  level: caf\xff\n";
	static const char cut[] = "log:\n  level: caf\xe9\n";

	(void)state;
	load_bytes(nul, sizeof(nul) - 1, CONFIG_LOAD_NO_API_KEY);
	EXPECT_ERRORS("@FILE@:2:12: invalid text: control characters are not allowed (byte 0x00); "
		      "the file must be UTF-8 YAML");
	load_bytes(bad, sizeof(bad) - 1, CONFIG_LOAD_NO_API_KEY);
	EXPECT_ERRORS("@FILE@:2:13: invalid text: invalid leading UTF-8 octet (byte 0xff); the file "
		      "must be UTF-8 YAML");
	/* The byte named is the one in the file. */
	load_bytes(cut, sizeof(cut) - 1, CONFIG_LOAD_NO_API_KEY);
	EXPECT_ERRORS("@FILE@:2:13: invalid text: incomplete UTF-8 octet sequence (byte 0xe9); the "
		      "file must be UTF-8 YAML");
}

/* Anything at all must give an error with a position (or a file-level one), never a crash. */
static void test_binary_garbage(void **state)
{
	static const char punct[] = "[]{}:-&*!|>'\"%@`#, \n\t?abc";
	unsigned seed = 20240611;
	char buf[4096];

	(void)state;
	for (int round = 0; round < 60; round++) {
		size_t n = 1 + (size_t)rand_r(&seed) % sizeof(buf);
		for (size_t i = 0; i < n; i++) {
			buf[i] = (char)(rand_r(&seed) & 0xff);
			/* Some rounds are mostly NULs, some mostly YAML punctuation. */
			if (round % 3 == 1 && rand_r(&seed) % 4)
				buf[i] = '\0';
			else if (round % 3 == 2)
				buf[i] = punct[(unsigned char)buf[i] % (sizeof(punct) - 1)];
		}
		load_bytes(buf, n, 0);
		if (E.r == 0)
			fail_msg("round %d: garbage loaded as a configuration", round);
		assert_true(E.errs.count >= 1);
	}
	static const char nuls[64] = {0};
	load_bytes(nuls, sizeof(nuls), 0);
	EXPECT_ERRORS("@FILE@:1:1: invalid text: control characters are not allowed (byte 0x00)*");
}

/* 100000 levels of flow nesting: no stack overflow, an error with a position, and in bounded
 * time (libyaml's scanner rechecks every open level on each token: quadratic without a limit). */
static void test_deep_nesting(void **state)
{
	const size_t depth = 100000;
	char *buf = E.scratch[0] = malloc(6 * depth + 1200000);
	size_t o;

	(void)state;
	assert_non_null(buf);
	memset(buf, '[', depth);
	buf[depth] = '\n';
	iso_add("open.yaml", buf, depth + 1, 0, NULL);

	memset(buf + depth, ']', depth);
	buf[2 * depth] = '\n';
	iso_add("balanced.yaml", buf, 2 * depth + 1, 0, NULL);

	o = (size_t)sprintf(buf, "folders: ");
	memset(buf + o, '[', depth);
	memset(buf + o + depth, ']', depth);
	buf[o + 2 * depth] = '\n';
	iso_add("folders.yaml", buf, o + 2 * depth + 1, 0, NULL);

	o = 0;
	for (size_t i = 0; i < depth; i++) {
		memcpy(buf + o, "{a: ", 4);
		o += 4;
	}
	buf[o++] = '1';
	memset(buf + o, '}', depth);
	o += depth;
	buf[o++] = '\n';
	iso_add("mappings.yaml", buf, o, 0, NULL);

	/* Block style: 1500 levels of indentation (about 1 MiB). */
	o = 0;
	for (size_t i = 0; i < 1500; i++) {
		memset(buf + o, ' ', i);
		o += i;
		memcpy(buf + o, "log:\n", 5);
		o += 5;
	}
	iso_add("block.yaml", buf, o, 0, NULL);
	/* A hang guard, not a speed target: without the depth limit this takes minutes. */
	iso_run(60, "100000 levels of nesting");
}

/* The same shapes, 20 levels deep (any sane depth limit allows that): the exact errors. */
static void test_nesting_errors(void **state)
{
	char buf[4096];
	size_t o;

	(void)state;
	memset(buf, '[', 20);
	buf[20] = '\n';
	load_bytes(buf, 21, 0);
	EXPECT_ERRORS("@FILE@:2:1: YAML syntax error: did not find expected node content while "
		      "parsing a flow node (line 2, column 1)");
	memset(buf + 20, ']', 20);
	buf[40] = '\n';
	load_bytes(buf, 41, 0);
	EXPECT_ERRORS("@FILE@:1:1: configuration: expected a mapping, got a list");

	o = (size_t)sprintf(buf, "folders: ");
	memset(buf + o, '[', 20);
	memset(buf + o + 20, ']', 20);
	buf[o + 40] = '\n';
	load_bytes(buf, o + 41, CONFIG_LOAD_NO_API_KEY);
	EXPECT_ERRORS("@FILE@:1:11: folders[0]: expected a mapping, got a list");

	o = 0;
	for (size_t i = 0; i < 20; i++) {
		memcpy(buf + o, "{a: ", 4);
		o += 4;
	}
	buf[o++] = '1';
	memset(buf + o, '}', 20);
	o += 20;
	buf[o++] = '\n';
	load_bytes(buf, o, CONFIG_LOAD_NO_API_KEY);
	EXPECT_ERRORS("@FILE@:1:1: missing required key 'folders': nothing to watch",
		      "@FILE@:1:2: unknown key 'a' (expected one of: api, retry, defaults, log, "
		      "folders, control, metrics, state_dir, ledger_keep_days, ledger, fleet, webhooks, hooks, emails)");
}

static void test_aliases_shared_column_map(void **state)
{
	(void)state;
	load_fixture("good/aliases.yaml", CONFIG_LOAD_NO_API_KEY);
	assert_loaded();
	assert_int_equal(E.cfg->n_folders, 2);
	for (size_t i = 0; i < 2; i++) {
		const struct config_folder *f = &E.cfg->folders[i];
		assert_true(f->column_map.present);
		assert_string_equal(f->column_map.email, "E-mail");
		assert_int_equal(f->column_map.n_properties, 1);
		assert_string_equal(f->column_map.properties[0].key, "plan");
		assert_string_equal(f->column_map.properties[0].column, "Plan");
		assert_int_equal(f->n_topics, 1);
		assert_int_equal(f->topics[0].subscription, CONFIG_SUB_OPT_OUT);
	}
	/* Each folder owns its copy: config_free must not free one twice. */
	assert_ptr_not_equal(E.cfg->folders[0].column_map.email, E.cfg->folders[1].column_map.email);

	/* An error inside a shared node is reported where it is written, for each user. */
	load("folders:\n"
	     "  - name: a\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "    segments: &s [nope]\n"
	     "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "    segments: *s\n");
	EXPECT_ERRORS("@FILE@:6:19: folders[0].segments[0]: expected a UUID*",
		      "@FILE@:6:19: folders[1].segments[0]: expected a UUID*");
}

/* Billion laughs: ten levels of nine aliases each, used where the schema walks lists. */
static void test_alias_bomb(void **state)
{
	char yaml[8192];
	size_t o = 0;

	(void)state;
	o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "x0: &x0 [lol, lol, lol, lol, lol, lol, "
							  "lol, lol, lol]\n");
	for (int i = 1; i < 10; i++) {
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "x%d: &x%d [", i, i);
		for (int j = 0; j < 9; j++)
			o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "%s*x%d", j ? ", " : "",
					      i - 1);
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "]\n");
	}
	snprintf(yaml + o, sizeof(yaml) - o,
		 "folders:\n"
		 "  - name: a\n"
		 "    inbox: @TMP@/a/in\n"
		 "    done: @TMP@/a/done\n"
		 "    failed: @TMP@/a/failed\n"
		 "    segments: *x9\n"
		 "    topics: *x9\n"
		 "  - *x9\n");
	double t0 = now_s();
	load(yaml);
	double dt = now_s() - t0;
	assert_true(E.r < 0);
	assert_true(E.errs.count > 10 && E.errs.count <= 201);
	/* A hang guard, not a speed target: expanding the aliases would take hours. */
	if (dt > 60.0)
		fail_msg("alias bomb took %.1f s to reject", dt);
}

/* libyaml's loader checks each new anchor against all earlier ones: 60000 anchors (under 1 MiB,
 * well within the size limit) cost seconds of CPU, and a 4 MiB file minutes. */
static void test_many_anchors(void **state)
{
	const int n = 60000;
	size_t cap = (size_t)n * 24 + 64, o = 0;
	char *yaml = E.scratch[0] = malloc(cap);

	(void)state;
	assert_non_null(yaml);
	o += (size_t)snprintf(yaml + o, cap - o, "x:\n");
	for (int i = 0; i < n; i++)
		o += (size_t)snprintf(yaml + o, cap - o, "  - &a%d 1\n", i);
	o += (size_t)snprintf(yaml + o, cap - o, "folders:\n" FOLDER_A);
	iso_add("anchors.yaml", yaml, o, CONFIG_LOAD_NO_API_KEY,
		"@FILE@:1002:5: more than 1000 anchors: not a resend-dropd configuration");
	/* A hang guard, not a speed target: without the anchor limit this takes minutes. */
	iso_run(60, "a configuration with 60000 anchors");
}

static void test_second_document_rejected(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "---\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:7:1: a second YAML document is not allowed here");
}

/* User text in messages is escaped: a name or key holding a newline cannot forge a line. */
static void test_errors_escape_control_characters(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "    column_map:\n"
	     "      email: E\n"
	     "      properties:\n"
	     "        \"a\\nb\": {column: X}\n");
	assert_int_equal(E.errs.count, 1);

	load("folders:\n"
	     "  - name: \"x\\ny\"\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "  - name: \"x\\ny\"\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n");
	assert_true(E.errs.count >= 2);

	load_with_key("api:\n  api_key_file: \"/nonexistent\\n@FILE@:1:1: forged\"\nfolders:\n" FOLDER_A);
	assert_int_equal(E.errs.count, 1);
}

/* ---- every kind of error in its place ---------------------------------------------------- */

static void test_unknown_keys_inline(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "    inbox_dir: /x\n"
	     "Folders: []\n");
	EXPECT_ERRORS("@FILE@:6:5: folders[0]: unknown key 'inbox_dir' (expected one of: name, "
		      "inbox, done, failed, column_map, segments, topics, receipts, settle_ms, rescan_s, "
		      "pattern, max_file_bytes, on_conflict, follow_import, max_upload_bytes, "
		      "invalid_rows, csv, on_duplicate, duplicate_window, coalesce, coalesce_max_files, coalesce_max_rows)",
		      "@FILE@:7:1: unknown key 'Folders' (expected one of: api, retry, defaults, "
		      "log, folders, control, metrics, state_dir, ledger_keep_days, ledger, fleet, webhooks, hooks, emails)");
	load("? [complex]\n: 1\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:3: expected a plain key, got a list");
}

/* control: and metrics: (issue 9): the socket's default, the TCP listener loopback only
 * unless allow_remote, every error at its position. */
static void test_control_and_metrics(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A);
	assert_loaded();
	assert_null(E.cfg->control.socket); /* where control_path.h says */
	assert_null(E.cfg->metrics.listen_host);

	load("control:\n  socket: /tmp/x.sock\nmetrics:\n  listen: \"[::1]:9464\"\nfolders:\n"
	     FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->control.socket, "/tmp/x.sock");
	assert_string_equal(E.cfg->metrics.listen_host, "::1");
	assert_int_equal(E.cfg->metrics.listen_port, 9464);

	load("metrics: {listen: \"localhost:1\"}\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->metrics.listen_host, "localhost");

	load("metrics: {listen: \"10.0.0.1:9464\", allow_remote: true}\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_true(E.cfg->metrics.allow_remote);

	load("metrics:\n  listen: 0.0.0.0:9464\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:11: metrics.listen: '0.0.0.0' is not a loopback address: metrics "
		      "are served to this host only unless metrics.allow_remote is true");

	load("metrics:\n  listen: \"127.0.0.1\"\n  allow_remote: maybe\n  port: 1\n"
	     "control:\n  socket: rel.sock\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:11: metrics.listen: expected HOST:PORT (an IPv6 address in "
		      "brackets), got '127.0.0.1'",
		      "@FILE@:3:17: metrics.allow_remote: expected true or false, got 'maybe'",
		      "@FILE@:4:3: metrics: unknown key 'port' (expected one of: listen, "
		      "allow_remote)",
		      "@FILE@:6:11: control.socket: expected an absolute path, got 'rel.sock'");

	load("metrics:\n  listen: \"127.0.0.1:0\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:11: metrics.listen: expected HOST:PORT (an IPv6 address in "
		      "brackets), got '127.0.0.1:0'");
	load("metrics:\n  listen: \"::1:80\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:11: metrics.listen: expected HOST:PORT (an IPv6 address in "
		      "brackets), got '::1:80'");
}

/* ledger: (issue 19): SQLite by default; PostgreSQL with libpq's connection string, checked
 * as libpq reads it, and never with a password in the configuration. */
static void test_ledger_backend(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A);
	assert_loaded();
	assert_int_equal(E.cfg->ledger.backend, CONFIG_LEDGER_SQLITE);
	assert_null(E.cfg->ledger.conninfo);
	assert_string_equal(config_ledger_backend_name(E.cfg->ledger.backend), "sqlite");

	load("ledger:\n  backend: postgresql\n  conninfo: \"host=/run/postgresql dbname=rdd\"\n"
	     "  password_file: /etc/resend-dropd/pgpass\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_int_equal(E.cfg->ledger.backend, CONFIG_LEDGER_POSTGRESQL);
	assert_string_equal(E.cfg->ledger.conninfo, "host=/run/postgresql dbname=rdd");
	assert_string_equal(E.cfg->ledger.password_file, "/etc/resend-dropd/pgpass");
	assert_string_equal(config_ledger_backend_name(E.cfg->ledger.backend), "postgresql");

	load("ledger: {backend: postgresql, conninfo: \"postgresql://rdd@db.example/rdd\"}\n"
	     "folders:\n" FOLDER_A);
	assert_loaded();

	load("ledger:\n  backend: postgresql\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:3: ledger: missing required key 'conninfo': the PostgreSQL "
		      "backend needs libpq's connection string, as in 'host=/run/postgresql "
		      "dbname=resend_dropd'");
	load("ledger:\n  backend: mysql\n  conninfo: \"host=x password=hunter2\"\n"
	     "  password_file: pgpass\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:12: ledger.backend: expected one of sqlite, postgresql, got "
		      "'mysql'",
		      "@FILE@:3:13: ledger.conninfo: has a password in it: the configuration is "
		      "no place for one; put it in ledger.password_file (libpq's .pgpass format), "
		      "or use a method without one (peer, certificates)",
		      "@FILE@:4:18: ledger.password_file: expected an absolute path, got 'pgpass'");
	load("ledger:\n  backend: postgresql\n  conninfo: \"postgresql://u:hunter2@h/db\"\n"
	     "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:3:13: ledger.conninfo: has a password in it: the configuration is "
		      "no place for one; put it in ledger.password_file (libpq's .pgpass format), "
		      "or use a method without one (peer, certificates)");
	load("ledger:\n  backend: postgresql\n  conninfo: \"host=x dbname\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:3:13: ledger.conninfo: not a PostgreSQL connection string (libpq: "
		      "missing \"=\" after \"dbname\" in connection info string)");
	load("ledger:\n  conninfo: \"dbname=x\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:13: ledger.conninfo: is for the postgresql backend; the sqlite "
		      "backend keeps its file in state_dir (set ledger.backend: postgresql)");
}

static void test_segments_and_topics(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "    segments:\n"
	     "      - { id: 78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6 }\n"
	     "      - 78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab7\n"
	     "    topics: []\n");
	assert_loaded();
	assert_int_equal(E.cfg->folders[0].n_segments, 2);
	assert_string_equal(E.cfg->folders[0].segments[0], "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6");
	assert_string_equal(E.cfg->folders[0].segments[1], "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab7");
	assert_int_equal(E.cfg->folders[0].n_topics, 0);

	load("folders:\n" FOLDER_A "    segments:\n"
	     "      - 78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6\n"
	     "      - [78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab7]\n"
	     "      - { id: [x] }\n"
	     "      - \"78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6\\0\"\n"
	     "    topics:\n"
	     "      - { id: 059ac693-2fc8-4c13-8b27-01350d638a17, subscription: opt_in }\n"
	     "      - { id: 059AC693-2FC8-4C13-8B27-01350D638A17, subscription: opt_out }\n"
	     "      - { subscription: opt_in }\n");
	EXPECT_ERRORS("@FILE@:8:9: folders[0].segments[1]: expected a UUID, got a list",
		      "@FILE@:9:15: folders[0].segments[2].id: expected a UUID, got a list",
		      "@FILE@:10:9: folders[0].segments[3]: expected a UUID (8-4-4-4-12 "
		      "hexadecimal digits, as shown in the Resend dashboard), got "
		      "'78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6'",
		      "@FILE@:13:9: folders[0].topics[1]: topic "
		      "059AC693-2FC8-4C13-8B27-01350D638A17 is listed twice",
		      "@FILE@:14:9: folders[0].topics[2]: missing required key 'id'");
}

static void test_properties(void **state)
{
	(void)state;
	load("folders:\n" FOLDER_A "    column_map:\n"
	     "      email: Email\n"
	     "      properties: {}\n");
	assert_loaded();
	assert_true(E.cfg->folders[0].column_map.present);
	assert_int_equal(E.cfg->folders[0].column_map.n_properties, 0);

	load("folders:\n" FOLDER_A "    column_map:\n"
	     "      email: Email\n"
	     "      first_name: \"\"\n"
	     "      properties: [plan]\n");
	EXPECT_ERRORS("@FILE@:8:19: folders[0].column_map.first_name: expected a non-empty string",
		      "@FILE@:9:19: folders[0].column_map.properties: expected a mapping, got a "
		      "list");
	load("folders:\n" FOLDER_A "    column_map:\n"
	     "      email: Email\n"
	     "      properties:\n"
	     "        plan: { column: Plan, type: String }\n"
	     "        ? [a]\n"
	     "        : { column: A }\n");
	EXPECT_ERRORS("@FILE@:9:37: folders[0].column_map.properties.plan.type: expected one of "
		      "string, number, boolean, got 'String'",
		      "@FILE@:10:11: folders[0].column_map.properties: expected a property key, got "
		      "a list");
}

/* A key that is present with a bad value gets one error, about the value; "missing required
 * key" would send the operator looking for a key that is there. */
static void test_present_but_invalid_not_missing(void **state)
{
	(void)state;
	load("folders:\n"
	     "  - name: [a]\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n");
	EXPECT_ERRORS("@FILE@:2:11: folders[0].name: expected a string, got a list");
	load("folders:\n"
	     "  - name: a\n"
	     "    inbox: \"\"\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n");
	EXPECT_ERRORS("@FILE@:3:12: folders[0].inbox: expected a non-empty string");
	load("folders:\n" FOLDER_A "    column_map:\n"
	     "      email: \"\"\n");
	EXPECT_ERRORS("@FILE@:7:14: folders[0].column_map.email: expected a non-empty string");
	load("folders:\n" FOLDER_A "    column_map:\n"
	     "      email: Email\n"
	     "      properties:\n"
	     "        plan: { column: [Plan] }\n");
	EXPECT_ERRORS("@FILE@:9:25: folders[0].column_map.properties.plan.column: expected a string, "
		      "got a list");
}

/* ---- issue 10: max_upload_bytes, invalid_rows, csv: ----------------------------------------- */

/* A folder's csv: overrides only the keys it names; the others come from defaults' csv:, and
 * from the built-in defaults where defaults' csv: does not name them either. */
static void test_csv_settings_override(void **state)
{
	(void)state;
	load("defaults:\n"
	     "  max_upload_bytes: 1048576\n"
	     "  invalid_rows: import\n"
	     "  csv:\n"
	     "    encoding: iso-8859-15\n"
	     "folders:\n"
	     "  - name: all\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "    max_upload_bytes: 65536\n"
	     "    invalid_rows: fail_file\n"
	     "    csv: { delimiter: \"|\", encoding: utf-16, header: relaxed }\n"
	     "  - name: none\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "    csv: {}\n"
	     "  - name: some\n"
	     "    inbox: @TMP@/c/in\n"
	     "    done: @TMP@/c/done\n"
	     "    failed: @TMP@/c/failed\n"
	     "    csv:\n"
	     "      delimiter: \";\"\n");
	assert_loaded();
	assert_csv_settings(&E.cfg->defaults, 1048576, CONFIG_INVALID_ROWS_IMPORT, '\0',
			    CONFIG_ENCODING_ISO_8859_15, CONFIG_HEADER_EXACT);
	assert_csv_settings(&E.cfg->folders[0].settings, 65536, CONFIG_INVALID_ROWS_FAIL_FILE, '|',
			    CONFIG_ENCODING_UTF16, CONFIG_HEADER_RELAXED);
	assert_csv_settings(&E.cfg->folders[1].settings, 1048576, CONFIG_INVALID_ROWS_IMPORT, '\0',
			    CONFIG_ENCODING_ISO_8859_15, CONFIG_HEADER_EXACT);
	assert_csv_settings(&E.cfg->folders[2].settings, 1048576, CONFIG_INVALID_ROWS_IMPORT, ';',
			    CONFIG_ENCODING_ISO_8859_15, CONFIG_HEADER_EXACT);
	/* The other settings are untouched by these keys. */
	assert_settings(&E.cfg->folders[0].settings, 2000, 30, "*.csv", MAX_FILE_DEFAULT,
			CONFIG_ON_CONFLICT_UPSERT, true);

	/* defaults: after folders: still inherited, key by key. */
	load("folders:\n" FOLDER_A "    csv: { header: relaxed }\n"
	     "defaults:\n"
	     "  csv: { delimiter: tab, header: exact }\n");
	assert_loaded();
	assert_csv_settings(&E.cfg->defaults, 52428800, CONFIG_INVALID_ROWS_DROP, '\t',
			    CONFIG_ENCODING_AUTO, CONFIG_HEADER_EXACT);
	assert_csv_settings(&E.cfg->folders[0].settings, 52428800, CONFIG_INVALID_ROWS_DROP, '\t',
			    CONFIG_ENCODING_AUTO, CONFIG_HEADER_RELAXED);
}

/* Every way to write each delimiter, in defaults and in a folder. A TAB may be the character
 * itself ("\t" in double quotes), a backslash and t (as in '\t' or plain \t), or the word. */
static void test_csv_delimiter_values(void **state)
{
	static const struct {
		const char *yaml;
		char want;
	} cases[] = {
		{"auto", '\0'},	 {"\"auto\"", '\0'}, {"\",\"", ','},	{"','", ','},
		{"\";\"", ';'},	 {";", ';'},	     {"\"\\t\"", '\t'}, {"\"\t\"", '\t'},
		{"'\t'", '\t'},	 {"tab", '\t'},	     {"'\\t'", '\t'},	{"\\t", '\t'},
		{"\"|\"", '|'},	 {"'|'", '|'},
	};
	char yaml[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(yaml, sizeof(yaml),
			 "defaults:\n  csv:\n    delimiter: %s\nfolders:\n" FOLDER_A
			 "  - name: b\n"
			 "    inbox: @TMP@/b/in\n"
			 "    done: @TMP@/b/done\n"
			 "    failed: @TMP@/b/failed\n"
			 "    csv: { delimiter: %s }\n",
			 cases[i].yaml, cases[i].yaml);
		load(yaml);
		if (E.r != 0)
			print_message("delimiter: %s\n", cases[i].yaml);
		assert_loaded();
		assert_int_equal(E.cfg->defaults.csv.delimiter, cases[i].want);
		assert_int_equal(E.cfg->folders[0].settings.csv.delimiter, cases[i].want);
		assert_int_equal(E.cfg->folders[1].settings.csv.delimiter, cases[i].want);
	}
}

/* The canonical names, any ASCII case, and the common aliases. */
static void test_csv_encoding_values(void **state)
{
	static const struct {
		const char *yaml;
		enum config_encoding want;
	} cases[] = {
		{"auto", CONFIG_ENCODING_AUTO},
		{"AUTO", CONFIG_ENCODING_AUTO},
		{"utf-8", CONFIG_ENCODING_UTF8},
		{"UTF-8", CONFIG_ENCODING_UTF8},
		{"utf8", CONFIG_ENCODING_UTF8},
		{"\"UTF8\"", CONFIG_ENCODING_UTF8},
		{"windows-1252", CONFIG_ENCODING_WINDOWS_1252},
		{"Windows-1252", CONFIG_ENCODING_WINDOWS_1252},
		{"cp1252", CONFIG_ENCODING_WINDOWS_1252},
		{"CP1252", CONFIG_ENCODING_WINDOWS_1252},
		{"iso-8859-1", CONFIG_ENCODING_ISO_8859_1},
		{"ISO-8859-1", CONFIG_ENCODING_ISO_8859_1},
		{"latin1", CONFIG_ENCODING_ISO_8859_1},
		{"Latin1", CONFIG_ENCODING_ISO_8859_1},
		{"iso-8859-15", CONFIG_ENCODING_ISO_8859_15},
		{"ISO-8859-15", CONFIG_ENCODING_ISO_8859_15},
		{"utf-16", CONFIG_ENCODING_UTF16},
		{"UTF-16", CONFIG_ENCODING_UTF16},
		{"utf16", CONFIG_ENCODING_UTF16},
	};
	char yaml[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(yaml, sizeof(yaml),
			 "defaults:\n  csv: { encoding: %s }\nfolders:\n" FOLDER_A
			 "  - name: b\n"
			 "    inbox: @TMP@/b/in\n"
			 "    done: @TMP@/b/done\n"
			 "    failed: @TMP@/b/failed\n"
			 "    csv:\n"
			 "      encoding: %s\n",
			 cases[i].yaml, cases[i].yaml);
		load(yaml);
		if (E.r != 0)
			print_message("encoding: %s\n", cases[i].yaml);
		assert_loaded();
		assert_int_equal(E.cfg->defaults.csv.encoding, cases[i].want);
		assert_int_equal(E.cfg->folders[0].settings.csv.encoding, cases[i].want);
		assert_int_equal(E.cfg->folders[1].settings.csv.encoding, cases[i].want);
	}
}

static void test_csv_header_invalid_rows_max_upload_values(void **state)
{
	static const char *const headers[] = {"exact", "relaxed"};
	static const char *const invalid[] = {"drop", "import", "fail_file"};
	char yaml[512];

	(void)state;
	for (int h = 0; h < 2; h++) {
		for (int v = 0; v < 3; v++) {
			snprintf(yaml, sizeof(yaml),
				 "defaults:\n  invalid_rows: %s\n  csv: { header: %s }\n"
				 "folders:\n" FOLDER_A "    invalid_rows: %s\n"
				 "    csv: { header: %s }\n",
				 invalid[v], headers[h], invalid[2 - v], headers[1 - h]);
			load(yaml);
			assert_loaded();
			assert_int_equal(E.cfg->defaults.invalid_rows, v);
			assert_int_equal(E.cfg->defaults.csv.header, h);
			assert_int_equal(E.cfg->folders[0].settings.invalid_rows, 2 - v);
			assert_int_equal(E.cfg->folders[0].settings.csv.header, 1 - h);
		}
	}
	/* max_upload_bytes: 64 KiB to 200 MiB (Resend's own limit), both inclusive. */
	load("defaults:\n  max_upload_bytes: 65536\nfolders:\n" FOLDER_A
	     "    max_upload_bytes: 209715200\n");
	assert_loaded();
	assert_int_equal(E.cfg->defaults.max_upload_bytes, 65536);
	assert_int_equal(E.cfg->folders[0].settings.max_upload_bytes, 209715200);
	load("defaults:\n  max_upload_bytes: 65535\nfolders:\n" FOLDER_A
	     "    max_upload_bytes: 209715201\n");
	EXPECT_ERRORS("@FILE@:2:21: defaults.max_upload_bytes: 65535 is out of range: expected "
		      "65536 to 209715200",
		      "@FILE@:8:23: folders[0].max_upload_bytes: 209715201 is out of range: "
		      "expected 65536 to 209715200");
	load("defaults:\n  max_upload_bytes: \"65536\"\nfolders:\n" FOLDER_A
	     "    max_upload_bytes: 50MB\n");
	EXPECT_ERRORS("@FILE@:2:21: defaults.max_upload_bytes: expected an integer from 65536 to "
		      "209715200, got a quoted string",
		      "@FILE@:8:23: folders[0].max_upload_bytes: expected an integer from 65536 to "
		      "209715200, got '50MB'");
	/* max_file_bytes keeps its range, now with a 2 GiB default. */
	load("defaults:\n  max_file_bytes: 1099511627776\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_int_equal(E.cfg->defaults.max_file_bytes, UINT64_C(1) << 40);
}

#define DELIMITERS "must be one of auto, \",\", \";\", \"\\t\", \"|\""
#define ENCODINGS "expected one of auto, utf-8, windows-1252, iso-8859-1, iso-8859-15, utf-16"

/* Every way csv: and its keys can be wrong, with position and key path, in defaults and in a
 * folder. */
static void test_csv_errors(void **state)
{
	(void)state;
	load("defaults:\n"
	     "  csv:\n"
	     "    delimiter: \",;\"\n"
	     "    encoding: utf-7\n"
	     "    header: Exact\n"
	     "  invalid_rows: skip\n"
	     "folders:\n" FOLDER_A "    csv:\n"
	     "      delimiter: TAB\n"
	     "      encoding: [utf-8]\n"
	     "      header: {relaxed: true}\n"
	     "    invalid_rows: Drop\n");
	EXPECT_ERRORS("@FILE@:3:16: defaults.csv.delimiter: " DELIMITERS ", got ',;'",
		      "@FILE@:4:15: defaults.csv.encoding: " ENCODINGS ", got 'utf-7'",
		      "@FILE@:5:13: defaults.csv.header: expected one of exact, relaxed, got "
		      "'Exact'",
		      "@FILE@:6:17: defaults.invalid_rows: expected one of drop, import, "
		      "fail_file, got 'skip'",
		      "@FILE@:13:18: folders[0].csv.delimiter: " DELIMITERS ", got 'TAB'",
		      "@FILE@:14:17: folders[0].csv.encoding: " ENCODINGS ", got a list",
		      "@FILE@:15:15: folders[0].csv.header: expected one of exact, relaxed, got "
		      "a mapping",
		      "@FILE@:16:19: folders[0].invalid_rows: expected one of drop, import, "
		      "fail_file, got 'Drop'");

	/* csv: itself: a scalar, a list, nothing. */
	load("defaults:\n  csv: \";\"\nfolders:\n" FOLDER_A "    csv: [delimiter]\n"
	     "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "    csv:\n");
	EXPECT_ERRORS("@FILE@:2:8: defaults.csv: expected a mapping, got a scalar",
		      "@FILE@:8:10: folders[0].csv: expected a mapping, got a list",
		      "@FILE@:13:9: folders[1].csv: expected a mapping, got an empty value");

	/* Unknown and repeated keys inside csv:. */
	load("defaults:\n"
	     "  csv:\n"
	     "    separator: \";\"\n"
	     "    encoding: utf-8\n"
	     "    encoding: latin1\n"
	     "folders:\n" FOLDER_A "    csv: { quote: \"'\", header: exact, header: relaxed }\n");
	EXPECT_ERRORS("@FILE@:3:5: defaults.csv: unknown key 'separator' (expected one of: "
		      "delimiter, encoding, header)",
		      "@FILE@:5:5: defaults.csv.encoding: duplicate key (first set at line 4)",
		      "@FILE@:11:12: folders[0].csv: unknown key 'quote' (expected one of: "
		      "delimiter, encoding, header)",
		      "@FILE@:11:39: folders[0].csv.header: duplicate key (first set at line 11)");

	/* Delimiter values that are almost right. */
	load("defaults:\n  csv: { delimiter: }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got an empty value");
	load("defaults:\n  csv: { delimiter: \"\" }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got ''");
	load("defaults:\n  csv: { delimiter: \"\\0\" }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got ''");
	load("defaults:\n  csv: { delimiter: \"\\n\" }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got '\\x0a'");
	load("defaults:\n  csv: { delimiter: \"tab\\0\" }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got 'tab'");
	load("defaults:\n  csv: { delimiter: Auto }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got 'Auto'");
	load("defaults:\n  csv: { delimiter: [\",\"] }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:21: defaults.csv.delimiter: " DELIMITERS ", got a list");
	/* An unquoted | starts a block scalar: say so rather than "got ''". */
	load("defaults:\n"
	     "  csv:\n"
	     "    delimiter: |\n"
	     "    header: exact\n"
	     "folders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:3:16: defaults.csv.delimiter: " DELIMITERS ", got an empty block "
		      "scalar (write \"|\" in quotes)");

	/* Encodings that are not aliases, and a NUL that would cut a name short. */
	load("defaults:\n  csv: { encoding: utf_8 }\nfolders:\n" FOLDER_A
	     "    csv: { encoding: \"utf-8\\0x\" }\n");
	EXPECT_ERRORS("@FILE@:2:20: defaults.csv.encoding: " ENCODINGS ", got 'utf_8'",
		      "@FILE@:8:22: folders[0].csv.encoding: " ENCODINGS ", got 'utf-8'");
	load("defaults:\n  csv: { encoding: }\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:20: defaults.csv.encoding: " ENCODINGS ", got ''");
}

/* Bug: a NUL inside an enum value was cut off and the rest accepted ("skip\0anything" read as
 * skip). */
static void test_enum_value_with_nul_refused(void **state)
{
	(void)state;
	load("defaults:\n  on_conflict: \"skip\\0x\"\n  invalid_rows: \"drop\\0\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:16: defaults.on_conflict: expected one of upsert, skip, got 'skip'",
		      "@FILE@:3:17: defaults.invalid_rows: expected one of drop, import, fail_file, "
		      "got 'drop'");
}

/* ---- issue 11: state_dir, ledger_keep_days, on_duplicate, duplicate_window ---------------- */

static void test_duplicate_settings_override(void **state)
{
	(void)state;
	load("defaults:\n"
	     "  on_duplicate: fail\n"
	     "  duplicate_window: 12h\n"
	     "folders:\n"
	     "  - name: all\n"
	     "    inbox: @TMP@/a/in\n"
	     "    done: @TMP@/a/done\n"
	     "    failed: @TMP@/a/failed\n"
	     "    on_duplicate: import\n"
	     "    duplicate_window: 0\n"
	     "  - name: none\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "  - name: some\n"
	     "    inbox: @TMP@/c/in\n"
	     "    done: @TMP@/c/done\n"
	     "    failed: @TMP@/c/failed\n"
	     "    duplicate_window: 2w\n");
	assert_loaded();
	assert_dup_settings(&E.cfg->defaults, CONFIG_ON_DUPLICATE_FAIL, 43200);
	assert_dup_settings(&E.cfg->folders[0].settings, CONFIG_ON_DUPLICATE_IMPORT, 0);
	assert_dup_settings(&E.cfg->folders[1].settings, CONFIG_ON_DUPLICATE_FAIL, 43200);
	assert_dup_settings(&E.cfg->folders[2].settings, CONFIG_ON_DUPLICATE_FAIL, 1209600);
	/* The other settings are untouched by these keys. */
	assert_settings(&E.cfg->folders[0].settings, 2000, 30, "*.csv", MAX_FILE_DEFAULT,
			CONFIG_ON_CONFLICT_UPSERT, true);
	assert_csv_settings(&E.cfg->folders[0].settings, DEFAULT_CSV_SETTINGS);

	/* Every on_duplicate value, in defaults and in a folder; defaults after the folders. */
	static const char *const names[] = {"skip", "import", "fail"};
	char yaml[512];
	for (int v = 0; v < 3; v++) {
		snprintf(yaml, sizeof(yaml),
			 "folders:\n" FOLDER_A "    on_duplicate: %s\n"
			 "  - name: b\n"
			 "    inbox: @TMP@/b/in\n"
			 "    done: @TMP@/b/done\n"
			 "    failed: @TMP@/b/failed\n"
			 "defaults:\n  on_duplicate: %s\n  duplicate_window: 90m\n",
			 names[2 - v], names[v]);
		load(yaml);
		assert_loaded();
		assert_dup_settings(&E.cfg->defaults, (enum config_on_duplicate)v, 5400);
		assert_dup_settings(&E.cfg->folders[0].settings, (enum config_on_duplicate)(2 - v),
				    5400);
		assert_dup_settings(&E.cfg->folders[1].settings, (enum config_on_duplicate)v, 5400);
	}
}

/* config_parse_duration, as duplicate_window and `history --since` use it. */
static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		uint64_t want;
	} good[] = {
		{"0", 0},
		{"0s", 0},
		{"0d", 0},
		{"1s", 1},
		{"45s", 45},
		{"90m", 5400},
		{"12h", 43200},
		{"1d", 86400},
		{"7d", 604800},
		{"30d", 2592000},
		{"365d", 31536000},
		{"1w", 604800},
		{"2w", 1209600},
		{"007d", 604800},
		{"9223372036854775807s", UINT64_C(9223372036854775807)},
		{"15250284452471w", UINT64_C(15250284452471) * 604800},
	};
	static const char *const bad[] = {
		"",	   "30",  "1",   "00",	 "d",	   "s0",  "-1d", "+1d", " 1d", "1d ",
		"1 d",	   "1.5d", "1,5d", "1D",	 "1H",	   "1M",  "1y",  "1mo", "1dd", "1d1h",
		"1ms",	   "0x10s", "1e3s", "30 days", "forever", "never",
		"9223372036854775808s",	/* INT64_MAX + 1 */
		"15250284452472w",	/* just over INT64_MAX seconds */
		"153722867280912931m", /* over INT64_MAX seconds */
		"99999999999999999999999999d",
		"18446744073709551616s", /* 2^64 */
	};
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		if (config_parse_duration(good[i].s, &v) != 0)
			fail_msg("'%s' refused", good[i].s);
		if (v != good[i].want)
			fail_msg("'%s': %" PRIu64 " seconds, expected %" PRIu64, good[i].s, v,
				 good[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		if (config_parse_duration(bad[i], &v) != -EINVAL)
			fail_msg("'%s' accepted", bad[i]);
		/* ret_* is written on success only. */
		assert_int_equal(v, 12345);
	}
	v = 12345;
	assert_int_equal(config_parse_duration(NULL, &v), -EINVAL);
	assert_int_equal(v, 12345);
}

#define DURATION "must be a duration like 30d, 12h or 0 (forever)"

/* duplicate_window in the file: plain or quoted, every unit, and every way to be wrong, with
 * position and key path, in defaults and in a folder. */
static void test_duplicate_window_values(void **state)
{
	static const struct {
		const char *yaml;
		uint64_t want;
	} cases[] = {
		{"0", 0},	  {"\"0\"", 0},		{"30d", 2592000}, {"'30d'", 2592000},
		{"12h", 43200}, {"90m", 5400},	{"600s", 600},	  {"1w", 604800},
	};
	char yaml[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(yaml, sizeof(yaml),
			 "defaults:\n  duplicate_window: %s\nfolders:\n" FOLDER_A
			 "  - name: b\n"
			 "    inbox: @TMP@/b/in\n"
			 "    done: @TMP@/b/done\n"
			 "    failed: @TMP@/b/failed\n"
			 "    duplicate_window: %s\n",
			 cases[i].yaml, cases[i].yaml);
		load(yaml);
		if (E.r != 0)
			print_message("duplicate_window: %s\n", cases[i].yaml);
		assert_loaded();
		assert_int_equal(E.cfg->defaults.duplicate_window_s, cases[i].want);
		assert_int_equal(E.cfg->folders[0].settings.duplicate_window_s, cases[i].want);
		assert_int_equal(E.cfg->folders[1].settings.duplicate_window_s, cases[i].want);
	}

	load("defaults:\n"
	     "  duplicate_window: 30\n"
	     "  on_duplicate: ignore\n"
	     "folders:\n" FOLDER_A "    duplicate_window: 30 days\n"
	     "    on_duplicate: Skip\n"
	     "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "    duplicate_window: -1d\n"
	     "    on_duplicate: [skip]\n");
	EXPECT_ERRORS("@FILE@:2:21: defaults.duplicate_window: " DURATION ", got '30'",
		      "@FILE@:3:17: defaults.on_duplicate: expected one of skip, import, fail, got "
		      "'ignore'",
		      "@FILE@:9:23: folders[0].duplicate_window: " DURATION ", got '30 days'",
		      "@FILE@:10:19: folders[0].on_duplicate: expected one of skip, import, fail, "
		      "got 'Skip'",
		      "@FILE@:15:23: folders[1].duplicate_window: " DURATION ", got '-1d'",
		      "@FILE@:16:19: folders[1].on_duplicate: expected one of skip, import, fail, "
		      "got a list");

	/* Not a scalar, nothing, a NUL, too long, a repeated key. */
	load("defaults:\n  duplicate_window: [30d]\nfolders:\n" FOLDER_A
	     "    duplicate_window: { d: 30 }\n");
	EXPECT_ERRORS("@FILE@:2:21: defaults.duplicate_window: " DURATION ", got a list",
		      "@FILE@:8:23: folders[0].duplicate_window: " DURATION ", got a mapping");
	load("defaults:\n  duplicate_window:\nfolders:\n" FOLDER_A "    duplicate_window: \"\"\n");
	EXPECT_ERRORS("@FILE@:2:20: defaults.duplicate_window: " DURATION ", got an empty value",
		      "@FILE@:8:23: folders[0].duplicate_window: " DURATION ", got ''");
	load("defaults:\n  duplicate_window: \"30d\\0\"\nfolders:\n" FOLDER_A
	     "    duplicate_window: 9223372036854775808s\n");
	EXPECT_ERRORS("@FILE@:2:21: defaults.duplicate_window: " DURATION ", got '30d'",
		      "@FILE@:8:23: folders[0].duplicate_window: " DURATION
		      ", got '9223372036854775808s'");
	load("defaults:\n  duplicate_window: 1d\n  duplicate_window: 2d\nfolders:\n" FOLDER_A
	     "    on_duplicate: skip\n    on_duplicate: fail\n");
	EXPECT_ERRORS("@FILE@:3:3: defaults.duplicate_window: duplicate key (first set at line 2)",
		      "@FILE@:10:5: folders[0].on_duplicate: duplicate key (first set at line 9)");
}

static void test_state_dir_and_ledger_keep_days(void **state)
{
	(void)state;
	load("state_dir: @TMP@/state//\nledger_keep_days: 0\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_path(E.cfg->state_dir, "state"); /* need not exist yet */
	assert_int_equal(E.cfg->ledger_keep_days, 0);
	load("folders:\n" FOLDER_A "ledger_keep_days: 36500\nstate_dir: /\n");
	assert_loaded();
	assert_string_equal(E.cfg->state_dir, "/");
	assert_int_equal(E.cfg->ledger_keep_days, 36500);
	load("state_dir: \"/srv/rdd state\"\nfolders:\n" FOLDER_A);
	assert_loaded();
	assert_string_equal(E.cfg->state_dir, "/srv/rdd state");

	load("state_dir: var/lib/resend-dropd\nledger_keep_days: 36501\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:12: state_dir: expected an absolute path, got "
		      "'var/lib/resend-dropd'",
		      "@FILE@:2:19: ledger_keep_days: 36501 is out of range: expected 0 to 36500");
	load("state_dir:\nledger_keep_days: -1\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:11: state_dir: expected a non-empty string",
		      "@FILE@:2:19: ledger_keep_days: expected an integer from 0 to 36500, got '-1'");
	load("state_dir: [/var/lib/x]\nledger_keep_days: 365d\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:12: state_dir: expected a string, got a list",
		      "@FILE@:2:19: ledger_keep_days: expected an integer from 0 to 36500, got "
		      "'365d'");
	load("state_dir: ./state\nledger_keep_days: \"30\"\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:12: state_dir: expected an absolute path, got './state'",
		      "@FILE@:2:19: ledger_keep_days: expected an integer from 0 to 36500, got a "
		      "quoted string");
	load("state_dir: /a\nstate_dir: /b\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:2:1: state_dir: duplicate key (first set at line 1)");

	char yaml[CONFIG_STATE_DIR_MAX + 200];
	int n = snprintf(yaml, sizeof(yaml), "state_dir: /");
	memset(yaml + n, 'x', CONFIG_STATE_DIR_MAX - 1);
	snprintf(yaml + n + CONFIG_STATE_DIR_MAX - 1, sizeof(yaml) - (size_t)n -
		 CONFIG_STATE_DIR_MAX + 1, "\nfolders:\n" FOLDER_A);
	load(yaml);
	assert_loaded();
	assert_int_equal(strlen(E.cfg->state_dir), CONFIG_STATE_DIR_MAX);
	snprintf(yaml + n + CONFIG_STATE_DIR_MAX - 1, sizeof(yaml) - (size_t)n -
		 CONFIG_STATE_DIR_MAX + 1, "y\nfolders:\n" FOLDER_A);
	load(yaml);
	EXPECT_ERRORS("@FILE@:1:12: state_dir: a path is at most 1024 bytes long, got 1025");
}

/* The ledger in a folder's directory: its files would be claimed as exports (or mixed with
 * finished ones). By identity, so another spelling or a link to it is caught too. */
static void test_state_dir_not_a_folder_directory(void **state)
{
	char link[PATH_MAX + 16];

	(void)state;
	load("state_dir: @TMP@/a/in/\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:12: state_dir: '@TMP@/a/in' is also used by folders[0].inbox: the "
		      "ledger needs a directory of its own");
	load("folders:\n" FOLDER_A "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "state_dir: @TMP@/b/../b/failed\n");
	EXPECT_ERRORS("@FILE@:10:12: state_dir: '@TMP@/b/../b/failed' is also used by "
		      "folders[1].failed: the ledger needs a directory of its own");
	snprintf(link, sizeof(link), "%s/state-link", E.dir);
	assert_int_equal(symlink("a/done", link), 0);
	load("state_dir: @TMP@/state-link\nfolders:\n" FOLDER_A);
	EXPECT_ERRORS("@FILE@:1:12: state_dir: '@TMP@/state-link' is also used by "
		      "folders[0].done: the ledger needs a directory of its own");
	/* Beside the folders, or inside an inbox (subdirectories are never taken), is fine. */
	make_dir("%s/a/in/.ledger", E.dir);
	load("state_dir: @TMP@/a/in/.ledger\nfolders:\n" FOLDER_A);
	assert_loaded();
	load("state_dir: @TMP@/c\nfolders:\n" FOLDER_A);
	assert_loaded();
}

/* Folder a's import settings; each hash case below edits a copy of them for folder b. */
#define IMPORT_A                                                                                   \
	"    column_map:\n"                                                                    \
	"      email: Email\n"                                                                 \
	"      first_name: First Name\n"                                                       \
	"      last_name: Last Name\n"                                                         \
	"      unsubscribed: Unsubscribed\n"                                                   \
	"      properties:\n"                                                                  \
	"        plan: { column: Plan, type: string }\n"                                       \
	"        seats: { column: Seats, type: number }\n"                                     \
	"    segments: [78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6, "                                \
	"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0]\n"                                              \
	"    topics:\n"                                                                        \
	"      - { id: 059ac693-2fc8-4c13-8b27-01350d638a17, subscription: opt_in }\n"         \
	"    on_conflict: skip\n"

/* IMPORT_A's hash, computed apart from the code (Python's hashlib over the canonical text
 * documented in config.c). If this changes, every ledger entry stops matching: the canonical
 * text must then get a new version, on purpose. */
#define IMPORT_A_HASH "723d54cb1bcd491fc13b149f5ea36262cd30e93bec5fbd402f3a2a5a7c12d408"
/* A folder with no column_map, segments or topics, and on_conflict upsert. */
#define IMPORT_NONE_HASH "4da2857714f821b20389c7a466160ccf7e1f982655b76083283a95f68aba84eb"

static char *replace_once(const char *s, const char *from, const char *to)
{
	const char *at = strstr(s, from);
	char *out;

	if (!at)
		fail_msg("'%s' not in the settings", from);
	if (asprintf(&out, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from)) < 0)
		fail_msg("out of memory");
	return out;
}

static void assert_hex64(const char *h)
{
	assert_int_equal(strlen(h), 64);
	for (size_t i = 0; i < 64; i++)
		assert_true(isdigit((unsigned char)h[i]) || (h[i] >= 'a' && h[i] <= 'f'));
}

static void test_import_settings_hash(void **state)
{
	static const struct {
		const char *what, *from, *to;
		bool same;
	} cases[] = {
		{"identical", "", "", true},
		/* Settings that are not import settings. */
		{"other settings", "    on_conflict: skip\n",
		 "    on_conflict: skip\n"
		 "    settle_ms: 0\n"
		 "    rescan_s: 5\n"
		 "    pattern: \"*.txt\"\n"
		 "    max_file_bytes: 2048\n"
		 "    follow_import: false\n"
		 "    max_upload_bytes: 65536\n"
		 "    invalid_rows: fail_file\n"
		 "    csv: { delimiter: \";\", encoding: windows-1252, header: relaxed }\n"
		 "    on_duplicate: import\n"
		 "    duplicate_window: 0\n",
		 true},
		{"on_conflict inherited alike", "    on_conflict: skip\n", "", true},
		{"segment ids in upper case", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
		 "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0", true},
		{"segments as {id:} objects",
		 "[78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6, 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0]",
		 "[{id: 78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6}, "
		 "{id: 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0}]",
		 true},
		{"property type string written out or not", "{ column: Plan, type: string }",
		 "{ column: Plan }", true},
		{"same keys in another order", "      email: Email\n      first_name: First Name\n",
		 "      first_name: First Name\n      email: Email\n", true},
		/* column_map */
		{"email column", "email: Email", "email: E-mail", false},
		{"email column's case", "email: Email", "email: email", false},
		{"first_name column", "first_name: First Name", "first_name: Firstname", false},
		{"first_name unset", "      first_name: First Name\n", "", false},
		{"last_name column", "last_name: Last Name", "last_name: Surname", false},
		{"unsubscribed column", "unsubscribed: Unsubscribed", "unsubscribed: Opt Out", false},
		{"unsubscribed unset", "      unsubscribed: Unsubscribed\n", "", false},
		{"a property's column", "column: Seats", "column: Licenses", false},
		{"a property's type", "column: Seats, type: number", "column: Seats, type: string",
		 false},
		{"a property's key", "seats:", "licenses:", false},
		{"a property more", "      properties:\n",
		 "      properties:\n        trial: { column: Trial, type: boolean }\n", false},
		{"a property less", "        seats: { column: Seats, type: number }\n", "", false},
		{"properties reordered", "        plan: { column: Plan, type: string }\n"
					 "        seats: { column: Seats, type: number }\n",
		 "        seats: { column: Seats, type: number }\n"
		 "        plan: { column: Plan, type: string }\n",
		 false},
		{"columns moved between fields (no ambiguity)",
		 "      email: Email\n      first_name: First Name\n",
		 "      email: \"Email\\nfirst_name 10:First Name\"\n", false},
		{"no column_map", "    column_map:\n      email: Email\n      first_name: First Name\n"
				  "      last_name: Last Name\n      unsubscribed: Unsubscribed\n"
				  "      properties:\n"
				  "        plan: { column: Plan, type: string }\n"
				  "        seats: { column: Seats, type: number }\n",
		 "", false},
		/* segments */
		{"a segment id", "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6",
		 "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab7", false},
		{"a segment less", ", 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0]", "]", false},
		{"a segment more", "]", ", 1f0c6a2e-53d4-4b8e-9d64-2c8a4f5e7b10]", false},
		{"segments reordered",
		 "[78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6, 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0]",
		 "[0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0, 78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6]",
		 false},
		{"no segments",
		 "[78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6, 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0]", "[]",
		 false},
		/* topics */
		{"a topic id", "059ac693-2fc8-4c13-8b27-01350d638a17",
		 "159ac693-2fc8-4c13-8b27-01350d638a17", false},
		{"a topic's subscription", "subscription: opt_in", "subscription: opt_out", false},
		{"a topic more", "    on_conflict: skip\n",
		 "      - { id: 159ac693-2fc8-4c13-8b27-01350d638a17, subscription: opt_in }\n"
		 "    on_conflict: skip\n",
		 false},
		{"no topics",
		 "    topics:\n"
		 "      - { id: 059ac693-2fc8-4c13-8b27-01350d638a17, subscription: opt_in }\n",
		 "    topics: []\n", false},
		/* on_conflict */
		{"on_conflict", "on_conflict: skip", "on_conflict: upsert", false},
	};
	char hash_a[65], hash_b[65];
	char *yaml = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *b = *cases[i].from ? replace_once(IMPORT_A, cases[i].from, cases[i].to)
					 : strdup(IMPORT_A);
		assert_non_null(b);
		int n = asprintf(&yaml,
				 "defaults:\n  on_conflict: skip\n"
				 "folders:\n" FOLDER_A IMPORT_A "  - name: other.name\n"
				 "    inbox: @TMP@/b/in\n"
				 "    done: @TMP@/b/done\n"
				 "    failed: @TMP@/b/failed\n"
				 "%s",
				 b);
		free(b);
		assert_true(n > 0);
		load(yaml);
		free(yaml);
		if (E.r != 0)
			print_message("case: %s\n", cases[i].what);
		assert_loaded();
		resend_settings_hash(&E.cfg->folders[0], hash_a);
		resend_settings_hash(&E.cfg->folders[1], hash_b);
		assert_hex64(hash_a);
		assert_hex64(hash_b);
		assert_string_equal(hash_a, IMPORT_A_HASH);
		if (cases[i].same != (strcmp(hash_a, hash_b) == 0))
			fail_msg("%s: the hashes are %s, expected them %s", cases[i].what,
				 cases[i].same ? "different" : "equal",
				 cases[i].same ? "equal" : "different");
	}

	/* No import settings at all; and the same folder hashed twice. */
	load("folders:\n" FOLDER_A);
	assert_loaded();
	resend_settings_hash(&E.cfg->folders[0], hash_a);
	resend_settings_hash(&E.cfg->folders[0], hash_b);
	assert_string_equal(hash_a, IMPORT_NONE_HASH);
	assert_string_equal(hash_b, IMPORT_NONE_HASH);
}

/* The canonical text must not change while config.c does (existing ledgers would stop
 * matching): two folders' hashes, pinned as the code computed them before the YAML layer left
 * config.c, and as Python's hashlib computes them over the canonical text documented there.
 * Folder a: columns with a colon, spaces and UTF-8, a property with no type, ids in upper case
 * and as {id:}, a topic opted out, on_conflict overridden; folder b: a column_map with nothing
 * but email, on_conflict inherited. */
#define IMPORT_PINNED_A_HASH "4bb16411cde3a3aa08b258ddd19f860c5c30732057cc46e412105604cdf39e4a"
#define IMPORT_PINNED_B_HASH "149a828d64ba600b141f560f742b483df904ffc6747a0004ad8f3f5a5567286b"

static void test_import_settings_hash_pinned(void **state)
{
	char hash[65];

	(void)state;
	load("defaults:\n"
	     "  on_conflict: skip\n"
	     "folders:\n" FOLDER_A
	     "    on_conflict: upsert\n"
	     "    column_map:\n"
	     "      email: \"E-mail: address\"\n"
	     "      last_name: Nom de famille\n"
	     "      properties:\n"
	     "        trial: { column: Trial?, type: boolean }\n"
	     "        region: { column: \"R\\u00e9gion\" }\n"
	     "        seats: { column: Seats, type: number }\n"
	     "    segments:\n"
	     "      - { id: 0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0 }\n"
	     "      - 78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6\n"
	     "    topics:\n"
	     "      - id: 159AC693-2FC8-4C13-8B27-01350D638A17\n"
	     "        subscription: opt_out\n"
	     "      - { id: 059ac693-2fc8-4c13-8b27-01350d638a17, subscription: opt_in }\n"
	     "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n"
	     "    column_map: { email: email }\n");
	assert_loaded();
	resend_settings_hash(&E.cfg->folders[0], hash);
	assert_string_equal(hash, IMPORT_PINNED_A_HASH);
	resend_settings_hash(&E.cfg->folders[1], hash);
	assert_string_equal(hash, IMPORT_PINNED_B_HASH);
}

/* ---- main ----------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* good/NAME.yaml and bad/NAME.yaml, sorted. */
static size_t list_fixtures(const char *sub, char ***ret)
{
	char path[PATH_MAX];
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;

	snprintf(path, sizeof(path), "%s/config/%s", fixtures_dir(), sub);
	DIR *d = opendir(path);
	if (!d) {
		fprintf(stderr, "test_config: cannot list %s: %s (is RDD_FIXTURES set?)\n", path,
			strerror(errno));
		exit(1);
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0)
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		if (!names || asprintf(&names[n], "%s/%s", sub, de->d_name) < 0)
			exit(1);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	*ret = names;
	return n;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* ---- issue 18: coalesce and its caps, rate_share ------------------------------------------ */

static void test_coalesce_settings(void **state)
{
	(void)state;
	load("api:\n"
	     "  requests_per_second: 5\n"
	     "  rate_share: 0.5\n"
	     "defaults:\n"
	     "  coalesce: off\n"
	     "  coalesce_max_rows: 2000\n"
	     "folders:\n" FOLDER_A "    coalesce: auto\n"
	     "    coalesce_max_files: 3\n"
	     "  - name: b\n"
	     "    inbox: @TMP@/b/in\n"
	     "    done: @TMP@/b/done\n"
	     "    failed: @TMP@/b/failed\n");
	assert_loaded();
	assert_true(E.cfg->api.requests_per_second == 5 && E.cfg->api.rate_share == 0.5);
	assert_int_equal(E.cfg->folders[0].settings.coalesce, CONFIG_COALESCE_AUTO);
	assert_int_equal(E.cfg->folders[0].settings.coalesce_max_files, 3);
	assert_int_equal(E.cfg->folders[0].settings.coalesce_max_rows, 2000);
	assert_int_equal(E.cfg->folders[1].settings.coalesce, CONFIG_COALESCE_OFF);
	assert_int_equal(E.cfg->folders[1].settings.coalesce_max_files, 500);
	assert_string_equal(config_coalesce_name(CONFIG_COALESCE_OFF), "off");

	load("api:\n"
	     "  rate_share: 0\n"
	     "folders:\n" FOLDER_A "    coalesce: yes\n"
	     "    coalesce_max_files: 0\n");
	EXPECT_ERRORS("@FILE@:2:15: api.rate_share: 0 is out of range: expected 0.01 to 1",
		      "@FILE@:8:15: folders[0].coalesce: expected one of auto, off, got 'yes'",
		      "@FILE@:9:25: folders[0].coalesce_max_files: 0 is out of range: expected 1 "
		      "to 100000");
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
		T(test_is_uuid),
		T(test_is_property_key),
		T(test_url_host_is_loopback),
		T(test_enum_names),
		T(test_full_example_every_key),
		T(test_builtin_defaults),
		T(test_empty_sections_and_null_values),
		T(test_folder_overrides_every_setting),
		T(test_defaults_after_folders),
		T(test_range_limits_accepted),
		T(test_base_url_trailing_slash_stripped),
		T(test_http_base_url_loopback_only),
		T(test_base_url_bad),
		T(test_api_key_from_default_env),
		T(test_api_key_from_default_env_without_api_section),
		T(test_api_key_from_named_env),
		T(test_api_key_env_unset),
		T(test_api_key_default_chain),
		T(test_api_key_env_bad_value_not_echoed),
		T(test_api_key_env_name_invalid),
		T(test_api_key_file_trailing_newline_trimmed),
		T(test_api_key_file_without_newline),
		T(test_api_key_file_bad),
		T(test_api_key_both_sources),
		T(test_api_key_file_relative),
		T(test_api_key_never_in_errors),
		T(test_ca_file_and_user_agent),
		T(test_log_levels_and_formats),
		T(test_booleans),
		T(test_folder_names),
		T(test_duplicate_folder_names),
		T(test_folders_share_a_directory),
		T(test_folder_links_refused_whatever_they_point_to),
		T(test_a_processing_directory_is_nobodys_folder),
		T(test_inbox_equal_to_done_or_failed),
		T(test_directory_missing_or_not_a_directory),
		T(test_done_on_another_filesystem),
		T(test_many_folders),
		T(test_errors_in_file_order),
		T(test_too_many_errors),
		T(test_errors_accumulate),
		T(test_config_file_missing_or_not_regular),
		T(test_config_file_fifo),
		T(test_empty_file),
		T(test_root_not_a_mapping),
		T(test_huge_file),
		T(test_yaml_syntax_errors),
		T(test_invalid_text),
		T(test_binary_garbage),
		T(test_deep_nesting),
		T(test_nesting_errors),
		T(test_aliases_shared_column_map),
		T(test_alias_bomb),
		T(test_many_anchors),
		T(test_second_document_rejected),
		T(test_errors_escape_control_characters),
		T(test_unknown_keys_inline),
		T(test_control_and_metrics),
		T(test_ledger_backend),
		T(test_segments_and_topics),
		T(test_properties),
		T(test_present_but_invalid_not_missing),
		T(test_csv_settings_override),
		T(test_csv_delimiter_values),
		T(test_csv_encoding_values),
		T(test_csv_header_invalid_rows_max_upload_values),
		T(test_csv_errors),
		T(test_enum_value_with_nul_refused),
		T(test_duplicate_settings_override),
		T(test_coalesce_settings),
		T(test_parse_duration),
		T(test_duplicate_window_values),
		T(test_state_dir_and_ledger_keep_days),
		T(test_state_dir_not_a_folder_directory),
		T(test_import_settings_hash),
		T(test_import_settings_hash_pinned),
	};
	size_t n_fixed = sizeof(fixed) / sizeof(fixed[0]);
	char **good, **bad;
	size_t n_good = list_fixtures("good", &good);
	size_t n_bad = list_fixtures("bad", &bad);
	struct CMUnitTest *tests = calloc(n_fixed + n_good + n_bad, sizeof(*tests));
	size_t n = 0;

	if (!tests)
		return 1;
	for (size_t i = 0; i < n_fixed; i++)
		tests[n++] = fixed[i];
	for (size_t i = 0; i < n_good; i++)
		tests[n++] = (struct CMUnitTest){good[i], test_good_fixture, setup, teardown, good[i]};
	for (size_t i = 0; i < n_bad; i++)
		tests[n++] = (struct CMUnitTest){bad[i], test_bad_fixture, setup, teardown, bad[i]};
	int failed = _cmocka_run_group_tests("config", tests, n, NULL, NULL);
	for (size_t i = 0; i < n_good; i++)
		free(good[i]);
	for (size_t i = 0; i < n_bad; i++)
		free(bad[i]);
	free(good);
	free(bad);
	free(tests);
	return failed;
}
