//! The `egress-guard` command-line tool, run as a process on temporary files.
#![cfg(not(target_arch = "wasm32"))]
// A test crate: its helpers may fail loudly too (clippy.toml allows this inside #[test] only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_egress-guard");
const DEFAULT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/policies/default.json"
);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_with(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn run(args: &[&str]) -> Run {
    run_with(args, None)
}

fn run_os(args: &[&OsStr]) -> Run {
    let output = Command::new(BIN).args(args).output().unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Writes `text` to a fresh `.json` file under Cargo's per-test temporary directory.
fn temp_file(text: &str) -> PathBuf {
    temp_file_ext(text, "json")
}

/// Writes `text` to a fresh file with extension `ext` under Cargo's per-test temporary directory.
fn temp_file_ext(text: &str, ext: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{}-{n}.{ext}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

// --- check -----------------------------------------------------------------------------------

/// The fingerprint of `examples/policies/default.json`: 12 lowercase hex digits.
fn default_fingerprint() -> String {
    let bytes = std::fs::read(DEFAULT).unwrap();
    let hash = egress_guard::policy::Fingerprint::of(&bytes)
        .unwrap()
        .to_string();
    assert!(hash.len() == 12 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    hash
}

#[test]
fn check_accepts_and_summarises() {
    let r = run(&["check", DEFAULT]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "");
    // The fingerprint the filter logs for this file's policy.
    let hash = default_fingerprint();
    assert_eq!(
        r.stdout,
        format!(
            "{DEFAULT}: ok: mode=allowlist rules=5 (allow 3, deny 1, from presets 1) hosts=7 \
             cidrs=3 presets=1\n  presets: pypi\n  sniff:   max_bytes=16384 timeout_ms=3000 \
             hold_upstream=false\n  log:     denied (denials at warn)\n  policy:  {hash} (the \
             \"policy\" field of its log lines)\n"
        )
    );
    let r = run(&["check", "--json", DEFAULT]);
    let summary = &json(&r.stdout)["files"][0]["copies"][0]["summary"];
    assert_eq!(
        (&summary["policy"], &summary["log_level"]),
        (&json(&format!("{hash:?}")), &json(r#""warn""#))
    );
}

#[test]
fn check_reports_the_filters_error_with_the_file_name() {
    let path = temp_file(r#"{"allow": [{"cidrs": ["10.0.0.0/8"]}, {"cidrs": ["10.0.0.300/8"]}]}"#);
    let r = run(&["check", path.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        format!(
            "{}: allow[1].cidrs[0]: \"10.0.0.300/8\" is not a CIDR\n",
            path.display()
        )
    );
}

#[test]
fn check_error_messages_are_the_cores() {
    // Whatever the error, the line is `<file>: <ConfigError as Display>`.
    for config in [
        r#"{"mode": "block"}"#,
        r#"{"allow": [{}]}"#,
        r#"{"allow": [{"ports": [0]}]}"#,
        r#"{"allow": [{"hostz": ["a.example"]}]}"#,
        r#"{"allow": [{"name": "x", "ports": [1]}, {"name": "x", "ports": [2]}]}"#,
        r#"{"presets": ["pypi", "pypi"]}"#,
        r#"{"sniff": {"max_bytes": 1}}"#,
        "{\"mode\": ",
        "[]",
    ] {
        let expected = egress_guard::policy::Config::from_json(config.as_bytes())
            .and_then(|c| egress_guard::policy::Policy::compile(&c).map(|_| ()))
            .unwrap_err();
        let r = run_with(&["check", "-"], Some(config));
        assert_eq!(r.code, 1, "{config}");
        assert_eq!(r.stderr, format!("<stdin>: {expected}\n"), "{config}");
    }
}

#[test]
fn check_reads_stdin() {
    let r = run_with(
        &["check", "-"],
        Some(r#"{"mode": "audit", "presets": ["github"]}"#),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(
            "<stdin>: ok: mode=audit rules=1 (allow 0, deny 0, from presets 1) hosts=3 cidrs=0 \
             presets=1\n  presets: github\n"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn check_several_files() {
    let good = temp_file("{}");
    let bad = temp_file(r#"{"log": "some"}"#);
    let r = run(&["check", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r
        .stdout
        .starts_with(&format!("{}: ok: mode=allowlist rules=0", good.display())));
    assert!(r
        .stderr
        .starts_with(&format!("{}: log: unknown variant `some`", bad.display())));

    // An unreadable file is an I/O error (2), and the others are still checked.
    let r = run(&["check", "/nonexistent/egress.json", good.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r
        .stderr
        .starts_with("egress-guard: /nonexistent/egress.json: "));
    assert!(r.stdout.contains(": ok: "));
}

/// Every shipped file that runs egress-guard: the policy is read out of each filter and
/// WasmPlugin, every copy is valid, and copies of one file agree.
#[test]
fn check_reads_envoy_configs_and_istio_manifests() {
    let mut files = Vec::new();
    for dir in ["envoy", "examples/istio"] {
        for name in yaml_files(&PathBuf::from(ROOT).join(dir)) {
            if name != "mesh-config.yaml" {
                files.push(format!("{ROOT}/{dir}/{name}"));
            }
        }
    }
    // 7 Envoy configs (2 pinned), the 3 EnvoyFilters and the WasmPlugin, 4 TrafficExtensions.
    assert_eq!(files.len(), 15);
    let mut args = vec!["check", "--strict"];
    args.extend(files.iter().map(String::as_str));
    let r = run(&args);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let sidecar = format!("{ROOT}/envoy/istio-sidecar-outbound.yaml");
    // The same policy as default.json, formatted otherwise: the same fingerprint.
    let hash = default_fingerprint();
    assert!(
        r.stdout.contains(&format!(
            "{sidecar}:75: ok: mode=allowlist rules=5 (allow 3, deny 1, from presets 1) hosts=7 \
             cidrs=3 presets=1\n  presets: pypi\n  sniff:   max_bytes=16384 timeout_ms=3000 \
             hold_upstream=false\n  log:     denied (denials at warn)\n  policy:  {hash} (the \
             \"policy\" field of its log lines)\n  copies:  also at lines 142, 186, 196 (the \
             same policy)\n"
        )),
        "{}",
        r.stdout
    );

    args[1] = "--json";
    let r = run(&args);
    assert_eq!(r.code, 0);
    let report = json(&r.stdout);
    assert_eq!(
        (report["ok"].clone(), report["errors"].clone()),
        (json("true"), json("0"))
    );
    let kinds = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let copies = f["copies"].as_array().unwrap();
            let kinds = copies
                .iter()
                .map(|c| c["kind"].as_str().unwrap())
                .collect::<Vec<_>>();
            (
                f["file"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                kinds,
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        kinds,
        [
            ("egress-gateway.yaml".to_string(), vec!["wasm_filter"; 3]),
            (
                "istio-sidecar-outbound.yaml".to_string(),
                vec!["wasm_filter"; 4]
            ),
            ("osm-sidecar-outbound.yaml".to_string(), vec!["wasm_filter"]),
            (
                "sidecar-outbound-http-pinned.yaml".to_string(),
                vec!["wasm_filter"]
            ),
            (
                "sidecar-outbound-http.yaml".to_string(),
                vec!["wasm_filter"]
            ),
            (
                "sidecar-outbound-pinned.yaml".to_string(),
                vec!["wasm_filter"]
            ),
            ("sidecar-outbound.yaml".to_string(), vec!["wasm_filter"]),
            (
                "egress-guard-http-passthrough-only.yaml".to_string(),
                vec!["wasm_filter"]
            ),
            ("egress-guard-http.yaml".to_string(), vec!["wasm_plugin"]),
            (
                "egress-guard-network-pinned.yaml".to_string(),
                vec!["wasm_filter"]
            ),
            ("egress-guard-network.yaml".to_string(), vec!["wasm_filter"]),
            (
                "egress-guard-trafficext-http.yaml".to_string(),
                vec!["traffic_extension"]
            ),
            (
                "egress-guard-trafficext-network.yaml".to_string(),
                vec!["traffic_extension"]
            ),
            (
                "egress-guard-waypoint-http.yaml".to_string(),
                vec!["traffic_extension"]
            ),
            (
                "egress-guard-waypoint-network.yaml".to_string(),
                vec!["traffic_extension"]
            ),
        ]
    );
    let copies = report["files"][1]["copies"].as_array().unwrap();
    assert_eq!(copies[1]["same_as"], 75);
    assert_eq!(
        copies[3]["path"],
        "static_resources.listeners[2].default_filter_chain.filters[0].typed_config.config"
    );
}

const DISAGREEING: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: egress-guard-network}
spec:
  configPatches:
  - applyTo: EXTENSION_CONFIG
    patch:
      operation: ADD
      value:
        name: egress-guard
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            root_id: egress-guard
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{"allow": [{"name": "gh", "hosts": ["*.github.com"], "ports": [443]}]}'
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: egress-guard-http}
spec:
  pluginName: egress-guard
  pluginConfig:
    allow:
    - {name: gh, hosts: ["*.github.com"], ports: [443, 80]}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: another-plugin}
spec:
  pluginName: something-else
  pluginConfig: {whatever: 1}
"#;

#[test]
fn check_reports_copies_that_disagree() {
    let path = temp_file_ext(DISAGREEING, "yaml");
    let p = path.to_str().unwrap();
    let r = run(&["check", p]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "{p}:24: this copy of the policy differs from the one at line 13: \
             allow[0].ports[1] is absent there, 80 here\n"
        )
    );
    // Both copies are valid: each is summarised.
    assert!(
        r.stdout
            .starts_with(&format!("{p}:13: ok: mode=allowlist rules=1")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("\n{p}:24: ok: mode=allowlist rules=1")),
        "{}",
        r.stdout
    );

    let r = run(&["check", "--json", p]);
    assert_eq!(r.code, 1);
    let report = json(&r.stdout);
    assert_eq!(
        report["files"][0]["copies"].as_array().unwrap().len(),
        2,
        "the other plugin is not ours"
    );
    assert_eq!(
        report["files"][0]["disagreements"],
        json(
            r#"[{"line": 24, "differs_from_line": 13, "at": "allow[0].ports[1]",
                  "message": "allow[0].ports[1] is absent there, 80 here"}]"#
        )
    );

    // The same policy written differently (YAML flow vs JSON text, key order) agrees.
    let same = DISAGREEING.replace("ports: [443, 80]", "ports: [\"443\"]");
    let path = temp_file_ext(&same, "yaml");
    let r = run(&["check", path.to_str().unwrap()]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}

#[test]
fn check_reports_each_copys_errors_with_its_line() {
    let text = DISAGREEING
        .replace(
            r#"["*.github.com"], "ports": [443]"#,
            r#"["a..b"], "ports": [0]"#,
        )
        .replace("ports: [443, 80]}", "ports: [443]}\n    - {}");
    let path = temp_file_ext(&text, "yml");
    let p = path.to_str().unwrap();
    let r = run(&["check", p]);
    assert_eq!(r.code, 1);
    let lines = r.stderr.lines().collect::<Vec<_>>();
    assert_eq!(
        lines,
        [
            format!("{p}:13: allow[0].hosts[0]: \"a..b\" is not a host name: a label is empty or longer than 63 bytes"),
            format!("{p}:13: allow[0].ports[0]: 0 is not a port (1-65535)"),
            format!("{p}:24: allow[1]: a rule needs at least one of hosts, cidrs, ports"),
            format!("{p}:24: this copy of the policy differs from the one at line 13: allow[0].hosts[0] is \"a..b\" there, \"*.github.com\" here"),
        ]
    );
}

#[test]
fn check_reads_json_envoy_configs_and_ecds_files() {
    let ecds = r#"{"resources": [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "egress-guard", "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
          "config": {"root_id": "egress-guard", "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": "{\"mode\": \"audit\", \"presets\": [\"npm\"]}"}}}}]}"#;
    let r = run_with(&["check", "-"], Some(ecds));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("<stdin>:4: ok: mode=audit rules=1"),
        "{}",
        r.stdout
    );
}

#[test]
fn check_files_without_a_policy() {
    let mesh = format!("{ROOT}/examples/istio/mesh-config/istio-operator.yaml");
    let r = run(&["check", &mesh]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with(&format!("{mesh}: no egress-guard policy found: ")),
        "{}",
        r.stderr
    );

    let r = run_with(&["check", "-"], Some("a: [1, 2\nb: 3\n"));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("<stdin>: not a JSON policy, and not YAML: line "),
        "{}",
        r.stderr
    );

    // A configuration egress-guard cannot read (not a StringValue).
    let bytes_value = DISAGREEING.replace(
        "type.googleapis.com/google.protobuf.StringValue",
        "type.googleapis.com/google.protobuf.BytesValue",
    );
    let r = run_with(&["check", "-"], Some(&bytes_value));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("<stdin>:13: line 16: the configuration is not a type.googleapis.com/google.protobuf.StringValue"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("differs"),
        "an unreadable copy is not compared: {}",
        r.stderr
    );
}

#[test]
fn check_reports_every_error_in_a_policy() {
    let policy = r#"{"mode": "block",
        "allow": [{"cidrs": ["10.0.0.300/8"]}, {"name": "db", "ports": [5432]}, {}, {"name": "db", "hosts": ["x.example"]}],
        "deny": [{"name": "Metadata", "cidrs": ["169.254.169.254"]}],
        "presets": ["pypi", "pip"], "log": "some"}"#;
    let first = egress_guard::policy::Policy::from_json(policy.as_bytes()).unwrap_err();
    let r = run_with(&["check", "-"], Some(policy));
    assert_eq!(r.code, 1);
    let lines = r.stderr.lines().collect::<Vec<_>>();
    assert_eq!(
        lines[0],
        format!("<stdin>: {first}"),
        "the first is the filter's own"
    );
    assert_eq!(
        lines[1..],
        [
            "<stdin>: allow[0].cidrs[0]: \"10.0.0.300/8\" is not a CIDR",
            "<stdin>: allow[2]: a rule needs at least one of hosts, cidrs, ports",
            "<stdin>: deny[0].name: \"Metadata\" is not a valid rule name: use 1-64 characters from a-z, 0-9, \"-\" and \"_\"",
            "<stdin>: presets[1]: unknown variant `pip`, expected one of `debian-apt`, `ubuntu-apt`, `pypi`, `github`, `npm`, `crates-io`, `go-proxy`, `docker-hub`, `maven-central`, `alpine`",
            "<stdin>: log: unknown variant `some`, expected one of `none`, `denied`, `all`",
            "<stdin>: allow[3].name: \"db\" is already used by allow[1]",
        ]
    );
    // Within a rule too: field by field, entry by entry.
    let policy2 = r#"{"allow": [{"name": "Bad", "hosts": ["a..b", "ok.com", "x y"], "cidrs": ["1.2.3.4/33"],
        "ports": [0, "9-1", 443], "bogus": 1}, {"hosts": []}], "sniff": {"max_bytes": 1, "timeout_ms": 0}}"#;
    let r = run_with(&["check", "-"], Some(policy2));
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.lines().collect::<Vec<_>>(),
        [
            "<stdin>: allow[0].name: \"Bad\" is not a valid rule name: use 1-64 characters from a-z, 0-9, \"-\" and \"_\"",
            "<stdin>: allow[0].hosts[0]: \"a..b\" is not a host name: a label is empty or longer than 63 bytes",
            "<stdin>: allow[0].hosts[2]: \"x y\" is not a host pattern: ' ' cannot appear in a host name",
            "<stdin>: allow[0].cidrs[0]: \"1.2.3.4/33\" is not a CIDR",
            "<stdin>: allow[0].ports[0]: 0 is not a port (1-65535)",
            "<stdin>: allow[0].ports[1]: \"9-1\" is not a port range: 9 is greater than 1",
            "<stdin>: allow[0].bogus: unknown field `bogus`, expected one of `name`, `hosts`, `cidrs`, `ports`, `pin`, `enforce`",
            "<stdin>: allow[1].hosts: an empty list is not allowed: omit the key",
            "<stdin>: sniff.max_bytes: 1 is out of range 512-65536",
            "<stdin>: sniff.timeout_ms: 0 is out of range 1-60000",
        ]
    );

    let r = run_with(&["check", "--json", "-"], Some(policy));
    let report = json(&r.stdout);
    assert_eq!(report["errors"], 7);
    assert_eq!(
        report["files"][0]["copies"][0]["errors"][6],
        json(
            r#"{"path": "allow[3].name", "kind": "duplicate", "message": "\"db\" is already used by allow[1]"}"#
        )
    );
}

