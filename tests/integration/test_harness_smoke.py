"""Smoke tests of the harness with a plain Envoy (no Wasm filter).

They prove the two ways the filter tests reach real original destinations:
(a) a PROXY v1 header restores the destination for an ORIGINAL_DST cluster, on free loopback
    ports with no privileges; (b) sidecar-faithful iptables REDIRECT + original_dst inside a
    network namespace, Envoy running as uid 1337 (redirect.sh itself: test_redirect.py).
    (c) checks the skip/fail rule for missing prerequisites.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness import (
    HERE, Envoy, EnvoyNotFound, HttpServer, NetNS, TcpServer, TlsServer, bootstrap, find_envoy,
    http_request, listener, original_dst_cluster, proxy_v1, socket_address, tcp_exchange,
    tcp_proxy_filter, tls_client,
)

OUTBOUND_PORT, ADMIN_PORT, PROXY_UID = 15001, 15000, 1337


def proxy_protocol_config(listen_host: str) -> dict[str, Any]:
    """Listener ``pp`` on a free port: PROXY protocol + TLS inspector, tcp_proxy to ORIGINAL_DST."""
    return bootstrap(
        [listener("pp", listen_host, network_filters=[tcp_proxy_filter()],
                  listener_filters=["proxy_protocol", "tls_inspector"], stat_prefix="pp")],
        [original_dst_cluster()],
        admin_host=listen_host,
    )


def outbound_config() -> dict[str, Any]:
    """Istio-style virtualOutbound: 0.0.0.0 and [::] port 15001, original_dst, passthrough."""
    return bootstrap(
        [listener("outbound", "0.0.0.0", OUTBOUND_PORT, network_filters=[tcp_proxy_filter()],
                  listener_filters=["original_dst"], stat_prefix="outbound",
                  use_original_dst=True,
                  additional_addresses=[{"address": socket_address("::", OUTBOUND_PORT)}])],
        [original_dst_cluster()],
        admin_port=ADMIN_PORT,
    )


# ---------------------------------------------------------------------------------------------
# (a) PROXY protocol emulation of original destinations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("listen", "dst", "src"), [
    ("127.0.0.1", "127.0.0.2", "127.0.0.9"),
    ("::1", "::1", "::1"),
], ids=["ipv4", "ipv6"])
def test_proxy_header_destination_is_the_original_destination(
        start_envoy: Any, serve: Any, cert: Any, listen: str, dst: str, src: str) -> None:
    """TLS after a PROXY v1 header reaches the header's destination through ORIGINAL_DST."""
    server = serve(TlsServer(dst, certfile=cert.certfile, keyfile=cert.keyfile))
    envoy = start_envoy(proxy_protocol_config(listen))
    port = envoy.listener_port("pp")
    assert port != 0

    result = tls_client(listen, port, "api.example.com", b"ping",
                        proxy_header=proxy_v1((src, 40000), server.address))

    assert result.handshake_ok and result.echoed == b"ping", result
    assert (server.connections, server.handshakes) == (1, 1)
    assert server.snis == ["api.example.com"]
    assert server.received == [b"ping"]
    assert envoy.wait_for_counter("listener.pp.downstream_cx_total", 1) == 1
    stats = envoy.stats()
    assert stats["cluster.passthrough.upstream_cx_total"] == 1
    assert stats["proxy_proto.versions.v1.found"] == 1
    assert stats["tcp.egress.downstream_cx_total"] == 1


def test_proxy_header_routes_each_connection(start_envoy: Any, serve: Any) -> None:
    """One listener, two connections, two destinations: each lands where its header says."""
    tcp = serve(TcpServer("127.0.0.2", label="tcp"))
    web = serve(HttpServer("127.0.0.3", label="web"))
    envoy = start_envoy(proxy_protocol_config("127.0.0.1"))
    port = envoy.listener_port("pp")
    src = ("127.0.0.9", 40000)

    echoed = tcp_exchange("127.0.0.1", port, b"raw bytes", until=9,
                          proxy_header=proxy_v1(src, tcp.address))
    response = http_request(
        "127.0.0.1", port, b"GET /x HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n",
        proxy_header=proxy_v1(src, web.address))

    assert echoed.received == b"raw bytes", echoed
    assert (response.status, response.body) == (200, b"hello from web"), response
    assert tcp.received == [b"raw bytes"]
    assert web.requests == ["GET /x HTTP/1.1"] and web.hosts == ["web.example.com"]
    assert envoy.wait_for_counter("cluster.passthrough.upstream_cx_total", 2) == 2


