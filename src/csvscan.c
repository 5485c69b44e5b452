/* The decoded text goes through one loop that counts lines and columns, refuses bytes no text
 * holds, and hands libcsv whole pieces up to each line end. A record can only end at a line end
 * (libcsv's terminators are CR and LF), so after each piece the scanner knows whether one ended,
 * and where it started. */
#include "csvscan.h"

#include <csv.h>
#include <errno.h>
#include <iconv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define CSVSCAN_OUT_BYTES (64 * 1024)
#define CSVSCAN_PEND_MAX 8

struct csvscan {
	struct csvscan_dialect d;
	csvscan_record_cb cb;
	void *data;
	iconv_t cd; /* (iconv_t)-1 for UTF-8 */
	uint64_t src_pos;
	unsigned char pend[CSVSCAN_PEND_MAX]; /* the start of a character cut by a feed's end */
	size_t n_pend;
	unsigned char *stage; /* PEND and a feed together, for iconv */
	size_t stage_cap;
	char *out;
	struct csv_parser p;
	bool p_open;
	/* The record being read. */
	char *rec;
	size_t rec_len, rec_cap;
	bool rec_started, rec_done;
	uint64_t rec_line, rec_offset;
	char *fbuf;
	size_t flen, fcap;
	size_t *foff, *flens;
	char **fptrs;
	size_t fptrs_cap;
	size_t n_fields, fields_cap;
	uint64_t n_records;
	/* Where the scan is. */
	uint64_t line, col, dpos;
	bool prev_cr, line_has_chars;
	struct csvscan_stats st;
	int err;
	char errmsg[320];
};

