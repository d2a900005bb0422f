//! `check CONFIG...`: the filter's own validation, and a summary of what it accepted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use egress_guard::policy::{ConfigErrorKind, Policy};

use crate::cli::{err, out, read_input, Exit, UsageError};

/// Checks every file; reports each. Exit: 2 if a file could not be read, else 1 if one is
/// invalid, else 0.
pub fn run(paths: &[PathBuf]) -> Result<Exit, UsageError> {
    let mut exit = Exit::Ok;
    for path in paths {
        let input = match read_input(path) {
            Ok(input) => input,
            Err(e) => {
                err(&format!("egress-guard: {e}"));
                exit = Exit::Usage;
                continue;
            }
        };
        match Policy::from_json(&input.bytes) {
            Ok(policy) => out(&summary(&input.label, &policy))?,
            Err(e) => {
                // Exactly the filter's message (`allow[1].cidrs[0]: "10.0.0.300/8" is not a CIDR`).
                err(&format!("{}: {e}", input.label));
                if e.kind == ConfigErrorKind::Syntax && is_yaml(path) {
                    err(&format!("{}: {YAML_HINT}", input.label));
                }
                if exit == Exit::Ok {
                    exit = Exit::Invalid;
                }
            }
        }
    }
    Ok(exit)
}

const YAML_HINT: &str = "hint: CONFIG is the filter's JSON configuration; in an Envoy YAML \
                         file it is the `value` string under the Wasm filter's `configuration`";

/// Whether the file looks like YAML (an Envoy configuration given by mistake).
fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// `<file>: ok: <the VM start log's summary>`, then the settings.
pub fn summary(label: &str, policy: &Policy) -> String {
    let presets = policy
        .presets()
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>();
    let sniff = policy.sniff();
    let mut text = String::new();
    let _ = writeln!(text, "{label}: ok: {}", policy.summary());
    let _ = writeln!(
        text,
        "  presets: {}",
        if presets.is_empty() {
            "none".to_string()
        } else {
            presets.join(", ")
        }
    );
    let _ = writeln!(
        text,
        "  sniff:   max_bytes={} timeout_ms={} hold_upstream={}",
        sniff.max_bytes, sniff.timeout_ms, sniff.hold_upstream
    );
    let _ = writeln!(text, "  log:     {}", policy.log());
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
            summary("default.json", &policy),
            "default.json: ok: mode=allowlist rules=5 (allow 3, deny 1, from presets 1) \
             hosts=7 cidrs=3 presets=1\n  presets: pypi\n  \
             sniff:   max_bytes=16384 timeout_ms=3000 hold_upstream=false\n  log:     denied\n"
        );
    }
}
