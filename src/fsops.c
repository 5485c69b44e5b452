/* Safe file operations on the drop folders, by directory descriptor. Every move is a rename that
 * never replaces anything; every durable write goes write -> fsync -> close (checked) -> rename
 * (but a one-sector record, rewritten in place: fsops_write_record), and the directory fsync
 * that completes it is the disk queue's (one per batch). */
#include "fsops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* How many "-N" variants of a timestamped name are tried before giving up. */
#define FSOPS_MAX_VARIANTS 1000
#define FSOPS_MAX_REPORT_VARIANTS 99
#define FSOPS_JSON_SUFFIX ".json"
#define FSOPS_REJECTS_SUFFIX ".rejects.csv"

static void
errbuf_set(char *errbuf, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
errbuf_set(char *errbuf, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	if (errbuf == NULL || errsz == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errsz, fmt, ap);
	va_end(ap);
}

int
fsops_path_dir(int at_fd, const char *path, struct stat *ret)
{
	if (fstatat(at_fd, path, ret, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISLNK(ret->st_mode))
		return -ELOOP;
	if (!S_ISDIR(ret->st_mode))
		return -ENOTDIR;
	return 0;
}

/* With O_DIRECTORY a symlink fails as ENOTDIR; say what it is, by the one rule. */
static int
open_dir_error(int at_fd, const char *path)
{
	struct stat st;
	int r = -errno;

	if (r == -ENOTDIR && fsops_path_dir(at_fd, path, &st) == -ELOOP)
		r = -ELOOP;
	return r;
}

int
fsops_open_dir(const char *path, int *ret_fd)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return open_dir_error(AT_FDCWD, path);
	*ret_fd = fd;
	return 0;
}

int
fsops_dir_owned(int dir_fd)
{
	struct stat st;

	if (fstat(dir_fd, &st) < 0)
		return -errno;
	return st.st_uid == geteuid() || st.st_uid == 0 ? 0 : -EPERM;
}

int
fsops_dir_check_at(int dir_fd, int at_fd, const char *path)
{
	struct stat held, now;
	int r;

	if (fstat(dir_fd, &held) < 0)
		return -errno;
	r = fsops_path_dir(at_fd, path, &now);
	if (r < 0)
		return r;
	if (now.st_dev != held.st_dev || now.st_ino != held.st_ino)
		return -ESTALE;
	return 0;
}

int
fsops_dir_check(int dir_fd, const char *path)
{
	return fsops_dir_check_at(dir_fd, AT_FDCWD, path);
}

const char *
fsops_dir_check_reason(int r)
{
	switch (r) {
	case -ENOENT:
		return "it no longer exists";
	case -ELOOP:
		return "it is a symbolic link now";
	case -ENOTDIR:
		return "it is not a directory any more";
	case -ESTALE:
		return "another directory has taken its place";
	case -EPERM:
		return "it is owned by another user";
	case -EWOULDBLOCK:
		return "another resend-dropd serves it";
	default:
		return strerror(-r);
	}
}

/* The pid that holds a flock on the file ST describes, from /proc/locks (as lslocks reads it);
 * 0 when none is listed, -errno when the list cannot be read. */
static long
lock_holder_of(const struct stat *st)
{
	unsigned maj, min;
	unsigned long ino;
	char line[256];
	long pid, found = 0;
	FILE *f = fopen("/proc/locks", "re");

	if (!f)
		return -errno;
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*d: FLOCK %*s %*s %ld %x:%x:%lu", &pid, &maj, &min, &ino) == 4 &&
		    maj == major(st->st_dev) && min == minor(st->st_dev) && ino == st->st_ino)
			found = pid;
	}
	fclose(f);
	return found;
}

/* The same for the directory open on FD; 0 when it cannot be told. */
static long
lock_holder(int fd)
{
	struct stat st;
	long pid;

	if (fstat(fd, &st) < 0)
		return 0;
	pid = lock_holder_of(&st);
	return pid > 0 ? pid : 0;
}

