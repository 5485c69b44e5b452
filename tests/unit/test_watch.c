/* Watching an inbox on a real libuv loop and a real temporary directory: which names are
 * offered, that nothing is offered before it has settled, and the protocol between the watch and
 * the daemon (taken / kept / later / busy, and how a claim went). Offers are counted rather
 * than timed; every run has a hang guard. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "folder.h"
#include "fsops.h"
#include "log.h"
#include "watch.h"

#define MAX_OFFERS 64
#define GUARD_MS 5000 /* a run that waits for an offer fails after this long */
#define SETTLE_MS 50

/* fstatat is replaced for the whole test program to count the looks at one name: the watch's
 * cost per waiting file. */
static char counted_name[64];
static unsigned counted_looks;

int fstatat(int dirfd, const char *restrict path, struct stat *restrict st, int flags)
{
	if (counted_name[0] && strcmp(path, counted_name) == 0)
		counted_looks++;
	return (int)syscall(SYS_newfstatat, dirfd, path, st, flags);
}

struct offer {
	char name[64];
	struct fsops_seen seen;
	off_t size_now; /* the file's size when it was offered */
};

struct fixture {
	char root[64];            /* the test's directory: the inbox, done and failed in it */
	char dir[96];             /* the inbox */
	char done[96], failed[96];
	uv_loop_t loop;
	struct config_folder folder;
	struct folder *dirs;      /* the folder's descriptors, which the watch reads through */
	bool with_processing;     /* open the folder as the daemon does (else as a dry run) */
	unsigned replaced_calls;  /* the folder took what is at the inbox's path again */
	int replaced_result;      /* what the last take said */
	struct watch *watch;
	struct offer offers[MAX_OFFERS];
	size_t n_offers;
	size_t stop_at; /* the loop stops once this many offers were made */
	enum watch_verdict verdict; /* what ready_cb answers */
	unsigned idle_calls;
	bool idle_seen_by_ready; /* watch_idle() was true inside ready_cb */
	uv_timer_t guard;
	uv_timer_t step;
	int steps_left;
	bool guard_fired;
};

static enum watch_verdict ready_cb(struct watch *w, const char *name, const struct fsops_seen *seen,
				   void *data)
{
	struct fixture *fx = data;
	char path[256];
	struct stat st = {0};

	assert_ptr_equal(w, fx->watch);
	if (watch_idle(w))
		fx->idle_seen_by_ready = true;
	snprintf(path, sizeof(path), "%s/%s", fx->dir, name);
	stat(path, &st);
	if (fx->n_offers < MAX_OFFERS) {
		struct offer *o = &fx->offers[fx->n_offers];

		snprintf(o->name, sizeof(o->name), "%s", name);
		o->seen = *seen;
		o->size_now = st.st_size;
	}
	fx->n_offers++;
	if (fx->n_offers >= fx->stop_at)
		uv_stop(&fx->loop);
	return fx->verdict;
}

static void idle_cb(struct watch *w, void *data)
{
	struct fixture *fx = data;

	assert_ptr_equal(w, fx->watch);
	fx->idle_calls++;
}

/* As the daemon does through the engine: the folder takes what is at the inbox's path. */
static int replaced_cb(struct watch *w, void *data)
{
	struct fixture *fx = data;

	assert_ptr_equal(w, fx->watch);
	fx->replaced_calls++;
	fx->replaced_result = folder_reopen_inbox(fx->dirs, &fx->folder);
	return fx->replaced_result;
}

static const char *path_in(const struct fixture *fx, const char *name)
{
	static char bufs[4][256];
	static unsigned slot;
	char *b = bufs[slot++ % 4];

	snprintf(b, 256, "%s/%s", fx->dir, name);
	return b;
}

static void write_file(const struct fixture *fx, const char *name, const char *content)
{
	FILE *f = fopen(path_in(fx, name), "w");

	assert_non_null(f);
	fputs(content, f);
	assert_int_equal(fclose(f), 0);
}

