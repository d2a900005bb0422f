"""What Istio does with the manifests in examples/istio/, done here so a real Envoy can run it.

* :func:`validate_spec` checks a manifest's ``spec`` against the Istio CRD's JSON Schema
  (the files in data/: the ``spec`` schemas of Istio's WasmPlugin, EnvoyFilter, ServiceEntry
  and Sidecar CRDs, and of TrafficExtension, copies of the project's shared ones), strictly: an
  unknown field is an error, as with ``kubectl apply --validate=strict``. The CRDs' CEL rules
  (``x-kubernetes-validations``) are not evaluated.
* :func:`apply_envoy_filter` applies an EnvoyFilter's listener, network-filter, HTTP-filter,
  virtual-host and cluster patches to a bootstrap's static listeners and clusters with istiod's
  matching rules (a port of pilot/pkg/networking/core/envoyfilter: listener name and port,
  filter chain name -- the default filter chain included -- SNI, transport and application
  protocols, destination port, filter and sub-filter names; a network filter's MERGE after the
  chain's list operations, its typed_config proto-merged; a cluster ADD), and returns its
  EXTENSION_CONFIG resources.
* :func:`apply_wasm_plugin` does what istiod does for an HTTP WasmPlugin with ``mode: CLIENT``:
  an ECDS resource ``<namespace>.<name>`` holding the Wasm HTTP filter (pluginConfig as a JSON
  string), referenced by a filter inserted before the router in every outbound HTTP connection
  manager -- if the plugin selects the sidecar (:func:`wasm_plugin_selects`, which also tells
  whether it would select a gateway).
* :func:`traffic_extension_chains` tells which filter chains of a sidecar, gateway or waypoint
  istiod (1.30) puts a TrafficExtension on: its attachment rules (``selector``, ``targetRefs``)
  and ``match[].mode`` against each chain's mode; :func:`traffic_extension_cel_errors` evaluates
  the TrafficExtension CRD's CEL rules; :func:`apply_traffic_extension` inserts a Wasm
  TrafficExtension's filter where istiod would and returns its ECDS resource.
* :func:`waypoint_bootstrap` is an ambient egress waypoint's Envoy without HBONE.
* :func:`serve_extension_configs` stands in for istio-agent and the ADS stream: the module's
  ``remote`` OCI reference becomes a local file (what istio-agent does after pulling the image;
  test_oci_image.py checks the image holds the same bytes), and each ``config_discovery``
  reads its resource from a file (Envoy's file-based ECDS) instead of ADS.
  :func:`pull_failed_substitute` is what istio-agent sends instead when the pull fails, and
  :func:`write_extension_configs` replaces the files, as an ECDS update.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "data"
# The vendored CRD schemas, each a copy of the file of the same name in the shared data
# directory beside the checkout (test_istio_manifests.py checks they have not drifted).
SCHEMA_FILES = ("istio-crd-schemas.json", "istio-trafficextension-schema.json")
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
HTTP_WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_WASM = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
VIRTUAL_LISTENERS = ("virtualOutbound", "virtualInbound")


class PatchError(AssertionError):
    """A patch Istio would apply differently, or one this port does not implement."""


def documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a manifest file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def schema_key(doc: dict[str, Any]) -> str:
    """``group/version/Kind``, the key of a CRD schema."""
    return f"{doc['apiVersion']}/{doc['kind']}"


# --------------------------------------------------------------------------------------------
# Schema validation
# --------------------------------------------------------------------------------------------


def _closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_schemas() -> dict[str, Any]:
    """The CRD schemas of every file in :data:`SCHEMA_FILES`, closed (see :func:`_closed`)."""
    schemas: dict[str, Any] = {}
    for name in SCHEMA_FILES:
        for key, schema in json.loads((SCHEMA_DIR / name).read_text()).items():
            if key in schemas:
                raise ValueError(f"{key} is in two schema files")
            schemas[key] = _closed(schema)
    return schemas


def validate_spec(doc: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """Schema errors of a manifest (``[]`` when valid): ``path: message`` per error."""
    import jsonschema  # imported here: the tests that need it skip/fail cleanly without it

    key = schema_key(doc)
    if key not in schemas:
        return [f"no schema for {key}"]
    errors = []
    meta = doc.get("metadata") or {}
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", str(meta.get("name", ""))):
        errors.append(f"metadata.name: {meta.get('name')!r} is not a DNS-1123 label")
    validator = jsonschema.Draft7Validator(schemas[key])
    for err in sorted(validator.iter_errors({"spec": doc.get("spec")}), key=str):
        errors.append(f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}")
    return errors


# --------------------------------------------------------------------------------------------
# Walking a bootstrap's listeners
# --------------------------------------------------------------------------------------------


def listeners(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    return bootstrap["static_resources"]["listeners"]


def chains(listener: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A listener's filter chains, then its default filter chain."""
    yield from listener.get("filter_chains") or []
    if listener.get("default_filter_chain"):
        yield listener["default_filter_chain"]


