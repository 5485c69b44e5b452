"""Issue 20: the command hook. A script of the test's own is the hook's command (argv, no
shell); it records what it got: its stdin (the event's JSON), its environment, who ran it, when
it started and ended. The tests assert the event in both, nothing of the daemon's environment
(never the API key), that a daemon running as root runs it as nobody unless the hook says
user: root, one run at a time, a failing exit status said once and retried until it works (the
event's attempts in the ledger), and a command past its timeout killed, its process gone."""

import json
import os
import re
import signal
import sqlite3
import stat
import time

from daemon_harness import pipe_env, pipe_fake  # noqa: F401

SCRIPT = """#!/usr/bin/python3
import json, os, sys, time
out = {out!r}
start = time.time()
event = sys.stdin.read()
count_file = out + ".count"
n = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
open(count_file, "w").write(str(n))
time.sleep({sleep})
with open(out, "a") as f:
    f.write(json.dumps({{"stdin": event, "env": dict(os.environ), "uid": os.getuid(),
                        "gid": os.getgid(), "argv": sys.argv, "start": start,
                        "end": time.time(), "n": n, "pid": os.getpid()}}) + "\\n")
if n <= {fail_first}:
    print("boom", n)
    sys.exit(3)
"""


def csv(tag, rows=2):
    lines = ["email,first_name"] + [f"{tag}{i}@example.com,{tag.title()} {i}"
                                    for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def hook_script(env, sleep=0, fail_first=0):
    """The script and the file it appends to, where nobody may run and write them."""
    os.chmod(env.root, 0o755)
    work = os.path.join(env.root, "hookwork")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o777)
    out = os.path.join(work, "runs.jsonl")
    path = os.path.join(env.root, "hook.py")
    with open(path, "w") as f:
        f.write(SCRIPT.format(out=out, sleep=sleep, fail_first=fail_first))
    os.chmod(path, 0o755)
    return path, out


def runs(out):
    try:
        with open(out) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def outbox(env):
    con = sqlite3.connect(f"file:{os.path.join(env.state_dir, 'ledger.sqlite')}?mode=ro",
                          uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        con.close()


def hook(path, **more):
    settings = {"name": "sync", "command": [path, "--from", "resend-dropd"], "timeout_s": 10,
                "retry_initial_s": 1, "retry_max_s": 1}
    settings.update(more)
    return settings


def test_the_event_on_stdin_and_in_the_environment_as_nobody(pipe_env):
    env = pipe_env
    path, out = hook_script(env)
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"hooks": [hook(path)]}))
    box.drop("a.csv", csv("a"))
    env.wait_outcomes(box, done=1)
    box.drop("bad.csv", b"")
    env.wait_outcomes(box, done=1, failed=1)
    env.wait_for(lambda: len(runs(out)) == 2, "two runs")
    env.wait_for(lambda: [r["state"] for r in outbox(env)] == ["delivered"] * 2,
                 "both events delivered")
    daemon.stop()
    first, second = runs(out)
    event = json.loads(first["stdin"])
    assert event["type"] == "file.done" and event["data"]["file"] == "a.csv"
    assert first["argv"][1:] == ["--from", "resend-dropd"]
    assert first["env"]["RDD_EVENT_TYPE"] == "file.done"
    assert first["env"]["RDD_FOLDER"] == "crm" and first["env"]["RDD_FILE"] == "a.csv"
    assert first["env"]["RDD_OUTCOME"] == "imported"
    assert re.fullmatch(r"msg_[0-9a-f]{32}", first["env"]["RDD_EVENT_ID"])
    assert json.loads(second["stdin"])["type"] == "file.failed"
    assert second["env"]["RDD_OUTCOME"] == "failed"
    # Nothing of the daemon's own environment: never the API key.
    for run in (first, second):
        assert "RESEND_API_KEY" not in run["env"]
        assert set(run["env"]) <= {"PATH", "LANG", "RDD_EVENT_ID", "RDD_EVENT_TYPE",
                                   "RDD_FOLDER", "RDD_FILE", "RDD_OUTCOME", "LC_CTYPE"}
        if os.geteuid() == 0:
            assert run["uid"] == 65534, "a root daemon runs its hooks as nobody"
    assert "hook 'sync': ran for msg_" in daemon.log()


def test_user_root_only_when_the_hook_says_so(pipe_env):
    env = pipe_env
    if os.geteuid() != 0:
        return
    path, out = hook_script(env)
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"hooks": [hook(path, user="root")]}))
    box.drop("a.csv", csv("a"))
    env.wait_for(lambda: len(runs(out)) == 1, "one run")
    daemon.stop()
    assert runs(out)[0]["uid"] == 0


