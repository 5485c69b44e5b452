#include "outbox.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_answer.h"
#include "config.h"
#include "digest.h"
#include "events.h"
#include "hookrun.h"
#include "http.h"
#include "ledger.h"
#include "ledgerq.h"
#include "log.h"
#include "mail.h"
#include "metrics.h"
#include "pacer.h"
#include "resend.h"
#include "resend_client.h"
#include "text.h"
#include "webhook.h"

/* What a receiver said, kept for the log: the start of its body. */
#define OUTBOX_ANSWER_KEEP 200

/* Where a queue is. One thing at a time: asking the ledger, sending, recording how it went,
 * or waiting (for the event's next attempt, or for news). */
enum ob_state { OB_IDLE, OB_ASKING, OB_SENDING, OB_SETTLING, OB_WAITING, OB_CLOSED };

struct ob_call;

#define OB_CHANNEL_MAX (sizeof(EVENTS_WEBHOOK_PREFIX) + CONFIG_WEBHOOK_NAME_MAX)

/* One receiver's queue: a webhook's (W), a hook's (H) or an e-mail receiver's (E). */
struct ob_queue {
	struct outbox *o;
	const struct config_notify *to; /* W's, H's or E's */
	const struct config_webhook *w;
	const struct config_hook *h;
	const struct config_email *e;
	const char *what;               /* "webhook", "hook" or "e-mail", for the log */
	struct hookrun *run;            /* H's command running */
	struct pacer_entry token;       /* E's wait for a request of the team's rate budget */
	struct resend_call *api_call;   /* E's POST /emails */
	uv_timer_t digest_timer;        /* E's daily digest (digest_minute >= 0) */
	int64_t digest_due_ms;
	void *digest_call;              /* the digest's ledger call in flight */
	char channel[OB_CHANNEL_MAX];
	struct metrics_receiver *m;
	enum ob_state state;
	uv_timer_t timer;
	void *call;                  /* the ledger call in flight, for ledgerq_cancel */
	struct ledger_outbox_row row; /* the event being sent */
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char answer[OUTBOX_ANSWER_KEEP + 1];
	size_t answer_len;
	char errbuf[CURL_ERROR_SIZE];
	bool kicked;          /* news came while it was busy: look again at once after */
	unsigned failing;     /* attempts failed in a row (said at the first; 0: working) */
};

struct outbox {
	uv_loop_t *loop;
	const struct config *cfg;
	struct ledgerq *lq;
	struct http *http;
	struct outbox_api api;
	struct metrics *metrics;
	struct ob_queue *queues;
	size_t n_queues;
	unsigned open_handles;
	char user_agent[64];
};

