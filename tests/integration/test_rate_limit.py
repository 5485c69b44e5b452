"""Resend's rate limit is a wait, never a failure: the team's limit (shared with the team's other
apps) answers 429, and however many 429s come, no file loses an attempt for them or fails.

The fake enforces a team limit (`rps`) on every endpoint, as Resend does, and can inject 429s on
top (faults), as another app of the same team spending the budget would cause."""

import re

from daemon_harness import control_metrics, control_status, pipe_env, pipe_fake  # noqa: F401

CSV = b"email,first_name\n%s@example.com,Someone\n"


def drop_files(folder, count):
    for i in range(count):
        folder.drop(f"list-{i:02d}.csv", CSV % f"person{i}".encode())


def test_a_limit_below_the_daemons_ceiling_fails_no_file(pipe_env):
    """The daemon may send 50 requests/s; the team's limit is 2/s, and every answer says so
    (ratelimit-limit): the daemon keeps to it, so that hardly a request is refused (at the edge
    of the fake's windows, at most); every file is done, each with its one attempt, and what
    429s came are counted as waits. (Each file its own import: coalesce off, so that there are
    many requests.)"""
    env = pipe_env
    env.fake.configure(rps=2)
    box = env.folder("box", coalesce="off")
    # Two attempts at most: were a 429 an attempt, files would fail at once.
    daemon = env.start(env.config([box], retry={"max_attempts": 2}))
    drop_files(box, 12)
    env.wait_outcomes(box, done=12, timeout=60)

    reports = box.reports("done")
    assert len(reports) == 12 and not box.reports("failed")
    requests = [r for r in env.fake.requests() if r["path"].startswith("/contacts/imports")]
    refused = [r for r in requests if r["status"] == 429]
    assert len(requests) >= 20  # 12 uploads and their follow-up (a list may answer two)
    assert len(refused) <= 3, f"{len(refused)} of {len(requests)} requests refused"
    assert all(r["attempts"] == 1 for r in reports.values()), reports
    assert sum(r["rate_limited"] for r in reports.values()) == len(refused)
    # Said once per row of refusals, not once per refused request.
    said = daemon.log_lines(r"Resend's rate limit was reached")
    assert len(said) <= len(refused)
    assert not daemon.log_lines(r"upload attempt \d+ failed")
    metrics = control_metrics(env.control_socket())
    assert re.search(r'resend_dropd_rate_limited_total\{folder="box"\} %d\b' % len(refused),
                     metrics), metrics
    daemon.stop()


def test_injected_429s_never_fail_a_file(pipe_env):
    """Six 429s in a row at a limit of 1 request/s (another app spending the team's budget),
    ten files, max_attempts 2: every file is done; a 429 holds requests back for its
    retry-after."""
    env = pipe_env
    env.fake.configure(rps=1)
    env.fake.faults([{"status": 429, "name": "rate_limit_exceeded", "retry_after": 1,
                      "count": 6, "path_prefix": "/contacts/imports"}])
    # One request at a time (one upload slot, imports not followed), so that "after the
    # 429" is exact: no request was on its way when the refusal arrived.
    # Each file its own request (coalesce off): a refusal is one file's wait.
    box = env.folder("box", follow_import=False, coalesce="off")
    daemon = env.start(env.config([box], retry={"max_attempts": 2},
                                  api={"requests_per_second": 5, "max_in_flight": 1}))
    drop_files(box, 10)
    env.wait_outcomes(box, done=10, timeout=90)

    reports = box.reports("done")
    assert not box.reports("failed")
    assert all(r["attempts"] == 1 for r in reports.values()), reports
    requests = [r for r in env.fake.requests() if r["path"].startswith("/contacts/imports")]
    refused = [r for r in requests if r["status"] == 429]
    assert len(refused) >= 6
    assert sum(r["rate_limited"] for r in reports.values()) == len(refused)
    # After each refusal (retry-after: 1, the fake's own and the injected), nothing was sent
    # for a second.
    for r in refused:
        later = [q for q in requests if q["started"] > r["finished"]]
        if later:
            gap = min(q["started"] for q in later) - r["finished"]
            assert gap >= 0.9, f"a request {gap:.2f} s after a 429 with retry-after 1"
    daemon.stop()


def test_the_budget_is_the_announced_limit_times_the_share(pipe_env):
    """The team's limit is 5/s, announced in every answer's ratelimit-limit: the daemon spends
    rate_share of it (here half: 2.5/s), under its own ceiling, whatever it assumed before the
    first answer (2/s)."""
    env = pipe_env
    env.fake.configure(rps=5)
    box = env.folder("box", follow_import=False, coalesce="off")
    env.start(env.config([box], api={"requests_per_second": 50, "rate_share": 0.5,
                                     "max_in_flight": 4}))
    rl = control_status(env.control_socket())["api"]["rate_limit"]
    assert rl["team_limit"] is None and rl["requests_per_second"] == 1, rl  # half of 2
    drop_files(box, 6)
    env.wait_outcomes(box, done=6, timeout=60)
    rl = control_status(env.control_socket())["api"]["rate_limit"]
    assert rl["team_limit"] == 5 and rl["share"] == 0.5 and rl["ceiling"] == 50, rl
    assert rl["requests_per_second"] == 2.5, rl
    uploads = [r for r in env.fake.requests() if r["method"] == "POST"]
    # 6 uploads at 2.5/s: at least 2 s from the first to the last (a bucket of 2.5 tokens).
    span = uploads[-1]["started"] - uploads[0]["started"]
    assert span >= 1.0, span
    assert not [r for r in env.fake.requests() if r["status"] == 429]
