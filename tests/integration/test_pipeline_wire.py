"""The upload on the wire: each folder's settings, byte for byte as the official SDK sends them
(reference/sdk-capture.txt), and the headers Resend requires."""

import json
import os
import re

from daemon_harness import (API_KEY, SOURCE_DIR, daemon_version, pipe_env, pipe_fake,  # noqa: F401
                            read_bytes, sha256_bytes)

CAPTURE = os.path.join(SOURCE_DIR, "tests", "fake_resend", "sdk-capture.txt")

# Request [1] of the capture: its settings, as a folder's configuration.
CAPTURE_FOLDER = {
    "column_map": {
        "email": "email", "first_name": "first", "last_name": "last", "unsubscribed": "unsub",
        "properties": {"plan": {"column": "plan", "type": "string"},
                       "age": {"column": "age", "type": "number"},
                       "vip": {"column": "vip", "type": "boolean"}},
    },
    "on_conflict": "skip",
    "segments": ["78261eea-8f8b-4381-83c6-79fa7120f1cf"],
    "topics": [{"id": "b6d24b8e-af0b-4c3c-be0c-359bbd97381e", "subscription": "opt_in"}],
}

# Different everything: non-ASCII and a quote in column names, two segments (a bare id and an
# {id:} object), no topics, upsert.
SIGNUPS_SEGMENTS = ["0f6a3c1e-2b4d-4e8f-9a1b-3c5d7e9f1a2b", "9b2d7e41-0c3a-4f6e-8a15-7d9c3b1e2f40"]
SIGNUPS_FOLDER = {
    "column_map": {
        "email": "E-Mail", "first_name": "Prénom",
        "properties": {"tier": {"column": 'Plan "tier"', "type": "string"},
                       "seats": {"column": "Seats", "type": "number"}},
    },
    "on_conflict": "upsert",
    "segments": [SIGNUPS_SEGMENTS[0], {"id": SIGNUPS_SEGMENTS[1]}],
}
SIGNUPS_CSV = ('E-Mail,Prénom,"Plan ""tier""",Seats\n'
               "ana@example.com,Ana,gold,3\n"
               "bo@example.com,Bö,silver,1\n").encode()

# Nothing but the defaults: no column_map, no segments or topics; on_conflict is still sent.
PLAIN_CSV = b"email,first_name\r\nzoe@example.com,Zoe\r\n"
# Valid in both the signups and the plain folder: the same bytes dropped in two folders.
SAME_CSV = ('email,E-Mail,Prénom,"Plan ""tier""",Seats\n'
            "same@example.com,same@example.com,Sam,gold,2\n").encode()

BOUNDARY_RE = re.compile(r"multipart/form-data; boundary=(\S+)")


def capture_request_1():
    """The body and the boundary of the capture's request [1]."""
    with open(CAPTURE, "rb") as file:
        capture = file.read()
    match = re.search(rb"^# \[1\][^\n]*\n===== REQUEST 1 =====\n(.*?)\n===== END =====$",
                      capture, re.M | re.S)
    head, _, body = match.group(1).partition(b"\r\n\r\n")
    boundary = re.search(rb"boundary=(\S+)", head).group(1)
    return body, boundary


def capture_csv():
    body, _ = capture_request_1()
    start = body.index(b"Content-Type: text/csv\r\n\r\n") + len(b"Content-Type: text/csv\r\n\r\n")
    return body[start:body.index(b"\r\n--", start)]


def sdk_json(value):
    """JSON.stringify: compact, non-ASCII as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sdk_column_map(column_map):
    """What the SDK sends for a column map: its keys in the SDK's order, absent ones left out."""
    out = {key: column_map[key] for key in ("email", "first_name", "last_name", "unsubscribed")
           if key in column_map}
    if "properties" in column_map:
        out["properties"] = {key: {"column": spec["column"], "type": spec["type"]}
                             for key, spec in column_map["properties"].items()}
    return out


def sdk_fields(settings):
    """[(part name, value)] in the SDK's order for a folder's settings."""
    fields = []
    if "column_map" in settings:
        fields.append(("column_map", sdk_json(sdk_column_map(settings["column_map"]))))
    fields.append(("on_conflict", settings.get("on_conflict", "upsert").encode()))
    if settings.get("segments"):
        fields.append(("segments", sdk_json([
            {"id": s["id"] if isinstance(s, dict) else s} for s in settings["segments"]])))
    if settings.get("topics"):
        fields.append(("topics", sdk_json([
            {"id": t["id"], "subscription": t["subscription"]} for t in settings["topics"]])))
    return fields


