"""Issue 10's benchmark (`--only normalize`): legacy-CSV normalization throughput and peak RSS.

One file of 300 MB (`--normalize-mb`) as Excel writes it in many European locales — Windows-1252,
`;`, CRLF, a header `Email;First Name;Last Name` mapped by column_map, accented names (some in
the 0x80-0x9F range where Windows-1252 and Latin-1 differ: Š Ž œ Ÿ ’), a few fields quoted
because they hold `;` or `"`, and fields holding `,` that the comma output must quote — and the
same rows as a clean UTF-8 comma file, plus that clean file's first 45 MB (under max_upload_bytes,
so eligible for the fast path: uploaded untouched, no copy). The files are generated once per run
and renamed from done/ back into the next run's staging directory, so every run reads them from
the page cache, as the baselines do.

resend-dropd (a running daemon, follow_import false, csv settings left at auto) gets each file
by rename into its inbox; what is timed is the rename to the inode change time of the last of
the original and its report in done/ (the same clock as the big scenario), and MB/s is the
original's bytes / those seconds, settle_ms included. Peak RSS is VmHWM from /proc/PID/status
(the daemon's whole life), and VmRSS/RssAnon/RssFile are sampled every 50 ms so that a peak can
be told apart (heap vs. file pages mapped). /proc/PID/io shows whether a copy was written
(write_bytes) and the report whether the file was normalized, split, and how many rows.

The baselines, in the same run, against the same sink, Debian tools only:
  - `iconv -f WINDOWS-1252 -t UTF-8 FILE > out.csv`: the conversion alone (not CSV-aware: the
    `;` stay, nothing is split);
  - the script a user would write instead: `iconv -f WINDOWS-1252 -t UTF-8 FILE | python3
    convert.py` (the csv module: `;` to `,`, quoted as needed, written in parts of at most
    max_upload_bytes, each with the header, since the API takes no more), then one `curl
    --parallel --parallel-max 4` uploading the parts (`-F file=@part;type=text/csv`);
  - for the clean file, the same script without iconv (the split alone), then curl;
  - for the 45 MB file, one `curl -F file=@...` (curl's time_total, median of 3).
"""
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import time
import unicodedata

import baselines
from common import (BenchTimeout, ScenarioError, cpu_seconds, make_folders, proc_status, spawn,
                    tail, terminate, wait_exit)

MAX_UPLOAD = 52_428_800          # the spec's default max_upload_bytes (50 MiB)
SMALL_BYTES = 45_000_000         # the fast-path file: under max_upload_bytes
RSS_TARGET_KIB = 20 * 1024
HEADER = ("Email", "First Name", "Last Name")
COLUMN_MAP = (("email", "Email"), ("first_name", "First Name"), ("last_name", "Last Name"))

# Every name encodes in Windows-1252; Š Ž š ž œ Œ Ÿ ’ only there (not in Latin-1).
FIRST = ["François", "Zoë", "Jürgen", "Åsa", "José", "Søren", "Léa", "Chloé", "Björn", "Inés",
         "Núria", "Maëlle", "Þóra", "Grégoire", "Šárka", "Žofie", "Élodie", "Anne; Marie",
         'Jean "JJ"', "Ana", "John", "Mary", "Peter", "Olga", "Ævar", "Œlla", "Ñico", "Ýrr"]
LAST = ["Müller", "Lefèvre", "Øvergård", "Núñez", "Çelik", "Groß", "Šimek", "Žák", "Cœur",
        "Weiß", "Ångström", "O'Brien", "Smith", "García", "Müller, Jr.", "Jönsson", "Dupont",
        "Brontë", "Fernández", "L’Écuyer", "Hernández-López", "Straße", "Ÿvette", "Köhler"]

CONVERT_PY = r'''# The baseline: CSV from stdin (UTF-8) to comma CSV parts of at most LIMIT bytes,
# each with the header: python3 convert.py DELIMITER OUTDIR LIMIT. Prints parts and rows.
import csv, io, os, sys
delim, outdir, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
class Line:
    def write(self, s):
        self.s = s
line = Line()
w = csv.writer(line, lineterminator="\n")
r = csv.reader(src, delimiter=delim)
w.writerow(next(r))
header = line.s.encode()
part = size = rows = 0
out = None
for row in r:
    w.writerow(row)
    b = line.s.encode()
    if out is None or size + len(b) > limit:
        if out:
            out.close()
        part += 1
        out = open(os.path.join(outdir, "part%03d.csv" % part), "wb", buffering=1 << 20)
        out.write(header)
        size = len(header)
    out.write(b)
    size += len(b)
    rows += 1
if out:
    out.close()
print(part, rows)
'''


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mb(n):
    return n / 1e6


# --- files ---------------------------------------------------------------------------------------

def _quote(s, delim):
    if delim in s or '"' in s or "\n" in s or "\r" in s:
        return '"' + s.replace('"', '""') + '"'
    return s


