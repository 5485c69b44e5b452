/* ledger_pg: what only the PostgreSQL backend does, on a real server the program starts
 * (pg_fixture.h), each test with a database of its own. What a user gets: a database migrated
 * once at open, even by several hosts starting together; clear refusals of a newer schema, of
 * history without a ledger, of a missing database or role, of a password not given; a daemon
 * that outlives its server's restart without being restarted itself, and one that starts
 * before its server; the password read from a file of libpq's, never from the YAML; errors in
 * one line; a group the server refused never reported as committed; file names that are not
 * UTF-8 recorded like any other. What every backend does the same is in test_ledger.c. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "ledger.h"
#include "pg_fixture.h"

/* The newest schema version ledger_pg.c knows (the length of its migrations array): a fresh
 * database has one row in ledger_schema for each of 1..LATEST_VERSION. */
#define LATEST_VERSION 3

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SET_1 "1111111111111111111111111111111111111111111111111111111111111111"

/* Opens that are refused must be refused now, not after a timeout (libpq's is 10 s here). */
#define AT_ONCE_MS 5000

struct fixture {
	char where[256]; /* the connection string of the test's database */
	char dir[64];    /* for password files */
	struct ledger *l, *ro;
	char err[1024];
};

/* The server is down (pg_fixture_halt): a test that fails meanwhile leaves it to teardown to
 * start it again, so that the next test has its server. */
static bool halted;

static int group_setup(void **state)
{
	(void)state;
	return pg_fixture_start();
}

static int group_teardown(void **state)
{
	(void)state;
	pg_fixture_stop();
	return 0;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	*state = fx;
	strcpy(fx->dir, "/tmp/rdd-ledger-pg-XXXXXX");
	if (!mkdtemp(fx->dir)) {
		fx->dir[0] = '\0';
		return -1;
	}
	return pg_fixture_new_database(fx->where, sizeof(fx->where));
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
	ledger_close(fx->ro);
	if (halted) {
		halted = false;
		if (pg_fixture_resume() < 0)
			r = -1;
	}
	if (fx->dir[0] && nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0)
		r = -1;
	free(fx);
	return r;
}

static void halt(void)
{
	assert_int_equal(pg_fixture_halt(), 0);
	halted = true;
}

static void resume(void)
{
	assert_int_equal(pg_fixture_resume(), 0);
	halted = false;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the server, seen by another connection than the ledger's ----------------------------- */

/* The first column of the first row of SQL in the database of WHERE (static buffer). */
static const char *sql_text(const char *where, const char *sql)
{
	static char buf[512];

	if (pg_fixture_sql(where, sql, buf, sizeof(buf)) < 0)
		fail_msg("%s: failed (the server's reason above)", sql);
	return buf;
}

static int sql_int(const char *where, const char *sql)
{
	return atoi(sql_text(where, sql));
}

/* The superuser's connection string for database DB (NULL: postgres). */
static const char *admin(const char *db)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "host=%s user=postgres dbname=%s", pg_fixture_host(),
		 db ? db : "postgres");
	return buf;
}

static int count_files(const struct fixture *fx)
{
	return sql_int(fx->where, "SELECT count(*) FROM files");
}

/* ---- the ledger ----------------------------------------------------------------------------- */

static int open_pg(const char *where, bool read_only, struct ledger **ret, char *err,
		   size_t errsz)
{
	return ledger_open_backend("postgresql", where, read_only, ret, err, errsz);
}

static void open_rw(struct fixture *fx)
{
	int r = open_pg(fx->where, false, &fx->l, fx->err, sizeof(fx->err));

	if (r < 0)
		fail_msg("open %s: %d: %s", fx->where, r, fx->err);
}

static void close_rw(struct fixture *fx)
{
	ledger_close(fx->l);
	fx->l = NULL;
}

/* An entry with every string borrowed (never cleared). */
static struct ledger_entry entry(const char *folder, const char *file, int64_t claimed,
				 enum ledger_status status, int64_t finished)
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

	snprintf(e.sha256, sizeof(e.sha256), "%s", SHA_A);
	snprintf(e.settings_hash, sizeof(e.settings_hash), "%s", SET_1);
	return e;
}

static void record(struct ledger *l, const struct ledger_entry *e)
{
	int r = ledger_record(l, e);

	if (r < 0)
		fail_msg("ledger_record '%s' %lld: %d: %s", e->file, (long long)e->claimed_at_ms, r,
			 l->error);
}

