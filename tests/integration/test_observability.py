"""examples/observability/: the Grafana dashboard and the PrometheusRule.

* ``promtool check rules`` accepts the PrometheusRule's ``spec``, and ``promtool test rules``
  runs egress-guard-prometheusrule.test.yaml: each alert fires on synthetic series that should
  fire it, at the time it should, and not on its look-alikes.
* Every PromQL expression of the dashboard (panel targets and template variables, with Grafana's
  ``$__rate_interval``-style variables given values) parses: each becomes a recording rule that
  ``promtool check rules`` reads.
* Every metric the dashboard and the alerts name is one a real Envoy with egress-guard exports
  on /stats/prometheus (through the shipped ``stats_tags``), and every label they select or group
  by is one it carries -- except the scrape's own ``namespace`` and ``pod`` and istio-agent's
  metrics.

promtool is Debian's ``prometheus`` package (.ci/run installs it; ``make observability-deps``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from conftest import unavailable
from egress import Via
from harness import REPO, Envoy, TcpServer, tcp_exchange
from test_reload import ecds_sidecar

OBSERVABILITY = REPO / "examples/observability"
DASHBOARD = OBSERVABILITY / "egress-guard-dashboard.json"
RULE = OBSERVABILITY / "egress-guard-prometheusrule.yaml"
RULE_TESTS = OBSERVABILITY / "egress-guard-prometheusrule.test.yaml"

# Grafana's built-in variables, and the dashboard's own ("All" is ".*").
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m",
                     "$namespace": ".*", "$pod": ".*"}

# Labels Prometheus adds when it scrapes a pod, not Envoy.
SCRAPE_LABELS = {"namespace", "pod"}
# istio-agent's own metrics (docs/istio.md): not on Envoy's /stats.
EXTERNAL = re.compile(r"istio_agent_\w+")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool not found: install Debian's `prometheus` package "
                    "(make observability-deps)")
    return path


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------------------------
# What the files hold
# --------------------------------------------------------------------------------------------

def rule_spec() -> dict[str, Any]:
    doc = yaml.safe_load(RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return doc["spec"]


def alert_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in rule_spec()["groups"] for r in g["rules"]}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def dashboard_exprs() -> dict[str, str]:
    """Every PromQL expression of the dashboard, by where it is, Grafana variables replaced.
    A template variable's ``label_values(selector, label)`` gives its selector."""
    dashboard = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in _walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []) if "gridPos" in panel else []:
            found[f"panel {panel['id']} {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = LABEL_VALUES.match(query)
            assert m, f"variable {var['name']}: {query}"
            found[f"variable {var['name']}"] = m.group(1)
    substituted = {}
    for where, expr in found.items():
        for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{where}: an unknown Grafana variable in {expr}"
        substituted[where] = expr
    return substituted


def test_the_dashboard_is_laid_out() -> None:
    """Unique panel ids, no two panels on the same cells of Grafana's 24-column grid, every
    query on the dashboard's data source variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        for target in p.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "namespace",
                                                                     "pod"]


def test_the_files_hold_what_the_issue_asks() -> None:
    assert set(alert_exprs()) == {"EgressGuardDenialsSpike", "EgressGuardVmFailed",
                                  "EgressGuardNotDeciding", "EgressGuardConfigRejected",
                                  "EgressGuardModulePullFailed", "EgressGuardPolicyDrift",
                                  "EgressGuardPinningFailing"}
    exprs = "\n".join(dashboard_exprs().values())
    for needle in ('egress_guard_decisions_total{decision="deny"',          # denials by reason
                   'egress_guard_rule_matches_total{decision="deny"',       # ... by rule
                   'egress_guard_rule_matches_total{decision="audit_deny"',  # would-deny rules
                   'egress_guard_decisions_total{decision="audit_deny"',
                   "egress_guard_sniff_total", "egress_guard_malformed_total",
                   "envoy_wasm_envoy_wasm_runtime_v8_active", "egress_guard_vm_reload",
                   "_update_rejected", "egress_guard_policy_info"):
        assert needle in exprs, needle


# --------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------

def test_prometheusrule_passes_promtool_check(promtool: str, tmp: Path) -> None:
    rules = tmp / "egress-guard-rules.yaml"
    rules.write_text(yaml.safe_dump(rule_spec(), sort_keys=False))
    out = run(promtool, "check", "rules", rules)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_exprs())} rules found" in out.stdout, out.stdout


def test_alerts_fire_on_synthetic_series(promtool: str, tmp: Path) -> None:
    (tmp / "egress-guard-rules.yaml").write_text(yaml.safe_dump(rule_spec(), sort_keys=False))
    tests = tmp / RULE_TESTS.name
    shutil.copy(RULE_TESTS, tests)
    # Every alert has a test in which it fires.
    tested = {t["alertname"] for case in yaml.safe_load(tests.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert tested == set(alert_exprs())
    out = run(promtool, "test", "rules", tests)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout

    # ... and the tests can fail: a doubled threshold no longer fires at the expected time.
    (tmp / "egress-guard-rules.yaml").write_text(
        yaml.safe_dump(rule_spec(), sort_keys=False).replace(" > 0.2\\n", " > 2\\n"))
    out = run(promtool, "test", "rules", tests)
    report = out.stdout + out.stderr
    assert out.returncode != 0 and "alertname: EgressGuardDenialsSpike" in report, report


def test_every_dashboard_query_parses(promtool: str, tmp: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 12
    names = {where: f"dashboard:expr_{i}" for i, where in enumerate(exprs)}
    rules = tmp / "dashboard-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": names[where], "expr": expr} for where, expr in exprs.items()]}]}))
    out = run(promtool, "check", "rules", rules)
    assert out.returncode == 0, "\n".join(
        [out.stdout, out.stderr, *(f"{names[w]}: {w}: {e}" for w, e in exprs.items())])

    # A broken expression is caught the same way.
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:broken", "expr": "sum by (rule (rate(x[5m]))"}]}]}))
    assert run(promtool, "check", "rules", rules).returncode != 0


# --------------------------------------------------------------------------------------------
# The names are Envoy's
# --------------------------------------------------------------------------------------------

NAME_REGEX = re.compile(r'__name__\s*=~\s*"([^"]+)"')
METRIC = re.compile(r"\b((?:egress_guard|envoy|istio_agent)_\w+)\b(?!\s*(?:=|!=|=~|!~)\s*\")")
SELECTOR = re.compile(r"\b((?:egress_guard|envoy|istio_agent)_\w+)?\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def referenced(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, ``__name__`` regexes, label names) an expression uses."""
    regexes = set(NAME_REGEX.findall(expr))
    plain = NAME_REGEX.sub("", expr)
    names = set(METRIC.findall(plain))
    labels = set()
    for _, matchers in SELECTOR.findall(plain):
        labels |= set(MATCHER.findall(matchers))
    for group in GROUPING.findall(plain):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    return names, regexes, labels - {"__name__"}


def exposition(text: str) -> dict[str, set[str]]:
    """Metric name -> label names, from Prometheus text format."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s", line)
        if m:
            found.setdefault(m.group(1), set()).update(re.findall(r"(\w+)=\"", m.group(2) or ""))
    return found


def test_every_metric_and_label_is_one_envoy_exports(
        start_envoy: Callable[..., Envoy], serve: Callable[..., Any], wasm_path: Path,
        tmp: Path) -> None:
    db = serve(TcpServer("127.0.0.3"))
    # A rule that pins, so that the pin counters are defined (no connection is pinned).
    policy = {"pin": True, "allow": [{"name": "db", "cidrs": ["127.0.0.3/32"], "ports": [db.port]},
                                     {"name": "api", "hosts": ["api.example.com"], "ports": [443]}]}
    # The filter through ECDS, as Istio delivers it: extension_config_discovery.* exists.
    config, _ = ecds_sidecar(wasm_path, tmp, policy)
    envoy = start_envoy(config)
    # One allowed connection: per-rule counters are defined on a rule's first match.
    assert tcp_exchange(send=b"x", until=1, **Via(envoy).to(db.address)).received == b"x"
    exported = exposition(envoy.prometheus())

    problems = []
    uses = {**{f"alert {k}": v for k, v in alert_exprs().items()}, **dashboard_exprs()}
    for where, expr in uses.items():
        names, regexes, labels = referenced(expr)
        for name in names:
            if EXTERNAL.fullmatch(name):
                continue
            if name not in exported:
                problems.append(f"{where}: {name} is not exported")
        for regex in regexes:
            if not any(re.fullmatch(regex, n) for n in exported):
                problems.append(f"{where}: no exported metric matches {regex!r}")
        for label in labels - SCRAPE_LABELS:
            carriers = [n for n in names | {n for r in regexes for n in exported
                                            if re.fullmatch(r, n)}
                        if not EXTERNAL.fullmatch(n)]
            if carriers and not any(label in exported.get(n, set()) for n in carriers):
                problems.append(f"{where}: no metric among {carriers} has label {label!r}")
    assert not problems, "\n".join(problems)
