/* batch.c: which waiting file may join a forming batch (header, emails, caps, the files passed
 * over), and the description its files' reports share. */
#include "batch.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* A checked one-part file: HEADER bytes of header, ROWS rows of BODY bytes, emails E. */
struct file {
	struct normalize n;
	struct normalize_part part;
	uint64_t emails[16];
};

static void make(struct file *f, uint64_t header_hash, uint64_t rows, uint64_t body,
		 const uint64_t *emails, size_t n_emails)
{
	memset(f, 0, sizeof(*f));
	f->part = (struct normalize_part){.offset = 0, .bytes = 17 + body, .rows = rows};
	f->n.parts = &f->part;
	f->n.n_parts = 1;
	f->n.header_len = 17;
	f->n.header_hash = header_hash;
	f->n.rows_uploaded = rows;
	f->n.ends_with_newline = true;
	if (n_emails) /* UBSan: no memcpy from NULL, even of nothing */
		memcpy(f->emails, emails, n_emails * sizeof(*emails));
	f->n.emails = f->emails;
	f->n.n_emails = n_emails;
}

static struct config_settings settings(uint64_t files, uint64_t rows, uint64_t bytes)
{
	return (struct config_settings){.coalesce = CONFIG_COALESCE_AUTO,
					.coalesce_max_files = files,
					.coalesce_max_rows = rows,
					.max_upload_bytes = bytes};
}

static void test_joins_same_header_disjoint_emails(void **state)
{
	struct config_settings st = settings(10, 1000, 1 << 20);
	struct batch_former f;
	struct file a, b, c, d;

	(void)state;
	make(&a, 7, 2, 40, (uint64_t[]){1, 2}, 2);
	make(&b, 7, 2, 40, (uint64_t[]){3, 4}, 2);
	make(&c, 8, 1, 20, (uint64_t[]){5}, 1); /* another header */
	make(&d, 7, 1, 20, (uint64_t[]){6}, 1);
	assert_true(batch_eligible(&a.n));
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	assert_true(batch_former_offer(&f, &b.n, true));
	assert_false(batch_former_offer(&f, &c.n, true));
	/* Passed over is not the end: D, of A's header, still joins. */
	assert_true(batch_former_offer(&f, &d.n, true));
	assert_int_equal(f.n_files, 3);
	assert_int_equal(f.rows, 5);
	/* The header once, each file's rows. */
	assert_int_equal(f.bytes, 17 + 40 + 40 + 20);
	batch_former_free(&f);
}

/* A repeated email starts the next import; and a file that carries an email of one passed over
 * may not go before it either. */
static void test_email_rules(void **state)
{
	struct config_settings st = settings(10, 1000, 1 << 20);
	struct batch_former f;
	struct file a, b, c, d, e;

	(void)state;
	make(&a, 7, 2, 40, (uint64_t[]){1, 2}, 2);
	make(&b, 7, 2, 40, (uint64_t[]){3, 2}, 2); /* 2 again */
	make(&c, 7, 1, 20, (uint64_t[]){3}, 1);    /* 3 is B's: B was passed over */
	make(&d, 7, 1, 20, (uint64_t[]){0}, 1);    /* the hash 0 is an email like any */
	make(&e, 7, 1, 20, (uint64_t[]){0, 9}, 2);
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	assert_false(batch_former_offer(&f, &b.n, true));
	assert_false(batch_former_offer(&f, &c.n, true));
	assert_true(batch_former_offer(&f, &d.n, true));
	assert_false(batch_former_offer(&f, &e.n, true));
	assert_int_equal(f.n_files, 2);
	batch_former_free(&f);
}

