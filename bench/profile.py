#!/usr/bin/env python3
"""`make bench-profile`: where Envoy's CPU time per connection (and per HTTP request) goes, for
egress-guard against the no-op Wasm filter, in one Envoy.

One Envoy (`--concurrency 1`, pinned to CPU 0, as in bench/envoy_bench.py) holds a listener per
variant; the load (bench/loadgen, pinned to CPU 1) drives them in turn:

  none_tlsi       tls_inspector + tcp_proxy
  noop_tlsi       tls_inspector + the no-op Wasm filter
  calls_tlsi      tls_inspector + the no-op filter making, per connection, the hostcalls
                  egress-guard makes on an allowed connection (CALLS_TCP) and nothing else
  eg_tlsi/N       tls_inspector + egress-guard (N rules)
  http_noop, http_calls (CALLS_HTTP), http_eg/N   the same for the HTTP filter, keep-alive requests

Two passes. (1) Envoy's CPU time per operation (all its threads, from /proc schedstat), several
alternating rounds, the order rotated each round; medians and the spread. (2) One
`perf record -e cpu-clock -g` of Envoy per variant, its samples split by where the sampled
instruction is: V8's code (the Wasm modules compiled, and V8's wrappers: anonymous executable
memory, unsymbolized), Envoy's binary called from that code (hostcalls: a Wasm frame in the
call chain), Envoy's binary otherwise, the kernel, and other libraries. The calls_* variants tell
apart what egress-guard's hostcalls cost Envoy (calls − noop) from egress-guard's own code
(eg − calls). Writes bench/results/profile.json and prints a summary.
"""

from __future__ import annotations

import argparse
import bisect
import atexit
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_bench as eb  # noqa: E402

# The hostcalls egress-guard makes for a connection tls_inspector already read the SNI of, and
# that its policy allows (src/filter/stream.rs, record.rs, root.rs get_type): the context's
# type, the original destination, the SNI, the sniff outcome, decision and rule counters. (No
# clock: it is read only for a connection held for its first bytes.)
CALLS_TCP = ("property:request.protocol,property:destination.address,"
             "property:connection.requested_server_name,counter,counter,counter")
# For one allowed request (src/filter/http.rs): the context's type, the destination, the route's
# cluster, the decision and rule counters.
CALLS_HTTP = ("property:request.protocol,header::authority,property:destination.address,"
              "property:xds.cluster_name,counter,counter")

# One kind of hostcall, REPEAT times per connection: what one costs Envoy, and (in the perf pass)
# which of Envoy's functions it enters, to name the hostcalls in the other profiles.
REPEAT = 4
CALIBRATION = {"get_property": "property:destination.address", "get_current_time": "time",
               "increment_metric": "counter"}

BOUNDARY = -1  # a hostcall sample in the callback every hostcall enters (argument conversion)
PERIOD_NS = 100_000  # one cpu-clock sample per 100 µs of CPU time


def calls_filter(parts: dict[str, Any], noop: Path, vm_id: str, http: bool, calls: str) -> dict[str, Any]:
    f = eb.noop_filter(parts, noop, vm_id, http)
    f["typed_config"]["config"]["configuration"]["value"] = calls
    return f


class Functions:
    """Envoy's functions, unnamed (the binary is stripped), as the ranges of its .eh_frame FDEs
    (`perf script` shows frames in the binary at their link-time addresses), and V8's code: the
    process's anonymous executable mappings."""

    def __init__(self, binary: str, pid: int):
        frames = subprocess.run(["readelf", "--debug-dump=frames", binary], capture_output=True,
                                text=True).stdout
        ranges = {int(a, 16): int(b, 16) for a, b in re.findall(r"pc=([0-9a-f]+)\.\.([0-9a-f]+)", frames)}
        self.starts = sorted(ranges)
        self.ends = ranges
        self.pid = pid
        self.jit: list[tuple[int, int]] = []
        self.refresh()

    def refresh(self) -> None:
        """Reads where V8's code is now."""
        self.jit = []
        for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
            f = line.split()
            if "x" in f[1] and (len(f) < 6 or f[5].startswith("[anon")):
                lo, hi = (int(x, 16) for x in f[0].split("-"))
                self.jit.append((lo, hi))

    def of(self, va: int) -> int | None:
        """The start of the function holding link-time address `va`, if an FDE covers it."""
        i = bisect.bisect_right(self.starts, va) - 1
        if i >= 0 and va < self.ends[self.starts[i]]:
            return self.starts[i]
        return None

    def is_jit(self, ip: int, dso: str) -> bool:
        # perf names anonymous executable memory after the (absent) JIT map /tmp/perf-PID.map.
        if dso.startswith("//anon") or (Path(dso).name.startswith("perf-") and dso.endswith(".map")):
            return True
        return dso == "[unknown]" and any(lo <= ip < hi for lo, hi in self.jit)