static void append_file(const struct fixture *fx, const char *name, const char *content)
{
	int fd = open(path_in(fx, name), O_WRONLY | O_APPEND | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	assert_int_equal(close(fd), 0);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->root, "/tmp/rdd-watch-XXXXXX");
	assert_non_null(mkdtemp(fx->root));
	snprintf(fx->dir, sizeof(fx->dir), "%s/in", fx->root);
	snprintf(fx->done, sizeof(fx->done), "%s/done", fx->root);
	snprintf(fx->failed, sizeof(fx->failed), "%s/failed", fx->root);
	assert_int_equal(mkdir(fx->dir, 0700), 0);
	assert_int_equal(mkdir(fx->done, 0700), 0);
	assert_int_equal(mkdir(fx->failed, 0700), 0);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	fx->folder.name = "test";
	fx->folder.inbox = fx->dir;
	fx->folder.done = fx->done;
	fx->folder.failed = fx->failed;
	fx->folder.settings.settle_ms = SETTLE_MS;
	fx->folder.settings.rescan_s = 3600;
	fx->folder.settings.pattern = "*.csv";
	fx->verdict = WATCH_TAKEN;
	fx->stop_at = SIZE_MAX;
	counted_name[0] = '\0';
	counted_looks = 0;
	uv_timer_init(&fx->loop, &fx->guard);
	uv_timer_init(&fx->loop, &fx->step);
	fx->guard.data = fx->step.data = fx;
	*state = fx;
	return 0;
}

static void closed_cb(uv_handle_t *h)
{
	(void)h;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[128];

	counted_name[0] = '\0';
	if (fx->watch)
		watch_close(fx->watch);
	uv_close((uv_handle_t *)&fx->guard, closed_cb);
	uv_close((uv_handle_t *)&fx->step, closed_cb);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	/* Every handle closed: a leaked one would make this fail. */
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	folder_free(fx->dirs);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->root);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

static void guard_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	fx->guard_fired = true;
	uv_stop(t->loop);
}

