/* Files from claim to done/failed: the per-file state machine, the fair upload queue, retries,
 * the global pauses (bad API key, quota) and following the import. */
#ifndef RDD_JOB_H
#define RDD_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "api.h"
#include "config.h"

struct jobs;

struct jobs_events {
	/* Nothing is in flight or waiting any more (for --once). */
	void (*idle)(void *data);
	/* The API key was refused; with --once the daemon gives up instead of pausing. */
	void (*auth_failed)(void *data);
	/* NAME of folder FOLDER left processing: a namesake waiting in the inbox can go now. */
	void (*finished)(size_t folder, const char *name, void *data);
	void *data;
};

enum jobs_flags {
	JOBS_DRY_RUN = 1 << 0, /* check and log; claim, upload and move nothing */
};

/* CFG and API must outlive JOBS. Creates each folder's processing directory. */
int jobs_new(uv_loop_t *loop, const struct config *cfg, struct api *api, unsigned flags,
	     const struct jobs_events *events, struct jobs **ret);

/* Takes inbox file NAME of folder INDEX: claims it and starts its life. -EEXIST: a file of that
 * name is still being processed, try again later; -ENOENT: it vanished; -ECANCELED: shutting
 * down. In dry-run mode nothing is claimed. */
int jobs_submit(struct jobs *js, size_t folder, const char *name);

/* Resumes whatever an earlier run left in folder INDEX's processing directory. */
int jobs_resume(struct jobs *js, size_t folder);

size_t jobs_active(const struct jobs *js);
unsigned jobs_failed_total(const struct jobs *js);
void jobs_log_status(const struct jobs *js);

/* Stops taking files; lets uploads in flight finish for at most TIMEOUT_MS, then aborts them.
 * Unfinished files stay in processing, with their state, for the next start. Calls DONE_CB once
 * nothing runs any more; the caller then frees JOBS with jobs_close. */
void jobs_drain(struct jobs *js, uint64_t timeout_ms, void (*done_cb)(void *data), void *data);

/* Closes the handles of a drained JOBS; frees it in the last close callback. */
void jobs_close(struct jobs *js);

#endif
