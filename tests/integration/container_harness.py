"""A real systemd (PID 1) in a container, booted on a copy-on-write view of this host's root,
for tests of the installed Debian package.

    from container_harness import boot, build_deb

    with boot("rdd-svc") as ctr:        # pytest.skip(reason) where a container cannot boot
        ctr.install_deb(build_deb(out_dir))
        news = ctr.make_folder("news")
        ctr.write_api_key()
        ctr.write_config(base_url=fake.url, folders=[news])
        ctr.systemctl("start", "resend-dropd")
        news.drop("a.csv", "email\\na@example.com\\n")
        ctr.wait_for(lambda: news.where("a.csv") == ["done"], 30, "a.csv in done/")
        ctr.journal("resend-dropd", RDD_FOLDER="news")   # parsed `journalctl -o json` entries

How: `unshare --mount` makes a mount namespace of its own holding a tmpfs and an overlay (lower:
the host's /, upper: the tmpfs), and systemd-nspawn -b boots the overlay from inside it. The
container shares the host's network (a fake API on the host's 127.0.0.1 is reachable) and
nothing else: whatever it writes (packages, users, journal) lands in the tmpfs. The mounts exist
only in that namespace, so they go when nspawn exits, whatever becomes of the test; nspawn gets
SIGTERM when the test process dies (PR_SET_PDEATHSIG), which powers the container off. In the
copy, before the boot: a machine id of its own (with the host's, nspawn refuses to link the
journals and the container's journal would be the host's), every unit the host enabled is masked (only systemd's own units run, not the host's
SSH server, database or Prometheus on the shared network), and Docker's policy-rc.d is removed
so that maintainer scripts start and stop services as on a real machine.

Commands run in the container with `nsenter -a` on its PID 1, as root, with a clean
environment; its files are reached from the host through /proc/<its PID 1>/root (ctr.path),
which sees what the container sees, its own /run and /tmp included. Every wait is bounded, and so is the whole life of a container when set_budget()
is called; a failure's message carries the journal of the units named in `explain_units`.
"""

import contextlib
import ctypes
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))

BOOT_TIMEOUT = 30.0          # nspawn start to 'running' (about 2 s here)
SHUTDOWN_TIMEOUT = 20.0      # poweroff to nspawn's exit (about 1.5 s here)
RUN_TIMEOUT = 60.0           # default bound of one command in the container
BUILD_TIMEOUT = 600          # CTest gives the whole module 900 s
OVERLAY_FAILED = 91          # the mount script's exit status when its mounts fail
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "TERM": "dumb",
       "SYSTEMD_PAGER": "", "PAGER": "cat", "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0",
       "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
# Inside the copy, before the boot. $1: the tmpfs mount point, $2: the root, $3: the machine
# id, the rest: units to mask. The host's root is only ever a lower layer here.
MOUNT_SCRIPT = r"""
set -eu
rw=$1 root=$2 machine_id=$3
shift 3
{
	mount -t tmpfs -o mode=0755 tmpfs "$rw" && mkdir "$rw/upper" "$rw/work" &&
		mount -t overlay overlay -o "lowerdir=/,upperdir=$rw/upper,workdir=$rw/work" "$root"
} || {
	echo "container_harness: no tmpfs and overlay of / could be mounted" >&2
	exit 91
}
rm -f "$root/etc/machine-id"
echo "$machine_id" >"$root/etc/machine-id"
for unit; do ln -sf /dev/null "$root/etc/systemd/system/$unit"; done
rm -f "$root/usr/sbin/policy-rc.d"
shift $#
exec systemd-nspawn -q -D "$root" -b --register=no --keep-unit --settings=no \
	--link-journal=no --console=pipe -M "$MACHINE"
"""

