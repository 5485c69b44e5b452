"""What the daemon takes from an inbox, when, and where it leaves it: files present at start,
slow writers, temporary names, ignored names, entries that are not plain files, name clashes."""

import datetime
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import threading
import time

from daemon_harness import pipe_env, pipe_fake, read_bytes, sha256_bytes  # noqa: F401

CSV = b"email,first_name\nann@example.com,Ann\n"
STAMP = r"\d{8}T\d{6}Z"


def csv_rows(tag, count):
    return "".join(f"{tag}-{i}@example.com,N{i}\n" for i in range(count)).encode()


class SlowWriter(threading.Thread):
    """Writes a CSV: a header, then a chunk of rows every INTERVAL s for DURATION s. With
    keep_open the file stays open throughout (as an SFTP upload); otherwise it is opened,
    appended to and closed for every chunk (as a logger or a shell loop)."""

    def __init__(self, path, duration=10.0, interval=0.5, keep_open=True):
        super().__init__(daemon=True)
        self.path = path
        self.duration = duration
        self.interval = interval
        self.keep_open = keep_open
        self.content = b""
        self.error = None

    def run(self):
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self._write(fd, b"email,first_name\n")
                deadline = time.monotonic() + self.duration
                chunk = 0
                while time.monotonic() < deadline:
                    if not self.keep_open:
                        os.close(fd)
                        fd = -1
                    time.sleep(self.interval)
                    if fd < 0:
                        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
                    self._write(fd, csv_rows(f"{os.path.basename(self.path)}-{chunk}", 5))
                    chunk += 1
            finally:
                if fd >= 0:
                    os.close(fd)
        except BaseException as error:  # reported by the test
            self.error = error

    def _write(self, fd, data):
        os.write(fd, data)
        self.content += data


class PausingWriter(SlowWriter):
    """Keeps the file open but pauses longer than settle_ms between two writes: only the
    kernel's word that a writer has it open (a read lease fails) can keep the daemon away."""

    def run(self):
        try:
            with open(self.path, "xb", buffering=0) as file:
                for index in range(3):
                    if index:
                        time.sleep(self.interval)
                    data = (b"email,first_name\n" if index == 0 else
                            csv_rows(f"pausing-{index}", 3))
                    file.write(data)
                    self.content += data
        except BaseException as error:
            self.error = error


