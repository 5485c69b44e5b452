#include "inflight.h"

#include <stdlib.h>
#include <string.h>
#include <utlist.h>

struct inflight *inflight_find(struct inflight_set *s, const char *sha256)
{
	struct inflight *in;

	HASH_FIND_STR(s->by_sha256, sha256, in);
	return in;
}

struct inflight *inflight_get(struct inflight_set *s, const char *sha256)
{
	struct inflight *in = inflight_find(s, sha256);

	if (!in && (in = calloc(1, sizeof(*in)))) {
		strncpy(in->sha256, sha256, sizeof(in->sha256) - 1);
		HASH_ADD_STR(s->by_sha256, sha256, in);
	}
	return in;
}

void inflight_wait(struct inflight *in, struct inflight_waiter *w)
{
	DL_APPEND(in->waiters, w);
	w->on = in;
}

void inflight_drop_unused(struct inflight_set *s, struct inflight *in)
{
	if (!in->owner && !in->n_uploaded && !in->waiters) {
		HASH_DEL(s->by_sha256, in);
		free(in);
	}
}

void inflight_unwait(struct inflight_set *s, struct inflight_waiter *w)
{
	struct inflight *in = w->on;

	if (!in)
		return;
	DL_DELETE(in->waiters, w);
	w->on = NULL;
	inflight_drop_unused(s, in);
}

/* The taken list is singly linked through ->next (->prev of each is NULL): the waiters may be
 * put on a content's list again while the caller walks it, so the walk reads ->next first. */
struct inflight_waiter *inflight_take_waiters(struct inflight *in)
{
	struct inflight_waiter *list = in->waiters, *w;

	in->waiters = NULL;
	for (w = list; w; w = w->next) {
		w->on = NULL;
		w->prev = NULL;
	}
	return list;
}

struct inflight_waiter *inflight_next(struct inflight_waiter *w)
{
	return w->next;
}

void inflight_clear(struct inflight_set *s)
{
	struct inflight *in, *tmp;

	HASH_ITER(hh, s->by_sha256, in, tmp) {
		HASH_DEL(s->by_sha256, in);
		free(in);
	}
}
