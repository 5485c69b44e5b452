/* job with the ledger: the three states only a ledger brings (LOOKING_UP, DUP_WAIT,
 * LEDGER_WAIT), driven through the engine as daemon.c drives it (the fixture: job_fixture.h),
 * with the ledger's real thread (ledgerq.c) over a ledger backend of the test's own.
 *
 * The backend (a struct ledger_ops, as a second backend would be) keeps its rows in memory and
 * answers look-ups from them as ledger_sqlite.c's queries do; a test seeds the rows an earlier
 * run would have left (an earlier import of the same content, a resumed file's import ids).
 * Records are taken in transactions (begin, records, commit or rollback); every entry committed
 * goes to a journal, in order, with where its file was at that moment, so that a test asserts
 * what the ledger learnt, in which order, and that a file's end was recorded before it moved.
 * Writes can be made to fail as on a full disk, and look-ups as on an I/O error: the ledger's
 * thread then tells the engine the ledger fails, and once more when it works again.
 *
 * What a user would notice is asserted: where a file ends up, its report, what was uploaded
 * (the API stand-in's calls), the log lines, and what the ledger was told. */
#include "job_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "job.h"
#include "ledger.h"

#define MAX_ROWS 64
#define MAX_STAGED 64
#define MAX_JOURNAL 256
#define MAX_ASKED 64

#define FULL_ERROR "ledger 'fake': cannot record a file: database or disk is full"
#define READ_ERROR "ledger 'fake': cannot look a file up: disk I/O error"
#define FAILING_LINE "no new file is taken from the inboxes until the ledger can be written again"
#define RECOVERED_LINE "the ledger can be written again: files are taken from the inboxes again"

#define EARLIER_ID "6a1f0c2e-5b7d-4e3a-9c8b-1d2e3f4a5b6c"
#define RESUMED_ID "3c9e8d7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f"
#define HOUR_MS (INT64_C(3600) * 1000)

/* ---- the ledger the test controls --------------------------------------------------------- */

/* One entry the ledger committed, and where its file was at that moment (enum place). */
struct written {
	struct ledger_entry e;
	unsigned where;
	unsigned commit; /* which commit took it (1, 2, ...) */
};

/* One look-up, as the ledger's thread asked it. */
struct asked {
	char file[128];
	char sha256[65];
	bool want_imported;
	int64_t since_ms;
	unsigned commit; /* the commit of its batch: its answer comes after it */
};

static struct fake {
	struct ledger base;
	uv_mutex_t lock;
	bool lock_made;
	/* The table, one row per (folder, file, claimed_at_ms): what an earlier run left, and
	 * what is committed since. */
	struct ledger_entry rows[MAX_ROWS];
	size_t n_rows;
	/* The open transaction's records, in order; applied at commit, dropped at rollback. */
	struct ledger_entry staged[MAX_STAGED];
	size_t n_staged;
	struct written journal[MAX_JOURNAL];
	size_t n_journal;
	unsigned n_commits;
	struct asked asked[MAX_ASKED];
	size_t n_asked;
	/* What fails: records, as on a full disk; look-ups, with LOOKUP_ERROR (0: none). */
	atomic_bool full;
	atomic_int lookup_error;
	unsigned failed_records, failed_lookups;
	unsigned harness_errors; /* a table too small, out of memory: fails the test */
} fake;

static bool same_key(const struct ledger_entry *a, const struct ledger_entry *b)
{
	return strcmp(a->folder, b->folder) == 0 && strcmp(a->file, b->file) == 0 &&
	       a->claimed_at_ms == b->claimed_at_ms;
}

/* Puts E into the table (a copy), replacing the row of its key. Under the lock. */
static void fake_put_row(const struct ledger_entry *e)
{
	struct ledger_entry copy;

	if (ledger_entry_copy(&copy, e) < 0) {
		fake.harness_errors++;
		return;
	}
	for (size_t i = 0; i < fake.n_rows; i++) {
		if (same_key(&fake.rows[i], e)) {
			ledger_entry_clear(&fake.rows[i]);
			fake.rows[i] = copy;
			return;
		}
	}
	if (fake.n_rows == MAX_ROWS) {
		ledger_entry_clear(&copy);
		fake.harness_errors++;
		return;
	}
	fake.rows[fake.n_rows++] = copy;
}

/* What a look-up sees: the table as the open transaction left it (SQLite shows a transaction
 * its own writes). Under the lock; *RET holds at most MAX_ROWS + MAX_STAGED entries. */
static size_t fake_view(const struct ledger_entry **ret)
{
	size_t n = 0;

	for (size_t i = 0; i < fake.n_rows; i++) {
		const struct ledger_entry *e = &fake.rows[i];

		for (size_t k = 0; k < fake.n_staged; k++)
			if (same_key(&fake.staged[k], e))
				e = &fake.staged[k];
		ret[n++] = e;
	}
	for (size_t k = 0; k < fake.n_staged; k++) {
		bool seen = false;

		for (size_t i = 0; i < n && !seen; i++)
			seen = same_key(ret[i], &fake.staged[k]);
		for (size_t j = k + 1; j < fake.n_staged && !seen; j++)
			seen = same_key(&fake.staged[j], &fake.staged[k]); /* a later one replaces it */
		if (!seen)
			ret[n++] = &fake.staged[k];
	}
	return n;
}

static int fake_lookup_failure(void)
{
	int r = atomic_load(&fake.lookup_error);

	if (r) {
		fake.failed_lookups++;
		snprintf(fake.base.error, sizeof(fake.base.error), "%s", READ_ERROR);
	}
	return r;
}

static int fake_record(struct ledger *l, const struct ledger_entry *e)
{
	(void)l;
	uv_mutex_lock(&fake.lock);
	if (atomic_load(&fake.full)) {
		fake.failed_records++;
		snprintf(fake.base.error, sizeof(fake.base.error), "%s", FULL_ERROR);
		uv_mutex_unlock(&fake.lock);
		return -ENOSPC;
	}
	if (fake.n_staged == MAX_STAGED || ledger_entry_copy(&fake.staged[fake.n_staged], e) < 0)
		fake.harness_errors++;
	else
		fake.n_staged++;
	uv_mutex_unlock(&fake.lock);
	return 0;
}

/* As ledger_sqlite.c's STMT_FIND_IMPORTED: done, same content and settings, finished at or
 * after SINCE_MS; the latest finished. */
static int fake_find_imported(struct ledger *l, const char *folder, const char *sha256,
			      const char *settings_hash, int64_t since_ms, struct ledger_entry *ret)
{
	const struct ledger_entry *view[MAX_ROWS + MAX_STAGED], *best = NULL;
	size_t n;
	int r;

	(void)l;
	uv_mutex_lock(&fake.lock);
	if (fake.n_asked > 0) {
		fake.asked[fake.n_asked - 1].want_imported = true;
		fake.asked[fake.n_asked - 1].since_ms = since_ms;
	}
	if ((r = fake_lookup_failure()) < 0)
		goto out;
	n = fake_view(view);
	for (size_t i = 0; i < n; i++) {
		const struct ledger_entry *e = view[i];

		if (strcmp(e->folder, folder) == 0 && strcmp(e->sha256, sha256) == 0 &&
		    e->settings_hash[0] && strcmp(e->settings_hash, settings_hash) == 0 &&
		    e->status == LEDGER_DONE && e->finished_at_ms >= since_ms &&
		    (!best || e->finished_at_ms > best->finished_at_ms))
			best = e;
	}
	r = !best ? -ENOENT : ledger_entry_copy(ret, best);
out:
	uv_mutex_unlock(&fake.lock);
	return r;
}

