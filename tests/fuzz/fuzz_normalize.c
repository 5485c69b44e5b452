/* libFuzzer harness for the CSV normalizer: normalizer_new(), normalizer_feed() and
 * normalizer_finish() (src/normalize.c) on a file in a memfd, called as src/precheck.c calls
 * them, under a folder's settings chosen by the input.
 *
 * Input: three bytes of settings, then the file (at most MAX_FILE bytes; more is cut off):
 *   byte 0  bits 0-2  csv.delimiter: 1 ',', 2 ';', 3 '\t', 4 '|', else auto
 *           bits 3-5  csv.encoding: 0 auto, 1 utf-8, 2 windows-1252, 3 iso-8859-1,
 *                     4 iso-8859-15, 5 utf-16, else auto
 *           bit 6     csv.header: 0 exact, 1 relaxed
 *           bit 7     1: no rejects file (REJECTS_NAME NULL, as in a dry run)
 *   byte 1  bits 0-1  invalid_rows: 0 drop, 1 import, 2 fail_file, 3 drop
 *           bits 2-3  column_map: none ("email"), a legacy map (Email, First Name, Last Name,
 *                     Company), email only ("E-mail"), a map without email (so "email")
 *           bits 4-7  max_upload_bytes: 0..7 50 MiB (the default), 8..15 one of 64 ... 4096
 *   byte 2            the feed's chunk size: bit 7 clear, 1 + (bits 0-6): 1..128 bytes;
 *                     set, 1 << (bits 0-3): 1 .. 32 KiB (so characters and rows are cut
 *                     everywhere)
 *
 * What is checked is what normalize.h (and the issue 10 contract) promises:
 * - the return value is 0 or one of the documented negative errnos;
 * - on failure REASON is one non-empty line of valid UTF-8 (it goes to the log and the JSON
 *   report), no copy descriptor is left open, the failure is not "temporary" (nothing here can
 *   fail for the machine) and not "too big for one upload" (-EFBIG) with the 50 MiB default;
 * - a configured delimiter or encoding is the one used, unless a sep= line or a byte-order mark
 *   says otherwise;
 * - on success: at least one part; each upload (head_bytes of the source, then the part) is at
 *   most max_upload_bytes; the parts are contiguous, in order, and cover the source from
 *   head_bytes to its end; the sum of their rows is rows_uploaded, and each part parsed with its
 *   head (libcsv) has exactly its rows; rows_uploaded is rows less the rejected ones (drop) or
 *   all of them (import); bytes_after is what is uploaded; a normalized copy is valid UTF-8,
 *   strict comma CSV, and with invalid_rows drop every data record has the header's field
 *   count; the original is uploaded only on the fast path (UTF-8 without a byte-order mark or
 *   sep= line, commas, the header as it is);
 * - rows_rejected is the sum of rejected[]; the rejects file exists exactly when
 *   rejects_written, which on success is exactly when rows were rejected and there is a rejects
 *   directory; it is strict CSV starting "line,reason,row\n" with one record per rejected row,
 *   in line order, each with a known reason;
 * - no descriptor is leaked (the count in /proc/self/fd), and no memory (ASan's leak check).
 *
 * FUZZ_NORMALIZE_DEBUG set in the environment: what came out is printed on stderr (to read a
 * crash: build/fuzz/tests/fuzz/fuzz_normalize FILE). */
#include "normalize.h"
#include "text.h"

#include "fuzz.h"

#include <csv.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE (64 * 1024)
#define REJECTS_NAME "x.csv" NORMALIZE_REJECTS_SUFFIX

static const char delimiters[8] = {'\0', ',', ';', '\t', '|', '\0', '\0', '\0'};
static const enum config_encoding encodings[8] = {
	CONFIG_ENCODING_AUTO,        CONFIG_ENCODING_UTF8,        CONFIG_ENCODING_WINDOWS_1252,
	CONFIG_ENCODING_ISO_8859_1,  CONFIG_ENCODING_ISO_8859_15, CONFIG_ENCODING_UTF16,
	CONFIG_ENCODING_AUTO,        CONFIG_ENCODING_AUTO};
static const enum config_invalid_rows invalid[4] = {
	CONFIG_INVALID_ROWS_DROP, CONFIG_INVALID_ROWS_IMPORT, CONFIG_INVALID_ROWS_FAIL_FILE,
	CONFIG_INVALID_ROWS_DROP};
static const uint64_t small_limits[8] = {64, 96, 128, 200, 256, 512, 1024, 4096};

