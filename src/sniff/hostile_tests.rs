//! Hostile first flights, end to end through the core: each case goes through [`sniff`] (at every
//! prefix), then the name normalisation of [`crate::policy::name`], then [`Policy::decide`] and
//! [`reference::decide`] under policies whose host rules match every name — and must end in its
//! expected outcome and never be allowed by a host rule.
//!
//! The step from a sniff result to the fact the policy decides on is the network filter's
//! (`filter::stream::observe` and `filter::judge`, which exist only in the Envoy module); it is
//! restated here in [`fact`].

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::net::IpAddr;

use super::tests::sniff_every_prefix;
use super::tls::build::{handshake, header, records, sni_ext, Hello};
use super::Sniffed;
use crate::policy::{
    classify_authority, classify_sni, reference, Config, Facts, NameClass, NameFact, Policy,
    Reason, Verdict,
};

/// What the policy is asked about, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fact {
    Absent,
    Name(String),
    Malformed,
    TooLarge,
}

impl Fact {
    fn name_fact(&self) -> NameFact<'_> {
        match self {
            Fact::Absent => NameFact::Absent,
            Fact::Name(name) => NameFact::Name(name),
            Fact::Malformed => NameFact::Malformed,
            Fact::TooLarge => NameFact::TooLarge,
        }
    }
}

/// The network filter's reading of a sniff result at the end of the client's bytes: the outcome
/// label (`<sniff outcome>` or `<sniff outcome>:<detail>`, the detail being the malformed kind or
/// what the name is) and the fact.
fn fact(sniffed: &Sniffed) -> (String, Fact) {
    let named = |outcome: &str, class: NameClass| match class {
        NameClass::Name(name) => (format!("{outcome}:name"), Fact::Name(name)),
        NameClass::IpLiteral(_) => (format!("{outcome}:ip_literal"), Fact::Absent),
        NameClass::Malformed(why) => (format!("{outcome}:{why}"), Fact::Malformed),
    };
    match sniffed {
        Sniffed::Tls { sni: Some(sni) } => named("tls_sni", classify_sni(sni.as_bytes())),
        Sniffed::Http {
            host: Some(host), ..
        } => named("http_host", classify_authority(host.as_bytes())),
        Sniffed::Tls { sni: None } | Sniffed::Http { host: None, .. } | Sniffed::Other => {
            (sniffed.as_str().to_string(), Fact::Absent)
        }
        Sniffed::Malformed(why) => (format!("malformed:{why}"), Fact::Malformed),
        Sniffed::TooLarge => ("too_large".to_string(), Fact::TooLarge),
        // The client stopped (or half-closed) in the middle of its ClientHello or request head.
        Sniffed::NeedMore => ("malformed:truncated".to_string(), Fact::Malformed),
    }
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
        r#"{"mode": "passthrough", "deny": [{"name": "every-host", "hosts": ["*"]}]}"#,
        r#"{"mode": "allowlist", "allow": [{"name": "every-host", "hosts": ["*"]}]}"#,
        r#"{"mode": "audit", "allow": [{"name": "every-host", "hosts": ["*"]}]}"#,
    ]
    .map(|json| {
        let config = Config::from_json(json.as_bytes()).unwrap();
        let policy = Policy::compile(&config).unwrap();
        (json, config, policy)
    });
    let ip: IpAddr = "192.0.2.1".parse().unwrap();

    for (what, input, want) in &cases {
        let sniffed = sniff_every_prefix(input, MAX_BYTES);
        let (label, fact) = fact(&sniffed);
        assert_eq!(&label, want, "{what}: {sniffed:?}");
        for (json, config, policy) in &policies {
            let facts = Facts {
                ip,
                port: 443,
                name: fact.name_fact(),
            };
            let decision = policy.decide(&facts);
            assert_eq!(
                decision,
                reference::decide(config, &facts),
                "{what}: {json}"
            );
            let name = label
                .strip_prefix("tls_sni:")
                .or(label.strip_prefix("http_host:"));
            if name == Some("name") {
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
                Fact::Malformed | Fact::TooLarge => {
                    assert_eq!(decision.verdict, Verdict::Deny, "{what}: {json}")
                }
                // No name: decided on IP and port, which no rule here matches.
                Fact::Absent => assert!(
                    matches!(decision.reason, Reason::Passthrough | Reason::NoMatch),
                    "{what}: {decision:?} under {json}"
                ),
                Fact::Name(_) => unreachable!("{what}"),
            }
        }
    }

    // The oversized ClientHello and head are well-formed: under a large enough cap they are found.
    let big = crate::sniff::sniff(&padded.record(), 16384);
    assert_eq!(
        big,
        Sniffed::Tls {
            sni: Some("allowed.example".into())
        }
    );
}
