#include "outbox.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "events.h"
#include "hookrun.h"
#include "http.h"
#include "ledger.h"
#include "ledgerq.h"
#include "log.h"
#include "metrics.h"
#include "text.h"
#include "webhook.h"

/* What a receiver said, kept for the log: the start of its body. */
#define OUTBOX_ANSWER_KEEP 200

/* Where a queue is. One thing at a time: asking the ledger, sending, recording how it went,
 * or waiting (for the event's next attempt, or for news). */
enum ob_state { OB_IDLE, OB_ASKING, OB_SENDING, OB_SETTLING, OB_WAITING, OB_CLOSED };

struct ob_call;

/* One receiver's queue: a webhook's (W) or a hook's (H). */
struct ob_queue {
	struct outbox *o;
	const struct config_notify *to; /* W's or H's */
	const struct config_webhook *w;
	const struct config_hook *h;
	const char *what;               /* "webhook" or "hook", for the log */
	struct hookrun *run;            /* H's command running */
	char channel[sizeof(EVENTS_WEBHOOK_PREFIX) + CONFIG_WEBHOOK_NAME_MAX];
	struct metrics_webhook *m;
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
	struct ob_queue *queues;
	size_t n_queues;
	unsigned open_handles;
	char user_agent[64];
};

/* A ledger call of QUEUE (NULL once the queue is gone): what it asks and what it got. */
struct ob_call {
	struct ob_queue *q;
	char channel[sizeof(EVENTS_WEBHOOK_PREFIX) + CONFIG_WEBHOOK_NAME_MAX];
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

/* An attempt at Q's event ended: delivered (OK), or WHY not. */
static void attempt_done(struct ob_queue *q, bool ok, const char *why)
{
	const struct config_notify *to = q->to;
	int64_t now = wall_ms();
	unsigned attempts = q->row.attempts + 1;

	if (ok) {
		if (q->failing)
			log_info("%s '%s': %s again (after %u failed attempt%s)", q->what, to->name,
				 q->w ? "its receiver takes events" : "its command works", q->failing,
				 q->failing == 1 ? "" : "s");
		q->failing = 0;
		metrics_webhook_delivered(q->m);
		log_debug("%s '%s': delivered %s (%s)", q->what, to->name, q->row.ev.msg_id,
			  q->row.ev.type);
		queue_settle(q, LEDGER_OUTBOX_DELIVERED, 0, NULL);
		return;
	}
	metrics_webhook_failed_attempt(q->m);
	if (now - q->row.ev.created_at_ms >= (int64_t)to->give_up_ms) {
		log_error("%s '%s': gave up event %s (%s) after %u attempts over %" PRIu64
			  " h; the last: %s",
			  q->what, to->name, q->row.ev.msg_id, q->row.ev.type, attempts,
			  to->give_up_ms / 3600000, why);
		metrics_webhook_dropped(q->m);
		queue_settle(q, LEDGER_OUTBOX_DROPPED, 0, why);
		return;
	}
	if (q->failing++ == 0)
		log_warning("%s '%s': cannot deliver %s: %s; its events wait in the ledger, in order, "
			    "and are tried again (first in %" PRIu64 " s, then less often, up to "
			    "every %" PRIu64 " s, for %" PRIu64 " h)",
			    q->what, to->name, q->w ? "to its url" : "by running its command", why,
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

/* Sends Q's event: a POST of its payload with the three Standard Webhooks headers. */
static void queue_send(struct ob_queue *q)
{
	if (q->h) {
		queue_run(q);
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
	metrics_webhook_pending(q->m, c->pending,
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

/* ---- the outbox ---- */

int outbox_new(uv_loop_t *loop, const struct config *cfg, struct ledgerq *lq, struct http *http,
	       struct metrics *m, struct outbox **ret)
{
	struct outbox *o = calloc(1, sizeof(*o));

	if (!o)
		return -ENOMEM;
	o->queues = calloc(cfg->n_webhooks + cfg->n_hooks + 1, sizeof(*o->queues));
	if (!o->queues) {
		free(o);
		return -ENOMEM;
	}
	o->loop = loop;
	o->cfg = cfg;
	o->lq = lq;
	o->http = http;
	snprintf(o->user_agent, sizeof(o->user_agent), "resend-dropd/%s", RDD_VERSION);
	o->n_queues = cfg->n_webhooks + cfg->n_hooks;
	for (size_t i = 0; i < o->n_queues; i++) {
		struct ob_queue *q = &o->queues[i];
		bool web = i < cfg->n_webhooks;

		q->o = o;
		if (web) {
			q->w = &cfg->webhooks[i];
			q->to = &q->w->n;
			q->what = "webhook";
			/* Webhooks are counted in the metrics; a hook's runs are in the log. */
			q->m = m ? metrics_webhook(m, q->to->name) : NULL;
		} else {
			q->h = &cfg->hooks[i - cfg->n_webhooks];
			q->to = &q->h->n;
			q->what = "hook";
		}
		snprintf(q->channel, sizeof(q->channel), "%s%s",
			 web ? EVENTS_WEBHOOK_PREFIX : EVENTS_HOOK_PREFIX, q->to->name);
		uv_timer_init(loop, &q->timer);
		q->timer.data = q;
		o->open_handles++;
	}
	for (size_t i = 0; i < o->n_queues; i++)
		queue_ask(&o->queues[i]);
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
	}
	if (o->n_queues == 0) {
		free(o->queues);
		free(o);
	}
}
