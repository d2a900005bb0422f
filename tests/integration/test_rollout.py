"""The audit-to-enforce rollout on a real Envoy: audit, ``suggest``, enforce, ``replay``.

1. Traffic goes through the shipped sidecar listener with a policy in **audit** mode (``"log":
   "all"``): some of it is allowed by a rule, most of it is an audit would-deny, one name is
   denied by a deny rule. Envoy's own log file -- Envoy's line prefix, its start-up lines and all
   -- is what the CLI reads.
2. ``egress-guard suggest`` turns that log into a policy: names grouped by registrable domain, a
   wildcard only where enough siblings were seen, a CIDR + port rule for the connection without
   a name, never the denied name.
3. The suggested policy, unchanged, is loaded into a new Envoy in **allowlist** mode and the same
   traffic sent again: every connection the log saw pass passes, and the rest of what the test
   sends (the denied name, an unseen name, an unseen port) is denied.
4. ``egress-guard replay`` of the captured log against a stricter policy exits 3 and names what
   it would newly deny; against the suggested policy it newly denies nothing.
5. The same log reshaped as ``kubectl logs`` shows it (Istio's proxy format, ``--prefix``, bare
   JSON) gives the same suggestion.

The CLI is ``$EGRESS_GUARD_CLI`` or ``target/release/egress-guard`` (``make cli``).

``EG_WRITE_ROLLOUT_FIXTURES=1`` also copies the audit run's Envoy log and its suggestion to
``tests/data/logs/`` (the fixtures of tests/cli.rs, which runs without Envoy).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import unavailable
from egress import PG_SSL_REQUEST, Via, decision_log, decisions, get, sidecar
from harness import (REPO, Cert, Envoy, HttpServer, TcpServer, TlsServer, http_request,
                     tcp_exchange, tls_client)

DST = "127.0.0.2"       # the stand-in TLS and HTTP services
DB = "127.0.0.3"        # a service reached without a name

FIXTURES = REPO / "tests/data/logs"

# What the application sends during the audit: TLS names (one TLS server answers them all),
# HTTP Host names (one HTTP server), and a database protocol that carries no name.
TLS_NAMES = ["github.com", "api.github.com", "codeload.github.com", "objects.github.com",
             "pypi.org", "files.pythonhosted.org", "www.example.co.uk", "api.example.co.uk"]
HTTP_NAMES = ["deb.debian.org", "security.debian.org"]
DENIED_NAME = "blocked.example.org"      # denied by the audit policy's deny rule

AUDIT_POLICY = {
    "mode": "audit",
    "log": "all",
    "allow": [{"name": "github", "hosts": ["github.com", "api.github.com"]}],
    "deny": [{"name": "blocked", "hosts": [DENIED_NAME]}],
}


# --------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_path() -> Path:
    path = Path(os.environ.get("EGRESS_GUARD_CLI") or REPO / "target/release/egress-guard")
    if not path.is_file():
        unavailable(f"{path} not found: run `make cli` or set EGRESS_GUARD_CLI")
    return path


@pytest.fixture
def cli(cli_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args, stdin=None) -> CompletedProcess`` (text, never raises on exit codes)."""
    def run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cli_path), *map(str, args)], input=stdin, text=True,
                              capture_output=True, timeout=60,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    return run


# --------------------------------------------------------------------------------------------
# The traffic
# --------------------------------------------------------------------------------------------

@dataclass
class Services:
    tls: TlsServer
    http: HttpServer
    db: TcpServer
    db_other: TcpServer          # same IP as db, another port: never used during the audit


@pytest.fixture
def services(serve: Callable[..., Any], cert: Cert) -> Services:
    return Services(
        tls=serve(TlsServer(DST, certfile=cert.certfile, keyfile=cert.keyfile)),
        http=serve(HttpServer(DST, label="mirror")),
        db=serve(TcpServer(DB)),
        db_other=serve(TcpServer(DB)),
    )


@dataclass
class Outcomes:
    """What each connection achieved, by a readable key."""

    passed: dict[str, bool] = field(default_factory=dict)

    def allowed(self) -> set[str]:
        return {k for k, ok in self.passed.items() if ok}

    def denied(self) -> set[str]:
        return {k for k, ok in self.passed.items() if not ok}


def tls(via: Via, svc: Services, name: str, out: Outcomes) -> None:
    result = tls_client(sni=name, payload=b"hello", **via.to(svc.tls.address))
    out.passed[f"tls {name}"] = bool(result.handshake_ok and result.received == b"hello")


def http(via: Via, svc: Services, name: str, out: Outcomes) -> None:
    result = http_request(raw_request=get(name), **via.to(svc.http.address))
    out.passed[f"http {name}"] = result.status == 200 and result.body == b"hello from mirror"


