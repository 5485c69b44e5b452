"""Issue 20: signed webhooks through the ledger's outbox. Each test starts a receiver of its own
(webhook_receiver.py), which checks every signature with its own HMAC code, never the daemon's,
and the fake API; it asserts what reached the receiver, in which order, how many times, and what
the outbox in the ledger (read with Python's sqlite3, read-only) and /metrics say.

  - a file done, one failed, one imported without some rows: the events each webhook asked
    for, signed, with the payload a receiver can act on, and nothing of the host's paths;
  - kill -9 after a file's end is recorded and before its event is delivered: delivered after
    the restart, once;
  - a receiver down for a while: the events wait, in order, and are delivered once it is up
    (each once, unless an attempt's answer never came);
  - a receiver that keeps failing: said once in the log, counted in /metrics, given up after
    give_up_after_h (here shortened through the ledger itself);
  - the configuration's checks: a secret that is not a Standard Webhooks secret, a plain http
    URL to another host, a folder that does not exist, all with file, line and column."""

import base64
import os
import re
import sqlite3
import subprocess
import time

import pytest

from daemon_harness import (binary_path, control_metrics, daemon_environment,  # noqa: F401
                            fill_filesystem, pipe_env, pipe_fake, tmpfs_mounted)
from webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()


def csv(tag, rows=2, bad=0):
    lines = ["email,first_name"] + [f"{tag}{i}@example.com,{tag.title()} {i}"
                                    for i in range(rows)]
    lines += [f"not-an-email-{i},Bad" for i in range(bad)]
    return ("\n".join(lines) + "\n").encode()


def secret_file(env, name, secret=SECRET):
    path = os.path.join(env.root, f"{name}.secret")
    with open(path, "w") as file:
        file.write(secret + "\n")
    os.chmod(path, 0o600)
    return path


def webhook(env, receiver, name="ops", **more):
    hook = {"name": name, "url": receiver.url, "secret_file": secret_file(env, name),
            "retry_initial_s": 1, "retry_max_s": 2, "timeout_s": 5}
    hook.update(more)
    return hook


def outbox(env):
    path = os.path.join(env.state_dir, "ledger.sqlite")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        con.close()


def events(deliveries):
    return [(d.json["type"], d.json["data"]["file"]) for d in deliveries]


def test_file_events_are_signed_and_say_what_happened(pipe_env):
    env = pipe_env
    box = env.folder("crm", invalid_rows="drop")
    with WebhookReceiver(SECRET) as receiver:
        config = env.config([box], extra={"webhooks": [webhook(env, receiver)]})
        daemon = env.start(config)
        box.drop("good.csv", csv("good", 3))
        env.wait_outcomes(box, done=1)
        box.drop("rejects.csv", csv("rej", 2, bad=1))
        env.wait_outcomes(box, done=2)
        box.drop("empty.csv", b"")
        env.wait_outcomes(box, done=2, failed=1)
        got = receiver.wait_for(4, timeout=20)
        # The rows counted as the dashboard's "Rows uploaded and rejected" reads them.
        metrics = control_metrics(env.control_socket())
        assert 'resend_dropd_rows_uploaded_total{folder="crm"} 5' in metrics
        assert 'resend_dropd_rows_rejected_total{folder="crm"} 1' in metrics
        daemon.stop()
    assert all(d.verified for d in got), [(d.verified, d.reason) for d in got]
    assert events(got) == [("file.done", "good.csv"), ("file.done", "rejects.csv"),
                           ("rows.rejected", "rejects.csv"), ("file.failed", "empty.csv")]
    ids = [d.headers["webhook-id"] for d in got]
    assert len(set(ids)) == 4 and all(re.fullmatch(r"msg_[0-9a-f]{32}", i) for i in ids)
    good = got[0].json
    assert good["data"]["folder"] == "crm" and good["data"]["outcome"] == "imported"
    assert good["data"]["rows"] == {"read": 3, "uploaded": 3, "rejected": 0}
    assert re.fullmatch(r"[0-9a-f-]{36}", good["data"]["import_id"])
    assert good["data"]["import"]["status"] == "completed"
    rejected = got[2].json["data"]
    assert rejected["rows"]["rejected"] == 1 and rejected["rows"]["uploaded"] == 2
    failed = got[3].json["data"]
    assert failed["outcome"] == "failed" and failed["error"]["stage"] == "check"
    assert failed["error"]["message"]
    # Only what a receiver may see: no path of this host, no key.
    for d in got:
        assert env.root not in d.body.decode() and "re_" not in d.body.decode()
    rows = outbox(env)
    assert [r["state"] for r in rows] == ["delivered"] * 4
    assert all(r["attempts"] == 1 for r in rows)


