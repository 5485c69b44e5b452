"""The webhook receiver itself (webhook_receiver.py), checked against the Standard Webhooks
specification and not against the daemon, so that a daemon test that trusts the receiver's
`verified` trusts code proven here on its own.

The test vector is the one the specification's reference libraries test their signing with
(standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py test_sign_function
and libraries/javascript/src/webhook.test.ts "sign function works"): secret
whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp 1614265330,
payload {"test": 2432232314}, signature v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=; the
other literal signatures are those libraries' own invalid and multi-signature cases. Then the
spec's rules (headers, the 5-minute tolerance, several signatures, whsec_ and raw secrets) and
the receiver's modes: a status, a delay, a dropped connection, the first N failing, down and up.
"""

import ast
import base64
import http.client
import json
import socket
import sys
import threading
import time

import pytest

import webhook_receiver
from webhook_receiver import WebhookReceiver, decode_secret, sign, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
WRONG_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
OTHER_SIGNATURE = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
VECTOR_HEADERS = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP),
                  "webhook-signature": SIGNATURE}


def at_vector_time():
    return TIMESTAMP


def post(receiver, body=PAYLOAD, headers=None, method="POST", path=None, timeout=10):
    """(status, headers, body) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=timeout)
    try:
        connection.request(method, path or receiver.path, body=body,
                           headers={"Content-Type": "application/json", **(headers or {})})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def signed(secret, body=PAYLOAD, msg_id="msg_1", timestamp=None):
    """Headers of a delivery signed now (or at `timestamp`) with `secret`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}


# --- the published test vector ---------------------------------------------------------------

@pytest.mark.parametrize("secret", [SECRET, SECRET[len("whsec_"):],
                                    base64.b64decode(SECRET[len("whsec_"):])],
                         ids=["whsec", "bare-base64", "raw-bytes"])
def test_signing_the_vector_gives_the_published_signature(secret):
    assert sign(secret, MSG_ID, TIMESTAMP, PAYLOAD) == SIGNATURE
    assert sign(secret, MSG_ID, str(TIMESTAMP), PAYLOAD.decode()) == SIGNATURE


def test_the_vector_delivered_over_http_is_verified():
    with WebhookReceiver(SECRET, clock=at_vector_time) as receiver:
        status, _headers, _body = post(receiver, headers=VECTOR_HEADERS)
        delivery, = receiver.deliveries()
    assert status == 200
    assert delivery.verified and delivery.signature_valid and delivery.timestamp_valid
    assert delivery.reason is None and delivery.accepted
    assert (delivery.id, delivery.timestamp) == (MSG_ID, TIMESTAMP)
    assert delivery.body == PAYLOAD and delivery.json == {"test": 2432232314}
    assert delivery.headers["webhook-signature"] == SIGNATURE
    assert (delivery.seq, delivery.method, delivery.path) == (1, "POST", "/webhook")
    assert abs(delivery.received - time.time()) < 10


@pytest.mark.parametrize("change,reason", [
    ({"webhook-signature": WRONG_SIGNATURE}, "no matching v1 signature"),
    ({"webhook-signature": "v1,dawfeoifkpqwoekfpqoekf"}, "no matching v1 signature"),
    ({"webhook-signature": SIGNATURE[:8]}, "no matching v1 signature"),
    ({"webhook-signature": "v1,"}, "no matching v1 signature"),
    ({"webhook-signature": "v2," + SIGNATURE[3:]}, "no matching v1 signature"),
    ({"webhook-id": MSG_ID + "x"}, "no matching v1 signature"),
    ({"webhook-id": None}, "missing webhook-id"),
    ({"webhook-timestamp": None}, "missing webhook-timestamp"),
    ({"webhook-signature": None}, "missing webhook-signature"),
    ({"webhook-timestamp": "hello"}, "webhook-timestamp 'hello' is not an integer of seconds"),
    ({"webhook-timestamp": f"{TIMESTAMP}.0"}, f"webhook-timestamp '{TIMESTAMP}.0' is not an "
     "integer of seconds"),
], ids=["wrong", "junk", "partial", "empty", "other-version", "other-id", "no-id", "no-timestamp",
        "no-signature", "word-timestamp", "float-timestamp"])
