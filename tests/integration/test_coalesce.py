"""Issue 18: spending Resend's rate limit well. Files of one folder that wait for the rate budget
or an upload slot go out together as one import (a batch: one header, then each file's rows in
queue order), within coalesce_max_files, coalesce_max_rows and max_upload_bytes, never mixing
headers nor repeating an email; a lone file goes at once, alone. A refused batch or an import
that failed is sent again file by file. Imports are followed in bulk (GET /contacts/imports?limit=100),
an import the list does not show by its id. A kill -9 during a batch loses and repeats nothing.

How files are made to wait, deterministically: one upload slot (api.max_in_flight 1) and one
request a second (api.requests_per_second 1); the first file is dropped alone and the fake
holds its upload (a `delay` fault) while the others are dropped, so they are claimed, checked
and waiting in the queue when the slot frees. What each upload carried is read from the file
the fake kept of it (`/_fake/requests`: file.path)."""

import json
import os
import re
import subprocess
import time

import pytest

from daemon_harness import (create_import_on_fake, daemon_environment,  # noqa: F401
                            pipe_env, pipe_fake, read_bytes, sha256_bytes, state_file_name)

HEADER = "email,first_name"
HELD = 3.0            # seconds the fake holds the first upload while the others are dropped
WAIT = {"max_in_flight": 1, "requests_per_second": 1}
TIMEOUT = 90
BATCH_ID = re.compile(r"[0-9a-f]{16}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(autouse=True)
def coalescing_by_default(pipe_env):
    """The daemon's own default (coalesce: auto) for every folder of these tests (the harness's
    other suites turn it off: daemon_harness.Harness.DEFAULTS)."""
    pipe_env.DEFAULTS = pipe_env.DEFAULTS_COALESCED


# --- helpers --------------------------------------------------------------------------------

def rows(tag, count=2, name=None):
    return [f"{tag}-{i}@example.com,{name or tag.title()} {i}" for i in range(count)]


def csv_bytes(lines, header=HEADER):
    return ("\n".join([header, *lines]) + "\n").encode()


def contents(count, per_file=2, prefix="f"):
    """[(name, bytes, data rows)] of COUNT files with distinct emails, in drop order."""
    out = []
    for index in range(count):
        name = f"{prefix}{index:02d}.csv"
        lines = rows(f"{prefix}{index:02d}", per_file)
        out.append((name, csv_bytes(lines), lines))
    return out


def hold_first_upload(env, seconds=HELD, more=()):
    """The fake holds the first upload for SECONDS; MORE faults are queued after it."""
    env.fake.faults([{"delay": seconds, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}, *more])


def drop_while_first_is_held(env, box, files, gap=0.1):
    """Drops FILES[0] alone, waits until the fake holds its upload, then drops the others
    GAP seconds apart (so that their queue order is their drop order), and checks that they
    were all claimed while the first upload was still held: they then wait for the slot."""
    name, data = files[0][:2]
    box.drop(name, data)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1,
                 f"the upload of {name} held by the fake")
    held_since = time.monotonic()
    for name, data in (f[:2] for f in files[1:]):
        box.drop(name, data)
        time.sleep(gap)
    env.wait_for(lambda: len(box.processing_files()) >= len(files) or
                 len(env.uploads()) > 0,
                 "the files dropped behind the first to be claimed")
    assert not env.uploads(), \
        f"setup: the first upload was answered (after {time.monotonic() - held_since:.1f} s) " \
        f"before the other files were claimed; the fake's hold ({HELD} s) is too short here"


def uploaded_lines(upload):
    """The data lines of the CSV an upload carried (its file as the fake kept it)."""
    text = read_bytes(upload["file"]["path"]).decode("utf-8")
    return [line for line in text.splitlines() if line != ""]


def ok_uploads(env):
    return [u for u in env.uploads() if u["status"] == 201]


def carried_files(upload, owner):
    """The names of the files whose rows UPLOAD carried, in the order their rows come
    (OWNER: email -> file name)."""
    names = []
    for line in uploaded_lines(upload)[1:]:
        name = owner.get(line.split(",", 1)[0])
        if name is not None and (not names or names[-1] != name):
            names.append(name)
    return names


def owners(files):
    return {line.split(",", 1)[0]: name for name, _data, lines in files for line in lines}


