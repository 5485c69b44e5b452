/* notify: what reaches NOTIFY_SOCKET (a datagram socket the test binds), on a real loop: READY
 * with STATUS, STATUS rate-limited and sent once things settle, no work of its own while idle,
 * the watchdog at half WATCHDOG_USEC, RELOADING with MONOTONIC_USEC, EXTEND_TIMEOUT_USEC while
 * draining; and that every handle is closed (uv_loop_close returns 0). */
#include "notify.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#define MAX_MSGS 256

static struct {
	char dir[64], path[80];
	int fd;
	uv_loop_t loop;
	char *msg[MAX_MSGS];
	size_t n;
	/* the status the callback gives, and how often it was asked */
	struct notify_status status;
	unsigned asked;
} T;

static void status_cb(void *data, struct notify_status *ret)
{
	(void)data;
	T.asked++;
	*ret = T.status;
}

static int setup(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	(void)state;
	memset(&T, 0, sizeof(T));
	strcpy(T.dir, "/tmp/rdd-notify-XXXXXX");
	if (!mkdtemp(T.dir))
		return -1;
	snprintf(T.path, sizeof(T.path), "%s/notify", T.dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", T.path);
	T.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (T.fd < 0 || bind(T.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return -1;
	setenv("NOTIFY_SOCKET", T.path, 1);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	T.status.folders = 3;
	return uv_loop_init(&T.loop);
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < T.n; i++)
		free(T.msg[i]);
	close(T.fd);
	unlink(T.path);
	rmdir(T.dir);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	return 0;
}

/* Reads every datagram that has arrived. */
static void drain_socket(void)
{
	char buf[1024];
	ssize_t r;

	while ((r = recv(T.fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) >= 0) {
		assert_true(T.n < MAX_MSGS);
		buf[r] = '\0';
		T.msg[T.n++] = strdup(buf);
	}
	assert_int_equal(errno, EAGAIN);
}

static size_t count_prefix(const char *prefix)
{
	size_t k = 0;

	for (size_t i = 0; i < T.n; i++)
		k += strncmp(T.msg[i], prefix, strlen(prefix)) == 0;
	return k;
}

/* The last STATUS= line sent, or NULL. */
static const char *last_status(void)
{
	for (size_t i = T.n; i > 0; i--) {
		const char *s = strstr(T.msg[i - 1], "STATUS=");
		if (s && (s == T.msg[i - 1] || s[-1] == '\n'))
			return s + strlen("STATUS=");
	}
	return NULL;
}

static void stop_cb(uv_timer_t *timer)
{
	uv_stop(timer->loop);
}

/* Runs the loop for MS milliseconds (a timer of the test's ends it). */
static void run_for(uint64_t ms)
{
	uv_timer_t stop;

	uv_timer_init(&T.loop, &stop);
	uv_timer_start(&stop, stop_cb, ms, 0);
	uv_run(&T.loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&stop, NULL);
	uv_run(&T.loop, UV_RUN_NOWAIT);
}

static void close_and_check(struct notify *n)
{
	notify_close(n);
	uv_run(&T.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&T.loop), 0);
}

static void test_format(void **state)
{
	char buf[256];

	(void)state;
	notify_format_status(buf, sizeof(buf),
			     &(struct notify_status){.folders = 3, .waiting = 12, .uploading = 2});
	assert_string_equal(buf, "3 folders, 12 waiting, 2 uploading, 0 following, 0 paused");
	notify_format_status(buf, sizeof(buf),
			     &(struct notify_status){.phase = "stopping", .folders = 1,
						     .uploading = 1, .following = 4, .finishing = 2,
						     .paused = 1, .pause_reason = "API quota"});
	assert_string_equal(buf, "stopping: 1 folder, 0 waiting, 1 uploading, 4 following, "
				 "2 finishing, 1 paused (API quota)");
}

/* Without NOTIFY_SOCKET nothing is sent, the status is never asked for, and nothing wakes. */
static void test_disabled(void **state)
{
	struct notify *n = NULL;

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "20000", 1);
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	assert_false(notify_enabled(n));
	assert_int_equal(notify_watchdog_ms(n), 0);
	/* Nothing of notify's keeps the loop running, or wakes it. */
	assert_int_equal(uv_run(&T.loop, UV_RUN_NOWAIT), 0);
	notify_ready(n);
	notify_reloading(n);
	notify_stopping(n);
	notify_draining(n, 5);
	notify_drained(n);
	run_for(150);
	drain_socket();
	assert_int_equal(T.n, 0);
	assert_int_equal(T.asked, 0);
	close_and_check(n);
	notify_close(NULL);
}

/* READY=1 carries the status; a status that has not changed is not sent again. */
static void test_ready_with_status(void **state)
{
	struct notify *n = NULL;

	(void)state;
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	assert_true(notify_enabled(n));
	T.status.waiting = 2;
	notify_ready(n);
	run_for(100);
	drain_socket();
	assert_int_equal(T.n, 1);
	assert_string_equal(T.msg[0], "READY=1\nSTATUS=3 folders, 2 waiting, 0 uploading, "
				      "0 following, 0 paused");
	close_and_check(n);
}

static unsigned changes;

static void change_cb(uv_timer_t *timer)
{
	T.status.waiting++;
	if (++changes == 55)
		uv_timer_stop(timer);
}

/* A status that changes every 20 ms for 1.1 s is sent at most once a second, and the last
 * value arrives once the changes stop; then, idle, the status is not even looked at. */
static void test_status_rate_limited(void **state)
{
	struct notify *n = NULL;
	uv_timer_t change;

	(void)state;
	changes = 0;
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	uv_timer_init(&T.loop, &change);
	uv_timer_start(&change, change_cb, 20, 20);
	run_for(2300);
	drain_socket();
	assert_int_equal(changes, 55);
	/* At once (0), at 1 s, at 2 s: three, never one per change. */
	if (T.n < 2 || T.n > 3)
		fail_msg("%zu STATUS messages for 55 changes", T.n);
	assert_int_equal(count_prefix("STATUS="), T.n);
	assert_string_equal(last_status(), "3 folders, 55 waiting, 0 uploading, 0 following, "
					   "0 paused");

	/* Idle: the loop sleeps through 500 ms (one wake-up, the test's own timer), and the
	 * status is looked at no more than at that turn's end. */
	unsigned asked = T.asked;
	run_for(500);
	assert_true(T.asked - asked <= 3);
	drain_socket();
	assert_int_equal(count_prefix("STATUS="), T.n);
	uv_close((uv_handle_t *)&change, NULL);
	close_and_check(n);
}

/* WATCHDOG_USEC=100000: WATCHDOG=1 every 50 ms, from the loop. */
static void test_watchdog(void **state)
{
	struct notify *n = NULL;

	(void)state;
	setenv("WATCHDOG_USEC", "100000", 1);
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	assert_int_equal(notify_watchdog_ms(n), 50);
	run_for(520);
	drain_socket();
	size_t pings = count_prefix("WATCHDOG=1");
	if (pings < 8 || pings > 11)
		fail_msg("%zu WATCHDOG=1 in 520 ms at a period of 50 ms", pings);
	/* Another process's watchdog (WATCHDOG_PID) is not ours. */
	close_and_check(n);
	assert_int_equal(uv_loop_init(&T.loop), 0);
	setenv("WATCHDOG_PID", "1", 1);
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	unsetenv("WATCHDOG_PID");
	assert_int_equal(notify_watchdog_ms(n), 0);
	close_and_check(n);
}

static void test_reloading_and_stopping(void **state)
{
	struct notify *n = NULL;
	struct timespec ts;
	unsigned long long usec = 0;

	(void)state;
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	notify_reloading(n);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	notify_stopping(n);
	drain_socket();
	assert_int_equal(T.n, 2);
	assert_int_equal(sscanf(T.msg[0], "RELOADING=1\nMONOTONIC_USEC=%llu", &usec), 1);
	unsigned long long now =
		(unsigned long long)ts.tv_sec * 1000000 + (unsigned long long)ts.tv_nsec / 1000;
	assert_true(usec <= now && usec + 1000000 > now);
	assert_string_equal(T.msg[1], "STOPPING=1");
	close_and_check(n);
}

/* A drain with a timeout of 0 s: 15 s at once; 5 s later, 10 s being left, 15 s more; none
 * after notify_drained. */
static void test_draining_extends(void **state)
{
	struct notify *n = NULL;

	(void)state;
	assert_int_equal(notify_new(&T.loop, status_cb, NULL, &n), 0);
	notify_draining(n, 0);
	drain_socket();
	assert_int_equal(T.n, 1);
	assert_string_equal(T.msg[0], "EXTEND_TIMEOUT_USEC=15000000");
	notify_draining(n, 30);
	drain_socket();
	assert_string_equal(T.msg[1], "EXTEND_TIMEOUT_USEC=45000000");
	notify_drained(n);

	notify_draining(n, 0);
	run_for(5300);
	drain_socket();
	assert_int_equal(count_prefix("EXTEND_TIMEOUT_USEC="), 4);
	assert_string_equal(T.msg[T.n - 1], "EXTEND_TIMEOUT_USEC=15000000");
	notify_drained(n);
	run_for(200);
	drain_socket();
	assert_int_equal(count_prefix("EXTEND_TIMEOUT_USEC="), 4);
	close_and_check(n);
}

#define TS(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		TS(test_disabled),
		TS(test_ready_with_status),
		TS(test_status_rate_limited),
		TS(test_watchdog),
		TS(test_reloading_and_stopping),
		TS(test_draining_extends),
	};

	return cmocka_run_group_tests_name("notify", tests, NULL, NULL);
}
