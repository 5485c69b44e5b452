/* libuv's uv_fs_event has neither IN_CLOSE_WRITE nor IN_Q_OVERFLOW, so the inotify descriptor
 * is read through a uv_poll_t. Events only say "look at this name": whether a file is complete
 * is decided by watching it settle, which also covers filesystems where inotify is blind (the
 * periodic rescan feeds the same path). Whether a writer still holds it open is asked once,
 * just before the claim (fsops_claim), not here. */
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uthash.h>
#include <utlist.h>

#include "folder.h"
#include "log.h"

/* After a claim found the file changed or still open for writing: how long at least before it
 * is tried again, even with settle_ms 0, so that a writer holding a file cannot make us spin. */
#define WATCH_RETRY_MIN_MS 100
/* After a claim failed (a directory that cannot be written): the first retry; then twice as
 * long each time claims keep failing, up to rescan_s. */
#define WATCH_CLAIM_RETRY_FIRST_MS 500

/* CAND_NEW: in no list yet, for the moment between its creation and its first settling. */
/* CAND_RETRY: its claim failed (the inbox or processing could not be written): it waits for the
 * watch's retry timer, which backs off while claims keep failing. */
enum candidate_state {
	CAND_NEW,
	CAND_SETTLING,
	CAND_PARKED,
	CAND_BUSY,
	CAND_CLAIMING,
	CAND_RETRY,
	CAND_KEPT
};

struct candidate {
	UT_hash_handle hh;
	struct candidate *prev, *next; /* settling or parked */
	enum candidate_state state;
	struct fsops_seen seen;
	uint64_t due;      /* settling: loop ms of the next look */
	uint64_t first_seen; /* loop ms when it was first seen: how long it has waited */
	unsigned scan_gen; /* the last scan that listed it */
	char name[];
};

struct watch {
	uv_loop_t *loop;
	const struct config_folder *folder;
	unsigned flags;
	watch_ready_cb ready_cb;
	watch_idle_cb idle_cb;
	watch_replaced_cb replaced_cb;
	void *data;
	struct folder *dir; /* the folder's directories: the inbox is read through dir->inbox_fd */
	int inotify_fd;
	int wd; /* the inbox's inotify watch, -1 when none */
	uv_poll_t poll;
	uv_timer_t tick;
	uv_timer_t rescan;
	uv_timer_t mend;   /* while the inbox is lost: is a directory there again? */
	uint64_t mend_ms;  /* its backoff */
	int lost_reason;   /* why the inbox is lost (fsops_dir_check), 0 when it is not */
	int mend_error;    /* the last reason a new inbox could not be taken, said once */
	const char *processing_gone; /* what befell the processing directory, while mend waits
				      * WATCH_PROCESSING_GRACE_MS to set it up again */
	struct candidate *by_name;
	struct candidate *settling; /* in due order */
	struct candidate *parked;   /* in the order they settled */
	struct candidate *retrying; /* CAND_RETRY */
	uv_timer_t retry;
	uint64_t retry_ms; /* the retry timer's backoff; 0 while claims work */
	size_t n_state[CAND_KEPT + 1];
	unsigned scan_gen;
	unsigned open_handles;
	bool poll_open;
	bool closing;
	bool inbox_error_logged;
};

static const char *const ignored_suffixes[] = {".part", ".partial", ".filepart", ".tmp", ".temp",
					       ".swp",	"~",	    ".crdownload", NULL};

bool watch_name_is_candidate(const char *pattern, const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || name[0] == '.')
		return false;
	for (size_t i = 0; ignored_suffixes[i]; i++) {
		size_t s = strlen(ignored_suffixes[i]);
		if (n >= s && strcasecmp(name + n - s, ignored_suffixes[i]) == 0)
			return false;
	}
	return fnmatch(pattern, name, FNM_CASEFOLD | FNM_PERIOD) == 0;
}

bool watch_idle(const struct watch *w)
{
	return w->n_state[CAND_SETTLING] + w->n_state[CAND_PARKED] + w->n_state[CAND_BUSY] +
		       w->n_state[CAND_CLAIMING] + w->n_state[CAND_RETRY] ==
	       0;
}

