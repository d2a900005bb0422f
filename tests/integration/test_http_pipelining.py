"""Every request on a plaintext HTTP/1 connection is checked, not only the first (real Envoy).

Keep-alive and pipelined requests on the network filter's TCP chain: a later request whose Host is
not allowed closes the connection before one of its bytes is forwarded, counted and logged with
reason `later_request`. Request bodies are skipped by their framing, so a request-shaped body is
not mistaken for a request; an upgrade turns the connection into a tunnel only when the server
agrees.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from egress import Via, decision_log, decisions, sidecar, sniffed
from harness import Connection, Envoy, HttpServer, Server, connect

DST = "127.0.0.2"
POLICY = {"allow": [{"name": "ok", "hosts": ["ok.example.com", "also-ok.example.com"]}]}


@pytest.fixture
def guard(start_envoy: Callable[..., Envoy], wasm_path: Path) -> Callable[..., tuple[Envoy, Via]]:
    def start(policy: dict[str, Any] = POLICY) -> tuple[Envoy, Via]:
        envoy = start_envoy(sidecar(wasm_path, policy, tls_inspector=False))
        return envoy, Via(envoy)
    return start


@contextmanager
def through(via: Via, server: Server, first: bytes) -> Iterator[socket.socket]:
    """A connection to ``server`` through Envoy, its PROXY header and ``first`` already sent."""
    target = via.to(server.address)
    with connect(target["addr"], target["port"]) as sock:
        sock.sendall(target["proxy_header"] + first)
        sock.settimeout(3)
        yield sock


def get(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def read_responses(sock: socket.socket, count: int, timeout: float = 3.0) -> tuple[list[bytes], bool]:
    """Reads up to ``count`` responses (each ends with its body ``hello from ...``); returns them
    and whether the peer closed."""
    sock.settimeout(timeout)
    data, closed = b"", False
    while data.count(b"hello from") < count:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    responses = [r for r in data.split(b"HTTP/1.1 ") if r]
    return responses, closed


def test_keep_alive_requests_are_each_checked(guard, serve) -> None:
    server = serve(HttpServer(DST, label="web"))
    envoy, via = guard()
    with through(via, server, get("ok.example.com", "/1")) as sock:
        first, _ = read_responses(sock, 1)
        sock.sendall(get("also-ok.example.com", "/2"))
        second, _ = read_responses(sock, 1)
        sock.sendall(get("evil.example.com", "/3"))
        third, closed = read_responses(sock, 1)
    assert first[0].startswith(b"200") and second[0].startswith(b"200"), (first, second)
    assert third == [] and closed
    assert server.requests == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]
    assert b"evil" not in b"".join(server.received)
    assert decisions(envoy, "allow", "rule") == 2
    assert decisions(envoy, "deny", "later_request") == 1
    assert sniffed(envoy, "http_later_request") == 2
    entry = decision_log(envoy)[-1]
    assert (entry["reason"], entry["detail"], entry["request"], entry["name"]) == (
        "later_request", "no_match", 3, "evil.example.com")


def test_pipelined_requests_are_checked_before_any_is_forwarded(guard, serve) -> None:
    server = serve(HttpServer(DST))
    envoy, via = guard()
    with through(via, server, get("ok.example.com") + get("evil.example.com")) as sock:
        responses, closed = read_responses(sock, 2)
    assert responses == [] and closed
    assert all(data == b"" for data in server.received), server.received
    assert decisions(envoy, "deny", "later_request") == 1


def test_a_request_sent_with_the_start_of_the_next_goes_at_once(guard, serve) -> None:
    """An allowed request and the first bytes of the next head in one segment: the request goes
    (its answer comes back) while only the unfinished head waits, as if they had come apart."""
    server = serve(HttpServer(DST))
    envoy, via = guard()
    rest = get("also-ok.example.com", "/2")
    with through(via, server, get("ok.example.com", "/1") + rest[:20]) as sock:
        first, closed = read_responses(sock, 1)
        assert len(first) == 1 and first[0].startswith(b"200") and not closed, first
        assert server.requests == ["GET /1 HTTP/1.1"]
        sock.sendall(rest[20:])
        second, _ = read_responses(sock, 1)
    assert len(second) == 1 and second[0].startswith(b"200"), second
    assert server.requests == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]
    assert decisions(envoy, "allow", "rule") == 2


def test_allowed_pipelined_requests_all_pass(guard, serve) -> None:
    server = serve(HttpServer(DST))
    envoy, via = guard()
    pipelined = get("ok.example.com", "/a") + get("also-ok.example.com", "/b") + get(
        "ok.example.com", "/c")
    with through(via, server, pipelined) as sock:
        responses, _ = read_responses(sock, 3)
    assert len(responses) == 3 and all(r.startswith(b"200") for r in responses), responses
    assert server.requests == ["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /c HTTP/1.1"]
    assert decisions(envoy, "allow", "rule") == 3


def test_a_request_shaped_body_is_body(guard, serve) -> None:
    server = serve(HttpServer(DST))
    envoy, via = guard()
    smuggled = get("evil.example.com")
    post = (f"POST /upload HTTP/1.1\r\nHost: ok.example.com\r\nContent-Length: {len(smuggled)}"
            "\r\n\r\n").encode() + smuggled
    with through(via, server, post + get("ok.example.com", "/next")) as sock:
        responses, _ = read_responses(sock, 2)
    assert len(responses) == 2, responses
    assert server.requests == ["POST /upload HTTP/1.1", "GET /next HTTP/1.1"]
    assert decisions(envoy, "deny", "later_request") == 0


class UpgradeServer(Server):
    """Answers the first request with ``101`` (or ``status``), then echoes raw bytes."""

    def __init__(self, host: str, status: bytes) -> None:
        super().__init__(host)
        self.status = status

    def handle(self, conn: socket.socket, record: Connection) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._recv(conn, record)
            if not chunk:
                return
            data += chunk
        conn.sendall(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: 0\r\n\r\n")
        while chunk := self._recv(conn, record):
            conn.sendall(chunk)


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: ok.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_accepted_upgrade_becomes_a_tunnel(guard, serve) -> None:
    server = serve(UpgradeServer(DST, b"101 Switching Protocols"))
    envoy, via = guard()
    with through(via, server, UPGRADE) as sock:
        answer = sock.recv(65536)
        frame = b"\x81\x85not-http"
        sock.sendall(frame)
        echoed = b""
        while len(echoed) < len(frame):
            echoed += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    assert echoed == frame
    assert decisions(envoy, "deny", "malformed") == 0


def test_refused_upgrade_keeps_checking(guard, serve) -> None:
    server = serve(UpgradeServer(DST, b"200 OK"))
    envoy, via = guard()
    with through(via, server, UPGRADE) as sock:
        answer = sock.recv(65536)
        sock.sendall(get("evil.example.com"))
        sock.settimeout(3)
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert rest == b""
    assert b"evil" not in b"".join(server.received)
    assert decisions(envoy, "deny", "later_request") == 1