const LINTED: &str = r#"{
  "allow": [
    {"name": "gh", "hosts": ["github.*", "*.github.io"], "ports": [443]},
    {"name": "gh-api", "hosts": ["api.github.com"], "ports": [443]},
    {"name": "everything-ssh", "ports": [22]},
    {"name": "any-db", "cidrs": ["0.0.0.0/0"], "ports": [5432]},
    {"name": "github", "hosts": ["*.github.com"], "ports": [443]},
    {"name": "github-again", "hosts": ["*.github.com"], "ports": [443]},
    {"name": "uploads", "hosts": ["uploads.github.com"], "ports": [443]}
  ],
  "deny": [{"name": "all-of-it", "hosts": ["*"]}]
}"#;

#[test]
fn check_warns_about_ech_public_names_and_ech_deny_with_pinning() {
    let policy = r#"{"allow": [{"name": "cf", "hosts": ["cloudflare-ech.com"]}]}"#;
    let r = run_with(&["check", "-"], Some(policy));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("allow[0].hosts[0]: \"cloudflare-ech.com\" matches \"cloudflare-ech.com\", the ECH public name of Cloudflare")
            && r.stderr.ends_with("[ech-public-name]\n"),
        "{}",
        r.stderr
    );
    assert_eq!(run_with(&["check", "--strict", "-"], Some(policy)).code, 1);

    let pinned = r#"{"ech": "deny", "pin": true, "allow": [{"hosts": ["a.example"]}]}"#;
    let r = run_with(&["check", "-"], Some(pinned));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("<stdin>: warning: ech: "), "{}", r.stderr);
    assert!(r.stderr.contains("[ech-deny-pin-no-hold]"), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("without sniff.hold_upstream nothing can be pinned"),
        "{}",
        r.stdout
    );
    assert_eq!(run_with(&["check", "--strict", "-"], Some(pinned)).code, 1);
    let held = pinned.replace(
        "\"pin\": true",
        "\"pin\": true, \"sniff\": {\"hold_upstream\": true}",
    );
    let r = run_with(&["check", "--strict", "-"], Some(&held));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn check_warnings_strict_and_json() {
    let r = run_with(&["check", "-"], Some(LINTED));
    assert_eq!(r.code, 0, "warnings alone exit 0");
    assert!(r.stdout.starts_with("<stdin>: ok: "));
    let warnings = r.stderr.lines().collect::<Vec<_>>();
    assert_eq!(
        [
            "<stdin>: warning: allow[0].hosts[0]: \"github.*\" has a wildcard in the registrable domain, so it also matches other people's domains (github.attacker.com) [wildcard-domain]",
            "<stdin>: warning: allow[0].hosts[1]: \"*.github.io\" matches every name under the public suffix \"github.io\", where anyone can register a domain (attacker.github.io) [wildcard-public-suffix]",
            "<stdin>: warning: allow[0]: allow[0] (\"gh\") is shadowed by deny[0] (\"all-of-it\"): that earlier rule matches everything it matches, so it never allows anything (deny rules come first) [shadowed]",
        ],
        warnings[..3],
        "{}",
        r.stderr
    );
    // Every rule with host patterns is under the deny rule's "*"; those with only ports or
    // CIDRs are not.
    let shadowed = warnings
        .iter()
        .filter(|w| w.ends_with("[shadowed]"))
        .map(|w| w.split(": ").nth(2).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        shadowed,
        ["allow[0]", "allow[1]", "allow[4]", "allow[5]", "allow[6]"]
    );

    // Without the deny-all rule, the rest shows.
    let without = LINTED.replace(r#"[{"name": "all-of-it", "hosts": ["*"]}]"#, "[]");
    let r = run_with(&["check", "--json", "-"], Some(&without));
    assert_eq!(r.code, 0);
    let report = json(&r.stdout);
    let found = report["files"][0]["copies"][0]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["path"].as_str().unwrap(),
                w["code"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        found,
        [
            "allow[0].hosts[0] wildcard-domain",
            "allow[0].hosts[1] wildcard-public-suffix",
            "allow[2].ports ports-only",
            "allow[3].cidrs[0] cidr-everything",
            "allow[5] duplicate",
            "allow[6] shadowed",
        ]
    );
    assert_eq!(report["warnings"], 6);

    let r = run_with(&["check", "--strict", "-"], Some(&without));
    assert_eq!(r.code, 1, "--strict makes warnings errors");
    let r = run_with(&["check", "--strict", "--json", "-"], Some(&without));
    assert_eq!((r.code, json(&r.stdout)["ok"].clone()), (1, json("false")));

    let passthrough =
        r#"{"mode": "passthrough", "allow": [{"hosts": ["a.example"]}], "presets": ["npm"]}"#;
    let r = run_with(&["check", "-"], Some(passthrough));
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stderr.matches("[passthrough-allow]").count(),
        2,
        "{}",
        r.stderr
    );
}

