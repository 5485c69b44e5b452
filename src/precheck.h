/* The check of a claimed file before any API quota is spent: open it by descriptor (a regular
 * file with one link, within max_file_bytes), hash the content, read the CSV header and check
 * the mapped columns. Runs in a worker thread; pure POSIX, no libuv. */
#ifndef RDD_PRECHECK_H
#define RDD_PRECHECK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* Reads of the hash: large, so that big files go at disk speed. */
#define PRECHECK_READ_BYTES (1024 * 1024)

struct precheck {
	int fd;           /* open on the file once it has passed; the caller closes it. -1 */
	uint64_t bytes;
	char sha256[65];  /* "" when the file could not be read whole */
	char reason[512]; /* why it was refused */
};

/* Checks DIR_FD/NAME for FOLDER. Returns 0 with RET filled and RET->fd open; or a negative
 * errno with RET->reason saying why the file is refused (RET->fd is -1). -ECANCELED when
 * CANCEL became true (a shutdown): the check stopped early and refused nothing. */
int precheck_run(int dir_fd, const char *name, const struct config_folder *folder,
		 const atomic_bool *cancel, struct precheck *ret);

#endif
