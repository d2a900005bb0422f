//! Destination CIDRs: the `cidrs` syntax of a rule, and the prefix-trie index a compiled policy
//! looks destination IPs up in.
//!
//! The index keeps, for every configured prefix, the rules of that prefix *and of every prefix
//! covering it*, so a lookup is one longest-prefix match followed by one port lookup: no scan over
//! rules, no allocation. The longest-prefix match is a search in a flat table of address ranges
//! ([`RangeTable`]), not a trie walk.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::ports::{PortIndex, PortRange};
use super::RuleId;

/// Why a `cidrs` entry is invalid. Its `Display` is the reason shown after the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// Neither a CIDR nor an IP address.
    NotACidr(String),
    /// Bits set after the prefix length (`10.0.0.1/8`).
    HostBits {
        /// The entry as written.
        text: String,
        /// The network that was probably meant (`10.0.0.0/8`).
        network: IpNet,
        /// The single address, had that been meant (`10.0.0.1/32`).
        address: IpNet,
    },
    /// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`): destinations of that form are matched
    /// as IPv4, so the rule must be written in IPv4.
    Ipv4Mapped {
        /// The entry as written.
        text: String,
        /// The IPv4 network to write instead.
        ipv4: Ipv4Net,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::NotACidr(text) => write!(f, "{text:?} is not a CIDR"),
            CidrError::HostBits {
                text,
                network,
                address,
            } => write!(
                f,
                "{text:?} has host bits set: write \"{network}\" for the network, or \"{address}\" \
                 for the single address"
            ),
            CidrError::Ipv4Mapped { text, ipv4 } => write!(
                f,
                "{text:?} is an IPv4-mapped IPv6 network: write \"{ipv4}\" (such destinations \
                 are matched as IPv4)"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

/// Parses a `cidrs` entry: `addr/len` with no host bits set, or a bare address (`/32`, `/128`).
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let net = if text.contains('/') {
        text.parse::<IpNet>()
            .map_err(|_| CidrError::NotACidr(text.to_string()))?
    } else {
        IpNet::from(
            text.parse::<IpAddr>()
                .map_err(|_| CidrError::NotACidr(text.to_string()))?,
        )
    };
    check_cidr_text(net, text)?;
    Ok(net)
}

/// Re-checks a network built in code (host bits, IPv4-mapped). Formats the network only for an
/// error: a configuration is validated on every load, with thousands of CIDRs.
pub(crate) fn check_cidr(net: IpNet) -> Result<(), CidrError> {
    let mapped = matches!(net, IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96);
    if net.trunc() == net && !mapped {
        return Ok(());
    }
    check_cidr_text(net, &net.to_string())
}

fn check_cidr_text(net: IpNet, text: &str) -> Result<(), CidrError> {
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            text: text.to_string(),
            network: net.trunc(),
            address: IpNet::from(net.addr()),
        });
    }
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            let ipv4 = Ipv4Net::new(v4, len).map_err(|_| CidrError::NotACidr(text.to_string()))?;
            return Err(CidrError::Ipv4Mapped {
                text: text.to_string(),
                ipv4,
            });
        }
    }
    Ok(())
}

/// A destination as policies see it: an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is its IPv4
/// address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        IpAddr::V4(_) => ip,
    }
}

/// A `cidrs` entry while deserialising: validates through [`parse_cidr`].
pub(crate) struct Cidr(pub(crate) IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        struct CidrVisitor;
        impl Visitor<'_> for CidrVisitor {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR or IP address string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
                parse_cidr(v).map(Cidr).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CidrVisitor)
    }
}

/// Collects `(network, rule)` pairs; [`CidrIndexBuilder::build`] makes the [`CidrIndex`].
#[derive(Default)]
pub(crate) struct CidrIndexBuilder {
    /// Each prefix's own rules.
    v4: PrefixMap<Ipv4Net, PortIndex>,
    v6: PrefixMap<Ipv6Net, PortIndex>,
}

