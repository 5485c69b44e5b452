"""What a user would do without resend-dropd: curl --parallel over the files (then mv), and the
operator's inotifywait | while read; curl && mv shell loop."""
import os
import subprocess
import time

from common import (BenchTimeout, ScenarioError, child_env, count_entries, group_members,
                    latest_ctime, spawn, terminate, wait_until)


def _q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_parallel(paths, url, done_dir, workdir, logdir, deadline, max_parallel=4):
    """One curl process, one multipart POST per file, at most MAX_PARALLEL at once; then every
    file moved to DONE_DIR with one mv. Returns seconds for curl alone and for the mv."""
    cfg = os.path.join(workdir, "curl-parallel.cfg")
    with open(cfg, "w") as f:
        for i, p in enumerate(paths):
            if i:
                f.write("next\n")  # between entries only: a trailing one is an empty group
            f.write(f"url = {_q(url + '/contacts/imports')}\n"
                    f"form = {_q('file=@' + p + ';type=text/csv')}\n"
                    'form = "on_conflict=upsert"\n'
                    'header = "Authorization: Bearer x"\n'
                    'output = "/dev/null"\n'
                    'write-out = "%{http_code} %{errormsg}\\n"\n')
    out_path = os.path.join(logdir, "curl-parallel.out")
    # curl 7.88 draws its --parallel progress meter even with -s: stderr goes apart.
    with open(out_path, "wb") as out, open(out_path[:-4] + ".err", "wb") as err:
        t0 = time.monotonic()
        proc = spawn(["curl", "-sS", "--parallel", "--parallel-max", str(max_parallel), "-K", cfg],
                     stdout=out, stderr=err)
        code = None
        try:
            while code is None:
                code = proc.poll()
                if code is None:
                    if time.monotonic() > deadline:
                        raise BenchTimeout("curl --parallel")
                    time.sleep(0.005)
        finally:
            terminate(proc, grace=5)
        t_curl = time.monotonic() - t0
    with open(out_path) as f:
        codes = [line.split(" ", 1)[0] for line in f]
    ok = codes.count("201")
    if code != 0 or ok != len(paths):
        raise ScenarioError(f"curl exited {code}; {ok} of {len(paths)} answered 201 "
                            f"(see {out_path})")
    t1 = time.monotonic()
    r = subprocess.run(["mv", "-t", done_dir, "--"] + list(paths), env=child_env(),
                       capture_output=True, text=True, timeout=max(10, deadline - t1))
    t_mv = time.monotonic() - t1
    if r.returncode != 0:
        raise ScenarioError(f"mv failed: {r.stderr}")
    return {"files": len(paths), "curl_s": t_curl, "mv_s": t_mv, "ok": ok}


def curl_single(path, url):
    """curl's own time_total for one multipart upload of PATH."""
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                        "-H", "Authorization: Bearer x", "-F", f"file=@{path};type=text/csv",
                        "-F", "on_conflict=upsert", url + "/contacts/imports"],
                       capture_output=True, text=True, env=child_env(), timeout=600)
    parts = r.stdout.split()
    if r.returncode != 0 or len(parts) != 2 or parts[0] != "201":
        raise ScenarioError(f"curl upload of {path} failed: {r.stdout} {r.stderr}")
    return float(parts[1])


SCRIPT = r'''inotifywait -m -e close_write,moved_to --format '%w%f' "$1" 2>"$4" |
while read -r f; do
    curl -s -o /dev/null -F "file=@$f;type=text/csv" -F on_conflict=upsert \
        -H "Authorization: Bearer x" "$3/contacts/imports" && mv "$f" "$2"/
done
'''


class ScriptWatchers:
    """One `inotifywait -m | while read; curl && mv` loop per folder, each in its own process
    group so that stopping it takes the pipeline (and any curl it is running) along."""

    def __init__(self, folders, url, logdir):
        self.folders = folders
        self.url = url
        self.logdir = logdir
        self.procs = []

    def start(self, timeout=20):
        script = os.path.join(self.logdir, "operator-script.sh")
        with open(script, "w") as f:
            f.write(SCRIPT)
        errlogs = []
        for fo in self.folders:
            err = os.path.join(self.logdir, f"script-{fo.name}.inotifywait.log")
            errlogs.append(err)
            self.procs.append(spawn(["bash", script, fo.inbox, fo.done, self.url, err],
                                    new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for err in errlogs:
            while True:
                try:
                    with open(err) as f:
                        if "Watches established" in f.read():
                            break
                except FileNotFoundError:
                    pass
                if time.monotonic() > deadline:
                    raise ScenarioError(f"inotifywait did not start ({err})")
                time.sleep(0.02)
        return self

    def stop(self):
        """Gracefully: inotifywait ends, so the loop reads EOF, finishes and every process is
        reaped up the chain (their CPU time then counts as the bench's own); the process
        group is killed only if that does not happen within a few seconds."""
        for p in self.procs:
            for pid in group_members(p.pid, "inotifywait"):
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            terminate(p, grace=5, group=True)
        self.procs = []


def script_burst(folders, staged, url, logdir, deadline, meter_factory=None):
    """STAGED: (staging path, folder index) in drop order. Times the first rename until every
    file is in a done directory. METER_FACTORY: started right before the drop; the meter comes
    back as "meter", to be stopped by the caller (everything has been reaped by then)."""
    w = ScriptWatchers(folders, url, logdir).start()
    meter = None
    try:
        time.sleep(0.2)
        meter = meter_factory() if meter_factory else None
        names = [os.path.basename(p) for p, _ in staged]
        t0 = time.time()
        for (p, k), name in zip(staged, names):
            os.rename(p, os.path.join(folders[k].inbox, name))
        t_dropped = time.time()
        done = [f.done for f in folders]
        try:
            wait_until(lambda: count_entries(done), len(staged), deadline)
        except BenchTimeout as e:
            e.extra = {"drop_s": t_dropped - t0}
            raise
        t_end = max(latest_ctime(done, ".csv"), t_dropped)
        out = {"files": len(staged), "total_s": t_end - t0, "drop_s": t_dropped - t0}
    finally:
        w.stop()
    out["meter"] = meter
    return out
