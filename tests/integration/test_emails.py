"""Issue 20: e-mail through Resend itself. The daemon sends what a receiver of `emails:` asked for
(by default a file failed, a folder stuck, the intake paused) as POST /emails with the daemon's
key, and a daily digest; each request is a token of the rate budget the uploads spend, counted in
/metrics. Everything is asserted at the fake API, which checks a send as Resend does and records
it (its headers too).

  - a failed file: one e-mail from/to as configured, its subject and text naming the file, the
    folder and the error; the Idempotency-Key is the event's msg_id; a file done sends nothing;
  - the team's limit: uploads and e-mails together never go past it (no 429), and each e-mail
    is counted under endpoint="send_email";
  - Resend failing: the e-mail is tried again under the same Idempotency-Key and sent once; an
    e-mail Resend refuses (422) is given up at once, said, counted, and the queue goes on;
  - the daily digest at its local time (the daemon runs in a time zone chosen so that the time
    comes a few seconds after the start): the day's files, folder by folder, with the failure;
  - the configuration's checks, with file, line and column."""

import datetime
import os
import re
import subprocess

import pytest

from daemon_harness import (API_KEY, binary_path, control_metrics,  # noqa: F401
                            control_status, pipe_env, pipe_fake)

GOOD = b"email,first_name\na@example.com,Ann\nb@example.com,Bob\n"
NO_EMAIL_COLUMN = b"name,city\nAnn,Oslo\n"


def receiver(**more):
    r = {"name": "ops", "from": "resend-dropd <dropd@example.com>",
         "to": ["ops@example.com", "Oncall <oncall@example.com>"],
         "digest": "off", "retry_initial_s": 1, "retry_max_s": 2}
    r.update(more)
    return r


def email_requests(env):
    return [r for r in env.fake.requests() if r["path"] == "/emails"]


def test_a_failed_file_is_mailed_once_and_a_done_one_is_not(pipe_env):
    env = pipe_env
    box = env.folder("crm")
    daemon = env.start(env.config([box], extra={"emails": [receiver()]}))
    box.drop("good.csv", GOOD)
    env.wait_outcomes(box, done=1)
    box.drop("bad.csv", NO_EMAIL_COLUMN)
    env.wait_outcomes(box, done=1, failed=1)
    [mail] = env.fake.wait_emails(1)
    payload = mail["body"]
    assert payload["from"] == "resend-dropd <dropd@example.com>"
    assert payload["to"] == ["ops@example.com", "Oncall <oncall@example.com>"]
    assert "bad.csv" in payload["subject"] and "crm" in payload["subject"]
    assert "failed" in payload["subject"]
    text = payload["text"]
    assert "bad.csv" in text and "crm" in text
    assert "email" in text.lower(), "the error (no email column) is said"
    assert "resend-dropd retry crm bad.csv" in text
    assert env.root not in text, "no path of the daemon's host"
    assert payload["tags"] == [{"name": "resend_dropd_event", "value": "file_failed"}]

    [request] = email_requests(env)
    key = request["headers"]["idempotency-key"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}", key)
    assert key in text, "the e-mail names its event, as a webhook's receiver sees it"
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"

    metrics = control_metrics(env.control_socket())
    assert 'resend_dropd_api_requests_total{endpoint="send_email",code="200"} 1' in metrics
    assert 'resend_dropd_notifications_delivered_total{receiver="email:ops"} 1' in metrics
    assert 'resend_dropd_notifications_pending{receiver="email:ops"} 0' in metrics
    # `resend-dropd status` shows the receiver's queue, in its JSON and its table.
    [queue] = control_status(env.control_socket())["notifications"]
    assert queue["receiver"] == "email:ops"
    assert (queue["delivered"], queue["failed_attempts"], queue["dropped"]) == (1, 0, 0)
    table = subprocess.run([binary_path(), "-c", daemon.config, "status"], capture_output=True,
                           text=True, timeout=30, env={**os.environ, "RESEND_API_KEY": API_KEY})
    assert table.returncode == 0, table.stderr
    assert re.search(r"^RECEIVER\s+PENDING\s+OLDEST\s+DELIVERED\s+FAILED\s+DROPPED$",
                     table.stdout, re.M), table.stdout
    assert re.search(r"^email:ops\s+0\s+-\s+1\s+0\s+0$", table.stdout, re.M), table.stdout
    # Nothing more comes: the file done made no e-mail.
    daemon.stop()
    assert len(env.fake.emails()) == 1


