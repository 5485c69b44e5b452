/* Levelled logging. One event is one line on stderr, with our timestamp and level; or, when
 * stderr is the journal, one native journal entry with the event's fields (the journal adds
 * the timestamp), and failing that a line with the priority as a "<N>" prefix (sd-daemon(3)). */
#include "log.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
/* The entry is the event's, not log.c's: no CODE_FILE/CODE_LINE/CODE_FUNC of ours. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "text.h"

#define LOG_LINE_MAX 4096

static enum log_level log_level = LOG_LEVEL_INFO;
static enum log_format log_format = LOG_FORMAT_TEXT;
static bool log_to_journal;
static FILE *log_stream;

/* sd-daemon(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int journal_priority[] = {3, 4, 6, 7};
static const char *const level_names[] = {"error", "warning", "info", "debug"};

/* JOURNAL_STREAM holds "device:inode" of the journal's socket; it is inherited by children
 * whose stderr may have been redirected, so it counts only when it matches our stderr. */
void log_init(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	log_to_journal = false;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return;
	if (fstat(STDERR_FILENO, &st) != 0)
		return;
	log_to_journal = (unsigned long long)st.st_dev == dev &&
			 (unsigned long long)st.st_ino == ino;
}

void log_configure(enum log_level level, enum log_format format)
{
	log_level = level;
	log_format = format;
}

enum log_level log_get_level(void)
{
	return log_level;
}

void log_set_stream(FILE *stream)
{
	log_stream = stream;
}

static void format_timestamp(char buf[40])
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 40 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void json_add_field(cJSON *obj, const char *key, const char *value)
{
	char buf[1024];

	if (!value)
		return;
	/* A name that is not UTF-8 would make the line invalid JSON: the escaped form, as the
	 * message has it. */
	if (!text_utf8_valid(value)) {
		text_escape(buf, sizeof(buf), value);
		value = buf;
	}
	cJSON_AddStringToObject(obj, key, value);
}

static void write_json_line(FILE *out, enum log_level level, const struct log_fields *f,
			    const char *msg)
{
	char ts[40];
	cJSON *obj = cJSON_CreateObject();
	char *line;

	if (!obj)
		return;
	format_timestamp(ts);
	cJSON_AddStringToObject(obj, "ts", ts);
	cJSON_AddStringToObject(obj, "level", level_names[level]);
	cJSON_AddStringToObject(obj, "msg", msg);
	if (f) {
		json_add_field(obj, "message_id", f->message_id);
		json_add_field(obj, "folder", f->folder);
		json_add_field(obj, "file", f->file);
		json_add_field(obj, "import_id", f->import_id);
		json_add_field(obj, "outcome", f->outcome);
	}
	line = cJSON_PrintUnformatted(obj);
	if (line) {
		if (log_to_journal)
			fprintf(out, "<%d>%s\n", journal_priority[level], line);
		else
			fprintf(out, "%s\n", line);
		cJSON_free(line);
	}
	cJSON_Delete(obj);
}

/* ---- the journal ----------------------------------------------------------------------- */

static int log_sd_journal_sink(const struct iovec *iov, int n)
{
	return sd_journal_sendv(iov, n);
}

static log_journal_sink journal_sink = log_sd_journal_sink;

void log_set_journal_sink(log_journal_sink sink)
{
	journal_sink = sink ? sink : log_sd_journal_sink;
}

struct journal_field {
	char buf[1024];
};

/* "NAME=value" into IOV; the value's bytes as they are (the journal is binary-safe; a value
 * too long for BUF, which no name or id is, is cut). */
static void journal_field(struct iovec *iov, struct journal_field *jf, const char *name,
			  const char *value)
{
	int n = snprintf(jf->buf, sizeof(jf->buf), "%s=%s", name, value);

	iov->iov_base = jf->buf;
	iov->iov_len = n < 0 ? 0 : (size_t)n < sizeof(jf->buf) ? (size_t)n : sizeof(jf->buf) - 1;
}

/* ENTRY is "MESSAGE=<escaped message>". The journal's own fields (_PID, _COMM, the unit,
 * the time) are added by journald. */
static int journal_send(enum log_level level, const struct log_fields *f, const char *entry)
{
	static const char *const priorities[] = {"PRIORITY=3", "PRIORITY=4", "PRIORITY=6",
						 "PRIORITY=7"};
	const struct {
		const char *name, *value;
	} extra[] = {
		{"MESSAGE_ID", f ? f->message_id : NULL}, {"RDD_FOLDER", f ? f->folder : NULL},
		{"RDD_FILE", f ? f->file : NULL},         {"RDD_IMPORT_ID", f ? f->import_id : NULL},
		{"RDD_OUTCOME", f ? f->outcome : NULL},
	};
	struct journal_field fields[sizeof(extra) / sizeof(extra[0])];
	struct iovec iov[3 + sizeof(extra) / sizeof(extra[0])];
	int n = 0;

	iov[n++] = (struct iovec){(void *)entry, strlen(entry)};
	iov[n++] = (struct iovec){(void *)priorities[level], strlen(priorities[level])};
	iov[n++] = (struct iovec){(void *)"SYSLOG_IDENTIFIER=resend-dropd",
				  strlen("SYSLOG_IDENTIFIER=resend-dropd")};
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		if (extra[i].value && extra[i].value[0])
			journal_field(&iov[n++], &fields[i], extra[i].name, extra[i].value);
	}
	return journal_sink(iov, n);
}

static void log_vevent(enum log_level level, const struct log_fields *f, const char *fmt,
		       va_list ap)
{
	char raw[LOG_LINE_MAX], entry[LOG_LINE_MAX + 8] = "MESSAGE=";
	char *msg = entry + strlen("MESSAGE=");
	FILE *out = log_stream ? log_stream : stderr;

	if (level > log_level)
		return;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	text_escape(msg, LOG_LINE_MAX, raw);

	/* Native entries carry the fields; the plain message is MESSAGE whatever log.format
	 * says (the journal is structured already). Should the journal refuse it, the line goes
	 * to stderr as before, which reaches the journal too, without the fields. */
	if (log_to_journal && !log_stream && journal_send(level, f, entry) >= 0)
		return;
	if (log_format == LOG_FORMAT_JSON) {
		write_json_line(out, level, f, msg);
	} else if (log_to_journal) {
		fprintf(out, "<%d>%s\n", journal_priority[level], msg);
	} else {
		char ts[40];
		format_timestamp(ts);
		fprintf(out, "%s %s: %s\n", ts, level_names[level], msg);
	}
	fflush(out);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vevent(level, NULL, fmt, ap);
	va_end(ap);
}

void log_event(enum log_level level, const struct log_fields *fields, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vevent(level, fields, fmt, ap);
	va_end(ap);
}
