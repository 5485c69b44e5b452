#include "precheck.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csvhead.h"
#include "fsops.h"

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
	r = fsops_open_checked(dir_fd, name, folder->settings.max_file_bytes, &fd, &st,
			       ret->reason, sizeof(ret->reason));
	if (r < 0)
		return r;
	ret->bytes = (uint64_t)st.st_size;
	/* The whole hash even for a file whose header is refused: its report gets it. */
	r = precheck_hash(fd, ret->bytes, cancel, ret->sha256, &head, &head_result, ret->reason,
			  sizeof(ret->reason));
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