# ---------------------------------------------------------------------------------------------
# (b) sidecar-faithful: namespace, iptables REDIRECT, Envoy as uid 1337
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dst", ["127.0.0.5", "::1"], ids=["ipv4", "ipv6"])
def test_redirect_in_namespace_goes_through_envoy(
        netns: NetNS, start_envoy: Any, serve: Any, dst: str) -> None:
    """An app connecting straight to its destination is intercepted by Envoy and forwarded."""
    envoy = start_envoy(outbound_config(), netns=netns, uid=PROXY_UID)
    netns.install_redirect(OUTBOUND_PORT, PROXY_UID, [ADMIN_PORT], intercept_loopback=True)
    server = serve(TcpServer(dst, 7000, netns=netns))

    result = tcp_exchange(dst, 7000, b"through envoy", netns=netns, until=13)

    assert result.received == b"through envoy", result
    assert server.received == [b"through envoy"]
    assert envoy.wait_for_counter("listener.outbound.downstream_cx_total", 1) == 1
    assert envoy.counter("cluster.passthrough.upstream_cx_total") == 1
    uid_line = next(ln for ln in Path(f"/proc/{envoy.proc.pid}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert uid_line.split()[1:3] == [str(PROXY_UID)] * 2


# ---------------------------------------------------------------------------------------------
# Envoy lifecycle helpers
# ---------------------------------------------------------------------------------------------


def test_refused_config_exits_and_fails_validation(envoy_cmd: list[str], tmp: Path) -> None:
    """A config Envoy refuses: start_expect_failure reports exit 1, validate() says not ok."""
    bad = proxy_protocol_config("127.0.0.1")
    filters = bad["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    filters[0]["typed_config"]["stat_prefix"] = ""  # violates the proto's min_len: 1

    failure = Envoy.start_expect_failure(bad, tmp / "start", envoy_cmd=envoy_cmd)
    ok, output = Envoy.validate(bad, tmp / "validate", envoy_cmd=envoy_cmd)

    assert failure.exit_code == 1, failure.output
    assert "StatPrefix" in failure.output or "stat_prefix" in failure.output, failure.output
    assert not ok and "stat_prefix" in output.lower().replace("statprefix", "stat_prefix")
    assert Envoy.validate(proxy_protocol_config("127.0.0.1"), tmp / "good", envoy_cmd)[0]


def test_stop_is_idempotent_and_prometheus_works(start_envoy: Any) -> None:
    envoy = start_envoy(proxy_protocol_config("127.0.0.1"))
    assert "envoy_listener_downstream_cx_total" in envoy.prometheus()
    assert envoy.stop() == 0
    assert envoy.stop() == 0


# ---------------------------------------------------------------------------------------------
# (c) missing prerequisites: skip normally, fail under CI=true
# ---------------------------------------------------------------------------------------------


def test_envoy_bin_must_exist_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVOY_BIN", "/nonexistent/envoy")
    with pytest.raises(EnvoyNotFound, match="ENVOY_BIN"):
        find_envoy()


PROBE_TESTS = textwrap.dedent("""
    def test_envoy(envoy_cmd): pass
    def test_netns(netns): pass
    def test_wasm(wasm_path): pass
""")


@pytest.mark.parametrize(("ci", "outcome", "exit_code"), [("true", "3 errors", 1),
                                                         ("", "3 skipped", 0)])
def test_missing_prerequisites_fail_under_ci(tmp: Path, ci: str, outcome: str,
                                             exit_code: int) -> None:
    """Envoy, namespaces, .wasm missing: 3 skipped normally; under CI=true the 3 fixtures fail
    (pytest reports a failing fixture as an error) and the run exits 1."""
    (tmp / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp / "test_probe.py").write_text(PROBE_TESTS)
    env = {**os.environ, "CI": ci, "ENVOY_BIN": "/nonexistent/envoy", "EG_NO_NETNS": "1",
           "EGRESS_GUARD_WASM": "/nonexistent/egress_guard.wasm",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(tmp)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120, check=False)
    summary = run.stdout.strip().splitlines()[-1]
    assert outcome in summary and run.returncode == exit_code, run.stdout + run.stderr
    for reason in ("ENVOY_BIN", "EG_NO_NETNS", "egress_guard.wasm"):
        assert reason in run.stdout, run.stdout
