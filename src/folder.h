/* A folder's directories, opened once and then used by descriptor: the inbox, its processing
 * directory and that directory's lock (one daemon per folder), done and failed.
 *
 * They outlive a pipeline: the daemon holds one `struct folder` per configured inbox, and a
 * reload passes the folders it keeps (by inbox path) to the next pipeline with their locks.
 * What a reload adds is opened before anything stops, so that a reload that cannot set up a
 * folder is refused whole; a folder that cannot be set up at start is "unavailable" (with the
 * reason an operator reads, naming ReadWritePaths= when systemd's sandbox is the cause) while
 * the others are served, and the daemon tries it again.
 *
 * A descriptor never changes its number once open: a directory replaced under the daemon and
 * adopted again is swapped in with dup2, so that disk work in flight uses the old directory or
 * the new one, never a closed descriptor. Pure POSIX; logs nothing. */
#ifndef RDD_FOLDER_H
#define RDD_FOLDER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "receipts.h"

#define FOLDER_REASON_LEN 768

/* What is wrong with a set-up folder now, as its files found it (loop thread only): each said
 * once when it begins and once when it ends, however many files meet it; 0 when fine. */
struct folder_trouble {
	int claim_error;       /* why the last claim failed */
	int save_error;        /* why the last state record before an upload could not be saved */
	int stuck_error;       /* why the last move to done/ or failed/ failed */
	bool stuck_failed_dir; /* that move was to failed/ (else done/) */
	int dir_problem[2];    /* done's [0] and failed's [1] (fsops_dir_check) */
	uint64_t dir_adopted[2]; /* the inode last adopted in their place (and said), per directory */
	int receipts_error;      /* why the last receipt could not be written (0: it was) */
};

struct folder {
	char *inbox;  /* the configured path: the folder's identity across reloads */
	bool dry_run; /* only the inbox is opened: nothing is claimed or moved */
	int inbox_fd, proc_fd, lock_fd, done_fd, failed_fd; /* -1: not open */
	/* In a fleet (HOST_ID set): proc_fd is this host's own directory under
	 * .resend-dropd/fleet/, lock_fd its exclusive lock, and base_fd .resend-dropd itself,
	 * under a shared lock (the other hosts' directories are reached from it). -1 otherwise. */
	char *host_id;
	int base_fd;
	/* Why it could not be set up (0 and "" when it is): -EWOULDBLOCK when another process
	 * holds its lock (LOCK_PID, 0 when it cannot be told). */
	int error;
	long lock_pid;
	char reason[FOLDER_REASON_LEN];
	struct folder_trouble trouble;
	/* Receipts that could not be written yet (receipts.h); kept across reloads. */
	struct receipts_backlog receipts;
};

/* A folder for C's inbox, nothing open yet. -ENOMEM. */
int folder_new(const struct config_folder *c, bool dry_run, struct folder **ret);
/* F serves its inbox as host HOST_ID of a fleet (before folder_open). -ENOMEM. */
int folder_set_host(struct folder *f, const char *host_id);
/* Closes what it holds (its lock goes with it) and frees it. NULL is fine. */
void folder_free(struct folder *f);

/* Opens all of C's directories (only the inbox for a dry run): 0, or the error with F->error
 * and F->reason set, and nothing left open. */
int folder_open(struct folder *f, const struct config_folder *c);
/* Whether F's directories are set up (NULL: no). */
bool folder_is_open(const struct folder *f);
/* Whether the processing directory held is still the one at the inbox's FSOPS_PROCESSING_DIR
 * (fsops_dir_check_at): 0, or -ESTALE (another there), -ENOENT (none: removed or renamed),
 * -ELOOP, -ENOTDIR, another error. 0 when F holds none (a dry run). */
int folder_processing_check(const struct folder *f);

/* Opens C's done and failed directories afresh (a reload may name others): 0, or the error
 * with WHY. folder_swap_finish_dirs then puts them in place of F's (dup2: same numbers). */
int folder_open_finish_dirs(const struct config_folder *c, int *ret_done, int *ret_failed,
			    char *why, size_t whysz);
int folder_swap_finish_dirs(struct folder *f, int done_fd, int failed_fd);

/* Opens one of a folder's own directories (done, failed): a real directory at PATH, which
 * the daemon's user or root owns. */
int folder_open_owned_dir(const char *path, int *ret_fd);

/* Puts NEW_FD in place of the descriptor *FD (dup2, checked) and closes NEW_FD: *FD keeps its
 * number. 0, or -errno with nothing changed. */
int folder_adopt(int *fd, int new_fd);

/* The directory a finished file goes to (FAILED: failed/, else done/), checked just before it
 * is written: C's path must still name the directory F holds. A real directory of the daemon's
 * that took its place (re-created, say) is adopted (folder_adopt; *RET_ADOPTED its inode, else
 * 0); anything else (a symbolic link, nothing, another user's directory) is never written to:
 * the error. 0 and *RET_FD. For the disk thread. */
int folder_finish_dir(struct folder *f, const struct config_folder *c, bool failed, int *ret_fd,
		      uint64_t *ret_adopted);

/* The inbox was re-created at its path: opens it, sets up its processing directory and lock
 * again, and swaps them in. 0, or the error (F->reason says it). Files still in the old
 * processing directory went with it. */
int folder_reopen_inbox(struct folder *f, const struct config_folder *c);

/* The one wording for a folder whose lock another process holds (start, reload, status). */
void folder_locked_reason(const struct config_folder *c, long pid, char *buf, size_t size);

#endif
