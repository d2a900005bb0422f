"""Hostile first bytes against the shipped sidecar listener and a real Envoy.

Every case runs in 16 set-ups: IPv4 and IPv6 destinations, with and without ``tls_inspector``,
and in allowlist (with and without ``sniff.hold_upstream``), audit and passthrough (with
``hold_upstream``). Every set-up has the same rules: allow ``api.example.com`` by name, allow
one destination (the ``db`` server) by CIDR and port, and deny ``evil.example.com`` by name -- in
passthrough that deny host rule is what makes egress-guard read the first bytes at all (without
one, passthrough decides at connection open without parsing).

A case sends bytes and checks, against exact counter deltas:

- a denial reaches nothing: the client gets no byte and is closed, the destination received no
  byte, and with ``hold_upstream`` Envoy opened no upstream connection at all;
- malformed input (a ClientHello or request head that breaks its rules, or a name that is not a
  host name) is denied in every mode -- audit and passthrough included -- so garbling a denied name
  cannot slip it past the deny host rule; the malformed kind is counted;
- input that carries no name (a ClientHello without SNI, an SNI that is an IP literal) is decided
  on IP and port: allowed by the CIDR rule, denied (allowlist) or counted (audit) elsewhere.

Where ``tls_inspector`` reads the ClientHello first, some outcomes differ, and each case says how:
BoringSSL hands over a name egress-guard then finds malformed (``inspector_sni``), or rejects the
ClientHello so egress-guard parses it itself, or (a ClientHello over its own limit) closes the
connection before any network filter runs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import Counters, Via, require_hold_upstream, sidecar
from harness import Envoy, TcpServer, connect, envoy_release, wait_until
from hello import MAX_RECORD, Hello, handshake, record, records, sni_ext

FAMILIES = {"ipv4": ("127.0.0.2", "127.0.0.3"), "ipv6": ("::1", "::1")}  # (web, db)
MAX_BYTES = 2048
UPSTREAM_CX = "cluster.passthrough.upstream_cx_total"


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
                             ("passthrough", True))]


@dataclass
class Guard:
    setup: Setup
    envoy: Envoy
    via: Via
    web_ip: str
    db: TcpServer


@pytest.fixture(scope="module", params=SETUPS, ids=str)
def guard(request: pytest.FixtureRequest, envoy_cmd: list[str], wasm_path: Path,
          session_tmp: Path) -> Iterator[Guard]:
    """One Envoy per set-up, shared by the cases; each case diffs the counters."""
    setup: Setup = request.param
    if setup.hold:
        require_hold_upstream(envoy_cmd)
    web_ip, db_ip = FAMILIES[setup.family]
    db = TcpServer(db_ip, label="db").start()
    policy = {
        "mode": setup.mode,
        "allow": [{"name": "api", "hosts": ["api.example.com"]},
                  {"name": "db", "cidrs": [db_ip], "ports": [db.port]}],
        "deny": [{"name": "evil", "hosts": ["evil.example.com"]}],
        "sniff": {"max_bytes": MAX_BYTES, "timeout_ms": 5000, "hold_upstream": setup.hold},
    }
    envoy = Envoy(sidecar(wasm_path, policy, tls_inspector=setup.inspector),
                  session_tmp / f"adversarial-{setup}", envoy_cmd=envoy_cmd)
    try:
        envoy.start()
        yield Guard(setup, envoy, Via(envoy), web_ip, db)
    finally:
        envoy.stop()
        db.stop()


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What egress-guard should make of a case.

    ``expect``: ``malformed``, ``too_large``, ``deny_rule`` (denied in every mode);
    ``allowed_name`` (allowed by the ``api`` rule); ``no_name`` (decided on IP and port);
    ``inspector_closes`` (``tls_inspector`` refuses it; egress-guard never runs);
    ``inspector_refuses`` (an older ``tls_inspector`` closes it without a counter; see
    OLD_INSPECTOR_REFUSES).
    ``outcomes``: the sniff outcomes of which exactly one is counted.
    """

    expect: str
    outcomes: tuple[str, ...] = ("malformed",)
    kind: str | None = None


@dataclass(frozen=True)
class Case:
    id: str
    chunks: tuple[bytes, ...]
    own: Seen
    inspector: Seen | None = None  # when tls_inspector makes a difference
    to_db: bool = False            # sent to the destination the CIDR rule allows
    delay: float = 0.0             # between chunks

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def one(case_id: str, data: bytes, own: Seen, **kw: Any) -> Case:
    return Case(case_id, (data,), own, **kw)


