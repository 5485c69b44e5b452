"""The server as a process: its command line, its start-up line and port file, clean exits on
signals, and a flat memory profile under a 200 MB upload."""

import hashlib
import os
import select
import signal
import socket
import subprocess
import sys

import pytest

from fakeapi import SERVER, FakeResend, encode_multipart, file_part, read_answer

MIB = 1024 * 1024


def read_line(process, timeout=10):
    """The next line of the process's stdout, without waiting for ever."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from fake-resend"
    return process.stdout.readline().decode()


@pytest.fixture
def run_server():
    """Start fake_resend.py with the given arguments; each process is stopped afterwards."""
    processes = []

    def run_server(*args):
        process = subprocess.Popen([sys.executable, SERVER, "--quiet", *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append(process)
        line = read_line(process)
        assert line.startswith("fake-resend listening on http://127.0.0.1:"), \
            line + process.stderr.read().decode()
        return process, int(line.rsplit(":", 1)[1])
    yield run_server
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        process.stdout.close()
        process.stderr.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port, path, headers=b""):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), headers))
        return read_answer(sock)


def test_it_announces_its_port_and_writes_the_port_file(run_server, tmp_path):
    port_file = tmp_path / "port"
    _process, port = run_server("--port", "0", "--port-file", str(port_file))
    assert port_file.read_text() == f"{port}\n"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert get(port, "/_fake/stats").status == 200


def test_it_listens_on_the_port_it_is_given(run_server):
    port = free_port()
    _process, announced = run_server("--port", str(port))
    assert announced == port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_it_exits_cleanly_on_a_signal(run_server, signum):
    process, port = run_server()
    # An idle kept-alive connection must not hold the exit up.
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        process.send_signal(signum)
        assert process.wait(5) == 0
    assert process.stderr.read() == b""


def test_its_settings_and_keys_come_from_the_command_line(run_server, tmp_path):
    _process, port = run_server("--api-key", "re_a", "--api-key", "re_b", "--rps", "7",
                                "--import-seconds", "2.5", "--max-bytes", "1000",
                                "--email-seconds", "0.5", "--idempotency-seconds", "60",
                                "--data-dir", str(tmp_path / "data"))
    assert get(port, "/_fake/config").json() == {"rps": 7, "import_seconds": 2.5,
                                                  "max_bytes": 1000, "fail_imports": False,
                                                  "email_seconds": 0.5,
                                                  "idempotency_seconds": 60}
    for key, status in ((b"re_a", 200), (b"re_b", 200), (b"re_test_key", 403)):
        answer = get(port, "/contacts/imports",
                     b"Authorization: Bearer %s\r\nUser-Agent: t\r\n" % key)
        assert answer.status == status
    record = get(port, "/_fake/requests").json()["requests"][0]
    assert os.path.dirname(record["raw_body_path"]) == str(tmp_path / "data")


def test_rps_from_the_command_line_is_announced_and_enforced_on_every_endpoint(run_server):
    _process, port = run_server("--rps", "5")
    auth = b"Authorization: Bearer re_test_key\r\nUser-Agent: t\r\n"
    paths = ["/contacts/imports", "/contacts/imports/479e3145-dd38-476b-932c-529ceb705947"] * 3
    answers = [get(port, path, auth) for path in paths]
    assert [answer.status for answer in answers] == [200, 404, 200, 404, 200, 429]
    assert {answer.headers["ratelimit-limit"] for answer in answers} == {"5"}


def test_its_own_temporary_data_dir_is_removed_on_exit(run_server):
    process, port = run_server()
    get(port, "/contacts/imports")
    data_dir = os.path.dirname(get(port, "/_fake/requests").json()["requests"][0]["raw_body_path"])
    assert os.path.isdir(data_dir)
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) == 0
    assert not os.path.exists(data_dir)


def test_bad_options_are_refused():
    result = subprocess.run([sys.executable, SERVER, "--rps", "-1"], capture_output=True,
                            timeout=10)
    assert result.returncode == 2 and b"rps must be an integer >= 0" in result.stderr


def test_a_200_mb_upload_leaves_the_memory_flat():
    # The file is sent as a header line then one 1 MiB block of rows over and over (rows are cut
    # at block edges: the file is only received here, not imported).
    block = b"".join(b"user%07d@example.com,First,Last\n" % n for n in range(33000))[:MIB]
    file_size = 200 * MIB  # exactly the default limit, which is inclusive
    file_start = b"email,first_name,last_name\n"
    blocks, rest = divmod(file_size - len(file_start), MIB)
    digest = hashlib.sha256(file_start)
    body, content_type = encode_multipart([file_part(b"\0"), ("on_conflict", "skip")])
    head, tail = body.split(b"\0")
    with FakeResend(extra_args=["--quiet"]) as fake:
        with socket.create_connection(("127.0.0.1", fake.port), timeout=30) as sock:
            sock.sendall(b"POST /contacts/imports HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer re_test_key\r\nUser-Agent: memory-test\r\n"
                         b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                         % (content_type.encode(), len(head) + file_size + len(tail)))
            sock.sendall(head + file_start)
            for _ in range(blocks):
                sock.sendall(block)
                digest.update(block)
            sock.sendall(block[:rest] + tail)
            digest.update(block[:rest])
            answer = read_answer(sock)
        assert answer.status == 201, answer.body
        with open(f"/proc/{fake.pid}/status") as status:
            peak_kib = int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
        file = fake.requests()[0]["file"]
    print(f"fake-resend peak RSS after a {file_size} byte upload: {peak_kib / 1024:.1f} MiB")
    assert (file["size"], file["sha256"]) == (file_size, digest.hexdigest())
    assert peak_kib < 50 * 1024
