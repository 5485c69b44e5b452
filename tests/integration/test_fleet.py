"""Issue 19, several hosts on one shared inbox: daemons with the PostgreSQL ledger, each with its
own host_id, serve the same folders. A file is claimed in the database before the rename into a
host's own processing directory (.resend-dropd/fleet/<host_id>); each host renews a lease; the
files of a host whose lease ended are taken over by another and resumed (followed or reconciled,
never uploaded again blindly); the hosts alive divide the team's rate limit.

Against a real PostgreSQL server the test starts (pg_harness.PgServer) and the fake API. The
daemons run on this machine with separate state directories and control sockets, as separate
hosts would; the shared filesystem case (sshfs, where inotify is blind) is test_fleet_sshfs.py."""

import collections
import json
import os
import subprocess
import time

import pytest

from daemon_harness import (Folder, control_metrics, control_status, pipe_env,  # noqa: F401
                            pipe_fake)
from fleet_harness import HEARTBEAT_S, LEASE_S, csv, fleet_config, hosts_of, imported_names
from pg_harness import PgServer

TIMEOUT = 120


@pytest.fixture
def pg():
    with PgServer() as server:
        yield server


def test_three_hosts_share_one_inbox_each_file_imported_once(pipe_env, pg):
    """Three daemons on one inbox, 300 files: every file is imported exactly once and ends in
    exactly one place (done), the work is spread over the hosts, and each ledger row names its
    host."""
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    hosts = ["h1", "h2", "h3"]
    daemons = [env.start(fleet_config(env, conninfo, [box], host)) for host in hosts]
    env.wait_for(lambda: all("fleet: 3 hosts alive" in d.log() for d in daemons),
                 "every host seeing the three", timeout=30)
    names = [f"f{i:03}.csv" for i in range(300)]
    started = time.monotonic()
    for name in names:
        box.drop(name, csv(name))
    env.wait_outcomes(box, done=300, timeout=TIMEOUT)
    took_s = time.monotonic() - started

    # What an operator sees: every host in status and metrics, each file's host in history.
    status = control_status(env.control_socket("h1.yaml"))
    assert status["ledger"] == {"backend": "postgresql", "failing": False, "error": None}
    assert status["fleet"]["host_id"] == "h1" and status["fleet"]["claiming"] is True
    assert {h["host_id"] for h in status["fleet"]["hosts"] if h["alive"]} == set(hosts)
    text = subprocess.run([env.binary, "-c", os.path.join(env.root, "h2.yaml"), "status"],
                          capture_output=True, text=True, timeout=30)
    assert text.returncode == 0, text.stderr
    assert "fleet: this host is 'h2'" in text.stdout, text.stdout
    for host in hosts:
        assert any(line.split()[:2] == [host, "yes"] for line in text.stdout.splitlines()), \
            text.stdout
    metrics = control_metrics(env.control_socket("h3.yaml"))
    assert 'resend_dropd_fleet_host_info{host="h3"} 1' in metrics
    for host in hosts:
        assert f'resend_dropd_fleet_host_up{{host="{host}"}} 1' in metrics, metrics
    assert "resend_dropd_ledger_up 1" in metrics
    history = subprocess.run([env.binary, "-c", os.path.join(env.root, "h1.yaml"), "history",
                              "--json", "--limit", "0"], capture_output=True, text=True,
                             timeout=30)
    assert history.returncode == 0, history.stderr
    listed = [json.loads(line) for line in history.stdout.splitlines() if line.strip()]
    assert len(listed) == 300 and {e["host"] for e in listed} <= set(hosts), listed[:2]

    for daemon in daemons:
        daemon.stop()
        daemon.assert_sanitizer_clean()

    counts = imported_names(env)
    assert sorted(counts) == sorted(names), set(names) ^ set(counts)
    assert set(counts.values()) == {1}, {n: c for n, c in counts.items() if c != 1}
    assert [n for n in box.inbox_entries() if not n.startswith(".")] == []
    assert box.files("failed") == []
    for host in hosts:
        own = os.path.join(box.inbox, ".resend-dropd", "fleet", host)
        assert not os.path.exists(own) or os.listdir(own) == [], os.listdir(own)
    rows = hosts_of(pg, conninfo)
    assert set(rows) == set(names)
    per_host = collections.Counter(host for host, _ in rows.values())
    assert set(per_host) <= set(hosts), per_host
    assert all(status == "done" for _, status in rows.values())
    # Spread: no host idle (each had the same chance at every file).
    print(f"300 files in {took_s:.1f} s, by host: {dict(sorted(per_host.items()))}")
    assert len(per_host) == 3 and min(per_host.values()) >= 10, per_host
    # A clean stop with nothing in processing leaves the fleet.
    assert pg.sql(conninfo, "SELECT count(*) FROM hosts") == [("0",)]
    assert pg.sql(conninfo, "SELECT count(*) FROM claims") == [("0",)]


