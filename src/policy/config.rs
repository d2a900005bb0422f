//! The configuration contract (README.md, "Configuration reference"), as serde types.
//!
//! Values validate while they are deserialised (host patterns, CIDRs, ports, names, ranges), so
//! every error names the field path it came from (`allow[2].cidrs[0]: "10.0.0.300/8" is not a
//! CIDR`). What needs the whole document (unique names, non-empty rules, presets listed once) is
//! checked by [`Config::validate`] afterwards, with the path spelled out. Unknown keys are errors
//! everywhere: a typo must not silently widen egress.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_path_to_error::Segment;

use super::cidrs::{check_cidr, Cidr};
use super::de::string_only;
use super::hosts::HostPattern;
use super::ports::PortRange;
use super::presets::{DenyPreset, Preset};

/// The plugin configuration: one JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Config {
    /// What happens to connections no rule decides. Default [`Mode::Allowlist`].
    #[serde(default)]
    pub mode: Mode,
    /// Allow rules, in priority order.
    #[serde(default)]
    pub allow: Vec<Rule>,
    /// Deny rules, enforced in every mode; the first match is reported.
    #[serde(default)]
    pub deny: Vec<Rule>,
    /// Built-in bundles of allow rules, appended after `allow` in this order.
    #[serde(default)]
    pub presets: Vec<Preset>,
    /// Built-in bundles of deny rules, appended after `deny` in this order.
    #[serde(default)]
    pub deny_presets: Vec<DenyPreset>,
    /// Network-filter sniffing limits.
    #[serde(default)]
    pub sniff: SniffConfig,
    /// Which decisions are logged.
    #[serde(default)]
    pub log: LogLevel,
    /// The log level of denials and would-denials (allows are logged at `info`).
    #[serde(default)]
    pub log_level: Severity,
    /// Pin connections allowed by name to that name (see [`super::pin`]): the default of every
    /// allow rule (and preset rule) without its own `pin`. Default `false`.
    #[serde(default)]
    pub pin: bool,
    /// The Envoy cluster (a dynamic forward proxy) pinned connections are sent to.
    #[serde(default)]
    pub pin_cluster: ClusterName,
    /// What a ClientHello carrying `encrypted_client_hello` (ECH, real or GREASE) gets. Default
    /// [`EchPolicy::Allow`].
    #[serde(default)]
    pub ech: EchPolicy,
}

