"""The Resend API as the fake serves it: create, retrieve, list, authentication, validation, the
asynchronous import and its counts, and the record of each request."""

import hashlib
import json
import re
import time

import pytest

from fakeapi import encode_multipart, file_part

SEGMENT = "78261eea-8f8b-4381-83c6-79fa7120f1cf"
TOPIC = "b6d24b8e-af0b-4c3c-be0c-359bbd97381e"
UNKNOWN_IMPORT = "479e3145-dd38-476b-932c-529ceb705947"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FULL_MAP = {"email": "Email", "first_name": "First", "last_name": "Last",
            "unsubscribed": "Unsub",
            "properties": {"plan": {"column": "Plan", "type": "string"},
                           "age": {"column": "Age", "type": "number"},
                           "vip": {"column": "VIP", "type": "boolean"}}}
FULL_CSV = ("Email,First,Last,Unsub,Plan,Age,VIP\n"
            "alice@example.com,Alice,Smith,false,pro,31,true\n"
            "bob@example.com,Bob,Jones,true,free,45,false\n")


def error(status, name, message):
    return {"statusCode": status, "name": name, "message": message}


def assert_error(answer, status, name, message):
    assert (answer.status, answer.json()) == (status, error(status, name, message))
    assert answer.headers["content-type"] == "application/json"
    assert "ratelimit-limit" in answer.headers


def imported(fake, create, csv, **fields):
    """Create an import of `csv` with the given text fields; its id."""
    parts = [file_part(csv)] + [(name, value if isinstance(value, str) else json.dumps(value))
                                for name, value in fields.items()]
    answer = create(*parts)
    assert answer.status == 201, answer.body
    return answer.json()["id"]


def retrieve(fake, import_id):
    answer = fake.api("GET", f"/contacts/imports/{import_id}")
    assert answer.status == 200, answer.body
    return answer.json()


# --- create ----------------------------------------------------------------------------------

def test_create_answers_201_with_an_import_id(fake, create):
    answer = create(file_part("email\nx@y.com\n"))
    assert answer.status == 201
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["object"] == "contact_import" and set(body) == {"object", "id"}
    assert UUID.fullmatch(body["id"])


def test_create_accepts_every_field(fake, create):
    answer = create(file_part(FULL_CSV), ("column_map", json.dumps(FULL_MAP)),
                    ("on_conflict", "skip"), ("segments", json.dumps([{"id": SEGMENT}])),
                    ("topics", json.dumps([{"id": TOPIC, "subscription": "opt_out"}])))
    assert answer.status == 201, answer.body


@pytest.mark.parametrize("parts", [
    [file_part("\ufeffemail,first_name\nx@y.com,X\n")],        # a UTF-8 BOM is not a column
    [file_part("email\nx@y.com\n"), ("column_map", "{}")],      # no map: the default email
    [file_part("email\nx@y.com\n"), ("extra", "ignored"), ("other", b"x", "x.bin", None)],
    [file_part("email\r\nx@y.com\r\n", filename="")],           # an empty filename is a file
], ids=["bom", "empty-map", "unknown-parts", "empty-filename"])
def test_create_accepts(fake, create, parts):
    answer = create(*parts)
    assert answer.status == 201, answer.body


# --- authentication, in Resend's order -----------------------------------------------------

MISSING_KEY = ("Missing API key in the authorization header. Include the following header "
               "'Authorization: Bearer YOUR_API_KEY' in the request.")


@pytest.mark.parametrize("headers,options,status,name,message", [
    ({}, {"api_key": None}, 401, "missing_api_key", MISSING_KEY),
    ({"Authorization": "Basic cmVfdGVzdF9rZXk="}, {"api_key": None}, 401, "missing_api_key",
     MISSING_KEY),
    ({"Authorization": "Bearer "}, {"api_key": None}, 401, "missing_api_key", MISSING_KEY),
    ({}, {"api_key": "re_other"}, 403, "validation_error", "API key is invalid"),
    ({}, {"user_agent": None}, 403, "validation_error", "User-Agent header is required"),
    ({}, {"api_key": None, "user_agent": None}, 401, "missing_api_key", MISSING_KEY),
    ({}, {"api_key": "re_other", "user_agent": None}, 403, "validation_error",
     "API key is invalid"),
], ids=["no-header", "basic", "empty-bearer", "unknown-key", "no-user-agent",
        "key-before-agent", "invalid-key-before-agent"])
