//! The connection session without a proxy: every path the network filter takes, with the
//! decisions and counts it records.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::net::SocketAddr;

use super::*;
use crate::policy::Config;
use crate::sniff::tls::build::Hello;
use crate::sniff::Malformed;

/// Everything a session recorded, as labels.
#[derive(Debug, Default)]
struct Log {
    outcomes: Vec<SniffOutcome>,
    /// `decision/reason[/detail]`, with `@name` when a name was logged and `^pinned` when the
    /// connection went to its name.
    decisions: Vec<String>,
    /// `host:port>cluster` for every pin asked of the proxy.
    pins: Vec<String>,
    /// The proxy refuses to pin (Envoy without the filter-state factories).
    refuse_pins: bool,
    /// What the `ech` setting did, for every decision on a ClientHello that carried ECH.
    ech: Vec<EchOutcome>,
}

impl Record for Log {
    fn sniffed(&mut self, outcome: SniffOutcome) {
        self.outcomes.push(outcome);
    }

    fn judged(&mut self, judged: &Judged<'_>) {
        let mut line = format!(
            "{}/{}",
            judged.decision.verdict.as_str(),
            judged.decision.reason.as_str()
        );
        if let Some(detail) = judged.detail {
            line += &format!("/{detail}");
        }
        if let Some(name) = judged.name() {
            line += &format!("@{name}");
        }
        if judged.decision.pin {
            line += "^pinned";
        }
        if judged.observed.ech {
            line += "~ech";
        }
        assert_eq!(judged.ech.is_some(), judged.observed.ech);
        self.ech.extend(judged.ech);
        self.decisions.push(line);
    }

    fn pin(&mut self, target: &Target<'_>) -> bool {
        self.pins.push(format!(
            "{}:{}>{}",
            target.host, target.port, target.cluster
        ));
        !self.refuse_pins
    }
}

fn policy(json: &str) -> Policy {
    Policy::compile(&Config::from_json(json.as_bytes()).unwrap()).unwrap()
}

/// Allows `ok.example` by name, `db` (10.0.0.5:5432) by CIDR, denies `evil.example`; 1 s timeout.
fn rules(mode: &str, hold: bool) -> Policy {
    policy(&format!(
        r#"{{"mode": "{mode}",
            "allow": [{{"name": "ok", "hosts": ["ok.example"]}},
                      {{"name": "db", "cidrs": ["10.0.0.5"], "ports": [5432]}}],
            "deny": [{{"name": "evil", "hosts": ["evil.example"]}}],
            "sniff": {{"timeout_ms": 1000, "hold_upstream": {hold}}}}}"#
    ))
}

const WEB: &str = "192.0.2.1:443";
const DB: &str = "10.0.0.5:5432";
const SECOND: u64 = 1_000_000_000;