/* Runs the loop for MS milliseconds of loop time, whatever is offered. */
static void run_for(struct fixture *fx, uint64_t ms)
{
	fx->stop_at = SIZE_MAX;
	uv_timer_start(&fx->guard, guard_cb, ms, 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	uv_timer_stop(&fx->guard);
	fx->guard_fired = false;
}

/* Runs the loop until N offers in all have been made; fails after GUARD_MS. */
static void run_until_offers(struct fixture *fx, size_t n)
{
	if (fx->n_offers >= n)
		return;
	fx->stop_at = n;
	fx->guard_fired = false;
	uv_timer_start(&fx->guard, guard_cb, GUARD_MS, 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	uv_timer_stop(&fx->guard);
	fx->stop_at = SIZE_MAX;
	if (fx->n_offers < n)
		fail_msg("%zu offers after %d ms, waiting for %zu", fx->n_offers, GUARD_MS, n);
}

static size_t offers_of(const struct fixture *fx, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < fx->n_offers && i < MAX_OFFERS; i++)
		n += strcmp(fx->offers[i].name, name) == 0;
	return n;
}

static void assert_counts(const struct fixture *fx, size_t settling, size_t parked, size_t busy,
			  size_t claiming)
{
	struct watch_counts c;

	watch_counts(fx->watch, &c);
	if (c.settling != settling || c.parked != parked || c.busy != busy ||
	    c.claiming != claiming)
		fail_msg("counts settling %zu parked %zu busy %zu claiming %zu, expected %zu %zu %zu "
			 "%zu",
			 c.settling, c.parked, c.busy, c.claiming, settling, parked, busy, claiming);
	assert_int_equal(watch_idle(fx->watch), settling + parked + busy + claiming == 0);
}

/* Opens the folder (as a dry run opens it, unless FX->with_processing) and watches it. */
static void start(struct fixture *fx, unsigned flags)
{
	assert_int_equal(folder_new(&fx->folder, !fx->with_processing, &fx->dirs), 0);
	assert_int_equal(folder_open(fx->dirs, &fx->folder), 0);
	assert_int_equal(watch_new(&fx->loop, &fx->folder, fx->dirs, flags, ready_cb, idle_cb,
				   replaced_cb, fx, &fx->watch),
			 0);
}

static void test_candidate_names(void **state)
{
	(void)state;
	assert_true(watch_name_is_candidate("*.csv", "contacts.csv"));
	assert_true(watch_name_is_candidate("*.csv", "CONTACTS.CSV"));
	assert_true(watch_name_is_candidate("contacts-*.csv", "Contacts-2026.csv"));
	assert_false(watch_name_is_candidate("*.csv", ".hidden.csv"));
	assert_false(watch_name_is_candidate("*", ".hidden"));
	assert_false(watch_name_is_candidate("*.csv", "contacts.txt"));
	assert_false(watch_name_is_candidate("*", "contacts.csv.part"));
	assert_false(watch_name_is_candidate("*", "contacts.csv.PARTIAL"));
	assert_false(watch_name_is_candidate("*", "contacts.csv.filepart"));
	assert_false(watch_name_is_candidate("*", "contacts.tmp"));
	assert_false(watch_name_is_candidate("*", "contacts.temp"));
	assert_false(watch_name_is_candidate("*", "contacts.csv.swp"));
	assert_false(watch_name_is_candidate("*", "contacts.csv~"));
	assert_false(watch_name_is_candidate("*", "contacts.csv.crdownload"));
	assert_false(watch_name_is_candidate("*", ""));
	assert_true(watch_name_is_candidate("*", "contacts.csv"));
}

static void test_existing_files_offered_ignored_left(void **state)
{
	struct fixture *fx = *state;
	struct stat st;

	write_file(fx, "a.csv", "email\na@example.com\n");
	write_file(fx, ".b.csv", "email\n");
	write_file(fx, "c.csv.part", "email\n");
	write_file(fx, "d.txt", "email\n");
	write_file(fx, "e.csv~", "email\n");
	assert_int_equal(mkdir(path_in(fx, "dir.csv"), 0700), 0);

	start(fx, 0);
	assert_counts(fx, 1, 0, 0, 0);
	assert_int_equal(fx->idle_calls, 0);
	run_until_offers(fx, 1);
	assert_string_equal(fx->offers[0].name, "a.csv");
	/* What it looked like when it settled is what the claim will compare against. */
	assert_int_equal(fx->offers[0].seen.size, 20);
	assert_int_equal(stat(path_in(fx, "a.csv"), &st), 0);
	assert_int_equal(fx->offers[0].seen.mtime.tv_sec, st.st_mtim.tv_sec);
	assert_int_equal(fx->offers[0].seen.mtime.tv_nsec, st.st_mtim.tv_nsec);
	/* Being claimed now: nothing in the callback saw the watch idle. */
	assert_false(fx->idle_seen_by_ready);
	assert_counts(fx, 0, 0, 0, 1);
	/* Everything else was seen at the same start-up scan: a few settle times more are
	 * plenty for it to have been offered, were it a candidate. */
	run_for(fx, 4 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_int_equal(fx->idle_calls, 0);
	/* Ignored entries are left alone. */
	assert_int_equal(access(path_in(fx, ".b.csv"), F_OK), 0);
	assert_int_equal(access(path_in(fx, "c.csv.part"), F_OK), 0);
	assert_int_equal(access(path_in(fx, "d.txt"), F_OK), 0);
	assert_int_equal(access(path_in(fx, "e.csv~"), F_OK), 0);
	assert_int_equal(access(path_in(fx, "dir.csv"), F_OK), 0);
}

static void test_empty_inbox_is_idle(void **state)
{
	struct fixture *fx = *state;

	start(fx, 0);
	assert_counts(fx, 0, 0, 0, 0);
	run_for(fx, 2 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 0);
}

static void rename_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	assert_int_equal(fx->n_offers, 0);
	assert_int_equal(rename(path_in(fx, "x.csv.part"), path_in(fx, "x.csv")), 0);
}

/* The .part is never offered; the rename is seen through inotify (rescan_s is an hour). */
static void test_part_then_rename(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv.part", "email\nx@example.com\n");
	start(fx, 0);
	assert_counts(fx, 0, 0, 0, 0);
	uv_timer_start(&fx->step, rename_cb, 3 * SETTLE_MS, 0);
	run_until_offers(fx, 1);
	assert_string_equal(fx->offers[0].name, "x.csv");
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
}

/* Opens, appends and closes each time, as a cron job appending rows would: only settling can
 * tell that more is coming. */
static void slow_write_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	append_file(fx, "slow.csv", "row@example.com\n");
	if (--fx->steps_left == 0)
		uv_timer_stop(t);
}

/* A writer appending more often than settle_ms keeps the file from settling. */
static void test_slow_writer_offered_only_when_complete(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "slow.csv", "email\n");
	fx->steps_left = 8;
	/* The writer runs on the watch's own loop: a settle time well above the write interval
	 * keeps a stall of this process on a busy machine from looking like a pause. */
	fx->folder.settings.settle_ms = 300;
	start(fx, 0);
	uv_timer_start(&fx->step, slow_write_cb, 40, 40);
	run_until_offers(fx, 1);
	assert_int_equal(fx->steps_left, 0);
	assert_int_equal(fx->offers[0].size_now, 6 + 8 * 16);
	assert_int_equal(fx->offers[0].seen.size, 6 + 8 * 16);
	run_for(fx, 200);
	assert_int_equal(fx->n_offers, 1);
}

