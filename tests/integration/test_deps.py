"""scripts/install-deps installs what each mode needs on a bare Debian 12, and no daemon (issue 16).

`./scripts/test` once failed after fifteen minutes on a bare root because nothing installed
build-essential: CI machines happened to have it. So the lists are checked here against what
asks for packages, mapped to the packages that own the files on this machine (`dpkg -S`):
  * debian/control's Build-Depends (and build-essential) are in the lists of --package and --tests;
  * what CMakeLists.txt finds (pkg_check_modules, find_path, find_library, find_program) comes from
    a package of the plain list, and from one of debian/control's Build-Depends (the package builds
    in a clean chroot); what tests/CMakeLists.txt finds, from one of the --tests list;
  * every mode compiles, so every list has the plain one, build-essential included;
  * the programs and Python modules the tests use come from the --tests list (or from a package
    every Debian has: Essential, or Priority required);
  * every listed package exists.
Each check is a function of file paths that returns its findings; the self-tests feed broken
copies of the real files and see each finding reported.

Then install-deps itself, in an overlay of this machine's root (private mount and PID
namespaces, an overlayfs over / with a tmpfs on top, a chroot): openssh-server is purged there and
installed again by install-deps --tests, which must leave its service neither running nor enabled,
stop it when the machine's own policy-rc.d let it start, leave alone what the machine had enabled,
and then do nothing, without a network, when run again. That part needs root, namespaces, overlayfs
and Debian's archive (about 45 s); it skips, saying why, without them.
"""

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
INSTALL_DEPS = os.path.join(SOURCE_DIR, "scripts", "install-deps")
CONTROL = os.path.join(SOURCE_DIR, "debian", "control")
CMAKE_TOP = os.path.join(SOURCE_DIR, "CMakeLists.txt")
CMAKE_TESTS = os.path.join(SOURCE_DIR, "tests", "CMakeLists.txt")
TESTS_DIRS = [os.path.join(SOURCE_DIR, "tests", d) for d in ("integration", "fake_resend")]
MODES = ["", "--tests", "--fuzz", "--package"]
# The programs of tests still to come (a container booted with systemd-nspawn; uploaders as two
# real users, with ACLs): checked like those the tests call already.
UPCOMING_TOOLS = ["systemd-nspawn", "setfacl", "getfacl", "nsenter", "unshare", "setpriv"]
# Debian's paths, not whatever a developer's PATH puts first (pyenv, /usr/local).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
TIMEOUT = 60


