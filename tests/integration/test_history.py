"""`resend-dropd history` (issue 11, item 4): what the ledger says became of each file, as a
table and as JSON lines, filtered by folder, age and outcome, read while the daemon runs.

The ledger is written by the daemon itself (a few files run through it against the fake API),
never built here: these tests know the command's output, not the ledger's schema."""

import json
import os
import re
import subprocess
import time

import pytest

from daemon_harness import (daemon_environment, pipe_env, pipe_fake,  # noqa: F401
                            sha256_bytes, tail)

MAP = {"email": "Email", "first_name": "Name"}
GOOD = b"Email,Name\nann@example.com,Ann\nbo@example.com,Bo\n"
OTHER = b"Email,Name\ncy@example.com,Cy\n"
BAD = b"email,name\nann@example.com,Ann\n"  # no "Email" column: fails at check
CRM = b"Email,Name\ndee@example.com,Dee\neve@example.com,Eve\nfay@example.com,Fay\n"
AWKWARD = "new\nline.csv"
TIMEOUT = 60
HEADERS = ["claimed (UTC)", "folder", "file", "status", "rows",
           "created/updated/skipped/failed", "import", "note"]
JSON_KEYS = {"folder", "file", "claimed_at", "bytes", "sha256", "settings_hash", "attempts",
             "uploaded_at", "finished_at", "status", "import_ids", "counts", "error",
             "duplicate_of", "host"}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def with_state_dir(env, config):
    """The configuration's state_dir (the ledger's directory), in the test's tree: the
    harness's own when it writes one, else added to the YAML as a top-level key."""
    with open(config, encoding="utf-8") as file:
        text = file.read()
    match = re.search(r"^state_dir: (.*)$", text, re.M)
    if match:
        state = json.loads(match.group(1))
    else:
        state = os.path.join(env.root, "state")
        with open(config, "a", encoding="utf-8") as file:
            file.write(f"state_dir: {json.dumps(state)}\n")
    os.makedirs(state, exist_ok=True)
    return state


def history(env, config, *args):
    done = subprocess.run([env.binary, "-c", config, "history", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, env=daemon_environment())
    # The command runs under the sanitizers too: a leak is exit 86, a report is on stderr.
    assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def table(out):
    """[{header: cell}] of a table, checking that it is one: a header line, then rows whose
    left-aligned columns start where their header does (the rows column is right-aligned:
    it ends where its header ends)."""
    lines = out.rstrip("\n").split("\n")
    header = lines[0]
    assert re.split(r" {2,}", header) == HEADERS, header
    starts = [header.index(h) for h in HEADERS]
    rows_end = starts[4] + len("rows")
    rows = []
    for line in lines[1:]:
        if line.startswith("("):
            break
        assert line == line.rstrip(), f"trailing blanks: {line!r}"
        cells = re.split(r" {2,}", line)
        assert len(cells) in (7, 8), line
        cells += [""] * (8 - len(cells))
        row = dict(zip(HEADERS, cells))
        for i, h in enumerate(HEADERS):
            if h == "rows":
                assert line[rows_end - len(row[h]):rows_end] == row[h], (line, h)
            elif row[h]:
                assert line[starts[i]:starts[i] + len(row[h])] == row[h], (line, h, starts[i])
        rows.append(row)
    return rows


def json_lines(out):
    entries = [json.loads(line) for line in out.splitlines()]
    for entry in entries:
        assert set(entry) == JSON_KEYS, entry
    return entries


@pytest.fixture
def hist(pipe_env):
    """Two folders through two --once runs: news has a file done, a file failed at check and
    (in the second run) a duplicate of the done one, skipped; crm a file done whose name holds
    a newline. Then the configuration, the folders, the ledger's directory and when the second
    run started."""
    env = pipe_env
    news = env.folder("news", column_map=MAP)
    crm = env.folder("crm", column_map=MAP)
    config = env.config([news, crm])
    state = with_state_dir(env, config)

    news.write("good.csv", GOOD)
    news.write("bad.csv", BAD)
    crm.write(AWKWARD, CRM)
    run = env.run_once(config, timeout=TIMEOUT)
    run.assert_exit(run.returncode, 3)
    env.wait_outcomes(news, done=1, failed=1, timeout=1)
    env.wait_outcomes(crm, done=1, timeout=1)

    time.sleep(4)  # room for --since to tell the runs apart
    second = time.time()
    news.write("again.csv", GOOD)
    run = env.run_once(config, timeout=TIMEOUT)
    run.assert_exit(run.returncode, 0)
    env.wait_outcomes(news, done=2, failed=1, timeout=1)
    return env, config, news, crm, state, second


def test_table_lists_every_file_newest_first(hist):
    env, config, news, crm, state, _ = hist
    code, out, err = history(env, config)
    assert code == 0, err
    assert err == ""
    rows = table(out)
    assert len(rows) == 4, out
    assert not out.rstrip("\n").split("\n")[-1].startswith("("), "4 rows are not cut"
    assert rows[0]["file"] == "again.csv", out  # the second run's, first
    assert sorted(r["file"] for r in rows[1:]) == sorted(["good.csv", "bad.csv",
                                                          "new\\nline.csv"]), out
    claimed = [r["claimed (UTC)"] for r in rows]
    assert claimed == sorted(claimed, reverse=True), out
    for r in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["claimed (UTC)"]), r
    by = {r["file"]: r for r in rows}

    good = by["good.csv"]
    report = news.report("done", "good.csv")
    assert good["folder"] == "news" and good["status"] == "done", good
    assert good["rows"] == "2" and good["created/updated/skipped/failed"] == "2/0/0/0", good
    assert good["import"] == report["import_id"], (good, report)
    assert good["note"] == ""

    bad = by["bad.csv"]
    assert bad["status"] == "failed" and bad["rows"] == "-", bad
    assert bad["created/updated/skipped/failed"] == "-" and bad["import"] == "-", bad
    assert bad["note"].startswith("check: "), bad
    assert len(bad["note"]) <= 60, bad

    again = by["again.csv"]
    assert again["status"] == "skipped" and again["import"] == "-", again
    assert again["note"] == "duplicate of good.csv", again

    # The newline is shown escaped, as in the logs: it broke no line.
    awkward = by["new\\nline.csv"]
    assert awkward["folder"] == "crm" and awkward["status"] == "done", awkward
    assert awkward["rows"] == "3", awkward


