#include "folder.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsops.h"
#include "log.h"
#include "staterec.h"

int folder_new(const struct config_folder *c, bool dry_run, struct folder **ret)
{
	struct folder *f = calloc(1, sizeof(*f));

	if (!f || !(f->inbox = strdup(c->inbox))) {
		free(f);
		return -ENOMEM;
	}
	if (receipts_backlog_init(&f->receipts) < 0) {
		free(f->inbox);
		free(f);
		return -ENOMEM;
	}
	f->dry_run = dry_run;
	f->inbox_fd = f->proc_fd = f->lock_fd = f->done_fd = f->failed_fd = f->base_fd = -1;
	*ret = f;
	return 0;
}

int folder_set_host(struct folder *f, const char *host_id)
{
	char *h = strdup(host_id);

	if (!h)
		return -ENOMEM;
	free(f->host_id);
	f->host_id = h;
	return 0;
}

static void folder_close_fds(struct folder *f)
{
	int *fds[] = {&f->inbox_fd, &f->proc_fd, &f->lock_fd, &f->done_fd, &f->failed_fd,
		      &f->base_fd};

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

void folder_free(struct folder *f)
{
	if (!f)
		return;
	folder_close_fds(f);
	receipts_backlog_free(&f->receipts);
	free(f->inbox);
	free(f->host_id);
	free(f);
}

bool folder_is_open(const struct folder *f)
{
	return f && f->inbox_fd >= 0 && f->error == 0;
}

int folder_processing_check(const struct folder *f)
{
	char path[sizeof(FSOPS_PROCESSING_DIR "/" FSOPS_FLEET_DIR "/") + CONFIG_HOST_ID_MAX];

	if (!folder_is_open(f) || f->proc_fd < 0)
		return 0;
	if (!f->host_id)
		return fsops_dir_check_at(f->proc_fd, f->inbox_fd, FSOPS_PROCESSING_DIR);
	snprintf(path, sizeof(path), FSOPS_PROCESSING_DIR "/" FSOPS_FLEET_DIR "/%s", f->host_id);
	return fsops_dir_check_at(f->proc_fd, f->inbox_fd, path);
}

int folder_adopt(int *fd, int new_fd)
{
	if (dup2(new_fd, *fd) < 0)
		return -errno;
	close(new_fd);
	return 0;
}

int folder_finish_dir(struct folder *f, const struct config_folder *c, bool failed, int *ret_fd,
		      uint64_t *ret_adopted)
{
	const char *path = failed ? c->failed : c->done;
	int *fd = failed ? &f->failed_fd : &f->done_fd, nfd, r;
	struct stat st;

	*ret_adopted = 0;
	r = fsops_dir_check(*fd, path);
	if (r == -ESTALE) {
		r = folder_open_owned_dir(path, &nfd);
		if (r < 0)
			return r;
		*ret_adopted = fstat(nfd, &st) == 0 ? (uint64_t)st.st_ino : 1;
		r = folder_adopt(fd, nfd);
		if (r < 0) {
			close(nfd);
			*ret_adopted = 0;
			return r;
		}
	}
	*ret_fd = *fd;
	return r;
}

void folder_locked_reason(const struct config_folder *c, long pid, char *buf, size_t size)
{
	char holder[32] = "pid unknown";

	if (pid > 0)
		snprintf(holder, sizeof(holder), "pid %ld", pid);
	snprintf(buf, size,
		 "inbox '%s' is served by another resend-dropd (%s holds the lock on '%s/%s'); "
		 "only one daemon may serve a folder",
		 c->inbox, holder, c->inbox, FSOPS_PROCESSING_DIR);
}

/* Why R happened to PATH, said so that an operator can act: systemd's sandbox is named when it
 * is the likely cause (ProtectSystem=strict makes everything but ReadWritePaths= read-only;
 * ProtectHome=yes hides /home, /root and /run/user). */
static const char *folder_hint(const struct config_folder *c, const char *path, int r, char *buf,
			       size_t size)
{
	bool under_systemd = getenv("INVOCATION_ID") != NULL;

	buf[0] = '\0';
	if (!under_systemd)
		return buf;
	if (r == -EROFS)
		snprintf(buf, size,
			 " (outside the unit's ReadWritePaths=, everything is read-only: run "
			 "'systemctl edit resend-dropd', add [Service] ReadWritePaths=%s %s %s, then "
			 "'systemctl restart resend-dropd')",
			 c->inbox, c->done, c->failed);
	else if ((r == -ENOENT || r == -EACCES) &&
		 (strncmp(path, "/home/", 6) == 0 || strncmp(path, "/root/", 6) == 0 ||
		  strncmp(path, "/run/user/", 10) == 0))
		snprintf(buf, size,
			 " (the unit's ProtectHome=yes hides /home, /root and /run/user from the "
			 "service: keep drop folders elsewhere, such as under /srv/drop)");
	return buf;
}

static const char *folder_dir_reason(int r)
{
	return r == -ELOOP   ? "it is a symbolic link, which is not followed"
	       : r == -EPERM ? "it belongs to another user than the daemon's"
			     : strerror(-r);
}

int folder_open_owned_dir(const char *path, int *ret_fd)
{
	int fd, r = fsops_open_dir(path, &fd);

	if (r < 0)
		return r;
	r = fsops_dir_owned(fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int folder_open_finish_dirs(const struct config_folder *c, int *ret_done, int *ret_failed,
			    char *why, size_t whysz)
{
	const char *paths[2] = {c->done, c->failed}, *what[2] = {"done", "failed"};
	int fds[2] = {-1, -1}, r = 0;
	char hint[FOLDER_REASON_LEN];

	for (size_t i = 0; i < 2; i++) {
		r = folder_open_owned_dir(paths[i], &fds[i]);
		if (r < 0) {
			snprintf(why, whysz, "cannot open %s directory '%s': %s%s", what[i], paths[i],
				 folder_dir_reason(r), folder_hint(c, paths[i], r, hint, sizeof(hint)));
			if (fds[0] >= 0)
				close(fds[0]);
			return r;
		}
	}
	*ret_done = fds[0];
	*ret_failed = fds[1];
	return 0;
}

int folder_swap_finish_dirs(struct folder *f, int done_fd, int failed_fd)
{
	int r = 0;

	if (f->done_fd < 0) {
		f->done_fd = done_fd;
	} else if ((r = folder_adopt(&f->done_fd, done_fd)) < 0) {
		close(done_fd);
		close(failed_fd);
		return r;
	}
	if (f->failed_fd < 0) {
		f->failed_fd = failed_fd;
	} else if ((r = folder_adopt(&f->failed_fd, failed_fd)) < 0) {
		close(failed_fd);
		return r;
	}
	return 0;
}

/* The processing directory's problem, said with who owns it when that is the cause: a
 * directory of another user may not even be opened (EACCES). */
static void folder_proc_reason(const struct config_folder *c, int inbox_fd, int r, char *buf,
			       size_t size)
{
	char hint[FOLDER_REASON_LEN], owner[64] = "";
	struct stat st;

	if ((r == -EPERM || r == -EACCES) &&
	    fstatat(inbox_fd, FSOPS_PROCESSING_DIR, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_uid != geteuid() && st.st_uid != 0) {
		snprintf(owner, sizeof(owner), "it belongs to uid %u, not to the daemon's uid %u",
			 (unsigned)st.st_uid, (unsigned)geteuid());
	}
	snprintf(buf, size, "cannot set up the processing directory '%s/%s': %s%s", c->inbox,
		 FSOPS_PROCESSING_DIR, owner[0] ? owner : r == -EPERM ? "it belongs to another user"
								 : strerror(-r),
		 folder_hint(c, c->inbox, r, hint, sizeof(hint)));
}

/* The inbox, its processing directory and that directory's lock, opened afresh: at start,
 * and when the inbox was re-created. On failure, WHY says what is wrong and *RET_PID who holds
 * the lock (-EWOULDBLOCK). */
static int folder_open_inbox(const struct config_folder *c, const char *host_id, int *ret_inbox,
			     int *ret_proc, int *ret_lock, int *ret_base, long *ret_pid, char *why,
			     size_t whysz)
{
	int in_fd = -1, proc_fd = -1, lock_fd = -1, base_fd = -1, r;
	char hint[FOLDER_REASON_LEN];

	*ret_pid = 0;
	r = fsops_open_dir(c->inbox, &in_fd);
	if (r < 0) {
		snprintf(why, whysz, "cannot open inbox '%s': %s%s", c->inbox,
			 r == -ELOOP ? "it is a symbolic link, which is not followed" : strerror(-r),
			 folder_hint(c, c->inbox, r, hint, sizeof(hint)));
		return r;
	}
	r = fsops_processing_dir(in_fd, &proc_fd);
	if (r < 0) {
		folder_proc_reason(c, in_fd, r, why, whysz);
		goto fail;
	}
	if (host_id) {
		/* A fleet's host: .resend-dropd shared with the hosts on this machine, and a
		 * directory of its own below it, locked. */
		r = fsops_lock_shared(proc_fd, &base_fd);
		close(proc_fd);
		proc_fd = -1;
		if (r == -EWOULDBLOCK) {
			snprintf(why, whysz,
				 "inbox '%s' is served by a resend-dropd that is not in a fleet (it "
				 "holds '%s/%s'): stop it, or give it the fleet's ledger",
				 c->inbox, c->inbox, FSOPS_PROCESSING_DIR);
			goto fail;
		}
		if (r == 0)
			r = fsops_host_dir(base_fd, host_id, &proc_fd);
		if (r < 0) {
			snprintf(why, whysz, "cannot set up the processing directory '%s/%s/%s/%s': %s",
				 c->inbox, FSOPS_PROCESSING_DIR, FSOPS_FLEET_DIR, host_id,
				 strerror(-r));
			goto fail;
		}
	}
	r = fsops_lock_dir(proc_fd, &lock_fd, ret_pid);
	if (r == -EWOULDBLOCK && host_id) {
		snprintf(why, whysz, "inbox '%s' is served by another resend-dropd with host_id "
			 "'%s' on this machine (pid %ld): each daemon of a fleet needs its own",
			 c->inbox, host_id, *ret_pid);
		goto fail;
	}
	if (r == -EWOULDBLOCK) {
		folder_locked_reason(c, *ret_pid, why, whysz);
		goto fail;
	}
	if (r < 0) {
		snprintf(why, whysz, "cannot lock '%s/%s': %s", c->inbox, FSOPS_PROCESSING_DIR,
			 strerror(-r));
		goto fail;
	}
	*ret_inbox = in_fd;
	*ret_proc = proc_fd;
	*ret_lock = lock_fd;
	*ret_base = base_fd;
	return 0;
fail:
	close(in_fd);
	if (proc_fd >= 0)
		close(proc_fd);
	if (base_fd >= 0)
		close(base_fd);
	return r;
}

/* What --check says of the directories by path, said again of what was opened (a directory
 * that did not exist at the check may have come since): the inbox, done and failed are three
 * directories on one filesystem (files move by rename). */
static int folder_check_dirs(struct folder *f, const struct config_folder *c)
{
	struct stat in, done, failed;

	if (fstat(f->inbox_fd, &in) < 0 || fstat(f->done_fd, &done) < 0 ||
	    fstat(f->failed_fd, &failed) < 0) {
		snprintf(f->reason, sizeof(f->reason), "cannot examine its directories: %s",
			 strerror(errno));
		return -errno;
	}
	if ((done.st_dev == in.st_dev && done.st_ino == in.st_ino) ||
	    (failed.st_dev == in.st_dev && failed.st_ino == in.st_ino)) {
		snprintf(f->reason, sizeof(f->reason),
			 "'%s' is its inbox and its %s directory: finished files would be taken "
			 "again", c->inbox,
			 done.st_ino == in.st_ino && done.st_dev == in.st_dev ? "done" : "failed");
		return -EINVAL;
	}
	if (done.st_dev == failed.st_dev && done.st_ino == failed.st_ino) {
		snprintf(f->reason, sizeof(f->reason),
			 "'%s' is both its done and its failed directory", c->done);
		return -EINVAL;
	}
	if (done.st_dev != in.st_dev || failed.st_dev != in.st_dev) {
		snprintf(f->reason, sizeof(f->reason),
			 "%s directory '%s' is on another filesystem than the inbox '%s': files are "
			 "moved by rename, which cannot cross filesystems",
			 done.st_dev != in.st_dev ? "done" : "failed",
			 done.st_dev != in.st_dev ? c->done : c->failed, c->inbox);
		return -EXDEV;
	}
	return 0;
}

static int folder_failed(struct folder *f, int r)
{
	folder_close_fds(f);
	f->error = r;
	return r;
}

/* Records (and reports staged beside them) whose file left processing: a stop between a
 * file's move and their removal leaves them. Removed here, where no job of the folder runs
 * yet (the disk threads share a batch's work, so a sweep there could meet a record being
 * written). A folder that cannot be read is left as it is: its files say so when resumed. */
static void folder_sweep_records(struct folder *f, const struct config_folder *c)
{
	size_t n = 0, removed = 0;
	char **names = NULL;
	int r = fsops_list(f->proc_fd, &names, &n);

	if (r == 0)
		r = staterec_sweep(f->proc_fd, names, n, &removed);
	if (removed)
		log_info("%s: removed %zu state record%s left in '%s/%s' by a stop between a "
			 "file's move and %s removal",
			 c->name, removed, removed == 1 ? "" : "s", c->inbox, FSOPS_PROCESSING_DIR,
			 removed == 1 ? "its" : "their");
	if (r < 0)
		log_warning("%s: cannot look for state records left in '%s/%s': %s", c->name,
			    c->inbox, FSOPS_PROCESSING_DIR, strerror(-r));
	if (names)
		fsops_names_free(names, n);
}

int folder_open(struct folder *f, const struct config_folder *c)
{
	char hint[FOLDER_REASON_LEN];
	int r;

	folder_close_fds(f);
	f->error = 0;
	f->lock_pid = 0;
	f->reason[0] = '\0';
	if (f->dry_run) {
		r = fsops_open_dir(c->inbox, &f->inbox_fd);
		if (r < 0)
			snprintf(f->reason, sizeof(f->reason), "cannot open inbox '%s': %s%s",
				 c->inbox, folder_dir_reason(r),
				 folder_hint(c, c->inbox, r, hint, sizeof(hint)));
		return r < 0 ? folder_failed(f, r) : 0;
	}
	r = folder_open_inbox(c, f->host_id, &f->inbox_fd, &f->proc_fd, &f->lock_fd, &f->base_fd,
			      &f->lock_pid, f->reason, sizeof(f->reason));
	if (r == 0)
		r = folder_open_finish_dirs(c, &f->done_fd, &f->failed_fd, f->reason,
					    sizeof(f->reason));
	if (r == 0)
		r = folder_check_dirs(f, c);
	if (r < 0)
		return folder_failed(f, r);
	folder_sweep_records(f, c);
	return 0;
}

/* Whether descriptors A and B are open on the same file. */
static bool folder_same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

int folder_reopen_inbox(struct folder *f, const struct config_folder *c)
{
	int in_fd, proc_fd, lock_fd, base_fd, r;
	long pid;

	r = fsops_open_dir(c->inbox, &in_fd);
	if (r < 0)
		return r;
	if (f->dry_run)
		return folder_adopt(&f->inbox_fd, in_fd);
	r = fsops_processing_dir(in_fd, &proc_fd);
	if (r == 0 && f->host_id) {
		int base = proc_fd;

		r = fsops_host_dir(base, f->host_id, &proc_fd);
		close(base);
	}
	if (r == 0 && folder_same_file(proc_fd, f->proc_fd)) {
		/* The inbox came back with its processing directory, which is locked already. */
		close(proc_fd);
		return folder_adopt(&f->inbox_fd, in_fd);
	}
	close(in_fd);
	if (r < 0)
		return r;
	close(proc_fd);
	r = folder_open_inbox(c, f->host_id, &in_fd, &proc_fd, &lock_fd, &base_fd, &pid,
			      f->reason, sizeof(f->reason));
	if (r < 0)
		return r;
	/* Each swapped in one step, under the disk threads' feet. The locks first: were the
	 * others to fail, the new processing directory is locked already. */
	int *dst[4] = {&f->base_fd, &f->lock_fd, &f->proc_fd, &f->inbox_fd};
	int src[4] = {base_fd, lock_fd, proc_fd, in_fd};

	for (size_t i = 0; i < 4; i++) {
		if (src[i] < 0)
			continue; /* no base (not in a fleet) */
		r = dst[i][0] >= 0 ? folder_adopt(dst[i], src[i]) : (dst[i][0] = src[i], 0);
		if (r < 0) {
			snprintf(f->reason, sizeof(f->reason),
				 "cannot take the re-created inbox '%s': %s", c->inbox, strerror(-r));
			for (size_t k = i; k < 4; k++)
				if (src[k] >= 0)
					close(src[k]);
			return r;
		}
	}
	f->reason[0] = '\0';
	return 0;
}
