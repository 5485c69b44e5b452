/* The import ledger: what became of every file the daemon took, kept for duplicates, for
 * recovery after a crash, and for `resend-dropd history`. A narrow, synchronous interface:
 * record, look up, list, prune. The daemon calls it from one thread of its own (ledgerq.h),
 * never from the loop; the history command calls it directly. The interface's own code is
 * ledger.c; SQLite (ledger_sqlite.c) is the embedded backend; another (a database server shared
 * by several hosts) is another file with its struct ledger_ops and one line in ledger.c's table,
 * and nothing else changes. */
#ifndef RDD_LEDGER_H
#define RDD_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LEDGER_FILE_NAME "ledger.sqlite"

enum ledger_status {
	LEDGER_CLAIMED,  /* taken into processing, not uploaded */
	LEDGER_UPLOADED, /* an import exists (every part's, when split), not finished */
	LEDGER_DONE,     /* imported: moved to done */
	LEDGER_FAILED,   /* moved to failed */
	LEDGER_SKIPPED,  /* a duplicate of an earlier import: moved to done, nothing sent */
	LEDGER_N_STATUSES
};

/* ---- the notification outbox ------------------------------------------------------------
 * An event to deliver on a channel ("webhook:NAME", ...), written in the same transaction as the
 * file's entry that caused it: a file's end and its notifications are recorded together or not
 * at all. MSG_ID is the event's key, unique across channels and stable across attempts (a
 * receiver's de-duplication key); recording it again changes nothing. */
struct ledger_event {
	char *msg_id, *channel, *type, *payload; /* payload: the JSON body */
	int64_t created_at_ms;
};

/* An event waiting on its channel, as outbox_next hands it out. */
struct ledger_outbox_row {
	int64_t id; /* the order of delivery within the channel */
	struct ledger_event ev;
	unsigned attempts; /* made before this one */
};

/* How an attempt ended: delivered, to be tried again at NEXT_AT_MS, or given up. */
enum ledger_outbox_outcome { LEDGER_OUTBOX_DELIVERED, LEDGER_OUTBOX_RETRY, LEDGER_OUTBOX_DROPPED };

void ledger_event_clear(struct ledger_event *ev);
void ledger_outbox_row_clear(struct ledger_outbox_row *r);

/* One file, from its claim to its end. FOLDER, FILE and CLAIMED_AT_MS are its key: recording an
 * entry again replaces what was recorded for it. Strings are owned by whoever filled the entry
 * (ledger_entry_clear frees what the ledger filled in). */
struct ledger_entry {
	char *folder, *file;
	int64_t claimed_at_ms;
	uint64_t bytes;
	char sha256[65];        /* "" when not known (a file refused before it was read) */
	char settings_hash[65]; /* resend_settings_hash of the folder, "" when unknown */
	unsigned attempts;
	int64_t uploaded_at_ms, finished_at_ms; /* 0: not yet */
	char *import_ids;       /* in part order, comma-separated; NULL: none */
	enum ledger_status status;
	int64_t total, created, updated, skipped, failed; /* the import's counts; -1: unknown */
	char *error;            /* "stage: message"; NULL when none */
	char *duplicate_of;     /* SKIPPED, or failed as a duplicate: the earlier file; else NULL */
	char *host;             /* the host that took it (a fleet's ledger); NULL: not said */
	/* Notifications recorded with this entry (the outbox); owned like the strings. */
	struct ledger_event *events;
	size_t n_events;
};

struct ledger_query {
	const char *folder; /* NULL: every folder */
	int64_t since_ms;   /* claimed at or after; 0: from the start */
	bool failed_only;
	size_t limit;       /* 0: no limit */
};

/* Called for each entry listed, newest first; a non-zero return stops the listing with it. */
typedef int (*ledger_list_cb)(const struct ledger_entry *e, void *data);

struct ledger;

/* ---- a fleet: several hosts on one shared ledger (PostgreSQL) -------------------------------
 * Each host has a row with a lease it renews (its heartbeat, by the database's clock); a host
 * whose lease expired is taken over by exactly one live host. A file of a shared inbox is
 * claimed in the database before it is renamed into a host's processing directory. */
