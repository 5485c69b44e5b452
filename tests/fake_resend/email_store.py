"""POST /emails as Resend serves it: the checks of a send, the idempotency keys, and the e-mails
the fake accepted, kept for the tests to read (GET /_fake/emails). Nothing is delivered.

Sources (shared/reference/resend-api.md, Resend's send-email, idempotency-keys and errors pages):
required `from`, `to` (a string or up to 50 in an array) and `subject`; `cc`, `bcc`,
`reply_to` are a string or an array; `html`, `text`; `react` is rendered by the Node.js SDK and
never reaches the API; `template` excludes `html`, `text` and `react`; `headers` an object;
`tags` [{name, value}] of ASCII letters, digits, `_` and `-`, at most 256 characters;
`scheduled_at` in natural language or ISO 8601; an attachment needs `content` or `path`
(422 `invalid_attachment`). Missing fields are 422 `missing_required_field` ("Missing `to`
field."), a malformed address 422 `validation_error` with Resend's message. Answer: 200 {"id"}.

Idempotency-Key [DOC]: 1..256 characters (else 400 `invalid_idempotency_key`), kept 24 hours;
the same key with the same payload gets the first answer again and sends nothing; with another
payload 409 `invalid_idempotent_request`; while the first request with the key is still being
answered 409 `concurrent_idempotent_requests`. [INF] Only a send that succeeded is remembered:
a refused request leaves the key free, so a corrected retry under the same key is sent.
"""

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from import_store import iso_time
from resend_model import ApiError

MAX_RECIPIENTS = 50
MAX_IDEMPOTENCY_KEY = 256
ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
ADDRESS = r"[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:.]+"
BARE_ADDRESS_RE = re.compile(ADDRESS)
NAMED_ADDRESS_RE = re.compile(r"[^<>]*<(" + ADDRESS + r")>")
TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
NATURAL_TIME_RE = re.compile(r"in \d+ (?:sec|second|min|minute|hour|day|week)s?", re.I)
INVALID_ADDRESS = ("Invalid `{}` field. The email address needs to follow the `email@example.com` "
                   "or `Name <email@example.com>` format.")


def missing(field):
    return ApiError(422, "missing_required_field", f"Missing `{field}` field.")


def invalid(message):
    return ApiError(422, "validation_error", message)


def check_idempotency_key(headers):
    """The request's Idempotency-Key, None without one; 400 when its length is out of range."""
    values = headers.get_all("Idempotency-Key") or []
    if not values:
        return None
    if len(values) > 1 or not 1 <= len(values[0]) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
    return values[0]


def parse_json_body(content_type, data):
    """The JSON object sent; 400 when it is not JSON, 422 when it is not an object."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(400, "validation_error",
                       f"Content-Type must be application/json, not {content_type!r}")
    try:
        payload = json.loads(data)
    except ValueError as error:  # UnicodeDecodeError too
        message = f"Invalid JSON in the request body: {error}"
        raise ApiError(400, "validation_error", message) from None
    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.")
    return payload


def fingerprint(payload):
    """What makes two payloads the same for an idempotency key: their JSON, keys sorted."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def is_address(value):
    return isinstance(value, str) and bool(BARE_ADDRESS_RE.fullmatch(value.strip())
                                           or NAMED_ADDRESS_RE.fullmatch(value.strip()))


def _present(payload, field):
    return payload.get(field) not in (None, "", [])


def _check_string(payload, field):
    value = payload.get(field)
    if value is not None and not isinstance(value, str):
        raise invalid(f"The `{field}` field must be a `string`.")
    return value


def _check_addresses(payload, field):
    """The addresses of `field` as a list (empty when absent)."""
    value = payload.get(field)
    if value is None:
        return []
    addresses = [value] if isinstance(value, str) else value
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise invalid(f"The `{field}` field must be a `string` or an array of `string`.")
    if not all(is_address(address) for address in addresses):
        raise invalid(INVALID_ADDRESS.format(field))
    return addresses


def _check_headers(payload):
    headers = payload.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise invalid("The `headers` field must be an object of `string` values.")
    return headers


def _check_tags(payload):
    tags = payload.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, dict) for tag in tags):
        raise invalid("The `tags` field must be an array of {name, value} objects.")
    for index, tag in enumerate(tags):
        for key in ("name", "value"):
            value = tag.get(key)
            if (key == "name" or value is not None) and \
                    not (isinstance(value, str) and TAG_RE.fullmatch(value)):
                raise invalid(f"Invalid `tags[{index}].{key}`: it can only contain ASCII "
                              "letters, numbers, underscores or dashes, at most 256 characters.")
    return tags


