/* ledger: both backends, SQLite on a real file in a temporary state directory and PostgreSQL on
 * a real server the program starts (pg_fixture.h), each test with a database of its own. What a
 * user gets from either: every field of an entry kept as recorded; the look-ups that decide
 * duplicates and crash recovery; the history listing, also beside a writer; transactions. And
 * from SQLite: a file in WAL mode with a versioned schema, migrated forward at open; clear errors
 * for a file that is no ledger, one from a newer version, one not there (PostgreSQL's own are in
 * test_ledger_pg.c). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "ledger.h"
#include "pg_fixture.h"

/* The newest schema version ledger_sqlite.c knows (the length of its migrations array). */
#define LATEST_VERSION 4

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SET_1 "1111111111111111111111111111111111111111111111111111111111111111"
#define SET_2 "2222222222222222222222222222222222222222222222222222222222222222"

/* The schema of version 1, as migrations[0] of ledger_sqlite.c made it: a ledger written by
 * the first release, before settings hashes. */
static const char schema_v1[] =
	"CREATE TABLE files ("
	" id INTEGER PRIMARY KEY,"
	" folder TEXT NOT NULL, file TEXT NOT NULL, claimed_at_ms INTEGER NOT NULL,"
	" bytes INTEGER NOT NULL DEFAULT 0, sha256 TEXT NOT NULL DEFAULT '',"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" uploaded_at_ms INTEGER, finished_at_ms INTEGER,"
	" import_ids TEXT, status TEXT NOT NULL,"
	" total INTEGER, created INTEGER, updated INTEGER, skipped INTEGER, failed INTEGER,"
	" error TEXT,"
	" UNIQUE (folder, file, claimed_at_ms));"
	"CREATE INDEX files_by_content ON files (folder, sha256);"
	"CREATE INDEX files_by_finish ON files (finished_at_ms);";

struct fixture {
	const char *backend; /* "sqlite" or "postgresql" */
	char where[256];     /* what the backend opens: the state directory, a connection string */
	char dir[64];
	char path[128];
	struct ledger *l;
	char err[1024];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	strcpy(fx->dir, "/tmp/rdd-ledger-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/%s", fx->dir, LEDGER_FILE_NAME);
	fx->backend = "sqlite";
	snprintf(fx->where, sizeof(fx->where), "%s", fx->dir);
	*state = fx;
	return 0;
}

/* The same test on PostgreSQL, in a new database. */
static int setup_pg(void **state)
{
	struct fixture *fx;

	if (setup(state) < 0)
		return -1;
	fx = *state;
	fx->backend = "postgresql";
	return pg_fixture_new_database(fx->where, sizeof(fx->where));
}

static int group_setup_pg(void **state)
{
	(void)state;
	return pg_fixture_start();
}

static int group_teardown_pg(void **state)
{
	(void)state;
	pg_fixture_stop();
	return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int r = 0;

	ledger_close(fx->l);
	if (nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0)
		r = -1;
	free(fx);
	return r;
}

/* Opens the ledger of the fixture for writing into FX->L. */
static void open_rw(struct fixture *fx)
{
	int r = ledger_open_backend(fx->backend, fx->where, false, &fx->l, fx->err,
				    sizeof(fx->err));

	if (r < 0)
		fail_msg("ledger_open_backend(%s): %d: %s", fx->backend, r, fx->err);
}

/* The same for reading only, as history opens it; ERR says why it failed. */
static int open_ro(struct fixture *fx, struct ledger **ret, char *err, size_t errsz)
{
	return ledger_open_backend(fx->backend, fx->where, true, ret, err, errsz);
}

static int raw_int(const char *path, const char *sql);

/* The rows in the table, seen by another connection than the ledger's. */
static int count_files(struct fixture *fx)
{
	char out[32];

	if (strcmp(fx->backend, "sqlite") == 0)
		return raw_int(fx->path, "SELECT count(*) FROM files");
	if (pg_fixture_sql(fx->where, "SELECT count(*) FROM files", out, sizeof(out)) < 0)
		fail_msg("cannot count the files in %s", fx->where);
	return atoi(out);
}

/* ---- raw SQLite, beside the backend ------------------------------------------------------- */

