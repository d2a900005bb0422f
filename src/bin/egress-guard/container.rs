//! Policies inside other files: Envoy configurations, ECDS resources, Istio EnvoyFilters and
//! WasmPlugins, in YAML (several documents per file) or JSON.
//!
//! egress-guard's policy is found in two shapes:
//!
//! - an Envoy Wasm filter (network or HTTP, `typed_config` of type
//!   `envoy.extensions.filters.{network,http}.wasm.v3.Wasm`) whose `config.root_id` is
//!   `egress-guard`: the policy is the `value` of its `configuration`, a
//!   `google.protobuf.StringValue`. This covers Envoy bootstraps, ECDS resources and the
//!   `EXTENSION_CONFIG` patches of an EnvoyFilter, wherever they sit in the document;
//! - an Istio `WasmPlugin` whose `spec.pluginName` is `egress-guard`: the policy is
//!   `spec.pluginConfig`, a structured object that Istio hands to the filter as JSON.
//!
//! YAML anchors and aliases are resolved, so a policy written once and used by several filters
//! (`config: *egress_guard_plugin`) is one copy per filter.

use std::fmt::Write as _;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// The root id (and WasmPlugin `pluginName`) egress-guard's filters are configured with.
pub const ROOT_ID: &str = "egress-guard";

const WASM_FILTER_TYPES: [&str; 2] = [
    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
];
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// Keys that mark a JSON document as a container (an Envoy config or a Kubernetes object)
/// rather than a policy.
const CONTAINER_KEYS: [&str; 7] = [
    "static_resources",
    "dynamic_resources",
    "admin",
    "resources",
    "typed_config",
    "apiVersion",
    "kind",
];

/// Where a copy of the policy sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// The `configuration` of an Envoy Wasm filter (also inside an EnvoyFilter or ECDS resource).
    WasmFilter,
    /// The `pluginConfig` of an Istio WasmPlugin.
    WasmPlugin,
    /// The `wasm.pluginConfig` of an Istio TrafficExtension (Istio 1.30).
    TrafficExtension,
}

/// One copy of the policy found in a file.
#[derive(Debug, Clone)]
pub struct PolicyCopy {
    /// The YAML document it is in, from 1.
    pub doc: usize,
    /// The line (from 1) of the filter's `config:` key or of the WasmPlugin's `pluginConfig:`.
    pub line: usize,
    /// Where in the document: `static_resources.listeners[0].filter_chains[0].filters[0]...`.
    pub path: String,
    /// Which shape.
    pub kind: CopyKind,
    /// The policy's JSON text, or why it cannot be read.
    pub text: Result<String, String>,
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// Whether a JSON document is a container (an Envoy config, an ECDS file, a Kubernetes object)
/// rather than a policy: an object with one of [`CONTAINER_KEYS`].
pub fn is_json_container(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => CONTAINER_KEYS.iter().any(|k| map.contains_key(*k)),
        _ => false,
    }
}

/// Every copy of egress-guard's policy in a YAML (or JSON) text, in document order.
pub fn find_copies(text: &str) -> Result<Vec<PolicyCopy>, YamlError> {
    let docs = load(text)?;
    let mut copies = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        walk(doc, i + 1, &mut String::new(), &mut copies);
    }
    Ok(copies)
}

/// Parses every document of a YAML stream.
pub fn load(text: &str) -> Result<Vec<MarkedYaml<'_>>, YamlError> {
    MarkedYaml::load_from_str(text).map_err(|e| YamlError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })
}

/// The key and value of `key` in a mapping node.
fn entry<'a, 'i>(
    node: &'a MarkedYaml<'i>,
    key: &str,
) -> Option<(&'a MarkedYaml<'i>, &'a MarkedYaml<'i>)> {
    match &node.data {
        YamlData::Mapping(map) => map.iter().find(|(k, _)| as_str(k) == Some(key)),
        YamlData::Tagged(_, inner) => entry(inner, key),
        _ => None,
    }
}

