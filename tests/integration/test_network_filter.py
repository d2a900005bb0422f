"""egress-guard as a network filter on the shipped sidecar listener, against a real Envoy.

Original destinations are claimed with a PROXY v1 header (see egress.py); the sidecar-faithful
variant with iptables REDIRECT is test_sidecar_netns.py. Every denial is checked at the
destination: it received no client byte (and, where the design promises it, no connection).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import (PG_SSL_REQUEST, Via, all_decisions, decision_log, decisions, malformed,
                    rule_match_series, rule_matches, sidecar, sniffed)
from hello import Hello
from harness import (Cert, Envoy, HttpServer, TcpServer, TlsServer, connect, http_request,
                     tcp_exchange, tls_client)

DST = "127.0.0.2"       # the stand-in "external" services
OTHER = "127.0.0.3"


@pytest.fixture
def guard(start_envoy: Callable[..., Envoy], wasm_path: Path) -> Callable[..., tuple[Envoy, Via]]:
    """``guard(policy, **sidecar options) -> (envoy, via)``."""
    def start(policy: dict[str, Any] | str, **options: Any) -> tuple[Envoy, Via]:
        envoy = start_envoy(sidecar(wasm_path, policy, **options))
        return envoy, Via(envoy)
    return start


@pytest.fixture
def tls_server(serve: Callable[..., Any], cert: Cert) -> Callable[..., TlsServer]:
    return lambda host=DST: serve(TlsServer(host, certfile=cert.certfile, keyfile=cert.keyfile))


def assert_nothing_reached(server: Any) -> None:
    """The destination saw no client byte (a TCP connect may have happened)."""
    assert all(data == b"" for data in server.received), server.received


def assert_denied(result: Any) -> None:
    assert result.handshake_ok in (False, None), result
    assert result.received == b"", result


@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
def test_tls_allowed_by_sni_reaches_destination(guard, tls_server, inspector) -> None:
    server = tls_server()
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"], "ports": [server.port]}]}
    envoy, via = guard(policy, tls_inspector=inspector)

    result = tls_client(sni="api.example.com", payload=b"hello", **via.to(server.address))

    assert result.handshake_ok and result.received == b"hello", result
    assert server.snis == ["api.example.com"]
    assert decisions(envoy, "allow", "rule") == 1
    assert rule_matches(envoy, "api") == 1
    assert sniffed(envoy, "inspector_sni" if inspector else "tls_sni") == 1


@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
def test_tls_denied_by_sni_sends_nothing(guard, tls_server, inspector) -> None:
    server = tls_server()
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"], "ports": [server.port]}]}
    envoy, via = guard(policy, tls_inspector=inspector)

    result = tls_client(sni="evil.example.com", **via.to(server.address))

    assert_denied(result)
    assert server.handshakes == 0
    assert_nothing_reached(server)
    assert decisions(envoy, "deny", "no_match") == 1
    line = decision_log(envoy)[-1]
    assert line | {"src": None, "policy": None} == {
        "decision": "deny", "reason": "no_match", "rule": None,
        "dst": f"{DST}:{server.port}", "name": "evil.example.com", "name_source": "sni",
        "proto": "tls", "src": None, "filter": "network", "mode": "allowlist", "policy": None}
    assert re.fullmatch(r"[0-9a-f]{12}", line["policy"]), line


def test_http_host_on_tcp_chain(guard, serve) -> None:
    server = serve(HttpServer(DST, label="deb"))
    policy = {"allow": [{"name": "debian", "hosts": ["deb.debian.org"], "ports": [server.port]}]}
    envoy, via = guard(policy)

    ok = http_request(raw_request=b"GET /debian/ HTTP/1.1\r\nHost: deb.debian.org\r\n"
                                  b"Connection: close\r\n\r\n", **via.to(server.address))
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    assert server.hosts == ["deb.debian.org"]

    denied = http_request(raw_request=b"GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
                          **via.to(server.address))
    assert denied.status is None, denied
    assert server.requests == ["GET /debian/ HTTP/1.1"]
    assert sniffed(envoy, "http_host") == 2
    assert decisions(envoy, "allow", "rule") == 1
    assert decisions(envoy, "deny", "no_match") == 1


def test_http_absolute_form_disagreeing_with_host_is_malformed(guard, serve) -> None:
    """Passthrough with a deny host rule: a request that names two hosts must not pass."""
    server = serve(HttpServer(DST))
    envoy, via = guard({"mode": "passthrough", "deny": [{"hosts": ["evil.example.com"]}]})

    result = http_request(raw_request=b"GET http://evil.example.com/ HTTP/1.1\r\n"
                                      b"Host: deb.debian.org\r\n\r\n", **via.to(server.address))

    assert result.status is None, result
    assert server.requests == []
    assert decisions(envoy, "deny", "malformed") == 1
    assert malformed(envoy, "http_host_mismatch") == 1


def test_raw_tcp_by_cidr_and_port(guard, serve) -> None:
    db = serve(TcpServer(OTHER))
    other_port = serve(TcpServer(OTHER))
    policy = {"allow": [{"name": "db", "cidrs": [f"{OTHER}/32"], "ports": [db.port]}]}
    envoy, via = guard(policy)

    ok = tcp_exchange(send=b"\x00\x01select 1", until=10, **via.to(db.address))
    assert ok.received == b"\x00\x01select 1", ok

    denied = tcp_exchange(send=b"select 1", **via.to(other_port.address))
    assert denied.received == b"" and denied.closed_by_peer, denied
    # No host rule applies, so the deny is taken at connection open: no upstream connection.
    assert other_port.connections == 0
    assert decisions(envoy, "allow", "rule") == 1
    assert decisions(envoy, "deny", "no_match") == 1


@pytest.mark.parametrize("mode", ["allowlist", "audit", "passthrough"])
def test_deny_beats_allow_in_every_mode(guard, tls_server, mode) -> None:
    server = tls_server()
    policy = {"mode": mode,
              "allow": [{"name": "example", "hosts": ["*.example.com"]}],
              "deny": [{"name": "bad", "hosts": ["bad.example.com"]}]}
    envoy, via = guard(policy)

    assert tls_client(sni="good.example.com", **via.to(server.address)).received == b"ping"
    assert_denied(tls_client(sni="bad.example.com", **via.to(server.address)))

    assert server.snis == ["good.example.com"]
    assert decisions(envoy, "deny", "deny_rule") == 1
    assert rule_matches(envoy, "bad") == rule_matches(envoy, "bad", "deny", "deny") == 1
    if mode != "passthrough":
        assert rule_matches(envoy, "example", "allow", "allow") == 1


def test_audit_passes_and_counts_would_deny(guard, tls_server) -> None:
    server = tls_server()
    policy = {"mode": "audit", "allow": [{"name": "api", "hosts": ["api.example.com"]}]}
    envoy, via = guard(policy)

    for sni in ("api.example.com", "unknown.example.com", "other.example.com"):
        assert tls_client(sni=sni, **via.to(server.address)).received == b"ping"

    assert server.snis == ["api.example.com", "unknown.example.com", "other.example.com"]
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("audit_deny", "no_match"): 2}
    assert [(e["decision"], e["name"]) for e in decision_log(envoy, 2)] == [
        ("audit_deny", "unknown.example.com"), ("audit_deny", "other.example.com")]


def test_passthrough_passes_and_counts(guard, tls_server, serve) -> None:
    server = tls_server()
    db = serve(TcpServer(OTHER))
    envoy, via = guard({"mode": "passthrough", "log": "all"})

    assert tls_client(sni="anything.example.net", **via.to(server.address)).received == b"ping"
    assert tcp_exchange(send=b"raw", until=3, **via.to(db.address)).received == b"raw"

    assert all_decisions(envoy) == {("allow", "passthrough"): 2}
    assert [e["decision"] for e in decision_log(envoy, 2)] == ["allow", "allow"]


def test_staged_deny_rule_in_passthrough_records_without_blocking(guard, tls_server, serve) -> None:
    """A new deny rule staged with ``"enforce": false``: what it matches still reaches the
    server, as a logged and counted would-deny; the enforced deny rule after it still denies."""
    server = tls_server()
    db = serve(TcpServer(OTHER))
    policy = {"mode": "passthrough",
              "deny": [{"name": "new-paste", "hosts": ["*.paste.example"], "enforce": False},
                       {"name": "new-db", "cidrs": [f"{OTHER}/32"], "enforce": False},
                       {"name": "bad", "hosts": ["bad.paste.example"]}]}
    envoy, via = guard(policy)

    assert tls_client(sni="x.paste.example", **via.to(server.address)).received == b"ping"
    assert tcp_exchange(send=b"\x00\x01raw", until=5, **via.to(db.address)).received == b"\x00\x01raw"
    assert_denied(tls_client(sni="bad.paste.example", **via.to(server.address)))
    assert tls_client(sni="fine.example.net", **via.to(server.address)).received == b"ping"

    assert server.snis == ["x.paste.example", "fine.example.net"]
    assert all_decisions(envoy) == {("audit_deny", "staged_deny"): 2, ("deny", "deny_rule"): 1,
                                    ("allow", "passthrough"): 1}
    assert rule_match_series(envoy) == {("new-paste", "staged_deny", "audit_deny"): 1,
                                        ("new-db", "staged_deny", "audit_deny"): 1,
                                        ("bad", "deny", "deny"): 1}
    assert [(e["decision"], e["reason"], e["rule"], e["name"]) for e in decision_log(envoy, 3)] == [
        ("audit_deny", "staged_deny", "new-paste", "x.paste.example"),
        ("audit_deny", "staged_deny", "new-db", None),
        ("deny", "deny_rule", "bad", "bad.paste.example")]


def decision_lines(envoy: Envoy, at_least: int) -> list[str]:
    """Envoy's raw log lines holding a decision (with Envoy's prefix: time, thread, level)."""
    decision_log(envoy, at_least)
    return [line for line in envoy.log_text().splitlines() if '{"decision"' in line]


def test_decision_lines_levels_mode_and_policy_fingerprint(start_envoy, wasm_path, tls_server) -> None:
    """Denials and would-denies are logged at warn by default, so a proxy that logs Wasm at
    ``warning`` (Istio's sidecars) shows them; ``"log_level": "info"`` logs them at info. Every
    line carries the mode and the policy's fingerprint, which the ``policy loaded`` line and the
    ``egress_guard_policy_info`` gauge carry too."""
    server = tls_server()
    policy = {"mode": "audit", "allow": [{"name": "api", "hosts": ["api.example.com"]}],
              "deny": [{"name": "bad", "hosts": ["bad.example.com"]}]}
    envoy = start_envoy(sidecar(wasm_path, policy),
                        extra_args=["--component-log-level", "wasm:warning"])
    via = Via(envoy)
    for sni in ("api.example.com", "unknown.example.com", "bad.example.com"):
        tls_client(sni=sni, **via.to(server.address))

    log = decision_log(envoy, 2)
    assert [(e["decision"], e["mode"]) for e in log] == [("audit_deny", "audit"), ("deny", "audit")]
    fingerprint = log[0]["policy"]
    assert re.fullmatch(r"[0-9a-f]{12}", fingerprint) and log[1]["policy"] == fingerprint, log
    lines = decision_lines(envoy, 2)
    assert len(lines) == 2 and all("[warning]" in line for line in lines), lines
    assert envoy.stats()[f"wasmcustom.policy=.={fingerprint};.;egress_guard_policy_info"] == 1
    assert f'egress_guard_policy_info{{policy="{fingerprint}"}} 1' in envoy.prometheus()

    # The same policy at info: other bytes, so another fingerprint, in every place it shows.
    envoy = start_envoy(sidecar(wasm_path, policy | {"log_level": "info"}))
    via = Via(envoy)
    tls_client(sni="bad.example.com", **via.to(server.address))
    (line,) = decision_lines(envoy, 1)
    assert "[info]" in line, line
    other = decision_log(envoy, 1)[0]["policy"]
    assert other != fingerprint
    loaded = [l for l in envoy.log_text().splitlines() if "policy loaded" in l]
    # One line per filter configuration holding the policy.
    assert loaded and all(line.endswith(f" policy={other}") for line in loaded), loaded
    assert envoy.stats()[f"wasmcustom.policy=.={other};.;egress_guard_policy_info"] == 1


def test_cloud_metadata_deny_preset(guard, tls_server, serve) -> None:
    """``deny_presets: ["cloud-metadata"]`` in passthrough: the metadata addresses (claimed with
    PROXY headers; denied at open, so Envoy never connects to them) and names (to a loopback
    server, which must see no byte) are denied under the preset's rule; other traffic passes."""
    server = tls_server()
    web = serve(HttpServer(DST))
    envoy, via = guard({"mode": "passthrough", "deny_presets": ["cloud-metadata"]})

    for dst in [("169.254.169.254", 80), ("169.254.170.2", 80), ("100.100.100.200", 80),
                ("fd00:ec2::254", 80)]:
        denied = tcp_exchange(send=b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n",
                              **via.to(dst))
        assert denied.received == b"" and denied.closed_by_peer, (dst, denied)
    assert_denied(tls_client(sni="metadata.google.internal", **via.to(server.address)))
    by_host = http_request(raw_request=b"GET /computeMetadata/v1/ HTTP/1.1\r\n"
                                       b"Host: metadata.goog\r\n\r\n", **via.to(web.address))
    assert by_host.status is None, by_host
    assert tls_client(sni="fine.example.net", **via.to(server.address)).received == b"ping"

    assert server.snis == ["fine.example.net"]
    assert web.requests == []
    assert all_decisions(envoy) == {("deny", "deny_rule"): 6, ("allow", "passthrough"): 1}
    assert rule_match_series(envoy) == {("preset-cloud-metadata", "deny_preset", "deny"): 6}
    log = decision_log(envoy, 6)
    assert [(e["decision"], e["reason"], e["rule"]) for e in log] == [
        ("deny", "deny_rule", "preset-cloud-metadata")] * 6
    assert [e["dst"] for e in log[:4]] == ["169.254.169.254:80", "169.254.170.2:80",
                                           "100.100.100.200:80", "[fd00:ec2::254]:80"]
    assert [e["name"] for e in log[4:]] == ["metadata.google.internal", "metadata.goog"]


@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
@pytest.mark.usefixtures("early_data")
def test_hold_upstream_denied_destination_sees_no_connection(guard, tls_server, inspector) -> None:
    server = tls_server()
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"], "ports": [server.port]}],
              "sniff": {"hold_upstream": True}}
    envoy, via = guard(policy, tls_inspector=inspector)

    assert_denied(tls_client(sni="evil.example.com", **via.to(server.address)))
    assert server.connections == 0

    allowed = tls_client(sni="api.example.com", **via.to(server.address))
    assert allowed.received == b"ping", allowed
    assert server.connections == 1
    assert decisions(envoy, "deny", "no_match") == 1
    assert decisions(envoy, "allow", "rule") == 1


