#!/usr/bin/env python3
"""egress-guard demo: a real Envoy with egress-guard in front of stand-in external services.

What a mesh sidecar does, on this machine: an "app" network namespace whose outbound TCP is
REDIRECTed by iptables to Envoy's outbound listener (envoy/sidecar-outbound.yaml, Envoy as uid
1337 and exempted). The "external" services are local stand-ins on 127.0.0.x inside the same
namespace: GitHub and PyPI over TLS, a Debian mirror over HTTP, a database over raw TCP, and a
cloud-metadata endpoint. The app sends allowed and denied traffic; the demo prints each outcome,
egress-guard's decision log lines and its counters, then stops everything it started.

Envoy, as uid 1337, may not be able to enter the clone this runs from (``mktemp -d`` and /root
are open to their owner only), so it gets everything it reads -- the module, its config, the
certificates -- in a temporary directory anyone may traverse, removed at the end.

Run it with `make demo` (needs root for the namespace and iptables).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import shutil
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from egress import decision_log, get, set_module, set_policy, shipped  # noqa: E402
from harness import (PROXY_UID, Envoy, HttpServer, NetNS, TcpServer, TlsServer,  # noqa: E402
                     envoy_version, find_envoy, http_request, make_cert, share, tcp_exchange,
                     tls_client)

POLICY = REPO / "examples" / "demo" / "policy.json"
ADMIN_PORT, OUTBOUND_PORT = 15000, 15001


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wasm", default=str(REPO / "target/wasm32-wasip1/release/egress_guard.wasm"))
    parser.add_argument("--policy", default=str(POLICY), help="policy JSON (default: %(default)s)")
    args = parser.parse_args()
    wasm = Path(args.wasm).resolve()
    if not wasm.is_file():
        print(f"{wasm} not found: run `make build`", file=sys.stderr)
        return 2
    ok, reason = NetNS.available()
    if not ok:
        print(f"the demo needs a network namespace and iptables: {reason}", file=sys.stderr)
        return 2

    policy = json.loads(Path(args.policy).read_text())
    work = Path(tempfile.mkdtemp(prefix="egress-guard-demo-"))
    work.chmod(0o755)
    try:
        with ExitStack() as stack:
            return run(stack, work, wasm, policy, Path(args.policy))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(stack: ExitStack, work: Path, wasm: Path, policy: dict, policy_path: Path) -> int:
    envoy_cmd = find_envoy()
    # What Envoy reads goes into `work` (0755, in /tmp): uid 1337 may not enter the clone.
    module = share(wasm, work / "module")
    version = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version(envoy_cmd))
    print(f"egress-guard demo — Envoy {version.group(1) if version else '?'}, policy "
          f"{policy_path.relative_to(REPO) if policy_path.is_relative_to(REPO) else policy_path}"
          f" (mode {policy.get('mode', 'allowlist')})\n")
    ns = stack.enter_context(NetNS())
    cert = make_cert(work / "cert", ["github.com", "pypi.org", "example.com"])
    tls = dict(certfile=cert.certfile, keyfile=cert.keyfile)
    servers = {
        "github": TlsServer("127.0.0.10", 443, ns, label="github", **tls),
        "pypi": TlsServer("127.0.0.11", 443, ns, label="pypi", **tls),
        "mirror": HttpServer("127.0.0.12", 80, ns, label="deb.debian.org"),
        "db": TcpServer("127.0.0.13", 5432, netns=ns, label="orders-db"),
        "other-db": TcpServer("127.0.0.14", 3306, netns=ns, label="other-db"),
        "metadata": HttpServer("127.0.0.254", 80, ns, label="metadata"),
    }
    for server in servers.values():
        stack.enter_context(server)

    config = set_policy(set_module(shipped("sidecar-outbound.yaml"), module), policy)
    envoy = stack.enter_context(Envoy(config, work / "envoy", netns=ns, uid=PROXY_UID,
                                      envoy_cmd=envoy_cmd).start())
    # The stand-ins live on the namespace's loopback, which redirect.sh leaves alone unless told.
    ns.install_redirect(OUTBOUND_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                        intercept_loopback=True)
    print(f"app namespace {ns.name}: outbound TCP → Envoy :{OUTBOUND_PORT} (uid {PROXY_UID} exempt;"
          f" loopback intercepted: the stand-ins listen there)\n")

    cases = [
        ("TLS  github.com             → 127.0.0.10:443 ", "github",
         lambda: tls_client("127.0.0.10", 443, "github.com", b"git-upload-pack", netns=ns)),
        ("TLS  api.github.com         → 127.0.0.10:443 ", "github",
         lambda: tls_client("127.0.0.10", 443, "api.github.com", b"GET /repos", netns=ns)),
        ("TLS  files.pythonhosted.org → 127.0.0.11:443 ", "pypi",
         lambda: tls_client("127.0.0.11", 443, "files.pythonhosted.org", b"wheel", netns=ns)),
        ("TLS  exfil.example.com      → 127.0.0.10:443 ", "github",
         lambda: tls_client("127.0.0.10", 443, "exfil.example.com", b"secrets", netns=ns)),
        ("HTTP deb.debian.org         → 127.0.0.12:80  ", "mirror",
         lambda: http_request("127.0.0.12", 80, get("deb.debian.org"), netns=ns)),
        ("HTTP evil.example.com       → 127.0.0.12:80  ", "mirror",
         lambda: http_request("127.0.0.12", 80, get("evil.example.com"), netns=ns)),
        ("TCP  orders-db              → 127.0.0.13:5432", "db",
         lambda: tcp_exchange("127.0.0.13", 5432, b"SELECT 1", until=8, netns=ns)),
        ("TCP  unknown database       → 127.0.0.14:3306", "other-db",
         lambda: tcp_exchange("127.0.0.14", 3306, b"\x0a5.7", netns=ns)),
        ("HTTP cloud metadata         → 127.0.0.254:80 ", "metadata",
         lambda: http_request("127.0.0.254", 80, get("metadata.internal"), netns=ns)),
    ]
    print(f"{'app traffic':48} {'outcome':9} what the destination got")
    for label, server_name, send in cases:
        server = servers[server_name]
        before = sum(len(b) for b in server.received)
        result = send()
        got = sum(len(b) for b in server.received) - before
        passed = bool(getattr(result, "received", b"")) or getattr(result, "status", None) == 200
        print(f"  {label}  {'ALLOWED' if passed else 'DENIED':9} "
              f"{f'{got} bytes' if got else 'nothing'}")

    print("\negress-guard decision log (from Envoy's log):")
    for entry in decision_log(envoy, at_least=len(cases)):
        print("  " + json.dumps(entry))
    print("\negress-guard counters (/stats/prometheus):")
    for line in envoy.prometheus().splitlines():
        if line.startswith("egress_guard_") and not line.endswith(" 0"):
            print("  " + line)
    print("\nstopping Envoy, the servers and the namespace")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("note: the demo needs root (network namespace, iptables, Envoy as uid 1337)",
              file=sys.stderr)
    sys.exit(main())
