/* ratelimit.c: token bucket timing on a fake millisecond clock, and the server's rate-limit
 * headers (retry-after, ratelimit-remaining + ratelimit-reset, ratelimit-limit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "ratelimit.h"

/* An arbitrary, non-zero start so that no test passes only because the clock starts at 0. */
#define T0 1000000u

/* One hour: the most a single header may block (see RATELIMIT_MAX_BLOCK_MS). */
#define MAX_BLOCK_MS 3600000u

/* A bucket spending RATE a second from a full start: the ceiling RATE, and (above the limit
 * assumed until one is announced) that limit announced before the first request. */
static void rl_init(struct ratelimit *rl, double rate, uint64_t now)
{
	ratelimit_init(rl, rate, 1, now);
	if (rate > RATELIMIT_ASSUMED_LIMIT && rate <= 100000) {
		char limit[32];

		snprintf(limit, sizeof(limit), "%.6f", rate);
		ratelimit_note_response(rl, now, &(struct ratelimit_headers){.limit = limit});
		assert_true(rl->rate == rate);
		rl->tokens = rl->burst;
	}
}

static void note_response(struct ratelimit *rl, uint64_t now, const char *retry_after,
			  const char *remaining, const char *reset)
{
	ratelimit_note_response(rl, now, &(struct ratelimit_headers){.retry_after = retry_after,
								       .remaining = remaining,
								       .reset = reset});
}

static uint64_t note_refusal(struct ratelimit *rl, uint64_t now, const char *retry_after,
			     const char *remaining, const char *reset)
{
	return ratelimit_note_refusal(rl, now,
				      &(struct ratelimit_headers){.retry_after = retry_after,
								  .remaining = remaining,
								  .reset = reset});
}

static void drain(struct ratelimit *rl, uint64_t now, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(ratelimit_take(rl, now), 0);
}

static void test_initial_burst_rate_2(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	assert_true(rl.burst == 2.0);
	drain(&rl, T0, 2);
	assert_int_equal(ratelimit_take(&rl, T0), 500);
	/* asking again does not consume anything or change the answer */
	assert_int_equal(ratelimit_take(&rl, T0), 500);
}

static void test_initial_burst_rate_10(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 10, T0);
	drain(&rl, T0, 10);
	assert_int_equal(ratelimit_take(&rl, T0), 100);
}

static void test_refill_exact_timing(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	drain(&rl, T0, 2);
	assert_int_equal(ratelimit_take(&rl, T0 + 1), 499);
	assert_int_equal(ratelimit_take(&rl, T0 + 499), 1);
	assert_int_equal(ratelimit_take(&rl, T0 + 500), 0);
	assert_int_equal(ratelimit_take(&rl, T0 + 500), 500);
	assert_int_equal(ratelimit_take(&rl, T0 + 1000), 0);
	/* a steady caller gets exactly RATE per second */
	for (uint64_t t = T0 + 1500; t < T0 + 11000; t += 500) {
		assert_int_equal(ratelimit_take(&rl, t), 0);
		assert_int_equal(ratelimit_take(&rl, t), 500);
	}
}

static void test_refill_partial_token_waits_for_rest(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	drain(&rl, T0, 2);
	/* 300 ms give 0.6 of a token: 200 ms more are needed */
	assert_int_equal(ratelimit_take(&rl, T0 + 300), 200);
	assert_int_equal(ratelimit_take(&rl, T0 + 500), 0);
}

static void test_rate_half(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 0.5, T0);
	assert_true(rl.burst == 1.0); /* burst is never below one request */
	assert_int_equal(ratelimit_take(&rl, T0), 0);
	assert_int_equal(ratelimit_take(&rl, T0), 2000);
	assert_int_equal(ratelimit_take(&rl, T0 + 1999), 1);
	assert_int_equal(ratelimit_take(&rl, T0 + 2000), 0);
	assert_int_equal(ratelimit_take(&rl, T0 + 2000), 2000);
}

static void test_rate_three_rounds_up(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 3, T0);
	drain(&rl, T0, 3);
	/* 1000/3 = 333.3 ms: waiting 333 would be too early */
	assert_int_equal(ratelimit_take(&rl, T0), 334);
	assert_int_equal(ratelimit_take(&rl, T0 + 333), 1);
	assert_int_equal(ratelimit_take(&rl, T0 + 334), 0);
}