def test_authentication(fake, create, headers, options, status, name, message):
    answer = create(file_part("email\nx@y.com\n"), headers=headers, **options)
    assert_error(answer, status, name, message)
    assert fake.api("GET", "/contacts/imports", **options).status == status


def test_only_the_configured_keys_are_accepted(fake):
    # The module's server runs with the default key; any other one is refused.
    assert fake.api("GET", "/contacts/imports", api_key="re_test_key").status == 200
    assert fake.api("GET", "/contacts/imports", api_key="re_test_key2").status == 403


# --- validation -------------------------------------------------------------------------------

CSV = file_part("email\nx@y.com\n")
BIG = "x" * (1024 * 1024 + 1)


@pytest.mark.parametrize("parts,message", [
    ([("on_conflict", "upsert")], "Missing `file`"),
    ([("file", "undefined")], "`file` must be a file upload, not a text field"),
    ([CSV, CSV], "Duplicate `file` field"),
    ([CSV, ("on_conflict", "skip"), ("on_conflict", "skip")], "Duplicate `on_conflict` field"),
    ([CSV, ("column_map", BIG)], "Field `column_map` is too large (over 1048576 bytes)"),
    ([CSV, ("column_map", "{email")], "Invalid `column_map`: expected a JSON object"),
    ([CSV, ("column_map", '["email"]')], "Invalid `column_map`: expected a JSON object"),
    ([CSV, ("column_map", '{"mail":"email"}')], "Invalid `column_map`: unknown key 'mail'"),
    ([CSV, ("column_map", '{"email":3}')],
     "Invalid `column_map.email`: expected a CSV column name"),
    ([CSV, ("column_map", '{"first_name":""}')],
     "Invalid `column_map.first_name`: expected a CSV column name"),
    ([CSV, ("column_map", '{"properties":[]}')],
     "Invalid `column_map.properties`: expected an object"),
    ([CSV, ("column_map", '{"properties":{"bad-key":{"column":"email","type":"string"}}}')],
     "Invalid `column_map.properties` key 'bad-key': use 1 to 50 letters, digits or underscores"),
    ([CSV, ("column_map", json.dumps({"properties": {"k" * 51: {"column": "email",
                                                                "type": "string"}}}))],
     f"Invalid `column_map.properties` key '{'k' * 51}': use 1 to 50 letters, digits or "
     "underscores"),
    ([CSV, ("column_map", '{"properties":{"plan":{"column":"email"}}}')],
     "Invalid `column_map.properties.plan`: expected {column, type}"),
    ([CSV, ("column_map", '{"properties":{"plan":"email"}}')],
     "Invalid `column_map.properties.plan`: expected {column, type}"),
    ([CSV, ("column_map", '{"properties":{"plan":{"column":"email","type":"date"}}}')],
     "Invalid `column_map.properties.plan.type`: must be one of: string, number, boolean"),
    ([CSV, ("on_conflict", "replace")], "`on_conflict` must be one of: upsert, skip"),
    ([CSV, ("on_conflict", "")], "`on_conflict` must be one of: upsert, skip"),
    ([CSV, ("segments", f'{{"id":"{SEGMENT}"}}')],
     "Invalid `segments`: expected an array of {id} objects"),
    ([CSV, ("segments", f'["{SEGMENT}"]')],
     "Invalid `segments`: expected an array of {id} objects"),
    ([CSV, ("segments", f'[{{"id":"{SEGMENT}","name":"x"}}]')],
     "Invalid `segments`: expected an array of {id} objects"),
    ([CSV, ("segments", "[{")], "Invalid `segments`: expected an array of {id} objects"),
    ([CSV, ("segments", f'[{{"id":"{SEGMENT}"}},{{"id":"x"}}]')],
     "Invalid `segments[1].id`: must be a valid UUID"),
    ([CSV, ("segments", f'[{{"id":"{SEGMENT[:-1]}"}}]')],
     "Invalid `segments[0].id`: must be a valid UUID"),
    ([CSV, ("topics", f'[{{"id":"{TOPIC}"}}]')],
     "Invalid `topics`: expected an array of {id, subscription} objects"),
    ([CSV, ("topics", f'[{{"id":"{TOPIC}","subscription":"maybe"}}]')],
     "Invalid `topics[0].subscription`: must be one of: opt_in, opt_out"),
    ([CSV, ("topics", '[{"id":7,"subscription":"opt_in"}]')],
     "Invalid `topics[0].id`: must be a valid UUID"),
    ([file_part("")], "CSV file is empty"),
    ([file_part("Email\nx@y.com\n")], "CSV missing required email column"),
    ([file_part("e\nx@y.com\n"), ("column_map", '{"first_name":"e"}')],
     "CSV missing required email column"),
    ([CSV, ("column_map", '{"email":"E-mail"}')],
     "CSV missing column 'E-mail' mapped by column_map.email"),
    ([CSV, ("column_map", '{"email":"email","last_name":"Last"}')],
     "CSV missing column 'Last' mapped by column_map.last_name"),
    ([CSV, ("column_map", '{"properties":{"plan":{"column":"Plan","type":"string"}}}')],
     "CSV missing column 'Plan' mapped by column_map.properties.plan"),
], ids=lambda value: None if isinstance(value, list) else value[:60])
def test_validation_errors(fake, create, parts, message):
    assert_error(create(*parts), 422, "validation_error", message)
    assert fake.api("GET", "/contacts/imports").json()["data"] == []


