/* A file's life after it settled, as one state machine. The states, what each may become and
 * what each holds are the table job_states[] below; job_enter() is the only place where a job's
 * state changes: it refuses a move the table does not allow, keeps every counter, and starts
 * the new state's work. Where each state waits: (D) the disk thread, (P) the thread pool,
 * (A) the API, (S) the pacer's queues and its one timer, (L) the ledger's thread.
 *
 *   inbox                                    processing (found there at start)
 *     | engine_submit                          |
 *     v                                        v
 *   CLAIMING (D) ---------------------->  CHECKING (P) ------------- bad file ----------+
 *     | lease test, rename,                |   |   |                                     |
 *     | record counting the first upload   |   |   +-- record with an import id ---+     |
 *     |                                    |   | resumed                           |     |
 *     +-- gone, changed, busy --> ENDED    |   v                                   |     |
 *                                          |  SAVING (D) <--------------+          |     |
 *                                claimed   |   | record counts the      | key or   |     |
 *                                          v   v coming upload          | quota    |     |
 *                                         QUEUED (S) <------------------|-- refused|     |
 *                                          | a slot and a token         |          |     |
 *                                          v                            |          |     |
 *                RETRY_WAIT (S) <------ UPLOADING (A) ------------------+          |     |
 *                  | (to SAVING)           | 201             \ failed for good     |     |
 *                                          v                  +------------------+ |     |
 *              follow_import:  RECORDING (D) -- import id made durable          | |     |
 *                                          |                                     | |     |
 *                                          v                                     | |     |
 *                                    FOLLOW_WAIT (S) <----------------------------|-+     |
 *                                     | due, a token  ^ still running            |       |
 *                                     v               |                          |       |
 *                                    POLLING (A) -----+                          |       |
 *                                     | done or failed       201, no follow:     |       |
 *                                     v                      straight here       v       v
 *                                    FINISHING (D) <---------------------------------------
 *                                     | report, move, fsync          ^
 *                                     v                              | the move failed for
 *                                   ENDED (done/ or failed/)   FINISH_WAIT (S)  a while
 *
 * With a ledger (ledgerq.h), three more states:
 *  - LOOKING_UP (L), after the check: a file whose content was imported in this folder within
 *    duplicate_window goes to FINISHING as a duplicate (skipped, or failed); one resumed takes
 *    the import ids the ledger has for it; otherwise on to SAVING or QUEUED as the diagram says;
 *  - DUP_WAIT (S), from LOOKING_UP (or UPLOADING, before anything is sent): another file of the
 *    same content is being imported; asked again once it ends (and every 10 s);
 *  - LEDGER_WAIT (L), on the way to FINISHING: the ledger records how the file ended before it
 *    moves. It counts against max_holding: a ledger slower than the uploads holds new claims
 *    back instead of letting finished files pile up in memory.
 *
 * Coalescing (batch.h), two more: when QUEUED is granted its upload, the files of its folder
 * waiting behind it that can share its import join it:
 *  - the granted one becomes the leader, BATCHING (it holds the upload slot): every member's
 *    record names the batch, durably, before the request; then UPLOADING carries one header
 *    and each member's rows;
 *  - each other one is BATCHED (holding its descriptor: the request reads its rows) until the
 *    leader's answer, which each then takes as its own (RECORDING, FOLLOW_WAIT ...); a refusal
 *    that may be one file's fault puts them all back in the queue, each to go alone;
 *  - an import of a batch that ends failed sends its files again alone: POLLING -> CHECKING.
 * After a crash, one more (reconcile.h): a resumed file whose record says an upload may have
 * begun, and holds no import, is RECONCILING after its look-up: Resend's list decides whether
 * an import it made is adopted (RECORDING then FOLLOW_WAIT, or FINISHING) or the file is
 * uploaded (QUEUED).
 * FOLLOW_WAIT and POLLING are the follower's (follow.h): it asks about many imports at once
 * and tells each file.
 *
 * RECORDING, SAVING and RETRY_WAIT each serve several purposes: each is entered with its
 * continuation (job->then), which the table's last column lists and job_set_state checks, so
 * "SAVING then QUEUED" and "SAVING then ENDED" are two legal paths the table shows, not a flag.
 * What the state record on disk says is one field, job->rec (job.h: current, ahead of the
 * attempts made by the coming upload, or behind an import made); SAVING and RECORDING act on
 * it, and it decides whether a file let go is saved or recorded first.
 *
 * More moves than the diagram shows:
 *  - a record that cannot be saved before an upload (a full disk) is tried again:
 *    SAVING -> RETRY_WAIT then SAVING; nothing is uploaded before it is down;
 *  - a check that could not write its copy runs again: RETRY_WAIT then CHECKING;
 *  - a file of at most 256 KiB is checked by the claim's own disk work, and goes from CLAIMING
 *    where CHECKING would have sent it (QUEUED, or FINISHING when it is refused);
 *  - a file whose move failed goes through RECORDING first (FINISHING -> RECORDING then
 *    FINISH_WAIT) when its import is not on disk yet, and a followed file whose import could
 *    not be recorded tries again between polls (POLLING -> RECORDING then FOLLOW_WAIT);
 *  - while the ledger fails, a file whose end waits for it has its import recorded first
 *    (RECORDING then LEDGER_WAIT), and a drain does not wait for that ledger;
 *  - a drain lets a file go (ENDED, its file stays in processing) through SAVING when its
 *    record counts the upload it was waiting for (SAVING then ENDED: the record says what was
 *    made), and through RECORDING when its record lacks an import (RECORDING then ENDED).
 *
 * In a drain, a state that would only wait, or start new work, ends the job instead: its file
 * stays in processing with its record for the next start. Disk work and checks run to their end
 * (a check stops hashing at once); uploads and polls get shutdown_timeout_s.
 *
 * Ownership: a job owns its descriptor (open from the check until the upload succeeded), at most
 * one API call, and at most one piece of work in the disk thread or the thread pool. It owns no
 * libuv handle, so it is freed as soon as it ends, which happens only when none of its work is
 * outstanding. */
#include "job.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utlist.h>
#include <xxhash.h>

#include "api_answer.h"
#include "events.h"
#include "receipts.h"
#include "log.h"
#include "resend_client.h"
#include "scrub.h"
#include "text.h"

#define JOB_FOLLOW_LIMIT_MS (24ull * 60 * 60 * 1000)
#define JOB_FINISH_FIRST_MS 1000
#define JOB_FINISH_MAX_MS 60000
/* Files up to this size are checked by the disk thread with their claim (hashing 256 KiB takes
 * about half a millisecond); bigger ones in the thread pool, beside the batches. */
#define JOB_INLINE_CHECK_BYTES (256 * 1024)

#define S(x) (1u << JOB_##x)
#define S1(state) (1u << (state))

/* Columns: name; holding (counts against max_holding); upload_slot; waits (a drain ends it at
 * once); in_drain (may be entered while draining); the states it may become; for a state entered
 * with a continuation (job->then), the continuations it may have. */
static const struct job_state_info job_states[JOB_N_STATES] = {
	[JOB_NEW] = {"new", false, false, false, false, S(CLAIMING) | S(CHECKING) | S(ENDED), 0},
	[JOB_CLAIMING] = {"claiming", true, false, false, false,
			  S(CHECKING) | S(LOOKING_UP) | S(QUEUED) | S(SAVING) | S(RETRY_WAIT) |
				  S(FINISHING) | S(LEDGER_WAIT) | S(ENDED),
			  0},
	[JOB_CHECKING] = {"checking", true, false, false, false,
			  S(LOOKING_UP) | S(RECONCILING) | S(SAVING) | S(QUEUED) | S(RETRY_WAIT) | S(FOLLOW_WAIT) |
				  S(FINISHING) | S(LEDGER_WAIT) | S(ENDED),
			  0},
	[JOB_LOOKING_UP] = {"looking up", true, false, true, false,
			    S(RECONCILING) | S(SAVING) | S(QUEUED) | S(FOLLOW_WAIT) | S(FINISHING) | S(LEDGER_WAIT) |
				    S(DUP_WAIT) | S(RECORDING) | S(ENDED),
			    0},
	/* Resumed, its last upload maybe made: Resend's list says (reconcile.h). */
	[JOB_RECONCILING] = {"reconciling", true, false, true, false,
			     S(QUEUED) | S(SAVING) | S(RECORDING) | S(FINISHING) | S(LEDGER_WAIT) |
				     S(ENDED),
			     0},
	[JOB_DUP_WAIT] = {"waiting for its duplicate", true, false, true, false,
			  S(LOOKING_UP) | S(SAVING) | S(ENDED), 0},
	/* The record before an upload (it counts that upload; durable when it holds a part's new
	 * import), or the attempts made when a file is let go or refused: then queued, or let go. */
	[JOB_SAVING] = {"saving", true, false, false, true,
			S(QUEUED) | S(SAVING) | S(RETRY_WAIT) | S(ENDED), S(QUEUED) | S(ENDED)},
	[JOB_QUEUED] = {"queued", true, false, true, false,
			S(UPLOADING) | S(BATCHING) | S(BATCHED) | S(SAVING) | S(ENDED), 0},
	/* Granted an upload, with other waiting files joining it (coalescing): every member's
	 * record names the batch before the request goes. */
	[JOB_BATCHING] = {"sending a batch", true, true, false, false,
			  S(UPLOADING) | S(RETRY_WAIT) | S(SAVING) | S(FINISHING) | S(LEDGER_WAIT) |
				  S(ENDED),
			  0},
	/* In another file's batch: waits for its answer (it reads this file's rows). */
	[JOB_BATCHED] = {"in a batch", true, false, false, false,
			 S(QUEUED) | S(SAVING) | S(RETRY_WAIT) | S(RECORDING) | S(FINISHING) |
				 S(LEDGER_WAIT) | S(ENDED),
			 0},
	[JOB_UPLOADING] = {"uploading", true, true, false, false,
			   S(RECORDING) | S(FINISHING) | S(LEDGER_WAIT) | S(RETRY_WAIT) | S(SAVING) |
				   S(QUEUED) | S(DUP_WAIT) | S(ENDED),
			   0},
	/* A failed upload or save is saved again; a check that could not write is run again. */
	[JOB_RETRY_WAIT] = {"waiting to retry", true, false, true, false,
			    S(SAVING) | S(CHECKING) | S(RECORDING) | S(ENDED), S(SAVING) | S(CHECKING)},
	/* An import made durable in the record: before it is followed, while its move waits, before
	 * its end waits for a ledger that fails, or before the file is let go. */
	[JOB_RECORDING] = {"recording", false, false, false, true,
			   S(FOLLOW_WAIT) | S(FINISH_WAIT) | S(LEDGER_WAIT) | S(ENDED),
			   S(FOLLOW_WAIT) | S(FINISH_WAIT) | S(LEDGER_WAIT) | S(ENDED)},
	[JOB_FOLLOW_WAIT] = {"following", false, false, true, false,
			     S(POLLING) | S(RECORDING) | S(ENDED), 0},
	/* An import of a batch that failed: its files are checked again and uploaded each alone
	 * (CHECKING). */
	[JOB_POLLING] = {"polling", false, false, false, false,
			 S(FOLLOW_WAIT) | S(RECORDING) | S(FINISHING) | S(LEDGER_WAIT) | S(CHECKING) |
				 S(ENDED),
			 0},
	[JOB_LEDGER_WAIT] = {"recording its end", true, false, false, true,
			     S(FINISHING) | S(RECORDING) | S(ENDED), 0},
	[JOB_FINISHING] = {"finishing", false, false, false, true,
			   S(FINISH_WAIT) | S(RECORDING) | S(ENDED), 0},
	[JOB_FINISH_WAIT] = {"waiting to move", false, false, true, false,
			     S(FINISHING) | S(LEDGER_WAIT) | S(RECORDING) | S(ENDED), 0},
	[JOB_ENDED] = {"ended", false, false, false, true, 0, 0},
};

/* job_enter: a state entered without a continuation. */
#define JOB_NO_THEN JOB_N_STATES

const struct job_state_info *job_state_info(enum job_state state)
{
	return &job_states[state];
}

static void job_check_result(struct job *job);
static void job_enter_then(struct job *job, enum job_state to, enum job_state then);
static void job_continue(struct job *job);
static void job_follow_on(struct job *job);
static void job_end(struct job *job, enum job_end how);
static int job_ledger_record(struct job *job, enum ledger_status status,
			     void (*written)(void *data));

