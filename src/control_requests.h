/* What the control socket says and does: GET /status (JSON), GET /metrics (the registry plus
 * the live gauges), and the commands pause, resume and retry. It reads the running pipeline
 * through VIEW, which the daemon fills in for each request; the pause list outlives
 * pipelines, so a folder stays paused across a reload (not across a restart). */
#ifndef RDD_CONTROL_REQUESTS_H
#define RDD_CONTROL_REQUESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "watch.h"

struct engine;
struct control_pauses;

struct control_view {
	const struct config *cfg;
	struct engine *engine;         /* NULL: no pipeline (between two) */
	struct watch *const *watches; /* cfg->n_folders entries, any NULL */
	struct folder *const *folders; /* cfg->n_folders entries: their directories (folder.h) */
	struct metrics *metrics;
	struct control_pauses *pauses;
	const char *state; /* "running", "reloading", "stopping" */
	int64_t started_ms; /* wall clock */
	uint64_t loop_now_ms; /* the loop's uv_now, the watch's clock */
	struct fleet *fleet;        /* NULL: one host */
	const char *ledger_backend; /* "sqlite", "postgresql"; NULL: none (a dry run) */
	const char *ledger_error;   /* why it cannot be written now; NULL: it can */
	/* A folder was resumed: its parked files may be offered again. */
	void (*resumed)(void *data);
	void *data;
};

int control_pauses_new(struct control_pauses **ret);
void control_pauses_free(struct control_pauses *p);
/* After a pipeline started: the folders paused before are paused in it too. */
void control_apply_pauses(const struct control_view *s);

/* The JSON text (malloc'd), NULL when out of memory. O(folders). */
char *control_status_json(const struct control_view *s);
/* The Prometheus text (malloc'd) in *RET. -ENOMEM. */
int control_metrics_text(const struct control_view *s, char **ret, size_t *ret_len);
/* CMD is "pause", "resume" or "retry"; FOLDER and FILE may be NULL. Returns the HTTP status
 * and a JSON body (malloc'd, NULL when out of memory) in *RET_BODY: {"error": ...} when the
 * status is not 200. */
unsigned control_command(const struct control_view *s, const char *cmd, const char *folder,
			const char *file, char **ret_body);

#endif
