//! `suggest LOG... [--format json|istio|cilium] [--wildcard-threshold N] [--prefix-len N]
//! [--prefix-len6 N]`: a policy that allows what the decision log shows passing.
//!
//! Records with decision `allow` or `audit_deny` are used (what an audit-mode rollout shows);
//! denials (deny rules, malformed input, an allowlist's no_match) are not. Names are grouped by
//! registrable domain (the public suffix list), one rule per domain and set of ports; `*.parent`
//! replaces the names under a parent when at least N of its children were seen (never under a
//! public suffix). Connections without a name become CIDR rules (`--prefix-len`), one rule per set
//! of ports. Ports are the ones seen. The output is sorted, so the same logs give the same
//! policy; a summary goes to standard error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use egress_guard::policy::{canonical_ip, Policy};
use ipnet::IpNet;
use serde::Serialize;

use crate::io::{err, out, Exit, UsageError};
use crate::logs::{self, Record};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// egress-guard's JSON policy.
    Json,
    /// Istio ServiceEntry resources (YAML).
    Istio,
    /// A Cilium CiliumNetworkPolicy with toFQDNs and toPorts (YAML).
    Cilium,
}

/// What to suggest, as given on the command line.
#[derive(Debug)]
pub struct Options {
    /// Log files (`-` for standard input).
    pub logs: Vec<PathBuf>,
    /// Output format.
    pub format: Format,
    /// `*.parent` once this many children of `parent` were seen (0: never).
    pub wildcard_threshold: usize,
    /// Prefix length of IPv4 CIDR rules.
    pub prefix_len: u8,
    /// Prefix length of IPv6 CIDR rules.
    pub prefix_len6: u8,
}

/// How much was seen of one destination (a name, or a network): connections per port and
/// protocol.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// port -> protocol (`tls`, `http`, `other`) -> connections.
    ports: BTreeMap<u16, BTreeMap<String, usize>>,
}

impl Seen {
    fn add(&mut self, port: u16, proto: &str) {
        *self
            .ports
            .entry(port)
            .or_default()
            .entry(proto.to_string())
            .or_default() += 1;
    }

    fn merge(&mut self, other: &Seen) {
        for (port, protos) in &other.ports {
            for (proto, n) in protos {
                *self
                    .ports
                    .entry(*port)
                    .or_default()
                    .entry(proto.clone())
                    .or_default() += n;
            }
        }
    }

    fn port_set(&self) -> Vec<u16> {
        self.ports.keys().copied().collect()
    }

    fn connections(&self) -> usize {
        self.ports.values().flat_map(BTreeMap::values).sum()
    }
}

/// A suggested rule.
#[derive(Debug, Clone)]
pub struct SuggestedRule {
    /// Its name: `github-com`, `github-com-80-443`, `cidrs-5432`.
    pub name: String,
    /// Host patterns (exact names and `*.parent`), sorted.
    pub hosts: Vec<String>,
    /// For each `*.parent` in `hosts`, the names seen under it (for Cilium, whose `*` does not
    /// span dots).
    pub covered: BTreeMap<String, BTreeSet<String>>,
    /// Networks, sorted.
    pub cidrs: Vec<IpNet>,
    /// Ports seen.
    pub ports: Vec<u16>,
    /// The protocol seen most on each port (`tls`, `http`, `other`).
    pub protocols: BTreeMap<u16, String>,
    /// Connections seen.
    pub connections: usize,
}

/// The registrable domain a name is grouped under: by the public suffix list, or (under an
/// unknown top-level domain) its last two labels; the name itself if it has one label.
fn group_of(name: &str) -> &str {
    psl::domain_str(name).unwrap_or(name)
}

/// The name without its first label.
fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, p)| p)
}

