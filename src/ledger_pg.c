/* The ledger in PostgreSQL (libpq), for several hosts sharing one history: the same table as
 * SQLite's, its schema versioned in a table of its own and migrated forward at open under an
 * advisory lock (two hosts starting together migrate once). Synchronous, like every backend: it
 * runs on the ledger's own thread (ledgerq.h), never on the loop. A connection that breaks is
 * made again by the next call, which fails meanwhile with the server's reason (ledgerq retries
 * with a backoff and tells the daemon once); a server that is down at start is not fatal, one
 * that refuses the role or holds a newer schema is. */
#include "ledger.h"
#include "text.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Each step takes the schema from the version before it to its own (index + 1). Version 1 is
 * SQLite's version 3, in PostgreSQL's types. */
static const char *const migrations[] = {
	/* 1: the files and how they ended. */
	"CREATE TABLE files ("
	" id bigserial PRIMARY KEY,"
	" folder text NOT NULL, file text NOT NULL, claimed_at_ms bigint NOT NULL,"
	" bytes bigint NOT NULL DEFAULT 0, sha256 text NOT NULL DEFAULT '',"
	" settings_hash text NOT NULL DEFAULT '',"
	" attempts integer NOT NULL DEFAULT 0,"
	" uploaded_at_ms bigint, finished_at_ms bigint,"
	" import_ids text, status text NOT NULL,"
	" total bigint, created bigint, updated bigint, skipped bigint, failed bigint,"
	" error text, duplicate_of text,"
	" UNIQUE (folder, file, claimed_at_ms));"
	"CREATE INDEX files_by_content ON files (folder, sha256, settings_hash, finished_at_ms);"
	"CREATE INDEX files_by_claim ON files (claimed_at_ms);"
	"CREATE INDEX files_by_finish ON files (finished_at_ms);"
	"CREATE INDEX files_by_upload ON files (uploaded_at_ms);",
	/* 2: a fleet. Each file says which host took it; each host has a row with its lease
	 * (heartbeat_at, by the server's clock), and a file of a shared inbox is claimed here
	 * before it is renamed into a host's processing directory. */
	"ALTER TABLE files ADD COLUMN host_id text;"
	"CREATE TABLE hosts ("
	" host_id text PRIMARY KEY,"
	" instance bigint NOT NULL,"
	" started_at timestamptz NOT NULL DEFAULT now(),"
	" heartbeat_at timestamptz NOT NULL DEFAULT now(),"
	" lease_ms integer NOT NULL,"
	" in_flight integer NOT NULL DEFAULT 0,"
	" state text NOT NULL DEFAULT 'running',"
	" paused_until timestamptz,"
	" taken_over_by text, taken_over_at timestamptz);"
	"CREATE TABLE claims ("
	" folder text NOT NULL, file text NOT NULL, host_id text NOT NULL,"
	" claimed_at timestamptz NOT NULL DEFAULT now(),"
	" PRIMARY KEY (folder, file));"
	"CREATE INDEX claims_by_host ON claims (host_id);"
	/* One content in flight at a time in the whole fleet: the file importing it. */
	"CREATE TABLE contents ("
	" folder text NOT NULL, sha256 text NOT NULL, settings_hash text NOT NULL,"
	" file text NOT NULL, host_id text NOT NULL,"
	" reserved_at timestamptz NOT NULL DEFAULT now(),"
	" PRIMARY KEY (folder, sha256, settings_hash));",
	/* 3: the notification outbox (ledger.h), delivered in id order per channel by one host
	 * at a time: the one whose lease on the channel's oldest event runs. */
	"CREATE TABLE outbox ("
	" id bigserial PRIMARY KEY,"
	" msg_id text NOT NULL UNIQUE, channel text NOT NULL, type text NOT NULL,"
	" payload text NOT NULL, created_at_ms bigint NOT NULL,"
	" attempts integer NOT NULL DEFAULT 0, next_at_ms bigint NOT NULL DEFAULT 0,"
	" last_error text, state text NOT NULL DEFAULT 'pending', delivered_at_ms bigint,"
	" leased_by text, lease_until timestamptz);"
	"CREATE INDEX outbox_pending ON outbox (channel, id) WHERE state = 'pending';"
	"CREATE INDEX outbox_by_creation ON outbox (created_at_ms);",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* Any number, the same in every resend-dropd: the lock that serializes migrations. */
#define MIGRATION_LOCK "7262640001"

#define COLUMNS                                                                                 \
	"folder, file, claimed_at_ms, bytes, sha256, settings_hash, attempts, uploaded_at_ms, "   \
	"finished_at_ms, import_ids, status, total, created, updated, skipped, failed, error, "   \
	"duplicate_of, host_id"

enum stmt {
	STMT_RECORD,
	STMT_FIND_IMPORTED,
	STMT_FIND_UNFINISHED,
	STMT_FIND_UPLOADED,
	STMT_KNOWS_IMPORT,
	STMT_PRUNE,
	STMT_JOIN,
	STMT_BEAT,
	STMT_WHO,
	STMT_TAKE_OVER,
	STMT_HOSTS,
	STMT_CLAIM,
	STMT_RELEASE,
	STMT_DROP_CLAIMS,
	STMT_DROP_HOST,
	STMT_LEAVE,
	STMT_LEAVE_EMPTY,
	STMT_RESERVE,
	STMT_HOLDER,
	STMT_UNRESERVE,
	STMT_EVENT_ADD,
	STMT_OUTBOX_TAKE,
	STMT_OUTBOX_HEAD,
	STMT_OUTBOX_SETTLE,
	STMT_OUTBOX_PRUNE,
	STMT_N
};

static const struct {
	const char *name, *sql;
	int n_params;
	bool writes;
} stmts[STMT_N] = {
	[STMT_RECORD] = {"rdd_record",
			 "INSERT INTO files (" COLUMNS ") VALUES "
			 "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
			 "$17, $18, $19) "
			 "ON CONFLICT (folder, file, claimed_at_ms) DO UPDATE SET "
			 "bytes = $4, sha256 = $5, settings_hash = $6, attempts = $7, "
			 "uploaded_at_ms = $8, finished_at_ms = $9, import_ids = $10, status = $11, "
			 "total = $12, created = $13, updated = $14, skipped = $15, failed = $16, "
			 "error = $17, duplicate_of = $18, host_id = $19",
			 19, true},
	[STMT_FIND_IMPORTED] = {"rdd_find_imported",
				"SELECT " COLUMNS " FROM files WHERE folder = $1 AND sha256 = $2 "
				"AND settings_hash = $3 AND settings_hash != '' "
				"AND status = 'done' AND finished_at_ms >= $4 "
				"ORDER BY finished_at_ms DESC LIMIT 1",
				4, false},
	[STMT_FIND_UNFINISHED] = {"rdd_find_unfinished",
				  "SELECT " COLUMNS " FROM files WHERE folder = $1 AND file = $2 "
				  "AND sha256 = $3 AND finished_at_ms IS NULL "
				  "ORDER BY claimed_at_ms DESC LIMIT 1",
				  3, false},
	[STMT_FIND_UPLOADED] = {"rdd_find_uploaded",
				"SELECT " COLUMNS " FROM files WHERE folder = $1 AND file != $2 "
				"AND sha256 = $3 AND settings_hash = $4 AND settings_hash != '' "
				"AND status = 'uploaded' AND finished_at_ms IS NULL "
				"ORDER BY claimed_at_ms DESC LIMIT 1",
				4, false},
	/* import_ids is a comma-separated list; position, not LIKE: '_' would be a wildcard. */
	[STMT_KNOWS_IMPORT] = {"rdd_knows_import",
			       "SELECT 1 FROM files WHERE uploaded_at_ms >= $2 AND "
			       "position(',' || $1 || ',' in ',' || import_ids || ',') > 0 LIMIT 1",
			       2, false},
	[STMT_PRUNE] = {"rdd_prune",
			"DELETE FROM files WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1",
			1, true},
	/* Joining: the row made, or taken back from a run before this one, unless a live host
	 * is taking it over now. */
	[STMT_JOIN] = {"rdd_join",
		       "INSERT INTO hosts AS h (host_id, instance, lease_ms, in_flight, state) "
		       "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host_id) DO UPDATE SET "
		       "instance = $2, started_at = now(), heartbeat_at = now(), lease_ms = $3, "
		       "in_flight = $4, state = $5, paused_until = NULL, taken_over_by = NULL, "
		       "taken_over_at = NULL "
		       "WHERE h.taken_over_by IS NULL OR NOT EXISTS (SELECT 1 FROM hosts t "
		       "WHERE t.host_id = h.taken_over_by AND t.host_id != h.host_id "
		       "AND t.heartbeat_at > now() - t.lease_ms * interval '1 ms') "
		       "RETURNING 1",
		       5, true},
	[STMT_BEAT] = {"rdd_beat",
		       "UPDATE hosts SET heartbeat_at = now(), lease_ms = $3, in_flight = $4, "
		       "state = $5, paused_until = CASE WHEN $6::bigint > 0 THEN "
		       "greatest(paused_until, now() + $6::bigint * interval '1 ms') "
		       "ELSE paused_until END "
		       "WHERE host_id = $1 AND instance = $2 AND taken_over_by IS NULL RETURNING 1",
		       6, true},
	[STMT_WHO] = {"rdd_who",
		      "SELECT coalesce(taken_over_by, ''), instance = $2 FROM hosts "
		      "WHERE host_id = $1",
		      2, false},
	/* The host whose lease ended longest ago, unless a live host other than this one is
	 * taking it over: exactly one host gets it (the row's lock, and the conditions checked
	 * again on the row as it is when the lock is had). */
	[STMT_TAKE_OVER] = {"rdd_take_over",
			    "UPDATE hosts d SET taken_over_by = $1, "
			    "taken_over_at = coalesce(d.taken_over_at, now()) "
			    "WHERE d.host_id = (SELECT x.host_id FROM hosts x WHERE x.host_id != $1 "
			    "AND x.heartbeat_at < now() - x.lease_ms * interval '1 ms' "
			    "ORDER BY x.heartbeat_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
			    "AND d.heartbeat_at < now() - d.lease_ms * interval '1 ms' "
			    "AND (d.taken_over_by IS NULL OR d.taken_over_by = $1 OR NOT EXISTS "
			    "(SELECT 1 FROM hosts t WHERE t.host_id = d.taken_over_by "
			    "AND t.heartbeat_at > now() - t.lease_ms * interval '1 ms')) "
			    "RETURNING d.host_id",
			    1, true},
	[STMT_HOSTS] = {"rdd_hosts",
			"SELECT host_id, "
			"(extract(epoch FROM now() - heartbeat_at) * 1000)::bigint, "
			"(extract(epoch FROM started_at) * 1000)::bigint, in_flight, state, "
			"coalesce(taken_over_by, ''), "
			"heartbeat_at > now() - lease_ms * interval '1 ms', "
			"greatest(0, (extract(epoch FROM paused_until - now()) * 1000))::bigint "
			"FROM hosts ORDER BY host_id",
			0, false},
	[STMT_CLAIM] = {"rdd_claim",
			"INSERT INTO claims AS c (folder, file, host_id) VALUES ($2, $3, $1) "
			"ON CONFLICT (folder, file) DO UPDATE SET claimed_at = c.claimed_at "
			"WHERE c.host_id = $1 RETURNING 1",
			3, true},
	[STMT_RELEASE] = {"rdd_release",
			  "DELETE FROM claims WHERE host_id = $1 AND folder = $2 AND file = $3",
			  3, true},
	[STMT_DROP_CLAIMS] = {"rdd_drop_claims",
			      "DELETE FROM claims WHERE host_id = $2 AND EXISTS (SELECT 1 FROM "
			      "hosts WHERE host_id = $2 AND taken_over_by = $1)",
			      2, true},
	[STMT_DROP_HOST] = {"rdd_drop_host",
			    "DELETE FROM hosts WHERE host_id = $2 AND taken_over_by = $1",
			    2, true},
	[STMT_LEAVE] = {"rdd_leave",
			"UPDATE hosts SET state = 'stopped', in_flight = $3 WHERE host_id = $1 "
			"AND instance = $2",
			3, true},
	/* Taken when free, already this file's, or held by a host whose lease ended. */
	[STMT_RESERVE] = {"rdd_reserve",
			  "INSERT INTO contents AS c (folder, sha256, settings_hash, file, host_id) "
			  "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (folder, sha256, settings_hash) "
			  "DO UPDATE SET file = $4, host_id = $5, reserved_at = now() "
			  "WHERE (c.host_id = $5 AND c.file = $4) OR NOT EXISTS (SELECT 1 FROM hosts h "
			  "WHERE h.host_id = c.host_id "
			  "AND h.heartbeat_at > now() - h.lease_ms * interval '1 ms') RETURNING 1",
			  5, true},
	[STMT_HOLDER] = {"rdd_holder",
			 "SELECT file, host_id FROM contents WHERE folder = $1 AND sha256 = $2 "
			 "AND settings_hash = $3",
			 3, false},
	[STMT_UNRESERVE] = {"rdd_unreserve",
			    "DELETE FROM contents WHERE folder = $1 AND sha256 = $2 "
			    "AND settings_hash = $3 AND file = $4 AND host_id = $5",
			    5, true},
	[STMT_LEAVE_EMPTY] = {"rdd_leave_empty",
			      "DELETE FROM hosts WHERE host_id = $1 AND instance = $2",
			      2, true},
	[STMT_EVENT_ADD] = {"rdd_event_add",
			    "INSERT INTO outbox (msg_id, channel, type, payload, created_at_ms, "
			    "next_at_ms) VALUES ($1, $2, $3, $4, $5, $5) "
			    "ON CONFLICT (msg_id) DO NOTHING",
			    5, true},
	/* The channel's oldest event, when it is due and no other host's lease on it runs:
	 * leased to this host ($3) for two minutes, more than an attempt takes. */
	[STMT_OUTBOX_TAKE] = {"rdd_outbox_take",
			      "WITH head AS (SELECT id FROM outbox WHERE channel = $1 AND "
			      "state = 'pending' ORDER BY id LIMIT 1 FOR UPDATE) "
			      "UPDATE outbox o SET leased_by = $3, "
			      "lease_until = now() + interval '120 seconds' FROM head "
			      "WHERE o.id = head.id AND o.next_at_ms <= $2 AND "
			      "(o.lease_until IS NULL OR o.lease_until < now() OR o.leased_by = $3) "
			      "RETURNING o.id, o.msg_id, o.channel, o.type, o.payload, "
			      "o.created_at_ms, o.attempts",
			      3, true},
	/* How many wait, and when the oldest may be tried (another host's lease: when it
	 * ends), in ms of the wall clock. */
	[STMT_OUTBOX_HEAD] = {"rdd_outbox_head",
			      "SELECT (SELECT count(*) FROM outbox WHERE channel = $1 AND "
			      "state = 'pending'), "
			      "(SELECT min(created_at_ms) FROM outbox WHERE channel = $1 AND "
			      "state = 'pending'), "
			      "(SELECT greatest(next_at_ms, CASE WHEN lease_until > now() AND "
			      "leased_by != $2 THEN (extract(epoch FROM lease_until) * 1000)::bigint "
			      "ELSE 0 END) FROM outbox WHERE channel = $1 AND state = 'pending' "
			      "ORDER BY id LIMIT 1)",
			      2, false},
	[STMT_OUTBOX_SETTLE] = {"rdd_outbox_settle",
				"UPDATE outbox SET attempts = $3, next_at_ms = $4, "
				"last_error = coalesce($5, last_error), "
				"state = $2::text, delivered_at_ms = CASE WHEN $2::text = 'pending' "
				"THEN NULL ELSE $6::bigint END, leased_by = NULL, lease_until = NULL "
				"WHERE id = $1 AND state = 'pending'",
				6, true},
	[STMT_OUTBOX_PRUNE] = {"rdd_outbox_prune",
			       "DELETE FROM outbox WHERE state != 'pending' AND created_at_ms < $1",
			       1, true},
};

struct ledger_pg {
	struct ledger base;
	PGconn *conn;         /* NULL until the first connection is made */
	char *conninfo;       /* as configured (it holds no password) */
	bool read_only;
	bool ready;           /* connected, schema checked, statements prepared on this session */
};

/* The error of RES (or, with none, of the connection) as an errno and a sentence in L->error:
 * WHAT, then the server's reason. A broken connection is made again by the next call. */
static int pg_fail(struct ledger_pg *l, const PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : "";
	char reason[400];
	size_t n = 0;
	int r = -EIO;

	if (!msg || !*msg)
		msg = l->conn ? PQerrorMessage(l->conn) : "out of memory";
	/* libpq's reasons run over lines ("...unexpectedly\n\tThis probably means..."): one
	 * line, for the log. */
	for (; *msg && n < sizeof(reason) - 1; msg++) {
		if (*msg != '\n' && *msg != '\t' && *msg != '\r')
			reason[n++] = *msg;
		else if (n && reason[n - 1] != ' ')
			reason[n++] = ' ';
	}
	while (n && reason[n - 1] == ' ')
		n--;
	reason[n] = '\0';
	if (!l->conn || PQstatus(l->conn) != CONNECTION_OK) {
		l->ready = false;
		r = -ENOTCONN;
	} else if (state) {
		if (strcmp(state, "53100") == 0) /* disk_full */
			r = -ENOSPC;
		else if (strcmp(state, "25006") == 0) /* read_only_sql_transaction */
			r = -EROFS;
		else if (strncmp(state, "42501", 5) == 0 || strncmp(state, "28", 2) == 0)
			r = -EACCES; /* insufficient privilege, authorization */
		else if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0) {
			l->ready = false; /* connection exception, operator intervention */
			r = -ENOTCONN;
		} else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
			   strcmp(state, "55P03") == 0)
			r = -EBUSY; /* serialization, deadlock, lock not available */
		else if (strcmp(state, "53200") == 0)
			r = -ENOMEM;
	}
	snprintf(l->base.error, sizeof(l->base.error), "ledger (PostgreSQL): %s: %s", what,
		 reason[0] ? reason : "unknown error");
	return r;
}