/* A wait that doubles from FIRST_MS up to MAX_MS; *D holds the last one (0: none yet). */
static uint64_t job_next_delay(uint64_t *d, uint64_t first_ms, uint64_t max_ms)
{
	*d = *d ? *d * 2 : first_ms;
	if (*d > max_ms)
		*d = max_ms;
	return *d;
}

static const char *job_folder_name(const struct job *job)
{
	return job->folder->conf->name;
}

/* JOB holds an import its state record lacks, and did not just try to write it there (a
 * RECORDING that failed goes on to its continuation all the same). */
static bool job_import_unrecorded(const struct job *job)
{
	return job->rec == JOB_RECORD_BEHIND && job->state != JOB_RECORDING;
}

/* The record says which parts were imported (some were, and it is not behind): it stays until
 * the file is moved, and the report is staged beside it. */
static bool job_record_holds_import(const struct job *job)
{
	return job->rec != JOB_RECORD_BEHIND && job->part > 0;
}

static void job_emit_claimed(struct job *job, enum engine_claim how)
{
	job->env->host->claimed(job->env->data, job, how);
}

/* ---- the state machine ----------------------------------------------------------------- */

struct job *job_new(struct job_env *env, struct job_folder *f, struct claimed *c,
		    const char *name)
{
	struct job *job = calloc(1, sizeof(*job));

	if (!job)
		return NULL;
	job->env = env;
	job->folder = f;
	job->claimed = c;
	job->name = name;
	job->state = JOB_NEW;
	job->fd = -1;
	job->check.fd = -1;
	job->dry_run = env->dry_run;
	atomic_init(&job->cancel, false);
	pacer_entry_init(&job->se, f->index);
	job->rep.folder = f->conf->name;
	job->rep.file = job->name;
	staterec_name(job->record_name, job->name);
	snprintf(job->rejects_name, sizeof(job->rejects_name), ".rejects-%s",
		 job->record_name + strlen(".state-"));
	job->check.norm.fd = -1;
	return job;
}

void job_start(struct job *job, const struct fsops_seen *seen)
{
	if (seen) {
		job->seen = *seen;
		job->has_seen = true;
	}
	job_enter(job, job->dry_run ? JOB_CHECKING : JOB_CLAIMING);
}

void job_resume(struct job *job)
{
	job->resumed = true;
	job->rep.claimed_at_ms = job_now_wall_ms();
	job_enter(job, JOB_CHECKING);
}

/* The only place a state changes. Refuses what the table does not allow (a bug: logged, and
 * the job is left where it was): a move the state's row does not list, a state that takes a
 * continuation entered without one of its own (THEN), and a state left for one of its
 * continuations other than the one it was given (ENDED is always a way out). Lets go of what
 * the old state held that the new one does not (the descriptor, the upload slot) and tells the
 * engine, which keeps the counters. */
static bool job_set_state(struct job *job, enum job_state to, enum job_state then)
{
	struct job_env *env = job->env;
	const struct job_state_info *from = &job_states[job->state], *next = &job_states[to];
	enum job_state was = job->state;
	bool ok = from->next & S1(to);

	if (next->then)
		ok = ok && then < JOB_N_STATES && (next->then & S1(then));
	if (from->then && (from->then & S1(to)) && to != JOB_ENDED)
		ok = ok && to == job->then;
	if (!ok) {
		log_error("%s: '%s': internal error: no way from %s%s%s to %s%s%s",
			  job_folder_name(job), job->name, from->name,
			  from->then ? " then " : "",
			  from->then && job->then < JOB_N_STATES ? job_states[job->then].name : "",
			  next->name, next->then ? " then " : "",
			  next->then && then < JOB_N_STATES ? job_states[then].name : "");
		return false;
	}
	job->state = to;
	job->then = next->then ? then : JOB_NO_THEN;
	if (from->holding && !next->holding) {
		/* Uploaded, finished or gone: the descriptor goes. */
		if (job->fd >= 0)
			close(job->fd);
		job->fd = -1;
		if (job->check.norm.fd >= 0)
			close(job->check.norm.fd);
		job->check.norm.fd = -1;
	}
	if (from->upload_slot && !next->upload_slot)
		pacer_slot_free(env->pacer);
	/* Following no more (recording its import between questions is part of following). */
	if (job->fe.imp && to != JOB_FOLLOW_WAIT && to != JOB_POLLING &&
	    !(to == JOB_RECORDING && then == JOB_FOLLOW_WAIT))
		follow_remove(env->follow, &job->fe);
	env->host->moved(env->data, job, was, to);
	return true;
}

/* How the file was split, in 16 hex digits: a restart that splits it otherwise (other
 * settings) must not take the parts recorded for parts of the same number. */
static void job_plan_fingerprint(const struct job *job, char out[17])
{
	const struct normalize *n = &job->check.norm;
	XXH3_state_t *st = XXH3_createState();
	uint64_t h = 0;

	if (st && XXH3_64bits_reset(st) == XXH_OK) {
		(void)XXH3_64bits_update(st, &n->head_bytes, sizeof(n->head_bytes));
		(void)XXH3_64bits_update(st, &n->normalized, sizeof(n->normalized));
		for (size_t i = 0; i < n->n_parts; i++)
			(void)XXH3_64bits_update(st, &n->parts[i], sizeof(n->parts[i]));
		h = XXH3_64bits_digest(st);
	}
	XXH3_freeState(st);
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* The state record's text. Before a file waits for its next upload (the claim's record, and
 * SAVING) it counts that upload as made already: a crash during it must count it, so that a
 * file that kills every upload cannot retry for ever (a crash while it still waits counts one
 * too many, which is harmless). Otherwise (COUNT_NEXT false: after a refusal, when a drain
 * releases a queued file, once an import exists) it says what was made. False when out of
 * memory. */
static bool job_prepare_record(struct job *job, bool count_next)
{
	struct staterec s;
	char plan[17] = "";

	if (job->rep.n_parts > 1)
		job_plan_fingerprint(job, plan);
	/* When a request carrying it may begin (for reconciliation after a crash): from now, when
	 * the record counts the coming upload; none, when a record brings the count back. */
	if (count_next)
		job->rep.sent_at_ms = job_now_wall_ms();
	else if (job->state == JOB_SAVING && job->rec == JOB_RECORD_AHEAD)
		job->rep.sent_at_ms = 0;
	if (staterec_from_report(&job->rep, job->rep.attempts + (count_next ? 1 : 0), plan, &s) <
	    0)
		return false;
	job->record_text = staterec_encode(job->name, &s);
	staterec_clear(&s);
	return job->record_text != NULL;
}

/* ---- CLAIMING: the disk thread moves the file into processing -------------------------- */

static void job_claim_work(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	struct job_folder *f = job->folder;

	op->result = fsops_claim(f->dir->inbox_fd, f->dir->proc_fd, job->name,
				 job->has_seen ? &job->seen : NULL);
	if (op->result < 0)
		return;
	op->sync_gained = f->dir->proc_fd;
	op->sync_lost = f->dir->inbox_fd;
	/* The record that counts the first upload comes with the claim: one trip to the disk
	 * less per file. (Its sha256 is not known yet; a record is only compared with the
	 * content when it was there before the claim, and this one overwrites any such.) */
	job->record_result = job_prepare_record(job, true)
				     ? fsops_write_record(f->dir->proc_fd, job->record_name,
							  job->record_text, strlen(job->record_text),
							  false)
				     : -ENOMEM;
	/* A small file is checked here too: hashing it costs less than a trip through the
	 * thread pool and back. */
	if (job->has_seen && job->seen.size <= JOB_INLINE_CHECK_BYTES) {
		job->check_result = precheck_run(f->dir->proc_fd, job->name, f->conf, f->dir->proc_fd,
						 job->rejects_name, &job->cancel, &job->check);
		job->checked = true;
	}
}

static void job_claim_done(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	int r = op->result;

	cJSON_free(job->record_text);
	job->record_text = NULL;
	if (r == 0 && job->folder->dir->trouble.claim_error) {
		log_info("%s: files can be claimed from '%s' again", job_folder_name(job),
			 job->folder->conf->inbox);
		job->folder->dir->trouble.claim_error = 0;
	}
	switch (r) {
	case 0:
		if (op->sync_result < 0)
			log_warning("%s: '%s' claimed, but the processing directory could not be "
				    "synced: %s",
				    job_folder_name(job), job->name, strerror(-op->sync_result));
		/* Without it, the record is written again before the upload (SAVING). */
		job->rec = job->record_result == 0 ? JOB_RECORD_AHEAD : JOB_RECORD_CURRENT;
		job_emit_claimed(job, ENGINE_CLAIMED);
		/* Queued before the file's look-up, and in its transaction: a file is never
		 * uploaded before the ledger knows it was claimed. */
		(void)job_ledger_record(job, LEDGER_CLAIMED, NULL);
		if (job->checked)
			job_check_result(job);
		else
			job_enter(job, JOB_CHECKING);
		return;
	case -ENOENT:
		job_emit_claimed(job, ENGINE_GONE);
		break;
	case -EAGAIN:
		log_debug("%s: '%s' changed or is still open for writing; waiting for it to settle",
			  job_folder_name(job), job->name);
		job_emit_claimed(job, ENGINE_CHANGED);
		break;
	case -EEXIST:
		/* A namesake nobody knew of is in processing (put there by hand, say): the engine
		 * resumes it like anything an earlier run left, and takes this one after it. */
		log_info("%s: '%s' waits: a file of that name is in processing",
			 job_folder_name(job), job->name);
		job_emit_claimed(job, ENGINE_BUSY);
		job_end(job, JOB_END_BUSY);
		return;
	default:
		/* Said once for the folder, not for every file and try: the cause (an inbox or a
		 * processing directory that cannot be written) is the folder's. */
		if (job->folder->dir->trouble.claim_error != r)
			log_event(LOG_LEVEL_ERROR,
				  &(struct log_fields){LOG_ID_CLAIM_FAILED, job_folder_name(job),
						       job->name, NULL, NULL},
				  "%s: cannot claim '%s' from '%s': %s; files stay in the inbox and "
				  "claims are tried again until one works",
				  job_folder_name(job), job->name, job->folder->conf->inbox,
				  strerror(-r));
		else
			log_debug("%s: cannot claim '%s' yet: %s", job_folder_name(job), job->name,
				  strerror(-r));
		job->folder->dir->trouble.claim_error = r;
		job_emit_claimed(job, ENGINE_CLAIM_FAILED);
		break;
	}
	job_end(job, JOB_END_UNCLAIMED);
}

/* ---- CHECKING: the thread pool opens, hashes and checks it ----------------------------- */

static void job_check_work(uv_work_t *req)
{
	struct job *job = req->data;
	struct job_folder *f = job->folder;
	int dir_fd = job->dry_run ? f->dir->inbox_fd : f->dir->proc_fd;

	if (job->resumed) {
		char *text = NULL;
		size_t len;

		staterec_clear(&job->record);
		if (fsops_read_small(f->dir->proc_fd, job->record_name, STATEREC_MAX_BYTES, &text, &len) ==
		    0)
			job->record_found = staterec_decode(text, len, &job->record) == 0;
		free(text);
	}
	job->check_result = precheck_run(dir_fd, job->name, f->conf, f->dir->proc_fd,
					 job->dry_run ? NULL : job->rejects_name, &job->cancel,
					 &job->check);
}

static void job_dry_run_log(struct job *job)
{
	const struct resend_fields *fl = &job->folder->fields;

	if (job->rep.failed) {
		log_warning("%s: dry run: '%s' would fail at %s: %s", job_folder_name(job),
			    job->name, report_stage_name(job->rep.stage), job->rep.error.message);
		return;
	}
	const struct normalize *n = &job->check.norm;
	char delim[8];

	snprintf(delim, sizeof(delim), n->delimiter == '\t' ? "tab" : "'%c'", n->delimiter);
	log_info("%s: dry run: would upload '%s' (%llu bytes, sha256 %s; %s, %s, %llu row%s, %llu "
		 "rejected, %s, %zu part%s) to %s/contacts/imports "
		 "with column_map=%s on_conflict=%s segments=%s topics=%s",
		 job_folder_name(job), job->name, (unsigned long long)job->rep.bytes,
		 job->rep.sha256, n->encoding_from, delim, (unsigned long long)n->rows,
		 n->rows == 1 ? "" : "s", (unsigned long long)n->rows_rejected, n->normalized ? "normalized" : "as it is",
		 n->n_parts, n->n_parts == 1 ? "" : "s", job->env->cfg->api.base_url,
		 fl->column_map ? fl->column_map : "(none)", fl->on_conflict,
		 fl->segments ? fl->segments : "(none)", fl->topics ? fl->topics : "(none)");
}

