"""Issue 20, part 3: the Grafana dashboard (config/grafana/resend-dropd.json) and the Prometheus
alert rules (config/prometheus/resend-dropd.rules.yml) stay true to what the daemon exports.

- promtool checks the rules and runs their unit tests (tests/promtool/resend-dropd.rules.test.yml),
  which must have, for every alert, a case where it fires and one where it does not.
- The dashboard is one that Grafana's provisioning loads as it is: unique panel ids, a title on
  each, every query panel and target on the `datasource` variable (a Prometheus data source),
  `instance`, `folder` and `receiver` variables from label_values, panels that do not
  overlap.
- A daemon in a one-host fleet on a real PostgreSQL ledger (so that the fleet's series exist
  too), with one webhook (so that the notifications' series exist too), takes a file that is
  done, one that fails and one that Resend first refuses for its rate limit; the webhook's
  receiver (webhook_receiver.py) takes the first file's event and refuses the others' (503), so
  that delivered, failed attempts, pending and the oldest's age all move; its /metrics is
  scraped. Every metric the dashboard's and the rules' expressions name must be in that
  scrape, of the type the expression needs (rate and increase over counters,
  histogram_quantile over a histogram's buckets), with every label they select, group, join or
  print in a legend, and every fixed label value they select (`outcome="failed"`,
  `code=~"401|403"`) one the daemon writes. Renaming a metric or a label in src/metrics.c fails
  here, naming the expression. The other way round, a metric the daemon exports with no panel
  fails too (or is listed in NOT_ON_THE_DASHBOARD with the reason).
- What ResendDropdApiKeyRefused and ResendDropdApiPaused tell apart is there: with a refused key
  (the fake's 403 "API key is invalid") the daemon is paused and has counted a 403; with a daily
  quota exceeded (429) it is paused and has counted no 401 or 403.
- What ResendDropdNotificationOutboxGrowing reads is there: with a receiver that refuses, the
  events wait (pending), the oldest has an age, and the failed attempts are counted.

Rows rejected (an import's skipped and failed rows) have no metric yet, so neither the
dashboard nor the rules show them.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from daemon_harness import FakeResend, Harness, binary_path, control_metrics, tail, yaml_text
from fleet_harness import fleet_config
from pg_harness import PgServer
from webhook_receiver import WebhookReceiver

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RDD_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
DASHBOARD = os.path.join(SOURCE_DIR, "config", "grafana", "resend-dropd.json")
RULES = os.path.join(SOURCE_DIR, "config", "prometheus", "resend-dropd.rules.yml")
RULES_TEST = os.path.join(SOURCE_DIR, "tests", "promtool", "resend-dropd.rules.test.yml")
TIMEOUT = 60
CSV = b"email,first_name\nada@example.com,Ada\nbob@example.com,Bob\n"

# Labels a scrape adds to every series: not the daemon's to export.
TARGET_LABELS = {"job", "instance"}
# Prometheus's own series the rules may use besides the daemon's.
PROMETHEUS_SERIES = {"up"}
# Metrics the daemon exports that have no panel, and why.
NOT_ON_THE_DASHBOARD = {
    "resend_dropd_fleet_host_info": "the host's own id: the fleet panels show every host",
}

METRIC = re.compile(r"\bresend_dropd_[a-z_]+\b")
SELECTOR = re.compile(r"\b(resend_dropd_[a-z_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
BY = re.compile(r"\bby\s*\(([^)]*)\)")
COUNTER_FUNCTION = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*(resend_dropd_[a-z_]+)")
LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")
ANNOTATION_LABEL = re.compile(r"\$labels\.([a-zA-Z_]\w*)")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is missing: scripts/install-deps --tests installs Debian's prometheus"
    return path


def run_promtool(*args):
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, done.stdout + done.stderr


# --- what a scrape holds --------------------------------------------------------------------

class Scrape:
    """One /metrics text: its families' types, and each sample name's label names and values."""

    def __init__(self, text):
        self.text = text
        self.types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        self.labels = {}   # sample name -> {label: set of values}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")
            seen = self.labels.setdefault(m.group(1), {})
            for label, value in pairs:
                seen.setdefault(label, set()).add(value)

    def value(self, name, **labels):
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        m = re.search(rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$",
                      self.text, re.M)
        return float(m.group(1)) if m else None

    def family(self, name):
        """The family a sample name belongs to (a histogram's _bucket, _sum, _count), or None."""
        if name in self.types:
            return name
        for suffix in HISTOGRAM_SUFFIXES:
            base = name[:-len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None


def merged_labels(scrapes):
    """{sample name: {label: values}} over several scrapes."""
    out = {}
    for scrape in scrapes:
        for name, labels in scrape.labels.items():
            merged = out.setdefault(name, {})
            for label, values in labels.items():
                merged.setdefault(label, set()).update(values)
    return out


# --- what the dashboard and the rules ask for -----------------------------------------------

def load_dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dashboard):
    """Every panel, the panels of collapsed rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions(dashboard):
    """[(where, expr, legend, labels it prints)]: every target's expression, and the variables'
    queries (label_values(METRIC, LABEL) lists the values of LABEL)."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel.get('id')} '{panel.get('title')}' target "
                          f"{target.get('refId')}", target.get("expr", ""),
                          target.get("legendFormat", ""), ()))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            query = query.get("query", "") if isinstance(query, dict) else query or ""
            found.append((f"variable ${var['name']}", query, "",
                          re.findall(r",\s*([a-zA-Z_]\w*)\s*\)\s*$", query)))
    return found


