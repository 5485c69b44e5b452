/* Client-side request ceiling: a token bucket, tightened by the server's rate-limit headers.
 * Pure logic over a caller-supplied clock (milliseconds), so tests need no timers. */
#ifndef RDD_RATELIMIT_H
#define RDD_RATELIMIT_H

#include <stdint.h>

/* Until Resend announces the team's limit (ratelimit-limit), the daemon assumes the lowest it
 * has documented. */
#define RATELIMIT_ASSUMED_LIMIT 2.0

/* A response's rate-limit headers, as received (NULL when absent). */
struct ratelimit_headers {
	const char *limit;       /* ratelimit-limit: requests per window (a second) */
	const char *remaining;   /* ratelimit-remaining */
	const char *reset;       /* ratelimit-reset: seconds until the window resets */
	const char *retry_after; /* retry-after: seconds */
};

struct ratelimit {
	/* The rate spent: SHARE of the team's limit (announced, or RATELIMIT_ASSUMED_LIMIT
	 * before), never above CEILING (api.requests_per_second; 0: no ceiling of the daemon's
	 * own: then, until a limit is announced, none at all). 0: unlimited. */
	double rate;       /* tokens per second */
	double ceiling, share;
	double announced;  /* the last ratelimit-limit; 0: none seen */
	double burst;      /* bucket size: max(1, rate) */
	double tokens;
	uint64_t last_ms;
	uint64_t blocked_until_ms; /* set from retry-after / ratelimit-remaining: 0 + reset */
	unsigned refusals;         /* 429s in a row (the team's limit), for the wait without a
				    * header */
	/* A fleet of SLOT_N hosts sharing the team's limit (0 or 1: alone): this host, SLOT_I of
	 * them, takes tokens in its own turns only, on a clock they share (this clock plus
	 * CLOCK_OFFSET_MS), so that their requests never bunch up in one second. */
	unsigned slot_n, slot_i;
	int64_t clock_offset_ms;
	int64_t slot_used;         /* the last turn a token was taken in; -1: none */
};

/* CEILING: api.requests_per_second (0: none); SHARE: api.rate_share, in (0, 1]. */
void ratelimit_init(struct ratelimit *rl, double ceiling, double share, uint64_t now_ms);

/* A new SHARE, in (0, 1] (a fleet's hosts divide the team's limit between the live ones). */
void ratelimit_set_share(struct ratelimit *rl, double share);
/* Turns: N hosts (each with a share of 1/N) take tokens in turn, this one the I-th (0-based)
 * of every N, each turn RATELIMIT_TURN_MARGIN times the team's interval long and used only in
 * its first RATELIMIT_TURN_OPEN part, at most once: any second then holds at most the team's
 * limit of requests, whatever the hosts' phases, with clocks agreeing within a tenth of a
 * turn. OFFSET_MS: the shared clock minus this one. N < 2: no turns. */
#define RATELIMIT_TURN_MARGIN 1.2
#define RATELIMIT_TURN_OPEN 0.1
void ratelimit_set_turns(struct ratelimit *rl, unsigned n, unsigned i, int64_t offset_ms);

/* Takes a token if one is available now and returns 0; otherwise returns how many milliseconds
 * to wait before asking again (always > 0). */
uint64_t ratelimit_take(struct ratelimit *rl, uint64_t now_ms);

/* Feeds a response's headers. When retry-after is given, or remaining is 0, no token is handed
 * out before the indicated time; a ratelimit-limit resizes the rate (its share, under the
 * ceiling). Unparsable values are ignored. */
void ratelimit_note_response(struct ratelimit *rl, uint64_t now_ms,
			     const struct ratelimit_headers *h);

/* A request refused for the rate limit (a 429 that is not a quota): the same headers, and the
 * bucket emptied. No token is handed out before retry-after, else ratelimit-reset, else (a
 * refusal that names no time, from a proxy say) a wait that doubles with each refusal in a
 * row, RATELIMIT_REFUSED_FIRST_MS up to RATELIMIT_REFUSED_MAX_MS. Returns how long that is
 * from NOW_MS (> 0). Any other answer (ratelimit_note_response) ends the row. */
#define RATELIMIT_REFUSED_FIRST_MS 1000u
#define RATELIMIT_REFUSED_MAX_MS 60000u
uint64_t ratelimit_note_refusal(struct ratelimit *rl, uint64_t now_ms,
				const struct ratelimit_headers *h);

#endif