def _fold(s):
    a = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()
    return "".join(ch for ch in a if ch.isalnum()) or "x"


def generate(path_1252, path_utf8, path_small, target_bytes, small_bytes=SMALL_BYTES):
    """The three files: PATH_1252 of at least TARGET_BYTES (cut at a row end), PATH_UTF8 with
    the same rows, PATH_SMALL the first rows of PATH_UTF8 up to SMALL_BYTES. Emails are
    unique. Returns sizes, row counts and the md5 of each."""
    combos = [(f, ln) for ln in LAST for f in FIRST]
    loc, t1252, tutf = [], [], []
    for f, ln in combos:
        loc.append(f"{_fold(f)}.{_fold(ln)}.".encode())
        t1252.append((";" + _quote(f, ";") + ";" + _quote(ln, ";") + "\r\n").encode("cp1252"))
        tutf.append(("," + _quote(f, ",") + "," + _quote(ln, ",") + "\n").encode())
    nc = len(combos)
    h1252 = (";".join(HEADER) + "\r\n").encode("cp1252")
    hutf = (",".join(HEADER) + "\n").encode()
    out = {"rows": 0, "bytes_1252": len(h1252), "bytes_utf8": len(hutf), "small_rows": 0,
           "small_bytes": len(hutf), "accented_rows": 0}
    m1, mu, ms = hashlib.md5(h1252), hashlib.md5(hutf), hashlib.md5(hutf)
    accented = [any(ord(ch) > 127 for ch in f + ln) for f, ln in combos]
    small_open = True
    k = 0
    chunk = 20000
    with open(path_1252, "wb") as f1, open(path_utf8, "wb") as fu, open(path_small, "wb") as fs:
        f1.write(h1252)
        fu.write(hutf)
        fs.write(hutf)
        while out["bytes_1252"] < target_bytes:
            idx = [(j, (j * 7919) % nc) for j in range(k, k + chunk)]
            r1 = [b"%s%d@example.com%s" % (loc[c], j, t1252[c]) for j, c in idx]
            ru = [b"%s%d@example.com%s" % (loc[c], j, tutf[c]) for j, c in idx]
            b1 = b"".join(r1)
            if out["bytes_1252"] + len(b1) > target_bytes:
                # The last chunk: rows up to just past the target.
                n, size = 0, out["bytes_1252"]
                while size < target_bytes:
                    size += len(r1[n])
                    n += 1
                r1, ru, idx = r1[:n], ru[:n], idx[:n]
                b1 = b"".join(r1)
            bu = b"".join(ru)
            f1.write(b1)
            fu.write(bu)
            m1.update(b1)
            mu.update(bu)
            if small_open:
                if out["small_bytes"] + len(bu) <= small_bytes:
                    bs, ns = bu, len(ru)
                else:
                    ns, size = 0, out["small_bytes"]
                    while ns < len(ru) and size + len(ru[ns]) <= small_bytes:
                        size += len(ru[ns])
                        ns += 1
                    bs = b"".join(ru[:ns])
                    small_open = False
                fs.write(bs)
                ms.update(bs)
                out["small_bytes"] += len(bs)
                out["small_rows"] += ns
            out["bytes_1252"] += len(b1)
            out["bytes_utf8"] += len(bu)
            out["rows"] += len(r1)
            out["accented_rows"] += sum(1 for _, c in idx if accented[c])
            k += len(r1)
    out.update(md5_1252=m1.hexdigest(), md5_utf8=mu.hexdigest(), md5_small=ms.hexdigest())
    return out


def md5_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def count_lines(paths):
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                n += b.count(b"\n")
    return n


# --- /proc -------------------------------------------------------------------------------------

def _kib(st, key):
    v = st.get(key)
    return int(v.split()[0]) if v else None


def top_mappings(pid, n=6):
    """The N mappings of PID with the most resident memory: [(Rss KiB, Anonymous KiB, name)]
    from /proc/PID/smaps ([heap], a library, an anonymous arena, a mapped input file...)."""
    out = []
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    parts = line.split()
                    cur = [0, 0, parts[5] if len(parts) > 5 else "[anon]"]
                    out.append(cur)
                elif first == "Rss:" and cur is not None:
                    cur[0] = int(line.split()[1])
                elif first == "Anonymous:" and cur is not None:
                    cur[1] = int(line.split()[1])
    except OSError:
        return []
    merged = {}
    for rss, anon, name in out:
        m = merged.setdefault(name, [0, 0, name])
        m[0] += rss
        m[1] += anon
    return sorted((tuple(v) for v in merged.values()), reverse=True)[:n]


