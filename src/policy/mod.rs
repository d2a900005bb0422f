//! The policy core: configuration, compiled policy, decisions. No proxy-wasm import.
//!
//! ```
//! use egress_guard::policy::{Facts, NameFact, Policy, Reason, Verdict};
//!
//! let policy = Policy::from_json(br#"{
//!     "allow": [{"name": "github", "hosts": ["github.com", "*.github.com"], "ports": [443]}],
//!     "deny": [{"name": "cloud-metadata", "cidrs": ["169.254.169.254"]}]
//! }"#)?;
//! let facts = Facts { ip: "140.82.112.3".parse()?, port: 443, name: NameFact::Name("api.github.com") };
//! let decision = policy.decide(&facts);
//! assert_eq!((decision.verdict, decision.reason), (Verdict::Allow, Reason::Rule));
//! assert_eq!(policy.rule(decision.rule.unwrap()).unwrap().name, "github");
//! // Settled at connection open, before any byte: the metadata endpoint is denied by IP.
//! let early = policy.decide_early("169.254.169.254".parse()?, 80).unwrap();
//! assert_eq!(early.reason, Reason::DenyRule);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Rule ids
//!
//! [`Policy::rules`] lists every rule, and a [`RuleId`] indexes it: first the `deny` rules in
//! config order, then the `allow` rules in config order, then the rules of each preset in `presets`
//! order. The compiled indexes rely on this order ("the lowest matching id wins" is exactly "a
//! deny rule beats an allow rule, and the first rule in config order is reported"), and
//! [`reference::decide`] numbers rules the same way.

pub mod cidrs;
pub mod config;
mod de;
mod glob;
pub mod hosts;
/// Name normalisation (lives at the crate root, shared with the parsers; re-exported here).
pub use crate::name;
pub mod ports;
pub mod presets;
pub mod reference;

// Two attributes rather than `all(..)`: clippy's test allowances look for a plain `cfg(test)`.
#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

pub use cidrs::{canonical_ip, parse_cidr, CidrError};
pub use config::{Config, ConfigError, ConfigErrorKind, LogLevel, Mode, Rule, SniffConfig};
pub use hosts::{HostPattern, PatternError, PatternErrorKind, PatternKind};
pub use name::{classify_authority, classify_sni, MalformedName, NameClass};
pub use ports::{PortError, PortRange};
pub use presets::{Preset, PresetInfo, PresetRule};

use cidrs::{CidrIndex, CidrIndexBuilder};
use hosts::{HostIndex, HostIndexBuilder};
use ports::PortIndex;

/// Index of a rule in [`Policy::rules`] (see "Rule ids" above).
pub type RuleId = u32;

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// From `allow` or a preset.
    Allow,
    /// From `deny`.
    Deny,
}

impl RuleKind {
    /// `"allow"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Allow => "allow",
            RuleKind::Deny => "deny",
        }
    }
}

/// What logs and metrics need to know about a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule's name (default `allow-<i>` / `deny-<i>`, `preset-<preset>` for preset rules).
    pub name: String,
    /// Allow or deny.
    pub kind: RuleKind,
    /// The preset that supplied the rule, if any.
    pub preset: Option<&'static str>,
}

/// The facts a decision is taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts<'a> {
    /// Original destination IP. An IPv4-mapped IPv6 address is matched as its IPv4 address.
    pub ip: IpAddr,
    /// Original destination port.
    pub port: u16,
    /// The connection's name (SNI or Host), as far as it is known.
    pub name: NameFact<'a>,
}

/// What is known of the connection's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameFact<'a> {
    /// No name: no SNI, no Host, not TLS or HTTP, or an IP literal. Matches no host pattern.
    Absent,
    /// A well-formed name, already normalised by [`name`] (lowercase, no trailing dot).
    Name(&'a str),
    /// A name or a protocol head that breaks its rules: denied in every mode.
    Malformed,
    /// The client sent more than `sniff.max_bytes` without a complete head: denied in every mode.
    TooLarge,
}

impl<'a> From<&'a NameClass> for NameFact<'a> {
    /// An IP literal is not a name: it becomes [`NameFact::Absent`].
    fn from(class: &'a NameClass) -> Self {
        match class {
            NameClass::Name(name) => NameFact::Name(name),
            NameClass::IpLiteral(_) => NameFact::Absent,
            NameClass::Malformed(_) => NameFact::Malformed,
        }
    }
}

