//! The built-in presets: each one allows what it is for, on its ports only, and no lookalike;
//! and `docs/presets.md` documents exactly the presets and hosts that ship.
#![cfg(not(target_arch = "wasm32"))]
// A test crate: its helpers may fail loudly too (clippy.toml allows this inside #[test] only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use egress_guard::policy::presets::{self, PresetInfo};
use egress_guard::policy::{
    classify_sni, reference, Config, Decision, Facts, NameFact, Policy, Reason, Verdict,
};

/// Any destination IP: presets match names, never addresses.
const IP: &str = "198.51.100.10";

fn config_with(presets: &[&str]) -> Config {
    let json = serde_json::json!({ "presets": presets }).to_string();
    Config::from_json(json.as_bytes()).unwrap()
}

/// Decides through the compiled policy and the reference implementation, which must agree.
fn decide_fact(config: &Config, name: NameFact<'_>, port: u16) -> (Decision, Policy) {
    let policy = Policy::compile(config).unwrap();
    let facts = Facts {
        ip: IP.parse::<IpAddr>().unwrap(),
        port,
        name,
    };
    let compiled = policy.decide(&facts);
    assert_eq!(
        compiled,
        reference::decide(config, &facts),
        "{name:?}:{port}"
    );
    (compiled, policy)
}

/// Decides for a raw SNI, normalised as the filter does.
fn decide(config: &Config, raw_name: &str, port: u16) -> (Decision, Policy) {
    let class = classify_sni(raw_name.as_bytes());
    decide_fact(config, NameFact::from(&class), port)
}

/// Asserts that `name` on `port` is allowed by the rule of preset `preset`.
fn assert_allowed(config: &Config, preset: &str, name: &str, port: u16) {
    let (decision, policy) = decide(config, name, port);
    assert_eq!(
        (decision.verdict, decision.reason),
        (Verdict::Allow, Reason::Rule),
        "{preset}: {name}:{port} should be allowed"
    );
    let rule = policy.rule(decision.rule.unwrap()).unwrap();
    assert_eq!(rule.preset, Some(preset), "{name}:{port}");
    assert!(
        rule.name.starts_with(&format!("preset-{preset}")),
        "{}",
        rule.name
    );
}

fn assert_denied(config: &Config, name: &str, port: u16) {
    let (decision, _) = decide(config, name, port);
    assert_eq!(
        (decision.verdict, decision.reason),
        (Verdict::Deny, Reason::NoMatch),
        "{name}:{port} should be denied"
    );
}

struct Case {
    preset: &'static str,
    /// A name the preset exists for, and a port it is used on.
    allowed: (&'static str, u16),
    /// Names that look like an allowed one and must not pass on that port.
    lookalikes: &'static [&'static str],
    /// Names in the same family that the preset deliberately leaves out (see docs/presets.md).
    not_covered: &'static [&'static str],
    /// A port the allowed name must not pass on.
    wrong_port: u16,
}