static void test_fractional_rate_burst(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2.5, T0);
	assert_true(rl.burst == 2.5);
	drain(&rl, T0, 2);
	/* half a token left: 0.5 more needed at 2.5/s = 200 ms */
	assert_int_equal(ratelimit_take(&rl, T0), 200);
	assert_int_equal(ratelimit_take(&rl, T0 + 200), 0);
}

static void test_refill_capped_at_burst(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	drain(&rl, T0, 2);
	/* an idle hour does not bank 7200 requests */
	drain(&rl, T0 + 3600000, 2);
	assert_int_equal(ratelimit_take(&rl, T0 + 3600000), 500);
}

static void test_unlimited(void **state)
{
	static const double rates[] = {0, -1, -0.5, NAN, INFINITY};
	struct ratelimit rl;

	(void)state;
	for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		rl_init(&rl, rates[i], T0);
		for (int n = 0; n < 10000; n++)
			assert_int_equal(ratelimit_take(&rl, T0), 0);
		/* a spent window means nothing without a ceiling... */
		note_response(&rl, T0, NULL, "0", NULL);
		assert_int_equal(ratelimit_take(&rl, T0), 0);
	}
}

static void test_unlimited_still_honours_server(void **state)
{
	struct ratelimit rl;

	(void)state;
	/* ...but the server's own "wait" is obeyed: it would refuse the request anyway */
	rl_init(&rl, 0, T0);
	note_response(&rl, T0, "3", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), 3000);
	assert_int_equal(ratelimit_take(&rl, T0 + 3000), 0);
}

static void test_retry_after_blocks_exactly(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "2", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), 2000);
	assert_int_equal(ratelimit_take(&rl, T0 + 1), 1999);
	assert_int_equal(ratelimit_take(&rl, T0 + 1999), 1);
	assert_int_equal(ratelimit_take(&rl, T0 + 2000), 0);
	/* the bucket refilled meanwhile: the second request needs no extra wait */
	assert_int_equal(ratelimit_take(&rl, T0 + 2000), 0);
}

static void test_retry_after_decimal_and_blanks(void **state)
{
	static const struct {
		const char *value;
		uint64_t ms;
	} cases[] = {
		{"1.5", 1500}, {"0.25", 250}, {"0.0001", 1}, {"2.0001", 2001}, {"2.000", 2000},
		{" 3 ", 3000}, {"\t4", 4000},  {"007", 7000},	{"1.2340", 1234},
	};
	struct ratelimit rl;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rl_init(&rl, 2, T0);
		note_response(&rl, T0, cases[i].value, NULL, NULL);
		if (ratelimit_take(&rl, T0) != cases[i].ms)
			fail_msg("retry-after \"%s\": want %llu ms", cases[i].value,
				 (unsigned long long)cases[i].ms);
	}
}

static void test_retry_after_zero_is_no_block(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "0", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), 0);
}

static void test_remaining_zero_with_reset(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, NULL, "0", "5");
	assert_int_equal(ratelimit_take(&rl, T0), 5000);
	assert_int_equal(ratelimit_take(&rl, T0 + 4999), 1);
	/* a new window: a full burst again */
	drain(&rl, T0 + 5000, 2);
	assert_int_equal(ratelimit_take(&rl, T0 + 5000), 500);
}

static void test_remaining_zero_drains_tokens(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	/* no reset given: no block, but the bucket believes the server and is empty */
	note_response(&rl, T0, NULL, "0", NULL);
	assert_int_equal(ratelimit_take(&rl, T0), 500);
	/* time before the answer is not credited again */
	rl_init(&rl, 2, T0);
	drain(&rl, T0, 2);
	note_response(&rl, T0 + 400, NULL, "0", NULL);
	assert_int_equal(ratelimit_take(&rl, T0 + 400), 500);
}

static void test_remaining_nonzero_no_effect(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, NULL, "3", "5");
	note_response(&rl, T0, NULL, "10", "60");
	drain(&rl, T0, 2);
	/* reset without remaining == 0 blocks nothing */
	note_response(&rl, T0, NULL, NULL, "30");
	assert_int_equal(ratelimit_take(&rl, T0), 500);
}

