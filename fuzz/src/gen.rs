//! A structured configuration generator: arbitrary bytes become a configuration document over
//! small alphabets (so that patterns, names, CIDRs and ports of rules and of facts meet often),
//! together with the [`Config`] it must parse to.
//!
//! With faults enabled, each value may be replaced by an invalid one, or a rule, list or key
//! broken, and every such fault is recorded with the error path and kind the parser must report
//! when it is the only one. A document without faults must be accepted.

use std::net::IpAddr;

use arbitrary::{Result, Unstructured};
use egress_guard::policy::{
    presets, Config, ConfigErrorKind, HostPattern, LogLevel, Mode, PortRange, Preset, Rule,
    SniffConfig,
};
use ipnet::IpNet;

use crate::json::Json;

/// Labels names and patterns are made of.
pub const LABELS: &[&str] = &[
    "a", "b", "c", "ab", "x-y", "_s", "0", "github", "com", "example",
];
/// Ports rules and facts mostly use.
pub const PORTS: &[u16] = &[1, 22, 80, 443, 8080, 65535];
/// IPv4 addresses CIDRs and facts are built around.
pub const V4: &[[u8; 4]] = &[
    [10, 0, 0, 0],
    [10, 0, 0, 4],
    [10, 1, 2, 3],
    [192, 0, 2, 1],
    [169, 254, 169, 254],
    [0, 0, 0, 0],
    [127, 0, 0, 1],
    [255, 255, 255, 255],
];
/// IPv6 addresses CIDRs and facts are built around.
pub const V6: &[[u16; 8]] = &[
    [0xfd00, 0, 0, 0, 0, 0, 0, 0],
    [0xfd00, 0, 0, 0, 0, 0, 0, 4],
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
    [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 1],
    [0x64, 0xff9b, 0, 0, 0, 0, 0xa00, 1],
    [0xffff, 0, 0, 0, 0, 0, 0, 0],
];
/// Character classes for globs (globset's rules: leading `]` or `-` and trailing `-` literal).
const CLASSES: &[&str] = &[
    "[ab]", "[!a]", "[^b]", "[a-c]", "[0-9]", "[-a]", "[a-]", "[]a]", "[!]a]", "[.]", "[!.]",
    "[_x-y]", "[a-a]", "[a-cx-z]", "[!-]",
];

/// True with probability `num / den`; false once the input is used up (where
/// `Unstructured::ratio` would say true, turning every rare choice on in short inputs).
pub fn chance(u: &mut Unstructured<'_>, num: u8, den: u8) -> Result<bool> {
    Ok(u.int_in_range(0..=den.saturating_sub(1))? >= den.saturating_sub(num))
}

/// A name over [`LABELS`], one to four labels.
pub fn name(u: &mut Unstructured<'_>) -> Result<String> {
    let n = u.int_in_range(1..=4)?;
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        labels.push(*u.choose(LABELS)?);
    }
    Ok(labels.join("."))
}

/// A host pattern as a user might write it: exact, `*.suffix`, `*`, or a glob; sometimes in
/// upper case or with a trailing dot. Not necessarily valid (globs especially).
pub fn pattern(u: &mut Unstructured<'_>) -> Result<String> {
    let mut p = match u.int_in_range(0u8..=9)? {
        0..=2 => name(u)?,
        3 | 4 => format!("*.{}", name(u)?),
        5 => "*".to_string(),
        _ => glob(u, 2)?,
    };
    if chance(u, 1, 8)? {
        p = p.to_ascii_uppercase();
    }
    if chance(u, 1, 8)? {
        p.push('.');
    }
    Ok(p)
}

fn glob(u: &mut Unstructured<'_>, depth: u8) -> Result<String> {
    let n = u.int_in_range(1..=5)?;
    let mut out = String::new();
    for _ in 0..n {
        match u.int_in_range(0u8..=8)? {
            0 => out.push('*'),
            1 => out.push('?'),
            2 => out.push('.'),
            3 => out.push_str(u.choose(CLASSES)?),
            4 if depth > 0 => {
                out.push('{');
                for i in 0..u.int_in_range(1..=3)? {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&glob(u, depth - 1)?);
                }
                out.push('}');
            }
            _ => out.push_str(u.choose(LABELS)?),
        }
    }
    Ok(out)
}

