//! `replay LOG... --policy NEW [--json]`: every logged connection decided again by a new
//! policy, and what would change.
//!
//! Each record's destination, name and what the filter made of the client's bytes are turned
//! back into the facts the filter decided on, and `Policy::decide` decides them. A change is a
//! change of verdict: newly denied, newly allowed, newly an audit would-deny, no longer one.
//! Changes are grouped by name and destination (with the old and new reason and rule) and
//! counted. Exit 3 when something would be newly denied.
//!
//! A log holds what the old policy's `log` setting wrote: with `"denied"` (the default)
//! allowed connections are not in it, so what a new policy would newly deny can only be seen in
//! a log written with `"log": "all"` (or in audit mode, whose would-denies are logged).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use egress_guard::policy::{
    classify_sni, Decision, EchPolicy, Facts, NameFact, Policy, Reason, Verdict,
};
use serde::Serialize;

use crate::io::{err, out, read_input, Exit, UsageError};
use crate::logs::{self, Record};

/// A kind of change, in the order they are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// It passed (allow or audit_deny) and would be denied.
    NewlyDenied,
    /// It was denied and would pass.
    NewlyAllowed,
    /// It was allowed and would be an audit would-deny (denied once the policy enforces).
    NewlyAuditDeny,
    /// It was an audit would-deny and would be allowed.
    NoLongerAuditDeny,
}

impl Change {
    fn of(old: &str, new: Verdict) -> Option<Change> {
        match (old, new) {
            ("allow" | "audit_deny", Verdict::Deny) => Some(Change::NewlyDenied),
            ("deny", Verdict::Allow | Verdict::AuditDeny) => Some(Change::NewlyAllowed),
            ("allow", Verdict::AuditDeny) => Some(Change::NewlyAuditDeny),
            ("audit_deny", Verdict::Allow) => Some(Change::NoLongerAuditDeny),
            _ => None,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Change::NewlyDenied => "newly denied",
            Change::NewlyAllowed => "newly allowed",
            Change::NewlyAuditDeny => "newly audit_deny (would be denied once enforced)",
            Change::NoLongerAuditDeny => "no longer audit_deny",
        }
    }
}

/// A decision, as logged or as decided again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Outcome {
    /// `allow`, `deny` or `audit_deny`.
    pub decision: String,
    /// The reason.
    pub reason: String,
    /// The deciding rule.
    pub rule: Option<String>,
}

impl Outcome {
    fn text(&self) -> String {
        match &self.rule {
            Some(rule) => format!("{} ({} {rule})", self.decision, self.reason),
            None => format!("{} ({})", self.decision, self.reason),
        }
    }
}

/// One group of changed connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// What changed.
    pub change: Change,
    /// How many logged connections.
    pub count: usize,
    /// The name, or `null` for connections without one.
    pub name: Option<String>,
    /// `ip:port`.
    pub dst: String,
    /// As logged.
    pub old: Outcome,
    /// As the new policy decides.
    pub new: Outcome,
}

/// The `--json` report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    /// Inputs, lines, records, skipped and unreadable lines.
    lines: usize,
    records: usize,
    skipped_lines: usize,
    unreadable: usize,
    /// Records that cannot be decided again (no destination, a malformed `dst`).
    undecidable: usize,
    /// Records whose verdict does not change.
    unchanged: usize,
    /// Connections per kind of change.
    newly_denied: usize,
    newly_allowed: usize,
    newly_audit_deny: usize,
    no_longer_audit_deny: usize,
    changes: &'a [Group],
}

/// What the filter knew of the name, rebuilt from a record.
fn name_fact<'a>(record: &Record, name: Option<&'a str>) -> NameFact<'a> {
    let why = match record.reason.as_str() {
        // A later request's own reason is in `detail`.
        "later_request" => record.detail.as_deref().unwrap_or(""),
        reason => reason,
    };
    match why {
        "malformed" => NameFact::Malformed,
        "too_large" => NameFact::TooLarge,
        _ => match name {
            Some(name) => match classify_sni(name.as_bytes()) {
                egress_guard::policy::NameClass::Name(_) => NameFact::Name(name),
                egress_guard::policy::NameClass::IpLiteral(_) => NameFact::Absent,
                egress_guard::policy::NameClass::Malformed(_) => NameFact::Malformed,
            },
            None => NameFact::Absent,
        },
    }
}

