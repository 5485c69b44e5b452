"""The install layout (CMakeLists.txt), the unit it installs, and the man pages.

One build of the daemon (tests off) in a temporary directory, installed several ways:
- staged (DESTDIR, --prefix /usr, and a prefix with a space and a quote): nothing is written
  outside the staging root, by CMake's own account (install_manifest.txt and its log) and by the
  host's paths staying as they were;
- over an existing configuration, which is kept;
- into a real prefix, where `systemd-analyze verify` checks the unit with the binary and the man
  pages it names, and `systemd-analyze security` rates it;
- the sysusers.d and tmpfiles.d files applied to a throwaway root (`--root`).
"""

import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_TIMEOUT = 600
TIMEOUT = 120
MAX_EXPOSURE = 2.0
WEIRD = "we ird'pre fix"

# Where a careless install would write on the host; none of these may change.
HOST_PATHS = ["/etc/resend-dropd", "/usr/sbin/resend-dropd", "/usr/local/sbin/resend-dropd",
              "/lib/systemd/system/resend-dropd.service",
              "/usr/lib/systemd/system/resend-dropd.service",
              "/usr/local/lib/systemd/system/resend-dropd.service",
              "/usr/lib/sysusers.d/resend-dropd.conf", "/usr/lib/tmpfiles.d/resend-dropd.conf",
              "/usr/lib/systemd/catalog/resend-dropd.catalog",
              "/usr/local/lib/systemd/catalog/resend-dropd.catalog",
              "/usr/share/man/man8/resend-dropd.8", "/usr/share/doc/resend-dropd",
              "/usr/local/etc/resend-dropd", "/var/lib/resend-dropd"]

# What every install holds, relative to the prefix (the configuration: to sysconfdir).
LAYOUT = ["sbin/resend-dropd", "lib/systemd/system/resend-dropd.service",
          "lib/sysusers.d/resend-dropd.conf", "lib/tmpfiles.d/resend-dropd.conf",
          "lib/systemd/catalog/resend-dropd.catalog", "share/man/man8/resend-dropd.8", "share/man/man5/resend-dropd.yaml.5",
          "share/doc/resend-dropd/examples/resend-dropd.yaml"]


