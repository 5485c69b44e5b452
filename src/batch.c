/* Coalescing's pure parts: a batch's description, and which waiting file may join it. */
#include "batch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

struct batch_info *batch_info_new(const char *id, uint64_t rows, size_t n_files, bool names)
{
	struct batch_info *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	if (names && n_files && !(b->files = calloc(n_files, sizeof(*b->files)))) {
		free(b);
		return NULL;
	}
	b->refs = 1;
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->rows = rows;
	b->n_files = n_files;
	return b;
}

int batch_info_set(struct batch_info *b, size_t i, const char *name)
{
	if (!b->files || i >= b->n_files)
		return -EINVAL;
	free(b->files[i]);
	b->files[i] = strdup(name);
	return b->files[i] ? 0 : -ENOMEM;
}

struct batch_info *batch_info_ref(struct batch_info *b)
{
	if (b)
		b->refs++;
	return b;
}

void batch_info_unref(struct batch_info *b)
{
	if (!b || --b->refs > 0)
		return;
	for (size_t i = 0; b->files && i < b->n_files; i++)
		free(b->files[i]);
	free(b->files);
	free(b);
}

/* ---- the hash set ---------------------------------------------------------------------- */

static size_t hashset_slot(const struct batch_hashset *s, uint64_t h)
{
	size_t i = (size_t)(h ^ (h >> 29)) & (s->cap - 1);

	while (s->slots[i] && s->slots[i] != h)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static bool hashset_has(const struct batch_hashset *s, uint64_t h)
{
	if (h == 0)
		return s->has_zero;
	return s->cap && s->slots[hashset_slot(s, h)] == h;
}

static int hashset_grow(struct batch_hashset *s, size_t want)
{
	struct batch_hashset g = {.has_zero = s->has_zero, .n = s->n};
	size_t cap = s->cap ? s->cap : 64;

	while (cap < want * 2)
		cap *= 2;
	if (cap == s->cap)
		return 0;
	g.cap = cap;
	g.slots = calloc(cap, sizeof(*g.slots));
	if (!g.slots)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++)
		if (s->slots[i])
			g.slots[hashset_slot(&g, s->slots[i])] = s->slots[i];
	free(s->slots);
	*s = g;
	return 0;
}

static int hashset_add_all(struct batch_hashset *s, const uint64_t *h, size_t n)
{
	int r = hashset_grow(s, s->n + n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		size_t k;

		if (h[i] == 0) {
			s->has_zero = true;
			continue;
		}
		k = hashset_slot(s, h[i]);
		if (!s->slots[k]) {
			s->slots[k] = h[i];
			s->n++;
		}
	}
	return 0;
}

static bool hashset_any(const struct batch_hashset *s, const uint64_t *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (hashset_has(s, h[i]))
			return true;
	return false;
}

/* ---- forming a batch ------------------------------------------------------------------- */

bool batch_eligible(const struct normalize *n)
{
	return n->emails && n->n_parts == 1 && n->header_len > 0 &&
	       n->parts[0].bytes > n->header_len;
}

int batch_former_init(struct batch_former *f, const struct config_settings *st,
		      const struct normalize *first)
{
	*f = (struct batch_former){
		.st = st,
		.header_hash = first->header_hash,
		.header_len = first->header_len,
		.rows = first->rows_uploaded,
		.bytes = first->parts[0].bytes + (first->ends_with_newline ? 0 : 1),
		.n_files = 1,
	};
	return hashset_add_all(&f->taken, first->emails, first->n_emails);
}

bool batch_former_done(const struct batch_former *f)
{
	return f->stopped || f->n_files >= f->st->coalesce_max_files ||
	       f->rows >= f->st->coalesce_max_rows ||
	       /* Enough looked at: a long queue is not scanned at every grant. */
	       f->looked_at >= 2 * f->st->coalesce_max_files;
}

bool batch_former_offer(struct batch_former *f, const struct normalize *n, bool may_join)
{
	uint64_t body;

	if (batch_former_done(f))
		return false;
	f->looked_at++;
	if (!n->emails) {
		/* Its emails are unknown: nothing after it may go before it. */
		f->stopped = true;
		return false;
	}
	body = batch_body_bytes(n) + (n->ends_with_newline ? 0 : 1);
	if (may_join && batch_eligible(n) && n->header_hash == f->header_hash && n->header_len == f->header_len &&
	    f->rows + n->rows_uploaded <= f->st->coalesce_max_rows &&
	    f->bytes + body <= f->st->max_upload_bytes &&
	    !hashset_any(&f->taken, n->emails, n->n_emails) &&
	    !hashset_any(&f->passed, n->emails, n->n_emails)) {
		if (hashset_add_all(&f->taken, n->emails, n->n_emails) < 0) {
			f->stopped = true;
			return false;
		}
		f->rows += n->rows_uploaded;
		f->bytes += body;
		f->n_files++;
		return true;
	}
	/* Passed over: it goes later, so no file after it may carry one of its emails first. */
	if (hashset_add_all(&f->passed, n->emails, n->n_emails) < 0)
		f->stopped = true;
	return false;
}

void batch_former_free(struct batch_former *f)
{
	free(f->taken.slots);
	free(f->passed.slots);
	f->taken = f->passed = (struct batch_hashset){0};
}

void batch_make_id(char out[BATCH_ID_LEN + 1], const char *sha256, int64_t now_ms)
{
	static uint64_t counter;
	uint64_t seed[2] = {(uint64_t)now_ms, ++counter};
	uint64_t h = XXH3_64bits_withSeed(sha256, strlen(sha256), XXH3_64bits(seed, sizeof(seed)));

	snprintf(out, BATCH_ID_LEN + 1, "%016llx", (unsigned long long)h);
}
