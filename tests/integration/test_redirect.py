"""redirect.sh, the interception the namespace tests, the demo and the docker-compose demo use.

Each test makes an "app" namespace and a second namespace joined to it by a veth pair: another
host on a network (198.18.0.2 and fd00:6567::2; the app is 198.18.0.1 and fd00:6567::1). The
shipped sidecar config runs in the app namespace as uid 1337, its policy allowing the other host
on port 7000 only, so whether a connection went through Envoy shows in what egress-guard decided
and whether the bytes came back.

What is checked: an excluded port is exempt on the proxy's own address only (127.0.0.1, ::1),
never towards another host; connections that stay in the namespace (loopback, the namespace's
own addresses) are left alone as istio-iptables leaves them, unless ``--intercept-loopback``;
running the script twice, or again with other arguments, leaves exactly one set of rules.
Without namespaces these tests skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from egress import all_decisions, decision_log, set_module, set_policy, shipped
from harness import (PROXY_UID, REDIRECT_SCRIPT, ClientResult, Envoy, NetNS, TcpServer,
                     tcp_exchange)

ADMIN_PORT, OUTBOUND_PORT = 15000, 15001   # as in envoy/sidecar-outbound.yaml
AGENT_PORT = 15020                           # a second port of the proxy's own (Istio's agent)
ALLOWED_PORT = 7000
CHAIN = "EGRESS_GUARD_OUTPUT"
JUMP = f"-A OUTPUT -p tcp -j {CHAIN}"

# family -> (the app's address on the link, the other host's, the proxy's own loopback address)
ADDRESSES = {"ipv4": ("198.18.0.1", "198.18.0.2", "127.0.0.1"),
             "ipv6": ("fd00:6567::1", "fd00:6567::2", "::1")}
POLICY = {"allow": [{"name": "other-host", "cidrs": ["198.18.0.2/32", "fd00:6567::2/128"],
                     "ports": [ALLOWED_PORT]}]}


@pytest.fixture
def remote(netns: NetNS) -> Iterator[NetNS]:
    """Another host: a namespace linked to ``netns`` by a veth pair (see ADDRESSES)."""
    with NetNS() as other:
        netns.link(other, ["198.18.0.1/24", "fd00:6567::1/64"],
                   ["198.18.0.2/24", "fd00:6567::2/64"])
        yield other


@pytest.fixture
def sidecar(netns: NetNS, remote: NetNS, start_envoy: Callable[..., Envoy],
            wasm_path: Path) -> Envoy:
    """The shipped sidecar config (listening on IPv4 and IPv6, stats as ``listener.outbound``)
    in ``netns`` as uid 1337 with POLICY; no interception yet."""
    config = set_policy(set_module(shipped("sidecar-outbound.yaml"), wasm_path), POLICY)
    for lst in config["static_resources"]["listeners"]:
        lst["stat_prefix"] = lst["name"]
        lst["additional_addresses"] = [{"address": {"socket_address": {
            "address": "::", "port_value": OUTBOUND_PORT}}}]
    return start_envoy(config, netns=netns, uid=PROXY_UID)


def redirect(netns: NetNS, *args: str) -> subprocess.CompletedProcess[str]:
    """Run redirect.sh with ``args`` in ``netns`` (not checked)."""
    return netns.run("sh", str(REDIRECT_SCRIPT), *args, check=False)


def echo(netns: NetNS, host: str, port: int, payload: bytes) -> ClientResult:
    """Send ``payload`` from the app namespace to an echo server and read it back."""
    return tcp_exchange(host, port, payload, netns=netns, until=len(payload), read_timeout=3)


def rules(netns: NetNS) -> dict[str, tuple[list[str], int]]:
    """Per tool: the chain's rules (``-S``), and how many jump rules lead to it from OUTPUT."""
    out = {}
    for name, tool in (("iptables", netns.iptables), ("ip6tables", netns.ip6tables)):
        output = tool("-t", "nat", "-S", "OUTPUT").splitlines()
        out[name] = (tool("-t", "nat", "-S", CHAIN).splitlines(), output.count(JUMP))
    return out


