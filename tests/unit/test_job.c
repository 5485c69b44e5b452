/* job: the engine itself, from engine_submit to done/ or failed/, driven as daemon.c drives it,
 * against a stand-in for the API module (the fixture: job_fixture.h).
 *
 * Not covered: illegal transitions of the state machine (job_states[]): no sequence of public
 * calls reaches one. Every test does check that the engine never logged one ("internal error"). */
#include "job_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resend.h"

/* ---- 1. a good file ------------------------------------------------------------------------ */

static void test_good_file(void **state)
{
	char sha[65];
	const struct event *claimed, *left;
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	claimed = event_of(EV_CLAIMED, "x.csv", 0);
	assert_int_equal(claimed->how, ENGINE_CLAIMED);
	assert_int_equal(count_events(EV_CLAIMED, NULL), 1);

	assert_int_equal(F.n_calls, 1);
	assert_upload_of(upload(0), F.done, "x.csv", "x.csv");
	assert_true(upload(0)->freed);

	assert_only_in("x.csv", IN_DONE);
	assert_string_equal(slurp(F.done, "x.csv", NULL), CSV_GOOD);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "folder"), FOLDER);
	assert_string_equal(jstr(rep, "file"), "x.csv");
	assert_int_equal(jnum(rep, "bytes"), strlen(CSV_GOOD));
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "http_status"), 201);
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_true(jnull(rep, "error"));
	assert_true(jnull(rep, "import")); /* not followed */
	jstr(rep, "claimed_at");
	jstr(rep, "uploaded_at");
	jstr(rep, "finished_at");

	/* `left` comes once the file is in done/: a namesake may go now. */
	left = event_of(EV_LEFT, "x.csv", 0);
	assert_true(left->in_done);
	assert_false(left->in_processing);
	assert_true(left->seq > claimed->seq);
	/* Nothing left behind in processing: no file, no record, no temporary file. */
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(count_entries(F.done, "", ""), 2);
	assert_int_equal(count_entries(F.failed, "", ""), 0);

	RUN_UNTIL(F.last_idle_seq > left->seq);
	assert_int_equal(engine_active(F.js), 0);
	assert_int_equal(engine_failed_total(F.js), 0);
	assert_int_equal(log_count("'x.csv' uploaded, import "), 1);
	finish();
}

/* ---- 2. following the import ---------------------------------------------------------------- */

static void test_follow_import(void **state)
{
	struct staterec rec;
	char sha[65];
	const cJSON *rep, *imp, *counts;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	script_poll((struct answer){.status = 200, .import_status = "queued"});
	script_poll((struct answer){.status = 200, .import_status = "in_progress"});
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);

	/* While it is followed, the record beside it says which import it became. */
	RUN_UNTIL(n_polls() >= 1);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_true(read_record("x.csv", &rec));
	assert_string_equal(rec.import_id, upload(0)->import_id);
	assert_string_equal(rec.sha256, sha);
	assert_int_equal(rec.attempts, 1);
	assert_true(rec.uploaded_at_ms > 0);
	assert_true(rec.claimed_at_ms > 0);

	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(n_polls(), 3);
	assert_int_equal(polls_of(upload(0)->import_id), 3);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	imp = jobj(rep, "import");
	assert_string_equal(jstr(imp, "status"), "completed");
	assert_string_equal(jstr(imp, "completed_at"), COMPLETED_AT);
	counts = jobj(imp, "counts");
	assert_int_equal(jnum(counts, "total"), 3);
	assert_int_equal(jnum(counts, "created"), 2);
	assert_int_equal(jnum(counts, "updated"), 1);
	assert_int_equal(jnum(counts, "skipped"), 0);
	assert_int_equal(jnum(counts, "failed"), 0);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(log_count("'x.csv' imported, import "), 1);
	finish();
}

/* Resend says the import failed: failed/ at stage import, with the counts. */
static void test_follow_import_failed(void **state)
{
	const cJSON *rep, *err;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	script_poll((struct answer){.status = 200, .import_status = "failed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(n_polls(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "failed");
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "import");
	assert_non_null(strstr(jstr(err, "message"), upload(0)->import_id));
	assert_int_equal(engine_failed_total(F.js), 1);
	finish();
}

/* ---- 3. a file that fails its check ---------------------------------------------------------- */

static void test_header_lacks_mapped_column(void **state)
{
	char sha[65];
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_NO_EMAIL);
	text_sha256(CSV_NO_EMAIL, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_FAILED);
	assert_string_equal(slurp(F.failed, "x.csv", NULL), CSV_NO_EMAIL);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "attempts"), 0);
	assert_true(jnull(rep, "http_status"));
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	assert_true(jnull(err, "http_status"));
	assert_non_null(strstr(jstr(err, "message"), "'Email'"));
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(engine_failed_total(F.js), 1);
	finish();
}

/* ---- 4. a retryable failure, then success ---------------------------------------------------- */

static void test_retry_then_success(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 500,
				      .body = "{\"statusCode\":500,\"name\":\"application_error\","
					      "\"message\":\"Internal server error\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 2);
	assert_upload_of(upload(0), F.done, "x.csv", "x.csv");
	assert_upload_of(upload(1), F.done, "x.csv", "x.csv"); /* same key: the same upload */
	assert_int_equal(upload(0)->status, 500);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_int_equal(jnum(rep, "attempts"), 2);
	assert_int_equal(jnum(rep, "http_status"), 201);
	assert_string_equal(jstr(rep, "import_id"), upload(1)->import_id);
	assert_int_equal(log_count("'x.csv' upload attempt 1 failed: Internal server error"), 1);
	finish();
}

/* ---- 5. retries spent -------------------------------------------------------------------------- */

static void test_retries_spent(void **state)
{
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	/* An outage first, whose retry-after must hold the next attempt back for a second. */
	script_upload((struct answer){.status = 503,
				      .body = "<html>Service Unavailable</html>",
				      .headers = {{"retry-after", "1"}}});
	script_upload((struct answer){.status = 503, .body = "<html>Service Unavailable</html>"});
	script_upload((struct answer){
		.status = 0,
		.transport = "Failed to connect to 127.0.0.1 port 9: Connection refused"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_true(upload(1)->made_ms >= upload(0)->answered_ms + 1000);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_int_equal(jnum(rep, "attempts"), 3);
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_true(jnull(err, "http_status"));
	assert_non_null(strstr(jstr(err, "message"), "Connection refused"));
	assert_non_null(strstr(jstr(err, "message"), "gave up after 3 attempts"));
	finish();
}

/* ---- 5b. the rate limit: waits, never attempts --------------------------------------------- */

#define RATE_LIMITED_BODY                                                                          \
	"{\"statusCode\":429,\"name\":\"rate_limit_exceeded\",\"message\":\"Too many requests. "   \
	"You can only make 2 requests per second.\"}"

/* More 429s than max_attempts (3), then success: the file is done after one attempt, each
 * request went no sooner than the retry-after of the refusal before it, and the report counts
 * the waits apart. */
static void test_rate_limit_is_a_wait(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	for (int i = 0; i < 5; i++)
		script_upload((struct answer){.status = 429,
					      .body = RATE_LIMITED_BODY,
					      .headers = {{"retry-after", "0.2"},
							  {"ratelimit-remaining", "0"}}});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 6);
	for (size_t i = 1; i < 6; i++)
		assert_true(upload(i)->made_ms >= upload(i - 1)->answered_ms + 200);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "rate_limited"), 5);
	assert_int_equal(log_count("'x.csv' upload attempt"), 0);
	/* Said when the row of refusals began, not for every refusal. */
	assert_int_equal(log_count("Resend's rate limit was reached (HTTP 429, retry-after 0.2)"), 1);
	assert_int_equal(log_count("1 attempt, 5 waits for the rate limit"), 1);
	finish();
}

