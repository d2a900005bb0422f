"""Load: many concurrent connections through the shipped sidecar listener and a real Envoy.

A pool of asyncio clients keeps ``concurrency`` connections in flight. Each connection is one
of eight kinds -- TLS (a real ClientHello, no handshake), HTTP/1 and raw TCP, allowed or denied
-- and carries a unique id (``EGID<8 digits>``: in the ClientHello's random, the request path,
the raw bytes). Asyncio echo servers record what each accepted connection received. Afterwards:

- every allowed connection got its bytes echoed, and the destination received exactly them;
- every denied connection was closed without a byte, and no destination ever saw its id;
- egress-guard's decision (and sniff and rule) counters moved by exactly what was sent;
- no Wasm VM failed (no VM reload or new VM, no VM failure in the log);
- Envoy's allocated memory after the run, once settled, is within ``MEMORY_BOUND`` of before.

The small run (2,000 connections, 50 at a time) is part of ``make test``; the full run
(20,000 connections, 200 at a time) runs with ``EG_SOAK=1`` (``make soak``). Each run prints
its figures (``-s`` shows them; they are also in the assertion messages).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pytest

from egress import Counters, Via, sidecar
from harness import Envoy, proxy_v1
from hello import Hello

WEB, DB, META = "127.0.0.2", "127.0.0.3", "127.0.0.4"
# Envoy's tcmalloc "allocated" after the run (connections closed, 2 s settle) may exceed the
# figure before it (taken after a warm-up of the same traffic) by at most this much. Measured:
# between -0.2 and +0.1 MiB for both the small and the full run. 8 MiB is far above that noise
# (allocator caches, connections still in deferred deletion) yet fails a leak of 420 bytes per
# connection over the full run (20,000 connections) or 4 KiB per connection over the small one.
MEMORY_BOUND = 8 << 20
ID = re.compile(rb"EGID(\d{8})")


@dataclass(frozen=True)
class Kind:
    name: str
    server: str              # key into the servers dict
    decision: tuple[str, str]
    rule: str | None = None
    sniff: str | None = None  # sniff outcome counted (None: decided at connection open)

    @property
    def passes(self) -> bool:
        return self.decision[0] == "allow"


def kinds(inspector: bool) -> list[Kind]:
    tls = "inspector_sni" if inspector else "tls_sni"
    return [
        Kind("tls_allowed", "tls", ("allow", "rule"), "api", tls),
        Kind("tls_no_match", "tls", ("deny", "no_match"), None, tls),
        Kind("tls_deny_rule", "tls", ("deny", "deny_rule"), "evil", tls),
        Kind("http_allowed", "http", ("allow", "rule"), "api", "http_host"),
        Kind("http_no_match", "http", ("deny", "no_match"), None, "http_host"),
        Kind("tcp_allowed", "db", ("allow", "rule"), "db"),
        Kind("tcp_no_match", "db_other", ("deny", "no_match")),
        Kind("tcp_deny_rule", "meta", ("deny", "deny_rule"), "metadata"),
    ]


HELLOS = {name: Hello.real(name) for name in ("api.example.com", "other.example.org",
                                              "evil.example.com")}
SNI = {"tls_allowed": "api.example.com", "tls_no_match": "other.example.org",
       "tls_deny_rule": "evil.example.com"}
HOST = {"http_allowed": "api.example.com", "http_no_match": "other.example.org"}


def payload(kind: Kind, ident: int) -> bytes:
    tag = b"EGID%08d" % ident
    if kind.name in SNI:
        hello = HELLOS[SNI[kind.name]]
        return replace(hello, random=tag + hello.random[len(tag):]).record()
    if kind.name in HOST:
        return (f"GET /load/{tag.decode()} HTTP/1.1\r\nHost: {HOST[kind.name]}\r\n"
                "User-Agent: egress-guard-load\r\n\r\n").encode()
    return b"\x00\x00\x00\x10" + tag + b"\x00\x00\x00\x00"


# --------------------------------------------------------------------------------------------
# Echo servers and clients (one asyncio loop)
# --------------------------------------------------------------------------------------------


class EchoServer:
    """Asyncio echo server recording the bytes of every accepted connection."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.received: list[bytearray] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> EchoServer:
        self.server = await asyncio.start_server(self._handle, self.host, 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = bytearray()
        self.received.append(record)
        try:
            while data := await reader.read(65536):
                record += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def ids(self) -> Counter[int]:
        """How often each id was received (over all connections)."""
        return Counter(int(m) for rec in self.received for m in ID.findall(bytes(rec)))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Result:
    kind: str
    ident: int
    outcome: str      # "echoed", "refused" or "error: ..."
    seconds: float


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    seconds: float = 0.0


async def one_connection(listener: tuple[str, int], dst: tuple[str, int], kind: Kind,
                         ident: int, run: Run) -> None:
    data = payload(kind, ident)
    started = time.monotonic()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(*listener)
        run.in_flight += 1  # connections open at once (connected, not yet closed)
        run.max_in_flight = max(run.max_in_flight, run.in_flight)
        writer.write(proxy_v1(("127.0.0.1", 40000), dst) + data)
        await writer.drain()
        got = b""
        while len(got) < len(data):
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
        if got == data:
            outcome = "echoed"
        elif got == b"":
            outcome = "refused"
        else:
            outcome = f"error: got {len(got)} of {len(data)} bytes"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "refused"
    except OSError as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            run.in_flight -= 1
            writer.close()
    run.results.append(Result(kind.name, ident, outcome, time.monotonic() - started))


async def drive(listener: tuple[str, int], plan: list[tuple[Kind, int]],
                servers: dict[str, EchoServer], concurrency: int, per_connection_timeout: float,
                ) -> Run:
    run = Run()
    queue = iter(plan)

    async def worker() -> None:
        for kind, ident in queue:
            await asyncio.wait_for(
                one_connection(listener, servers[kind.server].address, kind, ident, run),
                per_connection_timeout)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.monotonic() - started
    return run


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def allocated(envoy: Envoy) -> int:
    return int(envoy.admin_json("/memory")["allocated"])


def wasm_health(envoy: Envoy) -> dict[str, int]:
    """The Wasm stats that move when a VM fails or is replaced (Envoy 1.40 has no per-failure
    counter: a failed VM with FAIL_CLOSED just refuses connections, FAIL_RELOAD counts
    vm_reload*, and any new VM counts ``wasm.envoy.wasm.runtime.v8.created``)."""
    return {k: v for k, v in envoy.stats().items()
            if k.startswith(("wasm.envoy.wasm.runtime.", "wasm.egress-guard.vm_reload"))}


VM_FAILURE_LOG = ("Wasm VM failed", "Uncaught", "panicked", "failed to load",
                  "RuntimeError")


def load(envoy: Envoy, servers: dict[str, EchoServer], kinds_: list[Kind], total: int,
         concurrency: int, first_id: int, loop: asyncio.AbstractEventLoop) -> Run:
    plan = [(kinds_[i % len(kinds_)], first_id + i) for i in range(total)]
    listener = Via(envoy).host, Via(envoy).port
    return loop.run_until_complete(drive(listener, plan, servers, concurrency, 30.0))


def run_load(start_envoy: Callable[..., Envoy], wasm_path: Path, inspector: bool, total: int,
             concurrency: int, budget: float) -> None:
    loop = asyncio.new_event_loop()
    servers = {name: loop.run_until_complete(EchoServer(host).start())
               for name, host in (("tls", WEB), ("http", WEB), ("db", DB), ("db_other", DB),
                                  ("meta", META))}
    try:
        policy = {
            "allow": [{"name": "api", "hosts": ["api.example.com"],
                       "ports": [servers["tls"].port, servers["http"].port]},
                      {"name": "db", "cidrs": [f"{DB}/32"], "ports": [servers["db"].port]}],
            "deny": [{"name": "evil", "hosts": ["evil.example.com"],
                      "ports": [servers["tls"].port, servers["http"].port]},
                     {"name": "metadata", "cidrs": [f"{META}/32"]}],
        }
        envoy = start_envoy(sidecar(wasm_path, policy, tls_inspector=inspector))
        ks = kinds(inspector)

        # Warm-up (the same mix), so that the memory baseline includes lazily defined counters,
        # the allocator's caches and V8's compiled code.
        warm = load(envoy, servers, ks, 400, concurrency, 90_000_000, loop)
        assert all(r.outcome in ("echoed", "refused") for r in warm.results), warm.results[:5]
        time.sleep(1)
        health_before = wasm_health(envoy)
        memory_before = allocated(envoy)
        before = Counters(envoy)
        ids_before = {name: s.ids() for name, s in servers.items()}
        assert envoy.proc is not None
        cpu_envoy, cpu_python = cpu_seconds(envoy.proc.pid), time.process_time()

        run = load(envoy, servers, ks, total, concurrency, 0, loop)

        cpu_envoy = cpu_seconds(envoy.proc.pid) - cpu_envoy
        cpu_python = time.process_time() - cpu_python

        time.sleep(2)  # let Envoy finish closing and deleting connections
        memory_after = allocated(envoy)
        delta = Counters(envoy).since(before)
        rate = total / run.seconds
        figures = (f"{total} connections, {concurrency} concurrent (at most "
                   f"{run.max_in_flight} open at once), tls_inspector={inspector}: "
                   f"{run.seconds:.1f} s, "
                   f"{rate:.0f} conn/s; allocated {memory_before / 2**20:.1f} MiB -> "
                   f"{memory_after / 2**20:.1f} MiB "
                   f"({(memory_after - memory_before) / 2**20:+.2f} MiB); CPU: Envoy "
                   f"{cpu_envoy:.1f} s, clients and servers (Python) {cpu_python:.1f} s")
        print("\nLOAD:", figures)
        for name in sorted({r.kind for r in run.results}):
            lat = sorted(r.seconds for r in run.results if r.kind == name)
            print(f"  {name:14} p50 {lat[len(lat) // 2] * 1000:6.1f} ms  "
                  f"p99 {lat[len(lat) * 99 // 100] * 1000:6.1f} ms")

        # Every allowed connection echoed, every denied one refused.
        by_kind = {k.name: k for k in ks}
        wrong = [r for r in run.results
                 if r.outcome != ("echoed" if by_kind[r.kind].passes else "refused")]
        assert not wrong, (figures, len(wrong), wrong[:10])
        assert len(run.results) == total
        assert run.max_in_flight == concurrency, figures

        # Destinations: each allowed id exactly once, with exactly its bytes; no denied id.
        allowed = {r.ident: by_kind[r.kind] for r in run.results if by_kind[r.kind].passes}
        denied = {r.ident for r in run.results if not by_kind[r.kind].passes}
        for name, server in servers.items():
            new_ids = server.ids() - ids_before[name]
            assert not set(new_ids) & denied, (name, sorted(set(new_ids) & denied)[:10])
            expected = Counter(i for i, k in allowed.items() if k.server == name)
            assert new_ids == expected, (name, len(new_ids), len(expected))
        received = {bytes(rec) for s in servers.values() for rec in s.received}
        missing = [i for i, k in allowed.items() if payload(k, i) not in received]
        assert not missing, (len(missing), missing[:10])

        # Counters: exactly what was sent, per (decision, reason), rule and sniff outcome.
        sent = Counter(by_kind[r.kind] for r in run.results)
        decisions: Counter[tuple[str, str]] = Counter()
        rules: Counter[str] = Counter()
        sniff: Counter[str] = Counter()
        for kind, n in sent.items():
            decisions[kind.decision] += n
            if kind.rule:
                rules[kind.rule] += n
            if kind.sniff:
                sniff[kind.sniff] += n
        assert delta.decisions == dict(decisions), (figures, delta)
        assert delta.rules == dict(rules), delta
        assert delta.sniff == dict(sniff), delta
        assert delta.malformed == {}, delta

        # The VM never failed: no new VM, no reload, no failure in the log.
        assert wasm_health(envoy) == health_before, (health_before, wasm_health(envoy))
        assert all(v == 0 for k, v in health_before.items() if "vm_reload" in k), health_before
        log = envoy.log_text()
        assert not [m for m in VM_FAILURE_LOG if m in log], [
            ln for ln in log.splitlines() if any(m in ln for m in VM_FAILURE_LOG)][:5]

        assert memory_after - memory_before <= MEMORY_BOUND, figures
        assert run.seconds <= budget, figures
    finally:
        for server in servers.values():
            loop.run_until_complete(server.stop())
        loop.close()


@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
def test_load_small(start_envoy: Any, wasm_path: Path, inspector: bool) -> None:
    run_load(start_envoy, wasm_path, inspector, total=2_000, concurrency=50, budget=60)


@pytest.mark.skipif(not os.environ.get("EG_SOAK"), reason="the full load run: EG_SOAK=1 "
                    "(make soak)")
@pytest.mark.parametrize("inspector", [True, False], ids=["tls_inspector", "own_parse"])
def test_load_full(start_envoy: Any, wasm_path: Path, inspector: bool) -> None:
    total = int(os.environ.get("EG_SOAK_CONNECTIONS", "20000"))
    run_load(start_envoy, wasm_path, inspector, total=total, concurrency=200, budget=600)