void watch_counts(const struct watch *w, struct watch_counts *ret)
{
	ret->settling = w->n_state[CAND_SETTLING];
	ret->parked = w->n_state[CAND_PARKED];
	ret->busy = w->n_state[CAND_BUSY];
	ret->claiming = w->n_state[CAND_CLAIMING];
	ret->retrying = w->n_state[CAND_RETRY];
	ret->lost_reason = w->lost_reason;
	/* O(1): each list's head is its oldest, near enough (a file that changed while settling
	 * goes behind newer ones; a parked file poked back to the front settled long ago). Busy
	 * files are in no list; they wait for their namesake, which is counted by jobs. */
	ret->oldest_seen_ms = 0;
	const struct candidate *heads[] = {w->settling, w->parked, w->retrying};
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		if (heads[i] && (!ret->oldest_seen_ms || heads[i]->first_seen < ret->oldest_seen_ms))
			ret->oldest_seen_ms = heads[i]->first_seen;
	}
}

static struct candidate *watch_find(struct watch *w, const char *name)
{
	struct candidate *c = NULL;

	HASH_FIND(hh, w->by_name, name, strlen(name), c);
	return c;
}

static void watch_tick_cb(uv_timer_t *timer);

/* The tick is armed for the first settling candidate's due time, and only then. */
static void watch_arm_tick(struct watch *w)
{
	uint64_t now = uv_now(w->loop);

	if (w->closing)
		return;
	if (!w->settling) {
		uv_timer_stop(&w->tick);
		return;
	}
	uv_timer_start(&w->tick, watch_tick_cb, w->settling->due > now ? w->settling->due - now : 0,
		       0);
}

/* Takes C out of its list (settling or parked), keeping the counters. */
static void watch_unlink(struct watch *w, struct candidate *c)
{
	if (c->state == CAND_SETTLING)
		DL_DELETE(w->settling, c);
	else if (c->state == CAND_PARKED)
		DL_DELETE(w->parked, c);
	else if (c->state == CAND_RETRY)
		DL_DELETE(w->retrying, c);
	w->n_state[c->state]--;
}

static void watch_set(struct watch *w, struct candidate *c, enum candidate_state state)
{
	c->state = state;
	w->n_state[state]++;
}

static void watch_maybe_idle(struct watch *w)
{
	if (!w->closing && w->idle_cb && watch_idle(w))
		w->idle_cb(w, w->data);
}

static void watch_drop(struct watch *w, struct candidate *c)
{
	watch_unlink(w, c);
	HASH_DELETE(hh, w->by_name, c);
	free(c);
}

/* C waits settle_ms (at least MIN_MS) from now before it is looked at again. Appending keeps
 * the list in due order, as every candidate waits the same settle_ms; only a wait stretched to
 * MIN_MS can be due after candidates that came later, and is put in its place from the tail
 * (O(candidates observed in the last MIN_MS), and only when settle_ms < MIN_MS). */
static void watch_settle(struct watch *w, struct candidate *c, uint64_t min_ms)
{
	uint64_t wait = w->folder->settings.settle_ms;
	bool was_first = w->settling == c;
	struct candidate *after;

	watch_unlink(w, c);
	c->due = uv_now(w->loop) + (wait > min_ms ? wait : min_ms);
	watch_set(w, c, CAND_SETTLING);
	after = w->settling ? w->settling->prev : NULL; /* utlist: head->prev is the tail */
	while (after && after->due > c->due)
		after = after == w->settling ? NULL : after->prev;
	if (!after)
		DL_PREPEND(w->settling, c);
	else if (after->next)
		DL_APPEND_ELEM(w->settling, after, c);
	else
		DL_APPEND(w->settling, c);
	if (was_first || w->settling == c)
		watch_arm_tick(w);
}