/* A 429 that names no time (a proxy's) still holds every request back: a second, then two. */
static void test_rate_limit_without_headers_backs_off(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 429, .body = "Too Many Requests"});
	script_upload((struct answer){.status = 429, .body = "Too Many Requests"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_true(upload(1)->made_ms >= upload(0)->answered_ms + 1000);
	assert_true(upload(2)->made_ms >= upload(1)->answered_ms + 2000);
	rep = report(F.done, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "rate_limited"), 2);
	finish();
}

/* Between attempts that do count, the waits do not: two 500s and three 429s with
 * max_attempts 3 still end in done, after 3 attempts. */
static void test_rate_limit_between_attempts(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 500, .body = "{\"name\":\"application_error\"}"});
	for (int i = 0; i < 3; i++)
		script_upload((struct answer){.status = 429,
					      .body = RATE_LIMITED_BODY,
					      .headers = {{"retry-after", "0.05"}}});
	script_upload((struct answer){.status = 500, .body = "{\"name\":\"application_error\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 6);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 3);
	assert_int_equal(jnum(rep, "rate_limited"), 3);
	finish();
}

/* A 429 to a poll: asked again after the wait; the import's end is reported all the same. */
static void test_rate_limit_on_poll(void **state)
{
	const cJSON *rep;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	script_poll((struct answer){.status = 429,
				    .body = RATE_LIMITED_BODY,
				    .headers = {{"retry-after", "0.3"}}});
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_polls(), 2);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "rate_limited"), 1);
	finish();
}

/* ---- 6. a permanent refusal --------------------------------------------------------------------- */

static void test_permanent_refusal(void **state)
{
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){
		.status = 422,
		.body = "{\"statusCode\":422,\"name\":\"validation_error\",\"message\":\"Invalid "
			"`column_map`: column `Email` not found in the CSV header.\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "http_status"), 422);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_int_equal(jnum(err, "http_status"), 422);
	assert_string_equal(jstr(err, "name"), "validation_error");
	assert_string_equal(jstr(err, "message"),
			    "Invalid `column_map`: column `Email` not found in the CSV header.");
	finish();
}

/* ---- 7. the API key is refused ------------------------------------------------------------------ */

static void test_key_refused_pauses(void **state)
{
	struct staterec rec;
	const char *first;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	script_upload((struct answer){
		.status = 401,
		.body = "{\"name\":\"validation_error\",\"message\":\"API key is invalid\"}"});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_AUTH_FAILED, NULL) == 1);
	first = upload(0)->filename;
	/* The refused attempt is not the file's fault: its record forgets it again. */
	RUN_UNTIL(read_record(first, &rec) && rec.attempts == 0);

	/* Uploads pause: neither file is tried again nor the other one sent. */
	run_for(1500);
	assert_int_equal(F.n_calls, 1);
	assert_int_equal(count_events(EV_AUTH_FAILED, NULL), 1);
	assert_only_in("a.csv", IN_PROCESSING);
	assert_only_in("b.csv", IN_PROCESSING);
	assert_int_equal(count_entries(F.failed, "", ""), 0);
	assert_int_equal(count_entries(F.done, "", ""), 0);
	assert_true(read_record(first, &rec));
	assert_int_equal(rec.attempts, 0);
	assert_int_equal(log_count("all uploads paused"), 1);
	assert_int_equal(engine_failed_total(F.js), 0);

	/* A drain releases both at once: they wait in processing for the next start. */
	drain(60000);
	RUN_UNTIL(F.drained);
	assert_only_in("a.csv", IN_PROCESSING);
	assert_only_in("b.csv", IN_PROCESSING);
	assert_true(read_record(first, &rec));
	assert_int_equal(rec.attempts, 0);

	/* With a good key the next start uploads both; the refusal is in no report. */
	restart();
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_only_in("a.csv", IN_DONE);
	assert_only_in("b.csv", IN_DONE);
	assert_int_equal(uploads_of(first), 2);
	assert_int_equal(jnum(report(F.done, first), "attempts"), 1);
	finish();
}

/* ---- 8. a namesake while the file is in processing ----------------------------------------- */

static void test_name_busy(void **state)
{
	const char *second;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);

	/* A new x.csv lands in the inbox while the first is being uploaded. */
	put_csv("x.csv", CSV_GOOD_2);
	assert_int_equal(submit("x.csv"), ENGINE_NAME_BUSY);
	assert_int_equal(count_events(EV_LEFT, "x.csv"), 0);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_string_equal(slurp(F.done, "x.csv", NULL), CSV_GOOD);
	assert_string_equal(slurp(F.inbox, "x.csv", NULL), CSV_GOOD_2);

	/* Now it may go; done/ already has an x.csv, so it gets a timestamped name. */
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 2);
	second = the_entry(F.done, "x.2", ".csv");
	assert_int_equal(n_uploads(), 2);
	assert_upload_of(upload(1), F.done, second, "x.csv");
	assert_string_equal(slurp(F.done, second, NULL), CSV_GOOD_2);
	assert_string_equal(jstr(report(F.done, second), "outcome"), "done");
	assert_string_equal(jstr(report(F.done, second), "file"), "x.csv");
	assert_int_equal(count_entries(F.done, "", ""), 4);
	assert_false(exists_in(F.inbox, "x.csv"));
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* A namesake nobody knew of is found in processing at the claim (left there by an earlier run,
 * say): the claim says ENGINE_BUSY, the one in processing goes first, then `left`. */
static void test_namesake_found_at_claim(void **state)
{
	const char *second;

	(void)state;
	assert_int_equal(mkdir(F.proc, 0700), 0);
	put_file(F.proc, "y.csv", CSV_GOOD, strlen(CSV_GOOD));
	put_csv("y.csv", CSV_GOOD_2);
	start(0);
	/* Offered before the resume has listed processing. */
	assert_int_equal(submit("y.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_CLAIMED, "y.csv") == 1);
	assert_int_equal(event_of(EV_CLAIMED, "y.csv", 0)->how, ENGINE_BUSY);
	RUN_UNTIL(count_events(EV_LEFT, "y.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_string_equal(slurp(F.done, "y.csv", NULL), CSV_GOOD);
	assert_string_equal(slurp(F.inbox, "y.csv", NULL), CSV_GOOD_2);

	assert_int_equal(submit("y.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "y.csv") == 2);
	assert_int_equal(event_of(EV_CLAIMED, "y.csv", 1)->how, ENGINE_CLAIMED);
	second = the_entry(F.done, "y.2", ".csv");
	assert_string_equal(slurp(F.done, second, NULL), CSV_GOOD_2);
	assert_int_equal(n_uploads(), 2);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* ---- 9. more files than slots -------------------------------------------------------------- */

static void test_capacity(void **state)
{
	enum { N_FILES = 10 };
	struct rlimit rl;
	unsigned reserve, slots, accepted = 0;
	char name[32];

	(void)state;
	/* the engine's max_holding: 256, lowered to the soft RLIMIT_NOFILE minus a reserve of
	 * 32 + 5 per folder + 2 per upload in flight, never below 4. */
	F.cfg->api.max_in_flight = 1;
	reserve = 32 + 5 * 1 + 2 * 1;
	slots = 6;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < reserve + slots)
		fail_msg("RLIMIT_NOFILE is already below %u", reserve + slots);
	F.nofile = rl;
	F.nofile_lowered = true;
	rl.rlim_cur = reserve + slots;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);

	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%02d.csv", i);
		put_csv(name, CSV_GOOD);
	}
	script_upload((struct answer){.status = 201, .delay_ms = 50});
	start(0);
	RUN_UNTIL(F.n_capacity > 0); /* the resume listed processing: empty */
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%02d.csv", i);
		if (F.n_parked == 0) {
			enum engine_submit r = submit(name);
			if (r == ENGINE_CLAIMING) {
				accepted++;
				continue;
			}
			assert_int_equal(r, ENGINE_LATER);
		}
		park(name); /* the watch holds it back until `capacity` */
	}
	assert_int_equal(accepted, slots);
	assert_int_equal(F.n_parked, N_FILES - slots);

	RUN_UNTIL(F.n_parked == 0);
	/* The first slot freed when an upload succeeded (the descriptor is closed then). */
	assert_true(F.successes_at_first_capacity >= 1);
	assert_int_equal(F.accepted_at_capacity, N_FILES - slots);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == N_FILES);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "f%02d.csv", i);
		assert_only_in(name, IN_DONE);
		assert_int_equal(uploads_of(name), 1);
		assert_string_equal(jstr(report(F.done, name), "outcome"), "done");
	}
	assert_int_equal(n_uploads(), N_FILES);
	assert_int_equal(log_count("Too many open files"), 0);
	finish();
}

