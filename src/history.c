#include "history.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

enum history_column {
	COL_CLAIMED,
	COL_FOLDER,
	COL_FILE,
	COL_STATUS,
	COL_ROWS,
	COL_COUNTS,
	COL_IMPORT,
	COL_NOTE,
	HISTORY_N_COLUMNS
};

static const char *const headers[HISTORY_N_COLUMNS] = {
	"claimed (UTC)", "folder", "file", "status", "rows", "created/updated/skipped/failed",
	"import", "note"};

struct history_table {
	char *(*rows)[HISTORY_N_COLUMNS];
	size_t n, cap;
};

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026, one column */

size_t history_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* The length of the unit at S of an escaped string: an escape (\xNN, \n, \\ ...) or one UTF-8
 * sequence. Cutting between units never leaves half an escape, which would read as another. */
static size_t unit_len(const char *s)
{
	size_t n = 1;

	if (s[0] == '\\')
		return s[1] == 'x' ? 4 : 2;
	while ((((unsigned char)s[n]) & 0xc0) == 0x80)
		n++;
	return n;
}

char *history_cell(const char *src, size_t max)
{
	size_t need = text_escape(NULL, 0, src ? src : ""), used = 0, w = 0;
	char *esc = malloc(need + 1);

	if (!esc)
		return NULL;
	text_escape(esc, need + 1, src ? src : "");
	if (max == 0 || history_width(esc) <= max)
		return esc;
	/* Room for the ellipsis, and no more than MAX - 1 characters before it. Escapes are
	 * ASCII: each of their bytes is a column. */
	while (esc[used]) {
		size_t n = unit_len(esc + used), cols = esc[used] == '\\' ? n : 1;
		if (w + cols > max - 1)
			break;
		w += cols;
		used += n;
	}
	/* No blank before the ellipsis: "email; …" would look like a word cut off after it. */
	while (used > 0 && esc[used - 1] == ' ')
		used--;
	if (used + sizeof(ELLIPSIS) > need + 1) {
		char *p = realloc(esc, used + sizeof(ELLIPSIS));
		if (!p) {
			free(esc);
			return NULL;
		}
		esc = p;
	}
	memcpy(esc + used, ELLIPSIS, sizeof(ELLIPSIS));
	return esc;
}

int history_table_new(struct history_table **ret)
{
	struct history_table *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	*ret = t;
	return 0;
}

void history_table_free(struct history_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		for (int c = 0; c < HISTORY_N_COLUMNS; c++)
			free(t->rows[i][c]);
	free(t->rows);
	free(t);
}

size_t history_table_rows(const struct history_table *t)
{
	return t->n;
}

/* "2026-12-02 03:35:58": the header says UTC. */
static void table_time(char buf[32], int64_t ms)
{
	int64_t s = ms / 1000 - (ms % 1000 < 0);

	text_format_utc(buf, s, -1);
	if (strlen(buf) == 20) {
		buf[10] = ' ';
		buf[19] = '\0';
	}
}

static void count_text(char *buf, size_t size, int64_t v)
{
	if (v < 0)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%" PRId64, v);
}

/* The import column: the first id, and "+N" for the other parts of a split file. */
static char *import_cell(const char *ids)
{
	const char *comma;
	size_t more = 0;
	char *first, *cell, *out;

	if (!ids || !*ids)
		return strdup("-");
	comma = strchr(ids, ',');
	for (const char *p = ids; (p = strchr(p, ',')); p++)
		more++;
	first = strndup(ids, comma ? (size_t)(comma - ids) : strlen(ids));
	if (!first)
		return NULL;
	cell = history_cell(first, 0);
	free(first);
	if (!cell || !more)
		return cell;
	if (asprintf(&out, "%s +%zu", cell, more) < 0)
		out = NULL;
	free(cell);
	return out;
}

/* Why a file ended as it did: the error of a failed file, the earlier file a skipped one
 * duplicated. */
static char *note_text(const struct ledger_entry *e)
{
	char *text;

	if (e->error && (e->status != LEDGER_SKIPPED || !e->duplicate_of))
		return strdup(e->error);
	if (!e->duplicate_of)
		return strdup("");
	if (asprintf(&text, "duplicate of %s", e->duplicate_of) < 0)
		return NULL;
	return text;
}