impl CidrIndexBuilder {
    /// Indexes `net` (host bits are ignored) for `rule`, whose ports are `ports` (empty: any).
    pub(crate) fn add(&mut self, net: IpNet, rule: RuleId, ports: &[PortRange]) {
        match net.trunc() {
            IpNet::V4(n) => self.v4.entry(n).or_default().add(rule, ports),
            IpNet::V6(n) => self.v6.entry(n).or_default().add(rule, ports),
        }
    }

    /// Compiles the index.
    pub(crate) fn build(self) -> CidrIndex {
        CidrIndex {
            v4: RangeTable::new(&inherit(&self.v4), |n: &Ipv4Net| {
                (u32::from(n.network()), u32::from(n.broadcast()))
            }),
            v6: RangeTable::new(&inherit(&self.v6), |n: &Ipv6Net| {
                (u128::from(n.network()), u128::from(n.broadcast()))
            }),
        }
    }
}

/// For every prefix, a port index over its rules and the rules of every prefix covering it.
fn inherit<P: prefix_trie::Prefix>(map: &PrefixMap<P, PortIndex>) -> Vec<(P, PortIndex)> {
    map.iter()
        .map(|(prefix, _)| {
            let mut idx = PortIndex::default();
            for cover in map.cover_values(&prefix) {
                idx.overlay(cover);
            }
            (prefix, idx)
        })
        .collect()
}

/// An address as a number, for [`RangeTable`].
trait Addr: Copy + Ord + Default {
    /// The top `bits` bits (0 to 16), as a directory slot.
    fn top(self, bits: u32) -> usize;
    /// The next address, `None` after the last.
    fn next(self) -> Option<Self>;
}