fn dst(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hello(sni: &str) -> Vec<u8> {
    Hello::with_sni(sni.as_bytes()).record()
}

/// A ClientHello with this SNI and an `encrypted_client_hello` extension (as GREASE ECH).
fn hello_ech(sni: &str) -> Vec<u8> {
    let mut hello = Hello::with_sni(sni.as_bytes());
    if let Some(ext) = hello.extensions.as_mut() {
        ext.push((0xfe0d, vec![0, 0, 1, 0, 1, 0x2a, 0, 1, 7, 0, 2, 9, 9]));
    }
    hello.record()
}

/// Opens a session and feeds `input` a byte at a time until it decides; returns the session,
/// the last action and the log.
fn feed(policy: &Policy, to: &str, input: &[u8]) -> (Session, Action, Log) {
    let mut log = Log::default();
    let (mut session, mut action) = Session::open(policy, dst(to), None, 0, &mut log);
    for end in 1..=input.len() {
        action = session.client(policy, &input[..end], false, 0, &mut log);
        if action != Action::Pause {
            break;
        }
    }
    (session, action, log)
}

#[test]
fn at_open_an_inspector_sni_or_an_ip_decides() {
    let p = rules("allowlist", false);
    let mut log = Log::default();
    let (s, action) = Session::open(&p, dst(WEB), Some(b"ok.example"), 0, &mut log);
    assert_eq!(action, Action::Continue);
    assert!(s.passes_client_bytes() && s.deadline().is_none());
    let (s, action) = Session::open(&p, dst(WEB), Some(b"evil.example"), 0, &mut log);
    assert_eq!(action, Action::Close);
    assert!(s.is_closed());
    // A malformed SNI from the inspector is denied, never matched.
    let (_, action) = Session::open(&p, dst(WEB), Some(b"ok..example"), 0, &mut log);
    assert_eq!(action, Action::Close);
    assert_eq!(
        log.decisions,
        [
            "allow/rule@ok.example",
            "deny/deny_rule@evil.example",
            "deny/malformed/bad_label"
        ]
    );
    assert_eq!(log.outcomes, [SniffOutcome::InspectorSni; 3]);

    // No host rule can apply on this IP and port: decided at open, nothing held.
    let p = policy(r#"{"allow": [{"name": "db", "cidrs": ["10.0.0.5/32"]}]}"#);
    let mut log = Log::default();
    let (s, action) = Session::open(&p, dst(DB), None, 0, &mut log);
    assert_eq!((action, s.passes_client_bytes()), (Action::Continue, true));
    assert_eq!(log.decisions, ["allow/rule"]);
}

/// The clock is a hostcall in the filter: read only when the session sets a deadline.
#[test]
fn the_clock_is_read_only_for_a_deadline() {
    let p = rules("allowlist", false);
    let mut log = Log::default();
    let reads = std::cell::Cell::new(0);
    let clock = || {
        reads.set(reads.get() + 1);
        7 * SECOND
    };
    let (s, _) = Session::open_with_clock(&p, dst(WEB), Some(b"ok.example"), clock, &mut log);
    assert_eq!((reads.get(), s.deadline()), (0, None));
    let ip_only = policy(r#"{"allow": [{"name": "db", "cidrs": ["10.0.0.5/32"]}]}"#);
    let (s, _) = Session::open_with_clock(&ip_only, dst(DB), None, clock, &mut log);
    assert_eq!((reads.get(), s.deadline()), (0, None));
    // Nothing decides at open: the first bytes have until the timeout.
    let (s, action) = Session::open_with_clock(&p, dst(WEB), None, clock, &mut log);
    assert_eq!(action, Action::Continue);
    assert_eq!((reads.get(), s.deadline()), (1, Some(8 * SECOND)));
}

#[test]
fn the_first_bytes_decide_in_every_mode() {
    let cases: &[(&str, &[u8], &str, [&str; 3])] = &[
        // (what, input, destination, [allowlist, audit, passthrough])
        (
            "allowed SNI",
            &hello("ok.example"),
            WEB,
            [
                "allow/rule@ok.example",
                "allow/rule@ok.example",
                "allow/passthrough@ok.example",
            ],
        ),
        (
            "denied SNI",
            &hello("evil.example"),
            WEB,
            ["deny/deny_rule@evil.example"; 3],
        ),
        (
            "unlisted SNI",
            &hello("other.example"),
            WEB,
            [
                "deny/no_match@other.example",
                "audit_deny/no_match@other.example",
                "allow/passthrough@other.example",
            ],
        ),
        (
            "Host of a request head",
            b"GET / HTTP/1.1\r\nHost: ok.example\r\n\r\n",
            WEB,
            [
                "allow/rule@ok.example",
                "allow/rule@ok.example",
                "allow/passthrough@ok.example",
            ],
        ),
        (
            "garbled Host",
            b"GET / HTTP/1.1\r\nHost: evil.example\r\nHost: x\r\n\r\n",
            WEB,
            ["deny/malformed/http_duplicate_host"; 3],
        ),
        (
            "neither TLS nor HTTP, to the CIDR rule's destination",
            b"\x00\x01binary",
            DB,
            ["allow/rule", "allow/rule", "allow/passthrough"],
        ),
    ];
    for (what, input, to, want) in cases {
        for (mode, want) in ["allowlist", "audit", "passthrough"].iter().zip(want) {
            let p = rules(mode, false);
            let (_, action, log) = feed(&p, to, input);
            assert_eq!(log.decisions, [*want], "{what} in {mode}");
            let denied = want.starts_with("deny/");
            assert_eq!(
                action == Action::Close,
                denied,
                "{what} in {mode}: {action:?}"
            );
        }
    }
}

#[test]
fn a_silent_client_is_decided_on_ip_and_port_and_checked_after() {
    let p = rules("allowlist", true);
    let mut log = Log::default();
    let (mut s, action) = Session::open(&p, dst(DB), None, 0, &mut log);
    assert_eq!(action, Action::Pause, "hold_upstream holds the connection");
    assert_eq!(s.deadline(), Some(SECOND));
    assert_eq!(s.timeout(&p, SECOND - 1, &mut log), Action::Nothing);
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Resume);
    assert_eq!(log.decisions, ["allow/rule"]);
    // Its first bytes are still looked at: a name sent late cannot pass the deny rule.
    let late = hello("evil.example");
    assert_eq!(
        s.client(&p, &late[..10], false, 2 * SECOND, &mut log),
        Action::Pause
    );
    assert_eq!(
        s.deadline(),
        Some(3 * SECOND),
        "one more timeout to finish it"
    );
    assert_eq!(
        s.client(&p, &late, false, 2 * SECOND, &mut log),
        Action::Close
    );
    assert_eq!(log.decisions.last().unwrap(), "deny/deny_rule@evil.example");

    // ... and one that never finishes is denied as incomplete.
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(DB), None, 0, &mut log);
    s.timeout(&p, SECOND, &mut log);
    s.client(&p, &late[..10], false, 2 * SECOND, &mut log);
    assert_eq!(s.timeout(&p, 3 * SECOND, &mut log), Action::Close);
    assert_eq!(
        log.decisions,
        ["allow/rule", "deny/malformed/incomplete_at_timeout"]
    );

    // Bytes without a name after the timeout change nothing.
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(DB), None, 0, &mut log);
    s.timeout(&p, SECOND, &mut log);
    assert_eq!(
        s.client(&p, b"\x00binary", false, 2 * SECOND, &mut log),
        Action::Continue
    );
    assert!(s.passes_client_bytes());
    assert_eq!(log.decisions, ["allow/rule"]);

    // A silent client where nothing allows its IP: denied, not resumed.
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut log);
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Close);
    assert_eq!(log.decisions, ["deny/no_match"]);
}

#[test]
fn a_client_that_stops_part_way_is_denied() {
    let p = rules("passthrough", false);
    let input = hello("ok.example");
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut log);
    assert_eq!(
        s.client(&p, &input[..20], false, 0, &mut log),
        Action::Pause
    );
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Close);
    assert_eq!(log.decisions, ["deny/malformed/incomplete_at_timeout"]);
    // Half-closed part-way: truncated. Closed without a byte: nothing was cut short.
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut log);
    assert_eq!(s.client(&p, &input[..20], true, 0, &mut log), Action::Close);
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut log);
    assert_eq!(s.client(&p, b"", true, 0, &mut log), Action::Continue);
    assert_eq!(
        log.decisions,
        ["deny/malformed/truncated", "allow/passthrough"]
    );
}

