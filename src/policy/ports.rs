//! Destination ports: the `ports` syntax of a rule, and the index that answers "which is the
//! lowest rule id, among these rules, whose ports contain this port?" in `O(log n)`.

#[cfg(test)]
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::RuleId;

/// An inclusive range of destination ports, `lo..=hi`, with `1 <= lo <= hi <= 65535`.
///
/// In JSON a port is an integer (`443`), a range is a string `"lo-hi"` (`"5432-5433"`); a single
/// port may also be written as a string (`"443"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub lo: u16,
    /// Last port of the range (inclusive).
    pub hi: u16,
}

/// Why a port or a port range is invalid. Its `Display` is the reason shown after the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortError {
    /// An integer outside `1..=65535`.
    OutOfRange(i128),
    /// A string that is neither `"N"` nor `"lo-hi"`.
    Syntax(String),
    /// A range string with a port outside `1..=65535`.
    RangeOutOfRange(String),
    /// A range whose `lo` is greater than its `hi`.
    Reversed {
        /// The range as written.
        text: String,
        /// Its first port.
        lo: u32,
        /// Its last port.
        hi: u32,
    },
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::OutOfRange(n) => write!(f, "{n} is not a port (1-65535)"),
            PortError::Syntax(text) => {
                write!(f, "{text:?} is not a port or a port range \"lo-hi\"")
            }
            PortError::RangeOutOfRange(text) => {
                write!(f, "{text:?} is not a port range: ports are 1-65535")
            }
            PortError::Reversed { text, lo, hi } => {
                write!(f, "{text:?} is not a port range: {lo} is greater than {hi}")
            }
        }
    }
}

impl std::error::Error for PortError {}

impl PortRange {
    /// Every port, including 0 (what a rule without `ports` matches).
    pub(crate) const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// The range `lo..=hi`; errors unless `1 <= lo <= hi`.
    pub fn new(lo: u16, hi: u16) -> Result<PortRange, PortError> {
        if lo == 0 {
            return Err(PortError::OutOfRange(0));
        }
        if lo > hi {
            return Err(PortError::Reversed {
                text: format!("{lo}-{hi}"),
                lo: u32::from(lo),
                hi: u32::from(hi),
            });
        }
        Ok(PortRange { lo, hi })
    }

    /// The single port `port`, which must not be 0.
    pub fn single(port: u16) -> Result<PortRange, PortError> {
        PortRange::new(port, port)
    }

    /// Whether `port` is inside the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Parses `"N"` or `"lo-hi"` (decimal, no spaces, no sign).
    pub fn parse(text: &str) -> Result<PortRange, PortError> {
        let syntax = || PortError::Syntax(text.to_string());
        let number = |s: &str| -> Result<u32, PortError> {
            if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            s.parse::<u32>().map_err(|_| syntax())
        };
        match text.split_once('-') {
            None => {
                let port = number(text)?;
                match u16::try_from(port) {
                    Ok(p) if p != 0 => Ok(PortRange { lo: p, hi: p }),
                    _ => Err(PortError::OutOfRange(i128::from(port))),
                }
            }
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                let (Ok(lo16), Ok(hi16)) = (u16::try_from(lo), u16::try_from(hi)) else {
                    return Err(PortError::RangeOutOfRange(text.to_string()));
                };
                if lo16 == 0 || hi16 == 0 {
                    return Err(PortError::RangeOutOfRange(text.to_string()));
                }
                if lo16 > hi16 {
                    return Err(PortError::Reversed {
                        text: text.to_string(),
                        lo,
                        hi,
                    });
                }
                Ok(PortRange { lo: lo16, hi: hi16 })
            }
        }
    }

    /// Re-checks a range built in code (the fields are public).
    pub(crate) fn check(self) -> Result<(), PortError> {
        PortRange::new(self.lo, self.hi).map(|_| ())
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = PortError;
    fn from_str(s: &str) -> Result<PortRange, PortError> {
        PortRange::parse(s)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PortRange, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (1-65535) or a port range \"lo-hi\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                match u16::try_from(v) {
                    Ok(p) if p != 0 => Ok(PortRange { lo: p, hi: p }),
                    _ => Err(E::custom(PortError::OutOfRange(i128::from(v)))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(PortError::OutOfRange(i128::from(v)))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                PortRange::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// One segment of a [`PortIndex`]: ports `lo..=hi` map to `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    lo: u16,
    hi: u16,
    rule: RuleId,
}

/// For a fixed set of rules, the lowest rule id whose ports contain a given port.
///
/// Built once as sorted, disjoint segments of the port space, each labelled with the lowest rule
/// id covering it; a lookup is one binary search, whatever the number of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortIndex {
    segments: Segments,
}

/// The segments, the common single one inline: a lookup that finds a name or a prefix then
/// reads its ports from the same cache line instead of following one more pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Segments {
    #[default]
    None,
    One(Segment),
    Many(Box<[Segment]>),
}

