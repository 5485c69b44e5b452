/* The outbox's deliverer: each receiver's queue of events (ledger.h: recorded with the file's
 * end that made them) is delivered in order, one event at a time per receiver: a webhook's
 * POSTed and signed as the Standard Webhooks specification says (webhook.h), a hook's command
 * run (hookrun.h), an e-mail receiver's sent through Resend (mail.h; POST /emails under the
 * event's msg_id as Idempotency-Key, each request a token of the rate budget the uploads
 * spend). Tried again with a backoff until the receiver takes it or give_up_after_h has passed.
 * At least once: an event leaves its queue only once its receiver's 2xx answer (exit status
 * 0) is recorded, so a stop, a crash or a receiver down for hours loses none; an event is sent
 * twice only when an attempt's answer never came (or came as the daemon stopped). In a fleet
 * the queues are shared, and a host takes a queue's oldest event under a lease, so one host at
 * a time sends it.
 *
 * Every read and write of a queue goes through the ledger's thread (ledgerq_call); requests go
 * through http.c. A receiver that fails is said once (and once more when it works again), and
 * counted in the metrics. Loop thread. */
#ifndef RDD_OUTBOX_H
#define RDD_OUTBOX_H

#include <uv.h>

struct config;
struct http;
struct ledgerq;
struct metrics;
struct outbox;
struct pacer;
struct resend_client;

/* What e-mail receivers need: the Resend client (the daemon's key) and the engine's pacer,
 * the rate budget their requests share with the uploads and the follow-up. */
struct outbox_api {
	struct resend_client *client;
	struct pacer *pacer;
};

/* A queue with nothing due is looked at again this often (a fleet's other hosts record events
 * too; this host's own are announced by outbox_kick). */
#define OUTBOX_IDLE_POLL_MS 5000

/* CFG (its receivers), LQ, HTTP, API's client and pacer (needed with e-mail receivers, else
 * API may be NULL) and M must outlive the outbox. Starts looking at once; each e-mail
 * receiver with a digest records one in its queue every day at its time. */
int outbox_new(uv_loop_t *loop, const struct config *cfg, struct ledgerq *lq, struct http *http,
	       const struct outbox_api *api, struct metrics *m, struct outbox **ret);
/* Events may have been recorded (a file ended): idle queues look now. */
void outbox_kick(struct outbox *o);
/* Stops: an attempt in flight is aborted (its event stays in its queue, for the next start),
 * ledger calls are cancelled; O is freed once its handles are closed. NULL is fine. */
void outbox_close(struct outbox *o);

#endif