static sqlite3 *raw_open(const char *path)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK)
		fail_msg("sqlite3_open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* The first column of the first row of SQL, as text (static buffer). */
static const char *raw_text(sqlite3 *db, const char *sql)
{
	static char buf[256];
	sqlite3_stmt *s;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	buf[0] = '\0';
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
		snprintf(buf, sizeof(buf), "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	return buf;
}

static int raw_int(const char *path, const char *sql)
{
	sqlite3 *db = raw_open(path);
	int v = atoi(raw_text(db, sql));

	sqlite3_close(db);
	return v;
}

static void write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* ---- entries ------------------------------------------------------------------------------ */

/* An entry with every string borrowed from the arguments (never cleared). */
static struct ledger_entry entry(const char *folder, const char *file, int64_t claimed,
				 const char *sha, const char *settings, enum ledger_status status,
				 int64_t finished)
{
	struct ledger_entry e = {
		.folder = (char *)folder,
		.file = (char *)file,
		.claimed_at_ms = claimed,
		.bytes = 1234,
		.attempts = 1,
		.finished_at_ms = finished,
		.status = status,
		.total = -1, .created = -1, .updated = -1, .skipped = -1, .failed = -1,
	};

	snprintf(e.sha256, sizeof(e.sha256), "%s", sha);
	snprintf(e.settings_hash, sizeof(e.settings_hash), "%s", settings);
	return e;
}

static void record(struct ledger *l, const struct ledger_entry *e)
{
	int r = ledger_record(l, e);

	if (r < 0)
		fail_msg("ledger_record '%s' %lld: %d: %s", e->file, (long long)e->claimed_at_ms, r,
			 l->error);
}

#define MAX_LISTED 32

struct listed {
	struct ledger_entry e[MAX_LISTED];
	int n;
	int stop_after; /* 0: never */
	int stop_with;
};

static int collect_cb(const struct ledger_entry *e, void *data)
{
	struct listed *ls = data;

	assert_true(ls->n < MAX_LISTED);
	assert_int_equal(ledger_entry_copy(&ls->e[ls->n++], e), 0);
	if (ls->stop_after && ls->n >= ls->stop_after)
		return ls->stop_with;
	return 0;
}

static void listed_clear(struct listed *ls)
{
	for (int i = 0; i < ls->n; i++)
		ledger_entry_clear(&ls->e[i]);
	memset(ls, 0, sizeof(*ls));
}

/* Lists with Q into LS (cleared first); the listing's result. */
static int list(struct ledger *l, const struct ledger_query *q, struct listed *ls)
{
	int stop_after = ls->stop_after, stop_with = ls->stop_with;

	listed_clear(ls);
	ls->stop_after = stop_after;
	ls->stop_with = stop_with;
	return ledger_list(l, q, collect_cb, ls);
}

static void list_all(struct ledger *l, struct listed *ls)
{
	struct ledger_query q = {0};
	int r = list(l, &q, ls);

	if (r != 0)
		fail_msg("ledger_list: %d: %s", r, l->error);
}

/* The claimed_at_ms of what LS holds, as "100,200,..." */
static const char *claims(const struct listed *ls)
{
	static char buf[512];
	size_t n = 0;

	buf[0] = '\0';
	for (int i = 0; i < ls->n; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%lld", i ? "," : "",
				      (long long)ls->e[i].claimed_at_ms);
	return buf;
}

static void assert_opt_string(const char *got, const char *want)
{
	if (!want)
		assert_null(got);
	else {
		assert_non_null(got);
		assert_string_equal(got, want);
	}
}

static void assert_entry_equal(const struct ledger_entry *got, const struct ledger_entry *want)
{
	assert_string_equal(got->folder, want->folder);
	assert_string_equal(got->file, want->file);
	assert_int_equal(got->claimed_at_ms, want->claimed_at_ms);
	assert_int_equal(got->bytes, want->bytes);
	assert_string_equal(got->sha256, want->sha256);
	assert_string_equal(got->settings_hash, want->settings_hash);
	assert_int_equal(got->attempts, want->attempts);
	assert_int_equal(got->uploaded_at_ms, want->uploaded_at_ms);
	assert_int_equal(got->finished_at_ms, want->finished_at_ms);
	assert_opt_string(got->import_ids, want->import_ids);
	assert_int_equal(got->status, want->status);
	assert_int_equal(got->total, want->total);
	assert_int_equal(got->created, want->created);
	assert_int_equal(got->updated, want->updated);
	assert_int_equal(got->skipped, want->skipped);
	assert_int_equal(got->failed, want->failed);
	assert_opt_string(got->error, want->error);
	assert_opt_string(got->duplicate_of, want->duplicate_of);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* A fresh state directory gets the file, in WAL mode, at the newest schema version. */
static void test_fresh_ledger_is_wal_at_latest_version(void **state)
{
	struct fixture *fx = *state;
	sqlite3 *db;

	assert_false(exists(fx->path));
	open_rw(fx);
	assert_true(exists(fx->path));
	db = raw_open(fx->path);
	assert_string_equal(raw_text(db, "PRAGMA journal_mode"), "wal");
	assert_int_equal(atoi(raw_text(db, "PRAGMA user_version")), LATEST_VERSION);
	assert_string_equal(raw_text(db, "PRAGMA integrity_check"), "ok");
	sqlite3_close(db);
	ledger_close(fx->l);
	fx->l = NULL;
	/* Opening it again changes nothing. */
	open_rw(fx);
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), LATEST_VERSION);
}

/* Recording a key again replaces its row; every field comes back as it was recorded. */
static void test_record_roundtrip_and_replace(void **state)
{
	struct fixture *fx = *state;
	struct listed ls = {0};
	struct ledger_entry e = entry("news 'letter' \"q\"", "contacts é 日本 'x'.csv", 1700000000123,
				      SHA_A, SET_1, LEDGER_CLAIMED, 0);

	open_rw(fx);
	/* Just claimed: nothing known yet. */
	e.bytes = 0;
	e.attempts = 0;
	record(fx->l, &e);
	list_all(fx->l, &ls);
	assert_int_equal(ls.n, 1);
	assert_entry_equal(&ls.e[0], &e);
	assert_int_equal(ls.e[0].uploaded_at_ms, 0);
	assert_int_equal(ls.e[0].finished_at_ms, 0);
	assert_int_equal(ls.e[0].total, -1);
	assert_null(ls.e[0].import_ids);
	assert_null(ls.e[0].error);
	assert_null(ls.e[0].duplicate_of);

	/* Uploaded, then finished: the same key, one row, every field updated. */
	e.bytes = UINT64_C(5000000000);
	e.attempts = 3;
	e.uploaded_at_ms = 1700000001000;
	e.status = LEDGER_UPLOADED;
	e.import_ids = "479e3145-aaaa,479e3145-bbbb";
	record(fx->l, &e);
	e.finished_at_ms = 1700000009999;
	e.status = LEDGER_FAILED;
	e.total = 1250;
	e.created = 1000;
	e.updated = 0;
	e.skipped = 200;
	e.failed = 50;
	e.error = "upload: 422 \"invalid\" — ñ 'quoted'";
	e.duplicate_of = "older 'file'.csv";
	snprintf(e.settings_hash, sizeof(e.settings_hash), "%s", SET_2);
	snprintf(e.sha256, sizeof(e.sha256), "%s", SHA_B);
	record(fx->l, &e);
	list_all(fx->l, &ls);
	assert_int_equal(ls.n, 1);
	assert_entry_equal(&ls.e[0], &e);
	assert_int_equal(count_files(fx), 1);

	/* And back to unknowns: NULL strings and -1 counts are stored as such, not as "" or 0. */
	e.import_ids = NULL;
	e.error = NULL;
	e.duplicate_of = NULL;
	e.total = e.created = e.updated = e.skipped = e.failed = -1;
	e.uploaded_at_ms = 0;
	e.finished_at_ms = 0;
	e.sha256[0] = '\0';
	e.settings_hash[0] = '\0';
	for (int s = 0; s < LEDGER_N_STATUSES; s++) {
		e.status = (enum ledger_status)s;
		record(fx->l, &e);
		list_all(fx->l, &ls);
		assert_int_equal(ls.n, 1);
		assert_entry_equal(&ls.e[0], &e);
	}
	/* Another claim of the same file is another row. */
	e.claimed_at_ms++;
	record(fx->l, &e);
	list_all(fx->l, &ls);
	assert_int_equal(ls.n, 2);
	listed_clear(&ls);
}

/* The duplicate look-up: DONE only, same folder, content and (non-empty) settings, finished at
 * or after the window's start; the latest import of several. */
static void test_find_imported(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e, got;
	struct ledger *l;

	open_rw(fx);
	l = fx->l;
	e = entry("news", "first.csv", 100, SHA_A, SET_1, LEDGER_DONE, 1000);
	e.import_ids = "imp-first";
	record(l, &e);
	e = entry("news", "second.csv", 2000, SHA_A, SET_1, LEDGER_DONE, 3000);
	e.import_ids = "imp-second";
	record(l, &e);
	/* None of these is an import of SHA_A under SET_1 in news. */
	for (int s = 0; s < LEDGER_N_STATUSES; s++)
		if (s != LEDGER_DONE) {
			e = entry("news", "not-done.csv", 4000 + s, SHA_A, SET_1,
				  (enum ledger_status)s, 5000 + s);
			record(l, &e);
		}
	e = entry("other", "elsewhere.csv", 6000, SHA_A, SET_1, LEDGER_DONE, 6001);
	record(l, &e);
	e = entry("news", "other-content.csv", 6100, SHA_B, SET_1, LEDGER_DONE, 6101);
	record(l, &e);
	e = entry("news", "other-settings.csv", 6200, SHA_A, SET_2, LEDGER_DONE, 6201);
	record(l, &e);
	e = entry("news", "no-settings.csv", 6300, SHA_A, "", LEDGER_DONE, 6301);
	record(l, &e);
	e = entry("news", "done-unfinished.csv", 6400, SHA_A, SET_1, LEDGER_DONE, 0);
	record(l, &e);

	/* 0: ever; the latest of the two. */
	assert_int_equal(ledger_find_imported(l, "news", SHA_A, SET_1, 0, &got), 0);
	assert_string_equal(got.file, "second.csv");
	assert_string_equal(got.import_ids, "imp-second");
	assert_int_equal(got.finished_at_ms, 3000);
	assert_int_equal(got.status, LEDGER_DONE);
	ledger_entry_clear(&got);
	/* The window's start is inclusive. */
	assert_int_equal(ledger_find_imported(l, "news", SHA_A, SET_1, 3000, &got), 0);
	assert_string_equal(got.file, "second.csv");
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_imported(l, "news", SHA_A, SET_1, 3001, &got), -ENOENT);
	/* Each of the others, on its own terms. */
	assert_int_equal(ledger_find_imported(l, "other", SHA_A, SET_1, 0, &got), 0);
	assert_string_equal(got.file, "elsewhere.csv");
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_imported(l, "news", SHA_B, SET_1, 0, &got), 0);
	assert_string_equal(got.file, "other-content.csv");
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_imported(l, "news", SHA_A, SET_2, 0, &got), 0);
	assert_string_equal(got.file, "other-settings.csv");
	ledger_entry_clear(&got);
	/* An empty settings hash (unknown) never matches, not even another empty one. */
	assert_int_equal(ledger_find_imported(l, "news", SHA_A, "", 0, &got), -ENOENT);
	assert_int_equal(ledger_find_imported(l, "none", SHA_A, SET_1, 0, &got), -ENOENT);
	assert_int_equal(ledger_find_imported(l, "news", SHA_B, SET_2, 0, &got), -ENOENT);
	assert_int_equal(ledger_find_imported(l, "News", SHA_A, SET_1, 0, &got), -ENOENT);
}

