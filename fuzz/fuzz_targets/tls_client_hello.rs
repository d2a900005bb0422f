//! `parse_client_hello` on arbitrary bytes: no panic; agrees with `sniff`; a found SNI is a
//! non-empty ASCII string; for the parser and for `sniff` alike, every prefix answers `NeedMore`
//! or the final answer (split invariance); bytes appended after a settled answer change nothing;
//! a found hello reports ECH exactly when its bytes hold the `encrypted_client_hello` type.
#![no_main]

use egress_guard::sniff::tls::{parse_client_hello, ClientHello};
use egress_guard::sniff::{sniff, Outcome, Sniffed};
use egress_guard_fuzz::prefixes;
use libfuzzer_sys::fuzz_target;

fn need_more(outcome: &Outcome<ClientHello>) -> bool {
    matches!(outcome, Outcome::NeedMore)
}

fuzz_target!(|data: &[u8]| {
    let whole = prefixes::check(data, parse_client_hello, need_more);

    // The same answer through sniff() without a cap, split anywhere.
    let sniffed = prefixes::check(
        data,
        |b| sniff(b, usize::MAX),
        |s| matches!(s, Sniffed::NeedMore),
    );
    match &whole {
        Outcome::Found(hello) => {
            assert_eq!(sniffed, Sniffed::tls(hello.sni.clone(), hello.ech));
            if let Some(sni) = &hello.sni {
                assert!(!sni.is_empty() && sni.is_ascii(), "{sni:?}");
            }
            if hello.ech {
                // The extension type is somewhere in the bytes (a cheap necessary condition).
                assert!(
                    data.windows(2).any(|w| w == [0xfe, 0x0d]),
                    "ECH from nowhere"
                );
            }
        }
        Outcome::Malformed(why) => {
            assert!(why.as_str().starts_with("tls_"), "{why:?}");
            assert_eq!(sniffed, Sniffed::Malformed(*why));
        }
        Outcome::NeedMore => assert_eq!(sniffed, Sniffed::NeedMore),
        Outcome::NotThisProtocol => match &sniffed {
            Sniffed::Tls(_) => panic!("sniff found TLS that the parser did not"),
            Sniffed::Malformed(why) => assert!(why.as_str().starts_with("http_"), "{why:?}"),
            _ => {}
        },
    }

    // A settled answer does not depend on what follows (a CCS record, early data).
    if !need_more(&whole) {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x02ab");
        assert_eq!(parse_client_hello(&more), whole, "with bytes appended");
    }
});