static void test_caps(void **state)
{
	struct batch_former f;
	struct file a, b, c;
	struct config_settings st;

	(void)state;
	make(&a, 7, 2, 40, (uint64_t[]){1}, 1);
	make(&b, 7, 2, 40, (uint64_t[]){2}, 1);
	make(&c, 7, 2, 40, (uint64_t[]){3}, 1);
	/* Files: two at most. */
	st = settings(2, 1000, 1 << 20);
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	assert_true(batch_former_offer(&f, &b.n, true));
	assert_true(batch_former_done(&f));
	assert_false(batch_former_offer(&f, &c.n, true));
	batch_former_free(&f);
	/* Rows: five at most; C does not fit, a smaller one after it would. */
	st = settings(10, 5, 1 << 20);
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	assert_true(batch_former_offer(&f, &b.n, true));
	assert_false(batch_former_offer(&f, &c.n, true));
	assert_false(batch_former_done(&f));
	batch_former_free(&f);
	/* Bytes: the header and two bodies, no more; a body without its line end counts one. */
	st = settings(10, 1000, 17 + 40 + 40);
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	b.n.ends_with_newline = false;
	assert_false(batch_former_offer(&f, &b.n, true));
	make(&b, 7, 2, 40, (uint64_t[]){4}, 1);
	assert_true(batch_former_offer(&f, &b.n, true));
	assert_false(batch_former_offer(&f, &c.n, true));
	batch_former_free(&f);
}

/* A file that may not join (set to go alone) is passed over with its emails; one whose emails
 * are unknown (split, or too many rows) stops the batch: nothing after it may go first. */
static void test_may_not_join_and_unknown(void **state)
{
	struct config_settings st = settings(10, 1000, 1 << 20);
	struct batch_former f;
	struct file a, solo, b, big, c;

	(void)state;
	make(&a, 7, 1, 20, (uint64_t[]){1}, 1);
	make(&solo, 7, 1, 20, (uint64_t[]){2}, 1);
	make(&b, 7, 1, 20, (uint64_t[]){2}, 1);
	make(&big, 7, 1, 20, NULL, 0);
	big.n.emails = NULL;
	make(&c, 7, 1, 20, (uint64_t[]){3}, 1);
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	assert_false(batch_former_offer(&f, &solo.n, false));
	assert_false(batch_former_offer(&f, &b.n, true)); /* its email is the solo file's */
	assert_false(batch_eligible(&big.n));
	assert_false(batch_former_offer(&f, &big.n, true));
	assert_true(batch_former_done(&f));
	assert_false(batch_former_offer(&f, &c.n, true));
	batch_former_free(&f);
}

/* Many emails: the set grows and still answers. */
static void test_many_emails(void **state)
{
	struct config_settings st = settings(10, 100000, 1 << 30);
	struct batch_former f;
	struct file a, b, c;
	uint64_t *many = malloc(50000 * sizeof(*many));

	(void)state;
	for (size_t i = 0; i < 50000; i++)
		many[i] = 0x9e3779b97f4a7c15ull * (i + 1);
	make(&a, 7, 50000, 1000, NULL, 0);
	a.n.emails = many;
	a.n.n_emails = 50000;
	make(&b, 7, 1, 20, (uint64_t[]){0x9e3779b97f4a7c15ull * 31337}, 1);
	make(&c, 7, 1, 20, (uint64_t[]){42}, 1);
	assert_int_equal(batch_former_init(&f, &st, &a.n), 0);
	assert_false(batch_former_offer(&f, &b.n, true));
	assert_true(batch_former_offer(&f, &c.n, true));
	batch_former_free(&f);
	free(many);
}

static void test_info_and_id(void **state)
{
	struct batch_info *b = batch_info_new("0123456789abcdef", 12, 2, true), *r;
	char id1[BATCH_ID_LEN + 1], id2[BATCH_ID_LEN + 1];

	(void)state;
	assert_non_null(b);
	assert_int_equal(batch_info_set(b, 0, "a.csv"), 0);
	assert_int_equal(batch_info_set(b, 1, "b.csv"), 0);
	assert_int_equal(batch_info_set(b, 2, "c.csv"), -EINVAL);
	r = batch_info_ref(b);
	batch_info_unref(b);
	assert_string_equal(r->files[1], "b.csv");
	batch_info_unref(r); /* freed: ASan and valgrind see a leak or a double free otherwise */
	b = batch_info_new("x", 1, 3, false);
	assert_null(b->files);
	assert_int_equal(batch_info_set(b, 0, "a"), -EINVAL);
	batch_info_unref(b);
	batch_make_id(id1, "aa", 1000);
	batch_make_id(id2, "aa", 1000);
	assert_int_equal(strlen(id1), BATCH_ID_LEN);
	assert_string_not_equal(id1, id2); /* the same file, the same time: still two batches */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_joins_same_header_disjoint_emails),
		cmocka_unit_test(test_email_rules),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_may_not_join_and_unknown),
		cmocka_unit_test(test_many_emails),
		cmocka_unit_test(test_info_and_id),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
