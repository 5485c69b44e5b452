"""Contact imports run the way Resend runs them: asynchronously, against one contact store that all
imports share, so that `upsert` and `skip` have something to conflict with.

Imports do no work in the background: their status follows from the time elapsed, and an import
is processed (its CSV read, the store changed, its counts fixed) when a reader first needs it
after its due time. Due imports are always processed together, in the order they fell due, so the
counts do not depend on which import a client happens to look at first.
"""

import csv
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from resend_model import MAPPED_FIELDS

QUEUED_SHARE = 0.3  # the part of an import's time spent queued; the rest is in_progress
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
COUNT_KEYS = ("total", "created", "updated", "skipped", "failed")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


def iso_time(timestamp):
    """Resend's timestamp form: 2026-05-15T18:32:37.823Z."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ContactImport:
    id: str
    spec: object          # resend_model.ImportSpec
    created_at: float     # wall clock, shown to clients
    started: float        # monotonic clock, drives the status
    duration: float
    fail: bool            # end in `failed` whatever the rows say
    final_status: str | None = None
    counts: dict | None = None

    @property
    def due(self):
        return self.started + self.duration

    def status(self, now):
        if self.final_status is not None:
            return self.final_status
        elapsed = now - self.started
        return "queued" if elapsed < QUEUED_SHARE * self.duration else "in_progress"

    def to_json(self, now):
        status = self.status(now)
        body = {
            "object": "contact_import",
            "id": self.id,
            "status": status,
            "created_at": iso_time(self.created_at),
            "completed_at": iso_time(self.created_at + self.duration)
            if self.final_status is not None else None,
        }
        if status != "queued":
            body["counts"] = self.counts or dict.fromkeys(COUNT_KEYS, 0)
        return body


class ColumnIndexes:
    """Where each contact field and property sits in a CSV's rows, given its header."""

    def __init__(self, column_map, header):
        if column_map is None:  # Resend's default headers
            names = {name: name for name in MAPPED_FIELDS}
            properties = {}
        else:
            names = {"email": "email", **{name: column_map[name]
                                         for name in MAPPED_FIELDS if name in column_map}}
            properties = column_map.get("properties", {})
        self.fields = {name: header.index(column)
                       for name, column in names.items() if column in header}
        self.properties = {key: (header.index(spec["column"]), spec["type"])
                           for key, spec in properties.items() if spec["column"] in header}

    def contact(self, row):
        """(email, other fields, properties) of one row; cells missing from short rows are ''."""
        def cell(index):
            return row[index].strip() if index < len(row) else ""
        fields = {name: cell(index) for name, index in self.fields.items()}
        if "unsubscribed" in fields:
            fields["unsubscribed"] = _typed(fields["unsubscribed"], "boolean")
        properties = {key: _typed(cell(index), kind)
                      for key, (index, kind) in self.properties.items()}
        return fields.pop("email", ""), fields, properties


def _typed(value, kind):
    """A cell as its declared type; a cell that does not parse stays a string."""
    lowered = value.lower()
    if kind == "boolean" and lowered in TRUE_WORDS + FALSE_WORDS:
        return lowered in TRUE_WORDS
    if kind == "number":
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                pass
    return value


class ImportStore:
    """The imports and the contact store they fill; safe to use from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._imports = {}    # id -> ContactImport, in creation order
        self._contacts = {}   # lower-cased email -> contact

    def create(self, spec, duration, fail):
        """Queue an import of a validated request; return its id."""
        contact_import = ContactImport(str(uuid.uuid4()), spec, time.time(), time.monotonic(),
                                       duration, fail)
        with self._lock:
            self._imports[contact_import.id] = contact_import
        return contact_import.id

    def get(self, import_id):
        """The import as GET /contacts/imports/{id} shows it, or None."""
        with self._lock:
            now = self._advance()
            contact_import = self._imports.get(import_id)
            return None if contact_import is None else contact_import.to_json(now)

    def list(self, limit, after=None, before=None, status=None):
        """GET /contacts/imports, newest first. `after`: the page of older imports that follows
        the cursor; `before`: the page of newer ones that precedes it (the `limit` nearest the
        cursor, still newest first). The cursor itself is left out; an unknown one gives an empty
        page. `has_more`: more imports lie beyond the page, away from the cursor."""
        with self._lock:
            now = self._advance()
            imports = list(reversed(self._imports.values()))
            cursor = after if after is not None else before
            if cursor is not None:
                ids = [contact_import.id for contact_import in imports]
                if cursor not in ids:
                    imports = []
                elif after is not None:
                    imports = imports[ids.index(cursor) + 1:]
                else:
                    imports = imports[:ids.index(cursor)]
            matching = [contact_import for contact_import in imports
                        if status is None or contact_import.status(now) == status]
            page = matching[-limit:] if before is not None else matching[:limit]
            return {"object": "list", "has_more": len(matching) > limit,
                    "data": [contact_import.to_json(now) for contact_import in page]}

    def contacts(self):
        with self._lock:
            self._advance()
            return {email: dict(contact) for email, contact in self._contacts.items()}

    def reset(self):
        with self._lock:
            self._imports.clear()
            self._contacts.clear()

    def _advance(self):
        """Process every import whose time is up, in due order; return the time it used."""
        now = time.monotonic()
        due = [contact_import for contact_import in self._imports.values()
               if contact_import.final_status is None and contact_import.due <= now]
        for contact_import in sorted(due, key=lambda contact_import: contact_import.due):
            self._process(contact_import)
        return now

    def _process(self, contact_import):
        counts = dict.fromkeys(COUNT_KEYS, 0)
        spec = contact_import.spec
        status = "failed" if contact_import.fail else "completed"
        try:
            with open(spec.file_path, encoding="utf-8-sig", errors="replace", newline="") as file:
                rows = csv.reader(file)
                columns = ColumnIndexes(spec.column_map, next(rows, []))
                for row in rows:
                    if not row:  # blank line, not a record
                        continue
                    counts["total"] += 1
                    outcome = "failed" if contact_import.fail else \
                        self._apply(columns.contact(row), spec.on_conflict, contact_import.id)
                    counts[outcome] += 1
        except (OSError, csv.Error):  # what was applied stays applied, as in a real partial run
            status = "failed"
        contact_import.counts = counts
        contact_import.final_status = status

    def _apply(self, contact, on_conflict, import_id):
        """Store one row's contact; return its count key."""
        email, fields, properties = contact
        if not EMAIL_RE.fullmatch(email):
            return "failed"
        existing = self._contacts.get(email.lower())
        if existing is None:
            self._contacts[email.lower()] = {
                "email": email, "first_name": None, "last_name": None, "unsubscribed": None,
                **fields, "properties": properties, "import_id": import_id}
            return "created"
        if on_conflict == "skip":
            return "skipped"
        existing.update(fields, import_id=import_id)
        existing["properties"] = {**existing["properties"], **properties}
        return "updated"
