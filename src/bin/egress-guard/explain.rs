//! `explain CONFIG [--dst IP:PORT | --port PORT] [--sni NAME | --host NAME] [--json]`: one
//! decision, explained.
//!
//! Without `--dst` the decision is taken for every destination IP (and every port, unless
//! `--port` is given) at once: when they all decide alike, that is the answer; otherwise the
//! command says what the decision depends on, with an example destination for each outcome.
//! "Every IP" is exact: a decision can only change where a CIDR of the policy starts or ends,
//! so deciding at each such boundary (and at the start of each address family) covers them all;
//! likewise for ports and the rules' port ranges.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use egress_guard::policy::{
    classify_authority, classify_sni, Config, Decision, EchPolicy, Facts, MalformedName, Mode,
    NameClass, NameFact, Policy, Reason, RuleInfo, Verdict,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::io::{err, out, read_input, Exit, UsageError};

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

/// The destination, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `--dst IP:PORT`.
    Given(SocketAddr),
    /// No `--dst`: any IP, on this port (`--port`) or any.
    Any(Option<u16>),
}

/// The exit code for a decision.
pub fn exit_for(verdict: Verdict) -> Exit {
    match verdict {
        Verdict::Allow => Exit::Ok,
        Verdict::Deny => Exit::Denied,
        Verdict::AuditDeny => Exit::AuditDeny,
    }
}

pub fn run(
    config: &Path,
    destination: Destination,
    name: &GivenName,
    json: bool,
) -> Result<Exit, UsageError> {
    let input = read_input(config)?;
    let parsed = Config::from_json(&input.bytes)
        .and_then(|config| Policy::compile(&config).map(|policy| (config, policy)));
    let (config, policy) = match parsed {
        Ok(both) => both,
        Err(e) => {
            err(&format!("{}: {e}", input.label));
            return Ok(Exit::Invalid);
        }
    };
    if let Destination::Any(port) = destination {
        let points = boundary_ips(&config)
            .len()
            .saturating_mul(boundary_ports(&config, port).len());
        if points > MAX_SCAN {
            return Err(UsageError(format!(
                "{}: the policy's CIDRs and port ranges make {points} destinations to decide \
                 without --dst; give --port (or --dst)",
                input.label
            )));
        }
    }
    let dst = match destination {
        Destination::Given(dst) => dst,
        Destination::Any(port) => match Scan::new(&policy, &config, port, name).single() {
            Ok(dst) => dst,
            Err(scan) => {
                let text = if json {
                    json_line(&scan.report(&policy))?
                } else {
                    scan.text(&policy)
                };
                out(&text)?;
                return Ok(Exit::Depends);
            }
        },
    };
    let mut explanation = Explanation::new(&policy, dst, name);
    if let Destination::Any(port) = destination {
        explanation.any = Some(port);
        explanation.early_any = Some(any_early(&policy, &config, port));
    }
    let text = if json {
        json_line(&explanation.report())?
    } else {
        explanation.text()
    };
    out(&text)?;
    Ok(exit_for(explanation.decision.verdict))
}

/// The most destinations `explain` decides without `--dst` (a few seconds at most).
const MAX_SCAN: usize = 4_000_000;

/// The most outcomes the text form lists.
const MAX_SHOWN: usize = 10;

/// One JSON line.
fn json_line<T: Serialize>(value: &T) -> Result<String, UsageError> {
    serde_json::to_string(value)
        .map(|line| line + "\n")
        .map_err(|e| UsageError(format!("cannot format JSON: {e}")))
}

