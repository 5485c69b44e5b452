"""The service manager's view of the daemon, through the notify protocol: the test binds the
NOTIFY_SOCKET datagram socket itself (as systemd does) and reads what the daemon says.

READY=1 once the folders are watched; STATUS= that follows the files (waiting, uploading) at most
once a second and is quiet when nothing changes; WATCHDOG=1 at half WATCHDOG_USEC from the loop;
RELOADING=1 with MONOTONIC_USEC then READY=1 on SIGHUP; STOPPING=1 and EXTEND_TIMEOUT_USEC on
SIGTERM. And an idle daemon does not wake up for any of it.

Then the journal: a private journald (see below) and what `journalctl RDD_FOLDER=...` shows.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from daemon_harness import pipe_env, pipe_fake  # noqa: F401  (fixtures)

CSV = "email,first_name\n{}@example.com,X\n"


class NotifySocket:
    """A bound AF_UNIX datagram socket and a thread that records (monotonic time, message)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def all(self):
        with self.lock:
            return list(self.messages)

    def fields(self, since=0.0):
        """[(time, {name: value})] for every message received after SINCE."""
        return [(t, dict(line.split("=", 1) for line in text.split("\n") if "=" in line))
                for t, text in self.all() if t >= since]

    def with_field(self, name, since=0.0):
        return [(t, f) for t, f in self.fields(since) if name in f]

    def statuses(self, since=0.0):
        return [(t, f["STATUS"]) for t, f in self.with_field("STATUS", since)]

    def text(self):
        return "\n".join(f"{t:.3f} {m!r}" for t, m in self.all()[-80:])


@pytest.fixture
def notify(pipe_env):
    sock = NotifySocket(pipe_env.root)
    try:
        yield sock
    finally:
        sock.close()
        print("=== notify messages ===\n" + sock.text())


def notify_env(notify, watchdog_usec=None):
    env = {"NOTIFY_SOCKET": notify.path}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


def status_counts(status):
    match = re.search(r"(\d+) folders?, (\d+) waiting, (\d+) uploading, (\d+) following", status)
    assert match, f"not a status line: {status!r}"
    return tuple(int(g) for g in match.groups())


def wait_message(env, notify, predicate, what, since=0.0, timeout=20):
    return env.wait_for(lambda: next((f for t, f in notify.fields(since) if predicate(f)), None),
                        lambda: f"{what}\n--- notify ---\n{notify.text()}", timeout=timeout)


