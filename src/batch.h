/* Coalescing: files of one folder that wait for the rate budget or an upload slot go out
 * together, as one import (a batch): one header, then each file's rows in the order they
 * waited. What may join a forming batch (batch_former), and the batch's description that its
 * files' reports share (batch_info). Pure (xxhash only).
 *
 * A file joins when it was checked on its own into one part with its emails collected
 * (normalize.h), has the same header after normalization, keeps the batch within its caps
 * (coalesce_max_files, coalesce_max_rows, max_upload_bytes), and shares no email with the
 * batch, nor with a waiting file passed over before it: Resend's handling of an email repeated
 * in one import is not documented, and rows imported one file after another must keep their
 * meaning (later rows win). A file that cannot join is passed over, and the scan goes on; a
 * file whose emails are not known stops it. */
#ifndef RDD_BATCH_H
#define RDD_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "normalize.h"

#define BATCH_ID_LEN 16

/* What the reports of a batch's files say of it; shared, counted references. */
struct batch_info {
	unsigned refs;
	char id[BATCH_ID_LEN + 1];
	uint64_t rows;  /* the whole import's */
	size_t n_files;
	char **files;   /* owned names, in batch order; NULL when only N_FILES is known (a file
			 * resumed after a restart) */
};

/* A new description with one reference, for N_FILES files (names set with batch_info_set).
 * NULL when out of memory. */
struct batch_info *batch_info_new(const char *id, uint64_t rows, size_t n_files, bool names);
/* Names file I (copied). -ENOMEM. */
int batch_info_set(struct batch_info *b, size_t i, const char *name);
struct batch_info *batch_info_ref(struct batch_info *b);
void batch_info_unref(struct batch_info *b);

/* A set of 64-bit hashes (open addressing). */
struct batch_hashset {
	uint64_t *slots; /* 0: empty */
	size_t n, cap;
	bool has_zero;
};

struct batch_former {
	const struct config_settings *st;
	uint64_t header_hash, header_len;
	uint64_t rows, bytes;
	size_t n_files, looked_at;
	struct batch_hashset taken, passed;
	bool stopped;
};

/* Whether a checked file may lead or join a batch at all (one part, emails collected). */
bool batch_eligible(const struct normalize *n);
/* Starts a batch with FIRST (batch_eligible), for a folder's settings ST. -ENOMEM. */
int batch_former_init(struct batch_former *f, const struct config_settings *st,
		      const struct normalize *first);
/* N, the next waiting file: true when it joins. False when it is passed over (it may not join,
 * MAY_JOIN false, or does not fit); a file whose emails are not known stops the batch. Once
 * batch_former_done, nothing more is looked at. */
bool batch_former_offer(struct batch_former *f, const struct normalize *n, bool may_join);
bool batch_former_done(const struct batch_former *f);
void batch_former_free(struct batch_former *f);

/* The rows of a file in a batch: after its header, to its end. */
static inline uint64_t batch_body_offset(const struct normalize *n)
{
	return n->parts[0].offset + n->header_len;
}
static inline uint64_t batch_body_bytes(const struct normalize *n)
{
	return n->parts[0].bytes - n->header_len;
}

/* A batch's id: 16 hex digits from its first file's sha256, the wall clock and a counter. */
void batch_make_id(char out[BATCH_ID_LEN + 1], const char *sha256, int64_t now_ms);

#endif
