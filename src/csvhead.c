/* The CSV header row: read with libcsv, checked against the folder's column map. */
#include "csvhead.h"

#include <csv.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#define CSVHEAD_CHUNK 4096
#define CSVHEAD_SLICE 256

static const unsigned char utf8_bom[3] = { 0xef, 0xbb, 0xbf };

struct parse_state {
	char **fields;
	size_t n_fields;
	size_t cap;
	bool done; /* the first record has ended; later fields in the chunk are ignored */
	bool has_nul;
	int err;
};

/* errbuf helpers: every message is one line, truncated (never overflowing) when long. */
struct msg {
	char *buf;
	size_t size;
	size_t len;
};

static void msg_add(struct msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message did not fit: it ends in "..." instead, on a UTF-8 character's boundary. */
static void
msg_cut(struct msg *m)
{
	size_t at;

	if (m->size <= 4)
		return;
	at = m->size - 4;
	while (at > 0 && ((unsigned char)m->buf[at] & 0xc0) == 0x80)
		at--;
	memcpy(m->buf + at, "...", 4);
	m->len = m->size - 1;
}

static void
msg_add(struct msg *m, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (m->buf == NULL || m->size == 0)
		return;
	if (m->len >= m->size - 1) {
		/* Full to the last byte: whatever comes now is cut. */
		msg_cut(m);
		return;
	}
	va_start(ap, fmt);
	n = vsnprintf(m->buf + m->len, m->size - m->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= m->size - m->len)
		msg_cut(m); /* make a cut visible rather than letting a list look complete */
	else
		m->len += (size_t)n;
}

/* A name as the user would type it, in single quotes; control characters are escaped so that a
 * header with an embedded newline still gives a one-line message. */
static void
msg_add_name(struct msg *m, const char *s)
{
	const unsigned char *p;

	msg_add(m, "'");
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '\n')
			msg_add(m, "\\n");
		else if (*p == '\r')
			msg_add(m, "\\r");
		else if (*p == '\t')
			msg_add(m, "\\t");
		else if (*p == '\\' || *p == '\'')
			msg_add(m, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			msg_add(m, "\\x%02x", *p);
		else
			msg_add(m, "%c", *p);
	}
	msg_add(m, "'");
}

static void
msg_init(struct msg *m, char *buf, size_t size)
{
	m->buf = buf;
	m->size = size;
	m->len = 0;
	if (buf != NULL && size > 0)
		buf[0] = '\0';
}

static void
fields_free(char **fields, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(fields[i]);
	free(fields);
}

static void
csvhead_field_cb(void *s, size_t len, void *data)
{
	struct parse_state *st = data;
	char *f;

	if (st->done || st->err < 0)
		return;
	if (st->n_fields == st->cap) {
		size_t ncap = st->cap ? st->cap * 2 : 16;
		char **nf = realloc(st->fields, ncap * sizeof(*nf));

		if (nf == NULL) {
			st->err = -ENOMEM;
			return;
		}
		st->fields = nf;
		st->cap = ncap;
	}
	/* CSV_APPEND_NULL makes S a string, but it may still hold a NUL byte of its own. */
	if (memchr(s, '\0', len) != NULL)
		st->has_nul = true;
	f = malloc(len + 1);
	if (f == NULL) {
		st->err = -ENOMEM;
		return;
	}
	memcpy(f, s, len);
	f[len] = '\0';
	st->fields[st->n_fields++] = f;
}

static void
csvhead_record_cb(int c, void *data)
{
	struct parse_state *st = data;

	(void)c;
	st->done = true;
}

/* No byte counts as padding: libcsv would otherwise trim spaces and tabs around unquoted
 * fields, but Resend matches header names exactly, so " Email" must stay " Email" for the
 * check to say what Resend will say. */
static int
csvhead_no_space(unsigned char c)
{
	(void)c;
	return 0;
}

