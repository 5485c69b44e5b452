#include "jobs_control.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <utlist.h>

#include "job_internal.h"

void jobs_control_folder(const struct jobs *js, size_t folder, struct jobs_folder_view *ret)
{
	const struct folder_rt *f = &js->folders[folder];
	const struct config_folder *c = f->conf;
	const unsigned *n = f->n_state;
	const struct claimed *b;
	const struct job *j;

	memset(ret, 0, sizeof(*ret));
	ret->waiting = n[JOB_QUEUED];
	/* O(files in hand), at most max_holding. */
	for (j = js->jobs; j && n[JOB_QUEUED]; j = j->next) {
		if (j->folder_index == folder && j->state == JOB_QUEUED && j->rep.claimed_at_ms > 0 &&
		    (!ret->oldest_claimed_ms || j->rep.claimed_at_ms < ret->oldest_claimed_ms))
			ret->oldest_claimed_ms = j->rep.claimed_at_ms;
	}
	DL_FOREACH(js->backlog_head, b)
		ret->waiting += b->folder == folder;
	ret->processing = n[JOB_NEW] + n[JOB_CLAIMING] + n[JOB_CHECKING] + n[JOB_LOOKING_UP] +
			  n[JOB_DUP_WAIT] + n[JOB_SAVING] + n[JOB_RECORDING] + n[JOB_LEDGER_WAIT] +
			  n[JOB_FINISHING] +
			  n[JOB_FINISH_WAIT];
	ret->uploading = n[JOB_UPLOADING];
	ret->retrying = n[JOB_RETRY_WAIT];
	ret->following = n[JOB_FOLLOW_WAIT] + n[JOB_POLLING];
	ret->paused = f->paused;
	/* The most serious first: nothing can be finished, then nothing uploaded or claimed. */
	for (int k = 0; k < 2 && !ret->last_error[0]; k++) {
		if (f->dir_problem[k])
			snprintf(ret->last_error, sizeof(ret->last_error),
				 "%s directory '%s' cannot be used: %s", k ? "failed" : "done",
				 k ? c->failed : c->done, fsops_dir_check_reason(f->dir_problem[k]));
	}
	if (!ret->last_error[0] && f->n_stuck)
		snprintf(ret->last_error, sizeof(ret->last_error),
			 "%u file%s cannot be moved to '%s': %s", f->n_stuck,
			 f->n_stuck == 1 ? "" : "s", f->stuck_failed_dir ? c->failed : c->done,
			 strerror(-f->stuck_error));
	if (!ret->last_error[0] && f->save_error)
		snprintf(ret->last_error, sizeof(ret->last_error),
			 "state records cannot be written in '%s/%s': %s", c->inbox,
			 FSOPS_PROCESSING_DIR, strerror(-f->save_error));
	if (!ret->last_error[0] && f->claim_error)
		snprintf(ret->last_error, sizeof(ret->last_error),
			 "files cannot be claimed from '%s': %s", c->inbox, strerror(-f->claim_error));
}

/* Loop milliseconds to the wall clock. */
static int64_t jobs_control_wall(const struct jobs *js, uint64_t loop_ms)
{
	uint64_t now = uv_now(js->loop);

	if (!loop_ms)
		return 0;
	return jobs_now_wall_ms() + (loop_ms > now ? (int64_t)(loop_ms - now) : 0);
}

void jobs_control_api(const struct jobs *js, struct jobs_api_view *ret)
{
	const struct pacer *p = &js->pacer;

	memset(ret, 0, sizeof(*ret));
	ret->paused = js->paused;
	ret->auth = js->auth_paused;
	if (js->paused)
		ret->paused_until_ms = jobs_control_wall(js, p->paused_until);
	ret->rate = p->rl.rate;
	ret->tokens = p->rl.tokens;
	if (p->rl.blocked_until_ms > uv_now(js->loop))
		ret->blocked_until_ms = jobs_control_wall(js, p->rl.blocked_until_ms);
	ret->in_flight = p->in_flight;
	ret->max_in_flight = p->max_in_flight;
}

void jobs_control_pause(struct jobs *js, size_t folder, bool paused)
{
	js->folders[folder].paused = paused;
	pacer_pause_lane(&js->pacer, folder, paused);
}

bool jobs_control_paused(const struct jobs *js, size_t folder)
{
	return js->folders[folder].paused;
}

int jobs_control_unfail(struct jobs *js, size_t folder, const char *name, char **ret_report)
{
	const struct folder_rt *f = &js->folders[folder];

	if (f->dir->failed_fd < 0 || f->dir->inbox_fd < 0)
		return -EBADF; /* a dry run opens no failed directory; an unavailable folder none */
	/* Two renames on the loop thread: metadata the kernel holds, like the watch's fstatat. No
	 * fsync: should the machine crash before the directories are written, the file is still
	 * in exactly one place (failed/, or the inbox), and the operator retries it again. */
	return fsops_unfail(f->dir->failed_fd, f->dir->inbox_fd, name, jobs_now_wall_ms() / 1000,
			    ret_report);
}

void jobs_control_set_metrics(struct jobs *js, struct metrics *m)
{
	js->metrics = m;
	for (size_t i = 0; i < js->n_folders; i++)
		js->folders[i].metrics = m ? metrics_folder(m, js->folders[i].conf->name) : NULL;
}
