/* log: escaping of untrusted text, the text and JSON line formats, level filtering, the
 * journald priority prefixes, and the native journal entries with their fields (through a
 * sink that stands in for sd_journal_sendv). */
#include "log.h"
#include "text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- a stand-in for sd_journal_sendv ---------------------------------------------------------- */

#define J_MAX_FIELDS 16

/* What the last entry held, one "NAME=value" (bytes as given) per field; and what to answer. */
static struct {
	int ret;
	unsigned calls;
	int n;
	char *field[J_MAX_FIELDS];
	size_t len[J_MAX_FIELDS];
} J;

static void journal_reset(int ret)
{
	for (int i = 0; i < J.n; i++)
		free(J.field[i]);
	memset(&J, 0, sizeof(J));
	J.ret = ret;
}

static int journal_capture(const struct iovec *iov, int n)
{
	for (int i = 0; i < J.n; i++)
		free(J.field[i]);
	J.n = 0;
	J.calls++;
	for (int i = 0; i < n && i < J_MAX_FIELDS; i++) {
		J.field[i] = malloc(iov[i].iov_len + 1);
		assert_non_null(J.field[i]);
		memcpy(J.field[i], iov[i].iov_base, iov[i].iov_len);
		J.field[i][iov[i].iov_len] = '\0';
		J.len[i] = iov[i].iov_len;
		J.n++;
	}
	return J.ret;
}

/* The value of field NAME in the last entry, or NULL; fails on a field given twice. */
static const char *journal_field(const char *name)
{
	size_t nl = strlen(name);
	const char *found = NULL;

	for (int i = 0; i < J.n; i++) {
		if (strncmp(J.field[i], name, nl) == 0 && J.field[i][nl] == '=') {
			if (found)
				fail_msg("field %s given twice", name);
			found = J.field[i] + nl + 1;
		}
	}
	return found;
}

/* ---- log_msg ------------------------------------------------------------------------------- */

static struct {
	FILE *mem;
	char *buf;
	size_t len;
	int saved_stderr;
	char tmpfile[64];
} L = {.saved_stderr = -1};

static int setup(void **state)
{
	(void)state;
	/* Timestamps are UTC whatever the local zone (Nepal: +05:45, no tzdata needed). */
	setenv("TZ", "NPT-5:45", 1);
	tzset();
	unsetenv("JOURNAL_STREAM");
	log_init();
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	/* No test reaches a real journal, should one run here: by default the stand-in refuses,
	 * as sd_journal_sendv does without journald, and lines go to stderr. */
	journal_reset(-ENOENT);
	log_set_journal_sink(journal_capture);
	L.buf = NULL;
	L.len = 0;
	L.mem = open_memstream(&L.buf, &L.len);
	if (!L.mem)
		return -1;
	log_set_stream(L.mem);
	return 0;
}

static void restore_stderr(void)
{
	if (L.saved_stderr >= 0) {
		fflush(stderr);
		dup2(L.saved_stderr, STDERR_FILENO);
		close(L.saved_stderr);
		L.saved_stderr = -1;
	}
	if (L.tmpfile[0]) {
		unlink(L.tmpfile);
		L.tmpfile[0] = '\0';
	}
}

static int teardown(void **state)
{
	(void)state;
	restore_stderr();
	log_set_stream(NULL);
	log_set_journal_sink(NULL);
	journal_reset(0);
	unsetenv("JOURNAL_STREAM");
	log_init();
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	if (L.mem)
		fclose(L.mem);
	L.mem = NULL;
	free(L.buf);
	L.buf = NULL;
	return 0;
}

/* What has been logged so far. */
static const char *output(void)
{
	fflush(L.mem);
	return L.buf ? L.buf : "";
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* Checks "YYYY-MM-DDTHH:MM:SS.mmmZ " at S, within a few seconds of now (UTC). */
static void assert_timestamp(const char *s)
{
	struct tm tm = {0};
	int ms = -1;
	char z = 0, sp = 0;

	for (int i = 0; i < 24; i++) {
		bool digit = s[i] >= '0' && s[i] <= '9';
		bool sep = i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19 || i == 23;
		if (digit == sep)
			fail_msg("not a timestamp: '%.30s'", s);
	}
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z, &sp) != 9 ||
	    z != 'Z' || sp != ' ')
		fail_msg("not a timestamp: '%.30s'", s);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	time_t now = time(NULL);
	if (t < now - 5 || t > now + 5)
		fail_msg("timestamp '%.24s' is not the current UTC time", s);
}