/// Decides every record again; returns the groups of changes (sorted), the number unchanged
/// and the number that cannot be decided.
pub fn replay(policy: &Policy, records: &[Record]) -> (Vec<Group>, usize, usize) {
    let mut groups: BTreeMap<(Change, Option<String>, String, Outcome, Outcome), usize> =
        BTreeMap::new();
    let mut unchanged = 0;
    let mut undecidable = 0;
    for record in records {
        let Ok(dst) = record.dst.parse::<SocketAddr>() else {
            undecidable += 1;
            continue;
        };
        if record.reason == "no_destination" {
            undecidable += 1;
            continue;
        }
        let name = record.name.as_deref().filter(|n| !n.is_empty());
        let mut decision = policy.decide(&Facts {
            ip: dst.ip(),
            port: dst.port(),
            name: name_fact(record, name),
        });
        // A ClientHello logged as carrying ECH meets `"ech": "deny"` as in the filter (a deny
        // rule or a malformed name keeps its own reason).
        if record.ech
            && policy.ech() == EchPolicy::Deny
            && !matches!(
                decision.reason,
                Reason::DenyRule | Reason::Malformed | Reason::TooLarge
            )
        {
            decision = Decision::new(Verdict::Deny, Reason::Ech, None);
        }
        let Some(change) = Change::of(&record.decision, decision.verdict) else {
            unchanged += 1;
            continue;
        };
        let old = Outcome {
            decision: record.decision.clone(),
            reason: record.reason.clone(),
            rule: record.rule.clone(),
        };
        let new = Outcome {
            decision: decision.verdict.as_str().to_string(),
            reason: decision.reason.as_str().to_string(),
            rule: decision
                .rule
                .and_then(|id| policy.rule(id))
                .map(|r| r.name.clone()),
        };
        *groups
            .entry((
                change,
                name.map(str::to_string),
                record.dst.clone(),
                old,
                new,
            ))
            .or_default() += 1;
    }
    let mut out = groups
        .into_iter()
        .map(|((change, name, dst, old, new), count)| Group {
            change,
            count,
            name,
            dst,
            old,
            new,
        })
        .collect::<Vec<_>>();
    // By kind of change, then the most connections first, then name and destination.
    out.sort_by(|a, b| {
        (a.change, std::cmp::Reverse(a.count), &a.name, &a.dst).cmp(&(
            b.change,
            std::cmp::Reverse(b.count),
            &b.name,
            &b.dst,
        ))
    });
    (out, unchanged, undecidable)
}

fn total(groups: &[Group], change: Change) -> usize {
    groups
        .iter()
        .filter(|g| g.change == change)
        .map(|g| g.count)
        .sum()
}

pub fn run(logs: &[PathBuf], policy_path: &Path, json: bool) -> Result<Exit, UsageError> {
    let input = read_input(policy_path)?;
    let policy = match Policy::from_json(&input.bytes) {
        Ok(policy) => policy,
        Err(e) => {
            err(&format!("{}: {e}", input.label));
            return Ok(Exit::Invalid);
        }
    };
    let (records, stats) = logs::read(logs)?;
    let (groups, unchanged, undecidable) = replay(&policy, &records);
    let newly_denied = total(&groups, Change::NewlyDenied);
    if json {
        let report = Report {
            lines: stats.lines,
            records: stats.records,
            skipped_lines: stats.skipped,
            unreadable: stats.unreadable,
            undecidable,
            unchanged,
            newly_denied,
            newly_allowed: total(&groups, Change::NewlyAllowed),
            newly_audit_deny: total(&groups, Change::NewlyAuditDeny),
            no_longer_audit_deny: total(&groups, Change::NoLongerAuditDeny),
            changes: &groups,
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| UsageError(format!("cannot format JSON: {e}")))?;
        out(&(text + "\n"))?;
    } else {
        out(&text(&groups))?;
    }
    let passed = records.iter().filter(|r| r.decision == "allow").count();
    let mut summary = format!(
        "egress-guard replay: {} decision record{} from {} line{} ({} other line{} skipped, {} \
         unreadable); {} unchanged, {} changed, {} undecidable",
        stats.records,
        plural(stats.records),
        stats.lines,
        plural(stats.lines),
        stats.skipped,
        plural(stats.skipped),
        stats.unreadable,
        unchanged,
        groups.iter().map(|g| g.count).sum::<usize>(),
        undecidable
    );
    if passed == 0 && stats.records > 0 {
        summary.push_str(
            "\nnote: the logs hold no allowed connection (the old policy's \"log\" was \
             \"denied\"?): connections the new policy would newly deny among them cannot be seen; \
             collect with \"log\": \"all\" or in audit mode",
        );
    }
    err(&summary);
    Ok(if newly_denied > 0 {
        Exit::Denied
    } else {
        Exit::Ok
    })
}