static int count_cb(const struct ledger_entry *e, void *data)
{
	(void)e;
	++*(int *)data;
	return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* A fresh database gets the ledger's tables at open, its version written down once. */
static void test_fresh_database_is_migrated_at_open_once(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "a.csv", 100, LEDGER_DONE, 101);

	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM pg_tables WHERE schemaname = "
				 "'public'"), 0);
	open_rw(fx);
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM ledger_schema"), LATEST_VERSION);
	assert_int_equal(sql_int(fx->where, "SELECT count(DISTINCT version) FROM ledger_schema"),
			 LATEST_VERSION);
	assert_int_equal(sql_int(fx->where, "SELECT max(version) FROM ledger_schema"),
			 LATEST_VERSION);
	assert_string_equal(sql_text(fx->where, "SELECT string_agg(indexname, ',' ORDER BY "
					 "indexname) FROM pg_indexes WHERE tablename = 'files'"),
			    "files_by_claim,files_by_content,files_by_finish,files_by_upload,"
			    "files_folder_file_claimed_at_ms_key,files_pkey");
	assert_string_equal(sql_text(fx->where, "SELECT indexdef FROM pg_indexes WHERE "
					 "indexname = 'files_by_content'"),
			    "CREATE INDEX files_by_content ON public.files USING btree (folder, "
			    "sha256, settings_hash, finished_at_ms)");
	record(fx->l, &e);
	assert_int_equal(count_files(fx), 1);
	close_rw(fx);

	/* Again, for writing and for reading: nothing more is migrated, nothing is lost. */
	open_rw(fx);
	assert_int_equal(open_pg(fx->where, true, &fx->ro, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM ledger_schema"), LATEST_VERSION);
	assert_int_equal(count_files(fx), 1);
}

struct opener {
	const char *where;
	pthread_barrier_t *start;
	struct ledger *l;
	int r;
	char err[512];
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;

	pthread_barrier_wait(o->start);
	o->r = open_pg(o->where, false, &o->l, o->err, sizeof(o->err));
	return NULL;
}

#define OPENERS 4
#define OPENER_ROUNDS 3

/* Hosts of a fleet starting together on a fresh database: every one opens, the schema is made
 * once (the migration lock). A few rounds, each on a new database, for the race to show. */
static void test_writers_opening_together_migrate_once(void **state)
{
	struct fixture *fx = *state;

	for (int round = 0; round < OPENER_ROUNDS; round++) {
		struct opener o[OPENERS];
		pthread_t t[OPENERS];
		pthread_barrier_t start;
		char where[256];
		int opened = 0, failed = -1;

		if (round == 0)
			snprintf(where, sizeof(where), "%s", fx->where);
		else
			assert_int_equal(pg_fixture_new_database(where, sizeof(where)), 0);
		assert_int_equal(pthread_barrier_init(&start, NULL, OPENERS), 0);
		for (int i = 0; i < OPENERS; i++) {
			o[i] = (struct opener){.where = where, .start = &start, .r = -EINPROGRESS};
			assert_int_equal(pthread_create(&t[i], NULL, opener_main, &o[i]), 0);
		}
		for (int i = 0; i < OPENERS; i++) {
			pthread_join(t[i], NULL);
			if (o[i].r == 0)
				opened++;
			else if (failed < 0)
				failed = i;
			ledger_close(o[i].l);
		}
		pthread_barrier_destroy(&start);
		if (failed >= 0)
			fail_msg("round %d: %d of %d opened; one failed with %d: %s", round, opened,
				 OPENERS, o[failed].r, o[failed].err);
		assert_int_equal(sql_int(where, "SELECT count(*) FROM ledger_schema"),
				 LATEST_VERSION);
		assert_int_equal(sql_int(where, "SELECT count(DISTINCT version) FROM ledger_schema"),
				 LATEST_VERSION);
		assert_int_equal(sql_int(where, "SELECT count(*) FROM pg_tables WHERE tablename "
					 "IN ('files', 'ledger_schema')"), 2);
	}
}

/* A database a later version wrote to is refused, by a daemon and by history alike, saying
 * both versions; it is left as it was. */
static void test_newer_schema_is_refused_naming_both_versions(void **state)
{
	struct fixture *fx = *state;
	char want[32];

	open_rw(fx);
	close_rw(fx);
	assert_int_equal(pg_fixture_sql(fx->where, "INSERT INTO ledger_schema (version) VALUES "
					"(99)", NULL, 0), 0);
	for (int ro = 0; ro < 2; ro++) {
		struct ledger *l = NULL;
		int r;

		fx->err[0] = '\0';
		r = open_pg(fx->where, ro, &l, fx->err, sizeof(fx->err));
		ledger_close(l);
		if (r != -EPROTO)
			fail_msg("open (read_only %d): %d, not -EPROTO: '%s'", ro, r, fx->err);
		assert_null(l);
		assert_non_null(strstr(fx->err, "version 99"));
		snprintf(want, sizeof(want), "(%d)", LATEST_VERSION);
		assert_non_null(strstr(fx->err, want));
		assert_non_null(strstr(fx->err, "later version"));
	}
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM ledger_schema"),
			 LATEST_VERSION + 1);
	assert_int_equal(sql_int(fx->where, "SELECT max(version) FROM ledger_schema"), 99);
}

/* history before any daemon used the database: it says so, and makes nothing. */
static void test_history_without_a_ledger_says_so(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(open_pg(fx->where, true, &fx->ro, fx->err, sizeof(fx->err)), -ENOENT);
	assert_null(fx->ro);
	assert_non_null(strstr(fx->err, "the database has no ledger"));
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM pg_tables WHERE schemaname = "
				 "'public'"), 0);
}

/* A handle for reading only refuses to write, with a sentence, and writes nothing; it still
 * reads. */
static void test_read_only_refuses_record_and_prune(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "old.csv", 100, LEDGER_DONE, 101);
	struct ledger_query q = {0};
	uint64_t n = 77;
	int listed = 0;

	open_rw(fx);
	record(fx->l, &e);
	assert_int_equal(open_pg(fx->where, true, &fx->ro, fx->err, sizeof(fx->err)), 0);

	e = entry("news", "new.csv", 200, LEDGER_DONE, 201);
	fx->ro->error[0] = '\0';
	assert_int_equal(ledger_record(fx->ro, &e), -EROFS);
	assert_non_null(strstr(fx->ro->error, "cannot record a file"));
	assert_non_null(strstr(fx->ro->error, "reading only"));
	fx->ro->error[0] = '\0';
	assert_int_equal(ledger_prune(fx->ro, INT64_MAX, &n), -EROFS);
	assert_non_null(strstr(fx->ro->error, "cannot prune"));
	assert_non_null(strstr(fx->ro->error, "reading only"));
	assert_int_equal(n, 0);

	assert_int_equal(count_files(fx), 1);
	assert_int_equal(ledger_list(fx->ro, &q, count_cb, &listed), 0);
	assert_int_equal(listed, 1);
}

/* The server restarts under a daemon: the call that finds the connection gone fails with the
 * reason, calls fail while it is down, and once it is back the same handle works again (a new
 * session, its statements prepared again), with everything recorded before. */
