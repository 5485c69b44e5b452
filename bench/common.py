"""Shared helpers of the benchmark suite: child processes, /proc readings, test files, the daemon.

Standard library only. Every child is started with PR_SET_PDEATHSIG, so that nothing outlives the
driver even if the driver itself is killed; every wait takes a deadline.
"""
import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
API_KEY = "re_bench"
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
               "ALL_PROXY", "ftp_proxy", "FTP_PROXY")

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


class BenchTimeout(Exception):
    """A wait ran out of time; `reached` holds how far it got."""

    def __init__(self, what, reached=None, total=None):
        super().__init__(what)
        self.reached = reached
        self.total = total


class ScenarioError(Exception):
    pass


def child_env(extra=None):
    """The environment for every child: no proxies, loopback exempt anyway."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    # Nothing the daemon might take for a systemd environment by accident.
    for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"):
        env.pop(k, None)
    if extra:
        env.update(extra)
    return env


def _die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv, *, new_session=False, **kw):
    """Popen whose child gets SIGTERM when the driver dies."""
    kw.setdefault("env", child_env())
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, start_new_session=new_session,
                            **kw)


def wait_exit(proc, deadline):
    """Waits for PROC until the monotonic DEADLINE. Returns (exit code, rusage) or None on
    timeout. Uses wait4 so that ru_maxrss (peak RSS, KiB) of the child is known."""
    pidfd = None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pass
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                code = os.waitstatus_to_exitcode(status)
                proc.returncode = code
                return code, ru
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], min(left, 1.0))
            else:
                time.sleep(min(left, 0.01))
    except ChildProcessError:
        # Already reaped (by Popen); no rusage then.
        return proc.returncode, None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def terminate(proc, grace=30.0, sig=signal.SIGTERM, group=False):
    """Stops PROC (its whole process group when GROUP), SIGKILL after GRACE seconds."""
    if proc is None or proc.returncode is not None:
        return proc.returncode if proc else None, None
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
    r = wait_exit(proc, time.monotonic() + grace)
    if r is None:
        try:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        r = wait_exit(proc, time.monotonic() + 10)
    if group:
        # Whatever is left of the group (e.g. a curl the pipeline had started).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return r if r else (None, None)


# --- /proc -------------------------------------------------------------------------------------

def proc_status(pid, tid=None):
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def peak_rss_kib(pid):
    v = proc_status(pid).get("VmHWM")
    return int(v.split()[0]) if v else None


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the comm: state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ctx_switches(pid):
    """(voluntary+involuntary of all threads, voluntary of the main thread, thread count)."""
    total = 0
    main_vol = 0
    n = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0, 0, 0
    for tid in tids:
        st = proc_status(pid, tid)
        if not st:
            continue
        n += 1
        vol = int(st.get("voluntary_ctxt_switches", 0))
        inv = int(st.get("nonvoluntary_ctxt_switches", 0))
        total += vol + inv
        if tid == str(pid):
            main_vol = vol
    return total, main_vol, n


def _cpu_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v[:8]), idle


def machine_busy(seconds=0.5):
    """Fraction of all CPUs busy over SECONDS (while the caller sleeps)."""
    t0, i0 = _cpu_jiffies()
    time.sleep(seconds)
    t1, i1 = _cpu_jiffies()
    return 0.0 if t1 == t0 else 1 - (i1 - i0) / (t1 - t0)


class CpuMeter:
    """Over a timed section: CPU time the machine spent on anything but the bench's own
    processes (PIDS: the daemon, nginx, strace; plus the driver itself). That is interference
    from other work, e.g. a compiler, which the bench cannot prevent but can report."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn

    def _own(self):
        # The driver and every child it has reaped (curl, mv, the script's pipelines, a
        # daemon that has exited), plus the live processes from PIDS_FN.
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for pid in self.pids_fn():
            try:
                own += cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return own

    def start(self):
        self.t0 = time.monotonic()
        self.j0 = _cpu_jiffies()
        self.own0 = self._own()
        return self

    def stop(self, extra_own=0.0):
        """EXTRA_OWN: CPU of own live processes that PIDS_FN does not list."""
        wall = time.monotonic() - self.t0
        j1 = _cpu_jiffies()
        busy = ((j1[0] - self.j0[0]) - (j1[1] - self.j0[1])) / CLK_TCK
        own = self._own() - self.own0 + extra_own
        other = max(0.0, busy - own)
        ncpu = os.cpu_count() or 1
        return {"wall_s": wall, "machine_busy_s": busy, "own_cpu_s": own,
                "other_cpu_s": other, "other_frac": other / (wall * ncpu) if wall > 0 else 0}


