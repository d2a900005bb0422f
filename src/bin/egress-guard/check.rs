//! `check [--strict] [--json] FILE...`: the filter's own validation, every error, lints, and a
//! summary of what it accepted.
//!
//! A FILE is a JSON policy, or a file holding policies: an Envoy configuration, an ECDS
//! resource, Istio EnvoyFilters and WasmPlugins (YAML, several documents per file, or JSON).
//! Every copy of the policy in it is validated, and copies that differ are reported.

use std::fmt::Write as _;
use std::path::PathBuf;

use egress_guard::policy::{Config, ConfigError, ConfigErrorKind, EchPolicy, Policy};
use serde::Serialize;
use serde_json::Value;

use crate::container::{self, CopyKind};
use crate::io::{err, out, read_input, Exit, UsageError};
use crate::lint::{lint, Warning};

/// Checks every file; reports each. Exit: 2 if a file could not be read, else 1 if one is
/// invalid (or has copies that disagree, or warnings under `--strict`), else 0.
pub fn run(paths: &[PathBuf], strict: bool, json: bool) -> Result<Exit, UsageError> {
    let mut files = Vec::new();
    let mut exit = Exit::Ok;
    for path in paths {
        let report = match read_input(path) {
            Ok(input) => check_file(&input.label, &input.bytes),
            Err(e) => {
                exit = Exit::Usage;
                FileReport::failed(path.display().to_string(), e.0, true)
            }
        };
        if !json {
            print_text(&report)?;
        }
        files.push(report);
    }
    let errors = files.iter().map(FileReport::error_count).sum::<usize>();
    let warnings = files.iter().map(FileReport::warning_count).sum::<usize>();
    if exit == Exit::Ok && (errors > 0 || (strict && warnings > 0)) {
        exit = Exit::Invalid;
    }
    if json {
        let report = Report {
            ok: exit == Exit::Ok,
            strict,
            errors,
            warnings,
            files,
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| UsageError(format!("cannot format JSON: {e}")))?;
        out(&(text + "\n"))?;
    }
    Ok(exit)
}

/// The `--json` report.
#[derive(Debug, Serialize)]
struct Report {
    /// Whether the exit code is 0.
    ok: bool,
    /// Whether warnings count as errors.
    strict: bool,
    /// Errors over all files (unreadable files, YAML errors, invalid policies, disagreements).
    errors: usize,
    /// Warnings over all files.
    warnings: usize,
    files: Vec<FileReport>,
}

#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    /// Whether the file is fine (no error; warnings allowed).
    ok: bool,
    /// What stopped the file from being checked: unreadable, not YAML, no policy in it.
    error: Option<String>,
    #[serde(skip)]
    unreadable: bool,
    /// Whether the file is a policy itself (`false`: a file that holds copies of one).
    policy_file: bool,
    copies: Vec<CopyReport>,
    disagreements: Vec<Disagreement>,
}

#[derive(Debug, Serialize)]
struct CopyReport {
    /// Line of the filter's `config` or the WasmPlugin's `pluginConfig` (`null` for a policy
    /// file).
    line: Option<usize>,
    /// Where in its YAML document.
    path: Option<String>,
    /// Its YAML document, from 1.
    document: Option<usize>,
    /// `policy`, `wasm_filter` or `wasm_plugin`.
    kind: &'static str,
    ok: bool,
    /// The line of an earlier copy with the same policy; its errors and warnings are reported
    /// there only.
    same_as: Option<usize>,
    summary: Option<SummaryReport>,
    errors: Vec<ErrorReport>,
    warnings: Vec<Warning>,
}

#[derive(Debug, Serialize)]
struct SummaryReport {
    mode: &'static str,
    rules: usize,
    allow_rules: usize,
    deny_rules: usize,
    /// Deny rules staged with `"enforce": false` (counted in `deny_rules` too).
    staged_rules: usize,
    /// Their names.
    staged: Vec<String>,
    preset_rules: usize,
    hosts: usize,
    cidrs: usize,
    presets: Vec<&'static str>,
    deny_presets: Vec<&'static str>,
    sniff: SniffReport,
    log: &'static str,
    log_level: &'static str,
    /// The fingerprint the filter logs (`policy` in its decision lines, the `policy loaded` line
    /// and `egress_guard_policy_info`).
    policy: Option<String>,
    /// Present when some allow rule pins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<PinReport>,
}

