//! The adapter's side of the session's [`Record`]: counters and the decision log; and the
//! connection properties it reads.

use std::net::SocketAddr;

use proxy_wasm::hostcalls;

use super::report;
use super::state::Shared;
use crate::policy::pin::{filter_state_request, LifeSpan, Target, SET_FILTER_STATE};
use crate::policy::Fingerprint;
use crate::session::{pin_end, FilterKind, Judged, PinOutcome, Record, SniffOutcome, UpstreamEnd};

use super::host;

/// The adapter's [`Record`]: counts every sniff outcome and decision, and logs decisions as the
/// policy's `log` setting says (nothing is formatted when nothing is logged).
pub(crate) struct Recorder<'a> {
    shared: &'a Shared,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Recorder<'a> {
        Recorder { shared }
    }
}

impl Record for Recorder<'_> {
    fn sniffed(&mut self, outcome: SniffOutcome) {
        self.shared.metrics.sniff(outcome);
    }

    fn judged(&mut self, judged: &Judged<'_>) {
        let shared = self.shared;
        let decision = &judged.decision;
        if let Some(kind) = judged.malformed {
            shared.metrics.malformed(kind);
        }
        if let Some(outcome) = judged.pin {
            shared.metrics.pin(outcome);
        }
        if let Some(outcome) = judged.ech {
            shared.metrics.ech(outcome);
        }
        shared.metrics.decision(
            &shared.policy,
            decision.verdict,
            decision.reason,
            decision.rule,
        );
        let Some(level) = report::wanted(&shared.policy, decision) else {
            return;
        };
        let dst = judged.observed.dst.to_string();
        let src = source_address();
        // `-` for a policy compiled without its JSON (never in the filter).
        let fingerprint = shared.policy.fingerprint();
        let policy = fingerprint.as_ref().map_or("-", Fingerprint::as_str);
        report::emit(
            level,
            &report::Record {
                decision: decision.verdict.as_str(),
                reason: decision.reason.as_str(),
                rule: report::rule_name(&shared.policy, decision),
                dst: &dst,
                name: judged.name(),
                name_source: judged.name_source(),
                proto: judged.observed.proto,
                src: src.as_deref(),
                filter: judged.observed.filter,
                mode: shared.policy.mode().as_str(),
                policy,
                detail: judged.detail,
                request: (judged.observed.request > 1).then_some(judged.observed.request),
                pinned: shared.policy.pinning().then_some(decision.pin),
                ech: judged.observed.ech,
            },
        );
    }

    /// Sets the three filter-state objects `tcp_proxy` and the dynamic forward proxy read (host,
    /// port, then the cluster: no connection is routed to the forward proxy without its host).
    fn pin(&mut self, target: &Target<'_>) -> bool {
        for (key, value) in target.filter_states() {
            let request = filter_state_request(key, &value, LifeSpan::DownstreamConnection);
            if let Err(status) = host::call_foreign_function(SET_FILTER_STATE, &request) {
                log::warn!(
                    "egress-guard: cannot pin {}:{}: Envoy refused filter state {key} (status \
                     {status}); closing the connection",
                    target.host,
                    target.port
                );
                return false;
            }
        }
        true
    }
}

/// At the end of a connection or request pinned to `name` (its access-log callback): when
/// Envoy found no upstream host for it ([`pin_end`]), counts `pin_total{outcome="unresolved"}`
/// and logs it. Reads the upstream's properties only for pinned ones.
pub(crate) fn pin_ended(shared: &Shared, name: &str, dst: SocketAddr, filter: FilterKind) {
    let end = UpstreamEnd {
        host: property_bytes(&["upstream", "address"]).is_some(),
        flags: property_bytes(&["response", "flags"])
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_le_bytes),
    };
    let Some(outcome) = pin_end(true, end) else {
        return;
    };
    shared.metrics.pin(outcome);
    debug_assert_eq!(outcome, PinOutcome::Unresolved);
    let Some(level) = report::wanted_unresolved(&shared.policy) else {
        return;
    };
    let fingerprint = shared.policy.fingerprint();
    report::emit(
        level,
        &report::Unresolved {
            event: "pin_unresolved",
            name,
            port: dst.port(),
            dst: &dst.to_string(),
            src: source_address().as_deref(),
            filter,
            pin_cluster: shared.policy.pin_cluster(),
            response_flags: end.flags,
            mode: shared.policy.mode().as_str(),
            policy: fingerprint.as_ref().map_or("-", Fingerprint::as_str),
        },
    );
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
