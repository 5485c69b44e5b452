/* Levelled logging. One event is one line on stderr; under systemd the journal adds the
 * timestamp and takes the priority from a "<N>" prefix (sd-daemon(3)), elsewhere we add both. */
#include "log.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

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

size_t log_escape(char *dst, size_t dstsz, const char *src)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t avail = strlen(src);
	size_t out = 0;

	while (*s) {
		char esc[8];
		size_t n = utf8_sequence_len(s, avail);
		const char *piece;
		size_t plen;

		if (n == 1 && (*s < 0x20 || *s == 0x7f || *s == '\\')) {
			switch (*s) {
			case '\n': piece = "\\n"; break;
			case '\r': piece = "\\r"; break;
			case '\t': piece = "\\t"; break;
			case '\\': piece = "\\\\"; break;
			default:
				snprintf(esc, sizeof(esc), "\\x%02x", *s);
				piece = esc;
			}
			plen = strlen(piece);
			n = 1;
		} else if (n == 0) {
			snprintf(esc, sizeof(esc), "\\x%02x", *s);
			piece = esc;
			plen = 4;
			n = 1;
		} else {
			piece = (const char *)s;
			plen = n;
		}
		if (out + plen < dstsz)
			memcpy(dst + out, piece, plen);
		else if (out < dstsz)
			dstsz = out + 1; /* stop writing, keep counting; no half escapes */
		out += plen;
		s += n;
		avail -= n;
	}
	if (dstsz > 0)
		dst[out < dstsz ? out : dstsz - 1] = '\0';
	return out;
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

static void write_json_line(FILE *out, enum log_level level, const char *msg)
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

void log_msg(enum log_level level, const char *fmt, ...)
{
	char raw[LOG_LINE_MAX], msg[LOG_LINE_MAX];
	FILE *out = log_stream ? log_stream : stderr;
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	log_escape(msg, sizeof(msg), raw);

	if (log_format == LOG_FORMAT_JSON) {
		write_json_line(out, level, msg);
	} else if (log_to_journal) {
		fprintf(out, "<%d>%s\n", journal_priority[level], msg);
	} else {
		char ts[40];
		format_timestamp(ts);
		fprintf(out, "%s %s: %s\n", ts, level_names[level], msg);
	}
	fflush(out);
}