static void test_text_format(void **state)
{
	(void)state;
	log_info("newsletter: '%s' uploaded, %d rows", "contacts.csv", 1250);
	const char *out = output();
	assert_int_equal(count_lines(out), 1);
	assert_timestamp(out);
	assert_string_equal(out + 24, " info: newsletter: 'contacts.csv' uploaded, 1250 rows\n");

	log_error("boom");
	log_warning("careful");
	out = output();
	assert_int_equal(count_lines(out), 3);
	const char *l2 = strchr(out, '\n') + 1;
	const char *l3 = strchr(l2, '\n') + 1;
	assert_timestamp(l2);
	assert_memory_equal(l2 + 24, " error: boom\n", 13);
	assert_timestamp(l3);
	assert_string_equal(l3 + 24, " warning: careful\n");
}

static void test_level_filtering(void **state)
{
	(void)state;
	log_debug("hidden at info");
	assert_string_equal(output(), "");
	assert_int_equal(log_get_level(), LOG_LEVEL_INFO);

	log_configure(LOG_LEVEL_WARNING, LOG_FORMAT_TEXT);
	assert_int_equal(log_get_level(), LOG_LEVEL_WARNING);
	log_debug("d");
	log_info("i");
	assert_string_equal(output(), "");
	log_warning("w");
	log_error("e");
	assert_int_equal(count_lines(output()), 2);
	assert_non_null(strstr(output(), " warning: w\n"));
	assert_non_null(strstr(output(), " error: e\n"));

	log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	log_warning("w2");
	assert_int_equal(count_lines(output()), 2);
	log_error("e2");
	assert_int_equal(count_lines(output()), 3);

	log_configure(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
	log_debug("d2 %d", 7);
	assert_int_equal(count_lines(output()), 4);
	assert_non_null(strstr(output(), " debug: d2 7\n"));
}

static void test_one_line_per_call(void **state)
{
	(void)state;
	/* A file name is user input: it must not be able to forge a second log line. */
	const char *evil = "x.csv\n2030-01-01T00:00:00.000Z error: forged\r\x1b[2K";
	log_info("newsletter: '%s' uploaded", evil);
	const char *out = output();
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "'x.csv\\n2030-01-01T00:00:00.000Z error: forged\\r\\x1b[2K' "
				    "uploaded\n"));
	assert_null(strchr(out, '\r'));
	assert_null(strchr(out, '\x1b'));

	log_info("caf\xe9 \xed\xa0\x80 \xc3\xa9");
	out = output();
	assert_int_equal(count_lines(out), 2);
	assert_non_null(strstr(out, " info: caf\\xe9 \\xed\\xa0\\x80 \xc3\xa9\n"));
}

static void test_long_message(void **state)
{
	size_t n = 10000;
	char *big = malloc(n + 1);

	(void)state;
	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = i % 3 == 0 ? '\n' : 'a';
	big[n] = '\0';
	log_warning("%s", big);
	free(big);
	const char *out = output();
	assert_int_equal(count_lines(out), 1);
	size_t len = strlen(out);
	assert_true(len > 1000 && len < 4096 + 64);
	assert_int_equal(out[len - 1], '\n');
	/* Cut between escapes, never inside one: the text before the newline ends in a whole
	 * "\n" escape or an 'a'. */
	const char *body = out + 24 + strlen(" warning: ");
	size_t bl = len - 1 - (size_t)(body - out);
	size_t backslashes = 0;
	for (size_t i = bl; i > 0 && body[i - 1] == '\\'; i--)
		backslashes++;
	assert_int_equal(backslashes % 2, 0);
}

