"""What the fleet's tests share (test_fleet.py, test_fleet_sshfs.py): each host's configuration
on the shared PostgreSQL ledger, CSV contents, and what the fake and the ledger say was done.

    config = fleet_config(env, pg.new_database(), [box], "h1")   # env: daemon_harness.Harness
"""

import collections
import os

HEARTBEAT_S = 1
LEASE_S = 4


def csv(tag, rows=3):
    return ("email,first_name\n" + "".join(f"{tag}-{i}@example.com,N{i}\n"
                                           for i in range(rows))).encode()


def fleet_config(env, conninfo, folders, host, api=None, defaults=None):
    """HOST's configuration: its own state_dir and control socket, the shared ledger."""
    state = os.path.join(env.root, f"state-{host}")
    os.makedirs(state, exist_ok=True)
    return env.config(folders, name=f"{host}.yaml", state_dir=state, api=api,
                      defaults={"rescan_s": 2, **(defaults or {})},
                      ledger={"backend": "postgresql", "conninfo": conninfo},
                      extra={"fleet": {"host_id": host, "heartbeat_s": HEARTBEAT_S,
                                       "lease_s": LEASE_S}})


def imported_names(env):
    """File name -> how many imports the fake made of it (coalesce off: one file each)."""
    counts = collections.Counter()
    for upload in env.uploads():
        if upload["status"] == 201 and upload["file"]:
            counts[upload["file"]["filename"]] += 1
    return counts


def hosts_of(pg, conninfo):
    """Ledger rows: file -> the host that took it (the latest row of each)."""
    rows = pg.sql(conninfo, "SELECT file, coalesce(host_id, ''), status FROM files "
                            "ORDER BY claimed_at_ms")
    return {file: (host, status) for file, host, status in rows}
