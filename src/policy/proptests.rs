//! Property tests: the compiled policy against the reference on random small configurations, and
//! the `decide_early` contract.

use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

/// Names over a tiny alphabet, so that random patterns and random names meet often.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop_oneof!["a", "b", "c", "ab"], 1..4).prop_map(|l| l.join(".")),
        prop_oneof![
            Just("pypi.org".to_string()),
            Just("github.com".to_string()),
            Just("api.github.com".to_string()),
            Just("deb.debian.org".to_string()),
            Just("metadata.goog".to_string()),
        ],
    ]
}

fn pattern() -> impl Strategy<Value = HostPattern> {
    prop_oneof![
        4 => name(),
        3 => name().prop_map(|n| format!("*.{n}")),
        1 => Just("*".to_string()),
        2 => prop_oneof![
            Just("a*"),
            Just("*b"),
            Just("?.b"),
            Just("[ab].c"),
            Just("{a,c}.b"),
            Just("a.*.c"),
            Just("*.b*"),
            Just("*.*"),
            Just("[!a]*"),
            Just("{a,b*}.c"),
            Just("a?"),
            Just("*[bc]"),
            Just("{a,{b,c}}.ab"),
            Just("[a-c].b"),
            Just("*.{a,b}"),
            Just("ab.*"),
            Just("a*.b"),
            Just("*a.b.c"),
            Just("?.a.b"),
            Just("{pypi,api.github}.*"),
        ]
        .prop_map(str::to_string),
    ]
    .prop_map(|p| HostPattern::parse(&p).unwrap())
}

fn v4(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

fn v6(last: u16) -> IpAddr {
    IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, last])
}

fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (
            0u8..5,
            prop_oneof![Just(0u8), Just(8), Just(30), Just(31), Just(32)]
        )
            .prop_map(|(a, len)| IpNet::new(v4(a), len).unwrap().trunc()),
        (
            0u16..5,
            prop_oneof![Just(0u8), Just(8), Just(126), Just(127), Just(128)]
        )
            .prop_map(|(a, len)| IpNet::new(v6(a), len).unwrap().trunc()),
    ]
}

const PORTS: [u16; 6] = [1, 22, 80, 443, 8080, 65535];

fn port_range() -> impl Strategy<Value = PortRange> {
    (
        prop::sample::select(&PORTS[..]),
        prop_oneof![Just(0u16), Just(1), Just(400)],
    )
        .prop_map(|(lo, len)| PortRange::new(lo, lo.saturating_add(len)).unwrap())
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec(cidr(), 0..3),
        prop::collection::vec(port_range(), 0..3),
    )
        .prop_map(|(hosts, cidrs, mut ports)| {
            if hosts.is_empty() && cidrs.is_empty() && ports.is_empty() {
                ports.push(PortRange::single(443).unwrap());
            }
            Rule {
                name: String::new(),
                hosts,
                cidrs,
                ports,
                pin: None,
                enforce: true,
            }
        })
}

/// An allow rule: a rule with its own `pin`, or none.
fn allow_rule() -> impl Strategy<Value = Rule> {
    (rule(), prop::option::of(any::<bool>())).prop_map(|(rule, pin)| Rule { pin, ..rule })
}

/// A deny rule, staged (`"enforce": false`) one time in three.
fn deny_rule() -> impl Strategy<Value = Rule> {
    (rule(), 0u8..3).prop_map(|(rule, n)| Rule {
        enforce: n != 0,
        ..rule
    })
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            Just(Mode::Allowlist),
            Just(Mode::Audit),
            Just(Mode::Passthrough)
        ],
        prop::collection::vec(allow_rule(), 0..6),
        prop::collection::vec(deny_rule(), 0..4),
        prop::sample::subsequence(vec![Preset::Github, Preset::Pypi, Preset::DebianApt], 0..=3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mode, allow, deny, mut presets, reverse, pin, metadata)| {
            if reverse {
                presets.reverse();
            }
            Config {
                mode,
                allow,
                deny,
                presets,
                pin,
                deny_presets: if metadata {
                    vec![DenyPreset::CloudMetadata]
                } else {
                    Vec::new()
                },
                ..Config::default()
            }
        })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..6).prop_map(v4),
        (0u16..6).prop_map(v6),
        (0u8..6).prop_map(|a| IpAddr::from(match v4(a) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        })),
        Just(IpAddr::from([192, 0, 2, 1])),
        // The cloud-metadata deny preset's addresses.
        Just(IpAddr::from([169, 254, 169, 254])),
        Just(IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254])),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(&PORTS[..]),
        prop::sample::select(&PORTS[..]).prop_map(|p| p.wrapping_add(1)),
        prop::sample::select(&PORTS[..]).prop_map(|p| p.wrapping_sub(1)),
        prop::sample::select(&PORTS[..]).prop_map(|p| p.saturating_add(400)),
    ]
}

