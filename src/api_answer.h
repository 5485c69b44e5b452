/* What an answer of the Resend API (or its absence) means, for every kind of request: uploads,
 * the follow-up's reads and lists. One function, so that each request feeds the rate budget
 * and scrubs what the far end said the same way. */
#ifndef RDD_API_ANSWER_H
#define RDD_API_ANSWER_H

#include "resend.h"

struct pacer;
struct resend_call;

/* CALL's class, with ERR filled in from its answer (or the transport's error). Every answer's
 * rate-limit headers go to PACER whatever its status; a 429 of the rate limit holds every
 * request back (said once when a row of refusals begins). ERR's name and message are scrubbed
 * of API_KEY, for log lines and reports. */
enum resend_class api_answer_classify(struct pacer *pacer, const char *api_key,
				      struct resend_call *call, struct resend_error *err);

#endif
