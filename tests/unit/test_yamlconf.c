/* yamlconf: the YAML layer alone, against a made-up schema (a weather station's file), not
 * resend-dropd's: each type and its messages, ranges, unknown, duplicate and missing keys, where
 * each error is said, and the file's own problems. Errors are compared as text, one a line,
 * each without the file name before it. */
#include "yamlconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* ---- the schema ------------------------------------------------------------------------ */

enum units { UNITS_METRIC, UNITS_IMPERIAL };
static const char *const units_names[] = {"metric", "imperial", NULL};
static const struct yamlconf_alias units_aliases[] = {
	{"SI", UNITS_METRIC},
	{"us", UNITS_IMPERIAL},
	{NULL, 0},
};

enum kind { KIND_WIND, KIND_RAIN, KIND_SUN };
static const char *const kind_names[] = {"wind", "rain", "sun", NULL};

struct upload {
	char *host;
	uint64_t port;
};

struct sensor {
	enum kind kind;
	uint64_t channel;
};

/* What both a station and, say, a relay would have: included in the station's table. */
struct common {
	uint64_t retries;
	bool verbose;
};

struct station {
	char *name;
	char *note;
	uint64_t elevation_m;
	double gust_limit;
	bool active;
	enum units units;
	struct upload upload;
	char report_at[6]; /* "HH:MM" */
	struct sensor *sensors;
	size_t n_sensors;
	struct common common;
};

struct found {
	struct yamlconf_at station, name, elevation, report_at;
};

/* A name is one word: refused, it stays stored all the same. */
static bool check_one_word(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	if (!strchr(*(char **)value, ' '))
		return true;
	yamlconf_error(yc, n, path, "one word, please");
	return false;
}

static bool parse_hhmm(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	unsigned h, m;
	char end;

	if (n->type != YAML_SCALAR_NODE ||
	    sscanf(yamlconf_scalar(n), "%2u:%2u%c", &h, &m, &end) != 2 || h > 23 || m > 59) {
		yamlconf_error(yc, n, path, "expected HH:MM");
		return false;
	}
	snprintf(value, 6, "%02u:%02u", h, m);
	return true;
}

static const struct yamlconf_field upload_fields[] = {
	{"host", YAMLCONF_STRING, .offset = offsetof(struct upload, host),
	 .flags = YAMLCONF_REQUIRED_QUIET, .missing = "where readings go"},
	{"port", YAMLCONF_UINT, .offset = offsetof(struct upload, port), .min = 1, .max = 65535},
	{0},
};

static const struct yamlconf_field sensor_fields[] = {
	{"kind", YAMLCONF_ENUM, .offset = offsetof(struct sensor, kind),
	 .flags = YAMLCONF_REQUIRED_QUIET, .names = kind_names},
	{"channel", YAMLCONF_UINT, .offset = offsetof(struct sensor, channel),
	 .flags = YAMLCONF_REQUIRED_QUIET, .min = 1, .max = 8},
	{0},
};

static bool sensor_item(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *items,
			size_t count)
{
	struct sensor *s = (struct sensor *)items + count;

	return yamlconf_walk(yc, n, path, sensor_fields, s, NULL);
}

static bool parse_sensors(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *value)
{
	struct station *st = value;
	void *items;

	if (!yamlconf_get_list(yc, n, path, "a list of sensors", sizeof(struct sensor), sensor_item,
			       &items, &st->n_sensors))
		return false;
	free(st->sensors);
	st->sensors = items;
	return true;
}

static const struct yamlconf_field common_fields[] = {
	{"retries", YAMLCONF_UINT, .offset = offsetof(struct common, retries), .max = 10},
	{"verbose", YAMLCONF_BOOL, .offset = offsetof(struct common, verbose)},
	{0},
};