def group_members(pgid, comm=None):
    """PIDs whose process group is PGID (and whose command name is COMM)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        c = data[data.index("(") + 1:data.rindex(")")]
        fields = data.rpartition(")")[2].split()
        if int(fields[2]) == pgid and (comm is None or c == comm):
            out.append(int(name))
    return out


def all_traced(pid):
    """True when every thread of PID has a tracer (strace attached)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tids:
        if proc_status(pid, tid).get("TracerPid", "0") == "0":
            return False
    return True


# --- strace --------------------------------------------------------------------------------------

def strace_attach(pid, out_path, log_path, timeout=20):
    """strace -f -c attached to a running PID; returns the strace Popen once every thread is
    traced. Stop it with strace_detach (SIGINT: strace detaches and writes its summary)."""
    log = open(log_path, "ab")
    try:
        st = spawn(["strace", "-f", "-c", "-o", out_path, "-p", str(pid)], stdout=log,
                   stderr=log)
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while not all_traced(pid):
        if st.poll() is not None or time.monotonic() > deadline:
            terminate(st, grace=5)
            raise ScenarioError(f"strace did not attach to {pid} (see {log_path})")
        time.sleep(0.01)
    return st


def strace_detach(st, timeout=60):
    code, _ = terminate(st, grace=timeout, sig=signal.SIGINT)
    return code


def parse_strace_summary(path):
    """{syscall: calls} from an `strace -c` table, with 'total' as a key."""
    calls = {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or parts[0].startswith(("%", "-")):
                continue
            try:
                float(parts[0])
                n = int(parts[3])
            except ValueError:
                continue
            calls[parts[-1]] = calls.get(parts[-1], 0) + n
    return calls


# --- files ---------------------------------------------------------------------------------------

def small_csv(i, rows=100):
    """The benchmark's typical file: a header, then ROWS unique contacts (file I)."""
    base = i * rows
    return ("email,first_name\n" + "".join(
        f"user{k}@example.com,Name{k}\n" for k in range(base, base + rows))).encode()


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def write_big_csv(path, target_bytes, file_no):
    """A valid CSV of at least TARGET_BYTES: a header, then unique rows. Returns its size."""
    size = 0
    k = file_no * 10_000_000
    with open(path, "wb") as f:
        head = b"email,first_name\n"
        f.write(head)
        size += len(head)
        while size < target_bytes:
            chunk = "".join(f"user{j}@example.com,Name{j}\n"
                            for j in range(k, k + 20000)).encode()
            k += 20000
            if size + len(chunk) > target_bytes:
                # Cut at a row boundary just past the target.
                cut = chunk.index(b"\n", target_bytes - size) + 1
                chunk = chunk[:cut]
            f.write(chunk)
            size += len(chunk)
    return size


def count_reports(dirs):
    n = 0
    for d in dirs:
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(".json") and not e.name.startswith("."):
                    n += 1
    return n


def count_entries(dirs, suffix=".csv"):
    n = 0
    for d in dirs:
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(suffix) and not e.name.startswith("."):
                    n += 1
    return n


def latest_ctime(dirs, suffix):
    """The latest inode change time (a rename sets it) of the entries ending in SUFFIX."""
    best = 0
    for d in dirs:
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(suffix) and not e.name.startswith("."):
                    best = max(best, e.stat(follow_symlinks=False).st_ctime_ns)
    return best / 1e9


def wait_until(count_fn, total, deadline, interval=0.05, what="files"):
    """Polls COUNT_FN until it reaches TOTAL; raises BenchTimeout at DEADLINE."""
    while True:
        n = count_fn()
        if n >= total:
            return n
        if time.monotonic() > deadline:
            raise BenchTimeout(f"{n} of {total} {what}", n, total)
        time.sleep(interval)


def fs_type(path):
    try:
        out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", path],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.TimeoutExpired):
        pass
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                          text=True).stdout.strip()


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"({path}: {e})\n"


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