/* Runs SQL (no parameters, no rows wanted). */
static int pg_exec(struct ledger_pg *l, const char *sql, const char *what)
{
	PGresult *res = PQexec(l->conn, sql);
	int r = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		r = pg_fail(l, res, what);
	PQclear(res);
	return r;
}

/* The schema's version into *RET: 0 when this database has no ledger yet. */
static int schema_version(struct ledger_pg *l, int *ret)
{
	PGresult *res = PQexec(l->conn, "SELECT to_regclass('ledger_schema') IS NOT NULL");
	int r = 0;

	*ret = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pg_fail(l, res, "cannot read the schema version");
		PQclear(res);
		return r;
	}
	bool exists = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	if (!exists)
		return 0;
	res = PQexec(l->conn, "SELECT max(version) FROM ledger_schema");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		r = pg_fail(l, res, "cannot read the schema version");
	else if (!PQgetisnull(res, 0, 0))
		*ret = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return r;
}

/* Brings the schema to SCHEMA_VERSION in one transaction, under the migration lock; or checks
 * it, for reading only. */
static int migrate(struct ledger_pg *l)
{
	char sql[96];
	int v = 0, r;

	if (l->read_only) {
		r = schema_version(l, &v);
		if (r < 0)
			return r;
		if (v == 0) {
			snprintf(l->base.error, sizeof(l->base.error),
				 "ledger (PostgreSQL): the database has no ledger (has a daemon run "
				 "with this ledger?)");
			return -ENOENT;
		}
		if (v < SCHEMA_VERSION) {
			snprintf(l->base.error, sizeof(l->base.error),
				 "ledger (PostgreSQL) has schema version %d; a daemon migrates it to "
				 "%d when it next starts", v, SCHEMA_VERSION);
			return -EPROTO;
		}
	} else {
		r = pg_exec(l, "BEGIN", "cannot migrate the schema");
		if (r == 0)
			r = pg_exec(l, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")",
				    "cannot migrate the schema");
		if (r == 0)
			r = pg_exec(l, "CREATE TABLE IF NOT EXISTS ledger_schema ("
				    " version integer NOT NULL,"
				    " migrated_at timestamptz NOT NULL DEFAULT now())",
				    "cannot migrate the schema");
		if (r == 0)
			r = schema_version(l, &v);
		for (; r == 0 && v < SCHEMA_VERSION; v++) {
			r = pg_exec(l, migrations[v], "cannot migrate the schema");
			snprintf(sql, sizeof(sql), "INSERT INTO ledger_schema (version) VALUES (%d)",
				 v + 1);
			if (r == 0)
				r = pg_exec(l, sql, "cannot migrate the schema");
		}
		if (r == 0 && v > SCHEMA_VERSION)
			r = -EPROTO;
		if (r == 0)
			r = pg_exec(l, "COMMIT", "cannot migrate the schema");
		else if (l->conn && PQstatus(l->conn) == CONNECTION_OK)
			(void)PQclear(PQexec(l->conn, "ROLLBACK"));
		if (r < 0 && r != -EPROTO)
			return r;
	}
	if (v > SCHEMA_VERSION) {
		snprintf(l->base.error, sizeof(l->base.error),
			 "ledger (PostgreSQL) has schema version %d, newer than this resend-dropd "
			 "knows (%d): it was written by a later version", v, SCHEMA_VERSION);
		return -EPROTO;
	}
	return 0;
}

