//! The core's per-connection path, one operation at a time, shared by `benches/instructions.rs`
//! (instructions per operation under callgrind) and `benches/memory.rs` (the deepest stack).
//!
//! Each policy is the generator's (`super::generate`, the seed `benches/decide.rs` uses); the
//! queries are the first of its host hits. The network filter's path is `Session::open` on the
//! connection's destination, then `Session::client` with the client's first bytes.
#![allow(dead_code)]

use std::hint::black_box;
use std::net::SocketAddr;

use egress_guard::policy::{Facts, NameFact, Policy};
use egress_guard::session::{Judged, Record, Session, SniffOutcome};
use egress_guard::sniff::{sniff, Sniffed};

/// The seed `benches/decide.rs` uses.
pub const SEED: u64 = 0x5EED_E6E5;

/// `sniff.max_bytes` by default.
pub const MAX_BYTES: usize = 16384;

/// A policy of `rules` generated rules, and one name, IP and port it allows by a host rule.
pub struct Case {
    pub policy: Policy,
    pub name: String,
    pub dst: SocketAddr,
    /// A ClientHello (one TLS record) with SNI `name`, about the size browsers send.
    pub hello: Vec<u8>,
    /// An HTTP/1.1 request head with `Host: name`, as curl sends it.
    pub head: Vec<u8>,
}

impl Case {
    pub fn new(rules: usize) -> Case {
        let g = super::generate(rules, SEED);
        let policy = Policy::from_json(g.json.as_bytes()).expect("generated policy compiles");
        let (name, ip, port) = g.host_queries[0].clone();
        let hello = client_hello(&name, 512);
        let head = format!(
            "GET / HTTP/1.1\r\nHost: {name}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
        )
        .into_bytes();
        Case {
            policy,
            name,
            dst: SocketAddr::new(ip, port),
            hello,
            head,
        }
    }

    /// `Policy::decide` on the case's name, IP and port.
    #[inline(always)]
    pub fn decide(&self) -> bool {
        let facts = Facts {
            ip: self.dst.ip(),
            port: self.dst.port(),
            name: NameFact::Name(black_box(&self.name)),
        };
        black_box(self.policy.decide(black_box(&facts)))
            .verdict
            .passes()
    }

    /// `sniff` on the ClientHello.
    #[inline(always)]
    pub fn sniff_hello(&self) -> bool {
        matches!(
            black_box(sniff(black_box(&self.hello), MAX_BYTES)),
            Sniffed::Tls(hello) if hello.sni.is_some()
        )
    }

    /// `sniff` on the HTTP request head.
    #[inline(always)]
    pub fn sniff_head(&self) -> bool {
        matches!(
            black_box(sniff(black_box(&self.head), MAX_BYTES)),
            Sniffed::Http(head) if head.host.is_some()
        )
    }

    /// The network filter's connection: `Session::open` (no `tls_inspector`), then the
    /// ClientHello to `Session::client`, which decides.
    #[inline(always)]
    pub fn session(&self) -> bool {
        let mut rec = Counts::default();
        let (mut session, _) = Session::open(&self.policy, black_box(self.dst), None, 0, &mut rec);
        black_box(session.client(&self.policy, black_box(&self.hello), false, 1, &mut rec));
        rec.judged == 1
    }

    /// The same with `tls_inspector`: `Session::open` with the inspector's SNI decides.
    #[inline(always)]
    pub fn session_inspector(&self) -> bool {
        let mut rec = Counts::default();
        let (session, _) = Session::open(
            &self.policy,
            black_box(self.dst),
            Some(black_box(self.name.as_bytes())),
            0,
            &mut rec,
        );
        black_box(session);
        rec.judged == 1
    }
}

/// A `Record` that only counts: what the core costs without the adapter's metrics and logs.
#[derive(Default)]
pub struct Counts {
    pub sniffed: u32,
    pub judged: u32,
}

impl Record for Counts {
    fn sniffed(&mut self, outcome: SniffOutcome) {
        black_box(outcome);
        self.sniffed += 1;
    }
    fn judged(&mut self, judged: &Judged<'_>) {
        black_box(judged);
        self.judged += 1;
    }
    fn pin(&mut self, target: &egress_guard::policy::pin::Target<'_>) -> bool {
        black_box(target);
        true
    }
}

/// A TLS 1.2-shaped ClientHello record of about `len` bytes with SNI `sni`, padded by a padding
/// extension.
pub fn client_hello(sni: &str, len: usize) -> Vec<u8> {
    let vec16 = |data: &[u8]| {
        let mut out = (data.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    };
    let ext = |kind: u16, data: &[u8]| {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(vec16(data));
        out
    };
    let mut name = vec![0];
    name.extend(vec16(sni.as_bytes()));
    let mut body = vec![3, 3];
    body.extend([0x5a; 32]);
    body.push(32); // session id
    body.extend([0x33; 32]);
    body.extend(vec16(&[
        0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f,
    ]));
    body.extend([1, 0]); // compression: null
    let mut block = ext(0, &vec16(&name));
    block.extend(ext(10, &vec16(&[0, 0x1d, 0, 0x17]))); // supported groups
    block.extend(ext(16, &[0, 3, 2, b'h', b'2'])); // ALPN h2
    let pad = len.saturating_sub(9 + body.len() + 2 + block.len() + 4);
    block.extend(ext(21, &vec![0; pad]));
    body.extend(vec16(&block));
    let mut message = vec![1];
    message.extend(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    let mut record = vec![22, 3, 1];
    record.extend((message.len() as u16).to_be_bytes());
    record.extend(message);
    record
}