def reports_by_import(reports):
    out = {}
    for report in reports.values():
        out.setdefault(report["import_id"], []).append(report)
    return out


def batch_of(report):
    return report.get("batch")


def check_batches(env, box, files):
    """Every import that coalesced files: the CSV it carried is one header, then each member's
    rows (as checked on its own) in the batch's order, which is the files' queue (drop) order;
    every member's report names the import and the same batch. Returns {import id: [file
    names in batch order]} for every 201 upload."""
    reports = box.reports("done")
    by_name = {r["file"]: r for r in reports.values()}
    order = [f[0] for f in files]
    rows_of = {name: lines for name, _data, lines in files}
    by_import = reports_by_import(reports)
    seen = {}
    for upload in ok_uploads(env):
        import_id = upload["answer"]["id"]
        members = by_import.get(import_id, [])
        if not members:
            continue  # an import no file kept (a batch refused later, say): checked elsewhere
        lines = uploaded_lines(upload)
        assert lines[0] == HEADER, (import_id, lines[:2])
        assert lines.count(HEADER) == 1, \
            f"import {import_id}: the header appears {lines.count(HEADER)} times in its CSV"
        if len(members) == 1:
            [report] = members
            assert batch_of(report) is None, f"a file imported alone has a batch: {report}"
            names = [report["file"]]
        else:
            batches = [batch_of(r) for r in members]
            assert all(b is not None for b in batches), \
                f"import {import_id} holds {len(members)} files but not every report has a " \
                f"batch: {[(r['file'], batch_of(r)) for r in members]}"
            first = batches[0]
            assert BATCH_ID.fullmatch(first["id"]), first
            names = first["files"]
            assert sorted(names) == sorted(r["file"] for r in members), (names, members)
            assert names == sorted(names, key=order.index), \
                f"batch {first['id']} is not in queue order: {names}"
            for b in batches:
                assert b["id"] == first["id"] and b["files"] == names, (first, b)
                assert b["rows"] == len(lines) - 1, (b, len(lines) - 1)
                assert isinstance(b["counts"], str) and b["counts"], b
        expected = [line for name in names for line in rows_of[name]]
        assert lines[1:] == expected, \
            f"import {import_id} ({names}) carried\n{lines[1:]}\nexpected\n{expected}"
        for name in names:
            assert by_name[name]["csv"]["rows_uploaded"] == len(rows_of[name]), by_name[name]
        seen[import_id] = names
    batch_ids = [batch_of(r)["id"] for r in reports.values() if batch_of(r)]
    assert len(set(batch_ids)) == len([n for n in seen.values() if len(n) > 1]), batch_ids
    return seen


def assert_done_once(box, names):
    """Every file in done/ exactly once, with its report, and nothing else left anywhere."""
    visible = sorted(e for e in os.listdir(box.done)
                     if not e.startswith(".") and not e.endswith(".rejects.csv"))
    assert visible == sorted([*names, *(n + ".json" for n in names)]), visible
    assert box.failed and os.listdir(box.failed) == [], os.listdir(box.failed)
    assert box.processing_files() == []
    assert [e for e in box.inbox_entries() if e != ".resend-dropd"] == []


def list_gets(env):
    """The daemon's reads of GET /contacts/imports (the list), in arrival order."""
    return [r for r in env.fake.requests()
            if r["method"] == "GET" and r["path"].rstrip("/") == "/contacts/imports"
            and r["headers"].get("user-agent", "").startswith("resend-dropd/")]


def history_json(env, config):
    done = subprocess.run([env.binary, "-c", config, "history", "--json"], capture_output=True,
                          text=True, timeout=60, env=daemon_environment())
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


# --- 1. joining -------------------------------------------------------------------------------

