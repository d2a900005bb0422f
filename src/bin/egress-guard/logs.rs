//! Reading egress-guard's decision log lines out of Envoy logs, for `suggest` and `replay`.
//!
//! The filter logs one JSON object per decision (`src/filter/report.rs`). It reaches a file
//! behind whatever prefix the proxy's log format puts in front of it:
//!
//! - Envoy's default format:
//!   `[2026-11-22 05:47:53.796][18][info][wasm] [source/.../context.cc:1151] wasm log
//!   egress-guard egress-guard: {"decision":...}`;
//! - Istio's proxy format (what `kubectl logs POD -c istio-proxy` shows):
//!   `2026-11-22T05:47:53.796Z\tinfo\tenvoy wasm ...\twasm log ...: {"decision":...}\tthread=20`;
//! - `kubectl logs --timestamps` or `--prefix` in front of either;
//! - a bare JSON line, or the line embedded as a string field of a JSON log line (Envoy's JSON
//!   log format, log shippers).
//!
//! So a line's record is the JSON object that starts at its first `{"decision"`, and whatever
//! follows the object is ignored. Other lines are counted and skipped.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::io::{read_input, UsageError};

/// One decision, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    /// `allow`, `deny` or `audit_deny`.
    pub decision: String,
    /// `rule`, `deny_rule`, `no_match`, `passthrough`, `malformed`, `too_large`,
    /// `later_request`, `no_destination`.
    pub reason: String,
    /// The deciding rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// `ip:port` (`[v6]:port`).
    pub dst: String,
    /// The normalised name, if there was one.
    #[serde(default)]
    pub name: Option<String>,
    /// `sni`, `host`, `authority` or `none`.
    #[serde(default)]
    pub name_source: Option<String>,
    /// `tls`, `http` or `other`.
    #[serde(default)]
    pub proto: Option<String>,
    /// Why the input was malformed, or the policy's reason for a later request.
    #[serde(default)]
    pub detail: Option<String>,
    /// The ClientHello carried `encrypted_client_hello` (absent: it did not, or was not read).
    #[serde(default)]
    pub ech: bool,
}

/// What was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs read.
    pub inputs: usize,
    /// Lines read.
    pub lines: usize,
    /// Lines with a decision record.
    pub records: usize,
    /// Lines without one (Envoy's other log lines).
    pub skipped: usize,
    /// Lines with `{"decision"` that did not parse as a record (cut off, or another shape).
    pub unreadable: usize,
}

/// The record in one log line, if it has one: `Some(Err(()))` if it seems to but does not
/// parse.
pub fn parse_line(line: &str) -> Option<Result<Record, ()>> {
    if let Some(start) = line.find("{\"decision\"") {
        return Some(first_record(line.get(start..).unwrap_or_default()));
    }
    // A JSON log line that carries the decision line in one of its string fields.
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') && line.contains("decision") {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(trimmed) else {
            return None;
        };
        return fields.values().find_map(|v| match v {
            Value::String(s) => s
                .find("{\"decision\"")
                .map(|start| first_record(s.get(start..).unwrap_or_default())),
            _ => None,
        });
    }
    None
}

/// The record at the start of `text`; what follows it is ignored.
fn first_record(text: &str) -> Result<Record, ()> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Record>();
    match stream.next() {
        Some(Ok(record)) => Ok(record),
        _ => Err(()),
    }
}

/// Every record in the inputs (paths, or `-` for standard input), in order.
pub fn read(paths: &[PathBuf]) -> Result<(Vec<Record>, Stats), UsageError> {
    let mut records = Vec::new();
    let mut stats = Stats::default();
    for path in paths {
        let input = read_input(path)?;
        stats.inputs += 1;
        let text = String::from_utf8_lossy(&input.bytes);
        for line in text.lines() {
            stats.lines += 1;
            match parse_line(line) {
                Some(Ok(record)) => {
                    stats.records += 1;
                    records.push(record);
                }
                Some(Err(())) => stats.unreadable += 1,
                None => stats.skipped += 1,
            }
        }
    }
    Ok((records, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"decision":"allow","reason":"rule","rule":"debian","dst":"192.0.2.1:80","name":"deb.debian.org","name_source":"host","proto":"http","src":"10.0.0.1:4000","filter":"network"}"#;

    fn record() -> Record {
        Record {
            decision: "allow".into(),
            reason: "rule".into(),
            rule: Some("debian".into()),
            dst: "192.0.2.1:80".into(),
            name: Some("deb.debian.org".into()),
            name_source: Some("host".into()),
            proto: Some("http".into()),
            detail: None,
            ech: false,
        }
    }

    #[test]
    fn every_prefix() {
        for line in [
            RECORD.to_string(),
            format!("[2026-11-22 05:47:53.796][18][info][wasm] [source/extensions/common/wasm/context.cc:1151] wasm log egress-guard egress-guard egress-guard: {RECORD}"),
            format!("2026-11-22T05:47:53.796Z\tinfo\tenvoy wasm external/envoy/source/extensions/common/wasm/context.cc:1192\twasm log egress-guard: {RECORD}\tthread=20"),
            format!("[pod/web-1/istio-proxy] 2026-11-22T05:47:53.796123Z {RECORD}\r"),
            serde_json::json!({"level": "info", "msg": format!("wasm log egress-guard: {RECORD}")}).to_string(),
        ] {
            assert_eq!(parse_line(&line), Some(Ok(record())), "{line}");
        }
    }

    #[test]
    fn other_lines() {
        assert_eq!(parse_line("[info][main] starting main dispatch loop"), None);
        assert_eq!(
            parse_line(r#"{"level": "info", "msg": "no decision here"}"#),
            None
        );
        assert_eq!(
            parse_line(r#"x {"decision":"allow","reason":"ru"#),
            Some(Err(()))
        );
    }
}