/* What a checked file does next, once the ledger said it is no duplicate. */
static void job_after_lookup(struct job *job)
{
	bool follow = job->folder->conf->settings.follow_import;

	if (job->part == job->rep.n_parts) {
		/* Uploaded before a restart: never upload again, only learn the outcome. */
		job_enter(job, follow ? JOB_FOLLOW_WAIT : JOB_FINISHING);
		return;
	}
	/* Resumed, and its record says an upload may have begun (and holds no import): Resend
	 * is asked first (not a file split in parts: each part's upload is recorded). */
	if (job->resumed && !job->reconciled && job->env->reconcile && job->part == 0 &&
	    job->rep.n_parts == 1 && job->record_found && job->record.sent_at_ms > 0 &&
	    (!job->record.sha256[0] || strcmp(job->record.sha256, job->rep.sha256) == 0)) {
		job->re.since_ms = job->record.sent_at_ms;
		job->re.rows = job->record.batch_id[0] ? job->record.batch_rows
						       : job->check.norm.rows_uploaded;
		snprintf(job->re.group, sizeof(job->re.group), "%s", job->record.batch_id);
		job_enter(job, JOB_RECONCILING);
		return;
	}
	/* The claim's record counts the first upload already; a resumed file's does not. */
	if (job->rec == JOB_RECORD_AHEAD)
		job_enter(job, JOB_QUEUED);
	else
		job_enter_then(job, JOB_SAVING, JOB_QUEUED);
}

/* ---- the ledger ----------------------------------------------------------------------- */

/* Records JOB's state as STATUS in the ledger, and WRITTEN(JOB) once it is committed (WRITTEN
 * NULL: nothing is waited for); nothing without a ledger or in a dry run. JOB->lookup holds the
 * operation that WRITTEN waits for. -ENOMEM. */
static int job_ledger_record(struct job *job, enum ledger_status status,
			     void (*written)(void *data))
{
	struct job_env *env = job->env;
	struct ledger_entry e = {0};
	int r;

	if (!env->lq || job->dry_run)
		return 0;
	int64_t at_ms = job->finished_ms ? job->finished_ms : job_now_wall_ms();

	r = report_ledger_entry(&job->rep, job->folder->settings_hash, status, at_ms, &e);
	/* Its end, and the notifications of it, in one transaction (the outbox). */
	if (r == 0 && e.finished_at_ms)
		r = events_for_file(env->cfg, &job->rep, e.finished_at_ms, env->cfg->fleet.host_id,
				    &e.events, &e.n_events);
	if (r < 0) {
		ledger_entry_clear(&e);
		log_error("%s: '%s': out of memory recording it in the ledger", job_folder_name(job),
			  job->name);
		return r;
	}
	r = written ? ledgerq_record_then(env->lq, &e, written, job, &job->lookup)
		    : ledgerq_record(env->lq, &e);
	ledger_entry_clear(&e);
	return r;
}

/* ---- LOOKING_UP, DUP_WAIT: the ledger on duplicates and recovery --------------------- */

#define JOB_DUP_RECHECK_MS 10000
#define JOB_FROM_WAITER(w) ((struct job *)((char *)(w) - offsetof(struct job, wait)))

/* JOB waits no longer (it ends, or asks the ledger again). */
static void job_inflight_unwait(struct job *job)
{
	inflight_unwait(&job->folder->inflight, &job->wait);
}

/* Something changed for content IN: its waiters ask the ledger again (the first to hear that
 * nothing was imported takes it over, the others wait in turn); an entry nobody holds goes. */
static void job_inflight_wake(struct job_folder *f, struct inflight *in)
{
	struct inflight_waiter *w = inflight_take_waiters(in), *next;

	for (; w; w = next) {
		struct job *job = JOB_FROM_WAITER(w);

		next = inflight_next(w); /* before it may wait again */
		pacer_cancel(job->env->pacer, &job->se);
		job_enter(job, JOB_LOOKING_UP);
	}
	inflight_drop_unused(&f->inflight, in);
}

/* JOB waits for the outcome of the other files of its content. */
static void job_dup_wait(struct job *job, struct inflight *in, const char *other)
{
	if (!job->dup_said) {
		job->dup_said = true;
		log_info("%s: '%s' waits: '%s', of the same content, is being imported",
			 job_folder_name(job), job->name, other);
	}
	inflight_wait(in, &job->wait);
	job_enter(job, JOB_DUP_WAIT);
}

static void job_inflight_release(struct job *job)
{
	struct inflight *in = job->holds;

	if (in) {
		if (job->holds_uploaded)
			in->n_uploaded--;
		else if (in->owner == job)
			in->owner = NULL;
		job->holds = NULL;
		job->holds_uploaded = false;
		job_inflight_wake(job->folder, in);
	}
	job_inflight_unwait(job);
}

/* Before a file's first upload: a file of the same content resumed with its import made
 * (after a restart) goes first, however the checks came back. True: JOB waits instead. */
static bool job_dup_yield(struct job *job)
{
	struct inflight *in = job->holds;

	if (!in || job->holds_uploaded || job->part != 0 || in->n_uploaded == 0)
		return false;
	in->owner = NULL;
	job->holds = NULL;
	job_dup_wait(job, in, "a file resumed with its import");
	return true;
}

/* Recovery through the ledger: a resumed file whose state record did not say it was uploaded
 * takes the import ids the ledger has for it (a record lost, or from before the ledger). */
static void job_adopt_ledger_entry(struct job *job, const struct ledger_entry *e)
{
	size_t n = 0;
	const char *p = e->import_ids;

	job->rep.claimed_at_ms = e->claimed_at_ms;
	if (job->part > 0 || !p || !*p)
		return;
	while (p && *p && n < job->rep.n_parts) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		if (len == 0 || len >= sizeof(job->rep.parts[n].import_id))
			break;
		memcpy(job->rep.parts[n].import_id, p, len);
		job->rep.parts[n].import_id[len] = '\0';
		n++;
		p = comma ? comma + 1 : NULL;
	}
	if (n == 0)
		return;
	job->part = n;
	job->rec = JOB_RECORD_BEHIND;
	memcpy(job->rep.import_id, job->rep.parts[0].import_id, sizeof(job->rep.import_id));
	log_info("%s: '%s': the ledger has %zu import%s of it from before the restart (%s); "
		 "what was imported is not uploaded again",
		 job_folder_name(job), job->name, n, n == 1 ? "" : "s", e->import_ids);
}

static void job_lookup_done(const struct ledgerq_lookup *res, void *data)
{
	struct job *job = data;
	struct job_folder *f = job->folder;
	enum config_on_duplicate policy = f->conf->settings.on_duplicate;
	struct inflight *in;

	bool own = false;

	job->lookup = NULL;
	if (job->resumed && res->unfinished_result == 0)
		job_adopt_ledger_entry(job, &res->unfinished);
	/* This very file, its end recorded before a crash stopped its move: it was imported
	 * (or failed), and is only finished now, never uploaded again. */
	if (job->resumed && res->imported_result == 0 && res->imported.file &&
	    strcmp(res->imported.file, job->name) == 0 &&
	    res->imported.claimed_at_ms == job->rep.claimed_at_ms) {
		own = true;
		job_adopt_ledger_entry(job, &res->imported);
	}
	if (policy != CONFIG_ON_DUPLICATE_IMPORT && job->part > 0) {
		/* Its import exists: it holds the content, so that no copy is uploaded before
		 * its outcome is known. */
		if ((in = inflight_get(&f->inflight, job->rep.sha256))) {
			in->n_uploaded++;
			job->holds = in;
			job->holds_uploaded = true;
		}
	} else if (policy != CONFIG_ON_DUPLICATE_IMPORT) {
		if (res->imported_result == 0 && !own &&
		    ledger_entry_copy(&job->duplicate, &res->imported) == 0) {
			char when[32];

			text_format_utc(when, job->duplicate.finished_at_ms / 1000, -1);
			job->rep.duplicate_of = &job->duplicate;
			if (policy == CONFIG_ON_DUPLICATE_FAIL)
				report_fail(&job->rep, REPORT_STAGE_CHECK, 0, NULL,
					    "the same content was imported from '%s' at %s as import "
					    "%s, and on_duplicate is fail",
					    job->duplicate.file, when,
					    job->duplicate.import_ids ? job->duplicate.import_ids : "?");
			job_enter(job, JOB_FINISHING);
			return;
		}
		/* A fleet: another file of it is being imported, by another host or here. Asked
		 * again now and then (JOB_DUP_WAIT), as the other host says nothing here. */
		if (res->elsewhere_result == 0 && (in = inflight_get(&f->inflight, job->rep.sha256))) {
			char other[320];

			snprintf(other, sizeof(other), "%s' on host '%s",
				 res->elsewhere.file ? res->elsewhere.file : "?",
				 res->elsewhere.host ? res->elsewhere.host : "?");
			job_dup_wait(job, in, other);
			return;
		}
		in = inflight_find(&f->inflight, job->rep.sha256);
		/* Another file of it, uploaded and in this daemon's hands (resumed, or waiting to
		 * be), whose outcome is not known yet. */
		bool uploaded_here = res->uploaded_result == 0 && res->uploaded.file &&
				     job->env->host->knows(job->env->data, job->folder->index, res->uploaded.file);
		if ((in && ((in->owner && in->owner != job) || in->n_uploaded > 0)) ||
		    uploaded_here) {
			if (!in)
				in = inflight_get(&f->inflight, job->rep.sha256);
			if (in) {
				job_dup_wait(job, in,
					     in->owner ? ((const struct job *)in->owner)->name
					     : uploaded_here ? res->uploaded.file
							     : "a file resumed with its import");
				return;
			}
		}
		if ((in = inflight_get(&f->inflight, job->rep.sha256))) {
			in->owner = job;
			job->holds = in;
		}
	}
	job_after_lookup(job);
}

static void job_start_lookup(struct job *job)
{
	struct job_env *env = job->env;
	const struct config_settings *st = &job->folder->conf->settings;
	int64_t since = 0;
	int r;

	if (st->duplicate_window_s)
		since = job_now_wall_ms() - (int64_t)st->duplicate_window_s * 1000;
	/* Asked even with on_duplicate import: the row found may be this file's own. */
	r = ledgerq_lookup(env->lq, job_folder_name(job), job->name, job->rep.sha256,
			   job->folder->settings_hash, since, job->part == 0, job_lookup_done, job,
			   &job->lookup);
	if (r < 0) {
		log_error("%s: '%s': out of memory while looking it up in the ledger; it stays in "
			  "processing", job_folder_name(job), job->name);
		job_end(job, JOB_END_RELEASED);
	}
}

/* The report's parts, one per upload the check planned. */
static int job_setup_parts(struct job *job)
{
	const struct normalize *n = &job->check.norm;

	free(job->rep.parts);
	job->rep.parts = calloc(n->n_parts ? n->n_parts : 1, sizeof(*job->rep.parts));
	job->rep.n_parts = 0;
	if (!job->rep.parts)
		return -ENOMEM;
	job->rep.n_parts = n->n_parts;
	for (size_t i = 0; i < n->n_parts; i++) {
		job->rep.parts[i].rows = n->parts[i].rows;
		job->rep.parts[i].bytes = n->head_bytes + n->parts[i].bytes;
	}
	job->part = job->poll_part = 0;
	return 0;
}

/* A resumed file takes over what its record says, unless the record belongs to an earlier
 * file of the same name (another sha256). The parts imported before are not uploaded again; if
 * the file is split otherwise now (other settings), none can be trusted to be the same rows:
 * false, and the file is refused with WHY. */
static bool job_apply_record(struct job *job, char *why, size_t whysz)
{
	char plan[17] = "";
	size_t done;
	bool foreign;

	if (!job->record_found)
		return true;
	if (job->rep.n_parts > 1)
		job_plan_fingerprint(job, plan);
	if (staterec_apply(&job->record, plan, &job->rep, &done, &foreign, why, whysz) < 0)
		return false;
	if (foreign)
		log_info("%s: '%s': ignoring a state record left by an earlier file of that name",
			 job_folder_name(job), job->name);
	if (done)
		job->part = done; /* and the record holds them: JOB_RECORD_CURRENT */
	return true;
}

/* The check could not write what it makes (its copy, its rejects file): the machine's fault,
 * not the file's. It is checked again later. */