def test_the_vector_altered_is_refused(change, reason):
    headers = {name: value for name, value in {**VECTOR_HEADERS, **change}.items()
               if value is not None}
    with WebhookReceiver(SECRET, clock=at_vector_time) as receiver:
        status, _headers, body = post(receiver, headers=headers)
        delivery, = receiver.deliveries()
    assert status == 401 and body.decode().strip() == reason
    assert not delivery.verified and not delivery.accepted and delivery.reason == reason


def test_the_vector_with_one_byte_of_the_body_changed_is_refused():
    with WebhookReceiver(SECRET, clock=at_vector_time) as receiver:
        assert post(receiver, PAYLOAD.replace(b" ", b""), VECTOR_HEADERS)[0] == 401
        delivery, = receiver.deliveries()
    assert delivery.json == {"test": 2432232314}  # the same JSON, not the same bytes
    assert not delivery.signature_valid


def test_one_matching_signature_among_several_is_enough():
    header = " ".join([f"v1,{OTHER_SIGNATURE}", f"v2,{OTHER_SIGNATURE}", SIGNATURE,
                       f"v1,{OTHER_SIGNATURE}"])
    with WebhookReceiver(SECRET, clock=at_vector_time) as receiver:
        status, _headers, _body = post(receiver,
                                       headers={**VECTOR_HEADERS, "webhook-signature": header})
        assert status == 200 and receiver.deliveries()[0].verified


def test_the_vector_with_another_secret_is_refused():
    other = "whsec_" + base64.b64encode(b"another key of twenty-four bytes").decode()
    with WebhookReceiver(other, clock=at_vector_time) as receiver:
        assert post(receiver, headers=VECTOR_HEADERS)[0] == 401


def test_verification_is_a_plain_function_too():
    key = decode_secret(SECRET)
    assert verify([key], VECTOR_HEADERS, PAYLOAD, now=TIMESTAMP).verified
    check = verify([key], VECTOR_HEADERS, PAYLOAD, now=TIMESTAMP + 301)
    assert (check.verified, check.signature_valid, check.timestamp_valid) == (False, True, False)


# --- the spec's rules -------------------------------------------------------------------------

@pytest.mark.parametrize("offset,reason", [
    (-310, "webhook-timestamp too old"), (310, "webhook-timestamp too new"),
    (-290, None), (290, None), (0, None),
])
def test_a_timestamp_more_than_five_minutes_away_is_refused(offset, reason):
    with WebhookReceiver(SECRET) as receiver:
        headers = signed(SECRET, timestamp=int(time.time()) + offset)
        status, _headers, _body = post(receiver, headers=headers)
        delivery, = receiver.deliveries()
    assert delivery.signature_valid  # the signature is right: only the time is wrong
    assert delivery.timestamp_valid == (reason is None) == delivery.verified
    assert status == (200 if reason is None else 401)
    assert (delivery.reason or "").startswith(reason or "")


def test_the_tolerance_can_be_changed():
    with WebhookReceiver(SECRET, tolerance=5) as receiver:
        assert post(receiver, headers=signed(SECRET, timestamp=int(time.time()) - 60))[0] == 401
        assert "too old" in receiver.deliveries()[0].reason


