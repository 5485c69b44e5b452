/* Inside the engine: what job.c (a file's state machine) and jobs.c (the engine around it:
 * name index, slots, resume backlog, pauses, the end of a loop turn, drain) share. Not for
 * other modules: they use job.h. */
#ifndef RDD_JOB_INTERNAL_H
#define RDD_JOB_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uthash.h>
#include <uv.h>

#include "diskq.h"
#include "folder.h"
#include "inflight.h"
#include "job.h"
#include "ledgerq.h"
#include "metrics.h"
#include "pacer.h"
#include "precheck.h"
#include "report.h"
#include "resend.h"
#include "staterec.h"

enum job_state {
	JOB_NEW,
	JOB_CLAIMING,
	JOB_CHECKING,
	JOB_LOOKING_UP,
	JOB_DUP_WAIT,
	JOB_QUEUED,
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
	unsigned next;
};

/* The states' table (job.c). */
const struct job_state_info *job_state_info(enum job_state state);

/* How a job ends. */
enum job_end {
	JOB_END_FINISHED,  /* moved to done or failed; counted */
	JOB_END_RELEASED,  /* left in processing for the next start (drain) */
	JOB_END_UNCLAIMED, /* never reached processing (or a dry run) */
};

/* A name in a folder's processing directory that jobs knows of: a job's, or one waiting in the
 * resume backlog. Indexed by name (uthash), so that a namesake is found in O(1). */
struct claimed {
	UT_hash_handle hh;
	struct job *job;      /* NULL while in the backlog */
	struct claimed *prev, *next; /* backlog */
	size_t folder;
	bool indexed;
	char name[];
};

struct folder_rt {
	const struct config_folder *conf;
	char settings_hash[65]; /* config_import_settings_hash: duplicates share it */
	struct inflight_set inflight; /* contents being imported now: their copies wait */
	/* Its directories (the daemon's: they outlive this engine); a directory found replaced is
	 * swapped in place (folder_adopt), see job.c. */
	struct folder *dir;
	struct resend_fields fields;
	struct claimed *names;
	unsigned done, failed;
	/* Loop thread only. Files waiting for their move (FINISH_WAIT), and why the last one
	 * failed; done's [0] and failed's [1] directory problem (fsops_dir_check), 0 when fine. */
	unsigned n_stuck;
	int stuck_error;
	int claim_error; /* why the last claim failed, 0 once one worked */
	int save_error;  /* why the last state record before an upload failed, 0 once one worked */
	bool stuck_failed_dir;
	int dir_problem[2];
	uint64_t dir_adopted[2]; /* the inode last adopted (and said), per directory */
	unsigned n_state[JOB_N_STATES]; /* this folder's share of jobs->n_state */
	struct metrics_folder *metrics; /* NULL: not counted */
	bool paused;                    /* resend-dropd pause: no uploads start */
};

struct job {
	struct jobs *js;
	struct folder_rt *folder;
	size_t folder_index;
	struct claimed *claimed;
	const char *name; /* claimed->name */
	enum job_state state;
	struct job *prev, *next; /* js->jobs */
	struct pacer_entry se;
	struct diskq_op op;
	uv_work_t work;
	struct api_call *call;
	atomic_bool cancel; /* the check stops hashing: a drain */
	int fd;
	bool dry_run, resumed, requeue_front, record_durable, has_seen;
	bool checked; /* the claim's disk work checked the file too */
	/* SAVING writes the attempts made, not the coming one: after a refusal, or a drain. */
	bool record_exact;
	bool record_counts_next; /* the record on disk counts an upload not yet started */
	int record_result;       /* CLAIMING: writing the claim's record */
	bool import_recorded; /* the record on disk holds the import id */
	unsigned record_failures, save_failures; /* said once each */
	struct fsops_seen seen;
	char record_name[STATEREC_NAME_LEN + 1];
	/* ".rejects-" and the record name's hash: the rejects file until it moves with the file */
	char rejects_name[STATEREC_NAME_LEN + 3];
	/* The uploads: rep.parts[part] is the one uploading or next (n_parts when all are);
	 * poll_part the one followed. */
	size_t part, poll_part;
	bool recheck;      /* RETRY_WAIT: the check could not write its copy; check again */
	/* LOOKING_UP: the ledger's look-up (ledgerq_lookup); DUP_WAIT: the content it waits for.
	 * DUPLICATE: the earlier import of the same content, once found. */
	void *lookup;
	struct inflight *holds;      /* its content, as the owner or among the uploaded */
	struct inflight_waiter wait; /* DUP_WAIT: the content it waits for */
	bool holds_uploaded; /* HOLDS counts it among the uploaded */
	bool end_recorded;   /* the ledger has its end (LEDGER_WAIT), before it is moved */
	bool dup_said;       /* its wait was said */
	struct ledger_entry duplicate;
	bool save_durable; /* SAVING: the record holds a part's new import id */
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
	int64_t finished_ms;
	unsigned finish_failures;
	int finish_dir_result; /* job_finish_dir's answer, for the loop */
	uint64_t finish_adopted; /* the directory was re-created: the inode adopted, else 0 */
	bool finish_src_gone;  /* the file left processing behind the daemon's back */
	char idempotency_key[37];
	uint64_t retry_delay_ms, follow_delay_ms, follow_started_ms, finish_delay_ms, save_delay_ms;
	uint64_t upload_started_ms; /* loop ms */
	struct report rep;
};

