#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md and docs/bench-ratio.png from the benchmark results.

    bench/report.py --criterion       first collects criterion's estimates (TARGET/criterion, as
                                      `cargo bench --bench decide` and `--bench sniff` left them)
                                      into bench/results/core.json and core-sniff.json
    bench/report.py                   renders from bench/results/*.json alone

Inputs: bench/results/core.json (decide and compile times), bench/results/core-sniff.json (a
message fed a byte at a time), bench/results/core-memory.json
(`cargo bench --bench memory`), bench/results/core-memory-wasm32.json (bench/wasm_memory.py),
bench/results/core-instructions.json (bench/instructions.py, `make bench-instructions`),
bench/results/envoy.json (bench/envoy_bench.py). Every number in
the report comes from those files; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "BENCHMARKS.md"
PLOT = REPO / "docs" / "bench-ratio.png"

SIZES = [10, 1_000, 10_000, 100_000]
KINDS = ["hit_host", "hit_cidr", "miss"]
KIND_TEXT = {"hit_host": "host hit", "hit_cidr": "CIDR hit", "miss": "miss", "early": "at open"}

# docs/design.md, "Targets".
DECIDE_TARGET_NS = 100.0
FLAT_TARGET = 2.0
RATE_TARGET = 0.97
WASM_TARGET = 512 * 1024
VM_MEMORY_TARGET = 4 * 1024 * 1024
VM_MEMORY_TARGET_100K = 30 * 1024 * 1024
COMPILE_TARGET_MS = 50.0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "loadavg": os.getloadavg()}


def cargo_target_dir() -> Path:
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps",
                           "--manifest-path", str(REPO / "Cargo.toml")], check=True, capture_output=True, text=True)
    return Path(json.loads(meta.stdout)["target_directory"])


def criterion_estimates(base: Path) -> dict[str, Any]:
    """criterion's estimates under one group directory: {function: {parameter: estimate}}."""
    out: dict[str, Any] = {}
    if not base.is_dir():
        return out
    for function in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "report"):
        for size in sorted(p for p in function.iterdir() if p.is_dir() and p.name.isdigit()):
            est = size / "new" / "estimates.json"
            if not est.is_file():
                continue
            e = json.loads(est.read_text())
            out.setdefault(function.name, {})[size.name] = {
                "median_ns": e["median"]["point_estimate"],
                "median_lo_ns": e["median"]["confidence_interval"]["lower_bound"],
                "median_hi_ns": e["median"]["confidence_interval"]["upper_bound"],
                "mean_ns": e["mean"]["point_estimate"],
            }
    return out


def collect_criterion(target: Path) -> None:
    """criterion's estimates (ns per iteration; median with its 95% interval, mean) -> core.json
    (groups decide and compile) and core-sniff.json (group sniff). A file whose benches left no
    results is kept as it was, so `cargo bench --bench sniff` alone does not erase core.json."""
    crit = target / "criterion"
    def header() -> dict[str, Any]:
        return {"machine": machine(), "collected": datetime.datetime.now().isoformat(timespec="seconds"),
                "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {**header(), **{group: criterion_estimates(crit / group) for group in ("decide", "compile")}}
    if out["decide"] or out["compile"]:
        (RESULTS / "core.json").write_text(json.dumps(out, indent=1) + "\n")
    else:
        print(f"no decide/compile results in {crit}: core.json kept")
    sniff = {**header(), "sniff": criterion_estimates(crit / "sniff")}
    if sniff["sniff"]:
        (RESULTS / "core-sniff.json").write_text(json.dumps(sniff, indent=1) + "\n")
    else:
        print(f"no sniff results in {crit}: core-sniff.json kept")


def load(name: str) -> dict[str, Any] | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


# Formatting -------------------------------------------------------------------------------------

def ns(v: float | None) -> str:
    if v is None:
        return "—"
    if v < 1_000:
        return f"{v:.0f} ns" if v >= 100 else f"{v:.1f} ns"
    if v < 1_000_000:
        return f"{v / 1e3:.1f} µs"
    if v < 1_000_000_000:
        return f"{v / 1e6:.1f} ms"
    return f"{v / 1e9:.2f} s"


def mib(b: float) -> str:
    return f"{b / 2**20:.2f} MiB"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# Core -------------------------------------------------------------------------------------------

def core_section(core: dict[str, Any] | None, mem: dict[str, Any] | None, mem32: dict[str, Any] | None,
                 targets: list[list[str]]) -> str:
    out = ["## Core: `Policy::decide` and `Policy::from_json`", ""]
    if not core:
        return "\n".join(out + ["No core results yet: run `make bench`.", ""])
    d = core["decide"]

    def get(fn: str, n: int) -> float | None:
        return d.get(fn, {}).get(str(n), {}).get("median_ns")

    m = core["machine"]
    out += [
        f"Criterion, `cargo bench --bench decide` ({core.get('rustc', '')}), collected "
        f"{core['collected']}; load average at the end {m['loadavg'][0]:.1f} on {m['nproc']} cores.",
        "Medians of per-call time; time is the benchmark thread's CPU time, so the time slices a",
        "busy neighbour takes are not counted (its cache pollution still is). Each query kind is",
        "1024 different queries in turn, so a large policy is not measured from a few warm cache lines.",
        "",
        "Policies are generated from a fixed seed (`benches/common/mod.rs`): 70% host rules (1–3",
        "patterns, 60% exact names, 40% `*.` wildcards), 20% CIDR rules (75% IPv4, 25% IPv6), 10% both;",
        "ports 60% `[443]`, 20% `[80, 443]`, 10% a range, 10% any; 1% deny rules, including the cloud",
        "metadata endpoint. *Host hit*: a name a host rule matches, from an IP no CIDR holds. *CIDR",
        "hit*: an IP inside a rule's CIDR, no name. *Miss*: a four-label name and an IP nothing matches.",
        "*At open*: `decide_early` (IP and port only), the question the network filter asks before",
        "any byte.",
        "",
    ]
    rows = []
    for n in SIZES:
        row = [f"{n:,}"]
        for k in [*KINDS, "early"]:
            row.append(ns(get(f"compiled_{k}", n)))
        for k in KINDS:
            row.append(ns(get(f"reference_{k}", n)))
        rows.append(row)
    out += [table(["rules", *(f"compiled: {KIND_TEXT[k]}" for k in [*KINDS, "early"]),
                   *(f"reference: {KIND_TEXT[k]}" for k in KINDS)], rows), ""]

    # Flatness and the absolute target.
    flat_rows = []
    flat_ok = True
    for k in [*KINDS, "early"]:
        lo, hi = get(f"compiled_{k}", 10), get(f"compiled_{k}", 100_000)
        if lo and hi:
            ratio = hi / lo
            flat_ok &= ratio <= FLAT_TARGET
            flat_rows.append([KIND_TEXT[k], ns(lo), ns(hi), f"{ratio:.2f}×"])
    out += ["Growth from 10 to 100,000 rules (target: within 2×):", "",
            table(["query", "10 rules", "100,000 rules", "100,000 / 10"], flat_rows), ""]
    host100k = get("compiled_hit_host", 100_000)
    miss100k = get("compiled_miss", 100_000)
    worst = max(x for x in (host100k, miss100k) if x is not None) if (host100k or miss100k) else None
    targets.append(["decision flat in rule count (10 → 100,000 within 2×)",
                    ", ".join(f"{r[0]} {r[3]}" for r in flat_rows) or "—", verdict(flat_ok if flat_rows else None)])
    targets.append(["decision < 100 ns median at 100,000 host rules",
                    f"host hit {ns(host100k)}, miss {ns(miss100k)}",
                    verdict(None if worst is None else worst < DECIDE_TARGET_NS)])

    c = core.get("compile", {}).get("from_json", {})
    if c:
        rows = []
        for n in SIZES:
            e = c.get(str(n))
            if e:
                rows.append([f"{n:,}", ns(e["median_ns"]), f"{e['median_ns'] / n / 1e3:.2f} µs"])
        out += ["`Policy::from_json` (parse, validate, compile), native:", "",
                table(["rules", "median", "per rule"], rows), ""]
    if mem:
        wasm = {s["rules"]: s for s in (mem32 or {}).get("sizes", [])}
        rows = []
        for s in mem["sizes"]:
            w = wasm.get(s["rules"])
            rows.append([f"{s['rules']:,}", f"{s['hosts']:,}", f"{s['cidrs']:,}", f"{s['json_bytes'] / 1024:,.0f} KiB",
                         mib(s["retained_bytes"]), mib(s["peak_bytes"]),
                         mib(w["retained_bytes"]) if w else "—",
                         f"{w['retained_bytes'] / s['rules']:.0f} B" if w else "—",
                         mib(w["config_bytes"]) if w else "—",
                         mib(w["peak_bytes"]) if w else "—", f"{s['allocations']:,}"])
        out += ["Memory, counted by a global allocator (`cargo bench --bench memory`), natively (64-bit) and built",
                "for wasm32-wasip1 under Node's V8 (`bench/wasm_memory.py`: 4-byte pointers, as in the VM).",
                "*Retained*: what the compiled policy holds. *Config*: the parsed configuration, which",
                "compiling takes apart rule by rule (`Policy::from_config`). *Peak*: the most allocated at once",
                "while parsing and compiling — what a VM's linear memory, which never shrinks, keeps.", "",
                table(["rules", "hosts", "CIDRs", "JSON", "retained 64-bit", "peak 64-bit", "retained wasm32",
                       "per rule wasm32", "config wasm32", "peak wasm32", "allocations"], rows),
                ""]
        stack = (mem32 or {}).get("stack_deepest_bytes")
        if stack:
            out += [f"Deepest use of the Wasm stack over the whole wasm32 run: **{stack:,} bytes** (the module's",
                    "stack is 128 KiB, `build.rs`). It covers parsing and compiling up to 100,000 rules, JSON",
                    "nested 100,000 deep at every place a configuration nests (serde_json stops at 128), globs at",
                    "the nesting limit, and the per-connection path. `bench/wasm_memory.mjs` paints the stack",
                    "before the run and finds the lowest byte written after it. In Wasm the stack in linear",
                    "memory holds only what a function takes the address of; calls and scalars live in the",
                    "engine's own stack.", ""]
    return "\n".join(out)


# Instructions per operation -------------------------------------------------------------------

INSTRUCTION_OPS = [
    ("decide_10", "`Policy::decide`, host hit, 10 rules"),
    ("decide_10000", "`Policy::decide`, host hit, 10,000 rules"),
    ("sniff_client_hello", "`sniff`: a 512-byte ClientHello"),
    ("sniff_http_head", "`sniff`: a curl-like HTTP/1.1 request head"),
    ("session_10", "network filter connection, 10 rules: `Session::open`, then the ClientHello to `Session::client`"),
    ("session_10000", "the same, 10,000 rules"),
    ("session_inspector_10", "with tls_inspector, 10 rules: `Session::open` with the SNI"),
    ("session_inspector_10000", "the same, 10,000 rules"),
]


def instructions_section(ins: dict[str, Any] | None) -> str:
    out = ["## Core: instructions per operation", ""]
    runs = (ins or {}).get("runs", [])
    if not runs:
        return "\n".join(out + ["No instruction counts yet: run `make bench-instructions`.", ""])
    latest = runs[-1]
    # The earliest run of each revision before the latest, as "before" columns (at most two).
    revs: list[dict[str, Any]] = []
    for r in runs[:-1]:
        if r["revision"] != latest["revision"] and all(x["revision"] != r["revision"] for x in revs):
            revs.append(r)
    revs = revs[:1] + revs[-1:] if len(revs) > 1 else revs
    out += [f"`make bench-instructions` (bench/instructions.py: benches/instructions.rs under "
            f"`valgrind --tool=callgrind`, {latest['valgrind']}), collected {latest['collected']} at {latest['revision']}.",
            "Instructions executed per operation, inclusive of everything it calls (allocator included), natively",
            "(x86-64): stable from run to run whatever the machine's neighbours do, so a change of a percent shows.",
            "The policies are the generator's (`benches/common/mod.rs`); the per-connection cases are",
            "`benches/common/conn.rs`, with a `Record` that only counts (the adapter's metrics and logs are",
            "not in these figures)." + (" Earlier revisions are kept in `bench/results/core-instructions.json`;"
                                       " the first and latest before this one are shown." if revs else ""), ""]
    head = ["operation", *(f"{r['revision']}" for r in revs), f"{latest['revision']} (latest)"]
    rows = []
    for key, text in INSTRUCTION_OPS:
        if key not in latest["ops"]:
            continue
        row = [text]
        for r in revs:
            v = r["ops"].get(key)
            row.append(f"{v:,.0f}" if v is not None else "—")
        row.append(f"{latest['ops'][key]:,.0f}")
        rows.append(row)
    out += [table(head, rows), "", INSTRUCTIONS_WHERE, ""]
    return "\n".join(out)


INSTRUCTIONS_WHERE = """Where they go (`callgrind_annotate` on the same binary, `--toggle-collect` on one operation):

- **HTTP head sniff**: the head parser's byte loop takes about 60% (some 40 instructions per byte
  of the head), allocation and freeing about 12% (the host and target strings the parse returns).
- **A connection without tls_inspector**: the ClientHello parse (`Sniffer::feed`, the extension
  walk) about a fifth, the decision about a sixth, allocation about a seventh (the SNI string and
  its normalised copy), then `Session` and `judge` themselves. Normalising the name ran the IPv4
  and IPv6 parsers on every name (a quarter of normalising): now only on what could be an address.
- **Not in these counts: the adapter** (`src/filter`), whose per-connection work is hostcalls: three
  property reads (`request.protocol`, which the root must ask because one root may serve both filter
  kinds; `destination.address`; with tls_inspector the SNI), three counter increments (sniff
  outcome, decision, rule), each a documented metric, and a clock read only when the connection is
  held for its first bytes (not when the SNI or the IP decides at open). Nothing is formatted unless
  the decision is logged; counters are defined when the policy loads (per-rule ones on a rule's first
  match). These cost what the Wasm host makes them cost: see *Where the time goes*."""


# Sniffing a byte at a time ----------------------------------------------------------------------

SNIFF_CASES = [
    ("http_head", "HTTP request head (60-byte lines), `Sniffer`"),
    ("tls_1_byte_records", "ClientHello in 1-byte records, `Sniffer`"),
    ("tls_16k_records", "ClientHello in 16 KiB records, `Sniffer`"),
    ("later_head", "later request head, `Pipeline::scan`"),
]
SNIFF_TARGET = 3.0
# The rows the target is about: request heads (issue 8).
SNIFF_HEADS = ("http_head", "later_head")


def sniff_section(sn: dict[str, Any] | None) -> str:
    out = ["## Core: a message that arrives one byte per callback", ""]
    if not sn:
        return "\n".join(out + ["No results yet: run `make bench` (or `cargo bench --bench sniff`, then",
                                "`bench/report.py --criterion`).", ""])
    s = sn["sniff"]
    m = sn["machine"]

    def est(key: str, how: str) -> tuple[int | None, dict[str, float] | None]:
        for size, e in s.get(f"{key}_{how}", {}).items():
            return int(size), e
        return None, None

    out += [
        f"Criterion, `cargo bench --bench sniff` ({sn.get('rustc', '')}), collected {sn['collected']}; "
        f"load average at the end {m['loadavg'][0]:.1f} on {m['nproc']} cores.",
        "Medians of the benchmark thread's CPU time for the whole message, at `sniff.max_bytes` = 65,536.",
        "*One call*: the whole message in one call. *Byte at a time*: every prefix in turn to one",
        "`Sniffer` (or one `Pipeline`), as for a client that sends one byte per packet. *Afresh*: every",
        "prefix in turn to `sniff` (or `parse_request_head` on the later head's window), what the filter",
        "did before `Sniffer`; it is quadratic except for large records, whose bodies no parse reads",
        "before they are complete. In brackets, the ratio's range from the medians' 95% confidence",
        "intervals.",
        "",
    ]
    rows = []
    worst_head = None
    ratios: dict[str, float] = {}
    per_call: list[float] = []
    per_byte: list[float] = []
    for key, text in SNIFF_CASES:
        size, once = est(key, "one_call")
        _, fed = est(key, "byte_at_a_time")
        _, old = est(key, "afresh")
        if not (size and once and fed):
            continue
        ratio = fed["median_ns"] / once["median_ns"]
        lo = fed["median_lo_ns"] / once["median_hi_ns"]
        hi = fed["median_hi_ns"] / once["median_lo_ns"]
        ratios[key] = ratio
        if key in SNIFF_HEADS:
            worst_head = max(worst_head or 0.0, ratio)
        per_call.append((fed["median_ns"] - once["median_ns"]) / size)
        per_byte.append(once["median_ns"] / size)
        rows.append([text, f"{size:,}", ns(once["median_ns"]), ns(fed["median_ns"]),
                     f"{ratio:.2f}× ({lo:.2f}–{hi:.2f})", ns(old["median_ns"]) if old else "—",
                     f"{old['median_ns'] / once['median_ns']:,.0f}×" if old else "—"])
    out += [table(["message", "bytes", "one call", "byte at a time", "byte at a time ÷ one call",
                   "afresh (before)", "afresh ÷ one call"], rows), ""]
    if worst_head is not None:
        tls = [f"{ratios[k]:.2f}×" for k in ("tls_1_byte_records", "tls_16k_records") if k in ratios]
        out += [f"Target (issue 8): a 64 KiB request head fed a byte at a time costs at most {SNIFF_TARGET:g}× one call.",
                f"In CPU time the worse of the two heads is {worst_head:.2f}×: {verdict(worst_head <= SNIFF_TARGET)}.",
                f"The ClientHello rows ({' and '.join(tls)}) are shown for what a call costs: a fixed",
                f"{min(per_call):.1f} to {max(per_call):.1f} ns whatever it brings (it resumes, looks at its new byte and returns),",
                f"against {min(per_byte):.1f} to {max(per_byte):.1f} ns per byte for one call; a ClientHello in large records",
                "is copied, not parsed, until its records are complete, so its one call is cheap and its ratio",
                "is that fixed cost. Nothing is read again: in bytes examined, which the work-bound tests in",
                "`src/sniff/resume_tests.rs` hold to the same 3×, every case is within it: **met**.", ""]
    return "\n".join(out)


# Envoy ------------------------------------------------------------------------------------------

def envoy_section(env: dict[str, Any] | None, targets: list[list[str]]) -> tuple[str, dict[str, Any]]:
    out = ["## Through Envoy", ""]
    if not env:
        targets.append(["Envoy new-connection rate ≥ 0.97 × no filter (10,000 rules)", "—", "—"])
        return "\n".join(out + ["No Envoy results yet: run `make bench-envoy`.", ""]), {}
    p = env["params"]
    runs = env["runs"]
    names = [v["name"] for v in env["variants"]]
    rules_of = {v["name"]: v["rules"] for v in env["variants"]}
    rounds = sorted({r["round"] for r in runs})
    by = {(r["variant"], r["round"]): r for r in runs}

    def per_round(a: str, b: str, key: str = "rate") -> list[float]:
        return [by[(a, r)][key] / by[(b, r)][key] for r in rounds if (a, r) in by and (b, r) in by and by[(b, r)][key]]

    def rng(xs: list[float]) -> str:
        return f"{med(xs):.3f} ({min(xs):.2f}–{max(xs):.2f})" if xs else "—"

    m = env["machine"]
    out += [
        f"{envoy_version(env['envoy'])}, `--concurrency 1`"
        + (f", pinned to CPU {p['envoy_cpu']}; the load generator and the upstreams on CPU {p['load_cpu']}"
           if p.get("pinned") else "") + ".",
        f"{p['rounds']} rounds × {p['seconds']:g} s per variant, the variant order rotated each round; "
        f"{p['concurrency']} connections in flight (TCP), {p['http_concurrency']} keep-alive connections (HTTP).",
        f"Load average {m['loadavg_start'][0]:.1f} at the start, {m.get('loadavg_end', [float('nan')])[0]:.1f} at the end "
        f"({m['nproc']} cores).",
        "",
        "Each TCP operation is a new connection: connect, send a real ClientHello (rustls 0.23, SNI allowed by",
        "the rule in the middle of the list), wait for the one byte the upstream answers after reading it,",
        "close. Every listener forwards with the shipped `tcp_proxy` settings to a STATIC cluster (the echo",
        "upstream); there is no `original_dst`, so the rules name the listener's port. Variants: *none*",
        "(tcp_proxy only), *none + tls_inspector*, *no-op Wasm filter* (bench/noop-filter: a proxy-wasm",
        "filter whose every callback continues, configured like egress-guard: what any Wasm filter costs),",
        "*RBAC* (Envoy's network RBAC filter after tls_inspector:",
        "one policy per rule, `requested_server_name` exact or suffix and `destination_port`, the same",
        "allowlist), *egress-guard + tls_inspector* (decides at connection open on the inspector's SNI),",
        "*egress-guard alone* (parses the ClientHello itself), *egress-guard + tls_inspector, pinned*",
        "(below, [Pinned connections](#pinned-connections)). Ratios are taken within each round, then",
        "the median over rounds is shown with the range (min–max) in brackets: the range is the noise.",
        "*Envoy CPU/conn* is the Envoy process's CPU time divided by connections: the cost of each",
        "variant even when the rate is limited by something else (*busy* near 100% means Envoy's core",
        "was the limit; well below, the load side or a neighbouring process was).",
        "",
    ]
    rows = []
    summary: dict[str, Any] = {"tcp": {}, "http": {}}
    for name in names:
        rs = [by[(name, r)] for r in rounds if (name, r) in by]
        if not rs or rs[0].get("ops") is None:
            continue
        kind = "http" if name.startswith("http") else "tcp"
        if kind != "tcp":
            continue
        n = rules_of[name]
        to_none = per_round(name, "none")
        to_tlsi = per_round(name, "none_tlsi") if "tlsi" in name else []
        rbac = f"rbac_tlsi/{n}" if n else None
        to_rbac = per_round(name, rbac) if rbac and name != rbac and rbac in names else []
        noop = {"eg_tlsi": "noop_tlsi", "eg_tlsi_pin": "noop_tlsi", "eg_own": "noop"}.get(name.partition("/")[0])
        to_noop = per_round(name, noop) if noop in names else []
        cpu = med([r["envoy_cpu_us_per_op"] for r in rs])
        rows.append([
            label(name), f"{med([r['rate'] for r in rs]):,.0f}", f"{med([r['p50_us'] for r in rs]):,.0f}",
            f"{med([r['p99_us'] for r in rs]):,.0f}", f"{cpu:.1f}", f"{100 * med([r['envoy_util'] for r in rs]):.0f}%",
            rng(to_none), rng(to_tlsi), rng(to_noop), rng(to_rbac), rng(per_round(name, "none", "envoy_cpu_us_per_op")),
            str(sum(r["errors"] for r in rs)),
        ])
        summary["tcp"][name] = {"to_none": to_none, "to_rbac": to_rbac, "to_tlsi": to_tlsi, "to_noop": to_noop, "rules": n,
                                "cpu_to_none": per_round(name, "none", "envoy_cpu_us_per_op")}
    out += ["### New TCP connections", "",
            table(["variant", "conn/s", "p50 µs", "p99 µs", "Envoy CPU/conn µs", "busy", "conn/s ÷ none",
                   "conn/s ÷ none + tls_inspector", "conn/s ÷ no-op Wasm (same listener filters)",
                   "conn/s ÷ RBAC (same rules)", "CPU/conn ÷ none",
                   "errors"], rows), ""]

    out += pinned_section(env, names, per_round, rng)

    rows = []
    for name in names:
        if not name.startswith("http"):
            continue
        rs = [by[(name, r)] for r in rounds if (name, r) in by]
        to_none = per_round(name, "http_none")
        to_noop = per_round(name, "http_noop") if name.startswith("http_eg") and "http_noop" in names else []
        rows.append([label(name), f"{med([r['rate'] for r in rs]):,.0f}", f"{med([r['p50_us'] for r in rs]):,.0f}",
                     f"{med([r['p99_us'] for r in rs]):,.0f}", f"{med([r['envoy_cpu_us_per_op'] for r in rs]):.1f}",
                     f"{100 * med([r['envoy_util'] for r in rs]):.0f}%", rng(to_none), rng(to_noop),
                     str(sum(r["errors"] for r in rs))])
        summary["http"][name] = {"to_none": to_none}
    out += ["### HTTP requests (keep-alive)", "",
            "`GET` with an allowed `Host` over keep-alive connections, through the HTTP connection manager",
            "and the router to an upstream that answers `200`; egress-guard as the HTTP filter decides every",
            "request on its `:authority`.", "",
            table(["variant", "req/s", "p50 µs", "p99 µs", "Envoy CPU/req µs", "busy", "÷ no filter", "÷ no-op Wasm",
                   "errors"], rows),
            ""]

    # Targets.
    big = max((v["rules"] or 0) for v in env["variants"])
    for variant in (f"eg_own/{big}", f"eg_tlsi/{big}"):
        s = summary["tcp"].get(variant)
        if s:
            r = med(s["to_none"])
            targets.append([f"Envoy new-connection rate ≥ 0.97 × no filter ({label(variant)})",
                            f"{r:.3f} × ({min(s['to_none']):.2f}–{max(s['to_none']):.2f})", verdict(r >= RATE_TARGET)])
    for variant in ("noop", "noop_tlsi"):
        s = summary["tcp"].get(variant)
        if s and s["to_none"]:
            r = med(s["to_none"])
            targets.append([f"(for comparison) {label(variant)}: rate ÷ no filter",
                            f"{r:.3f} × ({min(s['to_none']):.2f}–{max(s['to_none']):.2f})", "—"])
    for n in sorted({v["rules"] for v in env["variants"] if v["rules"] and v["rules"] >= 1000}):
        s = summary["tcp"].get(f"eg_tlsi/{n}")
        if s and s["to_rbac"]:
            r = med(s["to_rbac"])
            targets.append([f"faster than native RBAC with the same {n:,} SNI rules",
                            f"{r:.2f} × RBAC's rate ({min(s['to_rbac']):.2f}–{max(s['to_rbac']):.2f})",
                            verdict(r > 1.0)])

    # Size and memory.
    out += ["### Module size and memory", ""]
    wasm = env["wasm_bytes"]
    out += [f"`egress_guard.wasm`: {wasm:,} bytes ({wasm / 1024:.0f} KiB).", ""]
    targets.append(["`.wasm` ≤ 512 KiB", f"{wasm / 1024:.0f} KiB", verdict(wasm <= WASM_TARGET)])
    mem = env.get("memory", [])
    if mem:
        cases = ["no_wasm", "empty_policy", "rules_10000", "rules_100000"]
        text = {"no_wasm": "no Wasm filter", "empty_policy": "egress-guard, empty policy `{}`",
                "rules_10000": "egress-guard, 10,000 rules", "rules_100000": "egress-guard, 100,000 rules"}
        rows = []
        vm: dict[str, Any] = {}
        for c in cases:
            ms = [x for x in mem if x["case"] == c]
            if not ms:
                continue
            vms = [v for x in ms for v in x["vm"]]
            vm[c] = vms
            rows.append([text[c], mib(med([x["allocated"] for x in ms])), mib(med([x["heap_size"] for x in ms])),
                         mib(med([x["rss"] for x in ms])),
                         str(round(len(vms) / len(ms))) if vms else "—",
                         mib(med([v["wasm_memory"] for v in vms])) if vms else "—",
                         f"{med([v['compile_ms'] for v in vms]):.1f} ms" if vms else "—"])
        if env.get("memory_collected"):
            out += [f"Memory collected {env['memory_collected']} (`bench/envoy_bench.py --memory-only`), "
                    "after the load runs above.", ""]
        out += ["Each case is its own Envoy (one listener, tls_inspector, the filter, tcp_proxy), idle, "
                f"median of {len({x['round'] for x in mem})} starts. *allocated* and *heap* are Envoy's `/memory`",
                "(tcmalloc: the configuration, V8's own heap); the Wasm linear memory is mapped by V8 outside it",
                "and shows in *RSS*. *VMs*: egress-guard VMs that loaded the policy (Envoy runs one per worker",
                "and one on the main thread). *Wasm memory per VM* and *compile in VM* are egress-guard's own",
                "log line (`policy loaded in … ms, Wasm memory … KiB`): the linear memory never shrinks, so",
                "it holds the compile's peak, plus the module's 128 KiB stack and static data. The 10,000",
                "rules are the SNI rules of the connection benchmark; the 100,000 the same generator's.",
                "`tests/integration/test_memory.py` holds both to their targets.", "",
                table(["case", "allocated", "heap", "RSS", "VMs", "Wasm memory per VM", "compile in VM"], rows), ""]
        if vm.get("rules_10000"):
            per_vm = med([v["wasm_memory"] for v in vm["rules_10000"]])
            compile_ms = med([v["compile_ms"] for v in vm["rules_10000"]])
            targets.append(["per-VM memory with 10,000 rules ≤ 4 MiB", mib(per_vm), verdict(per_vm <= VM_MEMORY_TARGET)])
            targets.append(["compile 10,000 rules ≤ 50 ms in the VM", f"{compile_ms:.1f} ms",
                            verdict(compile_ms <= COMPILE_TARGET_MS)])
        if vm.get("rules_100000"):
            per_vm = med([v["wasm_memory"] for v in vm["rules_100000"]])
            targets.append(["per-VM memory with 100,000 rules ≤ 30 MiB", mib(per_vm),
                            verdict(per_vm <= VM_MEMORY_TARGET_100K)])
    return "\n".join(out), summary


def pinned_section(env: dict[str, Any], names: list[str], per_round: Any, rng: Any) -> list[str]:
    """eg_tlsi_pin/N against its unpinned twin eg_tlsi/N, ratios taken within each round."""
    pins = [n for n in names if n.startswith("eg_tlsi_pin/")]
    if not pins:
        return []
    runs = env["runs"]
    rounds = sorted({r["round"] for r in runs})
    by = {(r["variant"], r["round"]): r for r in runs}
    rows = []
    for name in pins:
        twin = "eg_tlsi/" + name.partition("/")[2]
        if twin not in names:
            continue
        extra = [by[(name, r)]["envoy_cpu_us_per_op"] - by[(twin, r)]["envoy_cpu_us_per_op"]
                 for r in rounds if (name, r) in by and (twin, r) in by]
        cx = env.get("stats", {}).get(f"cluster.pin_{name.partition('/')[2]}.upstream_cx_total")
        rows.append([label(name),
                     f"{med([by[(name, r)]['rate'] for r in rounds if (name, r) in by]):,.0f}",
                     f"{med([by[(twin, r)]['rate'] for r in rounds if (twin, r) in by]):,.0f}",
                     rng(per_round(name, twin)),
                     f"{med([by[(name, r)]['envoy_cpu_us_per_op'] for r in rounds if (name, r) in by]):.1f}",
                     f"{med([by[(twin, r)]['envoy_cpu_us_per_op'] for r in rounds if (twin, r) in by]):.1f}",
                     rng(per_round(name, twin, "envoy_cpu_us_per_op")),
                     f"{med(extra):+.1f} ({min(extra):+.1f} to {max(extra):+.1f})" if extra else "—",
                     f"{env.get('pinned_ops', {}).get(name, 0):,}", f"{cx:,}" if cx is not None else "—"])
    pinned = env.get("stats", {}).get("wasmcustom.outcome=.=pinned;.;egress_guard_pin_total")
    return [
        "### Pinned connections", "",
        "*egress-guard + tls_inspector, pinned* is the row above it with every connection pinned",
        "([pinning.md](pinning.md)), built from `envoy/sidecar-outbound-pinned.yaml`: the policy adds",
        "`\"pin\": true` (and the shipped `\"sniff\": {\"hold_upstream\": true}`), the chain adds",
        "`sni_dynamic_forward_proxy` and `tcp_proxy` `max_early_data_bytes`, and `tcp_proxy` goes to a",
        "dynamic forward proxy cluster (its own DNS cache, shared with the filter) instead of a STATIC one.",
        "The rule in the middle of the list allows `localhost`, the SNI the load sends; Envoy resolves it",
        "from `/etc/hosts` (no network, Envoy's default c-ares resolver) at the first connection and",
        "then only on the cache's refresh, so what is measured is the pinning path itself: the",
        "filter-state calls, the cache lookup, the dynamic cluster. The listener is on `127.0.0.K:P`",
        "and the echo upstream on `127.0.0.1:P`, so only a connection pinned to the name at the",
        "original port reaches it; `tcp_proxy`'s own cluster leads nowhere, and the run fails unless",
        "egress-guard counted a pin, and the pin cluster an upstream connection, for every connection",
        "(*pinned conns* below counts warm-up and rounds;",
        f"`egress_guard_pin_total{{outcome=\"pinned\"}}` = {pinned:,} over all of them)." if pinned is not None
        else "connection.",
        "Ratios are pinned ÷ unpinned (`eg_tlsi` with the same rule count), within each round; median",
        "over rounds, (min–max) in brackets.", "",
        table(["variant", "conn/s", "unpinned conn/s", "conn/s pinned ÷ unpinned", "Envoy CPU/conn µs",
               "unpinned CPU/conn µs", "CPU/conn pinned ÷ unpinned", "added CPU/conn µs", "pinned conns",
               "pin cluster upstream conns"], rows),
        "",
    ]


def profile_section(prof: dict[str, Any] | None) -> str:
    """`make bench-profile` (bench/profile.py): Envoy's CPU per operation, egress-guard against the
    no-op filter and against the no-op filter making egress-guard's hostcalls; and the perf split."""
    out = ["## Where the time goes", ""]
    if not prof:
        return "\n".join(out + ["Not measured yet: `make bench-profile`.", ""])
    p, m = prof["params"], prof["machine"]
    out += [
        f"`make bench-profile` (bench/profile.py), collected {prof['collected']}: one Envoy "
        f"(`--concurrency 1`, CPU 0, the load on CPU 1, the listeners of *Through Envoy*), "
        f"{p['rounds']} rounds × {p['seconds']:g} s per variant, the order rotated each round, "
        f"{p['concurrency']} in flight; load average {m['loadavg_start'][0]:.1f} at the start (2 cores). "
        "Besides the variants above it runs the no-op filter making, per connection (per request), "
        f"egress-guard's hostcalls and nothing else (*hostcalls only*; in this run `{prof['calls_tcp']}`, "
        f"HTTP `{prof['calls_http']}`), and making {4} of one kind of hostcall (the *x4* rows), so that "
        "what Envoy's Wasm host charges for the hostcalls is told apart from egress-guard's own code.",
        "",
    ]
    rounds: dict[int, dict[str, float]] = {}
    for r in prof["runs"]:
        rounds.setdefault(r["round"], {})[r["variant"]] = r["envoy_cpu_us_per_op"]

    def diff(a: str, b: str, scale: float = 1.0) -> str:
        xs = [(v[a] - v[b]) / scale for v in rounds.values() if a in v and b in v]
        if not xs:
            return "—"
        return f"{med(xs):+.1f} ({min(xs):+.1f} to {max(xs):+.1f})"

    def ratio(a: str, b: str) -> str:
        xs = [v[a] / v[b] for v in rounds.values() if a in v and b in v and v[b]]
        return f"{med(xs):.3f} ({min(xs):.2f}–{max(xs):.2f})" if xs else "—"

    names = {"none_tlsi": "none + tls_inspector", "noop_tlsi": "no-op Wasm + tls_inspector",
             "calls_tlsi": "no-op Wasm + tls_inspector, hostcalls only",
             "http_noop": "HTTP, no-op Wasm", "http_calls": "HTTP, no-op Wasm, hostcalls only"}

    def name(v: str) -> str:
        if v in names:
            return names[v]
        if v.startswith("eg_tlsi/"):
            return f"egress-guard + tls_inspector, {int(v.split('/')[1]):,} rules"
        if v.startswith("http_eg/"):
            return f"HTTP, egress-guard, {int(v.split('/')[1]):,} rules"
        if v.startswith("x4_"):
            return f"no-op Wasm + tls_inspector, 4 × {v[3:]}"
        return v
    rows = []
    for v, s in prof["summary"].items():
        base = "http_noop" if v.startswith("http_") else "noop_tlsi"
        calls = "http_calls" if v.startswith("http_") else "calls_tlsi"
        own = v.startswith("eg_") or v.startswith("http_eg")
        rows.append([name(v), f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})",
                     "—" if v in (base, "none_tlsi") else diff(v, base),
                     "—" if v in (base, "none_tlsi") else ratio(v, base),
                     diff(v, calls) if own else "—"])
    out += ["Envoy CPU per operation (connection or request), µs: median over rounds (min–max); the "
            "differences and ratios are taken within each round. Where the neighbours move the whole "
            "process's CPU per operation by more than the few µs in question (the ranges), these "
            "differences cannot resolve them; the profile split below can, its buckets being the Wasm "
            "filter's own.", "",
            table(["variant", "Envoy CPU/op µs", "− no-op µs", "÷ no-op", "− hostcalls only µs"], rows), ""]
    cal = [[f"`{c}`", diff(f"x4_{c}", "noop_tlsi", 4.0)] for c in ("get_property", "get_current_time",
                                                                   "increment_metric")
           if any(f"x4_{c}" in v for v in rounds.values())]
    if cal:
        out += ["One hostcall, Envoy CPU µs ((4 × the call − no-op) / 4, within each round; `get_property` "
                "reads `destination.address`):", "", table(["hostcall", "µs each"], cal), ""]
    profs = prof.get("profiles") or {}
    if profs:
        rows = []
        for v, pr in profs.items():
            u = pr["normalized_us_per_op"]
            hc = ", ".join(f"{k} {x:.1f}" for k, x in sorted(pr["normalized_hostcalls_us_per_op"].items(),
                                                              key=lambda kv: -kv[1]) if x >= 0.05)
            raw = pr["us_per_op"]
            rows.append([name(v), f"{u.get('v8_code', 0.0):.1f}", f"{u.get('envoy_from_wasm', 0.0):.1f}",
                         hc or "—", f"{pr['common_us']:.0f}",
                         f"{raw.get('total', 0.0):.0f} ({len(pr['passes'])})"])
        out += [
            f"`perf record -e cpu-clock -c {prof['period_ns']} -g -p <envoy>`, {p['perf_seconds']:g} s of load "
            f"per variant and pass, {p.get('perf_rounds', 1)} passes per variant (the order rotated), in the "
            "same Envoy after the rounds. Envoy's binary is stripped and V8's code unsymbolized, so each "
            "sample goes by where the sampled instruction is: *V8 code* (the compiled Wasm modules and V8's "
            "wrappers: anonymous executable memory), *host called from Wasm* (Envoy's binary with a Wasm "
            "frame above it in the call chain: the hostcalls; every hostcall enters one function of Envoy's "
            "first, V8's C API callback, whose own samples are the *boundary*, then its own, which the *x4* "
            "variant of that hostcall names), and the rest: Envoy's other code (calling into the VM "
            "included), the kernel, other libraries — the *common* work, the same listener and load in "
            "every variant of a kind. The neighbours slow all of Envoy at once (and perf's unwinding adds "
            "kernel time), so each pass's buckets are taken relative to its common work and scaled to the "
            "common work's size in the no-op filter's rounds above (its CPU/op times its common share "
            "under perf); medians over the passes, µs per operation. The raw figures are in "
            "`bench/results/profile.json`.", "",
            table(["variant", "V8 code", "host called from Wasm", "of which", "common", "raw total under perf (passes)"],
                  rows), ""]
    per_call = []
    if "noop_tlsi" in profs:
        b = profs["noop_tlsi"]["normalized_us_per_op"]
        for call in ("get_property", "get_current_time", "increment_metric"):
            x = profs.get(f"x4_{call}")
            if x:
                u = x["normalized_us_per_op"]
                host = (u.get("envoy_from_wasm", 0.0) - b.get("envoy_from_wasm", 0.0)) / 4
                vm = (u.get("v8_code", 0.0) - b.get("v8_code", 0.0)) / 4
                per_call.append([f"`{call}`", f"{host:.2f}", f"{vm:.2f}", f"{host + vm:.2f}"])
    if per_call:
        out += ["One hostcall, from the *x4* profiles ((4 × the call − no-op) / 4, µs): a property read "
                "costs several times a counter increment or a clock read: Envoy's property lookup, and a "
                "call back into the VM to allocate the value it returns.", "",
                table(["hostcall", "Envoy's host", "V8 and the SDK", "total"], per_call), ""]
    split_rows = []
    for v, base, calls in [(v, "http_noop" if v.startswith("http_") else "noop_tlsi",
                            "http_calls" if v.startswith("http_") else "calls_tlsi")
                           for v in profs if v.startswith("eg_") or v.startswith("http_eg")]:
        if base not in profs or calls not in profs:
            continue
        e, b, c = (profs[x]["normalized_us_per_op"] for x in (v, base, calls))

        def g(d: dict[str, float], k: str) -> float:
            return d.get(k, 0.0)
        host = g(e, "envoy_from_wasm") - g(b, "envoy_from_wasm")
        crossing = g(c, "v8_code") - g(b, "v8_code")
        own = g(e, "v8_code") - g(c, "v8_code")
        wasm_part = host + crossing + own
        split_rows.append([name(v), f"{host:.1f}", f"{crossing:.1f}", f"{own:.1f}",
                           f"{100 * (host + crossing) / wasm_part:.0f}%" if wasm_part > 0 else "—"])
    if split_rows:
        out += ["What egress-guard adds to the no-op filter, from the profiles above (µs per operation): "
                "*Envoy's host* — its side of egress-guard's hostcalls (egress-guard's *host called from "
                "Wasm* less the no-op's); *V8 and the SDK, for the hostcalls* — the same hostcalls' cost "
                "in V8's code (wrappers, the SDK's side of each call, and the call back into the VM that "
                "allocates each property's value: *hostcalls only* less the no-op); *egress-guard's code* — the rest of its V8 code (egress-guard less "
                "*hostcalls only*). The rest of the difference between two profiles (Envoy's other code, "
                "the kernel) is the same work in both, and moves with the machine's neighbours.", "",
                table(["variant", "Envoy's host", "V8 and the SDK, for the hostcalls", "egress-guard's code",
                       "hostcalls' share"], split_rows), ""]
    for row_v, base in (("eg_tlsi/10", "noop_tlsi"), ("http_eg/10", "http_noop")):
        if row_v not in profs or base not in prof["summary"]:
            continue
        e = profs[row_v]["normalized_us_per_op"]
        b = profs[base]["normalized_us_per_op"]
        c = profs["http_calls" if row_v.startswith("http_") else "calls_tlsi"]["normalized_us_per_op"]
        floor = prof["summary"][base]["median"]
        host = e.get("envoy_from_wasm", 0.0) - b.get("envoy_from_wasm", 0.0) + c.get("v8_code", 0.0) - b.get("v8_code", 0.0)
        own = e.get("v8_code", 0.0) - c.get("v8_code", 0.0)
        out += [f"{name(row_v)}: egress-guard adds {host + own:.1f} µs to the no-op filter's {floor:.0f} µs "
                f"({100 * (host + own) / floor:.1f}%), of which its hostcalls {host:.1f} µs "
                f"({100 * host / floor:.1f}%) and its own code {own:.1f} µs ({100 * own / floor:.1f}%).", ""]
    if profs:
        out += [
            "What remains belongs mostly to the Wasm host. egress-guard's own code is the smaller part; "
            "the hostcalls are mostly property reads, each an input of the decision or forced: "
            "`destination.address` and the SNI are what the policy decides on; `request.protocol` is how "
            "the root tells a network connection from an HTTP stream when the SDK asks it for each new "
            "context's type (one module serves both, and two filters of the two kinds with the same "
            "configuration share one root, so the answer cannot be kept per root); the HTTP filter's "
            "`xds.cluster_name` says whether the request is on the pin route, which matters whatever the "
            "policy (a request that passes on that route is sent to its original destination through "
            "filter state). The counters (sniff outcome, decision, rule) are documented metrics. The "
            "clock is no longer read for a connection decided at open. Nothing is formatted or logged for "
            "an allowed connection under the policy's `\"log\": \"denied\"` (the benchmarks').", ""]
    vm = prof.get("vm_only") or {}
    if vm:
        rows = [[k, f"{x['median_ns'] / 1e3:.2f} ({x['min_ns'] / 1e3:.2f}–{x['max_ns'] / 1e3:.2f})"]
                for k, x in vm.items()]
        out += ["Without Envoy (bench/wasm_conn.mjs): the same modules in Node's V8 under a stub host whose "
                "hostcalls are JavaScript functions that cost next to nothing, driven through a connection as "
                "Envoy drives them with tls_inspector (context, new connection, client and server data, close, "
                "log, done, delete); µs per connection, median of 5 runs (min–max). The difference is "
                "egress-guard's own Wasm code, the SDK's work for its hostcalls included:", "",
                table(["module", "µs per connection"], rows), ""]
    return "\n".join(out)


def envoy_version(text: str) -> str:
    """`envoy  version: HASH/1.40.0/Clean/RELEASE/BoringSSL` -> `Envoy 1.40.0 (HASH[:12], RELEASE, BoringSSL)`."""
    parts = text.split("version:", 1)[-1].strip().split("/")
    if len(parts) >= 2:
        return f"Envoy {parts[1]} ({parts[0][:12]}, {', '.join(parts[3:])})"
    return text


def label(name: str) -> str:
    base, _, n = name.partition("/")
    text = {"none": "none", "none_tlsi": "none + tls_inspector", "noop": "no-op Wasm filter",
            "noop_tlsi": "no-op Wasm filter + tls_inspector", "http_noop": "HTTP, no-op Wasm filter",
            "rbac_tlsi": "RBAC + tls_inspector",
            "eg_tlsi": "egress-guard + tls_inspector", "eg_own": "egress-guard alone",
            "eg_tlsi_pin": "egress-guard + tls_inspector, pinned",
            "http_none": "HTTP, no filter", "http_eg": "HTTP, egress-guard"}[base]
    return f"{text}, {int(n):,} rules" if n else text


def plot(summary: dict[str, Any]) -> bool:
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tcp = summary.get("tcp", {})
    series = {"eg_tlsi": ("egress-guard + tls_inspector", "o-"), "eg_own": ("egress-guard alone", "s-"),
              "rbac_tlsi": ("RBAC + tls_inspector", "^--")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, (text, style) in series.items():
        pts = sorted((v["rules"], v) for name, v in tcp.items() if name.startswith(key + "/"))
        if not pts:
            continue
        xs = [n for n, _ in pts]
        for ax, field in ((axes[0], "to_none"), (axes[1], "to_rbac")):
            ys = [med(v[field]) if v[field] else None for _, v in pts]
            if all(y is None for y in ys):
                continue
            lo = [med(v[field]) - min(v[field]) if v[field] else 0 for _, v in pts]
            hi = [max(v[field]) - med(v[field]) if v[field] else 0 for _, v in pts]
            ax.errorbar(xs, [y if y is not None else float("nan") for y in ys], yerr=[lo, hi], fmt=style,
                        capsize=3, label=text)
    for key, color in (("noop_tlsi", "tab:purple"), ("noop", "tab:brown")):
        v = tcp.get(key)
        if v and v["to_none"]:
            axes[0].axhline(med(v["to_none"]), color=color, lw=1, ls="-.", label=f"{label(key)} (no rules)")
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].axhline(RATE_TARGET, color="red", lw=0.8, ls=":", label="target 0.97")
    axes[0].set_title("new connections/s ÷ no filter (tcp_proxy only)")
    axes[1].axhline(1.0, color="grey", lw=0.8)
    axes[1].set_title("new connections/s ÷ RBAC with the same rules")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("rules")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 12, 20]))
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}×"))
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle("Envoy --concurrency 1: median over rounds, bars = min–max (noise)", fontsize=10)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion", nargs="?", const="auto", metavar="TARGET_DIR",
                    help="first collect criterion's results from TARGET_DIR/criterion "
                         "(default: the crate's cargo target directory)")
    args = ap.parse_args()
    if args.criterion:
        collect_criterion(cargo_target_dir() if args.criterion == "auto" else Path(args.criterion))
    core, mem, env = load("core.json"), load("core-memory.json"), load("envoy.json")
    targets: list[list[str]] = []
    core_md = core_section(core, mem, load("core-memory-wasm32.json"), targets)
    sniff_md = sniff_section(load("core-sniff.json"))
    instructions_md = instructions_section(load("core-instructions.json"))
    envoy_md, summary = envoy_section(env, targets)
    profile_md = profile_section(load("profile.json"))
    # Without matplotlib the plot of the same results, if there is one, stays.
    plotted = bool(env) and (plot(summary) or PLOT.is_file())
    m = (env or core or {}).get("machine", machine())
    doc = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/report.py from bench/results/*.json: do not edit by hand. -->",
        "",
        "`make bench` (core: criterion and an allocation count) and `make bench-envoy` (a real Envoy)",
        "regenerate this page. The figures below come from one run of each on the machine described;",
        "on a shared machine they move between runs, so the Envoy comparisons are side by side in one",
        "run and quoted as ratios with their spread.",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}"
        + (f"; {envoy_version(env['envoy'])}" if env else "") + ".",
        "",
        "## Targets",
        "",
        "The targets of [design.md](design.md#targets), each against its latest measurement.",
        "",
        table(["target", "measured", ""], targets),
        "",
        LIMITS,
        "",
        core_md,
        instructions_md,
        sniff_md,
        envoy_md,
    ]
    if plotted:
        doc += ["![ratios](bench-ratio.png)", "",
                "Left: each variant's new-connection rate over the no-filter rate of the same round. Right: over",
                "RBAC's with the same rules (log scale). Points are medians over rounds; bars the min–max.", ""]
    doc += [profile_md, METHOD, ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(doc))
    print(f"wrote {DOC}" + (f" and {PLOT}" if plotted else ""))


LIMITS = """### What limits them

- **Decision time.** A decision is one longest-prefix match on the destination IP, one hash
  probe for the exact name and, if that misses, one per dot-suffix of the name, longest first,
  stopping at the first key found (an exact name's entry already holds the suffix patterns that
  match it), and a comparison or binary search per hit. Nothing scans rules, so the cost grows
  with the rule count only through memory: at 100,000 rules the indexes are tens of MiB and the
  lines a decision reads miss the CPU caches and the TLB. So each hit reads as few places as it
  can: keys up to 22 bytes sit in the map's slot (not in an allocation of their own), a CIDR
  range's start and its prefix share a line, and the rule's pin flag is read only when some rule
  pins. The reference scan is shown for scale. On a shared machine the neighbours' cache traffic
  moves these figures by ±20%.
- **Through Envoy**, any Wasm filter costs Envoy a VM context per connection and a call into the
  VM for every connection event; the *no-op Wasm filter* rows measure that floor, which no Wasm
  filter goes under (their ratio to *none*). egress-guard's own work on top of it — three property
  reads, a lookup under 0.1 µs at any size, three counter increments, and without tls_inspector a
  copy and parse of the ClientHello — is its ratio to the no-op filter. RBAC checks its policies
  one after the other, so its cost grows with the rule count; egress-guard's does not.
- **Pinning** adds to egress-guard's decision three `set_envoy_filter_state` calls (cluster,
  host, port), `sni_dynamic_forward_proxy`'s look-up of the name in the DNS cache, and the
  dynamic forward proxy cluster's choice of the cached host instead of a STATIC endpoint; the
  decision itself is the same lookup, so that cost does not grow with the rule count either.
  The *Pinned connections* table is its price against the same filter unpinned.
- **Memory in the VM.** Wasm linear memory never shrinks, so a VM keeps the peak of reading,
  parsing and compiling the policy, plus the module's stack (128 KiB, of which the deepest path
  uses a few KiB) and static data. The filter frees the JSON before compiling, and compiling
  takes the parsed configuration apart rule by rule: names and pattern texts move into the
  policy, each key's port index is built in place in the final maps (sized up front), and no
  list of rule ids or table of every rule's ports is kept on the side. What remains at the peak
  is the parsed configuration while the JSON is still alive, then the compiled policy with the
  holes the freed rules leave. Each VM (one per worker, one on the main thread) compiles its
  own copy."""

METHOD = """## How to reproduce

```sh
make bench         # cargo bench --bench decide / sniff / memory, bench/wasm_memory.py (Node), bench/report.py
make bench-instructions  # bench/instructions.py (callgrind), bench/report.py
make bench-envoy   # make build; bench/envoy_bench.py (Envoy, bench/loadgen, bench/noop-filter), bench/report.py
make bench-profile # make build; bench/profile.py (Envoy under perf record), bench/report.py
```

Each writes its JSON under `bench/results/` and regenerates this page from all of them, so the
two can be rerun separately.

`make bench-envoy` builds `bench/loadgen` (its own Cargo workspace: a Rust load generator, an echo
upstream and an HTTP upstream, blocking sockets, one thread per connection in flight, every run
bounded by its duration and 10 million operations) and `bench/noop-filter` (its own workspace),
starts one Envoy holding every variant as its own listener (each Wasm filter in its own VM),
warms each up for 0.5 s, runs the rounds, then starts one Envoy per memory case.
Every process it starts is stopped when it ends, including on Ctrl-C. Options:
`bench/envoy_bench.py --help` (rounds, seconds, concurrency, rule counts). Raw results, one entry
per run, are in `bench/results/envoy.json`."""


if __name__ == "__main__":
    main()