#[derive(Debug, Clone)]
enum NameIn {
    Absent,
    Name(String),
    Malformed,
    TooLarge,
}

impl NameIn {
    fn fact(&self) -> NameFact<'_> {
        match self {
            NameIn::Absent => NameFact::Absent,
            NameIn::Name(n) => NameFact::Name(n),
            NameIn::Malformed => NameFact::Malformed,
            NameIn::TooLarge => NameFact::TooLarge,
        }
    }
}

fn name_in() -> impl Strategy<Value = NameIn> {
    prop_oneof![
        1 => Just(NameIn::Absent),
        6 => name().prop_map(NameIn::Name),
        1 => Just(NameIn::Malformed),
        1 => Just(NameIn::TooLarge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn compiled_equals_reference(
        config in config(),
        facts in prop::collection::vec((ip(), port(), name_in()), 1..24),
    ) {
        let policy = Policy::compile(&config).unwrap();
        for (ip, port, name) in &facts {
            let facts = Facts { ip: *ip, port: *port, name: name.fact() };
            prop_assert_eq!(policy.decide(&facts), reference::decide(&config, &facts), "{:?}", facts);
        }
    }

    #[test]
    fn decide_early_holds_for_every_name(
        config in config(),
        dests in prop::collection::vec((ip(), port()), 1..12),
        names in prop::collection::vec(name(), 1..24),
    ) {
        let policy = Policy::compile(&config).unwrap();
        for &(ip, port) in &dests {
            let Some(early) = policy.decide_early(ip, port) else { continue };
            let absent = Facts { ip, port, name: NameFact::Absent };
            prop_assert_eq!(policy.decide(&absent), early);
            prop_assert_eq!(reference::decide(&config, &absent), early);
            for name in &names {
                let facts = Facts { ip, port, name: NameFact::Name(name) };
                prop_assert_eq!(policy.decide(&facts), early, "{:?}", facts);
                prop_assert_eq!(reference::decide(&config, &facts), early, "{:?}", facts);
            }
        }
    }

    #[test]
    fn json_round_trip_of_random_rules(config in config()) {
        // The same configuration written as JSON compiles to the same decisions' rule list.
        let rule_json = |r: &Rule| {
            let mut fields = Vec::new();
            if !r.hosts.is_empty() {
                let hosts: Vec<String> = r.hosts.iter().map(|h| format!("{:?}", h.as_str())).collect();
                fields.push(format!(r#""hosts": [{}]"#, hosts.join(",")));
            }
            if !r.cidrs.is_empty() {
                let cidrs: Vec<String> = r.cidrs.iter().map(|c| format!("\"{c}\"")).collect();
                fields.push(format!(r#""cidrs": [{}]"#, cidrs.join(",")));
            }
            if !r.ports.is_empty() {
                let ports: Vec<String> = r.ports.iter().map(|p| format!("\"{p}\"")).collect();
                fields.push(format!(r#""ports": [{}]"#, ports.join(",")));
            }
            if let Some(pin) = r.pin {
                fields.push(format!(r#""pin": {pin}"#));
            }
            if !r.enforce {
                fields.push(r#""enforce": false"#.to_string());
            }
            format!("{{{}}}", fields.join(","))
        };
        let list = |rules: &[Rule]| rules.iter().map(rule_json).collect::<Vec<_>>().join(",");
        let presets: Vec<String> = config.presets.iter().map(|p| format!("\"{p}\"")).collect();
        let deny_presets: Vec<String> = config.deny_presets.iter().map(|p| format!("\"{p}\"")).collect();
        let json = format!(
            r#"{{"mode": "{}", "allow": [{}], "deny": [{}], "presets": [{}], "deny_presets": [{}], "pin": {}}}"#,
            config.mode, list(&config.allow), list(&config.deny), presets.join(","), deny_presets.join(","), config.pin
        );
        let parsed = Config::from_json(json.as_bytes()).unwrap();
        let mut named = config.clone();
        for (list, rules) in [("allow", &mut named.allow), ("deny", &mut named.deny)] {
            for (i, r) in rules.iter_mut().enumerate() {
                r.name = format!("{list}-{i}");
            }
        }
        prop_assert_eq!(parsed, named);
    }
}
