//! Checks on configurations the parser accepted, shared by the `config`, `config_structured` and
//! `decide` targets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_guard::policy::{
    classify_sni, reference, Config, ConfigError, Facts, NameFact, PatternKind, Policy, Reason,
    Rule, RuleKind, Verdict,
};

use crate::json::Json;

/// The configuration written back as JSON, every field explicit.
pub fn to_json(config: &Config) -> Json {
    let rule = |r: &Rule| {
        let mut entries = vec![("name".to_string(), Json::str(r.name.clone()))];
        let list = |items: Vec<String>| Json::Arr(items.into_iter().map(Json::Str).collect());
        if !r.hosts.is_empty() {
            let hosts = r.hosts.iter().map(|h| h.as_str().to_string()).collect();
            entries.push(("hosts".into(), list(hosts)));
        }
        if !r.cidrs.is_empty() {
            entries.push((
                "cidrs".into(),
                list(r.cidrs.iter().map(ToString::to_string).collect()),
            ));
        }
        if !r.ports.is_empty() {
            entries.push((
                "ports".into(),
                list(r.ports.iter().map(ToString::to_string).collect()),
            ));
        }
        if !r.enforce {
            entries.push(("enforce".into(), Json::Bool(false)));
        }
        Json::Obj(entries)
    };
    Json::Obj(vec![
        ("mode".into(), Json::str(config.mode.as_str())),
        (
            "allow".into(),
            Json::Arr(config.allow.iter().map(rule).collect()),
        ),
        (
            "deny".into(),
            Json::Arr(config.deny.iter().map(rule).collect()),
        ),
        (
            "presets".into(),
            Json::Arr(config.presets.iter().map(|p| Json::str(p.name())).collect()),
        ),
        (
            "deny_presets".into(),
            Json::Arr(
                config
                    .deny_presets
                    .iter()
                    .map(|p| Json::str(p.name()))
                    .collect(),
            ),
        ),
        (
            "sniff".into(),
            Json::Obj(vec![
                (
                    "max_bytes".into(),
                    Json::Int(i128::from(config.sniff.max_bytes)),
                ),
                (
                    "timeout_ms".into(),
                    Json::Int(i128::from(config.sniff.timeout_ms)),
                ),
                (
                    "hold_upstream".into(),
                    Json::Bool(config.sniff.hold_upstream),
                ),
            ]),
        ),
        ("log".into(), Json::str(config.log.as_str())),
        ("log_level".into(), Json::str(config.log_level.as_str())),
    ])
}

/// What every configuration error must look like: one line, `path: message` (or the message
/// alone for the whole document), and the same error from `Policy::from_json`.
pub fn check_error(json: &[u8], err: &ConfigError) {
    let text = err.to_string();
    assert!(!err.message.is_empty(), "empty error message: {err:?}");
    assert!(
        !text.contains('\n'),
        "error of more than one line: {text:?}"
    );
    if err.path.is_empty() {
        assert_eq!(text, err.message);
    } else {
        assert_eq!(text, format!("{}: {}", err.path, err.message));
    }
    assert_eq!(Policy::from_json(json).err().as_ref(), Some(err));
}

/// An accepted configuration: validates again, compiles (as `Policy::from_json` does), reads back
/// from its own JSON unchanged, and decides like the reference on facts drawn from its rules.
pub fn check_accepted(json: &[u8], config: &Config) -> Policy {
    config
        .validate()
        .expect("an accepted configuration validates again");
    let policy = match Policy::compile(config) {
        Ok(policy) => policy,
        Err(e) => panic!("accepted but does not compile: {e}"),
    };
    assert!(Policy::from_json(json).is_ok());
    let again = to_json(config).text();
    match Config::from_json(again.as_bytes()) {
        Ok(back) => assert_eq!(&back, config, "round trip through {again}"),
        Err(e) => panic!("written back as {again}, rejected: {e}"),
    }
    let summary = policy.summary();
    assert_eq!(summary.allow_rules, config.allow.len());
    assert_eq!(summary.deny_rules, config.deny.len());
    assert_eq!(summary.rules(), policy.rules().len());

    let (names, ips, ports) = derived_facts(config);
    let combos = (names.len() * ips.len() * ports.len()).min(16);
    for k in 0..combos {
        let raw = &names[k % names.len()];
        let ip = ips[(k * 7 + k / names.len()) % ips.len()];
        let port = ports[(k * 13 + k / ips.len()) % ports.len()];
        let class = classify_sni(raw.as_bytes());
        check_decision(config, &policy, ip, port, NameFact::from(&class));
    }
    policy
}

