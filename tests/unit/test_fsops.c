/* fsops: claims, refusals and moves as a user of the drop folders would see them, by directory
 * descriptor. */
#include "fsops.h"
#include "text.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* 2026-11-26T04:01:02Z (date -u -d @1795665662) */
#define NOW 1795665662
#define STAMP "20261126T040102Z"

/* renameat2, linkat and fsync are replaced for the whole test program, so that the paths a real
 * filesystem never takes on a developer's machine can be walked: no RENAME_NOREPLACE support
 * (NFS), a name taken between check and rename, another host winning a race, an I/O error; and
 * so that what gets fsynced can be seen. */
enum hook_mode { HOOK_OFF, HOOK_NO_NOREPLACE, HOOK_PLANT, HOOK_EIO_JSON, HOOK_LOSE_RACE, HOOK_LOG };
static enum hook_mode hook;
static int hook_dir_fd = -1;   /* HOOK_PLANT: the directory the name is planted in */
static char hook_name[NAME_MAX + 1]; /* HOOK_PLANT: created just before a rename to it */
static char hook_path[PATH_MAX]; /* HOOK_LOSE_RACE: where the other host takes the file */

/* HOOK_LOG: every rename, with what the staged report (hook_stage in the source directory) and
 * the destination directory held at that moment. */
struct rename_rec {
	int from_fd, to_fd;
	char from[NAME_MAX + 1], to[NAME_MAX + 1];
	bool stage_exists;
	char stage_content[64];
	mode_t stage_mode;
	int files_fsynced;  /* fsyncs of files so far */
	int dst_entries;    /* entries of the destination directory */
	int dst_dot_entries;
};
static struct rename_rec renames[8];
static int n_renames;
static char hook_stage[NAME_MAX + 1]; /* HOOK_LOG: the report's stage name */

static void log_rename(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);

/* Whatever the hook mode, the done directory is looked at before and after every rename and
 * after every link: the most dot entries it ever held. A dot entry there would be a temporary
 * that a crash could leave in a directory users read. */
static int watch_dir_fd = -1;
static int dot_entries_seen;
static void watch_observe(void);

/* fsync calls since the last reset, by kind of descriptor, and the last file fsynced;
 * fdatasync calls (of files) apart. */
static int fsyncs_of_files, fsyncs_of_dirs, fdatasyncs;
static dev_t fsynced_dev;
static ino_t fsynced_ino;

static bool
ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

int
renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
	if ((hook == HOOK_NO_NOREPLACE || hook == HOOK_LOSE_RACE) && (flags & RENAME_NOREPLACE)) {
		errno = EINVAL;
		return -1;
	}
	if (hook == HOOK_PLANT && newdirfd == hook_dir_fd && strcmp(newpath, hook_name) == 0) {
		int fd = openat(newdirfd, newpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

		if (fd >= 0) {
			if (write(fd, "intruder", 8) != 8)
				abort();
			close(fd);
		}
	}
	if (hook == HOOK_LOG)
		log_rename(olddirfd, oldpath, newdirfd, newpath);
	if (hook == HOOK_EIO_JSON && ends_with(newpath, ".json")) {
		errno = EIO;
		return -1;
	}
	watch_observe();
	int r = (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
	int e = errno;

	watch_observe();
	errno = e;
	return r;
}

int
linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
	int r = (int)syscall(SYS_linkat, olddirfd, oldpath, newdirfd, newpath, flags);
	int e = errno;

	watch_observe();
	errno = e;
	/* The other host's claim lands between our link and our unlink. */
	if (r == 0 && hook == HOOK_LOSE_RACE &&
	    syscall(SYS_renameat2, olddirfd, oldpath, AT_FDCWD, hook_path, 0) != 0)
		abort();
	return r;
}

int
fsync(int fd)
{
	struct stat st;

	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		fsyncs_of_dirs++;
	} else {
		fsyncs_of_files++;
		fsynced_dev = st.st_dev;
		fsynced_ino = st.st_ino;
	}
	return (int)syscall(SYS_fsync, fd);
}

int
fdatasync(int fd)
{
	fdatasyncs++;
	return (int)syscall(SYS_fdatasync, fd);
}

static void
fsyncs_reset(void)
{
	fsyncs_of_files = fsyncs_of_dirs = fdatasyncs = 0;
	fsynced_dev = 0;
	fsynced_ino = 0;
}

/* Entries of the directory open as DIR_FD ("." and ".." aside), and how many start with a dot. */
static void
count_at(int dir_fd, int *ret_all, int *ret_dot)
{
	struct dirent *e;
	DIR *d;
	int fd;

	*ret_all = *ret_dot = 0;
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL)
		abort();
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		(*ret_all)++;
		if (e->d_name[0] == '.')
			(*ret_dot)++;
	}
	closedir(d);
}

static void
watch_observe(void)
{
	int all, dot;

	if (watch_dir_fd < 0)
		return;
	count_at(watch_dir_fd, &all, &dot);
	if (dot > dot_entries_seen)
		dot_entries_seen = dot;
}

static void
log_rename(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	struct rename_rec *rec;
	struct stat st;
	int fd;

	if (n_renames >= 8)
		return;
	rec = &renames[n_renames++];
	memset(rec, 0, sizeof(*rec));
	rec->from_fd = olddirfd;
	rec->to_fd = newdirfd;
	snprintf(rec->from, sizeof(rec->from), "%s", oldpath);
	snprintf(rec->to, sizeof(rec->to), "%s", newpath);
	rec->files_fsynced = fsyncs_of_files;
	count_at(newdirfd, &rec->dst_entries, &rec->dst_dot_entries);
	fd = openat(olddirfd, hook_stage, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, rec->stage_content, sizeof(rec->stage_content) - 1);

		rec->stage_content[n > 0 ? n : 0] = '\0';
		rec->stage_exists = true;
		if (fstat(fd, &st) == 0)
			rec->stage_mode = st.st_mode & 07777;
		close(fd);
	}
}

struct tmpdir {
	char path[64];
	int root, in, proc, done; /* directory descriptors */
};

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup_tmp(void **state)
{
	struct tmpdir *t = calloc(1, sizeof(*t));
	char p[128];

	if (t == NULL)
		return -1;
	strcpy(t->path, "/tmp/rdd-fsops-XXXXXX");
	if (mkdtemp(t->path) == NULL) {
		free(t);
		return -1;
	}
	if (fsops_open_dir(t->path, &t->root) < 0)
		return -1;
	if (mkdirat(t->root, "in", 0755) < 0 || mkdirat(t->root, "proc", 0755) < 0 ||
	    mkdirat(t->root, "done", 0755) < 0)
		return -1;
	snprintf(p, sizeof(p), "%s/in", t->path);
	if (fsops_open_dir(p, &t->in) < 0)
		return -1;
	snprintf(p, sizeof(p), "%s/proc", t->path);
	if (fsops_open_dir(p, &t->proc) < 0)
		return -1;
	snprintf(p, sizeof(p), "%s/done", t->path);
	if (fsops_open_dir(p, &t->done) < 0)
		return -1;
	hook = HOOK_OFF;
	hook_dir_fd = -1;
	n_renames = 0;
	hook_stage[0] = '\0';
	watch_dir_fd = t->done;
	dot_entries_seen = 0;
	fsyncs_reset();
	*state = t;
	return 0;
}

