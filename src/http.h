/* curl multi <-> libuv glue: runs easy handles on the loop. Nothing Resend-specific here. */
#ifndef RDD_HTTP_H
#define RDD_HTTP_H

#include <curl/curl.h>
#include <uv.h>

struct http;

/* Called from the loop when a transfer has ended, after the easy handle was removed from the
 * multi handle: the callee owns EASY again and may clean it up or start new transfers. */
typedef void (*http_done_cb)(CURL *easy, CURLcode result, void *data);

int http_new(uv_loop_t *loop, struct http **ret);

/* Starts EASY. CURLOPT_PRIVATE of EASY is used by this module. */
int http_start(struct http *http, CURL *easy, http_done_cb cb, void *data);

/* Stops EASY without calling its callback (shutdown, cancel). */
void http_abort(struct http *http, CURL *easy);

unsigned http_running(const struct http *http);

/* Closes every handle; frees HTTP in the last close callback, then calls CB (may be NULL).
 * Transfers still running are aborted without their callbacks: abort them first. */
void http_close(struct http *http, void (*cb)(void *data), void *data);

#endif