#define LEDGER_HOST_ID_MAX 63

struct ledger_host {
	char id[LEDGER_HOST_ID_MAX + 1];
	int64_t heartbeat_age_ms; /* since its last heartbeat, by the database's clock */
	int64_t started_at_ms;    /* wall clock (the database's) */
	unsigned in_flight;       /* files it held at its last heartbeat */
	char state[16];           /* "running", "stopped" (a clean stop left files), ... */
	char taken_over_by[LEDGER_HOST_ID_MAX + 1]; /* "" when none */
	bool alive;               /* its lease runs */
};

/* What a host says at each heartbeat. */
struct ledger_beat {
	const char *host_id;
	uint64_t instance;  /* this run's random number: two daemons with one host_id are told */
	int64_t lease_ms;
	unsigned in_flight;
	const char *state;
	bool joining;       /* the first heartbeat of this run */
	int64_t pause_ms;   /* Resend told this host to wait this long (a 429): all hosts wait */
};

/* What it hears back. HOSTS is malloc'd (ledger_fleet_clear). */
struct ledger_fleet {
	struct ledger_host *hosts;
	size_t n_hosts;
	/* A host whose lease expired, now this host's to take over ("": none). */
	char take_over[LEDGER_HOST_ID_MAX + 1];
	/* This host's row was taken over, or belongs to another daemon with the same host_id:
	 * this run must stop (BY says who). */
	bool replaced;
	char replaced_by[LEDGER_HOST_ID_MAX + 1];
	int64_t pause_ms; /* the longest pause a live host other than this one was told */
	/* The database's clock minus this machine's monotonic clock (CLOCK_MONOTONIC, libuv's),
	 * in ms, read in the middle of one round trip: the clock the hosts' turns share. */
	int64_t clock_offset_ms;
};

void ledger_fleet_clear(struct ledger_fleet *f);