impl From<Vec<Segment>> for Segments {
    fn from(mut segments: Vec<Segment>) -> Segments {
        match segments.len() {
            0 => Segments::None,
            1 => segments.pop().map_or(Segments::None, Segments::One),
            _ => Segments::Many(segments.into_boxed_slice()),
        }
    }
}

impl PortIndex {
    /// Builds the index of `rules` (ids in any order, duplicates allowed); `ports(id)` gives a
    /// rule's ranges, empty for "any port". One sweep over all the rules' boundaries: the
    /// reference the compiled indexes' one-rule-at-a-time [`PortIndex::add`] is tested against.
    #[cfg(test)]
    pub(crate) fn build<'a, F>(rules: impl IntoIterator<Item = RuleId>, ports: F) -> PortIndex
    where
        F: Fn(RuleId) -> &'a [PortRange],
    {
        let mut ids: Vec<RuleId> = rules.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        if let [id] = *ids.as_slice() {
            // The common case (one rule per name, per prefix): its own ranges.
            let ranges = ports(id);
            let segments = if ranges.is_empty() {
                Segments::One(Segment {
                    lo: 0,
                    hi: u16::MAX,
                    rule: id,
                })
            } else {
                merge(ranges)
                    .into_iter()
                    .map(|r| Segment {
                        lo: r.lo,
                        hi: r.hi,
                        rule: id,
                    })
                    .collect::<Vec<_>>()
                    .into()
            };
            return PortIndex { segments };
        }
        // Sweep over range boundaries. Ends are stored at `hi + 1`, so u32.
        let mut events: Vec<(u32, bool, RuleId)> = Vec::new();
        for &id in &ids {
            let ranges = ports(id);
            let whole = [PortRange::ANY];
            let ranges = if ranges.is_empty() {
                &whole[..]
            } else {
                ranges
            };
            for range in merge(ranges) {
                events.push((u32::from(range.lo), true, id));
                events.push((u32::from(range.hi) + 1, false, id));
            }
        }
        events.sort_unstable();
        let mut active: BTreeSet<RuleId> = BTreeSet::new();
        let mut segments: Vec<Segment> = Vec::new();
        let mut events = events.into_iter().peekable();
        while let Some((pos, start, id)) = events.next() {
            apply(&mut active, start, id);
            while let Some(&(next_pos, start, id)) = events.peek() {
                if next_pos != pos {
                    break;
                }
                apply(&mut active, start, id);
                events.next();
            }
            let (Some(&rule), Some(&(end, _, _))) = (active.first(), events.peek()) else {
                continue;
            };
            // `pos` is a start or end boundary <= 65535 while a range is active, and `end` is a
            // later boundary <= 65536.
            let (Ok(lo), Ok(hi)) = (u16::try_from(pos), u16::try_from(end - 1)) else {
                continue;
            };
            match segments.last_mut() {
                Some(last) if last.rule == rule && u32::from(last.hi) + 1 == pos => last.hi = hi,
                _ => segments.push(Segment { lo, hi, rule }),
            }
        }
        PortIndex {
            segments: segments.into(),
        }
    }

    /// The lowest rule id whose ports contain `port`.
    /// Adds rule `id` with its `ports` (as a rule writes them; empty: every port), in any order:
    /// afterwards each port answers the lower of what it answered before and `id`.
    ///
    /// The compiled indexes are built this way, one rule at a time, straight into their final
    /// form: no list of rule ids per key and no table of every rule's ports is kept while a
    /// policy compiles (a VM's linear memory keeps the compile's peak for good).
    pub(crate) fn add(&mut self, id: RuleId, ports: &[PortRange]) {
        let whole = [PortRange::ANY];
        let ranges = if ports.is_empty() { &whole[..] } else { ports };
        if let Segments::None = self.segments {
            // The common case: a key seen for the first time.
            self.segments = merge(ranges)
                .into_iter()
                .map(|r| Segment {
                    lo: r.lo,
                    hi: r.hi,
                    rule: id,
                })
                .collect::<Vec<_>>()
                .into();
            return;
        }
        if ranges.iter().all(|r| self.covers_below(id, *r)) {
            return; // Lower rules already answer every one of these ports.
        }
        let new: Vec<Segment> = merge(ranges)
            .into_iter()
            .map(|r| Segment {
                lo: r.lo,
                hi: r.hi,
                rule: id,
            })
            .collect();
        self.segments = combine(self.segments.as_slice(), &new).into();
    }

