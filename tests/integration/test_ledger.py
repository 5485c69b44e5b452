"""Issue 11: the import ledger (SQLite in state_dir), duplicates and their policies, kill -9 with
duplicates in the stream, a ledger that cannot be written (read-only, full) or is not a ledger
(corrupt), the migration of an older schema, and what the ledger holds after a run.

Each test asserts where every file ends up, what the fake received and what was logged, and
undoes what it did to the filesystem (chattr, mount) even when it fails. The ledger is read
with Python's sqlite3, read-only, as an operator would."""

import contextlib
import datetime
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from daemon_harness import (fill_filesystem, is_sanitized, pipe_env, pipe_fake,  # noqa: F401
                            read_bytes, read_json, sha256_bytes, tmpfs_mounted)

LEDGER = "ledger.sqlite"
SCHEMA_LATEST = 4  # len(migrations) in src/ledger_sqlite.c
SEGMENT = "78261eea-8f8b-4381-83c6-79fa7120f1cf"
PAUSED = "no new file is taken from the inboxes until the ledger can be written again"
RESUMED = "the ledger can be written again: files are taken from the inboxes again"
UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def csv(tag, rows=2):
    lines = ["email,first_name"] + [f"{tag}{i}@example.com,{tag.title()} {i}"
                                    for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def epoch(utc):
    """A report's time (2026-12-02T03:55:49.063Z) in seconds since the epoch."""
    return datetime.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def visible(entries):
    return sorted(e for e in entries if not e.startswith("."))


def ledger_path(state_dir):
    return os.path.join(state_dir, LEDGER)


@contextlib.contextmanager
def ledger_ro(state_dir):
    """The ledger opened read-only (works while the daemon writes it: WAL)."""
    con = sqlite3.connect(f"file:{ledger_path(state_dir)}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        yield con
    finally:
        con.close()


def ledger_rows(state_dir, where="", args=()):
    with ledger_ro(state_dir) as con:
        return [dict(r) for r in con.execute(f"SELECT * FROM files {where} ORDER BY id", args)]


def user_version(state_dir):
    with ledger_ro(state_dir) as con:
        return con.execute("PRAGMA user_version").fetchone()[0]


def uploads_of(env, sha, status=201):
    return [u for u in env.uploads() if u["file"] and u["file"]["sha256"] == sha
            and (status is None or u["status"] == status)]


def reports_by_file(folder, kind):
    """{the report's "file": report} (a name used twice has its report under another name)."""
    out = {}
    for report in folder.reports(kind).values():
        out.setdefault(report["file"], []).append(report)
    return out


def assert_skipped_as_duplicate_of(report, first):
    """REPORT is a skip naming FIRST (the earlier file's report): its file, claim and import
    time, import id."""
    dup = report["duplicate_of"]
    assert dup is not None, report
    assert dup["file"] == first["file"], (dup, first["file"])
    assert dup["claimed_at"] == first["claimed_at"], (dup, first)
    assert dup["imported_at"] == first["finished_at"], (dup, first)
    assert dup["import_ids"] == [first["import_id"]], (dup, first)
    assert report["error"] is None, report
    assert report["sha256"] == first["sha256"], report


# --- 1. duplicates: skip, import, fail; what is not a duplicate ------------------------------

def test_duplicates_skip_import_fail_and_what_is_not_a_duplicate(pipe_env):
    env = pipe_env
    skip = env.folder("skip")                      # on_duplicate: skip (the default)
    imp = env.folder("imp", on_duplicate="import")
    fail = env.folder("fail", on_duplicate="fail")
    other = env.folder("other")                    # same settings, another folder
    daemon = env.start(env.config([skip, imp, fail, other]))
    a = csv("dup")

    for folder in (skip, imp, fail):
        folder.drop("first.csv", a)
    for folder in (skip, imp, fail):
        env.wait_outcomes(folder, done=1)
    firsts = {f.name: f.report("done", "first.csv") for f in (skip, imp, fail)}
    assert len(uploads_of(env, sha256_bytes(a))) == 3

    for folder in (skip, imp, fail):
        folder.drop("second.csv", a)
    env.wait_outcomes(skip, done=2)
    env.wait_outcomes(imp, done=2)
    env.wait_outcomes(fail, done=1, failed=1)

    # skip: in done, a report naming the first file, its import time and id; nothing sent.
    report = skip.report("done", "second.csv")
    assert_skipped_as_duplicate_of(report, firsts["skip"])
    assert report["import_id"] is None, report
    first_id = firsts["skip"]["import_id"]
    [line] = daemon.log_lines(r"skip: 'second\.csv' skipped")
    assert re.search(rf"skip: 'second\.csv' skipped: the same content was imported from "
                     rf"'first\.csv' at {UTC} as import {re.escape(first_id)}; nothing sent",
                     line), line
    # import: uploaded again, no duplicate_of.
    report = imp.report("done", "second.csv")
    assert report["duplicate_of"] is None and report["import_id"], report
    assert report["import_id"] != firsts["imp"]["import_id"]
    # fail: in failed at check, the message naming the earlier file; nothing sent.
    report = fail.report("failed", "second.csv")
    assert report["error"]["stage"] == "check", report
    message = report["error"]["message"]
    assert "'first.csv'" in message and firsts["fail"]["import_id"] in message and \
        "on_duplicate is fail" in message, message
    assert report["duplicate_of"]["file"] == "first.csv", report
    assert report["import_id"] is None, report
    # Exactly one more upload of A: imp's second.
    ups = uploads_of(env, sha256_bytes(a))
    assert len(ups) == 4, [(u["file"]["filename"], u["status"]) for u in ups]
    assert [u["file"]["filename"] for u in ups].count("second.csv") == 1
    assert env.polls() and all(u["status"] == 201 for u in env.uploads())

    # The same name with other content: imported.
    b = csv("other-content")
    skip.drop("first.csv", b)
    env.wait_outcomes(skip, done=3)
    [again] = [r for r in reports_by_file(skip, "done")["first.csv"] if r["sha256"] ==
               sha256_bytes(b)]
    assert again["duplicate_of"] is None and again["import_id"], again
    assert len(uploads_of(env, sha256_bytes(b))) == 1

    # The same content in another folder: imported.
    other.drop("first.csv", a)
    env.wait_outcomes(other, done=1)
    report = other.report("done", "first.csv")
    assert report["duplicate_of"] is None and report["import_id"], report
    assert len(uploads_of(env, sha256_bytes(a))) == 5
    daemon.stop()


def test_other_import_settings_are_not_duplicates_across_restart_and_sighup(pipe_env):
    env = pipe_env
    a = csv("settings")
    sha = sha256_bytes(a)
    box = env.folder("box", on_conflict="upsert")
    config = env.config([box])
    daemon = env.start(config)
    box.drop("a.csv", a)
    env.wait_outcomes(box, done=1)
    first = box.report("done", "a.csv")
    daemon.stop()

    # Another on_conflict, after a restart: imported.
    box.settings = {"on_conflict": "skip"}
    env.config([box])
    daemon = env.start(config)
    box.drop("b.csv", a)
    env.wait_outcomes(box, done=2)
    assert box.report("done", "b.csv")["duplicate_of"] is None
    ups = uploads_of(env, sha)
    assert len(ups) == 2 and ups[1]["fields"].get("on_conflict") == "skip", ups[1]["fields"]

    # Segments added, by SIGHUP: imported.
    box.settings = {"on_conflict": "skip", "segments": [SEGMENT]}
    env.config([box])
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: len(daemon.log_lines("reloaded")) >= 1, "the first reload")
    box.drop("c.csv", a)
    env.wait_outcomes(box, done=3)
    assert box.report("done", "c.csv")["duplicate_of"] is None
    assert len(uploads_of(env, sha)) == 3

    # Back to the first settings (and another settle_ms, which is no import setting), by
    # SIGHUP: a duplicate of a.csv, skipped.
    box.settings = {"on_conflict": "upsert", "settle_ms": 300}
    env.config([box])
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: len(daemon.log_lines("reloaded")) >= 2, "the second reload")
    box.drop("d.csv", a)
    env.wait_outcomes(box, done=4)
    assert_skipped_as_duplicate_of(box.report("done", "d.csv"), first)
    assert len(uploads_of(env, sha)) == 3
    daemon.stop()


