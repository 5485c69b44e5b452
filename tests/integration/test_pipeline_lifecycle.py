"""Runs and restarts: --once, --dry-run, resuming what a previous run left in processing,
SIGTERM in the middle of an upload, and a 200 MB file in little memory."""

import hashlib
import json
import os
import signal
import time

from daemon_harness import (create_import_on_fake, is_sanitized, pipe_env,  # noqa: F401
                            pipe_fake, read_bytes, sha256_bytes, state_file_name)

GOOD = b"Email,Name\nann@example.com,Ann\nbo@example.com,Bo\n"
BAD = b"email,name\nann@example.com,Ann\n"  # no "Email" column
MAP = {"email": "Email", "first_name": "Name"}
SEGMENT = "78e7a5c6-9a91-4c63-9d1f-3b9c0b5b9ab6"
TOPIC = {"id": "059ac693-2fc8-4c13-8b27-01350d638a17", "subscription": "opt_out"}


def test_once_processes_the_inboxes_and_exits_0_or_3(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    other = env.folder("other")
    config = env.config([box, other])

    # Nothing to do: exits at once.
    started = time.monotonic()
    empty = env.run_once(config, timeout=30)
    empty.assert_exit(empty.returncode, 0)
    assert time.monotonic() - started < 15
    assert env.fake.requests() == []

    box.write("one.csv", GOOD)
    box.write("two.csv", GOOD.replace(b"ann@", b"ann2@"))
    other.write("three.csv", b"email\nthree@example.com\n")
    run = env.run_once(config, timeout=60)
    run.assert_exit(run.returncode, 0)
    env.wait_outcomes(box, done=2, timeout=1)
    env.wait_outcomes(other, done=1, timeout=1)
    # Followed to the end before exiting: the reports have the import's outcome.
    for report in box.reports("done").values():
        assert report["import"]["status"] == "completed", report
    assert box.processing_files() == [] and other.processing_files() == []

    box.write("good.csv", GOOD.replace(b"ann@", b"ann3@"))
    box.write("bad.csv", BAD)
    run = env.run_once(config, timeout=60)
    run.assert_exit(run.returncode, 3)
    env.wait_outcomes(box, done=3, failed=1, timeout=1)
    assert box.report("failed", "bad.csv")["error"]["stage"] == "check"
    assert len(env.uploads()) == 4


def test_dry_run_uploads_nothing_moves_nothing_and_says_what_it_would_send(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP, on_conflict="skip", segments=[SEGMENT],
                     topics=[TOPIC])
    config = env.config([box])
    box.write("good.csv", GOOD)
    before = {name: read_bytes(os.path.join(box.inbox, name)) for name in box.inbox_entries()}

    run = env.run_once(config, "--dry-run", timeout=60)
    run.assert_exit(run.returncode, 0)
    assert env.fake.requests() == [], "a dry run sent requests"
    after = {name: read_bytes(os.path.join(box.inbox, name)) for name in box.inbox_entries()}
    assert after == before, "a dry run changed the inbox"
    assert os.listdir(box.done) == [] and os.listdir(box.failed) == []
    [line] = run.log_lines("would upload")
    assert "good.csv" in line and f"{len(GOOD)} bytes" in line
    assert sha256_bytes(GOOD) in line
    assert 'column_map={"email":"Email","first_name":"Name"}' in line, line
    assert "on_conflict=skip" in line, line
    assert f'segments=[{{"id":"{SEGMENT}"}}]' in line, line
    assert 'topics=[{"id":"%s","subscription":"opt_out"}]' % TOPIC["id"] in line, line

    # A file that would fail is said so, and the run's status says so too; still no moves.
    box.write("bad.csv", BAD)
    before = {name: read_bytes(os.path.join(box.inbox, name)) for name in box.inbox_entries()}
    run = env.run_once(config, "--dry-run", timeout=60)
    run.assert_exit(run.returncode, 3)
    assert run.log_lines(r"would fail.*bad\.csv|bad\.csv.*would fail"), run.log()
    after = {name: read_bytes(os.path.join(box.inbox, name)) for name in box.inbox_entries()}
    assert after == before
    assert os.listdir(box.done) == [] and os.listdir(box.failed) == []
    assert env.fake.requests() == []


def test_files_left_in_processing_are_resumed_and_never_uploaded_twice(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    # What a crashed run left: a claimed file with no state (not uploaded yet), and one that
    # had been uploaded (its state holds the import id that Resend gave it).
    os.mkdir(box.processing, 0o700)
    fresh = b"Email,Name\nfresh@example.com,Fresh\n"
    uploaded = b"Email,Name\nup1@example.com,Up\nup2@example.com,Up\nbad-address,Bad\n"
    with open(os.path.join(box.processing, "fresh.csv"), "wb") as file:
        file.write(fresh)
    with open(os.path.join(box.processing, "uploaded.csv"), "wb") as file:
        file.write(uploaded)
    import_id = create_import_on_fake(env.fake, uploaded, column_map=MAP)
    with open(os.path.join(box.processing, state_file_name("uploaded.csv")), "w") as file:
        json.dump({"attempts": 1, "import_id": import_id}, file)

    # The same in a folder that does not follow imports: done at once, not uploaded.
    quick = env.folder("quick", follow_import=False)
    os.mkdir(quick.processing, 0o700)
    with open(os.path.join(quick.processing, "quick.csv"), "wb") as file:
        file.write(b"email\nquick@example.com\n")
    quick_id = create_import_on_fake(env.fake, b"email\nquick@example.com\n")
    with open(os.path.join(quick.processing, state_file_name("quick.csv")), "w") as file:
        json.dump({"attempts": 2, "import_id": quick_id}, file)

    daemon = env.start(env.config([box, quick]))
    env.wait_outcomes(box, done=2)
    env.wait_outcomes(quick, done=1)
    uploads = env.uploads()
    assert [u["file"]["filename"] for u in uploads] == ["fresh.csv"], \
        "a file with an import id was uploaded again"
    report = quick.report("done", "quick.csv")
    assert report["import_id"] == quick_id and report["attempts"] == 2, report
    assert os.listdir(quick.processing) == []
    assert uploads[0]["file"]["sha256"] == sha256_bytes(fresh)
    report = box.report("done", "uploaded.csv")
    assert report["import_id"] == import_id, report
    assert report["attempts"] == 1
    assert report["import"]["status"] == "completed"
    assert report["import"]["counts"] == {"total": 3, "created": 2, "updated": 0, "skipped": 0,
                                          "failed": 1}
    assert report["sha256"] == sha256_bytes(uploaded)
    assert env.asked_about(import_id)
    report = box.report("done", "fresh.csv")
    assert report["import_id"] == uploads[0]["answer"]["id"] and report["attempts"] == 1
    # Processing is empty again, state files included.
    assert os.listdir(box.processing) == []
    daemon.stop()


def test_sigterm_during_a_slow_upload_exits_0_and_a_restart_completes_it(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    config = env.config([box], api={"shutdown_timeout_s": 1})
    env.fake.faults([{"delay": 30, "method": "POST", "path_prefix": "/contacts/imports"}])
    daemon = env.start(config)
    box.drop("slow.csv", GOOD)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, "the upload in flight")
    daemon.stop(timeout=8)
    assert daemon.stop_seconds < 5, f"took {daemon.stop_seconds:.1f} s to stop"
    assert daemon.stop_seconds >= 0.8, "did not wait shutdown_timeout_s for the upload"
    # The file stays claimed for the next start: not back in the inbox, not failed.
    assert box.processing_files() == ["slow.csv"]
    assert [e for e in box.inbox_entries() if e != ".resend-dropd"] == []
    assert box.files("done") == [] and box.files("failed") == []
    assert daemon.log_lines("aborted at shutdown"), daemon.log()

    daemon = env.start(config)
    env.wait_outcomes(box, done=1)
    completed = [u for u in env.uploads() if u["status"] == 201]
    assert len(completed) == 1 and completed[0]["file"]["sha256"] == sha256_bytes(GOOD)
    report = box.report("done", "slow.csv")
    assert report["import_id"] == completed[0]["answer"]["id"]
    assert report["attempts"] >= 1
    assert box.processing_files() == []
    daemon.stop()


BIG_BYTES = 200 * 1024 * 1024  # max_upload_bytes at its highest, and the fake's limit: inclusive
RSS_LIMIT_KB = 20 * 1024


def write_big_csv(path, size):
    """A CSV of exactly SIZE bytes of 64-byte rows, each with an address of its own (a repeated
    address would be a rejected row); its sha256."""
    digest = hashlib.sha256()
    header = b"email,note_" + b"x" * 52 + b"\n"
    assert len(header) == 64
    filler = b"y" * 39
    block_rows = 1024 * 1024 // 64
    with open(path, "wb") as file:
        file.write(header)
        digest.update(header)
        left = size - len(header)
        n = 0
        while left > 0:
            block = b"".join(b"r%010d@example.com,%s\n" % (n + i, filler)
                             for i in range(block_rows))
            assert len(block) == block_rows * 64
            piece = block[:left]
            file.write(piece)
            digest.update(piece)
            left -= len(piece)
            n += block_rows
    return digest.hexdigest()


def test_a_200_mb_file_is_streamed_in_little_memory(pipe_env):
    env = pipe_env
    # One upload (the fake would read 3 million rows if it followed them).
    box = env.folder("big", follow_import=False, max_upload_bytes=BIG_BYTES)
    daemon = env.start(env.config([box], api={"request_timeout_s": 300}))
    part = os.path.join(box.inbox, "big.csv.part")
    sha = write_big_csv(part, BIG_BYTES)
    os.rename(part, os.path.join(box.inbox, "big.csv"))
    env.wait_outcomes(box, done=1, timeout=150)
    rss_kb = daemon.peak_rss_kb()
    daemon.stop()
    [upload] = env.uploads()
    assert upload["status"] == 201, upload["answer"]
    assert upload["file"]["size"] == BIG_BYTES
    assert upload["file"]["sha256"] == sha
    # A large body is where curl would add "Expect: 100-continue" or go chunked by itself.
    assert "expect" not in upload["headers"], upload["headers"]
    assert "transfer-encoding" not in upload["headers"], upload["headers"]
    assert int(upload["headers"]["content-length"]) == upload["body_size"] > BIG_BYTES
    report = box.report("done", "big.csv")
    assert report["bytes"] == BIG_BYTES and report["sha256"] == sha
    print(f"peak RSS {rss_kb} kB")
    if not is_sanitized(env.binary):  # ASan's shadow memory and quarantine inflate RSS
        assert rss_kb < RSS_LIMIT_KB, f"peak RSS {rss_kb} kB for a 200 MB upload"


def test_sigterm_while_following_an_import_resumes_following_after_a_restart(pipe_env):
    env = pipe_env
    env.fake.configure(import_seconds=4)
    box = env.folder("box", column_map=MAP)
    config = env.config([box])
    daemon = env.start(config)
    box.drop("follow.csv", GOOD)
    env.wait_for(lambda: env.polls(), "the first look at the import")
    daemon.stop()
    assert daemon.stop_seconds < 4, f"took {daemon.stop_seconds:.1f} s to stop"
    [upload] = env.uploads()
    assert box.processing_files() == ["follow.csv"]
    assert box.files("done") == [] and box.files("failed") == []
    # The state beside it holds the import id, so that the next start only follows it.
    with open(os.path.join(box.processing, state_file_name("follow.csv"))) as file:
        assert json.load(file)["import_id"] == upload["answer"]["id"]

    daemon = env.start(config)
    env.wait_outcomes(box, done=1, timeout=30)
    assert len(env.uploads()) == 1, "uploaded again after the restart"
    report = box.report("done", "follow.csv")
    assert report["import_id"] == upload["answer"]["id"]
    assert report["import"]["status"] == "completed"
    assert report["import"]["counts"]["total"] == 2
    assert report["attempts"] == 1
    assert report["uploaded_at"] is not None
    daemon.stop()


def test_a_long_file_name_is_not_uploaded_again_after_a_restart(pipe_env):
    """Any name up to NAME_MAX (255 bytes) may be dropped. The state that stops a second
    upload after a restart must be saved for it too (a state file named after the file, plus
    a temporary suffix, would be longer than the name itself)."""
    env = pipe_env
    env.fake.configure(import_seconds=4)
    box = env.folder("box", column_map=MAP)
    config = env.config([box])
    daemon = env.start(config)
    name = "contacts-" + "x" * 242 + ".csv"
    assert len(name) == 255
    box.drop(name, GOOD)
    env.wait_for(lambda: env.polls(), "the first look at the import")
    daemon.stop()
    assert box.processing_files() == [name]
    [upload] = env.uploads()

    daemon = env.start(config)
    env.wait_outcomes(box, done=1, timeout=30)
    daemon.stop()
    warnings = len(env.daemons[0].log_lines("cannot save state"))
    assert len(env.uploads()) == 1, \
        f"a {len(name)}-byte name was uploaded again after a restart ({warnings} warnings " \
        "'cannot save state ... File name too long' in the first run's log)"
    [report] = box.reports("done").values()
    assert report["file"] == name
    assert report["import_id"] == upload["answer"]["id"]


def test_sighup_reloads_between_uploads_without_losing_or_repeating_files(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    config = env.config([box])
    # Uploads take a second at the server: the reload comes while they are in flight.
    env.fake.faults([{"delay": 1, "method": "POST", "count": 3}])
    daemon = env.start(config)
    for index in range(3):
        box.drop(f"before-{index}.csv", GOOD.replace(b"ann@", f"ann{index}@".encode()))
    # All three at the fake before the SIGHUP: the fake's `started` is when it began reading
    # a request, which can lag the daemon's sending it.
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 3, "uploads in flight")
    # A new folder, and new settings for the old one.
    extra = env.folder("extra")
    box.settings["on_conflict"] = "skip"
    env.config([box, extra])
    sighup_at = time.time()
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: daemon.log_lines("reloaded"), "the reload", timeout=20)
    box.drop("after.csv", GOOD.replace(b"ann@", b"after@"))
    extra.drop("extra.csv", b"email\nextra@example.com\n")
    env.wait_outcomes(box, done=4)
    env.wait_outcomes(extra, done=1)
    uploads = env.uploads()
    names = sorted(u["file"]["filename"] for u in uploads if u["status"] == 201)
    assert names == ["after.csv", "before-0.csv", "before-1.csv", "before-2.csv", "extra.csv"]
    assert len(uploads) == 5, [(u["file"]["filename"], u["status"]) for u in uploads]
    # Uploads started before the SIGHUP finished with the old settings; the rest (those
    # that were still queued, and the new files) went out with the new ones.
    for upload in uploads:
        expected = "upsert" if upload["started"] < sighup_at else "skip"
        if upload["file"]["filename"] == "extra.csv":
            expected = "upsert"
        assert upload["fields"]["on_conflict"] == expected, (upload["file"], upload["fields"])
    assert any(u["started"] < sighup_at for u in uploads)
    assert box.processing_files() == [] and extra.processing_files() == []
    daemon.stop()


def test_sighup_with_a_broken_configuration_keeps_the_running_one(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    config = env.config([box])
    daemon = env.start(config)
    with open(config) as file:
        good = file.read()
    with open(config, "w") as file:
        file.write(good.replace("on_conflict", "on_conflikt", 1)
                   if "on_conflict" in good else good + "\nbogus_key: 1\n")
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: daemon.log_lines("keeping the running configuration"),
                 "the refusal of the broken configuration")
    # Every error is logged with its position, and the daemon still takes files.
    assert daemon.log_lines(r"resend-dropd\.yaml:\d+:\d+: .*unknown key"), daemon.log()
    box.drop("still.csv", GOOD)
    env.wait_outcomes(box, done=1)
    assert not daemon.log_lines("reloaded")
    daemon.stop()
