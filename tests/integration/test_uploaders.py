"""Uploaders who are not the service user: the README's "Giving uploaders access", proved with
real accounts.

Each test makes its own group, service user and uploader (useradd, random names), a tree under
/srv (sshd's ChrootDirectory refuses anything below the world-writable /tmp), runs the README's
commands on them with the names and paths swapped, and runs the daemon as the service user the
way its unit does (its own uid and groups, CAP_LEASE only, umask 0027). The uploader writes as
itself: locally with umask 077, or over SFTP through a throw-away sshd with the README's Match
block. Everything (processes, mounts, users, groups, the tree) is undone at teardown, even when
the test fails.
"""

import contextlib
import grp
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from daemon_harness import (SOURCE_DIR, Daemon, Folder, Harness, binary_path,  # noqa: F401
                            daemon_environment, free_port, pipe_fake, read_bytes, tail,
                            wait_port)

SSHD = "/usr/sbin/sshd"
PYTHON = "/usr/bin/python3"
TOOLS = ("useradd", "usermod", "userdel", "groupadd", "groupdel", "setpriv", "setfacl",
         "getfacl", "install", "ssh-keygen", "sftp", "scp", "mount", "umount")
MISSING = [tool for tool in TOOLS if not shutil.which(tool)] + \
          ([] if os.access(SSHD, os.X_OK) else [SSHD])

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="makes users and groups and runs sshd: needs "
                                                 "root"),
    pytest.mark.skipif(bool(MISSING), reason=f"missing {', '.join(MISSING)} (passwd, util-linux, "
                                             "acl, openssh-server and openssh-client)"),
]

COMMAND_TIMEOUT = 30.0
SFTP_TIMEOUT = 60.0

# The inbox as "As a service" made it before "Giving uploaders access" existed (issue 16):
# the control case.
README_SERVICE_DIRS = ("install -d -o resend-dropd -g resend-dropd -m 0750 "
                       "/srv/drop/newsletter/in /srv/drop/newsletter/done "
                       "/srv/drop/newsletter/failed")

# --- the README's commands, word for word (test_the_readme_has_these_commands checks) --------

RECIPE_GROUP = [
    "groupadd dropbox",
    "usermod -aG dropbox resend-dropd",
    "useradd -m -s /usr/sbin/nologin -G dropbox acme",
]
DEFAULT_ACL = "setfacl -d -m u::rwX,g::rX,o::- /srv/drop/newsletter/in"
PROCESSING_DIR = ("install -d -o resend-dropd -g resend-dropd -m 0700 "
                  "/srv/drop/newsletter/in/.resend-dropd")
RECIPE_DIRS = [
    "install -d -m 0755 /srv/drop/newsletter",
    "install -d -o resend-dropd -g dropbox -m 3770 /srv/drop/newsletter/in",
    DEFAULT_ACL,
    PROCESSING_DIR,
    "install -d -o resend-dropd -g resend-dropd -m 0750 /srv/drop/newsletter/done "
    "/srv/drop/newsletter/failed",
]
RECIPE = RECIPE_GROUP + RECIPE_DIRS

SSHD_MATCH = """\
Match Group dropbox
    ChrootDirectory /srv/drop/newsletter
    ForceCommand internal-sftp -d /in
    AllowTcpForwarding no
    X11Forwarding no
    PermitTTY no
"""

SFTP_BATCH = """\
put contacts.csv contacts.csv.part
chmod 640 contacts.csv.part
rename contacts.csv.part contacts.csv
"""

BINDFS = [
    "install -d -m 0755 /srv/sftp/newsletter/in",
    "echo '/srv/drop/newsletter/in /srv/sftp/newsletter/in fuse.bindfs "
    "create-with-perms=u=rwD:g=rD:o=,chmod-ignore,allow_other 0 0' >> /etc/fstab",
    "mount /srv/sftp/newsletter/in",
]
BINDFS_CHROOT = "ChrootDirectory /srv/sftp/newsletter"

CSV = "email,first_name\nada@example.com,Ada\ngrace@example.com,Grace\n"


# --- running things --------------------------------------------------------------------------