/* One look per settle_ms while it settles, none while it is parked: a backlog costs little. */
static void test_looks_once_per_settle_none_when_parked(void **state)
{
	struct fixture *fx = *state;

	fx->folder.settings.settle_ms = 100;
	write_file(fx, "x.csv", "email\n");
	snprintf(counted_name, sizeof(counted_name), "x.csv");
	fx->verdict = WATCH_LATER;
	start(fx, WATCH_NO_EVENTS);
	run_until_offers(fx, 1);
	/* A start-up look and one after settle_ms; a few more allowed for a slow machine, far
	 * below what polling every tick would cost. */
	assert_in_range(counted_looks, 1, 4);

	counted_looks = 0;
	run_for(fx, 400);
	assert_int_equal(counted_looks, 0);
	assert_int_equal(fx->n_offers, 1);
	assert_counts(fx, 0, 1, 0, 0);
}

static void late_file_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	write_file(fx, "late.csv", "email\n");
}

static void test_no_events_sees_only_startup_scan(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "early.csv", "email\n");
	start(fx, WATCH_NO_EVENTS);
	uv_timer_start(&fx->step, late_file_cb, 20, 0);
	run_until_offers(fx, 1);
	assert_string_equal(fx->offers[0].name, "early.csv");
	run_for(fx, 4 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_int_equal(offers_of(fx, "late.csv"), 0);
	assert_counts(fx, 0, 0, 0, 1);
}

/* LATER: parked, and only watch_offer brings it back; ticks never look at it again. */
static void test_later_parks_until_offer(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "busy.csv", "email\n");
	fx->verdict = WATCH_LATER;
	start(fx, 0);
	run_until_offers(fx, 1);
	assert_counts(fx, 0, 1, 0, 0);
	/* Six settle times: a watch that re-offered parked files on its ticks would have
	 * offered it again several times. */
	run_for(fx, 6 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_counts(fx, 0, 1, 0, 0);
	/* A rescan does not offer it either: it has settled and waits for room. */
	watch_rescan(fx->watch);
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_int_equal(fx->idle_calls, 0);

	fx->verdict = WATCH_TAKEN;
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_TAKEN);
	assert_int_equal(fx->n_offers, 2);
	assert_string_equal(fx->offers[1].name, "busy.csv");
	assert_counts(fx, 0, 0, 0, 1);
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_NONE);
	assert_int_equal(fx->n_offers, 2);
}

/* Parked files are offered longest-parked first; "later" again puts it back at the front. */
static void test_offer_fifo_full_puts_back_first(void **state)
{
	struct fixture *fx = *state;
	char parked[3][64];

	write_file(fx, "a.csv", "email\n");
	write_file(fx, "b.csv", "email\n");
	write_file(fx, "c.csv", "email\n");
	fx->verdict = WATCH_LATER;
	start(fx, 0);
	run_until_offers(fx, 3);
	assert_counts(fx, 0, 3, 0, 0);
	for (int i = 0; i < 3; i++)
		snprintf(parked[i], sizeof(parked[i]), "%s", fx->offers[i].name);
	assert_string_not_equal(parked[0], parked[1]);
	assert_string_not_equal(parked[1], parked[2]);
	assert_string_not_equal(parked[0], parked[2]);

	/* Still no room: the first in line stays first. */
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_FULL);
	assert_string_equal(fx->offers[3].name, parked[0]);
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_FULL);
	assert_string_equal(fx->offers[4].name, parked[0]);
	assert_counts(fx, 0, 3, 0, 0);

	fx->verdict = WATCH_TAKEN;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_TAKEN);
		assert_string_equal(fx->offers[5 + i].name, parked[i]);
	}
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_NONE);
	assert_int_equal(fx->n_offers, 8);
	assert_counts(fx, 0, 0, 0, 3);
}

/* BUSY (a namesake is in processing): neither ticks, rescans nor watch_offer bring it back;
 * watch_poke does. */
static void test_busy_waits_for_poke(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	fx->verdict = WATCH_BUSY;
	start(fx, 0);
	run_until_offers(fx, 1);
	assert_counts(fx, 0, 0, 1, 0);
	run_for(fx, 3 * SETTLE_MS);
	watch_rescan(fx->watch);
	run_for(fx, 2 * SETTLE_MS);
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_NONE);
	assert_int_equal(fx->n_offers, 1);
	assert_counts(fx, 0, 0, 1, 0);

	/* Its namesake left processing: first in line for the freed slot. */
	fx->verdict = WATCH_TAKEN;
	watch_poke(fx->watch, "x.csv");
	assert_counts(fx, 0, 1, 0, 0);
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_TAKEN);
	assert_int_equal(fx->n_offers, 2);
	assert_string_equal(fx->offers[1].name, "x.csv");
	assert_counts(fx, 0, 0, 0, 1);
}

