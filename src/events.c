#include "events.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "digest.h"
#include "text.h"

/* "msg_" and 32 hex digits of the SHA-256 of what makes the event one: CHANNEL, TYPE, FOLDER
 * (NULL: none), FILE (NULL: none) and AT_MS (the file's claim, or when it happened). */
static int event_msg_id(const char *channel, const char *type, const char *folder,
			const char *file, int64_t at_ms, char **ret)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char hex[2 * SHA256_DIGEST_LENGTH + 1];
	char *key;
	int n;

	*ret = NULL;
	n = asprintf(&key, "%s%c%s%c%s%c%s%c%" PRId64, channel, 0, type, 0, folder ? folder : "",
		     0, file ? file : "", 0, at_ms);
	if (n < 0)
		return -ENOMEM;
	SHA256((const unsigned char *)key, (size_t)n, md);
	free(key);
	text_hex(hex, md, 16);
	if (asprintf(ret, "msg_%s", hex) < 0) {
		*ret = NULL;
		return -ENOMEM;
	}
	return 0;
}

size_t events_receivers(const struct config *cfg)
{
	return cfg->n_webhooks + cfg->n_hooks + cfg->n_emails;
}

const struct config_notify *events_receiver(const struct config *cfg, size_t i,
					    const char **prefix)
{
	if (i < cfg->n_webhooks) {
		*prefix = EVENTS_WEBHOOK_PREFIX;
		return &cfg->webhooks[i].n;
	}
	i -= cfg->n_webhooks;
	if (i < cfg->n_hooks) {
		*prefix = EVENTS_HOOK_PREFIX;
		return &cfg->hooks[i].n;
	}
	*prefix = EVENTS_EMAIL_PREFIX;
	return &cfg->emails[i - cfg->n_hooks].n;
}

/* N events of EVS made (or RC < 0: what was made is freed): handed over in *RET, *RET_N. */
static int events_hand_over(int rc, struct ledger_event *evs, size_t n,
			    struct ledger_event **ret, size_t *ret_n)
{
	if (rc < 0 || n == 0) {
		for (size_t i = 0; i < n; i++)
			ledger_event_clear(&evs[i]);
		free(evs);
		return rc;
	}
	*ret = evs;
	*ret_n = n;
	return 0;
}

int events_for_file(const struct config *cfg, const struct report *r, int64_t finished_ms,
		    const char *host, struct ledger_event **ret, size_t *ret_n)
{
	enum config_event kinds[2];
	size_t n_kinds = 0, n = 0;
	struct ledger_event *evs = NULL;
	char *payload[2] = {NULL, NULL};
	int rc = 0;

	*ret = NULL;
	*ret_n = 0;
	if (events_receivers(cfg) == 0)
		return 0;
	kinds[n_kinds++] = r->failed ? CONFIG_EVENT_FILE_FAILED : CONFIG_EVENT_FILE_DONE;
	if (!r->failed && r->csv && r->csv->read && r->csv->rows_rejected > 0)
		kinds[n_kinds++] = CONFIG_EVENT_ROWS_REJECTED;
	evs = calloc(events_receivers(cfg) * n_kinds, sizeof(*evs));
	if (!evs)
		return -ENOMEM;
	for (size_t k = 0; k < n_kinds; k++) {
		payload[k] = report_event_json(r, config_event_name(kinds[k]), finished_ms, host);
		if (!payload[k]) {
			rc = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < events_receivers(cfg); i++) {
		const char *prefix;
		const struct config_notify *to = events_receiver(cfg, i, &prefix);

		for (size_t k = 0; k < n_kinds; k++) {
			struct ledger_event *ev = &evs[n];
			const char *type = config_event_name(kinds[k]);

			if (!config_notify_wants(to, kinds[k], r->folder))
				continue;
			n++;
			ev->created_at_ms = finished_ms;
			if (asprintf(&ev->channel, "%s%s", prefix, to->name) < 0) {
				ev->channel = NULL;
				rc = -ENOMEM;
				goto out;
			}
			ev->type = strdup(type);
			ev->payload = strdup(payload[k]);
			if (!ev->type || !ev->payload ||
			    event_msg_id(ev->channel, type, r->folder, r->file, r->claimed_at_ms,
					 &ev->msg_id) < 0) {
				rc = -ENOMEM;
				goto out;
			}
		}
	}
out:
	for (size_t k = 0; k < n_kinds; k++)
		cJSON_free(payload[k]);
	return events_hand_over(rc, evs, n, ret, ret_n);
}

/* The payload of a daemon's event. */
static char *daemon_payload(const char *type, const char *folder, const char *host,
			    const char *message, int64_t now_ms)
{
	cJSON *o = cJSON_CreateObject(), *d;
	char ts[TEXT_UTC_LEN];
	char *out;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "type", type);
	text_format_utc(ts, now_ms / 1000, (int)(now_ms % 1000));
	cJSON_AddStringToObject(o, "timestamp", ts);
	d = cJSON_AddObjectToObject(o, "data");
	if (folder)
		text_json_add_string(d, "folder", folder);
	else
		cJSON_AddNullToObject(d, "folder");
	if (host && host[0])
		text_json_add_string(d, "host", host);
	text_json_add_string(d, "message", message);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

int events_for_daemon(const struct config *cfg, enum config_event ev, const char *folder,
		      const char *host, const char *message, int64_t now_ms,
		      struct ledger_event **ret, size_t *ret_n)
{
	const char *type = config_event_name(ev);
	struct ledger_event *evs;
	char *payload;
	size_t n = 0;
	int rc = 0;

	*ret = NULL;
	*ret_n = 0;
	if (events_receivers(cfg) == 0 || !type)
		return 0;
	evs = calloc(events_receivers(cfg), sizeof(*evs));
	payload = daemon_payload(type, folder, host, message, now_ms);
	if (!evs || !payload) {
		free(evs);
		cJSON_free(payload);
		return -ENOMEM;
	}
	for (size_t i = 0; i < events_receivers(cfg); i++) {
		const char *prefix;
		const struct config_notify *to = events_receiver(cfg, i, &prefix);
		struct ledger_event *e = &evs[n];

		/* A folder's event for a receiver of some folders only: theirs alone. */
		if (!(to->events & ev) || (folder && !config_notify_wants(to, ev, folder)))
			continue;
		n++;
		e->created_at_ms = now_ms;
		e->type = strdup(type);
		e->payload = strdup(payload);
		if (asprintf(&e->channel, "%s%s", prefix, to->name) < 0)
			e->channel = NULL;
		/* Each occurrence its own id: the time is part of it. */
		if (!e->type || !e->payload || !e->channel ||
		    event_msg_id(e->channel, type, folder, NULL, now_ms, &e->msg_id) < 0) {
			rc = -ENOMEM;
			break;
		}
	}
	cJSON_free(payload);
	return events_hand_over(rc, evs, n, ret, ret_n);
}

int events_digest(const char *channel, char *payload, int64_t due_ms, struct ledger_event *ret)
{
	*ret = (struct ledger_event){.created_at_ms = due_ms};
	ret->channel = strdup(channel);
	ret->type = strdup(DIGEST_EVENT_TYPE);
	ret->payload = payload ? strdup(payload) : NULL;
	cJSON_free(payload);
	if (!ret->channel || !ret->type || !ret->payload ||
	    event_msg_id(channel, DIGEST_EVENT_TYPE, NULL, NULL, due_ms, &ret->msg_id) < 0) {
		ledger_event_clear(ret);
		return -ENOMEM;
	}
	return 0;
}
