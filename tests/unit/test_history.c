/* history: what `resend-dropd history` prints for hand-made ledger entries: the table's widths,
 * caps and escaping, the JSON lines' fields, the "nothing found" lines and the limit's note.
 * The ledger is a stand-in (a struct ledger_ops with list only), so no SQLite is involved. */
#include "history.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define SETTINGS "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
#define ID1 "479e3145-dd38-476b-932c-529ceb705947"
#define ID2 "0c7f3a4e-5b6d-4e8f-9a0b-1c2d3e4f5a6b"
#define ID3 "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
/* 2026-11-26T04:01:02.123Z and a little later */
#define CLAIMED_MS 1795665662123
#define UPLOADED_MS 1795665663004
#define FINISHED_MS 1795665670999
#define ELLIPSIS "\xe2\x80\xa6"

static struct ledger_entry entry(const char *folder, const char *file, int64_t claimed_ms,
				 enum ledger_status status)
{
	struct ledger_entry e = {
		.folder = (char *)folder,
		.file = (char *)file,
		.claimed_at_ms = claimed_ms,
		.status = status,
		.total = -1,
		.created = -1,
		.updated = -1,
		.skipped = -1,
		.failed = -1,
	};
	return e;
}

static struct ledger_entry done_entry(void)
{
	struct ledger_entry e = entry("newsletter", "contacts.csv", CLAIMED_MS, LEDGER_DONE);

	e.bytes = 48213;
	memcpy(e.sha256, SHA, sizeof(SHA));
	memcpy(e.settings_hash, SETTINGS, sizeof(SETTINGS));
	e.attempts = 2;
	e.uploaded_at_ms = UPLOADED_MS;
	e.finished_at_ms = FINISHED_MS;
	e.import_ids = (char *)ID1;
	e.total = 1250;
	e.created = 1180;
	e.updated = 60;
	e.skipped = 10;
	e.failed = 0;
	return e;
}

