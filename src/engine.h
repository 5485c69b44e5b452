/* The engine: every file from its claim to done/ or failed/. It keeps the name index of what is
 * in each processing directory, the slots (at most max_holding files hold a descriptor before
 * their upload), the resume backlog, the pauses, the end of each loop turn (admission, events to
 * the daemon, the disk batch) and the drain; each file's own life is its job (job.h, job.c),
 * which the engine drives and which reports back through one small interface. What the control
 * socket reads and does is here too (a folder's numbers, the API's state, pause, retry). */
#ifndef RDD_ENGINE_H
#define RDD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "fsops.h"

struct engine;
struct resend_client;
struct folder;
struct ledgerq;
struct metrics;
struct pacer;

/* What engine_submit did with a settled inbox file. */
enum engine_submit {
	ENGINE_CLAIMING,          /* taken: being claimed; a `claimed` event tells how it went */
	ENGINE_CHECKING_IN_PLACE, /* dry run: checked where it is, never claimed */
	ENGINE_LATER,             /* no slot free: a `capacity` event comes when one is */
	ENGINE_NAME_BUSY,         /* a file of that name is in processing: `left` comes when it goes */
	ENGINE_STOPPING,          /* draining: nothing more comes */
};

/* How a claim ended. */
enum engine_claim {
	ENGINE_CLAIMED,      /* it is in processing */
	ENGINE_GONE,         /* it had left the inbox */
	ENGINE_CHANGED,      /* it changed since it settled, or a writer still has it open */
	ENGINE_BUSY,         /* a file of that name was found in processing: `left` comes */
	ENGINE_CLAIM_FAILED, /* an error (logged); it stays in the inbox */
};

/* Events to the daemon. None comes from inside engine_submit, and none while draining. */
struct engine_events {
	void (*claimed)(size_t folder, const char *name, enum engine_claim how, void *data);
	/* NAME left folder FOLDER's processing directory: a namesake in the inbox can go. */
	void (*left)(size_t folder, const char *name, void *data);
	/* Slots are free: submit parked files until engine_submit says ENGINE_LATER. */
	void (*capacity)(void *data);
	/* Nothing is claimed, waiting or in flight (for --once). */
	void (*idle)(void *data);
	/* The API key was refused; with --once the daemon gives up instead of pausing. */
	void (*auth_failed)(void *data);
	void *data;
};

enum engine_flags {
	ENGINE_DRY_RUN = 1 << 0, /* check and log; claim, upload and move nothing */
};

/* CFG, DIRS (each folder's directories, cfg->n_folders of them, in the configuration's order)
 * and API must outlive the engine. Starts the disk thread. A folder whose directories are not
 * open (folder_is_open false) is left alone until the daemon says otherwise: nothing is
 * submitted or resumed for it. */
int engine_new(uv_loop_t *loop, const struct config *cfg, struct folder *const *dirs,
	       struct resend_client *api, unsigned flags, const struct engine_events *events,
	       struct engine **ret);

/* The daemon's ledger (it outlives the engine; NULL: none): files are recorded there,
 * duplicates looked up. engine_ledger_health says that writing to it fails (FAILING), or works
 * again: no new file is claimed while it fails. */
void engine_set_ledger(struct engine *e, struct ledgerq *lq);
void engine_ledger_health(struct engine *e, bool failing, const char *error);

/* In a fleet (fleet.h; it outlives the engine): every inbox file is claimed in the database
 * before it is renamed into this host's processing directory. */
struct fleet;
void engine_set_fleet(struct engine *e, struct fleet *fleet);
/* Claims may start (or not): parked files are offered again. */
void engine_fleet_ready(struct engine *e);
/* ALIVE hosts share the team's rate limit: this one spends api.rate_share / ALIVE of it, in
 * its turns (the INDEX-th of ALIVE, on the loop's clock plus OFFSET_MS: ratelimit.h). */
void engine_fleet_share(struct engine *e, unsigned alive, unsigned index, int64_t offset_ms);
/* Another host was told to wait MS for the rate limit: no request goes out meanwhile. NEWS:
 * said in the log (else the same pause read again). */
void engine_fleet_pause(struct engine *e, uint64_t ms, bool news);
/* How long Resend told this host to wait before its next request (ms from now; 0: no wait). */
uint64_t engine_rate_blocked_ms(const struct engine *e);
/* Moves host HOST's files (NULL: those of the folder's processing directory of one host, left
 * by a daemon that was not in a fleet) into this host's processing directories, in the disk
 * thread, and resumes them; DONE(HOST, MOVED, LEFT, DATA) once every folder is done. -ENOMEM. */
