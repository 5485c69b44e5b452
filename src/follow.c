/* Following imports to their end, many in one request (follow.h). */
#include "follow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "api_answer.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "resend_client.h"

#define FOLLOW_FIRST_MS 500
#define FOLLOW_MAX_MS 30000
/* Asked a little early rather than in a request of its own a moment later. */
#define FOLLOW_SLACK_MS 250
#define FOLLOW_PAGE 100
#define FOLLOW_MAX_PAGES 10
/* A page whose last import was made this long before the oldest one asked about ends the
 * paging: the clocks of this host and of Resend may differ by that much. */
#define FOLLOW_SKEW_MS (10 * 60 * 1000)

struct follow_import {
	char id[64];
	UT_hash_handle hh;
	struct follow_entry *entries; /* utlist */
	struct dueq_entry due;
	uint64_t delay_ms;     /* the last wait, doubling */
	int64_t added_wall_ms; /* when it was first followed (the paging's end) */
	bool by_id;            /* the list did not show it: asked by id from now on */
	bool asked;            /* in the request in flight */
};

#define IMPORT_OF_DUE(d) ((struct follow_import *)((char *)(d) - offsetof(struct follow_import, due)))

static int64_t follow_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void follow_init(struct follower *fw, uv_loop_t *loop, struct pacer *pacer,
		 struct resend_client *api, const struct config *cfg,
		 const struct follow_events *ev)
{
	*fw = (struct follower){.loop = loop, .pacer = pacer, .api = api, .cfg = cfg, .ev = *ev};
	dueq_init(&fw->due);
	pacer_entry_init(&fw->se, 0);
}

bool follow_owns(const struct follower *fw, const struct pacer_entry *e)
{
	return e == &fw->se;
}

/* The follower's entry waits for the first import due (nothing while a request is in flight:
 * its answer arms it again). */
static void follow_arm(struct follower *fw)
{
	const struct dueq_entry *first = dueq_peek(&fw->due);
	uint64_t now = uv_now(fw->loop);

	if (fw->stopped || fw->call || fw->se.poll_queued)
		return;
	pacer_cancel(fw->pacer, &fw->se);
	if (!first)
		return;
	if (first->due <= now + FOLLOW_SLACK_MS)
		pacer_poll(fw->pacer, &fw->se);
	else if (pacer_at(fw->pacer, &fw->se, first->due - now) < 0)
		log_error("out of memory: imports are not followed until the next one is");
}

/* IMP is asked again after its next wait. */
static void follow_later(struct follower *fw, struct follow_import *imp)
{
	imp->delay_ms = imp->delay_ms ? imp->delay_ms * 2 : FOLLOW_FIRST_MS;
	if (imp->delay_ms > FOLLOW_MAX_MS)
		imp->delay_ms = FOLLOW_MAX_MS;
	dueq_remove(&fw->due, &imp->due);
	if (dueq_push(&fw->due, &imp->due, uv_now(fw->loop) + imp->delay_ms) < 0)
		log_error("out of memory: import %s is not followed for now", imp->id);
}

int follow_add(struct follower *fw, struct follow_entry *e, const char *id)
{
	struct follow_import *imp;

	HASH_FIND_STR(fw->imports, id, imp);
	if (!imp) {
		imp = calloc(1, sizeof(*imp));
		if (!imp || strlen(id) >= sizeof(imp->id)) {
			free(imp);
			return -ENOMEM;
		}
		strcpy(imp->id, id);
		dueq_entry_init(&imp->due);
		imp->added_wall_ms = follow_wall_ms();
		if (dueq_push(&fw->due, &imp->due, uv_now(fw->loop) + FOLLOW_FIRST_MS) < 0) {
			free(imp);
			return -ENOMEM;
		}
		imp->delay_ms = FOLLOW_FIRST_MS;
		HASH_ADD_STR(fw->imports, id, imp);
		fw->n_imports++;
	}
	DL_APPEND(imp->entries, e);
	e->imp = imp;
	follow_arm(fw);
	return 0;
}

void follow_remove(struct follower *fw, struct follow_entry *e)
{
	struct follow_import *imp = e->imp;

	if (!imp)
		return;
	DL_DELETE(imp->entries, e);
	e->imp = NULL;
	e->prev = e->next = NULL;
	if (imp->entries)
		return;
	for (size_t i = 0; i < fw->n_asked; i++)
		if (fw->asked[i] == imp)
			fw->asked[i] = NULL;
	dueq_remove(&fw->due, &imp->due);
	HASH_DEL(fw->imports, imp);
	fw->n_imports--;
	free(imp);
	if (!fw->n_imports && !fw->call)
		pacer_cancel(fw->pacer, &fw->se);
}

