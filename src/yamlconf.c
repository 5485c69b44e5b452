/* A YAML file against tables of fields. libyaml's document API gives a node tree with
 * positions; a walk over it reports each problem where it is and goes on, so that the caller
 * gets every error of the file at once. */
#include "yamlconf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsops.h"

struct yamlconf_error {
	size_t line, column, seq;
	char *text;
};

struct yamlconf {
	char *file;
	struct yamlconf_limits limits;
	char *buf; /* the whole file, which the parser reads from */
	size_t len;
	yaml_parser_t parser;
	bool parser_ready;
	yaml_document_t doc;
	bool doc_ready;
	struct yamlconf_error *errors;
	size_t n_errors; /* kept */
	size_t n_said;   /* kept or not: beyond the limit, or out of memory */
	bool truncated;
};

/* ---- errors ---------------------------------------------------------------------------- */

static void add_error(struct yamlconf *yc, size_t line, size_t column, const char *path,
		      const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

static void add_error(struct yamlconf *yc, size_t line, size_t column, const char *path,
		      const char *fmt, va_list ap)
{
	char msg[1024];

	yc->n_said++;
	if (yc->n_errors >= yc->limits.max_errors) {
		yc->truncated = true;
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);

	struct yamlconf_error *e = realloc(yc->errors, (yc->n_errors + 1) * sizeof(*e));
	if (!e)
		return;
	yc->errors = e;
	e = &yc->errors[yc->n_errors];
	e->line = line;
	e->column = column;
	e->seq = yc->n_errors;
	int n;
	if (line == 0)
		n = asprintf(&e->text, "%s: %s", yc->file, msg);
	else if (path && *path)
		n = asprintf(&e->text, "%s:%zu:%zu: %s: %s", yc->file, line, column, path, msg);
	else
		n = asprintf(&e->text, "%s:%zu:%zu: %s", yc->file, line, column, msg);
	if (n < 0)
		return;
	yc->n_errors++;
}

void yamlconf_error_at(struct yamlconf *yc, size_t line, size_t column, const char *path,
		       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_error(yc, line, column, path, fmt, ap);
	va_end(ap);
}

void yamlconf_error(struct yamlconf *yc, const yaml_node_t *n, const char *path, const char *fmt,
		    ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_error(yc, n->start_mark.line + 1, n->start_mark.column + 1, path, fmt, ap);
	va_end(ap);
}

void yamlconf_missing(struct yamlconf *yc, const yaml_node_t *map, const char *path,
		      const char *key, const char *hint)
{
	yamlconf_error(yc, map, path, "missing required key '%s'%s%s", key, hint ? ": " : "",
		       hint ? hint : "");
}

size_t yamlconf_error_count(const struct yamlconf *yc)
{
	return yc->n_said;
}

static int error_cmp(const void *a, const void *b)
{
	const struct yamlconf_error *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->column != y->column)
		return x->column < y->column ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool append(char ***items, size_t *count, char *text)
{
	char **v = realloc(*items, (*count + 1) * sizeof(*v));

	if (!v)
		return false;
	*items = v;
	v[(*count)++] = text;
	return true;
}

/* A caller checks in an order of its own (what depends on what), but a file is read top to
 * bottom: the errors go out in file order. */
void yamlconf_flush_errors(struct yamlconf *yc, char ***items, size_t *count)
{
	if (yc->n_errors > 0) /* errors is NULL without */
		qsort(yc->errors, yc->n_errors, sizeof(*yc->errors), error_cmp);
	for (size_t i = 0; i < yc->n_errors; i++) {
		if (!append(items, count, yc->errors[i].text))
			free(yc->errors[i].text);
	}
	if (yc->truncated) {
		char *text;
		if (asprintf(&text, "%s: too many errors, stopped after %zu", yc->file,
			     yc->limits.max_errors) >= 0 &&
		    !append(items, count, text))
			free(text);
	}
	free(yc->errors);
	yc->errors = NULL;
	yc->n_errors = 0;
	yc->n_said = 0;
	yc->truncated = false;
}

void yamlconf_quote(char *buf, size_t size, const char *s)
{
	size_t o = 0;

	for (; *s && o + 5 < size; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	if (*s && o + 4 <= size) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
}

/* ---- the file and its document --------------------------------------------------------- */

static int read_whole_file(struct yamlconf *yc)
{
	const char *noun = yc->limits.noun;
	/* O_NONBLOCK: a FIFO given as the file must not hang us before fstat refuses it. */
	int fd = open(yc->file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), r;
	struct stat st;

	if (fd < 0) {
		r = -errno;
		yamlconf_error_at(yc, 0, 0, NULL, "cannot open %s: %s", noun, strerror(-r));
		return r;
	}
	/* fstat first, for the size the message names; fsops_read_fd checks again as it reads. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size > yc->limits.max_bytes) {
		close(fd);
		yamlconf_error_at(yc, 0, 0, NULL,
				  "%s is %jd bytes, over the limit of %zu bytes: is it the right "
				  "file?",
				  noun, (intmax_t)st.st_size, yc->limits.max_bytes);
		return -EFBIG;
	}
	r = fsops_read_fd(fd, yc->limits.max_bytes, &yc->buf, &yc->len);
	if (r == -EINVAL)
		yamlconf_error_at(yc, 0, 0, NULL, "not a regular file");
	else if (r == -EFBIG)
		yamlconf_error_at(yc, 0, 0, NULL, "%s grew over the limit of %zu bytes while being "
				  "read", noun, yc->limits.max_bytes);
	else if (r < 0 && r != -ENOMEM)
		yamlconf_error_at(yc, 0, 0, NULL, "cannot read %s: %s", noun, strerror(-r));
	return r;
}

int yamlconf_open(const char *file, const struct yamlconf_limits *limits, struct yamlconf **ret)
{
	struct yamlconf *yc = calloc(1, sizeof(*yc));
	int r;

	if (!yc || !(yc->file = strdup(file))) {
		free(yc);
		return -ENOMEM;
	}
	yc->limits = *limits;
	r = read_whole_file(yc);
	if (r == -ENOMEM) {
		yamlconf_free(yc);
		return r;
	}
	*ret = yc;
	return r;
}

static bool event_has_anchor(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return ev->data.scalar.anchor != NULL;
	case YAML_SEQUENCE_START_EVENT:
		return ev->data.sequence_start.anchor != NULL;
	case YAML_MAPPING_START_EVENT:
		return ev->data.mapping_start.anchor != NULL;
	default:
		return false;
	}
}

/* libyaml's loader costs time quadratic in nesting depth and in the number of anchors. One
 * pass over the events refuses such input, with its position, in milliseconds instead of
 * minutes. Syntax errors are left to the loader, which reports them the same way. */
static int prescan(struct yamlconf *yc)
{
	yaml_parser_t p;
	yaml_event_t ev;
	int depth = 0, anchors = 0, max_depth = yc->limits.max_depth;
	int max_anchors = yc->limits.max_anchors;
	bool ok = true;

	if (!yaml_parser_initialize(&p))
		return -ENOMEM;
	yaml_parser_set_input_string(&p, (const unsigned char *)yc->buf, yc->len);
	while (yaml_parser_parse(&p, &ev)) {
		yaml_event_type_t type = ev.type;
		if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT)
			depth++;
		else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT)
			depth--;
		if (event_has_anchor(&ev))
			anchors++;
		if (depth > max_depth || anchors > max_anchors) {
			yamlconf_error_at(
				yc, ev.start_mark.line + 1, ev.start_mark.column + 1, NULL,
				depth > max_depth ? "nested more than %d levels deep: not %s"
						  : "more than %d anchors: not %s",
				depth > max_depth ? max_depth : max_anchors, yc->limits.kind);
			ok = false;
		}
		yaml_event_delete(&ev);
		if (!ok || type == YAML_STREAM_END_EVENT)
			break;
	}
	yaml_parser_delete(&p);
	return ok ? 0 : -EINVAL;
}

/* libyaml reports reader errors (bad encoding) by byte offset only. */
static void offset_to_position(const char *buf, size_t len, size_t offset, size_t *line,
			       size_t *column)
{
	*line = 1;
	*column = 1;
	for (size_t i = 0; i < offset && i < len; i++) {
		if (buf[i] == '\n') {
			(*line)++;
			*column = 1;
		} else {
			(*column)++;
		}
	}
}

static void report_parser_error(struct yamlconf *yc)
{
	const yaml_parser_t *p = &yc->parser;
	size_t line, column;
	const char *problem = p->problem ? p->problem : "unknown error";

	if (p->error == YAML_READER_ERROR) {
		offset_to_position(yc->buf, yc->len, p->problem_offset, &line, &column);
		/* problem_value is -1 for a truncated sequence: show the byte itself. */
		unsigned byte =
			p->problem_offset < yc->len ? (unsigned char)yc->buf[p->problem_offset] : 0;
		yamlconf_error_at(yc, line, column, NULL,
				  "invalid text: %s (byte 0x%02x); the file must be UTF-8 YAML",
				  problem, byte);
		return;
	}
	line = p->problem_mark.line + 1;
	column = p->problem_mark.column + 1;
	if (p->context)
		yamlconf_error_at(yc, line, column, NULL,
				  "YAML syntax error: %s %s (line %zu, column %zu)", problem,
				  p->context, p->context_mark.line + 1, p->context_mark.column + 1);
	else
		yamlconf_error_at(yc, line, column, NULL, "YAML syntax error: %s", problem);
}

int yamlconf_load(struct yamlconf *yc, const yaml_node_t **ret_root)
{
	int r;

	if (!yaml_parser_initialize(&yc->parser))
		return -ENOMEM;
	yc->parser_ready = true;
	r = prescan(yc);
	if (r < 0)
		return r;
	yaml_parser_set_input_string(&yc->parser, (const unsigned char *)yc->buf, yc->len);
	if (!yaml_parser_load(&yc->parser, &yc->doc)) {
		report_parser_error(yc);
		return -EINVAL;
	}
	yc->doc_ready = true;
	*ret_root = yaml_document_get_root_node(&yc->doc);
	return 0;
}

void yamlconf_expect_end(struct yamlconf *yc)
{
	yaml_document_t extra;

	if (!yaml_parser_load(&yc->parser, &extra)) {
		report_parser_error(yc);
		return;
	}
	yaml_node_t *x = yaml_document_get_root_node(&extra);
	if (x)
		yamlconf_error(yc, x, NULL, "a second YAML document is not allowed here");
	yaml_document_delete(&extra);
}

void yamlconf_free(struct yamlconf *yc)
{
	if (!yc)
		return;
	if (yc->doc_ready)
		yaml_document_delete(&yc->doc);
	if (yc->parser_ready)
		yaml_parser_delete(&yc->parser);
	for (size_t i = 0; i < yc->n_errors; i++)
		free(yc->errors[i].text);
	free(yc->errors);
	free(yc->buf);
	free(yc->file);
	free(yc);
}

/* ---- nodes ----------------------------------------------------------------------------- */

static bool is_plain(const yaml_node_t *n)
{
	return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

bool yamlconf_is_empty(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0 && is_plain(n);
}

const char *yamlconf_type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return yamlconf_is_empty(n) ? "an empty value" : "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

const char *yamlconf_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

bool yamlconf_is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || !is_plain(n))
		return false;
	const char *s = yamlconf_scalar(n);
	return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0;
}

