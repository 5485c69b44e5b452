/* The ledger in SQLite: one file, WAL mode (readers such as `history` never block the daemon's
 * writes), the schema versioned with PRAGMA user_version and migrated forward at open. */
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

/* Each step takes the schema from the version before it to its own (index + 1). */
static const char *const migrations[] = {
	/* 1: the files and how they ended. */
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
	"CREATE INDEX files_by_finish ON files (finished_at_ms);",
	/* 2: the import settings a file went with (duplicates are the same content under the
	 * same settings), and what a skipped file duplicated. Files of version 1 have no
	 * settings hash: they are never taken for duplicates. */
	"ALTER TABLE files ADD COLUMN settings_hash TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE files ADD COLUMN duplicate_of TEXT;"
	"DROP INDEX files_by_content;"
	"CREATE INDEX files_by_content ON files (folder, sha256, settings_hash, finished_at_ms);"
	"CREATE INDEX files_by_claim ON files (claimed_at_ms);",
	/* 3: imports by when they were made, for reconciliation after a crash (is an import
	 * Resend lists one of ours?). */
	"CREATE INDEX files_by_upload ON files (uploaded_at_ms);",
	/* 4: the notification outbox (ledger.h): events delivered in id order per channel;
	 * delivered_at_ms set once delivered or given up (state says which). */
	"CREATE TABLE outbox ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" msg_id TEXT NOT NULL UNIQUE, channel TEXT NOT NULL, type TEXT NOT NULL,"
	" payload TEXT NOT NULL, created_at_ms INTEGER NOT NULL,"
	" attempts INTEGER NOT NULL DEFAULT 0, next_at_ms INTEGER NOT NULL DEFAULT 0,"
	" last_error TEXT, state TEXT NOT NULL DEFAULT 'pending', delivered_at_ms INTEGER);"
	"CREATE INDEX outbox_pending ON outbox (channel, id) WHERE state = 'pending';"
	"CREATE INDEX outbox_by_creation ON outbox (created_at_ms);",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define COLUMNS                                                                                 \
	"folder, file, claimed_at_ms, bytes, sha256, settings_hash, attempts, uploaded_at_ms, "   \
	"finished_at_ms, import_ids, status, total, created, updated, skipped, failed, error, "   \
	"duplicate_of"

enum stmt {
	STMT_RECORD,
	STMT_FIND_IMPORTED,
	STMT_FIND_UNFINISHED,
	STMT_FIND_UPLOADED,
	STMT_KNOWS_IMPORT,
	STMT_PRUNE,
	STMT_EVENT_ADD,
	STMT_OUTBOX_HEAD,
	STMT_OUTBOX_PENDING,
	STMT_OUTBOX_SETTLE,
	STMT_OUTBOX_PRUNE,
	STMT_BEGIN,
	STMT_COMMIT,
	STMT_ROLLBACK,
	STMT_N
};

static const char *const stmt_sql[STMT_N] = {
	[STMT_RECORD] = "INSERT INTO files (" COLUMNS ") VALUES "
			"(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) "
			"ON CONFLICT (folder, file, claimed_at_ms) DO UPDATE SET "
			"bytes = ?4, sha256 = ?5, settings_hash = ?6, attempts = ?7, "
			"uploaded_at_ms = ?8, finished_at_ms = ?9, import_ids = ?10, status = ?11, "
			"total = ?12, created = ?13, updated = ?14, skipped = ?15, failed = ?16, "
			"error = ?17, duplicate_of = ?18",
	[STMT_FIND_IMPORTED] = "SELECT " COLUMNS " FROM files WHERE folder = ?1 AND sha256 = ?2 "
			       "AND settings_hash = ?3 AND settings_hash != '' "
			       "AND status = 'done' AND finished_at_ms >= ?4 "
			       "ORDER BY finished_at_ms DESC LIMIT 1",
	[STMT_FIND_UNFINISHED] = "SELECT " COLUMNS " FROM files WHERE folder = ?1 AND file = ?2 "
				 "AND sha256 = ?3 AND finished_at_ms IS NULL "
				 "ORDER BY claimed_at_ms DESC LIMIT 1",
	[STMT_FIND_UPLOADED] = "SELECT " COLUMNS " FROM files WHERE folder = ?1 AND file != ?2 "
			       "AND sha256 = ?3 AND settings_hash = ?4 AND settings_hash != '' "
			       "AND status = 'uploaded' AND finished_at_ms IS NULL "
			       "ORDER BY claimed_at_ms DESC LIMIT 1",
	/* import_ids is a comma-separated list; instr, not LIKE: '_' would be a wildcard. */
	[STMT_KNOWS_IMPORT] = "SELECT 1 FROM files WHERE uploaded_at_ms >= ?2 "
			      "AND instr(',' || import_ids || ',', ',' || ?1 || ',') > 0 LIMIT 1",
	[STMT_PRUNE] = "DELETE FROM files WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?1",
	[STMT_EVENT_ADD] = "INSERT INTO outbox (msg_id, channel, type, payload, created_at_ms, "
			   "next_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5) "
			   "ON CONFLICT (msg_id) DO NOTHING",
	[STMT_OUTBOX_HEAD] = "SELECT id, msg_id, channel, type, payload, created_at_ms, attempts, "
			     "next_at_ms FROM outbox WHERE channel = ?1 AND state = 'pending' "
			     "ORDER BY id LIMIT 1",
	[STMT_OUTBOX_PENDING] = "SELECT count(*), min(created_at_ms) FROM outbox WHERE channel = ?1 AND "
				"state = 'pending'",
	[STMT_OUTBOX_SETTLE] = "UPDATE outbox SET attempts = ?3, next_at_ms = ?4, "
			       "last_error = coalesce(?5, last_error), state = ?2, "
			       "delivered_at_ms = CASE WHEN ?2 = 'pending' THEN NULL ELSE ?6 END "
			       "WHERE id = ?1 AND state = 'pending'",
	[STMT_OUTBOX_PRUNE] = "DELETE FROM outbox WHERE state != 'pending' AND created_at_ms < ?1",
	[STMT_BEGIN] = "BEGIN IMMEDIATE",
	[STMT_COMMIT] = "COMMIT",
	[STMT_ROLLBACK] = "ROLLBACK",
};

struct ledger_sqlite {
	struct ledger base;
	sqlite3 *db;
	char *path;
	sqlite3_stmt *stmt[STMT_N];
};

/* The error of the last call on DB, as an errno and a sentence in L->error. */
static int db_fail(struct ledger_sqlite *l, const char *what)
{
	int code = sqlite3_extended_errcode(l->db);
	int r;

	switch (code & 0xff) {
	case SQLITE_FULL:
		r = -ENOSPC;
		break;
	case SQLITE_READONLY:
	case SQLITE_PERM:
		r = -EROFS;
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		r = -EBADMSG;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		r = -EBUSY;
		break;
	case SQLITE_NOMEM:
		r = -ENOMEM;
		break;
	case SQLITE_CANTOPEN:
		r = -ENOENT;
		break;
	default:
		r = -EIO;
		break;
	}
	snprintf(l->base.error, sizeof(l->base.error), "ledger '%s': %s: %s", l->path, what,
		 sqlite3_errmsg(l->db));
	return r;
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

static void bind_ms(sqlite3_stmt *s, int i, int64_t v)
{
	if (v)
		sqlite3_bind_int64(s, i, v);
	else
		sqlite3_bind_null(s, i);
}

static void bind_count(sqlite3_stmt *s, int i, int64_t v)
{
	if (v >= 0)
		sqlite3_bind_int64(s, i, v);
	else
		sqlite3_bind_null(s, i);
}

static int run(struct ledger_sqlite *l, enum stmt which, const char *what)
{
	sqlite3_stmt *s = l->stmt[which];
	int rc, r;

	if (!s) {
		/* Not prepared: a ledger opened for reading only. */
		snprintf(l->base.error, sizeof(l->base.error), "ledger '%s': %s: it is open for "
			 "reading only", l->path, what);
		return -EROFS;
	}
	rc = sqlite3_step(s);
	r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_fail(l, what);

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

static int col_dup(sqlite3_stmt *s, int i, char **ret);
static int run(struct ledger_sqlite *l, enum stmt which, const char *what);

static int sqlite_outbox_add(struct ledger *base, const struct ledger_event *evs, size_t n)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	int r = 0;

	for (size_t i = 0; r == 0 && i < n; i++) {
		sqlite3_stmt *s = l->stmt[STMT_EVENT_ADD];

		if (!s)
			return run(l, STMT_EVENT_ADD, "cannot record a notification");
		bind_text(s, 1, evs[i].msg_id);
		bind_text(s, 2, evs[i].channel);
		bind_text(s, 3, evs[i].type);
		bind_text(s, 4, evs[i].payload);
		sqlite3_bind_int64(s, 5, evs[i].created_at_ms);
		r = run(l, STMT_EVENT_ADD, "cannot record a notification");
	}
	return r;
}

static int sqlite_record(struct ledger *base, const struct ledger_entry *e)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_RECORD];
	int r;

	bind_text(s, 1, e->folder);
	bind_text(s, 2, e->file);
	sqlite3_bind_int64(s, 3, e->claimed_at_ms);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)e->bytes);
	bind_text(s, 5, e->sha256);
	bind_text(s, 6, e->settings_hash);
	sqlite3_bind_int(s, 7, (int)e->attempts);
	bind_ms(s, 8, e->uploaded_at_ms);
	bind_ms(s, 9, e->finished_at_ms);
	bind_text(s, 10, e->import_ids);
	bind_text(s, 11, ledger_status_name(e->status));
	bind_count(s, 12, e->total);
	bind_count(s, 13, e->created);
	bind_count(s, 14, e->updated);
	bind_count(s, 15, e->skipped);
	bind_count(s, 16, e->failed);
	bind_text(s, 17, e->error);
	bind_text(s, 18, e->duplicate_of);
	r = run(l, STMT_RECORD, "cannot record a file");
	if (r == 0)
		r = sqlite_outbox_add(base, e->events, e->n_events);
	return r;
}