/// A rule-name fragment: `[a-z0-9-]` only.
fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// A unique rule name from `base`, at most 63 characters (so `egress-guard-` is not needed to
/// fit a Kubernetes name: the Istio output uses the rule name as is, prefixed where it fits).
fn unique_name(base: &str, used: &mut BTreeSet<String>) -> String {
    let base = if base.is_empty() { "rule" } else { base };
    let cut = |s: &str, n: usize| -> String {
        s.chars()
            .take(n)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string()
    };
    let mut name = cut(base, 63);
    let mut n = 2;
    while used.contains(&name) {
        let suffix = format!("-{n}");
        name = format!("{}{suffix}", cut(base, 63 - suffix.len()));
        n += 1;
    }
    used.insert(name.clone());
    name
}

fn ports_slug(ports: &[u16]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("-")
}

/// The protocol seen most on each port (ties: tls, then http, then other).
fn protocols(seen: &Seen) -> BTreeMap<u16, String> {
    seen.ports
        .iter()
        .map(|(port, protos)| {
            let rank = |p: &str| match p {
                "tls" => 0,
                "http" => 1,
                _ => 2,
            };
            let best = protos
                .iter()
                .max_by(|(a, x), (b, y)| x.cmp(y).then(rank(b).cmp(&rank(a))))
                .map(|(p, _)| p.clone())
                .unwrap_or_else(|| "other".to_string());
            (*port, best)
        })
        .collect()
}

/// Labels reversed, for sorting names so that a domain's names sit together.
fn sort_key(pattern: &str) -> Vec<String> {
    pattern.rsplit('.').map(str::to_string).collect()
}

/// A host pattern, what was seen of it, and (for `*.parent`) the names it stands for.
type Entry = (String, Seen, BTreeSet<String>);

