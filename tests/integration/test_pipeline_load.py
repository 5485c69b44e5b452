"""Many files at once: all imported once each, within max_in_flight, folders served fairly."""

import collections
import os

from daemon_harness import pipe_env, pipe_fake, sha256_bytes  # noqa: F401

MAX_IN_FLIGHT = 3


def contacts_csv(folder, index):
    return (f"email,first_name\n{folder}-{index}-a@example.com,A{index}\n"
            f"{folder}-{index}-b@example.com,B{index}\n").encode()


def test_200_files_in_three_folders_within_limits_and_fairly(pipe_env):
    env = pipe_env
    fake = env.fake
    alpha, beta, gamma = env.folder("alpha"), env.folder("beta"), env.folder("gamma")
    # Every upload takes a while at the server, so that uploads overlap and max_in_flight is
    # what holds them back (not the request rate: 200 per second leaves it out of the way).
    fake.faults([{"delay": 0.1, "method": "POST", "path_prefix": "/contacts/imports",
                  "count": 10000}])
    daemon = env.start(env.config([alpha, beta, gamma],
                                  api={"max_in_flight": MAX_IN_FLIGHT,
                                       "requests_per_second": 200}))
    contents = {}
    for index in range(150):
        name = f"alpha-{index:03d}.csv"
        contents[name] = contacts_csv("alpha", index)
        alpha.drop(name, contents[name])
    # Folder alpha's backlog is being worked on when the others' files arrive.
    env.wait_for(lambda: fake.stats()["current_uploads"] > 0 or env.uploads(),
                 "the first upload from alpha")
    for index in range(25):
        for folder in (beta, gamma):
            name = f"{folder.name}-{index:03d}.csv"
            contents[name] = contacts_csv(folder.name, index)
            folder.drop(name, contents[name])

    env.wait_outcomes(alpha, done=150, timeout=120)
    env.wait_outcomes(beta, done=25, timeout=30)
    env.wait_outcomes(gamma, done=25, timeout=30)

    uploads = env.uploads()
    # Each file exactly once, with its own content.
    by_name = collections.Counter(u["file"]["filename"] for u in uploads)
    by_hash = collections.Counter(u["file"]["sha256"] for u in uploads)
    assert [n for n, c in by_name.items() if c > 1] == [], "files uploaded twice"
    assert [h for h, c in by_hash.items() if c > 1] == [], "contents uploaded twice"
    assert set(by_name) == set(contents)
    for upload in uploads:
        assert upload["status"] == 201, upload["answer"]
        assert upload["file"]["sha256"] == sha256_bytes(contents[upload["file"]["filename"]])

    # Never more than max_in_flight uploads at the server at once; and the limit was reached,
    # so the bound above was really tested.
    stats = fake.stats()
    assert stats["max_concurrent_uploads"] <= MAX_IN_FLIGHT, stats
    assert stats["max_concurrent_uploads"] == MAX_IN_FLIGHT, stats

    # Fairness: beta and gamma did not wait for alpha's 150 files. Their files arrived while
    # alpha's backlog was queued; taking folders in turn, each appears early and finishes
    # long before alpha does.
    order = [u["file"]["filename"].split("-")[0] for u in uploads]
    first = {name: order.index(name) for name in ("alpha", "beta", "gamma")}
    last = {name: len(order) - 1 - order[::-1].index(name) for name in ("alpha", "beta", "gamma")}
    assert first["beta"] < 40 and first["gamma"] < 40, (first, order[:60])
    assert last["beta"] < 130 and last["gamma"] < 130, (last, order)
    assert last["alpha"] == len(order) - 1, (last, order[-30:])
    # Between beta's first and last upload, alpha never takes many turns in a row.
    window = order[min(first["beta"], first["gamma"]):max(last["beta"], last["gamma"]) + 1]
    longest = run = 0
    for name in window:
        run = run + 1 if name == "alpha" else 0
        longest = max(longest, run)
    print("upload order:", " ".join(name[0] for name in order))
    assert longest <= 3, ("alpha took many turns in a row while others waited", window)

    # Every report: done, first attempt, the import's counts.
    for folder, count in ((alpha, 150), (beta, 25), (gamma, 25)):
        reports = folder.reports("done")
        assert len(reports) == count
        for report in reports.values():
            assert report["outcome"] == "done" and report["attempts"] == 1, report
            assert report["import"]["status"] == "completed", report
            assert report["import"]["counts"]["total"] == 2, report
        assert folder.processing_files() == []
        assert [e for e in folder.inbox_entries() if e != ".resend-dropd"] == []
    daemon.stop()


def test_more_files_than_descriptors_all_succeed(pipe_env):
    """Under a low descriptor limit (a service's RLIMIT_NOFILE), hundreds of files waiting in
    processing after a crash and in the inbox are all imported: the daemon takes in only as
    many as it can hold open and leaves the rest waiting, instead of failing them with EMFILE."""
    env = pipe_env
    box = env.folder("box")
    os.makedirs(box.processing, mode=0o700)
    contents = {}
    for index in range(150):
        name = f"left-{index:03d}.csv"
        contents[name] = contacts_csv("left", index)
        with open(os.path.join(box.processing, name), "wb") as file:
            file.write(contents[name])
    for index in range(250):
        name = f"new-{index:03d}.csv"
        contents[name] = contacts_csv("new", index)
        box.drop(name, contents[name])
    config = env.config([box], api={"max_in_flight": 4, "requests_per_second": 500},
                        defaults={"follow_import": False})
    # The daemon alone runs with 96 descriptors at most (soft and hard: it cannot raise it).
    wrapper = os.path.join(env.root, "limited-resend-dropd")
    with open(wrapper, "w") as file:
        file.write(f'#!/bin/sh\nulimit -n 96 || exit 99\nexec "{env.binary}" "$@"\n')
    os.chmod(wrapper, 0o755)
    env.binary = wrapper
    daemon = env.start(config)
    env.wait_outcomes(box, done=400, timeout=120)
    names = collections.Counter(u["file"]["filename"] for u in env.uploads())
    assert set(names) == set(contents) and max(names.values()) == 1
    assert box.processing_files() == []
    assert not daemon.log_lines("Too many open files"), daemon.log()
    daemon.stop()
