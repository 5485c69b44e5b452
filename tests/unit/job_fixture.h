/* The engine without the world: the fixture of test_job.c and test_job_ledger.c (each links
 * job_fixture.c in; tests/CMakeLists.txt).
 *
 * The stand-in for the API module: rddcore is a static archive, so the api_* functions of
 * job_fixture.c are the ones the engine (job.c, engine.c) links against and src/resend_client.c is never
 * pulled in (every function of resend_client.h is defined there, so that nothing can pull it in by
 * accident). It records every call (what it would have sent: file name, size, the bytes read
 * through the descriptor with pread as resend_client.c reads them (a part: its head bytes from offset 0,
 * then its rows from its offset), idempotency key, form fields) and answers as the test scripted
 * it, always from a uv_timer, never from inside resend_client_create_import/resend_client_get_import. An answer may
 * be held back until the test releases it, or for ever (the engine then frees the call, which
 * must cancel it).
 *
 * Everything else is real: a struct config from config_load, temporary directories under /tmp,
 * a uv loop, the disk thread, the thread pool. Each test ends by draining the engine, closing it
 * and running the loop until it returns; uv_loop_close() must then be 0 (a leaked handle fails
 * the test) and every API call the engine made must have been freed. A 20 s hang guard fails a
 * test that waits for something that never comes. Assertions run only between uv_run() calls,
 * never inside a callback, so a failure leaves the loop in a state teardown can still close.
 *
 * Every call into the engine's API (engine_new, engine_submit, ...) that a test needs is made here:
 * a test drives the engine through start(), submit(), drain() and finish(). */
#ifndef RDD_TEST_JOB_FIXTURE_H
#define RDD_TEST_JOB_FIXTURE_H

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <uv.h>

#include <cmocka.h>

#include "config.h"
#include "engine.h"
#include "fsops.h"
#include "ledger.h"
#include "ledgerq.h"
#include "resend_client.h"
#include "staterec.h"

#define GUARD_MS 20000
#define FOLDER "news"
#define SEGMENT "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6"
#define TOPIC "059ac693-2fc8-4c13-8b27-01350d638a17"
#define CREATED_AT "2026-11-26T04:01:02.000Z"
#define COMPLETED_AT "2026-11-26T04:01:05.000Z"

/* %s: the temporary root, three times. Small retry delays; no client-side request ceiling. */
#define CONFIG_YAML                                                                                \
	"api:\n"                                                                                   \
	"  base_url: http://127.0.0.1:9\n"                                                         \
	"  max_in_flight: 2\n"                                                                     \
	"  requests_per_second: 0\n"                                                               \
	"retry:\n"                                                                                 \
	"  max_attempts: 3\n"                                                                      \
	"  initial_delay_ms: 10\n"                                                                 \
	"  max_delay_ms: 20\n"                                                                     \
	"defaults:\n"                                                                              \
	"  follow_import: false\n"                                                                 \
	"folders:\n"                                                                               \
	"  - name: " FOLDER "\n"                                                                   \
	"    inbox: %s/in\n"                                                                       \
	"    done: %s/done\n"                                                                      \
	"    failed: %s/failed\n"                                                                  \
	"    on_conflict: skip\n"                                                                  \
	"    column_map:\n"                                                                        \
	"      email: Email\n"                                                                     \
	"      first_name: First Name\n"                                                           \
	"    segments: [" SEGMENT "]\n"                                                            \
	"    topics:\n"                                                                            \
	"      - { id: " TOPIC ", subscription: opt_in }\n"

/* What the folder's settings become on the wire. */
#define WIRE_COLUMN_MAP "{\"email\":\"Email\",\"first_name\":\"First Name\"}"
#define WIRE_SEGMENTS "[{\"id\":\"" SEGMENT "\"}]"
#define WIRE_TOPICS "[{\"id\":\"" TOPIC "\",\"subscription\":\"opt_in\"}]"

static const char CSV_GOOD[] = "Email,First Name\n"
			       "ada@example.com,Ada\n"
			       "bob@example.com,Bob\n"
			       "cy@example.com,Cy\n";
static const char CSV_GOOD_2[] = "Email,First Name\n"
				 "dora@example.com,Dora\n";
static const char CSV_NO_EMAIL[] = "Name,First Name\n"
				   "ada@example.com,Ada\n";

/* ---- the stand-in for resend_client.c ------------------------------------------------------------- */

/* CALL_LIST: GET /contacts/imports (the follower's, with several imports followed). */
enum call_kind { CALL_UPLOAD, CALL_POLL, CALL_LIST };

