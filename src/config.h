/* Configuration: YAML file -> struct config, with every error reported at its position. */
#ifndef RDD_CONFIG_H
#define RDD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_UUID_LEN 36
#define CONFIG_PROPERTY_KEY_MAX 50
#define CONFIG_MAX_FILE_SIZE (4u * 1024 * 1024) /* the YAML file itself */

enum config_on_conflict { CONFIG_ON_CONFLICT_UPSERT, CONFIG_ON_CONFLICT_SKIP };
enum config_prop_type { CONFIG_PROP_STRING, CONFIG_PROP_NUMBER, CONFIG_PROP_BOOLEAN };
enum config_subscription { CONFIG_SUB_OPT_IN, CONFIG_SUB_OPT_OUT };
enum config_log_level { CONFIG_LOG_ERROR, CONFIG_LOG_WARNING, CONFIG_LOG_INFO, CONFIG_LOG_DEBUG };
enum config_log_format { CONFIG_LOG_TEXT, CONFIG_LOG_JSON };
/* csv.encoding: what a file without a byte-order mark is read as. AUTO: UTF-8 when it is valid
 * UTF-8, else windows-1252. */
enum config_encoding {
	CONFIG_ENCODING_AUTO,
	CONFIG_ENCODING_UTF8,
	CONFIG_ENCODING_WINDOWS_1252,
	CONFIG_ENCODING_ISO_8859_1,
	CONFIG_ENCODING_ISO_8859_15,
	CONFIG_ENCODING_UTF16,
};
/* csv.header: EXACT, column_map names must equal header names; RELAXED, they match ignoring
 * case and surrounding whitespace. */
enum config_header { CONFIG_HEADER_EXACT, CONFIG_HEADER_RELAXED };
/* invalid_rows: what becomes of rows that fail the row checks. */
enum config_invalid_rows {
	CONFIG_INVALID_ROWS_DROP,     /* left out of the upload, listed in the rejects file */
	CONFIG_INVALID_ROWS_IMPORT,   /* uploaded as they are, listed all the same */
	CONFIG_INVALID_ROWS_FAIL_FILE /* any such row fails the whole file at check */
};
/* on_duplicate: what becomes of a file whose content (sha256) and import settings (see
 * resend_settings_hash) match a file already imported in the same folder within
 * duplicate_window. */
enum config_on_duplicate {
	CONFIG_ON_DUPLICATE_SKIP,   /* to done with a report naming the earlier import; no API call */
	CONFIG_ON_DUPLICATE_IMPORT, /* imported again all the same */
	CONFIG_ON_DUPLICATE_FAIL    /* to failed, nothing uploaded */
};
/* coalesce: whether files of a folder that wait for the rate budget or an upload slot go out
 * together, as one import. */
enum config_coalesce {
	CONFIG_COALESCE_AUTO, /* they do, within the caps; a lone file goes at once, alone */
	CONFIG_COALESCE_OFF   /* one import per file (per part) */
};

/* How a folder's CSV files are read (`csv:`). */
struct config_csv {
	char delimiter; /* '\0': auto; else one of , ; \t | */
	enum config_encoding encoding;
	enum config_header header;
};

struct config_property {
	char *key;    /* Resend property key: [A-Za-z0-9_]{1,50} */
	char *column; /* CSV header */
	enum config_prop_type type;
};

/* Any of the column fields may be NULL. present == false: no column_map, the CSV must use
 * Resend's own header names. */
struct config_column_map {
	bool present;
	char *email;
	char *first_name;
	char *last_name;
	char *unsubscribed;
	struct config_property *properties;
	size_t n_properties;
};

struct config_topic {
	char id[CONFIG_UUID_LEN + 1];
	enum config_subscription subscription;
};

/* The keys of `defaults:`, each of which a folder may override. */
struct config_settings {
	uint64_t settle_ms;
	uint64_t rescan_s;
	char *pattern;
	uint64_t max_file_bytes;
	enum config_on_conflict on_conflict;
	bool follow_import;
	/* One request's ceiling: bigger files are split into parts on row boundaries, each at
	 * most this big with its header. */
	uint64_t max_upload_bytes;
	struct config_csv csv;
	enum config_invalid_rows invalid_rows;
	enum config_on_duplicate on_duplicate;
	/* How far back the ledger is searched for an earlier import of the same content, in
	 * seconds; 0: forever. */
	uint64_t duplicate_window_s;
	/* Files that wait go out together (one CSV, one import), at most this many files and
	 * rows, and max_upload_bytes. */
	enum config_coalesce coalesce;
	uint64_t coalesce_max_files;
	uint64_t coalesce_max_rows;
};