static void job_check_later(struct job *job)
{
	if (job->recheck_failures++ == 0)
		log_error("%s: '%s' cannot be checked now: %s; it stays in processing and the check "
			  "is tried again", job_folder_name(job), job->name, job->check.reason);
	normalize_clear(&job->check.norm);
	if (job->fd >= 0)
		close(job->fd);
	job->fd = -1;
	job->retry_delay_ms = job_next_delay(&job->save_delay_ms, JOB_FINISH_FIRST_MS,
					     JOB_FINISH_MAX_MS);
	job_enter_then(job, JOB_RETRY_WAIT, JOB_CHECKING);
}

/* What the check found decides what comes next, whether it ran in the pool (CHECKING) or with
 * the claim (a small file). */
static void job_check_result(struct job *job)
{
	struct precheck *c = &job->check;
	char why[sizeof(c->reason)];

	if (job->check_result == -ECANCELED) {
		job_release(job);
		return;
	}
	job->fd = c->fd;
	c->fd = -1;
	job->rep.bytes = c->bytes;
	memcpy(job->rep.sha256, c->sha256, sizeof(job->rep.sha256));
	job->rep.csv = c->norm.read ? &c->norm : NULL;
	if (job->check_result < 0 && c->norm.temporary && !job->dry_run) {
		job_check_later(job);
		return;
	}
	if (job->recheck_failures) {
		log_info("%s: '%s' could be checked after %u failed attempt%s", job_folder_name(job),
			 job->name, job->recheck_failures, job->recheck_failures == 1 ? "" : "s");
		job->recheck_failures = 0;
		job->save_delay_ms = 0;
	}
	if (job->check_result == 0 && job_setup_parts(job) < 0) {
		job->check_result = -ENOMEM;
		snprintf(c->reason, sizeof(c->reason), "out of memory");
	}
	if (job->resumed) {
		bool ok = job_apply_record(job, why, sizeof(why));

		log_info("%s: resuming '%s' left in processing%s%s%s", job_folder_name(job),
			 job->name, job->rep.import_id[0] ? " (uploaded as import " : "",
			 job->rep.import_id, job->rep.import_id[0] ? ")" : "");
		if (!ok && job->check_result == 0) {
			job->check_result = -ESTALE;
			snprintf(c->reason, sizeof(c->reason), "%s", why);
		}
	}
	if (job->check_result < 0)
		report_fail(&job->rep, REPORT_STAGE_CHECK, 0, NULL, "%s", c->reason);
	if (job->dry_run) {
		job_dry_run_log(job);
		job_end(job, JOB_END_UNCLAIMED);
		return;
	}
	if (job->rep.failed) {
		job_enter(job, JOB_FINISHING);
		return;
	}
	/* Checked again after its batch's import failed: it was looked up before, and holds its
	 * content still. */
	if (job->env->lq && !job->rechecked) {
		job_enter(job, JOB_LOOKING_UP);
		return;
	}
	job->rechecked = false;
	job_after_lookup(job);
}

static void job_check_done(uv_work_t *req, int status)
{
	struct job *job = req->data;

	if (status == UV_ECANCELED) {
		job_release(job);
		return;
	}
	job_check_result(job);
}

/* ---- SAVING, RECORDING: the state record, in the disk thread --------------------------- */

static void job_record_work(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	int dir_fd = job->folder->dir->proc_fd;

	op->result = fsops_write_record(dir_fd, job->record_name, job->record_text,
					strlen(job->record_text), job->record_durable);
	if (op->result == 0 && job->record_durable)
		op->sync_gained = dir_fd;
}

/* A record written before an upload (SAVING, or a batch's) was saved, R 0, or not: said once
 * when it starts failing and once when it works again; the folder's trouble says it meanwhile. */
static void job_note_save(struct job *job, int r)
{
	if (r < 0) {
		if (job->save_failures++ == 0)
			log_error("%s: '%s': cannot save its state in '%s/%s': %s; it is not uploaded "
				  "before it can, and saving is retried",
				  job_folder_name(job), job->name, job->folder->conf->inbox,
				  FSOPS_PROCESSING_DIR, strerror(-r));
		job->folder->dir->trouble.save_error = r;
		return;
	}
	if (job->save_failures) {
		log_info("%s: '%s': its state could be saved after %u failed attempt%s",
			 job_folder_name(job), job->name, job->save_failures,
			 job->save_failures == 1 ? "" : "s");
		job->save_failures = 0;
		job->save_delay_ms = 0;
	}
	job->folder->dir->trouble.save_error = 0;
}

static void job_record_done(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	int r = op->result ? op->result : op->sync_result;

	cJSON_free(job->record_text);
	job->record_text = NULL;
	if (job->state == JOB_SAVING) {
		job_note_save(job, r);
		if (r < 0) {
			/* No upload before its record is on disk: with a record there, the import
			 * it makes can be recorded (in the same file, in place) even on a full
			 * disk; without one, a restart could not tell that it was uploaded. The
			 * record on disk is the one before (JOB->rec unchanged). */
			if (job->then == JOB_ENDED) {
				/* Let go: it stays with the record it has. */
				job_continue(job);
				return;
			}
			job->retry_delay_ms = job_next_delay(&job->save_delay_ms, JOB_FINISH_FIRST_MS,
							     JOB_FINISH_MAX_MS);
			job_enter_then(job, JOB_RETRY_WAIT, JOB_SAVING);
			return;
		}
		/* An ahead record was brought back to the attempts made; any other now counts the
		 * coming upload (and holds every import: it was durable if one was new). */
		job->rec = job->rec == JOB_RECORD_AHEAD ? JOB_RECORD_CURRENT : JOB_RECORD_AHEAD;
		job_continue(job);
		return;
	}
	if (r == 0)
		job->rec = JOB_RECORD_CURRENT;
	else if (job->record_failures++ == 0)
		log_warning("%s: '%s': cannot record import %s in '%s': %s; were the daemon to stop "
			    "before the file is done, the next start would upload it again",
			    job_folder_name(job), job->name, job->rep.import_id,
			    job->folder->conf->inbox, strerror(-r));
	job_continue(job);
}

/* Writes the record in the disk thread. SAVING: the attempts made when the record on disk
 * counts one more (it is brought back), else the coming upload too; durable when it holds an
 * import that is new. RECORDING: the attempts made, durable. */
static bool job_start_record(struct job *job)
{
	bool saving = job->state == JOB_SAVING;
	bool durable = !saving || job->rec == JOB_RECORD_BEHIND;

	if (!job_prepare_record(job, saving && job->rec != JOB_RECORD_AHEAD))
		return false;
	job->record_durable = durable;
	job->op.work = job_record_work;
	job->op.done = job_record_done;
	job->env->host->disk(job->env->data, &job->op);
	return true;
}

/* ---- UPLOADING, POLLING: the API ------------------------------------------------------- */

static uint64_t job_backoff_ms(const struct config_retry *r, unsigned attempt)
{
	uint64_t d = r->initial_delay_ms;

	for (unsigned i = 1; i < attempt && d < r->max_delay_ms; i++)
		d *= 2;
	if (d > r->max_delay_ms)
		d = r->max_delay_ms;
	/* Full jitter on the upper half: many files failing together must not retry in step. */
	return d / 2 + (uint64_t)((double)(d / 2) * ((double)random() / RAND_MAX));
}

/* Whether the file is still the one that was checked and hashed: what is reported (size,
 * sha256) must be what is sent and what goes to done/. Asked before an upload starts (no
 * import is made for a file that changed while it waited) and once Resend accepted it. The
 * descriptor shows a write, an append (curl sends only the announced size, so an upload
 * succeeds all the same) or a truncation too late to cut an upload short; the name shows
 * another file renamed over it in processing, which the descriptor cannot. Two stats on the
 * loop thread: inode metadata the kernel has cached (the watch stats on the loop too), no data
 * read. False with WHY saying what happened, WHEN ("while it was being uploaded") how long. */
