/* One inbox: finds candidate files (start-up scan, inotify, periodic rescan) and reports each
 * once it has settled: unchanged size and mtime for settle_ms and, where the kernel can tell,
 * no writer holding it open. */
#ifndef RDD_WATCH_H
#define RDD_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config.h"

struct watch;

/* NAME has settled. Returns false to decline it for now (no capacity): the watch then offers
 * it again at its next tick, and the callback must not have called watch_forget on it. */
typedef bool (*watch_ready_cb)(struct watch *w, const char *name, void *data);

enum watch_flags {
	WATCH_NO_EVENTS = 1 << 0, /* scan once at start only: no inotify, no rescans (--once) */
};

/* FOLDER (name, inbox, settings) must outlive the watch. The start-up scan runs at once. */
int watch_new(uv_loop_t *loop, const struct config_folder *folder, unsigned flags,
	      watch_ready_cb cb, void *data, struct watch **ret);

/* Forgets NAME, so that the next scan or event reports it again (e.g. it could not be claimed
 * yet). */
void watch_forget(struct watch *w, const char *name);

/* Files seen but not yet reported (still settling). */
size_t watch_pending(const struct watch *w);

/* Looks at NAME again now, as if an event had named it (e.g. the namesake that blocked its claim
 * has left processing). */
void watch_poke(struct watch *w, const char *name);

void watch_rescan(struct watch *w);

/* Closes every handle and frees W in the last close callback. */
void watch_close(struct watch *w);

/* True when NAME is a file this folder should take: not hidden, not a partial-upload or editor
 * temporary, and matching PATTERN (a glob, case-insensitive). Pure. */
bool watch_name_is_candidate(const char *pattern, const char *name);

#endif