/* Listing a processing directory at start-up, in the disk thread. */
struct jobs_list {
	struct diskq_op op;
	struct jobs *js;
	size_t folder;
	char **names;
	size_t n;
};

struct jobs {
	uv_loop_t *loop;
	const struct config *cfg;
	struct api *api;
	unsigned flags;
	struct jobs_events events;
	struct folder_rt *folders;
	size_t n_folders;
	struct diskq *dq;
	struct pacer pacer;
	uv_timer_t drain_timer;
	/* End of the loop turn: admission, capacity and idle events, then the disk batch. */
	uv_prepare_t turn;
	struct job *jobs;
	size_t n_jobs;
	unsigned n_state[JOB_N_STATES];
	unsigned holding, max_holding;
	struct claimed *backlog_head; /* utlist */
	size_t backlog;
	unsigned lists_pending;
	bool auth_paused, paused, auth_failed_pending;
	unsigned refusals_in_row; /* answers in a row refusing a request for the rate limit */
	bool draining;
	void (*drained_cb)(void *data);
	void *drained_data;
	unsigned failed_total, done_total;
	struct metrics *metrics; /* the daemon's, NULL: not counted */
	struct ledgerq *lq;      /* the daemon's ledger, NULL: none (duplicates are not looked for) */
	bool ledger_failing;     /* writes fail: no new claims until they work again */
	unsigned open_handles;
	bool closing;
};

/* job.c: the state machine. */
struct job *job_new(struct jobs *js, struct claimed *c);
/* Puts JOB in state TO and starts what TO does; the only place a state changes. */
void job_enter(struct job *job, enum job_state to);
/* A drain lets go of JOB, which only waits: its file stays in processing, with a record that
 * says what was done. */
void job_release(struct job *job);
/* Frees JOB, whose work must all have returned. */
void job_end(struct job *job, enum job_end how);
/* The pacer's events for a job: its time has come; it may upload; it may poll. */
void job_pacer_due(struct pacer_entry *e, void *data);
void job_pacer_upload(struct pacer_entry *e, void *data);
void job_pacer_poll(struct pacer_entry *e, void *data);

/* jobs.c: the engine. */
/* Runs the end-of-turn work (admission, events, the disk batch) before the loop next sleeps. */
void jobs_defer(struct jobs *js);
/* Submits OP to the disk thread; it goes with this turn's batch. */
void jobs_submit_disk(struct jobs *js, struct diskq_op *op);
/* Events go to the daemon only while it runs the pipeline (not while draining or closing). */
bool jobs_events_on(const struct jobs *js);
void jobs_claimed_free(struct jobs *js, struct claimed *c);
void jobs_backlog_push(struct jobs *js, struct claimed *c);
/* Whether folder FOLDER's processing directory holds NAME as far as jobs knows (a job's, or
 * one waiting in the resume backlog). */
bool jobs_knows_name(struct jobs *js, size_t folder, const char *name);

/* Pauses every request after the key (RESEND_AUTH) or the quota (RESEND_QUOTA) refused one. */
void jobs_pause(struct jobs *js, enum resend_class cls, const struct resend_error *e);

static inline int64_t jobs_now_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
