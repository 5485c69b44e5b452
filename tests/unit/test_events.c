/* events: which receivers hear of a file's end and of the daemon's own troubles, the payload
 * they get, and msg_ids that a retried record cannot duplicate yet two occurrences never share. */
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "events.h"

static char *crm_only[] = {"crm"};

/* Two webhooks (one for failures of crm only) and a hook for everything. */
static void config_init(struct config *cfg, struct config_webhook *w, struct config_hook *h)
{
	memset(cfg, 0, sizeof(*cfg));
	memset(w, 0, 2 * sizeof(*w));
	memset(h, 0, sizeof(*h));
	w[0].n = (struct config_notify){.name = "all", .events = CONFIG_EVENT_ALL};
	w[1].n = (struct config_notify){.name = "crm-failures", .events = CONFIG_EVENT_FILE_FAILED |
									CONFIG_EVENT_FOLDER_STUCK,
					.folders = crm_only, .n_folders = 1};
	h[0].n = (struct config_notify){.name = "sync", .events = CONFIG_EVENT_FILE_DONE |
							       CONFIG_EVENT_ROWS_REJECTED};
	cfg->webhooks = w;
	cfg->n_webhooks = 2;
	cfg->hooks = h;
	cfg->n_hooks = 1;
}

static void clear(struct ledger_event *evs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ledger_event_clear(&evs[i]);
	free(evs);
}

static const char *channels(const struct ledger_event *evs, size_t n)
{
	static char buf[512];

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		strcat(buf, i ? " " : "");
		strcat(buf, evs[i].channel);
		strcat(buf, "/");
		strcat(buf, evs[i].type);
	}
	return buf;
}

static void test_file_events_by_receiver(void **state)
{
	struct config cfg;
	struct config_webhook w[2];
	struct config_hook h[1];
	struct normalize norm = {.read = true, .rows = 5, .rows_uploaded = 3, .rows_rejected = 2};
	struct report r = {.folder = "crm", .file = "a.csv", .claimed_at_ms = 1000, .csv = &norm};
	struct ledger_event *evs, *again;
	size_t n, n2;
	cJSON *o;

	(void)state;
	config_init(&cfg, w, h);
	assert_int_equal(events_for_file(&cfg, &r, 2000, "host-1", &evs, &n), 0);
	assert_string_equal(channels(evs, n), "webhook:all/file.done webhook:all/rows.rejected "
					      "hook:sync/file.done hook:sync/rows.rejected");
	o = cJSON_Parse(evs[1].payload);
	assert_non_null(o);
	assert_string_equal(cJSON_GetObjectItem(o, "type")->valuestring, "rows.rejected");
	assert_string_equal(
		cJSON_GetObjectItem(cJSON_GetObjectItem(o, "data"), "host")->valuestring, "host-1");
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "data"),
								 "rows"),
					     "rejected")
				 ->valueint,
			 2);
	cJSON_Delete(o);
	/* The same end again (a retried record): the same ids; another channel, another id. */
	assert_int_equal(events_for_file(&cfg, &r, 2000, "host-1", &again, &n2), 0);
	assert_int_equal(n2, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(again[i].msg_id, evs[i].msg_id);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(evs[i].msg_id, evs[j].msg_id);
	}
	clear(again, n2);
	clear(evs, n);

	/* A failure of crm: the crm-only webhook too; of another folder: not. */
	r.failed = true;
	assert_int_equal(events_for_file(&cfg, &r, 2000, NULL, &evs, &n), 0);
	assert_string_equal(channels(evs, n), "webhook:all/file.failed "
					      "webhook:crm-failures/file.failed");
	clear(evs, n);
	r.folder = "shop";
	assert_int_equal(events_for_file(&cfg, &r, 2000, NULL, &evs, &n), 0);
	assert_string_equal(channels(evs, n), "webhook:all/file.failed");
	clear(evs, n);

	/* An e-mail receiver with its default events (failures): a failure is its, a file done
	 * is not; it is after the webhooks and hooks. */
	struct config_email m = {.n = {.name = "ops", .events = CONFIG_EMAIL_EVENTS_DEFAULT}};
	cfg.emails = &m;
	cfg.n_emails = 1;
	assert_int_equal(events_for_file(&cfg, &r, 2000, NULL, &evs, &n), 0);
	assert_string_equal(channels(evs, n), "webhook:all/file.failed email:ops/file.failed");
	clear(evs, n);
	r.failed = false;
	assert_int_equal(events_for_file(&cfg, &r, 2000, NULL, &evs, &n), 0);
	assert_string_equal(channels(evs, n), "webhook:all/file.done webhook:all/rows.rejected "
					      "hook:sync/file.done hook:sync/rows.rejected");
	clear(evs, n);
	assert_int_equal(events_for_daemon(&cfg, CONFIG_EVENT_INTAKE_PAUSED, NULL, NULL, "ledger",
					   5000, &evs, &n),
			 0);
	assert_string_equal(channels(evs, n), "webhook:all/intake.paused email:ops/intake.paused");
	clear(evs, n);
	r.failed = true;

	/* No receivers: nothing, and no allocation. */
	cfg.n_webhooks = cfg.n_hooks = cfg.n_emails = 0;
	assert_int_equal(events_for_file(&cfg, &r, 2000, NULL, &evs, &n), 0);
	assert_null(evs);
	assert_int_equal(n, 0);
}

static void test_daemon_events(void **state)
{
	struct config cfg;
	struct config_webhook w[2];
	struct config_hook h[1];
	struct ledger_event *evs, *later;
	size_t n, n2;
	cJSON *o;

	(void)state;
	config_init(&cfg, w, h);
	/* A folder's trouble: its receivers; the whole daemon's: every one that wants it. */
	assert_int_equal(events_for_daemon(&cfg, CONFIG_EVENT_FOLDER_STUCK, "shop", NULL, "gone",
					   5000, &evs, &n),
			 0);
	assert_string_equal(channels(evs, n), "webhook:all/folder.stuck");
	clear(evs, n);
	assert_int_equal(events_for_daemon(&cfg, CONFIG_EVENT_FOLDER_STUCK, "crm", NULL, "gone",
					   5000, &evs, &n),
			 0);
	assert_string_equal(channels(evs, n),
			    "webhook:all/folder.stuck webhook:crm-failures/folder.stuck");
	o = cJSON_Parse(evs[0].payload);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "data"), "message")
				    ->valuestring,
			    "gone");
	cJSON_Delete(o);
	/* Another occurrence, later: its own id. */
	assert_int_equal(events_for_daemon(&cfg, CONFIG_EVENT_FOLDER_STUCK, "crm", NULL, "gone",
					   6000, &later, &n2),
			 0);
	assert_string_not_equal(later[0].msg_id, evs[0].msg_id);
	clear(later, n2);
	clear(evs, n);
	assert_int_equal(events_for_daemon(&cfg, CONFIG_EVENT_KEY_REFUSED, NULL, "h", "refused",
					   5000, &evs, &n),
			 0);
	assert_string_equal(channels(evs, n), "webhook:all/api_key.refused");
	o = cJSON_Parse(evs[0].payload);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "data"), "folder")));
	cJSON_Delete(o);
	clear(evs, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_events_by_receiver),
		cmocka_unit_test(test_daemon_events),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
