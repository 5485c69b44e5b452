/* Client-side request ceiling: a token bucket with continuous refill, tightened by the server's
 * rate-limit headers. The caller supplies a monotonic clock in milliseconds. */
#include "ratelimit.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>

/* The most one header may hold uploads back. A proxy or a server bug answering
 * "retry-after: 99999999" (or a ratelimit-reset sent as an epoch timestamp instead of a delta)
 * must not wedge the daemon for years; longer real waits (quota) are the retry policy's
 * business, and every later response brings fresh headers anyway. */
#define RATELIMIT_MAX_BLOCK_MS (3600u * 1000u)

/* Waits computed from the bucket are capped too, only to keep the double -> integer conversion
 * defined for absurdly small rates (a year is "never" for a daemon that re-reads its config). */
#define RATELIMIT_MAX_WAIT_MS (366.0 * 24 * 3600 * 1000)

/* Floating-point refill can land a hair under a whole token at exactly the promised time;
 * without this slack the caller would be told to wait one more millisecond. */
#define RATELIMIT_EPSILON 1e-9

static bool ratelimit_unlimited(const struct ratelimit *rl)
{
	return !(rl->rate > 0) || isinf(rl->rate);
}

/* The rate the limits allow: the share of the announced limit (or of the assumed one, when
 * there is a ceiling to assume it under), under the ceiling. 0: unlimited. */
static double ratelimit_target(const struct ratelimit *rl)
{
	double rate;

	if (rl->announced > 0)
		rate = rl->announced * rl->share;
	else if (rl->ceiling > 0)
		rate = RATELIMIT_ASSUMED_LIMIT * rl->share;
	else
		return 0;
	if (rl->ceiling > 0 && rate > rl->ceiling)
		rate = rl->ceiling;
	return rate;
}

/* Takes the rate the limits allow now; the bucket keeps its tokens, within the new size. */
static void ratelimit_resize(struct ratelimit *rl)
{
	rl->rate = ratelimit_target(rl);
	rl->burst = rl->rate > 1 ? rl->rate : 1;
	if (rl->tokens > rl->burst)
		rl->tokens = rl->burst;
}

void ratelimit_init(struct ratelimit *rl, double ceiling, double share, uint64_t now_ms)
{
	/* NaN, zero, negative and infinite ceilings all mean "no client-side ceiling". */
	rl->ceiling = (ceiling > 0 && isfinite(ceiling)) ? ceiling : 0;
	rl->share = (share > 0 && share <= 1) ? share : 1;
	rl->announced = 0;
	rl->tokens = 1e300;
	ratelimit_resize(rl);
	rl->last_ms = now_ms;
	rl->blocked_until_ms = 0;
	rl->refusals = 0;
	rl->slot_n = rl->slot_i = 0;
	rl->clock_offset_ms = 0;
	rl->slot_used = -1;
}

void ratelimit_set_turns(struct ratelimit *rl, unsigned n, unsigned i, int64_t offset_ms)
{
	rl->slot_n = n > 1 && i < n ? n : 0;
	rl->slot_i = i;
	rl->clock_offset_ms = offset_ms;
}

/* 0 when a token may be taken now (this host's turn, just begun, not used yet; *RET_TURN is
 * it), else how long until its next turn begins. */
static uint64_t ratelimit_turn_wait(const struct ratelimit *rl, uint64_t now_ms, int64_t *ret_turn)
{
	double team = rl->rate * rl->slot_n, len, t, into;
	int64_t turn, next;

	*ret_turn = -1;
	if (rl->slot_n < 2 || !(team > 0) || isinf(team))
		return 0;
	len = 1000.0 * RATELIMIT_TURN_MARGIN / team;
	t = (double)now_ms + (double)rl->clock_offset_ms;
	turn = (int64_t)floor(t / len);
	into = t - (double)turn * len;
	if ((uint64_t)(turn % rl->slot_n + rl->slot_n) % rl->slot_n == rl->slot_i &&
	    into <= len * RATELIMIT_TURN_OPEN && turn != rl->slot_used) {
		*ret_turn = turn;
		return 0;
	}
	/* The next turn of this host's. */
	next = turn + 1;
	next += ((int64_t)rl->slot_i - next % (int64_t)rl->slot_n + 2 * (int64_t)rl->slot_n) %
		(int64_t)rl->slot_n;
	t = (double)next * len - t;
	return t < 1 ? 1 : (uint64_t)ceil(t);
}