def run(argv, timeout=COMMAND_TIMEOUT, check=True, **kwargs):
    """ARGV to its end (bounded); its CompletedProcess. CHECK: a non-zero exit fails the test
    with what it printed."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{shlex.join(argv)}: still running after {timeout} s") from None
    if check:
        assert done.returncode == 0, \
            f"{shlex.join(argv)} exited {done.returncode}: {done.stdout}{done.stderr}"
    return done


def run_account_tool(argv):
    """useradd and friends refuse while another one holds /etc/passwd's lock (other sessions
    on this machine make users too): wait for it, bounded."""
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while True:
        done = run(argv, check=False)
        if done.returncode == 0 or "lock" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(0.2)




def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# Run as the uploader: each step is one file-system call, and its errno name (or "ok") is
# printed, so that a test can say what the uploader could and could not do.
UPLOADER_STEPS = r"""
import errno, json, os, sys
out = []
for step in json.loads(sys.argv[1]):
    op, args = step[0], step[1:]
    try:
        if op == "drop":              # write NAME.part with MODE, rename it to NAME
            inbox, name, data, mode = args
            part = os.path.join(inbox, name + ".part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, int(mode, 8))
            try:
                os.write(fd, data.encode())
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.rename(part, os.path.join(inbox, name))
            out.append({"mode": oct(st.st_mode & 0o7777), "gid": st.st_gid})
        elif op == "create":
            os.close(os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            out.append("ok")
        elif op == "mkdir":
            os.mkdir(args[0])
            out.append("ok")
        elif op == "listdir":
            os.listdir(args[0])
            out.append("ok")
        elif op == "read":
            with open(args[0], "rb") as f:
                f.read(1)
            out.append("ok")
        elif op == "rename":
            os.rename(args[0], args[1])
            out.append("ok")
        else:
            raise SystemExit("unknown step " + op)
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(json.dumps(out))
"""


class RecipeFolder(Folder):
    """A Folder whose directories are made by the README's commands, not by the harness."""

    def __init__(self, root, name, settings):
        super().__init__(root, name, settings, make=False)


class ServiceDaemon(Daemon):
    """resend-dropd as the service user, as its unit runs it: User=, the user's groups from
    the group database, CAP_LEASE only (AmbientCapabilities= and CapabilityBoundingSet=),
    UMask=0027."""

    def __init__(self, binary, config, args, env, log_dir, index, user):
        self.binary = binary
        self.config = config
        self.args = list(args)
        self.stderr_path = os.path.join(log_dir, f"daemon-{index}.stderr")
        self.stdout_path = os.path.join(log_dir, f"daemon-{index}.stdout")
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                   "--inh-caps=-all,+lease", "--ambient-caps=-all,+lease",
                   "--bounding-set=-all,+lease", binary, "-c", config, *self.args]
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=err, env=env, umask=0o027)
        self.started = time.monotonic()


