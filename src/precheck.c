#include "precheck.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csvhead.h"
#include "fsops.h"
#include "report.h"

/* sha256 of the whole file: identifies the content in reports, records and keys. The header
 * is parsed from the first read (HEAD), so that the check reads the file once and the upload
 * once: never more. */
static int precheck_hash(int fd, uint64_t size, const atomic_bool *cancel, char hex[65],
			 struct csvhead *head, int *head_result, char *reason, size_t reasonsz)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t bufsz = size < PRECHECK_READ_BYTES ? (size_t)size + 1 : PRECHECK_READ_BYTES;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *buf = malloc(bufsz);
	char head_reason[512] = "";
	uint64_t off = 0;
	int r = 0;

	*head_result = -ENODATA;
	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		snprintf(reason, reasonsz, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (size == 0)
		*head_result = csvhead_parse("", 0, true, head, head_reason, sizeof(head_reason));
	while (off < size) {
		ssize_t n;

		if (cancel && atomic_load_explicit(cancel, memory_order_relaxed)) {
			r = -ECANCELED;
			goto out;
		}
		n = pread(fd, buf, bufsz, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			snprintf(reason, reasonsz, "reading the file failed: %s",
				 n < 0 ? strerror(errno) : "it shrank while being read");
			goto out;
		}
		if (off == 0) {
			bool whole = (uint64_t)n >= size;

			/* A short first read (not at the end) is too little to judge the header
			 * from: read it on its own then. */
			if (whole || (size_t)n > CSVHEAD_MAX_BYTES)
				*head_result = csvhead_parse(buf, (size_t)n, whole, head, head_reason,
							     sizeof(head_reason));
			else
				*head_result = csvhead_read(fd, head, head_reason,
							    sizeof(head_reason));
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += (uint64_t)n;
	}
	if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) {
		snprintf(reason, reasonsz, "cannot compute the sha256");
		r = -EIO;
		goto out;
	}
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (*head_result < 0)
		snprintf(reason, reasonsz, "%s", head_reason);
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

static bool precheck_same_time(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool precheck_same_file(const struct precheck *pc, const struct stat *st, char *what,
			size_t whatsz)
{
	char was[REPORT_COUNT_LEN], now[REPORT_COUNT_LEN];
	uint64_t size = (uint64_t)st->st_size;

	if ((uint64_t)st->st_dev != pc->dev || (uint64_t)st->st_ino != pc->ino)
		snprintf(what, whatsz, "it is another file (inode %" PRIu64 ", was %" PRIu64 ")",
			 (uint64_t)st->st_ino, pc->ino);
	else if (size != pc->bytes)
		snprintf(what, whatsz, "%s \u2192 %s bytes", report_format_count(was, pc->bytes),
			 report_format_count(now, size));
	else if (!precheck_same_time(st->st_mtim, pc->mtime))
		snprintf(what, whatsz, "rewritten in place, %s bytes as before (its mtime changed)",
			 report_format_count(now, size));
	else if (!precheck_same_time(st->st_ctim, pc->ctime))
		snprintf(what, whatsz, "%s bytes as before, but its inode changed (ctime: written, "
			 "linked, or its owner or mode changed)", report_format_count(now, size));
	else
		return true;
	return false;
}

int precheck_run(int dir_fd, const char *name, const struct config_folder *folder,
		 const atomic_bool *cancel, struct precheck *ret)
{
	struct csvhead head = {0};
	struct stat st;
	int fd = -1, r, head_result;

	ret->fd = -1;
	ret->bytes = 0;
	ret->sha256[0] = '\0';
	ret->reason[0] = '\0';
	ret->dev = ret->ino = 0;
	ret->mtime = ret->ctime = (struct timespec){0};
	r = fsops_open_checked(dir_fd, name, folder->settings.max_file_bytes, &fd, &st,
			       ret->reason, sizeof(ret->reason));
	if (r < 0)
		return r;
	ret->bytes = (uint64_t)st.st_size;
	ret->dev = (uint64_t)st.st_dev;
	ret->ino = (uint64_t)st.st_ino;
	ret->mtime = st.st_mtim;
	ret->ctime = st.st_ctim;
	/* The whole hash even for a file whose header is refused: its report gets it. */
	r = precheck_hash(fd, ret->bytes, cancel, ret->sha256, &head, &head_result, ret->reason,
			  sizeof(ret->reason));
	/* Written to while it was hashed (it grew, or was rewritten in place): the sha256 is of
	 * no content the file ever held whole, and uploading it would only find that out after
	 * an import was made. One fstat. */
	if (r == 0) {
		struct stat after;
		char what[128];

		if (fstat(fd, &after) < 0) {
			r = -errno;
			snprintf(ret->reason, sizeof(ret->reason), "cannot be examined: %s",
				 strerror(-r));
		} else if (!precheck_same_file(ret, &after, what, sizeof(what))) {
			r = -ESTALE;
			snprintf(ret->reason, sizeof(ret->reason),
				 "the file changed while it was being checked: %s", what);
		}
	}
	if (r < 0) {
		if (head_result == 0)
			csvhead_free(&head);
		goto fail;
	}
	r = head_result;
	if (r == 0) {
		r = csvhead_check(&head, &folder->column_map, ret->reason, sizeof(ret->reason));
		csvhead_free(&head);
	}
	if (r < 0)
		goto fail;
	ret->fd = fd;
	return 0;
fail:
	close(fd);
	return r;
}