def test_ready_status_and_watchdog(pipe_env, notify):
    env = pipe_env
    folders = [env.folder(name, follow_import=False) for name in ("a", "b", "c")]
    config = env.config(folders, api={"max_in_flight": 1})
    daemon = env.start(config, env=notify_env(notify, 400000))

    ready = wait_message(env, notify, lambda f: f.get("READY") == "1", "READY=1")
    # READY=1 comes with the status, after the start-up line: the folders are watched.
    assert status_counts(ready["STATUS"]) == (3, 0, 0, 0), ready
    assert "started" in daemon.log()
    [(ready_at, _)] = notify.with_field("READY")

    # WATCHDOG_USEC=400000: a ping every 200 ms, from the loop (which is idle here).
    time.sleep(2.0)
    pings = [t for t, f in notify.with_field("WATCHDOG") if f["WATCHDOG"] == "1"]
    assert len(pings) >= 6, f"{len(pings)} WATCHDOG=1 in 2 s\n{notify.text()}"
    gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
    # Every 200 ms (the median; a loaded test machine may delay one now and then).
    assert 0.15 < gaps[len(gaps) // 2] < 0.3 and gaps[0] > 0.1, gaps
    # Idle: no STATUS beyond READY's.
    assert len(notify.statuses()) == 1, notify.text()

    # Three files, one upload at a time, each slowed down to 1.5 s: the status shows them
    # waiting and uploading.
    env.fake.faults([{"delay": 1.5, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 3}])
    began = time.monotonic()
    for index in range(3):
        folders[0].drop(f"f{index}.csv", CSV.format(index))
    wait_message(env, notify,
                 lambda f: "STATUS" in f and status_counts(f["STATUS"])[1:3] == (2, 1),
                 "a STATUS with 2 waiting, 1 uploading", since=began)
    env.wait_outcomes(folders[0], done=3, timeout=30)
    final = wait_message(env, notify,
                         lambda f: "STATUS" in f and status_counts(f["STATUS"]) == (3, 0, 0, 0),
                         "a STATUS with nothing left", since=time.monotonic() - 0.5)
    assert final["STATUS"] == "3 folders, 0 waiting, 0 uploading, 0 following, 0 paused", final

    # Rate-limited: never two STATUS within (nearly) a second, although the counts changed
    # more often than that.
    times = [t for t, _ in notify.statuses(ready_at)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and min(gaps) >= 0.8, f"STATUS gaps {gaps}\n{notify.text()}"
    assert any(status_counts(s)[2] == 1 for _, s in notify.statuses(began))

    # Settled: the status stays what it was; only the watchdog speaks.
    quiet = time.monotonic() + 0.2
    time.sleep(1.5)
    assert notify.statuses(quiet) == [], notify.text()
    assert len(notify.with_field("WATCHDOG", quiet)) >= 4
    daemon.stop()


def test_reload_says_reloading_then_ready(pipe_env, notify):
    env = pipe_env
    box = env.folder("box")
    config = env.config([box])
    daemon = env.start(config, env=notify_env(notify))
    wait_message(env, notify, lambda f: f.get("READY") == "1", "READY=1")

    sent = time.monotonic()
    daemon.process.send_signal(signal.SIGHUP)
    reloading = wait_message(env, notify, lambda f: f.get("RELOADING") == "1", "RELOADING=1",
                             since=sent)
    # CLOCK_MONOTONIC in µs, in the same message: systemd pairs it with the reload.
    stamp = int(reloading["MONOTONIC_USEC"]) / 1e6
    assert sent - 1 <= stamp <= time.monotonic() + 0.01, (stamp, sent)
    [(reloading_at, _)] = notify.with_field("RELOADING")
    ready = wait_message(env, notify, lambda f: f.get("READY") == "1", "READY=1 after the reload",
                         since=reloading_at)
    assert status_counts(ready["STATUS"])[0] == 1
    env.wait_for(lambda: daemon.log_lines("reloaded"), "the reload's log line")

    # The reloaded daemon still works.
    box.drop("after.csv", CSV.format("after"))
    env.wait_outcomes(box, done=1)
    daemon.stop()


def test_stop_says_stopping_and_extends_the_timeout(pipe_env, notify):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box], api={"shutdown_timeout_s": 7})
    daemon = env.start(config, env=notify_env(notify, 2000000))
    wait_message(env, notify, lambda f: f.get("READY") == "1", "READY=1")
    env.fake.faults([{"delay": 2, "method": "POST", "path_prefix": "/contacts/imports"}])
    box.drop("slow.csv", CSV.format("slow"))
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, "the upload in flight")

    sent = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    stopping = wait_message(env, notify, lambda f: f.get("STOPPING") == "1", "STOPPING=1",
                            since=sent)
    assert stopping
    # The drain may take shutdown_timeout_s and then its disk work: 7 s + 15 s.
    extend = wait_message(env, notify, lambda f: "EXTEND_TIMEOUT_USEC" in f,
                          "EXTEND_TIMEOUT_USEC", since=sent)
    assert extend["EXTEND_TIMEOUT_USEC"] == "22000000", extend
    order = [name for _, f in notify.fields(sent) for name in f
             if name in ("STOPPING", "EXTEND_TIMEOUT_USEC")]
    assert order[:2] == ["STOPPING", "EXTEND_TIMEOUT_USEC"], order
    status = daemon.wait_exit(20)
    daemon.assert_exit(status, 0)
    # The upload in flight finished within the drain, and the status said so meanwhile.
    env.wait_outcomes(box, done=1)
    assert any(s.startswith("stopping: ") for _, s in notify.statuses(sent)), notify.text()