#[derive(Debug, Serialize)]
struct PinReport {
    /// Allow rules (preset rules included) whose allows by name are pinned.
    rules: usize,
    /// The dynamic forward proxy cluster pinned connections go to.
    cluster: String,
    /// `"ech": "deny"`: the inspector's SNI no longer decides at open (only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ech_deny: bool,
}

#[derive(Debug, Serialize)]
struct SniffReport {
    max_bytes: u32,
    timeout_ms: u32,
    hold_upstream: bool,
}

#[derive(Debug, Serialize)]
struct ErrorReport {
    /// Field path in the policy (`""` for the whole document).
    path: String,
    /// `syntax`, `invalid`, `duplicate`, `empty_rule`, or `unreadable` for a copy that is not
    /// JSON text.
    kind: &'static str,
    /// The reason (the text form is `<path>: <message>`, as the filter logs it).
    message: String,
}

impl ErrorReport {
    /// `<path>: <message>`, or the message alone for the whole document.
    fn text(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, Serialize)]
struct Disagreement {
    /// The copy that differs.
    line: usize,
    /// The first copy, which it differs from.
    differs_from_line: usize,
    /// The first field where they differ.
    at: String,
    message: String,
}

impl FileReport {
    fn failed(file: String, error: String, unreadable: bool) -> FileReport {
        FileReport {
            file,
            ok: false,
            error: Some(error),
            unreadable,
            policy_file: false,
            copies: Vec::new(),
            disagreements: Vec::new(),
        }
    }

    fn error_count(&self) -> usize {
        usize::from(self.error.is_some())
            + self.copies.iter().map(|c| c.errors.len()).sum::<usize>()
            + self.disagreements.len()
    }

    fn warning_count(&self) -> usize {
        self.copies.iter().map(|c| c.warnings.len()).sum()
    }
}

fn kind_name(kind: ConfigErrorKind) -> &'static str {
    match kind {
        ConfigErrorKind::Syntax => "syntax",
        ConfigErrorKind::Duplicate => "duplicate",
        ConfigErrorKind::EmptyRule => "empty_rule",
        _ => "invalid",
    }
}

fn summary_report(policy: &Policy) -> SummaryReport {
    let s = policy.summary();
    let sniff = policy.sniff();
    SummaryReport {
        mode: s.mode.as_str(),
        rules: s.rules(),
        allow_rules: s.allow_rules,
        deny_rules: s.deny_rules,
        staged_rules: s.staged_rules,
        staged: policy
            .rules()
            .iter()
            .filter(|r| !r.enforce)
            .map(|r| r.name.clone())
            .collect(),
        preset_rules: s.preset_rules,
        hosts: s.hosts,
        cidrs: s.cidrs,
        presets: policy.presets().iter().map(|p| p.name()).collect(),
        deny_presets: policy.deny_presets().iter().map(|p| p.name()).collect(),
        sniff: SniffReport {
            max_bytes: sniff.max_bytes,
            timeout_ms: sniff.timeout_ms,
            hold_upstream: sniff.hold_upstream,
        },
        log: policy.log().as_str(),
        pin: policy.pinning().then(|| PinReport {
            rules: s.pinned_rules,
            cluster: policy.pin_cluster().to_string(),
            ech_deny: policy.ech() == EchPolicy::Deny,
        }),
        log_level: policy.log_level().as_str(),
        policy: policy.fingerprint().map(|f| f.to_string()),
    }
}

