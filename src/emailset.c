#include "emailset.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsops.h"

#define EMAILSET_PARTITION_BYTES (2u * 1024 * 1024)
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

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->line < y->line ? -1 : x->line > y->line;
}

static int repeat_cmp(const void *a, const void *b)
{
	const struct emailset_repeat *x = a, *y = b;

	return x->line < y->line ? -1 : x->line > y->line;
}

/* Loads partition P whole (its spill file and what is in memory) into *RET. */
static int load(struct partition *p, struct entry **ret, size_t *ret_n)
{
	size_t n = (size_t)p->n_file + p->n_mem;
	struct entry *all = malloc((n ? n : 1) * sizeof(*all));
	size_t want = (size_t)p->n_file * sizeof(*all), got = 0;

	if (!all)
		return -ENOMEM;
	/* Read once, from its start, as it was written. */
	if (p->fd >= 0 && lseek(p->fd, 0, SEEK_SET) < 0) {
		free(all);
		return -errno;
	}
	while (got < want) {
		ssize_t k = read(p->fd, (char *)all + got, want - got);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			free(all);
			return k < 0 ? -errno : -EIO;
		}
		got += (size_t)k;
	}
	memcpy(all + p->n_file, p->mem, p->n_mem * sizeof(*all));
	*ret = all;
	*ret_n = n;
	return 0;
}

int emailset_repeats(struct emailset *s, struct emailset_repeat **ret, size_t *ret_n)
{
	struct emailset_repeat *out = NULL;
	size_t n_out = 0, cap = 0;

	for (size_t i = 0; i < s->n_parts; i++) {
		struct partition *p = &s->parts[i];
		struct entry *e;
		size_t n;
		int r;

		if (p->n_file + p->n_mem < 2)
			continue;
		r = load(p, &e, &n);
		if (r < 0) {
			free(out);
			return r;
		}
		/* Once read, the spill file and the buffer are done with. */
		if (p->fd >= 0)
			close(p->fd);
		p->fd = -1;
		free(p->mem);
		p->mem = NULL;
		p->n_mem = p->cap = 0;
		p->n_file = 0;
		qsort(e, n, sizeof(*e), entry_cmp);
		for (size_t j = 1, first = 0; j < n; j++) {
			if (e[j].hi != e[first].hi || e[j].lo != e[first].lo) {
				first = j;
				continue;
			}
			if (n_out == cap) {
				size_t ncap = cap ? cap * 2 : 64;
				struct emailset_repeat *no = realloc(out, ncap * sizeof(*no));

				if (!no) {
					free(e);
					free(out);
					return -ENOMEM;
				}
				out = no;
				cap = ncap;
			}
			out[n_out++] = (struct emailset_repeat){e[j].line, e[first].line};
		}
		free(e);
	}
	if (n_out)
		qsort(out, n_out, sizeof(*out), repeat_cmp);
	*ret = out;
	*ret_n = n_out;
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