static int scan_fail(struct csvscan *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int scan_fail(struct csvscan *s, int err, const char *fmt, ...)
{
	va_list ap;

	if (s->err)
		return s->err;
	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	s->err = err;
	return err;
}

static void field_cb(void *f, size_t len, void *data)
{
	struct csvscan *s = data;

	if (s->err)
		return;
	if (s->n_fields == s->fields_cap) {
		size_t ncap = s->fields_cap ? s->fields_cap * 2 : 16;
		size_t *no = realloc(s->foff, ncap * sizeof(*no));
		size_t *nl;

		if (!no) {
			s->err = -ENOMEM;
			return;
		}
		s->foff = no;
		nl = realloc(s->flens, ncap * sizeof(*nl));
		if (!nl) {
			s->err = -ENOMEM;
			return;
		}
		s->flens = nl;
		s->fields_cap = ncap;
	}
	if (s->flen + len + 1 > s->fcap) {
		size_t ncap = s->fcap ? s->fcap : 4096;
		char *nb;

		while (ncap < s->flen + len + 1)
			ncap *= 2;
		nb = realloc(s->fbuf, ncap);
		if (!nb) {
			s->err = -ENOMEM;
			return;
		}
		s->fbuf = nb;
		s->fcap = ncap;
	}
	memcpy(s->fbuf + s->flen, f, len);
	s->fbuf[s->flen + len] = '\0';
	s->foff[s->n_fields] = s->flen;
	s->flens[s->n_fields++] = len;
	s->flen += len + 1;
}

static void record_cb(int c, void *data)
{
	struct csvscan *s = data;

	(void)c;
	s->rec_done = true;
}

/* No byte is padding: fields keep their spaces, as Resend would see them. */
static int no_space(unsigned char c)
{
	(void)c;
	return 0;
}

static void parser_init(struct csv_parser *p, char delimiter)
{
	(void)csv_init(p, CSV_APPEND_NULL);
	csv_set_space_func(p, no_space);
	csv_set_delim(p, (unsigned char)delimiter);
	csv_set_blk_size(p, 4096);
}

/* Where, from the start of the record, its quoted field that is never closed opens: the
 * record's text replayed through a parser of its own, one byte at a time (an error path). */
static void open_quote_at(struct csvscan *s, uint64_t *ret_line, uint64_t *ret_col)
{
	struct csv_parser p;
	uint64_t line = s->rec_line, col = 0, qline = s->rec_line, qcol = 1;
	bool prev_cr = false;

	parser_init(&p, s->d.delimiter);
	for (size_t i = 0; i < s->rec_len; i++) {
		unsigned char c = (unsigned char)s->rec[i];
		int was = p.quoted;

		if (csv_parse(&p, &c, 1, NULL, NULL, NULL) != 1)
			break;
		if (!was && p.quoted) {
			qline = line;
			qcol = col + 1;
		}
		if (c == '\r' || (c == '\n' && !prev_cr)) {
			line++;
			col = 0;
		} else if (c != '\n' && (c & 0xc0) != 0x80) {
			col++;
		}
		prev_cr = c == '\r';
	}
	csv_free(&p);
	*ret_line = qline;
	*ret_col = qcol;
}

static int deliver(struct csvscan *s, size_t raw_len)
{
	struct csvscan_record r;
	int ret;

	if (s->err)
		return s->err;
	if (s->fptrs_cap < s->fields_cap || !s->fptrs) {
		size_t ncap = s->fields_cap ? s->fields_cap : 1;
		char **np = realloc(s->fptrs, ncap * sizeof(*np));

		if (!np)
			return scan_fail(s, -ENOMEM, "out of memory");
		s->fptrs = np;
		s->fptrs_cap = ncap;
	}
	for (size_t i = 0; i < s->n_fields; i++)
		s->fptrs[i] = s->fbuf + s->foff[i];
	r.fields = s->fptrs;
	r.lens = s->flens;
	r.n_fields = s->n_fields;
	r.raw = s->rec;
	r.raw_len = raw_len;
	r.line = s->rec_line;
	r.offset = s->rec_offset;
	r.index = s->n_records++;
	ret = s->cb ? s->cb(&r, s->data) : 0;
	s->rec_len = 0;
	s->rec_started = s->rec_done = false;
	s->n_fields = 0;
	s->flen = 0;
	if (ret < 0 && !s->err) {
		s->err = ret;
		s->errmsg[0] = '\0';
	}
	return ret < 0 ? ret : 0;
}

static int rec_append(struct csvscan *s, const unsigned char *b, size_t n)
{
	if (n == 0)
		return 0;
	if (s->rec_len + n > CSVSCAN_MAX_ROW_BYTES) {
		uint64_t ql, qc;

		if (s->p.quoted) {
			open_quote_at(s, &ql, &qc);
			return scan_fail(s, -E2BIG, "line %llu: the row is longer than %d bytes: the "
				"quoted field opened at line %llu, column %llu is never closed",
				(unsigned long long)s->rec_line, CSVSCAN_MAX_ROW_BYTES,
				(unsigned long long)ql, (unsigned long long)qc);
		}
		return scan_fail(s, -E2BIG, "line %llu: the row is longer than %d bytes",
				 (unsigned long long)s->rec_line, CSVSCAN_MAX_ROW_BYTES);
	}
	if (s->rec_len + n > s->rec_cap) {
		size_t ncap = s->rec_cap ? s->rec_cap : 4096;
		char *nr;

		while (ncap < s->rec_len + n)
			ncap *= 2;
		nr = realloc(s->rec, ncap);
		if (!nr)
			return scan_fail(s, -ENOMEM, "out of memory");
		s->rec = nr;
		s->rec_cap = ncap;
	}
	memcpy(s->rec + s->rec_len, b, n);
	s->rec_len += n;
	if (csv_parse(&s->p, b, n, field_cb, record_cb, s) != n)
		return scan_fail(s, -ENOMEM, "cannot parse: %s", csv_strerror(csv_error(&s->p)));
	if (s->err)
		return s->err;
	return 0;
}

/* Decoded, well-formed UTF-8 text. */
static int scan_text(struct csvscan *s, const unsigned char *b, size_t n)
{
	size_t seg = 0; /* the start of what is not yet in the record */
	int r;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = b[i];

		if (s->prev_cr && c != '\n')
			s->st.lone_cr++;
		if (c == '\n' || c == '\r') {
			bool crlf_tail = c == '\n' && s->prev_cr;

			s->prev_cr = c == '\r';
			if (s->rec_started) {
				r = rec_append(s, b + seg, i + 1 - seg);
				if (r < 0)
					return r;
			}
			seg = i + 1;
			if (crlf_tail)
				continue;
			if (!s->line_has_chars && !s->p.quoted)
				s->st.blank_lines++;
			s->line++;
			s->st.lines++;
			s->col = 0;
			s->line_has_chars = false;
			if (s->rec_done) {
				r = deliver(s, s->rec_len - 1);
				if (r < 0)
					return r;
			}
			continue;
		}
		s->prev_cr = false;
		if (c < 0x20 && c != '\t') {
			if (c == 0)
				return scan_fail(s, -EILSEQ, "line %llu, column %llu: a NUL byte: this "
					"is not text in the encoding it was read as (UTF-16 without a "
					"byte-order mark? binary data?)",
					(unsigned long long)s->line, (unsigned long long)s->col + 1);
			return scan_fail(s, -EILSEQ, "line %llu, column %llu: control character 0x%02x: "
				"binary data, not CSV text", (unsigned long long)s->line,
				(unsigned long long)s->col + 1, c);
		}
		if (!s->rec_started) {
			s->rec_started = true;
			s->rec_line = s->line;
			s->rec_offset = s->dpos + i;
			seg = i;
		}
		/* U+0080..U+009F: C1 controls, no text holds them; typically windows-1252 read as
		 * ISO-8859-1. (Decoded text never cuts a character between two feeds.) */
		if (c == 0xc2 && i + 1 < n && b[i + 1] < 0xa0)
			return scan_fail(s, -EILSEQ, "line %llu, column %llu: control character "
				"U+%04X: not text%s", (unsigned long long)s->line,
				(unsigned long long)s->col + 1, (unsigned)b[i + 1],
				s->d.iconv_from && strncmp(s->d.iconv_from, "ISO-8859", 8) == 0
					? " (is the file windows-1252 rather than iso-8859?)" : "");
		/* The run of ordinary characters that starts here, in one go. */
		size_t j = i + 1;
		uint64_t cols = (c & 0xc0) != 0x80;

		while (j < n && (b[j] >= 0x20 || b[j] == '\t') && b[j] != 0xc2) {
			cols += (b[j] & 0xc0) != 0x80;
			j++;
		}
		s->col += cols;
		s->line_has_chars = true;
		i = j - 1;
	}
	if (s->rec_started) {
		r = rec_append(s, b + seg, n - seg);
		if (r < 0)
			return r;
	}
	s->dpos += n;
	s->st.decoded_bytes += n;
	return 0;
}