def run(cmd, timeout=TIMEOUT, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# --- what the lists, debian/control and the CMake files say --------------------------------------

def mode_packages(script, mode):
    """`install-deps --list MODE`: the packages of MODE."""
    p = run(["sh", script, "--list", *([mode] if mode else [])])
    assert p.returncode == 0, f"{script} --list {mode} exited {p.returncode}: {p.stderr}"
    assert p.stderr == "", p.stderr
    names = p.stdout.split()
    assert names and all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", n) for n in names), p.stdout
    return names


def build_depends(control):
    """debian/control's Build-Depends(-Arch, -Indep): one list of alternatives per entry, names
    only (no versions, architectures, profiles or :native); debhelper-compat is debhelper's."""
    with open(control) as f:
        source = f.read().split("\n\n")[0]
    fields = {}
    name = None
    for line in source.splitlines():
        if line.startswith((" ", "\t")) and name:
            fields[name] += " " + line.strip()
        elif ":" in line and not line.startswith("#"):
            name, value = line.split(":", 1)
            fields[name] = value.strip()
    entries = []
    for field in ("Build-Depends", "Build-Depends-Arch", "Build-Depends-Indep"):
        for entry in fields.get(field, "").split(","):
            alternatives = []
            for alt in entry.split("|"):
                alt = re.sub(r"\([^)]*\)|\[[^]]*\]|<[^>]*>", "", alt).strip()
                alt = alt.split(":")[0]
                if alt:
                    alternatives.append("debhelper" if alt == "debhelper-compat" else alt)
            if alternatives:
                entries.append(alternatives)
    return entries


CMAKE_CALL = re.compile(r"\b(pkg_check_modules|pkg_search_module|find_path|find_file|find_library"
                        r"|find_program|find_package|cmake_minimum_required)\s*\(([^)]*)\)",
                        re.IGNORECASE)
FIND_KEYWORDS = {"NAMES", "NAMES_PER_DIR", "HINTS", "PATHS", "PATH_SUFFIXES", "DOC", "REQUIRED",
                 "NO_DEFAULT_PATH", "NO_PACKAGE_ROOT_PATH", "NO_CMAKE_PATH",
                 "NO_CMAKE_ENVIRONMENT_PATH", "NO_SYSTEM_ENVIRONMENT_PATH",
                 "NO_CMAKE_SYSTEM_PATH", "NO_CMAKE_INSTALL_PREFIX", "CMAKE_FIND_ROOT_PATH_BOTH",
                 "ONLY_CMAKE_FIND_ROOT_PATH", "NO_CMAKE_FIND_ROOT_PATH", "NO_CACHE", "VALIDATOR",
                 "ENV", "REGISTRY_VIEW"}
PKG_KEYWORDS = {"REQUIRED", "QUIET", "NO_CMAKE_PATH", "NO_CMAKE_ENVIRONMENT_PATH",
                "IMPORTED_TARGET", "GLOBAL"}


def cmake_requirements(cmakelists):
    """What a CMakeLists.txt asks the system for, as (kind, name, search directories):
    ("pc", module), ("header", file), ("library", name), ("program", name, [dirs]), and
    ("unknown", call) for what this test cannot map yet."""
    with open(cmakelists) as f:
        text = f.read()
    text = re.sub(r"\[(=*)\[.*?\]\1\]", " ", text, flags=re.S)   # bracket arguments: code as text
    text = re.sub(r"#[^\n]*", "", text)
    found = []
    for call, args in CMAKE_CALL.findall(text):
        call = call.lower()
        words = args.split()
        if call == "cmake_minimum_required":
            found.append(("program", "cmake", []))
        elif call == "find_package":
            if words and words[0] == "PkgConfig":
                found.append(("program", "pkg-config", []))
            else:
                found.append(("unknown", f"find_package({args.strip()})", []))
        elif call in ("pkg_check_modules", "pkg_search_module"):
            for word in words[1:]:
                if word not in PKG_KEYWORDS:
                    found.append(("pc", re.split(r"[<>=]", word)[0], []))
        else:
            kind = {"find_path": "header", "find_file": "header", "find_library": "library",
                    "find_program": "program"}[call]
            names, dirs, section = [], [], "NAMES"
            for word in words[1:]:
                if word in FIND_KEYWORDS:
                    section = word
                elif section == "NAMES":   # also the first word: find_path(VAR name)
                    names.append(word)
                elif section in ("PATHS", "HINTS"):
                    dirs.append(word)
            found.extend((kind, name, dirs) for name in names)
    return found


def spellings(path):
    """PATH, its other spelling across the merged /usr, and the same for what a symlink points
    at: dpkg knows a file under one of them."""
    found = []
    for p in [path] + ([os.path.realpath(path)] if os.path.islink(path) else []):
        found += [p, p[4:] if p.startswith("/usr/") else "/usr" + p]
    return found


OWNERS = {}


def learn_owners(paths):
    """Who ships each spelling of PATHS, with one dpkg-query -S (each reads dpkg's whole file
    database, a fifth of a second)."""
    todo = sorted({s for p in paths for s in spellings(p)} - OWNERS.keys())
    if not todo:
        return
    out = run(["dpkg-query", "-S", *todo]).stdout
    OWNERS.update((s, None) for s in todo)
    for line in out.splitlines():
        packages, _, path = line.partition(": ")
        if not line.startswith("diversion ") and OWNERS.get(path, "") is None:
            OWNERS[path] = packages.split(",")[0].split(":")[0].strip()


def owner(path):
    """The package that ships PATH here, or None."""
    learn_owners([path])
    return next((OWNERS[s] for s in spellings(path) if OWNERS.get(s)), None)


def locate(kind, name, dirs):
    """Where this machine has a CMake requirement, or None."""
    if kind == "pc":
        p = run(["pkg-config", "--variable=pcfiledir", name])
        path = os.path.join(p.stdout.strip(), name + ".pc")
        return path if p.returncode == 0 and os.path.exists(path) else None
    if kind == "header":
        search = ["/usr/local/include", f"/usr/include/{MULTIARCH}", "/usr/include"]
        files = [name]
    elif kind == "library":
        search = ["/usr/local/lib", f"/usr/lib/{MULTIARCH}", "/usr/lib", f"/lib/{MULTIARCH}", "/lib"]
        files = [f"lib{name}.so", f"lib{name}.a"]
    else:
        return shutil.which(name, path=":".join(dirs) if dirs else PATH)
    for d in search:
        for f in files:
            if os.path.exists(os.path.join(d, f)):
                return os.path.join(d, f)
    return None


def provided(package, listed, program=False):
    """A package of LISTED ships it; a program may also come from the -minimal part of a listed
    package (/usr/bin/python3 is python3-minimal's, which python3 pre-depends on)."""
    return package in listed or (program and package.endswith("-minimal")
                                 and package[:-len("-minimal")] in listed)


@functools.lru_cache(maxsize=None)
def in_every_debian(package):
    """Essential or Priority required: debootstrap's minbase has it."""
    p = run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", package])
    return p.returncode == 0 and (p.stdout.startswith("yes") or p.stdout.endswith("required"))


# --- the checks ----------------------------------------------------------------------------------

def check_build_depends_listed(control, script):
    """Build-Depends and build-essential against the lists of --package and --tests."""
    problems = []
    for mode in ("--package", "--tests"):
        listed = set(mode_packages(script, mode))
        for alternatives in build_depends(control) + [["build-essential"]]:
            if not listed & set(alternatives):
                problems.append(f"install-deps {mode} lacks {' | '.join(alternatives)} "
                                f"(Build-Depends of {control}, or dpkg-checkbuilddeps)")
    return problems


def check_build_essential(script):
    """Every mode compiles: every mode lists build-essential and everything the plain mode does."""
    problems = []
    plain = mode_packages(script, "")
    for mode in MODES:
        listed = mode_packages(script, mode)
        if "build-essential" not in listed:
            problems.append(f"install-deps {mode or '(plain)'} lacks build-essential")
        lacking = [p for p in plain if p not in listed]
        if lacking:
            problems.append(f"install-deps {mode} lacks {lacking}, which the plain mode has")
    return problems


def requirement_problems(cmakelists, listed, what):
    """Each requirement of CMAKELISTS against the packages LISTED (named WHAT in messages)."""
    problems = []
    label = f"{os.path.basename(os.path.dirname(cmakelists))}/{os.path.basename(cmakelists)}"
    wanted = [(kind, name, dirs, None if kind == "unknown" else locate(kind, name, dirs))
              for kind, name, dirs in cmake_requirements(cmakelists)]
    learn_owners([path for *_, path in wanted if path])
    for kind, name, dirs, path in wanted:
        if kind == "unknown":
            problems.append(f"{label}: {name}: test_deps.py does not know which file that "
                            f"finds; teach it (cmake_requirements)")
            continue
        if path is None:
            problems.append(f"{label}: {kind} {name!r} is not on this machine, so its package "
                            f"cannot be checked")
            continue
        package = owner(path)
        if package is None:
            problems.append(f"{label}: {kind} {name!r} is {path}, which no package ships")
        elif not provided(package, listed, program=kind == "program"):
            problems.append(f"{label}: {kind} {name!r} is {path}, from {package}, which "
                            f"{what} does not have")
    return problems


def check_cmake_listed(script, cmake_top, cmake_tests):
    """The core's requirements come from the plain list, the tests' from the --tests list."""
    return (requirement_problems(cmake_top, set(mode_packages(script, "")),
                                 "install-deps (plain)") +
            requirement_problems(cmake_tests, set(mode_packages(script, "--tests")),
                                 "install-deps --tests"))


def check_core_in_build_depends(control, cmake_top):
    """What CMakeLists.txt needs to build the daemon is in Build-Depends (plus build-essential),
    or the package does not build in a clean chroot."""
    named = {alt for entry in build_depends(control) for alt in entry}
    return requirement_problems(cmake_top, named | {"build-essential"},
                                f"Build-Depends ({control})")


TOOL_PATTERNS = [
    r"\bwhich\(\s*[\"']([\w.+-]+)[\"']",
    r"\btool\(\s*[\"']([\w.+-]+)[\"']",
    r"\b(?:run|Popen|check_output|check_call|call)\(\s*\[\s*[\"']([\w.+-]+)[\"']",
    r"\b(?:cmd|argv|command)\s*=\s*\[\s*[\"']([\w.+-]+)[\"']",
    # A program's path in a constant: SSHD = "/usr/sbin/sshd".
    r"(?m)^[A-Z_]+\s*=\s*[\"'](/(?:usr/)?(?:s?bin|lib)/[\w./+-]+)[\"']\s*$",
]


def programs_of_tests(tests_dirs):
    """The programs the Python tests run, by name or by path, with the files that run them (this
    file's own are dpkg's, apt's and util-linux's, and its self-tests name programs on purpose)."""
    found = {}
    for d in tests_dirs:
        for name in sorted(os.listdir(d)):
            if not name.endswith(".py") or name == os.path.basename(__file__):
                continue
            with open(os.path.join(d, name)) as f:
                text = f.read()
            for pattern in TOOL_PATTERNS:
                for program in re.findall(pattern, text):
                    found.setdefault(program, set()).add(name)
    return found


def modules_of_tests(tests_dirs):
    """The modules the Python tests import that are neither the standard library's nor theirs."""
    local = {os.path.splitext(f)[0] for d in tests_dirs for f in os.listdir(d)}
    found = {}
    for d in tests_dirs:
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                with open(os.path.join(d, name)) as f:
                    for module in re.findall(r"^\s*(?:import|from)\s+(\w+)", f.read(), re.M):
                        if module not in sys.stdlib_module_names and module not in local:
                            found.setdefault(module, set()).add(name)
    return found


def check_test_tools(script, tests_dirs, extra=()):
    """The programs and modules the tests use come from the --tests list or from every Debian."""
    listed = set(mode_packages(script, "--tests"))
    problems = []
    wanted = programs_of_tests(tests_dirs)
    for program in extra:
        wanted.setdefault(program, set()).add("UPCOMING_TOOLS")
    # The daemon itself: built by the tests, or installed by their package (in a container).
    wanted.pop("resend-dropd", None)
    paths = {program: program if program.startswith("/") else shutil.which(program, path=PATH)
             for program in wanted}
    learn_owners([path for path in paths.values() if path and os.path.exists(path)])
    for program, users in sorted(wanted.items()):
        path = paths[program]
        if not path or not os.path.exists(path):
            problems.append(f"{program} (run by {sorted(users)}) is not on this machine, "
                            f"after scripts/install-deps --tests? Its package is not listed")
            continue
        package = owner(path)
        if package is None:
            problems.append(f"{program} (run by {sorted(users)}) is {path}, which no package ships")
        elif not (provided(package, listed, program=True) or in_every_debian(package)):
            problems.append(f"{program} (run by {sorted(users)}) is {path}, from {package}, "
                            f"which install-deps --tests does not have")
    python = "/usr/bin/python3"
    for module, users in sorted(modules_of_tests(tests_dirs).items()):
        p = run([python, "-c", f"import {module}; print({module}.__file__)"])
        package = owner(p.stdout.strip()) if p.returncode == 0 else None
        if package is None:
            problems.append(f"Python module {module} (imported by {sorted(users)}) is not "
                            f"from a Debian package here")
        elif not provided(package, listed):
            problems.append(f"Python module {module} (imported by {sorted(users)}) is "
                            f"{package}'s, which install-deps --tests does not have")
    return problems


def check_packages_exist(script):
    """Every package of every mode is installed here, or apt knows it (a typo is not)."""
    have_lists = any("_Packages" in f for f in os.listdir("/var/lib/apt/lists"))
    problems = []
    names = sorted({p for mode in MODES for p in mode_packages(script, mode)})
    p = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Package}\n", *names])
    installed = {line.split()[1] for line in p.stdout.splitlines() if line[1:2] == "i"}
    for name in names:
        if name in installed:
            continue
        if not have_lists:
            pytest.skip(f"{name} is not installed and apt has no package lists to look it up")
        if run(["apt-cache", "show", "--no-all-versions", name]).returncode != 0:
            problems.append(f"install-deps lists {name}, which apt does not know")
    return problems


