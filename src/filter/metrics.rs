//! Counters, named with Istio's tag convention (`tag=.=value;.;metric_name`), so that Envoy's
//! `stats_tags` (or Istio's `extraStatTags`) turn them into Prometheus labels. Without tag
//! extraction the raw names still contain `egress_guard`.
//!
//! Decision and sniff counters are defined when the configuration is applied so that dashboards
//! see them at zero; per-rule counters are defined on a rule's first match (a policy may hold
//! 100,000 rules, and Envoy keeps every defined stat).

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use rustc_hash::FxHashMap;

use crate::policy::{Policy, Reason, RuleId, Verdict};

/// What the network filter learned from the client's first bytes; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SniffOutcome {
    /// SNI from Envoy's `tls_inspector` at connection open.
    InspectorSni,
    /// Our ClientHello parse found an SNI.
    TlsSni,
    /// A ClientHello without SNI.
    TlsNoSni,
    /// An HTTP/1 request head with a name (Host or absolute-form authority).
    HttpHost,
    /// An HTTP/1 request head without a name.
    HttpNoHost,
    /// Neither TLS nor HTTP/1.
    Other,
    /// The client sent nothing (or not enough) within `sniff.timeout_ms`.
    Timeout,
    /// More than `sniff.max_bytes` without a complete ClientHello or request head.
    TooLarge,
    /// A second or later request head on an HTTP/1 connection (keep-alive or pipelined).
    HttpLaterRequest,
    /// A ClientHello or request head that breaks its rules (a well-formed one carrying a
    /// malformed name counts under its protocol's outcome; the name's kind goes to
    /// `egress_guard_malformed_total`).
    Malformed,
}

impl SniffOutcome {
    const ALL: [SniffOutcome; 10] = [
        SniffOutcome::InspectorSni,
        SniffOutcome::TlsSni,
        SniffOutcome::TlsNoSni,
        SniffOutcome::HttpHost,
        SniffOutcome::HttpNoHost,
        SniffOutcome::Other,
        SniffOutcome::Timeout,
        SniffOutcome::TooLarge,
        SniffOutcome::HttpLaterRequest,
        SniffOutcome::Malformed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SniffOutcome::InspectorSni => "inspector_sni",
            SniffOutcome::TlsSni => "tls_sni",
            SniffOutcome::TlsNoSni => "tls_no_sni",
            SniffOutcome::HttpHost => "http_host",
            SniffOutcome::HttpNoHost => "http_no_host",
            SniffOutcome::Other => "other",
            SniffOutcome::Timeout => "timeout",
            SniffOutcome::TooLarge => "too_large",
            SniffOutcome::HttpLaterRequest => "http_later_request",
            SniffOutcome::Malformed => "malformed",
        }
    }
}

/// The counters of one filter configuration.
pub(crate) struct Metrics {
    decisions: RefCell<FxHashMap<(Verdict, Reason), u32>>,
    sniff: [Option<u32>; SniffOutcome::ALL.len()],
    malformed: RefCell<FxHashMap<&'static str, u32>>,
    rules: RefCell<Vec<Option<u32>>>,
}

impl Metrics {
    /// Defines the counters a policy can move.
    pub(crate) fn new(policy: &Policy) -> Metrics {
        let metrics = Metrics {
            decisions: RefCell::new(FxHashMap::default()),
            sniff: SniffOutcome::ALL.map(|o| {
                define(&format!(
                    "outcome=.={};.;egress_guard_sniff_total",
                    o.as_str()
                ))
            }),
            malformed: RefCell::new(FxHashMap::default()),
            rules: RefCell::new(vec![None; policy.rules().len()]),
        };
        for &(verdict, reason) in expected_decisions(policy) {
            metrics.decision_id(verdict, reason);
        }
        metrics
    }

    /// Counts one decision, and the rule that made it.
    pub(crate) fn decision(
        &self,
        policy: &Policy,
        verdict: Verdict,
        reason: Reason,
        rule: Option<RuleId>,
    ) {
        if let Some(id) = self.decision_id(verdict, reason) {
            increment(id);
        }
        if let Some(rule) = rule {
            if let Some(id) = self.rule_id(policy, rule) {
                increment(id);
            }
        }
    }