crate::labels::labelled! {
    /// What happens to the connection.
    pub enum Verdict {
        /// It passes.
        Allow => "allow",
        /// It is closed (network filter) or answered with a 403 (HTTP filter).
        Deny => "deny",
        /// Audit mode: it passes, and is logged and counted as a would-deny.
        AuditDeny => "audit_deny",
    }
}

impl Verdict {
    /// Whether traffic passes ([`Verdict::Allow`] and [`Verdict::AuditDeny`]).
    pub fn passes(self) -> bool {
        !matches!(self, Verdict::Deny)
    }
}

crate::labels::labelled! {
    /// Why a decision was taken.
    #[non_exhaustive]
    pub enum Reason {
        /// An allow rule matched.
        Rule => "rule",
        /// A deny rule matched.
        DenyRule => "deny_rule",
        /// No rule matched (allowlist: deny; audit: would-deny).
        NoMatch => "no_match",
        /// Passthrough mode and no deny rule matched.
        Passthrough => "passthrough",
        /// The name or protocol head was malformed.
        Malformed => "malformed",
        /// The client's head exceeded `sniff.max_bytes`.
        TooLarge => "too_large",
        /// The proxy could not say where the connection or request goes; the filter fails closed.
        /// Produced by the filter, never by [`Policy::decide`].
        NoDestination => "no_destination",
        /// A later request on an HTTP/1 connection (keep-alive or pipelined) was not allowed; the
        /// policy's own reason goes in the log's `detail`. Produced by the filter.
        LaterRequest => "later_request",
    }
}

/// A decision: verdict, reason, and the rule that decided (if a rule did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// What happens to the connection.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The deciding rule, for [`Reason::Rule`] and [`Reason::DenyRule`].
    pub rule: Option<RuleId>,
}

impl Decision {
    const fn new(verdict: Verdict, reason: Reason, rule: Option<RuleId>) -> Decision {
        Decision {
            verdict,
            reason,
            rule,
        }
    }
}

/// Counts for the CLI's `check` and the VM start log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The mode.
    pub mode: Mode,
    /// Explicit allow rules.
    pub allow_rules: usize,
    /// Deny rules.
    pub deny_rules: usize,
    /// Allow rules supplied by presets.
    pub preset_rules: usize,
    /// Presets enabled.
    pub presets: usize,
    /// Host patterns over all rules.
    pub hosts: usize,
    /// CIDRs over all rules.
    pub cidrs: usize,
}

impl Summary {
    /// All rules: allow, deny and preset.
    pub fn rules(&self) -> usize {
        self.allow_rules + self.deny_rules + self.preset_rules
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={} rules={} (allow {}, deny {}, from presets {}) hosts={} cidrs={} presets={}",
            self.mode,
            self.rules(),
            self.allow_rules,
            self.deny_rules,
            self.preset_rules,
            self.hosts,
            self.cidrs,
            self.presets
        )
    }
}

/// A compiled, immutable policy: build it once per configuration and share it.
///
/// A decision costs a few hash lookups (one per label of the name), one longest-prefix match
/// and a few binary searches, whatever the number of rules.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: Mode,
    sniff: SniffConfig,
    log: LogLevel,
    rules: Vec<RuleInfo>,
    /// Rule ids below this are deny rules.
    deny_rules: RuleId,
    /// Some deny rule has CIDRs (an IP literal sent as a name can then be denied).
    deny_cidrs: bool,
    presets: Vec<Preset>,
    /// Rules with neither hosts nor cidrs.
    port_only: PortIndex,
    cidrs: CidrIndex,
    hosts: HostIndex,
    summary: Summary,
}

