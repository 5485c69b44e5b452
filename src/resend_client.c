/* Resend requests as curl easy handles. The create request matches the official SDK's wire
 * format (shared/reference/sdk-capture.txt): parts file, column_map, on_conflict, segments,
 * topics; text parts without a Content-Type; a Content-Length, never chunked; no Expect. */
#include "resend_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "resend.h"
#include "text.h"

#define API_BODY_MAX (256 * 1024) /* answers are small JSON; anything longer is cut */
#define API_UPLOAD_BUFFER (512 * 1024)

struct resend_client {
	struct http *http;
	const struct config *cfg;
	char *user_agent;
	char *auth_header;
};

struct resend_call {
	struct resend_client *api;
	CURL *easy;
	struct curl_slist *headers;
	curl_mime *mime;
	/* The file part: the segments one after the other (owned copy), SIZE bytes. */
	struct resend_segment *segs;
	size_t n_segs;
	size_t seg;          /* the segment OFFSET is in */
	uint64_t seg_start;  /* where it starts in the part */
	uint64_t size;
	uint64_t offset;     /* how much of the part was read */
	size_t failed_seg;   /* the segment whose read failed (local_error) */
	char *body;
	size_t body_len;
	char *body_out; /* a JSON request's body (send_email) */
	long status;
	CURLcode result;
	char errbuf[CURL_ERROR_SIZE]; /* curl's: it overwrites what a callback put there */
	char local_error[256];        /* ours: why a callback aborted the transfer */
	resend_call_cb cb;
	void *data;
	bool running;
};

int resend_client_new(struct http *http, const struct config *cfg, struct resend_client **ret)
{
	struct resend_client *api = calloc(1, sizeof(*api));

	if (!api)
		return -ENOMEM;
	api->http = http;
	api->cfg = cfg;
	const char *suffix = cfg->api.user_agent_suffix;
	if (asprintf(&api->user_agent, "resend-dropd/%s%s%s", RDD_VERSION,
		     suffix && *suffix ? " " : "", suffix ? suffix : "") < 0)
		api->user_agent = NULL;
	if (asprintf(&api->auth_header, "Authorization: Bearer %s",
		     cfg->api_key ? cfg->api_key : "") < 0)
		api->auth_header = NULL;
	if (!api->user_agent || !api->auth_header) {
		resend_client_free(api);
		return -ENOMEM;
	}
	*ret = api;
	return 0;
}

void resend_client_free(struct resend_client *api)
{
	if (!api)
		return;
	if (api->auth_header) {
		explicit_bzero(api->auth_header, strlen(api->auth_header));
		free(api->auth_header);
	}
	free(api->user_agent);
	free(api);
}

static size_t api_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct resend_call *call = userdata;
	size_t n = size * nmemb;
	size_t keep = n;

	if (call->body_len + keep > API_BODY_MAX)
		keep = API_BODY_MAX - call->body_len;
	if (keep > 0) {
		char *b = realloc(call->body, call->body_len + keep + 1);
		if (!b)
			return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
		memcpy(b + call->body_len, ptr, keep);
		call->body_len += keep;
		b[call->body_len] = '\0';
		call->body = b;
	}
	return n;
}

/* The file part, read on demand from its segments: no file is held in memory. */
static size_t api_read_cb(char *buffer, size_t size, size_t nitems, void *arg)
{
	struct resend_call *call = arg;
	size_t want = size * nitems;
	const struct resend_segment *sg;
	uint64_t in;
	ssize_t n;

	if (call->offset >= call->size)
		return 0;
	while (call->seg < call->n_segs &&
	       call->offset >= call->seg_start + call->segs[call->seg].bytes) {
		call->seg_start += call->segs[call->seg].bytes;
		call->seg++;
	}
	sg = &call->segs[call->seg];
	in = call->offset - call->seg_start;
	/* Two segments do not meet in one read. */
	if (want > sg->bytes - in)
		want = (size_t)(sg->bytes - in);
	if (sg->fd < 0) {
		memset(buffer, '\n', want);
		n = (ssize_t)want;
	} else {
		do
			n = pread(sg->fd, buffer, want, (off_t)(sg->offset + in));
		while (n < 0 && errno == EINTR);
	}
	if (n <= 0) {
		/* The file shrank or failed to read after it was checked: never send a short part
		 * that the server would take for the whole file. (Had it grown, only SIZE bytes
		 * go: the part's length is announced; the caller notices the growth.) */
		char done[TEXT_COUNT_LEN], all[TEXT_COUNT_LEN];
		int e = errno;

		text_format_count(done, in);
		text_format_count(all, sg->offset + sg->bytes);
		call->failed_seg = call->seg;
		if (n == 0)
			snprintf(call->local_error, sizeof(call->local_error),
				 "the file shrank while it was being uploaded: read %s of %s bytes",
				 done, all);
		else
			snprintf(call->local_error, sizeof(call->local_error),
				 "reading the file failed while it was being uploaded, at "
				 "byte %s of %s: %s",
				 done, all, strerror(e));
		return CURL_READFUNC_ABORT;
	}
	call->offset += (uint64_t)n;
	return (size_t)n;
}