def hcms(bootstrap: dict[str, Any]) -> Iterator[tuple[dict, dict, dict]]:
    """(listener, chain, HCM typed_config) for every HTTP connection manager."""
    for lst in listeners(bootstrap):
        for fc in chains(lst):
            for f in fc.get("filters", []):
                if f["name"] == HCM:
                    yield lst, fc, f["typed_config"]


def filter_names(bootstrap: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(listener, chain name) -> its network filter names, with HTTP filters as ``HCM[...]``."""
    out = {}
    for lst in listeners(bootstrap):
        for i, fc in enumerate(chains(lst)):
            names = []
            for f in fc.get("filters", []):
                if f["name"] == HCM:
                    inner = ",".join(h["name"] for h in f["typed_config"]["http_filters"])
                    names.append(f"{HCM}[{inner}]")
                else:
                    names.append(f["name"])
            out[(lst["name"], fc.get("name") or f"#{i}")] = names
    return out


def strip_filters(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy without any network or HTTP filter called ``name`` (what istiod generates before
    an EnvoyFilter adds it)."""
    out = copy.deepcopy(bootstrap)
    for lst in listeners(out):
        for fc in chains(lst):
            fc["filters"] = [f for f in fc["filters"] if f["name"] != name]
    for _, _, hcm in hcms(out):
        hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] != name]
    return out


# --------------------------------------------------------------------------------------------
# EnvoyFilter
# --------------------------------------------------------------------------------------------


def _context_matches(match: dict[str, Any]) -> bool:
    # The bootstrap holds outbound sidecar listeners only.
    return match.get("context", "ANY") in ("ANY", "SIDECAR_OUTBOUND")


def _port(listener: dict[str, Any]) -> int:
    return int(listener["address"]["socket_address"]["port_value"])


def _listener_match(lst: dict[str, Any], match: dict[str, Any], apply_to: str) -> bool:
    lm = match.get("listener")
    if not lm:
        return True
    if lm.get("name") and lm["name"] != lst["name"]:
        return False
    if apply_to != "LISTENER" and lst["name"] in VIRTUAL_LISTENERS:
        return True
    return not lm.get("portNumber") or _port(lst) == lm["portNumber"]


def _chain_match(lst: dict[str, Any], fc: dict[str, Any], match: dict[str, Any]) -> bool:
    lm = match.get("listener")
    if not lm:
        return True
    fcm = fc.get("filter_chain_match") or {}
    if (lst["name"] in VIRTUAL_LISTENERS and lm.get("portNumber")
            and fcm.get("destination_port") != lm["portNumber"]):
        return False
    m = lm.get("filterChain")
    if not m:
        return True
    if m.get("name") and m["name"] != fc.get("name"):
        return False
    if m.get("sni") and m["sni"] not in (fcm.get("server_names") or []):
        return False
    if m.get("transportProtocol") and fcm.get("transport_protocol") != m["transportProtocol"]:
        return False
    if m.get("applicationProtocols"):
        have = fcm.get("application_protocols") or []
        if not all(p in have for p in m["applicationProtocols"].split(",")):
            return False
    return not m.get("destinationPort") or fcm.get("destination_port") == m["destinationPort"]


def _filter_match_name(match: dict[str, Any]) -> str | None:
    return (((match.get("listener") or {}).get("filterChain") or {}).get("filter") or {}).get("name")


def _sub_filter_match_name(match: dict[str, Any]) -> str | None:
    flt = ((match.get("listener") or {}).get("filterChain") or {}).get("filter") or {}
    return (flt.get("subFilter") or {}).get("name")