static void test_server_restart_under_a_writer_reconnects(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "before.csv", 100, LEDGER_DONE, 101), got;
	struct ledger_query q = {0};
	int listed = 0;

	open_rw(fx);
	record(fx->l, &e);
	halt();

	e = entry("news", "during.csv", 200, LEDGER_DONE, 201);
	fx->l->error[0] = '\0';
	assert_int_equal(ledger_record(fx->l, &e), -ENOTCONN);
	assert_non_null(strstr(fx->l->error, "ledger (PostgreSQL): cannot record a file: "));
	/* Down: the next call tries to connect, and says it cannot. */
	fx->l->error[0] = '\0';
	assert_int_equal(ledger_record(fx->l, &e), -ENOTCONN);
	assert_non_null(strstr(fx->l->error, "ledger (PostgreSQL): cannot connect: "));
	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, SET_1, 0, &got), -ENOTCONN);

	resume();
	record(fx->l, &e);
	assert_int_equal(count_files(fx), 2);
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM files WHERE file = "
				 "'before.csv'"), 1);
	/* Every statement is there again, not only the one that reconnected. */
	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, SET_1, 0, &got), 0);
	assert_string_equal(got.file, "during.csv");
	ledger_entry_clear(&got);
	assert_int_equal(ledger_find_unfinished(fx->l, "news", "before.csv", SHA_A, &got),
			 -ENOENT);
	assert_int_equal(ledger_knows_import(fx->l, "nope", 0), 0);
	assert_int_equal(ledger_list(fx->l, &q, count_cb, &listed), 0);
	assert_int_equal(listed, 2);
	/* One session of the daemon's, not one per attempt. */
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM pg_stat_activity WHERE "
				 "application_name = 'resend-dropd'"), 1);
}

/* A group of records that the server's restart cuts: the group fails, rolling it back works,
 * none of it was kept, and the same group goes through once the server is back. */
static void test_group_cut_by_a_restart_is_done_again(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry a = entry("news", "a.csv", 100, LEDGER_DONE, 101);
	struct ledger_entry b = entry("news", "b.csv", 200, LEDGER_CLAIMED, 0);
	struct ledger *l;
	int r;

	open_rw(fx);
	l = fx->l;
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &a);
	halt();
	r = ledger_record(l, &b);
	if (r == 0)
		r = l->ops->commit(l);
	assert_int_equal(r, -ENOTCONN);
	assert_true(l->error[0] != '\0');
	assert_int_equal(l->ops->rollback(l), 0);

	resume();
	assert_int_equal(count_files(fx), 0);
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &a);
	record(l, &b);
	assert_int_equal(l->ops->commit(l), 0);
	assert_int_equal(count_files(fx), 2);

	/* Cut between the records and the commit. */
	a = entry("news", "c.csv", 300, LEDGER_DONE, 301);
	b = entry("news", "d.csv", 400, LEDGER_CLAIMED, 0);
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &a);
	record(l, &b);
	halt();
	assert_int_equal(l->ops->commit(l), -ENOTCONN);
	assert_non_null(strstr(l->error, "cannot commit"));
	assert_int_equal(l->ops->rollback(l), 0);
	resume();
	assert_int_equal(count_files(fx), 2);
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &a);
	record(l, &b);
	assert_int_equal(l->ops->commit(l), 0);
	assert_int_equal(count_files(fx), 4);
}

/* A daemon that starts before its server opens all the same (its intake waits), says why it is
 * not connected, and works once the server is up: schema and all. */
static void test_writer_opened_while_server_down_connects_later(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "a.csv", 100, LEDGER_DONE, 101), got;
	struct ledger_query q = {0};
	int listed = 0;
	int64_t t0;

	halt();
	t0 = now_ms();
	open_rw(fx);
	assert_true(now_ms() - t0 < AT_ONCE_MS);
	assert_non_null(strstr(fx->l->error, "ledger (PostgreSQL): cannot connect: "));
	assert_int_equal(ledger_record(fx->l, &e), -ENOTCONN);
	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, SET_1, 0, &got), -ENOTCONN);
	assert_int_equal(ledger_list(fx->l, &q, count_cb, &listed), -ENOTCONN);
	assert_int_equal(fx->l->ops->begin(fx->l), -ENOTCONN);
	assert_int_equal(fx->l->ops->rollback(fx->l), 0);

	resume();
	record(fx->l, &e);
	assert_int_equal(ledger_find_imported(fx->l, "news", SHA_A, SET_1, 0, &got), 0);
	assert_string_equal(got.file, "a.csv");
	ledger_entry_clear(&got);
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM ledger_schema"), LATEST_VERSION);
	assert_int_equal(count_files(fx), 1);
}

/* history while the server is down: an error at once, with the reason. */
static void test_read_only_open_while_server_down_fails(void **state)
{
	struct fixture *fx = *state;
	int64_t t0;

	open_rw(fx);
	close_rw(fx);
	halt();
	t0 = now_ms();
	fx->err[0] = '\0';
	assert_true(open_pg(fx->where, true, &fx->ro, fx->err, sizeof(fx->err)) < 0);
	assert_true(now_ms() - t0 < AT_ONCE_MS);
	assert_null(fx->ro);
	assert_non_null(strstr(fx->err, "ledger (PostgreSQL): cannot connect: "));
}

/* A server that answers but refuses is no reason to wait: the open fails now, naming what is
 * refused, for a daemon and for history. */
static void assert_refused_at_open(const char *where, const char *named)
{
	for (int ro = 0; ro < 2; ro++) {
		struct ledger *l = NULL;
		char err[1024] = "";
		int64_t t0 = now_ms();
		int r = open_pg(where, ro, &l, err, sizeof(err));

		ledger_close(l);
		if (r >= 0)
			fail_msg("open %s (read_only %d) succeeded: '%s'", where, ro, err);
		assert_true(now_ms() - t0 < AT_ONCE_MS);
		assert_null(l);
		if (!strstr(err, named))
			fail_msg("open %s (read_only %d): '%s' does not name '%s'", where, ro, err,
				 named);
	}
}

