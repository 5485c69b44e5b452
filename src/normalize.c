#include "normalize.h"

#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "address.h"
#include "csvhead.h"
#include "csvscan.h"
#include "emailset.h"
#include "fsops.h"
#include "text.h"

#define NORMALIZE_READ_BYTES (256 * 1024)
#define NORMALIZE_WRITE_BYTES (256 * 1024)
#define NORMALIZE_SAMPLE_ROWS 50

static const char *const reason_keys[NORMALIZE_N_REASONS] = {
	"wrong_field_count", "empty_email", "invalid_email", "repeated_email"};

const char *normalize_reason_key(enum normalize_reason r)
{
	return reason_keys[r];
}

/* ---- output: a buffered writer ------------------------------------------------------ */

struct writer {
	int fd;
	char *buf;
	size_t len;
	uint64_t pos; /* bytes written through it */
	int err;
};

static int writer_flush(struct writer *w)
{
	size_t off = 0;

	while (off < w->len && !w->err) {
		ssize_t k = write(w->fd, w->buf + off, w->len - off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			w->err = -errno;
		else
			off += (size_t)k;
	}
	w->len = 0;
	return w->err;
}

static void writer_put(struct writer *w, const void *p, size_t n)
{
	w->pos += n;
	while (n > 0 && !w->err) {
		size_t room = NORMALIZE_WRITE_BYTES - w->len;
		size_t k = n < room ? n : room;

		memcpy(w->buf + w->len, p, k);
		w->len += k;
		p = (const char *)p + k;
		n -= k;
		if (w->len == NORMALIZE_WRITE_BYTES)
			writer_flush(w);
	}
}

static bool needs_quotes(const char *f, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (f[i] == ',' || f[i] == '"' || f[i] == '\r' || f[i] == '\n')
			return true;
	return false;
}

/* One field (LEN bytes, not necessarily NUL-terminated), quoted (by libcsv) when it holds a
 * comma, a quote or a line end. */
static void writer_field(struct writer *w, const char *f, size_t len, bool first)
{
	if (!first)
		writer_put(w, ",", 1);
	if (!needs_quotes(f, len)) {
		writer_put(w, f, len);
		return;
	}
	/* csv_write quotes and doubles quotes; at most 2 * LEN + 2 bytes. */
	char small[512];
	size_t need = 2 * len + 2;
	char *q = need <= sizeof(small) ? small : malloc(need);

	if (!q) {
		w->err = -ENOMEM;
		return;
	}
	writer_put(w, q, csv_write(q, need, f, len));
	if (q != small)
		free(q);
}

/* ---- the checks of one row ---------------------------------------------------------- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *len)
{
	while (*len > 0 && is_space(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && is_space((*s)[*len - 1]))
		(*len)--;
}

/* ---- the parts: rows packed into uploads of at most max_upload_bytes ----------------- */

struct plan {
	uint64_t limit, head;
	struct normalize_part *parts;
	size_t n, cap;
};

static int plan_row(struct plan *pl, uint64_t start, uint64_t end, uint64_t line, char *reason,
		    size_t reasonsz)
{
	struct normalize_part *cur = pl->n ? &pl->parts[pl->n - 1] : NULL;

	if (pl->head + (end - start) > pl->limit) {
		snprintf(reason, reasonsz, "line %llu: the row is %llu bytes; with the header (%llu "
			 "bytes) it does not fit in one upload of max_upload_bytes (%llu)",
			 (unsigned long long)line, (unsigned long long)(end - start),
			 (unsigned long long)pl->head, (unsigned long long)pl->limit);
		return -EFBIG;
	}
	if (cur && pl->head + (end - cur->offset) <= pl->limit) {
		cur->bytes = end - cur->offset;
		cur->rows++;
		return 0;
	}
	if (pl->n == pl->cap) {
		size_t ncap = pl->cap ? pl->cap * 2 : 8;
		struct normalize_part *np = realloc(pl->parts, ncap * sizeof(*np));

		if (!np) {
			snprintf(reason, reasonsz, "out of memory");
			return -ENOMEM;
		}
		pl->parts = np;
		pl->cap = ncap;
	}
	pl->parts[pl->n++] = (struct normalize_part){start, end - start, 1};
	return 0;
}

static void plan_reset(struct plan *pl)
{
	free(pl->parts);
	pl->parts = NULL;
	pl->n = pl->cap = 0;
}

/* ---- the normalizer ----------------------------------------------------------------- */

struct normalizer {
	const struct config_folder *folder;
	uint64_t size, limit;
	int tmp_dir_fd;
	struct csvscan_dialect dialect;
	const char *iconv_name; /* for the restart */
	bool auto_encoding;     /* UTF-8 only assumed: invalid UTF-8 restarts as windows-1252 */
	int err;                /* the first problem, with REASON */
	char reason[512];
	struct normalize info;
	/* The pass. */
	struct csvscan *scan;
	struct emailset *emails;
	int pass;
	bool fast;           /* still uploadable as it is */
	struct csvhead head; /* owned names */
	size_t n_cols;       /* the header's fields without trailing empty names */
	struct csvhead_match match;
	bool have_head;
	uint64_t prev_start; /* the last data row's start (pass 1), for the plan */
	bool have_prev;
	uint64_t prev_line;
	struct plan plan;
	/* Writing: the copy (COPY) and the rejects file, while WRITING. */
	int rejects_dir_fd;      /* -1: no rejects file (a dry run) */
	const char *rejects_name;
	bool writing, copy;
	struct writer out, rej;
	struct emailset_repeat *repeats;
	size_t n_repeats, next_repeat;
	/* The emails' hashes for coalescing (normalize.h), while COLLECT. */
	uint64_t *hashes;
	size_t n_hashes, cap_hashes;
	bool collect;
};

static void fail(struct normalizer *n, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct normalizer *n, int err, const char *fmt, ...)
{
	va_list ap;

	if (n->err)
		return;
	n->err = err;
	va_start(ap, fmt);
	vsnprintf(n->reason, sizeof(n->reason), fmt, ap);
	va_end(ap);
}

static const char *encoding_iconv(enum config_encoding e)
{
	switch (e) {
	case CONFIG_ENCODING_WINDOWS_1252:
		return "WINDOWS-1252";
	case CONFIG_ENCODING_ISO_8859_1:
		return "ISO-8859-1";
	case CONFIG_ENCODING_ISO_8859_15:
		return "ISO-8859-15";
	default:
		return NULL;
	}
}

static const char *iconv_report_name(const char *iconv_name)
{
	if (!iconv_name)
		return "utf-8";
	if (strcmp(iconv_name, "WINDOWS-1252") == 0)
		return "windows-1252";
	if (strcmp(iconv_name, "ISO-8859-1") == 0)
		return "iso-8859-1";
	if (strcmp(iconv_name, "ISO-8859-15") == 0)
		return "iso-8859-15";
	if (strcmp(iconv_name, "UTF-16LE") == 0)
		return "utf-16le";
	return "utf-16be";
}

/* Whether B is to be read as UTF-8: it holds only well-formed UTF-8 (a character cut by the end
 * of an incomplete sample counts as well-formed), or UTF-8 characters come before a byte that
 * is not (two encodings in one file: read as UTF-8, the scan refuses it at that byte). */
static bool sample_is_utf8(const unsigned char *b, size_t len, bool complete)
{
	size_t i = 0;
	bool multibyte = false;

	while (i < len) {
		size_t k;

		if (b[i] < 0x80) {
			i++;
			continue;
		}
		k = text_utf8_len(b + i, len - i);
		if (k == 0)
			return multibyte || (!complete && len - i < 4);
		multibyte = true;
		i += k;
	}
	return true;
}

/* UTF-16 without a byte-order mark: NUL in every other byte of ASCII text. 'l', 'b' or 0. */
static char utf16_guess(const unsigned char *b, size_t len)
{
	size_t even = 0, odd = 0, n = len < 512 ? len : 512;

	for (size_t i = 0; i + 1 < n; i += 2) {
		even += b[i] == 0;
		odd += b[i + 1] == 0;
	}
	if (n < 4)
		return 0;
	if (odd * 3 > n && even * 10 < n)
		return 'l';
	if (even * 3 > n && odd * 10 < n)
		return 'b';
	return 0;
}

/* The byte-order mark and the encoding. */
static void detect_encoding(struct normalizer *n, const unsigned char *b, size_t len,
			    bool complete)
{
	enum config_encoding want = n->folder->settings.csv.encoding;
	const char *bom_enc = NULL;
	char guess;

	if (len >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf) {
		n->info.bom = "utf-8";
		n->dialect.skip = 3;
	} else if (len >= 2 && b[0] == 0xff && b[1] == 0xfe) {
		n->info.bom = "utf-16le";
		bom_enc = "UTF-16LE";
		n->dialect.skip = 2;
	} else if (len >= 2 && b[0] == 0xfe && b[1] == 0xff) {
		n->info.bom = "utf-16be";
		bom_enc = "UTF-16BE";
		n->dialect.skip = 2;
	}
	if (n->info.bom) {
		bool utf16 = bom_enc != NULL;

		if (want != CONFIG_ENCODING_AUTO &&
		    (utf16 ? want != CONFIG_ENCODING_UTF16 : want != CONFIG_ENCODING_UTF8))
			fail(n, -EILSEQ, "the file starts with a %s byte-order mark, but csv.encoding "
			     "is %s: set it to %s (or auto)", n->info.bom, config_encoding_name(want),
			     utf16 ? "utf-16" : "utf-8");
		n->iconv_name = bom_enc;
		return;
	}
	switch (want) {
	case CONFIG_ENCODING_UTF8:
		n->iconv_name = NULL;
		return;
	case CONFIG_ENCODING_UTF16:
		n->iconv_name = utf16_guess(b, len) == 'b' ? "UTF-16BE" : "UTF-16LE";
		return;
	case CONFIG_ENCODING_AUTO:
		guess = utf16_guess(b, len);
		if (guess) {
			n->iconv_name = guess == 'b' ? "UTF-16BE" : "UTF-16LE";
			return;
		}
		n->auto_encoding = true;
		n->iconv_name = sample_is_utf8(b, len, complete) ? NULL : "WINDOWS-1252";
		return;
	default:
		n->iconv_name = encoding_iconv(want);
		return;
	}
}

/* Excel's "sep=X" first line, decoded. */
static void detect_sep_line(struct normalizer *n, const unsigned char *b, size_t len)
{
	char text[64];
	size_t unit = n->iconv_name && strncmp(n->iconv_name, "UTF-16", 6) == 0 ? 2 : 1;
	size_t k = 0, i;
	bool le = unit == 2 && strcmp(n->iconv_name, "UTF-16LE") == 0;
	const unsigned char *p = b + n->dialect.skip;
	size_t avail = len - (size_t)n->dialect.skip;

	/* ASCII only matters here: read it one unit at a time. */
	for (i = 0; i + unit <= avail && k < sizeof(text) - 1; i += unit) {
		unsigned char c = unit == 1 ? p[i] : le ? p[i] : p[i + 1];
		unsigned char hi = unit == 1 ? 0 : le ? p[i + 1] : p[i];

		if (hi != 0 || c >= 0x80)
			break;
		text[k++] = (char)c;
		if (c == '\n')
			break;
	}
	text[k] = '\0';
	if (strncasecmp(text, "sep=", 4) != 0 || k < 5 || !strchr(",;\t|", text[4]) ||
	    text[4] == '\0')
		return;
	size_t line = 5;
	if (text[line] == '\r')
		line++;
	if (text[line] == '\n')
		line++;
	if (line == 5 && text[5] != '\0')
		return; /* "sep=;x": not the line */
	n->info.sep_line = true;
	n->dialect.delimiter = text[4];
	n->dialect.skip += line * unit;
	n->dialect.first_line = 2;
}

/* The header record REC, kept as H (csvhead_free). */
static int header_copy(struct csvhead *h, const struct csvscan_record *rec)
{
	h->fields = calloc(rec->n_fields ? rec->n_fields : 1, sizeof(char *));
	if (!h->fields)
		return -ENOMEM;
	for (size_t i = 0; i < rec->n_fields; i++) {
		h->fields[i] = strdup(rec->fields[i]);
		if (!h->fields[i])
			return -ENOMEM;
		h->n_fields++;
	}
	return 0;
}

/* Detection's look at the first rows with one delimiter. */
struct sample {
	struct csvhead head;
	size_t counts[NORMALIZE_SAMPLE_ROWS];
	size_t n_rows;
	bool stop;
};

static int sample_cb(const struct csvscan_record *rec, void *data)
{
	struct sample *s = data;

	if (rec->index == 0)
		return header_copy(&s->head, rec);
	s->counts[s->n_rows++] = rec->n_fields;
	return s->n_rows == NORMALIZE_SAMPLE_ROWS ? -ECANCELED : 0;
}

static size_t trimmed_count(char *const *fields, const size_t *lens, size_t n)
{
	while (n > 1 && (lens ? lens[n - 1] : strlen(fields[n - 1])) == 0)
		n--;
	return n;
}

/* The delimiter among , ; TAB | whose header has the mapped columns and whose first rows have
 * the header's field count; failing that, the one with the mapped columns; failing that, the one
 * that splits the header most with consistent rows. */
static void detect_delimiter(struct normalizer *n, const unsigned char *b, size_t len)
{
	static const char cands[] = {',', ';', '\t', '|'};
	int best = -1, best_score = -1;
	size_t best_fields = 0;

	for (size_t c = 0; c < sizeof(cands); c++) {
		struct csvscan_dialect d = n->dialect;
		struct sample s = {0};
		struct csvscan *scan;
		struct csvhead_match m;
		char why[512];
		int score = 0;
		size_t want;
		bool consistent = true;

		d.delimiter = cands[c];
		d.iconv_from = n->iconv_name;
		if (csvscan_new(&d, sample_cb, &s, &scan) < 0)
			continue;
		(void)csvscan_feed(scan, b, len);
		if (len < NORMALIZE_DETECT_BYTES)
			(void)csvscan_finish(scan);
		csvscan_free(scan);
		if (s.head.n_fields == 0) {
			csvhead_free(&s.head);
			continue;
		}
		want = trimmed_count(s.head.fields, NULL, s.head.n_fields);
		for (size_t i = 0; i < s.n_rows; i++)
			if (s.counts[i] != s.head.n_fields && s.counts[i] != want)
				consistent = false;
		if (csvhead_match(&s.head, &n->folder->column_map, n->folder->settings.csv.header,
				  &m, why, sizeof(why)) == 0) {
			csvhead_match_free(&m);
			score = consistent ? 3 : 2;
		} else if (consistent && want > 1) {
			score = 1;
		}
		if (score > best_score || (score == best_score && score == 1 && want > best_fields)) {
			best = (int)c;
			best_score = score;
			best_fields = want;
		}
		csvhead_free(&s.head);
		if (score == 3)
			break;
	}
	n->dialect.delimiter = best >= 0 && best_score > 0 ? cands[best] : ',';
}

int normalizer_new(const struct config_folder *folder, uint64_t size, const void *first,
		   size_t len, bool complete, int tmp_dir_fd, int rejects_dir_fd,
		   const char *rejects_name, struct normalizer **ret)
{
	struct normalizer *n = calloc(1, sizeof(*n));
	const unsigned char *b = first;
	size_t look = len < NORMALIZE_DETECT_BYTES ? len : NORMALIZE_DETECT_BYTES;

	if (!n)
		return -ENOMEM;
	n->folder = folder;
	n->size = size;
	n->limit = folder->settings.max_upload_bytes;
	n->tmp_dir_fd = tmp_dir_fd;
	n->rejects_dir_fd = rejects_name ? rejects_dir_fd : -1;
	n->rejects_name = rejects_name;
	n->out.fd = n->rej.fd = -1;
	n->info.fd = -1;
	n->info.header = folder->settings.csv.header;
	n->info.invalid_rows = folder->settings.invalid_rows;
	n->info.bytes_before = size;
	n->dialect.first_line = 1;
	detect_encoding(n, b, look, complete || len <= NORMALIZE_DETECT_BYTES);
	if (!n->err)
		detect_sep_line(n, b, look);
	if (!n->err && !n->info.sep_line) {
		if (folder->settings.csv.delimiter)
			n->dialect.delimiter = folder->settings.csv.delimiter;
		else
			detect_delimiter(n, b, look);
	}
	*ret = n;
	return 0;
}

/* ---- a row's verdict, the header, the emails seen ----------------------------------- */

/* The row's verdict: a reason, or -1 when it passes (its email, trimmed, in *EMAIL). DETAIL gets
 * the particulars for the rejects file. */
static int check_row(struct normalizer *n, const struct csvscan_record *rec, const char **email,
		     size_t *email_len, char *detail, size_t detailsz)
{
	size_t count = rec->n_fields, want = n->n_cols;
	const char *problem;

	if (count < want || (count > n->head.n_fields &&
			     trimmed_count(rec->fields, rec->lens, count) > want) ||
	    (count > want && trimmed_count(rec->fields, rec->lens, count) > want)) {
		snprintf(detail, detailsz, "wrong field count: %zu fields, the header has %zu",
			 count, want);
		return NORMALIZE_WRONG_FIELD_COUNT;
	}
	*email = rec->fields[n->match.email];
	*email_len = rec->lens[n->match.email];
	trim(email, email_len);
	if (*email_len == 0) {
		snprintf(detail, detailsz, "empty email");
		return NORMALIZE_EMPTY_EMAIL;
	}
	problem = address_problem(*email, *email_len);
	if (problem) {
		size_t shown = *email_len;

		/* A long one is cut, on a character's boundary: the rejects file is UTF-8. */
		if (shown > 80) {
			shown = 80;
			while (shown > 0 && ((unsigned char)(*email)[shown] & 0xc0) == 0x80)
				shown--;
		}
		snprintf(detail, detailsz, "invalid email '%.*s%s': %s", (int)shown, *email,
			 shown < *email_len ? "..." : "", problem);
		return NORMALIZE_INVALID_EMAIL;
	}
	return -1;
}

static bool all_empty(const struct csvscan_record *rec)
{
	for (size_t i = 0; i < rec->n_fields; i++)
		if (rec->lens[i] != 0)
			return false;
	return true;
}

static int take_header(struct normalizer *n, const struct csvscan_record *rec)
{
	if (header_copy(&n->head, rec) < 0)
		return -ENOMEM;
	n->n_cols = trimmed_count(n->head.fields, NULL, n->head.n_fields);
	/* The trailing empty names of a header with trailing delimiters are no columns. */
	struct csvhead cols = {n->head.fields, n->n_cols};
	int r = csvhead_match(&cols, &n->folder->column_map, n->folder->settings.csv.header,
			      &n->match, n->reason, sizeof(n->reason));

	if (r < 0) {
		n->err = r;
		return r;
	}
	n->have_head = true;
	if (n->match.n_renamed)
		n->fast = false;
	return 0;
}

/* Keeps KEY's hash for coalescing; a file with more rows than a batch may hold keeps none. */
static void collect_email(struct normalizer *n, const char *key, size_t len)
{
	if (n->n_hashes == n->cap_hashes) {
		size_t cap = n->cap_hashes ? n->cap_hashes * 2 : 16;
		uint64_t *h = n->n_hashes < n->folder->settings.coalesce_max_rows
				      ? realloc(n->hashes, cap * sizeof(*h))
				      : NULL;

		if (!h) {
			/* Not coalesced: a file of its own is still imported. */
			free(n->hashes);
			n->hashes = NULL;
			n->n_hashes = n->cap_hashes = 0;
			n->collect = false;
			return;
		}
		n->hashes = h;
		n->cap_hashes = cap;
	}
	n->hashes[n->n_hashes++] = XXH3_64bits(key, len);
}

static int emails_key(struct normalizer *n, const char *email, size_t len, uint64_t line)
{
	char key[256];

	for (size_t i = 0; i < len; i++)
		key[i] = (email[i] >= 'A' && email[i] <= 'Z') ? (char)(email[i] + 32) : email[i];
	if (n->collect)
		collect_email(n, key, len);
	return emailset_add(n->emails, key, len, line);
}

/* ---- writing: the copy and the rejects file ------------------------------------------- */

static int open_writer(struct writer *w, int fd)
{
	w->fd = fd;
	w->len = 0;
	w->pos = 0;
	w->err = 0;
	if (!w->buf)
		w->buf = malloc(NORMALIZE_WRITE_BYTES);
	return w->buf ? 0 : -ENOMEM;
}

static int close_writer(struct writer *w, bool sync)
{
	int r = w->buf ? writer_flush(w) : 0;

	if (r == 0 && sync && fsync(w->fd) < 0)
		r = -errno;
	free(w->buf);
	w->buf = NULL;
	return r;
}

/* The rejects file, from nothing, unless there is none to write (a dry run). */
static void rejects_drop(struct normalizer *n)
{
	if (n->rej.fd < 0)
		return;
	free(n->rej.buf);
	n->rej.buf = NULL;
	close(n->rej.fd);
	n->rej.fd = -1;
	(void)unlinkat(n->rejects_dir_fd, n->rejects_name, 0);
}

/* From here the pass writes what it reads: the copy when COPY, and the rejects. A copy begun
 * by an earlier pass starts over. */
static int start_writing(struct normalizer *n, bool copy)
{
	int r;

	rejects_drop(n);
	n->copy = copy;
	n->writing = true;
	n->info.rows_uploaded = 0;
	if (!copy)
		return 0;
	plan_reset(&n->plan);
	if (n->info.fd < 0) {
		r = fsops_open_tmpfile(n->tmp_dir_fd, &n->info.fd);
		if (r < 0) {
			n->info.temporary = r != -ENOMEM;
			fail(n, r, "cannot make the normalized copy: %s", strerror(-r));
			return r;
		}
	} else if (ftruncate(n->info.fd, 0) < 0 || lseek(n->info.fd, 0, SEEK_SET) < 0) {
		r = -errno;
		n->info.temporary = true;
		fail(n, r, "cannot make the normalized copy: %s", strerror(-r));
		return r;
	}
	r = open_writer(&n->out, n->info.fd);
	if (r < 0)
		fail(n, r, "out of memory");
	return r;
}

static int write_reject(struct normalizer *n, const struct csvscan_record *rec,
			const char *detail)
{
	char num[24];
	int k;

	if (n->rejects_dir_fd < 0)
		return 0;
	if (n->rej.fd < 0) {
		int fd = openat(n->rejects_dir_fd, n->rejects_name,
				O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);

		if (fd < 0 || open_writer(&n->rej, fd) < 0) {
			int r = fd < 0 ? -errno : -ENOMEM;

			if (fd >= 0)
				close(fd);
			n->info.temporary = r != -ENOMEM;
			fail(n, r, "cannot write the rejects file: %s", strerror(-r));
			return r;
		}
		(void)fchmod(fd, 0640); /* the umask cut the mode given to open */
		writer_put(&n->rej, "line,reason,row\n", 16);
	}
	k = snprintf(num, sizeof(num), "%llu", (unsigned long long)rec->line);
	writer_put(&n->rej, num, (size_t)k);
	writer_field(&n->rej, detail, strlen(detail), false);
	writer_field(&n->rej, rec->raw, rec->raw_len, false);
	writer_put(&n->rej, "\n", 1);
	return n->rej.err;
}

static int write_header(struct normalizer *n)
{
	if (!n->copy)
		return 0;
	for (size_t i = 0; i < n->n_cols; i++)
		writer_field(&n->out, n->match.names[i], strlen(n->match.names[i]), i == 0);
	writer_put(&n->out, "\n", 1);
	n->plan.head = n->out.pos;
	return n->out.err;
}

/* A data row, with its verdict (-1: it passes) and its trimmed email (NULL when its field count
 * is wrong): listed when rejected, and copied unless dropped. */
static int write_row(struct normalizer *n, const struct csvscan_record *rec, int verdict,
		     const char *detail, const char *email, size_t elen)
{
	uint64_t start;
	size_t count;
	int r;

	if (verdict >= 0) {
		r = write_reject(n, rec, detail);
		if (r < 0 || n->info.invalid_rows != CONFIG_INVALID_ROWS_IMPORT)
			return r;
	}
	n->info.rows_uploaded++;
	if (!n->copy)
		return 0;
	start = n->out.pos;
	count = verdict == NORMALIZE_WRONG_FIELD_COUNT ? rec->n_fields : n->n_cols;
	for (size_t i = 0; i < count; i++) {
		if (i == n->match.email && email)
			writer_field(&n->out, email, elen, i == 0);
		else
			writer_field(&n->out, rec->fields[i], rec->lens[i], i == 0);
	}
	/* A row of one empty field (an import of an empty email) would be a blank line, which no
	 * reader takes for a row. */
	if (n->out.pos == start)
		writer_put(&n->out, "\"\"", 2);
	writer_put(&n->out, "\n", 1);
	if (n->out.err)
		return n->out.err;
	r = plan_row(&n->plan, start, n->out.pos, rec->line, n->reason, sizeof(n->reason));
	if (r < 0 && !n->err)
		n->err = r; /* REASON says it */
	return r;
}

/* The end of a writing pass: everything flushed, the rejects file synced (it is moved to done
 * or failed without being rewritten). */
static int end_writing(struct normalizer *n)
{
	int r;

	n->writing = false;
	if (n->copy && n->out.buf) {
		r = close_writer(&n->out, false);
		if (r < 0 && !n->err) {
			n->info.temporary = true;
			fail(n, r, "cannot write the normalized copy in the processing directory: %s",
			     strerror(-r));
		}
		n->info.bytes_after = n->out.pos;
	}
	if (n->rej.fd >= 0) {
		r = close_writer(&n->rej, true);
		if (close(n->rej.fd) < 0 && r == 0 && errno != EINTR)
			r = -errno;
		n->rej.fd = -1;
		if (r < 0 && !n->err) {
			n->info.temporary = true;
			fail(n, r, "cannot write the rejects file: %s", strerror(-r));
		}
		if (n->err)
			(void)unlinkat(n->rejects_dir_fd, n->rejects_name, 0);
		else
			n->info.rejects_written = true;
	}
	if (n->err && (n->out.err || n->rej.err))
		n->info.temporary = true;
	return n->err;
}

/* ---- the passes --------------------------------------------------------------------- */

/* Pass 1 checks every row and collects the emails. A file known from its dialect to need a copy
 * is written as it is read; the rows of one that may be uploaded as it is are planned in place
 * instead (a second pass writes what is needed when it turns out otherwise, or when rows repeat
 * an email, which only the end can tell). */
static int pass1_record(const struct csvscan_record *rec, void *data)
{
	struct normalizer *n = data;
	const char *email = NULL;
	size_t elen = 0;
	char detail[160];
	int verdict, r;

	if (rec->index == 0) {
		r = take_header(n, rec);
		return r < 0 || !n->writing ? r : write_header(n);
	}
	if (!n->writing) {
		if (n->have_prev) {
			if (plan_row(&n->plan, n->prev_start, rec->offset, n->prev_line, n->reason,
				     sizeof(n->reason)) < 0)
				n->fast = false; /* said again by the copy's plan, if it still holds */
			n->have_prev = false;
		} else if (n->info.rows == 0) {
			n->plan.head = rec->offset; /* the header's bytes, line end included */
		}
	}
	if (all_empty(rec)) {
		n->fast = false;
		return 0;
	}
	n->info.rows++;
	if (rec->n_fields != n->head.n_fields)
		n->fast = false;
	verdict = check_row(n, rec, &email, &elen, detail, sizeof(detail));
	/* The plan of the file as it is, for the fast path: every row that is uploaded. */
	n->prev_start = rec->offset;
	n->prev_line = rec->line;
	n->have_prev = true;
	if (verdict >= 0) {
		n->info.rejected[verdict]++;
		n->info.rows_rejected++;
		if (n->info.invalid_rows != CONFIG_INVALID_ROWS_IMPORT)
			n->fast = false;
	} else {
		if (elen != rec->lens[n->match.email])
			n->fast = false;
		r = emails_key(n, email, elen, rec->line);
		if (r < 0)
			return r;
	}
	return n->writing ? write_row(n, rec, verdict, detail, email, elen) : 0;
}

static int pass_start(struct normalizer *n, csvscan_record_cb cb)
{
	struct csvscan_dialect d = n->dialect;
	int r;

	d.iconv_from = n->iconv_name;
	r = csvscan_new(&d, cb, n, &n->scan);
	if (r < 0)
		fail(n, r, "cannot read %s text: %s", iconv_report_name(n->iconv_name),
		     strerror(-r));
	return r;
}

static void pass1_reset(struct normalizer *n)
{
	csvscan_free(n->scan);
	n->scan = NULL;
	emailset_free(n->emails);
	n->emails = NULL;
	csvhead_free(&n->head);
	csvhead_match_free(&n->match);
	plan_reset(&n->plan);
	memset(n->info.rejected, 0, sizeof(n->info.rejected));
	n->info.rows = n->info.rows_rejected = 0;
	n->have_head = n->have_prev = false;
	n->err = 0;
	n->reason[0] = '\0';
}

static int pass1_start(struct normalizer *n)
{
	int r;

	n->pass = 1;
	n->fast = !n->iconv_name && !n->info.bom && !n->info.sep_line && n->dialect.delimiter == ',';
	n->plan.limit = n->limit;
	n->plan.head = 0;
	n->n_hashes = 0;
	n->collect = n->folder->settings.coalesce == CONFIG_COALESCE_AUTO;
	r = emailset_new(n->tmp_dir_fd, n->size, &n->emails);
	if (r < 0) {
		fail(n, r, "out of memory");
		return r;
	}
	if (!n->fast && start_writing(n, true) < 0)
		return n->err;
	return pass_start(n, pass1_record);
}

void normalizer_feed(struct normalizer *n, const void *buf, size_t len)
{
	int r;

	if (n->err)
		return;
	if (!n->scan && pass1_start(n) < 0)
		return;
	r = csvscan_feed(n->scan, buf, len);
	if (r < 0 && !n->err)
		fail(n, r, "%s", csvscan_error(n->scan));
}

/* Reads SRC_FD from its start into the current pass. */
static int read_pass(struct normalizer *n, int src_fd, const atomic_bool *cancel)
{
	char *buf = malloc(NORMALIZE_READ_BYTES);
	uint64_t off = 0;
	int r = 0;

	if (!buf) {
		fail(n, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	(void)posix_fadvise(src_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	while (!n->err) {
		ssize_t k;

		if (cancel && atomic_load_explicit(cancel, memory_order_relaxed)) {
			r = -ECANCELED;
			fail(n, r, "stopped");
			break;
		}
		k = pread(src_fd, buf, NORMALIZE_READ_BYTES, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			fail(n, r, "reading the file failed: %s", strerror(errno));
			n->info.temporary = true;
			break;
		}
		if (k == 0)
			break;
		r = csvscan_feed(n->scan, buf, (size_t)k);
		if (r < 0 && !n->err)
			fail(n, r, "%s", csvscan_error(n->scan));
		off += (uint64_t)k;
	}
	free(buf);
	return n->err;
}

static int pass_end(struct normalizer *n)
{
	int r;

	if (n->err)
		return n->err;
	r = csvscan_finish(n->scan);
	if (r < 0 && !n->err)
		fail(n, r, "%s", csvscan_error(n->scan));
	return n->err;
}

/* The end of the first pass; with an encoding assumed from the sample, a file found not to be
 * UTF-8 after all is read again as windows-1252. */
static int pass1_end(struct normalizer *n, int src_fd, const atomic_bool *cancel)
{
	if (!n->scan && !n->err && pass1_start(n) < 0)
		return n->err;
	pass_end(n);
	/* Not UTF-8 after all: windows-1252, unless UTF-8 characters came before the byte that is
	 * not (a file of two encodings, which no one setting reads right: it is refused). */
	if (n->err && n->scan && csvscan_stats(n->scan)->bad_utf8 && n->auto_encoding &&
	    !n->iconv_name && csvscan_stats(n->scan)->multibyte > 0) {
		size_t len = strlen(n->reason);

		snprintf(n->reason + len, sizeof(n->reason) - len, ", though UTF-8 characters come "
			 "before it: the file mixes encodings; fix it, or set csv.encoding");
	} else if (n->err && n->scan && csvscan_stats(n->scan)->bad_utf8 && n->auto_encoding &&
	    !n->iconv_name) {
		pass1_reset(n);
		n->iconv_name = "WINDOWS-1252";
		if (pass1_start(n) < 0 || read_pass(n, src_fd, cancel) < 0)
			return n->err;
		pass_end(n);
	}
	if (n->err)
		return n->err;
	if (n->have_prev && !n->writing) {
		uint64_t end = csvscan_stats(n->scan)->decoded_bytes;

		if (plan_row(&n->plan, n->prev_start, end, n->prev_line, n->reason,
			     sizeof(n->reason)) < 0)
			n->fast = false;
	}
	n->have_prev = false;
	if (csvscan_stats(n->scan)->blank_lines || csvscan_stats(n->scan)->lone_cr)
		n->fast = false;
	if (!n->have_head) {
		fail(n, -ENODATA, n->size == 0 ? "the file is empty"
					       : "the file has no CSV header row");
		return n->err;
	}
	return 0;
}

/* Pass 2: the copy and the rejects file, now that the repeats are known. */
static bool is_repeat(struct normalizer *n, uint64_t line, uint64_t *first)
{
	while (n->next_repeat < n->n_repeats && n->repeats[n->next_repeat].line < line)
		n->next_repeat++;
	if (n->next_repeat < n->n_repeats && n->repeats[n->next_repeat].line == line) {
		*first = n->repeats[n->next_repeat].first_line;
		return true;
	}
	return false;
}

static int pass2_record(const struct csvscan_record *rec, void *data)
{
	struct normalizer *n = data;
	const char *email = NULL;
	size_t elen = 0;
	char detail[160];
	uint64_t first;
	int verdict;

	if (rec->index == 0)
		return write_header(n);
	if (all_empty(rec))
		return 0;
	verdict = check_row(n, rec, &email, &elen, detail, sizeof(detail));
	if (verdict < 0 && is_repeat(n, rec->line, &first)) {
		verdict = NORMALIZE_REPEATED_EMAIL;
		snprintf(detail, sizeof(detail), "email repeated: first on line %llu",
			 (unsigned long long)first);
	}
	return write_row(n, rec, verdict, detail, email, elen);
}

static int pass2(struct normalizer *n, int src_fd, bool copy, const atomic_bool *cancel)
{
	csvscan_free(n->scan);
	n->scan = NULL;
	n->pass = 2;
	n->next_repeat = 0;
	if (start_writing(n, copy) < 0)
		return n->err;
	if (pass_start(n, pass2_record) < 0)
		return n->err;
	read_pass(n, src_fd, cancel);
	pass_end(n);
	return end_writing(n);
}

static void fill_found(struct normalizer *n)
{
	n->info.read = true;
	n->info.encoding_from = iconv_report_name(n->iconv_name);
	n->info.delimiter = n->dialect.delimiter;
	if (!n->have_head || !n->match.n_renamed)
		return;
	n->info.renamed_from = calloc(n->match.n_renamed, sizeof(char *));
	n->info.renamed_to = calloc(n->match.n_renamed, sizeof(char *));
	if (!n->info.renamed_from || !n->info.renamed_to)
		return;
	for (size_t i = 0; i < n->n_cols; i++) {
		if (n->match.names[i] == n->head.fields[i])
			continue;
		n->info.renamed_from[n->info.n_renamed] = strdup(n->head.fields[i]);
		n->info.renamed_to[n->info.n_renamed] = strdup(n->match.names[i]);
		if (!n->info.renamed_from[n->info.n_renamed] ||
		    !n->info.renamed_to[n->info.n_renamed]) {
			free(n->info.renamed_from[n->info.n_renamed]);
			free(n->info.renamed_to[n->info.n_renamed]);
			return;
		}
		n->info.n_renamed++;
	}
}

static void rejected_summary(const struct normalize *r, char *buf, size_t size)
{
	static const char *const words[NORMALIZE_N_REASONS] = {
		"with a wrong field count", "with an empty email", "with an invalid email",
		"repeating an email"};
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; i < NORMALIZE_N_REASONS; i++) {
		int k;

		if (!r->rejected[i])
			continue;
		k = snprintf(buf + len, size - len, "%s%llu %s", len ? ", " : "",
			     (unsigned long long)r->rejected[i], words[i]);
		if (k < 0 || (size_t)k >= size - len)
			return;
		len += (size_t)k;
	}
}

int normalizer_finish(struct normalizer *n, int src_fd, const atomic_bool *cancel,
		      struct normalize *ret, char *reason, size_t reasonsz)
{
	struct normalize *info = &n->info;
	bool wrote, copy;
	int r;

	r = pass1_end(n, src_fd, cancel);
	wrote = n->writing;
	if (wrote) {
		int w = end_writing(n);

		r = r < 0 ? r : w;
	}
	fill_found(n);
	if (r < 0)
		goto out;
	r = emailset_repeats(n->emails, &n->repeats, &n->n_repeats);
	if (r < 0) {
		info->temporary = true;
		fail(n, r, "cannot sort the emails: %s", strerror(-r));
		goto out;
	}
	info->rejected[NORMALIZE_REPEATED_EMAIL] = n->n_repeats;
	info->rows_rejected += n->n_repeats;
	if (n->n_repeats && info->invalid_rows != CONFIG_INVALID_ROWS_IMPORT)
		n->fast = false;
	/* A file failed for its rows needs no copy. */
	copy = !n->fast && !(info->rows_rejected && info->invalid_rows ==
							  CONFIG_INVALID_ROWS_FAIL_FILE);
	/* Pass 1 wrote what was needed, unless rows repeat an email (they are only known now), or
	 * the file turned out to need a copy it did not write. */
	if (wrote ? n->n_repeats > 0 : copy || (info->rows_rejected && n->rejects_dir_fd >= 0)) {
		r = pass2(n, src_fd, copy, cancel);
		if (r < 0)
			goto out;
	}
	if (!copy) {
		info->rows_uploaded = info->rows;
		if (info->invalid_rows != CONFIG_INVALID_ROWS_IMPORT)
			info->rows_uploaded -= info->rows_rejected;
		info->bytes_after = n->size;
	}
	if (!copy && info->fd >= 0) {
		close(info->fd);
		info->fd = -1;
	}
	info->normalized = copy;
	if (info->rows_rejected && info->invalid_rows == CONFIG_INVALID_ROWS_FAIL_FILE) {
		char what[200];

		rejected_summary(info, what, sizeof(what));
		fail(n, -EBADMSG, "%llu of %llu row%s rejected (%s) and invalid_rows is fail_file%s",
		     (unsigned long long)info->rows_rejected, (unsigned long long)info->rows,
		     info->rows == 1 ? "" : "s", what,
		     info->rejects_written ? "; they are listed in the rejects file" : "");
		r = n->err;
		goto out;
	}
	if (info->rows == 0 || info->rows_uploaded == 0) {
		if (info->rows == 0)
			fail(n, -ENODATA, "no rows: the file has a header but no data rows");
		else if (info->rows == 1)
			fail(n, -ENODATA, "no rows left to import: its only row was rejected");
		else
			fail(n, -ENODATA, "no rows left to import: all %llu rows were rejected",
			     (unsigned long long)info->rows);
		r = n->err;
		goto out;
	}
	if (n->plan.n == 0) {
		fail(n, -EFBIG, "%s", n->reason[0] ? n->reason : "no rows fit in one upload");
		r = n->err;
		goto out;
	}
	/* One part: the whole source, as it is. */
	if (n->plan.n == 1) {
		n->plan.parts[0].offset = 0;
		n->plan.parts[0].bytes = copy ? info->bytes_after : n->size;
		info->head_bytes = 0;
	} else {
		info->head_bytes = n->plan.head;
		info->bytes_after = 0;
		for (size_t i = 0; i < n->plan.n; i++)
			info->bytes_after += n->plan.head + n->plan.parts[i].bytes;
	}
	info->header_len = n->plan.head;
	if (n->plan.n == 1 && n->collect && n->n_hashes <= n->folder->settings.coalesce_max_rows) {
		/* Kept while the file waits: no more memory than its emails take. */
		uint64_t *fit = n->n_hashes ? realloc(n->hashes, n->n_hashes * sizeof(*fit)) : NULL;

		info->emails = fit ? fit : n->hashes;
		info->n_emails = n->n_hashes;
		n->hashes = NULL;
		n->n_hashes = n->cap_hashes = 0;
	}
	info->parts = n->plan.parts;
	info->n_parts = n->plan.n;
	n->plan.parts = NULL;
	n->plan.n = n->plan.cap = 0;
	r = 0;
out:
	if (r < 0) {
		snprintf(reason, reasonsz, "%s", n->reason);
		/* Refused: nothing is uploaded. */
		info->rows_uploaded = 0;
		info->bytes_after = 0;
	}
	*ret = *info;
	memset(info, 0, sizeof(*info));
	info->fd = -1;
	if (r < 0 && ret->fd >= 0) {
		close(ret->fd);
		ret->fd = -1;
	}
	return r;
}

void normalizer_free(struct normalizer *n)
{
	if (!n)
		return;
	csvscan_free(n->scan);
	emailset_free(n->emails);
	csvhead_free(&n->head);
	csvhead_match_free(&n->match);
	plan_reset(&n->plan);
	free(n->repeats);
	free(n->hashes);
	free(n->out.buf);
	free(n->rej.buf);
	if (n->rej.fd >= 0)
		close(n->rej.fd);
	normalize_clear(&n->info);
	free(n);
}

void normalize_clear(struct normalize *r)
{
	for (size_t i = 0; i < r->n_renamed; i++) {
		free(r->renamed_from[i]);
		free(r->renamed_to[i]);
	}
	free(r->renamed_from);
	free(r->renamed_to);
	r->renamed_from = r->renamed_to = NULL;
	r->n_renamed = 0;
	free(r->parts);
	r->parts = NULL;
	r->n_parts = 0;
	free(r->emails);
	r->emails = NULL;
	r->n_emails = 0;
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}