def test_failed_folder_and_since_filter(hist):
    env, config, news, crm, state, second = hist

    code, out, err = history(env, config, "--failed")
    assert code == 0, err
    assert [(r["folder"], r["file"]) for r in table(out)] == [("news", "bad.csv")], out

    code, out, err = history(env, config, "--folder", "crm")
    assert code == 0, err
    assert [r["file"] for r in table(out)] == ["new\\nline.csv"], out

    code, out, err = history(env, config, "--folder", "crm", "--failed")
    assert code == 0, err
    assert out == "no failed files in folder 'crm' in the ledger\n", out

    # Only the second run's file was claimed in the last N seconds: N reaches back to between
    # 1 and 2 s before the second run, which the first run's files are 4 s before.
    recent = f"{int(time.time() - second) + 2}s"
    code, out, err = history(env, config, "--since", recent)
    assert code == 0, err
    assert [r["file"] for r in table(out)] == ["again.csv"], (recent, out)
    code, out, err = history(env, config, "--since", "1h")
    assert code == 0, err
    assert len(table(out)) == 4, out
    code, out, err = history(env, config, "--since", recent, "--failed")
    assert code == 0, err
    assert out == f"no failed files claimed in the last {recent}\n", out

    code, out, err = history(env, config, "--since", "yesterday")
    assert code == 1 and out == "", (code, out)
    assert "--since" in err and "'yesterday'" in err, err


def test_limit_says_when_it_cut(hist):
    env, config, news, crm, state, _ = hist
    code, out, err = history(env, config, "--limit", "2")
    assert code == 0, err
    rows = table(out)
    assert [r["file"] for r in rows][0] == "again.csv" and len(rows) == 2, out
    assert out.endswith("\n(2 most recent; --limit 0 for all)\n"), out
    code, out, err = history(env, config, "--limit", "0")
    assert code == 0, err
    assert len(table(out)) == 4 and "most recent" not in out, out
    code, out, err = history(env, config, "--limit", "4")
    assert code == 0, err
    assert len(table(out)) == 4 and "most recent" not in out, out
    code, out, err = history(env, config, "--limit", "many")
    assert code == 1 and "--limit" in err, (code, err)


