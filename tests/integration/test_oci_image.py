"""scripts/build-image.sh: the OCI archive holds exactly the built module, as Istio expects it.

The archive is read back without any container tool: index.json -> manifest -> the one layer,
gunzipped and untarred. Istio's "compat" Wasm image shape is an image whose layer is a tar+gzip
holding a file named plugin.wasm; that file must be the module byte for byte. Needs buildah
(apt-get install buildah skopeo) and root (vfs storage); without them the tests skip, and under
CI=true they fail. The archive is also loaded into the Docker engine and read back from there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import unavailable
from harness import REPO
from local_images import docker_available

SCRIPT = REPO / "scripts" / "build-image.sh"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(scope="module")
def build(wasm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``build(name) -> Path``: run the script on the module, writing ``<tmp>/<name>``."""
    if not shutil.which("buildah"):
        unavailable("buildah not found (apt-get install buildah skopeo)")
    if os.geteuid() != 0:
        unavailable("scripts/build-image.sh uses buildah's vfs storage as root")
    directory = tmp_path_factory.mktemp("image")

    def run(name: str) -> Path:
        out = directory / name
        result = subprocess.run([str(SCRIPT), str(wasm_path), str(out)], capture_output=True,
                                text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"wrote {out}" in result.stdout, result.stdout
        return out
    return run


class Archive:
    """An OCI image layout in a tar file, every blob checked against its digest."""

    def __init__(self, path: Path) -> None:
        with tarfile.open(path) as tar:
            self.files = {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                          for m in tar.getmembers() if m.isfile()}

    def json(self, name: str) -> Any:
        return json.loads(self.files[name])

    def blob(self, descriptor: dict[str, Any]) -> bytes:
        algorithm, _, digest = descriptor["digest"].partition(":")
        assert algorithm == "sha256", descriptor
        data = self.files[f"blobs/sha256/{digest}"]
        assert hashlib.sha256(data).hexdigest() == digest, descriptor
        assert len(data) == descriptor["size"], descriptor
        return data


def test_image_holds_the_module_as_plugin_wasm(build, wasm_path: Path) -> None:
    archive = Archive(build("egress-guard-oci.tar"))
    assert json.loads(archive.files["oci-layout"])["imageLayoutVersion"] == "1.0.0"

    (entry,) = archive.json("index.json")["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(archive.blob(entry))
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == LAYER_TYPE
    config = json.loads(archive.blob(manifest["config"]))

    compressed = archive.blob(layer)
    uncompressed = gzip.decompress(compressed)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(uncompressed).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(uncompressed)) as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
        assert [m.name.removeprefix("./").lstrip("/") for m in members] == ["plugin.wasm"]
        assert members[0].isfile()
        plugin = tar.extractfile(members[0]).read()  # type: ignore[union-attr]
    assert plugin == wasm_path.read_bytes()
    assert entry["annotations"]["org.opencontainers.image.ref.name"].startswith("egress-guard:")


def test_same_module_same_image(build) -> None:
    """A fixed timestamp: building twice gives the same manifest digest."""
    first, second = Archive(build("a.tar")), Archive(build("b.tar"))
    assert first.json("index.json") == second.json("index.json")


def test_skopeo_sees_one_layer(build) -> None:
    """What the shared notes say registries and Istio see: one tar+gzip layer."""
    if not shutil.which("skopeo"):
        unavailable("skopeo not found (apt-get install skopeo)")
    path = build("egress-guard-oci.tar")
    out = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{path}"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert [layer["mediaType"] for layer in json.loads(out.stdout)["layers"]] == [LAYER_TYPE]


def test_docker_loads_the_image(build, wasm_path: Path) -> None:
    """Into the Docker engine and out again: one layer, plugin.wasm byte for byte.

    Docker 20.10's `docker load` reads only Docker's own archive format (an OCI archive fails on
    ``blobs/json``), so the archive goes in with ``skopeo copy oci-archive:... docker-daemon:...``
    and comes back out with ``docker save``. The image is removed afterwards.
    """
    if not shutil.which("skopeo"):
        unavailable("skopeo not found (apt-get install skopeo)")
    ok, reason = docker_available()
    if not ok:
        unavailable(reason)
    path = build("egress-guard-oci.tar")
    archive = Archive(path)
    manifest = json.loads(archive.blob(archive.json("index.json")["manifests"][0]))
    diff_ids = json.loads(archive.blob(manifest["config"]))["rootfs"]["diff_ids"]
    tag = f"egress-guard-oci-test:{secrets.token_hex(4)}"

    def docker(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", *args], capture_output=True, timeout=120, check=False)
    try:
        copied = subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{path}",
                                 f"docker-daemon:{tag}"], capture_output=True, text=True,
                                timeout=120, check=False)
        assert copied.returncode == 0, copied.stderr
        inspect = docker("image", "inspect", tag)
        assert inspect.returncode == 0, inspect.stderr
        (image,) = json.loads(inspect.stdout)
        assert image["RootFS"]["Layers"] == diff_ids and len(diff_ids) == 1, image["RootFS"]
        assert image["Config"]["Labels"]["org.opencontainers.image.title"] == "egress-guard"

        saved = docker("save", tag)
        assert saved.returncode == 0, saved.stderr
        with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as tar:
            (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            (layer_path,) = entry["Layers"]
            layer = tar.extractfile(layer_path).read()  # type: ignore[union-attr]
        assert "sha256:" + hashlib.sha256(layer).hexdigest() == diff_ids[0]
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            members = [m for m in tar.getmembers() if not m.isdir()]
            assert [m.name.removeprefix("./").lstrip("/") for m in members] == ["plugin.wasm"]
            plugin = tar.extractfile(members[0]).read()  # type: ignore[union-attr]
        assert plugin == wasm_path.read_bytes()
    finally:
        docker("rmi", "--force", tag)
    assert docker("image", "inspect", tag).returncode != 0, f"{tag} left in Docker"