bool yamlconf_has_nul(const yaml_node_t *n)
{
	return strlen(yamlconf_scalar(n)) != n->data.scalar.length;
}

size_t yamlconf_count(const yaml_node_t *n)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (n->type == YAML_MAPPING_NODE)
		return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	return 0;
}

const yaml_node_t *yamlconf_item(struct yamlconf *yc, const yaml_node_t *n, size_t i)
{
	return yaml_document_get_node(&yc->doc, n->data.sequence.items.start[i]);
}

const yaml_node_t *yamlconf_pair_key(struct yamlconf *yc, const yaml_node_t *n, size_t i)
{
	return yaml_document_get_node(&yc->doc, n->data.mapping.pairs.start[i].key);
}

const yaml_node_t *yamlconf_pair_value(struct yamlconf *yc, const yaml_node_t *n, size_t i)
{
	return yaml_document_get_node(&yc->doc, n->data.mapping.pairs.start[i].value);
}

bool yamlconf_expect(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		     yaml_node_type_t type, const char *what)
{
	if (n->type == type)
		return true;
	yamlconf_error(yc, n, path, "expected %s, got %s", what, yamlconf_type_name(n));
	return false;
}

/* ---- typed getters --------------------------------------------------------------------- */

bool yamlconf_get_string(struct yamlconf *yc, const yaml_node_t *n, const char *path,
			 unsigned flags, char **ret)
{
	if (n->type != YAML_SCALAR_NODE) {
		yamlconf_error(yc, n, path, "expected a string, got %s", yamlconf_type_name(n));
		return false;
	}
	if (yamlconf_has_nul(n)) {
		yamlconf_error(yc, n, path, "expected a string without NUL characters");
		return false;
	}
	if (!(flags & YAMLCONF_EMPTY_OK) && n->data.scalar.length == 0) {
		yamlconf_error(yc, n, path, "expected a non-empty string");
		return false;
	}
	char *s = strdup(yamlconf_scalar(n));
	if (!s) {
		yamlconf_error(yc, n, path, "out of memory");
		return false;
	}
	free(*ret);
	*ret = s;
	return true;
}