def test_emails_and_uploads_share_the_teams_limit(pipe_env):
    """The fake allows 2 requests a second for the whole team; the daemon is told so. Eight
    files fail at the import (the fake fails them), each making an upload, a poll and an
    e-mail: no request is refused for the limit, and the e-mails are in the count."""
    env = pipe_env
    env.fake.configure(rps=2)
    box = env.folder("crm", coalesce="off")
    config = env.config([box], api={"requests_per_second": 2},
                        extra={"emails": [receiver()]})
    daemon = env.start(config)
    for i in range(6):
        box.drop(f"f{i}.csv", NO_EMAIL_COLUMN.replace(b"Ann", f"Ann{i}".encode()))
    env.wait_outcomes(box, failed=6, timeout=60)
    env.fake.wait_emails(6, timeout=60)
    requests = env.fake.requests()
    assert not [r for r in requests if r["status"] == 429], "a request went past the limit"
    assert len(email_requests(env)) == 6
    metrics = control_metrics(env.control_socket())
    assert 'resend_dropd_api_requests_total{endpoint="send_email",code="200"} 6' in metrics
    daemon.stop()


def test_resend_failing_is_retried_under_one_key_and_a_refusal_is_given_up(pipe_env):
    env = pipe_env
    box = env.folder("crm")
    # Two 500s, then the send goes.
    env.fake.faults([{"status": 500, "count": 2, "path_prefix": "/emails"}])
    daemon = env.start(env.config([box], extra={"emails": [receiver()]}))
    box.drop("one.csv", NO_EMAIL_COLUMN)
    env.wait_outcomes(box, failed=1)
    env.fake.wait_emails(1, timeout=30)
    tries = email_requests(env)
    assert [r["status"] for r in tries] == [500, 500, 200]
    assert len({r["headers"]["idempotency-key"] for r in tries}) == 1
    env.wait_for(lambda: daemon.log_lines("e-mail 'ops': Resend takes its e-mails again"),
                 "the recovery said")
    assert len(daemon.log_lines("e-mail 'ops': cannot deliver through Resend")) == 1

    # A 422: the same e-mail would be refused again. Given up at once; the next one goes.
    env.fake.faults([{"status": 422, "name": "validation_error", "count": 1,
                      "message": "Invalid `to` field.", "path_prefix": "/emails"}])
    box.drop("two.csv", NO_EMAIL_COLUMN.replace(b"Ann", b"Two"))
    env.wait_outcomes(box, failed=2)
    env.wait_for(lambda: daemon.log_lines("gave up event"), "the refusal said")
    [said] = daemon.log_lines("gave up event")
    assert "Invalid `to` field." in said and "after 1 attempt" in said
    box.drop("three.csv", NO_EMAIL_COLUMN.replace(b"Ann", b"Three"))
    env.wait_outcomes(box, failed=3)
    mails = env.fake.wait_emails(2, timeout=30)
    assert "three.csv" in mails[-1]["body"]["subject"]
    assert not [m for m in mails if "two.csv" in m["body"]["subject"]]
    metrics = control_metrics(env.control_socket())
    assert 'resend_dropd_notifications_dropped_total{receiver="email:ops"} 1' in metrics
    assert 'resend_dropd_api_requests_total{endpoint="send_email",code="422"} 1' in metrics
    daemon.stop()