const CASES: &[Case] = &[
    Case {
        preset: "debian-apt",
        allowed: ("deb.debian.org", 80),
        lookalikes: &[
            "deb.debian.org.evil.com",
            "evildeb.debian.org",
            "deb-debian.org",
        ],
        not_covered: &["debian.org", "ftp.us.debian.org", "snapshot.debian.org"],
        wrong_port: 8080,
    },
    Case {
        preset: "ubuntu-apt",
        allowed: ("us.archive.ubuntu.com", 80),
        lookalikes: &[
            "archive.ubuntu.com.evil.com",
            "evilarchive.ubuntu.com",
            "archive-ubuntu.com",
        ],
        not_covered: &["ubuntu.com", "esm.ubuntu.com", "ppa.launchpadcontent.net"],
        wrong_port: 21,
    },
    Case {
        preset: "pypi",
        allowed: ("pypi.org", 443),
        lookalikes: &[
            "pypi.org.evil.com",
            "evilpypi.org",
            "pypi-org.com",
            "files.pythonhosted.org.evil.com",
        ],
        not_covered: &["upload.pypi.org", "test.pypi.org", "pythonhosted.org"],
        wrong_port: 80,
    },
    Case {
        preset: "github",
        allowed: ("objects.githubusercontent.com", 443),
        lookalikes: &[
            "github.com.evil.com",
            "evilgithub.com",
            "githubusercontent.com.evil.com",
            "evilgithubusercontent.com",
        ],
        not_covered: &["githubusercontent.com", "ghcr.io", "github.io"],
        wrong_port: 22,
    },
    Case {
        preset: "npm",
        allowed: ("registry.npmjs.org", 443),
        lookalikes: &[
            "registry.npmjs.org.evil.com",
            "evilregistry.npmjs.org",
            "registry-npmjs.org",
            "registry.npmjs.com",
        ],
        not_covered: &["npmjs.org", "www.npmjs.com", "repo.yarnpkg.com"],
        wrong_port: 80,
    },
    Case {
        preset: "crates-io",
        allowed: ("index.crates.io", 443),
        lookalikes: &["crates.io.evil.com", "evilcrates.io", "evil.crates.io"],
        not_covered: &["sh.rustup.rs", "docs.rs"],
        wrong_port: 80,
    },
    Case {
        preset: "go-proxy",
        allowed: ("proxy.golang.org", 443),
        lookalikes: &[
            "proxy.golang.org.evil.com",
            "evilproxy.golang.org",
            "proxy-golang.org",
        ],
        not_covered: &[
            "golang.org",
            "storage.googleapis.com",
            "go.googlesource.com",
        ],
        wrong_port: 80,
    },
    Case {
        preset: "docker-hub",
        allowed: ("registry-1.docker.io", 443),
        lookalikes: &[
            "registry-1.docker.io.evil.com",
            "evil.docker.io",
            "production.cloudflare.docker.com.evil.com",
        ],
        not_covered: &["docker.io", "hub.docker.com", "ghcr.io"],
        wrong_port: 80,
    },
    Case {
        preset: "maven-central",
        allowed: ("repo.maven.apache.org", 443),
        lookalikes: &[
            "repo.maven.apache.org.evil.com",
            "evilrepo1.maven.org",
            "repo2.maven.org",
        ],
        not_covered: &["maven.org", "plugins.gradle.org", "maven.google.com"],
        wrong_port: 80,
    },
    Case {
        preset: "alpine",
        allowed: ("dl-cdn.alpinelinux.org", 443),
        lookalikes: &[
            "dl-cdn.alpinelinux.org.evil.com",
            "evildl-cdn.alpinelinux.org",
            "dl-cdn-alpinelinux.org",
        ],
        not_covered: &["alpinelinux.org", "dl-2.alpinelinux.org"],
        wrong_port: 8443,
    },
];

#[test]
fn each_preset_allows_its_names_on_its_ports_only() {
    let names: BTreeSet<&str> = CASES.iter().map(|c| c.preset).collect();
    let all: BTreeSet<&str> = presets::all().iter().map(|p| p.name).collect();
    assert_eq!(names, all, "every preset needs a row here");

    for case in CASES {
        let config = config_with(&[case.preset]);
        let (name, port) = case.allowed;
        assert_allowed(&config, case.preset, name, port);
        // Case and one trailing dot do not matter.
        assert_allowed(
            &config,
            case.preset,
            &format!("{}.", name.to_uppercase()),
            port,
        );
        assert_denied(&config, name, case.wrong_port);
        for lookalike in case.lookalikes.iter().chain(case.not_covered) {
            assert_denied(&config, lookalike, port);
        }
        // Without a name (TLS without SNI, git over SSH), presets allow nothing.
        let (decision, _) = decide_fact(&config, NameFact::Absent, port);
        assert_eq!(
            (decision.verdict, decision.reason),
            (Verdict::Deny, Reason::NoMatch),
            "{}",
            case.preset
        );
    }
}

