/* fsops: claims, refusals and moves as a user of the drop folders would see them. */
#include "fsops.h"

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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

/* 2026-11-26T04:01:02Z (date -u -d @1795665662) */
#define NOW 1795665662
#define STAMP "20261126T040102Z"

/* renameat2 and link are replaced for the whole test program, so that the paths a real
 * filesystem never takes on a developer's machine can be walked: no RENAME_NOREPLACE support
 * (NFS), a name taken between check and rename, another host winning a race, an I/O error. */
enum hook_mode { HOOK_OFF, HOOK_NO_NOREPLACE, HOOK_PLANT, HOOK_EIO_JSON, HOOK_LOSE_RACE };
static enum hook_mode hook;
static char hook_path[PATH_MAX]; /* HOOK_PLANT: created just before a rename to it;
				  * HOOK_LOSE_RACE: where the other host takes the file */

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
	if (hook == HOOK_PLANT && strcmp(newpath, hook_path) == 0) {
		int fd = open(hook_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

		if (fd >= 0) {
			if (write(fd, "intruder", 8) != 8)
				abort();
			close(fd);
		}
	}
	if (hook == HOOK_EIO_JSON && ends_with(newpath, ".json")) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

int
link(const char *oldpath, const char *newpath)
{
	int r = (int)syscall(SYS_linkat, AT_FDCWD, oldpath, AT_FDCWD, newpath, 0);

	/* The other host's claim lands between our link and our unlink. */
	if (r == 0 && hook == HOOK_LOSE_RACE &&
	    syscall(SYS_renameat2, AT_FDCWD, oldpath, AT_FDCWD, hook_path, 0) != 0)
		abort();
	return r;
}

struct tmpdir {
	char path[64];
	char in[80], proc[80], done[80];
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

	if (t == NULL)
		return -1;
	strcpy(t->path, "/tmp/rdd-fsops-XXXXXX");
	if (mkdtemp(t->path) == NULL) {
		free(t);
		return -1;
	}
	snprintf(t->in, sizeof(t->in), "%s/in", t->path);
	snprintf(t->proc, sizeof(t->proc), "%s/proc", t->path);
	snprintf(t->done, sizeof(t->done), "%s/done", t->path);
	if (mkdir(t->in, 0755) < 0 || mkdir(t->proc, 0755) < 0 || mkdir(t->done, 0755) < 0)
		return -1;
	hook = HOOK_OFF;
	*state = t;
	return 0;
}

static int
teardown_tmp(void **state)
{
	struct tmpdir *t = *state;
	int r = nftw(t->path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);

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

static int
count_fds(void)
{
	return count_entries("/proc/self/fd");
}

/* fsops_processing_dir */

static void
test_processing_dir_created(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char *path = NULL, *again = NULL;
	mode_t old = umask(0);

	/* A umask of 0 must not loosen it, nor 077 be needed to keep it tight. */
	assert_int_equal(fsops_processing_dir(t->path, &path), 0);
	umask(old);
	assert_string_equal(path, tpath(state, ".resend-dropd"));
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_uid, geteuid());

	/* Existing and right: accepted as it is. A trailing slash on the inbox is fine. */
	assert_int_equal(fsops_processing_dir(tpath(state, ""), &again), 0);
	assert_string_equal(again, path);
	free(path);
	free(again);
}

static void
test_processing_dir_loose_mode_tightened(void **state)
{
	struct tmpdir *t = *state;
	const char *p = mkdir_t(state, ".resend-dropd");
	struct stat st;
	char *path = NULL;

	assert_int_equal(chmod(p, 0777), 0);
	assert_int_equal(fsops_processing_dir(t->path, &path), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	free(path);
}

static void
test_processing_dir_symlink_refused(void **state)
{
	struct tmpdir *t = *state;
	const char *elsewhere = mkdir_t(state, "elsewhere");
	struct stat st;
	char *path = (char *)"untouched";

	assert_int_equal(symlink(elsewhere, tpath(state, ".resend-dropd")), 0);
	assert_int_equal(fsops_processing_dir(t->path, &path), -ELOOP);
	assert_string_equal(path, "untouched");
	/* The link was not followed: its target's mode is as it was. */
	assert_int_equal(stat(elsewhere, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
}

static void
test_processing_dir_not_a_directory(void **state)
{
	struct tmpdir *t = *state;
	char *path = (char *)"untouched";

	write_file(tpath(state, ".resend-dropd"), "x");
	assert_int_equal(fsops_processing_dir(t->path, &path), -ENOTDIR);
	assert_string_equal(path, "untouched");
}

static void
test_processing_dir_wrong_owner(void **state)
{
	struct tmpdir *t = *state;
	const char *p = mkdir_t(state, ".resend-dropd");
	char *path = (char *)"untouched";

	if (geteuid() != 0)
		skip(); /* only root can give a directory away */
	assert_int_equal(chmod(p, 0700), 0);
	assert_int_equal(chown(p, 65534, 65534), 0);
	assert_int_equal(fsops_processing_dir(t->path, &path), -EPERM);
	assert_string_equal(path, "untouched");
}

/* fsops_claim */

static void
test_claim_moves(void **state)
{
	struct tmpdir *t = *state;
	const char *in = t->in, *proc = t->proc;

	write_file(tpath(state, "in/x.csv"), "email\na@b.c\n");
	assert_int_equal(fsops_claim(in, proc, "x.csv"), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_file_content(tpath(state, "proc/x.csv"), "email\na@b.c\n");
}

static void
test_claim_never_replaces(void **state)
{
	struct tmpdir *t = *state;
	const char *in = t->in, *proc = t->proc;

	write_file(tpath(state, "in/x.csv"), "new");
	write_file(tpath(state, "proc/x.csv"), "claimed earlier");
	assert_int_equal(fsops_claim(in, proc, "x.csv"), -EEXIST);
	assert_file_content(tpath(state, "in/x.csv"), "new");
	assert_file_content(tpath(state, "proc/x.csv"), "claimed earlier");
}

static void
test_claim_missing_source(void **state)
{
	struct tmpdir *t = *state;
	const char *in = t->in, *proc = t->proc;

	assert_int_equal(fsops_claim(in, proc, "gone.csv"), -ENOENT);
	assert_int_equal(count_entries(proc), 0);
}

static void
test_claim_without_noreplace_support(void **state)
{
	struct tmpdir *t = *state;
	const char *in = t->in, *proc = t->proc;
	struct stat st;

	hook = HOOK_NO_NOREPLACE;
	write_file(tpath(state, "in/x.csv"), "one");
	assert_int_equal(fsops_claim(in, proc, "x.csv"), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_file_content(tpath(state, "proc/x.csv"), "one");
	assert_int_equal(stat(tpath(state, "proc/x.csv"), &st), 0);
	assert_int_equal(st.st_nlink, 1);

	write_file(tpath(state, "in/x.csv"), "two");
	assert_int_equal(fsops_claim(in, proc, "x.csv"), -EEXIST);
	assert_file_content(tpath(state, "in/x.csv"), "two");
	assert_file_content(tpath(state, "proc/x.csv"), "one");
	assert_int_equal(fsops_claim(in, proc, "gone.csv"), -ENOENT);
}

static void
test_claim_race_lost_without_noreplace(void **state)
{
	struct tmpdir *t = *state;
	const char *in = t->in, *proc = t->proc;
	struct stat st;

	/* Two hosts claim one file by link + unlink: the one whose unlink fails has lost, and
	 * must not keep a second name for the winner's file. */
	hook = HOOK_LOSE_RACE;
	mkdir_t(state, "other");
	snprintf(hook_path, sizeof(hook_path), "%s", tpath(state, "other/x.csv"));
	write_file(tpath(state, "in/x.csv"), "one");
	assert_int_equal(fsops_claim(in, proc, "x.csv"), -ENOENT);
	assert_int_equal(count_entries(proc), 0);
	assert_missing(tpath(state, "in/x.csv"));
	assert_int_equal(stat(hook_path, &st), 0);
	assert_int_equal(st.st_nlink, 1);
}

/* fsops_open_checked */

static int
open_checked(const char *dir, const char *name, uint64_t max, int *fd, struct stat *st, char *err,
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
	assert_int_equal(open_checked(t->path, "x.csv", 6, &fd, &st, err, sizeof(err)), 0);
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
	assert_int_equal(open_checked(t->path, "x.csv", 100, &fd, &st, err, sizeof(err)), -ELOOP);
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
	assert_int_equal(open_checked(t->path, "x.csv", 100, &fd, &st, err, sizeof(err)), -EINVAL);
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
	assert_int_equal(open_checked(t->path, "x.csv", 100, &fd, &st, err, sizeof(err)), -EINVAL);
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
	assert_int_equal(open_checked(t->path, "x.csv", 100, &fd, &st, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "is a socket");
	close(s);
}

static void
test_open_char_device(void **state)
{
	struct stat st;
	char err[256];
	int fd;

	(void)state;
	assert_int_equal(open_checked("/dev", "null", 100, &fd, &st, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "is a character device");
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
	assert_int_equal(open_checked(t->path, "x.csv", 100, &fd, &st, err, sizeof(err)), -EMLINK);
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
	assert_int_equal(open_checked(t->path, "x.csv", 9, &fd, &st, err, sizeof(err)), -EFBIG);
	assert_string_equal(err, "is 10 bytes, over the limit of 9 bytes (max_file_bytes)");
	assert_int_equal(open_checked(t->path, "x.csv", 10, &fd, &st, err, sizeof(err)), 0);
	close(fd);
}

static void
test_open_missing(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;
	char err[256];
	int fd;

	assert_int_equal(open_checked(t->path, "x.csv", 100, &fd, &st, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "cannot be opened: No such file or directory");
}

/* fsops_finish */

static void
test_finish_simple(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{\"status\":\"completed\"}\n",
				      &final),
			 0);
	assert_string_equal(final, "x.csv");
	assert_missing(tpath(state, "proc/x.csv"));
	assert_file_content(tpath(state, "done/x.csv"), "data");
	assert_file_content(tpath(state, "done/x.csv.json"), "{\"status\":\"completed\"}\n");
	assert_int_equal(count_entries(done), 2); /* no temporary file left */
	free(final);
}

static void
test_finish_without_report(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, NULL, &final), 0);
	assert_string_equal(final, "x.csv");
	assert_int_equal(count_entries(done), 1);
	free(final);
}

static void
test_finish_clash_gets_timestamp(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "done/x.csv"), "old");
	write_file(tpath(state, "done/x.csv.json"), "old report");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_string_equal(final, "x.20261126T040102Z.csv");
	assert_file_content(tpath(state, "done/x.csv"), "old");
	assert_file_content(tpath(state, "done/x.csv.json"), "old report");
	assert_file_content(tpath(state, "done/x.%s.csv", STAMP), "new");
	assert_file_content(tpath(state, "done/x.%s.csv.json", STAMP), "{}");
	assert_missing(tpath(state, "proc/x.csv"));
	assert_int_equal(count_entries(done), 4);
	free(final);
}

static void
test_finish_second_and_third_clash(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	write_file(tpath(state, "done/x.csv"), "old");
	write_file(tpath(state, "done/x.%s.csv", STAMP), "old 1");
	write_file(tpath(state, "proc/x.csv"), "new 2");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{\"n\":2}", &final), 0);
	assert_string_equal(final, "x." STAMP "-2.csv");
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv"), "new 2");
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv.json"), "{\"n\":2}");
	free(final);

	/* "-2" is now taken by the file, "-3" only by a report: both skipped. */
	write_file(tpath(state, "done/x." STAMP "-3.csv.json"), "stray report");
	write_file(tpath(state, "proc/x.csv"), "new 4");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{\"n\":4}", &final), 0);
	assert_string_equal(final, "x." STAMP "-4.csv");
	assert_file_content(tpath(state, "done/x." STAMP "-4.csv"), "new 4");
	assert_file_content(tpath(state, "done/x." STAMP "-3.csv.json"), "stray report");
	assert_file_content(tpath(state, "done/x.csv"), "old");
	assert_file_content(tpath(state, "done/x.%s.csv", STAMP), "old 1");
	assert_file_content(tpath(state, "done/x." STAMP "-2.csv"), "new 2");
	assert_missing(tpath(state, "done/x." STAMP "-3.csv"));
	free(final);
}

static void
test_finish_clash_on_report_only(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "done/x.csv.json"), "report of an earlier x.csv");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_missing(tpath(state, "done/x.csv")); /* a report beside it would not be its own */
	assert_file_content(tpath(state, "done/x.csv.json"), "report of an earlier x.csv");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "new");
	free(final);
}

