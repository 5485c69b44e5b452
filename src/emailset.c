#include "emailset.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsops.h"

#define EMAILSET_PARTITION_BYTES (1024u * 1024)
#define EMAILSET_MAX_PARTITIONS 256

struct entry {
	uint64_t hi, lo;
	uint64_t line;
};

struct partition {
	struct entry *mem;
	size_t n_mem, cap;
	int fd;       /* -1 until it spills */
	uint64_t n_file;
};

struct emailset {
	int tmp_dir_fd;
	struct partition *parts;
	size_t n_parts;
	size_t per_part; /* in-memory entries per partition */
};

int emailset_new(int tmp_dir_fd, uint64_t size_hint, struct emailset **ret)
{
	struct emailset *s = calloc(1, sizeof(*s));
	uint64_t n = size_hint / EMAILSET_PARTITION_BYTES + 1;

	if (!s)
		return -ENOMEM;
	if (n > EMAILSET_MAX_PARTITIONS)
		n = EMAILSET_MAX_PARTITIONS;
	s->tmp_dir_fd = tmp_dir_fd;
	s->n_parts = (size_t)n;
	s->per_part = EMAILSET_MEMORY_ENTRIES / s->n_parts;
	s->parts = calloc(s->n_parts, sizeof(*s->parts));
	if (!s->parts) {
		free(s);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->n_parts; i++)
		s->parts[i].fd = -1;
	*ret = s;
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int spill(struct emailset *s, struct partition *p)
{
	int r;

	if (p->fd < 0) {
		r = fsops_open_tmpfile(s->tmp_dir_fd, &p->fd);
		if (r < 0)
			return r;
	}
	r = write_full(p->fd, p->mem, p->n_mem * sizeof(*p->mem));
	if (r < 0)
		return r;
	p->n_file += p->n_mem;
	p->n_mem = 0;
	return 0;
}

int emailset_add(struct emailset *s, const char *email, size_t len, uint64_t line)
{
	XXH128_hash_t h = XXH3_128bits(email, len);
	struct partition *p = &s->parts[h.high64 % s->n_parts];

	if (p->n_mem == p->cap) {
		/* Grown as needed: most files have a few hundred rows, and a check that holds a
		 * megabyte for them would cost every thread that memory. */
		if (p->cap < s->per_part) {
			size_t ncap = p->cap ? p->cap * 4 : 64;
			struct entry *nm;

			if (ncap > s->per_part)
				ncap = s->per_part;
			nm = realloc(p->mem, ncap * sizeof(*nm));
			if (!nm)
				return -ENOMEM;
			p->mem = nm;
			p->cap = ncap;
		} else {
			int r = spill(s, p);

			if (r < 0)
				return r;
		}
	}
	p->mem[p->n_mem++] = (struct entry){h.high64, h.low64, line};
	return 0;
}

static int repeat_cmp(const void *a, const void *b)
{
	const struct emailset_repeat *x = a, *y = b;

	return x->line < y->line ? -1 : x->line > y->line;
}

struct repeats {
	struct emailset_repeat *v;
	size_t n, cap;
};

static int repeats_add(struct repeats *r, uint64_t line, uint64_t first)
{
	if (r->n == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 64;
		struct emailset_repeat *nv = realloc(r->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		r->v = nv;
		r->cap = ncap;
	}
	r->v[r->n++] = (struct emailset_repeat){line, first};
	return 0;
}

/* Entries come in line order (as they were added), so the first of each hash is the one in the
 * table when a later one finds it. Open addressing; a line of 0 (lines start at 1) is empty. */
static int table_add(struct entry *tab, size_t mask, const struct entry *e, struct repeats *out)
{
	size_t i = (size_t)e->lo & mask;

	while (tab[i].line != 0) {
		if (tab[i].hi == e->hi && tab[i].lo == e->lo)
			return repeats_add(out, e->line, tab[i].line);
		i = (i + 1) & mask;
	}
	tab[i] = *e;
	return 0;
}

/* The repeats within partition P: its spill file read once from its start in small pieces,
 * then what is in memory, through a table of at least twice its entries. */
static int partition_repeats(struct partition *p, struct repeats *out)
{
	uint64_t n = p->n_file + p->n_mem;
	struct entry buf[256];
	size_t cap = 64, mask;
	struct entry *tab;
	int r = 0;

	while (cap < 2 * n)
		cap *= 2;
	mask = cap - 1;
	tab = calloc(cap, sizeof(*tab));
	if (!tab)
		return -ENOMEM;
	if (p->fd >= 0 && lseek(p->fd, 0, SEEK_SET) < 0)
		r = -errno;
	for (uint64_t left = p->fd >= 0 ? p->n_file : 0; r == 0 && left > 0;) {
		size_t want = left < 256 ? (size_t)left : 256, got = 0;

		while (got < want * sizeof(*buf)) {
			ssize_t k = read(p->fd, (char *)buf + got, want * sizeof(*buf) - got);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				r = k < 0 ? -errno : -EIO;
				break;
			}
			got += (size_t)k;
		}
		for (size_t i = 0; r == 0 && i < want; i++)
			r = table_add(tab, mask, &buf[i], out);
		left -= want;
	}
	for (size_t i = 0; r == 0 && i < p->n_mem; i++)
		r = table_add(tab, mask, &p->mem[i], out);
	free(tab);
	return r;
}

int emailset_repeats(struct emailset *s, struct emailset_repeat **ret, size_t *ret_n)
{
	struct repeats out = {0};

	for (size_t i = 0; i < s->n_parts; i++) {
		struct partition *p = &s->parts[i];
		int r;

		if (p->n_file + p->n_mem < 2)
			continue;
		r = partition_repeats(p, &out);
		/* Once read, the spill file and the buffer are done with. */
		if (p->fd >= 0)
			close(p->fd);
		p->fd = -1;
		free(p->mem);
		p->mem = NULL;
		p->n_mem = p->cap = 0;
		p->n_file = 0;
		if (r < 0) {
			free(out.v);
			return r;
		}
	}
	if (out.n)
		qsort(out.v, out.n, sizeof(*out.v), repeat_cmp);
	*ret = out.v;
	*ret_n = out.n;
	return 0;
}

void emailset_free(struct emailset *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_parts; i++) {
		if (s->parts[i].fd >= 0)
			close(s->parts[i].fd);
		free(s->parts[i].mem);
	}
	free(s->parts);
	free(s);
}