static const char *const outbox_states[] = {
	[LEDGER_OUTBOX_DELIVERED] = "delivered",
	[LEDGER_OUTBOX_RETRY] = "pending",
	[LEDGER_OUTBOX_DROPPED] = "dropped",
};

static int sqlite_outbox_next(struct ledger *base, const char *channel, int64_t now_ms,
			      struct ledger_outbox_row *ret, int64_t *ret_next_at_ms,
			      uint64_t *ret_pending, int64_t *ret_oldest_ms)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_OUTBOX_PENDING];
	int rc, r;

	memset(ret, 0, sizeof(*ret));
	*ret_pending = 0;
	bind_text(s, 1, channel);
	rc = sqlite3_step(s);
	*ret_oldest_ms = 0;
	if (rc == SQLITE_ROW) {
		*ret_pending = (uint64_t)sqlite3_column_int64(s, 0);
		*ret_oldest_ms = sqlite3_column_int64(s, 1);
	}
	r = rc == SQLITE_ROW ? 0 : db_fail(l, "cannot read the outbox");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (r < 0)
		return r;
	s = l->stmt[STMT_OUTBOX_HEAD];
	bind_text(s, 1, channel);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		r = -ENOENT;
	} else if (rc != SQLITE_ROW) {
		r = db_fail(l, "cannot read the outbox");
	} else if (sqlite3_column_int64(s, 7) > now_ms) {
		*ret_next_at_ms = sqlite3_column_int64(s, 7);
		r = -EAGAIN;
	} else {
		ret->id = sqlite3_column_int64(s, 0);
		ret->ev.created_at_ms = sqlite3_column_int64(s, 5);
		ret->attempts = (unsigned)sqlite3_column_int(s, 6);
		if (col_dup(s, 1, &ret->ev.msg_id) < 0 || col_dup(s, 2, &ret->ev.channel) < 0 ||
		    col_dup(s, 3, &ret->ev.type) < 0 || col_dup(s, 4, &ret->ev.payload) < 0) {
			ledger_outbox_row_clear(ret);
			r = -ENOMEM;
		}
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

static int sqlite_outbox_settle(struct ledger *base, int64_t id, enum ledger_outbox_outcome how,
				unsigned attempts, int64_t next_at_ms, const char *error,
				int64_t now_ms)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_OUTBOX_SETTLE];

	sqlite3_bind_int64(s, 1, id);
	bind_text(s, 2, outbox_states[how]);
	sqlite3_bind_int(s, 3, (int)attempts);
	sqlite3_bind_int64(s, 4, next_at_ms);
	bind_text(s, 5, error);
	sqlite3_bind_int64(s, 6, now_ms);
	return run(l, STMT_OUTBOX_SETTLE, "cannot record a notification's delivery");
}

