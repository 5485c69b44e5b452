"""Run the fake Resend API for a test and talk to it (Python standard library only).

    from fakeapi import FakeResend

    with FakeResend() as fake:            # accepts the key re_test_key
        fake.faults([{"status": 500, "count": 2}])
        ... run resend-dropd with base_url fake.url ...
        records = fake.wait_requests(3, timeout=20)
        assert [record["status"] for record in records] == [500, 500, 201]
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_resend.py")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
HTTP_TIMEOUT = 10.0
# Loopback only: an http_proxy in the environment must not capture requests to the fake.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ControlError(Exception):
    """A control endpoint refused a request (bad fault or setting)."""


@dataclass
class RawAnswer:
    """One HTTP answer; status is None if the server hung up without answering."""
    status: int | None
    headers: dict = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    raw: bytes = b""  # the bytes read off the socket, when read by read_answer

    def json(self):
        return json.loads(self.body)


class FakeResend:
    """The fake server in a subprocess, for the duration of a `with` block."""

    def __init__(self, api_keys=("re_test_key",), rps=0, import_seconds=0.2, max_bytes=None,
                 extra_args=()):
        self._args = ["--rps", str(rps), "--import-seconds", str(import_seconds)]
        for key in api_keys:
            self._args += ["--api-key", key]
        if max_bytes is not None:
            self._args += ["--max-bytes", str(max_bytes)]
        self._args += list(extra_args)
        self.process = None
        self.port = None
        self.url = None

    def __enter__(self):
        self._temp_dir = tempfile.mkdtemp(prefix="fake-resend-")
        self.data_dir = os.path.join(self._temp_dir, "data")
        self.log_path = os.path.join(self._temp_dir, "server.log")
        port_file = os.path.join(self._temp_dir, "port")
        command = [sys.executable, SERVER, "--port", "0", "--port-file", port_file,
                   "--data-dir", self.data_dir, *self._args]
        try:
            with open(self.log_path, "wb") as log:  # a file, not a pipe nobody would drain
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            self._wait_ready(port_file)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._temp_dir, ignore_errors=True)
        return False

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        """What the server printed so far (its request log unless --quiet)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def _wait_ready(self, port_file):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-resend exited with {self.process.returncode}:\n"
                                   f"{self.log()}")
            if os.path.exists(port_file):
                with open(port_file) as file:
                    self.port = int(file.read())
                self.url = f"http://127.0.0.1:{self.port}"
                try:
                    self.stats()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"fake-resend not ready after {START_TIMEOUT} s:\n{self.log()}")

    # --- control endpoints -----------------------------------------------------------------

    def control(self, method, path, payload=None):
        """Call a /_fake/ endpoint; its JSON answer, or ControlError with its message."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/_fake/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise ControlError(f"{method} /_fake/{path}: {error.code} {detail}") from None

    def requests(self):
        """Every API request recorded, in arrival order (see fake_resend.request_record)."""
        return self.control("GET", "requests")["requests"]

    def stats(self):
        return self.control("GET", "stats")

    def faults(self, faults):
        """Queue faults (dicts, see fault_injection); return the whole queue."""
        return self.control("POST", "faults", {"faults": list(faults)})["faults"]

    def clear_faults(self):
        self.control("DELETE", "faults")

    def reset(self):
        self.control("POST", "reset")

    def configure(self, **settings):
        """Change rps, import_seconds, max_bytes, fail_imports, email_seconds or
        idempotency_seconds; return all settings."""
        return self.control("POST", "config", settings)

    def contacts(self):
        """The contact store: lower-cased email -> contact."""
        return self.control("GET", "contacts")["contacts"]

    def emails(self):
        """The e-mails POST /emails accepted, in order (see email_store.EmailStore.add)."""
        return self.control("GET", "emails")["emails"]

    def wait_emails(self, count, timeout=10.0):
        """The e-mails once at least `count` have been accepted."""
        deadline = time.monotonic() + timeout
        while True:
            emails = self.emails()
            if len(emails) >= count:
                return emails
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(emails)} of {count} e-mails after {timeout} s")
            time.sleep(0.05)

    def wait_requests(self, count, timeout=10.0):
        """The records once at least `count` requests have been answered."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.requests()
            if len(records) >= count:
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(records)} of {count} requests after {timeout} s")
            time.sleep(0.05)

    # --- speaking the API ------------------------------------------------------------------

    def send_email(self, payload, idempotency_key=None, **options):
        """POST /emails with `payload` as JSON (bytes or str: sent as they are); see api()."""
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        headers.update(options.pop("headers", None) or {})
        return self.api("POST", "/emails", body, headers, **options)

    def api(self, method, path, body=None, headers=None, api_key="re_test_key",
            user_agent="fakeapi-test"):
        """One API request over a fresh connection; None key or agent: the header is left out."""
        all_headers = {}
        if api_key is not None:
            all_headers["Authorization"] = f"Bearer {api_key}"
        if user_agent is not None:
            all_headers["User-Agent"] = user_agent
        all_headers.update(headers or {})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            # http.client adds no User-Agent of its own: user_agent=None really sends none.
            connection.request(method, path, body=body, headers=all_headers)
            answer = connection.getresponse()
            return RawAnswer(answer.status,
                             {name.lower(): value for name, value in answer.getheaders()},
                             answer.read())
        finally:
            connection.close()


def encode_multipart(parts, boundary=None):
    """(body, content type) of multipart/form-data from (name, value) or
    (name, value, filename, content type) tuples; values are bytes or str."""
    boundary = boundary or f"----fakeapi-{uuid.uuid4().hex}"
    body = bytearray()
    for name, value, *file_info in parts:
        filename, content_type = file_info or (None, None)
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            body += f"Content-Type: {content_type}\r\n".encode()
        body += b"\r\n" + (value.encode() if isinstance(value, str) else value) + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"


def file_part(content, filename="contacts.csv", content_type="text/csv"):
    """The `file` part for encode_multipart."""
    return ("file", content, filename, content_type)


def send_raw(port, data, host="127.0.0.1", timeout=HTTP_TIMEOUT):
    """Send `data` exactly as given on a new connection and read one answer."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock)


def read_answer(sock):
    """Read one answer: headers, then Content-Length bytes (or up to EOF), skipping any
    interim 1xx answers."""
    raw = bytearray()
    while True:
        while b"\r\n\r\n" not in raw:
            piece = sock.recv(65536)
            if not piece:
                return RawAnswer(None, raw=bytes(raw))  # hung up before a whole head
            raw += piece
        head, _, rest = bytes(raw).partition(b"\r\n\r\n")
        status, headers = _parse_head(head)
        if status >= 200:
            break
        raw = bytearray(rest)
    length = int(headers.get("content-length", -1))
    body = bytearray(rest)
    while length < 0 or len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return RawAnswer(status, headers, bytes(body), head + b"\r\n\r\n" + bytes(body))


def _parse_head(head):
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers
