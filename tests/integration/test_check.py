"""resend-dropd's command line, and `--check` on good and broken configurations.

The configurations are tests/fixtures/config/{good,bad}/*.yaml (see the README.md there): each
bad/NAME.yaml comes with bad/NAME.errors, every error the binary must print, in order, with the
exact line and column. `@TMP@` in both is a temporary directory laid out by `tree` below.
"""

import glob
import os
import re
import shutil
import subprocess

import pytest

API_KEY = "re_check_SECRET_9f8e7d6c5b4a"
OTHER_KEY = "re_check_OTHER_SECRET_1a2b3c"
SANITIZER_EXIT = 86
UBSAN_EXIT = 87
VALGRIND_EXIT = 99
TIMEOUT = 120
SANITIZER_REPORT = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                              r"SUMMARY: (Address|Undefined|Leak)Sanitizer")


def bad_fixture_names():
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(here))
    paths = glob.glob(os.path.join(src, "tests", "fixtures", "config", "bad", "*.yaml"))
    return sorted(os.path.basename(p)[:-5] for p in paths)


BAD = bad_fixture_names()


# --- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """The directory @TMP@ stands for."""
    for name in ("a", "b", "c"):
        for sub in ("in", "done", "failed"):
            (tmp_path / name / sub).mkdir(parents=True)
    (tmp_path / "notadir").write_text("I am a file\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return tmp_path


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RESEND_API_KEY", "RDD_TEST_API_KEY", "JOURNAL_STREAM")}
    env["RESEND_API_KEY"] = API_KEY
    env["RDD_TEST_API_KEY"] = OTHER_KEY
    env["ASAN_OPTIONS"] = f"exitcode={SANITIZER_EXIT}:detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = f"exitcode={UBSAN_EXIT}:halt_on_error=1:print_stacktrace=1"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run(binary, *args, env=None, prefix=()):
    proc = subprocess.run([*prefix, binary, *args], capture_output=True, timeout=TIMEOUT,
                          env=env if env is not None else clean_env(), stdin=subprocess.DEVNULL)
    out = proc.stdout.decode("utf-8", "backslashreplace")
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode not in (SANITIZER_EXIT, UBSAN_EXIT) and not SANITIZER_REPORT.search(err), \
        f"sanitizer report from {' '.join(args)}:\n{err}"
    return proc.returncode, out, err


def render(fixtures, rel, tree, name="config.yaml"):
    """Writes fixture REL with @TMP@ replaced; returns its path."""
    with open(os.path.join(fixtures, "config", rel), "rb") as f:
        data = f.read()
    path = tree / name
    path.write_bytes(data.replace(b"@TMP@", str(tree).encode()))
    return str(path)


def expected_errors(fixtures, name, tree, path):
    with open(os.path.join(fixtures, "config", "bad", name + ".errors"), encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line]
    return [line.replace("@FILE@", path).replace("@TMP@", str(tree)) for line in lines]


def count_line(n, path):
    return f"resend-dropd: {n} error{'' if n == 1 else 's'} in configuration {path}"


def assert_lines(actual, expected, what):
    got = actual.split("\n")
    assert actual.endswith("\n"), f"{what}: output does not end with a newline:\n{actual}"
    got = got[:-1]
    if got != expected:
        lines = ["", f"{what}: expected {len(expected)} line(s), got {len(got)}"]
        for i in range(max(len(got), len(expected))):
            e = expected[i] if i < len(expected) else "<none>"
            a = got[i] if i < len(got) else "<none>"
            mark = "  " if e == a else "!!"
            lines.append(f"{mark} expected: {e}")
            if e != a:
                lines.append(f"{mark} actual:   {a}")
        pytest.fail("\n".join(lines), pytrace=False)


# --- command line ------------------------------------------------------------------------------

def test_version(rdd_binary):
    for opt in ("--version", "-V"):
        rc, out, err = run(rdd_binary, opt)
        assert rc == 0, err
        assert re.fullmatch(r"resend-dropd \d+\.\d+\.\d+\n", out), out
        assert err == ""


def test_help(rdd_binary):
    for opt in ("--help", "-h"):
        rc, out, err = run(rdd_binary, opt)
        assert rc == 0, err
        assert out.startswith("Usage: resend-dropd"), out
        for word in ("--check", "--once", "--dry-run", "--config", "--version", "RESEND_API_KEY"):
            assert word in out, f"{word} missing from --help"
        assert err == ""


@pytest.mark.parametrize("args", [["--bogus"], ["-x"], ["--check", "extra-argument"],
                                  ["-c"], ["--version=2"]])
def test_usage_errors(rdd_binary, args):
    rc, out, err = run(rdd_binary, *args)
    assert rc == 1, f"{args}: exit {rc}\n{out}{err}"
    assert out == ""
    assert "Usage: resend-dropd" in err


@pytest.mark.parametrize("mode", ["--once", "--dry-run"])
def test_check_cannot_be_combined(rdd_binary, fixtures_tree, mode):
    config = fixtures_tree
    for args in (["-c", config, "--check", mode], ["-c", config, mode, "--check"]):
        rc, out, err = run(rdd_binary, *args)
        assert rc == 1, f"{args}: exit {rc}\n{out}{err}"
        assert err == "resend-dropd: --check cannot be combined with --once or --dry-run\n"
        assert out == ""


@pytest.fixture
def fixtures_tree(rdd_fixtures, tree):
    """The path of a good configuration (good/full.yaml) in a fresh tree."""
    return render(rdd_fixtures, "good/full.yaml", tree)


def test_missing_config_file(rdd_binary, tmp_path):
    path = str(tmp_path / "nowhere" / "resend-dropd.yaml")
    rc, out, err = run(rdd_binary, "-c", path, "--check")
    assert rc == 1
    assert out == ""
    assert_lines(err, [f"{path}: cannot open configuration: No such file or directory",
                       count_line(1, path)], "missing file")


def test_config_is_a_directory(rdd_binary, tree):
    rc, out, err = run(rdd_binary, "--config", str(tree), "--check")
    assert rc == 1
    assert_lines(err, [f"{tree}: not a regular file", count_line(1, str(tree))], "directory")


# --- --check ---------------------------------------------------------------------------------

def test_check_good_full(rdd_binary, rdd_fixtures, tree):
    path = render(rdd_fixtures, "good/full.yaml", tree)
    rc, out, err = run(rdd_binary, "-c", path, "--check")
    assert rc == 0, err
    assert err == ""
    assert out == (f"{path}: configuration OK: 2 folders: newsletter (inbox {tree}/a/in), "
                   f"billing.eu-1 (inbox {tree}/b/in/)\n")


def test_check_good_minimal(rdd_binary, rdd_fixtures, tree):
    """No api: section at all; the key comes from RESEND_API_KEY, the documented default."""
    path = render(rdd_fixtures, "good/minimal.yaml", tree)
    rc, out, err = run(rdd_binary, "-c", path, "--check")
    assert rc == 0, err
    assert err == ""
    assert out == f"{path}: configuration OK: 1 folder: a (inbox {tree}/a/in)\n"


@pytest.mark.parametrize("fixture", ["good/aliases.yaml", "good/http-loopback.yaml"])
def test_check_good_others(rdd_binary, rdd_fixtures, tree, fixture):
    path = render(rdd_fixtures, fixture, tree)
    rc, out, err = run(rdd_binary, "-c", path, "--check")
    assert rc == 0, err
    assert err == ""
    assert out.startswith(f"{path}: configuration OK: ") and out.count("\n") == 1, out


def test_check_changes_nothing(rdd_binary, fixtures_tree, tree):
    """Like nginx -t: validating creates, moves and deletes nothing."""
    (tree / "a" / "in" / "waiting.csv").write_text("Email\nx@example.com\n")
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    rc, _, err = run(rdd_binary, "-c", fixtures_tree, "--check")
    assert rc == 0, err
    after = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    assert after == before


@pytest.mark.parametrize("name", BAD)
def test_check_bad(rdd_binary, rdd_fixtures, tree, name):
    path = render(rdd_fixtures, f"bad/{name}.yaml", tree)
    want = expected_errors(rdd_fixtures, name, tree, path)
    rc, out, err = run(rdd_binary, "-c", path, "--check")
    assert rc == 1, f"exit {rc}\n{out}{err}"
    assert out == ""
    assert_lines(err, want + [count_line(len(want), path)], f"bad/{name}.yaml")


def test_enough_bad_fixtures():
    assert len(BAD) >= 10, BAD


def test_check_without_api_key(rdd_binary, rdd_fixtures, tree):
    path = render(rdd_fixtures, "good/full.yaml", tree)
    rc, out, err = run(rdd_binary, "-c", path, "--check", env=clean_env(RDD_TEST_API_KEY=None))
    assert rc == 1
    assert_lines(err, [f"{path}:4:16: api.api_key_env: no API key: environment variable "
                       "RDD_TEST_API_KEY is not set (set it, or set api.api_key_file, or neither)",
                       count_line(1, path)], "no key")
    # Neither api_key_env nor api_key_file: RESEND_API_KEY, the credential, the key file.
    key_file = default_key_file(rdd_binary)
    path = render(rdd_fixtures, "good/minimal.yaml", tree)
    creds = tree / "credentials"
    creds.mkdir()
    rc, out, err = run(rdd_binary, "-c", path, "--check",
                       env=clean_env(RESEND_API_KEY=None, CREDENTIALS_DIRECTORY=str(creds)))
    assert rc == 1
    assert_lines(err, [f"{path}:1:1: api: no API key: '{key_file}' does not exist (the unit "
                       "loads it as the credential 'api_key' when it starts: write the key there, "
                       "readable by root only, then systemctl restart resend-dropd), and "
                       "RESEND_API_KEY is not set", count_line(1, path)], "no credential")
    (creds / "api_key").write_text(API_KEY + "\n")
    rc, out, err = run(rdd_binary, "-c", path, "--check",
                       env=clean_env(RESEND_API_KEY=None, CREDENTIALS_DIRECTORY=str(creds)))
    assert rc == 0, err
    if not os.path.exists(key_file):
        # By hand (no credentials): the key file itself is what --check reads.
        rc, out, err = run(rdd_binary, "-c", path, "--check", env=clean_env(RESEND_API_KEY=None))
        assert rc == 1
        assert_lines(err, [f"{path}:1:1: api: no API key: RESEND_API_KEY is not set, and "
                           f"'{key_file}' does not exist (write the key there, readable by root "
                           "only; or set RESEND_API_KEY; or set api.api_key_env or "
                           "api.api_key_file)", count_line(1, path)], "no key file")


def default_key_file(binary):
    """The key file this build reads by default, as its --help names it."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10).stdout
    return re.search(r"else from (/\S+api_key)\.", out.replace("\n", " ")).group(1)


def test_check_api_key_file(rdd_binary, tree):
    key = tree / "api_key"
    key.write_text(API_KEY + "\n")  # as `echo re_... > file` or systemd-creds leave it
    key.chmod(0o600)
    config = tree / "config.yaml"
    config.write_text(f"api:\n  api_key_file: {key}\nfolders:\n"
                      f"  - {{ name: a, inbox: {tree}/a/in, done: {tree}/a/done, "
                      f"failed: {tree}/a/failed }}\n")
    rc, out, err = run(rdd_binary, "-c", str(config), "--check", env=clean_env(RESEND_API_KEY=None))
    assert rc == 0, err
    assert API_KEY not in out + err


def test_api_key_never_printed(rdd_binary, rdd_fixtures, tree):
    outputs = []
    for fixture in ("good/full.yaml", "good/minimal.yaml", "bad/out-of-range.yaml",
                    "bad/api-key-both.yaml", "bad/http-base-url.yaml"):
        path = render(rdd_fixtures, fixture, tree)
        outputs.append(run(rdd_binary, "-c", path, "--check"))
    # A key with a space is refused: the message must not quote it.
    path = render(rdd_fixtures, "good/full.yaml", tree)
    outputs.append(run(rdd_binary, "-c", path, "--check",
                       env=clean_env(RDD_TEST_API_KEY=OTHER_KEY + " trailing")))
    # A key file holding something else than one key: not echoed either.
    secret = tree / "secret"
    secret.write_text(f"{API_KEY} {OTHER_KEY}\n")
    config = tree / "config.yaml"
    config.write_text(f"api:\n  api_key_file: {secret}\n  max_in_flight: 0\nfolders: []\n")
    outputs.append(run(rdd_binary, "-c", str(config), "--check"))
    for rc, out, err in outputs:
        for key in (API_KEY, OTHER_KEY, "SECRET"):
            assert key not in out and key not in err, f"the API key was printed:\n{out}{err}"
    assert outputs[-1][0] == 1 and outputs[-2][0] == 1


def test_errors_cannot_forge_lines(rdd_binary, tree):
    """Every line on stderr is an error of this file or the count: text from the YAML holding a
    newline is escaped."""
    config = tree / "config.yaml"
    config.write_text(
        "api:\n"
        '  api_key_file: "/nonexistent/key\\nforged.yaml:1:1: forged"\n'
        "folders:\n"
        '  - name: "x\\ny"\n'
        f"    inbox: {tree}/a/in\n"
        f"    done: {tree}/a/done\n"
        f"    failed: {tree}/a/failed\n"
        "    column_map:\n"
        "      email: E\n"
        "      properties:\n"
        '        "a\\nforged.yaml:2:2: b": {column: X}\n'
        '  - name: "x\\ny"\n'
        f"    inbox: {tree}/b/in\n"
        f"    done: {tree}/b/done\n"
        f"    failed: {tree}/b/failed\n")
    rc, out, err = run(rdd_binary, "-c", str(config), "--check")
    assert rc == 1
    lines = err.split("\n")[:-1]
    stray = [line for line in lines
             if not line.startswith(f"{config}:") and not line.startswith("resend-dropd: ")]
    assert not stray, f"lines that are not errors of {config}:\n" + "\n".join(stray) + \
        "\n---\n" + err
    m = re.fullmatch(r"resend-dropd: (\d+) errors? in configuration .*", lines[-1])
    assert m and int(m.group(1)) == len(lines) - 1, err


def test_summary_is_one_line(rdd_binary, tree):
    """A directory name may hold any byte but '/' and NUL; the summary stays one line."""
    odd = tree / "we\nird"
    for sub in ("in", "done", "failed"):
        (odd / sub).mkdir(parents=True)
    config = tree / "config.yaml"
    config.write_text("api:\n  max_in_flight: 2\n"
                      "folders:\n"
                      "  - name: odd\n"
                      f'    inbox: "{tree}/we\\nird/in"\n'
                      f'    done: "{tree}/we\\nird/done"\n'
                      f'    failed: "{tree}/we\\nird/failed"\n')
    rc, out, err = run(rdd_binary, "-c", str(config), "--check")
    assert rc == 0, err
    assert out.count("\n") == 1, f"summary spans lines:\n{out}"


# --- valgrind ----------------------------------------------------------------------------------

def is_sanitized(binary):
    if os.environ.get("RDD_SANITIZE") == "1":
        return True
    for cmd in (["nm", "-an", binary], ["ldd", binary]):
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if b"__asan_init" in out or b"libasan" in out or b"__ubsan_handle" in out:
            return True
    return False


def test_valgrind_check_no_leaks(rdd_binary, rdd_fixtures, tree):
    valgrind = shutil.which("valgrind")
    if not valgrind:
        pytest.skip("valgrind is not installed")
    if is_sanitized(rdd_binary):
        pytest.skip("the binary is built with sanitizers (they check leaks themselves)")
    prefix = (valgrind, "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
              f"--error-exitcode={VALGRIND_EXIT}", "--quiet")
    key = tree / "api_key"
    key.write_text(API_KEY)
    cases = [("good/full.yaml", 0), ("good/http-loopback.yaml", 0), ("bad/duplicate-keys.yaml", 1),
             ("bad/wrong-types.yaml", 1), ("bad/folder-dirs.yaml", 1), ("bad/syntax-error.yaml", 1),
             ("bad/bad-property-keys.yaml", 1), ("bad/unknown-keys.yaml", 1),
             ("bad/invalid-utf8.yaml", 1), ("bad/api-key-both.yaml", 1)]
    failures = []
    for fixture, want in cases:
        path = render(rdd_fixtures, fixture, tree)
        rc, out, err = run(rdd_binary, "-c", path, "--check", prefix=prefix)
        if rc != want:
            failures.append(f"{fixture}: exit {rc}, expected {want}\n{err}")
    config = tree / "keyfile.yaml"
    config.write_text(f"api:\n  api_key_file: {key}\nfolders:\n"
                      f"  - {{ name: a, inbox: {tree}/a/in, done: {tree}/a/done, "
                      f"failed: {tree}/a/failed }}\n")
    rc, out, err = run(rdd_binary, "-c", str(config), "--check", prefix=prefix)
    if rc != 0:
        failures.append(f"api_key_file: exit {rc}, expected 0\n{err}")
    assert not failures, "\n".join(failures)
