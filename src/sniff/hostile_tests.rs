//! Hostile first flights, end to end through the core: each case goes through [`sniff`] (at every
//! prefix), then the name normalisation of [`crate::policy::name`], then [`Policy::decide`] and
//! [`reference::decide`] under policies whose host rules match every name — and must end in its
//! expected outcome and never be allowed by a host rule.
//!
//! The step from a sniff result to the fact the policy decides on is the connection session's:
//! each case is fed to a real [`Session`] a byte at a time, and its recorded decision is held
//! against [`reference::decide`] on the same fact.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::net::SocketAddr;

use super::tests::sniff_every_prefix;
use super::tls::build::{handshake, header, records, sni_ext, Hello};
use super::Sniffed;
use crate::policy::{
    reference, Config, Decision, Facts, NameClass, NameFact, Policy, Reason, Verdict,
};
use crate::session::{Action, Anomaly, Judged, Record, Session, SniffOutcome};

/// A decision, the name and anomaly it was taken on, and its detail.
type Decided = (
    Decision,
    Option<NameClass>,
    Option<Anomaly>,
    Option<&'static str>,
);

/// The session's one decision on a case, with what it was taken on.
#[derive(Default)]
struct Seen {
    outcomes: Vec<SniffOutcome>,
    decisions: Vec<Decided>,
}

impl Record for Seen {
    fn sniffed(&mut self, outcome: SniffOutcome) {
        self.outcomes.push(outcome);
    }

    fn judged(&mut self, judged: &Judged<'_>) {
        self.decisions.push((
            judged.decision,
            judged.observed.name.cloned(),
            judged.observed.anomaly,
            judged.detail,
        ));
    }

    fn pin(&mut self, _: &crate::policy::pin::Target<'_>) -> bool {
        true
    }
}

impl Seen {
    /// The label of the case's outcome (`<sniff outcome>` or `<sniff outcome>:<detail>`, the
    /// detail being the malformed kind or what the name is) and the fact the policy got.
    fn label_and_fact(&self) -> (String, NameFact<'_>) {
        let [outcome] = self.outcomes[..] else {
            panic!("one sniff outcome, got {:?}", self.outcomes);
        };
        let [(_, name, anomaly, detail)] = &self.decisions[..] else {
            panic!("one decision, got {}", self.decisions.len());
        };
        match (anomaly, name) {
            (Some(Anomaly::TooLarge), _) => (outcome.to_string(), NameFact::TooLarge),
            (Some(Anomaly::Malformed(_)), _) => (
                format!("{outcome}:{}", detail.unwrap_or("?")),
                NameFact::Malformed,
            ),
            (None, Some(NameClass::Name(n))) => (format!("{outcome}:name"), NameFact::Name(n)),
            (None, Some(NameClass::IpLiteral(_))) => {
                (format!("{outcome}:ip_literal"), NameFact::Absent)
            }
            (None, Some(NameClass::Malformed(why))) => {
                (format!("{outcome}:{why}"), NameFact::Malformed)
            }
            (None, None) => (outcome.to_string(), NameFact::Absent),
        }
    }
}

/// Feeds `input` to a session a byte at a time (the client half-closes after the last byte),
/// as the network filter would; returns what it recorded.
fn run_session(policy: &Policy, dst: SocketAddr, input: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let (mut session, action) = Session::open(policy, dst, None, 0, &mut seen);
    assert_eq!(action, Action::Continue, "the session sniffs");
    for end in 1..=input.len() {
        let eos = end == input.len();
        if session.client(policy, &input[..end], eos, 0, &mut seen) != Action::Pause {
            break;
        }
    }
    seen
}

/// A ClientHello with this SNI entry list in its server_name extension.
fn hello_with_names(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut hello = Hello::with_sni(b"unused.example");
    hello.extensions = Some(vec![(0, sni_ext(names)), (10, vec![0, 2, 0, 29])]);
    hello.record()
}

fn hello(sni: &[u8]) -> Vec<u8> {
    hello_with_names(&[(0, sni)])
}

