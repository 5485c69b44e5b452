"""Run resend-dropd against the fake Resend API, for the pipeline's integration tests.

    from daemon_harness import pipe_env  # the fixture; pytest finds it in the test module

    def test_something(pipe_env):
        env = pipe_env                       # a Harness: temp tree, fake API, daemons
        news = env.folder("news", column_map={"email": "Email"})
        config = env.config([news])
        daemon = env.start(config)
        news.drop("a.csv", "Email\\nx@example.com\\n")
        env.wait_outcomes(news, done=1)
        daemon.stop()                        # SIGTERM; asserts exit 0 and a clean stderr

Everything here is bounded: every wait has a timeout and says what it waited for (with the
daemon's log) when it runs out; the fixture kills whatever is left running at teardown.
Fixture names start with `pipe_` so that they cannot clash with a conftest.py.
"""

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
FAKE_DIR = os.path.join(SOURCE_DIR, "tests", "fake_resend")
if FAKE_DIR not in sys.path:
    sys.path.insert(0, FAKE_DIR)

from fakeapi import FakeResend, encode_multipart, file_part  # noqa: E402

API_KEY = "re_test_key"
SANITIZER_EXIT = 86          # ASAN_OPTIONS exitcode: a leak or memory error at exit
UBSAN_EXIT = 87
STOP_TIMEOUT = 20.0          # SIGTERM to exit, with shutdown_timeout_s small (ASan is slow)
WAIT_TIMEOUT = 30.0          # default bound of every wait
SANITIZER_LINES = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                             r"SUMMARY: (Address|Undefined|Leak)Sanitizer")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY", "no_proxy", "NO_PROXY")


# --- the binary ------------------------------------------------------------------------------

def binary_path():
    path = os.environ.get("RDD_BINARY")
    if not path:
        pytest.fail("RDD_BINARY is not set: point it at the built resend-dropd")
    if not os.access(path, os.X_OK):
        pytest.fail(f"RDD_BINARY={path} is not an executable file")
    return path


_SANITIZED = {}


def is_sanitized(binary):
    """True when the binary is built with AddressSanitizer (RSS figures mean nothing then)."""
    if binary not in _SANITIZED:
        found = False
        try:
            ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=20)
            found = "libasan" in ldd.stdout
        except (OSError, subprocess.TimeoutExpired):
            pass
        if not found:  # statically linked runtime (clang -static-libsan), or no ldd
            with open(binary, "rb") as file:
                data = file.read()
            found = b"__asan_init" in data or b"libasan" in data
        _SANITIZED[binary] = found
    return _SANITIZED[binary]


def daemon_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20,
                         env=daemon_environment())
    match = re.fullmatch(r"resend-dropd (\S+)\n?", out.stdout)
    assert out.returncode == 0 and match, f"--version printed {out.stdout!r} {out.stderr!r}"
    return match.group(1)


# What systemd gives a service: a test that runs under a unit (a CI runner, say) must not
# hand them to a daemon run by hand.
SERVICE_VARS = {"INVOCATION_ID", "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY",
                "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"}


def daemon_environment(api_key=API_KEY, extra=None):
    env = {key: value for key, value in os.environ.items()
           if key not in PROXY_VARS and key not in SERVICE_VARS and key != "RESEND_API_KEY"}
    if api_key is not None:
        env["RESEND_API_KEY"] = api_key
    # A leak or memory error at exit becomes exit status 86, which every stop() assertion
    # (exit 0 expected) catches; the log is searched for reports as well.
    env["ASAN_OPTIONS"] = f"detect_leaks=1:abort_on_error=0:exitcode={SANITIZER_EXIT}"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:exitcode={UBSAN_EXIT}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


# --- loopback ports -----------------------------------------------------------------------------

def free_port():
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, what="the server"):
    """Until something listens on 127.0.0.1:PORT; AssertionError after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


# --- the control socket ----------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def control_request(path, method="GET", url="/status", timeout=10):
    """(status, Content-Type, body text) of one request on the control socket at PATH."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request(method, url)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        conn.close()


