"""Pinning: an allowed name reaches only that name (envoy/sidecar-outbound-pinned.yaml).

Each test runs the shipped pinned sidecar in a network namespace made by the test, as
test_sidecar_netns.py runs the plain one: iptables REDIRECTs every outbound TCP connection to
Envoy on 15001, Envoy runs as uid 1337 and is exempted. Names resolve through the namespace's
own hosts file (``netns_hosts``); any other name fails without a query leaving the namespace.

The client always picks the wrong address: it connects to ``DECOY`` (an IP no rule lists)
with an allowed name, as ``curl --resolve api.example.com:443:<any-ip>`` would. Pinned, the
connection must reach the name's own address and ``DECOY`` must get nothing. Without
namespaces these tests skip with the reason; under CI=true they fail. The shipped config holds
connections (``sniff.hold_upstream``), so they need Envoy >= 1.37 (a version skip otherwise).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import (PG_SSL_REQUEST, Via, all_decisions, decision_log, decisions, get, http_sidecar,
                    keep_alive, pin_count, policy_of, set_module, set_policy, shipped, sniffed,
                    tls_server, unresolved_log, upstreams)
from hello import real_client_hello
from harness import (Envoy, HttpServer, NetNS, TcpServer, connect, http_request, tcp_exchange,
                     tls_client, wait_until)

pytestmark = pytest.mark.usefixtures("early_data")

PROXY_UID = 1337
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
CONFIG = "sidecar-outbound-pinned.yaml"

DECOY = "127.0.0.99"            # the address the client picks: no rule lists it
NAMES = {
    "api.example.com": "127.0.0.50",
    "web.example.com": "127.0.0.52",
    "other.example.com": "127.0.0.53",
    "free.example.com": "127.0.0.54",
    "evil.example.com": "127.0.0.55",
}                               # nowhere.example.com is allowed but resolves to nothing
DB = "127.0.0.60"               # allowed by CIDR

POLICY: dict[str, Any] = {
    "pin": True,
    "log": "all",
    "allow": [
        {"name": "api", "hosts": ["api.example.com", "nowhere.example.com"], "ports": [443, 8443]},
        {"name": "web", "hosts": ["web.example.com", "other.example.com", "nowhere.example.com"],
         "ports": [80]},
        {"name": "free", "hosts": ["free.example.com"], "ports": [443], "pin": False},
        {"name": "db", "cidrs": [f"{DB}/32"], "ports": [443, 5432]},
    ],
    "sniff": {"hold_upstream": True},
}


@pytest.fixture
def pinned(netns: NetNS, netns_hosts: Callable[..., Path], start_envoy: Callable[..., Envoy],
           wasm_path: Path) -> Callable[..., Envoy]:
    """``pinned(policy=POLICY, tls_inspector=True, **sniff) -> envoy``: the shipped pinned
    config in ``netns`` as uid 1337, names from ``NAMES``, REDIRECT rules installed. ``sniff``
    keys replace the policy's."""
    def start(policy: dict[str, Any] | None = None, *, tls_inspector: bool = True,
              **sniff: Any) -> Envoy:
        netns_hosts(NAMES)
        policy = dict(policy or POLICY)
        policy["sniff"] = {**policy.get("sniff", {}), **sniff}
        cfg = set_policy(set_module(shipped(CONFIG), wasm_path), policy)
        if not tls_inspector:
            for lst in cfg["static_resources"]["listeners"]:
                lst["listener_filters"] = [f for f in lst["listener_filters"]
                                           if not f["name"].endswith("tls_inspector")]
        envoy = start_envoy(cfg, netns=netns, uid=PROXY_UID)
        netns.install_redirect(OUTBOUND_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                               intercept_loopback=True)
        return envoy
    return start


def test_shape() -> None:
    """What the pinned sidecar is made of (ENVOY_FACTS, "Pinning by name")."""
    cfg = shipped(CONFIG)
    (lst,) = cfg["static_resources"]["listeners"]
    assert [f["name"] for f in lst["listener_filters"]] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"]
    filters = lst["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == [
        "egress-guard", "envoy.filters.network.sni_dynamic_forward_proxy",
        "envoy.filters.network.tcp_proxy"]
    sni, tcp = filters[1]["typed_config"], filters[2]["typed_config"]
    assert tcp["cluster"] == "passthrough" and tcp["max_early_data_bytes"] == 65536
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert clusters["passthrough"]["type"] == "ORIGINAL_DST"
    dfp = clusters["egress_guard_pinned"]["cluster_type"]
    assert dfp["name"] == "envoy.clusters.dynamic_forward_proxy"
    assert dfp["typed_config"]["dns_cache_config"] == sni["dns_cache_config"] == {
        "name": "egress_guard_pinned", "dns_lookup_family": "V4_PREFERRED"}
    policy = policy_of(cfg)
    assert policy["pin"] is True and policy["pin_cluster"] == "egress_guard_pinned"
    assert policy["sniff"]["hold_upstream"] is True