/* lstat of NAME in the inbox: 0, or -ENOENT also when it became a directory (never taken). */
static int watch_stat(struct watch *w, const char *name, struct fsops_seen *ret)
{
	struct stat st;

	if (fstatat(w->dir->inbox_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -ENOENT;
	ret->size = st.st_size;
	ret->mtime = st.st_mtim;
	return 0;
}

static bool seen_equal(const struct fsops_seen *a, const struct fsops_seen *b)
{
	return a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Looks at NAME in the inbox, as named by an event, a scan or a poke. Entries that are not
 * files we could take (directories, ignored names) are left alone and not tracked. */
static void watch_observe(struct watch *w, const char *name)
{
	struct candidate *c;
	struct fsops_seen now;
	size_t len;

	if (!watch_name_is_candidate(w->folder->settings.pattern, name))
		return;
	c = watch_find(w, name);
	if (c && c->state == CAND_CLAIMING)
		return; /* the claim's outcome decides */
	if (watch_stat(w, name, &now) < 0) {
		if (c) {
			watch_drop(w, c);
			watch_maybe_idle(w);
		}
		return;
	}
	if (c) {
		/* A file that changes is a new file as far as settling goes (the same name dropped
		 * again after a dry run kept it, say). */
		if (!seen_equal(&c->seen, &now)) {
			c->seen = now;
			watch_settle(w, c, 0);
		}
		return;
	}
	len = strlen(name);
	c = calloc(1, sizeof(*c) + len + 1);
	if (!c) {
		log_error("%s: out of memory tracking '%s'", w->folder->name, name);
		return;
	}
	memcpy(c->name, name, len + 1);
	c->seen = now;
	c->first_seen = uv_now(w->loop);
	c->scan_gen = w->scan_gen;
	HASH_ADD_KEYPTR(hh, w->by_name, c->name, len, c);
	watch_set(w, c, CAND_NEW);
	watch_settle(w, c, 0);
}

/* C has settled or was parked: offer it. Returns the daemon's verdict, with C moved to the
 * state that follows from it. */
static enum watch_verdict watch_offer_one(struct watch *w, struct candidate *c, bool front)
{
	enum watch_verdict v;

	watch_unlink(w, c);
	/* Until the callback returns it counts as being claimed: nothing in the callback may see
	 * the watch idle. */
	watch_set(w, c, CAND_CLAIMING);
	v = w->ready_cb(w, c->name, &c->seen, w->data);
	w->n_state[CAND_CLAIMING]--;
	switch (v) {
	case WATCH_TAKEN:
		watch_set(w, c, CAND_CLAIMING);
		break;
	case WATCH_KEEP:
		watch_set(w, c, CAND_KEPT);
		break;
	case WATCH_LATER:
		watch_set(w, c, CAND_PARKED);
		if (front)
			DL_PREPEND(w->parked, c);
		else
			DL_APPEND(w->parked, c);
		break;
	case WATCH_BUSY:
		watch_set(w, c, CAND_BUSY);
		break;
	}
	return v;
}

static void watch_tick_cb(uv_timer_t *timer)
{
	struct watch *w = timer->data;
	uint64_t now = uv_now(w->loop);
	struct candidate *c;

	while (!w->closing && (c = w->settling) && c->due <= now) {
		struct fsops_seen st;

		if (watch_stat(w, c->name, &st) < 0) {
			watch_drop(w, c);
			continue;
		}
		if (!seen_equal(&c->seen, &st)) {
			c->seen = st;
			watch_settle(w, c, 0);
			continue;
		}
		watch_offer_one(w, c, false);
	}
	watch_arm_tick(w);
	watch_maybe_idle(w);
}

enum watch_offer watch_offer(struct watch *w)
{
	struct candidate *c = w->parked;

	if (!c || w->closing)
		return WATCH_OFFER_NONE;
	return watch_offer_one(w, c, true) == WATCH_LATER ? WATCH_OFFER_FULL : WATCH_OFFER_TAKEN;
}

/* Claims failed: every file that waits for another try settles again (a quick look, as it may
 * have changed meanwhile) and is offered. */
static void watch_retry_cb(uv_timer_t *timer)
{
	struct watch *w = timer->data;
	struct candidate *c;

	while ((c = w->retrying))
		watch_settle(w, c, 0);
}

void watch_claimed(struct watch *w, const char *name, enum watch_claim how)
{
	struct candidate *c = watch_find(w, name);
	struct fsops_seen st;

	if (!c || c->state != CAND_CLAIMING || w->closing)
		return;
	if (how != WATCH_CLAIM_FAILED)
		w->retry_ms = 0;
	switch (how) {
	case WATCH_CLAIM_LEFT:
		watch_drop(w, c);
		break;
	case WATCH_CLAIM_FAILED:
		watch_unlink(w, c);
		watch_set(w, c, CAND_RETRY);
		DL_APPEND(w->retrying, c);
		if (!uv_is_active((uv_handle_t *)&w->retry)) {
			uint64_t max_ms = w->folder->settings.rescan_s * 1000;

			w->retry_ms = w->retry_ms ? w->retry_ms * 2 : WATCH_CLAIM_RETRY_FIRST_MS;
			if (max_ms < WATCH_CLAIM_RETRY_FIRST_MS)
				max_ms = WATCH_CLAIM_RETRY_FIRST_MS;
			if (w->retry_ms > max_ms)
				w->retry_ms = max_ms;
			uv_timer_start(&w->retry, watch_retry_cb, w->retry_ms, 0);
		}
		break;
	case WATCH_CLAIM_CHANGED:
		if (watch_stat(w, name, &st) < 0) {
			watch_drop(w, c);
			break;
		}
		c->seen = st;
		watch_settle(w, c, WATCH_RETRY_MIN_MS);
		break;
	case WATCH_CLAIM_BUSY:
		watch_unlink(w, c);
		watch_set(w, c, CAND_BUSY);
		break;
	}
	watch_maybe_idle(w);
}

void watch_poke(struct watch *w, const char *name)
{
	struct candidate *c = watch_find(w, name);
	struct fsops_seen st;

	/* Only a file that waits for its namesake has anything to learn: any other file of the
	 * inbox is known already, or an event about it is on its way. */
	if (w->closing || !c || c->state != CAND_BUSY)
		return;
	if (watch_stat(w, name, &st) < 0) {
		watch_drop(w, c);
		watch_maybe_idle(w);
		return;
	}
	if (!seen_equal(&c->seen, &st)) {
		c->seen = st;
		watch_settle(w, c, 0);
		return;
	}
	/* It settled long ago: first in line for the slot its namesake has just freed. */
	watch_unlink(w, c);
	watch_set(w, c, CAND_PARKED);
	DL_PREPEND(w->parked, c);
}

static void watch_inbox_lost(struct watch *w, int reason);
static void watch_processing_gone(struct watch *w, const char *what);

/* Lists the inbox: new names are observed, known ones marked, and those no longer listed are
 * forgotten. O(files in the inbox), on the loop thread, once at start and every rescan_s; known
 * files cost no stat. */
static void watch_scan(struct watch *w)
{
	struct candidate *c, *tmp;
	struct dirent *de;
	DIR *dir = NULL;
	int fd;

	if (w->lost_reason)
		return;
	if (!(w->flags & WATCH_NO_EVENTS)) {
		int r = fsops_dir_check(w->dir->inbox_fd, w->folder->inbox);
		if (r < 0 && r != -EACCES) {
			watch_inbox_lost(w, r);
			return;
		}
		/* Where inotify is blind, or missed it: the processing directory renamed, or
		 * another put in its place. */
		r = folder_processing_check(w->dir);
		if (r == -ESTALE)
			watch_processing_gone(w, "was replaced by another directory");
		else if (r == -ENOENT || r == -ELOOP || r == -ENOTDIR)
			watch_processing_gone(w, "is gone (removed or renamed)");
		if (w->lost_reason)
			return;
	}
	fd = openat(w->dir->inbox_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0 && !(dir = fdopendir(fd)))
		close(fd);
	if (!dir) {
		if (!w->inbox_error_logged)
			log_error("%s: cannot read inbox '%s': %s", w->folder->name, w->folder->inbox,
				  strerror(errno));
		w->inbox_error_logged = true;
		return;
	}
	if (w->inbox_error_logged)
		log_info("%s: inbox '%s' is readable again", w->folder->name, w->folder->inbox);
	w->inbox_error_logged = false;
	w->scan_gen++;
	while ((de = readdir(dir))) {
		if (de->d_type == DT_DIR)
			continue;
		c = watch_find(w, de->d_name);
		if (c)
			c->scan_gen = w->scan_gen;
		/* A kept file (dry run) is looked at again: on a filesystem where inotify is blind,
		 * only a rescan can tell that it changed. */
		if (!c || c->state == CAND_KEPT)
			watch_observe(w, de->d_name);
	}
	closedir(dir);
	HASH_ITER(hh, w->by_name, c, tmp)
	{
		if (c->scan_gen != w->scan_gen && c->state != CAND_CLAIMING)
			watch_drop(w, c);
	}
	watch_maybe_idle(w);
}

void watch_rescan(struct watch *w)
{
	if (!w->closing)
		watch_scan(w);
}

static void watch_rescan_cb(uv_timer_t *timer)
{
	watch_scan(timer->data);
}

/* The processing directory went (WHAT: removed, renamed, replaced): with the inbox (lost, then),
 * or alone (the daemon sets it up again, as for a re-created inbox). Which of the two is known
 * only a moment later: `rm -rf inbox` removes the processing directory first and the inbox
 * last, and a processing directory set up again at once would make that rmdir fail. So the mend
 * timer waits WATCH_PROCESSING_GRACE_MS first; claims meanwhile fail and are tried again. */
static void watch_processing_regrow_cb(uv_timer_t *timer);

static void watch_processing_gone(struct watch *w, const char *what)
{
	if (w->lost_reason || w->processing_gone || w->closing)
		return;
	w->processing_gone = what;
	uv_timer_start(&w->mend, watch_processing_regrow_cb, WATCH_PROCESSING_GRACE_MS, 0);
}

static void watch_processing_regrow_cb(uv_timer_t *timer)
{
	struct watch *w = timer->data;
	const char *what = w->processing_gone;
	int r = fsops_dir_check(w->dir->inbox_fd, w->folder->inbox);

	w->processing_gone = NULL;
	if (r < 0) {
		watch_inbox_lost(w, r);
		return;
	}
	log_error("%s: the processing directory '%s/%s' %s; setting it up again", w->folder->name,
		  w->folder->inbox, FSOPS_PROCESSING_DIR, what);
	r = w->replaced_cb(w, w->data);
	if (r < 0)
		watch_inbox_lost(w, r);
}

static void watch_inotify_cb(uv_poll_t *poll, int status, int events)
{
	struct watch *w = poll->data;
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));

	(void)events;
	if (status < 0) {
		log_error("%s: inotify failed: %s; relying on rescans", w->folder->name,
			  uv_strerror(status));
		uv_poll_stop(poll);
		return;
	}
	for (;;) {
		ssize_t n = read(w->inotify_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n && !w->closing;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				log_warning("%s: inotify queue overflowed; rescanning '%s'",
					    w->folder->name, w->folder->inbox);
				watch_scan(w);
			} else if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
				/* A watch removed before (the inbox was lost and found again) says
				 * IN_IGNORED late: only the current one counts. */
				if (ev->wd == w->wd) {
					if (ev->mask & IN_IGNORED)
						w->wd = -1;
					watch_inbox_lost(w, -ENOENT);
				}
			} else if ((ev->mask & (IN_DELETE | IN_MOVED_FROM)) &&
				   (ev->mask & IN_ISDIR)) {
				/* The inbox removed while the daemon holds it open says
				 * IN_DELETE_SELF only once the last descriptor is closed; the
				 * processing directory in it goes first, which says it at once. */
				if (ev->wd == w->wd && strcmp(ev->name, FSOPS_PROCESSING_DIR) == 0)
					watch_processing_gone(w, ev->mask & IN_DELETE
									 ? "was removed"
									 : "was renamed");
			} else if (ev->len > 0 && !(ev->mask & IN_ISDIR)) {
				watch_observe(w, ev->name);
			}
		}
	}
}

