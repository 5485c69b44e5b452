"""The API key is never echoed: a server (or a proxy) whose error quotes the request's
Authorization header must not get the key into the daemon's log, a report or the status
lines. The fake's echo_auth faults quote the header and the bare key in the error message (or
in the 502 page); each test runs with a key of Resend's shape and with one of no known shape,
which only the configured key's own match can find."""

import os
import signal

import pytest

from daemon_harness import FakeResend, pipe_env  # noqa: F401

RE_KEY = "re_Q7xK2mPz_9vLc4RtYw8NbJh3FsDg6AeU"
ODD_KEY = "Zk4-opaque-Secret-Value-771"
MARKER = "[redacted]"
CSV = b"email,first_name\nann@example.com,Ann\n"


@pytest.fixture(params=[RE_KEY, ODD_KEY], ids=["resend-shaped", "no-shape"])
def secret_key(request):
    return request.param


@pytest.fixture
def pipe_fake(secret_key):
    """The harness's fake (pipe_env takes it by name), accepting this test's key."""
    with FakeResend(api_keys=(secret_key,), import_seconds=0.2) as fake:
        yield fake


def assert_no_key(text, key, where):
    """Not the key, and not a part of it either: no 8 of its characters in a row."""
    assert key not in text, f"the API key is in {where}:\n{text}"
    for start in range(len(key) - 7):
        assert key[start:start + 8] not in text, \
            f"part of the API key ({key[start:start + 8]!r}) is in {where}:\n{text}"


def read_text(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def only_report_text(folder, kind):
    [name] = folder.report_names(kind)
    return read_text(os.path.join(getattr(folder, kind), name))


def log_status(env, daemon):
    """SIGUSR1: the status summary, as logged."""
    # The summary's last line is each folder's inbox line: wait for all of it.
    before = len(daemon.log_lines(r"status: .*: inbox: "))
    daemon.process.send_signal(signal.SIGUSR1)
    env.wait_for(lambda: len(daemon.log_lines(r"status: .*: inbox: ")) > before,
                 "the status lines")
    return "\n".join(daemon.log_lines(r"status: "))


def assert_echoed(record, key):
    """The fake really sent the key back: the test tests something."""
    answer = record["answer"]
    text = answer if isinstance(answer, str) else answer["message"]
    assert key in text, record


def retry_config(env, folder, **retry):
    return env.config([folder], retry={"max_attempts": 3, "initial_delay_ms": 100,
                                       "max_delay_ms": 400, **retry})


def test_a_422_that_echoes_the_key_fails_the_file_with_the_key_redacted(pipe_env, secret_key):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 422, "name": "validation_error", "message": "Invalid `file`.",
                      "echo_auth": True, "method": "POST"}])
    daemon = env.start(env.config([box]), api_key=secret_key)
    box.drop("echo.csv", CSV)
    env.wait_outcomes(box, failed=1)
    [upload] = env.uploads()
    assert_echoed(upload, secret_key)

    text = only_report_text(box, "failed")
    assert_no_key(text, secret_key, "the failed report")
    report = box.report("failed", "echo.csv")
    assert report["error"]["http_status"] == 422 and report["error"]["name"] == \
        "validation_error", report
    assert report["error"]["message"].startswith("Invalid `file`. (Authorization: Bearer "
                                                 + MARKER), report
    assert MARKER in report["error"]["message"], report

    # The outcome line comes once the move is durable, a moment after the report is visible.
    [line] = env.wait_for(lambda: daemon.log_lines(r"'echo\.csv' failed at upload"),
                          "the outcome line")
    assert MARKER in line and "validation_error" in line, line
    status = log_status(env, daemon)
    assert_no_key(status, secret_key, "the status lines")
    assert "1 failed" in status, status
    daemon.stop()
    assert_no_key(daemon.log(), secret_key, "the daemon's log")