/// The text form: one section per kind of change.
fn text(groups: &[Group]) -> String {
    let mut text = String::new();
    let mut current = None;
    let width = groups
        .iter()
        .map(|g| g.name.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(1);
    let dst_width = groups.iter().map(|g| g.dst.len()).max().unwrap_or(1);
    for group in groups {
        if current != Some(group.change) {
            current = Some(group.change);
            let n = total(groups, group.change);
            let _ = writeln!(
                text,
                "{}: {n} connection{}",
                group.change.title(),
                plural(n)
            );
        }
        let _ = writeln!(
            text,
            "  {:>6}  {:<width$}  {:<dst_width$}  {} -> {}",
            group.count,
            group.name.as_deref().unwrap_or("-"),
            group.dst,
            group.old.text(),
            group.new.text()
        );
    }
    if groups.is_empty() {
        text.push_str("no change\n");
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: &str, reason: &str, dst: &str, name: Option<&str>) -> Record {
        Record {
            decision: decision.into(),
            reason: reason.into(),
            rule: None,
            dst: dst.into(),
            name: name.map(Into::into),
            name_source: None,
            proto: None,
            detail: None,
            ech: false,
        }
    }

    #[test]
    fn ech_deny_refuses_what_was_logged_with_ech() {
        let policy = Policy::from_json(
            br#"{"ech": "deny", "allow": [{"name": "a", "hosts": ["a.example"]}]}"#,
        )
        .unwrap();
        let mut with_ech = record("allow", "rule", "192.0.2.1:443", Some("a.example"));
        with_ech.ech = true;
        let records = [
            with_ech,
            record("allow", "rule", "192.0.2.1:443", Some("a.example")),
        ];
        let (groups, unchanged, _) = replay(&policy, &records);
        assert_eq!(unchanged, 1);
        let summary = groups
            .iter()
            .map(|g| (g.change, g.count, g.new.reason.as_str()))
            .collect::<Vec<_>>();
        assert_eq!(summary, [(Change::NewlyDenied, 1, "ech")]);
        // Under the default ech: allow, a line denied for ECH is decided on its name.
        let policy =
            Policy::from_json(br#"{"allow": [{"name": "a", "hosts": ["a.example"]}]}"#).unwrap();
        let mut denied = record("deny", "ech", "192.0.2.1:443", Some("a.example"));
        denied.ech = true;
        let (groups, _, _) = replay(&policy, &[denied]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].change, Change::NewlyAllowed);
    }

    #[test]
    fn changes_by_verdict() {
        let policy = Policy::from_json(
            br#"{"allow": [{"name": "gh", "hosts": ["github.com"], "ports": [443]}]}"#,
        )
        .unwrap();
        let records = [
            record("allow", "rule", "192.0.2.1:443", Some("github.com")),
            record("allow", "rule", "192.0.2.1:443", Some("gitlab.com")),
            record("allow", "rule", "192.0.2.1:443", Some("gitlab.com")),
            record("deny", "no_match", "192.0.2.1:443", Some("github.com")),
            record("deny", "malformed", "192.0.2.1:443", None),
            record("audit_deny", "no_match", "192.0.2.9:22", None),
            record("deny", "no_destination", "0.0.0.0:0", None),
        ];
        let (groups, unchanged, undecidable) = replay(&policy, &records);
        assert_eq!((unchanged, undecidable), (2, 1));
        let summary = groups
            .iter()
            .map(|g| (g.change, g.count, g.name.clone(), g.new.reason.clone()))
            .collect::<Vec<_>>();
        assert_eq!(
            summary,
            [
                (
                    Change::NewlyDenied,
                    2,
                    Some("gitlab.com".into()),
                    "no_match".into()
                ),
                (Change::NewlyDenied, 1, None, "no_match".into()),
                (
                    Change::NewlyAllowed,
                    1,
                    Some("github.com".into()),
                    "rule".into()
                ),
            ]
        );
    }
}
