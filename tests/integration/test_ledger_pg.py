"""The import ledger in PostgreSQL (src/ledger_pg.c), end to end: a real server started by the
test (pg_harness.PgServer), the daemon against the fake API, the ledger read back with psql as
an operator would.

What is shown: files recorded in PostgreSQL and nothing in state_dir, `history` reading
them there; a duplicate found through the shared ledger by a daemon with another state_dir; the
server stopped for 30 s while the daemon runs (one line when writes fail, intake paused, one
line when they work again, nothing lost or imported twice); the server restarted in the middle
of a burst; a daemon started while the server is down; a database that does not exist and a
password in conninfo refused at start; a role that logs in with ledger.password_file, its
password never in the log.

Each test has a server of its own (about 1 s to start), so that a halted server or a role
made by one test is never another's. Every wait is bounded; the fixtures stop the daemons and
the server whatever happens."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from daemon_harness import (control_status, daemon_environment, pipe_env,  # noqa: F401
                            pipe_fake, sha256_bytes, tail)
from pg_harness import PgServer

# The daemon's words (src/engine.c engine_ledger_health, src/daemon.c daemon_ledger_open).
PAUSED = (r"ledger \(PostgreSQL\): .*; no new file is taken from the inboxes until the ledger "
          r"can be written again \(files in flight go on; nothing is lost or imported twice\)")
RESUMED = r"the ledger can be written again: files are taken from the inboxes again"
WAITING_AT_START = r"ledger \(PostgreSQL\): cannot connect: .*: waiting for it; no file is " \
                   r"taken until it answers"
STUCK = r"status: STUCK: the ledger cannot be written"
LEDGER_LINES = r"ledger \(PostgreSQL\)"
TIMEOUT = 60
OUTAGE_S = 30.0
# The ledger's thread retries after 0.5 s, doubling to 30 s (src/ledgerq.c): after an outage of
# 30 s the next try may be up to 30 s after the server is back.
RECOVERY_BOUND_S = 45.0


@pytest.fixture
def pg():
    """A PostgreSQL server of this test's own, stopped (and its directory removed) after it."""
    with PgServer() as server:
        yield server