/* The recovery look-up: the file's own latest claim that has not finished, with that content. */
static void test_find_unfinished(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e, got;
	struct ledger *l;

	open_rw(fx);
	l = fx->l;
	e = entry("news", "x.csv", 100, SHA_A, SET_1, LEDGER_DONE, 200);
	record(l, &e);
	e = entry("news", "x.csv", 300, SHA_A, SET_1, LEDGER_UPLOADED, 0);
	e.uploaded_at_ms = 350;
	e.import_ids = "imp-300";
	record(l, &e);
	e = entry("news", "x.csv", 400, SHA_A, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);
	e = entry("news", "x.csv", 500, SHA_B, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);
	e = entry("news", "y.csv", 600, SHA_A, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);
	e = entry("other", "x.csv", 700, SHA_A, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);

	assert_int_equal(ledger_find_unfinished(l, "news", "x.csv", SHA_A, &got), 0);
	assert_int_equal(got.claimed_at_ms, 400);
	assert_int_equal(got.status, LEDGER_CLAIMED);
	ledger_entry_clear(&got);
	/* Once that claim finishes, the one before it is the latest unfinished. */
	e = entry("news", "x.csv", 400, SHA_A, SET_1, LEDGER_FAILED, 450);
	record(l, &e);
	assert_int_equal(ledger_find_unfinished(l, "news", "x.csv", SHA_A, &got), 0);
	assert_int_equal(got.claimed_at_ms, 300);
	assert_int_equal(got.status, LEDGER_UPLOADED);
	assert_int_equal(got.uploaded_at_ms, 350);
	assert_string_equal(got.import_ids, "imp-300");
	ledger_entry_clear(&got);
	e = entry("news", "x.csv", 300, SHA_A, SET_1, LEDGER_DONE, 800);
	record(l, &e);
	assert_int_equal(ledger_find_unfinished(l, "news", "x.csv", SHA_A, &got), -ENOENT);

	assert_int_equal(ledger_find_unfinished(l, "news", "x.csv", SHA_B, &got), 0);
	assert_int_equal(got.claimed_at_ms, 500);
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_unfinished(l, "news", "y.csv", SHA_A, &got), 0);
	assert_int_equal(got.claimed_at_ms, 600);
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_unfinished(l, "other", "x.csv", SHA_A, &got), 0);
	assert_int_equal(got.claimed_at_ms, 700);
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_unfinished(l, "other", "y.csv", SHA_A, &got), -ENOENT);
	assert_int_equal(ledger_find_unfinished(l, "news", "x.csv", "", &got), -ENOENT);
}