    /// Adds every rule of `other` (see [`PortIndex::add`]).
    pub(crate) fn overlay(&mut self, other: &PortIndex) {
        match (&self.segments, &other.segments) {
            (_, Segments::None) => {}
            (Segments::None, _) => self.segments = other.segments.clone(),
            _ => {
                self.segments = combine(self.segments.as_slice(), other.segments.as_slice()).into()
            }
        }
    }

    /// Whether every port of `range` already answers a rule below `id`.
    fn covers_below(&self, id: RuleId, range: PortRange) -> bool {
        let segments = self.segments.as_slice();
        let mut next = u32::from(range.lo);
        let at = segments.partition_point(|s| s.hi < range.lo);
        for s in segments.get(at..).unwrap_or_default() {
            if u32::from(s.lo) > next || s.rule >= id {
                return false;
            }
            next = u32::from(s.hi) + 1;
            if next > u32::from(range.hi) {
                return true;
            }
        }
        false
    }

    #[inline]
    pub(crate) fn get(&self, port: u16) -> Option<RuleId> {
        let segments = match &self.segments {
            Segments::None => return None,
            Segments::One(s) => return (s.lo <= port && port <= s.hi).then_some(s.rule),
            Segments::Many(segments) => segments,
        };
        let at = segments.partition_point(|s| s.hi < port);
        match segments.get(at) {
            Some(s) if s.lo <= port => Some(s.rule),
            _ => None,
        }
    }
}

impl Segments {
    fn as_slice(&self) -> &[Segment] {
        match self {
            Segments::None => &[],
            Segments::One(s) => std::slice::from_ref(s),
            Segments::Many(segments) => segments,
        }
    }
}

