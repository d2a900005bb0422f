//! `explain CONFIG --dst IP:PORT [--sni NAME | --host NAME] [--json]`: one decision, explained.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use egress_guard::policy::{
    classify_authority, classify_sni, Decision, Facts, MalformedName, Mode, NameClass, NameFact,
    Policy, Reason, RuleInfo,
};
use serde::Serialize;

use crate::cli::{err, out, read_input, Exit, UsageError};

/// The name the connection carries, as given on the command line (raw bytes: a malformed name
/// may not be UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GivenName {
    /// `--sni`: classified as a TLS SNI.
    Sni(Vec<u8>),
    /// `--host`: classified as an HTTP Host or `:authority` (a `:port` is stripped).
    Host(Vec<u8>),
    /// Neither: TLS without SNI, HTTP/1.0 without Host, or another protocol.
    None,
}

impl GivenName {
    /// The log's `name_source`.
    fn source(&self) -> &'static str {
        match self {
            GivenName::Sni(_) => "sni",
            GivenName::Host(_) => "host",
            GivenName::None => "none",
        }
    }

    /// How the text form calls it.
    fn label(&self) -> &'static str {
        match self {
            GivenName::Sni(_) => "SNI",
            GivenName::Host(_) => "Host",
            GivenName::None => "name",
        }
    }
}

pub fn run(
    config: &Path,
    dst: SocketAddr,
    name: &GivenName,
    json: bool,
) -> Result<Exit, UsageError> {
    let input = read_input(config)?;
    let policy = match Policy::from_json(&input.bytes) {
        Ok(policy) => policy,
        Err(e) => {
            err(&format!("{}: {e}", input.label));
            return Ok(Exit::Invalid);
        }
    };
    let explanation = Explanation::new(&policy, dst, name);
    let text = if json {
        serde_json::to_string(&explanation.report())
            .map(|line| line + "\n")
            .map_err(|e| UsageError(format!("cannot format JSON: {e}")))?
    } else {
        explanation.text()
    };
    out(&text)?;
    Ok(if explanation.passes() {
        Exit::Ok
    } else {
        Exit::Denied
    })
}

/// One decision, with everything that went into it.
#[derive(Debug)]
pub struct Explanation<'p> {
    policy: &'p Policy,
    dst: SocketAddr,
    given: &'p GivenName,
    /// How the given name was classified; `None` when no name was given.
    class: Option<NameClass>,
    decision: Decision,
    /// The network filter's decision at connection open, if the name cannot change it.
    early: Option<Decision>,
}

/// The `--json` form. Field names follow the filter's log line (`decision`, `reason`, `rule`,
/// `dst`, `name`, `name_source`, `detail`).
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// `allow`, `deny` or `audit_deny`.
    pub decision: &'static str,
    /// Whether traffic passes (`allow` and `audit_deny`).
    pub passes: bool,
    /// `rule`, `deny_rule`, `no_match`, `passthrough` or `malformed`.
    pub reason: &'static str,
    /// The deciding rule's name.
    pub rule: Option<&'a str>,
    /// `allow` or `deny`, for the deciding rule.
    pub rule_kind: Option<&'static str>,
    /// The preset that supplied the deciding rule.
    pub preset: Option<&'static str>,
    /// `ip:port`.
    pub dst: String,
    /// The normalised name, when the given name is a well-formed host name.
    pub name: Option<&'a str>,
    /// `sni`, `host` or `none`.
    pub name_source: &'static str,
    /// The name as given (as UTF-8, invalid bytes replaced by U+FFFD).
    pub name_given: Option<String>,
    /// `name`, `ip_literal`, `malformed` or `none`.
    pub name_class: &'static str,
    /// Why the name is malformed (the filter's `detail` and counter label).
    pub detail: Option<&'static str>,
    /// The configuration's mode.
    pub mode: &'static str,
    /// The network filter's decision when the connection opens, before reading a byte; `null`
    /// when it must first read the SNI or Host.
    pub at_open: Option<EarlyReport<'a>>,
}

/// A decision taken at connection open.
#[derive(Debug, Serialize)]
pub struct EarlyReport<'a> {
    /// `allow`, `deny` or `audit_deny`.
    pub decision: &'static str,
    /// Why.
    pub reason: &'static str,
    /// The deciding rule's name.
    pub rule: Option<&'a str>,
}