def _check_scheduled_at(payload):
    value = payload.get("scheduled_at")
    if value is None:
        return None
    if isinstance(value, str):
        if NATURAL_TIME_RE.fullmatch(value.strip()):
            return value
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
        except ValueError:
            pass
    raise invalid("The `scheduled_at` field must be in natural language (e.g.: in 1 min) or "
                  "ISO 8601 format (e.g: 2024-08-05T11:52:01.858Z).")


def _check_attachments(payload):
    attachments = payload.get("attachments")
    if attachments is None:
        return
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise invalid("The `attachments` field must be an array of objects.")
    for attachment in attachments:
        if not attachment.get("content") and not attachment.get("path"):
            raise ApiError(422, "invalid_attachment",
                           "Attachment must have either a `content` or `path`.")


def _check_body(payload):
    html = _check_string(payload, "html")
    text = _check_string(payload, "text")
    template = payload.get("template")
    if "react" in payload:
        raise invalid("`react` is only available in the Node.js SDK, which renders it to "
                      "`html`: send `html` or `text`.")
    if template is not None:
        if not isinstance(template, dict) or not isinstance(template.get("id"), str):
            raise invalid("The `template` field must be an object with a `string` `id`.")
        if html is not None or text is not None:
            raise invalid("`template` cannot be sent with `html`, `text` or `react`.")
        return html, text
    if not html and not text:
        raise ApiError(422, "missing_required_field", "Missing `html` or `text` field.")
    return html, text


def check_email(payload):
    """Validate a send, in the order Resend documents its fields; the 422, or the e-mail as
    GET /_fake/emails shows it (addresses always as lists)."""
    for field in ("from", "to", "subject"):
        if not _present(payload, field):
            raise missing(field)
    sender = _check_string(payload, "from")
    if not is_address(sender):
        raise invalid(INVALID_ADDRESS.format("from"))
    addresses = {field: _check_addresses(payload, field) for field in ADDRESS_FIELDS}
    if len(addresses["to"]) > MAX_RECIPIENTS:
        raise invalid(f"The `to` field can have at most {MAX_RECIPIENTS} recipients, not "
                      f"{len(addresses['to'])}.")
    subject = _check_string(payload, "subject")
    html, text = _check_body(payload)
    headers = _check_headers(payload)
    tags = _check_tags(payload)
    scheduled_at = _check_scheduled_at(payload)
    _check_attachments(payload)
    return {"from": sender, **addresses, "subject": subject, "html": html, "text": text,
            "headers": headers, "tags": tags, "scheduled_at": scheduled_at}


@dataclass
class KeyEntry:
    fingerprint: str
    email_id: str | None = None  # None while the first request is being answered
    sent: float = 0.0            # monotonic


class EmailStore:
    """The e-mails accepted, in order, and the idempotency keys of the last `window` seconds."""

    def __init__(self):
        self._lock = threading.Lock()
        self._emails = []
        self._by_id = {}
        self._keys = {}

    def begin(self, key, print_, window):
        """Take `key` for a send of the payload `print_`: the id of the e-mail it already sent
        (send nothing), or None (go on, then finish() or release()); 409 when it cannot be
        used now."""
        with self._lock:
            now = time.monotonic()
            for old in [k for k, e in self._keys.items()
                        if e.email_id is not None and now - e.sent >= window]:
                del self._keys[old]
            entry = self._keys.get(key)
            if entry is None:
                self._keys[key] = KeyEntry(print_)
                return None
            if entry.fingerprint != print_:
                raise ApiError(409, "invalid_idempotent_request",
                               "Same idempotency key used with a different request payload.")
            if entry.email_id is None:
                raise ApiError(409, "concurrent_idempotent_requests",
                               "Same idempotency key used while original request is still in "
                               "progress.")
            self._by_id[entry.email_id]["replays"] += 1
            return entry.email_id

    def release(self, key):
        """The send under `key` was refused: the key is free again."""
        with self._lock:
            self._keys.pop(key, None)

    def add(self, email, payload, key, seq):
        """Keep an accepted e-mail (and remember its key); its id."""
        email_id = str(uuid.uuid4())
        with self._lock:
            record = {"object": "email", "id": email_id, "created_at": iso_time(time.time()),
                      "seq": seq, "idempotency_key": key, "replays": 0, **email,
                      "body": payload}
            self._emails.append(record)
            self._by_id[email_id] = record
            entry = None if key is None else self._keys.get(key)
            if entry is not None:  # (a reset during the send forgot it)
                entry.email_id = email_id
                entry.sent = time.monotonic()
        return email_id

    def emails(self):
        with self._lock:
            return [dict(record) for record in self._emails]

    def reset(self):
        with self._lock:
            self._emails.clear()
            self._by_id.clear()
            self._keys.clear()
