/* reconcile.c's decision, pure: which resumed file adopts which import Resend listed. */
#include "reconcile.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define T_MS 1765000000000LL /* 2025-12-06T05:46:40Z */

static struct resend_listed_import item(const char *id, const char *status, int64_t total,
					const char *created_at)
{
	struct resend_listed_import x = {0};

	snprintf(x.id, sizeof(x.id), "%s", id);
	snprintf(x.import.status, sizeof(x.import.status), "%s", status);
	x.import.state = strcmp(status, "completed") == 0 ? RESEND_IMPORT_COMPLETED
			 : strcmp(status, "failed") == 0  ? RESEND_IMPORT_FAILED
							  : RESEND_IMPORT_IN_PROGRESS;
	x.import.has_counts = total >= 0;
	x.import.total = total;
	snprintf(x.import.created_at, sizeof(x.import.created_at), "%s", created_at);
	return x;
}

static struct reconcile_entry entry(int64_t since, uint64_t rows, const char *group)
{
	struct reconcile_entry e = {.since_ms = since, .rows = rows};

	snprintf(e.group, sizeof(e.group), "%s", group);
	return e;
}

/* One candidate of its rows: adopted; another file of other rows: none. */
static void test_single_candidate_adopted(void **state)
{
	struct reconcile_entry a = entry(T_MS, 3, ""), b = entry(T_MS, 5, "");
	struct reconcile_entry *es[] = {&a, &b};
	struct resend_listed_import c[] = {item("imp-a", "completed", 3, "2025-12-06T05:46:41.000Z")};
	bool known[] = {false};
	struct reconcile_result r[2];

	(void)state;
	assert_true(reconcile_decide(es, 2, c, known, 1, r));
	assert_int_equal(r[0].outcome, RECONCILE_ADOPT);
	assert_string_equal(r[0].import_id, "imp-a");
	assert_int_equal(r[0].candidates, 1);
	assert_int_equal(r[1].outcome, RECONCILE_NONE);
	assert_int_equal(r[1].candidates, 0);
}

/* Known to the ledger, made before the attempt (less the skew), or of other rows: no
 * candidate. Made within the skew before it: a candidate. */
static void test_what_is_no_candidate(void **state)
{
	struct reconcile_entry a = entry(T_MS, 3, "");
	struct reconcile_entry *es[] = {&a};
	struct resend_listed_import c[] = {
		item("ours", "completed", 3, "2025-12-06T05:46:45.000Z"),
		item("old", "completed", 3, "2025-12-06T05:40:00.000Z"),
		item("other", "completed", 4, "2025-12-06T05:46:45.000Z"),
		item("skewed", "completed", 3, "2025-12-06 05:45:40.000+00"),
	};
	bool known[] = {true, false, false, false};
	struct reconcile_result r[1];

	(void)state;
	assert_true(reconcile_decide(es, 1, c, known, 4, r));
	assert_int_equal(r[0].outcome, RECONCILE_ADOPT);
	assert_string_equal(r[0].import_id, "skewed");
}

/* Two imports of its rows: several, uploaded again. Two files of the same rows and one import
 * of them: either could be its owner: both several. */
static void test_several(void **state)
{
	struct reconcile_entry a = entry(T_MS, 3, ""), b = entry(T_MS, 3, "");
	struct reconcile_entry *one[] = {&a}, *two[] = {&a, &b};
	struct resend_listed_import c[] = {
		item("x", "completed", 3, "2025-12-06T05:46:41.000Z"),
		item("y", "failed", 3, "2025-12-06T05:46:42.000Z"),
	};
	bool known[] = {false, false};
	struct reconcile_result r[2];

	(void)state;
	assert_true(reconcile_decide(one, 1, c, known, 2, r));
	assert_int_equal(r[0].outcome, RECONCILE_SEVERAL);
	assert_int_equal(r[0].candidates, 2);
	assert_true(reconcile_decide(two, 2, c, known, 1, r));
	assert_int_equal(r[0].outcome, RECONCILE_SEVERAL);
	assert_int_equal(r[1].outcome, RECONCILE_SEVERAL);
	assert_int_equal(r[0].candidates, 2);
}

/* The files of one batch claim its import together: each adopts it. */
static void test_a_batch_adopts_together(void **state)
{
	struct reconcile_entry a = entry(T_MS, 10, "0123456789abcdef"),
			       b = entry(T_MS, 10, "0123456789abcdef");
	struct reconcile_entry *es[] = {&a, &b};
	struct resend_listed_import c[] = {item("batch", "completed", 10, "2025-12-06T05:46:41Z")};
	bool known[] = {false};
	struct reconcile_result r[2];

	(void)state;
	assert_true(reconcile_decide(es, 2, c, known, 1, r));
	assert_int_equal(r[0].outcome, RECONCILE_ADOPT);
	assert_int_equal(r[1].outcome, RECONCILE_ADOPT);
	assert_string_equal(r[1].import_id, "batch");
}

/* A candidate still running (no counts yet): not decided; known ones may run. */
static void test_running_candidate_waits(void **state)
{
	struct reconcile_entry a = entry(T_MS, 3, "");
	struct reconcile_entry *es[] = {&a};
	struct resend_listed_import c[] = {item("x", "in_progress", -1, "2025-12-06T05:46:41Z")};
	bool unknown[] = {false}, known[] = {true};
	struct reconcile_result r[1];

	(void)state;
	assert_false(reconcile_decide(es, 1, c, unknown, 1, r));
	assert_true(reconcile_decide(es, 1, c, known, 1, r));
	assert_int_equal(r[0].outcome, RECONCILE_NONE);
}

static void test_time_parse(void **state)
{
	(void)state;
	assert_int_equal(resend_time_ms("2025-12-06T05:46:40.000Z"), T_MS);
	assert_int_equal(resend_time_ms("2025-12-06 05:46:40.5+00"), T_MS + 500);
	assert_int_equal(resend_time_ms("1970-01-01T00:00:00Z"), 0);
	assert_int_equal(resend_time_ms("2024-02-29T00:00:00Z"), 1709164800000LL);
	assert_int_equal(resend_time_ms("2025-12-06T05:46:40+02:00"), -1);
	assert_int_equal(resend_time_ms("yesterday"), -1);
	assert_int_equal(resend_time_ms(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_candidate_adopted),
		cmocka_unit_test(test_what_is_no_candidate),
		cmocka_unit_test(test_several),
		cmocka_unit_test(test_a_batch_adopts_together),
		cmocka_unit_test(test_running_candidate_waits),
		cmocka_unit_test(test_time_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
