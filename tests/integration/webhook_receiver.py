"""A Standard Webhooks receiver for the integration tests: an HTTP server on 127.0.0.1 that records
every delivery and checks its signature with code of its own (hmac, hashlib, base64), so that a
test of the daemon's webhooks does not trust the daemon's signing.

    with WebhookReceiver("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") as receiver:
        ... configure the daemon with receiver.url and receiver.secret ...
        first, = receiver.wait_for(1, timeout=20)
        assert first.verified and first.json["type"] == "file.done"

The scheme (https://www.standardwebhooks.com/, spec/standard-webhooks.md): headers `webhook-id`,
`webhook-timestamp` (integer Unix seconds) and `webhook-signature`, a space-separated list of
`v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (other versions, such as the
asymmetric `v1a`, are skipped). The key is the base64-decoded part of a `whsec_<base64>` secret;
a secret without the prefix is base64-decoded too (as the reference libraries do), and bytes are
the key itself (the JavaScript library's `format: "raw"`). Several secrets may be given (a
rotation): one matching signature for any of them is enough. A timestamp more than `tolerance`
seconds (default 5 minutes, as the spec's libraries) from now, either way, fails verification.

Each request is recorded (Delivery) before its answer is sent, in arrival order. What it is
answered is decided by rules, taken like the fake API's faults: a delivery takes the first rule
that still applies, a rule with a count applies to that many deliveries and is then used up, one
without applies until normal(). With no rule: 200 when verified, `reject_status` (401) when not;
a request other than POST: 405. The receiver can also go down (stop listening and close every
connection: the sender sees its connection refused or reset) and come back up on the same port.
Python standard library only.
"""

import base64
import binascii
import contextlib
import hashlib
import hmac
import http
import json
import os
import re
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 5 * 60     # seconds a timestamp may be from now, either way
BODY_LIMIT = 1 << 20   # the spec recommends payloads under 20 kB: 1 MiB is a broken sender
SOCKET_TIMEOUT = 30    # seconds an idle connection (and its thread) is kept
SECRET_PREFIX = "whsec_"
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")


