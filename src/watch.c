/* libuv's uv_fs_event has neither IN_CLOSE_WRITE nor IN_Q_OVERFLOW, so the inotify descriptor
 * is read through a uv_poll_t. Events only say "look at this name": whether a file is complete
 * is decided by watching it settle, which also covers filesystems where inotify is blind (the
 * periodic rescan feeds the same path). */
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

#include "log.h"

#define WATCH_TICK_MIN_MS 50
#define WATCH_TICK_MAX_MS 500

struct candidate {
	struct candidate *next;
	char *name;
	off_t size;
	struct timespec mtime;
	uint64_t stable_since; /* loop time (ms) when size and mtime were last seen to change */
	bool reported;
	bool seen; /* during a scan: still present */
};

struct watch {
	uv_loop_t *loop;
	const struct config_folder *folder;
	unsigned flags;
	watch_ready_cb cb;
	void *data;
	int inotify_fd;
	uv_poll_t poll;
	uv_timer_t tick;
	uv_timer_t rescan;
	struct candidate *candidates;
	size_t pending;
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

static struct candidate *watch_find(struct watch *w, const char *name)
{
	for (struct candidate *c = w->candidates; c; c = c->next) {
		if (strcmp(c->name, name) == 0)
			return c;
	}
	return NULL;
}

static void watch_drop(struct watch *w, struct candidate *c)
{
	for (struct candidate **p = &w->candidates; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	if (!c->reported)
		w->pending--;
	free(c->name);
	free(c);
}

static void watch_tick_cb(uv_timer_t *timer);

static void watch_arm_tick(struct watch *w)
{
	uint64_t ms = w->folder->settings.settle_ms / 4;

	if (w->closing || uv_is_active((uv_handle_t *)&w->tick))
		return;
	if (ms < WATCH_TICK_MIN_MS)
		ms = WATCH_TICK_MIN_MS;
	if (ms > WATCH_TICK_MAX_MS)
		ms = WATCH_TICK_MAX_MS;
	/* Never 0, even for settle_ms 0: a writer holding the file would make us spin. */
	uv_timer_start(&w->tick, watch_tick_cb, ms, 0);
}

/* Records what lstat says of C's file now; drops C (freeing it) when the file is gone or has
 * become a directory. */
static void watch_refresh(struct watch *w, struct candidate *c)
{
	char path[PATH_MAX];
	struct stat st;

	if (snprintf(path, sizeof(path), "%s/%s", w->folder->inbox, c->name) >= (int)sizeof(path) ||
	    lstat(path, &st) != 0 || S_ISDIR(st.st_mode)) {
		watch_drop(w, c);
		return;
	}
	c->seen = true;
	/* stable_since 0: a new candidate, nothing recorded yet. */
	if (c->stable_since != 0 && c->size == st.st_size &&
	    c->mtime.tv_sec == st.st_mtim.tv_sec && c->mtime.tv_nsec == st.st_mtim.tv_nsec)
		return;
	/* A reported file that changes afterwards is a new file (e.g. the same name dropped again
	 * after the first was claimed): report it again once it settles. */
	if (c->reported) {
		c->reported = false;
		w->pending++;
	}
	c->size = st.st_size;
	c->mtime = st.st_mtim;
	c->stable_since = uv_now(w->loop);
	watch_arm_tick(w);
}

/* Looks at NAME in the inbox, as named by an event or a scan. Entries that are not files we
 * could take (directories, ignored names) are left alone and not tracked. */
static void watch_observe(struct watch *w, const char *name)
{
	struct candidate *c;

	if (!watch_name_is_candidate(w->folder->settings.pattern, name))
		return;
	c = watch_find(w, name);
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c || !(c->name = strdup(name))) {
			free(c);
			log_error("%s: out of memory tracking '%s'", w->folder->name, name);
			return;
		}
		c->next = w->candidates;
		w->candidates = c;
		w->pending++;
	}
	watch_refresh(w, c);
}

/* A read lease cannot be taken while any process has the file open for writing, which tells us
 * that an uploader still holds it even if it pauses longer than settle_ms. Leases need file
 * ownership or CAP_LEASE and do not work on every filesystem: anything but a clear "writer
 * present" counts as no information. */