def test_a_failing_command_is_said_once_and_run_again_until_it_works(pipe_env):
    env = pipe_env
    path, out = hook_script(env, fail_first=2)
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"hooks": [hook(path)]}))
    box.drop("a.csv", csv("a"))
    env.wait_for(lambda: outbox(env) and outbox(env)[0]["state"] == "delivered",
                 "delivered at the third run", timeout=30)
    log = daemon.log()
    daemon.stop()
    assert [r["n"] for r in runs(out)] == [1, 2, 3]
    assert log.count("hook 'sync': cannot deliver by running its command: exit status 3; "
                     "it said: boom 1") == 1, log
    assert "hook 'sync': its command works again (after 2 failed attempts)" in log
    row = outbox(env)[0]
    assert row["attempts"] == 3 and row["last_error"].startswith("exit status 3")


def test_one_run_at_a_time_in_order(pipe_env):
    env = pipe_env
    path, out = hook_script(env, sleep=0.7)
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"hooks": [hook(path)]}))
    for i in range(3):
        box.drop(f"f{i}.csv", csv(f"f{i}"))
        env.wait_outcomes(box, done=i + 1)
    env.wait_for(lambda: len(runs(out)) == 3, "three runs", timeout=30)
    daemon.stop()
    got = runs(out)
    assert [json.loads(r["stdin"])["data"]["file"] for r in got] == ["f0.csv", "f1.csv",
                                                                     "f2.csv"]
    for before, after in zip(got, got[1:]):
        assert after["start"] >= before["end"], "two runs overlapped"


def test_a_command_past_its_timeout_is_killed(pipe_env):
    env = pipe_env
    path, out = hook_script(env, sleep=60)
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"hooks": [hook(path, timeout_s=1,
                                                               retry_initial_s=60)]}))
    box.drop("a.csv", csv("a"))
    env.wait_for(lambda: "timed out after 1 s" in daemon.log(), "the timeout said", timeout=20)
    row = outbox(env)[0]
    assert row["state"] == "pending" and row["last_error"].startswith("timed out after 1 s")
    # No python left running the script.
    time.sleep(0.5)
    left = script_processes(path)
    daemon.stop()
    assert left == [], f"the hook's process is still there: {left}"
    assert runs(out) == []  # it never got to write


def test_check_says_what_is_wrong_with_a_hook(pipe_env):
    import subprocess
    from daemon_harness import binary_path, daemon_environment
    env = pipe_env
    box = env.folder("crm")
    for settings, message in (
            ({"name": "x", "command": ["relative/script"]}, "absolute path first"),
            ({"name": "x", "command": []}, "absolute path first"),
            ({"name": "x", "command": ["/bin/true"], "user": "no-such-user-rdd"},
             "no user 'no-such-user-rdd'"),
            ({"command": ["/bin/true"]}, "missing required key 'name'"),
            ({"name": "x"}, "missing required key 'command'")):
        config = env.config([box], extra={"hooks": [settings]})
        done = subprocess.run([binary_path(), "-c", config, "--check"], capture_output=True,
                              text=True, env=daemon_environment(), timeout=60)
        assert done.returncode != 0
        assert re.search(r"resend-dropd\.yaml:\d+:\d+: hooks\[0\]", done.stderr), done.stderr
        assert message in done.stderr, (settings, done.stderr)
    assert stat.S_ISDIR(os.stat(env.root).st_mode)


def script_processes(path):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def zombie_children(ppid):
    """The daemon's children that exited and were never reaped."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == ppid:
            found.append(pid)
    return found


def test_a_command_running_at_a_reload_is_killed_and_reaped(pipe_env):
    """A reload ends the pipeline, and with it a hook that is running: it is killed, and reaped,
    so that a daemon reloaded every day for months does not collect zombies; its event runs
    again under the new configuration."""
    env = pipe_env
    path, out = hook_script(env, sleep=60)
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"hooks": [hook(path, timeout_s=120)]}))
    box.drop("a.csv", csv("a"))
    [first] = env.wait_for(lambda: script_processes(path), "the hook running", timeout=20)
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: daemon.log_lines("reloaded"), "the reload", timeout=20)
    # Killed and reaped: its /proc entry goes (a zombie keeps one).
    env.wait_for(lambda: not os.path.exists(f"/proc/{first}"), "the first run reaped",
                 timeout=10)
    # The new pipeline's queue runs the event again (and is stopped with the daemon).
    env.wait_for(lambda: [p for p in script_processes(path) if p != first],
                 "the hook run again", timeout=20)
    assert zombie_children(daemon.pid) == []
    daemon.stop()
    assert runs(out) == []