def test_a_body_that_is_not_multipart_is_refused(fake):
    answer = fake.api("POST", "/contacts/imports", b'{"file":"x"}',
                      {"Content-Type": "application/json"})
    assert_error(answer, 422, "validation_error",
                 "Content-Type must be multipart/form-data with a boundary")


def test_a_file_over_the_size_limit_is_refused_and_not_kept(fake, create):
    fake.configure(max_bytes=10)
    answer = create(file_part("email\nx@y.com\n" + "y@z.com\n" * 2))
    assert_error(answer, 422, "validation_error",
                 "File too large: 30 bytes exceeds the limit of 10 bytes")
    record = fake.requests()[0]
    assert record["file"]["size"] == 30 and record["file"]["path"] is None


def test_the_size_limit_is_inclusive(fake, create):
    fake.configure(max_bytes=len("email\nx@y.com\n"))
    assert create(file_part("email\nx@y.com\n")).status == 201


# --- retrieve, routing ------------------------------------------------------------------------

def test_retrieve_of_an_unknown_import_is_not_found(fake):
    assert_error(fake.api("GET", f"/contacts/imports/{UNKNOWN_IMPORT}"), 404, "not_found",
                 "Contact import not found")


def test_retrieve_with_a_malformed_id_is_refused(fake):
    assert_error(fake.api("GET", "/contacts/imports/abc"), 422, "validation_error",
                 "The `id` must be a valid UUID")


def test_unknown_paths_and_methods(fake):
    assert_error(fake.api("GET", "/domains"), 404, "not_found",
                 "The requested endpoint does not exist.")
    assert_error(fake.api("DELETE", "/contacts/imports"), 405, "method_not_allowed",
                 "Method DELETE not allowed on /contacts/imports.")
    assert_error(fake.api("POST", f"/contacts/imports/{UNKNOWN_IMPORT}"), 405,
                 "method_not_allowed",
                 f"Method POST not allowed on /contacts/imports/{UNKNOWN_IMPORT}.")


# --- the asynchronous import ------------------------------------------------------------------

