//! A plain linear implementation of the decision, written straight from the README's rules
//! (README.md, "How it decides" and the matching rules under "Configuration reference").
//!
//! It shares nothing with the compiled [`super::Policy`] but the configuration types: no indexes,
//! no precomputation, one scan over the rules per decision. Tests, fuzzers and benchmarks hold the
//! compiled policy against it.

use std::borrow::Cow;
use std::net::IpAddr;

use globset::GlobBuilder;
use ipnet::IpNet;

use super::config::{Config, Mode, Rule};
use super::ports::PortRange;
use super::{Decision, Facts, NameFact, Reason, RuleId, Verdict};

/// A rule as the reference sees it.
struct Plain<'a> {
    hosts: Vec<&'a str>,
    cidrs: Cow<'a, [IpNet]>,
    ports: &'a [PortRange],
    /// Allow rules: whether what it allows by name is pinned.
    pin: bool,
    /// Deny rules: `false` for a staged one.
    enforce: bool,
}

fn plain<'a>(config: &Config, rule: &'a Rule) -> Plain<'a> {
    Plain {
        hosts: rule.hosts.iter().map(|h| h.as_str()).collect(),
        cidrs: Cow::Borrowed(&rule.cidrs),
        ports: &rule.ports,
        pin: config.pins(rule),
        enforce: rule.enforce,
    }
}

/// Decides `facts` under `config` by scanning the rules in order.
///
/// Rule ids number the deny rules, then each deny preset's rules, then the allow rules, then each
/// preset's rules, as
/// [`super::Policy::rules`] does. `config` is assumed valid ([`Config::validate`]).
pub fn decide(config: &Config, facts: &Facts<'_>) -> Decision {
    let ip = match facts.ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let mut deny: Vec<Plain<'_>> = config.deny.iter().map(|r| plain(config, r)).collect();
    for preset in &config.deny_presets {
        for rule in preset.info().rules {
            deny.push(Plain {
                hosts: rule.hosts.to_vec(),
                // The shipped text, read by ipnet directly (a test holds it canonical).
                cidrs: Cow::Owned(rule.cidrs.iter().filter_map(|c| c.parse().ok()).collect()),
                ports: rule.ports,
                pin: false,
                enforce: true,
            });
        }
    }
    let mut allow: Vec<Plain<'_>> = config.allow.iter().map(|r| plain(config, r)).collect();
    for preset in &config.presets {
        for rule in preset.info().rules {
            allow.push(Plain {
                hosts: rule.hosts.to_vec(),
                cidrs: Cow::Borrowed(&[]),
                ports: rule.ports,
                pin: config.pin,
                enforce: true,
            });
        }
    }
    let matching = |rules: &[Plain<'_>], enforce: bool, name: NameFact<'_>| {
        rules
            .iter()
            .position(|rule| rule.enforce == enforce && matches(rule, ip, facts.port, name))
    };
    let id = |n: usize| RuleId::try_from(n).ok();

    if let Some(i) = matching(&deny, true, facts.name) {
        return decision(Verdict::Deny, Reason::DenyRule, id(i));
    }
    let enforced = enforced(
        config,
        facts,
        &allow,
        |rules, name| matching(rules, true, name),
        deny.len(),
    );
    // README.md, "Staged rules": a staged deny rule turns a connection that passes into a
    // would-deny; one that is denied stays denied. It still passes, so a pinned one stays pinned.
    match matching(&deny, false, facts.name) {
        Some(i) if enforced.verdict.passes() => Decision {
            pin: enforced.pin,
            ..decision(Verdict::AuditDeny, Reason::StagedDeny, id(i))
        },
        _ => enforced,
    }
}

/// The decision once no enforced deny rule matched.
fn enforced(
    config: &Config,
    facts: &Facts<'_>,
    allow: &[Plain<'_>],
    matching: impl Fn(&[Plain<'_>], NameFact<'_>) -> Option<usize>,
    denies: usize,
) -> Decision {
    let id = |n: usize| RuleId::try_from(n).ok();
    match facts.name {
        NameFact::Malformed => return decision(Verdict::Deny, Reason::Malformed, None),
        NameFact::TooLarge => return decision(Verdict::Deny, Reason::TooLarge, None),
        NameFact::Absent | NameFact::Name(_) => {}
    }
    // Pinned (pin.rs): a name allowed by the first matching allow rule, through one of its host
    // patterns (no allow rule matches the address alone), when that rule pins. In every mode.
    let first_allow = matching(allow, facts.name);
    let pinned = match (facts.name, first_allow) {
        (NameFact::Name(_), Some(i)) => {
            matching(allow, NameFact::Absent).is_none() && allow.get(i).is_some_and(|rule| rule.pin)
        }
        _ => false,
    };
    if config.mode == Mode::Passthrough {
        if pinned {
            return pin(
                Verdict::Allow,
                Reason::Passthrough,
                first_allow.and_then(|i| id(denies + i)),
            );
        }
        return decision(Verdict::Allow, Reason::Passthrough, None);
    }
    if let Some(i) = first_allow {
        if pinned {
            return pin(Verdict::Allow, Reason::Rule, id(denies + i));
        }
        return decision(Verdict::Allow, Reason::Rule, id(denies + i));
    }
    match config.mode {
        Mode::Audit => decision(Verdict::AuditDeny, Reason::NoMatch, None),
        Mode::Allowlist | Mode::Passthrough => decision(Verdict::Deny, Reason::NoMatch, None),
    }
}

fn decision(verdict: Verdict, reason: Reason, rule: Option<RuleId>) -> Decision {
    Decision {
        verdict,
        reason,
        rule,
        pin: false,
    }
}

fn pin(verdict: Verdict, reason: Reason, rule: Option<RuleId>) -> Decision {
    Decision {
        pin: true,
        ..decision(verdict, reason, rule)
    }
}

/// README.md, "Configuration reference": "A rule matches when the port matches (or the rule has
/// no ports) and either it has neither hosts nor cidrs, or one of its host patterns matches the
/// name, or one of its CIDRs contains the destination IP."
fn matches(rule: &Plain<'_>, ip: IpAddr, port: u16, name: NameFact<'_>) -> bool {
    let port_matches =
        rule.ports.is_empty() || rule.ports.iter().any(|r| r.lo <= port && port <= r.hi);
    if !port_matches {
        return false;
    }
    if rule.hosts.is_empty() && rule.cidrs.is_empty() {
        return true;
    }
    let host_matches = match name {
        NameFact::Name(name) => rule.hosts.iter().any(|p| host_matches(p, name)),
        NameFact::Absent | NameFact::Malformed | NameFact::TooLarge => false,
    };
    host_matches || rule.cidrs.iter().any(|net| net.contains(&ip))
}

/// README.md, "Configuration reference": "`github.com` matches exactly that name.
/// `*.github.com` matches any name ending in `.github.com` with at least one label before it
/// (...), never `github.com` itself. `*` alone matches any well-formed name. Other glob syntax
/// (`?`, `[a-z]`, `{a,b}`) works, and `*` may span dots."
fn host_matches(pattern: &str, name: &str) -> bool {
    const GLOB: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix("*.") {
        if !suffix.contains(GLOB) {
            let dotted = format!(".{suffix}");
            return name.ends_with(&dotted) && name.len() > dotted.len();
        }
    }
    if !pattern.contains(GLOB) {
        return name == pattern;
    }
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .is_ok_and(|glob| glob.compile_matcher().is_match(name))
}