static void
test_finish_name_without_extension(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	write_file(tpath(state, "proc/contacts"), "new");
	write_file(tpath(state, "done/contacts"), "old");
	assert_int_equal(fsops_finish(proc, "contacts", done, NOW, "{}", &final), 0);
	assert_string_equal(final, "contacts." STAMP);
	assert_file_content(tpath(state, "done/contacts." STAMP), "new");
	assert_file_content(tpath(state, "done/contacts." STAMP ".json"), "{}");
	assert_file_content(tpath(state, "done/contacts"), "old");
	free(final);

	/* Only the last extension moves. */
	write_file(tpath(state, "proc/a.b.csv"), "ab");
	write_file(tpath(state, "done/a.b.csv"), "old ab");
	assert_int_equal(fsops_finish(proc, "a.b.csv", done, NOW, NULL, &final), 0);
	assert_string_equal(final, "a.b." STAMP ".csv");
	free(final);
}

static void
test_finish_long_name_fits(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char name[NAME_MAX + 1];
	char *final = NULL;

	/* 251 bytes + ".csv": legal, but "<name>.json" would not be. */
	memset(name, 'n', 251);
	strcpy(name + 251, ".csv");
	write_file(tpath(state, "proc/%s", name), "long");
	assert_int_equal(fsops_finish(proc, name, done, NOW, "{}", &final), 0);
	assert_true(strlen(final) + strlen(".json") <= NAME_MAX);
	assert_true(ends_with(final, "." STAMP ".csv"));
	assert_int_equal(strncmp(final, name, 100), 0);
	assert_file_content(tpath(state, "done/%s", final), "long");
	assert_file_content(tpath(state, "done/%s.json", final), "{}");
	assert_int_equal(count_entries(done), 2);
	free(final);
}