def run(cmd, env=None, timeout=TIMEOUT, check=True):
    full_env = dict(os.environ)
    full_env.pop("DESTDIR", None)
    full_env.update(env or {})
    p = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def host_state():
    state = {}
    for p in HOST_PATHS:
        try:
            st = os.lstat(p)
            state[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            state[p] = None
    return state


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A build directory configured with --prefix /usr, the daemon built."""
    d = tmp_path_factory.mktemp("build")
    before = host_state()
    run(["cmake", "-S", SOURCE_DIR, "-B", str(d), "-DRDD_TESTS=OFF",
         "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DCMAKE_INSTALL_PREFIX=/usr"], timeout=BUILD_TIMEOUT)
    # CTest runs this test alone (RUN_SERIAL, tests/CMakeLists.txt): all cores are free.
    run(["cmake", "--build", str(d), "-j", str(os.cpu_count() or 2)], timeout=BUILD_TIMEOUT)
    yield d
    assert host_state() == before, "an install in this module touched the host"


def configure(build, prefix):
    run(["cmake", "-S", SOURCE_DIR, "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={prefix}"])


def install(build, destdir=None, prefix=None):
    """Installs; returns every path CMake says it wrote (manifest and log)."""
    cmd = ["cmake", "--install", str(build)] + (["--prefix", prefix] if prefix else [])
    p = run(cmd, env={"DESTDIR": str(destdir)} if destdir else None)
    logged = re.findall(r"^-- (?:Installing|Up-to-date|Keeping existing configuration): (.*)$",
                        p.stdout, re.M)
    # The manifest names files as they will be once the staging root is the root.
    with open(os.path.join(build, "install_manifest.txt")) as f:
        manifest = [str(destdir) + line.rstrip("\n") if destdir else line.rstrip("\n")
                    for line in f if line.strip()]
    return sorted(set(logged) | set(manifest)), p.stdout


def files_under(root):
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.join(dirpath, n) for n in names]
    return sorted(out)


def assert_all_under(paths, root):
    root = os.path.realpath(root) + os.sep
    outside = [p for p in paths if not os.path.realpath(p).startswith(root)]
    assert not outside, f"written outside {root}: {outside}"


def unit_text(path):
    with open(path) as f:
        return f.read()


# --- staged installs ---------------------------------------------------------------------------

def test_staged_install_with_prefix_usr_stays_in_destdir(build, tmp_path):
    configure(build, "/usr")
    root = tmp_path / "root"
    written, _ = install(build, destdir=root)
    assert_all_under(written, root)
    assert sorted(written) == files_under(root)
    for rel in LAYOUT:
        assert (root / "usr" / rel).is_file(), rel
    # Prefix /usr: the configuration is in /etc (GNUInstallDirs), as a Debian package wants it.
    assert (root / "etc/resend-dropd/resend-dropd.yaml").is_file()
    assert not (root / "usr/etc").exists()
    unit = unit_text(root / "usr/lib/systemd/system/resend-dropd.service")
    assert "ExecStart=/usr/sbin/resend-dropd -c /etc/resend-dropd/resend-dropd.yaml\n" in unit
    assert "LoadCredential=api_key:/etc/resend-dropd/api_key\n" in unit
    assert "ExecReload=/usr/sbin/resend-dropd -c /etc/resend-dropd/resend-dropd.yaml reload\n" \
        in unit
    assert not re.search(r"@[A-Z_]+@", unit), "unsubstituted @VAR@ in the unit"


def test_install_prefix_at_install_time_stays_in_prefix(build, tmp_path):
    """`cmake --install --prefix DIR` without DESTDIR: DIR is the staging root."""
    configure(build, "/usr")
    prefix = tmp_path / WEIRD
    written, _ = install(build, prefix=str(prefix))
    assert_all_under(written, prefix)
    assert sorted(written) == files_under(prefix)
    for rel in LAYOUT:
        assert (prefix / rel).is_file(), rel
    assert (prefix / "etc/resend-dropd/resend-dropd.yaml").is_file()


def test_weird_configured_prefix_with_destdir(build, tmp_path):
    prefix = f"/opt-not/{WEIRD}"
    configure(build, prefix)
    root = tmp_path / "root"
    written, _ = install(build, destdir=root)
    assert_all_under(written, root)
    for rel in LAYOUT:
        assert (root / prefix.lstrip("/") / rel).is_file(), rel
    conf = root / prefix.lstrip("/") / "etc/resend-dropd/resend-dropd.yaml"
    assert conf.is_file()
    unit = unit_text(root / prefix.lstrip("/") / "lib/systemd/system/resend-dropd.service")
    assert f"ExecStart={prefix}/sbin/resend-dropd -c {prefix}/etc/resend-dropd/" in unit


def test_existing_configuration_is_never_overwritten(build, tmp_path):
    configure(build, "/usr")
    root = tmp_path / "root"
    conf = root / "etc/resend-dropd/resend-dropd.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text("# the operator's own\n")
    os.chmod(conf, 0o600)
    _, out = install(build, destdir=root)
    assert conf.read_text() == "# the operator's own\n"
    assert os.stat(conf).st_mode & 0o777 == 0o600
    assert f"Keeping existing configuration: {conf}" in out
    # The example is still installed, and a second install (an upgrade) keeps the file too.
    with open(os.path.join(SOURCE_DIR, "config/resend-dropd.yaml")) as f:
        example = f.read()
    assert (root / "usr/share/doc/resend-dropd/examples/resend-dropd.yaml").read_text() == example
    install(build, destdir=root)
    assert conf.read_text() == "# the operator's own\n"


def test_fresh_configuration_is_the_example(build, tmp_path):
    configure(build, "/usr")
    root = tmp_path / "root"
    install(build, destdir=root)
    conf = root / "etc/resend-dropd/resend-dropd.yaml"
    with open(os.path.join(SOURCE_DIR, "config/resend-dropd.yaml")) as f:
        assert conf.read_text() == f.read()
    assert os.stat(conf).st_mode & 0o777 == 0o644


# --- sysusers.d, tmpfiles.d ------------------------------------------------------------------

def test_sysusers_and_tmpfiles_make_the_user_and_its_directories(build, tmp_path):
    if not shutil.which("systemd-sysusers") or not shutil.which("systemd-tmpfiles"):
        pytest.skip("systemd-sysusers/systemd-tmpfiles missing: install the systemd package")
    configure(build, "/usr")
    stage = tmp_path / "stage"
    install(build, destdir=stage)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    run(["systemd-sysusers", f"--root={root}",
         str(stage / "usr/lib/sysusers.d/resend-dropd.conf")])
    entry = [line for line in (root / "etc/passwd").read_text().splitlines()
             if line.startswith("resend-dropd:")]
    assert len(entry) == 1, (root / "etc/passwd").read_text()
    fields = entry[0].split(":")
    uid, gid, home, shell = int(fields[2]), int(fields[3]), fields[5], fields[6]
    assert 0 < uid < 1000 and home == "/var/lib/resend-dropd" and shell == "/usr/sbin/nologin"
    assert any(g.startswith(f"resend-dropd:x:{gid}:")
               for g in (root / "etc/group").read_text().splitlines())
    run(["systemd-tmpfiles", f"--root={root}", "--create",
         str(stage / "usr/lib/tmpfiles.d/resend-dropd.conf")])
    for d in ("var/lib/resend-dropd", "run/resend-dropd"):
        st = os.stat(root / d)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, uid, gid), d


# --- the unit --------------------------------------------------------------------------------

def need_systemd_analyze():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing: install the systemd package "
                    "(scripts/install-deps --tests)")


@pytest.fixture
def installed(build, tmp_path):
    """Installed for real into a prefix, so that the paths in the unit exist."""
    prefix = tmp_path / "usr"
    configure(build, str(prefix))
    install(build)
    return prefix


def test_systemd_analyze_verify_is_clean(installed):
    need_systemd_analyze()
    unit = installed / "lib/systemd/system/resend-dropd.service"
    # MANPATH: so that Documentation=man:... is looked up among the pages just installed.
    p = run(["systemd-analyze", "verify", str(unit)],
            env={"MANPATH": str(installed / "share/man")}, check=False)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", (p.stdout, p.stderr)


def test_systemd_analyze_verify_notices_a_broken_unit(installed, tmp_path):
    """The check above can fail: a unit whose binary is missing does not pass."""
    need_systemd_analyze()
    unit = installed / "lib/systemd/system/resend-dropd.service"
    os.unlink(installed / "sbin/resend-dropd")
    p = run(["systemd-analyze", "verify", str(unit)],
            env={"MANPATH": str(installed / "share/man")}, check=False)
    assert p.returncode != 0 and "not executable" in p.stderr, (p.stdout, p.stderr)


def exposure(unit):
    p = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
            check=False)
    m = re.search(r"Overall exposure level for resend-dropd\.service: (\d+\.\d+)", p.stdout)
    assert m, (p.returncode, p.stdout, p.stderr)
    return float(m.group(1)), p.stdout


def test_unit_exposure_is_at_most_2(installed):
    need_systemd_analyze()
    level, report = exposure(installed / "lib/systemd/system/resend-dropd.service")
    assert level <= MAX_EXPOSURE, report


def test_unit_keeps_what_the_daemon_needs(installed):
    """The hardening must not take away what the daemon uses."""
    unit = unit_text(installed / "lib/systemd/system/resend-dropd.service")
    settings = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            settings.setdefault(k, []).append(v)
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30s"]
    families = settings["RestrictAddressFamilies"][0].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    assert settings["AmbientCapabilities"] == ["CAP_LEASE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_LEASE"]
    # CAP_LEASE is checked in the initial user namespace: no PrivateUsers=.
    assert "PrivateUsers" not in settings
    assert settings["RuntimeDirectory"] == ["resend-dropd"]
    assert settings["RuntimeDirectoryMode"] == ["0750"]
    assert settings["StateDirectory"] == ["resend-dropd"]
    assert settings["User"] == ["resend-dropd"]


def test_syscall_filter_allows_the_daemons_system_calls(installed):
    """inotify, flock, leases (fcntl), renameat2, epoll, sockets, setrlimit: all in the filter."""
    need_systemd_analyze()
    p = run(["systemd-analyze", "syscall-filter", "--no-pager"])
    groups, cur = {}, None
    for line in p.stdout.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.split()[0], set())
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.add(line.strip())

    def expand(name, seen=()):
        out = set()
        for s in groups.get(name, ()):
            out |= expand(s, seen + (name,)) if s.startswith("@") and s not in seen else {s}
        return out

    unit = unit_text(installed / "lib/systemd/system/resend-dropd.service")
    allowed, denied = set(), set()
    for line in unit.splitlines():
        if line.startswith("SystemCallFilter="):
            v = line.split("=", 1)[1]
            target = denied if v.startswith("~") else allowed
            for item in v.lstrip("~").split():
                target |= expand(item) if item.startswith("@") else {item}
    needed = ["inotify_init1", "inotify_add_watch", "inotify_rm_watch", "flock", "fcntl",
              "renameat2", "linkat", "unlinkat", "openat", "fstat", "newfstatat", "fsync",
              "fdatasync", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "socket",
              "connect", "bind", "listen", "accept4", "sendmsg", "recvmsg", "setrlimit",
              "prlimit64", "clone", "clone3", "eventfd2", "pipe2", "getrandom", "getdents64"]
    missing = [s for s in needed if s not in allowed or s in denied]
    assert not missing, f"the unit's SystemCallFilter= refuses {missing}"


# --- man pages -------------------------------------------------------------------------------

def render(page):
    if not shutil.which("man"):
        pytest.skip("man missing: install man-db (scripts/install-deps --tests)")
    p = run(["man", "--warnings", "-l", str(page)], env={"MANWIDTH": "80"},
            check=False)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout


def test_man_pages_are_installed_and_render_without_warnings(build, tmp_path):
    configure(build, "/usr")
    root = tmp_path / "root"
    install(build, destdir=root)
    page8 = render(root / "usr/share/man/man8/resend-dropd.8")
    page5 = render(root / "usr/share/man/man5/resend-dropd.yaml.5")
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "SIGNALS", "EXIT STATUS", "FILES"):
        assert f"\n{section}\n" in page8, section
    for text in ("SIGHUP", "SIGTERM", "SIGUSR1", "flock", "/etc/resend-dropd/resend-dropd.yaml",
                 "/run/resend-dropd/control.sock", ".resend-dropd/", "status", "retry",
                 "pause", "resume"):
        assert text in page8, text
    assert "resend-dropd.yaml - configuration of resend-dropd" in page5


def c_string_lists(source, pattern, item=r'"([^"]*)"'):
    """The strings (item's group) inside every block of source that pattern's group matches."""
    with open(os.path.join(SOURCE_DIR, source)) as f:
        text = f.read()
    out = []
    for m in re.finditer(pattern, text, re.S):
        out += re.findall(item, m.group(1))
    return out


def test_man_pages_name_every_option_and_key():
    """Kept in step with the code: every long option of main.c and every configuration key of
    config.c is in the pages."""
    with open(os.path.join(SOURCE_DIR, "man/resend-dropd.8")) as f:
        page8 = f.read().replace("\\-", "-")
    with open(os.path.join(SOURCE_DIR, "man/resend-dropd.yaml.5")) as f:
        page5 = f.read().replace("\\-", "-")
    options = re.findall(r'\{"([a-z-]+)", (?:no|required|optional)_argument',
                         open(os.path.join(SOURCE_DIR, "src/main.c")).read())
    assert options
    missing = [o for o in options if f"--{o}" not in page8]
    assert not missing, f"options missing from man/resend-dropd.8: {missing}"
    keys = c_string_lists("src/config.c",
                          r"static const struct yamlconf_field \w+_fields\[\] = \{(.*?)\n\};",
                          r'\{"([^"]+)", YAMLCONF_')
    assert "base_url" in keys and "folders" in keys
    missing = [k for k in keys
               if not re.search(rf"^\.(?:B|BR|BI|IR|RB)\b.*\b{re.escape(k)}\b", page5, re.M)]
    assert not missing, f"configuration keys missing from man/resend-dropd.yaml.5: {missing}"
