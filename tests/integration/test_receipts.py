"""Issue 20: receipts for the uploader. A partner uploads over SFTP (OpenSSH's sftp against the
private sshd of sshd_harness.py, as a user of its own that the test adds and removes) and reads
its receipt back over SFTP as that user: NAME.ok.json or NAME.failed.json, and NAME.rejects.csv
when rows were rejected, owned and moded as configured, saying only what the uploader may see.
Then what the daemon does with the directory: receipts older than keep_days removed (and
nothing else), and a receipts directory that cannot be written (immutable, full), which never
holds a file back: said once, the receipts written later, in order, once it can be."""

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import time
import uuid

import pytest

from daemon_harness import (binary_path, daemon_environment, fill_filesystem,  # noqa: F401
                            pipe_env, pipe_fake, tmpfs_mounted)
from sshd_harness import sshd  # noqa: F401
from test_faults_dirs import immutable

SFTP = shutil.which("sftp")


def csv(tag, rows=2, bad=0):
    lines = ["email,first_name"] + [f"{tag}{i}@example.com,{tag.title()} {i}"
                                    for i in range(rows)]
    lines += [f"not-an-email-{i},Bad" for i in range(bad)]
    return ("\n".join(lines) + "\n").encode()


@contextlib.contextmanager
def uploader():
    """A user of this test's own (useradd), removed afterwards: the SFTP partner."""
    if os.geteuid() != 0:
        pytest.skip("adding a user needs root")
    name = "rdd-up-" + uuid.uuid4().hex[:8]
    # A password of "*": no password works, yet the account is not locked ("!"), which sshd
    # without PAM would refuse even for a key.
    done = subprocess.run(["useradd", "--system", "-M", "-d", "/nonexistent", "-s", "/bin/sh",
                           "-p", "*", name], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"useradd: {done.stderr.strip()}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def sftp(server, user, commands, cwd):
    """Runs sftp's batch COMMANDS as USER (the harness's sshd takes its key for any user)."""
    batch = os.path.join(server["root"], f"batch-{uuid.uuid4().hex}")
    with open(batch, "w") as f:
        f.write("\n".join(commands) + "\n")
    done = subprocess.run(
        [SFTP, "-q", "-b", batch, "-i", server["key"], "-P", str(server["port"]),
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", f"{user}@127.0.0.1"],
        capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done


def test_uploaded_over_sftp_and_the_receipt_read_back_as_the_uploader(pipe_env, sshd):
    env = pipe_env
    with uploader() as user:
        # sshd reads the key list as the user who logs in.
        os.chmod(sshd["root"], 0o755)
        os.chmod(os.path.join(sshd["root"], "authorized_keys"), 0o644)
        os.chmod(env.root, 0o755)
        receipts = os.path.join(env.root, "results")
        os.makedirs(receipts, mode=0o755)
        box = env.folder("partner", invalid_rows="drop",
                         receipts={"dir": receipts, "owner": user.pw_name,
                                   "group": user.pw_gid, "mode": "0640", "keep_days": 30})
        os.makedirs(box.inbox, exist_ok=True)
        os.chown(box.inbox, user.pw_uid, user.pw_gid)
        local = os.path.join(sshd["root"], "up")
        os.makedirs(local)
        os.chown(local, user.pw_uid, user.pw_gid)
        for name, content in (("contacts.csv", csv("ok", 3)),
                              ("mixed.csv", csv("mix", 2, bad=2)),
                              ("broken.csv", b"\x00\x01 not a csv")):
            with open(os.path.join(local, name), "wb") as f:
                f.write(content)
        daemon = env.start(env.config([box]))
        sftp(sshd, user.pw_name, [f'put "{local}/{n}" "{box.inbox}/{n}"'
                                  for n in ("contacts.csv", "mixed.csv", "broken.csv")], local)
        env.wait_outcomes(box, done=2, failed=1)
        want = ["broken.csv.failed.json", "contacts.csv.ok.json", "mixed.csv.ok.json",
                "mixed.csv.rejects.csv"]
        env.wait_for(lambda: sorted(os.listdir(receipts)) == want, "the four receipts")
        # Read back over SFTP by the uploader: what they can see, they can read.
        back = os.path.join(local, "back")
        os.makedirs(back)
        os.chown(back, user.pw_uid, user.pw_gid)
        sftp(sshd, user.pw_name, [f'get "{receipts}/{n}" "{back}/{n}"' for n in want], local)
        daemon.stop()
        for name in want:
            st = os.stat(os.path.join(receipts, name))
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
                (user.pw_uid, user.pw_gid, 0o640), name
    read = {n: open(os.path.join(back, n), "rb").read() for n in want}
    ok = json.loads(read["contacts.csv.ok.json"])
    assert ok["file"] == "contacts.csv" and ok["outcome"] == "imported"
    assert ok["rows"] == {"read": 3, "imported": 3, "rejected": 0}
    assert ok["rejects_file"] is None and ok["error"] is None
    assert ok["import"]["status"] == "completed"
    mixed = json.loads(read["mixed.csv.ok.json"])
    assert mixed["rows"] == {"read": 4, "imported": 2, "rejected": 2}
    assert mixed["rejects_file"] == "mixed.csv.rejects.csv"
    rejects = read["mixed.csv.rejects.csv"].decode().splitlines()
    assert rejects[0] == "line,reason,row" and len(rejects) == 3
    assert rejects[1].startswith("4,invalid email 'not-an-email-0'")
    failed = json.loads(read["broken.csv.failed.json"])
    assert failed["outcome"] == "failed" and failed["error"]["stage"] == "check"
    assert failed["error"]["message"]
    # Nothing of the daemon's host: no path, no key.
    for name, content in read.items():
        assert env.root.encode() not in content, name
        assert b"re_" not in content, name


def test_a_new_outcome_replaces_the_receipts_of_the_earlier_file(pipe_env):
    env = pipe_env
    receipts = os.path.join(env.root, "results")
    os.makedirs(receipts)
    box = env.folder("crm", invalid_rows="drop", receipts={"dir": receipts})
    daemon = env.start(env.config([box]))
    box.drop("list.csv", csv("a", 2, bad=1))
    env.wait_outcomes(box, done=1)
    env.wait_for(lambda: sorted(os.listdir(receipts)) ==
                 ["list.csv.ok.json", "list.csv.rejects.csv"], "the first receipts")
    box.drop("list.csv", b"")
    env.wait_outcomes(box, done=1, failed=1)
    env.wait_for(lambda: sorted(os.listdir(receipts)) == ["list.csv.failed.json"],
                 "the second file's receipt alone")
    daemon.stop()
    assert os.stat(os.path.join(receipts, "list.csv.failed.json")).st_mode & 0o777 == 0o640


def test_receipts_older_than_keep_days_are_removed_and_nothing_else(pipe_env):
    env = pipe_env
    receipts = os.path.join(env.root, "results")
    os.makedirs(receipts)
    old = time.time() - 3 * 86400
    names = {"a.csv.ok.json": old, "b.csv.failed.json": old, "b.csv.rejects.csv": old,
             "c.csv.ok.json": time.time(), "notes.txt": old, "keep.json": old}
    for name, mtime in names.items():
        path = os.path.join(receipts, name)
        with open(path, "w") as f:
            f.write("{}")
        os.utime(path, (mtime, mtime))
    box = env.folder("crm", receipts={"dir": receipts, "keep_days": 2})
    daemon = env.start(env.config([box]))
    env.wait_for(lambda: "removed 3 receipts older than 2 days" in daemon.log(),
                 "the sweep at start")
    daemon.stop()
    assert sorted(os.listdir(receipts)) == ["c.csv.ok.json", "keep.json", "notes.txt"]


def failing_then_fixed(env, box, receipts, daemon, fix):
    """Three files while the receipts directory fails, then FIX(): each is imported and moved
    all the same, the failure said once; the receipts of all three are there once a fourth
    file comes after the fix."""
    for i in range(3):
        box.drop(f"f{i}.csv", csv(f"f{i}"))
        env.wait_outcomes(box, done=i + 1)
    log = daemon.log()
    assert log.count("cannot write the receipt of") == 1, log
    fix()
    box.drop("f3.csv", csv("f3"))
    env.wait_outcomes(box, done=4)
    want = sorted(f"f{i}.csv.ok.json" for i in range(4))
    env.wait_for(lambda: sorted(n for n in os.listdir(receipts) if n.endswith(".json")) == want,
                 "every receipt, the waiting ones too")
    env.wait_for(lambda: "receipts can be written to" in daemon.log(), "the recovery said")
    assert daemon.log().count("cannot write the receipt of") == 1


def test_an_immutable_receipts_directory_holds_no_file_back(pipe_env):
    env = pipe_env
    receipts = os.path.join(env.root, "results")
    os.makedirs(receipts)
    box = env.folder("crm", receipts={"dir": receipts})
    daemon = env.start(env.config([box]))
    with contextlib.ExitStack() as stack:
        stack.enter_context(immutable(receipts))
        failing_then_fixed(env, box, receipts, daemon, stack.close)
    daemon.stop()
    assert "Operation not permitted" in daemon.log()


def test_a_full_receipts_directory_holds_no_file_back(pipe_env):
    env = pipe_env
    mount = os.path.join(env.root, "small")
    with tmpfs_mounted(mount, size="256k"):
        receipts = os.path.join(mount, "results")
        os.makedirs(receipts)
        box = env.folder("crm", receipts={"dir": receipts})
        daemon = env.start(env.config([box]))
        filler = fill_filesystem(mount)
        failing_then_fixed(env, box, receipts, daemon, lambda: os.unlink(filler))
        daemon.stop()
        assert "No space left on device" in daemon.log()


@pytest.mark.parametrize("receipts, message", [
    ({"dir": "results"}, "expected an absolute path"),
    ({"dir": "/srv/r", "owner": "no-such-user-rdd"}, "no user 'no-such-user-rdd' on this system"),
    ({"dir": "/srv/r", "group": "no-such-group-rdd"},
     "no group 'no-such-group-rdd' on this system"),
    ({"dir": "/srv/r", "mode": "0666"}, "that no group or other may write"),
    ({"dir": "/srv/r", "mode": "rw-r-----"}, "expected octal permissions"),
    ({"owner": "root"}, "missing required key 'dir'"),
])
def test_check_says_what_is_wrong_with_receipts(pipe_env, receipts, message):
    env = pipe_env
    box = env.folder("crm", receipts=receipts)
    config = env.config([box])
    done = subprocess.run([binary_path(), "-c", config, "--check"], capture_output=True,
                          text=True, env=daemon_environment(), timeout=60)
    assert done.returncode != 0
    assert "resend-dropd.yaml:" in done.stderr and "folders[0].receipts" in done.stderr, \
        done.stderr
    assert message in done.stderr, done.stderr