def block(lines, start, indent):
    """The lines after START that are indented more than INDENT (a YAML block), joined."""
    out = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        out.append(line.strip())
    return "\n".join(out).strip()


def parse_rules(path=RULES):
    """{alert name: {"expr": text, "text": the rule's whole text}}, read from the YAML with no
    YAML library (the tests' list has none): the layout of the shipped file, `- alert: NAME`
    then `expr:` inline or as a block scalar. test_promtool_checks_the_rules compares the count
    with promtool's."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    rules, current = {}, None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)- alert:\s*(\S+)\s*$", line)
        if m:
            current = m.group(2)
            assert current not in rules, f"alert {current} defined twice"
            rules[current] = {"expr": None, "text": ""}
            continue
        if current is None:
            continue
        if re.match(r"^\s*- (alert|record):", line) or re.match(r"^\s*- name:", line):
            current = None
            continue
        rules[current]["text"] += line + "\n"
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            rest = m.group(2).strip()
            if rest[:1] in ("|", ">"):
                rules[current]["expr"] = block(lines, i, len(m.group(1)))
            else:
                rules[current]["expr"] = rest.strip("'\"")
    return rules


def parse_rule_tests(path=RULES_TEST):
    """{alert name: (cases where it fires, cases where it must not)} of a promtool test file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cases = {}
    for name, expected in re.findall(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\S*)", text):
        fires, quiet = cases.get(name, (0, 0))
        cases[name] = (fires, quiet + 1) if expected == "[]" else (fires + 1, quiet)
    return cases


# --- the checks of one expression against the scrape ----------------------------------------