/// An address near the ones rules use: a base, its IPv4-mapped form, a neighbour, or any.
pub fn ip(u: &mut Unstructured<'_>) -> Result<IpAddr> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 | 1 => IpAddr::from(*u.choose(V4)?),
        2 => IpAddr::from(*u.choose(V6)?),
        3 => IpAddr::from(std::net::Ipv4Addr::from(*u.choose(V4)?).to_ipv6_mapped()),
        4 => {
            let base = u32::from_be_bytes(*u.choose(V4)?);
            let delta: i8 = u.arbitrary()?;
            IpAddr::from(base.wrapping_add_signed(i32::from(delta)).to_be_bytes())
        }
        _ => {
            if u.arbitrary()? {
                IpAddr::from(u.arbitrary::<[u8; 4]>()?)
            } else {
                IpAddr::from(u.arbitrary::<[u8; 16]>()?)
            }
        }
    })
}

/// A port near the ones rules use, or any.
pub fn port(u: &mut Unstructured<'_>) -> Result<u16> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 | 1 => *u.choose(PORTS)?,
        2 => u.choose(PORTS)?.wrapping_add(1),
        _ => u.arbitrary()?,
    })
}

/// A fault injected into a document: the error the parser must report if it is the only one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The expected error path.
    pub path: String,
    /// The expected error kind.
    pub kind: ConfigErrorKind,
    /// What was broken, for the failure message.
    pub what: String,
}

/// A generated configuration document.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The document.
    pub doc: Json,
    /// What it must parse to (rule names filled in), when `faults` is empty.
    pub expected: Config,
    /// The faults injected (at most two).
    pub faults: Vec<Fault>,
    /// Names the document's host patterns were built from, for facts that hit them.
    pub names: Vec<String>,
}

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    faulty: bool,
    faults: Vec<Fault>,
    names: Vec<String>,
    next_name: usize,
}

/// Generates a configuration; with `faulty`, possibly with faults.
pub fn config(u: &mut Unstructured<'_>, faulty: bool) -> Result<Generated> {
    let mut g = Gen {
        u,
        faulty,
        faults: Vec::new(),
        names: Vec::new(),
        next_name: 0,
    };
    g.config()
}

impl Gen<'_, '_> {
    /// Whether to break the next value (rarely, and at most twice per document).
    fn fault(&mut self) -> Result<bool> {
        if !self.faulty || self.faults.len() >= 2 {
            return Ok(false);
        }
        chance(self.u, 1, 24)
    }

    fn record(&mut self, path: impl Into<String>, kind: ConfigErrorKind, what: impl Into<String>) {
        self.faults.push(Fault {
            path: path.into(),
            kind,
            what: what.into(),
        });
    }

    fn invalid(&mut self, path: impl Into<String>, value: &Json) {
        self.record(path, ConfigErrorKind::Invalid, value.text());
    }

