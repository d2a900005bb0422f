//! `render POLICY --istio | --envoy [--out DIR] [--file NAME]`: the shipped Istio manifests
//! (`examples/istio/`) or Envoy configurations (`envoy/`) with a policy embedded.
//!
//! The shipped files are the templates, compiled in: each place that holds the policy (the
//! `value: |` block of a Wasm filter's `google.protobuf.StringValue` configuration, a
//! WasmPlugin's `pluginConfig:`, a TrafficExtension's `wasm.pluginConfig:`) gets the policy
//! file's text, indented, and nothing else changes -- except in the ambient egress-waypoint
//! manifests ([`Embed::ByName`]), which get it without its CIDR rules and a comment line naming
//! them. So `render examples/policies/default.json --envoy` reproduces `envoy/` byte for byte
//! (tests/cli.rs checks this), and a policy is written once.
//!
//! JSON is YAML, so a WasmPlugin's `pluginConfig` holds the policy's JSON text as a flow mapping.
//! Every rendered file is read back (the same reader as `check`) and each copy of the policy in
//! it must equal the policy given.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use egress_guard::policy::Policy;
use serde_json::Value;

use crate::by_name::{self, LeftOut};
use crate::container::{self, CopyKind};
use crate::io::{err, out, read_input, Exit, UsageError};

/// A shipped file used as a template.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// Its file name (also the name it is written under).
    pub name: &'static str,
    /// Its text.
    pub text: &'static str,
    /// Which policy goes in it.
    pub policy: Embed,
    /// Built to pin allowed names (docs/pinning.md): render notes a policy that does not pin.
    pub pins: bool,
}

/// The policy a template gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embed {
    /// The policy given.
    AsGiven,
    /// The policy given without its CIDR rules ([`by_name`]): an ambient egress waypoint sees
    /// ServiceEntry addresses, not the real destination's.
    ByName,
}