bool yamlconf_get_bool(struct yamlconf *yc, const yaml_node_t *n, const char *path, bool *ret)
{
	char q[80];

	if (n->type == YAML_SCALAR_NODE && is_plain(n)) {
		if (strcasecmp(yamlconf_scalar(n), "true") == 0) {
			*ret = true;
			return true;
		}
		if (strcasecmp(yamlconf_scalar(n), "false") == 0) {
			*ret = false;
			return true;
		}
		yamlconf_error(yc, n, path, "expected true or false, got '%s'",
			       YAMLCONF_QUOTED(q, yamlconf_scalar(n)));
		return false;
	}
	yamlconf_error(yc, n, path, "expected true or false, got %s",
		       n->type == YAML_SCALAR_NODE ? "a quoted string" : yamlconf_type_name(n));
	return false;
}

/* A number is an unquoted, non-empty scalar: else what was found, for "..., got %s". */
static const char *not_a_number(const yaml_node_t *n)
{
	if (n->type == YAML_SCALAR_NODE && is_plain(n) && n->data.scalar.length > 0)
		return NULL;
	return n->type == YAML_SCALAR_NODE && n->data.scalar.length ? "a quoted string"
								    : yamlconf_type_name(n);
}

bool yamlconf_get_uint(struct yamlconf *yc, const yaml_node_t *n, const char *path, uint64_t min,
		       uint64_t max, uint64_t *ret)
{
	const char *found = not_a_number(n);
	char q[80];

	if (found) {
		yamlconf_error(yc, n, path,
			       "expected an integer from %" PRIu64 " to %" PRIu64 ", got %s", min,
			       max, found);
		return false;
	}
	const char *s = yamlconf_scalar(n);
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!isdigit((unsigned char)*s) || *end != '\0' || errno == ERANGE) {
		yamlconf_error(yc, n, path,
			       "expected an integer from %" PRIu64 " to %" PRIu64 ", got '%s'", min,
			       max, YAMLCONF_QUOTED(q, s));
		return false;
	}
	if (v < min || v > max) {
		yamlconf_error(yc, n, path,
			       "%llu is out of range: expected %" PRIu64 " to %" PRIu64, v, min,
			       max);
		return false;
	}
	*ret = v;
	return true;
}

