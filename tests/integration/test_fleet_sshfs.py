"""Issue 19 on a shared filesystem: a fleet whose hosts see one inbox through a network
filesystem, where inotify sees nothing another host writes and locks do not reach the other
hosts, as on NFS. A real directory is exported by a throw-away sshd on 127.0.0.1 and mounted
twice with sshfs; each daemon has its own mount as its inbox, done and failed (same folder name,
same settings), and both share one PostgreSQL ledger (pg_harness.PgServer).

What sshfs gives the daemon, and what that exercises:
  - renameat2(RENAME_NOREPLACE) fails with EINVAL (FUSE passes the flag, sshfs refuses any), so
    every move, the claim and the takeover included, goes by link + unlink (OpenSSH's
    hardlink@openssh.com); replacing renames (state records) use posix-rename@openssh.com;
  - a flock taken through one mount is not seen through the other (FUSE keeps it in the local
    kernel, per mount): only the database keeps two hosts off one file;
  - inotify on a mount sees only what is done through that mount: a file dropped through the
    other mount, or straight into the exported directory, is found by the rescan (rescan_s);
  - sshfs caches names and attributes for 20 s (dcache_timeout, left at its default as a user
    would): a host may list a file that another host moved away seconds ago, and sees the size
    a file had when it was listed, however much another node has written to it since (the last
    test: NFS's attribute cache does the same for acregmin..acregmax).

The same-machine fleet (one inbox, inotify working) is test_fleet.py."""

import collections
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from daemon_harness import Folder, pipe_env, pipe_fake, read_bytes  # noqa: F401
from fleet_harness import HEARTBEAT_S, LEASE_S, csv, fleet_config, hosts_of, imported_names
from pg_harness import PgServer
from sshd_harness import SSHD, sshd  # noqa: F401
SSHFS = shutil.which("sshfs")
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")
pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and SSHFS and FUSERMOUNT),
    reason="openssh-server, sshfs or fuse3 not installed (scripts/install-deps installs them)")

TIMEOUT = 180           # every file's end, under ASan too
MOUNT_TIMEOUT = 20.0


# --- the server and the two mounts -----------------------------------------------------------

def fuse_unavailable():
    """Why FUSE cannot mount here (a sentence), or None."""
    with open("/proc/filesystems") as file:
        if not any(line.split()[-1] == "fuse" for line in file if line.strip()):
            return "the kernel has no FUSE filesystem (no 'fuse' in /proc/filesystems)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as error:
        return f"/dev/fuse cannot be opened: {error.strerror}"
    return None


def mounted(path):
    """Whether PATH is a mount point now (from /proc/self/mountinfo, without touching PATH,
    which may hang when its sshfs is stuck)."""
    with open("/proc/self/mountinfo") as file:
        return any(line.split()[4] == path for line in file)


class Sshfs:
    """One sshfs mount of the server's directory, run in the foreground (-f) so that its
    process is ours to wait for and, if need be, to kill."""

    def __init__(self, server, remote, mountpoint, log_path):
        self.mountpoint = mountpoint
        self.log_path = log_path
        user = os.environ.get("USER") or "root"
        options = ",".join([
            f"IdentityFile={server['key']}", "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null", f"port={server['port']}", "BatchMode=yes",
            "LogLevel=ERROR"])
        os.makedirs(mountpoint)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [SSHFS, f"{user}@127.0.0.1:{remote}", mountpoint, "-f", "-o", options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read().strip()

    def wait_mounted(self):
        """Until the mount is there; None, or why it is not (sshfs exited)."""
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if mounted(self.mountpoint):
                return None
            if self.process.poll() is not None:
                return f"sshfs exited with {self.process.returncode}: {self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"sshfs did not mount {self.mountpoint} within {MOUNT_TIMEOUT} s: "
                             f"{self.log()}")

    def unmount(self):
        """fusermount -u, else a lazy umount (something still holds the mount); then sshfs
        must exit. Returns whether the mount point is free."""
        for command in ([FUSERMOUNT, "-u", self.mountpoint], ["umount", "-l", self.mountpoint]):
            if not mounted(self.mountpoint):
                break
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(command, capture_output=True, timeout=20)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        return not mounted(self.mountpoint)