/* The inotify watch on the inbox, by path, for the directory W->dir->inbox_fd is open on. */
static int watch_add_inotify(struct watch *w)
{
	w->wd = inotify_add_watch(w->inotify_fd, w->folder->inbox,
				  IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_ATTRIB |
					  IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |
					  IN_DONT_FOLLOW);
	return w->wd < 0 ? -errno : 0;
}

static void watch_mend_cb(uv_timer_t *timer);

/* The inbox path no longer names the directory the watch has open (removed, moved, swapped for
 * a symlink or another directory): its candidates are forgotten, as they name files that are
 * not at the inbox's path any more, and nothing is taken until a directory is there again. */
static void watch_inbox_lost(struct watch *w, int reason)
{
	struct candidate *c, *tmp;

	if (w->lost_reason || w->closing)
		return;
	w->lost_reason = reason;
	w->processing_gone = NULL; /* the mend timer is the inbox's now */
	log_error("%s: inbox '%s' is lost: %s; nothing is taken from it until a directory is at "
		  "its path again",
		  w->folder->name, w->folder->inbox,
		  reason == -ENOENT ? "it was removed or moved" : fsops_dir_check_reason(reason));
	if (w->wd >= 0)
		(void)inotify_rm_watch(w->inotify_fd, w->wd);
	w->wd = -1;
	HASH_ITER(hh, w->by_name, c, tmp)
	{
		if (c->state != CAND_CLAIMING)
			watch_drop(w, c);
	}
	watch_arm_tick(w);
	w->mend_ms = 0;
	w->mend_error = 0;
	uv_timer_start(&w->mend, watch_mend_cb, 0, 0);
	watch_maybe_idle(w);
}