/// The value under `key` of a mapping node.
fn get<'a, 'i>(node: &'a MarkedYaml<'i>, key: &str) -> Option<&'a MarkedYaml<'i>> {
    entry(node, key).map(|(_, v)| v)
}

/// The string of a scalar node.
fn as_str<'a>(node: &'a MarkedYaml<'_>) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s),
        YamlData::Representation(s, _, _) => Some(s),
        YamlData::Tagged(_, inner) => as_str(inner),
        _ => None,
    }
}

fn walk(node: &MarkedYaml<'_>, doc: usize, path: &mut String, out: &mut Vec<PolicyCopy>) {
    match &node.data {
        YamlData::Mapping(map) => {
            if let Some(copy) = wasm_filter(node, doc, path) {
                out.extend(copy);
                return;
            }
            if let Some(copy) = wasm_plugin(node, doc, path) {
                out.extend(copy);
                return;
            }
            for (key, value) in map {
                let len = path.len();
                match as_str(key) {
                    Some(key) if path.is_empty() => path.push_str(key),
                    Some(key) => {
                        let _ = write!(path, ".{key}");
                    }
                    None => path.push_str(".?"),
                }
                walk(value, doc, path, out);
                path.truncate(len);
            }
        }
        YamlData::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                walk(item, doc, path, out);
                path.truncate(len);
            }
        }
        YamlData::Tagged(_, inner) => walk(inner, doc, path, out),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `Some(copies)` if `node` is a Wasm filter's `typed_config` (`Some([])` if it belongs to
/// another plugin); `None` if it is something else.
fn wasm_filter(node: &MarkedYaml<'_>, doc: usize, path: &str) -> Option<Vec<PolicyCopy>> {
    let ty = get(node, "@type").and_then(as_str)?;
    if !WASM_FILTER_TYPES.contains(&ty) {
        return None;
    }
    let Some((config_key, config)) = entry(node, "config") else {
        return Some(Vec::new());
    };
    let root_id = get(config, "root_id").and_then(as_str);
    let name = get(config, "name").and_then(as_str);
    let ours = match root_id {
        Some(id) => id == ROOT_ID,
        None => name.is_some_and(|n| n.contains(ROOT_ID)),
    };
    if !ours {
        return Some(Vec::new());
    }
    let text = match get(config, "configuration") {
        // What the filter does without a configuration: `{}`, an allowlist with no rules.
        None => Ok("{}".to_string()),
        Some(configuration) => {
            let ty = get(configuration, "@type").and_then(as_str);
            match (ty, get(configuration, "value").map(|v| (v, as_str(v)))) {
                (Some(STRING_VALUE), Some((_, Some(value)))) => Ok(value.to_string()),
                (Some(STRING_VALUE), None) => Ok(String::new()),
                (Some(STRING_VALUE), Some((v, None))) => Err(format!(
                    "line {}: the configuration's value is not a string",
                    v.span.start.line()
                )),
                _ => Err(format!(
                    "line {}: the configuration is not a {STRING_VALUE}; egress-guard reads its \
                     policy from a StringValue's value",
                    configuration.span.start.line()
                )),
            }
        }
    };
    Some(vec![PolicyCopy {
        doc,
        line: config_key.span.start.line(),
        path: join(path, "config"),
        kind: CopyKind::WasmFilter,
        text,
    }])
}