/// Builds the rules: names by registrable domain, then networks.
pub fn build(records: &[Record], options: &Options) -> (Vec<SuggestedRule>, Counts) {
    let mut counts = Counts::default();
    let mut names: BTreeMap<String, Seen> = BTreeMap::new();
    let mut nets: BTreeMap<IpNet, Seen> = BTreeMap::new();
    for record in records {
        *counts.decisions.entry(record.decision.clone()).or_default() += 1;
        if !matches!(record.decision.as_str(), "allow" | "audit_deny") {
            continue;
        }
        let Ok(dst) = record.dst.parse::<SocketAddr>() else {
            counts.bad_dst += 1;
            continue;
        };
        counts.used += 1;
        let proto = record.proto.as_deref().unwrap_or("other");
        match record.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => names
                .entry(name.to_ascii_lowercase())
                .or_default()
                .add(dst.port(), proto),
            None => {
                let ip = canonical_ip(dst.ip());
                let len = if ip.is_ipv4() {
                    options.prefix_len.min(32)
                } else {
                    options.prefix_len6.min(128)
                };
                let net = IpNet::new(ip, len)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| IpNet::from(ip));
                nets.entry(net).or_default().add(dst.port(), proto);
            }
        }
    }

    let mut used = BTreeSet::new();
    let mut rules = Vec::new();
    let mut groups: BTreeMap<String, Vec<(&String, &Seen)>> = BTreeMap::new();
    for (name, seen) in &names {
        groups
            .entry(group_of(name).to_string())
            .or_default()
            .push((name, seen));
    }
    // Alphabetical by registrable domain (a BTreeMap's order).
    for (domain, members) in groups {
        // Parents with enough children seen, shallowest first; never the public suffix above
        // the domain (parent must be the domain or under it).
        let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (name, _) in &members {
            if let Some(p) = parent(name) {
                if p == domain || p.ends_with(&format!(".{domain}")) {
                    children.entry(p).or_default().insert(name.as_str());
                }
            }
        }
        let mut candidates = children
            .iter()
            .filter(|(_, c)| {
                options.wildcard_threshold > 0 && c.len() >= options.wildcard_threshold
            })
            .map(|(p, _)| *p)
            .collect::<Vec<_>>();
        candidates.sort_by_key(|p| (p.matches('.').count(), p.to_string()));
        let mut wildcards: Vec<&str> = Vec::new();
        for p in candidates {
            if !wildcards
                .iter()
                .any(|w| p == *w || p.ends_with(&format!(".{w}")))
            {
                wildcards.push(p);
            }
        }
        // Entries: a wildcard with everything under it, or a name; each with what was seen.
        let mut entries: BTreeMap<String, (Seen, BTreeSet<String>)> = BTreeMap::new();
        for (name, seen) in &members {
            let under = wildcards
                .iter()
                .find(|w| name.ends_with(&format!(".{w}")))
                .map(|w| format!("*.{w}"));
            let key = under.clone().unwrap_or_else(|| (*name).clone());
            let entry = entries.entry(key).or_default();
            entry.0.merge(seen);
            if under.is_some() {
                entry.1.insert((*name).clone());
            }
        }
        // One rule per set of ports.
        let mut by_ports: BTreeMap<Vec<u16>, Vec<Entry>> = BTreeMap::new();
        for (host, (seen, covered)) in entries {
            by_ports
                .entry(seen.port_set())
                .or_default()
                .push((host, seen, covered));
        }
        let several = by_ports.len() > 1;
        for (ports, hosts) in by_ports {
            let base = if several {
                format!("{}-{}", slug(&domain), ports_slug(&ports))
            } else {
                slug(&domain)
            };
            let mut seen = Seen::default();
            let mut covered = BTreeMap::new();
            let mut patterns = Vec::new();
            for (host, s, c) in hosts {
                seen.merge(&s);
                if !c.is_empty() {
                    covered.insert(host.clone(), c);
                }
                patterns.push(host);
            }
            patterns.sort_by_key(|h| sort_key(h));
            rules.push(SuggestedRule {
                name: unique_name(&base, &mut used),
                hosts: patterns,
                covered,
                cidrs: Vec::new(),
                ports,
                protocols: protocols(&seen),
                connections: seen.connections(),
            });
        }
    }
    let mut by_ports: BTreeMap<Vec<u16>, (Vec<IpNet>, Seen)> = BTreeMap::new();
    for (net, seen) in &nets {
        let entry = by_ports.entry(seen.port_set()).or_default();
        entry.0.push(*net);
        entry.1.merge(seen);
    }
    for (ports, (cidrs, seen)) in by_ports {
        rules.push(SuggestedRule {
            name: unique_name(&format!("cidrs-{}", ports_slug(&ports)), &mut used),
            hosts: Vec::new(),
            covered: BTreeMap::new(),
            cidrs,
            ports,
            protocols: protocols(&seen),
            connections: seen.connections(),
        });
    }
    (rules, counts)
}

/// Counts for the summary.
#[derive(Debug, Default)]
pub struct Counts {
    /// Records per decision.
    decisions: BTreeMap<String, usize>,
    /// Records used (allow, audit_deny).
    used: usize,
    /// Records whose `dst` is not `ip:port`.
    bad_dst: usize,
}

/// One rule of the JSON policy, in the field order of the configuration reference.
#[derive(Serialize)]
struct JsonRule<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    hosts: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cidrs: Vec<String>,
    ports: &'a [u16],
}

/// The egress-guard policy: an allowlist, one rule per line.
pub fn to_json(rules: &[SuggestedRule]) -> Result<String, UsageError> {
    let mut lines = Vec::new();
    for rule in rules {
        let line = serde_json::to_string(&JsonRule {
            name: &rule.name,
            hosts: &rule.hosts,
            cidrs: rule.cidrs.iter().map(ToString::to_string).collect(),
            ports: &rule.ports,
        })
        .map_err(|e| UsageError(format!("cannot format JSON: {e}")))?;
        // serde_json writes no spaces; the examples have them after `:` and `,`.
        lines.push(format!("    {}", spaced(&line)));
    }
    let text = if lines.is_empty() {
        "{\n  \"mode\": \"allowlist\",\n  \"allow\": []\n}\n".to_string()
    } else {
        format!(
            "{{\n  \"mode\": \"allowlist\",\n  \"allow\": [\n{}\n  ]\n}}\n",
            lines.join(",\n")
        )
    };
    Ok(text)
}

