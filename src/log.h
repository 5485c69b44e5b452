/* Levelled logging: text or JSON lines on stderr, or, when stderr is the journal, native journal
 * entries with structured fields. */
#ifndef RDD_LOG_H
#define RDD_LOG_H

#include <stddef.h>
#include <stdio.h>
#include <sys/uio.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Detects whether stderr is connected to the journal (JOURNAL_STREAM): if so, every line goes
 * to the journal with sd_journal_sendv (falling back to a "<N>" prefixed line on stderr when
 * that fails). */
void log_init(void);
void log_configure(enum log_level level, enum log_format format);
enum log_level log_get_level(void);

/* One event, one line. Control characters and invalid UTF-8 in the formatted message are
 * escaped, so file names cannot forge log lines. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The kinds of event an operator may want to find: journalctl MESSAGE_ID=... Fixed for good;
 * a new kind gets a new id (systemd-id128 new). */
#define LOG_ID_STARTED "bc985e16ce9844609f3ce3a7a00760eb"
#define LOG_ID_STOPPING "fa3e128c28f74be68508783650e121f2"
#define LOG_ID_STOPPED "3ed3f7214fcf452d8d2aa92f68e19635"
#define LOG_ID_RELOADING "0df3cc0cf3494d568d15717c6801b42c"
#define LOG_ID_RELOADED "825b73ca429f46a78958bcdd4d55147f"
#define LOG_ID_RELOAD_REJECTED "24d1a683dcf64cb9a67285798526a6c4"
#define LOG_ID_RELOAD_FAILED "19494d42c5614c159c19c688bda7c8c6"
#define LOG_ID_FILE_DONE "9a36265ac5ee41e386d0592e41727da5"
#define LOG_ID_FILE_FAILED "69378dbdbbdc48eaaba509616a54cb5d"
#define LOG_ID_UPLOAD_RETRY "cb3db6c6dbde454c8b83ec219c2584da"
#define LOG_ID_CLAIM_FAILED "9f84a0bf769a4e6a99694a149c76a705"
#define LOG_ID_MOVE_FAILED "c45600196cad4e4ab0b1d517a77f549d"
#define LOG_ID_DIR_UNUSABLE "16f29512121c49d68a075f66310a814e"
#define LOG_ID_API_PAUSED "4abcb436d98b4625b9cdf0a4bd7b9897"
#define LOG_ID_LEDGER_FAILED "261065674df043c49fdfe9f5ee13e8f7"
#define LOG_ID_RATE_LIMITED "e6331f9322a74055904e1d912aa7b232"
#define LOG_ID_FOLDER_UNAVAILABLE "37c9fb008e474ce08d198e3e38f721fc"
#define LOG_ID_FOLDER_AVAILABLE "0269fcc2a75847b4a8ee35ada29a6a5b"

/* What an event is about. Every member may be NULL. In the journal each becomes a field
 * (MESSAGE_ID, RDD_FOLDER, RDD_FILE, RDD_IMPORT_ID, RDD_OUTCOME) holding the bytes as they
 * are; in JSON lines a key (message_id, folder, file, import_id, outcome); text lines do not
 * show them (the message says it all). */
struct log_fields {
	const char *message_id, *folder, *file, *import_id, *outcome;
};

/* log_msg with fields: the line (or the journal's MESSAGE) is exactly log_msg's. */
void log_event(enum log_level level, const struct log_fields *fields, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Where output goes; tests redirect it. NULL restores stderr. */
void log_set_stream(FILE *stream);

/* What takes a journal entry (sd_journal_sendv's contract: 0 or a negative errno); tests
 * replace it. NULL restores sd_journal_sendv. */
typedef int (*log_journal_sink)(const struct iovec *iov, int n);
void log_set_journal_sink(log_journal_sink sink);

#endif