static int col_dup(sqlite3_stmt *s, int i, char **ret)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	*ret = NULL;
	if (!t)
		return 0;
	*ret = strdup((const char *)t);
	return *ret ? 0 : -ENOMEM;
}

static int64_t col_count(sqlite3_stmt *s, int i)
{
	return sqlite3_column_type(s, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, i);
}

/* The row S is on, into *E (in the order of COLUMNS). */
static int read_row(sqlite3_stmt *s, struct ledger_entry *e)
{
	const unsigned char *t;

	memset(e, 0, sizeof(*e));
	if (col_dup(s, 0, &e->folder) < 0 || col_dup(s, 1, &e->file) < 0 ||
	    col_dup(s, 9, &e->import_ids) < 0 || col_dup(s, 16, &e->error) < 0 ||
	    col_dup(s, 17, &e->duplicate_of) < 0) {
		ledger_entry_clear(e);
		return -ENOMEM;
	}
	e->claimed_at_ms = sqlite3_column_int64(s, 2);
	e->bytes = (uint64_t)sqlite3_column_int64(s, 3);
	t = sqlite3_column_text(s, 4);
	snprintf(e->sha256, sizeof(e->sha256), "%s", t ? (const char *)t : "");
	t = sqlite3_column_text(s, 5);
	snprintf(e->settings_hash, sizeof(e->settings_hash), "%s", t ? (const char *)t : "");
	e->attempts = (unsigned)sqlite3_column_int(s, 6);
	e->uploaded_at_ms = sqlite3_column_int64(s, 7);
	e->finished_at_ms = sqlite3_column_int64(s, 8);
	if (ledger_status_parse((const char *)sqlite3_column_text(s, 10), &e->status) < 0)
		e->status = LEDGER_FAILED;
	e->total = col_count(s, 11);
	e->created = col_count(s, 12);
	e->updated = col_count(s, 13);
	e->skipped = col_count(s, 14);
	e->failed = col_count(s, 15);
	return 0;
}