#define ST(member) offsetof(struct station, member)
#define AT(member) YAMLCONF_AT(struct found, member)
static const struct yamlconf_field station_fields[] = {
	{"name", YAMLCONF_STRING, .offset = ST(name), .flags = YAMLCONF_REQUIRED,
	 .check = check_one_word, .at = AT(name)},
	{"note", YAMLCONF_STRING, .offset = ST(note), .flags = YAMLCONF_NULL_OK | YAMLCONF_EMPTY_OK},
	{"elevation_m", YAMLCONF_UINT, .offset = ST(elevation_m), .flags = YAMLCONF_REQUIRED,
	 .max = 9000, .at = AT(elevation)},
	{"gust_limit", YAMLCONF_DOUBLE, .offset = ST(gust_limit), .dmin = 0.5, .dmax = 75},
	{"active", YAMLCONF_BOOL, .offset = ST(active)},
	{"units", YAMLCONF_ENUM, .offset = ST(units), .flags = YAMLCONF_ICASE, .names = units_names,
	 .aliases = units_aliases},
	{"upload", YAMLCONF_MAPPING, .offset = ST(upload), .fields = upload_fields},
	{"report_at", YAMLCONF_CUSTOM, .offset = ST(report_at), .parse = parse_hhmm,
	 .at = AT(report_at)},
	{"sensors", YAMLCONF_CUSTOM, .parse = parse_sensors},
	{.type = YAMLCONF_INCLUDE, .offset = ST(common), .fields = common_fields},
	{0},
};

static const struct yamlconf_field top_fields[] = {
	{"station", YAMLCONF_NODE, .at = AT(station)},
	{0},
};

/* ---- helpers --------------------------------------------------------------------------- */

static struct {
	char dir[64];
	char file[96];
	struct yamlconf_limits limits;
	struct yamlconf *yc;
	const yaml_node_t *root;
	struct station st;
	struct found found;
} T;

static const struct yamlconf_limits test_limits = {
	.max_bytes = 4096,
	.max_depth = 4,
	.max_anchors = 3,
	.max_errors = 12,
	.noun = "station file",
	.kind = "a station file",
};

static void station_free(void)
{
	free(T.st.name);
	free(T.st.note);
	free(T.st.upload.host);
	free(T.st.sensors);
	memset(&T.st, 0, sizeof(T.st));
}

/* The station before a file is read: its defaults. */
static void station_reset(void)
{
	station_free();
	T.st.note = strdup("(none)");
	T.st.elevation_m = 100;
	T.st.gust_limit = 20;
	T.st.common.retries = 3;
}

static int setup(void **state)
{
	(void)state;
	snprintf(T.dir, sizeof(T.dir), "/tmp/test_yamlconf.XXXXXX");
	if (!mkdtemp(T.dir))
		return -1;
	snprintf(T.file, sizeof(T.file), "%s/station.yaml", T.dir);
	T.limits = test_limits;
	station_reset();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	yamlconf_free(T.yc);
	T.yc = NULL;
	station_free();
	unlink(T.file);
	rmdir(T.dir);
	return 0;
}

