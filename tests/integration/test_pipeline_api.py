"""What the API answers and what becomes of the file: following imports, Resend's errors,
checks before any request, retries, and a refused API key."""

import re
import time

from daemon_harness import pipe_env, pipe_fake, sha256_bytes  # noqa: F401

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CSV = b"email,first_name\nann@example.com,Ann\n"


def only_report(folder, kind):
    reports = folder.reports(kind)
    assert len(reports) == 1, reports
    return next(iter(reports.values()))


def test_following_an_import_records_its_counts(pipe_env):
    env = pipe_env
    # Rows the daemon would reject are imported here: the counts are Resend's (the fake's).
    upsert = env.folder("upsert", column_map={"email": "Email", "first_name": "Name"},
                        invalid_rows="import")
    skip = env.folder("skip", column_map={"email": "Email"}, on_conflict="skip")
    daemon = env.start(env.config([upsert, skip]))

    # 4 rows: two new contacts, one of them again (updated by upsert), one bad address.
    first = (b"Email,Name\nalice@example.com,Alice\nbob@example.com,Bob\n"
             b"not-an-email,Nobody\nalice@example.com,Alice Again\n")
    upsert.drop("first.csv", first)
    env.wait_outcomes(upsert, done=1)
    # Then, with skip: alice exists (skipped), carol is new, and a blank line is no row.
    second = b"Email\r\nALICE@example.com\r\n\r\ncarol@example.com\r\n"
    skip.drop("second.csv", second)
    env.wait_outcomes(skip, done=1)

    report = only_report(upsert, "done")
    uploads = env.uploads()
    assert [u["file"]["filename"] for u in uploads] == ["first.csv", "second.csv"]
    assert report["outcome"] == "done" and report["error"] is None, report
    assert report["folder"] == "upsert" and report["file"] == "first.csv"
    assert report["bytes"] == len(first) and report["sha256"] == sha256_bytes(first)
    assert report["attempts"] == 1 and report["http_status"] == 201
    assert report["import_id"] == uploads[0]["answer"]["id"]
    assert report["import"]["status"] == "completed"
    assert report["import"]["counts"] == {"total": 4, "created": 2, "updated": 1, "skipped": 0,
                                          "failed": 1}
    assert report["import"]["completed_at"]
    for key in ("claimed_at", "uploaded_at", "finished_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", report[key]), report
    assert report["claimed_at"] <= report["uploaded_at"] <= report["finished_at"], report
    # It was followed: at least one GET of that import, and the last one said completed.
    polls = [p for p in env.polls() if p["path"].endswith(report["import_id"])]
    assert polls and polls[-1]["answer"]["status"] == "completed"

    report = only_report(skip, "done")
    assert report["import"]["counts"] == {"total": 2, "created": 1, "updated": 0, "skipped": 1,
                                          "failed": 0}
    assert report["import_id"] == uploads[1]["answer"]["id"]
    daemon.stop()


def test_an_import_that_fails_at_resend_fails_the_file_at_stage_import(pipe_env):
    env = pipe_env
    env.fake.configure(fail_imports=True)
    box = env.folder("box")
    daemon = env.start(env.config([box]))
    box.drop("doomed.csv", b"email\na@example.com\nb@example.com\n")
    env.wait_outcomes(box, failed=1)
    report = only_report(box, "failed")
    [upload] = env.uploads()
    assert report["outcome"] == "failed", report
    assert report["error"]["stage"] == "import", report
    assert report["import_id"] == upload["answer"]["id"]
    assert report["http_status"] == 201
    assert report["import"]["status"] == "failed"
    assert report["import"]["counts"]["total"] == 2
    assert report["import_id"] in report["error"]["message"]
    assert box.files("failed") == ["doomed.csv"]
    daemon.stop()