bool yamlconf_get_double(struct yamlconf *yc, const yaml_node_t *n, const char *path, double min,
			 double max, double *ret)
{
	const char *found = not_a_number(n);
	char q[80];

	if (found) {
		yamlconf_error(yc, n, path, "expected a number from %g to %g, got %s", min, max,
			       found);
		return false;
	}
	const char *s = yamlconf_scalar(n);
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (*end != '\0' || errno == ERANGE || !isfinite(v) ||
	    !(isdigit((unsigned char)*s) || *s == '.')) {
		yamlconf_error(yc, n, path, "expected a number from %g to %g, got '%s'", min, max,
			       YAMLCONF_QUOTED(q, s));
		return false;
	}
	if (v < min || v > max) {
		yamlconf_error(yc, n, path, "%g is out of range: expected %g to %g", v, min, max);
		return false;
	}
	*ret = v;
	return true;
}

/* NAMES (NULL-terminated) as "a, b, c", cut short to fit BUF. */
static void join_names(char *buf, size_t size, const char *const *names, size_t n)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && o < size; i++)
		o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", names[i]);
}

static size_t count_names(const char *const *names)
{
	size_t n = 0;

	while (names[n])
		n++;
	return n;
}

bool yamlconf_get_enum(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		       const char *const *names, const struct yamlconf_alias *aliases,
		       unsigned flags, int *ret)
{
	int (*cmp)(const char *, const char *) = flags & YAMLCONF_ICASE ? strcasecmp : strcmp;
	char list[160], q[80];

	join_names(list, sizeof(list), names, count_names(names));
	if (n->type != YAML_SCALAR_NODE) {
		yamlconf_error(yc, n, path, "expected one of %s, got %s", list,
			       yamlconf_type_name(n));
		return false;
	}
	for (int i = 0; names[i] && !yamlconf_has_nul(n); i++) {
		if (cmp(yamlconf_scalar(n), names[i]) == 0) {
			*ret = i;
			return true;
		}
	}
	for (size_t i = 0; aliases && aliases[i].name && !yamlconf_has_nul(n); i++) {
		if (cmp(yamlconf_scalar(n), aliases[i].name) == 0) {
			*ret = aliases[i].value;
			return true;
		}
	}
	yamlconf_error(yc, n, path, "expected one of %s, got '%s'", list,
		       YAMLCONF_QUOTED(q, yamlconf_scalar(n)));
	return false;
}