# --- resend-dropd in the container ---------------------------------------------------------
UNIT = "resend-dropd"
CONFIG = "/etc/resend-dropd/resend-dropd.yaml"
API_KEY_PATH = "/etc/resend-dropd/api_key"
API_KEY = "re_test_key"
USER = "resend-dropd"
DROP_ROOT = "/srv/drop"      # the unit's ReadWritePaths=
# How the configuration names the key: not at all. With neither api_key_env nor api_key_file,
# the daemon takes the unit's credential (LoadCredential= of /etc/resend-dropd/api_key).
API_KEY_SETTINGS = {}
# Fast for tests: no client-side rate limit, short retries and settling, a quick stop.
CONFIG_DEFAULTS = {
    "api": {"requests_per_second": 0, "shutdown_timeout_s": 5},
    "retry": {"max_attempts": 3, "initial_delay_ms": 200, "max_delay_ms": 1000},
    "defaults": {"settle_ms": 200},
}


class ContainerError(AssertionError):
    """A command in the container failed, or a wait ran out (with what explains it)."""


def _pdeathsig():
    """In the child before exec: SIGTERM when the test process dies (nspawn then powers off)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def host_enabled_units():
    """Every service, socket, timer and path unit the host's /etc/systemd/system enables."""
    units = set()
    base = "/etc/systemd/system"
    for wants in os.listdir(base) if os.path.isdir(base) else ():
        if wants.endswith((".wants", ".requires")):
            for unit in os.listdir(os.path.join(base, wants)):
                if unit.endswith((".service", ".socket", ".timer", ".path")):
                    units.add(unit)
    return sorted(units)


def _after(entry, mark):
    """Whether a journal entry came after the entry `mark`: by sequence number within one
    journald sequence (the cursor's s= and i=), else by time."""
    def seq(e):
        fields = dict(kv.split("=", 1) for kv in e.get("__CURSOR", "").split(";") if "=" in kv)
        return fields.get("s"), int(fields.get("i", "0"), 16)
    if not mark:
        return True
    (s1, i1), (s2, i2) = seq(entry), seq(mark)
    if s1 is not None and s1 == s2:
        return i1 > i2
    return int(entry["__REALTIME_TIMESTAMP"]) > int(mark["__REALTIME_TIMESTAMP"])


def _tail(path, lines=30):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