#[test]
fn a_followed_connection_checks_later_requests_and_holds_with_a_deadline() {
    let p = rules("allowlist", false);
    let first = b"GET /1 HTTP/1.1\r\nHost: ok.example\r\n\r\n".to_vec();
    let (mut s, action, mut log) = feed(&p, WEB, &first);
    assert_eq!(action, Action::Continue);
    assert!(s.following() && !s.passes_client_bytes());
    // A later head in pieces: held, with a deadline from the first held byte.
    let part = b"GET /2 HTTP/1.1\r\nHost: ok.exa";
    assert_eq!(s.client(&p, part, false, 5, &mut log), Action::Pause);
    assert_eq!(s.deadline(), Some(5 + SECOND));
    assert_eq!(
        s.client(&p, &part[..part.len() - 1], false, 7, &mut log),
        Action::Pause
    );
    assert_eq!(
        s.deadline(),
        Some(5 + SECOND),
        "more bytes do not move the deadline"
    );
    let whole = b"GET /2 HTTP/1.1\r\nHost: ok.example\r\n\r\n";
    assert_eq!(s.client(&p, whole, false, 9, &mut log), Action::Continue);
    assert_eq!(s.deadline(), None);
    let evil = b"GET /3 HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    assert_eq!(s.client(&p, evil, false, 9, &mut log), Action::Close);
    assert_eq!(
        log.decisions,
        [
            "allow/rule@ok.example",
            "allow/rule@ok.example",
            "deny/later_request/deny_rule@evil.example"
        ]
    );
    assert_eq!(
        log.outcomes,
        [
            SniffOutcome::HttpHost,
            SniffOutcome::HttpLaterRequest,
            SniffOutcome::HttpLaterRequest
        ]
    );

    // An unfinished later head is closed at the deadline.
    let (mut s, _, mut log) = feed(&p, WEB, &first);
    s.client(&p, part, false, 0, &mut log);
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Close);
    assert_eq!(
        log.decisions.last().unwrap(),
        "deny/malformed/incomplete_at_timeout"
    );
}

#[test]
fn an_upgrade_goes_and_its_own_answer_decides() {
    let p = rules("allowlist", false);
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: ok.example\r\nUpgrade: websocket\r\n\r\n";
    let frame = b"\x81\x85frame";
    let input = [&upgrade[..], frame].concat();
    // Fed a byte at a time, the upgrade goes alone as soon as it is complete.
    let (_, action, _) = feed(&p, WEB, &input);
    assert_eq!(action, Action::Continue);
    // In one read with the frame behind it: the upgrade goes, the frame waits.
    let start = |log: &mut Log| {
        let (mut s, _) = Session::open(&p, dst(WEB), None, 0, log);
        let action = s.client(&p, &input, false, 0, log);
        (s, action)
    };
    let mut log = Log::default();
    let (mut s, action) = start(&mut log);
    assert_eq!(action, Action::Split(upgrade.len()));
    assert_eq!(s.deadline(), Some(SECOND));
    let answer = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
    let read = |start: usize, len: usize| answer.get(start..start + len).map(<[u8]>::to_vec);
    assert_eq!(s.server(&p, answer.len(), read, &mut log), Action::Resume);
    assert!(s.passes_client_bytes() && s.deadline().is_none());

    // Refused: the held bytes are checked; unanswered: closed at the deadline.
    let (mut s, _) = start(&mut log);
    let refused = b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n";
    let read = |start: usize, len: usize| refused.get(start..start + len).map(<[u8]>::to_vec);
    assert_eq!(s.server(&p, refused.len(), read, &mut log), Action::Recheck);
    assert_eq!(s.client(&p, frame, false, 0, &mut log), Action::Close);
    assert_eq!(
        log.decisions.last().unwrap(),
        "deny/malformed/http_not_a_request"
    );

    let (mut s, _) = start(&mut log);
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Close);
    assert_eq!(
        log.decisions.last().unwrap(),
        "deny/malformed/upgrade_unanswered"
    );

    // The proxy lost the held bytes: refused, recorded.
    let (mut s, _) = start(&mut log);
    assert_eq!(
        s.refuse(&p, Refusal::HeldBytesLost, &mut log),
        Action::Close
    );
    assert_eq!(
        log.decisions.last().unwrap(),
        "deny/malformed/held_bytes_lost"
    );
    assert!(s.is_closed());
}

#[test]
fn every_label_is_distinct() {
    fn distinct(labels: &[&str]) {
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), labels.len(), "{labels:?}");
    }
    distinct(
        &SniffOutcome::ALL
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>(),
    );
    distinct(
        &NameSource::ALL
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>(),
    );
    distinct(&Proto::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>());
    distinct(
        &EchOutcome::ALL
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>(),
    );
    distinct(&malformed_kinds().collect::<Vec<_>>());
    for (i, o) in SniffOutcome::ALL.iter().enumerate() {
        assert_eq!(o.index(), i);
    }
}

#[test]
fn every_malformed_kind_a_decision_can_carry_is_defined_up_front() {
    use crate::sniff::response::Unframed;
    let kinds: Vec<&str> = malformed_kinds().collect();
    let refusals = [
        Refusal::Malformed(Malformed::HttpNotARequest),
        Refusal::Truncated,
        Refusal::TooManyOwed,
        Refusal::Unframed(Unframed::Unasked),
        Refusal::HeldBytesLost,
    ];
    for refusal in refusals {
        assert!(kinds.contains(&refusal.as_str()), "{refusal:?}");
    }
    // And every one the session produced in these tests' scenarios.
    let p = rules("allowlist", false);
    let mut seen = Vec::new();
    struct Kinds<'a>(&'a mut Vec<&'static str>);
    impl Record for Kinds<'_> {
        fn sniffed(&mut self, _: SniffOutcome) {}
        fn judged(&mut self, judged: &Judged<'_>) {
            self.0.extend(judged.malformed);
        }
        fn pin(&mut self, _: &Target<'_>) -> bool {
            true
        }
    }
    let mut rec = Kinds(&mut seen);
    for input in [
        &b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"\x16\x03\x01\x00\x01\x02",
    ] {
        let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut rec);
        s.client(&p, input, true, 0, &mut rec);
    }
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut rec);
    s.client(&p, b"GET", false, 0, &mut rec);
    s.timeout(&p, SECOND, &mut rec);
    assert!(seen.len() >= 4, "{seen:?}");
    for kind in seen {
        assert!(kinds.contains(&kind), "{kind}");
    }
}