def raw(via: Via, server: TcpServer, key: str, out: Outcomes) -> None:
    result = tcp_exchange(send=PG_SSL_REQUEST, until=len(PG_SSL_REQUEST), **via.to(server.address))
    out.passed[key] = result.received == PG_SSL_REQUEST


def audit_traffic(via: Via, svc: Services) -> Outcomes:
    """The application's traffic during the audit. api.github.com twice: counts add up."""
    out = Outcomes()
    for name in [*TLS_NAMES, "api.github.com"]:
        tls(via, svc, name, out)
    for name in HTTP_NAMES:
        http(via, svc, name, out)
    raw(via, svc.db, "db", out)
    tls(via, svc, DENIED_NAME, out)
    return out


AUDIT_CONNECTIONS = len(TLS_NAMES) + 1 + len(HTTP_NAMES) + 1 + 1


@dataclass
class Audit:
    envoy: Envoy
    log: Path                   # a copy of Envoy's own log file, as Envoy wrote it
    outcomes: Outcomes


def run_audit(start_envoy: Callable[..., Envoy], wasm_path: Path, svc: Services,
              tmp: Path) -> Audit:
    envoy = start_envoy(sidecar(wasm_path, AUDIT_POLICY))
    outcomes = audit_traffic(Via(envoy), svc)
    # Audit mode lets everything through but what a deny rule denies.
    assert outcomes.denied() == {f"tls {DENIED_NAME}"}, outcomes
    records = decision_log(envoy, at_least=AUDIT_CONNECTIONS)
    assert len(records) == AUDIT_CONNECTIONS, records
    assert decisions(envoy, "allow", "rule") == 3           # github.com, api.github.com twice
    assert decisions(envoy, "audit_deny", "no_match") == AUDIT_CONNECTIONS - 4
    assert decisions(envoy, "deny", "deny_rule") == 1
    # A copy, so that every step reads the same lines whatever Envoy writes later.
    log = tmp / "audit-envoy.log"
    shutil.copy(envoy.log_path, log)
    return Audit(envoy, log, outcomes)


@pytest.fixture
def audit(start_envoy: Callable[..., Envoy], wasm_path: Path, services: Services,
          tmp: Path) -> Audit:
    return run_audit(start_envoy, wasm_path, services, tmp)


# --------------------------------------------------------------------------------------------
# suggest
# --------------------------------------------------------------------------------------------

def suggest(cli: Callable[..., subprocess.CompletedProcess[str]], *args: str | Path,
            stdin: str | None = None) -> tuple[dict[str, Any], str, str]:
    """(policy, its text, the summary on stderr)."""
    out = cli("suggest", *args, stdin=stdin)
    assert out.returncode == 0, out
    return json.loads(out.stdout), out.stdout, out.stderr


def expected_rules(svc: Services) -> list[dict[str, Any]]:
    """The suggestion for the audit's traffic with the default threshold (3) and prefix (/32).

    github.com has three children seen (api, codeload, objects): ``*.github.com``, beside
    github.com itself, which the wildcard does not match. example.co.uk and debian.org have two
    each: listed exactly. co.uk is a public suffix, so example.co.uk is the domain. The
    denied name is nowhere.
    """
    tls_port, http_port, db_port = svc.tls.port, svc.http.port, svc.db.port
    return [
        {"name": "debian-org", "hosts": ["deb.debian.org", "security.debian.org"],
         "ports": [http_port]},
        {"name": "example-co-uk", "hosts": ["api.example.co.uk", "www.example.co.uk"],
         "ports": [tls_port]},
        {"name": "github-com", "hosts": ["github.com", "*.github.com"], "ports": [tls_port]},
        {"name": "pypi-org", "hosts": ["pypi.org"], "ports": [tls_port]},
        {"name": "pythonhosted-org", "hosts": ["files.pythonhosted.org"], "ports": [tls_port]},
        {"name": f"cidrs-{db_port}", "cidrs": [f"{DB}/32"], "ports": [db_port]},
    ]


