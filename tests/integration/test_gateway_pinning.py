"""The egress gateway pins: an allowed name reaches only that name (envoy/egress-gateway.yaml).

The shipped gateway runs in a network namespace made by the test, names resolved through the
namespace's own hosts file (``netns_hosts``; any other name fails without a query leaving the
namespace), Envoy's listeners moved to 127.0.0.1 so the test's servers can use other
127.0.0.x addresses on the same ports:

* the addressed listeners (``egress-gateway`` on 443, ``egress-gateway-http`` on 80): clients
  connect to the gateway itself, and the pinned port is the listener's port;
* the redirected listener (``egress-gateway-redirected`` on 15001, ``original_dst``): redirect.sh
  REDIRECTs the namespace's outbound TCP to it as the gateway host's iptables would, Envoy runs
  as uid 1337 and is exempted (only that listener: uid 1337 may not bind 80 and 443), and the
  client picks ``DECOY``, an address no rule lists, as ``curl --resolve`` would.

Pinned, a connection reaches the name's own address at the port the client meant, the address
the client chose gets nothing, and a denied name is never looked up. Without namespaces these
tests skip with the reason; under CI=true they fail. The gateway holds plaintext HTTP
(``sniff.hold_upstream``), so these need Envoy >= 1.37 (a version skip otherwise).
"""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import (PG_SSL_REQUEST, all_decisions, decision_log, get, keep_alive, pin_count,
                    policy_of, set_module, set_policy, shipped, sniffed, tls_server, upstreams,
                    wasm_configs)
from harness import (Envoy, HttpServer, NetNS, TcpServer, connect, http_request, tcp_exchange,
                     tls_client)

pytestmark = pytest.mark.usefixtures("early_data")

CONFIG = "egress-gateway.yaml"
PROXY_UID = 1337
ADMIN_PORT = 15000
REDIRECTED_PORT = 15001
GATEWAY = "127.0.0.1"
DECOY = "127.0.0.99"            # the address a redirected client picks: no rule lists it
DB = "127.0.0.70"               # allowed by CIDR where a test's policy says so

# Names of the shipped policy (examples/policies/default-pinned.json) and where they resolve.
NAMES = {
    "api.github.com": "127.0.0.40",
    "deb.debian.org": "127.0.0.41",
    "security.debian.org": "127.0.0.42",
    "evil.example.com": "127.0.0.43",
}
LISTENERS = {"egress-gateway": 443, "egress-gateway-http": 80,
             "egress-gateway-redirected": REDIRECTED_PORT}


def github_also_on_8443() -> dict[str, Any]:
    """The shipped policy with api.github.com's rule also allowing port 8443."""
    policy = policy_of(shipped(CONFIG))
    (github,) = [r for r in policy["allow"] if r["name"] == "github"]
    assert github["ports"] == [443]
    github["ports"] = [443, 8443]
    return policy


def lookups(envoy: Envoy) -> int:
    """DNS queries the gateway's dynamic forward proxy made."""
    return envoy.counter("dns_cache.egress_guard_pinned.dns_query_attempt")


def listener(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lst for lst in cfg["static_resources"]["listeners"] if lst["name"] == name)


@pytest.fixture
def gateway(netns: NetNS, netns_hosts: Callable[..., Path], start_envoy: Callable[..., Envoy],
            wasm_path: Path) -> Callable[..., Envoy]:
    """``gateway(policy=None, extra_ports=()) -> envoy``: the shipped gateway's addressed
    listeners on 127.0.0.1 in ``netns`` (and, for each of ``extra_ports``, a copy of the TLS
    listener on that port, as an operator adds one), Envoy as root; its own policy unless one
    is given."""
    def start(policy: dict[str, Any] | None = None,
              extra_ports: tuple[int, ...] = ()) -> Envoy:
        netns_hosts(NAMES)
        cfg = set_module(shipped(CONFIG), wasm_path)
        if policy is not None:
            set_policy(cfg, policy)
        listeners = [lst for lst in cfg["static_resources"]["listeners"]
                     if lst["name"] != "egress-gateway-redirected"]
        tls = listener(cfg, "egress-gateway")
        for port in extra_ports:
            extra = copy.deepcopy(tls)
            extra["name"] = f"egress-gateway-{port}"
            extra["address"]["socket_address"]["port_value"] = port
            listeners.append(extra)
        for lst in listeners:
            lst["address"]["socket_address"]["address"] = GATEWAY
        cfg["static_resources"]["listeners"] = listeners
        return start_envoy(cfg, netns=netns)
    return start