def test_retried_errors_that_echo_the_key_are_logged_redacted(pipe_env, secret_key):
    env = pipe_env
    box = env.folder("box")
    # A Resend-shaped 500, then a proxy's 502 page: both quote the header.
    env.fake.faults([{"status": 500, "echo_auth": True, "method": "POST"},
                     {"status": 502, "echo_auth": True, "method": "POST"}])
    daemon = env.start(retry_config(env, box), api_key=secret_key)
    box.drop("again.csv", CSV)
    env.wait_outcomes(box, done=1)
    uploads = env.uploads()
    assert [u["status"] for u in uploads] == [500, 502, 201]
    assert_echoed(uploads[0], secret_key)
    assert_echoed(uploads[1], secret_key)

    warnings = daemon.log_lines(r"'again\.csv' upload attempt \d failed")
    assert len(warnings) == 2, daemon.log()
    assert "unexpected error occurred" in warnings[0] and "502 Bad Gateway" in warnings[1], \
        warnings
    for line in warnings:
        assert "Authorization: Bearer " + MARKER in line and "key " + MARKER in line, line
    assert_no_key(only_report_text(box, "done"), secret_key, "the report")
    assert_no_key(log_status(env, daemon), secret_key, "the status lines")
    daemon.stop()
    assert_no_key(daemon.log(), secret_key, "the daemon's log")


def test_spent_retries_that_echo_the_key_fail_the_file_redacted(pipe_env, secret_key):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 503, "echo_auth": True, "method": "POST", "count": 100}])
    daemon = env.start(retry_config(env, box, max_attempts=2), api_key=secret_key)
    box.drop("down.csv", CSV)
    env.wait_outcomes(box, failed=1)
    text = only_report_text(box, "failed")
    assert_no_key(text, secret_key, "the failed report")
    message = box.report("failed", "down.csv")["error"]["message"]
    assert MARKER in message and message.endswith("(gave up after 2 attempts)"), message
    daemon.stop()
    assert_no_key(daemon.log(), secret_key, "the daemon's log")


def test_import_checks_that_echo_the_key_are_logged_and_reported_redacted(pipe_env,
                                                                          secret_key):
    env = pipe_env
    box = env.folder("box")
    polls = "/contacts/imports/"
    # The first check fails and is asked again (a debug line); the second one fails the file.
    env.fake.faults([{"status": 500, "echo_auth": True, "method": "GET", "path_prefix": polls},
                     {"status": 404, "echo_auth": True, "method": "GET", "path_prefix": polls}])
    daemon = env.start(env.config([box]), api_key=secret_key)
    box.drop("followed.csv", CSV)
    env.wait_outcomes(box, failed=1)
    checks = env.polls()
    assert [p["status"] for p in checks] == [500, 404], checks
    assert_echoed(checks[1], secret_key)

    [retried] = daemon.log_lines(r"'followed\.csv': reading import .* failed")
    assert MARKER in retried, retried
    text = only_report_text(box, "failed")
    assert_no_key(text, secret_key, "the failed report")
    report = box.report("failed", "followed.csv")
    assert report["error"]["stage"] == "import" and report["error"]["http_status"] == 404
    assert MARKER in report["error"]["message"], report
    daemon.stop()
    assert_no_key(daemon.log(), secret_key, "the daemon's log")


def test_a_refusal_that_echoes_the_key_pauses_with_the_key_redacted(pipe_env, secret_key):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"status": 401, "echo_auth": True, "method": "POST"}])
    daemon = env.start(env.config([box]), api_key=secret_key)
    box.drop("paused.csv", CSV)
    env.wait_for(lambda: daemon.log_lines(r"uploads paused"), "the pause's log line")
    [line] = daemon.log_lines(r"uploads paused")
    assert MARKER in line and "HTTP 401" in line, line
    assert_echoed(env.uploads()[0], secret_key)
    assert_no_key(log_status(env, daemon), secret_key, "the status lines")
    daemon.stop()
    assert box.processing_files() == ["paused.csv"]
    assert_no_key(daemon.log(), secret_key, "the daemon's log")