/* Takes the directory now at the inbox's path, if it is a real one and the daemon can set up
 * its processing directory there (REPLACED_CB); else tries again later, up to rescan_s apart. */
static void watch_mend_cb(uv_timer_t *timer)
{
	struct watch *w = timer->data;
	const struct config_folder *f = w->folder;
	uint64_t max_ms = f->settings.rescan_s * 1000;
	int r = fsops_dir_check(w->dir->inbox_fd, f->inbox);

	/* The same directory back, or another: the folder's, if its processing directory can be
	 * set up there (it may be new either way); the folder swaps it in under the same
	 * descriptor, which the watch reads through. */
	if (r == 0 || r == -ESTALE)
		r = w->replaced_cb(w, w->data);
	if (r == 0)
		r = watch_add_inotify(w);
	if (r < 0) {
		if (r != w->mend_error && r != w->lost_reason)
			log_warning("%s: inbox '%s' cannot be taken yet: %s", f->name, f->inbox,
				    fsops_dir_check_reason(r));
		w->mend_error = r;
		w->mend_ms = w->mend_ms ? w->mend_ms * 2 : 500;
		if (w->mend_ms > max_ms)
			w->mend_ms = max_ms > 500 ? max_ms : 500;
		uv_timer_start(&w->mend, watch_mend_cb, w->mend_ms, 0);
		return;
	}
	w->lost_reason = 0;
	log_info("%s: inbox '%s' is there again; watching it", f->name, f->inbox);
	watch_scan(w);
}

