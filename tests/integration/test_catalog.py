"""The journal catalog (systemd/resend-dropd.catalog): every MESSAGE_ID the daemon logs with
(src/log.h) has an entry, none is stale, and journalctl takes the file (the same
`--update-catalog` that systemd's package trigger runs), in a throwaway root."""

import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
CATALOG = os.path.join(SOURCE_DIR, "systemd", "resend-dropd.catalog")


def log_ids():
    with open(os.path.join(SOURCE_DIR, "src", "log.h"), encoding="utf-8") as f:
        return dict(re.findall(r'#define LOG_ID_(\w+) "([0-9a-f]{32})"', f.read()))


def catalog_entries(path=CATALOG):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    entries = {}
    for block in re.split(r"^-- ", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        entries[head.strip()] = body
    return entries


def test_every_message_id_has_an_entry_and_none_is_stale():
    ids = log_ids()
    entries = catalog_entries()
    assert len(ids) >= 15, ids
    missing = {name for name, mid in ids.items() if mid not in entries}
    stale = set(entries) - set(ids.values())
    assert not missing, f"no catalog entry for {sorted(missing)}"
    assert not stale, f"catalog entries for ids log.h does not have: {sorted(stale)}"
    for mid, body in entries.items():
        assert re.search(r"^Subject: \S", body, re.M), mid
        assert "Defined-By: resend-dropd" in body, mid
        text = body.split("\n\n", 1)[1].strip() if "\n\n" in body else ""
        assert len(text) > 40, f"{mid}: no explanation"


def test_journalctl_reads_it(tmp_path):
    if not shutil.which("journalctl"):
        pytest.skip("journalctl missing (the systemd package)")
    root = tmp_path / "root"
    catdir = root / "usr/lib/systemd/catalog"
    catdir.mkdir(parents=True)
    shutil.copy(CATALOG, catdir / "resend-dropd.catalog")
    p = subprocess.run(["journalctl", f"--root={root}", "--update-catalog"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    listed = subprocess.run(["journalctl", f"--root={root}", "--list-catalog"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    for name, mid in log_ids().items():
        assert re.search(rf"^{mid} resend-dropd: \S", listed, re.M), (name, listed)


def test_a_broken_catalog_is_caught(tmp_path):
    """The check above can fail: an entry without its id is found missing."""
    broken = tmp_path / "broken.catalog"
    with open(CATALOG, encoding="utf-8") as f:
        text = f.read()
    victim = log_ids()["FOLDER_UNAVAILABLE"]
    broken.write_text(text.replace(f"-- {victim}", "-- 00000000000000000000000000000000"))
    entries = catalog_entries(str(broken))
    assert victim not in entries and "0" * 32 in entries
