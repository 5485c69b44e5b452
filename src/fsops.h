/* Safe file operations on the drop folders, by directory descriptor: claim, open, move without
 * overwrite, reports, the daemon's own records. Pure POSIX/Linux; no libuv, no curl. All
 * functions return 0 or a negative errno and log nothing: the caller decides what an error
 * means and logs it once.
 *
 * Nothing here fsyncs a directory: the disk queue (diskq.c) syncs every directory that a batch
 * of operations touched once, after all of them. Files whose content must be durable (reports,
 * records that say "uploaded") are fsynced here, before they get their final name. */
#ifndef RDD_FSOPS_H
#define RDD_FSOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <time.h>

#define FSOPS_PROCESSING_DIR ".resend-dropd"
/* In a fleet, each host's processing directory is FSOPS_PROCESSING_DIR/fleet/<host_id>. */
#define FSOPS_FLEET_DIR "fleet"

/* What a file looked like when it was last seen: a claim refuses a file that has changed. */
struct fsops_seen {
	int64_t size;
	struct timespec mtime;
};

/* The one rule for "a directory at PATH" (relative to AT_FD, or AT_FDCWD), which the running
 * daemon and `--check` both apply: a real directory, its last component never followed. 0 and
 * its stat in *RET; -ENOENT nothing there; -ELOOP a symbolic link (wherever it points);
 * -ENOTDIR something else; another -errno when it cannot be looked at. */
int fsops_path_dir(int at_fd, const char *path, struct stat *ret);

/* Opens PATH as a real directory for *at calls and fsync (O_DIRECTORY|O_NOFOLLOW, close-on-exec):
 * -ELOOP when its last component is a symbolic link, which is never followed. */
int fsops_open_dir(const char *path, int *ret_fd);

/* 0 when the directory open on DIR_FD belongs to the effective uid or to root; -EPERM when
 * someone else could put what they like in it (or take what the daemon put there). */
int fsops_dir_owned(int dir_fd);

/* Whether PATH (relative to AT_FD, or AT_FDCWD) still names the directory open on DIR_FD, by
 * fsops_path_dir's rule: 0; its errors; -ESTALE another directory (re-created, or swapped).
 * fsops_dir_check: PATH from the working directory. */
int fsops_dir_check_at(int dir_fd, int at_fd, const char *path);
int fsops_dir_check(int dir_fd, const char *path);
/* What fsops_dir_check's (or fsops_dir_owned's) answer means, for a log line: "it is a
 * symbolic link now". */
const char *fsops_dir_check_reason(int r);

/* Takes the lock of the processing directory open on PROC_FD, one daemon per folder: an
 * exclusive flock of the directory itself (through a descriptor of its own, *ret_fd), never
 * waited for; it lasts as long as *ret_fd is open. -EWOULDBLOCK when another process holds it,
 * and *ret_pid is its pid, from /proc/locks (0 when it cannot be told). */
int fsops_lock_dir(int proc_fd, int *ret_fd, long *ret_pid);

/* Whether another process holds the lock of INBOX's processing directory, creating nothing:
 * -EWOULDBLOCK (and *ret_pid) when one does, else 0. Only for folders this process does not
 * hold itself (a flock taken twice by one process conflicts with itself). */
int fsops_lock_probe(const char *inbox, long *ret_pid);

/* Whether a process holds the lock of INBOX's processing directory, seen from /proc/locks,
 * without opening the directory (it is the daemon's, mode 0700: anyone who can reach the inbox
 * can ask): -EWOULDBLOCK and *ret_pid when one does, 0 when none does or there is no processing
 * directory, another -errno when it cannot be told (the inbox cannot be searched, say). */
int fsops_lock_holder(const char *inbox, long *ret_pid);

/* Creates (mode 0700) or checks INBOX_FD/.resend-dropd, opened without following a symlink: it
 * must be a real directory owned by the effective uid; a looser or tighter mode is set back to
 * 0700. *ret_fd is open on it. A new one is made durable (the inbox is fsynced). */
int fsops_processing_dir(int inbox_fd, int *ret_fd);
/* The same for a fleet host's own processing directory, PROC_FD/fleet/HOST_ID (both made when
 * missing, both checked). */
int fsops_host_dir(int proc_fd, const char *host_id, int *ret_fd);
/* A shared flock of the directory open on DIR_FD, never waited for: a fleet's hosts on one
 * machine share the processing directory; a daemon of one host (fsops_lock_dir, exclusive)
 * cannot take it beside them, nor they beside it. -EWOULDBLOCK. */
int fsops_lock_shared(int dir_fd, int *ret_fd);
/* Moves every regular file of SRC_FD into DST_FD, keeping names and replacing nothing (a
 * host's processing directory taken over by another), the state records first. *RET_NAMES
 * (fsops_names_free) and *RET_MOVED: the names moved that do not start with a dot (the files);
 * *RET_LEFT: those that could not be (a name taken in DST_FD, or another error: the first is
 * returned, -EEXIST for a name). 0 when none is left. */
int fsops_move_all(int src_fd, int dst_fd, char ***ret_names, size_t *ret_moved,
		   unsigned *ret_left);

/* Claims NAME: moves INBOX_FD/NAME to PROC_FD/NAME without replacing anything, provided it is
 * still what SEEN says (size and mtime; NULL: no comparison) and, where the kernel can tell, no
 * writer holds it open (a read lease cannot be taken then; it needs file ownership or
 * CAP_LEASE, so without them this is no information). Entries that are not regular files are
 * claimed without being opened (the check refuses them with a reason). -ENOENT: it vanished;
 * -EEXIST: a namesake is in processing; -EAGAIN: it changed since SEEN, or a writer has it open.
 * Neither directory is fsynced. */