bool yamlconf_get_list(struct yamlconf *yc, const yaml_node_t *n, const char *path,
		       const char *what, size_t size, yamlconf_item_fn item, void **ret_items,
		       size_t *ret_count)
{
	char ipath[YAMLCONF_PATH_MAX + 44];
	size_t count, kept = 0;
	void *items;

	if (!yamlconf_expect(yc, n, path, YAML_SEQUENCE_NODE, what))
		return false;
	count = yamlconf_count(n);
	items = calloc(count ? count : 1, size);
	if (!items) {
		yamlconf_error(yc, n, path, "out of memory");
		return false;
	}
	for (size_t i = 0; i < count; i++) {
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (item(yc, yamlconf_item(yc, n, i), ipath, items, kept))
			kept++;
	}
	*ret_items = items;
	*ret_count = kept;
	return true;
}

/* ---- walking a mapping ----------------------------------------------------------------- */

/* A table with its includes spread out: each field, and where its value is in the target. */
struct flat_field {
	const struct yamlconf_field *f;
	size_t offset;
};

static size_t flatten(const struct yamlconf_field *fields, size_t offset, struct flat_field *out,
		      size_t n)
{
	for (const struct yamlconf_field *f = fields; f->key || f->type == YAMLCONF_INCLUDE; f++) {
		if (f->type == YAMLCONF_INCLUDE) {
			n = flatten(f->fields, offset + f->offset, out, n);
			continue;
		}
		/* A table is the program's, not the file's: one too big is a bug found at once. */
		if (n == YAMLCONF_MAX_FIELDS)
			abort();
		out[n++] = (struct flat_field){f, offset + f->offset};
	}
	return n;
}

static struct yamlconf_at *found_at(void *found, const struct yamlconf_field *f)
{
	return found && f->at ? (struct yamlconf_at *)((char *)found + f->at - 1) : NULL;
}