static void test_missing_database_is_refused_at_open(void **state)
{
	char where[256];

	(void)state;
	snprintf(where, sizeof(where), "host=%s user=postgres dbname=rdd_no_such_db",
		 pg_fixture_host());
	assert_refused_at_open(where, "\"rdd_no_such_db\"");
	/* Nothing was made on the way. */
	assert_int_equal(sql_int(admin(NULL), "SELECT count(*) FROM pg_database WHERE datname = "
				 "'rdd_no_such_db'"), 0);
}

static void test_missing_role_is_refused_at_open(void **state)
{
	char where[256];

	(void)state;
	snprintf(where, sizeof(where), "host=%s user=rdd_no_such_role dbname=postgres",
		 pg_fixture_host());
	assert_refused_at_open(where, "\"rdd_no_such_role\"");
}

/* A password file (mode 0600) of libpq's form holding LINE. */
static void write_password_file(const char *path, const char *line)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs(line, f) >= 0);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, 0600), 0);
}

/* A role that must give its password: refused without one, or with a wrong one; connected with
 * the one in the password file the configuration names. */
static void test_password_comes_from_the_password_file(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "a.csv", 100, LEDGER_DONE, 101);
	char conninfo[256], pwfile[128], badfile[128], err[1024];
	char *where = NULL, *bad = NULL;
	struct ledger *l = NULL;
	int r;

	assert_int_equal(pg_fixture_sql(admin(NULL), "CREATE ROLE rdd_pw LOGIN PASSWORD 'x'",
					NULL, 0), 0);
	assert_int_equal(pg_fixture_sql(admin(NULL), "CREATE DATABASE rdd_pw_ledger OWNER rdd_pw",
					NULL, 0), 0);
	snprintf(conninfo, sizeof(conninfo), "host=%s user=rdd_pw dbname=rdd_pw_ledger",
		 pg_fixture_host());

	/* No password (the environment's are out of the way: see main). */
	r = open_pg(conninfo, false, &l, err, sizeof(err));
	ledger_close(l);
	if (r >= 0)
		fail_msg("opened as rdd_pw without a password");
	assert_null(l);
	assert_non_null(strstr(err, "password"));

	snprintf(badfile, sizeof(badfile), "%s/bad.pgpass", fx->dir);
	write_password_file(badfile, "*:*:*:rdd_pw:wrong\n");
	assert_int_equal(ledger_pg_conninfo(conninfo, badfile, &bad), 0);
	r = open_pg(bad, false, &l, err, sizeof(err));
	free(bad);
	ledger_close(l);
	if (r >= 0)
		fail_msg("opened as rdd_pw with a wrong password");
	assert_non_null(strstr(err, "password authentication failed for user \"rdd_pw\""));

	snprintf(pwfile, sizeof(pwfile), "%s/ledger.pgpass", fx->dir);
	write_password_file(pwfile, "*:*:*:rdd_pw:x\n");
	assert_int_equal(ledger_pg_conninfo(conninfo, pwfile, &where), 0);
	r = open_pg(where, false, &fx->l, fx->err, sizeof(fx->err));
	if (r == 0)
		r = open_pg(where, true, &fx->ro, fx->err, sizeof(fx->err));
	free(where);
	if (r < 0)
		fail_msg("open with the password file: %d: %s", r, fx->err);
	record(fx->l, &e);
	/* Made by the role, in its database. */
	assert_string_equal(sql_text(admin("rdd_pw_ledger"), "SELECT tableowner FROM pg_tables "
				     "WHERE tablename = 'files'"),
			    "rdd_pw");
	assert_int_equal(sql_int(admin("rdd_pw_ledger"), "SELECT count(*) FROM files"), 1);
}

/* L->error (or an open's) is one sentence for one log line: libpq's reasons run over several
 * lines ("server closed the connection unexpectedly\n\tThis probably means..."). */
static void assert_one_line(const char *what, const char *s)
{
	size_t n = strlen(s);

	if (n == 0)
		fail_msg("%s: no error said", what);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20)
			fail_msg("%s: a control character (0x%02x) at offset %zu of '%s'", what,
				 (unsigned char)s[i], i, s);
	if (s[n - 1] == ' ')
		fail_msg("%s: ends in a space: '%s'", what, s);
}

static void test_errors_are_one_line(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry e = entry("news", "a.csv", 100, LEDGER_DONE, 101);
	char where[256], err[1024] = "";
	struct ledger *l = NULL;
	int r;

	open_rw(fx);
	record(fx->l, &e);
	halt();
	assert_int_equal(ledger_record(fx->l, &e), -ENOTCONN);
	assert_one_line("the connection broken under a record", fx->l->error);
	assert_int_equal(ledger_record(fx->l, &e), -ENOTCONN);
	assert_one_line("a record while the server is down", fx->l->error);
	r = open_pg(fx->where, true, &l, err, sizeof(err));
	ledger_close(l);
	assert_true(r < 0);
	assert_one_line("history while the server is down", err);
	resume();
	snprintf(where, sizeof(where), "host=%s user=postgres dbname=rdd_no_such_db",
		 pg_fixture_host());
	r = open_pg(where, false, &l, err, sizeof(err));
	ledger_close(l);
	assert_true(r < 0);
	assert_one_line("a missing database", err);
}

/* A write of a group that the server refuses (here a constraint added behind the ledger's
 * back): PostgreSQL then keeps none of the group, so commit must not say it did. */
