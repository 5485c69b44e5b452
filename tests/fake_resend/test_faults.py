"""Faults on demand, the rate limit, upload concurrency statistics and the control endpoints."""

import socket
import threading
import time

import pytest

from fakeapi import ControlError, FakeResend, encode_multipart, file_part, read_answer, send_raw

CSV = file_part("email\nx@y.com\n")


def upload_request(port):
    body, content_type = encode_multipart([CSV])
    return (f"POST /contacts/imports HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer re_test_key\r\nUser-Agent: t\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() \
        + body


def imports_count(fake):
    return len(fake.api("GET", "/contacts/imports").json()["data"])


# --- status faults ------------------------------------------------------------------------------

@pytest.mark.parametrize("status,name,message", [
    (500, "internal_server_error", "An unexpected error occurred."),
    (503, "service_unavailable", "The service is temporarily unavailable. Please try again."),
    (401, "missing_api_key", "Missing API key in the authorization header. Include the "
                             "following header 'Authorization: Bearer YOUR_API_KEY' in the "
                             "request."),
    (403, "validation_error", "API key is invalid"),
    (409, "concurrent_idempotent_requests",
     "Same idempotency key used while original request is still in progress."),
    (422, "validation_error", "Injected validation error."),
    (418, "application_error", "HTTP 418 error."),
])
def test_a_status_fault_answers_a_resend_error_once(fake, create, status, name, message):
    fake.faults([{"status": status}])
    answer = create(CSV)
    assert (answer.status, answer.json()) == (
        status, {"statusCode": status, "name": name, "message": message})
    assert answer.headers["content-type"] == "application/json"
    assert "ratelimit-remaining" in answer.headers and "retry-after" not in answer.headers
    assert create(CSV).status == 201
    assert imports_count(fake) == 1  # the faulted request was not handled


def test_a_429_fault_carries_retry_after(fake, create):
    fake.faults([{"status": 429}, {"status": 429, "retry_after": 7}])
    first, second = create(CSV), create(CSV)
    assert (first.status, first.json()["name"], first.headers["retry-after"]) == (
        429, "rate_limit_exceeded", "1")
    assert second.headers["retry-after"] == "7"


def test_a_502_fault_answers_html_like_a_proxy(fake, create):
    fake.faults([{"status": 502}])
    answer = create(CSV)
    assert answer.status == 502
    assert answer.headers["content-type"] == "text/html"
    assert answer.body == b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    assert fake.requests()[0]["answer"] == answer.body.decode()


def test_a_fault_may_override_name_message_and_add_retry_after(fake, create):
    fake.faults([{"status": 429, "name": "daily_quota_exceeded", "message": "Quota spent.",
                  "retry_after": 3600}, {"status": 503, "retry_after": 2}])
    quota, unavailable = create(CSV), create(CSV)
    assert quota.json() == {"statusCode": 429, "name": "daily_quota_exceeded",
                            "message": "Quota spent."}
    assert quota.headers["retry-after"] == "3600"
    assert (unavailable.status, unavailable.headers["retry-after"]) == (503, "2")


def test_faults_apply_in_order_and_count(fake, create):
    fake.faults([{"status": 500, "count": 2}, {"status": 503}])
    assert [create(CSV).status for _ in range(4)] == [500, 500, 503, 201]
    assert [record["fault"] for record in fake.requests()] == [
        {"status": 500, "count": 2}, {"status": 500, "count": 2}, {"status": 503}, None]


def test_an_echo_auth_fault_quotes_the_authorization_header(fake, create):
    """For the daemon's tests: an error that carries the API key, as a careless server might."""
    fake.faults([{"status": 422, "echo_auth": True, "message": "Bad request."},
                 {"status": 500, "echo_auth": True, "method": "GET"},
                 {"status": 502, "echo_auth": True}])
    refused = create(CSV, api_key="re_Echo123secret")
    assert refused.json() == {
        "statusCode": 422, "name": "validation_error",
        "message": "Bad request. (Authorization: Bearer re_Echo123secret; key re_Echo123secret)"}
    failed = fake.api("GET", "/contacts/imports/479e3145-dd38-476b-932c-529ceb705947",
                      api_key="opaque-Key-9")
    assert failed.json()["message"] == \
        "An unexpected error occurred. (Authorization: Bearer opaque-Key-9; key opaque-Key-9)"
    page = create(CSV, api_key="re_Echo123secret")
    assert (page.status, page.headers["content-type"]) == (502, "text/html")
    assert page.body == (b"<html><body><h1>502 Bad Gateway</h1><p>Authorization: Bearer "
                         b"re_Echo123secret; key re_Echo123secret</p></body></html>")
    assert fake.requests()[0]["fault"] == {"status": 422, "echo_auth": True,
                                           "message": "Bad request."}
    assert create(CSV).status == 201


def test_faults_can_target_a_method_or_a_path(fake, create):
    fake.faults([{"status": 500, "method": "GET"},
                 {"status": 503, "path_prefix": "/contacts/imports/"}])
    assert create(CSV).status == 201      # neither fault is for a create
    assert fake.api("GET", "/contacts/imports").status == 500
    assert fake.api("GET", "/contacts/imports").status == 200
    assert fake.api("GET", "/contacts/imports/479e3145-dd38-476b-932c-529ceb705947").status \
        == 503


def test_faults_are_applied_before_authentication(fake, create):
    fake.faults([{"status": 503}])
    assert create(CSV, api_key="re_wrong").status == 503


# --- delivery faults ----------------------------------------------------------------------------

def test_a_delay_fault_answers_late_but_normally(fake, create):
    fake.faults([{"delay": 0.5}])
    start = time.monotonic()
    answer = create(CSV)
    assert time.monotonic() - start >= 0.5
    assert answer.status == 201


def test_a_delay_combines_with_a_status(fake, create):
    fake.faults([{"delay": 0.3, "status": 500}])
    start = time.monotonic()
    assert create(CSV).status == 500
    assert time.monotonic() - start >= 0.3


def test_a_stall_fault_sends_half_an_answer_then_hangs_up(fake):
    fake.faults([{"stall": 0.5}])
    start = time.monotonic()
    answer = send_raw(fake.port, upload_request(fake.port))
    elapsed = time.monotonic() - start
    assert answer.status == 201 and answer.headers["connection"] == "close"
    assert 0 < len(answer.body) < int(answer.headers["content-length"])
    assert elapsed >= 0.5
    assert imports_count(fake) == 1  # handled; only the answer was lost


def test_a_close_fault_hangs_up_without_answering_or_handling(fake):
    fake.faults([{"close": True}])
    answer = send_raw(fake.port, upload_request(fake.port))
    assert (answer.status, answer.raw) == (None, b"")
    record, = fake.requests()
    assert (record["status"], record["answer"], record["fault"]) == (None, None, {"close": True})
    assert record["file"]["size"] == len("email\nx@y.com\n")  # the request was read whole
    assert imports_count(fake) == 0


def test_a_slow_fault_trickles_the_whole_answer(fake):
    fake.faults([{"slow": 400}])
    start = time.monotonic()
    answer = send_raw(fake.port, upload_request(fake.port))
    elapsed = time.monotonic() - start
    assert answer.status == 201 and answer.json()["object"] == "contact_import"
    assert elapsed >= 0.9 * len(answer.raw) / 400


# --- the fault queue and its controls ---------------------------------------------------------

def test_the_fault_queue_can_be_listed_and_cleared(fake, create):
    pending = fake.faults([{"status": 500, "count": 3}, {"delay": 1, "path_prefix": "/x"}])
    assert pending == [{"status": 500, "count": 3, "remaining": 3},
                       {"delay": 1, "path_prefix": "/x", "remaining": 1}]
    create(CSV)
    assert fake.control("GET", "faults")["faults"][0]["remaining"] == 2
    fake.clear_faults()
    assert fake.control("GET", "faults") == {"faults": []}
    assert create(CSV).status == 201


def test_control_requests_are_never_faulted(fake):
    fake.faults([{"status": 500, "count": 5}])
    assert fake.stats()["total_requests"] == 0
    assert fake.requests() == []


@pytest.mark.parametrize("fault,message", [
    ({}, "a fault needs one of"),
    ({"status": 500, "colour": "red"}, "unknown fault field 'colour'"),
    ({"status": "500"}, "wrong type"),
    ({"status": 500, "count": True}, "wrong type"),
    ({"status": 200}, "status must be an error status"),
    ({"status": 500, "count": 0}, "must be positive"),
    ({"stall": 1, "slow": 10}, "choose one of stall, slow"),
    ({"close": True, "status": 500}, "close sends no answer"),
    ({"delay": 0.1, "echo_auth": True}, "echo_auth needs a status"),
    ({"status": 500, "echo_auth": 1}, "wrong type"),
    ([500], "a fault is a JSON object"),
])
def test_bad_faults_are_refused_whole(fake, fault, message):
    with pytest.raises(ControlError, match=message):
        fake.faults([{"status": 500}, fault])
    assert fake.control("GET", "faults") == {"faults": []}


def test_faults_from_the_command_line():
    args = ["--fault", "status=503,count=2,retry_after=4", "--fault", "close=1",
            "--fault", "delay=0.2,method=GET"]
    with FakeResend(extra_args=args) as fake:
        assert fake.control("GET", "faults")["faults"] == [
            {"status": 503, "retry_after": 4, "count": 2, "remaining": 2},
            {"close": True, "remaining": 1}, {"delay": 0.2, "method": "GET", "remaining": 1}]
        body, content_type = encode_multipart([CSV])
        assert fake.api("POST", "/contacts/imports", body,
                        {"Content-Type": content_type}).headers["retry-after"] == "4"


def test_a_bad_command_line_fault_stops_the_server():
    with pytest.raises(RuntimeError, match="expected key=value with a fault field"):
        with FakeResend(extra_args=["--fault", "explode=1"]):
            pass


# --- rate limit -------------------------------------------------------------------------------

def test_the_rate_limit_answers_429_when_exceeded(fake, create):
    fake.configure(rps=2)
    first, second, third = (fake.api("GET", "/contacts/imports") for _ in range(3))
    assert [(answer.headers["ratelimit-limit"], answer.headers["ratelimit-remaining"])
            for answer in (first, second, third)] == [("2", "1"), ("2", "0"), ("2", "0")]
    assert first.headers["ratelimit-reset"] == "1"
    assert third.status == 429 and third.headers["retry-after"] == "1"
    assert third.json() == {
        "statusCode": 429, "name": "rate_limit_exceeded",
        "message": "Too many requests. You can only make 2 requests per second. See rate limit "
                   "response headers for more information. Or contact support to increase "
                   "rate limit."}
    assert create(CSV).status == 429
    time.sleep(1.05)
    assert create(CSV).status == 201


def test_refused_credentials_do_not_use_the_rate_limit(fake):
    fake.configure(rps=1)
    assert fake.api("GET", "/contacts/imports", api_key=None).status == 401
    answer = fake.api("GET", "/contacts/imports")
    assert (answer.status, answer.headers["ratelimit-remaining"]) == (200, "0")


def test_without_a_rate_limit_nothing_is_refused(fake):
    answers = [fake.api("GET", "/contacts/imports") for _ in range(30)]
    assert {answer.status for answer in answers} == {200}
    assert answers[0].headers["ratelimit-limit"] == "1000"


# --- concurrency statistics ---------------------------------------------------------------------

def test_concurrent_uploads_are_served_concurrently_and_counted(fake):
    request = upload_request(fake.port)
    sockets = [socket.create_connection(("127.0.0.1", fake.port), timeout=10)
               for _ in range(3)]
    try:
        for sock in sockets:  # every upload starts, none finishes
            sock.sendall(request[:-5])
        deadline = time.monotonic() + 5
        while fake.stats()["current_uploads"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.stats() == {"max_concurrent_uploads": 3, "current_uploads": 3,
                                "total_requests": 3}
        for sock in sockets:
            sock.sendall(request[-5:])
            assert read_answer(sock).status == 201
    finally:
        for sock in sockets:
            sock.close()
    fake.api("GET", "/contacts/imports")  # not an upload
    deadline = time.monotonic() + 5
    while fake.stats()["current_uploads"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats() == {"max_concurrent_uploads": 3, "current_uploads": 0,
                            "total_requests": 4}


def test_uploads_from_threads_overlap(fake):
    fake.faults([{"delay": 0.5, "count": 4}])
    threads = [threading.Thread(target=send_raw, args=(fake.port, upload_request(fake.port)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert fake.stats()["max_concurrent_uploads"] == 4


# --- settings -----------------------------------------------------------------------------------

def test_settings_can_be_read_and_changed(fake):
    assert fake.control("GET", "config") == {"rps": 0, "import_seconds": 0,
                                             "max_bytes": 200 * 1024 * 1024,
                                             "fail_imports": False, "email_seconds": 0.0,
                                             "idempotency_seconds": 86400}
    assert fake.configure(rps=3, import_seconds=0.5, max_bytes=100, fail_imports=True,
                          email_seconds=0.25, idempotency_seconds=2) == {
        "rps": 3, "import_seconds": 0.5, "max_bytes": 100, "fail_imports": True,
        "email_seconds": 0.25, "idempotency_seconds": 2}


@pytest.mark.parametrize("settings,message", [
    ({"rps": -1}, "rps must be an integer >= 0"),
    ({"rps": 1.5}, "rps must be an integer >= 0"),
    ({"max_bytes": 0}, "max_bytes must be an integer > 0"),
    ({"import_seconds": True}, "import_seconds must be a number >= 0"),
    ({"fail_imports": 1}, "fail_imports must be a boolean"),
    ({"email_seconds": -1}, "email_seconds must be a number >= 0"),
    ({"idempotency_seconds": "1"}, "idempotency_seconds must be a number >= 0"),
    ({"speed": 1}, "unknown setting 'speed'"),
])
def test_bad_settings_are_refused(fake, settings, message):
    with pytest.raises(ControlError, match=message):
        fake.configure(**settings)
    assert fake.control("GET", "config")["rps"] == 0


def test_unknown_control_endpoints_and_bad_json(fake):
    with pytest.raises(ControlError, match="404"):
        fake.control("GET", "nothing")
    answer = send_raw(fake.port, b"POST /_fake/faults HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 3\r\n\r\n{x}")
    assert answer.status == 400 and "error" in answer.json()
