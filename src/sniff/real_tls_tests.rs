//! ClientHellos from a real TLS library (rustls), native only: parsed whole, on every prefix,
//! re-framed into small records, and under a size cap. Also writes the seed files under
//! `tests/data/tls/` (`cargo test --lib write_seed_files -- --ignored`).
#![cfg(not(target_arch = "wasm32"))]

use std::sync::Arc;

use proptest::prelude::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::tests::sniff_every_prefix;
use super::tls::{build, parse_client_hello, ClientHello};
use super::{sniff, Outcome, Sniffed};

#[derive(Clone, Copy, Debug)]
enum Version {
    Tls13,
    Tls12,
}

/// The first flight of a rustls client: only the ClientHello matters, so an empty root store
/// is enough.
fn client_hello(version: Version, server: &str, sni: bool) -> Vec<u8> {
    let builder = match version {
        Version::Tls13 => ClientConfig::builder(),
        Version::Tls12 => ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12]),
    };
    let mut config = builder
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.enable_sni = sni;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(server.to_string()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The handshake bytes of the leading handshake records of `flight`.
fn handshake_bytes(flight: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = flight;
    while let [22, _, _, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        out.extend(&tail[..len]);
        rest = &tail[len..];
    }
    out
}

struct Real {
    name: &'static str,
    flight: Vec<u8>,
    sni: Option<&'static str>,
}

fn real_hellos() -> Vec<Real> {
    let host = "api.github.com";
    vec![
        Real {
            name: "tls13_sni",
            flight: client_hello(Version::Tls13, host, true),
            sni: Some(host),
        },
        Real {
            name: "tls12_sni",
            flight: client_hello(Version::Tls12, host, true),
            sni: Some(host),
        },
        Real {
            name: "tls13_no_sni",
            flight: client_hello(Version::Tls13, host, false),
            sni: None,
        },
        Real {
            name: "tls12_no_sni",
            flight: client_hello(Version::Tls12, host, false),
            sni: None,
        },
        Real {
            name: "tls13_ip_address",
            flight: client_hello(Version::Tls13, "192.0.2.7", true),
            sni: None,
        },
        Real {
            name: "tls12_ipv6_address",
            flight: client_hello(Version::Tls12, "2001:db8::7", true),
            sni: None,
        },
    ]
}

fn found(sni: Option<&str>) -> Outcome<ClientHello> {
    Outcome::Found(ClientHello {
        sni: sni.map(str::to_string),
        ech: false,
    })
}

fn tls(sni: Option<&str>) -> Sniffed {
    Sniffed::tls(sni.map(str::to_string), false)
}

/// A rustls flight (one handshake record) with `extensions` appended to its ClientHello's
/// extensions block, every length fixed up. (The ring provider rustls is built with here has no
/// HPKE, so rustls cannot send ECH itself; its ClientHellos are real in every other field.)
pub(super) fn with_extensions(flight: &[u8], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let message = handshake_bytes(flight);
    let mut body = message[4..].to_vec();
    // legacy_version, random, session id, suites, compression: then the extensions block.
    let mut at = 2 + 32;
    at += 1 + usize::from(body[at]);
    at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
    at += 1 + usize::from(body[at]);
    let mut added = Vec::new();
    for (kind, data) in extensions {
        added.extend(kind.to_be_bytes());
        added.extend((data.len() as u16).to_be_bytes());
        added.extend(data);
    }
    let block = u16::from_be_bytes([body[at], body[at + 1]]) as usize + added.len();
    body[at..at + 2].copy_from_slice(&(block as u16).to_be_bytes());
    body.extend(added);
    build::records(&build::handshake(1, &body), usize::MAX)
}

/// An `encrypted_client_hello` payload of the outer type, shaped like the GREASE ECH that
/// Chrome and Firefox send (RFC 9849 §6.2): type outer, a cipher suite, a config id, a 32-byte
/// enc and a random payload.
pub(super) fn grease_ech() -> Vec<u8> {
    let mut out = vec![0, 0, 1, 0, 1, 0x2a, 0, 32];
    out.extend([0x11; 32]);
    out.extend(176u16.to_be_bytes());
    out.extend([0x5c; 176]);
    out
}

#[test]
fn real_hellos_with_ech() {
    let host = "api.github.com";
    for version in [Version::Tls13, Version::Tls12] {
        for sni in [true, false] {
            let flight = client_hello(version, host, sni);
            let ech = with_extensions(&flight, &[(0xfe0d, grease_ech())]);
            let want = Sniffed::tls(sni.then(|| host.to_string()), true);
            assert_eq!(sniff_every_prefix(&ech, 16384), want, "{version:?} {sni}");
            // Byte by byte in 1-byte records, and in 100-byte records.
            for chunk in [1, 100] {
                let framed = build::records(&handshake_bytes(&ech), chunk);
                assert_eq!(sniff_every_prefix(&framed, 1 << 20), want, "{chunk}");
            }
            // The extension twice is malformed, as any other extension twice.
            let twice = with_extensions(&ech, &[(0xfe0d, vec![1])]);
            assert_eq!(
                sniff_every_prefix(&twice, 16384),
                Sniffed::Malformed(super::Malformed::TlsDuplicateExtension)
            );
            // ech_outer_extensions belongs inside the encrypted inner hello only.
            let outer = with_extensions(&ech, &[(0xfd00, vec![2, 0, 10])]);
            assert_eq!(
                sniff_every_prefix(&outer, 16384),
                Sniffed::Malformed(super::Malformed::TlsEchOuterExtensions)
            );
        }
    }
}

#[test]
fn real_hellos_whole_and_byte_by_byte() {
    for real in real_hellos() {
        let Real { name, flight, sni } = &real;
        assert_eq!(parse_client_hello(flight), found(*sni), "{name}");
        // Every proper prefix needs more; the whole flight is found.
        for end in 0..flight.len() {
            assert_eq!(
                sniff(&flight[..end], 16384),
                Sniffed::NeedMore,
                "{name} at {end}"
            );
        }
        assert_eq!(sniff_every_prefix(flight, 16384), tls(*sni), "{name}");
    }
}

#[test]
fn real_hellos_split_across_records() {
    for real in real_hellos() {
        let message = handshake_bytes(&real.flight);
        assert!(message.len() > 100, "{}", real.name);
        for chunk in [1, 7, 100] {
            let framed = build::records(&message, chunk);
            assert_eq!(
                sniff_every_prefix(&framed, 65536),
                tls(real.sni),
                "{} in {chunk}-byte records",
                real.name
            );
        }
    }
}

#[test]
fn real_hellos_under_a_cap() {
    for real in real_hellos() {
        let len = real.flight.len();
        assert_eq!(sniff(&real.flight, len), tls(real.sni), "{}", real.name);
        assert_eq!(
            sniff(&real.flight, len + 1000),
            tls(real.sni),
            "{}",
            real.name
        );
        assert_eq!(
            sniff(&real.flight, len - 1),
            Sniffed::TooLarge,
            "{}",
            real.name
        );
        assert_eq!(sniff(&real.flight, 512.min(len - 1)), Sniffed::TooLarge);
        // The record and handshake headers alone prove it will not fit.
        assert_eq!(sniff(&real.flight[..9], len - 1), Sniffed::TooLarge);
    }
}

#[test]
fn real_hello_with_early_records_after_it() {
    let mut flight = client_hello(Version::Tls13, "api.github.com", true);
    // A middlebox-compatibility change_cipher_spec and some early data follow.
    flight.extend([20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 3, 1, 2, 3]);
    assert_eq!(
        sniff_every_prefix(&flight, 16384),
        tls(Some("api.github.com"))
    );
}

/// Regenerates `tests/data/tls/*.bin` (fuzzing seeds, parsed by `tls::tests::seed_files_parse`).
#[test]
#[ignore = "writes the seed files; run on purpose"]
fn write_seed_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    std::fs::create_dir_all(&dir).unwrap();
    let reals = real_hellos();
    for real in reals.iter().take(4) {
        std::fs::write(dir.join(format!("{}.bin", real.name)), &real.flight).unwrap();
    }
    let split = build::records(&handshake_bytes(&reals[0].flight), 100);
    std::fs::write(dir.join("tls13_sni_100_byte_records.bin"), split).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: no panic, and every prefix answers NeedMore or the final answer.
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        sniff_every_prefix(&input, 256);
    }

    /// A real ClientHello with a few bytes changed: no panic, and still TLS (a ClientHello,
    /// malformed, or waiting for bytes a length now promises), never "other".
    #[test]
    fn mutated_real_hello(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        which in 0usize..4,
        chunk in prop::sample::select(vec![7usize, 100, 16384]),
    ) {
        let reals = real_hellos_cached();
        let message = handshake_bytes(&reals[which]);
        let mut framed = build::records(&message, chunk);
        for (at, byte) in edits {
            let i = at.index(framed.len() - 1) + 1; // keep the first byte: still TLS
            framed[i] = byte;
        }
        let got = sniff_every_prefix(&framed, 1 << 20);
        prop_assert!(
            matches!(
                got,
                Sniffed::Tls(_) | Sniffed::Malformed(_) | Sniffed::NeedMore | Sniffed::TooLarge
            ),
            "{got:?}"
        );
    }

    /// Request-head-like sequences of HTTP fragments: no panic, prefixes agree.
    #[test]
    fn http_fragments(parts in proptest::collection::vec(prop::sample::select(vec![
        "GET", "FOO", "CONNECT", "OPTIONS", " ", "\t", "/", "*", "http://", "HTTPS://", "a.example",
        ":443", "[::1]", "@", "#", "?", " HTTP/1.1", " HTTP/1.0", " HTTP/2", "\r\n", "\n", "\r",
        "Host", "host", ": ", ":", ",", "Content-Length", "Transfer-Encoding", "chunked", "12",
        "\r\n\r\n", "\x00", "\u{e9}",
    ]), 0..24)) {
        let input = parts.concat();
        sniff_every_prefix(input.as_bytes(), 4096);
    }

    /// A request head with a byte changed: no panic, prefixes agree.
    #[test]
    fn mutated_http_head(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut head =
            b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\n\r\n"
                .to_vec();
        let i = at.index(head.len());
        head[i] = byte;
        sniff_every_prefix(&head, 4096);
    }
}

/// rustls hellos are slow-ish to make; the property tests reuse one set.
fn real_hellos_cached() -> &'static [Vec<u8>] {
    static CELL: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CELL.get_or_init(|| real_hellos().into_iter().map(|r| r.flight).collect())
}