@pytest.fixture
def redirected(netns: NetNS, netns_hosts: Callable[..., Path], start_envoy: Callable[..., Envoy],
               wasm_path: Path) -> Callable[..., Envoy]:
    """``redirected(policy=None) -> envoy``: the shipped gateway's redirected listener in
    ``netns`` as uid 1337, outbound TCP REDIRECTed to it; its own policy unless one is given."""
    def start(policy: dict[str, Any] | None = None) -> Envoy:
        netns_hosts(NAMES)
        cfg = set_module(shipped(CONFIG), wasm_path)
        if policy is not None:
            set_policy(cfg, policy)
        cfg["static_resources"]["listeners"] = [listener(cfg, "egress-gateway-redirected")]
        envoy = start_envoy(cfg, netns=netns, uid=PROXY_UID)
        netns.install_redirect(REDIRECTED_PORT, exempt_uid=PROXY_UID,
                               exclude_ports=[ADMIN_PORT], intercept_loopback=True)
        return envoy
    return start


def test_shape() -> None:
    """Three listeners, one policy (one anchor), one DNS cache; every chain pins."""
    cfg = shipped(CONFIG)
    listeners = cfg["static_resources"]["listeners"]
    assert {lst["name"]: lst["address"]["socket_address"]["port_value"]
            for lst in listeners} == LISTENERS
    assert [f["name"] for f in listener(cfg, "egress-gateway")["listener_filters"]] == [
        "envoy.filters.listener.tls_inspector"]
    assert not listener(cfg, "egress-gateway-http").get("listener_filters")
    assert [f["name"] for f in listener(cfg, "egress-gateway-redirected")["listener_filters"]] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"]
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    dfp = clusters["egress_guard_pinned"]["cluster_type"]
    assert dfp["name"] == "envoy.clusters.dynamic_forward_proxy"
    assert clusters["passthrough"]["type"] == "ORIGINAL_DST"
    defaults = {"egress-gateway": "egress_guard_pinned", "egress-gateway-http":
                "egress_guard_pinned", "egress-gateway-redirected": "passthrough"}
    for lst in listeners:
        (chain,) = lst["filter_chains"]
        filters = chain["filters"]
        assert [f["name"] for f in filters] == [
            "egress-guard", "envoy.filters.network.sni_dynamic_forward_proxy",
            "envoy.filters.network.tcp_proxy"], lst["name"]
        sni, tcp = filters[1]["typed_config"], filters[2]["typed_config"]
        assert sni["dns_cache_config"] == dfp["typed_config"]["dns_cache_config"] == {
            "name": "egress_guard_pinned", "dns_lookup_family": "V4_PREFERRED"}
        assert tcp["cluster"] == defaults[lst["name"]], lst["name"]
        assert tcp["max_early_data_bytes"] == 65536
    plugins = wasm_configs(cfg)
    assert len(plugins) == 3 and all(p is plugins[0] for p in plugins)   # one anchor
    policy = policy_of(cfg)
    assert policy["pin"] is True and policy["pin_cluster"] == "egress_guard_pinned"
    assert policy["sniff"]["hold_upstream"] is True
    assert policy == policy_of(shipped("sidecar-outbound-pinned.yaml"))


