//! Table-driven tests of the contract. Every decision case runs through both the compiled
//! [`Policy`] and [`reference::decide`], which must both give the expected decision.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::net::IpAddr;

use super::*;

/// How the name of a case reaches the core: through name.rs, as the filter would.
#[derive(Clone, Copy, Debug)]
enum In {
    Sni(&'static str),
    Host(&'static str),
    NoName,
    Garbled,
    Huge,
}
use In::{Garbled, Host, Huge, NoName, Sni};

/// The expected decision, with the rule by name.
#[derive(Clone, Copy, Debug)]
struct Want(Verdict, Reason, Option<&'static str>);

fn allow(rule: &'static str) -> Want {
    Want(Verdict::Allow, Reason::Rule, Some(rule))
}
fn deny(rule: &'static str) -> Want {
    Want(Verdict::Deny, Reason::DenyRule, Some(rule))
}
const NO_MATCH: Want = Want(Verdict::Deny, Reason::NoMatch, None);
const AUDIT: Want = Want(Verdict::AuditDeny, Reason::NoMatch, None);
const PASS: Want = Want(Verdict::Allow, Reason::Passthrough, None);
const MALFORMED: Want = Want(Verdict::Deny, Reason::Malformed, None);
const TOO_LARGE: Want = Want(Verdict::Deny, Reason::TooLarge, None);

type Case = (&'static str, u16, In, Want);

/// Runs every case through the compiled policy and the reference, and checks `decide_early`
/// never contradicts `decide`. No case is pinned.
fn check(json: &str, cases: &[Case]) {
    let cases: Vec<PinCase> = cases
        .iter()
        .map(|&(ip, port, input, want)| (ip, port, input, want, false))
        .collect();
    check_pins(json, &cases);
}

/// A case with whether the decision pins the connection.
type PinCase = (&'static str, u16, In, Want, bool);

/// [`check`], with the expected [`Decision::pin`] of each case.
fn check_pins(json: &str, cases: &[PinCase]) {
    let config = Config::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
    let policy = Policy::compile(&config).unwrap();
    for &(ip, port, input, Want(verdict, reason, rule), pin) in cases {
        let ip: IpAddr = ip.parse().unwrap();
        let class = match input {
            Sni(raw) => Some(classify_sni(raw.as_bytes())),
            Host(raw) => Some(classify_authority(raw.as_bytes())),
            NoName | Garbled | Huge => None,
        };
        let name = match (input, &class) {
            (_, Some(class)) => NameFact::from(class),
            (Garbled, None) => NameFact::Malformed,
            (Huge, None) => NameFact::TooLarge,
            _ => NameFact::Absent,
        };
        let rule = rule.map(|r| {
            let id = policy.rules().iter().position(|i| i.name == r);
            id.unwrap_or_else(|| panic!("no rule {r}")) as RuleId
        });
        let want = Decision {
            pin,
            ..Decision::new(verdict, reason, rule)
        };
        let facts = Facts { ip, port, name };
        let what = format!("{json}\n  {ip} {port} {input:?}");
        assert_eq!(policy.decide(&facts), want, "compiled: {what}");
        assert_eq!(
            reference::decide(&config, &facts),
            want,
            "reference: {what}"
        );
        if let (Some(early), NameFact::Absent | NameFact::Name(_)) =
            (policy.decide_early(ip, port), name)
        {
            assert_eq!(early, want, "decide_early: {what}");
        }
    }
}

const IP: &str = "192.0.2.1";

#[test]
fn exact_names() {
    check(
        r#"{"allow": [{"name": "gh", "hosts": ["github.com"]}]}"#,
        &[
            (IP, 443, Sni("github.com"), allow("gh")),
            (IP, 1, Sni("github.com"), allow("gh")),
            (IP, 443, Sni("api.github.com"), NO_MATCH),
            (IP, 443, Sni("xgithub.com"), NO_MATCH),
            (IP, 443, Sni("github.co"), NO_MATCH),
            (IP, 443, Sni("github.com.evil.example"), NO_MATCH),
            (IP, 443, NoName, NO_MATCH),
        ],
    );
}

#[test]
fn suffix_wildcards_never_match_the_apex() {
    check(
        r#"{"allow": [{"name": "gh", "hosts": ["*.github.com"]}]}"#,
        &[
            (IP, 443, Sni("github.com"), NO_MATCH),
            (IP, 443, Sni("api.github.com"), allow("gh")),
            (IP, 443, Sni("a.b.github.com"), allow("gh")),
            (IP, 443, Sni("xgithub.com"), NO_MATCH),
            (IP, 443, Sni("github.com.evil.example"), NO_MATCH),
            (IP, 443, Sni("com"), NO_MATCH),
        ],
    );
}

#[test]
fn star_alone_matches_any_name_but_not_no_name() {
    check(
        r#"{"allow": [{"name": "any", "hosts": ["*"], "ports": [443]}]}"#,
        &[
            (IP, 443, Sni("github.com"), allow("any")),
            (IP, 443, Sni("x"), allow("any")),
            (IP, 443, Host("a.b.c.d:443"), allow("any")),
            (IP, 80, Sni("github.com"), NO_MATCH),
            (IP, 443, NoName, NO_MATCH),
            (IP, 443, Sni("10.0.0.1"), NO_MATCH), // an IP literal is no name
            (IP, 443, Garbled, MALFORMED),
            (IP, 443, Sni("bad name"), MALFORMED),
            (IP, 443, Huge, TOO_LARGE),
        ],
    );
}

#[test]
fn complex_globs() {
    check(
        r#"{"allow": [
            {"name": "api", "hosts": ["api-*.example.com"]},
            {"name": "one", "hosts": ["?.x.com"]},
            {"name": "class", "hosts": ["[ab]-[0-9].y.com"]},
            {"name": "alt", "hosts": ["{foo,bar}.z.com"]},
            {"name": "mid", "hosts": ["cdn.*.w.com"]}
        ]}"#,
        &[
            (IP, 443, Sni("api-v1.example.com"), allow("api")),
            (IP, 443, Sni("api-.example.com"), allow("api")),
            (IP, 443, Sni("api-a.b.example.com"), allow("api")), // `*` spans dots
            (IP, 443, Sni("api.example.com"), NO_MATCH),
            (IP, 443, Sni("xapi-v1.example.com"), NO_MATCH),
            (IP, 443, Sni("a.x.com"), allow("one")),
            (IP, 443, Sni("ab.x.com"), NO_MATCH),
            (IP, 443, Sni("x.com"), NO_MATCH),
            (IP, 443, Sni("b-7.y.com"), allow("class")),
            (IP, 443, Sni("c-7.y.com"), NO_MATCH),
            (IP, 443, Sni("bar.z.com"), allow("alt")),
            (IP, 443, Sni("baz.z.com"), NO_MATCH),
            (IP, 443, Sni("cdn.eu.1.w.com"), allow("mid")),
            (IP, 443, Sni("cdn.w.com"), NO_MATCH),
        ],
    );
}

#[test]
fn case_trailing_dots_and_host_ports_are_normalised() {
    check(
        r#"{"allow": [
            {"name": "gh", "hosts": ["GitHub.COM", "*.Example.ORG."]},
            {"name": "glob", "hosts": ["API-*.Test."]}
        ]}"#,
        &[
            (IP, 443, Sni("github.com"), allow("gh")),
            (IP, 443, Sni("GITHUB.com."), allow("gh")),
            (IP, 443, Host("GitHub.Com:443"), allow("gh")),
            (IP, 80, Host("github.com.:80"), allow("gh")),
            (IP, 443, Sni("WWW.example.org"), allow("gh")),
            (IP, 443, Host("a.EXAMPLE.org.:8443"), allow("gh")),
            (IP, 443, Sni("example.org"), NO_MATCH),
            (IP, 443, Sni("Api-V2.TEST"), allow("glob")),
            (IP, 443, Host("github.com:0"), MALFORMED),
            (IP, 443, Host("user@github.com"), MALFORMED),
            // An IP literal Host is no name: decided on the IP.
            (IP, 443, Host("[2001:db8::1]:443"), NO_MATCH),
        ],
    );
}

#[test]
fn cidrs_v4_v6_mapped_and_bare() {
    check(
        r#"{"allow": [
            {"name": "net8", "cidrs": ["10.0.0.0/8"]},
            {"name": "one", "cidrs": ["192.0.2.7/32", "198.51.100.9"]},
            {"name": "v6", "cidrs": ["fd00::/8"]},
            {"name": "v6one", "cidrs": ["2001:db8::1/128", "2001:db8::2"]}
        ]}"#,
        &[
            ("10.0.0.1", 443, NoName, allow("net8")),
            ("10.255.255.255", 1, Sni("any.example"), allow("net8")),
            ("11.0.0.0", 443, NoName, NO_MATCH),
            ("9.255.255.255", 443, NoName, NO_MATCH),
            ("::ffff:10.1.2.3", 443, NoName, allow("net8")),
            ("192.0.2.7", 443, NoName, allow("one")),
            ("192.0.2.8", 443, NoName, NO_MATCH),
            ("198.51.100.9", 443, NoName, allow("one")),
            ("::ffff:198.51.100.9", 443, NoName, allow("one")),
            ("fd12::1", 443, NoName, allow("v6")),
            ("fe80::1", 443, NoName, NO_MATCH),
            ("2001:db8::1", 443, NoName, allow("v6one")),
            ("2001:db8::2", 443, NoName, allow("v6one")),
            ("2001:db8::3", 443, NoName, NO_MATCH),
            // An IPv4-compatible (not mapped) address stays IPv6.
            ("::10.0.0.1", 443, NoName, NO_MATCH),
        ],
    );
}