def tz_where_it_is_almost(hh, mm, seconds_before):
    """A POSIX TZ under which the local time is `seconds_before` seconds before HH:MM."""
    now = datetime.datetime.now(datetime.timezone.utc)
    target = now.replace(hour=hh, minute=mm, second=0, microsecond=0) - \
        datetime.timedelta(seconds=seconds_before)
    offset = int((target - now).total_seconds()) % 86400  # local = UTC + offset
    if offset > 43200:
        offset -= 86400
    # POSIX TZ offsets are west-positive: "XXX-01:00:00" is one hour east of UTC.
    sign = "-" if offset >= 0 else "+"
    offset = abs(offset)
    if offset > 24 * 3600 - 1:
        offset = 24 * 3600 - 1
    return f"RDD{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}:{offset % 60:02d}"


def test_the_daily_digest_comes_at_its_local_time(pipe_env):
    env = pipe_env
    box = env.folder("crm")
    other = env.folder("news")
    # The digest is due at 07:30 local time; the daemon's clock says it is 12 s before.
    tz = tz_where_it_is_almost(7, 30, 12)
    config = env.config([box, other], extra={"emails": [receiver(digest="07:30",
                                                                 events=["file.failed"])]})
    daemon = env.start(config, env={"TZ": tz})
    box.drop("good.csv", GOOD)
    box.drop("bad.csv", NO_EMAIL_COLUMN)
    other.drop("news.csv", b"email,first_name\nn1@example.com,Nan\nn2@example.com,Ned\n")
    env.wait_outcomes(box, done=1, failed=1)
    env.wait_outcomes(other, done=1)
    mails = env.fake.wait_emails(2, timeout=40)
    digests = [m["body"] for m in mails if "daily digest" in m["body"]["subject"]]
    assert len(digests) == 1, [m["body"]["subject"] for m in mails]
    digest = digests[0]
    assert digest["subject"].startswith("resend-dropd daily digest: 2 imported, 1 failed")
    text = digest["text"]
    assert re.search(r"^crm\s+2\s+1\s+0\s+1\s+0\s+2\s+0\s*$", text, re.M), text
    assert re.search(r"^news\s+1\s+1\s+0\s+0\s+0\s+2\s+0\s*$", text, re.M), text
    assert re.search(r"^- \S+ crm/bad\.csv: ", text, re.M), text
    assert digest["tags"] == [{"name": "resend_dropd_event", "value": "digest"}]
    # One digest a day: the next is a day away.
    metrics = control_metrics(env.control_socket())
    assert 'resend_dropd_notifications_delivered_total{receiver="email:ops"} 2' in metrics
    daemon.stop()


@pytest.mark.parametrize("item, message", [
    ({"name": "ops", "to": "ops@example.com"}, "from"),
    ({"name": "ops", "from": "dropd@example.com", "to": "not an address"},
     "'not an address' is not an e-mail address"),
    ({"name": "ops", "from": "Drop <dropd@example.com", "to": "ops@example.com"},
     "is not an e-mail address"),
    ({"name": "ops", "from": "dropd@example.com", "to": "ops@example.com", "digest": "25:00"},
     "expected the daily digest's local time as HH:MM"),
    ({"name": "ops", "from": "dropd@example.com",
      "to": [f"u{i}@example.com" for i in range(51)]}, "expected 1 to 50 addresses"),
])
def test_the_configuration_says_what_is_wrong_and_where(pipe_env, item, message):
    env = pipe_env
    box = env.folder("crm")
    path = env.config([box], extra={"emails": [item]})
    run = subprocess.run([binary_path(), "--check", "-c", path], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "RESEND_API_KEY": API_KEY})
    assert run.returncode != 0
    [line] = [x for x in run.stderr.splitlines() if "emails[0]" in x]
    assert re.match(re.escape(path) + r":\d+:\d+: emails\[0\]", line), line
    assert message in line, line