static void test_json_format(void **state)
{
	(void)state;
	log_configure(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
	log_error("e \"quoted\"");
	log_warning("w\nforged");
	log_info("caf\xe9 \xc3\xa9 back\\slash");
	log_debug("d %d", 4);

	const char *out = output();
	assert_int_equal(count_lines(out), 4);
	static const char *const levels[] = {"error", "warning", "info", "debug"};
	static const char *const msgs[] = {"e \"quoted\"", "w\\nforged",
					   "caf\\xe9 \xc3\xa9 back\\\\slash", "d 4"};
	const char *line = out;
	for (int i = 0; i < 4; i++) {
		const char *nl = strchr(line, '\n');
		assert_non_null(nl);
		char *copy = strndup(line, (size_t)(nl - line));
		cJSON *j = cJSON_Parse(copy);
		if (!j)
			fail_msg("line %d is not JSON: %s", i, copy);
		cJSON *lv = cJSON_GetObjectItemCaseSensitive(j, "level");
		cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "msg");
		cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
		assert_true(cJSON_IsString(lv));
		assert_true(cJSON_IsString(msg));
		assert_true(cJSON_IsString(ts));
		assert_string_equal(lv->valuestring, levels[i]);
		assert_string_equal(msg->valuestring, msgs[i]);
		char tsbuf[32];
		snprintf(tsbuf, sizeof(tsbuf), "%s ", ts->valuestring);
		assert_int_equal(strlen(ts->valuestring), 24);
		assert_timestamp(tsbuf);
		cJSON_Delete(j);
		free(copy);
		line = nl + 1;
	}
}

/* ---- journald ---------------------------------------------------------------------------------- */

/* Points fd 2 at a fresh file, sets JOURNAL_STREAM to its "device:inode" (with INO_DELTA added
 * to the inode), or to JS when given, and re-runs log_init; logging then goes to stderr. */
static void stderr_to_file_ex(const char *js, unsigned long long ino_delta)
{
	struct stat st;
	char val[64];

	strcpy(L.tmpfile, "/tmp/rdd-log-XXXXXX");
	int fd = mkstemp(L.tmpfile);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	fflush(stderr);
	L.saved_stderr = dup(STDERR_FILENO);
	assert_true(L.saved_stderr >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
	snprintf(val, sizeof(val), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + ino_delta);
	if (js)
		setenv("JOURNAL_STREAM", js, 1);
	else
		setenv("JOURNAL_STREAM", val, 1);
	log_set_stream(NULL);
	log_init();
}

static void stderr_to_file(const char *js)
{
	stderr_to_file_ex(js, 0);
}

/* Restores fd 2 and returns what was written to the file (caller frees). */
static char *stderr_collect(void)
{
	char path[64];
	FILE *f;
	char *buf = calloc(1, 65536);

	fflush(stderr);
	snprintf(path, sizeof(path), "%s", L.tmpfile);
	f = fopen(path, "rb");
	assert_non_null(buf);
	if (f) {
		size_t n = fread(buf, 1, 65535, f);
		buf[n] = '\0';
		fclose(f);
	}
	restore_stderr();
	return buf;
}

static void test_journald_prefix(void **state)
{
	(void)state;
	stderr_to_file(NULL);
	log_configure(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
	log_error("e1");
	log_warning("w1");
	log_info("i1 '%s'", "a\nb");
	log_debug("d1");
	char *out = stderr_collect();
	assert_string_equal(out, "<3>e1\n<4>w1\n<6>i1 'a\\nb'\n<7>d1\n");
	free(out);
}

static void test_journald_json(void **state)
{
	(void)state;
	stderr_to_file(NULL);
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
	log_warning("w");
	char *out = stderr_collect();
	assert_memory_equal(out, "<4>{", 4);
	assert_int_equal(count_lines(out), 1);
	cJSON *j = cJSON_Parse(out + 3);
	assert_non_null(j);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "level")->valuestring, "warning");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "msg")->valuestring, "w");
	cJSON_Delete(j);
	free(out);
}