/* pread until LEN bytes or end of file: a short read is not the end of a regular file. */
static int
read_full(int fd, unsigned char *buf, size_t len, off_t off, size_t *ret_n)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*ret_n = got;
	return 0;
}

int
csvhead_parse(const void *data, size_t len, bool complete, struct csvhead *ret, char *errbuf,
	      size_t errsz)
{
	const unsigned char *buf = data;
	struct parse_state st = { 0 };
	struct csv_parser p;
	struct msg m;
	size_t off = 0, end = len < CSVHEAD_MAX_BYTES ? len : CSVHEAD_MAX_BYTES;
	bool eof = false;
	int r;

	msg_init(&m, errbuf, errsz);
	/* Lenient, as the files people export are: a stray quote inside an unquoted field is
	 * kept as a character, not an error. Only a quote that is never closed is refused, at
	 * the end (see below). */
	(void)csv_init(&p, CSV_APPEND_NULL); /* fails for a NULL parser only */
	csv_set_space_func(&p, csvhead_no_space);
	/* libcsv grows a field 128 bytes at a time by default: a long header would take
	 * hundreds of reallocs. */
	csv_set_blk_size(&p, CSVHEAD_CHUNK);

	if (len >= sizeof(utf8_bom) && memcmp(buf, utf8_bom, sizeof(utf8_bom)) == 0)
		off = sizeof(utf8_bom);
	/* In slices: libcsv parses all it is given, and only the first record is wanted. */
	while (!st.done && off < end) {
		size_t n = end - off < CSVHEAD_SLICE ? end - off : CSVHEAD_SLICE;

		if (csv_parse(&p, buf + off, n, csvhead_field_cb, csvhead_record_cb, &st) != n) {
			r = -ENOMEM;
			msg_add(&m, "cannot parse the CSV header: %s", csv_strerror(csv_error(&p)));
			goto fail;
		}
		off += n;
		if (st.err < 0) {
			r = st.err;
			msg_add(&m, "cannot parse the CSV header: %s", strerror(-r));
			goto fail;
		}
	}
	if (!st.done) {
		/* At the cap, the header may still end exactly there, at the end of the file. */
		if (len > CSVHEAD_MAX_BYTES || !complete) {
			r = -E2BIG;
			msg_add(&m, "CSV header row is longer than %d bytes", CSVHEAD_MAX_BYTES);
			if (p.quoted)
				msg_add(&m, " (it is still inside a quoted field: is a closing '\"' "
					    "missing?)");
			goto fail;
		}
		eof = true;
	}

	if (!st.done && eof) {
		/* A header without a line end is still a header. libcsv only reports a quoted
		 * field left open at the end in strict mode, and strict mode would also refuse
		 * what we want to accept while parsing, so it is switched on for the end only. */
		csv_set_opts(&p, CSV_APPEND_NULL | CSV_STRICT | CSV_STRICT_FINI);
		if (csv_fini(&p, csvhead_field_cb, csvhead_record_cb, &st) != 0) {
			r = -EILSEQ;
			msg_add(&m,
				"CSV header is malformed: field %zu opens a quote ('\"') that is "
				"never closed",
				st.n_fields + 1);
			goto fail;
		}
		if (st.err < 0) {
			r = st.err;
			msg_add(&m, "cannot parse the CSV header: %s", strerror(-r));
			goto fail;
		}
	}
	if (!st.done || st.n_fields == 0) {
		r = -ENODATA;
		msg_add(&m, len == 0 ? "the file is empty" : "the file has no CSV header row");
		goto fail;
	}
	if (st.has_nul) {
		/* Typically a UTF-16 export ("Unicode text" in spreadsheets); Resend wants UTF-8. */
		r = -EILSEQ;
		msg_add(&m, "CSV header contains NUL bytes: the file is not UTF-8 text "
			    "(saved as UTF-16?)");
		goto fail;
	}

	csv_free(&p);
	ret->fields = st.fields;
	ret->n_fields = st.n_fields;
	return 0;

fail:
	csv_free(&p);
	fields_free(st.fields, st.n_fields);
	return r;
}

