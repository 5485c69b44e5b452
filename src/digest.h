/* The daily digest an e-mail receiver gets: what the ledger says of the 24 hours before it was
 * due, folder by folder, with the files that failed; and when the next one is due (a local
 * time of day). The payload is an event's (type "digest") in the outbox, made once a day by
 * each host of a fleet under the same msg_id, so that one is sent. Pure but for the ledger
 * read, which runs on the ledger's thread. */
#ifndef RDD_DIGEST_H
#define RDD_DIGEST_H

#include <stdint.h>

#include "config.h"
#include "ledger.h"

#define DIGEST_EVENT_TYPE "digest"
/* The failures a digest names; more are counted. */
#define DIGEST_FAILURES_LISTED 20

/* The first time after NOW_MS (wall clock, ms) that the local clock says MINUTE minutes after
 * midnight (0..1439), by the TZ of the process; DST gaps and repeats as mktime takes them. */
int64_t digest_next_ms(int64_t now_ms, int minute);

/* The digest due at DUE_MS for receiver N (its folders) from ledger L: the files that finished
 * in the 24 hours before DUE_MS, and those still in hand. *RET is the event's JSON payload
 * (cJSON_free); HOST is this host in a fleet (NULL: none). A negative errno. */
int digest_collect(struct ledger *l, const struct config_notify *n, const char *host,
		   int64_t due_ms, char **ret);

#endif
