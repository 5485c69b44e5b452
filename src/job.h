/* Files from claim to done/failed: each file's state machine (job.c), and the engine around it:
 * the name index of everything in processing, the slots, the resume backlog, pauses, drain. */
#ifndef RDD_JOB_H
#define RDD_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "api.h"
#include "config.h"
#include "fsops.h"

struct jobs;

/* What jobs_submit did with a settled inbox file. */
enum jobs_submit {
	JOBS_CLAIMING,          /* taken: being claimed; a `claimed` event tells how it went */
	JOBS_CHECKING_IN_PLACE, /* dry run: checked where it is, never claimed */
	JOBS_LATER,             /* no slot free: a `capacity` event comes when one is */
	JOBS_NAME_BUSY,         /* a file of that name is in processing: `left` comes when it goes */
	JOBS_STOPPING,          /* draining: nothing more comes */
};

/* How a claim ended. */
enum jobs_claim {
	JOBS_CLAIMED,      /* it is in processing */
	JOBS_GONE,         /* it had left the inbox */
	JOBS_CHANGED,      /* it changed since it settled, or a writer still has it open */
	JOBS_BUSY,         /* a file of that name was found in processing: `left` comes */
	JOBS_CLAIM_FAILED, /* an error (logged); it stays in the inbox */
};

/* Events to the daemon. None comes from inside jobs_submit, and none while draining. */
struct jobs_events {
	void (*claimed)(size_t folder, const char *name, enum jobs_claim how, void *data);
	/* NAME left folder FOLDER's processing directory: a namesake in the inbox can go. */
	void (*left)(size_t folder, const char *name, void *data);
	/* Slots are free: submit parked files until jobs_submit says JOBS_LATER. */
	void (*capacity)(void *data);
	/* Nothing is claimed, waiting or in flight (for --once). */
	void (*idle)(void *data);
	/* The API key was refused; with --once the daemon gives up instead of pausing. */
	void (*auth_failed)(void *data);
	void *data;
};

enum jobs_flags {
	JOBS_DRY_RUN = 1 << 0, /* check and log; claim, upload and move nothing */
};

/* CFG, DIRS (each folder's directories, cfg->n_folders of them, in the configuration's order)
 * and API must outlive JOBS. Starts the disk thread. A folder whose directories are not open
 * (folder_is_open false) is left alone until the daemon says otherwise: nothing is submitted
 * or resumed for it. */
struct folder;
int jobs_new(uv_loop_t *loop, const struct config *cfg, struct folder *const *dirs,
	     struct api *api, unsigned flags, const struct jobs_events *events, struct jobs **ret);

/* The daemon's ledger (it outlives JOBS; NULL: none): files are recorded there, duplicates
 * looked up. jobs_ledger_health says that writing to it fails (FAILING), or works again: no new
 * file is claimed while it fails. */
struct ledgerq;
void jobs_set_ledger(struct jobs *js, struct ledgerq *lq);
void jobs_ledger_health(struct jobs *js, bool failing, const char *error);

/* Offers inbox file NAME of folder FOLDER, as it was when it settled (SEEN): O(1). */
enum jobs_submit jobs_submit(struct jobs *js, size_t folder, const char *name,
			     const struct fsops_seen *seen);

/* Resumes whatever an earlier run left in folder FOLDER's processing directory (listed in the
 * disk thread; those files go before new ones). */
void jobs_resume(struct jobs *js, size_t folder);

/* Folder FOLDER's inbox was re-created (the watch saw it): opens it, sets up its processing
 * directory and lock again, and swaps them in. 0, or the error (logged here). Files still in
 * the old processing directory went with it. */
int jobs_folder_reopen(struct jobs *js, size_t folder);

/* Files known to jobs: claimed or being claimed, plus the resume backlog. */
size_t jobs_active(const struct jobs *js);
unsigned jobs_failed_total(const struct jobs *js);
void jobs_log_status(const struct jobs *js);

/* Stops taking files. What only waits is released at once (it stays in processing, with its
 * record, for the next start); disk work and checks run to their end; uploads and polls in
 * flight get at most TIMEOUT_MS, then are aborted. DONE_CB(DATA) once nothing is left; the
 * caller then frees JOBS with jobs_close. */
void jobs_drain(struct jobs *js, uint64_t timeout_ms, void (*done_cb)(void *data), void *data);

/* Closes a drained JOBS: its handles and the disk thread; frees it in the last close callback. */
void jobs_close(struct jobs *js);

/* What jobs holds, by what a service manager's status line says of it (notify.c). */
struct jobs_counts {
	size_t waiting;   /* claimed, not yet uploaded (checks, queue, retry waits, the backlog) */
	size_t uploading; /* an upload in flight */
	size_t following; /* uploaded: its import id recorded, followed until it ends */
	size_t finishing; /* being moved to done/failed, or waiting to be */
	bool paused, auth_paused;
};
/* O(1): from the state counters. */
void jobs_counts(const struct jobs *js, struct jobs_counts *ret);

#endif
