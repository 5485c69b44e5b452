/* normalize: dialects found, rows checked, copies and rejects written, parts planned. Each test
 * writes a file into a temporary directory, feeds it to a normalizer as the check does (in
 * chunks of a given size, so that characters and rows are cut at every place), and reads what
 * came out. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "normalize.h"

struct run {
	char dir[64];
	int dir_fd;
	struct config_folder folder;
	struct normalize res;
	int r;
	char reason[512];
	char *copy;    /* what would be uploaded, whole (NULL: the original) */
	size_t copy_len;
	char *rejects; /* the rejects file, or NULL */
};

static char *read_fd(int fd, size_t *len)
{
	struct stat st;
	char *b;

	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
	b[st.st_size] = '\0';
	*len = (size_t)st.st_size;
	return b;
}

static void folder_init(struct config_folder *f)
{
	memset(f, 0, sizeof(*f));
	f->name = "news";
	f->column_map.present = true;
	f->column_map.email = "Email";
	f->column_map.first_name = "First Name";
	f->settings.max_upload_bytes = 50 * 1024 * 1024;
	f->settings.max_file_bytes = UINT64_C(1) << 40;
}

/* Writes DATA as the file and normalizes it, feeding CHUNK bytes at a time. */
static void run_chunked(struct run *t, const void *data, size_t len, size_t chunk)
{
	struct normalizer *n;
	size_t first;
	int fd;

	snprintf(t->dir, sizeof(t->dir), "/tmp/rdd-norm-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	t->dir_fd = open(t->dir, O_RDONLY | O_DIRECTORY);
	assert_true(t->dir_fd >= 0);
	fd = openat(t->dir_fd, "x.csv", O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	first = len < NORMALIZE_DETECT_BYTES + 1 ? len : NORMALIZE_DETECT_BYTES + 1;
	assert_int_equal(normalizer_new(&t->folder, len, data, first, first == len, t->dir_fd,
					t->dir_fd, ".rejects-x", &n),
			 0);
	for (size_t off = 0; off < len; off += chunk)
		normalizer_feed(n, (const char *)data + off, len - off < chunk ? len - off : chunk);
	t->r = normalizer_finish(n, fd, NULL, &t->res, t->reason, sizeof(t->reason));
	normalizer_free(n);
	if (t->r == 0)
		t->copy = read_fd(t->res.fd >= 0 ? t->res.fd : fd, &t->copy_len);
	close(fd);
	fd = openat(t->dir_fd, ".rejects-x", O_RDONLY);
	if (fd >= 0) {
		size_t l;

		t->rejects = read_fd(fd, &l);
		close(fd);
	}
}

static void run(struct run *t, const char *text)
{
	run_chunked(t, text, strlen(text), 7);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void run_free(struct run *t)
{
	normalize_clear(&t->res);
	free(t->copy);
	free(t->rejects);
	close(t->dir_fd);
	nftw(t->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* A clean file is uploaded as it is: no copy, one part, the whole file. */
static void test_fast_path(void **state)
{
	struct run t = {0};
	const char *csv = "Email,First Name\r\na@example.com,Ann\r\n\"b@example.com\",\"Bob, Jr\"\r\n";

	(void)state;
	folder_init(&t.folder);
	run(&t, csv);
	assert_int_equal(t.r, 0);
	assert_int_equal(t.res.fd, -1);
	assert_false(t.res.normalized);
	assert_string_equal(t.res.encoding_from, "utf-8");
	assert_null(t.res.bom);
	assert_int_equal(t.res.delimiter, ',');
	assert_int_equal(t.res.rows, 2);
	assert_int_equal(t.res.rows_uploaded, 2);
	assert_int_equal(t.res.n_parts, 1);
	assert_int_equal(t.res.head_bytes, 0);
	assert_int_equal(t.res.parts[0].offset, 0);
	assert_int_equal(t.res.parts[0].bytes, strlen(csv));
	assert_int_equal(t.res.bytes_after, strlen(csv));
	assert_null(t.rejects);
	run_free(&t);
}

/* Excel in a European locale: windows-1252 with ';'. */
static void test_windows_1252_semicolon(void **state)
{
	struct run t = {0};
	/* "M\xfcller" is Müller, "\x8aimon" is Šimon (0x8a is Š in windows-1252 only), 0x80 is €. */
	const char *csv = "Email;First Name;Note\r\nm@example.com;M\xfcller;10 \x80\r\n"
			  "s@example.com;\x8aimon;\"a;b\"\r\n";

	(void)state;
	folder_init(&t.folder);
	run(&t, csv);
	assert_int_equal(t.r, 0);
	assert_true(t.res.normalized);
	assert_true(t.res.fd >= 0);
	assert_string_equal(t.res.encoding_from, "windows-1252");
	assert_int_equal(t.res.delimiter, ';');
	assert_string_equal(t.copy, "Email,First Name,Note\nm@example.com,M\xc3\xbcller,10 \xe2\x82\xac\n"
				    "s@example.com,\xc5\xa0imon,a;b\n");
	assert_int_equal(t.res.bytes_after, strlen(t.copy));
	assert_int_equal(t.res.bytes_before, strlen(csv));
	run_free(&t);
}

/* Excel's UTF-8 with a byte-order mark and CRLF; and a sep= line. */
static void test_bom_and_sep_line(void **state)
{
	struct run t = {0};

	(void)state;
	folder_init(&t.folder);
	run(&t, "\xef\xbb\xbfsep=;\r\nEmail;First Name\r\na@example.com;\xc3\x89lodie\r\n");
	assert_int_equal(t.r, 0);
	assert_string_equal(t.res.bom, "utf-8");
	assert_true(t.res.sep_line);
	assert_int_equal(t.res.delimiter, ';');
	assert_string_equal(t.copy, "Email,First Name\na@example.com,\xc3\x89lodie\n");
	run_free(&t);
}

/* Excel's "Unicode text": UTF-16LE with a byte-order mark, tab-separated. */
static void test_utf16le_tabs(void **state)
{
	struct run t = {0};
	const char *text = "Email\tFirst Name\r\na@example.com\tZo\xc3\xab\r\n";
	unsigned char buf[256];
	size_t n = 0;

	(void)state;
	buf[n++] = 0xff;
	buf[n++] = 0xfe;
	/* ASCII and U+00EB (ë) only: one unit each. */
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if (*p == 0xc3) {
			buf[n++] = (unsigned char)(0xc0 | (p[1] & 0x3f));
			buf[n++] = 0;
			p++;
			continue;
		}
		buf[n++] = *p;
		buf[n++] = 0;
	}
	folder_init(&t.folder);
	run_chunked(&t, buf, n, 3);
	assert_int_equal(t.r, 0);
	assert_string_equal(t.res.bom, "utf-16le");
	assert_string_equal(t.res.encoding_from, "utf-16le");
	assert_int_equal(t.res.delimiter, '\t');
	assert_string_equal(t.copy, "Email,First Name\na@example.com,Zo\xc3\xab\n");
	run_free(&t);
}

/* Quoted newlines, trailing delimiters, blank lines at the end, a relaxed header. */
static void test_shapes(void **state)
{
	struct run t = {0};

	(void)state;
	folder_init(&t.folder);
	run(&t, "Email;First Name;\na@example.com;\"Ann\nMarie\";\nb@example.com;Bob;\n\n\n");
	assert_int_equal(t.r, 0);
	assert_string_equal(t.copy, "Email,First Name\na@example.com,\"Ann\nMarie\"\n"
				    "b@example.com,Bob\n");
	assert_int_equal(t.res.rows, 2);
	run_free(&t);

	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	run(&t, " email ,FIRST NAME\na@example.com,Ann\n");
	assert_int_equal(t.r, -ENOENT);
	assert_non_null(strstr(t.reason, "lacks columns 'Email'"));
	run_free(&t);

	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	t.folder.settings.csv.header = CONFIG_HEADER_RELAXED;
	run(&t, " email ,FIRST NAME\na@example.com,Ann\n");
	assert_int_equal(t.r, 0);
	assert_true(t.res.normalized);
	assert_int_equal(t.res.n_renamed, 2);
	assert_string_equal(t.res.renamed_from[0], " email ");
	assert_string_equal(t.res.renamed_to[0], "Email");
	assert_string_equal(t.copy, "Email,First Name\na@example.com,Ann\n");
	run_free(&t);
}

static const char *rejects_csv =
	"Email,First Name\n"
	"a@example.com,Ann\n"
	"b@example.com,Bob,extra\n"
	",Nobody\n"
	"not-an-address,Cy\n"
	" A@Example.com ,Ann again\n"
	"d@example.com,Dee\n";

static const char *rejects_expected =
	"line,reason,row\n"
	"3,\"wrong field count: 3 fields, the header has 2\",\"b@example.com,Bob,extra\"\n"
	"4,empty email,\",Nobody\"\n"
	"5,invalid email 'not-an-address': no '@',\"not-an-address,Cy\"\n"
	"6,email repeated: first on line 2,\" A@Example.com ,Ann again\"\n";

static void test_rejects_drop(void **state)
{
	struct run t = {0};

	(void)state;
	folder_init(&t.folder);
	run(&t, rejects_csv);
	assert_int_equal(t.r, 0);
	assert_int_equal(t.res.rows, 6);
	assert_int_equal(t.res.rows_rejected, 4);
	assert_int_equal(t.res.rows_uploaded, 2);
	assert_int_equal(t.res.rejected[NORMALIZE_WRONG_FIELD_COUNT], 1);
	assert_int_equal(t.res.rejected[NORMALIZE_EMPTY_EMAIL], 1);
	assert_int_equal(t.res.rejected[NORMALIZE_INVALID_EMAIL], 1);
	assert_int_equal(t.res.rejected[NORMALIZE_REPEATED_EMAIL], 1);
	assert_true(t.res.rejects_written);
	assert_string_equal(t.copy, "Email,First Name\na@example.com,Ann\nd@example.com,Dee\n");
	assert_string_equal(t.rejects, rejects_expected);
	run_free(&t);
}

static void test_rejects_import_and_fail(void **state)
{
	struct run t = {0};

	(void)state;
	folder_init(&t.folder);
	t.folder.settings.invalid_rows = CONFIG_INVALID_ROWS_IMPORT;
	run(&t, rejects_csv);
	assert_int_equal(t.r, 0);
	assert_int_equal(t.res.rows_uploaded, 6);
	assert_string_equal(t.rejects, rejects_expected);
	assert_string_equal(t.copy, "Email,First Name\na@example.com,Ann\nb@example.com,Bob,extra\n"
				    ",Nobody\nnot-an-address,Cy\nA@Example.com,Ann again\n"
				    "d@example.com,Dee\n");
	run_free(&t);

	/* Rows that are only rejected, not malformed, keep a clean file on the fast path. */
	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	t.folder.settings.invalid_rows = CONFIG_INVALID_ROWS_IMPORT;
	run(&t, "Email,First Name\na@example.com,Ann\nnope,Bob\nA@example.com,Ann\n");
	assert_int_equal(t.r, 0);
	assert_false(t.res.normalized);
	assert_int_equal(t.res.n_parts, 1);
	assert_int_equal(t.res.parts[0].bytes, t.copy_len);
	assert_int_equal(t.res.rows_uploaded, 3);
	assert_int_equal(t.res.rows_rejected, 2);
	assert_string_equal(t.rejects, "line,reason,row\n3,invalid email 'nope': no '@',\"nope,Bob\"\n"
				       "4,email repeated: first on line 2,\"A@example.com,Ann\"\n");
	run_free(&t);

	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	t.folder.settings.invalid_rows = CONFIG_INVALID_ROWS_FAIL_FILE;
	run(&t, rejects_csv);
	assert_int_equal(t.r, -EBADMSG);
	assert_string_equal(t.reason, "4 of 6 rows rejected (1 with a wrong field count, 1 with an "
				      "empty email, 1 with an invalid email, 1 repeating an email) "
				      "and invalid_rows is fail_file; they are listed in the rejects "
				      "file");
	assert_string_equal(t.rejects, rejects_expected);
	run_free(&t);
}

static void test_no_rows(void **state)
{
	struct run t = {0};

	(void)state;
	folder_init(&t.folder);
	run(&t, "Email,First Name\r\n\r\n");
	assert_int_equal(t.r, -ENODATA);
	assert_string_equal(t.reason, "no rows: the file has a header but no data rows");
	run_free(&t);

	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	run(&t, "Email,First Name\nnope,A\n");
	assert_int_equal(t.r, -ENODATA);
	assert_string_equal(t.reason, "no rows left to import: its only row was rejected");
	assert_non_null(t.rejects);
	run_free(&t);
}

static void test_unusable(void **state)
{
	struct run t = {0};

	(void)state;
	folder_init(&t.folder);
	run_chunked(&t, "Email,First Name\na@example.com,A\0nn\n", 35, 4);
	assert_int_equal(t.r, -EILSEQ);
	assert_non_null(strstr(t.reason, "line 2, column 16: a NUL byte"));
	run_free(&t);

	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	run_chunked(&t, "PK\x03\x04\x14\0\0\0", 8, 8);
	assert_int_equal(t.r, -EILSEQ);
	assert_non_null(strstr(t.reason, "line 1, column 3: control character 0x03"));
	run_free(&t);

	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	run(&t, "Email,First Name\na@example.com,Ann\nb@example.com,\"Bob\nc@example.com,Cy\n");
	assert_int_equal(t.r, -EBADMSG);
	assert_string_equal(t.reason, "line 3, column 15: a quoted field is never closed: the file "
				      "ends inside it");
	run_free(&t);

	/* windows-1252 read as ISO-8859-1: 0x8a (Š) is a C1 control there. */
	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	t.folder.settings.csv.encoding = CONFIG_ENCODING_ISO_8859_1;
	run(&t, "Email,First Name\na@example.com,\x8aimon\n");
	assert_int_equal(t.r, -EILSEQ);
	assert_string_equal(t.reason, "line 2, column 15: control character U+008A: not text (is the "
				      "file windows-1252 rather than iso-8859?)");
	assert_int_equal(t.res.bytes_after, 0);
	assert_int_equal(t.res.rows_uploaded, 0);
	run_free(&t);

	/* UTF-8, then a byte that is not: two encodings in one file. */
	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	run(&t, "Email,First Name\na@example.com,M\xc3\xbcller\nb@example.com,M\xfcller\n");
	assert_int_equal(t.r, -EILSEQ);
	assert_string_equal(t.reason, "line 3, column 16: byte 0xfc is not UTF-8, though UTF-8 "
				      "characters come before it: the file mixes encodings; fix it, or "
				      "set csv.encoding");
	run_free(&t);

	/* A byte-order mark that says otherwise than the configuration. */
	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	t.folder.settings.csv.encoding = CONFIG_ENCODING_WINDOWS_1252;
	run(&t, "\xef\xbb\xbf" "Email,First Name\na@example.com,Ann\n");
	assert_int_equal(t.r, -EILSEQ);
	assert_non_null(strstr(t.reason, "starts with a utf-8 byte-order mark, but csv.encoding is "
					 "windows-1252"));
	run_free(&t);
}

/* Builds N rows "user<i>@example.com,Name <i>" after a header, in a malloc'd buffer. */
static char *make_rows(size_t n, size_t *len, const char *sep, const char *name_suffix)
{
	size_t cap = 64 + n * 64, l = 0;
	char *b = malloc(cap);

	assert_non_null(b);
	l += (size_t)sprintf(b, "Email%sFirst Name\n", sep);
	for (size_t i = 0; i < n; i++)
		l += (size_t)sprintf(b + l, "user%zu@example.com%sName %zu%s\n", i, sep, i,
				     name_suffix);
	*len = l;
	return b;
}

/* Over max_upload_bytes: parts on row boundaries, each with the header, together every row
 * once; from the original (fast path) and from a copy. */
static void check_parts(struct run *t, size_t n_rows, const char *header)
{
	size_t hl = strlen(header), rows = 0;

	assert_true(t->res.n_parts > 1);
	assert_int_equal(t->res.head_bytes, hl);
	assert_memory_equal(t->copy, header, hl);
	for (size_t i = 0; i < t->res.n_parts; i++) {
		const struct normalize_part *p = &t->res.parts[i];
		size_t nl = 0;

		assert_true(hl + p->bytes <= t->folder.settings.max_upload_bytes);
		assert_true(p->offset + p->bytes <= t->copy_len);
		for (size_t k = 0; k < p->bytes; k++)
			nl += t->copy[p->offset + k] == '\n';
		assert_int_equal(nl, p->rows);
		assert_int_equal(t->copy[p->offset + p->bytes - 1], '\n');
		if (i > 0)
			assert_int_equal(p->offset, t->res.parts[i - 1].offset +
							    t->res.parts[i - 1].bytes);
		rows += p->rows;
	}
	assert_int_equal(t->res.parts[0].offset, hl);
	assert_int_equal(t->res.parts[t->res.n_parts - 1].offset +
				 t->res.parts[t->res.n_parts - 1].bytes,
			 t->copy_len);
	assert_int_equal(rows, n_rows);
}

static void test_parts(void **state)
{
	struct run t = {0};
	size_t len;
	char *csv = make_rows(3000, &len, ",", "");

	(void)state;
	folder_init(&t.folder);
	t.folder.settings.max_upload_bytes = 4096;
	run_chunked(&t, csv, len, 1000);
	assert_int_equal(t.r, 0);
	assert_false(t.res.normalized);
	check_parts(&t, 3000, "Email,First Name\n");
	run_free(&t);
	free(csv);

	memset(&t, 0, sizeof(t));
	csv = make_rows(3000, &len, ";", " M\xfcller");
	folder_init(&t.folder);
	t.folder.settings.max_upload_bytes = 4096;
	run_chunked(&t, csv, len, 999);
	assert_int_equal(t.r, 0);
	assert_true(t.res.normalized);
	check_parts(&t, 3000, "Email,First Name\n");
	assert_non_null(strstr(t.copy, "Name 2999 M\xc3\xbcller\n"));
	run_free(&t);
	free(csv);

	/* A row that cannot fit in one upload. */
	memset(&t, 0, sizeof(t));
	folder_init(&t.folder);
	t.folder.settings.max_upload_bytes = 40;
	run(&t, "Email,First Name\na@example.com,Ann\nb@example.com,A very long name indeed\n");
	assert_int_equal(t.r, -EFBIG);
	assert_non_null(strstr(t.reason, "line 3: the row is 38 bytes; with the header (17 bytes) it "
					 "does not fit"));
	run_free(&t);
}

/* Many rows: the emails spill to temporary files, and repeats are still all found. Invalid
 * UTF-8 long after the sample makes it windows-1252 after all. */
static void test_many_rows(void **state)
{
	struct run t = {0};
	size_t len, n = 200000;
	char *csv = make_rows(n, &len, ",", "");
	char *big = malloc(len + 200);
	size_t l;

	(void)state;
	memcpy(big, csv, len);
	l = len;
	l += (size_t)sprintf(big + l, "USER17@example.com,Again\nuser199999@example.com,Again\n");
	l += (size_t)sprintf(big + l, "z@example.com,M\xfcller\n");
	folder_init(&t.folder);
	run_chunked(&t, big, l, 300000);
	assert_int_equal(t.r, 0);
	assert_string_equal(t.res.encoding_from, "windows-1252");
	assert_int_equal(t.res.rejected[NORMALIZE_REPEATED_EMAIL], 2);
	assert_int_equal(t.res.rows_uploaded, n + 1);
	assert_non_null(strstr(t.rejects, "200002,email repeated: first on line 19,"));
	assert_non_null(strstr(t.rejects, "200003,email repeated: first on line 200001,"));
	assert_non_null(strstr(t.copy, "z@example.com,M\xc3\xbcller\n"));
	run_free(&t);
	free(csv);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fast_path),
		cmocka_unit_test(test_windows_1252_semicolon),
		cmocka_unit_test(test_bom_and_sep_line),
		cmocka_unit_test(test_utf16le_tabs),
		cmocka_unit_test(test_shapes),
		cmocka_unit_test(test_rejects_drop),
		cmocka_unit_test(test_rejects_import_and_fail),
		cmocka_unit_test(test_no_rows),
		cmocka_unit_test(test_unusable),
		cmocka_unit_test(test_parts),
		cmocka_unit_test(test_many_rows),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