/* A busy file that changed while it waited settles again before it is offered. */
static void test_poke_changed_busy_file_settles_again(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	fx->verdict = WATCH_BUSY;
	start(fx, WATCH_NO_EVENTS);
	run_until_offers(fx, 1);
	append_file(fx, "x.csv", "a@example.com\n");
	fx->verdict = WATCH_TAKEN;
	watch_poke(fx->watch, "x.csv");
	assert_counts(fx, 1, 0, 0, 0);
	run_until_offers(fx, 2);
	assert_int_equal(fx->offers[1].seen.size, 6 + 14);
	assert_counts(fx, 0, 0, 0, 1);
}

/* The claim found a namesake in processing: the same wait for watch_poke. */
static void test_claim_busy_waits_for_poke(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	start(fx, 0);
	run_until_offers(fx, 1);
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_BUSY);
	assert_counts(fx, 0, 0, 1, 0);
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_int_equal(fx->idle_calls, 0);
	watch_poke(fx->watch, "x.csv");
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_TAKEN);
	assert_int_equal(fx->n_offers, 2);
}

/* The claim found it changed (or a writer still had it): it settles again, then is offered
 * again with what it looks like now. */
static void test_claim_changed_settles_again(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	start(fx, WATCH_NO_EVENTS);
	run_until_offers(fx, 1);
	append_file(fx, "x.csv", "a@example.com\n");
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_CHANGED);
	assert_int_equal(fx->n_offers, 1); /* not at once */
	assert_counts(fx, 1, 0, 0, 0);
	run_until_offers(fx, 2);
	assert_string_equal(fx->offers[1].name, "x.csv");
	assert_int_equal(fx->offers[1].seen.size, 6 + 14);
	assert_counts(fx, 0, 0, 0, 1);
}

/* Plays a claim that always finds a writer: whatever is being claimed comes back CHANGED. */
static void writer_holds_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;
	struct watch_counts c;

	watch_counts(fx->watch, &c);
	if (c.claiming == 1)
		watch_claimed(fx->watch, "held.csv", WATCH_CLAIM_CHANGED);
}

/* Even with settle_ms 0, a file whose writer keeps it open is not offered in a busy loop. */
static void test_claim_changed_no_spin_with_settle_0(void **state)
{
	struct fixture *fx = *state;

	fx->folder.settings.settle_ms = 0;
	write_file(fx, "held.csv", "email\n");
	start(fx, WATCH_NO_EVENTS);
	uv_timer_start(&fx->step, writer_holds_cb, 1, 1);
	run_for(fx, 300);
	uv_timer_stop(&fx->step);
	/* It keeps being retried, but at a pace, not a few thousand times. */
	assert_true(fx->n_offers >= 2);
	if (fx->n_offers > 20)
		fail_msg("offered %zu times in 300 ms", fx->n_offers);
}

/* While its claim is in progress a rescan leaves it to the claim; after a failed claim the
 * next rescan finds it again. */
static void test_rescan_skips_claim_in_progress(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	start(fx, 0);
	run_until_offers(fx, 1);
	watch_rescan(fx->watch);
	run_for(fx, 2 * SETTLE_MS);
	watch_rescan(fx->watch);
	run_for(fx, 2 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_counts(fx, 0, 0, 0, 1);

	/* A failed claim is tried again on the watch's retry timer (500 ms first), without a
	 * rescan, and the watch is not idle meanwhile. */
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_FAILED);
	{
		struct watch_counts c;

		watch_counts(fx->watch, &c);
		assert_int_equal(c.retrying, 1);
		assert_int_equal(c.settling + c.parked + c.busy + c.claiming, 0);
	}
	assert_false(watch_idle(fx->watch));
	assert_int_equal(fx->idle_calls, 0);
	run_for(fx, 2 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	watch_rescan(fx->watch); /* a rescan keeps it waiting: it is known */
	assert_int_equal(fx->n_offers, 1);
	run_until_offers(fx, 2);
	assert_string_equal(fx->offers[1].name, "x.csv");
}

/* Claims that keep failing are retried less and less often: the second retry waits twice as
 * long as the first. */
static void test_claim_failed_retry_backs_off(void **state)
{
	struct fixture *fx = *state;
	uint64_t t0, t1, t2;

	write_file(fx, "x.csv", "email\n");
	start(fx, 0);
	run_until_offers(fx, 1);
	t0 = uv_now(&fx->loop);
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_FAILED);
	run_until_offers(fx, 2);
	t1 = uv_now(&fx->loop);
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_FAILED);
	run_until_offers(fx, 3);
	t2 = uv_now(&fx->loop);
	assert_true(t1 - t0 >= 500);
	assert_true(t2 - t1 >= 1000);
	/* A claim that works ends the backoff. */
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_LEFT);
	assert_true(watch_idle(fx->watch));
}