/* JOURNAL_STREAM inherited by a process whose stderr is elsewhere must not count. */
static void test_journald_mismatch(void **state)
{
	static const char *const values[] = {"1:2", "garbage", "", "12345"};

	(void)state;
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		stderr_to_file(values[i]);
		log_info("plain");
		char *out = stderr_collect();
		if (out[0] == '<')
			fail_msg("JOURNAL_STREAM='%s' gave a priority prefix: %s", values[i], out);
		assert_int_equal(count_lines(out), 1);
		assert_timestamp(out);
		assert_string_equal(out + 24, " info: plain\n");
		free(out);
	}

	/* Same device, other inode; and the other way round. */
	stderr_to_file_ex(NULL, 1);
	log_info("plain");
	char *out = stderr_collect();
	assert_timestamp(out);
	free(out);
	struct stat st;
	char val[64];
	int fd = open("/", O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	stderr_to_file_ex(NULL, 0);
	/* Replace the device with /'s, keeping the file's inode. */
	struct stat fst;
	assert_int_equal(fstat(STDERR_FILENO, &fst), 0);
	if (fst.st_dev != st.st_dev) {
		snprintf(val, sizeof(val), "%llu:%llu", (unsigned long long)st.st_dev,
			 (unsigned long long)fst.st_ino);
		setenv("JOURNAL_STREAM", val, 1);
		log_init();
	}
	log_info("plain");
	out = stderr_collect();
	if (fst.st_dev != st.st_dev)
		assert_timestamp(out);
	free(out);
}

/* After the journal was detected, log_init without JOURNAL_STREAM turns the prefix off again. */
static void test_journald_reinit(void **state)
{
	(void)state;
	stderr_to_file(NULL);
	unsetenv("JOURNAL_STREAM");
	log_init();
	log_info("x");
	char *out = stderr_collect();
	assert_timestamp(out);
	free(out);
}

/* log_set_stream(NULL) goes back to stderr. */
static void test_stream_reset(void **state)
{
	(void)state;
	log_info("to memory");
	stderr_to_file("0:0");
	log_info("to stderr");
	char *out = stderr_collect();
	assert_non_null(strstr(out, " info: to stderr\n"));
	assert_null(strstr(out, "to memory"));
	free(out);
	assert_null(strstr(output(), "to stderr"));
}

/* Each line reaches the file at once, even through a fully buffered stream: a daemon's last
 * words before a crash must not sit in a buffer. */
static void test_each_line_flushed(void **state)
{
	char path[] = "/tmp/rdd-log-flush-XXXXXX", buf[256] = "";
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	FILE *f = fdopen(dup(fd), "w");
	assert_non_null(f);
	assert_int_equal(setvbuf(f, NULL, _IOFBF, 65536), 0);
	log_set_stream(f);
	log_error("first");
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	log_set_stream(L.mem);
	fclose(f);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, " error: first\n"));
}

/* ---- structured events ------------------------------------------------------------------------ */

static const struct log_fields some_fields = {LOG_ID_FILE_FAILED, "newsletter", "a\nb.csv",
					      "479e3145-0000-4000-8000-000000000001", "failed"};

/* Text lines are log_msg's, fields or not. */
static void test_event_text_like_msg(void **state)
{
	(void)state;
	log_event(LOG_LEVEL_ERROR, &some_fields, "newsletter: '%s' failed", "a\nb.csv");
	log_error("newsletter: '%s' failed", "a\nb.csv");
	log_event(LOG_LEVEL_INFO, NULL, "no fields %d", 1);
	log_event(LOG_LEVEL_DEBUG, &some_fields, "filtered");
	const char *out = output();
	assert_int_equal(count_lines(out), 3);
	const char *l2 = strchr(out, '\n') + 1;
	const char *l3 = strchr(l2, '\n') + 1;
	assert_timestamp(out);
	assert_memory_equal(out + 24, " error: newsletter: 'a\\nb.csv' failed\n", 38);
	assert_memory_equal(l2 + 24, out + 24, 38);
	assert_string_equal(l3 + 24, " info: no fields 1\n");
	assert_int_equal(J.calls, 0); /* not the journal */
}