def check_expression(where, expr, known, types_of, legend="", printed=()):
    """What in EXPR is not what the daemon exports. KNOWN: {sample name: {label: values}};
    TYPES_OF(name): the type of NAME's family or None. PRINTED: labels a template prints."""
    problems = []
    names = set(METRIC.findall(expr))
    other = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr)) - names
    if not names and not other & PROMETHEUS_SERIES:
        problems.append(f"{where}: names no resend_dropd_ metric: {expr!r}")
    for name in sorted(names):
        if name not in known:
            problems.append(f"{where}: {name} is not in /metrics (renamed or gone?): {expr!r}")
    # Labels that exist on any series the expression reads, and the scrape's own.
    available = set(TARGET_LABELS)
    for name in names:
        available |= set(known.get(name, {}))
    for name, matchers in SELECTOR.findall(expr):
        if name not in known:
            continue
        for label, op, value in MATCHER.findall(matchers or ""):
            if label in TARGET_LABELS:
                continue
            values = known[name].get(label)
            if values is None:
                problems.append(f"{where}: {name} has no label '{label}' "
                                f"(it has {sorted(known[name])}): {expr!r}")
            elif "$" in value or op in ("!=", "!~"):
                continue
            elif op == "=" and value not in values:
                problems.append(f"{where}: {name}{{{label}=\"{value}\"}}: the daemon writes "
                                f"{sorted(values)}: {expr!r}")
            elif op == "=~" and not any(re.fullmatch(value, v) for v in values):
                problems.append(f"{where}: {name}{{{label}=~\"{value}\"}} matches none of "
                                f"{sorted(values)}: {expr!r}")
    for group in GROUPING.findall(expr):
        for label in (x.strip() for x in group.split(",") if x.strip()):
            if label not in available:
                problems.append(f"{where}: groups or joins on '{label}', which none of "
                                f"{sorted(names)} has: {expr!r}")
    # A legend prints labels of the result: after an aggregation, only those it keeps.
    by = {x.strip() for group in BY.findall(expr) for x in group.split(",")}
    for label in LEGEND_LABEL.findall(legend):
        if label not in available or (by and label not in by):
            problems.append(f"{where}: legend {{{{{label}}}}} is not a label of the result "
                            f"{expr!r}")
    for label in printed:
        if label not in available:
            problems.append(f"{where}: prints the label '{label}', which none of "
                            f"{sorted(names)} has")
    for name in COUNTER_FUNCTION.findall(expr):
        if name in known and types_of(name) not in ("counter", "histogram"):
            problems.append(f"{where}: rate/increase over {name}, a {types_of(name)}: {expr!r}")
    for name in names:
        if name.endswith("_bucket") and name in known:
            if types_of(name) != "histogram":
                problems.append(f"{where}: {name} is not a histogram's buckets: {expr!r}")
            if "histogram_quantile" not in expr:
                problems.append(f"{where}: {name} outside histogram_quantile: {expr!r}")
    for name in sorted(other - PROMETHEUS_SERIES):
        if not name.startswith("resend_dropd_"):
            problems.append(f"{where}: {name} is neither the daemon's nor Prometheus's: {expr!r}")
    return problems


def test_check_expression_finds_what_a_rename_breaks():
    """The check above on a made-up scrape: each kind of mistake is reported."""
    scrape = Scrape('# TYPE resend_dropd_files_total counter\n'
                    'resend_dropd_files_total{folder="a",outcome="done"} 1\n'
                    '# TYPE resend_dropd_files_waiting gauge\n'
                    'resend_dropd_files_waiting{folder="a"} 0\n'
                    '# TYPE resend_dropd_x_seconds histogram\n'
                    'resend_dropd_x_seconds_bucket{folder="a",le="+Inf"} 0\n'
                    'resend_dropd_x_seconds_sum{folder="a"} 0\n'
                    'resend_dropd_x_seconds_count{folder="a"} 0\n')

    def check(expr, legend="", printed=()):
        types_of = lambda n: scrape.types.get(scrape.family(n))  # noqa: E731
        return check_expression("t", expr, scrape.labels, types_of, legend, printed)

    assert check('sum by (folder) (rate(resend_dropd_files_total{outcome="done"}[5m]))',
                 "{{folder}}") == []
    assert check('histogram_quantile(0.9, sum by (le, folder) '
                 '(rate(resend_dropd_x_seconds_bucket[5m])))') == []
    assert "not in /metrics" in check("resend_dropd_file_total")[0]
    assert "has no label 'outcom'" in check('resend_dropd_files_total{outcom="done"}')[0]
    assert "the daemon writes" in check('resend_dropd_files_total{outcome="fail"}')[0]
    assert "matches none" in check('resend_dropd_files_total{outcome=~"ok|bad"}')[0]
    assert "groups or joins on 'state'" in check("sum by (state) (resend_dropd_files_waiting)")[0]
    assert "legend {{outcome}}" in check("sum by (folder) (resend_dropd_files_total)",
                                         "{{outcome}}")[0]
    assert "prints the label 'dir'" in check("resend_dropd_files_waiting", printed=["dir"])[0]
    assert "a gauge" in check("rate(resend_dropd_files_waiting[5m])")[0]
    assert "outside histogram_quantile" in check("resend_dropd_x_seconds_bucket")[0]
    assert "neither the daemon's" in check('node_load1{a="b"} and resend_dropd_files_waiting')[0]


# --- promtool ---------------------------------------------------------------------------------