def test_waiting_files_share_one_import(pipe_env):
    """Ten files, nine of which wait behind the first: far fewer uploads than files; each
    batch's CSV is one header and its members' rows in queue order (a member's invalid row
    left out by its own check, into its own rejects file); every report names its import and
    batch, with the import's counts; the fake's contacts hold every email."""
    env = pipe_env
    box = env.folder("box")  # coalesce: auto (the default), follow_import: true
    files = contents(10)
    # f04 has an invalid row: checked on its own, it is dropped into f04's rejects file.
    name, _data, lines = files[4]
    files[4] = (name, csv_bytes(lines[:1] + ["not-an-email,Nobody"] + lines[1:]), lines)
    hold_first_upload(env)
    daemon = env.start(env.config([box], api=WAIT))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=10, timeout=TIMEOUT)
    daemon.stop()

    uploads = ok_uploads(env)
    assert len(uploads) <= 3, \
        f"{len(uploads)} imports for 10 files of which 9 waited: " \
        f"{[carried_files(u, owners(files)) for u in uploads]}"
    assert len(env.uploads()) == len(uploads), "an upload was refused"
    seen = check_batches(env, box, files)
    # The first went alone, at once: only its rows.
    assert seen[uploads[0]["answer"]["id"]] == ["f00.csv"], seen
    assert max(len(names) for names in seen.values()) >= 2, seen
    assert sorted(n for names in seen.values() for n in names) == [f[0] for f in files]

    reports = {r["file"]: r for r in box.reports("done").values()}
    for name, report in reports.items():
        assert UUID.fullmatch(report["import_id"] or ""), report
        assert report["attempts"] == 1, report
        assert report["import"]["status"] == "completed", report
        assert report["error"] is None, report
        batch = batch_of(report)
        # The import's counts are the whole batch's.
        whole = batch["rows"] if batch else report["csv"]["rows_uploaded"]
        assert report["import"]["counts"]["total"] == whole, report
    f04 = reports["f04.csv"]
    assert f04["csv"]["rows_rejected"] == 1 and f04["csv"]["rows_uploaded"] == 2, f04["csv"]
    assert f04["csv"]["rejects_file"], f04["csv"]
    assert os.path.exists(os.path.join(box.done, f04["csv"]["rejects_file"])) or \
        os.path.exists(f04["csv"]["rejects_file"]), f04["csv"]
    assert all(r["csv"]["rows_rejected"] == 0 for n, r in reports.items() if n != "f04.csv")

    contacts = env.fake.contacts()
    for _name, _data, lines in files:
        for line in lines:
            email, first = line.split(",")
            assert contacts[email]["first_name"] == first, (email, contacts.get(email))
    assert "not-an-email" not in contacts
    assert_done_once(box, [f[0] for f in files])


def test_coalesce_off_sends_one_import_per_file(pipe_env):
    """coalesce: off in defaults: six files, five of them waiting, six imports."""
    env = pipe_env
    box = env.folder("box")
    files = contents(6)
    hold_first_upload(env)
    daemon = env.start(env.config([box], api=WAIT, defaults={"coalesce": "off"}))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=6, timeout=TIMEOUT)
    daemon.stop()

    uploads = ok_uploads(env)
    assert len(uploads) == 6, [carried_files(u, owners(files)) for u in uploads]
    by_sha = {sha256_bytes(data): name for name, data, _lines in files}
    # Each upload is one file, untouched.
    assert sorted(by_sha[u["file"]["sha256"]] for u in uploads) == sorted(by_sha.values())
    for report in box.reports("done").values():
        assert batch_of(report) is None, report
    assert len({r["import_id"] for r in box.reports("done").values()}) == 6


def test_a_lone_file_goes_alone(pipe_env):
    """Nothing waits: the file is uploaded by itself, untouched, with no batch; a second file
    dropped after the first is done goes alone too."""
    env = pipe_env
    box = env.folder("box")
    daemon = env.start(env.config([box], api=WAIT))
    first, second = csv_bytes(rows("lone", 3)), csv_bytes(rows("later", 2))
    box.drop("lone.csv", first)
    env.wait_outcomes(box, done=1, timeout=TIMEOUT)
    box.drop("later.csv", second)
    env.wait_outcomes(box, done=2, timeout=TIMEOUT)
    daemon.stop()

    uploads = ok_uploads(env)
    assert [u["file"]["sha256"] for u in uploads] == [sha256_bytes(first), sha256_bytes(second)]
    assert uploaded_lines(uploads[0]) == [HEADER, *rows("lone", 3)]
    for name in ("lone.csv", "later.csv"):
        report = box.report("done", name)
        assert batch_of(report) is None and report["attempts"] == 1, report


# --- 2. caps -----------------------------------------------------------------------------------

