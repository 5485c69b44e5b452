/* Text, one helper each: UTF-8 well-formedness (RFC 3629), the escaped form every name takes in
 * logs, reports and messages, UTC times, counts with thousands separators, hex, and a string
 * into a JSON object. Pure (cJSON only). */
#ifndef RDD_TEXT_H
#define RDD_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the well-formed UTF-8 sequence at S (at most AVAIL bytes, AVAIL >= 1), or 0 when
 * it is not one: overlong forms, surrogates and code points above U+10FFFF are refused. */
size_t text_utf8_len(const unsigned char *s, size_t avail);
bool text_utf8_valid(const char *s);

/* Writes SRC to DST (size DSTSZ, always NUL-terminated) with control characters as \n, \t, \r or
 * \xNN, a backslash as \\, and bytes that are not valid UTF-8 as \xNN. Returns the length the
 * full escape needs, like snprintf; a cut never leaves half an escape. */
size_t text_escape(char *dst, size_t dstsz, const char *src);

/* SECONDS since the epoch as "2026-11-26T04:01:02Z", or with MS >= 0 (at most 999)
 * "2026-11-26T04:01:02.123Z"; "invalid-time" when it cannot be. */
#define TEXT_UTC_LEN 32
void text_format_utc(char buf[TEXT_UTC_LEN], int64_t seconds, int ms);

/* N with thousands separators ("17,377,790"), as messages give byte counts; BUF, which it
 * returns, holds the largest uint64_t so written. */
#define TEXT_COUNT_LEN 27
const char *text_format_count(char buf[TEXT_COUNT_LEN], uint64_t n);

/* N bytes of SRC as 2N lower-case hex digits, NUL-terminated (DST holds 2N + 1). */
void text_hex(char *dst, const unsigned char *src, size_t n);

/* Adds KEY: VALUE to the cJSON object O: valid UTF-8 as it is, anything else in the escaped
 * form (where a backslash is doubled, so the two cannot be confused). A void * so that this
 * header needs no cJSON. */
void text_json_add_string(void *o, const char *key, const char *value);
/* VALUE as a new cJSON string in the same form (a cJSON *; NULL when out of memory). */
void *text_json_string(const char *value);

#endif