def test_promtool_checks_the_rules():
    code, out = run_promtool("check", "rules", RULES)
    assert code == 0, out
    found = re.search(r"SUCCESS: (\d+) rules found", out)
    rules = parse_rules()
    assert found and int(found.group(1)) == len(rules), \
        f"promtool found {found and found.group(1)} rules, this test read {sorted(rules)}:\n{out}"
    for name, rule in rules.items():
        assert rule["expr"], f"{name}: no expr read"
        assert re.search(r"^\s*for:\s*\d+[smh]\s*$", rule["text"], re.M), f"{name}: no for:"
        assert re.search(r"^\s*severity:\s*(critical|warning)\s*$", rule["text"], re.M), \
            f"{name}: no severity label (critical or warning)"
        for key in ("summary", "description"):
            assert re.search(rf"^\s*{key}:", rule["text"], re.M), f"{name}: no {key} annotation"
        # What to do: the command to run on the host.
        assert re.search(r"`(resend-dropd status|journalctl -u resend-dropd|systemctl)",
                         rule["text"]), f"{name}: the annotations name no command to run"


def test_promtool_unit_tests_pass_and_cover_every_alert():
    code, out = run_promtool("test", "rules", RULES_TEST)
    assert code == 0 and "SUCCESS" in out, out
    cases = parse_rule_tests()
    rules = parse_rules()
    untested = [name for name in rules if cases.get(name, (0, 0))[0] == 0]
    never_quiet = [name for name in rules if cases.get(name, (0, 0))[1] == 0]
    unknown = sorted(set(cases) - set(rules))
    assert not untested, f"alerts with no case where they fire: {untested}"
    assert not never_quiet, f"alerts with no case where they must not fire: {never_quiet}"
    assert not unknown, f"the tests name alerts the rules do not have: {unknown}"


# --- the dashboard's shape --------------------------------------------------------------------

def test_dashboard_is_a_provisionable_grafana_dashboard():
    dashboard = load_dashboard()
    assert 36 <= dashboard.get("schemaVersion", 0) <= 39, dashboard.get("schemaVersion")
    assert dashboard.get("uid") and dashboard.get("title"), "a dashboard needs a uid and a title"
    # Provisioning loads the file as it is: no id of another Grafana's database, no __inputs
    # that only the import dialog fills in.
    assert dashboard.get("id") is None and "__inputs" not in dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    for name in ("instance", "folder", "receiver"):
        var = variables.get(name)
        assert var and var["type"] == "query", f"no query variable ${name}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert re.fullmatch(rf"label_values\(resend_dropd_\w+(\{{[^}}]*\}})?, {name}\)", query), \
            query
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, var

    panels = all_panels(dashboard)
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"panel ids used twice: {ids}"
    problems = []
    cells = {}
    for panel in panels:
        where = f"panel {panel['id']} '{panel.get('title')}'"
        if not panel.get("title"):
            problems.append(f"panel {panel['id']}: no title")
        pos = panel.get("gridPos", {})
        if not (pos.get("w", 0) > 0 and pos.get("h", 0) > 0 and 0 <= pos.get("x", -1)
                and pos["x"] + pos["w"] <= 24 and pos.get("y", -1) >= 0):
            problems.append(f"{where}: gridPos {pos} is not on the 24-column grid")
        else:
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    if (x, y) in cells:
                        problems.append(f"{where} overlaps panel {cells[(x, y)]}")
                    cells[(x, y)] = panel["id"]
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
            problems.append(f"{where}: datasource {panel.get('datasource')}, not $datasource")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or not all(refs):
            problems.append(f"{where}: refIds {refs}")
        for target in targets:
            if not (target.get("expr") or "").strip():
                problems.append(f"{where} target {target.get('refId')}: no expr")
            if target.get("datasource") not in (None, panel.get("datasource")):
                problems.append(f"{where} target {target.get('refId')}: another datasource")
    assert not problems, "\n".join(sorted(set(problems)))


# --- against the daemon's /metrics ------------------------------------------------------------

def wait_metrics(env, sock, predicate, what):
    return env.wait_for(lambda: predicate(Scrape(control_metrics(sock))), what)


def with_webhook(env, config, receiver, name="ops"):
    """CONFIG (a file env.config wrote) with one webhook to RECEIVER, retried every 1-2 s."""
    secret = os.path.join(env.root, f"{name}.secret")
    with open(secret, "w", encoding="utf-8") as file:
        file.write(receiver.secret + "\n")
    os.chmod(secret, 0o600)
    hook = {"name": name, "url": receiver.url, "secret_file": secret, "retry_initial_s": 1,
            "retry_max_s": 2, "timeout_s": 5}
    with open(config, "a", encoding="utf-8") as file:
        file.write(yaml_text({"webhooks": [hook]}) + "\n")
    return config