static cJSON *parse_line(const char *line)
{
	const char *nl = strchr(line, '\n');
	assert_non_null(nl);
	char *copy = strndup(line, (size_t)(nl - line));
	cJSON *j = cJSON_Parse(copy);
	if (!j)
		fail_msg("not JSON: %s", copy);
	free(copy);
	return j;
}

static const char *json_str(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* JSON lines carry the fields as keys; absent ones are left out; a name that is not UTF-8 is
 * given escaped, so that the line stays valid JSON. */
static void test_event_json_keys(void **state)
{
	(void)state;
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
	log_event(LOG_LEVEL_ERROR, &some_fields, "newsletter: '%s' failed", "a\nb.csv");
	log_event(LOG_LEVEL_WARNING,
		  &(struct log_fields){.message_id = LOG_ID_UPLOAD_RETRY, .folder = "news",
				       .file = "caf\xe9.csv"},
		  "retry");
	log_info("plain");
	const char *out = output();
	assert_int_equal(count_lines(out), 3);

	cJSON *j = parse_line(out);
	assert_string_equal(json_str(j, "msg"), "newsletter: 'a\\nb.csv' failed");
	assert_string_equal(json_str(j, "level"), "error");
	assert_string_equal(json_str(j, "message_id"), LOG_ID_FILE_FAILED);
	assert_string_equal(json_str(j, "folder"), "newsletter");
	assert_string_equal(json_str(j, "file"), "a\nb.csv"); /* JSON escapes it itself */
	assert_string_equal(json_str(j, "import_id"), "479e3145-0000-4000-8000-000000000001");
	assert_string_equal(json_str(j, "outcome"), "failed");
	cJSON_Delete(j);

	const char *l2 = strchr(out, '\n') + 1;
	j = parse_line(l2);
	assert_string_equal(json_str(j, "file"), "caf\\xe9.csv");
	assert_string_equal(json_str(j, "message_id"), LOG_ID_UPLOAD_RETRY);
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "import_id"));
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "outcome"));
	cJSON_Delete(j);

	j = parse_line(strchr(l2, '\n') + 1);
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "message_id"));
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "folder"));
	cJSON_Delete(j);
}

/* When stderr is the journal, an event is one native entry: MESSAGE (escaped, as the line would
 * be), PRIORITY, SYSLOG_IDENTIFIER and the fields, whose bytes are as they are; nothing on
 * stderr. */
static void test_journal_entry_fields(void **state)
{
	(void)state;
	stderr_to_file(NULL);
	journal_reset(0);
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	log_event(LOG_LEVEL_ERROR, &some_fields, "newsletter: '%s' failed", "a\nb.csv");
	assert_int_equal(J.calls, 1);
	assert_int_equal(J.n, 8);
	assert_string_equal(journal_field("MESSAGE"), "newsletter: 'a\\nb.csv' failed");
	assert_string_equal(journal_field("PRIORITY"), "3");
	assert_string_equal(journal_field("SYSLOG_IDENTIFIER"), "resend-dropd");
	assert_string_equal(journal_field("MESSAGE_ID"), LOG_ID_FILE_FAILED);
	assert_string_equal(journal_field("RDD_FOLDER"), "newsletter");
	assert_string_equal(journal_field("RDD_FILE"), "a\nb.csv");
	assert_string_equal(journal_field("RDD_IMPORT_ID"), "479e3145-0000-4000-8000-000000000001");
	assert_string_equal(journal_field("RDD_OUTCOME"), "failed");
	for (int i = 0; i < J.n; i++)
		assert_int_equal(J.len[i], strlen(J.field[i])); /* no NUL sent, none cut */

	/* A name that is not UTF-8 is given as it is, too. */
	log_event(LOG_LEVEL_WARNING, &(struct log_fields){.folder = "n", .file = "caf\xe9"},
		  "w '%s'", "caf\xe9");
	assert_int_equal(J.calls, 2);
	assert_string_equal(journal_field("MESSAGE"), "w 'caf\\xe9'");
	assert_string_equal(journal_field("PRIORITY"), "4");
	assert_string_equal(journal_field("RDD_FILE"), "caf\xe9");
	assert_null(journal_field("MESSAGE_ID"));
	assert_null(journal_field("RDD_IMPORT_ID"));

	char *out = stderr_collect();
	assert_string_equal(out, "");
	free(out);
}

