"""The uploaded file is the file reported: a file changed through its processing path while it
is being uploaded is not reported done with the sha256 and size of what it was before.

Grown: Resend got the bytes that were checked (the part's length is announced, so curl sends
no more) and made an import; the file goes to failed, saying how it changed and which import
was made, so that the operator can decide. Shrunk: the upload cannot be completed; the file
fails at once (a local error, never retried), with the daemon's own message rather than curl's
"aborted by callback". Replaced (another file renamed over its name): failed too."""

import os
import re
import signal
import time

from daemon_harness import pipe_env, pipe_fake, sha256_bytes  # noqa: F401

HOLD_SECONDS = 3  # how long the fake holds the answer of an upload it has read whole


def csv_of_size(size, first=0, header=True):
    """A real CSV of exactly SIZE bytes: a header (unless not HEADER) and rows of distinct
    addresses, the last one's name padded to fit."""
    out = bytearray(b"email,first_name\n" if header else b"")
    i = first
    while True:
        row = f"user{i:08d}@example.com,User {i}\n".encode()
        if size - len(out) - len(row) < 26:
            break
        out += row
        i += 1
    prefix = f"user{i:08d}@example.com,".encode()  # 25 bytes
    out += prefix + b"x" * (size - len(out) - len(prefix) - 1) + b"\n"
    assert len(out) == size
    return bytes(out)


def only_report(folder, kind):
    reports = folder.reports(kind)
    assert len(reports) == 1, reports
    return next(iter(reports.values()))


def hold_answers(env):
    """The fake reads each upload whole, then holds its answer (a 201) for HOLD_SECONDS."""
    env.fake.faults([{"delay": HOLD_SECONDS, "method": "POST",
                      "path_prefix": "/contacts/imports", "count": 10}])


def wait_upload_read(env, what):
    """Until the fake is receiving (or holding) an upload: the daemon's check before the
    upload is behind it."""
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, what)


def assert_no_curl_words(daemon):
    log = daemon.log()
    assert "aborted by callback" not in log and "Operation was aborted" not in log, log