def two_events_refused(scrape):
    """SCRAPE once webhook ops has its last two events waiting, refused at least once."""
    def value(name):
        return scrape.value(name, receiver="webhook:ops") or 0
    return value("resend_dropd_notifications_pending") == 2 \
        and value("resend_dropd_notification_failures_total") >= 1 \
        and value("resend_dropd_notifications_oldest_pending_age_seconds") > 0 and scrape


@pytest.fixture(scope="module")
def scrapes():
    """{"fleet": a one-host fleet's scrape after a done, a failed and a rate-limited file, its
    webhook's receiver refusing the last two events; "key": a daemon whose key Resend refuses;
    "quota": one whose daily quota is exceeded}."""
    binary_path()
    root = tempfile.mkdtemp(prefix="rdd-dash-")
    out = {}
    try:
        with PgServer() as pg, FakeResend(import_seconds=0.2) as fake, \
                WebhookReceiver() as receiver:
            env = Harness(root, fake)
            try:
                box = env.folder("box", follow_import=True)
                daemon = env.start(with_webhook(
                    env, fleet_config(env, pg.new_database(), [box], "h1"), receiver))
                sock = env.control_socket("h1.yaml")
                wait_metrics(env, sock, lambda s: s.value("resend_dropd_fleet_host_up",
                                                          host="h1") == 1,
                             "the fleet's series (first heartbeat)")
                box.drop("good.csv", CSV)
                env.wait_outcomes(box, done=1)
                wait_metrics(env, sock, lambda s: s.value(
                    "resend_dropd_notifications_delivered_total", receiver="webhook:ops") == 1,
                    "the first event delivered")
                receiver.answer(503)
                fake.faults([{"status": 422, "name": "validation_error", "message": "no",
                              "method": "POST", "path_prefix": "/contacts/imports",
                              "count": 1}])
                box.drop("bad.csv", CSV.replace(b"ada@", b"bad@"))
                env.wait_outcomes(box, done=1, failed=1)
                fake.faults([{"status": 429, "name": "rate_limit_exceeded", "retry_after": 1,
                              "method": "POST", "path_prefix": "/contacts/imports",
                              "count": 1}])
                box.drop("later.csv", CSV.replace(b"ada@", b"later@"))
                env.wait_outcomes(box, done=2, failed=1)
                out["fleet"] = wait_metrics(env, sock, two_events_refused,
                                            "the two refused events waiting")
                daemon.stop()

                keybox = env.folder("keybox")
                daemon = env.start(env.config([keybox], name="key.yaml"),
                                   api_key="re_wrong_key")
                keybox.drop("k.csv", CSV)
                out["key"] = wait_metrics(env, env.control_socket("key.yaml"),
                                          lambda s: s.value("resend_dropd_api_paused") == 1 and s,
                                          "the pause after the refused key")
                daemon.stop()

                quotabox = env.folder("quotabox")
                fake.faults([{"status": 429, "name": "daily_quota_exceeded",
                              "message": "You have reached your daily quota.",
                              "method": "POST", "count": 100}])
                daemon = env.start(env.config([quotabox], name="quota.yaml"))
                quotabox.drop("q.csv", CSV)
                out["quota"] = wait_metrics(env, env.control_socket("quota.yaml"),
                                            lambda s: s.value("resend_dropd_api_paused") == 1
                                            and s, "the pause after the quota")
                daemon.stop()
            except BaseException:
                for index, d in enumerate(env.daemons):
                    print(f"=== daemon {index}: {d.config} -> exit {d.returncode} ===")
                    print(tail(d.log(), 200))
                raise
            finally:
                env.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def test_scrapes_pass_promtool(scrapes):
    for kind, scrape in scrapes.items():
        done = subprocess.run([promtool(), "check", "metrics"], input=scrape.text,
                              capture_output=True, text=True, timeout=TIMEOUT)
        # Lint findings are printed but do not change the exit status: there must be none.
        assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), \
            f"{kind}: {done.stdout}{done.stderr}\n{scrape.text}"


def expression_problems(scrapes, expressions):
    known = merged_labels(scrapes.values())
    fleet = scrapes["fleet"]

    def types_of(name):
        return fleet.types.get(fleet.family(name))

    problems = []
    for where, expr, legend, printed in expressions:
        problems += check_expression(where, expr, known, types_of, legend, printed)
    return problems


