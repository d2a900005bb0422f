#!/usr/bin/env python3
"""`make bench`: the compiled policy's memory in 32-bit Wasm, as a VM holds it.

Builds benches/memory.rs for wasm32-wasip1, runs it under Node's WASI (V8), and writes its
result to bench/results/core-memory-wasm32.json, with the deepest stack use of the run (parse and
compile of up to 100,000 rules, deeply nested JSON and globs, the per-connection path). Skips (with a message) when Node is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "core-memory-wasm32.json"


def main() -> None:
    node = shutil.which("node")
    if not node:
        print("wasm_memory: node not found; skipping the wasm32 memory figures", file=sys.stderr)
        return
    build = subprocess.run(
        ["cargo", "bench", "--bench", "memory", "--target", "wasm32-wasip1", "--no-run",
         "--message-format", "json"],
        cwd=REPO, check=True, capture_output=True, text=True)
    wasm = None
    for line in build.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "memory" \
                and msg.get("executable"):
            wasm = msg["executable"]
    if not wasm:
        sys.exit("wasm_memory: cargo built no memory benchmark for wasm32-wasip1")
    # Node 20 now and then crashes at the very end of a long WASI run, after the binary's last
    # line: the exit status is not checked, the RESULT line and the stack report are.
    run = subprocess.run([node, "--no-warnings", str(REPO / "bench" / "wasm_memory.mjs"), wasm],
                         check=False, capture_output=True, text=True, timeout=600)
    print("\n".join(line for line in run.stdout.splitlines() if not line.startswith("STACK_LOWEST")))
    result = [line.removeprefix("RESULT ") for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if not result:
        sys.exit("wasm_memory: the benchmark printed no RESULT line")
    data = json.loads(result[0])
    # The deepest stack use of the whole run (bench/wasm_memory.mjs): from where the stack starts
    # down to the lowest byte written.
    top = re.search(r"^STACK_TOP (\d+)$", run.stdout, re.M)
    lows = re.findall(r"^STACK_LOWEST (\d+) (\d+)$", run.stdout, re.M)
    low = re.match(r"STACK_LOWEST (\d+) (\d+)", f"STACK_LOWEST {lows[-1][0]} {lows[-1][1]}") if lows else None
    if not top or not low or not int(low.group(2)) < int(top.group(1)) or int(low.group(1)) <= 1024:
        sys.exit(f"wasm_memory: cannot measure the stack: {top and top.group(0)}, {low and low.group(0)}")
    data["stack_deepest_bytes"] = int(top.group(1)) - int(low.group(1))
    print(f"deepest stack use: {data['stack_deepest_bytes']} bytes")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