#[test]
fn check_needs_a_file() {
    let r = run(&["check"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("Usage:"), "{}", r.stderr);
}

// --- explain ---------------------------------------------------------------------------------

fn explain_json(config: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["explain", config, "--json"];
    all.extend_from_slice(args);
    let r = run(&all);
    assert_eq!(r.stderr, "");
    (r.code, json(&r.stdout))
}

#[test]
fn explain_allow_by_rule_and_by_preset() {
    let r = run(&[
        "explain",
        DEFAULT,
        "--dst",
        "140.82.112.3:443",
        "--sni",
        "api.github.com",
    ]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        "decision  allow\n\
         reason    rule: an allow rule matched\n\
         rule      github (allow rule)\n\
         dst       140.82.112.3:443\n\
         name      api.github.com (the SNI)\n\
         mode      allowlist\n\
         at open   no: a host rule applies to port 443, so the network filter needs the name: \
         the SNI from tls_inspector if the listener has one, otherwise it reads the client's \
         first bytes\n"
    );

    let (code, v) = explain_json(
        DEFAULT,
        &["--dst", "151.101.0.223:443", "--sni", "PyPI.org."],
    );
    assert_eq!(code, 0);
    assert_eq!(
        v,
        json(
            r#"{"decision": "allow", "passes": true, "reason": "rule", "rule": "preset-pypi",
                "rule_kind": "allow", "rule_enforced": true, "preset": "pypi",
                "dst": "151.101.0.223:443",
                "name": "pypi.org", "name_source": "sni", "name_given": "PyPI.org.",
                "name_class": "name", "detail": null, "mode": "allowlist", "at_open": null,
                "port": null, "any_destination": false}"#
        )
    );
}

