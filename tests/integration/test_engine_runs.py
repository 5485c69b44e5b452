"""The rewritten engine (issue 7) while it runs: --once waits on events instead of polling,
and a reload while many files are being checked gives each file to exactly one pipeline."""

import os
import re
import signal
import time

from daemon_harness import (is_sanitized, pipe_env, pipe_fake,  # noqa: F401
                            proc_cpu_seconds, tail, write_sparse)

GOOD = b"email,first_name\nann@example.com,Ann\nbo@example.com,Bo\n"


def test_once_waits_for_a_slow_import_without_burning_cpu(pipe_env):
    """--once with an import that takes 5 s at the server: the run lasts that long, but a
    process that waits on events uses next to no CPU (a busy loop would burn ~5 s of it)."""
    env = pipe_env
    env.fake.configure(import_seconds=5)
    box = env.folder("box")  # follow_import: true (the default)
    config = env.config([box])
    box.drop("slow-import.csv", GOOD)

    started = time.monotonic()
    daemon = env.start(config, "--once", check_started=False)
    samples = []  # CPU seconds while the process runs (not yet a zombie)
    deadline = started + 60
    while time.monotonic() < deadline:
        sample = proc_cpu_seconds(daemon.pid)
        if sample is None or sample[1] == "Z":
            break
        samples.append(sample[0])
        time.sleep(0.1)
    status = daemon.wait_exit(30)
    elapsed = time.monotonic() - started
    daemon.assert_exit(status, 0)

    limit = 1.5 if is_sanitized(env.binary) else 0.5
    assert samples, "no CPU sample of the daemon was taken"
    print(f"--once took {elapsed:.1f} s; CPU {samples[-1]:.2f} s "
          f"({len(samples)} samples; limit {limit} s)")
    assert elapsed >= 4, \
        f"--once exited after {elapsed:.1f} s: it did not wait for the 5 s import\n" \
        f"{tail(daemon.log())}"
    assert samples[-1] < limit, \
        f"--once used {samples[-1]:.2f} s of CPU in {elapsed:.1f} s while waiting for an " \
        f"import (limit {limit} s): a busy wait?\nsamples: {samples}\n{tail(daemon.log())}"
    env.wait_outcomes(box, done=1, timeout=1)
    report = box.report("done", "slow-import.csv")
    assert report["import"]["status"] == "completed", report
    assert len(env.uploads()) == 1
    assert box.processing_files() == []


N_CHECKED = 50
SPARSE_BYTES = 100 * 1024 * 1024
NO_EMAIL = b"name\nx\n"  # no `email` column: every file fails at its check, after hashing


def test_sighup_while_50_files_are_being_checked_gives_each_file_to_one_pipeline(pipe_env):
    """50 sparse 100 MB files (hashing takes a while; each then fails its header check, so
    nothing is uploaded). A SIGHUP in the middle drains the old pipeline, whose checks in
    progress are given up, and the new one resumes what is left in processing: every file
    must end in failed/ exactly once, with one report, and never be handled twice."""
    env = pipe_env
    box = env.folder("box")
    defaults = {"max_file_bytes": 4 * SPARSE_BYTES}
    config = env.config([box], defaults=defaults)
    names = [f"big-{index:02d}.csv" for index in range(N_CHECKED)]
    staging = os.path.join(env.root, "staging")
    os.mkdir(staging)
    for name in names:
        write_sparse(os.path.join(staging, name), NO_EMAIL, SPARSE_BYTES)

    daemon = env.start(config)
    for name in names:
        os.rename(os.path.join(staging, name), os.path.join(box.inbox, name))

    def in_progress():
        claimed = len(box.processing_files())
        failed = len(box.report_names("failed"))
        # Some checked already, many still to check or being checked.
        return claimed >= 10 and 3 <= failed <= N_CHECKED - 20 and (claimed, failed)

    env.wait_for(in_progress, lambda: "files being checked (processing holds "
                 f"{len(box.processing_files())}, failed {len(box.report_names('failed'))})",
                 timeout=60, interval=0.02)
    # A slightly changed, valid configuration: the reload is real, the outcome the same.
    env.config([box], defaults=defaults, log={"level": "info"})
    claimed_before = box.processing_files()
    failed_before = len(box.report_names("failed"))
    daemon.process.send_signal(signal.SIGHUP)
    print(f"SIGHUP with {len(claimed_before)} files in processing, {failed_before} failed")
    assert len(claimed_before) >= 10 and failed_before < N_CHECKED, "the SIGHUP came too late"

    env.wait_for(lambda: daemon.log_lines("reloaded"), "the reload", timeout=60)
    env.wait_outcomes(box, failed=N_CHECKED, timeout=120)
    log = daemon.log()
    # The reload really came while checks were running: the log of the first pipeline
    # ends before every file had failed.
    head = log[:log.index("reloaded")]
    failed_in_old = len(re.findall(r"moved to .*failed", head))
    print(f"{failed_in_old} files failed before the reload, "
          f"{len(daemon.log_lines('resuming'))} resumed after it")
    assert failed_in_old < N_CHECKED, "every file was finished before the reload"
    assert daemon.log_lines("resuming"), "the new pipeline resumed nothing from processing"

    expected = set(names) | {name + ".json" for name in names}
    entries = set(os.listdir(box.failed))
    assert entries == expected, \
        f"failed/ holds more or less than one file and one report per file:\n" \
        f"extra {sorted(entries - expected)}\nmissing {sorted(expected - entries)}"
    assert os.listdir(box.done) == []
    assert [e for e in box.inbox_entries() if e != ".resend-dropd"] == []
    assert box.processing_files() == []
    leftovers = os.listdir(box.processing)
    assert leftovers == [], f"left in processing: {leftovers}"
    for name in names:
        report = box.report("failed", name)
        assert report["error"]["stage"] == "check", report
        assert report["bytes"] == SPARSE_BYTES, report
        assert os.path.getsize(os.path.join(box.failed, name)) == SPARSE_BYTES
    bad = daemon.log_lines(r"could not be moved|stays in")
    assert not bad, "\n".join(bad)
    assert env.uploads() == []
    daemon.stop(timeout=60)