def decode_secret(secret):
    """The HMAC key of a secret: `whsec_<base64>`, bare base64, or bytes (the key itself)."""
    if isinstance(secret, (bytes, bytearray)):
        key = bytes(secret)
    elif isinstance(secret, str):
        text = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error as error:
            message = f"webhook secret is not base64 after {SECRET_PREFIX!r}: {error}"
            raise ValueError(message) from None
    else:
        raise TypeError(f"a webhook secret is str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _wire(value):
    """A header value as the bytes that were sent (http.server decodes them as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def signature(key, msg_id, timestamp, body):
    """The raw HMAC-SHA256 over "{msg_id}.{timestamp}.{body}"; str parts as on the wire."""
    body = body.encode("utf-8") if isinstance(body, str) else body
    content = _wire(str(msg_id)) + b"." + _wire(str(timestamp)) + b"." + body
    return hmac.new(key, content, hashlib.sha256).digest()


def sign(secret, msg_id, timestamp, body):
    """The `webhook-signature` entry for one secret: "v1,<base64>"."""
    raw = signature(decode_secret(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(raw).decode("ascii")


def signature_entries(header):
    """The v1 signatures of a `webhook-signature` header, decoded; others and junk skipped."""
    found = []
    for entry in (header or "").split(" "):
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return found


@dataclass
class Check:
    """What verification found: `verified` is all of it; `reason` the first thing that failed."""
    verified: bool
    signature_valid: bool
    timestamp_valid: bool
    reason: str | None


def verify(keys, headers, body, now, tolerance=TOLERANCE):
    """Check a delivery: `keys` are HMAC keys (see decode_secret), `headers` maps lower-case
    names to values, `body` is the raw bytes, `now` Unix seconds."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    header = headers.get("webhook-signature")
    missing = [name for name, value in (("webhook-id", msg_id), ("webhook-timestamp", stamp),
                                        ("webhook-signature", header)) if not value]
    signature_valid = False
    if not missing:
        expected = [signature(key, msg_id, stamp, body) for key in keys]
        signature_valid = any(hmac.compare_digest(mine, theirs)
                              for theirs in signature_entries(header) for mine in expected)
    timestamp_valid, why_not = False, None
    if stamp is None:
        why_not = "missing webhook-timestamp"
    elif not TIMESTAMP_RE.fullmatch(stamp):
        why_not = f"webhook-timestamp {stamp!r} is not an integer of seconds"
    elif now - int(stamp) > tolerance:
        why_not = f"webhook-timestamp too old ({now - int(stamp):.0f} s)"
    elif int(stamp) - now > tolerance:
        why_not = f"webhook-timestamp too new ({int(stamp) - now:.0f} s ahead)"
    else:
        timestamp_valid = True
    if missing:
        reason = "missing " + ", ".join(missing)
    elif not timestamp_valid:
        reason = why_not
    elif not signature_valid:
        reason = "no matching v1 signature"
    else:
        reason = None
    return Check(reason is None, signature_valid, timestamp_valid, reason)


@dataclass
class Delivery:
    """One request the receiver got, as recorded before it was answered."""
    seq: int                    # 1, 2, ... in arrival order
    method: str
    path: str
    headers: dict               # lower-case names; repeated headers joined with ", "
    body: bytes
    json: object                # the body parsed as JSON; None if it is not JSON
    id: str | None              # webhook-id
    timestamp: int | None       # webhook-timestamp, if an integer
    verified: bool
    signature_valid: bool       # a v1 signature matched, whatever the timestamp
    timestamp_valid: bool       # within the tolerance of the receiver's clock
    reason: str | None          # why not verified, or why the request was refused
    received: float             # time.time() once the body was read
    status: int | None          # the answer decided; None: the connection was dropped
    delay: float = 0.0          # seconds the answer was held back

    @property
    def accepted(self):
        """Answered with a 2xx (the sender should count it delivered)."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Rule:
    status: int | None = None   # None: what the receiver would answer without a rule
    delay: float = 0.0
    drop: bool = False
    retry_after: int | None = None
    count: int | None = None    # None: until normal()

    def __post_init__(self):
        if self.count is not None and self.count < 1:
            raise ValueError(f"a rule's count is at least 1, not {self.count}")
        if self.delay < 0:
            raise ValueError(f"a delay is >= 0, not {self.delay}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "webhook-receiver"
    timeout = SOCKET_TIMEOUT

    def setup(self):
        super().setup()
        self.server.receiver._opened(self.server, self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.receiver._closed(self.connection)

    def do_POST(self):
        self.server.receiver._serve(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, fmt, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # up() binds again the port that down() left

    def __init__(self, address, receiver):
        self.receiver = receiver
        self.stopping = threading.Event()  # set by down()/stop(): held answers give up
        super().__init__(address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind would look the host name up (getfqdn): slow without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class BodyError(Exception):
    """The request body does not arrive as its framing says."""


def read_body(rfile, headers, limit=BODY_LIMIT):
    """The request body (Content-Length or chunked), at most `limit` bytes."""
    if (headers.get("Transfer-Encoding") or "").strip().lower() == "chunked":
        body = bytearray()
        while True:
            line = rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                break
            if len(body) + size > limit:
                raise BodyError(f"body over {limit} bytes")
            body += _read_exactly(rfile, size)
            rfile.readline(1024)
        while rfile.readline(1024).strip():  # trailers
            pass
        return bytes(body)
    length = (headers.get("Content-Length") or "0").strip()
    if not length.isdigit():
        raise BodyError(f"bad Content-Length {length!r}")
    if int(length) > limit:
        raise BodyError(f"body over {limit} bytes")
    return _read_exactly(rfile, int(length))


def _read_exactly(rfile, size):
    data = rfile.read(size)
    if len(data) != size:
        raise BodyError(f"connection closed after {len(data)} of {size} bytes")
    return data


class WebhookReceiver:
    """A Standard Webhooks endpoint on 127.0.0.1, for the duration of a `with` block.

    `secret`: a `whsec_...` string, bare base64, raw bytes, or a list of those (any may sign);
    None makes a random 32-byte one (see `.secret`). `clock` gives the Unix time timestamps are
    checked against; `path` is the one in `.url` (every path is served and recorded).
    """

    def __init__(self, secret=None, *, tolerance=TOLERANCE, clock=time.time, path="/webhook",
                 port=0, reject_status=401):
        if secret is None:
            secret = SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")
        secrets = list(secret) if isinstance(secret, (list, tuple)) else [secret]
        if not secrets:
            raise ValueError("no webhook secret given")
        self.keys = [decode_secret(one) for one in secrets]
        first = secrets[0]
        # The first secret as the daemon's configuration would hold it.
        self.secret = first if isinstance(first, str) and first.startswith(SECRET_PREFIX) \
            else SECRET_PREFIX + base64.b64encode(self.keys[0]).decode("ascii")
        self.tolerance = tolerance
        self.clock = clock
        self.path = path
        self.reject_status = reject_status
        self.port = port
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._deliveries = []
        self._seq = 0
        self._rules = []
        self._connections = set()
        self._server = None
        self._thread = None

    # --- life -------------------------------------------------------------------------------

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *_exc):
        self.stop()
        return False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def is_up(self):
        return self._server is not None

    def up(self, timeout=5.0):
        """Listen (again, on the same port once it has one)."""
        if self._server is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                server = _Server(("127.0.0.1", self.port), self)
                break
            except OSError:  # the port is briefly someone else's: rare, retried
                if self.port == 0 or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self):
        """Stop listening and close every open connection (kept-alive ones too), so that the
        sender sees the endpoint gone; answers being held back are never sent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    stop = down

    @contextlib.contextmanager
    def outage(self):
        """Down for the duration of the block, then up again on the same port."""
        self.down()
        try:
            yield self
        finally:
            self.up()

    # --- what to answer --------------------------------------------------------------------

    def answer(self, status, count=None, delay=0.0, retry_after=None):
        """Answer `status` (with Retry-After if given), after `delay` seconds."""
        self._add_rule(Rule(status=status, delay=delay, retry_after=retry_after, count=count))

    def fail_first(self, count, status=500):
        """Answer `status` to the next `count` deliveries, then as before."""
        self.answer(status, count=count)

    def delay(self, seconds, count=None):
        """Hold the usual answer back for `seconds`."""
        self._add_rule(Rule(delay=seconds, count=count))

    def drop(self, count=None, delay=0.0):
        """Read the request, then close the connection without a word (after `delay`)."""
        self._add_rule(Rule(drop=True, delay=delay, count=count))

    def normal(self):
        """Forget every rule: verified deliveries get 200 again."""
        with self._lock:
            self._rules.clear()

    def _add_rule(self, rule):
        if rule.status is not None and not 200 <= rule.status <= 599:
            raise ValueError(f"a final HTTP status is 200..599, not {rule.status}")
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self):
        with self._lock:
            for rule in self._rules:
                if rule.count is None:
                    return rule
                rule.count -= 1
                if rule.count == 0:
                    self._rules.remove(rule)
                return rule
        return None

    # --- what was received -----------------------------------------------------------------

    def deliveries(self):
        """Every request received, in arrival order."""
        with self._lock:
            return list(self._deliveries)

    def accepted(self):
        """The deliveries answered with a 2xx: those the sender should count delivered."""
        return [delivery for delivery in self.deliveries() if delivery.accepted]

    def wait_for(self, count, timeout=10.0, accepted=False):
        """The deliveries (or only the accepted ones) once there are at least `count`."""
        def ready():
            found = [d for d in self._deliveries if d.accepted or not accepted]
            return found if len(found) >= count else None
        with self._arrived:
            found = self._arrived.wait_for(ready, timeout)
            if found is None:
                seen = [(d.seq, d.id, d.status, d.reason) for d in self._deliveries]
                raise TimeoutError(f"{count} {'accepted ' if accepted else ''}deliveries "
                                   f"awaited for {timeout} s; received: {seen}")
            return found

    def forget(self):
        """Forget the deliveries received so far (numbering goes on)."""
        with self._lock:
            self._deliveries.clear()

    # --- serving ---------------------------------------------------------------------------

    def _opened(self, server, connection):
        with self._lock:
            self._connections.add(connection)
            if server.stopping.is_set():  # accepted just as down() closed the others
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def _closed(self, connection):
        with self._lock:
            self._connections.discard(connection)

    def _serve(self, handler):
        headers = {}
        for name, value in handler.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body, body_error = read_body(handler.rfile, handler.headers), None
        except (BodyError, OSError) as error:
            body, body_error = b"", str(error)
            handler.close_connection = True
        received = time.time()
        check = verify(self.keys, headers, body, self.clock(), self.tolerance)
        rule = None
        if body_error is not None:
            status, reason = 400, f"body: {body_error}"
        elif handler.command != "POST":
            status, reason = 405, f"method {handler.command} is not POST"
        else:
            rule = self._take_rule()
            status = self.reject_status if not check.verified else 200
            reason = check.reason
            if rule is not None and rule.status is not None:
                status = rule.status
        if rule is not None and rule.drop:
            status = None
        delay = 0.0 if rule is None else rule.delay
        stamp = headers.get("webhook-timestamp")
        delivery = Delivery(
            seq=0, method=handler.command, path=handler.path, headers=headers, body=body,
            json=_json_or_none(body), id=headers.get("webhook-id"),
            timestamp=int(stamp) if stamp and TIMESTAMP_RE.fullmatch(stamp) else None,
            verified=check.verified and body_error is None,
            signature_valid=check.signature_valid, timestamp_valid=check.timestamp_valid,
            reason=reason, received=received, status=status, delay=delay)
        with self._arrived:
            self._seq += 1
            delivery.seq = self._seq
            self._deliveries.append(delivery)
            self._arrived.notify_all()
        if delay and handler.server.stopping.wait(delay):
            handler.close_connection = True  # went down meanwhile: no answer
            return
        if status is None:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(handler, status, reason, rule)

    def _send(self, handler, status, reason, rule):
        text = b"" if 200 <= status < 300 else f"{reason or 'refused'}\n".encode()
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Length: {len(text)}",
                 "Content-Type: text/plain; charset=utf-8",
                 f"Connection: {'close' if handler.close_connection else 'keep-alive'}"]
        if rule is not None and rule.retry_after is not None:
            lines.append(f"Retry-After: {rule.retry_after}")
        try:
            handler.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + text)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True


def _json_or_none(body):
    try:
        return json.loads(body)
    except ValueError:
        return None