/* The connection's parameters: defaults first, so that the configured connection string
 * (expanded from dbname) overrides them; the application's name last, for pg_stat_activity. */
static const char *const conn_keys[] = {"connect_timeout", "keepalives_idle",
					"keepalives_interval", "keepalives_count", "dbname",
					"application_name", NULL};
#define CONN_VALUES(l) {"10", "30", "10", "3", (l)->conninfo, "resend-dropd", NULL}

/* The server's notices ("relation already exists, skipping") are nobody's business. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Connects (again) when the session is not ready: the connection, the schema, the statements.
 * Every call starts here. */
static int pg_ready(struct ledger_pg *l)
{
	const char *values[] = CONN_VALUES(l);
	int r;

	if (l->ready && PQstatus(l->conn) == CONNECTION_OK)
		return 0;
	l->ready = false;
	if (l->conn)
		PQfinish(l->conn);
	l->conn = PQconnectdbParams(conn_keys, values, 1);
	if (!l->conn || PQstatus(l->conn) != CONNECTION_OK)
		return pg_fail(l, NULL, "cannot connect");
	PQsetNoticeProcessor(l->conn, ignore_notice, NULL);
	/* Timestamps are the daemon's milliseconds; text in and out is UTF-8 whatever the
	 * database's encoding. */
	r = pg_exec(l, "SET client_encoding = 'UTF8'", "cannot set up the session");
	if (r == 0 && l->read_only)
		r = pg_exec(l, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
			    "cannot set up the session");
	if (r == 0)
		r = migrate(l);
	for (int i = 0; r == 0 && i < STMT_N; i++) {
		PGresult *res;

		if (l->read_only && stmts[i].writes)
			continue;
		res = PQprepare(l->conn, stmts[i].name, stmts[i].sql, stmts[i].n_params, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			r = pg_fail(l, res, "cannot prepare a statement");
		PQclear(res);
	}
	l->ready = r == 0;
	return r;
}

/* Parameters as text, each NULL or its own buffer. */
struct params {
	const char *v[19];
	char num[19][24];
	char esc[19][1024]; /* text that is not UTF-8, escaped (a name's 255 bytes fit) */
};

/* PostgreSQL's text is UTF-8 only: a name that is not (a file from an old share, in Latin-1)
 * is kept in the escaped form the logs give it, so that it is recorded and found again by the
 * same name, where it would fail its group at every retry. */
static void param_text(struct params *p, int i, const char *s)
{
	p->v[i] = s;
	if (s && !text_utf8_valid(s)) {
		text_escape(p->esc[i], sizeof(p->esc[i]), s);
		p->v[i] = p->esc[i];
	}
}

static void param_i64(struct params *p, int i, int64_t n)
{
	snprintf(p->num[i], sizeof(p->num[i]), "%" PRId64, n);
	p->v[i] = p->num[i];
}

/* 0 (not yet) as NULL. */
static void param_ms(struct params *p, int i, int64_t ms)
{
	if (ms)
		param_i64(p, i, ms);
	else
		p->v[i] = NULL;
}

/* -1 (unknown) as NULL. */
static void param_count(struct params *p, int i, int64_t n)
{
	if (n >= 0)
		param_i64(p, i, n);
	else
		p->v[i] = NULL;
}

/* Runs statement WHICH with P: its result (to PQclear), or NULL with the error said. */
static PGresult *run(struct ledger_pg *l, enum stmt which, const struct params *p,
		     const char *what, int *ret)
{
	PGresult *res;
	ExecStatusType st;

	*ret = pg_ready(l);
	if (*ret < 0)
		return NULL;
	if (l->read_only && stmts[which].writes) {
		snprintf(l->base.error, sizeof(l->base.error),
			 "ledger (PostgreSQL): %s: it is open for reading only", what);
		*ret = -EROFS;
		return NULL;
	}
	res = PQexecPrepared(l->conn, stmts[which].name, stmts[which].n_params, p->v, NULL, NULL,
			     0);
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		*ret = pg_fail(l, res, what);
		PQclear(res);
		return NULL;
	}
	return res;
}