/* As STMT_FIND_UNFINISHED: this file, this content, not finished; the latest claimed. Every
 * look-up asks this first: the question is kept. */
static int fake_find_unfinished(struct ledger *l, const char *folder, const char *file,
				const char *sha256, struct ledger_entry *ret)
{
	const struct ledger_entry *view[MAX_ROWS + MAX_STAGED], *best = NULL;
	size_t n;
	int r;

	(void)l;
	uv_mutex_lock(&fake.lock);
	if (fake.n_asked < MAX_ASKED) {
		struct asked *a = &fake.asked[fake.n_asked++];

		memset(a, 0, sizeof(*a));
		snprintf(a->file, sizeof(a->file), "%s", file);
		snprintf(a->sha256, sizeof(a->sha256), "%s", sha256);
		a->commit = fake.n_commits + 1;
	}
	if ((r = fake_lookup_failure()) < 0)
		goto out;
	n = fake_view(view);
	for (size_t i = 0; i < n; i++) {
		const struct ledger_entry *e = view[i];

		if (strcmp(e->folder, folder) == 0 && strcmp(e->file, file) == 0 &&
		    strcmp(e->sha256, sha256) == 0 && e->finished_at_ms == 0 &&
		    (!best || e->claimed_at_ms > best->claimed_at_ms))
			best = e;
	}
	r = !best ? -ENOENT : ledger_entry_copy(ret, best);
out:
	uv_mutex_unlock(&fake.lock);
	return r;
}

/* As STMT_FIND_UPLOADED: another file of the content and settings, uploaded, not finished. */
static int fake_find_uploaded(struct ledger *l, const char *folder, const char *file,
			      const char *sha256, const char *settings_hash,
			      struct ledger_entry *ret)
{
	const struct ledger_entry *view[MAX_ROWS + MAX_STAGED], *best = NULL;
	size_t n;
	int r;

	(void)l;
	uv_mutex_lock(&fake.lock);
	if ((r = fake_lookup_failure()) < 0)
		goto out;
	n = fake_view(view);
	for (size_t i = 0; i < n; i++) {
		const struct ledger_entry *e = view[i];

		if (strcmp(e->folder, folder) == 0 && strcmp(e->file, file) != 0 &&
		    strcmp(e->sha256, sha256) == 0 && e->settings_hash[0] &&
		    strcmp(e->settings_hash, settings_hash) == 0 && e->status == LEDGER_UPLOADED &&
		    e->finished_at_ms == 0 && (!best || e->claimed_at_ms > best->claimed_at_ms))
			best = e;
	}
	r = !best ? -ENOENT : ledger_entry_copy(ret, best);
out:
	uv_mutex_unlock(&fake.lock);
	return r;
}

static int fake_knows_import(struct ledger *l, const char *import_id, int64_t since_ms)
{
	const struct ledger_entry *view[MAX_ROWS + MAX_STAGED];
	size_t n, len = strlen(import_id);
	int r;

	(void)l;
	uv_mutex_lock(&fake.lock);
	if ((r = fake_lookup_failure()) < 0)
		goto out;
	n = fake_view(view);
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *p = view[i]->import_ids;

		if (!p || view[i]->uploaded_at_ms < since_ms)
			continue;
		for (; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
			if (strncmp(p, import_id, len) == 0 && (p[len] == ',' || !p[len]))
				r = 1;
	}
out:
	uv_mutex_unlock(&fake.lock);
	return r;
}

static int fake_list(struct ledger *l, const struct ledger_query *q, ledger_list_cb cb,
		     void *data)
{
	(void)l;
	(void)q;
	(void)cb;
	(void)data;
	return 0; /* the daemon never lists */
}

static int fake_prune(struct ledger *l, int64_t before_ms, uint64_t *ret_n)
{
	(void)l;
	(void)before_ms;
	*ret_n = 0;
	return 0;
}

static int fake_begin(struct ledger *l)
{
	(void)l;
	uv_mutex_lock(&fake.lock);
	if (fake.n_staged)
		fake.harness_errors++; /* a transaction inside a transaction */
	uv_mutex_unlock(&fake.lock);
	return 0;
}

static void fake_drop_staged(void)
{
	for (size_t k = 0; k < fake.n_staged; k++)
		ledger_entry_clear(&fake.staged[k]);
	fake.n_staged = 0;
}

static int fake_commit(struct ledger *l)
{
	(void)l;
	uv_mutex_lock(&fake.lock);
	fake.n_commits++;
	for (size_t k = 0; k < fake.n_staged; k++) {
		struct written *w;

		fake_put_row(&fake.staged[k]);
		if (fake.n_journal == MAX_JOURNAL) {
			fake.harness_errors++;
			continue;
		}
		w = &fake.journal[fake.n_journal];
		if (ledger_entry_copy(&w->e, &fake.staged[k]) < 0) {
			fake.harness_errors++;
			continue;
		}
		w->where = places_of(w->e.file);
		w->commit = fake.n_commits;
		fake.n_journal++;
	}
	fake_drop_staged();
	uv_mutex_unlock(&fake.lock);
	return 0;
}

static int fake_rollback(struct ledger *l)
{
	(void)l;
	uv_mutex_lock(&fake.lock);
	fake_drop_staged();
	uv_mutex_unlock(&fake.lock);
	return 0;
}

static void fake_close(struct ledger *l)
{
	(void)l; /* the test owns it */
}

static const struct ledger_ops fake_ops = {
	.name = "fake",
	.record = fake_record,
	.find_imported = fake_find_imported,
	.find_unfinished = fake_find_unfinished,
	.find_uploaded = fake_find_uploaded,
	.knows_import = fake_knows_import,
	.list = fake_list,
	.prune = fake_prune,
	.begin = fake_begin,
	.commit = fake_commit,
	.rollback = fake_rollback,
	.close = fake_close,
};

/* ---- what the test does with it ---------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void settings_hash(char out[65])
{
	resend_settings_hash(&F.cfg->folders[0], out);
}

/* A row an earlier run left: FILE of content CSV in FOLDER_NAME, with STATUS. */
static void seed(const char *folder_name, const char *file, const char *csv, const char *settings,
		 enum ledger_status status, int64_t claimed_at_ms, int64_t finished_at_ms,
		 const char *import_ids)
{
	struct ledger_entry e = {
		.folder = (char *)folder_name,
		.file = (char *)file,
		.claimed_at_ms = claimed_at_ms,
		.bytes = strlen(csv),
		.attempts = 1,
		.uploaded_at_ms = import_ids ? claimed_at_ms + 1000 : 0,
		.finished_at_ms = finished_at_ms,
		.import_ids = (char *)import_ids,
		.status = status,
		.total = -1, .created = -1, .updated = -1, .skipped = -1, .failed = -1,
	};

	text_sha256(csv, e.sha256);
	snprintf(e.settings_hash, sizeof(e.settings_hash), "%s", settings);
	uv_mutex_lock(&fake.lock);
	fake_put_row(&e);
	uv_mutex_unlock(&fake.lock);
}

/* An import of CSV from EARLIER.csv, in this folder under its settings, finished AGO_MS ago. */
static void seed_earlier_import(const char *csv, int64_t ago_ms)
{
	char h[65];
	int64_t finished = now_ms() - ago_ms;

	settings_hash(h);
	seed(FOLDER, "earlier.csv", csv, h, LEDGER_DONE, finished - 60000, finished, EARLIER_ID);
}

static void set_full(bool on)
{
	atomic_store(&fake.full, on);
}

static void set_lookup_error(int r)
{
	atomic_store(&fake.lookup_error, r);
}

