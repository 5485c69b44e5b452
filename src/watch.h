/* One inbox: finds candidate files (start-up scan, inotify, periodic rescan), reports each once
 * it has settled (size and mtime unchanged for settle_ms), and keeps what it reported until the
 * daemon says what became of it. Every file in the inbox that the daemon may take is in exactly
 * one state here:
 *
 *   settling --settled--> offered: taken --> claiming --(claimed / gone)--> forgotten
 *      ^                     |      \                  \--(changed)--> settling
 *      |                     |       \--(no slot)--> parked --(capacity: watch_offer)--> offered
 *      +---(it changed)------+--(namesake in processing)--> busy --(watch_poke)--> parked
 *      +---(retry timer)----- retrying <--(claim failed)-- claiming
 *
 * Settling costs one fstatat per candidate per settle_ms, in due order (a list kept sorted by
 * appending, since every candidate waits the same settle_ms); parked and busy files cost
 * nothing until they are offered. Candidates are found by name in O(1) (uthash). */
#ifndef RDD_WATCH_H
#define RDD_WATCH_H

/* The processing directory gone while the inbox is there: how long before it is set up again
 * (an `rm -rf` of the inbox removes it first, and the inbox a moment later). */
#define WATCH_PROCESSING_GRACE_MS 1000

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "fsops.h"

struct watch;
struct folder;

/* What the daemon did with a settled file. */
enum watch_verdict {
	WATCH_TAKEN, /* being claimed: watch_claimed() tells how it went */
	WATCH_KEEP,  /* left where it is for good (dry run): offered again only if it changes */
	WATCH_LATER, /* no room now: parked until watch_offer() */
	WATCH_BUSY,  /* a namesake is in processing: waits for watch_poke() */
};

/* NAME has settled, as SEEN. */
typedef enum watch_verdict (*watch_ready_cb)(struct watch *w, const char *name,
					     const struct fsops_seen *seen, void *data);
/* Nothing is settling, parked, busy or being claimed any more. */
typedef void (*watch_idle_cb)(struct watch *w, void *data);
/* The inbox was lost (removed, moved, replaced) and a real directory is at its path again, or
 * the processing directory went: the folder takes what is at the path now (folder_reopen_inbox,
 * which swaps it in under the descriptors the watch reads through): 0, or an error, and the
 * watch asks again later. */
typedef int (*watch_replaced_cb)(struct watch *w, void *data);

/* How a claim went, for the watch. */
enum watch_claim {
	WATCH_CLAIM_LEFT,    /* it left the inbox (claimed, or gone) */
	WATCH_CLAIM_CHANGED, /* it changed, or a writer still has it: settle again */
	WATCH_CLAIM_BUSY,    /* a namesake is in processing: wait for watch_poke() */
	WATCH_CLAIM_FAILED,  /* an error: tried again on a timer that backs off */
};

enum watch_flags {
	WATCH_NO_EVENTS = 1 << 0, /* scan once at start only: no inotify, no rescans (--once) */
};

/* FOLDER (name, inbox, settings) and DIR, its directories (folder.h, open), must outlive the
 * watch; the inbox is read through DIR's descriptor, held once for the watch and the engine.
 * REPLACED_CB is required. The start-up scan runs at once. -EINVAL: DIR is not open. */
int watch_new(uv_loop_t *loop, const struct config_folder *folder, struct folder *dir,
	      unsigned flags, watch_ready_cb ready_cb, watch_idle_cb idle_cb,
	      watch_replaced_cb replaced_cb, void *data, struct watch **ret);

enum watch_offer {
	WATCH_OFFER_NONE,  /* nothing parked */
	WATCH_OFFER_TAKEN, /* one parked file was offered and did not come back as "later" */
	WATCH_OFFER_FULL,  /* the daemon said "later": it is parked again, first in line */
};

/* Offers the file parked longest. O(1). */
enum watch_offer watch_offer(struct watch *w);

void watch_claimed(struct watch *w, const char *name, enum watch_claim how);

/* NAME's namesake has left processing: if NAME waits for it (WATCH_BUSY), it is looked at
 * again and offered first. Anything else is left alone. */
void watch_poke(struct watch *w, const char *name);

struct watch_counts {
	size_t settling, parked, busy, claiming, retrying;
	int lost_reason; /* the inbox's path names another directory, or none (fsops_dir_check) */
	uint64_t oldest_seen_ms; /* loop ms when the oldest waiting file was first seen; 0: none */
};
void watch_counts(const struct watch *w, struct watch_counts *ret);
bool watch_idle(const struct watch *w);

void watch_rescan(struct watch *w);

/* Closes every handle and frees W in the last close callback. */
void watch_close(struct watch *w);

/* True when NAME is a file this folder should take: not hidden, not a partial-upload or editor
 * temporary, and matching PATTERN (a glob, case-insensitive). Pure. */
bool watch_name_is_candidate(const char *pattern, const char *name);

#endif