def ech_count(envoy: Envoy, outcome: str) -> int:
    """``egress_guard_ech_total{outcome}``."""
    return envoy.counter(f"wasmcustom.outcome=.={outcome};.;egress_guard_ech_total")


@pytest.mark.parametrize("hold", [False, True], ids=["no_hold", "hold_upstream"])
@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
def test_ech_deny_closes_a_client_hello_with_ech(guard, serve, request, inspector, hold) -> None:
    """``ech: deny``: an allowed SNI in a ClientHello carrying ``encrypted_client_hello`` is
    closed, even where tls_inspector read the SNI; the same hello without it passes."""
    if hold:
        request.getfixturevalue("early_data")
    server = serve(TcpServer(DST))
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"]}], "ech": "deny",
              "log": "all", "sniff": {"hold_upstream": hold}}
    envoy, via = guard(policy, tls_inspector=inspector)
    hello = Hello.real("api.example.com")

    denied = tcp_exchange(send=hello.with_ech().record(), **via.to(server.address))
    assert denied.received == b"" and denied.closed_by_peer, denied
    assert_nothing_reached(server)
    if hold:
        assert server.connections == 0
    assert decisions(envoy, "deny", "ech") == 1
    assert ech_count(envoy, "denied") == 1
    entry = decision_log(envoy)[-1]
    assert (entry["decision"], entry["reason"], entry["name"], entry.get("ech")) == \
        ("deny", "ech", "api.example.com", True), entry
    # tls_inspector's SNI did not decide: the filter read the ClientHello itself.
    assert sniffed(envoy, "inspector_sni") == 0 and sniffed(envoy, "tls_sni") == 1

    plain = hello.record()
    allowed = tcp_exchange(send=plain, until=len(plain), **via.to(server.address))
    assert allowed.received == plain, allowed
    assert decisions(envoy, "allow", "rule") == 1
    assert "ech" not in decision_log(envoy, at_least=2)[-1]


