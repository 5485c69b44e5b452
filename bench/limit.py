"""Issue 18's benchmark (`--only limit`): "through the limit".

Resend limits a team to a few requests per second, on every endpoint, and following an import
(GET /contacts/imports/{id}) costs requests too. Here the fake Resend API
(tests/fake_resend/fake_resend.py) enforces that limit (`--rps 2`, then 5) and finishes each
import one second after it was created (`--import-seconds 1`). A batch of files (100 rows each,
unique emails across files) is dropped at once into two folders (half each); what is timed is
the drop until every file is in done/ with a report saying its import completed.

Side by side, in the same run, each against a fresh fake (its contact store, records and rate
window new):
  - resend-dropd with default settings (coalesce: auto where the binary has it; follow_import
    on), a fresh state_dir;
  - resend-dropd with `coalesce: off` on both folders ("not supported by this binary" when its
    --check refuses the key);
  - the per-file floor, computed: one upload and one status read per file, 2 x files / rate;
  - the operator's loop: one shell loop of `curl -f --retry 20 -F file=@x ...` over the files
    (curl waits out each 429 with its Retry-After), then `mv` to done/; no follow-up, so the
    imports' end is checked afterwards, through the list endpoint.
A run whose lower bound (the floor for coalesce off, files / rate for the loop) is over
--timeout is not started, and the table says why; any other run is capped by --timeout.

From the fake's record of requests (GET /_fake/requests): requests by method and path, 429s,
how many imports were created and how many status reads each one got. From the reports
(done/<name>.json): outcome, `import_id`, `import.status`, `batch` (coalesced), `rate_limited`.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

from common import (BenchTimeout, Daemon, ScenarioError, child_env, count_reports,
                    latest_ctime, make_folders, small_csv, spawn, tail, terminate, wait_until,
                    write_file)

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(os.path.dirname(HERE), "tests", "fake_resend", "fake_resend.py")
API_KEY = "re_test_key"
USER_AGENT = "operator-loop/1.0"
IMPORT_SECONDS = 1
# (files, requests per second of the fake)
SETS = [(200, 2), (200, 5), (2000, 2)]
QUICK_SETS = [(200, 2), (200, 5)]
IMPORTS = "/contacts/imports"

LOOP_SH = r'''# The operator's loop: $1 the API's base URL, $2 a list of "file<TAB>done directory" lines.
while IFS="$(printf '\t')" read -r f d; do
    curl -sS -f --retry 20 -o "$d/${f##*/}.json" -F "file=@$f;type=text/csv" \
        -F 'on_conflict=upsert' -H "Authorization: Bearer $RESEND_API_KEY" \
        -H "User-Agent: operator-loop/1.0" "$1/contacts/imports" && mv "$f" "$d/"
done < "$2"
'''


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, headers=None, timeout=60):
    """(status, headers, decoded JSON or None); no proxy, whatever the environment says."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, e.headers, json.loads(body)
        except ValueError:
            return e.code, e.headers, None