def test_an_unchanged_file_held_at_the_api_still_goes_to_done(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    hold_answers(env)
    daemon = env.start(env.config([box]))
    data = csv_of_size(12_345)
    box.drop("same.csv", data)
    wait_upload_read(env, "the upload of same.csv")
    env.wait_outcomes(box, done=1, timeout=HOLD_SECONDS + 20)
    report = only_report(box, "done")
    [upload] = env.uploads()
    assert report["outcome"] == "done" and report["error"] is None, report
    assert report["bytes"] == len(data) and report["sha256"] == sha256_bytes(data)
    assert report["import_id"] == upload["answer"]["id"]
    assert upload["file"]["sha256"] == sha256_bytes(data)
    daemon.stop()


def test_a_file_grown_during_its_upload_fails_with_the_import_that_was_made(pipe_env):
    env = pipe_env
    box = env.folder("box")  # follow_import: true, yet the import is not followed
    hold_answers(env)
    daemon = env.start(env.config([box]))
    data = csv_of_size(17_377)
    extra = csv_of_size(12_390, first=10_000, header=False)
    box.drop("grow.csv", data)
    wait_upload_read(env, "the upload of grow.csv")
    # Appended through its processing path, as a writer that kept the file open would.
    with open(os.path.join(box.processing, "grow.csv"), "ab") as file:
        file.write(extra)
    env.wait_outcomes(box, failed=1, timeout=HOLD_SECONDS + 20)

    [upload] = env.uploads()
    assert upload["status"] == 201
    import_id = upload["answer"]["id"]
    # Resend got exactly what was checked: the announced length, not a byte more.
    assert upload["file"]["size"] == len(data)
    assert upload["file"]["sha256"] == sha256_bytes(data)

    assert box.files("failed") == ["grow.csv"] and box.files("done") == []
    with open(os.path.join(box.failed, "grow.csv"), "rb") as file:
        assert file.read() == data + extra
    report = only_report(box, "failed")
    assert report["outcome"] == "failed", report
    assert report["bytes"] == len(data) and report["sha256"] == sha256_bytes(data)
    assert report["attempts"] == 1 and report["http_status"] == 201, report
    assert report["import_id"] == import_id
    assert report["uploaded_at"] is not None and report["import"] is None, report
    message = ("the file changed while it was being uploaded: 17,377 \u2192 29,767 bytes; "
               f"Resend made import {import_id} from what was sent")
    assert report["error"] == {"stage": "upload", "http_status": None, "name": None,
                               "message": message}, report
    time.sleep(0.5)
    assert env.polls() == [], "the import of a changed file was followed"
    assert len(env.uploads()) == 1
    assert len(daemon.log_lines(re.escape(f"'grow.csv' failed at upload: {message}"))) == 1
    assert box.processing_files() == []
    assert_no_curl_words(daemon)
    daemon.stop()


def test_a_file_shrunk_during_its_upload_fails_at_once_without_a_retry(pipe_env):
    env = pipe_env
    box = env.folder("box")
    daemon = env.start(env.config([box]))
    size = 32 << 20  # more than loopback's socket buffers hold: curl must wait for the fake
    data = csv_of_size(size)
    # The fake is stopped: the connection is accepted by the kernel and the upload sends
    # until the socket buffers are full, then waits, mid-file.
    os.kill(env.fake.pid, signal.SIGSTOP)
    try:
        box.drop("shrink.csv", data)
        env.wait_for(lambda: daemon.log_lines(r"'shrink\.csv' uploading \("),
                     "the upload of shrink.csv to start", timeout=60)
        os.truncate(os.path.join(box.processing, "shrink.csv"), 1_000)
    finally:
        os.kill(env.fake.pid, signal.SIGCONT)
    env.wait_outcomes(box, failed=1)

    report = only_report(box, "failed")
    assert report["attempts"] == 1, report
    assert report["http_status"] is None and report["import_id"] is None, report
    assert report["uploaded_at"] is None, report
    error = report["error"]
    assert error["stage"] == "upload" and error["http_status"] is None, report
    assert re.fullmatch(r"the file shrank while it was being uploaded: read [0-9,]+ of "
                        r"33,554,432 bytes", error["message"]), report
    assert box.files("failed") == ["shrink.csv"] and box.files("done") == []
    assert os.path.getsize(os.path.join(box.failed, "shrink.csv")) == 1_000
    # Not retried: one request only, which Resend never accepted.
    time.sleep(1.5)  # retries would come within 100 ms .. 1 s
    uploads = env.uploads()
    assert len(uploads) == 1, [(u["status"], u["error"]) for u in uploads]
    assert uploads[0]["status"] != 201, uploads[0]
    assert only_report(box, "failed")["attempts"] == 1
    assert not daemon.log_lines(r"'shrink\.csv' upload attempt .* failed"), daemon.log()
    assert len(daemon.log_lines(re.escape(f"'shrink.csv' failed at upload: "
                                          f"{error['message']}"))) == 1
    assert_no_curl_words(daemon)
    daemon.stop()


def test_a_file_replaced_during_its_upload_fails(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    hold_answers(env)
    daemon = env.start(env.config([box]))
    data = csv_of_size(5_000)
    other = csv_of_size(6_000, first=50_000)
    box.drop("swap.csv", data)
    wait_upload_read(env, "the upload of swap.csv")
    temporary = os.path.join(box.processing, ".swap.writing")
    with open(temporary, "wb") as file:
        file.write(other)
    os.rename(temporary, os.path.join(box.processing, "swap.csv"))
    env.wait_outcomes(box, failed=1, timeout=HOLD_SECONDS + 20)

    [upload] = env.uploads()
    assert upload["file"]["sha256"] == sha256_bytes(data)
    report = only_report(box, "failed")
    assert report["import_id"] == upload["answer"]["id"]
    assert report["sha256"] == sha256_bytes(data)
    assert report["error"]["stage"] == "upload"
    assert report["error"]["message"].startswith(
        "the file was replaced while it was being uploaded"), report
    assert upload["answer"]["id"] in report["error"]["message"]
    assert box.files("failed") == ["swap.csv"]
    daemon.stop()