def test_a_raw_key_and_a_rotation_of_secrets():
    raw = b"a raw key of at least twenty-four bytes"
    old = "whsec_" + base64.b64encode(b"the key before the rotation!").decode()
    with WebhookReceiver([raw, old]) as receiver:
        assert receiver.secret == "whsec_" + base64.b64encode(raw).decode()
        assert post(receiver, headers=signed(raw, msg_id="a"))[0] == 200
        assert post(receiver, headers=signed(old, msg_id="b"))[0] == 200
        both = signed(old, msg_id="c")
        both["webhook-signature"] += " " + sign(raw, "c", both["webhook-timestamp"], PAYLOAD)
        assert post(receiver, headers=both)[0] == 200
        stranger = "whsec_" + base64.b64encode(b"nobody's key, also long enough").decode()
        assert post(receiver, headers=signed(stranger, msg_id="d"))[0] == 401
        assert [d.verified for d in receiver.deliveries()] == [True, True, True, False]


def test_secrets_as_the_spec_serialises_them():
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert decode_secret(SECRET) == decode_secret(SECRET[6:]) == decode_secret(key) == key
    unpadded = base64.b64encode(b"sixteen bytes!!!").decode().rstrip("=")
    assert decode_secret("whsec_" + unpadded) == b"sixteen bytes!!!"
    for bad in ("whsec_", "", "whsec_not base64!", b""):
        with pytest.raises(ValueError):
            decode_secret(bad)
    generated = WebhookReceiver()
    assert generated.secret.startswith("whsec_") and len(decode_secret(generated.secret)) == 32


