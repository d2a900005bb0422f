"""Fixtures for the integration tests: Envoy, temp dirs, certificates, namespaces, the .wasm.

Missing prerequisites skip a test with a reason; with ``CI=true`` they fail it instead.

Envoy in a namespace runs as uid 1337, which may not enter the clone (a ``mktemp -d`` or /root
clone is open to its owner only): every file it reads is handed over under the session
directory in /tmp instead -- the module (``wasm_path``), certificates, configs and logs
(``cert``, ``tmp``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from egress import require_hold_upstream
from harness import (REPO, Cert, Envoy, EnvoyNotFound, NetNS, Server, find_envoy, make_cert,
                     share)

S = TypeVar("S", bound=Server)


def in_ci() -> bool:
    """True when ``CI`` is ``true`` (or ``1``/``yes``): skips become failures."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def envoy_cmd() -> list[str]:
    """Command prefix that runs Envoy (see harness.find_envoy)."""
    try:
        return find_envoy()
    except EnvoyNotFound as exc:
        reason = str(exc)
    unavailable(reason)


@pytest.fixture(scope="session")
def session_tmp() -> Iterator[Path]:
    """A session directory under /tmp, traversable by other uids (Envoy may run as 1337).

    Removed at the end unless ``EG_KEEP_TMP`` is set.
    """
    path = Path(tempfile.mkdtemp(prefix="egress-guard-it-"))
    path.chmod(0o755)
    yield path
    if not os.environ.get("EG_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp(session_tmp: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh directory for this test (mode 0755)."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)[:80]
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=session_tmp))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def cert(session_tmp: Path) -> Cert:
    """Self-signed EC P-256 certificate for example.com names, localhost and loopback IPs."""
    return make_cert(session_tmp / "cert",
                     ["example.com", "*.example.com", "localhost", "127.0.0.2", "::1"])


@pytest.fixture
def netns() -> Iterator[NetNS]:
    """A fresh network namespace with lo up; deleted afterwards.

    Request it before ``start_envoy``/``serve`` so it is torn down after them.
    """
    ok, reason = NetNS.available()
    if not ok:
        unavailable(f"network namespaces unavailable: {reason}")
    with NetNS() as ns:
        yield ns


@pytest.fixture
def netns_hosts(netns: NetNS) -> Iterator[Callable[[dict[str, str]], Path]]:
    """``netns_hosts({name: ip})``: names for anything started in ``netns`` afterwards (Envoy
    included). ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over /etc/hosts and
    ``/etc/netns/<ns>/resolv.conf`` over /etc/resolv.conf: the hosts file maps the names, and
    the only nameserver is the namespace's own 127.0.0.1, where nothing listens, so any other
    name fails at once without a query leaving the namespace. Removed after the test."""
    directory = Path("/etc/netns") / netns.name

    def write(names: dict[str, str]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        path = directory / "hosts"
        path.write_text("127.0.0.1 localhost\n"
                        + "".join(f"{ip} {name}\n" for name, ip in names.items()))
        return path

    yield write
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def wasm_path(session_tmp: Path) -> Path:
    """The egress-guard module (``$EGRESS_GUARD_WASM`` or the release build in target/), handed
    over as ``session_tmp/module/egress_guard.wasm`` (mode 0644 in a 0755 directory): an Envoy
    running as uid 1337 loads it even when the clone is closed to that uid."""
    path = Path(os.environ.get("EGRESS_GUARD_WASM")
                or REPO / "target/wasm32-wasip1/release/egress_guard.wasm")
    if not path.is_file():
        unavailable(f"{path} not found: run `make build` or set EGRESS_GUARD_WASM")
    return share(path, session_tmp / "module")


@pytest.fixture
def start_envoy(envoy_cmd: list[str], tmp: Path) -> Iterator[Callable[..., Envoy]]:
    """``start_envoy(config, **Envoy kwargs) -> Envoy`` (started and ready); all stopped after."""
    started: list[Envoy] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Envoy:
        envoy = Envoy(config, tmp / f"envoy{len(started)}", envoy_cmd=envoy_cmd, **kwargs)
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in reversed(started):
        envoy.stop()


@pytest.fixture
def serve() -> Iterator[Callable[[S], S]]:
    """``serve(server) -> server``: starts a harness server and stops it after the test."""
    servers: list[Server] = []

    def start(server: S) -> S:
        servers.append(server)
        server.start()
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def early_data(envoy_cmd: list[str]) -> None:
    """Skip (a version skip, also under CI) on an Envoy whose tcp_proxy has no
    ``max_early_data_bytes``: ``sniff.hold_upstream`` needs it (Envoy >= 1.37)."""
    require_hold_upstream(envoy_cmd)