/* ---- 10. resuming what an earlier run left in processing -------------------------------------- */

static void test_resume(void **state)
{
	static const char followed_id[] = "4f6c3b9e-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	static const char stale_id[] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
	struct staterec rec = {.attempts = 1,
			       .claimed_at_ms = 1795665662000,
			       .uploaded_at_ms = 1795665663000};
	const cJSON *rep;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	F.polls_in_progress = 1; /* every import is in progress once, then completed */
	assert_int_equal(mkdir(F.proc, 0700), 0);
	/* Claimed, never uploaded. */
	put_file(F.proc, "plain.csv", CSV_GOOD, strlen(CSV_GOOD));
	/* Uploaded as FOLLOWED_ID: only to be followed. */
	put_file(F.proc, "followed.csv", CSV_GOOD_2, strlen(CSV_GOOD_2));
	text_sha256(CSV_GOOD_2, rec.sha256);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", followed_id);
	write_record("followed.csv", &rec);
	/* A record left by an earlier stale.csv of other content: not this file's. */
	put_file(F.proc, "stale.csv", CSV_GOOD, strlen(CSV_GOOD));
	text_sha256(CSV_GOOD_2, rec.sha256);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", stale_id);
	write_record("stale.csv", &rec);

	start(0);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);
	/* The followed file first: its import was still in progress at the first look. */
	if (places_of("followed.csv") == IN_FAILED)
		fail_msg("followed.csv failed: %s",
			 jstr(jobj(report(F.failed, "followed.csv"), "error"), "message"));
	assert_only_in("followed.csv", IN_DONE);
	rep = report(F.done, "followed.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), followed_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_int_equal(count_events(EV_CLAIMED, NULL), 0);
	assert_int_equal(n_uploads(), 2);
	assert_int_equal(uploads_of("plain.csv"), 1);
	assert_int_equal(uploads_of("stale.csv"), 1);
	assert_int_equal(uploads_of("followed.csv"), 0);
	assert_int_equal(polls_of(stale_id), 0);
	/* Three imports followed together: pages of the list answer for all of them, fewer
	 * requests than two reads of each. */
	assert_true(n_lists() >= 1);
	if (n_polls() >= 6)
		fail_msg("%zu follow-up requests for 3 imports", n_polls());

	for (size_t i = 0; i < 2; i++) {
		const struct call_log *l = upload(i);
		assert_upload_of(l, F.done, l->filename, l->filename);
		rep = report(F.done, l->filename);
		assert_string_equal(jstr(rep, "outcome"), "done");
		assert_string_equal(jstr(rep, "import_id"), l->import_id);
		assert_int_equal(jnum(rep, "attempts"), 1);
		assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	}
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(log_count("ignoring a state record left by an earlier file"), 1);
	finish();
}

/* ---- 11. drain ------------------------------------------------------------------------------- */

/* An upload that never answers is aborted after the timeout; its file waits in processing and
 * the next start uploads it again. */
static void test_drain_aborts_upload(void **state)
{
	struct staterec rec;
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	drain(200);
	RUN_UNTIL(F.drained);
	assert_true(upload(0)->freed);
	assert_false(upload(0)->answered);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_true(read_record("x.csv", &rec));
	assert_int_equal(rec.attempts, 1);
	assert_int_equal(log_count("'x.csv': upload aborted at shutdown"), 1);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 2);
	assert_upload_of(upload(1), F.done, "x.csv", "x.csv");
	assert_string_equal(upload(1)->key, upload(0)->key);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_int_equal(jnum(rep, "attempts"), 2);
	finish();
}

/* What only waits (queued, waiting to retry) is released at once; an upload in flight may
 * still finish, and its file reaches done/. */
static void test_drain_releases_waiting(void **state)
{
	struct staterec rec;
	const char *retried, *held, *queued = NULL;
	const char *names[] = {"a.csv", "b.csv", "c.csv"};

	(void)state;
	F.cfg->api.max_in_flight = 1;
	F.cfg->retry.initial_delay_ms = 60000;
	F.cfg->retry.max_delay_ms = 60000;
	/* Each file its own upload (coalesced, the two waiting would go together). */
	F.cfg->folders[0].settings.coalesce = CONFIG_COALESCE_OFF;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	put_csv("c.csv", CSV_GOOD);
	script_upload((struct answer){.status = 503, .body = "{\"message\":\"busy\"}"});
	script_upload((struct answer){.hold = true});
	start(0);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(submit(names[i]), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 2);
	retried = upload(0)->filename;
	held = upload(1)->filename;
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(names[i], retried) != 0 && strcmp(names[i], held) != 0)
			queued = names[i];
	}
	assert_non_null(queued);
	assert_int_equal(engine_active(F.js), 3);

	drain(60000);
	RUN_UNTIL(engine_active(F.js) == 1);
	assert_false(upload(1)->answered); /* released before the upload in flight ended */
	run_for(100);
	assert_int_equal(F.n_calls, 2);
	release_call(1, (struct answer){.status = 201});
	RUN_UNTIL(F.drained);

	assert_int_equal(F.n_calls, 2);
	assert_only_in(held, IN_DONE);
	assert_string_equal(jstr(report(F.done, held), "outcome"), "done");
	assert_only_in(retried, IN_PROCESSING);
	assert_true(read_record(retried, &rec));
	assert_int_equal(rec.attempts, 1);
	assert_only_in(queued, IN_PROCESSING);
	finish();
}

/* A file released by a drain while it only waited for a slot was never uploaded: after the
 * next start its report counts the uploads that were made, not one more. */
static void test_drain_released_queued_keeps_attempts(void **state)
{
	struct staterec rec;
	const char *queued;
	const cJSON *rep;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	put_csv("a.csv", CSV_GOOD);
	put_csv("b.csv", CSV_GOOD_2);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	queued = strcmp(upload(0)->filename, "a.csv") == 0 ? "b.csv" : "a.csv";
	RUN_UNTIL(read_record(queued, &rec)); /* it waits in the queue now */
	drain(60000);
	RUN_UNTIL(engine_active(F.js) == 1);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(F.drained);
	assert_only_in(queued, IN_PROCESSING);
	assert_int_equal(uploads_of(queued), 0);
	assert_true(read_record(queued, &rec));
	print_message("record of the released %s: attempts %u (uploads made: 0)\n", queued,
		      rec.attempts);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, queued) == 1);
	assert_only_in(queued, IN_DONE);
	assert_int_equal(uploads_of(queued), 1);
	rep = report(F.done, queued);
	assert_string_equal(jstr(rep, "outcome"), "done");
	if (jnum(rep, "attempts") != 1)
		fail_msg("%s: report says %.0f attempts, but it was uploaded once: the drain left "
			 "an attempt on its record that was never made",
			 queued, jnum(rep, "attempts"));
	finish();
}

/* A drain while many files are being checked (hashed): every file ends up in exactly one
 * place, none fails, and the next start takes the rest to done/ with one upload each. */