static int pg_outbox_add(struct ledger *base, const struct ledger_event *evs, size_t n)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	int r = 0;

	for (size_t i = 0; r == 0 && i < n; i++) {
		struct params q;

		param_text(&q, 0, evs[i].msg_id);
		param_text(&q, 1, evs[i].channel);
		param_text(&q, 2, evs[i].type);
		param_text(&q, 3, evs[i].payload);
		param_i64(&q, 4, evs[i].created_at_ms);
		PQclear(run(l, STMT_EVENT_ADD, &q, "cannot record a notification", &r));
	}
	return r;
}

static int pg_record(struct ledger *base, const struct ledger_entry *e)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	int r;

	param_text(&p, 0, e->folder);
	param_text(&p, 1, e->file);
	param_i64(&p, 2, e->claimed_at_ms);
	param_i64(&p, 3, (int64_t)e->bytes);
	param_text(&p, 4, e->sha256);
	param_text(&p, 5, e->settings_hash);
	param_i64(&p, 6, e->attempts);
	param_ms(&p, 7, e->uploaded_at_ms);
	param_ms(&p, 8, e->finished_at_ms);
	param_text(&p, 9, e->import_ids);
	param_text(&p, 10, ledger_status_name(e->status));
	param_count(&p, 11, e->total);
	param_count(&p, 12, e->created);
	param_count(&p, 13, e->updated);
	param_count(&p, 14, e->skipped);
	param_count(&p, 15, e->failed);
	param_text(&p, 16, e->error);
	param_text(&p, 17, e->duplicate_of);
	param_text(&p, 18, l->base.host_id[0] ? l->base.host_id : NULL);
	PQclear(run(l, STMT_RECORD, &p, "cannot record a file", &r));
	/* Its end lets its content go: another file of it may be imported now. */
	if (r == 0 && e->finished_at_ms && l->base.host_id[0] && e->sha256[0]) {
		struct params q;

		param_text(&q, 0, e->folder);
		param_text(&q, 1, e->sha256);
		param_text(&q, 2, e->settings_hash);
		param_text(&q, 3, e->file);
		param_text(&q, 4, l->base.host_id);
		PQclear(run(l, STMT_UNRESERVE, &q, "cannot let a content go", &r));
	}
	if (r == 0)
		r = pg_outbox_add(base, e->events, e->n_events);
	return r;
}

