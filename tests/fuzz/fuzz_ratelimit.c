/* libFuzzer harness for the rate limiter: ratelimit_note_response() with header values as a
 * server (or a proxy) may send them, and ratelimit_take() after each.
 *
 * Input: 4 bytes of parameters, then text lines ('\n'-separated) taken three at a time as the
 * values of retry-after, ratelimit-remaining and ratelimit-reset of one response (at most 8
 * responses; a missing line is an absent header):
 *   byte 0   bits 0-2: these headers are absent (NULL) in every response (bit 0 retry-after,
 *            bit 1 remaining, bit 2 reset); bits 3-4: where the clock starts (0, 1 s, a year of
 *            uptime, or 10 s before the uint64 clock wraps)
 *   byte 1-2 requests_per_second * 64 (little endian), at most 1000; 0xffff is +inf and 0xfffe
 *            NaN, which ratelimit_init() must treat as "no ceiling"
 *   byte 3   milliseconds / 10 between two responses
 *
 * What is checked: every header value is ignored or obeyed exactly as ratelimit.h says
 * (compared with a small reference parser of "12" / "1.5"), no wait is longer than one hour
 * (ratelimit.c's RATELIMIT_MAX_BLOCK_MS) or than one token's refill at the configured rate, the
 * bucket stays within [0, burst], and a caller that waits what it is told is given a token by
 * its third call. */
#include "ratelimit.h"

#include "fuzz.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define MAX_BLOCK_MS 3600000u /* ratelimit.c's RATELIMIT_MAX_BLOCK_MS */
#define MAX_ROUNDS 8

enum ref { REF_IGNORED, REF_VALID, REF_UNSURE };

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The grammar ratelimit.h documents for a delay in seconds: optional blanks, digits, optionally
 * '.' and digits, optional blanks; sub-millisecond remainders round up, one hour at most. Very
 * long numbers (where "beyond uint64" starts) are left undecided. */
static enum ref ref_parse_ms(const char *s, uint64_t *ret_ms)
{
	uint64_t sec = 0, ms = 0;
	size_t digits = 0, frac = 0;
	bool round_up = false;

	while (blank(*s))
		s++;
	for (; *s >= '0' && *s <= '9'; s++, digits++)
		if (digits < 18)
			sec = sec * 10 + (uint64_t)(*s - '0');
	if (digits == 0)
		return REF_IGNORED;
	if (*s == '.') {
		s++;
		for (; *s >= '0' && *s <= '9'; s++, frac++) {
			if (frac < 3)
				ms += (uint64_t)(*s - '0') * (frac == 0 ? 100 : frac == 1 ? 10 : 1);
			else if (*s != '0')
				round_up = true;
		}
		if (frac == 0)
			return REF_IGNORED;
	}
	while (blank(*s))
		s++;
	if (*s)
		return REF_IGNORED;
	if (digits > 18)
		return REF_UNSURE;
	if (sec >= MAX_BLOCK_MS / 1000) {
		*ret_ms = MAX_BLOCK_MS;
		return REF_VALID;
	}
	ms += sec * 1000 + (round_up ? 1 : 0);
	*ret_ms = ms > MAX_BLOCK_MS ? MAX_BLOCK_MS : ms;
	return REF_VALID;
}

