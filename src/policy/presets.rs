//! Presets: named bundles of allow rules shipped inside the module (`"presets": ["pypi"]`).
//!
//! A preset's rules are appended after the explicit `allow` rules, in the order the presets are
//! listed, and are named `preset-<preset>` (`preset-<preset>-<n>`, n from 1, for a preset with
//! several rules). Host patterns are kept tight: the hosts a package manager actually contacts,
//! on the ports it uses.
//!
//! Only names are listed: protocols that carry no name (git over SSH to `github.com:22`, for
//! example) cannot be allowed by host and need `cidrs` rules of their own.
//!
//! Deny presets (`"deny_presets": ["cloud-metadata"]`) are bundles of deny rules, by address
//! and by name: their rules come after the explicit `deny` rules (so before every allow rule) and
//! are named `preset-<preset>` too. Preset names are unique across both lists.

use std::fmt;

use serde::Deserialize;

use super::de::string_only;
use super::ports::PortRange;

/// A built-in preset, as written in `presets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(remote = "Self", rename_all = "kebab-case")]
pub enum Preset {
    /// Debian apt mirrors (`deb.debian.org` and the security archive), HTTP and HTTPS.
    DebianApt,
    /// Ubuntu apt archives, HTTP and HTTPS.
    UbuntuApt,
    /// The Python Package Index.
    Pypi,
    /// GitHub over HTTPS (web, API, git, release and raw content).
    Github,
    /// The npm registry (and Yarn's mirror of it).
    Npm,
    /// crates.io and the Rust toolchain downloads.
    CratesIo,
    /// The Go module proxy and checksum database.
    GoProxy,
    /// Docker Hub image pulls.
    DockerHub,
    /// Maven Central.
    MavenCentral,
    /// Alpine Linux package mirrors (the CDN).
    Alpine,
}

string_only!(Preset, "a preset name string");

/// One allow rule of a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetRule {
    /// Host patterns, already normalised (lowercase, no trailing dot).
    pub hosts: &'static [&'static str],
    /// Ports; never empty (a preset never allows every port).
    pub ports: &'static [PortRange],
}

/// A preset as listed by the CLI's `presets` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetInfo {
    /// The preset.
    pub preset: Preset,
    /// Its name in configuration (`debian-apt`).
    pub name: &'static str,
    /// One line saying what it allows.
    pub description: &'static str,
    /// Its allow rules.
    pub rules: &'static [PresetRule],
}

const HTTP: PortRange = PortRange { lo: 80, hi: 80 };
const HTTPS: PortRange = PortRange { lo: 443, hi: 443 };