/* Receipts for the uploader: each file's outcome as NAME.ok.json or NAME.failed.json (and
 * NAME.rejects.csv) in a directory the uploader can read. */
struct config_receipts {
	char *dir;          /* absolute; NULL: no receipts */
	uid_t uid;          /* (uid_t)-1: the daemon's */
	gid_t gid;          /* (gid_t)-1: the daemon's */
	mode_t mode;        /* of each receipt file */
	uint64_t keep_ms;   /* removed by the daemon once older (0: kept) */
};

struct config_folder {
	char *name;
	struct config_receipts receipts;
	char *inbox;
	char *done;
	char *failed;
	struct config_column_map column_map;
	char (*segments)[CONFIG_UUID_LEN + 1];
	size_t n_segments;
	struct config_topic *topics;
	size_t n_topics;
	struct config_settings settings; /* defaults with this folder's overrides applied */
};

struct config_api {
	char *base_url; /* without a trailing slash */
	char *api_key_env;  /* NULL: neither this nor api_key_file, the default chain (apikey.h) */
	char *api_key_file;
	char *user_agent_suffix;
	uint64_t max_in_flight;
	/* The most requests a second the daemon spends, whatever Resend announces (0: no
	 * ceiling of its own). */
	double requests_per_second;
	/* The share of the team's announced limit (ratelimit-limit) the daemon spends: other apps
	 * of the same team spend the rest. */
	double rate_share;
	uint64_t connect_timeout_s;
	uint64_t request_timeout_s;
	char *ca_file;
	uint64_t shutdown_timeout_s;
};

struct config_retry {
	uint64_t max_attempts;
	uint64_t initial_delay_ms;
	uint64_t max_delay_ms;
};

/* The control socket (status, metrics, commands) and the optional TCP metrics listener. */
#define CONFIG_CONTROL_SOCKET_DIR "/run/resend-dropd"
#define CONFIG_CONTROL_SOCKET_DEFAULT CONFIG_CONTROL_SOCKET_DIR "/control.sock"
struct config_control {
	char *socket; /* absolute path of the AF_UNIX socket; NULL: where control_path.h says */
};
struct config_metrics {
	char *listen_host; /* NULL: no TCP listener; else a numeric address or "localhost" */
	uint16_t listen_port;
	bool allow_remote;
};

/* The ledger's directory (SQLite, local disk only); systemd's StateDirectory=resend-dropd. */
#define CONFIG_STATE_DIR_DEFAULT "/var/lib/resend-dropd"
#define CONFIG_STATE_DIR_MAX 1024 /* bytes, so that the ledger's own file names fit after it */

/* The ledger: SQLite in state_dir (one host, the default), or PostgreSQL (a fleet, several
 * hosts on one inbox). */
enum config_ledger_backend { CONFIG_LEDGER_SQLITE, CONFIG_LEDGER_POSTGRESQL };
struct config_ledger {
	enum config_ledger_backend backend;
	/* PostgreSQL: libpq's connection string ("host=/run/postgresql dbname=resend_dropd" or
	 * a postgresql:// URI), never with a password in it. */
	char *conninfo;
	/* PostgreSQL: a password file in libpq's format (host:port:db:user:password, mode 0600),
	 * for password authentication; NULL: libpq's own (PGPASSFILE, ~/.pgpass), or none. */
	char *password_file;
};

/* A fleet: several daemons, one per host, serving the same folders through the PostgreSQL
 * ledger. Present only with that ledger. */
#define CONFIG_HOST_ID_MAX 63
struct config_fleet {
	char *host_id;          /* [A-Za-z0-9._-], at most CONFIG_HOST_ID_MAX; default: the hostname */
	uint64_t heartbeat_ms;  /* how often this host renews its lease */
	uint64_t lease_ms;      /* how long a host is alive without a heartbeat */
};

