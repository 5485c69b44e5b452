/* Safe file operations on the drop folders. Every move is a rename that never replaces anything,
 * every write goes write -> fsync -> close (checked) -> rename -> fsync of the directory. */
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How many "-N" variants of a timestamped name are tried before giving up. */
#define FSOPS_MAX_VARIANTS 1000
#define FSOPS_MAX_REPORT_VARIANTS 99
#define FSOPS_JSON_SUFFIX ".json"

static const char *
dir_sep(const char *dir)
{
	size_t dl = strlen(dir);

	return (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
}

static char *
path_join(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s%s%s", dir, dir_sep(dir), name) < 0)
		return NULL;
	return p;
}

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
fsops_fsync_dir(const char *dir)
{
	int fd, r = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Some filesystems cannot fsync a directory and say EINVAL; their entries are as durable
	 * as they are going to get. */
	if (fsync(fd) < 0 && errno != EINVAL)
		r = -errno;
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = -errno;
	return r;
}

/* rename without replacing. NFS, CIFS and older kernels' filesystems lack RENAME_NOREPLACE;
 * link() refuses to replace as well, so link + unlink gives the same guarantee there, at the cost
 * of a moment in which the file has two names (and two links). */
static int
move_noreplace(const char *src, const char *dst)
{
	if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return -errno;

	if (link(src, dst) < 0)
		return -errno;
	if (unlink(src) < 0) {
		/* Someone else took the source first (another host claiming it by the same
		 * route): they own it, so our new name goes. */
		int r = -errno;

		(void)unlink(dst);
		return r;
	}
	return 0;
}

int
fsops_processing_dir(const char *inbox, char **ret_path)
{
	struct stat st;
	char *path;
	int fd = -1, r;
	bool created = false;

	path = path_join(inbox, FSOPS_PROCESSING_DIR);
	if (path == NULL)
		return -ENOMEM;
	if (mkdir(path, 0700) == 0)
		created = true;
	else if (errno != EEXIST) {
		r = -errno;
		goto fail;
	}

	/* Checked and tightened through a descriptor, so that a symlink swapped in after the
	 * check cannot redirect the chmod. */
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		/* With O_DIRECTORY a symlink fails as ENOTDIR; say what it is. */
		if (r == -ENOTDIR && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			r = -ELOOP;
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		r = -ENOTDIR;
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
	if (close(fd) < 0 && errno != EINTR) {
		fd = -1;
		r = -errno;
		goto fail;
	}
	fd = -1;
	if (created) {
		r = fsops_fsync_dir(inbox);
		if (r < 0)
			goto fail;
	}

	*ret_path = path;
	return 0;

fail:
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

int
fsops_claim(const char *src_dir, const char *dst_dir, const char *name)
{
	char *src = NULL, *dst = NULL;
	int r;

	src = path_join(src_dir, name);
	dst = path_join(dst_dir, name);
	if (src == NULL || dst == NULL) {
		r = -ENOMEM;
		goto out;
	}
	r = move_noreplace(src, dst);
	if (r < 0)
		goto out;
	/* The destination first: should only one directory reach the disk, the file is found
	 * in both places rather than in neither. */
	r = fsops_fsync_dir(dst_dir);
	if (r < 0)
		goto out;
	r = fsops_fsync_dir(src_dir);
out:
	free(src);
	free(dst);
	return r;
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
fsops_open_checked(const char *dir, const char *name, uint64_t max_bytes, int *ret_fd,
		   struct stat *ret_st, char *errbuf, size_t errsz)
{
	struct stat st;
	char *path;
	int fd = -1, r;

	path = path_join(dir, name);
	if (path == NULL) {
		errbuf_set(errbuf, errsz, "cannot be opened: %s", strerror(ENOMEM));
		return -ENOMEM;
	}

	/* O_NOFOLLOW: a symlink fails with ELOOP instead of being followed. O_NONBLOCK: a FIFO
	 * opens at once instead of waiting for a writer. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		struct stat lst;

		/* The open error alone is ambiguous (ELOOP, ENXIO for a socket, ENXIO or
		 * ENODEV for a device without a driver): the entry's type says what it is. */
		if (lstat(path, &lst) == 0 && !S_ISREG(lst.st_mode)) {
			errbuf_set(errbuf, errsz, "%s", file_type_reason(lst.st_mode));
			r = S_ISLNK(lst.st_mode) ? -ELOOP : -EINVAL;
		} else {
			errbuf_set(errbuf, errsz, "cannot be opened: %s", strerror(e));
			r = -e;
		}
		goto fail;
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

	free(path);
	*ret_fd = fd;
	*ret_st = st;
	return 0;

fail:
	if (fd >= 0)
		close(fd);
	free(path);
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
final_name(const char *name, const char *stamp, int variant, char **ret)
{
	/* Room for "<final>.json", or "<final>.NN.json" in the rare case of a race. */
	const size_t max_len = NAME_MAX - strlen(FSOPS_JSON_SUFFIX) - 3;
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

/* 0 when DIR/NAME does not exist, -EEXIST when it does (as anything, even a dangling link). */
static int
name_free(const char *dir, const char *name)
{
	struct stat st;
	char *path = path_join(dir, name);
	int r = 0;

	if (path == NULL)
		return -ENOMEM;
	if (lstat(path, &st) == 0)
		r = -EEXIST;
	else if (errno != ENOENT)
		r = -errno;
	free(path);
	return r;
}

static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes CONTENT to an open descriptor and makes it durable; closes FD in all cases. */
static int
write_sync_close(int fd, const char *content, size_t len)
{
	int r;

	r = write_all(fd, content, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	/* close's error is the last word on a write (NFS reports there); EINTR leaves the
	 * descriptor closed on Linux, so it is not retried. */
	if (close(fd) < 0 && r == 0 && errno != EINTR)
		r = -errno;
	return r;
}

/* Writes the report into DST_DIR under a temporary name and returns that path. This happens
 * before the file moves, so that a full disk or an I/O error leaves everything where it was. */
static int
report_write_temp(const char *dst_dir, const char *name, const char *json, char **ret_tmp)
{
	char *tmp;
	int fd, r;

	/* Unique (mkostemp), as two hosts may finish files of one name into one directory. The
	 * file's name, cut to leave room, helps an operator who finds one left by a crash. */
	if (asprintf(&tmp, "%s%s.%.*s%s.XXXXXX", dst_dir, dir_sep(dst_dir), NAME_MAX - 20, name,
		     FSOPS_JSON_SUFFIX) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	if (fchmod(fd, 0640) < 0) {
		r = -errno;
		close(fd);
		goto fail_unlink;
	}
	r = write_sync_close(fd, json, strlen(json));
	if (r < 0)
		goto fail_unlink;
	*ret_tmp = tmp;
	return 0;

fail_unlink:
	(void)unlink(tmp);
fail:
	free(tmp);
	return r;
}

/* Moves SRC to the first free name for NAME in DST_DIR. */
static int
finish_move(const char *src, const char *name, const char *dst_dir, const char *stamp,
	    char **ret_final)
{
	char *final = NULL, *json_name = NULL, *dst = NULL;
	int r = -EEXIST, variant;

	for (variant = 0; variant <= FSOPS_MAX_VARIANTS; variant++) {
		free(final);
		free(json_name);
		free(dst);
		final = json_name = dst = NULL;

		r = final_name(name, stamp, variant, &final);
		if (r == -ENAMETOOLONG && variant == 0)
			continue;
		if (r < 0)
			break;
		if (asprintf(&json_name, "%s%s", final, FSOPS_JSON_SUFFIX) < 0) {
			json_name = NULL;
			r = -ENOMEM;
			break;
		}
		/* A report beside a file must be that file's, so both names must be free. */
		r = name_free(dst_dir, final);
		if (r == 0)
			r = name_free(dst_dir, json_name);
		if (r == -EEXIST)
			continue;
		if (r < 0)
			break;
		dst = path_join(dst_dir, final);
		if (dst == NULL) {
			r = -ENOMEM;
			break;
		}
		r = move_noreplace(src, dst);
		if (r != -EEXIST)
			break; /* done, or failed; EEXIST: taken since we looked */
	}
	free(json_name);
	free(dst);
	if (r < 0) {
		free(final);
		return r;
	}
	*ret_final = final;
	return 0;
}

/* Renames the temporary report to "<final>.json". That name was free a moment ago; if something
 * took it since, the report goes beside as "<final>.N.json" rather than replacing it. */
static int
report_place(const char *tmp, const char *dst_dir, const char *final)
{
	char *path;
	int r = -EEXIST, n;

	for (n = 1; n <= FSOPS_MAX_REPORT_VARIANTS && r == -EEXIST; n++) {
		int k;

		if (n == 1)
			k = asprintf(&path, "%s%s%s%s", dst_dir, dir_sep(dst_dir), final,
				     FSOPS_JSON_SUFFIX);
		else
			k = asprintf(&path, "%s%s%s.%d%s", dst_dir, dir_sep(dst_dir), final, n,
				     FSOPS_JSON_SUFFIX);
		if (k < 0)
			return -ENOMEM;
		r = move_noreplace(tmp, path);
		free(path);
	}
	return r;
}

int
fsops_finish(const char *src_dir, const char *name, const char *dst_dir, int64_t now,
	     const char *report_json, char **ret_final_name)
{
	char stamp[32];
	char *src = NULL, *dst = NULL, *final = NULL, *tmp = NULL;
	int r;

	r = format_stamp(stamp, now);
	if (r < 0)
		return r;
	src = path_join(src_dir, name);
	if (src == NULL)
		return -ENOMEM;

	if (report_json != NULL) {
		r = report_write_temp(dst_dir, name, report_json, &tmp);
		if (r < 0)
			goto out;
	}
	r = finish_move(src, name, dst_dir, stamp, &final);
	if (r < 0)
		goto out;
	if (tmp != NULL) {
		r = report_place(tmp, dst_dir, final);
		if (r < 0) {
			/* Put the file back, so that an error means nothing moved and the whole
			 * step can be tried again. Should that fail too, the file is in DST_DIR
			 * without its report: still in exactly one place. */
			dst = path_join(dst_dir, final);
			if (dst != NULL)
				(void)move_noreplace(dst, src);
			goto out;
		}
		free(tmp);
		tmp = NULL;
	}

	/* The new entries first: a crash in between leaves the file named twice, never zero
	 * times. A failed fsync comes after the moves: moving back would be no more durable,
	 * and an error would make the caller believe the file is still in SRC_DIR. */
	if (fsops_fsync_dir(dst_dir) == 0)
		(void)fsops_fsync_dir(src_dir);
	r = 0;

	*ret_final_name = final;
	final = NULL;
out:
	if (tmp != NULL)
		(void)unlink(tmp);
	free(tmp);
	free(src);
	free(dst);
	free(final);
	return r;
}

int
fsops_write_atomic(const char *dir, const char *name, const char *content, size_t len)
{
	char *path = NULL, *tmp = NULL, *tmp_name = NULL;
	int fd, r;

	if (asprintf(&tmp_name, ".%s.tmp", name) < 0) {
		tmp_name = NULL;
		r = -ENOMEM;
		goto out;
	}
	path = path_join(dir, name);
	tmp = path_join(dir, tmp_name);
	if (path == NULL || tmp == NULL) {
		r = -ENOMEM;
		goto out;
	}
	/* O_NOFOLLOW: a symlink planted under the temporary name must not redirect the write. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = write_sync_close(fd, content, len);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlink(tmp);
		goto out;
	}
	r = fsops_fsync_dir(dir);
out:
	free(path);
	free(tmp);
	free(tmp_name);
	return r;
}

int
fsops_read_small(const char *dir, const char *name, size_t max, char **ret_buf, size_t *ret_len)
{
	struct stat st;
	char *path, *buf = NULL;
	size_t cap, len = 0;
	int fd = -1, r;

	path = path_join(dir, name);
	if (path == NULL)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
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
	free(path);
	*ret_buf = buf;
	*ret_len = len;
	return 0;

fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	return r;
}

void
fsops_format_utc(char buf[32], int64_t t, int ms)
{
	time_t tt = (time_t)t;
	struct tm tm;
	size_t n;

	if (gmtime_r(&tt, &tm) == NULL ||
	    (n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
		snprintf(buf, 32, "invalid-time");
		return;
	}
	if (ms > 999)
		ms = 999;
	if (ms >= 0)
		snprintf(buf + n, 32 - n, ".%03dZ", ms);
	else
		snprintf(buf + n, 32 - n, "Z");
}