/* The history: newest first, with its filters; a callback stops it with its own value. */
static void test_list_order_filters_and_stop(void **state)
{
	struct fixture *fx = *state;
	struct listed ls = {0};
	struct ledger_query q;
	struct ledger_entry e;
	struct ledger *l;

	open_rw(fx);
	l = fx->l;
	/* Recorded out of order: the listing sorts by claim. */
	e = entry("a", "300.csv", 300, SHA_A, SET_1, LEDGER_FAILED, 301);
	record(l, &e);
	e = entry("a", "100.csv", 100, SHA_A, SET_1, LEDGER_DONE, 101);
	record(l, &e);
	e = entry("b", "200.csv", 200, SHA_A, SET_1, LEDGER_FAILED, 201);
	record(l, &e);
	e = entry("b", "500.csv", 500, SHA_A, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);
	e = entry("a", "400.csv", 400, SHA_A, SET_1, LEDGER_SKIPPED, 401);
	record(l, &e);
	e = entry("a", "600.csv", 600, SHA_A, SET_1, LEDGER_FAILED, 601);
	record(l, &e);

	list_all(l, &ls);
	assert_string_equal(claims(&ls), "600,500,400,300,200,100");

	q = (struct ledger_query){.folder = "a"};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_string_equal(claims(&ls), "600,400,300,100");
	q = (struct ledger_query){.since_ms = 300};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_string_equal(claims(&ls), "600,500,400,300");
	q = (struct ledger_query){.failed_only = true};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_string_equal(claims(&ls), "600,300,200");
	q = (struct ledger_query){.limit = 2};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_string_equal(claims(&ls), "600,500");
	q = (struct ledger_query){.folder = "a", .since_ms = 200, .failed_only = true, .limit = 5};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_string_equal(claims(&ls), "600,300");
	q = (struct ledger_query){.folder = "b", .failed_only = true, .limit = 1};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_string_equal(claims(&ls), "200");
	q = (struct ledger_query){.folder = "nobody"};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_int_equal(ls.n, 0);
	q = (struct ledger_query){.since_ms = 601};
	assert_int_equal(list(l, &q, &ls), 0);
	assert_int_equal(ls.n, 0);

	/* A callback's non-zero return stops the listing and is its result. */
	q = (struct ledger_query){0};
	ls.stop_after = 2;
	ls.stop_with = 42;
	assert_int_equal(list(l, &q, &ls), 42);
	assert_string_equal(claims(&ls), "600,500");
	ls.stop_after = 1;
	ls.stop_with = -EPIPE;
	assert_int_equal(list(l, &q, &ls), -EPIPE);
	assert_int_equal(ls.n, 1);
	listed_clear(&ls);
}

/* Pruning removes the files that finished before the bound, says how many, keeps the others. */
static void test_prune(void **state)
{
	struct fixture *fx = *state;
	struct listed ls = {0};
	struct ledger_entry e;
	uint64_t n = 99;
	struct ledger *l;

	open_rw(fx);
	l = fx->l;
	e = entry("a", "old.csv", 10, SHA_A, SET_1, LEDGER_DONE, 100);
	record(l, &e);
	e = entry("a", "older.csv", 20, SHA_A, SET_1, LEDGER_FAILED, 200);
	record(l, &e);
	e = entry("a", "bound.csv", 30, SHA_A, SET_1, LEDGER_DONE, 300);
	record(l, &e);
	/* Claimed long ago and never finished: recovery still needs it. */
	e = entry("a", "stuck.csv", 5, SHA_A, SET_1, LEDGER_UPLOADED, 0);
	record(l, &e);

	assert_int_equal(ledger_prune(l, 300, &n), 0);
	assert_int_equal(n, 2);
	list_all(l, &ls);
	assert_string_equal(claims(&ls), "30,5");
	assert_int_equal(ledger_prune(l, 300, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ledger_prune(l, INT64_MAX, &n), 0);
	assert_int_equal(n, 1);
	list_all(l, &ls);
	assert_string_equal(claims(&ls), "5");
	assert_string_equal(ls.e[0].file, "stuck.csv");
	/* RET_N may be NULL. */
	assert_int_equal(ledger_prune(l, INT64_MAX, NULL), 0);
	listed_clear(&ls);
}

/* Records in a transaction: a rolled-back one is not there, a committed one is. */
static void test_begin_commit_rollback(void **state)
{
	struct fixture *fx = *state;
	struct listed ls = {0};
	struct ledger_entry e, got;
	struct ledger *l;

	open_rw(fx);
	l = fx->l;
	assert_int_equal(l->ops->begin(l), 0);
	e = entry("a", "rolled-back.csv", 100, SHA_A, SET_1, LEDGER_DONE, 101);
	record(l, &e);
	e = entry("a", "rolled-back-too.csv", 110, SHA_A, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);
	assert_int_equal(l->ops->rollback(l), 0);
	list_all(l, &ls);
	assert_int_equal(ls.n, 0);
	assert_int_equal(ledger_find_imported(l, "a", SHA_A, SET_1, 0, &got), -ENOENT);
	assert_int_equal(ledger_find_unfinished(l, "a", "rolled-back-too.csv", SHA_A, &got),
			 -ENOENT);
	/* Rolling back with no transaction open is harmless. */
	assert_int_equal(l->ops->rollback(l), 0);

	assert_int_equal(l->ops->begin(l), 0);
	e = entry("a", "committed.csv", 200, SHA_A, SET_1, LEDGER_DONE, 201);
	record(l, &e);
	e = entry("a", "committed-too.csv", 210, SHA_A, SET_1, LEDGER_CLAIMED, 0);
	record(l, &e);
	assert_int_equal(l->ops->commit(l), 0);
	/* Committed means on disk: another connection sees it. */
	assert_int_equal(count_files(fx), 2);
	ledger_close(l);
	fx->l = NULL;
	open_rw(fx);
	list_all(fx->l, &ls);
	assert_string_equal(claims(&ls), "210,200");
	listed_clear(&ls);
}

/* A ledger of schema version 1 (the first release) is migrated at open: its rows are kept,
 * listed and found for recovery, but never taken for duplicates (no settings hash). */
static void test_migration_from_version_1(void **state)
{
	struct fixture *fx = *state;
	struct listed ls = {0};
	struct ledger_entry got;
	sqlite3 *db = raw_open(fx->path);

	raw_exec(db, schema_v1);
	raw_exec(db, "PRAGMA user_version = 1");
	raw_exec(db, "INSERT INTO files (folder, file, claimed_at_ms, bytes, sha256, attempts, "
		     "uploaded_at_ms, finished_at_ms, import_ids, status, total, created, updated, "
		     "skipped, failed, error) VALUES ('news', 'old ''one''.csv', 1000, 77, '" SHA_A
		     "', 2, 1500, 2000, 'imp-old', 'done', 10, 8, 1, 1, 0, NULL)");
	raw_exec(db, "INSERT INTO files (folder, file, claimed_at_ms, sha256, status) VALUES "
		     "('news', 'crashed.csv', 3000, '" SHA_B "', 'uploaded')");
	sqlite3_close(db);

	open_rw(fx);
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), LATEST_VERSION);
	db = raw_open(fx->path);
	assert_string_equal(raw_text(db, "PRAGMA journal_mode"), "wal");
	/* Version 3: imports by when they were made. */
	assert_string_equal(raw_text(db, "SELECT name FROM sqlite_master WHERE type = 'index' AND "
					 "name = 'files_by_upload'"),
			    "files_by_upload");
	sqlite3_close(db);
	assert_int_equal(ledger_knows_import(fx->l, "imp-old", 0), 1);

	list_all(fx->l, &ls);
	assert_int_equal(ls.n, 2);
	assert_string_equal(ls.e[1].folder, "news");
	assert_string_equal(ls.e[1].file, "old 'one'.csv");
	assert_int_equal(ls.e[1].claimed_at_ms, 1000);
	assert_int_equal(ls.e[1].bytes, 77);
	assert_string_equal(ls.e[1].sha256, SHA_A);
	assert_string_equal(ls.e[1].settings_hash, "");
	assert_int_equal(ls.e[1].attempts, 2);
	assert_int_equal(ls.e[1].uploaded_at_ms, 1500);
	assert_int_equal(ls.e[1].finished_at_ms, 2000);
	assert_string_equal(ls.e[1].import_ids, "imp-old");
	assert_int_equal(ls.e[1].status, LEDGER_DONE);
	assert_int_equal(ls.e[1].total, 10);
	assert_int_equal(ls.e[1].created, 8);
	assert_null(ls.e[1].error);
	assert_null(ls.e[1].duplicate_of);
	assert_int_equal(ls.e[0].total, -1);

	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, "", 0, &got), -ENOENT);
	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, SET_1, 0, &got), -ENOENT);
	assert_int_equal(ledger_find_unfinished(fx->l, "news", "crashed.csv", SHA_B, &got), 0);
	assert_int_equal(got.claimed_at_ms, 3000);
	assert_int_equal(got.status, LEDGER_UPLOADED);
	ledger_entry_clear(&got);

	/* The migrated ledger takes new records with the new columns. */
	got = entry("news", "new.csv", 4000, SHA_A, SET_1, LEDGER_DONE, 4001);
	got.duplicate_of = "x.csv";
	record(fx->l, &got);
	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, SET_1, 0, &got), 0);
	assert_string_equal(got.file, "new.csv");
	assert_string_equal(got.duplicate_of, "x.csv");
	ledger_entry_clear(&got);
	listed_clear(&ls);

	/* The reader now opens it too. */
	ledger_close(fx->l);
	fx->l = NULL;
	assert_int_equal(ledger_open(fx->dir, true, &fx->l, fx->err, sizeof(fx->err)), 0);
}