/// One policy text, checked. Also returns the parsed configuration (to compare copies).
fn check_policy(
    bytes: &[u8],
    kind: &'static str,
    at: Option<(usize, usize, String)>,
) -> (CopyReport, Option<Config>, Option<Policy>) {
    let lint = lint(bytes);
    let (line, document, path) = match at {
        Some((line, doc, path)) => (Some(line), Some(doc), Some(path)),
        None => (None, None, None),
    };
    let report = CopyReport {
        line,
        path,
        document,
        kind,
        ok: lint.errors.is_empty(),
        same_as: None,
        summary: lint.policy.as_ref().map(summary_report),
        errors: lint
            .errors
            .iter()
            .map(|e: &ConfigError| ErrorReport {
                path: e.path.clone(),
                kind: kind_name(e.kind),
                message: e.message.clone(),
            })
            .collect(),
        warnings: lint.warnings,
    };
    (report, lint.config, lint.policy)
}

fn check_file(label: &str, bytes: &[u8]) -> FileReport {
    let starts_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    let json_policy =
        (starts_json || label.ends_with(".json")) && !container::is_json_container(bytes);
    if json_policy {
        let (copy, _, _) = check_policy(bytes, "policy", None);
        return FileReport {
            file: label.to_string(),
            ok: copy.ok,
            error: None,
            unreadable: false,
            policy_file: true,
            copies: vec![copy],
            disagreements: Vec::new(),
        };
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return FileReport::failed(label.to_string(), "not UTF-8".to_string(), false);
    };
    let copies = match container::find_copies(text) {
        Ok(copies) => copies,
        Err(e) => {
            return FileReport::failed(
                label.to_string(),
                format!(
                    "not a JSON policy, and not YAML: line {} column {}: {}",
                    e.line, e.col, e.message
                ),
                false,
            )
        }
    };
    if copies.is_empty() {
        return FileReport::failed(
            label.to_string(),
            format!(
                "no egress-guard policy found: FILE is a JSON policy, or YAML/JSON holding Envoy \
                 Wasm filters with root_id {root:?} (Envoy configs, ECDS resources, EnvoyFilters) \
                 or Istio WasmPlugins with pluginName {root:?}",
                root = container::ROOT_ID
            ),
            false,
        );
    }
    // Copies with the same policy share one report of errors and warnings: the first's.
    let mut reports = Vec::new();
    // (first copy's line, its JSON value, its configuration), one per distinct policy.
    let mut distinct: Vec<(usize, Option<Value>, Option<Config>, String)> = Vec::new();
    let mut disagreements = Vec::new();
    for copy in copies {
        let kind = match copy.kind {
            CopyKind::WasmFilter => "wasm_filter",
            CopyKind::WasmPlugin => "wasm_plugin",
            CopyKind::TrafficExtension => "traffic_extension",
        };
        let at = Some((copy.line, copy.doc, copy.path.clone()));
        let (mut report, config, text) = match &copy.text {
            Ok(text) => {
                let (report, config, _) = check_policy(text.as_bytes(), kind, at);
                (report, config, text.trim().to_string())
            }
            Err(message) => (
                CopyReport {
                    line: Some(copy.line),
                    path: Some(copy.path.clone()),
                    document: Some(copy.doc),
                    kind,
                    ok: false,
                    same_as: None,
                    summary: None,
                    errors: vec![ErrorReport {
                        path: String::new(),
                        kind: "unreadable",
                        message: message.clone(),
                    }],
                    warnings: Vec::new(),
                },
                None,
                String::new(),
            ),
        };
        let value = serde_json::from_str::<Value>(&text).ok();
        let same = distinct.iter().find(|(_, v, c, t)| match (&config, c) {
            (Some(a), Some(b)) => a == b,
            _ => *t == text && (value.is_some() || v.is_none()),
        });
        match same {
            Some((line, ..)) => {
                report.same_as = Some(*line);
                report.errors.clear();
                report.warnings.clear();
            }
            None if copy.text.is_err() => {}
            None => {
                if let Some((first_line, first_value, ..)) = distinct.first() {
                    let (at, message) = describe_difference(first_value.as_ref(), value.as_ref());
                    disagreements.push(Disagreement {
                        line: copy.line,
                        differs_from_line: *first_line,
                        at,
                        message,
                    });
                }
                distinct.push((copy.line, value, config, text));
            }
        }
        reports.push(report);
    }
    FileReport {
        file: label.to_string(),
        ok: reports.iter().all(|r| r.ok) && disagreements.is_empty(),
        error: None,
        unreadable: false,
        policy_file: false,
        copies: reports,
        disagreements,
    }
}