/* Tells every entry of IMP what R says. An entry may remove itself (and IMP with its last). */
static void follow_tell(struct follower *fw, struct follow_import *imp,
			const struct follow_result *r)
{
	struct follow_entry *e = imp->entries, *next;
	struct follow_result one = *r;
	bool last;

	while (e) {
		next = e->next;
		/* The last entry's removal frees IMP: its NEXT is not read after. */
		last = !next;
		one.first = !fw->told;
		fw->told = true;
		fw->ev.answered(e, &one, fw->ev.data);
		if (last)
			break;
		e = next;
	}
}

static int follow_ask(struct follower *fw, struct follow_import *imp)
{
	struct follow_import **grown;
	struct follow_entry *e, *next;

	if (fw->n_asked == fw->cap_asked) {
		size_t cap = fw->cap_asked ? fw->cap_asked * 2 : 16;

		grown = realloc(fw->asked, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		fw->asked = grown;
		fw->cap_asked = cap;
	}
	fw->asked[fw->n_asked++] = imp;
	imp->asked = true;
	dueq_remove(&fw->due, &imp->due);
	for (e = imp->entries; e; e = next) {
		next = e->next;
		fw->ev.asked(e, fw->ev.data);
	}
	return 0;
}

static void follow_answer_cb(struct resend_call *call, void *data);

/* A token: one request for what is due. */
void follow_pacer_poll(struct follower *fw)
{
	uint64_t now = uv_now(fw->loop);
	struct follow_import *imp, *tmp, *one = NULL;
	int r;

	if (fw->stopped || fw->call)
		return;
	if (!fw->pages) {
		/* Asked by id first: one that the list did not show. */
		HASH_ITER(hh, fw->imports, imp, tmp) {
			if (!dueq_queued(&imp->due) || imp->due.due > now + FOLLOW_SLACK_MS)
				continue;
			if (!one || (imp->by_id && !one->by_id))
				one = imp;
		}
		if (!one) {
			follow_arm(fw);
			return;
		}
		fw->n_asked = 0;
		fw->listing = !one->by_id && fw->n_imports >= 2;
		if (fw->listing) {
			HASH_ITER(hh, fw->imports, imp, tmp) {
				if (dueq_queued(&imp->due) && imp->due.due <= now + FOLLOW_SLACK_MS &&
				    !imp->by_id && follow_ask(fw, imp) < 0)
					break;
			}
		} else if (follow_ask(fw, one) < 0) {
			follow_arm(fw);
			return;
		}
	}
	if (fw->listing)
		r = resend_client_list_imports(fw->api, FOLLOW_PAGE, fw->after, follow_answer_cb, fw,
					       &fw->call);
	else
		r = resend_client_get_import(fw->api, fw->asked[0]->id, follow_answer_cb, fw,
					     &fw->call);
	if (r < 0) {
		struct follow_result res = {.cls = RESEND_RETRY};

		fw->told = false;
		snprintf(res.err.message, sizeof(res.err.message), "cannot ask: %s", strerror(-r));
		fw->call = NULL;
		for (size_t i = 0; i < fw->n_asked; i++) {
			if ((imp = fw->asked[i])) {
				imp->asked = false;
				follow_later(fw, imp);
				follow_tell(fw, imp, &res);
			}
		}
		fw->n_asked = 0;
		fw->pages = 0;
		follow_arm(fw);
	}
}

void follow_pacer_due(struct follower *fw)
{
	if (!fw->stopped && !fw->call)
		pacer_poll(fw->pacer, &fw->se);
}

static bool follow_final(const struct resend_import *imp)
{
	return imp->state == RESEND_IMPORT_COMPLETED || imp->state == RESEND_IMPORT_FAILED;
}

/* A page of the list: what it shows of the imports followed (asked or not: an import that
 * ended is news for its files whenever it is seen). True when another page is wanted. */
static bool follow_page(struct follower *fw, const struct resend_import_list *l)
{
	struct follow_result res = {.cls = RESEND_OK, .have = true};
	int64_t oldest = INT64_MAX, last_created = -1;
	bool missing = false;

	for (size_t i = 0; i < l->n; i++) {
		struct follow_import *imp;

		HASH_FIND_STR(fw->imports, l->items[i].id, imp);
		if (!imp)
			continue;
		res.import = l->items[i].import;
		if (imp->asked) {
			imp->asked = false;
			for (size_t k = 0; k < fw->n_asked; k++)
				if (fw->asked[k] == imp)
					fw->asked[k] = NULL;
			if (!follow_final(&res.import))
				follow_later(fw, imp);
			follow_tell(fw, imp, &res);
		} else if (follow_final(&res.import)) {
			follow_tell(fw, imp, &res);
		}
	}
	if (l->n)
		last_created = resend_time_ms(l->items[l->n - 1].import.created_at);
	for (size_t k = 0; k < fw->n_asked; k++) {
		if (fw->asked[k]) {
			missing = true;
			if (fw->asked[k]->added_wall_ms < oldest)
				oldest = fw->asked[k]->added_wall_ms;
		}
	}
	if (!missing)
		return false;
	/* Further back, while the page is not older than every import still looked for. */
	if (l->has_more && l->n && fw->pages + 1 < FOLLOW_MAX_PAGES &&
	    (last_created < 0 || last_created >= oldest - FOLLOW_SKEW_MS)) {
		snprintf(fw->after, sizeof(fw->after), "%s", l->items[l->n - 1].id);
		return true;
	}
	return false;
}

static void follow_answer_cb(struct resend_call *call, void *data)
{
	struct follower *fw = data;
	struct follow_result res = {0};
	size_t len;
	const char *body = resend_call_body(call, &len);
	bool more = false;

	fw->call = NULL;
	fw->told = false;
	res.cls = api_answer_classify(fw->pacer, fw->cfg->api_key, call, &res.err);
	metrics_api_request(fw->metrics, fw->listing ? METRICS_LIST_IMPORTS : METRICS_GET_IMPORT,
			    resend_call_status(call));
	if (fw->listing) {
		struct resend_import_list l = {0};

		if (res.cls == RESEND_OK && resend_parse_import_list(body, len, &l) == 0) {
			more = follow_page(fw, &l);
			res = (struct follow_result){.cls = RESEND_OK};
		} else if (res.cls == RESEND_OK || res.cls == RESEND_PERMANENT) {
			/* A list this daemon cannot read: each import is asked by id instead. */
			log_debug("listing imports failed (HTTP %ld): asking by id",
				  resend_call_status(call));
			res = (struct follow_result){.cls = RESEND_OK};
		}
		resend_import_list_clear(&l);
	} else if (res.cls == RESEND_OK) {
		res.have = resend_parse_import(body, len, &res.import) == 0;
		if (!res.have) {
			res.cls = RESEND_RETRY;
			snprintf(res.err.message, sizeof(res.err.message),
				 "the answer is not an import");
		}
	}
	resend_call_free(call);
	if (more) {
		fw->pages++;
		pacer_poll(fw->pacer, &fw->se);
		return;
	}
	fw->pages = 0;
	fw->after[0] = '\0';
	/* Whatever the answer said of the imports asked and not yet told. */
	for (size_t k = 0; k < fw->n_asked; k++) {
		struct follow_import *imp = fw->asked[k];

		if (!imp)
			continue;
		fw->asked[k] = NULL;
		imp->asked = false;
		if (fw->listing && res.cls == RESEND_OK) {
			/* Not in the pages read (or the list could not be read): asked by id, at
			 * once and from now on. */
			imp->by_id = true;
			dueq_remove(&fw->due, &imp->due);
			if (dueq_push(&fw->due, &imp->due, uv_now(fw->loop)) < 0)
				log_error("out of memory: import %s is not followed for now", imp->id);
		} else if (!(res.have && follow_final(&res.import)) && res.cls != RESEND_PERMANENT) {
			follow_later(fw, imp);
		}
		follow_tell(fw, imp, &res);
	}
	fw->n_asked = 0;
	follow_arm(fw);
}

void follow_stop(struct follower *fw)
{
	fw->stopped = true;
	if (fw->call) {
		resend_call_free(fw->call);
		fw->call = NULL;
	}
	if (fw->pacer) /* NULL: never initialized (an engine that could not be made) */
		pacer_cancel(fw->pacer, &fw->se);
}

void follow_free(struct follower *fw)
{
	struct follow_import *imp, *tmp;

	follow_stop(fw);
	HASH_ITER(hh, fw->imports, imp, tmp) {
		HASH_DEL(fw->imports, imp);
		free(imp);
	}
	dueq_free(&fw->due);
	free(fw->asked);
	fw->asked = NULL;
}
