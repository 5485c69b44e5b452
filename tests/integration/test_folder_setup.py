"""A folder that cannot be set up never stops the others (issue 16, items 3 to 5).

- At start, the folders that can be set up are served; one that cannot (its done directory
  another user's, a read-only filesystem, an inbox that does not exist yet) is said once in the
  log (MESSAGE_ID FOLDER_UNAVAILABLE), in status, in /metrics and in SIGUSR1's STUCK lines, and
  tried again on a backoff until it can be served.
- A reload that adds a folder it cannot set up is refused whole, with the reason (and, under
  systemd, the ReadWritePaths= hint when the sandbox's read-only filesystem is the cause), and
  the running configuration goes on.
- `resend-dropd reload` returns only once the new configuration is in force, and exits 1 with
  every reason when it is refused.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from daemon_harness import (control_metrics, control_status, daemon_environment,  # noqa: F401
                            pipe_env, pipe_fake, tail)

CSV = b"email,first_name\nada@example.com,Ada\n"
TIMEOUT = 60
NOBODY = 65534
FOLDER_UNAVAILABLE = "37c9fb008e474ce08d198e3e38f721fc"
RELOAD_REJECTED = "24d1a683dcf64cb9a67285798526a6c4"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mounts)")


def ctl(env, config, *args, extra_env=None):
    done = subprocess.run([env.binary, "-c", config, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=daemon_environment(extra=extra_env))
    return done.returncode, done.stdout, done.stderr


def folder_of(env, name):
    [folder] = [f for f in control_status(env.control_socket())["folders"] if f["name"] == name]
    return folder


def json_log(daemon):
    """The daemon's JSON log lines (log.format json), parsed."""
    import json
    out = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_folder_that_cannot_be_set_up_waits_and_the_others_are_served(pipe_env):
    env = pipe_env
    good = env.folder("good", follow_import=False)
    bad = env.folder("bad", follow_import=False)
    os.chown(bad.done, NOBODY, NOBODY)  # someone else's: never written to
    config = env.config([good, bad], log={"format": "json"})
    daemon = env.start(config)

    [said] = [e for e in json_log(daemon) if e.get("message_id") == FOLDER_UNAVAILABLE]
    assert said["folder"] == "bad", said
    assert said["msg"] == (
        f"bad: the folder cannot be served: cannot open done directory '{bad.done}': it "
        "belongs to another user than the daemon's; the other folders are; it is tried again "
        "in 5 s"), said
    good.drop("a.csv", CSV)
    bad.drop("b.csv", CSV)
    env.wait_outcomes(good, done=1)
    state = folder_of(env, "bad")
    assert state["available"] is False and "belongs to another user" in state["last_error"]
    assert folder_of(env, "good")["available"] is True
    code, out, err = ctl(env, config, "status")
    assert code == 0, err
    assert re.search(r"^bad\s.*\sunavailable$", out, re.M), out
    assert re.search(r"^good\s.*\srunning$", out, re.M), out
    assert "bad: last error: the folder cannot be served: cannot open done directory" in out
    metrics = control_metrics(env.control_socket())
    assert 'resend_dropd_folder_up{folder="bad"} 0' in metrics
    assert 'resend_dropd_folder_up{folder="good"} 1' in metrics
    daemon.process.send_signal(signal.SIGUSR1)
    env.wait_for(lambda: daemon.log_lines("STUCK: the folder cannot be served"), "SIGUSR1")
    time.sleep(1)
    assert [n for n in bad.inbox_entries() if not n.startswith(".")] == ["b.csv"], \
        "a file was taken from a folder not served"

    # Mended: within the first retry (5 s) it is served, and its file imported.
    os.chown(bad.done, 0, 0)
    env.wait_outcomes(bad, done=1, timeout=20)
    assert [e for e in json_log(daemon) if e.get("msg") == "bad: the folder can be served now"]
    assert folder_of(env, "bad")["available"] is True
    # Said once while it could not be served, however many times it was tried.
    assert len([e for e in json_log(daemon) if e.get("message_id") == FOLDER_UNAVAILABLE]) == 1
    daemon.stop()


def test_an_inbox_that_appears_later_is_served_then(pipe_env):
    """An inbox on a share not mounted yet at boot: --check says so, the daemon waits for it."""
    env = pipe_env
    good = env.folder("good", follow_import=False)
    late = env.folder("late", follow_import=False)
    os.rmdir(late.inbox)
    config = env.config([good, late])
    code, out, err = ctl(env, config, "--check")
    assert code == 1 and f"directory '{late.inbox}' does not exist" in err, err
    daemon = env.start(config)
    [line] = daemon.log_lines("late: the folder cannot be served")
    assert f"cannot open inbox '{late.inbox}': No such file or directory" in line, line
    os.mkdir(late.inbox)
    late.drop("x.csv", CSV)
    env.wait_outcomes(late, done=1, timeout=20)
    daemon.stop()


def test_once_serves_the_others_and_exits_2(pipe_env):
    env = pipe_env
    good = env.folder("good", follow_import=False)
    bad = env.folder("bad", follow_import=False)
    os.chown(bad.failed, NOBODY, NOBODY)
    good.drop("a.csv", CSV)
    daemon = env.run_once(env.config([good, bad]))
    assert daemon.returncode == 2, tail(daemon.log())
    assert good.files("done") == ["a.csv"]
    assert daemon.log_lines("bad: the folder cannot be served: .*; it is not served in this run")


