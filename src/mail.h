/* The e-mails the daemon sends through Resend (POST /emails): an event of the outbox (a file
 * failed, a folder stuck, ..., or the daily digest) written for a person, as the request's
 * JSON body. Plain text: it reads the same in every mail client and in a terminal. Pure. */
#ifndef RDD_MAIL_H
#define RDD_MAIL_H

#include "config.h"

/* The request body {from, to, subject, text, tags} for receiver M of the event whose payload
 * is PAYLOAD (events.h, digest.h) and whose id is MSG_ID (said in the e-mail, as the
 * receivers of webhooks see it). *RET is the caller's (cJSON_free). -EBADMSG when PAYLOAD is
 * not an event, -ENOMEM. */
int mail_compose(const struct config_email *m, const char *payload, const char *msg_id,
		 char **ret);

#endif
