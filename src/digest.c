#include "digest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text.h"

#define DAY_MS (24 * 3600 * (int64_t)1000)
/* How far back the ledger is read: files claimed this long before the digest's day began are
 * not looked at (an import followed for more than a day is rare; the list stays bounded). */
#define DIGEST_LOOKBACK_MS (2 * DAY_MS)

int64_t digest_next_ms(int64_t now_ms, int minute)
{
	time_t now = (time_t)(now_ms / 1000), t;
	struct tm tm;

	for (int day = 0; day < 3; day++) {
		if (!localtime_r(&now, &tm))
			return now_ms + DAY_MS;
		tm.tm_mday += day;
		tm.tm_hour = minute / 60;
		tm.tm_min = minute % 60;
		tm.tm_sec = 0;
		tm.tm_isdst = -1;
		t = mktime(&tm);
		if (t != (time_t)-1 && (int64_t)t * 1000 > now_ms)
			return (int64_t)t * 1000;
	}
	return now_ms + DAY_MS;
}

/* One folder's line of the digest. */
struct digest_folder {
	const char *name; /* the ledger entry's: copied into the JSON before the entry goes */
	cJSON *o;
	double files, imported, skipped, failed, in_hand, created, updated, rejected_contacts;
};

struct digest_acc {
	const struct config_notify *n;
	int64_t from_ms, until_ms;
	cJSON *folders;  /* array of the folders' objects */
	cJSON *failures; /* the newest DIGEST_FAILURES_LISTED */
	double failures_more;
	struct digest_folder t; /* the totals */
	bool oom;
};

static void add_time(cJSON *o, const char *key, int64_t ms)
{
	char ts[TEXT_UTC_LEN];

	text_format_utc(ts, ms / 1000, (int)(ms % 1000));
	cJSON_AddStringToObject(o, key, ts);
}

/* The folder's object in the array, made at its first entry. */
static cJSON *folder_obj(struct digest_acc *a, const char *folder)
{
	cJSON *o;

	cJSON_ArrayForEach(o, a->folders)
	{
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "folder");

		if (cJSON_IsString(name) && strcmp(name->valuestring, folder) == 0)
			return o;
	}
	o = cJSON_CreateObject();
	if (!o)
		return NULL;
	text_json_add_string(o, "folder", folder);
	static const char *const keys[] = {"files",   "imported", "skipped",	"failed",
					   "in_hand", "created",  "updated",	"contacts_failed"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cJSON_AddNumberToObject(o, keys[i], 0);
	cJSON_AddItemToArray(a->folders, o);
	return o;
}

static void bump(cJSON *o, const char *key, double by)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (v && by != 0)
		cJSON_SetNumberValue(v, v->valuedouble + by);
}

/* Both the folder's and the totals' KEY. */
static void count(struct digest_acc *a, cJSON *f, const char *key, double by)
{
	bump(f, key, by);
	bump(a->t.o, key, by);
}

static int digest_entry(const struct ledger_entry *e, void *data)
{
	struct digest_acc *a = data;
	bool finished = e->finished_at_ms != 0;
	cJSON *f;

	if (!config_notify_hears_of(a->n, e->folder) || e->claimed_at_ms >= a->until_ms)
		return 0;
	if (finished && (e->finished_at_ms < a->from_ms || e->finished_at_ms >= a->until_ms))
		return 0;
	f = folder_obj(a, e->folder);
	if (!f) {
		a->oom = true;
		return 1;
	}
	if (!finished) {
		count(a, f, "in_hand", 1);
		return 0;
	}
	count(a, f, "files", 1);
	switch (e->status) {
	case LEDGER_DONE:
		count(a, f, "imported", 1);
		break;
	case LEDGER_SKIPPED:
		count(a, f, "skipped", 1);
		break;
	default:
		count(a, f, "failed", 1);
		break;
	}
	if (e->created > 0)
		count(a, f, "created", (double)e->created);
	if (e->updated > 0)
		count(a, f, "updated", (double)e->updated);
	if (e->failed > 0)
		count(a, f, "contacts_failed", (double)e->failed);
	if (e->status == LEDGER_FAILED) {
		/* The list comes newest first: the first ones are kept. */
		if (cJSON_GetArraySize(a->failures) >= DIGEST_FAILURES_LISTED) {
			a->failures_more++;
			return 0;
		}
		cJSON *x = cJSON_CreateObject();

		if (!x) {
			a->oom = true;
			return 1;
		}
		text_json_add_string(x, "folder", e->folder);
		text_json_add_string(x, "file", e->file);
		add_time(x, "finished_at", e->finished_at_ms);
		if (e->host)
			text_json_add_string(x, "host", e->host);
		text_json_add_string(x, "error", e->error ? e->error : "");
		cJSON_AddItemToArray(a->failures, x);
	}
	return 0;
}

int digest_collect(struct ledger *l, const struct config_notify *n, const char *host,
		   int64_t due_ms, char **ret)
{
	struct digest_acc a = {.n = n, .from_ms = due_ms - DAY_MS, .until_ms = due_ms};
	struct ledger_query q = {.since_ms = due_ms - DIGEST_LOOKBACK_MS};
	cJSON *o = cJSON_CreateObject(), *d;
	int r = -ENOMEM;

	*ret = NULL;
	if (!o)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "type", DIGEST_EVENT_TYPE);
	add_time(o, "timestamp", due_ms);
	d = cJSON_AddObjectToObject(o, "data");
	if (!d)
		goto out;
	if (host && host[0])
		text_json_add_string(d, "host", host);
	add_time(d, "from", a.from_ms);
	add_time(d, "until", a.until_ms);
	a.t.o = cJSON_AddObjectToObject(d, "totals");
	a.folders = cJSON_AddArrayToObject(d, "folders");
	a.failures = cJSON_AddArrayToObject(d, "failures");
	if (!a.t.o || !a.folders || !a.failures)
		goto out;
	static const char *const keys[] = {"files",   "imported", "skipped", "failed",
					   "in_hand", "created",  "updated", "contacts_failed"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cJSON_AddNumberToObject(a.t.o, keys[i], 0);
	r = ledger_list(l, &q, digest_entry, &a);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	if (a.oom)
		goto out;
	cJSON_AddNumberToObject(d, "failures_not_listed", a.failures_more);
	*ret = cJSON_PrintUnformatted(o);
	r = *ret ? 0 : -ENOMEM;
out:
	cJSON_Delete(o);
	return r;
}