static bool job_file_intact(struct job *job, const char *when, char *why, size_t whysz)
{
	struct stat st;
	char what[160];

	/* The name first: a rename over it or an unlink changes the old inode's ctime too,
	 * which the descriptor would report as a mere change. */
	if (fstatat(job->folder->dir->proc_fd, job->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			snprintf(why, whysz, "the file was removed from processing %s", when);
		else
			snprintf(why, whysz, "the file cannot be found again in processing: %s",
				 strerror(errno));
		return false;
	}
	if ((uint64_t)st.st_dev != job->check.dev || (uint64_t)st.st_ino != job->check.ino) {
		snprintf(why, whysz, "the file was replaced %s: another file was renamed over it in "
				     "processing", when);
		return false;
	}
	if (fstat(job->fd, &st) < 0) {
		snprintf(why, whysz, "the file cannot be examined again: %s", strerror(errno));
		return false;
	}
	if (!precheck_same_file(&job->check, &st, what, sizeof(what))) {
		snprintf(why, whysz, "the file changed %s: %s", when, what);
		return false;
	}
	return true;
}

/* Resend made import ID of JOB's part under way (answered STATUS): recorded, then followed,
 * finished, or the next part queued. */
static void job_uploaded(struct job *job, long status, const char *id)
{
	struct job_env *env = job->env;
	struct report_part *part = &job->rep.parts[job->part];
	char why[320];

	snprintf(part->import_id, sizeof(part->import_id), "%s", id);
	job->rep.http_status = status;
	part->http_status = status;
	part->attempts = job->rep.attempts;
	if (job->part == 0)
		memcpy(job->rep.import_id, part->import_id, sizeof(job->rep.import_id));
	job->rep.uploaded_at_ms = job_now_wall_ms();
	metrics_uploaded(job->folder->metrics, part->bytes,
			 (double)(uv_now(env->loop) - job->upload_started_ms) / 1000);
	log_debug("%s: '%s' uploaded as import %s (part %zu of %zu%s%s)", job_folder_name(job),
		  job->name, part->import_id, job->part + 1, job->rep.n_parts,
		  job->rep.batch ? ", batch " : "", job->rep.batch ? job->rep.batch->id : "");
	job->part++;
	job->rec = JOB_RECORD_BEHIND;
	(void)job_ledger_record(job, LEDGER_UPLOADED, NULL);
	if (!job_file_intact(job, "while it was being uploaded", why, sizeof(why))) {
		/* The import exists, made from whatever was read: the operator decides what to do
		 * with it, so its id is in the report and the file is not followed. */
		report_fail(&job->rep, REPORT_STAGE_UPLOAD, 0, NULL,
			    "%s; Resend made import %s from what was sent", why, part->import_id);
		job_enter(job, JOB_FINISHING);
		return;
	}
	if (job->part < job->rep.n_parts) {
		/* The next part waits until this one's import id is on disk: after a crash, what
		 * was imported is never uploaded again. */
		job->rep.attempts = 0;
		job_enter_then(job, JOB_SAVING, JOB_QUEUED);
		return;
	}
	/* Following: from the record on, a restart only follows the import. */
	if (job->folder->conf->settings.follow_import)
		job_enter_then(job, JOB_RECORDING, JOB_FOLLOW_WAIT);
	else
		job_enter(job, JOB_FINISHING);
}

static void job_batch_answer(struct job *leader, struct resend_call *call, enum resend_class cls,
			     const struct resend_error *err);
static void job_start_batch_upload(struct job *leader);

static void job_upload_done(struct resend_call *call, void *data)
{
	struct job *job = data;
	struct job_env *env = job->env;
	struct resend_error err = {0};
	size_t len;
	const char *body = resend_call_body(call, &len);
	long status = resend_call_status(call);
	enum resend_class cls = api_answer_classify(env->pacer, env->cfg->api_key, call, &err);
	const char *local = resend_call_local_error(call);
	unsigned max_attempts = (unsigned)env->cfg->retry.max_attempts;
	char id[sizeof(job->rep.import_id)];
	int r;

	job->call = NULL;
	job->rep.http_status = status;
	metrics_api_request(env->metrics, METRICS_CREATE_IMPORT, status);
	if (job->batch) {
		job_batch_answer(job, call, cls, &err);
		return;
	}
	if (local) {
		/* The file could not be read whole: the same file would be read again by a retry,
		 * so it fails now, with what we found rather than what curl says about it. */
		report_fail(&job->rep, REPORT_STAGE_UPLOAD, 0, NULL, "%s", local);
		resend_call_free(call);
		job_enter(job, JOB_FINISHING);
		return;
	}
	switch (cls) {
	case RESEND_OK:
		r = resend_parse_created(body, len, id);
		resend_call_free(call);
		if (r < 0) {
			report_fail(&job->rep, REPORT_STAGE_UPLOAD, status, NULL,
				    "HTTP %ld but the answer holds no import id", status);
			job_enter(job, JOB_FINISHING);
			return;
		}
		job_uploaded(job, status, id);
		return;
	case RESEND_AUTH:
	case RESEND_QUOTA:
		resend_call_free(call);
		env->host->refused(env->data, cls, &err);
		/* The key's or the account's fault, not the file's: the attempt does not count (the
		 * record on disk counts it: ahead), and the record forgets it again before the file
		 * waits in the queue. */
		job->rep.attempts--;
		job->rec = JOB_RECORD_AHEAD;
		job->requeue_front = true;
		job_enter_then(job, JOB_SAVING, JOB_QUEUED);
		return;
	case RESEND_RATE_LIMITED:
		/* The team's limit said "later": a wait, not an attempt. The record on disk counts
		 * the upload that comes next already (it counted this one), so the file goes back
		 * to the head of its queue as it is, and no request leaves before the time the
		 * answer named. */
		resend_call_free(call);
		job->rep.attempts--;
		job->rep.rate_limited++;
		job->rec = JOB_RECORD_AHEAD;
		job->requeue_front = true;
		metrics_rate_limited(job->folder->metrics);
		job_enter(job, JOB_QUEUED);
		return;
	case RESEND_RETRY:
		resend_call_free(call);
		if (job->rep.attempts >= max_attempts) {
			size_t used = strlen(err.message);
			snprintf(err.message + used, sizeof(err.message) - used,
				 " (gave up after %u attempts)", job->rep.attempts);
			job->rep.failed = true;
			job->rep.stage = REPORT_STAGE_UPLOAD;
			job->rep.error = err;
			job_enter(job, JOB_FINISHING);
			return;
		}
		job->retry_delay_ms = job_backoff_ms(&env->cfg->retry, job->rep.attempts);
		metrics_upload_retry(job->folder->metrics);
		if (!env->draining)
			log_event(LOG_LEVEL_WARNING,
				  &(struct log_fields){LOG_ID_UPLOAD_RETRY, job_folder_name(job),
						       job->name, NULL, "retry"},
				  "%s: '%s' upload attempt %u failed: %s%s%s%s; retrying in %.1f s",
				  job_folder_name(job), job->name, job->rep.attempts, err.message,
				  err.name[0] ? " [" : "", err.name, err.name[0] ? "]" : "",
				  (double)job->retry_delay_ms / 1000);
		job_enter_then(job, JOB_RETRY_WAIT, JOB_SAVING);
		return;
	case RESEND_PERMANENT:
		resend_call_free(call);
		job->rep.failed = true;
		job->rep.stage = REPORT_STAGE_UPLOAD;
		job->rep.error = err;
		job_enter(job, JOB_FINISHING);
		return;
	}
}

static void job_start_upload(struct job *job)
{
	struct job_env *env = job->env;
	const struct normalize *n = &job->check.norm;
	const struct normalize_part *p = &n->parts[job->part];
	char why[320];
	char *filename;
	int r;

	if (job->batch) {
		job_start_batch_upload(job);
		return;
	}
	/* Sent alone: a batch its record named before a restart is not what it is imported in. */
	batch_info_unref(job->rep.batch);
	job->rep.batch = NULL;
	if (job_dup_yield(job)) {
		/* Not an attempt: nothing was sent. */
		job->rep.attempts--;
		return;
	}
	if (!job_file_intact(job, "after it was checked", why, sizeof(why))) {
		/* A refusal like the check's own: local, for good, and no request was made. */
		job->rep.attempts--;
		report_fail(&job->rep, REPORT_STAGE_CHECK, 0, NULL, "%s", why);
		job_enter(job, JOB_FINISHING);
		return;
	}
	filename = resend_part_filename(job->name, job->part, job->rep.n_parts);
	resend_part_key(job->idempotency_key, job_folder_name(job), job->rep.sha256, job->part,
			job->rep.n_parts);
	int fd = n->fd >= 0 ? n->fd : job->fd;
	const struct resend_segment segs[] = {{fd, 0, n->head_bytes}, {fd, p->offset, p->bytes}};

	r = filename ? resend_client_create_import(env->api, segs, 2, filename,
						   &job->folder->fields, job->idempotency_key,
						   job_upload_done, job, &job->call)
		     : -ENOMEM;
	free(filename);
	if (r < 0) {
		report_fail(&job->rep, REPORT_STAGE_UPLOAD, 0, NULL, "cannot start the upload: %s",
			    strerror(-r));
		job_enter(job, JOB_FINISHING);
		return;
	}
	log_debug("%s: '%s' uploading (%llu bytes, part %zu of %zu, attempt %u)",
		  job_folder_name(job), job->name, (unsigned long long)(n->head_bytes + p->bytes),
		  job->part + 1, job->rep.n_parts, job->rep.attempts);
}

/* ---- BATCHING, BATCHED: files that waited go out together (batch.h) --------------------- */

#define JOB_FROM_PE(e) ((struct job *)((char *)(e) - offsetof(struct job, se)))

/* A batch while it is sent: the leader's. */
struct job_batch {
	struct batch_info *info; /* as the records name it */
	/* The leader first, then the others in the order they waited; NULL: one that left
	 * before the request (its record could not be written, or its file changed). */
	struct job **members;
	size_t n;
	unsigned pending;   /* records being written */
	bool leader_failed; /* the leader's record could not be written */
};

/* Whether C, waiting in the queue, may go in a batch as far as the job goes (what its rows
 * allow is batch.h's): one part, not uploaded yet, not set to go alone, and not about to
 * yield to a file of its content resumed with its import (job_dup_yield). */
static bool job_may_join(const struct job *c)
{
	const struct inflight *in = c->holds;

	return c->state == JOB_QUEUED && !c->solo && !c->dry_run && c->part == 0 &&
	       c->rep.n_parts == 1 && !(in && !c->holds_uploaded && in->n_uploaded > 0);
}

/* M leaves the batch of LEADER before its request: it was not sent in it. */
static void job_batch_drop(struct job *leader, struct job *m)
{
	struct job_batch *b = leader->batch;

	for (size_t i = 0; i < b->n; i++)
		if (b->members[i] == m)
			b->members[i] = NULL;
	m->leader = NULL;
	batch_info_unref(m->rep.batch);
	m->rep.batch = NULL;
}

static void job_batch_free(struct job *leader)
{
	struct job_batch *b = leader->batch;

	leader->batch = NULL;
	if (!b)
		return;
	batch_info_unref(b->info);
	free(b->members);
	free(b);
}

/* The batch of LEADER is not sent: its other files wait again at the head of the queue, in
 * their order (RELEASE: they are let go, a drain), their records counting the upload they
 * wait for. The leader is the caller's to move on. */
static void job_batch_dissolve(struct job *leader, bool release)
{
	struct job_batch *b = leader->batch;

	/* Granted in their order once they all stand in the queue (job_batch_answer). */
	pacer_hold(leader->env->pacer);
	for (size_t i = b->n; i-- > 1;) {
		struct job *m = b->members[i];

		if (!m)
			continue;
		job_batch_drop(leader, m);
		if (release) {
			job_release(m);
		} else {
			m->requeue_front = true;
			job_enter(m, JOB_QUEUED);
		}
	}
	pacer_unhold(leader->env->pacer);
	batch_info_unref(leader->rep.batch);
	leader->rep.batch = NULL;
	job_batch_free(leader);
}

/* When JOB's upload is granted: the files of its folder waiting behind it that can share its
 * import join it (BATCHED), and it sends them all (BATCHING). False: it goes alone. */
static bool job_batch_form(struct job *job)
{
	struct job_env *env = job->env;
	const struct config_settings *st = &job->folder->conf->settings;
	struct batch_former bf;
	struct job **members = NULL, **grown;
	size_t n = 1, cap = 0;
	struct pacer_entry *e;
	struct job_batch *b = NULL;
	struct batch_info *info = NULL;
	char id[BATCH_ID_LEN + 1];
	int64_t now;

	if (st->coalesce != CONFIG_COALESCE_AUTO || !job_may_join(job) ||
	    !batch_eligible(&job->check.norm))
		return false;
	if (batch_former_init(&bf, st, &job->check.norm) < 0)
		goto none;
	for (e = pacer_upload_first(env->pacer, job->folder->index); e && !batch_former_done(&bf);
	     e = pacer_upload_next(env->pacer, e)) {
		struct job *c = JOB_FROM_PE(e);

		if (!batch_former_offer(&bf, &c->check.norm, job_may_join(c)))
			continue;
		if (n + 1 > cap) {
			cap = cap ? cap * 2 : 16;
			grown = realloc(members, cap * sizeof(*members));
			if (!grown)
				break; /* those found so far */
			members = grown;
		}
		members[n++] = c;
	}
	if (n == 1)
		goto none;
	members[0] = job;
	now = job_now_wall_ms();
	batch_make_id(id, job->rep.sha256, now);
	info = batch_info_new(id, bf.rows, n, true);
	b = calloc(1, sizeof(*b));
	for (size_t i = 0; info && b && i < n; i++)
		if (batch_info_set(info, i, members[i]->name) < 0)
			goto none;
	if (!info || !b)
		goto none;
	batch_former_free(&bf);
	*b = (struct job_batch){.info = info, .members = members, .n = n, .pending = (unsigned)n};
	job->batch = b;
	log_debug("%s: '%s' leads batch %s: %zu files, %llu rows", job_folder_name(job), job->name,
		  id, n, (unsigned long long)info->rows);
	for (size_t i = 0; i < n; i++) {
		/* A batch its record named before a restart is not this one. */
		batch_info_unref(members[i]->rep.batch);
		members[i]->rep.batch = batch_info_ref(info);
		members[i]->rep.sent_at_ms = now;
	}
	for (size_t i = 1; i < n; i++) {
		pacer_cancel(env->pacer, &members[i]->se);
		members[i]->leader = job;
		job_enter(members[i], JOB_BATCHED);
	}
	job_enter(job, JOB_BATCHING);
	return true;
none:
	batch_former_free(&bf);
	batch_info_unref(info);
	free(b);
	free(members);
	return false;
}

static void job_batch_record_work(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));

	if (!job->record_text) {
		op->result = -ENOMEM;
		return;
	}
	job_record_work(op);
}

static void job_batch_send(struct job *leader);

/* A member's record (or the leader's) names the batch, durably, or could not be written. */
static void job_batch_record_done(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	struct job *leader = job->state == JOB_BATCHING ? job : job->leader;
	struct job_batch *b = leader->batch;
	int r = op->result ? op->result : op->sync_result;

	cJSON_free(job->record_text);
	job->record_text = NULL;
	job_note_save(job, r);
	if (r < 0 && job == leader) {
		b->leader_failed = true;
	} else if (r < 0) {
		job_batch_drop(leader, job);
		job->retry_delay_ms = job_next_delay(&job->save_delay_ms, JOB_FINISH_FIRST_MS,
						     JOB_FINISH_MAX_MS);
		job_enter_then(job, JOB_RETRY_WAIT, JOB_SAVING);
	} else {
		job->rec = JOB_RECORD_AHEAD; /* it counts the batch's request */
	}
	if (--b->pending == 0)
		job_batch_send(leader);
}

/* BATCHING, BATCHED: the record names the batch (durable: after a crash, a file knows that a
 * request may have carried it), and counts that request. */
static void job_batch_start_record(struct job *job)
{
	if (!job_prepare_record(job, job->rec != JOB_RECORD_AHEAD))
		job->record_text = NULL; /* failed in the disk thread, as a full disk would */
	job->record_durable = true;
	job->op.work = job_batch_record_work;
	job->op.done = job_batch_record_done;
	job->env->host->disk(job->env->data, &job->op);
}

/* Every record of LEADER's batch is written (or failed): the request goes, with the files
 * that are still in it and unchanged. */