# --- the checks on the real files ----------------------------------------------------------------

def report(problems):
    assert not problems, "\n".join(problems)


def test_build_depends_are_installed_for_the_package_and_the_tests():
    report(check_build_depends_listed(CONTROL, INSTALL_DEPS))


def test_every_mode_has_build_essential_and_the_plain_list():
    report(check_build_essential(INSTALL_DEPS))


def test_cmake_requirements_come_from_the_lists():
    report(check_cmake_listed(INSTALL_DEPS, CMAKE_TOP, CMAKE_TESTS))


def test_build_depends_cover_the_core_requirements():
    report(check_core_in_build_depends(CONTROL, CMAKE_TOP))


def test_programs_and_modules_of_the_tests_come_from_the_tests_list():
    report(check_test_tools(INSTALL_DEPS, TESTS_DIRS, UPCOMING_TOOLS))


def test_listed_packages_exist():
    report(check_packages_exist(INSTALL_DEPS))


def test_list_refuses_what_it_does_not_know():
    for args in (["--bogus"], ["--tests", "--fuzz"], ["--list", "tests"]):
        p = run(["sh", INSTALL_DEPS, *args])
        assert p.returncode == 2 and "usage:" in p.stderr and p.stdout == "", (args, p)


# --- each check fails on a broken copy ---------------------------------------------------------