static void test_commit_after_a_refused_write_fails(void **state)
{
	struct fixture *fx = *state;
	struct ledger_entry ok = entry("news", "ok.csv", 100, LEDGER_DONE, 101);
	struct ledger_entry refused = entry("news", "refused.csv", 200, LEDGER_DONE, 201);
	struct ledger *l;
	int r;

	open_rw(fx);
	l = fx->l;
	assert_int_equal(pg_fixture_sql(fx->where, "ALTER TABLE files ADD CONSTRAINT no_refused "
					"CHECK (file != 'refused.csv')", NULL, 0), 0);
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &ok);
	assert_true(ledger_record(l, &refused) < 0);
	assert_non_null(strstr(l->error, "no_refused"));
	r = l->ops->commit(l);
	if (r == 0 && count_files(fx) == 0)
		fail_msg("commit returned 0 and kept nothing of the group");
	assert_true(r < 0);
	assert_int_equal(l->ops->rollback(l), 0);
	assert_int_equal(count_files(fx), 0);
	/* The handle goes on. */
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &ok);
	assert_int_equal(l->ops->commit(l), 0);
	assert_int_equal(count_files(fx), 1);
}

/* A file whose name is not UTF-8 (an old share's Latin-1) is recorded like any other, and
 * found again by that name: PostgreSQL's text takes UTF-8 only, and a record that fails is
 * retried with its whole group for ever, the daemon's intake waiting meanwhile. The name is
 * kept as it is, or in the escaped form the logs give it. */
static void test_file_name_not_utf8_is_recorded_and_found(void **state)
{
	struct fixture *fx = *state;
	static const char name[] = "caf\xe9.csv", escaped[] = "caf\\xe9.csv";
	struct ledger_entry e = entry("news", name, 100, LEDGER_CLAIMED, 0), other, got;
	struct ledger *l;
	int r;

	open_rw(fx);
	l = fx->l;
	other = entry("news", "plain.csv", 200, LEDGER_CLAIMED, 0);
	assert_int_equal(l->ops->begin(l), 0);
	record(l, &other);
	r = ledger_record(l, &e);
	if (r == 0)
		r = l->ops->commit(l);
	else
		(void)l->ops->rollback(l);
	if (r < 0)
		fail_msg("a group with '%s' failed: %d: %s", escaped, r, l->error);
	assert_int_equal(count_files(fx), 2);

	assert_int_equal(ledger_find_unfinished(l, "news", name, SHA_A, &got), 0);
	assert_int_equal(got.claimed_at_ms, 100);
	if (strcmp(got.file, name) != 0 && strcmp(got.file, escaped) != 0)
		fail_msg("read back as '%s'", got.file);
	ledger_entry_clear(&got);
	/* The same key: replaced, not added. */
	e.status = LEDGER_DONE;
	e.finished_at_ms = 101;
	record(l, &e);
	assert_int_equal(count_files(fx), 2);
	assert_int_equal(ledger_find_unfinished(l, "news", name, SHA_A, &got), -ENOENT);
}

/* ---- ledger_pg_conninfo ------------------------------------------------------------------- */

/* S is in ledger_pg_conninfo's form (key='value' pairs, one space between them, only ' and \
 * escaped), and holds exactly WANT (keyword, value, ..., NULL) as libpq reads it. */
static void assert_conninfo(const char *s, const char *const *want)
{
	PQconninfoOption *opts;
	char *msg = NULL;
	int pairs = 0, wanted = 0;

	for (const char *p = s; *p;) {
		const char *key = p;

		while ((*p >= 'a' && *p <= 'z') || *p == '_')
			p++;
		if (p == key || p[0] != '=' || p[1] != '\'')
			fail_msg("'%s': no key='value' at offset %zu", s, (size_t)(key - s));
		for (p += 2; *p != '\''; p++) {
			if (!*p)
				fail_msg("'%s': a value is not closed", s);
			if (*p == '\\' && p[1] != '\'' && p[1] != '\\')
				fail_msg("'%s': something else than ' or \\ escaped", s);
			if (*p == '\\')
				p++;
		}
		p++;
		pairs++;
		if (*p && *++p == '\0')
			fail_msg("'%s': ends in a space", s);
	}
	opts = PQconninfoParse(s, &msg);
	if (!opts)
		fail_msg("'%s' is not read back: %s", s, msg ? msg : "out of memory");
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		const char *v = NULL;

		for (int i = 0; want[i]; i += 2)
			if (strcmp(want[i], o->keyword) == 0)
				v = want[i + 1];
		if (!v && o->val)
			fail_msg("'%s': %s is '%s', not wanted", s, o->keyword, o->val);
		if (v && (!o->val || strcmp(v, o->val) != 0))
			fail_msg("'%s': %s is '%s', not '%s'", s, o->keyword,
				 o->val ? o->val : "(unset)", v);
	}
	PQconninfoFree(opts);
	for (int i = 0; want[i]; i += 2)
		wanted++;
	assert_int_equal(pairs, wanted);
}

/* A URI as the YAML may give it comes out as key='value' pairs, the password file added. */
static void test_conninfo_uri_becomes_key_value_with_passfile(void **state)
{
	static const char *const want[] = {"user",     "rdd_pw", "dbname", "db", "host", "/sock",
					   "passfile", "/etc/resend-dropd/ledger.pgpass", NULL};
	char *s = NULL;

	(void)state;
	assert_int_equal(ledger_pg_conninfo("postgresql://rdd_pw@/db?host=/sock",
					    "/etc/resend-dropd/ledger.pgpass", &s),
			 0);
	assert_non_null(s);
	assert_null(strstr(s, "postgresql:"));
	assert_non_null(strstr(s, "passfile='/etc/resend-dropd/ledger.pgpass'"));
	assert_conninfo(s, want);
	free(s);
}

/* Quotes and backslashes, in values and in the password file's name, survive: libpq reads back
 * what it read from the original. */