def test_every_metric_and_label_of_the_dashboard_is_exported(scrapes):
    found = dashboard_expressions(load_dashboard())
    assert len(found) > 20, found
    problems = expression_problems(scrapes, found)
    assert not problems, "the dashboard asks for what /metrics does not have:\n" + \
        "\n".join(problems) + "\n--- /metrics ---\n" + scrapes["fleet"].text


def test_every_metric_and_label_of_the_rules_is_exported(scrapes):
    rules = parse_rules()
    found = [(f"alert {name}", rule["expr"], "", ANNOTATION_LABEL.findall(rule["text"]))
             for name, rule in rules.items()]
    problems = expression_problems(scrapes, found)
    assert not problems, "the rules ask for what /metrics does not have:\n" + \
        "\n".join(problems) + "\n--- /metrics ---\n" + scrapes["fleet"].text


def test_every_exported_metric_has_a_panel(scrapes):
    fleet = scrapes["fleet"]
    named = {fleet.family(n) or n for _, e, _, _ in dashboard_expressions(load_dashboard())
             for n in METRIC.findall(e)}
    missing = sorted(set(fleet.types) - named - set(NOT_ON_THE_DASHBOARD))
    assert not missing, f"metrics with no panel on {DASHBOARD} (add one, or say why in " \
                        f"NOT_ON_THE_DASHBOARD): {missing}"
    gone = sorted(set(NOT_ON_THE_DASHBOARD) - set(fleet.types))
    assert not gone, f"NOT_ON_THE_DASHBOARD names metrics the daemon does not export: {gone}"


def test_a_refused_key_and_a_quota_are_told_apart_as_the_rules_do(scrapes):
    """ResendDropdApiKeyRefused: paused, and a 401 or 403 counted; ResendDropdApiPaused: paused
    with none (the daemon exports no reason for its pause)."""
    def refusals(scrape):
        return sum(float(v) for code in ("401", "403") for v in re.findall(
            rf'^resend_dropd_api_requests_total\{{endpoint="[a-z_]+",code="{code}"\}} (\S+)$',
            scrape.text, re.M))

    key, quota = scrapes["key"], scrapes["quota"]
    assert key.value("resend_dropd_api_paused") == 1
    assert key.value("resend_dropd_api_requests_total", endpoint="create_import",
                     code="403") >= 1, key.text
    assert quota.value("resend_dropd_api_paused") == 1
    assert quota.value("resend_dropd_api_requests_total", endpoint="create_import",
                       code="429") >= 1, quota.text
    assert refusals(quota) == 0, quota.text
    # Neither pause fails the file: nothing for ResendDropdFilesFailing.
    for scrape in (key, quota):
        assert not [line for line in scrape.text.splitlines()
                    if line.startswith("resend_dropd_files_total{")
                    and 'outcome="failed"' in line and not line.endswith(" 0")], scrape.text
    rules = parse_rules()
    assert 'code=~"401|403"' in rules["ResendDropdApiKeyRefused"]["expr"]
    assert 'code=~"401|403"' in rules["ResendDropdApiPaused"]["expr"]


def test_a_refusing_receiver_shows_as_the_panels_and_rules_read_it(scrapes):
    """ResendDropdNotificationOutboxGrowing reads the oldest pending event's age, the panels the
    pending events and the rates of delivered, failed and dropped: with the first event
    accepted and the two after it refused, each says so, under the webhook's receiver label
    (receiver="webhook:ops")."""
    fleet = scrapes["fleet"]

    def value(name):
        return fleet.value(name, receiver="webhook:ops")

    assert value("resend_dropd_notifications_delivered_total") == 1, fleet.text
    assert value("resend_dropd_notification_failures_total") >= 1, fleet.text
    assert value("resend_dropd_notifications_pending") == 2, fleet.text
    assert value("resend_dropd_notifications_oldest_pending_age_seconds") > 0, fleet.text
    assert value("resend_dropd_notifications_dropped_total") == 0, fleet.text
    rules = parse_rules()
    assert "resend_dropd_notifications_oldest_pending_age_seconds" in \
        rules["ResendDropdNotificationOutboxGrowing"]["expr"]
    assert "resend_dropd_notifications_dropped_total" in \
        rules["ResendDropdNotificationsDropped"]["expr"]