def test_after_the_duplicate_window_the_same_content_is_imported_again(pipe_env):
    env = pipe_env
    window = 3
    box = env.folder("box", duplicate_window=f"{window}s")
    daemon = env.start(env.config([box]))
    a = csv("window")
    sha = sha256_bytes(a)
    box.drop("a.csv", a)
    env.wait_outcomes(box, done=1)
    first = box.report("done", "a.csv")
    box.drop("b.csv", a)  # within the window
    env.wait_outcomes(box, done=2)
    assert_skipped_as_duplicate_of(box.report("done", "b.csv"), first)
    assert len(uploads_of(env, sha)) == 1

    # The window counts from a.csv's import (finished_at); b.csv, a skip, is no import.
    a_finished = os.stat(os.path.join(box.done, "a.csv.json")).st_mtime
    time.sleep(max(0.0, a_finished + window + 0.5 - time.time()))
    box.drop("c.csv", a)
    env.wait_outcomes(box, done=3)
    third = box.report("done", "c.csv")
    assert third["duplicate_of"] is None and third["import_id"], third
    assert len(uploads_of(env, sha)) == 2
    box.drop("d.csv", a)  # within c.csv's window
    env.wait_outcomes(box, done=4)
    assert_skipped_as_duplicate_of(box.report("done", "d.csv"), third)
    assert len(uploads_of(env, sha)) == 2
    daemon.stop()