/* Steps S once: a row into *RET, or -ENOENT. */
static int find_one(struct ledger_sqlite *l, sqlite3_stmt *s, struct ledger_entry *ret)
{
	int rc = sqlite3_step(s), r;

	if (rc == SQLITE_ROW)
		r = read_row(s, ret);
	else if (rc == SQLITE_DONE)
		r = -ENOENT;
	else
		r = db_fail(l, "cannot look up a file");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

static int sqlite_find_imported(struct ledger *base, const char *folder, const char *sha256,
				const char *settings_hash, int64_t since_ms,
				struct ledger_entry *ret)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_FIND_IMPORTED];

	bind_text(s, 1, folder);
	bind_text(s, 2, sha256);
	bind_text(s, 3, settings_hash);
	sqlite3_bind_int64(s, 4, since_ms);
	return find_one(l, s, ret);
}

static int sqlite_find_unfinished(struct ledger *base, const char *folder, const char *file,
				  const char *sha256, struct ledger_entry *ret)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_FIND_UNFINISHED];

	bind_text(s, 1, folder);
	bind_text(s, 2, file);
	bind_text(s, 3, sha256);
	return find_one(l, s, ret);
}

static int sqlite_knows_import(struct ledger *base, const char *import_id, int64_t since_ms)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_KNOWS_IMPORT];
	int rc, r;

	bind_text(s, 1, import_id);
	sqlite3_bind_int64(s, 2, since_ms);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		r = 1;
	else if (rc == SQLITE_DONE)
		r = 0;
	else
		r = db_fail(l, "cannot look up an import");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