static char *table_text(const struct ledger_entry *entries, size_t n)
{
	struct history_table *t = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(history_table_new(&t), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(history_table_add(t, &entries[i]), 0);
	assert_int_equal(history_table_rows(t), n);
	history_table_print(t, f);
	fclose(f);
	history_table_free(t);
	return buf;
}

/* ---- cells ------------------------------------------------------------------------------- */

static void assert_cell(const char *src, size_t max, const char *want)
{
	char *got = history_cell(src, max);

	assert_non_null(got);
	if (strcmp(got, want) != 0)
		fail_msg("cell of '%s' (max %zu):\n  expected: '%s'\n  actual:   '%s'", src, max, want,
			 got);
	free(got);
}

static void test_width_counts_characters_not_bytes(void **state)
{
	(void)state;
	assert_int_equal(history_width(""), 0);
	assert_int_equal(history_width("abc"), 3);
	assert_int_equal(history_width("M\xc3\xa4rz.csv"), 8);        /* März.csv */
	assert_int_equal(history_width("\xe2\x82\xac" ELLIPSIS), 2);   /* €… */
	assert_int_equal(history_width("\xf0\x9f\x93\x8a.csv"), 5);   /* 📊.csv */
}

static void test_cell_escapes_as_the_logs_do(void **state)
{
	(void)state;
	assert_cell("plain.csv", 0, "plain.csv");
	assert_cell("two\nlines.csv", 0, "two\\nlines.csv");
	assert_cell("tab\there\r.csv", 0, "tab\\there\\r.csv");
	assert_cell("bell\x07" "del\x7f.csv", 0, "bell\\x07del\\x7f.csv");
	assert_cell("back\\slash.csv", 0, "back\\\\slash.csv");
	assert_cell("latin1-\xe4.csv", 0, "latin1-\\xe4.csv"); /* not UTF-8 */
	assert_cell("M\xc3\xa4rz.csv", 0, "M\xc3\xa4rz.csv");  /* UTF-8 is kept */
	assert_cell(NULL, 0, "");
}

static void test_cell_cap(void **state)
{
	char forty[41], fortyone[42], want[64];

	(void)state;
	memset(forty, 'a', 40);
	forty[40] = '\0';
	assert_cell(forty, 40, forty); /* exactly the cap: untouched */
	memset(fortyone, 'a', 41);
	fortyone[41] = '\0';
	memset(want, 'a', 39);
	strcpy(want + 39, ELLIPSIS);
	assert_cell(fortyone, 40, want);
	assert_cell(fortyone, 0, fortyone); /* 0: no cap */

	char *cut = history_cell(fortyone, 40);
	assert_int_equal(history_width(cut), 40);
	free(cut);
}

static void test_cell_cap_counts_characters_and_never_splits(void **state)
{
	char src[256] = "", want[256] = "";

	(void)state;
	/* 45 × "ä": cut after 39 of them, not after 39 bytes (which would split one). */
	for (int i = 0; i < 45; i++)
		strcat(src, "\xc3\xa4");
	for (int i = 0; i < 39; i++)
		strcat(want, "\xc3\xa4");
	strcat(want, ELLIPSIS);
	assert_cell(src, 40, want);

	/* An escape is whole or gone: 37 characters, then \x01 would end at column 41. */
	memset(src, 'a', 37);
	strcpy(src + 37, "\x01" "bbb");
	memset(want, 'a', 37);
	strcpy(want + 37, ELLIPSIS);
	assert_cell(src, 40, want);

	/* It fits when it ends at column 39. */
	memset(src, 'a', 35);
	strcpy(src + 35, "\x01" "bbb");
	memset(want, 'a', 35);
	strcpy(want + 35, "\\x01" ELLIPSIS);
	assert_cell(src, 40, want);

	/* No blank before the ellipsis. */
	assert_cell("check: CSV header lacks columns 'Email' (column_map.email; the header", 60,
		    "check: CSV header lacks columns 'Email' (column_map.email;" ELLIPSIS);

	/* A doubled backslash is one unit too: "\\" then "x41" is not an escape of 'A'. */
	memset(src, 'a', 36);
	strcpy(src + 36, "\\x41zzz");
	memset(want, 'a', 36);
	strcpy(want + 36, "\\\\x" ELLIPSIS);
	assert_cell(src, 40, want);
}

/* ---- the table --------------------------------------------------------------------------- */

static void test_table_layout(void **state)
{
	struct ledger_entry e[3];
	char *text;

	(void)state;
	e[0] = entry("crm", "broken.csv", CLAIMED_MS + 7200000, LEDGER_FAILED);
	e[0].error = (char *)"check: the CSV header has no column 'Email' (column_map.email)";
	e[1] = entry("newsletter", "contacts (copy).csv", CLAIMED_MS + 3600000, LEDGER_SKIPPED);
	e[1].duplicate_of = (char *)"contacts.csv";
	e[2] = done_entry();
	text = table_text(e, 3);
	assert_string_equal(
		text,
		"claimed (UTC)        folder      file                 status   rows  "
		"created/updated/skipped/failed  import                                note\n"
		"2026-11-26 06:01:02  crm         broken.csv           failed      -  "
		"-                               -                                     "
		"check: the CSV header has no column 'Email' (column_map.ema" ELLIPSIS "\n"
		"2026-11-26 05:01:02  newsletter  contacts (copy).csv  skipped     -  "
		"-                               -                                     "
		"duplicate of contacts.csv\n"
		"2026-11-26 04:01:02  newsletter  contacts.csv         done     1250  "
		"1180/60/10/0                    " ID1 "\n");
	free(text);
}

static void test_table_header_only_widths_and_no_trailing_blanks(void **state)
{
	struct ledger_entry e = entry("a", "x.csv", CLAIMED_MS, LEDGER_CLAIMED);
	char *text;

	(void)state;
	text = table_text(&e, 1);
	/* Narrow content: the headers set the widths; an empty note leaves no blanks behind. */
	assert_string_equal(text, "claimed (UTC)        folder  file   status   rows  "
				  "created/updated/skipped/failed  import  note\n"
				  "2026-11-26 04:01:02  a       x.csv  claimed     -  "
				  "-                               -\n");
	free(text);
}

static void test_table_caps_escapes_and_aligns_by_characters(void **state)
{
	struct ledger_entry e[2];
	char *text, *line2, *line3;

	(void)state;
	e[0] = entry("news", "evil\nforged log line with a name that is far too long.csv",
		     CLAIMED_MS, LEDGER_DONE);
	e[1] = entry("news", "M\xc3\xa4rz.csv", CLAIMED_MS, LEDGER_DONE);
	text = table_text(e, 2);
	/* Exactly three lines: the newline in the name did not make a fourth. */
	line2 = strchr(text, '\n') + 1;
	line3 = strchr(line2, '\n') + 1;
	assert_non_null(strchr(line3, '\n'));
	assert_string_equal(strchr(line3, '\n'), "\n");
	assert_non_null(strstr(line2, "  evil\\nforged log line with a name that" ELLIPSIS "  done"));
	assert_non_null(strstr(line3, "M\xc3\xa4rz.csv"));
	/* The status column starts at the same character in every line. */
	size_t pos[2];
	for (int i = 0; i < 2; i++) {
		char *line = i ? line3 : line2, *st = strstr(line, "done");
		char *prefix = strndup(line, (size_t)(st - line));
		pos[i] = history_width(prefix);
		free(prefix);
	}
	assert_int_equal(pos[0], pos[1]);
	free(text);
}

static void test_table_counts_and_imports(void **state)
{
	struct ledger_entry e[3];
	char *text;

	(void)state;
	e[0] = done_entry();
	e[0].import_ids = (char *)ID1 "," ID2 "," ID3; /* a split file: three parts */
	e[1] = done_entry();
	e[1].created = -1; /* some counts unknown */
	e[1].skipped = -1;
	e[2] = entry("newsletter", "following.csv", CLAIMED_MS, LEDGER_UPLOADED);
	e[2].import_ids = (char *)ID2;
	text = table_text(e, 3);
	assert_non_null(strstr(text, "  1180/60/10/0                    " ID1 " +2\n"));
	assert_non_null(strstr(text, "  -/60/-/0                        " ID1 "\n"));
	assert_non_null(strstr(text, "  uploaded     -  -                               " ID2 "\n"));
	free(text);
}

/* ---- JSON lines -------------------------------------------------------------------------- */

static const char *const json_keys[] = {
	"folder",      "file",	     "claimed_at", "bytes",  "sha256",	   "settings_hash", "attempts",
	"uploaded_at", "finished_at", "status",	    "import_ids", "counts", "error", "duplicate_of",
	"host", NULL};

static cJSON *parse_entry(const struct ledger_entry *e)
{
	char *text = history_entry_json(e);
	cJSON *o;
	int n = 0;

	assert_non_null(text);
	assert_null(strchr(text, '\n')); /* one line */
	o = cJSON_Parse(text);
	if (!o)
		fail_msg("not JSON: %s", text);
	cJSON_free(text);
	for (size_t i = 0; json_keys[i]; i++) {
		if (!cJSON_GetObjectItemCaseSensitive(o, json_keys[i]))
			fail_msg("no key '%s'", json_keys[i]);
		n++;
	}
	assert_int_equal(cJSON_GetArraySize(o), n); /* and no others */
	return o;
}

static const cJSON *get(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key);
}

