//! The proxy-wasm adapter: gathers a connection's or request's facts, asks the policy, applies the
//! decision, logs and counts. Everything that decides lives in [`crate::policy`] and
//! [`crate::sniff`].
//!
//! One module serves both filter types: only a root context is registered, and its `get_type`
//! picks an HTTP context when the new context has a request protocol, a stream context otherwise.

mod host;
mod http;
mod metrics;
mod report;
mod root;
mod stream;

use std::net::SocketAddr;

use proxy_wasm::hostcalls;

use crate::policy::name::NameClass;
use crate::policy::{Decision, Facts, NameFact, Reason, Verdict};
use report::{FilterKind, NameSource, Proto, Record};
use root::Shared;

proxy_wasm::main! {{
    // Installs the SDK's logger and its panic hook, which logs a panic at critical level before
    // the VM traps (Envoy then applies the filter's failure_policy).
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::new()));
}}

/// What the filter knows about one connection or request when it asks the policy.
pub(crate) struct Observed<'a> {
    /// The original destination.
    pub dst: SocketAddr,
    /// The name (SNI, Host or `:authority`) after normalisation, if one was seen.
    pub name: Option<&'a NameClass>,
    pub source: NameSource,
    pub proto: Proto,
    pub filter: FilterKind,
    /// A finding that overrides the name: the input was malformed or too large.
    pub anomaly: Option<Anomaly>,
    /// Which request on an HTTP/1 connection this is (1 for the first, or for anything else).
    pub request: u32,
}

impl Observed<'static> {
    /// A network-filter connection decided without a name: on IP and port, or on an anomaly.
    pub(crate) fn nameless(
        dst: SocketAddr,
        proto: Proto,
        anomaly: Option<Anomaly>,
        request: u32,
    ) -> Observed<'static> {
        Observed {
            dst,
            name: None,
            source: NameSource::None,
            proto,
            filter: FilterKind::Network,
            anomaly,
            request,
        }
    }
}

/// Input the filter could not take a name from, and must not let a host rule allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anomaly {
    /// Broke the rules of its protocol, or carried a malformed name; the detail names how.
    Malformed(&'static str),
    /// Larger than `sniff.max_bytes` before a name could be found.
    TooLarge,
}

/// Asks the policy, counts the decision and logs it (as the policy's `log` setting says).
pub(crate) fn judge(shared: &Shared, seen: &Observed<'_>) -> Decision {
    let mut detail = None;
    let name = match (seen.anomaly, seen.name) {
        (Some(Anomaly::Malformed(what)), _) => {
            detail = Some(what);
            NameFact::Malformed
        }
        (Some(Anomaly::TooLarge), _) => NameFact::TooLarge,
        (None, Some(NameClass::Name(name))) => NameFact::Name(name),
        (None, Some(NameClass::Malformed(kind))) => {
            detail = Some(kind.as_str());
            NameFact::Malformed
        }
        // An IP literal is not a name: the destination IP already is that fact.
        (None, Some(NameClass::IpLiteral(_)) | None) => NameFact::Absent,
    };
    if let Some(kind) = detail {
        shared.metrics.malformed(kind);
    }
    let mut decision = shared.policy.decide(&Facts {
        ip: seen.dst.ip(),
        port: seen.dst.port(),
        name,
    });
    if seen.request > 1 && decision.verdict != Verdict::Allow && detail.is_none() {
        // A later request the policy refuses closes a connection already allowed: its own
        // reason, with the policy's reason as the detail.
        detail = Some(decision.reason.as_str());
        decision.reason = Reason::LaterRequest;
    }
    shared.metrics.decision(
        &shared.policy,
        decision.verdict,
        decision.reason,
        decision.rule,
    );
    if report::wanted(&shared.policy, &decision) {
        let dst = seen.dst.to_string();
        let src = source_address();
        let name = match seen.name {
            Some(NameClass::Name(name)) => Some(name.as_str()),
            _ => None,
        };
        report::emit(&Record {
            decision: decision.verdict.as_str(),
            reason: decision.reason.as_str(),
            rule: report::rule_name(&shared.policy, &decision),
            dst: &dst,
            name,
            name_source: if seen.name.is_some() {
                seen.source
            } else {
                NameSource::None
            },
            proto: seen.proto,
            src: src.as_deref(),
            filter: seen.filter,
            detail,
            request: (seen.request > 1).then_some(seen.request),
        });
    }
    decision
}

/// The connection's original destination (`destination.address`, restored by `original_dst`).
pub(crate) fn destination() -> Option<SocketAddr> {
    property_string(&["destination", "address"])?.parse().ok()
}

fn source_address() -> Option<String> {
    property_string(&["source", "address"])
}

/// A string property, or None if the host has none (or cannot say).
pub(crate) fn property_string(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok()??;
    String::from_utf8(bytes).ok()
}

/// A bytes property, or None.
pub(crate) fn property_bytes(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok()?
}
