"""A file uploaded over SFTP (OpenSSH's sftp client against a private sshd on 127.0.0.1,
bandwidth-limited so the upload takes seconds) is taken only once complete: the server-side
writer holds the file open under its final name while data trickles in."""

import hashlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from daemon_harness import pipe_env, pipe_fake, read_bytes  # noqa: F401
from sshd_harness import SSHD, sshd  # noqa: F401
SFTP = shutil.which("sftp")
pytestmark = pytest.mark.skipif(not (os.path.exists(SSHD) and SFTP),
                                reason="openssh-server/openssh-client not installed "
                                       "(scripts/install-deps installs them)")




def sftp_put(server, local, remote, kbit_per_s, timeout):
    batch = os.path.join(server["root"], "batch")
    with open(batch, "w") as f:
        f.write(f'put "{local}" "{remote}"\n')
    user = os.environ.get("USER") or "root"
    return subprocess.Popen(
        [SFTP, "-q", "-b", batch, "-i", server["key"], "-P", str(server["port"]),
         "-l", str(kbit_per_s), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", f"{user}@127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_file_uploaded_by_sftp_is_taken_only_when_complete(pipe_env, sshd):
    env = pipe_env
    box = env.folder("box", settle_ms=300)
    daemon = env.start(env.config([box]))
    source = os.path.join(sshd["root"], "contacts.csv")
    rows = b"".join(b"person-%06d@example.com,Person %d\n" % (i, i) for i in range(16000))
    content = b"email,first_name\n" + rows  # about 600 KB
    with open(source, "wb") as f:
        f.write(content)

    # 1200 kbit/s: about 4 s of writes into the inbox under the final name.
    started = time.monotonic()
    upload = sftp_put(sshd, source, os.path.join(box.inbox, "contacts.csv"), 1200, 60)
    out, err = upload.communicate(timeout=60)
    assert upload.returncode == 0, err.decode(errors="replace")
    transfer_s = time.monotonic() - started
    assert transfer_s > 2, f"the transfer took {transfer_s:.1f} s: too fast to test anything"

    env.wait_outcomes(box, done=1)
    [record] = env.uploads()
    assert record["file"]["size"] == len(content)
    assert record["file"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert read_bytes(os.path.join(box.done, "contacts.csv")) == content
    daemon.stop()
