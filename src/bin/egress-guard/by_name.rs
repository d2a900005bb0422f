//! The policy an ambient egress waypoint gets: the policy given, by name only.
//!
//! At a waypoint the original destination egress-guard sees is the ServiceEntry's address (one
//! Istio allocated, or the entry's `addresses`), not the IP the waypoint then connects to, so a
//! rule's CIDRs would be matched against the wrong address (docs/istio.md, "Ambient mode: an
//! egress waypoint"). [`by_name`] takes them out:
//!
//! - a rule with CIDRs and no hosts is left out whole (keeping it without its CIDRs would make it
//!   a ports-only rule, which matches every destination);
//! - a rule with CIDRs and hosts keeps its hosts (a rule matches on a host OR a CIDR), without
//!   the CIDRs;
//! - an `allow` or `deny` list emptied that way is left out.
//!
//! The text is edited in place, so the policy keeps the layout it was written in (one rule a
//! line, key order). serde_json gives no spans and, without its `preserve_order` feature (which
//! would change `Value`'s map for the whole crate), no key order, hence the small scanner below;
//! its result is parsed again and must equal the same change made on the parsed policy, or the
//! policy is written out re-serialised instead.

use std::fmt;

use serde_json::{Map, Value};

/// The lists whose rules are edited.
const LISTS: [&str; 2] = ["allow", "deny"];

/// A rule [`by_name`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// `allow` or `deny`.
    pub list: &'static str,
    /// The rule's `name`, or `allow[i]` / `deny[i]` for a rule without one.
    pub rule: String,
    /// Its hosts were kept (only its CIDRs left out).
    pub hosts_kept: bool,
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hosts_kept {
            write!(f, "{} {} (its cidrs; its hosts kept)", self.list, self.rule)
        } else {
            write!(f, "{} {}", self.list, self.rule)
        }
    }
}

/// The policy by name only: its text and what was left out (in policy order).
#[derive(Debug, Clone, PartialEq)]
pub struct ByName {
    pub text: String,
    pub value: Value,
    pub left_out: Vec<LeftOut>,
}

/// `policy_text` (a JSON object) without its CIDR rules; see the module's comment.
pub fn by_name(policy_text: &str) -> Result<ByName, String> {
    let given: Value = serde_json::from_str(policy_text).map_err(|e| format!("not JSON: {e}"))?;
    let (value, left_out) = by_name_value(&given)?;
    let edited = edit_text(policy_text);
    let text = match edited {
        Some(text) if serde_json::from_str::<Value>(&text).ok().as_ref() == Some(&value) => text,
        _ => serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?,
    };
    Ok(ByName {
        text,
        value,
        left_out,
    })
}

/// A non-empty array.
fn non_empty(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// What a rule becomes: `None` if it has no CIDRs, `Some(None)` if it is left out, `Some(rule)`
/// with its hosts only.
fn rule_by_name(rule: &Map<String, Value>) -> Option<Option<Map<String, Value>>> {
    if !non_empty(rule.get("cidrs")) {
        return None;
    }
    if !non_empty(rule.get("hosts")) {
        return Some(None);
    }
    let mut kept = rule.clone();
    kept.remove("cidrs");
    Some(Some(kept))
}

/// The change on the parsed policy.
fn by_name_value(policy: &Value) -> Result<(Value, Vec<LeftOut>), String> {
    let Some(object) = policy.as_object() else {
        return Err("the policy is not a JSON object".to_string());
    };
    let mut out = object.clone();
    let mut left_out = Vec::new();
    for list in LISTS {
        let Some(Value::Array(rules)) = object.get(list) else {
            continue;
        };
        let mut kept = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let Some(map) = rule.as_object() else {
                kept.push(rule.clone());
                continue;
            };
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("{list}[{i}]"), str::to_string);
            match rule_by_name(map) {
                None => kept.push(rule.clone()),
                Some(None) => left_out.push(LeftOut {
                    list,
                    rule: name,
                    hosts_kept: false,
                }),
                Some(Some(hosts)) => {
                    left_out.push(LeftOut {
                        list,
                        rule: name,
                        hosts_kept: true,
                    });
                    kept.push(Value::Object(hosts));
                }
            }
        }
        if kept.is_empty() && !rules.is_empty() {
            out.remove(list);
        } else {
            out.insert(list.to_string(), Value::Array(kept));
        }
    }
    Ok((Value::Object(out), left_out))
}