struct ledger_ops {
	const char *name;
	/* Records E (inserted, or replacing the entry of its key). */
	int (*record)(struct ledger *l, const struct ledger_entry *e);
	/* The latest entry of FOLDER imported (DONE) from content SHA256 under SETTINGS_HASH and
	 * finished at or after SINCE_MS (0: ever), into *RET. -ENOENT when there is none. */
	int (*find_imported)(struct ledger *l, const char *folder, const char *sha256,
			     const char *settings_hash, int64_t since_ms, struct ledger_entry *ret);
	/* The latest entry of FOLDER, of another file than FILE, with content SHA256 under
	 * SETTINGS_HASH, uploaded (an import exists) and not finished: a file of the same
	 * content whose import is still being followed, or was when a daemon stopped. -ENOENT. */
	int (*find_uploaded)(struct ledger *l, const char *folder, const char *file,
			     const char *sha256, const char *settings_hash,
			     struct ledger_entry *ret);
	/* The latest entry of FOLDER/FILE with content SHA256 that has not finished. -ENOENT. */
	int (*find_unfinished)(struct ledger *l, const char *folder, const char *file,
			       const char *sha256, struct ledger_entry *ret);
	/* 1 when a file uploaded at or after SINCE_MS has IMPORT_ID among its imports, else 0;
	 * or a negative errno. */
	int (*knows_import)(struct ledger *l, const char *import_id, int64_t since_ms);
	int (*list)(struct ledger *l, const struct ledger_query *q, ledger_list_cb cb, void *data);
	/* Removes entries that finished before BEFORE_MS, and delivered (or given up)
	 * notifications made before it; *RET_N says how many entries. */
	int (*prune)(struct ledger *l, int64_t before_ms, uint64_t *ret_n);
	/* The outbox. The oldest undelivered event of CHANNEL into *RET (0) when it is due at
	 * NOW_MS (and, in a fleet, no other live host has it in hand: it is this host's for a
	 * while); -EAGAIN with *RET_NEXT_AT_MS when it is not due yet or another host has it;
	 * -ENOENT when none waits. *RET_PENDING: how many wait on CHANNEL, the oldest made at
	 * *RET_OLDEST_MS (0: none). */
	int (*outbox_next)(struct ledger *l, const char *channel, int64_t now_ms,
			   struct ledger_outbox_row *ret, int64_t *ret_next_at_ms,
			   uint64_t *ret_pending, int64_t *ret_oldest_ms);
	/* Events that are no file's (a folder stuck, the key refused, ...), recorded on their own
	 * (ignored when their msg_id is there already). */
	int (*outbox_add)(struct ledger *l, const struct ledger_event *evs, size_t n);
	/* The attempt at event ID ended as HOW: ATTEMPTS made in all, NEXT_AT_MS for a retry,
	 * ERROR the failure, in a sentence (NULL: the last one recorded stays). Idempotent. */
	int (*outbox_settle)(struct ledger *l, int64_t id, enum ledger_outbox_outcome how,
			     unsigned attempts, int64_t next_at_ms, const char *error,
			     int64_t now_ms);
	/* Writes go in groups: begin, records, commit (one sync for many files). */
	int (*begin)(struct ledger *l);
	int (*commit)(struct ledger *l);
	int (*rollback)(struct ledger *l);
	void (*close)(struct ledger *l);
	/* A fleet's operations; NULL in a backend for one host (SQLite). The heartbeat: B into
	 * this host's row (joining: made or taken back; -EBUSY while another live host is still
	 * taking this one over), and the fleet's state into *RET. */
	int (*fleet_beat)(struct ledger *l, const struct ledger_beat *b, struct ledger_fleet *ret);
	/* FOLDER/FILE claimed for HOST_ID: 1 when it is this host's (now or already), 0 when
	 * another host's. */
	int (*fleet_claim)(struct ledger *l, const char *host_id, const char *folder,
			   const char *file);
	/* The claim is over (the file was renamed into processing, or could not be). */
	int (*fleet_release)(struct ledger *l, const char *host_id, const char *folder,
			     const char *file);
	/* HOST_ID took DEAD's files over: DEAD's claims and row go. */
	int (*fleet_taken_over)(struct ledger *l, const char *host_id, const char *dead);
	/* Content SHA256 of FOLDER under SETTINGS_HASH is being imported from FILE by this host
	 * (l->host_id): 1 when it is (now, or already), 0 when another file or live host has it
	 * (*RET: its file and host), so that one content is never in flight twice in the fleet.
	 * Recording a file's end (finished_at_ms set) lets its content go. */
	int (*fleet_reserve)(struct ledger *l, const char *folder, const char *file,
			     const char *sha256, const char *settings_hash, struct ledger_entry *ret);
	/* A clean stop: the row goes when nothing is left in processing (EMPTY), else it stays
	 * "stopped" so that another host takes the files over when its lease ends. */
	int (*fleet_leave)(struct ledger *l, const char *host_id, uint64_t instance, bool empty);
};

struct ledger {
	const struct ledger_ops *ops;
	char error[512]; /* the last failure, in a sentence, for a log line */
	/* The host this daemon is in a fleet (recorded with each file); "" when none. */
	char host_id[LEDGER_HOST_ID_MAX + 1];
};

/* Opens the ledger in STATE_DIR (SQLite: STATE_DIR/ledger.sqlite, created with its schema, or
 * migrated forward). READ_ONLY: for reading only, while a daemon may be writing (history).
 * A negative errno with ERRBUF saying what and where: -EREMOTE a network filesystem, -EBADMSG
 * a file that is not a ledger (or is damaged), -EPROTO one of a newer schema than this
 * version knows, or what the open or the directory failed with. */
int ledger_open(const char *state_dir, bool read_only, struct ledger **ret, char *errbuf,
		size_t errsz);
/* The same with the backend named (ledger.c lists them; ledger_open takes the first, SQLite)
 * and WHERE what that backend takes (SQLite: the state directory). -EINVAL: no such backend. */
int ledger_open_backend(const char *backend, const char *where, bool read_only,
			struct ledger **ret, char *errbuf, size_t errsz);