def _container_pid1(parent):
    """The pid (on the host) of the container's PID 1: a descendant of `parent` that is pid 1
    in its own pid namespace; None until it exists."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue
        children.setdefault(int(status.get("PPid", 0)), []).append(
            (int(entry), status.get("NSpid", "").split()))
    todo = [parent]
    while todo:
        for pid, nspid in children.get(todo.pop(), ()):
            if len(nspid) > 1 and nspid[-1] == "1":
                return pid
            todo.append(pid)
    return None


class Container:
    """A booted container: `run` commands in it, read its journal, reach its files."""

    def __init__(self, name, base_dir, nspawn, log_path):
        self.name = name
        self.base_dir = base_dir
        self.nspawn = nspawn
        self.log_path = log_path
        self.pid1 = None
        self.state = None            # 'running' or 'degraded' once booted
        self.deadline = None
        self.budget = None
        self.explain_units = [UNIT]  # whose journal a failure message shows
        self.folders = {}            # name: Folder, as make_folder made them

    # --- time ------------------------------------------------------------------------------

    def set_budget(self, seconds):
        """From now on, every command and wait ends within `seconds` in all."""
        self.budget = seconds
        self.deadline = time.monotonic() + seconds

    def _bound(self, timeout):
        if self.deadline is None:
            return timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ContainerError(f"the time budget of {self.budget} s is used up"
                                 f"{self.explain()}")
        return min(timeout, left)

    # --- commands --------------------------------------------------------------------------

    def run(self, cmd, check=True, timeout=RUN_TIMEOUT, input=None, user=None):
        """`cmd` (a list, or a string for sh -c) in the container as root (or `user`); the
        CompletedProcess (text). check: a non-zero exit raises ContainerError with the output
        and the journal tail."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]
        full = ["nsenter", "-t", str(self.pid1), "-a", *cmd]
        bound = self._bound(timeout)
        try:
            p = subprocess.run(full, capture_output=True, text=True, timeout=bound, env=ENV,
                               input=input, stdin=None if input is not None else
                               subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise ContainerError(f"{shlex.join(cmd)}: no exit after {bound:.0f} s\n"
                                 f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}"
                                 f"{self.explain()}") from None
        if check and p.returncode != 0:
            raise ContainerError(f"{shlex.join(cmd)} exited {p.returncode}\n"
                                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}{self.explain()}")
        return p

    def systemctl(self, *args, check=True, timeout=RUN_TIMEOUT):
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def show(self, unit, *properties):
        """`systemctl show -p ...` as a dict of strings."""
        out = self.systemctl("show", "-p", ",".join(properties), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit=None, after=None, **fields):
        """The journal's entries (parsed `journalctl -o json`), of `unit` if given, matching
        every FIELD=value given, and only those after the mark `after` (from mark()) if given."""
        cmd = ["journalctl", "--no-pager", "-q", "-o", "json"]
        if unit:
            cmd += ["-u", unit]
        cmd += [f"{k}={v}" for k, v in fields.items()]
        entries = [json.loads(line) for line in self.run(cmd).stdout.splitlines() if line]
        return [e for e in entries if after is None or _after(e, after)]

    def mark(self):
        """The journal's current end, for journal(after=...). Not a cursor for --after-cursor:
        systemd 252 skips matching entries when that is combined with -u or FIELD= matches."""
        out = self.run(["journalctl", "--no-pager", "-q", "-n", "1", "-o", "json"]).stdout
        return json.loads(out.splitlines()[-1]) if out.strip() else {}

    def journal_tail(self, unit, lines=40):
        p = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "journalctl", "--no-pager",
                            "-q", "-u", unit, "-n", str(lines)], capture_output=True, text=True,
                           timeout=20, env=ENV, stdin=subprocess.DEVNULL)
        return p.stdout + p.stderr

    def explain(self):
        """The journal tails of explain_units, for failure messages ('' when none)."""
        out = ""
        for unit in self.explain_units:
            try:
                out += f"\n--- journalctl -u {unit} (last lines) ---\n{self.journal_tail(unit)}"
            except (OSError, subprocess.SubprocessError) as e:
                out += f"\n--- journalctl -u {unit}: {e} ---"
        return out

    def wait_for(self, predicate, timeout, what, interval=0.2):
        """predicate()'s first true value, polled; ContainerError saying `what` was not reached
        (with the last value and the journal) after `timeout` s."""
        deadline = time.monotonic() + self._bound(timeout)
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ContainerError(f"{what}: not after {timeout} s (last: {value!r})"
                                     f"{self.explain()}")
            time.sleep(interval)

    # --- files -----------------------------------------------------------------------------

    def path(self, path):
        """The host's path to the container's `path`, as the container sees it (its /run and
        /tmp included): through its PID 1's root, so only while it runs."""
        if not path.startswith("/"):
            raise ValueError(f"not an absolute path: {path!r}")
        return f"/proc/{self.pid1}/root{path}"

    def uid(self, user):
        """The uid and gid of `user` in the container's /etc/passwd."""
        with open(self.path("/etc/passwd")) as f:
            for line in f:
                fields = line.split(":")
                if fields[0] == user:
                    return int(fields[2]), int(fields[3])
        raise KeyError(f"no user {user!r} in the container")

    def write_file(self, path, content, mode=0o644, owner=None):
        """Write `path` whole: under a dotted temporary name, then renamed in."""
        host = self.path(path)
        temporary = os.path.join(os.path.dirname(host), f".harness-{uuid.uuid4().hex}.tmp")
        with open(temporary, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(temporary, mode)
        if owner is not None:
            os.chown(temporary, *self.uid(owner))
        os.rename(temporary, host)
        return host

    def install_deb(self, deb, timeout=180):
        """`dpkg -i` of a .deb from the host, copied into the container first."""
        inside = f"/var/cache/container-harness/{os.path.basename(deb)}"
        os.makedirs(os.path.dirname(self.path(inside)), exist_ok=True)
        shutil.copyfile(deb, self.path(inside))
        return self.run(["dpkg", "-i", inside], timeout=timeout)

    # --- resend-dropd ----------------------------------------------------------------------

    def make_folder(self, name):
        """A drop folder /srv/drop/NAME/{in,done,failed} owned by the service user."""
        folder = Folder(self, name)
        self.run(["install", "-d", "-o", USER, "-g", USER, "-m", "0750",
                  folder.inbox, folder.done, folder.failed])
        self.folders[name] = folder
        return folder

    def write_api_key(self, key=API_KEY):
        """The key where the unit's LoadCredential= reads it: root's only."""
        os.makedirs(os.path.dirname(self.path(API_KEY_PATH)), exist_ok=True)
        self.write_file(API_KEY_PATH, key + "\n", mode=0o600)

    def write_config(self, base_url, folders=None, **sections):
        """/etc/resend-dropd/resend-dropd.yaml: the API at base_url, the key as the unit
        passes it, the test defaults (CONFIG_DEFAULTS), `folders` (Folder objects or dicts;
        default: every folder make_folder made); keyword arguments add to or override
        top-level sections (dicts merge one level)."""
        if folders is None:
            folders = list(self.folders.values())
        config = {k: dict(v) for k, v in CONFIG_DEFAULTS.items()}
        config["api"].update({"base_url": base_url, **API_KEY_SETTINGS})
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key].update(value)
            else:
                config[key] = value
        config["folders"] = [f.config() if isinstance(f, Folder) else f for f in folders]
        self.write_file(CONFIG, to_yaml(config))
        return config

    def service(self, *properties):
        """The unit's properties (default: the ones the tests look at)."""
        return self.show(UNIT, *(properties or (
            "ActiveState", "SubState", "MainPID", "NRestarts", "Result", "StatusText")))


