/* Safe file operations on the drop folders: claim, open, move without overwrite, reports,
 * per-file state. Pure POSIX/Linux; no libuv, no curl. All functions return 0 or a negative
 * errno and log nothing: the caller decides what an error means and logs it once. */
#ifndef RDD_FSOPS_H
#define RDD_FSOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define FSOPS_PROCESSING_DIR ".resend-dropd"

/* Creates (mode 0700) or checks <inbox>/.resend-dropd: must be a real directory (not a symlink)
 * owned by the effective uid. *ret_path is malloc'd. */
int fsops_processing_dir(const char *inbox, char **ret_path);

/* Moves SRC_DIR/NAME to DST_DIR/NAME atomically without replacing anything (renameat2
 * RENAME_NOREPLACE, falling back to link+unlink where the filesystem lacks it), then fsyncs both
 * directories. -EEXIST when DST_DIR/NAME exists; -ENOENT when the source vanished. */
int fsops_claim(const char *src_dir, const char *dst_dir, const char *name);

/* Opens DIR/NAME with O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC and checks with fstat that it is
 * a regular file with one link and at most MAX_BYTES long. On success *ret_fd and *ret_st.
 * On a refusal returns a negative errno (-ELOOP symlink, -EINVAL not regular, -EMLINK hard
 * links, -EFBIG too big, or open's error) and writes a human reason to ERRBUF
 * (e.g. "is a symbolic link", "is a FIFO", "has 2 hard links", "is 300000000 bytes, over the
 * limit of 209715200"). */
int fsops_open_checked(const char *dir, const char *name, uint64_t max_bytes, int *ret_fd,
		       struct stat *ret_st, char *errbuf, size_t errsz);

/* Moves SRC_DIR/NAME into DST_DIR without overwriting anything. The target is NAME; if NAME or
 * NAME.json exists there, a UTC timestamp from NOW is inserted before the extension
 * ("x.20261126T040102Z.csv"; "x.20261126T040102Z-2.csv" if that is taken too). Then REPORT_JSON
 * (may be NULL) is written beside it as <final>.json (temp file, fsync, rename without replace),
 * and both directories are fsynced. *ret_final_name (malloc'd) is the name in DST_DIR.
 * The report is written to a temporary file first and put in place after the move; if that
 * fails the file is moved back, so an error means nothing moved. Directory fsync failures after
 * the move are not errors: the file is where *ret_final_name says. */
int fsops_finish(const char *src_dir, const char *name, const char *dst_dir, int64_t now,
		 const char *report_json, char **ret_final_name);

/* Writes CONTENT to DIR/NAME atomically: DIR/.NAME.tmp, write, fsync, close (checked), rename
 * (replacing: for the daemon's own state files only), fsync DIR. */
int fsops_write_atomic(const char *dir, const char *name, const char *content, size_t len);

/* Reads a small file (at most MAX bytes) into a malloc'd NUL-terminated buffer. */
int fsops_read_small(const char *dir, const char *name, size_t max, char **ret_buf,
		     size_t *ret_len);

int fsops_fsync_dir(const char *dir);

/* Formats T (seconds since the epoch) as ISO 8601 UTC with milliseconds when MS >= 0:
 * "2026-11-26T04:01:02Z" or "2026-11-26T04:01:02.123Z". BUF must hold 32 bytes. */
void fsops_format_utc(char buf[32], int64_t t, int ms);

#endif