def test_each_webhook_gets_the_events_and_folders_it_asked_for(pipe_env):
    env = pipe_env
    crm = env.folder("crm")
    shop = env.folder("shop")
    with WebhookReceiver(SECRET) as all_of_it, WebhookReceiver(OTHER_SECRET) as failures:
        hooks = [webhook(env, all_of_it, "all"),
                 dict(webhook(env, failures, "failures", events=["file.failed"],
                              folders=["shop"]),
                      secret_file=secret_file(env, "failures", OTHER_SECRET))]
        daemon = env.start(env.config([crm, shop], extra={"webhooks": hooks}))
        crm.drop("a.csv", csv("a"))
        crm.drop("bad.csv", b"")
        shop.drop("b.csv", csv("b"))
        shop.drop("worse.csv", b"")
        env.wait_outcomes(crm, done=1, failed=1)
        env.wait_outcomes(shop, done=1, failed=1)
        everything = all_of_it.wait_for(4, timeout=20)
        only = failures.wait_for(1, timeout=20)
        time.sleep(1)
        assert len(failures.deliveries()) == 1
        daemon.stop()
    assert all(d.verified for d in everything + only)
    assert sorted(events(everything)) == [("file.done", "a.csv"), ("file.done", "b.csv"),
                                          ("file.failed", "bad.csv"),
                                          ("file.failed", "worse.csv")]
    assert events(only) == [("file.failed", "worse.csv")]


def test_kill_between_the_end_and_its_delivery_delivers_after_restart(pipe_env):
    env = pipe_env
    box = env.folder("crm")
    with WebhookReceiver(SECRET) as receiver:
        receiver.down()
        config = env.config([box], extra={"webhooks": [webhook(env, receiver)]})
        daemon = env.start(config)
        box.drop("a.csv", csv("a"))
        box.drop("b.csv", csv("b"))
        env.wait_outcomes(box, done=2)
        env.wait_for(lambda: len(outbox(env)) == 2, "both events in the outbox")
        daemon.kill()
        assert [r["state"] for r in outbox(env)] == ["pending", "pending"]
        receiver.up()
        daemon = env.start(config)
        got = receiver.wait_for(2, timeout=20)
        time.sleep(1.5)
        daemon.stop()
        assert len(receiver.deliveries()) == 2
    assert all(d.verified for d in got)
    assert sorted(events(got)) == [("file.done", "a.csv"), ("file.done", "b.csv")]
    assert [r["state"] for r in outbox(env)] == ["delivered", "delivered"]


def test_a_receiver_down_for_a_while_gets_everything_in_order(pipe_env):
    env = pipe_env
    box = env.folder("crm")
    with WebhookReceiver(SECRET) as receiver:
        config = env.config([box], extra={"webhooks": [webhook(env, receiver)]})
        daemon = env.start(config)
        receiver.fail_first(3, status=503)
        for i in range(5):
            box.drop(f"f{i}.csv", csv(f"f{i}"))
            env.wait_outcomes(box, done=i + 1)
        env.wait_for(lambda: len(receiver.accepted()) == 5, "five events accepted",
                     timeout=40)
        daemon.stop()
        got = receiver.deliveries()
    accepted = [d for d in got if d.status == 200]
    assert events(accepted) == [("file.done", f"f{i}.csv") for i in range(5)]
    # The three refusals were all of the first event (the queue waits behind it, in order).
    refused = [d for d in got if d.status != 200]
    assert len(refused) == 3 and {d.headers["webhook-id"] for d in refused} == \
        {accepted[0].headers["webhook-id"]}
    log = daemon.log()
    assert log.count("webhook 'ops': cannot deliver to") == 1, log
    assert "webhook 'ops': its receiver takes events again (after 3 failed attempts)" in log
    rows = outbox(env)
    assert rows[0]["attempts"] == 4 and all(r["state"] == "delivered" for r in rows)