/// The smaller of two optional rule ids.
#[inline]
pub(crate) fn min_rule(a: Option<RuleId>, b: Option<RuleId>) -> Option<RuleId> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Policy {
    /// Validates and compiles a configuration.
    pub fn compile(config: &Config) -> Result<Policy, ConfigError> {
        Policy::from_config(config.clone())
    }

    /// Validates and compiles a configuration, taking it apart as it goes: each rule's name and
    /// pattern texts move into the policy and the rest of the rule is freed, so the whole
    /// configuration and the whole policy are never held at once (a VM's linear memory keeps
    /// the compile's peak for good).
    pub fn from_config(config: Config) -> Result<Policy, ConfigError> {
        config.validate()?;
        Policy::compile_validated(config)
    }

    /// Compiles a configuration that [`Config::validate`] has accepted.
    fn compile_validated(mut config: Config) -> Result<Policy, ConfigError> {
        let preset_rules: usize = config.presets.iter().map(|p| p.info().rules.len()).sum();
        let (allow_rules, deny_rules) = (config.allow.len(), config.deny.len());
        let total = deny_rules + allow_rules + preset_rules;
        if RuleId::try_from(total).is_err() {
            return Err(ConfigError::invalid("", "too many rules"));
        }
        let mut summary = Summary {
            mode: config.mode,
            allow_rules,
            deny_rules,
            preset_rules,
            presets: config.presets.len(),
            hosts: 0,
            cidrs: 0,
        };
        let deny_cidrs = config.deny.iter().any(|r| !r.cidrs.is_empty());
        // Sized up front: a growing map holds its old and new tables at once.
        let count = |kind: PatternKind| {
            (config.deny.iter().chain(&config.allow))
                .flat_map(|r| &r.hosts)
                .filter(|h| h.kind() == kind)
                .count()
        };
        let mut host_index =
            HostIndexBuilder::with_capacity(count(PatternKind::Exact), count(PatternKind::Suffix));
        let mut cidr_index = CidrIndexBuilder::default();
        let mut port_only = PortIndex::default();
        let mut rules: Vec<RuleInfo> = Vec::with_capacity(total);
        // In passthrough mode allow rules cannot change a decision: they are left out.
        let index_allow = config.mode != Mode::Passthrough;
        let mut id: RuleId = 0;
        let lists = [
            ("deny", RuleKind::Deny, std::mem::take(&mut config.deny)),
            ("allow", RuleKind::Allow, std::mem::take(&mut config.allow)),
        ];
        for (list, kind, list_rules) in lists {
            for (i, rule) in list_rules.into_iter().enumerate() {
                let ports = ports::merge(&rule.ports);
                summary.hosts += rule.hosts.len();
                summary.cidrs += rule.cidrs.len();
                if kind == RuleKind::Deny || index_allow {
                    if rule.hosts.is_empty() && rule.cidrs.is_empty() {
                        port_only.add(id, &ports);
                    }
                    for &net in &rule.cidrs {
                        cidr_index.add(net, id, &ports);
                    }
                }
                let name = if rule.name.is_empty() {
                    rule.name_or_default(list, i)
                } else {
                    rule.name
                };
                if kind == RuleKind::Deny || index_allow {
                    for host in rule.hosts {
                        host_index.add(host, id, &ports);
                    }
                }
                rules.push(RuleInfo {
                    name,
                    kind,
                    preset: None,
                });
                id += 1;
            }
        }
        for (i, preset) in config.presets.iter().enumerate() {
            for (n, rule) in preset.info().rules.iter().enumerate() {
                let ports = ports::merge(rule.ports);
                summary.hosts += rule.hosts.len();
                for h in rule.hosts {
                    let host = HostPattern::parse(h)
                        .map_err(|e| ConfigError::invalid(format!("presets[{i}]"), e))?;
                    if index_allow {
                        host_index.add(host, id, &ports);
                    }
                }
                if index_allow && rule.hosts.is_empty() {
                    port_only.add(id, &ports);
                }
                rules.push(RuleInfo {
                    name: preset.rule_name(n),
                    kind: RuleKind::Allow,
                    preset: Some(preset.name()),
                });
                id += 1;
            }
        }
        let hosts = host_index
            .build()
            .map_err(|e| ConfigError::invalid("", format!("host patterns: {e}")))?;
        Ok(Policy {
            mode: config.mode,
            sniff: config.sniff,
            log: config.log,
            deny_rules: RuleId::try_from(deny_rules).unwrap_or(RuleId::MAX),
            deny_cidrs,
            presets: config.presets,
            port_only,
            cidrs: cidr_index.build(),
            hosts,
            summary,
            rules,
        })
    }

    /// Parses, validates and compiles a JSON configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        // Config::from_json has validated it.
        Policy::compile_validated(Config::from_json(bytes)?)
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The sniffing limits.
    pub fn sniff(&self) -> &SniffConfig {
        &self.sniff
    }

    /// Which decisions are logged.
    pub fn log(&self) -> LogLevel {
        self.log
    }

    /// Whether some deny rule has CIDRs: then an IP literal the client sends as its name (an
    /// SNI, a Host, a `CONNECT` authority) can be denied, so an allow cannot be taken at open.
    pub fn has_deny_cidrs(&self) -> bool {
        self.deny_cidrs
    }

    /// Every rule, indexed by [`RuleId`]: deny rules, allow rules, preset rules.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// The rule with id `id`.
    pub fn rule(&self, id: RuleId) -> Option<&RuleInfo> {
        self.rules.get(id as usize)
    }

    /// The presets enabled, in config order.
    pub fn presets(&self) -> &[Preset] {
        &self.presets
    }

    /// Counts of rules, hosts, CIDRs and presets.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Decides a connection or request (README.md, "How it decides"; docs/design.md, "Malformed
    /// input is denied in every mode"):
    ///
    /// 1. a matching deny rule denies (the first in config order), in every mode;
    /// 2. a malformed or too large head denies, in every mode;
    /// 3. passthrough allows;
    /// 4. the first matching allow rule (explicit rules, then presets) allows;
    /// 5. otherwise allowlist denies and audit would-deny.
    pub fn decide(&self, facts: &Facts<'_>) -> Decision {
        let ip = canonical_ip(facts.ip);
        let mut best = self.without_name(ip, facts.port);
        if let NameFact::Name(name) = facts.name {
            best = min_rule(best, self.hosts.lookup(name, facts.port));
        }
        self.conclude(best, facts.name)
    }

    /// The decision at connection open, before any client byte, when the name cannot change it.
    ///
    /// Returns `Some(d)` only if `decide` gives exactly `d` (verdict, reason and rule) for this
    /// IP and port with [`NameFact::Absent`] and with **every** [`NameFact::Name`]. It does not
    /// speak for [`NameFact::Malformed`] and [`NameFact::TooLarge`], which always deny: a caller
    /// that acts on `Some` accepts not inspecting the client's bytes.
    ///
    /// `None` means some rule with host patterns applies to this port and comes before whatever
    /// IP and port alone match, so the name must be seen. In particular a deny by IP is only
    /// settled early when no earlier deny rule with hosts applies to the port (otherwise that
    /// earlier rule could be the one reported).
    pub fn decide_early(&self, ip: IpAddr, port: u16) -> Option<Decision> {
        let best = self.without_name(canonical_ip(ip), port);
        match self.hosts.any_rule_on(port) {
            Some(first) if best.is_none_or(|b| first < b) => None,
            _ => Some(self.conclude(best, NameFact::Absent)),
        }
    }

    /// The lowest rule matching by CIDR or by port alone.
    #[inline]
    fn without_name(&self, ip: IpAddr, port: u16) -> Option<RuleId> {
        min_rule(self.port_only.get(port), self.cidrs.lookup(ip, port))
    }

    fn conclude(&self, best: Option<RuleId>, name: NameFact<'_>) -> Decision {
        if let Some(id) = best.filter(|&id| id < self.deny_rules) {
            return Decision::new(Verdict::Deny, Reason::DenyRule, Some(id));
        }
        match name {
            NameFact::Malformed => return Decision::new(Verdict::Deny, Reason::Malformed, None),
            NameFact::TooLarge => return Decision::new(Verdict::Deny, Reason::TooLarge, None),
            NameFact::Absent | NameFact::Name(_) => {}
        }
        match (self.mode, best) {
            (Mode::Passthrough, _) => Decision::new(Verdict::Allow, Reason::Passthrough, None),
            (_, Some(id)) => Decision::new(Verdict::Allow, Reason::Rule, Some(id)),
            (Mode::Allowlist, None) => Decision::new(Verdict::Deny, Reason::NoMatch, None),
            (Mode::Audit, None) => Decision::new(Verdict::AuditDeny, Reason::NoMatch, None),
        }
    }
}
