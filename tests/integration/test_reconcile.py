"""Issue 18, reconciliation: after a kill -9, a file whose upload may have reached Resend (its
record counts an attempt, but holds no import) is not sent again blindly. The imports Resend
lists as made since that attempt began (less clock skew), minus those the ledger knows, are its
candidates: the single finished one with the file's row count is adopted; with none, the file
is uploaded; with several, it is uploaded and its report says so.

The fake makes an import once it has read a request whole, even if it holds the answer (a
`delay` fault) and the client is gone by then: a daemon killed while the fake holds its upload
never learns the import id, as with a crash between sending and recording the answer."""

import time

from daemon_harness import create_import_on_fake, pipe_env, pipe_fake  # noqa: F401

TIMEOUT = 90
HOLD = 4
ONE_SLOT = {"max_in_flight": 1, "requests_per_second": 5}


def csv(tag, rows):
    return ("email,first_name\n" + "".join(f"{tag}{i}@example.com,N{i}\n"
                                           for i in range(rows))).encode()


def kill_while_held(env, box, name, data, config):
    """Starts the daemon, drops NAME, kills the daemon while the fake holds its upload, and
    waits until the fake has made the import (the end of its hold). The import's id."""
    env.fake.faults([{"delay": HOLD, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    daemon = env.start(config)
    box.drop(name, data)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, "the upload held")
    before = len(env.uploads())
    daemon.kill()
    env.wait_for(lambda: len(env.uploads()) == before + 1, "the held upload's import",
                 timeout=HOLD + 10)
    upload = env.uploads()[-1]
    assert upload["status"] == 201, upload
    return upload["answer"]["id"], upload["started"]


def test_an_upload_that_reached_resend_is_adopted(pipe_env):
    """Killed between sending and the answer: after the restart the import Resend made is found
    in its list and adopted; nothing is uploaded again, and the report says so."""
    env = pipe_env
    box = env.folder("box")
    config = env.config([box], api=ONE_SLOT)
    import_id, _ = kill_while_held(env, box, "list.csv", csv("a", 3), config)

    daemon = env.start(config)
    env.wait_outcomes(box, done=1, timeout=TIMEOUT)
    daemon.stop()
    env.daemons[-1].assert_sanitizer_clean()

    assert len(env.uploads()) == 1, "uploaded again although its import existed"
    report = box.reports("done")["list.csv.json"] if "list.csv.json" in box.reports("done") \
        else next(iter(box.reports("done").values()))
    assert report["import_id"] == import_id, report
    assert report["reconciled"] == {"outcome": "adopted", "candidates": 1}, report
    assert report["import"]["status"] == "completed", report
    assert daemon.log_lines(r"is adopted, nothing is sent again")
    lists = [r for r in env.fake.requests() if r["method"] == "GET" and
             r["path"] == "/contacts/imports"]
    assert lists, "the imports were not listed"


def test_a_file_never_sent_is_uploaded_once(pipe_env):
    """Two files, one upload slot: the first is held by the fake when the daemon is killed, the
    second waited in the queue (its record counted the upload it never made). After the
    restart the first is adopted; the second finds no import of its own and is uploaded: each
    file imported exactly once. (Of different row counts: were they alike, the one import
    could be either's, and both would be uploaded again, as the next test shows.)"""
    env = pipe_env
    box = env.folder("box")
    config = env.config([box], api=ONE_SLOT)
    env.fake.faults([{"delay": HOLD, "method": "POST", "path_prefix": "/contacts/imports",
                      "count": 1}])
    daemon = env.start(config)
    box.drop("first.csv", csv("f", 2))
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, "the first upload held")
    box.drop("second.csv", csv("s", 3))
    env.wait_for(lambda: len(box.processing_files()) >= 2, "the second file claimed")
    time.sleep(0.5)  # checked, and waiting for the slot
    daemon.kill()
    env.wait_for(lambda: len(env.uploads()) == 1, "the held upload's import", timeout=HOLD + 10)

    daemon = env.start(config)
    env.wait_outcomes(box, done=2, timeout=TIMEOUT)
    daemon.stop()
    env.daemons[-1].assert_sanitizer_clean()

    uploads = env.uploads()
    assert len(uploads) == 2, [u["file"] for u in uploads]
    reports = {r["file"]: r for r in box.reports("done").values()}
    assert reports["first.csv"]["reconciled"]["outcome"] == "adopted", reports["first.csv"]
    assert reports["first.csv"]["import_id"] == uploads[0]["answer"]["id"]
    assert reports["second.csv"]["reconciled"]["outcome"] == "none", reports["second.csv"]
    assert reports["second.csv"]["import_id"] == uploads[1]["answer"]["id"]
    contacts = env.fake.contacts()
    assert all(f"{t}{i}@example.com" in contacts for t in "fs" for i in range(2)), contacts
    assert "s2@example.com" in contacts


def test_two_candidates_upload_again_and_say_so(pipe_env):
    """Another import of the same row count was made in the same moments (by another app of
    the team, say): which one was this file's cannot be told, so it is uploaded again, and the
    report says how many could have been its."""
    env = pipe_env
    box = env.folder("box")
    config = env.config([box], api=ONE_SLOT)
    import_id, _ = kill_while_held(env, box, "list.csv", csv("a", 3), config)
    other = create_import_on_fake(env.fake, csv("other", 3).decode())
    assert other != import_id

    daemon = env.start(config)
    env.wait_outcomes(box, done=1, timeout=TIMEOUT)
    daemon.stop()

    uploads = env.uploads()
    assert len(uploads) == 2, "not uploaded again with two candidates"
    report = next(iter(box.reports("done").values()))
    assert report["reconciled"] == {"outcome": "several", "candidates": 2}, report
    assert report["import_id"] == uploads[1]["answer"]["id"], report
    assert daemon.log_lines(r"2 imports made since its upload before the restart could be")


def test_imports_the_ledger_knows_are_not_candidates(pipe_env):
    """An import of the same row count made by this daemon for another file (in the ledger)
    is no candidate: the killed file adopts its own import."""
    env = pipe_env
    box = env.folder("box")
    config = env.config([box], api=ONE_SLOT)
    daemon = env.start(config)
    box.drop("earlier.csv", csv("e", 3))
    env.wait_outcomes(box, done=1, timeout=TIMEOUT)
    daemon.stop()
    earlier = env.uploads()[0]["answer"]["id"]

    import_id, _ = kill_while_held(env, box, "list.csv", csv("a", 3), config)
    daemon = env.start(config)
    env.wait_outcomes(box, done=2, timeout=TIMEOUT)
    daemon.stop()

    assert len(env.uploads()) == 2
    reports = {r["file"]: r for r in box.reports("done").values()}
    assert reports["list.csv"]["import_id"] == import_id != earlier, reports["list.csv"]
    assert reports["list.csv"]["reconciled"] == {"outcome": "adopted", "candidates": 1}