void ratelimit_set_share(struct ratelimit *rl, double share)
{
	rl->share = (share > 0 && share <= 1) ? share : 1;
	ratelimit_resize(rl);
}

static void ratelimit_refill(struct ratelimit *rl, uint64_t now_ms)
{
	/* A clock that went backwards refills nothing rather than underflowing. */
	if (now_ms <= rl->last_ms)
		return;
	rl->tokens += (double)(now_ms - rl->last_ms) * rl->rate / 1000.0;
	if (rl->tokens > rl->burst)
		rl->tokens = rl->burst;
	rl->last_ms = now_ms;
}

uint64_t ratelimit_take(struct ratelimit *rl, uint64_t now_ms)
{
	double wait;
	uint64_t ms;

	/* The server's word applies even without a client-side ceiling: it is the server that
	 * would refuse the request. */
	if (now_ms < rl->blocked_until_ms)
		return rl->blocked_until_ms - now_ms;
	if (ratelimit_unlimited(rl))
		return 0;
	ratelimit_refill(rl, now_ms);
	int64_t turn;
	uint64_t turn_wait = ratelimit_turn_wait(rl, now_ms, &turn);

	if (turn_wait)
		return turn_wait;
	if (rl->tokens >= 1.0 - RATELIMIT_EPSILON) {
		rl->tokens -= 1.0;
		if (rl->tokens < 0)
			rl->tokens = 0;
		if (turn >= 0)
			rl->slot_used = turn;
		return 0;
	}
	/* Aim halfway into the slack: at the promised time the bucket is then past the threshold
	 * despite rounding in the refill, and an exact boundary (0.998 + 1 ms at 2/s) is not
	 * pushed a millisecond later by rounding here. */
	wait = (1.0 - RATELIMIT_EPSILON / 2 - rl->tokens) * 1000.0 / rl->rate;
	if (!(wait < RATELIMIT_MAX_WAIT_MS))
		wait = RATELIMIT_MAX_WAIT_MS;
	/* Rounded up: asking again a millisecond early would only earn another wait. */
	ms = (uint64_t)wait;
	if ((double)ms < wait)
		ms++;
	return ms < 1 ? 1 : ms;
}

/* Parses a delay in seconds, "12" or "1.5" (optional surrounding blanks), into milliseconds,
 * rounding a sub-millisecond remainder up and saturating at RATELIMIT_MAX_BLOCK_MS.
 * Anything else (sign, exponent, unit, HTTP-date, a number beyond uint64) is -EINVAL or
 * -ERANGE: such a header is ignored, not guessed at. */
static int ratelimit_parse_ms(const char *s, uint64_t *ret_ms)
{
	uint64_t sec = 0, ms = 0;
	bool round_up = false;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (sec > (UINT64_MAX - d) / 10)
			return -ERANGE;
		sec = sec * 10 + d;
	}
	if (*s == '.') {
		unsigned digits = 0;

		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		for (; *s >= '0' && *s <= '9'; s++, digits++) {
			if (digits < 3)
				ms = ms * 10 + (unsigned)(*s - '0');
			else if (*s != '0')
				round_up = true;
		}
		for (; digits < 3; digits++)
			ms *= 10;
	}
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s)
		return -EINVAL;
	/* Below the cap in whole seconds, sec * 1000 + 999 + 1 cannot exceed the cap either. */
	if (sec >= RATELIMIT_MAX_BLOCK_MS / 1000)
		*ret_ms = RATELIMIT_MAX_BLOCK_MS;
	else
		*ret_ms = sec * 1000 + ms + (round_up ? 1 : 0);
	return 0;
}

static void ratelimit_block(struct ratelimit *rl, uint64_t now_ms, uint64_t ms)
{
	uint64_t until = now_ms > UINT64_MAX - ms ? UINT64_MAX : now_ms + ms;

	/* Answers to concurrent requests arrive in any order: the longest wait wins rather than
	 * the last one read. */
	if (until > rl->blocked_until_ms)
		rl->blocked_until_ms = until;
}