/* The claim has moved the file out of the inbox but not reported yet: a rescan that no longer
 * lists it must not forget it, nor call the watch idle (that would end --once early). */
static void test_rescan_during_claim_of_moved_file(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	assert_int_equal(mkdir(path_in(fx, "proc"), 0700), 0);
	start(fx, 0);
	run_until_offers(fx, 1);
	assert_int_equal(rename(path_in(fx, "x.csv"), path_in(fx, "proc/x.csv")), 0);
	watch_rescan(fx->watch);
	assert_counts(fx, 0, 0, 0, 1);
	assert_int_equal(fx->idle_calls, 0);
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_LEFT);
	assert_counts(fx, 0, 0, 0, 0);
	assert_int_equal(fx->idle_calls, 1);
}

/* A file that changes while its claim is in progress is not offered a second time meanwhile:
 * the claim's outcome (here: it changed) decides. */
static void test_change_during_claim_waits_for_claim(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	start(fx, 0);
	run_until_offers(fx, 1);
	append_file(fx, "x.csv", "a@example.com\n"); /* an inotify event for it */
	run_for(fx, 3 * SETTLE_MS);
	watch_rescan(fx->watch);
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 1);
	assert_counts(fx, 0, 0, 0, 1);
	watch_claimed(fx->watch, "x.csv", WATCH_CLAIM_CHANGED);
	run_until_offers(fx, 2);
	assert_int_equal(fx->offers[1].seen.size, 6 + 14);
}

/* LEFT: the file left the inbox; the watch forgets it, and once the last one has gone the
 * idle callback fires (this is what ends --once). */
static void test_claim_left_forgets_and_idle_fires(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "a.csv", "email\n");
	write_file(fx, "b.csv", "email\n");
	assert_int_equal(mkdir(path_in(fx, "proc"), 0700), 0);
	start(fx, 0);
	run_until_offers(fx, 2);
	assert_counts(fx, 0, 0, 0, 2);
	assert_int_equal(fx->idle_calls, 0);

	assert_int_equal(rename(path_in(fx, "a.csv"), path_in(fx, "proc/a.csv")), 0);
	watch_claimed(fx->watch, "a.csv", WATCH_CLAIM_LEFT);
	assert_counts(fx, 0, 0, 0, 1);
	assert_int_equal(fx->idle_calls, 0);
	assert_int_equal(rename(path_in(fx, "b.csv"), path_in(fx, "proc/b.csv")), 0);
	watch_claimed(fx->watch, "b.csv", WATCH_CLAIM_LEFT);
	assert_counts(fx, 0, 0, 0, 0);
	assert_int_equal(fx->idle_calls, 1);

	/* A claim reported twice, or for a name never offered, changes nothing. */
	watch_claimed(fx->watch, "b.csv", WATCH_CLAIM_LEFT);
	watch_claimed(fx->watch, "never.csv", WATCH_CLAIM_CHANGED);
	assert_counts(fx, 0, 0, 0, 0);
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 2);

	/* A new file of the same name is a new file. */
	write_file(fx, "a.csv", "email\nnew@example.com\n");
	run_until_offers(fx, 3);
	assert_string_equal(fx->offers[2].name, "a.csv");
}

/* KEEP (dry run): left where it is; rescans do not offer it again, a change does. */
static void test_keep_offered_again_only_after_change(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	fx->verdict = WATCH_KEEP;
	start(fx, 0);
	run_until_offers(fx, 1);
	assert_counts(fx, 0, 0, 0, 0);
	for (int i = 0; i < 3; i++) {
		watch_rescan(fx->watch);
		run_for(fx, 2 * SETTLE_MS);
	}
	assert_int_equal(fx->n_offers, 1);
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_NONE);

	/* Dropped again with more rows: seen through inotify, settles, offered as it is now. */
	append_file(fx, "x.csv", "a@example.com\n");
	run_until_offers(fx, 2);
	assert_string_equal(fx->offers[1].name, "x.csv");
	assert_int_equal(fx->offers[1].seen.size, 6 + 14);
}

/* Where inotify is blind (NFS, CIFS, FUSE) the rescan does the work: a kept file that changed
 * is offered again once a rescan has seen it. WATCH_NO_EVENTS stands in for a blind inotify;
 * watch_rescan for the periodic rescan. */
static void test_keep_change_seen_by_rescan(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	fx->verdict = WATCH_KEEP;
	start(fx, WATCH_NO_EVENTS);
	run_until_offers(fx, 1);
	append_file(fx, "x.csv", "a@example.com\n");
	watch_rescan(fx->watch);
	run_for(fx, 3 * SETTLE_MS);
	watch_rescan(fx->watch);
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 2);
	assert_int_equal(fx->offers[1].seen.size, 6 + 14);
}