def test_json_lines(hist):
    env, config, news, crm, state, _ = hist
    code, out, err = history(env, config, "--json")
    assert code == 0, err
    entries = json_lines(out)
    assert [e["file"] for e in entries][0] == "again.csv"
    by = {e["file"]: e for e in entries}
    assert set(by) == {"again.csv", "good.csv", "bad.csv", AWKWARD}, out

    good, report = by["good.csv"], news.report("done", "good.csv")
    assert good["folder"] == "news" and good["status"] == "done"
    assert good["bytes"] == len(GOOD) and good["sha256"] == sha256_bytes(GOOD)
    assert good["sha256"] == report["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", good["settings_hash"]), good
    assert good["attempts"] == 1
    assert good["import_ids"] == [report["import_id"]] and UUID.fullmatch(good["import_ids"][0])
    assert good["counts"] == {"total": 2, "created": 2, "updated": 0, "skipped": 0,
                              "failed": 0}, good
    for key in ("claimed_at", "uploaded_at", "finished_at"):
        assert ISO.fullmatch(good[key]), (key, good)
    assert good["claimed_at"] <= good["uploaded_at"] <= good["finished_at"], good
    assert good["error"] is None and good["duplicate_of"] is None

    bad = by["bad.csv"]
    assert bad["status"] == "failed" and bad["import_ids"] == [] and bad["counts"] is None
    assert bad["uploaded_at"] is None and ISO.fullmatch(bad["finished_at"]), bad
    assert bad["error"].startswith("check: ") and bad["duplicate_of"] is None, bad

    again = by["again.csv"]
    assert again["status"] == "skipped" and again["duplicate_of"] == "good.csv", again
    assert again["sha256"] == good["sha256"] and again["import_ids"] == [], again
    assert again["uploaded_at"] is None, again

    assert by[AWKWARD]["folder"] == "crm" and by[AWKWARD]["counts"]["total"] == 3

    # Filters apply to JSON the same way; nothing found is no line at all.
    code, out, err = history(env, config, "--json", "--failed")
    assert code == 0, err
    assert [e["file"] for e in json_lines(out)] == ["bad.csv"]
    code, out, err = history(env, config, "--json", "--failed", "--folder", "crm")
    assert code == 0 and out == "" and err == "", (code, out, err)
    # A cut list stays JSON on stdout; the cut is said on stderr.
    code, out, err = history(env, config, "--json", "--limit", "1")
    assert code == 0, err
    assert [e["file"] for e in json_lines(out)] == ["again.csv"]
    assert err == "(1 most recent; --limit 0 for all)\n", err


def test_unknown_folder_is_refused_with_the_names(hist):
    env, config, news, crm, state, _ = hist
    code, out, err = history(env, config, "--folder", "newz")
    assert code == 1 and out == "", (code, out)
    assert "'newz'" in err and "news, crm" in err, err


def test_history_while_the_daemon_runs(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    config = env.config([box])
    with_state_dir(env, config)
    daemon = env.start(config)
    # Started, nothing done yet: a ledger with no files.
    code, out, err = history(env, config)
    assert code == 0, (err, tail(daemon.log()))
    assert out == "no files in the ledger\n", out
    box.drop("live.csv", GOOD)
    env.wait_outcomes(box, done=1)

    def listed():
        code, out, err = history(env, config)
        return code == 0 and "live.csv" in out and out
    out = env.wait_for(listed, "live.csv in the history while the daemon runs")
    [row] = table(out)
    assert row["status"] == "done" and row["folder"] == "box", row
    box.drop("next.csv", OTHER)
    env.wait_outcomes(box, done=2)
    def first(out):
        rows = table(out) if out.startswith("claimed") else []
        return rows[0]["file"] if rows else None
    env.wait_for(lambda: first(history(env, config, "--limit", "1")[1]) == "next.csv",
                 "next.csv listed first")
    assert daemon.alive()
    daemon.stop()
    # And after it stopped.
    code, out, err = history(env, config)
    assert code == 0, err
    assert [r["file"] for r in table(out)] == ["next.csv", "live.csv"], out


def test_missing_ledger_and_bad_configuration(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map=MAP)
    config = env.config([box])
    state = with_state_dir(env, config)  # exists, but no daemon has run with it

    code, out, err = history(env, config)
    assert code == 2 and out == "", (code, out)
    assert os.path.join(state, "ledger.sqlite") in err, err
    assert err.startswith("resend-dropd: history: ") and err.count("\n") == 1, err
    # A folder is checked before the ledger is opened.
    code, out, err = history(env, config, "--folder", "nope")
    assert code == 1 and "'nope'" in err and "box" in err, (code, err)
    # Usage errors: 1.
    for args in (["--json", "extra"], ["--bogus"], ["--limit"]):
        code, out, err = history(env, config, *args)
        assert code == 1 and out == "" and "Usage: resend-dropd" in err, (args, code, err)
    done = subprocess.run([env.binary, "-c", config, "--once", "history"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=daemon_environment())
    assert done.returncode == 1 and "history" in done.stderr, done.stderr

    # A configuration that does not load: its errors, exit 1.
    broken = os.path.join(env.root, "broken.yaml")
    with open(broken, "w", encoding="utf-8") as file:
        file.write("folders: 3\n")
    done = subprocess.run([env.binary, "-c", broken, "history"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=daemon_environment())
    assert done.returncode == 1 and "error" in done.stderr and done.stdout == "", done.stderr

    # state_dir missing altogether: 2, saying which.
    gone = os.path.join(env.root, "gone.yaml")
    with open(config, encoding="utf-8") as file:
        text = file.read()
    with open(gone, "w", encoding="utf-8") as file:
        file.write(re.sub(r"^state_dir: .*$",
                          "state_dir: " + json.dumps(os.path.join(env.root, "no-such-dir")),
                          text, flags=re.M))
    code, out, err = history(env, gone)
    assert code == 2 and "no-such-dir" in err, (code, err)