def copy_with(tmp_path, source, old, new):
    with open(source) as f:
        text = f.read()
    assert old in text, f"{old!r} is not in {source}: update this self-test"
    path = tmp_path / os.path.basename(source)
    path.write_text(text.replace(old, new, 1))
    return str(path)


def script_without(tmp_path, package):
    """A copy of install-deps whose lists lack PACKAGE."""
    with open(INSTALL_DEPS) as f:
        text = f.read()
    broken = re.sub(rf"(?<=[\s\"]){re.escape(package)}(?=[\s\"])", "", text)
    assert broken != text, f"{package} is not in install-deps: update this self-test"
    path = tmp_path / "install-deps"
    path.write_text(broken)
    return str(path)


def test_self_a_build_dependency_missing_from_the_lists_is_reported(tmp_path):
    control = copy_with(tmp_path, CONTROL, "libsqlite3-dev,", "libsqlite3-dev,\n               libzstd-dev,")
    problems = check_build_depends_listed(control, INSTALL_DEPS)
    assert sum("libzstd-dev" in p for p in problems) == 2, problems   # --package and --tests
    problems = check_build_depends_listed(CONTROL, script_without(tmp_path, "debhelper"))
    assert sum("lacks debhelper" in p for p in problems) == 2, problems   # debhelper-compat