    fn config(&mut self) -> Result<Generated> {
        let mut expected = Config::default();
        let mut entries: Vec<(String, Json)> = Vec::new();

        if chance(self.u, 2, 3)? {
            let modes = [Mode::Allowlist, Mode::Audit, Mode::Passthrough];
            let mode = *self.u.choose(&modes)?;
            expected.mode = mode;
            let value = if self.fault()? {
                let bad = self
                    .u
                    .choose(&[
                        Json::str("block"),
                        Json::str("Allowlist"),
                        Json::str(""),
                        Json::Int(1),
                        Json::Null,
                    ])?
                    .clone();
                self.invalid("mode", &bad);
                bad
            } else {
                Json::str(mode.as_str())
            };
            entries.push(("mode".into(), value));
        }

        // Presets first: rule names may refer to them.
        let mut preset_list: Vec<Preset> = Vec::new();
        let mut preset_json: Vec<Json> = Vec::new();
        let all: Vec<Preset> = presets::all().iter().map(|p| p.preset).collect();
        for _ in 0..self.u.int_in_range(0..=3)? {
            let preset = *self.u.choose(&all)?;
            let at = format!("presets[{}]", preset_json.len());
            if self.fault()? {
                if !preset_list.is_empty() && self.u.arbitrary()? {
                    // Listed twice: a validation error at the second listing.
                    let again = *self.u.choose(&preset_list)?;
                    self.record(
                        at,
                        ConfigErrorKind::Duplicate,
                        format!("{again} listed twice"),
                    );
                    preset_json.push(Json::str(again.name()));
                } else {
                    let bad = self
                        .u
                        .choose(&[
                            Json::str("rubygems"),
                            Json::str("PyPI"),
                            Json::str(""),
                            Json::Int(1),
                        ])?
                        .clone();
                    self.invalid(at, &bad);
                    preset_json.push(bad);
                }
                continue;
            }
            if preset_list.contains(&preset) {
                continue;
            }
            preset_list.push(preset);
            preset_json.push(Json::str(preset.name()));
        }
        expected.presets = preset_list.clone();

        // Rules, deny first so that a short input still has some. Names are validated allow
        // rules first, so a rule's name clashes with the rules before it in its own list only
        // (explicit names are otherwise unique).
        let counts = [
            ("deny", self.u.int_in_range(0..=3)?),
            ("allow", self.u.int_in_range(0..=6)?),
        ];
        let mut taken: Vec<String> = Vec::new();
        let mut lists: Vec<(String, Json)> = Vec::new();
        for (list, count) in counts {
            let mut earlier: Vec<String> = Vec::new();
            let mut rules = Vec::new();
            let mut json = Vec::new();
            for i in 0..count {
                let (value, rule) = self.rule(list, i, &earlier, &taken, &preset_list)?;
                earlier.push(rule.name.clone());
                taken.push(rule.name.clone());
                rules.push(rule);
                json.push(value);
            }
            if list == "allow" {
                expected.allow = rules;
            } else {
                expected.deny = rules;
            }
            if count > 0 || chance(self.u, 1, 4)? {
                lists.push((list.to_string(), Json::Arr(json)));
            }
        }
        entries.extend(lists);
        if !preset_json.is_empty() || chance(self.u, 1, 8)? {
            entries.push(("presets".into(), Json::Arr(preset_json)));
        }

        if chance(self.u, 1, 3)? {
            let value = self.sniff(&mut expected.sniff)?;
            entries.push(("sniff".into(), value));
        }

        if chance(self.u, 1, 2)? {
            let levels = [LogLevel::None, LogLevel::Denied, LogLevel::All];
            expected.log = *self.u.choose(&levels)?;
            let value = if self.fault()? {
                let bad = self
                    .u
                    .choose(&[Json::str("everything"), Json::str("NONE"), Json::Bool(true)])?
                    .clone();
                self.invalid("log", &bad);
                bad
            } else {
                Json::str(expected.log.as_str())
            };
            entries.push(("log".into(), value));
        }

        if self.fault()? {
            let at = self.u.int_in_range(0..=entries.len())?;
            entries.insert(at, ("modez".into(), Json::str("audit")));
            self.record("modez", ConfigErrorKind::Invalid, "unknown key modez");
        }
        self.shuffle(&mut entries)?;

        Ok(Generated {
            doc: Json::Obj(entries),
            expected,
            faults: std::mem::take(&mut self.faults),
            names: std::mem::take(&mut self.names),
        })
    }

    /// Shuffles top-level keys: their order must not matter.
    fn shuffle(&mut self, entries: &mut [(String, Json)]) -> Result<()> {
        for i in (1..entries.len()).rev() {
            let j = self.u.int_in_range(0..=i)?;
            entries.swap(i, j);
        }
        Ok(())
    }