/// `envoy/*.yaml`.
pub const ENVOY: &[Template] = &[
    Template {
        name: "egress-gateway.yaml",
        text: include_str!("../../../envoy/egress-gateway.yaml"),
        policy: Embed::AsGiven,
        pins: true,
    },
    Template {
        name: "istio-sidecar-outbound.yaml",
        text: include_str!("../../../envoy/istio-sidecar-outbound.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "osm-sidecar-outbound.yaml",
        text: include_str!("../../../envoy/osm-sidecar-outbound.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "sidecar-outbound-http-pinned.yaml",
        text: include_str!("../../../envoy/sidecar-outbound-http-pinned.yaml"),
        policy: Embed::AsGiven,
        pins: true,
    },
    Template {
        name: "sidecar-outbound-http.yaml",
        text: include_str!("../../../envoy/sidecar-outbound-http.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "sidecar-outbound-pinned.yaml",
        text: include_str!("../../../envoy/sidecar-outbound-pinned.yaml"),
        policy: Embed::AsGiven,
        pins: true,
    },
    Template {
        name: "sidecar-outbound.yaml",
        text: include_str!("../../../envoy/sidecar-outbound.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
];

/// `examples/istio/*.yaml`.
pub const ISTIO: &[Template] = &[
    Template {
        name: "egress-guard-http-passthrough-only.yaml",
        text: include_str!("../../../examples/istio/egress-guard-http-passthrough-only.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "egress-guard-http.yaml",
        text: include_str!("../../../examples/istio/egress-guard-http.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "egress-guard-network-pinned.yaml",
        text: include_str!("../../../examples/istio/egress-guard-network-pinned.yaml"),
        policy: Embed::AsGiven,
        pins: true,
    },
    Template {
        name: "egress-guard-network.yaml",
        text: include_str!("../../../examples/istio/egress-guard-network.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "egress-guard-trafficext-http.yaml",
        text: include_str!("../../../examples/istio/egress-guard-trafficext-http.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "egress-guard-trafficext-network.yaml",
        text: include_str!("../../../examples/istio/egress-guard-trafficext-network.yaml"),
        policy: Embed::AsGiven,
        pins: false,
    },
    Template {
        name: "egress-guard-waypoint-http.yaml",
        text: include_str!("../../../examples/istio/egress-guard-waypoint-http.yaml"),
        policy: Embed::ByName,
        pins: false,
    },
    Template {
        name: "egress-guard-waypoint-network.yaml",
        text: include_str!("../../../examples/istio/egress-guard-waypoint-network.yaml"),
        policy: Embed::ByName,
        pins: false,
    },
];

/// The module reference in the shipped Istio manifests (`--image` replaces it).
pub const DEFAULT_IMAGE: &str = "oci://registry.example.com/egress-guard:0.1.0";
/// The module path in the shipped Envoy configurations (`--module` replaces it).
pub const DEFAULT_MODULE: &str = "target/wasm32-wasip1/release/egress_guard.wasm";

/// The most a Kubernetes object can hold: etcd's default request limit (`--max-request-bytes`,
/// 1.5 MiB), measured on the object as JSON, which is how the API server stores it.
pub const KUBERNETES_OBJECT_LIMIT: usize = 1_572_864;
/// The most all annotations of an object can hold (256 KiB): client-side `kubectl apply` keeps a
/// copy of the whole object in `kubectl.kubernetes.io/last-applied-configuration`.
pub const KUBERNETES_ANNOTATIONS_LIMIT: usize = 262_144;

/// Which set of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `examples/istio/`.
    Istio,
    /// `envoy/`.
    Envoy,
}

impl Target {
    fn templates(self) -> &'static [Template] {
        match self {
            Target::Istio => ISTIO,
            Target::Envoy => ENVOY,
        }
    }
}

/// What to render, as given on the command line.
#[derive(Debug)]
pub struct Options {
    /// The policy file (`-` for standard input).
    pub policy: PathBuf,
    /// Istio manifests or Envoy configurations.
    pub target: Target,
    /// Write every file (or those of `files`) into this directory.
    pub out: Option<PathBuf>,
    /// Only these files (names as shipped).
    pub files: Vec<String>,
    /// The Wasm module's OCI image (Istio).
    pub image: Option<String>,
    /// The Wasm module's path (Envoy).
    pub module: Option<String>,
}

pub fn run(options: &Options) -> Result<Exit, UsageError> {
    let input = read_input(&options.policy)?;
    let policy_text = match std::str::from_utf8(&input.bytes) {
        Ok(text) => text,
        Err(e) => {
            err(&format!("{}: not UTF-8: {e}", input.label));
            return Ok(Exit::Invalid);
        }
    };
    let policy = match Policy::from_json(policy_text.as_bytes()) {
        Ok(policy) => policy,
        Err(e) => {
            err(&format!("{}: {e}", input.label));
            return Ok(Exit::Invalid);
        }
    };
    let templates = options.target.templates();
    let names = templates.iter().map(|t| t.name).collect::<Vec<_>>();
    for name in &options.files {
        if !names.contains(&name.as_str()) {
            return Err(UsageError(format!(
                "no file {name:?} to render; the files are: {}",
                names.join(", ")
            )));
        }
    }
    let selected = templates
        .iter()
        .filter(|t| options.files.is_empty() || options.files.iter().any(|f| f == t.name))
        .collect::<Vec<_>>();
    if options.out.is_none() && selected.len() != 1 {
        return Err(UsageError(format!(
            "name a directory with --out, or one file with --file to print it: {}",
            names.join(", ")
        )));
    }
    let mut rendered = Vec::new();
    for template in &selected {
        let (embedded, left_out) = match template.policy {
            Embed::AsGiven => (policy_text.to_string(), None),
            Embed::ByName => match by_name::by_name(policy_text) {
                Ok(b) => {
                    if let Err(e) = Policy::from_json(b.text.as_bytes()) {
                        err(&format!(
                            "{}: {}: the policy without its CIDR rules: {e}",
                            input.label, template.name
                        ));
                        return Ok(Exit::Invalid);
                    }
                    (b.text, Some(b.left_out))
                }
                Err(message) => {
                    err(&format!("{}: {}: {message}", input.label, template.name));
                    return Ok(Exit::Invalid);
                }
            },
        };
        let text = match render_checked(template, &embedded, options) {
            Ok(text) => text,
            Err(message) => {
                err(&format!("{}: {}: {message}", input.label, template.name));
                return Ok(Exit::Invalid);
            }
        };
        let text = match &left_out {
            None => text,
            Some(left_out) => {
                if !left_out.is_empty() {
                    err(&format!(
                        "egress-guard: note: {}: by name only (an egress waypoint sees \
                         ServiceEntry addresses, not the destination's): left out {}",
                        template.name,
                        list(left_out)
                    ));
                }
                note_left_out(&text, left_out)
            }
        };
        if options.target == Target::Istio {
            match check_size(&text) {
                Size::Fits => {}
                Size::OverAnnotations(bytes) => err(&format!(
                    "egress-guard: warning: {} is {bytes} bytes as JSON: too large for \
                     client-side `kubectl apply` (its last-applied-configuration annotation holds \
                     at most {KUBERNETES_ANNOTATIONS_LIMIT}); use `kubectl apply --server-side`, \
                     or `kubectl create`/`replace`",
                    template.name
                )),
                Size::OverObject(bytes) => {
                    err(&format!(
                        "{}: {}: {bytes} bytes as JSON, over the {KUBERNETES_OBJECT_LIMIT} bytes \
                         (1.5 MiB) a Kubernetes object can hold; shorten the policy (presets, \
                         `*.` patterns, CIDRs) or deliver it through a file and ECDS",
                        input.label, template.name
                    ));
                    return Ok(Exit::Invalid);
                }
            }
        }
        if template.pins {
            if let Some(note) = pin_note(template.name, &policy) {
                err(&note);
            }
        }
        rendered.push((template.name, text));
    }
    match &options.out {
        None => {
            for (_, text) in &rendered {
                out(text)?;
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
            for (name, text) in &rendered {
                let path = dir.join(name);
                write_file(&path, text)?;
                out(&format!("{}\n", path.display()))?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// The cluster the pinning templates send pinned connections to (the policy's default
/// `pin_cluster`).
pub const PIN_CLUSTER: &str = "egress_guard_pinned";

/// What render says about a policy in a template built to pin ([`Template::pins`]): one that
/// does not pin, or pins to a cluster the template does not have.
fn pin_note(name: &str, policy: &Policy) -> Option<String> {
    if !policy.pinning() {
        Some(format!(
            "egress-guard: note: {name} is built for a policy that pins (\"pin\": true); this \
             one pins nothing, so no allowed name is pinned (docs/pinning.md)"
        ))
    } else if policy.pin_cluster() != PIN_CLUSTER {
        Some(format!(
            "egress-guard: warning: {name} has the dynamic forward proxy cluster {PIN_CLUSTER}, \
             and this policy pins to \"pin_cluster\": {:?}: Envoy closes every pinned \
             connection unless that cluster exists (docs/pinning.md)",
            policy.pin_cluster()
        ))
    } else {
        None
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), UsageError> {
    std::fs::write(path, text).map_err(|e| UsageError(format!("{}: {e}", path.display())))
}

enum Size {
    Fits,
    OverAnnotations(usize),
    OverObject(usize),
}

/// The largest document of a manifest, measured as the JSON the API server stores.
fn check_size(text: &str) -> Size {
    let largest = container::load(text)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|doc| container::to_json(&doc).ok())
        .filter_map(|value| serde_json::to_string(&value).ok())
        .map(|json| json.len())
        .max()
        .unwrap_or(0);
    if largest > KUBERNETES_OBJECT_LIMIT {
        Size::OverObject(largest)
    } else if largest > KUBERNETES_ANNOTATIONS_LIMIT {
        Size::OverAnnotations(largest)
    } else {
        Size::Fits
    }
}

/// Renders a template and reads it back: every copy of the policy in the result must be the
/// policy given. If the policy's text does not survive as YAML (a WasmPlugin's flow mapping is
/// stricter than JSON in a few corners), it is embedded re-serialised instead.
fn render_checked(
    template: &Template,
    policy_text: &str,
    options: &Options,
) -> Result<String, String> {
    let expected: Value =
        serde_json::from_str(policy_text).map_err(|e| format!("not JSON: {e}"))?;
    let text = render(template, policy_text, options);
    if read_back(&text, &expected).is_ok() {
        return Ok(text);
    }
    let pretty = serde_json::to_string_pretty(&expected).map_err(|e| e.to_string())?;
    let text = render(template, &pretty, options);
    read_back(&text, &expected).map(|()| text)
}

fn read_back(text: &str, expected: &Value) -> Result<(), String> {
    let copies = container::find_copies(text)
        .map_err(|e| format!("the result is not YAML: line {}: {}", e.line, e.message))?;
    for copy in copies {
        let read: Value = copy
            .text
            .as_deref()
            .map_err(Clone::clone)
            .and_then(|t| serde_json::from_str(t).map_err(|e| e.to_string()))?;
        if read != *expected {
            return Err(format!(
                "line {}: the policy read back differs from the one given",
                copy.line
            ));
        }
        if copy.kind != CopyKind::WasmFilter && !read.is_object() {
            return Err(format!("line {}: pluginConfig is not an object", copy.line));
        }
    }
    Ok(())
}

/// Where a template holds the policy: the key line's index and indentation, and the lines of
/// the old policy (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    indent: usize,
    start: usize,
    end: usize,
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The policy slots of a template, in order.
fn slots(lines: &[&str]) -> Vec<Slot> {
    let mut slots = Vec::new();
    let mut previous = "";
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let is_slot = (trimmed == "value: |"
            && previous == "\"@type\": type.googleapis.com/google.protobuf.StringValue")
            || trimmed == "pluginConfig:";
        if is_slot {
            let indent = indentation(line);
            let start = i + 1;
            let mut end = start;
            let mut last = start;
            for (j, l) in lines.iter().enumerate().skip(start) {
                if l.trim().is_empty() {
                    continue;
                }
                if indentation(l) <= indent {
                    break;
                }
                last = j + 1;
            }
            end = end.max(last);
            slots.push(Slot { indent, start, end });
        }
        if !trimmed.is_empty() {
            previous = trimmed;
        }
    }
    slots
}

/// The template with `policy` in every slot, and the image or module replaced if given.
pub fn render(template: &Template, policy: &str, options: &Options) -> String {
    let lines = template.text.lines().collect::<Vec<_>>();
    let slots = slots(&lines);
    let mut text = String::with_capacity(template.text.len() + policy.len() * slots.len());
    let mut i = 0;
    for slot in &slots {
        for line in lines.get(i..slot.start).unwrap_or_default() {
            text.push_str(line);
            text.push('\n');
        }
        let pad = " ".repeat(slot.indent + 2);
        for line in policy.trim().lines().map(str::trim_end) {
            if !line.is_empty() {
                text.push_str(&pad);
                text.push_str(line);
            }
            text.push('\n');
        }
        i = slot.end;
    }
    for line in lines.get(i..).unwrap_or_default() {
        text.push_str(line);
        text.push('\n');
    }
    if let Some(image) = &options.image {
        text = text.replace(DEFAULT_IMAGE, &quoted(image));
    }
    if let Some(module) = &options.module {
        text = text.replace(DEFAULT_MODULE, &quoted(module));
    }
    text
}

/// The comment line a by-name template carries just above its policy, naming what was left out;
/// render rewrites it.
pub const LEFT_OUT_MARK: &str = "# Left out here (CIDR rules):";

fn list(left_out: &[LeftOut]) -> String {
    if left_out.is_empty() {
        return "nothing".to_string();
    }
    left_out
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` with its [`LEFT_OUT_MARK`] line saying what `left_out` holds.
fn note_left_out(text: &str, left_out: &[LeftOut]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim_start().starts_with(LEFT_OUT_MARK) {
            let indent = indentation(line);
            let _ = writeln!(
                out,
                "{}{LEFT_OUT_MARK} {}.",
                " ".repeat(indent),
                list(left_out)
            );
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| {
        let mut out = String::from("\"");
        for c in text.chars() {
            let _ = write!(out, "{}", c.escape_default());
        }
        out.push('"');
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_count(template: &Template) -> usize {
        slots(&template.text.lines().collect::<Vec<_>>()).len()
    }

    fn options() -> Options {
        Options {
            policy: PathBuf::from("-"),
            target: Target::Envoy,
            out: None,
            files: Vec::new(),
            image: None,
            module: None,
        }
    }

    #[test]
    fn every_template_that_runs_egress_guard_has_a_slot() {
        for t in ENVOY.iter().chain(ISTIO) {
            assert_eq!(slot_count(t), 1, "{}", t.name);
        }
    }

    #[test]
    fn every_by_name_template_says_what_it_left_out() {
        for t in ENVOY.iter().chain(ISTIO) {
            let marks = t
                .text
                .lines()
                .filter(|l| l.trim_start().starts_with(LEFT_OUT_MARK))
                .count();
            let expected = usize::from(t.policy == Embed::ByName);
            assert_eq!(marks, expected, "{}", t.name);
        }
        let text = "a:\n  # Left out here (CIDR rules): old.\n  b: 1\n";
        assert_eq!(
            note_left_out(text, &[]),
            "a:\n  # Left out here (CIDR rules): nothing.\n  b: 1\n"
        );
    }

    #[test]
    fn a_slot_is_replaced_and_nothing_else() {
        let template = Template {
            name: "t.yaml",
            policy: Embed::AsGiven,
            pins: false,
            text: "a:\n  configuration:\n    \"@type\": type.googleapis.com/google.protobuf.StringValue\n    value: |\n      {\"mode\": \"audit\"}\n\n      \n  b: 1\nc: 2\n",
        };
        let text = render(&template, "{\n  \"log\": \"all\"\n}\n", &options());
        assert_eq!(
            text,
            "a:\n  configuration:\n    \"@type\": type.googleapis.com/google.protobuf.StringValue\n    value: |\n      {\n        \"log\": \"all\"\n      }\n\n      \n  b: 1\nc: 2\n"
        );
    }

    #[test]
    fn a_template_built_to_pin_notes_a_policy_that_does_not_pin_there() {
        let policy = |text: &str| Policy::from_json(text.as_bytes()).unwrap();
        let rule = r#"[{"name": "x", "hosts": ["x.example"], "ports": [443]}]"#;
        let unpinned = policy(&format!(r#"{{"allow": {rule}}}"#));
        let note = pin_note("egress-gateway.yaml", &unpinned).unwrap();
        assert!(note.starts_with("egress-guard: note: egress-gateway.yaml is built for a policy"));
        let pinned = policy(&format!(r#"{{"pin": true, "allow": {rule}}}"#));
        assert_eq!(pin_note("egress-gateway.yaml", &pinned), None);
        let elsewhere = policy(&format!(
            r#"{{"pin": true, "pin_cluster": "dfp", "allow": {rule}}}"#
        ));
        let warning = pin_note("egress-gateway.yaml", &elsewhere).unwrap();
        assert!(
            warning.contains("warning") && warning.contains("\"dfp\""),
            "{warning}"
        );
        // The shipped templates built to pin have the cluster PIN_CLUSTER names.
        for t in ENVOY.iter().chain(ISTIO).filter(|t| t.pins) {
            assert!(
                t.text.contains(&format!("name: {PIN_CLUSTER}\n")),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn image_and_module_are_quoted() {
        assert_eq!(quoted("oci://r/x:1"), "\"oci://r/x:1\"");
        let mut o = options();
        o.module = Some("/etc/envoy/eg.wasm".into());
        let t = ENVOY
            .iter()
            .find(|t| t.name == "sidecar-outbound.yaml")
            .unwrap();
        let text = render(t, "{}", &o);
        assert!(text.contains("local: {filename: \"/etc/envoy/eg.wasm\"}"));
        assert!(!text.contains(DEFAULT_MODULE));
    }
}
