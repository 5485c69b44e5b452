"""Resend's rate limit is a wait, never a failure: the team's limit (shared with the team's other
apps) answers 429, and however many 429s come, no file loses an attempt for them or fails.

The fake enforces a team limit (`rps`) on every endpoint, as Resend does, and can inject 429s on
top (faults), as another app of the same team spending the budget would cause."""

import re

from daemon_harness import control_metrics, pipe_env, pipe_fake  # noqa: F401

CSV = b"email,first_name\n%s@example.com,Someone\n"


def drop_files(folder, count):
    for i in range(count):
        folder.drop(f"list-{i:02d}.csv", CSV % f"person{i}".encode())


def test_a_limit_below_the_daemons_ceiling_fails_no_file(pipe_env):
    """The daemon may send 50 requests/s; the team's limit is 2/s: every file is done, each
    with its one attempt, and the 429s are counted as waits."""
    env = pipe_env
    env.fake.configure(rps=2)
    box = env.folder("box")
    # Two attempts at most: were a 429 an attempt, files would fail at once.
    daemon = env.start(env.config([box], retry={"max_attempts": 2}))
    drop_files(box, 12)
    env.wait_outcomes(box, done=12, timeout=60)

    reports = box.reports("done")
    assert len(reports) == 12 and not box.reports("failed")
    refused = [r for r in env.fake.requests() if r["status"] == 429]
    assert refused, "the fake's limit refused nothing: the test shows nothing"
    assert all(r["attempts"] == 1 for r in reports.values()), reports
    assert sum(r["rate_limited"] for r in reports.values()) == len(refused)
    # Said once per row of refusals, not once per refused request.
    said = daemon.log_lines(r"Resend's rate limit was reached")
    assert 1 <= len(said) <= len(refused)
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
    box = env.folder("box", follow_import=False)
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