def test_self_build_essential_missing_is_reported(tmp_path):
    script = script_without(tmp_path, "build-essential")
    problems = check_build_essential(script)
    assert sum("lacks build-essential" in p for p in problems) == len(MODES), problems
    problems = check_build_depends_listed(CONTROL, script)
    assert sum("build-essential" in p for p in problems) == 2, problems


def test_self_a_cmake_requirement_missing_from_the_lists_is_reported(tmp_path):
    problems = check_cmake_listed(script_without(tmp_path, "libuv1-dev"), CMAKE_TOP, CMAKE_TESTS)
    assert len(problems) == 1 and "'libuv'" in problems[0] and "libuv1-dev" in problems[0], problems
    problems = check_cmake_listed(script_without(tmp_path, "libcsv-dev"), CMAKE_TOP, CMAKE_TESTS)
    assert len(problems) == 2 and all("libcsv-dev" in p for p in problems), problems  # csv.h, libcsv
    problems = check_cmake_listed(script_without(tmp_path, "libcmocka-dev"), CMAKE_TOP, CMAKE_TESTS)
    assert len(problems) == 1 and "'cmocka'" in problems[0], problems
    # A new requirement of the core that only the tests' list has.
    top = copy_with(tmp_path, CMAKE_TOP, "pkg_check_modules(SQLITE",
                    "pkg_check_modules(CMOCKA REQUIRED cmocka)\npkg_check_modules(SQLITE")
    problems = check_cmake_listed(INSTALL_DEPS, top, CMAKE_TESTS)
    assert len(problems) == 1 and "libcmocka-dev" in problems[0], problems
    # One this test cannot map is reported rather than passed over.
    top = copy_with(tmp_path, CMAKE_TOP, "find_package(PkgConfig REQUIRED)",
                    "find_package(PkgConfig REQUIRED)\nfind_package(ZLIB REQUIRED)")
    problems = check_cmake_listed(INSTALL_DEPS, top, CMAKE_TESTS)
    assert len(problems) == 1 and "find_package(ZLIB REQUIRED)" in problems[0], problems