@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
def test_ech_allowed_by_default_passes_and_is_logged(guard, serve, inspector) -> None:
    """The default ``ech: allow``: decided on the outer SNI and passed. The filter logs and
    counts ECH when it reads the ClientHello itself; with tls_inspector the connection is decided
    at open on the inspector's SNI and the hello is not read."""
    server = serve(TcpServer(DST))
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"]}], "log": "all"}
    envoy, via = guard(policy, tls_inspector=inspector)
    ech = Hello.real("api.example.com").with_ech().record()

    ok = tcp_exchange(send=ech, until=len(ech), **via.to(server.address))
    assert ok.received == ech, ok
    assert decisions(envoy, "allow", "rule") == 1
    entry = decision_log(envoy)[-1]
    assert (entry["decision"], entry["name"]) == ("allow", "api.example.com"), entry
    assert entry.get("ech") is (None if inspector else True), entry
    assert ech_count(envoy, "allowed") == (0 if inspector else 1)
    assert ech_count(envoy, "denied") == 0


def test_without_hold_upstream_denied_destination_sees_no_byte(guard, tls_server) -> None:
    """The default: the upstream connection opens at accept, but no client byte is forwarded."""
    server = tls_server()
    policy = {"allow": [{"hosts": ["api.example.com"], "ports": [server.port]}]}
    envoy, via = guard(policy, tls_inspector=False)

    assert_denied(tls_client(sni="evil.example.com", **via.to(server.address)))
    assert_nothing_reached(server)


