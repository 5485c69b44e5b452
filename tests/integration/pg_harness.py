"""A real PostgreSQL server for the integration tests, started and stopped by the test itself
(tests/pg_server: initdb and pg_ctl in a temporary directory, a unix socket there, no TCP
port; a watchdog stops it if the test process dies).

    with PgServer() as pg:
        conninfo = pg.new_database()
        pg.sql(conninfo, "SELECT count(*) FROM files")   # [("3",)]
        pg.halt(); pg.resume()                            # the server down, then up again
"""

import os
import shutil
import subprocess
import tempfile

import pytest

SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
PG_SERVER = os.path.join(SOURCE_DIR, "tests", "pg_server")


def postgresql_available():
    """Why the server cannot run here (a sentence), or None."""
    bins = [d for d in ("/usr/lib/postgresql",) if os.path.isdir(d)]
    if not bins or not any(os.path.exists(os.path.join(bins[0], v, "bin", "pg_ctl"))
                           for v in os.listdir(bins[0])):
        return "PostgreSQL is not installed (scripts/install-deps --tests installs it)"
    if shutil.which("psql") is None:
        return "psql is not installed (postgresql-client)"
    return None


class PgServer:
    def __init__(self):
        self.parent = None
        self.host = None
        self.databases = 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        reason = postgresql_available()
        if reason:
            pytest.fail(reason)
        self.parent = tempfile.mkdtemp(prefix="rdd-pg-")
        os.chmod(self.parent, 0o755)
        self.host = os.path.join(self.parent, "srv")
        subprocess.run([PG_SERVER, "start", self.host, str(os.getpid())], check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
        return self

    def stop(self):
        if self.host and os.path.isdir(self.host):
            subprocess.run([PG_SERVER, "stop", self.host], check=False, timeout=120)
        if self.parent:
            shutil.rmtree(self.parent, ignore_errors=True)
        self.host = self.parent = None

    def halt(self):
        """The server stopped (fast shutdown: connections cut), its data kept."""
        subprocess.run([PG_SERVER, "halt", self.host], check=True, timeout=120)

    def resume(self):
        subprocess.run([PG_SERVER, "resume", self.host], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)

    def conninfo(self, dbname="postgres", user="postgres"):
        return f"host={self.host} user={user} dbname={dbname}"

    def new_database(self, name=None):
        """A new, empty database; its connection string (user postgres)."""
        self.databases += 1
        name = name or f"t{self.databases}"
        self.sql(self.conninfo(), f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def sql(self, conninfo, query):
        """The rows of QUERY as tuples of strings (psql -At)."""
        out = subprocess.run(["psql", "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-d", conninfo, "-c", query],
                             check=True, capture_output=True, text=True, timeout=60).stdout
        return [tuple(line.split("\t")) for line in out.splitlines()]
