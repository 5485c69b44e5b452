/* The fair queue: lanes served round-robin, FIFO within a lane, retries keep their place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "queue.h"

static struct queue_entry *entry(struct queue_entry *e, size_t lane)
{
	e->lane = lane;
	e->next = NULL;
	e->queued = false;
	return e;
}

static void test_empty_pops_null(void **state)
{
	struct queue q;

	(void)state;
	assert_int_equal(queue_init(&q, 3), 0);
	assert_null(queue_pop(&q));
	assert_int_equal(q.count, 0);
	queue_free(&q);
}

static void test_fifo_within_lane(void **state)
{
	struct queue q;
	struct queue_entry e[4];

	(void)state;
	queue_init(&q, 1);
	for (size_t i = 0; i < 4; i++)
		queue_push(&q, entry(&e[i], 0));
	assert_int_equal(q.count, 4);
	for (size_t i = 0; i < 4; i++)
		assert_ptr_equal(queue_pop(&q), &e[i]);
	assert_null(queue_pop(&q));
	queue_free(&q);
}

/* A folder with many files must not starve the others: after one of A, B gets a turn. */
static void test_round_robin_across_lanes(void **state)
{
	struct queue q;
	struct queue_entry a[5], b[2], c[1];
	struct queue_entry *order[8];

	(void)state;
	queue_init(&q, 3);
	for (size_t i = 0; i < 5; i++)
		queue_push(&q, entry(&a[i], 0));
	for (size_t i = 0; i < 2; i++)
		queue_push(&q, entry(&b[i], 1));
	queue_push(&q, entry(&c[0], 2));
	for (size_t i = 0; i < 8; i++)
		order[i] = queue_pop(&q);
	struct queue_entry *expect[8] = {&a[0], &b[0], &c[0], &a[1], &b[1], &a[2], &a[3], &a[4]};
	for (size_t i = 0; i < 8; i++)
		assert_ptr_equal(order[i], expect[i]);
	assert_int_equal(q.count, 0);
	queue_free(&q);
}

/* The turn continues after the lane served last, even when new entries arrive in between. */
static void test_turn_survives_new_arrivals(void **state)
{
	struct queue q;
	struct queue_entry a[3], b[2];

	(void)state;
	queue_init(&q, 2);
	queue_push(&q, entry(&a[0], 0));
	queue_push(&q, entry(&a[1], 0));
	assert_ptr_equal(queue_pop(&q), &a[0]);
	queue_push(&q, entry(&b[0], 1));
	assert_ptr_equal(queue_pop(&q), &b[0]);
	queue_push(&q, entry(&b[1], 1));
	queue_push(&q, entry(&a[2], 0));
	assert_ptr_equal(queue_pop(&q), &a[1]);
	assert_ptr_equal(queue_pop(&q), &b[1]);
	assert_ptr_equal(queue_pop(&q), &a[2]);
	queue_free(&q);
}

static void test_push_front_keeps_place(void **state)
{
	struct queue q;
	struct queue_entry e[3];

	(void)state;
	queue_init(&q, 1);
	queue_push(&q, entry(&e[0], 0));
	queue_push(&q, entry(&e[1], 0));
	queue_push_front(&q, entry(&e[2], 0));
	assert_ptr_equal(queue_pop(&q), &e[2]);
	assert_ptr_equal(queue_pop(&q), &e[0]);
	assert_ptr_equal(queue_pop(&q), &e[1]);
	/* push_front on an empty lane makes it the lane's end too: a later push lands behind it. */
	queue_push_front(&q, entry(&e[0], 0));
	queue_push(&q, entry(&e[1], 0));
	assert_ptr_equal(queue_pop(&q), &e[0]);
	assert_ptr_equal(queue_pop(&q), &e[1]);
	assert_null(queue_pop(&q));
	queue_free(&q);
}

static void test_remove_head_middle_tail(void **state)
{
	struct queue q;
	struct queue_entry e[4], other;

	(void)state;
	queue_init(&q, 2);
	for (size_t i = 0; i < 4; i++)
		queue_push(&q, entry(&e[i], 0));
	assert_true(queue_remove(&q, &e[1]));
	assert_true(queue_remove(&q, &e[3]));
	assert_true(queue_remove(&q, &e[0]));
	assert_false(queue_remove(&q, &e[0]));
	assert_false(queue_remove(&q, entry(&other, 1)));
	assert_int_equal(q.count, 1);
	/* The lane's end was fixed up: a new entry goes behind the one left. */
	queue_push(&q, entry(&e[3], 0));
	assert_ptr_equal(queue_pop(&q), &e[2]);
	assert_ptr_equal(queue_pop(&q), &e[3]);
	assert_null(queue_pop(&q));
	assert_false(e[3].queued);
	queue_free(&q);
}

/* resend-dropd pause: a paused lane keeps its entries, the others are served; ready counts
 * what can be popped. */
static void test_paused_lane_is_passed_by(void **state)
{
	struct queue q;
	struct queue_entry e[4];

	(void)state;
	queue_init(&q, 2);
	queue_push(&q, entry(&e[0], 0));
	queue_push(&q, entry(&e[1], 0));
	queue_push(&q, entry(&e[2], 1));
	queue_pause_lane(&q, 0, true);
	assert_int_equal(q.count, 3);
	assert_int_equal(q.ready, 1);
	assert_ptr_equal(queue_pop(&q), &e[2]);
	assert_null(queue_pop(&q));
	assert_int_equal(q.ready, 0);
	queue_push(&q, entry(&e[3], 0)); /* into the paused lane */
	assert_int_equal(q.ready, 0);
	assert_true(queue_remove(&q, &e[1]));
	assert_int_equal(q.count, 2);
	queue_pause_lane(&q, 0, false);
	assert_int_equal(q.ready, 2);
	assert_ptr_equal(queue_pop(&q), &e[0]);
	assert_ptr_equal(queue_pop(&q), &e[3]);
	assert_int_equal(q.ready, 0);
	queue_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_pops_null),
		cmocka_unit_test(test_fifo_within_lane),
		cmocka_unit_test(test_round_robin_across_lanes),
		cmocka_unit_test(test_turn_survives_new_arrivals),
		cmocka_unit_test(test_push_front_keeps_place),
		cmocka_unit_test(test_remove_head_middle_tail),
		cmocka_unit_test(test_paused_lane_is_passed_by),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