#[test]
fn an_ip_literal_as_the_name_meets_the_deny_rules() {
    let p = policy(
        r#"{"allow": [{"name": "proxy", "cidrs": ["10.0.0.9"], "hosts": ["ok.example"]}],
            "deny": [{"name": "metadata", "cidrs": ["169.254.169.254", "fd00:ec2::254"]}]}"#,
    );
    let proxy = "10.0.0.9:80";
    for (input, want) in [
        (
            &b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n"[..],
            "deny/deny_rule",
        ),
        (
            b"GET http://169.254.169.254/latest/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            "deny/deny_rule",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: [fd00:ec2::254]\r\n\r\n",
            "deny/deny_rule",
        ),
        // Any other literal: decided on the destination, as before.
        (
            b"CONNECT 192.0.2.7:443 HTTP/1.1\r\nHost: 192.0.2.7:443\r\n\r\n",
            "allow/rule",
        ),
    ] {
        // Allowed at open by the CIDR rule, without holding; the first bytes are still read.
        let (_, action, log) = feed(&p, proxy, input);
        let last = log.decisions.last().unwrap();
        assert_eq!(last, want, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(action == Action::Close, want.starts_with("deny"));
    }
    // Blank lines first, as proxies skip them: still read, and a garbled head is denied.
    let cr_connect = b"\r\nCONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n";
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(proxy), None, 0, &mut log);
    assert_eq!(
        s.client(&p, &cr_connect[..2], false, 0, &mut log),
        Action::Pause
    );
    assert_eq!(
        s.client(&p, &cr_connect[..], false, 0, &mut log),
        Action::Close
    );
    assert_eq!(
        log.decisions,
        ["allow/rule", "deny/malformed/http_leading_whitespace"]
    );
    let (_, action, mut log) = feed(&p, proxy, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(action, Action::Close);
    assert_eq!(
        log.decisions.last().unwrap(),
        "deny/malformed/http_duplicate_host"
    );

    // A ClientHello cut short by a half-close is malformed here as everywhere.
    let (mut s, _) = Session::open(&p, dst(proxy), None, 0, &mut log);
    assert_eq!(
        s.client(&p, b"\x16\x03\x01\x00\x10\x01", true, 0, &mut log),
        Action::Close
    );
    assert_eq!(log.decisions.last().unwrap(), "deny/malformed/truncated");

    // Anything else on such a connection leaves the decision taken at open: a bare word (and a
    // half-close after it), binary bytes, a name, an unfinished head at the timeout.
    for (input, eos) in [
        (&b"SELECT 1"[..], false),
        (b"SELECT 1", true),
        (b"PING", false),
        (b"\x00\x01binary", false),
        (b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n", false),
    ] {
        let mut log = Log::default();
        let (mut s, _) = Session::open(&p, dst(proxy), None, 0, &mut log);
        assert_eq!(s.client(&p, input, eos, 0, &mut log), Action::Continue);
        assert!(s.passes_client_bytes());
        assert_eq!(log.decisions, ["allow/rule"]);
    }
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(proxy), None, 0, &mut log);
    assert_eq!(
        s.client(&p, b"GET / HTTP/1.1\r\nHo", false, 0, &mut log),
        Action::Pause
    );
    let at = s.deadline().expect("a deadline for the unfinished head");
    assert_eq!(s.timeout(&p, at, &mut log), Action::Resume);
    assert!(s.passes_client_bytes());
    assert_eq!(log.decisions, ["allow/rule"]);

    // And the same through tls_inspector's SNI.
    let mut log = Log::default();
    let (_, action) = Session::open(
        &p,
        dst("10.0.0.9:443"),
        Some(b"169.254.169.254"),
        0,
        &mut log,
    );
    assert_eq!(
        (action, log.decisions.as_slice()),
        (Action::Close, &["deny/deny_rule".to_string()][..])
    );
}

/// Pins `api.example` (and `*.pinned.example`), allows `loose.example` unpinned and
/// 10.0.0.5:443 by CIDR; 1 s timeout.
fn pinning(mode: &str, hold: bool) -> Policy {
    policy(&format!(
        r#"{{"mode": "{mode}", "pin": true,
            "allow": [{{"name": "api", "hosts": ["api.example", "*.pinned.example"]}},
                      {{"name": "loose", "hosts": ["loose.example"], "pin": false}},
                      {{"name": "db", "cidrs": ["10.0.0.5"], "ports": [443]}}],
            "deny": [{{"name": "evil", "hosts": ["evil.example"]}}],
            "sniff": {{"timeout_ms": 1000, "hold_upstream": {hold}}}}}"#
    ))
}