static void
test_finish_missing_source(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = (char *)"untouched";

	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), -ENOENT);
	assert_string_equal(final, "untouched");
	assert_int_equal(count_entries(done), 0); /* the report's temporary file is gone too */
}

static void
test_finish_report_name_taken_meanwhile(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	hook = HOOK_PLANT;
	snprintf(hook_path, sizeof(hook_path), "%s", tpath(state, "done/x.csv.json"));
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), 0);
	assert_string_equal(final, "x.csv");
	assert_file_content(tpath(state, "done/x.csv.json"), "intruder");
	assert_file_content(tpath(state, "done/x.csv.2.json"), "{}");
	assert_int_equal(count_entries(done), 3);
	free(final);
}

static void
test_finish_name_taken_meanwhile(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	/* Free when looked at, taken by the time of the rename: the next name is used. */
	hook = HOOK_PLANT;
	snprintf(hook_path, sizeof(hook_path), "%s", tpath(state, "done/x.csv"));
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_file_content(tpath(state, "done/x.csv"), "intruder");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "data");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
	assert_int_equal(count_entries(done), 3);
	free(final);
}

static void
test_finish_report_failure_puts_file_back(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = (char *)"untouched";

	hook = HOOK_EIO_JSON;
	write_file(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), -EIO);
	assert_string_equal(final, "untouched");
	assert_file_content(tpath(state, "proc/x.csv"), "data");
	assert_int_equal(count_entries(done), 0);
}

