"""POST /emails as the fake serves it: a send accepted and kept for the tests (GET /_fake/emails),
the required fields and Resend's error for each one missing or malformed, authentication and the
team's rate limit shared with the imports, and idempotency keys as Resend documents them."""

import json
import re
import threading
import time

import pytest

from fakeapi import file_part

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EMAIL = {"from": "resend-dropd <dropd@example.com>", "to": "ops@example.com",
         "subject": "newsletter: 'contacts.csv' failed", "text": "212 rows were rejected."}
INVALID_ADDRESS = ("Invalid `{}` field. The email address needs to follow the "
                   "`email@example.com` or `Name <email@example.com>` format.")
MISSING_KEY = ("Missing API key in the authorization header. Include the following header "
               "'Authorization: Bearer YOUR_API_KEY' in the request.")


def email(**changes):
    """EMAIL with fields changed; a value of None leaves the field out."""
    payload = {**EMAIL, **changes}
    return {name: value for name, value in payload.items() if value is not None}


def assert_error(answer, status, name, message=None):
    body = answer.json()
    assert (answer.status, body["statusCode"], body["name"]) == (status, status, name), body
    assert set(body) == {"statusCode", "name", "message"}
    if message is not None:
        assert body["message"] == message
    assert answer.headers["content-type"] == "application/json"
    assert "ratelimit-limit" in answer.headers


# --- a send ------------------------------------------------------------------------------------

def test_a_send_answers_200_with_an_id_and_is_kept(fake):
    payload = email(cc=["a@example.com", "B <b@example.com>"], bcc="c@example.com",
                    reply_to="help@example.com", html="<p>212 rows</p>",
                    headers={"X-Entity-Ref-ID": "42"},
                    tags=[{"name": "folder", "value": "newsletter"}])
    answer = fake.send_email(payload)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(answer.headers)
    body = answer.json()
    assert set(body) == {"id"} and UUID.fullmatch(body["id"])
    kept, = fake.emails()
    assert kept["id"] == body["id"] and kept["object"] == "email"
    assert kept["from"] == "resend-dropd <dropd@example.com>"
    assert kept["to"] == ["ops@example.com"]  # a string is a list of one
    assert kept["cc"] == ["a@example.com", "B <b@example.com>"]
    assert kept["bcc"] == ["c@example.com"] and kept["reply_to"] == ["help@example.com"]
    assert (kept["subject"], kept["text"], kept["html"]) == (
        EMAIL["subject"], EMAIL["text"], "<p>212 rows</p>")
    assert kept["headers"] == {"X-Entity-Ref-ID": "42"}
    assert kept["tags"] == [{"name": "folder", "value": "newsletter"}]
    assert kept["scheduled_at"] is None and kept["idempotency_key"] is None
    assert kept["replays"] == 0 and kept["body"] == payload
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", kept["created_at"])
    record, = fake.requests()
    assert (record["seq"], record["method"], record["path"]) == (kept["seq"], "POST", "/emails")
    assert record["headers"]["content-type"] == "application/json"
    assert (record["status"], record["answer"]) == (200, body)


@pytest.mark.parametrize("changes", [
    {"to": [f"user{i}@example.com" for i in range(50)]},
    {"to": ["Ops Team <ops@example.com>", '"Doe, Jane" <jane@example.org>']},
    {"text": None, "html": "<p>hi</p>"},
    {"html": "<p>hi</p>", "text": ""},               # "" opts out of the generated text
    {"scheduled_at": "in 1 min"},
    {"scheduled_at": "2024-08-05T11:52:01.858Z"},
    {"tags": [{"name": "kind_1-x"}]},
    {"attachments": [{"filename": "rejects.csv", "content": "ZW1haWwK"}]},
    {"text": None, "template": {"id": "digest", "variables": {"files": 3}}},
    {"unknown_field": 1},
], ids=["50-recipients", "named", "html-only", "empty-text", "natural-time", "iso-time",
        "tag-without-value", "attachment", "template", "unknown-field"])
def test_a_send_accepts(fake, changes):
    answer = fake.send_email(email(**changes))
    assert answer.status == 200, answer.body
    assert len(fake.emails()) == 1


def test_sends_are_kept_in_order_and_without_a_key_each_one_is_sent(fake):
    ids = [fake.send_email(email(subject=f"n{i}")).json()["id"] for i in range(3)]
    ids.append(fake.send_email(email(subject="n2")).json()["id"])
    assert len(set(ids)) == 4
    assert [(kept["id"], kept["subject"]) for kept in fake.wait_emails(4)] == list(
        zip(ids, ["n0", "n1", "n2", "n2"]))


def test_wait_emails_gives_up_after_its_timeout(fake):
    with pytest.raises(TimeoutError, match="0 of 1 e-mails"):
        fake.wait_emails(1, timeout=0.2)


