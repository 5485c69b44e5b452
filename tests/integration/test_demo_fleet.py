"""`scripts/demo --fleet`, as a user runs it (the README's demo section): a throw-away PostgreSQL
server, the fake API, two daemons (host-a, host-b) on one inbox, 30 files, host-a killed with
kill -9 while it holds some, host-b taking them over. The demo runs this build's binary
(RDD_BINARY, which it honours instead of building) and must end with every file in done exactly
once, say so, and leave nothing behind: no process of its own (daemons, fake API, PostgreSQL and
tests/pg_server's watchdog: each names the demo's directory in its command line, or has its
working directory there) and no directory. The same holds when it is interrupted (Ctrl-C: a
SIGINT to its process group) half-way."""

import os
import re
import signal
import subprocess
import time

import pytest

from pg_harness import postgresql_available

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
DEMO = os.path.join(SOURCE_DIR, "scripts", "demo")
# The demo gives up on its own at 120 s after its start (the build aside: RDD_BINARY).
TIMEOUT = 240
FILES = 30
LEASE_S, HEARTBEAT_S = 4, 1
WORK = re.compile(r"^== working in (/\S+) \(removed at the end\) ==$", re.M)


@pytest.fixture
def demo_env(rdd_binary):
    reason = postgresql_available()
    if reason:
        pytest.fail(reason)
    return dict(os.environ, RDD_BINARY=rdd_binary)


def start_demo(env, out_path):
    """The demo in a session of its own (its process group is what Ctrl-C reaches)."""
    out = open(out_path, "w")
    try:
        return subprocess.Popen([DEMO, "--fleet"], cwd=SOURCE_DIR, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        out.close()


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def finish(proc, timeout):
    """The demo's exit status; past TIMEOUT, a Ctrl-C (its cleanup runs), then SIGKILL."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pytest.fail(f"scripts/demo --fleet did not end within {timeout} s")


def processes_naming(path):
    """Processes whose command line or working directory names PATH: (pid, command line)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if path in cmdline or cwd == path or cwd.startswith(path + "/"):
            found.append((int(pid), cmdline or f"[cwd {cwd}]"))
    return found


def assert_nothing_left(work, output):
    assert not os.path.exists(work), f"{work} is left behind\n{output}"
    # The demo waits for tests/pg_server's watchdog; a little slack for a loaded machine.
    deadline = time.monotonic() + 5
    while (left := processes_naming(work)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}\n{output}"


def work_dir(output):
    m = WORK.search(output)
    assert m, f"the demo did not say where it works\n{output}"
    return m.group(1)


def section(output, title):
    """The lines under the '== TITLE... ==' header, up to the next header."""
    m = re.search(r"^== " + re.escape(title) + r".*?==\n(.*?)(?=^== |\Z)", output, re.M | re.S)
    assert m, f"no section '{title}'\n{output}"
    return m.group(1)


def test_demo_fleet_takes_a_killed_host_over_and_leaves_nothing(demo_env, tmp_path):
    out_path = tmp_path / "demo.out"
    started = time.monotonic()
    proc = start_demo(demo_env, out_path)
    status = finish(proc, TIMEOUT)
    took = time.monotonic() - started
    output = read(out_path)
    print(output)
    print(f"scripts/demo --fleet took {took:.1f} s")
    work = work_dir(output)
    assert_nothing_left(work, output)
    assert status == 0, output
    assert "UNEXPECTED" not in output and "gave up" not in output, output

    # Both hosts joined, and host-b's status shows both alive (the hosts table).
    for host in ("host-a", "host-b"):
        assert f"fleet: joined as host '{host}'" in output, output
    status_text = section(output, "resend-dropd -c host-b.yaml status")
    assert "fleet: this host is 'host-b'" in status_text, status_text
    for host in ("host-a", "host-b"):
        assert re.search(rf"^\s+{host}\s+yes\s", status_text, re.M), status_text

    # host-a killed holding files; host-b took exactly those over.
    held = int(re.search(r"^== kill -9 host-a, holding (\d+) files", output, re.M).group(1))
    assert held >= 1, output
    assert "fleet: host 'host-a' stopped renewing its lease: taking its files over" in output
    moved = re.search(r"fleet: host 'host-a' is taken over: (\d+) files? moved here and resumed",
                      output)
    assert moved and int(moved.group(1)) == held, output
    assert "== host-b stopped with exit status 0 ==" in output, output

    # History, from the shared ledger: every file once, done, with the host that did it.
    history = section(output, "resend-dropd -c host-b.yaml history")
    rows = [line.split() for line in history.splitlines() if " signups " in line]
    names = [row[3] for row in rows]
    assert sorted(names) == [f"signups-{i:02}.csv" for i in range(1, FILES + 1)], history
    assert {row[4] for row in rows} == {"done"}, history
    hosts = [row[-1] for row in rows]
    assert set(hosts) == {"[host-a]", "[host-b]"}, history

    # The demo's own count (the fake's imports, done and failed, history's hosts).
    summary = re.search(
        r"^(\d+) files in done, (\d+) in failed, (\d+) imports; host-a did (\d+), host-b did "
        r"(\d+); host-b took over host-a's (\d+) files ([\d.]+) s after the kill$", output, re.M)
    assert summary, output
    done, failed, imports, did_a, did_b, taken = map(int, summary.groups()[:6])
    after_kill = float(summary.group(7))
    assert (done, failed, imports) == (FILES, 0, FILES), summary.group(0)
    assert (did_a, did_b) == (hosts.count("[host-a]"), hosts.count("[host-b]")), history
    assert did_a >= 3 and did_a + did_b == FILES, summary.group(0)
    assert taken == held, summary.group(0)
    # The lease runs from host-a's last heartbeat (up to one before the kill); it is taken over
    # at one of host-b's heartbeats after its end (README: 4.1 s measured); and some slack.
    assert LEASE_S - HEARTBEAT_S - 0.5 <= after_kill <= LEASE_S + 3 * HEARTBEAT_S + 5, \
        summary.group(0)


def test_demo_fleet_interrupted_half_way_leaves_nothing(demo_env, tmp_path):
    """Ctrl-C once the files are dropped: the demo stops what it started and removes its
    directory, PostgreSQL's included."""
    out_path = tmp_path / "demo.out"
    proc = start_demo(demo_env, out_path)
    deadline = time.monotonic() + 120
    while "files dropped in the shared inbox" not in read(out_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            finish(proc, 1)
            pytest.fail(f"the demo ended or stalled before the files were dropped\n"
                        f"{read(out_path)}")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    status = finish(proc, 60)
    output = read(out_path)
    print(output)
    assert status == 130, output
    assert_nothing_left(work_dir(output), output)