def test_self_a_core_requirement_missing_from_build_depends_is_reported(tmp_path):
    control = copy_with(tmp_path, CONTROL, "libsqlite3-dev,", "")
    problems = check_core_in_build_depends(control, CMAKE_TOP)
    assert len(problems) == 1 and "'sqlite3'" in problems[0], problems
    control = copy_with(tmp_path, CONTROL, "pkgconf,", "")
    problems = check_core_in_build_depends(control, CMAKE_TOP)
    assert len(problems) == 1 and "'pkg-config'" in problems[0], problems


def test_self_a_program_or_module_of_the_tests_missing_from_the_list_is_reported(tmp_path):
    problems = check_test_tools(script_without(tmp_path, "openssh-client"), TESTS_DIRS)
    assert {p.split()[0] for p in problems} == {"scp", "sftp", "ssh-keygen"}, problems
    problems = check_test_tools(script_without(tmp_path, "acl"), TESTS_DIRS, UPCOMING_TOOLS)
    assert {p.split()[0] for p in problems} == {"setfacl", "getfacl"}, problems
    problems = check_test_tools(script_without(tmp_path, "python3-pytest"), TESTS_DIRS)
    assert problems and all(p.startswith("Python module pytest") for p in problems), problems
    # A new test calling a program nobody installs, one this machine does not even have.
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_new.py").write_text('import subprocess\nimport shutil\n'
                                       'shutil.which("systemd-nspawn")\n'
                                       'subprocess.run(["rdd-no-such-tool", "-v"])\n')
    problems = check_test_tools(script_without(tmp_path, "systemd-container"), [str(tests)])
    assert len(problems) == 2, problems
    assert problems[0].startswith("rdd-no-such-tool") and "not on this machine" in problems[0]
    assert problems[1].startswith("systemd-nspawn") and "systemd-container" in problems[1]


def test_self_an_unknown_package_is_reported(tmp_path):
    script = copy_with(tmp_path, INSTALL_DEPS, "libclang-rt-14-dev", "libclang-rt-14-dev rdd-no-such-package")
    assert check_packages_exist(script) == ["install-deps lists rdd-no-such-package, which apt does "
                                            "not know"]


# --- install-deps in an overlay of this machine --------------------------------------------------

def find_tool(name):
    return shutil.which(name, path=PATH)