static bool ref_is_zero(const char *s)
{
	size_t zeros = 0;

	while (blank(*s))
		s++;
	for (; *s == '0'; s++)
		zeros++;
	while (blank(*s))
		s++;
	return zeros > 0 && !*s;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

struct sim {
	struct ratelimit rl;
	bool limited;        /* a finite, positive rate */
	uint64_t refill_ms;  /* one token's refill time, rounded up */
	uint64_t last_note;  /* when the latest response was noted */
};

static void check_state(const struct sim *s)
{
	FUZZ_CHECK(!isnan(s->rl.tokens));
	if (s->limited)
		FUZZ_CHECK(s->rl.tokens >= 0 && s->rl.tokens <= s->rl.burst);
	/* a header blocks for at most an hour from the response that carried it */
	FUZZ_CHECK(s->rl.blocked_until_ms <= add_sat(s->last_note, MAX_BLOCK_MS));
}

static uint64_t take(struct sim *s, uint64_t now)
{
	bool blocked = now < s->rl.blocked_until_ms;
	uint64_t w = ratelimit_take(&s->rl, now);

	if (blocked) {
		FUZZ_CHECK(w == s->rl.blocked_until_ms - now);
		FUZZ_CHECK(w <= MAX_BLOCK_MS);
	} else if (!s->limited) {
		FUZZ_CHECK(w == 0);
	} else {
		FUZZ_CHECK(w <= s->refill_ms + 1);
	}
	check_state(s);
	return w;
}

/* Splits DATA into lines: *POS moves past the next one; NULL when there is none. */
static char *next_line(const uint8_t *data, size_t size, size_t *pos)
{
	const uint8_t *nl;
	size_t len;
	char *s;

	if (*pos >= size)
		return NULL;
	nl = memchr(data + *pos, '\n', size - *pos);
	len = nl ? (size_t)(nl - (data + *pos)) : size - *pos;
	s = fuzz_strndup(data + *pos, len);
	*pos += len + 1;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t starts[4] = {0, 1000, UINT64_C(366) * 24 * 3600 * 1000,
					   UINT64_MAX - 10000};
	struct sim s = {0};
	unsigned absent, raw;
	uint64_t now, step;
	size_t pos = 4;
	double rate;

	if (size < 4)
		return 0;
	absent = data[0] & 7u;
	now = starts[(data[0] >> 3) & 3u];
	raw = (unsigned)data[1] | (unsigned)data[2] << 8;
	rate = raw == 0xffff ? INFINITY : raw == 0xfffe ? NAN : fmin(raw / 64.0, 1000.0);
	step = (uint64_t)data[3] * 10;

	ratelimit_init(&s.rl, rate, 1, now);
	s.limited = rate > 0 && isfinite(rate);
	/* No ratelimit-limit is fed here: the rate spent is the assumed limit under the ceiling. */
	if (s.limited)
		rate = fmin(rate, RATELIMIT_ASSUMED_LIMIT);
	s.refill_ms = s.limited ? (uint64_t)ceil(1000.0 / rate) : 0;
	s.last_note = now;
	check_state(&s);
	FUZZ_CHECK(s.rl.blocked_until_ms == 0);
	if (s.limited)
		FUZZ_CHECK(s.rl.burst == (rate > 1 ? rate : 1) && s.rl.tokens == s.rl.burst);
	else
		FUZZ_CHECK(s.rl.rate == 0);

	for (unsigned round = 0; round < MAX_ROUNDS && pos < size; round++) {
		char *v[3];
		uint64_t before = s.rl.blocked_until_ms, expect = before, ms = 0, w = 0, t;
		bool sure = true, zero;

		for (unsigned k = 0; k < 3; k++) {
			v[k] = next_line(data, size, &pos);
			if (v[k] && (absent & (1u << k))) {
				free(v[k]);
				v[k] = NULL;
			}
		}

		ratelimit_note_response(&s.rl, now,
					&(struct ratelimit_headers){.retry_after = v[0],
								    .remaining = v[1],
								    .reset = v[2]});
		s.last_note = now;
		check_state(&s);

		/* What the headers say, by the reference: the longest of the waits wins. */
		if (v[0]) {
			enum ref r = ref_parse_ms(v[0], &ms);

			if (r == REF_VALID && add_sat(now, ms) > expect)
				expect = add_sat(now, ms);
			if (r == REF_UNSURE)
				sure = false;
		}
		zero = v[1] && ref_is_zero(v[1]);
		if (zero && v[2]) {
			enum ref r = ref_parse_ms(v[2], &ms);

			if (r == REF_VALID && add_sat(now, ms) > expect)
				expect = add_sat(now, ms);
			if (r == REF_UNSURE)
				sure = false;
		}
		if (sure)
			FUZZ_CHECK(s.rl.blocked_until_ms == expect);
		else
			FUZZ_CHECK(s.rl.blocked_until_ms >= before);
		/* "remaining: 0" empties the bucket: no token before time has passed */
		if (zero && s.limited)
			FUZZ_CHECK(s.rl.tokens == 0 && ratelimit_take(&s.rl, now) > 0);

		/* A caller that waits as told: blocked, then at most one refill, then a token
		 * (ratelimit_take aims past the threshold so that the promised time is enough). */
		t = now;
		for (unsigned i = 0; i < 3; i++) {
			w = take(&s, t);
			if (w == 0 || t > UINT64_MAX - w)
				break;
			t += w;
		}
		FUZZ_CHECK(w == 0 || t > UINT64_MAX - w);
		now = add_sat(t, step);

		for (unsigned k = 0; k < 3; k++)
			free(v[k]);
	}
	return 0;
}