static void test_garbage_retry_after_ignored(void **state)
{
	static const char *garbage[] = {
		"",
		" ",
		"-1",
		"+5",
		"abc",
		"5s",
		"1e3",
		"1.",
		".5",
		"1..2",
		"0x10",
		"1 2",
		"Wed, 21 Oct 2015 07:28:00 GMT",
		"99999999999999999999999",
		"18446744073709551616",
		"NaN",
		"inf",
	};
	struct ratelimit rl;

	(void)state;
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		rl_init(&rl, 2, T0);
		note_response(&rl, T0, garbage[i], NULL, NULL);
		if (ratelimit_take(&rl, T0) != 0)
			fail_msg("retry-after \"%s\" was not ignored", garbage[i]);
		assert_int_equal(rl.blocked_until_ms, 0);
	}
}

static void test_garbage_remaining_and_reset_ignored(void **state)
{
	static const char *bad_remaining[] = {"", "-0", "0.5", "0.0", "abc", "0x0", "zero", "-1"};
	static const char *bad_reset[] = {"", "-5", "abc", "5m", "99999999999999999999999"};
	struct ratelimit rl;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_remaining) / sizeof(bad_remaining[0]); i++) {
		rl_init(&rl, 2, T0);
		note_response(&rl, T0, NULL, bad_remaining[i], "5");
		if (ratelimit_take(&rl, T0) != 0 || ratelimit_take(&rl, T0) != 0)
			fail_msg("remaining \"%s\" was not ignored", bad_remaining[i]);
	}
	for (size_t i = 0; i < sizeof(bad_reset) / sizeof(bad_reset[0]); i++) {
		rl_init(&rl, 2, T0);
		note_response(&rl, T0, NULL, "0", bad_reset[i]);
		/* remaining 0 still drains, but the bad reset does not block */
		if (ratelimit_take(&rl, T0) != 500)
			fail_msg("reset \"%s\" was not ignored", bad_reset[i]);
		assert_int_equal(rl.blocked_until_ms, 0);
	}
	/* "00" and " 0 " are still a plain zero */
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, NULL, " 00 ", "1");
	assert_int_equal(ratelimit_take(&rl, T0), 1000);
}

static void test_all_absent_no_effect(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, NULL, NULL, NULL);
	drain(&rl, T0, 2);
	assert_int_equal(ratelimit_take(&rl, T0), 500);
}

static void test_clamp_one_hour(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "86400", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), MAX_BLOCK_MS);

	rl_init(&rl, 2, T0);
	note_response(&rl, T0, NULL, "0", "100000");
	assert_int_equal(ratelimit_take(&rl, T0), MAX_BLOCK_MS);

	/* big but within uint64 seconds: clamped, not ignored */
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "18446744073709551615", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), MAX_BLOCK_MS);

	/* exactly one hour, and just under it, pass unchanged */
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "3599.999", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), MAX_BLOCK_MS - 1);
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "3600.5", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0), MAX_BLOCK_MS);
}

static void test_longest_block_wins(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "10", NULL, NULL);
	/* a later, shorter answer (to a concurrent request) does not cut the wait */
	note_response(&rl, T0 + 100, "1", NULL, NULL);
	assert_int_equal(ratelimit_take(&rl, T0 + 100), 9900);
	/* a longer one extends it */
	note_response(&rl, T0 + 100, NULL, "0", "20");
	assert_int_equal(ratelimit_take(&rl, T0 + 100), 20000);
}

static void test_retry_after_and_reset_together(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "2", "0", "7");
	assert_int_equal(ratelimit_take(&rl, T0), 7000);
	rl_init(&rl, 2, T0);
	note_response(&rl, T0, "9", "0", "7");
	assert_int_equal(ratelimit_take(&rl, T0), 9000);
}

/* A 429 holds every request back until the time it names: retry-after first, else the reset,
 * else a wait that doubles with each refusal in a row and starts again after an answer that
 * is not a refusal. The bucket is empty afterwards, whatever ratelimit-remaining says. */
