#!/usr/bin/env python3
"""Benchmarks of the whole pipeline against the local fake API (not part of CI).

    python3 bench/bench_pipeline.py [--binary build/resend-dropd] [--big-mb 200] [--files 500]

Prints, for a release-like (non-sanitized) build:
  * big file: seconds from drop to done and the daemon's peak RSS (VmHWM) while it streams a
    --big-mb MB CSV (the target: peak RSS under 20 MB, since the file is never held in memory);
  * many files: files per second for --files small CSVs spread over three folders, with
    max_in_flight 4 and follow_import off (the fake API answers at once).
Numbers depend on the machine; run twice and compare like with like.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fake_resend"))
from fakeapi import FakeResend  # noqa: E402

KEY = "re_test_key"


def write_config(root, url, folders, follow):
    lines = [
        "api:",
        f"  base_url: {url}",
        "  max_in_flight: 4",
        "  requests_per_second: 1000",
        "defaults:",
        "  settle_ms: 100",
        f"  follow_import: {'true' if follow else 'false'}",
        "log:",
        "  level: warning",
        "folders:",
    ]
    for name in folders:
        for sub in ("in", "done", "failed"):
            os.makedirs(os.path.join(root, name, sub))
        lines += [
            f"  - name: {name}",
            f"    inbox: {root}/{name}/in",
            f"    done: {root}/{name}/done",
            f"    failed: {root}/{name}/failed",
        ]
    path = os.path.join(root, "bench.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start(binary, config):
    env = dict(os.environ, RESEND_API_KEY=KEY)
    return subprocess.Popen([binary, "-c", config], env=env, stderr=subprocess.PIPE)


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def wait_done(root, folders, count, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(len([x for x in os.listdir(os.path.join(root, f, d)) if x.endswith(".json")])
                for f in folders for d in ("done", "failed"))
        if n >= count:
            return n
        time.sleep(0.05)
    raise SystemExit(f"timed out: {count} files not finished within {timeout} s")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace"))
        raise SystemExit(f"daemon exited {proc.returncode}")


def bench_big(binary, megabytes):
    root = tempfile.mkdtemp(prefix="rdd-bench-")
    try:
        with FakeResend(import_seconds=0.1) as api:
            config = write_config(root, api.url, ["big"], follow=False)
            part = os.path.join(root, "big", "in", "big.csv.part")
            row = b"someone.with.a.long.name@example.com,First,Last,false\n"
            block = row * (1024 * 1024 // len(row))
            with open(part, "wb") as f:
                f.write(b"email,first_name,last_name,unsubscribed\n")
                for _ in range(megabytes):
                    f.write(block)
            size = os.path.getsize(part)
            proc = start(binary, config)
            time.sleep(0.3)
            t0 = time.monotonic()
            os.rename(part, part[:-5])
            wait_done(root, ["big"], 1, 600)
            seconds = time.monotonic() - t0
            rss = peak_rss_kb(proc.pid)
            stop(proc)
            uploaded = [r for r in api.requests() if r["method"] == "POST"]
            assert uploaded and uploaded[0]["file"]["size"] == size, "upload incomplete"
        print(f"big file: {size / 1e6:.1f} MB in {seconds:.2f} s "
              f"({size / 1e6 / seconds:.0f} MB/s), daemon peak RSS {rss / 1024:.1f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_many(binary, count):
    root = tempfile.mkdtemp(prefix="rdd-bench-")
    folders = ["a", "b", "c"]
    try:
        with FakeResend(import_seconds=0.1) as api:
            config = write_config(root, api.url, folders, follow=False)
            proc = start(binary, config)
            time.sleep(0.3)
            t0 = time.monotonic()
            for i in range(count):
                d = os.path.join(root, folders[i % 3], "in")
                tmp = os.path.join(d, f"f{i}.csv.part")
                with open(tmp, "w") as f:
                    f.write(f"email\nuser{i}@example.com\n")
                os.rename(tmp, tmp[:-5])
            wait_done(root, folders, count, 600)
            seconds = time.monotonic() - t0
            rss = peak_rss_kb(proc.pid)
            stop(proc)
            stats = api.stats()
        print(f"many files: {count} files in {seconds:.2f} s ({count / seconds:.0f} files/s, "
              f"settle_ms 100 included), max concurrent uploads "
              f"{stats['max_concurrent_uploads']}, daemon peak RSS {rss / 1024:.1f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "build", "resend-dropd"))
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=500)
    args = ap.parse_args()
    bench_big(args.binary, args.big_mb)
    bench_many(args.binary, args.files)


if __name__ == "__main__":
    main()