static int api_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct resend_call *call = arg;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > call->size)
		return CURL_SEEKFUNC_CANTSEEK;
	call->offset = (uint64_t)offset;
	call->seg = 0;
	call->seg_start = 0;
	return CURL_SEEKFUNC_OK;
}

static void api_transfer_done_cb(CURL *easy, CURLcode result, void *data)
{
	struct resend_call *call = data;

	call->running = false;
	call->result = result;
	if (result == CURLE_OK)
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &call->status);
	else if (call->errbuf[0] == '\0')
		snprintf(call->errbuf, sizeof(call->errbuf), "%s", curl_easy_strerror(result));
	call->cb(call, call->data);
}

static struct resend_call *resend_call_new(struct resend_client *api, const char *path, resend_call_cb cb,
				     void *data)
{
	const struct config_api *c = &api->cfg->api;
	struct resend_call *call = calloc(1, sizeof(*call));
	char *url = NULL;

	if (!call)
		return NULL;
	call->api = api;
	call->cb = cb;
	call->data = data;
	call->easy = curl_easy_init();
	if (!call->easy || asprintf(&url, "%s%s", c->base_url, path) < 0)
		goto fail;

	CURL *e = call->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(e, CURLOPT_USERAGENT, api->user_agent);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)c->connect_timeout_s);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)c->request_timeout_s);
	/* TLS verification is never switched off; ca_file only adds trust. */
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, api_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
	free(url);

	struct curl_slist *h = curl_slist_append(NULL, api->auth_header);
	if (!h)
		goto fail;
	call->headers = h;
	return call;
fail:
	free(url);
	resend_call_free(call);
	return NULL;
}

static int resend_call_start(struct resend_call *call, struct resend_call **ret)
{
	curl_easy_setopt(call->easy, CURLOPT_HTTPHEADER, call->headers);
	int r = http_start(call->api->http, call->easy, api_transfer_done_cb, call);
	if (r < 0) {
		resend_call_free(call);
		return r;
	}
	call->running = true;
	*ret = call;
	return 0;
}

/* One more header of CALL, written as printf would. -ENOMEM. */
static int call_add_header(struct resend_call *call, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int call_add_header(struct resend_call *call, const char *fmt, ...)
{
	struct curl_slist *h;
	char *line;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	h = curl_slist_append(call->headers, line);
	free(line);
	if (!h)
		return -ENOMEM;
	call->headers = h;
	return 0;
}

static int api_add_text_part(curl_mime *mime, const char *name, const char *value)
{
	if (!value)
		return 0;
	curl_mimepart *part = curl_mime_addpart(mime);
	if (!part || curl_mime_name(part, name) != CURLE_OK ||
	    curl_mime_data(part, value, CURL_ZERO_TERMINATED) != CURLE_OK)
		return -ENOMEM;
	return 0;
}

int resend_client_create_import(struct resend_client *api, const struct resend_segment *segs,
				size_t n_segs, const char *filename,
				const struct resend_fields *fields, const char *idempotency_key,
				resend_call_cb cb, void *data, struct resend_call **ret)
{
	struct resend_call *call = resend_call_new(api, "/contacts/imports", cb, data);
	uint64_t size = 0;

	if (!call)
		return -ENOMEM;
	call->segs = n_segs ? malloc(n_segs * sizeof(*segs)) : NULL;
	if (!call->segs)
		goto fail;
	/* Empty segments are left out: the read callback never stands on one. */
	for (size_t i = 0; i < n_segs; i++) {
		if (segs[i].bytes == 0)
			continue;
		call->segs[call->n_segs++] = segs[i];
		size += segs[i].bytes;
	}
	call->size = size;
	call->mime = curl_mime_init(call->easy);
	if (!call->mime)
		goto fail;

	curl_mimepart *part = curl_mime_addpart(call->mime);
	if (!part || curl_mime_name(part, "file") != CURLE_OK ||
	    curl_mime_filename(part, filename) != CURLE_OK ||
	    curl_mime_type(part, "text/csv") != CURLE_OK ||
	    curl_mime_data_cb(part, (curl_off_t)size, api_read_cb, api_seek_cb, NULL, call) !=
		    CURLE_OK)
		goto fail;
	if (api_add_text_part(call->mime, "column_map", fields->column_map) < 0 ||
	    api_add_text_part(call->mime, "on_conflict", fields->on_conflict) < 0 ||
	    api_add_text_part(call->mime, "segments", fields->segments) < 0 ||
	    api_add_text_part(call->mime, "topics", fields->topics) < 0)
		goto fail;
	curl_easy_setopt(call->easy, CURLOPT_MIMEPOST, call->mime);
	/* curl reads the file part through its upload buffer, 64 KiB by default: for a big file
	 * that is thousands of callbacks and preads, and of socket writes. A larger buffer sends
	 * at disk speed; it costs API_UPLOAD_BUFFER of memory per upload in flight, so small files
	 * keep the default. */
	if (size > API_UPLOAD_BUFFER)
		curl_easy_setopt(call->easy, CURLOPT_UPLOAD_BUFFERSIZE, (long)API_UPLOAD_BUFFER);

	/* The SDK sends no Expect: 100-continue; neither do we, so both look alike on the wire. */
	if (call_add_header(call, "Idempotency-Key: %s", idempotency_key) < 0 ||
	    call_add_header(call, "Expect:") < 0)
		goto fail;
	return resend_call_start(call, ret);
fail:
	resend_call_free(call);
	return -ENOMEM;
}

int resend_client_get_import(struct resend_client *api, const char *id, resend_call_cb cb, void *data,
		   struct resend_call **ret)
{
	char path[128];
	struct resend_call *call;

	/* The id came from the server; refuse anything that could change the path. */
	for (const char *p = id; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_'))
			return -EINVAL;
	}
	if (!*id || strlen(id) > 64)
		return -EINVAL;
	snprintf(path, sizeof(path), "/contacts/imports/%s", id);
	call = resend_call_new(api, path, cb, data);
	if (!call)
		return -ENOMEM;
	curl_easy_setopt(call->easy, CURLOPT_HTTPGET, 1L);
	return resend_call_start(call, ret);
}

int resend_client_send_email(struct resend_client *api, const char *json,
			      const char *idempotency_key, resend_call_cb cb, void *data,
			      struct resend_call **ret)
{
	struct resend_call *call = resend_call_new(api, "/emails", cb, data);

	if (!call)
		return -ENOMEM;
	/* The body is copied: the caller's may go once this returns. */
	call->body_out = strdup(json);
	if (!call->body_out)
		goto fail;
	curl_easy_setopt(call->easy, CURLOPT_POSTFIELDS, call->body_out);
	curl_easy_setopt(call->easy, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t)strlen(call->body_out));
	if (call_add_header(call, "Content-Type: application/json") < 0 ||
	    call_add_header(call, "Expect:") < 0 ||
	    call_add_header(call, "Idempotency-Key: %s", idempotency_key) < 0)
		goto fail;
	return resend_call_start(call, ret);
fail:
	resend_call_free(call);
	return -ENOMEM;
}

