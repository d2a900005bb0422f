"""The mesh- and gateway-shaped Envoy configs in envoy/, driven with traffic by a real Envoy.

Each runs in a network namespace made by the test, exactly as shipped but for the module path
(and, where a test says so, the policy):

* ``osm-sidecar-outbound.yaml`` and ``istio-sidecar-outbound.yaml``: redirect.sh REDIRECTs the
  namespace's outbound TCP to 15001, Envoy runs as uid 1337 and is exempted, clients connect
  straight to their destinations on 127.0.0.x.
* ``egress-gateway.yaml``: clients connect to the gateway with an SNI; the gateway resolves that
  name through the namespace's own hosts file (the ``netns_hosts`` fixture), so allowed names
  resolve to 127.0.0.x with no DNS server.

Without namespaces these tests skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from egress import (ENVOY_DIR, PG_SSL_REQUEST, all_decisions, decision_log, get, policy_of,
                    set_module, set_policy, shipped, sniffed, tls_server, wasm_configs)
from harness import (REPO, Envoy, HttpServer, NetNS, TcpServer, for_envoy, http_request,
                     tcp_exchange, tls_client)

PROXY_UID = 1337
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001

# One policy for the mesh-shaped tests: a name allowed on the ports the tests use.
API_POLICY = {
    "allow": [{"name": "api", "hosts": ["api.example.com"], "ports": [80, 443, 8443]},
              {"name": "db", "cidrs": ["127.0.0.21/32"], "ports": [5432]}],
    "deny": [{"name": "metadata", "cidrs": ["127.0.0.22/32"]}],
}


@pytest.fixture
def mesh_sidecar(netns: NetNS, start_envoy: Callable[..., Envoy], wasm_path: Path,
                 ) -> Callable[..., Envoy]:
    """``mesh_sidecar(config, policy=None) -> envoy``: a shipped sidecar config in ``netns`` as
    uid 1337 with the REDIRECT rules installed (its own policy unless one is given)."""
    def start(config: str, policy: dict[str, Any] | None = None) -> Envoy:
        cfg = set_module(shipped(config), wasm_path)
        if policy is not None:
            set_policy(cfg, policy)
        envoy = start_envoy(cfg, netns=netns, uid=PROXY_UID)
        netns.install_redirect(OUTBOUND_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                               intercept_loopback=True)  # the stand-ins are on 127.0.0.x
        return envoy
    return start




@pytest.mark.parametrize("name", sorted(p.name for p in ENVOY_DIR.glob("*.yaml")))
def test_shipped_configs_load_the_module_from_target(name: str) -> None:
    """Run from the repository root after `make build`: every egress-guard filter (however many
    a config has) loads the module by the same relative path."""
    plugins = wasm_configs(shipped(name))
    assert plugins, name
    for plugin in plugins:
        assert plugin["vm_config"]["code"]["local"]["filename"] == (
            "target/wasm32-wasip1/release/egress_guard.wasm")
        assert plugin["failure_policy"] == "FAIL_CLOSED"


def test_older_envoys_get_the_configs_without_max_early_data_bytes() -> None:
    """The harness's one version adaptation (harness.for_envoy): Envoy < 1.37 has no tcp_proxy
    max_early_data_bytes, so it is dropped, and nothing else changes."""
    for name in ("osm-sidecar-outbound.yaml", "istio-sidecar-outbound.yaml"):
        config = shipped(name)
        assert "max_early_data_bytes" in json.dumps(config)
        assert for_envoy(config, (1, 37, 0)) is config
        old = for_envoy(config, (1, 36, 4))
        assert "max_early_data_bytes" not in json.dumps(old)
        assert json.dumps(old) == json.dumps(config).replace(', "max_early_data_bytes": 65536', "")


def doc_blocks(language: str) -> list[tuple[str, str]]:
    """(doc name, text) of every fenced ``language`` block in docs/*.md."""
    blocks = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for text in re.findall(rf"^```{language}\n(.*?)^```", doc.read_text(), re.S | re.M):
            blocks.append((doc.name, text))
    return blocks


def test_policies_in_the_docs_are_example_files() -> None:
    """Every policy a doc shows is a file in examples/policies/ (which test_shipped_configs.py
    loads into a real Envoy), so no doc shows a policy that was never run."""
    examples = [json.loads(p.read_text())
                for p in sorted((REPO / "examples" / "policies").glob("*.json"))]
    shown = [(doc, json.loads(text)) for doc, text in doc_blocks("json")]
    assert len(shown) >= 5, shown
    for doc, policy in shown:
        assert policy in examples, (doc, policy)


# --------------------------------------------------------------------------------------------
# OSM
# --------------------------------------------------------------------------------------------


def test_osm_shape() -> None:
    """The names OSM gives its outbound listener, default chain and passthrough cluster."""
    cfg = shipped("osm-sidecar-outbound.yaml")
    (lst,) = cfg["static_resources"]["listeners"]
    assert lst["name"] == "outbound-listener"
    assert lst["address"]["socket_address"]["port_value"] == OUTBOUND_PORT
    assert [f["name"] for f in lst["listener_filters"]] == ["envoy.filters.listener.original_dst"]
    chain = lst["default_filter_chain"]
    assert chain["name"] == "outbound-egress-filter-chain"
    assert [f["name"] for f in chain["filters"]] == ["egress-guard",
                                                      "envoy.filters.network.tcp_proxy"]
    assert chain["filters"][1]["typed_config"]["cluster"] == "passthrough-outbound"
    (cluster,) = cfg["static_resources"]["clusters"]
    assert (cluster["name"], cluster["type"]) == ("passthrough-outbound", "ORIGINAL_DST")


def test_osm_shipped_policy_through_redirect(mesh_sidecar, serve, netns, cert) -> None:
    """OSM has no tls_inspector: egress-guard reads the SNI and the Host itself."""
    envoy = mesh_sidecar("osm-sidecar-outbound.yaml")
    github = serve(tls_server(netns, cert, "127.0.0.10"))
    elsewhere = serve(tls_server(netns, cert, "127.0.0.11"))
    debian = serve(HttpServer("127.0.0.12", 80, netns, label="deb"))

    assert tls_client("127.0.0.10", 443, "api.github.com", netns=netns).received == b"ping"
    denied = tls_client("127.0.0.11", 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    ok = http_request("127.0.0.12", 80, get("deb.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    bad = http_request("127.0.0.12", 80, get("evil.example.com"), netns=netns)
    assert bad.status is None, bad

    assert github.snis == ["api.github.com"]
    assert all(data == b"" for data in elsewhere.received)
    assert debian.hosts == ["deb.debian.org"]
    assert sniffed(envoy, "tls_sni") == 2 and sniffed(envoy, "http_host") == 2
    assert all_decisions(envoy) == {("allow", "rule"): 2, ("deny", "no_match"): 2}
    assert envoy.counter("cluster.passthrough-outbound.upstream_cx_total") >= 2


@pytest.mark.usefixtures("early_data")
def test_osm_hold_upstream_opens_no_upstream_for_a_denial(mesh_sidecar, serve, netns,
                                                          cert) -> None:
    """The shipped tcp_proxy has max_early_data_bytes: with hold_upstream a denied connection
    never reaches its destination, not even as a TCP connect."""
    envoy = mesh_sidecar("osm-sidecar-outbound.yaml", {**API_POLICY,
                                                       "sniff": {"hold_upstream": True}})
    server = serve(tls_server(netns, cert, "127.0.0.13"))

    denied = tls_client("127.0.0.13", 443, "evil.example.com", netns=netns)
    assert denied.received == b"", denied
    assert server.connections == 0
    assert tls_client("127.0.0.13", 443, "api.example.com", netns=netns).received == b"ping"
    assert server.connections == 1
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("deny", "no_match"): 1}


# --------------------------------------------------------------------------------------------
# Istio
# --------------------------------------------------------------------------------------------


def listener_named(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lst for lst in cfg["static_resources"]["listeners"] if lst["name"] == name)


def chain_named(lst: dict[str, Any], name: str) -> dict[str, Any]:
    chains = [*lst.get("filter_chains", []), lst.get("default_filter_chain") or {}]
    return next(c for c in chains if c.get("name") == name)


def test_istio_shape() -> None:
    """The names and filter order of Istio's outbound listeners (the EnvoyFilters rely on them)."""
    cfg = shipped("istio-sidecar-outbound.yaml")
    vo = listener_named(cfg, "virtualOutbound")
    assert vo["use_original_dst"] is True and not vo.get("listener_filters")
    catchall = chain_named(vo, "virtualOutbound-catchall-tcp")
    assert [f["name"] for f in catchall["filters"]] == ["egress-guard",
                                                         "envoy.filters.network.tcp_proxy"]
    assert catchall["filters"][1]["typed_config"]["cluster"] == "PassthroughCluster"
    for name in ("0.0.0.0_443", "0.0.0.0_80"):
        lst = listener_named(cfg, name)
        assert lst["bind_to_port"] is False
        assert [f["name"] for f in lst["listener_filters"]] == [
            "envoy.filters.listener.tls_inspector", "envoy.filters.listener.http_inspector"]
        passthrough = lst["default_filter_chain"]
        assert passthrough["name"] == "PassthroughFilterChain"
        assert [f["name"] for f in passthrough["filters"]] == ["egress-guard",
                                                                "envoy.filters.network.tcp_proxy"]
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert clusters["PassthroughCluster"]["type"] == "ORIGINAL_DST"
    assert clusters["BlackHoleCluster"]["type"] == "STATIC"
    assert "load_assignment" not in clusters["BlackHoleCluster"]


def test_istio_443_is_handed_to_the_port_listener(mesh_sidecar, serve, netns, cert) -> None:
    """Port 443: virtualOutbound hands the connection to 0.0.0.0_443 (use_original_dst), whose
    tls_inspector gives egress-guard the SNI; a ServiceEntry's own chain bypasses egress-guard."""
    envoy = mesh_sidecar("istio-sidecar-outbound.yaml", API_POLICY)
    api = serve(tls_server(netns, cert, "127.0.0.30"))
    evil = serve(tls_server(netns, cert, "127.0.0.31"))
    partner = serve(tls_server(netns, cert, "127.0.0.32"))

    assert tls_client("127.0.0.30", 443, "api.example.com", netns=netns).received == b"ping"
    denied = tls_client("127.0.0.31", 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    registered = tls_client("127.0.0.32", 443, "api.partner.example", netns=netns)
    assert registered.received == b"ping", registered

    assert api.snis == ["api.example.com"] and partner.snis == ["api.partner.example"]
    assert all(data == b"" for data in evil.received)
    assert sniffed(envoy, "inspector_sni") == 2          # decided on the 0.0.0.0_443 listener
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("deny", "no_match"): 1}
    assert envoy.counter("cluster.outbound|443||api.partner.example.upstream_cx_total") == 1
    assert envoy.counter("cluster.PassthroughCluster.upstream_cx_total") >= 1


def test_istio_other_ports_are_decided_on_the_catch_all(mesh_sidecar, serve, netns, cert) -> None:
    """No per-port listener for 8443 or 5432: the catch-all chain, without tls_inspector, where
    egress-guard parses the ClientHello itself."""
    envoy = mesh_sidecar("istio-sidecar-outbound.yaml", API_POLICY)
    api = serve(tls_server(netns, cert, "127.0.0.33", 8443))
    db = serve(TcpServer("127.0.0.21", 5432, netns=netns))
    metadata = serve(TcpServer("127.0.0.22", 8080, netns=netns))

    assert tls_client("127.0.0.33", 8443, "api.example.com", netns=netns).received == b"ping"
    denied = tls_client("127.0.0.33", 8443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    reply = tcp_exchange("127.0.0.21", 5432, PG_SSL_REQUEST, until=8, netns=netns)
    assert reply.received == PG_SSL_REQUEST, reply
    blocked = tcp_exchange("127.0.0.22", 8080, b"GET / HTTP/1.1\r\n\r\n", netns=netns)
    assert blocked.received == b"" and blocked.closed_by_peer, blocked

    assert api.snis == ["api.example.com"] and db.received == [PG_SSL_REQUEST]
    assert metadata.connections == 0
    assert sniffed(envoy, "tls_sni") == 2 and sniffed(envoy, "inspector_sni") == 0
    assert all_decisions(envoy) == {("allow", "rule"): 2, ("deny", "no_match"): 1,
                                    ("deny", "deny_rule"): 1}


def test_istio_port_80_http_and_non_http(mesh_sidecar, serve, netns) -> None:
    """Port 80: HTTP goes through the HTTP connection manager (allow_any) where the HTTP filter
    answers a denial with 403; non-HTTP bytes take the PassthroughFilterChain instead."""
    envoy = mesh_sidecar("istio-sidecar-outbound.yaml", API_POLICY)
    web = serve(HttpServer("127.0.0.34", 80, netns, label="api"))
    raw = serve(TcpServer("127.0.0.35", 80, netns=netns))

    ok = http_request("127.0.0.34", 80, get("api.example.com"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from api", ok
    denied = http_request("127.0.0.34", 80, get("evil.example.com"), netns=netns)
    assert denied.status == 403 and denied.headers["x-egress-guard"] == "denied", denied
    binary = tcp_exchange("127.0.0.35", 80, PG_SSL_REQUEST, netns=netns)
    assert binary.received == b"" and binary.closed_by_peer, binary

    assert web.hosts == ["api.example.com"]
    assert all(data == b"" for data in raw.received)
    filters = [(e["filter"], e["decision"]) for e in decision_log(envoy, 2)]
    assert filters == [("http", "deny"), ("network", "deny")]
    assert sniffed(envoy, "other") == 1


# --------------------------------------------------------------------------------------------
# Egress gateway
# --------------------------------------------------------------------------------------------

GATEWAY_HOSTS = {"api.github.com": "127.0.0.40", "evil.example.com": "127.0.0.41"}


@pytest.fixture
def gateway(netns: NetNS, netns_hosts: Callable[..., Path], start_envoy: Callable[..., Envoy],
            wasm_path: Path) -> Callable[..., Envoy]:
    """The shipped gateway in ``netns`` with its listeners on 127.0.0.1 (so the test's servers
    can use other 127.0.0.x:443), names resolved through the namespace's hosts file. Its
    pinning: test_gateway_pinning.py."""
    def start(policy: dict[str, Any] | None = None) -> Envoy:
        netns_hosts(GATEWAY_HOSTS)
        cfg = set_module(shipped("egress-gateway.yaml"), wasm_path)
        if policy is not None:
            set_policy(cfg, policy)
        for lst in cfg["static_resources"]["listeners"]:
            lst["address"]["socket_address"]["address"] = "127.0.0.1"
        return start_envoy(cfg, netns=netns)
    return start


def test_gateway_forwards_an_allowed_name_and_stops_a_denied_one_before_dns(
        gateway, serve, netns, cert) -> None:
    envoy = gateway()
    github = serve(tls_server(netns, cert, GATEWAY_HOSTS["api.github.com"]))
    evil = serve(tls_server(netns, cert, GATEWAY_HOSTS["evil.example.com"]))

    denied = tls_client("127.0.0.1", 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    assert envoy.counter("dns_cache.egress_guard_pinned.dns_query_attempt") == 0
    assert evil.connections == 0

    ok = tls_client("127.0.0.1", 443, "api.github.com", payload=b"via gateway", netns=netns)
    assert ok.received == b"via gateway", ok
    assert github.snis == ["api.github.com"]
    assert envoy.counter("dns_cache.egress_guard_pinned.dns_query_attempt") == 1
    assert sniffed(envoy, "inspector_sni") == 2
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("deny", "no_match"): 1}
    assert decision_log(envoy)[-1]["name"] == "evil.example.com"
    assert policy_of(shipped("egress-gateway.yaml"))["mode"] == "allowlist"
