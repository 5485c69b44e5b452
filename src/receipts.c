#include "receipts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsops.h"

/* A rejects file kept in memory for a receipt that waits, at most. */
#define RECEIPTS_REJECTS_KEEP (1024 * 1024)

struct receipt_pending {
	struct receipt_pending *next;
	char *name, *json;
	bool failed;
	char *rejects; /* the rejects file's content, or NULL */
	size_t rejects_len;
};

int receipts_backlog_init(struct receipts_backlog *b)
{
	memset(b, 0, sizeof(*b));
	return uv_mutex_init(&b->lock) < 0 ? -ENOMEM : 0;
}

static void pending_free(struct receipt_pending *p)
{
	free(p->name);
	free(p->json);
	free(p->rejects);
	free(p);
}

void receipts_backlog_free(struct receipts_backlog *b)
{
	struct receipt_pending *p, *next;

	for (p = b->head; p; p = next) {
		next = p->next;
		pending_free(p);
	}
	uv_mutex_destroy(&b->lock);
	memset(b, 0, sizeof(*b));
}

/* DIR_FD/FINAL holds BUF, owned and moded as C says: through a temporary, fsynced, renamed
 * over an older receipt of that name. */
static int put(int dir_fd, const struct config_receipts *c, const char *final, const char *buf,
	       size_t len)
{
	char tmp[64];
	int fd = -1, r;

	for (int i = 0; i < 100 && fd < 0; i++) {
		snprintf(tmp, sizeof(tmp), ".rdd-receipt-%ld-%lx.tmp", (long)getpid(),
			 (unsigned long)random());
		fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			return -errno;
	}
	if (fd < 0)
		return -EEXIST;
	r = fsops_write_all(fd, buf, len, -1);
	if (r == 0 && (c->uid != (uid_t)-1 || c->gid != (gid_t)-1) && fchown(fd, c->uid, c->gid) < 0)
		r = -errno;
	if (r == 0 && fchmod(fd, c->mode) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = -errno;
	if (r == 0 && renameat(dir_fd, tmp, dir_fd, final) < 0)
		r = -errno;
	if (r < 0)
		(void)unlinkat(dir_fd, tmp, 0);
	return r;
}

static int unlink_opt(int dir_fd, const char *name)
{
	return unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
}

/* The rejects file in memory (at most RECEIPTS_REJECTS_KEEP: a longer one is cut at its last
 * whole line, which a receipt says nothing of). NULL and 0 when there is none. */
static int read_rejects(int dir_fd, const char *name, char **ret, size_t *ret_len)
{
	char *buf;
	size_t len = 0;
	ssize_t n;
	int fd;

	*ret = NULL;
	*ret_len = 0;
	if (dir_fd < 0 || !name)
		return 0;
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	buf = malloc(RECEIPTS_REJECTS_KEEP);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (len < RECEIPTS_REJECTS_KEEP &&
	       (n = read(fd, buf + len, RECEIPTS_REJECTS_KEEP - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			free(buf);
			close(fd);
			return (int)n;
		}
		len += (size_t)n;
	}
	close(fd);
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* One receipt, into the open directory DIR_FD. */
static int write_one(int dir_fd, const struct config_receipts *c, const char *name, bool failed,
		     const char *json, const char *rejects, size_t rejects_len)
{
	char *final = NULL, *other = NULL, *rej = NULL;
	int r = -ENOMEM;

	if (asprintf(&final, "%s%s", name, failed ? RECEIPTS_FAILED_SUFFIX : RECEIPTS_OK_SUFFIX) <
		    0 ||
	    asprintf(&other, "%s%s", name, failed ? RECEIPTS_OK_SUFFIX : RECEIPTS_FAILED_SUFFIX) <
		    0 ||
	    asprintf(&rej, "%s%s", name, RECEIPTS_REJECTS_SUFFIX) < 0) {
		final = other = rej = NULL;
		goto out;
	}
	/* The rejects first: a receipt that names rows rejected finds them beside it. */
	r = rejects ? put(dir_fd, c, rej, rejects, rejects_len) : unlink_opt(dir_fd, rej);
	if (r == 0)
		r = put(dir_fd, c, final, json, strlen(json));
	if (r == 0)
		r = unlink_opt(dir_fd, other);
out:
	free(final);
	free(other);
	free(rej);
	return r;
}

static int open_dir(const struct config_receipts *c, int *ret)
{
	int fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	*ret = fd;
	return 0;
}

static void say(char *why, size_t whysz, const struct config_receipts *c, int r)
{
	snprintf(why, whysz, "receipts directory '%s': %s", c->dir, strerror(-r));
}

/* The backlog's receipts, in order, into DIR_FD; stops at the first that fails. Under B's
 * lock. */
static int flush_locked(int dir_fd, const struct config_receipts *c, struct receipts_backlog *b)
{
	struct receipt_pending *p;
	int r = 0;

	while ((p = b->head) != NULL) {
		r = write_one(dir_fd, c, p->name, p->failed, p->json, p->rejects, p->rejects_len);
		if (r < 0)
			break;
		b->head = p->next;
		if (!b->head)
			b->tail = NULL;
		b->n--;
		pending_free(p);
	}
	return r;
}

static void backlog_add(struct receipts_backlog *b, const char *name, bool failed,
			const char *json, char *rejects, size_t rejects_len)
{
	struct receipt_pending *p;

	if (b->n >= RECEIPTS_BACKLOG_MAX) {
		b->dropped++;
		free(rejects);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->name = strdup(name)) || !(p->json = strdup(json))) {
		if (p)
			pending_free(p);
		b->dropped++;
		free(rejects);
		return;
	}
	p->failed = failed;
	p->rejects = rejects;
	p->rejects_len = rejects_len;
	if (b->tail)
		b->tail->next = p;
	else
		b->head = p;
	b->tail = p;
	b->n++;
}

int receipts_write(const struct config_receipts *c, struct receipts_backlog *b, const char *name,
		   bool failed, const char *json, int rejects_dir_fd, const char *rejects_name,
		   char *why, size_t whysz)
{
	char *rejects = NULL;
	size_t rejects_len = 0;
	int dir_fd = -1, r;

	r = read_rejects(rejects_dir_fd, rejects_name, &rejects, &rejects_len);
	if (r < 0) {
		snprintf(why, whysz, "cannot read its rejects file: %s", strerror(-r));
		return r;
	}
	uv_mutex_lock(&b->lock);
	r = open_dir(c, &dir_fd);
	if (r == 0)
		r = flush_locked(dir_fd, c, b);
	if (r == 0)
		r = write_one(dir_fd, c, name, failed, json, rejects, rejects_len);
	if (r == 0 && fsync(dir_fd) < 0 && errno != EINVAL)
		r = -errno;
	if (r < 0) {
		say(why, whysz, c, r);
		backlog_add(b, name, failed, json, rejects, rejects_len);
		rejects = NULL;
	}
	b->last_error = r;
	uv_mutex_unlock(&b->lock);
	if (dir_fd >= 0)
		close(dir_fd);
	free(rejects);
	return r;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a > b && strcmp(s + a - b, suffix) == 0;
}

int receipts_sweep(const struct config_receipts *c, struct receipts_backlog *b, int64_t now_ms,
		   size_t *ret_removed, char *why, size_t whysz)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int dir_fd = -1, fd, r;

	*ret_removed = 0;
	uv_mutex_lock(&b->lock);
	r = open_dir(c, &dir_fd);
	if (r == 0 && b->head) {
		r = flush_locked(dir_fd, c, b);
		if (r == 0 && fsync(dir_fd) < 0 && errno != EINVAL)
			r = -errno;
		b->last_error = r;
	}
	uv_mutex_unlock(&b->lock);
	if (r < 0) {
		say(why, whysz, c, r);
		if (dir_fd >= 0)
			close(dir_fd);
		return r;
	}
	if (c->keep_ms == 0) {
		close(dir_fd);
		return 0;
	}
	fd = dup(dir_fd);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		close(dir_fd);
		say(why, whysz, c, r);
		return r;
	}
	while ((de = readdir(d)) != NULL) {
		bool ours = ends_with(de->d_name, RECEIPTS_OK_SUFFIX) ||
			    ends_with(de->d_name, RECEIPTS_FAILED_SUFFIX) ||
			    ends_with(de->d_name, RECEIPTS_REJECTS_SUFFIX) ||
			    (strncmp(de->d_name, ".rdd-receipt-", 13) == 0 &&
			     ends_with(de->d_name, ".tmp"));

		if (!ours || fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if ((int64_t)st.st_mtim.tv_sec * 1000 + (int64_t)c->keep_ms < now_ms &&
		    unlinkat(dir_fd, de->d_name, 0) == 0)
			(*ret_removed)++;
	}
	closedir(d);
	close(dir_fd);
	return 0;
}