def test_failures_are_counted_and_an_event_is_given_up_in_the_end(pipe_env):
    env = pipe_env
    box = env.folder("crm")
    with WebhookReceiver(SECRET) as receiver:
        receiver.answer(500)
        config = env.config([box],
                            extra={"webhooks": [webhook(env, receiver, give_up_after_h=1)]})
        daemon = env.start(config)
        box.drop("a.csv", csv("a"))
        env.wait_outcomes(box, done=1)
        receiver.wait_for(2, timeout=20)
        env.wait_for(lambda: re.search(
            r'resend_dropd_notification_failures_total\{receiver="webhook:ops"\} [2-9]',
            control_metrics(env.control_socket())), "two failed attempts counted")
        metrics = control_metrics(env.control_socket())
        assert 'resend_dropd_notifications_pending{receiver="webhook:ops"} 1' in metrics
        daemon.stop()
        # An event made more than give_up_after_h ago is given up at its next attempt.
        path = os.path.join(env.state_dir, "ledger.sqlite")
        con = sqlite3.connect(path)
        con.execute("UPDATE outbox SET created_at_ms = created_at_ms - 7200 * 1000, "
                    "next_at_ms = 0")
        con.commit()
        con.close()
        daemon = env.start(config)
        env.wait_for(lambda: outbox(env)[0]["state"] == "dropped", "the event given up")
        log = daemon.log()
        daemon.stop()
    assert re.search(r"webhook 'ops': gave up event msg_[0-9a-f]{32} \(file.done\) after "
                     r"\d+ attempts over 1 h; the last: HTTP 500", log), log
    assert outbox(env)[0]["last_error"].startswith("HTTP 500")


@pytest.mark.parametrize("hook, message", [
    ({"url": "http://example.com/hook"}, "expected an https:// URL"),
    ({"secret": "whsec_c2hvcnQ="}, "holds a key of 5 bytes"),
    ({"secret": "not-a-secret"}, "is not a Standard Webhooks secret"),
    ({"folders": ["nope"]}, "no folder is named 'nope'"),
    ({"events": ["file.exploded"]}, "expected one of file.done, file.failed, rows.rejected, "
                                    "folder.stuck, api_key.refused, intake.paused, "
                                    "intake.resumed"),
    ({"events": []}, "expected at least one event"),
    ({"secret_file": None}, "set one of secret_file or secret_credential"),
])
def test_check_says_what_is_wrong_with_a_webhook(pipe_env, hook, message):
    env = pipe_env
    box = env.folder("crm")
    settings = {"name": "ops", "url": "https://hooks.example.com/x",
                "secret_file": secret_file(env, "ops", hook.pop("secret", SECRET))}
    settings.update(hook)
    settings = {k: v for k, v in settings.items() if v is not None}
    config = env.config([box], extra={"webhooks": [settings]})
    done = subprocess.run([binary_path(), "-c", config, "--check"], capture_output=True,
                          text=True, env=daemon_environment(), timeout=60)
    assert done.returncode != 0
    assert re.search(r"resend-dropd\.yaml:\d+:\d+: webhooks\[0\]", done.stderr), done.stderr
    assert message in done.stderr, done.stderr


def readme_block(marker, language):
    """The fenced LANGUAGE block after <!-- MARKER --> in the README."""
    source = os.environ.get("RDD_SOURCE_DIR") or os.path.join(os.path.dirname(__file__),
                                                              "..", "..")
    with open(os.path.join(source, "README.md"), encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"<!-- " + re.escape(marker) + r" -->\n```" + language + r"\n(.*?)```",
                      text, re.S)
    assert match, f"no {language} block after <!-- {marker} --> in README.md"
    return match.group(1)


def test_the_readme_checks_a_real_delivery_in_shell_and_python(pipe_env, tmp_path):
    """The README's verification snippets, run as written on a delivery the daemon made: a
    true signature passes, a body changed by one byte does not."""
    env = pipe_env
    box = env.folder("crm")
    with WebhookReceiver(SECRET) as receiver:
        daemon = env.start(env.config([box], extra={"webhooks": [webhook(env, receiver)]}))
        box.drop("a.csv", csv("a"))
        [got] = receiver.wait_for(1, timeout=20)
        daemon.stop()
    (tmp_path / "webhook.secret").write_text(SECRET + "\n")
    shell = readme_block("verify-webhook-sh", "sh")
    namespace = {}
    exec(readme_block("verify-webhook-python", "python"), namespace)
    for body, valid in ((got.body, True), (got.body.replace(b"a.csv", b"b.csv"), False)):
        (tmp_path / "body.json").write_bytes(body)
        done = subprocess.run(["sh", "-c", shell], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30,
                              env={**os.environ, "id": got.headers["webhook-id"],
                                   "ts": got.headers["webhook-timestamp"],
                                   "sig": got.headers["webhook-signature"]})
        assert (done.returncode == 0 and done.stdout == "valid\n") == valid, \
            (done.returncode, done.stdout, done.stderr)
        assert namespace["verify"](SECRET, got.headers, body) is valid