static int watch_start_inotify(struct watch *w)
{
	int r;

	w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->inotify_fd < 0)
		return -errno;
	r = watch_add_inotify(w);
	if (r < 0)
		return r;
	r = uv_poll_init(w->loop, &w->poll, w->inotify_fd);
	if (r < 0)
		return r;
	w->poll.data = w;
	w->poll_open = true;
	w->open_handles++;
	return uv_poll_start(&w->poll, UV_READABLE, watch_inotify_cb);
}

static void watch_closed_cb(uv_handle_t *handle)
{
	struct watch *w = handle->data;
	struct candidate *c, *tmp;

	if (--w->open_handles > 0)
		return;
	if (w->inotify_fd >= 0)
		close(w->inotify_fd);
	HASH_ITER(hh, w->by_name, c, tmp)
	{
		HASH_DELETE(hh, w->by_name, c);
		free(c);
	}
	free(w);
}

void watch_close(struct watch *w)
{
	w->closing = true;
	uv_close((uv_handle_t *)&w->tick, watch_closed_cb);
	uv_close((uv_handle_t *)&w->rescan, watch_closed_cb);
	uv_close((uv_handle_t *)&w->mend, watch_closed_cb);
	uv_close((uv_handle_t *)&w->retry, watch_closed_cb);
	if (w->poll_open)
		uv_close((uv_handle_t *)&w->poll, watch_closed_cb);
}

int watch_new(uv_loop_t *loop, const struct config_folder *folder, struct folder *dir,
	      unsigned flags, watch_ready_cb ready_cb, watch_idle_cb idle_cb,
	      watch_replaced_cb replaced_cb, void *data, struct watch **ret)
{
	struct watch *w;
	int r;

	if (!folder_is_open(dir) || !replaced_cb)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->folder = folder;
	w->dir = dir;
	w->flags = flags;
	w->ready_cb = ready_cb;
	w->idle_cb = idle_cb;
	w->replaced_cb = replaced_cb;
	w->data = data;
	w->inotify_fd = -1;
	w->wd = -1;
	uv_timer_init(loop, &w->tick);
	uv_timer_init(loop, &w->rescan);
	uv_timer_init(loop, &w->mend);
	uv_timer_init(loop, &w->retry);
	w->tick.data = w->rescan.data = w->mend.data = w->retry.data = w;
	w->open_handles = 4;

	if (!(flags & WATCH_NO_EVENTS)) {
		r = watch_start_inotify(w);
		if (r < 0) {
			log_error("%s: cannot watch '%s' with inotify: %s", folder->name, folder->inbox,
				  strerror(-r));
			watch_close(w);
			return r;
		}
		uint64_t every = folder->settings.rescan_s * 1000;
		uv_timer_start(&w->rescan, watch_rescan_cb, every, every);
	}
	*ret = w;
	watch_scan(w);
	return 0;
}