/// `Some(copies)` if `node` is a WasmPlugin or a TrafficExtension (`Some([])` if it is another
/// plugin's). A TrafficExtension keeps the plugin's fields under `spec.wasm`.
fn wasm_plugin(node: &MarkedYaml<'_>, doc: usize, path: &str) -> Option<Vec<PolicyCopy>> {
    let (kind, at) = match get(node, "kind").and_then(as_str) {
        Some("WasmPlugin") => (CopyKind::WasmPlugin, "spec"),
        Some("TrafficExtension") => (CopyKind::TrafficExtension, "spec.wasm"),
        _ => return None,
    };
    let api = get(node, "apiVersion").and_then(as_str).unwrap_or("");
    if !api.starts_with("extensions.istio.io/") {
        return None;
    }
    let mut spec = get(node, "spec")?;
    if kind == CopyKind::TrafficExtension {
        spec = get(spec, "wasm")?;
    }
    let plugin = get(spec, "pluginName").and_then(as_str);
    if plugin != Some(ROOT_ID) {
        return Some(Vec::new());
    }
    let (line, text) = match entry(spec, "pluginConfig") {
        None => (node.span.start.line(), Ok("{}".to_string())),
        Some((key, config)) => (
            key.span.start.line(),
            to_json(config).and_then(|v| {
                serde_json::to_string(&v).map_err(|e| format!("cannot convert to JSON: {e}"))
            }),
        ),
    };
    Some(vec![PolicyCopy {
        doc,
        line,
        path: join(path, &format!("{at}.pluginConfig")),
        kind,
        text,
    }])
}

/// A YAML node as JSON (what Istio does with a WasmPlugin's `pluginConfig`).
pub fn to_json(node: &MarkedYaml<'_>) -> Result<Value, String> {
    let line = node.span.start.line();
    Ok(match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::Number(Number::from(*i)),
            Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
                .map(Value::Number)
                .ok_or_else(|| format!("line {line}: {} is not a JSON number", f.into_inner()))?,
            Scalar::String(s) => Value::String(s.to_string()),
        },
        YamlData::Representation(s, _, _) => Value::String(s.to_string()),
        YamlData::Sequence(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let Some(key) = as_str(key) else {
                    return Err(format!(
                        "line {}: a key that is not a string",
                        key.span.start.line()
                    ));
                };
                out.insert(key.to_string(), to_json(value)?);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => to_json(inner)?,
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(format!("line {line}: a value that cannot be read"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_filters_and_plugins_and_skips_other_plugins() {
        let text = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: egress-guard
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config: &plugin
            root_id: egress-guard
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{"mode": "audit"}'
      - name: other
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config: {root_id: other, configuration: {"@type": type.googleapis.com/google.protobuf.StringValue, value: "x"}}
      - name: again
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          config: *plugin
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
spec:
  pluginName: egress-guard
  pluginConfig:
    mode: allowlist
    allow: [{hosts: [a.example], ports: [443]}]
"#;
        let copies = find_copies(text).unwrap();
        assert_eq!(copies.len(), 3);
        assert_eq!(copies[0].text.as_deref(), Ok(r#"{"mode": "audit"}"#));
        assert_eq!(copies[0].line, 9);
        assert_eq!(
            copies[0].path,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.config"
        );
        assert_eq!(copies[1].text.as_deref(), Ok(r#"{"mode": "audit"}"#));
        assert_eq!(copies[1].line, 21, "an alias is a copy where it is used");
        assert_eq!((copies[2].doc, copies[2].kind), (2, CopyKind::WasmPlugin));
        assert_eq!(copies[2].line, 27);
        let value: Value = serde_json::from_str(copies[2].text.as_ref().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"mode": "allowlist", "allow": [{"hosts": ["a.example"], "ports": [443]}]})
        );
    }

    #[test]
    fn yaml_errors_have_a_position() {
        let err = find_copies("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1 && !err.message.is_empty(), "{err:?}");
        let err = find_copies("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.message, "duplicated key in mapping");
    }

    #[test]
    fn json_containers() {
        assert!(is_json_container(br#"{"static_resources": {}}"#));
        assert!(is_json_container(br#"{"apiVersion": "v1", "kind": "X"}"#));
        assert!(!is_json_container(br#"{"mode": "audit"}"#));
        assert!(!is_json_container(br#"{"mode": "#));
        assert!(!is_json_container(b"[]"));
    }
}
