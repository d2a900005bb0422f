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

/// Writes `text` to a fresh file under Cargo's per-test temporary directory.
fn temp_file(text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{}-{n}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

// --- check -----------------------------------------------------------------------------------

#[test]
fn check_accepts_and_summarises() {
    let r = run(&["check", DEFAULT]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "");
    assert_eq!(
        r.stdout,
        format!(
            "{DEFAULT}: ok: mode=allowlist rules=5 (allow 3, deny 1, from presets 1) hosts=7 \
             cidrs=3 presets=1\n  presets: pypi\n  sniff:   max_bytes=16384 timeout_ms=3000 \
             hold_upstream=false\n  log:     denied\n"
        )
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

#[test]
fn check_hints_at_the_configuration_inside_envoy_yaml() {
    let yaml = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/sidecar-outbound.yaml");
    let r = run(&["check", yaml]);
    assert_eq!(r.code, 1);
    let mut lines = r.stderr.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{yaml}: expected value at line 1 column 1").as_str())
    );
    assert!(lines
        .next()
        .unwrap()
        .starts_with(&format!("{yaml}: hint: ")));
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
                "rule_kind": "allow", "preset": "pypi", "dst": "151.101.0.223:443",
                "name": "pypi.org", "name_source": "sni", "name_given": "PyPI.org.",
                "name_class": "name", "detail": null, "mode": "allowlist", "at_open": null}"#
        )
    );
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
    assert_eq!(r.code, 0, "audit would-denies pass");
    assert!(r.stdout.starts_with(
        "decision  audit_deny\nreason    no_match: no allow rule matched; audit mode lets it pass \
         and logs a would-deny\n"
    ));
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
        &["explain", DEFAULT][..],
        &["explain", DEFAULT, "--dst", "1.2.3.4"],
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