int engine_take_over(struct engine *e, const char *host,
		     void (*done)(const char *host, unsigned moved, unsigned left, void *data),
		     void *data);

/* Offers inbox file NAME of folder FOLDER, as it was when it settled (SEEN): O(1). */
enum engine_submit engine_submit(struct engine *e, size_t folder, const char *name,
				 const struct fsops_seen *seen);

/* Every open folder with receipts: those waiting are written again, those older than
 * keep_days removed (in the disk thread; said in the log). */
void engine_receipts_sweep(struct engine *e, int64_t now_ms);

/* Resumes whatever an earlier run left in folder FOLDER's processing directory (listed in the
 * disk thread; those files go before new ones). */
void engine_resume(struct engine *e, size_t folder);

/* Folder FOLDER's inbox was re-created (the watch saw it): opens it, sets up its processing
 * directory and lock again, and swaps them in. 0, or the error. Files still in the old
 * processing directory went with it. */
int engine_folder_reopen(struct engine *e, size_t folder);

/* Files known to the engine: claimed or being claimed, plus the resume backlog. */
size_t engine_active(const struct engine *e);
unsigned engine_failed_total(const struct engine *e);
/* SIGUSR1's lines: what is in hand, and every folder's problems (STUCK). */
void engine_log_status(const struct engine *e);

/* Stops taking files. What only waits is released at once (it stays in processing, with its
 * record, for the next start); disk work and checks run to their end; uploads and polls in
 * flight get at most TIMEOUT_MS, then are aborted. DONE_CB(DATA) once nothing is left; the
 * caller then frees the engine with engine_close. */
void engine_drain(struct engine *e, uint64_t timeout_ms, void (*done_cb)(void *data), void *data);

/* Closes a drained engine: its handles and the disk thread; frees it in the last close
 * callback. */
void engine_close(struct engine *e);

/* What the engine holds, by what a service manager's status line says of it (notify.c). */
struct engine_counts {
	size_t waiting;   /* claimed, not yet uploaded (checks, queue, retry waits, the backlog) */
	size_t uploading; /* an upload in flight */
	size_t following; /* uploaded: its import id recorded, followed until it ends */
	size_t finishing; /* being moved to done/failed, or waiting to be */
	bool paused, auth_paused;
};
/* O(1): from the state counters. */
void engine_counts(const struct engine *e, struct engine_counts *ret);

/* ---- for the control socket (control_requests.c) ---------------------------------------------------- */

struct engine_folder_view {
	unsigned waiting;    /* claimed, waiting for an upload slot; and the resume backlog */
	unsigned processing; /* being claimed, checked, recorded or moved */
	unsigned uploading, retrying, following;
	int64_t oldest_claimed_ms; /* wall clock: the claim of the oldest waiting one; 0: none */
	bool paused;
	char last_error[320]; /* "" when the folder has no problem now */
};
/* O(files in hand + resume backlog). */
void engine_folder_view(const struct engine *e, size_t folder, struct engine_folder_view *ret);

struct engine_api_view {
	bool paused; /* the key (auth) or the quota was refused: no request goes out */
	bool auth;
	int64_t paused_until_ms; /* wall clock; 0: not paused */
	double rate, tokens; /* the rate spent now (ratelimit.h) */
	double ceiling, share, announced; /* announced: the team's limit, 0: none seen yet */
	int64_t blocked_until_ms; /* wall clock, from the server's rate-limit headers; 0: none */
	unsigned in_flight, max_in_flight;
};
void engine_api_view(const struct engine *e, struct engine_api_view *ret);
/* The engine's pacer: the rate budget every request to Resend shares, for a requester of its
 * own (the outbox's e-mails: pacer_entry_init_granted, pacer_poll). It lives as long as E. */
struct pacer *engine_pacer(struct engine *e);

/* Folder FOLDER starts no upload while PAUSED; what runs finishes. */
void engine_pause_folder(struct engine *e, size_t folder, bool paused);
bool engine_folder_paused(const struct engine *e, size_t folder);

/* fsops_unfail on folder FOLDER's failed directory and inbox: the watch then sees the file
 * arrive like any other. */
int engine_unfail(struct engine *e, size_t folder, const char *name, char **ret_report);

/* Counts into M (which outlives the engine) from now on; each folder's counters by its name. */
void engine_set_metrics(struct engine *e, struct metrics *m);

#endif