static int col_dup(const PGresult *res, int row, int col, char **ret)
{
	*ret = NULL;
	if (PQgetisnull(res, row, col))
		return 0;
	*ret = strdup(PQgetvalue(res, row, col));
	return *ret ? 0 : -ENOMEM;
}

static int64_t col_i64(const PGresult *res, int row, int col, int64_t null_value)
{
	return PQgetisnull(res, row, col) ? null_value : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Row ROW of RES, into *E (in the order of COLUMNS). */
static int read_row(const PGresult *res, int row, struct ledger_entry *e)
{
	memset(e, 0, sizeof(*e));
	if (col_dup(res, row, 0, &e->folder) < 0 || col_dup(res, row, 1, &e->file) < 0 ||
	    col_dup(res, row, 9, &e->import_ids) < 0 || col_dup(res, row, 16, &e->error) < 0 ||
	    col_dup(res, row, 17, &e->duplicate_of) < 0 || col_dup(res, row, 18, &e->host) < 0) {
		ledger_entry_clear(e);
		return -ENOMEM;
	}
	e->claimed_at_ms = col_i64(res, row, 2, 0);
	e->bytes = (uint64_t)col_i64(res, row, 3, 0);
	snprintf(e->sha256, sizeof(e->sha256), "%s", PQgetvalue(res, row, 4));
	snprintf(e->settings_hash, sizeof(e->settings_hash), "%s", PQgetvalue(res, row, 5));
	e->attempts = (unsigned)col_i64(res, row, 6, 0);
	e->uploaded_at_ms = col_i64(res, row, 7, 0);
	e->finished_at_ms = col_i64(res, row, 8, 0);
	if (ledger_status_parse(PQgetvalue(res, row, 10), &e->status) < 0)
		e->status = LEDGER_FAILED;
	e->total = col_i64(res, row, 11, -1);
	e->created = col_i64(res, row, 12, -1);
	e->updated = col_i64(res, row, 13, -1);
	e->skipped = col_i64(res, row, 14, -1);
	e->failed = col_i64(res, row, 15, -1);
	return 0;
}

/* Runs look-up WHICH: its first row into *RET, or -ENOENT. */
static int find_one(struct ledger_pg *l, enum stmt which, const struct params *p,
		    struct ledger_entry *ret)
{
	int r;
	PGresult *res = run(l, which, p, "cannot look up a file", &r);

	if (!res)
		return r;
	r = PQntuples(res) > 0 ? read_row(res, 0, ret) : -ENOENT;
	PQclear(res);
	return r;
}

static int pg_find_imported(struct ledger *base, const char *folder, const char *sha256,
			    const char *settings_hash, int64_t since_ms, struct ledger_entry *ret)
{
	struct params p;

	param_text(&p, 0, folder);
	param_text(&p, 1, sha256);
	param_text(&p, 2, settings_hash);
	param_i64(&p, 3, since_ms);
	return find_one((struct ledger_pg *)base, STMT_FIND_IMPORTED, &p, ret);
}

static int pg_find_unfinished(struct ledger *base, const char *folder, const char *file,
			      const char *sha256, struct ledger_entry *ret)
{
	struct params p;

	param_text(&p, 0, folder);
	param_text(&p, 1, file);
	param_text(&p, 2, sha256);
	return find_one((struct ledger_pg *)base, STMT_FIND_UNFINISHED, &p, ret);
}

static int pg_find_uploaded(struct ledger *base, const char *folder, const char *file,
			    const char *sha256, const char *settings_hash,
			    struct ledger_entry *ret)
{
	struct params p;

	param_text(&p, 0, folder);
	param_text(&p, 1, file);
	param_text(&p, 2, sha256);
	param_text(&p, 3, settings_hash);
	return find_one((struct ledger_pg *)base, STMT_FIND_UPLOADED, &p, ret);
}

static int pg_knows_import(struct ledger *base, const char *import_id, int64_t since_ms)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	int r;

	param_text(&p, 0, import_id);
	param_i64(&p, 1, since_ms);
	res = run(l, STMT_KNOWS_IMPORT, &p, "cannot look up an import", &r);
	if (!res)
		return r;
	r = PQntuples(res) > 0;
	PQclear(res);
	return r;
}