def classify(script: str, envoy_bin: str, fns: Functions) -> tuple[Counter, Counter, Counter]:
    """Splits `perf script` samples (leaf frame first) by where the sampled instruction is; and
    the samples in Envoy called from Wasm (hostcalls) by the Envoy function the Wasm code called;
    and the samples in V8's code by the Envoy function that entered the VM."""
    out: Counter = Counter()
    hostcalls: Counter = Counter()
    entries: Counter = Counter()
    for block in script.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if len(lines) < 2:
            continue
        frames = []
        for ln in lines[1:]:
            # "\t    7f12abcd [unknown] (/path/to/dso)"
            parts = ln.split()
            dso = ln.rsplit("(", 1)[-1].rstrip(")") if ln.rstrip().endswith(")") else "?"
            try:
                frames.append((int(parts[0], 16), dso))
            except (ValueError, IndexError):
                continue
        if not frames:
            continue
        leaf_ip, leaf = frames[0]
        jit = [fns.is_jit(ip, d) for ip, d in frames]
        out["total"] += 1
        if leaf.startswith("[kernel") or leaf.startswith("[vdso]"):
            out["kernel"] += 1
        elif jit[0]:
            out["v8_code"] += 1
            # The first frame in Envoy's binary with a known function, above the Wasm frames.
            k = next((i for i, x in enumerate(jit) if not x), len(frames))
            fn = next((f for f in (fns.of(ip) for ip, d in frames[k:] if d == envoy_bin) if f), None)
            entries[fn] += 1
        elif leaf == envoy_bin:
            j = next((i for i, x in enumerate(jit) if x), None)
            if j is None:
                out["envoy_other"] += 1
            else:
                out["envoy_from_wasm"] += 1
                # Below the Wasm code, every hostcall enters the same function of Envoy's (V8's C
                # API callback, which converts the arguments); the next known function down is
                # the hostcall's own. A sample in the callback itself is the boundary's.
                outer = [f for f in (fns.of(ip) for ip, d in reversed(frames[:j]) if d == envoy_bin) if f]
                hostcalls[outer[1] if len(outer) > 1 else BOUNDARY] += 1
        else:
            out["other_libs"] += 1
    return out, hostcalls, entries


def wasm_alone(wasm: Path, noop: Path, sizes: list[int], work: Path) -> dict[str, Any]:
    """The modules without Envoy (bench/wasm_conn.mjs: Node's V8, a stub host whose hostcalls cost
    next to nothing), ns per connection, median of 5 runs: the filter's own Wasm code."""
    node = shutil.which("node")
    if not node:
        return {}
    script = Path(__file__).resolve().parent / "wasm_conn.mjs"
    cases: dict[str, tuple[Path, str, str]] = {"noop": (noop, "-", eb.sni_rules(10)[1])}
    for n in sizes:
        patterns, sni = eb.sni_rules(n)
        cfg = work / f"policy_{n}.json"
        cfg.write_text(eb.eg_policy(patterns, 443))
        cases[f"eg/{n}"] = (wasm, str(cfg), sni)
    out: dict[str, Any] = {}
    for name, (module, cfg, sni) in cases.items():
        xs = []
        for _ in range(5):
            run = subprocess.run(eb.pinned(eb.ENVOY_CPU, [node, "--no-warnings", str(script), str(module), cfg, sni,
                                                          "443", "50000"]),
                                 capture_output=True, text=True, timeout=300)
            if run.returncode != 0:
                print(f"wasm_conn {name}: {run.stderr.strip()[-300:]}", file=sys.stderr)
                break
            xs.append(json.loads(run.stdout)["ns_per_conn"])
        if xs:
            out[name] = {"median_ns": statistics.median(xs), "min_ns": min(xs), "max_ns": max(xs)}
            print(f"wasm alone {name:>9}: {statistics.median(xs):7.0f} ns/conn [{min(xs):.0f}–{max(xs):.0f}]",
                  flush=True)
    return out