def test_a_422_fails_the_file_at_once_with_resends_name_and_message(pipe_env):
    env = pipe_env
    box = env.folder("box")
    message = "Invalid `column_map`: the test says no (ünïcode kept)"
    env.fake.faults([{"status": 422, "name": "validation_error", "message": message,
                      "method": "POST", "path_prefix": "/contacts/imports"}])
    daemon = env.start(env.config([box]))
    box.drop("refused.csv", CSV)
    env.wait_outcomes(box, failed=1)
    report = only_report(box, "failed")
    assert report["error"] == {"stage": "upload", "http_status": 422,
                               "name": "validation_error", "message": message}, report
    assert report["attempts"] == 1 and report["http_status"] == 422
    assert report["import_id"] is None and report["import"] is None
    time.sleep(0.5)
    assert len(env.uploads()) == 1, "a 422 was retried"
    assert env.polls() == []
    assert any("refused.csv" in line and "validation_error" in line
               for line in daemon.log_lines("failed"))
    daemon.stop()


def test_a_missing_column_fails_at_check_without_any_request(pipe_env):
    env = pipe_env
    mapped = env.folder("mapped", column_map={"email": "Email", "first_name": "First Name",
                                              "properties": {"plan": {"column": "Plan",
                                                                      "type": "string"}}})
    unmapped = env.folder("unmapped")  # Resend's own names: "email" required
    daemon = env.start(env.config([mapped, unmapped]))
    mapped.drop("no-plan.csv", b"Email,First Name\nann@example.com,Ann\n")
    unmapped.drop("capital.csv", b"Email,first_name\nann@example.com,Ann\n")
    env.wait_outcomes(mapped, failed=1)
    env.wait_outcomes(unmapped, failed=1)
    report = only_report(mapped, "failed")
    assert report["error"]["stage"] == "check" and report["error"]["http_status"] is None
    assert "Plan" in report["error"]["message"], report
    assert report["sha256"] == sha256_bytes(b"Email,First Name\nann@example.com,Ann\n")
    assert report["attempts"] == 0 and report["uploaded_at"] is None, report
    report = only_report(unmapped, "failed")
    assert report["error"]["stage"] == "check"
    assert "email" in report["error"]["message"], report
    time.sleep(0.5)
    assert env.fake.requests() == [], "a request was sent for a file that failed its check"
    daemon.stop()


def retry_config(env, folder, **retry):
    return env.config([folder], retry={"max_attempts": 3, "initial_delay_ms": 100,
                                       "max_delay_ms": 400, **retry})


def test_a_500_then_success_is_done_on_the_second_attempt(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 500, "method": "POST"}])
    daemon = env.start(retry_config(env, box))
    box.drop("again.csv", CSV)
    env.wait_outcomes(box, done=1)
    uploads = env.uploads()
    assert [u["status"] for u in uploads] == [500, 201]
    # The same file, so the same idempotency key on both attempts.
    assert uploads[0]["headers"]["idempotency-key"] == uploads[1]["headers"]["idempotency-key"]
    assert uploads[1]["file"]["sha256"] == sha256_bytes(CSV)
    report = only_report(box, "done")
    assert report["attempts"] == 2 and report["http_status"] == 201, report
    assert report["import_id"] == uploads[1]["answer"]["id"]
    daemon.stop()


def test_a_502_with_an_html_body_is_retried(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 502, "method": "POST"}])
    daemon = env.start(retry_config(env, box))
    box.drop("proxy.csv", CSV)
    env.wait_outcomes(box, done=1)
    uploads = env.uploads()
    assert [u["status"] for u in uploads] == [502, 201]
    assert "Bad Gateway" in uploads[0]["answer"]  # the fake really sent its HTML page
    assert only_report(box, "done")["attempts"] == 2
    assert daemon.log_lines(r"proxy\.csv.*attempt 1 failed.*502 Bad Gateway"), daemon.log()
    daemon.stop()