def malformed(kind: str, outcome: str = "malformed") -> Seen:
    return Seen("malformed", (outcome,), kind)


API = Hello.real("api.example.com")
EVIL = Hello.real("evil.example.com")
EVIL_MSG = EVIL.message()
BIG_PAD = 20000  # over tls_inspector's ClientHello limit (16 KiB) as well as sniff.max_bytes


def ssl2_hello() -> bytes:
    """An SSLv2-compatible ClientHello (RFC 5246 E.2): 2-byte header with the high bit set."""
    body = (bytes([1, 3, 1]) + (3).to_bytes(2, "big") + (0).to_bytes(2, "big")
            + (16).to_bytes(2, "big") + b"\x00\x00\x2f" + bytes(16))
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xff]) + body


TLS_CASES = [
    # Size
    one("hello_over_both_limits", EVIL.padded_to(BIG_PAD).record(),
        Seen("too_large", ("too_large",)), inspector=Seen("inspector_closes", ())),
    one("hello_over_max_bytes", EVIL.padded_to(MAX_BYTES + 1000).record(),
        Seen("too_large", ("too_large",)),
        # Under tls_inspector's own limit: BoringSSL reads the whole ClientHello and hands over
        # the name, which the deny rule matches.
        inspector=Seen("deny_rule", ("inspector_sni",))),
    # Lengths that lie
    one("record_length_over_2_14", record(EVIL_MSG, length=MAX_RECORD + 1),
        malformed("tls_record_length")),
    one("record_length_zero", record(b"", length=0) + record(EVIL_MSG),
        malformed("tls_record_length"),
        # BoringSSL skips an empty handshake record and reads the ClientHello behind it, as a
        # TLS server would: the name is what decides.
        inspector=Seen("deny_rule", ("inspector_sni",))),
    one("record_length_short", record(EVIL_MSG, length=len(EVIL_MSG) - 4),
        malformed("tls_record_type")),
    one("record_length_long_then_ccs",
        record(EVIL_MSG, length=len(EVIL_MSG) + 6) + record(b"\x01", content_type=20),
        malformed("tls_trailing_handshake_data")),
    one("handshake_length_short", record(handshake(EVIL.body(), length=40)),
        malformed("tls_trailing_handshake_data")),
    one("handshake_length_short_record_too", record(handshake(EVIL.body()[:40], length=40)),
        malformed("tls_handshake_length")),
    one("handshake_length_long_then_ccs",
        record(handshake(EVIL.body(), length=len(EVIL.body()) + 100))
        + record(b"\x01", content_type=20),
        malformed("tls_record_type")),
    one("sslv2_hello", ssl2_hello(), malformed("tls_sslv2_hello")),
    # SNI shapes
    one("two_names", EVIL.with_sni_ext(sni_ext(b"api.example.com", b"evil.example.com")).record(),
        malformed("tls_sni_multiple_names")),
    one("two_server_name_extensions",
        Hello(**{**EVIL.__dict__, "extensions": [(0, sni_ext(b"api.example.com"))]
                 + EVIL.extensions}).record(),
        malformed("tls_sni_duplicate_extension")),
    one("empty_name", EVIL.with_name(b"").record(), malformed("tls_sni_empty_name")),
    one("empty_server_name_extension", EVIL.with_sni_ext(b"").record(),
        malformed("tls_sni_empty_extension")),
    one("name_type_not_host_name", EVIL.with_sni_ext(sni_ext(b"evil.example.com", name_type=1))
        .record(), malformed("tls_sni_name_type")),
    one("name_over_255_bytes",
        EVIL.with_name(b".".join([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 50])
                       + b".evil.example.com").record(),
        malformed("name_too_long", "tls_sni")),
    one("name_with_space", EVIL.with_name(b"evil.example.com .api.example.com").record(),
        malformed("bad_byte", "tls_sni"),
        inspector=malformed("bad_byte", "inspector_sni")),
    one("name_with_nul", EVIL.with_name(b"api.example.com\x00evil.example.com").record(),
        # BoringSSL refuses a NUL in a host_name: egress-guard parses the ClientHello itself.
        malformed("bad_byte", "tls_sni")),
    one("name_non_ascii", EVIL.with_name("evil.exämple.com".encode()).record(),
        malformed("tls_sni_non_ascii"),
        inspector=malformed("bad_byte", "inspector_sni")),
    one("name_uppercase_trailing_dot", EVIL.with_name(b"EVIL.Example.COM.").record(),
        Seen("deny_rule", ("tls_sni",)), inspector=Seen("deny_rule", ("inspector_sni",))),
    # ECH (the policy's default "ech": "allow"): decided on the outer SNI. ech_outer_extensions
    # belongs inside the encrypted inner hello only (RFC 9849 §5.1): on the wire it is malformed.
    one("ech_grease_allowed_name", API.with_ech().record(), Seen("allowed_name", ("tls_sni",)),
        inspector=Seen("allowed_name", ("inspector_sni",))),
    one("ech_grease_denied_name", EVIL.with_ech().record(), Seen("deny_rule", ("tls_sni",)),
        inspector=Seen("deny_rule", ("inspector_sni",))),
    one("ech_outer_extensions_on_the_wire",
        replace(API.with_ech(), extensions=[*API.with_ech().extensions, (0xFD00, b"\x02\x00\x0a")])
        .record(),
        malformed("tls_ech_outer_extensions"),
        # tls_inspector hands over the SNI at open and the hello is not read.
        inspector=Seen("allowed_name", ("inspector_sni",))),
    # No usable name: decided on IP and port
    one("no_sni", EVIL.with_sni_ext(None).record(), Seen("no_name", ("tls_no_sni",))),
    one("no_sni_cidr_allowed", EVIL.with_sni_ext(None).record(),
        Seen("no_name", ("tls_no_sni",)), to_db=True),
    one("sni_ip_literal", EVIL.with_name(b"127.0.0.9").record(),
        Seen("no_name", ("tls_sni",)), inspector=Seen("no_name", ("inspector_sni",))),
    one("sni_ip_literal_cidr_allowed", EVIL.with_name(b"127.0.0.9").record(),
        Seen("no_name", ("tls_sni",)), inspector=Seen("no_name", ("inspector_sni",)),
        to_db=True),
    # Split across records, one byte at a time: the name is still found
    Case("split_records_bytewise_allowed", tuple(bytes([b]) for b in records(API.message(), 60)),
         Seen("allowed_name", ("tls_sni",)),
         inspector=Seen("allowed_name", ("inspector_sni", "tls_sni")), delay=0.0005),
    Case("split_records_bytewise_denied", tuple(bytes([b]) for b in records(EVIL_MSG, 60)),
         Seen("deny_rule", ("tls_sni",)),
         inspector=Seen("deny_rule", ("inspector_sni", "tls_sni")), delay=0.0005),
]