def test_status_moves_from_queued_through_in_progress_to_completed(fake, create):
    fake.configure(import_seconds=2.0)  # queued for 0.6 s, then in_progress until 2 s
    import_id = imported(fake, create, "email\na@x.com\nb@x.com\n")
    queued = retrieve(fake, import_id)
    assert queued["status"] == "queued" and "counts" not in queued
    assert queued["completed_at"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", queued["created_at"])
    time.sleep(1.0)
    in_progress = retrieve(fake, import_id)
    assert in_progress["status"] == "in_progress" and in_progress["completed_at"] is None
    assert in_progress["counts"] == {"total": 0, "created": 0, "updated": 0, "skipped": 0,
                                     "failed": 0}
    time.sleep(1.1)
    completed = retrieve(fake, import_id)
    assert completed["status"] == "completed"
    assert completed["counts"] == {"total": 2, "created": 2, "updated": 0, "skipped": 0,
                                   "failed": 0}
    assert completed["completed_at"] >= completed["created_at"]


def test_counts_follow_the_contact_store_across_imports(fake, create):
    first = imported(fake, create, "email,first_name\nA@x.com,Ann\nb@x.com,Bob\nnot-an-email,X\n"
                                   ",Nobody\n\nc@x\n")
    assert retrieve(fake, first)["counts"] == {"total": 5, "created": 2, "updated": 0,
                                               "skipped": 0, "failed": 3}
    skipped = imported(fake, create, "email,first_name\na@X.com,Changed\nd@x.com,Dee\n",
                       on_conflict="skip")
    assert retrieve(fake, skipped)["counts"] == {"total": 2, "created": 1, "updated": 0,
                                                 "skipped": 1, "failed": 0}
    assert fake.contacts()["a@x.com"]["first_name"] == "Ann"
    upserted = imported(fake, create, "email,first_name\na@x.com,Anna\nb@x.com,Bob\n",
                        on_conflict="upsert")
    assert retrieve(fake, upserted)["counts"] == {"total": 2, "created": 0, "updated": 2,
                                                  "skipped": 0, "failed": 0}
    contacts = fake.contacts()
    assert sorted(contacts) == ["a@x.com", "b@x.com", "d@x.com"]
    assert contacts["a@x.com"]["first_name"] == "Anna"
    assert (contacts["a@x.com"]["email"], contacts["a@x.com"]["import_id"]) == ("A@x.com", upserted)


def test_on_conflict_defaults_to_upsert(fake, create):
    imported(fake, create, "email,first_name\na@x.com,Ann\n")
    second = imported(fake, create, "email,first_name\na@x.com,Anna\n")
    assert retrieve(fake, second)["counts"]["updated"] == 1


def test_a_column_map_maps_fields_and_typed_properties(fake, create):
    import_id = imported(fake, create, FULL_CSV, column_map=FULL_MAP)
    assert retrieve(fake, import_id)["counts"]["created"] == 2
    alice = fake.contacts()["alice@example.com"]
    assert alice == {"email": "alice@example.com", "first_name": "Alice", "last_name": "Smith",
                     "unsubscribed": False, "import_id": import_id,
                     "properties": {"plan": "pro", "age": 31, "vip": True}}


def test_imports_fail_when_told_to(fake, create):
    fake.configure(fail_imports=True)
    import_id = imported(fake, create, "email\na@x.com\nb@x.com\n")
    failed = retrieve(fake, import_id)
    assert failed["status"] == "failed" and failed["completed_at"] is not None
    assert failed["counts"] == {"total": 2, "created": 0, "updated": 0, "skipped": 0,
                                "failed": 2}
    assert fake.contacts() == {}


def test_imports_are_processed_in_the_order_they_fall_due(fake, create):
    # Looking at the second import first must not let it claim the contact.
    fake.configure(import_seconds=0.3)
    first = imported(fake, create, "email\na@x.com\n", on_conflict="skip")
    second = imported(fake, create, "email\na@x.com\n", on_conflict="skip")
    time.sleep(0.4)
    assert retrieve(fake, second)["counts"]["skipped"] == 1
    assert retrieve(fake, first)["counts"]["created"] == 1


# --- list -------------------------------------------------------------------------------------

def test_list_is_newest_first_with_limit_and_after(fake, create):
    ids = [imported(fake, create, "email\na@x.com\n") for _ in range(12)]
    newest_first = ids[::-1]
    default = fake.api("GET", "/contacts/imports").json()
    assert default["object"] == "list" and default["has_more"] is True
    assert [item["id"] for item in default["data"]] == newest_first[:10]
    assert default["data"][0]["object"] == "contact_import"
    page = fake.api("GET", f"/contacts/imports?limit=5&after={newest_first[4]}").json()
    assert [item["id"] for item in page["data"]] == newest_first[5:10] and page["has_more"]
    last = fake.api("GET", f"/contacts/imports?limit=5&after={newest_first[9]}").json()
    assert [item["id"] for item in last["data"]] == newest_first[10:]
    assert last["has_more"] is False
    unknown = fake.api("GET", "/contacts/imports?after=abc").json()
    assert unknown == {"object": "list", "has_more": False, "data": []}


def test_list_pages_back_with_before(fake, create):
    ids = [imported(fake, create, "email\na@x.com\n") for _ in range(12)]
    newest_first = ids[::-1]
    page = fake.api("GET", f"/contacts/imports?limit=3&before={newest_first[5]}").json()
    # The three nearest the cursor, newest first; two newer ones remain beyond them.
    assert [item["id"] for item in page["data"]] == newest_first[2:5] and page["has_more"]
    first = fake.api("GET", f"/contacts/imports?limit=5&before={newest_first[3]}").json()
    assert [item["id"] for item in first["data"]] == newest_first[:3]
    assert first["has_more"] is False
    for cursor in (newest_first[0], UNKNOWN_IMPORT):
        assert fake.api("GET", f"/contacts/imports?before={cursor}").json() == {
            "object": "list", "has_more": False, "data": []}


def test_pages_forward_then_back_come_back_to_the_same_page(fake, create):
    ids = [imported(fake, create, "email\na@x.com\n") for _ in range(7)]
    first = fake.api("GET", "/contacts/imports?limit=3").json()["data"]
    second = fake.api("GET", f"/contacts/imports?limit=3&after={first[-1]['id']}").json()
    back = fake.api("GET", f"/contacts/imports?limit=3&before={second['data'][0]['id']}").json()
    assert [item["id"] for item in back["data"]] == [item["id"] for item in first]
    assert back["has_more"] is False and second["has_more"] is True
    assert {item["id"] for item in first + second["data"]} < set(ids)


def test_list_items_are_the_imports_as_retrieved(fake, create):
    done = imported(fake, create, "email\na@x.com\nb@x.com\n")
    fake.configure(import_seconds=60)
    waiting = imported(fake, create, "email\nc@x.com\n")
    items = {item["id"]: item for item in fake.api("GET", "/contacts/imports").json()["data"]}
    assert items == {done: retrieve(fake, done), waiting: retrieve(fake, waiting)}
    assert set(items[done]) == {"object", "id", "status", "created_at", "completed_at", "counts"}
    assert items[done]["counts"] == {"total": 2, "created": 2, "updated": 0, "skipped": 0,
                                     "failed": 0}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", items[done]["completed_at"])
    assert items[waiting]["status"] == "queued" and items[waiting]["completed_at"] is None
    assert "counts" not in items[waiting]


def test_the_status_filter_applies_after_the_cursor(fake, create):
    ids = [imported(fake, create, "email\na@x.com\n") for _ in range(3)]
    fake.configure(fail_imports=True)
    failed = imported(fake, create, "email\na@x.com\n")
    fake.configure(fail_imports=False)
    ids += [imported(fake, create, "email\na@x.com\n") for _ in range(3)]
    older = fake.api("GET", f"/contacts/imports?status=completed&limit=2&after={ids[4]}").json()
    assert [item["id"] for item in older["data"]] == [ids[3], ids[2]] and older["has_more"]
    newer = fake.api("GET", f"/contacts/imports?status=failed&before={ids[0]}").json()
    assert [item["id"] for item in newer["data"]] == [failed] and newer["has_more"] is False


def test_list_filters_by_status(fake, create):
    done = imported(fake, create, "email\na@x.com\n")
    fake.configure(import_seconds=60)
    waiting = imported(fake, create, "email\na@x.com\n")
    by_status = {status: [item["id"] for item in fake.api(
        "GET", f"/contacts/imports?status={status}").json()["data"]]
        for status in ("completed", "queued", "failed")}
    assert by_status == {"completed": [done], "queued": [waiting], "failed": []}


@pytest.mark.parametrize("query,message", [
    ("limit=0", "`limit` must be an integer between 1 and 100"),
    ("limit=101", "`limit` must be an integer between 1 and 100"),
    ("limit=ten", "`limit` must be an integer between 1 and 100"),
    ("status=done", "`status` must be one of: queued, in_progress, completed, failed"),
    (f"after={UNKNOWN_IMPORT}&before={UNKNOWN_IMPORT}",
     "`after` and `before` cannot be used together"),
    ("after=&before=", "`after` and `before` cannot be used together"),
])
def test_list_refuses_bad_parameters(fake, query, message):
    assert_error(fake.api("GET", f"/contacts/imports?{query}"), 422, "validation_error", message)


def test_list_accepts_the_limit_bounds(fake):
    for limit in (1, 100):
        assert fake.api("GET", f"/contacts/imports?limit={limit}").status == 200


# --- the request record -----------------------------------------------------------------------

def test_the_record_shows_exactly_what_was_sent(fake):
    csv = b"email,first_name\r\nx@y.com,X\r\n"
    column_map = {"email": "email", "first_name": "first_name"}
    body, content_type = encode_multipart([
        file_part(csv, "list.csv"), ("column_map", json.dumps(column_map)),
        ("on_conflict", "skip"), ("segments", json.dumps([{"id": SEGMENT}])),
        ("topics", json.dumps([{"id": TOPIC, "subscription": "opt_in"}]))])
    answer = fake.api("POST", "/contacts/imports?trace=1", body,
                      {"Content-Type": content_type, "Idempotency-Key": "k-1"})
    record, = fake.requests()
    assert record["seq"] == 1 and record["method"] == "POST"
    assert record["path"] == "/contacts/imports" and record["query"] == {"trace": "1"}
    assert record["headers"]["idempotency-key"] == "k-1"
    assert record["headers"]["content-type"] == content_type
    assert record["headers"]["authorization"] == "Bearer re_test_key"
    assert [(part["name"], part["filename"], part["content_type"], part["value"])
            for part in record["parts"]] == [
        ("file", "list.csv", "text/csv", None),
        ("column_map", None, None, json.dumps(column_map)),
        ("on_conflict", None, None, "skip"),
        ("segments", None, None, json.dumps([{"id": SEGMENT}])),
        ("topics", None, None, json.dumps([{"id": TOPIC, "subscription": "opt_in"}]))]
    assert record["parts"][2]["size"] == 4
    assert record["parts"][2]["sha256"] == hashlib.sha256(b"skip").hexdigest()
    assert record["fields"] == {"column_map": column_map, "on_conflict": "skip",
                                "segments": [{"id": SEGMENT}],
                                "topics": [{"id": TOPIC, "subscription": "opt_in"}]}
    file = record["file"]
    assert (file["filename"], file["size"], file["sha256"]) == (
        "list.csv", len(csv), hashlib.sha256(csv).hexdigest())
    with open(file["path"], "rb") as spooled:
        assert spooled.read() == csv
    with open(record["raw_body_path"], "rb") as raw:
        assert raw.read() == body
    assert record["body_size"] == len(body)
    assert (record["status"], record["answer"]) == (201, answer.json())
    assert record["fault"] is None and record["error"] is None
    assert record["started"] <= record["finished"]


def test_every_api_request_is_recorded_in_order_and_control_requests_are_not(fake, create):
    fake.api("GET", "/contacts/imports?limit=2", api_key="re_wrong")
    create(("file", "undefined"))
    fake.stats()
    records = fake.requests()
    assert [(record["seq"], record["method"], record["status"]) for record in records] == [
        (1, "GET", 403), (2, "POST", 422)]
    assert records[0]["query"] == {"limit": "2"} and records[0]["parts"] == []
    assert records[0]["fields"] == {"column_map": None, "on_conflict": None, "segments": None,
                                    "topics": None}
    assert records[1]["file"] is None and records[1]["parts"][0]["value"] == "undefined"
    assert records[1]["answer"]["name"] == "validation_error"


def test_reset_forgets_everything(fake, create):
    imported(fake, create, "email\na@x.com\n")
    fake.faults([{"status": 500}])
    fake.configure(rps=5)
    record, = fake.requests()
    fake.reset()
    assert fake.requests() == [] and fake.contacts() == {}
    assert fake.api("GET", "/contacts/imports").json()["data"] == []
    assert fake.control("GET", "faults") == {"faults": []}
    assert fake.control("GET", "config")["rps"] == 0
    assert fake.stats()["total_requests"] == 1  # the GET above, after the reset
    with pytest.raises(FileNotFoundError):
        open(record["raw_body_path"], "rb")