static void test_drain_during_checks(void **state)
{
	enum { N_FILES = 32, FILE_BYTES = 1536 * 1024 };
	char name[32];
	char *big = keep(malloc(FILE_BYTES));
	size_t in_processing = 0, in_done = 0, len = 0;

	(void)state;
	/* Each file its own first row (fixed width), the same rows after it. */
	len = (size_t)snprintf(big, FILE_BYTES, "Email,First Name\nf00@example.com,First\n");
	while (len + 64 < FILE_BYTES)
		len += (size_t)snprintf(big + len, FILE_BYTES - len, "user%zu@example.com,U\n", len);
	for (int i = 0; i < N_FILES; i++) {
		char row[4];
		snprintf(name, sizeof(name), "big%02d.csv", i);
		snprintf(row, sizeof(row), "%02d", i);
		memcpy(big + strlen("Email,First Name\nf"), row, 2);
		put_file(F.inbox, name, big, len);
	}
	start(0);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "big%02d.csv", i);
		assert_int_equal(submit(name), ENGINE_CLAIMING);
	}
	/* The first check has ended; the others are hashing or waiting for a thread. */
	RUN_UNTIL(n_uploads() >= 1);
	drain(5000);
	RUN_UNTIL(F.drained);
	for (int i = 0; i < N_FILES; i++) {
		unsigned p;
		snprintf(name, sizeof(name), "big%02d.csv", i);
		p = places_of(name);
		if (p != IN_PROCESSING && p != IN_DONE && p != IN_INBOX)
			fail_msg("'%s' is in%s after the drain", name, places_str(p));
		in_processing += p == IN_PROCESSING;
		in_done += p == IN_DONE;
		assert_int_equal(uploads_of(name), p == IN_DONE);
	}
	print_message("drain during checks: %zu in processing, %zu done\n", in_processing,
		      in_done);
	assert_int_equal(count_entries(F.failed, "", ""), 0);
	assert_int_equal(count_entries(F.proc, ".", ""), count_entries(F.proc, ".state-", ""));

	restart();
	RUN_UNTIL(count_events(EV_LEFT, NULL) == in_processing);
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "big%02d.csv", i);
		if (places_of(name) == IN_INBOX)
			continue; /* never claimed: the watch offers it again */
		assert_only_in(name, IN_DONE);
		assert_int_equal(uploads_of(name), 1);
	}
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* ---- 12. a temporary failure to move to done/ ----------------------------------------------- */

static void test_move_to_done_retried(void **state)
{
	const char *line;
	unsigned failures = 0;
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	start(0);
	make_immutable(F.done);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(log_count("'x.csv' could not be moved to") == 1);
	assert_only_in("x.csv", IN_PROCESSING);
	/* Still refused for a while: the move is tried again, logged once. */
	run_for(2500);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_int_equal(log_count("could not be moved"), 1);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	clear_immutable();

	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(n_uploads(), 1);
	assert_int_equal(log_count("could not be moved"), 1);
	line = strstr(log_text(), "'x.csv' could be moved after ");
	assert_non_null(line);
	assert_int_equal(sscanf(line, "'x.csv' could be moved after %u failed", &failures), 1);
	assert_true(failures >= 2);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(count_entries(F.done, ".", ""), 0); /* no temporary report left */
	finish();
}

/* The same, with a restart while the move still fails: the file was uploaded, so the next
 * start must only move it, not upload it again (follow_import off). */
static void test_move_retried_across_restart(void **state)
{
	const cJSON *rep;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	start(0);
	make_immutable(F.done);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(log_count("'x.csv' could not be moved to") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_PROCESSING);

	restart();
	clear_immutable();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_only_in("x.csv", IN_DONE);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	if (n_uploads() != 1)
		fail_msg("uploaded %zu times: the import id of the 201 was not recorded, so the "
			 "restart uploaded the file again",
			 n_uploads());
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 1);
	finish();
}

/* ---- 13. dry run ------------------------------------------------------------------------------ */

static void test_dry_run(void **state)
{
	(void)state;
	put_csv("x.csv", CSV_GOOD);
	put_csv("bad.csv", CSV_NO_EMAIL);
	start(ENGINE_DRY_RUN);
	assert_int_equal(submit("x.csv"), ENGINE_CHECKING_IN_PLACE);
	assert_int_equal(submit("bad.csv"), ENGINE_CHECKING_IN_PLACE);
	RUN_UNTIL(log_count("dry run:") == 2 && F.n_idle > 0 && engine_active(F.js) == 0);
	assert_int_equal(F.n_calls, 0);
	assert_only_in("x.csv", IN_INBOX);
	assert_only_in("bad.csv", IN_INBOX);
	assert_string_equal(slurp(F.inbox, "x.csv", NULL), CSV_GOOD);
	assert_false(exists_in(F.inbox, FSOPS_PROCESSING_DIR)); /* not even created */
	assert_int_equal(count_entries(F.done, "", ""), 0);
	assert_int_equal(count_entries(F.failed, "", ""), 0);
	assert_int_equal(count_events(EV_CLAIMED, NULL), 0);
	assert_int_equal(count_events(EV_LEFT, NULL), 0);
	assert_int_equal(log_count("dry run: would upload 'x.csv'"), 1);
	assert_int_equal(log_count("dry run: 'bad.csv' would fail at check"), 1);
	assert_int_equal(engine_failed_total(F.js), 1);
	/* A dry run may check the same name again: nothing is ever in processing. */
	assert_int_equal(submit("x.csv"), ENGINE_CHECKING_IN_PLACE);
	RUN_UNTIL(log_count("dry run: would upload 'x.csv'") == 2);
	finish();
}

/* ---- 14. the uploaded file is the file reported ----------------------------------------------- */

static void append_to(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	path_of(path, sizeof(path), dir, name);
	f = fopen(path, "ab");
	if (!f)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	if (fputs(text, f) < 0 || fclose(f) != 0)
		fail_msg("cannot append to %s", path);
}

static int truncate_in(const char *dir, const char *name, off_t size)
{
	char path[PATH_MAX];

	path_of(path, sizeof(path), dir, name);
	return truncate(path, size);
}

/* Appended through its processing path while the upload is out: Resend got the checked bytes
 * (the part's length was announced) and made an import, but the file is no longer what the
 * report would say. Failed, with that import's id, not followed, at once. */
static void test_grown_during_upload(void **state)
{
	static const char more[] = "eve@example.com,Eve\n";
	char sha[65], want[256];
	const cJSON *rep, *err;
	char *failed;

	(void)state;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("x.csv", CSV_GOOD);
	text_sha256(CSV_GOOD, sha);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	append_to(F.proc, "x.csv", more);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_int_equal(n_polls(), 0);
	assert_int_equal(upload(0)->size, strlen(CSV_GOOD));
	assert_string_equal(upload(0)->sha256, sha);
	assert_only_in("x.csv", IN_FAILED);
	failed = slurp(F.failed, "x.csv", NULL);
	assert_int_equal(strlen(failed), strlen(CSV_GOOD) + strlen(more));
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_int_equal(jnum(rep, "bytes"), strlen(CSV_GOOD));
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_int_equal(jnum(rep, "http_status"), 201);
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	snprintf(want, sizeof(want),
		 "the file changed while it was being uploaded: %zu \u2192 %zu bytes; Resend made "
		 "import %s from what was sent",
		 strlen(CSV_GOOD), strlen(CSV_GOOD) + strlen(more), upload(0)->import_id);
	assert_string_equal(jstr(err, "message"), want);
	assert_int_equal(log_count("'x.csv' failed at upload: the file changed while"), 1);
	assert_int_equal(count_entries(F.proc, ".state-", ""), 0);
	finish();
}

/* Another file renamed over its processing path: the descriptor still reads the old one, the
 * name does not. */
