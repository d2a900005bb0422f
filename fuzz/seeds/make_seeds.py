#!/usr/bin/env python3
"""Writes the named seed inputs of the fuzz targets (fuzz/seeds/<target>/<name>).

Real ClientHellos are copied from tests/data/tls (captured from rustls); hostile ones are built
here, field by field, like the unit tests' `sniff::tls::build::Hello`. The `decide` and
`config_structured` seeds are generator inputs picked from fuzz runs and are not written here.
Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def u16(n):
    return struct.pack(">H", n)


def sni_ext(*entries):
    body = b"".join(bytes([kind]) + u16(len(name)) + name for kind, name in entries)
    return u16(len(body)) + body


def hello_body(extensions, version=b"\x03\x03", ext_len_delta=0):
    out = version + b"\x5a" * 32 + b"\x20" + b"\x07" * 32
    out += u16(4) + b"\x13\x01\xc0\x2f" + b"\x01\x00"
    if extensions is not None:
        block = b"".join(u16(kind) + u16(len(data)) + data for kind, data in extensions)
        out += u16(len(block) + ext_len_delta) + block
    return out


def handshake(kind, body, length=None):
    length = len(body) if length is None else length
    return bytes([kind]) + length.to_bytes(3, "big") + body


def records(message, chunk=1 << 14, length=None):
    out = b""
    for i in range(0, len(message), chunk):
        piece = message[i : i + chunk]
        out += b"\x16\x03\x01" + u16(len(piece) if length is None else length) + piece
    return out


def hello(name=b"api.github.com", **kw):
    exts = [(0, sni_ext((0, name))), (10, b"\x00\x02\x00\x1d"), (43, b"\x02\x03\x03")]
    return handshake(1, hello_body(exts, **kw))


def grease_ech():
    # encrypted_client_hello of the outer type, shaped like GREASE ECH (RFC 9849 §6.2).
    return b"\x00\x00\x01\x00\x01\x2a" + u16(32) + b"\x11" * 32 + u16(176) + b"\x5c" * 176


def hello_with(name, *extra):
    exts = [(0, sni_ext((0, name))), (10, b"\x00\x02\x00\x1d"), (43, b"\x02\x03\x03")]
    return handshake(1, hello_body(exts + list(extra)))


def tls_seeds():
    data = ROOT / "tests" / "data" / "tls"
    seeds = {
        "valid_sni_tls13": (data / "tls13_sni.bin").read_bytes(),
        "valid_sni_tls12": (data / "tls12_sni.bin").read_bytes(),
        "no_sni": (data / "tls13_no_sni.bin").read_bytes(),
        "no_sni_tls12": (data / "tls12_no_sni.bin").read_bytes(),
        "small_records": (data / "tls13_sni_100_byte_records.bin").read_bytes(),
        "hand_built": records(hello()),
        "one_byte_records": records(hello(b"a.example"), chunk=1),
        "no_extensions": records(handshake(1, hello_body(None))),
        "two_names": records(
            handshake(1, hello_body([(0, sni_ext((0, b"allowed.example"), (0, b"denied.example")))]))
        ),
        "sni_twice": records(
            handshake(
                1,
                hello_body(
                    [(0, sni_ext((0, b"allowed.example"))), (0, sni_ext((0, b"denied.example")))]
                ),
            )
        ),
        "empty_sni": records(handshake(1, hello_body([(0, sni_ext((0, b"")))]))),
        "ip_literal_sni": records(hello(b"10.0.0.1")),
        "bad_byte_sni": records(hello(b"a b\x00.example")),
        "lying_record_length": b"\x16\x03\x01" + u16(len(hello()) + 40) + hello(),
        "lying_handshake_length": records(handshake(1, hello_body(None), length=40)),
        "lying_extensions_length": records(
            handshake(1, hello_body([(0, sni_ext((0, b"a.example")))], ext_len_delta=3))
        ),
        "huge_handshake_length": records(b"\x01\xff\xff\xff\x03\x03", length=16384),
        "sslv2_hello": bytes.fromhex("802e0103010015000000100100800300800700c0"),
        "alert_first": b"\x15\x03\x03\x00\x02\x02\x28",
        "ech_grease": records(hello_with(b"cloudflare-ech.com", (0xFE0D, grease_ech()))),
        "ech_small_records": records(hello_with(b"a.example", (0xFE0D, grease_ech())), chunk=50),
        "ech_twice": records(hello_with(b"a.example", (0xFE0D, b"\x00"), (0xFE0D, b"\x00"))),
        "ech_outer_extensions": records(
            hello_with(b"a.example", (0xFE0D, grease_ech()), (0xFD00, b"\x02\x00\x0a"))
        ),
        "not_tls": b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    }
    return seeds


def http_seeds():
    return {
        "origin_form": b"GET /x?y=1 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n",
        "absolute_form": b"GET http://a.example:8080/x HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
        "host_mismatch": b"GET http://allowed.example/ HTTP/1.1\r\nHost: denied.example\r\n\r\n",
        "duplicate_host": b"GET / HTTP/1.1\r\nHost: allowed.example\r\nHost: denied.example\r\n\r\n",
        "obs_fold": b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A: b\r\n denied.example\r\n\r\n",
        "bare_lf": b"GET / HTTP/1.1\nHost: a.example\n\n",
        "bare_cr": b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        "chunked": b"POST /u HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "content_length": b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3, 3\r\n\r\nabc",
        "cl_and_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        "connect": b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        "connect_ipv6": b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
        "options_asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "http10_no_host": b"GET / HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
        "host_userinfo": b"GET / HTTP/1.1\r\nHost: allowed.example@denied.example\r\n\r\n",
        "host_bad_port": b"GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n",
        "host_space": b"GET / HTTP/1.1\r\nHost: a.example b.example\r\n\r\n",
        "extension_method": b"PURGE /x HTTP/1.1\r\nHost: cdn.example\r\n\r\n",
        "leading_crlf": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "h2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        "pipelined": b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
    }


def sniff_seeds(tls, http):
    """sniff's input: two bytes of max_bytes (little-endian), then the client's bytes."""
    cap = lambda n: struct.pack("<H", n)
    return {
        "tls_16k": cap(16384) + tls["valid_sni_tls13"],
        "tls_over_cap": cap(128) + tls["valid_sni_tls13"],
        "tls_small_records_exact": cap(len(tls["small_records"])) + tls["small_records"],
        "tls_huge_length": cap(16384) + tls["huge_handshake_length"],
        "http_16k": cap(16384) + http["origin_form"],
        "http_over_cap": cap(40) + http["chunked"],
        "http_exact_cap": cap(len(http["connect"])) + http["connect"],
        "sslv2": cap(512) + tls["sslv2_hello"],
        "other_binary": cap(512) + b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        "other_line": cap(512) + b"SSH-2.0-OpenSSH_9.6\r\n",
        "held_word": cap(16) + b"SELECT 1 FROM dual",
    }


def session_ech_seeds(tls):
    """session's input: policy, split (hi, lo), schedule, then client bytes (all of them: the
    split is their length). Policies 8 and 9 say "ech": "deny"; policy + 10 adds the inspector
    SNI ok.example. Only these ECH seeds are written here; the others came from fuzz runs."""
    def seed(policy, client, schedule=3):
        return bytes([policy]) + struct.pack(">H", len(client)) + bytes([schedule]) + client
    ech = records(hello_with(b"ok.example", (0xFE0D, grease_ech())))
    plain = records(hello_with(b"ok.example"))
    return {
        "ech_deny_hello_with_ech": seed(8, ech),
        "ech_deny_inspector_sni_hello_with_ech": seed(18, ech),
        "ech_deny_inspector_sni_plain_hello": seed(18, plain),
        "ech_deny_held_pinned_hello_with_ech": seed(9, ech, schedule=0),
        "ech_allow_hello_with_ech": seed(0, ech),
    }


def config_seeds():
    policies = ROOT / "examples" / "policies"
    seeds = {f"example_{p.stem}": p.read_bytes() for p in sorted(policies.glob("*.json"))}
    seeds["demo_policy"] = (ROOT / "examples" / "demo" / "policy.json").read_bytes()
    full = {
        "mode": "audit",
        "allow": [
            {"name": "gh", "hosts": ["GitHub.com.", "*.github.com", "api-*.{a,b}.example", "[ab]?.x"]},
            {"hosts": ["*"], "ports": [443, "8000-8080"]},
            {"name": "v6", "cidrs": ["fd00::/8", "2001:db8::1"], "ports": ["1-65535"]},
        ],
        "deny": [{"name": "meta", "cidrs": ["169.254.169.254", "0.0.0.0/0"], "ports": [25]}],
        "presets": ["pypi", "github", "debian-apt"],
        "sniff": {"max_bytes": 512, "timeout_ms": 1, "hold_upstream": True},
        "log": "all",
    }
    seeds["every_field"] = json.dumps(full).encode()
    seeds["minimal"] = b"{}"
    seeds["passthrough_deny_all_hosts"] = b'{"mode":"passthrough","deny":[{"hosts":["*"]}]}'
    seeds["invalid_cidr"] = b'{"allow": [{"cidrs": ["10.0.0.300/8"]}]}'
    seeds["invalid_unknown_key"] = b'{"allow": [{"hostz": ["a.example"]}]}'
    seeds["invalid_duplicate_name"] = b'{"allow": [{"name": "x", "ports": [1]}], "deny": [{"name": "x", "ports": [4]}]}'
    seeds["invalid_trailing_comma"] = b'{"allow": [{"hosts": ["a.example"],}]}'
    return seeds


def write(target, seeds):
    out = HERE / target
    out.mkdir(exist_ok=True)
    for name, data in seeds.items():
        (out / name).write_bytes(data)


def main():
    tls, http = tls_seeds(), http_seeds()
    write("tls_client_hello", tls)
    write("http_request_head", http)
    write("sniff", sniff_seeds(tls, http))
    write("config", config_seeds())
    write("session", session_ech_seeds(tls))


if __name__ == "__main__":
    main()
