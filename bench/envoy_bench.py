#!/usr/bin/env python3
"""`make bench-envoy`: egress-guard through a real Envoy, side by side with no filter and with
Envoy's native RBAC network filter, in one run.

One Envoy (`--concurrency 1`, pinned to CPU 0) holds one listener per variant; the load generator
and the upstreams (bench/loadgen, pinned to CPU 1) drive them in turn, several rounds, the order
rotated each round, so a noisy neighbour hits every variant alike and ratios are taken within a
round. Variants (every listener: no `original_dst`, `tcp_proxy` to a STATIC cluster, the echo
upstream):

  none          tcp_proxy only
  none_tlsi     tls_inspector + tcp_proxy
  noop[_tlsi]   a Wasm filter that does nothing (bench/noop-filter), without/with tls_inspector:
                what any Wasm filter costs
  rbac_tlsi/N   tls_inspector + RBAC (N policies, `requested_server_name` + `destination_port`)
  eg_tlsi/N     tls_inspector + egress-guard (N rules): decides at connection open on the SNI
  eg_own/N      egress-guard (N rules) alone: parses the ClientHello itself
  eg_tlsi_pin/N eg_tlsi/N with every connection PINNED, as envoy/sidecar-outbound-pinned.yaml
                does it: `"pin": true`, sni_dynamic_forward_proxy and tcp_proxy's
                max_early_data_bytes, to a dynamic forward proxy cluster of its own. The SNI is
                `localhost` (the middle rule), which Envoy resolves from /etc/hosts, no network; the
                listener is on 127.0.0.K:P and the echo upstream on 127.0.0.1:P, so only a pinned
                connection (to the name, at the original port P) reaches it. tcp_proxy's default
                cluster goes nowhere, and the run fails unless every connection was pinned.

and for HTTP, keep-alive requests through the HTTP connection manager:

  http_none     router only
  http_noop     the no-op Wasm HTTP filter + router
  http_eg/N     egress-guard HTTP filter (N rules) + router

Then Envoy's memory with 10,000 rules against an empty policy and against no Wasm at all, each in
its own Envoy. Writes bench/results/envoy.json; bench/report.py renders it.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ENVOY_CPU, LOAD_CPU = "0", "1"

PROCS: list[subprocess.Popen] = []


def stop_all() -> None:
    """Stops every process this script started (each in its own process group)."""
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in PROCS:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    PROCS.clear()


def on_signal(signum: int, _frame: Any) -> None:
    stop_all()
    sys.exit(128 + signum)


def start(cmd: list[str], **kw: Any) -> subprocess.Popen:
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and os.cpu_count() >= 2 else cmd


# Tools ------------------------------------------------------------------------------------------

def find_envoy() -> str:
    for candidate in (os.environ.get("ENVOY_BIN"), shutil.which("envoy"), str(REPO / ".venv/bin/envoy")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("envoy not found: set ENVOY_BIN, put envoy on PATH, or run `make venv`")


def cargo_target_dir(manifest: Path) -> Path:
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps",
                           "--manifest-path", str(manifest)],
                          check=True, capture_output=True, text=True)
    return Path(json.loads(meta.stdout)["target_directory"])


def build_loadgen() -> Path:
    manifest = REPO / "bench" / "loadgen" / "Cargo.toml"
    subprocess.run(["cargo", "build", "--quiet", "--release", "--locked", "--manifest-path", str(manifest)],
                   check=True)
    return cargo_target_dir(manifest) / "release" / "egress-guard-loadgen"


def build_noop() -> Path:
    """bench/noop-filter: a proxy-wasm filter that does nothing, the cost of any Wasm filter."""
    manifest = REPO / "bench" / "noop-filter" / "Cargo.toml"
    subprocess.run(["cargo", "build", "--quiet", "--release", "--locked", "--target", "wasm32-wasip1",
                    "--manifest-path", str(manifest)], check=True)
    return cargo_target_dir(manifest) / "wasm32-wasip1" / "release" / "noop_filter.wasm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Policies ---------------------------------------------------------------------------------------

SYLLABLES = ["al", "be", "cor", "da", "el", "fin", "ga", "hub", "io", "jet", "ka", "lo", "mi", "net",
             "or", "pa", "qu", "ro", "sta", "tor", "un", "ve", "wa", "xe", "yo", "zen"]
TLDS = ["com", "net", "org", "io", "dev", "cloud", "co.uk", "de"]
SUBS = ["api", "www", "cdn", "auth", "registry", "static", "upload", "login"]


def sni_rules(n: int, seed: int = 0x5EED) -> tuple[list[str], str]:
    """`n` host patterns, one per rule (60% exact names, 40% `*.` wildcards, every domain distinct),
    and the SNI the load sends: the exact name of the rule in the middle of the list."""
    rng = random.Random(seed)
    patterns = []
    for i in range(n):
        domain = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) + f"{i}." + rng.choice(TLDS)
        exact = rng.random() < 0.6 or i == n // 2
        patterns.append(f"{rng.choice(SUBS)}.{domain}" if exact else f"*.{domain}")
    return patterns, patterns[n // 2]


def eg_policy(patterns: list[str], port: int, pin: dict[str, Any] | None = None) -> str:
    """The allowlist of `patterns` on `port`; `pin`: the pinning keys to add (`pin`, `pin_cluster`,
    `sniff`)."""
    return json.dumps({
        "mode": "allowlist",
        "allow": [{"name": f"r{i:05d}", "hosts": [p], "ports": [port]} for i, p in enumerate(patterns)],
        "deny": [{"name": "cloud-metadata", "cidrs": ["169.254.169.254/32", "fd00:ec2::254/128"]}],
        "log": "denied",
        **(pin or {}),
    })


# A name Envoy resolves without a network (/etc/hosts) to the loopback address of the pinned
# variants' echo upstream.
PIN_NAME = "localhost"
PIN_ADDRESS = "127.0.0.1"


def pin_rules(n: int) -> tuple[list[str], str]:
    """`sni_rules(n)` with the middle rule (the one the load hits) allowing PIN_NAME instead."""
    patterns, _ = sni_rules(n)
    patterns[n // 2] = PIN_NAME
    return patterns, PIN_NAME


def rbac_filter(patterns: list[str], port: int) -> dict[str, Any]:
    """Envoy's RBAC network filter allowing exactly what `eg_policy` allows (SNI and port); one
    policy per rule, as Istio writes one per AuthorizationPolicy rule."""
    def sni(p: str) -> dict[str, Any]:
        return {"suffix": p[1:]} if p.startswith("*.") else {"exact": p}
    return {
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "bench",
            "rules": {"action": "ALLOW", "policies": {
                f"r{i:05d}": {
                    "permissions": [{"and_rules": {"rules": [
                        {"destination_port": port},
                        {"requested_server_name": sni(p)},
                    ]}}],
                    "principals": [{"any": True}],
                } for i, p in enumerate(patterns)
            }},
        },
    }


# Envoy configuration ---------------------------------------------------------------------------

def shipped_parts() -> dict[str, Any]:
    """The Wasm filter, tcp_proxy and listener-filter settings of the shipped configs, so the
    benchmark runs what users run."""
    net = yaml.safe_load((REPO / "envoy" / "sidecar-outbound.yaml").read_text())
    http = yaml.safe_load((REPO / "envoy" / "sidecar-outbound-http.yaml").read_text())
    lst = net["static_resources"]["listeners"][0]
    filters = lst["filter_chains"][0]["filters"]
    tlsi = [f for f in lst["listener_filters"] if f["name"] == "envoy.filters.listener.tls_inspector"][0]
    hcm = http["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    pinned_cfg = yaml.safe_load((REPO / "envoy" / "sidecar-outbound-pinned.yaml").read_text())
    pin_filters = pinned_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    pin_policy = json.loads(pin_filters[0]["typed_config"]["config"]["configuration"]["value"])
    pin_cluster = [c for c in pinned_cfg["static_resources"]["clusters"]
                   if c["name"] == pin_policy.get("pin_cluster", "egress_guard_pinned")][0]
    return {
        "pin_sni_dfp": [f for f in pin_filters if f["name"] == "envoy.filters.network.sni_dynamic_forward_proxy"][0],
        "pin_tcp_proxy": [f for f in pin_filters if f["name"] == "envoy.filters.network.tcp_proxy"][0],
        "pin_cluster": pin_cluster,
        "pin_policy": {"pin": pin_policy["pin"], "sniff": pin_policy["sniff"]},
        "wasm": filters[0], "tcp_proxy": filters[1], "tls_inspector": tlsi,
        "listener_filters_timeout": lst["listener_filters_timeout"],
        "continue_on_listener_filters_timeout": lst["continue_on_listener_filters_timeout"],
        "hcm": hcm, "stats_config": net["stats_config"],
    }


def wasm_filter(parts: dict[str, Any], wasm: Path, policy: str, vm_id: str, http: bool) -> dict[str, Any]:
    if http:
        f = copy.deepcopy(parts["hcm"]["typed_config"]["http_filters"][0])
    else:
        f = copy.deepcopy(parts["wasm"])
    cfg = f["typed_config"]["config"]
    cfg["vm_config"]["vm_id"] = vm_id
    cfg["vm_config"]["code"]["local"]["filename"] = str(wasm)
    cfg["configuration"]["value"] = policy
    return f


def noop_filter(parts: dict[str, Any], noop: Path, vm_id: str, http: bool) -> dict[str, Any]:
    """The no-op Wasm filter, configured like egress-guard (same runtime, failure policy)."""
    f = wasm_filter(parts, noop, "", vm_id, http)
    cfg = f["typed_config"]["config"]
    cfg["name"] = cfg["root_id"] = "noop-http" if http else "noop-tcp"
    return f


def tcp_listener(parts: dict[str, Any], name: str, port: int, filters: list[dict[str, Any]],
                 tls_inspector: bool, address: str = "127.0.0.1", tcp_proxy_key: str = "tcp_proxy",
                 cluster: str = "echo") -> dict[str, Any]:
    tcp_proxy = copy.deepcopy(parts[tcp_proxy_key])
    tcp_proxy["typed_config"]["cluster"] = cluster
    tcp_proxy["typed_config"]["stat_prefix"] = name
    lst: dict[str, Any] = {
        "name": name, "stat_prefix": name,
        "address": {"socket_address": {"address": address, "port_value": port}},
        "filter_chains": [{"filters": [*filters, tcp_proxy]}],
    }
    if tls_inspector:
        lst["listener_filters"] = [copy.deepcopy(parts["tls_inspector"])]
        lst["listener_filters_timeout"] = parts["listener_filters_timeout"]
        lst["continue_on_listener_filters_timeout"] = parts["continue_on_listener_filters_timeout"]
    return lst


def pinned_listener(parts: dict[str, Any], wasm: Path, name: str, address: str, port: int, n: int,
                    cluster: str) -> dict[str, Any]:
    """eg_tlsi with the shipped pinned chain: egress-guard pinning to `cluster`, then
    sni_dynamic_forward_proxy sharing that cluster's DNS cache, then tcp_proxy (with
    max_early_data_bytes) whose own cluster `unpinned` refuses every connection."""
    patterns, _ = pin_rules(n)
    policy = eg_policy(patterns, port, {**parts["pin_policy"], "pin_cluster": cluster})
    dfp = copy.deepcopy(parts["pin_sni_dfp"])
    dfp["typed_config"]["dns_cache_config"] = pin_cluster(parts, cluster)["cluster_type"]["typed_config"][
        "dns_cache_config"]
    return tcp_listener(parts, name.replace("/", "_"), port, [wasm_filter(parts, wasm, policy, cluster, False), dfp],
                        True, address=address, tcp_proxy_key="pin_tcp_proxy", cluster="unpinned")


def pin_cluster(parts: dict[str, Any], name: str) -> dict[str, Any]:
    """The shipped dynamic forward proxy cluster, renamed, with a DNS cache of the same name."""
    c = copy.deepcopy(parts["pin_cluster"])
    c["name"] = name
    c["cluster_type"]["typed_config"]["dns_cache_config"]["name"] = name
    return c


def http_listener(parts: dict[str, Any], name: str, port: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    hcm = copy.deepcopy(parts["hcm"])
    tc = hcm["typed_config"]
    tc["stat_prefix"] = name
    tc["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = "http_upstream"
    router = [f for f in tc["http_filters"] if f["name"] == "envoy.filters.http.router"]
    tc["http_filters"] = [*filters, *router]
    return {
        "name": name, "stat_prefix": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [hcm]}],
    }


def static_cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }


def bootstrap(parts: dict[str, Any], listeners: list[dict[str, Any]], echo_port: int,
              http_port: int, clusters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": parts["stats_config"],
        "static_resources": {
            "listeners": listeners,
            "clusters": [static_cluster("echo", echo_port), static_cluster("http_upstream", http_port),
                         *(clusters or [])],
        },
    }


class Envoy:
    """One Envoy process on CPU 0, stopped by `close()` (and by the script's exit handlers)."""

    def __init__(self, envoy: str, config: dict[str, Any], workdir: Path, tag: str):
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "envoy.json"
        cfg.write_text(json.dumps(config))
        self.admin_file = self.dir / "admin"
        self.log = self.dir / "envoy.log"
        # The log goes to stderr (flushed per line), not --log-path (flushed every few seconds).
        with self.log.open("w") as log:
            self.proc = start(pinned(ENVOY_CPU, [
                envoy, "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1",
                "--admin-address-path", str(self.admin_file), "--log-level", "info",
            ]), stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited ({self.proc.returncode}); see {self.log}:\n"
                                   + self.log.read_text()[-3000:])
            if time.time() > deadline:
                raise RuntimeError(f"envoy not ready after 60 s; see {self.log}")
            if self.admin_file.exists() and self.admin_file.read_text().strip():
                try:
                    if self.get("/ready").strip() == "LIVE":
                        break
                except OSError:
                    pass
            time.sleep(0.1)

    def get(self, path: str) -> str:
        addr = self.admin_file.read_text().strip()
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
            return r.read().decode()

    def stats(self) -> dict[str, int]:
        out = {}
        for line in self.get("/stats?usedonly").splitlines():
            name, _, value = line.rpartition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def cpu_ns(self) -> int:
        return cpu_ns(self.proc.pid)

    def close(self) -> None:
        stop(self.proc)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process (and of a `taskset` child's exec'd image), in ns."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


# Runs -------------------------------------------------------------------------------------------

def run_load(loadgen: Path, kind: str, port: int, target: str, conc: int, secs: float,
             address: str = "127.0.0.1") -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(pinned(LOAD_CPU, [str(loadgen), kind, f"{address}:{port}", target, str(conc), str(secs)]),
                         check=True, capture_output=True, text=True, timeout=secs + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.stdout)
    res["loadgen_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


def check_pinned(stats: dict[str, int], ops: dict[str, int], clusters: dict[str, str]) -> None:
    """Fails the run unless every connection of the pinned variants was pinned: egress-guard
    counted a pin for each, each variant's pin cluster opened an upstream connection for each,
    and tcp_proxy's default cluster (`unpinned`) opened none."""
    pinned = stats.get("wasmcustom.outcome=.=pinned;.;egress_guard_pin_total", 0)
    problems = []
    if pinned < sum(ops.values()):
        problems.append(f"egress_guard_pin_total{{outcome=pinned}} = {pinned} < {sum(ops.values())} connections")
    for name, cluster in clusters.items():
        cx = stats.get(f"cluster.{cluster}.upstream_cx_total", 0)
        if cx < ops[name]:
            problems.append(f"{name}: cluster.{cluster}.upstream_cx_total = {cx} < {ops[name]} connections")
    if stats.get("cluster.unpinned.upstream_cx_total", 0):
        problems.append(f"cluster.unpinned.upstream_cx_total = {stats['cluster.unpinned.upstream_cx_total']}")
    if problems:
        raise RuntimeError("pinned variants were not (all) pinned: " + "; ".join(problems))
    print(f"pinned: egress_guard_pin_total{{outcome=pinned}} = {pinned} for {sum(ops.values())} connections; "
          + ", ".join(f"{c} {stats.get(f'cluster.{c}.upstream_cx_total', 0)}" for c in clusters.values()), flush=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "loadavg_start": os.getloadavg()}


def measure_memory(envoy: str, parts: dict[str, Any], wasm: Path, work: Path, echo_port: int, http_port: int,
                   rounds: int) -> list[dict[str, Any]]:
    """Envoy's memory with no Wasm, with egress-guard and an empty policy, with 10,000 and with
    100,000 rules, each case its own idle Envoy, `rounds` starts each."""
    mem_port = free_port()
    patterns, _ = sni_rules(10_000)
    mem_cases = {
        "no_wasm": [],
        "empty_policy": [wasm_filter(parts, wasm, "{}", "mem", False)],
        "rules_10000": [wasm_filter(parts, wasm, eg_policy(patterns, mem_port), "mem", False)],
        "rules_100000": [wasm_filter(parts, wasm, eg_policy(sni_rules(100_000)[0], mem_port), "mem", False)],
    }
    memory = []
    for r in range(rounds):
        for case, filters in mem_cases.items():
            cfg = bootstrap(parts, [tcp_listener(parts, "mem", mem_port, filters, True)], echo_port, http_port)
            e = Envoy(envoy, cfg, work, f"mem-{case}-{r}")
            try:
                time.sleep(1.0)
                mem = json.loads(e.get("/memory"))
                rss_kb = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{e.proc.pid}/status").read_text()).group(1))
                # One line per VM (main thread and worker): compile time and linear memory.
                loaded = [{"compile_ms": float(m.group(1)), "wasm_memory": int(m.group(2)) * 1024}
                          for m in re.finditer(r"policy loaded in ([\d.]+) ms, Wasm memory (\d+) KiB",
                                               e.log.read_text())]
                memory.append({"case": case, "round": r, "allocated": int(mem["allocated"]),
                               "heap_size": int(mem["heap_size"]), "rss": rss_kb * 1024, "vm": loaded})
                print(f"memory {case:>13}: allocated {int(mem['allocated']) / 2**20:6.1f} MiB "
                      f"heap {int(mem['heap_size']) / 2**20:6.1f} MiB rss {rss_kb / 1024:6.1f} MiB {loaded}",
                      flush=True)
            finally:
                e.close()
    return memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", type=Path, required=True)
    ap.add_argument("--rules", default="10,1000,10000", help="rule counts (comma-separated)")
    ap.add_argument("--http-rules", default="10,10000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of one measurement")
    ap.add_argument("--concurrency", type=int, default=16, help="connections in flight (TCP)")
    ap.add_argument("--http-concurrency", type=int, default=16)
    ap.add_argument("--memory-rounds", type=int, default=3, help="0: skip the memory cases")
    ap.add_argument("--out", type=Path, default=RESULTS / "envoy.json")
    ap.add_argument("--memory-only", action="store_true",
                    help="only the memory cases (no load, no loadgen build): replaces the memory and "
                         "module size of the results in --out, noting when they were collected")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(stop_all)

    wasm = args.wasm.resolve()
    if not wasm.is_file():
        sys.exit(f"{wasm}: no such module (make build)")
    envoy = find_envoy()
    version = subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout.strip()
    # Only what follows "version:" (the binary's own path, first on the line, is one machine's).
    version = "envoy  version:" + version.split("version:", 1)[-1]
    if args.memory_only:
        work = Path(tempfile.mkdtemp(prefix="egress-guard-bench-"))
        atexit.register(shutil.rmtree, work, True)
        # No traffic: the clusters' ports are never connected to.
        memory = measure_memory(envoy, shipped_parts(), wasm, work, free_port(), free_port(), args.memory_rounds)
        result = json.loads(args.out.read_text())
        result.update(memory=memory, wasm_bytes=wasm.stat().st_size,
                      memory_collected=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    loadgen = build_loadgen()
    noop = build_noop()
    parts = shipped_parts()
    sizes = [int(n) for n in args.rules.split(",") if n]
    http_sizes = [int(n) for n in args.http_rules.split(",") if n]
    work = Path(tempfile.mkdtemp(prefix="egress-guard-bench-"))
    atexit.register(shutil.rmtree, work, True)

    echo = start(pinned(LOAD_CPU, [str(loadgen), "echo", "127.0.0.1:0"]), stdout=subprocess.PIPE, text=True)
    http_up = start(pinned(LOAD_CPU, [str(loadgen), "http-server", "127.0.0.1:0"]), stdout=subprocess.PIPE, text=True)
    echo_port = int(echo.stdout.readline())
    http_port = int(http_up.stdout.readline())
    # The pinned variants' upstream: what PIN_NAME resolves to, at the port of their listeners.
    pin_echo = start(pinned(LOAD_CPU, [str(loadgen), "echo", f"{PIN_ADDRESS}:0"]), stdout=subprocess.PIPE, text=True)
    pin_port = int(pin_echo.stdout.readline())
    upstreams = (echo, http_up, pin_echo)

    # One listener per variant.
    variants: list[dict[str, Any]] = []
    listeners = []
    clusters = [static_cluster("unpinned", free_port())]  # nothing listens there

    def add(name: str, kind: str, rules: int | None, lst_fn, target: str, address: str = "127.0.0.1",
            port: int | None = None, cluster: str | None = None) -> None:
        port = port or free_port()
        listeners.append(lst_fn(port))
        variants.append({"name": name, "kind": kind, "rules": rules, "port": port, "target": target,
                         "address": address, "pin_cluster": cluster})

    _, sni10 = sni_rules(10)
    add("none", "tcp", None, lambda p: tcp_listener(parts, "none", p, [], False), sni10)
    add("none_tlsi", "tcp", None, lambda p: tcp_listener(parts, "none_tlsi", p, [], True), sni10)
    add("noop", "tcp", None, lambda p: tcp_listener(parts, "noop", p, [noop_filter(parts, noop, "noop", False)],
                                                   False), sni10)
    add("noop_tlsi", "tcp", None, lambda p: tcp_listener(
        parts, "noop_tlsi", p, [noop_filter(parts, noop, "noop_tlsi", False)], True), sni10)
    for n in sizes:
        patterns, sni = sni_rules(n)
        add(f"rbac_tlsi/{n}", "tcp", n,
            lambda p, pt=patterns, n=n: tcp_listener(parts, f"rbac_tlsi_{n}", p, [rbac_filter(pt, p)], True), sni)
        add(f"eg_tlsi/{n}", "tcp", n,
            lambda p, pt=patterns, n=n: tcp_listener(
                parts, f"eg_tlsi_{n}", p, [wasm_filter(parts, wasm, eg_policy(pt, p), f"eg_tlsi_{n}", False)], True),
            sni)
        add(f"eg_own/{n}", "tcp", n,
            lambda p, pt=patterns, n=n: tcp_listener(
                parts, f"eg_own_{n}", p, [wasm_filter(parts, wasm, eg_policy(pt, p), f"eg_own_{n}", False)], False),
            sni)
    for k, n in enumerate(sizes):
        # 127.0.0.2, .3, ...: the listener and the echo upstream share the port, not the address.
        address, cluster = f"127.0.0.{2 + k}", f"pin_{n}"
        clusters.append(pin_cluster(parts, cluster))
        add(f"eg_tlsi_pin/{n}", "tcp", n,
            lambda p, a=address, c=cluster, n=n: pinned_listener(parts, wasm, f"eg_tlsi_pin/{n}", a, p, n, c),
            PIN_NAME, address=address, port=pin_port, cluster=cluster)
    add("http_none", "http", None, lambda p: http_listener(parts, "http_none", p, []), sni10)
    add("http_noop", "http", None, lambda p: http_listener(
        parts, "http_noop", p, [noop_filter(parts, noop, "http_noop", True)]), sni10)
    for n in http_sizes:
        patterns, host = sni_rules(n)
        add(f"http_eg/{n}", "http", n,
            lambda p, pt=patterns, n=n: http_listener(
                parts, f"http_eg_{n}", p, [wasm_filter(parts, wasm, eg_policy(pt, p), f"http_eg_{n}", True)]),
            host)

    result: dict[str, Any] = {
        "machine": machine(), "envoy": version, "wasm_bytes": wasm.stat().st_size,
        "params": {"rounds": args.rounds, "seconds": args.seconds, "concurrency": args.concurrency,
                   "http_concurrency": args.http_concurrency, "envoy_cpu": ENVOY_CPU, "load_cpu": LOAD_CPU,
                   "pinned": bool(shutil.which("taskset"))},
        "variants": [{k: v[k] for k in ("name", "kind", "rules")} for v in variants],
        "runs": [],
    }
    started = time.time()
    env = Envoy(envoy, bootstrap(parts, listeners, echo_port, http_port, clusters), work, "main")
    pinned_ops = {v["name"]: 0 for v in variants if v["pin_cluster"]}
    try:
        # Warm up every listener (V8 tiers up hot Wasm functions).
        for v in variants:
            conc = args.concurrency if v["kind"] == "tcp" else args.http_concurrency
            warm = run_load(loadgen, v["kind"], v["port"], v["target"], conc, 0.5, v["address"])
            if warm["ops"] == 0 or warm["errors"] > 0:
                raise RuntimeError(f"{v['name']}: warm-up failed: {warm}")
            if v["name"] in pinned_ops:
                pinned_ops[v["name"]] += warm["ops"]
        for r in range(args.rounds):
            shift = r * len(variants) // args.rounds
            order = variants[shift:] + variants[:shift]
            for v in order:
                conc = args.concurrency if v["kind"] == "tcp" else args.http_concurrency
                e0, u0 = env.cpu_ns(), sum(cpu_ns(u.pid) for u in upstreams)
                res = run_load(loadgen, v["kind"], v["port"], v["target"], conc, args.seconds, v["address"])
                e1, u1 = env.cpu_ns(), sum(cpu_ns(u.pid) for u in upstreams)
                if v["name"] in pinned_ops:
                    pinned_ops[v["name"]] += res["ops"]
                res.update(variant=v["name"], round=r, envoy_cpu_s=(e1 - e0) / 1e9,
                           upstream_cpu_s=(u1 - u0) / 1e9, loadavg=os.getloadavg()[0])
                res["envoy_cpu_us_per_op"] = (e1 - e0) / 1e3 / max(1, res["ops"])
                # Near 1.0: Envoy's core was the limit; well below: the load side or a neighbour.
                res["envoy_util"] = (e1 - e0) / 1e9 / res["elapsed_s"]
                result["runs"].append(res)
                print(f"round {r} {v['name']:>16}: {res['rate']:9.0f}/s p50 {res['p50_us']:5d} µs "
                      f"p99 {res['p99_us']:6d} µs envoy {res['envoy_cpu_us_per_op']:5.1f} µs/op "
                      f"({100 * res['envoy_util']:3.0f}% busy, load side {res['loadgen_cpu_s'] + res['upstream_cpu_s']:.2f} s) "
                      f"errors {res['errors']}", flush=True)
        stats = env.stats()
        result["stats"] = {k: v for k, v in stats.items()
                           if "egress_guard_decisions_total" in k or "egress_guard_pin_total" in k
                           or re.search(r"rbac\.(allowed|denied)", k)
                           or re.fullmatch(r"cluster\.(pin_\d+|unpinned)\.upstream_cx_(total|connect_fail)", k)}
        result["pinned_ops"] = pinned_ops
        check_pinned(stats, pinned_ops, {v["name"]: v["pin_cluster"] for v in variants if v["pin_cluster"]})
    finally:
        env.close()
    result["load_seconds"] = time.time() - started

    result["memory"] = measure_memory(envoy, parts, wasm, work, echo_port, http_port, args.memory_rounds)
    result["machine"]["loadavg_end"] = os.getloadavg()
    stop_all()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
