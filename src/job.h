/* A file's life after it settled, as one state machine (job.c), and what the engine (engine.c)
 * and a job share: the states' table, the job, a folder as its jobs see it, and the one small
 * interface through which a job tells the engine what became of it. The engine calls into a
 * job (job_new, job_start, job_resume, job_enter, job_drain, job_abort, job_release, the
 * pacer's events); a job calls nothing of the engine's but through struct job_host. Not for
 * other modules: they use engine.h. */
#ifndef RDD_JOB_H
#define RDD_JOB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "diskq.h"
#include "engine.h"
#include "folder.h"
#include "follow.h"
#include "inflight.h"
#include "ledgerq.h"
#include "metrics.h"
#include "pacer.h"
#include "precheck.h"
#include "reconcile.h"
#include "report.h"
#include "resend.h"
#include "staterec.h"

struct resend_client;
struct resend_call;
struct job_batch;

enum job_state {
	JOB_NEW,
	JOB_CLAIMING,
	JOB_CHECKING,
	JOB_LOOKING_UP,
	JOB_RECONCILING,
	JOB_DUP_WAIT,
	JOB_QUEUED,
	JOB_BATCHING,
	JOB_BATCHED,
	JOB_SAVING,
	JOB_UPLOADING,
	JOB_RETRY_WAIT,
	JOB_RECORDING,
	JOB_FOLLOW_WAIT,
	JOB_POLLING,
	JOB_LEDGER_WAIT,
	JOB_FINISHING,
	JOB_FINISH_WAIT,
	JOB_ENDED,
	JOB_N_STATES
};

struct job_state_info {
	const char *name;
	/* Counts against max_holding: claimed, not yet uploaded; may hold the descriptor. */
	bool holding;
	/* Holds one of the max_in_flight upload slots. */
	bool upload_slot;
	/* Only waits for a queue or a timer: a drain ends it at once. */
	bool waits;
	/* May be entered while draining (the rest ends the job instead). */
	bool in_drain;
	/* The states it may become (a bit per state). */
	unsigned next;
	/* A state that does one thing for several purposes (RECORDING, SAVING, RETRY_WAIT) is
	 * entered with its continuation, job->then: the states that may be (a bit per state; 0:
	 * the state has none). ENDED as a continuation: the file is let go, for the next start. */
	unsigned then;
};

/* What the file's state record on disk says, against what the job knows. */
enum job_record {
	/* Every import made is in it (or none was made, or there is no record yet), and it
	 * counts the uploads made: SAVING comes before the next upload. */
	JOB_RECORD_CURRENT,
	/* The same, and it counts the coming upload as made already (the claim's record, and
	 * SAVING's): the file may upload at once; a file let go before it did is saved again. */
	JOB_RECORD_AHEAD,
	/* An import made is not in it yet: the next write is durable (it holds the import id). */
	JOB_RECORD_BEHIND,
};

/* How a job ends. */
enum job_end {
	JOB_END_FINISHED,  /* moved to done or failed; counted */
	JOB_END_VANISHED,  /* it left processing behind the daemon's back: its name is free */
	JOB_END_RELEASED,  /* left in processing for the next start (drain) */
	JOB_END_UNCLAIMED, /* never reached processing (or a dry run) */
	JOB_END_BUSY,      /* a namesake nobody knew of is in processing: this name waits for it */
};

/* The engine's name for a file in a processing directory (its index entry); opaque here. */
struct claimed;

/* A folder as its jobs see it (the engine owns it, one per configured folder). */
struct job_folder {
	const struct config_folder *conf;
	size_t index;                 /* in the configuration */
	struct folder *dir;           /* its directories, and what is wrong with them (folder.h) */
	char settings_hash[65];       /* resend_settings_hash: duplicates share it */
	struct inflight_set inflight; /* contents being imported now: their copies wait */
	struct resend_fields fields;
	struct metrics_folder *metrics; /* NULL: not counted */
	/* Counted by the engine: jobs per state, and those waiting for their move. */
	unsigned n_state[JOB_N_STATES];
	unsigned n_stuck;
	unsigned done, failed; /* this engine's own; the daemon's counters are in metrics */
	bool paused;           /* resend-dropd pause: no uploads start */
	struct claimed *names; /* the engine's index of what is in processing (uthash) */
};

struct job;

/* What a job tells the engine; DATA is the engine. */
struct job_host {
	/* JOB moved from FROM to TO (the table allowed it): the counters, slots and holding. */
	void (*moved)(void *data, struct job *job, enum job_state from, enum job_state to);
	/* JOB ends HOW and is freed right after: its name, events, counts. */
	void (*ended)(void *data, struct job *job, enum job_end how);
	/* JOB's claim ended HOW (CLAIMED: it is in processing). */
	void (*claimed)(void *data, struct job *job, enum engine_claim how);
	/* OP goes to the disk thread with this turn's batch. */
	void (*disk)(void *data, struct diskq_op *op);
	/* Whether folder FOLDER's processing directory holds NAME, as far as the engine knows. */
	bool (*knows)(void *data, size_t folder, const char *name);
	/* Resend refused the key (RESEND_AUTH) or the quota (RESEND_QUOTA): every request waits. */
	void (*refused)(void *data, enum resend_class cls, const struct resend_error *e);
};

/* What a job works with: the engine's services (not the job's) and its way back. */
struct job_env {
	uv_loop_t *loop;
	const struct config *cfg;
	struct resend_client *api;
	struct pacer *pacer;
	struct follower *follow;
	struct reconciler *reconcile;
	struct ledgerq *lq;      /* NULL: none (duplicates are not looked for) */
	bool ledger_failing;     /* writing to it fails (its thread retries) */
	struct metrics *metrics; /* NULL: not counted */
	bool dry_run;
	bool draining; /* a state that would only wait, or start new work, ends the job instead */
	const struct job_host *host;
	void *data;
};