/* UTF-8 as it comes: validated; a character cut by the feed's end waits for the next. */
static int scan_utf8(struct csvscan *s, const unsigned char *b, size_t n, bool last)
{
	size_t good = 0;

	while (good < n) {
		size_t k;

		/* ASCII eight bytes at a time. */
		while (good + 8 <= n) {
			uint64_t w;

			memcpy(&w, b + good, 8);
			if (w & UINT64_C(0x8080808080808080))
				break;
			good += 8;
		}
		if (good >= n)
			break;
		if (b[good] < 0x80) {
			good++;
			continue;
		}
		k = text_utf8_len(b + good, n - good);
		if (k > 1)
			s->st.multibyte++;
		if (k == 0) {
			/* Cut short by the feed's end, or invalid? A longer look decides. */
			unsigned char tmp[4] = {0x80, 0x80, 0x80, 0x80};
			size_t avail = n - good;

			if (!last && avail < 4) {
				memcpy(tmp, b + good, avail);
				if (text_utf8_len(tmp, 4) > avail) {
					int r = scan_text(s, b, good);

					if (r < 0)
						return r;
					memcpy(s->pend, b + good, avail);
					s->n_pend = avail;
					return 0;
				}
			}
			{
				int r = scan_text(s, b, good);

				if (r < 0)
					return r;
			}
			s->st.bad_utf8 = true;
			return scan_fail(s, -EILSEQ, "line %llu, column %llu: byte 0x%02x is not UTF-8",
					 (unsigned long long)s->line, (unsigned long long)s->col + 1,
					 b[good]);
		}
		good += k;
	}
	return scan_text(s, b, n);
}

static int scan_iconv(struct csvscan *s, unsigned char *in, size_t inleft, bool last)
{
	char *ip = (char *)in;

	while (inleft > 0) {
		char *op = s->out;
		size_t outleft = CSVSCAN_OUT_BYTES;
		size_t k = iconv(s->cd, &ip, &inleft, &op, &outleft);
		int e = errno;
		int r = scan_text(s, (unsigned char *)s->out, CSVSCAN_OUT_BYTES - outleft);

		if (r < 0)
			return r;
		if (k != (size_t)-1)
			break;
		if (e == E2BIG)
			continue;
		if (e == EINVAL && !last && inleft <= CSVSCAN_PEND_MAX) {
			memcpy(s->pend, ip, inleft);
			s->n_pend = inleft;
			return 0;
		}
		if (e == EINVAL)
			return scan_fail(s, -EILSEQ, "line %llu, column %llu: the file ends in the "
				"middle of a %s character", (unsigned long long)s->line,
				(unsigned long long)s->col + 1, s->d.iconv_from);
		return scan_fail(s, -EILSEQ, "line %llu, column %llu: byte 0x%02x is not %s text",
				 (unsigned long long)s->line, (unsigned long long)s->col + 1,
				 (unsigned char)*ip, s->d.iconv_from);
	}
	return 0;
}