/* What became of it, and in a fleet which host took it ("[host] ..."). */
static char *note_cell(const struct ledger_entry *e)
{
	char *text = note_text(e), *full = NULL, *cell;

	if (!text)
		return NULL;
	if (e->host && asprintf(&full, "[%s]%s%s", e->host, text[0] ? " " : "", text) < 0)
		full = NULL;
	cell = e->host && !full ? NULL : history_cell(full ? full : text, HISTORY_NOTE_MAX);
	free(full);
	free(text);
	return cell;
}

int history_table_add(struct history_table *t, const struct ledger_entry *e)
{
	char *row[HISTORY_N_COLUMNS] = {0}, buf[160], c[4][24];

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		void *p = reallocarray(t->rows, cap, sizeof(*t->rows));
		if (!p)
			return -ENOMEM;
		t->rows = p;
		t->cap = cap;
	}
	table_time(buf, e->claimed_at_ms);
	row[COL_CLAIMED] = strdup(buf);
	row[COL_FOLDER] = history_cell(e->folder, 0);
	row[COL_FILE] = history_cell(e->file, HISTORY_FILE_MAX);
	row[COL_STATUS] = strdup(ledger_status_name(e->status));
	count_text(buf, sizeof(buf), e->total);
	row[COL_ROWS] = strdup(buf);
	if (e->created < 0 && e->updated < 0 && e->skipped < 0 && e->failed < 0) {
		row[COL_COUNTS] = strdup("-");
	} else {
		count_text(c[0], sizeof(c[0]), e->created);
		count_text(c[1], sizeof(c[1]), e->updated);
		count_text(c[2], sizeof(c[2]), e->skipped);
		count_text(c[3], sizeof(c[3]), e->failed);
		snprintf(buf, sizeof(buf), "%s/%s/%s/%s", c[0], c[1], c[2], c[3]);
		row[COL_COUNTS] = strdup(buf);
	}
	row[COL_IMPORT] = import_cell(e->import_ids);
	row[COL_NOTE] = note_cell(e);
	for (int i = 0; i < HISTORY_N_COLUMNS; i++) {
		if (!row[i]) {
			for (int k = 0; k < HISTORY_N_COLUMNS; k++)
				free(row[k]);
			return -ENOMEM;
		}
	}
	memcpy(t->rows[t->n++], row, sizeof(row));
	return 0;
}

static void print_line(FILE *out, const char *const cells[HISTORY_N_COLUMNS],
		       const size_t widths[HISTORY_N_COLUMNS])
{
	size_t pending = 0; /* blanks owed before the next non-empty text: none at line ends */

	for (int c = 0; c < HISTORY_N_COLUMNS; c++) {
		size_t w = history_width(cells[c]);
		bool right = c == COL_ROWS;

		if (c > 0)
			pending += 2;
		if (right)
			pending += widths[c] - w;
		if (*cells[c]) {
			fprintf(out, "%*s%s", (int)pending, "", cells[c]);
			pending = 0;
		}
		if (!right)
			pending += widths[c] - w;
	}
	fputc('\n', out);
}

void history_table_print(const struct history_table *t, FILE *out)
{
	size_t widths[HISTORY_N_COLUMNS];

	/* O(rows x columns), twice: once for the widths, once to print. */
	for (int c = 0; c < HISTORY_N_COLUMNS; c++) {
		widths[c] = history_width(headers[c]);
		for (size_t i = 0; i < t->n; i++) {
			size_t w = history_width(t->rows[i][c]);
			if (w > widths[c])
				widths[c] = w;
		}
	}
	print_line(out, headers, widths);
	for (size_t i = 0; i < t->n; i++)
		print_line(out, (const char *const *)t->rows[i], widths);
}

static void add_time(cJSON *o, const char *key, int64_t ms)
{
	char ts[32];
	int64_t s = ms / 1000 - (ms % 1000 < 0);

	if (ms == 0) {
		cJSON_AddNullToObject(o, key);
		return;
	}
	text_format_utc(ts, s, (int)(ms - s * 1000));
	cJSON_AddStringToObject(o, key, ts);
}

