"""The control socket (issue 9, items 4 and 5): GET /status and /metrics over AF_UNIX, the TCP
metrics listener, and the status, retry, pause and resume commands."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time

from daemon_harness import (control_metrics, control_request, control_status,  # noqa: F401
                            daemon_environment, free_port, pipe_env, pipe_fake,
                            tail)

CSV = b"email,first_name\nada@example.com,Ada\nbob@example.com,Bob\n"
TIMEOUT = 30


request = control_request
status = control_status


def folder_status(path, name):
    [folder] = [f for f in status(path)["folders"] if f["name"] == name]
    return folder


metrics_text = control_metrics


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    """{(name, frozenset of label pairs): value}; every line must be a comment or a sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def promtool_check(text):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/install-deps --tests installs Debian's prometheus"
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode() + "\n" + text
    # Lint findings are printed but do not change the exit status: there must be none.
    assert not (done.stdout + done.stderr).strip(), done.stdout.decode() + done.stderr.decode()


def ctl(env, config, *args, socket_path=None, prefix=(), extra_env=None):
    argv = [*prefix, env.binary]
    if config:
        argv += ["-c", config]
    if socket_path:
        argv += ["--socket", socket_path]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env=daemon_environment(extra=extra_env))
    return done.returncode, done.stdout, done.stderr


def assert_clean_exit(daemon):
    daemon.stop()
    assert not daemon.log_lines("handles still open"), tail(daemon.log())


# --- GET /status --------------------------------------------------------------------------