def perf_pass(env: Any, v: dict[str, Any], loadgen: Path, args: Any, work: Path, envoy_bin: str,
              fns: Functions) -> dict[str, Any]:
    """One `perf record` of Envoy while the load drives one variant."""
    data = work / f"{v['name'].replace('/', '_')}.perf"
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-c", str(PERIOD_NS), "-g",
                             "-p", str(env.proc.pid), "-o", str(data), "--", "sleep", str(args.perf_seconds + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    e0 = env.cpu_ns()
    res = eb.run_load(loadgen, v["kind"], v["port"], v["target"], args.concurrency, args.perf_seconds)
    e1 = env.cpu_ns()
    perf.wait()
    fns.refresh()
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,tid,ip,dso"],
                            capture_output=True, text=True).stdout
    data.unlink(missing_ok=True)
    split, hostcalls, entries = classify(script, envoy_bin, fns)
    ops = max(1, res["ops"])
    us = PERIOD_NS / 1e3 / ops
    print(f"perf {v['name']:>22}: " + " ".join(f"{k} {c * us:5.1f}" for k, c in sorted(split.items())), flush=True)
    return {
        "ops": res["ops"], "samples": dict(split),
        "envoy_cpu_us_per_op": (e1 - e0) / 1e3 / ops,
        "us_per_op": {k: c * us for k, c in split.items()},
        "hostcalls_us_per_op": {("boundary" if f == BOUNDARY else hex(f) if f else "?"): c * us
                                for f, c in hostcalls.most_common()},
        "vm_entries_us_per_op": {hex(f) if f else "?": c * us for f, c in entries.most_common(12)},
    }


COMMON = ("envoy_other", "kernel", "other_libs")


def median_dict(ds: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for d in ds for k in d}
    return {k: statistics.median([d.get(k, 0.0) for d in ds]) for k in keys}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        xs = [r["envoy_cpu_us_per_op"] for r in runs if r["variant"] == name]
        out[name] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs),
                     "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}
    return out