def sdk_body(boundary, filename, content, fields):
    """The multipart body undici builds for SDK create(): CRLF framing, no Content-Type on
    text parts, the file part typed text/csv."""
    dash = b"--" + boundary
    body = dash + b'\r\nContent-Disposition: form-data; name="file"; filename="' + \
        filename.encode() + b'"\r\nContent-Type: text/csv\r\n\r\n' + content + b"\r\n"
    for name, value in fields:
        body += dash + b'\r\nContent-Disposition: form-data; name="' + name.encode() + \
            b'"\r\n\r\n' + value + b"\r\n"
    return body + dash + b"--\r\n"


def parse_multipart(body, boundary):
    """[(header lines, content)] of a multipart body; asserts the framing is exact."""
    dash = b"--" + boundary
    assert body.startswith(dash + b"\r\n"), body[:100]
    assert body.endswith(b"\r\n" + dash + b"--\r\n"), body[-100:]
    inner = body[len(dash) + 2:-(len(dash) + 6)]
    parts = []
    for chunk in inner.split(b"\r\n" + dash + b"\r\n"):
        head, separator, content = chunk.partition(b"\r\n\r\n")
        assert separator, chunk[:200]
        parts.append((head.decode("utf-8").split("\r\n"), content))
    return parts


def check_upload(record, version, folder, filename, content, settings, all_keys):
    headers = record["headers"]
    raw = read_bytes(record["raw_body_path"])
    boundary_match = BOUNDARY_RE.fullmatch(headers.get("content-type", ""))
    assert boundary_match, headers
    boundary = boundary_match.group(1).encode()

    # Headers Resend requires, and the SDK's framing: a length, no chunking, no Expect.
    assert headers["user-agent"] == f"resend-dropd/{version}"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    key = headers.get("idempotency-key")
    assert key and 1 <= len(key) <= 256 and key.isprintable(), headers
    all_keys.append(key)
    assert headers.get("content-length") == str(len(raw)) == str(record["body_size"]), headers
    assert "transfer-encoding" not in headers, headers
    assert "expect" not in headers, headers

    # Part by part.
    fields = sdk_fields(settings)
    parts = parse_multipart(raw, boundary)
    assert [p[0][0] for p in parts] == \
        [f'Content-Disposition: form-data; name="file"; filename="{filename}"'] + \
        [f'Content-Disposition: form-data; name="{name}"' for name, _ in fields], \
        f"{folder}/{filename}: part order or dispositions differ: {[p[0] for p in parts]}"
    file_head, file_content = parts[0]
    assert file_head == [f'Content-Disposition: form-data; name="file"; filename="{filename}"',
                         "Content-Type: text/csv"]
    assert file_content == content
    for (head, value), (name, expected) in zip(parts[1:], fields):
        assert head == [f'Content-Disposition: form-data; name="{name}"'], \
            f"text part {name} has extra headers: {head}"
        assert value == expected, f"{folder}: {name} is {value!r}, the SDK sends {expected!r}"

    # And the whole body at once, which also catches anything between the parts.
    assert raw == sdk_body(boundary, filename, content, fields)

    # The fake's own view agrees.
    assert record["status"] == 201, record["answer"]
    assert record["file"]["sha256"] == sha256_bytes(content)
    assert record["file"]["size"] == len(content)
    assert record["file"]["filename"] == filename