    /// Counts one sniff outcome.
    pub(crate) fn sniff(&self, outcome: SniffOutcome) {
        let index = SniffOutcome::ALL.iter().position(|&o| o == outcome);
        if let Some(Some(id)) = index.and_then(|i| self.sniff.get(i)) {
            increment(*id);
        }
    }

    /// Counts one malformed input by its detailed kind (`tls_sni_multiple_names`, `bad_byte`, …).
    pub(crate) fn malformed(&self, kind: &'static str) {
        let id = lazily(&self.malformed, kind, || {
            format!("kind=.={kind};.;egress_guard_malformed_total")
        });
        if let Some(id) = id {
            increment(id);
        }
    }

    fn decision_id(&self, verdict: Verdict, reason: Reason) -> Option<u32> {
        lazily(&self.decisions, (verdict, reason), || {
            format!(
                "decision=.={};.;reason=.={};.;egress_guard_decisions_total",
                verdict.as_str(),
                reason.as_str()
            )
        })
    }

    fn rule_id(&self, policy: &Policy, rule: RuleId) -> Option<u32> {
        let index = rule_index(rule);
        if let Some(Some(id)) = self.rules.borrow().get(index) {
            return Some(*id);
        }
        let info = policy.rules().get(index)?;
        let id = define(&format!(
            "rule=.={};.;egress_guard_rule_matches_total",
            info.name
        ))?;
        if let Some(slot) = self.rules.borrow_mut().get_mut(index) {
            *slot = Some(id);
        }
        Some(id)
    }
}

fn rule_index(rule: RuleId) -> usize {
    usize::try_from(rule).unwrap_or(usize::MAX)
}

/// The (verdict, reason) pairs a policy in its mode can produce, defined up front.
fn expected_decisions(policy: &Policy) -> &'static [(Verdict, Reason)] {
    use crate::policy::Mode;
    const COMMON: [(Verdict, Reason); 3] = [
        (Verdict::Deny, Reason::DenyRule),
        (Verdict::Deny, Reason::Malformed),
        (Verdict::Deny, Reason::TooLarge),
    ];
    const ALLOWLIST: [(Verdict, Reason); 6] = [
        COMMON[0],
        COMMON[1],
        COMMON[2],
        (Verdict::Allow, Reason::Rule),
        (Verdict::Deny, Reason::NoMatch),
        (Verdict::Deny, Reason::LaterRequest),
    ];
    const AUDIT: [(Verdict, Reason); 6] = [
        COMMON[0],
        COMMON[1],
        COMMON[2],
        (Verdict::Allow, Reason::Rule),
        (Verdict::AuditDeny, Reason::NoMatch),
        (Verdict::AuditDeny, Reason::LaterRequest),
    ];
    const PASSTHROUGH: [(Verdict, Reason); 5] = [
        COMMON[0],
        COMMON[1],
        COMMON[2],
        (Verdict::Allow, Reason::Passthrough),
        (Verdict::Deny, Reason::LaterRequest),
    ];
    match policy.mode() {
        Mode::Allowlist => &ALLOWLIST,
        Mode::Audit => &AUDIT,
        Mode::Passthrough => &PASSTHROUGH,
    }
}

fn lazily<K: std::hash::Hash + Eq + Copy>(
    cache: &RefCell<FxHashMap<K, u32>>,
    key: K,
    name: impl FnOnce() -> String,
) -> Option<u32> {
    if let Some(id) = cache.borrow().get(&key) {
        return Some(*id);
    }
    let id = define(&name())?;
    cache.borrow_mut().insert(key, id);
    Some(id)
}

fn define(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("egress-guard: cannot define metric {name}: {status:?}");
            None
        }
    }
}

fn increment(id: u32) {
    if let Err(status) = hostcalls::increment_metric(id, 1) {
        log::debug!("egress-guard: cannot increment metric {id}: {status:?}");
    }
}
