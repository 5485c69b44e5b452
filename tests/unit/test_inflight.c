/* inflight: a folder's contents being imported, the files that wait for them, and the entry's
 * life (it goes once nobody holds it or waits for it). */
#include "inflight.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

struct waiter {
	int id;
	struct inflight_waiter w;
};

#define WAITER_OF(p) ((struct waiter *)((char *)(p) - offsetof(struct waiter, w)))

static void test_get_find_and_drop(void **state)
{
	struct inflight_set s = {0};
	struct inflight *a, *b;
	int owner;

	(void)state;
	assert_null(inflight_find(&s, SHA_A));
	a = inflight_get(&s, SHA_A);
	assert_non_null(a);
	assert_ptr_equal(inflight_get(&s, SHA_A), a);
	assert_ptr_equal(inflight_find(&s, SHA_A), a);
	b = inflight_get(&s, SHA_B);
	assert_true(a != b);
	/* Held: it stays; free: it goes. */
	a->owner = &owner;
	inflight_drop_unused(&s, a);
	assert_ptr_equal(inflight_find(&s, SHA_A), a);
	a->owner = NULL;
	a->n_uploaded = 1;
	inflight_drop_unused(&s, a);
	assert_ptr_equal(inflight_find(&s, SHA_A), a);
	a->n_uploaded = 0;
	inflight_drop_unused(&s, a);
	assert_null(inflight_find(&s, SHA_A));
	inflight_clear(&s);
	assert_null(inflight_find(&s, SHA_B));
}

/* Waiters come back in the order they came; each may wait again (on the same content) while
 * the list is walked; an entry that only they kept goes when the last leaves. */
static void test_wait_take_and_wait_again(void **state)
{
	struct inflight_set s = {0};
	struct waiter ws[4] = {{1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}};
	struct inflight *a = inflight_get(&s, SHA_A);
	struct inflight_waiter *w, *next;
	int order[4], n = 0;

	(void)state;
	for (int i = 0; i < 4; i++)
		inflight_wait(a, &ws[i].w);
	assert_ptr_equal(ws[2].w.on, a);
	/* One leaves before anything happens. */
	inflight_unwait(&s, &ws[1].w);
	assert_null(ws[1].w.on);
	assert_ptr_equal(inflight_find(&s, SHA_A), a); /* the others still wait */

	for (w = inflight_take_waiters(a); w; w = next) {
		next = inflight_next(w);
		assert_null(w->on);
		order[n++] = WAITER_OF(w)->id;
		if (WAITER_OF(w)->id != 3)
			inflight_wait(a, w); /* asked the ledger, told to wait again */
	}
	assert_int_equal(n, 3);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 3);
	assert_int_equal(order[2], 4);
	inflight_drop_unused(&s, a);
	assert_ptr_equal(inflight_find(&s, SHA_A), a);

	inflight_unwait(&s, &ws[0].w);
	assert_ptr_equal(inflight_find(&s, SHA_A), a);
	inflight_unwait(&s, &ws[3].w);
	assert_null(inflight_find(&s, SHA_A)); /* the last one gone: the entry too */
	inflight_unwait(&s, &ws[3].w);          /* not waiting: nothing happens */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_find_and_drop),
		cmocka_unit_test(test_wait_take_and_wait_again),
	};

	return cmocka_run_group_tests_name("inflight", tests, NULL, NULL);
}
