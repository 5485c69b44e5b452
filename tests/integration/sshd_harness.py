"""A throw-away OpenSSH server for the tests that need one (SFTP uploads, sshfs mounts): on
127.0.0.1, a free port, one key for the current user, stopped after the test.

    from sshd_harness import sshd  # noqa: F401  (the fixture)

    def test_x(sshd): ...   # sshd["port"], sshd["key"] (the client's private key), sshd["root"]
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from daemon_harness import free_port, wait_port

SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd():
    """A throw-away sshd on 127.0.0.1 accepting one key for the current user; stopped after."""
    root = tempfile.mkdtemp(prefix="rdd-sshd-")
    proc = None
    try:
        for key in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(root, key)], check=True, timeout=30)
        shutil.copy(os.path.join(root, "client.pub"), os.path.join(root, "authorized_keys"))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        port = free_port()
        config = os.path.join(root, "sshd_config")
        with open(config, "w") as f:
            f.write(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {root}/host
AuthorizedKeysFile {root}/authorized_keys
PidFile {root}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stderr=subprocess.PIPE)
        wait_port(port, what="sshd")
        yield {"port": port, "key": os.path.join(root, "client"), "root": root}
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
