//! The incremental-parser contract of `egress_guard::sniff`: for every input, the answer for a
//! prefix is either "need more" or the answer for the whole input, and once an answer is final
//! it stays final. Checking every prefix is quadratic, so long inputs are checked at a bounded
//! set of cut points.
//!
//! [`check_resumed`]: the contract of the parsers that keep their place between calls
//! (`Sniffer`, `HeadParser`): fed a growing buffer, they answer exactly as a fresh parse of it.

use std::fmt::Debug;

/// Every prefix length for inputs up to this long.
const ALL_UP_TO: usize = 96;
/// For longer inputs: this many lengths at each end, and this many spread in between.
const EDGE: usize = 24;
const SPREAD: usize = 40;

/// Prefix lengths to check, ascending, always including 0 and `len`.
pub fn cut_points(len: usize) -> Vec<usize> {
    if len <= ALL_UP_TO {
        return (0..=len).collect();
    }
    let mut cuts: Vec<usize> = (0..EDGE).collect();
    cuts.extend((1..SPREAD).map(|i| i * len / SPREAD));
    cuts.extend(len - EDGE..=len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Asserts the contract for `parse` on `data`; returns the answer for the whole input.
pub fn check<T, F, N>(data: &[u8], parse: F, need_more: N) -> T
where
    T: PartialEq + Debug,
    F: Fn(&[u8]) -> T,
    N: Fn(&T) -> bool,
{
    let last = parse(data);
    let mut settled_at = None;
    for end in cut_points(data.len()) {
        let got = parse(&data[..end]);
        if let Some(at) = settled_at {
            assert_eq!(got, last, "prefix of {end} bytes, after it settled at {at}");
        } else if !need_more(&got) {
            assert_eq!(got, last, "prefix of {end} bytes");
            settled_at = Some(end);
        }
    }
    last
}

/// The shortest prefix whose answer is final, found by bisection (valid because of the contract).
/// `None` when even the whole input needs more.
pub fn settle_point<T, F, N>(data: &[u8], parse: F, need_more: N) -> Option<usize>
where
    F: Fn(&[u8]) -> T,
    N: Fn(&T) -> bool,
{
    if need_more(&parse(data)) {
        return None;
    }
    // parse(data[..lo]) needs more (or lo == 0 is untested), parse(data[..hi]) is final.
    let (mut lo, mut hi) = (0usize, data.len());
    if !need_more(&parse(&data[..0])) {
        return Some(0);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if need_more(&parse(&data[..mid])) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Asserts the resumable-parser contract: one parser (`start()`), fed every prefix of `data` in
/// turn (the bytes arriving one at a time), answers at each cut point exactly as `fresh` on
/// that prefix; so does a second one fed only the cut points (larger steps, from the same
/// state). Feeding every prefix is linear for such a parser; only the comparisons with `fresh`
/// are limited to the cut points. Returns the answer for the whole input.
pub fn check_resumed<P, T, S, F, G>(data: &[u8], start: S, feed: F, fresh: G) -> T
where
    T: PartialEq + Debug,
    S: Fn() -> P,
    F: Fn(&mut P, &[u8]) -> T,
    G: Fn(&[u8]) -> T,
{
    let cuts = cut_points(data.len());
    let mut parser = start();
    let mut next = 0;
    for end in 0..=data.len() {
        let got = feed(&mut parser, &data[..end]);
        if cuts.get(next) == Some(&end) {
            next += 1;
            let want = fresh(&data[..end]);
            assert_eq!(got, want, "fed byte by byte, prefix of {end} bytes");
        }
    }
    let mut parser = start();
    let mut last = None;
    for &end in &cuts {
        let got = feed(&mut parser, &data[..end]);
        assert_eq!(
            got,
            fresh(&data[..end]),
            "fed at the cut points, prefix of {end} bytes"
        );
        last = Some(got);
    }
    last.unwrap_or_else(|| fresh(data))
}
