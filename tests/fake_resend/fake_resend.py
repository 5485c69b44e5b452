#!/usr/bin/env python3
"""A fake of Resend's contact-import and send-email API, for resend-dropd's tests and local demos.

    python3 fake_resend.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
                           [--api-key KEY ...] [--max-bytes N] [--rps N] [--import-seconds F]
                           [--email-seconds F] [--idempotency-seconds F]
                           [--data-dir DIR] [--fault SPEC ...] [--quiet]

API (as Resend): POST /contacts/imports, GET /contacts/imports/{id}, GET /contacts/imports,
POST /emails.
Control, for tests (no authentication, never faulted, rate limited or recorded):
    GET /_fake/requests        every API request received, in arrival order
    GET /_fake/stats           upload concurrency and request count
    GET|POST|DELETE /_fake/faults   list, queue ({"faults": [...]}) or clear faults
    GET|POST /_fake/config     read or change rps, import_seconds, max_bytes, fail_imports,
                               email_seconds, idempotency_seconds
    GET /_fake/contacts        the contact store
    GET /_fake/emails          the e-mails POST /emails accepted, in order
    POST /_fake/reset          forget requests, imports, contacts, e-mails, idempotency keys,
                               stats and faults; restore
                               the settings the server started with
Python 3 standard library only, so that it runs wherever the tests run.
"""

import argparse
import dataclasses
import http
import json
import os
import secrets
import shutil
import signal
import socketserver
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from email_store import EmailStore, check_email, check_idempotency_key, fingerprint, \
    parse_json_body
from fault_injection import FaultQueue, parse_fault, parse_fault_option
from import_store import ImportStore
from multipart_stream import (BodyError, MultipartParser, Part, SpooledPart, TextPart,
                              form_data_boundary, iter_body, receive_body)
from resend_model import (KNOWN_FIELDS, TEXT_FIELD_LIMIT, Answer, ApiError, RateLimiter,
                          check_auth, check_create, check_import_id, check_list_query,
                          decode_fields, validation_error)

DEFAULT_API_KEY = "re_test_key"
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
IMPORTS_PATH = "/contacts/imports"
EMAILS_PATH = "/emails"
IDEMPOTENCY_SECONDS = 24 * 3600  # Resend keeps an idempotency key 24 hours
CONTROL_BODY_LIMIT = 1024 * 1024
# The raw body of an upload is kept for byte-for-byte comparisons, but not without bound: past
# max_bytes plus this allowance for the framing and text fields it is dropped.
RAW_BODY_ALLOWANCE = 1024 * 1024
SOCKET_TIMEOUT = 60  # seconds a silent client may hold a connection (and its thread)


@dataclass
class Settings:
    """What POST /_fake/config may change while the server runs."""
    rps: int = 0
    import_seconds: float = 1.0
    max_bytes: int = DEFAULT_MAX_BYTES
    fail_imports: bool = False
    email_seconds: float = 0.0  # how long a send takes (and holds its idempotency key)
    idempotency_seconds: float = IDEMPOTENCY_SECONDS


# setting -> (accepted types, check of the value, what the check requires)
SETTING_RULES = {
    "rps": (int, lambda value: value >= 0, "an integer >= 0"),
    "import_seconds": ((int, float), lambda value: value >= 0, "a number >= 0"),
    "max_bytes": (int, lambda value: value > 0, "an integer > 0"),
    "fail_imports": (bool, lambda value: True, "a boolean"),
    "email_seconds": ((int, float), lambda value: value >= 0, "a number >= 0"),
    "idempotency_seconds": ((int, float), lambda value: value >= 0, "a number >= 0"),
}


def changed_settings(settings, changes):
    """A copy of `settings` with `changes` applied; ValueError names a bad one."""
    if not isinstance(changes, dict):
        raise ValueError("expected a JSON object of settings")
    for key, value in changes.items():
        if key not in SETTING_RULES:
            raise ValueError(f"unknown setting {key!r}")
        types, check, requirement = SETTING_RULES[key]
        if isinstance(value, bool) != (types is bool) or not isinstance(value, types) \
                or not check(value):
            raise ValueError(f"{key} must be {requirement}, not {value!r}")
    return dataclasses.replace(settings, **changes)