class RssSampler:
    """VmRSS (with its RssAnon/RssFile/RssShmem split) of PIDS at every sample(); keeps each
    one's peak sample and its last VmHWM. A new peak above SMAPS_KIB also records the biggest
    mappings (/proc/PID/smaps), at most every 0.5 s: where the memory is when it is high."""

    def __init__(self, pids, smaps_kib=None):
        self.pids = list(pids)
        self.peak = {p: None for p in self.pids}
        self.hwm = {p: None for p in self.pids}
        self.samples = 0
        self.smaps_kib = smaps_kib
        self._smaps_t = 0.0

    def sample(self):
        self.samples += 1
        for p in self.pids:
            st = proc_status(p)
            if not st:
                continue
            rss = _kib(st, "VmRSS")
            hwm = _kib(st, "VmHWM")
            if hwm is not None:
                self.hwm[p] = max(self.hwm[p] or 0, hwm)
            if rss is not None and (self.peak[p] is None or rss > self.peak[p]["VmRSS"]):
                self.peak[p] = {k: _kib(st, k) for k in ("VmRSS", "RssAnon", "RssFile",
                                                         "RssShmem", "VmSize")}
                self.peak[p]["Threads"] = int(st.get("Threads", "0") or 0)
                now = time.monotonic()
                if self.smaps_kib is not None and rss > self.smaps_kib and \
                        now - self._smaps_t > 0.5:
                    self._smaps_t = now
                    self.peak[p]["top_mappings"] = top_mappings(p)


def proc_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except (OSError, ValueError):
        pass
    return out