// --- the text ----------------------------------------------------------------------------------

/// An object member (`start` at its key's quote) or an array element; `end` after its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    key: Option<String>,
    start: usize,
    value: usize,
    end: usize,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// `i` at a `"`: the index after the closing quote.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// `i` at a value: the index after it.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while b
                .get(j)
                .is_some_and(|c| !c.is_ascii_whitespace() && !b",]}".contains(c))
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The members of the object, or the elements of the array, that opens at `open`.
fn items(text: &str, open: usize) -> Option<Vec<Item>> {
    let b = text.as_bytes();
    let object = match b.get(open)? {
        b'{' => true,
        b'[' => false,
        _ => return None,
    };
    let close = if object { b'}' } else { b']' };
    let mut out = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if *b.get(i)? == close {
        return Some(out);
    }
    loop {
        let start = i;
        let key = if object {
            let after = skip_string(b, i)?;
            let key: String = serde_json::from_str(text.get(i..after)?).ok()?;
            i = skip_ws(b, after);
            if *b.get(i)? != b':' {
                return None;
            }
            i = skip_ws(b, i + 1);
            Some(key)
        } else {
            None
        };
        let value = i;
        let end = skip_value(b, i)?;
        out.push(Item {
            key,
            start,
            value,
            end,
        });
        i = skip_ws(b, end);
        match *b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            c if c == close => return Some(out),
            _ => return None,
        }
    }
}

/// `text` without `items[i]`, and the separator on one side of it: up to the next item if there
/// is one, else back to the end of the one before.
fn remove(text: &str, items: &[Item], i: usize) -> Option<String> {
    let item = items.get(i)?;
    let (from, to) = match (
        items.get(i + 1),
        i.checked_sub(1).and_then(|p| items.get(p)),
    ) {
        (Some(next), _) => (item.start, next.start),
        (None, Some(previous)) => (previous.end, item.end),
        (None, None) => (item.start, item.end),
    };
    Some(format!("{}{}", text.get(..from)?, text.get(to..)?))
}

/// One step of the change on the text: `None` when there is nothing left to change (or the text
/// cannot be followed), else the text after one removal.
fn edit_once(text: &str) -> Option<Option<String>> {
    let open = skip_ws(text.as_bytes(), 0);
    if text.as_bytes().get(open) != Some(&b'{') {
        return None;
    }
    let top = items(text, open)?;
    for (m, member) in top.iter().enumerate() {
        if !member.key.as_deref().is_some_and(|k| LISTS.contains(&k)) {
            continue;
        }
        if text.as_bytes().get(member.value) != Some(&b'[') {
            continue;
        }
        let rules = items(text, member.value)?;
        for (r, rule) in rules.iter().enumerate() {
            let parsed: Value = serde_json::from_str(text.get(rule.value..rule.end)?).ok()?;
            let Some(map) = parsed.as_object() else {
                continue;
            };
            match rule_by_name(map) {
                None => {}
                Some(None) if rules.len() == 1 => return Some(remove(text, &top, m)),
                Some(None) => return Some(remove(text, &rules, r)),
                Some(Some(_)) => {
                    let fields = items(text, rule.value)?;
                    let c = fields
                        .iter()
                        .position(|f| f.key.as_deref() == Some("cidrs"))?;
                    return Some(remove(text, &fields, c));
                }
            }
        }
    }
    Some(None)
}