/// Where two copies differ first, and how.
fn describe_difference(first: Option<&Value>, other: Option<&Value>) -> (String, String) {
    match (first, other) {
        (Some(a), Some(b)) => {
            let mut at = String::new();
            match first_difference(a, b, &mut at) {
                Some((x, y)) => {
                    let shown = if at.is_empty() {
                        "the policy"
                    } else {
                        at.as_str()
                    };
                    let message = format!("{shown} is {} there, {} here", brief(x), brief(y));
                    (at, message)
                }
                None => (String::new(), "the policies differ".to_string()),
            }
        }
        _ => (
            String::new(),
            "one of the two is not valid JSON".to_string(),
        ),
    }
}

/// A value shown in a message, cut at 60 characters.
fn brief(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "absent".to_string();
    };
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

/// The first path (in key order) where two JSON values differ, and the two values there.
fn first_difference<'a>(
    a: &'a Value,
    b: &'a Value,
    path: &mut String,
) -> Option<(Option<&'a Value>, Option<&'a Value>)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys = x.keys().chain(y.keys()).collect::<Vec<_>>();
            keys.sort();
            keys.dedup();
            for key in keys {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => {
                        if let Some(found) = first_difference(p, q, path) {
                            return Some(found);
                        }
                    }
                    (p, q) => return Some((p, q)),
                }
                path.truncate(len);
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(p), Some(q)) => {
                        if let Some(found) = first_difference(p, q, path) {
                            return Some(found);
                        }
                    }
                    (p, q) => return Some((p, q)),
                }
                path.truncate(len);
            }
            None
        }
        _ if a == b => None,
        _ => Some((Some(a), Some(b))),
    }
}

/// The text form: summaries on standard output, errors and warnings on standard error.
fn print_text(report: &FileReport) -> Result<(), UsageError> {
    let file = &report.file;
    if let Some(error) = &report.error {
        if report.unreadable {
            err(&format!("egress-guard: {error}"));
        } else {
            err(&format!("{file}: {error}"));
        }
        return Ok(());
    }
    for copy in &report.copies {
        let label = match copy.line {
            Some(line) => format!("{file}:{line}"),
            None => file.clone(),
        };
        if copy.same_as.is_some() {
            continue;
        }
        for e in &copy.errors {
            err(&format!("{label}: {}", e.text()));
        }
        for w in &copy.warnings {
            err(&format!(
                "{label}: warning: {}: {} [{}]",
                w.path, w.message, w.code
            ));
        }
        if let Some(summary) = &copy.summary {
            let mut text = summary_text(&label, summary);
            let same = report
                .copies
                .iter()
                .filter(|c| c.same_as.is_some() && c.same_as == copy.line)
                .filter_map(|c| c.line)
                .collect::<Vec<_>>();
            if !same.is_empty() {
                let lines = same.iter().map(ToString::to_string).collect::<Vec<_>>();
                let _ = writeln!(
                    text,
                    "  copies:  also at line{} {} (the same policy)",
                    if same.len() == 1 { "" } else { "s" },
                    lines.join(", ")
                );
            }
            out(&text)?;
        }
    }
    for d in &report.disagreements {
        err(&format!(
            "{file}:{}: this copy of the policy differs from the one at line {}: {}",
            d.line, d.differs_from_line, d.message
        ));
    }
    Ok(())
}

