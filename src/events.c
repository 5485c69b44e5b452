#include "events.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

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
	if (cfg->n_webhooks + cfg->n_hooks == 0)
		return 0;
	kinds[n_kinds++] = r->failed ? CONFIG_EVENT_FILE_FAILED : CONFIG_EVENT_FILE_DONE;
	if (!r->failed && r->csv && r->csv->read && r->csv->rows_rejected > 0)
		kinds[n_kinds++] = CONFIG_EVENT_ROWS_REJECTED;
	evs = calloc((cfg->n_webhooks + cfg->n_hooks) * n_kinds, sizeof(*evs));
	if (!evs)
		return -ENOMEM;
	for (size_t k = 0; k < n_kinds; k++) {
		payload[k] = report_event_json(r, config_event_name(kinds[k]), finished_ms, host);
		if (!payload[k]) {
			rc = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < cfg->n_webhooks + cfg->n_hooks; i++) {
		bool web = i < cfg->n_webhooks;
		const struct config_notify *to = web ? &cfg->webhooks[i].n
						     : &cfg->hooks[i - cfg->n_webhooks].n;

		for (size_t k = 0; k < n_kinds; k++) {
			struct ledger_event *ev = &evs[n];
			const char *type = config_event_name(kinds[k]);

			if (!config_notify_wants(to, kinds[k], r->folder))
				continue;
			n++;
			ev->created_at_ms = finished_ms;
			if (asprintf(&ev->channel, "%s%s",
				     web ? EVENTS_WEBHOOK_PREFIX : EVENTS_HOOK_PREFIX, to->name) < 0) {
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
	if (cfg->n_webhooks + cfg->n_hooks == 0 || !type)
		return 0;
	evs = calloc(cfg->n_webhooks + cfg->n_hooks, sizeof(*evs));
	payload = daemon_payload(type, folder, host, message, now_ms);
	if (!evs || !payload) {
		free(evs);
		cJSON_free(payload);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->n_webhooks + cfg->n_hooks; i++) {
		bool web = i < cfg->n_webhooks;
		const struct config_notify *to = web ? &cfg->webhooks[i].n
						     : &cfg->hooks[i - cfg->n_webhooks].n;
		struct ledger_event *e = &evs[n];

		/* A folder's event for a receiver of some folders only: theirs alone. */
		if (!(to->events & ev) || (folder && !config_notify_wants(to, ev, folder)))
			continue;
		n++;
		e->created_at_ms = now_ms;
		e->type = strdup(type);
		e->payload = strdup(payload);
		if (asprintf(&e->channel, "%s%s", web ? EVENTS_WEBHOOK_PREFIX : EVENTS_HOOK_PREFIX,
			     to->name) < 0)
			e->channel = NULL;
		/* Each occurrence its own id: the time is part of it. */
		if (!e->type || !e->payload || !e->channel ||
		    event_msg_id(e->channel, type, folder, NULL, now_ms, &e->msg_id) < 0) {
			rc = -ENOMEM;
			break;
		}
	}
	cJSON_free(payload);
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
