/* csvhead: reading the header row of the files users drop, and the column check. */
#include "csvhead.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct tmpdir {
	char path[64];
};

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup_tmp(void **state)
{
	struct tmpdir *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -1;
	strcpy(t->path, "/tmp/rdd-csvhead-XXXXXX");
	if (mkdtemp(t->path) == NULL) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int
teardown_tmp(void **state)
{
	struct tmpdir *t = *state;
	int r = nftw(t->path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);

	free(t);
	return r;
}

static const char *
fixtures_dir(void)
{
	const char *d = getenv("RDD_FIXTURES");

	return d != NULL ? d : "tests/fixtures";
}

static int
open_fixture(const char *name)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/csv/%s", fixtures_dir(), name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail_msg("cannot open fixture %s: %s (is RDD_FIXTURES set?)", path, strerror(errno));
	return fd;
}

/* Writes LEN bytes to a file in the test's directory and opens it for reading. */
static int
open_generated(void **state, const char *content, size_t len)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/gen.csv", t->path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void
assert_fields(const struct csvhead *h, size_t n, ...)
{
	va_list ap;
	size_t i;

	assert_int_equal(h->n_fields, n);
	va_start(ap, n);
	for (i = 0; i < n; i++)
		assert_string_equal(h->fields[i], va_arg(ap, const char *));
	va_end(ap);
}

/* Reads a fixture expecting success. */
static void
read_fixture(const char *name, struct csvhead *h)
{
	char err[256] = "";
	int fd = open_fixture(name);
	int r = csvhead_read(fd, h, err, sizeof(err));

	if (r != 0)
		fail_msg("%s: %d %s", name, r, err);
	close(fd);
}

/* Reads a fixture expecting an error; returns the message. */
static int
read_fixture_err(const char *name, char *err, size_t errsz)
{
	struct csvhead h = { 0 };
	int fd = open_fixture(name);
	int r = csvhead_read(fd, &h, err, errsz);

	close(fd);
	assert_null(h.fields); /* not written on failure */
	assert_int_equal(h.n_fields, 0);
	return r;
}

static void
test_simple(void **state)
{
	struct csvhead h;

	(void)state;
	read_fixture("simple.csv", &h);
	assert_fields(&h, 3, "email", "first_name", "last_name");
	csvhead_free(&h);
	assert_null(h.fields);
	csvhead_free(&h); /* twice, and NULL, are harmless */
	csvhead_free(NULL);
}

static void
test_bom_removed(void **state)
{
	struct csvhead h;

	(void)state;
	read_fixture("bom.csv", &h);
	assert_fields(&h, 2, "Email", "Name");
	csvhead_free(&h);
	/* A BOM before a quoted first field: the quote still opens the field. */
	read_fixture("bom_quoted.csv", &h);
	assert_fields(&h, 2, "Email", "Name");
	csvhead_free(&h);
}

static void
test_quoted_fields(void **state)
{
	struct csvhead h;

	(void)state;
	read_fixture("quoted.csv", &h);
	assert_fields(&h, 5, "E-mail", "Last, First", "The \"best\" plan", "two\nlines", "Plain");
	csvhead_free(&h);
}

static void
test_crlf_and_lf(void **state)
{
	struct csvhead h;

	(void)state;
	read_fixture("crlf.csv", &h);
	assert_fields(&h, 3, "Email", "First Name", "Last Name"); /* no stray \r */
	csvhead_free(&h);
	read_fixture("lf.csv", &h);
	assert_fields(&h, 3, "Email", "First Name", "Last Name");
	csvhead_free(&h);
}

static void
test_no_trailing_newline(void **state)
{
	struct csvhead h;

	(void)state;
	read_fixture("noeol.csv", &h);
	assert_fields(&h, 2, "email", "first_name");
	csvhead_free(&h);
}

static void
test_empty_file(void **state)
{
	char err[128];

	(void)state;
	assert_int_equal(read_fixture_err("empty.csv", err, sizeof(err)), -ENODATA);
	assert_string_equal(err, "the file is empty");
}

static void
test_bom_only(void **state)
{
	char err[128];

	(void)state;
	assert_int_equal(read_fixture_err("bom_only.csv", err, sizeof(err)), -ENODATA);
	assert_string_equal(err, "the file has no CSV header row");
}

static void
test_unterminated_quote(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(read_fixture_err("unterminated.csv", err, sizeof(err)), -EILSEQ);
	assert_string_equal(err, "CSV header is malformed: field 2 opens a quote ('\"') that is "
				 "never closed");
}