/// Every IP at which some CIDR of the configuration starts or ends (just past its end), and the
/// start of each address family: deciding at each covers every IP (see the module doc).
fn boundary_ips(config: &Config) -> Vec<IpAddr> {
    let mut ips = BTreeSet::new();
    ips.insert(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    ips.insert(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    // Just past the IPv4-mapped block, which decides as IPv4.
    ips.insert(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 1, 0, 0)));
    // The deny presets' addresses (a test holds their text canonical).
    let preset_nets: Vec<IpNet> = config
        .deny_presets
        .iter()
        .flat_map(|p| p.info().rules)
        .flat_map(|r| r.cidrs.iter().filter_map(|c| c.parse().ok()))
        .collect();
    for net in config
        .allow
        .iter()
        .chain(&config.deny)
        .flat_map(|r| &r.cidrs)
        .chain(&preset_nets)
    {
        ips.insert(net.network());
        let after = match net {
            IpNet::V4(n) => u32::from(n.broadcast())
                .checked_add(1)
                .map(|x| IpAddr::V4(Ipv4Addr::from(x))),
            IpNet::V6(n) => u128::from(n.broadcast())
                .checked_add(1)
                .map(|x| IpAddr::V6(Ipv6Addr::from(x))),
        };
        ips.extend(after);
    }
    ips.into_iter().collect()
}

/// Every port at which some rule's port range starts or ends (just past its end), and 1.
fn boundary_ports(config: &Config, port: Option<u16>) -> Vec<u16> {
    if let Some(port) = port {
        return vec![port];
    }
    let mut ports = BTreeSet::from([1u16]);
    let presets = config
        .presets
        .iter()
        .flat_map(|p| p.info().rules)
        .flat_map(|r| r.ports.iter())
        .chain(
            config
                .deny_presets
                .iter()
                .flat_map(|p| p.info().rules)
                .flat_map(|r| r.ports.iter()),
        );
    for range in config
        .allow
        .iter()
        .chain(&config.deny)
        .flat_map(|r| &r.ports)
        .chain(presets)
    {
        ports.insert(range.lo.max(1));
        ports.extend(range.hi.checked_add(1));
    }
    ports.into_iter().collect()
}

/// The decision at connection open over every destination: the same for all, or `None` when
/// it differs between them.
fn any_early(policy: &Policy, config: &Config, port: Option<u16>) -> Option<Option<Decision>> {
    let mut seen = None;
    for ip in boundary_ips(config) {
        for port in boundary_ports(config, port) {
            let early = policy.decide_early(ip, port);
            match seen {
                None => seen = Some(early),
                Some(first) if first != early => return None,
                Some(_) => {}
            }
        }
    }
    seen
}

/// One decision per boundary destination, for `explain` without `--dst`.
struct Scan {
    /// Distinct decisions, each with the first destination that gave it, and the deciding
    /// rule's CIDRs when that destination matched the rule by IP.
    outcomes: Vec<(Decision, SocketAddr, Vec<IpNet>)>,
    /// Whether some port decides differently for two IPs.
    by_ip: bool,
    /// Whether some IP decides differently on two ports.
    by_port: bool,
}

/// What `explain` prints when the decision depends on the destination.
#[derive(Debug, Serialize)]
struct DependsReport<'a> {
    /// Always `null`: there is no single decision.
    decision: Option<&'static str>,
    /// `ip`, `port`, or both.
    depends_on: Vec<&'static str>,
    /// Each distinct decision, with a destination that gets it.
    outcomes: Vec<Outcome<'a>>,
}

#[derive(Debug, Serialize)]
struct Outcome<'a> {
    decision: &'static str,
    reason: &'static str,
    rule: Option<&'a str>,
    /// The deciding rule's CIDRs, when it decides by IP (the outcome's IPs are in them);
    /// empty for an outcome elsewhere.
    cidrs: Vec<String>,
    example_dst: String,
}

impl Scan {
    fn new(policy: &Policy, config: &Config, port: Option<u16>, given: &GivenName) -> Scan {
        let class = classify(given);
        let name = class.as_ref().map_or(NameFact::Absent, NameFact::from);
        let ips = boundary_ips(config);
        let ports = boundary_ports(config, port);
        let mut outcomes: Vec<(Decision, SocketAddr, Vec<IpNet>)> = Vec::new();
        let mut by_ip = false;
        let mut by_port = false;
        let mut per_ip: Vec<Option<Decision>> = vec![None; ips.len()];
        for &port in &ports {
            let mut first: Option<Decision> = None;
            for (i, &ip) in ips.iter().enumerate() {
                let decision = policy.decide(&Facts { ip, port, name });
                if !outcomes.iter().any(|(d, ..)| *d == decision) {
                    let cidrs = rule_cidrs(config, decision.rule)
                        .filter(|nets| nets.iter().any(|n| n.contains(&ip)))
                        .map(<[IpNet]>::to_vec)
                        .unwrap_or_default();
                    outcomes.push((decision, SocketAddr::new(ip, port), cidrs));
                }
                by_ip |= first.is_some_and(|f| f != decision);
                first = first.or(Some(decision));
                if let Some(slot) = per_ip.get_mut(i) {
                    by_port |= slot.is_some_and(|d| d != decision);
                    *slot = slot.or(Some(decision));
                }
            }
        }
        Scan {
            outcomes,
            by_ip,
            by_port,
        }
    }

