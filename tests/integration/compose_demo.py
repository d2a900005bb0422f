"""The docker-compose demo, run for real: `make demo-compose` and test_docker_compose.py.

:class:`ComposeDemo` runs examples/docker-compose/docker-compose.yaml -- the file users run --
together with examples/docker-compose/standins.yaml (stand-ins for the internet, each in its own
container on the compose network) under the Docker engine, with ``docker-compose``:

- the public images the file names are replaced, through its variables, by images built here
  (local_images.py): no registry is reached, nothing is pulled;
- the project name, the image tags and the admin's host port are the run's own, so runs do not
  collide with each other or with a user's `docker-compose up`;
- leaving the ``with`` block takes everything down -- containers, the network, both images --
  and checks that nothing of the run is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO, HarnessError, make_cert, share, wait_until
from local_images import docker_available, envoy_image, remove_images, tools_image

DEMO = REPO / "examples" / "docker-compose"
COMPOSE_FILE = DEMO / "docker-compose.yaml"
STANDINS_FILE = DEMO / "standins.yaml"
STANDINS = ("mirror", "github", "pypi", "elsewhere", "metadata")
# The names the stand-ins answer for (their network aliases), on the certificate they present.
NAMES = ["deb.debian.org", "security.debian.org", "github.com", "api.github.com",
         "codeload.github.com", "pypi.org", "files.pythonhosted.org", "example.com", "gitlab.com"]


@dataclass(frozen=True)
class Case:
    """A command the demo runs in `app`, and the stand-in that answers for its destination."""

    argv: tuple[str, ...]
    standin: str
    allowed: bool  # by the demo's policy (envoy.yaml)


# What `make demo-compose` sends, and the test with it: apt's, git's and pip's destinations by
# the names the policy allows; the README's denied commands, verbatim.
CASES = [
    Case(("curl", "-sS", "http://deb.debian.org/debian/dists/bookworm/InRelease"), "mirror", True),
    Case(("curl", "-sSk", "https://github.com/"), "github", True),
    Case(("curl", "-sSk", "https://pypi.org/simple/"), "pypi", True),
    Case(("curl", "-sSk", "https://files.pythonhosted.org/"), "pypi", True),
    Case(("curl", "-sS", "https://example.com/"), "elsewhere", False),
    Case(("curl", "-sS", "http://example.com/"), "elsewhere", False),
    Case(("curl", "-sS", "http://169.254.169.254/latest/meta-data/"), "metadata", False),
    Case(("git", "clone", "https://gitlab.com/gitlab-org/cli.git", "cli"), "elsewhere",
         False),
]

COMMAND_WIDTH = max(len(" ".join(case.argv)) for case in CASES)


@dataclass
class Outcome:
    """What one :class:`Case` did: the command's result and what its stand-in received."""

    case: Case
    result: subprocess.CompletedProcess[str]
    received: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return self.result.returncode == 0

    def error(self) -> str:
        """The client's last error line (curl's or git's)."""
        lines = [line for line in self.result.stderr.splitlines()
                 if line.startswith(("curl:", "fatal:"))]
        return lines[-1] if lines else self.result.stderr.strip()

    def got(self) -> str:
        """What the stand-in received, in a few words."""
        if not self.received:
            return "nothing"
        parts = []
        for entry in self.received:
            if not entry["bytes"]:
                parts.append("a connection, 0 bytes")
                continue
            parts.append(f"{entry['bytes']} bytes"
                         + (f", SNI {entry['sni']}" if entry.get("sni") else "")
                         + (f", Host {entry['host']}" if entry.get("host") else ""))
        return "; ".join(parts)

    def rows(self, width: int = COMMAND_WIDTH) -> list[str]:
        """The demo's table rows for this case: command, outcome, what the stand-in got (and
        the client's error)."""
        rows = [f"  {' '.join(self.case.argv):{width}}  {'ALLOWED' if self.passed else 'DENIED':7}"
                f"  {self.case.standin}: {self.got()}"]
        if not self.passed:
            rows.append(f"  {'':{width}}  {'':7}  {self.error()}")
        return rows