static void job_batch_send(struct job *leader)
{
	struct job_env *env = leader->env;
	struct job_batch *b = leader->batch;
	struct batch_info *info;
	size_t left = 0, k = 0;
	uint64_t rows = 0;
	char why[320];

	if (env->draining || b->leader_failed) {
		bool failed = b->leader_failed;

		job_batch_dissolve(leader, env->draining);
		if (env->draining) {
			job_release(leader);
		} else if (failed) {
			leader->retry_delay_ms = job_next_delay(&leader->save_delay_ms,
								JOB_FINISH_FIRST_MS, JOB_FINISH_MAX_MS);
			job_enter_then(leader, JOB_RETRY_WAIT, JOB_SAVING);
		}
		return;
	}
	if (!job_file_intact(leader, "after it was checked", why, sizeof(why))) {
		/* A refusal like the check's own, and no request was made: the others wait for
		 * the next grant. */
		job_batch_dissolve(leader, false);
		report_fail(&leader->rep, REPORT_STAGE_CHECK, 0, NULL, "%s", why);
		job_enter(leader, JOB_FINISHING);
		return;
	}
	for (size_t i = 1; i < b->n; i++) {
		struct job *m = b->members[i];

		if (m && !job_file_intact(m, "after it was checked", why, sizeof(why))) {
			job_batch_drop(leader, m);
			report_fail(&m->rep, REPORT_STAGE_CHECK, 0, NULL, "%s", why);
			job_enter(m, JOB_FINISHING);
		}
	}
	for (size_t i = 0; i < b->n; i++) {
		left += b->members[i] != NULL;
		rows += b->members[i] ? b->members[i]->check.norm.rows_uploaded : 0;
	}
	if (left == 1) {
		/* Alone after all: an upload of its own. */
		job_batch_dissolve(leader, false);
		job_enter(leader, JOB_UPLOADING);
		return;
	}
	if (left < b->n) {
		/* The reports name the files that were sent (the records name the batch as it was
		 * formed). */
		info = batch_info_new(b->info->id, rows, left, true);
		for (size_t i = 0; info && i < b->n; i++) {
			if (b->members[i] && batch_info_set(info, k++, b->members[i]->name) < 0) {
				batch_info_unref(info);
				info = NULL;
			}
		}
		for (size_t i = 0; info && i < b->n; i++) {
			struct job *m = b->members[i];

			if (m) {
				batch_info_unref(m->rep.batch);
				m->rep.batch = batch_info_ref(info);
			}
		}
		batch_info_unref(info);
	}
	for (size_t i = 1; i < b->n; i++) {
		struct job *m = b->members[i];

		if (!m)
			continue;
		m->upload_started_ms = uv_now(env->loop);
		m->rep.attempts++;
		if (m->rec == JOB_RECORD_AHEAD)
			m->rec = JOB_RECORD_CURRENT;
	}
	job_enter(leader, JOB_UPLOADING);
}

/* UPLOADING a batch: one header, then each file's rows; a file whose last row does not end
 * its line gets a line end. */
static void job_start_batch_upload(struct job *leader)
{
	struct job_env *env = leader->env;
	struct job_batch *b = leader->batch;
	const struct normalize *ln = &leader->check.norm;
	struct resend_segment *segs = calloc(2 * b->n + 1, sizeof(*segs));
	char filename[BATCH_ID_LEN + 16];
	size_t k = 0;
	int r = -ENOMEM;

	if (segs) {
		segs[k++] = (struct resend_segment){ln->fd >= 0 ? ln->fd : leader->fd,
						    ln->parts[0].offset, ln->header_len};
		for (size_t i = 0; i < b->n; i++) {
			const struct job *m = b->members[i];
			const struct normalize *n;

			if (!m)
				continue;
			n = &m->check.norm;
			segs[k++] = (struct resend_segment){n->fd >= 0 ? n->fd : m->fd,
							    batch_body_offset(n),
							    batch_body_bytes(n)};
			if (!n->ends_with_newline)
				segs[k++] = (struct resend_segment){-1, 0, 1};
		}
		snprintf(filename, sizeof(filename), "batch-%s.csv", leader->rep.batch->id);
		snprintf(leader->idempotency_key, sizeof(leader->idempotency_key), "%s", "");
		resend_part_key(leader->idempotency_key, job_folder_name(leader),
				leader->rep.batch->id, 0, 1);
		r = resend_client_create_import(env->api, segs, k, filename, &leader->folder->fields,
						leader->idempotency_key, job_upload_done, leader,
						&leader->call);
		free(segs);
	}
	if (r < 0) {
		job_batch_dissolve(leader, false);
		report_fail(&leader->rep, REPORT_STAGE_UPLOAD, 0, NULL, "cannot start the upload: %s",
			    strerror(-r));
		job_enter(leader, JOB_FINISHING);
		return;
	}
	log_debug("%s: batch %s uploading (%zu files, %llu rows, attempt %u)",
		  job_folder_name(leader), leader->rep.batch->id, b->n,
		  (unsigned long long)leader->rep.batch->rows, leader->rep.attempts);
}

/* The answer to a batch's request, for each of its files. */
static void job_batch_answer(struct job *leader, struct resend_call *call, enum resend_class cls,
			     const struct resend_error *err)
{
	struct job_env *env = leader->env;
	struct job_batch *b = leader->batch;
	const char *local = resend_call_local_error(call);
	int bad_fd = resend_call_local_error_fd(call);
	long status = resend_call_status(call);
	unsigned max_attempts = (unsigned)env->cfg->retry.max_attempts;
	char id[sizeof(leader->rep.import_id)], batch_id[BATCH_ID_LEN + 1];
	size_t len, n = b->n;
	const char *body = resend_call_body(call, &len);
	struct job **m = b->members;
	bool created = cls == RESEND_OK && !local && resend_parse_created(body, len, id) == 0;

	snprintf(batch_id, sizeof(batch_id), "%s", leader->rep.batch->id);
	b->members = NULL;
	job_batch_free(leader);
	for (size_t i = 1; i < n; i++)
		if (m[i])
			m[i]->leader = NULL;
	if (created) {
		resend_call_free(call);
		for (size_t i = 0; i < n; i++)
			if (m[i])
				job_uploaded(m[i], status, id);
		free(m);
		return;
	}
	resend_call_free(call);
	if (cls == RESEND_AUTH || cls == RESEND_QUOTA)
		env->host->refused(env->data, cls, err);
	if (cls == RESEND_RATE_LIMITED)
		metrics_rate_limited(leader->folder->metrics);
	if (local)
		log_warning("%s: batch %s could not be sent: %s; its other files wait again",
			    job_folder_name(leader), batch_id, local);
	else if (cls == RESEND_OK || cls == RESEND_PERMANENT)
		log_warning("%s: batch %s (%zu files) was refused: %s%s%s%s; its files are sent "
			    "again one by one, so that a bad file fails alone",
			    job_folder_name(leader), batch_id, n, err->message,
			    err->name[0] ? " [" : "", err->name, err->name[0] ? "]" : "");
	else if (cls == RESEND_RETRY && !env->draining)
		log_warning("%s: batch %s (%zu files) upload attempt failed: %s%s%s%s; retrying",
			    job_folder_name(leader), batch_id, n, err->message,
			    err->name[0] ? " [" : "", err->name, err->name[0] ? "]" : "");
	/* Backwards: a file put back at the head of the queue goes before those put back after
	 * it, so the queue keeps the order they waited in; and nothing is granted before they
	 * all stand there (the leader's slot frees as it leaves). */
	pacer_hold(env->pacer);
	for (size_t i = n; i-- > 0;) {
		struct job *j = m[i];

		if (!j)
			continue;
		batch_info_unref(j->rep.batch);
		j->rep.batch = NULL;
		j->rep.http_status = status;
		if (local) {
			int fd = j->check.norm.fd >= 0 ? j->check.norm.fd : j->fd;

			if (fd == bad_fd || (i == 0 && fd == -1)) {
				report_fail(&j->rep, REPORT_STAGE_UPLOAD, 0, NULL, "%s", local);
				job_enter(j, JOB_FINISHING);
				continue;
			}
			/* Not its fault: the wait is not an attempt. */
			j->rep.attempts--;
			j->rec = JOB_RECORD_AHEAD;
			j->requeue_front = true;
			job_enter(j, JOB_QUEUED);
			continue;
		}
		switch (cls) {
		case RESEND_RATE_LIMITED:
			j->rep.attempts--;
			j->rep.rate_limited++;
			j->rec = JOB_RECORD_AHEAD;
			j->requeue_front = true;
			job_enter(j, JOB_QUEUED);
			break;
		case RESEND_AUTH:
		case RESEND_QUOTA:
			j->rep.attempts--;
			j->rec = JOB_RECORD_AHEAD;
			j->requeue_front = true;
			job_enter_then(j, JOB_SAVING, JOB_QUEUED);
			break;
		case RESEND_RETRY:
			if (j->rep.attempts >= max_attempts) {
				j->rep.failed = true;
				j->rep.stage = REPORT_STAGE_UPLOAD;
				j->rep.error = *err;
				snprintf(j->rep.error.message + strlen(j->rep.error.message),
					 sizeof(j->rep.error.message) - strlen(j->rep.error.message),
					 " (gave up after %u attempts)", j->rep.attempts);
				job_enter(j, JOB_FINISHING);
				break;
			}
			j->retry_delay_ms = job_backoff_ms(&env->cfg->retry, j->rep.attempts);
			metrics_upload_retry(j->folder->metrics);
			job_enter_then(j, JOB_RETRY_WAIT, JOB_SAVING);
			break;
		case RESEND_OK: /* 2xx without an import id: which file made it so is unknown */
		case RESEND_PERMANENT:
			/* Maybe one file's fault: each goes alone, and this was not its attempt (its
			 * record counts it: ahead). Back at the head of the queue at once, in their
			 * order: a file passed over for an email of theirs must not go first. */
			j->rep.attempts--;
			j->solo = true;
			j->rec = JOB_RECORD_AHEAD;
			j->requeue_front = true;
			job_enter(j, JOB_QUEUED);
			break;
		}
	}
	pacer_unhold(env->pacer);
	free(m);
}

/* A coalesced file whose import ended failed: it is checked again and sent on its own, so
 * that its neighbours' fault is not its own (and its own is found alone). */
static void job_batch_import_failed(struct job *job, const char *id)
{
	log_warning("%s: '%s': import %s of batch %s failed at Resend; the file is sent again on "
		    "its own", job_folder_name(job), job->name, id, job->rep.batch->id);
	batch_info_unref(job->rep.batch);
	job->rep.batch = NULL;
	job->solo = true;
	job->rechecked = true;
	job->rep.import_id[0] = '\0';
	job->rep.import = (struct resend_import){0};
	job->rep.uploaded_at_ms = 0;
	job->part = job->poll_part = 0;
	job->follow_started_ms = 0;
	normalize_clear(&job->check.norm);
	job_enter(job, JOB_CHECKING);
}

/* What the follower learnt of the import JOB follows (POLLING). */
static void job_poll_result(struct job *job, const struct follow_result *r)
{
	struct job_env *env = job->env;
	const char *id = job->rep.parts[job->poll_part].import_id;
	struct resend_import imp = r->import;
	enum resend_class cls = r->cls;

	if (cls == RESEND_OK && r->have) {
		/* Kept as received, for the report: scrubbed like any text from the far end. */
		scrub_secrets(imp.status, sizeof(imp.status), env->cfg->api_key);
		scrub_secrets(imp.created_at, sizeof(imp.created_at), env->cfg->api_key);
		scrub_secrets(imp.completed_at, sizeof(imp.completed_at), env->cfg->api_key);
		if (imp.state == RESEND_IMPORT_FAILED && job->rep.batch && job->rep.n_parts == 1) {
			follow_remove(env->follow, &job->fe);
			job_batch_import_failed(job, id);
			return;
		}
		job->rep.parts[job->poll_part].import = imp;
		if (job->rep.n_parts == 1)
			job->rep.import = imp;
		if (imp.state == RESEND_IMPORT_FAILED && job->rep.n_parts == 1)
			report_fail(&job->rep, REPORT_STAGE_IMPORT, 0, NULL,
				    "Resend reports import %s as failed", id);
		else if (imp.state == RESEND_IMPORT_FAILED && !job->rep.failed)
			report_fail(&job->rep, REPORT_STAGE_IMPORT, 0, NULL,
				    "Resend reports import %s (part %zu of %zu) as failed", id,
				    job->poll_part + 1, job->rep.n_parts);
		if (imp.state == RESEND_IMPORT_COMPLETED || imp.state == RESEND_IMPORT_FAILED) {
			/* Every part is followed to its end, for the report. */
			if (++job->poll_part < job->rep.n_parts) {
				follow_remove(env->follow, &job->fe);
				job_follow_on(job);
				return;
			}
			report_sum_parts(&job->rep);
			if (job->rep.uploaded_at_ms > 0)
				metrics_imported(job->folder->metrics,
						 (double)(job_now_wall_ms() -
							  job->rep.uploaded_at_ms) / 1000);
			job_enter(job, JOB_FINISHING);
			return;
		}
	} else if (cls == RESEND_PERMANENT) {
		job->rep.failed = true;
		job->rep.stage = REPORT_STAGE_IMPORT;
		job->rep.error = r->err;
		job_enter(job, JOB_FINISHING);
		return;
	} else if (cls == RESEND_AUTH || cls == RESEND_QUOTA) {
		if (r->first)
			env->host->refused(env->data, cls, &r->err);
	} else if (cls == RESEND_RATE_LIMITED) {
		/* Asked again once the pacer lets requests go (api_answer_classify); the refused
		 * request is counted once, the wait by every file it was about. */
		job->rep.rate_limited++;
		if (r->first)
			metrics_rate_limited(job->folder->metrics);
	} else if (cls != RESEND_OK) {
		log_debug("%s: '%s': reading import %s failed: %s; will ask again",
			  job_folder_name(job), job->name, id, r->err.message);
	}
	if (uv_now(env->loop) - job->follow_started_ms > JOB_FOLLOW_LIMIT_MS) {
		report_fail(&job->rep, REPORT_STAGE_IMPORT, 0, NULL,
			    "import %s did not finish within 24 hours", job->rep.import_id);
		job_enter(job, JOB_FINISHING);
		return;
	}
	job_follow_on(job);
}