/* Notifications (webhooks): what a file's end tells whom. An event type's bit. */
enum config_event {
	CONFIG_EVENT_FILE_DONE = 1 << 0,     /* "file.done": imported, or skipped as a duplicate */
	CONFIG_EVENT_FILE_FAILED = 1 << 1,   /* "file.failed" */
	CONFIG_EVENT_ROWS_REJECTED = 1 << 2, /* "rows.rejected": a file imported without some rows */
	CONFIG_EVENT_FOLDER_STUCK = 1 << 3,  /* "folder.stuck": a folder cannot be served */
	CONFIG_EVENT_KEY_REFUSED = 1 << 4,   /* "api_key.refused": every upload waits */
	CONFIG_EVENT_INTAKE_PAUSED = 1 << 5, /* "intake.paused": no new file is taken (the ledger) */
	CONFIG_EVENT_INTAKE_RESUMED = 1 << 6, /* "intake.resumed" */
	CONFIG_EVENT_ALL = (1 << 7) - 1,
};
#define CONFIG_WEBHOOK_NAME_MAX 63
/* Where notifications go and when, whatever the kind of receiver: its name (its queue in the
 * outbox, "KIND:NAME"), the events and folders it hears of, and its attempts. */
struct config_notify {
	char *name;           /* [A-Za-z0-9._-], at most CONFIG_WEBHOOK_NAME_MAX */
	unsigned events;      /* enum config_event bits */
	char **folders;       /* the folders whose files it hears of; NULL: every folder */
	size_t n_folders;
	uint64_t timeout_ms;  /* one attempt */
	uint64_t retry_first_ms, retry_max_ms; /* the backoff: doubling from first to max */
	uint64_t give_up_ms;  /* an event not delivered after this long is given up (said) */
};

/* A receiver of signed webhooks (the Standard Webhooks specification). */
struct config_webhook {
	struct config_notify n;
	char *url;            /* https://, or http:// to a loopback host */
	char *secret_file;    /* the secret's file ("whsec_..."), or NULL with secret_credential */
	char *secret_credential; /* a systemd credential's name, or NULL */
	unsigned char *secret;   /* the signing key (whsec_'s base64 decoded); wiped at free */
	size_t secret_len;
};

/* A command run for each event: argv (no shell), the event on stdin and in the environment. */
struct config_hook {
	struct config_notify n;
	char **argv;          /* argv[0] an absolute path; NULL-terminated */
	size_t argc;
	char *user;           /* who runs it: NULL, the daemon's user (never root: then nobody) */
	uid_t uid;            /* resolved from user, or (uid_t)-1 */
	gid_t gid;
};

/* E-mail through Resend itself (POST /emails, the daemon's key): each event it wants as one
 * e-mail, and a daily digest of the last 24 hours. */
#define CONFIG_EMAIL_TO_MAX 50 /* Resend's limit on recipients */
#define CONFIG_EMAIL_EVENTS_DEFAULT \
	(CONFIG_EVENT_FILE_FAILED | CONFIG_EVENT_FOLDER_STUCK | CONFIG_EVENT_INTAKE_PAUSED)
struct config_email {
	struct config_notify n;
	char *from;           /* "addr@domain" or "Name <addr@domain>", of a domain verified at Resend */
	char **to;            /* 1 to CONFIG_EMAIL_TO_MAX addresses */
	size_t n_to;
	int digest_minute;    /* the daily digest's local time, minutes after midnight; -1: none */
};

struct config {
	char *path;
	struct config_api api;
	struct config_retry retry;
	struct config_settings defaults;
	enum config_log_level log_level;
	enum config_log_format log_format;
	struct config_control control;
	struct config_metrics metrics;
	char *state_dir;           /* absolute path, without a trailing slash (but "/") */
	uint64_t ledger_keep_days; /* ledger rows older than this are pruned; 0: kept forever */
	struct config_ledger ledger;
	struct config_fleet fleet; /* host_id NULL: one host (SQLite) */
	struct config_webhook *webhooks;
	size_t n_webhooks;
	struct config_hook *hooks;
	size_t n_hooks;
	struct config_email *emails;
	size_t n_emails;
	struct config_folder *folders;
	size_t n_folders;
	/* The API key, from where api_key_env or api_key_file say, else from the default chain
	 * (apikey.h). Never logged; wiped on free. Where it came from, for the start-up line. */
	char *api_key;
	char api_key_source[600];
};