/* A ledger written by a later version is refused, saying both versions. */
static void test_newer_schema_refused(void **state)
{
	struct fixture *fx = *state;
	char want[64];
	sqlite3 *db = raw_open(fx->path);

	raw_exec(db, "CREATE TABLE files (id INTEGER PRIMARY KEY)");
	raw_exec(db, "PRAGMA user_version = 9");
	sqlite3_close(db);
	for (int ro = 0; ro < 2; ro++) {
		fx->err[0] = '\0';
		assert_int_equal(ledger_open(fx->dir, ro, &fx->l, fx->err, sizeof(fx->err)),
				 -EPROTO);
		assert_null(fx->l);
		assert_non_null(strstr(fx->err, fx->path));
		assert_non_null(strstr(fx->err, "version 9"));
		snprintf(want, sizeof(want), "(%d)", LATEST_VERSION);
		assert_non_null(strstr(fx->err, want));
	}
	/* Left as it was. */
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 9);
}

/* history (read-only) does not migrate: it says the daemon does. */
static void test_read_only_old_schema_refused(void **state)
{
	struct fixture *fx = *state;
	sqlite3 *db = raw_open(fx->path);

	raw_exec(db, schema_v1);
	raw_exec(db, "PRAGMA user_version = 1");
	sqlite3_close(db);
	assert_int_equal(ledger_open(fx->dir, true, &fx->l, fx->err, sizeof(fx->err)), -EPROTO);
	assert_null(fx->l);
	assert_non_null(strstr(fx->err, fx->path));
	assert_non_null(strstr(fx->err, "daemon migrates"));
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 1);
}

static void assert_not_a_ledger(struct fixture *fx, bool read_only)
{
	int r;

	fx->err[0] = '\0';
	r = ledger_open(fx->dir, read_only, &fx->l, fx->err, sizeof(fx->err));
	if (r != -EBADMSG)
		fail_msg("ledger_open(read_only %d): %d (%s), not -EBADMSG: '%s'", read_only, r,
			 strerror(-r), fx->err);
	assert_null(fx->l);
	assert_non_null(strstr(fx->err, "not a resend-dropd ledger, or is damaged"));
	assert_non_null(strstr(fx->err, fx->path));
}

/* A file that is no ledger, or a damaged one, is refused as such, and left as it was. */
static void test_not_a_database(void **state)
{
	struct fixture *fx = *state;
	unsigned char junk[8192], back[8192];
	struct ledger_entry e;
	struct stat st;
	int fd;

	srand(11);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rand();
	write_file(fx->path, junk, sizeof(junk));
	assert_not_a_ledger(fx, false);
	assert_not_a_ledger(fx, true);
	fd = open(fx->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, back, sizeof(back)), (ssize_t)sizeof(back));
	close(fd);
	assert_memory_equal(junk, back, sizeof(junk));

	/* Text. */
	write_file(fx->path, "folder,file\nnews,a.csv\n", 23);
	assert_not_a_ledger(fx, false);

	/* A real ledger with its header garbled. */
	assert_int_equal(unlink(fx->path), 0);
	open_rw(fx);
	for (int i = 0; i < 50; i++) {
		char name[32];

		snprintf(name, sizeof(name), "%d.csv", i);
		e = entry("news", name, i + 1, SHA_A, SET_1, LEDGER_DONE, i + 2);
		record(fx->l, &e);
	}
	ledger_close(fx->l);
	fx->l = NULL;
	fd = open(fx->path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "garbage garbage!", 16, 0), 16);
	close(fd);
	assert_not_a_ledger(fx, false);
	assert_not_a_ledger(fx, true);

	/* A real ledger cut short (a copy that stopped half way). */
	assert_int_equal(unlink(fx->path), 0);
	open_rw(fx);
	ledger_close(fx->l);
	fx->l = NULL;
	assert_int_equal(stat(fx->path, &st), 0);
	assert_true(st.st_size > 64);
	assert_int_equal(truncate(fx->path, 64), 0);
	assert_not_a_ledger(fx, false);
}