/* Polled, and followed further. An import id that could not be recorded yet is tried again
 * between polls: until it is down, a restart would upload the file again. */
static void job_follow_on(struct job *job)
{
	if (job->rec == JOB_RECORD_BEHIND)
		job_enter_then(job, JOB_RECORDING, JOB_FOLLOW_WAIT);
	else
		job_enter(job, JOB_FOLLOW_WAIT);
}

/* ---- FINISHING: report, move to done/failed, in the disk thread ------------------------ */

static void job_finish_work(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	struct job_folder *f = job->folder;
	char stage[STATEREC_NAME_LEN + 2];
	bool rejects = job->check.norm.rejects_written;
	struct stat st;
	int dst_fd;

	job->finish_dir_result = folder_finish_dir(f->dir, f->conf, job->rep.failed, &dst_fd,
						   &job->finish_adopted);
	if (job->finish_dir_result < 0) {
		op->result = job->finish_dir_result;
		return;
	}
	/* Made here rather than on the loop: the report is the same whichever thread prints it,
	 * and JOB's report is not touched while it is finishing. Kept for a retry. The rejects
	 * file it names is beside it, under the name the move is about to choose. */
	if (!job->report_text) {
		char *picked;

		if (rejects && !job->rejects_final &&
		    fsops_finish_name(dst_fd, job->name, job->finished_ms / 1000, true, &picked) ==
			    0) {
			if (asprintf(&job->rejects_final, "%s%s", picked, NORMALIZE_REJECTS_SUFFIX) <
			    0)
				job->rejects_final = NULL;
			free(picked);
		}
		job->rep.rejects_file = job->rejects_final;
		job->report_text = report_json(&job->rep, job->finished_ms);
	}
	if (!job->report_text) {
		op->result = -ENOMEM;
		return;
	}

	/* The uploader's receipt, before the file moves: a crash between the two writes it again
	 * at the next start. One that cannot be written waits in the folder's backlog (said on
	 * the loop), and never holds the file back. */
	if (f->conf->receipts.dir && !job->receipt_written) {
		char rej[NAME_MAX + sizeof(RECEIPTS_REJECTS_SUFFIX)], *receipt;

		snprintf(rej, sizeof(rej), "%s%s", job->name, RECEIPTS_REJECTS_SUFFIX);
		receipt = report_receipt_json(&job->rep, job->finished_ms, rejects ? rej : NULL);
		job->receipt_result = receipt ? receipts_write(&f->conf->receipts,
							       &f->dir->receipts, job->name,
							       job->rep.failed, receipt,
							       rejects ? f->dir->proc_fd : -1,
							       rejects ? job->rejects_name : NULL,
							       job->receipt_why,
							       sizeof(job->receipt_why))
					      : -ENOMEM;
		cJSON_free(receipt);
		/* Written, or in the backlog: either way not this file's to do again. */
		job->receipt_written = receipt != NULL;
	}

	/* The report is staged in the record's own file when the record holds nothing a restart
	 * needs (the report says all it says, and more): it becomes the report, and no inode is
	 * made and deleted per file. A record with an import id stays until the file is moved. */
	if (job_record_holds_import(job))
		snprintf(stage, sizeof(stage), ".report-%s", job->record_name + strlen(".state-"));
	else
		snprintf(stage, sizeof(stage), "%s", job->record_name);
	op->result = fsops_finish(f->dir->proc_fd, job->name, dst_fd, job->finished_ms / 1000,
				  job->report_text, stage, rejects ? job->rejects_name : NULL,
				  &job->final_name);
	if (op->result == -ENOENT &&
	    fstatat(f->dir->proc_fd, job->name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
		/* Not a problem of the destination: the file itself left processing (removed
		 * by hand, or with its inbox). Its record and staged report go too. */
		job->finish_src_gone = true;
		(void)unlinkat(f->dir->proc_fd, stage, 0);
		(void)unlinkat(f->dir->proc_fd, job->record_name, 0);
		(void)unlinkat(f->dir->proc_fd, job->rejects_name, 0);
		return;
	}
	if (op->result < 0)
		return;
	/* A rejects file that an earlier run staged for a namesake is not this file's. */
	if (!rejects && job->resumed)
		(void)unlinkat(f->dir->proc_fd, job->rejects_name, 0);
	/* The record goes after the file: a crash in between leaves a record without a file
	 * (the folder's next opening removes it), or beside a new file of the name, which its
	 * sha256 tells apart. */
	if (job_record_holds_import(job))
		(void)unlinkat(f->dir->proc_fd, job->record_name, 0);
	op->sync_gained = dst_fd;
	op->sync_lost = f->dir->proc_fd;
}

/* A finished file's directory (done or failed) could not be used: said once per folder and
 * directory, however many files wait for it; and once when it can be used again. */
static void job_note_finish_dir(struct job *job, int r)
{
	struct job_folder *f = job->folder;
	const struct config_folder *conf = f->conf;
	bool failed = job->rep.failed;
	const char *path = failed ? conf->failed : conf->done;
	int *problem = &f->dir->trouble.dir_problem[failed];

	/* Two files may find it replaced at once, each in its disk thread: said once. */
	if (job->finish_adopted && job->finish_adopted != f->dir->trouble.dir_adopted[failed]) {
		f->dir->trouble.dir_adopted[failed] = job->finish_adopted;
		log_warning("%s: %s directory '%s' was replaced by another directory; files go to "
			    "the new one",
			    conf->name, failed ? "failed" : "done", path);
	}
	if (r < 0 && *problem == 0)
		log_event(LOG_LEVEL_ERROR,
			  &(struct log_fields){LOG_ID_DIR_UNUSABLE, conf->name, NULL, NULL, NULL},
			  "%s: %s directory '%s' cannot be used: %s; nothing is written there, and "
			  "finished files wait in '%s/%s' until it is a real directory again",
			  conf->name, failed ? "failed" : "done", path, fsops_dir_check_reason(r),
			  conf->inbox, FSOPS_PROCESSING_DIR);
	else if (r == 0 && *problem != 0)
		log_info("%s: %s directory '%s' can be used again", conf->name,
			 failed ? "failed" : "done", path);
	*problem = r;
}

/* The receipt's fate, said once when receipts start failing and once when they work again
 * (with those that waited). */
static void job_note_receipt(struct job *job)
{
	struct job_folder *f = job->folder;
	int *said = &f->dir->trouble.receipts_error;

	if (job->receipt_result < 0 && *said == 0)
		log_error("%s: cannot write the receipt of '%s': %s; receipts wait and are written "
			  "once the directory can be written (the files themselves go on)",
			  job_folder_name(job), job->name, job->receipt_why);
	else if (job->receipt_result == 0 && *said != 0)
		log_info("%s: receipts can be written to '%s' again (those that waited are "
			 "written)", job_folder_name(job), f->conf->receipts.dir);
	*said = job->receipt_result;
}

static void job_finish_done(struct diskq_op *op)
{
	struct job *job = (struct job *)((char *)op - offsetof(struct job, op));
	struct job_folder *f = job->folder;
	const struct config_folder *conf = f->conf;
	const char *dir = job->rep.failed ? conf->failed : conf->done;

	job_note_finish_dir(job, job->finish_dir_result);
	if (job->receipt_written && job->receipt_result != 1) {
		job_note_receipt(job);
		job->receipt_result = 1; /* said */
	}
	if (job->finish_src_gone) {
		log_error("%s: '%s' is no longer in '%s/%s' (removed, or gone with its inbox); "
			  "nothing was moved to '%s'%s%s",
			  conf->name, job->name, conf->inbox, FSOPS_PROCESSING_DIR, dir,
			  job->rep.import_id[0] ? "; it was uploaded as import " : "",
			  job->rep.import_id);
		job_end(job, JOB_END_VANISHED); /* the name left processing: a namesake can come */
		return;
	}
	if (op->result < 0) {
		/* Temporary by nature (a full disk, an I/O error, a directory made read-only or
		 * replaced): the file stays where it is and the move is tried again, which says
		 * more than a file failed for a reason of ours. */
		f->dir->trouble.stuck_error = op->result;
		f->dir->trouble.stuck_failed_dir = job->rep.failed;
		if (job->finish_failures++ == 0 && job->finish_dir_result == 0)
			log_event(LOG_LEVEL_ERROR,
				  &(struct log_fields){LOG_ID_MOVE_FAILED, conf->name, job->name,
						       job->rep.import_id[0] ? job->rep.import_id
									     : NULL,
						       NULL},
				  "%s: '%s' could not be moved to '%s': %s; it stays in '%s/%s' and "
				  "the move is retried until it works",
				  conf->name, job->name, dir, strerror(-op->result), conf->inbox,
				  FSOPS_PROCESSING_DIR);
		/* While it waits, a stop or a crash must not make the next start upload it again:
		 * an import that only this job knows of is recorded first. */
		if (job->rec == JOB_RECORD_BEHIND)
			job_enter_then(job, JOB_RECORDING, JOB_FINISH_WAIT);
		else
			job_enter(job, JOB_FINISH_WAIT);
		return;
	}
	if (op->sync_result < 0)
		log_warning("%s: '%s' moved to '%s', but the directory could not be synced: %s",
			    conf->name, job->name, dir, strerror(-op->sync_result));
	if (job->finish_failures)
		log_info("%s: '%s' could be moved after %u failed attempt%s", conf->name, job->name,
			 job->finish_failures, job->finish_failures == 1 ? "" : "s");
	report_log_outcome(&job->rep, dir, job->final_name);
	if (!job->end_recorded)
		(void)job_ledger_record(job,
					job->rep.failed	      ? LEDGER_FAILED
					: job->rep.duplicate_of ? LEDGER_SKIPPED
								: LEDGER_DONE,
					NULL);
	metrics_file_finished(f->metrics, job->rep.failed);
	if (!job->rep.failed && !job->rep.duplicate_of && job->rep.csv && job->rep.csv->read)
		metrics_rows(f->metrics, job->rep.csv->rows_uploaded, job->rep.csv->rows_rejected);
	job_end(job, JOB_END_FINISHED);
}

/* What the report and the ledger say of a file's end, fixed once (it may be moved after
 * retries): the time, and a split file's attempts summed. */
static void job_prepare_finish(struct job *job)
{
	struct report *rep = &job->rep;

	/* A split file's report counts every part's attempts. */
	if (rep->n_parts > 1 && !job->finished_ms) {
		unsigned sum = 0;

		if (job->part < rep->n_parts)
			rep->parts[job->part].attempts = rep->attempts;
		for (size_t i = 0; i < rep->n_parts; i++)
			sum += rep->parts[i].attempts;
		rep->attempts = sum;
	}
	if (!job->finished_ms)
		job->finished_ms = job_now_wall_ms();
}

static void job_end_recorded(void *data)
{
	struct job *job = data;

	job->lookup = NULL;
	job->end_recorded = true;
	/* Else it is in RECORDING (job_ledger_failing): back in LEDGER_WAIT, it goes on. */
	if (job->state == JOB_LEDGER_WAIT)
		job_enter(job, JOB_FINISHING);
}

static void job_start_finish(struct job *job)
{
	job_prepare_finish(job);
	job->op.work = job_finish_work;
	job->op.done = job_finish_done;
	job->env->host->disk(job->env->data, &job->op);
}

/* ---- entering a state: the one place where states change ------------------------------- */

/* Puts JOB in state TO, to go on to THEN after it (RECORDING, SAVING, RETRY_WAIT; JOB_NO_THEN
 * for the others), and starts what TO does. During a drain, a state that would wait or start
 * new work ends the job instead: its file stays in processing for the next start. */
static void job_enter_then(struct job *job, enum job_state to, enum job_state then)
{
	struct job_env *env = job->env;
	bool ok = true;
	int r;

	/* The ledger learns how a file ended before the file moves: a crash in between leaves
	 * the file in processing with its end recorded, never a file in done/ that the ledger
	 * does not know was imported. */
	if (to == JOB_FINISHING && env->lq && !job->dry_run && !job->end_recorded)
		to = JOB_LEDGER_WAIT;
	/* A ledger that fails may not record that end for a long time: a drain does not wait for
	 * it. */
	if (env->draining &&
	    (!job_states[to].in_drain || (to == JOB_LEDGER_WAIT && env->ledger_failing))) {
		job_release(job);
		return;
	}
	/* Nor does a crash meanwhile upload the file again: its import goes into its record
	 * first. */
	if (to == JOB_LEDGER_WAIT && env->ledger_failing && job_import_unrecorded(job)) {
		to = JOB_RECORDING;
		then = JOB_LEDGER_WAIT;
	}
	if (!job_set_state(job, to, then))
		return;
	switch (to) {
	case JOB_CLAIMING:
		job->rep.claimed_at_ms = job_now_wall_ms();
		job->op.work = job_claim_work;
		job->op.done = job_claim_done;
		env->host->disk(env->data, &job->op);
		break;
	case JOB_CHECKING:
		job->work.data = job;
		r = uv_queue_work(env->loop, &job->work, job_check_work, job_check_done);
		if (r < 0) {
			log_error("%s: '%s': cannot start its check: %s; it stays in processing",
				  job_folder_name(job), job->name, uv_strerror(r));
			job_end(job, JOB_END_RELEASED);
		}
		break;
	case JOB_LOOKING_UP:
		job_start_lookup(job);
		break;
	case JOB_RECONCILING:
		reconcile_add(env->reconcile, &job->re);
		break;
	case JOB_DUP_WAIT:
		/* Asked again now and then too: a file it waits for that never comes back (taken
		 * out of processing by hand) must not hold it for ever. */
		ok = pacer_at(env->pacer, &job->se, JOB_DUP_RECHECK_MS) == 0;
		break;
	case JOB_QUEUED:
		pacer_upload(env->pacer, &job->se, job->requeue_front);
		job->requeue_front = false;
		break;
	case JOB_BATCHING:
	case JOB_BATCHED:
		job_batch_start_record(job);
		break;
	case JOB_SAVING:
		ok = job_start_record(job);
		break;
	case JOB_UPLOADING:
		job->upload_started_ms = uv_now(env->loop);
		job->rep.attempts++;
		if (job->rec == JOB_RECORD_AHEAD)
			job->rec = JOB_RECORD_CURRENT; /* it counts the one made now */
		job_start_upload(job);
		break;
	case JOB_RETRY_WAIT:
		job->requeue_front = true;
		ok = pacer_at(env->pacer, &job->se, job->retry_delay_ms) == 0;
		break;
	case JOB_RECORDING:
		ok = job_start_record(job);
		break;
	case JOB_FOLLOW_WAIT:
		if (!job->follow_started_ms)
			job->follow_started_ms = uv_now(env->loop);
		/* Followed with the other imports (follow.h): asked about, and answered, by the
		 * follower. */
		if (!job->fe.imp)
			ok = follow_add(env->follow, &job->fe,
					job->rep.parts[job->poll_part].import_id) == 0;
		break;
	case JOB_POLLING:
		/* The follower's request about its import is in flight. */
		break;
	case JOB_LEDGER_WAIT:
		job_prepare_finish(job);
		/* Back from RECORDING (job_ledger_failing): its end was queued before. */
		if (job->end_recorded) {
			job_enter(job, JOB_FINISHING);
			break;
		}
		if (job->lookup)
			break;
		if (job_ledger_record(job,
				      job->rep.failed	    ? LEDGER_FAILED
				      : job->rep.duplicate_of ? LEDGER_SKIPPED
							      : LEDGER_DONE,
				      job_end_recorded) < 0) {
			job->end_recorded = true; /* said by the ledger queue; moved all the same */
			job_enter(job, JOB_FINISHING);
		}
		break;
	case JOB_FINISHING:
		job_start_finish(job);
		break;
	case JOB_FINISH_WAIT:
		ok = pacer_at(env->pacer, &job->se,
			      job_next_delay(&job->finish_delay_ms, JOB_FINISH_FIRST_MS,
					     JOB_FINISH_MAX_MS)) == 0;
		break;
	case JOB_NEW:
	case JOB_ENDED:
	case JOB_N_STATES:
		break;
	}
	if (!ok) {
		log_error("%s: '%s': out of memory while %s; it stays in processing",
			  job_folder_name(job), job->name, job_states[to].name);
		job_end(job, JOB_END_RELEASED);
	}
}

void job_enter(struct job *job, enum job_state to)
{
	job_enter_then(job, to, JOB_NO_THEN);
}

/* Leaves RECORDING, SAVING or RETRY_WAIT for the continuation it was entered with. */
static void job_continue(struct job *job)
{
	switch (job->then) {
	case JOB_ENDED:
		job_end(job, JOB_END_RELEASED);
		break;
	case JOB_SAVING:
		/* RETRY_WAIT's: a file is saved before it is queued again. */
		job_enter_then(job, JOB_SAVING, JOB_QUEUED);
		break;
	default:
		job_enter(job, job->then);
		break;
	}
}

void job_release(struct job *job)
{
	pacer_cancel(job->env->pacer, &job->se);
	if (job->lookup) {
		ledgerq_cancel(job->env->lq, job->lookup);
		job->lookup = NULL;
	}
	if (job->rec == JOB_RECORD_AHEAD) {
		/* Its record counts the upload it was waiting for: say what was made first. */
		job_enter_then(job, JOB_SAVING, JOB_ENDED);
		return;
	}
	if (job_import_unrecorded(job)) {
		/* An import only memory and the ledger's queue know: the next start must find it
		 * in the record, not upload the file again. */
		job_enter_then(job, JOB_RECORDING, JOB_ENDED);
		return;
	}
	job_end(job, JOB_END_RELEASED);
}

void job_ledger_failing(struct job *job)
{
	if (job->state != JOB_LEDGER_WAIT)
		return;
	if (job->env->draining) {
		job_release(job);
		return;
	}
	/* Its end stays queued for the ledger, and waited for (job_end_recorded) from
	 * RECORDING and back in LEDGER_WAIT. */
	if (job_import_unrecorded(job))
		job_enter_then(job, JOB_RECORDING, JOB_LEDGER_WAIT);
}

void job_drain(struct job *job)
{
	if (job_states[job->state].waits ||
	    (job->state == JOB_LEDGER_WAIT && job->env->ledger_failing)) {
		job_release(job);
	} else if (job->state == JOB_CHECKING) {
		/* A check not yet started is cancelled; one hashing stops at its next read. */
		atomic_store(&job->cancel, true);
		uv_cancel((uv_req_t *)&job->work);
	}
}

void job_abort(struct job *job)
{
	if (job->state != JOB_UPLOADING && job->state != JOB_POLLING)
		return;
	log_warning("%s: '%s': %s aborted at shutdown; it stays in processing for the next start",
		    job_folder_name(job), job->name,
		    job->state == JOB_UPLOADING ? "upload" : "import check");
	job_end(job, JOB_END_RELEASED);
}

/* Frees JOB; none of its work may be outstanding. The engine hears of it first. */
static void job_end(struct job *job, enum job_end how)
{
	struct job_env *env = job->env;

	/* A leader let go before its batch's answer (a drain, an abort): so are the others. */
	if (job->batch)
		job_batch_dissolve(job, true);
	if (job->state != JOB_ENDED)
		job_set_state(job, JOB_ENDED, JOB_NO_THEN);
	pacer_cancel(env->pacer, &job->se);
	if (job->lookup)
		ledgerq_cancel(env->lq, job->lookup);
	job->lookup = NULL;
	follow_remove(env->follow, &job->fe);
	if (env->reconcile)
		reconcile_remove(env->reconcile, &job->re);
	job_inflight_release(job);
	if (job->call)
		resend_call_free(job->call);
	if (job->check.fd >= 0)
		close(job->check.fd);
	env->host->ended(env->data, job, how);
	cJSON_free(job->record_text);
	cJSON_free(job->report_text);
	free(job->final_name);
	free(job->rejects_final);
	free(job->rep.parts);
	batch_info_unref(job->rep.batch);
	ledger_entry_clear(&job->duplicate);
	normalize_clear(&job->check.norm);
	staterec_clear(&job->record);
	free(job);
}

/* ---- the pacer's events ------------------------------------------------------------ */

void job_pacer_due(struct pacer_entry *e, void *data)
{
	struct job *job = JOB_FROM_PE(e);

	(void)data;
	switch (job->state) {
	case JOB_RETRY_WAIT:
		job_continue(job);
		break;
	case JOB_FINISH_WAIT:
		job_enter(job, JOB_FINISHING);
		break;
	case JOB_DUP_WAIT:
		job_inflight_unwait(job);
		job_enter(job, JOB_LOOKING_UP);
		break;
	default:
		break;
	}
}

void job_pacer_upload(struct pacer_entry *e, void *data)
{
	struct job *job = JOB_FROM_PE(e);

	(void)data;
	if (!job_batch_form(job))
		job_enter(job, JOB_UPLOADING);
}

#define JOB_FROM_RE(e) ((struct job *)((char *)(e) - offsetof(struct job, re)))

void job_reconcile_done(struct reconcile_entry *e, const struct reconcile_result *r, void *data)
{
	struct job *job = JOB_FROM_RE(e);
	struct report_part *part = &job->rep.parts[0];

	(void)data;
	if (job->state != JOB_RECONCILING)
		return;
	job->reconciled = true;
	job->rep.reconciled = 1 + (int)r->outcome;
	job->rep.reconcile_candidates = r->candidates;
	if (r->outcome != RECONCILE_ADOPT) {
		if (r->outcome == RECONCILE_SEVERAL)
			log_warning("%s: '%s': %u imports made since its upload before the restart "
				    "could be its own; it is uploaded again", job_folder_name(job),
				    job->name, r->candidates);
		else
			log_info("%s: '%s': no import was made by its upload before the restart; it is "
				 "uploaded", job_folder_name(job), job->name);
		job_after_lookup(job);
		return;
	}
	log_info("%s: '%s': its upload before the restart reached Resend: import %s (%lld rows%s) "
		 "is adopted, nothing is sent again", job_folder_name(job), job->name, r->import_id,
		 (long long)r->import.total, job->rep.batch ? ", the batch's" : "");
	snprintf(part->import_id, sizeof(part->import_id), "%s", r->import_id);
	part->attempts = job->rep.attempts;
	memcpy(job->rep.import_id, part->import_id, sizeof(job->rep.import_id));
	job->rep.uploaded_at_ms = job_now_wall_ms();
	job->part = 1;
	job->rec = JOB_RECORD_BEHIND;
	(void)job_ledger_record(job, LEDGER_UPLOADED, NULL);
	if (job->folder->conf->settings.follow_import)
		job_enter_then(job, JOB_RECORDING, JOB_FOLLOW_WAIT);
	else
		job_enter(job, JOB_FINISHING);
}

#define JOB_FROM_FE(e) ((struct job *)((char *)(e) - offsetof(struct job, fe)))

void job_follow_asked(struct follow_entry *e, void *data)
{
	struct job *job = JOB_FROM_FE(e);

	(void)data;
	if (job->state == JOB_FOLLOW_WAIT)
		job_enter(job, JOB_POLLING);
}

void job_follow_answered(struct follow_entry *e, const struct follow_result *r, void *data)
{
	struct job *job = JOB_FROM_FE(e);

	(void)data;
	if (job->state == JOB_FOLLOW_WAIT) {
		/* Not asked about, but a list showed its import ended: news all the same. */
		if (!(r->have && (r->import.state == RESEND_IMPORT_COMPLETED ||
				  r->import.state == RESEND_IMPORT_FAILED)))
			return;
		job_enter(job, JOB_POLLING);
	}
	if (job->state == JOB_POLLING)
		job_poll_result(job, r);
}