def test_a_host_killed_during_uploads_is_taken_over(pipe_env, pg):
    """kill -9 of one host while the fake holds its uploads: after its lease ends another host
    takes its files over (moves them into its own processing directory) and finishes them; no
    file is lost, none imported twice (the killed host's uploads that reached the fake are
    reconciled, not sent again)."""
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    env.fake.configure(import_seconds=0.5)
    # The victim starts alone and takes every file; its uploads are held at the fake.
    victim = env.start(fleet_config(env, conninfo, [box], "victim",
                                    api={"max_in_flight": 2}))
    env.wait_for(lambda: "fleet: joined as host" in victim.log(), "victim joined", timeout=30)
    env.fake.faults([{"delay": 6, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 2}])
    # Distinct row counts: the list endpoint can tell each file's import from the others'
    # (with equal counts, reconciliation finds several candidates and uploads, saying so).
    names = [f"k{i:02}.csv" for i in range(12)]
    for i, name in enumerate(names):
        box.drop(name, csv(name, rows=3 + i))
    own = os.path.join(box.inbox, ".resend-dropd", "fleet", "victim")
    # Two uploads held at the fake (their imports are made once the fake has read them, after
    # the kill); the victim holds more files than that (a host takes 4 x max_in_flight).
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 2, "two uploads held")
    env.wait_for(lambda: len([n for n in os.listdir(own) if n.endswith(".csv")]) >= 4,
                 "the victim's files claimed", timeout=30)
    victim.kill()
    killed_at = time.monotonic()

    survivor = env.start(fleet_config(env, conninfo, [box], "survivor"))
    env.wait_for(lambda: "is taken over" in survivor.log(), "the takeover",
                 timeout=LEASE_S + 30)
    took_s = time.monotonic() - killed_at
    env.wait_outcomes(box, done=12, timeout=TIMEOUT)
    survivor.stop()
    survivor.assert_sanitizer_clean()

    print(f"takeover {took_s:.1f} s after the kill (lease {LEASE_S} s, heartbeat "
          f"{HEARTBEAT_S} s)")
    assert took_s <= LEASE_S + 3 * HEARTBEAT_S + 5, took_s
    counts = imported_names(env)
    assert sorted(counts) == sorted(names)
    assert set(counts.values()) == {1}, {n: c for n, c in counts.items() if c != 1}
    assert not os.path.exists(own), os.listdir(own)
    # The two uploads the fake held reached it after the kill: adopted, not sent again.
    adopted = [r for r in box.reports("done").values()
               if (r.get("reconciled") or {}).get("outcome") == "adopted"]
    assert len(adopted) == 2, [r.get("reconciled") for r in box.reports("done").values()]
    rows = hosts_of(pg, conninfo)
    assert {host for host, _ in rows.values()} <= {"victim", "survivor"}
    assert pg.sql(conninfo, "SELECT host_id FROM hosts") == []
    # One row a file, done: a taker's own file that ends while it takes over is not resumed
    # a second time (as "cannot be opened") from a listing of its directory.
    assert pg.sql(conninfo, "SELECT count(*), count(*) FILTER (WHERE status = 'done') "
                            "FROM files") == [(str(len(rows)), str(len(rows)))]