def control_status(path):
    code, ctype, body = control_request(path)
    assert code == 200 and ctype == "application/json", (code, ctype, body)
    return json.loads(body)


def control_metrics(path):
    code, ctype, body = control_request(path, url="/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4"), (code, ctype)
    return body


# --- files -----------------------------------------------------------------------------------

def state_file_name(name):
    """The daemon's state file for a claimed file: fixed length, from the name's sha256."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    return ".state-" + hashlib.sha256(raw).hexdigest()[:32]


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def as_bytes(content):
    return content.encode() if isinstance(content, str) else content


def read_bytes(path):
    with open(path, "rb") as file:
        return file.read()


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


class Folder:
    """One drop folder: inbox, done and failed directories, and its per-folder settings."""

    def __init__(self, root, name, settings, make=True):
        """MAKE: create the three directories (else the test makes them its own way)."""
        self.name = name
        self.root = root
        self.inbox = os.path.join(root, "in")
        self.done = os.path.join(root, "done")
        self.failed = os.path.join(root, "failed")
        self.settings = settings
        for path in (self.inbox, self.done, self.failed) if make else ():
            os.makedirs(path)

    @property
    def processing(self):
        return os.path.join(self.inbox, ".resend-dropd")

    def config(self):
        return {"name": self.name, "inbox": self.inbox, "done": self.done,
                "failed": self.failed, **self.settings}

    def drop(self, name, content):
        """Write a file under a dotted temporary name, then rename it in: it appears whole."""
        temporary = os.path.join(self.inbox, f".drop-{uuid.uuid4().hex}.writing")
        with open(temporary, "wb") as file:
            file.write(as_bytes(content))
        os.rename(temporary, os.path.join(self.inbox, name))
        return os.path.join(self.inbox, name)

    def write(self, name, content):
        """Write a file in place (open, write, close), as a plain copy does."""
        path = os.path.join(self.inbox, name)
        with open(path, "wb") as file:
            file.write(as_bytes(content))
        return path

    @staticmethod
    def _entries(directory):
        try:
            return sorted(os.listdir(directory))
        except FileNotFoundError:
            return []

    def inbox_entries(self):
        return self._entries(self.inbox)

    def processing_files(self):
        """Claimed files (the daemon's own state and temporaries start with a dot)."""
        return [name for name in self._entries(self.processing) if not name.startswith(".")]

    def files(self, kind):
        """Files in done or failed, without their reports and rejects files."""
        directory = getattr(self, kind)
        return [name for name in self._entries(directory)
                if not name.endswith((".json", ".rejects.csv")) and not name.startswith(".")]

    def report_names(self, kind):
        directory = getattr(self, kind)
        return [name for name in self._entries(directory)
                if name.endswith(".json") and not name.startswith(".")]

    def reports(self, kind):
        """{report name: parsed report} in done or failed."""
        directory = getattr(self, kind)
        return {name: read_json(os.path.join(directory, name))
                for name in self.report_names(kind)}

    def report(self, kind, name):
        return read_json(os.path.join(getattr(self, kind), name + ".json"))


# --- configuration ---------------------------------------------------------------------------

def yaml_text(value, indent=0):
    """YAML for the configuration: mappings in block style, everything else as JSON (which
    is a YAML flow node), so that no value needs YAML-specific quoting."""
    pad = "  " * indent
    lines = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines.append(yaml_text(item, indent + 1))
        elif isinstance(item, list) and item and all(isinstance(x, dict) for x in item) \
                and key == "folders":
            lines.append(f"{pad}{key}:")
            for entry in item:
                body = yaml_text(entry, indent + 2).splitlines()
                lines.append(f"{pad}  - {body[0].lstrip()}")
                lines.extend(body[1:])
        else:
            lines.append(f"{pad}{key}: {json.dumps(item, ensure_ascii=False)}")
    return "\n".join(lines)


def merged(base, changes):
    out = dict(base)
    for key, value in (changes or {}).items():
        out[key] = value
    return out


# --- the daemon ------------------------------------------------------------------------------

class Daemon:
    """resend-dropd as a subprocess; stderr (the log) and stdout go to files."""

    def __init__(self, binary, config, args, env, log_dir, index):
        self.binary = binary
        self.config = config
        self.args = list(args)
        self.stderr_path = os.path.join(log_dir, f"daemon-{index}.stderr")
        self.stdout_path = os.path.join(log_dir, f"daemon-{index}.stdout")
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.process = subprocess.Popen([binary, "-c", config, *self.args],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                            env=env)
        self.started = time.monotonic()

    @property
    def pid(self):
        return self.process.pid

    @property
    def returncode(self):
        return self.process.poll()

    def log(self):
        with open(self.stderr_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def stdout(self):
        with open(self.stdout_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def log_lines(self, pattern):
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def alive(self):
        return self.process.poll() is None

    def peak_rss_kb(self):
        """VmHWM: the most resident memory the process has used, in kB."""
        with open(f"/proc/{self.pid}/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/PID/status")

    def assert_sanitizer_clean(self):
        found = [line for line in self.log().splitlines() if SANITIZER_LINES.search(line)]
        assert not found, "sanitizer reports in the daemon's log:\n" + "\n".join(found) + \
            "\n--- log ---\n" + tail(self.log())

    def wait_exit(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"resend-dropd still running after {timeout} s\n--- log ---\n"
                                 f"{tail(self.log())}") from None

    def stop(self, timeout=STOP_TIMEOUT, expect=0):
        """SIGTERM, then the exit status must be EXPECT within TIMEOUT seconds."""
        assert self.alive(), f"resend-dropd exited early with {self.returncode}\n--- log ---\n" \
                             f"{tail(self.log())}"
        self.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        status = self.wait_exit(timeout)
        self.stop_seconds = time.monotonic() - sent
        self.assert_exit(status, expect)
        return status

    def assert_exit(self, status, expect):
        assert status == expect, f"resend-dropd exited with {status}, expected {expect}" \
            f"{' (sanitizer report)' if status in (SANITIZER_EXIT, UBSAN_EXIT) else ''}" \
            f"\n--- log ---\n{tail(self.log())}"
        self.assert_sanitizer_clean()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)


def tail(text, lines=60):
    return "\n".join(text.splitlines()[-lines:])


# --- the harness -----------------------------------------------------------------------------

class Harness:
    """A temporary tree of drop folders, the fake API, and the daemons a test starts."""

    API = {"max_in_flight": 4, "requests_per_second": 50, "connect_timeout_s": 5,
           "request_timeout_s": 60, "shutdown_timeout_s": 5}
    RETRY = {"max_attempts": 3, "initial_delay_ms": 100, "max_delay_ms": 1000}
    # rescan_s is long on purpose: inotify must do the work within every wait's bound.
    # coalesce off: the suites written before coalescing (issue 18) check what each file's own
    # upload carried; the daemon's default (auto) is tested by test_coalesce.py, which sets it
    # for its harness (DEFAULTS_COALESCED), and by the tests that ask for it.
    DEFAULTS = {"settle_ms": 200, "rescan_s": 300, "coalesce": "off"}
    DEFAULTS_COALESCED = {"settle_ms": 200, "rescan_s": 300}

    def __init__(self, root, fake):
        self.root = root
        self.fake = fake
        self.binary = binary_path()
        self.daemons = []
        self.log_dir = os.path.join(root, "logs")
        os.makedirs(self.log_dir)

    # --- set-up ---

    def folder(self, name, **settings):
        return Folder(os.path.join(self.root, name), name, settings)

    def config(self, folders, api=None, retry=None, defaults=None, log=None, base_url=None,
               name="resend-dropd.yaml", control=None, metrics=None, state_dir=None,
               ledger=None, extra=None):
        document = {
            # The ledger in the test's tree too (shared by every daemon of the test).
            "state_dir": state_dir or self.state_dir,
            "api": merged({"base_url": base_url or self.fake.url, **self.API}, api),
            "retry": merged(self.RETRY, retry),
            "defaults": merged(self.DEFAULTS, defaults),
            "log": merged({"level": "debug", "format": "text"}, log),
            # Each configuration's control socket in the test's tree, never the system's
            # (control=False: none configured, the daemon's own choice, see control_path.h).
            "control": merged({"socket": self.control_socket(name)}, control or None),
            "folders": [folder.config() for folder in folders],
        }
        if control is False:
            del document["control"]
        if metrics is not None:
            document["metrics"] = metrics
        # ledger: {"backend": "postgresql", "conninfo": ...} (pg_harness.py); EXTRA: any other
        # top-level keys.
        if ledger is not None:
            document["ledger"] = ledger
        document.update(extra or {})
        path = os.path.join(self.root, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(yaml_text(document) + "\n")
        return path

    @property
    def state_dir(self):
        return os.path.join(self.root, "state")

    def control_socket(self, name="resend-dropd.yaml"):
        """The control socket of the configuration written by config(name=NAME)."""
        return os.path.join(self.root, os.path.splitext(name)[0] + ".sock")

    def start(self, config, *args, api_key=API_KEY, env=None, check_started=True):
        daemon = Daemon(self.binary, config, args, daemon_environment(api_key, env),
                        self.log_dir, len(self.daemons))
        self.daemons.append(daemon)
        if check_started:
            self.wait_for(lambda: "started" in daemon.log() or not daemon.alive(),
                          "the daemon's start-up line", timeout=20)
            assert daemon.alive() or daemon.returncode == 0, \
                f"resend-dropd exited at start with {daemon.returncode}\n{tail(daemon.log())}"
        return daemon

    def run_once(self, config, *args, timeout=60, api_key=API_KEY):
        """Run with --once (plus ARGS) to its end; return the Daemon (exit status in
        .returncode, sanitizer reports checked by assert_exit)."""
        daemon = self.start(config, "--once", *args, api_key=api_key, check_started=False)
        daemon.wait_exit(timeout)
        return daemon

    def close(self):
        """Teardown: nothing may outlive the test."""
        for daemon in self.daemons:
            daemon.kill()

    # --- waiting ---

    def diagnostics(self):
        parts = []
        for index, daemon in enumerate(self.daemons):
            state = "running" if daemon.alive() else f"exited {daemon.returncode}"
            parts.append(f"--- daemon {index} ({state}) log ---\n{tail(daemon.log())}")
        with contextlib.suppress(Exception):
            parts.append("--- fake requests ---\n" + "\n".join(
                f"{r['method']} {r['path']} -> {r['status']}"
                f"{' ' + r['file']['filename'] if r.get('file') else ''}"
                for r in self.fake.requests()[-30:]))
        return "\n".join(parts)

    def wait_for(self, predicate, what, timeout=WAIT_TIMEOUT, interval=0.05):
        """The predicate's first truthy value, polling; AssertionError after TIMEOUT s.
        WHAT describes the wait: a string, or a function giving one (called at the end)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                if callable(what):
                    what = what()
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n"
                                     f"{self.diagnostics()}")
            time.sleep(interval)

    def wait_outcomes(self, folder, done=0, failed=0, timeout=WAIT_TIMEOUT):
        """Wait until FOLDER has DONE reports in done and FAILED in failed (a report is
        written after its file is moved, so both are there); assert no more than that."""
        def counts():
            return len(folder.report_names("done")), len(folder.report_names("failed"))
        self.wait_for(lambda: counts()[0] >= done and counts()[1] >= failed,
                      lambda: f"{folder.name}: {done} done and {failed} failed "
                              f"(have {counts()})",
                      timeout)
        assert counts() == (done, failed), \
            f"{folder.name}: expected {done} done, {failed} failed; have {counts()}\n" \
            f"{self.diagnostics()}"
        assert len(folder.files("done")) == done and len(folder.files("failed")) == failed, \
            f"{folder.name}: files {folder.files('done')} {folder.files('failed')}"

    # --- the fake's records ---

    def uploads(self):
        """POST /contacts/imports records sent by resend-dropd, in arrival order."""
        return [record for record in self.fake.requests()
                if record["method"] == "POST" and record["path"] == "/contacts/imports"
                and record["headers"].get("user-agent", "").startswith("resend-dropd/")]

    def asked_about(self, import_id):
        """Whether the daemon asked about IMPORT_ID: by its id, or in a page of the list
        (GET /contacts/imports) that showed it."""
        for record in self.fake.requests():
            if record["method"] != "GET" or not record["path"].startswith("/contacts/imports"):
                continue
            if record["path"] == f"/contacts/imports/{import_id}":
                return True
            answer = record.get("answer") or {}
            if record["path"] == "/contacts/imports" and any(
                    item.get("id") == import_id for item in answer.get("data") or []):
                return True
        return False

    def follow_ups(self):
        """GET /contacts/imports/{id} and GET /contacts/imports (the list) sent by the daemon."""
        return [record for record in self.fake.requests()
                if record["method"] == "GET" and record["path"].startswith("/contacts/imports")]

    def polls(self):
        return [record for record in self.fake.requests()
                if record["method"] == "GET" and record["path"].startswith("/contacts/imports/")]


@pytest.fixture
def pipe_fake():
    """A fresh fake API per test: no requests, imports, contacts or faults of another test."""
    with FakeResend(import_seconds=0.2) as fake:
        yield fake


@pytest.fixture
def pipe_env(pipe_fake):
    binary_path()  # fails the test before anything is created
    root = tempfile.mkdtemp(prefix="rdd-pipe-")
    try:
        harness = Harness(root, pipe_fake)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield harness
    finally:
        harness.close()
        # Shown by pytest only for a failing test: what the daemons said.
        for index, daemon in enumerate(harness.daemons):
            print(f"=== daemon {index}: resend-dropd -c {daemon.config} {' '.join(daemon.args)}"
                  f" -> exit {daemon.returncode} ===")
            print(tail(daemon.log(), 200))
        shutil.rmtree(root, ignore_errors=True)


def create_import_on_fake(fake, csv_text, column_map=None, on_conflict="upsert"):
    """Create an import on the fake directly (as a previous run of the daemon would have);
    its id."""
    parts = [file_part(as_bytes(csv_text), "earlier.csv")]
    if column_map is not None:
        parts.append(("column_map", json.dumps(column_map, separators=(",", ":"))))
    parts.append(("on_conflict", on_conflict))
    body, content_type = encode_multipart(parts)
    answer = fake.api("POST", "/contacts/imports", body, {"Content-Type": content_type})
    assert answer.status == 201, answer.body
    return answer.json()["id"]


# --- helpers for the engine tests (processes, sparse files, a small filesystem) --------------

def proc_cpu_seconds(pid):
    """(utime + stime in seconds, state letter) of PID, all its threads together, from
    /proc/PID/stat (fields 14 and 15, in clock ticks); None once the process is gone.
    A zombie still reads: its state is 'Z' and the times are final."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = text[text.rindex(")") + 2:].split()
    state, utime, stime = fields[0], int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK"), state


def write_sparse(path, head, size):
    """HEAD, then zeros up to SIZE bytes without writing them (a sparse file)."""
    with open(path, "wb") as file:
        file.write(as_bytes(head))
    os.truncate(path, size)
    return path


def fill_filesystem(directory, name="filler.bin"):
    """Write a file in DIRECTORY until the filesystem is full (ENOSPC), down to the last
    byte; its path."""
    import errno
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = 1 << 20
        block = b"\xa5" * chunk
        while chunk:
            try:
                os.write(fd, block[:chunk])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)
    return path


@contextlib.contextmanager
def tmpfs_mounted(path, size="4m"):
    """A tmpfs of SIZE mounted on PATH (created) for the block; unmounted afterwards, lazily
    if something still uses it. Skips the test when it cannot be mounted (not root, no
    mount permission in this container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(path, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                               "tmpfs", path], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot run mount: {error}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        out = subprocess.run(["umount", path], capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, text=True, timeout=20)


def folder_at(root, name, **settings):
    """A Folder whose in/done/failed are created under ROOT/NAME (ROOT anywhere, e.g. on a
    filesystem mounted for the test), rather than in the harness's temporary tree."""
    return Folder(os.path.join(root, name), name, settings)
