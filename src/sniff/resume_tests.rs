//! The resumable parsers ([`Sniffer`], [`HeadParser`], and [`Pipeline`]'s later heads): the
//! work of a message fed one byte per call against the same message parsed in one call, and
//! the answers at random cut points against [`sniff`] on the same prefix.
//!
//! Work is [`work::measure`]: the bytes the parsers examined. Re-parsing the whole buffer on
//! every call, as calling [`sniff`] on each prefix does, costs the square of the length; the
//! budget here is three times the one-call work.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::http::{parse_request_head, HeadParser};
use super::pipeline::{Pipeline, Step};
use super::tls::build::{records, Hello};
use super::{sniff, work, Outcome, Sniffed, Sniffer};

/// The largest `sniff.max_bytes`.
const CAP: usize = 65536;
/// Byte-at-a-time work may be at most this many times the one-call work.
const BUDGET: u64 = 3;

/// A request head of exactly `len` bytes whose header lines are `line` bytes long (the last one
/// takes up the rest).
fn head_of(len: usize, line: usize) -> Vec<u8> {
    let mut head = b"GET /index.html HTTP/1.1\r\nHost: a.example\r\n".to_vec();
    let end = len - 2;
    while head.len() + line + 8 < end {
        let value = "v".repeat(line - 5);
        head.extend_from_slice(format!("X: {value}\r\n").as_bytes());
    }
    let value = "w".repeat(end - head.len() - 5);
    head.extend_from_slice(format!("Y: {value}\r\n\r\n").as_bytes());
    assert_eq!(head.len(), len);
    head
}

/// A ClientHello message (handshake header included) of exactly `len` bytes: a padding
/// extension makes up the size.
fn hello_of(len: usize) -> Vec<u8> {
    let mut hello = Hello::with_sni(b"a.example");
    let base = hello.message().len();
    let extensions = hello.extensions.get_or_insert_with(Vec::new);
    extensions.push((21, vec![0; len - base - 4]));
    let message = hello.message();
    assert_eq!(message.len(), len);
    message
}

/// Feeds every prefix of `input` in turn to one Sniffer; its last answer.
fn feed_byte_at_a_time(input: &[u8], max_bytes: usize) -> Sniffed {
    let mut sniffer = Sniffer::new();
    let mut last = Sniffed::NeedMore;
    for end in 0..=input.len() {
        last = sniffer.feed(&input[..end], max_bytes);
    }
    last
}

/// The work of one `sniff` of `input` and of feeding it a byte at a time; checks the budget
/// and that both answer the same. Returns that answer.
fn within_budget(name: &str, input: &[u8]) -> Sniffed {
    let (whole, once) = work::measure(|| sniff(input, CAP));
    let (fed, byte_at_a_time) = work::measure(|| feed_byte_at_a_time(input, CAP));
    assert_eq!(fed, whole, "{name}");
    assert!(once > 0, "{name}");
    assert!(
        byte_at_a_time <= BUDGET * once,
        "{name}: {byte_at_a_time} bytes examined fed a byte at a time, {once} in one call"
    );
    whole
}

#[test]
fn a_64_kib_request_head_byte_by_byte_costs_about_one_parse() {
    let host = |head_len| Sniffed::http(Some("a.example".into()), head_len);
    // Ordinary header lines; many tiny ones; one huge one.
    for (name, line) in [
        ("60-byte lines", 60),
        ("8-byte lines", 8),
        ("one line", CAP),
    ] {
        let head = head_of(CAP - 100, line.min(CAP - 200));
        assert_eq!(within_budget(name, &head), host(head.len()), "{name}");
    }
}

#[test]
fn detection_byte_by_byte_costs_about_one_parse() {
    let long = |prefix: &[u8], fill: &[u8]| {
        let mut input = prefix.to_vec();
        while input.len() < CAP {
            input.extend_from_slice(fill);
        }
        input.truncate(CAP);
        input
    };
    // Every stage that reads ahead before the head proper, each held to the cap.
    let cases = [
        ("leading whitespace", long(b"", b" \r\n\t")),
        ("a long method token", long(b"", b"A")),
        ("an extension method's long line", long(b"FOO /", b"a")),
        ("many partial HTTP/ on the line", long(b"FOO", b" HTTP")),
        ("a long request line", long(b"GET /", b"a")),
    ];
    for (name, input) in cases {
        assert_eq!(within_budget(name, &input), Sniffed::TooLarge, "{name}");
    }
}

