"""The Debian package under a real systemd: a container (systemd-nspawn, systemd as PID 1, see
container_harness.py) on a copy of this host, the package built by scripts/package and installed
with dpkg -i, a fake Resend API on the host's loopback.

One container for the module, booted once; the package is built once (about a minute;
RDD_TEST_DEB=path/to.deb uses one built before), then every test leaves the service running on
the module's configuration, with the fake's fault queue empty. The purge runs last. Skips,
saying why, where a container cannot boot (not root, no systemd-nspawn, no overlay of /, no
'running' within 30 s). CTest runs it alone (RUN_SERIAL): it builds the package.
"""

import hashlib
import os
import re
import shutil
import sys
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from container_harness import (API_KEY, API_KEY_PATH, CONFIG, DROP_ROOT, UNIT,  # noqa: E402
                               USER, boot, build_deb, host_state, log_ids,
                               skip_unless_possible)

SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
FAKE_DIR = os.path.join(SOURCE_DIR, "tests", "fake_resend")
if FAKE_DIR not in sys.path:
    sys.path.insert(0, FAKE_DIR)
from fakeapi import FakeResend  # noqa: E402

BUDGET = 600                 # seconds, from the package's install to the end of the module
WAIT = 30                    # a file to done/, a unit to a state
WATCHDOG_WAIT = 70           # WatchdogSec=30s, then RestartSec=10s: about 40 s at worst
IDS = log_ids()
STATUS_TEXT = re.compile(r"^(\d+) folders?, (\d+) waiting, (\d+) uploading, (\d+) following")


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    skip_unless_possible()
    return build_deb(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def fake():
    with FakeResend(import_seconds=0.2) as f:
        yield f


README = os.path.join(SOURCE_DIR, "README.md")
CHECKOUT = "/root/resend-dropd"   # where the README's commands run in the container


def readme_service_block():
    """The README's "As a service" commands: the first sh block of that section, continuation
    lines joined."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## As a service\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ctr(deb, fake):
    """The container with the package where the README's `./scripts/package` leaves it; not
    installed (the README's commands install it)."""
    before = host_state()
    with boot("rdd-svc") as c:
        c.set_budget(BUDGET)
        inside = f"{CHECKOUT}/build/package/{os.path.basename(deb)}"
        os.makedirs(c.path(os.path.dirname(inside)), exist_ok=True)
        shutil.copyfile(deb, c.path(inside))
        yield c
    assert host_state() == before, "the container changed the host"


@pytest.fixture(scope="module")
def installed(ctr):
    """The README's "As a service" block run as written, command by command, in a shell in the
    checkout: all but `./scripts/package` (the fixture built the package and put it where that
    command leaves it) and the key, which is the fake's. What each printed, and the state of
    the unit between the install and the start, for the test below."""
    steps = []
    for command in readme_service_block():
        if command.split("#")[0].strip() == "./scripts/package":
            steps.append((command, None))
            continue
        if command.startswith("systemctl enable"):
            steps.append(("(before it)", ctr.service("ActiveState", "UnitFileState")))
        run = command.replace("'re_...'", f"'{API_KEY}'")
        p = ctr.run(["bash", "-c", f"cd {CHECKOUT} && {run}"], check=False, timeout=120)
        assert p.returncode == 0, (f"README step failed: {command}\n{p.stdout}{p.stderr}"
                                   f"{ctr.explain()}")
        steps.append((command, p))
    return steps


@pytest.fixture(scope="module")
def configured(ctr, installed, fake):
    """After the README's steps: two folders of the tests' own (news, crm) and a configuration
    pointing at the fake, in force (restarted)."""
    for name in ("news", "crm"):
        ctr.make_folder(name)
    ctr.write_config(fake.url)
    ctr.systemctl("reset-failed", UNIT, check=False)
    ctr.systemctl("restart", UNIT, timeout=30)
    return ctr


@pytest.fixture
def running(configured, fake):
    """The service running (whatever the test before did to it), the fake without faults."""
    ctr = configured
    fake.clear_faults()
    if ctr.service("ActiveState")["ActiveState"] != "active":
        ctr.systemctl("reset-failed", UNIT, check=False)
        ctr.systemctl("start", UNIT)
    yield ctr
    fake.clear_faults()


def unique_csv(rows=2):
    tag = uuid.uuid4().hex[:12]
    body = "".join(f"user{i}-{tag}@example.com,User {i}\n" for i in range(rows))
    return f"c-{tag}.csv", "email,first_name\n" + body


def timespan(text):
    """Seconds of a systemd time span as `systemctl show` prints it ("1min 30s", "45s")."""
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(h|min|ms|us|s)", text))


def wait_done(ctr, folder, name):
    """The file in done/ with its report (and nowhere else); the report."""
    ctr.wait_for(lambda: folder.where(name) == ["done"] and folder.report(name),
                 WAIT, f"{folder.name}/{name} in done/ with its report")
    return folder.report(name)


def upload_of(fake, content):
    """The fake's record of the upload of `content` (by its sha256), or None."""
    digest = hashlib.sha256(content.encode()).hexdigest()
    for record in fake.requests():
        if record["method"] == "POST" and (record.get("file") or {}).get("sha256") == digest:
            return record
    return None


def test_the_readmes_service_block_works_as_written(ctr, installed):
    commands = [c for c, _ in installed if c != "(before it)"]
    assert commands[0].startswith("./scripts/package"), commands
    assert any(c.startswith("apt-get install -y ./build/package/resend-dropd_") for c in commands)
    # Installed, neither enabled nor started before `systemctl enable --now`: the
    # configuration and the key come first.
    [before] = [p for c, p in installed if c == "(before it)"]
    assert before == {"ActiveState": "inactive", "UnitFileState": "disabled"}, before
    # `resend-dropd --check` as root, with the example configuration and the key file.
    [check] = [p for c, p in installed if c.startswith("resend-dropd --check")]
    assert "configuration OK: 2 folders: newsletter" in check.stdout, check.stdout
    state = ctr.service("ActiveState", "UnitFileState")
    assert state == {"ActiveState": "active", "UnitFileState": "enabled"}, ctr.explain()
    [status] = [p for c, p in installed if c.startswith("resend-dropd status")]
    rows = {line.split()[0]: line.split()[-1] for line in status.stdout.splitlines()[3:]
            if line.strip() and not line.startswith("FOLDER")}
    assert rows == {"newsletter": "running", "crm-export": "running"}, status.stdout
    # The README's later examples: the ledger's backup and query, the history as JSON for jq.
    ctr.run(["bash", "-c", "apt-get install -y sqlite3 jq >/dev/null && sqlite3 "
             "/var/lib/resend-dropd/ledger.sqlite \".backup /var/backups/resend-dropd-ledger-"
             "$(date +%F).sqlite\" && ls /var/backups/resend-dropd-ledger-*.sqlite"])
    ctr.run(["bash", "-c", "resend-dropd history --json --failed | jq -r '.file + \": \" + "
             ".error'"])


def test_the_unit_starts_and_reports_ready_and_its_status(configured):
    ctr = configured
    ctr.systemctl("stop", UNIT)
    assert ctr.service("ActiveState")["ActiveState"] == "inactive"
    mark = ctr.mark()

    # Type=notify: start returns once the daemon sent READY=1.
    ctr.systemctl("start", UNIT, timeout=30)
    assert ctr.systemctl("is-active", UNIT, check=False).stdout.strip() == "active"
    state = ctr.service()
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    match = STATUS_TEXT.match(state["StatusText"])
    assert match and match.group(1) == "2", f"StatusText={state['StatusText']!r}{ctr.explain()}"

    def logged():
        # journald may write the daemon's entries a moment after systemd's "Started".
        entries = ctr.journal(UNIT, after=mark)
        return [e for e in entries if e.get("MESSAGE_ID") == IDS["STARTED"]]

    # The daemon said it started (its MESSAGE_ID), as the service user, with the key from the
    # unit's credential (the configuration names none).
    started = ctr.wait_for(logged, 10, "the 'started' entry")
    assert [e["_PID"] for e in started] == [state["MainPID"]], ctr.explain()
    assert started[0]["_UID"] == str(ctr.uid(USER)[0]), started
    assert started[0]["MESSAGE"].endswith("the API key is from the systemd credential 'api_key'"), \
        started


def test_a_dropped_file_is_imported(running, fake):
    ctr = running
    news, crm = ctr.folders["news"], ctr.folders["crm"]
    # One written by root from outside, one by the service user inside; both under a
    # temporary name, then renamed.
    name1, content1 = unique_csv()
    news.drop(name1, content1)
    name2, content2 = unique_csv(rows=3)
    crm.drop_as(USER, name2, content2)

    for folder, name, content, rows in ((news, name1, content1, 2), (crm, name2, content2, 3)):
        report = wait_done(ctr, folder, name)
        upload = upload_of(fake, content)
        assert upload and upload["status"] == 201, f"no upload of {name}:{ctr.explain()}"
        import_id = upload["answer"]["id"]
        why = f"{report}{ctr.explain()}"
        assert report["folder"] == folder.name and report["file"] == name, why
        assert report["outcome"] == "done" and report["import_id"] == import_id, why
        assert report["sha256"] == hashlib.sha256(content.encode()).hexdigest(), why
        assert report["import"]["status"] == "completed", why
        assert report["import"]["counts"]["total"] == rows, why
        assert folder.where(name) == ["done"]
    # The report is the service user's, readable by its group only (UMask=0027).
    st = os.stat(news.host(news.done, name1 + ".json"))
    assert (st.st_uid, st.st_mode & 0o777) == (ctr.uid(USER)[0], 0o640)


def test_journal_fields_find_a_file(running, fake):
    ctr = running
    news, crm = ctr.folders["news"], ctr.folders["crm"]
    name, content = unique_csv()
    other, other_content = unique_csv()
    news.drop(name, content)
    crm.drop(other, other_content)
    wait_done(ctr, news, name)
    wait_done(ctr, crm, other)
    import_id = upload_of(fake, content)["answer"]["id"]

    def entries():
        return [e for e in ctr.journal(UNIT, RDD_FOLDER="news") if e.get("RDD_FILE") == name]

    found = ctr.wait_for(entries, 10, f"journal entries with RDD_FOLDER=news RDD_FILE={name}")
    done = [e for e in found if e.get("MESSAGE_ID") == IDS["FILE_DONE"]]
    assert len(done) == 1, f"{found}{ctr.explain()}"
    entry = done[0]
    why = f"{entry}{ctr.explain()}"
    assert entry["RDD_IMPORT_ID"] == import_id, why
    assert entry["RDD_OUTCOME"] == "done", why
    assert entry["_SYSTEMD_UNIT"] == f"{UNIT}.service", why
    assert name in entry["MESSAGE"] and import_id in entry["MESSAGE"], why
    # The folder's field selects: the other folder's file is not among news's entries.
    assert not [e for e in ctr.journal(UNIT, RDD_FOLDER="news") if e.get("RDD_FILE") == other]
    assert [e for e in ctr.journal(UNIT, RDD_FOLDER="crm") if e.get("RDD_FILE") == other], \
        ctr.explain()


def test_status_command_shows_the_folders(running):
    ctr = running
    pid = ctr.service("MainPID")["MainPID"]
    p = ctr.run(["resend-dropd", "status"])
    why = f"{p.stdout}{ctr.explain()}"
    assert f"(pid {pid}), running" in p.stdout, why
    table = {line.split()[0]: line.split() for line in p.stdout.splitlines() if line.strip()}
    for name in ("news", "crm"):
        assert name in table and table[name][-1] == "running", why
    # The same with the configuration named, as the README writes it.
    assert ctr.run(["resend-dropd", "-c", CONFIG, "status"]).stdout.count("running") >= 3


def test_watchdog_restarts_a_stopped_daemon(running):
    ctr = running
    before = ctr.service()
    mark = ctr.mark()
    ctr.run(["kill", "-STOP", before["MainPID"]])

    def restarted():
        s = ctr.service()
        return s if (int(s["NRestarts"]) > int(before["NRestarts"]) and
                     s["ActiveState"] == "active" and s["SubState"] == "running" and
                     s["MainPID"] not in ("0", before["MainPID"])) else None

    t0 = time.monotonic()
    try:
        after = ctr.wait_for(restarted, WATCHDOG_WAIT, "a restart by the watchdog")
    finally:
        # A daemon left stopped would hold the folders' locks for the tests after this one.
        ctr.run(["kill", "-CONT", before["MainPID"]], check=False)
    elapsed = time.monotonic() - t0
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, \
        f"{before} {after}{ctr.explain()}"
    messages = [e["MESSAGE"] for e in ctr.journal(UNIT, after=mark)]
    assert any("Watchdog timeout" in m for m in messages), ctr.explain()
    assert any("result 'watchdog'" in m for m in messages), ctr.explain()
    print(f"watchdog: restarted {elapsed:.1f} s after SIGSTOP")

    # And it works again.
    news = ctr.folders["news"]
    name, content = unique_csv()
    news.drop(name, content)
    wait_done(ctr, news, name)


def test_stop_during_an_upload_loses_no_file(running, fake):
    ctr = running
    news = ctr.folders["news"]
    timeout_stop = timespan(ctr.service("TimeoutStopUSec")["TimeoutStopUSec"])
    fake.faults([{"delay": 120, "method": "POST", "path_prefix": "/contacts/imports"}])
    name, content = unique_csv()
    news.drop(name, content)
    ctr.wait_for(lambda: re.search(r", 1 uploading,", ctr.service()["StatusText"]),
                 WAIT, "the upload in flight (StatusText)")
    assert fake.stats()["current_uploads"] == 1, ctr.explain()

    t0 = time.monotonic()
    ctr.systemctl("stop", UNIT, timeout=timeout_stop + 15)
    elapsed = time.monotonic() - t0
    state = ctr.service("ActiveState", "Result", "ExecMainStatus")
    assert elapsed < timeout_stop, f"stop took {elapsed:.1f} s{ctr.explain()}"
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, \
        f"{state}{ctr.explain()}"
    places = news.where(name)
    assert places in (["processing"], ["done"]), f"{name} in {places}{ctr.explain()}"
    print(f"stop during an upload: {elapsed:.1f} s; the file in {places[0]}")

    fake.clear_faults()
    ctr.systemctl("reset-failed", UNIT, check=False)
    ctr.systemctl("start", UNIT)
    report = wait_done(ctr, news, name)
    assert report["import"]["status"] == "completed", f"{report}{ctr.explain()}"
    assert news.where(name) == ["done"]


def test_security_exposure(running, record_property):
    p = running.run(["systemd-analyze", "security", "--no-pager", UNIT])
    match = re.search(r"Overall exposure level for resend-dropd\.service: (\d+\.\d+)", p.stdout)
    assert match, p.stdout
    exposure = float(match.group(1))
    record_property("exposure", exposure)
    print(f"systemd-analyze security: exposure {exposure}")
    assert exposure <= 2.0, p.stdout  # README says 1.4


def restart(ctr):
    """`systemctl restart`, the start limit's count forgotten first: the tests restart the
    service more often than StartLimitBurst= allows within StartLimitIntervalSec=."""
    ctr.systemctl("reset-failed", UNIT, check=False)
    ctr.systemctl("restart", UNIT, timeout=60)


def status_folders(ctr):
    """{folder: its row of `resend-dropd status`} (run as root in the container)."""
    out = ctr.run(["resend-dropd", "status"]).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ctr.folders:
            rows[parts[0]] = parts
    return rows


def test_reload_returns_once_in_force_and_a_bad_one_fails_visibly(running, fake):
    ctr = running
    pid = ctr.service("MainPID")["MainPID"]
    extra = ctr.make_folder("extra")
    try:
        # Good: `systemctl reload` returns once the new configuration is in force, every time.
        for attempt in range(3):
            folders = [ctr.folders["news"], ctr.folders["crm"]] + ([extra] if attempt != 1 else [])
            ctr.write_config(fake.url, folders=folders)
            ctr.systemctl("reload", UNIT, timeout=60)
            assert sorted(status_folders(ctr)) == sorted(f.name for f in folders), \
                f"attempt {attempt}: the reload returned before it was in force{ctr.explain()}"
        assert ctr.service("MainPID")["MainPID"] == pid, "the reload restarted the daemon"
        name, content = unique_csv()
        extra.drop(name, content)
        wait_done(ctr, extra, name)

        # Bad: an error in the file fails the reload, says why, and changes nothing.
        mark = ctr.mark()
        good = open(ctr.path(CONFIG)).read()
        ctr.write_file(CONFIG, good + "no_such_key: 1\n")
        p = ctr.systemctl("reload", UNIT, check=False, timeout=60)
        assert p.returncode != 0, f"a bad configuration reloaded{ctr.explain()}"
        state = ctr.service("ActiveState", "ReloadResult", "MainPID")
        assert state == {"ActiveState": "active", "ReloadResult": "exit-code", "MainPID": pid}, \
            f"{state}{ctr.explain()}"
        refused = ctr.wait_for(
            lambda: [e["MESSAGE"] for e in ctr.journal(UNIT, after=mark,
                                                       MESSAGE_ID=IDS["RELOAD_REJECTED"])],
            10, "the refusal's entries")
        assert any("unknown key 'no_such_key'" in m for m in refused), refused
        assert sorted(status_folders(ctr)) == ["crm", "extra", "news"]
        ctr.write_file(CONFIG, good)
    finally:
        ctr.write_config(fake.url, folders=[ctr.folders["news"], ctr.folders["crm"]])
        ctr.systemctl("reload", UNIT, timeout=60, check=False)
        del ctr.folders["extra"]


def test_a_folder_outside_read_write_paths(running, fake):
    """ProtectSystem=strict makes everything outside ReadWritePaths= read-only: a reload adding
    such a folder is refused with the hint, and at start it waits while the others work."""
    ctr = running
    outside = {"name": "outside", "inbox": "/var/opt/drop/in", "done": "/var/opt/drop/done",
               "failed": "/var/opt/drop/failed"}
    ctr.run(["install", "-d", "-o", USER, "-g", USER, "-m", "0750", outside["inbox"],
             outside["done"], outside["failed"]])
    news, crm = ctr.folders["news"], ctr.folders["crm"]
    hint = ("outside the unit's ReadWritePaths=, everything is read-only: run 'systemctl edit "
            "resend-dropd', add [Service] ReadWritePaths=/var/opt/drop/in /var/opt/drop/done "
            "/var/opt/drop/failed, then 'systemctl restart resend-dropd'")
    try:
        ctr.write_config(fake.url, folders=[news, crm, outside])
        assert ctr.run(["resend-dropd", "--check"], check=False).returncode == 0
        p = ctr.systemctl("reload", UNIT, check=False, timeout=60)
        assert p.returncode != 0, ctr.explain()
        assert hint in ctr.journal_tail(UNIT), ctr.explain()
        assert ctr.service("ActiveState")["ActiveState"] == "active"

        # At start: served without it, said (status, the journal), tried again.
        mark = ctr.mark()
        restart(ctr)
        rows = status_folders(ctr)
        assert rows["news"][-1] == "running", rows
        out = ctr.run(["resend-dropd", "status"]).stdout
        assert f"outside: last error: the folder cannot be served: cannot set up the " \
               f"processing directory '/var/opt/drop/in/.resend-dropd': Read-only file " \
               f"system ({hint})" in out, out
        said = ctr.journal(UNIT, after=mark, MESSAGE_ID=IDS["FOLDER_UNAVAILABLE"])
        assert said and said[0]["RDD_FOLDER"] == "outside", said
        assert "(1 cannot be served)" in ctr.service()["StatusText"]
        name, content = unique_csv()
        news.drop(name, content)
        wait_done(ctr, news, name)
    finally:
        ctr.write_config(fake.url, folders=[news, crm])
        restart(ctr)


def test_a_missing_key_names_the_file_and_a_configuration_error_does_not_loop(running, fake):
    ctr = running
    key = open(ctr.path(API_KEY_PATH)).read()
    try:
        ctr.systemctl("stop", UNIT)
        os.unlink(ctr.path(API_KEY_PATH))
        mark = ctr.mark()
        p = ctr.systemctl("start", UNIT, check=False, timeout=30)
        assert p.returncode != 0
        state = ctr.service("ActiveState", "Result", "ExecMainStatus")
        assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "1"}, \
            f"{state}{ctr.explain()}"
        messages = [e["MESSAGE"] for e in ctr.journal(UNIT, after=mark)]
        assert any(f"no API key: '{API_KEY_PATH}' does not exist (the unit loads it as the "
                   "credential 'api_key'" in m for m in messages), messages
        assert not any("243/CREDENTIALS" in m for m in messages), messages
        # Exit status 1 is not tried again (RestartPreventExitStatus=1): no loop.
        time.sleep(timespan(ctr.service("RestartUSec")["RestartUSec"]) + 2)
        assert ctr.service("NRestarts", "ActiveState") == {"NRestarts": "0",
                                                           "ActiveState": "failed"}

        # The key from the environment instead (a drop-in), with no key file: it starts.
        dropin = "/etc/systemd/system/resend-dropd.service.d/key.conf"
        os.makedirs(os.path.dirname(ctr.path(dropin)), exist_ok=True)
        ctr.write_file(dropin, "[Service]\nEnvironment=RESEND_API_KEY=re_test_key\n", mode=0o600)
        ctr.systemctl("daemon-reload")
        ctr.systemctl("reset-failed", UNIT)
        mark = ctr.mark()
        ctr.systemctl("start", UNIT, timeout=30)
        started = ctr.wait_for(lambda: ctr.journal(UNIT, after=mark,
                                                   MESSAGE_ID=IDS["STARTED"]), 10, "started")
        assert started[0]["MESSAGE"].endswith("environment variable RESEND_API_KEY"), started
        os.unlink(ctr.path(dropin))
        ctr.systemctl("daemon-reload")
    finally:
        ctr.write_file(API_KEY_PATH, key, mode=0o600)
        restart(ctr)


def test_a_start_that_keeps_failing_ends_at_the_start_limit(running):
    """Exit status 2 (a runtime failure: here a ledger that is no database) is tried again,
    but not for ever. The drop-in shortens RestartSec= only so that the test does not wait
    5 x 10 s; StartLimitBurst= and StartLimitIntervalSec= are the unit's own."""
    ctr = running
    ledger = "/var/lib/resend-dropd/ledger.sqlite"
    dropin = "/etc/systemd/system/resend-dropd.service.d/fast.conf"
    ctr.systemctl("stop", UNIT)
    saved = open(ctr.path(ledger), "rb").read()
    try:
        for suffix in ("-wal", "-shm"):
            if os.path.exists(ctr.path(ledger + suffix)):
                os.unlink(ctr.path(ledger + suffix))
        with open(ctr.path(ledger), "wb") as f:
            f.write(b"this is not a database, this is a test of the start limit\n" * 100)
        os.makedirs(os.path.dirname(ctr.path(dropin)), exist_ok=True)
        ctr.write_file(dropin, "[Service]\nRestartSec=1s\n")
        ctr.systemctl("daemon-reload")
        ctr.systemctl("reset-failed", UNIT, check=False)
        mark = ctr.mark()
        ctr.systemctl("start", UNIT, check=False, timeout=30)
        burst = int(ctr.show(UNIT, "StartLimitBurst")["StartLimitBurst"])
        ctr.wait_for(lambda: [e for e in ctr.journal(UNIT, after=mark)
                              if "Start request repeated too quickly" in e["MESSAGE"]],
                     40, "the start limit")
        final = ctr.service("NRestarts", "ActiveState")
        assert final["ActiveState"] == "failed", final
        tries = [e for e in ctr.journal(UNIT, after=mark)
                 if "file is not a database" in e["MESSAGE"]]
        assert len(tries) == burst, f"{len(tries)} starts{ctr.explain()}"
        time.sleep(3)
        assert ctr.service("NRestarts", "ActiveState") == final, "it went on"
    finally:
        if os.path.exists(ctr.path(dropin)):
            os.unlink(ctr.path(dropin))
        ctr.systemctl("daemon-reload")
        with open(ctr.path(ledger), "wb") as f:
            f.write(saved)
        restart(ctr)


def test_the_catalog_explains_the_entries(running):
    ctr = running
    listed = ctr.run(["journalctl", "--list-catalog"]).stdout
    for name, mid in IDS.items():
        assert re.search(rf"^{mid} resend-dropd: ", listed, re.M), name
    p = ctr.run(["journalctl", "--no-pager", "-x", "-u", UNIT, f"MESSAGE_ID={IDS['STARTED']}",
                 "-n", "1"])
    assert "resend-dropd watches its folders from now on" in p.stdout, p.stdout


def test_status_is_for_the_group_and_refused_to_others(running):
    ctr = running
    ctr.run(["useradd", "-M", "-G", USER, "rddop"])
    ctr.run(["useradd", "-M", "rddother"])
    try:
        ok = ctr.run(["resend-dropd", "status"], user="rddop", check=False)
        assert ok.returncode == 0 and "news" in ok.stdout, ok.stdout + ok.stderr
        no = ctr.run(["resend-dropd", "status"], user="rddother", check=False)
        assert no.returncode == 2, no.stdout + no.stderr
        assert "Permission denied" in no.stderr and "not running" not in no.stderr, no.stderr
    finally:
        ctr.run(["userdel", "rddop"], check=False)
        ctr.run(["userdel", "rddother"], check=False)


def test_an_uploaders_inbox_works_under_the_units_sandbox(running, fake):
    """The README's recipe (a shared group, a setgid and sticky inbox with a default ACL) under
    the unit's RestrictSUIDSGID= and the rest of its sandbox: an uploader's file written with
    umask 077 is imported."""
    ctr = running
    if not os.path.exists("/usr/bin/setfacl"):
        pytest.skip("setfacl missing (apt-get install acl)")
    base = f"{DROP_ROOT}/partner"
    partner = {"name": "partner", "inbox": f"{base}/in", "done": f"{base}/done",
               "failed": f"{base}/failed"}
    script = f"""set -e
groupadd rddbox
usermod -aG rddbox {USER}
useradd -M -G rddbox rddup
install -d -m 0755 {base}
install -d -o {USER} -g rddbox -m 3770 {base}/in
setfacl -d -m u::rwX,g::rX,o::- {base}/in
install -d -o {USER} -g {USER} -m 0700 {base}/in/.resend-dropd
install -d -o {USER} -g {USER} -m 0750 {base}/done {base}/failed
"""
    ctr.run(["sh", "-c", script])
    try:
        ctr.write_config(fake.url, folders=[ctr.folders["news"], ctr.folders["crm"], partner])
        restart(ctr)  # its new group
        name, content = unique_csv()
        ctr.run(["sh", "-c", f'umask 077 && cat >{base}/in/.{name}.part && '
                 f'mv {base}/in/.{name}.part {base}/in/{name}'], user="rddup", input=content)
        ctr.wait_for(lambda: os.path.exists(ctr.path(f"{base}/done/{name}.json")), WAIT,
                     "the uploader's file in done/")
    finally:
        ctr.write_config(fake.url, folders=[ctr.folders["news"], ctr.folders["crm"]])
        ctr.run(["sh", "-c", f"gpasswd -d {USER} rddbox; userdel rddup; groupdel rddbox"],
                check=False)
        restart(ctr)


def test_purge_removes_config_and_state_and_keeps_folders_key_and_user(running):
    ctr = running
    news = ctr.folders["news"]
    done_files = sorted(os.listdir(news.host(news.done)))
    assert done_files
    ctr.systemctl("enable", UNIT)
    wants = "/etc/systemd/system/multi-user.target.wants/resend-dropd.service"
    assert os.path.lexists(ctr.path(wants))

    mark = ctr.mark()
    ctr.run(["dpkg", "--purge", UNIT], timeout=120)

    state = ctr.service("ActiveState", "LoadState", "MainPID")
    assert state == {"ActiveState": "inactive", "LoadState": "not-found", "MainPID": "0"}, \
        f"{state}{ctr.explain()}"
    assert ctr.run(["pgrep", "-u", USER], check=False).returncode == 1, \
        f"a daemon is left{ctr.explain()}"
    # Stopped in order by the package's prerm (SIGTERM, the daemon's own "stopped").
    ctr.wait_for(lambda: ctr.journal(UNIT, after=mark, MESSAGE_ID=IDS["STOPPED"]), 10,
                 "the daemon's 'stopped' entry")
    for gone in (CONFIG, "/var/lib/resend-dropd", wants, "/usr/sbin/resend-dropd",
                 "/lib/systemd/system/resend-dropd.service",
                 "/usr/lib/systemd/catalog/resend-dropd.catalog"):
        assert not os.path.lexists(ctr.path(gone)), f"{gone} is still there after the purge"
    assert os.path.isfile(ctr.path(API_KEY_PATH)), "the purge removed the key"
    assert ctr.run(["getent", "passwd", USER], check=False).returncode == 0, "user removed"
    for folder in ctr.folders.values():
        for directory in (folder.inbox, folder.done, folder.failed):
            assert os.path.isdir(folder.host(directory)), f"{directory} removed"
    assert sorted(os.listdir(news.host(news.done))) == done_files


def readme_build_block():
    """The README's "Building and installing" commands (its first sh block)."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Building and installing\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def copy_tree(ctr, dest):
    """The checkout as it is (committed or not) into the container at DEST, without builds,
    VCS data or Python caches: what scripts/package copies too."""
    for top, dirs, files in os.walk(SOURCE_DIR):
        rel_top = os.path.relpath(top, SOURCE_DIR)
        dirs[:] = [d for d in dirs if not (rel_top == "." and d in ("build", ".git"))
                   and d != "__pycache__"]
        for name in files:
            if name.endswith(".pyc"):
                continue
            src = os.path.join(top, name)
            if not os.path.isfile(src) or os.path.islink(src):
                continue
            target = ctr.path(os.path.normpath(os.path.join(dest, rel_top, name)))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(src, target)


def test_the_readmes_build_block_works_as_written(ctr, installed, fake):
    """After the package is gone (the purge above): the README's build-and-install block, word
    for word, in a copy of the checkout; then the /usr/local install runs under systemd, with
    its configuration where the binary looks by default."""
    if ctr.run(["dpkg", "-s", UNIT], check=False).returncode == 0:
        ctr.run(["dpkg", "--purge", UNIT], timeout=120)
    src = "/root/build-from-readme"
    copy_tree(ctr, src)
    for command in readme_build_block():
        p = ctr.run(["bash", "-c", f"cd {src} && {command}"], check=False, timeout=400)
        assert p.returncode == 0, f"README step failed: {command}\n{p.stdout[-3000:]}{p.stderr}"
    helptext = ctr.run(["/usr/local/sbin/resend-dropd", "--help"]).stdout
    assert "(default /usr/local/etc/resend-dropd/resend-dropd.yaml)" in helptext, helptext
    assert ctr.run(["getent", "passwd", USER], check=False).returncode == 0
    assert os.path.isdir(ctr.path("/var/lib/resend-dropd"))
    # The example configuration's folders are there (the service block made them); the key
    # goes beside the configuration, as the README says.
    ctr.write_file("/usr/local/etc/resend-dropd/api_key", API_KEY + "\n", mode=0o600)
    check = ctr.run(["/usr/local/sbin/resend-dropd", "--check"], check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    ctr.systemctl("daemon-reload")
    ctr.systemctl("reset-failed", UNIT, check=False)
    ctr.systemctl("start", UNIT, timeout=30)
    unit = ctr.show(UNIT, "FragmentPath", "ActiveState")
    assert unit == {"FragmentPath": "/usr/local/lib/systemd/system/resend-dropd.service",
                    "ActiveState": "active"}, f"{unit}{ctr.explain()}"
    ctr.systemctl("stop", UNIT, timeout=30)