static void test_conninfo_escapes_quotes_and_backslashes(void **state)
{
	static const char *const want_kv[] = {
		"host", "/so'ck", "dbname", "it's", "application_name", "a\\b c\\",
		"options", "-c search_path='x'", "passfile", "/tmp/o'brien\\x/pg pass", NULL};
	static const char *const want_uri[] = {"user", "us'er", "dbname", "d\\b", "host", "/s 'k",
					       "passfile", "/tmp/o'brien\\x/pg pass", NULL};
	char *s = NULL;

	(void)state;
	assert_int_equal(ledger_pg_conninfo("host='/so\\'ck' dbname='it\\'s' "
					    "application_name='a\\\\b c\\\\' "
					    "options='-c search_path=\\'x\\''",
					    "/tmp/o'brien\\x/pg pass", &s),
			 0);
	assert_conninfo(s, want_kv);
	free(s);
	s = NULL;
	assert_int_equal(ledger_pg_conninfo("postgresql://us%27er@/d%5Cb?host=/s%20%27k",
					    "/tmp/o'brien\\x/pg pass", &s),
			 0);
	assert_conninfo(s, want_uri);
	free(s);
}

/* What libpq cannot read is refused as such, with nothing returned. */
static void test_conninfo_unparsable_is_einval(void **state)
{
	static const char *const bad[] = {
		"host=/sock dbname",          /* no '=' */
		"host='/sock",                /* quote not closed */
		"host=/sock no_such_option=1", /* not libpq's */
		"postgresql://[::1/db",       /* a URI's address not closed */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *s = NULL;
		int r = ledger_pg_conninfo(bad[i], "/etc/pgpass", &s);

		if (r != -EINVAL)
			fail_msg("'%s': %d, not -EINVAL ('%s')", bad[i], r, s ? s : "");
		assert_null(s);
	}
}

/* Without a password file none is added; one in the string itself stays, unless the
 * configuration names another. */
static void test_conninfo_without_password_file_adds_none(void **state)
{
	static const char *const want_none[] = {"host", "/sock", "dbname", "db", NULL};
	static const char *const want_kept[] = {"host", "/sock", "dbname", "db",
						"passfile", "/given", NULL};
	static const char *const want_replaced[] = {"host", "/sock", "dbname", "db",
						    "passfile", "/configured", NULL};
	char *s = NULL;

	(void)state;
	assert_int_equal(ledger_pg_conninfo("host=/sock dbname=db", NULL, &s), 0);
	assert_null(strstr(s, "passfile"));
	assert_conninfo(s, want_none);
	free(s);
	s = NULL;
	assert_int_equal(ledger_pg_conninfo("host=/sock dbname=db passfile=/given", NULL, &s), 0);
	assert_conninfo(s, want_kept);
	free(s);
	s = NULL;
	assert_int_equal(ledger_pg_conninfo("host=/sock dbname=db passfile=/given", "/configured",
					    &s),
			 0);
	assert_conninfo(s, want_replaced);
	free(s);
}

/* ---- the fleet's operations ------------------------------------------------------------- */

/* A host of the test: its own connection, its host_id, its run's instance. */
struct host {
	struct ledger *l;
	const char *id;
	uint64_t instance;
};

static void host_open(struct fixture *fx, struct host *h, const char *id, uint64_t instance)
{
	char err[512];

	if (open_pg(fx->where, false, &h->l, err, sizeof(err)) < 0)
		fail_msg("open for %s: %s", id, err);
	snprintf(h->l->host_id, sizeof(h->l->host_id), "%s", id);
	h->id = id;
	h->instance = instance;
}

/* A heartbeat of H (JOINING: its first) with lease LEASE_MS; the fleet's answer in *RET. */
static int beat(struct host *h, bool joining, int64_t lease_ms, struct ledger_fleet *ret)
{
	struct ledger_beat b = {.host_id = h->id, .instance = h->instance, .lease_ms = lease_ms,
				.in_flight = 3, .state = "running", .joining = joining};

	return h->l->ops->fleet_beat(h->l, &b, ret);
}

static const struct ledger_host *find_host(const struct ledger_fleet *f, const char *id)
{
	for (size_t i = 0; i < f->n_hosts; i++)
		if (strcmp(f->hosts[i].id, id) == 0)
			return &f->hosts[i];
	return NULL;
}

/* Hosts join and see each other alive; one that stops beating is seen dead after its lease
 * and is taken over by exactly one live host, even when two ask at once; its claims go with
 * it, its row once the taker says it is done; its own run, back, learns it was replaced. */