static void
test_spaces_preserved(void **state)
{
	struct csvhead h;

	(void)state;
	read_fixture("spaces.csv", &h);
	assert_fields(&h, 4, " Email ", "First Name", "  Last Name\t", "  Quoted  ");
	csvhead_free(&h);
}

static void
test_utf16_refused(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(read_fixture_err("utf16.csv", err, sizeof(err)), -EILSEQ);
	assert_non_null(strstr(err, "UTF-16"));
}

static void
test_offset_unchanged(void **state)
{
	struct csvhead h;
	char err[128];
	int fd = open_fixture("crlf.csv");

	(void)state;
	assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), 0);
	/* Read from offset 0 all the same, and the offset is where the caller left it. */
	assert_string_equal(h.fields[0], "Email");
	assert_int_equal(lseek(fd, 0, SEEK_CUR), 7);
	csvhead_free(&h);
	close(fd);
}

/* A header of LEN bytes: "email," then one long column name, then TERM. */
static char *
make_long_header(size_t len, const char *term, size_t *ret_size)
{
	const char *rows = "x@example.com,y\n";
	size_t tl = strlen(term), size = len + strlen(rows);
	char *s = malloc(size + 1);

	assert_non_null(s);
	assert_true(len > 6 + tl);
	memcpy(s, "email,", 6);
	memset(s + 6, 'n', len - 6 - tl);
	memcpy(s + len - tl, term, tl);
	memcpy(s + len, rows, strlen(rows) + 1);
	*ret_size = tl > 0 ? size : len;
	return s;
}

static void
test_header_too_long(void **state)
{
	struct csvhead h = { 0 };
	char err[256];
	size_t size;
	char *s = make_long_header(CSVHEAD_MAX_BYTES + 1, "\n", &size);
	int fd = open_generated(state, s, size);

	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "CSV header row is longer than 65536 bytes");
	assert_null(h.fields);
	close(fd);
	free(s);
}

static void
test_header_at_limit(void **state)
{
	struct csvhead h;
	char err[256];
	size_t size;
	char *s;
	int fd;

	/* Line end included, the header is exactly the limit. */
	s = make_long_header(CSVHEAD_MAX_BYTES, "\n", &size);
	fd = open_generated(state, s, size);
	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), 0);
	assert_int_equal(h.n_fields, 2);
	assert_int_equal(strlen(h.fields[1]), CSVHEAD_MAX_BYTES - 7);
	csvhead_free(&h);
	close(fd);
	free(s);

	/* A whole file of exactly the limit, no line end. */
	s = make_long_header(CSVHEAD_MAX_BYTES, "", &size);
	assert_int_equal(size, CSVHEAD_MAX_BYTES);
	fd = open_generated(state, s, size);
	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), 0);
	assert_int_equal(strlen(h.fields[1]), CSVHEAD_MAX_BYTES - 6);
	csvhead_free(&h);
	close(fd);
	free(s);
}

/* From bytes already read (the check hashes the file and parses the header from that first
 * read): the same answers as from a descriptor, given the whole file or more than the limit. */
static void
test_parse_from_bytes(void **state)
{
	struct csvhead h;
	char err[256];
	size_t size;
	char *s;

	(void)state;
	/* The start of a bigger file: the header has ended, what follows is not needed. */
	s = make_long_header(CSVHEAD_MAX_BYTES + 1, "\n", &size);
	assert_int_equal(csvhead_parse("Email,Name\na@b.c,A\nx", 22, false, &h, err, sizeof(err)), 0);
	assert_int_equal(h.n_fields, 2);
	assert_string_equal(h.fields[0], "Email");
	csvhead_free(&h);
	/* A header that does not end within the limit, from a bigger file. */
	assert_int_equal(csvhead_parse(s, CSVHEAD_MAX_BYTES + 1, false, &h, err, sizeof(err)),
			 -E2BIG);
	assert_string_equal(err, "CSV header row is longer than 65536 bytes");
	free(s);
	/* A whole file of exactly the limit, no line end. */
	s = make_long_header(CSVHEAD_MAX_BYTES, "", &size);
	assert_int_equal(csvhead_parse(s, size, true, &h, err, sizeof(err)), 0);
	assert_int_equal(strlen(h.fields[1]), CSVHEAD_MAX_BYTES - 6);
	csvhead_free(&h);
	/* The same bytes, but more of the file follows: too long. */
	assert_int_equal(csvhead_parse(s, size, false, &h, err, sizeof(err)), -E2BIG);
	free(s);
	/* BOM, and an empty whole file. */
	assert_int_equal(csvhead_parse("\xef\xbb\xbf" "email\n", 9, true, &h, err, sizeof(err)), 0);
	assert_string_equal(h.fields[0], "email");
	csvhead_free(&h);
	assert_int_equal(csvhead_parse("", 0, true, &h, err, sizeof(err)), -ENODATA);
	assert_string_equal(err, "the file is empty");
}

