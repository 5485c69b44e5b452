"""What the fake answers as Resend: error shapes, authentication, the rate limit, and the checks of
a create request. Messages are Resend's where they are known (shared/reference/resend-api.md);
the others name the offending field precisely, since the daemon's tests assert on them.
"""

import csv
import io
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field, replace

JSON_TYPE = "application/json"
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PROPERTY_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,50}")
MAPPED_FIELDS = ("email", "first_name", "last_name", "unsubscribed")
PROPERTY_TYPES = ("string", "number", "boolean")
ON_CONFLICT = ("upsert", "skip")
SUBSCRIPTIONS = ("opt_in", "opt_out")
KNOWN_FIELDS = ("file", "column_map", "on_conflict", "segments", "topics")
TEXT_FIELD_LIMIT = 1024 * 1024
MAX_HEADER_CHARS = 1024 * 1024
IMPORT_STATUSES = ("queued", "in_progress", "completed", "failed")

MISSING_API_KEY = ("Missing API key in the authorization header. Include the following header "
                   "'Authorization: Bearer YOUR_API_KEY' in the request.")
RATE_LIMITED = ("Too many requests. You can only make {} requests per second. See rate limit "
                "response headers for more information. Or contact support to increase rate limit.")

# The (name, message) a fault answers with when it does not say; names as documented per status.
DEFAULT_ERRORS = {
    400: ("validation_error", "Invalid request."),
    401: ("missing_api_key", MISSING_API_KEY),
    403: ("validation_error", "API key is invalid"),
    404: ("not_found", "The requested resource was not found."),
    405: ("method_not_allowed", "Method not allowed."),
    409: ("concurrent_idempotent_requests",
          "Same idempotency key used while original request is still in progress."),
    422: ("validation_error", "Injected validation error."),
    429: ("rate_limit_exceeded", RATE_LIMITED.format(2)),  # 2: Resend's usual default
    500: ("internal_server_error", "An unexpected error occurred."),
    503: ("service_unavailable", "The service is temporarily unavailable. Please try again."),
}


@dataclass
class Answer:
    """An HTTP answer before serialisation; `headers` are extra (name, value) pairs."""
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: list = field(default_factory=list)

    @classmethod
    def json(cls, status, value, headers=()):
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, JSON_TYPE, list(headers))

    def with_headers(self, headers):
        return replace(self, headers=self.headers + list(headers))

    def decoded(self):
        """The body as the request record shows it: JSON decoded, anything else as text."""
        text = self.body.decode("utf-8", "replace")
        return json.loads(text) if self.content_type == JSON_TYPE else text


class ApiError(Exception):
    """An error answer in Resend's shape: {"statusCode", "message", "name"}."""

    def __init__(self, status, name, message, headers=()):
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.headers = list(headers)

    def answer(self):
        body = {"statusCode": self.status, "message": self.message, "name": self.name}
        return Answer.json(self.status, body, self.headers)


def validation_error(message):
    return ApiError(422, "validation_error", message)


def default_error(status):
    """(name, message) for an error of this status when nothing more specific is known."""
    if status in DEFAULT_ERRORS:
        return DEFAULT_ERRORS[status]
    return ("application_error", f"HTTP {status} error.")


def check_auth(headers, api_keys):
    """Resend's order: a usable Authorization header, a known key, then a User-Agent."""
    scheme, _, key = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "missing_api_key", MISSING_API_KEY)
    if key.strip() not in api_keys:
        raise ApiError(403, "validation_error", "API key is invalid")
    if not (headers.get("User-Agent") or "").strip():
        raise ApiError(403, "validation_error", "User-Agent header is required")


