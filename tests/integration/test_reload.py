"""Policy reload without loss: egress-guard's configuration delivered by Envoy's extension config
discovery (ECDS) from a file, as a control plane would deliver it.

The shipped sidecar listener, with the egress-guard filter replaced by a ``config_discovery``
reference to a file-based ECDS resource (``path_config_source``). Each update replaces that file
atomically (write a temporary file, then rename it over the watched path), as Envoy requires.

- a bad policy is rejected: the subscription counts ``update_rejected``, the log names the field,
  and the policy in force before keeps deciding new connections;
- a good policy takes over for new connections;
- a connection opened under the first policy is not cut by either update: it keeps exchanging
  bytes (it keeps the filter instance it was created with).
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from egress import Counters, Via, decision_log, network_filters, require_hold_upstream, sidecar
from harness import Envoy, TcpServer, connect, tcp_exchange, wait_until
from hello import Hello

DST = "127.0.0.2"
ECDS = "extension_config_discovery.network_filter.egress-guard."
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"

POLICY_A = {"allow": [{"name": "api", "hosts": ["api.example.com"]}]}
BAD = {"allow": [{"name": "api", "hosts": ["api.example.com"]},
                 {"name": "broken", "cidrs": ["10.0.0.300/8"]}]}
POLICY_B = {"allow": [{"name": "api-v2", "hosts": ["api-v2.example.com"]}]}


class EcdsFile:
    """The file-based ECDS resource for the filter named ``egress-guard``."""

    def __init__(self, path: Path, wasm_filter: dict[str, Any]) -> None:
        self.path = path
        self.typed_config = copy.deepcopy(wasm_filter["typed_config"])
        assert self.typed_config["@type"] == WASM_TYPE

    def write(self, policy: dict[str, Any]) -> None:
        """Replace the resource atomically: a temporary file renamed over the watched path."""
        typed = copy.deepcopy(self.typed_config)
        typed["config"]["configuration"]["value"] = json.dumps(policy)
        response = {"resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "egress-guard", "typed_config": typed}]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(response, sort_keys=False))
        os.rename(tmp, self.path)


def ecds_sidecar(wasm: Path, tmp: Path, policy: dict[str, Any]) -> tuple[dict[str, Any], EcdsFile]:
    """The shipped sidecar config whose egress-guard filter comes from a file through ECDS."""
    config = sidecar(wasm, policy, tls_inspector=False)
    config["node"] = {"id": "egress-guard-test", "cluster": "egress-guard-test"}  # ECDS needs one
    filters = network_filters(config, "outbound")
    (index, wasm_filter), = [(i, f) for i, f in enumerate(filters) if f["name"] == "egress-guard"]
    ecds = EcdsFile(tmp / "egress-guard.ecds.yaml", wasm_filter)
    ecds.write(policy)
    filters[index] = {"name": "egress-guard", "config_discovery": {
        "config_source": {"path_config_source": {"path": str(ecds.path)},
                          "resource_api_version": "V3"},
        "type_urls": [WASM_TYPE]}}
    return config, ecds


class LongLived:
    """One TLS-looking connection allowed under policy A, kept open across updates."""

    def __init__(self, via: Via, server: TcpServer) -> None:
        to = via.to(server.address)
        self.sock = connect(to["addr"], to["port"], timeout=5)
        self.hello = Hello.real("api.example.com").record()
        self.sock.sendall(to["proxy_header"] + self.hello)
        self.sent = self.hello
        assert self.read(len(self.hello)) == self.hello

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def ping(self, text: str) -> None:
        payload = f"still here: {text}\n".encode()
        self.sock.sendall(payload)
        self.sent += payload
        assert self.read(len(payload)) == payload, f"long-lived connection lost at {text}"


def passes(via: Via, server: TcpServer, sni: str) -> bool:
    """A new connection with a ClientHello for ``sni``: True if echoed, False if closed empty."""
    hello = Hello.real(sni).record()
    result = tcp_exchange(send=hello, until=len(hello), **via.to(server.address))
    if result.received == hello:
        return True
    assert result.received == b"" and result.closed_by_peer, result
    return False


def test_policy_update_through_ecds_keeps_connections_and_rejects_bad_config(
        start_envoy: Callable[..., Envoy], serve: Any, wasm_path: Path, tmp: Path) -> None:
    server = serve(TcpServer(DST))
    config, ecds = ecds_sidecar(wasm_path, tmp, POLICY_A)
    envoy = start_envoy(config)
    via = Via(envoy)
    assert envoy.counter(ECDS + "update_success") == 1

    # Policy A: api.example.com passes, api-v2.example.com does not.
    long_lived = LongLived(via, server)
    long_lived.ping("under A")
    assert passes(via, server, "api.example.com")
    assert not passes(via, server, "api-v2.example.com")

    # A bad update is rejected, with the field named, and A stays in force.
    ecds.write(BAD)
    envoy.wait_for_counter(ECDS + "update_rejected", 1)
    assert envoy.counter(ECDS + "update_success") == 1
    for line in ('invalid configuration: allow[1].cidrs[0]: "10.0.0.300/8" is not a CIDR',
                 "config update rejected: Unable to create Wasm plugin egress-guard"):
        wait_until(lambda line=line: line in envoy.log_text(), 5, describe=f"log line {line!r}")
    long_lived.ping("after the bad update")
    before = Counters(envoy)
    assert passes(via, server, "api.example.com")
    assert not passes(via, server, "api-v2.example.com")
    assert Counters(envoy).since(before).decisions == {("allow", "rule"): 1,
                                                       ("deny", "no_match"): 1}

    # A good update B takes over for new connections.
    ecds.write(POLICY_B)
    envoy.wait_for_counter(ECDS + "update_success", 2)
    assert envoy.counter(ECDS + "update_rejected") == 1
    long_lived.ping("after update B")
    before = Counters(envoy)
    assert not passes(via, server, "api.example.com")
    assert passes(via, server, "api-v2.example.com")
    delta = Counters(envoy).since(before)
    assert delta.decisions == {("allow", "rule"): 1, ("deny", "no_match"): 1}, delta
    assert delta.rules == {"api-v2": 1}, delta
    # egress_guard_policy_info: B (the fingerprint its denial was logged with) is in force.
    last = wait_until(lambda: next((e for e in decision_log(envoy)[::-1]
                                    if e["name"] == "api.example.com"), None), 5,
                      describe="B's denial of api.example.com in the log")
    b = last["policy"]
    assert policy_info(envoy)[b] == 1 and len(policy_info(envoy)) == 2, policy_info(envoy)

    # The connection opened under A was never cut, and its bytes all reached the destination.
    long_lived.ping("at the end")
    long_lived.sock.close()
    wait_until(lambda: long_lived.sent in server.received, 5,
               describe="the long-lived connection's bytes at the server")
    # Once A's configuration is gone, its gauge is 0.
    wait_until(lambda: sorted(policy_info(envoy).values()) == [0, 1], 10,
               describe=f"policy A's gauge at 0: {policy_info(envoy)}")
    assert policy_info(envoy)[b] == 1


def policy_info(envoy: Envoy) -> dict[str, int]:
    """``egress_guard_policy_info`` by fingerprint."""
    pattern = re.compile(r"wasmcustom\.policy=\.=(\w+);\.;egress_guard_policy_info$")
    return {m.group(1): value for name, value in envoy.stats().items()
            if (m := pattern.match(name))}


def test_connections_waiting_for_their_timeout_survive_an_update(
        start_envoy: Callable[..., Envoy], serve: Any, wasm_path: Path, tmp: Path,
        envoy_cmd: list[str]) -> None:
    """Silent clients held (``hold_upstream``) when the policy changes are still resolved at
    their timeout, by the policy they started under: the old configuration's tick keeps running
    while its connections live. Neither is left hanging."""
    require_hold_upstream(envoy_cmd)
    web = serve(TcpServer(DST, greeting=b"220 web\r\n"))
    db = serve(TcpServer("127.0.0.3", greeting=b"220 db\r\n"))
    sniff = {"timeout_ms": 1000, "hold_upstream": True}
    policy_a = {**POLICY_A, "sniff": sniff,
                "allow": [*POLICY_A["allow"], {"name": "db", "cidrs": ["127.0.0.3"],
                                               "ports": [db.port]}]}
    config, ecds = ecds_sidecar(wasm_path, tmp, policy_a)
    envoy = start_envoy(config)
    via = Via(envoy)
    before = Counters(envoy)
    socks = []
    for server in (web, db):
        to = via.to(server.address)
        sock = connect(to["addr"], to["port"], timeout=5)
        sock.sendall(to["proxy_header"])
        socks.append(sock)

    ecds.write({**POLICY_B, "sniff": sniff})   # B allows neither destination
    envoy.wait_for_counter(ECDS + "update_success", 2)

    with socks[0] as to_web, socks[1] as to_db:
        assert to_web.recv(100) == b""               # denied at A's timeout: closed
        assert to_db.recv(100) == b"220 db\r\n"      # allowed by A's CIDR rule at its timeout
    delta = Counters(envoy).since(before)
    assert delta.sniff == {"timeout": 2}, delta
    assert delta.decisions == {("allow", "rule"): 1, ("deny", "no_match"): 1}, delta
    assert delta.rules == {"db": 1}, delta
    assert web.connections == 0
