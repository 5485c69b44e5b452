/* `resend-dropd history`: ledger entries as an aligned table for people or as JSON lines for
 * scripts. Formatting only: the command line (main.c) opens the ledger and says what to list;
 * no libuv, no curl, no knowledge of the backend. */
#ifndef RDD_HISTORY_H
#define RDD_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ledger.h"

#define HISTORY_FILE_MAX 40     /* characters of the file column; longer names end in "…" */
#define HISTORY_NOTE_MAX 60     /* characters of the note column */
#define HISTORY_DEFAULT_LIMIT 100 /* rows without --since or --limit */

/* What to list and how. */
struct history_options {
	struct ledger_query query;
	const char *since_text; /* the --since the user gave, for "nothing found"; NULL: none */
	bool json;
};

/* The rows of a table, kept until every column's width is known: O(rows) memory, which the
 * default limit bounds. */
struct history_table;

int history_table_new(struct history_table **ret);
void history_table_free(struct history_table *t); /* accepts NULL */
/* One entry as its row (every cell escaped and capped); -ENOMEM. */
int history_table_add(struct history_table *t, const struct ledger_entry *e);
size_t history_table_rows(const struct history_table *t);
/* The header and every row, columns aligned, no trailing blanks. */
void history_table_print(const struct history_table *t, FILE *out);

/* SRC as a table shows it: escaped as the logs escape names (log_escape), and when longer than
 * MAX characters (0: no cap) cut to MAX - 1 of them and "…", never inside an escape. Allocated;
 * NULL when out of memory. */
char *history_cell(const char *src, size_t max);
/* How many columns S takes on a terminal: its code points (S is UTF-8). */
size_t history_width(const char *s);

/* E as one line of JSON, without the newline: every field of the entry, times in ISO 8601 UTC
 * or null, import_ids an array, counts an object or null. Free with cJSON_free; NULL when out
 * of memory. */
char *history_entry_json(const struct ledger_entry *e);

/* The line said when nothing matched O ("no files in the ledger", "no failed files in folder
 * 'news' claimed in the last 7d"). */
void history_empty_message(char *buf, size_t size, const struct history_options *o);

/* Lists O->query from L, newest first, and prints it to OUT: the table (or the empty message)
 * with "(N most recent; --limit 0 for all)" last when the limit cut the list, or JSON lines
 * (then the cut is said on NOTE, so that OUT stays JSON). 0, or the ledger's negative errno
 * (l->error says what). */
int history_print(struct ledger *l, const struct history_options *o, FILE *out, FILE *note);

#endif