def voluntary_switches(pid):
    """Context switches of every thread of PID that gave up the CPU (a wait that ended)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as file:
            for line in file:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


@pytest.mark.parametrize("watchdog", [False, True])
def test_an_idle_daemon_wakes_only_for_the_watchdog(pipe_env, notify, watchdog):
    """Under systemd (NOTIFY_SOCKET) with nothing to do, the status costs no wake-up; the
    watchdog, when asked for, is the one periodic wake-up (here every 100 ms)."""
    env = pipe_env
    box = env.folder("box")
    config = env.config([box])
    daemon = env.start(config, env=notify_env(notify, 200000 if watchdog else None))
    wait_message(env, notify, lambda f: f.get("READY") == "1", "READY=1")
    box.drop("one.csv", CSV.format("one"))
    env.wait_outcomes(box, done=1)
    time.sleep(1.0)  # the last STATUS (rate-limited) and the disk thread's last batch
    before = voluntary_switches(daemon.pid)
    time.sleep(2.0)
    woke = voluntary_switches(daemon.pid) - before
    print(f"idle, watchdog={watchdog}: {woke} voluntary context switches in 2 s")
    if watchdog:
        assert 15 <= woke <= 40, f"{woke} wake-ups in 2 s with a 100 ms watchdog"
    else:
        assert woke <= 2, f"{woke} wake-ups in 2 s of idling\n{notify.text()}"
    daemon.stop()


# --- the journal -----------------------------------------------------------------------------
#
# A real journald, private to the test: in a mount namespace of its own (unshare), tmpfs over
# /run/systemd and /run/log, so that nothing of the machine's is touched or seen. The daemon runs
# in that namespace with stderr connected to journald's stdout stream, and JOURNAL_STREAM set
# to that stream, as systemd does for a service.

JOURNALD = "/lib/systemd/systemd-journald"
IDS = {"STARTED": "bc985e16ce9844609f3ce3a7a00760eb", "STOPPING": "fa3e128c28f74be68508783650e121f2",
       "STOPPED": "3ed3f7214fcf452d8d2aa92f68e19635",
       "FILE_DONE": "9a36265ac5ee41e386d0592e41727da5",
       "FILE_FAILED": "69378dbdbbdc48eaaba509616a54cb5d",
       "UPLOAD_RETRY": "cb3db6c6dbde454c8b83ec219c2584da"}

NAMESPACE = """
set -e
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/log
mount -t tmpfs tmpfs /run/log
{journald} >"$1/journald.out" 2>&1 &
echo $! >"$1/journald.pid"
exec sleep 600
"""

STREAM = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("/run/systemd/journal/stdout")
# identifier, unit, priority, level prefix, to syslog, to kmsg, to console
s.sendall(b"resend-dropd\\n\\n6\\n1\\n0\\n0\\n0\\n")
s.shutdown(socket.SHUT_RD)
st = os.fstat(s.fileno())
os.dup2(s.fileno(), 2)
os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
os.execv(sys.argv[1], sys.argv[1:])
"""


def tool(name):
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    return None