static void
test_unterminated_quote_in_big_file(void **state)
{
	struct csvhead h = { 0 };
	char err[256];
	size_t len = CSVHEAD_MAX_BYTES * 2;
	char *s = malloc(len);
	int fd;

	assert_non_null(s);
	memset(s, 'a', len);
	memcpy(s, "email,\"name\n", 12);
	fd = open_generated(state, s, len);
	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "CSV header row is longer than 65536 bytes (it is still inside a "
				 "quoted field: is a closing '\"' missing?)");
	close(fd);
	free(s);
}

static void
test_split_across_chunks(void **state)
{
	struct csvhead h;
	char err[128];
	char s[8192];
	size_t pad, n;
	int fd;

	/* "email,<pad>,"a""b",x\r\n": the doubled quote straddles byte 4096, the first read's
	 * end; a second header puts CR and LF on either side of it. */
	pad = 4096 - strlen("email,") - 1 - strlen("\"a\"");
	memcpy(s, "email,", 6);
	memset(s + 6, 'p', pad);
	n = 6 + pad;
	n += (size_t)sprintf(s + n, ",\"a\"\"b\",x\r\nrow,2\n");
	assert_int_equal(s[4095], '"');
	assert_int_equal(s[4096], '"');
	fd = open_generated(state, s, n);
	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), 0);
	assert_int_equal(h.n_fields, 4);
	assert_int_equal(strlen(h.fields[1]), pad);
	assert_string_equal(h.fields[2], "a\"b");
	assert_string_equal(h.fields[3], "x");
	csvhead_free(&h);
	close(fd);

	pad = 4095 - strlen("email,");
	memcpy(s, "email,", 6);
	memset(s + 6, 'q', pad);
	memcpy(s + 4095, "\r\nrow\r\n", 7);
	fd = open_generated(state, s, 4095 + 7);
	assert_int_equal(csvhead_read(fd, &h, err, sizeof(err)), 0);
	assert_int_equal(h.n_fields, 2);
	assert_int_equal(strlen(h.fields[1]), pad);
	assert_int_equal(h.fields[1][pad - 1], 'q');
	csvhead_free(&h);
	close(fd);
}

static void
test_read_error(void **state)
{
	struct csvhead h = { 0 };
	char err[128];

	(void)state;
	assert_int_equal(csvhead_read(-1, &h, err, sizeof(err)), -EBADF);
	assert_string_equal(err, "cannot read the file: Bad file descriptor");
	assert_null(h.fields);
}

/* csvhead_check */

static struct csvhead
make_head(size_t n, char **fields)
{
	struct csvhead h = { fields, n };

	return h;
}

static struct config_property plan_props[] = {
	{ "plan", "Plan", CONFIG_PROP_STRING },
	{ "seats", "Seats", CONFIG_PROP_NUMBER },
};

static struct config_column_map
full_map(void)
{
	struct config_column_map map = {
		.present = true,
		.email = "Email",
		.first_name = "First Name",
		.last_name = "Last Name",
		.unsubscribed = "Unsubscribed",
		.properties = plan_props,
		.n_properties = 2,
	};

	return map;
}

static void
test_check_full_map(void **state)
{
	char *f[] = { "Seats", "Email", "First Name", "Last Name", "Unsubscribed", "Plan", "Extra" };
	struct csvhead h = make_head(7, f);
	struct config_column_map map = full_map();
	char err[256] = "untouched";

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), 0);
	assert_string_equal(err, "untouched");
}

static void
test_check_missing_property(void **state)
{
	char *f[] = { "Email", "First Name", "Last Name", "Unsubscribed", "Seats" };
	struct csvhead h = make_head(5, f);
	struct config_column_map map = full_map();
	char err[512];

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CSV header lacks column 'Plan' (column_map.properties.plan); "
				 "header has: 'Email', 'First Name', 'Last Name', 'Unsubscribed', "
				 "'Seats'");
}