#[test]
fn pinning_at_open_and_while_held() {
    // At open with the inspector's SNI: pinned to the name at the original port.
    let p = pinning("allowlist", false);
    let mut log = Log::default();
    let (s, action) = Session::open(
        &p,
        dst("203.0.113.9:8443"),
        Some(b"API.example"),
        0,
        &mut log,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(s.pinned(), Some("api.example"));
    assert_eq!(log.pins, ["api.example:8443>egress_guard_pinned"]);
    assert_eq!(log.decisions, ["allow/rule@api.example^pinned"]);

    // Read from the client's bytes while the connection is held since open: pinned too.
    let p = pinning("allowlist", true);
    for input in [
        hello("a.pinned.example"),
        b"GET / HTTP/1.1\r\nHost: a.pinned.example\r\n\r\n".to_vec(),
    ] {
        let (s, action, log) = feed(&p, WEB, &input);
        assert_eq!(action, Action::Continue);
        assert_eq!(s.pinned(), Some("a.pinned.example"));
        assert_eq!(log.pins, ["a.pinned.example:443>egress_guard_pinned"]);
        assert_eq!(log.decisions, ["allow/rule@a.pinned.example^pinned"]);
    }

    // Not pinned: a rule with `pin: false`, a denial, a destination a CIDR rule allows whatever
    // the name, an IP literal, a name the allowlist refuses.
    for (input, to, want) in [
        (hello("loose.example"), WEB, "allow/rule@loose.example"),
        (hello("evil.example"), WEB, "deny/deny_rule@evil.example"),
        (
            hello("api.example"),
            "10.0.0.5:443",
            "allow/rule@api.example",
        ),
        (hello("other.example"), WEB, "deny/no_match@other.example"),
    ] {
        let (s, _, log) = feed(&p, to, &input);
        assert_eq!(log.decisions, [want]);
        assert!(log.pins.is_empty() && s.pinned().is_none(), "{want}");
    }
    let (s, _, log) = feed(&p, WEB, b"GET / HTTP/1.1\r\nHost: 192.0.2.7\r\n\r\n");
    assert_eq!(
        (log.decisions.len(), log.pins.len(), s.pinned()),
        (1, 0, None)
    );
}

#[test]
fn a_pinned_connection_envoy_found_no_host_for_is_unresolved() {
    use super::response_flags::{DNS_RESOLUTION_FAILED, NO_CLUSTER_FOUND, NO_HEALTHY_UPSTREAM};
    let end = |host, flags| UpstreamEnd { host, flags };
    // What Envoy 1.40 reported in the integration tests: tcp_proxy to the dynamic forward proxy
    // cluster `UH` (0x2), the HTTP dynamic forward proxy `DF` (0x4000000); plus a missing cluster.
    for flags in [
        NO_HEALTHY_UPSTREAM,
        DNS_RESOLUTION_FAILED,
        NO_CLUSTER_FOUND,
        0x2 | 0x4000,
    ] {
        assert_eq!(
            pin_end(true, end(false, flags)),
            Some(PinOutcome::Unresolved),
            "{flags:#x}"
        );
        // Not pinned: the original destination's failures are not pinning's.
        assert_eq!(pin_end(false, end(false, flags)), None, "{flags:#x}");
        // A host was chosen: whatever failed after, the name resolved.
        assert_eq!(pin_end(true, end(true, flags)), None, "{flags:#x}");
    }
    // No host and no such flag: the client left before Envoy chose (or a flag of another cause,
    // here `UF` connect failure and `DC` downstream termination).
    for flags in [0, 0x20, 0x4000] {
        assert_eq!(pin_end(true, end(false, flags)), None, "{flags:#x}");
    }
    assert_eq!(pin_end(true, end(true, 0)), None);
}

#[test]
fn the_pinned_name_is_the_decisions_name_only_when_pinned() {
    let name = NameClass::Name("api.example".to_owned());
    let mut decision = Decision::new(Verdict::Allow, Reason::Rule, Some(0));
    assert_eq!(pinned_name(&decision, Some(&name)), None);
    decision.pin = true;
    assert_eq!(pinned_name(&decision, Some(&name)), Some("api.example"));
    assert_eq!(pinned_name(&decision, None), None);
    let malformed = NameClass::Malformed(MalformedName::Empty);
    assert_eq!(pinned_name(&decision, Some(&malformed)), None);
}

#[test]
fn a_connection_that_cannot_be_pinned_is_denied_never_sent_to_its_ip() {
    // Without hold_upstream the connection went on at open: a name read from its bytes can no
    // longer choose the upstream. Denied in every mode, audit and passthrough included.
    for mode in ["allowlist", "audit", "passthrough"] {
        let p = pinning(mode, false);
        let (s, action, log) = feed(&p, WEB, &hello("api.example"));
        assert_eq!(action, Action::Close, "{mode}");
        assert!(s.is_closed() && log.pins.is_empty());
        assert_eq!(
            log.decisions,
            ["deny/pin_unavailable/unavailable@api.example"],
            "{mode}"
        );
    }
    // The proxy refuses the filter state (no dynamic forward proxy factories).
    let p = pinning("allowlist", true);
    let mut log = Log {
        refuse_pins: true,
        ..Log::default()
    };
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut log);
    let action = s.client(&p, &hello("api.example"), false, 0, &mut log);
    assert_eq!(action, Action::Close);
    assert_eq!(log.decisions, ["deny/pin_unavailable/failed@api.example"]);
    // A silent client allowed on IP and port at the timeout (passthrough), then a pinned name:
    // the upstream was chosen at the timeout.
    let p = pinning("passthrough", true);
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst(WEB), None, 0, &mut log);
    assert_eq!(s.timeout(&p, 2 * SECOND, &mut log), Action::Resume);
    let action = s.client(&p, &hello("api.example"), false, 2 * SECOND, &mut log);
    assert_eq!(action, Action::Close);
    assert_eq!(
        log.decisions,
        [
            "allow/passthrough",
            "deny/pin_unavailable/unavailable@api.example"
        ]
    );
    // Unlisted names in passthrough and audit are not pinned and pass as before.
    for (mode, want) in [
        ("passthrough", "allow/passthrough@other.example"),
        ("audit", "audit_deny/no_match@other.example"),
    ] {
        let p = pinning(mode, false);
        let (_, action, log) = feed(&p, WEB, &hello("other.example"));
        assert_eq!(
            (action, log.decisions.as_slice()),
            (Action::Continue, &[want.to_string()][..])
        );
    }
}

