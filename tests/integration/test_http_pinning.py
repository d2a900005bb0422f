"""Pinning in the HTTP filter: envoy/sidecar-outbound-http-pinned.yaml.

Each test runs the shipped pinned HTTP-filter config in a network namespace made by the test,
as test_pinning.py runs the pinned network-filter config: iptables REDIRECTs every outbound TCP
connection to Envoy's HTTP listener on 15080, Envoy runs as uid 1337 and is exempted. Names
resolve through the namespace's own hosts file (``netns_hosts``); any other name fails without
a query leaving the namespace.

The client always picks the wrong address: it connects to ``DECOY`` (an IP no rule lists) with
an allowed ``Host``, as ``curl --resolve api.example.com:80:<any-ip>`` would. Pinned, the
request must reach the name's own address and ``DECOY`` must get nothing; a request that passes
unpinned must reach its original destination, not the name. Without namespaces these tests
skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import (Via, decision_log, decisions, get, on_loopback, pin_count, policy_of,
                    set_module, set_policy, shipped, unresolved_log)
from harness import Envoy, HttpResult, HttpServer, NetNS, connect, http_request

PROXY_UID = 1337
ADMIN_PORT = 15000
HTTP_PORT = 15080
CONFIG = "sidecar-outbound-http-pinned.yaml"
PIN_CLUSTER = "egress_guard_pinned"

DECOY = "127.0.0.99"            # the address the client picks: no rule lists it
NAMES = {
    "api.example.com": "127.0.0.50",
    "web.example.com": "127.0.0.52",
    "free.example.com": "127.0.0.54",
    "evil.example.com": "127.0.0.55",
}                               # nowhere.example.com is allowed but resolves to nothing
DB = "127.0.0.60"               # allowed by CIDR

POLICY: dict[str, Any] = {
    "pin": True,
    "log": "all",
    "allow": [
        {"name": "api", "hosts": ["api.example.com", "nowhere.example.com"], "ports": [80, 8080]},
        {"name": "web", "hosts": ["web.example.com"], "ports": [80]},
        {"name": "free", "hosts": ["free.example.com"], "ports": [80], "pin": False},
        {"name": "db", "cidrs": [f"{DB}/32"], "ports": [80]},
    ],
}


@pytest.fixture
def pinned_http(netns: NetNS, netns_hosts: Callable[..., Path],
                start_envoy: Callable[..., Envoy], wasm_path: Path) -> Callable[..., Envoy]:
    """``pinned_http(policy=POLICY) -> envoy``: the shipped config in ``netns`` as uid 1337,
    names from ``NAMES``, REDIRECT rules installed."""
    def start(policy: dict[str, Any] | None = None) -> Envoy:
        netns_hosts(NAMES)
        cfg = set_policy(set_module(shipped(CONFIG), wasm_path), policy or POLICY)
        envoy = start_envoy(cfg, netns=netns, uid=PROXY_UID)
        netns.install_redirect(HTTP_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                               intercept_loopback=True)
        return envoy
    return start


def request(netns: NetNS, addr: str, port: int, host: str, path: str = "/",
            extra: str = "") -> HttpResult:
    raw = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    return http_request(addr, port, raw.encode(), netns=netns)


def test_shape() -> None:
    """One route, to the dynamic forward proxy cluster the policy names; the forward proxy
    filter after egress-guard reads the host from the filter state; one DNS cache."""
    cfg = shipped(CONFIG)
    (lst,) = cfg["static_resources"]["listeners"]
    assert [f["name"] for f in lst["listener_filters"]] == [
        "envoy.filters.listener.original_dst"]
    (hcm,) = lst["filter_chains"][0]["filters"]
    hcm = hcm["typed_config"]
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    assert [r["route"] for r in vhost["routes"]] == [{"cluster": PIN_CLUSTER}]
    filters = hcm["http_filters"]
    assert [f["name"] for f in filters] == [
        "egress-guard", "envoy.filters.http.dynamic_forward_proxy", "envoy.filters.http.router"]
    dfp_filter = filters[1]["typed_config"]
    assert dfp_filter["allow_dynamic_host_from_filter_state"] is True
    (cluster,) = cfg["static_resources"]["clusters"]
    assert cluster["name"] == PIN_CLUSTER and cluster["lb_policy"] == "CLUSTER_PROVIDED"
    dfp = cluster["cluster_type"]
    assert dfp["name"] == "envoy.clusters.dynamic_forward_proxy"
    assert dfp["typed_config"]["dns_cache_config"] == dfp_filter["dns_cache_config"] == {
        "name": PIN_CLUSTER, "dns_lookup_family": "V4_PREFERRED"}
    policy = policy_of(cfg)
    assert policy["pin"] is True and policy["pin_cluster"] == PIN_CLUSTER


def test_a_host_sent_to_an_unlisted_ip_reaches_only_the_name(pinned_http, serve, netns) -> None:
    envoy = pinned_http()
    api = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api"))
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    plain = request(netns, DECOY, 80, "api.example.com", "/1")
    # A port in the Host is not where the request goes: the original destination's port is
    # (the policy allowed port 80, not 9999).
    with_port = request(netns, DECOY, 80, "API.example.com:9999", "/2")

    assert plain.status == 200 and plain.body == b"hello from api", plain
    assert with_port.status == 200 and with_port.body == b"hello from api", with_port
    assert api.requests == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]
    assert api.hosts == ["api.example.com", "API.example.com:9999"]
    assert decoy.connections == 0
    assert pin_count(envoy, "pinned") == 2
    assert envoy.counter(f"cluster.{PIN_CLUSTER}.upstream_rq_total") == 2
    # Defined (the policy pins) and not counted: both requests reached their name.
    assert envoy.counter("wasmcustom.outcome=.=unresolved;.;egress_guard_pin_total", -1) == 0
    entries = decision_log(envoy, 2)
    assert [(e["decision"], e["rule"], e["pinned"], e["name"]) for e in entries] == [
        ("allow", "api", True, "api.example.com")] * 2


def test_the_original_port_is_kept(pinned_http, serve, netns) -> None:
    envoy = pinned_http()
    on_8080 = serve(HttpServer(NAMES["api.example.com"], 8080, netns, label="api8080"))
    on_80 = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api80"))
    decoy = serve(HttpServer(DECOY, 8080, netns, label="decoy"))

    result = request(netns, DECOY, 8080, "api.example.com")

    assert result.status == 200 and result.body == b"hello from api8080", result
    assert on_80.connections == 0 and decoy.connections == 0
    assert pin_count(envoy, "pinned") == 1


def test_cidr_allows_and_exempt_rules_keep_their_destination(pinned_http, serve, netns) -> None:
    """Not pinned, and sent to the address the client chose (through the forward proxy, as an
    IP): a destination a CIDR rule allows, whatever its Host, and a "pin": false rule."""
    envoy = pinned_http()
    db = serve(HttpServer(DB, 80, netns, label="db"))
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))
    api = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api"))
    free = serve(HttpServer(NAMES["free.example.com"], 80, netns, label="free"))

    by_cidr = request(netns, DB, 80, "api.example.com")
    exempt = request(netns, DECOY, 80, "free.example.com")

    assert by_cidr.status == 200 and by_cidr.body == b"hello from db", by_cidr
    assert exempt.status == 200 and exempt.body == b"hello from decoy", exempt
    assert api.connections == 0 and free.connections == 0
    assert db.hosts == ["api.example.com"] and decoy.hosts == ["free.example.com"]
    assert pin_count(envoy, "pinned") == 0
    assert {e["pinned"] for e in decision_log(envoy, 2)} == {False}


def test_a_client_sent_header_cannot_pick_the_route(pinned_http, serve, netns) -> None:
    """There is one route and no header chooses it: whatever a client sends, an unpinned request
    goes to its original destination and a pinned one to its name."""
    envoy = pinned_http()
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))
    api = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api"))
    evil = serve(HttpServer(NAMES["evil.example.com"], 80, netns, label="evil"))
    steer = "x-egress-guard-pin: 1\r\nx-envoy-original-dst-host: 127.0.0.55:80\r\n"

    exempt = request(netns, DECOY, 80, "free.example.com", extra=steer)
    pinned = request(netns, DECOY, 80, "api.example.com", extra=steer)

    assert exempt.status == 200 and exempt.body == b"hello from decoy", exempt
    assert pinned.status == 200 and pinned.body == b"hello from api", pinned
    assert evil.connections == 0 and api.requests == ["GET / HTTP/1.1"]
    assert pin_count(envoy, "pinned") == 1


def test_keep_alive_routes_each_request_by_its_own_authority(pinned_http, serve,
                                                             netns) -> None:
    """On one downstream connection, each request goes where its own decision says: the filter
    state lives as long as the request."""
    envoy = pinned_http()
    api = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api"))
    web = serve(HttpServer(NAMES["web.example.com"], 80, netns, label="web"))
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    replies = []
    with connect(DECOY, 80, netns) as sock:
        for i, host in enumerate(["api.example.com", "web.example.com", "free.example.com",
                                  "api.example.com", "evil.example.com"], 1):
            sock.sendall(f"GET /{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            replies.append(read_one(sock))

    assert [status for status, _ in replies] == [200, 200, 200, 200, 403], replies
    assert [body for _, body in replies[:4]] == [
        b"hello from api", b"hello from web", b"hello from decoy", b"hello from api"]
    assert json.loads(replies[4][1])["reason"] == "no_match"
    assert api.requests == ["GET /1 HTTP/1.1", "GET /4 HTTP/1.1"]
    assert web.requests == ["GET /2 HTTP/1.1"] and decoy.requests == ["GET /3 HTTP/1.1"]
    assert pin_count(envoy, "pinned") == 3


@pytest.mark.parametrize("mode", ["allowlist", "audit", "passthrough"])
def test_every_mode_pins_what_the_allow_rules_pin(mode, pinned_http, serve, netns) -> None:
    """What the allow rules pin goes to its name in every mode; what they do not pin goes where
    the mode says (audit's would-deny and passthrough to the client's IP, allowlist nowhere)."""
    envoy = pinned_http({**POLICY, "mode": mode})
    api = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api"))
    evil = serve(HttpServer(NAMES["evil.example.com"], 80, netns, label="evil"))
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    allowed = request(netns, DECOY, 80, "api.example.com")
    unlisted = request(netns, DECOY, 80, "evil.example.com")

    assert allowed.status == 200 and allowed.body == b"hello from api", allowed
    assert evil.connections == 0 and pin_count(envoy, "pinned") == 1
    if mode == "allowlist":
        assert unlisted.status == 403 and decoy.connections == 0, unlisted
    else:
        assert unlisted.status == 200 and unlisted.body == b"hello from decoy", unlisted
    entry = decision_log(envoy, 2)[0]
    assert (entry["rule"], entry["pinned"]) == ("api", True)


def test_a_name_that_does_not_resolve_gets_no_upstream(pinned_http, serve, netns) -> None:
    envoy = pinned_http()
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    result = request(netns, DECOY, 80, "nowhere.example.com")

    assert result.status == 503, result
    assert decoy.connections == 0
    assert pin_count(envoy, "pinned") == 1
    line, = unresolved_log(envoy)
    assert {k: line[k] for k in ("name", "port", "dst", "filter", "pin_cluster")} == {
        "name": "nowhere.example.com", "port": 80, "dst": f"{DECOY}:80", "filter": "http",
        "pin_cluster": "egress_guard_pinned"}, line
    assert line["response_flags"] & 0x4000000, line            # DF: DNS resolution failed
    assert pin_count(envoy, "unresolved") == 1


def test_a_pin_cluster_the_route_does_not_go_to_refuses_what_must_be_pinned(
        pinned_http, serve, netns) -> None:
    """The policy names a `pin_cluster` the route does not go to (a typo, or the unpinned
    config): a request that must be pinned gets a 403 pin_unavailable, never its client's IP."""
    envoy = pinned_http({**POLICY, "pin_cluster": "egress_guard_missing"})
    api = serve(HttpServer(NAMES["api.example.com"], 80, netns, label="api"))
    decoy = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    refused = request(netns, DECOY, 80, "api.example.com")

    assert refused.status == 403 and json.loads(refused.body) == {
        "error": "egress_denied", "destination": "api.example.com",
        "reason": "pin_unavailable", "rule": "api"}, refused
    assert api.connections == 0 and decoy.connections == 0
    assert decisions(envoy, "deny", "pin_unavailable") == 1
    assert pin_count(envoy, "unavailable") == 1 and pin_count(envoy, "pinned") == 0


