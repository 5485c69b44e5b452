#!/usr/bin/env python3
"""resend-dropd benchmark suite (GitHub issue 7, "the engine at any scale"). Not part of CI.

    ./scripts/bench [--quick] [--only sink,burst,curl,script,backlog,big,latency,idle,normalize,
                               limit]
                    [--timeout S] [--binary PATH] [--workdir DIR] [--results FILE | --no-results]

scripts/bench installs what is needed and builds build/bench (Release) first, then runs this.
See bench/README.md for what each scenario measures and the targets.
"""
import argparse
import datetime
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import baselines  # noqa: E402
import limit  # noqa: E402
import normalize  # noqa: E402
import sink as sinkmod  # noqa: E402
from common import (BenchTimeout, CpuMeter, Daemon, DaemonConfig, ScenarioError,  # noqa: E402
                    count_entries, count_reports, cpu_seconds, ctx_switches, fs_type, machine_busy,
                    latest_ctime, make_folders, parse_strace_summary, rmtree, small_csv,
                    strace_attach, strace_detach, tail, wait_until, write_big_csv, write_file)

SCENARIOS = ["sink", "burst", "curl", "script", "backlog", "big", "latency", "idle", "normalize",
             "limit"]
# Scenarios that bring their own API (the fake Resend) and need neither the sink nor its config.
OWN_API = ("limit",)
SETTLE_MS = 200
RESCAN_S = 30
RSS_TARGET_KIB = 20 * 1024


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def mib(kib):
    return None if kib is None else kib / 1024