/* Every problem found in one load, in file order, each "file:line:column: key: message". */
struct config_errors {
	char **items;
	size_t count;
};

enum config_load_flags {
	/* Skip the API key source check (used by tests of unrelated rules). */
	CONFIG_LOAD_NO_API_KEY = 1 << 0,
	/* A folder directory that cannot be looked at (missing, say) is no error here: the daemon
	 * sets each folder up itself, and one that cannot be is "unavailable", the others served
	 * (folder.h). --check reports it. */
	CONFIG_LOAD_DIRS_LATER = 1 << 1,
	/* A configuration with errors is returned all the same (-EINVAL and *ret_config), with
	 * what could be read and defaults for the rest: only to find where a running daemon is
	 * (its control socket, state_dir, folders), never to run one. */
	CONFIG_LOAD_KEEP_ON_ERROR = 1 << 2,
};

/* Parses and validates PATH. On success returns 0 and *ret_config, and errs is untouched.
 * Otherwise returns -EINVAL (or the negative errno that made the file unreadable) with every
 * problem found appended to errs. */
int config_load(const char *path, unsigned flags, struct config **ret_config,
		struct config_errors *errs);
void config_free(struct config *config);

void config_errors_clear(struct config_errors *errs);
/* Adds one more (a problem found beyond the file itself: a folder a reload cannot set up). */
int config_errors_add(struct config_errors *errs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A value's name as the configuration writes it; NULL for a value not of its enum. */
const char *config_on_conflict_name(enum config_on_conflict v);
const char *config_prop_type_name(enum config_prop_type v);
const char *config_subscription_name(enum config_subscription v);
const char *config_encoding_name(enum config_encoding v);       /* "auto", "utf-8", ... */
const char *config_header_name(enum config_header v);           /* "exact", "relaxed" */
const char *config_invalid_rows_name(enum config_invalid_rows v); /* "drop", ... */
const char *config_on_duplicate_name(enum config_on_duplicate v); /* "skip", "import", "fail" */
/* "file.done", "file.failed", "rows.rejected", "folder.stuck", ... for one bit; NULL
 * otherwise. */
const char *config_event_name(enum config_event v);
void config_webhook_clear(struct config_webhook *w);
void config_hook_clear(struct config_hook *h);
void config_email_clear(struct config_email *m);
/* Whether receiver N hears of folder FOLDER's files (its folders, or every folder). */
bool config_notify_hears_of(const struct config_notify *n, const char *folder);
/* Whether receiver N hears of event EV of folder FOLDER. */
bool config_notify_wants(const struct config_notify *n, enum config_event ev,
			 const char *folder);
const char *config_coalesce_name(enum config_coalesce v);         /* "auto", "off" */
const char *config_ledger_backend_name(enum config_ledger_backend v); /* "sqlite", ... */

/* A duration as the configuration writes it (duplicate_window) and `history --since` takes
 * it: digits followed by one unit, s (seconds), m (minutes), h (hours), d (days) or w (weeks),
 * as in 90m, 12h, 30d; or a bare 0. No sign, spaces or fractions. Returns 0 and
 * *ret_seconds, or -EINVAL for anything else, including more than INT64_MAX seconds (so that
 * "now - duration" cannot overflow a time_t). What 0 means is the caller's (for
 * duplicate_window: forever). */
int config_parse_duration(const char *s, uint64_t *ret_seconds);
/* What an error message says is expected, for callers that report a bad duration. */
#define CONFIG_DURATION_EXPECTED "a duration like 30d, 12h or 0 (forever)"

/* Validators shared with other modules. */
bool config_is_uuid(const char *s);
bool config_is_host_id(const char *s); /* [A-Za-z0-9._-]{1,63}, not "." or ".." */
bool config_is_property_key(const char *s);
/* True when the host of an http(s) URL is a loopback name or address. */
bool config_url_host_is_loopback(const char *url);

#endif