def http(line: str, *headers: str) -> bytes:
    return (line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("utf-8")


HTTP_CASES = [
    one("host_allowed", http("GET / HTTP/1.1", "Host: api.example.com"),
        Seen("allowed_name", ("http_host",))),
    one("host_denied", http("GET / HTTP/1.1", "Host: evil.example.com:80"),
        Seen("deny_rule", ("http_host",))),
    one("host_userinfo", http("GET / HTTP/1.1", "Host: api.example.com@evil.example.com"),
        malformed("http_host_value")),
    one("host_with_spaces", http("GET / HTTP/1.1", "Host: evil.example.com api.example.com"),
        malformed("http_host_value")),
    one("host_bad_port", http("GET / HTTP/1.1", "Host: evil.example.com:99999"),
        malformed("bad_port", "http_host")),
    one("host_port_not_a_number", http("GET / HTTP/1.1", "Host: evil.example.com:80x"),
        malformed("bad_port", "http_host")),
    one("two_host_headers", http("GET / HTTP/1.1", "Host: api.example.com",
                                 "Host: evil.example.com"),
        malformed("http_duplicate_host")),
    one("host_with_comma", http("GET / HTTP/1.1", "Host: api.example.com, evil.example.com"),
        malformed("http_host_value")),
    one("host_empty", http("GET / HTTP/1.1", "Host:"), malformed("http_host_value")),
    one("host_non_ascii", http("GET / HTTP/1.1", "Host: evil.exämple.com"),
        malformed("http_host_value")),
    one("host_obs_fold", http("GET / HTTP/1.1", "Host: api.example.com", " evil.example.com"),
        malformed("http_obs_fold")),
    one("absolute_form_disagrees_with_host",
        http("GET http://evil.example.com/ HTTP/1.1", "Host: api.example.com"),
        malformed("http_host_mismatch")),
    one("absolute_form_with_userinfo",
        http("GET http://api.example.com@evil.example.com/ HTTP/1.1", "Host: evil.example.com"),
        malformed("http_request_target")),
    one("bare_lf", b"GET / HTTP/1.1\nHost: evil.example.com\n\n", malformed("http_bare_lf")),
    one("empty_line_before_request",
        b"\r\n" + http("GET / HTTP/1.1", "Host: evil.example.com"),
        malformed("http_leading_whitespace")),
    one("host_mixed_case_trailing_dot", http("get / HTTP/1.1", "hOsT: EVIL.example.com."),
        Seen("deny_rule", ("http_host",))),
    one("connect_authority_form",
        http("CONNECT evil.example.com:443 HTTP/1.1", "Host: evil.example.com:443"),
        Seen("deny_rule", ("http_host",))),
    Case("host_allowed_bytewise",
         tuple(bytes([b]) for b in http("GET / HTTP/1.1", "Host: api.example.com")),
         Seen("allowed_name", ("http_host",)), delay=0.0005),
    # HTTP/2 with prior knowledge carries its name HPACK-coded in a HEADERS frame: egress-guard
    # does not read it (documented), so the connection is decided on IP and port as `other`.
    one("h2_prior_knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9),
        Seen("no_name", ("other",))),
]


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    received: bytes
    closed: bool


def exchange(via: Via, dst: tuple[str, int], chunks: tuple[bytes, ...], delay: float,
             expect_echo: int) -> Outcome:
    """Send ``chunks`` (``delay`` apart) after the PROXY header; read until ``expect_echo``
    bytes, EOF or reset (``closed``), or 3 s of silence."""
    to = via.to(dst)
    received = b""
    with connect(to["addr"], to["port"], timeout=5) as sock:
        try:
            sock.sendall(to["proxy_header"])
            for i, chunk in enumerate(chunks):
                if i and delay:
                    time.sleep(delay)
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return Outcome(received, True)
        sock.settimeout(3)
        while len(received) < expect_echo:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return Outcome(received, True)
            except TimeoutError:
                return Outcome(received, False)
            if not data:
                return Outcome(received, True)
            received += data
    return Outcome(received, False)


def decision_for(expect: str, mode: str, to_db: bool) -> tuple[str, str] | None:
    if expect in ("malformed", "too_large", "deny_rule"):
        return ("deny", expect)
    if expect in ("inspector_closes", "inspector_refuses"):
        return None
    if mode == "passthrough":
        return ("allow", "passthrough")
    if expect == "allowed_name" or to_db:
        return ("allow", "rule")
    return ("deny", "no_match") if mode == "allowlist" else ("audit_deny", "no_match")


def rule_for(expect: str, mode: str, to_db: bool) -> str | None:
    if expect == "deny_rule":
        return "evil"
    if mode == "passthrough" or expect not in ("allowed_name", "no_name"):
        return None
    if expect == "allowed_name":
        return "api"
    return "db" if to_db else None


# SNI extensions that break the rules: Envoy 1.36's tls_inspector (BoringSSL) closes these
# connections itself, before egress-guard runs, and counts nothing; Envoy 1.40's passes them on
# and egress-guard denies them as malformed. (Checked on 1.36.4 and 1.40.0.) Nothing reaches the
# destination either way.
OLD_INSPECTOR_REFUSES = {"two_names", "empty_name", "empty_server_name_extension",
                         "name_type_not_host_name", "name_over_255_bytes", "name_with_nul"}


def run(guard: Guard, serve: Callable[[TcpServer], TcpServer], case: Case) -> None:
    setup = guard.setup
    seen = case.inspector if setup.inspector and case.inspector else case.own
    if (setup.inspector and case.id in OLD_INSPECTOR_REFUSES
            and envoy_release(guard.envoy.envoy_cmd) < (1, 40, 0)):
        seen = Seen("inspector_refuses", ())
    dst = guard.db if case.to_db else serve(TcpServer(guard.web_ip, label="web"))
    db_seen = len(guard.db.conns)
    decision = decision_for(seen.expect, setup.mode, case.to_db)
    passes = decision is not None and decision[0] != "deny"

    before = Counters(guard.envoy)
    got = exchange(guard.via, dst.address, case.chunks, case.delay,
                   len(case.data) if passes else 1)
    delta = Counters(guard.envoy).since(before)

    if passes:
        assert got.received == case.data and not got.closed, (got, delta)
        new = dst.received[db_seen:] if case.to_db else dst.received
        assert new == [case.data], new
    else:
        assert got.received == b"" and got.closed, (got, delta)
        if not case.to_db:
            assert all(data == b"" for data in dst.received), dst.received
        if setup.hold or seen.expect in ("inspector_closes", "inspector_refuses"):
            assert delta.envoy.get(UPSTREAM_CX, 0) == 0, delta  # no upstream connection at all
            assert dst.connections == 0 or case.to_db, dst.connections

    assert delta.decisions == ({decision: 1} if decision else {}), delta
    assert sum(delta.sniff.values()) == (1 if seen.outcomes else 0), delta
    assert not seen.outcomes or set(delta.sniff) <= set(seen.outcomes), delta
    assert delta.malformed == ({seen.kind: 1} if seen.kind else {}), delta
    rule = rule_for(seen.expect, setup.mode, case.to_db)
    assert delta.rules == ({rule: 1} if rule else {}), delta
    if seen.expect == "inspector_closes":
        assert delta.envoy.get("tls_inspector.client_hello_too_large") == 1, delta


@pytest.mark.parametrize("case", TLS_CASES, ids=lambda c: c.id)
def test_tls(guard: Guard, serve: Any, case: Case) -> None:
    run(guard, serve, case)


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.id)
def test_http(guard: Guard, serve: Any, case: Case) -> None:
    run(guard, serve, case)