def test_the_receiver_needs_nothing_but_the_standard_library():
    with open(webhook_receiver.__file__) as file:
        tree = ast.parse(file.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


# --- recording -----------------------------------------------------------------------------------

def test_deliveries_are_recorded_in_order_with_their_headers():
    with WebhookReceiver(SECRET) as receiver:
        for n in range(3):
            body = json.dumps({"type": "file.done", "n": n}).encode()
            post(receiver, body, signed(SECRET, body, msg_id=f"msg_{n}"), path=f"/hook?n={n}")
        deliveries = receiver.wait_for(3, timeout=5)
    assert [(d.seq, d.id, d.json["n"], d.path) for d in deliveries] == [
        (1, "msg_0", 0, "/hook?n=0"), (2, "msg_1", 1, "/hook?n=1"), (3, "msg_2", 2, "/hook?n=2")]
    assert all(d.verified for d in deliveries)
    assert deliveries[0].received <= deliveries[1].received <= deliveries[2].received
    assert deliveries[0].headers["content-type"] == "application/json"


def test_wait_for_waits_and_gives_up():
    with WebhookReceiver(SECRET) as receiver:
        later = threading.Timer(0.3, post, (receiver,), {"headers": signed(SECRET)})
        later.start()
        started = time.monotonic()
        delivery, = receiver.wait_for(1, timeout=10)
        assert 0.2 < time.monotonic() - started < 5 and delivery.verified
        later.join()
        with pytest.raises(TimeoutError, match="2 accepted deliveries"):
            receiver.wait_for(2, timeout=0.2, accepted=True)
        receiver.forget()
        assert receiver.deliveries() == []


def test_other_methods_and_bodies_that_are_not_json():
    with WebhookReceiver(SECRET) as receiver:
        assert post(receiver, b"", method="GET")[0] == 405
        assert post(receiver, b"not json", signed(SECRET, b"not json"))[0] == 200
        get, text = receiver.deliveries()
    assert get.method == "GET" and get.reason == "method GET is not POST" and not get.accepted
    assert text.verified and text.json is None and text.body == b"not json"


def test_a_chunked_body_is_read_whole():
    body = json.dumps({"type": "file.failed", "pad": "x" * 5000}).encode()
    headers = signed(SECRET, body)
    with WebhookReceiver(SECRET) as receiver:
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        connection.request("POST", receiver.path, body=iter([body[:100], body[100:]]),
                           headers=headers, encode_chunked=True)
        assert connection.getresponse().status == 200
        connection.close()
        assert receiver.deliveries()[0].body == body


# --- modes ---------------------------------------------------------------------------------------

def test_the_first_deliveries_fail_then_it_answers_again():
    with WebhookReceiver(SECRET) as receiver:
        receiver.fail_first(2)
        statuses = [post(receiver, headers=signed(SECRET))[0] for _ in range(3)]
        assert statuses == [500, 500, 200]
        assert [d.status for d in receiver.deliveries()] == [500, 500, 200]
        assert [d.seq for d in receiver.accepted()] == [3]
        assert all(d.verified for d in receiver.deliveries())  # refused, yet signed right


def test_a_status_for_some_or_all_deliveries():
    with WebhookReceiver(SECRET) as receiver:
        receiver.answer(503, count=1, retry_after=7)
        receiver.answer(410)
        status, headers, _body = post(receiver, headers=signed(SECRET))
        assert (status, headers["Retry-After"]) == (503, "7")
        assert [post(receiver, headers=signed(SECRET))[0] for _ in range(2)] == [410, 410]
        receiver.normal()
        assert post(receiver, headers=signed(SECRET))[0] == 200
        receiver.answer(204)
        assert post(receiver, headers=signed(SECRET))[0] == 204
        assert receiver.deliveries()[-1].accepted
        with pytest.raises(ValueError):
            receiver.answer(100)


def test_an_unverified_delivery_gets_the_reject_status():
    with WebhookReceiver(SECRET, reject_status=400) as receiver:
        assert post(receiver, headers={"webhook-id": "x"})[0] == 400


def test_a_delayed_answer():
    with WebhookReceiver(SECRET) as receiver:
        receiver.delay(0.5, count=1)
        started = time.monotonic()
        assert post(receiver, headers=signed(SECRET))[0] == 200
        assert time.monotonic() - started >= 0.5
        with pytest.raises(TimeoutError):  # a sender that gives up first sees no answer
            receiver.delay(3, count=1)
            post(receiver, headers=signed(SECRET), timeout=0.5)
        first, second = receiver.deliveries()
        assert (first.delay, second.delay) == (0.5, 3)


def test_a_dropped_connection():
    with WebhookReceiver(SECRET) as receiver:
        receiver.drop(count=1)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            post(receiver, headers=signed(SECRET, msg_id="dropped"))
        assert post(receiver, headers=signed(SECRET, msg_id="kept"))[0] == 200
        dropped, kept = receiver.deliveries()
    assert (dropped.id, dropped.status, dropped.accepted) == ("dropped", None, False)
    assert dropped.verified and kept.accepted


def test_down_then_up_on_the_same_port():
    with WebhookReceiver(SECRET) as receiver:
        url = receiver.url
        # A connection kept alive across the outage must not be served while it is down.
        kept = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
        kept.request("POST", receiver.path, body=PAYLOAD, headers=signed(SECRET))
        assert kept.getresponse().read() == b""
        receiver.down()
        assert not receiver.is_up
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, BrokenPipeError)):
            kept.request("POST", receiver.path, body=PAYLOAD, headers=signed(SECRET))
            kept.getresponse()
        kept.close()
        receiver.up()
        assert receiver.is_up and receiver.url == url
        assert post(receiver, headers=signed(SECRET))[0] == 200
        with receiver.outage():
            with pytest.raises(ConnectionRefusedError):
                post(receiver, headers=signed(SECRET))
        assert post(receiver, headers=signed(SECRET))[0] == 200
        assert len(receiver.deliveries()) == 3


def test_going_down_abandons_an_answer_held_back():
    with WebhookReceiver(SECRET) as receiver:
        receiver.delay(30)
        outcome = {}

        def send():
            try:
                outcome["status"] = post(receiver, headers=signed(SECRET))[0]
            except (http.client.HTTPException, OSError) as error:
                outcome["error"] = error
        sender = threading.Thread(target=send)
        sender.start()
        receiver.wait_for(1, timeout=5)
        started = time.monotonic()
        receiver.down()
        sender.join(10)
        assert time.monotonic() - started < 5 and "error" in outcome, outcome