class Recorder:
    """The record of every API request, the files it spooled, and the upload statistics."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._records = []
        self._last_seq = 0
        self._current_uploads = 0
        self._max_concurrent_uploads = 0

    def begin(self):
        """Number a request on arrival."""
        with self._lock:
            self._last_seq += 1
            return self._last_seq

    def spool_path(self, seq, suffix):
        # Random part: a request still running during a reset may reuse a sequence number.
        return os.path.join(self.data_dir, f"{seq:06d}-{secrets.token_hex(4)}{suffix}")

    def add(self, record):
        with self._lock:
            self._records.append(record)

    def records(self):
        with self._lock:
            return sorted(self._records, key=lambda record: record["seq"])

    @contextmanager
    def upload(self, counted=True):
        """Count an upload as in progress for the duration of the block."""
        if not counted:
            yield
            return
        with self._lock:
            self._current_uploads += 1
            self._max_concurrent_uploads = max(self._max_concurrent_uploads,
                                               self._current_uploads)
        try:
            yield
        finally:
            with self._lock:
                self._current_uploads -= 1

    def stats(self):
        with self._lock:
            return {"max_concurrent_uploads": self._max_concurrent_uploads,
                    "current_uploads": self._current_uploads,
                    "total_requests": self._last_seq}

    def reset(self):
        with self._lock:
            records, self._records = self._records, []
            self._last_seq = 0
            self._max_concurrent_uploads = self._current_uploads
        for record in records:
            for path in (record["raw_body_path"], (record["file"] or {}).get("path")):
                if path is not None and os.path.exists(path):
                    os.unlink(path)


@dataclass
class Received:
    """A request body as received: the raw bytes, and its parts when it was multipart."""
    raw: SpooledPart
    parts: list
    is_multipart: bool
    multipart_error: Exception | None = None


@dataclass
class ApiRequest:
    seq: int
    method: str
    path: str
    query: dict
    headers: object  # http.client.HTTPMessage
    body: Received


class FakeResend:
    """Everything behind the HTTP handler: settings, keys, faults, records, imports."""

    def __init__(self, settings, api_keys, faults, data_dir):
        self.initial_settings = settings
        self.settings = settings
        self.api_keys = frozenset(api_keys)
        self.faults = FaultQueue(faults)
        self.recorder = Recorder(data_dir)
        self.imports = ImportStore()
        self.emails = EmailStore()
        self.limiter = RateLimiter(settings.rps)

    # --- the API -------------------------------------------------------------------------

    def answer_api(self, request):
        """Resend's order: authentication, then the rate limit, then the request itself."""
        try:
            check_auth(request.headers, self.api_keys)
            self.limiter.admit()
            answer = self._route(request)
        except ApiError as error:
            answer = error.answer()
        return answer.with_headers(self.limiter.headers())

    def _route(self, request):
        path = request.path.rstrip("/")
        if path == IMPORTS_PATH:
            methods = {"POST": lambda: self._create(request.body),
                       "GET": lambda: self._list(request.query)}
        elif path.startswith(IMPORTS_PATH + "/") and path.count("/") == 3:
            methods = {"GET": lambda: self._retrieve(path.rsplit("/", 1)[1])}
        elif path == EMAILS_PATH:
            methods = {"POST": lambda: self._send_email(request)}
        else:
            raise ApiError(404, "not_found", "The requested endpoint does not exist.")
        if request.method not in methods:
            raise ApiError(405, "method_not_allowed",
                           f"Method {request.method} not allowed on {path}.")
        return methods[request.method]()

    def _create(self, body):
        if not body.is_multipart:
            raise validation_error("Content-Type must be multipart/form-data with a boundary")
        if body.multipart_error is not None:
            raise validation_error(f"Malformed multipart body: {body.multipart_error}")
        spec = check_create(body.parts)
        import_id = self.imports.create(spec, self.settings.import_seconds,
                                        self.settings.fail_imports)
        return Answer.json(201, {"object": "contact_import", "id": import_id})

    def _list(self, query):
        return Answer.json(200, self.imports.list(*check_list_query(query)))

    def _retrieve(self, import_id):
        check_import_id(import_id)
        contact_import = self.imports.get(import_id)
        if contact_import is None:
            raise ApiError(404, "not_found", "Contact import not found")
        return Answer.json(200, contact_import)

    def _send_email(self, request):
        """Resend's order as far as it shows: the key's form, the body, the key's use, the
        fields. The e-mail is kept (not delivered) and its key remembered only if accepted."""
        key = check_idempotency_key(request.headers)
        if request.body.raw.path is None:
            raise ApiError(413, "validation_error", "The request body is too large.")
        with open(request.body.raw.path, "rb") as file:
            payload = parse_json_body(request.headers.get("Content-Type"), file.read())
        if key is not None:
            sent = self.emails.begin(key, fingerprint(payload),
                                     self.settings.idempotency_seconds)
            if sent is not None:
                return Answer.json(200, {"id": sent})
        try:
            email = check_email(payload)
            time.sleep(self.settings.email_seconds)
        except BaseException:
            if key is not None:
                self.emails.release(key)
            raise
        return Answer.json(200, {"id": self.emails.add(email, payload, key, request.seq)})

    def open_part(self, seq):
        """The Part factory for one upload: what the fake keeps of each part it receives."""
        max_bytes = self.settings.max_bytes

        def open_part(name, filename, content_type):
            if name == "file" and filename is not None:
                path = self.recorder.spool_path(seq, ".file")
                return SpooledPart(name, filename, content_type, path, limit=max_bytes)
            if filename is None or name in KNOWN_FIELDS:
                return TextPart(name, filename, content_type, TEXT_FIELD_LIMIT)
            return Part(name, filename, content_type)  # a file Resend would ignore
        return open_part

    # --- control ---------------------------------------------------------------------------

    def answer_control(self, method, path, payload):
        """Answer a /_fake/ request; ValueError from a route becomes a 400."""
        route = CONTROL_ROUTES.get((method, path))
        if route is None:
            return Answer.json(404, {"error": f"no control endpoint {method} {path}"})
        try:
            return Answer.json(200, route(self, payload))
        except ValueError as error:
            return Answer.json(400, {"error": str(error)})

    def _requests(self, _payload):
        return {"requests": self.recorder.records()}

    def _stats(self, _payload):
        return self.recorder.stats()

    def _pending_faults(self, _payload):
        return {"faults": self.faults.pending()}

    def _add_faults(self, payload):
        faults = payload.get("faults") if isinstance(payload, dict) else None
        if not isinstance(faults, list):
            raise ValueError('expected {"faults": [...]}')
        self.faults.add([parse_fault(fault) for fault in faults])  # all or none
        return self._pending_faults(payload)

    def _clear_faults(self, payload):
        self.faults.clear()
        return self._pending_faults(payload)

    def _config(self, _payload):
        return dataclasses.asdict(self.settings)

    def _configure(self, payload):
        self._apply_settings(changed_settings(self.settings, payload))
        return self._config(payload)

    def _contacts(self, _payload):
        return {"contacts": self.imports.contacts()}

    def _emails(self, _payload):
        return {"emails": self.emails.emails()}

    def _reset(self, _payload):
        self.recorder.reset()
        self.imports.reset()
        self.emails.reset()
        self.faults.clear()
        self.limiter.reset()
        self._apply_settings(self.initial_settings)
        return {"reset": True}

    def _apply_settings(self, settings):
        self.settings = settings
        self.limiter.rps = settings.rps