def test_a_429_retry_after_is_honoured(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 429, "retry_after": 2, "method": "POST"}])
    # Without retry-after, the retry would come after 100..200 ms.
    daemon = env.start(retry_config(env, box, initial_delay_ms=100, max_delay_ms=200))
    box.drop("busy.csv", CSV)
    env.wait_outcomes(box, done=1)
    uploads = env.uploads()
    assert [u["status"] for u in uploads] == [429, 201]
    waited = uploads[1]["started"] - uploads[0]["finished"]
    assert 1.8 <= waited <= 8, f"retried {waited:.2f} s after a 429 with retry-after: 2"
    assert only_report(box, "done")["outcome"] == "done"
    daemon.stop()


def test_when_every_attempt_fails_the_file_fails_at_stage_upload(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 503, "method": "POST", "count": 100}])
    daemon = env.start(retry_config(env, box, max_attempts=2))
    box.drop("down.csv", CSV)
    env.wait_outcomes(box, failed=1)
    report = only_report(box, "failed")
    assert report["attempts"] == 2, report
    assert report["error"]["stage"] == "upload"
    assert report["error"]["http_status"] == 503
    assert report["error"]["name"] == "service_unavailable"
    assert "temporarily unavailable" in report["error"]["message"], report
    assert report["import_id"] is None
    time.sleep(0.5)
    assert [u["status"] for u in env.uploads()] == [503, 503]
    daemon.stop()


def test_a_refused_api_key_pauses_uploads_and_fails_nothing(pipe_env):
    env = pipe_env
    box = env.folder("box")
    config = env.config([box])
    daemon = env.start(config, api_key="re_wrong_key")
    names = ["k1.csv", "k2.csv", "k3.csv"]
    for index, name in enumerate(names):
        box.drop(name, f"email\nkey{index}@example.com\n".encode())
    env.wait_for(lambda: env.fake.requests() and len(box.processing_files()) == 3,
                 "a refused upload and all three files claimed")
    time.sleep(1.5)
    # Uploads already started when the first refusal came are refused too; after it, all
    # uploads wait (60 s): no file is tried twice.
    records = env.fake.requests()
    assert 1 <= len(records) <= 3 and {r["status"] for r in records} == {403}, \
        [(r["file"]["filename"], r["status"]) for r in records]
    assert len({r["file"]["filename"] for r in records}) == len(records), \
        "uploads went on after the key was refused"
    assert records[0]["answer"]["message"] == "API key is invalid"
    # Nothing failed, nothing done: the files wait in processing.
    assert box.files("failed") == [] and box.report_names("failed") == []
    assert box.files("done") == []
    assert sorted(box.processing_files()) == names
    assert [e for e in box.inbox_entries() if e != ".resend-dropd"] == []
    # One loud line, not one per file.
    loud = daemon.log_lines(r"API key is invalid")
    assert len(loud) == 1, loud
    assert re.search(r"\berror: .*paused", loud[0]), loud
    assert "re_wrong_key" not in daemon.log(), "the API key was logged"
    daemon.stop()
    assert sorted(box.processing_files()) == names

    # A batch run has nobody to wait for: exit 2, files still in processing.
    once = env.run_once(config, api_key="re_wrong_key", timeout=30)
    once.assert_exit(once.returncode, 2)
    assert sorted(box.processing_files()) == names
    assert box.files("failed") == [] and box.files("done") == []

    # With the right key, the next start imports them all, each on its first real attempt.
    daemon = env.start(config)
    env.wait_outcomes(box, done=3)
    for report in box.reports("done").values():
        assert report["attempts"] == 1, report
    daemon.stop()


def test_a_connection_closed_without_an_answer_is_retried(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"close": True, "method": "POST"}])
    daemon = env.start(retry_config(env, box))
    box.drop("hangup.csv", CSV)
    env.wait_outcomes(box, done=1)
    assert [u["status"] for u in env.uploads()] == [None, 201]
    assert only_report(box, "done")["attempts"] == 2
    daemon.stop()


