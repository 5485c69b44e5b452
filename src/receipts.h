/* Receipts for the uploader: each file's outcome, as the person who dropped it may see it, in a
 * directory of the folder's choosing (inside an SFTP chroot, say): NAME.ok.json or
 * NAME.failed.json, and NAME.rejects.csv when rows were rejected. A receipt replaces the
 * receipts of an earlier file of the same name. Written like reports (a temporary, fsynced,
 * renamed; the directory fsynced), with the owner, group and mode configured; removed once
 * older than keep_days. A receipt that cannot be written is the receipts directory's fault,
 * never the file's: it waits in a backlog (bounded), written again with the folder's next
 * receipt or sweep. POSIX, and libuv's mutex for the backlog; the disk thread calls it. */
#ifndef RDD_RECEIPTS_H
#define RDD_RECEIPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"

#define RECEIPTS_OK_SUFFIX ".ok.json"
#define RECEIPTS_FAILED_SUFFIX ".failed.json"
#define RECEIPTS_REJECTS_SUFFIX ".rejects.csv"
/* Receipts waiting to be written again, per folder, at most. */
#define RECEIPTS_BACKLOG_MAX 10000

struct receipt_pending;

/* A folder's receipts that could not be written yet. Thread-safe. */
struct receipts_backlog {
	uv_mutex_t lock;
	struct receipt_pending *head, *tail;
	size_t n;
	uint64_t dropped; /* over RECEIPTS_BACKLOG_MAX: given up */
	int last_error;   /* why the last write failed (0: the last one worked) */
};

int receipts_backlog_init(struct receipts_backlog *b);
void receipts_backlog_free(struct receipts_backlog *b);

/* Writes the receipt of file NAME (FAILED: NAME.failed.json, else NAME.ok.json) holding JSON,
 * with the rejects file REJECTS_NAME read from REJECTS_DIR_FD (-1: none), into C's directory;
 * first the backlog's, in order. 0, or -errno with WHY (a sentence): the receipt then waits in
 * B (its rejects copied into memory, up to a bound). */
int receipts_write(const struct config_receipts *c, struct receipts_backlog *b, const char *name,
		   bool failed, const char *json, int rejects_dir_fd, const char *rejects_name,
		   char *why, size_t whysz);
/* Writes what waits in B (0, or the first error, the rest still waiting), then removes the
 * receipts older than C's keep_ms at NOW_MS (by their mtime); *RET_REMOVED how many. */
int receipts_sweep(const struct config_receipts *c, struct receipts_backlog *b, int64_t now_ms,
		   size_t *ret_removed, char *why, size_t whysz);

#endif
