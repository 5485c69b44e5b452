/* What a folder is importing now, by content: files of the same content must not be imported
 * twice, so while one may upload it (the owner) or has uploaded it and is being followed, the
 * others wait for its outcome; the registry hands the waiters back when something changes, for
 * the caller to wake (each then asks the ledger again). Pure (uthash, utlist); O(1) per call but
 * for inflight_take_waiters, O(waiters). */
#ifndef RDD_INFLIGHT_H
#define RDD_INFLIGHT_H

#include <stdbool.h>
#include <uthash.h>

struct inflight;

/* Embedded in what waits (a job): on one content's list at most. */
struct inflight_waiter {
	struct inflight_waiter *prev, *next;
	struct inflight *on; /* the content waited for; NULL: not waiting */
};

/* One content (sha256) in flight in a folder. */
struct inflight {
	UT_hash_handle hh;
	const void *owner;   /* what may upload it now, or NULL */
	unsigned n_uploaded; /* holders resumed with their import made: they go before the owner */
	struct inflight_waiter *waiters;
	char sha256[65];
};

/* A folder's contents in flight; zero-initialized is empty. */
struct inflight_set {
	struct inflight *by_sha256;
};

struct inflight *inflight_find(struct inflight_set *s, const char *sha256);
/* The entry of SHA256, added when there is none; NULL when out of memory. */
struct inflight *inflight_get(struct inflight_set *s, const char *sha256);

/* W waits for IN's outcome (W waits for nothing else). */
void inflight_wait(struct inflight *in, struct inflight_waiter *w);
/* W waits no longer; its entry goes if nobody holds it or waits for it. */
void inflight_unwait(struct inflight_set *s, struct inflight_waiter *w);

/* IN's waiters, taken off it (each with ->on NULL), as a list the caller walks with
 * inflight_next (it may make them wait again, on IN too, meanwhile); then the caller calls
 * inflight_drop_unused. */
struct inflight_waiter *inflight_take_waiters(struct inflight *in);
struct inflight_waiter *inflight_next(struct inflight_waiter *w);
/* IN goes if nobody holds it or waits for it. */
void inflight_drop_unused(struct inflight_set *s, struct inflight *in);

/* Frees every entry (waiters are left as they are: the caller has ended them). */
void inflight_clear(struct inflight_set *s);

#endif