/* The statuses the ledger committed for FILE, in order, space-separated (kept). */
static const char *statuses_of(const char *file)
{
	char buf[512] = "";
	size_t n = 0;

	uv_mutex_lock(&fake.lock);
	for (size_t i = 0; i < fake.n_journal && n < sizeof(buf); i++) {
		if (strcmp(fake.journal[i].e.file, file) == 0)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "",
					      ledger_status_name(fake.journal[i].e.status));
	}
	uv_mutex_unlock(&fake.lock);
	return keep(strdup(buf));
}

/* The first entry committed for FILE with STATUS; fails the test when there is none. Entries
 * never move once committed. */
static const struct written *written_as(const char *file, enum ledger_status status)
{
	const struct written *w = NULL;

	uv_mutex_lock(&fake.lock);
	for (size_t i = 0; i < fake.n_journal && !w; i++) {
		if (strcmp(fake.journal[i].e.file, file) == 0 && fake.journal[i].e.status == status)
			w = &fake.journal[i];
	}
	uv_mutex_unlock(&fake.lock);
	if (!w)
		fail_msg("the ledger never committed '%s' as %s (it has: %s)", file,
			 ledger_status_name(status), statuses_of(file));
	return w;
}

static size_t n_journal(void)
{
	size_t n;

	uv_mutex_lock(&fake.lock);
	n = fake.n_journal;
	uv_mutex_unlock(&fake.lock);
	return n;
}

/* How many look-ups were asked about FILE. */
static size_t lookups_of(const char *file)
{
	size_t n = 0;

	uv_mutex_lock(&fake.lock);
	for (size_t i = 0; i < fake.n_asked; i++)
		n += strcmp(fake.asked[i].file, file) == 0;
	uv_mutex_unlock(&fake.lock);
	return n;
}

static struct asked first_lookup_of(const char *file)
{
	struct asked a = {0};
	bool found = false;

	uv_mutex_lock(&fake.lock);
	for (size_t i = 0; i < fake.n_asked && !found; i++) {
		if (strcmp(fake.asked[i].file, file) == 0) {
			a = fake.asked[i];
			found = true;
		}
	}
	uv_mutex_unlock(&fake.lock);
	if (!found)
		fail_msg("the ledger was never asked about '%s'", file);
	return a;
}

static unsigned failed_records(void)
{
	unsigned n;

	uv_mutex_lock(&fake.lock);
	n = fake.failed_records;
	uv_mutex_unlock(&fake.lock);
	return n;
}

static unsigned failed_lookups(void)
{
	unsigned n;

	uv_mutex_lock(&fake.lock);
	n = fake.failed_lookups;
	uv_mutex_unlock(&fake.lock);
	return n;
}

/* The entries of one file share its key: the ledger holds one row for it, replaced at each
 * step. */
static void assert_one_key(const char *file)
{
	const struct written *first = NULL;

	uv_mutex_lock(&fake.lock);
	for (size_t i = 0; i < fake.n_journal; i++) {
		const struct written *w = &fake.journal[i];

		if (strcmp(w->e.file, file) != 0)
			continue;
		if (!first)
			first = w;
		else if (!same_key(&first->e, &w->e)) {
			uv_mutex_unlock(&fake.lock);
			fail_msg("'%s' was recorded under two keys (claimed at %lld and %lld)", file,
				 (long long)first->e.claimed_at_ms, (long long)w->e.claimed_at_ms);
		}
	}
	uv_mutex_unlock(&fake.lock);
	if (!first)
		fail_msg("the ledger has no entry of '%s'", file);
	assert_string_equal(first->e.folder, FOLDER);
	assert_true(first->e.claimed_at_ms > 0);
}

/* The end of FILE, as the ledger has it: its last entry, with STATUS, committed while the file
 * was still in processing (the ledger learns how a file ended before it moves). */
static const struct written *assert_end_recorded(const char *file, enum ledger_status status)
{
	const struct written *w = NULL;
	char h[65];

	uv_mutex_lock(&fake.lock);
	for (size_t i = 0; i < fake.n_journal; i++) {
		if (strcmp(fake.journal[i].e.file, file) == 0)
			w = &fake.journal[i];
	}
	uv_mutex_unlock(&fake.lock);
	if (!w || w->e.status != status)
		fail_msg("'%s' did not end as %s in the ledger (it has: %s)", file,
			 ledger_status_name(status), statuses_of(file));
	if (w->where != IN_PROCESSING)
		fail_msg("'%s' was recorded as %s while it was in%s, not in processing", file,
			 ledger_status_name(status), places_str(w->where));
	assert_true(w->e.finished_at_ms > 0);
	settings_hash(h);
	assert_string_equal(w->e.settings_hash, h);
	return w;
}

/* ---- what the engine and the processing directory say ------------------------------------ */

/* Jobs in RECORDING, FOLLOW_WAIT or POLLING (engine_counts' "following"): with follow_import
 * off, those in RECORDING. */
static size_t n_following(void)
{
	struct engine_counts c;

	engine_counts(F.js, &c);
	return c.following;
}

/* Jobs in LEDGER_WAIT, FINISHING or FINISH_WAIT: while the ledger fails, in LEDGER_WAIT. */
static size_t n_finishing(void)
{
	struct engine_counts c;

	engine_counts(F.js, &c);
	return c.finishing;
}

/* The import id the state record of processing/NAME holds ("" for none); fails the test when
 * there is no whole record. Read between loop turns, with no write of it under way. */
static const char *recorded_import(const char *name)
{
	struct staterec rec;
	char *id;

	if (!read_record(name, &rec))
		fail_msg("no whole state record of '%s' in processing", name);
	id = keep(strdup(rec.import_id));
	staterec_clear(&rec);
	return id;
}

/* Copies every regular file of FROM (dotfiles too) into TO, made when missing. */
static void copy_files(const char *from, const char *to)
{
	char path[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;

	if (mkdir(to, 0700) != 0 && errno != EEXIST)
		fail_msg("cannot make %s: %s", to, strerror(errno));
	d = opendir(from);
	if (!d)
		fail_msg("cannot open %s: %s", from, strerror(errno));
	while ((de = readdir(d))) {
		size_t len;
		char *text;

		path_of(path, sizeof(path), from, de->d_name);
		if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		text = read_whole(from, de->d_name, &len);
		if (!text)
			fail_msg("cannot read %s", path);
		put_file(to, de->d_name, text, len);
		free(text);
	}
	closedir(d);
}

/* The files of processing (no dotfiles) in the order readdir gives them, which is the order in
 * which the engine lists them (fsops_list) and starts them: *RET_N of them, at most MAX. */
static void list_processing(char (*names)[NAME_MAX + 1], size_t max, size_t *ret_n)
{
	struct dirent *de;
	size_t n = 0;
	DIR *d = opendir(F.proc);

	if (!d)
		fail_msg("cannot open %s: %s", F.proc, strerror(errno));
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == max) {
			closedir(d);
			fail_msg("more than %zu files in processing", max);
		}
		snprintf(names[n++], NAME_MAX + 1, "%s", de->d_name);
	}
	closedir(d);
	*ret_n = n;
}

/* The ledger as a crash would leave it: FILE's row back to the entry committed with STATUS
 * (what was queued after it never reached the disk). The journal keeps what was committed. */
static void ledger_back_to(const char *file, enum ledger_status status)
{
	const struct written *w = written_as(file, status);

	uv_mutex_lock(&fake.lock);
	fake_put_row(&w->e);
	uv_mutex_unlock(&fake.lock);
}

/* ---- setup and teardown ------------------------------------------------------------------ */