    /// The one destination to explain when every destination decides alike.
    fn single(self) -> Result<SocketAddr, Scan> {
        match self.outcomes.as_slice() {
            [(_, dst, _)] => Ok(*dst),
            _ => Err(self),
        }
    }

    fn depends_on(&self) -> Vec<&'static str> {
        let mut on = Vec::new();
        if self.by_ip {
            on.push("ip");
        }
        if self.by_port {
            on.push("port");
        }
        on
    }

    fn report<'p>(&self, policy: &'p Policy) -> DependsReport<'p> {
        DependsReport {
            decision: None,
            depends_on: self.depends_on(),
            outcomes: self
                .outcomes
                .iter()
                .map(|(d, dst, cidrs)| Outcome {
                    decision: d.verdict.as_str(),
                    reason: d.reason.as_str(),
                    rule: d
                        .rule
                        .and_then(|id| policy.rule(id))
                        .map(|r| r.name.as_str()),
                    cidrs: cidrs.iter().map(ToString::to_string).collect(),
                    example_dst: dst.to_string(),
                })
                .collect(),
        }
    }

    fn text(&self, policy: &Policy) -> String {
        let on = match (self.by_ip, self.by_port) {
            (true, true) => "the destination IP and port (give --dst)",
            (false, true) => "the destination port (give --port or --dst)",
            _ => "the destination IP (give --dst)",
        };
        let mut text = format!("decision  depends on {on}\n");
        for (d, dst, cidrs) in self.outcomes.iter().take(MAX_SHOWN) {
            let rule = d
                .rule
                .and_then(|id| policy.rule(id))
                .map(|r| format!(" {}", r.name))
                .unwrap_or_default();
            let place = if cidrs.is_empty() {
                String::new()
            } else {
                let nets = cidrs.iter().map(ToString::to_string).collect::<Vec<_>>();
                format!(" (in {})", nets.join(", "))
            };
            let _ = writeln!(
                text,
                "  {:<10} {:<24} e.g. --dst {dst}{place}",
                d.verdict.as_str(),
                format!("{}{rule}", d.reason)
            );
        }
        if let Some(more) = self
            .outcomes
            .len()
            .checked_sub(MAX_SHOWN)
            .filter(|&n| n > 0)
        {
            let _ = writeln!(text, "  and {more} more outcomes (--json lists them all)");
        }
        text
    }
}

/// The CIDRs of the explicit rule with id `id` (deny rules, deny preset rules, then allow
/// rules); `None` for a preset's rule.
fn rule_cidrs(config: &Config, id: Option<u32>) -> Option<&[IpNet]> {
    let id = usize::try_from(id?).ok()?;
    let deny_presets: usize = config
        .deny_presets
        .iter()
        .map(|p| p.info().rules.len())
        .sum();
    let rule = match id.checked_sub(config.deny.len()) {
        None => config.deny.get(id)?,
        Some(i) => config.allow.get(i.checked_sub(deny_presets)?)?,
    };
    Some(&rule.cidrs)
}

fn classify(given: &GivenName) -> Option<NameClass> {
    match given {
        GivenName::Sni(raw) => Some(classify_sni(raw)),
        GivenName::Host(raw) => Some(classify_authority(raw)),
        GivenName::None => None,
    }
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
    /// Without `--dst`: every IP decides alike (on this port, or on every port).
    any: Option<Option<u16>>,
    /// Without `--dst`: the decision at open over every destination, `None` if it differs.
    early_any: Option<Option<Option<Decision>>>,
}