static void test_replaced_during_upload(void **state)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	const cJSON *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	put_file(F.proc, "x.csv.new", CSV_GOOD_2, strlen(CSV_GOOD_2));
	path_of(tmp, sizeof(tmp), F.proc, "x.csv.new");
	path_of(dst, sizeof(dst), F.proc, "x.csv");
	assert_int_equal(rename(tmp, dst), 0);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	err = jobj(report(F.failed, "x.csv"), "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_non_null(strstr(jstr(err, "message"),
			       "the file was replaced while it was being uploaded"));
	assert_string_equal(jstr(report(F.failed, "x.csv"), "import_id"), upload(0)->import_id);
	finish();
}

/* Changed between its check and an upload (here: while it waited to retry): refused before the
 * request, like a check's refusal; the attempt that was not made is not counted. */
static void test_changed_before_upload(void **state)
{
	char want[160];
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	release_call(0, (struct answer){.status = 503, .body = "busy"});
	assert_int_equal(truncate_in(F.proc, "x.csv", 20), 0);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	snprintf(want, sizeof(want), "the file changed after it was checked: %zu \u2192 20 bytes",
		 strlen(CSV_GOOD));
	assert_string_equal(jstr(err, "message"), want);
	finish();
}

/* The upload could not read the file whole (it shrank): the file's fault, known at once; a
 * retry would read the same file. The report says what the daemon found, not curl. */
static void test_local_read_error_not_retried(void **state)
{
	static const char msg[] = "the file shrank while it was being uploaded: read 20 of 75 bytes";
	const cJSON *rep, *err;

	(void)state;
	put_csv("x.csv", CSV_GOOD);
	script_upload((struct answer){.status = 0,
				      .transport = "Operation was aborted by an application callback",
				      .local = msg});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	run_for(100); /* retries would come within 20 ms */
	assert_int_equal(n_uploads(), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_true(jnull(rep, "import_id"));
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_true(jnull(err, "http_status"));
	assert_string_equal(jstr(err, "message"), msg);
	assert_int_equal(log_count("retrying"), 0);
	assert_int_equal(log_count("aborted"), 0);
	assert_int_equal(log_count(msg), 1);
	finish();
}

/* ---- 15. files split into parts ---------------------------------------------------------- */

#define SPLIT_HEADER "Email,First Name\n"
#define SPLIT_ROWS 5600      /* 34 bytes each: about 190 KB, three parts of at most 64 KiB */
#define SPLIT_LIMIT 65536

/* A clean CSV of SPLIT_ROWS rows (kept); its length in *RET_LEN. */
static char *split_csv(size_t *ret_len)
{
	size_t cap = strlen(SPLIT_HEADER) + SPLIT_ROWS * 34 + 1, len;
	char *text = keep(malloc(cap));

	len = (size_t)snprintf(text, cap, "%s", SPLIT_HEADER);
	for (unsigned i = 0; i < SPLIT_ROWS; i++)
		len += (size_t)snprintf(text + len, cap - len, "user%06u@example.com,Name%06u\n", i,
					i);
	assert_int_equal(len, cap - 1);
	*ret_len = len;
	return text;
}

static void split_setup(void)
{
	F.cfg->folders[0].settings.max_upload_bytes = SPLIT_LIMIT;
	F.cfg->folders[0].settings.follow_import = true;
}

/* The key of part I (1-based) of N of content SHA. */
static void part_key(char key[37], const char *sha, size_t i, size_t n)
{
	char which[96];

	snprintf(which, sizeof(which), "%s/%zu/%zu", sha, i, n);
	resend_idempotency_key(key, FOLDER, which);
}

/* Upload L is part I (1-based) of N of TEXT: the header, then whole rows, carrying its own name
 * and key and the folder's settings. Returns the rows' bytes (kept), for the caller to piece
 * together. */
static const char *assert_part_upload(const struct call_log *l, const char *text, size_t i,
				      size_t n)
{
	char sha[65], key[37], filename[64];
	const char *rows;

	assert_int_equal(l->kind, CALL_UPLOAD);
	snprintf(filename, sizeof(filename), "x.part-%zu-of-%zu.csv", i, n);
	assert_string_equal(l->filename, filename);
	text_sha256(text, sha);
	part_key(key, sha, i, n);
	assert_string_equal(l->key, key);
	assert_true(l->read_ok);
	assert_non_null(l->sent);
	assert_int_equal(strlen(l->sent), l->size);
	if (l->answered) {
		assert_true(l->read_ok_at_answer);
		assert_string_equal(l->sha256_at_answer, l->sha256);
	}
	assert_true(l->size <= SPLIT_LIMIT);
	assert_int_equal(l->head, strlen(SPLIT_HEADER));
	if (strncmp(l->sent, SPLIT_HEADER, strlen(SPLIT_HEADER)) != 0)
		fail_msg("part %zu does not start with the header: '%.40s'", i, l->sent);
	rows = l->sent + strlen(SPLIT_HEADER);
	/* Whole rows only: it starts at a row and ends at a line end. */
	assert_true(strlen(rows) > 0);
	assert_memory_equal(rows, "user", 4);
	assert_int_equal(rows[strlen(rows) - 1], '\n');
	assert_true(strstr(text, rows) != NULL);
	assert_string_equal(l->column_map, WIRE_COLUMN_MAP);
	assert_string_equal(l->on_conflict, "skip");
	assert_string_equal(l->segments, WIRE_SEGMENTS);
	assert_string_equal(l->topics, WIRE_TOPICS);
	return rows;
}

/* Newlines in TEXT. */
static uint64_t lines_of(const char *text)
{
	uint64_t n = 0;

	for (; (text = strchr(text, '\n')); text++)
		n++;
	return n;
}

/* A file over max_upload_bytes: three uploads in order, each a header and its rows, each its own
 * import, followed; the report lists the parts and sums their counts; done/ gets the original. */
static void test_split_into_parts(void **state)
{
	size_t len, at;
	char *text = split_csv(&len), sha[65], *joined;
	const cJSON *rep, *parts, *imp, *counts, *csv;
	struct staterec rec;
	uint64_t sent = 0;
	char line[256];

	(void)state;
	split_setup();
	put_file(F.inbox, "x.csv", text, len);
	text_sha256(text, sha);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);

	if (places_of("x.csv") != IN_DONE) {
		dump_log();
		fail_msg("x.csv is in%s", places_str(places_of("x.csv")));
	}
	assert_int_equal(n_uploads(), 3);
	assert_int_equal(n_polls(), 3);
	/* The rows, pieced together from the parts in order, are the file's. */
	joined = keep(calloc(1, len + 1));
	at = (size_t)snprintf(joined, len + 1, "%s", SPLIT_HEADER);
	for (size_t i = 0; i < 3; i++) {
		const struct call_log *l = upload(i);
		const char *rows = assert_part_upload(l, text, i + 1, 3);

		assert_true(at + strlen(rows) <= len);
		memcpy(joined + at, rows, strlen(rows));
		at += strlen(rows);
		sent += l->size;
		assert_true(l->answered);
		assert_int_equal(l->status, 201);
		assert_true(l->freed);
		/* One at a time: the next part only once this one was answered. */
		if (i > 0)
			assert_true(upload(i - 1)->answered_seq < l->made_seq);
		/* Each its own import, followed once (the stand-in completes it at once). */
		assert_int_equal(polls_of(l->import_id), 1);
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(upload(k)->key, l->key);
	}
	assert_int_equal(at, len);
	assert_string_equal(joined, text);

	assert_string_equal(slurp(F.done, "x.csv", NULL), text);
	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "sha256"), sha);
	assert_int_equal(jnum(rep, "bytes"), len);
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 3); /* one per part */
	assert_true(jnull(rep, "error"));
	parts = jget(rep, "parts");
	assert_true(cJSON_IsArray(parts));
	assert_int_equal(cJSON_GetArraySize(parts), 3);
	uint64_t rows = 0;
	for (int i = 0; i < 3; i++) {
		const cJSON *p = cJSON_GetArrayItem(parts, i);
		const struct call_log *l = upload((size_t)i);

		assert_int_equal(jnum(p, "part"), i + 1);
		assert_string_equal(jstr(p, "import_id"), l->import_id);
		assert_int_equal(jnum(p, "bytes"), l->size);
		assert_int_equal(jnum(p, "rows"), lines_of(l->sent) - 1);
		assert_int_equal(jnum(p, "attempts"), 1);
		assert_int_equal(jnum(p, "http_status"), 201);
		assert_string_equal(jstr(jobj(p, "import"), "status"), "completed");
		assert_int_equal(jnum(jobj(jobj(p, "import"), "counts"), "total"), 3);
		rows += (uint64_t)jnum(p, "rows");
	}
	assert_int_equal(rows, SPLIT_ROWS);
	imp = jobj(rep, "import");
	assert_string_equal(jstr(imp, "status"), "completed");
	counts = jobj(imp, "counts");
	assert_int_equal(jnum(counts, "total"), 9);
	assert_int_equal(jnum(counts, "created"), 6);
	assert_int_equal(jnum(counts, "updated"), 3);
	assert_int_equal(jnum(counts, "skipped"), 0);
	assert_int_equal(jnum(counts, "failed"), 0);
	csv = jobj(rep, "csv");
	assert_int_equal(jnum(csv, "rows"), SPLIT_ROWS);
	assert_int_equal(jnum(csv, "rows_uploaded"), SPLIT_ROWS);
	assert_int_equal(jnum(csv, "rows_rejected"), 0);
	assert_int_equal(jnum(csv, "bytes_before"), len);
	assert_int_equal(jnum(csv, "bytes_after"), sent);
	assert_true(jnull(csv, "rejects_file"));

	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(count_entries(F.done, "", ""), 2);
	assert_false(read_record("x.csv", &rec));
	snprintf(line, sizeof(line), "'x.csv' imported, import %s and 2 more (3 parts), 9 rows",
		 upload(0)->import_id);
	if (log_count(line) != 1) {
		dump_log();
		fail_msg("no outcome line '%s'", line);
	}
	finish();
}