# --- the daemon ----------------------------------------------------------------------------------

class Folder:
    def __init__(self, root, name):
        self.name = name
        self.inbox = os.path.join(root, name, "in")
        self.done = os.path.join(root, name, "done")
        self.failed = os.path.join(root, name, "failed")
        for d in (self.inbox, self.done, self.failed):
            os.makedirs(d, exist_ok=True)


def make_folders(root, n, prefix="f"):
    return [Folder(root, f"{prefix}{i:02d}") for i in range(n)]


class DaemonConfig:
    """Writes configurations and finds out once which optional settings the binary accepts."""

    def __init__(self, binary, base_url, logdir):
        self.binary = binary
        self.base_url = base_url
        self.logdir = logdir
        self.rps = None
        self.optional = []  # (section or None, key) accepted by this binary
        self.notes = []

    def check(self, path):
        r = subprocess.run([self.binary, "-c", path, "--check"], capture_output=True, text=True,
                           env=child_env({"RESEND_API_KEY": API_KEY}), timeout=60)
        return r.returncode, (r.stdout + r.stderr).strip()

    def _text(self, folders, settle_ms, rescan_s, rps, state_dir, extra_defaults=(),
              folder_extra=()):
        lines = ["api:", f"  base_url: {self.base_url}", "  max_in_flight: 4",
                 f"  requests_per_second: {rps}", "defaults:", f"  settle_ms: {settle_ms}",
                 f"  rescan_s: {rescan_s}", "  follow_import: false"]
        lines += [f"  {k}: {v}" for k, v in extra_defaults]
        lines += ["log:", "  level: warning"]
        if state_dir:
            lines.append(f"state_dir: {state_dir}")
        lines.append("folders:")
        for f in folders:
            lines += [f"  - name: {f.name}", f"    inbox: {f.inbox}", f"    done: {f.done}",
                      f"    failed: {f.failed}"]
            lines += list(folder_extra)
        return "\n".join(lines) + "\n"

    def probe(self, root):
        """requests_per_second 0 (no client-side ceiling) if accepted, else 1000; a private
        state_dir if the binary has one (a ledger must not carry over between scenarios)."""
        folders = make_folders(os.path.join(root, "probe"), 1)
        path = os.path.join(root, "probe.yaml")
        with open(path, "w") as f:
            f.write(self._text(folders, 200, 30, 0, None))
        code, out = self.check(path)
        if code == 0:
            self.rps = 0
        else:
            self.rps = 1000
            first = out.splitlines()[0] if out else ""
            self.notes.append("requests_per_second: 0 refused by --check (" + first.strip() +
                              "); fell back to 1000")
        with open(path, "w") as f:
            f.write(self._text(folders, 200, 30, self.rps, os.path.join(root, "probe-state")))
        code, _ = self.check(path)
        if code == 0:
            self.optional.append("state_dir")
            self.notes.append("state_dir: accepted; each scenario gets a fresh one")
        rmtree(os.path.join(root, "probe"))
        rmtree(os.path.join(root, "probe-state"))
        os.unlink(path)

    def write(self, path, folders, settle_ms=200, rescan_s=30, extra_defaults=(),
              folder_extra=()):
        """EXTRA_DEFAULTS: (key, value) pairs under defaults:; FOLDER_EXTRA: lines (indented
        by 4) added to every folder."""
        state_dir = None
        if "state_dir" in self.optional:
            state_dir = os.path.join(os.path.dirname(path), "state")
            os.makedirs(state_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(self._text(folders, settle_ms, rescan_s, self.rps, state_dir,
                               extra_defaults, folder_extra))
        code, out = self.check(path)
        if code != 0:
            raise ScenarioError(f"--check refused {path}:\n{out}")
        return path


class Daemon:
    """resend-dropd as a child: stderr to a log file, READY=1 through a private NOTIFY_SOCKET."""

    _seq = 0

    def __init__(self, binary, config, log_path, once=False, api_key=API_KEY):
        self.api_key = api_key
        self.binary = binary
        self.config = config
        self.log_path = log_path
        self.once = once
        self.proc = None
        self.sock = None
        self.rusage = None
        self.exit_code = None
        self.started = None

    def start(self):
        Daemon._seq += 1
        name = f"rdd-bench-{os.getpid()}-{Daemon._seq}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind("\0" + name)  # abstract: no path length limit, nothing to clean up
        env = child_env({"RESEND_API_KEY": self.api_key, "NOTIFY_SOCKET": "@" + name})
        argv = [self.binary, "-c", self.config] + (["--once"] if self.once else [])
        log = open(self.log_path, "ab")
        try:
            self.started = time.monotonic()
            self.proc = spawn(argv, env=env, stdout=log, stderr=log)
        finally:
            log.close()
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self):
        """Reads every notification for the daemon's whole life, as a service manager does: a
        datagram socket nobody reads fills after net.unix.max_dgram_qlen messages (10 here),
        and sd_notify then blocks the daemon's loop."""
        while True:
            try:
                msg = self.sock.recv(4096)
            except OSError:
                return
            if not msg:
                return
            if b"READY=1" in msg.split(b"\n"):
                self._ready.set()

    def wait_ready(self, timeout=30):
        """Until READY=1; a daemon that never says it (no sd_notify) is given 1 s instead."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None:
                raise ScenarioError(f"the daemon exited with status {self.proc.returncode} "
                                    f"before it was ready:\n{tail(self.log_path)}")
            if time.monotonic() >= deadline:
                raise ScenarioError(f"the daemon was not ready within {timeout} s")
            if time.monotonic() - self.started > 5:
                # A binary that never calls sd_notify: running for 5 s will do.
                self.ready_fallback = True
                return

    ready_fallback = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_kib(self):
        return peak_rss_kib(self.proc.pid)

    def wait(self, deadline, sample=0.05):
        """Until exit or DEADLINE, sampling VmHWM every SAMPLE s (hwm_kib). Not ru_maxrss: at
        exec the kernel folds the pre-exec image's high-water mark into it, and that image is
        a fork of this (much larger) Python driver."""
        while True:
            hwm = peak_rss_kib(self.proc.pid)
            if hwm is not None:
                self.hwm_kib = max(self.hwm_kib or 0, hwm)
            r = wait_exit(self.proc, min(deadline, time.monotonic() + sample))
            if r is not None:
                self.exit_code, self.rusage = r
                return self.exit_code
            if time.monotonic() >= deadline:
                return None

    hwm_kib = None

    def stop(self, grace=60):
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            code, ru = terminate(self.proc, grace=grace)
            self.exit_code = code
            self.rusage = ru if ru is not None else self.rusage
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # ends the drain's recv
            self.sock.close()
            self.sock = None
        return self.exit_code

    def ru_maxrss_kib(self):
        return self.rusage.ru_maxrss if self.rusage is not None else None

    def ru_cpu_seconds(self):
        if self.rusage is None:
            return None
        return self.rusage.ru_utime + self.rusage.ru_stime