/* history before the daemon ever ran: an error that names the file, and nothing is made. */
static void test_read_only_missing(void **state)
{
	struct fixture *fx = *state;
	char missing[192];

	assert_int_equal(ledger_open(fx->dir, true, &fx->l, fx->err, sizeof(fx->err)), -ENOENT);
	assert_null(fx->l);
	assert_non_null(strstr(fx->err, fx->path));
	assert_false(exists(fx->path));
	/* A state directory that is not there either. */
	snprintf(missing, sizeof(missing), "%s/nope", fx->dir);
	assert_true(ledger_open(missing, true, &fx->l, fx->err, sizeof(fx->err)) < 0);
	assert_non_null(strstr(fx->err, missing));
	assert_true(ledger_open(missing, false, &fx->l, fx->err, sizeof(fx->err)) < 0);
	assert_non_null(strstr(fx->err, missing));
	assert_null(fx->l);
}

/* history runs while the daemon writes: WAL lets the reader open and read what is committed
 * while a write transaction is open. */
static void test_read_only_beside_a_writer(void **state)
{
	struct fixture *fx = *state;
	struct listed ls = {0};
	struct ledger *ro = NULL;
	struct ledger_entry e, got;
	struct ledger *w;

	open_rw(fx);
	w = fx->l;
	e = entry("news", "committed.csv", 100, SHA_A, SET_1, LEDGER_DONE, 101);
	record(w, &e);
	assert_int_equal(w->ops->begin(w), 0);
	e = entry("news", "in-flight.csv", 200, SHA_B, SET_1, LEDGER_DONE, 201);
	record(w, &e);

	if (open_ro(fx, &ro, fx->err, sizeof(fx->err)) < 0)
		fail_msg("read-only open beside a writer: %s", fx->err);
	list_all(ro, &ls);
	assert_string_equal(claims(&ls), "100");
	assert_int_equal(ledger_find_imported(ro, "news", SHA_A, SET_1, 0, &got), 0);
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_imported(ro, "news", SHA_B, SET_1, 0, &got), -ENOENT);

	assert_int_equal(w->ops->commit(w), 0);
	list_all(ro, &ls);
	assert_string_equal(claims(&ls), "200,100");
	/* The writer goes on writing while the reader is open. */
	e = entry("news", "later.csv", 300, SHA_B, SET_1, LEDGER_CLAIMED, 0);
	record(w, &e);
	list_all(ro, &ls);
	assert_string_equal(claims(&ls), "300,200,100");
	ledger_close(ro);
	listed_clear(&ls);
}

/* Writing through a read-only handle fails with an error; it does not crash and writes
 * nothing. Run in a child, so that a crash is this test's failure and not the program's. */
static void test_read_only_refuses_writes(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "x.csv", 100, SHA_A, SET_1, LEDGER_DONE, 101);
	int status;
	pid_t pid;

	open_rw(fx);
	ledger_close(fx->l);
	fx->l = NULL;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ledger *ro;
		char err[512];
		uint64_t n;

		/* cmocka's handlers would carry on with the other tests in the child. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		if (open_ro(fx, &ro, err, sizeof(err)) < 0)
			_exit(10);
		if (ledger_record(ro, &e) >= 0)
			_exit(11);
		if (ro->error[0] == '\0')
			_exit(12);
		if (ledger_prune(ro, INT64_MAX, &n) >= 0)
			_exit(13);
		ledger_close(ro);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		fail_msg("record/prune on a read-only ledger killed the process with signal %d",
			 WTERMSIG(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("record/prune on a read-only ledger: child exit %d (10 open failed, 11 "
			 "record succeeded, 12 no error text, 13 prune succeeded; other: a "
			 "sanitizer's report above)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	assert_int_equal(count_files(fx), 0);
}

/* SQLite's WAL is not safe on a network filesystem: those are recognised by their magic. */
/* The backends are named in one table: SQLite by name (what ledger_open takes), and an
 * unknown name refused with a sentence. */
static void test_backends_by_name(void **state)
{
	char dir[] = "/tmp/rdd-ledger-backend-XXXXXX", err[256];
	struct ledger *l = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(ledger_open_backend("nosuch", dir, false, &l, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "no ledger backend named 'nosuch'");
	assert_null(l);
	assert_int_equal(ledger_open_backend("sqlite", dir, false, &l, err, sizeof(err)), 0);
	assert_string_equal(l->ops->name, "sqlite");
	ledger_close(l);
	snprintf(err, sizeof(err), "rm -rf %s", dir);
	assert_int_equal(system(err), 0);
}

static void test_fs_is_network(void **state)
{
	static const struct {
		long magic;
		const char *name;
	} net[] = {
		{0x6969, "nfs"},
		{0xff534d42L, "cifs"},
		{(long)(int)0xff534d42, "cifs"}, /* as a 32-bit f_type sign-extends it */
		{0xfe534d42L, "smb2"},
		{0x517b, "smb"},
		{0x65735546, "fuse"},
	};
	static const long local[] = {0xEF53, 0x01021994, 0x9123683EL, 0x58465342 /* xfs */,
				     0x794c7630 /* overlay */, 0};
	const char *name;

	(void)state;
	for (size_t i = 0; i < sizeof(net) / sizeof(net[0]); i++) {
		name = NULL;
		assert_true(ledger_fs_is_network(net[i].magic, &name));
		assert_non_null(name);
		assert_string_equal(name, net[i].name);
		assert_true(ledger_fs_is_network(net[i].magic, NULL));
	}
	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		name = "untouched";
		assert_false(ledger_fs_is_network(local[i], &name));
		assert_string_equal(name, "untouched");
	}
}