    fn rule(
        &mut self,
        list: &str,
        i: usize,
        earlier: &[String],
        taken: &[String],
        preset_list: &[Preset],
    ) -> Result<(Json, Rule)> {
        let at = format!("{list}[{i}]");
        let mut rule = Rule {
            name: format!("{list}-{i}"),
            ..Rule::default()
        };
        if self.fault()? && chance(self.u, 1, 3)? {
            let bad = Json::Arr(vec![
                Json::str("r"),
                Json::Arr(vec![Json::str("a.example")]),
            ]);
            self.invalid(&at, &bad);
            return Ok((bad, rule));
        }
        let mut entries: Vec<(String, Json)> = Vec::new();

        // Name: default, unique, or a preset's rule name when that preset is not listed.
        if self.fault()? {
            let path = format!("{at}.name");
            if !earlier.is_empty() && self.u.arbitrary()? {
                let again = self.u.choose(earlier)?.clone();
                self.record(
                    &path,
                    ConfigErrorKind::Duplicate,
                    format!("name {again} again"),
                );
                entries.push(("name".into(), Json::str(again)));
            } else if !preset_list.is_empty() && self.u.arbitrary()? {
                // Clashes with a listed preset's rule: reported at that preset.
                let index = self.u.choose_index(preset_list.len())?;
                let preset = preset_list[index];
                self.record(
                    format!("presets[{index}]"),
                    ConfigErrorKind::Duplicate,
                    format!("rule named {}", preset.rule_name(0)),
                );
                entries.push(("name".into(), Json::str(preset.rule_name(0))));
            } else {
                let bad = self
                    .u
                    .choose(&[
                        Json::str("GitHub"),
                        Json::str(""),
                        Json::str("a b"),
                        Json::str("a".repeat(65)),
                        Json::str("bücher"),
                        Json::Int(5),
                    ])?
                    .clone();
                self.invalid(path, &bad);
                entries.push(("name".into(), bad));
            }
        } else if chance(self.u, 1, 2)? {
            let unlisted: Vec<Preset> = presets::all()
                .iter()
                .map(|p| p.preset)
                .filter(|p| !preset_list.contains(p) && !taken.contains(&p.rule_name(0)))
                .collect();
            rule.name = if !unlisted.is_empty() && chance(self.u, 1, 6)? {
                self.u.choose(&unlisted)?.rule_name(0)
            } else {
                self.next_name += 1;
                format!("r{}", self.next_name)
            };
            entries.push(("name".into(), Json::str(rule.name.clone())));
        }

        let empty_rule = self.fault()?;
        let (n_hosts, n_cidrs, n_ports) = if empty_rule {
            self.record(&at, ConfigErrorKind::EmptyRule, "empty rule");
            (0, 0, 0)
        } else {
            (
                self.u.int_in_range(0..=3)?,
                self.u.int_in_range(0..=2)?,
                self.u.int_in_range(0..=2)?,
            )
        };

        let mut hosts = Vec::new();
        for _ in 0..n_hosts {
            let path = format!("{at}.hosts[{}]", hosts.len());
            if self.fault()? {
                let bad = self.bad_host()?;
                self.invalid(path, &bad);
                hosts.push(bad);
                continue;
            }
            let raw = pattern(self.u)?;
            // Keep only what the pattern parser accepts; globs over the alphabet may not parse.
            if let Ok(parsed) = HostPattern::parse(&raw) {
                self.remember(&raw)?;
                rule.hosts.push(parsed);
                hosts.push(Json::str(raw));
            }
        }
        let mut cidrs = Vec::new();
        for _ in 0..n_cidrs {
            let path = format!("{at}.cidrs[{}]", cidrs.len());
            if self.fault()? {
                let bad = self.bad_cidr()?;
                self.invalid(path, &bad);
                cidrs.push(bad);
                continue;
            }
            let (text, net) = self.cidr()?;
            rule.cidrs.push(net);
            cidrs.push(Json::str(text));
        }
        let mut ports = Vec::new();
        for _ in 0..n_ports {
            let path = format!("{at}.ports[{}]", ports.len());
            if self.fault()? {
                let bad = self.bad_port()?;
                self.invalid(path, &bad);
                ports.push(bad);
                continue;
            }
            let (value, range) = self.port_range()?;
            rule.ports.push(range);
            ports.push(value);
        }
        if !empty_rule && hosts.is_empty() && cidrs.is_empty() && ports.is_empty() {
            // Never empty by accident.
            rule.ports.push(PortRange { lo: 443, hi: 443 });
            ports.push(Json::Int(443));
        }

        for (key, items) in [("hosts", hosts), ("cidrs", cidrs), ("ports", ports)] {
            if items.is_empty() {
                continue;
            }
            let path = format!("{at}.{key}");
            if self.fault()? {
                if self.u.arbitrary()? {
                    self.invalid(path, &Json::Arr(vec![]));
                    entries.push((key.into(), Json::Arr(vec![])));
                } else {
                    let bad = items.into_iter().next().unwrap_or(Json::Null);
                    self.invalid(path, &bad);
                    entries.push((key.into(), bad));
                }
                continue;
            }
            entries.push((key.into(), Json::Arr(items)));
        }
        // A staged deny rule now and then (evaluated apart from the enforced rules).
        if list == "deny" && chance(self.u, 1, 4)? {
            rule.enforce = false;
            entries.push(("enforce".into(), Json::Bool(false)));
        }
        if self.fault()? {
            let at_key = self.u.int_in_range(0..=entries.len())?;
            entries.insert(
                at_key,
                ("hostz".into(), Json::Arr(vec![Json::str("a.example")])),
            );
            self.record(
                format!("{at}.hostz"),
                ConfigErrorKind::Invalid,
                "unknown key hostz",
            );
        }
        Ok((Json::Obj(entries), rule))
    }