/* One scripted answer. An all-zero answer is never scripted: see script_upload(). */
struct answer {
	long status;               /* 0: no HTTP answer, TRANSPORT says why */
	const char *transport;
	const char *local;         /* status 0: the file could not be read whole (ours) */
	const char *body;          /* NULL: the usual body (see make_body) */
	const char *import_status; /* polls with BODY NULL: "queued", "in_progress", ... */
	const char *headers[3][2];
	uint64_t delay_ms;
	bool hold; /* no answer until release_call() (or ever) */
};

/* What the stand-in saw of one call; kept after the engine freed it. */
struct call_log {
	enum call_kind kind;
	char filename[256];
	char key[64];
	char import_id[64]; /* the GET's id, or the one the 201 handed out */
	char column_map[256], on_conflict[16], segments[128], topics[160];
	bool has_column_map, has_segments, has_topics;
	uint64_t size;       /* what was sent: HEAD + the part's bytes */
	uint64_t head, from; /* the part: HEAD bytes from 0, then the rest from FROM */
	size_t n_segs;       /* 2: one file; more: coalesced files */
	/* Read through the descriptor when the call was made and again when it was answered. */
	bool read_ok, read_ok_at_answer;
	char sha256[65], sha256_at_answer[65];
	char *sent; /* what was read when the call was made (freed by teardown); NULL if unread */
	unsigned made_seq, answered_seq; /* the stand-in's order of events */
	uint64_t made_ms, answered_ms;
	long status; /* as answered */
	bool answered, freed;
	struct resend_call *call; /* NULL once freed */
};

struct resend_client {
	int unused;
};

struct resend_call {
	size_t n;  /* F.calls[n] */
	struct resend_segment *segs; /* an upload's, copied */
	size_t n_segs;
	struct answer ans;
	char *body;
	resend_call_cb cb;
	void *data;
	uv_timer_t timer;
	bool freed;
};

/* ---- the fixture ------------------------------------------------------------------------- */

#define MAX_CALLS 512
#define MAX_SCRIPT 16
#define MAX_EVENTS 512
#define MAX_PARKED 64
#define MAX_KEEP 64

enum ev_kind { EV_CLAIMED, EV_LEFT, EV_AUTH_FAILED };

struct event {
	enum ev_kind kind;
	char name[128];
	enum engine_claim how;
	unsigned seq;
	/* EV_LEFT: where the file was when the event came. */
	bool in_processing, in_done, in_failed;
};

struct fixture {
	char root[64];
	char inbox[128], proc[160], done[128], failed[128];
	struct config *cfg;
	uv_loop_t loop;
	bool loop_open;
	uv_timer_t guard, sleeper;
	bool hung, slept;
	bool loop_stuck; /* a handle stayed open: the loop is abandoned */
	struct resend_client api;
	struct engine *js;
	struct folder *dirs[4]; /* the folders' directories, as the daemon holds them */
	/* The ledger: a test sets LEDGER (a backend of its own) before start(), which runs its
	 * thread (LQ) as daemon.c does, and gives it to the engine; a drain closes the thread
	 * once the engine is closed, so that every record queued is written (or given up). */
	struct ledger *ledger;
	struct ledgerq *lq;
	unsigned n_ledger_failing, n_ledger_recovered; /* what the thread told the loop */
	bool draining, drained;

	/* Events, in order; idle and capacity only counted (they come at most turns). */
	struct event events[MAX_EVENTS];
	size_t n_events;
	unsigned seq, n_idle, last_idle_seq, n_capacity;
	bool in_submit;
	unsigned events_in_submit, events_after_drain;

	/* Files the watch would hold back after ENGINE_LATER, offered again at `capacity`. */
	char *parked[MAX_PARKED];
	size_t n_parked;
	int successes_at_first_capacity; /* -1: no capacity event while something was parked */
	unsigned accepted_at_capacity;

	/* The stand-in. */
	struct call_log calls[MAX_CALLS];
	size_t n_calls, live_calls;
	unsigned stub_errors;
	unsigned stub_seq;
	struct answer upload_script[MAX_SCRIPT], poll_script[MAX_SCRIPT];
	size_t n_upload_script, n_poll_script, upload_next, poll_next;
	unsigned polls_in_progress; /* default polls: this many "in_progress" per import first */

	/* Logs. */
	FILE *log;
	char *log_buf;
	size_t log_len;
	uv_thread_t main_thread;

	/* Undone by teardown whatever happens. */
	bool immutable;
	char immutable_path[128];
	bool nofile_lowered;
	struct rlimit nofile;
	void *keep[MAX_KEEP];
	size_t n_keep;
	cJSON *json[MAX_KEEP];
	size_t n_json;
	bool finished, skipped;
};

extern struct fixture F;

/* ---- small helpers: files, hashes, logs -------------------------------------------------- */