def test_unpinned_requests_reach_ipv4_and_ipv6_destinations(start_envoy, wasm_path,
                                                               serve) -> None:
    """An unpinned request goes to its original destination through the forward proxy, named by
    its IP: IPv4 as it is, IPv6 in brackets (the proxy splits host:port at the last colon). On
    loopback: the shipped config with a PROXY header for the original destination."""
    v4 = serve(HttpServer("127.0.0.3", label="v4"))
    v6 = serve(HttpServer("::1", label="v6"))
    cfg = on_loopback(set_module(shipped(CONFIG), wasm_path))
    envoy = start_envoy(set_policy(cfg, {
        "pin": True, "allow": [{"name": "lan", "cidrs": ["127.0.0.3/32", "::1/128"]}]}))
    via = Via(envoy, "outbound_http")

    to_v4 = http_request(raw_request=get("web.example.com"), **via.to(v4.address))
    to_v6 = http_request(raw_request=get("web.example.com"), **via.to(v6.address))

    assert to_v4.status == 200 and to_v4.body == b"hello from v4", to_v4
    assert to_v6.status == 200 and to_v6.body == b"hello from v6", to_v6
    assert envoy.counter(f"cluster.{PIN_CLUSTER}.upstream_rq_total") == 2
    assert pin_count(envoy, "pinned") == 0


def read_one(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """One response with a content-length on a keep-alive connection: (status, body), or
    (0, what was read) if the peer closed or went quiet first."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return 0, data
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                      if line.lower().startswith("content-length:"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return 0, data
            body += chunk
    except (TimeoutError, ConnectionResetError, StopIteration):
        return 0, data
    return int(lines[0].split()[1]), body