/* A parked file deleted from the inbox is dropped at once (inotify says IN_DELETE), and the
 * watch is idle; a rescan after it changes nothing. */
static void test_parked_file_deleted_dropped_by_rescan(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	fx->verdict = WATCH_LATER;
	start(fx, 0);
	run_until_offers(fx, 1);
	assert_counts(fx, 0, 1, 0, 0);
	assert_int_equal(unlink(path_in(fx, "x.csv")), 0);
	run_for(fx, 2 * SETTLE_MS);
	assert_counts(fx, 0, 0, 0, 0);
	assert_int_equal(fx->idle_calls, 1);
	watch_rescan(fx->watch);
	assert_counts(fx, 0, 0, 0, 0);
	assert_int_equal(watch_offer(fx->watch), WATCH_OFFER_NONE);
	assert_int_equal(fx->n_offers, 1);
}

/* The inbox moved away and a new one made at its path: the watch says it is lost, forgets the
 * files of the old one, takes the new directory and offers what is dropped there. */
static void test_inbox_replaced_is_taken_again(void **state)
{
	struct fixture *fx = *state;
	char old[300];
	struct watch_counts c;

	write_file(fx, "old.csv", "email\n");
	fx->verdict = WATCH_LATER;
	start(fx, 0);
	run_until_offers(fx, 1);
	snprintf(old, sizeof(old), "%s.old", fx->dir);
	assert_int_equal(rename(fx->dir, old), 0);
	run_for(fx, 100);
	watch_counts(fx->watch, &c);
	assert_int_equal(c.lost_reason, -ENOENT);
	assert_int_equal(c.parked, 0); /* old.csv is not at the inbox's path any more */
	assert_true(watch_idle(fx->watch));

	assert_int_equal(mkdir(fx->dir, 0700), 0);
	write_file(fx, "new.csv", "email\n");
	fx->verdict = WATCH_TAKEN;
	run_until_offers(fx, 2);
	assert_string_equal(fx->offers[1].name, "new.csv");
	watch_counts(fx->watch, &c);
	assert_int_equal(c.lost_reason, 0);
	/* And inotify watches the new one. */
	watch_claimed(fx->watch, "new.csv", WATCH_CLAIM_LEFT);
	write_file(fx, "later.csv", "email\n");
	run_until_offers(fx, 3);
	assert_string_equal(fx->offers[2].name, "later.csv");
	snprintf(old, sizeof(old), "%s.old/old.csv", fx->dir);
	assert_int_equal(unlink(old), 0);
	snprintf(old, sizeof(old), "%s.old", fx->dir);
	assert_int_equal(rmdir(old), 0);
}

/* A settling file that disappears is simply forgotten, and the watch becomes idle. */
static void test_settling_file_deleted_is_forgotten(void **state)
{
	struct fixture *fx = *state;

	write_file(fx, "x.csv", "email\n");
	start(fx, 0);
	assert_counts(fx, 1, 0, 0, 0);
	assert_int_equal(unlink(path_in(fx, "x.csv")), 0);
	run_for(fx, 3 * SETTLE_MS);
	assert_int_equal(fx->n_offers, 0);
	assert_counts(fx, 0, 0, 0, 0);
	assert_true(fx->idle_calls >= 1);
}

/* A folder whose directories are not open (the daemon said why when it tried): no watch, the
 * error, nothing written, no handle left open on the loop (teardown checks). */
static void test_folder_not_open_is_refused(void **state)
{
	struct fixture *fx = *state;
	struct watch *w = (struct watch *)fx;

	assert_int_equal(folder_new(&fx->folder, true, &fx->dirs), 0);
	assert_int_equal(watch_new(&fx->loop, &fx->folder, fx->dirs, 0, ready_cb, idle_cb,
				   replaced_cb, fx, &w),
			 -EINVAL);
	assert_ptr_equal(w, (struct watch *)fx);
	assert_int_equal(fx->idle_calls, 0);
}