int fsops_claim(int inbox_fd, int proc_fd, const char *name, const struct fsops_seen *seen);

/* Opens DIR_FD/NAME with O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC and checks with fstat that it
 * is a regular file with one link and at most MAX_BYTES long. On success *ret_fd and *ret_st.
 * On a refusal returns a negative errno (-ELOOP symlink, -EINVAL not regular, -EMLINK hard
 * links, -EFBIG too big, or open's error) and writes a human reason to ERRBUF
 * (e.g. "is a symbolic link", "is a FIFO", "has 2 hard links", "is 300000000 bytes, over the
 * limit of 209715200"). */
int fsops_open_checked(int dir_fd, const char *name, uint64_t max_bytes, int *ret_fd,
		       struct stat *ret_st, char *errbuf, size_t errsz);

/* Moves SRC_FD/NAME into DST_FD without overwriting anything. The target is NAME; if NAME or
 * NAME.json exists there, a UTC timestamp from NOW is inserted before the extension
 * ("x.20261126T040102Z.csv"; "x.20261126T040102Z-2.csv" if that is taken too). REPORT_JSON (may
 * be NULL) is written first to SRC_FD/REPORT_STAGE (a dot name of the caller's, created or
 * overwritten) and fsynced; after the move that file is renamed, never replacing anything, to
 * <final>.json in DST_FD. If that fails the file is moved back, so an error means the file did
 * not move. *ret_final_name (malloc'd) is the name in DST_FD. The caller fsyncs DST_FD, then
 * SRC_FD. Staging the report where the file is costs no temporary in DST_FD, and lets the
 * caller stage it in a file it has already (its state record): no inode made and deleted per
 * file. */
int fsops_finish(int src_fd, const char *name, int dst_fd, int64_t now, const char *report_json,
		 const char *report_stage, const char *rejects_stage, char **ret_final_name);
/* REJECTS_STAGE (NULL: none), a dot name in SRC_FD, goes with the file as
 * "<final>.rejects.csv" (all three names must be free). fsops_finish_name says which name
 * fsops_finish would choose now, for a report that names the rejects file. */
int fsops_finish_name(int dst_fd, const char *name, int64_t now, bool rejects, char **ret_final);

/* Writes LEN bytes of BUF to FD, at offset OFF (pwrite), or where FD is (OFF < 0), however
 * many calls it takes (EINTR retried). 0, or -errno. */
int fsops_write_all(int fd, const char *buf, size_t len, off_t off);

/* Writes one of the daemon's own records, CONTENT, to DIR_FD/NAME. A record shorter than a
 * sector (512 bytes: every record but a split file's with many parts) is stored as one sector,
 * padded with blanks and a newline, so that it can be rewritten in place. DURABLE: once the
 * caller has fsynced DIR_FD the record is on disk whole: a one-sector file that exists is
 * rewritten in place and fdatasynced (a sector is written whole or not at all, as PostgreSQL
 * assumes of pg_control); anything else goes through a temporary ".NAME.tmp" that is fsynced
 * and renamed over NAME. Otherwise in place (no new inode when NAME exists): a record that
 * survives a crash of the process, though not always of the machine; only for what may be
 * lost. Neither follows a symlink. */
int fsops_write_record(int dir_fd, const char *name, const char *content, size_t len,
		       bool durable);

/* An unnamed temporary file in DIR_FD, open for reading and writing (O_TMPFILE; where the
 * filesystem has none, a dot name made with O_EXCL and unlinked at once): gone with its
 * descriptor, even after a crash. */
int fsops_open_tmpfile(int dir_fd, int *ret_fd);

/* Reads a small regular file (at most MAX bytes) into a malloc'd NUL-terminated buffer:
 * -EFBIG when it is larger, -EINVAL when it is not a regular file. fsops_read_small reads NAME
 * in DIR_FD, never through a symbolic link (the daemon's own files); fsops_read_path reads a
 * PATH an operator named (links followed, as for any configuration file). */
int fsops_read_small(int dir_fd, const char *name, size_t max, char **ret_buf, size_t *ret_len);
int fsops_read_path(const char *path, size_t max, char **ret_buf, size_t *ret_len);
/* The same for a file open on FD, which is closed here whatever happens (a reader that says
 * itself why an open failed). */
int fsops_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len);

/* The names in DIR_FD that do not start with a dot, in directory order: a malloc'd array of
 * malloc'd strings (free with fsops_names_free). For a processing directory, listed before
 * anything runs there: the temporaries of durable records (fsops_write_record) that a crash
 * left are removed on the way. */
int fsops_list(int dir_fd, char ***ret_names, size_t *ret_n);
void fsops_names_free(char **names, size_t n);

/* resend-dropd retry: moves FAILED_FD/NAME back to INBOX_FD/NAME without replacing anything,
 * after renaming its report NAME.json (if any) to NAME.<UTC stamp from NOW>.json, which stays
 * in FAILED_FD; *ret_report is that new name (malloc'd), or NULL when there was no report. If
 * the file cannot move, the report gets its name back. -ENOENT: no such file; -EINVAL: not a
 * plain file name, or not a regular file; -EEXIST: the inbox has a file of that name. Two
 * renames, no fsync: the caller may run it on the loop thread. */
int fsops_unfail(int failed_fd, int inbox_fd, const char *name, int64_t now, char **ret_report);

/* fsync of a directory; filesystems that cannot (EINVAL) count as success. */
int fsops_fsync_dir(int dir_fd);

#endif