fn get(host_lines: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\n{host_lines}Accept: */*\r\n\r\n").into_bytes()
}

#[test]
fn hostile_inputs_end_in_a_defined_outcome_and_no_host_rule_allows_them() {
    const MAX_BYTES: usize = 512;
    let base = Hello::with_sni(b"allowed.example");
    let message = base.message();
    let body = base.body();
    let concat = |parts: &[&[u8]]| parts.concat();
    let mut padded = Hello::with_sni(b"allowed.example");
    padded.extensions = Some(vec![
        (0, sni_ext(&[(0, b"allowed.example")])),
        (21, vec![0; 600]),
    ]);
    let long_name = vec!["a".repeat(63); 5].join(".");
    let long_host = format!("Host: {long_name}\r\n");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // TLS
        (
            "well-formed, for contrast",
            hello(b"allowed.example"),
            "tls_sni:name",
        ),
        (
            "ClientHello larger than max_bytes",
            padded.record(),
            "too_large",
        ),
        (
            "ClientHello larger than max_bytes, in small records",
            records(&padded.message(), 100),
            "too_large",
        ),
        (
            "record length longer than the ClientHello, then a CCS",
            concat(&[
                &header(22, message.len() + 6),
                &message,
                &[20, 3, 3, 0, 1, 1],
            ]),
            "malformed:tls_trailing_handshake_data",
        ),
        (
            "record length shorter than the ClientHello",
            concat(&[&header(22, message.len() - 4), &message]),
            "malformed:tls_record_type",
        ),
        (
            "handshake length shorter than the body",
            records(&concat(&[&[1, 0, 0, 40], &body]), usize::MAX),
            "malformed:tls_trailing_handshake_data",
        ),
        (
            "handshake length shorter than the body, record cut to match",
            records(&concat(&[&[1, 0, 0, 40], &body[..40]]), usize::MAX),
            "malformed:tls_handshake_length",
        ),
        (
            "handshake length of 16 MiB",
            records(&[1, 0xff, 0xff, 0xff, 3, 3], usize::MAX),
            "too_large",
        ),
        (
            "handshake length longer than what arrives (client stops)",
            records(&handshake(1, &body)[..60], usize::MAX),
            "malformed:truncated",
        ),
        (
            "SSLv2-compatible hello",
            vec![
                0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
            "malformed:tls_sslv2_hello",
        ),
        (
            "no SNI",
            {
                let mut h = base.clone();
                h.extensions = Some(vec![(10, vec![0, 2, 0, 29])]);
                h.record()
            },
            "tls_no_sni",
        ),
        (
            "no extensions at all",
            {
                let mut h = base.clone();
                h.extensions = None;
                h.record()
            },
            "tls_no_sni",
        ),
        (
            "two names",
            hello_with_names(&[(0, b"allowed.example"), (0, b"denied.example")]),
            "malformed:tls_sni_multiple_names",
        ),
        (
            "two server_name extensions",
            {
                let mut h = base.clone();
                h.extensions = Some(vec![
                    (0, sni_ext(&[(0, b"allowed.example")])),
                    (0, sni_ext(&[(0, b"denied.example")])),
                ]);
                h.record()
            },
            "malformed:tls_sni_duplicate_extension",
        ),
        ("empty SNI", hello(b""), "malformed:tls_sni_empty_name"),
        (
            "empty server_name extension",
            {
                let mut h = base.clone();
                h.extensions = Some(vec![(0, vec![])]);
                h.record()
            },
            "malformed:tls_sni_empty_extension",
        ),
        ("SNI of a dot", hello(b"."), "tls_sni:empty_name"),
        (
            "SNI an IPv4 literal",
            hello(b"10.0.0.1"),
            "tls_sni:ip_literal",
        ),
        (
            "SNI an IPv6 literal",
            hello(b"2001:db8::1"),
            "tls_sni:ip_literal",
        ),
        (
            "SNI over 255 bytes",
            hello(long_name.as_bytes()),
            "tls_sni:name_too_long",
        ),
        (
            "SNI label over 63 bytes",
            hello(format!("{}.example", "a".repeat(64)).as_bytes()),
            "tls_sni:bad_label",
        ),
        (
            "SNI with a space",
            hello(b"allowed.example evil"),
            "tls_sni:bad_byte",
        ),
        (
            "SNI with a NUL",
            hello(b"evil.example\0.allowed"),
            "tls_sni:bad_byte",
        ),
        (
            "SNI with a port",
            hello(b"allowed.example:443"),
            "tls_sni:bad_byte",
        ),
        (
            "SNI with a slash",
            hello(b"evil.example/allowed"),
            "tls_sni:bad_byte",
        ),
        (
            "SNI with an empty label",
            hello(b"a..example"),
            "tls_sni:bad_label",
        ),
        (
            "SNI with a byte over 0x7f",
            hello("bücher.example".as_bytes()),
            "malformed:tls_sni_non_ascii",
        ),
        (
            "SNI of name_type 1",
            hello_with_names(&[(1, b"allowed.example")]),
            "malformed:tls_sni_name_type",
        ),
        // HTTP/1
        (
            "Host, for contrast",
            get("Host: allowed.example\r\n"),
            "http_host:name",
        ),
        ("no Host", get(""), "http_no_host"),
        (
            "Host with userinfo",
            get("Host: allowed.example@denied.example\r\n"),
            "malformed:http_host_value",
        ),
        (
            "Host with a space",
            get("Host: allowed.example denied.example\r\n"),
            "malformed:http_host_value",
        ),
        ("empty Host", get("Host: \r\n"), "malformed:http_host_value"),
        (
            "Host with port 0",
            get("Host: a.example:0\r\n"),
            "http_host:bad_port",
        ),
        (
            "Host with port 99999",
            get("Host: a.example:99999\r\n"),
            "http_host:bad_port",
        ),
        (
            "Host with an empty port",
            get("Host: a.example:\r\n"),
            "http_host:bad_port",
        ),
        (
            "Host with a named port",
            get("Host: a.example:https\r\n"),
            "http_host:bad_port",
        ),
        (
            "Host with two ports",
            get("Host: a.example:80:80\r\n"),
            "http_host:bad_ipv6",
        ),
        (
            "Host an unbracketed IPv6 literal",
            get("Host: 2001:db8::1\r\n"),
            "http_host:bad_ipv6",
        ),
        (
            "Host an IPv4 literal",
            get("Host: 10.0.0.1:80\r\n"),
            "http_host:ip_literal",
        ),
        (
            "Host an IPv6 literal",
            get("Host: [2001:db8::1]:80\r\n"),
            "http_host:ip_literal",
        ),
        (
            "Host over 253 bytes",
            get(&long_host),
            "http_host:name_too_long",
        ),
        (
            "Host with a '!'",
            get("Host: a!b.example\r\n"),
            "http_host:bad_byte",
        ),
        (
            "two Host headers",
            get("Host: allowed.example\r\nHost: denied.example\r\n"),
            "malformed:http_duplicate_host",
        ),
        (
            "two Host headers, other case",
            get("Host: a.example\r\nhOST: a.example\r\n"),
            "malformed:http_duplicate_host",
        ),
        (
            "two values in one Host",
            get("Host: allowed.example, denied.example\r\n"),
            "malformed:http_host_value",
        ),
        (
            "Host folded onto a second line",
            get("Host: allowed.example\r\n denied.example\r\n"),
            "malformed:http_obs_fold",
        ),
        (
            "absolute-form target disagreeing with Host",
            b"GET http://denied.example/ HTTP/1.1\r\nHost: allowed.example\r\n\r\n".to_vec(),
            "malformed:http_host_mismatch",
        ),
        (
            "absolute-form target with userinfo",
            b"GET http://allowed.example@denied.example/ HTTP/1.1\r\n\r\n".to_vec(),
            "malformed:http_request_target",
        ),
        (
            "request head larger than max_bytes",
            get(&format!(
                "Host: allowed.example\r\nX-Pad: {}\r\n",
                "a".repeat(600)
            )),
            "too_large",
        ),
        (
            "request head cut short (client stops)",
            b"GET / HTTP/1.1\r\nHost: allowed.exam".to_vec(),
            "malformed:truncated",
        ),
    ];

    let policies = [
        r#"{"mode": "passthrough", "deny": [{"name": "every-host", "hosts": ["*"]}],
            "sniff": {"max_bytes": 512}}"#,
        r#"{"mode": "allowlist", "allow": [{"name": "every-host", "hosts": ["*"]}],
            "sniff": {"max_bytes": 512}}"#,
        r#"{"mode": "audit", "allow": [{"name": "every-host", "hosts": ["*"]}],
            "sniff": {"max_bytes": 512}}"#,
    ]
    .map(|json| {
        let config = Config::from_json(json.as_bytes()).unwrap();
        let policy = Policy::compile(&config).unwrap();
        (json, config, policy)
    });
    let dst: SocketAddr = "192.0.2.1:443".parse().unwrap();

    for (what, input, want) in &cases {
        // The parsers' own prefix contract, then the whole path through a session.
        sniff_every_prefix(input, MAX_BYTES);
        for (json, config, policy) in &policies {
            let seen = run_session(policy, dst, input);
            let (label, fact) = seen.label_and_fact();
            assert_eq!(&label, want, "{what}: under {json}");
            let facts = Facts {
                ip: dst.ip(),
                port: dst.port(),
                name: fact,
            };
            let decision = seen.decisions[0].0;
            assert_eq!(
                decision,
                reference::decide(config, &facts),
                "{what}: {json}"
            );
            if matches!(fact, NameFact::Name(_)) {
                // The well-formed contrast cases: the host rule decides.
                continue;
            }
            assert_ne!(
                decision.reason,
                Reason::Rule,
                "{what}: allowed by a host rule under {json}"
            );
            assert_ne!(
                decision.reason,
                Reason::DenyRule,
                "{what}: the host rule matched a name that is not one, under {json}"
            );
            match fact {
                NameFact::Malformed | NameFact::TooLarge => {
                    assert_eq!(decision.verdict, Verdict::Deny, "{what}: {json}")
                }
                // No name: decided on IP and port, which no rule here matches.
                NameFact::Absent => assert!(
                    matches!(decision.reason, Reason::Passthrough | Reason::NoMatch),
                    "{what}: {decision:?} under {json}"
                ),
                NameFact::Name(_) => unreachable!("{what}"),
            }
        }
    }

    // The oversized ClientHello and head are well-formed: under a large enough cap they are found.
    let big = crate::sniff::sniff(&padded.record(), 16384);
    assert_eq!(big, Sniffed::tls(Some("allowed.example".into()), false));
}