static void
test_check_several_missing(void **state)
{
	char *f[] = { "E-mail", "First Name", "Plan" };
	struct csvhead h = make_head(3, f);
	struct config_column_map map = full_map();
	char err[512];

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CSV header lacks columns 'Email' (column_map.email), 'Last Name' "
				 "(column_map.last_name), 'Unsubscribed' (column_map.unsubscribed), "
				 "'Seats' (column_map.properties.seats); header has: 'E-mail', "
				 "'First Name', 'Plan'");
}

static void
test_check_no_map(void **state)
{
	char *ok[] = { "first_name", "email" };
	char *wrong_case[] = { "Email", "Name" };
	struct csvhead h = make_head(2, ok);
	struct config_column_map map = { .present = false };
	char err[512];

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), 0);

	/* Resend refuses "Email" without a map ("CSV missing required email column"). */
	h = make_head(2, wrong_case);
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CSV header lacks column 'email' (required without a column_map; "
				 "the header has 'Email', names are case-sensitive); header has: "
				 "'Email', 'Name'");
}

static void
test_check_case_sensitive(void **state)
{
	char *f[] = { "EMAIL", "plan" };
	struct csvhead h = make_head(2, f);
	struct config_property prop = { "plan", "Plan", CONFIG_PROP_STRING };
	struct config_column_map map = {
		.present = true, .email = "Email", .properties = &prop, .n_properties = 1
	};
	char err[512];

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CSV header lacks columns 'Email' (column_map.email; the header "
				 "has 'EMAIL', names are case-sensitive), 'Plan' "
				 "(column_map.properties.plan; the header has 'plan', names are "
				 "case-sensitive); header has: 'EMAIL', 'plan'");
}

static void
test_check_map_without_email(void **state)
{
	char *f[] = { "email", "Name" };
	char *g[] = { "Mail", "Name" };
	struct csvhead h = make_head(2, f);
	struct config_column_map map = { .present = true, .first_name = "Name" };
	char err[512];

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), 0);
	h = make_head(2, g);
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CSV header lacks column 'email' (Resend's default while "
				 "column_map.email is not set); header has: 'Mail', 'Name'");
}

static void
test_check_message_escaped_and_bounded(void **state)
{
	char *f[] = { "two\nlines", "it's" };
	struct csvhead h = make_head(2, f);
	struct config_column_map map = { .present = false };
	char err[512], small[24];

	(void)state;
	assert_int_equal(csvhead_check(&h, &map, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "CSV header lacks column 'email' (required without a column_map); "
				 "header has: 'two\\nlines', 'it\\'s'");
	/* A small buffer gets a cut message that says so, and nothing past its end. */
	memset(small, 'Z', sizeof(small));
	assert_int_equal(csvhead_check(&h, &map, small, sizeof(small)), -ENOENT);
	assert_string_equal(small, "CSV header lacks col...");
	/* No buffer at all. */
	assert_int_equal(csvhead_check(&h, &map, NULL, 0), -ENOENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_bom_removed),
		cmocka_unit_test(test_quoted_fields),
		cmocka_unit_test(test_crlf_and_lf),
		cmocka_unit_test(test_no_trailing_newline),
		cmocka_unit_test(test_empty_file),
		cmocka_unit_test(test_bom_only),
		cmocka_unit_test(test_unterminated_quote),
		cmocka_unit_test(test_spaces_preserved),
		cmocka_unit_test(test_utf16_refused),
		cmocka_unit_test(test_offset_unchanged),
		cmocka_unit_test_setup_teardown(test_header_too_long, setup_tmp, teardown_tmp),
		cmocka_unit_test_setup_teardown(test_header_at_limit, setup_tmp, teardown_tmp),
		cmocka_unit_test(test_parse_from_bytes),
		cmocka_unit_test_setup_teardown(test_unterminated_quote_in_big_file, setup_tmp,
						teardown_tmp),
		cmocka_unit_test_setup_teardown(test_split_across_chunks, setup_tmp, teardown_tmp),
		cmocka_unit_test(test_read_error),
		cmocka_unit_test(test_check_full_map),
		cmocka_unit_test(test_check_missing_property),
		cmocka_unit_test(test_check_several_missing),
		cmocka_unit_test(test_check_no_map),
		cmocka_unit_test(test_check_case_sensitive),
		cmocka_unit_test(test_check_map_without_email),
		cmocka_unit_test(test_check_message_escaped_and_bounded),
	};

	return cmocka_run_group_tests_name("csvhead", tests, NULL, NULL);
}
