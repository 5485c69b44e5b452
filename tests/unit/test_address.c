/* address: the row checks' and the configuration's test of an e-mail address, and the address
 * in a mailbox ("Name <addr>"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "address.h"

static void test_email_problems(void **state)
{
	static const char *const good[] = {"a@example.com", "first.last+tag@sub.example.co.uk",
					   "o'brien@example.ie", "x@xn--mller-kva.de"};
	static const char *const bad[] = {"a", "a@", "@example.com", "a@@example.com",
					  "a b@example.com", "a@example", "a..b@example.com",
					  ".a@example.com", "a@-example.com", "a@example..com",
					  "a@example.com.", "a(b)@example.com"};

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
		assert_null(address_problem(good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		assert_non_null(address_problem(bad[i], strlen(bad[i])));
}

static void test_mailboxes(void **state)
{
	const char *a;
	size_t len;

	(void)state;
	assert_true(address_in_mailbox("ops@example.com", &a, &len));
	assert_int_equal(len, strlen("ops@example.com"));
	assert_true(address_in_mailbox("On Call <oncall@example.com>", &a, &len));
	assert_int_equal(len, strlen("oncall@example.com"));
	assert_memory_equal(a, "oncall@example.com", len);
	assert_false(address_in_mailbox("On Call <oncall@example.com", &a, &len));
	assert_false(address_in_mailbox("<a@example.com> trailing", &a, &len));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_email_problems),
		cmocka_unit_test(test_mailboxes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