def normalize(passes: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> dict[str, Any]:
    """Per variant: the medians over perf passes, raw, and normalized. The neighbours slow the
    whole of Envoy at once, so each pass's buckets are taken relative to its work common to every
    variant of its kind (Envoy's other code, the kernel, other libraries: the same listener and
    load) and scaled to that work's size in the no-op filter's rounds without perf (its CPU/op
    median times its common share under perf)."""
    out: dict[str, Any] = {}
    for kind, base in (("tcp", "noop_tlsi"), ("http", "http_noop")):
        if base not in passes or base not in summary:
            continue
        b = median_dict([p["us_per_op"] for p in passes[base]])
        common_us = summary[base]["median"] * sum(b.get(k, 0.0) for k in COMMON) / max(1e-9, b.get("total", 0.0))
        for name, ps in passes.items():
            if name.startswith("http_") != (kind == "http"):
                continue

            def rel(p: dict[str, Any], key: str) -> dict[str, float]:
                c = sum(p["us_per_op"].get(k, 0.0) for k in COMMON) or 1e-9
                return {k: x / c * common_us for k, x in p[key].items()}
            out[name] = {
                "passes": ps,
                "us_per_op": median_dict([p["us_per_op"] for p in ps]),
                "hostcalls_named_us_per_op": median_dict([p["hostcalls_named_us_per_op"] for p in ps]),
                "normalized_us_per_op": median_dict([rel(p, "us_per_op") for p in ps]),
                "normalized_hostcalls_us_per_op": median_dict([rel(p, "hostcalls_named_us_per_op") for p in ps]),
                "common_us": common_us,
            }
    return out


def name_hostcalls(profiles: dict[str, Any]) -> dict[str, str]:
    """Names Envoy's hostcall functions: the one that gains most under each calibration variant
    (REPEAT calls of one kind per connection) over the no-op filter."""
    base = profiles.get("noop_tlsi", {}).get("hostcalls_us_per_op", {})
    names: dict[str, str] = {"boundary": "boundary"}
    for call in CALIBRATION:
        prof = profiles.get(f"x{REPEAT}_{call}")
        if not prof:
            continue
        gains = {fn: x - base.get(fn, 0.0) for fn, x in prof["hostcalls_us_per_op"].items()
                 if fn not in ("?", "boundary")}
        if gains:
            names[max(gains, key=gains.get)] = call
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", type=Path, required=True)
    ap.add_argument("--rules", default="10,10000")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--perf-seconds", type=float, default=5.0, help="0: no perf pass")
    ap.add_argument("--perf-rounds", type=int, default=3, help="perf passes per variant, order rotated")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", type=Path, default=eb.RESULTS / "profile.json")
    ap.add_argument("--vm-only", action="store_true",
                    help="only the modules without Envoy (bench/wasm_conn.mjs): replaces that part of --out")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, eb.on_signal)
    signal.signal(signal.SIGINT, eb.on_signal)
    atexit.register(eb.stop_all)
    wasm = args.wasm.resolve()
    if args.vm_only:
        work = Path(tempfile.mkdtemp(prefix="egress-guard-profile-"))
        atexit.register(shutil.rmtree, work, True)
        result = json.loads(args.out.read_text())
        result["vm_only"] = wasm_alone(wasm, eb.build_noop(), [int(n) for n in args.rules.split(",") if n], work)
        result["vm_only_collected"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    envoy = eb.find_envoy()
    loadgen, noop, parts = eb.build_loadgen(), eb.build_noop(), eb.shipped_parts()
    sizes = [int(n) for n in args.rules.split(",") if n]
    work = Path(tempfile.mkdtemp(prefix="egress-guard-profile-"))
    atexit.register(shutil.rmtree, work, True)

    echo = eb.start(eb.pinned(eb.LOAD_CPU, [str(loadgen), "echo", "127.0.0.1:0"]), stdout=subprocess.PIPE, text=True)
    http_up = eb.start(eb.pinned(eb.LOAD_CPU, [str(loadgen), "http-server", "127.0.0.1:0"]),
                       stdout=subprocess.PIPE, text=True)
    echo_port, http_port = int(echo.stdout.readline()), int(http_up.stdout.readline())

    variants: list[dict[str, Any]] = []
    listeners = []

    def add(name: str, kind: str, lst_fn, target: str) -> None:
        port = eb.free_port()
        listeners.append(lst_fn(port))
        variants.append({"name": name, "kind": kind, "port": port, "target": target})

    _, sni10 = eb.sni_rules(10)
    add("none_tlsi", "tcp", lambda p: eb.tcp_listener(parts, "none_tlsi", p, [], True), sni10)
    add("noop_tlsi", "tcp", lambda p: eb.tcp_listener(
        parts, "noop_tlsi", p, [eb.noop_filter(parts, noop, "noop_tlsi", False)], True), sni10)
    add("calls_tlsi", "tcp", lambda p: eb.tcp_listener(
        parts, "calls_tlsi", p, [calls_filter(parts, noop, "calls_tlsi", False, CALLS_TCP)], True), sni10)
    for call, spec in CALIBRATION.items():
        add(f"x{REPEAT}_{call}", "tcp", lambda p, c=call, sp=spec: eb.tcp_listener(
            parts, f"x_{c}", p, [calls_filter(parts, noop, f"x_{c}", False, ",".join([sp] * REPEAT))], True), sni10)
    for n in sizes:
        patterns, sni = eb.sni_rules(n)
        add(f"eg_tlsi/{n}", "tcp", lambda p, pt=patterns, n=n: eb.tcp_listener(
            parts, f"eg_tlsi_{n}", p, [eb.wasm_filter(parts, wasm, eb.eg_policy(pt, p), f"eg_tlsi_{n}", False)],
            True), sni)
    add("http_noop", "http", lambda p: eb.http_listener(
        parts, "http_noop", p, [eb.noop_filter(parts, noop, "http_noop", True)]), sni10)
    add("http_calls", "http", lambda p: eb.http_listener(
        parts, "http_calls", p, [calls_filter(parts, noop, "http_calls", True, CALLS_HTTP)]), sni10)
    for n in sizes:
        patterns, host = eb.sni_rules(n)
        add(f"http_eg/{n}", "http", lambda p, pt=patterns, n=n: eb.http_listener(
            parts, f"http_eg_{n}", p, [eb.wasm_filter(parts, wasm, eb.eg_policy(pt, p), f"http_eg_{n}", True)]),
            host)

    env = eb.Envoy(envoy, eb.bootstrap(parts, listeners, echo_port, http_port), work, "main")
    pid = env.proc.pid
    envoy_bin = os.path.realpath(f"/proc/{pid}/exe")
    fns = Functions(envoy_bin, pid)
    runs: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    try:
        for v in variants:
            warm = eb.run_load(loadgen, v["kind"], v["port"], v["target"], args.concurrency, 1.0)
            if warm["ops"] == 0 or warm["errors"] > 0:
                raise RuntimeError(f"{v['name']}: warm-up failed: {warm}")
        for r in range(args.rounds):
            shift = r * len(variants) // max(1, args.rounds)
            for v in variants[shift:] + variants[:shift]:
                e0 = env.cpu_ns()
                res = eb.run_load(loadgen, v["kind"], v["port"], v["target"], args.concurrency, args.seconds)
                e1 = env.cpu_ns()
                us = (e1 - e0) / 1e3 / max(1, res["ops"])
                runs.append({"variant": v["name"], "round": r, "ops": res["ops"], "errors": res["errors"],
                             "envoy_cpu_us_per_op": us, "envoy_util": (e1 - e0) / 1e9 / res["elapsed_s"]})
                print(f"round {r} {v['name']:>14}: {us:6.1f} µs/op ({res['ops']} ops)", flush=True)
        if args.perf_seconds > 0 and shutil.which("perf"):
            passes: dict[str, list[dict[str, Any]]] = {v["name"]: [] for v in variants}
            for r in range(args.perf_rounds):
                shift = r * len(variants) // max(1, args.perf_rounds)
                for v in variants[shift:] + variants[:shift]:
                    passes[v["name"]].append(perf_pass(env, v, loadgen, args, work, envoy_bin, fns))
            names = name_hostcalls({k: {"hostcalls_us_per_op": median_dict([p["hostcalls_us_per_op"] for p in ps])}
                                    for k, ps in passes.items()})
            for p_list in passes.values():
                for p in p_list:
                    named: Counter = Counter()
                    for fn, x in p["hostcalls_us_per_op"].items():
                        named[names.get(fn, "other")] += x
                    p["hostcalls_named_us_per_op"] = dict(named)
            profiles = normalize(passes, summarize(runs))
    finally:
        env.close()
        eb.stop_all()

    vm_only = wasm_alone(wasm, noop, sizes, work)

    summary = summarize(runs)
    result = {"machine": eb.machine(), "params": vars(args) | {"wasm": args.wasm.name, "out": args.out.name},
              "calls_tcp": CALLS_TCP, "calls_http": CALLS_HTTP, "period_ns": PERIOD_NS,
              "collected": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "runs": runs, "summary": summary, "profiles": profiles, "vm_only": vm_only}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\nEnvoy CPU µs per op, median [min–max] over rounds:")
    for name, s in summary.items():
        print(f"  {name:>14}: {s['median']:6.1f} [{s['min']:.1f}–{s['max']:.1f}]")
    if profiles:
        print("\nperf split, µs of Envoy CPU per op, normalized (see normalize()):")
        for name, prof in profiles.items():
            u = prof["normalized_us_per_op"]
            hc = ", ".join(f"{k} {x:.1f}" for k, x in sorted(prof["normalized_hostcalls_us_per_op"].items(),
                                                              key=lambda kv: -kv[1]) if x >= 0.05)
            print(f"  {name:>22}: V8 code {u.get('v8_code', 0):5.1f} | Envoy from Wasm "
                  f"{u.get('envoy_from_wasm', 0):5.1f} ({hc}) | common {prof['common_us']:6.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
