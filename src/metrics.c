#include "metrics.h"

#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upload: from a small file on a fast link to a 50 MB part on a slow one. Import: Resend takes
 * seconds to an hour. */
static const double upload_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
static const double import_bounds[] = {0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
#define N_UPLOAD_BOUNDS (sizeof(upload_bounds) / sizeof(upload_bounds[0]))
#define N_IMPORT_BOUNDS (sizeof(import_bounds) / sizeof(import_bounds[0]))
#define MAX_BOUNDS 16
#define MAX_CODE 599

struct metrics_hist {
	uint64_t buckets[MAX_BOUNDS]; /* not cumulative: rendering sums them */
	uint64_t count;
	double sum;
};

struct metrics_folder {
	char *name;
	uint64_t done, failed, retries, rate_limited, uploaded_bytes, rows_uploaded, rows_rejected;
	struct metrics_hist upload, import;
};

struct metrics_receiver {
	char *name;
	uint64_t delivered, failed_attempts, dropped, pending;
	double oldest_s;
};

struct metrics {
	struct metrics_folder **folders;
	size_t n_folders;
	struct metrics_receiver **receivers;
	size_t n_receivers;
	uint64_t requests[METRICS_N_ENDPOINTS][MAX_CODE + 1];
};

static const char *const endpoint_names[METRICS_N_ENDPOINTS] = {"create_import", "get_import",
								    "list_imports", "send_email"};

/* The folders' plain counters, as /metrics names them. */
static const struct folder_counter {
	const char *name, *help;
	size_t offset; /* of a uint64_t in struct metrics_folder */
} folder_counters[] = {
	{"resend_dropd_upload_retries_total", "Uploads that failed and are tried again.",
	 offsetof(struct metrics_folder, retries)},
	{"resend_dropd_rate_limited_total",
	 "Requests for the folder's files that Resend refused for its rate limit (HTTP 429): "
	 "waits, not attempts.",
	 offsetof(struct metrics_folder, rate_limited)},
	{"resend_dropd_uploaded_bytes_total", "Bytes of files that Resend accepted.",
	 offsetof(struct metrics_folder, uploaded_bytes)},
	{"resend_dropd_rows_uploaded_total",
	 "Rows of the folder's imported files that went to Resend (checked and normalized).",
	 offsetof(struct metrics_folder, rows_uploaded)},
	{"resend_dropd_rows_rejected_total",
	 "Rows of the folder's imported files left out by the row checks (invalid_rows: drop); "
	 "each is in the file's rejects file.",
	 offsetof(struct metrics_folder, rows_rejected)},
};

int metrics_new(struct metrics **ret)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	*ret = m;
	return 0;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_folders; i++) {
		free(m->folders[i]->name);
		free(m->folders[i]);
	}
	free(m->folders);
	for (size_t i = 0; i < m->n_receivers; i++) {
		free(m->receivers[i]->name);
		free(m->receivers[i]);
	}
	free(m->receivers);
	free(m);
}

struct metrics_receiver *metrics_receiver(struct metrics *m, const char *name)
{
	struct metrics_receiver *w, **v;

	for (size_t i = 0; i < m->n_receivers; i++) {
		if (strcmp(m->receivers[i]->name, name) == 0)
			return m->receivers[i];
	}
	v = realloc(m->receivers, (m->n_receivers + 1) * sizeof(*v));
	if (!v)
		return NULL;
	m->receivers = v;
	w = calloc(1, sizeof(*w));
	if (!w || !(w->name = strdup(name))) {
		free(w);
		return NULL;
	}
	m->receivers[m->n_receivers++] = w;
	return w;
}

bool metrics_receiver_get(struct metrics *m, const char *name,
			  struct metrics_receiver_view *ret)
{
	for (size_t i = 0; i < m->n_receivers; i++) {
		const struct metrics_receiver *w = m->receivers[i];

		if (strcmp(w->name, name) == 0) {
			*ret = (struct metrics_receiver_view){w->pending, w->delivered,
							      w->failed_attempts, w->dropped,
							      w->oldest_s};
			return true;
		}
	}
	return false;
}

void metrics_receiver_delivered(struct metrics_receiver *w)
{
	if (w)
		w->delivered++;
}

void metrics_receiver_failed_attempt(struct metrics_receiver *w)
{
	if (w)
		w->failed_attempts++;
}

void metrics_receiver_dropped(struct metrics_receiver *w)
{
	if (w)
		w->dropped++;
}

void metrics_receiver_pending(struct metrics_receiver *w, uint64_t pending, double oldest_s)
{
	if (w) {
		w->pending = pending;
		w->oldest_s = oldest_s;
	}
}

