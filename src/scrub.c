/* Secrets out of outside text. One pass from left to right: at each byte the rules are tried
 * in order (an earlier marker, the configured key, a trailing start of it, a Resend-shaped key,
 * "Bearer", "Authorization"), and a match is replaced where it stands, so that the text never
 * needs a second buffer. The patterns are deliberately loose on what a credential is and strict
 * on where one starts: redacting a word too many in an error message costs nothing, a key
 * left in a log line cannot be taken back. */
#include "scrub.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define SCRUB_MARKER_LEN (sizeof(SCRUB_MARKER) - 1)
/* What is left of the configured key at a cut end is redacted from this many bytes on: "re_"
 * alone says nothing, and shorter ends would match ordinary words. */
#define SCRUB_KEY_TAIL_MIN 4
/* Resend keys are "re_" and 32 or so random characters; "re_" + 8 catches a key cut short by
 * a proxy while leaving identifiers like "re_try" alone. */
#define SCRUB_RESEND_KEY_MIN 8
/* A capitalised or lower-case word shorter than this after "Bearer" is prose, not a token. */
#define SCRUB_WORD_MAX 16

struct scrub {
	char *text;
	size_t size, len;
	bool cut; /* the text ends where it was cut, not where it ended */
	const char *key;
	size_t key_len;
};

static bool scrub_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool scrub_is_alnum(char c)
{
	return scrub_is_alpha(c) || (c >= '0' && c <= '9');
}

/* The characters of a Resend key. */
static bool scrub_is_key_char(char c)
{
	return scrub_is_alnum(c) || c == '_' || c == '-';
}