#[test]
fn default_routes() {
    check(
        r#"{"allow": [{"name": "v4", "cidrs": ["0.0.0.0/0"]}, {"name": "v6", "cidrs": ["::/0"]}]}"#,
        &[
            ("0.0.0.0", 1, NoName, allow("v4")),
            ("255.255.255.255", 65535, NoName, allow("v4")),
            ("::ffff:1.2.3.4", 443, NoName, allow("v4")),
            ("::", 443, NoName, allow("v6")),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                443,
                NoName,
                allow("v6"),
            ),
        ],
    );
    check(
        r#"{"allow": [{"name": "v6", "cidrs": ["::/0"]}]}"#,
        &[
            ("1.2.3.4", 443, NoName, NO_MATCH),
            // Mapped destinations are IPv4: "all of IPv6" does not cover them.
            ("::ffff:1.2.3.4", 443, NoName, NO_MATCH),
        ],
    );
}

#[test]
fn port_ranges_and_port_only_rules() {
    check(
        r#"{"allow": [
            {"name": "alt", "hosts": ["a.example"], "ports": ["8000-8080", 443]},
            {"name": "edges", "hosts": ["e.example"], "ports": ["1", 65535]},
            {"name": "dns", "ports": [53]}
        ]}"#,
        &[
            (IP, 7999, Sni("a.example"), NO_MATCH),
            (IP, 8000, Sni("a.example"), allow("alt")),
            (IP, 8042, Sni("a.example"), allow("alt")),
            (IP, 8080, Sni("a.example"), allow("alt")),
            (IP, 8081, Sni("a.example"), NO_MATCH),
            (IP, 443, Sni("a.example"), allow("alt")),
            (IP, 442, Sni("a.example"), NO_MATCH),
            (IP, 1, Sni("e.example"), allow("edges")),
            (IP, 2, Sni("e.example"), NO_MATCH),
            (IP, 65535, Sni("e.example"), allow("edges")),
            (IP, 65534, Sni("e.example"), NO_MATCH),
            (IP, 53, NoName, allow("dns")),
            ("fd00::1", 53, Sni("whatever.example"), allow("dns")),
            (IP, 54, NoName, NO_MATCH),
        ],
    );
}

#[test]
fn hosts_and_cidrs_in_one_rule() {
    check(
        r#"{"allow": [{"name": "both", "hosts": ["a.example"], "cidrs": ["10.0.0.0/8"], "ports": [443]}]}"#,
        &[
            ("1.1.1.1", 443, Sni("a.example"), allow("both")),
            ("10.1.1.1", 443, Sni("b.example"), allow("both")),
            ("10.1.1.1", 443, NoName, allow("both")),
            ("1.1.1.1", 443, Sni("b.example"), NO_MATCH),
            ("10.0.0.1", 80, Sni("a.example"), NO_MATCH),
        ],
    );
}

#[test]
fn deny_wins_in_every_mode() {
    for (mode, unmatched) in [
        ("allowlist", NO_MATCH),
        ("audit", AUDIT),
        ("passthrough", PASS),
    ] {
        let json = format!(
            r#"{{"mode": "{mode}",
                "allow": [{{"name": "all", "hosts": ["*"]}}, {{"name": "all-ip", "cidrs": ["0.0.0.0/0", "::/0"]}}],
                "deny": [
                    {{"name": "bad-host", "hosts": ["evil.example", "*.evil.example"]}},
                    {{"name": "metadata", "cidrs": ["169.254.169.254", "fd00:ec2::254"]}},
                    {{"name": "smtp", "ports": [25]}}
                ]}}"#
        );
        let ok = |rule| {
            if mode == "passthrough" {
                PASS
            } else {
                allow(rule)
            }
        };
        check(
            &json,
            &[
                (IP, 443, Sni("evil.example"), deny("bad-host")),
                (IP, 443, Host("x.evil.example:443"), deny("bad-host")),
                ("169.254.169.254", 80, NoName, deny("metadata")),
                (
                    "169.254.169.254",
                    80,
                    Host("fine.example"),
                    deny("metadata"),
                ),
                ("::ffff:169.254.169.254", 80, NoName, deny("metadata")),
                ("fd00:ec2::254", 80, NoName, deny("metadata")),
                (IP, 25, Sni("fine.example"), deny("smtp")),
                ("fd00::1", 25, NoName, deny("smtp")),
                (IP, 443, Sni("fine.example"), ok("all")),
                (IP, 443, NoName, ok("all-ip")),
                // Deny rules beat a malformed or too large head; those beat the mode.
                ("169.254.169.254", 80, Garbled, deny("metadata")),
                (IP, 25, Huge, deny("smtp")),
                (IP, 443, Garbled, MALFORMED),
                (IP, 443, Huge, TOO_LARGE),
                (IP, 443, Sni("a..b"), MALFORMED),
            ],
        );
        check(
            &format!(
                r#"{{"mode": "{mode}", "deny": [{{"name": "d", "hosts": ["evil.example"]}}]}}"#
            ),
            &[
                (IP, 443, Sni("fine.example"), unmatched),
                (IP, 443, NoName, unmatched),
                (IP, 443, Sni("evil.example"), deny("d")),
                (IP, 443, Garbled, MALFORMED),
                (IP, 443, Huge, TOO_LARGE),
            ],
        );
    }
}

fn staged(rule: &'static str) -> Want {
    Want(Verdict::AuditDeny, Reason::StagedDeny, Some(rule))
}