/* Writes LEN bytes of TEXT as the file, and opens it as yamlconf_open() does. */
static int put_bytes(const char *text, size_t len)
{
	int fd = open(T.file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	yamlconf_free(T.yc);
	T.yc = NULL;
	return yamlconf_open(T.file, &T.limits, &T.yc);
}

/* The file is TEXT: opened and its document loaded, which must work. */
static const yaml_node_t *load(const char *text)
{
	assert_int_equal(put_bytes(text, strlen(text)), 0);
	assert_int_equal(yamlconf_load(T.yc, &T.root), 0);
	return T.root;
}

/* TEXT as a whole file: the top mapping walked, then the station, if any. */
static void walk(const char *text)
{
	load(text);
	assert_non_null(T.root);
	yamlconf_walk(T.yc, T.root, "", top_fields, NULL, &T.found);
	if (T.found.station.node)
		yamlconf_walk(T.yc, T.found.station.node, T.found.station.path, station_fields,
			      &T.st, &T.found);
}

/* Every error so far, flushed, one a line, each without the file name and its colon. */
static char *errors(void)
{
	char **items = NULL, *out;
	size_t count = 0, flen = strlen(T.file), size = 1;

	yamlconf_flush_errors(T.yc, &items, &count);
	for (size_t i = 0; i < count; i++)
		size += strlen(items[i]) + 1;
	out = calloc(1, size);
	assert_non_null(out);
	for (size_t i = 0; i < count; i++) {
		const char *e = items[i];
		assert_memory_equal(e, T.file, flen);
		e += flen + (e[flen] == ':');
		e += *e == ' ';
		strcat(strcat(out, e), "\n");
		free(items[i]);
	}
	free(items);
	return out;
}

#define assert_errors(want)                                                                    \
	do {                                                                                       \
		char *got_ = errors();                                                             \
		assert_string_equal(got_, (want));                                                 \
		free(got_);                                                                        \
	} while (0)

/* ---- each type ------------------------------------------------------------------------- */

static void test_every_type_read(void **state)
{
	(void)state;
	walk("station:\n"
	     "  name: Brocken\n"
	     "  note: ''\n"
	     "  elevation_m: 1141\n"
	     "  gust_limit: 42.5\n"
	     "  active: TRUE\n"
	     "  units: US\n"
	     "  upload: { host: example.org, port: 8080 }\n"
	     "  report_at: '7:05'\n"
	     "  sensors:\n"
	     "    - { kind: wind, channel: 1 }\n"
	     "    - { kind: sun, channel: 8 }\n"
	     "  retries: 0\n"
	     "  verbose: false\n");
	assert_errors("");
	assert_string_equal(T.st.name, "Brocken");
	assert_string_equal(T.st.note, "");
	assert_int_equal(T.st.elevation_m, 1141);
	assert_true(T.st.gust_limit == 42.5);
	assert_true(T.st.active);
	assert_int_equal(T.st.units, UNITS_IMPERIAL);
	assert_string_equal(T.st.upload.host, "example.org");
	assert_int_equal(T.st.upload.port, 8080);
	assert_string_equal(T.st.report_at, "07:05");
	assert_int_equal(T.st.n_sensors, 2);
	assert_int_equal(T.st.sensors[0].kind, KIND_WIND);
	assert_int_equal(T.st.sensors[0].channel, 1);
	assert_int_equal(T.st.sensors[1].kind, KIND_SUN);
	assert_int_equal(T.st.sensors[1].channel, 8);
	assert_int_equal(T.st.common.retries, 0);
	assert_false(T.st.common.verbose);
}

/* Null leaves a NULL_OK field as it was; an absent key too; "" only with EMPTY_OK. */
static void test_null_absent_and_empty(void **state)
{
	(void)state;
	walk("station:\n  name: a\n  note: ~\n  elevation_m: 1\n");
	assert_errors("");
	assert_string_equal(T.st.note, "(none)");
	assert_true(T.st.gust_limit == 20);
	assert_int_equal(T.st.common.retries, 3);
	station_reset();
	walk("station:\n  name: ''\n  note:\n  elevation_m: 1\n  active:\n");
	assert_errors("2:9: station.name: expected a non-empty string\n"
		      "5:10: station.active: expected true or false, got ''\n");
	assert_null(T.st.name);
	assert_string_equal(T.st.note, "(none)");
}

static void test_wrong_types(void **state)
{
	(void)state;
	walk("station:\n"
	     "  name: [a]\n"
	     "  note: \"a\\0b\"\n"
	     "  elevation_m: '12'\n"
	     "  gust_limit: {}\n"
	     "  active: 'true'\n"
	     "  units: [metric]\n"
	     "  upload: example.org\n"
	     "  sensors: { kind: wind }\n"
	     "  retries: 1.5\n"
	     "  verbose: yes\n");
	assert_errors("2:9: station.name: expected a string, got a list\n"
		      "3:9: station.note: expected a string without NUL characters\n"
		      "4:16: station.elevation_m: expected an integer from 0 to 9000, got a quoted "
		      "string\n"
		      "5:15: station.gust_limit: expected a number from 0.5 to 75, got a mapping\n"
		      "6:11: station.active: expected true or false, got a quoted string\n"
		      "7:10: station.units: expected one of metric, imperial, got a list\n"
		      "8:11: station.upload: expected a mapping, got a scalar\n"
		      "9:12: station.sensors: expected a list of sensors, got a mapping\n"
		      "10:12: station.retries: expected an integer from 0 to 10, got '1.5'\n"
		      "11:12: station.verbose: expected true or false, got 'yes'\n");
	/* Nothing refused was stored; the required name was there, if bad. */
	assert_null(T.st.name);
	assert_string_equal(T.st.note, "(none)");
	assert_int_equal(T.st.elevation_m, 100);
	assert_null(T.st.sensors);
}

static void test_uint_and_double_ranges(void **state)
{
	(void)state;
	walk("station: { name: a, elevation_m: 9000, gust_limit: .5, retries: 10 }\n");
	assert_errors("");
	assert_int_equal(T.st.elevation_m, 9000);
	assert_true(T.st.gust_limit == 0.5);
	assert_int_equal(T.st.common.retries, 10);
	walk("station:\n"
	     "  name: a\n"
	     "  elevation_m: 9001\n"
	     "  gust_limit: 75.01\n"
	     "  retries: 18446744073709551616\n"
	     "  upload: { host: h, port: 0 }\n");
	assert_errors("3:16: station.elevation_m: 9001 is out of range: expected 0 to 9000\n"
		      "4:15: station.gust_limit: 75.01 is out of range: expected 0.5 to 75\n"
		      "5:12: station.retries: expected an integer from 0 to 10, got "
		      "'18446744073709551616'\n"
		      "6:28: station.upload.port: 0 is out of range: expected 1 to 65535\n");
	assert_int_equal(T.st.elevation_m, 9000);
	/* No sign; nothing beyond what a double holds. */
	walk("station: { name: a, elevation_m: -1, gust_limit: -1 }\n");
	assert_errors("1:34: station.elevation_m: expected an integer from 0 to 9000, got '-1'\n"
		      "1:50: station.gust_limit: expected a number from 0.5 to 75, got '-1'\n");
	walk("station: { name: a, elevation_m: 1, gust_limit: 1e999 }\n");
	assert_errors("1:49: station.gust_limit: expected a number from 0.5 to 75, got '1e999'\n");
}

static void test_enum_names_and_aliases(void **state)
{
	(void)state;
	/* units: any case, and aliases; kind: exactly as written in the table. */
	walk("station: { name: a, elevation_m: 1, units: Metric }\n");
	assert_errors("");
	assert_int_equal(T.st.units, UNITS_METRIC);
	walk("station: { name: a, elevation_m: 1, units: si }\n");
	assert_errors("");
	assert_int_equal(T.st.units, UNITS_METRIC);
	walk("station: { name: a, elevation_m: 1, units: furlongs, sensors: [{kind: Wind, "
	     "channel: 1}] }\n");
	/* The message lists the names, never the aliases. */
	assert_errors("1:44: station.units: expected one of metric, imperial, got 'furlongs'\n"
		      "1:71: station.sensors[0].kind: expected one of wind, rain, sun, got 'Wind'\n");
}

/* ---- keys ------------------------------------------------------------------------------ */

static void test_unknown_duplicate_and_odd_keys(void **state)
{
	(void)state;
	walk("station:\n"
	     "  name: a\n"
	     "  elevation_m: 1\n"
	     "  elevation: 2\n"
	     "  name: b\n"
	     "  ? [x]\n"
	     "  : 1\n"
	     "  upload: { host: h, hots: i }\n"
	     "  \"\\e[31m\": 1\n"
	     "stations: {}\n");
	/* The list of keys has the included table's too, in the table's order. */
	assert_errors("4:3: station: unknown key 'elevation' (expected one of: name, note, "
		      "elevation_m, gust_limit, active, units, upload, report_at, sensors, "
		      "retries, verbose)\n"
		      "5:3: station.name: duplicate key (first set at line 2)\n"
		      "6:5: station: expected a plain key, got a list\n"
		      "8:22: station.upload: unknown key 'hots' (expected one of: host, port)\n"
		      "9:3: station: unknown key '\\x1b[31m' (expected one of: name, note, "
		      "elevation_m, gust_limit, active, units, upload, report_at, sensors, "
		      "retries, verbose)\n"
		      "10:1: unknown key 'stations' (expected one of: station)\n");
	/* The first value stands. */
	assert_string_equal(T.st.name, "a");
}

static void test_required_keys(void **state)
{
	(void)state;
	/* REQUIRED: each one missing, whatever else is wrong, in the table's order, where the
	 * mapping starts. */
	walk("station:\n  active: maybe\n");
	assert_errors("2:3: station: missing required key 'name'\n"
		      "2:3: station: missing required key 'elevation_m'\n"
		      "2:11: station.active: expected true or false, got 'maybe'\n");
	/* A key present with a bad value is not missing. */
	walk("station:\n  name: [a]\n  elevation_m: x\n");
	assert_errors("2:9: station.name: expected a string, got a list\n"
		      "3:16: station.elevation_m: expected an integer from 0 to 9000, got 'x'\n");
	/* REQUIRED_QUIET: said only when nothing else in the mapping was wrong, so for the
	 * first key only, with its hint. */
	walk("station:\n"
	     "  name: a\n"
	     "  elevation_m: 1\n"
	     "  upload: { port: 80 }\n"
	     "  sensors:\n"
	     "    - {}\n"
	     "    - { kind: rain }\n"
	     "    - { chanel: 2 }\n"
	     "    - { kind: sun, channel: 9 }\n");
	assert_errors("4:11: station.upload: missing required key 'host': where readings go\n"
		      "6:7: station.sensors[0]: missing required key 'kind'\n"
		      "7:7: station.sensors[1]: missing required key 'channel'\n"
		      "8:9: station.sensors[2]: unknown key 'chanel' (expected one of: kind, "
		      "channel)\n"
		      "9:29: station.sensors[3].channel: 9 is out of range: expected 1 to 8\n");
	/* The walk says whether its mapping was all good: no sensor was kept. */
	assert_int_equal(T.st.n_sensors, 0);
	assert_non_null(T.st.sensors);
}

/* ---- what a walk notes, and custom fields ---------------------------------------------- */

static void test_found_where_good(void **state)
{
	(void)state;
	walk("# a comment\n"
	     "station:\n"
	     "    name: two words\n"
	     "    elevation_m: 12\n");
	assert_errors("3:11: station.name: one word, please\n");
	/* A value its check refused stays stored, but is not noted as found. */
	assert_string_equal(T.st.name, "two words");
	assert_null(T.found.name.node);
	assert_string_equal(T.found.name.path, "station.name");
	assert_string_equal(T.found.name.key, "name");
	/* Found: the value's node, where it starts. */
	assert_non_null(T.found.elevation.node);
	assert_int_equal(T.found.elevation.node->start_mark.line + 1, 4);
	assert_int_equal(T.found.elevation.node->start_mark.column + 1, 18);
	assert_string_equal(T.found.elevation.path, "station.elevation_m");
	/* Absent: no node, but the key and path a later message can name. */
	assert_null(T.found.report_at.node);
	assert_string_equal(T.found.report_at.path, "station.report_at");
	assert_string_equal(T.found.station.path, "station");
	/* yamlconf_missing, for a key whose absence the caller decides on. */
	yamlconf_missing(T.yc, T.found.elevation.node, T.found.report_at.path, T.found.report_at.key,
			 NULL);
	assert_errors("4:18: station.report_at: missing required key 'report_at'\n");
}

static void test_custom_field(void **state)
{
	(void)state;
	walk("station: { name: a, elevation_m: 1, report_at: '23:59' }\n");
	assert_errors("");
	assert_string_equal(T.st.report_at, "23:59");
	assert_non_null(T.found.report_at.node);
	walk("station: { name: a, elevation_m: 1, report_at: '24:00' }\n");
	assert_errors("1:48: station.report_at: expected HH:MM\n");
	assert_string_equal(T.st.report_at, "23:59");
	assert_null(T.found.report_at.node);
}

static bool keep_odd(struct yamlconf *yc, const yaml_node_t *n, const char *path, void *items,
		     size_t count)
{
	uint64_t v = 0;

	if (!yamlconf_get_uint(yc, n, path, 0, 100, &v))
		return false;
	((uint64_t *)items)[count] = v;
	return v % 2 == 1;
}

static void test_list(void **state)
{
	void *items = NULL;
	size_t count = 99;

	(void)state;
	load("[1, 2, x, 3, [4]]\n");
	assert_true(yamlconf_get_list(T.yc, T.root, "odd", "a list of numbers", sizeof(uint64_t),
				      keep_odd, &items, &count));
	assert_errors("1:8: odd[2]: expected an integer from 0 to 100, got 'x'\n"
		      "1:14: odd[4]: expected an integer from 0 to 100, got a list\n");
	assert_int_equal(count, 2);
	assert_int_equal(((uint64_t *)items)[0], 1);
	assert_int_equal(((uint64_t *)items)[1], 3);
	free(items);
	/* Empty: still an array, of nothing. */
	items = NULL;
	load("[]\n");
	assert_true(yamlconf_get_list(T.yc, T.root, "odd", "a list of numbers", sizeof(uint64_t),
				      keep_odd, &items, &count));
	assert_non_null(items);
	assert_int_equal(count, 0);
	free(items);
	/* Not a list: nothing written. */
	items = NULL;
	count = 99;
	load("odd: 1\n");
	assert_false(yamlconf_get_list(T.yc, T.root, "odd", "a list of numbers", sizeof(uint64_t),
				       keep_odd, &items, &count));
	assert_errors("1:1: odd: expected a list of numbers, got a mapping\n");
	assert_null(items);
	assert_int_equal(count, 99);
}

/* ---- errors: order, cap, quoting -------------------------------------------------------- */

static void test_errors_in_file_order(void **state)
{
	(void)state;
	load("a: 1\nb: 2\nc: 3\n");
	const yaml_node_t *a = yamlconf_pair_value(T.yc, T.root, 0);
	const yaml_node_t *c = yamlconf_pair_value(T.yc, T.root, 2);
	/* Found in another order than the file's: said in the file's, and those at one place
	 * in the order found. */
	yamlconf_error(T.yc, c, "c", "third");
	yamlconf_error(T.yc, a, "a", "first");
	yamlconf_error_at(T.yc, 0, 0, NULL, "the file as a whole");
	yamlconf_error(T.yc, a, NULL, "first again");
	yamlconf_error_at(T.yc, 2, 1, "", "between");
	assert_int_equal(yamlconf_error_count(T.yc), 5);
	assert_errors("the file as a whole\n"
		      "1:4: a: first\n"
		      "1:4: first again\n"
		      "2:1: between\n"
		      "3:4: c: third\n");
	assert_int_equal(yamlconf_error_count(T.yc), 0);
}

static void test_error_cap(void **state)
{
	char **items = NULL;
	size_t count = 0;

	(void)state;
	T.limits.max_errors = 2;
	load("x: 1\n");
	for (int i = 3; i > 0; i--)
		yamlconf_error_at(T.yc, (size_t)i, 1, NULL, "error %d", i);
	/* Every error said counts, kept or not. */
	assert_int_equal(yamlconf_error_count(T.yc), 3);
	/* The first ones found are kept (then sorted), and a last line says more were dropped.
	 * The caller's list is appended to. */
	items = malloc(sizeof(*items));
	assert_non_null(items);
	items[count++] = strdup("earlier");
	yamlconf_flush_errors(T.yc, &items, &count);
	assert_int_equal(count, 4);
	assert_string_equal(items[0], "earlier");
	assert_true(strstr(items[1], ":2:1: error 2") != NULL);
	assert_true(strstr(items[2], ":3:1: error 3") != NULL);
	assert_true(strstr(items[3], ": too many errors, stopped after 2") != NULL);
	for (size_t i = 0; i < count; i++)
		free(items[i]);
	free(items);
}

/* Beyond the limit, errors are dropped but still count: a mapping with one is not good. */
static void test_error_cap_still_counts(void **state)
{
	(void)state;
	T.limits.max_errors = 1;
	walk("station:\n"
	     "  name: a\n"
	     "  elevation_m: 1\n"
	     "  units: furlongs\n"
	     "  sensors: [{kind: wind, channel: 1, x: 1}, {}, {kind: rain, channel: 2}]\n");
	assert_int_equal(yamlconf_error_count(T.yc), 3);
	assert_int_equal(T.st.n_sensors, 1);
	assert_int_equal(T.st.sensors[0].kind, KIND_RAIN);
	assert_errors("4:10: station.units: expected one of metric, imperial, got 'furlongs'\n"
		      "too many errors, stopped after 1\n");
}

static void test_quote(void **state)
{
	char small[12], big[80];

	(void)state;
	assert_string_equal(YAMLCONF_QUOTED(big, "a\tb\x7f"), "a\\x09b\\x7f");
	assert_string_equal(YAMLCONF_QUOTED(small, "abcdefghijklmnop"), "abcdefg...");
	assert_string_equal(YAMLCONF_QUOTED(small, "abcdef\n"), "abcdef\\x0a");
}

/* ---- the file and its document ---------------------------------------------------------- */

static void test_file_problems(void **state)
{
	char big[5000];

	(void)state;
	assert_int_equal(yamlconf_open(T.file, &T.limits, &T.yc), -ENOENT);
	assert_errors("cannot open station file: No such file or directory\n");
	yamlconf_free(T.yc);
	T.yc = NULL;

	assert_int_equal(mkdir(T.file, 0700), 0);
	assert_int_equal(yamlconf_open(T.file, &T.limits, &T.yc), -EINVAL);
	assert_errors("not a regular file\n");
	yamlconf_free(T.yc);
	T.yc = NULL;
	rmdir(T.file);

	/* A FIFO is refused, not waited on. */
	assert_int_equal(mkfifo(T.file, 0600), 0);
	assert_int_equal(yamlconf_open(T.file, &T.limits, &T.yc), -EINVAL);
	assert_errors("not a regular file\n");
	unlink(T.file);

	memset(big, '#', sizeof(big));
	assert_int_equal(put_bytes(big, 4097), -EFBIG);
	assert_errors("station file is 4097 bytes, over the limit of 4096 bytes: is it the right "
		      "file?\n");
	assert_int_equal(put_bytes(big, 4096), 0);
	assert_int_equal(yamlconf_load(T.yc, &T.root), 0);
	assert_null(T.root);
}

static int load_text(const char *text)
{
	assert_int_equal(put_bytes(text, strlen(text)), 0);
	T.root = NULL;
	return yamlconf_load(T.yc, &T.root);
}

static void test_document_problems(void **state)
{
	(void)state;
	/* No document at all: no root, and no error (whether that is one is the caller's). */
	assert_int_equal(load_text(""), 0);
	assert_null(T.root);
	assert_int_equal(load_text("# only a comment\n"), 0);
	assert_null(T.root);
	assert_errors("");

	assert_int_equal(load_text("a: [1, 2\nb: 3\n"), -EINVAL);
	assert_errors("2:2: YAML syntax error: did not find expected ',' or ']' while parsing a "
		      "flow sequence (line 1, column 4)\n");
	assert_int_equal(load_text("a: 1\n b: 2\n"), -EINVAL);
	assert_errors("2:3: YAML syntax error: mapping values are not allowed in this context\n");
	assert_int_equal(load_text("a: 1\nb: \xff\n"), -EINVAL);
	assert_errors("2:4: invalid text: invalid leading UTF-8 octet (byte 0xff); the file must be "
		      "UTF-8 YAML\n");

	/* Within the limits, and one beyond each. */
	assert_int_equal(load_text("a: [[[x]]]\n"), 0);
	assert_int_equal(load_text("a: [[[[x]]]]\n"), -EINVAL);
	assert_errors("1:7: nested more than 4 levels deep: not a station file\n");
	assert_int_equal(load_text("a: &a 1\nb: &b 2\nc: &c 3\n"), 0);
	assert_int_equal(load_text("a: &a 1\nb: &b 2\nc: &c 3\nd: &d 4\n"), -EINVAL);
	assert_errors("4:4: more than 3 anchors: not a station file\n");

	/* One document only: a second, or what cannot be parsed after the first, is refused
	 * once the first has been read. */
	assert_int_equal(load_text("a: 1\n---\nb: 2\n"), 0);
	assert_non_null(T.root);
	yamlconf_expect_end(T.yc);
	assert_errors("3:1: a second YAML document is not allowed here\n");
	assert_int_equal(load_text("a: 1\n---\nb: [\n"), 0);
	yamlconf_expect_end(T.yc);
	assert_errors("4:1: YAML syntax error: did not find expected node content while parsing a "
		      "flow node (line 4, column 1)\n");
	assert_int_equal(load_text("a: 1\n...\n# the end\n"), 0);
	yamlconf_expect_end(T.yc);
	assert_errors("");
}

static void test_node_helpers(void **state)
{
	(void)state;
	load("a:\nb: ~\nc: null\nd: ''\ne: [1]\nf: {}\ng: \"x\\0y\"\n");
	assert_int_equal(yamlconf_count(T.root), 7);
	static const char *const names[] = {"an empty value", "a scalar", "a scalar", "a scalar",
					    "a list",	      "a mapping", "a scalar"};
	static const bool nulls[] = {true, true, true, false, false, false, false};
	for (size_t i = 0; i < 7; i++) {
		const yaml_node_t *v = yamlconf_pair_value(T.yc, T.root, i);
		assert_string_equal(yamlconf_type_name(v), names[i]);
		assert_int_equal(yamlconf_is_null(v), nulls[i]);
		assert_int_equal(yamlconf_is_empty(v), i == 0);
	}
	const yaml_node_t *e = yamlconf_pair_value(T.yc, T.root, 4);
	assert_int_equal(yamlconf_count(e), 1);
	assert_string_equal(yamlconf_scalar(yamlconf_item(T.yc, e, 0)), "1");
	assert_string_equal(yamlconf_scalar(yamlconf_pair_key(T.yc, T.root, 6)), "g");
	assert_true(yamlconf_has_nul(yamlconf_pair_value(T.yc, T.root, 6)));
	assert_false(yamlconf_expect(T.yc, e, "e", YAML_MAPPING_NODE, "a mapping of things"));
	assert_errors("5:4: e: expected a mapping of things, got a list\n");
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
		TEST(test_every_type_read),
		TEST(test_null_absent_and_empty),
		TEST(test_wrong_types),
		TEST(test_uint_and_double_ranges),
		TEST(test_enum_names_and_aliases),
		TEST(test_unknown_duplicate_and_odd_keys),
		TEST(test_required_keys),
		TEST(test_found_where_good),
		TEST(test_custom_field),
		TEST(test_list),
		TEST(test_errors_in_file_order),
		TEST(test_error_cap),
		TEST(test_error_cap_still_counts),
		TEST(test_quote),
		TEST(test_file_problems),
		TEST(test_document_problems),
		TEST(test_node_helpers),
	};

	return cmocka_run_group_tests_name("yamlconf", tests, NULL, NULL);
}