/// The `--json` form. Field names follow the filter's log line (`decision`, `reason`, `rule`,
/// `dst`, `name`, `name_source`, `detail`).
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// `allow`, `deny` or `audit_deny`.
    pub decision: &'static str,
    /// Whether traffic passes (`allow` and `audit_deny`).
    pub passes: bool,
    /// `rule`, `deny_rule`, `staged_deny`, `no_match`, `passthrough` or `malformed`.
    pub reason: &'static str,
    /// The deciding rule's name.
    pub rule: Option<&'a str>,
    /// `allow` or `deny`, for the deciding rule.
    pub rule_kind: Option<&'static str>,
    /// Whether the deciding rule is enforced (`false`: a staged deny rule).
    pub rule_enforced: Option<bool>,
    /// The preset that supplied the deciding rule.
    pub preset: Option<&'static str>,
    /// `ip:port`; `null` without `--dst` (the decision is the same for every IP).
    pub dst: Option<String>,
    /// Without `--dst`: the port given with `--port`, or `null` for every port.
    pub port: Option<u16>,
    /// Whether the decision is the same for every destination IP (and port, without `--port`):
    /// `true` without `--dst` (otherwise `explain` says what it depends on).
    pub any_destination: bool,
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
    /// when it must first read the SNI or Host (or, without `--dst`, when that differs between
    /// destinations).
    pub at_open: Option<EarlyReport<'a>>,
    /// Whether the connection is pinned to its name; only when the policy pins at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    /// The cluster a pinned connection goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_cluster: Option<&'a str>,
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
        let class = classify(given);
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
            any: None,
            early_any: None,
        }
    }

    /// Whether the connection passes (allow, or audit's would-deny).
    pub fn passes(&self) -> bool {
        self.decision.verdict.passes()
    }

    /// The decision at open, as far as it is one decision. With `"ech": "deny"` only a denial
    /// is taken at open (the session reads the ClientHello before allowing anything).
    fn early(&self) -> Option<Decision> {
        self.early_unfiltered()
            .filter(|early| !self.ech_deny() || !early.verdict.passes())
    }

    fn early_unfiltered(&self) -> Option<Decision> {
        match self.early_any {
            Some(any) => any.flatten(),
            None => self.early,
        }
    }

    fn ech_deny(&self) -> bool {
        self.policy.ech() == EchPolicy::Deny
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
            rule_enforced: rule.map(|r| r.enforce),
            preset: rule.and_then(|r| r.preset),
            dst: self.any.is_none().then(|| self.dst.to_string()),
            port: self.any.flatten(),
            any_destination: self.any.is_some(),
            name,
            name_source: self.given.source(),
            name_given: self.given_text(),
            name_class,
            detail,
            mode: self.policy.mode().as_str(),
            at_open: self.early().as_ref().map(|early| EarlyReport {
                decision: early.verdict.as_str(),
                reason: early.reason.as_str(),
                rule: self.rule(early).map(|r| r.name.as_str()),
            }),
            pinned: self.policy.pinning().then_some(self.decision.pin),
            pin_cluster: self.decision.pin.then_some(self.policy.pin_cluster()),
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
        line("dst", &self.dst_text());
        line("name", &self.name_text());
        line("mode", self.policy.mode().as_str());
        line("at open", &self.at_open_text());
        if self.policy.pinning() {
            line("pinned", &self.pin_text());
        }
        if self.ech_deny() {
            line(
                "ech",
                "deny: the same ClientHello carrying encrypted_client_hello (ECH, or browsers' \
                 GREASE ECH) is denied (reason ech)",
            );
        }
        text
    }

    /// Whether, and why (not), the connection is pinned; what pinning needs from the listener.
    fn pin_text(&self) -> String {
        let name = match &self.class {
            Some(NameClass::Name(name)) => Some(name.as_str()),
            _ => None,
        };
        if let (true, Some(name)) = (self.decision.pin, name) {
            let needs = if self.ech_deny() && !self.policy.sniff().hold_upstream {
                "but with \"ech\": \"deny\" the SNI from tls_inspector no longer decides at \
                 open, and without sniff.hold_upstream a name read from the client's bytes cannot \
                 be pinned: the network filter denies it (pin_unavailable)"
            } else if self.policy.sniff().hold_upstream {
                "the network filter pins the SNI from tls_inspector at open, or a name it reads \
                 while it holds the connection (sniff.hold_upstream)"
            } else {
                "needs the SNI from tls_inspector at open: without sniff.hold_upstream a name read \
                 from the client's bytes (HTTP Host, TLS without tls_inspector) cannot be pinned \
                 and is denied (pin_unavailable)"
            };
            return format!(
                "yes: Envoy connects to {name}:{} (cluster {}), never to {}; {needs}",
                self.dst.port(),
                self.policy.pin_cluster(),
                self.dst.ip()
            );
        }
        if !self.passes() {
            return "no: the connection is denied".to_string();
        }
        if name.is_none() {
            return "no: only a connection allowed by its name is pinned, and this one has none"
                .to_string();
        }
        if let Some(rule) = self
            .policy
            .address_rule(self.dst.ip(), self.dst.port())
            .and_then(|id| self.policy.rule(id))
        {
            return format!(
                "no: the destination is allowed on IP and port alone (rule {}), whatever the name",
                rule.name
            );
        }
        match self.rule(&self.decision) {
            Some(rule) if !rule.pin => format!("no: rule {} does not pin (pin: false)", rule.name),
            _ => "no: no allow rule that pins matched the name".to_string(),
        }
    }

    fn why(&self) -> &'static str {
        match (self.decision.reason, self.policy.mode()) {
            (Reason::Rule, _) => "an allow rule matched",
            (Reason::DenyRule, _) => "a deny rule matched (deny rules apply in every mode)",
            (Reason::StagedDeny, _) => {
                "a staged deny rule (\"enforce\": false) matched: it passes, and is logged and \
                 counted as a would-deny"
            }
            (Reason::NoMatch, Mode::Audit) => {
                "no allow rule matched; audit mode lets it pass and logs a would-deny"
            }
            (Reason::NoMatch, _) => "no allow rule matched; allowlist mode denies it",
            (Reason::Passthrough, _) if self.decision.pin => {
                "passthrough mode, and no deny rule matched; the rule below pins the name"
            }
            (Reason::Passthrough, _) => "passthrough mode, and no deny rule matched",
            (Reason::Malformed, _) => {
                "the name is malformed, which is denied in every mode (a garbled name must not \
                 slip past a deny rule)"
            }
            _ => "",
        }
    }

    fn dst_text(&self) -> String {
        match self.any {
            None => self.dst.to_string(),
            Some(None) => {
                "any (the decision is the same for every destination IP and port)".to_string()
            }
            Some(Some(port)) => {
                format!("any IP, port {port} (the decision is the same for every destination IP)")
            }
        }
    }

    fn rule_text(&self) -> String {
        match self.rule(&self.decision) {
            None => "-".to_string(),
            Some(RuleInfo {
                name,
                kind,
                preset: Some(preset),
                ..
            }) => format!("{name} ({} rule from preset {preset})", kind.as_str()),
            Some(RuleInfo {
                name,
                enforce: false,
                ..
            }) => format!("{name} (staged deny rule: \"enforce\": false)"),
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
        if self.early_any == Some(None) {
            return "it depends on the destination: give --dst to see whether the network \
                    filter decides when the connection opens"
                .to_string();
        }
        let port = match self.any {
            Some(None) => "this port".to_string(),
            _ => format!("port {}", self.dst.port()),
        };
        if self.early().is_none() && self.early_unfiltered().is_some() {
            return "no: with \"ech\": \"deny\" nothing is allowed when the connection opens: \
                    the network filter reads the ClientHello first (tls_inspector does not say \
                    whether it carries ECH)"
                .to_string();
        }
        match &self.early() {
            None if self.ech_deny() => format!(
                "no: a host rule applies to {port}, so the network filter needs the name; with \
                 \"ech\": \"deny\" it reads the client's first bytes even where tls_inspector \
                 read the SNI"
            ),
            None => format!(
                "no: a host rule applies to {port}, so the network filter needs the name: the \
                 SNI from tls_inspector if the listener has one, otherwise it reads the \
                 client's first bytes"
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