/// The name of an Envoy cluster: 1 to 255 visible ASCII characters (no spaces or control
/// characters). Default `egress_guard_pinned`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    /// The default `pin_cluster`.
    pub const DEFAULT: &'static str = "egress_guard_pinned";

    /// Checks and wraps a cluster name.
    pub fn new(name: impl Into<String>) -> Result<ClusterName, String> {
        let name = name.into();
        check_cluster_name(&name)?;
        Ok(ClusterName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ClusterName {
    fn default() -> Self {
        ClusterName(Self::DEFAULT.to_string())
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClusterName, D::Error> {
        ClusterName::new(String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// Checks a cluster name: 1 to 255 characters from `!` to `~` (what Envoy's cluster names and
/// Istio's `outbound|443||api.example.com` use).
fn check_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{name:?} is not a cluster name: use 1-255 visible ASCII characters (no spaces)"
        ));
    }
    Ok(())
}

/// What happens to a connection that no deny rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(remote = "Self", rename_all = "lowercase")]
pub enum Mode {
    /// Only connections an allow rule matches pass (`"allowlist"`, the default).
    #[default]
    Allowlist,
    /// Allow rules are evaluated, but a connection none matches still passes and is recorded as a
    /// would-deny (`"audit"`).
    Audit,
    /// Every connection passes except those a deny rule matches (`"passthrough"`).
    Passthrough,
}

impl Mode {
    /// The configuration spelling: `"allowlist"`, `"audit"`, `"passthrough"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Allowlist => "allowlist",
            Mode::Audit => "audit",
            Mode::Passthrough => "passthrough",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which decisions produce a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(remote = "Self", rename_all = "lowercase")]
pub enum LogLevel {
    /// No decision is logged (`"none"`).
    None,
    /// Denials and audit would-denials (`"denied"`, the default).
    #[default]
    Denied,
    /// Every decision (`"all"`).
    All,
}

impl LogLevel {
    /// The configuration spelling: `"none"`, `"denied"`, `"all"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::None => "none",
            LogLevel::Denied => "denied",
            LogLevel::All => "all",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a ClientHello that carries the `encrypted_client_hello` extension (ECH, RFC
/// 9849). Its SNI is then only the outer name (a provider's public name, or, with the GREASE ECH
/// that browsers send by default, the real name): the two cannot be told apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(remote = "Self", rename_all = "lowercase")]
pub enum EchPolicy {
    /// Decided on the outer SNI like any ClientHello; logged (`"ech": true`) and counted
    /// (`"allow"`, the default).
    #[default]
    Allow,
    /// Denied in every mode, with its own reason `ech` (`"deny"`). Browsers' GREASE ECH is
    /// denied too.
    Deny,
}

impl EchPolicy {
    /// The configuration spelling: `"allow"`, `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EchPolicy::Allow => "allow",
            EchPolicy::Deny => "deny",
        }
    }
}

/// The log level of the decision lines for denials and would-denials (`log_level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(remote = "Self", rename_all = "lowercase")]
pub enum Severity {
    /// `"warn"`, the default: seen where proxies log Wasm at `warning` (Istio's sidecars).
    #[default]
    Warn,
    /// `"info"`: for who wants denials with the rest of the informational lines.
    Info,
}

impl Severity {
    /// The configuration spelling: `"warn"`, `"info"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for EchPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits of the network filter's look at the client's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct SniffConfig {
    /// How many client bytes may be held while looking for SNI/Host: [`SniffConfig::MAX_BYTES`],
    /// default 16384.
    #[serde(deserialize_with = "de_max_bytes")]
    pub max_bytes: u32,
    /// How long to wait for the client's first bytes before deciding on IP and port alone:
    /// [`SniffConfig::TIMEOUT_MS`] (1 ms to 60 s), default 3000.
    #[serde(deserialize_with = "de_timeout_ms")]
    pub timeout_ms: u32,
    /// Hold the whole connection until decided (README.md, "Running it on Envoy",
    /// `sniff.hold_upstream`). Default `false`.
    pub hold_upstream: bool,
}

impl SniffConfig {
    /// Accepted values of `max_bytes`.
    pub const MAX_BYTES: RangeInclusive<u32> = 512..=65536;
    /// Accepted values of `timeout_ms`.
    pub const TIMEOUT_MS: RangeInclusive<u32> = 1..=60_000;

    fn validate(&self) -> Result<(), ConfigError> {
        check_range(i128::from(self.max_bytes), &Self::MAX_BYTES)
            .map_err(|m| ConfigError::invalid("sniff.max_bytes", m))?;
        check_range(i128::from(self.timeout_ms), &Self::TIMEOUT_MS)
            .map_err(|m| ConfigError::invalid("sniff.timeout_ms", m))?;
        Ok(())
    }
}

impl Default for SniffConfig {
    fn default() -> Self {
        SniffConfig {
            max_bytes: 16384,
            timeout_ms: 3000,
            hold_upstream: false,
        }
    }
}

/// One allow or deny rule.
///
/// It matches when the port matches (or `ports` is empty) and either `hosts` and `cidrs` are both
/// empty, or one of `hosts` matches the name, or one of `cidrs` contains the destination IP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Rule {
    /// Shown in logs and metrics: `[a-z0-9_-]`, 1 to 64 characters, unique across all rules.
    /// Empty in code means the default `allow-<i>` / `deny-<i>`; [`Config::from_json`] fills it.
    #[serde(default, deserialize_with = "de_rule_name")]
    pub name: String,
    /// Host patterns matched against the connection's name (SNI or Host).
    #[serde(default, deserialize_with = "de_hosts")]
    pub hosts: Vec<HostPattern>,
    /// Networks matched against the original destination IP. A bare IP is a /32 or /128.
    #[serde(default, deserialize_with = "de_cidrs")]
    pub cidrs: Vec<IpNet>,
    /// Destination ports; empty means any port.
    #[serde(default, deserialize_with = "de_ports")]
    pub ports: Vec<PortRange>,
    /// Allow rules only: pin what this rule allows by name, or not, whatever the policy's `pin`
    /// says. `None` follows the policy.
    #[serde(default, deserialize_with = "de_pin")]
    pub pin: Option<bool>,
    /// Deny rules only: `false` stages the rule. A staged rule blocks nothing; a connection it
    /// matches that would otherwise pass is recorded as a would-deny ([`super::Verdict::AuditDeny`],
    /// [`super::Reason::StagedDeny`]). Default `true`; `false` on an allow rule is an error.
    #[serde(default = "enforced")]
    pub enforce: bool,
}

fn enforced() -> bool {
    true
}

impl Default for Rule {
    /// An empty, enforced rule.
    fn default() -> Self {
        Rule {
            name: String::new(),
            hosts: Vec::new(),
            cidrs: Vec::new(),
            ports: Vec::new(),
            pin: None,
            enforce: true,
        }
    }
}

impl Rule {
    /// Whether the rule has none of hosts, cidrs, ports (an error: never allow-all).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.cidrs.is_empty() && self.ports.is_empty()
    }

    /// The rule's name, or its default `<list>-<index>` when `name` is empty.
    pub(crate) fn name_or_default(&self, list: &str, index: usize) -> String {
        if self.name.is_empty() {
            format!("{list}-{index}")
        } else {
            self.name.clone()
        }
    }

    /// The checks a rule built in code could fail (JSON input has passed them while parsing).
    /// `list[index]` is where the rule is, for error paths (formatted only on error).
    fn validate(&self, list: &str, index: usize) -> Result<(), ConfigError> {
        let at = || format!("{list}[{index}]");
        if !self.name.is_empty() {
            check_rule_name(&self.name)
                .map_err(|m| ConfigError::invalid(format!("{}.name", at()), m))?;
        }
        if !self.enforce && list != "deny" {
            return Err(ConfigError::invalid(
                format!("{}.enforce", at()),
                "only a deny rule can be staged (\"enforce\": false); remove the key",
            ));
        }
        if self.is_empty() {
            return Err(ConfigError::new(
                at(),
                ConfigErrorKind::EmptyRule,
                "a rule needs at least one of hosts, cidrs, ports",
            ));
        }
        if list == "deny" && self.pin.is_some() {
            return Err(ConfigError::invalid(
                format!("{}.pin", at()),
                "pin applies to allow rules only: a deny rule has nothing to pin",
            ));
        }
        for (j, net) in self.cidrs.iter().enumerate() {
            check_cidr(*net)
                .map_err(|e| ConfigError::invalid(format!("{}.cidrs[{j}]", at()), e))?;
        }
        for (j, range) in self.ports.iter().enumerate() {
            range
                .check()
                .map_err(|e| ConfigError::invalid(format!("{}.ports[{j}]", at()), e))?;
        }
        Ok(())
    }
}

