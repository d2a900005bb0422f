#!/usr/bin/env bash
# Build egress-guard's Wasm module into an OCI image Istio can pull (WasmPlugin `url: oci://...`,
# or an EnvoyFilter's remote `oci://` code): the "compat" image shape -- one layer, a tar+gzip
# holding the module as /plugin.wasm -- written as an OCI archive.
#
#   usage: scripts/build-image.sh [WASM] [OUT]
#     WASM  the module (default: build it with cargo, then use
#           ${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/egress_guard.wasm)
#     OUT   the OCI archive to write (default: target/egress-guard-oci.tar)
#   env:  IMAGE_TAG   the tag inside the archive (default: the crate version)
#
# Needs buildah (and skopeo to print the result): `apt-get install buildah skopeo`. Runs without
# a daemon; as root it uses the vfs storage driver in a throw-away storage directory, so it
# neither needs nor touches /var/lib/containers. Push the archive with e.g.
#   skopeo copy oci-archive:target/egress-guard-oci.tar docker://registry.example.com/egress-guard:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."

command -v buildah >/dev/null || { echo "build-image.sh: buildah not found (apt-get install buildah skopeo)" >&2; exit 1; }

if [ $# -ge 1 ]; then
    WASM=$1
else
    cargo build --release --target wasm32-wasip1 --lib
    WASM=${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/egress_guard.wasm
fi
OUT=${2:-target/egress-guard-oci.tar}
VERSION=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
TAG=${IMAGE_TAG:-$VERSION}
[ -f "$WASM" ] || { echo "build-image.sh: $WASM not found" >&2; exit 1; }

STORE=$(mktemp -d "${TMPDIR:-/tmp}/egress-guard-image.XXXXXX")
trap 'buildah "${B[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$STORE"' EXIT
B=(--root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs)

ctr=$(buildah "${B[@]}" from scratch)
buildah "${B[@]}" copy --chmod 0644 "$ctr" "$WASM" /plugin.wasm >/dev/null
buildah "${B[@]}" config \
    --label org.opencontainers.image.title=egress-guard \
    --label org.opencontainers.image.version="$VERSION" \
    --label org.opencontainers.image.description="egress-guard proxy-wasm egress filter for Envoy (plugin.wasm)" \
    "$ctr"
# A fixed timestamp: the same module gives the same image digest.
buildah "${B[@]}" commit --quiet --format oci --timestamp 0 --rm "$ctr" "egress-guard:$TAG" >/dev/null
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
buildah "${B[@]}" push --quiet --format oci "egress-guard:$TAG" "oci-archive:$OUT:egress-guard:$TAG"

echo "wrote $OUT (egress-guard:$TAG, plugin.wasm $(sha256sum "$WASM" | cut -d' ' -f1))"
if command -v skopeo >/dev/null; then
    skopeo inspect --raw "oci-archive:$OUT" | python3 -c '
import json, sys
m = json.load(sys.stdin)
for layer in m["layers"]:
    print("layer", layer["mediaType"], layer["digest"], layer["size"])'
fi