def test_tls_sni_from_tls_inspector_reaches_only_the_name(pinned, serve, netns, cert) -> None:
    envoy = pinned()
    api = serve(tls_server(netns, cert, NAMES["api.example.com"]))
    decoy = serve(tls_server(netns, cert, DECOY))

    result = tls_client(DECOY, 443, "api.example.com", payload=b"card 4242", netns=netns)

    assert result.received == b"card 4242", result
    assert api.snis == ["api.example.com"] and api.received == [b"card 4242"]
    assert decoy.connections == 0
    assert sniffed(envoy, "inspector_sni") == 1
    assert pin_count(envoy, "pinned") == 1
    assert all_decisions(envoy) == {("allow", "rule"): 1}
    assert upstreams(envoy) == (1, 0)
    entry = decision_log(envoy)[-1]
    assert (entry["dst"], entry["name"], entry["pinned"]) == (f"{DECOY}:443", "api.example.com",
                                                              True)


def test_tls_without_tls_inspector_is_pinned_while_held(pinned, serve, netns, cert) -> None:
    envoy = pinned(tls_inspector=False)
    api = serve(tls_server(netns, cert, NAMES["api.example.com"]))
    decoy = serve(tls_server(netns, cert, DECOY))

    assert tls_client(DECOY, 443, "api.example.com", netns=netns).received == b"ping"

    assert api.snis == ["api.example.com"] and decoy.connections == 0
    assert sniffed(envoy, "tls_sni") == 1 and sniffed(envoy, "inspector_sni") == 0
    assert pin_count(envoy, "pinned") == 1
    assert upstreams(envoy) == (1, 0)


def test_a_clienthello_slower_than_tls_inspector_is_still_pinned(pinned, serve, netns) -> None:
    """tls_inspector gives up after listener_filters_timeout (1 s) and the connection goes on
    without an SNI: the likeliest way round pinning. The held connection is pinned all the
    same when egress-guard reads the name itself."""
    envoy = pinned()
    api = serve(TcpServer(NAMES["api.example.com"], 443, netns=netns))
    decoy = serve(TcpServer(DECOY, 443, netns=netns))
    hello = real_client_hello("api.example.com")

    with connect(DECOY, 443, netns) as sock:
        sock.sendall(hello[:3])
        time.sleep(1.5)
        sock.sendall(hello[3:])
        api.wait_for_connections(1)
        echoed = recv_exactly(sock, len(hello))

    assert echoed == hello
    assert api.received == [hello] and decoy.connections == 0
    assert sniffed(envoy, "tls_sni") == 1 and sniffed(envoy, "inspector_sni") == 0
    assert pin_count(envoy, "pinned") == 1


def test_without_a_hold_a_name_read_later_is_denied_not_sent_to_the_client_ip(
        pinned, serve, netns, cert) -> None:
    """No hold_upstream, no tls_inspector: tcp_proxy picks its upstream when the connection
    opens, before the name is read. A name that must be pinned then closes the connection
    (pin_unavailable), in every mode; the client's IP gets not one byte."""
    envoy = pinned(tls_inspector=False, hold_upstream=False)
    api = serve(tls_server(netns, cert, NAMES["api.example.com"]))
    decoy = serve(TcpServer(DECOY, 443, netns=netns))

    denied = tls_client(DECOY, 443, "api.example.com", netns=netns)

    assert denied.received == b"" and not denied.handshake_ok, denied
    assert all(data == b"" for data in decoy.received)     # a TCP connect at most, no byte
    assert api.connections == 0
    assert all_decisions(envoy) == {("deny", "pin_unavailable"): 1}
    assert pin_count(envoy, "unavailable") == 1 and pin_count(envoy, "pinned") == 0
    entry = decision_log(envoy)[-1]
    assert (entry["reason"], entry["rule"], entry["pinned"]) == ("pin_unavailable", "api", False)