const ALL: &[PresetInfo] = &[
    PresetInfo {
        preset: Preset::DebianApt,
        name: "debian-apt",
        description:
            "Debian apt: deb.debian.org, security.debian.org, ftp.debian.org on 80 and 443",
        rules: &[PresetRule {
            hosts: &[
                "deb.debian.org",
                "security.debian.org",
                "ftp.debian.org",
                "cdn-fastly.deb.debian.org",
            ],
            ports: &[HTTP, HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::UbuntuApt,
        name: "ubuntu-apt",
        description:
            "Ubuntu apt: archive, country mirrors, security and ports archives on 80 and 443",
        rules: &[PresetRule {
            hosts: &[
                "archive.ubuntu.com",
                "*.archive.ubuntu.com",
                "security.ubuntu.com",
                "ports.ubuntu.com",
            ],
            ports: &[HTTP, HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::Pypi,
        name: "pypi",
        description: "PyPI: pypi.org and files.pythonhosted.org on 443",
        rules: &[PresetRule {
            hosts: &["pypi.org", "files.pythonhosted.org"],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::Github,
        name: "github",
        description: "GitHub over HTTPS: github.com, *.github.com, *.githubusercontent.com on 443 \
                      (git over SSH carries no name; allow it with cidrs)",
        rules: &[PresetRule {
            hosts: &["github.com", "*.github.com", "*.githubusercontent.com"],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::Npm,
        name: "npm",
        description: "npm: registry.npmjs.org and registry.yarnpkg.com on 443",
        rules: &[PresetRule {
            hosts: &["registry.npmjs.org", "registry.yarnpkg.com"],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::CratesIo,
        name: "crates-io",
        description: "crates.io (API, sparse index, downloads) and static.rust-lang.org on 443",
        rules: &[PresetRule {
            hosts: &[
                "crates.io",
                "index.crates.io",
                "static.crates.io",
                "static.rust-lang.org",
            ],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::GoProxy,
        name: "go-proxy",
        description: "Go modules: proxy.golang.org and sum.golang.org on 443",
        rules: &[PresetRule {
            hosts: &["proxy.golang.org", "sum.golang.org"],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::DockerHub,
        name: "docker-hub",
        description: "Docker Hub pulls: registry, auth and blob CDN on 443",
        rules: &[PresetRule {
            hosts: &[
                "registry-1.docker.io",
                "auth.docker.io",
                "index.docker.io",
                // The blob CDN the registry redirects layer downloads to: Docker's allowlist
                // (docs.docker.com/desktop/setup/allow-list) has listed both.
                "production.cloudflare.docker.com",
                "production.cloudfront.docker.com",
            ],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::MavenCentral,
        name: "maven-central",
        description: "Maven Central: repo.maven.apache.org and repo1.maven.org on 443",
        rules: &[PresetRule {
            hosts: &["repo.maven.apache.org", "repo1.maven.org"],
            ports: &[HTTPS],
        }],
    },
    PresetInfo {
        preset: Preset::Alpine,
        name: "alpine",
        description: "Alpine apk: dl-cdn.alpinelinux.org on 80 and 443",
        rules: &[PresetRule {
            hosts: &["dl-cdn.alpinelinux.org"],
            ports: &[HTTP, HTTPS],
        }],
    },
];

/// Every built-in preset, in a stable order.
pub fn all() -> &'static [PresetInfo] {
    ALL
}

impl Preset {
    /// The preset's description and rules.
    pub fn info(self) -> &'static PresetInfo {
        // `ALL` holds one entry per variant, in declaration order (checked by a test).
        ALL.get(self as usize).unwrap_or(&EMPTY)
    }

    /// The preset's name in configuration (`debian-apt`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The name of the preset's `n`th rule (from 0): `preset-<name>`, or `preset-<name>-<n+1>`
    /// when the preset has several rules.
    pub fn rule_name(self, n: usize) -> String {
        rule_name(self.name(), n, self.info().rules.len())
    }
}

/// A built-in deny preset, as written in `deny_presets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(remote = "Self", rename_all = "kebab-case")]
pub enum DenyPreset {
    /// Cloud instance metadata and credential endpoints (AWS, ECS, EKS, GCP, Azure, Alibaba,
    /// Oracle), by address and by name, on every port.
    CloudMetadata,
}

string_only!(DenyPreset, "a deny preset name string");

/// One deny rule of a deny preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyPresetRule {
    /// Host patterns, already normalised (lowercase, no trailing dot).
    pub hosts: &'static [&'static str],
    /// Addresses and networks (`169.254.169.254/32`), in canonical form.
    pub cidrs: &'static [&'static str],
    /// Ports; empty means every port.
    pub ports: &'static [PortRange],
}

/// A deny preset as listed by the CLI's `presets` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyPresetInfo {
    /// The preset.
    pub preset: DenyPreset,
    /// Its name in configuration (`cloud-metadata`).
    pub name: &'static str,
    /// One line saying what it denies.
    pub description: &'static str,
    /// Its deny rules.
    pub rules: &'static [DenyPresetRule],
}

const DENY_ALL: &[DenyPresetInfo] = &[DenyPresetInfo {
    preset: DenyPreset::CloudMetadata,
    name: "cloud-metadata",
    description: "cloud instance metadata and credential endpoints (AWS, ECS, EKS Pod Identity, \
                  GCP, Azure, Alibaba, Oracle) by address and by name, on every port",
    rules: &[DenyPresetRule {
        hosts: &["metadata.google.internal", "metadata.goog"],
        cidrs: &[
            // AWS EC2 IMDS; also GCP, Azure IMDS and Oracle Cloud's (v1 and v2) metadata.
            "169.254.169.254/32",
            // AWS EC2 IMDS over IPv6 (Nitro instances).
            "fd00:ec2::254/128",
            // Amazon ECS task metadata and task-role credentials.
            "169.254.170.2/32",
            // Amazon EKS Pod Identity Agent credentials, IPv4 and IPv6.
            "169.254.170.23/32",
            "fd00:ec2::23/128",
            // GCP metadata server over IPv6.
            "fd20:ce::254/128",
            // Alibaba Cloud ECS metadata.
            "100.100.100.200/32",
            // Oracle Cloud's other metadata address.
            "192.0.0.192/32",
        ],
        ports: &[],
    }],
}];

/// Every built-in deny preset, in a stable order.
pub fn deny_all() -> &'static [DenyPresetInfo] {
    DENY_ALL
}

impl DenyPreset {
    /// The preset's description and rules.
    pub fn info(self) -> &'static DenyPresetInfo {
        // `DENY_ALL` holds one entry per variant, in declaration order (checked by a test).
        DENY_ALL.get(self as usize).unwrap_or(&DENY_EMPTY)
    }

    /// The preset's name in configuration (`cloud-metadata`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The name of the preset's `n`th rule (from 0), as for [`Preset::rule_name`].
    pub fn rule_name(self, n: usize) -> String {
        rule_name(self.name(), n, self.info().rules.len())
    }
}

impl fmt::Display for DenyPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Fallback for [`DenyPreset::info`]; unreachable while `DENY_ALL` lists every variant.
const DENY_EMPTY: DenyPresetInfo = DenyPresetInfo {
    preset: DenyPreset::CloudMetadata,
    name: "",
    description: "",
    rules: &[],
};

/// `preset-<name>`, or `preset-<name>-<n+1>` for a preset with several rules.
fn rule_name(name: &str, n: usize, rules: usize) -> String {
    if rules > 1 {
        format!("preset-{}-{}", name, n + 1)
    } else {
        format!("preset-{name}")
    }
}

/// Fallback for [`Preset::info`]; unreachable while `ALL` lists every variant.
const EMPTY: PresetInfo = PresetInfo {
    preset: Preset::Pypi,
    name: "",
    description: "",
    rules: &[],
};

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::policy::hosts::HostPattern;

    #[test]
    fn every_preset_is_listed_once_and_valid() {
        let mut seen = std::collections::BTreeSet::new();
        for info in all() {
            assert!(seen.insert(info.preset), "{} listed twice", info.name);
            assert_eq!(info.preset.info(), info);
            // The serde name is the listed name.
            let parsed: Preset = serde_json::from_str(&format!("{:?}", info.name)).unwrap();
            assert_eq!(parsed, info.preset);
            assert!(!info.rules.is_empty(), "{}", info.name);
            assert!(!info.description.is_empty(), "{}", info.name);
            for rule in info.rules {
                assert!(!rule.hosts.is_empty() && !rule.ports.is_empty());
                for host in rule.hosts {
                    // Stored normalised, so the reference and compiled paths read them alike.
                    assert_eq!(HostPattern::parse(host).unwrap().as_str(), *host);
                }
                for port in rule.ports {
                    port.check().unwrap();
                }
            }
        }
        assert_eq!(seen.len(), 10);
        assert_eq!(
            all().iter().map(|i| i.name).collect::<Vec<_>>(),
            [
                "debian-apt",
                "ubuntu-apt",
                "pypi",
                "github",
                "npm",
                "crates-io",
                "go-proxy",
                "docker-hub",
                "maven-central",
                "alpine"
            ]
        );
    }

    #[test]
    fn every_deny_preset_is_listed_once_and_valid() {
        let allow: std::collections::BTreeSet<&str> = all().iter().map(|i| i.name).collect();
        let mut seen = std::collections::BTreeSet::new();
        for info in deny_all() {
            assert!(seen.insert(info.preset), "{} listed twice", info.name);
            assert_eq!(info.preset.info(), info);
            assert!(
                !allow.contains(info.name),
                "{}: also an allow preset",
                info.name
            );
            let parsed: DenyPreset = serde_json::from_str(&format!("{:?}", info.name)).unwrap();
            assert_eq!(parsed, info.preset);
            assert!(!info.rules.is_empty() && !info.description.is_empty());
            for rule in info.rules {
                assert!(!rule.hosts.is_empty() || !rule.cidrs.is_empty());
                for host in rule.hosts {
                    assert_eq!(HostPattern::parse(host).unwrap().as_str(), *host);
                }
                for cidr in rule.cidrs {
                    // Canonical: a network without host bits, written as it displays.
                    let net = crate::policy::parse_cidr(cidr).unwrap();
                    assert_eq!(net.to_string(), *cidr);
                }
                for port in rule.ports {
                    port.check().unwrap();
                }
            }
        }
        assert_eq!(
            deny_all().iter().map(|i| i.name).collect::<Vec<_>>(),
            ["cloud-metadata"]
        );
        assert_eq!(
            DenyPreset::CloudMetadata.rule_name(0),
            "preset-cloud-metadata"
        );
    }

    #[test]
    fn rule_names() {
        assert_eq!(Preset::Pypi.rule_name(0), "preset-pypi");
        assert_eq!(Preset::CratesIo.to_string(), "crates-io");
    }
}
