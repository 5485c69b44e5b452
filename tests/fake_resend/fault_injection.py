"""Faults a test asks for: answer a given status, answer late, stall, hang up, or trickle.

A fault is one JSON object (or `--fault key=value,...` on the command line):
  status       answer this status with a Resend-shaped error (502: an HTML page, as proxies do)
  name/message override the error's name and message
  echo_auth    true: the error's message (or the 502 page) quotes the request's Authorization
               header and the key in it, as a careless server or proxy might
  retry_after  add `retry-after` (seconds; 429 answers carry 1 when not given)
  delay        seconds to wait before answering (combines with everything else)
  stall        send the headers and half the body, wait this many seconds, then hang up
  close        true: read the request, then hang up without answering
  slow         send the whole answer at this many bytes per second
  count        how many requests it applies to (default 1)
  path_prefix  only requests whose path starts with this (default: every API path)
  method       only requests with this method
Queued faults apply in order: a request takes the first one that matches it. With close the
request is not handled at all; with stall and slow it is, only the answer is damaged.
"""

import dataclasses
import threading
from dataclasses import dataclass

from resend_model import Answer, ApiError, default_error

BAD_GATEWAY_HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
NUMBER = (int, float)
FIELD_TYPES = {
    "status": int, "name": str, "message": str, "retry_after": int, "delay": NUMBER,
    "stall": NUMBER, "close": bool, "slow": NUMBER, "count": int, "path_prefix": str,
    "method": str, "echo_auth": bool,
}
DELIVERIES = ("stall", "close", "slow")


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    name: str | None = None
    message: str | None = None
    retry_after: int | None = None
    delay: float = 0
    stall: float | None = None
    close: bool = False
    slow: float | None = None
    count: int = 1
    path_prefix: str = ""
    method: str | None = None
    echo_auth: bool = False

    def matches(self, method, path):
        return path.startswith(self.path_prefix) and \
            (self.method is None or self.method.upper() == method)

    def to_json(self):
        """The fields that differ from their defaults, as the test wrote them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def answer(self, request_headers=None):
        """The answer a status fault gives instead of handling the request (whose headers
        echo_auth quotes)."""
        headers = []
        if self.retry_after is not None:
            headers.append(("retry-after", str(self.retry_after)))
        elif self.status == 429:
            headers.append(("retry-after", "1"))
        echo = self._echo(request_headers) if self.echo_auth else ""
        if self.status == 502 and self.name is None and self.message is None:
            page = BAD_GATEWAY_HTML
            if echo:
                page = page.replace(b"</body>", f"<p>{echo}</p></body>".encode())
            return Answer(502, page, "text/html", headers)
        name, message = default_error(self.status)
        message = self.message or message
        if echo:
            message = f"{message} ({echo})"
        return ApiError(self.status, self.name or name, message, headers).answer()

    @staticmethod
    def _echo(request_headers):
        """The Authorization header as received, and the key in it on its own."""
        value = (request_headers or {}).get("Authorization") or ""
        key = value.strip().partition(" ")[2].strip()
        return f"Authorization: {value}; key {key}"


def parse_fault(spec):
    """A Fault from its JSON object; ValueError says what is wrong with it."""
    if not isinstance(spec, dict):
        raise ValueError(f"a fault is a JSON object, not {spec!r}")
    for key, value in spec.items():
        if key not in FIELD_TYPES:
            raise ValueError(f"unknown fault field {key!r}")
        # bool is an int in Python, but `"count": true` is a mistake worth reporting
        if not isinstance(value, FIELD_TYPES[key]) or \
                (isinstance(value, bool) and FIELD_TYPES[key] is not bool):
            raise ValueError(f"fault field {key!r} has the wrong type: {value!r}")
    fault = Fault(**spec)
    _check(fault)
    return fault


def _check(fault):
    deliveries = [kind for kind in DELIVERIES if getattr(fault, kind) not in (None, False)]
    if fault.status is None and not fault.delay and not deliveries:
        raise ValueError("a fault needs one of: status, delay, stall, close, slow")
    if len(deliveries) > 1:
        raise ValueError(f"choose one of {', '.join(deliveries)}")
    if fault.close and fault.status is not None:
        raise ValueError("close sends no answer, so no status either")
    if fault.echo_auth and fault.status is None:
        raise ValueError("echo_auth needs a status: it is the error that quotes the header")
    if fault.status is not None and not 400 <= fault.status <= 599:
        raise ValueError(f"status must be an error status (400..599), not {fault.status}")
    if fault.count < 1 or fault.delay < 0 or (fault.stall or 0) < 0 or \
            (fault.slow is not None and fault.slow <= 0) or (fault.retry_after or 0) < 0:
        raise ValueError("count and slow must be positive; delay, stall, retry_after not negative")


def parse_fault_option(text):
    """A Fault from the command-line form: status=500,count=2 or close=1."""
    spec = {}
    for item in text.split(","):
        key, equals, value = (word.strip() for word in item.partition("="))
        if not equals or key not in FIELD_TYPES:
            raise ValueError(f"expected key=value with a fault field, got {item!r}")
        spec[key] = _convert(FIELD_TYPES[key], value)
    return parse_fault(spec)


def _convert(kind, value):
    if kind is bool:
        if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"expected a boolean, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    if kind is NUMBER:
        return float(value)
    return kind(value)


class FaultQueue:
    """Faults waiting for requests, first in first out; each serves `count` requests."""

    def __init__(self, faults=()):
        self._lock = threading.Lock()
        self._queue = []  # [fault, requests it still applies to]
        self.add(faults)

    def add(self, faults):
        with self._lock:
            self._queue.extend([fault, fault.count] for fault in faults)

    def clear(self):
        with self._lock:
            self._queue.clear()

    def take(self, method, path):
        """The first fault matching this request, counted as used; None when none matches."""
        with self._lock:
            for index, (fault, remaining) in enumerate(self._queue):
                if fault.matches(method, path):
                    if remaining == 1:
                        del self._queue[index]
                    else:
                        self._queue[index][1] = remaining - 1
                    return fault
        return None

    def pending(self):
        with self._lock:
            return [{**fault.to_json(), "remaining": remaining}
                    for fault, remaining in self._queue]