def test_each_folder_uploads_exactly_its_settings_in_the_sdk_wire_format(pipe_env):
    env = pipe_env
    version = daemon_version(env.binary)
    capture = env.folder("capture", **CAPTURE_FOLDER)
    signups = env.folder("signups", **SIGNUPS_FOLDER)
    plain = env.folder("plain")
    daemon = env.start(env.config([capture, signups, plain]))

    capture_content = capture_csv()
    # Two files each, dropped together, so that settings cannot leak between folders.
    capture.drop("contacts.csv", capture_content)
    signups.drop("signups-1.csv", SIGNUPS_CSV)
    plain.drop("plain.csv", PLAIN_CSV)
    capture.drop("contacts-2.csv", capture_content.replace(b"alice@", b"alice2@"))
    signups.drop("signups-2.csv", SIGNUPS_CSV.replace(b"ana@", b"ana2@"))
    # The same bytes in two folders.
    plain.drop("same.csv", SAME_CSV)
    signups.drop("same.csv", SAME_CSV)

    env.wait_outcomes(capture, done=2)
    env.wait_outcomes(signups, done=3)
    env.wait_outcomes(plain, done=2)
    uploads = env.uploads()
    assert len(uploads) == 7, [u["file"]["filename"] for u in uploads]

    expected = {
        ("capture", "contacts.csv"): (capture_content, CAPTURE_FOLDER),
        ("capture", "contacts-2.csv"): (capture_content.replace(b"alice@", b"alice2@"),
                                        CAPTURE_FOLDER),
        ("signups", "signups-1.csv"): (SIGNUPS_CSV, SIGNUPS_FOLDER),
        ("signups", "signups-2.csv"): (SIGNUPS_CSV.replace(b"ana@", b"ana2@"), SIGNUPS_FOLDER),
        ("signups", "same.csv"): (SAME_CSV, SIGNUPS_FOLDER),
        ("plain", "plain.csv"): (PLAIN_CSV, {}),
        ("plain", "same.csv"): (SAME_CSV, {}),
    }
    # Which upload is which: by name and content, and for the two same.csv by whether a
    # column_map was sent (only the signups folder has one).
    keys = []
    seen = set()
    for record in uploads:
        matches = [(folder, name) for (folder, name), (content, settings) in expected.items()
                   if name == record["file"]["filename"]
                   and sha256_bytes(content) == record["file"]["sha256"]
                   and (record["fields"]["column_map"] is None) == ("column_map" not in settings)]
        assert len(matches) == 1, (record["file"], matches)
        folder, name = matches[0]
        assert (folder, name) not in seen, f"{folder}/{name} uploaded twice"
        seen.add((folder, name))
        content, settings = expected[(folder, name)]
        check_upload(record, version, folder, name, content, settings, keys)
    assert seen == set(expected)
    # Every (folder, content) has its own key: also the same bytes in two folders.
    assert len(set(keys)) == len(keys), keys

    # Request [1] of the capture, byte for byte: only the boundary and the file name (the
    # SDK's Blob is "blob"; a File is sent with its name, as in [2]) may differ.
    sdk_raw, sdk_boundary = capture_request_1()
    record = next(u for u in uploads if u["file"]["filename"] == "contacts.csv")
    boundary = BOUNDARY_RE.fullmatch(record["headers"]["content-type"]).group(1).encode()
    expected_raw = sdk_raw.replace(sdk_boundary, boundary).replace(
        b'filename="blob"', b'filename="contacts.csv"')
    assert read_bytes(record["raw_body_path"]) == expected_raw

    # The decoded fields as the fake saw them.
    assert record["fields"] == {"column_map": sdk_column_map(CAPTURE_FOLDER["column_map"]),
                                "on_conflict": "skip",
                                "segments": [{"id": CAPTURE_FOLDER["segments"][0]}],
                                "topics": CAPTURE_FOLDER["topics"]}
    plain_record = next(u for u in uploads if u["file"]["filename"] == "plain.csv")
    assert plain_record["fields"] == {"column_map": None, "on_conflict": "upsert",
                                      "segments": None, "topics": None}

    # Following the imports (by id, or several in a page of the list) speaks with the same
    # identity.
    polls = env.follow_ups()
    assert polls, "no GET /contacts/imports"
    for poll in polls:
        assert poll["headers"]["user-agent"] == f"resend-dropd/{version}"
        assert poll["headers"]["authorization"] == f"Bearer {API_KEY}"
        assert poll["status"] == 200, poll["answer"]

    # Reports tell the uploads apart by folder.
    for folder in (capture, signups, plain):
        for report in folder.reports("done").values():
            assert report["folder"] == folder.name
            assert report["outcome"] == "done"
    daemon.stop()


def test_a_file_name_is_sanitized_in_the_file_part(pipe_env):
    """A quote in the file name must not end the filename parameter of the header."""
    env = pipe_env
    folder = env.folder("names")
    daemon = env.start(env.config([folder]))
    name = 'sales "Q4" \\ final.csv'
    folder.drop(name, PLAIN_CSV)
    env.wait_outcomes(folder, done=1)
    [record] = env.uploads()
    raw = read_bytes(record["raw_body_path"])
    first_line = raw.split(b"\r\n")[1].decode()
    match = re.fullmatch(r'Content-Disposition: form-data; name="file"; filename="([^"\\\r\n]*)"',
                         first_line)
    assert match, first_line
    assert len(match.group(1)) == len(name) and match.group(1).startswith("sales ")
    assert record["file"]["sha256"] == sha256_bytes(PLAIN_CSV)
    # The report keeps the real name.
    [report] = folder.reports("done").values()
    assert report["file"] == name
    assert folder.files("done") == [name]
    daemon.stop()
