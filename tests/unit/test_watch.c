/* Watching an inbox on a real libuv loop and a real temporary directory: which names are taken,
 * and that nothing is reported before it has settled and its writer has closed it. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "watch.h"

#define MAX_REPORTS 16

struct fixture {
	char dir[64];
	uv_loop_t loop;
	struct config_folder folder;
	struct watch *watch;
	char *reports[MAX_REPORTS];
	off_t sizes_at_report[MAX_REPORTS];
	size_t n_reports;
	uv_timer_t deadline;
	uv_timer_t step;
	int writer_fd;
	int steps_left;
	int decline; /* how many offers ready_cb still declines */
	int offers;
};

static bool ready_cb(struct watch *w, const char *name, void *data)
{
	struct fixture *fx = data;
	char path[256];
	struct stat st = {0};

	(void)w;
	fx->offers++;
	if (fx->decline > 0) {
		fx->decline--;
		return false;
	}
	snprintf(path, sizeof(path), "%s/%s", fx->dir, name);
	stat(path, &st);
	if (fx->n_reports < MAX_REPORTS) {
		fx->sizes_at_report[fx->n_reports] = st.st_size;
		fx->reports[fx->n_reports++] = strdup(name);
	}
	return true;
}

static void write_file(const char *dir, const char *name, const char *content)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/rdd-watch-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	fx->folder.name = "test";
	fx->folder.inbox = fx->dir;
	fx->folder.settings.settle_ms = 150;
	fx->folder.settings.rescan_s = 3600;
	fx->folder.settings.pattern = "*.csv";
	fx->writer_fd = -1;
	uv_timer_init(&fx->loop, &fx->deadline);
	uv_timer_init(&fx->loop, &fx->step);
	fx->deadline.data = fx->step.data = fx;
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

	if (fx->watch)
		watch_close(fx->watch);
	uv_close((uv_handle_t *)&fx->deadline, closed_cb);
	uv_close((uv_handle_t *)&fx->step, closed_cb);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	/* Every handle closed: a leaked one would make this fail. */
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	if (fx->writer_fd >= 0)
		close(fx->writer_fd);
	for (size_t i = 0; i < fx->n_reports; i++)
		free(fx->reports[i]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

static void stop_cb(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop for MS milliseconds of loop time. */
static void run_for(struct fixture *fx, uint64_t ms)
{
	uv_timer_start(&fx->deadline, stop_cb, ms, 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	uv_timer_stop(&fx->deadline);
}

static bool reported(const struct fixture *fx, const char *name)
{
	for (size_t i = 0; i < fx->n_reports; i++) {
		if (strcmp(fx->reports[i], name) == 0)
			return true;
	}
	return false;
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

static void test_existing_files_reported_ignored_left(void **state)
{
	struct fixture *fx = *state;
	char sub[128];

	write_file(fx->dir, "a.csv", "email\na@example.com\n");
	write_file(fx->dir, ".b.csv", "email\n");
	write_file(fx->dir, "c.csv.part", "email\n");
	write_file(fx->dir, "d.txt", "email\n");
	write_file(fx->dir, "e.csv~", "email\n");
	snprintf(sub, sizeof(sub), "%s/dir.csv", fx->dir);
	assert_int_equal(mkdir(sub, 0700), 0);

	assert_int_equal(watch_new(&fx->loop, &fx->folder, 0, ready_cb, fx, &fx->watch), 0);
	assert_int_equal(watch_pending(fx->watch), 1);
	run_for(fx, 600);
	assert_int_equal(fx->n_reports, 1);
	assert_string_equal(fx->reports[0], "a.csv");
	assert_int_equal(watch_pending(fx->watch), 0);
}

static void rename_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;
	char from[128], to[128];

	snprintf(from, sizeof(from), "%s/x.csv.part", fx->dir);
	snprintf(to, sizeof(to), "%s/x.csv", fx->dir);
	assert_int_equal(rename(from, to), 0);
}

/* The .part is never reported; the rename is seen through inotify (rescan_s is an hour). */
static void test_part_then_rename(void **state)
{
	struct fixture *fx = *state;

	write_file(fx->dir, "x.csv.part", "email\nx@example.com\n");
	assert_int_equal(watch_new(&fx->loop, &fx->folder, 0, ready_cb, fx, &fx->watch), 0);
	uv_timer_start(&fx->step, rename_cb, 300, 0);
	run_for(fx, 1000);
	assert_int_equal(fx->n_reports, 1);
	assert_string_equal(fx->reports[0], "x.csv");
}

/* Opens, appends and closes each time, as a cron job appending rows would: only settling, not
 * the lease, can tell that more is coming. */
static void slow_write_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;
	char path[128];

	snprintf(path, sizeof(path), "%s/slow.csv", fx->dir);
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "row@example.com\n", 16), 16);
	close(fd);
	if (--fx->steps_left == 0)
		uv_timer_stop(t);
}