/* True for a request count of exactly zero: digits (all '0') with optional surrounding blanks. */
static bool ratelimit_is_zero(const char *s)
{
	bool digit = false;

	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (*s != '0')
			return false;
		digit = true;
	}
	while (*s == ' ' || *s == '\t')
		s++;
	return digit && !*s;
}

/* A positive request count, "5" or "2.5" (blanks around allowed), at most 100,000; else 0. */
static double ratelimit_parse_limit(const char *s)
{
	double v = 0, scale = 1;
	unsigned digits = 0;

	if (!s)
		return 0;
	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s >= '0' && *s <= '9' && digits < 7; s++, digits++)
		v = v * 10 + (*s - '0');
	if (!digits)
		return 0;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return 0;
		for (; *s >= '0' && *s <= '9'; s++)
			v += (*s - '0') * (scale /= 10);
	}
	while (*s == ' ' || *s == '\t')
		s++;
	return *s || v > 100000 ? 0 : v;
}

/* The headers of any answer; REFUSED: it was a 429 of the rate limit. */
static void ratelimit_note(struct ratelimit *rl, uint64_t now_ms, const struct ratelimit_headers *h,
			   bool refused)
{
	const char *retry_after = h->retry_after, *remaining = h->remaining, *reset = h->reset;
	double limit = ratelimit_parse_limit(h->limit);
	uint64_t ms;

	if (limit > 0 && limit != rl->announced) {
		/* Tokens earned at the old rate are counted at it before the new one applies. */
		if (!ratelimit_unlimited(rl))
			ratelimit_refill(rl, now_ms);
		else
			rl->last_ms = now_ms;
		rl->announced = limit;
		ratelimit_resize(rl);
	}
	if (retry_after && ratelimit_parse_ms(retry_after, &ms) == 0)
		ratelimit_block(rl, now_ms, ms);

	/* Only a plain zero counts: "-1", "0.5" or "abc" say nothing reliable about the window.
	 * A refusal says the window is spent whatever the header says. */
	if (!refused && (!remaining || !ratelimit_is_zero(remaining)))
		return;
	/* The window is spent whatever our bucket believes: bring the bucket up to now first, so
	 * the time before this answer is not credited again later, then empty it. */
	if (!ratelimit_unlimited(rl)) {
		ratelimit_refill(rl, now_ms);
		rl->tokens = 0;
	}
	if (reset && ratelimit_parse_ms(reset, &ms) == 0)
		ratelimit_block(rl, now_ms, ms);
}

void ratelimit_note_response(struct ratelimit *rl, uint64_t now_ms,
			     const struct ratelimit_headers *h)
{
	rl->refusals = 0;
	ratelimit_note(rl, now_ms, h, false);
}

uint64_t ratelimit_note_refusal(struct ratelimit *rl, uint64_t now_ms,
				const struct ratelimit_headers *h)
{
	uint64_t ms;

	if (rl->refusals < 64) /* enough to reach the cap */
		rl->refusals++;
	ratelimit_note(rl, now_ms, h, true);
	if (rl->blocked_until_ms <= now_ms) {
		/* Nothing said when: wait anyway, longer each time in a row, so that a limit
		 * that names no time is not hammered. */
		ms = RATELIMIT_REFUSED_FIRST_MS;
		for (unsigned i = 1; i < rl->refusals && ms < RATELIMIT_REFUSED_MAX_MS; i++)
			ms *= 2;
		if (ms > RATELIMIT_REFUSED_MAX_MS)
			ms = RATELIMIT_REFUSED_MAX_MS;
		ratelimit_block(rl, now_ms, ms);
	}
	/* The wait ends with one token, not a bucket refilled during it: a burst at the edge of
	 * the server's window would only be refused again. */
	if (!ratelimit_unlimited(rl)) {
		uint64_t one = (uint64_t)(1000.0 / rl->rate);

		rl->tokens = 0;
		rl->last_ms = rl->blocked_until_ms > one ? rl->blocked_until_ms - one : 0;
		if (rl->last_ms < now_ms)
			rl->last_ms = now_ms;
	}
	return rl->blocked_until_ms - now_ms;
}