def test_coalesce_max_files_caps_a_batch(pipe_env):
    env = pipe_env
    box = env.folder("box", coalesce_max_files=3, follow_import=False)
    files = contents(10)
    hold_first_upload(env)
    daemon = env.start(env.config([box], api=WAIT))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=10, timeout=TIMEOUT)
    daemon.stop()

    seen = check_batches(env, box, files)
    sizes = [len(names) for names in seen.values()]
    assert max(sizes) == 3, f"batches of {sizes} files with coalesce_max_files: 3"
    # 1 alone, then the nine waiting in threes (at most one more for a late arrival).
    assert len(sizes) <= 5, sizes
    for report in box.reports("done").values():
        assert batch_of(report) is None or len(batch_of(report)["files"]) <= 3, report


def test_coalesce_max_rows_and_max_upload_bytes_cap_a_batch(pipe_env):
    """Files of 2 rows with coalesce_max_rows 5: at most two files (4 rows) an import; a file
    of 7 rows (above the cap) goes alone. In another folder, max_upload_bytes fits about
    three files: no upload is bigger."""
    env = pipe_env
    by_rows = env.folder("rows", coalesce_max_rows=5, follow_import=False)
    files = contents(8)
    big = ("big.csv", csv_bytes(rows("big", 7)), rows("big", 7))
    files.insert(4, big)
    hold_first_upload(env)
    daemon = env.start(env.config([by_rows], api=WAIT))
    drop_while_first_is_held(env, by_rows, files)
    env.wait_outcomes(by_rows, done=len(files), timeout=TIMEOUT)
    daemon.stop()
    seen = check_batches(env, by_rows, files)
    for import_id, names in seen.items():
        n_rows = sum(len(f[2]) for f in files if f[0] in names)
        assert n_rows <= 5 or names == ["big.csv"], (import_id, names, n_rows)
    assert max(len(names) for names in seen.values()) == 2, seen
    assert ["big.csv"] in seen.values(), seen

    # max_upload_bytes (at least 64 KiB): files of ~21 kB, three of which fit in one upload.
    env.fake.reset()
    cap = 65536
    by_bytes = env.folder("bytes", max_upload_bytes=cap, follow_import=False)
    files = []
    for index in range(8):
        lines = rows(f"b{index:02d}", 300, name="B" * 48)
        files.append((f"b{index:02d}.csv", csv_bytes(lines), lines))
    assert all(cap // 4 < len(data) < cap // 3 for _n, data, _l in files)
    hold_first_upload(env)
    daemon = env.start(env.config([by_bytes], api=WAIT))
    drop_while_first_is_held(env, by_bytes, files)
    env.wait_outcomes(by_bytes, done=len(files), timeout=TIMEOUT)
    daemon.stop()
    seen = check_batches(env, by_bytes, files)
    for upload in ok_uploads(env):
        assert upload["file"]["size"] <= cap, (upload["file"], seen)
    assert max(len(names) for names in seen.values()) == 3, seen


# --- 3. what may share an import -----------------------------------------------------------

def test_files_with_other_headers_never_share_an_import(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    files = []
    for index in range(9):
        header = "email,first_name" if index % 2 == 0 else "email,last_name"
        lines = rows(f"h{index}", 2)
        files.append((f"h{index}.csv", csv_bytes(lines, header), lines, header))
    # h4: the same header once normalized (a BOM, CRLF line ends): it may join h2.
    name, data, lines, header = files[4]
    files[4] = (name, b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"), lines, header)
    hold_first_upload(env)
    daemon = env.start(env.config([box], api=WAIT))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=9, timeout=TIMEOUT)
    daemon.stop()

    header_of = {f[0]: f[3] for f in files}
    owner = owners([f[:3] for f in files])
    uploads = ok_uploads(env)
    sizes = []
    for upload in uploads:
        lines = uploaded_lines(upload)
        names = carried_files(upload, owner)
        assert {header_of[n] for n in names} == {lines[0]}, \
            f"one import carried files with headers {[header_of[n] for n in names]}"
        assert lines.count(lines[0]) == 1, lines
        expected = [line for n in names for line in dict((f[0], f[2]) for f in files)[n]]
        assert lines[1:] == expected, (names, lines)
        sizes.append(len(names))
    assert max(sizes) >= 2, f"nothing was coalesced: {sizes}"
    assert len(uploads) < 9, sizes
    for report in box.reports("done").values():
        batch = batch_of(report)
        if batch:
            assert len({header_of[n] for n in batch["files"]}) == 1, batch
    # Queue h1..h8: h1 leads and takes h3, h5, h7, passing over the others; h2 leads the
    # next and takes h4 (normalized), h6, h8.
    reports = {r["file"]: r for r in box.reports("done").values()}
    assert reports["h4.csv"]["import_id"] == reports["h2.csv"]["import_id"], \
        (reports["h2.csv"], reports["h4.csv"])
    assert reports["h3.csv"]["import_id"] == reports["h1.csv"]["import_id"]


def test_a_repeated_email_starts_the_next_import_and_later_rows_win(pipe_env):
    """r03 repeats r01's first email with another name: they never share an import, r03
    goes in a later import than r01, and the contact ends with r03's value (upsert)."""
    env = pipe_env
    box = env.folder("box")
    files = contents(6, prefix="r")
    shared = files[1][2][0].split(",")[0]
    lines = [f"{shared},Later Value", *rows("r03", 1)]
    files[3] = ("r03.csv", csv_bytes(lines), lines)
    hold_first_upload(env)
    daemon = env.start(env.config([box], api=WAIT))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=6, timeout=TIMEOUT)
    daemon.stop()

    reports = {r["file"]: r for r in box.reports("done").values()}
    first_id, later_id = reports["r01.csv"]["import_id"], reports["r03.csv"]["import_id"]
    assert first_id != later_id, (reports["r01.csv"], reports["r03.csv"])
    order = [u["answer"]["id"] for u in ok_uploads(env)]
    assert order.index(first_id) < order.index(later_id), order
    assert env.fake.contacts()[shared]["first_name"] == "Later Value"
    for upload in ok_uploads(env):  # no import carries an email twice
        emails = [line.split(",")[0] for line in uploaded_lines(upload)[1:]]
        assert len(emails) == len(set(emails)), emails
    seen = check_batches(env, box, files)
    assert max(len(names) for names in seen.values()) >= 2, seen


# --- 4. failures inside a batch ----------------------------------------------------------------

def assert_each_alone_after(env, box, files, refused_upload):
    """Every file whose rows REFUSED_UPLOAD carried was then imported alone: an upload of
    only its rows, whose import its report names."""
    owner = owners(files)
    members = carried_files(refused_upload, owner)
    assert len(members) >= 2, f"the refused upload was not a batch: {members}"
    later = [u for u in ok_uploads(env) if u["seq"] > refused_upload["seq"]]
    rows_of = {f[0]: f[2] for f in files}
    for name in members:
        alone = [u for u in later if uploaded_lines(u) == [HEADER, *rows_of[name]]]
        assert len(alone) == 1, \
            f"{name} of the refused batch {members}: {len(alone)} uploads of it alone " \
            f"after; later uploads carried {[carried_files(u, owner) for u in later]}"
        report = box.report("done", name)
        assert report["import_id"] == alone[0]["answer"]["id"], report
        assert batch_of(report) is None, report
        assert report["import"] is None or report["import"]["status"] == "completed", report
    return members


def test_a_refused_batch_is_sent_again_file_by_file(pipe_env):
    """The batch's upload is refused with a 422 (one member's fault, as far as the daemon can
    tell): each of its files is then uploaded alone, and all end done."""
    env = pipe_env
    box = env.folder("box")
    files = contents(6)
    hold_first_upload(env, more=[{"status": 422, "method": "POST",
                                  "path_prefix": "/contacts/imports", "count": 1}])
    daemon = env.start(env.config([box], api=WAIT))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=6, timeout=TIMEOUT)
    daemon.stop()

    [refused] = [u for u in env.uploads() if u["status"] == 422]
    members = assert_each_alone_after(env, box, files, refused)
    assert len(members) == 5, members
    assert not box.reports("failed")