def test_the_daemons_own_events(pipe_env):
    """A folder that cannot be served and a key Resend refuses: each told once, signed, with
    what happened; a webhook of one folder hears of no other folder's trouble, and of the
    daemon's own (the key) all the same."""
    env = pipe_env
    ok = env.folder("ok")
    gone = env.folder("gone")
    os.rmdir(gone.inbox)
    with WebhookReceiver(SECRET) as receiver, WebhookReceiver(OTHER_SECRET) as ok_only:
        hooks = [webhook(env, receiver),
                 dict(webhook(env, ok_only, "ok-only", folders=["ok"]),
                      secret_file=secret_file(env, "ok-only", OTHER_SECRET))]
        daemon = env.start(env.config([ok, gone], extra={"webhooks": hooks}),
                           api_key="re_RefusedByTheFake_0000000000000000")
        ok.drop("a.csv", csv("a"))
        got = receiver.wait_for(2, timeout=30)
        ok_only.wait_for(1, timeout=30)
        time.sleep(1)
        daemon.stop()
        assert [d.json["type"] for d in ok_only.deliveries()] == ["api_key.refused"]
    assert all(d.verified for d in got)
    by_type = {d.json["type"]: d.json for d in got}
    assert sorted(by_type) == ["api_key.refused", "folder.stuck"], [d.json for d in got]
    stuck = by_type["folder.stuck"]["data"]
    assert stuck["folder"] == "gone" and "cannot be served" in stuck["message"]
    refused = by_type["api_key.refused"]["data"]
    assert refused["folder"] is None and "refused the API key" in refused["message"]
    assert len(receiver.deliveries()) == 2


def test_intake_paused_and_resumed_when_the_ledger_fails(pipe_env):
    """The ledger's filesystem fills up: intake pauses, and the event says so once the ledger
    can be written again (it waits in the ledger's queue of writes), then that it resumed."""
    env = pipe_env
    mount = os.path.join(env.root, "small-state")
    with tmpfs_mounted(mount, "4m"), WebhookReceiver(SECRET) as receiver:
        try:
            box = env.folder("box")
            config = env.config([box], state_dir=mount,
                                extra={"webhooks": [webhook(env, receiver,
                                                            events=["intake.paused",
                                                                    "intake.resumed"])]})
            daemon = env.start(config)
            box.drop("before.csv", csv("before"))
            env.wait_outcomes(box, done=1)
            filler = fill_filesystem(mount)
            box.drop("trigger.csv", csv("trigger"))
            env.wait_for(lambda: "no new file is taken" in daemon.log(), "the pause",
                         timeout=20)
            time.sleep(1)
            assert receiver.deliveries() == []
            os.unlink(filler)
            got = receiver.wait_for(2, timeout=30)
            daemon.stop()
        finally:
            for d in env.daemons:
                d.kill()
    assert [d.json["type"] for d in got] == ["intake.paused", "intake.resumed"]
    assert "no space left" in got[0].json["data"]["message"].lower() or \
        "full" in got[0].json["data"]["message"].lower(), got[0].json


def test_the_secret_from_a_systemd_credential(pipe_env, tmp_path):
    """secret_credential: NAME reads $CREDENTIALS_DIRECTORY/NAME (LoadCredential=); without
    that directory, --check says how to give it."""
    env = pipe_env
    box = env.folder("crm")
    (tmp_path / "hook-secret").write_text(SECRET + "\n")
    config = env.config([box], extra={"webhooks": [{
        "name": "ops", "url": "https://hooks.example.com/x",
        "secret_credential": "hook-secret"}]})
    ok = subprocess.run([binary_path(), "-c", config, "--check"], capture_output=True,
                        text=True, timeout=60,
                        env={**daemon_environment(), "CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    environment = {k: v for k, v in daemon_environment().items()
                   if k != "CREDENTIALS_DIRECTORY"}
    missing = subprocess.run([binary_path(), "-c", config, "--check"], capture_output=True,
                             text=True, timeout=60, env=environment)
    assert missing.returncode != 0
    assert "there is no systemd credential here" in missing.stderr, missing.stderr
    assert "LoadCredential=hook-secret:" in missing.stderr, missing.stderr
