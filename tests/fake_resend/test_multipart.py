"""Reading bodies off the wire: the streaming multipart parser, chunked uploads, awkward file
names and data, malformed bodies, and HTTP/1.1 connection reuse."""

import hashlib
import http.client
import os
import socket

import pytest

from fakeapi import encode_multipart, file_part, read_answer, send_raw
from multipart_stream import MultipartError, MultipartParser, Part, TextPart

BOUNDARY = "----formdata-undici-070503102384"
# Data that looks like a delimiter to a careless parser: a delimiter is CRLF "--" boundary.
TRICKY_DATA = (b"email\r\nx@y.com\r\n--\r\n\r\n--" + BOUNDARY[:-1].encode() + b"\r\n"
               b"x--" + BOUNDARY.encode() + b"--\r\n-" + BOUNDARY.encode() + b"\r\n\r\n")


def parse(body, piece_size):
    """Feed `body` to a parser in pieces of `piece_size`; its parts."""
    parser = MultipartParser(BOUNDARY.encode(),
                             lambda name, filename, content_type: TextPart(
                                 name, filename, content_type, limit=None))
    for start in range(0, len(body), piece_size):
        parser.feed(body[start:start + piece_size])
    parser.finish()
    return [(part.name, part.filename, part.content_type, part.text) for part in parser.parts]


def raw_request(port, body, content_type, extra_headers=b""):
    return (b"POST /contacts/imports HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
            b"Authorization: Bearer re_test_key\r\nUser-Agent: raw-test\r\n"
            b"Content-Type: " + content_type.encode() + b"\r\n" + extra_headers +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# --- the parser on its own ----------------------------------------------------------------------

def test_the_parser_gives_the_same_parts_whatever_the_piece_size():
    csv = "email,name\r\nx@y.com,\"a\r\nb\"\r\n"
    body, _ = encode_multipart([file_part(csv, "a.csv"), ("on_conflict", "skip"), ("empty", "")],
                               BOUNDARY)
    body = b"preamble to ignore\r\n" + body + b"epilogue to ignore"
    expected = [("file", "a.csv", "text/csv", csv), ("on_conflict", None, None, "skip"),
                ("empty", None, None, "")]
    for piece_size in (1, 2, 3, 7, 40, len(body)):
        assert parse(body, piece_size) == expected, piece_size


def test_the_parser_does_not_mistake_boundary_lookalikes_for_boundaries():
    body, _ = encode_multipart([file_part(TRICKY_DATA)], BOUNDARY)
    for piece_size in (1, 5, len(body)):
        assert parse(body, piece_size)[0][3] == TRICKY_DATA.decode()


@pytest.mark.parametrize("body,message", [
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx",
     "body ended before the closing boundary"),
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n",
     "part without Content-Disposition"),
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n",
     "part without a name"),
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n",
     "part is not form-data"),
    (b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx\r\n", "malformed part header"),
    (b"--" + BOUNDARY.encode() + b"garbage\r\n", "garbage after a boundary"),
    (b"no boundary at all", "body ended before the closing boundary"),
])
def test_the_parser_rejects_malformed_bodies(body, message):
    with pytest.raises(MultipartError, match=message):
        parse(body, 3)


def test_parts_over_their_limit_keep_being_measured():
    part = Part("file", "a.csv", None, limit=4)
    part.write(b"abc")
    part.write(b"defg")
    assert (part.too_large, part.size) == (True, 7)
    assert part.sha256 == hashlib.sha256(b"abcdefg").hexdigest()


# --- bodies through the server ------------------------------------------------------------------