class Shared:
    """The exported directory with the drop folder 'box' in it, and its two mounts."""

    def __init__(self, export, mounts):
        self.export = export
        self.mounts = mounts        # [mount point of host 1, of host 2]

    def folder(self, where):
        """'box' as seen at WHERE: a mount point, or the exported directory itself."""
        return Folder(os.path.join(where, "box"), "box", {}, make=False)

    @property
    def direct(self):
        return self.folder(self.export)

    def host_dir(self, host):
        """HOST's processing directory, seen in the exported directory."""
        return os.path.join(self.direct.inbox, ".resend-dropd", "fleet", host)


@pytest.fixture
def shared(pipe_env, sshd):
    """A directory exported by sshd and mounted twice with sshfs. At the end, whatever
    happened: the daemons killed (they hold the mounts), both unmounted, sshfs gone."""
    reason = fuse_unavailable()
    if reason:
        pytest.skip(reason)
    export = tempfile.mkdtemp(prefix="rdd-export-")
    points = tempfile.mkdtemp(prefix="rdd-sshfs-")
    for sub in ("in", "done", "failed"):
        os.makedirs(os.path.join(export, "box", sub))
    mounts = []
    try:
        for index in (1, 2):
            mount = Sshfs(sshd, export, os.path.join(points, f"m{index}"),
                          os.path.join(points, f"sshfs-{index}.log"))
            mounts.append(mount)
            why = mount.wait_mounted()
            # FUSE refused (no device, no permission in this container): nothing to test
            # here. Anything else (sshd refusing the key, say) is this test's fault.
            if why and ("fuse" in why.lower()):
                pytest.skip(f"FUSE cannot mount here: {why}")
            assert not why, f"sshfs could not mount {mount.mountpoint}: {why}"
        yield Shared(export, [m.mountpoint for m in mounts])
    finally:
        pipe_env.close()
        free = [mount.unmount() for mount in mounts]
        if all(free):
            shutil.rmtree(points, ignore_errors=True)
        shutil.rmtree(export, ignore_errors=True)
        stuck = [m.mountpoint for m in mounts if mounted(m.mountpoint)]
        assert not stuck, f"still mounted after fusermount -u and umount -l: {stuck}"


@pytest.fixture
def pg():
    with PgServer() as server:
        yield server


def complaints(daemon):
    """The daemon's warnings and errors, but for the fleet's news of a host taken over."""
    return [line for line in daemon.log_lines(r"^\S+ (warning|error): ")
            if "fleet: host '" not in line]


def assert_nothing_left(shared, hosts):
    direct = shared.direct
    assert [n for n in direct.inbox_entries() if not n.startswith(".")] == []
    assert direct.files("failed") == []
    for host in hosts:
        own = shared.host_dir(host)
        assert not os.path.exists(own) or os.listdir(own) == [], (host, os.listdir(own))


# --- the tests -------------------------------------------------------------------------------