def test_suggest_from_a_real_audit_log_then_enforce_it(
        audit: Audit, services: Services, cli, start_envoy, wasm_path, tmp: Path) -> None:
    log_text = audit.log.read_text()
    # The real thing: Envoy's prefix in front of every decision, and Envoy's other lines.
    decision_lines = [line for line in log_text.splitlines() if '{"decision"' in line]
    assert len(decision_lines) == AUDIT_CONNECTIONS
    assert all(re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[\w+\]\[wasm\] ", line)
               for line in decision_lines), decision_lines[:2]
    other_lines = len(log_text.splitlines()) - len(decision_lines)
    assert other_lines > 0

    policy, text, summary = suggest(cli, audit.log)

    assert policy == {"mode": "allowlist", "allow": expected_rules(services)}, text
    assert DENIED_NAME not in text
    # The summary counts what was read, used and skipped.
    assert summary.startswith(
        f"egress-guard suggest: {len(log_text.splitlines())} lines read from 1 input: "
        f"{AUDIT_CONNECTIONS} decision records (3 allow, {AUDIT_CONNECTIONS - 4} audit_deny, "
        f"1 deny), {AUDIT_CONNECTIONS - 1} used (allow and audit_deny); {other_lines} other "
        "lines skipped, 0 unreadable records\n6 rules:"), summary
    # Deterministic: the same log, the same bytes.
    assert suggest(cli, audit.log)[1] == text
    # The suggestion passes the CLI's own check.
    (tmp / "suggested.json").write_text(text)
    check = cli("check", tmp / "suggested.json")
    assert check.returncode == 0, check

    # Enforce it: the suggested text, as suggest wrote it, in a new Envoy.
    envoy = start_envoy(sidecar(wasm_path, text))
    via = Via(envoy)
    again = audit_traffic(via, services)
    assert again.passed == audit.outcomes.passed, (again, audit.outcomes)
    # ... and nothing else the test sends: an unseen name at a seen destination, an unseen
    # sibling under a domain listed exactly, the database's IP on another port.
    tls(via, services, "evil.example.net", again)
    tls(via, services, "ftp.debian.org", again)
    http(via, services, "mirror.example.co.uk", again)
    raw(via, services.db_other, "db other port", again)
    # The wildcard is the one intended widening: a new child of github.com passes.
    tls(via, services, "gist.github.com", again)

    assert again.denied() == {f"tls {DENIED_NAME}", "tls evil.example.net",
                              "tls ftp.debian.org", "http mirror.example.co.uk",
                              "db other port"}, again
    assert services.db_other.connections == 0       # denied at connection open
    assert decisions(envoy, "deny", "no_match") == 5
    assert decisions(envoy, "allow", "rule") == AUDIT_CONNECTIONS - 1 + 1
    denied_log = decision_log(envoy, at_least=5)
    assert sorted((r["name"] or r["dst"]) for r in denied_log) == sorted(
        [DENIED_NAME, "evil.example.net", "ftp.debian.org", "mirror.example.co.uk",
         f"{DB}:{services.db_other.port}"]), denied_log

    if os.environ.get("EG_WRITE_ROLLOUT_FIXTURES"):
        write_fixtures(audit, text)


def test_suggest_options_on_a_real_log(audit: Audit, services: Services, cli) -> None:
    """``--wildcard-threshold`` and ``--prefix-len`` change what they say, and only that."""
    strict, _, _ = suggest(cli, audit.log, "--wildcard-threshold", "4", "--prefix-len", "24")
    rules = {r["name"]: r for r in strict["allow"]}
    assert rules["github-com"]["hosts"] == ["github.com", "api.github.com", "codeload.github.com",
                                            "objects.github.com"]
    assert rules[f"cidrs-{services.db.port}"]["cidrs"] == ["127.0.0.0/24"]

    loose, _, _ = suggest(cli, audit.log, "--wildcard-threshold", "2")
    rules = {r["name"]: r for r in loose["allow"]}
    assert rules["debian-org"]["hosts"] == ["*.debian.org"]
    assert rules["example-co-uk"]["hosts"] == ["*.example.co.uk"]
    assert rules["github-com"]["hosts"] == ["github.com", "*.github.com"]


# --------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------

def test_replay_a_real_log_against_a_stricter_policy(audit: Audit, services: Services, cli,
                                                    tmp: Path) -> None:
    suggested, text, _ = suggest(cli, audit.log)
    (tmp / "suggested.json").write_text(text)

    # Against the suggestion itself: nothing newly denied; the audit's would-denies now pass.
    same = cli("replay", audit.log, "--policy", tmp / "suggested.json", "--json")
    assert same.returncode == 0, same
    report = json.loads(same.stdout)
    assert report["newly_denied"] == 0, report
    assert report["records"] == AUDIT_CONNECTIONS
    assert report["no_longer_audit_deny"] == AUDIT_CONNECTIONS - 4, report

    # Stricter: exact GitHub names only (no codeload, no objects), and no PyPI.
    stricter = json.loads(text)
    for rule in stricter["allow"]:
        if rule["name"] == "github-com":
            rule["hosts"] = ["github.com", "api.github.com"]
    stricter["allow"] = [r for r in stricter["allow"] if r["name"] != "pypi-org"]
    (tmp / "stricter.json").write_text(json.dumps(stricter))

    out = cli("replay", audit.log, "--policy", tmp / "stricter.json", "--json")
    assert out.returncode == 3, out
    report = json.loads(out.stdout)
    newly = {g["name"]: g for g in report["changes"] if g["change"] == "newly_denied"}
    assert set(newly) == {"codeload.github.com", "objects.github.com", "pypi.org"}, report
    assert report["newly_denied"] == 3
    for name, group in newly.items():
        assert group["dst"] == f"{DST}:{services.tls.port}"
        assert group["old"]["decision"] == "audit_deny" and group["new"]["decision"] == "deny"
        assert group["new"]["reason"] == "no_match"

    text_out = cli("replay", audit.log, "--policy", tmp / "stricter.json")
    assert text_out.returncode == 3, text_out
    assert "newly denied" in text_out.stdout
    for name in newly:
        assert name in text_out.stdout, text_out.stdout


