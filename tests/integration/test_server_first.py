"""Server-first protocols and silent clients (SMTP, MySQL, SSH: the server speaks first).

egress-guard waits ``sniff.timeout_ms`` for a client's first bytes, then decides on IP and port
alone (``stream.rs``: ``on_timeout``). Without ``hold_upstream`` the upstream connection opens at
accept, so the server's greeting reaches the client at once while the client's bytes are held;
with ``hold_upstream`` the whole connection is held until that decision, so the greeting comes
after the timeout. After a timeout-allow the first client bytes are still checked
(``Phase::Sniffing { after_timeout: true }``), so a name sent late cannot pass a deny rule; and a
client that stops in the middle of a ClientHello is denied (``incomplete_at_timeout``).

With ``tls_inspector`` the listener first waits its own ``listener_filters_timeout`` (1 s in the
shipped config) for a ClientHello, so everything below happens about a second later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from egress import Counters, Via, decision_log, require_hold_upstream, sidecar
from harness import Envoy, TcpServer, connect, wait_until
from hello import Hello

FAMILIES = {"ipv4": ("127.0.0.2", "127.0.0.3"), "ipv6": ("::1", "::1")}  # (web, db)
TIMEOUT_MS = 300
GREETING = b"220 smtp ready\r\n"
UPSTREAM_CX = "cluster.passthrough.upstream_cx_total"
EVIL_HELLO = Hello.real("evil.example.com").record()
API_HELLO = Hello.real("api.example.com").record()


@dataclass(frozen=True)
class Setup:
    family: str
    inspector: bool
    hold: bool

    def __str__(self) -> str:
        return "-".join([self.family, "inspector" if self.inspector else "own_parse"]
                        + (["hold"] if self.hold else []))


SETUPS = [Setup("ipv4", False, False), Setup("ipv4", False, True),
          Setup("ipv6", False, False), Setup("ipv6", False, True),
          Setup("ipv4", True, False), Setup("ipv6", True, True)]


@dataclass
class World:
    setup: Setup
    envoy: Envoy
    via: Via
    db: TcpServer     # allowed by CIDR and port; speaks first
    web: TcpServer    # allowed by nothing (only api.example.com would be); speaks first

    def open(self, server: TcpServer) -> Any:
        """A client connection to ``server`` through Envoy (PROXY header sent, nothing else)."""
        to = self.via.to(server.address)
        sock = connect(to["addr"], to["port"])
        sock.sendall(to["proxy_header"])
        return sock

    @property
    def patience(self) -> float:
        """Seconds within which any timeout decision must have happened."""
        return 5.0 + (1.0 if self.setup.inspector else 0.0)


@pytest.fixture(scope="module", params=SETUPS, ids=str)
def world(request: pytest.FixtureRequest, envoy_cmd: list[str], wasm_path: Path,
          session_tmp: Path) -> Iterator[World]:
    """One Envoy and two servers per set-up, shared by the tests (each looks only at the
    connections it made)."""
    setup: Setup = request.param
    if setup.hold:
        require_hold_upstream(envoy_cmd)
    web_ip, db_ip = FAMILIES[setup.family]
    db = TcpServer(db_ip, greeting=GREETING, label="db").start()
    web = TcpServer(web_ip, greeting=GREETING, label="web").start()
    policy = {
        "allow": [{"name": "api", "hosts": ["api.example.com"]},
                  {"name": "db", "cidrs": [db_ip], "ports": [db.port]}],
        "deny": [{"name": "evil", "hosts": ["evil.example.com"]}],
        "sniff": {"timeout_ms": TIMEOUT_MS, "hold_upstream": setup.hold},
    }
    envoy = Envoy(sidecar(wasm_path, policy, tls_inspector=setup.inspector),
                  session_tmp / f"server-first-{setup}", envoy_cmd=envoy_cmd)
    try:
        envoy.start()
        yield World(setup, envoy, Via(envoy), db, web)
    finally:
        envoy.stop()
        db.stop()
        web.stop()


def read_exactly(sock: Any, n: int, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_to_close(sock: Any, timeout: float) -> tuple[bytes, bool]:
    """Everything until EOF or reset: (bytes, closed); closed False after ``timeout`` idle."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        except TimeoutError:
            return data, False
        if not chunk:
            return data, True
        data += chunk


def test_greeting_reaches_a_silent_client(world: World) -> None:
    """Allowed by CIDR and port: the client sends nothing and still gets the greeting; then it
    speaks and is echoed."""
    before = Counters(world.envoy)
    db_seen = len(world.db.conns)
    started = time.monotonic()
    with world.open(world.db) as sock:
        assert read_exactly(sock, len(GREETING), world.patience) == GREETING
        waited = time.monotonic() - started
        at_greeting = Counters(world.envoy).since(before)
        sock.sendall(b"EHLO client.example\r\n")
        assert read_exactly(sock, 21, 5) == b"EHLO client.example\r\n"
    delta = Counters(world.envoy).since(before)

    assert world.db.received[db_seen:] == [b"EHLO client.example\r\n"]
    assert delta.decisions == {("allow", "rule"): 1} and delta.rules == {"db": 1}, delta
    if world.setup.hold:
        # Held: the upstream connection (and so the greeting) waited for the timeout decision.
        assert at_greeting.sniff == {"timeout": 1}, at_greeting
        assert at_greeting.decisions == {("allow", "rule"): 1}, at_greeting
        assert waited >= TIMEOUT_MS / 1000 * 0.8, waited
    elif not at_greeting.sniff:
        # Not held: the greeting came before any decision; the client's first bytes (a line
        # that is neither TLS nor HTTP) then decided it on IP and port.
        assert delta.sniff == {"other": 1}, delta
    else:
        # The client was slower than the timeout (a loaded machine): decided at the timeout.
        assert delta.sniff == {"timeout": 1}, delta