static void test_refusal_waits(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 5, T0);
	assert_int_equal(note_refusal(&rl, T0, "3", NULL, NULL), 3000);
	assert_int_equal(ratelimit_take(&rl, T0 + 2999), 1);
	assert_int_equal(ratelimit_take(&rl, T0 + 3000), 0);

	rl_init(&rl, 5, T0);
	assert_int_equal(note_refusal(&rl, T0, NULL, "4", "2"), 2000);
	assert_int_equal(ratelimit_take(&rl, T0 + 1999), 1);

	/* Nothing named: 1 s, 2 s, 4 s ... up to a minute. */
	rl_init(&rl, 5, T0);
	assert_int_equal(note_refusal(&rl, T0, NULL, NULL, NULL), 1000);
	assert_int_equal(note_refusal(&rl, T0 + 1000, NULL, NULL, NULL), 2000);
	assert_int_equal(note_refusal(&rl, T0 + 3000, "garbage", NULL, "x"), 4000);
	/* Requests refused together (sent before the first answer) do not lengthen the wait. */
	assert_int_equal(note_refusal(&rl, T0 + 3000, NULL, NULL, NULL), 4000);
	uint64_t t = T0 + 7000, w = 0;
	for (int i = 0; i < 10; i++) {
		w = note_refusal(&rl, t, NULL, NULL, NULL);
		t += w;
	}
	assert_int_equal(w, RATELIMIT_REFUSED_MAX_MS);
	/* An answer that is not a refusal ends the row. */
	note_response(&rl, t, NULL, NULL, NULL);
	assert_int_equal(note_refusal(&rl, t, NULL, NULL, NULL), 1000);

	/* A refusal while a longer wait is known keeps the longer one. */
	rl_init(&rl, 5, T0);
	note_refusal(&rl, T0, "30", NULL, NULL);
	assert_int_equal(note_refusal(&rl, T0 + 1000, "1", NULL, NULL), 29000);

	/* Without a client-side ceiling too: the server's word holds. */
	rl_init(&rl, 0, T0);
	assert_int_equal(note_refusal(&rl, T0, "0.5", NULL, NULL), 500);
	assert_int_equal(ratelimit_take(&rl, T0 + 100), 400);
	assert_int_equal(ratelimit_take(&rl, T0 + 500), 0);
}

/* After a refusal the bucket starts empty: one request at the end of the wait, then the rate. */
static void test_refusal_empties_the_bucket(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 5, T0);
	note_refusal(&rl, T0, "1", "3", NULL);
	assert_int_equal(ratelimit_take(&rl, T0 + 1000), 0);
	assert_int_equal(ratelimit_take(&rl, T0 + 1000), 200);
	assert_int_equal(ratelimit_take(&rl, T0 + 1200), 0);
}

static void test_wait_always_positive(void **state)
{
	static const double rates[] = {0.001, 0.3, 1, 1.7, 3, 7, 100, 1000, 5000};
	struct ratelimit rl;

	(void)state;
	for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		uint64_t now = T0;
		unsigned granted = 0;

		rl_init(&rl, rates[i], now);
		/* follow the advice given: every promised time must grant a token */
		for (int n = 0; n < 2000 && now < T0 + 100000000u; n++) {
			uint64_t w = ratelimit_take(&rl, now);

			if (w == 0) {
				granted++;
				continue;
			}
			now += w;
			if (ratelimit_take(&rl, now) != 0)
				fail_msg("rate %g: no token at the promised time", rates[i]);
			granted++;
		}
		assert_true(granted > 0);
	}
}

static void test_long_run_average_rate(void **state)
{
	struct ratelimit rl;
	unsigned granted = 0;

	(void)state;
	/* polling every millisecond for 100 s at 3/s: the burst plus 300 refills, no more */
	rl_init(&rl, 3, T0);
	for (uint64_t t = T0; t <= T0 + 100000; t++)
		while (ratelimit_take(&rl, t) == 0)
			granted++;
	assert_int_equal(granted, 3 + 300);
}

