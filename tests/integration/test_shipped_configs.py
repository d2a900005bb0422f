"""Every Envoy config and example policy the project ships is loaded by the real Envoy.

`--mode validate` builds the whole server configuration, including the Wasm VM and the plugin's
`on_configure`, so a policy the module refuses fails here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from egress import ENVOY_DIR, sidecar, set_module, shipped, wasm_configs
from harness import REPO, Envoy

CONFIGS = sorted(p.name for p in ENVOY_DIR.glob("*.yaml"))
POLICIES = sorted((REPO / "examples" / "policies").glob("*.json"))


def test_there_is_something_to_check() -> None:
    assert CONFIGS and POLICIES


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_envoy_config_validates(name: str, envoy_cmd, wasm_path: Path, tmp: Path) -> None:
    config = set_module(shipped(name), wasm_path)
    assert wasm_configs(config), f"{name} has no egress-guard filter"
    ok, output = Envoy.validate(config, tmp, envoy_cmd=envoy_cmd)
    assert ok, output


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_example_policy_loads(policy: Path, envoy_cmd, wasm_path: Path, tmp: Path) -> None:
    ok, output = Envoy.validate(sidecar(wasm_path, policy.read_text()), tmp, envoy_cmd=envoy_cmd)
    assert ok, output


def test_validate_catches_a_policy_error(envoy_cmd, wasm_path: Path, tmp: Path) -> None:
    """The check above can fail: a bad policy fails validation with the field named."""
    ok, output = Envoy.validate(sidecar(wasm_path, {"mode": "block"}), tmp, envoy_cmd=envoy_cmd)
    assert not ok
    assert "mode: unknown variant `block`" in output, output
