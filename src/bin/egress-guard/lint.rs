//! `check`'s lints: every error in a policy (not only the first), and warnings about rules that
//! mean more, or less, than they seem.
//!
//! The filter's parser stops at the first error. To find the others, the policy is split: each
//! top-level key and each rule is validated on its own (through the same parser), a rule found
//! invalid is swapped for a placeholder, and the whole is validated again for what needs the
//! whole document (duplicate names, presets listed twice) until it passes. The first error is
//! always the filter's own.

use std::collections::BTreeSet;

use egress_guard::policy::{
    presets, Config, ConfigError, ConfigErrorKind, EchPolicy, Facts, Fingerprint, HostPattern,
    Mode, NameFact, PatternKind, Policy, PortRange, Reason,
};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// A warning: valid, but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Field path: `allow[2].hosts[0]`, `presets[1]`.
    pub path: String,
    /// A stable identifier for CI: `wildcard-any`, `shadowed`, ...
    pub code: &'static str,
    /// What it means.
    pub message: String,
}

/// What `check` found in one policy.
#[derive(Debug)]
pub struct Lint {
    /// Every error, the filter's own first. Empty when the policy is valid.
    pub errors: Vec<ConfigError>,
    /// Warnings (only for a valid policy).
    pub warnings: Vec<Warning>,
    /// The compiled policy, when valid.
    pub policy: Option<Policy>,
    /// The parsed configuration, when valid.
    pub config: Option<Config>,
}

/// Validates a policy, collecting every error, and lints it if it is valid.
pub fn lint(bytes: &[u8]) -> Lint {
    let parsed = Config::from_json(bytes);
    match parsed.and_then(|config| Policy::compile(&config).map(|policy| (config, policy))) {
        Ok((config, policy)) => Lint {
            warnings: warnings(&config),
            errors: Vec::new(),
            // The fingerprint the filter logs for this policy text.
            policy: Some(policy.with_fingerprint(Fingerprint::of(bytes))),
            config: Some(config),
        },
        Err(first) => Lint {
            errors: all_errors(bytes, first),
            warnings: Vec::new(),
            policy: None,
            config: None,
        },
    }
}

// --- every error -----------------------------------------------------------------------------

const KEYS: [&str; 7] = ["mode", "allow", "deny", "presets", "sniff", "log", "ech"];

/// Validates `{key: value}` on its own.
fn check_part(key: &str, value: &Value) -> Result<(), ConfigError> {
    let mut doc = Map::new();
    doc.insert(key.to_string(), value.clone());
    let bytes = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    Config::from_json(&bytes)
        .and_then(|c| Policy::compile(&c))
        .map(|_| ())
}

/// `path` with its leading `list[0]` renumbered `list[i]`.
fn renumber(path: &str, list: &str, i: usize) -> String {
    let zero = format!("{list}[0]");
    match path.strip_prefix(&zero) {
        Some(rest) => format!("{list}[{i}]{rest}"),
        None => path.to_string(),
    }
}