/// The point-wise lower rule of two sorted, disjoint segment lists, as sorted, disjoint
/// segments (neighbours with the same rule joined).
fn combine(a: &[Segment], b: &[Segment]) -> Vec<Segment> {
    // Every segment starts and ends (at `hi + 1`) on a boundary; between two consecutive
    // boundaries each list is either absent or one segment throughout.
    let mut bounds: Vec<u32> = a
        .iter()
        .chain(b)
        .flat_map(|s| [u32::from(s.lo), u32::from(s.hi) + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let (mut i, mut j) = (0, 0);
    let mut out: Vec<Segment> = Vec::with_capacity(a.len() + b.len());
    for pair in bounds.windows(2) {
        let [lo, end] = *pair else { continue };
        while a.get(i).is_some_and(|s| u32::from(s.hi) < lo) {
            i += 1;
        }
        while b.get(j).is_some_and(|s| u32::from(s.hi) < lo) {
            j += 1;
        }
        let at = |s: Option<&Segment>| s.filter(|s| u32::from(s.lo) <= lo).map(|s| s.rule);
        let Some(rule) = super::min_rule(at(a.get(i)), at(b.get(j))) else {
            continue;
        };
        // Boundaries are at most 65536 and `lo < end`.
        let (Ok(lo16), Ok(hi16)) = (u16::try_from(lo), u16::try_from(end - 1)) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.rule == rule && u32::from(last.hi) + 1 == lo => last.hi = hi16,
            _ => out.push(Segment {
                lo: lo16,
                hi: hi16,
                rule,
            }),
        }
    }
    out
}

#[cfg(test)]
fn apply(active: &mut BTreeSet<RuleId>, start: bool, id: RuleId) {
    if start {
        active.insert(id);
    } else {
        active.remove(&id);
    }
}

/// Sorts and merges overlapping or adjacent ranges, so one rule's ranges are disjoint.
pub(crate) fn merge(ranges: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match out.last_mut() {
            Some(last) if u32::from(range.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(range.hi);
            }
            _ => out.push(range),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn r(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    #[test]
    fn parse_cases() {
        assert_eq!(PortRange::parse("443"), Ok(r(443, 443)));
        assert_eq!(PortRange::parse("1-65535"), Ok(r(1, 65535)));
        assert_eq!(PortRange::parse("7-7"), Ok(r(7, 7)));
        let bad = [
            ("0", "0 is not a port (1-65535)"),
            ("70000", "70000 is not a port (1-65535)"),
            ("9-3", "\"9-3\" is not a port range: 9 is greater than 3"),
            ("0-3", "\"0-3\" is not a port range: ports are 1-65535"),
            (
                "1-65536",
                "\"1-65536\" is not a port range: ports are 1-65535",
            ),
            ("abc", "\"abc\" is not a port or a port range \"lo-hi\""),
            ("", "\"\" is not a port or a port range \"lo-hi\""),
            ("1-", "\"1-\" is not a port or a port range \"lo-hi\""),
            (" 80", "\" 80\" is not a port or a port range \"lo-hi\""),
            ("+80", "\"+80\" is not a port or a port range \"lo-hi\""),
            ("1-2-3", "\"1-2-3\" is not a port or a port range \"lo-hi\""),
            (
                "0000080",
                "\"0000080\" is not a port or a port range \"lo-hi\"",
            ),
        ];
        for (text, want) in bad {
            assert_eq!(
                PortRange::parse(text).unwrap_err().to_string(),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn merge_ranges() {
        assert_eq!(
            merge(&[r(80, 80), r(1, 5), r(6, 9), r(81, 90), r(3, 4), r(100, 100)]),
            vec![r(1, 9), r(80, 90), r(100, 100)]
        );
    }

    #[test]
    fn index_picks_lowest_rule() {
        let table: Vec<Vec<PortRange>> = vec![
            vec![r(443, 443)],           // 0
            vec![],                      // 1: any port
            vec![r(80, 90), r(85, 100)], // 2
            vec![r(1, 65535)],           // 3
            vec![r(65535, 65535)],       // 4
        ];
        let ports = |id: RuleId| table[id as usize].as_slice();
        let idx = PortIndex::build([2, 0, 4], ports);
        assert_eq!(idx.get(443), Some(0));
        assert_eq!(idx.get(80), Some(2));
        assert_eq!(idx.get(100), Some(2));
        assert_eq!(idx.get(101), None);
        assert_eq!(idx.get(79), None);
        assert_eq!(idx.get(0), None);
        assert_eq!(idx.get(65535), Some(4));
        let idx = PortIndex::build([3, 2, 1, 0, 2], ports);
        assert_eq!(idx.get(0), Some(1));
        assert_eq!(idx.get(443), Some(0));
        assert_eq!(idx.get(80), Some(1));
        assert_eq!(idx.get(65535), Some(1));
        let idx = PortIndex::build([3, 4, 2], ports);
        assert_eq!(idx.get(0), None);
        assert_eq!(idx.get(1), Some(3));
        assert_eq!(idx.get(85), Some(2));
        assert_eq!(idx.get(65535), Some(3));
        assert_eq!(PortIndex::build([], ports).get(1), None);
    }
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn ranges() -> impl Strategy<Value = Vec<PortRange>> {
        prop::collection::vec(
            (1u16..40, 0u16..10).prop_map(|(lo, len)| PortRange {
                lo,
                hi: lo.saturating_add(len),
            }),
            0..3,
        )
    }

    proptest! {
        #[test]
        fn index_equals_scan(table in prop::collection::vec(ranges(), 0..8), port in 0u16..60) {
            let ports = |id: RuleId| table[id as usize].as_slice();
            let idx = PortIndex::build(0..table.len() as RuleId, ports);
            let want = (0..table.len() as RuleId).find(|&id| {
                let rs = ports(id);
                rs.is_empty() || rs.iter().any(|r| r.contains(port))
            });
            prop_assert_eq!(idx.get(port), want);
        }

        /// Adding rules one at a time, in any order (and some twice), or overlaying indexes,
        /// gives exactly the index built from all of them at once.
        #[test]
        fn add_equals_build(table in prop::collection::vec(ranges(), 0..8),
                            order in prop::collection::vec(0usize..8, 0..12),
                            split in 0usize..12) {
            let ports = |id: RuleId| table[id as usize].as_slice();
            let ids: Vec<RuleId> = order.iter().filter(|&&i| i < table.len()).map(|&i| i as RuleId).collect();
            let built = PortIndex::build(ids.iter().copied(), ports);
            let mut added = PortIndex::default();
            for &id in &ids {
                added.add(id, ports(id));
            }
            prop_assert_eq!(&added, &built);
            let (left, right) = ids.split_at(split.min(ids.len()));
            let mut a = PortIndex::build(left.iter().copied(), ports);
            a.overlay(&PortIndex::build(right.iter().copied(), ports));
            prop_assert_eq!(&a, &built);
        }
    }
}
