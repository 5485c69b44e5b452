/* Resend API calls over the HTTP glue: create an import (file streamed from a descriptor) and
 * read an import's status. Answers are handed back raw; resend.c interprets them. */
#ifndef RDD_API_H
#define RDD_API_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "resend.h"

struct api;
struct api_call;

typedef void (*api_done_cb)(struct api_call *call, void *data);

/* CFG must outlive API (base URL, key, timeouts, CA file are read at each call). */
int api_new(struct http *http, const struct config *cfg, struct api **ret);
void api_free(struct api *api);

/* The file part is read from FD with pread: its first HEAD bytes (a CSV header; 0 for none),
 * then BYTES from offset FROM. FD stays owned by the caller and must stay open until the
 * callback. */
int api_create_import(struct api *api, int fd, uint64_t head, uint64_t from, uint64_t bytes,
		      const char *filename, const struct resend_fields *fields,
		      const char *idempotency_key, api_done_cb cb, void *data,
		      struct api_call **ret);
int api_get_import(struct api *api, const char *id, api_done_cb cb, void *data,
		   struct api_call **ret);

/* Results, valid in the callback and until api_call_free. status 0: no HTTP answer, see
 * api_call_transport_error. Headers are NULL when absent. */
long api_call_status(const struct api_call *call);
const char *api_call_body(const struct api_call *call, size_t *ret_len);
const char *api_call_transport_error(const struct api_call *call);
/* Non-NULL when the call failed on our side rather than on the wire: the file part could not
 * be read whole (it shrank, or a read failed). The daemon's own message, which is also what
 * api_call_transport_error says then. Sending again would read the same file: not a retry. */
const char *api_call_local_error(const struct api_call *call);
const char *api_call_header(const struct api_call *call, const char *name);
double api_call_seconds(const struct api_call *call);

/* Stops a running call without its callback and frees it; frees a finished one. */
void api_call_free(struct api_call *call);

#endif