/* Rows one at a time (libpq's single-row mode): a long history is never all in memory. */
static int pg_list(struct ledger *base, const struct ledger_query *q, ledger_list_cb cb,
		   void *data)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	char sql[512];
	int n = 0, r;

	r = pg_ready(l);
	if (r < 0)
		return r;
	param_i64(&p, n++, q->since_ms);
	if (q->folder)
		param_text(&p, n++, q->folder);
	if (q->limit)
		param_i64(&p, n++, (int64_t)q->limit);
	snprintf(sql, sizeof(sql),
		 "SELECT " COLUMNS " FROM files WHERE claimed_at_ms >= $1 %s %s "
		 "ORDER BY claimed_at_ms DESC, id DESC %s",
		 q->folder ? "AND folder = $2" : "", q->failed_only ? "AND status = 'failed'" : "",
		 !q->limit ? "" : q->folder ? "LIMIT $3" : "LIMIT $2");
	if (!PQsendQueryParams(l->conn, sql, n, NULL, p.v, NULL, NULL, 0) ||
	    !PQsetSingleRowMode(l->conn))
		return pg_fail(l, NULL, "cannot list files");
	/* Every result is read, even after CB stops the listing or a row fails: the connection
	 * is free for the next call only then. */
	while ((res = PQgetResult(l->conn))) {
		ExecStatusType st = PQresultStatus(res);

		if (st == PGRES_SINGLE_TUPLE && r == 0) {
			struct ledger_entry e;

			r = read_row(res, 0, &e);
			if (r == 0)
				r = cb(&e, data);
			ledger_entry_clear(&e);
		} else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && r == 0) {
			r = pg_fail(l, res, "cannot list files");
		}
		PQclear(res);
	}
	return r;
}

static const char *const outbox_states[] = {
	[LEDGER_OUTBOX_DELIVERED] = "delivered",
	[LEDGER_OUTBOX_RETRY] = "pending",
	[LEDGER_OUTBOX_DROPPED] = "dropped",
};

static const char *pg_lessee(const struct ledger_pg *l)
{
	return l->base.host_id[0] ? l->base.host_id : "-";
}

static int pg_outbox_next(struct ledger *base, const char *channel, int64_t now_ms,
			  struct ledger_outbox_row *ret, int64_t *ret_next_at_ms,
			  uint64_t *ret_pending, int64_t *ret_oldest_ms)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	int r;

	memset(ret, 0, sizeof(*ret));
	*ret_pending = 0;
	param_text(&p, 0, channel);
	param_text(&p, 1, pg_lessee(l));
	res = run(l, STMT_OUTBOX_HEAD, &p, "cannot read the outbox", &r);
	if (!res)
		return r;
	*ret_pending = (uint64_t)col_i64(res, 0, 0, 0);
	*ret_oldest_ms = col_i64(res, 0, 1, 0);
	if (PQgetisnull(res, 0, 2)) {
		PQclear(res);
		return -ENOENT;
	}
	*ret_next_at_ms = col_i64(res, 0, 2, 0);
	PQclear(res);
	if (*ret_next_at_ms > now_ms)
		return -EAGAIN;
	param_text(&p, 0, channel);
	param_i64(&p, 1, now_ms);
	param_text(&p, 2, pg_lessee(l));
	res = run(l, STMT_OUTBOX_TAKE, &p, "cannot take an event from the outbox", &r);
	if (!res)
		return r;
	if (PQntuples(res) != 1) {
		/* Taken by another host between the two statements. */
		PQclear(res);
		*ret_next_at_ms = now_ms + 1000;
		return -EAGAIN;
	}
	ret->id = col_i64(res, 0, 0, 0);
	ret->ev.created_at_ms = col_i64(res, 0, 5, 0);
	ret->attempts = (unsigned)col_i64(res, 0, 6, 0);
	if (col_dup(res, 0, 1, &ret->ev.msg_id) < 0 || col_dup(res, 0, 2, &ret->ev.channel) < 0 ||
	    col_dup(res, 0, 3, &ret->ev.type) < 0 || col_dup(res, 0, 4, &ret->ev.payload) < 0) {
		ledger_outbox_row_clear(ret);
		r = -ENOMEM;
	}
	PQclear(res);
	return r;
}

static int pg_outbox_settle(struct ledger *base, int64_t id, enum ledger_outbox_outcome how,
			    unsigned attempts, int64_t next_at_ms, const char *error,
			    int64_t now_ms)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	int r;

	param_i64(&p, 0, id);
	param_text(&p, 1, outbox_states[how]);
	param_i64(&p, 2, attempts);
	param_i64(&p, 3, next_at_ms);
	param_text(&p, 4, error);
	param_i64(&p, 5, now_ms);
	PQclear(run(l, STMT_OUTBOX_SETTLE, &p, "cannot record a notification's delivery", &r));
	return r;
}

