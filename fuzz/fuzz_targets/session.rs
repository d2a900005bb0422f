//! `session::Session` — the whole connection logic of the network filter — on arbitrary client
//! and server bytes and timer ticks, under policies of every mode, driven as the adapter drives
//! it (held bytes stay in the buffer, a split lets the front go). Checks: no panic; what reaches
//! the server is a prefix of what the client sent; once a decision denies, the session closes
//! and nothing more is forwarded; nothing is forwarded before a decision allowed something.
//! Pinning (two policies pin): a decision that passes as pinned was pinned to that very name by
//! a call the proxy accepted; a decision that had to be pinned and could not be denies; no name
//! is ever pinned twice on one connection. ECH (policies with `"ech": "deny"`): a ClientHello
//! that carried `encrypted_client_hello` never passes, and nothing passes at open, even with an
//! SNI from `tls_inspector`.
//!
//! Input: `[policy, split_hi, split_lo, schedule, bytes...]`: `bytes` splits at `split` into the
//! client's stream and the server's; `schedule` picks the chunk sizes and where ticks fall;
//! `policy / POLICIES.len()` picks the inspector's SNI at open (none, or one of two names).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use egress_guard::policy::pin::Target;
use egress_guard::policy::{Config, EchPolicy, Policy, Reason, Verdict};
use egress_guard::session::{Action, Judged, Record, Session, SniffOutcome};
use libfuzzer_sys::fuzz_target;

const POLICIES: [&str; 10] = [
    r#"{"allow": [{"name": "ok", "hosts": ["ok.example", "*.ok.example"]}],
        "deny": [{"name": "evil", "hosts": ["evil.example"]}], "sniff": {"max_bytes": 512}}"#,
    r#"{"mode": "audit", "allow": [{"name": "ok", "hosts": ["ok.example"]}],
        "deny": [{"name": "evil", "hosts": ["evil.example"]}], "sniff": {"max_bytes": 512}}"#,
    r#"{"mode": "passthrough", "deny": [{"name": "evil", "hosts": ["evil.example"]}],
        "sniff": {"max_bytes": 512}}"#,
    r#"{"allow": [{"name": "ok", "hosts": ["ok.example"]}],
        "sniff": {"max_bytes": 512, "hold_upstream": true}}"#,
    r#"{"allow": [{"name": "any", "hosts": ["*"]}], "sniff": {"max_bytes": 1024}}"#,
    r#"{"allow": [{"name": "ip", "cidrs": ["192.0.2.1"]}, {"name": "ok", "hosts": ["ok.example"]}],
        "sniff": {"max_bytes": 512}}"#,
    r#"{"pin": true, "allow": [{"name": "ok", "hosts": ["ok.example", "*.ok.example"]},
        {"name": "loose", "hosts": ["loose.example"], "pin": false}],
        "sniff": {"max_bytes": 512, "hold_upstream": true}}"#,
    r#"{"mode": "passthrough", "pin": true, "allow": [{"name": "ok", "hosts": ["ok.example"]}],
        "deny": [{"name": "evil", "hosts": ["evil.example"]}], "sniff": {"max_bytes": 512}}"#,
    // The destination is allowed by IP and port: an allow at open, unless ech: deny.
    r#"{"ech": "deny", "allow": [{"name": "ip", "cidrs": ["192.0.2.1"], "ports": [80]},
        {"name": "ok", "hosts": ["ok.example"]}], "sniff": {"max_bytes": 512}}"#,
    r#"{"mode": "passthrough", "ech": "deny", "pin": true,
        "allow": [{"name": "ok", "hosts": ["ok.example"]}],
        "sniff": {"max_bytes": 512, "hold_upstream": true}}"#,
];

/// The SNI `tls_inspector` read, by `policy / POLICIES.len() % 3`.
const INSPECTOR: [Option<&[u8]>; 3] = [None, Some(b"ok.example"), Some(b"evil.example")];

#[derive(Default)]
struct Seen {
    /// The policy says `"ech": "deny"`.
    ech_deny: bool,
    denied: bool,
    allowed: bool,
    /// The names the proxy was asked to pin this connection to.
    pins: Vec<String>,
}