def test_counters_match_traffic(guard, tls_server, serve) -> None:
    server = tls_server()
    db = serve(TcpServer(OTHER))
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com", "*.api.example.com"]},
                        {"name": "db", "cidrs": [f"{OTHER}/32"], "ports": [db.port]}],
              "deny": [{"name": "blocked", "hosts": ["blocked.api.example.com"]}]}
    envoy, via = guard(policy, tls_inspector=False)

    sent = {"api.example.com": 4, "v2.api.example.com": 3, "blocked.api.example.com": 2,
            "evil.example.org": 5}
    for sni, n in sent.items():
        for _ in range(n):
            tls_client(sni=sni, **via.to(server.address))
    for _ in range(3):
        tcp_exchange(send=PG_SSL_REQUEST, until=len(PG_SSL_REQUEST), **via.to(db.address))
    tls_client(sni=None, **via.to(server.address))

    assert all_decisions(envoy) == {("allow", "rule"): 4 + 3 + 3, ("deny", "deny_rule"): 2,
                                    ("deny", "no_match"): 5 + 1}
    assert rule_matches(envoy, "api") == 7
    assert rule_matches(envoy, "db") == 3
    assert rule_matches(envoy, "blocked") == 2
    assert sniffed(envoy, "tls_sni") == 14
    assert sniffed(envoy, "tls_no_sni") == 1
    assert server.snis.count("api.example.com") == 4
    assert "blocked.api.example.com" not in server.snis

    prom = envoy.prometheus()
    assert 'egress_guard_decisions_total{decision="deny",reason="no_match"} 6' in prom, prom
    # Labels in alphabetical order.
    assert 'egress_guard_rule_matches_total{decision="allow",kind="allow",rule="api"} 7' in prom