def test_another_daemons_folder_still_refuses_the_start(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    first = env.start(env.config([box]))
    second = env.start(env.config([box], name="second.yaml"), check_started=False)
    second.wait_exit(20)
    assert second.returncode == 1, second.log()
    assert second.log_lines(f"box: inbox '{box.inbox}' is served by another resend-dropd "
                            f"\\(pid {first.pid} holds the lock")
    first.stop()


def test_reload_returns_once_the_new_configuration_is_in_force(pipe_env):
    env = pipe_env
    one = env.folder("one", follow_import=False)
    two = env.folder("two", follow_import=False)
    config = env.config([one])
    env.fake.faults([{"delay": 3, "count": 1, "method": "POST",
                      "path_prefix": "/contacts/imports"}])
    daemon = env.start(config)
    one.drop("slow.csv", CSV)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 1, "the slow upload")
    env.config([one, two])
    started = time.monotonic()
    code, out, err = ctl(env, config, "reload")
    took = time.monotonic() - started
    assert code == 0, err
    assert out == f"configuration {config} reloaded: 2 folders\n", out
    # It waited for the upload in flight, and what it says is true the moment it returns.
    assert took >= 1.5, took
    assert [f["name"] for f in control_status(env.control_socket())["folders"]] == ["one", "two"]
    assert one.files("done") == ["slow.csv"]
    two.drop("b.csv", CSV)
    env.wait_outcomes(two, done=1)
    # SIGUSR1's summary counts since the start, across the reload, as status and /metrics do.
    daemon.process.send_signal(signal.SIGUSR1)
    env.wait_for(lambda: daemon.log_lines("status: two: 1 done"), "SIGUSR1's summary")
    assert daemon.log_lines("status: one: 1 done, 0 failed"), tail(daemon.log())
    assert daemon.log_lines(r"status: .*; 2 done, 0 failed since start"), tail(daemon.log())
    daemon.stop()


def test_reload_with_errors_exits_1_with_every_error(pipe_env):
    env = pipe_env
    one = env.folder("one", follow_import=False)
    config = env.config([one], log={"format": "json"})
    daemon = env.start(config)
    with open(config, "a") as f:
        f.write("bogus_key: 1\n")
    code, out, err = ctl(env, config, "reload")
    assert code == 1, (out, err)
    lines = err.splitlines()
    assert re.fullmatch(rf"{re.escape(config)}:\d+:1: unknown key 'bogus_key'.*", lines[0]), err
    assert lines[-1] == (f"resend-dropd: reload: configuration {config} has 1 error; keeping "
                         "the running configuration"), err
    # Each line of the refusal carries the refusal's MESSAGE_ID.
    refused = [e for e in json_log(daemon) if e.get("message_id") == RELOAD_REJECTED]
    assert len(refused) == 2 and "bogus_key" in refused[1]["msg"], refused
    assert daemon.alive()
    one.drop("a.csv", CSV)
    env.wait_outcomes(one, done=1)
    daemon.stop()


def test_a_reload_adding_a_folder_that_cannot_be_set_up_is_refused_whole(pipe_env):
    """A read-only filesystem where the folder's processing directory must be made (what
    ProtectSystem=strict does to a folder outside ReadWritePaths=): refused, with the hint
    under systemd; the running folders go on."""
    env = pipe_env
    one = env.folder("one", follow_import=False)
    ro = os.path.join(env.root, "ro")
    os.mkdir(ro)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", ro], check=True)
    try:
        for d in ("in", "done", "failed"):
            os.mkdir(os.path.join(ro, d))
        subprocess.run(["mount", "-o", "remount,ro", ro], check=True)
        config = env.config([one])
        daemon = env.start(config, env={"INVOCATION_ID": "0" * 32})
        document = open(config).read().replace(
            "folders:\n", "folders:\n"
            f'  - name: "added"\n    inbox: "{ro}/in"\n    done: "{ro}/done"\n'
            f'    failed: "{ro}/failed"\n', 1)
        with open(config, "w") as f:
            f.write(document)
        code, out, err = ctl(env, config, "--check")
        assert code == 0, err  # the configuration itself is fine
        code, out, err = ctl(env, config, "reload")
        assert code == 1, (out, err)
        assert err.splitlines()[0] == (
            f"added: cannot set up the processing directory '{ro}/in/.resend-dropd': "
            f"Read-only file system (outside the unit's ReadWritePaths=, everything is "
            f"read-only: run 'systemctl edit resend-dropd', add [Service] ReadWritePaths={ro}/in "
            f"{ro}/done {ro}/failed, then 'systemctl restart resend-dropd')"), err
        assert "a folder it adds cannot be set up; keeping the running configuration" in err
        assert daemon.alive()
        assert [f["name"] for f in control_status(env.control_socket())["folders"]] == ["one"]
        one.drop("a.csv", CSV)
        env.wait_outcomes(one, done=1)
        # SIGHUP: the same refusal, in the log.
        daemon.process.send_signal(signal.SIGHUP)
        env.wait_for(lambda: daemon.log_lines("SIGHUP: configuration .* is valid, but a folder "
                                              "it adds cannot be set up"), "the refusal")
        assert daemon.alive()
        daemon.stop()
    finally:
        subprocess.run(["umount", ro], check=False)