/// Names a host pattern must match, and names next to it that it must not.
fn around(pattern: &str) -> (Vec<String>, Vec<String>) {
    match pattern.strip_prefix("*.") {
        Some(suffix) => (
            vec![format!("a.{suffix}"), format!("a-b.c.{suffix}")],
            vec![
                format!("a.{suffix}.evil.com"),
                format!("evil{suffix}"),
                format!("a.evil{suffix}"),
            ],
        ),
        None => (
            vec![pattern.to_string()],
            vec![
                format!("{pattern}.evil.com"),
                format!("evil{pattern}"),
                format!("a.{pattern}"),
                format!("{pattern}s"),
            ],
        ),
    }
}

fn preset_ports(info: &PresetInfo) -> BTreeSet<u16> {
    info.rules
        .iter()
        .flat_map(|r| r.ports)
        .flat_map(|r| r.lo..=r.hi)
        .collect()
}

#[test]
fn every_host_of_every_preset() {
    // Each preset alone, and all presets together: every host pattern allows its names on every
    // preset port, under its own preset's rule, and nothing around them or on other ports.
    let everything: Vec<&str> = presets::all().iter().map(|p| p.name).collect();
    let together = config_with(&everything);
    let all_hosts: Vec<&str> = presets::all()
        .iter()
        .flat_map(|p| p.rules)
        .flat_map(|r| r.hosts.iter().copied())
        .collect();
    for info in presets::all() {
        let alone = config_with(&[info.name]);
        let ports = preset_ports(info);
        for rule in info.rules {
            for pattern in rule.hosts {
                let (matching, around) = around(pattern);
                for port in &ports {
                    for name in &matching {
                        assert_allowed(&alone, info.name, name, *port);
                        assert_allowed(&together, info.name, name, *port);
                    }
                    for name in &around {
                        // Another pattern of the same preset may cover it (a.github.com).
                        let covered = all_hosts.iter().any(|h| {
                            h == name || h.strip_prefix('*').is_some_and(|s| name.ends_with(s))
                        });
                        if !covered {
                            assert_denied(&together, name, *port);
                        }
                    }
                }
                for port in [22, 8080, 8443, 9418, 80, 443] {
                    if !ports.contains(&port) {
                        assert_denied(&together, &matching[0], port);
                    }
                }
            }
        }
    }
}

// --- docs/presets.md -------------------------------------------------------------------------

/// `docs/presets.md`, split into `## ` sections: heading -> body.
fn doc_sections() -> Vec<(String, String)> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/presets.md")).unwrap();
    doc.split("\n## ")
        .skip(1)
        .map(|section| {
            let (heading, body) = section.split_once('\n').unwrap_or((section, ""));
            (heading.trim().to_string(), body.to_string())
        })
        .collect()
}

#[test]
fn the_doc_lists_every_preset_with_its_hosts_and_ports() {
    let sections = doc_sections();
    // Preset sections are headed by the name in backticks; nothing else is.
    let documented: Vec<&str> = sections
        .iter()
        .filter_map(|(h, _)| h.strip_prefix('`').and_then(|h| h.strip_suffix('`')))
        .collect();
    let all: Vec<&str> = presets::all().iter().map(|p| p.name).collect();
    assert_eq!(
        documented, all,
        "docs/presets.md: one `## `name`` section per preset, in order"
    );

    for info in presets::all() {
        let body = &sections
            .iter()
            .find(|(h, _)| *h == format!("`{}`", info.name))
            .unwrap()
            .1;
        // The host table: rows that start with a backticked host, exactly the preset's hosts.
        let rows: BTreeSet<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(host, _)| host))
            .collect();
        let hosts: BTreeSet<&str> = info
            .rules
            .iter()
            .flat_map(|r| r.hosts.iter().copied())
            .collect();
        assert_eq!(rows, hosts, "docs/presets.md, {}: host table", info.name);
        let ports = info
            .rules
            .iter()
            .flat_map(|r| r.ports)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            body.lines().any(|l| l == format!("Ports: {ports}.")),
            "docs/presets.md, {}: no line \"Ports: {ports}.\"",
            info.name
        );
    }
}

