/* Levelled logging to stderr: text or JSON lines, journald priority prefixes. */
#ifndef RDD_LOG_H
#define RDD_LOG_H

#include <stddef.h>
#include <stdio.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Detects whether stderr is connected to the journal (JOURNAL_STREAM). */
void log_init(void);
void log_configure(enum log_level level, enum log_format format);
enum log_level log_get_level(void);

/* One event, one line. Control characters and invalid UTF-8 in the formatted message are
 * escaped, so file names cannot forge log lines. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Writes SRC to DST (size DSTSZ, always NUL-terminated) with control characters as \n, \t, \r or
 * \xNN, a backslash as \\, and bytes that are not valid UTF-8 as \xNN. Returns the length the
 * full escape needs, like snprintf. */
size_t log_escape(char *dst, size_t dstsz, const char *src);

/* Where output goes; tests redirect it. NULL restores stderr. */
void log_set_stream(FILE *stream);

#endif