#[test]
fn staged_deny_rules_record_and_never_block() {
    for (mode, unmatched) in [
        ("allowlist", NO_MATCH),
        ("audit", AUDIT),
        ("passthrough", PASS),
    ] {
        // A staged rule first, an enforced one after it that matches the same traffic, and a
        // second staged rule.
        let json = format!(
            r#"{{"mode": "{mode}",
                "allow": [{{"name": "gh", "hosts": ["*.github.com"], "ports": [443]}}],
                "deny": [
                    {{"name": "new-meta", "cidrs": ["169.254.0.0/16"], "enforce": false}},
                    {{"name": "meta", "cidrs": ["169.254.169.254"]}},
                    {{"name": "new-gist", "hosts": ["gist.github.com"], "enforce": false}},
                    {{"name": "new-smtp", "ports": [25], "enforce": false}}
                ]}}"#
        );
        let allowed = |rule| {
            if mode == "passthrough" {
                PASS
            } else {
                allow(rule)
            }
        };
        check(
            &json,
            &[
                // The enforced deny after a staged one still denies.
                ("169.254.169.254", 80, NoName, deny("meta")),
                ("169.254.169.254", 443, Sni("gist.github.com"), deny("meta")),
                // A staged match that would otherwise pass is a would-deny, in every mode.
                (
                    "169.254.170.2",
                    80,
                    NoName,
                    if mode == "allowlist" {
                        NO_MATCH
                    } else {
                        staged("new-meta")
                    },
                ),
                (IP, 443, Sni("gist.github.com"), staged("new-gist")),
                (IP, 443, Host("gist.github.com"), staged("new-gist")),
                // The first staged rule in config order is reported.
                (
                    "169.254.1.1",
                    443,
                    Sni("gist.github.com"),
                    staged("new-meta"),
                ),
                (
                    "169.254.1.1",
                    443,
                    NoName,
                    if mode == "allowlist" {
                        NO_MATCH
                    } else {
                        staged("new-meta")
                    },
                ),
                (
                    IP,
                    25,
                    Sni("api.github.com"),
                    if mode == "allowlist" {
                        NO_MATCH
                    } else {
                        staged("new-smtp")
                    },
                ),
                // Evaluation goes on: an allow rule still decides what no staged rule matches.
                (IP, 443, Sni("api.github.com"), allowed("gh")),
                (IP, 443, Sni("gitlab.com"), unmatched),
                // Malformed input is denied, staged rule or not.
                ("169.254.1.1", 80, Garbled, MALFORMED),
                (IP, 25, Huge, TOO_LARGE),
            ],
        );
    }
    let policy = Policy::from_json(
        br#"{"mode": "passthrough",
             "deny": [{"name": "s", "hosts": ["x.example"], "enforce": false},
                      {"name": "d", "cidrs": ["10.0.0.0/8"]}]}"#,
    )
    .unwrap();
    assert!(policy.has_staged());
    assert!(policy.rules()[0].kind == RuleKind::Deny && !policy.rules()[0].enforce);
    assert!(policy.rules()[1].enforce);
    // Only enforced deny CIDRs make an IP literal name worth a look.
    assert!(policy.has_deny_cidrs());
    assert_eq!(policy.summary().staged_rules, 1);
    assert_eq!(
        policy.summary().to_string(),
        "mode=passthrough rules=2 (allow 0, deny 2, staged 1, from presets 0) hosts=1 cidrs=1 presets=0"
    );
    let staged_cidrs =
        Policy::from_json(br#"{"deny": [{"cidrs": ["10.0.0.0/8"], "enforce": false}]}"#).unwrap();
    assert!(!staged_cidrs.has_deny_cidrs());
    // The name decides a staged host rule: nothing is settled at open on its port.
    assert_eq!(policy.decide_early(IP.parse().unwrap(), 443), None);
    assert_eq!(
        policy.decide_early("10.1.2.3".parse().unwrap(), 443),
        Some(Decision::new(Verdict::Deny, Reason::DenyRule, Some(1)))
    );
}

#[test]
fn deny_presets_deny_by_address_and_by_name_before_any_allow_rule() {
    for (mode, unmatched) in [
        ("allowlist", NO_MATCH),
        ("audit", AUDIT),
        ("passthrough", PASS),
    ] {
        let json = format!(
            r#"{{"mode": "{mode}", "deny_presets": ["cloud-metadata"],
                "deny": [{{"name": "own", "cidrs": ["169.254.169.254"], "ports": [80]}}],
                "allow": [{{"name": "all", "hosts": ["*"]}}, {{"name": "all-ip", "cidrs": ["0.0.0.0/0", "::/0"]}}]}}"#
        );
        let meta = deny("preset-cloud-metadata");
        let ok = |rule| {
            if mode == "passthrough" {
                PASS
            } else {
                allow(rule)
            }
        };
        check(
            &json,
            &[
                // An explicit deny rule comes first.
                ("169.254.169.254", 80, NoName, deny("own")),
                ("169.254.169.254", 443, NoName, meta),
                ("169.254.169.254", 8080, Sni("fine.example"), meta),
                ("::ffff:169.254.169.254", 22, NoName, meta),
                ("fd00:ec2::254", 80, NoName, meta),
                ("169.254.170.2", 80, NoName, meta),
                ("169.254.170.23", 80, NoName, meta),
                ("fd00:ec2::23", 80, NoName, meta),
                ("fd20:ce::254", 80, NoName, meta),
                ("100.100.100.200", 80, NoName, meta),
                ("192.0.0.192", 80, NoName, meta),
                (IP, 80, Host("metadata.google.internal"), meta),
                (IP, 80, Host("Metadata.Google.Internal."), meta),
                (IP, 443, Sni("metadata.goog"), meta),
                // Neighbours are not metadata.
                ("169.254.169.253", 80, NoName, ok("all-ip")),
                ("169.254.170.3", 80, NoName, ok("all-ip")),
                ("100.100.100.201", 80, NoName, ok("all-ip")),
                (
                    IP,
                    80,
                    Host("metadata.google.internal.evil.example"),
                    ok("all"),
                ),
                (IP, 80, Host("x.metadata.goog"), ok("all")),
                (IP, 443, Huge, TOO_LARGE),
            ],
        );
        check(
            &format!(r#"{{"mode": "{mode}", "deny_presets": ["cloud-metadata"]}}"#),
            &[
                ("169.254.169.254", 80, NoName, meta),
                (IP, 80, NoName, unmatched),
            ],
        );
    }
    let policy = Policy::from_json(
        br#"{"deny_presets": ["cloud-metadata"], "deny": [{"ports": [25]}], "presets": ["pypi"],
             "allow": [{"ports": [443]}]}"#,
    )
    .unwrap();
    let rules: Vec<_> = policy
        .rules()
        .iter()
        .map(|r| (r.name.as_str(), r.kind, r.preset))
        .collect();
    assert_eq!(
        rules,
        [
            ("deny-0", RuleKind::Deny, None),
            (
                "preset-cloud-metadata",
                RuleKind::Deny,
                Some("cloud-metadata")
            ),
            ("allow-0", RuleKind::Allow, None),
            ("preset-pypi", RuleKind::Allow, Some("pypi")),
        ]
    );
    assert_eq!(policy.deny_presets(), [DenyPreset::CloudMetadata]);
    assert!(policy.has_deny_cidrs());
    assert_eq!(
        policy.summary().to_string(),
        "mode=allowlist rules=4 (allow 1, deny 1, from presets 2) hosts=4 cidrs=8 presets=2"
    );
    // Settled at open by IP, before any byte.
    assert_eq!(
        policy.decide_early("169.254.170.2".parse().unwrap(), 80),
        Some(Decision::new(Verdict::Deny, Reason::DenyRule, Some(1)))
    );
}