def test_a_quota_error_pauses_without_failing_or_hammering(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 429, "name": "daily_quota_exceeded",
                      "message": "You have reached your daily quota.", "method": "POST",
                      "count": 100}])
    daemon = env.start(retry_config(env, box, max_attempts=2))
    box.drop("q1.csv", CSV)
    box.drop("q2.csv", CSV.replace(b"ann@", b"ann2@"))
    env.wait_for(lambda: len(env.uploads()) >= 1, "the first upload")
    time.sleep(2.5)  # two attempts with 100 ms backoff would long be spent
    assert len(env.uploads()) <= 2, [u["status"] for u in env.uploads()]
    assert box.files("failed") == [] and box.files("done") == []
    assert sorted(box.processing_files()) == ["q1.csv", "q2.csv"]
    assert daemon.log_lines("paused"), daemon.log()
    daemon.stop()
    assert daemon.stop_seconds < 4, "SIGTERM waited for the quota pause"
    assert sorted(box.processing_files()) == ["q1.csv", "q2.csv"]


def test_the_servers_rate_limit_is_respected_without_failing_files(pipe_env):
    """The fake allows 2 requests per second; the daemon's own ceiling is far higher. Its
    answers' rate-limit headers and 429s must slow the daemon down, not fail files."""
    env = pipe_env
    env.fake.configure(rps=2)
    box = env.folder("box")
    daemon = env.start(retry_config(env, box, max_attempts=8, initial_delay_ms=200,
                                    max_delay_ms=2000))
    for index in range(6):
        box.drop(f"r{index}.csv", f"email\nr{index}@example.com\n".encode())
    env.wait_outcomes(box, done=6, timeout=60)
    uploads = env.uploads()
    assert sorted(u["file"]["filename"] for u in uploads if u["status"] == 201) == \
        [f"r{index}.csv" for index in range(6)]
    daemon.stop()


def test_the_clients_request_rate_ceiling_holds(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    daemon = env.start(env.config([box], api={"requests_per_second": 4, "max_in_flight": 8}))
    for index in range(12):
        box.drop(f"c{index:02d}.csv", f"email\nc{index}@example.com\n".encode())
    env.wait_outcomes(box, done=12, timeout=60)
    starts = sorted(u["started"] for u in env.uploads())
    assert len(starts) == 12
    # A bucket of 4 tokens refilled at 4 per second: 12 requests need at least 2 s, and no
    # second holds more than 4 + 4.
    assert starts[-1] - starts[0] >= 1.7, starts
    for index, start in enumerate(starts):
        in_window = [s for s in starts[index:] if s - start < 1.0]
        assert len(in_window) <= 8, starts
    daemon.stop()


def test_files_refused_by_the_checks_never_reach_the_api(pipe_env):
    env = pipe_env
    small = env.folder("small", max_file_bytes=100)
    daemon = env.start(env.config([small]))
    small.drop("big.csv", b"email\n" + b"x@example.com\n" * 20)
    small.drop("empty.csv", b"")
    small.drop("quote.csv", b'email,"unterminated\nx@example.com\n')
    env.wait_outcomes(small, failed=3)
    reports = small.reports("failed")
    assert "over the limit" in reports["big.csv.json"]["error"]["message"]
    for report in reports.values():
        assert report["error"]["stage"] == "check", report
        assert report["attempts"] == 0 and report["uploaded_at"] is None, report
    time.sleep(0.3)
    assert env.fake.requests() == []
    daemon.stop()


def test_without_follow_import_a_file_is_done_once_uploaded(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    env.fake.configure(import_seconds=30)  # it would take long to complete
    daemon = env.start(env.config([box]))
    box.drop("quick.csv", CSV)
    env.wait_outcomes(box, done=1, timeout=15)
    report = only_report(box, "done")
    assert report["import_id"] == env.uploads()[0]["answer"]["id"]
    assert report["import"] is None and report["http_status"] == 201, report
    assert env.polls() == []
    daemon.stop()