class ComposeError(HarnessError):
    """docker-compose failed, or the demo did not come up."""


def compose_available() -> tuple[bool, str]:
    """Whether docker-compose and a Docker engine are here (and why not)."""
    if not shutil.which("docker-compose"):
        return False, "docker-compose not found (apt-get install docker-compose)"
    return docker_available()


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ComposeDemo:
    """The compose demo, up for the length of a ``with`` block.

    ``workdir`` (in /tmp) receives the module and the stand-ins' certificate; ``wasm`` is the
    module Envoy loads; ``envoy_cmd`` finds the Envoy binary put into the image.
    """

    def __init__(self, wasm: Path, workdir: Path, envoy_cmd: list[str], *,
                 name: str = "egress-guard-compose", admin_port: int | None = None) -> None:
        self.project = f"{name}-{secrets.token_hex(3)}"
        self.workdir = workdir
        self.envoy_cmd = envoy_cmd
        self.wasm = wasm
        self.admin_port = admin_port or free_port()
        self.envoy_tag = f"{name}/envoy:{self.project}"
        self.tools_tag = f"{name}/debian-tools:{self.project}"
        self.env: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.started = False

    # -- up and down ----------------------------------------------------------------------

    def start(self) -> ComposeDemo:
        """Bring it up (once); on any failure take down what was started, then raise."""
        if not self.started:
            try:
                self.up()
            except BaseException:
                self.down()
                raise
            self.started = True
        return self

    def __enter__(self) -> ComposeDemo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        t0 = time.monotonic()
        envoy_image(self.envoy_tag, self.envoy_cmd)
        tools_image(self.tools_tag)
        self.timings["images"] = time.monotonic() - t0
        cert = make_cert(self.workdir / "certs", NAMES)
        for path in (cert.certfile, cert.keyfile):
            path.chmod(0o644)
        module = share(self.wasm, self.workdir / "module")
        self.env = {
            "ENVOY_IMAGE": self.envoy_tag,
            "INIT_IMAGE": self.tools_tag,
            "APP_IMAGE": self.tools_tag,
            "STANDIN_IMAGE": self.tools_tag,
            "STANDIN_CERTS": str(cert.certfile.parent),
            "EGRESS_GUARD_WASM": str(module),
            "ENVOY_ADMIN_PORT": str(self.admin_port),
        }
        t0 = time.monotonic()
        self.compose("up", "-d")
        for one_shot in ("init", "pod-route"):
            code = self.docker("wait", self.container(one_shot), timeout=60).strip()
            if code != "0":
                raise ComposeError(f"`{one_shot}` exited {code}:\n{self.logs(one_shot)}")
        for service in STANDINS:
            wait_until(lambda s=service: any("ready" in r for r in self.received(s, all_=True)),
                       timeout=60, describe=lambda s=service: f"stand-in {s}:\n{self.logs(s)}")
        wait_until(self._envoy_ready, timeout=60,
                   describe=lambda: f"Envoy's admin on 127.0.0.1:{self.admin_port}:\n"
                                    + self.logs("envoy"))
        self.timings["up"] = time.monotonic() - t0

    def _envoy_ready(self) -> bool:
        try:
            return self.admin("/ready").strip() == "LIVE"
        except OSError:
            return False

    def down(self) -> None:
        """Take everything of the run away; raise if anything is left."""
        t0 = time.monotonic()
        if self.env:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        remove_images(self.envoy_tag, self.tools_tag)
        self.timings["down"] = time.monotonic() - t0
        left = self.leftovers()
        if left:
            raise ComposeError(f"left behind by {self.project}: {left}")

    def leftovers(self) -> list[str]:
        """Containers, networks and images of this run that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        left = self.docker("ps", "--all", "--quiet", "--filter", label).split()
        left += self.docker("network", "ls", "--quiet", "--filter", label).split()
        left += [t for t in (self.envoy_tag, self.tools_tag) if subprocess.run(
            ["docker", "image", "inspect", t], capture_output=True, timeout=60,
            check=False).returncode == 0]
        return left

    # -- commands -------------------------------------------------------------------------

    def compose_argv(self, files: tuple[Path, ...] = (COMPOSE_FILE, STANDINS_FILE)) -> list[str]:
        return ["docker-compose", "--project-name", self.project,
                *(a for f in files for a in ("--file", str(f)))]

    def compose(self, *args: str, check: bool = True, timeout: float = 300,
                files: tuple[Path, ...] = (COMPOSE_FILE, STANDINS_FILE),
                ) -> subprocess.CompletedProcess[str]:
        """``docker-compose ARGS`` for this run's project; ``files`` the compose files given
        (by default both; the user's file alone shows what users see)."""
        out = subprocess.run([*self.compose_argv(files), *args], capture_output=True, text=True,
                             timeout=timeout, check=False, env={**os.environ, **self.env},
                             stdin=subprocess.DEVNULL)
        if check and out.returncode != 0:
            raise ComposeError(f"docker-compose {' '.join(args)}: exit {out.returncode}\n"
                               f"{out.stdout}{out.stderr}")
        return out

    @staticmethod
    def docker(*args: str, timeout: float = 60) -> str:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                             check=False)
        if out.returncode != 0:
            raise ComposeError(f"docker {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def container(self, service: str) -> str:
        """The id of the service's (one) container."""
        ids = self.compose("ps", "--all", "-q", service).stdout.split()
        if len(ids) != 1:
            raise ComposeError(f"{service}: containers {ids}")
        return ids[0]

    def app(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``docker-compose exec app ARGV``: runs in the pod, its traffic intercepted."""
        return self.compose("exec", "-T", "app", *argv, check=False, timeout=timeout)

    def logs(self, service: str) -> str:
        """The service's output (stdout and stderr), no prefixes."""
        out = subprocess.run(["docker", "logs", self.container(service)], capture_output=True,
                             text=True, timeout=60, check=False)
        return out.stdout + out.stderr

    def compose_logs(self, service: str) -> list[str]:
        """``docker-compose -f docker-compose.yaml logs --no-color SERVICE``: the lines a user
        of the file alone sees, prefixes and all."""
        out = self.compose("logs", "--no-color", service, files=(COMPOSE_FILE,))
        return [line for line in out.stdout.splitlines() if "|" in line]

    def received(self, service: str, *, all_: bool = False) -> list[dict[str, Any]]:
        """What a stand-in logged: one entry per connection (with ``all_``, its ready line too)."""
        entries = []
        for line in self.logs(service).splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if all_ or "ready" not in entry:
                    entries.append(entry)
        return entries

    def run_cases(self, cases: list[Case] = CASES) -> list[Outcome]:
        """Run each case in `app`, one after the other; what each did."""
        outcomes = []
        for case in cases:
            before = len(self.received(case.standin))
            result = self.app(*case.argv)
            # A stand-in logs a connection when it ends, which may be just after the client
            # has its answer; a denied one may still log a connection without a byte.
            if result.returncode == 0:
                wait_until(lambda: len(self.received(case.standin)) > before, timeout=10,
                           describe=f"{case.standin} to log the connection of {case.argv}")
            else:
                time.sleep(0.3)
            outcomes.append(Outcome(case, result, self.received(case.standin)[before:]))
        return outcomes

    def decisions(self) -> list[dict[str, Any]]:
        """egress-guard's decision log lines in Envoy's output, in order."""
        out = []
        for line in self.logs("envoy").splitlines():
            start = line.find('{"decision"')
            if start >= 0:
                out.append(json.loads(line[start:]))
        return out

    def admin(self, path: str) -> str:
        """GET from Envoy's admin through the port published on the host's loopback."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                    timeout=5) as response:
            return response.read().decode()

    def counters(self) -> dict[str, int]:
        """``egress_guard_*`` lines of /stats/prometheus, name{labels} -> value."""
        out = {}
        for line in self.admin("/stats/prometheus").splitlines():
            if line.startswith("egress_guard_"):
                key, _, value = line.rpartition(" ")
                out[key] = int(float(value))
        return out