class FakeResend:
    """The fake API as a child process, on a free port, its spooled bodies under DATA."""

    def __init__(self, root, logdir, tag, rps, import_seconds=IMPORT_SECONDS):
        self.port_file = os.path.join(root, "fake.port")
        self.data = os.path.join(root, "fake-data")
        self.log_path = os.path.join(logdir, f"{tag}-fake.log")
        self.argv = [sys.executable, FAKE, "--rps", str(rps), "--import-seconds",
                     str(import_seconds), "--api-key", API_KEY, "--port-file", self.port_file,
                     "--data-dir", self.data, "--quiet"]
        self.proc = None
        self.url = None

    def start(self, timeout=20):
        with open(self.log_path, "ab") as out:
            self.proc = spawn(self.argv, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ScenarioError(f"the fake API did not start:\n{tail(self.log_path)}")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.url = f"http://127.0.0.1:{int(f.read())}"
        return self

    @property
    def pid(self):
        return self.proc.pid

    def requests(self):
        status, _, body = http("GET", self.url + "/_fake/requests", timeout=120)
        if status != 200:
            raise ScenarioError(f"GET /_fake/requests answered {status}")
        return body["requests"]

    def list_all(self, deadline):
        """Every import through GET /contacts/imports (pages of 100, `after` the last id),
        waiting out 429s: {id: status}. Costs requests: call it after reading the record."""
        out = {}
        after = None
        while True:
            q = "?limit=100" + (f"&after={after}" if after else "")
            status, headers, body = http("GET", self.url + IMPORTS + q, {
                "Authorization": f"Bearer {API_KEY}", "User-Agent": USER_AGENT})
            if status == 429:
                if time.monotonic() > deadline:
                    raise BenchTimeout("listing the imports")
                time.sleep(float(headers.get("retry-after") or 1))
                continue
            if status != 200:
                raise ScenarioError(f"GET {IMPORTS}{q} answered {status}: {body}")
            for item in body["data"]:
                out[item["id"]] = item["status"]
            if not body["has_more"] or not body["data"]:
                return out
            after = body["data"][-1]["id"]

    def stop(self):
        if self.proc is not None:
            terminate(self.proc, grace=10)
            self.proc = None


def tally(records):
    """Requests by method and path, 429s, imports created and status reads per import."""
    by = {}
    created = set()
    reads = {}
    for r in records:
        path = r["path"].rstrip("/")
        key = f"{r['method']} {IMPORTS}/{{id}}" if path.startswith(IMPORTS + "/") else \
            f"{r['method']} {path}"
        by[key] = by.get(key, 0) + 1
        if r["status"] == 201 and isinstance(r.get("answer"), dict):
            created.add(r["answer"].get("id"))
        if r["method"] == "GET" and path.startswith(IMPORTS + "/") and r["status"] == 200:
            reads[path.rsplit("/", 1)[1]] = reads.get(path.rsplit("/", 1)[1], 0) + 1
    st = [r["status"] for r in records]
    span = (max(r["finished"] for r in records) - min(r["started"] for r in records)
            if records else 0)
    return {"requests": len(records), "by_endpoint": dict(sorted(by.items())),
            "status_429": st.count(429), "status_201": st.count(201),
            "other_errors": sum(1 for s in st if s is None or (s >= 400 and s != 429)),
            "imports_created": len(created), "created_ids": created,
            "reads_per_import_max": max(reads.values()) if reads else 0,
            "reads_per_import_median": statistics.median(reads.values()) if reads else 0,
            "first_to_last_request_s": span}


def yaml_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Limit:
    def __init__(self, bench):
        self.b = bench
        self.sets = QUICK_SETS if bench.args.quick else SETS
        self.coalesce_off = None  # None: not probed; True: accepted; str: why not

    # --- configuration --------------------------------------------------------------------

    def _config(self, root, folders, url, off):
        """Default settings but for where the API is, the state and the folders."""
        lines = ["api:", f"  base_url: {url}",
                 f"state_dir: {yaml_quote(os.path.join(root, 'state'))}", "folders:"]
        for f in folders:
            lines += [f"  - name: {f.name}", f"    inbox: {yaml_quote(f.inbox)}",
                      f"    done: {yaml_quote(f.done)}", f"    failed: {yaml_quote(f.failed)}"]
            if off:
                lines.append("    coalesce: off")
        path = os.path.join(root, "rdd.yaml")
        os.makedirs(os.path.join(root, "state"), exist_ok=True)
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def _check(self, path):
        r = subprocess.run([self.b.binary, "--check", "-c", path], capture_output=True,
                           text=True, env=child_env({"RESEND_API_KEY": API_KEY}), timeout=60)
        return r.returncode, (r.stdout + r.stderr).strip()

    def probe(self):
        """Once: does this binary take `coalesce: off`? (A binary before issue 18 refuses it
        with a config error.)"""
        root = self.b.fresh("limit-probe")
        folders = make_folders(root, 2)
        code, out = self._check(self._config(root, folders, "http://127.0.0.1:9", True))
        if code == 0:
            self.coalesce_off = True
        else:
            self.coalesce_off = "not supported by this binary (`--check`: " + \
                (out.splitlines()[0] if out else f"exit {code}") + ")"
        code, out = self._check(self._config(root, folders, "http://127.0.0.1:9", False))
        if code != 0:
            raise ScenarioError(f"--check refused the default configuration:\n{out}")

    # --- the runs -------------------------------------------------------------------------

    def _stage(self, root, n):
        """N files of 100 unique rows in ROOT/staging, synced; (path, folder index) pairs."""
        staging = os.path.join(root, "staging")
        os.makedirs(staging)
        out = []
        for i in range(n):
            p = os.path.join(staging, f"c{i:05d}.csv")
            write_file(p, small_csv(i))
            out.append((p, i % 2))
        os.sync()
        return out

    def _drop(self, staged, folders):
        t0 = time.time()
        for p, k in staged:
            os.rename(p, os.path.join(folders[k].inbox, os.path.basename(p)))
        return t0, time.time() - t0

    def _daemon_once(self, tag, n, rps, off):
        b = self.b
        root = b.fresh(tag)
        folders = make_folders(root, 2)
        staged = self._stage(root, n)
        fake = FakeResend(root, b.logdir, tag, rps).start()
        out = {"files": n, "rps": rps, "variant": "coalesce off" if off else "defaults"}
        d = None
        try:
            cfg = self._config(root, folders, fake.url, off)
            code, msg = self._check(cfg)
            if code != 0:
                raise ScenarioError(f"--check refused {cfg}:\n{msg}")
            b.daemon_log = os.path.join(b.logdir, f"{tag}-daemon.log")
            d = Daemon(b.binary, cfg, b.daemon_log, api_key=API_KEY).start()
            d.wait_ready()
            time.sleep(0.2)
            b.quiet(tag)
            done = [f.done for f in folders]
            failed = [f.failed for f in folders]
            deadline = b.deadline()
            t0, out["drop_s"] = self._drop(staged, folders)
            try:
                wait_until(lambda: count_reports(done + failed), n, deadline, interval=0.2)
                out["status"] = "ok"
                out["seconds"] = latest_ctime(done + failed, ".json") - t0
            except BenchTimeout:
                out["status"] = "timed out"
                out["seconds"] = time.time() - t0
                log(f"{tag}: timed out after {out['seconds']:.0f} s with "
                    f"{count_reports(done)} of {n} in done")
            out["rss_kib"] = d.peak_rss_kib()
        finally:
            if d is not None:
                out["exit"] = d.stop()
            try:
                t = tally(fake.requests())
            finally:
                fake.stop()
        out.update(self._reports(folders, t["created_ids"]))
        t.pop("created_ids")
        out.update(t)
        if out["status"] == "ok" and (out["completed"] != n or out["named"] != n):
            out["problems"] = (f"{n - out['completed']} reports without a completed import, "
                               f"{n - out['named']} not naming an import the API created")
        b.done_with(root)
        return out

    def _reports(self, folders, created):
        """What the reports in done/ and failed/ say, file by file."""
        r = {"done": 0, "failed": 0, "completed": 0, "named": 0, "batched": 0,
             "rate_limited": 0, "distinct_imports": 0}
        ids = set()
        for f in folders:
            for where, d in (("done", f.done), ("failed", f.failed)):
                for name in os.listdir(d):
                    if not name.endswith(".json") or name.startswith("."):
                        continue
                    r[where] += 1
                    try:
                        with open(os.path.join(d, name)) as fh:
                            rep = json.load(fh)
                    except (OSError, ValueError):
                        continue
                    imp = rep.get("import") or {}
                    if rep.get("outcome") == "done" and imp.get("status") == "completed":
                        r["completed"] += 1
                    iid = rep.get("import_id")
                    if iid and iid in created:
                        r["named"] += 1
                        ids.add(iid)
                    if rep.get("batch"):
                        r["batched"] += 1
                    r["rate_limited"] += int(rep.get("rate_limited") or 0)
        r["distinct_imports"] = len(ids)
        return r

    def _loop_once(self, tag, n, rps):
        b = self.b
        root = b.fresh(tag)
        folders = make_folders(root, 2)
        staged = self._stage(root, n)
        script = os.path.join(b.logdir, "limit-loop.sh")
        with open(script, "w") as fh:
            fh.write(LOOP_SH)
        fake = FakeResend(root, b.logdir, tag, rps).start()
        out = {"files": n, "rps": rps, "variant": "operator's curl loop"}
        listing = os.path.join(root, "loop-files.txt")
        with open(listing, "w") as fh:
            for p, k in staged:
                fh.write(f"{os.path.join(folders[k].inbox, os.path.basename(p))}\t"
                         f"{folders[k].done}\n")
        proc = None
        try:
            b.quiet(tag)
            deadline = b.deadline()
            t0, out["drop_s"] = self._drop(staged, folders)
            with open(os.path.join(b.logdir, f"{tag}-curl.log"), "ab") as err:
                proc = spawn(["bash", script, fake.url, listing], new_session=True,
                             env=child_env({"RESEND_API_KEY": API_KEY}), stdout=err,
                             stderr=err)
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            done = [f.done for f in folders]
            if proc.poll() is None:
                out["status"] = "timed out"
                out["seconds"] = time.time() - t0
                terminate(proc, grace=5, group=True)
            else:
                out["status"] = "ok"
                out["exit"] = proc.returncode
                out["seconds"] = max(latest_ctime(done, ".csv"), t0) - t0
            out["moved"] = sum(1 for f in folders for x in os.listdir(f.done)
                               if x.endswith(".csv"))
            t = tally(fake.requests())
            # The loop does not follow its imports; whether they completed is asked afterwards.
            time.sleep(IMPORT_SECONDS + 0.2)
            statuses = fake.list_all(time.monotonic() + 120)
        finally:
            if proc is not None and proc.poll() is None:
                terminate(proc, grace=5, group=True)
            fake.stop()
        named = completed = 0
        for f in folders:
            for x in os.listdir(f.done):
                if not x.endswith(".csv.json"):
                    continue
                try:
                    with open(os.path.join(f.done, x)) as fh:
                        iid = (json.load(fh) or {}).get("id")
                except (OSError, ValueError):
                    continue
                if iid in t["created_ids"]:
                    named += 1
                    completed += statuses.get(iid) == "completed"
        t.pop("created_ids")
        out.update(t, named=named, completed=completed, listed=len(statuses))
        if out["status"] == "ok" and (out["moved"] != n or named != n):
            out["problems"] = (f"{out['moved']} of {n} moved, {named} answers naming an "
                               f"import (exit {out.get('exit')})")
        b.done_with(root)
        return out

    def _safe(self, tag, fn):
        try:
            return fn()
        except (ScenarioError, OSError, ValueError, subprocess.SubprocessError,
                BenchTimeout) as e:
            log(f"{tag}: error: {e}")
            if self.b.daemon_log and os.path.exists(self.b.daemon_log):
                print(tail(self.b.daemon_log, 15), end="")
            return {"status": "error", "error": str(e)}

    def run(self):
        self.probe()
        if self.coalesce_off is not True:
            log("limit: coalesce off: " + self.coalesce_off)
        timeout = self.b.timeout
        out = {"import_seconds": IMPORT_SECONDS, "timeout_s": timeout, "sets": []}
        for n, rps in self.sets:
            s = {"files": n, "rps": rps, "floor_s": 2 * n / rps}
            tag = f"limit-{n}-{rps}"
            log(f"limit: {n} files at {rps} requests/s (per-file floor {s['floor_s']:.0f} s)")
            s["auto"] = self._safe(tag + "-auto", lambda: self._daemon_once(
                tag + "-auto", n, rps, False))
            log("limit: " + summary("defaults", s["auto"]))
            if self.coalesce_off is not True:
                s["off"] = {"status": "unsupported", "error": self.coalesce_off}
            elif s["floor_s"] > timeout:
                s["off"] = {"status": "skipped", "error": f"its floor ({s['floor_s']:.0f} s) "
                            f"is over --timeout ({timeout:.0f} s)"}
            else:
                s["off"] = self._safe(tag + "-off", lambda: self._daemon_once(
                    tag + "-off", n, rps, True))
            log("limit: " + summary("coalesce off", s["off"]))
            if n / rps > timeout:
                s["loop"] = {"status": "skipped", "error": f"one request per file needs "
                             f"{n / rps:.0f} s, over --timeout ({timeout:.0f} s)"}
            else:
                s["loop"] = self._safe(tag + "-loop", lambda: self._loop_once(
                    tag + "-loop", n, rps))
            log("limit: " + summary("curl loop", s["loop"]))
            out["sets"].append(s)
        probs = [f"{s['files']}@{s['rps']} {k}: {s[k].get('problems') or s[k].get('error')}"
                 for s in out["sets"] for k in ("auto", "off", "loop")
                 if s[k].get("problems") or s[k].get("status") == "error"]
        out["problems"] = probs
        return out


def summary(name, r):
    if r.get("status") in ("skipped", "unsupported", "error"):
        return f"{name}: {r['status']}: {r.get('error')}"
    return (f"{name}: {r['status']} in {r['seconds']:.1f} s; {r['requests']} requests "
            f"({', '.join(f'{k} {v}' for k, v in r['by_endpoint'].items())}), "
            f"{r['status_429']} answered 429; {r['imports_created']} imports; "
            f"{r.get('completed')} of {r['files']} completed")


# --- the table ----------------------------------------------------------------------------------

def _short_endpoints(r):
    m = r.get("by_endpoint", {})
    parts = [("POST", m.get(f"POST {IMPORTS}", 0)),
             ("GET {id}", m.get(f"GET {IMPORTS}/{{id}}", 0))]
    lst = m.get(f"GET {IMPORTS}", 0)
    if lst:
        parts.append(("list", lst))
    return ", ".join(f"{v:,} {k}" for k, v in parts)


def _cell(r, loop=False):
    st = r.get("status")
    if st in ("skipped", "unsupported"):
        return f"{st}: {r.get('error', '')}".replace("|", "\\|")
    if st == "error":
        return "error: " + r.get("error", "")[:160].replace("\n", " ").replace("|", "\\|")
    n = r["files"]
    t = (f"**timed out at {r['seconds']:.0f} s**" if st == "timed out"
         else f"**{r['seconds']:.1f} s**")
    req = (f"{r['requests']:,} requests ({_short_endpoints(r)}), {r['status_429']:,} × 429; "
           f"{r['imports_created']:,} imports")
    if loop:
        files = (f"{r.get('moved', 0):,}/{n:,} uploaded and moved; {r.get('named', 0):,} answers "
                 f"name their import; {r.get('completed', 0):,} completed (listed afterwards: "
                 f"no follow-up)")
    else:
        files = (f"{r.get('completed', 0):,}/{n:,} reports: import completed; "
                 f"{r.get('named', 0):,} name an import the API created"
                 + (f"; {r['batched']:,} coalesced" if r.get("batched") else "")
                 + (f"; status reads per import: median {r['reads_per_import_median']:g}, "
                    f"max {r['reads_per_import_max']}" if r.get("imports_created") else ""))
        if r.get("failed"):
            files += f"; **{r['failed']} in failed/**"
    return f"{t}: {req}; {files}"


def limit_table(res):
    if not res:
        return ""
    head = ["files → 2 folders, fake's limit", "resend-dropd, defaults (coalesce: auto)",
            "resend-dropd, coalesce: off", "per-file floor (2 × files / rate)",
            "operator's curl loop (no follow-up)"]
    rows = []
    if res.get("status") not in (None, "ok"):
        rows.append(["limit", (res.get("status") + ": " + res.get("error", ""))[:200]
                     .replace("\n", " "), "—", "—", "—"])
    for s in res.get("sets", []):
        rows.append([f"{s['files']:,} files at {s['rps']} requests/s", _cell(s["auto"]),
                     _cell(s["off"]), f"{s['floor_s']:.0f} s", _cell(s["loop"], loop=True)])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    notes = [f"The fake Resend API (tests/fake_resend) at `--rps N` (every endpoint counts) and "
             f"`--import-seconds {res.get('import_seconds', IMPORT_SECONDS)}`; files of 100 "
             "unique rows, dropped at once, half into each folder; the daemon with default "
             "settings (settle_ms 2000, follow_import on, max_in_flight 4), a fresh state_dir "
             "and a fresh fake per run. Time: the first rename to the inode change time of the "
             "last report in done/ (the loop: of the last file moved to done/). Runs are capped "
             f"at --timeout ({res.get('timeout_s', 0):.0f} s)."]
    if res.get("problems"):
        notes.append("**Problems:** " + "; ".join(str(p) for p in res["problems"]) + ".")
    return "\n".join(out) + "\n\n" + "\n".join(notes)