/* The watch reads the inbox through the folder's own descriptor: one inbox held, not two. */
static void test_inbox_held_once(void **state)
{
	struct fixture *fx = *state;
	char link[300], target[PATH_MAX];
	unsigned n = 0;
	struct stat in, st;
	DIR *d;
	struct dirent *de;

	fx->with_processing = true;
	start(fx, 0);
	assert_int_equal(stat(fx->dir, &in), 0);
	assert_non_null(d = opendir("/proc/self/fd"));
	while ((de = readdir(d))) {
		ssize_t len;

		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		len = readlink(link, target, sizeof(target) - 1);
		if (len < 0)
			continue;
		target[len] = '\0';
		if (stat(link, &st) == 0 && S_ISDIR(st.st_mode) && st.st_dev == in.st_dev &&
		    st.st_ino == in.st_ino)
			n++;
	}
	closedir(d);
	/* The folder's, and the directory stream opendir had open on /proc is not it. */
	assert_int_equal(n, 1);
}

/* The processing directory renamed under the daemon (inotify's IN_MOVED_FROM): said, and set
 * up again at its path, once; the watch goes on offering what is dropped. */
static void test_processing_renamed_is_set_up_again(void **state)
{
	struct fixture *fx = *state;
	char proc[128], moved[128];
	struct stat st;

	fx->with_processing = true;
	start(fx, 0);
	snprintf(proc, sizeof(proc), "%s/" FSOPS_PROCESSING_DIR, fx->dir);
	snprintf(moved, sizeof(moved), "%s/processing-moved-away", fx->root);
	assert_int_equal(rename(proc, moved), 0);
	/* Not at once: the inbox may be going too (rm -rf). */
	run_for(fx, 100);
	assert_int_equal(fx->replaced_calls, 0);
	run_for(fx, WATCH_PROCESSING_GRACE_MS);
	assert_int_equal(fx->replaced_calls, 1);
	assert_int_equal(fx->replaced_result, 0);
	assert_int_equal(stat(proc, &st), 0);
	assert_int_equal(folder_processing_check(fx->dirs), 0);
	write_file(fx, "after.csv", "email\n");
	run_until_offers(fx, 1);
	assert_string_equal(fx->offers[0].name, "after.csv");
	assert_int_equal(fx->replaced_calls, 1);
}

/* Another directory put in the processing directory's place where inotify did not say so
 * (before the watch started, here; a network filesystem, in life): the scan finds it and the
 * folder sets up the processing directory again, with its lock. */
static void test_processing_replaced_found_by_scan(void **state)
{
	struct fixture *fx = *state;
	char proc[128], moved[128];

	fx->with_processing = true;
	assert_int_equal(folder_new(&fx->folder, false, &fx->dirs), 0);
	assert_int_equal(folder_open(fx->dirs, &fx->folder), 0);
	snprintf(proc, sizeof(proc), "%s/" FSOPS_PROCESSING_DIR, fx->dir);
	snprintf(moved, sizeof(moved), "%s/processing-moved-away", fx->root);
	assert_int_equal(rename(proc, moved), 0);
	assert_int_equal(mkdir(proc, 0700), 0);
	assert_int_equal(folder_processing_check(fx->dirs), -ESTALE);
	assert_int_equal(watch_new(&fx->loop, &fx->folder, fx->dirs, 0, ready_cb, idle_cb,
				   replaced_cb, fx, &fx->watch),
			 0);
	assert_int_equal(fx->replaced_calls, 0);
	run_for(fx, WATCH_PROCESSING_GRACE_MS + 100);
	assert_int_equal(fx->replaced_calls, 1);
	assert_int_equal(fx->replaced_result, 0);
	assert_int_equal(folder_processing_check(fx->dirs), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_candidate_names),
		T(test_existing_files_offered_ignored_left),
		T(test_empty_inbox_is_idle),
		T(test_part_then_rename),
		T(test_slow_writer_offered_only_when_complete),
		T(test_looks_once_per_settle_none_when_parked),
		T(test_no_events_sees_only_startup_scan),
		T(test_later_parks_until_offer),
		T(test_offer_fifo_full_puts_back_first),
		T(test_busy_waits_for_poke),
		T(test_poke_changed_busy_file_settles_again),
		T(test_claim_busy_waits_for_poke),
		T(test_claim_changed_settles_again),
		T(test_claim_changed_no_spin_with_settle_0),
		T(test_rescan_skips_claim_in_progress),
		T(test_claim_failed_retry_backs_off),
		T(test_rescan_during_claim_of_moved_file),
		T(test_change_during_claim_waits_for_claim),
		T(test_claim_left_forgets_and_idle_fires),
		T(test_keep_offered_again_only_after_change),
		T(test_keep_change_seen_by_rescan),
		T(test_parked_file_deleted_dropped_by_rescan),
		T(test_inbox_replaced_is_taken_again),
		T(test_settling_file_deleted_is_forgotten),
		T(test_folder_not_open_is_refused),
		T(test_inbox_held_once),
		T(test_processing_renamed_is_set_up_again),
		T(test_processing_replaced_found_by_scan),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