class Folder:
    """A drop folder in the container; paths are the container's, `host()` maps them."""

    def __init__(self, ctr, name):
        self.ctr = ctr
        self.name = name
        self.inbox = f"{DROP_ROOT}/{name}/in"
        self.done = f"{DROP_ROOT}/{name}/done"
        self.failed = f"{DROP_ROOT}/{name}/failed"
        self.processing = f"{self.inbox}/.resend-dropd"

    def config(self):
        return {"name": self.name, "inbox": self.inbox, "done": self.done,
                "failed": self.failed}

    def host(self, *parts):
        return self.ctr.path(os.path.join(*parts))

    def drop(self, name, content, owner="root"):
        """A file written under a temporary dotted name, then renamed into the inbox (from the
        host, owned by `owner`)."""
        return self.ctr.write_file(f"{self.inbox}/{name}", content, owner=owner)

    def drop_as(self, user, name, content):
        """The same, done by `user` inside the container (its umask, its process)."""
        script = 'cat >"$1/.$2.part" && mv "$1/.$2.part" "$1/$2"'
        self.ctr.run(["sh", "-c", script, "sh", self.inbox, name], user=user, input=content)

    def where(self, name):
        """Where `name` is: a list of 'inbox', 'processing', 'done', 'failed' (exactly one
        place is the contract)."""
        places = []
        for place, directory in (("inbox", self.inbox), ("processing", self.processing),
                                 ("done", self.done), ("failed", self.failed)):
            if os.path.lexists(self.host(directory, name)):
                places.append(place)
        return places

    def report(self, name, place="done"):
        """The JSON report beside a finished file, or None."""
        try:
            with open(self.host(getattr(self, place), name + ".json"), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None


def to_yaml(value, indent=0):
    """Block YAML of dicts, lists and scalars (scalars as JSON, which YAML reads the same)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {json.dumps(item)}")
        return "\n".join(lines) + ("\n" if indent == 0 else "")
    if isinstance(value, list):
        lines = []
        for item in value:
            text = to_yaml(item, indent + 2) if isinstance(item, (dict, list)) \
                else f"{pad}  {json.dumps(item)}"
            lines.append(f"{pad}- {text.lstrip()}")
        return "\n".join(lines)
    return pad + json.dumps(value)


# --- booting -------------------------------------------------------------------------------

def skip_unless_possible():
    """pytest.skip where boot() certainly cannot work (before spending time on anything)."""
    if os.geteuid() != 0:
        pytest.skip("a container needs root (mounts, systemd-nspawn)")
    for tool, package in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                          ("unshare", "util-linux"), ("setpriv", "util-linux")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing (apt-get install {package})")
    if not os.access("/usr/lib/systemd/systemd", os.X_OK):
        pytest.skip("no systemd on this host to boot in a container")


@contextlib.contextmanager
def boot(prefix="rdd"):
    """A booted container (a Container), powered off and gone afterwards. Skips, with the
    reason and nspawn's last lines, where a container cannot boot."""
    skip_unless_possible()
    _remove_stale(prefix)
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    base_dir = tempfile.mkdtemp(prefix=f"{name}-")
    rw, root = os.path.join(base_dir, "rw"), os.path.join(base_dir, "root")
    os.mkdir(rw)
    os.mkdir(root)
    log_path = os.path.join(base_dir, "nspawn.log")
    ctr = None
    try:
        with open(log_path, "wb") as log:
            nspawn = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT_SCRIPT,
                 "mount-script", rw, root, uuid.uuid4().hex, *host_enabled_units()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**ENV, "MACHINE": name}, preexec_fn=_pdeathsig)
        ctr = Container(name, base_dir, nspawn, log_path)
        _wait_booted(ctr)
        yield ctr
    finally:
        if ctr is not None:
            _shutdown(ctr)
        _remove(base_dir, root, rw)