/* Reads one value by its field; true when it is good. */
static bool read_field(struct yamlconf *yc, const struct yamlconf_field *f, void *value,
		       const yaml_node_t *n, const char *path, void *found)
{
	bool ok = false;
	int e;

	switch (f->type) {
	case YAMLCONF_STRING:
		ok = yamlconf_get_string(yc, n, path, f->flags, value);
		break;
	case YAMLCONF_BOOL:
		ok = yamlconf_get_bool(yc, n, path, value);
		break;
	case YAMLCONF_UINT:
		ok = yamlconf_get_uint(yc, n, path, f->min, f->max, value);
		break;
	case YAMLCONF_DOUBLE:
		ok = yamlconf_get_double(yc, n, path, f->dmin, f->dmax, value);
		break;
	case YAMLCONF_ENUM:
		ok = yamlconf_get_enum(yc, n, path, f->names, f->aliases, f->flags, &e);
		if (ok)
			memcpy(value, &e, sizeof(e));
		break;
	case YAMLCONF_MAPPING:
		ok = yamlconf_expect(yc, n, path, YAML_MAPPING_NODE, "a mapping");
		if (ok)
			yamlconf_walk(yc, n, path, f->fields, value, found);
		break;
	case YAMLCONF_CUSTOM:
		ok = f->parse(yc, n, path, value);
		break;
	case YAMLCONF_NODE:
		ok = true;
		break;
	case YAMLCONF_INCLUDE:
		break;
	}
	return ok && (!f->check || f->check(yc, n, path, value));
}

bool yamlconf_walk(struct yamlconf *yc, const yaml_node_t *map, const char *path,
		   const struct yamlconf_field *fields, void *target, void *found)
{
	struct flat_field flat[YAMLCONF_MAX_FIELDS];
	const yaml_node_t *seen[YAMLCONF_MAX_FIELDS] = {0};
	const char *keys[YAMLCONF_MAX_FIELDS];
	char list[512], q[80], kpath[YAMLCONF_PATH_MAX];
	size_t n = flatten(fields, 0, flat, 0), before = yc->n_said;

	for (size_t i = 0; i < n; i++) {
		struct yamlconf_at *at = found_at(found, flat[i].f);
		keys[i] = flat[i].f->key;
		if (!at)
			continue;
		at->node = NULL;
		at->key = keys[i];
		snprintf(at->path, sizeof(at->path), "%s%s%s", path, *path ? "." : "", keys[i]);
	}
	if (!yamlconf_expect(yc, map, path, YAML_MAPPING_NODE, "a mapping"))
		return false;
	join_names(list, sizeof(list), keys, n);

	/* libyaml takes a duplicate key silently: the later one would win unnoticed. */
	for (size_t p = 0; p < yamlconf_count(map); p++) {
		const yaml_node_t *k = yamlconf_pair_key(yc, map, p);
		const yaml_node_t *v = yamlconf_pair_value(yc, map, p);
		if (!yamlconf_expect(yc, k, path, YAML_SCALAR_NODE, "a plain key"))
			continue;
		const char *key = yamlconf_scalar(k);
		size_t i = 0;
		snprintf(kpath, sizeof(kpath), "%s%s%s", path, *path ? "." : "", key);
		while (i < n && strcmp(keys[i], key) != 0)
			i++;
		if (i == n) {
			yamlconf_error(yc, k, path[0] ? path : NULL,
				       "unknown key '%s' (expected one of: %s)",
				       YAMLCONF_QUOTED(q, key), list);
			continue;
		}
		if (seen[i]) {
			yamlconf_error(yc, k, kpath, "duplicate key (first set at line %zu)",
				       seen[i]->start_mark.line + 1);
			continue;
		}
		seen[i] = k;

		const struct yamlconf_field *f = flat[i].f;
		void *value = target ? (char *)target + flat[i].offset : NULL;
		struct yamlconf_at *at = found_at(found, f);
		if ((f->flags & YAMLCONF_NULL_OK) && yamlconf_is_null(v))
			continue;
		if (read_field(yc, f, value, v, kpath, found) && at)
			at->node = v;
	}

	for (size_t i = 0; i < n; i++) {
		unsigned flags = flat[i].f->flags;
		if (seen[i] || !(flags & (YAMLCONF_REQUIRED | YAMLCONF_REQUIRED_QUIET)))
			continue;
		if ((flags & YAMLCONF_REQUIRED) || yc->n_said == before)
			yamlconf_missing(yc, map, path, keys[i], flat[i].f->missing);
	}
	return yc->n_said == before;
}