static int pg_prune(struct ledger *base, int64_t before_ms, uint64_t *ret_n)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	int r;

	param_i64(&p, 0, before_ms);
	res = run(l, STMT_PRUNE, &p, "cannot prune old files", &r);
	if (ret_n)
		*ret_n = res ? strtoull(PQcmdTuples(res), NULL, 10) : 0;
	PQclear(res);
	if (r == 0)
		PQclear(run(l, STMT_OUTBOX_PRUNE, &p, "cannot prune old notifications", &r));
	return r;
}

/* ---- the fleet ---- */

/* The database's clock against this machine's monotonic one. */
static int pg_fleet_clock(struct ledger_pg *l, struct ledger_fleet *ret)
{
	struct timespec a, b;
	PGresult *res;
	int r = 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	res = PQexec(l->conn, "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint");
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		r = pg_fail(l, res, "cannot read the database's clock");
	else
		ret->clock_offset_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10) -
				       ((int64_t)a.tv_sec * 1000 + a.tv_nsec / 1000000 +
					(int64_t)b.tv_sec * 1000 + b.tv_nsec / 1000000) / 2;
	PQclear(res);
	return r;
}

/* Every host's row; the longest pause that a live host other than SELF was told (SELF's own is
 * no news to it). */
static int pg_fleet_hosts(struct ledger_pg *l, const char *self, struct ledger_fleet *ret)
{
	struct params p = {0};
	int n, r;
	PGresult *res = run(l, STMT_HOSTS, &p, "cannot read the fleet's hosts", &r);

	if (!res)
		return r;
	n = PQntuples(res);
	ret->hosts = n ? calloc((size_t)n, sizeof(*ret->hosts)) : NULL;
	if (n && !ret->hosts) {
		PQclear(res);
		return -ENOMEM;
	}
	ret->n_hosts = (size_t)n;
	for (int i = 0; i < n; i++) {
		struct ledger_host *h = &ret->hosts[i];
		int64_t pause;

		snprintf(h->id, sizeof(h->id), "%s", PQgetvalue(res, i, 0));
		h->heartbeat_age_ms = col_i64(res, i, 1, 0);
		h->started_at_ms = col_i64(res, i, 2, 0);
		h->in_flight = (unsigned)col_i64(res, i, 3, 0);
		snprintf(h->state, sizeof(h->state), "%s", PQgetvalue(res, i, 4));
		snprintf(h->taken_over_by, sizeof(h->taken_over_by), "%s", PQgetvalue(res, i, 5));
		h->alive = PQgetvalue(res, i, 6)[0] == 't';
		pause = col_i64(res, i, 7, 0);
		if (h->alive && pause > ret->pause_ms && strcmp(h->id, self) != 0)
			ret->pause_ms = pause;
	}
	PQclear(res);
	return 0;
}

static int pg_fleet_beat(struct ledger *base, const struct ledger_beat *b,
			 struct ledger_fleet *ret)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	int r;

	memset(ret, 0, sizeof(*ret));
	param_text(&p, 0, b->host_id);
	param_i64(&p, 1, (int64_t)(b->instance >> 1)); /* a bigint holds 63 bits */
	param_i64(&p, 2, b->lease_ms);
	param_i64(&p, 3, b->in_flight);
	param_text(&p, 4, b->state);
	param_i64(&p, 5, b->pause_ms);
	res = run(l, b->joining ? STMT_JOIN : STMT_BEAT, &p, "cannot renew this host's lease", &r);
	if (!res)
		return r;
	if (PQntuples(res) == 0) {
		PQclear(res);
		/* Not ours: who has it? */
		res = run(l, STMT_WHO, &p, "cannot read this host's row", &r);
		if (!res)
			return r;
		if (b->joining) {
			snprintf(l->base.error, sizeof(l->base.error),
				 "ledger (PostgreSQL): host '%s' is being taken over by '%s': "
				 "waiting until it has its files", b->host_id,
				 PQntuples(res) ? PQgetvalue(res, 0, 0) : "?");
			PQclear(res);
			return -EBUSY;
		}
		ret->replaced = true;
		if (PQntuples(res) && PQgetvalue(res, 0, 0)[0])
			snprintf(ret->replaced_by, sizeof(ret->replaced_by), "%s",
				 PQgetvalue(res, 0, 0));
		else
			snprintf(ret->replaced_by, sizeof(ret->replaced_by), "%s",
				 PQntuples(res) ? "another daemon with this host_id" : "nobody");
		PQclear(res);
		return 0;
	}
	PQclear(res);
	res = run(l, STMT_TAKE_OVER, &p, "cannot look for hosts to take over", &r);
	if (!res)
		return r;
	if (PQntuples(res) > 0)
		snprintf(ret->take_over, sizeof(ret->take_over), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	r = pg_fleet_hosts(l, b->host_id, ret);
	if (r == 0)
		r = pg_fleet_clock(l, ret);
	if (r < 0)
		ledger_fleet_clear(ret);
	return r;
}

static int pg_fleet_claim(struct ledger *base, const char *host_id, const char *folder,
			  const char *file)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	int r;

	param_text(&p, 0, host_id);
	param_text(&p, 1, folder);
	param_text(&p, 2, file);
	res = run(l, STMT_CLAIM, &p, "cannot claim a file", &r);
	if (!res)
		return r;
	r = PQntuples(res) > 0;
	PQclear(res);
	return r;
}

static int pg_fleet_release(struct ledger *base, const char *host_id, const char *folder,
			    const char *file)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	int r;

	param_text(&p, 0, host_id);
	param_text(&p, 1, folder);
	param_text(&p, 2, file);
	PQclear(run(l, STMT_RELEASE, &p, "cannot release a claim", &r));
	return r;
}

static int pg_fleet_taken_over(struct ledger *base, const char *host_id, const char *dead)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	int r;

	param_text(&p, 0, host_id);
	param_text(&p, 1, dead);
	PQclear(run(l, STMT_DROP_CLAIMS, &p, "cannot drop a host's claims", &r));
	if (r == 0)
		PQclear(run(l, STMT_DROP_HOST, &p, "cannot drop a host", &r));
	return r;
}