#[test]
fn log_level_and_fingerprint() {
    let policy = Policy::from_json(b"{}").unwrap();
    assert_eq!(policy.log_level(), Severity::Warn);
    assert_eq!(
        policy.fingerprint(),
        Fingerprint::of(b" {\n} "),
        "the policy keeps the fingerprint of its JSON"
    );
    assert!(policy.fingerprint().is_some());
    let info = Policy::from_json(br#"{"log_level": "info", "log": "all"}"#).unwrap();
    assert_eq!(info.log_level(), Severity::Info);
    assert_ne!(info.fingerprint(), policy.fingerprint());
    // Compiled from a configuration built in code: no JSON, no fingerprint.
    assert_eq!(
        Policy::compile(&Config::default()).unwrap().fingerprint(),
        None
    );
    assert_eq!(Severity::Info.to_string(), "info");
}

#[test]
fn audit_and_passthrough() {
    let rules = r#""allow": [{"name": "gh", "hosts": ["github.com"], "ports": [443]}]"#;
    check(
        &format!(r#"{{"mode": "audit", {rules}}}"#),
        &[
            (IP, 443, Sni("github.com"), allow("gh")),
            (IP, 443, Sni("gitlab.com"), AUDIT),
            (IP, 80, Sni("github.com"), AUDIT),
            (IP, 80, NoName, AUDIT),
        ],
    );
    check(
        &format!(r#"{{"mode": "passthrough", {rules}}}"#),
        &[
            (IP, 443, Sni("github.com"), PASS),
            (IP, 443, Sni("gitlab.com"), PASS),
            (IP, 80, NoName, PASS),
        ],
    );
}

const PINNED: bool = true;
const UNPINNED: bool = false;

#[test]
fn pinned_names_and_what_is_never_pinned() {
    check_pins(
        r#"{"pin": true, "allow": [
            {"name": "api", "hosts": ["api.example.com", "*.cdn.example"], "ports": [443, 8443]},
            {"name": "mixed", "hosts": ["mixed.example"], "cidrs": ["10.0.0.0/8"]},
            {"name": "db", "cidrs": ["10.9.0.0/16"], "ports": [5432]},
            {"name": "ssh", "ports": [22]}
        ], "deny": [{"name": "evil", "hosts": ["evil.cdn.example"]}]}"#,
        &[
            // Allowed by a host pattern, whatever the IP: pinned.
            (IP, 443, Sni("api.example.com"), allow("api"), PINNED),
            (IP, 8443, Host("API.example.com:8443"), allow("api"), PINNED),
            (IP, 443, Sni("a.cdn.example"), allow("api"), PINNED),
            (IP, 443, Sni("mixed.example"), allow("mixed"), PINNED),
            // The address alone is allowed (the rule's own CIDR, another rule's CIDR or port):
            // the name adds nothing, the client's IP stays.
            (
                "10.1.2.3",
                443,
                Sni("mixed.example"),
                allow("mixed"),
                UNPINNED,
            ),
            (
                "10.1.2.3",
                443,
                Sni("api.example.com"),
                allow("api"),
                UNPINNED,
            ),
            (
                "10.9.0.1",
                5432,
                Sni("mixed.example"),
                allow("mixed"),
                UNPINNED,
            ),
            (IP, 22, Sni("api.example.com"), allow("ssh"), UNPINNED),
            // No name, an IP literal, no match, a deny, malformed input: never pinned.
            (IP, 443, NoName, NO_MATCH, UNPINNED),
            ("10.9.0.1", 5432, NoName, allow("mixed"), UNPINNED),
            (IP, 5432, Sni("api.example.com"), NO_MATCH, UNPINNED),
            (IP, 443, Host("192.0.2.1"), NO_MATCH, UNPINNED),
            ("10.1.2.3", 443, Host("10.1.2.3"), allow("mixed"), UNPINNED),
            (IP, 80, Sni("mixed.example"), allow("mixed"), PINNED),
            (IP, 81, Sni("other.example"), NO_MATCH, UNPINNED),
            (IP, 443, Sni("evil.cdn.example"), deny("evil"), UNPINNED),
            (IP, 443, Garbled, MALFORMED, UNPINNED),
            (IP, 443, Huge, TOO_LARGE, UNPINNED),
        ],
    );
}

#[test]
fn pin_is_off_by_default_and_rules_override_it() {
    let rules = r#""allow": [
        {"name": "on", "hosts": ["on.example"], "pin": true},
        {"name": "off", "hosts": ["off.example", "*.example"], "pin": false},
        {"name": "policy", "hosts": ["policy.example", "on.example"]}
    ], "presets": ["pypi"]"#;
    check_pins(
        &format!("{{{rules}}}"),
        &[
            (IP, 443, Sni("on.example"), allow("on"), PINNED),
            (IP, 443, Sni("off.example"), allow("off"), UNPINNED),
            (IP, 443, Sni("policy.example"), allow("off"), UNPINNED),
            (IP, 443, Sni("pypi.org"), allow("preset-pypi"), UNPINNED),
        ],
    );
    check_pins(
        &format!(r#"{{"pin": true, {rules}}}"#),
        &[
            (IP, 443, Sni("on.example"), allow("on"), PINNED),
            // The first matching rule says: "off" comes before "policy".
            (IP, 443, Sni("off.example"), allow("off"), UNPINNED),
            (IP, 443, Sni("policy.example"), allow("off"), UNPINNED),
            (IP, 443, Sni("policy.other"), NO_MATCH, UNPINNED),
            // Preset rules follow the policy's pin.
            (IP, 443, Sni("pypi.org"), allow("preset-pypi"), PINNED),
        ],
    );
    let policy = Policy::from_json(format!(r#"{{"pin": true, {rules}}}"#).as_bytes()).unwrap();
    let pins: Vec<_> = policy
        .rules()
        .iter()
        .map(|r| (r.name.as_str(), r.pin))
        .collect();
    assert_eq!(
        pins,
        [
            ("on", true),
            ("off", false),
            ("policy", true),
            ("preset-pypi", true)
        ]
    );
    assert!(policy.pinning());
    assert_eq!(policy.pin_cluster(), "egress_guard_pinned");
    assert_eq!(policy.summary().pinned_rules, 3);
    let off = Policy::from_json(br#"{"allow": [{"hosts": ["a.example"], "pin": false}]}"#).unwrap();
    assert!(!off.pinning());
    assert!(!off.summary().to_string().contains("pinned"));
}

#[test]
fn pinning_in_audit_and_passthrough() {
    let rules = r#""pin": true, "allow": [
        {"name": "api", "hosts": ["api.example.com"], "ports": [443]},
        {"name": "free", "hosts": ["free.example.com"], "ports": [443], "pin": false},
        {"name": "db", "cidrs": ["10.0.0.0/8"]}
    ], "deny": [{"name": "bad", "hosts": ["bad.example.com"], "ports": [443]}]"#;
    // Audit: what a rule allows by name is pinned; a would-deny is not.
    check_pins(
        &format!(r#"{{"mode": "audit", {rules}}}"#),
        &[
            (IP, 443, Sni("api.example.com"), allow("api"), PINNED),
            (IP, 443, Sni("other.example"), AUDIT, UNPINNED),
            (IP, 443, NoName, AUDIT, UNPINNED),
            (
                "10.0.0.1",
                443,
                Sni("api.example.com"),
                allow("api"),
                UNPINNED,
            ),
        ],
    );
    // Passthrough: everything passes, and the allow rules say what is pinned (the rule is
    // reported for a pinned connection only).
    let passthrough = Want(Verdict::Allow, Reason::Passthrough, Some("api"));
    check_pins(
        &format!(r#"{{"mode": "passthrough", {rules}}}"#),
        &[
            (IP, 443, Sni("api.example.com"), passthrough, PINNED),
            (IP, 443, Sni("free.example.com"), PASS, UNPINNED),
            (IP, 443, Sni("other.example"), PASS, UNPINNED),
            (IP, 80, Sni("api.example.com"), PASS, UNPINNED),
            (IP, 443, NoName, PASS, UNPINNED),
            ("10.0.0.1", 443, Sni("api.example.com"), PASS, UNPINNED),
            (IP, 443, Sni("bad.example.com"), deny("bad"), UNPINNED),
            (IP, 443, Garbled, MALFORMED, UNPINNED),
        ],
    );
    // Passthrough without pinning still leaves the allow rules out: decided at open.
    let policy = Policy::from_json(
        br#"{"mode": "passthrough", "allow": [{"hosts": ["api.example.com"], "ports": [443]}]}"#,
    )
    .unwrap();
    let ip: IpAddr = IP.parse().unwrap();
    assert_eq!(
        policy.decide_early(ip, 443),
        Some(Decision::new(Verdict::Allow, Reason::Passthrough, None))
    );
    // With pinning the name matters where a pinning host rule applies.
    let policy =
        Policy::from_json(format!(r#"{{"mode": "passthrough", {rules}}}"#).as_bytes()).unwrap();
    let pass = Some(Decision::new(Verdict::Allow, Reason::Passthrough, None));
    assert_eq!(policy.decide_early(ip, 443), None);
    assert_eq!(policy.decide_early(ip, 80), pass);
    assert_eq!(policy.decide_early("10.0.0.1".parse().unwrap(), 80), pass);
}

#[test]
fn decide_early_is_never_pinned() {
    let policy = Policy::from_json(
        br#"{"pin": true, "allow": [
            {"name": "api", "hosts": ["api.example.com"], "ports": [443]},
            {"name": "db", "cidrs": ["10.0.0.0/8"]}
        ]}"#,
    )
    .unwrap();
    let early = |ip: &str, port| policy.decide_early(ip.parse().unwrap(), port);
    assert_eq!(early(IP, 443), None);
    assert_eq!(early("10.0.0.1", 443), None, "api comes before db");
    assert_eq!(
        early("10.0.0.1", 80),
        Some(Decision::new(Verdict::Allow, Reason::Rule, Some(1)))
    );
    assert_eq!(
        early(IP, 80),
        Some(Decision::new(Verdict::Deny, Reason::NoMatch, None))
    );
}

#[test]
fn presets_match() {
    check(
        r#"{"presets": ["pypi", "github", "ubuntu-apt"]}"#,
        &[
            (IP, 443, Sni("pypi.org"), allow("preset-pypi")),
            (IP, 443, Sni("files.pythonhosted.org"), allow("preset-pypi")),
            (IP, 80, Host("pypi.org"), NO_MATCH),
            (IP, 443, Sni("github.com"), allow("preset-github")),
            (
                IP,
                443,
                Sni("objects.githubusercontent.com"),
                allow("preset-github"),
            ),
            (IP, 443, Sni("codeload.github.com"), allow("preset-github")),
            (IP, 22, NoName, NO_MATCH),
            (
                IP,
                80,
                Host("de.archive.ubuntu.com"),
                allow("preset-ubuntu-apt"),
            ),
            (
                IP,
                443,
                Sni("archive.ubuntu.com"),
                allow("preset-ubuntu-apt"),
            ),
            (IP, 443, Sni("npmjs.org"), NO_MATCH),
        ],
    );
}

#[test]
fn rule_order() {
    // The first explicit allow rule wins; explicit rules come before presets.
    check(
        r#"{"allow": [
            {"name": "wide", "hosts": ["*.x.example"]},
            {"name": "narrow", "hosts": ["api.x.example"]},
            {"name": "mine", "hosts": ["pypi.org"]}
        ], "presets": ["pypi"]}"#,
        &[
            (IP, 443, Sni("api.x.example"), allow("wide")),
            (IP, 443, Sni("pypi.org"), allow("mine")),
            (IP, 443, Sni("files.pythonhosted.org"), allow("preset-pypi")),
        ],
    );
    // Presets in the order listed.
    check(
        r#"{"allow": [{"name": "late", "hosts": ["other.example"]}], "presets": ["github", "pypi"]}"#,
        &[(IP, 443, Sni("github.com"), allow("preset-github"))],
    );
    // The first matching deny rule is reported, whatever matched it.
    check(
        r#"{"deny": [{"name": "d1", "cidrs": ["10.0.0.0/8"]}, {"name": "d2", "hosts": ["a.example"]}]}"#,
        &[
            ("10.0.0.1", 443, Sni("a.example"), deny("d1")),
            ("11.0.0.1", 443, Sni("a.example"), deny("d2")),
        ],
    );
    check(
        r#"{"deny": [{"name": "d2", "hosts": ["a.example"]}, {"name": "d1", "cidrs": ["10.0.0.0/8"]}]}"#,
        &[
            ("10.0.0.1", 443, Sni("a.example"), deny("d2")),
            ("10.0.0.1", 443, Sni("b.example"), deny("d1")),
        ],
    );
    // A later rule matching on an earlier rule's port only where the earlier does not.
    check(
        r#"{"allow": [{"name": "p443", "hosts": ["a.example"], "ports": [443]}, {"name": "any", "hosts": ["a.example"]}]}"#,
        &[
            (IP, 443, Sni("a.example"), allow("p443")),
            (IP, 80, Sni("a.example"), allow("any")),
        ],
    );
}

#[test]
fn nested_cidrs_with_ports() {
    check(
        r#"{"allow": [
            {"name": "db", "cidrs": ["10.1.0.0/16"], "ports": ["5432-5433"]},
            {"name": "net", "cidrs": ["10.0.0.0/8"], "ports": [443]},
            {"name": "host", "cidrs": ["10.1.2.3"], "ports": [22]}
        ]}"#,
        &[
            ("10.1.2.3", 5432, NoName, allow("db")),
            ("10.1.2.3", 443, NoName, allow("net")),
            ("10.1.2.3", 22, NoName, allow("host")),
            ("10.1.2.4", 22, NoName, NO_MATCH),
            ("10.2.0.1", 5432, NoName, NO_MATCH),
            ("10.2.0.1", 443, NoName, allow("net")),
        ],
    );
}

#[test]
fn decide_early_settles_what_it_can() {
    let policy = Policy::from_json(
        br#"{"allow": [
                {"name": "gh", "hosts": ["github.com"], "ports": [443]},
                {"name": "db", "cidrs": ["10.0.0.0/8"], "ports": [5432]}
            ],
            "deny": [{"name": "metadata", "cidrs": ["169.254.169.254"]}]}"#,
    )
    .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let early = |s, port| policy.decide_early(ip(s), port);
    let d = |verdict, reason, rule| Some(Decision::new(verdict, reason, rule));
    assert_eq!(
        early("169.254.169.254", 443),
        d(Verdict::Deny, Reason::DenyRule, Some(0))
    );
    assert_eq!(
        early("169.254.169.254", 80),
        d(Verdict::Deny, Reason::DenyRule, Some(0))
    );
    // A host rule applies to 443: the name decides.
    assert_eq!(early(IP, 443), None);
    assert_eq!(early("10.0.0.1", 443), None);
    // No host rule applies to these ports.
    assert_eq!(
        early("10.0.0.1", 5432),
        d(Verdict::Allow, Reason::Rule, Some(2))
    );
    assert_eq!(early(IP, 5432), d(Verdict::Deny, Reason::NoMatch, None));
    assert_eq!(early(IP, 3306), d(Verdict::Deny, Reason::NoMatch, None));

    // Passthrough: allow host rules cannot matter, deny host rules do.
    let policy = Policy::from_json(
        br#"{"mode": "passthrough",
            "allow": [{"hosts": ["github.com"], "ports": [443]}],
            "deny": [{"hosts": ["evil.example"], "ports": [80]}, {"cidrs": ["10.0.0.0/8"]}]}"#,
    )
    .unwrap();
    let early = |s, port| policy.decide_early(ip(s), port);
    assert_eq!(early(IP, 443), d(Verdict::Allow, Reason::Passthrough, None));
    assert_eq!(early(IP, 80), None);
    // deny-0 (hosts) comes before deny-1 (cidr) on port 80: it could be the one reported.
    assert_eq!(early("10.0.0.1", 80), None);
    assert_eq!(
        early("10.0.0.1", 81),
        d(Verdict::Deny, Reason::DenyRule, Some(1))
    );
}