def expected(own: str, ports: list[int], intercept_loopback: bool) -> list[str]:
    """The chain's listing for one family, ``own`` being the proxy's loopback address."""
    return [f"-N {CHAIN}",
            f"-A {CHAIN} -m owner --uid-owner {PROXY_UID} -j RETURN",
            *(f"-A {CHAIN} -d {own} -p tcp -m tcp --dport {p} -j RETURN" for p in ports),
            *([] if intercept_loopback else [f"-A {CHAIN} -o lo -j RETURN"]),
            f"-A {CHAIN} -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"]


def expected_rules(ports: list[int], intercept_loopback: bool = False,
                   ) -> dict[str, tuple[list[str], int]]:
    """What :func:`rules` returns after one (or any number of) runs with these arguments."""
    return {"iptables": (expected("127.0.0.1/32", ports, intercept_loopback), 1),
            "ip6tables": (expected("::1/128", ports, intercept_loopback), 1)}


def test_rules_as_listed(netns: NetNS) -> None:
    """Exactly: uid exemption, excluded ports on the proxy's own address, loopback left alone
    (not with --intercept-loopback), REDIRECT; for IPv4 and IPv6, one jump from OUTPUT."""
    assert redirect(netns, str(OUTBOUND_PORT), str(PROXY_UID), f"{ADMIN_PORT},{AGENT_PORT}"
                    ).returncode == 0
    assert rules(netns) == expected_rules([ADMIN_PORT, AGENT_PORT])

    with NetNS() as other:
        assert redirect(other, "--intercept-loopback", str(OUTBOUND_PORT)).returncode == 0
        assert rules(other) == expected_rules([], intercept_loopback=True)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_another_host_on_an_excluded_port_goes_through_envoy(
        netns: NetNS, remote: NetNS, sidecar: Envoy, serve: Callable, family: str) -> None:
    """The admin port is excluded, yet a connection to another host on that port is
    intercepted: egress-guard denies it (the policy allows that host on 7000 only)."""
    _, other, _ = ADDRESSES[family]
    on_excluded = serve(TcpServer(other, ADMIN_PORT, netns=remote))
    allowed = serve(TcpServer(other, ALLOWED_PORT, netns=remote))
    redirect(netns, str(OUTBOUND_PORT), str(PROXY_UID), str(ADMIN_PORT)).check_returncode()

    assert echo(netns, other, ALLOWED_PORT, b"allowed").received == b"allowed"
    denied = echo(netns, other, ADMIN_PORT, b"to the excluded port")
    assert denied.received == b"" and denied.closed_by_peer, denied

    assert allowed.received == [b"allowed"]
    assert on_excluded.connections == 0   # denied by IP and port when it opened
    assert all_decisions(sidecar) == {("allow", "rule"): 1, ("deny", "no_match"): 1}
    host = f"[{other}]" if family == "ipv6" else other
    assert decision_log(sidecar)[-1]["dst"] == f"{host}:{ADMIN_PORT}"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_the_proxys_own_address_on_an_excluded_port_is_not_intercepted(
        netns: NetNS, remote: NetNS, sidecar: Envoy, serve: Callable, family: str) -> None:
    """With loopback intercepted (as the tests' stand-ins need), 127.0.0.1 / ::1 on an excluded
    port is still left alone; the same port elsewhere on loopback, and the proxy's own address
    on another port, are intercepted (and denied: the policy allows neither)."""
    mine, other, own = ADDRESSES[family]
    # IPv6 has one loopback address: the namespace's own address on the link stands in for
    # "another loopback address" (it is local too, and intercepted with --intercept-loopback).
    elsewhere = "127.0.0.5" if family == "ipv4" else mine
    agent = serve(TcpServer(own, AGENT_PORT, netns=netns))
    same_port_elsewhere = serve(TcpServer(elsewhere, AGENT_PORT, netns=netns))
    other_port = serve(TcpServer(own, ALLOWED_PORT + 1, netns=netns))
    allowed = serve(TcpServer(other, ALLOWED_PORT, netns=remote))
    redirect(netns, "--intercept-loopback", str(OUTBOUND_PORT), str(PROXY_UID),
             f"{ADMIN_PORT},{AGENT_PORT}").check_returncode()

    assert echo(netns, own, AGENT_PORT, b"agent").received == b"agent"
    assert agent.received == [b"agent"]
    assert all_decisions(sidecar) == {}          # not one connection reached egress-guard
    for host, port in ((elsewhere, AGENT_PORT), (own, ALLOWED_PORT + 1)):
        result = echo(netns, host, port, b"intercepted")
        assert result.received == b"" and result.closed_by_peer, (host, port, result)
    assert echo(netns, other, ALLOWED_PORT, b"allowed").received == b"allowed"

    assert same_port_elsewhere.connections == other_port.connections == 0
    assert allowed.received == [b"allowed"]
    assert all_decisions(sidecar) == {("allow", "rule"): 1, ("deny", "no_match"): 2}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_connections_inside_the_namespace_are_left_alone(
        netns: NetNS, remote: NetNS, sidecar: Envoy, serve: Callable, family: str) -> None:
    """By default, as istio-iptables: a connection out through `lo` (a loopback address, or
    the namespace's own address) is not intercepted; one to another host is."""
    mine, other, own = ADDRESSES[family]
    loopback = "127.0.0.5" if family == "ipv4" else own
    local = [serve(TcpServer(host, ALLOWED_PORT + 1, netns=netns)) for host in (loopback, mine)]
    allowed = serve(TcpServer(other, ALLOWED_PORT, netns=remote))
    denied_port = serve(TcpServer(other, ALLOWED_PORT + 1, netns=remote))
    redirect(netns, str(OUTBOUND_PORT), str(PROXY_UID), str(ADMIN_PORT)).check_returncode()

    for server in local:
        assert echo(netns, server.host, server.port, b"local").received == b"local", server
        assert server.received == [b"local"]
    assert all_decisions(sidecar) == {}
    assert echo(netns, other, ALLOWED_PORT, b"allowed").received == b"allowed"
    assert echo(netns, other, ALLOWED_PORT + 1, b"denied").received == b""

    assert allowed.received == [b"allowed"] and denied_port.connections == 0
    assert all_decisions(sidecar) == {("allow", "rule"): 1, ("deny", "no_match"): 1}


