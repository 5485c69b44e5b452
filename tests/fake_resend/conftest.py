"""Fixtures shared by the fake server's own tests: one server per test module, reset before
each test so that tests do not see each other's requests, imports, faults or settings."""

import pytest

from fakeapi import FakeResend, encode_multipart


@pytest.fixture(scope="module")
def server():
    with FakeResend(import_seconds=0) as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


@pytest.fixture
def create(fake):
    """POST /contacts/imports with the given parts (see encode_multipart) and options."""
    def create(*parts, headers=None, **options):
        body, content_type = encode_multipart(parts)
        return fake.api("POST", "/contacts/imports", body,
                        {"Content-Type": content_type, **(headers or {})}, **options)
    return create