def leases_work(directory):
    """Whether this filesystem grants read leases to the file's owner (F_SETLEASE)."""
    probe = os.path.join(directory, ".lease-probe")
    fd = os.open(probe, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(probe)


# Names the daemon must leave alone whatever the pattern: matched against pattern "*", so
# that only the ignore rules (not the pattern) keep them out.
IGNORED_SUFFIXES = {
    "a.csv.tmp": CSV, "b.csv~": CSV, "c.csv.part": CSV, "d.csv.partial": CSV,
    "e.csv.filepart": CSV, "f.csv.temp": CSV, "g.csv.swp": CSV, "h.csv.crdownload": CSV,
    "UPPER.CSV.PART": CSV, "i.TMP": CSV, ".hidden.csv": CSV, ".hidden": CSV,
}
# Names that do not match the pattern "*.csv".
NOT_MATCHING = {"notes.txt": CSV, "contacts.csv.bak": CSV, "contacts.csvx": CSV, "csv": CSV}


def test_files_present_at_start_slow_writers_part_files_and_ignored_names(pipe_env):
    env = pipe_env
    # settle_ms 1000: writers pausing 0.5 s must not be taken for finished.
    drop = env.folder("drop", settle_ms=1000)
    anything = env.folder("anything", settle_ms=1000, pattern="*")
    # Present before the daemon starts: processed; the others left exactly as they are.
    drop.write("before-1.csv", b"email\nbefore1@example.com\n")
    drop.write("before-2.csv", b"email\nbefore2@example.com\n")
    drop.write("UPPER.CSV", b"email\nupper@example.com\n")  # the pattern is case-insensitive
    anything.write("plain.txt", b"email\nplain@example.com\n")  # pattern "*" takes it
    for name, content in NOT_MATCHING.items():
        drop.write(name, content)
    for name, content in IGNORED_SUFFIXES.items():
        anything.write(name, content)
    for folder in (drop, anything):
        os.mkdir(os.path.join(folder.inbox, "folder.csv"))
        with open(os.path.join(folder.inbox, "folder.csv", "inner.csv"), "wb") as file:
            file.write(CSV)
    daemon = env.start(env.config([drop, anything]))
    env.wait_outcomes(drop, done=3)
    env.wait_outcomes(anything, done=1)
    assert sorted(drop.files("done")) == ["UPPER.CSV", "before-1.csv", "before-2.csv"]

    # Slow writers: a chunk every 0.5 s for 10 s, one keeping the file open, one closing it
    # between chunks (only its growth shows that it is not finished).
    writers = [SlowWriter(os.path.join(drop.inbox, "slow-open.csv")),
               SlowWriter(os.path.join(drop.inbox, "slow-append.csv"), keep_open=False)]
    if leases_work(drop.inbox):
        writers.append(PausingWriter(os.path.join(drop.inbox, "pausing.csv"), interval=2.5))
    for writer in writers:
        writer.start()

    # Meanwhile an upload under a temporary name: not taken however long it sits there...
    part = os.path.join(anything.inbox, "late.csv.part")
    with open(part, "wb") as file:
        file.write(b"email\n")
        file.flush()
        time.sleep(0.3)
        file.write(b"late@example.com\n")
    time.sleep(2.5)  # > settle_ms
    assert os.path.exists(part), "a .part file was taken"
    # ... and taken promptly once renamed (inotify, not the 300 s rescan).
    renamed = time.monotonic()
    os.rename(part, os.path.join(anything.inbox, "late.csv"))
    env.wait_for(lambda: "late.csv.json" in anything.report_names("done"),
                 "late.csv in done", timeout=15)
    late_seconds = time.monotonic() - renamed
    assert late_seconds < 6, f"late.csv took {late_seconds:.1f} s after its rename"

    # While they write, their files stay where they are and are not uploaded.
    while any(writer.is_alive() for writer in writers):
        uploaded = [u["file"]["filename"] for u in env.uploads()]
        for writer in writers:
            if writer.is_alive():
                assert os.path.exists(writer.path), f"{writer.path} claimed while written"
                assert os.path.basename(writer.path) not in uploaded, writer.path
        time.sleep(0.1)
    for writer in writers:
        assert writer.error is None, writer.error
    env.wait_outcomes(drop, done=3 + len(writers), timeout=20)

    uploads = {u["file"]["filename"]: u for u in env.uploads()}
    assert sorted(uploads) == sorted(["UPPER.CSV", "before-1.csv", "before-2.csv", "late.csv",
                                      "plain.txt"] +
                                     [os.path.basename(writer.path) for writer in writers])
    for writer in writers:
        name = os.path.basename(writer.path)
        assert uploads[name]["file"]["sha256"] == sha256_bytes(writer.content), \
            f"{name} was uploaded before it was complete"
        assert read_bytes(os.path.join(drop.done, name)) == writer.content
        report = drop.report("done", name)
        assert report["bytes"] == len(writer.content)
        assert report["sha256"] == sha256_bytes(writer.content)
    assert uploads["late.csv"]["file"]["sha256"] == \
        sha256_bytes(b"email\nlate@example.com\n")

    # Ignored and not matching entries: all still there, unchanged, never uploaded.
    for folder, left in ((drop, NOT_MATCHING), (anything, IGNORED_SUFFIXES)):
        assert set(folder.inbox_entries()) - {".resend-dropd"} == set(left) | {"folder.csv"}
        for name, content in left.items():
            assert read_bytes(os.path.join(folder.inbox, name)) == content, name
        assert read_bytes(os.path.join(folder.inbox, "folder.csv", "inner.csv")) == CSV
        assert folder.files("failed") == []
    daemon.stop()


def test_symlinks_fifos_sockets_devices_and_hard_links_fail_with_a_reason(pipe_env):
    env = pipe_env
    box = env.folder("box")
    outside = os.path.join(env.root, "outside")
    os.mkdir(outside)
    target = os.path.join(outside, "target.csv")
    with open(target, "wb") as file:
        file.write(b"email\nsecret@example.com\n")
    daemon = env.start(env.config([box]))

    expected = {  # name in the inbox -> what the report must say
        "link.csv": "symbolic link",
        "dangling.csv": "symbolic link",
        "pipe.csv": "FIFO",
        "sock.csv": "socket",
        "hard.csv": "hard link",
    }
    os.symlink(target, os.path.join(box.inbox, "link.csv"))
    os.symlink(os.path.join(outside, "missing.csv"), os.path.join(box.inbox, "dangling.csv"))
    os.mkfifo(os.path.join(box.inbox, "pipe.csv"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(box.inbox, "sock.csv"))
    sock.close()
    other_name = os.path.join(outside, "other-name.csv")
    with open(other_name, "wb") as file:
        file.write(b"email\nhard@example.com\n")
    os.link(other_name, os.path.join(box.inbox, "hard.csv"))
    if os.geteuid() == 0:  # mknod needs privilege
        os.mknod(os.path.join(box.inbox, "dev.csv"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        expected["dev.csv"] = "character device"

    env.wait_outcomes(box, failed=len(expected), timeout=30)
    # The daemon is not stuck on any of them: a plain file after them goes through.
    box.drop("plain.csv", CSV)
    env.wait_outcomes(box, done=1, failed=len(expected), timeout=30)

    for name, reason in expected.items():
        report = box.report("failed", name)
        assert report["outcome"] == "failed" and report["file"] == name, report
        assert report["error"]["stage"] == "check", report
        assert reason in report["error"]["message"], (name, report["error"])
        assert report["http_status"] is None and report["import_id"] is None, report
    # Moved as what they are, never followed or copied.
    assert os.path.islink(os.path.join(box.failed, "link.csv"))
    assert os.readlink(os.path.join(box.failed, "link.csv")) == target
    assert stat.S_ISFIFO(os.lstat(os.path.join(box.failed, "pipe.csv")).st_mode)
    assert stat.S_ISSOCK(os.lstat(os.path.join(box.failed, "sock.csv")).st_mode)
    assert os.path.samefile(os.path.join(box.failed, "hard.csv"), other_name)
    assert read_bytes(target) == b"email\nsecret@example.com\n"
    assert read_bytes(other_name) == b"email\nhard@example.com\n"
    # Nothing but the plain file reached the API.
    assert [u["file"]["filename"] for u in env.uploads()] == ["plain.csv"]
    assert box.processing_files() == []
    daemon.stop()


def test_a_name_clash_in_done_or_failed_gets_a_timestamp_and_nothing_is_overwritten(pipe_env):
    env = pipe_env
    box = env.folder("box", column_map={"email": "Email"})
    old_file = b"an older x.csv that must survive\n"
    old_report = b'{"an older report": true}\n'
    old_failed = b"an older bad.csv\n"
    with open(os.path.join(box.done, "x.csv"), "wb") as file:
        file.write(old_file)
    with open(os.path.join(box.done, "y.csv.json"), "wb") as file:  # only the report's name
        file.write(old_report)
    with open(os.path.join(box.failed, "bad.csv"), "wb") as file:
        file.write(old_failed)
    daemon = env.start(env.config([box]))

    first_x = b"Email\nx1@example.com\n"
    box.drop("x.csv", first_x)
    box.drop("y.csv", b"Email\ny@example.com\n")
    box.drop("bad.csv", b"email\nlowercase-header@example.com\n")  # no "Email" column
    env.wait_for(lambda: len(box.report_names("done")) == 3 and
                 len(box.report_names("failed")) == 1, "x.csv, y.csv and bad.csv finished")
    second_x = b"Email\nx2@example.com\n"
    box.drop("x.csv", second_x)  # the same name again
    env.wait_for(lambda: len(box.report_names("done")) == 4, "the second x.csv finished")

    # What was there before is untouched.
    assert read_bytes(os.path.join(box.done, "x.csv")) == old_file
    assert read_bytes(os.path.join(box.done, "y.csv.json")) == old_report
    assert read_bytes(os.path.join(box.failed, "bad.csv")) == old_failed
    assert not os.path.exists(os.path.join(box.done, "x.csv.json"))
    assert not os.path.exists(os.path.join(box.done, "y.csv"))

    now = datetime.datetime.now(datetime.timezone.utc)

    def stamped(directory, base, content):
        """The one file in DIRECTORY named base.<UTC stamp>[-N].csv holding CONTENT."""
        names = [n for n in os.listdir(directory)
                 if re.fullmatch(rf"{re.escape(base)}\.{STAMP}(-\d+)?\.csv", n)
                 and read_bytes(os.path.join(directory, n)) == content]
        assert len(names) == 1, (base, sorted(os.listdir(directory)))
        stamp = re.search(STAMP, names[0]).group(0)
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
        assert abs((now - when).total_seconds()) < 300, f"{stamp} is not UTC now"
        report = os.path.join(directory, names[0] + ".json")
        assert os.path.exists(report), f"no report beside {names[0]}"
        return names[0]

    x1 = stamped(box.done, "x", first_x)
    x2 = stamped(box.done, "x", second_x)
    assert x1 != x2
    y = stamped(box.done, "y", b"Email\ny@example.com\n")
    bad = stamped(box.failed, "bad", b"email\nlowercase-header@example.com\n")
    for directory, name, original in ((box.done, x1, "x.csv"), (box.done, x2, "x.csv"),
                                      (box.done, y, "y.csv"), (box.failed, bad, "bad.csv")):
        report = box.report("done" if directory == box.done else "failed", name)
        assert report["file"] == original, report
        assert report["sha256"] == hashlib.sha256(
            read_bytes(os.path.join(directory, name))).hexdigest()
    assert sorted(box.files("done")) == sorted(["x.csv", x1, x2, y])
    # The processing directory is the daemon's alone.
    assert stat.S_IMODE(os.stat(box.processing).st_mode) == 0o700
    daemon.stop()


def test_the_same_name_dropped_while_the_first_is_processed_overwrites_nothing(pipe_env):
    """The second file cannot be claimed while its namesake is in processing; it is taken as
    soon as the first has left (not only at the next rescan, which is 300 s away here)."""
    env = pipe_env
    box = env.folder("box", rescan_s=300)
    env.fake.faults([{"delay": 2, "method": "POST", "count": 1}])
    daemon = env.start(env.config([box]))
    first = b"email\nfirst@example.com\n"
    second = b"email\nsecond@example.com\nthird@example.com\n"
    box.drop("same.csv", first)
    env.wait_for(lambda: env.fake.stats()["current_uploads"] == 1, "the first upload")
    box.drop("same.csv", second)  # its namesake is in processing
    env.wait_outcomes(box, done=2, timeout=20)
    uploads = env.uploads()
    assert sorted(u["file"]["sha256"] for u in uploads) == \
        sorted([sha256_bytes(first), sha256_bytes(second)])
    names = box.files("done")
    assert "same.csv" in names and len(names) == 2
    contents = sorted(read_bytes(os.path.join(box.done, name)) for name in names)
    assert contents == sorted([first, second])
    daemon.stop()


def test_a_file_name_that_is_not_utf8_still_gets_a_valid_json_report(pipe_env):
    """File names are bytes on Linux. The report is JSON, which is UTF-8 (RFC 8259): a name
    with a Latin-1 byte must not make it unreadable; nor may the upload's part header carry
    bytes that are not UTF-8 (the SDK can only send UTF-8)."""
    env = pipe_env
    box = env.folder("box")
    daemon = env.start(env.config([box]))
    name = b"caf\xe9.csv"
    with open(os.path.join(os.fsencode(box.inbox), name), "wb") as file:
        file.write(CSV)
    env.wait_for(lambda: len(os.listdir(os.fsencode(box.done))) == 2, "the file and its report")
    daemon.stop()
    assert sorted(os.listdir(os.fsencode(box.done))) == [name, name + b".json"]
    raw = read_bytes(os.path.join(os.fsencode(box.done), name + b".json"))
    try:
        report = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise AssertionError(f"the report is not UTF-8: {error}: {raw[:200]!r}") from None
    assert report["outcome"] == "done" and report["file"].startswith("caf"), report
    [upload] = env.uploads()
    disposition = read_bytes(upload["raw_body_path"]).split(b"\r\n")[1]
    try:
        disposition.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"the file part's header is not UTF-8: {disposition!r}") from None
