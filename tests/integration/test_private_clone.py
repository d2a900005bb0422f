"""Runs from any clone: one only its owner can enter (``mktemp -d`` makes it 0700, /root is 0700).

The namespace tests and ``make demo`` run Envoy as uid 1337, which cannot open anything inside
such a clone, such as the module under target/. The harness and the demo hand Envoy copies in a
temporary directory anyone may traverse instead. (The binary may stay in the clone's .venv:
setpriv execs it while still holding root's capabilities.)

``private_clone`` stands in for ``git clone`` into ``mktemp -d``: the working tree's harness,
tests, Envoy configs and examples copied under a 0700 directory, with the module at the clone's
target/ path and the Envoy binary in the clone's .venv. From there a namespace test and the demo
run as they would in that clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import unavailable
from egress import Via, decisions, sidecar
from harness import PROXY_UID, REPO, Envoy, HarnessError, NetNS, share, tcp_exchange

MODULE = Path("target/wasm32-wasip1/release/egress_guard.wasm")
BINARY = Path(".venv/bin/envoy")


def as_proxy(*cmd: str) -> int:
    """Exit code of ``cmd`` run as uid 1337, the way the harness runs Envoy."""
    return subprocess.run(["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
                           "--clear-groups", *cmd], capture_output=True, timeout=30,
                          check=False).returncode


@pytest.fixture
def private_clone(tmp: Path, wasm_path: Path, envoy_cmd: list[str]) -> Path:
    """``<tmp>/private`` (0700) ``/egress-guard``: tests/integration, envoy/ and examples/ of
    the working tree, the module at target/..., Envoy at .venv/bin/envoy. Uid 1337 can open
    neither (checked)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        unavailable("an owner-only clone needs root and setpriv to run Envoy as uid 1337")
    if len(envoy_cmd) != 1:
        unavailable(f"needs an Envoy binary, not {envoy_cmd}")
    private = tmp / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    clone = private / "egress-guard"
    for part in ("tests/integration", "envoy", "examples"):
        shutil.copytree(REPO / part, clone / part,
                        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (clone / MODULE).parent.mkdir(parents=True)
    shutil.copyfile(wasm_path, clone / MODULE)
    (clone / BINARY).parent.mkdir(parents=True)
    try:
        os.link(envoy_cmd[0], clone / BINARY)
    except OSError:
        shutil.copy2(envoy_cmd[0], clone / BINARY)

    assert as_proxy("test", "-r", str(clone / MODULE)) != 0, "uid 1337 can read the module"
    assert as_proxy("test", "-x", str(clone / BINARY)) != 0, "uid 1337 can reach the binary"
    assert as_proxy("test", "-r", str(wasm_path)) == 0   # the harness's own copy: it can
    return clone


def run_in(clone: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``python argv`` in the clone, Envoy found as the clone's (ENVOY_BIN), the module
    left to the clone's default path, and ``CI=true``: a skip there is a failure."""
    if not NetNS.available()[0]:
        unavailable(f"network namespaces unavailable: {NetNS.available()[1]}")
    env = {k: v for k, v in os.environ.items() if k not in ("EGRESS_GUARD_WASM", "PYTHONPATH")}
    env.update(CI="true", ENVOY_BIN=str(clone / BINARY), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, *argv], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_namespace_test_runs_from_an_owner_only_clone(private_clone: Path) -> None:
    """A sidecar test -- Envoy as uid 1337 in a namespace, loading the module and filtering
    traffic -- passes when run from the clone with nothing pointed elsewhere."""
    run = run_in(private_clone, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/integration/test_sidecar_netns.py::"
                 "test_shipped_policy_lets_github_out_and_stops_the_rest")
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


# The demo's app traffic (examples/demo/policy.json) and what its policy decides.
DEMO_OUTCOMES = {
    "github.com": "ALLOWED", "api.github.com": "ALLOWED", "files.pythonhosted.org": "ALLOWED",
    "exfil.example.com": "DENIED", "deb.debian.org": "ALLOWED", "evil.example.com": "DENIED",
    "orders-db": "ALLOWED", "unknown database": "DENIED", "cloud metadata": "DENIED",
}


def test_demo_runs_from_an_owner_only_clone(private_clone: Path) -> None:
    """``make demo``'s command from the clone: every case decided as the policy says, allowed
    ones reaching their destination, denied ones not a byte; nothing left behind."""
    run = run_in(private_clone, "examples/demo/demo.py")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    outcomes = {m["label"]: (m["outcome"], m["got"]) for m in re.finditer(
        r"^  (?:TLS|HTTP|TCP)\s+(?P<label>.+?)\s+→ \S+\s+(?P<outcome>ALLOWED|DENIED)\s+"
        r"(?P<got>.+)$", run.stdout, re.MULTILINE)}
    assert {label: o for label, (o, _) in outcomes.items()} == DEMO_OUTCOMES, output
    for label, (outcome, got) in outcomes.items():
        assert (got == "nothing") == (outcome == "DENIED"), (label, got)
    assert run.stdout.count('{"decision"') == len(DEMO_OUTCOMES), output

    namespace = re.search(r"app namespace (eg-[0-9a-f]+)", run.stdout)
    assert namespace, output
    assert namespace[1] not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                              text=True, check=True).stdout


def test_envoy_as_proxy_uid_refuses_a_module_it_cannot_open(private_clone: Path,
                                                            envoy_cmd: list[str],
                                                            tmp: Path) -> None:
    """The harness names the file rather than let Envoy fail on ``Invalid path``; handed a
    copy (harness.share), the same Envoy as uid 1337 loads the module and decides."""
    module = private_clone / MODULE
    with pytest.raises(HarnessError, match=re.escape(str(module))):
        Envoy(sidecar(module, {}), tmp / "refused", uid=PROXY_UID, envoy_cmd=envoy_cmd).start()

    copy = share(module, tmp / "shared")
    assert copy.stat().st_mode & 0o777 == 0o644
    assert copy.parent.stat().st_mode & 0o777 == 0o755
    envoy = Envoy(sidecar(copy, {}), tmp / "shared-envoy", uid=PROXY_UID, envoy_cmd=envoy_cmd)
    try:
        envoy.start()
        denied = tcp_exchange(**Via(envoy).to(("127.0.0.9", 7000)), send=b"hello")
        assert denied.received == b"" and denied.closed_by_peer, denied
        assert decisions(envoy, "deny", "no_match") == 1   # `{}` denies everything
    finally:
        envoy.stop()