class RateLimiter:
    """Fixed one-second windows, each opened by the first request after the last one ended.

    Windows are not aligned to wall-clock seconds, so a test's burst lands in one window however
    the clock falls. rps = 0 is unlimited but still reports a limit, as a real account would.
    """

    UNLIMITED_REPORTED = 1000

    def __init__(self, rps):
        self.rps = rps
        self._lock = threading.Lock()
        self._window_end = 0.0
        self._used = 0

    def admit(self):
        """Count one request, or raise the 429 when the window's quota is spent."""
        with self._lock:
            now = time.monotonic()
            if now >= self._window_end:
                self._window_end = now + 1.0
                self._used = 0
            if self.rps and self._used >= self.rps:
                retry_after = math.ceil(self._window_end - now)
                raise ApiError(429, "rate_limit_exceeded", RATE_LIMITED.format(self.rps),
                               [("retry-after", str(retry_after))])
            self._used += 1

    def headers(self):
        """The ratelimit-* headers describing the current window (without opening one)."""
        with self._lock:
            now = time.monotonic()
            active = now < self._window_end
            used = self._used if active else 0
            reset = math.ceil(self._window_end - now) if active else 1
        limit = self.rps or self.UNLIMITED_REPORTED
        return [("ratelimit-limit", str(limit)),
                ("ratelimit-remaining", str(max(limit - used, 0))),
                ("ratelimit-reset", str(reset))]

    def reset(self):
        with self._lock:
            self._window_end = 0.0
            self._used = 0


@dataclass
class ImportSpec:
    """A validated create request: what the import needs to run."""
    file_path: str
    column_map: dict | None
    on_conflict: str


def decode_fields(parts):
    """The JSON-valued fields decoded (None when absent or undecodable), for the request record."""
    fields = _first_parts(parts)
    return {
        "column_map": _try_json(fields.get("column_map")),
        "on_conflict": _text(fields.get("on_conflict")),
        "segments": _try_json(fields.get("segments")),
        "topics": _try_json(fields.get("topics")),
    }


def check_create(parts):
    """Validate a create request's parts in Resend's spirit; raise the 422, else the ImportSpec."""
    fields = _known_fields(parts)
    file_part = _check_file(fields.get("file"))
    for name, part in fields.items():
        if part.too_large and name != "file":
            raise validation_error(f"Field `{name}` is too large (over {TEXT_FIELD_LIMIT} bytes)")
    column_map = _check_column_map(fields.get("column_map"))
    on_conflict = _check_on_conflict(fields.get("on_conflict"))
    _check_segments(fields.get("segments"))
    _check_topics(fields.get("topics"))
    check_csv_header(file_part.path, column_map)
    return ImportSpec(file_part.path, column_map, on_conflict)


def _first_parts(parts):
    fields = {}
    for part in parts:
        fields.setdefault(part.name, part)
    return fields


def _known_fields(parts):
    """The known fields by name; sending one twice is ambiguous, hence an error."""
    fields = {}
    for part in parts:
        if part.name not in KNOWN_FIELDS:
            continue  # Resend ignores unknown fields
        if part.name in fields:
            raise validation_error(f"Duplicate `{part.name}` field")
        fields[part.name] = part
    return fields


def _text(part):
    return None if part is None else part.text


def _try_json(part):
    try:
        return json.loads(_text(part))
    except (TypeError, ValueError):
        return None


def _check_file(part):
    if part is None:
        raise validation_error("Missing `file`")
    if part.filename is None:  # what the Node SDK sends when `file` is undefined
        raise validation_error("`file` must be a file upload, not a text field")
    if part.too_large:
        raise validation_error(f"File too large: {part.size} bytes exceeds the limit of "
                               f"{part.limit} bytes")
    return part


def _json_field(part, name, expected):
    try:
        return json.loads(part.text)
    except ValueError:
        raise validation_error(f"Invalid `{name}`: expected {expected}") from None


def _is_column(value):
    return isinstance(value, str) and value != ""


def _check_column_map(part):
    if part is None:
        return None
    column_map = _json_field(part, "column_map", "a JSON object")
    if not isinstance(column_map, dict):
        raise validation_error("Invalid `column_map`: expected a JSON object")
    for key, value in column_map.items():
        if key == "properties":
            _check_properties(value)
        elif key not in MAPPED_FIELDS:
            raise validation_error(f"Invalid `column_map`: unknown key '{key}'")
        elif not _is_column(value):
            raise validation_error(f"Invalid `column_map.{key}`: expected a CSV column name")
    return column_map