static void fake_clear(void)
{
	for (size_t i = 0; i < fake.n_rows; i++)
		ledger_entry_clear(&fake.rows[i]);
	for (size_t i = 0; i < fake.n_journal; i++)
		ledger_entry_clear(&fake.journal[i].e);
	fake_drop_staged();
	fake.n_rows = fake.n_journal = fake.n_asked = 0;
	fake.n_commits = fake.failed_records = fake.failed_lookups = fake.harness_errors = 0;
	atomic_store(&fake.full, false);
	atomic_store(&fake.lookup_error, 0);
}

static int ledger_setup(void **state)
{
	int r = setup(state);

	if (r < 0)
		return r;
	if (!fake.lock_made) {
		if (uv_mutex_init(&fake.lock) < 0)
			return -1;
		fake.lock_made = true;
	}
	fake_clear();
	fake.base.ops = &fake_ops;
	fake.base.error[0] = '\0';
	F.ledger = &fake.base;
	return 0;
}

static int ledger_teardown(void **state)
{
	/* A failed test may leave the ledger failing: its thread would then hold the close up
	 * for seconds. */
	set_full(false);
	set_lookup_error(0);
	teardown(state);
	if (F.lq) {
		/* The loop was abandoned with the thread still running: stop it all the same. */
		ledgerq_close(F.lq);
		F.lq = NULL;
	}
	fake_clear();
	return 0;
}

/* Every test ends here: the fixture's finish (the engine drained and closed, the loop closed),
 * then what held for the ledger. */
static void ledger_finish(void)
{
	finish();
	assert_int_equal(fake.harness_errors, 0);
}

#define TL(f) cmocka_unit_test_setup_teardown(f, ledger_setup, ledger_teardown)

/* ---- 1. LOOKING_UP: content never imported ------------------------------------------------ */

/* The ledger is asked, finds nothing, and learns of the file at each step: claimed, uploaded
 * (with its import id), done (with the import's counts), in that order, the end before the
 * move. */
static void test_new_content_recorded_in_order(void **state)
{
	const struct written *claimed, *uploaded, *done;
	const cJSON *rep;
	struct asked a;
	char sha[65];
	int64_t before = now_ms();

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_only_in("x.csv", IN_DONE);
	assert_int_equal(n_uploads(), 1);
	assert_upload_of(upload(0), F.done, "x.csv", "x.csv");
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_true(jnull(rep, "duplicate_of"));

	/* Asked once, before the upload, about this content, within the 30 days' window. */
	assert_int_equal(lookups_of("x.csv"), 1);
	a = first_lookup_of("x.csv");
	assert_string_equal(a.sha256, sha);
	assert_true(a.want_imported);
	assert_in_range(a.since_ms, before - 30 * 24 * HOUR_MS - 1000,
			now_ms() - 30 * 24 * HOUR_MS);

	assert_string_equal(statuses_of("x.csv"), "claimed uploaded done");
	assert_one_key("x.csv");
	claimed = written_as("x.csv", LEDGER_CLAIMED);
	assert_int_equal(claimed->where, IN_PROCESSING);
	assert_null(claimed->e.import_ids);
	assert_int_equal(claimed->e.finished_at_ms, 0);

	uploaded = written_as("x.csv", LEDGER_UPLOADED);
	assert_int_equal(uploaded->where, IN_PROCESSING);
	assert_string_equal(uploaded->e.sha256, sha);
	assert_int_equal(uploaded->e.bytes, strlen(CSV_GOOD));
	assert_non_null(uploaded->e.import_ids);
	assert_string_equal(uploaded->e.import_ids, upload(0)->import_id);
	assert_int_equal(uploaded->e.attempts, 1);
	assert_true(uploaded->e.uploaded_at_ms > 0);
	assert_int_equal(uploaded->e.finished_at_ms, 0);

	done = assert_end_recorded("x.csv", LEDGER_DONE);
	assert_string_equal(done->e.sha256, sha);
	assert_string_equal(done->e.import_ids, upload(0)->import_id);
	assert_int_equal(done->e.uploaded_at_ms, uploaded->e.uploaded_at_ms);
	assert_true(done->e.finished_at_ms >= done->e.uploaded_at_ms);
	assert_int_equal(done->e.total, 3);
	assert_int_equal(done->e.created, 2);
	assert_int_equal(done->e.updated, 1);
	assert_int_equal(done->e.skipped, 0);
	assert_int_equal(done->e.failed, 0);
	assert_null(done->e.error);
	assert_null(done->e.duplicate_of);
	/* The claim was committed with the look-up's batch or before it: before the answer that
	 * let the upload start. */
	assert_true(claimed->commit <= a.commit);
	ledger_finish();
	assert_int_equal(n_journal(), 3);
}

/* ---- 2. on_duplicate: an earlier import of the same content -------------------------------- */

static void test_duplicate_skipped(void **state)
{
	const struct written *w;
	const cJSON *rep, *dup;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	seed_earlier_import(CSV_GOOD, HOUR_MS);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(F.n_calls, 0); /* nothing sent */
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_true(jnull(rep, "import_id"));
	assert_true(jnull(rep, "error"));
	dup = jobj(rep, "duplicate_of");
	assert_string_equal(jstr(dup, "file"), "earlier.csv");
	assert_int_equal(cJSON_GetArraySize(jget(dup, "import_ids")), 1);
	assert_string_equal(cJSON_GetArrayItem(jget(dup, "import_ids"), 0)->valuestring,
			    EARLIER_ID);
	assert_int_equal(log_count("'x.csv' skipped: the same content was imported from "
				   "'earlier.csv'"),
			 1);

	assert_string_equal(statuses_of("x.csv"), "claimed skipped");
	assert_one_key("x.csv");
	w = assert_end_recorded("x.csv", LEDGER_SKIPPED);
	assert_string_equal(w->e.duplicate_of, "earlier.csv");
	assert_null(w->e.import_ids);
	assert_null(w->e.error);
	assert_int_equal(w->e.attempts, 0);
	ledger_finish();
}

static void test_duplicate_failed(void **state)
{
	const struct written *w;
	const cJSON *rep;
	const char *msg;

	(void)state;
	F.cfg->folders[0].settings.on_duplicate = CONFIG_ON_DUPLICATE_FAIL;
	put_csv("x.csv", CSV_GOOD);
	seed_earlier_import(CSV_GOOD, HOUR_MS);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	msg = jstr(jobj(rep, "error"), "message");
	assert_non_null(strstr(msg, "the same content was imported from 'earlier.csv'"));
	assert_non_null(strstr(msg, EARLIER_ID));
	assert_non_null(strstr(msg, "on_duplicate is fail"));
	assert_string_equal(jstr(jobj(rep, "duplicate_of"), "file"), "earlier.csv");

	assert_string_equal(statuses_of("x.csv"), "claimed failed");
	w = assert_end_recorded("x.csv", LEDGER_FAILED);
	assert_string_equal(w->e.duplicate_of, "earlier.csv");
	assert_non_null(w->e.error);
	assert_non_null(strstr(w->e.error, "on_duplicate is fail"));
	assert_null(w->e.import_ids);
	ledger_finish();
}

static void test_duplicate_imported_again(void **state)
{
	const struct written *w;
	const cJSON *rep;

	(void)state;
	F.cfg->folders[0].settings.on_duplicate = CONFIG_ON_DUPLICATE_IMPORT;
	put_csv("x.csv", CSV_GOOD);
	seed_earlier_import(CSV_GOOD, HOUR_MS);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_upload_of(upload(0), F.done, "x.csv", "x.csv");
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_true(jnull(rep, "duplicate_of"));
	assert_int_equal(log_count("skipped"), 0);
	assert_string_equal(statuses_of("x.csv"), "claimed uploaded done");
	w = assert_end_recorded("x.csv", LEDGER_DONE);
	assert_string_equal(w->e.import_ids, upload(0)->import_id);
	assert_null(w->e.duplicate_of);
	ledger_finish();
}