static int pg_fleet_reserve(struct ledger *base, const char *folder, const char *file,
			    const char *sha256, const char *settings_hash, struct ledger_entry *ret)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	PGresult *res;
	int r;

	param_text(&p, 0, folder);
	param_text(&p, 1, sha256);
	param_text(&p, 2, settings_hash);
	param_text(&p, 3, file);
	param_text(&p, 4, l->base.host_id);
	res = run(l, STMT_RESERVE, &p, "cannot reserve a content", &r);
	if (!res)
		return r;
	r = PQntuples(res) > 0;
	PQclear(res);
	if (r)
		return 1;
	res = run(l, STMT_HOLDER, &p, "cannot read who imports a content", &r);
	if (!res)
		return r;
	memset(ret, 0, sizeof(*ret));
	if (PQntuples(res) > 0 && (col_dup(res, 0, 0, &ret->file) < 0 ||
				   col_dup(res, 0, 1, &ret->host) < 0)) {
		ledger_entry_clear(ret);
		PQclear(res);
		return -ENOMEM;
	}
	PQclear(res);
	return 0;
}

static int pg_fleet_leave(struct ledger *base, const char *host_id, uint64_t instance,
			  bool empty)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	struct params p;
	int r;

	param_text(&p, 0, host_id);
	param_i64(&p, 1, (int64_t)(instance >> 1));
	param_i64(&p, 2, 0);
	PQclear(run(l, empty ? STMT_LEAVE_EMPTY : STMT_LEAVE, &p, "cannot leave the fleet", &r));
	return r;
}

static int pg_begin(struct ledger *base)
{
	struct ledger_pg *l = (struct ledger_pg *)base;
	int r = pg_ready(l);

	if (r == 0)
		r = pg_exec(l, "BEGIN", "cannot begin a transaction");
	/* A server restarted since the last call: the connection looked fine until now. Made
	 * again at once, so that a restart costs no failed group (nothing was sent in it yet). */
	if (r == -ENOTCONN && (r = pg_ready(l)) == 0)
		r = pg_exec(l, "BEGIN", "cannot begin a transaction");
	return r;
}

static int pg_commit(struct ledger *base)
{
	struct ledger_pg *l = (struct ledger_pg *)base;

	if (!l->ready)
		return pg_fail(l, NULL, "cannot commit");
	/* A write of the group failed: the server keeps none of it, yet its COMMIT succeeds
	 * (saying ROLLBACK). The failed write's error stays in L->error. */
	if (PQtransactionStatus(l->conn) == PQTRANS_INERROR) {
		(void)pg_exec(l, "ROLLBACK", "cannot roll back");
		return -EIO;
	}
	return pg_exec(l, "COMMIT", "cannot commit");
}

static int pg_rollback(struct ledger *base)
{
	struct ledger_pg *l = (struct ledger_pg *)base;

	/* Nothing to roll back on a connection that broke (the server did) or outside a
	 * transaction. */
	if (!l->conn || PQstatus(l->conn) != CONNECTION_OK ||
	    PQtransactionStatus(l->conn) == PQTRANS_IDLE)
		return 0;
	return pg_exec(l, "ROLLBACK", "cannot roll back");
}

static void pg_close(struct ledger *base)
{
	struct ledger_pg *l = (struct ledger_pg *)base;

	if (l->conn)
		PQfinish(l->conn);
	free(l->conninfo);
	free(l);
}

static const struct ledger_ops pg_ops = {
	.name = "postgresql",
	.record = pg_record,
	.find_imported = pg_find_imported,
	.find_unfinished = pg_find_unfinished,
	.find_uploaded = pg_find_uploaded,
	.knows_import = pg_knows_import,
	.list = pg_list,
	.prune = pg_prune,
	.outbox_next = pg_outbox_next,
	.outbox_add = pg_outbox_add,
	.outbox_settle = pg_outbox_settle,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.close = pg_close,
	.fleet_beat = pg_fleet_beat,
	.fleet_claim = pg_fleet_claim,
	.fleet_release = pg_fleet_release,
	.fleet_taken_over = pg_fleet_taken_over,
	.fleet_reserve = pg_fleet_reserve,
	.fleet_leave = pg_fleet_leave,
};

int ledger_pg_conninfo(const char *conninfo, const char *password_file, char **ret)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	char *buf = NULL;
	size_t size = 0;
	FILE *f;

	*ret = NULL;
	if (!opts)
		return -EINVAL;
	f = open_memstream(&buf, &size);
	if (!f) {
		PQconninfoFree(opts);
		return -ENOMEM;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		const char *v = o->val;

		if (strcmp(o->keyword, "passfile") == 0 && password_file)
			v = password_file;
		if (!v)
			continue;
		fprintf(f, "%s%s='", ftell(f) ? " " : "", o->keyword);
		for (; *v; v++) {
			if (*v == '\'' || *v == '\\')
				fputc('\\', f);
			fputc(*v, f);
		}
		fputc('\'', f);
	}
	PQconninfoFree(opts);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	return 0;
}

/* Whether a server answers at all where a connection failed: then it refused this role or
 * database, which waiting will not mend. */
static bool server_answers(struct ledger_pg *l)
{
	const char *values[] = CONN_VALUES(l);

	return PQpingParams(conn_keys, values, 1) == PQPING_OK;
}

/* WHERE is libpq's connection string. A daemon (not READ_ONLY) opens a ledger whose server is
 * unreachable all the same: the ledger's thread connects when it can, and the daemon's intake
 * waits meanwhile. A role that is refused, a database that is missing, a schema from a newer
 * version are errors at once. */
static int ledger_pg_open(const char *where, bool read_only, struct ledger **ret, char *errbuf,
			  size_t errsz)
{
	struct ledger_pg *l = calloc(1, sizeof(*l));
	int r;

	if (!l || !(l->conninfo = strdup(where))) {
		free(l);
		snprintf(errbuf, errsz, "out of memory");
		return -ENOMEM;
	}
	l->base.ops = &pg_ops;
	l->read_only = read_only;
	r = pg_ready(l);
	if (r == 0 || (r == -ENOTCONN && !read_only && !server_answers(l))) {
		*ret = &l->base;
		return 0;
	}
	snprintf(errbuf, errsz, "%s", l->base.error);
	pg_close(&l->base);
	return r;
}

const struct ledger_backend ledger_backend_postgresql = {
	.name = "postgresql",
	.open = ledger_pg_open,
};
