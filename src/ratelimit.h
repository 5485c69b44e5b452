/* Client-side request ceiling: a token bucket, tightened by the server's rate-limit headers.
 * Pure logic over a caller-supplied clock (milliseconds), so tests need no timers. */
#ifndef RDD_RATELIMIT_H
#define RDD_RATELIMIT_H

#include <stdint.h>

struct ratelimit {
	double rate;       /* tokens per second (config api.requests_per_second) */
	double burst;      /* bucket size: max(1, rate) */
	double tokens;
	uint64_t last_ms;
	uint64_t blocked_until_ms; /* set from retry-after / ratelimit-remaining: 0 + reset */
};

void ratelimit_init(struct ratelimit *rl, double rate, uint64_t now_ms);

/* Takes a token if one is available now and returns 0; otherwise returns how many milliseconds
 * to wait before asking again (always > 0). */
uint64_t ratelimit_take(struct ratelimit *rl, uint64_t now_ms);

/* Feeds a response's headers (values as received, NULL when absent): retry-after (seconds),
 * ratelimit-remaining and ratelimit-reset (seconds). When retry-after is given, or remaining is
 * 0, no token is handed out before the indicated time. Unparsable values are ignored. */
void ratelimit_note_response(struct ratelimit *rl, uint64_t now_ms, const char *retry_after,
			     const char *remaining, const char *reset);

#endif
