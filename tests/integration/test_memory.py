"""Memory per Wasm VM in a real Envoy (issue 12; docs/design.md, "Targets"): at most 4 MiB of
linear memory per VM with 10,000 rules and at most 30 MiB with 100,000.

Each VM reads its own linear memory (`memory.size`) right after compiling the policy and logs it
(`policy loaded in … ms, Wasm memory … KiB`). Linear memory never shrinks, so that figure holds
the peak of reading, parsing and compiling the policy, plus the module's stack and static data:
exactly what the VM keeps for as long as it lives. Envoy runs one VM per worker and one on the
main thread; every one of them must be under the target.

The policies are the SNI rules of `make bench-envoy` (bench/envoy_bench.py, the one source of
their shape), so this test and the benchmark report measure the same thing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import sidecar
from harness import Envoy, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from envoy_bench import eg_policy, sni_rules  # noqa: E402

LOADED = re.compile(r"policy loaded in ([\d.]+) ms, Wasm memory (\d+) KiB")
MiB = 1024


def vm_memory_kib(start_envoy: Callable[..., Envoy], wasm: Path, rules: int) -> list[int]:
    """Wasm memory (KiB) of every VM of an Envoy holding `rules` SNI rules (prints each VM's
    compile time too)."""
    patterns, _ = sni_rules(rules)
    policy = json.loads(eg_policy(patterns, 443))
    envoy = start_envoy(sidecar(wasm, policy))
    vms: list[Any] = []

    def loaded() -> bool:
        vms[:] = LOADED.findall(envoy.log_text())
        return len(vms) >= 2  # the main thread's VM and at least one worker's

    wait_until(loaded, timeout=60.0, describe=lambda: f"VMs that logged a loaded policy: {vms}\n{envoy.log_tail()}")
    assert f"rules={rules + 1} " in envoy.log_text(), envoy.log_tail()
    print(f"{rules} rules: compile in VM {[float(ms) for ms, _ in vms]} ms")
    return [int(kib) for _, kib in vms]


@pytest.mark.parametrize("rules,limit_mib", [(10_000, 4), (100_000, 30)])
def test_linear_memory_per_vm(start_envoy: Callable[..., Envoy], wasm_path: Path,
                              rules: int, limit_mib: int) -> None:
    kib = vm_memory_kib(start_envoy, wasm_path, rules)
    print(f"{rules} rules: Wasm memory per VM {kib} KiB")
    assert max(kib) <= limit_mib * MiB, f"{rules} rules: {kib} KiB per VM, target {limit_mib} MiB"