def test_two_hosts_on_two_sshfs_mounts_import_each_file_once(pipe_env, pg, shared):
    """100 files, a third dropped through each mount and a third straight into the exported
    directory (seen by no inotify): every file is imported exactly once and ends in done
    exactly once, nothing stays in the inbox or in a processing directory, and both hosts
    did part of the work."""
    env = pipe_env
    conninfo = pg.new_database()
    hosts = ["h1", "h2"]
    seen_by = {host: shared.folder(mount) for host, mount in zip(hosts, shared.mounts)}
    daemons = [env.start(fleet_config(env, conninfo, [seen_by[host]], host)) for host in hosts]
    env.wait_for(lambda: all("fleet: 2 hosts alive" in d.log() for d in daemons),
                 "both hosts seeing two alive", timeout=30)

    routes = {"mount 1": seen_by["h1"], "mount 2": seen_by["h2"], "export": shared.direct}
    names = [f"s{i:03}.csv" for i in range(100)]
    route_of = {name: list(routes)[i % 3] for i, name in enumerate(names)}
    started = time.monotonic()
    for name in names:
        routes[route_of[name]].drop(name, csv(name))
    env.wait_outcomes(shared.direct, done=100, timeout=TIMEOUT)
    took_s = time.monotonic() - started
    rows = hosts_of(pg, conninfo)
    for daemon in daemons:
        daemon.stop()

    counts = imported_names(env)
    assert sorted(counts) == sorted(names), set(names) ^ set(counts)
    assert set(counts.values()) == {1}, {n: c for n, c in counts.items() if c != 1}
    # Exactly once in done: under its own name (no second copy, no timestamped variant).
    assert shared.direct.files("done") == names
    assert sorted(shared.direct.report_names("done")) == [n + ".json" for n in names]
    assert_nothing_left(shared, hosts)

    assert set(rows) == set(names), set(rows) ^ set(names)
    assert all(status == "done" for _, status in rows.values()), rows
    per_host = collections.Counter(host for host, _ in rows.values())
    by_route = collections.Counter((route_of[name], host) for name, (host, _) in rows.items())
    print(f"100 files in {took_s:.1f} s; per host: {dict(sorted(per_host.items()))}; "
          f"(route, host): {dict(sorted(by_route.items()))}")
    assert set(per_host) == set(hosts), per_host
    # A clean stop with nothing in processing leaves the fleet.
    assert pg.sql(conninfo, "SELECT count(*) FROM hosts") == [("0",)]
    assert pg.sql(conninfo, "SELECT count(*) FROM claims") == [("0",)]
    for daemon in daemons:
        assert complaints(daemon) == [], "\n".join(complaints(daemon))


def test_a_host_killed_on_sshfs_is_taken_over_by_the_other(pipe_env, pg, shared):
    """kill -9 of one host while the fake holds two of its uploads, the other host working
    beside it on its own mount: once the lease ends the survivor moves the victim's files
    (link + unlink on sshfs) into its own directory and finishes them; none lost, none
    imported twice (the held uploads reached the fake after the kill: adopted)."""
    env = pipe_env
    conninfo = pg.new_database()
    env.fake.configure(import_seconds=0.5)
    victim_box, survivor_box = (shared.folder(mount) for mount in shared.mounts)
    api = {"max_in_flight": 2}
    victim = env.start(fleet_config(env, conninfo, [victim_box], "victim", api=api))
    env.wait_for(lambda: "fleet: joined as host" in victim.log(), "victim joined", timeout=30)
    env.fake.faults([{"delay": 6, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 2}])
    # Distinct row counts: the list endpoint can tell each file's import from the others'
    # (with equal counts, reconciliation finds several candidates and uploads, saying so).
    names = [f"k{i:02}.csv" for i in range(16)]
    victims, survivors = names[:12], names[12:]
    for i, name in enumerate(victims):
        victim_box.drop(name, csv(name, rows=3 + i))
    own = shared.host_dir("victim")
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 2, "two uploads held")
    env.wait_for(lambda: len([n for n in os.listdir(own) if n.endswith(".csv")]) >= 4,
                 "the victim's files claimed", timeout=30)
    # The survivor joins while the victim holds its files, and takes files of its own (the
    # victim, with another host alive, holds more than a host's share and takes no more).
    survivor = env.start(fleet_config(env, conninfo, [survivor_box], "survivor", api=api))
    env.wait_for(lambda: "fleet: 2 hosts alive" in survivor.log(), "the survivor joined",
                 timeout=30)
    for i, name in enumerate(survivors, start=len(victims)):
        survivor_box.drop(name, csv(name, rows=3 + i))
    env.wait_for(lambda: not set(survivors) & set(shared.direct.inbox_entries()),
                 "the survivor's files claimed", timeout=30)
    held = sorted(n for n in os.listdir(own) if not n.startswith("."))
    assert env.fake.stats()["current_uploads"] >= 2, "the held uploads ended before the kill"
    victim.kill()
    killed_at = time.monotonic()

    env.wait_for(lambda: "is taken over" in survivor.log(), "the takeover",
                 timeout=LEASE_S + 30)
    took_s = time.monotonic() - killed_at
    env.wait_outcomes(shared.direct, done=len(names), timeout=TIMEOUT)
    survivor.stop()

    print(f"takeover {took_s:.1f} s after the kill (lease {LEASE_S} s, heartbeat "
          f"{HEARTBEAT_S} s); the victim held {len(held)} files: {held}")
    print("\n".join(survivor.log_lines("taken over|stopped renewing")))
    assert took_s <= LEASE_S + 3 * HEARTBEAT_S + 5, took_s
    counts = imported_names(env)
    assert sorted(counts) == sorted(names)
    assert set(counts.values()) == {1}, {n: c for n, c in counts.items() if c != 1}
    assert shared.direct.files("done") == names
    assert_nothing_left(shared, ["survivor"])
    assert not os.path.exists(own), os.listdir(own)
    assert set(held) <= set(victims), held
    assert survivor.log_lines(f"host 'victim' is taken over: {len(held)} files moved here")
    # The two uploads the fake held reached it after the kill: adopted, not sent again.
    adopted = [r for r in shared.direct.reports("done").values()
               if (r.get("reconciled") or {}).get("outcome") == "adopted"]
    assert len(adopted) == 2, [r.get("reconciled") for r in shared.direct.reports("done").values()]
    rows = hosts_of(pg, conninfo)
    assert set(rows) == set(names)
    assert all(status == "done" for _, status in rows.values()), rows
    assert {host for host, _ in rows.values()} <= {"victim", "survivor"}, rows
    assert {rows[name][0] for name in survivors} == {"survivor"}, rows
    assert pg.sql(conninfo, "SELECT host_id FROM hosts") == []
    # One row a file, done: a taker's own file that ends while it takes over is not resumed
    # a second time (as "cannot be opened") from a listing of its directory.
    assert pg.sql(conninfo, "SELECT count(*), count(*) FILTER (WHERE status = 'done') "
                            "FROM files") == [(str(len(rows)), str(len(rows)))]
    assert complaints(survivor) == [], "\n".join(complaints(survivor))


