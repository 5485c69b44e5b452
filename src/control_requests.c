#include "control_requests.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

#include "engine.h"
#include "events.h"
#include "fleet.h"
#include "folder.h"
#include "fsops.h"
#include "log.h"
#include "text.h"

/* Folder names paused by `resend-dropd pause`; few, so a list. */
struct control_pauses {
	char **names;
	size_t n;
};

int control_pauses_new(struct control_pauses **ret)
{
	struct control_pauses *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

void control_pauses_free(struct control_pauses *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++)
		free(p->names[i]);
	free(p->names);
	free(p);
}

static ssize_t pauses_find(const struct control_pauses *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++) {
		if (strcmp(p->names[i], name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

static int pauses_set(struct control_pauses *p, const char *name, bool paused)
{
	ssize_t i = pauses_find(p, name);
	char **v, *dup;

	if (!paused) {
		if (i >= 0) {
			free(p->names[i]);
			p->names[i] = p->names[--p->n];
		}
		return 0;
	}
	if (i >= 0)
		return 0;
	v = realloc(p->names, (p->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->names = v;
	if (!(dup = strdup(name)))
		return -ENOMEM;
	p->names[p->n++] = dup;
	return 0;
}

void control_apply_pauses(const struct control_view *s)
{
	for (size_t i = 0; s->engine && i < s->cfg->n_folders; i++) {
		if (pauses_find(s->pauses, s->cfg->folders[i].name) >= 0)
			engine_pause_folder(s->engine, i, true);
	}
}

static int64_t wall_ms(void);

/* One folder, as both answers show it. */
struct status_folder {
	struct engine_folder_view jv;
	struct watch_counts wc;
	unsigned waiting;
	double oldest_s; /* < 0: none */
	uint64_t done, failed;
};

static void status_folder(const struct control_view *s, size_t i, struct status_folder *ret)
{
	const struct watch *w = s->watches ? s->watches[i] : NULL;
	struct metrics_folder *mf = metrics_folder(s->metrics, s->cfg->folders[i].name);

	memset(ret, 0, sizeof(*ret));
	ret->oldest_s = -1;
	if (s->engine)
		engine_folder_view(s->engine, i, &ret->jv);
	if (w) {
		watch_counts(w, &ret->wc);
		if (ret->wc.oldest_seen_ms)
			ret->oldest_s = s->loop_now_ms > ret->wc.oldest_seen_ms
						? (double)(s->loop_now_ms - ret->wc.oldest_seen_ms) / 1000
						: 0;
	}
	if (ret->jv.oldest_claimed_ms) {
		double age = (double)(wall_ms() - ret->jv.oldest_claimed_ms) / 1000;
		if (age < 0)
			age = 0;
		if (age > ret->oldest_s)
			ret->oldest_s = age;
	}
	ret->waiting = (unsigned)(ret->wc.settling + ret->wc.parked + ret->wc.busy +
				  ret->wc.retrying) +
		       ret->jv.waiting;
	ret->done = metrics_folder_done(mf);
	ret->failed = metrics_folder_failed(mf);
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static cJSON *json_time(int64_t ms)
{
	char buf[32];

	if (ms <= 0)
		return cJSON_CreateNull();
	text_format_utc(buf, ms / 1000, (int)(ms % 1000));
	return cJSON_CreateString(buf);
}

static cJSON *json_str_or_null(const char *s)
{
	return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* "notifications": each receiver's queue in the outbox (as the outbox last read it: every few
 * seconds) and what was delivered, failed and given up since the daemon started. */
static void status_notifications_json(const struct control_view *s, cJSON *root)
{
	cJSON *list = cJSON_AddArrayToObject(root, "notifications");

	for (size_t i = 0; list && i < events_receivers(s->cfg); i++) {
		const char *prefix;
		const struct config_notify *n = events_receiver(s->cfg, i, &prefix);
		struct metrics_receiver_view v = {0};
		char channel[128];
		cJSON *o = cJSON_CreateObject();

		if (!o)
			return;
		snprintf(channel, sizeof(channel), "%s%s", prefix, n->name);
		metrics_receiver_get(s->metrics, channel, &v);
		cJSON_AddStringToObject(o, "receiver", channel);
		cJSON_AddNumberToObject(o, "pending", (double)v.pending);
		cJSON_AddNumberToObject(o, "oldest_pending_s", (double)(int64_t)(v.oldest_s * 10) / 10);
		cJSON_AddNumberToObject(o, "delivered", (double)v.delivered);
		cJSON_AddNumberToObject(o, "failed_attempts", (double)v.failed_attempts);
		cJSON_AddNumberToObject(o, "dropped", (double)v.dropped);
		cJSON_AddItemToArray(list, o);
	}
}

/* "ledger": its backend and whether it can be written; "fleet": this host and every host of
 * the fleet as the last heartbeat saw them (null with one host). */
static void status_ledger_json(const struct control_view *s, cJSON *root)
{
	cJSON *ledger = cJSON_AddObjectToObject(root, "ledger"), *fleet, *hosts;
	const struct ledger_host *h;
	size_t n;

	if (ledger) {
		cJSON_AddItemToObject(ledger, "backend", json_str_or_null(s->ledger_backend));
		cJSON_AddBoolToObject(ledger, "failing", s->ledger_error != NULL);
		cJSON_AddItemToObject(ledger, "error", json_str_or_null(s->ledger_error));
	}
	if (!s->fleet) {
		cJSON_AddNullToObject(root, "fleet");
		return;
	}
	fleet = cJSON_AddObjectToObject(root, "fleet");
	if (!fleet)
		return;
	cJSON_AddStringToObject(fleet, "host_id", fleet_host_id(s->fleet));
	cJSON_AddBoolToObject(fleet, "claiming", fleet_can_claim(s->fleet));
	if (fleet_last_beat_ago_ms(s->fleet) >= 0)
		cJSON_AddNumberToObject(fleet, "last_heartbeat_s",
					(double)fleet_last_beat_ago_ms(s->fleet) / 1000.0);
	else
		cJSON_AddNullToObject(fleet, "last_heartbeat_s");
	hosts = cJSON_AddArrayToObject(fleet, "hosts");
	h = fleet_hosts(s->fleet, &n);
	for (size_t i = 0; hosts && i < n; i++) {
		cJSON *o = cJSON_CreateObject();

		if (!o)
			break;
		cJSON_AddItemToArray(hosts, o);
		cJSON_AddStringToObject(o, "host_id", h[i].id);
		cJSON_AddBoolToObject(o, "alive", h[i].alive);
		cJSON_AddNumberToObject(o, "heartbeat_age_s", (double)h[i].heartbeat_age_ms / 1000.0);
		cJSON_AddNumberToObject(o, "in_flight", h[i].in_flight);
		cJSON_AddStringToObject(o, "state", h[i].state);
		cJSON_AddItemToObject(o, "taken_over_by",
				      json_str_or_null(h[i].taken_over_by[0] ? h[i].taken_over_by
									     : NULL));
		cJSON_AddItemToObject(o, "started_at", json_time(h[i].started_at_ms));
	}
}

char *control_status_json(const struct control_view *s)
{
	struct engine_api_view av = {0};
	cJSON *root = cJSON_CreateObject(), *api, *rl, *folders;
	int64_t now = wall_ms();
	char *text = NULL;

	if (!root)
		return NULL;
	if (s->engine)
		engine_api_view(s->engine, &av);
	cJSON_AddStringToObject(root, "version", RDD_VERSION);
	cJSON_AddNumberToObject(root, "pid", (double)getpid());
	cJSON_AddStringToObject(root, "state", s->state);
	cJSON_AddItemToObject(root, "started_at", json_time(s->started_ms));
	cJSON_AddNumberToObject(root, "uptime_s", (double)((now - s->started_ms) / 1000));
	api = cJSON_AddObjectToObject(root, "api");
	if (api) {
		cJSON_AddBoolToObject(api, "paused", av.paused);
		cJSON_AddItemToObject(api, "paused_reason",
				      json_str_or_null(!av.paused ? NULL
						       : av.auth  ? "the API key was refused"
								  : "the quota was exceeded"));
		cJSON_AddItemToObject(api, "paused_until", json_time(av.paused_until_ms));
		cJSON_AddNumberToObject(api, "uploads_in_flight", av.in_flight);
		cJSON_AddNumberToObject(api, "max_in_flight", av.max_in_flight);
		rl = cJSON_AddObjectToObject(api, "rate_limit");
		if (rl) {
			cJSON_AddNumberToObject(rl, "requests_per_second", av.rate);
			cJSON_AddNumberToObject(rl, "tokens", av.tokens);
			cJSON_AddItemToObject(rl, "team_limit",
					      av.announced > 0 ? cJSON_CreateNumber(av.announced)
							       : cJSON_CreateNull());
			cJSON_AddNumberToObject(rl, "share", av.share);
			cJSON_AddItemToObject(rl, "ceiling", av.ceiling > 0
								     ? cJSON_CreateNumber(av.ceiling)
								     : cJSON_CreateNull());
			cJSON_AddItemToObject(rl, "blocked_until", json_time(av.blocked_until_ms));
		}
	}
	status_ledger_json(s, root);
	folders = cJSON_AddArrayToObject(root, "folders");
	for (size_t i = 0; folders && i < s->cfg->n_folders; i++) {
		const struct config_folder *c = &s->cfg->folders[i];
		struct status_folder f;
		cJSON *o = cJSON_CreateObject();
		const char *why = NULL, *err = NULL;
		char lost[FOLDER_REASON_LEN + 64];

		if (!o)
			break;
		cJSON_AddItemToArray(folders, o);
		status_folder(s, i, &f);
		cJSON_AddStringToObject(o, "name", c->name);
		cJSON_AddNumberToObject(o, "waiting", f.waiting);
		cJSON_AddNumberToObject(o, "processing", f.jv.processing);
		cJSON_AddNumberToObject(o, "uploading", f.jv.uploading);
		cJSON_AddNumberToObject(o, "retrying", f.jv.retrying);
		cJSON_AddNumberToObject(o, "following", f.jv.following);
		cJSON_AddNumberToObject(o, "done", (double)f.done);
		cJSON_AddNumberToObject(o, "failed", (double)f.failed);
		if (f.oldest_s >= 0)
			cJSON_AddNumberToObject(o, "oldest_waiting_s",
						(double)(int64_t)(f.oldest_s * 10) / 10);
		else
			cJSON_AddNullToObject(o, "oldest_waiting_s");
		if (f.jv.paused)
			why = "paused by resend-dropd pause";
		else if (av.paused)
			why = av.auth ? "the API key was refused" : "the quota was exceeded";
		cJSON_AddBoolToObject(o, "paused", why != NULL);
		cJSON_AddItemToObject(o, "paused_reason", json_str_or_null(why));
		cJSON_AddItemToObject(o, "paused_until",
				      json_time(!f.jv.paused && av.paused ? av.paused_until_ms : 0));
		bool up = !s->folders || folder_is_open(s->folders[i]);

		cJSON_AddBoolToObject(o, "available", up);
		if (!up) {
			snprintf(lost, sizeof(lost), "the folder cannot be served: %s",
				 s->folders[i]->reason);
			err = lost;
		} else if (f.wc.lost_reason) {
			snprintf(lost, sizeof(lost), "inbox '%s' is lost: %s", c->inbox,
				 fsops_dir_check_reason(f.wc.lost_reason));
			err = lost;
		} else {
			err = f.jv.last_error;
		}
		cJSON_AddItemToObject(o, "last_error", json_str_or_null(err));
	}
	status_notifications_json(s, root);
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return text;
}

int control_metrics_text(const struct control_view *s, char **ret, size_t *ret_len)
{
	struct engine_api_view av = {0};
	struct metrics_folder_gauges *g = calloc(s->cfg->n_folders + 1, sizeof(*g));
	struct metrics_gauges mg = {.folders = g, .n_folders = s->cfg->n_folders};
	int r;

	if (!g)
		return -ENOMEM;
	if (s->engine)
		engine_api_view(s->engine, &av);
	mg.uploads_in_flight = av.in_flight;
	mg.api_paused = av.paused;
	mg.ledger_failing = s->ledger_error != NULL;
	struct metrics_host *mh = NULL;
	if (s->fleet) {
		size_t n;
		const struct ledger_host *h = fleet_hosts(s->fleet, &n);

		mg.host_id = fleet_host_id(s->fleet);
		mh = n ? calloc(n, sizeof(*mh)) : NULL;
		for (size_t i = 0; mh && i < n; i++)
			mh[i] = (struct metrics_host){h[i].id, h[i].alive,
						      (double)h[i].heartbeat_age_ms / 1000.0,
						      h[i].in_flight};
		mg.hosts = mh;
		mg.n_hosts = mh ? n : 0;
	}
	for (size_t i = 0; i < s->cfg->n_folders; i++) {
		struct status_folder f;

		status_folder(s, i, &f);
		g[i] = (struct metrics_folder_gauges){
			.name = s->cfg->folders[i].name,
			.waiting = f.waiting,
			.oldest_waiting_s = f.oldest_s,
			.processing = f.jv.processing,
			.uploading = f.jv.uploading,
			.retrying = f.jv.retrying,
			.following = f.jv.following,
			.paused = f.jv.paused,
			.unavailable = s->folders && !folder_is_open(s->folders[i]),
		};
	}
	r = metrics_render(s->metrics, &mg, RDD_VERSION, ret, ret_len);
	free(mh);
	free(g);
	return r;
}

static unsigned reply(char **ret_body, unsigned code, cJSON *o)
{
	*ret_body = o ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	return code;
}

static unsigned reply_error(char **ret_body, unsigned code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static unsigned reply_error(char **ret_body, unsigned code, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	cJSON *o = cJSON_CreateObject();

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (o)
		cJSON_AddStringToObject(o, "error", msg);
	return reply(ret_body, code, o);
}

static ssize_t folder_index(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_folders; i++) {
		if (strcmp(cfg->folders[i].name, name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

static unsigned status_pause(const struct control_view *s, bool pause, const char *folder,
			     char **ret_body)
{
	ssize_t only = -1;
	cJSON *o, *list;
	char q[256];

	if (folder) {
		only = folder_index(s->cfg, folder);
		if (only < 0) {
			text_escape(q, sizeof(q), folder);
			return reply_error(ret_body, 404, "no folder named '%s'", q);
		}
	}
	o = cJSON_CreateObject();
	list = o ? cJSON_AddArrayToObject(o, pause ? "paused" : "resumed") : NULL;
	for (size_t i = 0; i < s->cfg->n_folders; i++) {
		const char *name = s->cfg->folders[i].name;

		if (only >= 0 && (size_t)only != i)
			continue;
		if (pauses_set(s->pauses, name, pause) < 0) {
			cJSON_Delete(o);
			return reply_error(ret_body, 500, "out of memory");
		}
		if (s->engine && engine_folder_paused(s->engine, i) != pause) {
			engine_pause_folder(s->engine, i, pause);
			log_info(pause ? "%s: paused (resend-dropd pause): no new files, no new uploads"
				       : "%s: resumed (resend-dropd resume)",
				 name);
		}
		if (list)
			cJSON_AddItemToArray(list, cJSON_CreateString(name));
	}
	if (!pause && s->resumed)
		s->resumed(s->data);
	return reply(ret_body, 200, o);
}

static unsigned status_retry(const struct control_view *s, const char *folder, const char *file,
			     char **ret_body)
{
	char qf[256], qn[1024], *kept = NULL;
	ssize_t i;
	cJSON *o;
	int r;

	if (!folder || !file)
		return reply_error(ret_body, 400, "retry needs folder= and file=");
	text_escape(qf, sizeof(qf), folder);
	text_escape(qn, sizeof(qn), file);
	i = folder_index(s->cfg, folder);
	if (i < 0)
		return reply_error(ret_body, 404, "no folder named '%s'", qf);
	if (!s->engine)
		return reply_error(ret_body, 503, "the daemon is between two configurations");
	r = engine_unfail(s->engine, (size_t)i, file, &kept);
	switch (r) {
	case 0:
		break;
	case -ENOENT:
		return reply_error(ret_body, 404, "%s: no file '%s' in failed directory '%s'", qf, qn,
				   s->cfg->folders[i].failed);
	case -EINVAL:
		return reply_error(ret_body, 400, "%s: '%s' is not a failed file (a plain file name "
						  "in '%s')",
				   qf, qn, s->cfg->folders[i].failed);
	case -EEXIST:
		return reply_error(ret_body, 409, "%s: the inbox '%s' already has a file named '%s'",
				   qf, s->cfg->folders[i].inbox, qn);
	default:
		return reply_error(ret_body, 500, "%s: cannot move '%s' back to the inbox: %s", qf,
				   qn, strerror(-r));
	}
	log_info("%s: '%s' put back into the inbox from '%s' (resend-dropd retry)%s%s", qf, qn,
		 s->cfg->folders[i].failed, kept ? "; its old report is now " : "",
		 kept ? kept : "");
	o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "folder", folder);
		cJSON_AddStringToObject(o, "file", file);
		cJSON_AddItemToObject(o, "old_report", json_str_or_null(kept));
	}
	free(kept);
	return reply(ret_body, 200, o);
}

unsigned control_command(const struct control_view *s, const char *cmd, const char *folder,
			const char *file, char **ret_body)
{
	if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0)
		return status_pause(s, cmd[0] == 'p', folder, ret_body);
	if (strcmp(cmd, "retry") == 0)
		return status_retry(s, folder, file, ret_body);
	return reply_error(ret_body, 404, "unknown command");
}
