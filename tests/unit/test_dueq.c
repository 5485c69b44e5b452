/* dueq: the one queue by due time behind every job's waits. Checked against a sorted array,
 * since what matters is that entries come out in due order whatever was removed meanwhile. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dueq.h"

/* A deterministic generator (xorshift64*), so that a failure can be replayed. */
static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static struct dueq_entry *pop(struct dueq *q)
{
	struct dueq_entry *e = dueq_peek(q);

	if (e)
		dueq_remove(q, e);
	return e;
}

static void test_empty(void **state)
{
	struct dueq q;
	struct dueq_entry e;

	(void)state;
	dueq_init(&q);
	assert_null(dueq_peek(&q));
	assert_null(pop(&q));
	/* Removing what is not queued is harmless. */
	dueq_entry_init(&e);
	assert_false(dueq_queued(&e));
	dueq_remove(&q, &e);
	assert_null(dueq_peek(&q));
	dueq_free(&q);
	dueq_free(&q); /* twice: still fine */
}

static void test_queued_flags(void **state)
{
	struct dueq q;
	struct dueq_entry a, b;

	(void)state;
	dueq_init(&q);
	dueq_entry_init(&a);
	dueq_entry_init(&b);
	assert_int_equal(dueq_push(&q, &a, 10), 0);
	assert_true(dueq_queued(&a));
	assert_false(dueq_queued(&b));
	assert_int_equal(dueq_push(&q, &b, 5), 0);
	assert_true(dueq_queued(&b));
	assert_ptr_equal(pop(&q), &b);
	assert_false(dueq_queued(&b));
	assert_true(dueq_queued(&a));
	dueq_remove(&q, &a);
	assert_false(dueq_queued(&a));
	assert_null(dueq_peek(&q));

	/* dueq_free leaves whatever was still queued marked as not queued, so that a later
	 * remove of it does not touch freed memory. */
	assert_int_equal(dueq_push(&q, &a, 1), 0);
	assert_int_equal(dueq_push(&q, &b, 2), 0);
	dueq_free(&q);
	assert_false(dueq_queued(&a));
	assert_false(dueq_queued(&b));
	dueq_remove(&q, &a);
}

/* Many random dues (with repeats) come out sorted. */
static void test_random_order_matches_sorted(void **state)
{
	enum { N = 5000 };
	static struct dueq_entry e[N];
	static uint64_t want[N];
	struct dueq q;

	(void)state;
	rng_state = 0x9e3779b97f4a7c15ull;
	dueq_init(&q);
	for (size_t i = 0; i < N; i++) {
		dueq_entry_init(&e[i]);
		want[i] = rng() % 1000; /* many ties */
		assert_int_equal(dueq_push(&q, &e[i], want[i]), 0);
		assert_int_equal(e[i].due, want[i]);
	}
	qsort(want, N, sizeof(want[0]), cmp_u64);
	assert_int_equal(dueq_peek(&q)->due, want[0]);
	for (size_t i = 0; i < N; i++) {
		struct dueq_entry *x = pop(&q);

		assert_non_null(x);
		assert_int_equal(x->due, want[i]);
		assert_false(dueq_queued(x));
	}
	assert_null(dueq_peek(&q));
	dueq_free(&q);
}

/* Removing from the head, the tail and anywhere in between keeps the rest in order; a removed
 * entry can be queued again with a new due time. */