/* Only an import of this folder, under its settings, within duplicate_window counts: one of an
 * hour too early, one under other settings and one in another folder are no duplicates. */
static void test_duplicate_outside_window(void **state)
{
	char other[65];
	struct asked a;
	int64_t before = now_ms();

	(void)state;
	F.cfg->folders[0].settings.duplicate_window_s = 3600;
	put_csv("x.csv", CSV_GOOD);
	seed_earlier_import(CSV_GOOD, 2 * HOUR_MS);
	memset(other, 'e', 64);
	other[64] = '\0';
	seed(FOLDER, "other-settings.csv", CSV_GOOD, other, LEDGER_DONE, before - 120000,
	     before - 60000, EARLIER_ID);
	settings_hash(other);
	seed("elsewhere", "x.csv", CSV_GOOD, other, LEDGER_DONE, before - 120000, before - 60000,
	     EARLIER_ID);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	a = first_lookup_of("x.csv");
	assert_in_range(a.since_ms, before - HOUR_MS - 1000, now_ms() - HOUR_MS);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_DONE);
	assert_true(jnull(report(F.done, "x.csv"), "duplicate_of"));
	assert_string_equal(statuses_of("x.csv"), "claimed uploaded done");
	assert_end_recorded("x.csv", LEDGER_DONE);
	ledger_finish();
}

/* ---- 3. DUP_WAIT: copies in flight together ------------------------------------------------ */

/* The other of A and B. */
static const char *other_of(const char *name, const char *a, const char *b)
{
	return strcmp(name, a) == 0 ? b : a;
}

/* Two copies dropped together: one is uploaded, the other waits for its outcome (not
 * uploaded meanwhile) and is skipped once the first is done. */
static void test_copies_together_second_skipped(void **state)
{
	const char *first, *second;
	char line[640];
	const struct written *w;
	const cJSON *dup;
	uint64_t released_at;

	(void)state;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() + log_count("waits: '") >= 2);
	first = upload(0)->filename;
	second = other_of(first, "a.csv", "b.csv");
	snprintf(line, sizeof(line), "'%s' waits: '%s', of the same content, is being imported",
		 second, first);
	/* It waits: not uploaded while the first's outcome is unknown. */
	run_for(300);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(log_count(line), 1);
	assert_only_in(second, IN_PROCESSING);
	assert_string_equal(statuses_of(second), "claimed");

	/* Asked again as soon as the first ends, not at its next look every 10 s. */
	release_call(0, (struct answer){.status = 201});
	released_at = uv_now(&F.loop);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_true(uv_now(&F.loop) - released_at < 5000);
	assert_int_equal(n_uploads(), 1);
	assert_only_in(first, IN_DONE);
	assert_only_in(second, IN_DONE);
	dup = jobj(report(F.done, second), "duplicate_of");
	assert_string_equal(jstr(dup, "file"), first);
	assert_string_equal(cJSON_GetArrayItem(jget(dup, "import_ids"), 0)->valuestring,
			    upload(0)->import_id);
	assert_int_equal(log_count(line), 1);
	assert_int_equal(log_count("waits: '"), 1);

	assert_string_equal(statuses_of(first), "claimed uploaded done");
	assert_string_equal(statuses_of(second), "claimed skipped");
	w = assert_end_recorded(second, LEDGER_SKIPPED);
	assert_string_equal(w->e.duplicate_of, first);
	/* The second's end came after the first's. */
	assert_true(w->commit > written_as(first, LEDGER_DONE)->commit);
	ledger_finish();
}

/* Three copies: the first fails, so the next is imported, and the last, which waits twice (for
 * the first, then for the second), says so once and is skipped as the second's duplicate. */
static void test_copies_together_first_fails(void **state)
{
	const char *names[] = {"a.csv", "b.csv", "c.csv"};
	const char *first, *second, *third = NULL;
	char line[640];
	const struct written *w;

	(void)state;
	for (size_t i = 0; i < 3; i++)
		put_csv(names[i], CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(submit(names[i]), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() + log_count("of the same content, is being imported") >= 3);
	first = upload(0)->filename;
	run_for(200);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(log_count("of the same content, is being imported"), 2);

	release_call(0, (struct answer){.status = 422,
					.body = "{\"statusCode\":422,\"name\":\"validation_error\","
						"\"message\":\"bad file\"}"});
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);
	assert_int_equal(n_uploads(), 2);
	second = upload(1)->filename;
	assert_string_not_equal(second, first);
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(names[i], first) != 0 && strcmp(names[i], second) != 0)
			third = names[i];
	}
	assert_non_null(third);
	assert_upload_of(upload(1), F.done, second, second);
	assert_only_in(first, IN_FAILED);
	assert_only_in(second, IN_DONE);
	assert_only_in(third, IN_DONE);
	assert_true(jnull(report(F.done, second), "duplicate_of"));
	assert_string_equal(jstr(jobj(report(F.done, third), "duplicate_of"), "file"), second);

	/* Each waiter said it once, naming the file it first waited for. */
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(names[i], first) == 0)
			continue;
		snprintf(line, sizeof(line), "'%s' waits: '%s', of the same content", names[i], first);
		assert_int_equal(log_count(line), 1);
	}
	assert_int_equal(log_count("waits: '"), 2);

	assert_string_equal(statuses_of(first), "claimed failed"); /* refused: no import */
	assert_string_equal(statuses_of(second), "claimed uploaded done");
	assert_string_equal(statuses_of(third), "claimed skipped");
	assert_end_recorded(first, LEDGER_FAILED);
	assert_end_recorded(second, LEDGER_DONE);
	w = assert_end_recorded(third, LEDGER_SKIPPED);
	assert_string_equal(w->e.duplicate_of, second);
	ledger_finish();
}

/* ---- 4. a resumed file whose import the ledger knows -------------------------------------- */

/* Left in processing by a run that uploaded it and recorded the import in the ledger, not in
 * its state record: only followed, never uploaded again; a copy dropped meanwhile waits for it
 * and is then skipped. */
