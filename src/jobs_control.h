/* What the control socket asks of the engine (job.h's jobs): a folder's numbers and its last
 * problem, the API pause and the rate limiter, pausing a folder's uploads, and putting a failed
 * file back. Loop thread only; each call is O(1) except where said. */
#ifndef RDD_JOBS_CONTROL_H
#define RDD_JOBS_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "metrics.h"

struct jobs_folder_view {
	unsigned waiting;    /* claimed, waiting for an upload slot; and the resume backlog */
	unsigned processing; /* being claimed, checked, recorded or moved */
	unsigned uploading, retrying, following;
	int64_t oldest_claimed_ms; /* wall clock: the claim of the oldest waiting one; 0: none */
	bool paused;
	char last_error[320]; /* "" when the folder has no problem now */
};

/* O(resume backlog), which is empty but after a restart that found files in processing. */
void jobs_control_folder(const struct jobs *js, size_t folder, struct jobs_folder_view *ret);

struct jobs_api_view {
	bool paused; /* the key (auth) or the quota was refused: no request goes out */
	bool auth;
	int64_t paused_until_ms; /* wall clock; 0: not paused */
	double rate, tokens;
	int64_t blocked_until_ms; /* wall clock, from the server's rate-limit headers; 0: none */
	unsigned in_flight, max_in_flight;
};
void jobs_control_api(const struct jobs *js, struct jobs_api_view *ret);

/* Folder FOLDER starts no upload while PAUSED; what runs finishes. */
void jobs_control_pause(struct jobs *js, size_t folder, bool paused);
bool jobs_control_paused(const struct jobs *js, size_t folder);

/* fsops_unfail on folder FOLDER's failed directory and inbox: the watch then sees the file
 * arrive like any other. */
int jobs_control_unfail(struct jobs *js, size_t folder, const char *name, char **ret_report);

/* Counts into M (which outlives JOBS) from now on; each folder's counters by its name. */
void jobs_control_set_metrics(struct jobs *js, struct metrics *m);

#endif