/// Where a rule name was first used, for duplicate-name errors: `allow[3]`, `presets[1]`,
/// `deny_presets[0]`.
#[derive(Clone, Copy)]
enum Place {
    Rule(&'static str, usize),
    Preset(&'static str, usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Rule(list, i) | Place::Preset(list, i) => write!(f, "{list}[{i}]"),
        }
    }
}

impl Config {
    /// Parses and validates the plugin configuration; fills default rule names.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut config: Config =
            serde_path_to_error::deserialize(&mut de).map_err(ConfigError::from_serde)?;
        de.end()
            .map_err(|e| ConfigError::from_json(String::new(), e))?;
        config.validate()?;
        for (list, rules) in [("allow", &mut config.allow), ("deny", &mut config.deny)] {
            for (i, rule) in rules.iter_mut().enumerate() {
                rule.name = rule.name_or_default(list, i);
            }
        }
        Ok(config)
    }

    /// Checks what deserialisation cannot see on its own, and re-checks what a configuration built
    /// in code may get wrong: rule names (syntax, uniqueness across allow, deny and preset rules),
    /// non-empty rules, CIDRs without host bits, port ranges, presets listed once, sniff ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Rule name -> where it was first used. Nothing is formatted unless there is an error
        // (but default names, which a parsed configuration no longer has).
        let mut names: FxHashMap<Cow<'_, str>, Place> = FxHashMap::default();
        names.reserve(self.allow.len() + self.deny.len());
        for (list, rules) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, rule) in rules.iter().enumerate() {
                rule.validate(list, i)?;
                let name = if rule.name.is_empty() {
                    Cow::Owned(rule.name_or_default(list, i))
                } else {
                    Cow::Borrowed(rule.name.as_str())
                };
                if let Some(first) = names.get(&name) {
                    let at = Place::Rule(list, i);
                    return Err(if rule.name.is_empty() {
                        ConfigError::duplicate(
                            at.to_string(),
                            format!("the default name {name:?} is already used by {first}; name this rule"),
                        )
                    } else {
                        ConfigError::duplicate(
                            format!("{at}.name"),
                            format!("{name:?} is already used by {first}"),
                        )
                    });
                }
                names.insert(name, Place::Rule(list, i));
            }
        }
        // Each list's presets: listed once, and their rule names unique among all rules.
        let allow: Vec<(&str, Vec<String>)> = self
            .presets
            .iter()
            .map(|p| {
                (
                    p.name(),
                    (0..p.info().rules.len()).map(|n| p.rule_name(n)).collect(),
                )
            })
            .collect();
        let deny: Vec<(&str, Vec<String>)> = self
            .deny_presets
            .iter()
            .map(|p| {
                (
                    p.name(),
                    (0..p.info().rules.len()).map(|n| p.rule_name(n)).collect(),
                )
            })
            .collect();
        for (list, listed) in [("presets", allow), ("deny_presets", deny)] {
            let mut presets: FxHashMap<&str, usize> = FxHashMap::default();
            for (i, (preset, rule_names)) in listed.into_iter().enumerate() {
                let at = Place::Preset(list, i);
                if let Some(first) = presets.insert(preset, i) {
                    return Err(ConfigError::duplicate(
                        at.to_string(),
                        format!("{preset:?} is already listed at {list}[{first}]"),
                    ));
                }
                for name in rule_names {
                    if let Some(first) = names.get(name.as_str()) {
                        return Err(ConfigError::duplicate(
                            at.to_string(),
                            format!("the preset's rule name {name:?} is already used by {first}; rename that rule"),
                        ));
                    }
                    names.insert(Cow::Owned(name), at);
                }
            }
        }
        self.sniff.validate()
    }

    /// The `pin` in force for an allow rule (its own, else the policy's).
    pub fn pins(&self, rule: &Rule) -> bool {
        rule.pin.unwrap_or(self.pin)
    }
}