def _wait_booted(ctr):
    deadline = time.monotonic() + BOOT_TIMEOUT
    last = "no PID 1 yet"
    while time.monotonic() < deadline:
        code = ctr.nspawn.poll()
        if code == OVERLAY_FAILED:
            pytest.skip(f"cannot mount an overlay of / for a container:\n{_tail(ctr.log_path)}")
        if code is not None:
            pytest.skip(f"the container did not boot: systemd-nspawn exited {code}:\n"
                        f"{_tail(ctr.log_path)}")
        if ctr.pid1 is None:
            ctr.pid1 = _container_pid1(ctr.nspawn.pid)
        if ctr.pid1 is not None:
            p = subprocess.run(["nsenter", "-t", str(ctr.pid1), "-a", "systemctl",
                                "is-system-running"], capture_output=True, text=True,
                               timeout=10, env=ENV, stdin=subprocess.DEVNULL)
            last = (p.stdout.strip() or p.stderr.strip())
            if last in ("running", "degraded"):
                ctr.state = last
                return
        time.sleep(0.2)
    pytest.skip(f"the container did not reach 'running' in {BOOT_TIMEOUT:g} s (last: "
                f"{last}); systemd-nspawn said:\n{_tail(ctr.log_path)}")


def _shutdown(ctr):
    """poweroff, else SIGTERM to nspawn (the same, from outside), then SIGKILL (its PID 1 has
    PR_SET_PDEATHSIG=SIGKILL from nspawn, so the container goes with it)."""
    steps = [(signal.SIGTERM, 10), (signal.SIGKILL, 10)]
    if ctr.nspawn.poll() is None and ctr.pid1 is not None:
        try:
            p = subprocess.run(["nsenter", "-t", str(ctr.pid1), "-a", "systemctl", "poweroff"],
                               capture_output=True, timeout=10, env=ENV,
                               stdin=subprocess.DEVNULL)
            if p.returncode == 0:
                steps.insert(0, (None, SHUTDOWN_TIMEOUT))
        except (OSError, subprocess.SubprocessError):
            pass
    for sig, wait in steps:
        if sig is not None and ctr.nspawn.poll() is None:
            ctr.nspawn.send_signal(sig)
        try:
            ctr.nspawn.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    if ctr.pid1 is not None:
        # nspawn waits for its PID 1; make sure, as a leftover container would hold the mounts.
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{ctr.pid1}") and time.monotonic() < deadline:
            time.sleep(0.1)


