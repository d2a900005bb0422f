//! `parse_request_head` on arbitrary bytes: no panic; a found head ends with its blank line,
//! has CRLF line ends only, and parses alone to the same head; the name is non-empty ASCII and
//! classifies without panic; every prefix answers `NeedMore` or the final answer; bytes appended
//! after a settled answer change nothing; a `HeadParser` fed the bytes one at a time, or at the
//! cut points, answers exactly as `parse_request_head` on each prefix.
#![no_main]

use egress_guard::policy::{classify_authority, NameClass};
use egress_guard::sniff::http::{
    parse_request_head, BodyFraming, HeadParser, RequestHead, TargetForm,
};
use egress_guard::sniff::tls::parse_client_hello;
use egress_guard::sniff::{sniff, Outcome, Sniffed};
use egress_guard_fuzz::prefixes;
use libfuzzer_sys::fuzz_target;

fn need_more(outcome: &Outcome<RequestHead>) -> bool {
    matches!(outcome, Outcome::NeedMore)
}

fuzz_target!(|data: &[u8]| {
    let whole = prefixes::check(data, parse_request_head, need_more);
    let resumed =
        prefixes::check_resumed(data, HeadParser::new, HeadParser::feed, parse_request_head);
    assert_eq!(resumed, whole);

    if let Outcome::Found(head) = &whole {
        let bytes = &data[..head.head_len];
        assert!(
            bytes.ends_with(b"\r\n\r\n"),
            "head does not end in CRLF CRLF"
        );
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(bytes.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        assert_eq!(parse_request_head(bytes), whole, "the head alone");
        assert!(head.version <= 1);
        if head.version == 0 {
            assert_ne!(head.framing, BodyFraming::Chunked);
        }
        match head.target_form {
            TargetForm::Absolute | TargetForm::Authority => assert!(head.host.is_some()),
            TargetForm::Origin | TargetForm::Asterisk => {}
        }
        if let Some(host) = &head.host {
            assert!(!host.is_empty() && host.is_ascii(), "{host:?}");
            assert!(!host.bytes().any(|b| b <= b' ' || b == b',' || b == b'@'));
            if let NameClass::Name(name) = classify_authority(host.as_bytes()) {
                assert!(!name.is_empty() && !name.ends_with('.'));
                assert_eq!(name, name.to_ascii_lowercase());
            }
        }
    }
    if let Outcome::Malformed(why) = &whole {
        assert!(why.as_str().starts_with("http_"), "{why:?}");
    }

    // Through sniff(), when the bytes are not TLS.
    if parse_client_hello(data) == Outcome::NotThisProtocol {
        let want = match &whole {
            Outcome::Found(head) => Sniffed::http(head.host.clone(), head.head_len),
            Outcome::Malformed(why) => Sniffed::Malformed(*why),
            Outcome::NeedMore => Sniffed::NeedMore,
            Outcome::NotThisProtocol => Sniffed::Other,
        };
        assert_eq!(sniff(data, usize::MAX), want);
    }

    // A settled answer does not depend on what follows (a body, a pipelined request).
    if !need_more(&whole) {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\n\r");
        assert_eq!(parse_request_head(&more), whole, "with bytes appended");
    }
});