static void test_remove_anywhere_keeps_order(void **state)
{
	enum { N = 2000 };
	static struct dueq_entry e[N];
	static bool gone[N];
	static uint64_t want[N];
	struct dueq q;
	size_t n_want = 0;

	(void)state;
	rng_state = 12345;
	dueq_init(&q);
	for (size_t i = 0; i < N; i++) {
		dueq_entry_init(&e[i]);
		gone[i] = false;
		assert_int_equal(dueq_push(&q, &e[i], 1000 + rng() % 100000), 0);
	}
	/* The head, the last pushed, the first pushed, then a random half. */
	struct dueq_entry *head = dueq_peek(&q);
	dueq_remove(&q, head);
	gone[head - e] = true;
	dueq_remove(&q, &e[N - 1]);
	gone[N - 1] = true;
	if (!gone[0]) {
		dueq_remove(&q, &e[0]);
		gone[0] = true;
	}
	for (size_t i = 0; i < N; i++) {
		if (!gone[i] && rng() % 2) {
			dueq_remove(&q, &e[i]);
			gone[i] = true;
		}
	}
	/* Some removed ones come back, earlier or later than anything else. */
	for (size_t i = 0; i < N; i += 7) {
		if (gone[i]) {
			assert_int_equal(dueq_push(&q, &e[i], i % 2 ? 1 + i : 200000 + i), 0);
			gone[i] = false;
		}
	}
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(dueq_queued(&e[i]), !gone[i]);
		if (!gone[i])
			want[n_want++] = e[i].due;
	}
	qsort(want, n_want, sizeof(want[0]), cmp_u64);
	for (size_t i = 0; i < n_want; i++) {
		struct dueq_entry *x = pop(&q);

		assert_non_null(x);
		assert_int_equal(x->due, want[i]);
	}
	assert_null(pop(&q));
	dueq_free(&q);
}

/* Removal interleaved with pushes and pops, checked after every step against a brute-force
 * minimum: catches a hole filled by an entry that should have moved up rather than down. */
static void test_interleaved_against_brute_force(void **state)
{
	enum { N = 300, STEPS = 20000 };
	static struct dueq_entry e[N];
	struct dueq q;

	(void)state;
	rng_state = 777;
	dueq_init(&q);
	for (size_t i = 0; i < N; i++)
		dueq_entry_init(&e[i]);
	for (size_t step = 0; step < STEPS; step++) {
		struct dueq_entry *x = &e[rng() % N];
		struct dueq_entry *min = NULL;

		if (dueq_queued(x))
			dueq_remove(&q, x);
		else
			assert_int_equal(dueq_push(&q, x, rng() % 500), 0);
		if (rng() % 4 == 0)
			pop(&q);
		for (size_t i = 0; i < N; i++) {
			if (dueq_queued(&e[i]) && (!min || e[i].due < min->due))
				min = &e[i];
		}
		if (min)
			assert_int_equal(dueq_peek(&q)->due, min->due);
		else
			assert_null(dueq_peek(&q));
	}
	dueq_free(&q);
}

/* Equal dues: all come out, each once. */
static void test_ties(void **state)
{
	struct dueq q;
	struct dueq_entry e[10];
	bool seen[10] = {0};

	(void)state;
	dueq_init(&q);
	for (size_t i = 0; i < 10; i++) {
		dueq_entry_init(&e[i]);
		assert_int_equal(dueq_push(&q, &e[i], 42), 0);
	}
	dueq_remove(&q, &e[3]);
	for (size_t i = 0; i < 9; i++) {
		struct dueq_entry *x = pop(&q);

		assert_non_null(x);
		assert_int_equal(x->due, 42);
		assert_false(seen[x - e]);
		seen[x - e] = true;
	}
	assert_false(seen[3]);
	assert_null(pop(&q));
	dueq_free(&q);
}

/* Re-queueing an entry after its removal, at the head position and elsewhere. */
static void test_repush_after_remove(void **state)
{
	struct dueq q;
	struct dueq_entry a, b, c;

	(void)state;
	dueq_init(&q);
	dueq_entry_init(&a);
	dueq_entry_init(&b);
	dueq_entry_init(&c);
	assert_int_equal(dueq_push(&q, &a, 100), 0);
	assert_int_equal(dueq_push(&q, &b, 200), 0);
	assert_int_equal(dueq_push(&q, &c, 300), 0);
	dueq_remove(&q, &a);
	assert_ptr_equal(dueq_peek(&q), &b);
	assert_int_equal(dueq_push(&q, &a, 400), 0); /* a retry later than the rest */
	assert_ptr_equal(pop(&q), &b);
	dueq_remove(&q, &c);
	assert_int_equal(dueq_push(&q, &c, 50), 0);
	assert_ptr_equal(pop(&q), &c);
	assert_ptr_equal(pop(&q), &a);
	assert_null(pop(&q));
	dueq_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_queued_flags),
		cmocka_unit_test(test_random_order_matches_sorted),
		cmocka_unit_test(test_remove_anywhere_keeps_order),
		cmocka_unit_test(test_interleaved_against_brute_force),
		cmocka_unit_test(test_ties),
		cmocka_unit_test(test_repush_after_remove),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