def test_silent_client_to_a_denied_destination_is_closed_at_the_timeout(world: World) -> None:
    before = Counters(world.envoy)
    web_seen = len(world.web.conns)
    started = time.monotonic()
    with world.open(world.web) as sock:
        data, closed = read_to_close(sock, world.patience)
    waited = time.monotonic() - started
    delta = Counters(world.envoy).since(before)

    assert closed, (data, delta)
    assert waited >= TIMEOUT_MS / 1000 * 0.8, waited
    assert delta.sniff == {"timeout": 1}, delta
    assert delta.decisions == {("deny", "no_match"): 1}, delta
    assert all(got == b"" for got in world.web.received[web_seen:]), world.web.received
    if world.setup.hold:
        assert data == b"" and world.web.connections == web_seen
        assert delta.envoy.get(UPSTREAM_CX, 0) == 0, delta
    else:
        # The upstream connection opened at accept, so the server's greeting may have reached
        # the client: server-to-client bytes are not egress. The server got no client byte.
        assert data in (b"", GREETING), data


def test_partial_client_hello_then_silence_is_denied(world: World) -> None:
    """Ten bytes of a ClientHello, then nothing, to a destination the CIDR rule allows: a name
    could still follow, so the timeout denies it (malformed, incomplete_at_timeout)."""
    before = Counters(world.envoy)
    db_seen = len(world.db.conns)
    with world.open(world.db) as sock:
        sock.sendall(EVIL_HELLO[:10])
        data, closed = read_to_close(sock, world.patience)
    delta = Counters(world.envoy).since(before)

    assert closed, (data, delta)
    assert delta.sniff == {"timeout": 1}, delta
    assert delta.decisions == {("deny", "malformed"): 1}, delta
    assert delta.malformed == {"incomplete_at_timeout": 1}, delta
    assert all(got == b"" for got in world.db.received[db_seen:]), world.db.received
    entry = wait_until(lambda: [e for e in decision_log(world.envoy)
                                if e.get("detail") == "incomplete_at_timeout"][-1:] or None, 5,
                       describe="the incomplete_at_timeout decision log line")[0]
    assert (entry["decision"], entry["reason"], entry["proto"]) == ("deny", "malformed", "other")
    assert entry["dst"].endswith(f":{world.db.port}"), entry
    if world.setup.hold:
        assert data == b"" and len(world.db.conns) == db_seen
        assert delta.envoy.get(UPSTREAM_CX, 0) == 0, delta


def wait_for_timeout_decision(world: World, before: Counters) -> Counters:
    """The counters once the timeout's decision is counted.

    Envoy's admin reads one stat after another while the worker increments them, so one read can
    hold the sniff outcome without the decision counted beside it (decisions sort first): wait for
    both."""
    return wait_until(lambda: (d := Counters(world.envoy).since(before)).sniff.get("timeout")
                      and d.decisions and d, world.patience, describe="the timeout decision")


@pytest.mark.parametrize(("hello", "allowed"), [(EVIL_HELLO, False), (API_HELLO, True)],
                         ids=["denied_name", "allowed_name"])
def test_name_sent_after_the_timeout_is_still_checked(world: World, hello: bytes,
                                                      allowed: bool) -> None:
    """Silent past the timeout (allowed on IP and port), then a ClientHello: a name the deny
    rule matches is still denied; an allowed one passes."""
    before = Counters(world.envoy)
    db_seen = len(world.db.conns)
    with world.open(world.db) as sock:
        at_timeout = wait_for_timeout_decision(world, before)
        assert at_timeout.decisions == {("allow", "rule"): 1}, at_timeout
        assert read_exactly(sock, len(GREETING), 5) == GREETING
        sock.sendall(hello)
        if allowed:
            assert read_exactly(sock, len(hello), 5) == hello
        else:
            assert read_to_close(sock, 5) == (b"", True)
    delta = Counters(world.envoy).since(before)

    new = world.db.received[db_seen:]
    assert len(new) == 1 and new[0] == (hello if allowed else b""), new
    late = ("allow", "rule") if allowed else ("deny", "deny_rule")
    expected = {("allow", "rule"): 2} if allowed else {("allow", "rule"): 1, late: 1}
    assert delta.decisions == expected, delta
    assert delta.sniff == {"timeout": 1, "tls_sni": 1}, delta


def test_partial_client_hello_after_the_timeout_is_denied(world: World) -> None:
    """Silent past the timeout (allowed on IP and port), then ten bytes of a ClientHello and
    silence again: the connection is not held forever; after one more timeout it is denied
    (malformed, incomplete_at_timeout), and the server got no client byte."""
    before = Counters(world.envoy)
    db_seen = len(world.db.conns)
    with world.open(world.db) as sock:
        wait_for_timeout_decision(world, before)
        assert read_exactly(sock, len(GREETING), 5) == GREETING
        sock.sendall(EVIL_HELLO[:10])
        data, closed = read_to_close(sock, world.patience)
    delta = Counters(world.envoy).since(before)

    assert closed and data == b"", (data, delta)
    assert delta.decisions == {("allow", "rule"): 1, ("deny", "malformed"): 1}, delta
    assert delta.malformed == {"incomplete_at_timeout": 1}, delta
    assert delta.sniff == {"timeout": 2}, delta
    assert world.db.received[db_seen:] == [b""], world.db.received