static void test_fleet_leases_and_a_single_takeover(void **state)
{
	struct fixture *fx = *state;
	struct host a, b, c;
	struct ledger_fleet fa = {0}, fb = {0}, fc = {0};

	host_open(fx, &a, "a", 2);
	host_open(fx, &b, "b", 4);
	host_open(fx, &c, "c", 6);
	assert_int_equal(beat(&a, true, 60000, &fa), 0);
	ledger_fleet_clear(&fa);
	assert_int_equal(beat(&b, true, 60000, &fb), 0);
	ledger_fleet_clear(&fb);
	/* c's lease is short: it will "die". */
	assert_int_equal(beat(&c, true, 300, &fc), 0);
	ledger_fleet_clear(&fc);
	assert_int_equal(c.l->ops->fleet_claim(c.l, "c", "box", "held.csv"), 1);
	assert_int_equal(beat(&a, false, 60000, &fa), 0);
	assert_int_equal(fa.n_hosts, 3);
	assert_true(find_host(&fa, "c")->alive);
	assert_int_equal(find_host(&fa, "b")->in_flight, 3);
	assert_string_equal(fa.take_over, "");
	ledger_fleet_clear(&fa);

	usleep(600 * 1000);
	/* a and b ask together: one of them gets c. */
	assert_int_equal(beat(&a, false, 60000, &fa), 0);
	assert_int_equal(beat(&b, false, 60000, &fb), 0);
	assert_false(find_host(&fa, "c")->alive);
	assert_true((strcmp(fa.take_over, "c") == 0) != (strcmp(fb.take_over, "c") == 0));
	struct host *taker = fa.take_over[0] ? &a : &b, *other = fa.take_over[0] ? &b : &a;
	ledger_fleet_clear(&fa);
	ledger_fleet_clear(&fb);
	/* Asked again before it is done: still the taker's, never the other's. */
	assert_int_equal(beat(other, false, 60000, &fb), 0);
	assert_string_equal(fb.take_over, "");
	ledger_fleet_clear(&fb);
	assert_int_equal(beat(taker, false, 60000, &fa), 0);
	assert_string_equal(fa.take_over, "c");
	ledger_fleet_clear(&fa);
	/* c's run comes back before the takeover is done: it may not join (the files are moving),
	 * and its old run learns it was replaced. */
	assert_int_equal(beat(&c, false, 300, &fc), 0);
	assert_true(fc.replaced);
	assert_string_equal(fc.replaced_by, taker->id);
	ledger_fleet_clear(&fc);
	c.instance = 8;
	assert_int_equal(beat(&c, true, 300, &fc), -EBUSY);
	assert_non_null(strstr(c.l->error, "is being taken over"));
	/* Done: c's claims and row go; c joins afresh. */
	assert_int_equal(taker->l->ops->fleet_taken_over(taker->l, taker->id, "c"), 0);
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM claims WHERE host_id = 'c'"), 0);
	assert_int_equal(beat(&c, true, 60000, &fc), 0);
	assert_false(fc.replaced);
	ledger_fleet_clear(&fc);
	/* Another daemon with c's host_id (another instance) replaces it: the first run hears it. */
	c.instance = 10;
	assert_int_equal(beat(&c, true, 60000, &fc), 0);
	ledger_fleet_clear(&fc);
	c.instance = 8;
	assert_int_equal(beat(&c, false, 60000, &fc), 0);
	assert_true(fc.replaced);
	assert_string_equal(fc.replaced_by, "another daemon with this host_id");
	ledger_fleet_clear(&fc);
	/* Leaving: with files left the row stays, stopped; empty, it goes. */
	assert_int_equal(a.l->ops->fleet_leave(a.l, "a", 2, false), 0);
	assert_string_equal(sql_text(fx->where, "SELECT state FROM hosts WHERE host_id = 'a'"),
			    "stopped");
	assert_int_equal(b.l->ops->fleet_leave(b.l, "b", 4, true), 0);
	assert_int_equal(sql_int(fx->where, "SELECT count(*) FROM hosts WHERE host_id = 'b'"), 0);
	ledger_close(a.l);
	ledger_close(b.l);
	ledger_close(c.l);
}

/* A file is claimed by one host: the other is told no until the claim is released; a claim is
 * the host's own again (idempotent, as a retried batch needs). */
static void test_fleet_claims_one_host_each(void **state)
{
	struct fixture *fx = *state;
	struct host a, b;
	struct ledger_fleet f = {0};

	host_open(fx, &a, "a", 2);
	host_open(fx, &b, "b", 4);
	assert_int_equal(beat(&a, true, 60000, &f), 0);
	ledger_fleet_clear(&f);
	assert_int_equal(a.l->ops->fleet_claim(a.l, "a", "box", "x.csv"), 1);
	assert_int_equal(b.l->ops->fleet_claim(b.l, "b", "box", "x.csv"), 0);
	assert_int_equal(a.l->ops->fleet_claim(a.l, "a", "box", "x.csv"), 1);
	assert_int_equal(b.l->ops->fleet_claim(b.l, "b", "other", "x.csv"), 1);
	/* Another host's release is no release. */
	assert_int_equal(b.l->ops->fleet_release(b.l, "b", "box", "x.csv"), 0);
	assert_int_equal(b.l->ops->fleet_claim(b.l, "b", "box", "x.csv"), 0);
	assert_int_equal(a.l->ops->fleet_release(a.l, "a", "box", "x.csv"), 0);
	assert_int_equal(b.l->ops->fleet_claim(b.l, "b", "box", "x.csv"), 1);
	ledger_close(a.l);
	ledger_close(b.l);
}

/* One content in flight in the fleet: the first file reserves it, another file (of any host)
 * is told who has it, until the first file's end is recorded; a host whose lease ended holds
 * nothing. */
static void test_fleet_one_content_in_flight(void **state)
{
	struct fixture *fx = *state;
	struct host a, b;
	struct ledger_fleet f = {0};
	struct ledger_entry who = {0}, e;

	host_open(fx, &a, "a", 2);
	host_open(fx, &b, "b", 4);
	assert_int_equal(beat(&a, true, 60000, &f), 0);
	ledger_fleet_clear(&f);
	assert_int_equal(beat(&b, true, 60000, &f), 0);
	ledger_fleet_clear(&f);
	assert_int_equal(a.l->ops->fleet_reserve(a.l, "box", "one.csv", SHA_A, SET_1, &who), 1);
	assert_int_equal(a.l->ops->fleet_reserve(a.l, "box", "one.csv", SHA_A, SET_1, &who), 1);
	assert_int_equal(b.l->ops->fleet_reserve(b.l, "box", "two.csv", SHA_A, SET_1, &who), 0);
	assert_string_equal(who.file, "one.csv");
	assert_string_equal(who.host, "a");
	ledger_entry_clear(&who);
	/* The same host's other file waits too; other settings are another content. */
	assert_int_equal(a.l->ops->fleet_reserve(a.l, "box", "three.csv", SHA_A, SET_1, &who), 0);
	ledger_entry_clear(&who);
	assert_int_equal(b.l->ops->fleet_reserve(b.l, "box", "two.csv", SHA_A,
						 "2222222222222222222222222222222222222222222222"
						 "222222222222222222", &who), 1);
	/* Its claim recorded changes nothing; its end lets the content go. */
	e = entry("box", "one.csv", 100, LEDGER_CLAIMED, 0);
	record(a.l, &e);
	assert_int_equal(b.l->ops->fleet_reserve(b.l, "box", "two.csv", SHA_A, SET_1, &who), 0);
	ledger_entry_clear(&who);
	e = entry("box", "one.csv", 100, LEDGER_DONE, 200);
	record(a.l, &e);
	assert_string_equal(sql_text(fx->where, "SELECT host_id FROM files WHERE file = 'one.csv'"),
			    "a");
	assert_int_equal(b.l->ops->fleet_reserve(b.l, "box", "two.csv", SHA_A, SET_1, &who), 1);
	/* b's lease ends: a may take the content. */
	assert_int_equal(pg_fixture_sql(fx->where, "UPDATE hosts SET heartbeat_at = now() - "
						   "interval '1 hour' WHERE host_id = 'b'", NULL, 0),
			 0);
	assert_int_equal(a.l->ops->fleet_reserve(a.l, "box", "three.csv", SHA_A, SET_1, &who), 1);
	ledger_close(a.l);
	ledger_close(b.l);
}