static void test_resumed_import_from_ledger(void **state)
{
	struct staterec rec = {.attempts = 1};
	int64_t claimed_at = now_ms() - HOUR_MS;
	char h[65], line[640];
	const struct written *w;
	const cJSON *rep;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	assert_int_equal(mkdir(F.proc, 0700), 0);
	put_file(F.proc, "resumed.csv", CSV_GOOD, strlen(CSV_GOOD));
	text_sha256(CSV_GOOD, rec.sha256);
	rec.claimed_at_ms = claimed_at;
	write_record("resumed.csv", &rec); /* no import id */
	settings_hash(h);
	seed(FOLDER, "resumed.csv", CSV_GOOD, h, LEDGER_UPLOADED, claimed_at, 0, RESUMED_ID);
	put_csv("copy.csv", CSV_GOOD);
	script_poll((struct answer){.hold = true});
	start(0);
	RUN_UNTIL(n_polls() == 1);
	assert_string_equal(F.calls[0].import_id, RESUMED_ID);
	assert_int_equal(log_count("'resumed.csv': the ledger has 1 import of it from before the "
				   "restart (" RESUMED_ID ")"),
			 1);

	assert_int_equal(submit("copy.csv"), ENGINE_CLAIMING);
	snprintf(line, sizeof(line),
		 "'copy.csv' waits: 'resumed.csv', of the same content, is being imported");
	RUN_UNTIL(log_count(line) == 1 || n_uploads() > 0);
	run_for(200);
	assert_int_equal(n_uploads(), 0);
	assert_int_equal(log_count(line), 1);
	assert_only_in("copy.csv", IN_PROCESSING);

	release_call(0, (struct answer){.status = 200, .import_status = "completed"});
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_int_equal(n_uploads(), 0); /* no POST at all */
	assert_int_equal(polls_of(RESUMED_ID), 1);

	assert_only_in("resumed.csv", IN_DONE);
	rep = report(F.done, "resumed.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), RESUMED_ID);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_only_in("copy.csv", IN_DONE);
	rep = report(F.done, "copy.csv");
	assert_string_equal(jstr(jobj(rep, "duplicate_of"), "file"), "resumed.csv");
	assert_string_equal(cJSON_GetArrayItem(jget(jobj(rep, "duplicate_of"), "import_ids"), 0)
				    ->valuestring,
			    RESUMED_ID);
	assert_int_equal(count_entries(F.proc, "", ""), 0);

	/* The resumed file's end is recorded under the key the ledger had for it. */
	assert_string_equal(statuses_of("resumed.csv"), "done");
	w = assert_end_recorded("resumed.csv", LEDGER_DONE);
	assert_int_equal(w->e.claimed_at_ms, claimed_at);
	assert_string_equal(w->e.import_ids, RESUMED_ID);
	assert_int_equal(w->e.total, 3);
	assert_string_equal(statuses_of("copy.csv"), "claimed skipped");
	w = assert_end_recorded("copy.csv", LEDGER_SKIPPED);
	assert_string_equal(w->e.duplicate_of, "resumed.csv");
	ledger_finish();
}

/* ---- 5. LEDGER_WAIT: a ledger that cannot be written -------------------------------------- */

/* A ledger that fails (a full disk): no new file is taken; the uploads in flight end, and their
 * files wait in processing until the ledger has their end; once it works again they move and
 * the file held back is taken. Nothing is uploaded twice; one line when it fails, one when it
 * works again. */
static void test_ledger_full_holds_claims_back(void **state)
{
	const char *inflight[] = {"a.csv", "b.csv"};
	unsigned retries;

	(void)state;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	put_csv("c.csv", "Email,First Name\neve@example.com,Eve\n");
	script_upload((struct answer){.hold = true});
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 2);

	set_full(true);
	release_call(0, (struct answer){.status = 201});
	release_call(1, (struct answer){.status = 201});
	RUN_UNTIL(F.n_ledger_failing == 1);
	assert_int_equal(log_count(FULL_ERROR "; " FAILING_LINE), 1);
	/* No new file while it fails. */
	assert_int_equal(submit("c.csv"), ENGINE_LATER);
	park("c.csv");
	retries = failed_records();
	run_for(1000); /* the ledger's thread tries again 500 ms after the failure */
	assert_true(failed_records() > retries);
	for (size_t i = 0; i < 2; i++) {
		assert_only_in(inflight[i], IN_PROCESSING);
		assert_string_equal(statuses_of(inflight[i]), "claimed");
	}
	assert_only_in("c.csv", IN_INBOX);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	assert_int_equal(count_events(EV_CLAIMED, "c.csv"), 0);
	assert_int_equal(n_uploads(), 2);
	assert_int_equal(log_count(FAILING_LINE), 1);

	set_full(false);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);
	assert_int_equal(F.n_ledger_recovered, 1);
	assert_int_equal(log_count(RECOVERED_LINE), 1);
	assert_int_equal(log_count(FAILING_LINE), 1);
	/* The file held back was offered again once the ledger worked, and taken. */
	assert_int_equal(F.accepted_at_capacity, 1);
	assert_int_equal(n_uploads(), 3);
	assert_int_equal(uploads_of("c.csv"), 1);
	for (size_t i = 0; i < 2; i++) {
		const struct written *w;

		assert_int_equal(uploads_of(inflight[i]), 1);
		assert_only_in(inflight[i], IN_DONE);
		assert_string_equal(statuses_of(inflight[i]), "claimed uploaded done");
		w = assert_end_recorded(inflight[i], LEDGER_DONE);
		assert_non_null(w->e.import_ids);
		assert_string_equal(w->e.import_ids,
				    jstr(report(F.done, inflight[i]), "import_id"));
	}
	assert_only_in("c.csv", IN_DONE);
	assert_string_equal(statuses_of("c.csv"), "claimed uploaded done");
	assert_end_recorded("c.csv", LEDGER_DONE);
	ledger_finish();
}

/* A stop while the ledger starts failing: the file waiting for it to record its end is let go
 * (it stays in processing, its import written into its record first, for the next start)
 * instead of holding the stop up. The disk is freed as the daemon stops: the ledger's thread
 * writes what was queued (its end among it) before it ends, and the next start only moves the
 * file, never uploads it again. */
