/* The Resend API's client: its calls over the HTTP glue (http.c): create an import (the file
 * streamed from a descriptor), read an import's status, send an e-mail (notifications).
 * Answers are handed back raw; resend.c, the API as data, builds the requests' fields and
 * interprets the answers. */
#ifndef RDD_RESEND_CLIENT_H
#define RDD_RESEND_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct http;
struct resend_fields;
struct resend_client;
struct resend_call;

typedef void (*resend_call_cb)(struct resend_call *call, void *data);

/* CFG must outlive CLIENT (base URL, key, timeouts, CA file are read at each call). */
int resend_client_new(struct http *http, const struct config *cfg, struct resend_client **ret);
void resend_client_free(struct resend_client *client);

/* A piece of the file part: BYTES of FD from OFFSET (pread), or, with FD -1, BYTES line ends
 * ("\n"). */
struct resend_segment {
	int fd;
	uint64_t offset, bytes;
};

/* The file part is SEGS one after the other (a CSV header, then rows: of one file, or of
 * several coalesced into one import), read on demand. The descriptors stay owned by the
 * caller and must stay open until the callback; SEGS itself is copied. */
int resend_client_create_import(struct resend_client *client, const struct resend_segment *segs,
				size_t n_segs, const char *filename,
				const struct resend_fields *fields, const char *idempotency_key,
				resend_call_cb cb, void *data, struct resend_call **ret);
int resend_client_get_import(struct resend_client *client, const char *id, resend_call_cb cb, void *data,
		   struct resend_call **ret);
/* GET /contacts/imports?limit=LIMIT (1..100) [&after=AFTER]: a page of the team's imports,
 * newest first (resend_parse_import_list). */
int resend_client_list_imports(struct resend_client *client, unsigned limit, const char *after,
			       resend_call_cb cb, void *data, struct resend_call **ret);

/* POST /emails: JSON (copied) under IDEMPOTENCY_KEY, so that a send retried after an answer
 * that never came is not sent twice (Resend keeps a key 24 hours). */
int resend_client_send_email(struct resend_client *client, const char *json,
			     const char *idempotency_key, resend_call_cb cb, void *data,
			     struct resend_call **ret);

/* Results, valid in the callback and until resend_call_free. status 0: no HTTP answer, see
 * resend_call_transport_error. Headers are NULL when absent. */
long resend_call_status(const struct resend_call *call);
const char *resend_call_body(const struct resend_call *call, size_t *ret_len);
const char *resend_call_transport_error(const struct resend_call *call);
/* Non-NULL when the call failed on our side rather than on the wire: the file part could not
 * be read whole (it shrank, or a read failed). The daemon's own message, which is also what
 * resend_call_transport_error says then. Sending again would read the same file: not a retry. */
const char *resend_call_local_error(const struct resend_call *call);
/* The descriptor whose read failed (resend_call_local_error), -1 when none did. */
int resend_call_local_error_fd(const struct resend_call *call);
const char *resend_call_header(const struct resend_call *call, const char *name);
double resend_call_seconds(const struct resend_call *call);

/* Stops a running call without its callback and frees it; frees a finished one. */
void resend_call_free(struct resend_call *call);

#endif