#[test]
fn the_docs_json_examples_are_valid() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/presets.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3);
    for block in blocks {
        Policy::from_json(block.as_bytes()).unwrap_or_else(|e| panic!("{block}: {e}"));
    }
}

// --- deny presets ----------------------------------------------------------------------------

#[test]
fn cloud_metadata_denies_every_address_and_name_on_every_port_before_allow_rules() {
    let config = Config::from_json(
        br#"{"deny_presets": ["cloud-metadata"],
             "allow": [{"name": "any", "hosts": ["*"]}, {"name": "any-ip", "cidrs": ["0.0.0.0/0", "::/0"]}]}"#,
    )
    .unwrap();
    let policy = Policy::compile(&config).unwrap();
    let decide = |ip: &str, port: u16, name: NameFact<'_>| {
        let facts = Facts {
            ip: ip.parse().unwrap(),
            port,
            name,
        };
        let compiled = policy.decide(&facts);
        assert_eq!(compiled, reference::decide(&config, &facts), "{ip}:{port}");
        compiled
    };
    let denied = |d: Decision| {
        (
            d.verdict,
            d.reason,
            policy.rule(d.rule.unwrap()).unwrap().name.as_str(),
        ) == (Verdict::Deny, Reason::DenyRule, "preset-cloud-metadata")
    };
    for info in presets::deny_all() {
        for rule in info.rules {
            for cidr in rule.cidrs {
                let net: ipnet::IpNet = cidr.parse().unwrap();
                for port in [22, 80, 443, 8080, 65535] {
                    for ip in [net.network(), net.broadcast()] {
                        let d = decide(&ip.to_string(), port, NameFact::Absent);
                        assert!(denied(d), "{ip}:{port}: {d:?}");
                        let d = decide(&ip.to_string(), port, NameFact::Name("fine.example"));
                        assert!(denied(d), "{ip}:{port}: {d:?}");
                    }
                }
            }
            for host in rule.hosts {
                for port in [80, 443] {
                    let class = classify_sni(host.to_uppercase().as_bytes());
                    let d = decide(IP, port, NameFact::from(&class));
                    assert!(denied(d), "{host}:{port}: {d:?}");
                    let lookalike = format!("{host}.evil.example");
                    let d = decide(IP, port, NameFact::Name(&lookalike));
                    assert_eq!(d.verdict, Verdict::Allow, "{lookalike}");
                }
            }
        }
    }
    assert_eq!(
        decide("::ffff:169.254.169.254", 80, NameFact::Absent).reason,
        Reason::DenyRule
    );
    assert_eq!(
        decide("169.254.169.253", 80, NameFact::Absent).verdict,
        Verdict::Allow
    );
}

#[test]
fn the_doc_lists_every_deny_preset_with_its_addresses_and_hosts() {
    let sections = doc_sections();
    let documented: Vec<&str> = sections
        .iter()
        .filter_map(|(h, _)| h.strip_prefix("Deny preset `"))
        .filter_map(|h| h.strip_suffix('`'))
        .collect();
    let all: Vec<&str> = presets::deny_all().iter().map(|p| p.name).collect();
    assert_eq!(
        documented, all,
        "docs/presets.md: one `## Deny preset `name`` section each"
    );
    for info in presets::deny_all() {
        let body = &sections
            .iter()
            .find(|(h, _)| *h == format!("Deny preset `{}`", info.name))
            .unwrap()
            .1;
        let rows: BTreeSet<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(entry, _)| entry))
            .collect();
        let entries: BTreeSet<&str> = info
            .rules
            .iter()
            .flat_map(|r| r.cidrs.iter().chain(r.hosts).copied())
            .collect();
        assert_eq!(rows, entries, "docs/presets.md, {}: table", info.name);
        assert!(info.rules.iter().all(|r| r.ports.is_empty()));
        assert!(body.lines().any(|l| l == "Ports: any."), "{}", info.name);
    }
}
