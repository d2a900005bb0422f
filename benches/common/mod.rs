//! A deterministic, realistic policy generator shared by the benchmarks.
//!
//! `generate(n, seed)` writes a policy of `n` rules (1% of them, at least one, deny rules: the
//! cloud metadata endpoint and generated ones; the rest allow rules) as JSON, in this mix:
//!
//! | share | rule |
//! |---|---|
//! | 70% | 1–3 host patterns: 60% exact names (`api.<domain>`), 40% `*.<domain>` |
//! | 20% | 1–2 CIDRs: 75% IPv4 (/16–/32), 25% IPv6 (/32–/128) |
//! | 10% | host patterns and CIDRs |
//!
//! and ports: 60% `[443]`, 20% `[80, 443]`, 10% a range `"8000-8999"`, 10% none (any port).
//! Every domain is distinct (`<word><id>.<tld>`). No generated CIDR touches 198.18.0.0/15 or
//! 2001:db8::/32, and no generated name ends in `.invalid`: the queries that must miss use those.
//!
//! It also returns queries, 1024 of each kind, sampled from the rules with the same seed:
//! `host` (a name that a host rule matches, on one of its ports, from an IP no CIDR holds),
//! `cidr` (an IP inside a rule's CIDR, on one of its ports, no name), `miss` (a four-label name
//! and an IP no rule matches, port 443).
#![allow(dead_code)]

pub mod conn;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// splitmix64: small, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const SYLLABLES: &[&str] = &[
    "al", "be", "cor", "da", "el", "fin", "ga", "hub", "io", "jet", "ka", "lo", "mi", "net", "or",
    "pa", "qu", "ro", "sta", "tor", "un", "ve", "wa", "xe", "yo", "zen",
];
const TLDS: &[&str] = &["com", "net", "org", "io", "dev", "cloud", "co.uk", "de"];
const SUBS: &[&str] = &[
    "api", "www", "cdn", "auth", "registry", "static", "upload", "login",
];

fn word(rng: &mut Rng) -> String {
    let n = 2 + rng.below(2);
    (0..n).map(|_| *rng.pick(SYLLABLES)).collect()
}

/// A host pattern of a rule, and a name that it matches.
#[derive(Debug, Clone)]
pub struct Host {
    pub pattern: String,
    pub example: String,
}

#[derive(Debug, Clone)]
pub struct GenRule {
    pub deny: bool,
    pub hosts: Vec<Host>,
    /// (network, an address inside it)
    pub cidrs: Vec<(String, IpAddr)>,
    /// JSON values: `443` or `"8000-8999"`.
    pub ports: Vec<String>,
    /// A port the rule matches.
    pub port: u16,
}

pub struct Generated {
    pub json: String,
    pub rules: Vec<GenRule>,
    pub host_queries: Vec<(String, IpAddr, u16)>,
    pub cidr_queries: Vec<(IpAddr, u16)>,
    pub miss_queries: Vec<(String, IpAddr, u16)>,
}

/// An IPv4 address outside 198.18.0.0/15 and outside 0/8, 127/8, 224/3.
fn v4(rng: &mut Rng) -> Ipv4Addr {
    loop {
        let a = Ipv4Addr::from(rng.next() as u32);
        let o = a.octets();
        if o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 198 && (o[1] & 0xfe) == 18) {
            continue;
        }
        return a;
    }
}

/// A global-unicast IPv6 address (2000::/3) outside 2001:db8::/32.
fn v6(rng: &mut Rng) -> Ipv6Addr {
    loop {
        let hi = (rng.next() & 0x1fff_ffff_ffff_ffff) | 0x2000_0000_0000_0000;
        let a = Ipv6Addr::from((u128::from(hi) << 64) | u128::from(rng.next()));
        if a.segments()[0] == 0x2001 && a.segments()[1] == 0x0db8 {
            continue;
        }
        return a;
    }
}

fn cidr(rng: &mut Rng) -> (String, IpAddr) {
    if rng.chance(75) {
        let len = *rng.pick(&[16u8, 20, 24, 24, 28, 32, 32, 32]);
        let addr = u32::from(v4(rng));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let net = Ipv4Addr::from(addr & mask);
        let inside = Ipv4Addr::from((addr & mask) | (rng.next() as u32 & !mask));
        (format!("{net}/{len}"), IpAddr::V4(inside))
    } else {
        let len = *rng.pick(&[32u8, 48, 56, 64, 128]);
        let addr = u128::from(v6(rng));
        let mask = u128::MAX << (128 - u32::from(len));
        let net = Ipv6Addr::from(addr & mask);
        let host = (u128::from(rng.next()) << 64 | u128::from(rng.next())) & !mask;
        let inside = Ipv6Addr::from((addr & mask) | host);
        (format!("{net}/{len}"), IpAddr::V6(inside))
    }
}