def test_tls_to_the_gateway_on_443_reaches_the_name_on_443(gateway, serve, netns, cert) -> None:
    """A denied name is closed before any DNS lookup; an allowed one is pinned to its name at
    the listener's port (443), not another port of the same address."""
    envoy = gateway()
    github = serve(tls_server(netns, cert, NAMES["api.github.com"]))
    github_8443 = serve(tls_server(netns, cert, NAMES["api.github.com"], 8443))
    evil = serve(tls_server(netns, cert, NAMES["evil.example.com"]))

    denied = tls_client(GATEWAY, 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    assert lookups(envoy) == 0 and evil.connections == 0

    ok = tls_client(GATEWAY, 443, "api.github.com", payload=b"via gateway", netns=netns)
    assert ok.received == b"via gateway", ok
    assert github.snis == ["api.github.com"] and github_8443.connections == 0
    assert lookups(envoy) == 1
    assert sniffed(envoy, "inspector_sni") == 2
    assert pin_count(envoy, "pinned") == 1
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("deny", "no_match"): 1}
    assert upstreams(envoy) == (1, 0)
    assert decision_log(envoy)[-1]["name"] == "evil.example.com"


def test_tls_to_the_gateway_on_another_port_reaches_the_name_on_that_port(
        gateway, serve, netns, cert) -> None:
    """A listener added for 8443 (a copy of the TLS one) pins to <name>:8443: the port is the
    listener's, not the sni_dynamic_forward_proxy's fixed port_value 443."""
    envoy = gateway(github_also_on_8443(), extra_ports=(8443,))
    github = serve(tls_server(netns, cert, NAMES["api.github.com"]))
    github_8443 = serve(tls_server(netns, cert, NAMES["api.github.com"], 8443))

    ok = tls_client(GATEWAY, 8443, "api.github.com", payload=b"on 8443", netns=netns)

    assert ok.received == b"on 8443", ok
    assert github_8443.snis == ["api.github.com"] and github.connections == 0
    assert pin_count(envoy, "pinned") == 1
    assert upstreams(envoy) == (1, 0)