def test_ipv6_destination(guard, tls_server, serve) -> None:
    server = tls_server("::1")
    db = serve(TcpServer("::1"))
    policy = {"allow": [{"name": "v6-api", "hosts": ["api.example.com"]},
                        {"name": "v6-db", "cidrs": ["::1/128"], "ports": [db.port]}]}
    envoy, via = guard(policy)

    assert tls_client(sni="api.example.com", **via.to(server.address)).received == b"ping"
    assert_denied(tls_client(sni="evil.example.com", **via.to(server.address)))
    assert tcp_exchange(send=PG_SSL_REQUEST, until=8, **via.to(db.address)).received == PG_SSL_REQUEST
    assert decisions(envoy, "allow", "rule") == 2
    entry = decision_log(envoy)[-1]
    assert entry["dst"] == f"[::1]:{server.port}" and entry["decision"] == "deny"


def test_malformed_client_hello_denied_in_passthrough(guard, tls_server) -> None:
    """A ClientHello that lies about its lengths is denied even where everything else passes:
    garbling must not slip a name past a deny host rule."""
    server = tls_server()
    envoy, via = guard({"mode": "passthrough", "deny": [{"hosts": ["evil.example.com"]}]},
                       tls_inspector=False)
    # A handshake record whose handshake header claims a ClientHello longer than the record
    # holds, followed by a record of another content type.
    bogus = bytes([0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0x03, 0x03, 0x00,
                   0x00, 0x17, 0x03, 0x03, 0x00, 0x01, 0x00])
    result = tcp_exchange(send=bogus, **via.to(server.address))
    assert result.received == b"" and result.closed_by_peer, result
    assert_nothing_reached(server)
    assert decisions(envoy, "deny", "malformed") == 1


