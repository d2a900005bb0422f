"""TLS ClientHello bytes for the adversarial and load tests: real ones from Python's ``ssl`` and
hand-edited variants of them.

A real ClientHello comes from OpenSSL through a memory BIO (no socket, no server): the handshake
stops at ``SSLWantReadError`` and the outgoing BIO holds the first flight, one handshake record.
:class:`Hello` takes such a record apart into its fields and extensions and puts it back together,
so a test can swap the SNI for bytes no TLS library would send, pad it past a size cap, or frame
it in many small records.
"""

from __future__ import annotations

import ssl
import struct
from dataclasses import dataclass, field, replace

HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_PADDING = 21
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D  # RFC 9849
MAX_RECORD = 1 << 14


def real_client_hello(sni: str | None) -> bytes:
    """The first flight of a Python/OpenSSL TLS client for ``sni`` (no SNI when None): one
    handshake record holding a ClientHello (TLS 1.3 and 1.2 offered)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    flight = outgoing.read()
    if flight[:1] != bytes([HANDSHAKE]) or flight[5:6] != bytes([CLIENT_HELLO]):
        raise AssertionError(f"not a ClientHello record: {flight[:16].hex()}")
    return flight


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u24(n: int) -> bytes:
    return struct.pack("!I", n)[1:]


def record(payload: bytes, content_type: int = HANDSHAKE, version: int = 0x0301,
           length: int | None = None) -> bytes:
    """One TLS record; ``length`` overrides the true payload length (a lying header)."""
    return bytes([content_type]) + u16(version) + u16(len(payload) if length is None else length) \
        + payload


def records(message: bytes, chunk: int) -> bytes:
    """A handshake message framed as handshake records of at most ``chunk`` bytes each."""
    chunk = min(chunk, MAX_RECORD)
    return b"".join(record(message[i:i + chunk]) for i in range(0, len(message), chunk))


def handshake(body: bytes, msg_type: int = CLIENT_HELLO, length: int | None = None) -> bytes:
    """A handshake message; ``length`` overrides the true body length."""
    return bytes([msg_type]) + u24(len(body) if length is None else length) + body


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    """The body of a server_name extension listing ``names`` (each as a host_name entry)."""
    entries = b"".join(bytes([name_type]) + u16(len(n)) + n for n in names)
    return u16(len(entries)) + entries


@dataclass
class Hello:
    """A ClientHello taken apart: fixed fields and the extensions, in order."""

    version: bytes
    random: bytes
    session_id: bytes
    suites: bytes
    compression: bytes
    extensions: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def parse(cls, flight: bytes) -> Hello:
        """Parse a one-record first flight (as :func:`real_client_hello` returns)."""
        msg = flight[5:5 + struct.unpack("!H", flight[3:5])[0]]
        assert msg[0] == CLIENT_HELLO
        body = msg[4:4 + int.from_bytes(msg[1:4], "big")]
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            out = body[pos:pos + n]
            pos += n
            return out

        version, random = take(2), take(32)
        session_id = take(take(1)[0])
        suites = take(struct.unpack("!H", take(2))[0])
        compression = take(take(1)[0])
        block = take(struct.unpack("!H", take(2))[0])
        extensions = []
        i = 0
        while i < len(block):
            kind, size = struct.unpack("!HH", block[i:i + 4])
            extensions.append((kind, block[i + 4:i + 4 + size]))
            i += 4 + size
        return cls(version, random, session_id, suites, compression, extensions)

    @classmethod
    def real(cls, sni: str | None = "api.example.com") -> Hello:
        return cls.parse(real_client_hello(sni))

    def body(self) -> bytes:
        block = b"".join(u16(kind) + u16(len(data)) + data for kind, data in self.extensions)
        return (self.version + self.random + bytes([len(self.session_id)]) + self.session_id
                + u16(len(self.suites)) + self.suites + bytes([len(self.compression)])
                + self.compression + u16(len(block)) + block)

    def message(self) -> bytes:
        return handshake(self.body())

    def record(self) -> bytes:
        """The ClientHello in one handshake record (split in several past 2^14 bytes)."""
        return records(self.message(), MAX_RECORD)

    def with_sni_ext(self, data: bytes | None) -> Hello:
        """This hello with the server_name extension's body replaced by ``data`` (in place, or
        first when there was none); None removes it."""
        exts = [(k, d) for k, d in self.extensions if k != EXT_SERVER_NAME]
        if data is not None:
            at = next((i for i, (k, _) in enumerate(self.extensions) if k == EXT_SERVER_NAME), 0)
            exts.insert(at, (EXT_SERVER_NAME, data))
        return replace(self, extensions=exts)

    def with_name(self, name: bytes) -> Hello:
        """This hello naming ``name`` (raw bytes, unchecked) as its one SNI host_name."""
        return self.with_sni_ext(sni_ext(name))

    def with_ech(self) -> Hello:
        """This hello with an ``encrypted_client_hello`` extension added last, shaped like the
        GREASE ECH browsers send (RFC 9849 §6.2): type outer, a cipher suite, a config id, a
        32-byte enc and a random-looking payload. The SNI stays as it was."""
        payload = (b"\x00" + u16(1) + u16(1) + b"\x2a" + u16(32) + bytes(range(32))
                   + u16(176) + bytes(i * 7 % 251 for i in range(176)))
        return replace(self, extensions=[*self.extensions, (EXT_ENCRYPTED_CLIENT_HELLO, payload)])

    def padded_to(self, total: int) -> Hello:
        """This hello with a padding extension (RFC 7685), added last, that makes the handshake
        message ``total`` bytes long."""
        exts = [(k, d) for k, d in self.extensions if k != EXT_PADDING]
        base = len(handshake(replace(self, extensions=exts).body()))
        pad = total - base - 4
        if pad < 0:
            raise ValueError(f"hello is already {base} bytes")
        return replace(self, extensions=[*exts, (EXT_PADDING, bytes(pad))])