#[test]
fn a_64_kib_client_hello_byte_by_byte_costs_about_one_parse() {
    let tls = Sniffed::tls(Some("a.example".into()), false);
    // In 1-byte records (six bytes on the wire per handshake byte), in the largest records,
    // and in one record (which holds at most 16 KiB).
    let cases = [
        ("1-byte records", records(&hello_of(CAP / 6 - 10), 1)),
        ("16 KiB records", records(&hello_of(CAP - 100), 1 << 14)),
        ("one record", records(&hello_of(1 << 14), 1 << 14)),
    ];
    for (name, input) in cases {
        assert!(input.len() <= CAP, "{name}");
        assert_eq!(within_budget(name, &input), tls, "{name}");
    }
}

#[test]
fn a_later_64_kib_head_byte_by_byte_costs_about_one_parse() {
    let first = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let Outcome::Found(decided) = parse_request_head(first) else {
        panic!("first head");
    };
    let later = head_of(CAP - 100, 60);
    let mut stream = first.to_vec();
    stream.extend_from_slice(&later);
    // The filter's buffer still holds the first head: the pipeline starts after it.
    let (whole, once) = work::measure(|| Pipeline::after(&decided, CAP).scan(&stream));
    let (fed, byte_at_a_time) = work::measure(|| {
        let mut pipeline = Pipeline::after(&decided, CAP);
        // The first call lets the first request go; the buffers after it start at the later
        // head, as the filter's do.
        let step = pipeline.scan(&stream[..=first.len()]);
        assert_eq!(step, Step::Split(first.len()));
        let later_head = &stream[first.len()..];
        for end in 2..later_head.len() {
            assert_eq!(pipeline.scan(&later_head[..end]), Step::Hold);
        }
        pipeline.scan(later_head)
    });
    assert!(matches!(&whole, Step::Head(head) if head.head_len == later.len()));
    assert_eq!(fed, whole);
    assert!(
        byte_at_a_time <= BUDGET * once,
        "{byte_at_a_time} bytes examined fed a byte at a time, {once} in one call"
    );
}

/// The measure tells the quadratic way from the linear one: `sniff` on every prefix, as the
/// filter did before [`Sniffer`], blows the budget many times over even at 4 KiB.
#[test]
fn sniffing_every_prefix_afresh_is_over_budget() {
    let head = head_of(4096, 60);
    let (_, once) = work::measure(|| sniff(&head, CAP));
    let (_, afresh) = work::measure(|| {
        for end in 0..=head.len() {
            sniff(&head[..end], CAP);
        }
    });
    assert!(afresh > 100 * BUDGET * once, "{afresh} against {once}");
}

#[test]
fn a_sniffer_starts_over_on_a_shorter_buffer_or_another_cap() {
    let head = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let http = Sniffed::http(Some("a.example".into()), head.len());
    let mut sniffer = Sniffer::new();
    assert_eq!(sniffer.feed(&head[..20], 4096), Sniffed::NeedMore);
    assert_eq!(sniffer.feed(head, 4096), http);
    // Final answers stay final while the buffer grows.
    let mut longer = head.to_vec();
    longer.extend_from_slice(b"\x00garbage");
    assert_eq!(sniffer.feed(&longer, 4096), http);
    // Another cap: read again under it.
    assert_eq!(sniffer.feed(&longer, 20), Sniffed::TooLarge);
    // A shorter buffer: another connection's bytes, read from the start.
    assert_eq!(sniffer.feed(b"SSH-2.0-x\r\n", 4096), Sniffed::Other);
    assert_eq!(sniffer.feed(b"GE", 4096), Sniffed::NeedMore);
    assert_eq!(sniffer.feed(head, 4096), http);
    sniffer.reset();
    assert_eq!(sniffer.feed(b"\x16\x03\x01\x00\x05\x02", 4096), {
        Sniffed::Malformed(super::Malformed::TlsNotClientHello)
    });

    let mut parser = HeadParser::new();
    assert_eq!(parser.feed(&head[..30]), Outcome::NeedMore);
    assert_eq!(parser.feed(b"GET / HTTP/1.1\n"), {
        Outcome::Malformed(super::Malformed::HttpBareLf)
    });
    parser.reset();
    assert!(matches!(parser.feed(head), Outcome::Found(_)));
}

