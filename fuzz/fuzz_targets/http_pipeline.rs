//! `sniff::pipeline` — the real tracker of a plaintext HTTP/1 connection, client and server
//! side — on arbitrary bytes after a first request head, through `pipeline::play`, which plays
//! the network filter. Checks: no panic, no endless loop; what reaches the server is always a
//! prefix of what the client sent (nothing reordered, nothing invented); and the outcome is the
//! same whether each step of a schedule arrives whole or byte by byte (up to how much of an
//! allowed body had streamed out). The later heads go through the pipeline's own `HeadParser`,
//! so the chunks split them too. The first head, fed to a `HeadParser` and to a `Sniffer` byte
//! by byte and at the cut points, answers exactly as `parse_request_head` and `sniff` on each
//! prefix.
//!
//! Input: `[seed, split_hi, split_lo, bytes...]`: `bytes` splits at `split` into the client's
//! stream (a first request head, then anything) and the server's; `seed` picks the chunk sizes
//! with which the two sides alternate.
#![no_main]

use egress_guard::sniff::http::{parse_request_head, HeadParser, RequestHead};
use egress_guard::sniff::pipeline::{bytewise, play, Wire};
use egress_guard::sniff::{sniff, Outcome, Sniffer};
use egress_guard_fuzz::prefixes;
use libfuzzer_sys::fuzz_target;

/// Small, so the byte-by-byte delivery stays cheap and the cap is reached.
const MAX_HEAD: usize = 512;

fn allow(head: &RequestHead) -> bool {
    !head
        .host
        .as_deref()
        .is_some_and(|h| h.to_ascii_lowercase().starts_with("evil"))
}

fuzz_target!(|data: &[u8]| {
    let [seed, hi, lo, bytes @ ..] = data else {
        return;
    };
    let split = (usize::from(*hi) << 8 | usize::from(*lo)).min(bytes.len());
    let (client, server) = bytes.split_at(split);
    let first = prefixes::check_resumed(
        client,
        HeadParser::new,
        HeadParser::feed,
        parse_request_head,
    );
    prefixes::check_resumed(
        client,
        Sniffer::new,
        |s, b| s.feed(b, MAX_HEAD),
        |b| sniff(b, MAX_HEAD),
    );
    let Outcome::Found(head) = first else {
        return;
    };
    // The schedule: the first head whole (sniffing holds it), then the two sides alternate in
    // chunks of `c` client and `s` server bytes.
    let (c, s) = (usize::from(seed % 13) + 1, usize::from(seed / 13 % 17) + 1);
    let mut wire = vec![Wire::Client(&client[..head.head_len])];
    let (mut rest_c, mut rest_s) = (&client[head.head_len..], server);
    while !rest_c.is_empty() || !rest_s.is_empty() {
        let (a, b) = rest_c.split_at(c.min(rest_c.len()));
        if !a.is_empty() {
            wire.push(Wire::Client(a));
        }
        rest_c = b;
        let (a, b) = rest_s.split_at(s.min(rest_s.len()));
        if !a.is_empty() {
            wire.push(Wire::Server(a));
        }
        rest_s = b;
    }
    let played = play(&wire, MAX_HEAD, allow);
    assert!(
        client.starts_with(&played.forwarded),
        "forwarded bytes are not the client's, in order"
    );
    if bytes.len() <= 2048 {
        let bytewise = bytewise(&wire);
        let bytewise = play(&bytewise, MAX_HEAD, allow);
        // The requests asked about and the close agree. Where the line between forwarded and
        // held bytes falls may not: a chunk that ends one body and starts the next head holds
        // the body's tail with the head, which bytes one at a time would have let go. (Body
        // bytes of an allowed request, never anything unchecked.)
        assert_eq!(
            (&bytewise.asked, &bytewise.closed),
            (&played.asked, &played.closed),
            "byte by byte"
        );
        if played.closed.is_none() {
            assert_eq!(
                bytewise.forwarded.len() + bytewise.held,
                played.forwarded.len() + played.held,
                "byte by byte: bytes lost"
            );
        }
        assert!(client.starts_with(&bytewise.forwarded));
    }
});