def test_status_shape_and_numbers_while_a_slow_upload_runs(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    other = env.folder("other", follow_import=False)
    config = env.config([box, other], api={"max_in_flight": 1})
    sock = env.control_socket()
    env.fake.faults([{"delay": 5, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    daemon = env.start(config)
    mode = os.stat(sock).st_mode
    # Owner and group (whatever the umask), not world-accessible.
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, oct(mode)

    box.drop("slow.csv", CSV)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 1, "the slow upload")
    box.drop("next.csv", CSV.replace(b"ada@", b"next@"))
    env.wait_for(lambda: folder_status(sock, "box")["waiting"] >= 1, "the second file waiting")
    time.sleep(1.5)
    s = status(sock)
    assert s["state"] == "running" and s["pid"] == daemon.pid and s["version"]
    assert s["api"]["uploads_in_flight"] == 1 and s["api"]["max_in_flight"] == 1
    assert s["api"]["paused"] is False and s["api"]["paused_reason"] is None
    # No answer yet: the team's limit is not announced, and the daemon spends the lowest
    # documented (2/s), under its ceiling of 50 (the harness's requests_per_second).
    rl = s["api"]["rate_limit"]
    assert rl["requests_per_second"] == 2 and rl["team_limit"] is None, rl
    assert rl["ceiling"] == 50 and rl["share"] == 1, rl
    box_s = [f for f in s["folders"] if f["name"] == "box"][0]
    assert box_s["uploading"] == 1 and box_s["waiting"] == 1, box_s
    assert box_s["processing"] == 0 and box_s["retrying"] == 0 and box_s["following"] == 0
    assert box_s["done"] == 0 and box_s["failed"] == 0
    assert box_s["oldest_waiting_s"] >= 1, box_s
    assert box_s["paused"] is False and box_s["paused_reason"] is None
    assert box_s["paused_until"] is None and box_s["last_error"] is None
    other_s = [f for f in s["folders"] if f["name"] == "other"][0]
    assert other_s["waiting"] == 0 and other_s["oldest_waiting_s"] is None, other_s

    env.wait_outcomes(box, done=2)
    box_s = folder_status(sock, "box")
    assert box_s["done"] == 2 and box_s["waiting"] == 0 and box_s["uploading"] == 0
    assert box_s["oldest_waiting_s"] is None
    code, _, body = request(sock, url="/nothing")
    assert code == 404, body
    code, _, body = request(sock, method="POST", url="/status")
    assert code == 405, body
    assert_clean_exit(daemon)
    assert not os.path.exists(sock), "the socket file outlived the daemon"


# --- GET /metrics -------------------------------------------------------------------------

def test_metrics_pass_promtool_and_counters_survive_a_reload(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=True)
    config = env.config([box])
    sock = env.control_socket()
    daemon = env.start(config)
    box.drop("good.csv", CSV)
    env.wait_outcomes(box, done=1)
    env.fake.faults([{"status": 422, "name": "validation_error", "message": "no",
                      "method": "POST", "path_prefix": "/contacts/imports"}])
    box.drop("bad.csv", CSV.replace(b"ada@", b"bad@"))
    env.wait_outcomes(box, done=1, failed=1)

    text = metrics_text(sock)
    promtool_check(text)
    m = parse_metrics(text)
    assert metric(m, "resend_dropd_build_info", version=s_version(sock)) == 1
    assert metric(m, "resend_dropd_files_total", folder="box", outcome="done") == 1
    assert metric(m, "resend_dropd_files_total", folder="box", outcome="failed") == 1
    assert metric(m, "resend_dropd_api_requests_total", endpoint="create_import",
                  code="201") == 1
    assert metric(m, "resend_dropd_api_requests_total", endpoint="create_import",
                  code="422") == 1
    assert metric(m, "resend_dropd_api_requests_total", endpoint="get_import", code="200") >= 1
    assert metric(m, "resend_dropd_uploaded_bytes_total", folder="box") == len(CSV)
    assert metric(m, "resend_dropd_upload_duration_seconds_count", folder="box") == 1
    assert metric(m, "resend_dropd_upload_duration_seconds_bucket", folder="box",
                  le="+Inf") == 1
    assert metric(m, "resend_dropd_import_duration_seconds_count", folder="box") == 1
    assert metric(m, "resend_dropd_import_duration_seconds_sum", folder="box") > 0
    assert metric(m, "resend_dropd_files_waiting", folder="box") == 0
    assert metric(m, "resend_dropd_paused", folder="box") == 0
    assert metric(m, "resend_dropd_upload_retries_total", folder="box") == 0
    assert metric(m, "resend_dropd_files_in_flight", folder="box", state="uploading") == 0

    # A reload with an upload in flight: the socket answers while the old pipeline drains.
    env.fake.faults([{"delay": 2, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    box.drop("during.csv", CSV.replace(b"ada@", b"during@"))
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 1, "the slow upload")
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: status(sock)["state"] == "reloading", "status saying 'reloading'",
                 timeout=5)
    assert metric(parse_metrics(metrics_text(sock)), "resend_dropd_files_total", folder="box",
                  outcome="done") == 1
    env.wait_for(lambda: daemon.log_lines("reloaded"), "the reload", timeout=20)
    env.wait_outcomes(box, done=2, failed=1)
    m = parse_metrics(metrics_text(sock))
    assert metric(m, "resend_dropd_files_total", folder="box", outcome="done") == 2
    assert metric(m, "resend_dropd_files_total", folder="box", outcome="failed") == 1
    assert metric(m, "resend_dropd_api_requests_total", endpoint="create_import",
                  code="201") == 2
    assert status(sock)["state"] == "running"
    assert folder_status(sock, "box")["done"] == 2
    assert_clean_exit(daemon)


def s_version(sock):
    return status(sock)["version"]



def test_metrics_on_a_loopback_tcp_address(pipe_env):
    env = pipe_env
    box = env.folder("box")
    port = free_port()
    config = env.config([box], metrics={"listen": f"127.0.0.1:{port}"})
    daemon = env.start(config)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200 and "resend_dropd_files_waiting{folder=\"box\"} 0" in body
    promtool_check(body)
    conn.request("GET", "/status")  # the commands and the status are the socket's only
    response = conn.getresponse()
    assert response.status == 404, response.read()
    response.read()
    conn.close()
    assert_clean_exit(daemon)
    with socket.socket() as s:  # the port was given back
        s.bind(("127.0.0.1", port))


def test_check_refuses_a_metrics_address_that_is_not_loopback(pipe_env):
    env = pipe_env
    box = env.folder("box")
    config = env.config([box], metrics={"listen": "0.0.0.0:9464"})
    code, out, err = ctl(env, config, "--check")
    assert code == 1, out + err
    [line] = [x for x in err.splitlines() if "metrics.listen" in x]
    assert re.match(re.escape(config) + r":\d+:\d+: metrics\.listen: '0\.0\.0\.0' is not a "
                    r"loopback address", line), line
    config = env.config([box], metrics={"listen": "0.0.0.0:9464", "allow_remote": True})
    code, out, err = ctl(env, config, "--check")
    assert code == 0, out + err
    config = env.config([box], metrics={"listen": "127.0.0.1"})
    code, out, err = ctl(env, config, "--check")
    assert code == 1 and "expected HOST:PORT" in err, err
    config = env.config([box], control={"socket": "relative.sock"})
    code, out, err = ctl(env, config, "--check")
    assert code == 1 and "control.socket: expected an absolute path" in err, err


# --- the commands -------------------------------------------------------------------------

def test_status_command_prints_a_table(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box])
    daemon = env.start(config)
    box.drop("a.csv", CSV)
    env.wait_outcomes(box, done=1)
    code, out, err = ctl(env, config, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("resend-dropd ") and f"(pid {daemon.pid}), running" in lines[0]
    assert lines[1].startswith("uploads: 0 of 4 in flight")
    header = next(x for x in lines if x.startswith("FOLDER"))
    assert header.split() == ["FOLDER", "WAITING", "PROCESSING", "UPLOADING", "RETRYING",
                              "FOLLOWING", "DONE", "FAILED", "OLDEST", "STATE"], header
    row = next(x for x in lines if x.startswith("box "))
    assert row.split() == ["box", "0", "0", "0", "0", "0", "1", "0", "-", "running"], row
    print(out)
    # --socket instead of the configuration's path.
    code, out2, err = ctl(env, None, "status", socket_path=env.control_socket())
    assert code == 0 and "box " in out2, err
    code, out, err = ctl(env, config, "status", "extra")
    assert code == 1 and "Usage" in err
    assert_clean_exit(daemon)


def test_retry_puts_a_failed_file_back_and_it_is_processed(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box])
    daemon = env.start(config)
    env.fake.faults([{"status": 422, "name": "validation_error", "message": "not today",
                      "method": "POST", "path_prefix": "/contacts/imports"}])
    box.drop("x.csv", CSV)
    env.wait_outcomes(box, failed=1)
    assert box.report_names("failed") == ["x.csv.json"]

    code, out, err = ctl(env, config, "retry", "box", "x.csv")
    assert code == 0, err
    kept = re.search(r"its old report is now '(x\.csv\.\d{8}T\d{6}Z\.json)'", out)
    assert kept and "box: 'x.csv' is back in the inbox" in out, out
    env.wait_for(lambda: box.files("done") == ["x.csv"], "the retried file in done")
    assert box.files("failed") == [] and box.report_names("failed") == [kept.group(1)]
    assert json.load(open(os.path.join(box.failed, kept.group(1))))["error"]["http_status"] == 422
    assert box.report_names("done") == ["x.csv.json"]
    assert len(env.uploads()) == 2
    assert daemon.log_lines("'x.csv' put back into the inbox")
    s = folder_status(env.control_socket(), "box")
    assert (s["done"], s["failed"]) == (1, 1), s

    code, out, err = ctl(env, config, "retry", "box", "x.csv")
    assert code == 1 and "no file 'x.csv' in failed directory" in err, (out, err)
    code, out, err = ctl(env, config, "retry", "nosuch", "x.csv")
    assert code == 1 and "no folder named 'nosuch'" in err, (out, err)
    code, out, err = ctl(env, config, "retry", "box", "../done/x.csv")
    assert code == 1 and "is not a failed file" in err, (out, err)
    code, out, err = ctl(env, config, "retry", "box")
    assert code == 1 and "Usage" in err
    assert os.listdir(box.inbox) == [".resend-dropd"]
    assert_clean_exit(daemon)


def test_pause_holds_new_files_and_resume_lets_them_go(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    other = env.folder("other", follow_import=False)
    config = env.config([box, other])
    sock = env.control_socket()
    daemon = env.start(config)

    code, out, err = ctl(env, config, "pause", "box")
    assert code == 0 and out.strip() == "paused: box", (out, err)
    box.drop("held.csv", CSV)
    other.drop("free.csv", CSV.replace(b"ada@", b"free@"))
    env.wait_outcomes(other, done=1)
    time.sleep(1)  # well past settle_ms: it would have been taken by now
    s = folder_status(sock, "box")
    assert s["paused"] is True and s["paused_reason"] == "paused by resend-dropd pause", s
    assert s["waiting"] == 1 and s["uploading"] == 0, s
    assert box.inbox_entries() == [".resend-dropd", "held.csv"]
    assert [u["file"]["filename"] for u in env.uploads()] == ["free.csv"]
    m = parse_metrics(metrics_text(sock))
    assert metric(m, "resend_dropd_paused", folder="box") == 1
    assert metric(m, "resend_dropd_paused", folder="other") == 0
    assert metric(m, "resend_dropd_files_waiting", folder="box") == 1
    code, out, err = ctl(env, config, "status")
    assert re.search(r"^box .* paused \(paused by resend-dropd pause\)$", out, re.M), out

    # The pause survives a reload.
    daemon.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: daemon.log_lines("reloaded"), "the reload", timeout=20)
    time.sleep(0.5)
    assert folder_status(sock, "box")["paused"] is True
    assert box.inbox_entries() == [".resend-dropd", "held.csv"]

    code, out, err = ctl(env, config, "resume")
    assert code == 0 and out.strip() == "resumed: box other", (out, err)
    env.wait_outcomes(box, done=1)
    assert folder_status(sock, "box")["paused"] is False
    code, out, err = ctl(env, config, "pause", "nosuch")
    assert code == 1 and "no folder named 'nosuch'" in err, err
    assert_clean_exit(daemon)


def test_a_pause_lets_the_upload_in_flight_finish(pipe_env):
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box], api={"max_in_flight": 1})
    env.fake.faults([{"delay": 1.5, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    daemon = env.start(config)
    box.drop("first.csv", CSV)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 1, "the slow upload")
    box.drop("second.csv", CSV.replace(b"ada@", b"second@"))
    env.wait_for(lambda: folder_status(env.control_socket(), "box")["waiting"] == 1,
                 "the second file claimed and queued")
    code, out, err = ctl(env, config, "pause")
    assert code == 0, err
    env.wait_outcomes(box, done=1)
    time.sleep(0.5)
    assert len(env.uploads()) == 1, "an upload started while paused"
    assert ctl(env, config, "resume")[0] == 0
    env.wait_outcomes(box, done=2)
    assert_clean_exit(daemon)


# --- errors -------------------------------------------------------------------------------

def test_commands_say_when_the_daemon_is_not_running(pipe_env):
    env = pipe_env
    box = env.folder("box")
    config = env.config([box])
    sock = env.control_socket()
    code, out, err = ctl(env, config, "status")
    assert code == 2 and err.strip() == f"resend-dropd is not running (no socket at {sock})", err
    # A socket file left by a daemon that died: nobody answers.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(sock)
    code, out, err = ctl(env, config, "pause")
    assert code == 2 and err.strip() == \
        f"resend-dropd is not running (nothing answers on {sock})", err
    # The daemon replaces such a stale socket.
    daemon = env.start(config)
    assert daemon.log_lines("replaced the stale control socket")
    assert ctl(env, config, "status")[0] == 0
    # ...but not a live one: another daemon (other folders, same socket) refuses to start.
    other = env.folder("other")
    second = env.start(env.config([other], name="second.yaml", control={"socket": sock}),
                       check_started=False)
    second.wait_exit(20)
    assert second.returncode == 1, second.log()
    assert second.log_lines(f"another resend-dropd answers on the control socket '{sock}'")
    assert ctl(env, config, "status")[0] == 0, "the refused daemon removed the live socket"
    assert_clean_exit(daemon)


def test_commands_say_when_the_socket_cannot_be_accessed(pipe_env):
    env = pipe_env
    box = env.folder("box")
    config = env.config([box])
    sock = env.control_socket()
    daemon = env.start(config)
    os.chmod(env.root, 0o711)  # others may pass through the tree, not use the socket (0660)
    try:
        code, out, err = ctl(env, None, "status", socket_path=sock,
                             prefix=("setpriv", "--reuid=65534", "--regid=65534",
                                     "--clear-groups"))
    finally:
        os.chmod(env.root, 0o700)
    assert code == 2 and err.strip() == f"cannot connect to {sock}: Permission denied", err
    assert ctl(env, config, "status")[0] == 0
    assert_clean_exit(daemon)


def test_by_hand_the_socket_is_in_state_dir_and_the_commands_find_it(pipe_env):
    """Without control.socket, a daemon run by hand (no systemd) listens in state_dir, and the
    commands, given the same configuration, look there (after the service's place)."""
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box], control=False)
    daemon = env.start(config)
    sock = os.path.join(env.state_dir, "control.sock")
    env.wait_for(lambda: os.path.exists(sock), "the socket in state_dir")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert not daemon.log_lines("no control socket")
    code, out, err = ctl(env, config, "status")
    assert code == 0, err
    assert re.search(r"^box\s", out, re.M), out
    box.drop("plain.csv", "email\nplain@example.com\n")
    env.wait_outcomes(box, done=1)
    daemon.stop()
    assert not os.path.exists(sock), "the socket outlived the daemon"
    code, out, err = ctl(env, config, "status")
    assert code == 2 and err.startswith("resend-dropd is not running (") and sock in err, err


def test_under_systemd_the_socket_is_in_the_runtime_directory(pipe_env):
    """With systemd's RuntimeDirectory= ($RUNTIME_DIRECTORY), the socket is there; a command run
    beside it (ExecReload=, say) finds it through the same variable."""
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box], control=False)
    runtime = os.path.join(env.root, "run")
    os.mkdir(runtime, 0o750)
    daemon = env.start(config, env={"RUNTIME_DIRECTORY": runtime})
    sock = os.path.join(runtime, "control.sock")
    env.wait_for(lambda: os.path.exists(sock), "the socket in RUNTIME_DIRECTORY")
    assert not os.path.exists(os.path.join(env.state_dir, "control.sock"))
    code, out, err = ctl(env, config, "status", extra_env={"RUNTIME_DIRECTORY": runtime})
    assert code == 0, err
    daemon.stop()