/// Compact JSON with a space after each `:` and `,` outside strings.
fn spaced(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 4);
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ':' || c == ',' {
            out.push(' ');
        }
    }
    out
}

/// A YAML double-quoted scalar.
fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{}\"", text.escape_default()))
}

/// A Kubernetes object name for a rule.
fn object_name(rule: &str) -> String {
    let name = format!("egress-guard-{rule}");
    if name.len() <= 63 {
        name
    } else {
        rule.to_string()
    }
}

/// Istio ServiceEntries, one per rule.
pub fn to_istio(rules: &[SuggestedRule]) -> String {
    let mut text = String::new();
    for (i, rule) in rules.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        let _ = writeln!(
            text,
            "# {} connection{} seen",
            rule.connections,
            if rule.connections == 1 { "" } else { "s" }
        );
        text.push_str("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n");
        let _ = writeln!(text, "  name: {}", object_name(&rule.name));
        text.push_str("spec:\n  hosts:\n");
        if rule.hosts.is_empty() {
            // Istio needs a host; with addresses and resolution NONE it only names the entry.
            let _ = writeln!(
                text,
                "  - {}",
                q(&format!("{}.egress-guard.internal", rule.name))
            );
            text.push_str("  addresses:\n");
            for net in &rule.cidrs {
                let _ = writeln!(text, "  - {}", q(&net.to_string()));
            }
        } else {
            for host in &rule.hosts {
                let _ = writeln!(text, "  - {}", q(host));
            }
        }
        text.push_str("  location: MESH_EXTERNAL\n  resolution: NONE\n  ports:\n");
        for port in &rule.ports {
            let protocol = match rule.protocols.get(port).map(String::as_str) {
                Some("tls") => "TLS",
                Some("http") => "HTTP",
                _ => "TCP",
            };
            let _ = writeln!(
                text,
                "  - {{number: {port}, name: {}-{port}, protocol: {protocol}}}",
                protocol.to_ascii_lowercase()
            );
        }
    }
    text
}

const CILIUM_HEAD: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: egress-guard-suggested
spec:
  endpointSelector: {}
  egress:
  # DNS through Cilium's DNS proxy: toFQDNs only allows the IPs of names it saw resolved.
  # Adjust the selector to your cluster's DNS service.
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s:k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: ANY
      rules:
        dns:
        - matchPattern: "*"
"#;

/// One CiliumNetworkPolicy: DNS through Cilium's proxy (toFQDNs needs it), then one egress
/// rule per suggested rule.
pub fn to_cilium(rules: &[SuggestedRule]) -> String {
    let mut text = String::from(CILIUM_HEAD);
    for rule in rules {
        let _ = writeln!(
            text,
            "  # {}: {} connection{} seen",
            rule.name,
            rule.connections,
            if rule.connections == 1 { "" } else { "s" }
        );
        if rule.hosts.is_empty() {
            text.push_str("  - toCIDR:\n");
            for net in &rule.cidrs {
                let _ = writeln!(text, "    - {}", q(&net.to_string()));
            }
        } else {
            text.push_str("  - toFQDNs:\n");
            for host in &rule.hosts {
                match host.strip_prefix("*.") {
                    Some(parent) => {
                        let _ = writeln!(text, "    - matchPattern: {}", q(host));
                        // Cilium's `*` stays within one label: names seen deeper are listed.
                        for name in rule.covered.get(host).into_iter().flatten() {
                            let depth = name
                                .strip_suffix(parent)
                                .map_or(0, |head| head.matches('.').count());
                            if depth > 1 {
                                let _ = writeln!(text, "    - matchName: {}", q(name));
                            }
                        }
                    }
                    None => {
                        let _ = writeln!(text, "    - matchName: {}", q(host));
                    }
                }
            }
        }
        text.push_str("    toPorts:\n    - ports:\n");
        for port in &rule.ports {
            let _ = writeln!(text, "      - port: \"{port}\"\n        protocol: TCP");
        }
    }
    text
}