# --- 2. concurrent duplicates ------------------------------------------------------------------

def test_five_copies_dropped_at_once_are_uploaded_once(pipe_env):
    env = pipe_env
    box = env.folder("box")
    env.fake.faults([{"delay": 1.0, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 10}])
    daemon = env.start(env.config([box], api={"max_in_flight": 4}))
    a = csv("together", rows=3)
    names = [f"copy{i}.csv" for i in range(5)]
    for name in names:
        box.drop(name, a)
    env.wait_outcomes(box, done=5, timeout=40)

    [upload] = env.uploads()
    assert upload["status"] == 201
    owner = upload["file"]["filename"]
    assert owner in names
    first = box.report("done", owner)
    assert first["import_id"] == upload["answer"]["id"] and first["duplicate_of"] is None
    for name in names:
        if name != owner:
            assert_skipped_as_duplicate_of(box.report("done", name), first)
    waited = daemon.log_lines(r"waits: '%s', of the same content, is being imported"
                              % re.escape(owner))
    assert sorted({re.search(r"'([^']+)' waits", line).group(1) for line in waited}) == \
        sorted(n for n in names if n != owner), waited
    assert len(daemon.log_lines(r"skipped: the same content was imported from")) == 4
    assert box.processing_files() == []
    daemon.stop()


# --- 3. kill -9 at random moments, duplicates in the stream -----------------------------------

N_CONTENTS = 20
COPIES = 3
KILLS = 10
IN_FLIGHT = 4
AT_START = 30