#[test]
fn defaults() {
    let config = Config::from_json(b"{}").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.mode, Mode::Allowlist);
    assert!(config.allow.is_empty() && config.deny.is_empty() && config.presets.is_empty());
    assert_eq!(
        config.sniff,
        SniffConfig {
            max_bytes: 16384,
            timeout_ms: 3000,
            hold_upstream: false
        }
    );
    assert_eq!(config.log, LogLevel::Denied);
    let policy = Policy::compile(&config).unwrap();
    assert_eq!(policy.mode(), Mode::Allowlist);
    assert_eq!(policy.log(), LogLevel::Denied);
    assert_eq!(policy.sniff(), &config.sniff);
    assert!(policy.rules().is_empty());
    check(
        "{}",
        &[
            (IP, 443, Sni("github.com"), NO_MATCH),
            (IP, 443, NoName, NO_MATCH),
            ("::1", 1, NoName, NO_MATCH),
            (IP, 443, Garbled, MALFORMED),
        ],
    );
    assert_eq!(
        policy.decide_early(IP.parse().unwrap(), 443),
        Some(Decision::new(Verdict::Deny, Reason::NoMatch, None))
    );
}

#[test]
fn rules_names_and_summary() {
    let config = Config::from_json(
        br#"{"allow": [{"hosts": ["a.example", "*.b.example"]}, {"name": "db", "cidrs": ["10.0.0.0/8"]}],
             "deny": [{"cidrs": ["169.254.169.254", "fd00:ec2::254"]}],
             "presets": ["pypi"], "log": "all", "sniff": {"hold_upstream": true}}"#,
    )
    .unwrap();
    assert_eq!(config.allow[0].name, "allow-0");
    assert_eq!(config.deny[0].name, "deny-0");
    let policy = Policy::compile(&config).unwrap();
    let rules: Vec<_> = policy
        .rules()
        .iter()
        .map(|r| (r.name.as_str(), r.kind, r.preset))
        .collect();
    assert_eq!(
        rules,
        [
            ("deny-0", RuleKind::Deny, None),
            ("allow-0", RuleKind::Allow, None),
            ("db", RuleKind::Allow, None),
            ("preset-pypi", RuleKind::Allow, Some("pypi")),
        ]
    );
    assert_eq!(policy.rule(3).unwrap().name, "preset-pypi");
    assert_eq!(policy.rule(4), None);
    assert_eq!(policy.presets(), [Preset::Pypi]);
    assert_eq!(policy.log(), LogLevel::All);
    assert!(policy.sniff().hold_upstream);
    assert_eq!(
        policy.summary().to_string(),
        "mode=allowlist rules=4 (allow 2, deny 1, from presets 1) hosts=4 cidrs=3 presets=1"
    );
    // Rules built in code get default names at compile time too.
    let mut config = config;
    config.allow[0].name.clear();
    assert_eq!(Policy::compile(&config).unwrap().rules()[1].name, "allow-0");
}