class Site:
    """One test's machine set-up: names, the tree under /srv, the accounts, the daemon, sshd
    and mounts; close() undoes all of it, whatever happened before."""

    def __init__(self, fake):
        suffix = secrets.token_hex(4)
        self.group = f"rddbox-{suffix}"
        self.service = f"rddsvc-{suffix}"
        self.uploader = f"rddup-{suffix}"
        self.users = []          # made by this test: deleted at close
        self.groups = []
        self.mounts = []
        self.sshd = None
        self.sshd_log = None
        # sshd's chroot rule: every directory above the chroot is root's and writable by no
        # one else; /srv is, /tmp is not.
        self.root = tempfile.mkdtemp(prefix="rdd-uploaders-", dir="/srv")
        try:
            os.chmod(self.root, 0o755)
            self.harness = Harness(self.root, fake)
            # The service user runs the binary: a copy in the tree (the build tree may be
            # somewhere it cannot reach).
            self.binary = os.path.join(self.root, "resend-dropd")
            shutil.copy2(os.path.abspath(binary_path()), self.binary)
            self.client = os.path.join(self.root, "client")   # the SFTP client's side
            os.mkdir(self.client, 0o700)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.newsletter = RecipeFolder(self.path("/srv/drop/newsletter"), "newsletter", {})

    # --- names and paths ---

    def path(self, readme_path):
        """A README path (/srv/...) in this test's tree."""
        assert readme_path.startswith("/srv/"), readme_path
        return os.path.join(self.root, readme_path[len("/srv/"):])

    def words(self, readme_command):
        """A README command line with this test's names and paths, as argv."""
        names = {"dropbox": self.group, "resend-dropd": self.service, "acme": self.uploader}
        argv = []
        for word in shlex.split(readme_command):
            word = names.get(word, word)
            if word.startswith("/srv/"):
                word = self.path(word)
            argv.append(word)
        return argv

    def text(self, readme_text):
        """README text (sshd_config, fstab lines) with this test's names and paths."""
        out = re.sub(r"/srv/(\S+)", lambda m: self.path(m.group(0)), readme_text)
        return re.sub(r"\bdropbox\b", self.group, out)

    # --- accounts and directories ---

    def run_readme(self, command):
        argv = self.words(command)
        done = run_account_tool(argv) if argv[0] in ("useradd", "usermod", "groupadd") \
            else run(argv, check=False, umask=0o022)   # root's usual umask for install -d
        assert done.returncode == 0, \
            f"{command!r} as {shlex.join(argv)} exited {done.returncode}: {done.stderr}"
        if argv[0] == "groupadd":
            self.groups.append(argv[-1])
        elif argv[0] == "useradd":
            self.users.append(argv[-1])

    def make_service_user(self):
        """What the package's sysusers.d line makes: a system user with its own group."""
        done = run_account_tool(["useradd", "--system", "--no-create-home",
                                 "--shell", "/usr/sbin/nologin", self.service])
        assert done.returncode == 0, done.stderr
        self.users.append(self.service)

    def make_uploader(self, groups=()):
        """An uploader outside the README's recipe (for the cases without it)."""
        argv = ["useradd", "-m", "-s", "/usr/sbin/nologin", self.uploader]
        if groups:
            argv[1:1] = ["-G", ",".join(groups)]
        done = run_account_tool(argv)
        assert done.returncode == 0, done.stderr
        self.users.append(self.uploader)

    def recipe(self, skip=()):
        """The README's commands, less those named in SKIP (for the control cases)."""
        for command in RECIPE:
            if command not in skip:
                self.run_readme(command)

    def state_dir(self):
        path = os.path.join(self.root, "state")
        run(["install", "-d", "-o", self.service, "-g", self.service, "-m", "0750", path])
        return path

    # --- the daemon ---

    def start(self, folders, check_started=True):
        state = self.state_dir()
        config = self.harness.config(folders, state_dir=state,
                                     control={"socket": os.path.join(state, "control.sock")})
        env = self.harness
        daemon = ServiceDaemon(self.binary, config, [], daemon_environment(), env.log_dir,
                               len(env.daemons), self.service)
        env.daemons.append(daemon)
        if not check_started:
            return daemon
        env.wait_for(lambda: "started" in daemon.log() or not daemon.alive(),
                     "the daemon's start-up line", timeout=20)
        assert daemon.alive(), f"resend-dropd exited at start with {daemon.returncode}\n" \
                               f"{tail(daemon.log())}"
        return daemon

    # --- the uploader ---

    def as_uploader(self, steps, umask=0o077):
        """Run STEPS (see UPLOADER_STEPS) as the uploader, with its groups and no
        capabilities; the result of each."""
        done = run(["setpriv", f"--reuid={self.uploader}", f"--regid={self.uploader}",
                    "--init-groups", "--inh-caps=-all", "--bounding-set=-all",
                    PYTHON, "-I", "-c", UPLOADER_STEPS, json.dumps(steps)],
                   umask=umask, cwd="/")
        return json.loads(done.stdout)

    # --- sshd and the SFTP client ---

    def start_sshd(self, match_block):
        """sshd on 127.0.0.1 with the uploader's key in ~/.ssh/authorized_keys and MATCH_BLOCK
        (README text) at the end of its configuration, as in /etc/ssh/sshd_config."""
        keys = os.path.join(self.root, "sshd")
        os.mkdir(keys, 0o700)
        for key in ("host", "client"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(keys, key)])
        home = os.path.expanduser(f"~{self.uploader}")
        dot_ssh = os.path.join(home, ".ssh")
        run(["install", "-d", "-o", self.uploader, "-g", self.uploader, "-m", "0700", dot_ssh])
        run(["install", "-o", self.uploader, "-g", self.uploader, "-m", "0600",
             os.path.join(keys, "client.pub"), os.path.join(dot_ssh, "authorized_keys")])
        self.key = os.path.join(keys, "client")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # privilege separation directory
        self.port = free_port()
        config = os.path.join(keys, "sshd_config")
        # Debian's defaults where they matter: UsePAM yes (a useradd account is locked, "!",
        # which sshd alone refuses even with a key; PAM does not), StrictModes yes.
        with open(config, "w", encoding="utf-8") as file:
            file.write(f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {keys}/host\n"
                       f"PidFile {keys}/sshd.pid\nUsePAM yes\nPasswordAuthentication no\n"
                       "KbdInteractiveAuthentication no\nPermitRootLogin no\n"
                       "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n\n"
                       + self.text(match_block))
        run([SSHD, "-t", "-f", config])
        self.sshd_log = os.path.join(keys, "sshd.log")
        with open(self.sshd_log, "wb") as log:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_port(self.port, what="sshd")

    def _ssh_options(self):
        return ["-i", self.key, "-P", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR"]

    def sftp(self, batch):
        """OpenSSH's sftp client as the uploader (from root's side of the machine, in the
        client directory), running BATCH; its CompletedProcess (not checked)."""
        path = os.path.join(self.client, "batch")
        with open(path, "w", encoding="utf-8") as file:
            file.write(batch)
        return run(["sftp", "-b", path, *self._ssh_options(), f"{self.uploader}@127.0.0.1"],
                   timeout=SFTP_TIMEOUT, check=False, cwd=self.client)

    def scp(self, local, remote):
        """OpenSSH's scp (the SFTP protocol, its default since 9.0), as sftp() does."""
        return run(["scp", *self._ssh_options(), local, f"{self.uploader}@127.0.0.1:{remote}"],
                   timeout=SFTP_TIMEOUT, check=False, cwd=self.client)

    def local_file(self, name, content, mode):
        path = os.path.join(self.client, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(content)
        os.chmod(path, mode)
        return path

    def sshd_diagnostics(self):
        if not self.sshd_log:
            return ""
        with open(self.sshd_log, encoding="utf-8", errors="replace") as file:
            return "--- sshd ---\n" + tail(file.read())

    # --- teardown ---

    def _stop_sshd(self):
        if self.sshd and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(10)

    def _kill_our_users_processes(self):
        """Whatever still runs as the test's users was started by this test (the names are
        its own): an sftp session, a daemon that outlived its kill."""
        for _ in range(50):
            pids = self._pids_of_our_users()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        raise AssertionError(f"processes {pids} of {self.users} did not end")

    def _unmount(self):
        for mount in reversed(self.mounts):
            if os.path.ismount(mount) and run(["umount", mount], check=False).returncode != 0:
                run(["umount", "-l", mount])

    def _delete_accounts(self):
        failures = []
        for user in reversed(self.users):
            done = run_account_tool(["userdel", "-r", user])
            # -r on a user without a home or mail spool says so and exits 12: it is deleted.
            if done.returncode not in (0, 12):
                failures.append(f"userdel {user}: {done.stderr.strip()}")
        for group in self.groups:
            done = run_account_tool(["groupdel", group])
            if done.returncode != 0:
                failures.append(f"groupdel {group}: {done.stderr.strip()}")
        assert not failures, "; ".join(failures)

    def _pids_of_our_users(self):
        uids = set()
        for user in self.users:
            with contextlib.suppress(KeyError):
                uids.add(str(pwd.getpwnam(user).pw_uid))
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = {}
            with contextlib.suppress(OSError), open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            # A zombie has ended already (its parent reaps it); Uid: real, effective, saved, fs.
            if fields and not fields["State"].split()[0] == "Z" \
                    and set(fields["Uid"].split()) & uids:
                pids.append(int(entry))
        return pids

    def close(self):
        """Each step is tried whatever the steps before it did; what failed is said at the
        end."""
        errors = []
        for step in (self.harness.close, self._stop_sshd, self._kill_our_users_processes,
                     self._unmount, self._delete_accounts):
            try:
                step()
            except Exception as error:  # noqa: BLE001 (said below, after every step)
                errors.append(f"{step.__name__}: {error}")
        shutil.rmtree(self.root, ignore_errors=True)
        assert not os.path.exists(self.root), f"{self.root} is still there"
        assert not errors, "teardown: " + "; ".join(errors)


@pytest.fixture
def site(pipe_fake):
    binary_path()   # fails the test before anything is made
    made = Site(pipe_fake)
    try:
        yield made
    finally:
        for index, daemon in enumerate(made.harness.daemons):
            print(f"=== daemon {index} -> exit {daemon.returncode} ===\n{tail(daemon.log(), 80)}")
        print(made.sshd_diagnostics())
        made.close()


# --- the recipe ------------------------------------------------------------------------------

def test_a_local_uploader_with_umask_077_is_imported(site):
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    daemon = site.start([news])

    # The service user's private directory in a setgid inbox with a default ACL.
    proc = os.stat(news.processing)
    assert proc.st_uid == pwd.getpwnam(site.service).pw_uid
    assert stat.S_IMODE(proc.st_mode) == 0o700, oct(proc.st_mode)

    [written] = site.as_uploader([["drop", news.inbox, "contacts.csv", CSV, "666"]])
    # umask 077 would have made it 0600: the default ACL makes it 0640, group dropbox.
    assert written == {"mode": "0o640", "gid": grp.getgrnam(site.group).gr_gid}

    site.harness.wait_outcomes(news, done=1)
    report = news.report("done", "contacts.csv")
    assert report["import"]["status"] == "completed", report
    [upload] = site.harness.uploads()
    assert upload["file"]["size"] == len(CSV)
    done = os.path.join(news.done, "contacts.csv")
    assert read_bytes(done) == CSV.encode()
    assert mode_of(done) == 0o640
    daemon.stop()


def test_the_uploader_cannot_reach_done_failed_or_the_processing_directory(site):
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    daemon = site.start([news])
    site.as_uploader([["drop", news.inbox, "contacts.csv", CSV, "666"],
                      ["drop", news.inbox, "broken.csv", "name\nAda\n", "666"]])
    site.harness.wait_outcomes(news, done=1, failed=1)

    results = site.as_uploader([
        ["listdir", news.done], ["read", os.path.join(news.done, "contacts.csv")],
        ["read", os.path.join(news.done, "contacts.csv.json")],
        ["listdir", news.failed], ["read", os.path.join(news.failed, "broken.csv.json")],
        ["listdir", news.processing],
        # The sticky bit: the daemon's directory cannot be moved away, nor another's file.
        ["rename", news.processing, os.path.join(news.inbox, ".elsewhere")],
        ["mkdir", news.processing],
        ["create", os.path.join(news.inbox, "mine.csv.part")],   # the inbox is writable
    ])
    assert results == ["EACCES"] * 6 + ["EPERM", "EEXIST", "ok"], results
    assert os.path.isdir(news.processing)
    daemon.stop()


def test_the_daemon_makes_its_processing_directory_private_in_the_inbox(site):
    """Without the README's line for it, the daemon makes .resend-dropd itself: it inherits
    the inbox's group, setgid bit and default ACL, and the daemon makes it 0700 (which drops
    the setgid bit); files are imported as with the line."""
    site.make_service_user()
    site.recipe(skip=[PROCESSING_DIR])
    news = site.newsletter
    assert not os.path.exists(news.processing)
    daemon = site.start([news])
    st = os.stat(news.processing)
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam(site.service).pw_uid,
                                      grp.getgrnam(site.group).gr_gid)
    assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    acl = run(["getfacl", "-cp", news.processing]).stdout.split()
    assert "default:group::r-x" in acl, acl
    site.as_uploader([["drop", news.inbox, "contacts.csv", CSV, "666"]])
    site.harness.wait_outcomes(news, done=1)
    daemon.stop()


def test_an_uploader_who_makes_the_processing_directory_first_leaves_the_folder_unserved(site):
    """Why the README makes .resend-dropd: an uploader can take the name in a new inbox, and
    the daemon then cannot serve the folder (it says whose the directory is, and tries again)
    until root removes it."""
    site.make_service_user()
    site.recipe(skip=[PROCESSING_DIR])
    news = site.newsletter
    assert site.as_uploader([["mkdir", news.processing]]) == ["ok"]
    daemon = site.start([news], check_started=False)
    site.harness.wait_for(lambda: daemon.log_lines("the folder cannot be served"),
                          "the folder said unavailable", timeout=20)
    assert daemon.alive(), daemon.log()
    [line] = daemon.log_lines("the folder cannot be served")
    uid = os.stat(news.processing).st_uid
    assert (f"cannot set up the processing directory '{news.processing}': it belongs to uid "
            f"{uid}, not to the daemon's uid") in line, line
    daemon.stop()


def test_an_sftp_upload_of_a_0600_file_is_imported_when_the_client_sets_0640(site):
    """OpenSSH's sftp sends the local file's mode (0600); the README's batch makes it 0640
    before the final name appears."""
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    daemon = site.start([news])
    site.start_sshd(SSHD_MATCH)
    site.local_file("contacts.csv", CSV, 0o600)

    done = site.sftp(SFTP_BATCH)
    assert done.returncode == 0, done.stdout + done.stderr + site.sshd_diagnostics()
    site.harness.wait_outcomes(news, done=1)
    path = os.path.join(news.done, "contacts.csv")
    assert read_bytes(path) == CSV.encode()
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == pwd.getpwnam(site.uploader).pw_uid
    assert st.st_gid == grp.getgrnam(site.group).gr_gid
    daemon.stop()


def test_bindfs_forces_0640_on_every_sftp_upload(site):
    """The server-side way: the uploaders' chroot holds a bindfs view of the inbox that makes
    every new file 0640 and ignores chmod, so a plain `put`, a `put -p` (which sets the mode
    again at the end) and an scp of a 0600 file are imported."""
    if not shutil.which("bindfs"):
        pytest.skip("bindfs is not installed (apt install bindfs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: FUSE is not available here")
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    run(site.words(BINDFS[0]), umask=0o022)
    # The README appends to /etc/fstab; here the same line goes to a file of the test's own,
    # which mount reads instead (-T).
    line = shlex.split(BINDFS[1])[1]
    fstab = os.path.join(site.root, "fstab")
    with open(fstab, "w", encoding="utf-8") as file:
        file.write(site.text(line) + "\n")
    mount_point = site.path(shlex.split(BINDFS[2])[1])
    site.mounts.append(mount_point)
    run(["mount", "-T", fstab, mount_point])
    daemon = site.start([news])
    site.start_sshd(SSHD_MATCH.replace("ChrootDirectory /srv/drop/newsletter", BINDFS_CHROOT))
    site.local_file("contacts.csv", CSV, 0o600)
    site.local_file("more.csv", CSV.replace("ada@", "ada2@"), 0o600)
    site.local_file("copied.csv", CSV.replace("ada@", "ada3@"), 0o600)

    done = site.sftp("put contacts.csv\nput -p more.csv\n")
    assert done.returncode == 0, done.stdout + done.stderr + site.sshd_diagnostics()
    done = site.scp("copied.csv", "copied.csv")
    assert done.returncode == 0, done.stdout + done.stderr + site.sshd_diagnostics()
    site.harness.wait_outcomes(news, done=3)
    for name in ("contacts.csv", "more.csv", "copied.csv"):
        assert mode_of(os.path.join(news.done, name)) == 0o640, name
    daemon.stop()


# --- the cases the recipe is for: what happens without it ------------------------------------

def assert_failed_unreadable(site, folder, name, count=1):
    """NAME went to failed (the COUNTth file there), unread: the report's error says
    Permission denied (whatever else it says), and no request was sent for it."""
    site.harness.wait_outcomes(folder, failed=count)
    report = folder.report("failed", name)
    assert report["error"] is not None, report
    assert "Permission denied" in report["error"]["message"], report["error"]
    assert site.harness.uploads() == []
    return report


def test_a_0600_sftp_upload_is_unreadable_for_the_service_and_fails(site):
    """The recipe without a way to force the mode: OpenSSH's sftp and scp send 0600, a mode
    given at creation caps the default ACL's group bits, and the service cannot read the
    file."""
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    daemon = site.start([news])
    site.start_sshd(SSHD_MATCH)
    site.local_file("contacts.csv", CSV, 0o600)

    done = site.sftp("put contacts.csv\n")
    assert done.returncode == 0, done.stdout + done.stderr + site.sshd_diagnostics()
    report = assert_failed_unreadable(site, news, "contacts.csv")
    print("failed report's error:", json.dumps(report["error"]))
    assert mode_of(os.path.join(news.failed, "contacts.csv")) == 0o600
    # scp too.
    done = site.scp("contacts.csv", "copied.csv")
    assert done.returncode == 0, done.stdout + done.stderr + site.sshd_diagnostics()
    assert_failed_unreadable(site, news, "copied.csv", count=2)
    assert mode_of(os.path.join(news.failed, "copied.csv")) == 0o600
    daemon.stop()


def test_without_the_default_acl_umask_077_makes_files_unreadable(site):
    site.make_service_user()
    site.recipe(skip=[DEFAULT_ACL])
    news = site.newsletter
    daemon = site.start([news])
    [written] = site.as_uploader([["drop", news.inbox, "contacts.csv", CSV, "666"]])
    assert written["mode"] == "0o600"
    assert_failed_unreadable(site, news, "contacts.csv")
    daemon.stop()


def test_without_the_setgid_bit_files_get_the_uploaders_group_and_fail(site):
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    run(["chmod", "g-s", news.inbox])
    daemon = site.start([news])
    [written] = site.as_uploader([["drop", news.inbox, "contacts.csv", CSV, "666"]])
    assert written == {"mode": "0o640", "gid": pwd.getpwnam(site.uploader).pw_gid}
    assert_failed_unreadable(site, news, "contacts.csv")
    daemon.stop()


def test_without_the_sticky_bit_an_uploader_can_move_the_daemons_directory(site):
    site.make_service_user()
    site.recipe()
    news = site.newsletter
    run(["chmod", "o-t", news.inbox])
    moved = os.path.join(news.inbox, ".elsewhere")
    assert site.as_uploader([["rename", news.processing, moved]]) == ["ok"]
    assert os.path.isdir(moved) and not os.path.exists(news.processing)


def test_an_uploader_cannot_write_to_an_inbox_made_as_as_a_service_says(site):
    """The README's "As a service" inbox (0750, the service user's): even an uploader in a
    group with the service user cannot create a file there."""
    site.make_service_user()
    site.run_readme(RECIPE_GROUP[0])
    site.run_readme(RECIPE_GROUP[1])
    site.make_uploader(groups=[site.group])
    site.run_readme(README_SERVICE_DIRS)
    news = site.newsletter
    daemon = site.start([news])
    results = site.as_uploader([["create", os.path.join(news.inbox, "contacts.csv")],
                                ["listdir", news.inbox]])
    assert results == ["EACCES", "EACCES"], results
    daemon.stop()


def test_debian_internal_sftp_refuses_a_forced_mode(site):
    """Red Hat's OpenSSH has `internal-sftp -m 0640`; Debian's (9.2 in Debian 12) has not, and
    a ForceCommand with it ends every session. When this fails, the sshd here takes -m and the
    README can say so."""
    server = "/usr/lib/openssh/sftp-server"
    if not os.access(server, os.X_OK):
        pytest.skip(f"no {server} (not Debian's OpenSSH)")
    usage = run([server, "-m", "0640"], check=False, stdin=subprocess.DEVNULL)
    if "usage" not in usage.stderr:
        pytest.skip("this sftp-server takes -m (Red Hat's patch, or a newer OpenSSH)")
    site.make_service_user()
    site.recipe()
    site.start_sshd(SSHD_MATCH.replace("internal-sftp -d", "internal-sftp -m 0640 -d"))
    site.local_file("contacts.csv", CSV, 0o600)
    done = site.sftp("put contacts.csv\n")
    assert done.returncode != 0
    assert site.newsletter.inbox_entries() == [".resend-dropd"]


# --- the README ------------------------------------------------------------------------------

def readme_section():
    with open(os.path.join(SOURCE_DIR, "README.md"), encoding="utf-8") as file:
        text = file.read()
    match = re.search(r"^## Giving uploaders access\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no section 'Giving uploaders access'"
    return match.group(1)


def shell_commands(markdown):
    """Every command of the ```sh blocks: continuation lines joined, comments dropped,
    spaces collapsed."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def test_the_readme_has_these_commands():
    """The commands these tests run are the README's, word for word."""
    section = readme_section()
    commands = shell_commands(section)
    for command in RECIPE + BINDFS:
        assert shlex.join(shlex.split(command)) in commands, command
    assert SSHD_MATCH in section
    assert SFTP_BATCH in section
    assert BINDFS_CHROOT in section