def csv(tag, rows=2):
    lines = ["email,first_name"] + [f"{tag}{i}@example.com,{tag.title()} {i}"
                                    for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def pg_ledger(conninfo, **more):
    return {"backend": "postgresql", "conninfo": conninfo, **more}


def visible(entries):
    return sorted(e for e in entries if not e.startswith("."))


def claimed(folder):
    """The files the daemon holds in FOLDER's processing directory, at any depth (its own
    state files and temporaries start with a dot; a subdirectory is no file)."""
    out = []
    for _, dirs, files in os.walk(folder.processing):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(f for f in files if not f.startswith("."))
    return sorted(out)


FILE_COLUMNS = ("folder", "file", "status", "import_ids", "sha256", "duplicate_of",
                "finished_at_ms")


def pg_rows(pg, conninfo):
    """The ledger's files, as dicts of strings (NULL is "": psql -At)."""
    rows = pg.sql(conninfo, f"SELECT {', '.join(FILE_COLUMNS)} FROM files ORDER BY id")
    return [dict(zip(FILE_COLUMNS, row)) for row in rows]


def finished_rows(pg, conninfo):
    return [r for r in pg_rows(pg, conninfo) if r["finished_at_ms"]]


def wait_finished_rows(env, pg, conninfo, count, timeout=TIMEOUT):
    """Until COUNT rows have their end recorded (the end is written just after the report)."""
    env.wait_for(lambda: len(finished_rows(pg, conninfo)) >= count,
                 lambda: f"{count} finished rows in PostgreSQL (have "
                         f"{len(finished_rows(pg, conninfo))})", timeout)
    return finished_rows(pg, conninfo)


def assert_rows_match_reports(rows, folder, names):
    """One finished row per file of NAMES, status done, its import id and sha256 those of the
    file's report; no other row."""
    by_file = {}
    for row in rows:
        by_file.setdefault((row["folder"], row["file"]), []).append(row)
    assert sorted(by_file) == sorted((folder.name, n) for n in names), sorted(by_file)
    for name in names:
        [row] = by_file[(folder.name, name)]
        report = folder.report("done", name)
        assert row["status"] == "done", row
        assert row["import_ids"] == report["import_id"] and report["import_id"], (row, report)
        assert row["sha256"] == report["sha256"], (row, report)


def uploads_per_file(env):
    """{file name: number of uploads the fake answered 201}."""
    out = {}
    for upload in env.uploads():
        if upload["status"] == 201:
            name = upload["file"]["filename"]
            out[name] = out.get(name, 0) + 1
    return out


def psql(conninfo, query):
    """(exit status, stdout, stderr) of QUERY by psql, which never asks for a password."""
    done = subprocess.run(["psql", "-X", "-w", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                           "-d", conninfo, "-c", query], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr


def run_cli(env, config, *args):
    done = subprocess.run([env.binary, "-c", config, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=daemon_environment())
    # Under the sanitizers: a leak is exit 86, a report is on stderr.
    assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def history_files(out):
    """{file: status} of `history`'s table (columns split on two blanks or more)."""
    lines = out.rstrip("\n").split("\n")
    assert re.split(r" {2,}", lines[0])[:4] == ["claimed (UTC)", "folder", "file", "status"], out
    rows = {}
    for line in lines[1:]:
        if line.startswith("("):
            break
        cells = re.split(r" {2,}", line)
        rows[cells[2]] = cells[3]
    return rows


def log_status(env, daemon):
    """SIGUSR1: the status summary, as logged (its last line is each folder's inbox line)."""
    before = len(daemon.log_lines(r"status: .*: inbox: "))
    daemon.process.send_signal(signal.SIGUSR1)
    env.wait_for(lambda: len(daemon.log_lines(r"status: .*: inbox: ")) > before,
                 "the status lines")
    return daemon.log_lines(r"status: ")


# --- 1. files imported with the ledger in PostgreSQL -------------------------------------------

def test_files_are_recorded_in_postgresql_and_history_reads_them_there(pipe_env, pg):
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    config = env.config([box], ledger=pg_ledger(conninfo))
    daemon = env.start(config)
    files = {f"file{i}.csv": csv(f"rec{i}-") for i in range(3)}
    for name, data in files.items():
        box.drop(name, data)
    env.wait_outcomes(box, done=3)
    rows = wait_finished_rows(env, pg, conninfo, 3)
    assert_rows_match_reports(rows, box, files)
    for row in rows:
        assert row["sha256"] == sha256_bytes(files[row["file"]]), row
    # The schema is versioned in its own table.
    [(version,)] = pg.sql(conninfo, "SELECT max(version) FROM ledger_schema")
    assert int(version) >= 1, version
    # Nothing kept in state_dir: the ledger is the server's.
    assert not os.path.exists(os.path.join(env.state_dir, "ledger.sqlite")), \
        os.listdir(env.state_dir)
    assert not [n for n in os.listdir(env.state_dir) if n.startswith("ledger.sqlite")]

    # history, while the daemon runs and after it stopped: from PostgreSQL.
    code, out, err = run_cli(env, config, "history")
    assert code == 0, err
    assert history_files(out) == {name: "done" for name in files}, out
    daemon.stop()
    code, out, err = run_cli(env, config, "history", "--json")
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    assert sorted(e["file"] for e in entries) == sorted(files), out
    for entry in entries:
        report = box.report("done", entry["file"])
        assert entry["folder"] == "box" and entry["status"] == "done", entry
        assert entry["import_ids"] == [report["import_id"]], (entry, report)
        assert entry["sha256"] == sha256_bytes(files[entry["file"]]), entry
    assert not os.path.exists(os.path.join(env.state_dir, "ledger.sqlite")), \
        "history made a SQLite ledger"
    # What history reads is the server's table: a row added there is listed.
    pg.sql(conninfo, "INSERT INTO files (folder, file, claimed_at_ms, status, sha256) "
                     f"VALUES ('box', 'from-sql.csv', {int(time.time() * 1000)}, 'failed', '')")
    code, out, err = run_cli(env, config, "history", "--failed")
    assert code == 0, err
    assert history_files(out) == {"from-sql.csv": "failed"}, out


# --- 2. duplicates through the shared ledger --------------------------------------------------

def test_a_duplicate_is_found_in_postgresql_after_a_restart_with_another_state_dir(pipe_env, pg):
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    data = csv("shared")
    daemon = env.start(env.config([box], ledger=pg_ledger(conninfo)))
    box.drop("first.csv", data)
    env.wait_outcomes(box, done=1)
    wait_finished_rows(env, pg, conninfo, 1)
    first = box.report("done", "first.csv")
    daemon.stop()

    # Another daemon, with a state_dir of its own (as on another host): only the server knows.
    other_state = os.path.join(env.root, "other-state")
    second = env.start(env.config([box], ledger=pg_ledger(conninfo), state_dir=other_state,
                                  name="second.yaml"))
    box.drop("again.csv", data)
    env.wait_outcomes(box, done=2)
    report = box.report("done", "again.csv")
    dup = report["duplicate_of"]
    assert dup is not None and dup["file"] == "first.csv", report
    assert dup["import_ids"] == [first["import_id"]], (dup, first)
    assert report["import_id"] is None and report["error"] is None, report
    [line] = second.log_lines(r"box: 'again\.csv' skipped")
    assert "the same content was imported from 'first.csv'" in line and \
        first["import_id"] in line, line
    ups = [u for u in env.uploads() if u["file"]["sha256"] == sha256_bytes(data)]
    assert [u["file"]["filename"] for u in ups] == ["first.csv"], ups
    rows = {r["file"]: r for r in wait_finished_rows(env, pg, conninfo, 2)}
    assert rows["again.csv"]["status"] == "skipped", rows
    assert rows["again.csv"]["duplicate_of"] == "first.csv", rows
    assert rows["again.csv"]["import_ids"] == "", rows
    assert not os.path.exists(os.path.join(other_state, "ledger.sqlite"))
    second.stop()


# --- 3. the server down for 30 s while the daemon runs -----------------------------------------

def test_postgresql_down_for_30s_pauses_intake_once_and_loses_nothing(pipe_env, pg):
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    config = env.config([box], ledger=pg_ledger(conninfo))
    daemon = env.start(config)
    box.drop("before.csv", csv("before"))
    env.wait_outcomes(box, done=1)
    wait_finished_rows(env, pg, conninfo, 1)

    # A file in flight when the server goes: its upload is held 3 s at the fake.
    env.fake.faults([{"delay": 3.0, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    box.drop("inflight.csv", csv("inflight"))
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 1, "inflight.csv's upload")
    pg.halt()
    halted = time.monotonic()
    # A file after it: claimed, unless the daemon knows already (its look-up tells it).
    box.drop("trigger.csv", csv("trigger"))
    env.wait_for(lambda: daemon.log_lines(PAUSED), "the line saying the ledger fails",
                 timeout=20)
    paused_after = time.monotonic() - halted
    later = []

    def drop_later(count):
        for _ in range(count):
            name = f"later{len(later)}.csv"
            box.drop(name, csv(f"later{len(later)}-"))
            later.append(name)

    # Files keep coming during the outage: none is taken.
    drop_later(4)
    schedule = [(10.0, 2), (20.0, 2)]
    checks = 0
    processing_seen = set()
    uploads_during = None
    while time.monotonic() - halted < OUTAGE_S:
        if schedule and time.monotonic() - halted >= schedule[0][0]:
            drop_later(schedule.pop(0)[1])
        time.sleep(0.5)
        held = claimed(box)
        processing_seen.update(held)
        taken = [n for n in later if n in held or os.path.exists(os.path.join(box.done, n))]
        assert not taken, f"taken while the ledger fails: {taken}\n{tail(daemon.log())}"
        names = [u["file"]["filename"] for u in env.uploads()]
        assert "trigger.csv" not in names, "trigger.csv uploaded without its look-up"
        uploads_during = names
        checks += 1
    assert daemon.alive(), tail(daemon.log())
    assert not schedule and len(later) == 8
    assert processing_seen <= {"inflight.csv", "trigger.csv"}, processing_seen
    inbox = visible(box.inbox_entries())
    assert inbox in (sorted(later), sorted([*later, "trigger.csv"])), inbox
    assert ("trigger.csv" in inbox) != ("trigger.csv" in claimed(box)), (inbox, claimed(box))
    # The file in flight went on: uploaded once, then it waits for the ledger to record it.
    assert uploads_during.count("inflight.csv") == 1, uploads_during
    assert "inflight.csv" in claimed(box), claimed(box)
    # One line for the whole outage, however many times the thread tried.
    assert len(daemon.log_lines(PAUSED)) == 1, daemon.log_lines(LEDGER_LINES)
    assert len(daemon.log_lines(LEDGER_LINES)) == 1, daemon.log_lines(LEDGER_LINES)
    assert not daemon.log_lines(RESUMED)
    # What an operator can see meanwhile. GET /status has no ledger field (src/
    # control_requests.c): it shows the files waiting in the inbox and nothing paused; the
    # SIGUSR1 summary says the daemon is stuck on the ledger.
    status = control_status(env.control_socket())
    [folder] = status["folders"]
    assert status["state"] == "running", status
    assert folder["waiting"] == len(later), folder
    assert folder["uploading"] == 0 and folder["done"] == 1, folder
    summary = log_status(env, daemon)
    assert any(re.search(STUCK, line) for line in summary), summary

    pg.resume()
    resumed = time.monotonic()
    env.wait_for(lambda: daemon.log_lines(RESUMED), "the line saying the ledger works again",
                 timeout=RECOVERY_BOUND_S)
    recovered_after = time.monotonic() - resumed
    env.wait_for(lambda: any(u["file"]["filename"] in later for u in env.uploads()),
                 "the first upload of a file dropped during the outage", timeout=TIMEOUT)
    intake_after = time.monotonic() - resumed
    names = ["before.csv", "inflight.csv", "trigger.csv", *later]
    env.wait_outcomes(box, done=len(names), timeout=TIMEOUT)
    all_done_after = time.monotonic() - resumed
    rows = wait_finished_rows(env, pg, conninfo, len(names))
    print(f"outage {OUTAGE_S:.0f} s: the failure said {paused_after:.2f} s after the halt; "
          f"after the resume: ledger line {recovered_after:.2f} s, first upload of a waiting "
          f"file {intake_after:.2f} s, all {len(names)} done {all_done_after:.2f} s; "
          f"{checks} checks during the outage")

    assert len(daemon.log_lines(PAUSED)) == 1, daemon.log_lines(LEDGER_LINES)
    assert len(daemon.log_lines(RESUMED)) == 1, daemon.log_lines(RESUMED)
    assert uploads_per_file(env) == {name: 1 for name in names}, uploads_per_file(env)
    assert all(u["status"] == 201 for u in env.uploads())
    assert_rows_match_reports(rows, box, names)
    assert pg.sql(conninfo, "SELECT count(*) FROM files") == [(str(len(names)),)]
    assert visible(box.inbox_entries()) == [] and claimed(box) == []
    assert os.listdir(box.failed) == []
    assert not [line for line in log_status(env, daemon) if re.search(STUCK, line)
                and line not in summary]
    daemon.stop()


# --- 4. the server restarted in the middle of a burst ------------------------------------------

def test_postgresql_restarted_during_a_burst_imports_each_file_once(pipe_env, pg):
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    daemon = env.start(env.config([box], ledger=pg_ledger(conninfo)))
    names = [f"burst{i:02d}.csv" for i in range(40)]
    for name in names:
        box.drop(name, csv(name[:-4] + "-"))
    env.wait_for(lambda: len(box.report_names("done")) >= 5, "5 files of the burst done")
    done_at_halt = len(box.report_names("done"))
    pg.halt()
    time.sleep(2)
    pg.resume()
    resumed = time.monotonic()
    env.wait_outcomes(box, done=len(names), timeout=90)
    print(f"burst: {done_at_halt} of {len(names)} done at the halt, the rest "
          f"{time.monotonic() - resumed:.2f} s after the resume")
    assert done_at_halt < len(names), "the burst was over before the restart: nothing tested"
    rows = wait_finished_rows(env, pg, conninfo, len(names))
    daemon.stop()

    assert uploads_per_file(env) == {name: 1 for name in names}, uploads_per_file(env)
    assert all(u["status"] == 201 for u in env.uploads())
    assert_rows_match_reports(rows, box, names)
    assert pg.sql(conninfo, "SELECT count(*) FROM files") == [(str(len(names)),)]
    assert os.listdir(box.failed) == [] and claimed(box) == []
    # The restart was noticed (the session the daemon held died with it), and said once.
    paused, resumed_lines = daemon.log_lines(PAUSED), daemon.log_lines(RESUMED)
    assert len(paused) == 1 and len(resumed_lines) == 1, daemon.log_lines(LEDGER_LINES)


# --- 5. a daemon started while the server is down ----------------------------------------------

def test_a_daemon_started_while_postgresql_is_down_waits_for_it(pipe_env, pg):
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    config = env.config([box], ledger=pg_ledger(conninfo))
    early = [f"early{i}.csv" for i in range(6)]
    for name in early:
        box.drop(name, csv(name[:-4] + "-"))
    pg.halt()
    daemon = env.start(config)
    started = time.monotonic()
    [line] = daemon.log_lines(WAITING_AT_START)
    assert pg.host in line, line
    box.drop("late.csv", csv("late"))
    # Well past settle_ms, and past several tries of the ledger's thread.
    taken = set()
    while time.monotonic() - started < 5:
        time.sleep(0.25)
        taken.update(claimed(box), box.files("done"), box.files("failed"))
    lines = daemon.log_lines(LEDGER_LINES)
    assert not taken and len(lines) == 1, \
        f"while the server is down: {len(taken)} of {len(early) + 1} files taken " \
        f"{sorted(taken)}, {len(lines)} lines about the ledger (one expected: the warning at " \
        f"start)\n{tail(daemon.log())}"
    assert visible(box.inbox_entries()) == sorted([*early, "late.csv"])
    assert env.uploads() == []
    assert daemon.alive()
    # history cannot read a ledger that is down: it says so (exit 2), it does not wait.
    code, out, err = run_cli(env, config, "history")
    assert code == 2 and out == "", (code, out, err)
    assert "ledger (PostgreSQL)" in err and "cannot connect" in err, err

    pg.resume()
    resumed = time.monotonic()
    names = [*early, "late.csv"]
    env.wait_outcomes(box, done=len(names), timeout=RECOVERY_BOUND_S)
    print(f"started while down: all {len(names)} files done "
          f"{time.monotonic() - resumed:.2f} s after the resume")
    rows = wait_finished_rows(env, pg, conninfo, len(names))
    assert_rows_match_reports(rows, box, names)
    assert uploads_per_file(env) == {name: 1 for name in names}, uploads_per_file(env)
    # The warning at start was the failure's line; one more when the ledger answers.
    assert len(daemon.log_lines(PAUSED)) == 0, daemon.log_lines(LEDGER_LINES)
    assert len(daemon.log_lines(RESUMED)) == 1, daemon.log_lines(RESUMED)
    daemon.stop()


# --- 6. a ledger misconfigured -----------------------------------------------------------------

@pytest.mark.parametrize("what", ["database", "role"])
def test_a_missing_database_or_role_is_an_error_at_start(pipe_env, pg, what):
    env = pipe_env
    box = env.folder("box")
    if what == "database":
        conninfo, name = pg.conninfo(dbname="no_such_db"), "no_such_db"
    else:
        pg.new_database("present")
        conninfo, name = pg.conninfo(dbname="present", user="no_such_role"), "no_such_role"
    box.drop("waiting.csv", csv("waiting"))
    daemon = env.start(env.config([box], ledger=pg_ledger(conninfo)), check_started=False)
    status = daemon.wait_exit(20)
    assert status == 2, f"exit {status}\n{daemon.log()}"
    daemon.assert_sanitizer_clean()
    errors = daemon.log_lines(LEDGER_LINES)
    assert len(errors) == 1 and f'"{name}"' in errors[0] and "does not exist" in errors[0], \
        daemon.log()
    assert not daemon.log_lines(r"\bstarted\b") and not daemon.log_lines(r"waiting for it")
    assert visible(box.inbox_entries()) == ["waiting.csv"] and claimed(box) == []
    assert env.uploads() == []


def test_a_password_in_conninfo_is_a_configuration_error(pipe_env, pg):
    env = pipe_env
    box = env.folder("box")
    secret = "Hunter2-in-the-yaml"
    conninfo = pg.new_database() + f" password={secret}"
    config = env.config([box], ledger=pg_ledger(conninfo))
    code, out, err = run_cli(env, config, "--check")
    assert code == 1, (code, out, err)
    text = out + err
    assert re.search(r"\.yaml:\d+:\d+: ledger\.conninfo: has a password in it", text), text
    assert "password_file" in text, text
    assert secret not in text, text
    box.drop("waiting.csv", csv("waiting"))
    daemon = env.start(config, check_started=False)
    status = daemon.wait_exit(20)
    assert status == 1, f"exit {status}\n{daemon.log()}"
    daemon.assert_sanitizer_clean()
    assert daemon.log_lines(r"ledger\.conninfo.*password"), daemon.log()
    assert secret not in daemon.log() + daemon.stdout()
    assert visible(box.inbox_entries()) == ["waiting.csv"] and env.uploads() == []


# --- 7. a role with a password, from password_file ---------------------------------------------

PASSWORD = "Pw-7q2Xk9-ledger-Zr4"


def make_password_role(pg):
    """The role rdd_pw (the test server asks it, and only it, for a scram password) and a
    database it owns; the database's name."""
    pg.sql(pg.conninfo(), "SET password_encryption = 'scram-sha-256'; "
                          f"CREATE ROLE rdd_pw LOGIN PASSWORD '{PASSWORD}'")
    pg.sql(pg.conninfo(), "CREATE DATABASE rdd_pw_db OWNER rdd_pw")
    return "rdd_pw_db"


def write_pgpass(env, pg, database, password, name="pgpass", mode=0o600):
    """A .pgpass line for the server's socket directory (libpq matches a socket by its
    directory), the role rdd_pw and DATABASE."""
    path = os.path.join(env.root, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as file:
        file.write(f"{pg.host}:5432:{database}:rdd_pw:{password}\n")
    os.chmod(path, mode)
    return path


def test_password_file_logs_in_and_the_password_never_shows(pipe_env, pg, monkeypatch):
    env = pipe_env
    for name in ("PGPASSWORD", "PGPASSFILE"):  # libpq would take them before password_file
        monkeypatch.delenv(name, raising=False)
    database = make_password_role(pg)
    conninfo = f"host={pg.host} user=rdd_pw dbname={database}"
    # Without a password the role is refused: the server asks it for one.
    code, _, err = psql(conninfo, "SELECT 1")
    assert code != 0 and "password" in err, (code, err)
    box = env.folder("box")

    # A wrong password: refused at start, and neither password is in the log.
    wrong = write_pgpass(env, pg, database, "Not-the-Pw-3141", name="wrong.pgpass")
    daemon = env.start(env.config([box], ledger=pg_ledger(conninfo, password_file=wrong),
                                  name="wrong.yaml"), check_started=False)
    status = daemon.wait_exit(20)
    assert status == 2, f"exit {status}\n{daemon.log()}"
    daemon.assert_sanitizer_clean()
    assert daemon.log_lines(r'password authentication failed for user "rdd_pw"'), daemon.log()
    assert "Not-the-Pw-3141" not in daemon.log() and PASSWORD not in daemon.log()

    pgpass = write_pgpass(env, pg, database, PASSWORD)
    assert oct(os.stat(pgpass).st_mode & 0o777) == "0o600"
    config = env.config([box], ledger=pg_ledger(conninfo, password_file=pgpass))
    code, out, err = run_cli(env, config, "--check")
    assert code == 0, (out, err)
    assert PASSWORD not in out + err
    daemon = env.start(config)
    box.drop("secret.csv", csv("secret"))
    env.wait_outcomes(box, done=1)
    # The rows are the role's: read them as rdd_pw, with the same file (the end is recorded
    # just after the report is written).
    def rows():
        code, out, err = psql(f"{conninfo} passfile={pgpass}",
                              "SELECT file, status, import_ids, current_user FROM files")
        assert code == 0, err
        return [tuple(line.split("\t")) for line in out.splitlines()]
    expected = [("secret.csv", "done", box.report("done", "secret.csv")["import_id"], "rdd_pw")]
    env.wait_for(lambda: rows() == expected, lambda: f"{expected} in the ledger, have {rows()}")
    code, out, err = run_cli(env, config, "history")
    assert code == 0, err
    assert history_files(out) == {"secret.csv": "done"}, out
    assert PASSWORD not in out + err
    daemon.stop()
    for d in env.daemons:
        assert PASSWORD not in d.log() and PASSWORD not in d.stdout(), d.log()
    assert PASSWORD not in open(config, encoding="utf-8").read()