/// Every `presets[k]` in `text` renumbered through `map` (index in the patched document -> index
/// in the original).
fn renumber_presets(text: &str, map: &[usize]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("presets[") {
        let (head, tail) = rest.split_at(at + "presets[".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = tail.split_at(digits);
        match number.parse::<usize>().ok().and_then(|k| map.get(k)) {
            Some(orig) if after.starts_with(']') => out.push_str(&orig.to_string()),
            _ => out.push_str(number),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The list and index an error path starts with: `allow[3].name` -> `("allow", 3)`.
fn culprit(path: &str) -> Option<(&str, usize)> {
    let (list, rest) = path.split_once('[')?;
    let (index, _) = rest.split_once(']')?;
    Some((list, index.parse().ok()?))
}

/// A rule name no rule of `doc` has.
fn free_name(doc: &Map<String, Value>, list: &str, i: usize) -> String {
    let used = ["allow", "deny"]
        .iter()
        .filter_map(|l| doc.get(*l).and_then(Value::as_array))
        .flatten()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .collect::<BTreeSet<_>>();
    let mut n = 0;
    loop {
        let name = format!("x-check-placeholder-{list}-{i}-{n}");
        if !used.contains(name.as_str()) {
            return name;
        }
        n += 1;
    }
}

fn all_errors(bytes: &[u8], first: ConfigError) -> Vec<ConfigError> {
    let mut errors = vec![first.clone()];
    if first.kind == ConfigErrorKind::Syntax {
        return errors;
    }
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(bytes) else {
        return errors;
    };
    let mut found = Vec::new();
    let mut patched = Map::new();
    // Index in the patched `presets` -> index in the original.
    let mut preset_map = Vec::new();
    let mut keys = KEYS
        .iter()
        .filter(|k| doc.contains_key(**k))
        .map(|k| k.to_string())
        .collect::<Vec<_>>();
    keys.extend(doc.keys().filter(|k| !KEYS.contains(&k.as_str())).cloned());
    let mut placeholders = Vec::new();
    for key in keys {
        let Some(value) = doc.get(&key) else { continue };
        match (key.as_str(), value.as_array()) {
            (list @ ("allow" | "deny"), Some(rules)) => {
                let mut kept = Vec::with_capacity(rules.len());
                for (i, rule) in rules.iter().enumerate() {
                    match check_part(list, &Value::Array(vec![rule.clone()])) {
                        Ok(()) => kept.push(rule.clone()),
                        Err(mut e) => {
                            let more = rule_errors(list, i, rule);
                            if more.is_empty() {
                                e.path = renumber(&e.path, list, i);
                                found.push(e);
                            } else {
                                found.extend(more);
                            }
                            kept.push(Value::Null);
                            placeholders.push((list.to_string(), i));
                        }
                    }
                }
                patched.insert(key.clone(), Value::Array(kept));
            }
            ("presets", Some(presets)) => {
                let mut kept = Vec::new();
                for (i, preset) in presets.iter().enumerate() {
                    match check_part("presets", &Value::Array(vec![preset.clone()])) {
                        Ok(()) => {
                            kept.push(preset.clone());
                            preset_map.push(i);
                        }
                        Err(mut e) => {
                            e.path = renumber(&e.path, "presets", i);
                            found.push(e);
                        }
                    }
                }
                patched.insert(key.clone(), Value::Array(kept));
            }
            _ => match check_part(&key, value) {
                Ok(()) => {
                    patched.insert(key.clone(), value.clone());
                }
                Err(e) => match value.as_object().filter(|_| key == "sniff") {
                    // Each sniff setting on its own.
                    Some(fields) => {
                        let before = found.len();
                        for (field, v) in fields {
                            let mut one = Map::new();
                            one.insert(field.clone(), v.clone());
                            if let Err(e) = check_part("sniff", &Value::Object(one)) {
                                found.push(e);
                            }
                        }
                        if found.len() == before {
                            found.push(e);
                        }
                    }
                    None => found.push(e),
                },
            },
        }
    }
    for (list, i) in placeholders {
        let name = free_name(&patched, &list, i);
        set_placeholder(&mut patched, &list, i, name);
    }
    // What needs the whole document, until it passes (each round removes one culprit).
    let rounds = patched
        .values()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .sum::<usize>()
        + 2;
    for _ in 0..rounds {
        let bytes = serde_json::to_vec(&Value::Object(patched.clone())).unwrap_or_default();
        let Err(mut e) = Config::from_json(&bytes).and_then(|c| Policy::compile(&c)) else {
            break;
        };
        e.path = renumber_presets(&e.path, &preset_map);
        e.message = renumber_presets(&e.message, &preset_map);
        let place = culprit(&e.path).map(|(l, i)| (l.to_string(), i));
        found.push(e);
        match place {
            Some((list, i)) if list == "allow" || list == "deny" => {
                let name = free_name(&patched, &list, i);
                set_placeholder(&mut patched, &list, i, name);
            }
            Some((list, i)) if list == "presets" => {
                let Some(k) = preset_map.iter().position(|&orig| orig == i) else {
                    break;
                };
                preset_map.remove(k);
                if let Some(Value::Array(presets)) = patched.get_mut("presets") {
                    if k < presets.len() {
                        presets.remove(k);
                    }
                }
            }
            _ => break,
        }
    }
    for e in found {
        if e.path != first.path && !errors.contains(&e) {
            errors.push(e);
        }
    }
    errors
}

/// The fields of a rule in the order the filter reads them; others after.
const RULE_FIELDS: [&str; 4] = ["name", "hosts", "cidrs", "ports"];

/// Every error in one invalid rule, field by field and entry by entry (empty if the rule's
/// error needs the rule as a whole, like an empty rule).
fn rule_errors(list: &str, i: usize, rule: &Value) -> Vec<ConfigError> {
    let Some(fields) = rule.as_object() else {
        return Vec::new();
    };
    let mut keys = RULE_FIELDS
        .iter()
        .filter(|k| fields.contains_key(**k))
        .map(|k| (*k).to_string())
        .collect::<Vec<_>>();
    keys.extend(
        fields
            .keys()
            .filter(|k| !RULE_FIELDS.contains(&k.as_str()))
            .cloned(),
    );
    let mut errors = Vec::new();
    for key in keys {
        let Some(value) = fields.get(&key) else {
            continue;
        };
        let one = |v: &Value| {
            let mut rule = Map::new();
            rule.insert(key.clone(), v.clone());
            if key == "name" {
                // A name alone is an empty rule.
                rule.insert("ports".to_string(), json!([1]));
            }
            check_part(list, &Value::Array(vec![Value::Object(rule)]))
        };
        match value.as_array().filter(|a| !a.is_empty() && key != "name") {
            Some(entries) => {
                for (j, entry) in entries.iter().enumerate() {
                    if let Err(mut e) = one(&Value::Array(vec![entry.clone()])) {
                        let from = format!("{list}[0].{key}[0]");
                        e.path = match e.path.strip_prefix(&from) {
                            Some(rest) => format!("{list}[{i}].{key}[{j}]{rest}"),
                            None => renumber(&e.path, list, i),
                        };
                        errors.push(e);
                    }
                }
            }
            None => {
                if let Err(mut e) = one(value) {
                    e.path = renumber(&e.path, list, i);
                    errors.push(e);
                }
            }
        }
    }
    errors
}

fn set_placeholder(doc: &mut Map<String, Value>, list: &str, i: usize, name: String) {
    if let Some(slot) = doc
        .get_mut(list)
        .and_then(Value::as_array_mut)
        .and_then(|rules| rules.get_mut(i))
    {
        *slot = json!({"name": name, "ports": [1]});
    }
}

// --- warnings --------------------------------------------------------------------------------

/// A rule as the lints see it.
struct LintRule {
    /// `allow[2]`, `deny[0]`, `presets[1]`.
    path: String,
    /// How messages name it: `allow rule "github"`, `preset pypi's rule`.
    label: String,
    allow: bool,
    preset: bool,
    /// An allow rule whose allows by name are pinned: in passthrough it still says where a
    /// name goes, so it is not flagged as never applying.
    pins: bool,
    /// A staged deny rule (`"enforce": false`).
    staged: bool,
    hosts: Vec<(PatternKind, String)>,
    cidrs: Vec<IpNet>,
    ports: Vec<PortRange>,
}

fn rules(config: &Config) -> Vec<LintRule> {
    let mut out = Vec::new();
    for (list, allow, rules) in [
        ("deny", false, &config.deny),
        ("allow", true, &config.allow),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            out.push(LintRule {
                path: format!("{list}[{i}]"),
                label: format!("{list}[{i}] ({:?})", rule.name),
                allow,
                preset: false,
                pins: allow && config.pins(rule) && !rule.hosts.is_empty(),
                staged: !rule.enforce,
                hosts: rule
                    .hosts
                    .iter()
                    .map(|h| (h.kind(), h.as_str().to_string()))
                    .collect(),
                cidrs: rule.cidrs.clone(),
                ports: rule.ports.clone(),
            });
        }
    }
    for (k, preset) in config.presets.iter().enumerate() {
        for (n, rule) in preset.info().rules.iter().enumerate() {
            out.push(LintRule {
                path: format!("presets[{k}]"),
                label: format!(
                    "preset {:?} (rule {:?})",
                    preset.name(),
                    preset.rule_name(n)
                ),
                allow: true,
                preset: true,
                pins: config.pin && !rule.hosts.is_empty(),
                staged: false,
                hosts: rule
                    .hosts
                    .iter()
                    .filter_map(|h| HostPattern::parse(h).ok())
                    .map(|h| (h.kind(), h.as_str().to_string()))
                    .collect(),
                cidrs: Vec::new(),
                ports: rule.ports.to_vec(),
            });
        }
    }
    out
}

/// The warnings of a valid configuration, in rule order.
pub fn warnings(config: &Config) -> Vec<Warning> {
    let rules = rules(config);
    // The built-in presets' own patterns are not flagged: docs/presets.md says what they reach.
    let preset_patterns = presets::all()
        .iter()
        .flat_map(|p| p.rules)
        .flat_map(|r| r.hosts.iter().copied())
        .collect::<BTreeSet<_>>();
    let mut out = Vec::new();
    for (b, rule) in rules.iter().enumerate() {
        if rule.allow && !rule.pins && config.mode == Mode::Passthrough {
            out.push(Warning {
                path: rule.path.clone(),
                code: "passthrough-allow",
                message: format!(
                    "{} never applies: in passthrough mode everything no deny rule matches is \
                     allowed",
                    rule.label
                ),
            });
            continue;
        }
        if !rule.preset {
            entry_warnings(rule, &preset_patterns, &mut out);
        }
        let earlier = rules.get(..b).unwrap_or_default();
        let passthrough = config.mode == Mode::Passthrough;
        // A staged rule blocks nothing, so it shadows no rule; it is itself shadowed only by an
        // enforced deny rule, wherever that is (the enforced rules decide first).
        let shadowing = if rule.staged {
            rules.get(..).unwrap_or_default()
        } else {
            earlier
        };
        if let Some(first) = shadowing
            .iter()
            .filter(|a| !a.staged)
            .filter(|a| !(passthrough && a.allow))
            .filter(|a| !rule.staged || !a.allow)
            .find(|a| covers(a, rule))
        {
            out.push(shadow_warning(first, rule));
        }
    }
    if config.ech == EchPolicy::Deny && !config.sniff.hold_upstream && rules.iter().any(|r| r.pins)
    {
        out.push(Warning {
            path: "ech".to_string(),
            code: "ech-deny-pin-no-hold",
            message: "with \"ech\": \"deny\" no connection is allowed at open on the SNI from                       tls_inspector (it does not say whether the ClientHello carries ECH): the                       name is read from the ClientHello after tcp_proxy chose its upstream, so                       without sniff.hold_upstream every pinned connection is denied                       (pin_unavailable); set sniff.hold_upstream"
                .to_string(),
        });
    }
    // One warning per preset (a preset may have several rules).
    out.dedup_by(|a, b| a.path == b.path && a.code == b.code && a.path.starts_with("presets["));
    out
}

fn shadow_warning(first: &LintRule, rule: &LintRule) -> Warning {
    let consequence = match (first.allow, rule.allow) {
        (false, true) => "never allows anything (deny rules come first)",
        _ => "never decides a connection",
    };
    let (code, message) = if same_match(first, rule) {
        (
            "duplicate",
            format!(
                "{} matches exactly what {}, earlier, matches: it {consequence}",
                rule.label, first.label
            ),
        )
    } else {
        (
            "shadowed",
            format!(
                "{} is shadowed by {}: that earlier rule matches everything it matches, so it \
                 {consequence}",
                rule.label, first.label
            ),
        )
    };
    Warning {
        path: rule.path.clone(),
        code,
        message,
    }
}

/// Warnings about one explicit rule's own hosts, CIDRs and ports.
fn entry_warnings(rule: &LintRule, preset_patterns: &BTreeSet<&str>, out: &mut Vec<Warning>) {
    let LintRule { path, allow, .. } = rule;
    if *allow && rule.hosts.is_empty() && rule.cidrs.is_empty() {
        out.push(Warning {
            path: format!("{path}.ports"),
            code: "ports-only",
            message: format!(
                "a rule with only ports allows every destination on {}, whatever its name or IP",
                ports_text(&rule.ports)
            ),
        });
    }
    for (j, (kind, host)) in rule.hosts.iter().enumerate() {
        let at = format!("{path}.hosts[{j}]");
        if let Some(k) = rule
            .hosts
            .get(..j)
            .unwrap_or_default()
            .iter()
            .position(|(_, h)| h == host)
        {
            out.push(Warning {
                path: at,
                code: "duplicate",
                message: format!("{host:?} is listed twice (also hosts[{k}])"),
            });
            continue;
        }
        if let Some(k) = rule
            .hosts
            .iter()
            .enumerate()
            .find(|(k, (_, h))| *k != j && h != host && host_covers(h, host))
            .map(|(k, _)| k)
        {
            let wider = rule.hosts.get(k).map(|(_, h)| h.as_str()).unwrap_or("");
            out.push(Warning {
                path: at.clone(),
                code: "duplicate",
                message: format!("{host:?} is already matched by {wider:?} (hosts[{k}])"),
            });
        }
        if *allow {
            if let Some((name, provider)) = ech_public_name(*kind, host) {
                out.push(Warning {
                    path: at.clone(),
                    code: "ech-public-name",
                    message: format!(
                        "{host:?} matches {name:?}, the ECH public name of {provider}: a \
                         ClientHello with Encrypted Client Hello carries it as its SNI whatever \
                         site it is for, so this allows every ECH site behind that provider \
                         (\"ech\": \"deny\" refuses ECH)"
                    ),
                });
            }
        }
        if *allow && !preset_patterns.contains(host.as_str()) {
            if let Some((code, message)) = wildcard_warning(*kind, host) {
                out.push(Warning {
                    path: at,
                    code,
                    message,
                });
            }
        }
    }
    for (j, net) in rule.cidrs.iter().enumerate() {
        let at = format!("{path}.cidrs[{j}]");
        if net.prefix_len() == 0 {
            let family = if matches!(net, IpNet::V4(_)) {
                "IPv4"
            } else {
                "IPv6"
            };
            let message = if *allow {
                format!(
                    "{net} allows every {family} destination{}, whatever its name",
                    on_ports(&rule.ports)
                )
            } else {
                format!(
                    "{net} denies every {family} destination{}, in every mode",
                    on_ports(&rule.ports)
                )
            };
            out.push(Warning {
                path: at.clone(),
                code: "cidr-everything",
                message,
            });
        }
        let earlier = rule.cidrs.get(..j).unwrap_or_default();
        let later = rule.cidrs.get(j + 1..).unwrap_or_default();
        if let Some(k) = earlier.iter().position(|n| n == net) {
            out.push(Warning {
                path: at,
                code: "duplicate",
                message: format!("{net} is listed twice (also cidrs[{k}])"),
            });
        } else if let Some(wider) = earlier
            .iter()
            .chain(later)
            .find(|n| *n != net && n.contains(net))
        {
            out.push(Warning {
                path: at,
                code: "duplicate",
                message: format!("{net} is inside {wider}, also in this rule"),
            });
        }
    }
    for (j, range) in rule.ports.iter().enumerate() {
        if let Some(k) = rule
            .ports
            .get(..j)
            .unwrap_or_default()
            .iter()
            .position(|r| r.lo <= range.hi && range.lo <= r.hi)
        {
            out.push(Warning {
                path: format!("{path}.ports[{j}]"),
                code: "duplicate",
                message: format!("{range} overlaps ports[{k}]"),
            });
        }
    }
}

fn ports_text(ports: &[PortRange]) -> String {
    let list = ports.iter().map(ToString::to_string).collect::<Vec<_>>();
    match list.as_slice() {
        [one] => format!("port {one}"),
        _ => format!("ports {}", list.join(", ")),
    }
}

fn on_ports(ports: &[PortRange]) -> String {
    if ports.is_empty() {
        String::new()
    } else {
        format!(" on {}", ports_text(ports))
    }
}

/// Whether a name is under a suffix on the public suffix list (known, not only the default
/// rule): what anyone can register names under.
fn is_public_suffix(name: &str) -> bool {
    !name.is_empty()
        && psl::suffix(name.as_bytes())
            .is_some_and(|s| s.is_known() && s.as_bytes() == name.as_bytes())
}

/// The registrable domain of a name (`api.github.com` -> `github.com`), by the public suffix
/// list; `None` for a public suffix itself or a name under no known suffix.
pub fn registrable(name: &str) -> Option<&str> {
    let domain = psl::domain(name.as_bytes())?;
    if !domain.suffix().is_known() {
        return None;
    }
    let len = domain.as_bytes().len();
    name.get(name.len().checked_sub(len)?..)
}

/// The alternatives of a glob's `{a,b}` groups (not nested); the pattern itself otherwise.
fn alternatives(pattern: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (pattern.find('{'), pattern.find('}')) else {
        return vec![pattern.to_string()];
    };
    let (Some(head), Some(body), Some(tail)) = (
        pattern.get(..open),
        pattern.get(open + 1..close),
        pattern.get(close + 1..),
    ) else {
        return vec![pattern.to_string()];
    };
    if close < open || body.contains('{') {
        return vec![pattern.to_string()];
    }
    body.split(',')
        .flat_map(|alt| alternatives(&format!("{head}{alt}{tail}")))
        .collect()
}

fn is_glob_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\')
}

/// A wildcard that reaches past the domain it seems to name.
/// Known public names of ECH client-facing servers (the outer SNI of every ECH ClientHello to a
/// site behind them), with who runs them. The one list of them; each entry says where it was
/// verified.
pub const ECH_PUBLIC_NAMES: &[(&str, &str)] = &[
    // Cloudflare's ECHConfig, published in the HTTPS DNS records of every ECH-enabled zone, has
    // public_name cloudflare-ech.com (Cloudflare blog, "Encrypted Client Hello - the last puzzle
    // piece to privacy", 2023-09-29; ECHConfigList decoded in the ntc.party thread on ESNI/ECH
    // use in Russia).
    ("cloudflare-ech.com", "Cloudflare"),
    // The DEfO project's ECH test deployment: defo.ie's ECHConfigList names cover.defo.ie
    // (curl's ECH guide, https://github.com/curl/curl/blob/master/docs/ECH.md: "retry_configs
    // for defo.ie from cover.defo.ie").
    ("cover.defo.ie", "the DEfO ECH test servers (defo.ie)"),
];

/// The known ECH public name a host pattern matches, and its provider (`*` is left to
/// `wildcard-any`). Matched as the filter matches: through a compiled policy.
fn ech_public_name(kind: PatternKind, pattern: &str) -> Option<(&'static str, &'static str)> {
    if kind == PatternKind::Any {
        return None;
    }
    ECH_PUBLIC_NAMES.iter().copied().find(|(name, _)| {
        if kind == PatternKind::Exact {
            return pattern == *name;
        }
        let doc = json!({"allow": [{"hosts": [pattern]}]}).to_string();
        Policy::from_json(doc.as_bytes()).is_ok_and(|policy| {
            let facts = Facts {
                ip: std::net::IpAddr::from([192, 0, 2, 1]),
                port: 443,
                name: NameFact::Name(name),
            };
            policy.decide(&facts).reason == Reason::Rule
        })
    })
}

fn wildcard_warning(kind: PatternKind, pattern: &str) -> Option<(&'static str, String)> {
    match kind {
        PatternKind::Exact => return None,
        PatternKind::Any => {
            return Some((
                "wildcard-any",
                "\"*\" matches every name: any name passes this rule".to_string(),
            ))
        }
        PatternKind::Suffix | PatternKind::Glob => {}
    }
    for alt in alternatives(pattern) {
        let Some(last) = alt.rfind(is_glob_meta) else {
            continue;
        };
        let literal = alt.get(last + 1..).unwrap_or("");
        let tail = literal.trim_start_matches('.');
        if alt.strip_prefix("*.") == Some(tail) && (tail.is_empty() || is_public_suffix(tail)) {
            return Some((
                "wildcard-public-suffix",
                format!(
                    "{pattern:?} matches every name under the public suffix {tail:?}, where \
                     anyone can register a domain (attacker.{tail})"
                ),
            ));
        }
        let names_a_domain = !(tail.is_empty() || is_public_suffix(tail));
        let in_domain_label = !literal.starts_with('.') && registrable(tail) == Some(tail);
        if !names_a_domain || in_domain_label {
            let example = example_match(&alt);
            return Some((
                "wildcard-domain",
                format!(
                    "{pattern:?} has a wildcard in the registrable domain, so it also matches \
                     other people's domains{}",
                    example.map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            ));
        }
    }
    None
}

/// A name an attacker could own that the glob matches (`*` only; `None` for other globs).
fn example_match(glob: &str) -> Option<String> {
    if glob.contains(|c: char| is_glob_meta(c) && c != '*') {
        return None;
    }
    let example = if let Some(head) = glob.strip_suffix(".*") {
        format!("{}.attacker.com", head.replace('*', "attacker"))
    } else {
        glob.replace('*', "attacker")
    };
    Some(example)
}

/// Whether every name `b` matches is matched by `a` (conservative: `false` when unsure).
fn host_covers(a: &str, b: &str) -> bool {
    if a == b || a == "*" {
        return true;
    }
    match a.strip_prefix("*.") {
        Some(suffix) if !suffix.contains(is_glob_meta) => b
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|rest| !rest.is_empty()),
        _ => false,
    }
}

/// The ranges merged, sorted; `None` for "any port".
fn merged(ports: &[PortRange]) -> Option<Vec<(u32, u32)>> {
    if ports.is_empty() {
        return None;
    }
    let mut ranges = ports
        .iter()
        .map(|r| (u32::from(r.lo), u32::from(r.hi)))
        .collect::<Vec<_>>();
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    if out == [(1, 65535)] {
        return None;
    }
    Some(out)
}

fn ports_cover(a: &[PortRange], b: &[PortRange]) -> bool {
    match (merged(a), merged(b)) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b
            .iter()
            .all(|(lo, hi)| a.iter().any(|(alo, ahi)| alo <= lo && hi <= ahi)),
    }
}

/// Whether rule `a` matches every connection rule `b` matches.
fn covers(a: &LintRule, b: &LintRule) -> bool {
    if !ports_cover(&a.ports, &b.ports) {
        return false;
    }
    if a.hosts.is_empty() && a.cidrs.is_empty() {
        return true;
    }
    if b.hosts.is_empty() && b.cidrs.is_empty() {
        return false;
    }
    b.hosts
        .iter()
        .all(|(_, hb)| a.hosts.iter().any(|(_, ha)| host_covers(ha, hb)))
        && b.cidrs
            .iter()
            .all(|nb| a.cidrs.iter().any(|na| na.contains(nb)))
}

fn same_match(a: &LintRule, b: &LintRule) -> bool {
    let hosts = |r: &LintRule| {
        r.hosts
            .iter()
            .map(|(_, h)| h.clone())
            .collect::<BTreeSet<_>>()
    };
    let cidrs = |r: &LintRule| r.cidrs.iter().copied().collect::<BTreeSet<_>>();
    hosts(a) == hosts(b) && cidrs(a) == cidrs(b) && merged(&a.ports) == merged(&b.ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(policy: &str) -> Vec<(String, &'static str)> {
        let lint = lint(policy.as_bytes());
        assert!(lint.errors.is_empty(), "{:?}", lint.errors);
        lint.warnings
            .into_iter()
            .map(|w| (w.path, w.code))
            .collect()
    }

    #[test]
    fn ech_public_names_and_ech_deny_with_pinning() {
        let found = codes(
            r#"{"allow": [
                {"name": "a", "hosts": ["CloudFlare-ECH.com.", "*.cloudflare-ech.com", "*-ech.com"]},
                {"name": "b", "hosts": ["cover.defo.ie", "*.defo.ie", "defo.ie", "*"]},
                {"name": "c", "hosts": ["cloudflare.com", "ech.example"]}
            ], "deny": [{"name": "d", "hosts": ["cloudflare-ech.com"]}]}"#,
        );
        let ech: Vec<_> = found
            .iter()
            .filter(|(_, code)| *code == "ech-public-name")
            .map(|(path, _)| path.as_str())
            .collect();
        assert_eq!(
            ech,
            [
                "allow[0].hosts[0]",
                "allow[0].hosts[2]",
                "allow[1].hosts[0]",
                "allow[1].hosts[1]"
            ]
        );
        let lint = lint(br#"{"allow": [{"hosts": ["cloudflare-ech.com"]}]}"#);
        let message = &lint.warnings[0].message;
        assert!(
            message.contains("Cloudflare") && message.contains("every ECH site"),
            "{message}"
        );

        // ech deny with pinning needs hold_upstream.
        let pinned = |ech: &str, hold: bool| {
            codes(&format!(
                r#"{{"ech": "{ech}", "pin": true, "allow": [{{"hosts": ["a.example"]}}],
                    "sniff": {{"hold_upstream": {hold}}}}}"#
            ))
        };
        assert_eq!(
            pinned("deny", false),
            [("ech".to_string(), "ech-deny-pin-no-hold")]
        );
        assert_eq!(pinned("deny", true), []);
        assert_eq!(pinned("allow", false), []);
        // A policy that pins nothing needs no hold.
        assert_eq!(
            codes(r#"{"ech": "deny", "allow": [{"hosts": ["a.example"]}]}"#),
            []
        );
    }

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable("api.github.com"), Some("github.com"));
        assert_eq!(registrable("a.b.example.co.uk"), Some("example.co.uk"));
        assert_eq!(registrable("x.github.io"), Some("x.github.io"));
        assert_eq!(registrable("com"), None);
        assert_eq!(registrable("db.internal"), None);
        assert!(is_public_suffix("co.uk") && is_public_suffix("github.io"));
        assert!(!is_public_suffix("github.com") && !is_public_suffix("internal"));
    }

    #[test]
    fn wildcards_that_reach_too_far() {
        let w = |p: &str| {
            let h = HostPattern::parse(p).unwrap();
            wildcard_warning(h.kind(), h.as_str())
        };
        assert_eq!(w("*").unwrap().0, "wildcard-any");
        assert_eq!(w("*.com").unwrap().0, "wildcard-public-suffix");
        assert_eq!(w("*.co.uk").unwrap().0, "wildcard-public-suffix");
        assert_eq!(w("*.github.io").unwrap().0, "wildcard-public-suffix");
        let (code, message) = w("github.*").unwrap();
        assert_eq!(code, "wildcard-domain");
        assert!(message.contains("(github.attacker.com)"), "{message}");
        assert_eq!(w("github.*.com").unwrap().0, "wildcard-domain");
        let (code, message) = w("*github.com").unwrap();
        assert_eq!(code, "wildcard-domain");
        assert!(message.contains("(attackergithub.com)"), "{message}");
        assert_eq!(w("{github,gitlab}.*").unwrap().0, "wildcard-domain");
        for fine in [
            "*.github.com",
            "api-*.example.com",
            "{github,gitlab}.com",
            "*.svc.cluster.local",
            "*.internal",
            "a?.example.com",
            "github.com",
        ] {
            assert_eq!(w(fine), None, "{fine}");
        }
    }

    #[test]
    fn staged_rules_shadow_nothing_and_only_enforced_deny_rules_shadow_them() {
        let found = codes(
            r#"{"mode": "passthrough", "deny": [
                {"name": "s", "cidrs": ["10.0.0.0/8"], "enforce": false},
                {"name": "d", "cidrs": ["10.1.0.0/16"]},
                {"name": "t", "cidrs": ["10.1.2.0/24"], "enforce": false},
                {"name": "u", "cidrs": ["192.168.0.0/16"], "enforce": false},
                {"name": "e", "cidrs": ["192.168.0.0/24"]}
            ]}"#,
        );
        assert_eq!(found, [("deny[2]".to_string(), "shadowed")]);
    }

    #[test]
    fn shadowed_and_duplicate_rules() {
        let found = codes(
            r#"{"allow": [
                {"name": "a", "hosts": ["*.github.com"], "ports": [443]},
                {"name": "b", "hosts": ["api.github.com"], "ports": [443]},
                {"name": "c", "hosts": ["api.github.com"], "ports": [443, 80]},
                {"name": "d", "hosts": ["*.github.com"], "ports": [443]},
                {"name": "e", "cidrs": ["10.1.0.0/16"]},
                {"name": "f", "cidrs": ["10.0.0.0/8"]}
            ], "deny": [{"name": "x", "cidrs": ["10.0.0.0/8"]}]}"#,
        );
        assert_eq!(
            found,
            [
                ("allow[1]".to_string(), "shadowed"),
                ("allow[3]".to_string(), "duplicate"),
                ("allow[4]".to_string(), "shadowed"),
                ("allow[5]".to_string(), "duplicate"),
            ]
        );
    }

    #[test]
    fn other_warnings() {
        let found = codes(
            r#"{"allow": [
                {"name": "a", "ports": [22]},
                {"name": "b", "cidrs": ["0.0.0.0/0", "::/0"], "ports": [5432]},
                {"name": "c", "hosts": ["x.example", "x.example", "*.y.example", "a.y.example"], "cidrs": ["192.0.2.0/24", "192.0.2.8/29"], "ports": [80, "80-81"]}
            ], "presets": ["pypi"]}"#,
        );
        assert_eq!(
            found,
            [
                ("allow[0].ports".to_string(), "ports-only"),
                ("allow[1].cidrs[0]".to_string(), "cidr-everything"),
                ("allow[1].cidrs[1]".to_string(), "cidr-everything"),
                ("allow[2].hosts[1]".to_string(), "duplicate"),
                ("allow[2].hosts[3]".to_string(), "duplicate"),
                ("allow[2].cidrs[1]".to_string(), "duplicate"),
                ("allow[2].ports[1]".to_string(), "duplicate"),
            ]
        );
        let found =
            codes(r#"{"mode": "passthrough", "allow": [{"ports": [22]}], "presets": ["github"]}"#);
        assert_eq!(
            found,
            [
                ("allow[0]".to_string(), "passthrough-allow"),
                ("presets[0]".to_string(), "passthrough-allow"),
            ]
        );
        // A rule that pins still says where its names go in passthrough.
        let found = codes(
            r#"{"mode": "passthrough", "pin": true,
                "allow": [{"ports": [22]}, {"hosts": ["a.example"]}, {"hosts": ["b.example"], "pin": false}]}"#,
        );
        assert_eq!(
            found,
            [
                ("allow[0]".to_string(), "passthrough-allow"),
                ("allow[2]".to_string(), "passthrough-allow"),
            ]
        );
        assert_eq!(
            codes(include_str!("../../../examples/policies/default.json")),
            []
        );
    }

    #[test]
    fn every_error_is_found() {
        let lint = lint(
            br#"{"mode": "block", "allow": [{"cidrs": ["10.0.0.300/8"]}, {"name": "ok", "ports": [1]}, {}, {"name": "ok", "ports": [2]}],
                "presets": ["pip", "pypi", "pypi"], "sniff": {"max_bytes": 1}, "bogus": 1}"#,
        );
        let errors = lint
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(
            errors,
            [
                "mode: unknown variant `block`, expected one of `allowlist`, `audit`, `passthrough`",
                "allow[0].cidrs[0]: \"10.0.0.300/8\" is not a CIDR",
                "allow[2]: a rule needs at least one of hosts, cidrs, ports",
                "presets[0]: unknown variant `pip`, expected one of `debian-apt`, `ubuntu-apt`, `pypi`, `github`, `npm`, `crates-io`, `go-proxy`, `docker-hub`, `maven-central`, `alpine`",
                "sniff.max_bytes: 1 is out of range 512-65536",
                "bogus: unknown field `bogus`, expected one of `mode`, `allow`, `deny`, `presets`, `deny_presets`, `sniff`, `log`, `log_level`, `pin`, `pin_cluster`, `ech`",
                "allow[3].name: \"ok\" is already used by allow[1]",
                "presets[2]: \"pypi\" is already listed at presets[1]",
            ]
        );
    }
}