static void test_drain_when_ledger_starts_failing(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("a.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	set_full(true);
	drain(60000);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(F.n_ledger_failing == 1);
	assert_int_equal(log_count(FULL_ERROR "; " FAILING_LINE), 1);
	assert_only_in("a.csv", IN_PROCESSING);
	/* Healed now, the ledger is not waited for: its thread would not try again for 500 ms. */
	set_full(false);
	RUN_UNTIL(F.drained);
	assert_only_in("a.csv", IN_PROCESSING);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	assert_string_equal(statuses_of("a.csv"), "claimed uploaded done");

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "a.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	/* Its import went into its record as it was let go: the record says so. */
	assert_int_equal(log_count("resuming 'a.csv' left in processing (uploaded as import "), 1);
	assert_only_in("a.csv", IN_DONE);
	rep = report(F.done, "a.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_end_recorded("a.csv", LEDGER_DONE);
	ledger_finish();
}

/* The same when the ledger fails already as the stop begins. */
static void test_drain_while_ledger_fails(void **state)
{
	(void)state;
	put_csv("a.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	set_full(true);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(F.n_ledger_failing == 1);
	assert_only_in("a.csv", IN_PROCESSING);

	drain(60000);
	run_for(2000);
	if (!F.drained)
		fail_msg("a stop while the ledger fails is held up by the file waiting for its end "
			 "to be recorded");
	assert_only_in("a.csv", IN_PROCESSING);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	set_full(false);
	ledger_finish();
}

/* A file let go by a stop while its end waited for the ledger (not followed: its import id
 * only in memory and in the ledger's queue), the ledger's thread giving up on what it could
 * not write: the next start must not upload it again. */
static void test_restart_after_end_not_recorded(void **state)
{
	(void)state;
	put_csv("a.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	set_full(true);
	drain(60000);
	release_call(0, (struct answer){.status = 201});
	/* The ledger's thread gives up on the records it could not write within seconds. */
	RUN_UNTIL(F.drained);
	assert_int_equal(log_count("could not be written before the daemon stopped"), 1);
	assert_only_in("a.csv", IN_PROCESSING);
	set_full(false);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "a.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("a.csv", IN_DONE);
	assert_string_equal(jstr(report(F.done, "a.csv"), "import_id"), upload(0)->import_id);
	assert_end_recorded("a.csv", LEDGER_DONE);
	ledger_finish();
}

/* ---- 6. a look-up that fails ---------------------------------------------------------------- */

/* The backend answers a look-up with an error (not "none"): the ledger's thread takes it as the
 * ledger failing, like a write (its whole batch is tried again, with a backoff), and the engine
 * hears it the same way: no new file is taken, and the file looked up waits in processing,
 * neither uploaded nor taken for a duplicate, until the look-up works; then it goes on as if
 * nothing had happened. */
static void test_lookup_fails(void **state)
{
	unsigned tries;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	put_csv("y.csv", CSV_GOOD_2);
	set_lookup_error(-EIO);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(F.n_ledger_failing == 1);
	assert_int_equal(log_count(READ_ERROR "; " FAILING_LINE), 1);
	assert_int_equal(submit("y.csv"), ENGINE_LATER);
	park("y.csv");
	tries = failed_lookups();
	run_for(1000);
	assert_true(failed_lookups() > tries); /* asked again */
	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_only_in("y.csv", IN_INBOX);
	/* Whatever the ledger took meanwhile (the claim, when it went in a batch of its own), it
	 * did not learn of an upload. */
	assert_null(strstr(statuses_of("x.csv"), "uploaded"));

	set_lookup_error(0);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_int_equal(F.n_ledger_recovered, 1);
	assert_int_equal(log_count(FAILING_LINE), 1);
	assert_int_equal(log_count(RECOVERED_LINE), 1);
	assert_int_equal(n_uploads(), 2);
	assert_int_equal(uploads_of("x.csv"), 1);
	assert_int_equal(uploads_of("y.csv"), 1);
	assert_only_in("x.csv", IN_DONE);
	assert_only_in("y.csv", IN_DONE);
	assert_string_equal(statuses_of("x.csv"), "claimed uploaded done");
	assert_end_recorded("x.csv", LEDGER_DONE);
	assert_string_equal(statuses_of("y.csv"), "claimed uploaded done");
	ledger_finish();
}

/* A stop while a look-up fails: the file waiting for its answer is let go at once and stays in
 * processing; the next start, with a ledger that works, imports it once. */
static void test_drain_while_lookup_fails(void **state)
{
	struct staterec rec;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	set_lookup_error(-EIO);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(F.n_ledger_failing == 1);
	drain(60000);
	/* Let go at once (engine_drain): working again now, the ledger writes the claim as its
	 * thread stops, and would answer a look-up nobody waits for. */
	set_lookup_error(0);
	RUN_UNTIL(F.drained);
	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_true(read_record("x.csv", &rec));
	assert_int_equal(rec.import_id[0], '\0');
	staterec_clear(&rec);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_DONE);
	assert_end_recorded("x.csv", LEDGER_DONE);
	ledger_finish();
}

/* ---- 7. the state record while the ledger fails --------------------------------------------- */

/* A file already waiting for the ledger to record its end (not followed: its import id only in
 * memory and in the ledger's queue) when the ledger starts failing: its import goes into its
 * state record then (RECORDING, and back to LEDGER_WAIT), before the ledger works again. Once it
 * does, the file finishes as usual, its end recorded once. Then the crash the record is for,
 * replayed: processing and the ledger as they were while it failed, and a fresh start on them,
 * which must only move the file, never upload it again. */
static void test_ledger_fails_while_end_waits(void **state)
{
	char crash[PATH_MAX], path[PATH_MAX];
	const struct written *w;
	const char *id;

	(void)state;
	put_csv("a.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	id = upload(0)->import_id;
	/* Answered while the ledger works as far as the engine knows: the file goes to
	 * LEDGER_WAIT, its end to the ledger's thread, which then finds it cannot write. */
	set_full(true);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(F.n_ledger_failing == 1 && n_following() == 0);
	assert_int_equal(n_finishing(), 1);
	assert_only_in("a.csv", IN_PROCESSING);
	assert_string_equal(statuses_of("a.csv"), "claimed");
	if (strcmp(recorded_import("a.csv"), id) != 0)
		fail_msg("the ledger fails while 'a.csv' waits for it, and its state record holds "
			 "import '%s', not %s: a crash now would upload it again",
			 recorded_import("a.csv"), id);
	path_of(crash, sizeof(crash), F.root, "crash");
	copy_files(F.proc, crash);

	set_full(false);
	RUN_UNTIL(count_events(EV_LEFT, "a.csv") == 1);
	assert_int_equal(F.n_ledger_recovered, 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("a.csv", IN_DONE);
	assert_string_equal(jstr(report(F.done, "a.csv"), "import_id"), id);
	assert_string_equal(statuses_of("a.csv"), "claimed uploaded done");
	w = assert_end_recorded("a.csv", LEDGER_DONE);
	assert_string_equal(w->e.import_ids, id);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(log_count("cannot record import"), 0);

	/* The crash, replayed on a fresh start: the file and its record in processing as they
	 * were, the ledger with the claim only (what was queued after it never got there). */
	stop_and_close_loop();
	path_of(path, sizeof(path), F.done, "a.csv");
	assert_int_equal(unlink(path), 0);
	path_of(path, sizeof(path), F.done, "a.csv.json");
	assert_int_equal(unlink(path), 0);
	copy_files(crash, F.proc);
	ledger_back_to("a.csv", LEDGER_CLAIMED);
	loop_open();
	start(0);
	RUN_UNTIL(count_events(EV_LEFT, "a.csv") == 2);
	if (n_uploads() != 1)
		fail_msg("uploaded %zu times: the start after the crash did not find the import "
			 "in the state record",
			 n_uploads());
	assert_int_equal(log_count("resuming 'a.csv' left in processing (uploaded as import "), 1);
	assert_only_in("a.csv", IN_DONE);
	assert_string_equal(jstr(report(F.done, "a.csv"), "import_id"), id);
	w = assert_end_recorded("a.csv", LEDGER_DONE);
	assert_string_equal(w->e.import_ids, id);
	ledger_finish();
}

/* A file whose upload is answered once the ledger fails already (another file's end made it
 * fail): its import goes into its record before it waits for the ledger (RECORDING then
 * LEDGER_WAIT); once the ledger works it finishes, its end recorded once. */
static void test_end_reached_while_ledger_fails(void **state)
{
	const char *names[2], *second;

	(void)state;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	script_upload((struct answer){.hold = true});
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 2);
	names[0] = upload(0)->filename;
	second = names[1] = upload(1)->filename;
	set_full(true);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(F.n_ledger_failing == 1);

	release_call(1, (struct answer){.status = 201});
	RUN_UNTIL(upload(1)->answered && n_following() == 0);
	assert_int_equal(n_finishing(), 2);
	assert_only_in(second, IN_PROCESSING);
	assert_string_equal(statuses_of(second), "claimed");
	if (strcmp(recorded_import(second), upload(1)->import_id) != 0)
		fail_msg("'%s' was answered while the ledger failed and waits for it, and its state "
			 "record holds import '%s', not %s: a crash now would upload it again",
			 second, recorded_import(second), upload(1)->import_id);

	set_full(false);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_int_equal(F.n_ledger_recovered, 1);
	assert_int_equal(n_uploads(), 2);
	for (size_t i = 0; i < 2; i++) {
		const struct written *w;

		assert_int_equal(uploads_of(names[i]), 1);
		assert_only_in(names[i], IN_DONE);
		assert_string_equal(jstr(report(F.done, names[i]), "import_id"),
				    upload(i)->import_id);
		assert_string_equal(statuses_of(names[i]), "claimed uploaded done");
		w = assert_end_recorded(names[i], LEDGER_DONE);
		assert_string_equal(w->e.import_ids, upload(i)->import_id);
	}
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	ledger_finish();
}

/* The import cannot be written into the record either (the record made immutable: neither
 * rewritten in place nor replaced): the file goes on waiting in LEDGER_WAIT all the same, said once, and does not
 * try again and again; once the directory and the ledger work, it finishes, recorded once. */
static void test_recording_fails_while_ledger_fails(void **state)
{
	(void)state;
	put_csv("a.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	{
		char rec[STATEREC_NAME_LEN + 1], path[PATH_MAX];

		staterec_name(rec, "a.csv");
		snprintf(path, sizeof(path), "%s/%s", F.proc, rec);
		make_immutable(path);
	}
	set_full(true);
	release_call(0, (struct answer){.status = 201});
	/* Its record written (it failed, said once), or never tried. */
	RUN_UNTIL(F.n_ledger_failing == 1 &&
		  (n_following() == 0 || log_count("'a.csv': cannot record import ") > 0));
	if (log_count("'a.csv': cannot record import ") != 1)
		fail_msg("'a.csv' waits for a ledger that fails and did not try to write its import "
			 "into its record (or said it %u times)",
			 log_count("'a.csv': cannot record import "));
	run_for(300);
	if (n_following() != 0)
		fail_msg("'a.csv' is still, or again, writing its record after it failed once");
	assert_int_equal(n_finishing(), 1);
	assert_int_equal(log_count("cannot record import"), 1);
	assert_string_equal(recorded_import("a.csv"), ""); /* the claim's record, as it was */
	assert_only_in("a.csv", IN_PROCESSING);
	assert_string_equal(statuses_of("a.csv"), "claimed");

	clear_immutable();
	set_full(false);
	RUN_UNTIL(count_events(EV_LEFT, "a.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("a.csv", IN_DONE);
	assert_string_equal(jstr(report(F.done, "a.csv"), "import_id"), upload(0)->import_id);
	assert_string_equal(statuses_of("a.csv"), "claimed uploaded done");
	assert_end_recorded("a.csv", LEDGER_DONE);
	assert_int_equal(log_count("cannot record import"), 1);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	ledger_finish();
}

/* ---- 8. a job that ends inside another's release ------------------------------------------- */

/* Two files of one content left in processing: the holder uploaded (its import in its record)
 * and followed, in FOLLOW_WAIT; the waiter never uploaded (its record holds none), in DUP_WAIT
 * for it. A stop lets the holder go, which wakes the waiter, which the drain lets go at once:
 * it ends inside the holder's release, while the engine walks its jobs. The holder is visited
 * first (the newest job is first, and the file listed last is started last), the waiter is the
 * job after it. Both stay in processing as they were; the next start finishes them, nothing
 * uploaded. (Under AddressSanitizer a walk that kept a pointer to the waiter is caught.) */
static void test_drain_release_ends_next_job(void **state)
{
	char names[2][NAME_MAX + 1], line[2 * NAME_MAX + 64], h[65];
	struct staterec rec = {.attempts = 1};
	int64_t claimed_at = now_ms() - HOUR_MS;
	struct engine_folder_view v = {0};
	const char *holder, *waiter;
	const cJSON *rep;
	size_t n;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	F.polls_in_progress = 1000; /* followed until the stop */
	assert_int_equal(mkdir(F.proc, 0700), 0);
	put_file(F.proc, "p.csv", CSV_GOOD, strlen(CSV_GOOD));
	put_file(F.proc, "q.csv", CSV_GOOD, strlen(CSV_GOOD));
	list_processing(names, 2, &n);
	assert_int_equal(n, 2);
	waiter = names[0];
	holder = names[1];
	text_sha256(CSV_GOOD, rec.sha256);
	rec.claimed_at_ms = claimed_at;
	write_record(waiter, &rec);
	rec.uploaded_at_ms = claimed_at + 1000;
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", RESUMED_ID);
	write_record(holder, &rec);
	/* The ledger has the holder as uploaded: the waiter waits for it whichever is looked up
	 * first. */
	settings_hash(h);
	seed(FOLDER, holder, CSV_GOOD, h, LEDGER_UPLOADED, claimed_at, 0, RESUMED_ID);
	start(0);
	snprintf(line, sizeof(line), "'%s' waits: '%s', of the same content", waiter, holder);
	/* No poll in flight: the holder is in FOLLOW_WAIT, not POLLING. */
	while (log_count(line) == 0 || v.following != 1 || F.live_calls != 0) {
		run_once_or_fail(__FILE__, __LINE__, "the waiter waiting, the holder followed");
		engine_folder_view(F.js, 0, &v);
	}
	drain(1000);
	RUN_UNTIL(F.drained);
	assert_int_equal(n_uploads(), 0);
	assert_only_in(holder, IN_PROCESSING);
	assert_only_in(waiter, IN_PROCESSING);
	assert_string_equal(recorded_import(holder), RESUMED_ID);
	assert_string_equal(recorded_import(waiter), "");

	F.polls_in_progress = 0;
	restart();
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_int_equal(n_uploads(), 0);
	assert_only_in(holder, IN_DONE);
	rep = report(F.done, holder);
	assert_string_equal(jstr(rep, "import_id"), RESUMED_ID);
	assert_true(jnull(rep, "duplicate_of"));
	assert_only_in(waiter, IN_DONE);
	rep = report(F.done, waiter);
	assert_string_equal(jstr(jobj(rep, "duplicate_of"), "file"), holder);
	assert_string_equal(statuses_of(holder), "done");
	assert_string_equal(statuses_of(waiter), "skipped");
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	ledger_finish();
}

/* ---- 9. the states' table ------------------------------------------------------------------ */

/* job_states[] as job_set_state relies on it: a continuation is one of the state's next
 * states; exactly RECORDING, SAVING and RETRY_WAIT take one; ENDED is final, and every other
 * state may end (a drain, an error). Pure: no engine. */
static void test_state_table(void **state)
{
	const unsigned with_then = 1u << JOB_RECORDING | 1u << JOB_SAVING | 1u << JOB_RETRY_WAIT;
	const unsigned all = (1u << JOB_N_STATES) - 1;

	(void)state;
	for (unsigned s = 0; s < JOB_N_STATES; s++) {
		const struct job_state_info *i = job_state_info((enum job_state)s);

		assert_non_null(i->name);
		if (i->next & ~all || i->then & ~all)
			fail_msg("%s: a next state or a continuation that is no state", i->name);
		if (i->then & ~i->next)
			fail_msg("%s: a continuation it may not become (then %#x, next %#x)", i->name,
				 i->then, i->next);
		if (((with_then >> s) & 1) != (i->then != 0))
			fail_msg("%s: %s continuation", i->name,
				 i->then ? "has a" : "has no");
		if (s == JOB_ENDED) {
			if (i->next != 0)
				fail_msg("ended may become something (next %#x)", i->next);
		} else if (!(i->next & (1u << JOB_ENDED))) {
			fail_msg("%s may not end", i->name);
		}
	}
}

/* ARGV[1], when given: only the tests whose names match it (cmocka's filter, '*' a wildcard). */
int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		TL(test_new_content_recorded_in_order),
		TL(test_duplicate_skipped),
		TL(test_duplicate_failed),
		TL(test_duplicate_imported_again),
		TL(test_duplicate_outside_window),
		TL(test_copies_together_second_skipped),
		TL(test_copies_together_first_fails),
		TL(test_resumed_import_from_ledger),
		TL(test_ledger_full_holds_claims_back),
		TL(test_drain_when_ledger_starts_failing),
		TL(test_drain_while_ledger_fails),
		TL(test_restart_after_end_not_recorded),
		TL(test_lookup_fails),
		TL(test_drain_while_lookup_fails),
		TL(test_ledger_fails_while_end_waits),
		TL(test_end_reached_while_ledger_fails),
		TL(test_recording_fails_while_ledger_fails),
		TL(test_drain_release_ends_next_job),
		cmocka_unit_test(test_state_table),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("job_ledger", tests, NULL, NULL);
}
