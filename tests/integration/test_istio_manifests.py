"""examples/istio/: every manifest checked against Istio's CRD schemas, and the Envoy config
inside the patches spliced into an Istio-shaped sidecar and run by a real Envoy with traffic.

The Istio-shaped sidecar is envoy/istio-sidecar-outbound.yaml with egress-guard taken out (what
istiod generates); istio.py applies the EnvoyFilters, the WasmPlugin and the TrafficExtensions to
it with istiod's matching rules and serves the extension configs from files in place of
istio-agent and ADS -- including what istio-agent sends when it cannot pull the module. The
waypoint TrafficExtensions run in an Envoy shaped like an ambient egress waypoint (last section).
The pinned network EnvoyFilter (egress-guard-network-pinned.yaml) is spliced the same way, its
CLUSTER ADD and tcp_proxy MERGE included, and run with names from the namespace's hosts file.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import unavailable
from egress import (ENVOY_DIR, all_decisions, decision_log, get, shipped, sniffed, tls_server)
from harness import (REPO, Cert, Envoy, HttpServer, NetNS, TcpServer, connect, http_request,
                     tls_client)
from istio import (GATEWAY_API_GATEWAY, HTTP_RBAC, HTTP_WASM, INGRESS_GATEWAY, NETWORK_RBAC,
                   NETWORK_WASM, SCHEMA_DIR, SCHEMA_FILES, SIDECAR, WAYPOINT, WaypointService,
                   agent_forwards, apply_envoy_filter, apply_traffic_extension,
                   apply_wasm_plugin, discovered_filters, documents,
                   filter_names, hcms, load_schemas, pull_failed_substitute, schema_key,
                   serve_extension_configs, strip_filters, traffic_extension_cel_errors,
                   traffic_extension_chains, traffic_extension_resource_name, validate_spec,
                   waypoint_bootstrap, wasm_plugin_selects, write_extension_configs)

ISTIO_DIR = REPO / "examples" / "istio"
PINNED = "egress-guard-network-pinned.yaml"     # egress-guard-network.yaml with pinning
MANIFESTS = sorted(ISTIO_DIR.glob("*.yaml"))   # what `kubectl apply` takes
# Install-time mesh settings: an IstioOperator for istioctl, values for the istiod Helm chart.
MESH_CONFIG_DIR = ISTIO_DIR / "mesh-config"
OPERATOR = "install.istio.io/v1alpha1/IstioOperator"
TRAFFIC_EXTENSION = "extensions.istio.io/v1alpha1/TrafficExtension"
TAGS = ["decision", "reason", "outcome", "kind", "rule", "policy"]
PROXY_UID, ADMIN_PORT, OUTBOUND_PORT = 1337, 15000, 15001


def manifest(name: str) -> dict[str, Any]:
    (doc,) = documents(ISTIO_DIR / name)
    return doc


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    try:
        __import__("jsonschema")
    except ImportError:
        unavailable("python `jsonschema` not installed (pip install -r "
                    "tests/integration/requirements.txt)")
    return load_schemas()


# --------------------------------------------------------------------------------------------
# The manifests themselves
# --------------------------------------------------------------------------------------------


# The project's shared data sits beside the checkout (CI: a fresh clone with a copy of shared/
# next to it). Without it the vendored copies are used alone.
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_vendored_schemas_are_the_shared_ones(name: str) -> None:
    """tests/integration/data/<name> is a copy of the shared file; it must not drift."""
    shared = SHARED_DATA / name
    if not shared.is_file():
        unavailable(f"no shared copy of {name} at {shared} (the repository's parent has no "
                    "shared/data): only the vendored one is used")
    assert json.loads((SCHEMA_DIR / name).read_text()) == json.loads(shared.read_text())


def test_the_vendored_schemas_are_all_in_use() -> None:
    """Every schema file in data/ is loaded, and each kind comes from one file only."""
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(SCHEMA_FILES + (
        FIELD_RELEASES.name,))
    kinds = {key.rsplit("/", 1)[1] for key in load_schemas()}
    assert kinds == {"WasmPlugin", "EnvoyFilter", "ServiceEntry", "Sidecar", "TrafficExtension"}


def test_there_are_manifests() -> None:
    """Cluster resources in examples/istio/, install-time settings in mesh-config/ (an
    IstioOperator is no cluster resource since Istio 1.24 removed the in-cluster operator)."""
    kinds = sorted(schema_key(d) for p in MANIFESTS for d in documents(p))
    assert kinds == 4 * [TRAFFIC_EXTENSION] + ["extensions.istio.io/v1alpha1/WasmPlugin"] + 3 * [
        "networking.istio.io/v1alpha3/EnvoyFilter"], kinds
    assert sorted(p.name for p in MESH_CONFIG_DIR.iterdir()) == ["helm-values.yaml",
                                                                 "istio-operator.yaml"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_istio_crd_schema(path: Path, schemas) -> None:
    for doc in documents(path):
        assert validate_spec(doc, schemas) == [], path.name


@pytest.mark.parametrize("mutate, error", [
    (lambda d: d["spec"].__setitem__("failStrategy", "FAIL_CLOSED"), "failStrategy"),
    (lambda d: d["spec"].__setitem__("pluginconfig", {}), "pluginconfig"),
    (lambda d: d["spec"]["match"][0].__setitem__("mode", "OUTBOUND"), "mode"),
], ids=["bad_enum", "unknown_field", "bad_nested_enum"])
def test_schema_check_catches_mistakes(schemas, mutate, error) -> None:
    """The check above can fail: typical mistakes in a WasmPlugin are reported."""
    doc = copy.deepcopy(manifest("egress-guard-http.yaml"))
    mutate(doc)
    errors = validate_spec(doc, schemas)
    assert errors and error in "\n".join(errors), errors


def test_envoy_filter_schema_check_catches_a_misspelt_match(schemas) -> None:
    doc = copy.deepcopy(manifest("egress-guard-network.yaml"))
    doc["spec"]["configPatches"][1]["match"]["listener"]["filterchain"] = {}
    assert any("filterchain" in e for e in validate_spec(doc, schemas))


def test_the_traffic_extension_schema_checks_the_http_plugin_in_its_shape(schemas) -> None:
    """The vendored TrafficExtension schema (Istio 1.30's successor to WasmPlugin, with the Wasm
    fields under `wasm`) is used: the HTTP WasmPlugin in that shape is valid; with a Lua filter
    beside the Wasm one (`wasm` and `lua` are one-of) it is not."""
    plugin = manifest("egress-guard-http.yaml")
    wasm_fields = {"url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginConfig",
                   "pluginName", "failStrategy", "type", "verificationKey", "vmConfig"}
    spec = {k: v for k, v in plugin["spec"].items() if k not in wasm_fields}
    spec["wasm"] = {k: v for k, v in plugin["spec"].items() if k in wasm_fields}
    extension = {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "TrafficExtension",
                 "metadata": plugin["metadata"], "spec": spec}
    assert validate_spec(extension, schemas) == []
    extension["spec"]["lua"] = {"inlineCode": "function envoy_on_request(handle) end"}
    assert validate_spec(extension, schemas) != []


def test_istio_resources_in_the_docs_match_the_schemas(schemas) -> None:
    """The ServiceEntry and Sidecar examples in docs/*.md are valid resources too."""
    checked = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for text in re.findall(r"^```yaml\n(.*?)^```", doc.read_text(), re.S | re.M):
            for resource in yaml.safe_load_all(text):
                if "istio.io/" in str((resource or {}).get("apiVersion", "")):
                    assert validate_spec(resource, schemas) == [], (doc.name, resource)
                    checked.append(resource["kind"])
    assert sorted(set(checked)) == ["ServiceEntry", "Sidecar"], checked


# The IstioOperator `spec` fields istioctl reads since Istio 1.24 (operator/pkg/apis/types.go).
ISTIO_OPERATOR_SPEC = {"profile", "installPackagePath", "hub", "tag", "namespace", "revision",
                       "compatibilityVersion", "meshConfig", "components", "values",
                       "unvalidatedValues"}
# The part of MeshConfig (istio.mesh.v1alpha1: outbound_traffic_policy, default_config, and in
# ProxyConfig extra_stat_tags) the settings use, closed like the CRD schemas.
MESH_CONFIG_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "outboundTrafficPolicy": {"type": "object", "additionalProperties": False, "properties": {
        "mode": {"enum": ["REGISTRY_ONLY", "ALLOW_ANY"]}}},
    "defaultConfig": {"type": "object", "additionalProperties": False, "properties": {
        "extraStatTags": {"type": "array", "items": {"type": "string"}}}},
}}


def mesh_config_forms() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the IstioOperator, the Helm values) of examples/istio/mesh-config/."""
    (operator,) = documents(MESH_CONFIG_DIR / "istio-operator.yaml")
    return operator, yaml.safe_load((MESH_CONFIG_DIR / "helm-values.yaml").read_text())


def mesh_config_errors(operator: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """What istioctl (1.24+) or the istiod chart would not take, and any difference between
    the two forms."""
    import jsonschema

    errors = []
    if schema_key(operator) != OPERATOR:
        errors.append(f"not an IstioOperator: {schema_key(operator)}")
    errors += [f"IstioOperator spec.{k}: not an IstioOperator field"
               for k in sorted(set(operator.get("spec") or {}) - ISTIO_OPERATOR_SPEC)]
    errors += [f"Helm values {k}: only meshConfig and global belong here"
               for k in sorted(set(values) - {"meshConfig", "global"})]
    operator_global = ((operator.get("spec") or {}).get("values") or {}).get("global")
    if operator_global != values.get("global"):
        errors.append("the IstioOperator and the Helm values set different global values")
    validator = jsonschema.Draft7Validator(MESH_CONFIG_SCHEMA)
    for where, mesh in (("IstioOperator spec.meshConfig", (operator.get("spec") or {}).get(
            "meshConfig")), ("Helm values meshConfig", values.get("meshConfig"))):
        errors += [f"{where}.{'.'.join(map(str, e.absolute_path))}: {e.message}"
                   for e in validator.iter_errors(mesh)]
    if (operator.get("spec") or {}).get("meshConfig") != values.get("meshConfig"):
        errors.append("the IstioOperator and the Helm values set different meshConfig")
    return errors


def test_mesh_config_is_in_forms_istioctl_and_helm_take(schemas) -> None:
    assert mesh_config_errors(*mesh_config_forms()) == []


@pytest.mark.parametrize("mutate, error", [
    (lambda op, v: op["spec"].__setitem__("meshconfig", {}), "spec.meshconfig"),
    (lambda op, v: v["meshConfig"]["outboundTrafficPolicy"].__setitem__("mode", "ALLOW_ALL"),
     "Helm values meshConfig.outboundTrafficPolicy.mode"),
    (lambda op, v: v.__setitem__("spec", {"meshConfig": {}}), "Helm values spec"),
    (lambda op, v: op["spec"]["meshConfig"]["defaultConfig"].__setitem__("extraStatTag", []),
     "extraStatTag"),
], ids=["operator_unknown_field", "bad_mode", "operator_pasted_into_values", "misspelt_tags"])
def test_mesh_config_check_catches_mistakes(schemas, mutate, error) -> None:
    operator, values = mesh_config_forms()
    mutate(operator, values)
    errors = mesh_config_errors(operator, values)
    assert errors and error in "\n".join(errors), errors


def test_mesh_config_turns_on_the_stat_tags_the_envoy_configs_use() -> None:
    operator, values = mesh_config_forms()
    mesh = operator["spec"]["meshConfig"]
    assert mesh == values["meshConfig"]
    assert mesh["outboundTrafficPolicy"] == {"mode": "ALLOW_ANY"}
    assert mesh["defaultConfig"]["extraStatTags"] == TAGS
    # Istio turns each extra tag into exactly the stats_tags our Envoy configs carry.
    istio_tags = [{"tag_name": t, "regex": f"({t}=\\.=(.*?);\\.;)"} for t in TAGS]
    for config in ENVOY_DIR.glob("*.yaml"):
        assert shipped(config.name)["stats_config"]["stats_tags"] == istio_tags, config.name


def test_mesh_config_shows_decision_logs_at_the_sidecars_log_level() -> None:
    """Istio's injector passes --proxyComponentLogLevel from global.proxy.componentLogLevel
    (default misc:error, the proxy at warning); egress-guard logs decisions at info."""
    operator, values = mesh_config_forms()
    for levels in (values["global"]["proxy"]["componentLogLevel"],
                   operator["spec"]["values"]["global"]["proxy"]["componentLogLevel"]):
        parsed = dict(part.split(":") for part in levels.split(","))
        assert parsed.get("wasm") in ("info", "debug", "trace"), levels
    assert "sidecar.istio.io/componentLogLevel" in (REPO / "docs" / "istio.md").read_text()


def test_mesh_config_is_installed_with_istioctl_or_helm_never_kubectl() -> None:
    """Every command that names a mesh-config file, in the docs and the files' own comments,
    is `istioctl install` (the IstioOperator) or `helm upgrade|install` (the values)."""
    texts = {"docs/istio.md": (REPO / "docs" / "istio.md").read_text()}
    texts.update({p.name: p.read_text() for p in MESH_CONFIG_DIR.iterdir()})
    commands = []
    for where, text in texts.items():
        text = re.sub(r"\\\n#?\s*", " ", text)   # join continued lines
        for line in text.splitlines():
            line = line.lstrip("# ").strip()
            if "mesh-config/" in line and re.match(r"(kubectl|istioctl|helm)\b", line):
                commands.append((where, line))
    tools = {}
    for where, line in commands:
        target = "istio-operator.yaml" if "istio-operator.yaml" in line else "helm-values.yaml"
        tool = " ".join(line.split()[:2])
        assert (target, tool) in {("istio-operator.yaml", "istioctl install"),
                                  ("helm-values.yaml", "helm upgrade"),
                                  ("helm-values.yaml", "helm install")}, (where, line)
        tools.setdefault(where, set()).add(tool)
    assert tools["docs/istio.md"] >= {"istioctl install", "helm upgrade"}, commands
    assert tools["istio-operator.yaml"] == {"istioctl install"}, commands
    assert tools["helm-values.yaml"] == {"helm upgrade"}, commands


@pytest.mark.parametrize("proxy, selected", [
    (SIDECAR, True), (INGRESS_GATEWAY, False), (GATEWAY_API_GATEWAY, False),
], ids=["sidecar", "ingress_gateway", "gateway_api_gateway"])
def test_the_wasm_plugin_is_for_sidecars_not_gateways(proxy, selected) -> None:
    """Istio gives a gateway's listeners the CLIENT mode, so `mode: CLIENT` alone would put the
    egress filter on every ingress gateway; the selector keeps it to injected sidecars."""
    plugin = manifest("egress-guard-http.yaml")
    assert wasm_plugin_selects(plugin, proxy) is selected
    without_selector = copy.deepcopy(plugin)
    del without_selector["spec"]["selector"]
    assert wasm_plugin_selects(without_selector, proxy), "the check must be able to fail"


def test_the_envoy_filters_are_for_sidecars_not_gateways() -> None:
    """EnvoyFilters patch gateways in context GATEWAY (or ANY); ours patch SIDECAR_OUTBOUND."""
    for name in ("egress-guard-network.yaml", "egress-guard-network-pinned.yaml",
                 "egress-guard-http-passthrough-only.yaml"):
        contexts = {cp["match"]["context"] for cp in manifest(name)["spec"]["configPatches"]
                    if cp["applyTo"] != "EXTENSION_CONFIG"}
        assert contexts == {"SIDECAR_OUTBOUND"}, (name, contexts)


# The first Istio release whose CRD has each field and enum value of a WasmPlugin, EnvoyFilter
# and TrafficExtension spec: data/istio-field-releases.json, derived from istio/api's
# kubernetes/customresourcedefinitions.gen.yaml at every release tag from 1.8.0 and at master
# (scripts/istio-field-releases.py; "unreleased" for what only master has). An EnvoyFilter's
# `patch.value` and a plugin's `pluginConfig` are free-form: their contents are Envoy's and
# egress-guard's, not the CRD's.
FIELD_RELEASES = SCHEMA_DIR / "istio-field-releases.json"
# The releases from which istio-agent pulls the module of an ECDS Wasm filter (pkg/wasm/convert.go:
# HTTP filters since before WasmPlugin existed, network filters since 1.20): what an EnvoyFilter
# needs beyond its fields.
ECDS_WASM_PULL_SINCE = {HTTP_WASM: (1, 12), NETWORK_WASM: (1, 20)}
# Envoy fields in an EnvoyFilter's patch values that istiod must know (it parses the values into
# go-control-plane's protos) and the proxy must have: tcp_proxy's max_early_data_bytes is Envoy
# 1.37's, which Istio ships from 1.29 (istio/istio#58764 moved release-1.29's go-control-plane
# to 1.37).
ENVOY_FIELD_SINCE = {"max_early_data_bytes": (1, 29)}
# TrafficExtension is new in Istio 1.30 (crd-all.gen.yaml has no TrafficExtension at the 1.29.0
# tag and has it, with every field, at 1.30.0).
TRAFFIC_EXTENSION_SINCE = (1, 30)


def field_releases() -> dict[str, dict[str, str]]:
    """``group/version/Kind`` -> field path (``a.b[].c``, or ``a.b=VALUE`` for an enum value)
    -> the first release that has it (``"1.N"`` or ``"unreleased"``)."""
    table = json.loads(FIELD_RELEASES.read_text())
    return {k: v for k, v in table.items() if not k.startswith("_")}


def schema_fields(schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Every field path and enum value a CRD's spec schema has (the script's reading)."""
    out = {f"{prefix}={value}" for value in schema.get("enum") or []}
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out |= {path} | schema_fields(sub, path)
    if isinstance(schema.get("items"), dict):
        out |= schema_fields(schema["items"], prefix + "[]")
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key) or []:
            out |= schema_fields(sub, prefix)
    return out


def used_fields(value: Any, schema: dict[str, Any], prefix: str = "") -> set[str]:
    """The field paths (and enum values) a manifest's spec uses, as :func:`schema_fields` names
    them. A key the schema does not list is named anyway (the schema test reports it); nothing
    below a free-form field or in a map (``selector.matchLabels``) is."""
    out: set[str] = set()
    if isinstance(value, dict) and schema.get("properties"):
        for key, sub_value in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            sub = (schema.get("properties") or {}).get(key)
            if sub is not None:
                out |= used_fields(sub_value, sub, path)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            out |= used_fields(item, schema["items"], prefix + "[]")
    elif isinstance(value, str) and schema.get("enum"):
        out.add(f"{prefix}={value}")
    return out


def _release(text: str) -> tuple[int, int]:
    if text == "unreleased":
        return (1, 10**6)
    major, minor = text.split(".")
    return int(major), int(minor)


def required_istio(doc: dict[str, Any]) -> tuple[int, int]:
    """The oldest Istio release that has every field the manifest uses (raises KeyError for a
    field with no known release) and, for an EnvoyFilter, pulls its modules."""
    key = schema_key(doc)
    releases = field_releases()[key]
    fields = used_fields(doc["spec"], load_schemas()[key]["properties"]["spec"])
    need = max(_release(releases[f]) for f in fields)
    if doc["kind"] == "EnvoyFilter":
        need = max([need] + [ECDS_WASM_PULL_SINCE[cp["patch"]["value"]["typed_config"]["@type"]]
                             for cp in doc["spec"]["configPatches"]
                             if cp["applyTo"] == "EXTENSION_CONFIG"])
        values = json.dumps([cp["patch"].get("value") for cp in doc["spec"]["configPatches"]])
        need = max([need] + [since for field, since in ENVOY_FIELD_SINCE.items()
                             if f'"{field}"' in values])
    return need


def stated_istio(text: str) -> tuple[int, int]:
    """The `Istio >= X.Y` in a manifest's opening comment."""
    header = text[:text.index("\napiVersion:")]
    (found,) = set(re.findall(r"Istio >= (\d+)\.(\d+)", header.replace("\n# ", " ")))
    return int(found[0]), int(found[1])


def docs_istio_floors() -> dict[str, tuple[int, int]]:
    """The "Istio versions" table of docs/istio.md: file -> release."""
    text = (REPO / "docs" / "istio.md").read_text()
    section = text[text.index("## Istio versions"):]
    section = section[:section.index("\n## ")]
    return {name: (int(major), int(minor)) for name, major, minor in
            re.findall(r"^\| `([\w.-]+\.yaml)` \| (\d+)\.(\d+) \|", section, re.M)}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_stated_istio_release_has_what_the_manifest_uses(path: Path) -> None:
    stated = stated_istio(path.read_text())
    (doc,) = documents(path)
    assert stated >= required_istio(doc), (path.name, stated, required_istio(doc))
    assert docs_istio_floors()[path.name] == stated, path.name


def test_the_field_releases_are_the_schemas_fields() -> None:
    """The release table names exactly the fields and enum values of the vendored schemas of the
    kinds it covers (the schemas are istio/api master's, as is the table's last column)."""
    schemas, table = load_schemas(), field_releases()
    assert sorted(table) == sorted(k for k in schemas if k.rsplit("/", 1)[1] in (
        "WasmPlugin", "EnvoyFilter", "TrafficExtension")), sorted(table)
    for key, releases in table.items():
        assert set(releases) == schema_fields(schemas[key]["properties"]["spec"]), key
        assert all(re.fullmatch(r"1\.\d+|unreleased", r) for r in releases.values()), key
    # TrafficExtension is new in 1.30, every field at once.
    assert set(table[TRAFFIC_EXTENSION].values()) == {"1.30"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_field_a_manifest_uses_has_a_known_release(path: Path) -> None:
    for doc in documents(path):
        key = schema_key(doc)
        fields = used_fields(doc["spec"], load_schemas()[key]["properties"]["spec"])
        assert fields and fields <= set(field_releases()[key]), sorted(
            fields - set(field_releases()[key]))


def test_the_istio_release_check_can_fail() -> None:
    plugin = manifest("egress-guard-http.yaml")
    assert required_istio(plugin) == (1, 20)  # `type`
    plugin["spec"]["failStrategy"] = "FAIL_RELOAD"
    assert required_istio(plugin) == (1, 27)   # an enum value newer than its field (1.19)
    plugin["spec"]["targetRefs"] = [WAYPOINT_REF]
    assert required_istio(plugin) == (1, 27)
    plugin["spec"]["targetRef"] = WAYPOINT_REF   # no later than targetRefs
    del plugin["spec"]["targetRefs"]
    assert required_istio(plugin) == (1, 27)
    plugin["spec"]["vmConfig"] = {"env": [{"name": "A", "valueFrom": "HOST"}]}
    assert required_istio(plugin) == (1, 27)
    filters = manifest("egress-guard-http-passthrough-only.yaml")
    filters["spec"]["configPatches"][0]["patch"]["operation"] = "MERGE_AND_REPLACE_LIST"
    assert required_istio(filters) == (1, 10**6)   # in no release yet
    misspelt = manifest("egress-guard-http.yaml")
    misspelt["spec"]["pluginconfig"] = {}
    with pytest.raises(KeyError):
        required_istio(misspelt)
    assert stated_istio("# a filter (Istio >= 1.12).\n#\napiVersion: v1\n") == (1, 12)
    assert required_istio(manifest("egress-guard-network.yaml")) == (1, 20)
    assert required_istio(manifest(PINNED)) == (1, 29)      # tcp_proxy max_early_data_bytes
    extension = manifest("egress-guard-trafficext-http.yaml")
    assert required_istio(extension) == (1, 30)
    assert not stated_istio("# (Istio >= 1.29)\napiVersion: v1\n") >= required_istio(extension)


def _policies() -> dict[str, Any]:
    found = {}
    for name in ("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml"):
        for cp in manifest(name)["spec"]["configPatches"]:
            if cp["applyTo"] == "EXTENSION_CONFIG":
                config = cp["patch"]["value"]["typed_config"]["config"]
                found[name] = json.loads(config["configuration"]["value"])
    found["egress-guard-http.yaml"] = manifest("egress-guard-http.yaml")["spec"]["pluginConfig"]
    return found


def test_every_manifest_carries_the_same_policy() -> None:
    policies = _policies()
    assert len(policies) == 3
    first = policies["egress-guard-network.yaml"]
    assert all(p == first for p in policies.values()), policies
    assert first["mode"] == "allowlist"


def pinned_policy() -> dict[str, Any]:
    (cp,) = [cp for cp in manifest(PINNED)["spec"]["configPatches"]
             if cp["applyTo"] == "EXTENSION_CONFIG"]
    return json.loads(cp["patch"]["value"]["typed_config"]["config"]["configuration"]["value"])


def test_the_pinned_manifest_carries_the_same_policy_pinned() -> None:
    """The pinned variant's policy is the others' with "pin": true and the hold it needs."""
    policy = pinned_policy()
    assert policy == {**_policies()["egress-guard-network.yaml"], "pin": True,
                      "sniff": {"hold_upstream": True}}
    assert policy == json.loads((REPO / "examples" / "policies" /
                                 "istio-mesh-pinned.json").read_text())


def test_every_manifest_uses_the_same_image_and_fails_closed() -> None:
    urls, policies = set(), set()
    for name in ("egress-guard-network.yaml", "egress-guard-network-pinned.yaml",
                 "egress-guard-http-passthrough-only.yaml"):
        for cp in manifest(name)["spec"]["configPatches"]:
            if cp["applyTo"] == "EXTENSION_CONFIG":
                config = cp["patch"]["value"]["typed_config"]["config"]
                urls.add(config["vm_config"]["code"]["remote"]["http_uri"]["uri"])
                policies.add(config["failure_policy"])
    plugin = manifest("egress-guard-http.yaml")["spec"]
    urls.add(plugin["url"])
    assert len(urls) == 1 and urls.pop().startswith("oci://")
    assert policies == {"FAIL_CLOSED"} and plugin["failStrategy"] == "FAIL_CLOSE"


# --------------------------------------------------------------------------------------------
# TrafficExtensions (Istio 1.30+)
# --------------------------------------------------------------------------------------------
#
# Checked as resources here: istiod's placement of them (selector/targetRefs, match mode) is
# ported in istio.traffic_extension_chains. The last two sections splice them into a sidecar
# (the hybrid) and a waypoint-shaped Envoy and run them.

# file -> the Wasm filter type. Sidecar variants are selected by label and match CLIENT; the
# waypoint variants target the egress waypoint's Gateway.
SIDECAR_EXTENSIONS = {"egress-guard-trafficext-network.yaml": "NETWORK",
                      "egress-guard-trafficext-http.yaml": "HTTP"}
WAYPOINT_EXTENSIONS = {"egress-guard-waypoint-network.yaml": "NETWORK",
                       "egress-guard-waypoint-http.yaml": "HTTP"}
TRAFFIC_EXTENSIONS = {**SIDECAR_EXTENSIONS, **WAYPOINT_EXTENSIONS}
WAYPOINT_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "egress-waypoint"}
# The fields that moved under `wasm` from a WasmPlugin's top level.
WASM_FIELDS = {"url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginConfig",
               "pluginName", "failStrategy", "type", "verificationKey", "vmConfig"}


def test_every_traffic_extension_manifest_is_listed() -> None:
    found = {p.name for p in MANIFESTS if schema_key(manifest(p.name)) == TRAFFIC_EXTENSION}
    assert found == set(TRAFFIC_EXTENSIONS), found


@pytest.mark.parametrize("name", TRAFFIC_EXTENSIONS)
def test_traffic_extension_matches_its_schema(name: str, schemas) -> None:
    """Against the vendored TrafficExtension schema (test_vendored_schemas_are_the_shared_ones
    keeps it equal to shared/data's), and the CRD's CEL rules, which the schema check skips."""
    doc = manifest(name)
    assert schema_key(doc) == TRAFFIC_EXTENSION
    assert validate_spec(doc, schemas) == []
    assert traffic_extension_cel_errors(doc) == []


@pytest.mark.parametrize("mutate, error", [
    # A WasmPlugin's layout: failStrategy and type at the top level, not under `wasm`.
    (lambda s: s.__setitem__("failStrategy", s["wasm"].pop("failStrategy")), "failStrategy"),
    (lambda s: s.__setitem__("type", s["wasm"].pop("type")), "type"),
    (lambda s: s["wasm"].__setitem__("failStrategy", "FAIL_CLOSED"), "failStrategy"),
    (lambda s: s["match"][0].__setitem__("mode", "OUTBOUND"), "mode"),
    (lambda s: s.__setitem__("targetRefs", [WAYPOINT_REF]), "only one of targetRefs or selector"),
    (lambda s: s.__setitem__("lua", {"inlineCode": "function envoy_on_request(h) end"}), "lua"),
], ids=["top_level_fail_strategy", "top_level_type", "wasmplugin_spelling", "bad_mode",
        "selector_and_target_refs", "wasm_and_lua"])
def test_traffic_extension_checks_catch_mistakes(schemas, mutate, error) -> None:
    doc = copy.deepcopy(manifest("egress-guard-trafficext-http.yaml"))
    mutate(doc["spec"])
    errors = validate_spec(doc, schemas) + traffic_extension_cel_errors(doc)
    assert errors and error in "\n".join(errors), errors


def test_the_traffic_extensions_fail_closed_with_the_wasm_fields_under_wasm() -> None:
    plugin = manifest("egress-guard-http.yaml")["spec"]
    for name, kind in TRAFFIC_EXTENSIONS.items():
        spec = manifest(name)["spec"]
        assert not WASM_FIELDS & set(spec), name
        wasm = spec["wasm"]
        assert wasm["type"] == kind and wasm["failStrategy"] == "FAIL_CLOSE", name
        assert {k: wasm[k] for k in ("url", "imagePullPolicy", "pluginName")} == {
            k: plugin[k] for k in ("url", "imagePullPolicy", "pluginName")}, name
        assert spec["phase"] == plugin["phase"], name


@pytest.mark.parametrize("name", SIDECAR_EXTENSIONS)
def test_sidecar_traffic_extensions_select_sidecars_and_match_client(name: str) -> None:
    """A selector (the WasmPlugin's), no targetRefs (a sidecar ignores an extension that has
    any), and `mode: CLIENT` (without it, inbound chains too)."""
    spec = manifest(name)["spec"]
    assert spec["selector"] == manifest("egress-guard-http.yaml")["spec"]["selector"]
    assert "targetRefs" not in spec
    assert spec["match"] == [{"mode": "CLIENT"}]


@pytest.mark.parametrize("name", WAYPOINT_EXTENSIONS)
def test_waypoint_traffic_extensions_target_the_egress_waypoint(name: str) -> None:
    """targetRefs to the waypoint Gateway, from its namespace; no selector, no CLIENT match (a
    waypoint's chains are SERVER: it would match nothing)."""
    doc = manifest(name)
    assert doc["spec"]["targetRefs"] == [WAYPOINT_REF]
    assert doc["metadata"]["namespace"] == WAYPOINT.namespace
    assert "selector" not in doc["spec"]
    assert all(m.get("mode") != "CLIENT" for m in doc["spec"].get("match") or [])


@pytest.mark.parametrize("name, proxy, chains", [
    *[(n, SIDECAR, {"outbound"}) for n in SIDECAR_EXTENSIONS],
    *[(n, p, set()) for n in SIDECAR_EXTENSIONS for p in (INGRESS_GATEWAY, GATEWAY_API_GATEWAY,
                                                          WAYPOINT)],
    *[(n, WAYPOINT, {"waypoint"}) for n in WAYPOINT_EXTENSIONS],
    *[(n, p, set()) for n in WAYPOINT_EXTENSIONS for p in (SIDECAR, INGRESS_GATEWAY,
                                                           GATEWAY_API_GATEWAY)],
])
def test_where_istiod_puts_the_traffic_extensions(name, proxy, chains) -> None:
    """With istiod's rules (istio.traffic_extension_chains): sidecar variants on sidecars'
    outbound chains only, waypoint variants on the egress waypoint only."""
    assert traffic_extension_chains(manifest(name), proxy) == chains


def test_the_placement_check_can_fail() -> None:
    """What the invariants above prevent: no CLIENT match puts the sidecar variant on inbound
    chains too; a targetRef makes sidecars ignore it; a CLIENT match puts the waypoint variant
    on no chain; without the selector, Gateway API gateways get it."""
    sidecar = manifest("egress-guard-trafficext-http.yaml")
    no_match = copy.deepcopy(sidecar)
    del no_match["spec"]["match"]
    assert traffic_extension_chains(no_match, SIDECAR) == {"outbound", "inbound"}
    targeted = copy.deepcopy(sidecar)
    del targeted["spec"]["selector"]
    targeted["spec"]["targetRefs"] = [WAYPOINT_REF]
    assert traffic_extension_chains(targeted, SIDECAR) == set()
    no_selector = copy.deepcopy(sidecar)
    del no_selector["spec"]["selector"]
    assert traffic_extension_chains(no_selector, GATEWAY_API_GATEWAY) == {"gateway"}
    waypoint = copy.deepcopy(manifest("egress-guard-waypoint-http.yaml"))
    waypoint["spec"]["match"] = [{"mode": "CLIENT"}]
    assert traffic_extension_chains(waypoint, WAYPOINT) == set()
    elsewhere = copy.deepcopy(manifest("egress-guard-waypoint-http.yaml"))
    elsewhere["metadata"]["namespace"] = "istio-system"
    assert traffic_extension_chains(elsewhere, WAYPOINT) == set()


def _cidr_rules_removed(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy without its IP rules, as `render` makes it (src/bin/egress-guard/by_name.rs):
    a rule with CIDRs keeps its hosts if it has any and is dropped if not; a list emptied so
    is dropped."""
    out = copy.deepcopy(policy)
    for key in ("allow", "deny"):
        if not out.get(key):
            continue
        kept = []
        for rule in out[key]:
            if rule.get("cidrs") and rule.get("hosts"):
                kept.append({k: v for k, v in rule.items() if k != "cidrs"})
            elif not rule.get("cidrs"):
                kept.append(rule)
        out[key] = kept
        if not kept:
            del out[key]
    return out


def test_the_traffic_extensions_carry_the_mesh_policy() -> None:
    """Sidecar variants: exactly the WasmPlugin's pluginConfig (which the other manifests
    carry too: test_every_manifest_carries_the_same_policy). Waypoint variants: the same
    policy with its CIDR rules taken out -- rules by name only, as the waypoint sees the
    ServiceEntry's address, not the real one -- and nothing else changed."""
    mesh = manifest("egress-guard-http.yaml")["spec"]["pluginConfig"]
    for name in SIDECAR_EXTENSIONS:
        assert manifest(name)["spec"]["wasm"]["pluginConfig"] == mesh, name
    by_name = _cidr_rules_removed(mesh)
    assert by_name != mesh and by_name["allow"], by_name
    for name in WAYPOINT_EXTENSIONS:
        policy = manifest(name)["spec"]["wasm"]["pluginConfig"]
        assert policy == by_name, name
        assert "cidrs" not in json.dumps(policy), name


def test_the_traffic_extensions_state_istio_1_30() -> None:
    """TrafficExtension is new in Istio 1.30: each file's header says so, and so does the
    docs' table (the general version-floor test checks the header against required_istio)."""
    for name in TRAFFIC_EXTENSIONS:
        stated = stated_istio((ISTIO_DIR / name).read_text())
        assert stated == required_istio(manifest(name)) == (1, 30), name
        assert docs_istio_floors()[name] == (1, 30), name


# --------------------------------------------------------------------------------------------
# Spliced into an Istio-shaped sidecar
# --------------------------------------------------------------------------------------------


def istio_generated() -> dict[str, Any]:
    """envoy/istio-sidecar-outbound.yaml without egress-guard, and without the
    ``max_early_data_bytes`` it gives its tcp_proxies: what istiod generates."""
    bootstrap = strip_filters(shipped("istio-sidecar-outbound.yaml"), "egress-guard")
    for lst in bootstrap["static_resources"]["listeners"]:
        for fc in [*lst.get("filter_chains", []), lst.get("default_filter_chain") or {}]:
            for f in fc.get("filters", []):
                f.get("typed_config", {}).pop("max_early_data_bytes", None)
    return bootstrap


def splice(*manifests: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    bootstrap = istio_generated()
    extensions, applied = [], []
    for name in manifests:
        doc = manifest(name)
        if doc["kind"] == "TrafficExtension":
            more, where = apply_traffic_extension(bootstrap, doc, SIDECAR)
        elif doc["kind"] == "WasmPlugin":
            more, where = apply_wasm_plugin(bootstrap, doc)
        else:
            more, where = apply_envoy_filter(bootstrap, doc)
        extensions += more
        applied += where
    return bootstrap, extensions, applied


def test_patches_land_exactly_where_the_shipped_istio_config_has_egress_guard() -> None:
    bootstrap, _, applied = splice("egress-guard-network.yaml", "egress-guard-http.yaml")
    assert sorted(applied) == [
        "EXTENSION_CONFIG -> egress-guard",
        "HTTP_FILTER -> 0.0.0.0_80/None",
        "NETWORK_FILTER -> 0.0.0.0_443/PassthroughFilterChain",
        "NETWORK_FILTER -> 0.0.0.0_80/PassthroughFilterChain",
        "NETWORK_FILTER -> virtualOutbound/virtualOutbound-catchall-tcp",
    ]
    expected = {key: [n.replace("[egress-guard,", "[istio-system.egress-guard-http,")
                      for n in names]
                for key, names in filter_names(shipped("istio-sidecar-outbound.yaml")).items()}
    assert filter_names(bootstrap) == expected


def test_passthrough_only_http_patch_lands_on_allow_any() -> None:
    bootstrap, _, applied = splice("egress-guard-http-passthrough-only.yaml")
    assert sorted(applied) == ["EXTENSION_CONFIG -> egress-guard-http",
                               "HTTP_FILTER -> 0.0.0.0_80/None",
                               "VIRTUAL_HOST -> 80/allow_any"]
    (hcm,) = [f["typed_config"] for lst in bootstrap["static_resources"]["listeners"]
              for fc in lst.get("filter_chains", []) for f in fc["filters"]
              if "http_filters" in f.get("typed_config", {})]
    assert [(h["name"], h.get("disabled")) for h in hcm["http_filters"]] == [
        ("egress-guard-http", True), ("envoy.filters.http.router", None)]


@pytest.mark.parametrize("manifests", [
    ("egress-guard-network.yaml", "egress-guard-http.yaml"),
    ("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml"),
    (PINNED, "egress-guard-http.yaml"),
], ids=["wasmplugin", "passthrough_only", "pinned"])
def test_spliced_config_validates(manifests, envoy_cmd, wasm_path: Path, tmp: Path) -> None:
    bootstrap, extensions, _ = splice(*manifests)
    serve_extension_configs(bootstrap, extensions, wasm_path, tmp / "ecds")
    ok, output = Envoy.validate(bootstrap, tmp, envoy_cmd=envoy_cmd)
    assert ok, output


MESH_VHOST = {  # a mesh service's virtual host, as istiod adds one per HTTP service on port 80
    "name": "reviews.default.svc.cluster.local:80",
    "domains": ["reviews.default.svc.cluster.local", "reviews"],
    "routes": [{"match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": "mesh reviews"}}}],
}


@pytest.fixture
def spliced_sidecar(netns: NetNS, start_envoy: Callable[..., Envoy], wasm_path: Path,
                    tmp: Path) -> Callable[..., Envoy]:
    """Start the spliced sidecar in ``netns`` as uid 1337 with the REDIRECT rules.

    ``pull_fails=True`` serves istio-agent's stand-in for a module it could not pull instead of
    the module; ``edit(bootstrap, extensions)`` changes the spliced config first. The ECDS files
    are in ``tmp / "ecds"`` (see :func:`ecds_update`).
    """
    def start(*manifests: str, pull_fails: bool = False,
              edit: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None
              ) -> Envoy:
        bootstrap, extensions, _ = splice(*manifests)
        if edit is not None:
            edit(bootstrap, extensions)
        for _, _, hcm in hcms(bootstrap):
            hcm["route_config"]["virtual_hosts"].insert(0, copy.deepcopy(MESH_VHOST))
        serve_extension_configs(bootstrap, extensions, wasm_path, tmp / "ecds",
                                pull_fails=pull_fails)
        envoy = start_envoy(bootstrap, netns=netns, uid=PROXY_UID)
        netns.install_redirect(OUTBOUND_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                               intercept_loopback=True)  # the stand-ins are on 127.0.0.x
        return envoy
    return start



def test_spliced_sidecar_with_the_example_policy(spliced_sidecar, serve, netns, cert) -> None:
    """The manifests as shipped, policy included: GitHub passes on 443 (tls_inspector on
    0.0.0.0_443), other names are stopped there and on the catch-all (egress-guard's own
    ClientHello parse), plain HTTP is answered 403 by the WasmPlugin's filter."""
    envoy = spliced_sidecar("egress-guard-network.yaml", "egress-guard-http.yaml")
    github = serve(tls_server(netns, cert, "127.0.0.50"))
    evil = serve(tls_server(netns, cert, "127.0.0.51"))
    other_port = serve(tls_server(netns, cert, "127.0.0.52", 8443))
    debian = serve(HttpServer("127.0.0.53", 80, netns, label="deb"))

    assert tls_client("127.0.0.50", 443, "api.github.com", netns=netns).received == b"ping"
    assert tls_client("127.0.0.51", 443, "evil.example.com", netns=netns).received == b""
    assert tls_client("127.0.0.52", 8443, "api.github.com", netns=netns).received == b""
    ok = http_request("127.0.0.53", 80, get("deb.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    denied = http_request("127.0.0.53", 80, get("evil.example.com"), netns=netns)
    assert denied.status == 403 and denied.headers["x-egress-guard"] == "denied", denied
    # The WasmPlugin is in every outbound HTTP connection manager: a mesh service's request
    # is checked too, and this one's destination is not in the example's in-cluster CIDRs.
    mesh = http_request("127.0.0.54", 80, get("reviews"), netns=netns)
    assert mesh.status == 403, mesh

    assert github.snis == ["api.github.com"] and debian.hosts == ["deb.debian.org"]
    assert all(data == b"" for s in (evil, other_port) for data in s.received)
    assert sniffed(envoy, "inspector_sni") == 2
    assert all_decisions(envoy) == {("allow", "rule"): 2, ("deny", "no_match"): 4}
    log = {(e["dst"], e["filter"]): e for e in decision_log(envoy, 4)}
    # No host rule of the example policy applies to port 8443: decided at open, unread.
    assert log[("127.0.0.52:8443", "network")]["name_source"] == "none"
    assert log[("127.0.0.53:80", "http")]["name"] == "evil.example.com"
    assert envoy.counter("extension_config_discovery.network_filter.egress-guard"
                         ".update_success") == 1


def test_spliced_passthrough_only_http_leaves_mesh_services_alone(spliced_sidecar, serve,
                                                                  netns) -> None:
    envoy = spliced_sidecar("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml")
    debian = serve(HttpServer("127.0.0.55", 80, netns, label="deb"))

    mesh = http_request("127.0.0.54", 80, get("reviews"), netns=netns)
    assert mesh.status == 200 and mesh.body == b"mesh reviews", mesh
    ok = http_request("127.0.0.55", 80, get("deb.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    denied = http_request("127.0.0.55", 80, get("evil.example.com"), netns=netns)
    assert denied.status == 403, denied

    assert debian.hosts == ["deb.debian.org"]
    assert all_decisions(envoy) == {("allow", "rule"): 1, ("deny", "no_match"): 1}
    assert envoy.counter("extension_config_discovery.http_filter.egress-guard-http"
                         ".update_success") == 1


# --------------------------------------------------------------------------------------------
# Pinned (egress-guard-network-pinned.yaml)
# --------------------------------------------------------------------------------------------

PASSTHROUGH_CHAINS = [("0.0.0.0_443", "PassthroughFilterChain"),
                      ("0.0.0.0_80", "PassthroughFilterChain"),
                      ("virtualOutbound", "virtualOutbound-catchall-tcp")]
PINNED_FILTERS = ["egress-guard", "envoy.filters.network.sni_dynamic_forward_proxy",
                  "envoy.filters.network.tcp_proxy"]


def test_the_pinned_patches_land_where_the_pinned_sidecar_has_its_filters() -> None:
    """On the chains egress-guard-network.yaml patches: egress-guard, then
    sni_dynamic_forward_proxy, then Istio's tcp_proxy, merged with max_early_data_bytes (which
    istiod's own lacks); the dynamic forward proxy cluster added, sharing the filter's DNS
    cache; nothing else touched (the ServiceEntry's chain, the blackhole, the HTTP chain)."""
    before = istio_generated()
    bootstrap, extensions, applied = splice(PINNED)
    assert sorted(applied) == sorted(
        ["EXTENSION_CONFIG -> egress-guard", "CLUSTER -> egress_guard_pinned"]
        + [f"NETWORK_FILTER -> {lst}/{chain}" for lst, chain in PASSTHROUGH_CHAINS for _ in "12"]
        + [f"NETWORK_FILTER MERGE -> {lst}/{chain}/envoy.filters.network.tcp_proxy"
           for lst, chain in PASSTHROUGH_CHAINS])
    names, names_before = filter_names(bootstrap), filter_names(before)
    for key in PASSTHROUGH_CHAINS:
        assert names[key] == PINNED_FILTERS, key
    assert {k: v for k, v in names.items() if k not in PASSTHROUGH_CHAINS} == {
        k: v for k, v in names_before.items() if k not in PASSTHROUGH_CHAINS}
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    dfp = clusters["egress_guard_pinned"]["cluster_type"]
    pinned_sidecar = {c["name"]: c for c in
                      shipped("sidecar-outbound-pinned.yaml")["static_resources"]["clusters"]}
    assert dfp == pinned_sidecar["egress_guard_pinned"]["cluster_type"]
    for lst in bootstrap["static_resources"]["listeners"]:
        for fc in [*lst.get("filter_chains", []), lst.get("default_filter_chain") or {}]:
            key = (lst["name"], fc.get("name"))
            for f in fc.get("filters", []):
                config = f.get("typed_config", {})
                if f["name"] == "envoy.filters.network.tcp_proxy":
                    # Merged, not replaced: Istio's cluster and stat_prefix stay.
                    assert config.get("max_early_data_bytes") == (
                        65536 if key in PASSTHROUGH_CHAINS else None), key
                    assert config["cluster"] and config["stat_prefix"], key
                if f["name"] == "envoy.filters.network.sni_dynamic_forward_proxy":
                    assert config["dns_cache_config"] == dfp["typed_config"]["dns_cache_config"]
    (extension,) = extensions
    assert json.loads(extension["typed_config"]["config"]["configuration"]["value"])["pin"]


def test_the_merge_port_can_fail() -> None:
    """The MERGE emulation matches by filter name: aimed at another filter, nothing merges."""
    doc = copy.deepcopy(manifest(PINNED))
    for cp in doc["spec"]["configPatches"]:
        if cp["patch"]["operation"] == "MERGE":
            cp["match"]["listener"]["filterChain"]["filter"]["name"] = "envoy.filters.network.nope"
    bootstrap = istio_generated()
    _, applied = apply_envoy_filter(bootstrap, doc)
    assert not [a for a in applied if "MERGE" in a]
    assert "max_early_data_bytes" not in json.dumps(bootstrap)


PINNED_NAMES = {"api.github.com": "127.0.0.60", "evil.example.com": "127.0.0.61"}
DECOY = "127.0.0.69"            # the address the client picks: no rule lists it


def pin_count(envoy: Envoy, outcome: str) -> int:
    return envoy.counter(f"wasmcustom.outcome=.={outcome};.;egress_guard_pin_total")


def set_extension_policy(policy: dict[str, Any]) -> Callable[..., None]:
    """An ``edit`` for :func:`spliced_sidecar`: the network filter's policy replaced."""
    def edit(_bootstrap: dict[str, Any], extensions: list[dict[str, Any]]) -> None:
        for ext in extensions:
            if ext["typed_config"]["@type"] == NETWORK_WASM:
                ext["typed_config"]["config"]["configuration"]["value"] = json.dumps(policy)
    return edit


@pytest.mark.usefixtures("early_data")
def test_the_pinned_sidecar_sends_an_allowed_name_only_to_that_name(
        spliced_sidecar, netns_hosts, serve, netns, cert) -> None:
    """The pinned manifest as shipped, policy included, on 443 (0.0.0.0_443's
    PassthroughFilterChain, SNI from tls_inspector): an allowed name sent to an address no rule
    lists reaches the name's own address; that address gets nothing; a denied name is never
    looked up; an in-cluster address (allowed by CIDR) keeps its connection, unpinned."""
    netns_hosts(PINNED_NAMES)
    envoy = spliced_sidecar(PINNED, "egress-guard-http.yaml")
    add_addresses(netns, IN_CLUSTER)
    github = serve(tls_server(netns, cert, PINNED_NAMES["api.github.com"]))
    evil = serve(tls_server(netns, cert, PINNED_NAMES["evil.example.com"]))
    decoy = serve(tls_server(netns, cert, DECOY))
    in_cluster = serve(tls_server(netns, cert, IN_CLUSTER))

    denied = tls_client(DECOY, 443, "evil.example.com", netns=netns)
    assert denied.received == b"" and not denied.handshake_ok, denied
    assert envoy.counter("dns_cache.egress_guard_pinned.dns_query_attempt") == 0
    ok = tls_client(DECOY, 443, "api.github.com", payload=b"card 4242", netns=netns)
    assert ok.received == b"card 4242", ok
    assert tls_client(IN_CLUSTER, 443, "db.cluster.local", netns=netns).received == b"ping"

    assert github.snis == ["api.github.com"] and github.received == [b"card 4242"]
    assert decoy.connections == 0 and evil.connections == 0
    assert in_cluster.snis == ["db.cluster.local"]
    assert sniffed(envoy, "inspector_sni") == 3
    assert pin_count(envoy, "pinned") == 1
    assert envoy.counter("cluster.egress_guard_pinned.upstream_cx_total") == 1
    assert all_decisions(envoy) == {("allow", "rule"): 2, ("deny", "no_match"): 1}


@pytest.mark.usefixtures("early_data")
def test_the_pinned_catch_all_holds_reads_and_pins_at_the_original_port(
        spliced_sidecar, netns_hosts, serve, netns, cert) -> None:
    """virtualOutbound-catchall-tcp has no tls_inspector: egress-guard holds the connection
    (Istio's tcp_proxy with the merged max_early_data_bytes), reads the ClientHello or the Host
    itself and pins it at the original port (8443, 8080); the address the client chose gets
    nothing. The policy is the shipped one with those ports allowed for the name."""
    policy = pinned_policy()
    for rule in policy["allow"]:
        if rule["name"] == "github":
            rule["ports"] = [443, 8080, 8443]
    netns_hosts(PINNED_NAMES)
    envoy = spliced_sidecar(PINNED, "egress-guard-http.yaml", edit=set_extension_policy(policy))
    github = serve(tls_server(netns, cert, PINNED_NAMES["api.github.com"], 8443))
    github_web = serve(HttpServer(PINNED_NAMES["api.github.com"], 8080, netns, label="github"))
    decoy = serve(tls_server(netns, cert, DECOY, 8443))
    decoy_web = serve(HttpServer(DECOY, 8080, netns, label="decoy"))

    assert tls_client(DECOY, 8443, "api.github.com", netns=netns).received == b"ping"
    ok = http_request(DECOY, 8080, get("api.github.com"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from github", ok
    denied = http_request(DECOY, 8080, get("evil.example.com"), netns=netns)
    assert denied.status is None, denied

    assert github.snis == ["api.github.com"] and github_web.hosts == ["api.github.com"]
    assert decoy.connections == 0 and decoy_web.connections == 0
    assert sniffed(envoy, "tls_sni") == 1 and sniffed(envoy, "http_host") == 2
    assert pin_count(envoy, "pinned") == 2
    assert envoy.counter("cluster.egress_guard_pinned.upstream_cx_total") == 2
    # One lookup per name and port (the DNS cache's key), none for the denied Host.
    assert envoy.counter("dns_cache.egress_guard_pinned.dns_query_attempt") == 2


# --------------------------------------------------------------------------------------------
# A module istio-agent cannot pull
# --------------------------------------------------------------------------------------------
#
# istio-agent pulls the module of every ECDS Wasm filter before Envoy sees it. When the pull
# fails it sends, under the same name, an RBAC filter of the same kind instead: deny-all unless
# the filter is FAIL_OPEN (Istio >= 1.25; istio.pull_failed_substitute). Envoy takes it only if
# the filter's `config_discovery.type_urls` list the RBAC type -- the manifests' own lists are
# the ones under test here.

NETWORK_ECDS = "extension_config_discovery.network_filter.egress-guard."
HTTP_ECDS = {"egress-guard-http.yaml": "extension_config_discovery.http_filter."
                                       "istio-system.egress-guard-http.",
             "egress-guard-http-passthrough-only.yaml": "extension_config_discovery.http_filter."
                                                        "egress-guard-http."}
NETWORK_DENIED = "wasm-default-deny.rbac.denied"


def http_denied(envoy: Envoy, http: str) -> int:
    """The HTTP deny-all's denials. Envoy 1.40 counts them in the connection manager's scope;
    1.36 in the ECDS subscription's (one of the two names exists)."""
    return (envoy.counter("http.outbound_0.0.0.0_80.rbac.wasm-default-deny.denied")
            + envoy.counter(HTTP_ECDS[http] + "rbac.wasm-default-deny.denied"))


# Addresses in the example policy's `in-cluster` CIDRs: allowed on any port, so a connection
# to one on a port no service uses (the catch-all chain) passes egress-guard.
IN_CLUSTER, IN_CLUSTER_DB = "10.96.0.10", "10.96.0.11"


def test_the_discovered_filters_accept_istio_agents_stand_in() -> None:
    """Each filter the manifests configure by ECDS takes the Wasm type and the RBAC type of its
    kind: the lists istiod gives the filters it makes for WasmPlugins."""
    expected = {"NETWORK_FILTER": [NETWORK_WASM, NETWORK_RBAC],
                "HTTP_FILTER": [HTTP_WASM, HTTP_RBAC]}
    found = []
    for name in ("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml"):
        for cp in manifest(name)["spec"]["configPatches"]:
            value = cp["patch"].get("value") or {}
            if "config_discovery" in value:
                found.append((cp["applyTo"], value["config_discovery"]["type_urls"]))
    assert [apply_to for apply_to, _ in found] == ["NETWORK_FILTER", "NETWORK_FILTER",
                                                   "HTTP_FILTER"]
    assert all(urls == expected[apply_to] for apply_to, urls in found), found
    bootstrap, _, _ = splice("egress-guard-http.yaml")
    assert {tuple(h["config_discovery"]["type_urls"]) for _, _, hcm in hcms(bootstrap)
            for h in hcm["http_filters"] if "config_discovery" in h} == {(HTTP_WASM, HTTP_RBAC)}


def test_istio_agents_stand_in_for_a_module_it_cannot_pull() -> None:
    """The port of istio-agent's substitute (pkg/wasm/convert.go), per kind and failure policy:
    an RBAC filter with the Wasm filter's name; an empty rule set (deny-all) unless FAIL_OPEN."""
    (network,) = splice("egress-guard-network.yaml")[1]
    (http,) = splice("egress-guard-http-passthrough-only.yaml")[1]
    assert pull_failed_substitute(network) == {"name": "egress-guard", "typed_config": {
        "@type": NETWORK_RBAC, "stat_prefix": "wasm-default-deny", "rules": {}}}
    assert pull_failed_substitute(http) == {"name": "egress-guard-http", "typed_config": {
        "@type": HTTP_RBAC, "rules_stat_prefix": "wasm-default-deny", "rules": {}}}
    for policy in ("FAIL_OPEN", "FAIL_CLOSED", "FAIL_RELOAD"):
        ext = copy.deepcopy(network)
        ext["typed_config"]["config"]["failure_policy"] = policy
        rbac = pull_failed_substitute(ext)["typed_config"]
        assert ("rules" in rbac) == (policy != "FAIL_OPEN"), (policy, rbac)
    # The deprecated bool counts only when failure_policy is unset.
    ext = copy.deepcopy(network)
    del ext["typed_config"]["config"]["failure_policy"]
    ext["typed_config"]["config"]["fail_open"] = True
    assert pull_failed_substitute(ext)["typed_config"]["stat_prefix"] == "wasm-default-allow"


def add_addresses(netns: NetNS, *ips: str) -> None:
    for ip in ips:
        netns.run("ip", "addr", "add", f"{ip}/32", "dev", "lo")


def ecds_update(envoy: Envoy, tmp: Path, wasm: Path, manifests: tuple[str, ...], *,
                pull_fails: bool) -> None:
    """istio-agent forwards a new ECDS response for every resource of ``manifests`` (the module,
    or its stand-in); return once Envoy has taken or refused each."""
    forwarded = agent_forwards(splice(*manifests)[1], wasm, pull_fails=pull_fails)
    prefixes = [NETWORK_ECDS] + [HTTP_ECDS[m] for m in manifests if m in HTTP_ECDS]
    assert len(prefixes) == len(forwarded), forwarded
    attempts = {p: envoy.counter(p + "update_attempt") for p in prefixes}
    write_extension_configs(tmp / "ecds", forwarded)
    for prefix, before in attempts.items():
        envoy.wait_for_counter(prefix + "update_attempt", before + 1)


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


class Traffic:
    """Three connections the example policy allows, one per place egress-guard sits: TLS to
    api.github.com on 443 (PassthroughFilterChain, tls_inspector), TLS to an in-cluster address
    on 8443 (virtualOutbound's catch-all) and HTTP to deb.debian.org (the HTTP filter)."""

    def __init__(self, netns: NetNS, cert: Cert, serve: Callable[[Any], Any]) -> None:
        add_addresses(netns, IN_CLUSTER, IN_CLUSTER_DB)
        self.netns = netns
        self.github = serve(tls_server(netns, cert, "127.0.0.50"))
        self.cluster = serve(tls_server(netns, cert, IN_CLUSTER, 8443))
        self.debian = serve(HttpServer("127.0.0.53", 80, netns, label="deb"))

    def run(self) -> tuple[bytes, bytes, int | None]:
        """(bytes echoed on 443, bytes echoed on 8443, HTTP status)."""
        github = tls_client("127.0.0.50", 443, "api.github.com", netns=self.netns)
        cluster = tls_client(IN_CLUSTER, 8443, "db.cluster.local", netns=self.netns)
        http = http_request("127.0.0.53", 80, get("deb.debian.org"), netns=self.netns)
        return github.received, cluster.received, http.status


PASSED = (b"ping", b"ping", 200)


@pytest.mark.parametrize("http", ["egress-guard-http.yaml",
                                  "egress-guard-http-passthrough-only.yaml"],
                         ids=["wasmplugin", "passthrough_only"])
def test_a_failed_first_pull_denies_all_egress_guard_would_check(http, spliced_sidecar, serve,
                                                                 netns, cert) -> None:
    """A sidecar whose first pull of the module fails: istio-agent's deny-all stands in for
    egress-guard, Envoy takes it, and what the policy would allow is refused -- the
    destinations receive nothing."""
    envoy = spliced_sidecar("egress-guard-network.yaml", http, pull_fails=True)
    traffic = Traffic(netns, cert, serve)
    db = serve(TcpServer(IN_CLUSTER_DB, 5432, netns, greeting=b"220 db\r\n"))

    for prefix in (NETWORK_ECDS, HTTP_ECDS[http]):
        assert (envoy.counter(prefix + "update_success"),
                envoy.counter(prefix + "update_rejected")) == (1, 0), prefix
    github, cluster, status = traffic.run()
    assert (github, cluster, status) == (b"", b"", 403)
    denied = http_request("127.0.0.53", 80, get("deb.debian.org"), netns=netns)
    assert denied.status == 403 and denied.body == b"RBAC: access denied", denied
    # The RBAC filter decides at the client's first byte: a server that speaks first still
    # greets the client, but nothing the client sends reaches it.
    with connect(IN_CLUSTER_DB, 5432, netns, timeout=5) as sock:
        assert sock.recv(100) == b"220 db\r\n"
        sock.sendall(b"SELECT 1;\n")
        assert _read_until_closed(sock) == b""

    assert traffic.github.handshakes == traffic.cluster.handshakes == 0
    assert all(data == b"" for s in (traffic.github, traffic.cluster, db) for data in s.received)
    assert traffic.debian.requests == []
    assert envoy.counter(NETWORK_DENIED) == 3 and http_denied(envoy, http) == 2
    assert all_decisions(envoy) == {}   # egress-guard never ran



def test_a_failed_update_pull_replaces_the_running_module_with_deny_all(spliced_sidecar, serve,
                                                                       netns, cert, tmp,
                                                                       wasm_path) -> None:
    """An update whose pull fails (a new image reference, the registry down) is no different to
    istio-agent: the deny-all replaces the egress-guard already running. The next good pull
    puts egress-guard back (Envoy takes Wasm after RBAC: both types are listed)."""
    manifests = ("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml")
    envoy = spliced_sidecar(*manifests)
    traffic = Traffic(netns, cert, serve)
    assert traffic.run() == PASSED

    ecds_update(envoy, tmp, wasm_path, manifests, pull_fails=True)
    assert traffic.run() == (b"", b"", 403)
    assert envoy.counter(NETWORK_DENIED) == 2 and http_denied(envoy, manifests[1]) == 1

    ecds_update(envoy, tmp, wasm_path, manifests, pull_fails=False)
    assert traffic.run() == PASSED
    for prefix in (NETWORK_ECDS, HTTP_ECDS[manifests[1]]):
        assert (envoy.counter(prefix + "update_success"),
                envoy.counter(prefix + "update_rejected")) == (3, 0), prefix
    # Decided by the restored egress-guard: a new VM, whose counters start again.
    assert all_decisions(envoy) == {("allow", "rule"): 3}


def wasm_type_only(bootstrap: dict[str, Any], _extensions: list[dict[str, Any]]) -> None:
    """The manifests as they were: `type_urls` without the RBAC type."""
    for f in discovered_filters(bootstrap):
        urls = f["config_discovery"]["type_urls"]
        urls[:] = [u for u in urls if u not in (NETWORK_RBAC, HTTP_RBAC)]
        assert urls in ([NETWORK_WASM], [HTTP_WASM]), urls


def test_without_the_rbac_type_envoy_refuses_the_stand_in(spliced_sidecar, serve, netns, cert,
                                                          tmp, wasm_path) -> None:
    """Why the manifests list the RBAC type. Without it Envoy refuses istio-agent's stand-in:
    a first pull that fails leaves the filters with no configuration (connections are closed,
    HTTP answered 500, the RBAC counters never move), and an update that fails is refused while
    the module already running goes on deciding."""
    manifests = ("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml")
    envoy = spliced_sidecar(*manifests, pull_fails=True, edit=wasm_type_only)
    traffic = Traffic(netns, cert, serve)
    prefixes = (NETWORK_ECDS, HTTP_ECDS[manifests[1]])
    assert [envoy.counter(p + "update_rejected") for p in prefixes] == [1, 1]
    assert traffic.run() == (b"", b"", 500)
    assert envoy.counter("listener.0.0.0.0_443.network_extension_config_missing") == 1
    assert envoy.counter("listener.0.0.0.0_15001.network_extension_config_missing") == 1
    assert envoy.counter(NETWORK_DENIED) == http_denied(envoy, manifests[1]) == 0

    ecds_update(envoy, tmp, wasm_path, manifests, pull_fails=False)
    assert traffic.run() == PASSED
    ecds_update(envoy, tmp, wasm_path, manifests, pull_fails=True)
    assert [envoy.counter(p + "update_rejected") for p in prefixes] == [2, 2]
    assert traffic.run() == PASSED
    assert all_decisions(envoy) == {("allow", "rule"): 6}


def test_fail_open_lets_egress_out_unchecked_when_the_pull_fails(spliced_sidecar, serve, netns,
                                                                 cert) -> None:
    """The other side of the trade: the same manifests with FAIL_OPEN get istio-agent's
    allow-all, and a destination the policy denies is reached."""
    def fail_open(_bootstrap: dict[str, Any], extensions: list[dict[str, Any]]) -> None:
        for ext in extensions:
            ext["typed_config"]["config"]["failure_policy"] = "FAIL_OPEN"

    envoy = spliced_sidecar("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml",
                            pull_fails=True, edit=fail_open)
    evil = serve(tls_server(netns, cert, "127.0.0.51"))
    web = serve(HttpServer("127.0.0.53", 80, netns, label="web"))
    assert tls_client("127.0.0.51", 443, "evil.example.com", netns=netns).received == b"ping"
    ok = http_request("127.0.0.53", 80, get("evil.example.com"), netns=netns)
    assert ok.status == 200 and web.hosts == ["evil.example.com"], ok
    assert evil.snis == ["evil.example.com"]
    # An RBAC filter without rules allows without counting anything.
    assert envoy.counter(NETWORK_ECDS + "update_success") == 1
    assert all_decisions(envoy) == {}


# --------------------------------------------------------------------------------------------
# The hybrid sidecar: TrafficExtensions where istiod puts them, the EnvoyFilter on the catch-all
# --------------------------------------------------------------------------------------------

HYBRID = ("egress-guard-network.yaml", "egress-guard-trafficext-network.yaml",
          "egress-guard-trafficext-http.yaml")
TE_NETWORK = "extensions.istio.io/trafficextension/istio-system.egress-guard-network"
TE_HTTP = "extensions.istio.io/trafficextension/istio-system.egress-guard-http"


def test_the_hybrid_puts_each_filter_where_istiod_would() -> None:
    """The EnvoyFilter's filter on the catch-all chains; the network TrafficExtension's on the
    service chains (a ServiceEntry's SNI chain, and before the HTTP connection manager on the
    port-80 HTTP chain); the HTTP TrafficExtension's in the connection manager. Every filter is
    on one chain's list once: no chain has two network egress-guards."""
    bootstrap, extensions, applied = splice(*HYBRID)
    assert sorted(applied) == [
        "EXTENSION_CONFIG -> egress-guard",
        "HTTP_FILTER -> 0.0.0.0_80/None",
        "NETWORK_FILTER -> 0.0.0.0_443/PassthroughFilterChain",
        "NETWORK_FILTER -> 0.0.0.0_443/api.partner.example-443",
        "NETWORK_FILTER -> 0.0.0.0_80/None",
        "NETWORK_FILTER -> 0.0.0.0_80/PassthroughFilterChain",
        "NETWORK_FILTER -> virtualOutbound/virtualOutbound-catchall-tcp",
    ]
    assert traffic_extension_resource_name(manifest(HYBRID[1])) == TE_NETWORK
    assert [e["name"] for e in extensions] == ["egress-guard", TE_NETWORK, TE_HTTP]
    names = filter_names(bootstrap)
    assert names[("0.0.0.0_443", "api.partner.example-443")] == [
        TE_NETWORK, "envoy.filters.network.tcp_proxy"]
    assert names[("0.0.0.0_80", "#0")] == [
        TE_NETWORK, f"envoy.filters.network.http_connection_manager[{TE_HTTP},"
                    "envoy.filters.http.router]"]
    for chain in ("virtualOutbound-catchall-tcp", "PassthroughFilterChain"):
        assert all(n.count("egress-guard") <= 1 for (_, c), n in names.items() if c == chain)
    assert {tuple(f["config_discovery"]["type_urls"]) for f in discovered_filters(bootstrap)} == {
        (NETWORK_WASM, NETWORK_RBAC), (HTTP_WASM, HTTP_RBAC)}


def test_the_hybrid_sidecar_runs(spliced_sidecar, serve, netns, cert) -> None:
    """The three manifests as istiod and istio-agent would deliver them, in a real Envoy: the
    EnvoyFilter's egress-guard decides on the catch-all chains, the TrafficExtensions' on a
    ServiceEntry's chain and on plain HTTP, all from the same policy.

    What the network TrafficExtension changes for HTTP: it sits in front of the connection
    manager, so it reads the request head first and a denied Host is closed there, before the
    HTTP filter could answer 403."""
    envoy = spliced_sidecar(*HYBRID)
    add_addresses(netns, IN_CLUSTER)
    github = serve(tls_server(netns, cert, "127.0.0.50"))
    evil = serve(tls_server(netns, cert, "127.0.0.51"))
    other_port = serve(tls_server(netns, cert, "127.0.0.52", 8443))
    debian = serve(HttpServer("127.0.0.53", 80, netns, label="deb"))
    partner = serve(tls_server(netns, cert, "127.0.0.56"))
    partner_in_cluster = serve(tls_server(netns, cert, IN_CLUSTER))

    for prefix in ("extension_config_discovery.network_filter.egress-guard.",
                   f"extension_config_discovery.network_filter.{TE_NETWORK}.",
                   f"extension_config_discovery.http_filter.{TE_HTTP}."):
        assert envoy.counter(prefix + "update_success") == 1, prefix
    # The catch-all chains (the EnvoyFilter's egress-guard).
    assert tls_client("127.0.0.50", 443, "api.github.com", netns=netns).received == b"ping"
    assert tls_client("127.0.0.51", 443, "evil.example.com", netns=netns).received == b""
    assert tls_client("127.0.0.52", 8443, "api.github.com", netns=netns).received == b""
    catch_all = all_decisions(envoy)
    assert catch_all == {("allow", "rule"): 1, ("deny", "no_match"): 2}, catch_all
    # The ServiceEntry's chain (the network TrafficExtension): the ServiceEntry alone would let
    # api.partner.example out anywhere; the policy allows it only to in-cluster addresses.
    assert tls_client("127.0.0.56", 443, "api.partner.example", netns=netns).received == b""
    assert tls_client(IN_CLUSTER, 443, "api.partner.example", netns=netns).received == b"ping"
    assert partner.handshakes == 0 and partner_in_cluster.snis == ["api.partner.example"]
    # Plain HTTP: both TrafficExtensions allow deb.debian.org; the network one closes the rest.
    ok = http_request("127.0.0.53", 80, get("deb.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    denied = http_request("127.0.0.53", 80, get("evil.example.com"), netns=netns)
    assert denied.status is None, denied

    assert github.snis == ["api.github.com"] and debian.hosts == ["deb.debian.org"]
    assert all(data == b"" for s in (evil, other_port, partner) for data in s.received)
    log = {(e["dst"], e["filter"], e.get("name")): e["decision"] for e in decision_log(envoy, 4)}
    assert log == {("127.0.0.51:443", "network", "evil.example.com"): "deny",
                   ("127.0.0.52:8443", "network", None): "deny",
                   ("127.0.0.56:443", "network", "api.partner.example"): "deny",
                   ("127.0.0.53:80", "network", "evil.example.com"): "deny"}, log
    assert all_decisions(envoy) == {("allow", "rule"): 4, ("deny", "no_match"): 4}


def test_a_failed_pull_in_the_hybrid_denies_on_every_chain(spliced_sidecar, serve, netns,
                                                           cert) -> None:
    """The TrafficExtensions' filters list the RBAC type too (istiod's lists): when istio-agent
    cannot pull the module, its deny-all stands in for all three, and what the policy would
    allow on each kind of chain is refused."""
    envoy = spliced_sidecar(*HYBRID, pull_fails=True)
    add_addresses(netns, IN_CLUSTER)
    github = serve(tls_server(netns, cert, "127.0.0.50"))
    partner = serve(tls_server(netns, cert, IN_CLUSTER))
    debian = serve(HttpServer("127.0.0.53", 80, netns, label="deb"))

    for prefix in (NETWORK_ECDS, f"extension_config_discovery.network_filter.{TE_NETWORK}.",
                   f"extension_config_discovery.http_filter.{TE_HTTP}."):
        assert (envoy.counter(prefix + "update_success"),
                envoy.counter(prefix + "update_rejected")) == (1, 0), prefix
    assert tls_client("127.0.0.50", 443, "api.github.com", netns=netns).received == b""
    assert tls_client(IN_CLUSTER, 443, "api.partner.example", netns=netns).received == b""
    # The network stand-in in front of the connection manager closes plain HTTP first.
    assert http_request("127.0.0.53", 80, get("deb.debian.org"), netns=netns).status is None
    assert github.handshakes == partner.handshakes == 0 and debian.requests == []
    assert envoy.counter(NETWORK_DENIED) == 3
    assert all_decisions(envoy) == {}

# --------------------------------------------------------------------------------------------
# An ambient egress waypoint
# --------------------------------------------------------------------------------------------

WAYPOINT_PORT = 15008
# ServiceEntry hosts bound to the waypoint, at addresses from Istio's default allocation range
# (240.240.0.0/16). The endpoints stand in for the hosts' resolved addresses.
WAYPOINT_SERVICES = [
    WaypointService("api.github.com", "240.240.0.1", 443, "TLS", ("127.0.0.50", 443)),
    # A wildcard ServiceEntry (`*.example.com`, resolution DYNAMIC_DNS in Istio): everything
    # under example.com reaches the waypoint; the policy narrows it.
    WaypointService("*.example.com", "240.240.0.2", 443, "TLS", ("127.0.0.51", 443)),
    WaypointService("deb.debian.org", "240.240.0.3", 80, "HTTP", ("127.0.0.53", 80)),
]


def test_the_waypoint_extensions_land_on_every_waypoint_chain() -> None:
    bootstrap = waypoint_bootstrap(WAYPOINT_SERVICES, WAYPOINT_PORT)
    applied = []
    for name in WAYPOINT_EXTENSIONS:
        applied += apply_traffic_extension(bootstrap, manifest(name), WAYPOINT)[1]
    # The network filter on the TCP chains only: a waypoint's HTTP chain holds the connection
    # manager alone.
    assert sorted(applied) == [
        "HTTP_FILTER -> main_internal/inbound-vip|80|http|deb.debian.org",
        "NETWORK_FILTER -> main_internal/inbound-vip|443|tcp|*.example.com",
        "NETWORK_FILTER -> main_internal/inbound-vip|443|tcp|api.github.com",
    ]
    # The sidecar variants attach to no waypoint.
    for name in SIDECAR_EXTENSIONS:
        assert apply_traffic_extension(bootstrap, manifest(name), WAYPOINT) == ([], [])


@pytest.fixture
def waypoint(netns: NetNS, start_envoy: Callable[..., Envoy], wasm_path: Path,
             tmp: Path) -> Callable[..., Envoy]:
    """An egress waypoint (:func:`istio.waypoint_bootstrap`) with the waypoint TrafficExtensions
    (or ``edit(extension)`` of them), in ``netns``: connections to the ServiceEntry addresses
    are redirected to it, as ztunnel would tunnel them."""
    def start(edit: Callable[[dict[str, Any]], None] | None = None) -> Envoy:
        bootstrap = waypoint_bootstrap(WAYPOINT_SERVICES, WAYPOINT_PORT)
        extensions = []
        for name in WAYPOINT_EXTENSIONS:
            doc = copy.deepcopy(manifest(name))
            if edit is not None:
                edit(doc)
            extensions += apply_traffic_extension(bootstrap, doc, WAYPOINT)[0]
        serve_extension_configs(bootstrap, extensions, wasm_path, tmp / "ecds")
        add_addresses(netns, *(svc.vip for svc in WAYPOINT_SERVICES))
        envoy = start_envoy(bootstrap, netns=netns, uid=PROXY_UID)
        netns.install_redirect(WAYPOINT_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT],
                               intercept_loopback=True)
        return envoy
    return start


def test_the_waypoint_policy_runs_in_a_waypoint_shaped_envoy(waypoint, serve, netns,
                                                             cert) -> None:
    """The waypoint manifests' policy (by name only) in a real Envoy shaped like an egress
    waypoint: allowed names pass, other names to the same ServiceEntry addresses are stopped,
    and the destination egress-guard sees is the ServiceEntry's address, not the server's."""
    envoy = waypoint()
    github = serve(tls_server(netns, cert, "127.0.0.50"))
    example = serve(tls_server(netns, cert, "127.0.0.51"))
    debian = serve(HttpServer("127.0.0.53", 80, netns, label="deb"))

    assert tls_client("240.240.0.1", 443, "api.github.com", netns=netns).received == b"ping"
    # Another name sent to the same ServiceEntry address.
    assert tls_client("240.240.0.1", 443, "evil.example.com", netns=netns).received == b""
    # The wildcard ServiceEntry lets www.example.com reach the waypoint; the policy does not.
    assert tls_client("240.240.0.2", 443, "www.example.com", netns=netns).received == b""
    ok = http_request("240.240.0.3", 80, get("deb.debian.org"), netns=netns)
    assert ok.status == 200 and ok.body == b"hello from deb", ok
    denied = http_request("240.240.0.3", 80, get("evil.example.com"), netns=netns)
    assert denied.status == 403 and denied.headers["x-egress-guard"] == "denied", denied

    assert github.snis == ["api.github.com"] and debian.hosts == ["deb.debian.org"]
    assert example.handshakes == 0 and all(d == b"" for d in example.received)
    log = {(e["dst"], e["name"], e["filter"]) for e in decision_log(envoy, 3)}
    assert log == {("240.240.0.1:443", "evil.example.com", "network"),
                   ("240.240.0.2:443", "www.example.com", "network"),
                   ("240.240.0.3:80", "evil.example.com", "http")}, log
    assert all_decisions(envoy) == {("allow", "rule"): 2, ("deny", "no_match"): 3}


def test_a_cidr_rule_at_the_waypoint_matches_the_serviceentry_address(waypoint, serve, netns,
                                                                      cert) -> None:
    """Why the waypoint policy has no CIDR rules: the sidecar policy's deny of the server's
    real address does not fire at the waypoint, where the destination is the ServiceEntry's
    address; a CIDR rule for the ServiceEntry range would match every host bound to it."""
    def real_address_denied(doc: dict[str, Any]) -> None:
        doc["spec"]["wasm"]["pluginConfig"]["deny"] = [
            {"name": "the-real-address", "cidrs": ["127.0.0.50/32"]}]

    envoy = waypoint(real_address_denied)
    github = serve(tls_server(netns, cert, "127.0.0.50"))
    assert tls_client("240.240.0.1", 443, "api.github.com", netns=netns).received == b"ping"
    assert github.snis == ["api.github.com"]
    assert all_decisions(envoy) == {("allow", "rule"): 1}