impl Addr for u32 {
    fn top(self, bits: u32) -> usize {
        usize::try_from(self.checked_shr(32 - bits).unwrap_or(0)).unwrap_or(0)
    }
    fn next(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Addr for u128 {
    fn top(self, bits: u32) -> usize {
        usize::try_from(self.checked_shr(128 - bits).unwrap_or(0)).unwrap_or(0)
    }
    fn next(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// No prefix holds the range.
const NO_PREFIX: u32 = u32::MAX;

/// The address space cut into ranges, each with the index of the longest prefix holding it (its
/// [`PortIndex`], which has its covering prefixes' rules too): a lookup is a directory slot
/// (the address's top bits), a binary search among the ranges that start in that slot (a few,
/// when the prefixes spread over the space; all of them when they share their top 16 bits,
/// still logarithmic), and the port index. A trie walk would follow one pointer per level,
/// each a cache miss in a large policy.
#[derive(Clone, Default)]
struct RangeTable<A> {
    /// Where each range starts, ascending (the first starts at 0), and its prefix: an index
    /// into `ports`, or [`NO_PREFIX`]. Side by side, so the search and the prefix share a
    /// cache line.
    ranges: Box<[(A, u32)]>,
    ports: Box<[PortIndex]>,
    /// `dir[t]`: the first range starting at or after the first address whose top `bits`
    /// bits are `t`; one more slot at the end.
    dir: Box<[u32]>,
    bits: u32,
}

impl<A: Addr> RangeTable<A> {
    /// `bounds(p)`: the first and last address of prefix `p`. The prefixes are distinct, so any
    /// two are nested or disjoint, and in lexicographic order (as `PrefixMap` iterates): by
    /// first address, a prefix before the longer ones it holds. (No sort here: each sort
    /// instance costs the module kilobytes.)
    fn new<P>(prefixes: &[(P, PortIndex)], bounds: impl Fn(&P) -> (A, A)) -> RangeTable<A> {
        let order = prefixes.iter().enumerate().map(|(i, (p, _))| {
            let (first, last) = bounds(p);
            (first, last, i)
        });
        let mut cuts: Vec<(A, u32)> = vec![(A::default(), NO_PREFIX)];
        let mut open: Vec<(A, u32)> = Vec::new(); // (last address, prefix), innermost on top
        let index = |i: usize| u32::try_from(i).unwrap_or(NO_PREFIX);
        let close_before = |at: Option<A>, open: &mut Vec<(A, u32)>, cuts: &mut Vec<(A, u32)>| {
            while let Some(&(last, _)) = open.last() {
                if at.is_some_and(|a| last >= a) {
                    break;
                }
                open.pop();
                if let Some(after) = last.next() {
                    cuts.push((after, open.last().map_or(NO_PREFIX, |o| o.1)));
                }
            }
        };
        for (first, last, i) in order {
            close_before(Some(first), &mut open, &mut cuts);
            cuts.push((first, index(i)));
            open.push((last, index(i)));
        }
        close_before(None, &mut open, &mut cuts);
        // The last cut at an address wins; neighbours with the same prefix are one range.
        let mut starts: Vec<A> = Vec::with_capacity(cuts.len());
        let mut prefix: Vec<u32> = Vec::with_capacity(cuts.len());
        for (at, p) in cuts {
            if starts.last() == Some(&at) {
                prefix.pop();
                starts.pop();
            }
            if prefix.last() == Some(&p) {
                continue;
            }
            starts.push(at);
            prefix.push(p);
        }
        // About one range per directory slot, at most 2^16 slots.
        let bits = usize::BITS - starts.len().leading_zeros().min(usize::BITS);
        let bits = bits.min(16);
        let slots = 1usize << bits;
        let mut dir = Vec::with_capacity(slots + 1);
        let mut at = 0usize;
        for slot in 0..slots {
            while starts.get(at).is_some_and(|s| s.top(bits) < slot) {
                at += 1;
            }
            dir.push(index(at));
        }
        dir.push(index(starts.len()));
        RangeTable {
            ranges: starts.into_iter().zip(prefix).collect(),
            ports: prefixes.iter().map(|(_, idx)| idx.clone()).collect(),
            dir: dir.into_boxed_slice(),
            bits,
        }
    }

    /// The port index of the longest prefix holding `addr`.
    #[inline]
    fn get(&self, addr: A) -> Option<&PortIndex> {
        let slot = addr.top(self.bits);
        let at = |i: usize| self.dir.get(i).and_then(|&d| usize::try_from(d).ok());
        // The range holding `addr` starts in this slot, or is the last one before it.
        let lo = at(slot)?.saturating_sub(1);
        let hi = at(slot + 1)?;
        let within = self.ranges.get(lo..hi)?;
        let range = within.partition_point(|&(s, _)| s <= addr).checked_sub(1)?;
        let prefix = usize::try_from(within.get(range)?.1).ok()?;
        self.ports.get(prefix)
    }

    /// The number of prefixes.
    fn len(&self) -> usize {
        self.ports.len()
    }
}

/// The compiled CIDR index of a policy.
#[derive(Clone)]
pub(crate) struct CidrIndex {
    v4: RangeTable<u32>,
    v6: RangeTable<u128>,
}

impl fmt::Debug for CidrIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CidrIndex")
            .field("v4", &self.v4.len())
            .field("v6", &self.v6.len())
            .finish()
    }
}

impl CidrIndex {
    /// The lowest rule id with a CIDR containing `ip` (already [`canonical_ip`]) and ports
    /// containing `port`.
    #[inline]
    pub(crate) fn lookup(&self, ip: IpAddr, port: u16) -> Option<RuleId> {
        let idx = match ip {
            IpAddr::V4(v4) => self.v4.get(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(u128::from(v6)),
        };
        idx.and_then(|idx| idx.get(port))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn parse_cases() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.0.1", "10.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00:ec2::254", "fd00:ec2::254/128"),
            ("FD00::/8", "fd00::/8"),
            ("::/0", "::/0"),
            ("::/80", "::/80"),
        ];
        for (text, want) in ok {
            assert_eq!(parse_cidr(text).unwrap().to_string(), want, "{text}");
        }
        let bad = [
            ("10.0.0.300/8", "\"10.0.0.300/8\" is not a CIDR"),
            ("10.0.0.0/33", "\"10.0.0.0/33\" is not a CIDR"),
            ("10.0.0.0/", "\"10.0.0.0/\" is not a CIDR"),
            ("example.com", "\"example.com\" is not a CIDR"),
            (" 10.0.0.0/8", "\" 10.0.0.0/8\" is not a CIDR"),
            (
                "10.0.0.1/8",
                "\"10.0.0.1/8\" has host bits set: write \"10.0.0.0/8\" for the network, or \
                 \"10.0.0.1/32\" for the single address",
            ),
            (
                "fd00::1/8",
                "\"fd00::1/8\" has host bits set: write \"fd00::/8\" for the network, or \
                 \"fd00::1/128\" for the single address",
            ),
            (
                "::ffff:10.0.0.0/104",
                "\"::ffff:10.0.0.0/104\" is an IPv4-mapped IPv6 network: write \"10.0.0.0/8\" \
                 (such destinations are matched as IPv4)",
            ),
            (
                "::ffff:169.254.169.254",
                "\"::ffff:169.254.169.254\" is an IPv4-mapped IPv6 network: write \
                 \"169.254.169.254/32\" (such destinations are matched as IPv4)",
            ),
            (
                "::ffff:0:0/96",
                "\"::ffff:0:0/96\" is an IPv4-mapped IPv6 network: write \"0.0.0.0/0\" (such \
                 destinations are matched as IPv4)",
            ),
        ];
        for (text, want) in bad {
            assert_eq!(parse_cidr(text).unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn canonical() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical_ip(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(canonical_ip(ip("::1.2.3.4")), ip("::1.2.3.4"));
        assert_eq!(canonical_ip(ip("fd00::1")), ip("fd00::1"));
        assert_eq!(canonical_ip(ip("1.2.3.4")), ip("1.2.3.4"));
    }

    /// The index against the definition (the lowest rule among the prefixes that hold the
    /// address), through the builder, so that `PrefixMap`'s iteration order is checked too. The
    /// prefixes are drawn from a few addresses so that they nest and touch, the address
    /// space's first and last addresses included.
    #[cfg(not(target_arch = "wasm32"))]
    mod range_table {
        use super::*;
        use proptest::prelude::*;

        const V4: [u32; 6] = [
            0,
            0x0a00_0000,
            0x0a01_0000,
            0x0aff_ffff,
            0xffff_ff00,
            u32::MAX,
        ];
        const V6: [u128; 4] = [0, 0xfd00 << 112, (0xfd00 << 112) | 1, u128::MAX];

        fn net() -> impl Strategy<Value = IpNet> {
            prop_oneof![
                (prop::sample::select(V4.to_vec()), 0u8..=32).prop_map(|(a, len)| {
                    IpNet::V4(Ipv4Net::new(a.into(), len).unwrap().trunc())
                }),
                (prop::sample::select(V6.to_vec()), 0u8..=128).prop_map(|(a, len)| {
                    IpNet::V6(Ipv6Net::new(a.into(), len).unwrap().trunc())
                }),
            ]
        }

        fn addr() -> impl Strategy<Value = IpAddr> {
            let near =
                |base: u32| (0u32..64).prop_map(move |d| base.wrapping_add(d).wrapping_sub(32));
            prop_oneof![
                any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
                prop::sample::select(V4.to_vec())
                    .prop_flat_map(near)
                    .prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
                prop::sample::select(V6.to_vec())
                    .prop_flat_map(
                        |b| (0u128..64).prop_map(move |d| b.wrapping_add(d).wrapping_sub(32))
                    )
                    .prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
            ]
        }

        proptest! {
            #[test]
            fn finds_the_lowest_rule_holding_the_address(
                nets in prop::collection::vec(net(), 0..14),
                addrs in prop::collection::vec(addr(), 64),
            ) {
                let mut b = CidrIndexBuilder::default();
                for (i, net) in nets.iter().enumerate() {
                    b.add(*net, RuleId::try_from(i).unwrap(), &[]);
                }
                let index = b.build();
                for a in addrs {
                    let want = nets
                        .iter()
                        .position(|n| n.contains(&a))
                        .map(|i| RuleId::try_from(i).unwrap());
                    prop_assert_eq!(index.lookup(a, 1), want, "{}", a);
                }
            }
        }
    }

    /// Thousands of random prefixes (IPv4 and IPv6, /0 to /32 and /128, many sharing their top
    /// bits), so that the directory is large (`bits` of 13 or more), against a scan: every
    /// prefix's first and last address and their neighbours, the ends of the space, random
    /// addresses.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn many_prefixes_against_a_scan() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for count in [0usize, 1, 3, 5000] {
            let mut nets = Vec::new();
            let mut addrs = Vec::new();
            for _ in 0..count {
                let len = u8::try_from(next() % 33).unwrap();
                let len = if next() % 2 == 0 { len.max(16) } else { len };
                let v4 = Ipv4Net::new(Ipv4Addr::from(next() as u32), len)
                    .unwrap()
                    .trunc();
                let high = if next() % 2 == 0 {
                    0xfd00u128 << 112
                } else {
                    0
                };
                let a6 = (u128::from(next()) << 64 | u128::from(next())) >> 8 | high;
                let len6 = u8::try_from(next() % 129).unwrap();
                let v6 = Ipv6Net::new(Ipv6Addr::from(a6), len6).unwrap().trunc();
                nets.extend([IpNet::V4(v4), IpNet::V6(v6)]);
                if next() % 8 == 0 {
                    for x in [u32::from(v4.network()), u32::from(v4.broadcast())] {
                        for d in [0, 1, u32::MAX] {
                            addrs.push(IpAddr::from(Ipv4Addr::from(x.wrapping_add(d))));
                        }
                    }
                    for x in [u128::from(v6.network()), u128::from(v6.broadcast())] {
                        for d in [0, 1, u128::MAX] {
                            addrs.push(IpAddr::from(Ipv6Addr::from(x.wrapping_add(d))));
                        }
                    }
                }
            }
            for x in [0, 1, u32::MAX - 1, u32::MAX, 0x7fff_ffff, 0x8000_0000] {
                addrs.push(IpAddr::from(Ipv4Addr::from(x)));
            }
            for x in [0, 1, u128::MAX - 1, u128::MAX] {
                addrs.push(IpAddr::from(Ipv6Addr::from(x)));
            }
            for _ in 0..500 {
                addrs.push(IpAddr::from(Ipv4Addr::from(next() as u32)));
            }
            let mut b = CidrIndexBuilder::default();
            for (i, net) in nets.iter().enumerate() {
                b.add(*net, RuleId::try_from(i).unwrap(), &[]);
            }
            let index = b.build();
            if count == 5000 {
                assert!(index.v4.bits >= 13 && index.v6.bits >= 13, "{index:?}");
            }
            for a in addrs {
                let want = nets.iter().position(|n| n.contains(&a));
                let want = want.map(|i| RuleId::try_from(i).unwrap());
                assert_eq!(index.lookup(a, 1), want, "{a}, {count} prefixes");
            }
        }
    }

    #[test]
    fn index_inherits_covering_prefixes() {
        let table: Vec<Vec<PortRange>> = vec![
            vec![PortRange { lo: 22, hi: 22 }],
            vec![],
            vec![PortRange { lo: 443, hi: 443 }],
            vec![],
        ];
        let mut b = CidrIndexBuilder::default();
        for (net, id) in [
            ("10.1.2.3/32", 3),
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 0),
            ("0.0.0.0/0", 2),
            ("fd00::/8", 0),
        ] {
            b.add(net.parse().unwrap(), id, &table[id as usize]);
        }
        let idx = b.build();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(idx.lookup(ip("10.1.2.3"), 22), Some(0));
        assert_eq!(idx.lookup(ip("10.1.2.3"), 80), Some(1));
        assert_eq!(idx.lookup(ip("10.1.2.3"), 443), Some(1));
        assert_eq!(idx.lookup(ip("11.0.0.1"), 443), Some(2));
        assert_eq!(idx.lookup(ip("11.0.0.1"), 80), None);
        assert_eq!(idx.lookup(ip("fd00::1"), 22), Some(0));
        assert_eq!(idx.lookup(ip("fd00::1"), 23), None);
        assert_eq!(idx.lookup(ip("fe00::1"), 22), None);
    }
}
