#include "text.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

size_t text_utf8_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (avail < n)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

bool text_utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s);

	while (len > 0) {
		size_t n = text_utf8_len(p, len);
		if (n == 0)
			return false;
		p += n;
		len -= n;
	}
	return true;
}

size_t text_escape(char *dst, size_t dstsz, const char *src)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t avail = strlen(src);
	size_t out = 0;

	while (*s) {
		char esc[8];
		size_t n = text_utf8_len(s, avail);
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

void text_format_utc(char buf[TEXT_UTC_LEN], int64_t seconds, int ms)
{
	time_t tt = (time_t)seconds;
	struct tm tm;
	size_t n;

	if (gmtime_r(&tt, &tm) == NULL ||
	    (n = strftime(buf, TEXT_UTC_LEN, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
		snprintf(buf, TEXT_UTC_LEN, "invalid-time");
		return;
	}
	if (ms > 999)
		ms = 999;
	if (ms >= 0)
		snprintf(buf + n, TEXT_UTC_LEN - n, ".%03dZ", ms);
	else
		snprintf(buf + n, TEXT_UTC_LEN - n, "Z");
}

const char *text_format_count(char buf[TEXT_COUNT_LEN], uint64_t n)
{
	char digits[21];
	int len = snprintf(digits, sizeof(digits), "%" PRIu64, n);
	size_t o = 0;

	for (int i = 0; i < len; i++) {
		if (i > 0 && (len - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = '\0';
	return buf;
}

void text_hex(char *dst, const unsigned char *src, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = digits[src[i] >> 4];
		dst[2 * i + 1] = digits[src[i] & 0x0f];
	}
	dst[2 * n] = '\0';
}

void *text_json_string(const char *value)
{
	char buf[2048];

	if (text_utf8_valid(value))
		return cJSON_CreateString(value);
	text_escape(buf, sizeof(buf), value);
	return cJSON_CreateString(buf);
}

void text_json_add_string(void *o, const char *key, const char *value)
{
	cJSON *s = text_json_string(value);

	if (s && !cJSON_AddItemToObject(o, key, s))
		cJSON_Delete(s);
}