static int scan_source(struct csvscan *s, const unsigned char *b, size_t n, bool last)
{
	unsigned char *in;
	size_t total = s->n_pend + n;

	if (s->n_pend == 0) {
		in = (unsigned char *)b;
	} else {
		if (total > s->stage_cap) {
			unsigned char *ns = realloc(s->stage, total);

			if (!ns)
				return scan_fail(s, -ENOMEM, "out of memory");
			s->stage = ns;
			s->stage_cap = total;
		}
		memcpy(s->stage, s->pend, s->n_pend);
		if (n)
			memcpy(s->stage + s->n_pend, b, n);
		in = s->stage;
	}
	s->n_pend = 0;
	if (s->cd == (iconv_t)-1)
		return scan_utf8(s, in, total, last);
	return scan_iconv(s, in, total, last);
}

int csvscan_new(const struct csvscan_dialect *d, csvscan_record_cb cb, void *data,
		struct csvscan **ret)
{
	struct csvscan *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->d = *d;
	s->cb = cb;
	s->data = data;
	s->cd = (iconv_t)-1;
	s->line = d->first_line ? d->first_line : 1;
	if (d->iconv_from) {
		s->cd = iconv_open("UTF-8", d->iconv_from);
		if (s->cd == (iconv_t)-1) {
			free(s);
			return -EINVAL;
		}
		s->out = malloc(CSVSCAN_OUT_BYTES);
		if (!s->out) {
			csvscan_free(s);
			return -ENOMEM;
		}
	}
	parser_init(&s->p, d->delimiter);
	s->p_open = true;
	*ret = s;
	return 0;
}

int csvscan_feed(struct csvscan *s, const void *buf, size_t len)
{
	const unsigned char *b = buf;

	if (s->err)
		return s->err;
	if (s->src_pos < s->d.skip) {
		uint64_t drop = s->d.skip - s->src_pos;

		if (drop > len)
			drop = len;
		s->src_pos += drop;
		b += drop;
		len -= (size_t)drop;
	}
	s->src_pos += len;
	if (len == 0)
		return 0;
	return scan_source(s, b, len, false);
}

int csvscan_finish(struct csvscan *s)
{
	int r;

	if (s->err)
		return s->err;
	if (s->n_pend) {
		r = scan_source(s, NULL, 0, true);
		if (r < 0)
			return r;
	}
	if (s->line_has_chars)
		s->st.lines++;
	if (s->prev_cr)
		s->st.lone_cr++;
	s->prev_cr = false;
	if (s->p.quoted && s->rec_started) {
		uint64_t ql, qc;

		open_quote_at(s, &ql, &qc);
		return scan_fail(s, -EBADMSG, "line %llu, column %llu: a quoted field is never "
				 "closed: the file ends inside it", (unsigned long long)ql,
				 (unsigned long long)qc);
	}
	if (csv_fini(&s->p, field_cb, record_cb, s) != 0)
		return scan_fail(s, -EBADMSG, "line %llu: the last row cannot be read",
				 (unsigned long long)s->rec_line);
	if (s->err)
		return s->err;
	if (s->rec_done && s->rec_started)
		return deliver(s, s->rec_len);
	return 0;
}

const char *csvscan_error(const struct csvscan *s)
{
	if (s->errmsg[0])
		return s->errmsg;
	return s->err ? strerror(-s->err) : "";
}

const struct csvscan_stats *csvscan_stats(const struct csvscan *s)
{
	return &s->st;
}

void csvscan_free(struct csvscan *s)
{
	if (!s)
		return;
	if (s->cd != (iconv_t)-1)
		iconv_close(s->cd);
	if (s->p_open)
		csv_free(&s->p);
	free(s->stage);
	free(s->out);
	free(s->rec);
	free(s->fbuf);
	free(s->foff);
	free(s->flens);
	free(s->fptrs);
	free(s);
}