def test_a_failed_import_of_a_batch_is_sent_again_file_by_file(pipe_env):
    """The fake's fail_imports makes every import created while it is on end `failed`. It is
    on while the fake holds the batch's upload (the fake creates the import at the end of
    the hold), and off again once the fake has recorded it: the next upload waits for the
    failed import to be followed."""
    env = pipe_env
    box = env.folder("box")
    files = contents(6)
    hold_first_upload(env, more=[{"delay": 2, "method": "POST",
                                  "path_prefix": "/contacts/imports", "count": 1}])
    daemon = env.start(env.config([box], api=WAIT))
    drop_while_first_is_held(env, box, files)
    env.wait_for(lambda: len(env.uploads()) >= 1, "the first upload's answer")
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1,
                 "the second upload held by the fake")
    env.fake.configure(fail_imports=True)
    env.wait_for(lambda: len(env.uploads()) >= 2, "the second upload's record")
    env.fake.configure(fail_imports=False)
    uploads = env.uploads()
    assert len(uploads) == 2, "setup: a third upload came before fail_imports was off"
    batch_upload = uploads[1]
    env.wait_outcomes(box, done=6, timeout=TIMEOUT)
    daemon.stop()

    failed_id = batch_upload["answer"]["id"]
    assert env.fake.api("GET", f"/contacts/imports/{failed_id}").json()["status"] == "failed"
    members = assert_each_alone_after(env, box, files, batch_upload)
    assert len(members) == 5, members
    for name in members:
        assert box.report("done", name)["import"]["status"] == "completed"