/* tests/fixtures/csv/legacy's folder, and the other shapes a map takes. */
static struct config_property props[] = {{"company", "Company", CONFIG_PROP_STRING}};
static const struct config_column_map maps[4] = {
	{.present = false},
	{.present = true,
	 .email = "Email",
	 .first_name = "First Name",
	 .last_name = "Last Name",
	 .properties = props,
	 .n_properties = 1},
	{.present = true, .email = "E-mail"},
	{.present = true, .first_name = "first_name"},
};

static char tmp_path[] = "/tmp/rdd-fuzz-normalize.XXXXXX";
static int tmp_fd = -1;
static int mem_fd = -1;

static void cleanup(void)
{
	if (tmp_fd >= 0) {
		(void)unlinkat(tmp_fd, REJECTS_NAME, 0);
		close(tmp_fd);
		tmp_fd = -1;
	}
	(void)rmdir(tmp_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(mkdtemp(tmp_path));
	tmp_fd = open(tmp_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	FUZZ_CHECK(tmp_fd >= 0);
	mem_fd = memfd_create("fuzz_normalize", MFD_CLOEXEC);
	FUZZ_CHECK(mem_fd >= 0);
	atexit(cleanup);
	return 0;
}

static size_t count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	size_t n = 0;

	FUZZ_CHECK(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void write_all(int fd, const uint8_t *p, size_t len)
{
	size_t done = 0;

	FUZZ_CHECK(ftruncate(fd, 0) == 0);
	while (done < len) {
		ssize_t k = pwrite(fd, p + done, len - done, (off_t)done);

		FUZZ_CHECK(k > 0);
		done += (size_t)k;
	}
}

/* The whole of FD, *LEN bytes, malloc'd. */
static char *read_all(int fd, size_t *len)
{
	struct stat st;
	char *buf;
	size_t done = 0;

	FUZZ_CHECK(fstat(fd, &st) == 0);
	buf = malloc((size_t)st.st_size + 1);
	FUZZ_CHECK(buf);
	while (done < (size_t)st.st_size) {
		ssize_t k = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);

		FUZZ_CHECK(k > 0);
		done += (size_t)k;
	}
	buf[done] = '\0';
	*len = done;
	return buf;
}

static bool valid_utf8(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t k;

		if (s[i] < 0x80) {
			i++;
			continue;
		}
		k = text_utf8_len(s + i, len - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* ---- libcsv re-parses ---------------------------------------------------------------- */

struct reparse {
	size_t records, fields;  /* records so far; fields of the current one */
	size_t head_fields;      /* the first record's */
	bool want_same;          /* every record must have head_fields */
	bool bad_count;
	/* Rejects file: the current record's fields. */
	bool rejects;
	char first[24];
	size_t first_len;
	bool first_numeric;
	char second[32];
	size_t second_len;
	uint64_t prev_line;
	bool bad_rejects;
};

static void rp_field(void *f, size_t len, void *data)
{
	struct reparse *r = data;

	if (r->rejects && r->records > 0) {
		if (r->fields == 0) {
			r->first_numeric = len > 0 && len < sizeof(r->first);
			for (size_t i = 0; i < len && r->first_numeric; i++)
				if (((char *)f)[i] < '0' || ((char *)f)[i] > '9')
					r->first_numeric = false;
			if (r->first_numeric)
				memcpy(r->first, f, len);
			r->first_len = r->first_numeric ? len : 0;
			r->first[r->first_len] = '\0';
		} else if (r->fields == 1) {
			r->second_len = len < sizeof(r->second) - 1 ? len : sizeof(r->second) - 1;
			memcpy(r->second, f, r->second_len);
			r->second[r->second_len] = '\0';
		}
	}
	r->fields++;
}

static bool known_reason(const char *s)
{
	return strncmp(s, "wrong field count: ", 19) == 0 || strcmp(s, "empty email") == 0 ||
	       strncmp(s, "invalid email '", 15) == 0 ||
	       strncmp(s, "email repeated: first on line ", 30) == 0;
}

static void rp_record(int c, void *data)
{
	struct reparse *r = data;

	(void)c;
	if (r->records == 0)
		r->head_fields = r->fields;
	else if (r->want_same && r->fields != r->head_fields)
		r->bad_count = true;
	if (r->rejects && r->records > 0) {
		uint64_t line = r->first_numeric ? strtoull(r->first, NULL, 10) : 0;

		if (r->fields != 3 || !r->first_numeric || line <= r->prev_line || line < 2 ||
		    !known_reason(r->second))
			r->bad_rejects = true;
		r->prev_line = line;
	}
	r->records++;
	r->fields = 0;
}

static int no_space(unsigned char c)
{
	(void)c;
	return 0;
}

/* Parses the LEN bytes of each of the N pieces as one CSV text; false when it is not strict
 * CSV (with STRICT). */
static bool reparse(struct reparse *r, bool strict, const char *const *pieces,
		    const size_t *lens, size_t n)
{
	struct csv_parser p;
	bool ok = true;

	FUZZ_CHECK(csv_init(&p, strict ? CSV_STRICT | CSV_STRICT_FINI : 0) == 0);
	csv_set_space_func(&p, no_space);
	for (size_t i = 0; i < n && ok; i++)
		if (csv_parse(&p, pieces[i], lens[i], rp_field, rp_record, r) != lens[i])
			ok = false;
	if (ok && csv_fini(&p, rp_field, rp_record, r) != 0)
		ok = false;
	csv_free(&p);
	return ok;
}

/* ---- the checks of a result ---------------------------------------------------------- */

static bool documented(int r)
{
	return r == -ENOMEM || r == -EINVAL || r == -EILSEQ || r == -E2BIG || r == -EBADMSG ||
	       r == -ENODATA || r == -ENOENT || r == -EFBIG;
}

static void check_rejects(const struct normalize *res, bool have_dir)
{
	struct stat st;
	bool exists = fstatat(tmp_fd, REJECTS_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0;
	struct reparse rp = {.rejects = true};
	const char *piece;
	size_t len;
	char *text;
	int fd;

	FUZZ_CHECK(exists == res->rejects_written);
	if (!have_dir)
		FUZZ_CHECK(!res->rejects_written);
	if (!exists)
		return;
	FUZZ_CHECK(res->rows_rejected > 0);
	fd = openat(tmp_fd, REJECTS_NAME, O_RDONLY | O_CLOEXEC);
	FUZZ_CHECK(fd >= 0);
	text = read_all(fd, &len);
	close(fd);
	FUZZ_CHECK(len >= 16 && memcmp(text, "line,reason,row\n", 16) == 0);
	FUZZ_CHECK(valid_utf8((unsigned char *)text, len));
	piece = text;
	FUZZ_CHECK(reparse(&rp, true, &piece, &len, 1));
	FUZZ_CHECK(!rp.bad_rejects);
	FUZZ_CHECK(rp.records == 1 + res->rows_rejected);
	free(text);
	FUZZ_CHECK(unlinkat(tmp_fd, REJECTS_NAME, 0) == 0);
}

static void check_success(const struct normalize *res, const struct config_folder *folder,
			  const uint8_t *file, size_t size)
{
	uint64_t limit = folder->settings.max_upload_bytes, rows = 0, uploaded = 0, pos;
	bool drop = res->invalid_rows == CONFIG_INVALID_ROWS_DROP;
	const char *src;
	char *copy = NULL;
	size_t src_len;

	FUZZ_CHECK(res->read && res->encoding_from);
	FUZZ_CHECK(res->rows >= 1 && res->rows_uploaded >= 1);
	FUZZ_CHECK(res->rows_uploaded <= res->rows);
	FUZZ_CHECK(res->bytes_before == size);
	if (res->invalid_rows == CONFIG_INVALID_ROWS_FAIL_FILE)
		FUZZ_CHECK(res->rows_rejected == 0);
	FUZZ_CHECK(res->rows_uploaded == res->rows - (drop ? res->rows_rejected : 0));
	FUZZ_CHECK(res->normalized == (res->fd >= 0));
	if (res->normalized) {
		copy = read_all(res->fd, &src_len);
		src = copy;
	} else {
		/* The fast path: the original as it is. */
		FUZZ_CHECK(!res->bom && !res->sep_line && res->delimiter == ',');
		FUZZ_CHECK(strcmp(res->encoding_from, "utf-8") == 0);
		FUZZ_CHECK(res->n_renamed == 0);
		src = (const char *)file;
		src_len = size;
	}
	if (getenv("FUZZ_NORMALIZE_DEBUG"))
		fprintf(stderr, "upload source (%zu bytes): '%.*s'\n", src_len, (int)src_len, src);
	FUZZ_CHECK(valid_utf8((const unsigned char *)src, src_len));

	FUZZ_CHECK(res->n_parts >= 1 && res->parts);
	if (res->n_parts == 1) {
		FUZZ_CHECK(res->head_bytes == 0);
		FUZZ_CHECK(res->parts[0].offset == 0 && res->parts[0].bytes == src_len);
		FUZZ_CHECK(res->bytes_after == src_len);
	}
	FUZZ_CHECK(res->head_bytes <= src_len);
	pos = res->head_bytes;
	for (size_t i = 0; i < res->n_parts; i++) {
		const struct normalize_part *p = &res->parts[i];
		struct reparse rp = {.want_same = res->normalized && drop};
		const char *pieces[2] = {src, src + p->offset};
		size_t lens[2] = {(size_t)res->head_bytes, (size_t)p->bytes};

		if (res->n_parts > 1) {
			FUZZ_CHECK(res->head_bytes + p->bytes <= limit);
			FUZZ_CHECK(p->offset == pos);
		} else {
			FUZZ_CHECK(p->bytes <= limit);
		}
		FUZZ_CHECK(p->bytes >= 1 && p->rows >= 1);
		FUZZ_CHECK(p->offset + p->bytes <= src_len);
		pos = p->offset + p->bytes;
		rows += p->rows;
		uploaded += res->head_bytes + p->bytes;
		/* Each upload parses as the header and its rows. */
		FUZZ_CHECK(reparse(&rp, res->normalized, pieces, lens, 2) || !res->normalized);
		FUZZ_CHECK(rp.records == 1 + p->rows);
		FUZZ_CHECK(!rp.bad_count);
	}
	FUZZ_CHECK(pos == src_len);
	FUZZ_CHECK(rows == res->rows_uploaded);
	if (res->n_parts > 1)
		FUZZ_CHECK(res->bytes_after == uploaded);
	free(copy);
}

/* What encoding_from says for a configured encoding and no byte-order mark. */
static const char *expected_encoding(const struct config_folder *folder)
{
	switch (folder->settings.csv.encoding) {
	case CONFIG_ENCODING_UTF8:
		return "utf-8";
	case CONFIG_ENCODING_WINDOWS_1252:
		return "windows-1252";
	case CONFIG_ENCODING_ISO_8859_1:
		return "iso-8859-1";
	case CONFIG_ENCODING_ISO_8859_15:
		return "iso-8859-15";
	case CONFIG_ENCODING_UTF16:
		return "utf-16le";
	default:
		return "";
	}
}

/* FUZZ_NORMALIZE_DEBUG set: what came out, on stderr (to read a crash). */
static void debug_dump(int r, const struct normalize *res, const char *reason)
{
	fprintf(stderr, "r=%d (%s) reason='%.*s'\n", r, r ? strerror(-r) : "ok", r ? 512 : 0,
		reason);
	fprintf(stderr, "normalized=%d fd=%d enc=%s bom=%s sep=%d delim=0x%02x rows=%llu "
		"uploaded=%llu rejected=%llu [%llu %llu %llu %llu] rejects_written=%d head=%llu "
		"bytes_before=%llu after=%llu temporary=%d\n",
		res->normalized, res->fd, res->encoding_from ? res->encoding_from : "-",
		res->bom ? res->bom : "-", res->sep_line, (unsigned char)res->delimiter,
		(unsigned long long)res->rows, (unsigned long long)res->rows_uploaded,
		(unsigned long long)res->rows_rejected, (unsigned long long)res->rejected[0],
		(unsigned long long)res->rejected[1], (unsigned long long)res->rejected[2],
		(unsigned long long)res->rejected[3], res->rejects_written,
		(unsigned long long)res->head_bytes, (unsigned long long)res->bytes_before,
		(unsigned long long)res->bytes_after, res->temporary);
	for (size_t i = 0; r == 0 && i < res->n_parts; i++)
		fprintf(stderr, "  part %zu: offset %llu bytes %llu rows %llu\n", i,
			(unsigned long long)res->parts[i].offset,
			(unsigned long long)res->parts[i].bytes,
			(unsigned long long)res->parts[i].rows);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_folder folder = {0};
	struct normalizer *n = NULL;
	struct normalize res;
	char reason[512];
	const uint8_t *file;
	size_t len, chunk, fds;
	const char *rejects_name;
	bool have_dir;
	int r;

	if (size < 3)
		return 0;
	folder.name = (char *)"fuzz";
	folder.settings.max_file_bytes = 2147483648u;
	folder.settings.csv.delimiter = delimiters[data[0] & 7];
	folder.settings.csv.encoding = encodings[(data[0] >> 3) & 7];
	folder.settings.csv.header = data[0] & 0x40 ? CONFIG_HEADER_RELAXED : CONFIG_HEADER_EXACT;
	have_dir = !(data[0] & 0x80);
	rejects_name = have_dir ? REJECTS_NAME : NULL;
	folder.settings.invalid_rows = invalid[data[1] & 3];
	folder.column_map = maps[(data[1] >> 2) & 3];
	folder.settings.max_upload_bytes =
		data[1] >> 4 < 8 ? 52428800u : small_limits[(data[1] >> 4) & 7];
	chunk = data[2] & 0x80 ? (size_t)1 << (data[2] & 0x0f) : 1 + (size_t)(data[2] & 0x7f);
	file = data + 3;
	len = size - 3 < MAX_FILE ? size - 3 : MAX_FILE;

	fds = count_fds();
	write_all(mem_fd, file, len);
	(void)unlinkat(tmp_fd, REJECTS_NAME, 0);

	/* As precheck_hash() and precheck_run() do, the reads cut in CHUNK. */
	if (len == 0) {
		FUZZ_CHECK(normalizer_new(&folder, 0, "", 0, true, tmp_fd, tmp_fd, rejects_name,
					  &n) == 0);
	} else {
		FUZZ_CHECK(normalizer_new(&folder, len, file, len, true, tmp_fd, tmp_fd,
					  rejects_name, &n) == 0);
		for (size_t off = 0; off < len; off += chunk)
			normalizer_feed(n, file + off, len - off < chunk ? len - off : chunk);
	}
	FUZZ_CHECK(n);
	memset(reason, 0x5a, sizeof(reason));
	memset(&res, 0x5a, sizeof(res));
	r = normalizer_finish(n, mem_fd, NULL, &res, reason, sizeof(reason));
	normalizer_free(n);

	if (getenv("FUZZ_NORMALIZE_DEBUG"))
		debug_dump(r, &res, reason);
	FUZZ_CHECK(r == 0 || documented(r));
	/* No row of a file of at most MAX_FILE bytes (at most 4 x in UTF-8, and quoted) is too big
	 * for the 50 MiB default. */
	if (folder.settings.max_upload_bytes > 16 * MAX_FILE)
		FUZZ_CHECK(r != -EFBIG);
	{
		uint64_t sum = 0;

		for (int i = 0; i < NORMALIZE_N_REASONS; i++)
			sum += res.rejected[i];
		FUZZ_CHECK(res.rows_rejected == sum);
	}
	FUZZ_CHECK(res.n_renamed == 0 || folder.settings.csv.header == CONFIG_HEADER_RELAXED);
	if (res.read) {
		/* What is configured is what is used: a sep= line alone overrides the delimiter,
		 * a byte-order mark alone the encoding (or contradicts it: a failure). */
		FUZZ_CHECK(res.encoding_from);
		/* (A file refused before its delimiter is looked for, for a byte-order mark that
		 * contradicts csv.encoding, reports none.) */
		if (folder.settings.csv.delimiter && !res.sep_line && (r == 0 || res.delimiter))
			FUZZ_CHECK(res.delimiter == folder.settings.csv.delimiter);
		FUZZ_CHECK(r < 0 || (res.delimiter && strchr(",;\t|", res.delimiter)));
		if (!res.bom && folder.settings.csv.encoding != CONFIG_ENCODING_AUTO)
			FUZZ_CHECK(strcmp(res.encoding_from, expected_encoding(&folder)) == 0 ||
				   (folder.settings.csv.encoding == CONFIG_ENCODING_UTF16 &&
				    strcmp(res.encoding_from, "utf-16be") == 0));
	}
	if (r < 0) {
		FUZZ_CHECK(fuzz_one_line(reason, sizeof(reason)));
		FUZZ_CHECK(reason[0] != '\0');
		/* It goes to the log and into the JSON report. */
		FUZZ_CHECK(text_utf8_valid(reason));
		FUZZ_CHECK(res.fd == -1);
		FUZZ_CHECK(!res.temporary);
	} else {
		FUZZ_CHECK(res.rejects_written == (res.rows_rejected > 0 && have_dir));
		check_success(&res, &folder, file, len);
	}
	check_rejects(&res, have_dir);
	normalize_clear(&res);
	FUZZ_CHECK(res.fd == -1 && res.parts == NULL && res.renamed_from == NULL);
	FUZZ_CHECK(count_fds() == fds);
	return 0;
}