/// Native only: proptest.
#[cfg(not(target_arch = "wasm32"))]
mod splits {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `input` cut at `cuts` (positions, in any order) to one Sniffer and one HeadParser:
    /// at every cut each answers exactly as a fresh parse of that prefix.
    fn check_cuts(input: &[u8], cuts: &[usize], max_bytes: usize) {
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
        ends.push(input.len());
        ends.sort_unstable();
        let mut sniffer = Sniffer::new();
        let mut parser = HeadParser::new();
        for end in ends {
            let prefix = &input[..end];
            assert_eq!(
                sniffer.feed(prefix, max_bytes),
                sniff(prefix, max_bytes),
                "Sniffer at {end} of {input:?}"
            );
            assert_eq!(
                parser.feed(prefix),
                parse_request_head(prefix),
                "HeadParser at {end} of {input:?}"
            );
        }
    }

    fn http_like() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop::sample::select(vec![
                "GET",
                "FOO",
                "PRI",
                "CONNECT",
                " ",
                "\t",
                "\x0b",
                "/",
                "*",
                "http://",
                "a.example",
                ":443",
                "@",
                " HTTP/1.1",
                " HTTP/1.0",
                " HTTP/2.0",
                " H",
                " HT",
                " http/",
                "\r\n",
                "\n",
                "\r",
                "Host: ",
                "host:",
                ": ",
                ":",
                ",",
                "Content-Length: 5",
                "Transfer-Encoding: chunked",
                "Upgrade: x",
                "\r\n\r\n",
                "\x00",
                "\u{e9}",
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            ]),
            0..24,
        )
        .prop_map(|parts| parts.concat().into_bytes())
    }

    fn tls_like() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec![1usize, 2, 3, 5, 7, 40, 1 << 14]),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            any::<bool>(),
        )
            .prop_map(|(chunk, edits, keep_first)| {
                let mut input = records(&Hello::with_sni(b"api.github.com").message(), chunk);
                for (at, byte) in edits {
                    let i = at.index(input.len() - 1) + usize::from(keep_first);
                    input[i] = byte;
                }
                input
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn cut_anywhere(
            input in prop_oneof![
                http_like(),
                tls_like(),
                proptest::collection::vec(any::<u8>(), 0..200),
            ],
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_bytes in prop::sample::select(vec![1usize, 6, 16, 64, 300, 4096, usize::MAX]),
        ) {
            check_cuts(&input, &cuts, max_bytes);
        }
    }
}

/// A ClientHello in 1-byte records with one byte of one record header changed, fed one byte per
/// call: every answer is a fresh `sniff`'s (the header bytes a [`Sniffer`] checks one at a time,
/// without a walk, included), at caps that end anywhere in the first records too.
#[test]
fn a_changed_record_header_byte_is_seen_at_that_byte() {
    let framed = records(&Hello::with_sni(b"a.example").message(), 1);
    let record_count = framed.len() / 6;
    for record in [0, 1, 2, record_count / 2, record_count - 1] {
        for index in 0..5 {
            for value in [0, 1, 2, 3, 4, 5, 21, 22, 23, 0x40, 0xff] {
                let mut input = framed.clone();
                input[record * 6 + index] = value;
                super::tests::sniff_every_prefix(&input, 1 << 20);
            }
        }
    }
    for cap in 1..40 {
        super::tests::sniff_every_prefix(&framed, cap);
    }
}