static inline int ledger_record(struct ledger *l, const struct ledger_entry *e)
{
	return l->ops->record(l, e);
}

static inline int ledger_find_imported(struct ledger *l, const char *folder, const char *sha256,
				       const char *settings_hash, int64_t since_ms,
				       struct ledger_entry *ret)
{
	return l->ops->find_imported(l, folder, sha256, settings_hash, since_ms, ret);
}

static inline int ledger_find_uploaded(struct ledger *l, const char *folder, const char *file,
				       const char *sha256, const char *settings_hash,
				       struct ledger_entry *ret)
{
	return l->ops->find_uploaded(l, folder, file, sha256, settings_hash, ret);
}

static inline int ledger_find_unfinished(struct ledger *l, const char *folder, const char *file,
					 const char *sha256, struct ledger_entry *ret)
{
	return l->ops->find_unfinished(l, folder, file, sha256, ret);
}

static inline int ledger_knows_import(struct ledger *l, const char *import_id,
				      int64_t since_ms)
{
	return l->ops->knows_import(l, import_id, since_ms);
}
static inline int ledger_list(struct ledger *l, const struct ledger_query *q, ledger_list_cb cb,
			      void *data)
{
	return l->ops->list(l, q, cb, data);
}

static inline int ledger_prune(struct ledger *l, int64_t before_ms, uint64_t *ret_n)
{
	return l->ops->prune(l, before_ms, ret_n);
}

static inline int ledger_outbox_next(struct ledger *l, const char *channel, int64_t now_ms,
				     struct ledger_outbox_row *ret, int64_t *ret_next_at_ms,
				     uint64_t *ret_pending, int64_t *ret_oldest_ms)
{
	return l->ops->outbox_next(l, channel, now_ms, ret, ret_next_at_ms, ret_pending,
				   ret_oldest_ms);
}

static inline int ledger_outbox_settle(struct ledger *l, int64_t id,
				       enum ledger_outbox_outcome how, unsigned attempts,
				       int64_t next_at_ms, const char *error, int64_t now_ms)
{
	return l->ops->outbox_settle(l, id, how, attempts, next_at_ms, error, now_ms);
}

static inline void ledger_close(struct ledger *l)
{
	if (l)
		l->ops->close(l);
}

const char *ledger_status_name(enum ledger_status s); /* "claimed", "uploaded", ... */
int ledger_status_parse(const char *s, enum ledger_status *ret);
void ledger_entry_clear(struct ledger_entry *e);
/* A deep copy of SRC (every string duplicated); -ENOMEM. */
int ledger_entry_copy(struct ledger_entry *dst, const struct ledger_entry *src);

/* Whether a filesystem of type F_TYPE (statfs) is a network one, on which SQLite's WAL is not
 * safe; *RET_NAME its name then. */
bool ledger_fs_is_network(long f_type, const char **ret_name);

/* A backend: its name and how it opens WHERE (SQLite: a state directory). Each backend file
 * defines one (ledger_sqlite.c: ledger_backend_sqlite), and ledger.c lists them: the backend
 * is reached through this and struct ledger_ops only, and calls back nothing but the
 * helpers above (the smtpd queue_backend.c / queue_fs.c shape). */
struct ledger_backend {
	const char *name;
	int (*open)(const char *where, bool read_only, struct ledger **ret, char *errbuf,
		    size_t errsz);
};

/* SQLite, ledger_open's default: the file ledger.sqlite in the state directory, refused on a
 * network filesystem. */
extern const struct ledger_backend ledger_backend_sqlite;
/* PostgreSQL, for a fleet: WHERE is libpq's connection string (ledger_pg.c). */
extern const struct ledger_backend ledger_backend_postgresql;
/* CONNINFO (key=value or a URI) as key=value, with PASSWORD_FILE (NULL: none) as its passfile:
 * the WHERE of the PostgreSQL backend. *RET is the caller's. -EINVAL (not a connection
 * string), -ENOMEM. */
int ledger_pg_conninfo(const char *conninfo, const char *password_file, char **ret);

#endif