/// Checks a rule name: `[a-z0-9_-]`, 1 to 64 characters.
pub fn check_rule_name(name: &str) -> Result<(), String> {
    if name.len() > 64 {
        return Err(format!(
            "{name:?} is too long for a rule name ({} characters, at most 64)",
            name.chars().count()
        ));
    }
    let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_');
    if name.is_empty() || !name.bytes().all(valid) {
        return Err(format!(
            "{name:?} is not a valid rule name: use 1-64 characters from a-z, 0-9, \"-\" and \"_\""
        ));
    }
    Ok(())
}

/// serde's derived `Deserialize` for a struct also accepts a JSON array of its fields in order;
/// the contract is objects only. Each struct derives with `remote = "Self"` (an inherent
/// `deserialize`) and gets this `Deserialize` impl, which asks for a map and hands it over.
macro_rules! object_only {
    ($ty:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                struct ObjectVisitor;
                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        $ty::deserialize(de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

object_only!(Config, "a JSON object");
object_only!(Rule, "a rule object");
object_only!(SniffConfig, "a sniff object");

string_only!(Mode, "a mode string");
string_only!(LogLevel, "a log level string");
string_only!(EchPolicy, "\"allow\" or \"deny\"");
string_only!(Severity, "a log level string (warn or info)");

fn check_range(value: i128, range: &RangeInclusive<u32>) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "{value} is out of range {}-{}",
            range.start(),
            range.end()
        )),
    }
}

