/* What the control socket says and does: GET /status (JSON), GET /metrics (the registry plus
 * the live gauges), and the commands pause, resume and retry. It reads the running pipeline
 * through STATUS_SRC, which the daemon fills in for each request; the pause list outlives
 * pipelines, so a folder stays paused across a reload (not across a restart). */
#ifndef RDD_STATUS_H
#define RDD_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "watch.h"

struct engine;
struct status_pauses;

struct status_src {
	const struct config *cfg;
	struct engine *engine;         /* NULL: no pipeline (between two) */
	struct watch *const *watches; /* cfg->n_folders entries, any NULL */
	struct folder *const *folders; /* cfg->n_folders entries: their directories (folder.h) */
	struct metrics *metrics;
	struct status_pauses *pauses;
	const char *state; /* "running", "reloading", "stopping" */
	int64_t started_ms; /* wall clock */
	uint64_t loop_now_ms; /* the loop's uv_now, the watch's clock */
	/* A folder was resumed: its parked files may be offered again. */
	void (*resumed)(void *data);
	void *data;
};

int status_pauses_new(struct status_pauses **ret);
void status_pauses_free(struct status_pauses *p);
/* After a pipeline started: the folders paused before are paused in it too. */
void status_apply_pauses(const struct status_src *s);

/* The JSON text (malloc'd), NULL when out of memory. O(folders). */
char *status_json(const struct status_src *s);
/* The Prometheus text (malloc'd) in *RET. -ENOMEM. */
int status_metrics(const struct status_src *s, char **ret, size_t *ret_len);
/* CMD is "pause", "resume" or "retry"; FOLDER and FILE may be NULL. Returns the HTTP status
 * and a JSON body (malloc'd, NULL when out of memory) in *RET_BODY: {"error": ...} when the
 * status is not 200. */
unsigned status_command(const struct status_src *s, const char *cmd, const char *folder,
			const char *file, char **ret_body);

#endif