def test_plaintext_http_to_the_gateway_is_pinned_by_host(gateway, serve, netns) -> None:
    """Port 80: the connection is held until its Host is read, then pinned to <Host>:80. A
    later request on it for another name closes it; a denied Host is never looked up."""
    envoy = gateway()
    deb = serve(HttpServer(NAMES["deb.debian.org"], 80, netns, label="deb"))
    security = serve(HttpServer(NAMES["security.debian.org"], 80, netns, label="security"))
    evil = serve(HttpServer(NAMES["evil.example.com"], 80, netns, label="evil"))

    bad = http_request(GATEWAY, 80, get("evil.example.com"), netns=netns)
    assert bad.status is None, bad
    assert lookups(envoy) == 0 and evil.connections == 0

    with connect(GATEWAY, 80, netns) as sock:
        sock.sendall(keep_alive("deb.debian.org", "/1"))
        first = read_response(sock)
        sock.sendall(keep_alive("security.debian.org", "/2"))
        second = read_response(sock)

    assert first.endswith(b"hello from deb"), first
    assert second == b"", second
    assert deb.requests == ["GET /1 HTTP/1.1"] and security.connections == 0
    assert pin_count(envoy, "pinned") == 1 and pin_count(envoy, "other_name") == 1
    # A new connection for the other name is pinned to it.
    ok = http_request(GATEWAY, 80, get("security.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from security", ok
    assert sniffed(envoy, "http_host") >= 3
    assert lookups(envoy) == 2
    assert upstreams(envoy) == (2, 0)
    assert evil.connections == 0


def test_redirected_connections_reach_the_name_at_their_original_port(
        redirected, serve, netns, cert) -> None:
    """Redirected to the gateway: TLS on 443 and 8443 and plaintext HTTP on 80, each sent to
    ``DECOY`` with an allowed name, reach that name at the port the client used; ``DECOY`` gets
    nothing, and a denied name is never looked up."""
    envoy = redirected()
    github = serve(tls_server(netns, cert, NAMES["api.github.com"]))
    github_8443 = serve(tls_server(netns, cert, NAMES["api.github.com"], 8443))
    deb = serve(HttpServer(NAMES["deb.debian.org"], 80, netns, label="deb"))
    decoy = serve(tls_server(netns, cert, DECOY))
    decoy_8443 = serve(tls_server(netns, cert, DECOY, 8443))
    decoy_80 = serve(HttpServer(DECOY, 80, netns, label="decoy"))

    denied = tls_client(DECOY, 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    assert lookups(envoy) == 0

    assert tls_client(DECOY, 443, "api.github.com", payload=b"card 4242",
                      netns=netns).received == b"card 4242"
    ok = http_request(DECOY, 80, get("deb.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok

    assert github.snis == ["api.github.com"] and github.received == [b"card 4242"]
    assert deb.hosts == ["deb.debian.org"]
    assert decoy.connections == decoy_80.connections == 0
    assert github_8443.connections == decoy_8443.connections == 0
    assert pin_count(envoy, "pinned") == 2
    assert upstreams(envoy) == (2, 0)
    assert lookups(envoy) == 2
    entry = decision_log(envoy)[-1]
    assert (entry["dst"], entry["name"]) == (f"{DECOY}:443", "evil.example.com")


def test_redirected_tls_on_another_port_is_pinned_at_that_port(
        redirected, serve, netns, cert) -> None:
    """The original port comes from original_dst: a name allowed on 8443 reaches <name>:8443,
    neither <name>:443 nor the address the client chose."""
    envoy = redirected(github_also_on_8443())
    github = serve(tls_server(netns, cert, NAMES["api.github.com"]))
    github_8443 = serve(tls_server(netns, cert, NAMES["api.github.com"], 8443))
    decoy_8443 = serve(tls_server(netns, cert, DECOY, 8443))

    assert tls_client(DECOY, 8443, "api.github.com", netns=netns).received == b"ping"

    assert github_8443.snis == ["api.github.com"]
    assert github.connections == 0 and decoy_8443.connections == 0
    assert pin_count(envoy, "pinned") == 1
    assert upstreams(envoy) == (1, 0)


def test_redirected_cidr_allows_keep_their_destination(redirected, serve, netns, cert) -> None:
    """On the redirected listener CIDR rules match the real destination: what one allows goes
    there through the passthrough cluster, unpinned, whatever name it carries; an allowed name
    sent elsewhere is still pinned."""
    policy = policy_of(shipped(CONFIG))
    policy["allow"].append({"name": "db", "cidrs": [f"{DB}/32"], "ports": [443, 5432]})
    envoy = redirected(policy)
    db = serve(TcpServer(DB, 5432, netns=netns))
    db_tls = serve(tls_server(netns, cert, DB))
    github = serve(tls_server(netns, cert, NAMES["api.github.com"]))

    reply = tcp_exchange(DB, 5432, PG_SSL_REQUEST, until=8, netns=netns)
    assert reply.received == PG_SSL_REQUEST, reply
    assert tls_client(DB, 443, "api.github.com", netns=netns).received == b"ping"
    assert tls_client(DECOY, 443, "api.github.com", netns=netns).received == b"ping"

    assert db.received == [PG_SSL_REQUEST] and db_tls.snis == ["api.github.com"]
    assert github.snis == ["api.github.com"]
    assert pin_count(envoy, "pinned") == 1
    assert upstreams(envoy) == (1, 2)


def read_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """One response of the harness's HttpServer (it ends with ``hello from <label>``), or the
    bytes read until the peer closed or went quiet."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while not data.rstrip().endswith((b"hello from deb", b"hello from security")):
        if time.monotonic() > deadline:
            break
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data