/* A restart after part 1 was imported uploads parts 2 and 3 only, and the report has part 1 as
 * the record says. */
static void test_split_resume(void **state)
{
	static const char part1_id[] = "a1a1a1a1-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	size_t len;
	char *text = split_csv(&len), sha[65];
	struct staterec_part done = {.attempts = 2};
	struct staterec rec, mine = {0};
	const cJSON *rep, *parts;
	char plan[17];

	(void)state;
	split_setup();
	put_file(F.inbox, "x.csv", text, len);
	text_sha256(text, sha);

	/* A first run, stopped while part 2 is being uploaded: the plan it recorded. */
	script_upload((struct answer){.status = 201});
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 2);
	assert_true(read_record("x.csv", &rec));
	assert_int_equal(rec.n_parts, 3);
	assert_int_equal(rec.n_done, 1);
	assert_string_equal(rec.done[0].import_id, upload(0)->import_id);
	assert_string_equal(rec.import_id, upload(0)->import_id);
	assert_string_equal(rec.sha256, sha);
	assert_int_equal(strlen(rec.plan), 16);
	assert_int_equal(strspn(rec.plan, "0123456789abcdef"), 16);
	memcpy(plan, rec.plan, sizeof(plan));
	staterec_clear(&rec);
	drain(50);
	RUN_UNTIL(F.drained);
	assert_only_in("x.csv", IN_PROCESSING);
	assert_false(upload(1)->answered);

	/* The record as a run that imported part 1 as PART1_ID, in two attempts, leaves it. */
	snprintf(mine.sha256, sizeof(mine.sha256), "%s", sha);
	mine.claimed_at_ms = 1795665662000;
	mine.uploaded_at_ms = 1795665663000;
	snprintf(mine.import_id, sizeof(mine.import_id), "%s", part1_id);
	mine.n_parts = 3;
	memcpy(mine.plan, plan, sizeof(mine.plan));
	snprintf(done.import_id, sizeof(done.import_id), "%s", part1_id);
	mine.done = &done;
	mine.n_done = 1;
	write_record("x.csv", &mine);

	restart();
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	if (places_of("x.csv") != IN_DONE) {
		dump_log();
		fail_msg("x.csv is in%s", places_str(places_of("x.csv")));
	}
	assert_int_equal(n_uploads(), 4);
	assert_part_upload(upload(2), text, 2, 3);
	assert_part_upload(upload(3), text, 3, 3);
	/* The same part 2 as the first run sent (same bytes, same key). */
	assert_string_equal(upload(2)->sent, upload(1)->sent);
	assert_string_equal(upload(2)->key, upload(1)->key);
	assert_true(upload(2)->answered_seq < upload(3)->made_seq);
	/* Part 1 followed under the recorded id, never uploaded again. */
	assert_int_equal(polls_of(part1_id), 1);
	assert_int_equal(polls_of(upload(0)->import_id), 0);
	assert_int_equal(polls_of(upload(2)->import_id), 1);
	assert_int_equal(polls_of(upload(3)->import_id), 1);

	rep = report(F.done, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "done");
	assert_string_equal(jstr(rep, "import_id"), part1_id);
	parts = jget(rep, "parts");
	assert_int_equal(cJSON_GetArraySize(parts), 3);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 0), "import_id"), part1_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 0), "attempts"), 2);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 1), "import_id"), upload(2)->import_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 1), "attempts"), 1);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 2), "import_id"), upload(3)->import_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 2), "attempts"), 1);
	assert_int_equal(jnum(rep, "attempts"), 4);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
	assert_int_equal(jnum(jobj(jobj(rep, "import"), "counts"), "total"), 9);
	assert_string_equal(slurp(F.done, "x.csv", NULL), text);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* A record whose parts were cut otherwise (another plan, or a file not split then) cannot say
 * which rows were imported: the file fails at check, nothing uploaded, and the message names
 * what was imported. */
static void test_split_record_of_another_plan(void **state)
{
	static const char id_a[] = "b2b2b2b2-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	static const char id_b[] = "c3c3c3c3-1d2a-4e5f-8a9b-0c1d2e3f4a5b";
	size_t len;
	char *text = split_csv(&len);
	struct staterec_part done = {.attempts = 1};
	struct staterec rec = {.attempts = 0,
			       .claimed_at_ms = 1795665662000,
			       .uploaded_at_ms = 1795665663000};
	const cJSON *rep, *err;
	const char *msg;

	(void)state;
	split_setup();
	assert_int_equal(mkdir(F.proc, 0700), 0);
	/* Split in 3 by another plan, part 1 imported as ID_A. */
	put_file(F.proc, "x.csv", text, len);
	text_sha256(text, rec.sha256);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", id_a);
	rec.n_parts = 3;
	snprintf(rec.plan, sizeof(rec.plan), "0123456789abcdef");
	snprintf(done.import_id, sizeof(done.import_id), "%s", id_a);
	rec.done = &done;
	rec.n_done = 1;
	write_record("x.csv", &rec);
	/* Uploaded whole as ID_B by a run that did not split it. */
	put_file(F.proc, "y.csv", text, len);
	snprintf(rec.import_id, sizeof(rec.import_id), "%s", id_b);
	rec.attempts = 1;
	rec.n_parts = 0;
	rec.plan[0] = '\0';
	rec.done = NULL;
	rec.n_done = 0;
	write_record("y.csv", &rec);

	start(0);
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 2);
	assert_int_equal(n_uploads(), 0);
	assert_int_equal(n_polls(), 0);

	assert_only_in("x.csv", IN_FAILED);
	assert_string_equal(slurp(F.failed, "x.csv", NULL), text);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "import_id"), id_a);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	msg = jstr(err, "message");
	if (!strstr(msg, "3 parts") || !strstr(msg, "1 of them imported") || !strstr(msg, id_a))
		fail_msg("x.csv: message '%s'", msg);

	assert_only_in("y.csv", IN_FAILED);
	rep = report(F.failed, "y.csv");
	assert_string_equal(jstr(rep, "import_id"), id_b);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "check");
	msg = jstr(err, "message");
	if (!strstr(msg, "1 of them imported") || !strstr(msg, id_b) || !strstr(msg, "3 parts now"))
		fail_msg("y.csv: message '%s'", msg);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	assert_int_equal(engine_failed_total(F.js), 2);
	finish();
}