CONTROL_ROUTES = {
    ("GET", "/_fake/requests"): FakeResend._requests,
    ("GET", "/_fake/stats"): FakeResend._stats,
    ("GET", "/_fake/faults"): FakeResend._pending_faults,
    ("POST", "/_fake/faults"): FakeResend._add_faults,
    ("DELETE", "/_fake/faults"): FakeResend._clear_faults,
    ("GET", "/_fake/config"): FakeResend._config,
    ("POST", "/_fake/config"): FakeResend._configure,
    ("GET", "/_fake/contacts"): FakeResend._contacts,
    ("GET", "/_fake/emails"): FakeResend._emails,
    ("POST", "/_fake/reset"): FakeResend._reset,
}


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer has a Content-Length, and every request body is
    read to its end, or the connection is closed."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-resend"
    timeout = SOCKET_TIMEOUT

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/_fake/"):
            self._serve_control(url.path)
        else:
            self._serve_api(url)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            super().log_message(fmt, *args)

    # --- control ---------------------------------------------------------------------------

    def _serve_control(self, path):
        try:
            payload = self._read_json(CONTROL_BODY_LIMIT)
        except (BodyError, ValueError) as error:
            self.close_connection = True  # what is left of the body is unknown
            self._send(Answer.json(400, {"error": str(error)}))
            return
        self._send(self.server.fake.answer_control(self.command, path, payload))

    def _read_json(self, limit):
        body = bytearray()
        for piece in iter_body(self.rfile, self.headers):
            body += piece
            if len(body) > limit:
                raise ValueError(f"control request body over {limit} bytes")
        return json.loads(body) if body.strip() else {}

    # --- the API -------------------------------------------------------------------------

    def _serve_api(self, url):
        fake = self.server.fake
        seq = fake.recorder.begin()
        started = time.time()
        is_upload = self.command == "POST" and url.path.rstrip("/") == IMPORTS_PATH
        # An upload counts as in progress until its answer is ready, not until it is sent: the
        # client may start its next upload the moment it has read the answer, before this
        # thread has left _send, and must not be seen as running one upload too many.
        with fake.recorder.upload(counted=is_upload):
            body, error = self._receive(seq, is_upload)
            fault = fake.faults.take(self.command, url.path) if error is None else None
            answer = self._answer(seq, url, body, error, fault)
            # Recorded before it is sent, so that a client holding its answer finds the record.
            fake.recorder.add(request_record(seq, self, url, body, answer, fault, error,
                                             started, time.time()))
        if answer is None:  # a `close` fault: hang up without a word
            self.close_connection = True
        else:
            self._send(answer, fault)

    def _receive(self, seq, is_upload):
        """The body, spooled, and parsed if it is an upload; plus the BodyError text, if any."""
        fake = self.server.fake
        content_type = self.headers.get("Content-Type")
        raw = SpooledPart("body", None, content_type, fake.recorder.spool_path(seq, ".body"),
                          limit=fake.settings.max_bytes + RAW_BODY_ALLOWANCE)
        boundary = form_data_boundary(content_type) if is_upload else None
        parser = None if boundary is None else MultipartParser(boundary, fake.open_part(seq))
        body = Received(raw, [] if parser is None else parser.parts, parser is not None)
        try:
            body.multipart_error = receive_body(iter_body(self.rfile, self.headers), raw, parser)
        except BodyError as error:
            return body, str(error)
        return body, None

    def _answer(self, seq, url, body, error, fault):
        """The answer to send, or None to send none."""
        fake = self.server.fake
        if error is not None:  # the body's framing is broken: answer, then hang up
            self.close_connection = True
            return ApiError(400, "validation_error", f"Malformed request body: {error}") \
                .answer().with_headers(fake.limiter.headers())
        if fault is not None:
            time.sleep(fault.delay)
            if fault.close:
                return None
            if fault.status is not None:
                return fault.answer(self.headers).with_headers(fake.limiter.headers())
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        return fake.answer_api(ApiRequest(seq, self.command, url.path, query, self.headers,
                                          body))

    # --- sending -----------------------------------------------------------------------------

    def _send(self, answer, fault=None):
        """Send an answer, damaged as the fault says; a client that left is not an error."""
        if fault is not None and fault.stall is not None:
            self.close_connection = True
        head = self._head(answer)
        try:
            if fault is not None and fault.stall is not None:
                self.wfile.write(head + answer.body[:len(answer.body) // 2])
                time.sleep(fault.stall)
            elif fault is not None and fault.slow is not None:
                self._trickle(head + answer.body, fault.slow)
            else:
                self.wfile.write(head + answer.body)
        except OSError:
            self.close_connection = True
        self.log_request(answer.status, len(answer.body))

    def _head(self, answer):
        try:
            reason = http.HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"{self.protocol_version} {answer.status} {reason}",
                 f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}",
                 f"Content-Type: {answer.content_type}",
                 f"Content-Length: {len(answer.body)}",
                 f"Connection: {'close' if self.close_connection else 'keep-alive'}"]
        lines += [f"{name}: {value}" for name, value in answer.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _trickle(self, data, bytes_per_second):
        """Write `data` at the given rate, in pieces of about a tenth of a second."""
        size = max(1, int(bytes_per_second / 10))
        for start in range(0, len(data), size):
            piece = data[start:start + size]
            self.wfile.write(piece)
            time.sleep(len(piece) / bytes_per_second)


def request_record(seq, handler, url, body, answer, fault, error, started, finished):
    """The JSON record of one API request, as GET /_fake/requests lists it."""
    headers = {}
    for name, value in handler.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    file_part = next((part for part in body.parts
                      if part.name == "file" and isinstance(part, SpooledPart)), None)
    return {
        "seq": seq,
        "method": handler.command,
        "path": url.path,
        "query": dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
        "headers": headers,
        "parts": [part_record(part) for part in body.parts],
        "fields": decode_fields(body.parts),
        "file": None if file_part is None else {
            "filename": file_part.filename, "size": file_part.size,
            "sha256": file_part.sha256, "path": file_part.path},
        "status": None if answer is None else answer.status,
        "answer": None if answer is None else answer.decoded(),
        "fault": None if fault is None else fault.to_json(),
        "error": error,
        "started": started,
        "finished": finished,
        "raw_body_path": body.raw.path,
        "body_size": body.raw.size,
    }


def part_record(part):
    return {"name": part.name, "filename": part.filename, "content_type": part.content_type,
            "size": part.size, "sha256": part.sha256,
            "value": part.text if isinstance(part, TextPart) else None}


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True      # a stalled or idle connection must not delay shutdown
    request_queue_size = 128   # bursts of concurrent uploads

    def __init__(self, address, fake, quiet):
        self.fake = fake
        self.quiet = quiet
        super().__init__(address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind would resolve the host name (getfqdn), which can be slow
        # without a network; the name is not used.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Fake Resend API: contact imports and e-mails.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--port-file", help="write the port number here once listening")
    parser.add_argument("--api-key", action="append", dest="api_keys",
                        help=f"a key to accept (repeatable; default {DEFAULT_API_KEY})")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help="largest file accepted")
    parser.add_argument("--rps", type=int, default=0, help="requests per second; 0: no limit")
    parser.add_argument("--import-seconds", type=float, default=1.0,
                        help="time an import takes from queued to completed")
    parser.add_argument("--email-seconds", type=float, default=0.0,
                        help="time a send takes, holding its idempotency key")
    parser.add_argument("--idempotency-seconds", type=float, default=IDEMPOTENCY_SECONDS,
                        help="how long an idempotency key is remembered")
    parser.add_argument("--data-dir", help="where bodies and files are kept (default: a "
                        "temporary directory removed on exit)")
    parser.add_argument("--fault", action="append", default=[], type=fault_option,
                        help="queue a fault, e.g. status=500,count=2 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)
    try:
        args.settings = changed_settings(Settings(), {
            "rps": args.rps, "import_seconds": args.import_seconds, "max_bytes": args.max_bytes,
            "email_seconds": args.email_seconds,
            "idempotency_seconds": args.idempotency_seconds})
    except ValueError as error:
        parser.error(str(error))
    return args


def fault_option(text):
    try:
        return parse_fault_option(text)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def write_port_file(path, port):
    """Write then rename, so that a reader never sees a partial file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        file.write(f"{port}\n")
    os.replace(temporary, path)


def main(argv=None):
    args = parse_args(argv)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="fake-resend-")
    os.makedirs(data_dir, exist_ok=True)
    fake = FakeResend(args.settings, args.api_keys or [DEFAULT_API_KEY], args.fault, data_dir)
    server = FakeServer((args.host, args.port), fake, args.quiet)
    # A signal handler cannot be relied on here: the kernel may deliver the signal to any
    # thread, and then the main thread, blocked waiting, never notices. So the signals are
    # blocked before any thread starts (threads inherit the mask) and the main thread takes
    # them with sigwait(); one sent early stays pending until then.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"fake-resend listening on http://{args.host}:{port}", flush=True)
    signal.sigwait(stop_signals)
    server.shutdown()
    server.server_close()
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