static void add_opt_string(cJSON *o, const char *key, const char *v)
{
	if (v && *v)
		text_json_add_string(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

static void add_count(cJSON *o, const char *key, int64_t v)
{
	if (v < 0)
		cJSON_AddNullToObject(o, key);
	else
		cJSON_AddNumberToObject(o, key, (double)v);
}

char *history_entry_json(const struct ledger_entry *e)
{
	cJSON *o = cJSON_CreateObject(), *ids, *counts;
	char *text = NULL;

	if (!o)
		return NULL;
	text_json_add_string(o, "folder", e->folder ? e->folder : "");
	text_json_add_string(o, "file", e->file ? e->file : "");
	add_time(o, "claimed_at", e->claimed_at_ms);
	cJSON_AddNumberToObject(o, "bytes", (double)e->bytes);
	add_opt_string(o, "sha256", e->sha256);
	add_opt_string(o, "settings_hash", e->settings_hash);
	cJSON_AddNumberToObject(o, "attempts", e->attempts);
	add_time(o, "uploaded_at", e->uploaded_at_ms);
	add_time(o, "finished_at", e->finished_at_ms);
	cJSON_AddStringToObject(o, "status", ledger_status_name(e->status));
	ids = cJSON_AddArrayToObject(o, "import_ids");
	for (const char *p = e->import_ids; ids && p && *p;) {
		size_t n = strcspn(p, ",");
		char *id = strndup(p, n);
		cJSON *s = id ? cJSON_CreateString(id) : NULL;

		free(id);
		if (!s || !cJSON_AddItemToArray(ids, s)) {
			cJSON_Delete(s);
			goto out;
		}
		p += n + (p[n] == ',');
	}
	if (e->total < 0 && e->created < 0 && e->updated < 0 && e->skipped < 0 && e->failed < 0) {
		cJSON_AddNullToObject(o, "counts");
	} else if ((counts = cJSON_AddObjectToObject(o, "counts"))) {
		add_count(counts, "total", e->total);
		add_count(counts, "created", e->created);
		add_count(counts, "updated", e->updated);
		add_count(counts, "skipped", e->skipped);
		add_count(counts, "failed", e->failed);
	}
	add_opt_string(o, "error", e->error);
	add_opt_string(o, "duplicate_of", e->duplicate_of);
	add_opt_string(o, "host", e->host);
	/* Every key is there or the allocation failed somewhere: then nothing is printed. */
	if (cJSON_GetArraySize(o) == 15)
		text = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return text;
}

void history_empty_message(char *buf, size_t size, const struct history_options *o)
{
	char folder[256] = "", since[64] = "";

	if (o->query.folder) {
		char q[200];
		text_escape(q, sizeof(q), o->query.folder);
		snprintf(folder, sizeof(folder), " in folder '%s'", q);
	}
	if (o->since_text) {
		char q[40];
		text_escape(q, sizeof(q), o->since_text);
		snprintf(since, sizeof(since), " claimed in the last %s", q);
	}
	snprintf(buf, size, "no %sfiles%s%s%s", o->query.failed_only ? "failed " : "", folder,
		 since, o->since_text ? "" : " in the ledger");
}

struct history_listing {
	const struct history_options *o;
	struct history_table *table;
	FILE *out;
	size_t n;
	bool cut;
	int error; /* ours, not the ledger's */
};

/* Positive returns stop the listing without being errors. */
#define HISTORY_STOP 1

static int history_entry_cb(const struct ledger_entry *e, void *data)
{
	struct history_listing *h = data;

	if (h->o->query.limit && h->n == h->o->query.limit) {
		h->cut = true;
		return HISTORY_STOP;
	}
	h->n++;
	if (h->o->json) {
		char *line = history_entry_json(e);
		if (!line) {
			h->error = -ENOMEM;
			return HISTORY_STOP;
		}
		fprintf(h->out, "%s\n", line);
		cJSON_free(line);
		return 0;
	}
	if (history_table_add(h->table, e) < 0) {
		h->error = -ENOMEM;
		return HISTORY_STOP;
	}
	return 0;
}

int history_print(struct ledger *l, const struct history_options *o, FILE *out, FILE *note)
{
	struct history_listing h = {.o = o, .out = out};
	struct ledger_query q = o->query;
	char msg[512];
	int r;

	if (!o->json && history_table_new(&h.table) < 0)
		goto oom;
	/* One more than asked for tells whether the limit cut the list. */
	if (q.limit)
		q.limit++;
	r = ledger_list(l, &q, history_entry_cb, &h);
	if (r < 0) {
		history_table_free(h.table);
		return r;
	}
	if (h.error < 0)
		goto oom;
	if (!o->json) {
		if (h.n == 0) {
			history_empty_message(msg, sizeof(msg), o);
			fprintf(out, "%s\n", msg);
		} else {
			history_table_print(h.table, out);
		}
	}
	if (h.cut)
		fprintf(o->json ? note : out, "(%zu most recent; --limit 0 for all)\n", h.n);
	history_table_free(h.table);
	return 0;
oom:
	history_table_free(h.table);
	snprintf(l->error, sizeof(l->error), "out of memory");
	return -ENOMEM;
}