def _insert(items: list[dict[str, Any]], op: str, target: str | None,
            value: dict[str, Any]) -> bool:
    """Apply a list operation as istiod does; True if it changed the list."""
    new = copy.deepcopy(value)
    if op == "ADD" or (op == "INSERT_AFTER" and target is None):
        items.append(new)
        return True
    if op == "INSERT_FIRST" or (op == "INSERT_BEFORE" and target is None):
        items.insert(0, new)
        return True
    if op in ("INSERT_BEFORE", "INSERT_AFTER"):
        for i, item in enumerate(items):
            if item["name"] == target:
                items.insert(i if op == "INSERT_BEFORE" else i + 1, new)
                return True
        return False
    raise PatchError(f"operation {op} is not implemented here")


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    """Protobuf merge of JSON-shaped messages: maps and messages merge, lists append."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        elif isinstance(value, list) and isinstance(dst.get(key), list):
            dst[key].extend(copy.deepcopy(value))
        else:
            dst[key] = copy.deepcopy(value)


def _is_filter_merge(cp: dict[str, Any]) -> bool:
    return cp["applyTo"] == "NETWORK_FILTER" and cp["patch"]["operation"] == "MERGE"


def _merge_filter(flt: dict[str, Any], value: dict[str, Any]) -> bool:
    """A network filter's MERGE as istiod does it (listener_patch.go, patchNetworkFilter): only a
    filter with a typed_config is merged; the patch's typed_config, its type URL made the
    filter's, is proto-merged into the filter's; a name in the patch renames the filter."""
    if "typed_config" not in flt:
        return False
    if value.get("typed_config"):
        patch = copy.deepcopy(value["typed_config"])
        patch["@type"] = flt["typed_config"]["@type"]
        _merge(flt["typed_config"], patch)
    if value.get("name"):
        flt["name"] = value["name"]
    return True


def apply_envoy_filter(bootstrap: dict[str, Any], envoy_filter: dict[str, Any]
                       ) -> tuple[list[dict[str, Any]], list[str]]:
    """Apply the patches in place; return (EXTENSION_CONFIG resources, where each patch applied).

    The second list has one ``"<applyTo> -> listener/chain[/filter]"`` line per application, so
    a test can see that a patch hit exactly the places it should.
    """
    extension_configs, applied = [], []
    patches = envoy_filter["spec"]["configPatches"]
    # istiod runs a chain's network-filter list operations first, then each filter's MERGEs
    # (listener_patch.go: patchNetworkFilters, then patchNetworkFilter per filter).
    ordered = ([cp for cp in patches if not _is_filter_merge(cp)]
               + [cp for cp in patches if _is_filter_merge(cp)])
    for cp in ordered:
        apply_to, match, patch = cp["applyTo"], cp.get("match") or {}, cp["patch"]
        op, value = patch["operation"], patch.get("value")
        if apply_to == "EXTENSION_CONFIG":
            if op == "ADD":
                extension_configs.append(copy.deepcopy(value))
                applied.append(f"EXTENSION_CONFIG -> {value['name']}")
            continue
        if not _context_matches(match):
            continue
        if apply_to == "CLUSTER":
            # cluster_patch.go: an ADD appends the cluster whatever the match's cluster fields.
            if op != "ADD":
                raise PatchError(f"CLUSTER {op} is not implemented here")
            bootstrap["static_resources"]["clusters"].append(copy.deepcopy(value))
            applied.append(f"CLUSTER -> {value['name']}")
        elif apply_to == "NETWORK_FILTER" and op == "MERGE":
            target = _filter_match_name(match)
            for lst in listeners(bootstrap):
                if not _listener_match(lst, match, apply_to):
                    continue
                for fc in chains(lst):
                    if not _chain_match(lst, fc, match):
                        continue
                    for flt in fc["filters"]:
                        if target in (None, flt["name"]) and _merge_filter(flt, value):
                            applied.append(f"NETWORK_FILTER MERGE -> {lst['name']}/"
                                           f"{fc.get('name')}/{flt['name']}")
        elif apply_to == "NETWORK_FILTER":
            for lst in listeners(bootstrap):
                if not _listener_match(lst, match, apply_to):
                    continue
                for fc in chains(lst):
                    if _chain_match(lst, fc, match) and _insert(
                            fc["filters"], op, _filter_match_name(match), value):
                        applied.append(f"NETWORK_FILTER -> {lst['name']}/{fc.get('name')}")
        elif apply_to == "HTTP_FILTER":
            net = _filter_match_name(match)
            for lst, fc, hcm in hcms(bootstrap):
                if not (_listener_match(lst, match, apply_to) and _chain_match(lst, fc, match)
                        and net in (None, HCM)):
                    continue
                if _insert(hcm["http_filters"], op, _sub_filter_match_name(match), value):
                    applied.append(f"HTTP_FILTER -> {lst['name']}/{fc.get('name')}")
        elif apply_to == "VIRTUAL_HOST":
            rm = match.get("routeConfiguration") or {}
            want = (rm.get("vhost") or {}).get("name")
            for lst, fc, hcm in hcms(bootstrap):
                rc = hcm["route_config"]
                if rm.get("name") and rm["name"] != rc["name"]:
                    continue
                for vh in rc["virtual_hosts"]:
                    if want in (None, vh["name"]):
                        if op != "MERGE":
                            raise PatchError(f"VIRTUAL_HOST {op} is not implemented here")
                        _merge(vh, value)
                        applied.append(f"VIRTUAL_HOST -> {rc['name']}/{vh['name']}")
        else:
            raise PatchError(f"applyTo {apply_to} is not implemented here")
    return extension_configs, applied


# --------------------------------------------------------------------------------------------
# WasmPlugin
# --------------------------------------------------------------------------------------------

FAIL_STRATEGY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN",
                 "FAIL_RELOAD": "FAIL_RELOAD"}
ROOT_NAMESPACE = "istio-system"
GATEWAY_API_NAME = "gateway.networking.k8s.io/gateway-name"


@dataclass(frozen=True)
class Proxy:
    """A pod's Envoy as istiod matches policies to it: a sidecar or a gateway, with its pod's
    namespace and labels."""

    kind: str
    namespace: str
    labels: dict[str, str]


# Pods as Istio's templates label them (manifests/charts/istio-control/istio-discovery/files:
# injection-template.yaml for sidecars, gateway-injection-template.yaml and kube-gateway.yaml for
# gateways; manifests/charts/gateway for the Helm-installed ingress gateway). Only the sidecar
# injector adds `security.istio.io/tlsMode`.
SIDECAR = Proxy("sidecar", "default", {
    "app": "reviews", "security.istio.io/tlsMode": "istio",
    "service.istio.io/canonical-name": "reviews", "service.istio.io/canonical-revision": "latest"})
INGRESS_GATEWAY = Proxy("gateway", "istio-ingress", {
    "app": "istio-ingressgateway", "istio": "ingressgateway", "sidecar.istio.io/inject": "true",
    "app.kubernetes.io/name": "istio-ingressgateway",
    "service.istio.io/canonical-name": "istio-ingressgateway",
    "service.istio.io/canonical-revision": "latest"})
GATEWAY_API_GATEWAY = Proxy("gateway", "default", {
    "sidecar.istio.io/inject": "false", "service.istio.io/canonical-name": "web-istio",
    "service.istio.io/canonical-revision": "latest", GATEWAY_API_NAME: "web",
    "gateway.networking.k8s.io/gateway-class-name": "istio",
    "gateway.istio.io/managed": "istio.io-gateway-controller"})


def wasm_plugin_selects(plugin: dict[str, Any], proxy: Proxy) -> bool:
    """Whether istiod puts the plugin's filter on ``proxy``'s client-side HTTP listeners: a
    sidecar's outbound ones, or a gateway's. A port of pilot/pkg/model (Istio 1.20 to 1.30):
    ``WasmPluginsByListenerInfo`` looks in the proxy's namespace and the root namespace;
    ``WorkloadPolicyMatcher.ShouldAttachPolicy`` matches ``selector`` labels (Gateway API
    gateways too, with ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY at its default); and
    ``matchTrafficSelectors`` matches ``match[].mode`` against the listener's mode, which
    ``workloadModeForListenerClass`` makes CLIENT for a gateway as for sidecar outbound."""
    spec, namespace = plugin["spec"], plugin["metadata"]["namespace"]
    if spec.get("targetRef") or spec.get("targetRefs"):
        raise PatchError("targetRefs are not emulated")
    if namespace not in (proxy.namespace, ROOT_NAMESPACE):
        return False
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    if any(proxy.labels.get(k) != v for k, v in wanted.items()):
        return False
    modes = [m.get("mode", "UNDEFINED") for m in spec.get("match") or []]
    return not modes or any(m in ("UNDEFINED", "CLIENT_AND_SERVER", "CLIENT") for m in modes)


def apply_wasm_plugin(bootstrap: dict[str, Any], plugin: dict[str, Any], proxy: Proxy = SIDECAR
                      ) -> tuple[list[dict[str, Any]], list[str]]:
    """What istiod generates for an HTTP WasmPlugin matching CLIENT (outbound) traffic, on the
    sidecar ``proxy`` whose outbound listeners ``bootstrap`` holds: nothing if the plugin does
    not select it."""
    spec, meta = plugin["spec"], plugin["metadata"]
    if spec.get("type", "HTTP") != "HTTP":
        raise PatchError("only HTTP WasmPlugins are emulated")
    if [m.get("mode") for m in spec.get("match", [{"mode": "CLIENT"}])] != ["CLIENT"]:
        raise PatchError("only `match: [{mode: CLIENT}]` is emulated")
    if proxy.kind != "sidecar":
        raise PatchError("the bootstrap holds a sidecar's listeners")
    if not wasm_plugin_selects(plugin, proxy):
        return [], []
    resource = f"{meta['namespace']}.{meta['name']}"
    extension = _wasm_extension(resource, spec)
    http_filter = _discovered_filter(resource, "HTTP")
    applied = []
    for lst, fc, hcm in hcms(bootstrap):
        if _insert(hcm["http_filters"], "INSERT_BEFORE", ROUTER, http_filter):
            applied.append(f"HTTP_FILTER -> {lst['name']}/{fc.get('name')}")
    return [extension], applied


def _wasm_extension(resource: str, wasm: dict[str, Any]) -> dict[str, Any]:
    """The ECDS resource istiod makes of a WasmPlugin's spec, or a TrafficExtension's ``wasm``:
    a Wasm filter of the plugin's type, its module a ``remote`` OCI reference (istio-agent's to
    pull), pluginConfig as a JSON string (pilot/pkg/model/extensions.go, ``buildDataSource`` and
    ``toEnvoyWasm``)."""
    config: dict[str, Any] = {
        "name": resource,
        "root_id": wasm.get("pluginName", ""),
        "failure_policy": FAIL_STRATEGY[wasm.get("failStrategy", "FAIL_CLOSE")],
        "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"remote": {
            "http_uri": {"uri": wasm["url"], "cluster": "_", "timeout": "30s"},
            "sha256": wasm.get("sha256", "")}}},
    }
    if wasm.get("pluginConfig"):
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(wasm["pluginConfig"])}
    kind = WASM_TYPE[wasm.get("type", "HTTP")]
    return {"name": resource, "typed_config": {"@type": kind, "config": config}}


# A Wasm filter's type URL, and the RBAC type istio-agent's stand-in has, by the plugin's type.
WASM_TYPE = {"HTTP": HTTP_WASM, "NETWORK": NETWORK_WASM}
RBAC_TYPE = {"HTTP": HTTP_RBAC, "NETWORK": NETWORK_RBAC}


def _discovered_filter(resource: str, kind: str) -> dict[str, Any]:
    """The filter istiod puts in a listener for an ECDS Wasm extension: configured by ADS, both
    type URLs (pilot/pkg/networking/core/extension/extensionfilter.go), waiting for its
    configuration (``initial_fetch_timeout: 0s``)."""
    return {"name": resource, "config_discovery": {
        "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
        "type_urls": [WASM_TYPE[kind], RBAC_TYPE[kind]]}}


# --------------------------------------------------------------------------------------------
# istio-agent + ECDS
# --------------------------------------------------------------------------------------------


def discovered_filters(bootstrap: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every network and HTTP filter configured by ``config_discovery``."""
    for lst in listeners(bootstrap):
        for fc in chains(lst):
            for f in fc.get("filters", []):
                if "config_discovery" in f:
                    yield f
    for _, _, hcm in hcms(bootstrap):
        for h in hcm["http_filters"]:
            if "config_discovery" in h:
                yield h