#[test]
fn a_pinned_connection_carries_only_its_name() {
    let p = pinning("passthrough", true);
    let first = b"GET /1 HTTP/1.1\r\nHost: api.example\r\n\r\n";
    let (mut s, action, mut log) = feed(&p, WEB, first);
    assert_eq!(
        (action, s.pinned()),
        (Action::Continue, Some("api.example"))
    );
    // A second request for the same name passes; one for another name — even one the policy
    // allows — would reach the pinned name's address: the connection closes.
    let same = b"GET /2 HTTP/1.1\r\nHost: API.example:80\r\n\r\n";
    assert_eq!(s.client(&p, same, false, 0, &mut log), Action::Continue);
    for other in [
        &b"GET /3 HTTP/1.1\r\nHost: loose.example\r\n\r\n"[..],
        b"GET /3 HTTP/1.1\r\n\r\n",
    ] {
        let (mut s, _, mut log) = feed(&p, WEB, first);
        let action = s.client(&p, other, false, 0, &mut log);
        assert_eq!(action, Action::Close);
        let last = log.decisions.last().unwrap();
        assert!(
            last.starts_with("deny/later_request/pin_unavailable"),
            "{last}"
        );
        assert_eq!(log.pins.len(), 1);
    }
    assert_eq!(
        log.decisions,
        [
            "allow/passthrough@api.example^pinned",
            "allow/passthrough@api.example^pinned"
        ]
    );
    // On a connection that is not pinned (allowed by an unpinned rule), a later request for a
    // pinned name cannot be pinned any more: denied rather than sent to the client's IP.
    let (mut s, _, mut log) = feed(&p, WEB, b"GET / HTTP/1.1\r\nHost: loose.example\r\n\r\n");
    let action = s.client(
        &p,
        b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n",
        false,
        0,
        &mut log,
    );
    assert_eq!(action, Action::Close);
    assert_eq!(
        log.decisions.last().map(String::as_str),
        Some("deny/later_request/pin_unavailable@api.example")
    );
}

/// One HTTP-filter request to `to` for `host` under `window`.
fn request(p: &Policy, to: &str, host: &str, window: PinWindow<'_>, log: &mut Log) -> Decision {
    let name = classify_authority(host.as_bytes());
    let seen = Observed {
        dst: dst(to),
        name: Some(&name),
        source: NameSource::Authority,
        proto: Proto::Http,
        filter: FilterKind::Http,
        anomaly: None,
        request: 1,
        pin: window,
        ech: false,
    };
    judge(p, &seen, log)
}

#[test]
fn the_http_filter_pins_only_behind_a_route_to_the_pin_cluster() {
    let p = pinning("allowlist", false);
    assert_eq!(
        request_window(&p, Some("egress_guard_pinned")),
        PinWindow::Routed
    );
    for other in [
        Some("passthrough"),
        Some("egress_guard_pinned2"),
        Some(""),
        None,
    ] {
        assert_eq!(request_window(&p, other), PinWindow::Closed, "{other:?}");
    }
    let custom =
        policy(r#"{"pin": true, "pin_cluster": "dfp", "allow": [{"hosts": ["a.example"]}]}"#);
    assert_eq!(request_window(&custom, Some("dfp")), PinWindow::Routed);
    assert_eq!(
        request_window(&custom, Some("egress_guard_pinned")),
        PinWindow::Closed
    );
}

#[test]
fn behind_the_pin_route_every_request_that_passes_is_sent_somewhere() {
    // Pinned: to the name at the original port. Unpinned but passing: to the original
    // destination, as an IP literal (IPv6 in brackets). Denied: nowhere.
    for mode in ["allowlist", "audit", "passthrough"] {
        let p = pinning(mode, false);
        let mut log = Log::default();
        let d = request(
            &p,
            "203.0.113.9:8080",
            "API.example:9999",
            PinWindow::Routed,
            &mut log,
        );
        assert!(d.pin && d.verdict.passes(), "{mode}");
        let d = request(
            &p,
            "203.0.113.9:80",
            "loose.example",
            PinWindow::Routed,
            &mut log,
        );
        assert!(!d.pin && d.verdict.passes(), "{mode}");
        let d = request(
            &p,
            "10.0.0.5:443",
            "api.example",
            PinWindow::Routed,
            &mut log,
        );
        assert!(!d.pin && d.verdict.passes(), "{mode}");
        let d = request(
            &p,
            "[2001:db8::7]:80",
            "loose.example",
            PinWindow::Routed,
            &mut log,
        );
        assert!(!d.pin && d.verdict.passes(), "{mode}");
        let d = request(
            &p,
            "203.0.113.9:80",
            "evil.example",
            PinWindow::Routed,
            &mut log,
        );
        assert_eq!(d.verdict, Verdict::Deny, "{mode}");
        assert_eq!(
            log.pins,
            [
                "api.example:8080>egress_guard_pinned",
                "203.0.113.9:80>egress_guard_pinned",
                "10.0.0.5:443>egress_guard_pinned",
                "[2001:db8::7]:80>egress_guard_pinned",
            ],
            "{mode}"
        );
        let pinned = if mode == "passthrough" {
            "allow/passthrough@api.example^pinned"
        } else {
            "allow/rule@api.example^pinned"
        };
        assert_eq!(log.decisions.first().map(String::as_str), Some(pinned));
    }
    // A would-deny in audit passes unpinned: to its original destination.
    let p = pinning("audit", false);
    let mut log = Log::default();
    let d = request(
        &p,
        "203.0.113.9:80",
        "other.example",
        PinWindow::Routed,
        &mut log,
    );
    assert_eq!((d.verdict, d.pin), (Verdict::AuditDeny, false));
    assert_eq!(log.pins, ["203.0.113.9:80>egress_guard_pinned"]);
}

#[test]
fn a_request_the_proxy_cannot_route_is_refused() {
    // Envoy refuses the filter state: whether the request had to be pinned or not, it is
    // refused — behind the pin route, a request without the state would go where its Host says.
    let p = pinning("passthrough", false);
    for host in ["api.example", "loose.example"] {
        let mut log = Log {
            refuse_pins: true,
            ..Log::default()
        };
        let d = request(&p, "203.0.113.9:80", host, PinWindow::Routed, &mut log);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Deny, Reason::PinUnavailable)
        );
        assert_eq!(
            log.decisions,
            [format!("deny/pin_unavailable/failed@{host}")]
        );
    }
    // Under any other route, a request that must be pinned is refused without asking the
    // proxy; one that need not be goes on untouched.
    let mut log = Log::default();
    let d = request(
        &p,
        "203.0.113.9:80",
        "api.example",
        PinWindow::Closed,
        &mut log,
    );
    assert_eq!(d.reason, Reason::PinUnavailable);
    let d = request(
        &p,
        "203.0.113.9:80",
        "loose.example",
        PinWindow::Closed,
        &mut log,
    );
    assert!(d.verdict.passes());
    assert!(log.pins.is_empty());
    assert_eq!(
        log.decisions,
        [
            "deny/pin_unavailable/unavailable@api.example",
            "allow/passthrough@loose.example"
        ]
    );
}

