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
//! config order, then the rules of each deny preset in `deny_presets` order, then the `allow`
//! rules in config order, then the rules of each preset in `presets` order. The compiled indexes rely on this order ("the lowest matching id wins" is exactly "a
//! deny rule beats an allow rule, and the first rule in config order is reported"), and
//! [`reference::decide`] numbers rules the same way.

pub mod cidrs;
pub mod config;
mod de;
pub mod fingerprint;
mod glob;
pub mod hosts;
mod key;
/// Name normalisation (lives at the crate root, shared with the parsers; re-exported here).
pub use crate::name;
pub mod pin;
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
pub use config::{
    ClusterName, Config, ConfigError, ConfigErrorKind, EchPolicy, LogLevel, Mode, Rule, Severity,
    SniffConfig,
};
pub use fingerprint::Fingerprint;
pub use hosts::{HostPattern, PatternError, PatternErrorKind, PatternKind};
pub use name::{classify_authority, classify_sni, MalformedName, NameClass};
pub use ports::{PortError, PortRange};
pub use presets::{DenyPreset, DenyPresetInfo, DenyPresetRule, Preset, PresetInfo, PresetRule};

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

crate::labels::labelled! {
    /// A rule's kind as counters label it (`kind` of `egress_guard_rule_matches_total`): where
    /// the rule comes from and what it does.
    pub enum RuleClass {
        /// An explicit `allow` rule.
        Allow => "allow",
        /// An allow rule from a preset (`presets`).
        Preset => "preset",
        /// An explicit, enforced `deny` rule.
        Deny => "deny",
        /// A staged `deny` rule (`"enforce": false`).
        StagedDeny => "staged_deny",
        /// A deny rule from a deny preset (`deny_presets`).
        DenyPreset => "deny_preset",
    }
}

/// What logs and metrics need to know about a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule's name (default `allow-<i>` / `deny-<i>`, `preset-<preset>` for preset rules,
    /// deny presets' included).
    pub name: String,
    /// Allow or deny.
    pub kind: RuleKind,
    /// The preset that supplied the rule, if any.
    pub preset: Option<&'static str>,
    /// Whether what this rule allows by name is pinned (its own `pin`, else the policy's);
    /// `false` for deny rules.
    pub pin: bool,
    /// `false` for a staged deny rule (`"enforce": false`): it records would-denies only.
    pub enforce: bool,
}

impl RuleInfo {
    /// The rule's kind, as counters label it.
    pub fn class(&self) -> RuleClass {
        match (self.kind, self.preset.is_some(), self.enforce) {
            (RuleKind::Allow, false, _) => RuleClass::Allow,
            (RuleKind::Allow, true, _) => RuleClass::Preset,
            (RuleKind::Deny, true, _) => RuleClass::DenyPreset,
            (RuleKind::Deny, false, true) => RuleClass::Deny,
            (RuleKind::Deny, false, false) => RuleClass::StagedDeny,
        }
    }
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
        /// A staged deny rule (`"enforce": false`) matched a connection that otherwise passes:
        /// it still passes, as a would-deny ([`Verdict::AuditDeny`]), in every mode.
        StagedDeny => "staged_deny",
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
        /// The connection had to be pinned ([`Decision::pin`]) but could not be any more (its
        /// upstream was already chosen) or the proxy refused: denied in every mode rather than
        /// let out to the client's IP. Produced by the filter.
        PinUnavailable => "pin_unavailable",
        /// The ClientHello carried `encrypted_client_hello` (real or GREASE ECH) and the policy
        /// has `"ech": "deny"`: denied in every mode. Produced by the filter.
        Ech => "ech",
    }
}

/// A decision: verdict, reason, the rule that decided (if a rule did), and whether the
/// connection is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// What happens to the connection.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The deciding rule, for [`Reason::Rule`], [`Reason::DenyRule`] and [`Reason::StagedDeny`];
    /// for [`Reason::Passthrough`], the allow rule that pinned the connection, if one did.
    pub rule: Option<RuleId>,
    /// The connection passes only to its name: Envoy must make it to the name, never to the
    /// client's IP (see [`pin`] for exactly when).
    pub pin: bool,
}