/* P, freed by teardown; fails the test when NULL. */
void *keep(void *p);
/* Something a RUN_UNTIL condition may look at has changed (see job_fixture.c). */
void wake(void);
void sha256_hex(const void *data, size_t len, char out[65]);
void path_of(char *buf, size_t size, const char *dir, const char *name);
void put_file(const char *dir, const char *name, const void *data, size_t len);
/* NAME in the inbox, with TEXT. */
void put_csv(const char *name, const char *text);
/* DIR/NAME whole, NUL-terminated, malloc'd; NULL when it does not exist. slurp: the same,
 * freed by teardown. */
char *read_whole(const char *dir, const char *name, size_t *ret_len);
char *slurp(const char *dir, const char *name, size_t *ret_len);
void text_sha256(const char *text, char out[65]);
bool exists_in(const char *dir, const char *name);
/* Entries of DIR (dotfiles too) whose names start with PREFIX and end with SUFFIX. */
size_t count_entries(const char *dir, const char *prefix, const char *suffix);
/* The one entry of DIR that starts with PREFIX and ends with SUFFIX (kept); fails otherwise. */
char *the_entry(const char *dir, const char *prefix, const char *suffix);

enum place { IN_INBOX = 1, IN_PROCESSING = 2, IN_DONE = 4, IN_FAILED = 8 };

unsigned places_of(const char *name);
const char *places_str(unsigned p);
#define assert_only_in(name, place) assert_only_in_at(__FILE__, __LINE__, name, place)
void assert_only_in_at(const char *file, int line, const char *name, unsigned place);

/* Every log line of the test, in order. */
const char *log_text(void);
unsigned log_count(const char *needle);
void dump_log(void);

/* ---- reports and records ------------------------------------------------------------------ */

/* DIR/NAME.json parsed (freed by teardown). */
cJSON *report(const char *dir, const char *name);
const cJSON *jget(const cJSON *o, const char *key);
const char *jstr(const cJSON *o, const char *key);
double jnum(const cJSON *o, const char *key);
bool jnull(const cJSON *o, const char *key);
const cJSON *jobj(const cJSON *o, const char *key);
/* The state record of processing/NAME; false when there is none, or none whole. */
bool read_record(const char *name, struct staterec *ret);
void write_record(const char *name, const struct staterec *s);

/* ---- the stand-in's answers and calls ------------------------------------------------------ */

void script_upload(struct answer a);
void script_poll(struct answer a);
/* Answers held call N now, with ANS. */
void release_call(size_t n, struct answer ans);
size_t n_uploads(void);
/* Follow-up requests: reads of one import, and pages of the list (n_lists). */
size_t n_polls(void);
size_t n_lists(void);
/* The Ith upload (0-based). */
const struct call_log *upload(size_t i);
size_t uploads_of(const char *filename);
size_t polls_of(const char *import_id);
unsigned successful_uploads(void);
/* The upload carried FILE's bytes (as they are in DIR now), its name, its key and the folder's
 * settings, and could still read them when its answer came. */
void assert_upload_of(const struct call_log *l, const char *dir, const char *name,
		      const char *filename);

/* ---- the engine's events, and driving it as daemon.c does ---------------------------------- */

size_t count_events(enum ev_kind kind, const char *name);
/* The Ith event of KIND for NAME (NULL: any name). */
const struct event *event_of(enum ev_kind kind, const char *name, size_t i);
/* As the watch offers a settled file: with its size and mtime from stat. */
enum engine_submit submit(const char *name);
/* NAME is held back as the watch holds a file after ENGINE_LATER, offered again at `capacity`. */
void park(const char *name);
void loop_open(void);
void run_once_or_fail(const char *file, int line, const char *what);

#define RUN_UNTIL(cond)                                                                            \
	do {                                                                                       \
		while (!(cond))                                                                    \
			run_once_or_fail(__FILE__, __LINE__, #cond);                               \
	} while (0)

/* Lets the loop run for MS (loop time). */
void run_for(uint64_t ms);
/* The folders' directories and the engine (with F.ledger's thread, when there is one), as
 * daemon.c starts them; FLAGS: enum engine_flags. */
void start(unsigned flags);
/* As daemon.c stops: the engine drains within TIMEOUT_MS, then is closed with the folders. */
void drain(uint64_t timeout_ms);
/* Drains the engine (unless a drain is already under way), lets it close, and runs the loop
 * until it returns: then uv_loop_close() must be 0. */
void stop_and_close_loop(void);
/* A second start of the daemon on the same folders. */
void restart(void);
/* Every test ends here: what held for the whole run. */
void finish(void);

/* ---- FS_IMMUTABLE_FL: a directory or file even root cannot write into ------------------- */

/* Skips the test when the filesystem or the user cannot; teardown clears it. */
void make_immutable(const char *path);
void clear_immutable(void);

/* ---- setup and teardown --------------------------------------------------------------------- */

int setup(void **state);
int teardown(void **state);

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

#endif