/// One decision: compiled equals reference; malformed and too-large input is always denied; the
/// reason and the rule agree; `decide_early` never contradicts `decide`.
pub fn check_decision(config: &Config, policy: &Policy, ip: IpAddr, port: u16, name: NameFact<'_>) {
    let facts = Facts { ip, port, name };
    let got = policy.decide(&facts);
    let want = reference::decide(config, &facts);
    assert_eq!(got, want, "compiled against reference for {facts:?}");
    if matches!(name, NameFact::Malformed | NameFact::TooLarge) {
        assert_eq!(got.verdict, Verdict::Deny, "{facts:?} passes: {got:?}");
    }
    let kind = got.rule.and_then(|id| policy.rule(id)).map(|r| r.kind);
    match got.reason {
        Reason::Rule => assert_eq!(kind, Some(RuleKind::Allow), "{got:?}"),
        Reason::DenyRule => {
            let rule = got.rule.and_then(|id| policy.rule(id));
            assert_eq!(
                rule.map(|r| (r.kind, r.enforce)),
                Some((RuleKind::Deny, true))
            );
        }
        Reason::StagedDeny => {
            let rule = got.rule.and_then(|id| policy.rule(id));
            assert_eq!(
                rule.map(|r| (r.kind, r.enforce)),
                Some((RuleKind::Deny, false))
            );
            assert_eq!(got.verdict, Verdict::AuditDeny, "{got:?}");
        }
        _ => assert_eq!(got.rule, None, "{got:?}"),
    }
    if let Some(early) = policy.decide_early(ip, port) {
        let absent = Facts {
            ip,
            port,
            name: NameFact::Absent,
        };
        assert_eq!(policy.decide(&absent), early, "decide_early, no name");
        assert_eq!(
            reference::decide(config, &absent),
            early,
            "decide_early, reference"
        );
        if let NameFact::Name(_) | NameFact::Absent = name {
            assert_eq!(got, early, "decide_early for {facts:?}");
        }
    }
}

/// Names, IPs and ports drawn from a configuration's own rules (and a few others), so that
/// decisions on a real policy hit its rules and their edges.
pub fn derived_facts(config: &Config) -> (Vec<String>, Vec<IpAddr>, Vec<u16>) {
    let mut names = vec!["a.example".to_string(), "github.com".to_string()];
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::from(Ipv6Addr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])),
    ];
    let mut ports = vec![443, 80, 1, 65535];
    let rules = config.deny.iter().chain(&config.allow);
    for rule in rules.take(16) {
        for host in rule.hosts.iter().take(4) {
            let text = host.as_str();
            match host.kind() {
                PatternKind::Exact => names.push(text.to_string()),
                PatternKind::Suffix => {
                    let suffix = text.strip_prefix("*.").unwrap_or(text);
                    names.push(format!("x.{suffix}"));
                    names.push(suffix.to_string());
                }
                PatternKind::Any => names.push("any.example".into()),
                PatternKind::Glob => {
                    names.push(instantiate(text, 0));
                    names.push(instantiate(text, 1));
                }
            }
        }
        for net in rule.cidrs.iter().take(4) {
            let (first, last) = (net.network(), net.broadcast());
            ips.push(first);
            ips.push(last);
            if let IpAddr::V4(v4) = first {
                ips.push(IpAddr::V6(v4.to_ipv6_mapped()));
                let before = u32::from(v4).wrapping_sub(1);
                ips.push(IpAddr::V4(Ipv4Addr::from(before)));
            }
        }
        for range in rule.ports.iter().take(4) {
            ports.extend([
                range.lo,
                range.hi,
                range.lo.wrapping_sub(1),
                range.hi.wrapping_add(1),
            ]);
        }
    }
    names.sort();
    names.dedup();
    ips.sort();
    ips.dedup();
    ports.sort_unstable();
    ports.dedup();
    (names, ips, ports)
}

/// A name a glob was likely written to match: `*` becomes nothing or `ab`, `?` a letter, a class
/// its first byte, a `{...}` group one of its alternatives (by `choice`).
pub fn instantiate(glob: &str, choice: usize) -> String {
    let mut out = String::new();
    let bytes = glob.as_bytes();
    let mut at = 0;
    expand(bytes, &mut at, choice, &mut out, false);
    out
}

/// Expands from `*at` to the end (or, `nested`, to the `,` or `}` that ends an alternative).
fn expand(bytes: &[u8], at: &mut usize, choice: usize, out: &mut String, nested: bool) {
    while let Some(&b) = bytes.get(*at) {
        match b {
            b',' | b'}' if nested => return,
            b'*' => {
                *at += 1;
                if choice % 2 == 1 {
                    out.push_str("ab");
                }
            }
            b'?' => {
                *at += 1;
                out.push('a');
            }
            b'[' => {
                *at += 1;
                if matches!(bytes.get(*at), Some(b'!' | b'^')) {
                    *at += 1;
                }
                if let Some(&first) = bytes.get(*at) {
                    out.push(char::from(first));
                }
                // Skip to the closing `]` (a leading `]` is a member).
                *at += 1;
                while let Some(&c) = bytes.get(*at) {
                    *at += 1;
                    if c == b']' {
                        break;
                    }
                }
            }
            b'{' => {
                *at += 1;
                let mut alts = Vec::new();
                loop {
                    let mut alt = String::new();
                    expand(bytes, at, choice, &mut alt, true);
                    alts.push(alt);
                    match bytes.get(*at) {
                        Some(b',') => *at += 1,
                        Some(b'}') => {
                            *at += 1;
                            break;
                        }
                        _ => break,
                    }
                }
                out.push_str(&alts[choice % alts.len()]);
            }
            _ => {
                *at += 1;
                out.push(char::from(b));
            }
        }
    }
}
