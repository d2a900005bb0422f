"""examples/istio/: every manifest checked against Istio's CRD schemas, and the Envoy config
inside the patches spliced into an Istio-shaped sidecar and run by a real Envoy with traffic.

The Istio-shaped sidecar is envoy/istio-sidecar-outbound.yaml with egress-guard taken out (what
istiod generates); istio.py applies the EnvoyFilters and the WasmPlugin to it with istiod's
matching rules and serves the extension configs from files in place of istio-agent and ADS.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import unavailable
from egress import (ENVOY_DIR, all_decisions, decision_log, get, shipped, sniffed, tls_server)
from harness import REPO, Envoy, HttpServer, NetNS, http_request, tls_client
from istio import (SCHEMA_DIR, SCHEMA_FILES, apply_envoy_filter, apply_wasm_plugin, documents,
                   filter_names, hcms, load_schemas, schema_key, serve_extension_configs,
                   strip_filters, validate_spec)

ISTIO_DIR = REPO / "examples" / "istio"
MANIFESTS = sorted(ISTIO_DIR.glob("*.yaml"))
# Kinds without a CRD schema in the schema file, checked by their own tests below.
OPERATOR = "install.istio.io/v1alpha1/IstioOperator"
TAGS = ["decision", "reason", "outcome", "kind", "rule"]
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
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(SCHEMA_FILES)
    kinds = {key.rsplit("/", 1)[1] for key in load_schemas()}
    assert kinds == {"WasmPlugin", "EnvoyFilter", "ServiceEntry", "Sidecar", "TrafficExtension"}


def test_there_are_manifests() -> None:
    kinds = sorted(schema_key(d) for p in MANIFESTS for d in documents(p))
    assert kinds == ["extensions.istio.io/v1alpha1/WasmPlugin", OPERATOR,
                     "networking.istio.io/v1alpha3/EnvoyFilter",
                     "networking.istio.io/v1alpha3/EnvoyFilter"], kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_istio_crd_schema(path: Path, schemas) -> None:
    for doc in documents(path):
        if schema_key(doc) == OPERATOR:
            continue
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


def test_mesh_config_turns_on_the_stat_tags_the_envoy_configs_use() -> None:
    (doc,) = documents(ISTIO_DIR / "mesh-config.yaml")
    assert schema_key(doc) == OPERATOR
    mesh = doc["spec"]["meshConfig"]
    assert mesh["outboundTrafficPolicy"] == {"mode": "ALLOW_ANY"}
    assert mesh["defaultConfig"]["extraStatTags"] == TAGS
    # Istio turns each extra tag into exactly the stats_tags our Envoy configs carry.
    istio_tags = [{"tag_name": t, "regex": f"({t}=\\.=(.*?);\\.;)"} for t in TAGS]
    for config in ENVOY_DIR.glob("*.yaml"):
        assert shipped(config.name)["stats_config"]["stats_tags"] == istio_tags, config.name


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


def test_every_manifest_uses_the_same_image_and_fails_closed() -> None:
    urls, policies = set(), set()
    for name in ("egress-guard-network.yaml", "egress-guard-http-passthrough-only.yaml"):
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
# Spliced into an Istio-shaped sidecar
# --------------------------------------------------------------------------------------------


def istio_generated() -> dict[str, Any]:
    """envoy/istio-sidecar-outbound.yaml without egress-guard: what istiod generates."""
    return strip_filters(shipped("istio-sidecar-outbound.yaml"), "egress-guard")


def splice(*manifests: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    bootstrap = istio_generated()
    extensions, applied = [], []
    for name in manifests:
        doc = manifest(name)
        apply = apply_wasm_plugin if doc["kind"] == "WasmPlugin" else apply_envoy_filter
        more, where = apply(bootstrap, doc)
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
], ids=["wasmplugin", "passthrough_only"])
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
    """Start the spliced sidecar in ``netns`` as uid 1337 with the REDIRECT rules."""
    def start(*manifests: str) -> Envoy:
        bootstrap, extensions, _ = splice(*manifests)
        for _, _, hcm in hcms(bootstrap):
            hcm["route_config"]["virtual_hosts"].insert(0, copy.deepcopy(MESH_VHOST))
        serve_extension_configs(bootstrap, extensions, wasm_path, tmp / "ecds")
        envoy = start_envoy(bootstrap, netns=netns, uid=PROXY_UID)
        netns.install_redirect(OUTBOUND_PORT, exempt_uid=PROXY_UID, exclude_ports=[ADMIN_PORT])
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