class PrivateJournal:
    def __init__(self, root):
        self.root = root
        self.holder = subprocess.Popen(
            [tool("unshare"), "--mount", "--propagation", "private", "sh", "-c",
             NAMESPACE.format(journald=JOURNALD), "sh", root],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not self.run("test", "-S", "/run/systemd/journal/socket").returncode == 0:
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("private journald did not start: "
                                     f"{self.holder.stderr.read() if self.holder.poll() is not None else ''}"
                                     f"{self.journald_out()}")
            time.sleep(0.1)
        self.stream = os.path.join(root, "journal-stream.py")
        with open(self.stream, "w") as file:
            file.write(STREAM)

    def journald_out(self):
        try:
            with open(os.path.join(self.root, "journald.out")) as file:
                return file.read()
        except OSError:
            return ""

    def run(self, *command):
        return subprocess.run([tool("nsenter"), f"--target={self.holder.pid}", "--mount", "--",
                               *command], capture_output=True, timeout=30)

    def wrapper(self, binary):
        """An executable that starts BINARY in the namespace with stderr on the journal."""
        path = os.path.join(self.root, "rdd-in-journal")
        with open(path, "w") as file:
            file.write(f"#!/bin/sh\nexec {tool('nsenter')} --target={self.holder.pid} --mount -- "
                       f"/usr/bin/python3 {self.stream} {os.path.abspath(binary)} \"$@\"\n")
        os.chmod(path, 0o755)
        return path

    def entries(self, *matches):
        """journalctl -o json MATCHES, parsed; binary fields (journalctl gives them as byte
        arrays) as bytes."""
        out = self.run(tool("journalctl"), "-D", "/run/log/journal", "--no-pager", "-o", "json",
                       *matches)
        assert out.returncode in (0, 1), out.stderr
        entries = []
        for line in out.stdout.decode().splitlines():
            entry = json.loads(line)
            entries.append({key: bytes(value) if isinstance(value, list) else value
                            for key, value in entry.items()})
        return entries

    def text(self):
        """The last messages, for a failure's explanation."""
        try:
            lines = [f"{e.get('_PID')} {e.get('PRIORITY')} {e.get('MESSAGE')!r}"
                     for e in self.entries()[-40:]]
        except Exception as error:  # noqa: BLE001  (only ever a diagnostic)
            lines = [f"(journalctl: {error})"]
        return "--- private journal ---\n" + "\n".join(lines) + "\n" + self.journald_out()

    def close(self):
        try:
            with open(os.path.join(self.root, "journald.pid")) as file:
                os.kill(int(file.read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        self.holder.kill()
        self.holder.wait(10)


def journal_unavailable():
    if os.geteuid() != 0:
        return "needs root (a mount namespace with tmpfs mounts)"
    for name in ("unshare", "nsenter", "journalctl"):
        if not tool(name):
            return f"no {name}"
    if not os.access(JOURNALD, os.X_OK):
        return f"no {JOURNALD}"
    probe = subprocess.run([tool("unshare"), "--mount", "--propagation", "private", "true"],
                           capture_output=True, timeout=20)
    if probe.returncode != 0:
        return f"unshare --mount is refused here: {probe.stderr.decode().strip()}"
    return None


def test_journal_tells_each_folders_story(pipe_env):
    """journalctl RDD_FOLDER=newsletter shows that folder's files and nothing of another's;
    every event kind has its MESSAGE_ID; names are in RDD_FILE as they are, escaped in
    MESSAGE."""
    reason = journal_unavailable()
    if reason:
        pytest.skip(f"a private journald cannot be run: {reason}")
    env = pipe_env
    journal = PrivateJournal(env.root)
    try:
        news = env.folder("newsletter", follow_import=False)
        other = env.folder("other", follow_import=False)
        config = env.config([news, other])
        env.binary = journal.wrapper(env.binary)
        daemon = env.start(config, check_started=False)
        env.wait_for(lambda: journal.entries(f"MESSAGE_ID={IDS['STARTED']}"),
                     lambda: f"the start-up entry in the journal\n{journal.text()}")

        env.fake.faults([{"status": 500, "method": "POST", "path_prefix": "/contacts/imports"}])
        name = "new\nline.csv"
        news.drop(name, CSV.format("news"))
        env.wait_outcomes(news, done=1)
        env.fake.faults([{"status": 422, "name": "validation_error", "message": "no",
                          "method": "POST", "path_prefix": "/contacts/imports"}])
        other.drop("bad.csv", CSV.format("bad"))
        env.wait_outcomes(other, failed=1)
        daemon.stop()
        env.wait_for(lambda: journal.entries(f"MESSAGE_ID={IDS['STOPPED']}"),
                     lambda: f"the last entry\n{journal.text()}")

        story = env.wait_for(lambda: journal.entries("RDD_FOLDER=newsletter"), "newsletter")
        kinds = [entry.get("MESSAGE_ID") for entry in story]
        assert kinds == [IDS["UPLOAD_RETRY"], IDS["FILE_DONE"]], story
        retry, done = story
        for entry in story:
            assert entry["RDD_FILE"] in (name, name.encode()), entry  # as it is
            assert "new\\nline.csv" in entry["MESSAGE"], entry    # escaped
            assert entry["_TRANSPORT"] == "journal", entry        # native, with fields
            assert entry["SYSLOG_IDENTIFIER"] == "resend-dropd"
            assert entry["_PID"] == str(daemon.pid)
            assert "CODE_FILE" not in entry, entry                # log.c's place says nothing
        assert retry["PRIORITY"] == "4" and retry["RDD_OUTCOME"] == "retry", retry
        assert done["PRIORITY"] == "6" and done["RDD_OUTCOME"] == "done", done
        report = news.reports("done")
        [import_id] = [r["import_id"] for r in report.values()]
        assert done["RDD_IMPORT_ID"] == import_id, done

        [failed] = journal.entries("RDD_FOLDER=other")
        assert failed["MESSAGE_ID"] == IDS["FILE_FAILED"] and failed["PRIORITY"] == "3"
        assert failed["RDD_OUTCOME"] == "failed" and failed["RDD_FILE"] == "bad.csv", failed
        assert "RDD_IMPORT_ID" not in failed

        # Plain lines are native entries too, and nothing came twice through the stream.
        everything = journal.entries(f"_PID={daemon.pid}")
        assert [e for e in everything if e["_TRANSPORT"] != "journal"] == [], everything
        assert len(journal.entries(f"MESSAGE_ID={IDS['STOPPING']}")) == 1
    finally:
        journal.close()