# --------------------------------------------------------------------------------------------
# kubectl logs
# --------------------------------------------------------------------------------------------

ENVOY_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{3})\]\[(\d+)\]\[(\w+)\]\[(\w+)\] "
                        r"\[([^\]]*)\] (.*)$")


def istio_shape(line: str) -> str:
    """An Envoy log line as an Istio sidecar's proxy log format writes it (what ``kubectl
    logs POD -c istio-proxy`` shows): tab-separated, the thread at the end."""
    m = ENVOY_LINE.match(line)
    if not m:
        return line
    day, time, thread, level, logger, source, message = m.groups()
    return f"{day}T{time}Z\t{level}\tenvoy {logger} {source}\t{message}\tthread={thread}"


def bare_json(line: str) -> str | None:
    start = line.find('{"decision"')
    return line[start:] if start >= 0 else None


def test_kubectl_logs_shapes_give_the_same_suggestion(audit: Audit, cli) -> None:
    _, expected, _ = suggest(cli, audit.log)
    lines = audit.log.read_text().splitlines()

    istio = "\n".join(istio_shape(line) for line in lines) + "\n"
    assert istio.count("\tthread=") >= AUDIT_CONNECTIONS
    prefixed = "".join(f"[pod/web-1/istio-proxy] 2026-11-22T05:47:53.796123Z {line}\n"
                       for line in istio.splitlines())
    bare = "".join(j + "\n" for j in map(bare_json, lines) if j)

    for shape in (istio, prefixed, bare):
        _, text, summary = suggest(cli, "-", stdin=shape)
        assert text == expected, (summary, shape[:400])


# --------------------------------------------------------------------------------------------
# Fixtures for tests/cli.rs
# --------------------------------------------------------------------------------------------

def write_fixtures(audit: Audit, suggested: str) -> None:
    """The audit's Envoy log, as Envoy wrote it, and its suggestion."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / "audit-envoy.log").write_text(audit.log.read_text())
    (FIXTURES / "audit-suggested.json").write_text(suggested)


# --------------------------------------------------------------------------------------------
# docs/rollout.md
# --------------------------------------------------------------------------------------------

ROLLOUT_DOC = REPO / "docs/rollout.md"
CODE_BLOCK = re.compile(r"^ *```(console|sh)\n(.*?)^ *```", re.S | re.M)


def doc_commands() -> list[list[str]]:
    """Every ``egress-guard ...`` invocation in the doc's shell blocks and on the ``$`` lines of
    its console blocks, as words (up to a redirection)."""
    commands = []
    for lang, block in CODE_BLOCK.findall(ROLLOUT_DOC.read_text()):
        for line in map(str.lstrip, block.splitlines()):
            if lang == "console":
                if not line.startswith("$ "):
                    continue            # output
                line = line.removeprefix("$ ")
            for segment in line.split("|"):
                words = segment.split()
                if words[:1] != ["egress-guard"]:
                    continue
                cut = next((i for i, w in enumerate(words) if w.startswith(("> ", ">", "2>"))),
                           len(words))
                commands.append(words[:cut])
    return commands


def test_the_rollout_doc_uses_commands_and_flags_the_cli_has(cli) -> None:
    commands = doc_commands()
    assert {c[1] for c in commands} == {"check", "suggest", "explain", "replay", "render"}, commands
    helps: dict[str, str] = {}
    for words in commands:
        sub = words[1]
        if sub not in helps:
            out = cli(sub, "--help")
            assert out.returncode == 0, (words, out.stderr)
            helps[sub] = out.stdout
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[sub]), \
                f"{' '.join(words)}: {flag} is not an option of `egress-guard {sub}`"
    # The replay step's exit code is the documented one.
    assert "exit code 3" in cli("replay", "--help").stdout.lower() or \
        "3  explain: deny; replay" in cli("--help").stdout