def test_plaintext_http_is_pinned_and_carries_only_its_name(pinned, serve, netns) -> None:
    """HTTP on the TCP chain: the first request's Host is pinned while the connection is held;
    a later request on it for another name (even an allowed one) closes the connection, since
    it would reach the first name's address."""
    envoy = pinned()
    web = serve(HttpServer(NAMES["web.example.com"], 80, netns, label="web"))
    other = serve(HttpServer(NAMES["other.example.com"], 80, netns, label="other"))
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    with connect(DECOY, 80, netns) as sock:
        sock.sendall(keep_alive("web.example.com", "/1"))
        first = read_response(sock)
        sock.sendall(keep_alive("web.example.com", "/2"))
        second = read_response(sock)
        sock.sendall(keep_alive("other.example.com", "/3"))
        third = read_response(sock)

    assert first.endswith(b"hello from web") and second.endswith(b"hello from web"), (first,
                                                                                      second)
    assert third == b""
    assert web.requests == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]
    assert other.connections == 0 and decoy.connections == 0
    assert pin_count(envoy, "pinned") == 1 and pin_count(envoy, "other_name") == 1
    assert decisions(envoy, "deny", "later_request") == 1
    entry = decision_log(envoy, 3)[-1]
    assert (entry["reason"], entry["detail"], entry["request"], entry["name"]) == (
        "later_request", "pin_unavailable", 3, "other.example.com")
    # A fresh connection for the other name is pinned to that name.
    ok = http_request(DECOY, 80, get("other.example.com"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from other", ok
    assert decoy.connections == 0 and pin_count(envoy, "pinned") == 2


def test_the_original_port_is_kept(pinned, serve, netns, cert) -> None:
    envoy = pinned()
    on_8443 = serve(tls_server(netns, cert, NAMES["api.example.com"], 8443))
    on_443 = serve(tls_server(netns, cert, NAMES["api.example.com"], 443))
    decoy = serve(tls_server(netns, cert, DECOY, 8443))

    assert tls_client(DECOY, 8443, "api.example.com", netns=netns).received == b"ping"

    assert on_8443.snis == ["api.example.com"]
    assert on_443.connections == 0 and decoy.connections == 0
    assert pin_count(envoy, "pinned") == 1


def test_cidr_allows_and_exempt_rules_keep_the_client_ip(pinned, serve, netns, cert) -> None:
    """Never pinned: a destination allowed on IP and port (whatever the SNI), a connection
    without a name, and what a rule with "pin": false allows."""
    envoy = pinned()
    db_tls = serve(tls_server(netns, cert, DB, 443))
    db = serve(TcpServer(DB, 5432, netns=netns))
    api = serve(tls_server(netns, cert, NAMES["api.example.com"]))
    free = serve(tls_server(netns, cert, NAMES["free.example.com"]))
    decoy = serve(tls_server(netns, cert, DECOY))

    assert tls_client(DB, 443, "api.example.com", netns=netns).received == b"ping"
    reply = tcp_exchange(DB, 5432, PG_SSL_REQUEST, until=8, netns=netns)
    assert reply.received == PG_SSL_REQUEST, reply
    assert tls_client(DECOY, 443, "free.example.com", netns=netns).received == b"ping"

    assert db_tls.snis == ["api.example.com"] and db.received == [PG_SSL_REQUEST]
    assert decoy.snis == ["free.example.com"]
    assert api.connections == 0 and free.connections == 0
    assert pin_count(envoy, "pinned") == 0
    assert upstreams(envoy) == (0, 3)
    assert {e["pinned"] for e in decision_log(envoy, 3)} == {False}


@pytest.mark.parametrize("tls_inspector", [True, False], ids=["tls_inspector", "held"])
def test_a_name_that_does_not_resolve_is_closed_counted_and_logged(tls_inspector, pinned, serve,
                                                                   netns, cert) -> None:
    envoy = pinned(tls_inspector=tls_inspector)
    decoy = serve(tls_server(netns, cert, DECOY))
    api = serve(tls_server(netns, cert, NAMES["api.example.com"]))

    result = tls_client(DECOY, 443, "nowhere.example.com", netns=netns)
    assert result.received == b"" and not result.handshake_ok, result
    assert tls_client(DECOY, 443, "api.example.com", netns=netns).received == b"ping"

    assert decoy.connections == 0
    assert pin_count(envoy, "pinned") == 2
    assert upstreams(envoy) == (1, 0)
    line, = unresolved_log(envoy)
    assert {k: line[k] for k in ("name", "port", "dst", "filter", "pin_cluster")} == {
        "name": "nowhere.example.com", "port": 443, "dst": f"{DECOY}:443", "filter": "network",
        "pin_cluster": "egress_guard_pinned"}, line
    assert line["response_flags"] & 0x2, line                  # UH: no host in the pin cluster
    wait_until(lambda: pin_count(envoy, "unresolved") == 1, 5, describe="unresolved counted")
    # The connection that reached its name is not counted.
    time.sleep(0.3)
    assert pin_count(envoy, "unresolved") == 1


def test_a_name_that_does_not_resolve_over_plaintext_http_is_counted(pinned, serve,
                                                                      netns) -> None:
    envoy = pinned()
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    result = http_request(DECOY, 80, get("nowhere.example.com"), netns=netns)

    assert result.status is None and "closed" in (result.error or ""), result
    assert decoy.connections == 0
    line, = unresolved_log(envoy)
    assert (line["name"], line["port"], line["filter"]) == ("nowhere.example.com", 80, "network")
    wait_until(lambda: pin_count(envoy, "unresolved") == 1, 5, describe="unresolved counted")


@pytest.mark.parametrize("mode", ["allowlist", "audit", "passthrough"])
def test_every_mode_pins_what_the_allow_rules_pin(mode, pinned, serve, netns, cert) -> None:
    """Pinning is the allow rules' in every mode; what they do not pin goes where the mode
    says (audit's would-deny and passthrough to the client's IP, allowlist nowhere)."""
    envoy = pinned({**POLICY, "mode": mode})
    api = serve(tls_server(netns, cert, NAMES["api.example.com"]))
    evil = serve(tls_server(netns, cert, NAMES["evil.example.com"]))
    decoy = serve(tls_server(netns, cert, DECOY))

    assert tls_client(DECOY, 443, "api.example.com", netns=netns).received == b"ping"
    unlisted = tls_client(DECOY, 443, "evil.example.com", netns=netns)

    assert api.snis == ["api.example.com"] and evil.connections == 0
    assert pin_count(envoy, "pinned") == 1
    if mode == "allowlist":
        assert unlisted.received == b"" and decoy.connections == 0, unlisted
    else:
        assert unlisted.received == b"ping" and decoy.snis == ["evil.example.com"], unlisted
    pinned_entry = decision_log(envoy, 2)[0]
    assert (pinned_entry["rule"], pinned_entry["pinned"]) == ("api", True)
    assert pinned_entry["reason"] == ("passthrough" if mode == "passthrough" else "rule")


@pytest.mark.parametrize("mode", ["audit", "passthrough"])
def test_a_name_sent_after_the_timeout_cannot_go_to_the_client_ip(mode, pinned, serve,
                                                                    netns) -> None:
    """A client that stays silent past sniff.timeout_ms is let through on IP and port (audit,
    passthrough), and its upstream is chosen then; a ClientHello it sends afterwards for a name
    that must be pinned closes the connection."""
    envoy = pinned({**POLICY, "mode": mode}, tls_inspector=False, timeout_ms=300)
    api = serve(TcpServer(NAMES["api.example.com"], 443, netns=netns))
    decoy = serve(TcpServer(DECOY, 443, netns=netns))

    with connect(DECOY, 443, netns) as sock:
        decoy.wait_for_connections(1)                   # let through at the timeout
        sock.sendall(real_client_hello("api.example.com"))
        assert closed_without_reply(sock)

    assert decoy.received == [b""] and api.connections == 0
    assert decisions(envoy, "deny", "pin_unavailable") == 1
    assert pin_count(envoy, "unavailable") == 1 and pin_count(envoy, "pinned") == 0


def test_the_http_filter_refuses_what_it_would_have_to_pin(start_envoy, wasm_path, serve) -> None:
    """The HTTP filter routes to the original destination and cannot pin: a request that must be
    pinned gets a 403 (pin_unavailable) instead of reaching the IP the client chose. (On
    loopback: the shipped HTTP-filter config with a PROXY header for the original destination.)"""
    chosen = serve(HttpServer("127.0.0.2", label="chosen"))
    lan = serve(HttpServer("127.0.0.3", label="lan"))
    envoy = start_envoy(http_sidecar(wasm_path, {
        "pin": True, "allow": [{"name": "web", "hosts": ["web.example.com"]},
                               {"name": "lan", "cidrs": ["127.0.0.3/32"]}]}))
    via = Via(envoy, "outbound_http")

    refused = http_request(raw_request=get("web.example.com"), **via.to(chosen.address))
    by_address = http_request(raw_request=get("web.example.com"), **via.to(lan.address))

    assert refused.status == 403 and json.loads(refused.body) == {
        "error": "egress_denied", "destination": "web.example.com",
        "reason": "pin_unavailable", "rule": "web"}, refused
    assert chosen.connections == 0
    assert by_address.status == 200 and by_address.body == b"hello from lan", by_address
    assert all_decisions(envoy) == {("deny", "pin_unavailable"): 1, ("allow", "rule"): 1}
    assert pin_count(envoy, "unavailable") == 1


def read_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """One response of the harness's HttpServer (it ends with ``hello from <label>``), or the
    bytes read until the peer closed or went quiet."""
    sock.settimeout(timeout)
    data = b""
    while b"hello from" not in data or not data.endswith((b"web", b"other", b"decoy")):
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def closed_without_reply(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the peer closes the connection within ``timeout`` without sending a byte."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def recv_exactly(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Up to ``n`` bytes: fewer if the peer closes or goes quiet for ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data
