"""Envoy configurations for the egress-guard tests, derived from the shipped ones in ``envoy/``.

The tests run the *shipped* listener and filter chain. Two things change per test: the policy
(the Wasm filter's configuration string) and how original destinations are restored. Outside a
network namespace there is no iptables REDIRECT, so ``original_dst`` is swapped for the
``proxy_protocol`` listener filter: the client sends a PROXY v1 header naming the original
destination, Envoy restores it exactly as ``original_dst`` would (``destination.address`` and the
ORIGINAL_DST cluster both follow it). Inside a namespace the shipped config runs unchanged but for
the module path.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

import pytest

from harness import (REPO, Cert, Envoy, LISTENER_FILTERS, NetNS, TlsServer, envoy_release, proxy_v1,
                     supports, wait_until)

ENVOY_DIR = REPO / "envoy"
WASM_FILTERS = ("envoy.extensions.filters.network.wasm.v3.Wasm",
                "envoy.extensions.filters.http.wasm.v3.Wasm")


def require_hold_upstream(envoy_cmd: list[str]) -> None:
    """Skip (a version skip, also under CI) on an Envoy whose tcp_proxy has no
    ``max_early_data_bytes``: ``sniff.hold_upstream`` needs it (Envoy >= 1.37)."""
    release = envoy_release(envoy_cmd)
    if not supports("max_early_data_bytes", release):
        pytest.skip("sniff.hold_upstream needs tcp_proxy max_early_data_bytes (Envoy >= 1.37); "
                    f"this is Envoy {'.'.join(map(str, release))}")


def shipped(name: str) -> dict[str, Any]:
    """A shipped Envoy config, parsed."""
    return yaml.safe_load((ENVOY_DIR / name).read_text())


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def wasm_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``config`` (PluginConfig) of every egress-guard Wasm filter in a bootstrap."""
    return [node["config"] for node in _walk(config)
            if isinstance(node.get("@type"), str) and node["@type"].endswith(WASM_FILTERS)]


def set_module(config: dict[str, Any], wasm: Path) -> dict[str, Any]:
    """Points every egress-guard filter at ``wasm`` (an absolute path)."""
    for plugin in wasm_configs(config):
        plugin["vm_config"]["code"]["local"]["filename"] = str(wasm)
    return config


def set_policy(config: dict[str, Any], policy: dict[str, Any] | str) -> dict[str, Any]:
    """Sets the policy of every egress-guard filter (a dict, or raw JSON text)."""
    text = policy if isinstance(policy, str) else json.dumps(policy)
    for plugin in wasm_configs(config):
        plugin["configuration"]["value"] = text
    return config


def policy_of(config: dict[str, Any]) -> dict[str, Any]:
    """The policy of the (first) egress-guard filter."""
    return json.loads(wasm_configs(config)[0]["configuration"]["value"])


