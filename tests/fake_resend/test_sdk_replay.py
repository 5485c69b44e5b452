"""Replay the raw requests the official Node SDK sends (sdk-capture.txt) and check that the fake
answers them as Resend does. Only the Host and Content-Length headers are rewritten; boundaries,
header case and the LF-terminated file lines inside CRLF framing are sent as captured."""

import hashlib
import os
import re
import socket

import pytest

from fakeapi import FakeResend, read_answer, send_raw

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURE = "sdk-capture.txt"
SDK_KEY = "re_test_123"
CAPTURED_IMPORT_ID = "479e3145-dd38-476b-932c-529ceb705947"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FILE_PART_HEADERS = b'Content-Disposition: form-data; name="file"; filename="blob"\r\n' \
                    b"Content-Type: text/csv\r\n"


def reference_capture():
    """The shared reference copy, if this checkout sits beside it."""
    candidates = []
    if os.environ.get("RDD_SHARED_DIR"):
        shared = os.environ["RDD_SHARED_DIR"]
        candidates += [os.path.join(shared, "reference", CAPTURE), os.path.join(shared, CAPTURE)]
    repo = os.path.dirname(os.path.dirname(HERE))
    candidates.append(os.path.join(repo, "..", "shared", "reference", CAPTURE))
    return next((path for path in candidates if os.path.isfile(path)), None)


def read_capture():
    # The copy kept here makes the test work from a fresh clone.
    with open(reference_capture() or os.path.join(HERE, CAPTURE), "rb") as file:
        return file.read()


def captured_requests(capture):
    """{label: raw request} for each `# [N]` comment followed by a REQUEST ... END block."""
    requests, label = {}, None
    for match in re.finditer(rb"^# \[(\d+)\]|^===== REQUEST \d+ =====\n(.*?)\n===== END =====$",
                             capture, re.M | re.S):
        if match.group(1) is not None:
            label = int(match.group(1))
        else:
            requests[label] = match.group(2)
    return requests


def file_part_variant(capture, label):
    """The file part headers of the variants described, not captured whole, as [2] and [3]."""
    match = re.search(rb"^# \[%d\][^\n]*\n(Content-Disposition:[^\n]*\n)(Content-Type:[^\n]*\n)"
                      % label, capture, re.M)
    return match.group(1) + match.group(2)