/// `rules(mode, hold)` with `"ech": "deny"`.
fn ech_deny(mode: &str, hold: bool) -> Policy {
    policy(&format!(
        r#"{{"mode": "{mode}", "ech": "deny",
            "allow": [{{"name": "ok", "hosts": ["ok.example"]}},
                      {{"name": "db", "cidrs": ["10.0.0.5"], "ports": [5432]}}],
            "deny": [{{"name": "evil", "hosts": ["evil.example"]}}],
            "sniff": {{"timeout_ms": 1000, "hold_upstream": {hold}}}}}"#
    ))
}

const MODES: [&str; 3] = ["allowlist", "audit", "passthrough"];

/// How `rules`/`ech_deny` allow `ok.example` in `mode`.
fn ok_allowed(mode: &str) -> &'static str {
    if mode == "passthrough" {
        "allow/passthrough@ok.example"
    } else {
        "allow/rule@ok.example"
    }
}

#[test]
fn ech_allowed_is_decided_on_the_outer_sni_and_noted() {
    for (mode, want_other) in MODES.into_iter().zip([
        "deny/no_match@other.example~ech",
        "audit_deny/no_match@other.example~ech",
        "allow/passthrough@other.example~ech",
    ]) {
        for hold in [false, true] {
            let p = rules(mode, hold);
            let ok_ech = format!("{}~ech", ok_allowed(mode));
            for (input, want) in [
                (hello_ech("ok.example"), ok_ech.as_str()),
                (hello_ech("other.example"), want_other),
                (hello_ech("evil.example"), "deny/deny_rule@evil.example~ech"),
                // Without the extension: nothing noted.
                (hello("ok.example"), ok_allowed(mode)),
            ] {
                let (_, action, log) = feed(&p, WEB, &input);
                assert_eq!(log.decisions, [want], "{mode} hold={hold}");
                let passes = !want.starts_with("deny/");
                assert_eq!(action == Action::Continue, passes, "{want}");
                let ech = want.ends_with("~ech").then_some(EchOutcome::Allowed);
                assert_eq!(log.ech, Vec::from_iter(ech), "{want}");
            }
        }
    }
}

#[test]
fn ech_denied_in_every_mode_hold_or_not() {
    for mode in MODES {
        for hold in [false, true] {
            let p = ech_deny(mode, hold);
            for (input, want) in [
                (hello_ech("ok.example"), "deny/ech@ok.example~ech"),
                (hello_ech("other.example"), "deny/ech@other.example~ech"),
                // A deny rule and a malformed name keep their own reasons.
                (hello_ech("evil.example"), "deny/deny_rule@evil.example~ech"),
                (hello_ech("ok..example"), "deny/malformed/bad_label~ech"),
            ] {
                let (s, action, log) = feed(&p, WEB, &input);
                assert_eq!(log.decisions, [want], "{mode} hold={hold}");
                assert_eq!(action, Action::Close, "{want}");
                assert!(s.is_closed());
                assert_eq!(log.ech, [EchOutcome::Denied], "{want}");
            }
            // Without the extension the policy decides as ever.
            let (_, action, log) = feed(&p, WEB, &hello("ok.example"));
            assert_eq!(
                (action, log.decisions.as_slice()),
                (Action::Continue, &[ok_allowed(mode).to_string()][..])
            );
            assert!(log.ech.is_empty());
        }
    }
}

#[test]
fn ech_denied_is_never_decided_at_open_on_the_inspector_sni() {
    for mode in MODES {
        for hold in [false, true] {
            let p = ech_deny(mode, hold);
            let mut log = Log::default();
            let (mut s, action) = Session::open(&p, dst(WEB), Some(b"ok.example"), 0, &mut log);
            // Nothing decided: the ClientHello must be read (held whole with hold_upstream).
            let at_open = if hold {
                Action::Pause
            } else {
                Action::Continue
            };
            assert_eq!(action, at_open, "{mode} hold={hold}");
            assert!(log.decisions.is_empty() && log.outcomes.is_empty());
            assert!(!s.passes_client_bytes() && s.deadline() == Some(SECOND));
            let bytes = hello_ech("ok.example");
            assert_eq!(s.client(&p, &bytes, false, 0, &mut log), Action::Close);
            assert_eq!(log.decisions, ["deny/ech@ok.example~ech"]);
            assert_eq!(log.outcomes, [SniffOutcome::TlsSni]);

            // The same SNI without the extension is allowed from the bytes.
            let mut log = Log::default();
            let (mut s, _) = Session::open(&p, dst(WEB), Some(b"ok.example"), 0, &mut log);
            let bytes = hello("ok.example");
            assert_eq!(s.client(&p, &bytes, false, 0, &mut log), Action::Continue);
            assert_eq!(log.decisions, [ok_allowed(mode)]);
        }
    }
    // With `ech: allow` the inspector's SNI still decides at open (the hello is not read, so
    // its ECH is neither logged nor counted).
    let p = rules("allowlist", false);
    let mut log = Log::default();
    let (s, action) = Session::open(&p, dst(WEB), Some(b"ok.example"), 0, &mut log);
    assert_eq!((action, s.passes_client_bytes()), (Action::Continue, true));
    assert_eq!(log.decisions, ["allow/rule@ok.example"]);
}