static int sqlite_find_uploaded(struct ledger *base, const char *folder, const char *file,
				const char *sha256, const char *settings_hash,
				struct ledger_entry *ret)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s = l->stmt[STMT_FIND_UPLOADED];

	bind_text(s, 1, folder);
	bind_text(s, 2, file);
	bind_text(s, 3, sha256);
	bind_text(s, 4, settings_hash);
	return find_one(l, s, ret);
}

static int sqlite_list(struct ledger *base, const struct ledger_query *q, ledger_list_cb cb,
		       void *data)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	sqlite3_stmt *s;
	char sql[512];
	int rc, r = 0;

	snprintf(sql, sizeof(sql),
		 "SELECT " COLUMNS " FROM files WHERE claimed_at_ms >= ?1 %s %s "
		 "ORDER BY claimed_at_ms DESC, id DESC %s",
		 q->folder ? "AND folder = ?2" : "", q->failed_only ? "AND status = 'failed'" : "",
		 q->limit ? "LIMIT ?3" : "");
	if (sqlite3_prepare_v2(l->db, sql, -1, &s, NULL) != SQLITE_OK)
		return db_fail(l, "cannot list files");
	sqlite3_bind_int64(s, 1, q->since_ms);
	if (q->folder)
		sqlite3_bind_text(s, 2, q->folder, -1, SQLITE_STATIC);
	if (q->limit)
		sqlite3_bind_int64(s, 3, (sqlite3_int64)q->limit);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct ledger_entry e;

		r = read_row(s, &e);
		if (r == 0)
			r = cb(&e, data);
		ledger_entry_clear(&e);
		if (r)
			break;
	}
	if (!r && rc != SQLITE_DONE)
		r = db_fail(l, "cannot list files");
	sqlite3_finalize(s);
	return r;
}

static int sqlite_prune(struct ledger *base, int64_t before_ms, uint64_t *ret_n)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;
	int r;

	sqlite3_bind_int64(l->stmt[STMT_PRUNE], 1, before_ms);
	r = run(l, STMT_PRUNE, "cannot prune old files");
	if (ret_n)
		*ret_n = r == 0 ? (uint64_t)sqlite3_changes(l->db) : 0;
	if (r == 0) {
		sqlite3_bind_int64(l->stmt[STMT_OUTBOX_PRUNE], 1, before_ms);
		r = run(l, STMT_OUTBOX_PRUNE, "cannot prune old notifications");
	}
	return r;
}

static int sqlite_begin(struct ledger *base)
{
	return run((struct ledger_sqlite *)base, STMT_BEGIN, "cannot begin a transaction");
}

static int sqlite_commit(struct ledger *base)
{
	return run((struct ledger_sqlite *)base, STMT_COMMIT, "cannot commit");
}

static int sqlite_rollback(struct ledger *base)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;

	/* Nothing to roll back after an error that ended the transaction itself. */
	if (sqlite3_get_autocommit(l->db))
		return 0;
	return run(l, STMT_ROLLBACK, "cannot roll back");
}