struct job {
	struct job_env *env;
	struct job_folder *folder;
	struct claimed *claimed; /* the engine's */
	const char *name;        /* the claimed name (the engine's memory) */
	enum job_state state;
	struct job *prev, *next; /* the engine's list */
	struct pacer_entry se;
	struct follow_entry fe; /* FOLLOW_WAIT, POLLING: the import it follows */
	struct reconcile_entry re; /* RECONCILING */
	bool reconciled;
	struct diskq_op op;
	uv_work_t work;
	struct resend_call *call;
	atomic_bool cancel; /* the check stops hashing: a drain */
	int fd;
	/* RECORDING, SAVING, RETRY_WAIT: the state that comes next (job_states[].then). */
	enum job_state then;
	bool dry_run, resumed, requeue_front, record_durable, has_seen;
	bool checked; /* the claim's disk work checked the file too */
	enum job_record rec;
	int record_result; /* CLAIMING: writing the claim's record */
	unsigned record_failures, save_failures; /* said once each */
	struct fsops_seen seen;
	char record_name[STATEREC_NAME_LEN + 1];
	/* ".rejects-" and the record name's hash: the rejects file until it moves with the file */
	char rejects_name[STATEREC_NAME_LEN + 3];
	/* The uploads: rep.parts[part] is the one uploading or next (n_parts when all are);
	 * poll_part the one followed. */
	size_t part, poll_part;
	/* The ledger's operation the job waits for: LOOKING_UP, the look-up (ledgerq_lookup);
	 * LEDGER_WAIT, and RECORDING on its way back there (job_ledger_failing), its end's record
	 * (ledgerq_record_then). DUPLICATE: the earlier import of the same content, once found;
	 * WAIT: in DUP_WAIT, the content it waits for. */
	void *lookup;
	struct inflight *holds;      /* its content, as the owner or among the uploaded */
	struct inflight_waiter wait; /* DUP_WAIT: the content it waits for */
	bool holds_uploaded; /* HOLDS counts it among the uploaded */
	bool end_recorded;   /* the ledger has its end (LEDGER_WAIT), before it is moved */
	bool dup_said;       /* its wait was said */
	struct ledger_entry duplicate;
	unsigned recheck_failures;
	char *record_text; /* SAVING, RECORDING: what the disk thread writes */
	/* CHECKING: written by the worker, read after it returned. */
	struct precheck check;
	int check_result;
	struct staterec record;
	bool record_found;
	/* FINISHING */
	char *report_text;
	char *final_name;
	char *rejects_final; /* the rejects file's name beside the report */
	/* The uploader's receipt (receipts.h): written (or left in the folder's backlog) by the
	 * move's disk work, how that went, and why not. */
	bool receipt_written;
	int receipt_result;
	char receipt_why[400];
	int64_t finished_ms;
	unsigned finish_failures;
	int finish_dir_result; /* job_finish_dir's answer, for the loop */
	uint64_t finish_adopted; /* the directory was re-created: the inode adopted, else 0 */
	bool finish_src_gone;  /* the file left processing behind the daemon's back */
	char idempotency_key[37];
	uint64_t retry_delay_ms, follow_started_ms, finish_delay_ms, save_delay_ms;
	uint64_t upload_started_ms; /* loop ms */
	/* Coalescing: BATCH, the batch a leader sends (owned, in BATCHING and UPLOADING);
	 * LEADER, a member's (BATCHED). SOLO: uploaded on its own from now on (its batch was
	 * refused, or its import failed). */
	struct job_batch *batch;
	struct job *leader;
	bool solo;
	bool rechecked; /* checked again after its batch's import failed: no ledger look-up */
	struct report rep; /* rep.batch: a reference of the job's */
};

/* The states' table. */
const struct job_state_info *job_state_info(enum job_state state);

/* A job for the file the engine calls C (its NAME), in folder F; JOB_NEW. NULL when out of
 * memory. */
struct job *job_new(struct job_env *env, struct job_folder *f, struct claimed *c,
		    const char *name);
/* A settled inbox file (SEEN: as it was then, or NULL): claimed, or checked in place in a dry
 * run. */
void job_start(struct job *job, const struct fsops_seen *seen);
/* A file an earlier run left in processing: checked, then taken on from its record. */
void job_resume(struct job *job);
/* Puts JOB in state TO and starts what TO does; the only place a state changes. */
void job_enter(struct job *job, enum job_state to);
/* The engine drains: a job that only waits is released (its file stays in processing, with a
 * record that says what was done); a check stops hashing; the rest goes on. */
void job_drain(struct job *job);
/* The drain's time is up: an upload or a poll in flight is aborted (the file stays). */
void job_abort(struct job *job);
/* Lets go of JOB, which only waits: its file stays in processing, with its record. */
void job_release(struct job *job);
/* The ledger started failing (env->ledger_failing): a job waiting for it to record its end is
 * let go in a drain; otherwise, if its state record lacks its import, that is written first,
 * so that a crash while the ledger fails does not upload the file again. */
void job_ledger_failing(struct job *job);
/* The pacer's events for a job: its time has come; it may upload. */
void job_pacer_due(struct pacer_entry *e, void *data);
void job_pacer_upload(struct pacer_entry *e, void *data);
/* The follower's events (follow.h) for a job's import: asked about; answered. */
void job_follow_asked(struct follow_entry *e, void *data);
void job_follow_answered(struct follow_entry *e, const struct follow_result *r, void *data);
/* The reconciler's event (reconcile.h) for a resumed job: what became of its last upload. */
void job_reconcile_done(struct reconcile_entry *e, const struct reconcile_result *r, void *data);

static inline int64_t job_now_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