static void test_tiny_rate_wait_is_bounded(void **state)
{
	struct ratelimit rl;
	uint64_t w;

	(void)state;
	rl_init(&rl, 1e-300, T0);
	assert_int_equal(ratelimit_take(&rl, T0), 0);
	w = ratelimit_take(&rl, T0);
	/* effectively "never", and no undefined double -> integer conversion on the way */
	assert_true(w >= 365ull * 24 * 3600 * 1000);
	assert_true(w <= 366ull * 24 * 3600 * 1000);
}

static void test_clock_backwards_is_harmless(void **state)
{
	struct ratelimit rl;

	(void)state;
	rl_init(&rl, 2, T0);
	drain(&rl, T0, 2);
	/* no refill, no underflow into a huge token count */
	assert_int_equal(ratelimit_take(&rl, T0 - 1000), 500);
	assert_int_equal(ratelimit_take(&rl, T0 + 500), 0);
}

/* Until Resend announces the team's limit, the daemon assumes the lowest documented (2/s)
 * under its ceiling; an announcement resizes the rate to its share, never above the ceiling. */
static void test_limit_announced_resizes(void **state)
{
	struct ratelimit rl;

	(void)state;
	ratelimit_init(&rl, 10, 1, T0);
	assert_true(rl.rate == RATELIMIT_ASSUMED_LIMIT && rl.burst == 2);
	drain(&rl, T0, 2);
	assert_int_equal(ratelimit_take(&rl, T0), 500);
	/* 5/s announced: a token every 200 ms from now on. */
	ratelimit_note_response(&rl, T0, &(struct ratelimit_headers){.limit = "5"});
	assert_true(rl.rate == 5 && rl.burst == 5);
	assert_int_equal(ratelimit_take(&rl, T0), 200);
	assert_int_equal(ratelimit_take(&rl, T0 + 200), 0);
	/* Above the ceiling: the ceiling. */
	ratelimit_note_response(&rl, T0 + 200, &(struct ratelimit_headers){.limit = "50"});
	assert_true(rl.rate == 10);
	/* Down again: the bucket shrinks with it (no burst of the old size). */
	rl.tokens = 10;
	ratelimit_note_response(&rl, T0 + 200, &(struct ratelimit_headers){.limit = " 2 "});
	assert_true(rl.rate == 2 && rl.tokens == 2);
	/* Nonsense is ignored. */
	static const char *const bad[] = {"0", "-5", "abc", "5/s", "", "1e3", "1000000"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		ratelimit_note_response(&rl, T0 + 200, &(struct ratelimit_headers){.limit = bad[i]});
		assert_true(rl.rate == 2);
	}
}