    /// Remembers names that a pattern was built to match, so facts can hit it.
    fn remember(&mut self, raw: &str) -> Result<()> {
        let lower = raw.to_ascii_lowercase();
        let text = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(suffix) = text.strip_prefix("*.") {
            self.names.push(format!("{}.{suffix}", name(self.u)?));
            self.names.push(suffix.to_string());
        } else {
            self.names.push(text.to_string());
        }
        Ok(())
    }

    fn cidr(&mut self) -> Result<(String, IpNet)> {
        let (addr, max, lens): (IpAddr, u8, &[u8]) = if self.u.arbitrary()? {
            (
                IpAddr::from(*self.u.choose(V4)?),
                32,
                &[0, 8, 16, 24, 30, 31, 32],
            )
        } else {
            (
                IpAddr::from(*self.u.choose(V6)?),
                128,
                &[0, 8, 64, 96, 126, 127, 128],
            )
        };
        let len = match self.u.int_in_range(0u8..=2)? {
            0 => max,
            1 => *self.u.choose(lens)?,
            _ => self.u.int_in_range(0..=max)?,
        };
        let net = match IpNet::new(addr, len) {
            Ok(net) => net.trunc(),
            Err(_) => IpNet::from(addr),
        };
        let text = if net.prefix_len() == max && self.u.arbitrary()? {
            net.addr().to_string()
        } else {
            net.to_string()
        };
        Ok((text, net))
    }