def test_a_second_daemon_with_one_host_id_is_refused_and_sqlite_stays_one_daemon(pipe_env, pg):
    """Two daemons with the same host_id on one machine: the second is refused (its processing
    directory is locked). Without a fleet, today's rule: one daemon per folder; and a fleet's
    host beside a daemon without one is refused too."""
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    first = env.start(fleet_config(env, conninfo, [box], "same"))
    second = env.start(fleet_config(env, conninfo, [box], "same").replace(
        "same.yaml", "same.yaml"), check_started=False)
    second.wait_exit(30)
    assert second.returncode == 1, second.log()
    assert "host_id 'same' on this machine" in second.log()
    first.stop()

    plain = env.start(env.config([box], name="plain.yaml"))
    host = env.start(fleet_config(env, conninfo, [box], "other"), check_started=False)
    host.wait_exit(30)
    assert host.returncode == 1, host.log()
    assert "not in a fleet" in host.log()
    plain.stop()


def test_one_content_on_two_hosts_is_imported_once(pipe_env, pg):
    """The same content dropped twice at once, each copy taken by another host (the fake holds
    the first upload so that both are in flight together): the database lets one host import
    it while the other waits, then skips its copy as a duplicate; a third copy dropped later is
    skipped too. One import in all."""
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    # One inbox, the same import settings; each host's pattern picks its own copy, so that the
    # two copies are surely on two hosts (pattern is no import setting: one content).
    box_a = Folder(box.root, "box", {"pattern": "a*.csv"}, make=False)
    box_b = Folder(box.root, "box", {"pattern": "[bc]*.csv"}, make=False)
    env.fake.faults([{"delay": 2, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    daemons = [env.start(fleet_config(env, conninfo, [folder], host))
               for host, folder in (("h1", box_a), ("h2", box_b))]
    env.wait_for(lambda: all("fleet: joined as host" in d.log() for d in daemons),
                 "both hosts joined", timeout=30)
    data = csv("same", rows=5)
    box.drop("a.csv", data)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, "a.csv's upload held")
    box.drop("b.csv", data)
    env.wait_outcomes(box, done=2, timeout=TIMEOUT)
    box.drop("c.csv", data)
    env.wait_outcomes(box, done=3, timeout=TIMEOUT)
    for daemon in daemons:
        daemon.stop()
        daemon.assert_sanitizer_clean()

    imports = [u for u in env.uploads() if u["status"] == 201]
    assert len(imports) == 1, [u["file"]["filename"] for u in imports]
    reports = box.reports("done")
    skipped = [name for name, r in reports.items() if r.get("duplicate_of")]
    assert len(skipped) == 2, {n: r.get("duplicate_of") for n, r in reports.items()}
    rows = pg.sql(conninfo, "SELECT file, status, coalesce(host_id, '') FROM files "
                            "ORDER BY file")
    assert sorted(status for _, status, _ in rows) == ["done", "skipped", "skipped"], rows
    assert pg.sql(conninfo, "SELECT count(*) FROM contents") == [("0",)]
    assert {host for _, _, host in rows} == {"h1", "h2"}, rows
    assert "waits: 'a.csv' on host 'h1', of the same content, is being imported" in \
        daemons[1].log()


def test_three_hosts_share_the_team_rate_limit(pipe_env, pg):
    """The fake enforces the team's limit, 2 requests/s, and announces it: three hosts each
    spend a third of it (the hosts alive divide it), so that together they stay within it.
    Counted at the fake, every request of every host, by the second from the first one (the
    first second allowed a burst: each host may start with a token)."""
    env = pipe_env
    conninfo = pg.new_database()
    env.fake.configure(rps=2, import_seconds=0.2)
    box = env.folder("box")
    hosts = ["h1", "h2", "h3"]
    daemons = [env.start(fleet_config(env, conninfo, [box], host,
                                      api={"requests_per_second": 10})) for host in hosts]
    env.wait_for(lambda: all("fleet: 3 hosts alive" in d.log() for d in daemons),
                 "every host seeing three alive", timeout=30)
    names = [f"r{i:02}.csv" for i in range(24)]
    for name in names:
        box.drop(name, csv(name))
    env.wait_outcomes(box, done=len(names), timeout=TIMEOUT)
    for daemon in daemons:
        daemon.stop()
        daemon.assert_sanitizer_clean()

    requests = [r for r in env.fake.requests()
                if r["headers"].get("user-agent", "").startswith("resend-dropd/")]
    start = min(r["started"] for r in requests)
    per_second = collections.Counter(int(r["started"] - start) for r in requests)
    refused = [r for r in requests if r["status"] == 429]
    busiest = max(n for second, n in per_second.items() if second > 0)
    print(f"{len(requests)} requests in {max(per_second) + 1} s, busiest second after the "
          f"first: {busiest}, first second: {per_second[0]}, 429s: {len(refused)}")
    assert busiest <= 2, sorted(per_second.items())
    assert len(refused) <= 3, len(refused)
    assert sorted(imported_names(env)) == sorted(names)


def test_a_rate_limit_pause_reaches_every_host(pipe_env, pg):
    """Resend tells one host to wait (a 429 with retry-after 6 s): that host says so at its next
    heartbeat, and the other host waits too, learning it from the database."""
    env = pipe_env
    conninfo = pg.new_database()
    box_a = env.folder("box", pattern="a*.csv")
    box_b = Folder(box_a.root, "box", {"pattern": "b*.csv"}, make=False)
    daemons = [env.start(fleet_config(env, conninfo, [folder], host))
               for host, folder in (("h1", box_a), ("h2", box_b))]
    env.wait_for(lambda: all("fleet: 2 hosts alive" in d.log() for d in daemons),
                 "both hosts seeing each other", timeout=30)
    env.fake.faults([{"status": 429, "retry_after": 6, "method": "POST",
                      "path_prefix": "/contacts/imports", "count": 1}])
    box_a.drop("a.csv", csv("a"))
    env.wait_for(lambda: "another host was told to wait" in daemons[1].log(),
                 "h2 pausing for h1's 429", timeout=HEARTBEAT_S * 3 + 10)
    line = next(l for l in daemons[1].log().splitlines() if "another host was told" in l)
    assert "every host waits" in line, line
    env.wait_outcomes(box_a, done=1, timeout=TIMEOUT)
    for daemon in daemons:
        daemon.stop()
        daemon.assert_sanitizer_clean()
    refused = [r for r in env.fake.requests() if r["status"] == 429]
    assert len(refused) == 1, len(refused)
    # The host told to wait is not told again by the database, as if by another host; the
    # other says it once.
    assert "another host was told" not in daemons[0].log()
    assert daemons[1].log().count("another host was told") == 1, daemons[1].log()


def test_a_host_taken_over_while_away_stops(pipe_env, pg):
    """A host whose row another host took over (as after a network partition longer than its
    lease) must not go on with files that are no longer its own: at its next heartbeat it says
    so and exits with status 1 (systemd starts it again, empty-handed)."""
    env = pipe_env
    conninfo = pg.new_database()
    box = env.folder("box")
    daemon = env.start(fleet_config(env, conninfo, [box], "h1"))
    env.wait_for(lambda: "fleet: joined as host" in daemon.log(), "h1 joined", timeout=30)
    pg.sql(conninfo, "UPDATE hosts SET taken_over_by = 'h9', taken_over_at = now() "
                     "WHERE host_id = 'h1'")
    daemon.wait_exit(HEARTBEAT_S * 3 + 20)
    daemon.assert_exit(daemon.returncode, 1)
    assert "host 'h1' was taken over by h9 while this daemon could not reach the database" \
        in daemon.log(), daemon.log()