/* A rejected row: the copy without it is uploaded, and the rejects file lands beside the file
 * and its report under the name the report gives, even when the file's own name was taken. */
static void test_rejects_file_beside_report(void **state)
{
	static const char csv_bad[] = "Email,First Name\n"
				      "ada@example.com,Ada\n"
				      "not-an-email,Bob\n"
				      "cy@example.com,Cy\n";
	const cJSON *rep, *csv;
	const char *final, *rejects, *text;
	char line[512];

	(void)state;
	put_file(F.done, "x.csv", "old", 3);
	put_file(F.done, "x.csv.json", "{}", 2);
	put_csv("x.csv", csv_bad);
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 1);
	assert_non_null(upload(0)->sent);
	assert_string_equal(upload(0)->sent, "Email,First Name\n"
					     "ada@example.com,Ada\n"
					     "cy@example.com,Cy\n");
	final = the_entry(F.done, "x.", "Z.csv"); /* x.<timestamp>.csv */
	assert_string_not_equal(final, "x.csv");
	assert_string_equal(slurp(F.done, final, NULL), csv_bad);
	assert_string_equal(slurp(F.done, "x.csv", NULL), "old");
	rep = report(F.done, final);
	assert_string_equal(jstr(rep, "outcome"), "done");
	csv = jobj(rep, "csv");
	assert_int_equal(jnum(csv, "rows"), 3);
	assert_int_equal(jnum(csv, "rows_uploaded"), 2);
	assert_int_equal(jnum(csv, "rows_rejected"), 1);
	assert_int_equal(jnum(jobj(csv, "rejected"), "invalid_email"), 1);
	assert_true(cJSON_IsTrue(jget(csv, "normalized")));
	rejects = jstr(csv, "rejects_file");
	snprintf(line, sizeof(line), "%s.rejects.csv", final);
	assert_string_equal(rejects, line);
	text = slurp(F.done, rejects, NULL);
	if (!text)
		fail_msg("no %s in done/", rejects);
	assert_memory_equal(text, "line,reason,row\n3,", 18);
	assert_non_null(strstr(text, "not-an-email"));
	/* The file, its report, its rejects file, and the two that were there. */
	assert_int_equal(count_entries(F.done, "", ""), 5);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	snprintf(line, sizeof(line), "; 1 row rejected (listed in %s)", rejects);
	assert_int_equal(log_count(line), 1);
	finish();
}

/* Part 2 refused for good: failed/ at upload, with part 1's import in the report (it exists:
 * the operator decides about it), part 3 never uploaded, each part's attempts counted. */
static void test_split_part_refused(void **state)
{
	size_t len;
	char *text = split_csv(&len);
	const cJSON *rep, *parts, *err;

	(void)state;
	split_setup();
	F.cfg->folders[0].settings.follow_import = false;
	put_file(F.inbox, "x.csv", text, len);
	script_upload((struct answer){.status = 201});
	script_upload((struct answer){.status = 503});
	script_upload((struct answer){
		.status = 422,
		.body = "{\"statusCode\":422,\"name\":\"validation_error\","
			"\"message\":\"bad part\"}"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_part_upload(upload(0), text, 1, 3);
	assert_part_upload(upload(1), text, 2, 3);
	assert_part_upload(upload(2), text, 2, 3); /* the retry: the same part, the same key */
	assert_string_equal(upload(1)->sent, upload(2)->sent);
	assert_only_in("x.csv", IN_FAILED);
	assert_string_equal(slurp(F.failed, "x.csv", NULL), text);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	assert_string_equal(jstr(rep, "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(rep, "attempts"), 3);
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "upload");
	assert_int_equal(jnum(err, "http_status"), 422);
	assert_string_equal(jstr(err, "message"), "bad part");
	parts = jget(rep, "parts");
	assert_int_equal(cJSON_GetArraySize(parts), 3);
	assert_string_equal(jstr(cJSON_GetArrayItem(parts, 0), "import_id"), upload(0)->import_id);
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 0), "attempts"), 1);
	assert_true(jnull(cJSON_GetArrayItem(parts, 1), "import_id"));
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 1), "attempts"), 2);
	assert_true(jnull(cJSON_GetArrayItem(parts, 2), "import_id"));
	assert_int_equal(jnum(cJSON_GetArrayItem(parts, 2), "attempts"), 0);
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	finish();
}

/* Resend fails part 2's import: every part is still followed, the file fails at import naming
 * the part, and the sum says failed. */
static void test_split_part_import_failed(void **state)
{
	size_t len;
	char *text = split_csv(&len);
	const cJSON *rep, *parts, *err;
	const char *msg;

	(void)state;
	split_setup();
	put_file(F.inbox, "x.csv", text, len);
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	script_poll((struct answer){.status = 200, .import_status = "failed"});
	script_poll((struct answer){.status = 200, .import_status = "completed"});
	start(0);
	assert_int_equal(submit("x.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(count_events(EV_LEFT, "x.csv") == 1);
	assert_int_equal(n_uploads(), 3);
	assert_int_equal(n_polls(), 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(polls_of(upload(i)->import_id), 1);
	assert_only_in("x.csv", IN_FAILED);
	rep = report(F.failed, "x.csv");
	assert_string_equal(jstr(rep, "outcome"), "failed");
	err = jobj(rep, "error");
	assert_string_equal(jstr(err, "stage"), "import");
	msg = jstr(err, "message");
	if (!strstr(msg, upload(1)->import_id) || !strstr(msg, "part 2 of 3"))
		fail_msg("message '%s'", msg);
	assert_string_equal(jstr(jobj(rep, "import"), "status"), "failed");
	assert_int_equal(jnum(jobj(jobj(rep, "import"), "counts"), "failed"), 3);
	parts = jget(rep, "parts");
	assert_string_equal(jstr(jobj(cJSON_GetArrayItem(parts, 0), "import"), "status"),
			    "completed");
	assert_string_equal(jstr(jobj(cJSON_GetArrayItem(parts, 1), "import"), "status"), "failed");
	assert_string_equal(jstr(jobj(cJSON_GetArrayItem(parts, 2), "import"), "status"),
			    "completed");
	finish();
}


/* ---- coalescing (issue 18): files that wait go out together ------------------------------- */

/* Files waiting for an upload slot. */
static size_t queued_files(void)
{
	struct engine_folder_view v;

	engine_folder_view(F.js, 0, &v);
	return v.waiting;
}

#define CO_A "Email,First Name\nada@example.com,Ada\n"
#define CO_B "Email,First Name\nbob@example.com,Bob\ncy@example.com,Cy\n"
#define CO_C "Email,First Name\ndora@example.com,Dora" /* no line end after its last row */
#define CO_D "Email,First Name\neve@example.com,Eve\n"

/* One upload slot: A goes alone at once (nothing waits), and is held; B, C and D wait behind
 * it and go as one import: one header, then each file's rows in the order they waited (C's
 * last row given its line end). Each keeps its own report, with the shared import and the
 * batch; each record named the batch before the request. */
static void test_coalesce_waiting_files(void **state)
{
	const char *names[] = {"b.csv", "c.csv", "d.csv"};
	const struct call_log *l;
	const cJSON *rep, *batch;
	struct staterec rec;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	put_csv("a.csv", CO_A);
	put_csv("b.csv", CO_B);
	put_csv("c.csv", CO_C);
	put_csv("d.csv", CO_D);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(submit(names[i]), ENGINE_CLAIMING);
	RUN_UNTIL(queued_files() == 3);
	/* A was alone: its own bytes, nothing else. */
	assert_string_equal(upload(0)->sent, CO_A);
	assert_int_equal(upload(0)->n_segs, 2);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 4);

	assert_int_equal(n_uploads(), 2);
	l = upload(1);
	assert_string_equal(l->sent, "Email,First Name\nbob@example.com,Bob\ncy@example.com,Cy\n"
				     "dora@example.com,Dora\neve@example.com,Eve\n");
	assert_string_equal(l->filename + strlen(l->filename) - 4, ".csv");
	assert_true(strncmp(l->filename, "batch-", 6) == 0);
	rep = report(F.done, "a.csv");
	assert_null(cJSON_GetObjectItemCaseSensitive(rep, "batch"));
	for (size_t i = 0; i < 3; i++) {
		assert_only_in(names[i], IN_DONE);
		rep = report(F.done, names[i]);
		assert_string_equal(jstr(rep, "outcome"), "done");
		assert_string_equal(jstr(rep, "import_id"), l->import_id);
		assert_int_equal(jnum(rep, "attempts"), 1);
		batch = jobj(rep, "batch");
		assert_non_null(batch);
		assert_int_equal(jnum(batch, "rows"), 4);
		assert_int_equal(jnum(batch, "file_count"), 3);
		assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(batch, "files")), 3);
		assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(batch, "files"), (int)i)->valuestring,
				    names[i]);
		assert_int_equal(jnum(jobj(rep, "csv"), "rows_uploaded"), i == 0 ? 2 : 1);
	}
	assert_int_equal(count_entries(F.proc, "", ""), 0);
	/* The outcome's line says the import is the batch's, not the file's alone. */
	assert_int_equal(log_count(", with 2 other files)"), 3);
	(void)rec;
	finish();
}

