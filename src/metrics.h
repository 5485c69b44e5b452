/* The daemon's counters and histograms, and their rendering in the Prometheus text format
 * (version 0.0.4). Pure: no libuv, no curl. The registry lives as long as the daemon, outside
 * the pipeline that a reload replaces, so that counters survive a reload; the gauges (what is
 * waiting now, what is paused) are the caller's live state, handed to metrics_render. */
#ifndef RDD_METRICS_H
#define RDD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct metrics;
struct metrics_folder;

enum metrics_endpoint {
	METRICS_CREATE_IMPORT, /* POST /contacts/imports */
	METRICS_GET_IMPORT,    /* GET /contacts/imports/{id} */
	METRICS_LIST_IMPORTS,  /* GET /contacts/imports */
	METRICS_SEND_EMAIL,    /* POST /emails (notifications) */
	METRICS_N_ENDPOINTS
};

int metrics_new(struct metrics **ret);
void metrics_free(struct metrics *m);

/* The counters of the folder named NAME, created at zero on first use, kept for the daemon's
 * life (a folder removed by a reload keeps its counters). NULL when out of memory. O(folders). */
struct metrics_folder *metrics_folder(struct metrics *m, const char *name);

/* Each accepts a NULL folder (out of memory earlier): nothing is counted. */
void metrics_file_finished(struct metrics_folder *f, bool failed);
/* The rows of a file imported: those uploaded, and those the row checks left out. */
void metrics_rows(struct metrics_folder *f, uint64_t uploaded, uint64_t rejected);
void metrics_upload_retry(struct metrics_folder *f);
/* A request for one of the folder's files refused for the rate limit (a wait, not an attempt). */
void metrics_rate_limited(struct metrics_folder *f);
/* An upload that Resend accepted: BYTES sent, in SECONDS. */
void metrics_uploaded(struct metrics_folder *f, uint64_t bytes, double seconds);
/* An import followed to its end, SECONDS after the upload was accepted. */
void metrics_imported(struct metrics_folder *f, double seconds);
/* One API answer: CODE is the HTTP status, 0 when there was none (a connection error, a
 * timeout). */
void metrics_api_request(struct metrics *m, enum metrics_endpoint ep, long code);

/* The notifications of receiver NAME (its outbox's channel, "webhook:ops", "email:ops",
 * "hook:ops"), created at zero on first use, kept for the daemon's life. NULL when out of
 * memory. O(receivers). */
struct metrics_receiver;
struct metrics_receiver *metrics_receiver(struct metrics *m, const char *name);
/* Each accepts NULL. An event delivered (a 2xx answer); an attempt that failed (it is tried
 * again); an event given up after give_up_after_h. */
void metrics_receiver_delivered(struct metrics_receiver *w);
void metrics_receiver_failed_attempt(struct metrics_receiver *w);
void metrics_receiver_dropped(struct metrics_receiver *w);
/* How many events wait in its queue, as the outbox last read it (shared by a fleet's hosts),
 * and how old the oldest is (seconds; 0: none). */
void metrics_receiver_pending(struct metrics_receiver *w, uint64_t pending, double oldest_s);

/* What the receiver named NAME (metrics_receiver) has counted; false when it has none yet. */
struct metrics_receiver_view {
	uint64_t pending, delivered, failed_attempts, dropped;
	double oldest_s;
};
bool metrics_receiver_get(struct metrics *m, const char *name,
			  struct metrics_receiver_view *ret);

/* Files done and failed since the daemon started, every folder it ever had together. */
void metrics_totals(const struct metrics *m, uint64_t *ret_done, uint64_t *ret_failed);
uint64_t metrics_folder_done(const struct metrics_folder *f);
uint64_t metrics_folder_failed(const struct metrics_folder *f);

/* The live state of one configured folder, at render time. */
struct metrics_folder_gauges {
	const char *name;
	uint64_t waiting;
	double oldest_waiting_s; /* < 0: nothing waiting */
	uint64_t processing, uploading, retrying, following;
	bool paused;
	bool unavailable; /* its directories cannot be set up: nothing of it is served */
};

/* A host of the fleet, as this daemon's last heartbeat saw it. */
struct metrics_host {
	const char *id;
	bool alive;
	double heartbeat_age_s;
	unsigned in_flight;
};

struct metrics_gauges {
	const struct metrics_folder_gauges *folders;
	size_t n_folders;
	uint64_t uploads_in_flight;
	bool api_paused; /* the key or the quota was refused: every upload waits */
	bool ledger_failing; /* the ledger cannot be written: no file is taken */
	/* A fleet (host_id NULL: none): this host, and every host of it. */
	const char *host_id;
	const struct metrics_host *hosts;
	size_t n_hosts;
};

/* The whole exposition, NUL-terminated, in *RET (free()), its length in *RET_LEN. -ENOMEM. */
int metrics_render(const struct metrics *m, const struct metrics_gauges *g, const char *version,
		   char **ret, size_t *ret_len);

/* Writes VALUE escaped as a label value (backslash, double quote, newline) to BUF, truncated to
 * SIZE (always terminated). Returns the length the whole escape needs. */
size_t metrics_escape_label(char *buf, size_t size, const char *value);

#endif