def test_a_429_on_a_batch_costs_no_attempt(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    files = contents(6)
    hold_first_upload(env, more=[{"status": 429, "name": "rate_limit_exceeded",
                                  "retry_after": 1, "method": "POST",
                                  "path_prefix": "/contacts/imports", "count": 2}])
    # Two attempts at most: were a 429 an attempt, the batch's files would fail.
    daemon = env.start(env.config([box], api=WAIT, retry={"max_attempts": 2}))
    drop_while_first_is_held(env, box, files)
    env.wait_outcomes(box, done=6, timeout=TIMEOUT)
    daemon.stop()

    refused = [u for u in env.uploads() if u["status"] == 429]
    assert len(refused) == 2
    assert len(carried_files(refused[0], owners(files))) >= 2, "setup: the 429 hit no batch"
    reports = box.reports("done").values()
    assert all(r["attempts"] == 1 for r in reports), [(r["file"], r["attempts"]) for r in reports]
    seen = check_batches(env, box, files)
    assert max(len(names) for names in seen.values()) >= 2, seen


# --- 5. what is recorded -----------------------------------------------------------------------

def test_coalesced_files_have_their_own_reports_and_ledger_rows(pipe_env):
    """Each coalesced file: its own report (its rows, the shared import, the batch) and its own
    history row naming the shared import. A copy of an imported file waiting with them is a
    duplicate, decided on its own: skipped, not in the batch."""
    env = pipe_env
    box = env.folder("box")
    files = contents(5)
    copy = ("copy.csv", files[0][1], files[0][2])
    hold_first_upload(env)
    config = env.config([box], api=WAIT)
    daemon = env.start(config)
    drop_while_first_is_held(env, box, [*files, copy])
    env.wait_outcomes(box, done=6, timeout=TIMEOUT)
    daemon.stop()

    reports = {r["file"]: r for r in box.reports("done").values()}
    dup = reports.pop("copy.csv")
    assert dup["duplicate_of"] and dup["duplicate_of"]["file"] == "f00.csv", dup
    assert dup["import_id"] is None and batch_of(dup) is None, dup
    seen = check_batches(env, box, files)
    batched = [names for names in seen.values() if len(names) >= 2]
    assert batched, seen
    names = batched[0]
    [import_id] = [i for i, n in seen.items() if n == names]
    for name in names:
        report = reports[name]
        assert report["import_id"] == import_id, report
        assert report["csv"]["rows_uploaded"] == 2, report
        assert report["batch"]["files"] == names, report
        assert report["batch"]["rows"] == 2 * len(names), report
        assert report["sha256"] == sha256_bytes(dict((f[0], f[1]) for f in files)[name])

    entries = history_json(env, config)
    rows_for = {}
    for entry in entries:
        rows_for.setdefault(entry["file"], []).append(entry)
    assert sorted(rows_for) == sorted([*(f[0] for f in files), "copy.csv"]), sorted(rows_for)
    for name in names:
        [entry] = rows_for[name]
        assert entry["folder"] == "box" and entry["import_ids"] == [import_id], entry
        assert entry["sha256"] == reports[name]["sha256"], entry
    # The table lists each of them with the import too.
    done = subprocess.run([env.binary, "-c", config, "history"], capture_output=True, text=True,
                          timeout=60, env=daemon_environment())
    assert done.returncode == 0, done.stderr
    for name in names:
        [line] = [x for x in done.stdout.splitlines() if f" {name} " in x]
        assert import_id[:8] in line, line


# --- 6. following in bulk -------------------------------------------------------------------

def test_imports_are_followed_through_the_list(pipe_env):
    """Eight imports followed at once (coalesce off, slow imports): the daemon reads
    GET /contacts/imports?limit=100 rather than one GET per import."""
    env = pipe_env
    env.fake.configure(import_seconds=3)
    box = env.folder("box", coalesce="off")
    files = contents(8)
    daemon = env.start(env.config([box], api={"max_in_flight": 4, "requests_per_second": 5}))
    for name, data, _lines in files:
        box.drop(name, data)
    env.wait_outcomes(box, done=8, timeout=TIMEOUT)
    daemon.stop()

    ids = {u["answer"]["id"] for u in ok_uploads(env)}
    assert len(ids) == 8
    listed = list_gets(env)
    assert listed, "the imports were never read through GET /contacts/imports"
    assert all(r["query"].get("limit") == "100" for r in listed), [r["query"] for r in listed]
    by_id = [p for p in env.polls() if p["path"].rsplit("/", 1)[1] in ids]
    assert len(by_id) < len(ids), \
        f"{len(by_id)} GETs by id for {len(ids)} imports followed together " \
        f"(and {len(listed)} list reads)"
    for report in box.reports("done").values():
        assert report["import"]["status"] == "completed", report
        assert report["import"]["counts"]["total"] == 2, report


def follow_buried(env, newer):
    """Three files (coalesce off: three imports) followed; once they are uploaded, NEWER
    imports are made on the fake directly, so that the list's first pages show only those.
    Returns (the three import ids, when their burial began)."""
    env.fake.configure(import_seconds=10)
    box = env.folder("box", coalesce="off")
    files = contents(3)
    daemon = env.start(env.config([box], api={"max_in_flight": 4, "requests_per_second": 5}))
    for name, data, _lines in files:
        box.drop(name, data)
    env.wait_for(lambda: len(ok_uploads(env)) == 3, "the three uploads")
    ids = {u["answer"]["id"] for u in ok_uploads(env)}
    buried = time.time()
    for index in range(newer):
        create_import_on_fake(env.fake, f"email\nnewer{index}@example.com\n")
    print(f"{newer} imports made in {time.time() - buried:.1f} s")
    env.wait_outcomes(box, done=3, timeout=TIMEOUT)
    daemon.stop()
    for report in box.reports("done").values():
        assert report["import"]["status"] == "completed", report
        assert report["import_id"] in ids, report
    assert env.fake.api("GET", "/contacts/imports?limit=1").json()["data"][0]["id"] not in ids
    return ids, buried


def test_the_list_is_paged_back_with_after(pipe_env):
    """150 newer imports: the imports followed are on the list's second page, reached with
    `after` (the id of the last import of the page before)."""
    env = pipe_env
    ids, buried = follow_buried(env, 150)
    later = [r for r in list_gets(env) if r["started"] > buried]
    paged = [r for r in later if r["query"].get("after")]
    assert paged, f"no page after the first: {[r['query'] for r in later]}"
    assert all(r["query"].get("limit") == "100" for r in later), [r["query"] for r in later]


def test_an_import_missing_from_the_list_is_asked_for_by_id(pipe_env):
    """1,050 newer imports: more than the pages the daemon reads back (it pages while a
    followed import is not shown, within a bound), so each import is asked for by its id."""
    env = pipe_env
    ids, buried = follow_buried(env, 1050)
    assert list_gets(env), "the imports were never read through the list"
    late = [p for p in env.polls() if p["started"] > buried and p["path"].rsplit("/", 1)[1]
            in ids]
    asked = {p["path"].rsplit("/", 1)[1] for p in late}
    assert asked == ids, \
        f"asked by id after the list lost them: {len(asked)} of {len(ids)} imports; " \
        f"list reads after: {[r['query'] for r in list_gets(env) if r['started'] > buried]}"


# --- 7. kill -9 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("moment", ["sending", "following"])
def test_kill9_during_a_batch_loses_and_repeats_nothing(pipe_env, moment):
    """sending: killed while the fake holds the batch's upload (the import is made after the
    kill; the daemon never saw its id): after the restart the batch's files find it in
    Resend's list and adopt it together. following: killed once every member's state record
    holds the batch's import id: after the restart the import is followed, never sent again.
    Either way every file ends in done/ exactly once."""
    env = pipe_env
    env.fake.configure(import_seconds=6 if moment == "following" else 0.2)
    box = env.folder("box")
    files = contents(6)
    more = [{"delay": 4, "method": "POST", "path_prefix": "/contacts/imports", "count": 1}] \
        if moment == "sending" else []
    hold_first_upload(env, more=more)
    config = env.config([box], api=WAIT, retry={"max_attempts": 20})
    daemon = env.start(config)
    drop_while_first_is_held(env, box, files)
    env.wait_for(lambda: len(env.uploads()) >= 1, "the first upload's answer")
    owner = owners(files)
    if moment == "sending":
        env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1,
                     "the batch's upload held by the fake")
        daemon.kill()
        killed = time.time()
        # The fake makes the import once its hold ends.
        env.wait_for(lambda: len(env.uploads()) >= 2, "the held upload's record")
        batch_upload = env.uploads()[1]
        members = carried_files(batch_upload, owner)
        assert len(members) >= 2, f"setup: the held upload was not a batch: {members}"
    else:
        env.wait_for(lambda: len(env.uploads()) >= 2, "the batch's upload")
        batch_upload = env.uploads()[1]
        members = carried_files(batch_upload, owner)
        assert len(members) >= 2, f"setup: the second upload was not a batch: {members}"
        batch_id = batch_upload["answer"]["id"]

        def recorded():
            for name in members:
                try:
                    with open(os.path.join(box.processing, state_file_name(name)), "rb") as f:
                        if batch_id.encode() not in f.read():
                            return False
                except FileNotFoundError:
                    return False
            return True
        env.wait_for(recorded, "the batch's import id in every member's state record")
        daemon.kill()
        killed = time.time()
        assert all(r["status"] == 201 for r in env.uploads())

    daemon = env.start(config)
    env.wait_outcomes(box, done=len(files), timeout=TIMEOUT)
    daemon.stop()
    env.daemons[0].assert_sanitizer_clean()

    names = [f[0] for f in files]
    assert_done_once(box, names)
    reports = {r["file"]: r for r in box.reports("done").values()}
    contacts = env.fake.contacts()
    for name, _data, lines in files:
        for line in lines:
            assert line.split(",")[0] in contacts, (name, line)
    after = [u for u in ok_uploads(env) if u["started"] > killed]
    resent = sorted({n for u in after for n in carried_files(u, owner)} & set(members))
    if moment == "following":
        assert not resent, f"{resent} uploaded again although the batch's import id was " \
                           f"recorded: {[carried_files(u, owner) for u in after]}"
        for name in members:
            assert reports[name]["import_id"] == batch_id, reports[name]
            assert reports[name]["batch"]["id"], reports[name]
            assert reports[name]["import"]["status"] == "completed", reports[name]
    else:
        # The batch's import was made after the kill: reconciled (Resend's list, the batch's
        # rows), adopted, and nothing sent again.
        assert not resent, f"{resent} uploaded again although the batch's import was made: " \
                           f"{[carried_files(u, owner) for u in after]}"
        for name in members:
            assert reports[name]["import_id"] == batch_upload["answer"]["id"], reports[name]
            assert reports[name]["reconciled"]["outcome"] == "adopted", reports[name]
    known = {u["answer"]["id"] for u in ok_uploads(env)}
    for name, report in reports.items():
        assert report["import_id"] in known, report
    # A report's batch is the import it names: every file naming a batch shares its import,
    # and the import carried the batch's rows (a file sent alone after the restart names none).
    rows_by_import = {u["answer"]["id"]: len(uploaded_lines(u)) - 1 for u in ok_uploads(env)}
    by_batch = {}
    for report in reports.values():
        if batch_of(report):
            by_batch.setdefault(batch_of(report)["id"], set()).add(report["import_id"])
            carried = rows_by_import[report["import_id"]]
            assert batch_of(report)["rows"] == carried, \
                f"{report['file']}: its report names batch {batch_of(report)['id']} of " \
                f"{batch_of(report)['rows']} rows, but its import {report['import_id']} " \
                f"carried {carried} rows (sent alone after the restart?): {report}"
    assert all(len(ids) == 1 for ids in by_batch.values()), by_batch