/// An IP no generated CIDR holds (198.18.0.0/15 or 2001:db8::/32).
pub fn miss_ip(rng: &mut Rng) -> IpAddr {
    if rng.chance(75) {
        let a = 0xC612_0000u32 | (rng.next() as u32 & 0x0001_ffff);
        IpAddr::V4(Ipv4Addr::from(a))
    } else {
        let a = 0x2001_0db8u128 << 96 | u128::from(rng.next());
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

fn rule(rng: &mut Rng, id: usize, deny: bool) -> GenRule {
    let roll = rng.below(100);
    let (with_hosts, with_cidrs) = match roll {
        0..=69 => (true, false),
        70..=89 => (false, true),
        _ => (true, true),
    };
    let mut hosts = Vec::new();
    if with_hosts {
        let domain = format!("{}{}.{}", word(rng), id, rng.pick(TLDS));
        for k in 0..1 + rng.below(3) {
            let sub = *rng.pick(SUBS);
            if rng.chance(60) {
                let name = if k == 0 {
                    format!("{sub}.{domain}")
                } else {
                    format!("{sub}{k}.{domain}")
                };
                hosts.push(Host {
                    pattern: name.clone(),
                    example: name,
                });
            } else {
                let base = if k == 0 {
                    domain.clone()
                } else {
                    format!("{sub}{k}.{domain}")
                };
                hosts.push(Host {
                    pattern: format!("*.{base}"),
                    example: format!("{}.{base}", word(rng)),
                });
            }
        }
    }
    let mut cidrs = Vec::new();
    if with_cidrs {
        for _ in 0..1 + rng.below(2) {
            cidrs.push(cidr(rng));
        }
    }
    let (ports, port) = match rng.below(10) {
        0..=5 => (vec!["443".to_string()], 443),
        6..=7 => (vec!["80".to_string(), "443".to_string()], 443),
        8 => (
            vec!["\"8000-8999\"".to_string()],
            8000 + rng.below(1000) as u16,
        ),
        _ => (vec![], 443),
    };
    GenRule {
        deny,
        hosts,
        cidrs,
        ports,
        port,
    }
}

fn write_rule(out: &mut String, name: &str, rule: &GenRule) {
    let _ = write!(out, "{{\"name\":\"{name}\"");
    if !rule.hosts.is_empty() {
        let hosts: Vec<String> = rule
            .hosts
            .iter()
            .map(|h| format!("\"{}\"", h.pattern))
            .collect();
        let _ = write!(out, ",\"hosts\":[{}]", hosts.join(","));
    }
    if !rule.cidrs.is_empty() {
        let cidrs: Vec<String> = rule.cidrs.iter().map(|(c, _)| format!("\"{c}\"")).collect();
        let _ = write!(out, ",\"cidrs\":[{}]", cidrs.join(","));
    }
    if !rule.ports.is_empty() {
        let _ = write!(out, ",\"ports\":[{}]", rule.ports.join(","));
    }
    out.push('}');
}

/// A policy of `n` rules (`n >= 1`) and queries against it.
pub fn generate(n: usize, seed: u64) -> Generated {
    let mut rng = Rng::new(seed);
    let deny_count = (n / 100).max(1);
    let mut rules = Vec::with_capacity(n);
    // The cloud metadata endpoint, as every realistic policy has it.
    rules.push(GenRule {
        deny: true,
        hosts: vec![],
        cidrs: vec![
            (
                "169.254.169.254/32".into(),
                IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
            ),
            ("fd00:ec2::254/128".into(), "fd00:ec2::254".parse().unwrap()),
        ],
        ports: vec![],
        port: 80,
    });
    for id in 1..n {
        rules.push(rule(&mut rng, id, id < deny_count));
    }
    let mut json = String::with_capacity(n * 120);
    json.push_str("{\"mode\":\"allowlist\",\"log\":\"none\",\"deny\":[");
    let mut first = true;
    for (id, r) in rules.iter().enumerate().filter(|(_, r)| r.deny) {
        if !first {
            json.push(',');
        }
        first = false;
        write_rule(&mut json, &format!("d{id}"), r);
    }
    json.push_str("],\"allow\":[");
    first = true;
    for (id, r) in rules.iter().enumerate().filter(|(_, r)| !r.deny) {
        if !first {
            json.push(',');
        }
        first = false;
        write_rule(&mut json, &format!("a{id}"), r);
    }
    json.push_str("]}");

    let with_hosts: Vec<&GenRule> = rules.iter().filter(|r| !r.hosts.is_empty()).collect();
    let with_cidrs: Vec<&GenRule> = rules.iter().filter(|r| !r.cidrs.is_empty()).collect();
    let mut host_queries = Vec::new();
    let mut cidr_queries = Vec::new();
    let mut miss_queries = Vec::new();
    for _ in 0..1024 {
        if !with_hosts.is_empty() {
            let r = *rng.pick(&with_hosts);
            let h = rng.pick(&r.hosts);
            host_queries.push((h.example.clone(), miss_ip(&mut rng), r.port));
        }
        if !with_cidrs.is_empty() {
            let r = *rng.pick(&with_cidrs);
            let (_, ip) = rng.pick(&r.cidrs);
            cidr_queries.push((*ip, r.port));
        }
        let name = format!(
            "{}.{}.{}.invalid",
            rng.pick(SUBS),
            word(&mut rng),
            word(&mut rng)
        );
        miss_queries.push((name, miss_ip(&mut rng), 443));
    }
    Generated {
        json,
        rules,
        host_queries,
        cidr_queries,
        miss_queries,
    }
}