impl Decision {
    /// A decision that is not pinned.
    pub const fn new(verdict: Verdict, reason: Reason, rule: Option<RuleId>) -> Decision {
        Decision {
            verdict,
            reason,
            rule,
            pin: false,
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
    /// Deny rules (staged ones included).
    pub deny_rules: usize,
    /// Staged deny rules (`"enforce": false`).
    pub staged_rules: usize,
    /// Rules supplied by presets (allow and deny presets).
    pub preset_rules: usize,
    /// Presets enabled (allow and deny presets).
    pub presets: usize,
    /// Host patterns over all rules.
    pub hosts: usize,
    /// CIDRs over all rules.
    pub cidrs: usize,
    /// Allow rules (preset rules included) whose allows by name are pinned.
    pub pinned_rules: usize,
}

impl Summary {
    /// All rules: allow, deny and preset.
    pub fn rules(&self) -> usize {
        self.allow_rules + self.deny_rules + self.preset_rules
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `staged N` only when there are staged rules: the line predates them.
        let staged = match self.staged_rules {
            0 => String::new(),
            n => format!(", staged {n}"),
        };
        write!(
            f,
            "mode={} rules={} (allow {}, deny {}{staged}, from presets {}) hosts={} cidrs={} \
             presets={}",
            self.mode,
            self.rules(),
            self.allow_rules,
            self.deny_rules,
            self.preset_rules,
            self.hosts,
            self.cidrs,
            self.presets
        )?;
        if self.pinned_rules > 0 {
            write!(f, " pinned_rules={}", self.pinned_rules)?;
        }
        Ok(())
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
    /// What a ClientHello carrying ECH gets.
    ech: EchPolicy,
    /// The cluster pinned connections go to.
    pin_cluster: ClusterName,
    /// Some allow rule pins.
    pinning: bool,
    log_level: Severity,
    /// The fingerprint of the JSON the policy was compiled from, if known.
    fingerprint: Option<Fingerprint>,
    rules: Vec<RuleInfo>,
    /// Rule ids below this are deny rules.
    deny_rules: RuleId,
    /// Some deny rule has CIDRs (an IP literal sent as a name can then be denied).
    deny_cidrs: bool,
    presets: Vec<Preset>,
    deny_presets: Vec<DenyPreset>,
    /// Rules with neither hosts nor cidrs.
    port_only: PortIndex,
    cidrs: CidrIndex,
    hosts: HostIndex,
    /// The staged deny rules, indexed apart (the indexes above leave them out), if any.
    staged: Option<Box<StagedIndex>>,
    summary: Summary,
}

/// The indexes of the staged deny rules: what they match never changes the main decision, so
/// they are looked up only when that decision lets the connection pass.
#[derive(Debug, Clone)]
struct StagedIndex {
    port_only: PortIndex,
    cidrs: CidrIndex,
    hosts: HostIndex,
}

impl StagedIndex {
    /// The lowest staged rule matching by CIDR or by port alone.
    fn without_name(&self, ip: IpAddr, port: u16) -> Option<RuleId> {
        min_rule(self.port_only.get(port), self.cidrs.lookup(ip, port))
    }

    /// The lowest staged rule matching.
    fn lookup(&self, ip: IpAddr, port: u16, name: NameFact<'_>) -> Option<RuleId> {
        let best = self.without_name(ip, port);
        match name {
            NameFact::Name(name) => min_rule(best, self.hosts.lookup(name, port)),
            NameFact::Absent | NameFact::Malformed | NameFact::TooLarge => best,
        }
    }
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

/// A preset's host patterns, parsed (`at`: the preset's place, for an error that a test rules out).
fn preset_hosts(hosts: &[&str], at: impl Fn() -> String) -> Result<Vec<HostPattern>, ConfigError> {
    hosts
        .iter()
        .map(|h| HostPattern::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::invalid(at(), e))
}

/// The indexes one set of rules is compiled into (the enforced rules, or the staged ones).
#[derive(Default)]
struct Indexes {
    hosts: HostIndexBuilder,
    cidrs: CidrIndexBuilder,
    port_only: PortIndex,
}

impl Indexes {
    fn add(
        &mut self,
        id: RuleId,
        hosts: Vec<HostPattern>,
        cidrs: &[ipnet::IpNet],
        ports: &[PortRange],
    ) {
        if hosts.is_empty() && cidrs.is_empty() {
            self.port_only.add(id, ports);
        }
        for &net in cidrs {
            self.cidrs.add(net, id, ports);
        }
        for host in hosts {
            self.hosts.add(host, id, ports);
        }
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

    /// Compiles a configuration that [`Config::validate`] has accepted. Rule ids: deny rules,
    /// deny preset rules, allow rules, preset rules.
    fn compile_validated(mut config: Config) -> Result<Policy, ConfigError> {
        let preset_rules: usize = config.presets.iter().map(|p| p.info().rules.len()).sum();
        let deny_preset_rules: usize = config
            .deny_presets
            .iter()
            .map(|p| p.info().rules.len())
            .sum();
        let (allow_rules, deny_rules) = (config.allow.len(), config.deny.len());
        let total = deny_rules + deny_preset_rules + allow_rules + preset_rules;
        if RuleId::try_from(total).is_err() {
            return Err(ConfigError::invalid("", "too many rules"));
        }
        let staged_rules = config.deny.iter().filter(|r| !r.enforce).count();
        let pinned_rules = config.allow.iter().filter(|r| config.pins(r)).count()
            + if config.pin { preset_rules } else { 0 };
        let pinning = pinned_rules > 0;
        let mut summary = Summary {
            mode: config.mode,
            allow_rules,
            deny_rules,
            staged_rules,
            preset_rules: deny_preset_rules + preset_rules,
            presets: config.presets.len() + config.deny_presets.len(),
            hosts: 0,
            cidrs: 0,
            pinned_rules,
        };
        // Enforced deny rules only: an IP literal sent as the name meets those (a staged rule
        // looks at the destination IP only). Deny presets count too.
        let deny_cidrs = config.deny.iter().any(|r| r.enforce && !r.cidrs.is_empty())
            || config
                .deny_presets
                .iter()
                .any(|p| p.info().rules.iter().any(|r| !r.cidrs.is_empty()));
        // Sized up front: a growing map holds its old and new tables at once.
        let count = |kind: PatternKind| {
            (config.deny.iter().chain(&config.allow))
                .flat_map(|r| &r.hosts)
                .filter(|h| h.kind() == kind)
                .count()
        };
        let mut enforced = Indexes {
            hosts: HostIndexBuilder::with_capacity(
                count(PatternKind::Exact),
                count(PatternKind::Suffix),
            ),
            ..Indexes::default()
        };
        let mut staged = Indexes::default();
        let mut rules: Vec<RuleInfo> = Vec::with_capacity(total);
        // In passthrough mode allow rules cannot change a decision, only what is pinned: they
        // are left out unless one pins.
        let index_allow = config.mode != Mode::Passthrough || pinning;
        let mut id: RuleId = 0;

        // Explicit deny rules, then deny presets, then explicit allow rules, then presets.
        let deny = std::mem::take(&mut config.deny);
        let allow = std::mem::take(&mut config.allow);
        /// Where the explicit rules of one list go, and what they are compiled into.
        struct Sink<'a> {
            enforced: &'a mut Indexes,
            staged: &'a mut Indexes,
            summary: &'a mut Summary,
            rules: &'a mut Vec<RuleInfo>,
            id: &'a mut RuleId,
        }
        fn explicit(
            config: &Config,
            index_allow: bool,
            list: &str,
            kind: RuleKind,
            list_rules: Vec<Rule>,
            sink: Sink<'_>,
        ) {
            for (i, rule) in list_rules.into_iter().enumerate() {
                let ports = ports::merge(&rule.ports);
                sink.summary.hosts += rule.hosts.len();
                sink.summary.cidrs += rule.cidrs.len();
                let pin = kind == RuleKind::Allow && config.pins(&rule);
                let name = if rule.name.is_empty() {
                    rule.name_or_default(list, i)
                } else {
                    rule.name
                };
                if kind == RuleKind::Deny || index_allow {
                    let indexes = if rule.enforce {
                        &mut *sink.enforced
                    } else {
                        &mut *sink.staged
                    };
                    indexes.add(*sink.id, rule.hosts, &rule.cidrs, &ports);
                }
                sink.rules.push(RuleInfo {
                    name,
                    kind,
                    preset: None,
                    pin,
                    enforce: rule.enforce,
                });
                *sink.id += 1;
            }
        }
        explicit(
            &config,
            index_allow,
            "deny",
            RuleKind::Deny,
            deny,
            Sink {
                enforced: &mut enforced,
                staged: &mut staged,
                summary: &mut summary,
                rules: &mut rules,
                id: &mut id,
            },
        );
        for (i, preset) in config.deny_presets.iter().enumerate() {
            let at = || format!("deny_presets[{i}]");
            for (n, rule) in preset.info().rules.iter().enumerate() {
                let cidrs = rule
                    .cidrs
                    .iter()
                    .map(|c| parse_cidr(c))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ConfigError::invalid(at(), e))?;
                let hosts = preset_hosts(rule.hosts, at)?;
                summary.hosts += hosts.len();
                summary.cidrs += cidrs.len();
                enforced.add(id, hosts, &cidrs, &ports::merge(rule.ports));
                rules.push(RuleInfo {
                    name: preset.rule_name(n),
                    kind: RuleKind::Deny,
                    preset: Some(preset.name()),
                    pin: false,
                    enforce: true,
                });
                id += 1;
            }
        }
        let deny_count = id;
        explicit(
            &config,
            index_allow,
            "allow",
            RuleKind::Allow,
            allow,
            Sink {
                enforced: &mut enforced,
                staged: &mut staged,
                summary: &mut summary,
                rules: &mut rules,
                id: &mut id,
            },
        );
        for (i, preset) in config.presets.iter().enumerate() {
            for (n, rule) in preset.info().rules.iter().enumerate() {
                let hosts = preset_hosts(rule.hosts, || format!("presets[{i}]"))?;
                summary.hosts += hosts.len();
                if index_allow {
                    enforced.add(id, hosts, &[], &ports::merge(rule.ports));
                }
                rules.push(RuleInfo {
                    name: preset.rule_name(n),
                    kind: RuleKind::Allow,
                    preset: Some(preset.name()),
                    pin: config.pin,
                    enforce: true,
                });
                id += 1;
            }
        }
        let hosts = enforced
            .hosts
            .build()
            .map_err(|e| ConfigError::invalid("", format!("host patterns: {e}")))?;
        let staged = if staged_rules == 0 {
            None
        } else {
            Some(Box::new(StagedIndex {
                port_only: staged.port_only,
                cidrs: staged.cidrs.build(),
                hosts: staged
                    .hosts
                    .build()
                    .map_err(|e| ConfigError::invalid("", format!("host patterns: {e}")))?,
            }))
        };
        Ok(Policy {
            mode: config.mode,
            sniff: config.sniff,
            log: config.log,
            ech: config.ech,
            pin_cluster: config.pin_cluster,
            pinning,
            log_level: config.log_level,
            fingerprint: None,
            deny_rules: deny_count,
            deny_cidrs,
            presets: config.presets,
            deny_presets: config.deny_presets,
            port_only: enforced.port_only,
            cidrs: enforced.cidrs.build(),
            hosts,
            staged,
            summary,
            rules,
        })
    }

    /// Parses, validates and compiles a JSON configuration; records its [`Fingerprint`].
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        // Config::from_json has validated it.
        let policy = Policy::compile_validated(Config::from_json(bytes)?)?;
        Ok(policy.with_fingerprint(Fingerprint::of(bytes)))
    }

    /// The policy, recorded as compiled from a JSON document with this fingerprint.
    pub fn with_fingerprint(mut self, fingerprint: Option<Fingerprint>) -> Policy {
        self.fingerprint = fingerprint;
        self
    }

    /// The fingerprint of the JSON the policy was compiled from (`None` when compiled from a
    /// [`Config`] built in code).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint
    }

    /// The log level of denials and would-denials.
    pub fn log_level(&self) -> Severity {
        self.log_level
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

    /// What a ClientHello carrying `encrypted_client_hello` gets (`ech`). With
    /// [`EchPolicy::Deny`] no TLS connection can be allowed before its ClientHello is read.
    pub fn ech(&self) -> EchPolicy {
        self.ech
    }

    /// Whether some deny rule has CIDRs: then an IP literal the client sends as its name (an
    /// SNI, a Host, a `CONNECT` authority) can be denied, so an allow cannot be taken at open.
    pub fn has_deny_cidrs(&self) -> bool {
        self.deny_cidrs
    }

    /// The cluster pinned connections go to (`pin_cluster`).
    pub fn pin_cluster(&self) -> &str {
        self.pin_cluster.as_str()
    }

    /// Whether some allow rule pins: only then can a decision be [`Decision::pin`].
    pub fn pinning(&self) -> bool {
        self.pinning
    }

    /// Every rule, indexed by [`RuleId`]: deny rules, deny preset rules, allow rules, preset
    /// rules.
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

    /// The deny presets enabled, in config order.
    pub fn deny_presets(&self) -> &[DenyPreset] {
        &self.deny_presets
    }

    /// Counts of rules, hosts, CIDRs and presets.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Whether some deny rule is staged (`"enforce": false`).
    pub fn has_staged(&self) -> bool {
        self.staged.is_some()
    }

    /// Decides a connection or request (README.md, "How it decides"; docs/design.md, "Malformed
    /// input is denied in every mode"):
    ///
    /// 1. a matching enforced deny rule denies (the first in config order), in every mode;
    /// 2. a malformed or too large head denies, in every mode;
    /// 3. passthrough allows;
    /// 4. the first matching allow rule (explicit rules, then presets) allows;
    /// 5. otherwise allowlist denies and audit would-deny;
    /// 6. if the connection passes (3, 4 or 5 in audit) and a staged deny rule matches, it
    ///    would-denies instead, reporting the first such rule ([`Reason::StagedDeny`]).
    ///
    /// [`Decision::pin`] says whether the connection must be pinned to its name ([`pin`]); a
    /// staged would-deny keeps it (it passes, so it goes where a pass goes).
    pub fn decide(&self, facts: &Facts<'_>) -> Decision {
        let ip = canonical_ip(facts.ip);
        let by_address = self.without_name(ip, facts.port);
        let mut best = by_address;
        if let NameFact::Name(name) = facts.name {
            best = min_rule(best, self.hosts.lookup(name, facts.port));
        }
        let mut decision = self.conclude(best, facts.name);
        // Allowed by a host pattern (nothing allows the address alone) of a rule that pins.
        // `best` is then an allow rule: a deny rule would have denied.
        // `pinning` first: without it, a hit does not read its rule (a cache miss at 100,000).
        if self.pinning && by_address.is_none() && decision.verdict.passes() {
            if let Some(id) = best.filter(|&id| self.rule(id).is_some_and(|r| r.pin)) {
                decision.pin = true;
                decision.rule = Some(id);
            }
        }
        match &self.staged {
            Some(staged) if decision.verdict.passes() => {
                stage(decision, staged.lookup(ip, facts.port, facts.name))
            }
            _ => decision,
        }
    }

    /// The decision at connection open, before any client byte, when the name cannot change it.
    ///
    /// Returns `Some(d)` only if `decide` gives exactly `d` (verdict, reason, rule and pin) for
    /// this IP and port with [`NameFact::Absent`] and with **every** [`NameFact::Name`] (so `d`
    /// is never pinned). It does not
    /// speak for [`NameFact::Malformed`] and [`NameFact::TooLarge`], which always deny: a caller
    /// that acts on `Some` accepts not inspecting the client's bytes.
    ///
    /// `None` means some rule with host patterns applies to this port and comes before whatever
    /// IP and port alone match, so the name must be seen. In particular a deny by IP is only
    /// settled early when no earlier deny rule with hosts applies to the port (otherwise that
    /// earlier rule could be the one reported).
    pub fn decide_early(&self, ip: IpAddr, port: u16) -> Option<Decision> {
        let ip = canonical_ip(ip);
        let best = self.without_name(ip, port);
        let decision = match self.hosts.any_rule_on(port) {
            Some(first) if best.is_none_or(|b| first < b) => return None,
            _ => self.conclude(best, NameFact::Absent),
        };
        match &self.staged {
            Some(staged) if decision.verdict.passes() => {
                // The same test for the staged rules: a name could add one, or report an
                // earlier one.
                let best = staged.without_name(ip, port);
                match staged.hosts.any_rule_on(port) {
                    Some(first) if best.is_none_or(|b| first < b) => None,
                    _ => Some(stage(decision, best)),
                }
            }
            _ => Some(decision),
        }
    }

    /// The first rule that matches this destination on IP and port alone (a deny rule, or an
    /// allow rule by CIDR or port), whatever the name. A connection allowed by name to such a
    /// destination is never pinned. (In `passthrough` without pinning, allow rules are not
    /// compiled and never reported here.)
    pub fn address_rule(&self, ip: IpAddr, port: u16) -> Option<RuleId> {
        self.without_name(canonical_ip(ip), port)
    }

    /// The lowest rule matching by CIDR or by port alone.
    #[inline]
    fn without_name(&self, ip: IpAddr, port: u16) -> Option<RuleId> {
        min_rule(self.port_only.get(port), self.cidrs.lookup(ip, port))
    }

    /// The decision of the enforced rules (steps 1 to 5 of [`Policy::decide`]).
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

/// A passing decision, turned into a would-deny by the staged rule `staged`, if one matched.
fn stage(decision: Decision, staged: Option<RuleId>) -> Decision {
    match staged {
        // A staged would-deny passes: where a pinned connection goes does not change.
        Some(id) => Decision {
            pin: decision.pin,
            ..Decision::new(Verdict::AuditDeny, Reason::StagedDeny, Some(id))
        },
        None => decision,
    }
}