static void test_status_names(void **state)
{
	static const char *const names[] = {"claimed", "uploaded", "done", "failed", "skipped"};
	enum ledger_status s;

	(void)state;
	assert_int_equal(sizeof(names) / sizeof(names[0]), LEDGER_N_STATUSES);
	for (int i = 0; i < LEDGER_N_STATUSES; i++) {
		assert_string_equal(ledger_status_name((enum ledger_status)i), names[i]);
		s = LEDGER_N_STATUSES;
		assert_int_equal(ledger_status_parse(names[i], &s), 0);
		assert_int_equal(s, i);
	}
	s = LEDGER_DONE;
	assert_int_equal(ledger_status_parse("Done", &s), -EINVAL);
	assert_int_equal(ledger_status_parse("", &s), -EINVAL);
	assert_int_equal(ledger_status_parse("unknown", &s), -EINVAL);
	assert_int_equal(ledger_status_parse(NULL, &s), -EINVAL);
	assert_int_equal(s, LEDGER_DONE);
	assert_string_equal(ledger_status_name(LEDGER_N_STATUSES), "unknown");
}

/* A copy owns its strings: freeing the source leaves it whole (ASan checks the rest). */
static void test_entry_copy_is_deep(void **state)
{
	struct ledger_entry src = {0}, dst, dst2;

	(void)state;
	src.folder = strdup("news");
	src.file = strdup("a.csv");
	src.import_ids = strdup("i1,i2");
	src.error = strdup("upload: boom");
	src.duplicate_of = strdup("b.csv");
	src.claimed_at_ms = 5;
	src.bytes = 6;
	src.total = -1;
	src.status = LEDGER_SKIPPED;
	snprintf(src.sha256, sizeof(src.sha256), "%s", SHA_A);
	snprintf(src.settings_hash, sizeof(src.settings_hash), "%s", SET_1);
	assert_int_equal(ledger_entry_copy(&dst, &src), 0);
	assert_ptr_not_equal(dst.folder, src.folder);
	assert_ptr_not_equal(dst.file, src.file);
	assert_ptr_not_equal(dst.import_ids, src.import_ids);
	assert_ptr_not_equal(dst.error, src.error);
	assert_ptr_not_equal(dst.duplicate_of, src.duplicate_of);
	ledger_entry_clear(&src);
	assert_null(src.folder);
	assert_string_equal(dst.folder, "news");
	assert_string_equal(dst.file, "a.csv");
	assert_string_equal(dst.import_ids, "i1,i2");
	assert_string_equal(dst.error, "upload: boom");
	assert_string_equal(dst.duplicate_of, "b.csv");
	assert_string_equal(dst.sha256, SHA_A);
	assert_string_equal(dst.settings_hash, SET_1);
	assert_int_equal(dst.claimed_at_ms, 5);
	assert_int_equal(dst.bytes, 6);
	assert_int_equal(dst.total, -1);
	assert_int_equal(dst.status, LEDGER_SKIPPED);

	/* NULL strings stay NULL. */
	free(dst.error);
	dst.error = NULL;
	free(dst.duplicate_of);
	dst.duplicate_of = NULL;
	assert_int_equal(ledger_entry_copy(&dst2, &dst), 0);
	assert_null(dst2.error);
	assert_null(dst2.duplicate_of);
	assert_string_equal(dst2.import_ids, "i1,i2");
	ledger_entry_clear(&dst);
	ledger_entry_clear(&dst2);
	/* Clearing twice, or an empty entry, is harmless. */
	ledger_entry_clear(&dst2);
}

/* Whether an import id is one the ledger has (reconciliation after a crash): among a file's
 * comma-separated ids, never by a prefix or a LIKE wildcard, and only for files uploaded since
 * the time asked. */
static void test_knows_import(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e;
	struct ledger *l;

	open_rw(fx);
	l = fx->l;
	e = entry("news", "a.csv", 100, SHA_A, SET_1, LEDGER_DONE, 200);
	e.uploaded_at_ms = 150;
	e.import_ids = "imp-1";
	record(l, &e);
	e = entry("news", "b.csv", 300, SHA_B, SET_1, LEDGER_UPLOADED, 0);
	e.uploaded_at_ms = 350;
	e.import_ids = "part-a,part_b,part-c";
	record(l, &e);
	assert_int_equal(ledger_knows_import(l, "imp-1", 0), 1);
	assert_int_equal(ledger_knows_import(l, "imp-1", 151), 0); /* uploaded before */
	assert_int_equal(ledger_knows_import(l, "part_b", 300), 1);
	assert_int_equal(ledger_knows_import(l, "part-c", 300), 1);
	assert_int_equal(ledger_knows_import(l, "part", 0), 0);   /* not a prefix */
	assert_int_equal(ledger_knows_import(l, "partxb", 0), 0); /* '_' is no wildcard */
	assert_int_equal(ledger_knows_import(l, "imp-2", 0), 0);
	assert_int_equal(ledger_knows_import(l, "a,part", 0), 0);
}

/* ---- the outbox ------------------------------------------------------------------------ */

static struct ledger_event event(const char *msg_id, const char *channel, const char *type,
				 int64_t at)
{
	return (struct ledger_event){.msg_id = (char *)msg_id, .channel = (char *)channel,
				     .type = (char *)type, .payload = (char *)"{\"x\":1}",
				     .created_at_ms = at};
}

/* The oldest due event of CHANNEL: its msg_id, or "" with R the result (-ENOENT, -EAGAIN). */
static const char *next_of(struct ledger *l, const char *channel, int64_t now,
			   struct ledger_outbox_row *row, int *r, uint64_t *pending,
			   int64_t *next_at)
{
	int64_t oldest = -1, n = -1;

	*r = ledger_outbox_next(l, channel, now, row, next_at ? next_at : &n, pending, &oldest);
	return *r == 0 ? row->ev.msg_id : "";
}

/* Events recorded with their file's end, once each whatever the retries; each channel's oldest
 * first; a failed one waits for its time and keeps its place; delivered and given up ones
 * leave the queue; prune removes them once old. */
