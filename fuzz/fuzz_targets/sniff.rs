//! `sniff(buf, max_bytes)` with `max_bytes` from the first two input bytes: no panic; only the
//! first `max_bytes` bytes matter; every prefix answers `NeedMore` or the final answer; and the
//! cap does what it says. With `E` the shortest prefix whose uncapped answer is final: when
//! `E > max_bytes` the answer is `TooLarge`; when `E <= max_bytes` it is the uncapped answer,
//! except that a TLS length field read before the violation may already prove the message too
//! large (the cap is checked in byte order with the other rules), which turns a TLS `Malformed`
//! into `TooLarge` — never a found ClientHello or request head. A `Sniffer` fed the bytes one at
//! a time, or at the cut points, answers exactly as `sniff` on each prefix, capped or not.
#![no_main]

use egress_guard::sniff::{sniff, Sniffed, Sniffer};
use egress_guard_fuzz::prefixes;
use libfuzzer_sys::fuzz_target;

fn need_more(s: &Sniffed) -> bool {
    matches!(s, Sniffed::NeedMore)
}

fuzz_target!(|data: &[u8]| {
    let Some((cap, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let cap = usize::from(u16::from_le_bytes(*cap));

    let capped = prefixes::check(body, |b| sniff(b, cap), need_more);
    let resumed =
        prefixes::check_resumed(body, Sniffer::new, |s, b| s.feed(b, cap), |b| sniff(b, cap));
    assert_eq!(resumed, capped);
    let seen = &body[..body.len().min(cap)];
    assert_eq!(
        sniff(seen, cap),
        capped,
        "only the first max_bytes bytes count"
    );
    if let Sniffed::Http(head) = &capped {
        assert!(head.head_len <= cap);
    }

    let uncapped = prefixes::check_resumed(
        body,
        Sniffer::new,
        |s, b| s.feed(b, usize::MAX),
        |b| sniff(b, usize::MAX),
    );
    match prefixes::settle_point(body, |b| sniff(b, usize::MAX), need_more) {
        Some(end) if end <= cap => match (&uncapped, &capped) {
            (Sniffed::Malformed(why), Sniffed::TooLarge) if why.as_str().starts_with("tls_") => {}
            _ => assert_eq!(capped, uncapped, "settles at {end} <= {cap}"),
        },
        Some(end) => assert_eq!(capped, Sniffed::TooLarge, "settles at {end} > {cap}"),
        None if body.len() >= cap => assert_eq!(capped, Sniffed::TooLarge),
        None => assert!(
            matches!(capped, Sniffed::NeedMore | Sniffed::TooLarge),
            "{capped:?}"
        ),
    }
    if let Some(sni) = match &capped {
        Sniffed::Tls(hello) => hello.sni.as_ref(),
        _ => None,
    } {
        assert!(!sni.is_empty() && sni.is_ascii());
    }
});
