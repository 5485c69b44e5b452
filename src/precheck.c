#include "precheck.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "fsops.h"
#include "text.h"

/* sha256 of the whole file: identifies the content in reports, records and keys. The same
 * reads feed the normalizer's first pass (N, made from the first read), so that a clean file is
 * read once by the check and once by the upload: never more. */
static int precheck_hash(int fd, uint64_t size, const struct config_folder *folder,
			 int work_dir_fd, const char *rejects_name, const atomic_bool *cancel,
			 char hex[65], struct normalizer **n, char *reason, size_t reasonsz)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t bufsz = size < PRECHECK_READ_BYTES ? (size_t)size + 1 : PRECHECK_READ_BYTES;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *buf = malloc(bufsz);
	uint64_t off = 0;
	int r = 0;

	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		snprintf(reason, reasonsz, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (size == 0 && normalizer_new(folder, 0, "", 0, true, work_dir_fd, work_dir_fd,
					 rejects_name, n) < 0) {
		snprintf(reason, reasonsz, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	while (off < size) {
		ssize_t k;

		if (cancel && atomic_load_explicit(cancel, memory_order_relaxed)) {
			r = -ECANCELED;
			goto out;
		}
		k = pread(fd, buf, bufsz, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? -errno : -EIO;
			snprintf(reason, reasonsz, "reading the file failed: %s",
				 k < 0 ? strerror(errno) : "it shrank while being read");
			goto out;
		}
		/* Detection wants NORMALIZE_DETECT_BYTES, or the whole file: a short first read
		 * (rare, not at the end) is topped up on its own. */
		if (off == 0) {
			size_t have = (size_t)k;

			while (have < bufsz && have < NORMALIZE_DETECT_BYTES + 1 &&
			       (uint64_t)have < size) {
				ssize_t more = pread(fd, buf + have, bufsz - have, (off_t)have);

				if (more < 0 && errno == EINTR)
					continue;
				if (more <= 0)
					break;
				have += (size_t)more;
			}
			k = (ssize_t)have;
			if (normalizer_new(folder, size, buf, have, (uint64_t)have >= size,
					   work_dir_fd, work_dir_fd, rejects_name, n) < 0) {
				snprintf(reason, reasonsz, "out of memory");
				r = -ENOMEM;
				goto out;
			}
		}
		EVP_DigestUpdate(ctx, buf, (size_t)k);
		normalizer_feed(*n, buf, (size_t)k);
		off += (uint64_t)k;
	}
	if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) {
		snprintf(reason, reasonsz, "cannot compute the sha256");
		r = -EIO;
		goto out;
	}
	text_hex(hex, md, 32);
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
	char was[TEXT_COUNT_LEN], now[TEXT_COUNT_LEN];
	uint64_t size = (uint64_t)st->st_size;

	if ((uint64_t)st->st_dev != pc->dev || (uint64_t)st->st_ino != pc->ino)
		snprintf(what, whatsz, "it is another file (inode %" PRIu64 ", was %" PRIu64 ")",
			 (uint64_t)st->st_ino, pc->ino);
	else if (size != pc->bytes)
		snprintf(what, whatsz, "%s \u2192 %s bytes", text_format_count(was, pc->bytes),
			 text_format_count(now, size));
	else if (!precheck_same_time(st->st_mtim, pc->mtime))
		snprintf(what, whatsz, "rewritten in place, %s bytes as before (its mtime changed)",
			 text_format_count(now, size));
	else if (!precheck_same_time(st->st_ctim, pc->ctime))
		snprintf(what, whatsz, "%s bytes as before, but its inode changed (ctime: written, "
			 "linked, or its owner or mode changed)", text_format_count(now, size));
	else
		return true;
	return false;
}

/* What coalescing needs of a file uploaded whole from FD (normalize.h): its header's hash and
 * whether its last row ends its line. A file that cannot tell is not coalesced. */
static void precheck_coalescing(struct normalize *norm, int fd)
{
	const struct normalize_part *p = &norm->parts[0];
	char buf[4096], last;
	XXH3_state_t *st;
	uint64_t off = 0;
	bool ok = norm->header_len > 0 && p->bytes > norm->header_len;

	st = ok ? XXH3_createState() : NULL;
	ok = st && XXH3_64bits_reset(st) == XXH_OK;
	while (ok && off < norm->header_len) {
		size_t want = norm->header_len - off < sizeof(buf) ? (size_t)(norm->header_len - off)
								   : sizeof(buf);
		ssize_t got = pread(fd, buf, want, (off_t)(p->offset + off));

		ok = got > 0 && XXH3_64bits_update(st, buf, (size_t)got) == XXH_OK;
		off += ok ? (uint64_t)got : 0;
	}
	ok = ok && pread(fd, &last, 1, (off_t)(p->offset + p->bytes - 1)) == 1;
	if (ok) {
		norm->header_hash = XXH3_64bits_digest(st);
		norm->ends_with_newline = last == '\n';
	} else {
		free(norm->emails);
		norm->emails = NULL;
		norm->n_emails = 0;
	}
	XXH3_freeState(st);
}

int precheck_run(int dir_fd, const char *name, const struct config_folder *folder,
		 int work_dir_fd, const char *rejects_name, const atomic_bool *cancel,
		 struct precheck *ret)
{
	struct normalizer *n = NULL;
	struct stat st;
	int fd = -1, r;

	ret->fd = -1;
	ret->bytes = 0;
	ret->sha256[0] = '\0';
	ret->reason[0] = '\0';
	ret->dev = ret->ino = 0;
	ret->mtime = ret->ctime = (struct timespec){0};
	memset(&ret->norm, 0, sizeof(ret->norm));
	ret->norm.fd = -1;
	r = fsops_open_checked(dir_fd, name, folder->settings.max_file_bytes, &fd, &st,
			       ret->reason, sizeof(ret->reason));
	if (r < 0)
		return r;
	ret->bytes = (uint64_t)st.st_size;
	ret->dev = (uint64_t)st.st_dev;
	ret->ino = (uint64_t)st.st_ino;
	ret->mtime = st.st_mtim;
	ret->ctime = st.st_ctim;
	/* The whole hash even for a file whose CSV is refused: its report gets it. */
	r = precheck_hash(fd, ret->bytes, folder, work_dir_fd, rejects_name, cancel, ret->sha256,
			  &n, ret->reason, sizeof(ret->reason));
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
	if (r == 0)
		r = normalizer_finish(n, fd, cancel, &ret->norm, ret->reason, sizeof(ret->reason));
	normalizer_free(n);
	if (r == 0 && ret->norm.emails)
		precheck_coalescing(&ret->norm, ret->norm.fd >= 0 ? ret->norm.fd : fd);
	if (r < 0)
		goto fail;
	ret->fd = fd;
	return 0;
fail:
	close(fd);
	return r;
}