static void test_outbox(void **state)
{
	struct fixture *fx = *state;
	struct ledger_outbox_row row;
	struct ledger_event evs[3];
	struct ledger_entry e;
	uint64_t pending = 99, n;
	int64_t next_at = 0;
	int r;

	open_rw(fx);
	assert_string_equal(next_of(fx->l, "webhook:a", 1000, &row, &r, &pending, NULL), "");
	assert_int_equal(r, -ENOENT);
	assert_int_equal(pending, 0);

	e = entry("f", "one.csv", 10, SHA_A, SET_1, LEDGER_DONE, 100);
	evs[0] = event("msg_1", "webhook:a", "file.done", 100);
	evs[1] = event("msg_2", "webhook:b", "file.done", 100);
	e.events = evs;
	e.n_events = 2;
	record(fx->l, &e);
	record(fx->l, &e); /* again (a retried group): nothing more */
	e = entry("f", "two.csv", 20, SHA_A, SET_1, LEDGER_FAILED, 200);
	evs[0] = event("msg_3", "webhook:a", "file.failed", 200);
	e.events = evs;
	e.n_events = 1;
	record(fx->l, &e);

	assert_string_equal(next_of(fx->l, "webhook:a", 1000, &row, &r, &pending, NULL), "msg_1");
	assert_int_equal(pending, 2);
	assert_string_equal(row.ev.channel, "webhook:a");
	assert_string_equal(row.ev.type, "file.done");
	assert_string_equal(row.ev.payload, "{\"x\":1}");
	assert_int_equal(row.ev.created_at_ms, 100);
	assert_int_equal(row.attempts, 0);
	/* It failed: tried again at 5000, and meanwhile the queue waits behind it. */
	assert_int_equal(ledger_outbox_settle(fx->l, row.id, LEDGER_OUTBOX_RETRY, 1, 5000,
					      "HTTP 503", 1000), 0);
	ledger_outbox_row_clear(&row);
	assert_string_equal(next_of(fx->l, "webhook:a", 1001, &row, &r, &pending, &next_at), "");
	assert_int_equal(r, -EAGAIN);
	assert_int_equal(next_at, 5000);
	assert_string_equal(next_of(fx->l, "webhook:a", 5000, &row, &r, &pending, NULL), "msg_1");
	assert_int_equal(row.attempts, 1);
	assert_int_equal(ledger_outbox_settle(fx->l, row.id, LEDGER_OUTBOX_DELIVERED, 2, 0, NULL,
					      5001), 0);
	/* Settling again changes nothing (it is no longer pending). */
	assert_int_equal(ledger_outbox_settle(fx->l, row.id, LEDGER_OUTBOX_RETRY, 9, 9, "x", 9),
			 0);
	ledger_outbox_row_clear(&row);
	assert_string_equal(next_of(fx->l, "webhook:a", 5002, &row, &r, &pending, NULL), "msg_3");
	assert_int_equal(pending, 1);
	assert_int_equal(ledger_outbox_settle(fx->l, row.id, LEDGER_OUTBOX_DROPPED, 7, 0, "HTTP 500",
					      6000), 0);
	ledger_outbox_row_clear(&row);
	assert_string_equal(next_of(fx->l, "webhook:a", 7000, &row, &r, &pending, NULL), "");
	assert_int_equal(r, -ENOENT);
	assert_int_equal(pending, 0);
	/* The other channel is its own queue. */
	assert_string_equal(next_of(fx->l, "webhook:b", 7000, &row, &r, &pending, NULL), "msg_2");
	ledger_outbox_row_clear(&row);

	/* Prune: delivered and given up events made before the bound go; pending ones stay. */
	assert_int_equal(ledger_prune(fx->l, 150, &n), 0);
	assert_string_equal(next_of(fx->l, "webhook:b", 7000, &row, &r, &pending, NULL), "msg_2");
	ledger_outbox_row_clear(&row);
	assert_int_equal(ledger_prune(fx->l, INT64_MAX, &n), 0);
	assert_string_equal(next_of(fx->l, "webhook:b", 7000, &row, &r, &pending, NULL), "msg_2");
	ledger_outbox_row_clear(&row);
}

/* A copy of an entry copies its events. */
static void test_entry_copy_events(void **state)
{
	struct ledger_event evs[2] = {event("m1", "webhook:a", "file.done", 1),
				      event("m2", "webhook:b", "rows.rejected", 2)};
	struct ledger_entry e = entry("f", "x.csv", 1, SHA_A, SET_1, LEDGER_DONE, 2), c;

	(void)state;
	e.events = evs;
	e.n_events = 2;
	assert_int_equal(ledger_entry_copy(&c, &e), 0);
	assert_int_equal(c.n_events, 2);
	assert_ptr_not_equal(c.events, evs);
	assert_ptr_not_equal(c.events[1].payload, evs[1].payload);
	assert_string_equal(c.events[1].msg_id, "m2");
	assert_string_equal(c.events[1].type, "rows.rejected");
	assert_int_equal(c.events[1].created_at_ms, 2);
	ledger_entry_clear(&c);
	assert_null(c.events);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_fresh_ledger_is_wal_at_latest_version),
		T(test_record_roundtrip_and_replace),
		T(test_find_imported),
		T(test_find_unfinished),
		T(test_list_order_filters_and_stop),
		T(test_prune),
		T(test_begin_commit_rollback),
		T(test_migration_from_version_1),
		T(test_newer_schema_refused),
		T(test_read_only_old_schema_refused),
		T(test_not_a_database),
		T(test_read_only_missing),
		T(test_read_only_beside_a_writer),
		T(test_read_only_refuses_writes),
		cmocka_unit_test(test_backends_by_name),
		cmocka_unit_test(test_fs_is_network),
		cmocka_unit_test(test_status_names),
		cmocka_unit_test(test_entry_copy_is_deep),
		T(test_knows_import),
		T(test_outbox),
		cmocka_unit_test(test_entry_copy_events),
	};

	/* What every backend does the same, on PostgreSQL. */
#define P(f) cmocka_unit_test_setup_teardown(f, setup_pg, teardown)
	const struct CMUnitTest pg_tests[] = {
		P(test_record_roundtrip_and_replace),
		P(test_find_imported),
		P(test_find_unfinished),
		P(test_list_order_filters_and_stop),
		P(test_prune),
		P(test_begin_commit_rollback),
		P(test_read_only_beside_a_writer),
		P(test_read_only_refuses_writes),
		P(test_knows_import),
		P(test_outbox),
	};
	int failed = cmocka_run_group_tests_name("sqlite", tests, NULL, NULL);

	return failed + cmocka_run_group_tests_name("postgresql", pg_tests, group_setup_pg,
						    group_teardown_pg);
}