#[test]
fn labels() {
    assert_eq!(
        [Verdict::Allow, Verdict::Deny, Verdict::AuditDeny].map(Verdict::as_str),
        ["allow", "deny", "audit_deny"]
    );
    assert_eq!(
        [
            Reason::Rule,
            Reason::DenyRule,
            Reason::NoMatch,
            Reason::Passthrough,
            Reason::Malformed,
            Reason::TooLarge,
            Reason::StagedDeny
        ]
        .map(Reason::as_str),
        [
            "rule",
            "deny_rule",
            "no_match",
            "passthrough",
            "malformed",
            "too_large",
            "staged_deny"
        ]
    );
    assert!(Verdict::AuditDeny.passes() && Verdict::Allow.passes() && !Verdict::Deny.passes());
    assert_eq!(Mode::Passthrough.to_string(), "passthrough");
    assert_eq!(LogLevel::None.as_str(), "none");
    assert_eq!(RuleKind::Deny.as_str(), "deny");
    assert_eq!(
        RuleClass::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["allow", "preset", "deny", "staged_deny", "deny_preset"]
    );
    let policy = Policy::from_json(
        br#"{"allow": [{"ports": [1]}], "presets": ["pypi"], "deny_presets": ["cloud-metadata"],
             "deny": [{"ports": [2]}, {"ports": [3], "enforce": false}]}"#,
    )
    .unwrap();
    assert_eq!(
        policy
            .rules()
            .iter()
            .map(|r| r.class().as_str())
            .collect::<Vec<_>>(),
        ["deny", "staged_deny", "deny_preset", "allow", "preset"]
    );
}

#[test]
fn policy_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Policy>();
    shared::<Config>();
}

fn error(json: &str) -> ConfigError {
    match Config::from_json(json.as_bytes()) {
        Ok(config) => panic!("accepted {json}: {config:?}"),
        Err(e) => {
            // Compiling gives the same error.
            assert_eq!(Policy::from_json(json.as_bytes()).err(), Some(e.clone()));
            e
        }
    }
}

