//! `src/policy/schema.json` (what `egress-guard schema` prints) against the real parser.
//!
//! The schema is for editors and CI, and must never reject a configuration the filter accepts;
//! it catches the common mistakes (unknown keys, bad enums, empty rules, out-of-range numbers).
//! A few rules it cannot express are left to the parser and listed in [`known_gap`].
#![cfg(not(target_arch = "wasm32"))]
// A test crate: its helpers may fail loudly too (clippy.toml allows this inside #[test] only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::Cell;
use std::path::{Path, PathBuf};

use egress_guard::policy::{presets, Config, ConfigError, ConfigErrorKind, Policy, SniffConfig};
use jsonschema::Validator;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../src/policy/schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).unwrap()
}

fn validator() -> Validator {
    jsonschema::draft202012::new(&schema()).unwrap()
}

fn parse(bytes: &[u8]) -> Result<Policy, ConfigError> {
    Policy::from_json(bytes)
}

fn schema_errors(validator: &Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir` (under the repository root) whose name ends in `.ext`, sorted.
fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.{ext} in {dir}");
    paths
}

/// Every configuration the repository ships: example policies, and the `configuration` string of
/// every Wasm filter in `envoy/*.yaml`.
fn shipped_configs() -> Vec<(String, String)> {
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    let mut configs = Vec::new();
    let mut jsons = files("examples/policies", "json");
    jsons.push(root().join("examples/demo/policy.json"));
    for path in jsons {
        configs.push((path.display().to_string(), read(&path)));
    }
    for path in files("envoy", "yaml") {
        let strings = envoy_configuration_strings(&read(&path));
        assert!(
            !strings.is_empty(),
            "{}: no Wasm configuration",
            path.display()
        );
        for (i, text) in strings.into_iter().enumerate() {
            configs.push((format!("{}: configuration {i}", path.display()), text));
        }
    }
    configs
}

/// The `configuration: {"@type": ...StringValue, value: |}` block scalars of an Envoy YAML file.
/// A small reader for exactly that shape (no YAML dependency); any other spelling of a
/// `configuration:` key fails loudly, so no shipped configuration escapes this test.
fn envoy_configuration_strings(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != "configuration:" {
            continue;
        }
        let key_indent = indent(line);
        // Find `value: |` among the key's children.
        let mut j = i + 1;
        let mut value_at = None;
        while j < lines.len() && (lines[j].trim().is_empty() || indent(lines[j]) > key_indent) {
            let trimmed = lines[j].trim();
            if trimmed.starts_with("value:") {
                assert_eq!(
                    trimmed,
                    "value: |",
                    "line {}: write the configuration as a `value: |` block",
                    j + 1
                );
                value_at = Some(j);
                break;
            }
            j += 1;
        }
        let value_at = value_at.unwrap_or_else(|| panic!("line {}: no `value: |`", i + 1));
        let value_indent = indent(lines[value_at]);
        let body: Vec<&str> = lines[value_at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > value_indent)
            .copied()
            .collect();
        let strip = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()
            .unwrap();
        let text = body
            .iter()
            .map(|l| l.get(strip..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        out.push(text);
    }
    out
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    jsonschema::meta::validate(&schema).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn envoy_yaml_reader() {
    let yaml = "a:\n  configuration:\n    \"@type\": x\n    value: |\n      {\n        \"log\": \"all\"\n      }\n  other: 1\n";
    assert_eq!(
        envoy_configuration_strings(yaml),
        ["{\n  \"log\": \"all\"\n}"]
    );
}

#[test]
fn every_shipped_config_is_valid_for_both() {
    let validator = validator();
    let configs = shipped_configs();
    assert!(configs.len() >= 4, "{configs:?}");
    for (name, text) in &configs {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: the filter rejects it: {e}"));
        let value: Value = serde_json::from_str(text).unwrap();
        let errors = schema_errors(&validator, &value);
        assert!(
            errors.is_empty(),
            "{name}: the schema rejects it: {errors:?}"
        );
    }
}

#[test]
fn documented_examples_are_valid_for_both() {
    let validator = validator();
    for value in [
        json!({}),
        json!({"mode": "passthrough", "deny": [{"hosts": ["*.internal"]}]}),
        json!({"mode": "audit", "allow": [{"ports": [22, "5432-5433", "8080"]}], "log": "all"}),
        json!({"allow": [{"name": "a_b-1", "hosts": ["GitHub.com.", "{a,b}.example", "*", "*.x.example", "api-?.example"]}]}),
        json!({"allow": [{"cidrs": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1", "::1"]}]}),
        json!({"presets": presets::all().iter().map(|p| p.name).collect::<Vec<_>>()}),
        json!({"deny_presets": presets::deny_all().iter().map(|p| p.name).collect::<Vec<_>>()}),
        json!({"mode": "passthrough", "deny": [{"hosts": ["a.example"], "enforce": false}]}),
        json!({"log": "all", "log_level": "info"}),
        json!({"sniff": {"max_bytes": 512, "timeout_ms": 60000, "hold_upstream": true}}),
        json!({"sniff": {"max_bytes": 65536, "timeout_ms": 1}}),
        json!({"allow": [{"hosts": ["999.example", "1.2.3.example"]}]}),
        json!({"pin": true, "pin_cluster": "outbound|443||pinned", "allow": [
            {"hosts": ["a.example"], "pin": false}, {"cidrs": ["10.0.0.0/8"], "pin": true}
        ]}),
        json!({"pin": false, "pin_cluster": "x", "presets": ["pypi"]}),
        json!({"ech": "deny", "allow": [{"hosts": ["a.example"]}]}),
        json!({"ech": "allow"}),
    ] {
        let text = value.to_string();
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        let errors = schema_errors(&validator, &value);
        assert!(errors.is_empty(), "{text}: {errors:?}");
    }
}

#[test]
fn invalid_configs_are_rejected_by_both() {
    let validator = validator();
    let cases = [
        // Unknown keys, everywhere.
        json!({"modes": "allowlist"}),
        json!({"allow": [{"host": ["github.com"]}]}),
        json!({"sniff": {"max_byte": 1024}}),
        // Bad enums and types.
        json!({"mode": "block"}),
        json!({"mode": "Allowlist"}),
        json!({"mode": 1}),
        json!({"log": "some"}),
        json!({"presets": ["pip"]}),
        json!({"presets": ["pypi", "pypi"]}),
        json!({"deny_presets": ["cloud-metadata", "cloud-metadata"]}),
        json!({"deny_presets": ["pypi"]}),
        json!({"presets": ["cloud-metadata"]}),
        json!({"allow": [{"ports": [443], "enforce": false}]}),
        json!({"allow": {"hosts": ["github.com"]}}),
        json!({"allow": [["github.com"]]}),
        json!({"allow": [{"hosts": "github.com"}]}),
        json!({"sniff": {"hold_upstream": "yes"}}),
        json!([]),
        json!(null),
        json!("allowlist"),
        // Empty rules and lists.
        json!({"allow": [{}]}),
        json!({"deny": [{"name": "nothing"}]}),
        json!({"allow": [{"hosts": []}]}),
        json!({"allow": [{"cidrs": [], "ports": [443]}]}),
        json!({"allow": [{"ports": []}]}),
        // Ports.
        json!({"allow": [{"ports": [0]}]}),
        json!({"allow": [{"ports": [65536]}]}),
        json!({"allow": [{"ports": [-1]}]}),
        json!({"allow": [{"ports": ["https"]}]}),
        json!({"allow": [{"ports": ["80-"]}]}),
        json!({"allow": [{"ports": [true]}]}),
        // Rule names.
        json!({"allow": [{"name": "GitHub", "ports": [443]}]}),
        json!({"allow": [{"name": "", "ports": [443]}]}),
        json!({"allow": [{"name": "a".repeat(65), "ports": [443]}]}),
        json!({"allow": [{"name": "a b", "ports": [443]}]}),
        // Hosts and CIDRs.
        json!({"allow": [{"hosts": [""]}]}),
        json!({"allow": [{"hosts": ["bücher.de"]}]}),
        json!({"allow": [{"hosts": ["10.0.0.1"]}]}),
        json!({"allow": [{"hosts": ["10.0.0.1."]}]}),
        json!({"allow": [{"cidrs": ["example.com"]}]}),
        json!({"allow": [{"cidrs": ["10.0.0.0/8 "]}]}),
        // Sniff ranges.
        json!({"sniff": {"max_bytes": 511}}),
        json!({"sniff": {"max_bytes": 65537}}),
        json!({"sniff": {"timeout_ms": 0}}),
        json!({"sniff": {"timeout_ms": 60001}}),
        // Pinning.
        json!({"pin": "true"}),
        json!({"pin": null}),
        json!({"allow": [{"hosts": ["a.example"], "pin": 1}]}),
        json!({"allow": [{"hosts": ["a.example"], "pin": null}]}),
        json!({"deny": [{"hosts": ["a.example"], "pin": false}]}),
        json!({"pin_cluster": ""}),
        json!({"pin_cluster": "a b"}),
        json!({"pin_cluster": "ä"}),
        json!({"pin_cluster": "a".repeat(256)}),
        json!({"pin_cluster": 1}),
        json!({"ech": "Deny"}),
        json!({"ech": "block"}),
        json!({"ech": true}),
        json!({"ech": null}),
    ];
    for value in cases {
        let text = value.to_string();
        assert!(parse(text.as_bytes()).is_err(), "the filter accepts {text}");
        assert!(!validator.is_valid(&value), "the schema accepts {text}");
    }
}

/// Errors the schema does not express; the parser (and `egress-guard check`) report them.
fn known_gap(err: &ConfigError) -> bool {
    err.kind == ConfigErrorKind::Duplicate                       // unique rule names
        || err.message.contains("floating point")                // 443.0 is an integer to JSON Schema
        || err.path.contains(".hosts[")                          // IPv6 literals, labels, glob syntax
        || err.path.contains(".cidrs[")                          // host bits, address syntax
        || err.message.contains("is greater than") // "lo-hi" with lo > hi
}

#[test]
fn the_schema_rejects_only_what_the_filter_rejects() {
    // Random configurations, mostly near-valid: whatever the filter accepts, the schema accepts;
    // what only the schema accepts is one of the known gaps.
    let validator = validator();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 2000,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let accepted = Cell::new(0usize);
    let gaps = Cell::new(0usize);
    runner
        .run(&config(), |value| {
            let text = value.to_string();
            let schema_ok = validator.is_valid(&value);
            match Config::from_json(text.as_bytes()).and_then(|c| Policy::compile(&c)) {
                Ok(_) => {
                    accepted.set(accepted.get() + 1);
                    prop_assert!(
                        schema_ok,
                        "the schema rejects {text}: {:?}",
                        schema_errors(&validator, &value)
                    );
                }
                Err(e) if schema_ok => {
                    gaps.set(gaps.get() + 1);
                    prop_assert!(known_gap(&e), "only the filter rejects {text}: {e}");
                }
                Err(_) => {}
            }
            Ok(())
        })
        .unwrap();
    // The property is not vacuous: many cases are valid, and some exercise the gaps.
    let (accepted, gaps) = (accepted.get(), gaps.get());
    assert!(
        accepted >= 400,
        "only {accepted} of 2000 configs were valid"
    );
    assert!(gaps >= 20, "only {gaps} known-gap cases");
}

#[test]
fn the_schema_lists_every_preset_and_the_defaults() {
    let schema = schema();
    let names: Vec<&str> = schema["properties"]["presets"]["items"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = presets::all().iter().map(|p| p.name).collect();
    assert_eq!(names, all);
    let deny_names: Vec<&str> = schema["properties"]["deny_presets"]["items"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let deny_all: Vec<&str> = presets::deny_all().iter().map(|p| p.name).collect();
    assert_eq!(deny_names, deny_all);

    let props = &schema["properties"];
    let defaults = Config::default();
    assert_eq!(props["mode"]["default"], defaults.mode.as_str());
    assert_eq!(props["log"]["default"], defaults.log.as_str());
    assert_eq!(props["pin"]["default"], defaults.pin);
    assert_eq!(props["log_level"]["default"], defaults.log_level.as_str());
    assert_eq!(props["ech"]["default"], defaults.ech.as_str());
    assert_eq!(
        props["pin_cluster"]["default"],
        defaults.pin_cluster.as_str()
    );
    let sniff = &props["sniff"]["properties"];
    let d = SniffConfig::default();
    assert_eq!(sniff["max_bytes"]["default"], d.max_bytes);
    assert_eq!(sniff["timeout_ms"]["default"], d.timeout_ms);
    assert_eq!(sniff["hold_upstream"]["default"], d.hold_upstream);
    assert_eq!(
        sniff["max_bytes"]["minimum"],
        *SniffConfig::MAX_BYTES.start()
    );
    assert_eq!(sniff["max_bytes"]["maximum"], *SniffConfig::MAX_BYTES.end());
    assert_eq!(
        sniff["timeout_ms"]["minimum"],
        *SniffConfig::TIMEOUT_MS.start()
    );
    assert_eq!(
        sniff["timeout_ms"]["maximum"],
        *SniffConfig::TIMEOUT_MS.end()
    );
}

// --- random configurations -------------------------------------------------------------------

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::sample::select(items).prop_map(|s| json!(s))
}

fn host() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => pick(&[
            "github.com", "*.github.com", "*", "GitHub.COM.", "a-b_c.example", "x.y.z.example",
            "{a,b}.example", "api-?.example", "[a-c]x.example", "[!a]x.example", "*.*.example",
            "999.1.1.1", "1.2.3", "01.2.3.4", "a.1.2.3.4",
        ]),
        2 => pick(&[
            "", ".", "..", "a..b", "1.2.3.4", "1.2.3.4.", "::1", "[::1]", "bücher.de", "a b",
            "{a,}.example", "[z-a].example", "}x", "x:443", "[ ]x.example", "[:]x.example",
        ]),
        1 => "[a-zA-Z0-9.*?\\[\\]{},!^ :_@-]{0,12}".prop_map(|s| json!(s)),
        1 => "[a-z]{1,63}(\\.[a-z]{1,63}){0,4}".prop_map(|s| json!(s)),
    ]
}

fn cidr() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => pick(&[
            "10.0.0.0/8", "192.0.2.1", "0.0.0.0/0", "::/0", "2001:db8::/32", "fd00::1",
            "169.254.169.254/32", "::ffff:0:0/95",
        ]),
        2 => pick(&[
            "10.0.0.1/8", "10.0.0.300/8", "10.0.0.0/33", "::ffff:1.2.3.4/128", "example.com", "",
            "10.0.0.0/", "/8", "1.2.3.4/08", " 10.0.0.0/8",
        ]),
        1 => "[0-9a-fA-F:./]{0,20}".prop_map(|s| json!(s)),
        1 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?".prop_map(|s| json!(s)),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (1i64..=65535).prop_map(|p| json!(p)),
        1 => prop::sample::select(&[0i64, -1, 65536, 70000][..]).prop_map(|p| json!(p)),
        1 => "[0-9]{1,6}(-[0-9]{1,6})?".prop_map(|s| json!(s)),
        1 => pick(&["443", "0443", "80-443", "443-80", "0", "00000", "0-1", "1-65535", "x", ""]),
        1 => Just(json!(443.0)),
    ]
}

fn list<S: Strategy<Value = Value>>(item: S) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.6,
        prop::collection::vec(item, 0..4).prop_map(Value::Array),
    )
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(
            0.5,
            prop_oneof![
                8 => "[a-z0-9_-]{1,8}".prop_map(|s| json!(s)),
                1 => pick(&["", "Upper", "a b", "x", "allow-0"]),
            ],
        ),
        list(host()),
        list(cidr()),
        list(port()),
        prop::option::weighted(0.03, Just(json!(true))),
        prop::option::weighted(
            0.2,
            prop_oneof![8 => any::<bool>().prop_map(|v| json!(v)), 1 => Just(json!("no"))],
        ),
        prop::option::weighted(
            0.2,
            prop_oneof![4 => any::<bool>().prop_map(|v| json!(v)), 1 => Just(json!("no"))],
        ),
    )
        .prop_map(|(name, hosts, cidrs, ports, extra, pin, enforce)| {
            let mut rule = serde_json::Map::new();
            for (key, value) in [
                ("name", name),
                ("hosts", hosts),
                ("cidrs", cidrs),
                ("ports", ports),
                ("extra", extra),
                ("pin", pin),
                ("enforce", enforce),
            ] {
                if let Some(value) = value {
                    rule.insert(key.to_string(), value);
                }
            }
            Value::Object(rule)
        })
}

fn config() -> impl Strategy<Value = Value> {
    let sniff = (
        prop::option::of(prop_oneof![
            4 => (512i64..=65536).prop_map(|v| json!(v)),
            1 => prop::sample::select(&[0i64, 511, 65537, -1][..]).prop_map(|v| json!(v)),
        ]),
        prop::option::of(prop_oneof![
            4 => (1i64..=60000).prop_map(|v| json!(v)),
            1 => prop::sample::select(&[0i64, 60001][..]).prop_map(|v| json!(v)),
        ]),
        prop::option::of(any::<bool>().prop_map(|v| json!(v))),
    )
        .prop_map(|(max_bytes, timeout_ms, hold_upstream)| {
            let mut sniff = serde_json::Map::new();
            for (key, value) in [
                ("max_bytes", max_bytes),
                ("timeout_ms", timeout_ms),
                ("hold_upstream", hold_upstream),
            ] {
                if let Some(value) = value {
                    sniff.insert(key.to_string(), value);
                }
            }
            Value::Object(sniff)
        });
    let preset_names: &'static [&'static str] = &[
        "debian-apt",
        "ubuntu-apt",
        "pypi",
        "github",
        "npm",
        "crates-io",
        "go-proxy",
        "docker-hub",
        "maven-central",
        "alpine",
        "pip",
        "GitHub",
    ];
    (
        prop::option::of(pick(&["allowlist", "audit", "passthrough", "block"])),
        prop::option::of(prop::collection::vec(rule(), 0..3).prop_map(Value::Array)),
        prop::option::of(prop::collection::vec(rule(), 0..2).prop_map(Value::Array)),
        prop::option::weighted(
            0.3,
            prop::collection::vec(pick(preset_names), 0..3).prop_map(Value::Array),
        ),
        prop::option::weighted(0.3, sniff),
        prop::option::of(pick(&["none", "denied", "all", "some"])),
        prop::option::weighted(
            0.3,
            prop_oneof![4 => any::<bool>().prop_map(|v| json!(v)), 1 => Just(json!(0))],
        ),
        prop::option::weighted(
            0.2,
            prop_oneof![
                4 => "[!-~]{1,12}".prop_map(|s| json!(s)),
                1 => pick(&["", "a b", "é", "\t"]),
            ],
        ),
        prop::option::weighted(0.2, pick(&["allow", "deny", "Deny", "none"])),
        prop::option::weighted(0.2, pick(&["warn", "info", "debug"])),
        prop::option::weighted(
            0.2,
            prop::collection::vec(pick(&["cloud-metadata", "pypi", "metadata"]), 0..3)
                .prop_map(Value::Array),
        ),
    )
        .prop_map(
            |(
                mode,
                allow,
                deny,
                presets,
                sniff,
                log,
                pin,
                pin_cluster,
                ech,
                log_level,
                deny_presets,
            )| {
                let mut config = serde_json::Map::new();
                for (key, value) in [
                    ("mode", mode),
                    ("allow", allow),
                    ("deny", deny),
                    ("deny_presets", deny_presets),
                    ("log_level", log_level),
                    ("presets", presets),
                    ("sniff", sniff),
                    ("log", log),
                    ("pin", pin),
                    ("pin_cluster", pin_cluster),
                    ("ech", ech),
                ] {
                    if let Some(value) = value {
                        config.insert(key.to_string(), value);
                    }
                }
                Value::Object(config)
            },
        )
}