def test_running_twice_leaves_one_set_of_rules(netns: NetNS, remote: NetNS, sidecar: Envoy,
                                               serve: Callable) -> None:
    """A second run succeeds and changes nothing; a run with other arguments replaces the
    rules; either way one chain, one jump from OUTPUT, and each connection intercepted once."""
    _, other, _ = ADDRESSES["ipv4"]
    allowed = serve(TcpServer(other, ALLOWED_PORT, netns=remote))
    args = [str(OUTBOUND_PORT), str(PROXY_UID), str(ADMIN_PORT)]
    for _ in range(2):
        run = redirect(netns, *args)
        assert run.returncode == 0, run.stderr
        assert rules(netns) == expected_rules([ADMIN_PORT])

    run = redirect(netns, "--intercept-loopback", *args[:2], f"{ADMIN_PORT},{AGENT_PORT}")
    assert run.returncode == 0, run.stderr
    assert rules(netns) == expected_rules([ADMIN_PORT, AGENT_PORT], intercept_loopback=True)

    assert echo(netns, other, ALLOWED_PORT, b"once").received == b"once"
    assert allowed.received == [b"once"]
    assert sidecar.counter("listener.outbound.downstream_cx_total") == 1
    assert sidecar.counter("cluster.passthrough.upstream_cx_total") == 1
    assert all_decisions(sidecar) == {("allow", "rule"): 1}


@pytest.mark.parametrize("args", [[], ["--intercept", "15001"], ["15001", "envoy"],
                                  ["15001", "1337", "15000,admin"], ["1", "2", "3", "4"]],
                         ids=["none", "unknown-option", "uid-name", "port-name", "too-many"])
def test_bad_arguments_change_nothing(netns: NetNS, args: list[str]) -> None:
    """Missing, unknown or malformed arguments: exit 2 with a message, no chain in either table."""
    run = redirect(netns, *args)
    assert run.returncode == 2 and "redirect.sh" in run.stderr, run
    assert CHAIN not in netns.iptables("-t", "nat", "-S")
    assert CHAIN not in netns.ip6tables("-t", "nat", "-S")