/* One sample of webhook W's family NAME. */
static void sample_receiver(FILE *out, const char *name, const struct metrics_receiver *w,
			   double v)
{
	char label[2 * (CONFIG_WEBHOOK_NAME_MAX + 16)];

	metrics_escape_label(label, sizeof(label), w->name);
	fprintf(out, "%s{receiver=\"%s\"} %.17g\n", name, label, v);
}

struct metrics_folder *metrics_folder(struct metrics *m, const char *name)
{
	struct metrics_folder *f, **v;

	for (size_t i = 0; i < m->n_folders; i++) {
		if (strcmp(m->folders[i]->name, name) == 0)
			return m->folders[i];
	}
	v = realloc(m->folders, (m->n_folders + 1) * sizeof(*v));
	if (!v)
		return NULL;
	m->folders = v;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->name = strdup(name))) {
		free(f);
		return NULL;
	}
	m->folders[m->n_folders++] = f;
	return f;
}

static void hist_observe(struct metrics_hist *h, const double *bounds, size_t n, double v)
{
	size_t i = 0;

	if (v < 0)
		v = 0;
	while (i < n && v > bounds[i])
		i++;
	if (i < n)
		h->buckets[i]++;
	h->count++;
	h->sum += v;
}

void metrics_file_finished(struct metrics_folder *f, bool failed)
{
	if (f)
		*(failed ? &f->failed : &f->done) += 1;
}

void metrics_rows(struct metrics_folder *f, uint64_t uploaded, uint64_t rejected)
{
	if (f) {
		f->rows_uploaded += uploaded;
		f->rows_rejected += rejected;
	}
}

void metrics_upload_retry(struct metrics_folder *f)
{
	if (f)
		f->retries++;
}

void metrics_rate_limited(struct metrics_folder *f)
{
	if (f)
		f->rate_limited++;
}

void metrics_uploaded(struct metrics_folder *f, uint64_t bytes, double seconds)
{
	if (!f)
		return;
	f->uploaded_bytes += bytes;
	hist_observe(&f->upload, upload_bounds, N_UPLOAD_BOUNDS, seconds);
}

void metrics_imported(struct metrics_folder *f, double seconds)
{
	if (f)
		hist_observe(&f->import, import_bounds, N_IMPORT_BOUNDS, seconds);
}

void metrics_api_request(struct metrics *m, enum metrics_endpoint ep, long code)
{
	if (!m || ep >= METRICS_N_ENDPOINTS)
		return;
	if (code < 0 || code > MAX_CODE)
		code = 0;
	m->requests[ep][code]++;
}

void metrics_totals(const struct metrics *m, uint64_t *ret_done, uint64_t *ret_failed)
{
	*ret_done = *ret_failed = 0;
	for (size_t i = 0; i < m->n_folders; i++) {
		*ret_done += m->folders[i]->done;
		*ret_failed += m->folders[i]->failed;
	}
}

uint64_t metrics_folder_done(const struct metrics_folder *f)
{
	return f ? f->done : 0;
}

uint64_t metrics_folder_failed(const struct metrics_folder *f)
{
	return f ? f->failed : 0;
}

size_t metrics_escape_label(char *buf, size_t size, const char *value)
{
	size_t n = 0;

	for (const char *s = value; *s; s++) {
		const char *rep = NULL;
		char one[2] = {*s, '\0'};

		if (*s == '\\')
			rep = "\\\\";
		else if (*s == '"')
			rep = "\\\"";
		else if (*s == '\n')
			rep = "\\n";
		else
			rep = one;
		for (const char *r = rep; *r; r++, n++) {
			if (n + 1 < size)
				buf[n] = *r;
		}
	}
	if (size)
		buf[n < size ? n : size - 1] = '\0';
	return n;
}