def test_a_daemon_that_answers_on_no_socket_is_not_called_not_running(pipe_env):
    """"Not running" only when nothing answers and no process holds the folders: a --once run
    (which has no socket) busy with a slow upload, and a daemon whose socket was removed, are
    named with their pid."""
    env = pipe_env
    box = env.folder("box", follow_import=False)
    config = env.config([box])
    sock = env.control_socket()
    env.fake.faults([{"delay": 4, "count": 1, "method": "POST",
                      "path_prefix": "/contacts/imports"}])
    box.drop("slow.csv", CSV)
    once = env.start(config, "--once", check_started=False)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] >= 1, "the slow upload")
    code, out, err = ctl(env, config, "status")
    assert code == 2, (code, out, err)
    assert err.startswith(f"resend-dropd is running (pid {once.pid} serves folder 'box') but "
                          f"does not answer on a control socket (no socket at {sock})"), err
    once.wait_exit(30)
    assert once.returncode == 0, once.log()

    daemon = env.start(config)
    os.unlink(sock)
    code, out, err = ctl(env, config, "pause")
    assert code == 2 and f"(pid {daemon.pid} serves folder 'box')" in err, err
    daemon.stop()
    code, out, err = ctl(env, config, "status")
    assert code == 2 and err.strip() == f"resend-dropd is not running (no socket at {sock})", err
