"""Shared fixtures for the integration tests: where the binary is, and where the sources are."""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="session")
def rdd_binary():
    """The resend-dropd under test: $RDD_BINARY (set by CTest), else a build in the usual places."""
    path = os.environ.get("RDD_BINARY")
    if path:
        if not os.access(path, os.X_OK):
            pytest.fail(f"RDD_BINARY={path} is not an executable file")
        return path
    for candidate in (os.path.join(SOURCE_DIR, "build", "resend-dropd"),
                      "/tmp/build-tests/resend-dropd"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("RDD_BINARY is not set and no built resend-dropd was found: build with CMake "
                "and run through ctest, or set RDD_BINARY to the binary")


@pytest.fixture(scope="session")
def rdd_fixtures():
    """tests/fixtures of the source tree."""
    return os.path.join(SOURCE_DIR, "tests", "fixtures")
