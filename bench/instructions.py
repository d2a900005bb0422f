#!/usr/bin/env python3
"""`make bench-instructions`: instructions per operation on the core's per-connection path.

Builds benches/instructions.rs (release, symbols kept), runs it under
`valgrind --tool=callgrind`, and reads each `op_*` function's inclusive instruction count from
`callgrind_annotate`, divided by the runs the binary reports. Writes
bench/results/core-instructions.json (one entry per run, with the git revision, so a change can
be compared with the run before it); bench/report.py renders the latest into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "core-instructions.json"


def build() -> str:
    # Benches link the library unwinding (see the Makefile's `bench`); symbols kept so that
    # callgrind can name the op_* functions.
    env = {**os.environ, "CARGO_PROFILE_RELEASE_PANIC": "unwind", "CARGO_PROFILE_RELEASE_STRIP": "false"}
    out = subprocess.run(["cargo", "bench", "--bench", "instructions", "--no-run", "--message-format", "json"],
                         cwd=REPO, env=env, check=True, capture_output=True, text=True)
    exe = None
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "instructions" \
                and msg.get("executable"):
            exe = msg["executable"]
    if not exe:
        sys.exit("instructions: cargo built no instructions benchmark")
    return exe


def git_revision() -> str:
    out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    for tool in ("valgrind", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"instructions: {tool} not found (apt-get install valgrind)")
    exe = build()
    with tempfile.TemporaryDirectory() as tmp:
        cg = Path(tmp) / "callgrind.out"
        run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", exe],
                             check=True, capture_output=True, text=True, timeout=1800)
        runs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^RUNS (\w+) (\d+)$", run.stdout, re.M)}
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(cg)],
                             check=True, capture_output=True, text=True).stdout
    ops: dict[str, float] = {}
    for line in ann.splitlines():
        # "  1,234,567 (12.34%)  ???:instructions::op_decide_10 [/path/to/exe]"
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*?:?instructions::(op_\w+)\b", line)
        if m and m.group(2) in runs:
            ops[m.group(2).removeprefix("op_")] = int(m.group(1).replace(",", "")) / runs[m.group(2)]
    missing = sorted(set(runs) - {"op_" + k for k in ops})
    if missing:
        sys.exit(f"instructions: no callgrind count for {missing}:\n{ann[:3000]}")
    for name, count in ops.items():
        print(f"{name:>28}: {count:10,.0f} instructions")
    history = json.loads(OUT.read_text()) if OUT.exists() else {"runs": []}
    history["runs"].append({"revision": git_revision(), "collected": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True,
                                                       text=True).stdout.strip(),
                            "ops": ops})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(history, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