PULL_FAILED_STAT_PREFIX = {False: "wasm-default-deny", True: "wasm-default-allow"}


def pull_failed_substitute(extension: dict[str, Any]) -> dict[str, Any]:
    """The extension config istio-agent sends Envoy in place of a Wasm filter whose module it
    could not fetch (Istio >= 1.25, pkg/wasm/convert.go: ``createNetworkDefaultFilter`` and
    ``createHTTPDefaultFilter``): an RBAC filter of the same name and kind. Fail-closed (any
    ``failure_policy`` but ``FAIL_OPEN``) gets an empty rule set, which denies everything, and
    the stat prefix ``wasm-default-deny``; ``FAIL_OPEN`` gets no rules (allows everything) and
    ``wasm-default-allow``."""
    typed = extension["typed_config"]
    config = typed["config"]
    policy = config.get("failure_policy", "UNSPECIFIED")
    # Istio reads the deprecated `fail_open` bool only when failure_policy is unset.
    fail_open = policy == "FAIL_OPEN" if policy != "UNSPECIFIED" else bool(config.get("fail_open"))
    prefix = PULL_FAILED_STAT_PREFIX[fail_open]
    if typed["@type"] == NETWORK_WASM:
        rbac = {"@type": NETWORK_RBAC, "stat_prefix": prefix}
    elif typed["@type"] == HTTP_WASM:
        rbac = {"@type": HTTP_RBAC, "rules_stat_prefix": prefix}
    else:
        raise PatchError(f"{extension['name']}: not a Wasm filter: {typed['@type']}")
    if not fail_open:
        rbac["rules"] = {}  # present and empty: action ALLOW with no policy matches nothing
    return {"name": extension["name"], "typed_config": rbac}