def test_over_max_bytes_with_an_allowed_name(guard: Guard, serve: Any) -> None:
    """A ClientHello over ``sniff.max_bytes`` (but under tls_inspector's 16 KiB limit) naming
    an allowed host. egress-guard's own parse refuses it (``too_large``) in every mode. With
    tls_inspector, BoringSSL has read the whole ClientHello and the name decides: nothing was
    hidden from the policy, so the ``api`` rule allows it."""
    data = API.padded_to(MAX_BYTES + 1000).record()
    run(guard, serve, one("over_max_bytes_allowed_name", data, Seen("too_large", ("too_large",)),
                          inspector=Seen("allowed_name", ("inspector_sni",))))


def test_no_byte_reaches_a_denied_destination_even_after_the_decision(
        guard: Guard, serve: Any) -> None:
    """Bytes sent after a denied ClientHello (application data, a second hello naming an allowed
    host) do not reach the destination either."""
    server = serve(TcpServer(guard.web_ip, label="web"))
    to = guard.via.to(server.address)
    with connect(to["addr"], to["port"]) as sock:
        sock.sendall(to["proxy_header"] + EVIL.record())
        for _ in range(3):
            try:
                sock.sendall(API.record() + b"\x17\x03\x03\x00\x05hello")
            except OSError:
                break
            time.sleep(0.02)
        sock.settimeout(3)
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    time.sleep(0.05)
    assert all(data == b"" for data in server.received), server.received
    if guard.setup.hold or guard.setup.inspector:
        assert server.connections == 0



