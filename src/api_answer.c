/* What an answer of the Resend API means: its class, the rate budget, the scrub. */
#include "api_answer.h"

#include <stdio.h>

#include "log.h"
#include "pacer.h"
#include "resend_client.h"
#include "scrub.h"

enum resend_class api_answer_classify(struct pacer *pacer, const char *api_key,
				      struct resend_call *call, struct resend_error *err)
{
	const char *terr = resend_call_transport_error(call);
	size_t len;
	const char *body = resend_call_body(call, &len);
	const char *retry_after = resend_call_header(call, "retry-after");
	const struct ratelimit_headers h = {
		.limit = resend_call_header(call, "ratelimit-limit"),
		.remaining = resend_call_header(call, "ratelimit-remaining"),
		.reset = resend_call_header(call, "ratelimit-reset"),
		.retry_after = retry_after,
	};
	enum resend_class cls = RESEND_RETRY;

	if (terr) {
		err->status = 0;
		snprintf(err->message, sizeof(err->message), "%s", terr);
	} else {
		cls = resend_classify(resend_call_status(call), body, len, err);
	}
	if (cls == RESEND_RATE_LIMITED) {
		uint64_t ms = pacer_note_refusal(pacer, &h);

		/* Said when a row of refusals begins, not for each request it holds back. */
		if (pacer->rl.refusals == 1)
			log_event(LOG_LEVEL_INFO,
				  &(struct log_fields){.message_id = LOG_ID_RATE_LIMITED},
				  "Resend's rate limit was reached (HTTP 429%s%s): no request goes out "
				  "for %.1f s; a wait is not an attempt, and no file fails for it",
				  retry_after ? ", retry-after " : "", retry_after ? retry_after : "",
				  (double)ms / 1000);
	} else {
		unsigned row = pacer->rl.refusals;

		if (row > 0)
			log_debug("requests are answered again after %u refusal%s for the rate limit",
				  row, row == 1 ? "" : "s");
		pacer_note_response(pacer, &h);
	}
	/* What the far end said goes to log lines and reports from here: a server (or a proxy)
	 * that echoes the Authorization header must not put the key there. */
	scrub_secrets(err->name, sizeof(err->name), api_key);
	scrub_secrets(err->message, sizeof(err->message), api_key);
	return cls;
}