/* Folder names are short (config), but a label is escaped whatever it holds. */
static void put_label(FILE *out, const char *value)
{
	char small[256];
	size_t n = metrics_escape_label(small, sizeof(small), value);

	if (n < sizeof(small)) {
		fputs(small, out);
		return;
	}
	char *big = malloc(n + 1);
	if (big) {
		metrics_escape_label(big, n + 1, value);
		fputs(big, out);
		free(big);
	}
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_folder(FILE *out, const char *name, const char *folder, const char *extra,
			  double v)
{
	fprintf(out, "%s{folder=\"", name);
	put_label(out, folder);
	fprintf(out, "\"%s} %.15g\n", extra ? extra : "", v);
}

static void hist_render(FILE *out, const char *name, const struct metrics_folder *f,
			const struct metrics_hist *h, const double *bounds, size_t n)
{
	uint64_t cum = 0;

	for (size_t i = 0; i < n; i++) {
		char le[64];
		cum += h->buckets[i];
		snprintf(le, sizeof(le), ",le=\"%g\"", bounds[i]);
		fprintf(out, "%s_bucket", name);
		sample_folder(out, "", f->name, le, (double)cum);
	}
	fprintf(out, "%s_bucket", name);
	sample_folder(out, "", f->name, ",le=\"+Inf\"", (double)h->count);
	fprintf(out, "%s_sum", name);
	sample_folder(out, "", f->name, NULL, h->sum);
	fprintf(out, "%s_count", name);
	sample_folder(out, "", f->name, NULL, (double)h->count);
}

int metrics_render(const struct metrics *m, const struct metrics_gauges *g, const char *version,
		   char **ret, size_t *ret_len)
{
	static const char *const states[] = {"processing", "uploading", "retrying", "following"};
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);

	if (!out)
		return -ENOMEM;
	family(out, "resend_dropd_build_info", "gauge", "Always 1; the version of resend-dropd.");
	fputs("resend_dropd_build_info{version=\"", out);
	put_label(out, version);
	fputs("\"} 1\n", out);

	family(out, "resend_dropd_files_total", "counter",
	       "Files moved to done or failed since the daemon started, by folder and outcome.");
	for (size_t i = 0; i < m->n_folders; i++) {
		sample_folder(out, "resend_dropd_files_total", m->folders[i]->name,
			      ",outcome=\"done\"", (double)m->folders[i]->done);
		sample_folder(out, "resend_dropd_files_total", m->folders[i]->name,
			      ",outcome=\"failed\"", (double)m->folders[i]->failed);
	}
	family(out, "resend_dropd_files_waiting", "gauge",
	       "Files waiting: in the inbox, or claimed and waiting for an upload slot.");
	for (size_t i = 0; i < g->n_folders; i++)
		sample_folder(out, "resend_dropd_files_waiting", g->folders[i].name, NULL,
			      (double)g->folders[i].waiting);
	family(out, "resend_dropd_oldest_waiting_age_seconds", "gauge",
	       "How long the oldest waiting file has been known; 0 when none waits.");
	for (size_t i = 0; i < g->n_folders; i++)
		sample_folder(out, "resend_dropd_oldest_waiting_age_seconds", g->folders[i].name,
			      NULL,
			      g->folders[i].oldest_waiting_s < 0 ? 0 : g->folders[i].oldest_waiting_s);
	family(out, "resend_dropd_files_in_flight", "gauge",
	       "Files claimed and not finished, by folder and what they are doing.");
	for (size_t i = 0; i < g->n_folders; i++) {
		const struct metrics_folder_gauges *fg = &g->folders[i];
		const uint64_t v[] = {fg->processing, fg->uploading, fg->retrying, fg->following};
		for (size_t k = 0; k < 4; k++) {
			char extra[32];
			snprintf(extra, sizeof(extra), ",state=\"%s\"", states[k]);
			sample_folder(out, "resend_dropd_files_in_flight", fg->name, extra,
				      (double)v[k]);
		}
	}
	family(out, "resend_dropd_uploads_in_flight", "gauge",
	       "Uploads running now, all folders together.");
	fprintf(out, "resend_dropd_uploads_in_flight %llu\n",
		(unsigned long long)g->uploads_in_flight);
	family(out, "resend_dropd_paused", "gauge",
	       "1 when the folder takes no new files and starts no uploads (resend-dropd pause).");
	for (size_t i = 0; i < g->n_folders; i++)
		sample_folder(out, "resend_dropd_paused", g->folders[i].name, NULL,
			      g->folders[i].paused ? 1 : 0);
	family(out, "resend_dropd_folder_up", "gauge",
	       "1 when the folder's directories are set up and it is served; 0 when it cannot be "
	       "(the log and status say why; it is tried again).");
	for (size_t i = 0; i < g->n_folders; i++)
		sample_folder(out, "resend_dropd_folder_up", g->folders[i].name, NULL,
			      g->folders[i].unavailable ? 0 : 1);
	family(out, "resend_dropd_api_paused", "gauge",
	       "1 while every request waits because the API key or the quota was refused.");
	fprintf(out, "resend_dropd_api_paused %d\n", g->api_paused ? 1 : 0);
	family(out, "resend_dropd_ledger_up", "gauge",
	       "1 when the ledger can be written; 0 when it cannot (no new file is taken).");
	fprintf(out, "resend_dropd_ledger_up %d\n", g->ledger_failing ? 0 : 1);
	if (g->host_id) {
		char id[2 * CONFIG_HOST_ID_MAX + 8];

		metrics_escape_label(id, sizeof(id), g->host_id);
		family(out, "resend_dropd_fleet_host_info", "gauge",
		       "This daemon's host_id in its fleet (always 1).");
		fprintf(out, "resend_dropd_fleet_host_info{host=\"%s\"} 1\n", id);
		family(out, "resend_dropd_fleet_host_up", "gauge",
		       "Each host of the fleet as this one's last heartbeat saw it: 1 while its lease "
		       "runs.");
		for (size_t i = 0; i < g->n_hosts; i++) {
			metrics_escape_label(id, sizeof(id), g->hosts[i].id);
			fprintf(out, "resend_dropd_fleet_host_up{host=\"%s\"} %d\n", id,
				g->hosts[i].alive ? 1 : 0);
		}
		family(out, "resend_dropd_fleet_host_heartbeat_age_seconds", "gauge",
		       "Since each host's last heartbeat, by the database's clock.");
		for (size_t i = 0; i < g->n_hosts; i++) {
			metrics_escape_label(id, sizeof(id), g->hosts[i].id);
			fprintf(out, "resend_dropd_fleet_host_heartbeat_age_seconds{host=\"%s\"} %g\n",
				id, g->hosts[i].heartbeat_age_s);
		}
		family(out, "resend_dropd_fleet_host_files_in_flight", "gauge",
		       "Files each host held at its last heartbeat.");
		for (size_t i = 0; i < g->n_hosts; i++) {
			metrics_escape_label(id, sizeof(id), g->hosts[i].id);
			fprintf(out, "resend_dropd_fleet_host_files_in_flight{host=\"%s\"} %u\n", id,
				g->hosts[i].in_flight);
		}
	}
	family(out, "resend_dropd_api_requests_total", "counter",
	       "Answers from the Resend API by endpoint and HTTP status; code 0: no answer "
	       "(connection error, timeout).");
	for (int ep = 0; ep < METRICS_N_ENDPOINTS; ep++) {
		for (int code = 0; code <= MAX_CODE; code++) {
			if (m->requests[ep][code])
				fprintf(out,
					"resend_dropd_api_requests_total{endpoint=\"%s\",code=\"%d\"} "
					"%llu\n",
					endpoint_names[ep], code,
					(unsigned long long)m->requests[ep][code]);
		}
	}
	for (size_t k = 0; k < sizeof(folder_counters) / sizeof(*folder_counters); k++) {
		const struct folder_counter *c = &folder_counters[k];

		family(out, c->name, "counter", c->help);
		for (size_t i = 0; i < m->n_folders; i++)
			sample_folder(out, c->name, m->folders[i]->name, NULL,
				      (double)*(const uint64_t *)((const char *)m->folders[i] +
								  c->offset));
	}
	if (m->n_receivers) {
		static const struct {
			const char *name, *type, *help;
		} fams[] = {
			{"resend_dropd_notifications_pending", "gauge",
			 "Events waiting in the receiver's outbox queue (the ledger's, shared by a "
			 "fleet), as last read; receiver: KIND:NAME (webhook, email, hook)."},
			{"resend_dropd_notifications_oldest_pending_age_seconds", "gauge",
			 "How long the oldest waiting event has waited; 0 when none."},
			{"resend_dropd_notifications_delivered_total", "counter",
			 "Events the receiver took (a 2xx answer; a hook's exit status 0)."},
			{"resend_dropd_notification_failures_total", "counter",
			 "Attempts that failed (no answer, not 2xx, a hook's failure): each is tried "
			 "again."},
			{"resend_dropd_notifications_dropped_total", "counter",
			 "Events given up after give_up_after_h of failed attempts."},
		};
		for (size_t k = 0; k < sizeof(fams) / sizeof(fams[0]); k++) {
			family(out, fams[k].name, fams[k].type, fams[k].help);
			for (size_t i = 0; i < m->n_receivers; i++) {
				const struct metrics_receiver *w = m->receivers[i];
				const double v[] = {(double)w->pending, w->oldest_s,
						    (double)w->delivered, (double)w->failed_attempts,
						    (double)w->dropped};
				sample_receiver(out, fams[k].name, w, v[k]);
			}
		}
	}
	family(out, "resend_dropd_upload_duration_seconds", "histogram",
	       "Time from the start of an accepted upload to Resend's answer.");
	for (size_t i = 0; i < m->n_folders; i++)
		hist_render(out, "resend_dropd_upload_duration_seconds", m->folders[i],
			    &m->folders[i]->upload, upload_bounds, N_UPLOAD_BOUNDS);
	family(out, "resend_dropd_import_duration_seconds", "histogram",
	       "Time from an accepted upload to its import's end (follow_import).");
	for (size_t i = 0; i < m->n_folders; i++)
		hist_render(out, "resend_dropd_import_duration_seconds", m->folders[i],
			    &m->folders[i]->import, import_bounds, N_IMPORT_BOUNDS);
	if (fclose(out) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}