def agent_forwards(extension_configs: list[dict[str, Any]], wasm: Path, *,
                   pull_fails: bool = False) -> dict[str, dict[str, Any]]:
    """What istio-agent hands Envoy for each EXTENSION_CONFIG, by name: the filter with its
    module's OCI reference replaced by the local file ``wasm`` (what it does after pulling the
    image), or, with ``pull_fails``, its substitute for a module it could not fetch
    (:func:`pull_failed_substitute`)."""
    forwarded = {}
    for ext in copy.deepcopy(extension_configs):
        vm = ext["typed_config"]["config"]["vm_config"]
        remote = vm["code"].pop("remote", None)
        if remote is not None:
            if not remote["http_uri"]["uri"].startswith("oci://"):
                raise PatchError(f"{ext['name']}: module is not an OCI image: {remote}")
            vm["code"]["local"] = {"filename": str(wasm)}
            if pull_fails:
                ext = pull_failed_substitute(ext)
        forwarded[ext["name"]] = ext
    return forwarded


def _ecds_path(directory: Path, name: str) -> Path:
    # A TrafficExtension's resource name has slashes.
    return directory / f"ecds-{name.replace('/', '_')}.yaml"


def write_extension_configs(directory: Path, forwarded: dict[str, dict[str, Any]]) -> None:
    """Write (or replace) each resource's file-based ECDS response. A replacement is a
    temporary file renamed over the watched path, as Envoy needs to see an update."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, ext in forwarded.items():
        path = _ecds_path(directory, name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"resources": [{"@type": TYPED_EXTENSION_CONFIG, **ext}]},
                                      sort_keys=False))
        tmp.chmod(0o644)
        os.rename(tmp, path)


def serve_extension_configs(bootstrap: dict[str, Any], extension_configs: list[dict[str, Any]],
                            wasm: Path, directory: Path, *,
                            pull_fails: bool = False) -> dict[str, Any]:
    """Make the bootstrap runnable: every ``config_discovery`` reads its resource from a file in
    ``directory`` holding what istio-agent would forward (:func:`agent_forwards`; its
    ``pull_fails`` too). Raises if a filter refers to a resource no patch provides (Istio would
    send none and the listener would never warm). :func:`write_extension_configs` updates the
    files later."""
    forwarded = agent_forwards(extension_configs, wasm, pull_fails=pull_fails)
    write_extension_configs(directory, forwarded)
    for flt in discovered_filters(bootstrap):
        name = flt["name"]
        if name not in forwarded:
            raise PatchError(f"filter {name!r} refers to an extension config nobody provides")
        source = flt["config_discovery"]["config_source"]
        source.pop("ads", None)
        source["path_config_source"] = {"path": str(_ecds_path(directory, name))}
    # File-based xDS needs a node identity (a sidecar's, as Istio's bootstrap sets it).
    bootstrap.setdefault("node", {"id": "sidecar~127.0.0.1~app.default~default.svc.cluster.local",
                                  "cluster": "app.default"})
    return bootstrap


# --------------------------------------------------------------------------------------------
# TrafficExtension (Istio 1.30+)
# --------------------------------------------------------------------------------------------

# A waypoint's pod as Istio 1.30's waypoint template labels it
# (manifests/charts/istio-control/istio-discovery/files/waypoint.yaml).
WAYPOINT = Proxy("waypoint", "istio-egress", {
    "sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none",
    "service.istio.io/canonical-name": "egress-waypoint",
    "service.istio.io/canonical-revision": "latest", GATEWAY_API_NAME: "egress-waypoint",
    "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
    "gateway.istio.io/managed": "istio.io-mesh-controller"})
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# The filter chains each kind of proxy has, and the mode istiod matches `match[].mode` against
# (pilot/pkg/model/extensions.go, workloadModeForListenerClass). A waypoint's chains are built
# with ListenerClassSidecarInbound (pilot/pkg/networking/core/listener_waypoint.go): SERVER.
PROXY_CHAINS = {"sidecar": {"outbound": "CLIENT", "inbound": "SERVER"},
                "gateway": {"gateway": "CLIENT"},
                "waypoint": {"waypoint": "SERVER"}}


def traffic_extension_cel_errors(doc: dict[str, Any]) -> list[str]:
    """The TrafficExtension CRD's CEL rules (``x-kubernetes-validations``), which
    :func:`validate_spec` does not evaluate."""
    spec, errors = doc.get("spec") or {}, []
    if "selector" in spec and "targetRefs" in spec:
        errors.append("only one of targetRefs or selector can be set")
    if ("wasm" in spec) == ("lua" in spec):
        errors.append("exactly one of wasm or lua must be set")
    if any(ref.get("namespace") for ref in spec.get("targetRefs") or []):
        errors.append("cross namespace referencing is not currently supported")
    return errors


def _traffic_extension_attaches(ext: dict[str, Any], proxy: Proxy) -> bool:
    """``WorkloadPolicyMatcher.ShouldAttachPolicy`` for a TrafficExtension (Istio 1.30,
    pilot/pkg/model/policyattachment.go), after ``TrafficExtensionsByListenerInfo`` has looked in
    the proxy's namespace and the root namespace. Service and ServiceEntry targets (a waypoint's
    attached services) are not emulated."""
    spec, namespace = ext["spec"], ext["metadata"]["namespace"]
    if namespace not in (proxy.namespace, ROOT_NAMESPACE):
        return False
    refs = spec.get("targetRefs") or []
    if any(r["kind"] in ("Service", "ServiceEntry") for r in refs):
        raise PatchError("Service and ServiceEntry targetRefs are not emulated")
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    selected = all(proxy.labels.get(k) == v for k, v in wanted.items())
    gateway = proxy.labels.get(GATEWAY_API_NAME)
    if gateway is None:          # sidecars, and gateways not made from a Gateway API Gateway
        return not refs and selected
    if not refs:                 # waypoints never use selector; other Gateway API gateways do
        return proxy.kind != "waypoint" and selected
    for ref in refs:
        if ref.get("group") != GATEWAY_API_GROUP:
            continue
        if (ref["kind"] == "GatewayClass" and ref["name"] == "istio-waypoint"
                and namespace == ROOT_NAMESPACE and proxy.kind == "waypoint"):
            return True
        if (ref["kind"] == "Gateway" and ref["name"] == gateway
                and namespace == proxy.namespace and ref.get("namespace", "") in ("",
                                                                                 proxy.namespace)):
            return True
    return False


def traffic_extension_chains(ext: dict[str, Any], proxy: Proxy) -> set[str]:
    """The kinds of filter chain of ``proxy`` (keys of :data:`PROXY_CHAINS`) istiod puts the
    extension on: none unless it attaches, then those whose mode ``match`` takes
    (``matchTrafficExtensionSelectors``: no match, UNDEFINED or CLIENT_AND_SERVER take any)."""
    if not _traffic_extension_attaches(ext, proxy):
        return set()
    if any(m.get("ports") for m in ext["spec"].get("match") or []):
        raise PatchError("match[].ports is not emulated")
    modes = [m.get("mode", "UNDEFINED") for m in ext["spec"].get("match") or []]
    return {chain for chain, mode in PROXY_CHAINS[proxy.kind].items()
            if not modes or any(m in ("UNDEFINED", "CLIENT_AND_SERVER", mode) for m in modes)}


def traffic_extension_resource_name(ext: dict[str, Any]) -> str:
    """The ECDS resource name -- and the filter's name in the listener -- istiod gives a Wasm
    TrafficExtension (TrafficExtensionResourceNamePrefix in pilot/pkg/model/extensions.go)."""
    meta = ext["metadata"]
    return f"extensions.istio.io/trafficextension/{meta['namespace']}.{meta['name']}"


# The chains istiod builds with ``buildOutboundCatchAllNetworkFiltersOnly``: its stats filters
# and the tcp_proxy, never an extension (pilot/pkg/networking/core, 1.30.0 and master).
CATCH_ALL_CHAINS = ("virtualOutbound-catchall-tcp", "virtualOutbound-blackhole",
                    "PassthroughFilterChain")
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def apply_traffic_extension(bootstrap: dict[str, Any], ext: dict[str, Any], proxy: Proxy
                            ) -> tuple[list[dict[str, Any]], list[str]]:
    """What istiod (1.30) generates for a Wasm TrafficExtension on ``proxy``, whose listeners
    ``bootstrap`` holds (a sidecar's outbound ones, or a waypoint's): nothing unless it attaches
    to a chain kind (:func:`traffic_extension_chains`); else an ECDS resource named
    :func:`traffic_extension_resource_name`, and a filter configured by it

    * NETWORK: before the chain's terminal filter on every chain but the catch-all ones
      (:data:`CATCH_ALL_CHAINS`), which istiod builds without extensions. On a sidecar that is
      ``tcp_proxy``, or the HTTP connection manager on an HTTP chain (``buildListenerFromEntry``
      in pilot/pkg/networking/core/listener.go); on a waypoint only ``tcp_proxy``: its HTTP
      chains hold the connection manager alone (``buildWaypointInboundHTTPFilters`` in
      listener_waypoint.go; network extensions go in ``buildWaypointNetworkFilters``, the TCP
      chains');
    * HTTP: before the router in every HTTP connection manager.

    Placement among Istio's own filters (stats, metadata exchange, authz) is not emulated: the
    bootstrap has none."""
    chains_of = traffic_extension_chains(ext, proxy)
    if not chains_of:
        return [], []
    if proxy.kind == "sidecar" and chains_of != {"outbound"}:
        raise PatchError("the bootstrap holds a sidecar's outbound listeners only")
    wasm = ext["spec"]["wasm"]
    resource = traffic_extension_resource_name(ext)
    kind = wasm.get("type", "HTTP")
    extension = _wasm_extension(resource, wasm)
    flt = _discovered_filter(resource, kind)
    applied = []
    if kind == "HTTP":
        for lst, fc, hcm in hcms(bootstrap):
            if _insert(hcm["http_filters"], "INSERT_BEFORE", ROUTER, flt):
                applied.append(f"HTTP_FILTER -> {lst['name']}/{fc.get('name')}")
        return [extension], applied
    for lst in listeners(bootstrap):
        for fc in chains(lst):
            if fc.get("name") in CATCH_ALL_CHAINS:
                continue
            names = [f["name"] for f in fc["filters"]]
            if proxy.kind == "waypoint" and HCM in names:
                continue
            terminal = next((n for n in names if n in (TCP_PROXY, HCM)), None)
            if terminal is None:
                raise PatchError(f"{lst['name']}/{fc.get('name')}: no terminal filter")
            _insert(fc["filters"], "INSERT_BEFORE", terminal, flt)
            applied.append(f"NETWORK_FILTER -> {lst['name']}/{fc.get('name')}")
    return [extension], applied


# --------------------------------------------------------------------------------------------
# An ambient egress waypoint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaypointService:
    """A ServiceEntry host bound to the egress waypoint: the address Istio allocated it (what
    ztunnel sends to the waypoint as the destination, and what the waypoint's filters see), its
    port and protocol, and where the waypoint's cluster for it resolves to (a stand-in for DNS
    resolution of the host)."""

    host: str
    vip: str
    port: int
    protocol: str           # "TLS" or "HTTP"
    endpoint: tuple[str, int]


def _ports_excluded(ports: list[int]) -> dict[str, Any]:
    """A listener filter's ``filter_disabled`` for ``ports`` (istiod's
    ``listenerPredicateExcludePorts``: one range, or an or_match of several)."""
    rules = [{"destination_port_range": {"start": p, "end": p + 1}} for p in ports]
    if not rules:
        return {}
    return {"filter_disabled": rules[0] if len(rules) == 1 else {"or_match": {"rules": rules}}}


def waypoint_bootstrap(services: list[WaypointService], port: int) -> dict[str, Any]:
    """An egress waypoint's Envoy, as far as it matters to egress-guard, without HBONE.

    In Istio 1.30 ztunnel carries a connection over HBONE to the waypoint, whose
    ``connect_terminate`` listener ends the tunnel and hands the inner connection to the
    internal listener ``main_internal`` with the original destination -- the ServiceEntry's
    address and port -- as its local address. ``main_internal`` has a filter chain per service
    port, matched on that address and port, built as INBOUND (so ``mode: SERVER``): TCP proxying
    to the ServiceEntry's cluster, or an HTTP connection manager routing to it
    (pilot/pkg/networking/core/listener_waypoint.go).

    Here the tunnel is replaced by iptables REDIRECT to a real listener ``main_internal`` on
    ``port`` with ``original_dst``: the filters see the same local address, the ServiceEntry's.
    As in istiod's ``buildWaypointInternal``: chain and cluster ``inbound-vip|<port>|tcp|<host>``
    (tcp_proxy) for a TLS or TCP port, ``inbound-vip|<port>|http|<host>`` (a connection manager
    alone) for an HTTP port; listener filters original_dst and tls_inspector, the inspector off
    on ports no TLS service uses (the http_inspector istiod adds is off on every port that is not
    sniffed, as none here is). Differences: chains are picked by ``filter_chain_match`` instead
    of istiod's matcher tree on destination IP then port, and the clusters are STATIC at each
    service's ``endpoint`` (istiod's resolve the host)."""
    chains_, clusters = [], []
    for svc in services:
        cluster = f"inbound-vip|{svc.port}|{'http' if svc.protocol == 'HTTP' else 'tcp'}|{svc.host}"
        match = {"destination_port": svc.port,
                 "prefix_ranges": [{"address_prefix": svc.vip, "prefix_len": 32}]}
        if svc.protocol == "HTTP":
            filters = [{"name": HCM, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": f"inbound-vip|{svc.port}|http|{svc.host}",
                "route_config": {"name": f"inbound-vip|{svc.port}|http|{svc.host}",
                                 "virtual_hosts": [{"name": "inbound|http|" + str(svc.port),
                                                    "domains": ["*"],
                                                    "routes": [{"match": {"prefix": "/"},
                                                                "route": {"cluster": cluster}}]}]},
                "http_filters": [{"name": ROUTER, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}]}}]
        elif svc.protocol == "TLS":
            filters = [{"name": TCP_PROXY, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
                         "TcpProxy",
                "stat_prefix": cluster, "cluster": cluster}}]
        else:
            raise PatchError(f"protocol {svc.protocol} is not emulated")
        chains_.append({"name": cluster, "filter_chain_match": match, "filters": filters})
        clusters.append({"name": cluster, "type": "STATIC", "connect_timeout": "5s",
                         "load_assignment": {"cluster_name": cluster, "endpoints": [{
                             "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                 "address": svc.endpoint[0],
                                 "port_value": svc.endpoint[1]}}}}]}]}})
    listener = {
        "name": "main_internal",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "traffic_direction": "INBOUND",
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
                         "OriginalDst"}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector."
                         "v3.TlsInspector"},
             **_ports_excluded(sorted({s.port for s in services if s.protocol != "TLS"}
                                      - {s.port for s in services if s.protocol == "TLS"}))},
        ],
        "filter_chains": chains_,
    }
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 15000}}},
            "static_resources": {"listeners": [listener], "clusters": clusters}}
