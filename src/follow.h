/* Following imports to their end, many in one request. Every file whose import is followed
 * registers it here (follow_add); the follower asks Resend about the imports that are due:
 * with several followed, one page of GET /contacts/imports (100, newest first, further pages
 * with `after` while a due import is not shown) answers for all of them; an import the list
 * does not show, or the only one followed, is asked by id. Each import is asked soon after it
 * was made, then less and less often (0.5 s doubling up to 30 s), and files sharing an import
 * (a batch) share its questions. The requests take their turn and their token from the pacer,
 * like uploads. Runs on the loop. */
#ifndef RDD_FOLLOW_H
#define RDD_FOLLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dueq.h"
#include "pacer.h"
#include "resend.h"

struct config;
struct metrics;
struct resend_client;
struct resend_call;
struct follow_import;

/* Embedded in whoever follows an import (a job). */
struct follow_entry {
	struct follow_import *imp; /* NULL: following nothing */
	struct follow_entry *prev, *next;
};

/* What was learnt of an import: CLS and ERR as api_answer_classify says; with HAVE, its state
 * (RESEND_OK). RESEND_OK without HAVE: nothing new (not in the list yet), asked again later. */
struct follow_result {
	enum resend_class cls;
	struct resend_error err;
	bool have;
	struct resend_import import;
	/* The first entry told of this answer: a refusal is counted once per request. */
	bool first;
};

struct follow_events {
	/* E's import is in a request that went out. */
	void (*asked)(struct follow_entry *e, void *data);
	/* What an answer said of E's import: after `asked`, always once; without it, when a list
	 * showed the import ended. E stays registered until follow_remove. */
	void (*answered)(struct follow_entry *e, const struct follow_result *r, void *data);
	void *data;
};

struct follower {
	uv_loop_t *loop;
	struct pacer *pacer;
	struct resend_client *api;
	const struct config *cfg;
	struct metrics *metrics; /* NULL: not counted */
	struct follow_events ev;
	struct pacer_entry se;         /* the follower's turn: a due time, then a token */
	struct follow_import *imports; /* by id (uthash) */
	size_t n_imports;
	struct dueq due; /* the imports by their next question */
	struct resend_call *call;
	/* The imports the call in flight asks about (an entry is NULL once it is let go). */
	struct follow_import **asked;
	size_t n_asked, cap_asked;
	bool listing;   /* the call is a page of the list */
	bool told;      /* an entry was told of the answer being handed out */
	char after[64]; /* the next page's cursor; "": the first page */
	unsigned pages;
	bool stopped;
};

void follow_init(struct follower *fw, uv_loop_t *loop, struct pacer *pacer,
		 struct resend_client *api, const struct config *cfg,
		 const struct follow_events *ev);
/* E follows import ID (E follows nothing yet). -ENOMEM. */
int follow_add(struct follower *fw, struct follow_entry *e, const char *id);
/* E follows nothing any more. */
void follow_remove(struct follower *fw, struct follow_entry *e);
/* The pacer's events for the follower's own entry (follow_entry_of). */
bool follow_owns(const struct follower *fw, const struct pacer_entry *e);
void follow_pacer_due(struct follower *fw);
void follow_pacer_poll(struct follower *fw);
/* Asks nothing more; a request in flight is dropped. Registered entries stay (their owners
 * remove them). */
void follow_stop(struct follower *fw);
/* Frees what the follower holds; every entry must have been removed. */
void follow_free(struct follower *fw);

#endif