class Bench:
    def __init__(self, args):
        self.args = args
        q = args.quick
        self.n_burst = 2000
        self.backlog_sizes = [500, 2000, 8000] if q else [2000, 8000, 32000]
        self.n_big = 1 if q else 5
        self.big_bytes = 100_000_000
        self.n_latency = 50 if q else 200
        # A whole number of rescan periods: each periodic timer then fires exactly idle_s /
        # rescan_s times in any window of that length.
        self.idle_s = RESCAN_S if q else 2 * RESCAN_S
        self.idle_folders = 20
        self.sink_s = 3 if q else 5
        self.timeout = args.timeout
        self.settle_ms = SETTLE_MS
        self.binary = os.path.abspath(args.binary)
        self.workdir = os.path.abspath(args.workdir)
        self.datadir = os.path.join(self.workdir, "data")
        self.logdir = os.path.join(self.workdir, "logs")
        self.results = {}
        self.sink = None
        self.cfg = None
        self._small = {}
        self.daemon_log = None
        self.background = {}  # timed section -> (busy fraction, seconds waited)
        self.interference = {}  # timed section -> CpuMeter result

    # --- helpers --------------------------------------------------------------------------

    def small(self, i):
        b = self._small.get(i)
        if b is None:
            b = small_csv(i)
            if i < 4000:
                self._small[i] = b
        return b

    def fresh(self, tag):
        """A new tree for a scenario (a repeated run gets a new one beside the last)."""
        self._trees = getattr(self, "_trees", 0) + 1
        root = os.path.join(self.datadir, f"{tag}-{self._trees}")
        os.makedirs(root)
        return root

    def done_with(self, root):
        """Nothing is deleted before the last measurement: on this machine's ext4 (discard,
        no journal) removing a scenario's 10,000 files slows the fsyncs and inode allocations
        of whatever runs in the next seconds to minutes, and the next scenario would measure
        the cleanup of the last. Everything goes at the end of the run."""

    def stage_small(self, root, n, n_folders):
        """N typical files in ROOT/staging (same filesystem as the inboxes), synced to disk so
        that the daemon's fsyncs do not also pay for writing them. Returns (path, folder)."""
        staging = os.path.join(root, "staging")
        os.makedirs(staging)
        out = []
        for i in range(n):
            p = os.path.join(staging, f"c{i:05d}.csv")
            write_file(p, self.small(i))
            out.append((p, i % n_folders))
        os.sync()
        return out

    def daemon(self, tag, cfg, once=False):
        self.daemon_log = os.path.join(self.logdir, f"{tag}-daemon.log")
        return Daemon(self.binary, cfg, self.daemon_log, once=once).start()

    def deadline(self):
        return time.monotonic() + self.timeout

    def meter(self, *pids):
        """A CpuMeter over the sink, the given live processes and the driver."""
        return CpuMeter(lambda: self.sink.pids() + [p for p in pids if p]).start()

    def metered(self, tag, meter, extra_own=0.0):
        m = meter.stop(extra_own)
        self.interference[tag] = m
        if m["other_frac"] > 0.15:
            log(f"warning: other work took {m['other_frac']:.0%} of the machine during {tag} "
                f"({m['other_cpu_s']:.1f} CPU s); its numbers are noisy")
        return m

    def quietest(self, tag, fn):
        """Runs FN; while other work took > 15% of the CPUs during its timed section (and
        --retries allow), runs it again. Keeps the run with the least interference."""
        best = None
        fracs = []
        for attempt in range(1 + self.args.retries):
            if attempt:
                log(f"{tag}: running again (other work took {fracs[-1]:.0%} of the CPUs)")
            r = fn()
            frac = r.get("interference", {}).get("other_frac", 0.0)
            fracs.append(frac)
            if best is None or frac < best.get("interference", {}).get("other_frac", 0.0):
                best = r
            if frac <= 0.15 or r.get("status") == "timed out":
                break
        if len(fracs) > 1:
            best["attempts_other_frac"] = fracs
            self.interference[tag] = best["interference"]
        return best

    def quiet(self, tag, limit=0.15, max_wait=30):
        """Right before a timed section: how busy the machine is with other work (the bench's
        own children are idle then). Waits up to MAX_WAIT s for it to fall below LIMIT.
        Dirty data is written back first: the sink's access log after wrk's 200,000 requests,
        say, would otherwise be written out during the section and slow its fsyncs."""
        os.sync()
        busy = machine_busy()
        t0 = time.monotonic()
        while busy > limit and time.monotonic() - t0 < max_wait:
            busy = machine_busy(1.0)
        waited = time.monotonic() - t0
        self.background[tag] = (busy, waited)
        if busy > limit:
            log(f"warning: {busy:.0%} of the CPUs busy with other work before {tag} "
                f"(waited {waited:.0f} s); its numbers will be noisy")
        return busy

    # --- scenarios ------------------------------------------------------------------------

    def run_sink(self):
        self.quiet("sink")
        r = sinkmod.measure_alone(self.sink, self.small(0), self.workdir, self.logdir,
                                  seconds=self.sink_s)
        log(f"sink alone: {r['rps']:.0f} requests/s ({r['tool']}, {r['body_bytes']}-byte "
            f"multipart body, {r['ok']} answered 201)")
        return r

    def _burst_once(self, tag, strace):
        root = self.fresh(tag)
        folders = make_folders(root, 4)
        staged = self.stage_small(root, self.n_burst, 4)
        cfg = self.cfg.write(os.path.join(root, "rdd.yaml"), folders, SETTLE_MS, RESCAN_S)
        d = self.daemon(tag, cfg)
        st = None
        out = {"files": self.n_burst, "folders": 4}
        try:
            d.wait_ready()
            if strace:
                out["strace_file"] = os.path.join(self.logdir, f"{tag}.strace")
                st = strace_attach(d.pid, out["strace_file"],
                                   os.path.join(self.logdir, f"{tag}.strace.log"))
            time.sleep(0.2)
            self.quiet(tag)
            since = self.sink.log_offset()
            cpu0 = cpu_seconds(d.pid)
            meter = self.meter(d.pid, st.pid if st else None)
            deadline = self.deadline()
            t0 = time.time()
            for p, k in staged:
                os.rename(p, os.path.join(folders[k].inbox, os.path.basename(p)))
            out["drop_s"] = time.time() - t0
            done = [f.done for f in folders]
            failed = [f.failed for f in folders]
            try:
                wait_until(lambda: count_reports(done + failed), self.n_burst, deadline)
            except BenchTimeout as e:
                e.extra = {"done": count_reports(done), "failed": count_reports(failed)}
                raise
            out["interference"] = self.metered(tag, meter)
            out["total_s"] = latest_ctime(done + failed, ".json") - t0
            out["net_s"] = out["total_s"] - SETTLE_MS / 1000
            out["rate"] = self.n_burst / out["net_s"]
            out["cpu_s"] = cpu_seconds(d.pid) - cpu0
            out["rss_kib"] = d.peak_rss_kib()
            out["failed"] = count_reports(failed)
            if st is not None:
                strace_detach(st)
                st = None
                calls = parse_strace_summary(out["strace_file"])
                out["fsync"] = calls.get("fsync", 0)
                out["fdatasync"] = calls.get("fdatasync", 0)
                out["other_sync"] = {k: v for k, v in calls.items()
                                     if k in ("sync_file_range", "syncfs", "sync", "msync")}
                out["syscalls"] = calls.get("total", 0)
                out["fsync_per_file"] = (out["fsync"] + out["fdatasync"]) / self.n_burst
                out["syscalls_per_file"] = out["syscalls"] / self.n_burst
                out["top_syscalls"] = sorted(((v, k) for k, v in calls.items() if k != "total"),
                                             reverse=True)[:8]
            req = self.sink.entries(since)
            out["requests"] = len(req)
            out["requests_201"] = sum(1 for e in req if e["status"] == 201)
            if req:
                out["sink_first_s"] = min(e["msec"] for e in req) - t0
                out["sink_last_s"] = max(e["msec"] for e in req) - t0
        finally:
            if st is not None:
                strace_detach(st)
            code = d.stop()
        out["exit"] = code
        if out.get("failed"):
            raise ScenarioError(f"{out['failed']} files went to failed (see {self.daemon_log})")
        if code != 0:
            raise ScenarioError(f"the daemon exited {code} after SIGTERM")
        self.done_with(root)
        return out

    def median_run(self, tag, fn, key):
        """--repeat runs of FN (each as quiet as quietest gets it); the one with the median KEY,
        which also gets every run's KEY as runs_<KEY>. A single run on a shared 2-core
        machine moves by a fifth from one run to the next."""
        runs = sorted((self.quietest(tag, fn) for _ in range(max(1, self.args.repeat))),
                      key=lambda r: r[key])
        r = runs[len(runs) // 2]
        r["runs_" + key] = [x[key] for x in runs]
        return r

    def run_burst(self):
        r = self.median_run("burst", lambda: self._burst_once("burst", strace=False), "net_s")
        log(f"burst: {r['files']} files in {r['total_s']:.2f} s from the first rename "
            f"({r['net_s']:.2f} s without settle_ms, median of "
            f"{', '.join(f'{x:.2f}' for x in r['runs_net_s'])}): {r['rate']:.0f} files/s; "
            f"{r['requests']} requests; peak RSS {mib(r['rss_kib']):.1f} MiB")
        try:
            s = self._burst_once("burst-strace", strace=True)
            r["strace"] = s
            log(f"burst under strace: {s['total_s']:.2f} s; fsync+fdatasync "
                f"{s['fsync_per_file']:.2f}/file, {s['syscalls_per_file']:.0f} syscalls/file")
        except BenchTimeout as e:
            r["strace"] = {"status": "timed out", "reached": e.reached}
            self._print_failure("burst under strace", f"timed out: {e}")
        except (ScenarioError, OSError) as e:
            r["strace"] = {"status": "error", "error": str(e)}
            self._print_failure("burst under strace", str(e))
        return r

    def run_curl(self):
        r = self.median_run("curl", self._curl_once, "curl_s")
        log(f"curl --parallel-max 4: {r['files']} files in {r['curl_s']:.2f} s (median of "
            f"{', '.join(f'{x:.2f}' for x in r['runs_curl_s'])}; {r['rate']:.0f}/s), "
            f"+ mv {r['mv_s']:.3f} s ({r['rate_mv']:.0f}/s)")
        return r

    def _curl_once(self):
        root = self.fresh("curl")
        staged = self.stage_small(root, self.n_burst, 1)
        done = os.path.join(root, "done")
        os.makedirs(done)
        self.quiet("curl")
        meter = self.meter()
        r = baselines.curl_parallel([p for p, _ in staged], self.sink.url, done, root,
                                    self.logdir, self.deadline())
        r["interference"] = self.metered("curl", meter)
        r["rate"] = r["files"] / r["curl_s"]
        r["rate_mv"] = r["files"] / (r["curl_s"] + r["mv_s"])
        if count_entries([done]) != r["files"]:
            raise ScenarioError("not every file reached done")
        self.done_with(root)
        return r

    def run_script(self):
        r = self.quietest("script", self._script_once)
        log(f"operator script (4 x inotifywait|curl&&mv): {r['files']} files in "
            f"{r['total_s']:.2f} s ({r['rate']:.0f}/s)")
        return r

    def _script_once(self):
        root = self.fresh("script")
        folders = make_folders(root, 4)
        staged = self.stage_small(root, self.n_burst, 4)
        self.quiet("script")
        r = baselines.script_burst(folders, staged, self.sink.url, self.logdir, self.deadline(),
                                   meter_factory=self.meter)
        r["interference"] = self.metered("script", r.pop("meter"))
        r["rate"] = r["files"] / r["total_s"]
        self.done_with(root)
        return r

    def run_backlog(self):
        runs = []
        for n in self.backlog_sizes:
            runs.append(self.quietest(f"backlog-{n}", lambda n=n: self._backlog_once(n)))
        r = {"runs": runs}
        first, last = runs[0], runs[-1]
        r["sizes_ratio"] = last["files"] / first["files"]
        if first.get("seconds") and last.get("seconds"):
            r["ratio"] = last["seconds"] / first["seconds"]
        elif first.get("seconds") and last.get("status") == "timed out":
            r["ratio_min"] = last["elapsed_s"] / first["seconds"]
        return r

    def _backlog_once(self, n):
        tag = f"backlog-{n}"
        root = self.fresh(tag)
        f = make_folders(root, 1)[0]
        log(f"backlog {n}: writing {n} files into one inbox")
        for i in range(n):
            write_file(os.path.join(f.inbox, f"c{i:05d}.csv"), self.small(i))
        os.sync()
        cfg = self.cfg.write(os.path.join(root, "rdd.yaml"), [f], SETTLE_MS, RESCAN_S)
        self.quiet(tag)
        meter = self.meter()
        d = self.daemon(tag, cfg, once=True)
        out = {"files": n}
        try:
            t0 = d.started
            deadline = t0 + self.timeout
            code = None
            next_note = t0 + 60
            while code is None and time.monotonic() < deadline:
                code = d.wait(min(deadline, next_note))
                if code is None and time.monotonic() >= next_note:
                    next_note += 60
                    log(f"backlog {n}: {count_reports([f.done, f.failed])} done after "
                        f"{time.monotonic() - t0:.0f} s")
            elapsed = time.monotonic() - t0
            if code is None:
                out["interference"] = self.metered(tag, meter, cpu_seconds(d.pid))
                d.stop(grace=60)
                out.update(status="timed out", elapsed_s=elapsed, exit=d.exit_code,
                           done=count_reports([f.done]), failed=count_reports([f.failed]),
                           rss_kib=d.hwm_kib)
                log(f"backlog {n}: timed out after {elapsed:.0f} s with {out['done']} of {n} "
                    f"done")
                print(tail(self.daemon_log, 10), end="")
                return out
        finally:
            d.stop()
        if "interference" not in out:
            # The daemon has been reaped: its CPU time is in the driver's children times.
            out["interference"] = self.metered(tag, meter)
        out.update(seconds=elapsed, rate=n / elapsed, exit=code, rss_kib=d.hwm_kib,
                   ru_maxrss_kib=d.ru_maxrss_kib(),
                   cpu_s=d.ru_cpu_seconds(), done=count_reports([f.done]),
                   failed=count_reports([f.failed]),
                   left=count_entries([f.inbox]))
        log(f"backlog {n}: --once exited {code} after {elapsed:.2f} s ({out['rate']:.0f} "
            f"files/s), {out['done']} done, {out['failed']} failed, peak RSS "
            f"{mib(out['rss_kib']):.1f} MiB")
        if code != 0 or out["done"] != n:
            out["status"] = "error"
            out["error"] = f"exit {code}, {out['done']} of {n} in done, {out['left']} left"
            print(tail(self.daemon_log, 20), end="")
        self.done_with(root)
        return out

    def run_big(self):
        root = self.fresh("big")
        f = make_folders(root, 1)[0]
        staging = os.path.join(root, "staging")
        os.makedirs(staging)
        log(f"big: writing {self.n_big} x {self.big_bytes / 1e6:.0f} MB CSV files")
        paths, sizes = [], []
        for i in range(self.n_big):
            p = os.path.join(staging, f"big{i}.csv")
            sizes.append(write_big_csv(p, self.big_bytes, i))
            paths.append(p)
        os.sync()
        self.sink.verify_reads_body(big_bytes=110_000_000)
        self.quiet("big")
        # Three curl uploads of each file; the median is that file's curl time.
        curl_all = [[baselines.curl_single(p, self.sink.url) for _ in range(3)] for p in paths]
        curl_t = [statistics.median(x) for x in curl_all]
        log("big: curl upload (median of 3) " + ", ".join(f"{t:.3f}" for t in curl_t) + " s")
        cfg = self.cfg.write(os.path.join(root, "rdd.yaml"), [f], SETTLE_MS, RESCAN_S)
        d = self.daemon("big", cfg)
        files = []
        try:
            d.wait_ready()
            time.sleep(0.2)
            meter = self.meter(d.pid)
            for i, p in enumerate(paths):
                since = self.sink.log_offset()
                name = os.path.basename(p)
                t0 = time.time()
                os.rename(p, os.path.join(f.inbox, name))
                wait_until(lambda: count_reports([f.done, f.failed]), i + 1, self.deadline())
                report = os.path.join(f.done, name + ".json")
                if not os.path.exists(report):
                    raise ScenarioError(f"{name} did not reach done ({self.daemon_log})")
                t = os.stat(report).st_ctime_ns / 1e9 - t0
                req = self.sink.entries(since)
                files.append({"bytes": sizes[i], "drop_done_s": t, "curl_s": curl_t[i],
                              "curl_samples_s": curl_all[i],
                              "limit_s": SETTLE_MS / 1000 + 3 * curl_t[i],
                              "requests": len(req),
                              "uploaded_bytes": sum(e["length"] for e in req),
                              "sink_request_s": sum(e["request_time"] for e in req)})
                log(f"big: {name} drop->done {t:.3f} s (curl {curl_t[i]:.3f} s, limit "
                    f"{files[-1]['limit_s']:.3f} s)")
            rss = d.peak_rss_kib()
            interference = self.metered("big", meter)
        finally:
            code = d.stop()
        self.done_with(root)
        med_done = statistics.median(x["drop_done_s"] for x in files)
        med_curl = statistics.median(t for x in curl_all for t in x)
        return {"mode": "one at a time, each waited for", "files": files, "rss_kib": rss,
                "interference": interference, "exit": code,
                "median_drop_done_s": med_done, "median_curl_s": med_curl,
                "limit_s": SETTLE_MS / 1000 + 3 * med_curl,
                "every_file_within_its_limit": all(x["drop_done_s"] <= x["limit_s"]
                                                   for x in files),
                "met": med_done <= SETTLE_MS / 1000 + 3 * med_curl}

    def run_latency(self):
        r = self.quietest("latency", self._latency_once)
        log(f"latency: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max "
            f"{r['max_ms']:.1f} ms beyond settle_ms ({r['matched']} of {r['files']} matched)")
        return r

    def _latency_once(self):
        root = self.fresh("latency")
        f = make_folders(root, 1)[0]
        staging = os.path.join(root, "staging")
        os.makedirs(staging)
        n = self.n_latency
        paths = []
        for i in range(n):
            # Fixed-width rows plus i padding bytes: each file's request is i bytes longer than
            # the first one's, which is how the sink's log lines are matched to files.
            data = (f"email,first_name\npad{i:04d}@example.com,{'x' * i}\n".encode() +
                    self.small(1_000_000 + i)[len("email,first_name\n"):])
            p = os.path.join(staging, f"lat{i:04d}.csv")
            write_file(p, data)
            paths.append(p)
        os.sync()
        cfg = self.cfg.write(os.path.join(root, "rdd.yaml"), [f], SETTLE_MS, RESCAN_S)
        d = self.daemon("latency", cfg)
        rng = random.Random(7)
        drops = []
        try:
            d.wait_ready()
            time.sleep(0.5)
            self.quiet("latency")
            since = self.sink.log_offset()
            meter = self.meter(d.pid)
            deadline = self.deadline()
            for p in paths:
                os.rename(p, os.path.join(f.inbox, os.path.basename(p)))
                drops.append(time.time())
                time.sleep(rng.uniform(0.05, 0.10))
                if time.monotonic() > deadline:
                    raise BenchTimeout("latency drops", len(drops), n)
            wait_until(lambda: count_reports([f.done, f.failed]), n, deadline)
            rss = d.peak_rss_kib()
            interference = self.metered("latency", meter)
        finally:
            code = d.stop()
        req = [e for e in self.sink.entries(since) if e["status"] == 201]
        if not req:
            raise ScenarioError("the sink logged no upload")
        diffs = [e["length"] - i for i, e in enumerate(req)]
        offset = statistics.mode(diffs)
        lat = {}
        for e in req:
            i = e["length"] - offset
            if 0 <= i < n and i not in lat:
                lat[i] = (e["msec"] - drops[i]) * 1000 - SETTLE_MS
        vals = list(lat.values())
        self.done_with(root)
        return {"files": n, "matched": len(vals), "requests": len(req), "exit": code,
                "p50_ms": pct(vals, 50), "p99_ms": pct(vals, 99), "max_ms": max(vals),
                "min_ms": min(vals), "rss_kib": rss, "interference": interference,
                "sink_request_time_p50_ms": 1000 * pct([e["request_time"] for e in req], 50)}

    def run_idle(self):
        root = self.fresh("idle")
        folders = make_folders(root, self.idle_folders)
        cfg = self.cfg.write(os.path.join(root, "rdd.yaml"), folders, SETTLE_MS, RESCAN_S)
        d = self.daemon("idle", cfg)
        out = {"folders": self.idle_folders, "window_s": self.idle_s, "rescan_s": RESCAN_S}
        try:
            d.wait_ready()
            time.sleep(2)
            self.quiet("idle")
            log(f"idle: watching {self.idle_folders} empty folders for {self.idle_s} s")
            c0, (s0, m0, _) = cpu_seconds(d.pid), ctx_switches(d.pid)
            t0 = time.monotonic()
            time.sleep(self.idle_s)
            c1, (s1, m1, threads) = cpu_seconds(d.pid), ctx_switches(d.pid)
            window = time.monotonic() - t0
            out.update(cpu_s=c1 - c0, wakeups=s1 - s0, main_voluntary=m1 - m0,
                       threads=threads,
                       expected=self.idle_folders * window / RESCAN_S, measured_window_s=window)
            log(f"idle: cpu {out['cpu_s']:.3f} s, {out['wakeups']} context switches "
                f"(expected {out['expected']:.0f} rescans); now {self.idle_s} s under strace")
            trace = os.path.join(self.logdir, "idle.strace")
            st = strace_attach(d.pid, trace, os.path.join(self.logdir, "idle.strace.log"))
            t0 = time.monotonic()
            try:
                time.sleep(self.idle_s)
            finally:
                strace_detach(st)
            calls = parse_strace_summary(trace)
            out["strace_window_s"] = time.monotonic() - t0
            out["epoll_waits"] = sum(v for k, v in calls.items()
                                     if k.startswith("epoll") and "wait" in k)
            out["strace_syscalls"] = calls.get("total", 0)
            out["strace_top"] = sorted(((v, k) for k, v in calls.items() if k != "total"),
                                       reverse=True)[:6]
            out["rss_kib"] = d.peak_rss_kib()
        finally:
            out["exit"] = d.stop()
        self.done_with(root)
        return out

    def run_normalize(self):
        """Issue 10: legacy-CSV normalization (bench/normalize.py)."""
        return normalize.Normalize(self).run()

    def run_limit(self):
        """Issue 18: through Resend's rate limit, against the fake API (bench/limit.py)."""
        return limit.Limit(self).run()

    # --- driver ---------------------------------------------------------------------------

    def _print_failure(self, name, msg):
        log(f"{name}: {msg}")
        if self.daemon_log and os.path.exists(self.daemon_log):
            print(f"--- last lines of {self.daemon_log}:")
            print(tail(self.daemon_log, 20), end="")
            print("---")

    def scenario(self, name):
        fn = getattr(self, "run_" + name)
        self.daemon_log = None
        t0 = time.monotonic()
        log(f"== {name} ==")
        try:
            r = fn()
            r.setdefault("status", "ok")
        except BenchTimeout as e:
            r = {"status": "timed out", "error": str(e), "reached": e.reached,
                 "total": e.total}
            r.update(getattr(e, "extra", {}))
            self._print_failure(name, f"timed out after {self.timeout} s: {e}")
        except (ScenarioError, OSError, ValueError, subprocess.SubprocessError) as e:
            r = {"status": "error", "error": str(e)}
            self._print_failure(name, f"error: {e}")
            if not isinstance(e, ScenarioError):
                traceback.print_exc()
        r["scenario_s"] = time.monotonic() - t0
        self.results[name] = r
        return r

    def run(self, selected):
        # A previous run's tree is set aside now and removed after this run's measurements.
        old = None
        if os.path.exists(self.workdir):
            old = f"{self.workdir}.old-{os.getpid()}"
            os.rename(self.workdir, old)
        os.makedirs(self.datadir)
        os.makedirs(self.logdir)
        spread_directories(self.datadir)
        fs = fs_type(self.workdir)
        log(f"work directory {self.workdir} ({fs}); binary {self.binary}")
        if fs.split()[0] in ("tmpfs", "ramfs"):
            log("warning: the work directory is on tmpfs, where fsync costs nothing")
        if any(name not in OWN_API for name in selected):
            self.sink = sinkmod.Sink(self.workdir, self.logdir).start()
        try:
            if self.sink:
                self.sink.verify_reads_body()
                log(f"sink: nginx on {self.sink.url} (reads the whole body before answering: "
                    "checked)")
                self.cfg = DaemonConfig(self.binary, self.sink.url, self.logdir)
                self.cfg.probe(self.workdir)
                for note in self.cfg.notes:
                    log("config: " + note)
            for name in SCENARIOS:
                if name in selected:
                    self.scenario(name)
        finally:
            if self.sink:
                self.sink.stop()
            if old:
                rmtree(old)
            if not self.args.keep:
                rmtree(self.datadir)


def spread_directories(path):
    """Marks PATH as the top of a directory hierarchy for ext4's Orlov allocator (chattr +T), so
    that each scenario's tree gets block groups of its own instead of those of the scenario that
    ran before. On ext4 without a journal (this kind of machine: "mounted filesystem ...
    without journal"), the inode allocator skips every inode freed in the last minutes
    (recently_deleted() in fs/ext4/ialloc.c): in the group where a scenario had just removed
    30,000 files, each new file of the next one costs a scan over them, and a benchmark measures
    what ran before it. Other filesystems ignore or refuse the flag; that is fine."""
    subprocess.run(["chattr", "+T", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)


# --- report -------------------------------------------------------------------------------------

def fmt(x, nd=2):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def yesno(ok):
    return "—" if ok is None else ("**yes**" if ok else "**NO**")


def not_ok(r):
    if r is None:
        return "not run"
    if r.get("status") == "timed out":
        return f"timed out ({r.get('reached')} of {r.get('total')})"
    return f"error: {r.get('error', '')[:60]}"


def table(results, timeout):
    R = results.get
    rows = []
    burst, curl, script = R("burst"), R("curl"), R("script")
    b_ok = burst and burst.get("status") == "ok"
    c_ok = curl and curl.get("status") == "ok"
    s_ok = script and script.get("status") == "ok"
    b_rate = burst["rate"] if b_ok else None

    if burst or curl or script:
        def runs(r, key):
            v = r.get("runs_" + key) or []
            return f", median of {len(v)}" if len(v) > 1 else ""
        d = (f"{b_rate:,.0f} files/s ({burst['total_s']:.2f} s total, "
             f"{burst['net_s']:.2f} s − settle{runs(burst, 'net_s')})" if b_ok
             else not_ok(burst))
        c = (f"{curl['rate']:,.0f} files/s ({curl['curl_s']:.2f} s{runs(curl, 'curl_s')}); +mv "
             f"{curl['rate_mv']:,.0f}/s" if c_ok else not_ok(curl))
        s = (f"{script['rate']:,.0f} files/s ({script['total_s']:.2f} s)" if s_ok
             else not_ok(script))
        rc = b_rate / curl["rate"] if b_ok and c_ok else None
        rs = b_rate / script["rate"] if b_ok and s_ok else None
        met = None
        if rc is not None and rs is not None:
            met = rc >= 0.5 and rs >= 25
        rows.append(["burst: 2,000 files → 4 inboxes, daemon running", d, c, s,
                     fmt(rc) + "×" if rc else "—", fmt(rs, 1) + "×" if rs else "—",
                     "≥ 0.5× curl, ≥ 25× script", yesno(met)])

    bl = R("backlog")
    if bl:
        for run in bl.get("runs", []):
            if run.get("seconds") and run.get("status", "ok") == "ok":
                v = f"{run['seconds']:.2f} s ({run['rate']:,.0f} files/s)"
            elif run.get("status") == "timed out":
                v = (f"timed out > {run['elapsed_s']:.0f} s ({run['done']:,} of "
                     f"{run['files']:,} done)")
            else:
                v = run.get("error", "error")
            rows.append([f"backlog --once: {run['files']:,} files in one inbox", v, "—", "—",
                         "—", "—", "exit 0, all in done",
                         yesno(run.get("status", "ok") == "ok" and run.get("exit") == 0)])
        if "ratio" in bl or "ratio_min" in bl:
            runs = bl["runs"]
            label = (f"backlog scaling t({runs[-1]['files']:,}) / t({runs[0]['files']:,})")
            if "ratio" in bl:
                v, met = f"{bl['ratio']:.1f}×", bl["ratio"] <= 20
            else:
                v, met = f"> {bl['ratio_min']:.0f}× (timed out)", False
            rows.append([label, v, "—", "—", "—", "—",
                         f"≤ 20× (sizes ×{bl['sizes_ratio']:.0f})", yesno(met)])
        elif bl.get("status") != "ok":
            rows.append(["backlog", not_ok(bl), "—", "—", "—", "—", "≤ 20×", yesno(None)])

    big = R("big")
    if big:
        if big.get("status") == "ok":
            n = len(big["files"])
            d = (f"{big['median_drop_done_s']:.3f} s drop→done (median of {n}; max "
                 f"{max(x['drop_done_s'] for x in big['files']):.3f})")
            c = f"{big['median_curl_s']:.3f} s (curl -F, median of {3 * n} uploads)"
            r = big["median_drop_done_s"] / big["median_curl_s"]
            rows.append([f"big: {n} × 100 MB, dropped one at a time", d, c, "—",
                         f"{r:.2f}×", "—",
                         f"median ≤ settle_ms + 3× curl (= {big['limit_s']:.3f} s)",
                         yesno(big["met"])])
        else:
            rows.append(["big: 100 MB files", not_ok(big), "—", "—", "—", "—",
                         "≤ settle_ms + 3× curl", yesno(None)])

    lat = R("latency")
    if lat:
        if lat.get("status") == "ok":
            d = (f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms beyond settle_ms "
                 f"({lat['matched']} files)")
            met = lat["p99_ms"] <= 25 and lat["matched"] == lat["files"]
        else:
            d, met = not_ok(lat), None
        rows.append(["latency: one file at a time, 50–100 ms apart", d, "—", "—", "—", "—",
                     "p99 ≤ 25 ms (+ settle_ms)", yesno(met)])

    idle = R("idle")
    if idle:
        if idle.get("status") == "ok":
            d = (f"{idle['cpu_s']:.3f} CPU s, {idle['wakeups']} wake-ups (context switches, "
                 f"all threads) in {idle['window_s']} s; {idle['epoll_waits']} epoll_wait "
                 f"under strace")
            exp = idle["expected"]
            met = idle["wakeups"] <= math.ceil(exp) + 2
            t = f"≤ rescan timers: {exp:.0f} expected"
        else:
            d, met, t = not_ok(idle), None, "rescan timers only"
        rows.append([f"idle: {R('idle').get('folders', 20)} empty folders, rescan_s 30", d,
                     "—", "—", "—", "—", t, yesno(met)])

    if burst:
        s = burst.get("strace") if b_ok else None
        if s and s.get("status", "ok") == "ok" and "fsync_per_file" in s:
            d = (f"{s['fsync_per_file']:.2f} fsync+fdatasync per file "
                 f"({s['fsync']:,} + {s['fdatasync']:,}); {s['syscalls_per_file']:.0f} "
                 f"syscalls per file")
            met = s["fsync_per_file"] <= 3
        else:
            d, met = (not_ok(s) if s else not_ok(burst)), None
        rows.append(["fsyncs (burst under strace -f -c)", d, "—", "—", "—", "—",
                     "≤ 3 per file", yesno(met)])

    peaks = []
    for name, key in (("burst", None), ("backlog", None), ("big", None), ("latency", None),
                      ("idle", None), ("normalize", None)):
        r = R(name)
        if not r:
            continue
        if name == "backlog":
            for run in r.get("runs", []):
                if run.get("rss_kib"):
                    peaks.append((f"backlog {run['files']:,}", run["rss_kib"]))
        elif r.get("rss_kib"):
            peaks.append((name, r["rss_kib"]))
    if peaks:
        top = max(k for _, k in peaks)
        d = f"max {top / 1024:.1f} MiB (" + ", ".join(
            f"{n} {k / 1024:.1f}" for n, k in peaks) + ")"
        rows.append(["peak RSS of the daemon (VmHWM)", d, "—", "—", "—", "—",
                     "< 20 MiB throughout", yesno(top < RSS_TARGET_KIB)])

    if not rows:
        return ""
    head = ["scenario", "resend-dropd", "curl --parallel-max 4", "operator script",
            "dropd / curl", "dropd / script", "target", "met"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def sink_line(results):
    s = results.get("sink")
    if not s:
        return ""
    if s.get("status") != "ok":
        return f"Sink alone: {not_ok(s)}\n"
    line = (f"Sink alone (nginx, {s['tool']}, {s['body_bytes']:,}-byte multipart body of a "
            f"100-row CSV): **{s['rps']:,.0f} requests/s**")
    b = results.get("burst")
    if b and b.get("status") == "ok":
        line += (f", {s['rps'] / b['rate']:.1f}× the daemon's burst rate "
                 f"({b['rate']:,.0f} files/s)")
    c = results.get("curl")
    if c and c.get("status") == "ok":
        line += f" and {s['rps'] / c['rate']:.1f}× curl --parallel's"
    return line + ".\n"


def background_note(bench):
    """Which timed sections ran while other work used the machine."""
    parts = []
    waited = {k: v for k, v in bench.background.items() if v[1] >= 1}
    busy = {k: v for k, v in bench.background.items() if v[0] > 0.15}
    noisy = {k: v for k, v in bench.interference.items() if v["other_frac"] > 0.15}
    if bench.interference:
        worst = max(bench.interference.items(), key=lambda kv: kv[1]["other_frac"])
        parts.append("Other work on the machine during the timed sections (machine CPU time "
                     "minus the daemon's, nginx's, strace's and the driver's): at most "
                     f"{worst[1]['other_frac']:.0%} of the CPUs ({worst[0]}).")
    if waited:
        parts.append("Waited for the machine to quieten before " + ", ".join(
            f"{k} ({w:.0f} s)" for k, (_, w) in waited.items()) + ".")
    if busy or noisy:
        parts.append("**Noisy** (> 15% of the CPUs busy with other work): " + ", ".join(
            [f"{k} (before: {b:.0%})" for k, (b, _) in busy.items()] +
            [f"{k} (during: {m['other_frac']:.0%})" for k, m in noisy.items()]) +
            ". Compare those numbers with care, or run again.")
    elif bench.interference:
        parts.append("The machine was otherwise quiet.")
    return (" ".join(parts) + "\n") if parts else ""


def cmd(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def build_type(binary):
    """" (Release build)" and the like, from the CMake cache beside BINARY."""
    try:
        with open(os.path.join(os.path.dirname(binary), "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    t = line.split("=", 1)[1].strip()
                    return f" ({t} build)" if t else " (no CMAKE_BUILD_TYPE)"
    except OSError:
        pass
    return ""


def machine_info(bench):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    if bench.args.rev:
        commit = cmd(["git", "rev-parse", bench.args.rev + "^{commit}"]) + \
            f" (--rev {bench.args.rev}, built from git archive)"
        dirty = ""
    else:
        # As it was when the run started (just after scripts/bench built the binary): a
        # commit made during a long run says nothing about the binary measured.
        commit, dirty = getattr(bench, "git_at_start", None) or (
            cmd(["git", "rev-parse", "HEAD"]),
            cmd(["git", "status", "--porcelain", "--", "src", "CMakeLists.txt"]))
    dirty_lines = dirty.splitlines()
    dpkg = lambda p: cmd(["dpkg-query", "-W", "-f=${Version}", p])  # noqa: E731
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("git commit", commit + (" (at the start of the run, with uncommitted changes: " +
                                 ", ".join(ln.split(None, 1)[-1] for ln in dirty_lines[:12]) +
                                 ("…" if len(dirty_lines) > 12 else "") + ")"
                                 if dirty else "")),
        ("binary", os.path.relpath(bench.binary, REPO) +
         build_type(bench.binary)),
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])),
        ("bench directory", f"{bench.workdir} ({fs_type(bench.workdir)})"),
        ("libcurl", dpkg("libcurl4") + " (libcurl4, OpenSSL flavour, linked by the daemon); "
         + cmd(["curl", "--version"]).splitlines()[0]),
        ("libuv", dpkg("libuv1")),
        ("nginx", sinkmod.nginx_version()),
        ("python", platform.python_version()),
        ("load average at the end", cmd(["cat", "/proc/loadavg"])),
    ]


def details(results):
    """Every number, for the results file."""
    lines = []
    for name in SCENARIOS:
        r = results.get(name)
        if r is None:
            continue
        lines.append(f"### {name}\n")
        lines.append("```")
        lines += _dump(r)
        lines.append("```\n")
    return "\n".join(lines)


def _dump(obj, indent=""):
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v and not all(
                    isinstance(x, (int, float, str, tuple)) for x in
                    (v.values() if isinstance(v, dict) else v)):
                out.append(f"{indent}{k}:")
                out += _dump(v, indent + "  ")
            else:
                out.append(f"{indent}{k}: {_short(v)}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(f"{indent}- [{i}]")
            out += _dump(v, indent + "    ")
    return out


def _short(v):
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


def report(bench, selected, path):
    mode = "quick" if bench.args.quick else "full"
    if set(selected) != set(SCENARIOS):
        mode += " (only " + ",".join(s for s in SCENARIOS if s in selected) + ")"
    tbl = table(bench.results, bench.timeout)
    try:
        ntbl = normalize.normalize_table(bench.results.get("normalize"))
    except Exception:  # noqa: BLE001 - the raw numbers still go to the results file
        traceback.print_exc()
        ntbl = "(the normalize table could not be made: see Details)"
    if ntbl:
        ntbl = ("Normalization (issue 10; bench/normalize.py):\n\n" if tbl else "") + ntbl
        tbl = (tbl + "\n\n" + ntbl) if tbl else ntbl
    try:
        ltbl = limit.limit_table(bench.results.get("limit"))
    except Exception:  # noqa: BLE001 - the raw numbers still go to the results file
        traceback.print_exc()
        ltbl = "(the limit table could not be made: see Details)"
    if ltbl:
        ltbl = ("Through the rate limit (issue 18; bench/limit.py):\n\n" if tbl else "") + ltbl
        tbl = (tbl + "\n\n" + ltbl) if tbl else ltbl
    text = [f"# resend-dropd benchmark, {datetime.date.today().isoformat()} ({mode} run)\n",
            "Produced by `./scripts/bench` (bench/run_bench.py); see bench/README.md for what "
            "each scenario measures.\n",
            "## Machine\n"]
    text += [f"- {k}: {v}" for k, v in machine_info(bench)]
    text.append("")
    text.append("## Settings\n")
    if bench.cfg:  # the sink's scenarios (limit writes its own configuration)
        text.append(f"- daemon: `max_in_flight: 4`, `requests_per_second: {bench.cfg.rps}`, "
                    f"`settle_ms: {SETTLE_MS}`, `rescan_s: {RESCAN_S}`, `follow_import: false`, "
                    "`log.level: warning`")
    for note in (bench.cfg.notes if bench.cfg else []):
        text.append(f"- {note}")
    text.append(f"- every wait is capped at {bench.timeout:.0f} s (`--timeout`)")
    text.append(f"- files: 100-row CSVs (`email,first_name`, {len(bench.small(0)):,} to "
                f"{len(bench.small(bench.n_burst - 1)):,} bytes, unique rows); big files: "
                f"{bench.big_bytes / 1e6:.0f} MB of unique rows")
    if "limit" in bench.results:
        text.append("- limit: the fake Resend API (`tests/fake_resend`, `--rps 2` or `5`, "
                    f"`--import-seconds {limit.IMPORT_SECONDS}`) instead of the sink; the daemon "
                    "with default settings (`coalesce: off` in the second column), "
                    "`RESEND_API_KEY=re_test_key`")
    if "normalize" in bench.results:
        text.append("- normalize: Excel-style export (`Email;First Name;Last Name`, column_map, "
                    "Windows-1252, CRLF, accented names, a few quoted fields), the same rows as "
                    "clean UTF-8 `,`, and the clean file's first 45 MB; `max_file_bytes: 1 GiB`, "
                    "`max_upload_bytes: 50 MiB`, `csv:` settings left at auto")
    text.append("")
    text.append("## Results\n")
    text.append(sink_line(bench.results))
    text.append(tbl)
    text.append("")
    text.append(background_note(bench))
    text.append("## Details\n")
    text.append(details(bench.results))
    body = "\n".join(text) + "\n"
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(body)
    return tbl


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes: backlog 500/2000/8000, 1 big file, 50 latency files, "
                         "30 s idle")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds any one wait may take (default 600)")
    ap.add_argument("--binary", default=None,
                    help="the binary under test (default build/bench/resend-dropd)")
    ap.add_argument("--rev", default=None,
                    help="the commit --binary was built from (scripts/bench --rev builds it)")
    ap.add_argument("--workdir", default=None,
                    help="scratch directory, not on tmpfs (default build/bench/run)")
    ap.add_argument("--results", default=None,
                    help="results file (default bench/results/<YYYY-MM-DD>.md)")
    ap.add_argument("--no-results", action="store_true", help="write no results file")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the burst and of curl --parallel; the median is reported")
    ap.add_argument("--normalize-mb", type=float, default=None,
                    help="size of the normalize scenario's file in MB (default 300; --quick 100)")
    ap.add_argument("--build-dir", default=None,
                    help="where scripts/bench built the binary (default binary DIR/resend-dropd, "
                         "default workdir DIR/run)")
    ap.add_argument("--retries", type=int, default=1,
                    help="run burst, backlog and latency runs again this many times when other "
                         "work took > 15%% of the CPUs during them (default 1)")
    args = ap.parse_args()
    build_dir = os.path.abspath(args.build_dir) if args.build_dir else \
        os.path.join(REPO, "build", "bench")
    if args.binary is None:
        args.binary = os.path.join(build_dir, "resend-dropd")
    if args.workdir is None:
        args.workdir = os.path.join(build_dir, "run")
    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in selected if s not in SCENARIOS]
    if unknown:
        ap.error("unknown scenario(s): " + ", ".join(unknown))
    if not os.access(args.binary, os.X_OK):
        ap.error(f"{args.binary} is not an executable (build it, or pass --binary)")
    # A run of the normalize or limit scenario alone gets a file of its own: it must not
    # overwrite the day's full run.
    suffix = f"-{selected[0]}" if selected in (["normalize"], ["limit"]) else ""
    results_path = None if args.no_results else (args.results or os.path.join(
        HERE, "results", datetime.date.today().isoformat() + suffix + ".md"))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly: a driver started in the background by a shell would inherit SIGINT ignored.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    bench = Bench(args)
    bench.git_at_start = (cmd(["git", "rev-parse", "HEAD"]),
                          cmd(["git", "status", "--porcelain", "--", "src", "CMakeLists.txt"]))
    t0 = time.monotonic()
    interrupted = False
    try:
        bench.run(selected)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; everything started has been stopped")
    except ScenarioError as e:
        log(f"cannot run the benchmark: {e}")
        return 2
    if not bench.results:
        return 130 if interrupted else 2
    tbl = report(bench, selected, None if interrupted else results_path)
    print()
    print(sink_line(bench.results))
    print(tbl)
    print()
    note = background_note(bench)
    if note:
        print(note)
    log(f"finished in {time.monotonic() - t0:.0f} s; logs in {bench.logdir}")
    if results_path and not interrupted:
        log(f"results written to {os.path.relpath(results_path, REPO)}")
    if interrupted:
        return 130
    return 1 if any(r.get("status") == "error" for r in bench.results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
