"""The source tree keeps the shape src/README.md describes.

- No two modules call each other's functions: the arrows of the module map go one way. Read from
  the built objects (nm on librddcore.a), so a call through a macro or an inline helper counts
  as the linker sees it. A backend reached through a table of function pointers (ledger.c's
  list of struct ledger_backend) is data, not a call: that is the one way up.
- Every project header a file includes is used for something it declares: no header pulled in
  only for a helper that lives elsewhere (text helpers live in text.h).
- The module map and the README's layout table name every module there is.
"""

import os
import re
import shutil
import subprocess
from collections import defaultdict

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(SOURCE_DIR, "src")


def modules():
    return sorted(f[:-2] for f in os.listdir(SRC) if f.endswith(".c"))


def core_library():
    binary = os.environ.get("RDD_BINARY")
    if not binary:
        pytest.skip("RDD_BINARY is not set: run through ctest to check the built objects")
    lib = os.path.join(os.path.dirname(binary), "librddcore.a")
    if not os.path.isfile(lib):
        pytest.fail(f"{lib} not found beside {binary}: the core library is what is checked")
    return lib


def symbols(lib):
    """({member: functions it defines}, {member: symbols it uses}) of the archive LIB."""
    if not shutil.which("nm"):
        pytest.fail("nm (binutils) is not installed: scripts/install-deps --tests installs it")
    out = subprocess.run(["nm", "-A", lib], check=True, capture_output=True, text=True).stdout
    defines, uses = defaultdict(set), defaultdict(set)
    for line in out.splitlines():
        where, _, rest = line.rpartition(":")
        member = where.rsplit(":", 1)[-1].replace(".c.o", "")
        parts = rest.split()
        if len(parts) == 3 and parts[1] == "T":
            defines[member].add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            uses[member].add(parts[1])
    return defines, uses


def calls_between(defines, uses):
    """{(caller, callee): the callee's functions the caller calls}, across modules."""
    owner = {f: m for m, fs in defines.items() for f in fs}
    calls = defaultdict(set)
    for m, used in uses.items():
        for f in used:
            if f in owner and owner[f] != m:
                calls[(m, owner[f])].add(f)
    return calls


def two_way(calls):
    return sorted({tuple(sorted(pair)) for pair in calls if pair[::-1] in calls})


def test_no_two_modules_call_each_other():
    defines, uses = symbols(core_library())
    assert len(defines) >= 30, f"only {len(defines)} modules with functions in the library"
    calls = calls_between(defines, uses)
    found = [f"{a} <-> {b}: {a} calls {sorted(calls[(a, b)])}, {b} calls {sorted(calls[(b, a)])}"
             for a, b in two_way(calls)]
    assert not found, "modules that call each other (one must report back through an " \
        "interface of callbacks instead):\n" + "\n".join(found)


def test_two_way_calls_are_found():
    """The check above on made-up modules: it must see a circle, and only that."""
    defines = {"a": {"a_run"}, "b": {"b_step", "b_done"}, "c": {"c_go"}}
    uses = {"a": {"b_step", "c_go"}, "b": {"a_run", "malloc"}, "c": {"b_done"}}
    assert two_way(calls_between(defines, uses)) == [("a", "b")]


def declared(header_text):
    """The names a header gives its includers: functions, types, macros, enum constants."""
    t = re.sub(r"/\*.*?\*/", "", header_text, flags=re.S)
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*\(", t))
    names |= set(re.findall(r"\b(?:struct|enum|union)\s+([a-z_][a-z0-9_]*)", t))
    names |= set(re.findall(r"#define\s+([A-Za-z_][A-Za-z0-9_]*)", t))
    names |= set(re.findall(r"typedef[^;]*?\b([a-z_][a-z0-9_]*)\s*;", t))
    names |= set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)\s*[,=]", t, re.M))
    names |= set(re.findall(r"\(\*\s*([a-z_][a-z0-9_]*)\)", t))
    return {n for n in names if not n.startswith("RDD_")
            and n not in ("if", "while", "for", "return", "sizeof", "defined")}


def unused_includes(files, headers):
    """[(file, header)] where FILE includes the project HEADER and uses nothing it declares.
    FILES and HEADERS map a name to its text."""
    given = {h: declared(t) for h, t in headers.items()}
    found = []
    for name, text in sorted(files.items()):
        own = name[:-2] + ".h"
        body = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        body = re.sub(r"#include[^\n]*", "", body)
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", body))
        for inc in re.findall(r'#include "([^"]+)"', text):
            if inc != own and inc != name and inc in given and not (given[inc] & words):
                found.append((name, inc))
    return found


def read_sources():
    out = {}
    for f in sorted(os.listdir(SRC)):
        if f.endswith((".c", ".h")):
            with open(os.path.join(SRC, f)) as fh:
                out[f] = fh.read()
    return out


def test_every_included_header_is_used():
    sources = read_sources()
    headers = {f: t for f, t in sources.items() if f.endswith(".h")}
    found = unused_includes(sources, headers)
    assert not found, "headers included for nothing they declare:\n" + \
        "\n".join(f"src/{f} includes {h}" for f, h in found)


def test_unused_includes_are_found():
    headers = {"text.h": "int text_hex(const char *s);\n",
               "log.h": "#define LOG_MAX 4\nvoid log_info(const char *f, ...);\n"}
    files = {"a.c": '#include "log.h"\n#include "text.h"\nint f(void) { return text_hex("");}\n',
             "b.c": '#include "log.h"\nint g(void) { return LOG_MAX; }\n'}
    assert unused_includes(files, headers) == [("a.c", "log.h")]


def test_module_map_and_layout_table_name_every_module():
    with open(os.path.join(SRC, "README.md")) as f:
        module_map = f.read()
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    missing_map = [m for m in modules() if f"`{m}.c`" not in module_map]
    missing_readme = [m for m in modules() if not re.search(rf"\b{re.escape(m)}\.c\b", readme)]
    assert not missing_map, f"modules missing from src/README.md: {missing_map}"
    assert not missing_readme, f"modules missing from README.md's layout table: {missing_readme}"
    gone = [m for m in re.findall(r"`([a-z_]+)\.c`", module_map) if m not in modules()]
    assert not gone, f"src/README.md names modules that do not exist: {gone}"
