"""egress-guard as an HTTP filter (the shipped envoy/sidecar-outbound-http.yaml), real Envoy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import Via, decision_log, decisions, http_sidecar
from egress import get as egress_get
from harness import Envoy, HttpServer, connect, http_request

DST = "127.0.0.2"


@pytest.fixture
def guard(start_envoy: Callable[..., Envoy], wasm_path: Path) -> Callable[..., tuple[Envoy, Via]]:
    def start(policy: dict[str, Any]) -> tuple[Envoy, Via]:
        envoy = start_envoy(http_sidecar(wasm_path, policy))
        return envoy, Via(envoy, "outbound_http")
    return start


def get(host: str) -> bytes:
    return egress_get(host, "/pool/")


def test_allowed_request_reaches_its_original_destination(guard, serve) -> None:
    server = serve(HttpServer(DST, label="debian"))
    envoy, via = guard({"allow": [{"name": "debian", "hosts": ["deb.debian.org"],
                                   "ports": [server.port]}]})

    result = http_request(raw_request=get(f"deb.debian.org:{server.port}"),
                          **via.to(server.address))

    assert result.status == 200 and result.body == b"hello from debian", result
    assert server.hosts == [f"deb.debian.org:{server.port}"]
    assert decisions(envoy, "allow", "rule") == 1


def test_denied_request_gets_the_403_json_reply(guard, serve) -> None:
    server = serve(HttpServer(DST))
    envoy, via = guard({"allow": [{"name": "debian", "hosts": ["deb.debian.org"]}],
                        "deny": [{"name": "metadata", "hosts": ["metadata.example.internal"]}]})

    no_match = http_request(raw_request=get("evil.example.com"), **via.to(server.address))
    by_rule = http_request(raw_request=get("metadata.example.internal"), **via.to(server.address))

    assert no_match.status == 403 and no_match.headers["x-egress-guard"] == "denied", no_match
    assert no_match.headers["content-type"] == "application/json"
    assert json.loads(no_match.body) == {"error": "egress_denied",
                                         "destination": "evil.example.com",
                                         "reason": "no_match", "rule": None}
    assert by_rule.status == 403
    assert json.loads(by_rule.body) == {"error": "egress_denied",
                                        "destination": "metadata.example.internal",
                                        "reason": "deny_rule", "rule": "metadata"}
    assert server.connections == 0
    assert decisions(envoy, "deny", "no_match") == 1
    assert decisions(envoy, "deny", "deny_rule") == 1
    assert [e["filter"] for e in decision_log(envoy, 2)] == ["http", "http"]
    assert decision_log(envoy)[0]["name_source"] == "authority"


def test_each_request_on_a_connection_is_decided(guard, serve) -> None:
    """Keep-alive: the HTTP filter sees every request, not only the first."""
    server = serve(HttpServer(DST))
    envoy, via = guard({"allow": [{"hosts": ["ok.example.com"]}]})
    target = via.to(server.address)
    with connect(target["addr"], target["port"]) as sock:
        sock.sendall(target["proxy_header"])
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: ok.example.com\r\n\r\n")
        first = sock.recv(65536)
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")
        second = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert second.startswith(b"HTTP/1.1 403"), second
    assert server.requests == ["GET /1 HTTP/1.1"]
    assert decisions(envoy, "allow", "rule") == 1
    assert decisions(envoy, "deny", "no_match") == 1


def test_audit_mode_passes_requests(guard, serve) -> None:
    server = serve(HttpServer(DST))
    envoy, via = guard({"mode": "audit"})
    result = http_request(raw_request=get("anything.example.com"), **via.to(server.address))
    assert result.status == 200, result
    assert decisions(envoy, "audit_deny", "no_match") == 1
