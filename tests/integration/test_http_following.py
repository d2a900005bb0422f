"""Every request *and response* on a plaintext HTTP/1 connection is followed (real Envoy).

An ``Upgrade`` or ``CONNECT`` turns a connection into an unchecked tunnel only when the server's
answer *to that request* accepts it. These are the attacks that got past an earlier version,
which took the first server bytes after an upgrade request for its answer:

- ``GET /first`` and ``CONNECT`` in one segment; the server answers the GET ``200`` and the
  CONNECT ``405``. The ``200`` was read as the CONNECT's answer, and a later request for a
  denied name then reached the destination.
- An ``Upgrade`` sent while an earlier response still streams a body that contains
  ``HTTP/1.1 101``: the body was read as the answer.

And the wrong hold: an upgrade request that arrived in the same segment as the bytes behind it
was never forwarded at all. Held bytes now have a deadline (``sniff.timeout_ms``) too.

Every case runs in 16 set-ups: IPv4 and IPv6, with and without ``tls_inspector``, allowlist
(with and without ``sniff.hold_upstream``), audit and passthrough. Every set-up allows
``ok.example.com`` and denies ``evil.example.com`` by name, so the later request is refused in
every mode. The server is scripted: it answers only when the test says, so nothing depends on
timing but the hold timer, which is waited for.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import pytest

from egress import Counters, Via, require_hold_upstream, sidecar
from harness import Connection, Envoy, Server, connect, wait_until

FAMILIES = {"ipv4": "127.0.0.2", "ipv6": "::1"}
TIMEOUT_MS = 1500


@dataclass(frozen=True)
class Setup:
    family: str
    inspector: bool
    mode: str
    hold: bool

    def __str__(self) -> str:
        return "-".join([self.family, "inspector" if self.inspector else "own_parse", self.mode]
                        + (["hold"] if self.hold else []))


SETUPS = [Setup(family, inspector, mode, hold)
          for family in FAMILIES for inspector in (True, False)
          for mode, hold in (("allowlist", False), ("allowlist", True), ("audit", False),
                             ("passthrough", False))]


@dataclass
class Guard:
    setup: Setup
    envoy: Envoy
    via: Via
    ip: str


@pytest.fixture(scope="module", params=SETUPS, ids=str)
def guard(request: pytest.FixtureRequest, envoy_cmd: list[str], wasm_path: Path,
          session_tmp: Path) -> Iterator[Guard]:
    setup: Setup = request.param
    if setup.hold:
        require_hold_upstream(envoy_cmd)
    policy = {
        "mode": setup.mode,
        "allow": [{"name": "ok", "hosts": ["ok.example.com"]}],
        "deny": [{"name": "evil", "hosts": ["evil.example.com"]}],
        "sniff": {"timeout_ms": TIMEOUT_MS, "hold_upstream": setup.hold},
    }
    envoy = Envoy(sidecar(wasm_path, policy, tls_inspector=setup.inspector),
                  session_tmp / f"following-{setup}", envoy_cmd=envoy_cmd)
    try:
        envoy.start()
        yield Guard(setup, envoy, Via(envoy), FAMILIES[setup.family])
    finally:
        envoy.stop()


# --------------------------------------------------------------------------------------------
# A scripted server
# --------------------------------------------------------------------------------------------

Heads = int               # wait until this many request heads arrived on the connection
Send = bytes              # send these bytes
Step = Union[Heads, Send, threading.Event]   # an Event: wait until the test sets it


class ScriptServer(Server):
    """Plays ``script`` on its first connection, then echoes whatever arrives."""

    def __init__(self, host: str, script: list[Step]) -> None:
        super().__init__(host, label="scripted")
        self.script = script

    def handle(self, conn: socket.socket, record: Connection) -> None:
        for step in self.script:
            if isinstance(step, threading.Event):
                step.wait(10)
            elif isinstance(step, bytes):
                conn.sendall(step)
            else:
                while bytes(record.data).count(b"\r\n\r\n") < step:
                    if not self._recv(conn, record):
                        return
        while data := self._recv(conn, record):
            conn.sendall(data)


@contextmanager
def scripted(guard: Guard, script: list[Step]) -> Iterator[ScriptServer]:
    server = ScriptServer(guard.ip, script).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def through(guard: Guard, server: Server, first: bytes) -> Iterator[socket.socket]:
    target = guard.via.to(server.address)
    with connect(target["addr"], target["port"]) as sock:
        sock.sendall(target["proxy_header"] + first)
        sock.settimeout(5)
        yield sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """Reads until ``marker`` has arrived (or the peer closes: then what came)."""
    data = b""
    while marker not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes within ``timeout``, reading (and dropping) what comes first."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def get(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def response(status: str, body: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: ok.example.com\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\n\r\n")
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
FRAME = b"\x81\x85mask!hello"
EVIL = get("evil.example.com", "/secret")


def refused_later(before: Counters, guard: Guard) -> None:
    """The later request for the denied name was refused: counted as such, in every mode."""
    wait_until(lambda: Counters(guard.envoy).since(before).decisions.get(
        ("deny", "later_request")) == 1 or None, 5,
        describe=lambda: f"one later_request denial: {Counters(guard.envoy).since(before)}")


# --------------------------------------------------------------------------------------------
# The bypasses
# --------------------------------------------------------------------------------------------


def test_an_earlier_response_is_not_the_answer_to_connect(guard: Guard) -> None:
    connect_req = b"CONNECT ok.example.com:8080 HTTP/1.1\r\nHost: ok.example.com:8080\r\n\r\n"
    script: list[Step] = [2, response("200 OK", b"first"), response("405 Method Not Allowed")]
    before = Counters(guard.envoy)
    with scripted(guard, script) as server, \
            through(guard, server, get("ok.example.com", "/first") + connect_req) as sock:
        answers = read_until(sock, b"405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        assert answers.count(b"HTTP/1.1 ") == 2, answers
        sock.sendall(EVIL)
        closed = closed_by_peer(sock, 5)
        assert b"evil" not in b"".join(server.received), server.received
        assert closed, "the connection stays open after a refused request"
        refused_later(before, guard)


def test_a_101_inside_an_earlier_body_is_body(guard: Guard) -> None:
    fake = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    rest = b"0123456789"
    evil_sent = threading.Event()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(fake) + len(rest)}\r\n\r\n".encode()
    # The server starts the GET's response, waits for the upgrade request, streams the body's
    # fake answer, waits until the client sent its next request, then ends the body and
    # refuses the upgrade.
    script: list[Step] = [1, head, 2, fake, evil_sent,
                          rest + response("426 Upgrade Required")]
    before = Counters(guard.envoy)
    with scripted(guard, script) as server, \
            through(guard, server, get("ok.example.com", "/stream")) as sock:
        assert head in read_until(sock, head)
        sock.sendall(UPGRADE)
        assert fake in read_until(sock, fake)
        sock.sendall(EVIL)
        evil_sent.set()
        closed = closed_by_peer(sock, 5)
        assert b"evil" not in b"".join(server.received), server.received
        assert closed, "the connection stays open after a refused request"
        refused_later(before, guard)
        assert UPGRADE in b"".join(server.received)


# --------------------------------------------------------------------------------------------
# The wrong hold, and upgrades done right
# --------------------------------------------------------------------------------------------


def test_an_upgrade_goes_and_the_bytes_behind_it_follow_the_answer(guard: Guard) -> None:
    before = Counters(guard.envoy)
    with scripted(guard, [1, SWITCH]) as server, through(guard, server, UPGRADE + FRAME) as sock:
        got = read_until(sock, SWITCH + FRAME)
        assert got == SWITCH + FRAME, got
        sock.sendall(b"more tunnel bytes")
        assert read_until(sock, b"more tunnel bytes") == b"more tunnel bytes"
    assert server.received == [UPGRADE + FRAME + b"more tunnel bytes"]
    delta = Counters(guard.envoy).since(before)
    assert not any(decision == "deny" for decision, _ in delta.decisions), delta


def test_a_pipelined_request_behind_a_refused_upgrade_is_checked(guard: Guard) -> None:
    after = get("ok.example.com", "/after")
    refused = response("200 OK", b"no upgrade")
    with scripted(guard, [1, refused, 2, response("200 OK", b"after")]) as server, \
            through(guard, server, UPGRADE + after) as sock:
        got = read_until(sock, b"after")
        assert got == refused + response("200 OK", b"after"), got
    assert server.received == [UPGRADE + after]

    before = Counters(guard.envoy)
    with scripted(guard, [1, refused]) as server, \
            through(guard, server, UPGRADE + EVIL) as sock:
        assert closed_by_peer(sock, 5)
        refused_later(before, guard)
        assert server.received == [UPGRADE], server.received


def test_connect_becomes_a_tunnel_on_its_own_2xx(guard: Guard) -> None:
    connect_req = b"CONNECT ok.example.com:443 HTTP/1.1\r\nHost: ok.example.com:443\r\n\r\n"
    established = b"HTTP/1.1 200 Connection established\r\n\r\n"
    tunnel = b"\x16\x03\x01 tunnelled, not HTTP"
    with scripted(guard, [1, established]) as server, \
            through(guard, server, connect_req + tunnel) as sock:
        got = read_until(sock, established + tunnel)
        assert got == established + tunnel, got
    assert server.received == [connect_req + tunnel]


# --------------------------------------------------------------------------------------------
# Held bytes have a deadline
# --------------------------------------------------------------------------------------------


def test_bytes_behind_an_unanswered_upgrade_are_closed_at_the_timeout(guard: Guard) -> None:
    before = Counters(guard.envoy)
    with scripted(guard, [1]) as server, through(guard, server, UPGRADE + FRAME) as sock:
        assert closed_by_peer(sock, 4 * TIMEOUT_MS / 1000)
        assert server.received == [UPGRADE], server.received
    delta = wait_until(
        lambda: (d := Counters(guard.envoy).since(before)).decisions.get(
            ("deny", "malformed")) and d, 5, describe=lambda: "the timeout's decision")
    assert delta.malformed.get("upgrade_unanswered") == 1, delta


def test_an_unfinished_later_head_is_closed_at_the_timeout(guard: Guard) -> None:
    before = Counters(guard.envoy)
    first = get("ok.example.com", "/1")
    with scripted(guard, [1, response("200 OK", b"one")]) as server, \
            through(guard, server, first) as sock:
        assert read_until(sock, b"one").endswith(b"one")
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: evil.exa")
        assert closed_by_peer(sock, 4 * TIMEOUT_MS / 1000)
        assert server.received == [first], server.received
    delta = wait_until(
        lambda: (d := Counters(guard.envoy).since(before)).decisions.get(
            ("deny", "malformed")) and d, 5, describe=lambda: "the timeout's decision")
    assert delta.malformed.get("incomplete_at_timeout") == 1, delta