int resend_client_list_imports(struct resend_client *api, unsigned limit, const char *after,
			       resend_call_cb cb, void *data, struct resend_call **ret)
{
	char path[160];
	struct resend_call *call;

	/* The cursor came from the server, like an id. */
	for (const char *p = after ? after : ""; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_'))
			return -EINVAL;
	}
	if ((after && strlen(after) > 64) || limit < 1 || limit > 100)
		return -EINVAL;
	snprintf(path, sizeof(path), "/contacts/imports?limit=%u%s%s", limit,
		 after && *after ? "&after=" : "", after && *after ? after : "");
	call = resend_call_new(api, path, cb, data);
	if (!call)
		return -ENOMEM;
	curl_easy_setopt(call->easy, CURLOPT_HTTPGET, 1L);
	return resend_call_start(call, ret);
}

long resend_call_status(const struct resend_call *call)
{
	return call->status;
}

const char *resend_call_body(const struct resend_call *call, size_t *ret_len)
{
	*ret_len = call->body_len;
	return call->body ? call->body : "";
}

const char *resend_call_transport_error(const struct resend_call *call)
{
	if (call->result == CURLE_OK)
		return NULL;
	return call->local_error[0] ? call->local_error : call->errbuf;
}

const char *resend_call_local_error(const struct resend_call *call)
{
	return call->result != CURLE_OK && call->local_error[0] ? call->local_error : NULL;
}

int resend_call_local_error_fd(const struct resend_call *call)
{
	return resend_call_local_error(call) ? call->segs[call->failed_seg].fd : -1;
}

const char *resend_call_header(const struct resend_call *call, const char *name)
{
	struct curl_header *h;

	if (call->status == 0)
		return NULL;
	if (curl_easy_header(call->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return NULL;
	return h->value;
}

double resend_call_seconds(const struct resend_call *call)
{
	double t = 0;

	curl_easy_getinfo(call->easy, CURLINFO_TOTAL_TIME, &t);
	return t;
}

void resend_call_free(struct resend_call *call)
{
	if (!call)
		return;
	if (call->running)
		http_abort(call->api->http, call->easy);
	if (call->easy)
		curl_easy_cleanup(call->easy);
	curl_mime_free(call->mime);
	curl_slist_free_all(call->headers);
	free(call->segs);
	free(call->body);
	free(call->body_out);
	free(call);
}