def test_kill9_with_duplicates_imports_each_content_once_per_folder(pipe_env):
    env = pipe_env
    seed = int(os.environ.get("RDD_TEST_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    repeat = f"(RDD_TEST_SEED={seed} repeats the kill times)"
    print(f"kill -9 with duplicates, seed {seed}")
    one, two = env.folder("one"), env.folder("two")
    folders = {"one": one, "two": two}
    config = env.config([one, two], api={"max_in_flight": IN_FLIGHT},
                        retry={"max_attempts": 100, "initial_delay_ms": 50,
                               "max_delay_ms": 300})
    env.fake.faults([{"delay": 0.3, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 10000}])
    contents = [csv(f"crash{i:02d}-") for i in range(N_CONTENTS)]
    # Copy k of content i goes to folder (i + k) % 2: every content in both folders, twice in
    # one of them. The folder is in the name, so that an upload says where it came from.
    files = []  # (folder name, file name, content index)
    for i in range(N_CONTENTS):
        for k in range(COPIES):
            folder = ("one", "two")[(i + k) % 2]
            files.append((folder, f"{folder}-c{i:02d}-{k}.csv", i))
    rng.shuffle(files)
    pairs = {(folder, i) for folder, _, i in files}
    stream = iter(files)

    def drop(count):
        for _ in range(count):
            item = next(stream, None)
            if item:
                folders[item[0]].drop(item[1], contents[item[2]])

    daemon = env.start(config)
    drop(AT_START)
    kill_times = []
    for kill in range(KILLS):
        time.sleep(rng.uniform(0.3, 0.8))
        assert daemon.alive(), f"resend-dropd exited by itself\n{daemon.log()}"
        daemon.kill()
        kill_times.append(time.time())
        done_now = len(one.report_names("done")) + len(two.report_names("done"))
        print(f"kill {kill + 1}: {done_now} done")
        if kill == 0:
            assert done_now < len(files), repeat
        daemon.assert_sanitizer_clean()
        daemon = env.start(config)
        drop((len(files) - AT_START) // KILLS)
    drop(len(files))
    per_folder = {name: sum(1 for f, _, _ in files if f == name) for name in folders}
    for name, folder in folders.items():
        env.wait_outcomes(folder, done=per_folder[name], timeout=90)
    daemon.stop()
    for earlier in env.daemons:
        earlier.assert_sanitizer_clean()

    # Every file in exactly one place: done, unchanged, with its report.
    for name, folder in folders.items():
        mine = sorted(n for f, n, _ in files if f == name)
        assert sorted(folder.files("done")) == mine, repeat
        assert visible(folder.inbox_entries()) == [], repeat
        assert folder.processing_files() == [], repeat
        assert os.listdir(folder.failed) == [], repeat
    for folder_name, name, i in files:
        path = os.path.join(folders[folder_name].done, name)
        assert read_bytes(path) == contents[i], (name, repeat)
        report = read_json(path + ".json")
        assert report["file"] == name and report["sha256"] == sha256_bytes(contents[i]), report

    # Uploads per (folder, content), from the fake's records.
    index_of = {sha256_bytes(data): i for i, data in enumerate(contents)}
    uploads = env.uploads()
    ok = [u for u in uploads if u["status"] == 201]
    per_pair = {}
    for upload in ok:
        pair = (upload["file"]["filename"].split("-", 1)[0], index_of[upload["file"]["sha256"]])
        per_pair.setdefault(pair, []).append(upload)
    assert set(per_pair) == pairs, f"not imported: {sorted(pairs - set(per_pair))} {repeat}"

    # Reports: an import of the file's own (folder, content), or a skip naming one.
    skips = 0
    for folder_name, name, i in files:
        report = folders[folder_name].report("done", name)
        ids = {u["answer"]["id"] for u in per_pair[(folder_name, i)]}
        if report["duplicate_of"] is not None:
            skips += 1
            dup = report["duplicate_of"]
            assert report["import_id"] is None, report
            assert re.fullmatch(rf"{folder_name}-c{i:02d}-\d\.csv", dup["file"]), (name, dup)
            assert dup["file"] != name and set(dup["import_ids"]) <= ids, (name, dup, ids)
        else:
            assert report["import_id"] in ids, (name, report, repeat)

    # Repeats: each one caused by a kill while an earlier upload of the same content into the
    # same folder was in flight (from its start until shortly after its answer, before the
    # daemon could record it).
    window = 1.0 if is_sanitized(env.binary) else 0.5
    in_flight = len({u["seq"] for t in kill_times for u in uploads
                     if u["started"] <= t <= u["finished"] + window})
    unexplained = []
    for pair, ups in per_pair.items():
        for first, second in zip(ups, ups[1:]):
            if not any(first["started"] <= t <= min(first["finished"] + window,
                                                    second["started"]) for t in kill_times):
                unexplained.append(
                    f"{pair}: {first['file']['filename']} {first['started']:.3f}-"
                    f"{first['finished']:.3f}, then {second['file']['filename']} "
                    f"{second['started']:.3f}")
    # A poll of an import means the daemon had it recorded (the per-file record is down
    # before the first poll): from then on that content is never uploaded into that folder
    # again, unless a kill came right after the followed file finished (its ledger row may
    # not have been committed; that is counted, and tolerated).
    pair_of_id = {u["answer"]["id"]: pair for pair, ups in per_pair.items() for u in ups}
    owner_of_id = {}
    for folder_name, name, _ in files:
        report = folders[folder_name].report("done", name)
        if report["import_id"]:
            owner_of_id[report["import_id"]] = report
    first_poll = {}  # pair -> (time of its first poll, the import id polled)
    for poll in env.polls():
        import_id = poll["path"].rsplit("/", 1)[1]
        pair = pair_of_id.get(import_id)
        if pair and (pair not in first_poll or poll["started"] < first_poll[pair][0]):
            first_poll[pair] = (poll["started"], import_id)
    after_poll, after_finish_kill = [], []
    for pair, (polled, import_id) in first_poll.items():
        owner = owner_of_id.get(import_id)
        finished = epoch(owner["finished_at"]) if owner else None
        for u in per_pair[pair]:
            if u["started"] <= polled:
                continue
            what = f"{pair}: {u['file']['filename']} uploaded at {u['started']:.3f}, after " \
                   f"a poll at {polled:.3f} of import {import_id} of " \
                   f"{owner['file'] if owner else '?'} (finished at {finished})"
            if finished and any(finished - 0.05 <= t <= min(finished + window, u["started"])
                                for t in kill_times):
                after_finish_kill.append(what)
            else:
                after_poll.append(what)
    print(f"uploads after an import of the same content was followed: {len(after_poll)} "
          f"without a kill at the end of the followed file, {len(after_finish_kill)} with one")
    for line in after_poll + after_finish_kill:
        print("  " + line)

    # The ledger: one finished row per file, as its report says; rows left unfinished by
    # a kill (claimed, uploaded) are counted.
    rows = ledger_rows(env.state_dir)
    finished_rows, stale = {}, []
    for row in rows:
        if row["finished_at_ms"] is None:
            stale.append((row["folder"], row["file"], row["status"]))
        else:
            finished_rows.setdefault((row["folder"], row["file"]), []).append(row)
    for folder_name, name, _ in files:
        report = folders[folder_name].report("done", name)
        got = finished_rows.get((folder_name, name), [])
        assert len(got) == 1, (folder_name, name, got, repeat)
        status = "skipped" if report["duplicate_of"] else "done"
        assert got[0]["status"] == status, (name, got[0], report, repeat)
        assert got[0]["import_ids"] == report["import_id"], (name, got[0], report, repeat)
    print(f"ledger: {len(rows)} rows, {sum(map(len, finished_rows.values()))} finished, "
          f"{len(stale)} left unfinished by kills: {stale}")

    extra = len(ok) - len(pairs)
    figures = {f"c{i:02d}": (len(per_pair[("one", i)]), len(per_pair[("two", i)]))
               for i in range(N_CONTENTS)}
    print(f"duplicate figures: {len(files)} files, {N_CONTENTS} contents x {COPIES} copies in "
          f"2 folders ({len(pairs)} (folder, content) pairs); {KILLS} kills; "
          f"{len(uploads)} uploads, {len(ok)} answered 201, {extra} beyond one per pair; "
          f"{in_flight} uploads in flight at a kill; {skips} files skipped as duplicates "
          f"(without kills: {len(files) - len(pairs)})")
    print(f"uploads per content (one, two): {figures}")
    assert in_flight >= 1, f"no kill hit an upload in flight: the test tested nothing {repeat}"
    assert not unexplained, \
        f"uploaded again without a kill while an earlier upload was in flight: " \
        f"{unexplained} kills {kill_times} {repeat}"
    assert not after_poll, \
        f"uploaded again after an import of the same content was recorded and followed: " \
        f"{after_poll} {repeat}"
    assert extra <= in_flight, f"{extra} repeats, {in_flight} in flight at the kills {repeat}"
    assert set(finished_rows) == {(f, n) for f, n, _ in files}, repeat


# --- 4. ledger faults ------------------------------------------------------------------------

@contextlib.contextmanager
def immutable(paths):
    """PATHS made immutable (chattr +i) for the block, mutable again afterwards (all of them,
    whatever happened)."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and e2fsprogs")
    made = []
    try:
        for path in paths:
            done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True,
                                  timeout=10)
            if done.returncode != 0:
                pytest.skip(f"chattr +i {path}: {done.stderr.strip()}")
            made.append(path)
        yield paths
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", path], capture_output=True, timeout=10)


def pause_and_resume(env, daemon, box, undo, what):
    """The ledger cannot be written: a file dropped now is claimed, its record fails, intake
    pauses with one loud line; files dropped after it stay in the inbox, nothing is uploaded.
    UNDO() mends it: the recovery line, every file processed, each uploaded once."""
    before = len(env.uploads())
    done_before = len(box.report_names("done"))
    box.drop("trigger.csv", csv("trigger"))
    env.wait_for(lambda: daemon.log_lines(PAUSED), f"the ledger's {what} line", timeout=20)
    later = {f"later{i}.csv": csv(f"later{i}-") for i in range(3)}
    for name, data in later.items():
        box.drop(name, data)
    time.sleep(2.5)  # > settle_ms, several retries of the ledger's writes
    lines = daemon.log_lines(PAUSED)
    assert len(lines) == 1, lines
    assert visible(box.inbox_entries()) == sorted(later), \
        f"files taken while the ledger cannot be written: {box.inbox_entries()}"
    assert box.processing_files() == ["trigger.csv"], box.processing_files()
    assert len(env.uploads()) == before, "uploaded before its record (and look-up) was down"
    assert daemon.alive()
    undo()
    env.wait_outcomes(box, done=done_before + 1 + len(later), timeout=60)
    env.wait_for(lambda: daemon.log_lines(RESUMED), "the recovery line")
    assert len(daemon.log_lines(RESUMED)) == 1
    assert len(daemon.log_lines(PAUSED)) == 1
    ups = env.uploads()[before:]
    assert sorted(u["file"]["filename"] for u in ups) == sorted(["trigger.csv", *later]), \
        [(u["file"]["filename"], u["status"]) for u in ups]
    assert visible(box.inbox_entries()) == [] and box.processing_files() == []
    assert os.listdir(box.failed) == []
    return lines[0]


def test_read_only_ledger_pauses_intake_and_resumes(pipe_env):
    env = pipe_env
    box = env.folder("box")
    daemon = env.start(env.config([box]))
    box.drop("before.csv", csv("before"))
    env.wait_outcomes(box, done=1)
    ledger = ledger_path(env.state_dir)
    # The database and its WAL (where a commit writes); the -shm is shared memory (mapped),
    # not data, and is left alone.
    paths = [ledger, ledger + "-wal"]
    assert all(os.path.exists(p) for p in paths), os.listdir(env.state_dir)
    with contextlib.ExitStack() as stack:
        stack.enter_context(immutable(paths))
        line = pause_and_resume(env, daemon, box, stack.close, "read-only")
    assert ledger in line, line
    daemon.stop()
    rows = {r["file"]: r for r in ledger_rows(env.state_dir)}
    assert sorted(rows) == sorted(box.files("done")), rows.keys()
    assert {r["status"] for r in rows.values()} == {"done"}, rows


def test_full_ledger_filesystem_pauses_intake_and_resumes(pipe_env):
    env = pipe_env
    mount = os.path.join(env.root, "small-state")
    with tmpfs_mounted(mount, "4m"):
        try:
            box = env.folder("box")
            daemon = env.start(env.config([box], state_dir=mount))
            box.drop("before.csv", csv("before"))
            env.wait_outcomes(box, done=1)
            filler = fill_filesystem(mount)
            try:
                line = pause_and_resume(env, daemon, box, lambda: os.unlink(filler), "full")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(filler)
            assert "full" in line, line
            daemon.stop()
            rows = {r["file"]: r for r in ledger_rows(mount)}
            assert sorted(rows) == sorted(box.files("done")), rows.keys()
            assert {r["status"] for r in rows.values()} == {"done"}, rows
        finally:
            for daemon in env.daemons:  # before the unmount: they hold its files
                daemon.kill()


@pytest.mark.parametrize("kind", ["garbage", "sqlite-header-then-garbage"])
def test_corrupt_ledger_refuses_to_start_and_touches_nothing(pipe_env, kind):
    env = pipe_env
    box = env.folder("box")
    garbage = random.Random(11).randbytes(16384)
    if kind != "garbage":
        garbage = b"SQLite format 3\x00" + garbage[16:]
    os.makedirs(env.state_dir)
    with open(ledger_path(env.state_dir), "wb") as file:
        file.write(garbage)
    files = {"waiting.csv": csv("waiting"), "also.csv": csv("also")}
    for name, data in files.items():
        box.drop(name, data)
    daemon = env.start(env.config([box]), check_started=False)
    status = daemon.wait_exit(20)
    assert status == 2, f"exit {status}\n{daemon.log()}"
    daemon.assert_sanitizer_clean()
    lines = daemon.log_lines("not a resend-dropd ledger, or is damaged")
    assert len(lines) == 1 and ledger_path(env.state_dir) in lines[0], daemon.log()
    assert not daemon.log_lines(r"\bstarted\b"), daemon.log()
    assert visible(box.inbox_entries()) == sorted(files)
    for name, data in files.items():
        assert read_bytes(os.path.join(box.inbox, name)) == data
    assert box.processing_files() == [] and os.listdir(box.done) == []
    assert env.uploads() == []
    assert read_bytes(ledger_path(env.state_dir)) == garbage, "the damaged ledger was changed"


# --- 5. migration from schema version 1 --------------------------------------------------------

# migrations[0] of src/ledger_sqlite.c: the schema of version 1.
SCHEMA_1 = (
    "CREATE TABLE files ("
    " id INTEGER PRIMARY KEY,"
    " folder TEXT NOT NULL, file TEXT NOT NULL, claimed_at_ms INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL DEFAULT 0, sha256 TEXT NOT NULL DEFAULT '',"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " uploaded_at_ms INTEGER, finished_at_ms INTEGER,"
    " import_ids TEXT, status TEXT NOT NULL,"
    " total INTEGER, created INTEGER, updated INTEGER, skipped INTEGER, failed INTEGER,"
    " error TEXT,"
    " UNIQUE (folder, file, claimed_at_ms));"
    "CREATE INDEX files_by_content ON files (folder, sha256);"
    "CREATE INDEX files_by_finish ON files (finished_at_ms);")


def test_a_schema_1_ledger_is_migrated_and_kept(pipe_env):
    env = pipe_env
    box = env.folder("box")
    old = csv("old")
    now_ms = int(time.time() * 1000)
    os.makedirs(env.state_dir)
    con = sqlite3.connect(ledger_path(env.state_dir))
    try:
        con.executescript(SCHEMA_1)
        con.execute("INSERT INTO files (folder, file, claimed_at_ms, bytes, sha256, attempts, "
                    "uploaded_at_ms, finished_at_ms, import_ids, status, total, created, "
                    "updated, skipped, failed, error) VALUES "
                    "(?, ?, ?, ?, ?, 1, ?, ?, ?, 'done', 2, 2, 0, 0, 0, NULL)",
                    ("box", "old.csv", now_ms - 60000, len(old), sha256_bytes(old),
                     now_ms - 59000, now_ms - 58000, "old-import-id"))
        con.execute("PRAGMA user_version = 1")
        con.commit()
    finally:
        con.close()
    with ledger_ro(env.state_dir) as ro:
        old_row = dict(ro.execute("SELECT * FROM files").fetchone())

    daemon = env.start(env.config([box]))
    # The old row has no settings hash: never taken for a duplicate, so its content is
    # imported.
    box.drop("old-again.csv", old)
    box.drop("new.csv", csv("new"))
    env.wait_outcomes(box, done=2)
    assert len(env.uploads()) == 2
    assert box.report("done", "old-again.csv")["duplicate_of"] is None
    daemon.stop()

    assert user_version(env.state_dir) == SCHEMA_LATEST
    rows = ledger_rows(env.state_dir)
    [kept] = [r for r in rows if r["file"] == "old.csv"]
    for key, value in old_row.items():
        assert kept[key] == value, (key, kept, old_row)
    assert kept["settings_hash"] == "" and kept["duplicate_of"] is None, kept
    new = {r["file"]: r for r in rows if r["file"] != "old.csv"}
    assert sorted(new) == ["new.csv", "old-again.csv"], rows
    for row in new.values():
        assert row["status"] == "done" and row["import_ids"], row
        assert re.fullmatch(r"[0-9a-f]{64}", row["settings_hash"]), row


# --- 6. the ledger after a normal run ------------------------------------------------------------

def test_the_ledger_holds_one_row_per_file_with_its_outcome(pipe_env):
    env = pipe_env
    box = env.folder("box")
    other = env.folder("other", on_conflict="skip")
    daemon = env.start(env.config([box, other]))
    good = csv("good", rows=3)
    box.drop("good.csv", good)
    env.wait_outcomes(box, done=1)
    box.drop("again.csv", good)
    box.drop("nomail.csv", b"name,first_name\nx,y\n")
    env.wait_outcomes(box, done=2, failed=1)
    env.fake.faults([{"status": 422, "name": "validation_error", "message": "not this one",
                      "method": "POST", "path_prefix": "/contacts/imports", "count": 1}])
    other.drop("refused.csv", csv("refused"))
    env.wait_outcomes(other, failed=1)
    reports = {("box", "good.csv"): box.report("done", "good.csv"),
               ("box", "again.csv"): box.report("done", "again.csv"),
               ("box", "nomail.csv"): box.report("failed", "nomail.csv"),
               ("other", "refused.csv"): other.report("failed", "refused.csv")}
    # Readable while the daemon runs (WAL), once the rows are down.
    env.wait_for(lambda: len([r for r in ledger_rows(env.state_dir)
                              if r["finished_at_ms"]]) == 4, "four finished rows")
    daemon.stop()

    rows = ledger_rows(env.state_dir)
    by_key = {(r["folder"], r["file"]): r for r in rows}
    assert len(rows) == 4 and set(by_key) == set(reports), rows
    for key, row in by_key.items():
        report = reports[key]
        assert row["sha256"] == report["sha256"], (row, report)
        assert row["bytes"] == report["bytes"], (row, report)
        assert row["claimed_at_ms"] > 0 and row["finished_at_ms"] >= row["claimed_at_ms"], row
        assert re.fullmatch(r"[0-9a-f]{64}", row["settings_hash"]), row
    hashes = {by_key[k]["settings_hash"] for k in reports}
    assert len(hashes) == 2, "the two folders' import settings differ (on_conflict)"

    row = by_key[("box", "good.csv")]
    report = reports[("box", "good.csv")]
    assert row["status"] == "done" and row["import_ids"] == report["import_id"], row
    assert row["attempts"] == 1 and row["uploaded_at_ms"] >= row["claimed_at_ms"], row
    assert row["error"] is None and row["duplicate_of"] is None, row
    imp = report["import"]["counts"]
    assert (row["total"], row["created"], row["updated"], row["skipped"], row["failed"]) == \
        (imp["total"], imp["created"], imp["updated"], imp["skipped"], imp["failed"]), \
        (row, imp)
    assert row["total"] == 3, row

    row = by_key[("box", "again.csv")]
    assert row["status"] == "skipped" and row["duplicate_of"] == "good.csv", row
    assert row["import_ids"] is None and row["uploaded_at_ms"] is None, row
    assert row["error"] is None, row

    row = by_key[("box", "nomail.csv")]
    report = reports[("box", "nomail.csv")]
    assert row["status"] == "failed" and row["import_ids"] is None, row
    assert row["error"] == f"check: {report['error']['message']}", (row, report)

    row = by_key[("other", "refused.csv")]
    assert row["status"] == "failed" and row["import_ids"] is None, row
    assert row["error"].startswith("upload: ") and "not this one" in row["error"], row
    assert row["attempts"] == 1, row