/* Plain messages go to the journal too (one stream, in order), with no RDD_ fields; levels
 * are filtered first; log.format json does not put JSON in MESSAGE. */
static void test_journal_plain_and_levels(void **state)
{
	static const char *const prio[] = {"3", "4", "6", "7"};

	(void)state;
	stderr_to_file(NULL);
	journal_reset(0);
	log_configure(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
	for (int l = LOG_LEVEL_ERROR; l <= LOG_LEVEL_DEBUG; l++) {
		log_msg((enum log_level)l, "m%d", l);
		assert_int_equal(J.calls, (unsigned)l + 1);
		assert_int_equal(J.n, 3);
		assert_string_equal(journal_field("PRIORITY"), prio[l]);
		char want[8];
		snprintf(want, sizeof(want), "m%d", l);
		assert_string_equal(journal_field("MESSAGE"), want);
	}
	log_configure(LOG_LEVEL_WARNING, LOG_FORMAT_TEXT);
	log_event(LOG_LEVEL_INFO, &some_fields, "filtered");
	log_debug("filtered");
	assert_int_equal(J.calls, 4);
	/* Empty fields are left out rather than sent empty. */
	log_event(LOG_LEVEL_ERROR, &(struct log_fields){.folder = "", .file = "x"}, "e");
	assert_null(journal_field("RDD_FOLDER"));
	assert_string_equal(journal_field("RDD_FILE"), "x");
	char *out = stderr_collect();
	assert_string_equal(out, "");
	free(out);
}

/* A journal that refuses the entry (no journald, a full socket): the line goes to stderr,
 * with the priority prefix, as without native logging. */
static void test_journal_refused_falls_back(void **state)
{
	(void)state;
	stderr_to_file(NULL);
	journal_reset(-EAGAIN);
	log_configure(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	log_event(LOG_LEVEL_ERROR, &some_fields, "newsletter: '%s' failed", "a\nb.csv");
	log_info("plain");
	assert_int_equal(J.calls, 2);
	char *out = stderr_collect();
	assert_string_equal(out, "<3>newsletter: 'a\\nb.csv' failed\n<6>plain\n");
	free(out);
}

/* The message ids: 128 bits in lowercase hex, each kind its own. */
static void test_message_ids(void **state)
{
	static const char *const ids[] = {
		LOG_ID_STARTED,        LOG_ID_STOPPING,      LOG_ID_STOPPED,
		LOG_ID_RELOADING,      LOG_ID_RELOADED,      LOG_ID_RELOAD_REJECTED,
		LOG_ID_RELOAD_FAILED,  LOG_ID_FILE_DONE,     LOG_ID_FILE_FAILED,
		LOG_ID_UPLOAD_RETRY,   LOG_ID_CLAIM_FAILED,  LOG_ID_MOVE_FAILED,
		LOG_ID_DIR_UNUSABLE,   LOG_ID_API_PAUSED,    LOG_ID_LEDGER_FAILED,
	};
	size_t n = sizeof(ids) / sizeof(ids[0]);

	(void)state;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(strlen(ids[i]), 32);
		assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(ids[i], ids[k]);
	}
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
		T(test_text_format),
		T(test_level_filtering),
		T(test_one_line_per_call),
		T(test_long_message),
		T(test_json_format),
		T(test_journald_prefix),
		T(test_journald_json),
		T(test_journald_mismatch),
		T(test_journald_reinit),
		T(test_stream_reset),
		T(test_each_line_flushed),
		T(test_event_text_like_msg),
		T(test_event_json_keys),
		T(test_journal_entry_fields),
		T(test_journal_plain_and_levels),
		T(test_journal_refused_falls_back),
		T(test_message_ids),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