static bool scrub_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Where a credential ends: white space or a control character, a quote, a separator (also
 * a query string's '&'), a bracket, a backslash (an escape). */
static bool scrub_ends_token(char c)
{
	return (unsigned char)c <= 0x20 || c == 0x7f || strchr("\"'`,;&()<>[]{}\\", c) != NULL;
}

/* A key starts at AT only where no key character is glued to its left. */
static bool scrub_key_start(const struct scrub *s, size_t at)
{
	return at == 0 || !scrub_is_key_char(s->text[at - 1]);
}

/* KEYWORD (lower-case) at AT, case-insensitive, as a word of its own on the left. */
static bool scrub_keyword(const struct scrub *s, size_t at, const char *keyword)
{
	size_t n = strlen(keyword);

	return s->len - at >= n && strncasecmp(s->text + at, keyword, n) == 0 &&
	       (at == 0 || !scrub_is_alnum(s->text[at - 1]));
}

static size_t scrub_token_len(const struct scrub *s, size_t at)
{
	size_t n = 0;

	while (at + n < s->len && !scrub_ends_token(s->text[at + n]))
		n++;
	return n;
}

/* TEXT[AT, AT + N) (N >= 1) becomes the marker. The rest moves up or down; what no longer fits
 * is cut, and then the text ends at a cut. Returns where scanning goes on: after the marker. */
static size_t scrub_replace(struct scrub *s, size_t at, size_t n)
{
	size_t room = s->size - 1 - at; /* AT < LEN <= SIZE - 1 */
	size_t m = SCRUB_MARKER_LEN < room ? SCRUB_MARKER_LEN : room;
	size_t tail = s->len - at - n;

	if (tail > room - m) {
		tail = room - m;
		s->cut = true;
	}
	memmove(s->text + at + m, s->text + at + n, tail);
	memcpy(s->text + at, SCRUB_MARKER, m);
	s->len = at + m + tail;
	s->text[s->len] = '\0';
	return at + m;
}

/* A credential, as opposed to a word of prose ("Bearer token.") or a placeholder ("Bearer
 * YOUR_API_KEY", as Resend's own 401 message has it). A token that runs into a cut end is one
 * whatever it looks like: only its start is known. */
static bool scrub_is_credential(const struct scrub *s, size_t at, size_t n)
{
	const char *t = s->text + at;
	size_t core = n;
	bool word, placeholder = true;

	if (s->cut && at + n == s->len)
		return true;
	while (core > 0 && strchr(".:!?", t[core - 1]))
		core--;
	if (core == 0)
		return false;
	word = core < SCRUB_WORD_MAX && scrub_is_alpha(t[0]);
	for (size_t i = 0; i < core; i++) {
		if (i > 0 && !(t[i] >= 'a' && t[i] <= 'z'))
			word = false;
		if (!((t[i] >= 'A' && t[i] <= 'Z') || t[i] == '_'))
			placeholder = false;
	}
	return !word && !placeholder;
}

/* The credential at AT, if there is one, becomes the marker. Where scanning goes on: after the
 * marker, or at AT, so that the configured key is still looked for in what stays. */
static size_t scrub_credential(struct scrub *s, size_t at)
{
	size_t n = scrub_token_len(s, at);

	if (n == 0 || !scrub_is_credential(s, at, n))
		return at;
	return scrub_replace(s, at, n);
}

/* "re_" at AT, at a key start. */
static size_t scrub_resend_key(struct scrub *s, size_t at)
{
	size_t n = 3;
	bool strong = false;

	for (; at + n < s->len && scrub_is_key_char(s->text[at + n]); n++) {
		char c = s->text[at + n];
		strong = strong || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
	}
	if ((n - 3 >= SCRUB_RESEND_KEY_MIN && strong) || (s->cut && at + n == s->len))
		return scrub_replace(s, at, n);
	return at;
}

/* "Bearer" at AT: the token after it. */
static size_t scrub_bearer(struct scrub *s, size_t at)
{
	size_t j = at + strlen("bearer");

	if (j >= s->len || !scrub_is_blank(s->text[j]))
		return at;
	while (j < s->len && scrub_is_blank(s->text[j]))
		j++;
	return scrub_credential(s, j);
}

static bool scrub_is_separator(char c)
{
	return scrub_is_blank(c) || c == '"' || c == '\'';
}

/* "Authorization" at AT, as a header line, a JSON member or a query parameter echoes it:
 * "Authorization: Basic xyz", "\"authorization\": \"xyz\"", "authorization=xyz". */
static size_t scrub_authorization(struct scrub *s, size_t at)
{
	size_t j = at + strlen("authorization"), w, k;

	while (j < s->len && scrub_is_separator(s->text[j]))
		j++;
	if (j >= s->len || (s->text[j] != ':' && s->text[j] != '='))
		return at;
	j++;
	while (j < s->len && scrub_is_separator(s->text[j]))
		j++;
	/* A scheme word first ("Bearer", "Basic") when a token follows it. */
	for (w = j; w < s->len && scrub_is_alpha(s->text[w]); w++)
		;
	for (k = w; k < s->len && scrub_is_blank(s->text[k]); k++)
		;
	if (w > j && k > w && k < s->len && !scrub_ends_token(s->text[k]))
		j = k;
	return scrub_credential(s, j);
}

/* The rules at AT, in order; where scanning goes on (AT: nothing here). */
static size_t scrub_at(struct scrub *s, size_t at)
{
	const char *t = s->text + at;
	size_t rest = s->len - at;

	/* A marker is left as it is: scrubbing again changes nothing. */
	if (rest >= SCRUB_MARKER_LEN && memcmp(t, SCRUB_MARKER, SCRUB_MARKER_LEN) == 0)
		return at + SCRUB_MARKER_LEN;
	if (s->key && rest >= s->key_len && memcmp(t, s->key, s->key_len) == 0)
		return scrub_replace(s, at, s->key_len);
	if (s->key && rest < s->key_len && rest >= SCRUB_KEY_TAIL_MIN && scrub_key_start(s, at) &&
	    memcmp(t, s->key, rest) == 0)
		return scrub_replace(s, at, rest);
	if (rest >= 3 && memcmp(t, "re_", 3) == 0 && scrub_key_start(s, at))
		return scrub_resend_key(s, at);
	if (scrub_keyword(s, at, "bearer"))
		return scrub_bearer(s, at);
	if (scrub_keyword(s, at, "authorization"))
		return scrub_authorization(s, at);
	return at;
}

void scrub_secrets(char *text, size_t size, const char *api_key)
{
	struct scrub s = {.text = text, .size = size};
	size_t at = 0;

	if (!text || size == 0)
		return;
	s.len = strnlen(text, size);
	if (s.len == size) /* not terminated: it is now, where it was cut */
		text[--s.len] = '\0';
	s.cut = s.len == size - 1;
	if (api_key && *api_key) {
		s.key = api_key;
		s.key_len = strlen(api_key);
	}
	while (at < s.len) {
		size_t next = scrub_at(&s, at);

		at = next > at ? next : at + 1;
	}
}