def thread_cpu(pid):
    """[(thread name, CPU seconds)] of PID's threads, busiest first."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        fields = data.rpartition(")")[2].split()
        out.append((comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")))
    return sorted(out, key=lambda x: -x[1])


def run_sampled(procs, deadline, what):
    """Waits for every Popen in PROCS, sampling VmHWM every 20-30 ms (not wait4's ru_maxrss:
    it holds the high-water mark of the forked driver the child was exec'd from). Returns
    (exit codes, {pid: peak sample}, {pid: hwm}); stops them all and raises BenchTimeout at
    DEADLINE."""
    s = RssSampler(p.pid for p in procs)
    codes = {}
    try:
        while len(codes) < len(procs):
            s.sample()
            for p in procs:
                if p.pid not in codes:
                    r = wait_exit(p, time.monotonic() + 0.01)
                    if r is not None:
                        codes[p.pid] = r[0]
            if time.monotonic() > deadline:
                raise BenchTimeout(what)
            time.sleep(0.02)
    finally:
        for p in procs:
            if p.returncode is None:
                terminate(p, grace=5)
    return [codes[p.pid] for p in procs], s.peak, s.hwm


def _outcome(folder, name):
    """(done|failed, end time, report path) once NAME and NAME.json are both in done/ or both
    in failed/; else None. The end: the later inode change time of the two (renames)."""
    for dd, where in ((folder.done, "done"), (folder.failed, "failed")):
        p, rp = os.path.join(dd, name), os.path.join(dd, name + ".json")
        try:
            t = max(os.stat(p).st_ctime_ns, os.stat(rp).st_ctime_ns) / 1e9
        except FileNotFoundError:
            continue
        return where, t, rp
    return None


def _read_json(path, tries=20):
    for _ in range(tries):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


def _restore(root, name, size, src):
    """Moves the generated file back to SRC from wherever the daemon left it under ROOT (the
    inbox, done/, failed/, a work directory); normalized copies are told apart by size."""
    found = []
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn == name or fn.startswith(name) and not fn.endswith((".json", ".rejects.csv")):
                p = os.path.join(dirpath, fn)
                try:
                    if os.path.getsize(p) == size:
                        found.append(p)
                except OSError:
                    pass
    if not found:
        raise ScenarioError(f"the original {name} ({size} bytes) is nowhere under {root} any "
                            "more; the cases after this one cannot use it")
    os.rename(sorted(found, key=lambda p: os.path.basename(p) != name)[0], src)


def _safe(tag, fn):
    """FN's result with status ok, or its failure as {status, error}: a baseline that fails
    leaves the other cases standing."""
    try:
        r = fn()
        r["status"] = "ok"
        return r
    except BenchTimeout as e:
        log(f"{tag}: timed out: {e}")
        return {"status": "timed out", "error": str(e)}
    except (ScenarioError, OSError, ValueError, subprocess.SubprocessError) as e:
        log(f"{tag}: error: {e}")
        return {"status": "error", "error": str(e)}


# --- the scenario --------------------------------------------------------------------------------

class Normalize:
    def __init__(self, bench):
        self.b = bench
        a = bench.args
        self.target = int((a.normalize_mb if a.normalize_mb else (100 if a.quick else 300))
                          * 1e6)
        self.repeat = 1 if a.quick else max(1, min(a.repeat, 3))
        self.data = None
        self.files = None
        self.config_notes = []

    # --- configuration --------------------------------------------------------------------

    def _config(self, root, folder):
        """The bench's usual settings, column_map for the Excel header, max_file_bytes 1 GiB
        (the old default of 200 MB would refuse the file), and max_upload_bytes 50 MiB when
        the binary has it (the spec's default, said explicitly)."""
        cfg = self.b.cfg
        folder_extra = ["    column_map:"] + [f'      {k}: "{v}"' for k, v in COLUMN_MAP]
        for extra in ([("max_file_bytes", 1073741824), ("max_upload_bytes", MAX_UPLOAD)],
                      [("max_file_bytes", 1073741824)]):
            path = os.path.join(root, "rdd.yaml")
            try:
                cfg.write(path, [folder], extra_defaults=extra, folder_extra=folder_extra)
            except ScenarioError as e:
                last = e
                continue
            if len(extra) == 1:
                note = ("max_upload_bytes refused by --check (a binary before issue 10); left "
                        "out")
                if note not in self.config_notes:
                    self.config_notes.append(note)
                    log("normalize: warning: " + note)
            return path
        raise last

    # --- resend-dropd ---------------------------------------------------------------------

    def _daemon_once(self, tag, src, expect):
        """SRC (a generated file) renamed into a running daemon's inbox; back to SRC after,
        from wherever it is (also after an error or a timeout)."""
        b = self.b
        if not os.path.exists(src):
            raise ScenarioError(f"{tag}: {src} is missing (lost by an earlier case)")
        root = b.fresh(tag)
        f = make_folders(root, 1)[0]
        cfg = self._config(root, f)
        name = os.path.basename(src)
        staging = os.path.join(root, "staging")
        os.makedirs(staging)
        staged = os.path.join(staging, name)
        os.rename(src, staged)
        size = os.path.getsize(staged)
        out = {"file": name, "bytes": size}
        d = None
        try:
            d = b.daemon(tag, cfg)
            d.wait_ready()
            time.sleep(0.2)
            b.quiet(tag)
            since = b.sink.log_offset()
            io0, cpu0 = proc_io(d.pid), cpu_seconds(d.pid)
            sampler = RssSampler([d.pid], smaps_kib=14 * 1024)
            meter = b.meter(d.pid)
            deadline = b.deadline()
            next_note = time.monotonic() + 30
            t0 = time.time()
            os.rename(staged, os.path.join(f.inbox, name))
            ends = None
            while ends is None:
                sampler.sample()
                ends = _outcome(f, name)
                if ends is not None:
                    break
                if not d.alive():
                    raise ScenarioError(f"the daemon exited with status {d.proc.returncode} "
                                        f"before {name} was done (see {b.daemon_log})")
                now = time.monotonic()
                if now > deadline:
                    n = len(b.sink.entries(since))
                    raise BenchTimeout(f"{name} was not in done/ or failed/ with its report "
                                       f"after {b.timeout:.0f} s ({n} requests had reached the "
                                       f"sink; see {b.daemon_log})", 0, 1)
                if now > next_note:
                    next_note += 30
                    pk = sampler.peak[d.pid] or {}
                    log(f"{tag}: {time.time() - t0:.0f} s, {len(b.sink.entries(since))} "
                        f"requests so far, daemon VmRSS at most {pk.get('VmRSS')} KiB")
                time.sleep(0.05)
            sampler.sample()
            out["interference"] = b.metered(tag, meter)
            where, t_end, report_path = ends
            out["original_in"] = where
            out["drop_done_s"] = t_end - t0
            out["mb_s"] = mb(size) / out["drop_done_s"]
            out["mb_s_net"] = mb(size) / max(1e-9, out["drop_done_s"] - b.settle_ms / 1000)
            out["cpu_s"] = cpu_seconds(d.pid) - cpu0
            out["rss_kib"] = d.peak_rss_kib()  # VmHWM: the daemon's whole life
            out["rss_peak_sample"] = sampler.peak[d.pid]
            out["top_mappings_at_end"] = top_mappings(d.pid, 4)
            out["rss_samples"] = sampler.samples
            io1 = proc_io(d.pid)
            out["io"] = {k: io1.get(k, 0) - io0.get(k, 0) for k in
                         ("rchar", "wchar", "read_bytes", "write_bytes",
                          "cancelled_write_bytes") if k in io1}
            out["threads_cpu_s"] = [(n, round(c, 2)) for n, c in thread_cpu(d.pid)[:6]]
            report = _read_json(report_path)
            # nginx logs a request when it is finished with it, a moment after its answer.
            parts = len((report or {}).get("parts") or []) or 1
            t_log = time.monotonic() + 2
            req = b.sink.entries(since)
            while len(req) < parts and time.monotonic() < t_log:
                time.sleep(0.05)
                req = b.sink.entries(since)
            out["requests"] = len(req)
            out["requests_201"] = sum(1 for e in req if e["status"] == 201)
            out["request_bytes"] = sum(e["length"] for e in req)
            if req:
                out["sink_first_s"] = min(e["msec"] for e in req) - t0
                out["sink_last_s"] = max(e["msec"] for e in req) - t0
        finally:
            if d is not None:
                out["exit"] = d.stop()
            restore_error = None
            try:
                _restore(root, name, size, src)
            except ScenarioError as e:
                log(f"{tag}: {e}")
                restore_error = e
        if restore_error:
            raise restore_error
        if where != "done":
            err = (report or {}).get("error") or report
            if isinstance(err, dict):
                err = f"{err.get('stage')}: {err.get('message')}"
            print(tail(b.daemon_log, 10), end="")
            raise ScenarioError(f"{name} went to {where}/ ({err})")
        out.update(self._checks(report, out, expect))
        if out.get("exit") != 0:
            out["problems"].append(f"the daemon exited {out.get('exit')} after SIGTERM")
        return out

    def _checks(self, report, out, expect):
        """What the report says, and whether it is what this file should give."""
        csvr = (report or {}).get("csv") or {}
        parts = (report or {}).get("parts") or []
        got = {"normalized": csvr.get("normalized"), "encoding_from": csvr.get("encoding_from"),
               "delimiter": csvr.get("delimiter"), "rows": csvr.get("rows"),
               "rows_uploaded": csvr.get("rows_uploaded"),
               "rows_rejected": csvr.get("rows_rejected"),
               "bytes_before": csvr.get("bytes_before"), "bytes_after": csvr.get("bytes_after"),
               "parts": len(parts) if parts else 1}
        problems = []
        if not csvr:
            problems.append("the report has no csv section")
        for k, v in expect.items():
            if csvr and got.get(k) != v:
                problems.append(f"{k}: {got.get(k)!r}, expected {v!r}")
        if csvr and got["rows_uploaded"] != expect.get("rows"):
            problems.append(f"rows_uploaded: {got['rows_uploaded']!r}, expected "
                            f"{expect.get('rows')!r}")
        if out["requests_201"] != out["requests"]:
            problems.append(f"{out['requests'] - out['requests_201']} requests not answered 201")
        if out["requests"] != got["parts"]:
            problems.append(f"{out['requests']} requests for {got['parts']} parts")
        if parts and csvr.get("bytes_after") and any(
                (p.get("bytes") or 0) > MAX_UPLOAD for p in parts):
            problems.append("a part is bigger than max_upload_bytes")
        return {"report": got, "problems": problems}

    def _daemon(self, tag, src, expect):
        """The median of --repeat runs (at most 3). A run that fails ends this case (recorded
        with its error) but not the scenario: the other cases and the baselines still run."""
        runs = []
        for i in range(self.repeat):
            try:
                r = self.b.quietest(tag, lambda: self._daemon_once(tag, src, expect))
            except BenchTimeout as e:
                log(f"{tag}: timed out: {e}")
                return {"status": "timed out", "error": str(e)}
            except ScenarioError as e:
                log(f"{tag}: error: {e}")
                return {"status": "error", "error": str(e)}
            log(f"{tag}: {mb(r['bytes']):.0f} MB drop->done {r['drop_done_s']:.2f} s "
                f"({r['mb_s']:.1f} MB/s), {r['requests']} requests, peak RSS "
                f"{r['rss_kib'] / 1024:.1f} MiB, CPU {r['cpu_s']:.1f} s, wrote "
                f"{mb(r.get('io', {}).get('write_bytes', 0)):.0f} MB"
                + (f"; PROBLEMS: {'; '.join(r['problems'])}" if r["problems"] else ""))
            runs.append(r)
        runs.sort(key=lambda r: r["drop_done_s"])
        med = dict(runs[len(runs) // 2])
        med["runs_drop_done_s"] = [r["drop_done_s"] for r in runs]
        med["rss_kib_max"] = max(r["rss_kib"] for r in runs)
        med["problems"] = sorted({p for r in runs for p in r["problems"]})
        med["status"] = "ok"
        return med

    # --- baselines ------------------------------------------------------------------------

    def _script(self, tag, src, delim, use_iconv):
        """[iconv |] python3 convert.py, then curl --parallel over the parts."""
        b = self.b
        root = b.fresh(tag)
        parts_dir = os.path.join(root, "parts")
        done_dir = os.path.join(root, "done")
        os.makedirs(parts_dir)
        os.makedirs(done_dir)
        script = os.path.join(root, "convert.py")
        with open(script, "w") as fh:
            fh.write(CONVERT_PY)
        out_path = os.path.join(b.logdir, f"{tag}.out")
        b.quiet(tag)
        meter = b.meter()
        deadline = b.deadline()
        t0 = time.monotonic()
        with open(out_path, "wb") as outf, open(out_path[:-4] + ".err", "wb") as errf:
            argv_py = ["python3", script, delim, parts_dir, str(MAX_UPLOAD)]
            if use_iconv:
                ic = spawn(["iconv", "-f", "WINDOWS-1252", "-t", "UTF-8", src],
                           stdout=subprocess.PIPE, stderr=errf)
                py = spawn(argv_py, stdin=ic.stdout, stdout=outf, stderr=errf)
                ic.stdout.close()
                procs = [ic, py]
            else:
                with open(src, "rb") as inp:
                    py = spawn(argv_py, stdin=inp, stdout=outf, stderr=errf)
                procs = [py]
            codes, peaks, hwm = run_sampled(procs, deadline, f"{tag}: the conversion")
        t_conv = time.monotonic() - t0
        if any(codes):
            raise ScenarioError(f"{tag}: exit statuses {codes}:\n{tail(out_path[:-4] + '.err')}")
        with open(out_path) as fh:
            n_parts, n_rows = (int(x) for x in fh.read().split())
        parts = sorted(os.path.join(parts_dir, p) for p in os.listdir(parts_dir))
        up = baselines.curl_parallel(parts, b.sink.url, done_dir, root, b.logdir, deadline)
        total = time.monotonic() - t0
        r = {"interference": b.metered(tag, meter), "total_s": total, "convert_s": t_conv,
             "curl_s": up["curl_s"], "mv_s": up["mv_s"], "parts": n_parts, "rows": n_rows,
             "bytes": os.path.getsize(src), "mb_s": mb(os.path.getsize(src)) / total,
             "convert_mb_s": mb(os.path.getsize(src)) / t_conv,
             "rss_kib": {("iconv" if p is procs[0] and use_iconv else "python3"): hwm[p.pid]
                         for p in procs},
             "rss_peak_sample": {("iconv" if p is procs[0] and use_iconv else "python3"):
                                 peaks[p.pid] for p in procs}}
        moved = [os.path.join(done_dir, os.path.basename(p)) for p in parts]
        r["uploaded_bytes"] = sum(os.path.getsize(p) for p in moved)
        r["lines_check"] = count_lines(moved) == n_rows + n_parts
        return r

    def _iconv_alone(self, tag, src):
        b = self.b
        root = b.fresh(tag)
        dst = os.path.join(root, "utf8.csv")
        b.quiet(tag)
        meter = b.meter()
        t0 = time.monotonic()
        with open(dst, "wb") as outf, open(os.path.join(b.logdir, f"{tag}.err"), "wb") as errf:
            p = spawn(["iconv", "-f", "WINDOWS-1252", "-t", "UTF-8", src], stdout=outf,
                      stderr=errf)
            codes, peaks, hwm = run_sampled([p], b.deadline(), f"{tag}: iconv")
        t = time.monotonic() - t0
        if codes[0] != 0:
            raise ScenarioError(f"{tag}: iconv exited {codes[0]}")
        size = os.path.getsize(src)
        return {"interference": b.metered(tag, meter), "seconds": t, "bytes": size,
                "bytes_out": os.path.getsize(dst), "mb_s": mb(size) / t,
                "rss_kib": hwm[p.pid], "rss_peak_sample": peaks[p.pid]}

    def _curl_small(self, src):
        self.b.quiet("normalize-curl-small")
        ts = [baselines.curl_single(src, self.b.sink.url) for _ in range(3)]
        t = statistics.median(ts)
        return {"samples_s": ts, "seconds": t, "bytes": os.path.getsize(src),
                "mb_s": mb(os.path.getsize(src)) / t}

    # --- all of it ------------------------------------------------------------------------

    def run(self):
        b = self.b
        need = 7 * self.target + (1 << 30)
        free = shutil.disk_usage(b.workdir).free
        if free < need:
            raise ScenarioError(f"normalize: {free / 1e9:.1f} GB free in {b.workdir}, "
                                f"{need / 1e9:.1f} GB needed (files, copies, baseline output)")
        self.data = os.path.join(b.fresh("normalize-files"), "files")
        os.makedirs(self.data)
        p1252 = os.path.join(self.data, "export-1252.csv")
        putf = os.path.join(self.data, "export-utf8.csv")
        psmall = os.path.join(self.data, "export-utf8-45mb.csv")
        log(f"normalize: writing a {mb(self.target):.0f} MB Windows-1252 ';' file, the same "
            f"rows as UTF-8 ',', and its first {mb(SMALL_BYTES):.0f} MB")
        t = time.monotonic()
        g = generate(p1252, putf, psmall, self.target)
        os.sync()
        log(f"normalize: {g['rows']:,} rows ({g['accented_rows']:,} with accents), "
            f"{g['bytes_1252']:,} / {g['bytes_utf8']:,} / {g['small_bytes']:,} bytes in "
            f"{time.monotonic() - t:.0f} s")
        out = {"files": g, "max_upload_bytes": MAX_UPLOAD, "repeat": self.repeat}
        # The sink must take a 50 MiB part (client_max_body_size 128m; checked, not assumed).
        b.sink.verify_reads_body(big_bytes=MAX_UPLOAD + 1_000_000)
        # resend-dropd
        out["dropd_1252"] = self._daemon(
            "normalize-1252", p1252,
            {"normalized": True, "encoding_from": "windows-1252", "delimiter": ";",
             "rows": g["rows"], "rows_rejected": 0, "bytes_before": g["bytes_1252"]})
        if out["dropd_1252"]["status"] == "ok":
            out["original_kept"] = md5_file(p1252) == g["md5_1252"]
        out["dropd_utf8"] = self._daemon(
            "normalize-utf8", putf,
            {"encoding_from": "utf-8", "delimiter": ",", "rows": g["rows"],
             "rows_rejected": 0, "bytes_before": g["bytes_utf8"]})
        out["dropd_small"] = self._daemon(
            "normalize-fast", psmall,
            {"normalized": False, "encoding_from": "utf-8", "delimiter": ",",
             "rows": g["small_rows"], "rows_rejected": 0, "bytes_before": g["small_bytes"]})
        # the baselines
        out["iconv"] = _safe("normalize-iconv", lambda: self._iconv_alone("normalize-iconv",
                                                                          p1252))
        if out["iconv"]["status"] == "ok":
            log(f"normalize: iconv alone {out['iconv']['seconds']:.2f} s "
                f"({out['iconv']['mb_s']:.0f} MB/s), peak RSS "
                f"{(out['iconv']['rss_kib'] or 0) / 1024:.1f} MiB")
        out["script_1252"] = _safe("normalize-script-1252", lambda: self._script(
            "normalize-script-1252", p1252, ";", True))
        out["script_utf8"] = _safe("normalize-script-utf8", lambda: self._script(
            "normalize-script-utf8", putf, ",", False))
        for k in ("script_1252", "script_utf8"):
            s = out[k]
            if s["status"] != "ok":
                continue
            log(f"normalize: {k}: {s['total_s']:.2f} s ({s['mb_s']:.1f} MB/s): convert "
                f"{s['convert_s']:.2f} s, curl {s['curl_s']:.2f} s, {s['parts']} parts, "
                f"{s['rows']:,} rows; peak RSS " + ", ".join(
                    f"{n} {v / 1024:.1f} MiB" for n, v in s["rss_kib"].items() if v))
            if s["rows"] != g["rows"] or not s["lines_check"]:
                s["status"] = "error"
                s["error"] = f"the script wrote {s['rows']} rows, not {g['rows']}"
                log(f"normalize: {k}: {s['error']}")
        out["curl_small"] = _safe("normalize-curl-small", lambda: self._curl_small(psmall))
        if out["curl_small"]["status"] == "ok":
            log(f"normalize: curl -F of the {mb(SMALL_BYTES):.0f} MB file "
                f"{out['curl_small']['seconds']:.3f} s (median of 3)")
        out["config_notes"] = self.config_notes
        cases = ("dropd_1252", "dropd_utf8", "dropd_small")
        peaks = [out[k]["rss_kib_max"] for k in cases if out[k]["status"] == "ok"]
        if peaks:
            out["rss_kib"] = max(peaks)
            out["met"] = out["rss_kib"] < RSS_TARGET_KIB
        out["problems"] = [f"{k}: {p}" for k in cases for p in out[k].get("problems", [])]
        out["problems"] += [f"{k}: {out[k]['status']}: {out[k]['error']}" for k in cases
                            if out[k]["status"] != "ok"]
        out["problems"] += [f"{k}: {out[k]['status']}: {out[k]['error']}" for k in
                            ("iconv", "script_1252", "script_utf8", "curl_small")
                            if out[k]["status"] != "ok"]
        if out["dropd_1252"]["status"] == "ok" and not out["original_kept"]:
            out["problems"].append("dropd_1252: the original in done/ differs from what was "
                                   "dropped")
        return out


# --- the table ----------------------------------------------------------------------------------

def _mib(kib):
    return "—" if not kib else f"{kib / 1024:.1f} MiB"


def _yesno(ok):
    return "—" if ok is None else ("**yes**" if ok else "**NO**")


def _failed(r):
    return r.get("status") != "ok"


def _dropd_cell(r):
    if _failed(r):
        return f"{r.get('status')}: " + r.get("error", "")[:160].replace("\n", " ").replace(
            "|", "\\|")
    rep = r.get("report", {})
    runs = r.get("runs_drop_done_s") or []
    med = f", median of {len(runs)}" if len(runs) > 1 else ""
    what = ("normalized copy" if rep.get("normalized") else
            "original uploaded" if rep.get("normalized") is False else "normalized: ?")
    return (f"**{r['mb_s']:.1f} MB/s** ({r['drop_done_s']:.2f} s drop→done{med}; "
            f"{r['mb_s_net']:.1f} MB/s without settle_ms); "
            f"{what}, {rep.get('parts')} part(s), {r['requests']} requests"
            + (f" (the first {r['sink_first_s']:.2f} s after the drop)" if "sink_first_s" in r
               else "") +
            f"; CPU {r['cpu_s']:.1f} s (busiest thread {_busiest(r):.1f} s); wrote "
            f"{mb(r.get('io', {}).get('write_bytes', 0)):.0f} MB")


def _busiest(r):
    t = r.get("threads_cpu_s") or []
    return t[0][1] if t else 0.0


def _rss_cell(r):
    if _failed(r):
        return "—"
    s = r.get("rss_peak_sample") or {}
    split = (f" (at the peak sample: anon {_mib(s.get('RssAnon'))}, file "
             f"{_mib(s.get('RssFile'))})" if s else "")
    return _mib(r.get("rss_kib_max") or r.get("rss_kib")) + split


def normalize_table(res):
    """The scenario's own table (its columns are not the main table's)."""
    if not res:
        return ""
    head = ["scenario", "resend-dropd", "dropd peak RSS (VmHWM)", "baseline", "baseline peak RSS",
            "dropd / baseline (MB/s)", "target", "met"]
    rows = []
    if res.get("status") != "ok":
        err = res.get("error", "") if res.get("status") == "error" else \
            f"timed out: {res.get('error', '')}"
        rows.append(["normalize", err[:200].replace("\n", " "), "—", "—", "—", "—",
                     "peak RSS < 20 MiB", "—"])
    else:
        g = res["files"]
        d1, du, ds = res["dropd_1252"], res["dropd_utf8"], res["dropd_small"]
        s1, su, ic, cs = res["script_1252"], res["script_utf8"], res["iconv"], res["curl_small"]

        def script_cell(s, first):
            if _failed(s):
                return _dropd_cell(s)
            return (f"{s['mb_s']:.1f} MB/s ({s['total_s']:.2f} s: {first} "
                    f"{s['convert_s']:.2f} s, curl --parallel-max 4 of {s['parts']} parts "
                    f"{s['curl_s']:.2f} s)")

        def rss_split(sample):
            if not sample or not sample.get("RssFile"):
                return ""
            return (f" (anon {_mib(sample.get('RssAnon'))}, file "
                    f"{_mib(sample.get('RssFile'))})")

        def script_rss(s):
            if _failed(s):
                return "—"
            return ", ".join(f"{n} {_mib(v)}{rss_split(s['rss_peak_sample'].get(n))}"
                             for n, v in s["rss_kib"].items())

        def ratio(d, base, nd=1):
            return "—" if _failed(d) or _failed(base) else f"{d['mb_s'] / base['mb_s']:.{nd}f}×"

        def met(d, extra=True):
            return _yesno(None if _failed(d) else d["rss_kib_max"] < RSS_TARGET_KIB and extra)

        rows.append([f"{mb(g['bytes_1252']):.0f} MB Windows-1252 `;` CRLF, {g['rows']:,} rows "
                     f"→ UTF-8 `,`", _dropd_cell(d1), _rss_cell(d1),
                     script_cell(s1, "iconv \\| python3 csv →"), script_rss(s1),
                     ratio(d1, s1), "peak RSS < 20 MiB", met(d1)])
        rows.append(["the conversion alone: `iconv -f WINDOWS-1252 -t UTF-8` (not CSV-aware)",
                     "—", "—", _dropd_cell(ic) if _failed(ic) else
                     f"{ic['mb_s']:.0f} MB/s ({ic['seconds']:.2f} s)",
                     "—" if _failed(ic) else
                     _mib(ic["rss_kib"]) + rss_split(ic.get("rss_peak_sample")),
                     ratio(d1, ic, 2), "—", "—"])
        split = "over max_upload_bytes: split" if g["bytes_utf8"] > MAX_UPLOAD else "one part"
        rows.append([f"{mb(g['bytes_utf8']):.0f} MB UTF-8 `,`, same rows (clean; {split})",
                     _dropd_cell(du), _rss_cell(du),
                     script_cell(su, "python3 csv split"), script_rss(su),
                     ratio(du, su), "peak RSS < 20 MiB", met(du)])
        rows.append([f"{mb(g['small_bytes']):.0f} MB UTF-8 `,` (under max_upload_bytes: the "
                     f"fast path)", _dropd_cell(ds), _rss_cell(ds),
                     _dropd_cell(cs) if _failed(cs) else
                     f"{cs['mb_s']:.0f} MB/s (`curl -F`, {cs['seconds']:.3f} s, median of 3)",
                     "—", ratio(ds, cs, 2), "peak RSS < 20 MiB; original uploaded",
                     met(ds, ds.get("report", {}).get("normalized") is False)])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    if res.get("status") == "ok":
        notes.append("MB/s: the original file's bytes (10^6) / seconds from the rename into the "
                     "inbox to done/ (settle_ms included), or the baseline's whole run; files "
                     "read from the page cache. Parts: max_upload_bytes 50 MiB. \"wrote\": "
                     "/proc/PID/io write_bytes of the daemon (the copy and the email-repeat "
                     "spill files, all unnamed temporary files: cancelled_write_bytes in the "
                     "details says how much never reached the disk).")
        if res.get("problems"):
            notes.append("**Report checks that failed:** " + "; ".join(res["problems"]) + ".")
        else:
            notes.append("Report checks: every run's report matched (encoding, delimiter, rows, "
                         "no rejects, one 201 per part), and the original stayed byte for byte.")
        for n in res.get("config_notes", []):
            notes.append("Note: " + n + ".")
    return "\n".join(out) + ("\n\n" + "\n".join(notes) if notes else "")