static void assert_json_string(const cJSON *o, const char *key, const char *want)
{
	const cJSON *v = get(o, key);

	if (!cJSON_IsString(v) || strcmp(v->valuestring, want) != 0)
		fail_msg("%s: expected '%s', got %s", key, want, cJSON_Print(v));
}

static void test_json_done(void **state)
{
	struct ledger_entry e = done_entry();
	cJSON *o, *ids, *counts;

	(void)state;
	e.import_ids = (char *)ID1 "," ID2;
	o = parse_entry(&e);
	assert_json_string(o, "folder", "newsletter");
	assert_json_string(o, "file", "contacts.csv");
	assert_json_string(o, "claimed_at", "2026-11-26T04:01:02.123Z");
	assert_json_string(o, "uploaded_at", "2026-11-26T04:01:03.004Z");
	assert_json_string(o, "finished_at", "2026-11-26T04:01:10.999Z");
	assert_json_string(o, "sha256", SHA);
	assert_json_string(o, "settings_hash", SETTINGS);
	assert_json_string(o, "status", "done");
	assert_true(get(o, "bytes")->valuedouble == 48213);
	assert_true(get(o, "attempts")->valuedouble == 2);
	ids = cJSON_GetObjectItemCaseSensitive(o, "import_ids");
	assert_true(cJSON_IsArray(ids));
	assert_int_equal(cJSON_GetArraySize(ids), 2);
	assert_string_equal(cJSON_GetArrayItem(ids, 0)->valuestring, ID1);
	assert_string_equal(cJSON_GetArrayItem(ids, 1)->valuestring, ID2);
	counts = cJSON_GetObjectItemCaseSensitive(o, "counts");
	assert_true(cJSON_IsObject(counts));
	assert_int_equal(cJSON_GetArraySize(counts), 5);
	assert_true(get(counts, "total")->valuedouble == 1250);
	assert_true(get(counts, "created")->valuedouble == 1180);
	assert_true(get(counts, "updated")->valuedouble == 60);
	assert_true(get(counts, "skipped")->valuedouble == 10);
	assert_true(get(counts, "failed")->valuedouble == 0);
	assert_true(cJSON_IsNull(get(o, "error")));
	assert_true(cJSON_IsNull(get(o, "duplicate_of")));
	cJSON_Delete(o);
}