/* A ledger call of QUEUE (NULL once the queue is gone): what it asks and what it got. */
struct ob_call {
	struct ob_queue *q;
	char channel[OB_CHANNEL_MAX];
	int64_t now_ms;
	/* outbox_next */
	int result;
	struct ledger_outbox_row row;
	int64_t next_at_ms, oldest_ms;
	uint64_t pending;
	/* outbox_settle */
	int64_t id;
	enum ledger_outbox_outcome how;
	unsigned attempts;
	char *error;
	/* the digest: what it reads, copied, as the call may run after the outbox is gone */
	char **folders;   /* NULL: every folder */
	size_t n_folders;
	char *host;
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void queue_ask(struct ob_queue *q);

static void queue_timer_cb(uv_timer_t *t)
{
	queue_ask(t->data);
}

static void queue_wait(struct ob_queue *q, uint64_t ms)
{
	q->state = OB_WAITING;
	uv_timer_start(&q->timer, queue_timer_cb, ms, 0);
}

/* Done with the ledger call or the request: news that came meanwhile is looked at now. */
static void queue_idle(struct ob_queue *q)
{
	if (q->kicked) {
		q->kicked = false;
		queue_ask(q);
		return;
	}
	q->state = OB_IDLE;
	uv_timer_start(&q->timer, queue_timer_cb, OUTBOX_IDLE_POLL_MS, 0);
}

static void call_release(void *data)
{
	struct ob_call *c = data;

	ledger_outbox_row_clear(&c->row);
	free(c->error);
	for (size_t i = 0; i < c->n_folders; i++)
		free(c->folders[i]);
	free(c->folders);
	free(c->host);
	free(c);
}

/* ---- recording how an attempt went ---- */

static int settle_work(struct ledger *l, void *data)
{
	struct ob_call *c = data;

	return ledger_outbox_settle(l, c->id, c->how, c->attempts, c->next_at_ms, c->error,
				    c->now_ms);
}

static void settle_done(void *data)
{
	struct ob_call *c = data;
	struct ob_queue *q = c->q;

	q->call = NULL;
	/* The next event, or this one again (its next attempt's time comes with it). */
	queue_ask(q);
}

static void queue_settle(struct ob_queue *q, enum ledger_outbox_outcome how, int64_t next_at_ms,
			 const char *error)
{
	struct ob_call *c = calloc(1, sizeof(*c));

	q->state = OB_SETTLING;
	if (c) {
		c->q = q;
		c->id = q->row.id;
		c->how = how;
		c->attempts = q->row.attempts + 1;
		c->next_at_ms = next_at_ms;
		c->now_ms = wall_ms();
		c->error = error ? strdup(error) : NULL;
	}
	ledger_outbox_row_clear(&q->row);
	if (!c || ledgerq_call(q->o->lq, settle_work, settle_done, call_release, c,
			       &q->call) < 0) {
		/* Out of memory: the event stays as it was in its queue, tried again later. */
		if (c)
			call_release(c);
		log_error("%s '%s': out of memory recording a delivery", q->what, q->to->name);
		queue_wait(q, q->to->retry_first_ms);
	}
}

/* ---- the request ---- */

static size_t answer_cb(char *ptr, size_t size, size_t n, void *data)
{
	struct ob_queue *q = data;
	size_t len = size * n, room = OUTBOX_ANSWER_KEEP - q->answer_len;

	if (room) {
		size_t k = len < room ? len : room;

		memcpy(q->answer + q->answer_len, ptr, k);
		q->answer_len += k;
		q->answer[q->answer_len] = '\0';
	}
	return len;
}

static void request_free(struct ob_queue *q)
{
	if (q->easy)
		curl_easy_cleanup(q->easy);
	q->easy = NULL;
	curl_slist_free_all(q->headers);
	q->headers = NULL;
	free(q->body);
	q->body = NULL;
}

static uint64_t backoff_ms(const struct config_notify *w, unsigned attempts)
{
	uint64_t d = w->retry_first_ms;

	for (unsigned i = 1; i < attempts && d < w->retry_max_ms; i++)
		d *= 2;
	return d < w->retry_max_ms ? d : w->retry_max_ms;
}

/* Q's event is given up after ATTEMPTS: said with WHY, counted, recorded. */
static void queue_drop(struct ob_queue *q, unsigned attempts, const char *why, const char *when)
{
	log_error("%s '%s': gave up event %s (%s) after %u attempt%s%s; the last: %s", q->what,
		  q->to->name, q->row.ev.msg_id, q->row.ev.type, attempts, attempts == 1 ? "" : "s",
		  when, why);
	metrics_receiver_dropped(q->m);
	queue_settle(q, LEDGER_OUTBOX_DROPPED, 0, why);
}

/* An attempt at Q's event ended: delivered (OK), or WHY not. */
static void attempt_done(struct ob_queue *q, bool ok, const char *why)
{
	const struct config_notify *to = q->to;
	int64_t now = wall_ms();
	unsigned attempts = q->row.attempts + 1;
	const char *works = q->w ? "its receiver takes events"
			    : q->h ? "its command works" : "Resend takes its e-mails";

	if (ok) {
		if (q->failing)
			log_info("%s '%s': %s again (after %u failed attempt%s)", q->what, to->name,
				 works, q->failing, q->failing == 1 ? "" : "s");
		q->failing = 0;
		metrics_receiver_delivered(q->m);
		log_debug("%s '%s': delivered %s (%s)", q->what, to->name, q->row.ev.msg_id,
			  q->row.ev.type);
		queue_settle(q, LEDGER_OUTBOX_DELIVERED, 0, NULL);
		return;
	}
	metrics_receiver_failed_attempt(q->m);
	if (now - q->row.ev.created_at_ms >= (int64_t)to->give_up_ms) {
		char when[64];

		snprintf(when, sizeof(when), " over %" PRIu64 " h", to->give_up_ms / 3600000);
		queue_drop(q, attempts, why, when);
		return;
	}
	if (q->failing++ == 0)
		log_warning("%s '%s': cannot deliver %s: %s; its events wait in the ledger, in order, "
			    "and are tried again (first in %" PRIu64 " s, then less often, up to "
			    "every %" PRIu64 " s, for %" PRIu64 " h)",
			    q->what, to->name,
			    q->w ? "to its url" : q->h ? "by running its command" : "through Resend", why,
			    backoff_ms(to, attempts) / 1000, to->retry_max_ms / 1000,
			    to->give_up_ms / 3600000);
	else
		log_debug("%s '%s': attempt %u at %s failed: %s", q->what, to->name, attempts,
			  q->row.ev.msg_id, why);
	queue_settle(q, LEDGER_OUTBOX_RETRY, now + (int64_t)backoff_ms(to, attempts), why);
}

static void sent_cb(CURL *easy, CURLcode result, void *data)
{
	struct ob_queue *q = data;
	long status = 0;
	char why[OUTBOX_ANSWER_KEEP * 4 + 64], esc[OUTBOX_ANSWER_KEEP * 4 + 1];

	(void)easy;
	if (result == CURLE_OK)
		curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
	request_free(q);
	if (result == CURLE_OK && status >= 200 && status < 300) {
		attempt_done(q, true, NULL);
		return;
	}
	if (result != CURLE_OK) {
		snprintf(why, sizeof(why), "%s", q->errbuf[0] ? q->errbuf : curl_easy_strerror(result));
	} else {
		text_escape(esc, sizeof(esc), q->answer);
		snprintf(why, sizeof(why), "HTTP %ld%s%s", status, esc[0] ? ": " : "", esc);
	}
	attempt_done(q, false, why);
}

static void ran_cb(bool ok, const char *why, const char *output, void *data)
{
	struct ob_queue *q = data;
	char msg[HOOKRUN_OUTPUT_KEEP * 4 + 160];

	q->run = NULL;
	if (ok) {
		log_info("hook '%s': ran for %s (%s of '%s'): exit status 0", q->to->name,
			 q->row.ev.msg_id, q->row.ev.type, q->row.ev.channel);
		attempt_done(q, true, NULL);
		return;
	}
	snprintf(msg, sizeof(msg), "%s%s%s", why, output[0] ? "; it said: " : "", output);
	attempt_done(q, false, msg);
}

/* Runs H's command for Q's event. */
static void queue_run(struct ob_queue *q)
{
	char why[400];

	q->state = OB_SENDING;
	if (hookrun_start(q->o->loop, q->h, &q->row.ev, ran_cb, q, why, sizeof(why), &q->run) <
	    0) {
		q->run = NULL;
		attempt_done(q, false, why);
	}
}

/* ---- e-mails: POST /emails, each request a token of the team's rate budget ---- */

static void email_sent_cb(struct resend_call *call, void *data)
{
	struct ob_queue *q = data;
	struct outbox *o = q->o;
	struct resend_error err = {0};
	long status = resend_call_status(call);
	enum resend_class cls = api_answer_classify(o->api.pacer, o->cfg->api_key, call, &err);
	char why[sizeof(err.message) + sizeof(err.name) + 32];

	q->api_call = NULL;
	resend_call_free(call);
	metrics_api_request(o->metrics, METRICS_SEND_EMAIL, status);
	if (status)
		snprintf(why, sizeof(why), "HTTP %ld%s%s: %s", status, err.name[0] ? " " : "",
			 err.name, err.message);
	else
		snprintf(why, sizeof(why), "%s", err.message);
	switch (cls) {
	case RESEND_OK:
		free(q->body);
		q->body = NULL;
		attempt_done(q, true, NULL);
		return;
	case RESEND_RATE_LIMITED:
		/* The team's limit: a wait for the next token (api_answer said it), not an
		 * attempt. */
		pacer_poll(o->api.pacer, &q->token);
		return;
	case RESEND_PERMANENT:
		/* Resend refused the e-mail itself (a missing field, a malformed address): the
		 * same request would be refused again. A domain not verified (403) or a key
		 * refused is the team's to fix, and tried again. */
		if (status == 400 || status == 422) {
			free(q->body);
			q->body = NULL;
			metrics_receiver_failed_attempt(q->m);
			queue_drop(q, q->row.attempts + 1, why, " (Resend refused it; fix from or to)");
			return;
		}
		break;
	default:
		break;
	}
	free(q->body);
	q->body = NULL;
	attempt_done(q, false, why);
}

/* A token: the e-mail goes. */
static void email_granted(struct pacer_entry *pe)
{
	struct ob_queue *q = (struct ob_queue *)((char *)pe - offsetof(struct ob_queue, token));
	int r;

	if (q->state != OB_SENDING || !q->body)
		return;
	r = resend_client_send_email(q->o->api.client, q->body, q->row.ev.msg_id, email_sent_cb,
				     q, &q->api_call);
	if (r < 0) {
		q->api_call = NULL;
		free(q->body);
		q->body = NULL;
		attempt_done(q, false, "cannot start a request: out of memory");
	}
}

/* Q's event as an e-mail: written now, sent when the rate budget has a token for it. */
static void email_send(struct ob_queue *q)
{
	int r = mail_compose(q->e, q->row.ev.payload, q->row.ev.msg_id, &q->body);

	q->state = OB_SENDING;
	if (r == -EBADMSG) {
		queue_drop(q, q->row.attempts + 1, "its payload is not an event", "");
		return;
	}
	if (r < 0) {
		log_error("e-mail '%s': out of memory writing an e-mail", q->to->name);
		ledger_outbox_row_clear(&q->row);
		queue_wait(q, q->to->retry_first_ms);
		return;
	}
	pacer_poll(q->o->api.pacer, &q->token);
}

/* Sends Q's event: a POST of its payload with the three Standard Webhooks headers. */
static void queue_send(struct ob_queue *q)
{
	if (q->h) {
		queue_run(q);
		return;
	}
	if (q->e) {
		email_send(q);
		return;
	}
	const struct config_webhook *w = q->w;
	const struct ledger_event *ev = &q->row.ev;
	char sig[WEBHOOK_SIGNATURE_SIZE], h[160 + WEBHOOK_SIGNATURE_SIZE];
	int64_t ts = wall_ms() / 1000;
	size_t len = strlen(ev->payload);
	struct curl_slist *l;
	bool ok;

	q->answer_len = 0;
	q->answer[0] = '\0';
	q->errbuf[0] = '\0';
	q->easy = curl_easy_init();
	q->body = strdup(ev->payload);
	ok = q->easy && q->body &&
	     webhook_sign(w->secret, w->secret_len, ev->msg_id, ts, ev->payload, len, sig) == 0;
	l = NULL;
	static const char *const fixed[] = {"Content-Type: application/json", "Expect:"};
	for (size_t i = 0; ok && i < 2; i++)
		ok = (l = curl_slist_append(q->headers, fixed[i])) && (q->headers = l);
	snprintf(h, sizeof(h), "webhook-id: %s", ev->msg_id);
	ok = ok && (l = curl_slist_append(q->headers, h)) && (q->headers = l);
	snprintf(h, sizeof(h), "webhook-timestamp: %" PRId64, ts);
	ok = ok && (l = curl_slist_append(q->headers, h)) && (q->headers = l);
	snprintf(h, sizeof(h), "webhook-signature: %s", sig);
	ok = ok && (l = curl_slist_append(q->headers, h)) && (q->headers = l);
	if (!ok) {
		request_free(q);
		log_error("webhook '%s': out of memory sending an event", w->n.name);
		ledger_outbox_row_clear(&q->row);
		queue_wait(q, q->to->retry_first_ms);
		return;
	}
	curl_easy_setopt(q->easy, CURLOPT_URL, w->url);
	curl_easy_setopt(q->easy, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(q->easy, CURLOPT_USERAGENT, q->o->user_agent);
	curl_easy_setopt(q->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, (long)w->n.timeout_ms);
	curl_easy_setopt(q->easy, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(w->n.timeout_ms < 10000 ? w->n.timeout_ms : 10000));
	curl_easy_setopt(q->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(q->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(q->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->headers);
	curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, q->body);
	curl_easy_setopt(q->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, answer_cb);
	curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(q->easy, CURLOPT_ERRORBUFFER, q->errbuf);
	q->state = OB_SENDING;
	if (http_start(q->o->http, q->easy, sent_cb, q) < 0) {
		request_free(q);
		ledger_outbox_row_clear(&q->row);
		log_error("webhook '%s': cannot start a request", w->n.name);
		queue_wait(q, w->n.retry_first_ms);
	}
}

/* ---- asking the ledger for the queue's oldest event ---- */

static int next_work(struct ledger *l, void *data)
{
	struct ob_call *c = data;
	int r;

	ledger_outbox_row_clear(&c->row);
	r = ledger_outbox_next(l, c->channel, c->now_ms, &c->row, &c->next_at_ms, &c->pending,
			       &c->oldest_ms);
	c->result = r;
	/* Nothing waiting, or not yet, is an answer; a failure of the ledger is retried by
	 * ledgerq with its group. */
	return r == -ENOENT || r == -EAGAIN || r == -ENOMEM ? 0 : r;
}

static void next_done(void *data)
{
	struct ob_call *c = data;
	struct ob_queue *q = c->q;
	int64_t now = wall_ms();

	q->call = NULL;
	metrics_receiver_pending(q->m, c->pending,
				c->oldest_ms ? (double)(now - c->oldest_ms) / 1000.0 : 0);
	if (c->result == 0) {
		q->row = c->row;
		memset(&c->row, 0, sizeof(c->row));
		queue_send(q);
	} else if (c->result == -EAGAIN) {
		int64_t ms = c->next_at_ms - now;

		/* News does not make a failed event's next attempt come sooner. */
		q->kicked = false;
		queue_wait(q, ms > 0 ? (uint64_t)ms : 0);
	} else {
		if (c->result == -ENOMEM)
			log_error("%s '%s': out of memory reading its queue", q->what, q->to->name);
		queue_idle(q);
	}
}

static void queue_ask(struct ob_queue *q)
{
	struct ob_call *c;

	uv_timer_stop(&q->timer);
	c = calloc(1, sizeof(*c));
	if (!c) {
		queue_wait(q, q->to->retry_first_ms);
		return;
	}
	c->q = q;
	snprintf(c->channel, sizeof(c->channel), "%s", q->channel);
	c->now_ms = wall_ms();
	q->state = OB_ASKING;
	if (ledgerq_call(q->o->lq, next_work, next_done, call_release, c, &q->call) < 0) {
		call_release(c);
		q->call = NULL;
		queue_wait(q, q->to->retry_first_ms);
	}
}

/* ---- the daily digest: recorded in the outbox once a day, then sent like an event ---- */

static void digest_arm(struct ob_queue *q);

static int digest_work(struct ledger *l, void *data)
{
	struct ob_call *c = data;
	const struct config_notify to = {.events = CONFIG_EVENT_ALL, .folders = c->folders,
					 .n_folders = c->n_folders};
	struct ledger_event ev;
	char *payload;
	int r;

	/* Only the call's own copies: a cancelled call still runs, maybe after the outbox and
	 * its configuration are gone. */
	r = digest_collect(l, &to, c->host, c->now_ms, &payload);
	if (r < 0)
		return r == -ENOMEM ? 0 : r;
	r = events_digest(c->channel, payload, c->now_ms, &ev);
	if (r < 0)
		return 0;
	r = l->ops->outbox_add(l, &ev, 1);
	ledger_event_clear(&ev);
	c->result = r;
	return r;
}

static void digest_done(void *data)
{
	struct ob_call *c = data;
	struct ob_queue *q = c->q;

	q->digest_call = NULL;
	log_debug("e-mail '%s': the digest due at %" PRId64 " is recorded", q->to->name,
		  c->now_ms);
	digest_arm(q);
	if (q->state == OB_IDLE)
		queue_ask(q);
	else if (q->state != OB_WAITING)
		q->kicked = true;
}

/* C's copies of receiver N's folders and of HOST (NULL: none). -ENOMEM. */
static int call_copy_receiver(struct ob_call *c, const struct config_notify *n,
			      const char *host)
{
	if (host && !(c->host = strdup(host)))
		return -ENOMEM;
	if (!n->folders)
		return 0;
	c->folders = calloc(n->n_folders, sizeof(*c->folders));
	if (!c->folders)
		return -ENOMEM;
	for (; c->n_folders < n->n_folders; c->n_folders++)
		if (!(c->folders[c->n_folders] = strdup(n->folders[c->n_folders])))
			return -ENOMEM;
	return 0;
}

static void digest_timer_cb(uv_timer_t *t)
{
	struct ob_queue *q = t->data;
	struct ob_call *c = calloc(1, sizeof(*c));

	if (c) {
		c->q = q;
		snprintf(c->channel, sizeof(c->channel), "%s", q->channel);
		c->now_ms = q->digest_due_ms;
	}
	if (!c || call_copy_receiver(c, q->to, q->o->cfg->fleet.host_id) < 0 ||
	    ledgerq_call(q->o->lq, digest_work, digest_done, call_release, c, &q->digest_call) <
		    0) {
		log_error("e-mail '%s': out of memory making the daily digest; the next is "
			  "tomorrow's", q->to->name);
		if (c)
			call_release(c);
		q->digest_call = NULL;
		digest_arm(q);
	}
}

/* The next digest's timer: due at the next digest_minute of the local clock after the last
 * one (a timer that fires a moment early by the wall clock makes no second one). */
static void digest_arm(struct ob_queue *q)
{
	int64_t now = wall_ms(), from = now > q->digest_due_ms ? now : q->digest_due_ms;

	q->digest_due_ms = digest_next_ms(from, q->e->digest_minute);
	uv_timer_start(&q->digest_timer, digest_timer_cb, (uint64_t)(q->digest_due_ms - now), 0);
}

/* ---- the outbox ---- */

int outbox_new(uv_loop_t *loop, const struct config *cfg, struct ledgerq *lq, struct http *http,
	       const struct outbox_api *api, struct metrics *m, struct outbox **ret)
{
	struct outbox *o = calloc(1, sizeof(*o));
	size_t n = events_receivers(cfg);

	if (!o)
		return -ENOMEM;
	if (cfg->n_emails && (!api || !api->client || !api->pacer)) {
		free(o);
		return -EINVAL;
	}
	o->queues = calloc(n + 1, sizeof(*o->queues));
	if (!o->queues) {
		free(o);
		return -ENOMEM;
	}
	o->loop = loop;
	o->cfg = cfg;
	o->lq = lq;
	o->http = http;
	if (api)
		o->api = *api;
	o->metrics = m;
	snprintf(o->user_agent, sizeof(o->user_agent), "resend-dropd/%s", RDD_VERSION);
	o->n_queues = n;
	for (size_t i = 0; i < o->n_queues; i++) {
		struct ob_queue *q = &o->queues[i];
		const char *prefix;

		q->o = o;
		q->to = events_receiver(cfg, i, &prefix);
		if (i < cfg->n_webhooks) {
			q->w = &cfg->webhooks[i];
			q->what = "webhook";
		} else if (i < cfg->n_webhooks + cfg->n_hooks) {
			q->h = &cfg->hooks[i - cfg->n_webhooks];
			q->what = "hook";
		} else {
			q->e = &cfg->emails[i - cfg->n_webhooks - cfg->n_hooks];
			q->what = "e-mail";
			pacer_entry_init_granted(&q->token, email_granted);
		}
		snprintf(q->channel, sizeof(q->channel), "%s%s", prefix, q->to->name);
		q->m = m ? metrics_receiver(m, q->channel) : NULL;
		uv_timer_init(loop, &q->timer);
		q->timer.data = q;
		uv_timer_init(loop, &q->digest_timer);
		q->digest_timer.data = q;
		o->open_handles += 2;
	}
	for (size_t i = 0; i < o->n_queues; i++) {
		struct ob_queue *q = &o->queues[i];

		if (q->e && q->e->digest_minute >= 0)
			digest_arm(q);
		queue_ask(q);
	}
	*ret = o;
	return 0;
}

void outbox_kick(struct outbox *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->n_queues; i++) {
		struct ob_queue *q = &o->queues[i];

		if (q->state == OB_IDLE)
			queue_ask(q);
		else if (q->state != OB_WAITING)
			q->kicked = true;
	}
}

static void timer_closed_cb(uv_handle_t *h)
{
	struct ob_queue *q = h->data;
	struct outbox *o = q->o;

	if (--o->open_handles == 0) {
		free(o->queues);
		free(o);
	}
}

void outbox_close(struct outbox *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->n_queues; i++) {
		struct ob_queue *q = &o->queues[i];

		if (q->easy) {
			http_abort(o->http, q->easy);
			request_free(q);
		}
		if (q->e) {
			pacer_cancel(o->api.pacer, &q->token);
			resend_call_free(q->api_call);
			q->api_call = NULL;
			free(q->body);
			q->body = NULL;
		}
		if (q->digest_call) {
			ledgerq_cancel(o->lq, q->digest_call);
			q->digest_call = NULL;
		}
		if (q->run) {
			/* Killed: its event stays in the queue, run again at the next start. */
			hookrun_abort(q->run);
			q->run = NULL;
		}
		if (q->call) {
			/* Cancelled: DONE is never called; its RELEASE frees it. */
			ledgerq_cancel(o->lq, q->call);
			q->call = NULL;
		}
		ledger_outbox_row_clear(&q->row);
		q->state = OB_CLOSED;
		uv_close((uv_handle_t *)&q->timer, timer_closed_cb);
		uv_close((uv_handle_t *)&q->digest_timer, timer_closed_cb);
	}
	if (o->n_queues == 0) {
		free(o->queues);
		free(o);
	}
}