def _remove_stale(prefix):
    """The directories a killed test process left (its mounts went with its nspawn)."""
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        match = re.fullmatch(rf"{re.escape(prefix)}-(\d+)-[0-9a-f]{{6}}-\w+", entry)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            base_dir = os.path.join(tmp, entry)
            try:
                _remove(base_dir, os.path.join(base_dir, "root"), os.path.join(base_dir, "rw"))
            except ContainerError:
                pass


def _remove(base_dir, root, rw):
    # The mounts lived in nspawn's namespace only; if one is visible here, something is wrong
    # and removing the tree would go through it: leave it, loudly.
    for mount in (root, rw):
        if os.path.ismount(mount):
            raise ContainerError(f"{mount} is still mounted on the host; not removing "
                                 f"{base_dir}")
    shutil.rmtree(base_dir, ignore_errors=True)


# --- the package ---------------------------------------------------------------------------

def build_deb(out_dir, timeout=BUILD_TIMEOUT):
    """./scripts/package -o out_dir (about a minute); the .deb's path. Skips when the build
    tools are missing, as test_package.py does. $RDD_TEST_DEB, if set, is used instead (a
    package built before, to run the tests again quickly)."""
    if os.environ.get("RDD_TEST_DEB"):
        return os.environ["RDD_TEST_DEB"]
    for tool in ("dpkg-buildpackage", "dh", "lintian", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing: scripts/install-deps --tests installs it")
    # A session of its own, so that a build out of time is stopped whole (dpkg-buildpackage,
    # make, the compilers), not only the script.
    p = subprocess.Popen([os.path.join(SOURCE_DIR, "scripts/package"), "-o", str(out_dir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"scripts/package: not done after {timeout} s\n{out}\n{err}")
    finally:
        if p.poll() is None:     # interrupted
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, f"scripts/package failed:\n{out}\n{err}"
    debs = [f for f in os.listdir(out_dir) if re.fullmatch(r"resend-dropd_[^_]+_[^_]+\.deb", f)]
    assert len(debs) == 1, os.listdir(out_dir)
    return os.path.join(str(out_dir), debs[0])


def log_ids():
    """MESSAGE_ID values of src/log.h: {'FILE_DONE': '9a36...', ...}."""
    with open(os.path.join(SOURCE_DIR, "src", "log.h")) as f:
        return dict(re.findall(r'#define LOG_ID_(\w+) "([0-9a-f]{32})"', f.read()))


def host_state():
    """What the container does that must not reach the host: resend-dropd's user, package,
    files and enablement, the machine id, policy-rc.d. (Not whole files such as /etc/passwd:
    other tests may add users of their own meanwhile.)"""
    state = {}
    for path, line in (("/etc/passwd", "resend-dropd:"), ("/etc/group", "resend-dropd:"),
                       ("/var/lib/dpkg/status", "Package: resend-dropd\n")):
        with open(path) as f:
            text = f.read()
        state[f"{line.strip()} in {path}"] = text.startswith(line) or f"\n{line}" in text
    with open("/etc/machine-id") as f:
        state["/etc/machine-id"] = f.read()
    for path in ("/usr/sbin/policy-rc.d", "/etc/resend-dropd", "/var/lib/resend-dropd",
                 "/srv/drop", "/usr/sbin/resend-dropd", "/lib/systemd/system/resend-dropd.service",
                 "/etc/systemd/system/multi-user.target.wants/resend-dropd.service"):
        state[path] = os.path.lexists(path)
    return state