static void test_json_unknowns_are_null(void **state)
{
	struct ledger_entry e = entry("crm", "refused.csv", CLAIMED_MS, LEDGER_FAILED);
	cJSON *o;

	(void)state;
	e.error = (char *)"check: not a regular file";
	o = parse_entry(&e);
	assert_true(cJSON_IsNull(get(o, "sha256")));
	assert_true(cJSON_IsNull(get(o, "settings_hash")));
	assert_true(cJSON_IsNull(get(o, "uploaded_at")));
	assert_true(cJSON_IsNull(get(o, "finished_at")));
	assert_true(cJSON_IsNull(get(o, "counts")));
	assert_true(cJSON_IsArray(get(o, "import_ids")));
	assert_int_equal(cJSON_GetArraySize(get(o, "import_ids")), 0);
	assert_json_string(o, "status", "failed");
	assert_json_string(o, "error", "check: not a regular file");
	assert_true(get(o, "bytes")->valuedouble == 0);
	cJSON_Delete(o);
}

static void test_json_partial_counts_and_duplicate(void **state)
{
	struct ledger_entry e = entry("newsletter", "again.csv", CLAIMED_MS, LEDGER_SKIPPED);
	cJSON *o, *counts;

	(void)state;
	e.duplicate_of = (char *)"contacts.csv";
	e.total = 3;
	o = parse_entry(&e);
	counts = cJSON_GetObjectItemCaseSensitive(o, "counts");
	assert_true(cJSON_IsObject(counts));
	assert_true(get(counts, "total")->valuedouble == 3);
	assert_true(cJSON_IsNull(get(counts, "created")));
	assert_true(cJSON_IsNull(get(counts, "failed")));
	assert_json_string(o, "duplicate_of", "contacts.csv");
	assert_json_string(o, "status", "skipped");
	cJSON_Delete(o);
}

static void test_json_names_stay_valid_json(void **state)
{
	struct ledger_entry e = entry("news", "two\nlines\x01.csv", CLAIMED_MS, LEDGER_DONE);
	cJSON *o;

	(void)state;
	/* Control characters are JSON escapes, the name itself is kept. */
	o = parse_entry(&e);
	assert_json_string(o, "file", "two\nlines\x01.csv");
	cJSON_Delete(o);
	/* Bytes that are not UTF-8 would make the line invalid: escaped as the reports do. */
	e.file = (char *)"latin1-\xe4.csv";
	o = parse_entry(&e);
	assert_json_string(o, "file", "latin1-\\xe4.csv");
	cJSON_Delete(o);
}

/* ---- listing through a stand-in ledger --------------------------------------------------- */

struct fake_ledger {
	struct ledger base;
	const struct ledger_entry *entries;
	size_t n;
	int fail; /* a negative errno list returns */
	struct ledger_query seen;
};

static int fake_list(struct ledger *l, const struct ledger_query *q, ledger_list_cb cb, void *data)
{
	struct fake_ledger *f = (struct fake_ledger *)l;

	f->seen = *q;
	if (f->fail) {
		snprintf(l->error, sizeof(l->error), "ledger 'x': disk I/O error");
		return f->fail;
	}
	for (size_t i = 0; i < f->n && (!q->limit || i < q->limit); i++) {
		int r = cb(&f->entries[i], data);
		if (r)
			return r;
	}
	return 0;
}

static const struct ledger_ops fake_ops = {.name = "fake", .list = fake_list};

struct output {
	char *out, *note;
	size_t out_len, note_len;
};

static int run_print(struct fake_ledger *f, const struct history_options *o, struct output *res)
{
	FILE *out = open_memstream(&res->out, &res->out_len);
	FILE *note = open_memstream(&res->note, &res->note_len);
	int r;

	assert_non_null(out);
	assert_non_null(note);
	f->base.ops = &fake_ops;
	r = history_print(&f->base, o, out, note);
	fclose(out);
	fclose(note);
	return r;
}