def retarget(raw, port):
    """The request with Host pointing at the fake and a recomputed Content-Length, if any."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    lines = []
    for line in head.split(b"\r\n"):
        name = line.split(b":", 1)[0].lower()
        if name == b"host":
            line = b"host: 127.0.0.1:%d" % port
        elif name == b"content-length":
            line = b"content-length: %d" % len(body)
        lines.append(line)
    return b"\r\n".join(lines) + separator + body


def body_of(raw):
    return raw.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def server():
    with FakeResend(api_keys=(SDK_KEY,), import_seconds=0) as fake:
        yield fake


@pytest.fixture(scope="module")
def capture():
    return read_capture()


@pytest.fixture(scope="module")
def requests(capture):
    return captured_requests(capture)


def replay(fake, raw):
    return send_raw(fake.port, retarget(raw, fake.port))


def test_the_capture_holds_the_expected_requests(requests):
    assert sorted(requests) == [1, 4, 5, 6, 7, 8]
    for raw in requests.values():
        length = re.search(rb"content-length: (\d+)", raw)
        assert length is None or int(length.group(1)) == len(body_of(raw))


def test_the_kept_copy_is_identical_to_the_reference():
    reference = reference_capture()
    if reference is None:
        pytest.skip("no shared reference directory beside this checkout")
    with open(reference, "rb") as shared, open(os.path.join(HERE, CAPTURE), "rb") as kept:
        assert kept.read() == shared.read()


def test_the_full_create_is_accepted_and_recorded_exactly(fake, requests):
    answer = replay(fake, requests[1])
    assert answer.status == 201, answer.body
    assert answer.json()["object"] == "contact_import"
    assert UUID.fullmatch(answer.json()["id"])
    record, = fake.requests()
    csv = (b"email,first,last,unsub,plan,age,vip\n"
           b"alice@example.com,Alice,Smith,false,pro,31,true\n"
           b"bob@example.com,Bob,Jones,true,free,45,false\n")
    assert record["file"]["filename"] == "blob"
    assert (record["file"]["size"], record["file"]["sha256"]) == (
        len(csv), hashlib.sha256(csv).hexdigest())
    assert [(part["name"], part["content_type"]) for part in record["parts"]] == [
        ("file", "text/csv"), ("column_map", None), ("on_conflict", None), ("segments", None),
        ("topics", None)]
    assert record["fields"] == {
        "column_map": {"email": "email", "first_name": "first", "last_name": "last",
                       "unsubscribed": "unsub",
                       "properties": {"plan": {"column": "plan", "type": "string"},
                                      "age": {"column": "age", "type": "number"},
                                      "vip": {"column": "vip", "type": "boolean"}}},
        "on_conflict": "skip",
        "segments": [{"id": "78261eea-8f8b-4381-83c6-79fa7120f1cf"}],
        "topics": [{"id": "b6d24b8e-af0b-4c3c-be0c-359bbd97381e", "subscription": "opt_in"}]}
    assert record["headers"]["idempotency-key"] == "import-2024-01-01-abc"
    assert record["headers"]["user-agent"] == "resend-node:6.38.0"
    with open(record["raw_body_path"], "rb") as raw:
        assert raw.read() == body_of(requests[1])


@pytest.mark.parametrize("label,filename,content_type", [
    (2, "contacts.csv", "text/csv"), (3, "blob", "application/octet-stream")])
def test_the_file_part_variants_are_accepted(fake, requests, capture, label, filename,
                                             content_type):
    raw = requests[1].replace(FILE_PART_HEADERS, file_part_variant(capture, label))
    assert raw != requests[1]
    answer = replay(fake, raw)
    assert answer.status == 201, answer.body
    file_part = fake.requests()[0]["parts"][0]
    assert (file_part["filename"], file_part["content_type"]) == (filename, content_type)


def test_the_minimal_create_is_accepted(fake, requests):
    answer = replay(fake, requests[4])
    assert answer.status == 201, answer.body
    record, = fake.requests()
    assert record["fields"] == {"column_map": None, "on_conflict": None, "segments": None,
                                "topics": None}
    assert record["file"]["filename"] == "a.csv"
    assert record["file"]["size"] == len("email\nx@y.com\n")


def test_a_create_with_a_column_map_is_accepted(fake, requests):
    answer = replay(fake, requests[5])
    assert answer.status == 201, answer.body
    assert fake.requests()[0]["fields"]["column_map"] == {"email": "e"}


def test_retrieving_the_captured_id_is_not_found(fake, requests):
    answer = replay(fake, requests[6])
    assert (answer.status, answer.json()) == (404, {
        "statusCode": 404, "name": "not_found", "message": "Contact import not found"})


def test_retrieving_a_created_import_with_the_sdk_request(fake, requests):
    import_id = replay(fake, requests[1]).json()["id"]
    answer = replay(fake, requests[6].replace(CAPTURED_IMPORT_ID.encode(), import_id.encode()))
    assert answer.status == 200, answer.body
    body = answer.json()
    assert (body["object"], body["id"], body["status"]) == ("contact_import", import_id,
                                                            "completed")
    assert body["counts"] == {"total": 2, "created": 2, "updated": 0, "skipped": 0, "failed": 0}


def test_the_list_request_answers_a_list(fake, requests):
    replay(fake, requests[4])
    answer = replay(fake, requests[7])  # after=abc names no import: an empty page
    assert (answer.status, answer.json()) == (200, {"object": "list", "has_more": False,
                                                    "data": []})
    assert fake.requests()[1]["query"] == {"limit": "10", "after": "abc", "status": "completed"}


def test_a_create_without_a_file_is_a_validation_error(fake, requests):
    answer = replay(fake, requests[8])
    assert (answer.status, answer.json()) == (422, {
        "statusCode": 422, "name": "validation_error",
        "message": "`file` must be a file upload, not a text field"})
    assert fake.requests()[0]["parts"][0]["value"] == "undefined"


def test_the_whole_session_over_one_kept_alive_connection(fake, requests):
    # undici keeps its connection open between requests, as the captured headers say.
    statuses = []
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        for label in sorted(requests):
            sock.sendall(retarget(requests[label], fake.port))
            answer = read_answer(sock)
            statuses.append((label, answer.status, answer.headers["connection"]))
    assert statuses == [(1, 201, "keep-alive"), (4, 201, "keep-alive"), (5, 201, "keep-alive"),
                        (6, 404, "keep-alive"), (7, 200, "keep-alive"), (8, 422, "keep-alive")]