# --- refused sends -------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,message", [
    ({"from": None}, "Missing `from` field."),
    ({"to": None}, "Missing `to` field."),
    ({"to": []}, "Missing `to` field."),
    ({"subject": None}, "Missing `subject` field."),
    ({"subject": ""}, "Missing `subject` field."),
    ({"text": None}, "Missing `html` or `text` field."),
    ({"text": "", "html": ""}, "Missing `html` or `text` field."),
    ({"from": None, "to": None}, "Missing `from` field."),
], ids=["from", "to", "to-empty", "subject", "subject-empty", "body", "body-empty", "first"])
def test_a_missing_field_is_named(fake, changes, message):
    assert_error(fake.send_email(email(**changes)), 422, "missing_required_field", message)
    assert fake.emails() == []


@pytest.mark.parametrize("field,value", [
    ("from", "dropd.example.com"),
    ("from", "resend-dropd <dropd@example.com"),
    ("to", "ops@example"),
    ("to", ["ops@example.com", "not an address"]),
    ("cc", "a@b@example.com"),
    ("bcc", ["<>"]),
    ("reply_to", "help at example.com"),
])
def test_an_invalid_address_is_refused(fake, field, value):
    assert_error(fake.send_email(email(**{field: value})), 422, "validation_error",
                 INVALID_ADDRESS.format(field))
    assert fake.emails() == []


@pytest.mark.parametrize("changes,name,message", [
    ({"to": [f"u{i}@example.com" for i in range(51)]}, "validation_error",
     "The `to` field can have at most 50 recipients, not 51."),
    ({"to": 7}, "validation_error", "The `to` field must be a `string` or an array of `string`."),
    ({"cc": [1]}, "validation_error", "The `cc` field must be a `string` or an array of `string`."),
    ({"subject": ["s"]}, "validation_error", "The `subject` field must be a `string`."),
    ({"from": 1}, "validation_error", "The `from` field must be a `string`."),
    ({"html": 1}, "validation_error", "The `html` field must be a `string`."),
    ({"text": None, "react": "<Email />"}, "validation_error", None),
    ({"template": {"id": "t"}}, "validation_error",
     "`template` cannot be sent with `html`, `text` or `react`."),
    ({"headers": {"X-A": 1}}, "validation_error",
     "The `headers` field must be an object of `string` values."),
    ({"tags": [{"name": "bad name"}]}, "validation_error", None),
    ({"tags": [{"name": "a", "value": "x" * 257}]}, "validation_error", None),
    ({"tags": {"name": "a"}}, "validation_error", None),
    ({"scheduled_at": "tomorrow-ish"}, "validation_error", None),
    ({"attachments": [{"filename": "a.csv"}]}, "invalid_attachment",
     "Attachment must have either a `content` or `path`."),
], ids=["51-recipients", "to-type", "cc-type", "subject-type", "from-type", "html-type", "react",
        "template-and-body", "headers", "tag-name", "tag-value", "tags-type", "scheduled-at",
        "attachment"])
def test_a_malformed_field_is_refused(fake, changes, name, message):
    assert_error(fake.send_email(email(**changes)), 422, name, message)
    assert fake.emails() == []


@pytest.mark.parametrize("body,content_type,status,message", [
    (b'{"from": ', "application/json", 400, "Invalid JSON in the request body"),
    (b"\xff\xfe{}", "application/json", 400, "Invalid JSON in the request body"),
    (json.dumps(EMAIL).encode(), "text/plain", 400,
     "Content-Type must be application/json, not 'text/plain'"),
    (json.dumps(EMAIL).encode(), None, 400, "Content-Type must be application/json, not None"),
    (b"[1, 2]", "application/json; charset=utf-8", 422,
     "The request body must be a JSON object."),
], ids=["truncated", "not-utf8", "text-plain", "no-content-type", "array"])
def test_a_body_that_is_not_a_json_object_is_refused(fake, body, content_type, status, message):
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = fake.api("POST", "/emails", body, headers)
    assert_error(answer, status, "validation_error")
    assert answer.json()["message"].startswith(message)
    assert fake.emails() == []