/* A writer appending more often than settle_ms keeps the file from settling. */
static void test_slow_writer_reported_only_when_complete(void **state)
{
	struct fixture *fx = *state;

	write_file(fx->dir, "slow.csv", "email\n");
	fx->steps_left = 12;
	/* The writer runs on the watch's own loop: a settle time well above the write interval
	 * keeps a stall of this process on a busy machine from looking like a pause. */
	fx->folder.settings.settle_ms = 400;
	assert_int_equal(watch_new(&fx->loop, &fx->folder, 0, ready_cb, fx, &fx->watch), 0);
	uv_timer_start(&fx->step, slow_write_cb, 60, 60);
	run_for(fx, 2000);
	assert_int_equal(fx->n_reports, 1);
	assert_int_equal(fx->sizes_at_report[0], 6 + 12 * 16);
}

static void close_writer_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	close(fx->writer_fd);
	fx->writer_fd = -1;
}

/* A writer that pauses longer than settle_ms but still has the file open is detected by the
 * read lease (we run as the file's owner). */
static void test_open_writer_holds_file_back(void **state)
{
	struct fixture *fx = *state;
	char path[128];

	snprintf(path, sizeof(path), "%s/held.csv", fx->dir);
	fx->writer_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fx->writer_fd >= 0);
	assert_int_equal(write(fx->writer_fd, "email\n", 6), 6);
	assert_int_equal(watch_new(&fx->loop, &fx->folder, 0, ready_cb, fx, &fx->watch), 0);
	run_for(fx, 600);
	assert_int_equal(fx->n_reports, 0);
	assert_int_equal(watch_pending(fx->watch), 1);
	uv_timer_start(&fx->step, close_writer_cb, 0, 0);
	run_for(fx, 600);
	assert_int_equal(fx->n_reports, 1);
	assert_string_equal(fx->reports[0], "held.csv");
}

static void test_forget_reports_again_on_rescan(void **state)
{
	struct fixture *fx = *state;

	write_file(fx->dir, "again.csv", "email\n");
	assert_int_equal(watch_new(&fx->loop, &fx->folder, 0, ready_cb, fx, &fx->watch), 0);
	run_for(fx, 500);
	assert_int_equal(fx->n_reports, 1);
	/* Without forget, a rescan does not report an unchanged file twice. */
	watch_rescan(fx->watch);
	run_for(fx, 500);
	assert_int_equal(fx->n_reports, 1);
	watch_forget(fx->watch, "again.csv");
	watch_rescan(fx->watch);
	run_for(fx, 500);
	assert_int_equal(fx->n_reports, 2);
	assert_string_equal(fx->reports[1], "again.csv");
}

/* A declined file (no capacity) stays pending and is offered again until it is taken. */
static void test_declined_file_is_offered_again(void **state)
{
	struct fixture *fx = *state;

	write_file(fx->dir, "busy.csv", "email\n");
	fx->decline = 3;
	assert_int_equal(watch_new(&fx->loop, &fx->folder, 0, ready_cb, fx, &fx->watch), 0);
	run_for(fx, 1500);
	assert_int_equal(fx->offers, 4);
	assert_int_equal(fx->n_reports, 1);
	assert_string_equal(fx->reports[0], "busy.csv");
	assert_int_equal(watch_pending(fx->watch), 0);
}

static void late_file_cb(uv_timer_t *t)
{
	struct fixture *fx = t->data;

	write_file(fx->dir, "late.csv", "email\n");
}

static void test_no_events_sees_only_startup_scan(void **state)
{
	struct fixture *fx = *state;

	write_file(fx->dir, "early.csv", "email\n");
	assert_int_equal(
		watch_new(&fx->loop, &fx->folder, WATCH_NO_EVENTS, ready_cb, fx, &fx->watch), 0);
	uv_timer_start(&fx->step, late_file_cb, 50, 0);
	run_for(fx, 600);
	assert_int_equal(fx->n_reports, 1);
	assert_true(reported(fx, "early.csv"));
	assert_false(reported(fx, "late.csv"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_candidate_names),
		cmocka_unit_test_setup_teardown(test_existing_files_reported_ignored_left, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_part_then_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_writer_reported_only_when_complete, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_open_writer_holds_file_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forget_reports_again_on_rescan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_events_sees_only_startup_scan, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_declined_file_is_offered_again, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