impl<'p> Explanation<'p> {
    pub fn new(policy: &'p Policy, dst: SocketAddr, given: &'p GivenName) -> Explanation<'p> {
        let class = match given {
            GivenName::Sni(raw) => Some(classify_sni(raw)),
            GivenName::Host(raw) => Some(classify_authority(raw)),
            GivenName::None => None,
        };
        let decision = policy.decide(&Facts {
            ip: dst.ip(),
            port: dst.port(),
            name: class.as_ref().map_or(NameFact::Absent, NameFact::from),
        });
        Explanation {
            policy,
            dst,
            given,
            class,
            decision,
            early: policy.decide_early(dst.ip(), dst.port()),
        }
    }

    /// Whether the connection passes (allow, or audit's would-deny).
    pub fn passes(&self) -> bool {
        self.decision.verdict.passes()
    }

    fn rule(&self, decision: &Decision) -> Option<&'p RuleInfo> {
        decision.rule.and_then(|id| self.policy.rule(id))
    }

    fn given_text(&self) -> Option<String> {
        match self.given {
            GivenName::Sni(raw) | GivenName::Host(raw) => {
                Some(String::from_utf8_lossy(raw).into_owned())
            }
            GivenName::None => None,
        }
    }

    /// The `--json` form.
    pub fn report(&self) -> Report<'_> {
        let rule = self.rule(&self.decision);
        let (name, name_class, detail) = match &self.class {
            Some(NameClass::Name(name)) => (Some(name.as_str()), "name", None),
            Some(NameClass::IpLiteral(_)) => (None, "ip_literal", None),
            Some(NameClass::Malformed(kind)) => (None, "malformed", Some(kind.as_str())),
            None => (None, "none", None),
        };
        Report {
            decision: self.decision.verdict.as_str(),
            passes: self.passes(),
            reason: self.decision.reason.as_str(),
            rule: rule.map(|r| r.name.as_str()),
            rule_kind: rule.map(|r| r.kind.as_str()),
            preset: rule.and_then(|r| r.preset),
            dst: self.dst.to_string(),
            name,
            name_source: self.given.source(),
            name_given: self.given_text(),
            name_class,
            detail,
            mode: self.policy.mode().as_str(),
            at_open: self.early.as_ref().map(|early| EarlyReport {
                decision: early.verdict.as_str(),
                reason: early.reason.as_str(),
                rule: self.rule(early).map(|r| r.name.as_str()),
            }),
        }
    }

    /// The human-readable form.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(text, "{key:<9} {value}");
        };
        line("decision", self.decision.verdict.as_str());
        line(
            "reason",
            &format!("{}: {}", self.decision.reason, self.why()),
        );
        line("rule", &self.rule_text());
        line("dst", &self.dst.to_string());
        line("name", &self.name_text());
        line("mode", self.policy.mode().as_str());
        line("at open", &self.at_open_text());
        text
    }

    fn why(&self) -> &'static str {
        match (self.decision.reason, self.policy.mode()) {
            (Reason::Rule, _) => "an allow rule matched",
            (Reason::DenyRule, _) => "a deny rule matched (deny rules apply in every mode)",
            (Reason::NoMatch, Mode::Audit) => {
                "no allow rule matched; audit mode lets it pass and logs a would-deny"
            }
            (Reason::NoMatch, _) => "no allow rule matched; allowlist mode denies it",
            (Reason::Passthrough, _) => "passthrough mode, and no deny rule matched",
            (Reason::Malformed, _) => {
                "the name is malformed, which is denied in every mode (a garbled name must not \
                 slip past a deny rule)"
            }
            _ => "",
        }
    }

    fn rule_text(&self) -> String {
        match self.rule(&self.decision) {
            None => "-".to_string(),
            Some(RuleInfo {
                name,
                kind,
                preset: Some(preset),
            }) => format!("{name} ({} rule from preset {preset})", kind.as_str()),
            Some(RuleInfo { name, kind, .. }) => format!("{name} ({} rule)", kind.as_str()),
        }
    }

    fn name_text(&self) -> String {
        let source = self.given.label();
        // The bytes as given, quoted, with anything unprintable escaped (`\xff`).
        let given = match self.given {
            GivenName::Sni(raw) | GivenName::Host(raw) => format!("\"{}\"", raw.escape_ascii()),
            GivenName::None => String::new(),
        };
        match &self.class {
            Some(NameClass::Name(name)) if format!("\"{name}\"") == given => {
                format!("{name} (the {source})")
            }
            Some(NameClass::Name(name)) => format!("{name} (the {source} {given}, normalised)"),
            Some(NameClass::IpLiteral(_)) => format!(
                "none: the {source} {given} is an IP literal, not a name; decided on IP and port"
            ),
            Some(NameClass::Malformed(kind)) => format!(
                "malformed: the {source} {given} {} ({kind})",
                malformed_why(*kind)
            ),
            None => "none given (as for TLS without SNI, HTTP/1.0 without Host, or another \
                     protocol): decided on IP and port"
                .to_string(),
        }
    }

    fn at_open_text(&self) -> String {
        let malformed = matches!(self.class, Some(NameClass::Malformed(_)));
        match &self.early {
            None => format!(
                "no: a host rule applies to port {}, so the network filter needs the name: the \
                 SNI from tls_inspector if the listener has one, otherwise it reads the \
                 client's first bytes",
                self.dst.port()
            ),
            Some(early) if *early == self.decision || !malformed => {
                "yes: the network filter decides when the connection opens, without reading a \
                 byte (no name can change this decision)"
                    .to_string()
            }
            Some(early) => format!(
                "yes: the network filter decides {} ({}{}) when the connection opens, without \
                 reading the name; the malformed name is only seen, and denied, when \
                 tls_inspector supplies the SNI, or in the HTTP filter",
                early.verdict,
                early.reason,
                self.rule(early)
                    .map(|r| format!(", rule {}", r.name))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Why a name is malformed, as a phrase following `the SNI "x"`.
fn malformed_why(kind: MalformedName) -> &'static str {
    match kind {
        MalformedName::Empty => "is empty",
        MalformedName::TooLong => "is longer than 253 bytes",
        MalformedName::BadLabel => "has an empty label or a label longer than 63 bytes",
        MalformedName::BadByte => "has a byte outside letters, digits, '-', '_' and '.'",
        MalformedName::BadPort => "has a port that is empty, not decimal, or not 1-65535",
        MalformedName::Userinfo => "carries userinfo (user@host)",
        MalformedName::BadIpv6 => "has a malformed IPv6 literal or misplaced brackets",
        _ => "is malformed",
    }
}