#[test]
fn ech_denied_reads_the_bytes_of_what_ip_and_port_would_allow_at_open() {
    let json = |ech: &str| {
        format!(
            r#"{{"ech": "{ech}", "allow": [{{"name": "db", "cidrs": ["10.0.0.5"]}}],
                "deny": [{{"name": "meta", "cidrs": ["169.254.169.254"]}}],
                "sniff": {{"timeout_ms": 1000}}}}"#
        )
    };
    // `ech: allow`: allowed at open (and only peeked at, for IP literals).
    let p = policy(&json("allow"));
    let (_, action, log) = feed(&p, "10.0.0.5:443", &hello_ech("anything.example"));
    assert_eq!(action, Action::Continue);
    assert_eq!(log.decisions, ["allow/rule"]);
    // `ech: deny`: the first bytes decide.
    let p = policy(&json("deny"));
    let mut log = Log::default();
    let (mut s, action) = Session::open(&p, dst("10.0.0.5:443"), None, 0, &mut log);
    assert_eq!(action, Action::Continue);
    assert!(log.decisions.is_empty());
    let bytes = hello_ech("anything.example");
    assert_eq!(s.client(&p, &bytes, false, 0, &mut log), Action::Close);
    assert_eq!(log.decisions, ["deny/ech@anything.example~ech"]);
    // Without ECH, or not TLS at all, allowed by the CIDR rule.
    let (_, action, log) = feed(&p, "10.0.0.5:443", &hello("anything.example"));
    assert_eq!((action, log.decisions.len()), (Action::Continue, 1));
    assert_eq!(log.decisions, ["allow/rule@anything.example"]);
    let (_, action, log) = feed(&p, "10.0.0.5:5432", b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
    assert_eq!(
        (action, log.decisions.as_slice()),
        (Action::Continue, &["allow/rule".to_string()][..])
    );
    // A silent client is allowed at the timeout, and a late ClientHello with ECH is denied.
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst("10.0.0.5:443"), None, 0, &mut log);
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Nothing);
    assert_eq!(
        s.client(&p, &bytes, false, 2 * SECOND, &mut log),
        Action::Close
    );
    assert_eq!(
        log.decisions,
        ["allow/rule", "deny/ech@anything.example~ech"]
    );
    // A deny on IP and port is still taken at open.
    let mut log = Log::default();
    let (s, action) = Session::open(&p, dst("169.254.169.254:80"), None, 0, &mut log);
    assert_eq!((action, s.is_closed()), (Action::Close, true));
    assert_eq!(log.decisions, ["deny/deny_rule"]);

    // With hold_upstream too, such a connection is not held whole: it is never pinned, and a
    // server-first protocol must not wait for the timeout. Its bytes are still read first.
    let p = policy(&json("deny").replace(
        r#""timeout_ms": 1000"#,
        r#""timeout_ms": 1000, "hold_upstream": true"#,
    ));
    let mut log = Log::default();
    let (mut s, action) = Session::open(&p, dst("10.0.0.5:443"), None, 0, &mut log);
    assert_eq!(action, Action::Continue);
    assert_eq!(s.client(&p, &bytes, false, 0, &mut log), Action::Close);
    assert_eq!(log.decisions, ["deny/ech@anything.example~ech"]);
    // A silent (server-first) client is allowed at the timeout without a resume.
    let mut log = Log::default();
    let (mut s, _) = Session::open(&p, dst("10.0.0.5:443"), None, 0, &mut log);
    assert_eq!(s.timeout(&p, SECOND, &mut log), Action::Nothing);
    assert_eq!(log.decisions, ["allow/rule"]);
    // (Where a host rule makes the name matter, hold_upstream holds as ever: see
    // ech_denied_is_never_decided_at_open_on_the_inspector_sni.)
}

#[test]
fn ech_denied_with_pinning_needs_hold_upstream() {
    let pinned = |hold: bool| {
        policy(&format!(
            r#"{{"ech": "deny", "pin": true, "allow": [{{"name": "api", "hosts": ["api.example"]}}],
                "sniff": {{"timeout_ms": 1000, "hold_upstream": {hold}}}}}"#
        ))
    };
    // Held since open: the window stays open while the ClientHello is read.
    let p = pinned(true);
    let mut log = Log::default();
    let (mut s, action) = Session::open(&p, dst(WEB), Some(b"api.example"), 0, &mut log);
    assert_eq!(action, Action::Pause);
    assert!(log.pins.is_empty());
    assert_eq!(
        s.client(&p, &hello("api.example"), false, 0, &mut log),
        Action::Continue
    );
    assert_eq!(log.decisions, ["allow/rule@api.example^pinned"]);
    assert_eq!(log.pins, ["api.example:443>egress_guard_pinned"]);
    let (_, action, log) = feed(&p, WEB, &hello_ech("api.example"));
    assert_eq!(action, Action::Close);
    assert_eq!(log.decisions, ["deny/ech@api.example~ech"]);
    assert!(log.pins.is_empty(), "nothing pinned for a denied hello");

    // Not held: the inspector's SNI no longer decides at open, so a pinned allow read from the
    // bytes comes too late: pin_unavailable (`check` says so).
    let p = pinned(false);
    let mut log = Log::default();
    let (mut s, action) = Session::open(&p, dst(WEB), Some(b"api.example"), 0, &mut log);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.client(&p, &hello("api.example"), false, 0, &mut log),
        Action::Close
    );
    assert_eq!(
        log.decisions,
        ["deny/pin_unavailable/unavailable@api.example"]
    );
    assert!(log.pins.is_empty());
}