int
csvhead_read(int fd, struct csvhead *ret, char *errbuf, size_t errsz)
{
	unsigned char *buf = malloc(CSVHEAD_MAX_BYTES + 1);
	size_t n = 0;
	int r;

	struct msg m;

	msg_init(&m, errbuf, errsz);
	if (buf == NULL) {
		msg_add(&m, "cannot read the file: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	r = read_full(fd, buf, CSVHEAD_MAX_BYTES + 1, 0, &n);
	if (r < 0)
		msg_add(&m, "cannot read the file: %s", strerror(-r));
	else
		r = csvhead_parse(buf, n, n <= CSVHEAD_MAX_BYTES, ret, errbuf, errsz);
	free(buf);
	return r;
}

void
csvhead_free(struct csvhead *h)
{
	if (h == NULL)
		return;
	fields_free(h->fields, h->n_fields);
	h->fields = NULL;
	h->n_fields = 0;
}

/* Whether header name A names column B: equal, or with csv.header relaxed, equal but for
 * ASCII case and surrounding whitespace. */
static bool
name_matches(const char *a, const char *b, bool relaxed)
{
	size_t la, lb;

	if (!relaxed)
		return strcmp(a, b) == 0;
	while (*a == ' ' || *a == '\t')
		a++;
	while (*b == ' ' || *b == '\t')
		b++;
	la = strlen(a);
	lb = strlen(b);
	while (la > 0 && (a[la - 1] == ' ' || a[la - 1] == '\t'))
		la--;
	while (lb > 0 && (b[lb - 1] == ' ' || b[lb - 1] == '\t'))
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* The index of the header field naming NAME, or -1. */
static ssize_t
csvhead_find(const struct csvhead *h, const char *name, bool relaxed)
{
	size_t i;

	for (i = 0; i < h->n_fields; i++)
		if (name_matches(h->fields[i], name, relaxed))
			return (ssize_t)i;
	return -1;
}

static bool
csvhead_has(const struct csvhead *h, const char *name, bool relaxed)
{
	return csvhead_find(h, name, relaxed) >= 0;
}

/* A header name equal to NAME but for case: the likely mistake behind a miss. */
static const char *
csvhead_find_nocase(const struct csvhead *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->n_fields; i++)
		if (strcasecmp(h->fields[i], name) == 0)
			return h->fields[i];
	return NULL;
}

struct wanted {
	const char *column;
	const char *key;      /* where in the configuration the name comes from */
	const char *key_tail; /* e.g. a property key, appended to KEY */
};

static void
check_one(const struct csvhead *h, const struct wanted *w, bool relaxed, struct msg *m,
	  size_t *n_missing)
{
	const char *near;

	if (csvhead_has(h, w->column, relaxed))
		return;
	if ((*n_missing)++ > 0)
		msg_add(m, ", ");
	msg_add_name(m, w->column);
	msg_add(m, " (%s%s", w->key, w->key_tail);
	near = relaxed ? NULL : csvhead_find_nocase(h, w->column);
	if (near != NULL) {
		msg_add(m, "; the header has ");
		msg_add_name(m, near);
		msg_add(m, ", names are case-sensitive");
	}
	msg_add(m, ")");
}

/* The columns the folder's map names, with where in the configuration each comes from. */
static size_t
wanted_columns(const struct config_column_map *map, struct wanted *fixed)
{
	size_t n_fixed = 0;

	/* Without a map Resend looks for its own names, of which only "email" is required. A map
	 * without an email column leaves Resend looking for "email" as well. */
	if (!map->present)
		fixed[n_fixed++] = (struct wanted){ "email", "required without a column_map", "" };
	else if (map->email == NULL)
		fixed[n_fixed++] = (struct wanted){ "email", "Resend's default while "
							     "column_map.email is not set", "" };
	else
		fixed[n_fixed++] = (struct wanted){ map->email, "column_map.email", "" };
	if (map->present && map->first_name != NULL)
		fixed[n_fixed++] = (struct wanted){ map->first_name, "column_map.first_name", "" };
	if (map->present && map->last_name != NULL)
		fixed[n_fixed++] = (struct wanted){ map->last_name, "column_map.last_name", "" };
	if (map->present && map->unsubscribed != NULL)
		fixed[n_fixed++] =
			(struct wanted){ map->unsubscribed, "column_map.unsubscribed", "" };
	return n_fixed;
}

static int
check_columns(const struct csvhead *h, const struct config_column_map *map, bool relaxed,
	      char *errbuf, size_t errsz)
{
	struct wanted fixed[4];
	size_t n_fixed, n_missing = 0, n_total = 0, i;
	struct msg m;

	n_fixed = wanted_columns(map, fixed);
	/* Counted first so that the message can say "column" or "columns" up front. */
	for (i = 0; i < n_fixed; i++)
		n_total += !csvhead_has(h, fixed[i].column, relaxed);
	if (map->present)
		for (i = 0; i < map->n_properties; i++)
			n_total += !csvhead_has(h, map->properties[i].column, relaxed);
	if (n_total == 0)
		return 0;

	msg_init(&m, errbuf, errsz);
	msg_add(&m, "CSV header lacks %s ", n_total == 1 ? "column" : "columns");
	for (i = 0; i < n_fixed; i++)
		check_one(h, &fixed[i], relaxed, &m, &n_missing);
	if (map->present)
		for (i = 0; i < map->n_properties; i++) {
			struct wanted w = { map->properties[i].column, "column_map.properties.",
					    map->properties[i].key };

			check_one(h, &w, relaxed, &m, &n_missing);
		}
	if (relaxed)
		msg_add(&m, "; names matched ignoring case and surrounding spaces");
	msg_add(&m, "; header has: ");
	for (i = 0; i < h->n_fields; i++) {
		if (i > 0)
			msg_add(&m, ", ");
		msg_add_name(&m, h->fields[i]);
	}
	return -ENOENT;
}

int
csvhead_check(const struct csvhead *h, const struct config_column_map *map, char *errbuf,
	      size_t errsz)
{
	return check_columns(h, map, false, errbuf, errsz);
}

/* NAME becomes COLUMN in the uploaded header, unless it is COLUMN already. */
static void
rename_to(const struct csvhead *h, struct csvhead_match *m, const char *column)
{
	ssize_t i = csvhead_find(h, column, true);

	if (i < 0 || m->names[i] != h->fields[i])
		return;
	if (strcmp(h->fields[i], column) != 0) {
		m->names[i] = column;
		m->n_renamed++;
	}
}

int
csvhead_match(const struct csvhead *h, const struct config_column_map *map,
	      enum config_header mode, struct csvhead_match *ret, char *errbuf, size_t errsz)
{
	bool relaxed = mode == CONFIG_HEADER_RELAXED;
	struct wanted fixed[4];
	size_t n_fixed, i;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = check_columns(h, map, relaxed, errbuf, errsz);
	if (r < 0)
		return r;
	ret->names = calloc(h->n_fields ? h->n_fields : 1, sizeof(*ret->names));
	if (ret->names == NULL) {
		snprintf(errbuf, errsz, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < h->n_fields; i++)
		ret->names[i] = h->fields[i];
	n_fixed = wanted_columns(map, fixed);
	ret->email = (size_t)csvhead_find(h, fixed[0].column, relaxed);
	if (relaxed) {
		for (i = 0; i < n_fixed; i++)
			rename_to(h, ret, fixed[i].column);
		if (map->present)
			for (i = 0; i < map->n_properties; i++)
				rename_to(h, ret, map->properties[i].column);
	}
	return 0;
}

void
csvhead_match_free(struct csvhead_match *m)
{
	free(m->names);
	m->names = NULL;
}
