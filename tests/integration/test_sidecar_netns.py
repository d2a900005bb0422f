"""Sidecar-faithful: the shipped sidecar config as a mesh runs it.

In a network namespace made by the test, iptables REDIRECTs every outbound TCP connection to
Envoy's outbound listener on 15001 (redirect.sh, the script the docker-compose demo uses too);
Envoy runs as uid 1337 and is exempted, as in Istio, so `original_dst` restores the real original
destinations on 127.0.0.x ports. Clients connect straight to those destinations and never know
Envoy is there. Without namespaces these tests skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from egress import (PG_SSL_REQUEST, decision_log, decisions, policy_of, set_module, set_policy,
                    shipped, sniffed, tls_server)
from harness import Envoy, HttpServer, NetNS, TcpServer, http_request, tcp_exchange, tls_client

PROXY_UID = 1337
ADMIN_PORT = 15000     # as in envoy/sidecar-outbound.yaml
OUTBOUND_PORT = 15001


@pytest.fixture
def sidecar(netns: NetNS, start_envoy: Callable[..., Envoy], wasm_path: Path,
            ) -> Callable[..., Envoy]:
    """``sidecar(policy=None) -> envoy``: the shipped config (its own policy unless given) in
    ``netns`` as uid 1337, with the REDIRECT rules installed."""
    def start(policy: dict[str, Any] | None = None, config: str = "sidecar-outbound.yaml",
              port: int = OUTBOUND_PORT, ipv6: bool = False) -> Envoy:
        cfg = set_module(shipped(config), wasm_path)
        if policy is not None:
            set_policy(cfg, policy)
        if ipv6:  # dual stack, as a user enables it: the same listener also on [::]
            for lst in cfg["static_resources"]["listeners"]:
                lst["additional_addresses"] = [{"address": {"socket_address": {
                    "address": "::", "port_value": port}}}]
        envoy = start_envoy(cfg, netns=netns, uid=PROXY_UID)
        netns.install_redirect(port, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                               intercept_loopback=True)  # the stand-ins are on 127.0.0.x, ::1
        return envoy
    return start



def test_shipped_policy_lets_github_out_and_stops_the_rest(sidecar, serve, netns, cert) -> None:
    """The shipped policy unchanged: GitHub on 443 passes, any other name is stopped."""
    envoy = sidecar()
    assert {r["name"] for r in policy_of(shipped("sidecar-outbound.yaml"))["allow"]} >= {"github"}
    github = serve(tls_server(netns, cert, "127.0.0.10"))
    elsewhere = serve(tls_server(netns, cert, "127.0.0.11"))

    ok = tls_client("127.0.0.10", 443, "api.github.com", netns=netns)
    assert ok.received == b"ping", ok
    denied = tls_client("127.0.0.11", 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied

    assert github.snis == ["api.github.com"]
    assert all(data == b"" for data in elsewhere.received)
    assert sniffed(envoy, "inspector_sni") == 2
    assert decisions(envoy, "allow", "rule") == 1
    assert decisions(envoy, "deny", "no_match") == 1
    assert decision_log(envoy)[-1]["dst"] == "127.0.0.11:443"


def test_http_tcp_and_cidr_through_redirect(sidecar, serve, netns) -> None:
    web = serve(HttpServer("127.0.0.20", 80, netns, label="deb"))
    db = serve(TcpServer("127.0.0.21", 5432, netns=netns))
    metadata = serve(TcpServer("127.0.0.22", 80, netns=netns))
    envoy = sidecar({
        "allow": [{"name": "debian", "hosts": ["deb.debian.org"], "ports": [80]},
                  {"name": "db", "cidrs": ["127.0.0.21/32"], "ports": ["5432-5433"]}],
        "deny": [{"name": "metadata", "cidrs": ["127.0.0.22/32"]}],
    })

    ok = http_request("127.0.0.20", 80, b"GET / HTTP/1.1\r\nHost: deb.debian.org\r\n"
                                        b"Connection: close\r\n\r\n", netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    bad_host = http_request("127.0.0.20", 80, b"GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
                            netns=netns)
    assert bad_host.status is None, bad_host
    assert web.hosts == ["deb.debian.org"]

    db_reply = tcp_exchange("127.0.0.21", 5432, PG_SSL_REQUEST, until=8, netns=netns)
    assert db_reply.received == PG_SSL_REQUEST, db_reply
    blocked = tcp_exchange("127.0.0.22", 80, b"GET /latest/meta-data HTTP/1.1\r\n\r\n", netns=netns)
    assert blocked.received == b"" and blocked.closed_by_peer, blocked
    assert metadata.connections == 0   # denied by IP at open: no upstream connection at all

    assert db.received == [PG_SSL_REQUEST]
    assert decisions(envoy, "allow", "rule") == 2
    assert decisions(envoy, "deny", "no_match") == 1
    assert decisions(envoy, "deny", "deny_rule") == 1


def test_ipv6_through_redirect(sidecar, serve, netns, cert) -> None:
    server = serve(tls_server(netns, cert, "::1", 8443))
    envoy = sidecar({"allow": [{"name": "api", "hosts": ["api.example.com"], "ports": [8443]}]},
                    ipv6=True)

    assert tls_client("::1", 8443, "api.example.com", netns=netns).received == b"ping"
    assert tls_client("::1", 8443, "evil.example.com", netns=netns).received == b""
    assert server.snis == ["api.example.com"]
    assert decisions(envoy, "deny", "no_match") == 1
    assert decision_log(envoy)[-1]["dst"] == "[::1]:8443"


def test_http_filter_through_redirect(sidecar, serve, netns) -> None:
    """The shipped HTTP-filter config: 403 for a denied Host, the request passes otherwise."""
    web = serve(HttpServer("127.0.0.30", 80, netns, label="deb"))
    envoy = sidecar(config="sidecar-outbound-http.yaml", port=15080)

    ok = http_request("127.0.0.30", 80, b"GET / HTTP/1.1\r\nHost: deb.debian.org\r\n"
                                        b"Connection: close\r\n\r\n", netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    denied = http_request("127.0.0.30", 80, b"GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
                          netns=netns)
    assert denied.status == 403 and denied.headers["x-egress-guard"] == "denied", denied
    assert web.hosts == ["deb.debian.org"]
    assert decisions(envoy, "deny", "no_match") == 1