static int
teardown_tmp(void **state)
{
	struct tmpdir *t = *state;
	int r;

	watch_dir_fd = -1;
	r = nftw(t->path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	close(t->root);
	close(t->in);
	close(t->proc);
	close(t->done);
	hook = HOOK_OFF;
	free(t);
	return r;
}

/* A path under the test's directory, from a format. The result lives until 32 more calls. */
static const char *
tpath(void **state, const char *fmt, ...)
{
	static char bufs[32][PATH_MAX];
	static unsigned slot;
	struct tmpdir *t = *state;
	char *b = bufs[slot++ % 32];
	va_list ap;
	int n;

	n = snprintf(b, PATH_MAX, "%s/", t->path);
	va_start(ap, fmt);
	vsnprintf(b + n, PATH_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	return b;
}

static const char *
mkdir_t(void **state, const char *name)
{
	const char *p = tpath(state, "%s", name);

	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

static void
write_file(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	assert_int_equal(close(fd), 0);
}

static void
assert_file_content(const char *path, const char *content)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	assert_string_equal(buf, content);
}

/* A record as fsops_write_record stores one shorter than a sector: CONTENT, blanks, a newline,
 * 512 bytes in all. */
static void
assert_record_content(const char *path, const char *content)
{
	char want[513];
	size_t len = strlen(content);

	assert_true(len < 512);
	memcpy(want, content, len);
	memset(want + len, ' ', 511 - len);
	want[511] = '\n';
	want[512] = '\0';
	assert_file_content(path, want);
}

static void
assert_missing(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0)
		fail_msg("%s exists", path);
	assert_int_equal(errno, ENOENT);
}

/* Entries in DIR, "." and ".." aside: catches stray temporary files. */
static int
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Entries of DIR whose name starts with a dot ("." and ".." aside): temporaries, or a staged
 * report that did not leave. */
static int
count_dot_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 &&
		    strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int
count_fds(void)
{
	return count_entries("/proc/self/fd");
}

static struct fsops_seen
seen_of(const char *path)
{
	struct stat st;
	struct fsops_seen s;

	assert_int_equal(lstat(path, &st), 0);
	s.size = st.st_size;
	s.mtime = st.st_mtim;
	return s;
}

/* fsops_open_dir */

static void
test_open_dir(void **state)
{
	struct tmpdir *t = *state;
	struct stat a, b;
	int fd = -2;

	assert_int_equal(fsops_open_dir(t->path, &fd), 0);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(stat(t->path, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	close(fd);

	fd = -2;
	assert_int_equal(fsops_open_dir(tpath(state, "missing"), &fd), -ENOENT);
	assert_int_equal(fd, -2);
	write_file(tpath(state, "file"), "x");
	assert_int_equal(fsops_open_dir(tpath(state, "file"), &fd), -ENOTDIR);
	assert_int_equal(fd, -2);
}

/* A symbolic link at the path is never followed. */
static void
test_open_dir_refuses_symlink(void **state)
{
	struct tmpdir *t = *state;
	int fd = -2;

	assert_int_equal(symlinkat("done", t->root, "link"), 0);
	assert_int_equal(fsops_open_dir(tpath(state, "link"), &fd), -ELOOP);
	assert_int_equal(fd, -2);
	assert_string_equal(fsops_dir_check_reason(-ELOOP), "it is a symbolic link now");
}

/* fsops_path_dir, the one rule for a directory at a path: a link is a link wherever it points
 * (to a directory, to a file, to nothing), never what it points to. */
static void
test_path_dir(void **state)
{
	struct tmpdir *t = *state;
	struct stat st, held;

	assert_int_equal(fsops_path_dir(AT_FDCWD, tpath(state, "done"), &st), 0);
	assert_int_equal(fstat(t->done, &held), 0);
	assert_int_equal(st.st_ino, held.st_ino);
	assert_int_equal(fsops_path_dir(t->root, "done", &st), 0);
	assert_int_equal(fsops_path_dir(t->root, "missing", &st), -ENOENT);
	write_file(tpath(state, "file"), "x");
	assert_int_equal(fsops_path_dir(t->root, "file", &st), -ENOTDIR);
	assert_int_equal(symlinkat("done", t->root, "to-dir"), 0);
	assert_int_equal(symlinkat("file", t->root, "to-file"), 0);
	assert_int_equal(symlinkat("nothing", t->root, "to-nothing"), 0);
	assert_int_equal(fsops_path_dir(t->root, "to-dir", &st), -ELOOP);
	assert_int_equal(fsops_path_dir(t->root, "to-file", &st), -ELOOP);
	assert_int_equal(fsops_path_dir(t->root, "to-nothing", &st), -ELOOP);
	/* The open and the check say what the rule says. */
	int fd = -2;
	assert_int_equal(fsops_open_dir(tpath(state, "to-nothing"), &fd), -ELOOP);
	assert_int_equal(fsops_dir_check_at(t->done, t->root, "to-dir"), -ELOOP);
	assert_int_equal(fsops_dir_check_at(t->done, t->root, "done"), 0);
}

/* fsops_dir_check: the path still names the directory held, or says what is there instead. */
static void
test_dir_check(void **state)
{
	struct tmpdir *t = *state;

	assert_int_equal(fsops_dir_check(t->done, tpath(state, "done")), 0);
	assert_int_equal(renameat(t->root, "done", t->root, "done.old"), 0);
	assert_int_equal(fsops_dir_check(t->done, tpath(state, "done")), -ENOENT);
	assert_int_equal(symlinkat("done.old", t->root, "done"), 0);
	assert_int_equal(fsops_dir_check(t->done, tpath(state, "done")), -ELOOP);
	assert_int_equal(unlinkat(t->root, "done", 0), 0);
	write_file(tpath(state, "done"), "x");
	assert_int_equal(fsops_dir_check(t->done, tpath(state, "done")), -ENOTDIR);
	assert_int_equal(unlinkat(t->root, "done", 0), 0);
	assert_int_equal(mkdirat(t->root, "done", 0755), 0);
	assert_int_equal(fsops_dir_check(t->done, tpath(state, "done")), -ESTALE);
	/* The old one back in its place is the one held again. */
	assert_int_equal(unlinkat(t->root, "done", AT_REMOVEDIR), 0);
	assert_int_equal(renameat(t->root, "done.old", t->root, "done"), 0);
	assert_int_equal(fsops_dir_check(t->done, tpath(state, "done")), 0);
}

/* Root's and the daemon's own directories are trusted; someone else's are not. */
static void
test_dir_owned(void **state)
{
	struct tmpdir *t = *state;

	assert_int_equal(fsops_dir_owned(t->done), 0);
	if (geteuid() != 0)
		skip();
	assert_int_equal(fchown(t->done, 65534, 65534), 0);
	assert_int_equal(fsops_dir_owned(t->done), -EPERM);
	assert_int_equal(fsops_dir_check_reason(-EPERM)[0] != '\0', 1);
}

/* One lock per processing directory: a second taker is refused and told the holder's pid, a
 * probe says the same without taking it, closing the descriptor frees it, and nothing is
 * created in the directory. */
static void
test_lock_dir(void **state)
{
	struct tmpdir *t = *state;
	int fd = -1, fd2 = -2, proc;
	long pid = -1;

	assert_int_equal(mkdirat(t->in, FSOPS_PROCESSING_DIR, 0700), 0);
	proc = openat(t->in, FSOPS_PROCESSING_DIR, O_RDONLY | O_DIRECTORY);
	assert_true(proc >= 0);
	assert_int_equal(fsops_lock_probe(tpath(state, "in"), &pid), 0);
	assert_int_equal(fsops_lock_dir(proc, &fd, &pid), 0);
	assert_true(fd >= 0 && fd != proc);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);

	/* Another open file description conflicts, as another process's would. */
	assert_int_equal(fsops_lock_dir(proc, &fd2, &pid), -EWOULDBLOCK);
	assert_int_equal(fd2, -2);
	assert_int_equal(pid, (long)getpid());
	pid = 0;
	assert_int_equal(fsops_lock_probe(tpath(state, "in"), &pid), -EWOULDBLOCK);
	assert_int_equal(pid, (long)getpid());

	close(fd);
	assert_int_equal(fsops_lock_probe(tpath(state, "in"), &pid), 0);
	assert_int_equal(fsops_lock_dir(proc, &fd2, &pid), 0);
	close(fd2);
	/* Nothing was made in it: the directory is empty and can go. */
	assert_int_equal(unlinkat(t->in, FSOPS_PROCESSING_DIR, AT_REMOVEDIR), 0);
	close(proc);
}

/* fsops_processing_dir */

static void
assert_fd_is(int fd, const char *path)
{
	struct stat a, b;

	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(lstat(path, &b), 0);
	assert_int_equal(a.st_dev, b.st_dev);
	assert_int_equal(a.st_ino, b.st_ino);
}

static void
test_processing_dir_created(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	int fd = -2, again = -2;
	mode_t old = umask(0);

	/* A umask of 0 must not loosen it, nor 077 be needed to keep it tight. */
	assert_int_equal(fsops_processing_dir(t->root, &fd), 0);
	umask(old);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_fd_is(fd, tpath(state, ".resend-dropd"));
	assert_int_equal(lstat(tpath(state, ".resend-dropd"), &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_uid, geteuid());

	/* Existing and right: accepted as it is, and the same directory. */
	assert_int_equal(fsops_processing_dir(t->root, &again), 0);
	assert_fd_is(again, tpath(state, ".resend-dropd"));
	/* Usable for *at calls: a file made through it is in the processing directory. */
	assert_int_equal(fsops_write_record(again, "probe", "p", 1, false), 0);
	assert_record_content(tpath(state, ".resend-dropd/probe"), "p");
	close(fd);
	close(again);
}

static void
test_processing_dir_loose_mode_tightened(void **state)
{
	struct tmpdir *t = *state;
	const char *p = mkdir_t(state, ".resend-dropd");
	struct stat st;
	int fd = -2;

	assert_int_equal(chmod(p, 0777), 0);
	assert_int_equal(fsops_processing_dir(t->root, &fd), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	close(fd);
}

static void
test_processing_dir_tight_mode_loosened(void **state)
{
	struct tmpdir *t = *state;
	const char *p = mkdir_t(state, ".resend-dropd");
	struct stat st;
	int fd = -2;

	/* Too tight to move files in (for anyone but root): set back to 0700 as well. */
	assert_int_equal(chmod(p, 0500), 0);
	assert_int_equal(fsops_processing_dir(t->root, &fd), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	close(fd);
}

static void
test_processing_dir_symlink_refused(void **state)
{
	struct tmpdir *t = *state;
	const char *elsewhere = mkdir_t(state, "elsewhere");
	struct stat st;
	int fd = -2, before;

	assert_int_equal(symlink(elsewhere, tpath(state, ".resend-dropd")), 0);
	before = count_fds();
	assert_int_equal(fsops_processing_dir(t->root, &fd), -ELOOP);
	assert_int_equal(fd, -2);
	assert_int_equal(count_fds(), before);
	/* The link was not followed: its target's mode is as it was. */
	assert_int_equal(stat(elsewhere, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
}

static void
test_processing_dir_not_a_directory(void **state)
{
	struct tmpdir *t = *state;
	int fd = -2, before;

	write_file(tpath(state, ".resend-dropd"), "x");
	before = count_fds();
	assert_int_equal(fsops_processing_dir(t->root, &fd), -ENOTDIR);
	assert_int_equal(fd, -2);
	assert_int_equal(count_fds(), before);
}

static void
test_processing_dir_wrong_owner(void **state)
{
	struct tmpdir *t = *state;
	const char *p = mkdir_t(state, ".resend-dropd");
	int fd = -2, before;

	if (geteuid() != 0)
		skip(); /* only root can give a directory away */
	assert_int_equal(chmod(p, 0700), 0);
	assert_int_equal(chown(p, 65534, 65534), 0);
	before = count_fds();
	assert_int_equal(fsops_processing_dir(t->root, &fd), -EPERM);
	assert_int_equal(fd, -2);
	assert_int_equal(count_fds(), before);
}

/* fsops_claim */

static void
test_claim_moves(void **state)
{
	struct tmpdir *t = *state;

	write_file(tpath(state, "in/x.csv"), "email\na@b.c\n");
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_file_content(tpath(state, "proc/x.csv"), "email\na@b.c\n");
}

static void
test_claim_as_seen(void **state)
{
	struct tmpdir *t = *state;
	struct fsops_seen seen;

	write_file(tpath(state, "in/x.csv"), "email\na@b.c\n");
	seen = seen_of(tpath(state, "in/x.csv"));
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", &seen), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_file_content(tpath(state, "proc/x.csv"), "email\na@b.c\n");
}

static void
test_claim_size_changed_since_seen(void **state)
{
	struct tmpdir *t = *state;
	struct fsops_seen seen;
	int fd;

	write_file(tpath(state, "in/x.csv"), "email\n");
	seen = seen_of(tpath(state, "in/x.csv"));
	/* Rows appended after it settled, with the old mtime put back: the size alone tells. */
	fd = open(tpath(state, "in/x.csv"), O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "a@b.c\n", 6), 6);
	assert_int_equal(futimens(fd, (struct timespec[2]){seen.mtime, seen.mtime}), 0);
	close(fd);
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", &seen), -EAGAIN);
	assert_file_content(tpath(state, "in/x.csv"), "email\na@b.c\n");
	assert_int_equal(count_entries(tpath(state, "proc")), 0);

	/* As it is now, it is taken. */
	seen = seen_of(tpath(state, "in/x.csv"));
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", &seen), 0);
	assert_file_content(tpath(state, "proc/x.csv"), "email\na@b.c\n");
}

static void
test_claim_mtime_changed_since_seen(void **state)
{
	struct tmpdir *t = *state;
	struct fsops_seen seen;
	struct timespec later[2];

	write_file(tpath(state, "in/x.csv"), "email\n");
	seen = seen_of(tpath(state, "in/x.csv"));
	/* Rewritten with content of the same length: only the mtime tells. One nanosecond is
	 * enough to differ. */
	later[0] = later[1] = seen.mtime;
	later[1].tv_nsec = (later[1].tv_nsec + 1) % 1000000000;
	assert_int_equal(utimensat(t->in, "x.csv", later, 0), 0);
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", &seen), -EAGAIN);
	assert_file_content(tpath(state, "in/x.csv"), "email\n");
	assert_int_equal(count_entries(tpath(state, "proc")), 0);

	later[1].tv_sec += 5;
	assert_int_equal(utimensat(t->in, "x.csv", later, 0), 0);
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", &seen), -EAGAIN);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
}

/* A writer that paused longer than settle_ms but still holds the file open is detected by the
 * read lease (the test runs as the file's owner, which is all F_SETLEASE needs). */
static void
test_claim_open_writer_holds_file_back(void **state)
{
	struct tmpdir *t = *state;
	struct fsops_seen seen;
	int wfd;

	wfd = open(tpath(state, "in/held.csv"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(wfd >= 0);
	assert_int_equal(write(wfd, "email\n", 6), 6);
	seen = seen_of(tpath(state, "in/held.csv"));
	assert_int_equal(fsops_claim(t->in, t->proc, "held.csv", &seen), -EAGAIN);
	assert_file_content(tpath(state, "in/held.csv"), "email\n");
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	/* Asking again does not change the answer while the writer is there. */
	assert_int_equal(fsops_claim(t->in, t->proc, "held.csv", NULL), -EAGAIN);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);

	/* A reader is no writer. */
	int rfd = open(tpath(state, "in/held.csv"), O_RDONLY | O_CLOEXEC);
	assert_true(rfd >= 0);
	assert_int_equal(close(wfd), 0);
	assert_int_equal(fsops_claim(t->in, t->proc, "held.csv", &seen), 0);
	close(rfd);
	assert_missing(tpath(state, "in/held.csv"));
	assert_file_content(tpath(state, "proc/held.csv"), "email\n");
}

static void
test_claim_never_replaces(void **state)
{
	struct tmpdir *t = *state;

	write_file(tpath(state, "in/x.csv"), "new");
	write_file(tpath(state, "proc/x.csv"), "claimed earlier");
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), -EEXIST);
	assert_file_content(tpath(state, "in/x.csv"), "new");
	assert_file_content(tpath(state, "proc/x.csv"), "claimed earlier");
}

static void
test_claim_missing_source(void **state)
{
	struct tmpdir *t = *state;
	struct fsops_seen seen = {0};

	assert_int_equal(fsops_claim(t->in, t->proc, "gone.csv", NULL), -ENOENT);
	assert_int_equal(fsops_claim(t->in, t->proc, "gone.csv", &seen), -ENOENT);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
}

/* Drains IN_OPEN events of an inotify descriptor and tells whether NAME was opened. */
static bool
opened_since(int ifd, const char *name)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool seen = false;
	ssize_t n;

	while ((n = read(ifd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			if ((ev->mask & IN_OPEN) && ev->len > 0 && strcmp(ev->name, name) == 0)
				seen = true;
			p += sizeof(*ev) + ev->len;
		}
	}
	return seen;
}

/* A FIFO is claimed as it is: opening one can block or wake a writer, so it is never opened
 * (the check refuses it later, with a reason). */
static void
test_claim_fifo_not_opened(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	int ifd, fd;

	assert_int_equal(mkfifo(tpath(state, "in/x.csv"), 0600), 0);
	assert_int_equal(mkfifo(tpath(state, "in/control"), 0600), 0);
	ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(ifd >= 0);
	assert_true(inotify_add_watch(ifd, tpath(state, "in"), IN_OPEN) >= 0);
	/* The probe works: an open of a FIFO is seen. */
	fd = open(tpath(state, "in/control"), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
	assert_true(opened_since(ifd, "control"));

	alarm(10); /* a blocking open would hang: the alarm ends the test program instead */
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), 0);
	alarm(0);
	assert_false(opened_since(ifd, "x.csv"));
	close(ifd);
	assert_missing(tpath(state, "in/x.csv"));
	assert_int_equal(lstat(tpath(state, "proc/x.csv"), &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
}

/* A symlink is claimed as the link itself, never followed. */
static void
test_claim_symlink_moves_link_only(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;

	write_file(tpath(state, "target"), "secret");
	assert_int_equal(symlink(tpath(state, "target"), tpath(state, "in/x.csv")), 0);
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), 0);
	assert_int_equal(lstat(tpath(state, "proc/x.csv"), &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_file_content(tpath(state, "target"), "secret");
	assert_missing(tpath(state, "in/x.csv"));
}

/* A device node is not opened by the claim either (an open could have effects of its own). */
static void
test_claim_device_not_opened(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	int ifd;

	if (mknod(tpath(state, "in/x.csv"), S_IFCHR | 0600, makedev(1, 3)) < 0)
		skip(); /* needs CAP_MKNOD */
	ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(ifd >= 0);
	assert_true(inotify_add_watch(ifd, tpath(state, "in"), IN_OPEN) >= 0);
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), 0);
	assert_false(opened_since(ifd, "x.csv"));
	close(ifd);
	assert_int_equal(lstat(tpath(state, "proc/x.csv"), &st), 0);
	assert_true(S_ISCHR(st.st_mode));
}

static void
test_claim_without_noreplace_support(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;

	hook = HOOK_NO_NOREPLACE;
	write_file(tpath(state, "in/x.csv"), "one");
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_file_content(tpath(state, "proc/x.csv"), "one");
	assert_int_equal(stat(tpath(state, "proc/x.csv"), &st), 0);
	assert_int_equal(st.st_nlink, 1);

	write_file(tpath(state, "in/x.csv"), "two");
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), -EEXIST);
	assert_file_content(tpath(state, "in/x.csv"), "two");
	assert_file_content(tpath(state, "proc/x.csv"), "one");
	assert_int_equal(stat(tpath(state, "in/x.csv"), &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(fsops_claim(t->in, t->proc, "gone.csv", NULL), -ENOENT);
}

static void
test_claim_race_lost_without_noreplace(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;

	/* Two hosts claim one file by link + unlink: the one whose unlink fails has lost, and
	 * must not keep a second name for the winner's file. */
	hook = HOOK_LOSE_RACE;
	mkdir_t(state, "other");
	snprintf(hook_path, sizeof(hook_path), "%s", tpath(state, "other/x.csv"));
	write_file(tpath(state, "in/x.csv"), "one");
	assert_int_equal(fsops_claim(t->in, t->proc, "x.csv", NULL), -ENOENT);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_int_equal(stat(hook_path, &st), 0);
	assert_int_equal(st.st_nlink, 1);
}

/* fsops_open_checked */

static int
open_checked(int dir, const char *name, uint64_t max, int *fd, struct stat *st, char *err,
	     size_t errsz)
{
	int before = count_fds(), r;

	*fd = -2;
	err[0] = '\0';
	r = fsops_open_checked(dir, name, max, fd, st, err, errsz);
	if (r < 0) {
		assert_int_equal(*fd, -2); /* not written */
		assert_int_equal(count_fds(), before); /* nothing left open */
	}
	return r;
}

static void
test_open_regular(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256], buf[16];
	int fd;

	write_file(tpath(state, "x.csv"), "email\n");
	assert_int_equal(open_checked(t->root, "x.csv", 6, &fd, &st, err, sizeof(err)), 0);
	assert_true(fd >= 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 6);
	assert_int_equal(st.st_nlink, 1);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(read(fd, buf, sizeof(buf)), 6);
	assert_memory_equal(buf, "email\n", 6);
	close(fd);
}

static void
test_open_symlink(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	write_file(tpath(state, "real.csv"), "email\n");
	assert_int_equal(symlink(tpath(state, "real.csv"), tpath(state, "x.csv")), 0);
	assert_int_equal(open_checked(t->root, "x.csv", 100, &fd, &st, err, sizeof(err)), -ELOOP);
	assert_string_equal(err, "is a symbolic link");
}

static void
test_open_fifo(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	assert_int_equal(mkfifo(tpath(state, "x.csv"), 0600), 0);
	/* Must not hang waiting for a writer. */
	alarm(10);
	assert_int_equal(open_checked(t->root, "x.csv", 100, &fd, &st, err, sizeof(err)), -EINVAL);
	alarm(0);
	assert_string_equal(err, "is a FIFO");
}

static void
test_open_directory(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	mkdir_t(state, "x.csv");
	assert_int_equal(open_checked(t->root, "x.csv", 100, &fd, &st, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "is a directory");
}

static void
test_open_socket(void **state)
{
	struct tmpdir *t = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	char err[256];
	int fd, s;

	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_true(strlen(tpath(state, "x.csv")) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, tpath(state, "x.csv"));
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(open_checked(t->root, "x.csv", 100, &fd, &st, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "is a socket");
	close(s);
}

static void
test_open_char_device(void **state)
{
	struct stat st;
	char err[256];
	int dev, fd;

	(void)state;
	assert_int_equal(fsops_open_dir("/dev", &dev), 0);
	assert_int_equal(open_checked(dev, "null", 100, &fd, &st, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "is a character device");
	close(dev);
}

static void
test_open_hard_linked(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	write_file(tpath(state, "x.csv"), "email\n");
	assert_int_equal(link(tpath(state, "x.csv"), tpath(state, "other")), 0);
	assert_int_equal(open_checked(t->root, "x.csv", 100, &fd, &st, err, sizeof(err)), -EMLINK);
	assert_string_equal(err, "has 2 hard links");
}

static void
test_open_too_big(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	write_file(tpath(state, "x.csv"), "email\nabc\n"); /* 10 bytes */
	assert_int_equal(open_checked(t->root, "x.csv", 9, &fd, &st, err, sizeof(err)), -EFBIG);
	assert_string_equal(err, "is 10 bytes, over the limit of 9 bytes (max_file_bytes)");
	assert_int_equal(open_checked(t->root, "x.csv", 10, &fd, &st, err, sizeof(err)), 0);
	close(fd);
}

static void
test_open_missing(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	assert_int_equal(open_checked(t->root, "x.csv", 100, &fd, &st, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "cannot be opened: No such file or directory");
}

/* fsops_finish */

/* The report's stage name in the processing directory, as the engine gives it (the file's state
 * record, job_finish_work). */
#define STAGE ".state-x"

/* Nothing but files and their reports ever appears in done/: no dot entry at any rename or link
 * the hooks saw, nor now. */
static void
assert_done_had_no_dot_entries(void **state)
{
	assert_int_equal(dot_entries_seen, 0);
	assert_int_equal(count_dot_entries(tpath(state, "done")), 0);
}

static void
test_finish_simple(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;
	struct stat st;
	mode_t old;
	int r;

	write_file(tpath(state, "proc/x.csv"), "data");
	/* However tight the daemon's umask, the report is readable by the group. */
	old = umask(077);
	r = fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"status\":\"completed\"}\n", STAGE, NULL,
			 &final);
	umask(old);
	assert_int_equal(r, 0);
	assert_string_equal(final, "x.csv");
	assert_missing(tpath(state, "proc/x.csv"));
	assert_missing(tpath(state, "proc/" STAGE)); /* it became the report */
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"status\":\"completed\"}\n");
	assert_int_equal(stat(tpath(state, "done/x.csv.json"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(count_entries(tpath(state, "done")), 2); /* no temporary file left */
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* The report is complete and durable in the processing directory, under the caller's stage
 * name, before the file moves (a full disk leaves everything where it was), and is renamed into
 * done/ only after the file: done/ never holds anything but the file and its report. */
static void
test_finish_report_staged_before_move_placed_after(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;
	int r;

	write_file(tpath(state, "proc/x.csv"), "data");
	snprintf(hook_stage, sizeof(hook_stage), "%s", STAGE);
	fsyncs_reset();
	hook = HOOK_LOG;
	r = fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":1}", STAGE, NULL, &final);
	hook = HOOK_OFF;
	assert_int_equal(r, 0);
	assert_int_equal(n_renames, 2);
	/* First the file, with the finished report already waiting in proc/. */
	assert_int_equal(renames[0].from_fd, t->proc);
	assert_int_equal(renames[0].to_fd, t->done);
	assert_string_equal(renames[0].from, "x.csv");
	assert_string_equal(renames[0].to, "x.csv");
	assert_true(renames[0].stage_exists);
	assert_string_equal(renames[0].stage_content, "{\"n\":1}");
	assert_int_equal(renames[0].stage_mode, 0640);
	assert_int_equal(renames[0].files_fsynced, 1);
	assert_int_equal(renames[0].dst_entries, 0);
	/* Then the report, from its stage name, to a done/ that holds the file and nothing else. */
	assert_int_equal(renames[1].from_fd, t->proc);
	assert_int_equal(renames[1].to_fd, t->done);
	assert_string_equal(renames[1].from, STAGE);
	assert_string_equal(renames[1].to, "x.csv.json");
	assert_int_equal(renames[1].dst_entries, 1);
	assert_int_equal(renames[1].dst_dot_entries, 0);
	assert_missing(tpath(state, "proc/" STAGE));
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"n\":1}");
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* The report's content is made durable before it gets its name; the directories are left to
 * the disk queue, which syncs each once per batch. */
static void
test_finish_syncs_report_not_directories(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;
	struct stat st;

	write_file(tpath(state, "proc/x.csv"), "data");
	fsyncs_reset();
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_int_equal(fsyncs_of_files, 1);
	assert_int_equal(fsyncs_of_dirs, 0);
	/* The one file fsynced is the report, not the uploaded file. */
	assert_int_equal(stat(tpath(state, "done/x.csv.json"), &st), 0);
	assert_int_equal(fsynced_dev, st.st_dev);
	assert_int_equal(fsynced_ino, st.st_ino);
	free(final);

	write_file(tpath(state, "proc/y.csv"), "data");
	fsyncs_reset();
	assert_int_equal(fsops_finish(t->proc, "y.csv", t->done, NOW, NULL, NULL, NULL, &final), 0);
	assert_int_equal(fsyncs_of_files + fsyncs_of_dirs, 0);
	free(final);
}

static void
test_finish_without_report(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	/* Without a report the stage name is not used: it may be NULL... */
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, NULL, NULL, NULL, &final), 0);
	assert_string_equal(final, "x.csv");
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_int_equal(count_entries(tpath(state, "done")), 1);
	free(final);

	/* ...and when given, nothing is made under it. */
	write_file(tpath(state, "proc/y.csv"), "data");
	assert_int_equal(fsops_finish(t->proc, "y.csv", t->done, NOW, NULL, STAGE, NULL, &final), 0);
	assert_string_equal(final, "y.csv");
	assert_missing(tpath(state, "proc/" STAGE));
	assert_missing(tpath(state, "done/y.csv.json"));
	assert_int_equal(count_entries(tpath(state, "done")), 2);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* The engine stages the report in the file's state record, which it has already: that inode
 * becomes the report, cut to the report's length and given the report's mode. */
static void
test_finish_stage_reuses_existing_file(void **state)
{
	struct tmpdir *t = *state;
	const char *report = "{\"n\":1}";
	char *final = NULL;
	struct stat before, after;

	write_file(tpath(state, "proc/x.csv"), "data");
	write_file(tpath(state, "proc/" STAGE),
		   "{\"file\":\"x.csv\",\"claimed\":\"2026-11-26T04:00:00Z\",\"sha256\":\"5d41\"}\n");
	assert_int_equal(chmod(tpath(state, "proc/" STAGE), 0600), 0);
	assert_int_equal(stat(tpath(state, "proc/" STAGE), &before), 0);
	assert_true((size_t)before.st_size > strlen(report));

	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, report, STAGE, NULL, &final), 0);
	assert_string_equal(final, "x.csv");
	assert_missing(tpath(state, "proc/" STAGE));
	assert_int_equal(stat(tpath(state, "done/x.csv.json"), &after), 0);
	assert_int_equal(after.st_dev, before.st_dev);
	assert_int_equal(after.st_ino, before.st_ino);
	assert_int_equal(after.st_nlink, 1);
	assert_int_equal(after.st_mode & 07777, 0640);
	assert_int_equal(after.st_size, (off_t)strlen(report)); /* no leftover of the record */
	assert_file_content(tpath(state, "done/x.csv.json"), report);
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_int_equal(count_entries(tpath(state, "done")), 2);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* A symlink planted under the stage name is not followed: nothing is written through it and
 * the file does not move. */
static void
test_finish_stage_symlink_refused(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "data");
	write_file(tpath(state, "victim"), "keep");
	assert_int_equal(symlink(tpath(state, "victim"), tpath(state, "proc/" STAGE)), 0);
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final),
			 -ELOOP);
	assert_null(final);
	assert_file_content(tpath(state, "victim"), "keep");
	assert_file_content(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(count_entries(tpath(state, "done")), 0);
}

static void
test_finish_clash_gets_timestamp(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "done/x.csv"), "old");
	write_file(tpath(state, "done/x.csv.json"), "old report");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_string_equal(final, "x.20261126T040102Z.csv");
	assert_file_content(tpath(state, "done/x.csv"), "old");
	assert_file_content(tpath(state, "done/x.csv.json"), "old report");
	assert_file_content(tpath(state, "done/x.%s.csv", STAMP), "new");
	assert_file_content(tpath(state, "done/x.%s.csv.json", STAMP), "{}");
	assert_missing(tpath(state, "proc/x.csv"));
	assert_missing(tpath(state, "proc/" STAGE));
	assert_int_equal(count_entries(tpath(state, "done")), 4);
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_second_and_third_clash(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	write_file(tpath(state, "done/x.csv"), "old");
	write_file(tpath(state, "done/x.%s.csv", STAMP), "old 1");
	write_file(tpath(state, "proc/x.csv"), "new 2");
	assert_int_equal(
		fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":2}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP "-2.csv");
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv"), "new 2");
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv.json"), "{\"n\":2}");
	free(final);

	/* "-2" is now taken by the file, "-3" only by a report: both skipped. */
	write_file(tpath(state, "done/x." STAMP "-3.csv.json"), "stray report");
	write_file(tpath(state, "proc/x.csv"), "new 4");
	assert_int_equal(
		fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":4}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP "-4.csv");
	assert_file_content(tpath(state, "done/x." STAMP "-4.csv"), "new 4");
	assert_file_content(tpath(state, "done/x." STAMP "-4.csv.json"), "{\"n\":4}");
	assert_file_content(tpath(state, "done/x." STAMP "-3.csv.json"), "stray report");
	assert_file_content(tpath(state, "done/x.csv"), "old");
	assert_file_content(tpath(state, "done/x.%s.csv", STAMP), "old 1");
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv"), "new 2");
	assert_missing(tpath(state, "done/x." STAMP "-3.csv"));
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_clash_on_report_only(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "done/x.csv.json"), "report of an earlier x.csv");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_missing(tpath(state, "done/x.csv")); /* a report beside it would not be its own */
	assert_file_content(tpath(state, "done/x.csv.json"), "report of an earlier x.csv");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "new");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_clash_with_dangling_symlink(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;
	struct stat st;

	/* A dangling link is a name too: not replaced, not written through. */
	assert_int_equal(symlink(tpath(state, "nowhere"), tpath(state, "done/x.csv")), 0);
	write_file(tpath(state, "proc/x.csv"), "new");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_int_equal(lstat(tpath(state, "done/x.csv"), &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_missing(tpath(state, "nowhere"));
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_name_without_extension(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	write_file(tpath(state, "proc/contacts"), "new");
	write_file(tpath(state, "done/contacts"), "old");
	assert_int_equal(fsops_finish(t->proc, "contacts", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "contacts." STAMP);
	assert_file_content(tpath(state, "done/contacts." STAMP), "new");
	assert_file_content(tpath(state, "done/contacts." STAMP ".json"), "{}");
	assert_file_content(tpath(state, "done/contacts"), "old");
	free(final);

	/* Only the last extension moves. */
	write_file(tpath(state, "proc/a.b.csv"), "ab");
	write_file(tpath(state, "done/a.b.csv"), "old ab");
	assert_int_equal(fsops_finish(t->proc, "a.b.csv", t->done, NOW, NULL, NULL, NULL, &final), 0);
	assert_string_equal(final, "a.b." STAMP ".csv");
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_long_name_fits(void **state)
{
	struct tmpdir *t = *state;
	char name[NAME_MAX + 1];
	char *final = NULL;

	/* 251 bytes + ".csv": legal, but "<name>.json" would not be. */
	memset(name, 'n', 251);
	strcpy(name + 251, ".csv");
	write_file(tpath(state, "proc/%s", name), "long");
	assert_int_equal(fsops_finish(t->proc, name, t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_true(strlen(final) + strlen(".json") <= NAME_MAX);
	assert_true(ends_with(final, "." STAMP ".csv"));
	assert_int_equal(strncmp(final, name, 100), 0);
	assert_file_content(tpath(state, "done/%s", final), "long");
	assert_file_content(tpath(state, "done/%s.json", final), "{}");
	assert_int_equal(count_entries(tpath(state, "done")), 2);
	assert_missing(tpath(state, "proc/" STAGE));
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_missing_source(void **state)
{
	struct tmpdir *t = *state;
	char *final = (char *)"untouched";
	struct stat st;
	int staged;

	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final),
			 -ENOENT);
	assert_string_equal(final, "untouched");
	/* Nothing reached done/. The stage is the caller's name in proc/: whether it is left
	 * there or not, nothing else is. */
	assert_int_equal(count_entries(tpath(state, "done")), 0);
	staged = lstat(tpath(state, "proc/" STAGE), &st) == 0;
	assert_int_equal(count_entries(tpath(state, "proc")), staged);
	assert_done_had_no_dot_entries(state);
}

static void
test_finish_report_name_taken_meanwhile(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	hook = HOOK_PLANT;
	hook_dir_fd = t->done;
	snprintf(hook_name, sizeof(hook_name), "x.csv.json");
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x.csv");
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_file_content(tpath(state, "done/x.csv.json"), "intruder");
	assert_file_content(tpath(state, "done/x.csv.2.json"), "{}");
	assert_int_equal(count_entries(tpath(state, "done")), 3);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_name_taken_meanwhile(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	/* Free when looked at, taken by the time of the rename: the next name is used. */
	hook = HOOK_PLANT;
	hook_dir_fd = t->done;
	snprintf(hook_name, sizeof(hook_name), "x.csv");
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_file_content(tpath(state, "done/x.csv"), "intruder");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "data");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
	assert_int_equal(count_entries(tpath(state, "done")), 3);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_report_failure_puts_file_back(void **state)
{
	struct tmpdir *t = *state;
	char *final = (char *)"untouched";

	hook = HOOK_EIO_JSON;
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW,
				      "{\"attempt\":1,\"status\":\"completed\"}", STAGE, NULL, &final),
			 -EIO);
	assert_string_equal(final, "untouched");
	/* The file is back in proc/, the report still staged there under its name, and done/
	 * holds neither. */
	assert_file_content(tpath(state, "proc/x.csv"), "data");
	assert_file_content(tpath(state, "proc/" STAGE), "{\"attempt\":1,\"status\":\"completed\"}");
	assert_int_equal(count_entries(tpath(state, "proc")), 2);
	assert_int_equal(count_entries(tpath(state, "done")), 0);
	assert_done_had_no_dot_entries(state);

	/* Once the fault is gone the whole step can be tried again, under the same stage name
	 * (rewritten: nothing of the first report is left). */
	hook = HOOK_OFF;
	assert_int_equal(
		fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"attempt\":2}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x.csv");
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"attempt\":2}");
	assert_int_equal(count_entries(tpath(state, "done")), 2);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

static void
test_finish_without_noreplace_support(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;
	struct stat st;

	hook = HOOK_NO_NOREPLACE;
	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "done/x.csv"), "old");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, NULL, &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_file_content(tpath(state, "done/x.csv"), "old");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "new");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
	assert_int_equal(stat(tpath(state, "done/x." STAMP ".csv"), &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(stat(tpath(state, "done/x." STAMP ".csv.json"), &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_missing(tpath(state, "proc/x.csv"));
	assert_missing(tpath(state, "proc/" STAGE));
	assert_int_equal(count_entries(tpath(state, "done")), 3);
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* A rejects file, staged under a dot name in the processing directory, goes with the file. */
#define REJECTS_STAGE ".rejects-x"
#define REJECTS "line,reason,row\n3,empty email,\",Bob\"\n"

static void
test_finish_with_rejects(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;
	struct stat st;

	write_file(tpath(state, "proc/x.csv"), "data");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":1}", STAGE,
				      REJECTS_STAGE, &final),
			 0);
	assert_string_equal(final, "x.csv");
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"n\":1}");
	assert_file_content(tpath(state, "done/x.csv.rejects.csv"), REJECTS);
	assert_int_equal(stat(tpath(state, "done/x.csv.rejects.csv"), &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(count_entries(tpath(state, "done")), 3);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);

	/* Without a report too (the stage is the caller's business then). */
	write_file(tpath(state, "proc/y.csv"), "y");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(
		fsops_finish(t->proc, "y.csv", t->done, NOW, NULL, NULL, REJECTS_STAGE, &final), 0);
	assert_string_equal(final, "y.csv");
	assert_file_content(tpath(state, "done/y.csv.rejects.csv"), REJECTS);
	assert_missing(tpath(state, "done/y.csv.json"));
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* A clash on any one of the three names moves all three to the next timestamped variant: a
 * rejects file beside a file must be that file's. */
static void
test_finish_rejects_clash_on_any_name(void **state)
{
	static const char *const taken[] = {"x.csv", "x.csv.json", "x.csv.rejects.csv"};
	struct tmpdir *t = *state;
	char *final = NULL;

	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(nftw(tpath(state, "done"), rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
		assert_int_equal(mkdirat(t->root, "done", 0755), 0);
		close(t->done);
		assert_int_equal(fsops_open_dir(tpath(state, "done"), &t->done), 0);
		watch_dir_fd = t->done;

		write_file(tpath(state, "done/%s", taken[i]), "old");
		write_file(tpath(state, "proc/x.csv"), "new");
		write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
		assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE,
					      REJECTS_STAGE, &final),
				 0);
		if (strcmp(final, "x." STAMP ".csv") != 0)
			fail_msg("with done/%s taken: '%s'", taken[i], final);
		assert_file_content(tpath(state, "done/%s", taken[i]), "old");
		assert_file_content(tpath(state, "done/x." STAMP ".csv"), "new");
		assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
		assert_file_content(tpath(state, "done/x." STAMP ".csv.rejects.csv"), REJECTS);
		assert_int_equal(count_entries(tpath(state, "done")), 4);
		assert_int_equal(count_entries(tpath(state, "proc")), 0);
		free(final);
	}

	/* The timestamped name's rejects file taken too: the next variant, for all three. */
	write_file(tpath(state, "done/x." STAMP "-2.csv.rejects.csv"), "stray");
	write_file(tpath(state, "proc/x.csv"), "newer");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, REJECTS_STAGE,
				      &final),
			 0);
	assert_string_equal(final, "x." STAMP "-3.csv");
	assert_file_content(tpath(state, "done/x." STAMP "-3.csv"), "newer");
	assert_file_content(tpath(state, "done/x." STAMP "-3.csv.json"), "{}");
	assert_file_content(tpath(state, "done/x." STAMP "-3.csv.rejects.csv"), REJECTS);
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv.rejects.csv"), "stray");
	assert_missing(tpath(state, "done/x." STAMP "-2.csv"));
	assert_done_had_no_dot_entries(state);
	free(final);

	/* A rejects file taken where there is none to place does not count. */
	write_file(tpath(state, "done/z.csv.rejects.csv"), "stray");
	write_file(tpath(state, "proc/z.csv"), "z");
	assert_int_equal(fsops_finish(t->proc, "z.csv", t->done, NOW, "{}", STAGE, NULL, &final),
			 0);
	assert_string_equal(final, "z.csv");
	free(final);
}

/* The rejects file cannot be placed (its name taken since it was found free, its stage gone):
 * the file goes back, and nothing has moved. */
static void
test_finish_rejects_not_placed_puts_file_back(void **state)
{
	struct tmpdir *t = *state;
	char *final = (char *)"untouched";

	hook = HOOK_PLANT;
	hook_dir_fd = t->done;
	snprintf(hook_name, sizeof(hook_name), "x.csv.rejects.csv");
	write_file(tpath(state, "proc/x.csv"), "data");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":1}", STAGE,
				      REJECTS_STAGE, &final),
			 -EEXIST);
	assert_string_equal(final, "untouched");
	assert_file_content(tpath(state, "proc/x.csv"), "data");
	assert_file_content(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_file_content(tpath(state, "proc/" STAGE), "{\"n\":1}");
	assert_file_content(tpath(state, "done/x.csv.rejects.csv"), "intruder");
	assert_missing(tpath(state, "done/x.csv"));
	assert_missing(tpath(state, "done/x.csv.json"));
	assert_int_equal(count_entries(tpath(state, "done")), 1);
	assert_int_equal(count_entries(tpath(state, "proc")), 3);

	/* Tried again: that name is taken now, so all three take the next. */
	hook = HOOK_OFF;
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":2}", STAGE,
				      REJECTS_STAGE, &final),
			 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "data");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{\"n\":2}");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.rejects.csv"), REJECTS);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	free(final);

	/* The stage is gone: the same, ENOENT. */
	final = (char *)"untouched";
	write_file(tpath(state, "proc/y.csv"), "y");
	assert_int_equal(fsops_finish(t->proc, "y.csv", t->done, NOW, "{}", STAGE, REJECTS_STAGE,
				      &final),
			 -ENOENT);
	assert_string_equal(final, "untouched");
	assert_file_content(tpath(state, "proc/y.csv"), "y");
	assert_missing(tpath(state, "done/y.csv"));
	assert_missing(tpath(state, "done/y.csv.json"));
	assert_missing(tpath(state, "done/y.csv.rejects.csv"));
	assert_done_had_no_dot_entries(state);
}

/* The report cannot be placed: the rejects file goes back with the file. */
static void
test_finish_report_failure_puts_rejects_back(void **state)
{
	struct tmpdir *t = *state;
	char *final = (char *)"untouched";

	hook = HOOK_EIO_JSON;
	write_file(tpath(state, "proc/x.csv"), "data");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":1}", STAGE,
				      REJECTS_STAGE, &final),
			 -EIO);
	assert_string_equal(final, "untouched");
	assert_file_content(tpath(state, "proc/x.csv"), "data");
	assert_file_content(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(count_entries(tpath(state, "proc")), 3);
	assert_int_equal(count_entries(tpath(state, "done")), 0);

	hook = HOOK_OFF;
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{\"n\":2}", STAGE,
				      REJECTS_STAGE, &final),
			 0);
	assert_string_equal(final, "x.csv");
	assert_file_content(tpath(state, "done/x.csv.rejects.csv"), REJECTS);
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"n\":2}");
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(final);
}

/* Without RENAME_NOREPLACE (NFS) the rejects file moves by link and unlink like the rest. */
static void
test_finish_rejects_without_noreplace_support(void **state)
{
	struct tmpdir *t = *state;
	char *final = NULL;

	hook = HOOK_NO_NOREPLACE;
	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	write_file(tpath(state, "done/x.csv.rejects.csv"), "old");
	assert_int_equal(fsops_finish(t->proc, "x.csv", t->done, NOW, "{}", STAGE, REJECTS_STAGE,
				      &final),
			 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_file_content(tpath(state, "done/x.csv.rejects.csv"), "old");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.rejects.csv"), REJECTS);
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_int_equal(count_entries(tpath(state, "done")), 4);
	free(final);
}

/* fsops_finish_name says the name fsops_finish then chooses, so that a report can name the
 * rejects file beside it before it is written. */
static void
test_finish_name_agrees(void **state)
{
	struct tmpdir *t = *state;
	char *picked = NULL, *final = NULL;
	char name[NAME_MAX + 1];

	struct {
		const char *name;
		const char *taken[3];
		bool rejects;
		const char *want;
	} cases[] = {
		{"a.csv", {NULL}, true, "a.csv"},
		{"b.csv", {"b.csv"}, true, "b." STAMP ".csv"},
		{"c.csv", {"c.csv.json"}, true, "c." STAMP ".csv"},
		{"d.csv", {"d.csv.rejects.csv"}, true, "d." STAMP ".csv"},
		{"d2.csv", {"d2.csv.rejects.csv"}, false, "d2.csv"},
		{"e.csv", {"e.csv", "e." STAMP ".csv.rejects.csv"}, true, "e." STAMP "-2.csv"},
		{"f", {"f.rejects.csv"}, true, "f." STAMP},
		{"g.b.csv", {"g.b.csv.json", "g.b." STAMP ".csv"}, false, "g.b." STAMP "-2.csv"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t k = 0; k < 3 && cases[i].taken[k]; k++)
			write_file(tpath(state, "done/%s", cases[i].taken[k]), "old");
		write_file(tpath(state, "proc/%s", cases[i].name), "new");
		if (cases[i].rejects)
			write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
		picked = NULL;
		assert_int_equal(fsops_finish_name(t->done, cases[i].name, NOW, cases[i].rejects,
						   &picked),
				 0);
		assert_non_null(picked);
		if (strcmp(picked, cases[i].want) != 0)
			fail_msg("%s: picked '%s', expected '%s'", cases[i].name, picked,
				 cases[i].want);
		/* Only a look: nothing made. */
		assert_missing(tpath(state, "done/%s", picked));
		assert_int_equal(fsops_finish(t->proc, cases[i].name, t->done, NOW, "{}", STAGE,
					      cases[i].rejects ? REJECTS_STAGE : NULL, &final),
				 0);
		assert_string_equal(final, picked);
		if (cases[i].rejects)
			assert_file_content(tpath(state, "done/%s.rejects.csv", final), REJECTS);
		free(picked);
		free(final);
	}

	/* A name too long to carry ".rejects.csv" is cut short the same way by both. */
	memset(name, 'n', 251);
	strcpy(name + 251, ".csv");
	write_file(tpath(state, "proc/%s", name), "long");
	write_file(tpath(state, "proc/" REJECTS_STAGE), REJECTS);
	assert_int_equal(fsops_finish_name(t->done, name, NOW, true, &picked), 0);
	assert_true(strlen(picked) + strlen(".rejects.csv") <= NAME_MAX);
	assert_true(ends_with(picked, "." STAMP ".csv"));
	assert_int_equal(fsops_finish(t->proc, name, t->done, NOW, "{}", STAGE, REJECTS_STAGE,
				      &final),
			 0);
	assert_string_equal(final, picked);
	assert_file_content(tpath(state, "done/%s.rejects.csv", final), REJECTS);
	assert_file_content(tpath(state, "done/%s.json", final), "{}");
	assert_int_equal(count_entries(tpath(state, "proc")), 0);
	assert_done_had_no_dot_entries(state);
	free(picked);
	free(final);
}

/* fsops_open_tmpfile */

static void
test_open_tmpfile(void **state)
{
	struct tmpdir *t = *state;
	char buf[64];
	struct stat st;
	int fd = -1, fd2 = -1, before = count_fds();

	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_open_tmpfile(t->proc, &fd), 0);
	assert_true(fd >= 0);
	/* Unnamed: no new entry, no link. */
	assert_int_equal(count_entries(tpath(state, "proc")), 1);
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_nlink, 0);
	assert_int_equal(st.st_mode & 0077, 0); /* nobody else's */
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	/* Written, then read back. */
	assert_int_equal(write(fd, "hello, copy", 11), 11);
	assert_int_equal(pwrite(fd, "H", 1, 0), 1);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(pread(fd, buf, sizeof(buf), 0), 11);
	assert_string_equal(buf, "Hello, copy");

	/* A second one is another file. */
	assert_int_equal(fsops_open_tmpfile(t->proc, &fd2), 0);
	assert_int_equal(pread(fd2, buf, sizeof(buf), 0), 0);
	assert_int_equal(count_entries(tpath(state, "proc")), 1);
	close(fd2);
	close(fd);
	assert_int_equal(count_fds(), before);
	assert_int_equal(count_entries(tpath(state, "proc")), 1);

	/* A directory that is not there is an error, not a file elsewhere. */
	fd = -1;
	assert_int_equal(mkdirat(t->root, "gone", 0755), 0);
	fd2 = openat(t->root, "gone", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd2 >= 0);
	assert_int_equal(unlinkat(t->root, "gone", AT_REMOVEDIR), 0);
	assert_true(fsops_open_tmpfile(fd2, &fd) < 0);
	assert_int_equal(fd, -1);
	close(fd2);
}

