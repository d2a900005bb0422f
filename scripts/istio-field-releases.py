#!/usr/bin/env python3
"""The first Istio release whose CRDs have each field (and enum value) of the kinds
examples/istio/ uses: WasmPlugin, EnvoyFilter, TrafficExtension.

Reads kubernetes/customresourcedefinitions.gen.yaml of every release tag 1.N.0 of a clone of
https://github.com/istio/api and writes tests/integration/data/istio-field-releases.json:

    {"<group>/<version>/<Kind>": {"<path>": "1.N", "<path>=<VALUE>": "1.N", ...}, ...}

A path is the field's place under `spec`, dotted, with `[]` for a list's items
(`configPatches[].match.listener.filterChain.filter.name`); `path=VALUE` is an enum value.
Fields of the clone's checked-out commit (master) that no release has are "unreleased". The
vendored CRD schemas are master's: test_istio_manifests.py checks this table lists exactly their
fields. Usage: scripts/istio-field-releases.py ISTIO_API_CLONE [OUT]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

KINDS = {("extensions.istio.io", "WasmPlugin", "v1alpha1"),
         ("networking.istio.io", "EnvoyFilter", "v1alpha3"),
         ("extensions.istio.io", "TrafficExtension", "v1alpha1")}
FIRST_MINOR = 8   # the oldest release read: a field it has is "1.8" (it may be older)


def paths(schema: dict, prefix: str = "") -> dict[str, None]:
    out: dict[str, None] = {}
    for value in schema.get("enum") or []:
        out[f"{prefix}={value}"] = None
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out[path] = None
        out.update(paths(sub, path))
    if isinstance(schema.get("items"), dict):
        out.update(paths(schema["items"], prefix + "[]"))
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key) or []:
            out.update(paths(sub, prefix))
    return out


def release_paths(text: str) -> dict[str, dict[str, None]]:
    found = {}
    for doc in yaml.safe_load_all(text):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec.get("versions") or []:
            key = (spec["group"], spec["names"]["kind"], version["name"])
            if key not in KINDS:
                continue
            # apiextensions v1beta1 CRDs (Istio <= 1.9) have one schema for every version.
            schema = ((version.get("schema") or spec.get("validation") or {})
                      .get("openAPIV3Schema") or {})
            spec_schema = (schema.get("properties") or {}).get("spec") or {}
            found[f"{key[0]}/{key[2]}/{key[1]}"] = paths(spec_schema)
    return found


def main() -> None:
    clone = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else (
        Path(__file__).resolve().parent.parent / "tests" / "integration" / "data"
        / "istio-field-releases.json")
    tags = subprocess.run(["git", "-C", str(clone), "tag"], capture_output=True, text=True,
                          check=True).stdout.split()
    releases = sorted((1, int(m[1])) for t in tags
                      if (m := re.fullmatch(r"1\.(\d+)\.0", t)) and int(m[1]) >= FIRST_MINOR)
    since: dict[str, dict[str, str]] = {}
    for major, minor in releases:
        text = subprocess.run(["git", "-C", str(clone), "show",
                               f"{major}.{minor}.0:kubernetes/customresourcedefinitions.gen.yaml"],
                              capture_output=True, text=True, check=True).stdout
        for kind, found in release_paths(text).items():
            table = since.setdefault(kind, {})
            for path in found:
                table.setdefault(path, f"{major}.{minor}")
    # The clone's checked-out commit (master): what is there and in no release yet is
    # "unreleased"; what a release had and master has not is left out (no floor to state).
    head = release_paths(subprocess.run(
        ["git", "-C", str(clone), "show", "HEAD:kubernetes/customresourcedefinitions.gen.yaml"],
        capture_output=True, text=True, check=True).stdout)
    table = {kind: {p: since[kind].get(p, "unreleased") for p in sorted(head[kind])}
             for kind in sorted(head)}
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    out.write_text(json.dumps({"_source": "istio/api kubernetes/customresourcedefinitions.gen.yaml"
                               f" at tags 1.{FIRST_MINOR}.0 to {releases[-1][0]}."
                               f"{releases[-1][1]}.0 and master {commit[:12]}"
                               " (scripts/istio-field-releases.py)",
                               **table}, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