/// `<label>: ok: <the VM start log's summary>`, then the settings.
fn summary_text(label: &str, s: &SummaryReport) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "{label}: ok: mode={} rules={} (allow {}, deny {}{}, from presets {}) hosts={} cidrs={} \
         presets={}",
        s.mode,
        s.rules,
        s.allow_rules,
        s.deny_rules,
        match s.staged_rules {
            0 => String::new(),
            n => format!(", staged {n}"),
        },
        s.preset_rules,
        s.hosts,
        s.cidrs,
        s.presets.len() + s.deny_presets.len()
    );
    // As the VM start log's summary says it.
    if let Some(pin) = &s.pin {
        let _ = write!(text, " pinned_rules={}", pin.rules);
    }
    text.push('\n');
    let _ = writeln!(
        text,
        "  presets: {}",
        if s.presets.is_empty() {
            "none".to_string()
        } else {
            s.presets.join(", ")
        }
    );
    let _ = writeln!(
        text,
        "  sniff:   max_bytes={} timeout_ms={} hold_upstream={}",
        s.sniff.max_bytes, s.sniff.timeout_ms, s.sniff.hold_upstream
    );
    if !s.deny_presets.is_empty() {
        let _ = writeln!(text, "  deny presets: {}", s.deny_presets.join(", "));
    }
    if !s.staged.is_empty() {
        let _ = writeln!(
            text,
            "  staged:  {} (\"enforce\": false: logged and counted as would-denies, never blocked)",
            s.staged.join(", ")
        );
    }
    let _ = writeln!(text, "  log:     {} (denials at {})", s.log, s.log_level);
    if let Some(hash) = &s.policy {
        let _ = writeln!(
            text,
            "  policy:  {hash} (the \"policy\" field of its log lines)"
        );
    }
    if let Some(pin) = &s.pin {
        let needs = if s.sniff.hold_upstream {
            "names read from the client's bytes are pinned while the connection is held"
        } else if pin.ech_deny {
            "note: with \"ech\": \"deny\" the SNI from tls_inspector no longer decides at open, \
             so without sniff.hold_upstream nothing can be pinned: every pinned allow is denied \
             (pin_unavailable)"
        } else {
            "note: without sniff.hold_upstream only an SNI from tls_inspector can be pinned; a \
             pinned name read from the client's bytes (HTTP Host, or TLS on a listener without \
             tls_inspector) is denied (pin_unavailable)"
        };
        let _ = writeln!(
            text,
            "  pin:     {} rules, cluster {}; {needs}",
            pin.rules, pin.cluster
        );
        let _ = writeln!(
            text,
            "           HTTP filter: requests are pinned only on a route to cluster {} (as in \
             envoy/sidecar-outbound-http-pinned.yaml); on any other route a request that must be \
             pinned is denied (pin_unavailable)",
            pin.cluster
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_the_default_policy() {
        let policy =
            Policy::from_json(include_bytes!("../../../examples/policies/default.json")).unwrap();
        assert_eq!(
            summary_text("default.json", &summary_report(&policy)),
            "default.json: ok: mode=allowlist rules=5 (allow 3, deny 1, from presets 1) \
             hosts=7 cidrs=3 presets=1\n  presets: pypi\n  \
             sniff:   max_bytes=16384 timeout_ms=3000 hold_upstream=false\n  log:     denied \
             (denials at warn)\n  policy:  639a7144c340 (the \"policy\" field of its log lines)\n"
        );
        // With staged rules and deny presets, still the same first line as the start log.
        let policy = Policy::from_json(
            br#"{"deny": [{"ports": [1], "enforce": false}], "deny_presets": ["cloud-metadata"]}"#,
        )
        .unwrap();
        assert!(summary_text("x", &summary_report(&policy))
            .starts_with(&format!("x: ok: {}\n", policy.summary())));
        // The same line as the filter's start log.
        assert!(summary_text("x", &summary_report(&policy))
            .starts_with(&format!("x: ok: {}\n", policy.summary())));
    }

    #[test]
    fn differences() {
        let a = serde_json::json!({"allow": [{"ports": [443]}], "mode": "audit"});
        let b = serde_json::json!({"allow": [{"ports": [80]}], "mode": "audit"});
        assert_eq!(
            describe_difference(Some(&a), Some(&b)),
            (
                "allow[0].ports[0]".to_string(),
                "allow[0].ports[0] is 443 there, 80 here".to_string()
            )
        );
        let c = serde_json::json!({"allow": [{"ports": [443]}]});
        assert_eq!(
            describe_difference(Some(&a), Some(&c)).1,
            "mode is \"audit\" there, absent here"
        );
    }
}