def test_crlf_and_boundary_lookalikes_in_file_data_arrive_intact(fake, create):
    data = b"email\r\n" + TRICKY_DATA + os.urandom(3000)
    body, content_type = encode_multipart([file_part(data)], BOUNDARY)
    answer = send_raw(fake.port, raw_request(fake.port, body, content_type))
    assert answer.status == 201, answer.body
    file = fake.requests()[0]["file"]
    assert (file["size"], file["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_file_spanning_many_reads_arrives_intact(fake, create):
    # Several 64 KiB reads, with the boundary landing at an arbitrary offset in one.
    data = b"email\n" + b"".join(b"user%d@example.com\n" % n for n in range(60000))
    answer = create(file_part(data))
    assert answer.status == 201, answer.body
    file = fake.requests()[0]["file"]
    assert (file["size"], file["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_chunked_upload_is_accepted(fake):
    data = b"email\r\n" + b"a@x.com\r\n" * 500
    body, content_type = encode_multipart([file_part(data), ("on_conflict", "skip")])
    sizes = [1, 2, 3, 5, 7, 11, 13, 1000]
    chunked, start = bytearray(), 0
    while start < len(body):
        size = sizes[len(chunked) % len(sizes)]
        piece = body[start:start + size]
        chunked += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
        start += size
    chunked += b"0\r\nX-Trailer: yes\r\n\r\n"
    request = (b"POST /contacts/imports HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer re_test_key\r\nUser-Agent: raw-test\r\n"
               b"Content-Type: " + content_type.encode() + b"\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    answer = send_raw(fake.port, request)
    assert answer.status == 201, answer.body
    record = fake.requests()[0]
    assert record["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["fields"]["on_conflict"] == "skip"
    with open(record["raw_body_path"], "rb") as raw:  # kept de-chunked
        assert raw.read() == body


@pytest.mark.parametrize("disposition,filename", [
    ('filename="we\\"ird; name=x.csv"', 'we"ird; name=x.csv'),
    ("filename=\"sp ace,comma;semi.csv\"", "sp ace,comma;semi.csv"),
    ('filename="%22quoted%22.csv"', "%22quoted%22.csv"),   # browsers' escaping: left as sent
    ("filename*=UTF-8''caf%C3%A9.csv", "café.csv"),
    ('filename="C:\\\\Users\\\\x.csv"', "C:\\Users\\x.csv"),
    ("filename=plain.csv", "plain.csv"),
])
def test_quoted_and_encoded_filenames(fake, disposition, filename):
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; {disposition}\r\n"
            f"Content-Type: text/csv\r\n\r\nemail\nx@y.com\n\r\n--{BOUNDARY}--\r\n").encode()
    answer = send_raw(fake.port, raw_request(
        fake.port, body, f"multipart/form-data; boundary={BOUNDARY}"))
    assert answer.status == 201, answer.body
    assert fake.requests()[0]["file"]["filename"] == filename


def test_a_quoted_boundary_parameter(fake):
    boundary = "a b:c"
    body, _ = encode_multipart([file_part("email\nx@y.com\n")], boundary)
    answer = send_raw(fake.port, raw_request(
        fake.port, body, f'multipart/form-data; boundary="{boundary}"'))
    assert answer.status == 201, answer.body


def test_a_malformed_multipart_body_is_refused_and_the_connection_stays_usable(fake):
    broken = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx".encode()
    body, _ = encode_multipart([file_part("email\nx@y.com\n")], BOUNDARY)
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(raw_request(fake.port, broken, content_type))
        first = read_answer(sock)
        sock.sendall(raw_request(fake.port, body, content_type))
        second = read_answer(sock)
    assert (first.status, first.json()["message"]) == (
        422, "Malformed multipart body: body ended before the closing boundary")
    assert first.headers["connection"] == "keep-alive"
    assert second.status == 201


def test_keep_alive_connections_are_reused(fake):
    body, content_type = encode_multipart([file_part("email\nx@y.com\n")])
    headers = {"Authorization": "Bearer re_test_key", "User-Agent": "t",
               "Content-Type": content_type}
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        statuses = []
        for _ in range(3):
            connection.request("POST", "/contacts/imports", body, headers)
            sock = connection.sock
            answer = connection.getresponse()
            statuses.append((answer.status, answer.getheader("connection")))
            answer.read()
            assert connection.sock is sock  # not closed, so not reopened
        connection.request("GET", "/contacts/imports?limit=1", headers=headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert statuses == [(201, "keep-alive")] * 3


def test_expect_100_continue_is_honoured(fake):
    # curl sends Expect: 100-continue before large bodies and waits for the go-ahead.
    body, content_type = encode_multipart([file_part("email\nx@y.com\n")])
    request = raw_request(fake.port, b"", content_type, b"Expect: 100-continue\r\n")
    request = request.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(request)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert read_answer(sock).status == 201


def test_a_body_cut_short_is_recorded_as_such(fake):
    body, content_type = encode_multipart([file_part("email\nx@y.com\n")])
    request = raw_request(fake.port, body, content_type)
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(request[:-20])
    record, = fake.wait_requests(1)
    assert record["status"] == 400
    assert record["error"] == f"connection closed after {len(body) - 20} of {len(body)} bytes"


@pytest.mark.parametrize("framing", [b"Content-Length: 12x\r\n",
                                     b"Transfer-Encoding: gzip\r\n",
                                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_broken_framing_is_answered_then_the_connection_closed(fake, framing):
    request = (b"POST /contacts/imports HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer re_test_key\r\nUser-Agent: t\r\n" + framing + b"\r\n")
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(request)
        answer = read_answer(sock)
        assert sock.recv(10) == b""
    assert answer.status == 400
    assert answer.json()["message"].startswith("Malformed request body: ")
    assert answer.headers["connection"] == "close" and "ratelimit-limit" in answer.headers