/* rate_share: the daemon spends its share of the team's limit; other apps the rest. */
static void test_limit_share(void **state)
{
	struct ratelimit rl;

	(void)state;
	ratelimit_init(&rl, 100, 0.5, T0);
	assert_true(rl.rate == 1); /* half the assumed 2/s */
	ratelimit_note_response(&rl, T0, &(struct ratelimit_headers){.limit = "5"});
	assert_true(rl.rate == 2.5);
	/* No ceiling of its own: unlimited until a limit is announced, then its share. */
	ratelimit_init(&rl, 0, 0.8, T0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(ratelimit_take(&rl, T0), 0);
	ratelimit_note_response(&rl, T0, &(struct ratelimit_headers){.limit = "5"});
	assert_true(rl.rate == 4);
	assert_int_equal(ratelimit_take(&rl, T0), 0);
	assert_int_equal(ratelimit_take(&rl, T0), 250);
}

/* A fleet of three hosts on the team's 2 requests/s (announced), each with a share of a third
 * and its turns, their clocks a few ms apart as the database's reading leaves them, each asking
 * for a token whenever it has waited as told: no second ever holds more than 2 grants in all,
 * wherever the window falls, and each host gets its third. Without turns the same hosts bunch
 * up (the test's own check that it can tell). */
static int grants_in_worst_window(const uint64_t *t, size_t n)
{
	int worst = 0;

	for (size_t i = 0; i < n; i++) {
		int in = 0;

		for (size_t k = 0; k < n; k++)
			in += t[k] >= t[i] && t[k] < t[i] + 1000;
		if (in > worst)
			worst = in;
	}
	return worst;
}

static void run_fleet(bool turns, uint64_t *grants, size_t *n_grants, unsigned per_host[3])
{
	/* Each host's clock against the shared one (its monotonic clock started elsewhere), and
	 * the error of its reading of the difference (half a round trip and more). */
	const int64_t skew[3] = {100000, 5017, 77};
	const int64_t error[3] = {0, 9, -8};
	const uint64_t start[3] = {0, 333, 701};
	struct ratelimit rl[3];
	uint64_t next[3];
	const struct ratelimit_headers h = {.limit = "2"};

	*n_grants = 0;
	for (int i = 0; i < 3; i++) {
		ratelimit_init(&rl[i], 10, 1.0 / 3, start[i] + (uint64_t)skew[i]);
		ratelimit_note_response(&rl[i], start[i] + (uint64_t)skew[i], &h);
		if (turns)
			ratelimit_set_turns(&rl[i], 3, (unsigned)i, -skew[i] + error[i]);
		next[i] = start[i];
		per_host[i] = 0;
	}
	/* Ten minutes, a millisecond at a time: each host asks when its last wait ends. */
	for (uint64_t now = 0; now < 600000; now++) {
		for (int i = 0; i < 3; i++) {
			uint64_t local = now + (uint64_t)skew[i]; /* its own clock */
			uint64_t w;

			if (now < next[i])
				continue;
			w = ratelimit_take(&rl[i], local);
			if (w == 0) {
				grants[(*n_grants)++] = now;
				per_host[i]++;
				next[i] = now + 1;
			} else {
				next[i] = now + w;
			}
		}
	}
}

static void test_fleet_turns_keep_every_second_within_the_team_limit(void **state)
{
	static uint64_t grants[3 * 1300];
	unsigned per_host[3];
	size_t n;

	(void)state;
	run_fleet(true, grants, &n, per_host);
	assert_true(grants_in_worst_window(grants, n) <= 2);
	/* 1/1.2 of the team's 2/s over 600 s, a third each. */
	assert_true(n >= 950 && n <= 1002);
	for (int i = 0; i < 3; i++)
		assert_true(per_host[i] >= n / 3 - 2 && per_host[i] <= n / 3 + 2);
	run_fleet(false, grants, &n, per_host);
	assert_true(grants_in_worst_window(grants, n) > 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_initial_burst_rate_2),
		cmocka_unit_test(test_initial_burst_rate_10),
		cmocka_unit_test(test_refill_exact_timing),
		cmocka_unit_test(test_refill_partial_token_waits_for_rest),
		cmocka_unit_test(test_rate_half),
		cmocka_unit_test(test_rate_three_rounds_up),
		cmocka_unit_test(test_fractional_rate_burst),
		cmocka_unit_test(test_refill_capped_at_burst),
		cmocka_unit_test(test_unlimited),
		cmocka_unit_test(test_unlimited_still_honours_server),
		cmocka_unit_test(test_retry_after_blocks_exactly),
		cmocka_unit_test(test_retry_after_decimal_and_blanks),
		cmocka_unit_test(test_retry_after_zero_is_no_block),
		cmocka_unit_test(test_remaining_zero_with_reset),
		cmocka_unit_test(test_remaining_zero_drains_tokens),
		cmocka_unit_test(test_remaining_nonzero_no_effect),
		cmocka_unit_test(test_garbage_retry_after_ignored),
		cmocka_unit_test(test_garbage_remaining_and_reset_ignored),
		cmocka_unit_test(test_all_absent_no_effect),
		cmocka_unit_test(test_clamp_one_hour),
		cmocka_unit_test(test_longest_block_wins),
		cmocka_unit_test(test_retry_after_and_reset_together),
		cmocka_unit_test(test_refusal_waits),
		cmocka_unit_test(test_refusal_empties_the_bucket),
		cmocka_unit_test(test_wait_always_positive),
		cmocka_unit_test(test_long_run_average_rate),
		cmocka_unit_test(test_tiny_rate_wait_is_bounded),
		cmocka_unit_test(test_clock_backwards_is_harmless),
		cmocka_unit_test(test_limit_announced_resizes),
		cmocka_unit_test(test_limit_share),
		cmocka_unit_test(test_fleet_turns_keep_every_second_within_the_team_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