    fn port_range(&mut self) -> Result<(Json, PortRange)> {
        let pick = |u: &mut Unstructured<'_>| -> Result<u16> {
            if chance(u, 3, 4)? {
                Ok(*u.choose(PORTS)?)
            } else {
                u.int_in_range(1..=65535)
            }
        };
        let a = pick(self.u)?;
        Ok(match self.u.int_in_range(0u8..=2)? {
            0 => (Json::Int(i128::from(a)), PortRange { lo: a, hi: a }),
            1 => (Json::str(a.to_string()), PortRange { lo: a, hi: a }),
            _ => {
                let b = pick(self.u)?;
                let (lo, hi) = (a.min(b), a.max(b));
                (Json::str(format!("{lo}-{hi}")), PortRange { lo, hi })
            }
        })
    }

    fn sniff(&mut self, sniff: &mut SniffConfig) -> Result<Json> {
        if self.fault()? && chance(self.u, 1, 4)? {
            let bad = Json::Arr(vec![Json::Int(1024)]);
            self.invalid("sniff", &bad);
            return Ok(bad);
        }
        let mut entries = Vec::new();
        if self.u.arbitrary()? {
            let value = if self.fault()? {
                let bad = self
                    .u
                    .choose(&[
                        Json::Int(0),
                        Json::Int(511),
                        Json::Int(65537),
                        Json::Int(-1),
                        Json::Int(1 << 40),
                        Json::Float(1024.5),
                        Json::str("1024"),
                    ])?
                    .clone();
                self.invalid("sniff.max_bytes", &bad);
                bad
            } else {
                sniff.max_bytes = if self.u.arbitrary()? {
                    *self.u.choose(&[512, 1024, 16384, 65536])?
                } else {
                    self.u.int_in_range(SniffConfig::MAX_BYTES)?
                };
                Json::Int(i128::from(sniff.max_bytes))
            };
            entries.push(("max_bytes".into(), value));
        }
        if self.u.arbitrary()? {
            let value = if self.fault()? {
                let bad = self
                    .u
                    .choose(&[Json::Int(0), Json::Int(60_001), Json::Int(-5), Json::Null])?
                    .clone();
                self.invalid("sniff.timeout_ms", &bad);
                bad
            } else {
                sniff.timeout_ms = self.u.int_in_range(SniffConfig::TIMEOUT_MS)?;
                Json::Int(i128::from(sniff.timeout_ms))
            };
            entries.push(("timeout_ms".into(), value));
        }
        if self.u.arbitrary()? {
            let value = if self.fault()? {
                let bad = Json::str("yes");
                self.invalid("sniff.hold_upstream", &bad);
                bad
            } else {
                sniff.hold_upstream = self.u.arbitrary()?;
                Json::Bool(sniff.hold_upstream)
            };
            entries.push(("hold_upstream".into(), value));
        }
        if self.fault()? {
            entries.push(("max_byte".into(), Json::Int(1024)));
            self.record(
                "sniff.max_byte",
                ConfigErrorKind::Invalid,
                "unknown key max_byte",
            );
        }
        Ok(Json::Obj(entries))
    }

    fn bad_host(&mut self) -> Result<Json> {
        let long_name = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        let long_label = format!("{}.com", "a".repeat(64));
        Ok(self
            .u
            .choose(&[
                Json::str("10.0.0.1"),
                Json::str("::1"),
                Json::str("[::1]"),
                Json::str("a..b"),
                Json::str("*..b"),
                Json::str(""),
                Json::str("."),
                Json::str("bücher.de"),
                Json::str("a b"),
                Json::str("api-[a"),
                Json::str("{a,b"),
                Json::str("{,a}"),
                Json::str("a}"),
                Json::str("[z-a].x"),
                Json::str("https://x"),
                Json::str("x:443"),
                Json::str("a,b"),
                Json::str("!a"),
                Json::str("a/b"),
                Json::str("a\\b"),
                Json::str(long_name),
                Json::str(long_label),
                Json::Int(5),
            ])?
            .clone())
    }

    fn bad_cidr(&mut self) -> Result<Json> {
        Ok(self
            .u
            .choose(&[
                Json::str("10.0.0.300/8"),
                Json::str("10.0.0.1/8"),
                Json::str("::ffff:1.2.3.4"),
                Json::str("::ffff:0:0/96"),
                Json::str("10.0.0.0/33"),
                Json::str("fd00::/129"),
                Json::str("fd00::1/64"),
                Json::str("abc"),
                Json::str(""),
                Json::str("10.0.0.0/"),
                Json::str(" 10.0.0.0/8"),
                Json::str("a.example"),
                Json::Int(10),
            ])?
            .clone())
    }

    fn bad_port(&mut self) -> Result<Json> {
        Ok(self
            .u
            .choose(&[
                Json::Int(0),
                Json::Int(65536),
                Json::Int(-1),
                Json::Int(1 << 70),
                Json::str("9-3"),
                Json::str("abc"),
                Json::str("0-5"),
                Json::str("5-70000"),
                Json::str(""),
                Json::str("0"),
                Json::str("65536"),
                Json::str("1-"),
                Json::str("-1"),
                Json::str(" 80"),
                Json::str("+80"),
                Json::str("80 "),
                Json::Float(1.5),
                Json::Bool(true),
                Json::Null,
            ])?
            .clone())
    }
}