def on_loopback(config: dict[str, Any], *, tls_inspector: bool = True) -> dict[str, Any]:
    """Admin and listeners on 127.0.0.1 port 0; ``original_dst`` replaced by ``proxy_protocol``."""
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for lst in config["static_resources"]["listeners"]:
        lst["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
        lst["stat_prefix"] = lst["name"]
        filters = []
        for f in lst.get("listener_filters", []):
            if f["name"] == "envoy.filters.listener.original_dst":
                filters.append(copy.deepcopy(LISTENER_FILTERS["proxy_protocol"]))
            elif f["name"] == "envoy.filters.listener.tls_inspector" and not tls_inspector:
                continue
            else:
                filters.append(f)
        lst["listener_filters"] = filters
    return config


def network_filters(config: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    """The network filters of a listener's first filter chain."""
    for lst in config["static_resources"]["listeners"]:
        if lst["name"] == listener:
            return lst["filter_chains"][0]["filters"]
    raise KeyError(listener)


def tcp_proxy(config: dict[str, Any], listener: str = "outbound") -> dict[str, Any]:
    """The typed_config of a listener's tcp_proxy."""
    for f in network_filters(config, listener):
        if f["name"] == "envoy.filters.network.tcp_proxy":
            return f["typed_config"]
    raise KeyError("tcp_proxy")


def sidecar(wasm: Path, policy: dict[str, Any] | str, *, tls_inspector: bool = True,
            early_data: bool = True) -> dict[str, Any]:
    """The shipped sidecar outbound config on loopback with ``policy``.

    ``early_data=False`` removes ``max_early_data_bytes`` (a default ``tcp_proxy``).
    """
    config = on_loopback(shipped("sidecar-outbound.yaml"), tls_inspector=tls_inspector)
    if not early_data:
        tcp_proxy(config).pop("max_early_data_bytes", None)
    return set_policy(set_module(config, wasm), policy)


def http_sidecar(wasm: Path, policy: dict[str, Any] | str) -> dict[str, Any]:
    """The shipped HTTP-filter config on loopback with ``policy``."""
    config = on_loopback(shipped("sidecar-outbound-http.yaml"))
    return set_policy(set_module(config, wasm), policy)


# A PostgreSQL SSLRequest: what a database client sends first (binary, neither TLS nor HTTP).
PG_SSL_REQUEST = bytes.fromhex("0000000804d2162f")


def tls_server(netns: NetNS | None, cert: Cert, host: str, port: int = 443) -> TlsServer:
    """A TLS echo server with the tests' certificate (not started)."""
    return TlsServer(host, port, netns, certfile=cert.certfile, keyfile=cert.keyfile)


def get(host: str, path: str = "/") -> bytes:
    """A one-shot HTTP/1.1 GET for ``host`` (``Connection: close``)."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


class Via:
    """Reaches an original destination through an Envoy listener with a PROXY v1 header."""

    def __init__(self, envoy: Envoy, listener: str = "outbound") -> None:
        self.host, self.port = envoy.listener_address(listener)

    def to(self, dst: tuple[str, int]) -> dict[str, Any]:
        """Keyword arguments for the harness clients: connect to Envoy, claim ``dst``."""
        src = ("::1", 40000) if ":" in dst[0] else ("127.0.0.1", 40000)
        return {"addr": self.host, "port": self.port, "proxy_header": proxy_v1(src, dst)}


# --------------------------------------------------------------------------------------------
# egress-guard's counters and log
# --------------------------------------------------------------------------------------------

def decisions(envoy: Envoy, decision: str, reason: str) -> int:
    """``egress_guard_decisions_total{decision, reason}`` from /stats (raw tagged name)."""
    return envoy.counter(f"wasmcustom.decision=.={decision};.;reason=.={reason};.;"
                         "egress_guard_decisions_total")


def sniffed(envoy: Envoy, outcome: str) -> int:
    """``egress_guard_sniff_total{outcome}``."""
    return envoy.counter(f"wasmcustom.outcome=.={outcome};.;egress_guard_sniff_total")


RULE_MATCHES = re.compile(r"wasmcustom\.rule=\.=([\w-]+);\.;kind=\.=(\w+);\.;decision=\.=(\w+);\.;"
                          r"egress_guard_rule_matches_total$")


def rule_match_series(envoy: Envoy) -> dict[tuple[str, str, str], int]:
    """Every ``egress_guard_rule_matches_total{rule, kind, decision}`` series, by its labels."""
    return {m.groups(): value for name, value in envoy.stats().items()
            if (m := RULE_MATCHES.match(name))}


def rule_matches(envoy: Envoy, rule: str, kind: str | None = None,
                 decision: str | None = None) -> int:
    """``egress_guard_rule_matches_total{rule}``, summed over ``kind`` and ``decision`` (or
    for the ones given)."""
    return sum(value for (r, k, d), value in rule_match_series(envoy).items()
               if r == rule and kind in (None, k) and decision in (None, d))


def pin_count(envoy: Envoy, outcome: str) -> int:
    """``egress_guard_pin_total{outcome}``."""
    return envoy.counter(f"wasmcustom.outcome=.={outcome};.;egress_guard_pin_total")


def upstreams(envoy: Envoy) -> tuple[int, int]:
    """Upstream connections of (the pinned cluster, the passthrough cluster)."""
    return (envoy.counter("cluster.egress_guard_pinned.upstream_cx_total"),
            envoy.counter("cluster.passthrough.upstream_cx_total"))


def keep_alive(host: str, path: str) -> bytes:
    """A keep-alive HTTP/1.1 GET."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def malformed(envoy: Envoy, kind: str) -> int:
    """``egress_guard_malformed_total{kind}``."""
    return envoy.counter(f"wasmcustom.kind=.={kind};.;egress_guard_malformed_total")


def all_decisions(envoy: Envoy) -> dict[tuple[str, str], int]:
    """Every non-zero decision counter, by (decision, reason)."""
    pattern = re.compile(r"wasmcustom\.decision=\.=(\w+);\.;reason=\.=(\w+);\.;"
                         r"egress_guard_decisions_total$")
    found = {}
    for name, value in envoy.stats().items():
        m = pattern.match(name)
        if m and value:
            found[(m.group(1), m.group(2))] = value
    return found


def decision_log(envoy: Envoy, at_least: int = 1, timeout: float = 5.0,
                 starts: str = '{"decision"') -> list[dict[str, Any]]:
    """Every JSON decision line egress-guard wrote to Envoy's log, once there are ``at_least``
    (Envoy writes its log file asynchronously); with ``starts``, the lines that start so."""
    def read() -> list[dict[str, Any]] | None:
        lines = []
        for line in envoy.log_text().splitlines():
            start = line.find(starts)
            if start >= 0:
                lines.append(json.loads(line[start:]))
        return lines if len(lines) >= at_least else None
    return wait_until(read, timeout, describe=lambda: f"{at_least} log lines {starts}")


def unresolved_log(envoy: Envoy, at_least: int = 1) -> list[dict[str, Any]]:
    """The ``pin_unresolved`` lines: pinned connections or requests Envoy found no host for."""
    return decision_log(envoy, at_least, starts='{"event":"pin_unresolved"')


class Counters:
    """egress-guard's counters (and a few of Envoy's) at one moment, to diff against a later one.

    ``decisions`` by (decision, reason), ``sniff`` by outcome, ``malformed`` by kind, ``rules``
    by rule (over its kind and decision); ``envoy`` holds every other stat whose name starts with one of ``envoy_prefixes``.
    """

    PATTERNS = {
        "decisions": re.compile(r"decision=\.=(\w+);\.;reason=\.=(\w+);\.;"
                                r"egress_guard_decisions_total$"),
        "sniff": re.compile(r"outcome=\.=(\w+);\.;egress_guard_sniff_total$"),
        "malformed": re.compile(r"kind=\.=(\w+);\.;egress_guard_malformed_total$"),
        "rules": re.compile(r"rule=\.=([\w-]+);\.;kind=\.=\w+;\.;decision=\.=\w+;\.;"
                            r"egress_guard_rule_matches_total$"),
    }

    def __init__(self, envoy: Envoy,
                 envoy_prefixes: tuple[str, ...] = ("tls_inspector.",
                                                    "cluster.passthrough.upstream_cx_total")
                 ) -> None:
        self.decisions: dict[tuple[str, str], int] = {}
        self.sniff: dict[str, int] = {}
        self.malformed: dict[str, int] = {}
        self.rules: dict[str, int] = {}
        self.envoy: dict[str, int] = {}
        for name, value in envoy.stats().items():
            if name.startswith("wasmcustom."):
                for kind, pattern in self.PATTERNS.items():
                    m = pattern.match(name, len("wasmcustom."))
                    if m:
                        key = m.groups() if kind == "decisions" else m.group(1)
                        # A rule's series (one per kind and decision) add up under its name.
                        found = getattr(self, kind)
                        found[key] = found.get(key, 0) + value
            elif name.startswith(envoy_prefixes):
                self.envoy[name] = value

    def since(self, before: Counters) -> Counters:
        """The non-zero differences ``self - before``, as a Counters."""
        diff = object.__new__(Counters)
        for kind in ("decisions", "sniff", "malformed", "rules", "envoy"):
            now, then = getattr(self, kind), getattr(before, kind)
            setattr(diff, kind, {k: v - then.get(k, 0) for k, v in now.items()
                                 if v != then.get(k, 0)})
        return diff

    def __repr__(self) -> str:
        return (f"Counters(decisions={self.decisions}, sniff={self.sniff}, "
                f"malformed={self.malformed}, rules={self.rules}, envoy={self.envoy})")