static void output_free(struct output *res)
{
	free(res->out);
	free(res->note);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static struct ledger_entry many[150];

static void fill_many(void)
{
	for (size_t i = 0; i < 150; i++) {
		many[i] = done_entry();
		many[i].claimed_at_ms = CLAIMED_MS - (int64_t)i * 1000;
	}
}

static void test_print_limit_cut_is_said(void **state)
{
	struct fake_ledger f = {.entries = many, .n = 150};
	struct history_options o = {.query = {.limit = 100}};
	struct output res = {0};

	(void)state;
	fill_many();
	assert_int_equal(run_print(&f, &o, &res), 0);
	/* One more asked of the ledger than shown: that is how a cut is noticed. */
	assert_int_equal(f.seen.limit, 101);
	assert_int_equal(count_lines(res.out), 1 + 100 + 1);
	assert_non_null(strstr(res.out, "\n(100 most recent; --limit 0 for all)\n"));
	assert_string_equal(res.note, "");
	output_free(&res);

	/* Exactly as many as the limit: nothing was cut, nothing said. */
	f.n = 100;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_int_equal(count_lines(res.out), 1 + 100);
	assert_null(strstr(res.out, "most recent"));
	output_free(&res);

	/* No limit: everything. */
	f.n = 150;
	o.query.limit = 0;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_int_equal(f.seen.limit, 0);
	assert_int_equal(count_lines(res.out), 1 + 150);
	assert_null(strstr(res.out, "most recent"));
	output_free(&res);
}

static void test_print_json_keeps_stdout_json(void **state)
{
	struct fake_ledger f = {.entries = many, .n = 150};
	struct history_options o = {.query = {.limit = 5}, .json = true};
	struct output res = {0};
	char *line, *save = NULL;
	size_t n = 0;

	(void)state;
	fill_many();
	assert_int_equal(run_print(&f, &o, &res), 0);
	for (line = strtok_r(res.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *obj = cJSON_Parse(line);
		if (!obj)
			fail_msg("not a JSON line: %s", line);
		cJSON_Delete(obj);
		n++;
	}
	assert_int_equal(n, 5);
	assert_string_equal(res.note, "(5 most recent; --limit 0 for all)\n");
	output_free(&res);

	/* Nothing found: no line at all (an empty JSONL stream), and nothing on the side. */
	f.n = 0;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_string_equal(res.out, "");
	assert_string_equal(res.note, "");
	output_free(&res);
}

static void test_print_empty_messages(void **state)
{
	struct fake_ledger f = {0};
	struct history_options o = {0};
	struct output res = {0};

	(void)state;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_string_equal(res.out, "no files in the ledger\n");
	output_free(&res);

	o.query.failed_only = true;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_string_equal(res.out, "no failed files in the ledger\n");
	output_free(&res);

	o.query.folder = "newsletter";
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_string_equal(res.out, "no failed files in folder 'newsletter' in the ledger\n");
	output_free(&res);

	o.since_text = "7d";
	o.query.since_ms = CLAIMED_MS;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_string_equal(res.out, "no failed files in folder 'newsletter' claimed in the last 7d\n");
	assert_int_equal(f.seen.since_ms, CLAIMED_MS);
	assert_string_equal(f.seen.folder, "newsletter");
	assert_true(f.seen.failed_only);
	output_free(&res);

	o.query.failed_only = false;
	o.query.folder = NULL;
	assert_int_equal(run_print(&f, &o, &res), 0);
	assert_string_equal(res.out, "no files claimed in the last 7d\n");
	output_free(&res);
}

static void test_print_ledger_error_is_returned(void **state)
{
	struct fake_ledger f = {.entries = many, .n = 3, .fail = -EIO};
	struct history_options o = {0};
	struct output res = {0};

	(void)state;
	fill_many();
	assert_int_equal(run_print(&f, &o, &res), -EIO);
	assert_string_equal(f.base.error, "ledger 'x': disk I/O error");
	assert_string_equal(res.out, ""); /* no half table */
	output_free(&res);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_width_counts_characters_not_bytes),
		cmocka_unit_test(test_cell_escapes_as_the_logs_do),
		cmocka_unit_test(test_cell_cap),
		cmocka_unit_test(test_cell_cap_counts_characters_and_never_splits),
		cmocka_unit_test(test_table_layout),
		cmocka_unit_test(test_table_header_only_widths_and_no_trailing_blanks),
		cmocka_unit_test(test_table_caps_escapes_and_aligns_by_characters),
		cmocka_unit_test(test_table_counts_and_imports),
		cmocka_unit_test(test_json_done),
		cmocka_unit_test(test_json_unknowns_are_null),
		cmocka_unit_test(test_json_partial_counts_and_duplicate),
		cmocka_unit_test(test_json_names_stay_valid_json),
		cmocka_unit_test(test_print_limit_cut_is_said),
		cmocka_unit_test(test_print_json_keeps_stdout_json),
		cmocka_unit_test(test_print_empty_messages),
		cmocka_unit_test(test_print_ledger_error_is_returned),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
