//! The JSON decision log line (README.md, "Logs and counters").

use serde::Serialize;

use crate::policy::{Decision, LogLevel, Policy, Severity, Verdict};
use crate::session::{FilterKind, NameSource, Proto};

/// One decision, as logged.
#[derive(Serialize)]
pub(crate) struct Record<'a> {
    pub decision: &'static str,
    pub reason: &'static str,
    pub rule: Option<&'a str>,
    pub dst: &'a str,
    pub name: Option<&'a str>,
    pub name_source: NameSource,
    pub proto: Proto,
    pub src: Option<&'a str>,
    pub filter: FilterKind,
    /// The policy's mode.
    pub mode: &'static str,
    /// The policy's fingerprint (`egress-guard check` prints it for a file).
    pub policy: &'a str,
    /// Why the input was malformed, or the policy's reason for a later request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
    /// Which request on an HTTP/1 connection, for the second and later ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u32>,
    /// Whether the connection goes to its name (resolved by Envoy) rather than to `dst`; only
    /// when the policy pins at all, so other policies' lines stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    /// The ClientHello carried `encrypted_client_hello` (real or GREASE ECH): `name` is its
    /// outer SNI. Only on such lines.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ech: bool,
}

/// A connection or request pinned to a name that Envoy found no upstream host for (the name did
/// not resolve): it was closed (or answered `503`) by Envoy, after the decision's own line.
#[derive(Serialize)]
pub(crate) struct Unresolved<'a> {
    /// Always `pin_unresolved`: tells this line from a decision's.
    pub event: &'static str,
    pub name: &'a str,
    pub port: u16,
    pub dst: &'a str,
    pub src: Option<&'a str>,
    pub filter: FilterKind,
    pub pin_cluster: &'a str,
    /// Envoy's response flags, as the bit mask `response.flags` gave.
    pub response_flags: u64,
    pub mode: &'static str,
    pub policy: &'a str,
}

/// The level to log a pinned connection that found no host at: as a denial, at the policy's
/// `log_level`, unless the policy logs nothing.
pub(crate) fn wanted_unresolved(policy: &Policy) -> Option<log::Level> {
    let level = match policy.log_level() {
        Severity::Info => log::Level::Info,
        Severity::Warn => log::Level::Warn,
    };
    (policy.log() != LogLevel::None && log::log_enabled!(level)).then_some(level)
}

/// The level to log this decision at, if the policy's `log` setting wants it logged and the
/// proxy would keep a line at that level: denials and would-denials at the policy's `log_level`
/// (`warn` by default), allows at `info`. Checked before anything is formatted: a log hostcall
/// per connection costs a third of the connection rate.
pub(crate) fn wanted(policy: &Policy, decision: &Decision) -> Option<log::Level> {
    let selected = match policy.log() {
        LogLevel::None => false,
        LogLevel::Denied => decision.verdict != Verdict::Allow,
        LogLevel::All => true,
    };
    let level = match (decision.verdict, policy.log_level()) {
        (Verdict::Allow, _) | (_, Severity::Info) => log::Level::Info,
        (Verdict::Deny | Verdict::AuditDeny, Severity::Warn) => log::Level::Warn,
    };
    (selected && log::log_enabled!(level)).then_some(level)
}

/// The rule's name for the log.
pub(crate) fn rule_name<'p>(policy: &'p Policy, decision: &Decision) -> Option<&'p str> {
    let index = usize::try_from(decision.rule?).ok()?;
    policy.rules().get(index).map(|r| r.name.as_str())
}

/// Writes the record as one JSON line through the proxy's log, at `level`.
pub(crate) fn emit(level: log::Level, record: &impl Serialize) {
    match serde_json::to_string(record) {
        Ok(line) => log::log!(level, "{line}"),
        Err(err) => log::warn!("egress-guard: cannot format decision log: {err}"),
    }
}