static bool watch_writer_present(struct watch *w, const char *name)
{
	char path[PATH_MAX];
	bool busy = false;

	snprintf(path, sizeof(path), "%s/%s", w->folder->inbox, name);
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return false;
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
			fcntl(fd, F_SETLEASE, F_UNLCK);
		else
			busy = errno == EAGAIN;
	}
	close(fd);
	return busy;
}

static void watch_tick_cb(uv_timer_t *timer)
{
	struct watch *w = timer->data;
	uint64_t now = uv_now(w->loop);
	struct candidate *c, *next;

	/* Re-look at every unreported candidate: a slow writer changes size or mtime. This may
	 * drop C, so nothing touches it afterwards. */
	for (c = w->candidates; c; c = next) {
		next = c->next;
		if (!c->reported)
			watch_refresh(w, c);
	}
	for (c = w->candidates; c && !w->closing; c = next) {
		next = c->next;
		if (c->reported || now - c->stable_since < w->folder->settings.settle_ms)
			continue;
		if (watch_writer_present(w, c->name)) {
			c->stable_since = now;
			continue;
		}
		c->reported = true;
		w->pending--;
		if (!w->cb(w, c->name, w->data)) {
			c->reported = false;
			w->pending++;
		}
	}
	if (w->pending > 0)
		watch_arm_tick(w);
}

static void watch_scan(struct watch *w)
{
	DIR *dir = opendir(w->folder->inbox);
	struct dirent *de;
	struct candidate *c, *next;

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
	for (c = w->candidates; c; c = c->next)
		c->seen = false;
	while ((de = readdir(dir))) {
		if (de->d_type == DT_DIR)
			continue;
		watch_observe(w, de->d_name);
	}
	closedir(dir);
	for (c = w->candidates; c; c = next) {
		next = c->next;
		if (!c->seen)
			watch_drop(w, c);
	}
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
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				log_warning("%s: inotify queue overflowed; rescanning '%s'",
					    w->folder->name, w->folder->inbox);
				watch_scan(w);
			} else if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
				log_error("%s: inbox '%s' was removed or moved; relying on rescans",
					  w->folder->name, w->folder->inbox);
			} else if (ev->len > 0 && !(ev->mask & IN_ISDIR)) {
				watch_observe(w, ev->name);
			}
		}
	}
}

static int watch_start_inotify(struct watch *w)
{
	int r;

	w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->inotify_fd < 0)
		return -errno;
	if (inotify_add_watch(w->inotify_fd, w->folder->inbox,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB | IN_DELETE_SELF |
				      IN_MOVE_SELF | IN_ONLYDIR) < 0)
		return -errno;
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

	if (--w->open_handles > 0)
		return;
	if (w->inotify_fd >= 0)
		close(w->inotify_fd);
	while (w->candidates)
		watch_drop(w, w->candidates);
	free(w);
}

void watch_close(struct watch *w)
{
	w->closing = true;
	uv_close((uv_handle_t *)&w->tick, watch_closed_cb);
	uv_close((uv_handle_t *)&w->rescan, watch_closed_cb);
	if (w->poll_open)
		uv_close((uv_handle_t *)&w->poll, watch_closed_cb);
}

int watch_new(uv_loop_t *loop, const struct config_folder *folder, unsigned flags,
	      watch_ready_cb cb, void *data, struct watch **ret)
{
	struct watch *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->folder = folder;
	w->flags = flags;
	w->cb = cb;
	w->data = data;
	w->inotify_fd = -1;
	uv_timer_init(loop, &w->tick);
	uv_timer_init(loop, &w->rescan);
	w->tick.data = w->rescan.data = w;
	w->open_handles = 2;

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

void watch_poke(struct watch *w, const char *name)
{
	if (w->closing)
		return;
	watch_forget(w, name);
	watch_observe(w, name);
}

size_t watch_pending(const struct watch *w)
{
	return w->pending;
}

void watch_forget(struct watch *w, const char *name)
{
	struct candidate *c = watch_find(w, name);

	if (c)
		watch_drop(w, c);
}
