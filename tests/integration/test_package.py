"""The Debian package: ./scripts/package builds it (dpkg-buildpackage, lintian without errors),
it holds what an operator needs, and it installs and purges in a throwaway root.

The build compiles the daemon once (about a minute on two cores). Install and purge use
`dpkg --root` with `--force-script-chrootless`: the maintainer scripts run on the host with
DPKG_ROOT set, which every command in them honours (systemd-sysusers and systemd-tmpfiles take
--root, deb-systemd-helper reads DPKG_ROOT; systemctl, called only where systemd runs, is kept off
the host by hiding /run/systemd in a private mount namespace); the test then checks that the
host's own user database and paths did not change.
"""

import hashlib
import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_TIMEOUT = 900
TIMEOUT = 120
CONFFILE = "/etc/resend-dropd/resend-dropd.yaml"
EXAMPLES = "/usr/share/doc/resend-dropd/examples/"
HOST_FILES = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]
HOST_PATHS = ["/etc/resend-dropd", "/var/lib/resend-dropd", "/usr/sbin/resend-dropd",
              "/lib/systemd/system/resend-dropd.service",
              "/var/lib/systemd/deb-systemd-helper-enabled/resend-dropd.service.dsh-also"]


def run(cmd, timeout=TIMEOUT, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def host_state():
    state = {}
    for p in HOST_FILES:
        try:
            with open(p, "rb") as f:
                state[p] = hashlib.sha256(f.read()).hexdigest()
        except FileNotFoundError:
            state[p] = None
    for p in HOST_PATHS:
        state[p] = os.path.lexists(p)
    return state


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    for tool in ("dpkg-buildpackage", "dh", "lintian", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing: scripts/install-deps --tests installs it")
    out = tmp_path_factory.mktemp("package")
    parent = os.path.dirname(SOURCE_DIR)
    ours = re.compile(r"resend-dropd.*\.(deb|ddeb|changes|buildinfo)$")
    before = {f for f in os.listdir(parent) if ours.match(f)}
    # CTest runs this test alone (RUN_SERIAL, tests/CMakeLists.txt): all cores are free.
    p = run([os.path.join(SOURCE_DIR, "scripts/package"), "-o", str(out)],
            timeout=BUILD_TIMEOUT, check=False)
    assert p.returncode == 0, f"scripts/package failed:\n{p.stdout}\n{p.stderr}"
    # dpkg-buildpackage writes beside the tree it builds: not beside ours.
    assert {f for f in os.listdir(parent) if ours.match(f)} == before
    debs = [f for f in os.listdir(out) if re.fullmatch(r"resend-dropd_[^_]+_[^_]+\.deb", f)]
    assert len(debs) == 1, os.listdir(out)
    assert f"package: {out / debs[0]}" in p.stdout
    return {"deb": out / debs[0], "dir": out, "stdout": p.stdout}


def test_source_tree_is_left_clean(package):
    for leftover in ("debian/.debhelper", "debian/tmp", "debian/resend-dropd", "debian/files",
                     "debian/debhelper-build-stamp", "debian/resend-dropd.substvars",
                     "obj-x86_64-linux-gnu"):
        assert not os.path.exists(os.path.join(SOURCE_DIR, leftover)), leftover
    assert not os.path.exists(package["dir"] / "work")


def test_lintian_reports_no_errors(package):
    with open(package["dir"] / "lintian.txt") as f:
        report = f.read()
    errors = [line for line in report.splitlines() if line.startswith("E: ")]
    assert not errors, report


def test_contents(package):
    listing = run(["dpkg-deb", "-c", str(package["deb"])]).stdout
    files = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        files[fields[5].removeprefix(".").split(" -> ")[0]] = fields[0]
    assert files["/usr/sbin/resend-dropd"] == "-rwxr-xr-x"
    assert ("/lib/systemd/system/resend-dropd.service" in files or
            "/usr/lib/systemd/system/resend-dropd.service" in files)
    for path in (CONFFILE, "/usr/lib/sysusers.d/resend-dropd.conf",
                 "/usr/lib/tmpfiles.d/resend-dropd.conf",
                 "/usr/share/man/man8/resend-dropd.8.gz",
                 "/usr/share/man/man5/resend-dropd.yaml.5.gz",
                 "/usr/share/doc/resend-dropd/copyright",
                 "/usr/share/doc/resend-dropd/examples/resend-dropd.yaml",
                 EXAMPLES + "resend-dropd.json", EXAMPLES + "resend-dropd.rules.yml"):
        assert path in files, f"{path} not in the package:\n{listing}"
    assert not [f for f in files if f.startswith("/usr/local")], listing


def test_dashboard_and_alert_rules_ship_as_they_are(package, tmp_path):
    """The Grafana dashboard and the Prometheus rules (issue 20), uncompressed and unchanged:
    provisioning and rule_files read them in place (test_dashboards.py checks what they say)."""
    run(["dpkg-deb", "-x", str(package["deb"]), str(tmp_path)])
    for name, source in (("resend-dropd.json", "config/grafana/resend-dropd.json"),
                         ("resend-dropd.rules.yml", "config/prometheus/resend-dropd.rules.yml")):
        shipped = tmp_path / EXAMPLES.lstrip("/") / name
        with open(os.path.join(SOURCE_DIR, source), "rb") as f:
            assert shipped.read_bytes() == f.read(), f"{shipped} differs from {source}"
        assert (shipped.stat().st_mode & 0o777) == 0o644, oct(shipped.stat().st_mode)


def test_control_and_conffiles(package):
    info = run(["dpkg-deb", "-I", str(package["deb"])]).stdout
    assert re.search(r"^ Package: resend-dropd$", info, re.M)
    depends = re.search(r"^ Depends: (.*)$", info, re.M).group(1)
    for dep in ("systemd", "libuv1", "libcurl4", "libyaml-0-2", "libcjson1"):
        assert re.search(rf"(^|, ){re.escape(dep)}\b", depends), depends
    ctrl = package["dir"] / "control"
    run(["dpkg-deb", "-e", str(package["deb"]), str(ctrl)])
    with open(ctrl / "conffiles") as f:
        assert f.read().split() == [CONFFILE]
    with open(ctrl / "postinst") as f:
        postinst = f.read()
    # The user first, then its directories; the unit is not started on installation.
    assert postinst.index("systemd-sysusers") < postinst.index("systemd-tmpfiles")
    assert "deb-systemd-helper enable" in postinst and "was-enabled" in postinst


def test_unit_in_the_package_names_usr_sbin(package, tmp_path):
    run(["dpkg-deb", "-x", str(package["deb"]), str(tmp_path)])
    unit = next(p for p in (tmp_path / "lib/systemd/system/resend-dropd.service",
                            tmp_path / "usr/lib/systemd/system/resend-dropd.service")
                if p.exists()).read_text()
    assert f"ExecStart=/usr/sbin/resend-dropd -c {CONFFILE}\n" in unit


def dpkg(root, *args):
    cmd = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
           f"--log={root}/var/log/dpkg.log", *args]
    if os.path.isdir("/run/systemd/system"):
        # On a host run by systemd, debhelper's snippets would call systemctl daemon-reload
        # and deb-systemd-invoke on the host itself: hide it from them, in a mount namespace of
        # this command only (its tmpfs goes when the command exits).
        if not shutil.which("unshare"):
            pytest.skip("systemd runs this host and unshare is missing to keep dpkg off it")
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs tmpfs /run/systemd && exec "$@"', "sh", *cmd]
    return run(cmd)


def test_install_and_purge_in_a_throwaway_root(package, tmp_path):
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "etc"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "var/lib/dpkg/available").touch()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    before = host_state()

    dpkg(root, "-i", str(package["deb"]))
    assert (root / "usr/sbin/resend-dropd").is_file()
    users = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    user = [u for u in users if u[0] == "resend-dropd"]
    assert len(user) == 1 and user[0][6] == "/usr/sbin/nologin", users
    uid = int(user[0][2])
    for d in ("var/lib/resend-dropd", "run/resend-dropd"):
        st = os.stat(root / d)
        assert (st.st_mode & 0o777, st.st_uid) == (0o750, uid), d
    assert (root / CONFFILE.lstrip("/")).is_file()
    # Installed, not enabled: the configuration and the key come first.
    assert not (root / "etc/systemd/system/multi-user.target.wants/resend-dropd.service").exists()

    # An operator's edit survives a reinstall (the conffile is kept, not replaced).
    conf = root / CONFFILE.lstrip("/")
    conf.write_text(conf.read_text() + "# edited by the operator\n")
    dpkg(root, "--force-confold", "-i", str(package["deb"]))
    assert conf.read_text().endswith("# edited by the operator\n")

    dpkg(root, "--purge", "resend-dropd")
    assert not conf.exists()
    assert not (root / "usr/sbin/resend-dropd").exists()
    assert not (root / "var/lib/resend-dropd").exists()
    status = (root / "var/lib/dpkg/status").read_text()
    assert "Package: resend-dropd" not in status

    assert host_state() == before, "installing into the throwaway root touched the host"
