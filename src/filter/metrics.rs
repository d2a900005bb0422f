//! Counters, named with Istio's tag convention (`tag=.=value;.;metric_name`), so that Envoy's
//! `stats_tags` (or Istio's `extraStatTags`) turn them into Prometheus labels. Without tag
//! extraction the raw names still contain `egress_guard`.
//!
//! Decision, sniff and malformed-kind counters are defined when the configuration is applied so
//! that dashboards see them at zero; per-rule counters are defined on a rule's first match (a policy may hold
//! 100,000 rules, and Envoy keeps every defined stat).

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use rustc_hash::FxHashMap;

use crate::policy::{EchPolicy, Fingerprint, Policy, Reason, RuleId, RuleInfo, Verdict};
use crate::session::{EchOutcome, PinOutcome, SniffOutcome};

/// The counters of one filter configuration.
pub(crate) struct Metrics {
    /// `egress_guard_policy_info{policy}`, a gauge: 1 for the policy in force.
    policy: Option<u32>,
    decisions: RefCell<FxHashMap<(Verdict, Reason), u32>>,
    sniff: [Option<u32>; SniffOutcome::COUNT],
    malformed: RefCell<FxHashMap<&'static str, u32>>,
    /// Per rule: the decision its first match had, and that counter. A rule's kind fixes its
    /// decision (allow and preset rules allow, deny rules deny, staged rules would-deny), so
    /// `other` stays empty; it is there so that a counter never goes to the wrong series.
    rules: RefCell<Vec<Option<(Verdict, u32)>>>,
    other: RefCell<FxHashMap<(RuleId, Verdict), u32>>,
    /// Pin outcomes, defined when some rule pins.
    pin: [Option<u32>; PinOutcome::COUNT],
    /// What the `ech` setting did with ClientHellos carrying ECH.
    ech: [Option<u32>; EchOutcome::COUNT],
}

impl Metrics {
    /// Defines the counters a policy can move.
    pub(crate) fn new(policy: &Policy) -> Metrics {
        let fingerprint = policy.fingerprint();
        let hash = fingerprint.as_ref().map_or("-", Fingerprint::as_str);
        let metrics = Metrics {
            policy: define_gauge(&format!("policy=.={hash};.;egress_guard_policy_info")),
            decisions: RefCell::new(FxHashMap::default()),
            sniff: std::array::from_fn(|i| {
                let outcome = SniffOutcome::ALL.get(i)?;
                define(&format!("outcome=.={outcome};.;egress_guard_sniff_total"))
            }),
            malformed: RefCell::new(FxHashMap::default()),
            rules: RefCell::new(vec![None; policy.rules().len()]),
            pin: std::array::from_fn(|i| {
                let outcome = PinOutcome::ALL.get(i).filter(|_| policy.pinning())?;
                define(&format!("outcome=.={outcome};.;egress_guard_pin_total"))
            }),
            ech: std::array::from_fn(|i| {
                let outcome = EchOutcome::ALL.get(i)?;
                define(&format!("outcome=.={outcome};.;egress_guard_ech_total"))
            }),
            other: RefCell::new(FxHashMap::default()),
        };
        for &(verdict, reason) in expected_decisions(policy) {
            metrics.decision_id(verdict, reason);
        }
        if policy.pinning() {
            metrics.decision_id(Verdict::Deny, Reason::PinUnavailable);
        }
        if policy.ech() == EchPolicy::Deny {
            metrics.decision_id(Verdict::Deny, Reason::Ech);
        }
        if policy.has_staged() {
            // Staged deny rules' would-denies (a later request's one included), in any mode.
            metrics.decision_id(Verdict::AuditDeny, Reason::StagedDeny);
            metrics.decision_id(Verdict::AuditDeny, Reason::LaterRequest);
        }
        // Every malformed kind is defined now, at zero, so dashboards and alerts see them.
        for kind in crate::session::malformed_kinds() {
            lazily(&metrics.malformed, kind, || {
                format!("kind=.={kind};.;egress_guard_malformed_total")
            });
        }
        metrics
    }

    /// Counts one pin outcome.
    pub(crate) fn pin(&self, outcome: PinOutcome) {
        if let Some(Some(id)) = self.pin.get(outcome.index()) {
            increment(*id);
        }
    }

    /// Counts one ClientHello that carried ECH, by what the `ech` setting did.
    pub(crate) fn ech(&self, outcome: EchOutcome) {
        if let Some(Some(id)) = self.ech.get(outcome.index()) {
            increment(*id);
        }
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
            if let Some(id) = self.rule_id(policy, rule, verdict) {
                increment(id);
            }
        }
    }

    /// Sets the policy gauge: 1 while the policy is in force, 0 once replaced.
    pub(crate) fn policy_info(&self, value: u64) {
        if let Some(id) = self.policy {
            if let Err(status) = hostcalls::record_metric(id, value) {
                log::debug!("egress-guard: cannot set metric {id}: {status:?}");
            }
        }
    }

    /// Counts one sniff outcome.
    pub(crate) fn sniff(&self, outcome: SniffOutcome) {
        if let Some(Some(id)) = self.sniff.get(outcome.index()) {
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

    /// `egress_guard_rule_matches_total{rule, kind, decision}`: one series per rule (its kind
    /// fixes its decision), defined on its first match.
    fn rule_id(&self, policy: &Policy, rule: RuleId, verdict: Verdict) -> Option<u32> {
        let index = rule_index(rule);
        let first = self.rules.borrow().get(index).copied().flatten();
        match first {
            Some((seen, id)) if seen == verdict => return Some(id),
            Some(_) => {}
            None => {
                let id = define(&rule_metric(policy.rules().get(index)?, verdict))?;
                if let Some(slot) = self.rules.borrow_mut().get_mut(index) {
                    *slot = Some((verdict, id));
                }
                return Some(id);
            }
        }
        let info = policy.rules().get(index)?;
        lazily(&self.other, (rule, verdict), || rule_metric(info, verdict))
    }
}

fn rule_metric(info: &RuleInfo, verdict: Verdict) -> String {
    format!(
        "rule=.={};.;kind=.={};.;decision=.={};.;egress_guard_rule_matches_total",
        info.name,
        info.class(),
        verdict.as_str()
    )
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
    define_metric(MetricType::Counter, name)
}

fn define_gauge(name: &str) -> Option<u32> {
    define_metric(MetricType::Gauge, name)
}

fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
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