@pytest.mark.parametrize("sent", [10, 300], ids=["10_bytes", "300_bytes"])
def test_half_close_in_the_middle_of_a_client_hello(guard: Guard, serve: Any, sent: int) -> None:
    """Part of a ClientHello, then FIN: nothing reaches the destination. egress-guard denies it
    (malformed, ``truncated``). With tls_inspector, which is still waiting for the rest of the
    ClientHello, Envoy closes the connection at the FIN before any network filter runs
    (``downstream_listener_filter_remote_close``). (The PROXY header goes first, on its own, so
    that the proxy_protocol listener filter is done before the FIN comes; it too would close.)"""
    server = serve(TcpServer(guard.web_ip, label="web"))
    closed_early = "listener.outbound.downstream_listener_filter_remote_close"
    prefixes = (closed_early, UPSTREAM_CX)
    before = Counters(guard.envoy, envoy_prefixes=prefixes)
    to = guard.via.to(server.address)
    with connect(to["addr"], to["port"]) as sock:
        sock.sendall(to["proxy_header"])
        time.sleep(0.1)
        sock.sendall(EVIL.record()[:sent])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(3)
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass

    def ended() -> Counters | None:
        d = Counters(guard.envoy, envoy_prefixes=prefixes).since(before)
        return d if d.decisions or d.envoy.get(closed_early) else None

    delta = wait_until(ended, 5, describe="the connection's end to be counted")
    assert all(data == b"" for data in server.received), server.received
    if guard.setup.inspector:
        assert delta.envoy.get(closed_early) == 1 and not delta.decisions, delta
        assert delta.envoy.get(UPSTREAM_CX, 0) == 0 and server.connections == 0, delta
    else:
        assert delta.decisions == {("deny", "malformed"): 1}, delta
        assert delta.malformed == {"truncated": 1} and delta.sniff == {"malformed": 1}, delta