class Overlay:
    """This machine's root as the lower layer of an overlayfs with a tmpfs on top, in private
    mount and PID namespaces that a sleeping holder (their PID 1) keeps alive; commands run in a
    chroot into it. Nothing is mounted in the machine's own namespace, and close() undoes every
    mount anyway. The PID namespace keeps the chroot's processes apart from the machine's: a
    lock file of the live root below (useradd's /etc/passwd.lock, from a test that adds users) is
    stale in there, and what install-deps looks for or stops is only the chroot's."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="rdd-deps-overlay-")
        self.root = os.path.join(self.base, "root")
        self.mounts = []
        self.unshare = subprocess.Popen(
            [find_tool("unshare"), "--mount", "--propagation", "private", "--pid", "--fork",
             "--kill-child", "sleep", "3600"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        own = os.readlink("/proc/self/ns/mnt")
        self.holder = None
        while self.holder is None:
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    if (ppid == self.unshare.pid and
                            os.readlink(f"/proc/{pid}/exe").endswith("/sleep") and
                            os.readlink(f"/proc/{pid}/ns/mnt") != own):
                        self.holder = int(pid)
                        self.ns = os.readlink(f"/proc/{pid}/ns/mnt")
                except (OSError, ValueError, IndexError):
                    pass
            if self.holder is None:
                if self.unshare.poll() is not None or time.monotonic() > deadline:
                    self.unshare.kill()
                    self.unshare.wait(10)
                    shutil.rmtree(self.base, ignore_errors=True)
                    raise OSError("unshare --mount --pid: "
                                  f"{self.unshare.stderr.read().decode().strip()}")
                time.sleep(0.05)

    def ns_run(self, *command, timeout=TIMEOUT, **kw):
        # --root --wd: the holder's, which setns() alone would leave for the namespace's own (not
        # the same when this runs in a chroot).
        return run([find_tool("nsenter"), f"--target={self.holder}", "--mount", "--pid", "--root",
                    "--wd", "--", *command], timeout=timeout, **kw)

    def mount(self, *args):
        target = args[-1]
        p = self.ns_run("mount", *args)
        if p.returncode != 0:
            raise OSError(f"mount {' '.join(args)}: {p.stderr.strip()}")
        self.mounts.append(target)

    def start(self):
        rw = os.path.join(self.base, "rw")
        os.makedirs(rw)
        os.makedirs(self.root)
        self.mount("-t", "tmpfs", "-o", "size=3g,mode=0755", "tmpfs", rw)
        p = self.ns_run("mkdir", f"{rw}/upper", f"{rw}/work")
        assert p.returncode == 0, p.stderr
        self.mount("-t", "overlay", "-o", f"lowerdir=/,upperdir={rw}/upper,workdir={rw}/work",
                   "overlay", self.root)
        self.mount("-t", "proc", "proc", f"{self.root}/proc")
        self.mount("--bind", "/dev", f"{self.root}/dev")
        self.mount("--bind", "/dev/pts", f"{self.root}/dev/pts")

    def chroot(self, script, *args, timeout=TIMEOUT, net=True, **kw):
        """sh -c SCRIPT sh ARGS... in the chroot (without a network with net=False)."""
        command = [find_tool("chroot"), self.root, "/usr/bin/env", "-i", f"PATH={PATH}",
                   "HOME=/root", "LANG=C.UTF-8", "/bin/sh", "-c", script, "sh", *args]
        if not net:
            command = [find_tool("unshare"), "--net", *command]
        return self.ns_run(*command, timeout=timeout, **kw)

    def write(self, path, text, mode="644"):
        """Replaces a file of the chroot (a symlink itself, not what it points at), from inside:
        through /proc/PID/root an absolute symlink would lead out of it."""
        p = self.chroot('mkdir -p "${1%/*}" && rm -f "$1" && cat >"$1" && chmod "$2" "$1"',
                        path, mode, input=text)
        assert p.returncode == 0, p.stderr

    def path(self, path):
        """A path of the chroot to read from here (through the holder's /proc root), for paths
        that go through no absolute symlink."""
        return f"/proc/{self.holder}/root{self.root}{path}"

    def processes(self):
        """The processes in the namespace but the holder: what the chroot left running."""
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) not in (self.holder, self.unshare.pid):
                try:
                    if os.readlink(f"/proc/{pid}/ns/mnt") == self.ns:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            found.append((int(pid), f.read().replace(b"\0", b" ").decode()))
                except OSError:
                    pass
        return found

    def close(self):
        try:
            for pid, _ in self.processes():
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            for target in reversed(self.mounts):
                if self.ns_run("umount", target).returncode != 0:
                    self.ns_run("umount", "-l", target)
        finally:
            # The namespaces, and whatever is still mounted, go with their last process; the
            # kernel ends every process of a PID namespace whose first one ends.
            self.unshare.kill()
            self.unshare.wait(10)
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def overlay():
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, chroot, dpkg)")
    for name in ("unshare", "nsenter", "chroot", "mount"):
        if not find_tool(name):
            pytest.skip(f"no {name}")
    # All of --tests but openssh-server must be here: only that one is installed again.
    listed = mode_packages(INSTALL_DEPS, "--tests")
    p = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Package}\n", *listed])
    have = {line.split()[1] for line in p.stdout.splitlines() if line[1:2] == "i"}
    lacking = sorted(set(listed) - have - {"openssh-server"})
    if lacking:
        pytest.skip(f"this machine lacks {lacking} (run scripts/install-deps --tests first): "
                    f"the overlay would download them all")
    try:
        ov = Overlay()
    except OSError as error:
        pytest.skip(f"no private mount namespace here: {error}")
    try:
        try:
            ov.start()
        except OSError as error:
            pytest.skip(f"cannot mount the overlay: {error}")
        p = ov.ns_run("cp", INSTALL_DEPS, f"{ov.root}/root/install-deps")
        assert p.returncode == 0, p.stderr
        p = ov.chroot("apt-get update -qq --error-on=any", timeout=180)
        if p.returncode != 0:
            pytest.skip(f"apt cannot reach Debian's archive: {p.stderr.strip()[-500:]}")
        yield ov
    finally:
        ov.close()


def purge_openssh_server(ov):
    """openssh-server purged from the chroot, which then has no policy-rc.d and is at runlevel 2
    for invoke-rc.d: a machine whose init would start what a postinst asks to start (in a chroot,
    invoke-rc.d starts nothing without a policy-rc.d that allows it: no runlevel)."""
    # The policy-rc.d keeps the purge from stopping an sshd of the machine's.
    ov.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", "755")
    p = ov.chroot("dpkg --purge openssh-server && rm /usr/sbin/policy-rc.d", timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    ov.write("/sbin/runlevel", "#!/bin/sh\necho N 2\n", "755")   # (systemctl's, with systemd-sysv)


def links_to(ov, unit):
    """The links under the chroot's /etc/systemd/system that enable or name UNIT."""
    found = []
    top = ov.path("/etc/systemd/system")
    for d, _, files in os.walk(top):
        for f in files:
            link = os.path.join(d, f)
            if os.path.islink(link) and unit in (f, os.path.basename(os.readlink(link))):
                found.append(link[len(top):])
    return found


def test_new_services_are_neither_started_nor_enabled(overlay):
    """openssh-server installed by install-deps --tests, with no policy-rc.d on the machine: its
    postinst enables ssh.service and asks to start it; neither holds afterwards."""
    ov = overlay
    purge_openssh_server(ov)
    enabled_before = {u: links_to(ov, u) for u in ("prometheus.service", "getty@tty1.service")}
    assert not os.path.exists(ov.path("/usr/sbin/policy-rc.d"))
    p = ov.chroot("sh /root/install-deps --tests", timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert os.path.exists(ov.path("/usr/sbin/sshd")), p.stderr
    assert "installing: openssh-server" in p.stderr
    assert "disabled what the new packages enabled: ssh.service (openssh-server)" in p.stderr
    # invoke-rc.d would have started sshd (runlevel 2, S links): install-deps' policy-rc.d said
    # no, so there was nothing to stop.
    assert "stopping" not in p.stderr, p.stderr
    assert ov.processes() == [], p.stderr
    assert links_to(ov, "ssh.service") == [], p.stderr
    assert ov.chroot("systemctl is-enabled ssh.service").stdout.strip() == "disabled"
    assert not os.path.exists(ov.path("/usr/sbin/policy-rc.d")), "install-deps left its policy-rc.d"
    # What the machine had enabled stays so.
    assert {u: links_to(ov, u) for u in enabled_before} == enabled_before


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_services_started_anyway_are_stopped(overlay):
    """The machine's own policy-rc.d lets services start: install-deps keeps it as it is, and
    stops the sshd that openssh-server's postinst started (on a port of 127.0.0.1 of this test's
    choosing)."""
    ov = overlay
    purge_openssh_server(ov)
    allow = "#!/bin/sh\n# the machine's own\nexit 0\n"
    ov.write("/usr/sbin/policy-rc.d", allow, "755")
    ov.write("/etc/ssh/sshd_config.d/rdd-test.conf", f"ListenAddress 127.0.0.1:{free_port()}\n")
    try:
        p = ov.chroot("sh /root/install-deps --tests", timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        assert re.search(r"stopping what the new packages started: sshd\[\d+\]", p.stderr), p.stderr
        assert ov.processes() == [], p.stderr
        assert links_to(ov, "ssh.service") == [], p.stderr
        with open(ov.path("/usr/sbin/policy-rc.d")) as f:
            assert f.read() == allow
    finally:
        ov.chroot("rm -f /usr/sbin/policy-rc.d /etc/ssh/sshd_config.d/rdd-test.conf")


def test_a_second_run_does_nothing_and_needs_no_network(overlay):
    p = overlay.chroot("sh /root/install-deps --tests", net=False)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    p = overlay.chroot("apt-get update -qq --error-on=any", net=False)
    assert p.returncode != 0, "the chroot has a network: this test proves nothing"