static void
test_finish_without_noreplace_support(void **state)
{
	struct tmpdir *t = *state;
	const char *proc = t->proc, *done = t->done;
	char *final = NULL;

	hook = HOOK_NO_NOREPLACE;
	write_file(tpath(state, "proc/x.csv"), "new");
	write_file(tpath(state, "done/x.csv"), "old");
	assert_int_equal(fsops_finish(proc, "x.csv", done, NOW, "{}", &final), 0);
	assert_string_equal(final, "x." STAMP ".csv");
	assert_file_content(tpath(state, "done/x.csv"), "old");
	assert_file_content(tpath(state, "done/x." STAMP ".csv"), "new");
	assert_file_content(tpath(state, "done/x." STAMP ".csv.json"), "{}");
	assert_missing(tpath(state, "proc/x.csv"));
	assert_int_equal(count_entries(done), 3);
	free(final);
}

/* fsops_write_atomic, fsops_read_small */

static void
test_write_atomic_replaces(void **state)
{
	struct tmpdir *t = *state;
	struct stat st;

	assert_int_equal(fsops_write_atomic(t->proc, "state.json", "one", 3), 0);
	assert_file_content(tpath(state, "proc/state.json"), "one");
	assert_int_equal(fsops_write_atomic(t->proc, "state.json", "second", 6), 0);
	assert_file_content(tpath(state, "proc/state.json"), "second");
	assert_int_equal(stat(tpath(state, "proc/state.json"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_missing(tpath(state, "proc/.state.json.tmp"));
	assert_int_equal(count_entries(t->proc), 1);
}

static void
test_write_atomic_does_not_follow_symlink(void **state)
{
	struct tmpdir *t = *state;

	write_file(tpath(state, "victim"), "keep");
	assert_int_equal(symlink(tpath(state, "victim"), tpath(state, "proc/.state.json.tmp")), 0);
	assert_int_equal(fsops_write_atomic(t->proc, "state.json", "evil", 4), -ELOOP);
	assert_file_content(tpath(state, "victim"), "keep");
	assert_missing(tpath(state, "proc/state.json"));
}

static void
test_read_small(void **state)
{
	struct tmpdir *t = *state;
	char *buf = (char *)"untouched";
	size_t len = 99;

	write_file(tpath(state, "s"), "hello");
	assert_int_equal(fsops_read_small(t->path, "s", 4, &buf, &len), -EFBIG);
	assert_string_equal(buf, "untouched");
	assert_int_equal(len, 99);
	assert_int_equal(fsops_read_small(t->path, "s", 5, &buf, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal(buf, "hello");
	free(buf);

	write_file(tpath(state, "empty"), "");
	assert_int_equal(fsops_read_small(t->path, "empty", 5, &buf, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);

	assert_int_equal(symlink(tpath(state, "s"), tpath(state, "link")), 0);
	assert_int_equal(fsops_read_small(t->path, "link", 100, &buf, &len), -ELOOP);
	assert_int_equal(fsops_read_small(t->path, "missing", 100, &buf, &len), -ENOENT);
	mkdir_t(state, "dir");
	assert_int_equal(fsops_read_small(t->path, "dir", 100, &buf, &len), -EINVAL);
}

static void
test_fsync_dir(void **state)
{
	struct tmpdir *t = *state;

	assert_int_equal(fsops_fsync_dir(t->path), 0);
	assert_int_equal(fsops_fsync_dir(tpath(state, "missing")), -ENOENT);
	write_file(tpath(state, "file"), "x");
	assert_int_equal(fsops_fsync_dir(tpath(state, "file")), -ENOTDIR);
}

static void
test_format_utc(void **state)
{
	char buf[32];

	(void)state;
	fsops_format_utc(buf, NOW, -1);
	assert_string_equal(buf, "2026-11-26T04:01:02Z");
	fsops_format_utc(buf, NOW, 123);
	assert_string_equal(buf, "2026-11-26T04:01:02.123Z");
	fsops_format_utc(buf, NOW, 5);
	assert_string_equal(buf, "2026-11-26T04:01:02.005Z");
	fsops_format_utc(buf, 0, 0);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	fsops_format_utc(buf, 951782400, -1); /* a leap day */
	assert_string_equal(buf, "2000-02-29T00:00:00Z");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_tmp, teardown_tmp)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_processing_dir_created),
		T(test_processing_dir_loose_mode_tightened),
		T(test_processing_dir_symlink_refused),
		T(test_processing_dir_not_a_directory),
		T(test_processing_dir_wrong_owner),
		T(test_claim_moves),
		T(test_claim_never_replaces),
		T(test_claim_missing_source),
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
		T(test_finish_without_report),
		T(test_finish_clash_gets_timestamp),
		T(test_finish_second_and_third_clash),
		T(test_finish_clash_on_report_only),
		T(test_finish_name_without_extension),
		T(test_finish_long_name_fits),
		T(test_finish_missing_source),
		T(test_finish_report_name_taken_meanwhile),
		T(test_finish_name_taken_meanwhile),
		T(test_finish_report_failure_puts_file_back),
		T(test_finish_without_noreplace_support),
		T(test_write_atomic_replaces),
		T(test_write_atomic_does_not_follow_symlink),
		T(test_read_small),
		T(test_fsync_dir),
		T(test_format_utc),
	};

	return cmocka_run_group_tests_name("fsops", tests, NULL, NULL);
}