int
fsops_lock_holder(const char *inbox, long *ret_pid)
{
	struct stat st;
	char path[PATH_MAX];
	long pid;
	int r;

	*ret_pid = 0;
	if (snprintf(path, sizeof(path), "%s/" FSOPS_PROCESSING_DIR, inbox) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	r = fsops_path_dir(AT_FDCWD, path, &st);
	if (r == -ENOENT || r == -ELOOP || r == -ENOTDIR)
		return 0; /* no processing directory: nobody's lock */
	if (r < 0)
		return r;
	pid = lock_holder_of(&st);
	if (pid < 0)
		return (int)pid;
	if (pid == 0)
		return 0;
	*ret_pid = pid;
	return -EWOULDBLOCK;
}

/* The lock is the directory's own flock: no file to create (a full disk cannot stop a start)
 * and none to leave behind. */
static int
lock_dir_fd(int dir_fd, int *ret_fd, long *ret_pid)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	*ret_pid = 0;
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
		if (r == -EWOULDBLOCK)
			*ret_pid = lock_holder(fd);
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int
fsops_lock_dir(int proc_fd, int *ret_fd, long *ret_pid)
{
	return lock_dir_fd(proc_fd, ret_fd, ret_pid);
}

int
fsops_lock_probe(const char *inbox, long *ret_pid)
{
	int in_fd, proc_fd, lock_fd = -1, r;

	*ret_pid = 0;
	in_fd = open(inbox, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (in_fd < 0)
		return 0; /* no inbox, no lock: the start says what is wrong */
	proc_fd = openat(in_fd, FSOPS_PROCESSING_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
							 O_CLOEXEC);
	close(in_fd);
	if (proc_fd < 0)
		return 0;
	r = lock_dir_fd(proc_fd, &lock_fd, ret_pid);
	close(proc_fd);
	if (r == 0)
		close(lock_fd); /* taken only to see that it could be */
	return r == -EWOULDBLOCK ? r : 0;
}

int
fsops_fsync_dir(int dir_fd)
{
	/* Some filesystems cannot fsync a directory and say EINVAL; their entries are as durable
	 * as they are going to get. */
	if (fsync(dir_fd) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}

/* rename without replacing. NFS, CIFS and older kernels' filesystems lack RENAME_NOREPLACE;
 * link() refuses to replace as well, so link + unlink gives the same guarantee there, at the cost
 * of a moment in which the file has two names (and two links). */
static int
move_noreplace(int src_fd, const char *src, int dst_fd, const char *dst)
{
	if (renameat2(src_fd, src, dst_fd, dst, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return -errno;

	if (linkat(src_fd, src, dst_fd, dst, 0) < 0)
		return -errno;
	if (unlinkat(src_fd, src, 0) < 0) {
		/* Someone else took the source first (another host claiming it by the same
		 * route): they own it, so our new name goes. */
		int r = -errno;

		(void)unlinkat(dst_fd, dst, 0);
		return r;
	}
	return 0;
}

/* Directory NAME in DIR_FD, made when missing, this user's and mode 0700: a processing
 * directory or one of its parents. */
static int
own_dir_at(int dir_fd, const char *name, int *ret_fd)
{
	struct stat st;
	int fd = -1, r;
	bool created = false;

	if (mkdirat(dir_fd, name, 0700) == 0)
		created = true;
	else if (errno != EEXIST)
		return -errno;

	/* Checked and tightened through a descriptor, so that a symlink swapped in after the
	 * check cannot redirect the chmod. */
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return open_dir_error(dir_fd, name);
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (st.st_uid != geteuid()) {
		/* Files claimed here would be readable and movable by its owner. */
		r = -EPERM;
		goto fail;
	}
	/* Anything other than 0700 is fixed, looser (others could read claimed files) or
	 * tighter (we could not move files in). mkdir's mode is also cut by the umask and may
	 * gain setgid from the inbox. */
	if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) < 0) {
		r = -errno;
		goto fail;
	}
	if (created) {
		r = fsops_fsync_dir(dir_fd);
		if (r < 0)
			goto fail;
	}
	*ret_fd = fd;
	return 0;

fail:
	close(fd);
	return r;
}

int
fsops_processing_dir(int inbox_fd, int *ret_fd)
{
	return own_dir_at(inbox_fd, FSOPS_PROCESSING_DIR, ret_fd);
}

int
fsops_host_dir(int proc_fd, const char *host_id, int *ret_fd)
{
	int fleet_fd, r;

	r = own_dir_at(proc_fd, FSOPS_FLEET_DIR, &fleet_fd);
	if (r < 0)
		return r;
	r = own_dir_at(fleet_fd, host_id, ret_fd);
	close(fleet_fd);
	return r;
}

int
fsops_lock_shared(int dir_fd, int *ret_fd)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;

		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int
fsops_move_all(int src_fd, int dst_fd, char ***ret_names, size_t *ret_moved, unsigned *ret_left)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	int first = 0, r = 0;

	*ret_names = NULL;
	*ret_moved = 0;
	*ret_left = 0;
	/* Two passes: the state records and temporaries (dot names) first, then the files they
	 * describe, so that a file never arrives without its record. */
	for (int pass = 0; pass < 2; pass++) {
		struct dirent *de;
		int fd = openat(src_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *dir = fd < 0 ? NULL : fdopendir(fd);

		if (!dir) {
			r = -errno;
			if (fd >= 0)
				close(fd);
			fsops_names_free(names, n);
			return r;
		}
		while ((de = readdir(dir)) != NULL) {
			struct stat st;

			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
			    (de->d_name[0] == '.') != (pass == 0))
				continue;
			/* Files only: the fleet's directory (fleet/) stays where it is. */
			if (fstatat(src_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			r = move_noreplace(src_fd, de->d_name, dst_fd, de->d_name);
			if (r == 0 && pass == 1) {
				char *copy = strdup(de->d_name);

				if (n == cap) {
					size_t ncap = cap ? cap * 2 : 16;
					void *p = copy ? reallocarray(names, ncap, sizeof(*names)) : NULL;

					if (!p) {
						/* Moved all the same: resumed at the next start. */
						free(copy);
						continue;
					}
					names = p;
					cap = ncap;
				}
				names[n++] = copy;
			} else if (r < 0 && r != -ENOENT) {
				(*ret_left)++;
				if (!first)
					first = r;
			}
		}
		closedir(dir);
	}
	*ret_names = names;
	*ret_moved = n;
	r = fsops_fsync_dir(dst_fd);
	if (r == 0)
		r = fsops_fsync_dir(src_fd);
	if (r < 0)
		return r;
	return *ret_left ? first : 0;
}

/* A read lease cannot be taken while any process has the file open for writing, which tells
 * that an uploader still holds it even if it paused longer than settle_ms. Anything but a
 * clear "writer present" counts as no information. */
static bool
writer_present(int fd)
{
	if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
		(void)fcntl(fd, F_SETLEASE, F_UNLCK);
		return false;
	}
	return errno == EAGAIN;
}

/* Whether the file open on FD differs from SEEN by what its server says now. On a network
 * filesystem stat answers from an attribute cache (NFS: acregmin 3 s up to acregmax 60 s;
 * sshfs: dcache_timeout, 20 s): a file that another node is still writing can look settled that
 * long, and be claimed and uploaded cut short. The open has made NFS revalidate (close-to-open)
 * and sshfs fetch the attributes afresh; AT_STATX_FORCE_SYNC makes the kernel ask for them
 * rather than answer from its own cache. One statx more per claim on a local filesystem. */
static bool
changed_since(int fd, const struct fsops_seen *seen)
{
	struct statx stx;

	if (!seen || statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC,
			   STATX_SIZE | STATX_MTIME, &stx) < 0)
		return false;
	return (int64_t)stx.stx_size != seen->size || stx.stx_mtime.tv_sec != seen->mtime.tv_sec ||
	       (long)stx.stx_mtime.tv_nsec != seen->mtime.tv_nsec;
}

int
fsops_claim(int inbox_fd, int proc_fd, const char *name, const struct fsops_seen *seen)
{
	struct stat st;

	if (fstatat(inbox_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (seen && (st.st_size != seen->size || st.st_mtim.tv_sec != seen->mtime.tv_sec ||
		     st.st_mtim.tv_nsec != seen->mtime.tv_nsec))
		return -EAGAIN;
	/* Only regular files are opened: opening a device can have effects of its own. */
	if (S_ISREG(st.st_mode)) {
		int fd = openat(inbox_fd, name,
				O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

		if (fd >= 0) {
			bool busy = writer_present(fd) || changed_since(fd, seen);

			close(fd);
			if (busy)
				return -EAGAIN;
		}
	}
	return move_noreplace(inbox_fd, name, proc_fd, name);
}

static const char *
file_type_reason(mode_t mode)
{
	if (S_ISLNK(mode))
		return "is a symbolic link";
	if (S_ISDIR(mode))
		return "is a directory";
	if (S_ISFIFO(mode))
		return "is a FIFO";
	if (S_ISSOCK(mode))
		return "is a socket";
	if (S_ISCHR(mode))
		return "is a character device";
	if (S_ISBLK(mode))
		return "is a block device";
	return "is not a regular file";
}

int
fsops_open_checked(int dir_fd, const char *name, uint64_t max_bytes, int *ret_fd,
		   struct stat *ret_st, char *errbuf, size_t errsz)
{
	struct stat st;
	int fd, r;

	/* O_NOFOLLOW: a symlink fails with ELOOP instead of being followed. O_NONBLOCK: a FIFO
	 * opens at once instead of waiting for a writer. */
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int e = errno;
		struct stat lst;

		/* The open error alone is ambiguous (ELOOP, ENXIO for a socket, ENXIO or
		 * ENODEV for a device without a driver): the entry's type says what it is. */
		if (fstatat(dir_fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(lst.st_mode)) {
			errbuf_set(errbuf, errsz, "%s", file_type_reason(lst.st_mode));
			return S_ISLNK(lst.st_mode) ? -ELOOP : -EINVAL;
		}
		/* Unreadable for the daemon's user: say whose it is and its mode, which is what
		 * an operator mends (a group both share, see "Giving uploaders access"). */
		if (e == EACCES && fstatat(dir_fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0) {
			errbuf_set(errbuf, errsz,
				   "cannot be opened: Permission denied (it belongs to uid %u, gid %u, "
				   "mode %04o; the daemon runs as uid %u: give its group read access, "
				   "see \"Giving uploaders access\" in resend-dropd(8))",
				   (unsigned)lst.st_uid, (unsigned)lst.st_gid,
				   (unsigned)(lst.st_mode & 07777), (unsigned)geteuid());
			return -e;
		}
		errbuf_set(errbuf, errsz, "cannot be opened: %s", strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		errbuf_set(errbuf, errsz, "cannot be examined: %s", strerror(-r));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		errbuf_set(errbuf, errsz, "%s", file_type_reason(st.st_mode));
		r = -EINVAL;
		goto fail;
	}
	/* Another name would let someone change the contents after the checks, from outside
	 * the inbox. */
	if (st.st_nlink != 1) {
		errbuf_set(errbuf, errsz, "has %ju hard links", (uintmax_t)st.st_nlink);
		r = -EMLINK;
		goto fail;
	}
	if ((uint64_t)st.st_size > max_bytes) {
		errbuf_set(errbuf, errsz, "is %jd bytes, over the limit of %" PRIu64
					  " bytes (max_file_bytes)",
			   (intmax_t)st.st_size, max_bytes);
		r = -EFBIG;
		goto fail;
	}
	*ret_fd = fd;
	*ret_st = st;
	return 0;

fail:
	close(fd);
	return r;
}

/* "20261126T040102Z": sortable, and free of characters that are awkward in file names. */
static int
format_stamp(char buf[32], int64_t now)
{
	time_t t = (time_t)now;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL)
		return -EOVERFLOW;
	if (strftime(buf, 32, "%Y%m%dT%H%M%SZ", &tm) == 0)
		return -EOVERFLOW;
	return 0;
}

/* Candidate VARIANT for NAME in the done or failed directory: 0 is NAME itself, 1 has the
 * timestamp before the extension, 2.. add "-N" after the timestamp. A name too long to also
 * carry the report's suffix skips to the timestamped forms, cut short to fit. */
static int
final_name(const char *name, const char *stamp, int variant, bool rejects, char **ret)
{
	/* Room for "<final>.json", or "<final>.NN.json" in the rare case of a race; and for
	 * "<final>.rejects.csv" when there is a rejects file. */
	const size_t max_len = NAME_MAX - 3 -
			       (rejects ? strlen(FSOPS_REJECTS_SUFFIX) : strlen(FSOPS_JSON_SUFFIX));
	const char *dot = strrchr(name, '.');
	size_t base_len, ext_len, suffix_len;
	char suffix[48];
	char *p;

	if (variant == 0) {
		if (strlen(name) > max_len)
			return -ENAMETOOLONG;
		p = strdup(name);
		if (p == NULL)
			return -ENOMEM;
		*ret = p;
		return 0;
	}

	/* "x.csv" -> "x.<stamp>.csv"; "x" -> "x.<stamp>". Dotfiles are never claimed, so a
	 * leading dot is no extension to keep apart. */
	if (dot == NULL || dot == name)
		dot = name + strlen(name);
	base_len = (size_t)(dot - name);
	ext_len = strlen(dot);
	if (variant == 1)
		snprintf(suffix, sizeof(suffix), ".%s", stamp);
	else
		snprintf(suffix, sizeof(suffix), ".%s-%d", stamp, variant);
	suffix_len = strlen(suffix);
	if (suffix_len + ext_len + 1 > max_len)
		return -ENAMETOOLONG;
	if (base_len + suffix_len + ext_len > max_len) {
		base_len = max_len - suffix_len - ext_len;
		/* Not in the middle of a UTF-8 sequence. */
		while (base_len > 1 && ((unsigned char)name[base_len] & 0xc0) == 0x80)
			base_len--;
	}
	if (asprintf(&p, "%.*s%s%s", (int)base_len, name, suffix, dot) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

/* 0 when DIR_FD/NAME does not exist, -EEXIST when it does (as anything, even a dangling link). */
static int
name_free(int dir_fd, const char *name)
{
	struct stat st;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	return errno == ENOENT ? 0 : -errno;
}

int
fsops_write_all(int fd, const char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = off < 0 ? write(fd, buf, len) : pwrite(fd, buf, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
		if (off >= 0)
			off += n;
	}
	return 0;
}

/* Writes CONTENT to an open descriptor, fsyncs it when DURABLE; closes FD in all cases. */
static int
write_close(int fd, const char *content, size_t len, bool durable)
{
	int r;

	r = fsops_write_all(fd, content, len, -1);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	/* close's error is the last word on a write (NFS reports there); EINTR leaves the
	 * descriptor closed on Linux, so it is not retried. */
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = -errno;
	return r;
}

/* Writes the report to SRC_FD/STAGE and makes it durable. This happens before the file
 * moves, so that a full disk or an I/O error leaves everything where it was; and in the
 * processing directory, so that nothing half-made is ever seen in done/ or failed/. */
static int report_write_stage(int src_fd, const char *stage, const char *json)
{
	int fd, r;

	fd = openat(src_fd, stage, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return -errno;
	/* The mode given to open is cut by the umask, and a reused file keeps its own. */
	if (fchmod(fd, 0640) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return write_close(fd, json, strlen(json), true);
}

/* Whether FINAL, and the names beside it (its report, its rejects file), are free in DST_FD. */
static int
names_free(int dst_fd, const char *final, bool rejects)
{
	char *beside;
	int r = name_free(dst_fd, final);

	if (r < 0)
		return r;
	if (asprintf(&beside, "%s%s", final, FSOPS_JSON_SUFFIX) < 0)
		return -ENOMEM;
	r = name_free(dst_fd, beside);
	free(beside);
	if (r < 0 || !rejects)
		return r;
	if (asprintf(&beside, "%s%s", final, FSOPS_REJECTS_SUFFIX) < 0)
		return -ENOMEM;
	r = name_free(dst_fd, beside);
	free(beside);
	return r;
}

/* The first variant of NAME free in DST_FD from VARIANT on, in *RET_FINAL; *RET_VARIANT says
 * which. */
static int
pick_name(int dst_fd, const char *name, const char *stamp, bool rejects, int variant,
	  int *ret_variant, char **ret_final)
{
	char *final = NULL;
	int r = -EEXIST;

	for (; variant <= FSOPS_MAX_VARIANTS; variant++) {
		free(final);
		final = NULL;
		r = final_name(name, stamp, variant, rejects, &final);
		if (r == -ENAMETOOLONG && variant == 0)
			continue;
		if (r < 0)
			break;
		/* A report beside a file must be that file's, so every name must be free. */
		r = names_free(dst_fd, final, rejects);
		if (r != -EEXIST)
			break;
	}
	if (r < 0) {
		free(final);
		return r;
	}
	*ret_variant = variant;
	*ret_final = final;
	return 0;
}

/* Moves SRC_FD/NAME to the first free name for NAME in DST_FD. */
static int
finish_move(int src_fd, const char *name, int dst_fd, const char *stamp, bool rejects,
	    char **ret_final)
{
	char *final = NULL;
	int r, variant = 0;

	for (;;) {
		r = pick_name(dst_fd, name, stamp, rejects, variant, &variant, &final);
		if (r < 0)
			return r;
		r = move_noreplace(src_fd, name, dst_fd, final);
		if (r != -EEXIST)
			break; /* done, or failed; EEXIST: taken since we looked */
		free(final);
		final = NULL;
		variant++;
	}
	if (r < 0) {
		free(final);
		return r;
	}
	*ret_final = final;
	return 0;
}

int
fsops_finish_name(int dst_fd, const char *name, int64_t now, bool rejects, char **ret_final)
{
	char stamp[32];
	int variant, r = format_stamp(stamp, now);

	if (r < 0)
		return r;
	return pick_name(dst_fd, name, stamp, rejects, 0, &variant, ret_final);
}

/* Renames the staged report to DST_FD/<final>.json. That name was free a moment ago; if
 * something took it since, the report goes beside as "<final>.N.json" rather than replacing it. */
static int
report_place(int src_fd, const char *stage, int dst_fd, const char *final)
{
	char *path;
	int r = -EEXIST, n;

	for (n = 1; n <= FSOPS_MAX_REPORT_VARIANTS && r == -EEXIST; n++) {
		int k;

		if (n == 1)
			k = asprintf(&path, "%s%s", final, FSOPS_JSON_SUFFIX);
		else
			k = asprintf(&path, "%s.%d%s", final, n, FSOPS_JSON_SUFFIX);
		if (k < 0)
			return -ENOMEM;
		r = move_noreplace(src_fd, stage, dst_fd, path);
		free(path);
	}
	return r;
}

int
fsops_finish(int src_fd, const char *name, int dst_fd, int64_t now, const char *report_json,
	     const char *report_stage, const char *rejects_stage, char **ret_final_name)
{
	char stamp[32];
	char *final = NULL, *rejects = NULL;
	int r;

	r = format_stamp(stamp, now);
	if (r < 0)
		return r;
	if (report_json != NULL) {
		r = report_write_stage(src_fd, report_stage, report_json);
		if (r < 0)
			return r;
	}
	r = finish_move(src_fd, name, dst_fd, stamp, rejects_stage != NULL, &final);
	if (r < 0)
		return r;
	if (rejects_stage != NULL) {
		if (asprintf(&rejects, "%s%s", final, FSOPS_REJECTS_SUFFIX) < 0)
			rejects = NULL;
		r = rejects ? move_noreplace(src_fd, rejects_stage, dst_fd, rejects) : -ENOMEM;
		if (r < 0)
			goto back;
	}
	if (report_json != NULL) {
		r = report_place(src_fd, report_stage, dst_fd, final);
		if (r < 0) {
			if (rejects)
				(void)move_noreplace(dst_fd, rejects, src_fd, rejects_stage);
			goto back;
		}
	}
	free(rejects);
	*ret_final_name = final;
	return 0;
back:
	/* Put the file back, so that an error means nothing moved and the whole step can be
	 * tried again. Should that fail too, the file is in DST_FD without its report: still in
	 * exactly one place. */
	(void)move_noreplace(dst_fd, final, src_fd, name);
	free(rejects);
	free(final);
	return r;
}

/* A record of fewer bytes than a sector is kept in a file of exactly one sector, padded with
 * blanks (JSON ignores them): rewritten in place, with no new inode, no rename and no size
 * change, a durable write is one pwrite of one sector and an fdatasync. That a sector is
 * written whole or not at all is what PostgreSQL assumes of its pg_control, which is kept
 * under 512 bytes for that reason; a record written so is as safe. */
#define FSOPS_RECORD_SECTOR 512

/* The durable rewrite of a one-sector record that exists: 1 done, 0 when NAME is not such a
 * file (missing, another size: the caller goes through a temporary), or -errno. */
static int
record_rewrite_sector(int dir_fd, const char *name, const char *sector)
{
	struct stat st;
	int fd, r;

	fd = openat(dir_fd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != FSOPS_RECORD_SECTOR ||
	    st.st_nlink != 1) {
		close(fd);
		return 0;
	}
	r = fsops_write_all(fd, sector, FSOPS_RECORD_SECTOR, 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = -errno;
	return r < 0 ? r : 1;
}

int
fsops_write_record(int dir_fd, const char *name, const char *content, size_t len, bool durable)
{
	char sector[FSOPS_RECORD_SECTOR];
	char *tmp;
	int fd, r;

	if (len < FSOPS_RECORD_SECTOR) {
		memcpy(sector, content, len);
		memset(sector + len, ' ', FSOPS_RECORD_SECTOR - 1 - len);
		sector[FSOPS_RECORD_SECTOR - 1] = '\n';
		content = sector;
		len = FSOPS_RECORD_SECTOR;
		if (durable) {
			r = record_rewrite_sector(dir_fd, name, sector);
			if (r != 0)
				return r < 0 ? r : 0;
		}
	}
	/* O_NOFOLLOW: a symlink planted under either name must not redirect the write. */
	if (!durable) {
		struct stat st;

		/* A sector over a sector: no blocks freed and allocated again. */
		fd = openat(dir_fd, name,
			    O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
				    (len == FSOPS_RECORD_SECTOR ? 0 : O_TRUNC),
			    0600);
		if (fd < 0)
			return -errno;
		if (len == FSOPS_RECORD_SECTOR && fstat(fd, &st) == 0 &&
		    st.st_size > FSOPS_RECORD_SECTOR && ftruncate(fd, FSOPS_RECORD_SECTOR) < 0) {
			r = -errno;
			close(fd);
			return r;
		}
		return write_close(fd, content, len, false);
	}
	if (asprintf(&tmp, ".%s.tmp", name) < 0)
		return -ENOMEM;
	fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = write_close(fd, content, len, true);
	if (r == 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
		r = -errno;
	if (r < 0)
		(void)unlinkat(dir_fd, tmp, 0);
out:
	free(tmp);
	return r;
}

int
fsops_open_tmpfile(int dir_fd, int *ret_fd)
{
	char name[40];
	int fd;

	fd = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0) {
		*ret_fd = fd;
		return 0;
	}
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return -errno;
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), ".tmp-%d-%ld", (int)getpid(), random());
		fd = openat(dir_fd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0) {
			(void)unlinkat(dir_fd, name, 0);
			*ret_fd = fd;
			return 0;
		}
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

int
fsops_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
	struct stat st;
	char *buf = NULL;
	size_t cap, len = 0;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto fail;
	}
	if ((uint64_t)st.st_size > max) {
		r = -EFBIG;
		goto fail;
	}

	/* The size is a hint only: the read goes on to the end of file, and one byte past MAX
	 * proves the file too big even if it grew after fstat. */
	cap = (size_t)st.st_size + 1;
	buf = malloc(cap + 1);
	if (buf == NULL) {
		r = -ENOMEM;
		goto fail;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			size_t ncap = cap > max / 2 ? max + 1 : cap * 2;
			char *nb;

			if (ncap <= cap) {
				r = -EFBIG;
				goto fail;
			}
			nb = realloc(buf, ncap + 1);
			if (nb == NULL) {
				r = -ENOMEM;
				goto fail;
			}
			buf = nb;
			cap = ncap;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			r = -EFBIG;
			goto fail;
		}
	}
	buf[len] = '\0';
	close(fd);
	*ret_buf = buf;
	*ret_len = len;
	return 0;

fail:
	close(fd);
	if (buf)
		explicit_bzero(buf, len); /* it may have been a key */
	free(buf);
	return r;
}

int
fsops_read_small(int dir_fd, const char *name, size_t max, char **ret_buf, size_t *ret_len)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	return fd < 0 ? -errno : fsops_read_fd(fd, max, ret_buf, ret_len);
}

int
fsops_read_path(const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	/* O_NONBLOCK: a FIFO named there must not hang the reader before fstat refuses it. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	return fd < 0 ? -errno : fsops_read_fd(fd, max, ret_buf, ret_len);
}

void
fsops_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int
fsops_list(int dir_fd, char ***ret_names, size_t *ret_n)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *dir;
	int fd, r = 0;

	/* fdopendir takes the descriptor over; the caller's stays open. */
	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (dir == NULL) {
		r = -errno;
		close(fd);
		return r;
	}
	errno = 0;
	while ((de = readdir(dir)) != NULL) {
		size_t len = strlen(de->d_name);

		/* A durable record's temporary (".<record>.tmp", the record's own name starting
		 * with a dot) that a crash left before its rename: nothing will finish it. */
		if (strncmp(de->d_name, "..", 2) == 0 && len > 6 &&
		    strcmp(de->d_name + len - 4, ".tmp") == 0)
			(void)unlinkat(dir_fd, de->d_name, 0);
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **nn = realloc(names, ncap * sizeof(*nn));

			if (nn == NULL) {
				r = -ENOMEM;
				goto fail;
			}
			names = nn;
			cap = ncap;
		}
		names[n] = strdup(de->d_name);
		if (names[n] == NULL) {
			r = -ENOMEM;
			goto fail;
		}
		n++;
		errno = 0;
	}
	if (errno != 0) {
		r = -errno;
		goto fail;
	}
	closedir(dir);
	*ret_names = names;
	*ret_n = n;
	return 0;

fail:
	closedir(dir);
	fsops_names_free(names, n);
	return r;
}

int
fsops_unfail(int failed_fd, int inbox_fd, const char *name, int64_t now, char **ret_report)
{
	char stamp[32], *json = NULL, *kept = NULL;
	struct stat st;
	int r;

	if (!*name || name[0] == '.' || strchr(name, '/') || strlen(name) > NAME_MAX)
		return -EINVAL;
	if (fstatat(failed_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	r = format_stamp(stamp, now);
	if (r < 0)
		return r;
	if (asprintf(&json, "%s%s", name, FSOPS_JSON_SUFFIX) < 0)
		return -ENOMEM;
	/* The old report first, to a name no new report takes: x.csv.json -> x.csv.<stamp>.json
	 * (x.csv.<stamp>-N.json when several retries fall in one second). */
	for (int i = 1; i <= FSOPS_MAX_REPORT_VARIANTS; i++) {
		free(kept);
		kept = NULL;
		if ((i == 1 ? asprintf(&kept, "%s.%s%s", name, stamp, FSOPS_JSON_SUFFIX)
			    : asprintf(&kept, "%s.%s-%d%s", name, stamp, i, FSOPS_JSON_SUFFIX)) < 0) {
			kept = NULL;
			r = -ENOMEM;
			goto out;
		}
		r = strlen(kept) > NAME_MAX ? -ENAMETOOLONG
					    : move_noreplace(failed_fd, json, failed_fd, kept);
		if (r != -EEXIST)
			break;
	}
	if (r == -ENOENT) {
		free(kept); /* no report: nothing to keep */
		kept = NULL;
	} else if (r < 0) {
		goto out;
	}
	r = move_noreplace(failed_fd, name, inbox_fd, name);
	if (r < 0 && kept)
		(void)move_noreplace(failed_fd, kept, failed_fd, json);
out:
	free(json);
	if (r < 0) {
		free(kept);
		return r;
	}
	*ret_report = kept;
	return 0;
}