pub fn run(options: &Options) -> Result<Exit, UsageError> {
    let (records, stats) = logs::read(&options.logs)?;
    let (rules, counts) = build(&records, options);
    let policy = to_json(&rules)?;
    // The suggestion must be a policy the filter accepts.
    if let Err(e) = Policy::from_json(policy.as_bytes()) {
        return Err(UsageError(format!(
            "internal error: the suggested policy is invalid: {e}"
        )));
    }
    let text = match options.format {
        Format::Json => policy,
        Format::Istio => to_istio(&rules),
        Format::Cilium => to_cilium(&rules),
    };
    out(&text)?;
    err(&summary(&stats, &counts, &rules));
    Ok(Exit::Ok)
}

/// The summary for standard error.
fn summary(stats: &logs::Stats, counts: &Counts, rules: &[SuggestedRule]) -> String {
    let decisions = counts
        .decisions
        .iter()
        .map(|(d, n)| format!("{n} {d}"))
        .collect::<Vec<_>>();
    let mut text = format!(
        "egress-guard suggest: {} line{} read from {} input{}: {} decision record{} ({}), {} used \
         (allow and audit_deny); {} other line{} skipped, {} unreadable record{}",
        stats.lines,
        plural(stats.lines),
        stats.inputs,
        plural(stats.inputs),
        stats.records,
        plural(stats.records),
        if decisions.is_empty() {
            "none".to_string()
        } else {
            decisions.join(", ")
        },
        counts.used,
        stats.skipped,
        plural(stats.skipped),
        stats.unreadable + counts.bad_dst,
        plural(stats.unreadable + counts.bad_dst),
    );
    let _ = write!(text, "\n{} rule{}", rules.len(), plural(rules.len()));
    if !rules.is_empty() {
        text.push(':');
    }
    for rule in rules {
        let what = if rule.hosts.is_empty() {
            format!("{} cidr{}", rule.cidrs.len(), plural(rule.cidrs.len()))
        } else {
            let wildcards = rule.hosts.iter().filter(|h| h.starts_with("*.")).count();
            format!(
                "{} host{}{}",
                rule.hosts.len(),
                plural(rule.hosts.len()),
                if wildcards > 0 {
                    format!(" ({wildcards} wildcard{})", plural(wildcards))
                } else {
                    String::new()
                }
            )
        };
        let _ = write!(
            text,
            "\n  {:<28} {:<22} ports {:<12} {} connection{}",
            rule.name,
            what,
            rule.ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            rule.connections,
            plural(rule.connections)
        );
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

    #[test]
    fn names_and_slugs() {
        assert_eq!(group_of("a.b.github.com"), "github.com");
        assert_eq!(group_of("x.github.io"), "x.github.io");
        assert_eq!(group_of("db.svc.cluster.local"), "cluster.local");
        assert_eq!(group_of("localhost"), "localhost");
        assert_eq!(slug("api.github.com"), "api-github-com");
        assert_eq!(slug("_dmarc.x.com"), "dmarc-x-com");
        let mut used = BTreeSet::new();
        assert_eq!(unique_name("a", &mut used), "a");
        assert_eq!(unique_name("a", &mut used), "a-2");
        let long = "x".repeat(80);
        assert_eq!(unique_name(&long, &mut used).len(), 63);
        assert_eq!(
            unique_name(&long, &mut used),
            format!("{}-2", "x".repeat(61))
        );
        assert_eq!(
            spaced(r#"{"a":["b,c:d",1],"e":"\"x,"}"#),
            r#"{"a": ["b,c:d", 1], "e": "\"x,"}"#
        );
    }
}