/* fsops_write_record, fsops_read_small */

static void
test_write_record_replaces(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;

	assert_int_equal(fsops_write_record(t->proc, "state.json", "one", 3, true), 0);
	assert_record_content(tpath(state, "proc/state.json"), "one");
	assert_int_equal(fsops_write_record(t->proc, "state.json", "second", 6, true), 0);
	assert_record_content(tpath(state, "proc/state.json"), "second");
	assert_int_equal(stat(tpath(state, "proc/state.json"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_missing(tpath(state, "proc/.state.json.tmp"));
	assert_int_equal(count_entries(tpath(state, "proc")), 1);
}

static void
test_write_record_durable_or_not(void **state)
{
	struct tmpdir *t = *state;

	/* Durable: the content is fsynced before the rename (the directory is the caller's). */
	fsyncs_reset();
	assert_int_equal(fsops_write_record(t->proc, "a", "durable", 7, true), 0);
	assert_int_equal(fsyncs_of_files, 1);
	assert_int_equal(fsyncs_of_dirs, 0);
	assert_record_content(tpath(state, "proc/a"), "durable");

	/* Not durable: the same content and name, and no fsync at all. */
	fsyncs_reset();
	assert_int_equal(fsops_write_record(t->proc, "b", "not durable", 11, false), 0);
	assert_int_equal(fsyncs_of_files + fsyncs_of_dirs, 0);
	assert_record_content(tpath(state, "proc/b"), "not durable");
	assert_int_equal(fsops_write_record(t->proc, "a", "again", 5, false), 0);
	assert_record_content(tpath(state, "proc/a"), "again");

	/* In place: a record rewritten keeps its inode (no inode made and freed per write). */
	struct stat before, after;
	assert_int_equal(stat(tpath(state, "proc/b"), &before), 0);
	assert_int_equal(fsops_write_record(t->proc, "b", "x", 1, false), 0);
	assert_int_equal(stat(tpath(state, "proc/b"), &after), 0);
	assert_true(before.st_ino == after.st_ino);
	assert_record_content(tpath(state, "proc/b"), "x");

	assert_int_equal(count_entries(tpath(state, "proc")), 2);
	assert_int_equal(count_dot_entries(tpath(state, "proc")), 0);
}

/* A durable rewrite of a one-sector record that exists: in place, one fdatasync, no new inode
 * and no temporary; what is not such a record (an older record of another size, a record of a
 * sector or more, a record with a second link) is replaced through the temporary. */
static void
test_write_record_durable_in_place(void **state)
{
	struct tmpdir *t = *state;
	struct stat before, after;
	char big[700];

	assert_int_equal(fsops_write_record(t->proc, "r", "claimed", 7, false), 0);
	assert_int_equal(stat(tpath(state, "proc/r"), &before), 0);
	assert_int_equal(before.st_size, 512);
	fsyncs_reset();
	assert_int_equal(fsops_write_record(t->proc, "r", "{\"batch\":1}", 11, true), 0);
	assert_int_equal(fdatasyncs, 1);
	assert_int_equal(fsyncs_of_files + fsyncs_of_dirs, 0);
	assert_int_equal(stat(tpath(state, "proc/r"), &after), 0);
	assert_true(before.st_ino == after.st_ino);
	assert_record_content(tpath(state, "proc/r"), "{\"batch\":1}");

	/* A record of an older version, not padded: replaced, padded from now on. */
	write_file(tpath(state, "proc/old"), "{\"attempts\":1}");
	assert_int_equal(stat(tpath(state, "proc/old"), &before), 0);
	fsyncs_reset();
	assert_int_equal(fsops_write_record(t->proc, "old", "{\"attempts\":2}", 14, true), 0);
	assert_int_equal(fsyncs_of_files, 1);
	assert_int_equal(fdatasyncs, 0);
	assert_int_equal(stat(tpath(state, "proc/old"), &after), 0);
	assert_true(before.st_ino != after.st_ino);
	assert_record_content(tpath(state, "proc/old"), "{\"attempts\":2}");

	/* A sector or more: as it is, through the temporary, and shortened in place again. */
	memset(big, 'x', sizeof(big));
	fsyncs_reset();
	assert_int_equal(fsops_write_record(t->proc, "r", big, sizeof(big), true), 0);
	assert_int_equal(fsyncs_of_files, 1);
	assert_int_equal(stat(tpath(state, "proc/r"), &after), 0);
	assert_int_equal(after.st_size, sizeof(big));
	assert_int_equal(fsops_write_record(t->proc, "r", "short", 5, false), 0);
	assert_record_content(tpath(state, "proc/r"), "short");

	/* A second link: the record is not rewritten through it. */
	assert_int_equal(link(tpath(state, "proc/r"), tpath(state, "linked")), 0);
	assert_int_equal(fsops_write_record(t->proc, "r", "new", 3, true), 0);
	assert_record_content(tpath(state, "proc/r"), "new");
	assert_record_content(tpath(state, "linked"), "short");
	assert_int_equal(count_dot_entries(tpath(state, "proc")), 0);
}

static void
test_write_record_does_not_follow_symlink(void **state)
{
	struct tmpdir *t = *state;

	write_file(tpath(state, "victim"), "keep");
	/* Durable: through the temporary name. */
	assert_int_equal(symlink(tpath(state, "victim"), tpath(state, "proc/.state.json.tmp")), 0);
	assert_int_equal(fsops_write_record(t->proc, "state.json", "evil", 4, true), -ELOOP);
	assert_file_content(tpath(state, "victim"), "keep");
	assert_missing(tpath(state, "proc/state.json"));
	/* In place: through the record's own name. */
	assert_int_equal(symlink(tpath(state, "victim"), tpath(state, "proc/state.json")), 0);
	assert_int_equal(fsops_write_record(t->proc, "state.json", "evil", 4, false), -ELOOP);
	assert_file_content(tpath(state, "victim"), "keep");
}

static void
test_read_small(void **state)
{
	struct tmpdir *t = *state;
	char *buf = (char *)"untouched";
	size_t len = 99;

	write_file(tpath(state, "s"), "hello");
	assert_int_equal(fsops_read_small(t->root, "s", 4, &buf, &len), -EFBIG);
	assert_string_equal(buf, "untouched");
	assert_int_equal(len, 99);
	assert_int_equal(fsops_read_small(t->root, "s", 5, &buf, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal(buf, "hello");
	free(buf);

	write_file(tpath(state, "empty"), "");
	assert_int_equal(fsops_read_small(t->root, "empty", 5, &buf, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);

	buf = (char *)"untouched";
	len = 99;
	assert_int_equal(symlink(tpath(state, "s"), tpath(state, "link")), 0);
	assert_int_equal(fsops_read_small(t->root, "link", 100, &buf, &len), -ELOOP);
	assert_int_equal(fsops_read_small(t->root, "missing", 100, &buf, &len), -ENOENT);
	mkdir_t(state, "dir");
	assert_int_equal(fsops_read_small(t->root, "dir", 100, &buf, &len), -EINVAL);
	assert_string_equal(buf, "untouched");
	assert_int_equal(len, 99);
}

/* fsops_list */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_list_skips_dot_names(void **state)
{
	struct tmpdir *t = *state;
	char **names = NULL;
	size_t n = 99;

	assert_int_equal(fsops_list(t->in, &names, &n), 0);
	assert_int_equal(n, 0);
	fsops_names_free(names, n);

	write_file(tpath(state, "in/b.csv"), "b");
	write_file(tpath(state, "in/a.csv"), "a");
	write_file(tpath(state, "in/.hidden.csv"), "h");
	write_file(tpath(state, "in/.x.csv.json.0123abcd"), "{}");
	mkdir_t(state, "in/.resend-dropd");
	assert_int_equal(fsops_list(t->in, &names, &n), 0);
	assert_int_equal(n, 2);
	qsort(names, n, sizeof(*names), cmp_str);
	assert_string_equal(names[0], "a.csv");
	assert_string_equal(names[1], "b.csv");
	fsops_names_free(names, n);
	fsops_names_free(NULL, 0);

	/* Listing twice gives the whole directory again (the caller's descriptor is not
	 * consumed or moved). */
	assert_int_equal(fsops_list(t->in, &names, &n), 0);
	assert_int_equal(n, 2);
	fsops_names_free(names, n);

	/* A durable record's temporary left by a crash goes; the record and the rest stay. */
	write_file(tpath(state, "in/..state-0123.tmp"), "{}");
	write_file(tpath(state, "in/.state-0123"), "{}");
	write_file(tpath(state, "in/.x.tmp"), "{}");
	assert_int_equal(fsops_list(t->in, &names, &n), 0);
	assert_int_equal(n, 2);
	fsops_names_free(names, n);
	assert_int_equal(access(tpath(state, "in/..state-0123.tmp"), F_OK), -1);
	assert_int_equal(access(tpath(state, "in/.state-0123"), F_OK), 0);
	assert_int_equal(access(tpath(state, "in/.x.tmp"), F_OK), 0);
}

static void
test_list_many(void **state)
{
	struct tmpdir *t = *state;
	char **names = NULL, want[16];
	size_t n = 0;

	for (int i = 0; i < 300; i++)
		write_file(tpath(state, "in/f%03d", i), "x");
	assert_int_equal(fsops_list(t->in, &names, &n), 0);
	assert_int_equal(n, 300);
	qsort(names, n, sizeof(*names), cmp_str);
	for (int i = 0; i < 300; i++) {
		snprintf(want, sizeof(want), "f%03d", i);
		assert_string_equal(names[i], want);
	}
	fsops_names_free(names, n);
}

static void
test_fsync_dir(void **state)
{
	struct tmpdir *t = *state;

	fsyncs_reset();
	assert_int_equal(fsops_fsync_dir(t->done), 0);
	assert_int_equal(fsyncs_of_dirs, 1);
	assert_int_equal(fsops_fsync_dir(-1), -EBADF);
}


#define T(f) cmocka_unit_test_setup_teardown(f, setup_tmp, teardown_tmp)

/* resend-dropd retry: the file goes back to the inbox, never over another; its report stays
 * under a timestamped name that no new report takes; a refused move changes nothing. */
static void
test_unfail(void **state)
{
	struct tmpdir *t = *state;
	char *kept = NULL;

	write_file(tpath(state, "done/x.csv"), "data");
	write_file(tpath(state, "done/x.csv.json"), "{\"old\":1}");
	assert_int_equal(fsops_unfail(t->done, t->in, "x.csv", 86400, &kept), 0);
	assert_string_equal(kept, "x.csv.19700102T000000Z.json");
	free(kept);
	assert_file_content(tpath(state, "in/x.csv"), "data");
	assert_file_content(tpath(state, "done/x.csv.19700102T000000Z.json"), "{\"old\":1}");
	assert_int_equal(access(tpath(state, "done/x.csv"), F_OK), -1);
	assert_int_equal(access(tpath(state, "done/x.csv.json"), F_OK), -1);

	/* Failed again within the same second, while a namesake is in the inbox: refused, and
	 * the report has its name back. */
	write_file(tpath(state, "done/x.csv"), "again");
	write_file(tpath(state, "done/x.csv.json"), "{\"old\":2}");
	kept = (char *)"untouched";
	assert_int_equal(fsops_unfail(t->done, t->in, "x.csv", 86400, &kept), -EEXIST);
	assert_string_equal(kept, "untouched");
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"old\":2}");
	assert_file_content(tpath(state, "in/x.csv"), "data");
	assert_int_equal(unlink(tpath(state, "in/x.csv")), 0);
	assert_int_equal(fsops_unfail(t->done, t->in, "x.csv", 86400, &kept), 0);
	assert_string_equal(kept, "x.csv.19700102T000000Z-2.json");
	free(kept);
	assert_file_content(tpath(state, "in/x.csv"), "again");
	assert_file_content(tpath(state, "done/x.csv.19700102T000000Z.json"), "{\"old\":1}");

	/* No report: nothing to keep. */
	write_file(tpath(state, "done/y.csv"), "y");
	assert_int_equal(fsops_unfail(t->done, t->in, "y.csv", 86400, &kept), 0);
	assert_null(kept);

	assert_int_equal(fsops_unfail(t->done, t->in, "missing.csv", 86400, &kept), -ENOENT);
	assert_int_equal(fsops_unfail(t->done, t->in, "../in/y.csv", 86400, &kept), -EINVAL);
	assert_int_equal(fsops_unfail(t->done, t->in, ".hidden", 86400, &kept), -EINVAL);
	assert_int_equal(fsops_unfail(t->done, t->in, "", 86400, &kept), -EINVAL);
	assert_int_equal(mkdirat(t->done, "d.csv", 0755), 0);
	assert_int_equal(fsops_unfail(t->done, t->in, "d.csv", 86400, &kept), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_dir),
		T(test_unfail),
		T(test_open_dir_refuses_symlink),
		T(test_path_dir),
		T(test_dir_check),
		T(test_dir_owned),
		T(test_lock_dir),
		T(test_processing_dir_created),
		T(test_processing_dir_loose_mode_tightened),
		T(test_processing_dir_tight_mode_loosened),
		T(test_processing_dir_symlink_refused),
		T(test_processing_dir_not_a_directory),
		T(test_processing_dir_wrong_owner),
		T(test_claim_moves),
		T(test_claim_as_seen),
		T(test_claim_size_changed_since_seen),
		T(test_claim_mtime_changed_since_seen),
		T(test_claim_open_writer_holds_file_back),
		T(test_claim_never_replaces),
		T(test_claim_missing_source),
		T(test_claim_fifo_not_opened),
		T(test_claim_symlink_moves_link_only),
		T(test_claim_device_not_opened),
		T(test_claim_without_noreplace_support),
		T(test_claim_race_lost_without_noreplace),
		T(test_open_regular),
		T(test_open_symlink),
		T(test_open_fifo),
		T(test_open_directory),
		T(test_open_socket),
		T(test_open_char_device),
		T(test_open_hard_linked),
		T(test_open_too_big),
		T(test_open_missing),
		T(test_finish_simple),
		T(test_finish_report_staged_before_move_placed_after),
		T(test_finish_syncs_report_not_directories),
		T(test_finish_without_report),
		T(test_finish_stage_reuses_existing_file),
		T(test_finish_stage_symlink_refused),
		T(test_finish_clash_gets_timestamp),
		T(test_finish_second_and_third_clash),
		T(test_finish_clash_on_report_only),
		T(test_finish_clash_with_dangling_symlink),
		T(test_finish_name_without_extension),
		T(test_finish_long_name_fits),
		T(test_finish_missing_source),
		T(test_finish_report_name_taken_meanwhile),
		T(test_finish_name_taken_meanwhile),
		T(test_finish_report_failure_puts_file_back),
		T(test_finish_without_noreplace_support),
		T(test_finish_with_rejects),
		T(test_finish_rejects_clash_on_any_name),
		T(test_finish_rejects_not_placed_puts_file_back),
		T(test_finish_report_failure_puts_rejects_back),
		T(test_finish_rejects_without_noreplace_support),
		T(test_finish_name_agrees),
		T(test_open_tmpfile),
		T(test_write_record_replaces),
		T(test_write_record_durable_or_not),
		T(test_write_record_durable_in_place),
		T(test_write_record_does_not_follow_symlink),
		T(test_read_small),
		T(test_list_skips_dot_names),
		T(test_list_many),
		T(test_fsync_dir),
	};

	return cmocka_run_group_tests_name("fsops", tests, NULL, NULL);
}