fn de_pin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    // `"pin": null` is not a way to say "follow the policy": omit the key.
    bool::deserialize(d).map(Some)
}

fn de_rule_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_rule_name(&name).map_err(de::Error::custom)?;
    Ok(name)
}

const EMPTY_LIST: &str = "an empty list is not allowed: omit the key";

fn de_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HostPattern>, D::Error> {
    let mut hosts = Vec::<HostPattern>::deserialize(d)?;
    if hosts.is_empty() {
        return Err(de::Error::custom(EMPTY_LIST));
    }
    hosts.shrink_to_fit(); // A list grows by doubling; rules are many (issue 12: VM memory).
    Ok(hosts)
}

fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let cidrs = Vec::<Cidr>::deserialize(d)?;
    if cidrs.is_empty() {
        return Err(de::Error::custom(EMPTY_LIST));
    }
    let mut cidrs: Vec<IpNet> = cidrs.into_iter().map(|c| c.0).collect();
    cidrs.shrink_to_fit(); // As for hosts.
    Ok(cidrs)
}

fn de_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortRange>, D::Error> {
    let mut ports = Vec::<PortRange>::deserialize(d)?;
    if ports.is_empty() {
        return Err(de::Error::custom(EMPTY_LIST));
    }
    ports.shrink_to_fit(); // As for hosts.
    Ok(ports)
}

/// Reads any JSON integer (so that out-of-range values get a range message, not a type error).
fn de_int<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    struct IntVisitor;
    impl Visitor<'_> for IntVisitor {
        type Value = i128;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(i128::from(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(i128::from(v))
        }
    }
    d.deserialize_i64(IntVisitor)
}

fn de_max_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    check_range(de_int(d)?, &SniffConfig::MAX_BYTES).map_err(de::Error::custom)
}

fn de_timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    check_range(de_int(d)?, &SniffConfig::TIMEOUT_MS).map_err(de::Error::custom)
}

/// A configuration error: where (`path`) and why.
///
/// `Display` is `<path>: <message>`, or just the message for an error about the whole document
/// (empty path), e.g. `allow[2].cidrs[0]: "10.0.0.300/8" is not a CIDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, like `allow[2].cidrs[0]`; empty for the whole document.
    pub path: String,
    /// What sort of error.
    pub kind: ConfigErrorKind,
    /// The reason, meant for a person.
    pub message: String,
}

/// What sort of configuration error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The input is not well-formed JSON (syntax error, unexpected end, trailing characters).
    Syntax,
    /// A key or value does not fit the contract: unknown key, wrong type, invalid value.
    Invalid,
    /// A rule name or preset used twice.
    Duplicate,
    /// A rule with none of hosts, cidrs, ports.
    EmptyRule,
}

impl ConfigError {
    fn new(path: impl Into<String>, kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError::new(path, ConfigErrorKind::Invalid, message.to_string())
    }

    fn duplicate(path: impl Into<String>, message: String) -> Self {
        ConfigError::new(path, ConfigErrorKind::Duplicate, message)
    }

    fn from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = render_path(err.path());
        ConfigError::from_json(path, err.into_inner())
    }

    fn from_json(path: String, err: serde_json::Error) -> Self {
        // serde's messages quote unknown keys and variants as written.
        let mut message = one_line(&err.to_string());
        let kind = match err.classify() {
            serde_json::error::Category::Data => {
                // The path says where; drop serde_json's " at line L column C".
                let at = format!(" at line {} column {}", err.line(), err.column());
                if let Some(stripped) = message.strip_suffix(&at) {
                    message = stripped.to_string();
                }
                ConfigErrorKind::Invalid
            }
            _ => ConfigErrorKind::Syntax,
        };
        ConfigError {
            path,
            kind,
            message,
        }
    }
}

/// `allow[2].cidrs[0]` from serde_path_to_error's segments.
fn render_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&one_line(key));
            }
            // A key that failed to parse: the message carries line and column.
            Segment::Unknown => {}
        }
    }
    out
}

/// `text` with line breaks and other control characters escaped (`\n`, `\u{2028}`), so that an
/// error quoting a key or value from the configuration stays one line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