def test_bad_config_is_refused_with_the_field_named(envoy_cmd, wasm_path, tmp) -> None:
    policy = {"allow": [{"hosts": ["github.com"]}, {"cidrs": ["10.0.0.300/8"]}]}
    failure = Envoy.start_expect_failure(sidecar(wasm_path, policy), tmp, envoy_cmd=envoy_cmd)
    assert failure.exit_code != 0
    assert 'allow[1].cidrs[0]: "10.0.0.300/8" is not a CIDR' in failure.output, failure.output


def test_unknown_key_is_refused(envoy_cmd, wasm_path, tmp) -> None:
    failure = Envoy.start_expect_failure(sidecar(wasm_path, {"allow": [{"host": ["x.com"]}]}),
                                         tmp, envoy_cmd=envoy_cmd)
    assert failure.exit_code != 0
    assert "allow[0]" in failure.output and "unknown field `host`" in failure.output, failure.output


def test_decision_log_all_fields(guard, tls_server) -> None:
    server = tls_server()
    envoy, via = guard({"allow": [{"name": "api", "hosts": ["api.example.com"]}], "log": "all"})
    tls_client(sni="API.Example.com.", **via.to(server.address))

    (entry,) = decision_log(envoy)
    assert entry["decision"] == "allow" and entry["reason"] == "rule" and entry["rule"] == "api"
    assert entry["name"] == "api.example.com" and entry["name_source"] == "sni"
    assert entry["proto"] == "tls" and entry["filter"] == "network"
    assert entry["dst"] == f"{DST}:{server.port}"
    assert entry["src"] == "127.0.0.1:40000"  # the PROXY header's source


def test_filter_works_with_the_wasm_logger_off(start_envoy, wasm_path, tls_server) -> None:
    """Envoy reports level 6 ("off") for a silenced wasm logger, outside the SDK's level enum;
    the filter must keep deciding (and stay silent)."""
    server = tls_server()
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"]}], "log": "all"}
    envoy = start_envoy(sidecar(wasm_path, policy),
                        extra_args=["--component-log-level", "wasm:off"])
    via = Via(envoy)
    assert tls_client(sni="api.example.com", **via.to(server.address)).received == b"ping"
    assert_denied(tls_client(sni="evil.example.com", **via.to(server.address)))
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("deny", "no_match"): 1}
    assert decision_log(envoy, at_least=0, timeout=0.5) == []


def test_client_closing_silently_after_a_timeout_allow_is_not_malformed(guard, serve) -> None:
    """A silent client allowed on IP and port at the timeout, which then closes without a byte:
    nothing was cut short, so nothing is counted as malformed (the close ends it quietly)."""
    db = serve(TcpServer(OTHER, greeting=b"220 db ready\r\n"))
    policy = {"allow": [{"name": "api", "hosts": ["api.example.com"]},
                        {"name": "db", "cidrs": [f"{OTHER}/32"], "ports": [db.port]}],
              "sniff": {"timeout_ms": 300}}
    envoy, via = guard(policy, tls_inspector=False)
    to = via.to(db.address)
    with connect(to["addr"], to["port"]) as sock:
        sock.sendall(to["proxy_header"])
        sock.settimeout(3)
        assert sock.recv(100) == b"220 db ready\r\n"
        envoy.wait_for_counter("wasmcustom.outcome=.=timeout;.;egress_guard_sniff_total", 1)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(100)  # the proxy closes its side too
    time.sleep(0.5)
    assert all_decisions(envoy) == {("allow", "rule"): 1}
    assert sniffed(envoy, "malformed") == 0
    assert malformed(envoy, "truncated") == 0
    assert db.received == [b""]