/* The outbox in a fleet: the host that takes a queue's oldest event holds it under a lease; the
 * other host waits for the lease (or its settling) and never sends it at the same time; once
 * the lease has run out (its host died), the other takes it. */
static void test_outbox_lease_one_host_at_a_time(void **state)
{
	struct fixture *fx = *state;
	struct ledger_event ev = {.msg_id = (char *)"msg_1", .channel = (char *)"webhook:a",
				  .type = (char *)"file.done", .payload = (char *)"{}",
				  .created_at_ms = 100};
	struct ledger_outbox_row row = {0}, other = {0};
	struct ledger_entry e;
	uint64_t pending;
	int64_t next_at = 0, oldest = 0;
	struct host a, b;

	host_open(fx, &a, "a", 2);
	host_open(fx, &b, "b", 4);
	e = entry("box", "one.csv", 100, LEDGER_DONE, 200);
	e.events = &ev;
	e.n_events = 1;
	record(a.l, &e);
	assert_int_equal(ledger_outbox_next(a.l, "webhook:a", 1000, &row, &next_at, &pending,
					    &oldest), 0);
	assert_string_equal(row.ev.msg_id, "msg_1");
	assert_int_equal(oldest, 100);
	/* a holds it: b is told to wait, until about when the lease ends. */
	assert_int_equal(ledger_outbox_next(b.l, "webhook:a", 1000, &other, &next_at, &pending,
					    &oldest), -EAGAIN);
	assert_true(next_at > 1000);
	assert_int_equal(pending, 1);
	/* a asks again (say after a restart): its own lease does not stop it. */
	ledger_outbox_row_clear(&row);
	assert_int_equal(ledger_outbox_next(a.l, "webhook:a", 1000, &row, &next_at, &pending,
					    &oldest), 0);
	/* a died holding it: once the lease has run out, b takes it. */
	assert_int_equal(pg_fixture_sql(fx->where, "UPDATE outbox SET lease_until = now() - "
						   "interval '1 second'", NULL, 0),
			 0);
	assert_int_equal(ledger_outbox_next(b.l, "webhook:a", 1000, &other, &next_at, &pending,
					    &oldest), 0);
	assert_string_equal(other.ev.msg_id, "msg_1");
	assert_int_equal(ledger_outbox_settle(b.l, other.id, LEDGER_OUTBOX_DELIVERED, 1, 0, NULL,
					      2000), 0);
	ledger_outbox_row_clear(&row);
	assert_int_equal(ledger_outbox_next(a.l, "webhook:a", 3000, &row, &next_at, &pending,
					    &oldest), -ENOENT);
	assert_int_equal(pending, 0);
	ledger_outbox_row_clear(&row);
	ledger_outbox_row_clear(&other);
	ledger_close(a.l);
	ledger_close(b.l);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_fresh_database_is_migrated_at_open_once),
		T(test_writers_opening_together_migrate_once),
		T(test_newer_schema_is_refused_naming_both_versions),
		T(test_history_without_a_ledger_says_so),
		T(test_read_only_refuses_record_and_prune),
		T(test_server_restart_under_a_writer_reconnects),
		T(test_group_cut_by_a_restart_is_done_again),
		T(test_writer_opened_while_server_down_connects_later),
		T(test_read_only_open_while_server_down_fails),
		T(test_missing_database_is_refused_at_open),
		T(test_missing_role_is_refused_at_open),
		T(test_password_comes_from_the_password_file),
		T(test_errors_are_one_line),
		T(test_commit_after_a_refused_write_fails),
		T(test_file_name_not_utf8_is_recorded_and_found),
		T(test_fleet_leases_and_a_single_takeover),
		T(test_fleet_claims_one_host_each),
		T(test_fleet_one_content_in_flight),
		T(test_outbox_lease_one_host_at_a_time),
		cmocka_unit_test(test_conninfo_uri_becomes_key_value_with_passfile),
		cmocka_unit_test(test_conninfo_escapes_quotes_and_backslashes),
		cmocka_unit_test(test_conninfo_unparsable_is_einval),
		cmocka_unit_test(test_conninfo_without_password_file_adds_none),
	};

	/* The tests' connections have no password but those they are given: none from the
	 * environment of whoever runs them, nor from ~/.pgpass. */
	unsetenv("PGPASSWORD");
	setenv("PGPASSFILE", "/nonexistent/rdd-test-ledger-pg/pgpass", 1);
	return cmocka_run_group_tests_name("ledger_pg", tests, group_setup, group_teardown);
}