impl Record for Seen {
    fn sniffed(&mut self, _: SniffOutcome) {}
    fn judged(&mut self, judged: &Judged<'_>) {
        let decision = judged.decision;
        match decision.verdict {
            Verdict::Deny => self.denied = true,
            Verdict::Allow | Verdict::AuditDeny => self.allowed = true,
        }
        if decision.pin {
            assert!(decision.verdict.passes(), "a denial marked pinned");
            let name = judged.name().expect("a pinned decision without a name");
            assert_eq!(
                self.pins.first().map(String::as_str),
                Some(name),
                "passed as pinned to a name the proxy was not told"
            );
        }
        if decision.reason == Reason::PinUnavailable {
            assert_eq!(decision.verdict, Verdict::Deny);
        }
        assert_eq!(judged.ech.is_some(), judged.observed.ech);
        if self.ech_deny && judged.observed.ech {
            assert_eq!(
                decision.verdict,
                Verdict::Deny,
                "ECH passed under ech: deny"
            );
        }
        if decision.reason == Reason::Ech {
            assert!(self.ech_deny && judged.observed.ech && decision.verdict == Verdict::Deny);
        }
    }
    fn pin(&mut self, target: &Target<'_>) -> bool {
        assert!(self.pins.is_empty(), "pinned twice");
        self.pins.push(target.host.to_string());
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, hi, lo, schedule, bytes @ ..] = data else {
        return;
    };
    static COMPILED: OnceLock<Vec<Policy>> = OnceLock::new();
    let policies = COMPILED.get_or_init(|| {
        POLICIES
            .iter()
            .map(|json| Policy::compile(&Config::from_json(json.as_bytes()).unwrap()).unwrap())
            .collect()
    });
    let policy = &policies[usize::from(*which) % policies.len()];
    let inspector = INSPECTOR[usize::from(*which) / policies.len() % INSPECTOR.len()];
    let split = (usize::from(*hi) << 8 | usize::from(*lo)).min(bytes.len());
    let (client, server) = bytes.split_at(split);
    let dst: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let mut seen = Seen {
        ech_deny: policy.ech() == EchPolicy::Deny,
        ..Seen::default()
    };
    let (mut session, at_open) = Session::open(policy, dst, inspector, 0, &mut seen);
    if seen.ech_deny {
        // Nothing passes at open: the ClientHello must be read first.
        assert!(!seen.allowed, "allowed at open under ech: deny");
    }
    let mut closed = at_open == Action::Close;
    let mut held: Vec<u8> = Vec::new();
    let mut forwarded: Vec<u8> = Vec::new();
    let (c, s) = (
        usize::from(schedule % 7) + 1,
        usize::from(schedule / 7 % 11) + 1,
    );
    let tick_every = usize::from(schedule / 77) % 4; // 0: no ticks
    let (mut rest_c, mut rest_s, mut now, mut step) = (client, server, 0u64, 0usize);

    // What the adapter does with the session's answer to client bytes.
    let apply =
        |action: Action, held: &mut Vec<u8>, fwd: &mut Vec<u8>, closed: &mut bool| match action {
            Action::Continue | Action::Resume => fwd.append(held),
            Action::Split(n) => {
                let n = n.min(held.len());
                fwd.extend(held.drain(..n));
            }
            Action::Close => *closed = true,
            Action::Pause | Action::Recheck | Action::Nothing => {}
        };
    while !closed && (!rest_c.is_empty() || !rest_s.is_empty()) {
        step += 1;
        let before = forwarded.len();
        if tick_every != 0 && step % (tick_every + 1) == 0 {
            now += 2_000_000_000;
            let action = session.timeout(policy, now, &mut seen);
            apply(action, &mut held, &mut forwarded, &mut closed);
        } else if !rest_c.is_empty() && (step % 2 == 1 || rest_s.is_empty()) {
            let (a, b) = rest_c.split_at(c.min(rest_c.len()));
            rest_c = b;
            held.extend_from_slice(a);
            if session.passes_client_bytes() {
                forwarded.append(&mut held);
            } else {
                let action = session.client(policy, &held, false, now, &mut seen);
                apply(action, &mut held, &mut forwarded, &mut closed);
            }
        } else if !rest_s.is_empty() {
            let (a, b) = rest_s.split_at(s.min(rest_s.len()));
            rest_s = b;
            let read = |start: usize, len: usize| a.get(start..start + len).map(<[u8]>::to_vec);
            let action = session.server(policy, a.len(), read, &mut seen);
            if action == Action::Recheck {
                let action = session.client(policy, &held, false, now, &mut seen);
                apply(action, &mut held, &mut forwarded, &mut closed);
            } else {
                apply(action, &mut held, &mut forwarded, &mut closed);
            }
        }
        if closed {
            assert_eq!(
                forwarded.len(),
                before,
                "bytes forwarded by the step that closed"
            );
        }
        if seen.denied {
            assert!(closed && session.is_closed(), "a deny that did not close");
        }
        if !forwarded.is_empty() {
            assert!(seen.allowed, "bytes forwarded before anything was allowed");
        }
    }
    assert!(
        client.starts_with(&forwarded),
        "forwarded bytes are not the client's"
    );
});