def _check_properties(properties):
    if not isinstance(properties, dict):
        raise validation_error("Invalid `column_map.properties`: expected an object")
    for key, spec in properties.items():
        if not PROPERTY_KEY_RE.fullmatch(key):
            raise validation_error(f"Invalid `column_map.properties` key '{key}': use 1 to 50 "
                                   "letters, digits or underscores")
        if not isinstance(spec, dict) or set(spec) != {"column", "type"} \
                or not _is_column(spec["column"]):
            raise validation_error(f"Invalid `column_map.properties.{key}`: expected "
                                   "{column, type}")
        if spec["type"] not in PROPERTY_TYPES:
            raise validation_error(f"Invalid `column_map.properties.{key}.type`: must be one "
                                   f"of: {', '.join(PROPERTY_TYPES)}")


def _check_on_conflict(part):
    # Resend's sources disagree on the default; its create page says upsert.
    if part is None:
        return "upsert"
    if part.text not in ON_CONFLICT:
        raise validation_error(f"`on_conflict` must be one of: {', '.join(ON_CONFLICT)}")
    return part.text


def _check_uuid(value, where):
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise validation_error(f"Invalid `{where}`: must be a valid UUID")


def _check_objects(part, name, keys):
    """A JSON array of objects with exactly `keys`: the shape of segments and topics."""
    shape = f"an array of {{{', '.join(keys)}}} objects"
    items = _json_field(part, name, shape)
    if not isinstance(items, list) or \
            not all(isinstance(item, dict) and set(item) == set(keys) for item in items):
        raise validation_error(f"Invalid `{name}`: expected {shape}")
    for index, item in enumerate(items):
        _check_uuid(item["id"], f"{name}[{index}].id")
    return items


def _check_segments(part):
    if part is not None:
        _check_objects(part, "segments", ("id",))


def _check_topics(part):
    if part is None:
        return
    for index, topic in enumerate(_check_objects(part, "topics", ("id", "subscription"))):
        if topic["subscription"] not in SUBSCRIPTIONS:
            raise validation_error(f"Invalid `topics[{index}].subscription`: must be one of: "
                                   f"{', '.join(SUBSCRIPTIONS)}")


def read_csv_header(path):
    """The first CSV record (BOM stripped), reading at most MAX_HEADER_CHARS of the file."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as file:
        head = file.read(MAX_HEADER_CHARS)
    lines = io.StringIO(head)
    try:
        header = next(csv.reader(lines), [])
    except csv.Error as error:
        raise validation_error(f"CSV header could not be parsed: {error}") from None
    if len(head) == MAX_HEADER_CHARS and lines.tell() == len(head):
        raise validation_error(f"CSV header is longer than {MAX_HEADER_CHARS} characters")
    return header


def check_csv_header(path, column_map):
    """Every mapped column must be in the header; without a mapping for it, so must `email`."""
    header = read_csv_header(path)
    if not header:
        raise validation_error("CSV file is empty")
    column_map = column_map or {}
    if "email" not in column_map and "email" not in header:
        raise validation_error("CSV missing required email column")
    for source, column in mapped_columns(column_map):
        if column not in header:
            raise validation_error(f"CSV missing column '{column}' mapped by column_map.{source}")


def mapped_columns(column_map):
    """(where in column_map, CSV column) for every column a (validated) column_map names."""
    for name in MAPPED_FIELDS:
        if name in column_map:
            yield name, column_map[name]
    for key, spec in column_map.get("properties", {}).items():
        yield f"properties.{key}", spec["column"]


def check_list_query(query):
    """(limit, after, before, status) of GET /contacts/imports; 422 when out of range, or when
    both cursors are given (a page is either the next one or the previous one)."""
    limit = query.get("limit", "10")
    if not re.fullmatch(r"[0-9]{1,3}", limit) or not 1 <= int(limit) <= 100:
        raise validation_error("`limit` must be an integer between 1 and 100")
    if "after" in query and "before" in query:
        raise validation_error("`after` and `before` cannot be used together")
    status = query.get("status")
    if status is not None and status not in IMPORT_STATUSES:
        raise validation_error(f"`status` must be one of: {', '.join(IMPORT_STATUSES)}")
    return int(limit), query.get("after"), query.get("before"), status


def check_import_id(import_id):
    if not UUID_RE.fullmatch(import_id):
        raise validation_error("The `id` must be a valid UUID")