/* coalesce: off: each waiting file its own upload. */
static void test_coalesce_off(void **state)
{
	(void)state;
	F.cfg->api.max_in_flight = 1;
	F.cfg->folders[0].settings.coalesce = CONFIG_COALESCE_OFF;
	put_csv("a.csv", CO_A);
	put_csv("b.csv", CO_B);
	put_csv("d.csv", CO_D);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("d.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(queued_files() == 2);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);
	assert_int_equal(n_uploads(), 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(upload(i)->n_segs, 2);
	assert_null(cJSON_GetObjectItemCaseSensitive(report(F.done, "b.csv"), "batch"));
	finish();
}

/* A batch refused with a 422 (one file's fault, maybe): each of its files is sent again alone;
 * the one Resend refuses alone fails, its neighbour is done, and nobody lost an attempt to the
 * batch. */
static void test_coalesce_refused_batch_bisects(void **state)
{
	const cJSON *rep;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	put_csv("a.csv", CO_A);
	put_csv("b.csv", CO_B);
	put_csv("d.csv", CO_D);
	script_upload((struct answer){.hold = true});
	script_upload((struct answer){.status = 422, .body = "{\"statusCode\":422,\"name\":"
							   "\"validation_error\",\"message\":"
							   "\"bad row\"}"});
	script_upload((struct answer){.status = 201});
	script_upload((struct answer){.status = 422, .body = "{\"statusCode\":422,\"name\":"
							   "\"validation_error\",\"message\":"
							   "\"bad row\"}"});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("d.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(queued_files() == 2);
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);

	assert_int_equal(n_uploads(), 4);
	assert_true(upload(1)->n_segs > 2);  /* the batch */
	assert_int_equal(upload(2)->n_segs, 2); /* then each alone, in their order */
	assert_int_equal(upload(3)->n_segs, 2);
	assert_string_equal(upload(2)->sent, CO_B);
	assert_string_equal(upload(3)->sent, CO_D);
	assert_only_in("b.csv", IN_DONE);
	rep = report(F.done, "b.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_null(cJSON_GetObjectItemCaseSensitive(rep, "batch"));
	assert_only_in("d.csv", IN_FAILED);
	rep = report(F.failed, "d.csv");
	assert_int_equal(jnum(rep, "attempts"), 1);
	assert_string_equal(jstr(jobj(rep, "error"), "name"), "validation_error");
	assert_int_equal(log_count("was refused"), 1);
	finish();
}

/* The batch's import ends failed at Resend: each of its files is checked again and sent
 * alone; here both of their own imports complete. A, imported alone, is seen failed in the same
 * answer (one page of the list for both imports) and simply fails: it was alone already. */
static void test_coalesce_import_failed_resends_alone(void **state)
{
	const cJSON *rep;

	(void)state;
	F.cfg->api.max_in_flight = 1;
	F.cfg->folders[0].settings.follow_import = true;
	put_csv("a.csv", CO_A);
	put_csv("b.csv", CO_B);
	put_csv("d.csv", CO_D);
	script_upload((struct answer){.hold = true});
	start(0);
	assert_int_equal(submit("a.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(n_uploads() == 1);
	assert_int_equal(submit("b.csv"), ENGINE_CLAIMING);
	assert_int_equal(submit("d.csv"), ENGINE_CLAIMING);
	RUN_UNTIL(queued_files() == 2);
	script_poll((struct answer){.status = 200, .import_status = "failed"});
	release_call(0, (struct answer){.status = 201});
	RUN_UNTIL(count_events(EV_LEFT, NULL) == 3);

	assert_true(n_lists() >= 1); /* both imports, one question */
	assert_int_equal(n_uploads(), 4);
	assert_true(upload(1)->n_segs > 2);
	assert_only_in("a.csv", IN_FAILED);
	/* Each checked again in the pool: alone, in whichever order their checks end (they share
	 * no email: their order does not matter). */
	for (size_t i = 0; i < 2; i++) {
		const char *name = i ? "d.csv" : "b.csv";
		size_t k = strcmp(upload(2)->sent, i ? CO_D : CO_B) == 0 ? 2 : 3;

		assert_string_equal(upload(k)->sent, i ? CO_D : CO_B);
		assert_only_in(name, IN_DONE);
		rep = report(F.done, name);
		assert_string_equal(jstr(jobj(rep, "import"), "status"), "completed");
		assert_string_equal(jstr(rep, "import_id"), upload(k)->import_id);
		assert_null(cJSON_GetObjectItemCaseSensitive(rep, "batch"));
	}
	assert_int_equal(log_count("failed at Resend; the file is sent again on its own"), 2);
	finish();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_good_file),
		T(test_follow_import),
		T(test_follow_import_failed),
		T(test_header_lacks_mapped_column),
		T(test_retry_then_success),
		T(test_retries_spent),
		T(test_rate_limit_is_a_wait),
		T(test_rate_limit_without_headers_backs_off),
		T(test_rate_limit_between_attempts),
		T(test_rate_limit_on_poll),
		T(test_permanent_refusal),
		T(test_key_refused_pauses),
		T(test_name_busy),
		T(test_namesake_found_at_claim),
		T(test_capacity),
		T(test_resume),
		T(test_drain_aborts_upload),
		T(test_drain_releases_waiting),
		T(test_drain_released_queued_keeps_attempts),
		T(test_drain_during_checks),
		T(test_move_to_done_retried),
		T(test_move_retried_across_restart),
		T(test_dry_run),
		T(test_grown_during_upload),
		T(test_replaced_during_upload),
		T(test_changed_before_upload),
		T(test_local_read_error_not_retried),
		T(test_split_into_parts),
		T(test_split_resume),
		T(test_split_record_of_another_plan),
		T(test_rejects_file_beside_report),
		T(test_split_part_refused),
		T(test_split_part_import_failed),
		T(test_coalesce_waiting_files),
		T(test_coalesce_off),
		T(test_coalesce_refused_batch_bisects),
		T(test_coalesce_import_failed_resends_alone),
	};

	return cmocka_run_group_tests_name("job", tests, NULL, NULL);
}