def test_a_file_another_node_is_writing_is_taken_only_when_complete(pipe_env, pg, shared):
    """A file written line by line straight into the exported directory, as another node's
    SFTP server would: no mount's inotify sees it and no host's kernel knows the writer (the
    lease check sees local writers only), so only its size and modification time can tell that
    it is still growing. With the daemon's default settle_ms it must be taken once complete,
    by either host, whole."""
    env = pipe_env
    conninfo = pg.new_database()
    write_s = 12
    path = os.path.join(shared.direct.inbox, "growing.csv")
    content = bytearray(b"email,first_name\n")
    written = threading.Event()

    def writer():
        with open(path, "wb") as file:
            rows = 0
            started = time.monotonic()
            while time.monotonic() - started < write_s:
                line = b"grower-%06d@example.com,G%d\n" % (rows, rows)
                file.write(line if rows else bytes(content) + line)
                file.flush()
                content.extend(line)
                rows += 1
                time.sleep(0.05)
        written.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    # The hosts start while it is being written, so that their first scan lists it at once
    # (later, sshfs's 20 s cache of names would hide a new file that long).
    env.wait_for(lambda: os.path.exists(path), "the writer's first bytes", timeout=10)
    boxes = [Folder(os.path.join(mount, "box"), "box", {"settle_ms": 2000}, make=False)
             for mount in shared.mounts]
    daemons = [env.start(fleet_config(env, conninfo, [box], host))
               for host, box in zip(("h1", "h2"), boxes)]
    thread.join(write_s + 10)
    assert written.is_set(), "the writer did not finish"
    env.wait_outcomes(shared.direct, done=1, timeout=60)
    for daemon in daemons:
        daemon.stop()

    [upload] = env.uploads()
    sent, whole = upload["file"]["size"], len(content)
    assert sent == whole, f"claimed while still being written: {sent} of {whole} bytes uploaded"
    assert upload["file"]["sha256"] == hashlib.sha256(bytes(content)).hexdigest()
    assert shared.direct.files("done") == ["growing.csv"]
    assert read_bytes(os.path.join(shared.direct.done, "growing.csv")) == content