def test_json_with_a_charset_is_json(fake):
    answer = fake.send_email(EMAIL, headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert answer.status == 200, answer.body


def test_other_methods_are_refused(fake):
    assert_error(fake.api("GET", "/emails"), 405, "method_not_allowed")


# --- authentication and the rate limit, as for every endpoint -----------------------------------

@pytest.mark.parametrize("options,status,name,message", [
    ({"api_key": None}, 401, "missing_api_key", MISSING_KEY),
    ({"api_key": "re_other"}, 403, "validation_error", "API key is invalid"),
    ({"user_agent": None}, 403, "validation_error", "User-Agent header is required"),
], ids=["no-key", "wrong-key", "no-user-agent"])
def test_authentication_comes_first(fake, options, status, name, message):
    # Even before the body: an unauthenticated malformed send is an authentication error.
    for payload in (EMAIL, email(to=None)):
        assert_error(fake.send_email(payload, **options), status, name, message)
    assert fake.emails() == []


def test_sends_count_against_the_teams_rate_limit_with_the_imports(fake, create):
    fake.configure(rps=3)
    answers = [fake.send_email(EMAIL), fake.api("GET", "/contacts/imports"),
               create(file_part("email\nx@y.com\n")), fake.send_email(email(subject="2"))]
    assert [answer.status for answer in answers] == [200, 200, 201, 429]
    assert_error(answers[3], 429, "rate_limit_exceeded")
    assert answers[3].headers["retry-after"] == "1"
    assert {answer.headers["ratelimit-limit"] for answer in answers} == {"3"}
    assert [kept["subject"] for kept in fake.emails()] == [EMAIL["subject"]]


def test_a_queued_fault_applies_to_a_send(fake):
    fake.faults([{"status": 503, "path_prefix": "/emails", "count": 1}])
    assert fake.api("GET", "/contacts/imports").status == 200
    assert_error(fake.send_email(EMAIL), 503, "service_unavailable")
    assert fake.emails() == []
    assert fake.send_email(EMAIL).status == 200


# --- idempotency keys ----------------------------------------------------------------------------

def test_the_same_key_and_payload_get_the_first_answer_and_send_nothing(fake):
    first = fake.send_email(EMAIL, idempotency_key="failed/contacts.csv/1")
    # The same JSON written differently is the same payload.
    again = fake.send_email(json.dumps(dict(reversed(EMAIL.items())), indent=2),
                            idempotency_key="failed/contacts.csv/1")
    assert (first.status, again.status) == (200, 200)
    assert again.json() == first.json()
    kept, = fake.emails()
    assert (kept["id"], kept["idempotency_key"], kept["replays"]) == (
        first.json()["id"], "failed/contacts.csv/1", 1)
    assert [record["headers"]["idempotency-key"] for record in fake.requests()] == [
        "failed/contacts.csv/1"] * 2


def test_the_same_key_with_another_payload_is_a_409(fake):
    assert fake.send_email(EMAIL, idempotency_key="k").status == 200
    assert_error(fake.send_email(email(subject="other"), idempotency_key="k"), 409,
                 "invalid_idempotent_request",
                 "Same idempotency key used with a different request payload.")
    assert fake.send_email(email(subject="other"), idempotency_key="k2").status == 200
    assert [kept["idempotency_key"] for kept in fake.emails()] == ["k", "k2"]


@pytest.mark.parametrize("key,status", [("", 400), ("x" * 257, 400), ("x" * 256, 200),
                                        ("x", 200)], ids=["empty", "257", "256", "1"])
def test_a_key_is_1_to_256_characters(fake, key, status):
    answer = fake.send_email(EMAIL, idempotency_key=key)
    if status == 400:
        assert_error(answer, 400, "invalid_idempotency_key",
                     "The key must be between 1-256 chars.")
    else:
        assert answer.status == 200, answer.body
    assert len(fake.emails()) == (status == 200)


def test_a_refused_send_leaves_its_key_free(fake):
    assert fake.send_email(email(to="nobody"), idempotency_key="k").status == 422
    answer = fake.send_email(EMAIL, idempotency_key="k")
    assert answer.status == 200, answer.body
    assert fake.emails()[0]["id"] == answer.json()["id"]


def test_a_key_still_in_use_is_a_409_concurrent(fake):
    fake.configure(email_seconds=2.0)
    answers = {}
    first = threading.Thread(target=lambda: answers.setdefault(
        "first", fake.send_email(EMAIL, idempotency_key="k")))
    first.start()
    deadline = time.monotonic() + 10
    while fake.stats()["total_requests"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the first send has arrived and is under way, holding the key
    assert_error(fake.send_email(EMAIL, idempotency_key="k"), 409,
                 "concurrent_idempotent_requests",
                 "Same idempotency key used while original request is still in progress.")
    first.join(10)
    assert answers["first"].status == 200
    again = fake.send_email(EMAIL, idempotency_key="k")  # finished: the first answer again
    assert again.json() == answers["first"].json()
    assert len(fake.emails()) == 1


def test_a_key_is_forgotten_after_the_window(fake):
    fake.configure(idempotency_seconds=0.3)
    first = fake.send_email(EMAIL, idempotency_key="k").json()["id"]
    assert fake.send_email(EMAIL, idempotency_key="k").json()["id"] == first
    time.sleep(0.4)
    second = fake.send_email(EMAIL, idempotency_key="k").json()["id"]
    assert second != first
    assert [kept["id"] for kept in fake.emails()] == [first, second]


def test_the_default_window_is_24_hours(fake):
    assert fake.control("GET", "config")["idempotency_seconds"] == 24 * 3600


def test_reset_forgets_the_emails_and_the_keys(fake):
    first = fake.send_email(EMAIL, idempotency_key="k").json()["id"]
    fake.reset()
    assert fake.emails() == []
    assert fake.send_email(email(subject="other"), idempotency_key="k").json()["id"] != first
