#!/usr/bin/env python3
"""`make bench`: the compiled policy's memory in 32-bit Wasm, as a VM holds it.

Builds benches/memory.rs for wasm32-wasip1, runs it under Node's WASI (V8), and writes its
result to bench/results/core-memory-wasm32.json. Skips (with a message) when Node is missing.
"""

from __future__ import annotations

import json
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
    run = subprocess.run([node, "--no-warnings", str(REPO / "bench" / "wasm_memory.mjs"), wasm],
                         check=True, capture_output=True, text=True, timeout=600)
    print(run.stdout, end="")
    result = [line.removeprefix("RESULT ") for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if not result:
        sys.exit("wasm_memory: the benchmark printed no RESULT line")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(json.loads(result[0]), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