/// The change made on the text, keeping its layout; `None` if the scanner cannot follow it.
fn edit_text(text: &str) -> Option<String> {
    let mut text = text.to_string();
    // Each step removes one rule, one `cidrs` or one list: bounded by the text's length.
    for _ in 0..=text.len() {
        match edit_once(&text)? {
            Some(next) => text = next,
            None => return Some(text),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = include_str!("../../../examples/policies/istio-mesh.json");

    #[test]
    fn the_mesh_policy_loses_its_cidr_rules_and_keeps_its_layout() {
        let b = by_name(MESH).unwrap();
        assert_eq!(
            b.text,
            r#"{
  "mode": "allowlist",
  "allow": [
    {"name": "github", "hosts": ["github.com", "*.github.com", "*.githubusercontent.com"], "ports": [443]},
    {"name": "debian", "hosts": ["deb.debian.org", "security.debian.org"], "ports": [80, 443]}
  ],
  "presets": ["pypi"],
  "log": "denied"
}
"#
        );
        let shown: Vec<String> = b.left_out.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["allow in-cluster", "deny cloud-metadata"]);
    }

    #[test]
    fn a_rule_with_hosts_keeps_them_and_a_ports_only_rule_stays() {
        let text = r#"{"allow": [{"hosts": ["a.example"], "cidrs": ["10.0.0.0/8"], "ports": [443]},
            {"name": "any-22", "ports": [22]}, {"name": "db", "cidrs": ["10.1.0.0/16"], "ports": [5432]}],
          "deny": [{"name": "meta", "cidrs": ["169.254.169.254"], "hosts": ["metadata.google.internal"]}], "log": "all"}"#;
        let b = by_name(text).unwrap();
        assert_eq!(
            b.value,
            serde_json::json!({"allow": [{"hosts": ["a.example"], "ports": [443]},
                {"name": "any-22", "ports": [22]}],
                "deny": [{"name": "meta", "hosts": ["metadata.google.internal"]}], "log": "all"})
        );
        assert_eq!(
            b.text,
            r#"{"allow": [{"hosts": ["a.example"], "ports": [443]},
            {"name": "any-22", "ports": [22]}],
          "deny": [{"name": "meta", "hosts": ["metadata.google.internal"]}], "log": "all"}"#
        );
        let shown: Vec<String> = b.left_out.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "allow allow[0] (its cidrs; its hosts kept)",
                "allow db",
                "deny meta (its cidrs; its hosts kept)"
            ]
        );
    }

    #[test]
    fn lists_emptied_go_empty_lists_and_empty_cidrs_stay() {
        let b =
            by_name(r#"{"deny": [{"cidrs": ["1.2.3.4"]}], "allow": [], "mode": "audit"}"#).unwrap();
        assert_eq!(b.text, r#"{"allow": [], "mode": "audit"}"#);
        let b = by_name(r#"{"mode": "audit", "deny": [{"cidrs": ["1.2.3.4"]}]}"#).unwrap();
        assert_eq!(b.text, r#"{"mode": "audit"}"#);
        let text = r#"{"allow": [{"name": "x", "cidrs": [], "ports": [1]}]}"#;
        let b = by_name(text).unwrap();
        assert_eq!((b.text.as_str(), b.left_out.len()), (text, 0));
        // Brackets and escaped quotes inside strings do not confuse the scanner.
        let text = r#"{"allow": [{"name": "a\"]}", "hosts": ["x.example"], "cidrs": ["::1"]}]}"#;
        assert_eq!(
            by_name(text).unwrap().text,
            r#"{"allow": [{"name": "a\"]}", "hosts": ["x.example"]}]}"#
        );
    }

    #[test]
    fn what_the_scanner_cannot_follow_is_re_serialised() {
        assert_eq!(edit_text("[1, 2]"), None);
        assert_eq!(edit_text(r#"{"allow": [{"cidrs": ["1.2.3.4"]}"#), None);
        assert_eq!(skip_value(b"\"abc", 0), None);
        assert!(by_name("[]").is_err());
        assert!(by_name("{").is_err());
    }
}