#[test]
fn explain_with_ech_deny_allows_nothing_at_open() {
    let policy = r#"{"ech": "deny", "allow": [{"name": "db", "cidrs": ["10.0.0.5"]}],
                     "deny": [{"name": "meta", "cidrs": ["169.254.169.254"]}]}"#;
    let path = temp_file(policy);
    let path = path.to_str().unwrap();
    let r = run(&["explain", path, "--dst", "10.0.0.5:443"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains(
            "at open   no: with \"ech\": \"deny\" nothing is allowed when the connection opens"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("ech       deny: "), "{}", r.stdout);
    let (_, v) = explain_json(path, &["--dst", "10.0.0.5:443"]);
    assert_eq!(v["at_open"], json("null"));
    // A denial is still taken at open.
    let (_, v) = explain_json(path, &["--dst", "169.254.169.254:80"]);
    assert_eq!(v["at_open"]["reason"], json(r#""deny_rule""#));
    // Without ech: deny, the allow is taken at open and no ech line is printed.
    let path = temp_file(&policy.replace(r#""ech": "deny", "#, ""));
    let r = run(&["explain", path.to_str().unwrap(), "--dst", "10.0.0.5:443"]);
    assert!(r.stdout.contains("at open   yes: "), "{}", r.stdout);
    assert!(!r.stdout.contains("\nech "), "{}", r.stdout);
}

#[test]
fn explain_deny() {
    // A lookalike of an allowed name.
    let (code, v) = explain_json(
        DEFAULT,
        &["--dst", "151.101.0.223:443", "--sni", "pypi.org.evil.com"],
    );
    assert_eq!(code, 3);
    assert_eq!(
        (&v["decision"], &v["reason"], &v["rule"], &v["passes"]),
        (
            &json(r#""deny""#),
            &json(r#""no_match""#),
            &json("null"),
            &json("false")
        )
    );

    // The metadata endpoint: denied by a deny rule, at connection open.
    let r = run(&["explain", DEFAULT, "--dst", "169.254.169.254:80"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains("rule      cloud-metadata (deny rule)\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("at open   yes: "), "{}", r.stdout);
    let (_, v) = explain_json(DEFAULT, &["--dst", "169.254.169.254:80"]);
    assert_eq!(
        v["at_open"],
        json(r#"{"decision": "deny", "reason": "deny_rule", "rule": "cloud-metadata"}"#)
    );
}

#[test]
fn explain_audit_passes() {
    let path = temp_file(r#"{"mode": "audit", "presets": ["pypi"]}"#);
    let r = run(&[
        "explain",
        path.to_str().unwrap(),
        "--dst",
        "198.51.100.1:443",
        "--sni",
        "evil.example",
    ]);
    assert_eq!(r.code, 4, "audit would-denies have their own exit code");
    assert!(r.stdout.starts_with(
        "decision  audit_deny\nreason    no_match: no allow rule matched; audit mode lets it pass \
         and logs a would-deny\n"
    ));
}

#[test]
fn staged_deny_rules_in_check_and_explain() {
    let path = temp_file(
        r#"{"mode": "passthrough",
            "deny": [{"name": "new-paste", "hosts": ["*.pastebin.com"], "enforce": false},
                     {"name": "meta", "cidrs": ["169.254.169.254"]}]}"#,
    );
    let path = path.to_str().unwrap();
    let r = run(&["check", path]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "  staged:  new-paste (\"enforce\": false: logged and counted as would-denies, \
             never blocked)\n"
        ),
        "{}",
        r.stdout
    );
    let r = run(&["check", "--json", path]);
    let v = json(&r.stdout);
    let summary = &v["files"][0]["copies"][0]["summary"];
    assert_eq!(
        (&summary["staged_rules"], &summary["staged"]),
        (&json("1"), &json(r#"["new-paste"]"#))
    );
    let r = run(&[
        "explain",
        path,
        "--dst",
        "198.51.100.1:443",
        "--sni",
        "x.pastebin.com",
    ]);
    assert_eq!(
        r.code, 4,
        "a staged would-deny exits like an audit would-deny"
    );
    assert!(
        r.stdout.starts_with(
            "decision  audit_deny\nreason    staged_deny: a staged deny rule (\"enforce\": false) \
             matched: it passes, and is logged and counted as a would-deny\nrule      new-paste \
             (staged deny rule: \"enforce\": false)\n"
        ),
        "{}",
        r.stdout
    );
    let (code, v) = explain_json(
        path,
        &["--dst", "169.254.169.254:443", "--sni", "x.pastebin.com"],
    );
    assert_eq!(
        code, 3,
        "the enforced deny rule after the staged one still denies"
    );
    assert_eq!(
        (&v["reason"], &v["rule"], &v["rule_enforced"]),
        (&json(r#""deny_rule""#), &json(r#""meta""#), &json("true"))
    );
    let bad = temp_file(r#"{"allow": [{"ports": [443], "enforce": false}]}"#);
    let r = run(&["check", bad.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            r#"allow[0].enforce: only a deny rule can be staged ("enforce": false); remove the key"#
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn explain_malformed_names() {
    let (code, v) = explain_json(
        DEFAULT,
        &["--dst", "140.82.112.3:443", "--sni", "api..github.com"],
    );
    assert_eq!(code, 3);
    assert_eq!(
        (&v["reason"], &v["name_class"], &v["detail"], &v["name"]),
        (
            &json(r#""malformed""#),
            &json(r#""malformed""#),
            &json(r#""bad_label""#),
            &json("null")
        )
    );

    // A Host with userinfo, through the authority rules.
    let r = run(&[
        "explain",
        DEFAULT,
        "--dst",
        "140.82.112.3:443",
        "--host",
        "me@github.com",
    ]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains(
        "name      malformed: the Host \"me@github.com\" carries userinfo (user@host) (userinfo)\n"
    ), "{}", r.stdout);

    // A port an SNI cannot carry: the byte ':' is malformed in an SNI.
    let (_, v) = explain_json(
        DEFAULT,
        &["--dst", "140.82.112.3:443", "--sni", "github.com:443"],
    );
    assert_eq!(v["detail"], "bad_byte");

    // Malformed on a port no host rule applies to: settled at open on IP and port, and the text
    // says the name is not read there.
    let r = run(&[
        "explain",
        DEFAULT,
        "--dst",
        "203.0.113.9:5432",
        "--sni",
        "a b",
    ]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains(
            "at open   yes: the network filter decides allow (rule, rule orders-db) when the \
         connection opens, without reading the name"
        ),
        "{}",
        r.stdout
    );
}

/// Bytes that are not UTF-8 are classified as they are, and shown escaped.
#[cfg(unix)]
#[test]
fn explain_takes_raw_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let r = run_os(&[
        OsStr::new("explain"),
        OsStr::new(DEFAULT),
        OsStr::new("--dst"),
        OsStr::new("140.82.112.3:443"),
        OsStr::new("--sni"),
        OsStr::from_bytes(b"a\xffb.example"),
    ]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout
            .contains("the SNI \"a\\xffb.example\" has a byte outside"),
        "{}",
        r.stdout
    );
}

#[test]
fn explain_host_strips_the_port_and_ip_literals_are_not_names() {
    let (code, v) = explain_json(
        DEFAULT,
        &["--dst", "140.82.112.3:443", "--host", "GitHub.com:443"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        (&v["name"], &v["name_source"], &v["rule"]),
        (
            &json(r#""github.com""#),
            &json(r#""host""#),
            &json(r#""github""#)
        )
    );

    let (code, v) = explain_json(
        DEFAULT,
        &["--dst", "140.82.112.3:443", "--host", "[2001:db8::1]:443"],
    );
    assert_eq!(code, 3);
    assert_eq!(
        (&v["name_class"], &v["name"], &v["reason"]),
        (
            &json(r#""ip_literal""#),
            &json("null"),
            &json(r#""no_match""#)
        )
    );
}

#[test]
fn explain_ipv6_destination_and_passthrough() {
    let path = temp_file(
        r#"{"mode": "passthrough", "deny": [{"name": "internal", "hosts": ["*.internal"]}]}"#,
    );
    let p = path.to_str().unwrap();
    let (code, v) = explain_json(p, &["--dst", "[2001:db8::1]:443", "--sni", "example.com"]);
    assert_eq!(code, 0);
    assert_eq!(
        (&v["reason"], &v["dst"]),
        (&json(r#""passthrough""#), &json(r#""[2001:db8::1]:443""#))
    );
    let (code, v) = explain_json(p, &["--dst", "10.1.2.3:80", "--host", "db.internal"]);
    assert_eq!(code, 3);
    assert_eq!(v["rule"], "internal");
}

#[test]
fn explain_and_check_say_what_is_pinned() {
    let policy = r#"{"pin": true, "allow": [
        {"name": "api", "hosts": ["api.example.com"], "ports": [443]},
        {"name": "free", "hosts": ["free.example.com"], "pin": false},
        {"name": "db", "cidrs": ["10.0.0.0/8"]}]}"#;
    let path = temp_file(policy);
    let p = path.to_str().unwrap();
    let pinned = |args: &[&str]| {
        let mut all = vec!["explain", p];
        all.extend_from_slice(args);
        let r = run(&all);
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("pinned "))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("no pinned line: {}", r.stdout))
    };
    assert_eq!(
        pinned(&["--dst", "203.0.113.9:443", "--sni", "api.example.com"]),
        "pinned    yes: Envoy connects to api.example.com:443 (cluster egress_guard_pinned), \
         never to 203.0.113.9; needs the SNI from tls_inspector at open: without \
         sniff.hold_upstream a name read from the client's bytes (HTTP Host, TLS without \
         tls_inspector) cannot be pinned and is denied (pin_unavailable)"
    );
    assert_eq!(
        pinned(&["--dst", "10.1.2.3:443", "--sni", "api.example.com"]),
        "pinned    no: the destination is allowed on IP and port alone (rule db), whatever the name"
    );
    assert_eq!(
        pinned(&["--dst", "203.0.113.9:443", "--sni", "free.example.com"]),
        "pinned    no: rule free does not pin (pin: false)"
    );
    assert_eq!(
        pinned(&["--dst", "203.0.113.9:443", "--sni", "evil.example.com"]),
        "pinned    no: the connection is denied"
    );
    assert_eq!(
        pinned(&["--dst", "10.1.2.3:22"]),
        "pinned    no: only a connection allowed by its name is pinned, and this one has none"
    );
    let (code, v) = explain_json(
        p,
        &["--dst", "203.0.113.9:443", "--host", "api.example.com"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        (&v["pinned"], &v["pin_cluster"]),
        (&json("true"), &json(r#""egress_guard_pinned""#))
    );
    let (_, v) = explain_json(p, &["--dst", "10.1.2.3:443", "--host", "api.example.com"]);
    assert_eq!((&v["pinned"], v.get("pin_cluster")), (&json("false"), None));
    // A policy that pins nothing says nothing about pinning.
    let (_, v) = explain_json(
        DEFAULT,
        &["--dst", "140.82.112.3:443", "--sni", "github.com"],
    );
    assert_eq!((v.get("pinned"), v.get("pin_cluster")), (None, None));

    let r = run(&["check", p]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.ends_with(
            "  pin:     2 rules, cluster egress_guard_pinned; note: without sniff.hold_upstream \
             only an SNI from tls_inspector can be pinned; a pinned name read from the client's \
             bytes (HTTP Host, or TLS on a listener without tls_inspector) is denied \
             (pin_unavailable)\n           HTTP filter: requests are pinned only on a route to \
             cluster egress_guard_pinned (as in envoy/sidecar-outbound-http-pinned.yaml); on any \
             other route a request that must be pinned is denied (pin_unavailable)\n"
        ),
        "{}",
        r.stdout
    );
    let held = temp_file(
        r#"{"pin": true, "pin_cluster": "outbound|443||pinned", "sniff": {"hold_upstream": true},
            "allow": [{"hosts": ["api.example.com"]}]}"#,
    );
    let r = run(&["check", held.to_str().unwrap()]);
    assert!(
        r.stdout.ends_with(
            "hold_upstream=true\n  log:     denied (denials at warn)\n  policy:  e23baf9729e3 (the \
             \"policy\" field of its log lines)\n  pin:     1 rules, cluster \
             outbound|443||pinned; names read from the client's bytes are pinned while the \
             connection is held\n           HTTP filter: requests are pinned only on a route to \
             cluster outbound|443||pinned (as in envoy/sidecar-outbound-http-pinned.yaml); on any \
             other route a request that must be pinned is denied (pin_unavailable)\n"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn explain_errors() {
    let bad = temp_file(r#"{"allow": [{"ports": ["90-80"]}]}"#);
    let r = run(&["explain", bad.to_str().unwrap(), "--dst", "1.2.3.4:80"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "{}: allow[0].ports[0]: \"90-80\" is not a port range: 90 is greater than 80\n",
            bad.display()
        )
    );

    for args in [
        &["explain", DEFAULT, "--dst", "1.2.3.4"][..],
        &["explain", DEFAULT, "--dst", "1.2.3.4:443", "--port", "443"],
        &["explain", DEFAULT, "--port", "0", "--sni", "a"],
        &["explain", DEFAULT, "--dst", "example.com:443"],
        &[
            "explain",
            DEFAULT,
            "--dst",
            "1.2.3.4:443",
            "--sni",
            "a",
            "--host",
            "b",
        ],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}");
        assert_eq!(r.stdout, "");
    }
}

// --- presets, schema, help -------------------------------------------------------------------

#[test]
fn presets_lists_every_preset() {
    let r = run(&["presets"]);
    assert_eq!(r.code, 0);
    for info in egress_guard::policy::presets::all() {
        assert!(r
            .stdout
            .contains(&format!("{}\n  {}\n", info.name, info.description)));
        for rule in info.rules {
            assert!(r
                .stdout
                .contains(&format!("  hosts: {}\n", rule.hosts.join(", "))));
        }
    }

    for info in egress_guard::policy::presets::deny_all() {
        assert!(r.stdout.contains(&format!(
            "{} (deny preset: \"deny_presets\")\n  {}\n",
            info.name, info.description
        )));
        for rule in info.rules {
            assert!(r
                .stdout
                .contains(&format!("  cidrs: {}\n", rule.cidrs.join(", "))));
        }
    }
    let r = run(&["presets", "cloud-metadata"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("  rule:  preset-cloud-metadata\n"),
        "{}",
        r.stdout
    );

    let r = run(&["presets", "alpine"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        "alpine\n  Alpine apk: dl-cdn.alpinelinux.org on 80 and 443\n  rule:  preset-alpine\n  \
         hosts: dl-cdn.alpinelinux.org\n  ports: 80, 443\n"
    );

    let r = run(&["presets", "pip"]);
    assert_eq!(r.code, 2);
    assert!(r
        .stderr
        .starts_with("egress-guard: no preset \"pip\"; the presets are: debian-apt, "));
}

#[test]
fn schema_is_json_schema() {
    let r = run(&["schema"]);
    assert_eq!(r.code, 0);
    let schema = json(&r.stdout);
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["type"], "object");
}

#[test]
fn help_and_version() {
    let r = run(&["--version"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, concat!("egress-guard ", env!("CARGO_PKG_VERSION"), "\n"))
    );
    let r = run(&["--help"]);
    assert_eq!(r.code, 0);
    for word in ["check", "explain", "presets", "schema", "Exit codes:"] {
        assert!(r.stdout.contains(word), "{word}");
    }
    let r = run(&[]);
    assert_eq!(r.code, 2);
}

// --- render ----------------------------------------------------------------------------------

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fresh empty directory under Cargo's per-test temporary directory.
fn temp_dir(label: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// The `*.yaml` files of a directory, sorted.
fn yaml_files(dir: &std::path::Path) -> Vec<String> {
    let mut names = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect::<Vec<_>>();
    names.sort();
    names
}

/// The files built to pin allowed names (render's `Template::pins`), rendered from the pinning
/// example policy of their set.
const PINNING_ENVOY: [&str; 3] = [
    "egress-gateway.yaml",
    "sidecar-outbound-http-pinned.yaml",
    "sidecar-outbound-pinned.yaml",
];
const PINNING_ISTIO: [&str; 1] = ["egress-guard-network-pinned.yaml"];

/// The shipped manifests and configs are exactly what `render` makes of the example policies:
/// one policy per set (and one for the set's files built to pin), and they cannot drift apart.
#[test]
fn render_reproduces_the_shipped_files() {
    for (policy, pinned_policy, pinning, flag, shipped) in [
        (
            "examples/policies/default.json",
            "examples/policies/default-pinned.json",
            &PINNING_ENVOY[..],
            "--envoy",
            "envoy",
        ),
        (
            "examples/policies/istio-mesh.json",
            "examples/policies/istio-mesh-pinned.json",
            &PINNING_ISTIO[..],
            "--istio",
            "examples/istio",
        ),
    ] {
        let out = temp_dir("render");
        let policy = format!("{ROOT}/{policy}");
        let r = run(&["render", &policy, flag, "--out", out.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        // The files built to pin say that this policy pins nothing; the ambient egress-waypoint
        // manifests get the policy by name only, and render says so (in file order).
        let notes = if flag == "--istio" {
            ["http", "network"]
                .map(|kind| {
                    format!(
                        "egress-guard: note: egress-guard-waypoint-{kind}.yaml: by name only (an \
                         egress waypoint sees ServiceEntry addresses, not the destination's): \
                         left out allow in-cluster, deny cloud-metadata\n"
                    )
                })
                .concat()
        } else {
            String::new()
        };
        let pin_notes = pinning
            .iter()
            .map(|name| {
                format!(
                    "egress-guard: note: {name} is built for a policy that pins (\"pin\": \
                     true); this one pins nothing, so no allowed name is pinned \
                     (docs/pinning.md)\n"
                )
            })
            .collect::<String>();
        assert_eq!(r.stderr, format!("{pin_notes}{notes}"));
        let shipped = PathBuf::from(ROOT).join(shipped);
        let names = yaml_files(&shipped);
        assert!(names.len() >= 5, "{names:?}");
        assert_eq!(yaml_files(&out), names, "render writes every shipped file");
        assert_eq!(
            r.stdout,
            names
                .iter()
                .map(|n| format!("{}\n", out.join(n).display()))
                .collect::<String>()
        );
        if !pinning.is_empty() {
            let pinned_policy = format!("{ROOT}/{pinned_policy}");
            let mut args = vec![
                "render",
                &pinned_policy,
                flag,
                "--out",
                out.to_str().unwrap(),
            ];
            for name in pinning {
                args.extend(["--file", *name]);
            }
            let r = run(&args);
            assert_eq!((r.code, r.stderr.as_str()), (0, ""));
        }
        for name in &names {
            let rendered = std::fs::read_to_string(out.join(name)).unwrap();
            let expected = std::fs::read_to_string(shipped.join(name)).unwrap();
            let from = if pinning.contains(&name.as_str()) {
                pinned_policy
            } else {
                policy.as_str()
            };
            assert!(
                rendered == expected,
                "{name}: render {from} {flag} differs from the shipped file; run `egress-guard \
                 render {from} {flag} --file {name} --out {}`",
                shipped.display()
            );
        }
    }
}

#[test]
fn render_puts_another_policy_in_every_copy() {
    let policy =
        r#"{"mode": "audit", "allow": [{"name": "x", "hosts": ["x.example"], "ports": [443]}]}"#;
    for (flag, copies) in [("--envoy", 12), ("--istio", 8)] {
        let out = temp_dir("render-other");
        let r = run_with(
            &["render", "-", flag, "--out", out.to_str().unwrap()],
            Some(policy),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        // `check` finds the policy in every copy: 4 in the Istio-shaped sidecar (one anchor,
        // three aliases), 3 in the gateway (one a listener), 1 in each other Envoy config; 1 in each Istio manifest but mesh-config
        // (the waypoint ones too: the policy has no CIDR rule to leave out).
        let mut found = 0;
        for name in yaml_files(&out) {
            let path = out.join(&name);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("\"github\""),
                "{name} still has the old policy"
            );
            if name == "mesh-config.yaml" {
                continue;
            }
            let r = run(&["check", "--json", path.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{name}: {}", r.stdout);
            let report = json(&r.stdout);
            for copy in report["files"][0]["copies"].as_array().unwrap() {
                assert_eq!(copy["summary"]["mode"], "audit", "{name}");
                found += 1;
            }
        }
        assert_eq!(found, copies, "{flag}");
    }
}

#[test]
fn render_one_file_to_stdout_with_image_or_module() {
    let r = run(&[
        "render",
        DEFAULT,
        "--istio",
        "--file",
        "egress-guard-http.yaml",
        "--image",
        "oci://ghcr.io/acme/egress-guard:1.2.3",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("# egress-guard's HTTP filter"));
    assert!(r
        .stdout
        .contains("  url: \"oci://ghcr.io/acme/egress-guard:1.2.3\"\n"));
    assert!(!r.stdout.contains("registry.example.com"));
    assert!(r
        .stdout
        .contains("  pluginConfig:\n    {\n      \"mode\": \"allowlist\",\n"));

    let r = run(&[
        "render",
        DEFAULT,
        "--envoy",
        "--file",
        "sidecar-outbound.yaml",
        "--module",
        "/etc/envoy/egress_guard.wasm",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r
        .stdout
        .contains("local: {filename: \"/etc/envoy/egress_guard.wasm\"}"));
}

/// An ambient egress waypoint sees ServiceEntry addresses: its manifests get the policy without
/// CIDRs (a rule with hosts keeps them), the file's comment and render's notes say what went.
#[test]
fn render_leaves_cidr_rules_out_of_the_waypoint_manifests() {
    let policy = r#"{"allow": [{"name": "db", "cidrs": ["10.0.0.0/8"], "ports": [5432]},
  {"name": "web", "hosts": ["x.example"], "cidrs": ["192.0.2.1"]}],
 "deny": [{"name": "meta", "cidrs": ["169.254.169.254"]}]}"#;
    let left_out = "allow db, allow web (its cidrs; its hosts kept), deny meta";
    let file = "egress-guard-waypoint-network.yaml";
    let r = run_with(&["render", "-", "--istio", "--file", file], Some(policy));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "egress-guard: note: {file}: by name only (an egress waypoint sees ServiceEntry \
             addresses, not the destination's): left out {left_out}\n"
        )
    );
    assert!(
        r.stdout.contains(&format!(
            "    # Left out here (CIDR rules): {left_out}.\n    pluginConfig:\n      \
             {{\"allow\": [{{\"name\": \"web\", \"hosts\": [\"x.example\"]}}]}}\n"
        )),
        "{}",
        r.stdout
    );
    let rendered = temp_file_ext(&r.stdout, "yaml");
    let r = run(&["check", "--json", rendered.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let report = json(&r.stdout);
    let copies = report["files"][0]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["summary"]["cidrs"], 0, "{}", r.stdout);

    // The sidecar manifests keep every rule.
    let r = run_with(
        &[
            "render",
            "-",
            "--istio",
            "--file",
            "egress-guard-trafficext-network.yaml",
        ],
        Some(policy),
    );
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert!(r.stdout.contains("169.254.169.254"));
}

#[test]
fn render_refuses_what_it_cannot_do() {
    // An invalid policy: the filter's error, nothing written.
    let out = temp_dir("render-bad");
    let r = run_with(
        &["render", "-", "--envoy", "--out", out.to_str().unwrap()],
        Some(r#"{"mode": "block"}"#),
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("<stdin>: mode: unknown variant `block`"),
        "{}",
        r.stderr
    );
    assert!(yaml_files(&out).is_empty());

    for args in [
        &["render", DEFAULT][..],                   // neither --istio nor --envoy
        &["render", DEFAULT, "--istio", "--envoy"], // both
        &["render", DEFAULT, "--envoy"],            // several files, no --out
        &["render", DEFAULT, "--envoy", "--file", "nope.yaml"], // unknown file
        &["render", DEFAULT, "--envoy", "--image", "oci://x/y"], // --image is Istio's
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{args:?}");
    }
}

/// `n` host rules of typical length, one per line:
/// `{"name": "svc-00001", "hosts": ["api.svc-00001.example.com"], "ports": [443]}`.
fn many_host_rules(n: usize) -> String {
    let rules = (0..n)
        .map(|i| {
            format!(
                "    {{\"name\": \"svc-{i:05}\", \"hosts\": [\"api.svc-{i:05}.example.com\"], \
                 \"ports\": [443]}}"
            )
        })
        .collect::<Vec<_>>();
    format!(
        "{{\n  \"mode\": \"allowlist\",\n  \"allow\": [\n{}\n  ]\n}}\n",
        rules.join(",\n")
    )
}

/// The numbers docs/cli.md gives: 16,000 such rules fit in a Kubernetes object (1.5 MiB), 17,000
/// do not; client-side `kubectl apply` (a 256 KiB annotation) takes 2,700, not 2,800.
#[test]
fn render_size_limits_are_the_documented_ones() {
    let file = "egress-guard-http-passthrough-only.yaml";
    let render = |n: usize| {
        let policy = temp_file(&many_host_rules(n));
        run(&[
            "render",
            policy.to_str().unwrap(),
            "--istio",
            "--file",
            file,
        ])
    };
    let r = render(2_700);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let r = render(2_800);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr
            .contains("too large for client-side `kubectl apply`"),
        "{}",
        r.stderr
    );
    let r = render(16_000);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = render(17_000);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .contains("over the 1572864 bytes (1.5 MiB) a Kubernetes object can hold"),
        "{}",
        r.stderr
    );
}

// --- explain without --dst ---------------------------------------------------------------------

#[test]
fn explain_without_dst_when_no_ip_changes_it() {
    let builds = format!("{ROOT}/examples/policies/presets-build-hosts.json");
    let r = run(&["explain", &builds, "--sni", "pypi.org", "--port", "443"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.starts_with("decision  allow\nreason    rule: an allow rule matched\nrule      preset-pypi (allow rule from preset pypi)\ndst       any IP, port 443 (the decision is the same for every destination IP)\n"), "{}", r.stdout);
    let (code, v) = explain_json(&builds, &["--sni", "pypi.org", "--port", "443"]);
    assert_eq!(code, 0);
    assert_eq!(
        (&v["dst"], &v["port"], &v["any_destination"]),
        (&json("null"), &json("443"), &json("true"))
    );

    // A name no rule allows, on any port: denied everywhere (no CIDR rule in this policy).
    let r = run(&["explain", &builds, "--host", "evil.example"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains(
            "\ndst       any (the decision is the same for every destination IP and port)\n"
        ),
        "{}",
        r.stdout
    );

    // Audit: its own exit code.
    let audit = temp_file(r#"{"mode": "audit", "presets": ["pypi"]}"#);
    let (code, v) = explain_json(audit.to_str().unwrap(), &["--sni", "evil.example"]);
    assert_eq!((code, v["decision"].as_str()), (4, Some("audit_deny")));
}

#[test]
fn explain_without_dst_says_what_the_decision_depends_on() {
    // The default policy denies the metadata IP whatever the name: IP-dependent.
    let r = run(&[
        "explain",
        DEFAULT,
        "--sni",
        "api.github.com",
        "--port",
        "443",
    ]);
    assert_eq!(r.code, 5);
    assert_eq!(
        r.stdout,
        "decision  depends on the destination IP (give --dst)\n  \
         allow      rule github              e.g. --dst 0.0.0.0:443\n  \
         deny       deny_rule cloud-metadata e.g. --dst 169.254.169.254:443 (in 169.254.169.254/32, fd00:ec2::254/128)\n"
    );
    let (code, v) = explain_json(DEFAULT, &["--sni", "api.github.com"]);
    assert_eq!(code, 5);
    assert_eq!(v["depends_on"], json(r#"["ip", "port"]"#));
    assert_eq!(v["decision"], json("null"));
    let outcomes = v["outcomes"].as_array().unwrap();
    assert!(outcomes.contains(&json(r#"{"decision": "deny", "reason": "no_match", "rule": null, "cidrs": [], "example_dst": "0.0.0.0:1"}"#)), "{v}");
    assert!(outcomes.contains(&json(r#"{"decision": "allow", "reason": "rule", "rule": "orders-db", "cidrs": ["203.0.113.0/24"], "example_dst": "203.0.113.0:5432"}"#)), "{v}");

    // Only the port matters: presets have no CIDRs.
    let builds = format!("{ROOT}/examples/policies/presets-build-hosts.json");
    let (code, v) = explain_json(&builds, &["--sni", "pypi.org"]);
    assert_eq!((code, v["depends_on"].clone()), (5, json(r#"["port"]"#)));

    // Every IP is covered, not a sample: a /32 deep inside an allowed /8 is found.
    let nested = temp_file(
        r#"{"allow": [{"name": "net", "cidrs": ["10.0.0.0/8"]}], "deny": [{"name": "one", "cidrs": ["10.200.3.77"]}]}"#,
    );
    let (code, v) = explain_json(nested.to_str().unwrap(), &["--port", "80"]);
    assert_eq!(code, 5);
    let rules = v["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["rule"].clone())
        .collect::<Vec<_>>();
    assert_eq!(rules, [json("null"), json(r#""net""#), json(r#""one""#)]);
}

// --- suggest and replay ------------------------------------------------------------------------

const ENVOY_PREFIX: &str = "[2026-11-22 05:47:53.796][18][info][wasm] \
    [source/extensions/common/wasm/context.cc:1151] wasm log egress-guard egress-guard \
    egress-guard: ";
const ISTIO_PREFIX: &str = "2026-11-22T05:47:53.796Z\tinfo\tenvoy wasm \
    external/envoy/source/extensions/common/wasm/context.cc:1192\twasm log egress-guard: ";

/// A decision line as the filter writes it (src/filter/report.rs).
fn record(decision: &str, reason: &str, dst: &str, name: Option<&str>, proto: &str) -> String {
    serde_json::json!({
        "decision": decision, "reason": reason, "rule": null, "dst": dst, "name": name,
        "name_source": if name.is_some() { "sni" } else { "none" }, "proto": proto,
        "src": "10.0.0.5:40000", "filter": "network"
    })
    .to_string()
}

/// An audit-mode log: every prefix the lines can have, other lines, denials.
fn audit_log() -> Vec<String> {
    let a = |dst: &str, name: Option<&str>, proto: &str| {
        record("audit_deny", "no_match", dst, name, proto)
    };
    vec![
        "[2026-11-22 05:47:50.000][1][info][main] [source/server/server.cc:1] starting main dispatch loop".to_string(),
        format!("{ENVOY_PREFIX}{}", a("140.82.112.3:443", Some("api.github.com"), "tls")),
        format!("{ISTIO_PREFIX}{}\tthread=20", a("140.82.112.4:443", Some("codeload.github.com"), "tls")),
        format!("[pod/web-1/istio-proxy] 2026-11-22T05:47:53.796123456Z {}", a("140.82.112.5:443", Some("uploads.github.com"), "tls")),
        a("140.82.112.6:443", Some("github.com"), "tls"),
        serde_json::json!({"level": "info", "msg": format!("wasm log: {}", a("140.82.112.6:443", Some("github.com"), "tls"))}).to_string(),
        format!("{ENVOY_PREFIX}{}", a("199.232.1.1:80", Some("deb.debian.org"), "http")),
        format!("{ENVOY_PREFIX}{}", a("199.232.1.1:443", Some("deb.debian.org"), "tls")),
        format!("{ENVOY_PREFIX}{}", a("199.232.1.2:80", Some("security.debian.org"), "http")),
        format!("{ENVOY_PREFIX}{}", a("185.199.108.1:443", Some("one.github.io"), "tls")),
        format!("{ENVOY_PREFIX}{}", a("185.199.108.2:443", Some("two.github.io"), "tls")),
        format!("{ENVOY_PREFIX}{}", a("185.199.108.3:443", Some("three.github.io"), "tls")),
        format!("{ENVOY_PREFIX}{}", a("203.0.113.7:5432", None, "other")),
        format!("{ENVOY_PREFIX}{}", a("203.0.113.9:5432", None, "other")),
        format!("{ENVOY_PREFIX}{}", record("allow", "rule", "[2001:db8::5]:22", None, "other")),
        // Denials are never suggested.
        format!("{ENVOY_PREFIX}{}", record("deny", "deny_rule", "169.254.169.254:80", None, "http")),
        format!("{ENVOY_PREFIX}{}", record("deny", "malformed", "140.82.112.3:443", None, "tls")),
        format!("{ENVOY_PREFIX}{}", record("deny", "no_match", "192.0.2.66:443", Some("evil.example"), "tls")),
        "[2026-11-22 05:47:54.000][18][info][wasm] cut: {\"decision\":\"allow\",\"rea".to_string(),
    ]
}

const SUGGESTED: &str = r#"{
  "mode": "allowlist",
  "allow": [
    {"name": "debian-org-80", "hosts": ["security.debian.org"], "ports": [80]},
    {"name": "debian-org-80-443", "hosts": ["deb.debian.org"], "ports": [80, 443]},
    {"name": "github-com", "hosts": ["github.com", "*.github.com"], "ports": [443]},
    {"name": "one-github-io", "hosts": ["one.github.io"], "ports": [443]},
    {"name": "three-github-io", "hosts": ["three.github.io"], "ports": [443]},
    {"name": "two-github-io", "hosts": ["two.github.io"], "ports": [443]},
    {"name": "cidrs-22", "cidrs": ["2001:db8::5/128"], "ports": [22]},
    {"name": "cidrs-5432", "cidrs": ["203.0.113.7/32", "203.0.113.9/32"], "ports": [5432]}
  ]
}
"#;

#[test]
fn suggest_allows_what_passed() {
    let log = temp_file_ext(&(audit_log().join("\n") + "\n"), "log");
    let r = run(&["suggest", log.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, SUGGESTED);
    assert_eq!(
        r.stderr,
        "egress-guard suggest: 19 lines read from 1 input: 17 decision records (1 allow, 13 \
         audit_deny, 3 deny), 14 used (allow and audit_deny); 1 other line skipped, 1 unreadable \
         record\n8 rules:\n  \
         debian-org-80                1 host                 ports 80           1 connection\n  \
         debian-org-80-443            1 host                 ports 80,443       2 connections\n  \
         github-com                   2 hosts (1 wildcard)   ports 443          5 connections\n  \
         one-github-io                1 host                 ports 443          1 connection\n  \
         three-github-io              1 host                 ports 443          1 connection\n  \
         two-github-io                1 host                 ports 443          1 connection\n  \
         cidrs-22                     1 cidr                 ports 22           1 connection\n  \
         cidrs-5432                   2 cidrs                ports 5432         2 connections\n"
    );
    // It is a policy the filter accepts, and it allows every connection it was made from.
    let policy = temp_file(&r.stdout);
    let r = run(&["check", "--strict", policy.to_str().unwrap()]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let r = run(&[
        "replay",
        log.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0);
    let report = json(&r.stdout);
    assert_eq!(
        (
            report["newly_denied"].clone(),
            report["no_longer_audit_deny"].clone()
        ),
        (json("0"), json("13"))
    );

    // The same lines in another order, from standard input: the same policy.
    let mut shuffled = audit_log();
    shuffled.reverse();
    let r = run_with(&["suggest", "-"], Some(&shuffled.join("\n")));
    assert_eq!(r.stdout, SUGGESTED);
}

#[test]
fn suggest_wildcards_and_prefixes() {
    let log = temp_file_ext(&audit_log().join("\n"), "log");
    let log = log.to_str().unwrap();
    // Three children of github.com make *.github.com; with 4 needed, the names stay.
    let r = run(&["suggest", log, "--wildcard-threshold", "4"]);
    assert!(r.stdout.contains(r#"{"name": "github-com", "hosts": ["github.com", "api.github.com", "codeload.github.com", "uploads.github.com"], "ports": [443]}"#), "{}", r.stdout);
    let r = run(&["suggest", log, "--wildcard-threshold", "0"]);
    assert!(!r.stdout.contains("*."), "{}", r.stdout);
    // github.io is a public suffix: its sites are never merged, whatever the threshold.
    let r = run(&["suggest", log, "--wildcard-threshold", "1"]);
    assert!(!r.stdout.contains("*.github.io"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(r#""hosts": ["*.debian.org"], "ports": [80, 443]"#),
        "{}",
        r.stdout
    );
    // Name-less destinations by /24 (and /64 for IPv6).
    let r = run(&["suggest", log, "--prefix-len", "24", "--prefix-len6", "64"]);
    assert!(
        r.stdout
            .contains(r#"{"name": "cidrs-5432", "cidrs": ["203.0.113.0/24"], "ports": [5432]}"#),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(r#"{"name": "cidrs-22", "cidrs": ["2001:db8::/64"], "ports": [22]}"#),
        "{}",
        r.stdout
    );
    let r = run(&["suggest", log, "--prefix-len", "33"]);
    assert_eq!(r.code, 2);
}

/// YAML documents as JSON values (saphyr, the CLI's own YAML reader).
fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    use saphyr::{LoadableYamlNode, Scalar, Yaml};
    fn convert(node: &Yaml<'_>) -> serde_json::Value {
        match node {
            Yaml::Value(Scalar::String(s)) => serde_json::Value::String(s.to_string()),
            Yaml::Value(Scalar::Integer(i)) => serde_json::json!(i),
            Yaml::Value(Scalar::Boolean(b)) => serde_json::json!(b),
            Yaml::Value(Scalar::Null) => serde_json::Value::Null,
            Yaml::Sequence(items) => items.iter().map(convert).collect(),
            Yaml::Mapping(map) => map
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), convert(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => panic!("unexpected YAML node {other:?}"),
        }
    }
    Yaml::load_from_str(text)
        .unwrap()
        .iter()
        .map(convert)
        .collect()
}

/// A CRD schema from tests/integration/data, closed as tests/integration/istio.py closes them
/// (an object listing its properties accepts no others).
fn istio_schema(key: &str) -> serde_json::Value {
    fn close(schema: &mut serde_json::Value) {
        match schema {
            serde_json::Value::Object(map) => {
                for value in map.values_mut() {
                    close(value);
                }
                if map.contains_key("properties")
                    && !map.contains_key("additionalProperties")
                    && map.get("x-kubernetes-preserve-unknown-fields") != Some(&json("true"))
                {
                    map.insert("additionalProperties".into(), json("false"));
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(close),
            _ => {}
        }
    }
    let all = json(
        &std::fs::read_to_string(format!(
            "{ROOT}/tests/integration/data/istio-crd-schemas.json"
        ))
        .unwrap(),
    );
    let mut schema = all[key].clone();
    assert!(schema.is_object(), "no schema {key}");
    close(&mut schema);
    schema
}

#[test]
fn suggest_istio_service_entries_match_the_crd_schema() {
    let log = temp_file_ext(&audit_log().join("\n"), "log");
    let r = run(&[
        "suggest",
        log.to_str().unwrap(),
        "--format",
        "istio",
        "--prefix-len",
        "24",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let docs = yaml_docs(&r.stdout);
    assert_eq!(docs.len(), 8);
    let validator =
        jsonschema::draft7::new(&istio_schema("networking.istio.io/v1/ServiceEntry")).unwrap();
    for doc in &docs {
        assert_eq!(
            (doc["apiVersion"].as_str(), doc["kind"].as_str()),
            (Some("networking.istio.io/v1"), Some("ServiceEntry"))
        );
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert!(
            name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}"
        );
        let spec = serde_json::json!({"spec": doc["spec"]});
        let errors = validator
            .iter_errors(&spec)
            .map(|e| e.to_string())
            .collect::<Vec<_>>();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert_eq!(doc["spec"]["resolution"], "NONE");
    }
    let github = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "egress-guard-github-com")
        .unwrap();
    assert_eq!(
        github["spec"]["hosts"],
        json(r#"["github.com", "*.github.com"]"#)
    );
    assert_eq!(
        github["spec"]["ports"],
        json(r#"[{"number": 443, "name": "tls-443", "protocol": "TLS"}]"#)
    );
    let debian = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "egress-guard-debian-org-80-443")
        .unwrap();
    assert_eq!(
        debian["spec"]["ports"][0],
        json(r#"{"number": 80, "name": "http-80", "protocol": "HTTP"}"#)
    );
    let db = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "egress-guard-cidrs-5432")
        .unwrap();
    assert_eq!(db["spec"]["addresses"], json(r#"["203.0.113.0/24"]"#));
    assert_eq!(db["spec"]["ports"][0]["protocol"], "TCP");

    // A schema violation is caught: the validator is not vacuous.
    let bad = serde_json::json!({"spec": {"hosts": ["x"], "resolution": "SOMETIMES"}});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn suggest_cilium_network_policy() {
    let mut lines = audit_log();
    // A name two labels under a wildcard's parent: Cilium's `*` does not span dots.
    lines.push(record(
        "audit_deny",
        "no_match",
        "140.82.112.9:443",
        Some("a.b.github.com"),
        "tls",
    ));
    let log = temp_file_ext(&lines.join("\n"), "log");
    let r = run(&["suggest", log.to_str().unwrap(), "--format", "cilium"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let docs = yaml_docs(&r.stdout);
    assert_eq!(docs.len(), 1);
    let policy = &docs[0];
    assert_eq!(
        (policy["apiVersion"].as_str(), policy["kind"].as_str()),
        (Some("cilium.io/v2"), Some("CiliumNetworkPolicy"))
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 9, "DNS, then one per rule");
    assert_eq!(
        egress[0]["toPorts"][0]["rules"]["dns"],
        json(r#"[{"matchPattern": "*"}]"#)
    );
    let github = egress
        .iter()
        .find(|e| e["toFQDNs"][0]["matchName"] == "github.com")
        .unwrap();
    assert_eq!(
        github["toFQDNs"],
        json(
            r#"[{"matchName": "github.com"}, {"matchPattern": "*.github.com"}, {"matchName": "a.b.github.com"}]"#
        )
    );
    assert_eq!(
        github["toPorts"],
        json(r#"[{"ports": [{"port": "443", "protocol": "TCP"}]}]"#)
    );
    let db = egress
        .iter()
        .find(|e| e.get("toCIDR").is_some() && e["toPorts"][0]["ports"][0]["port"] == "5432")
        .unwrap();
    assert_eq!(
        db["toCIDR"],
        json(r#"["203.0.113.7/32", "203.0.113.9/32"]"#)
    );
}

#[test]
fn replay_shows_what_a_new_policy_changes() {
    let log = temp_file_ext(&audit_log().join("\n"), "log");
    let log = log.to_str().unwrap();
    let r = run(&["replay", log, "--policy", DEFAULT]);
    assert_eq!(r.code, 3, "something would be newly denied");
    assert!(
        r.stdout.starts_with(
            "newly denied: 4 connections\n\
             \x20      1  -                    [2001:db8::5]:22   allow (rule) -> deny (no_match)\n\
             \x20      1  one.github.io        185.199.108.1:443  audit_deny (no_match) -> deny (no_match)\n"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("\nno longer audit_deny: 10 connections\n       2  github.com           140.82.112.6:443   audit_deny (no_match) -> allow (rule github)\n"), "{}", r.stdout);
    assert!(r.stderr.starts_with("egress-guard replay: 17 decision records from 19 lines (1 other line skipped, 1 unreadable); 3 unchanged, 14 changed, 0 undecidable"), "{}", r.stderr);

    let r = run(&["replay", log, "--policy", DEFAULT, "--json"]);
    assert_eq!(r.code, 3);
    let report = json(&r.stdout);
    assert_eq!(
        [
            &report["newly_denied"],
            &report["newly_allowed"],
            &report["no_longer_audit_deny"],
            &report["unchanged"]
        ],
        [&json("4"), &json("0"), &json("10"), &json("3")]
    );
    let evil = serde_json::json!({"change": "newly_allowed", "count": 1, "name": "evil.example", "dst": "192.0.2.66:443",
        "old": {"decision": "deny", "reason": "no_match", "rule": null},
        "new": {"decision": "allow", "reason": "passthrough", "rule": null}});
    // A passthrough policy lets the denied name through; the metadata deny rule still holds and
    // malformed input stays denied.
    let passthrough = format!("{ROOT}/examples/policies/istio-allow-any.json");
    let r = run(&["replay", log, "--policy", &passthrough, "--json"]);
    assert_eq!(r.code, 0, "nothing newly denied");
    let report = json(&r.stdout);
    assert_eq!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["change"] == "newly_allowed")
            .collect::<Vec<_>>(),
        [&evil]
    );

    // Malformed input is denied whatever the policy; an invalid policy is exit 1.
    let r = run(&["replay", log, "--policy", "-"]);
    assert_eq!(r.code, 1);
}

#[test]
fn replay_notes_logs_without_allowed_connections() {
    let line = format!(
        "{ENVOY_PREFIX}{}",
        record(
            "deny",
            "no_match",
            "192.0.2.66:443",
            Some("evil.example"),
            "tls"
        )
    );
    let r = run_with(&["replay", "-", "--policy", DEFAULT], Some(&line));
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "no change\n");
    assert!(
        r.stderr
            .contains("\nnote: the logs hold no allowed connection"),
        "{}",
        r.stderr
    );
}

#[test]
fn explain_without_dst_bounds_its_work_and_its_output() {
    let policy = |n: usize| {
        let rules = (0..n)
            .map(|i| {
                format!(
                    r#"{{"name": "r{i}", "cidrs": ["10.{}.{}.0/24"], "ports": [{}]}}"#,
                    i / 256,
                    i % 256,
                    1000 + 2 * i
                )
            })
            .collect::<Vec<_>>();
        temp_file(&format!(r#"{{"allow": [{}]}}"#, rules.join(", ")))
    };
    let big = policy(2_100);
    let r = run(&["explain", big.to_str().unwrap(), "--sni", "x.example"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("destinations to decide without --dst; give --port (or --dst)"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "explain",
        big.to_str().unwrap(),
        "--sni",
        "x.example",
        "--port",
        "1000",
    ]);
    assert_eq!(r.code, 5, "{}", r.stderr);

    let small = policy(20);
    let r = run(&["explain", small.to_str().unwrap(), "--sni", "x.example"]);
    assert_eq!(r.code, 5);
    assert_eq!(r.stdout.lines().count(), 12, "{}", r.stdout);
    assert!(
        r.stdout
            .ends_with("  and 11 more outcomes (--json lists them all)\n"),
        "{}",
        r.stdout
    );
    let (_, v) = explain_json(small.to_str().unwrap(), &["--sni", "x.example"]);
    assert_eq!(v["outcomes"].as_array().unwrap().len(), 21);
}