#[test]
fn config_errors() {
    let long = "a".repeat(65);
    let long_name = format!(r#"{{"allow": [{{"name": "{long}", "ports": [1]}}]}}"#);
    let cases: &[(&str, &str)] = &[
        (
            r#"{"modez": "audit"}"#,
            "modez: unknown field `modez`, expected one of `mode`, `allow`, `deny`, `presets`, `deny_presets`, `sniff`, `log`, `log_level`, `pin`, `pin_cluster`, `ech`",
        ),
        (
            r#"{"allow": [{"hostz": ["a.example"]}]}"#,
            "allow[0].hostz: unknown field `hostz`, expected one of `name`, `hosts`, `cidrs`, `ports`, `pin`, `enforce`",
        ),
        (
            r#"{"allow": [{"ports": [1]}, {"hosts": ["a.example"], "enforce": false}]}"#,
            r#"allow[1].enforce: only a deny rule can be staged ("enforce": false); remove the key"#,
        ),
        (
            r#"{"deny": [{"ports": [1], "enforce": "no"}]}"#,
            r#"deny[0].enforce: invalid type: string "no", expected a boolean"#,
        ),
        (
            r#"{"sniff": {"max_byte": 1024}}"#,
            "sniff.max_byte: unknown field `max_byte`, expected one of `max_bytes`, `timeout_ms`, `hold_upstream`",
        ),
        (
            r#"{"deny": [{"cidrs": ["10.0.0.0/8"]}, {"hosts": ["a.example"], "pin": false}]}"#,
            "deny[1].pin: pin applies to allow rules only: a deny rule has nothing to pin",
        ),
        (
            r#"{"allow": [{"hosts": ["a.example"], "pin": null}]}"#,
            "allow[0].pin: invalid type: null, expected a boolean",
        ),
        (
            r#"{"allow": [{"hosts": ["a.example"], "pin": "yes"}]}"#,
            r#"allow[0].pin: invalid type: string "yes", expected a boolean"#,
        ),
        (
            r#"{"pin": 1}"#,
            "pin: invalid type: integer `1`, expected a boolean",
        ),
        (
            r#"{"pin_cluster": ""}"#,
            r#"pin_cluster: "" is not a cluster name: use 1-255 visible ASCII characters (no spaces)"#,
        ),
        (
            r#"{"pin_cluster": "my cluster"}"#,
            r#"pin_cluster: "my cluster" is not a cluster name: use 1-255 visible ASCII characters (no spaces)"#,
        ),
        (
            r#"{"pin_cluster": 7}"#,
            "pin_cluster: invalid type: integer `7`, expected a string",
        ),
        (
            r#"{"mode": "block"}"#,
            "mode: unknown variant `block`, expected one of `allowlist`, `audit`, `passthrough`",
        ),
        (
            r#"{"ech": "block"}"#,
            "ech: unknown variant `block`, expected `allow` or `deny`",
        ),
        (
            r#"{"ech": false}"#,
            r#"ech: invalid type: boolean `false`, expected "allow" or "deny""#,
        ),
        (
            r#"{"log": "everything"}"#,
            "log: unknown variant `everything`, expected one of `none`, `denied`, `all`",
        ),
        (
            r#"{"log_level": "error"}"#,
            "log_level: unknown variant `error`, expected `warn` or `info`",
        ),
        (
            r#"{"log_level": 3}"#,
            "log_level: invalid type: integer `3`, expected a log level string (warn or info)",
        ),
        (
            r#"{"allow": [{"ports": [1]}, {"ports": [2]}, {"cidrs": ["10.0.0.0/8", "10.0.0.300/8"]}]}"#,
            r#"allow[2].cidrs[1]: "10.0.0.300/8" is not a CIDR"#,
        ),
        (
            r#"{"deny": [{"cidrs": ["10.0.0.1/8"]}]}"#,
            r#"deny[0].cidrs[0]: "10.0.0.1/8" has host bits set: write "10.0.0.0/8" for the network, or "10.0.0.1/32" for the single address"#,
        ),
        (
            r#"{"deny": [{"cidrs": ["::ffff:169.254.169.254"]}]}"#,
            r#"deny[0].cidrs[0]: "::ffff:169.254.169.254" is an IPv4-mapped IPv6 network: write "169.254.169.254/32" (such destinations are matched as IPv4)"#,
        ),
        (
            r#"{"allow": [{"cidrs": [10]}]}"#,
            "allow[0].cidrs[0]: invalid type: integer `10`, expected a CIDR or IP address string",
        ),
        (
            r#"{"allow": [{"ports": [0]}]}"#,
            "allow[0].ports[0]: 0 is not a port (1-65535)",
        ),
        (
            r#"{"allow": [{"ports": [443, 70000]}]}"#,
            "allow[0].ports[1]: 70000 is not a port (1-65535)",
        ),
        (
            r#"{"allow": [{"ports": [-1]}]}"#,
            "allow[0].ports[0]: -1 is not a port (1-65535)",
        ),
        (
            r#"{"allow": [{"ports": ["9-3"]}]}"#,
            r#"allow[0].ports[0]: "9-3" is not a port range: 9 is greater than 3"#,
        ),
        (
            r#"{"allow": [{"ports": ["abc"]}]}"#,
            r#"allow[0].ports[0]: "abc" is not a port or a port range "lo-hi""#,
        ),
        (
            r#"{"allow": [{"ports": [44.3]}]}"#,
            r#"allow[0].ports[0]: invalid type: floating point `44.3`, expected a port (1-65535) or a port range "lo-hi""#,
        ),
        (
            r#"{"allow": [{"name": "ok", "ports": [1]}], "deny": [{"ports": [1]}, {"name": "empty"}]}"#,
            "deny[1]: a rule needs at least one of hosts, cidrs, ports",
        ),
        (
            r#"{"allow": [{}]}"#,
            "allow[0]: a rule needs at least one of hosts, cidrs, ports",
        ),
        (
            r#"{"allow": [{"hosts": [], "ports": [1]}]}"#,
            "allow[0].hosts: an empty list is not allowed: omit the key",
        ),
        (
            r#"{"allow": [{"cidrs": []}]}"#,
            "allow[0].cidrs: an empty list is not allowed: omit the key",
        ),
        (
            r#"{"allow": [{"ports": []}]}"#,
            "allow[0].ports: an empty list is not allowed: omit the key",
        ),
        (
            r#"{"allow": [{"hosts": ["bücher.example"]}]}"#,
            r#"allow[0].hosts[0]: "bücher.example" is not ASCII: write the punycode (xn--) form"#,
        ),
        (
            r#"{"allow": [{"hosts": ["ok.example", "10.0.0.1"]}]}"#,
            r#"allow[0].hosts[1]: "10.0.0.1" is an IP address, not a host name: use cidrs"#,
        ),
        (
            r#"{"allow": [{"hosts": ["2001:db8::1"]}]}"#,
            r#"allow[0].hosts[0]: "2001:db8::1" is an IP address, not a host name: use cidrs"#,
        ),
        (
            r#"{"allow": [{"hosts": [""]}]}"#,
            r#"allow[0].hosts[0]: "" is not a host pattern: it is empty"#,
        ),
        (
            r#"{"allow": [{"hosts": ["https://github.com"]}]}"#,
            r#"allow[0].hosts[0]: "https://github.com" is not a host pattern: ':' cannot appear in a host name"#,
        ),
        (
            r#"{"allow": [{"hosts": ["api-[a.example"]}]}"#,
            r#"allow[0].hosts[0]: "api-[a.example" is not a valid glob: unclosed character class; missing ']'"#,
        ),
        (
            r#"{"allow": [{"hosts": ["{a,b.example"]}]}"#,
            r#"allow[0].hosts[0]: "{a,b.example" is not a valid glob: unclosed alternate group; missing '}'"#,
        ),
        (
            r#"{"allow": [{"hosts": ["{,www.}example.com"]}]}"#,
            r#"allow[0].hosts[0]: "{,www.}example.com" is not a valid glob: empty alternative in '{...}': write each alternative in full, e.g. {example.com,www.example.com}"#,
        ),
        (
            r#"{"allow": [{"hosts": ["api-*.example.com/v1"]}]}"#,
            r#"allow[0].hosts[0]: "api-*.example.com/v1" is not a host pattern: '/' cannot appear in a host name"#,
        ),
        (
            r#"{"allow": [{"hosts": ["a..example"]}]}"#,
            r#"allow[0].hosts[0]: "a..example" is not a host name: a label is empty or longer than 63 bytes"#,
        ),
        (
            r#"{"allow": [{"hosts": "github.com"}]}"#,
            r#"allow[0].hosts: invalid type: string "github.com", expected a sequence"#,
        ),
        (
            r#"{"allow": [{"name": "github", "ports": [1]}, {"ports": [2]}, {"ports": [3]}, {"name": "github", "ports": [4]}]}"#,
            r#"allow[3].name: "github" is already used by allow[0]"#,
        ),
        (
            r#"{"allow": [{"name": "x", "ports": [1]}], "deny": [{"name": "x", "ports": [4]}]}"#,
            r#"deny[0].name: "x" is already used by allow[0]"#,
        ),
        (
            r#"{"allow": [{"name": "allow-1", "ports": [1]}, {"ports": [2]}]}"#,
            r#"allow[1]: the default name "allow-1" is already used by allow[0]; name this rule"#,
        ),
        (
            r#"{"allow": [{"name": "preset-pypi", "ports": [1]}], "presets": ["npm", "pypi"]}"#,
            r#"presets[1]: the preset's rule name "preset-pypi" is already used by allow[0]; rename that rule"#,
        ),
        (
            r#"{"allow": [{"name": "GitHub", "ports": [1]}]}"#,
            r#"allow[0].name: "GitHub" is not a valid rule name: use 1-64 characters from a-z, 0-9, "-" and "_""#,
        ),
        (
            r#"{"allow": [{"name": "git hub", "ports": [1]}]}"#,
            r#"allow[0].name: "git hub" is not a valid rule name: use 1-64 characters from a-z, 0-9, "-" and "_""#,
        ),
        (
            r#"{"allow": [{"name": "", "ports": [1]}]}"#,
            r#"allow[0].name: "" is not a valid rule name: use 1-64 characters from a-z, 0-9, "-" and "_""#,
        ),
        (
            &long_name,
            &format!(r#"allow[0].name: "{long}" is too long for a rule name (65 characters, at most 64)"#),
        ),
        (
            r#"{"presets": ["pypi", "rubygems"]}"#,
            "presets[1]: unknown variant `rubygems`, expected one of `debian-apt`, `ubuntu-apt`, `pypi`, `github`, `npm`, `crates-io`, `go-proxy`, `docker-hub`, `maven-central`, `alpine`",
        ),
        (
            r#"{"presets": ["pypi", "npm", "pypi"]}"#,
            r#"presets[2]: "pypi" is already listed at presets[0]"#,
        ),
        (
            r#"{"deny_presets": ["cloud-metadata", "cloud-metadata"]}"#,
            r#"deny_presets[1]: "cloud-metadata" is already listed at deny_presets[0]"#,
        ),
        (
            r#"{"deny_presets": ["pypi"]}"#,
            "deny_presets[0]: unknown variant `pypi`, expected `cloud-metadata`",
        ),
        (
            r#"{"presets": ["cloud-metadata"]}"#,
            "presets[0]: unknown variant `cloud-metadata`, expected one of `debian-apt`, `ubuntu-apt`, `pypi`, `github`, `npm`, `crates-io`, `go-proxy`, `docker-hub`, `maven-central`, `alpine`",
        ),
        (
            r#"{"deny_presets": "cloud-metadata"}"#,
            r#"deny_presets: invalid type: string "cloud-metadata", expected a sequence"#,
        ),
        (
            r#"{"deny": [{"name": "preset-cloud-metadata", "ports": [1]}], "deny_presets": ["cloud-metadata"]}"#,
            r#"deny_presets[0]: the preset's rule name "preset-cloud-metadata" is already used by deny[0]; rename that rule"#,
        ),
        (
            r#"{"sniff": {"max_bytes": 100}}"#,
            "sniff.max_bytes: 100 is out of range 512-65536",
        ),
        (
            r#"{"sniff": {"max_bytes": 65537}}"#,
            "sniff.max_bytes: 65537 is out of range 512-65536",
        ),
        (
            r#"{"sniff": {"timeout_ms": 0}}"#,
            "sniff.timeout_ms: 0 is out of range 1-60000",
        ),
        (
            r#"{"sniff": {"timeout_ms": 99999999999}}"#,
            "sniff.timeout_ms: 99999999999 is out of range 1-60000",
        ),
        (
            r#"{"sniff": {"hold_upstream": "yes"}}"#,
            r#"sniff.hold_upstream: invalid type: string "yes", expected a boolean"#,
        ),
        ("[]", "invalid type: sequence, expected a JSON object"),
        ("null", "invalid type: null, expected a JSON object"),
        (r#""allowlist""#, r#"invalid type: string "allowlist", expected a JSON object"#),
        (
            r#"{"allow": [["allow-0", ["a.example"]]]}"#,
            "allow[0]: invalid type: sequence, expected a rule object",
        ),
        (r#"{"sniff": [1024]}"#, "sniff: invalid type: sequence, expected a sniff object"),
        (r#"{"mode": "audit", "mode": "audit"}"#, "duplicate field `mode`"),
        ("{} x", "trailing characters at line 1 column 4"),
        ("{}{}", "trailing characters at line 1 column 3"),
        ("", "EOF while parsing a value at line 1 column 0"),
        (r#"{"allow": [{"hosts": ["a.example"],}]}"#, "allow[0]: trailing comma at line 1 column 36"),
    ];
    for (json, want) in cases {
        assert_eq!(error(json).to_string(), *want, "{json}");
    }
    // Kinds and fields.
    let e = error(r#"{"allow": [{"cidrs": ["10.0.0.300/8"]}]}"#);
    assert_eq!(
        (e.path.as_str(), e.kind, e.message.as_str()),
        (
            "allow[0].cidrs[0]",
            ConfigErrorKind::Invalid,
            r#""10.0.0.300/8" is not a CIDR"#
        )
    );
    assert_eq!(error("{} x").kind, ConfigErrorKind::Syntax);
    assert_eq!(error(r#"{"allow": [{}]}"#).kind, ConfigErrorKind::EmptyRule);
    assert_eq!(
        error(r#"{"presets": ["npm", "npm"]}"#).kind,
        ConfigErrorKind::Duplicate
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("allow[0].cidrs[0]: "));
}

/// Found by the `config_structured` fuzz target: `{"mode": 1}` was reported as
/// `mode: expected value at line 1 column 10`, of kind `Syntax`, though the JSON is well-formed
/// and the value is simply of the wrong type.
#[test]
fn enum_values_of_the_wrong_type() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"mode": 1}"#,
            "mode: invalid type: integer `1`, expected a mode string",
        ),
        (
            r#"{"mode": null}"#,
            "mode: invalid type: null, expected a mode string",
        ),
        (
            r#"{"mode": {"audit": null}}"#,
            "mode: invalid type: map, expected a mode string",
        ),
        (
            r#"{"log": true}"#,
            "log: invalid type: boolean `true`, expected a log level string",
        ),
        (
            r#"{"presets": ["pypi", ["npm"]]}"#,
            "presets[1]: invalid type: sequence, expected a preset name string",
        ),
        (
            r#"{"presets": [7]}"#,
            "presets[0]: invalid type: integer `7`, expected a preset name string",
        ),
    ];
    for (json, want) in cases {
        let e = error(json);
        assert_eq!(e.to_string(), *want, "{json}");
        assert_eq!(e.kind, ConfigErrorKind::Invalid, "{json}");
    }
    // Strings still name the variants.
    assert_eq!(
        error(r#"{"log": "All"}"#).to_string(),
        "log: unknown variant `All`, expected one of `none`, `denied`, `all`"
    );
    let config =
        Config::from_json(br#"{"mode": "audit", "log": "all", "presets": ["crates-io"]}"#).unwrap();
    assert_eq!(
        (config.mode, config.log, config.presets.as_slice()),
        (Mode::Audit, LogLevel::All, &[Preset::CratesIo][..])
    );
}

/// Found by the `config` fuzz target: an unknown key or variant holding a line break (`"\n"` in
/// JSON) made an error of several lines, though an error is one line (and goes into Envoy's log).
#[test]
fn errors_stay_on_one_line() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"\nmode": "audit"}"#,
            r#"\nmode: unknown field `\nmode`, expected one of `mode`, `allow`, `deny`, `presets`, `deny_presets`, `sniff`, `log`, `log_level`, `pin`, `pin_cluster`, `ech`"#,
        ),
        (
            r#"{"mode": "audit\r\n{\"decision\":\"allow\"}"}"#,
            r#"mode: unknown variant `audit\r\n{"decision":"allow"}`, expected one of `allowlist`, `audit`, `passthrough`"#,
        ),
        (
            r#"{"allow": [{"hosts\u2028": ["a.example"]}]}"#,
            r#"allow[0].hosts\u{2028}: unknown field `hosts\u{2028}`, expected one of `name`, `hosts`, `cidrs`, `ports`, `pin`, `enforce`"#,
        ),
        (
            r#"{"presets": ["pypi\u0000"]}"#,
            r#"presets[0]: unknown variant `pypi\0`, expected one of `debian-apt`, `ubuntu-apt`, `pypi`, `github`, `npm`, `crates-io`, `go-proxy`, `docker-hub`, `maven-central`, `alpine`"#,
        ),
        (
            r#"{"sniff": {"\tmax_bytes": 1024}}"#,
            r#"sniff.\tmax_bytes: unknown field `\tmax_bytes`, expected one of `max_bytes`, `timeout_ms`, `hold_upstream`"#,
        ),
    ];
    for (json, want) in cases {
        let e = error(json);
        assert_eq!(e.to_string(), *want, "{json}");
        assert!(
            !e.to_string().contains(['\n', '\r', '\u{2028}', '\0']),
            "{json}"
        );
    }
}

#[test]
fn configs_built_in_code_are_validated() {
    let rule = |ports: Vec<PortRange>, cidrs: Vec<ipnet::IpNet>| Rule {
        ports,
        cidrs,
        ..Rule::default()
    };
    let compile = |config: Config| Policy::compile(&config).unwrap_err().to_string();
    let config = Config {
        allow: vec![rule(vec![PortRange { lo: 9, hi: 3 }], vec![])],
        ..Config::default()
    };
    assert_eq!(
        compile(config),
        r#"allow[0].ports[0]: "9-3" is not a port range: 9 is greater than 3"#
    );
    let config = Config {
        deny: vec![rule(vec![], vec!["10.0.0.1/8".parse().unwrap()])],
        ..Config::default()
    };
    assert_eq!(
        compile(config),
        r#"deny[0].cidrs[0]: "10.0.0.1/8" has host bits set: write "10.0.0.0/8" for the network, or "10.0.0.1/32" for the single address"#
    );
    let config = Config {
        deny: vec![rule(vec![], vec![])],
        ..Config::default()
    };
    assert_eq!(
        compile(config),
        "deny[0]: a rule needs at least one of hosts, cidrs, ports"
    );
    let config = Config {
        sniff: SniffConfig {
            max_bytes: 1,
            ..SniffConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(
        compile(config),
        "sniff.max_bytes: 1 is out of range 512-65536"
    );
    let mut named = rule(vec![PortRange { lo: 1, hi: 1 }], vec![]);
    named.name = "Bad".into();
    let config = Config {
        allow: vec![named],
        ..Config::default()
    };
    assert_eq!(
        compile(config),
        r#"allow[0].name: "Bad" is not a valid rule name: use 1-64 characters from a-z, 0-9, "-" and "_""#
    );
}

#[test]
fn scale_100k_host_rules() {
    let mut allow: Vec<Rule> = (0..100_000)
        .map(|i| Rule {
            name: format!("r{i}"),
            hosts: vec![HostPattern::parse(&format!("host{i}.svc{}.example", i % 100)).unwrap()],
            ports: vec![PortRange { lo: 443, hi: 443 }],
            ..Rule::default()
        })
        .collect();
    allow.push(Rule {
        name: "wild".into(),
        hosts: vec![HostPattern::parse("*.svc7.example").unwrap()],
        ..Rule::default()
    });
    let config = Config {
        allow,
        ..Config::default()
    };
    let policy = Policy::compile(&config).unwrap();
    assert_eq!(policy.rules().len(), 100_001);
    assert_eq!(policy.summary().hosts, 100_001);
    for (name, port) in [
        ("host99999.svc99.example", 443),
        ("host7.svc7.example", 443),
        ("host7.svc7.example", 80),
        ("nohost.svc7.example", 443),
        ("host1.svc2.example", 443),
    ] {
        let facts = Facts {
            ip: IP.parse().unwrap(),
            port,
            name: NameFact::Name(name),
        };
        assert_eq!(
            policy.decide(&facts),
            reference::decide(&config, &facts),
            "{name}"
        );
    }
}

#[test]
fn ech_setting() {
    use crate::policy::EchPolicy;
    assert_eq!(Config::default().ech, EchPolicy::Allow);
    let policy = Policy::from_json(br#"{"allow": [{"hosts": ["a.example"]}]}"#).unwrap();
    assert_eq!(policy.ech(), EchPolicy::Allow);
    let policy = Policy::from_json(br#"{"ech": "deny"}"#).unwrap();
    assert_eq!(policy.ech(), EchPolicy::Deny);
    let policy = Policy::from_json(br#"{"ech": "allow"}"#).unwrap();
    assert_eq!(policy.ech(), EchPolicy::Allow);
    assert_eq!(Reason::Ech.as_str(), "ech");
}