static void sqlite_close(struct ledger *base)
{
	struct ledger_sqlite *l = (struct ledger_sqlite *)base;

	for (int i = 0; i < STMT_N; i++)
		sqlite3_finalize(l->stmt[i]);
	sqlite3_close(l->db);
	free(l->path);
	free(l);
}

static const struct ledger_ops sqlite_ops = {
	.name = "sqlite",
	.record = sqlite_record,
	.find_imported = sqlite_find_imported,
	.find_unfinished = sqlite_find_unfinished,
	.find_uploaded = sqlite_find_uploaded,
	.knows_import = sqlite_knows_import,
	.list = sqlite_list,
	.prune = sqlite_prune,
	.outbox_next = sqlite_outbox_next,
	.outbox_add = sqlite_outbox_add,
	.outbox_settle = sqlite_outbox_settle,
	.begin = sqlite_begin,
	.commit = sqlite_commit,
	.rollback = sqlite_rollback,
	.close = sqlite_close,
};

static int exec(struct ledger_sqlite *l, const char *sql, const char *what)
{
	if (sqlite3_exec(l->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return db_fail(l, what);
	return 0;
}

static int user_version(struct ledger_sqlite *l, int *ret)
{
	sqlite3_stmt *s;
	int rc;

	if (sqlite3_prepare_v2(l->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
		return db_fail(l, "cannot read the schema version");
	rc = sqlite3_step(s);
	*ret = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : db_fail(l, "cannot read the schema version");
}

/* Brings the schema from its version to SCHEMA_VERSION, each step in a transaction of its own. */
static int migrate(struct ledger_sqlite *l, bool read_only)
{
	char sql[64];
	int v, r;

	r = user_version(l, &v);
	if (r < 0)
		return r;
	if (v > SCHEMA_VERSION) {
		snprintf(l->base.error, sizeof(l->base.error),
			 "ledger '%s' has schema version %d, newer than this resend-dropd knows (%d): "
			 "it was written by a later version",
			 l->path, v, SCHEMA_VERSION);
		return -EPROTO;
	}
	if (v < SCHEMA_VERSION && read_only) {
		snprintf(l->base.error, sizeof(l->base.error),
			 "ledger '%s' has schema version %d; the daemon migrates it to %d when it "
			 "next starts", l->path, v, SCHEMA_VERSION);
		return -EPROTO;
	}
	for (; v < SCHEMA_VERSION; v++) {
		r = exec(l, "BEGIN IMMEDIATE", "cannot migrate the schema");
		if (r == 0)
			r = exec(l, migrations[v], "cannot migrate the schema");
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if (r == 0)
			r = exec(l, sql, "cannot migrate the schema");
		if (r == 0)
			r = exec(l, "COMMIT", "cannot migrate the schema");
		if (r < 0) {
			(void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
			return r;
		}
	}
	return 0;
}

/* Run as root, SQLite gives the files it makes beside the database (-wal, -shm) to the
 * database's owner with fchown. The daemon's ledger is its own, and the unit's system call
 * filter refuses chown: the call is replaced by one that does nothing (SQLite's VFS lets a
 * program replace its system calls for this). */
static int no_fchown(int fd, uid_t uid, gid_t gid)
{
	(void)fd;
	(void)uid;
	(void)gid;
	return 0;
}

static void vfs_setup(void)
{
	static bool done;
	sqlite3_vfs *vfs;

	if (done)
		return;
	done = true;
	vfs = sqlite3_vfs_find(NULL);
	if (vfs && vfs->iVersion >= 3 && vfs->xSetSystemCall)
		(void)vfs->xSetSystemCall(vfs, "fchown", (sqlite3_syscall_ptr)no_fchown);
}

static int ledger_sqlite_open(const char *path, bool read_only, struct ledger **ret,
			      char *errbuf, size_t errsz)
{
	struct ledger_sqlite *l = calloc(1, sizeof(*l));
	int flags = read_only ? SQLITE_OPEN_READONLY
			      : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	int r;

	if (!l || !(l->path = strdup(path))) {
		free(l);
		snprintf(errbuf, errsz, "out of memory");
		return -ENOMEM;
	}
	l->base.ops = &sqlite_ops;
	vfs_setup();
	if (sqlite3_open_v2(path, &l->db, flags | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK) {
		r = l->db ? db_fail(l, "cannot open") : -ENOMEM;
		goto fail;
	}
	sqlite3_extended_result_codes(l->db, 1);
	/* A history reader waits for a checkpoint rather than failing at once. */
	sqlite3_busy_timeout(l->db, 5000);
	/* WAL: readers never block the writer. NORMAL: a commit is safe from a crash of the
	 * process, which is what the ledger must survive (the per-file records are fsynced for
	 * what a power cut must not lose); it saves an fsync per commit. */
	if (!read_only && ((r = exec(l, "PRAGMA journal_mode = WAL", "cannot use WAL")) < 0 ||
			   (r = exec(l, "PRAGMA synchronous = NORMAL", "cannot set synchronous")) <
				   0))
		goto fail;
	/* The ledger is written in small groups and read a row at a time: a small page cache
	 * (SQLite's default is 2 MiB) keeps the daemon's memory where it was. */
	if ((r = exec(l, "PRAGMA cache_size = -512", "cannot set the cache size")) < 0)
		goto fail;
	/* Reading the schema is where a file that is no database shows. */
	r = migrate(l, read_only);
	if (r < 0)
		goto fail;
	for (int i = 0; i < STMT_N; i++) {
		if (read_only && (i == STMT_RECORD || i == STMT_PRUNE || i == STMT_EVENT_ADD ||
				  i == STMT_OUTBOX_SETTLE || i == STMT_OUTBOX_PRUNE))
			continue;
		if (sqlite3_prepare_v3(l->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &l->stmt[i], NULL) != SQLITE_OK) {
			r = db_fail(l, "cannot prepare a statement");
			goto fail;
		}
	}
	*ret = &l->base;
	return 0;
fail:
	if (r == -EBADMSG)
		snprintf(errbuf, errsz, "%s (the file is not a resend-dropd ledger, or is damaged: "
			 "move it aside, or restore it from a backup)", l->base.error);
	else
		snprintf(errbuf, errsz, "%s", l->base.error[0] ? l->base.error : "cannot open");
	sqlite_close(&l->base);
	return r;
}

/* The ledger of STATE_DIR: its file there, on a local disk. */
static int ledger_sqlite_open_dir(const char *state_dir, bool read_only,
				  struct ledger **ret, char *errbuf, size_t errsz)
{
	struct statfs fs;
	const char *net;
	char *path;
	int r;

	if (statfs(state_dir, &fs) < 0) {
		r = -errno;
		snprintf(errbuf, errsz, "state_dir '%s': %s", state_dir, strerror(errno));
		return r;
	}
	if (ledger_fs_is_network((long)fs.f_type, &net)) {
		snprintf(errbuf, errsz, "state_dir '%s' is on a network filesystem (%s): the "
			 "ledger's SQLite WAL needs a local disk; set state_dir to a local directory",
			 state_dir, net);
		return -EREMOTE;
	}
	if (asprintf(&path, "%s/%s", state_dir, LEDGER_FILE_NAME) < 0) {
		snprintf(errbuf, errsz, "out of memory");
		return -ENOMEM;
	}
	if (read_only && access(path, F_OK) < 0) {
		r = -errno;
		snprintf(errbuf, errsz, "ledger '%s': %s (has the daemon run with this state_dir?)",
			 path, strerror(errno));
		free(path);
		return r;
	}
	r = ledger_sqlite_open(path, read_only, ret, errbuf, errsz);
	free(path);
	return r;
}

const struct ledger_backend ledger_backend_sqlite = {
	.name = "sqlite",
	.open = ledger_sqlite_open_dir,
};
