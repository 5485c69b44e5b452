"""The hardened unit lets the daemon do its work.

There is no systemd to run the unit under in CI, so the daemon runs under strace instead, on
real work (files dropped, uploaded, followed, moved, reported; a failed file; a reload; a status
summary; a drain), and everything it asked the kernel for is checked against the unit: every
system call against SystemCallFilter=, every socket's family against RestrictAddressFamilies=.
A call the unit refuses fails with EPERM (SystemCallErrorNumber=), a family with EAFNOSUPPORT,
so anything listed here would be a daemon that breaks only once it is installed.

Static checks of the unit (systemd-analyze verify and security) are in test_install.py.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from daemon_harness import is_sanitized, pipe_env, pipe_fake  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
UNIT_IN = os.path.join(SOURCE_DIR, "systemd", "resend-dropd.service.in")
MAP = {"email": "Email"}


def unit_settings():
    settings = {}
    with open(UNIT_IN) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith(("#", "[")):
                k, v = line.split("=", 1)
                settings.setdefault(k, []).append(v)
    return settings


def syscall_groups():
    p = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True,
                       text=True, timeout=60, check=True)
    groups, cur = {}, None
    for line in p.stdout.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.split()[0], set())
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.add(line.strip())
    return groups


def allowed_syscalls():
    groups = syscall_groups()

    def expand(item, seen=()):
        if not item.startswith("@"):
            return {item}
        out = set()
        for s in groups.get(item, ()):
            if s not in seen:
                out |= expand(s, seen + (item,))
        return out

    allowed, denied = set(), set()
    for v in unit_settings()["SystemCallFilter"]:
        target = denied if v.startswith("~") else allowed
        for item in v.lstrip("~").split():
            target |= expand(item)
    return allowed - denied


@pytest.fixture
def traced(pipe_env, tmp_path):  # noqa: F811
    if not shutil.which("strace"):
        pytest.skip("strace missing: it is what stands in for systemd's filters here")
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing: install the systemd package")
    if is_sanitized(pipe_env.binary):
        pytest.skip("the package ships no ASan; its run-time makes system calls of its own")
    trace = tmp_path / "trace"  # one file per run: trace-<pid>
    wrapper = tmp_path / "resend-dropd"
    wrapper.write_text(f"#!/bin/sh\nexec strace -f -qq -o '{trace}'-$$ -- '{pipe_env.binary}' \"$@\"\n")
    wrapper.chmod(0o755)
    pipe_env.binary = str(wrapper)
    return pipe_env, trace


def daemon_pid(strace_pid):
    """The traced daemon: strace's only child."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{strace_pid}/task/{strace_pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    pytest.fail("strace started no daemon")


def test_the_daemon_needs_nothing_the_unit_refuses(traced):
    env, trace = traced
    news = env.folder("news", column_map=MAP)
    config = env.config([news])
    daemon = env.start(config)
    pid = daemon_pid(daemon.pid)
    news.drop("a.csv", "Email\nx@example.com\n")
    news.drop("bad.csv", "Name\nnobody\n")
    env.wait_outcomes(news, done=1, failed=1)
    os.kill(pid, signal.SIGUSR1)
    os.kill(pid, signal.SIGHUP)
    env.wait_for(lambda: "reload" in daemon.log().lower(), "the reload's log line")
    news.drop("b.csv", "Email\ny@example.com\n")
    env.wait_outcomes(news, done=2, failed=1)
    os.kill(pid, signal.SIGTERM)
    daemon.wait_exit(30)
    assert daemon.returncode == 0, daemon.log()

    once = env.run_once(config)
    assert once.returncode == 0, once.log()

    calls, families = set(), set()
    lines = []
    for path in trace.parent.glob(trace.name + "-*"):
        lines += path.read_text().splitlines()
    assert lines, "strace wrote nothing"
    for line in lines:
        m = re.match(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
        if m:
            calls.add(m.group(1))
        m = re.search(r"\bsocket\((AF_[A-Z0-9]+)", line)
        if m:
            families.add(m.group(1))
    assert {"inotify_add_watch", "flock", "fcntl", "epoll_wait"} & calls, sorted(calls)

    allowed = allowed_syscalls()
    # strace's own exec of the daemon is before any filter would apply.
    refused = sorted(calls - allowed - {"execve"})
    assert not refused, f"the unit's SystemCallFilter= refuses {refused} (all calls: {sorted(calls)})"
    permitted = set(unit_settings()["RestrictAddressFamilies"][0].split())
    assert families <= permitted, f"sockets of {sorted(families - permitted)} are refused"
