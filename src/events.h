/* The notifications a file's end makes: for each webhook, hook or e-mail receiver that wants its kind of end, an event
 * for the outbox (ledger.h), recorded in the same transaction as the end itself. Pure. */
#ifndef RDD_EVENTS_H
#define RDD_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ledger.h"
#include "report.h"

/* The channels of webhook and hook NAME in the outbox. */
#define EVENTS_WEBHOOK_PREFIX "webhook:"
#define EVENTS_HOOK_PREFIX "hook:"
#define EVENTS_EMAIL_PREFIX "email:"

/* Every receiver of CFG, whatever its kind: I in [0, events_receivers(CFG)), webhooks first,
 * then hooks, then e-mail receivers; its settings, and its channel's prefix in *PREFIX (the
 * channel is the prefix and the name). */
size_t events_receivers(const struct config *cfg);
const struct config_notify *events_receiver(const struct config *cfg, size_t i,
					    const char **prefix);

/* The events of R's end at FINISHED_MS (HOST: this host in a fleet, else NULL): "file.done" or
 * "file.failed", and "rows.rejected" for a file imported without some of its rows, each for
 * every webhook and hook of CFG that wants it. *RET (NULL when none) and *RET_N are the caller's
 * (ledger_event_clear each, free). Each event's msg_id is derived from its channel, its type
 * and the file's claim, so that recording it again adds nothing. -ENOMEM. */
int events_for_file(const struct config *cfg, const struct report *r, int64_t finished_ms,
		    const char *host, struct ledger_event **ret, size_t *ret_n);

/* The events of what happened to the daemon rather than to a file: EV (folder.stuck,
 * api_key.refused, intake.paused, intake.resumed) at NOW_MS, about FOLDER (NULL: the whole
 * daemon), MESSAGE saying what and why, for every receiver of CFG that wants it; the payload
 * {type, timestamp, data: {folder, host, message}}. As events_for_file otherwise, each msg_id
 * being this occurrence's own. -ENOMEM. */
int events_for_daemon(const struct config *cfg, enum config_event ev, const char *folder,
		      const char *host, const char *message, int64_t now_ms,
		      struct ledger_event **ret, size_t *ret_n);

/* The daily digest due at DUE_MS on CHANNEL ("email:NAME"), PAYLOAD its JSON (digest.h, taken
 * over: freed here whatever happens), into *RET (ledger_event_clear). Its msg_id is the
 * channel's and the due time's: every host of a fleet makes the same, and one is recorded.
 * -ENOMEM. */
int events_digest(const char *channel, char *payload, int64_t due_ms, struct ledger_event *ret);

#endif
