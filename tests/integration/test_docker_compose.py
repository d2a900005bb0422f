"""examples/docker-compose/: the compose file is valid, and its Envoy config with its policy runs
the demo's traffic in a real Envoy.

There is no Docker engine here, so the containers are not started. What the demo runs is run
instead: the compose file's envoy.yaml (module path aside) in a network namespace made by the
test, Envoy as uid 1337, and the same redirect.sh with the same arguments as the `init` service.
The "internet" is a second namespace joined to it by a veth pair, with stand-in servers on
198.18.0.x and the metadata address: other hosts, as the real ones are for the containers. The
README's interception rules and decision log lines are checked against what this run installs
and logs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import unavailable
from egress import all_decisions, decision_log, policy_of, set_module, sniffed, wasm_configs
from egress import get as egress_get
from harness import (REPO, Cert, Envoy, HttpServer, NetNS, TcpServer, TlsServer, http_request,
                     tls_client)

DEMO = REPO / "examples" / "docker-compose"
COMPOSE = DEMO / "docker-compose.yaml"
PROXY_UID = 1337


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def demo_envoy() -> dict[str, Any]:
    return yaml.safe_load((DEMO / "envoy.yaml").read_text())


def redirect_args() -> list[str]:
    """The arguments the `init` service passes to redirect.sh."""
    command = " ".join(compose()["services"]["init"]["command"])
    m = re.search(r"sh /redirect\.sh (\d+) (\d+) (\S+)", command)
    assert m, command
    return list(m.groups())


def test_docker_compose_config_accepts_the_file() -> None:
    tool = shutil.which("docker-compose")
    if not tool:
        unavailable("docker-compose not found (apt-get install docker-compose)")
    out = subprocess.run([tool, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert sorted(resolved["services"]) == ["app", "envoy", "init"]


def test_compose_wiring() -> None:
    """One namespace, Envoy as the exempted uid, the tests' redirect.sh, the mounted module."""
    services = compose()["services"]
    envoy, init, app = services["envoy"], services["init"], services["app"]
    assert re.fullmatch(r"envoyproxy/envoy:v\d+\.\d+\.\d+", envoy["image"]), envoy["image"]
    assert envoy["environment"]["ENVOY_UID"] == str(PROXY_UID)
    assert "--disable-hot-restart" in envoy["command"]
    assert init["network_mode"] == app["network_mode"] == "service:envoy"
    assert init["cap_add"] == ["NET_ADMIN"] and "cap_add" not in app
    assert app["depends_on"]["init"]["condition"] == "service_completed_successfully"

    mounts = {v.split(":")[1]: (DEMO / v.split(":")[0]).resolve() for v in
              envoy["volumes"] + init["volumes"]}
    assert mounts["/redirect.sh"] == REPO / "tests/integration/redirect.sh"
    assert mounts["/etc/envoy/envoy.yaml"] == DEMO / "envoy.yaml"
    assert mounts["/etc/envoy/egress_guard.wasm"] == (
        REPO / "target/wasm32-wasip1/release/egress_guard.wasm")

    config = demo_envoy()
    (plugin,) = wasm_configs(config)
    assert plugin["vm_config"]["code"]["local"]["filename"] == "/etc/envoy/egress_guard.wasm"
    listener_port = config["static_resources"]["listeners"][0]["address"]["socket_address"][
        "port_value"]
    admin_port = config["admin"]["address"]["socket_address"]["port_value"]
    assert redirect_args() == [str(listener_port), str(PROXY_UID), str(admin_port)]
    assert envoy["ports"] == [f"127.0.0.1:{admin_port}:{admin_port}"]


def test_demo_envoy_config_validates(envoy_cmd, wasm_path: Path, tmp: Path) -> None:
    ok, output = Envoy.validate(set_module(demo_envoy(), wasm_path), tmp, envoy_cmd=envoy_cmd)
    assert ok, output


# --------------------------------------------------------------------------------------------
# The demo's traffic
# --------------------------------------------------------------------------------------------

DEBIAN, GITHUB, PYPI, FILES, ELSEWHERE, METADATA = (
    "198.18.0.60", "198.18.0.61", "198.18.0.62", "198.18.0.63", "198.18.0.64", "169.254.169.254")


def get(name: str) -> bytes:
    return egress_get(name, "/debian/dists/bookworm/InRelease")


@pytest.fixture
def internet(netns: NetNS) -> Iterator[NetNS]:
    """The hosts the demo reaches: a namespace linked to ``netns`` (198.18.0.1 there, 198.18.0.2
    here) that also holds the stand-ins' addresses and the metadata address."""
    with NetNS() as other:
        netns.link(other, ["198.18.0.1/24"], ["198.18.0.2/24", *(
            f"{a}/32" for a in (DEBIAN, GITHUB, PYPI, FILES, ELSEWHERE, METADATA))])
        netns.run("ip", "route", "add", f"{METADATA}/32", "dev", "eg0")
        yield other


@pytest.fixture
def demo(netns: NetNS, internet: NetNS, start_envoy: Callable[..., Envoy],
         wasm_path: Path) -> Envoy:
    """The demo's Envoy in ``netns`` as uid 1337, intercepted as `init` sets it up: redirect.sh
    with exactly its arguments."""
    envoy = start_envoy(set_module(demo_envoy(), wasm_path), netns=netns, uid=PROXY_UID)
    port, uid, excluded = redirect_args()
    netns.install_redirect(int(port), exempt_uid=int(uid),
                           exclude_ports=[int(p) for p in excluded.split(",")])
    return envoy


def readme_rules() -> list[str]:
    """The interception rules the README shows `init` printing."""
    return [line.split("| ", 1)[1] for line in (DEMO / "README.md").read_text().splitlines()
            if line.startswith("init-1  | -")]


def test_readme_shows_the_rules_init_installs(demo: Envoy, netns: NetNS) -> None:
    """`init` prints the chain (iptables -t nat -S EGRESS_GUARD_OUTPUT); so does this run."""
    shown = readme_rules()
    assert len(shown) == 5, shown
    assert netns.iptables("-t", "nat", "-S", "EGRESS_GUARD_OUTPUT").splitlines() == shown


def normalised(entry: dict[str, Any]) -> dict[str, Any]:
    """A decision log entry with the addresses (not the destination port) as placeholders."""
    out = dict(entry)
    out["src"] = "<ip>:<port>"
    out["dst"] = "<ip>:" + entry["dst"].rpartition(":")[2]
    return out


def readme_log_lines() -> list[dict[str, Any]]:
    lines = []
    for line in (DEMO / "README.md").read_text().splitlines():
        start = line.find('{"decision"')
        if start >= 0:
            lines.append(json.loads(line[start:]))
    return lines


def readme_client_errors() -> list[str]:
    """The curl and git error lines the README shows."""
    return [line for line in (DEMO / "README.md").read_text().splitlines()
            if line.startswith(("curl: (", "fatal: "))]


def client(netns: NetNS, *argv: str) -> str:
    """Run curl or git (Debian 12's, as in the demo's `app`) in the namespace; its stderr."""
    if not shutil.which(argv[0]):
        unavailable(f"`{argv[0]}` not found (apt-get install {argv[0]})")
    out = subprocess.run([*netns.exec_prefix(), *argv], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode != 0, out
    return out.stderr


def test_demo_policy_passes_the_seed_cases_and_stops_the_rest(demo: Envoy, serve, netns,
                                                              internet: NetNS, cert: Cert,
                                                              tmp: Path) -> None:
    envoy = demo
    tls = lambda host: serve(TlsServer(host, 443, internet,  # noqa: E731
                                       certfile=cert.certfile, keyfile=cert.keyfile))
    debian = serve(HttpServer(DEBIAN, 80, internet, label="deb"))
    github, pypi, files, elsewhere = tls(GITHUB), tls(PYPI), tls(FILES), tls(ELSEWHERE)
    elsewhere_http = serve(HttpServer(ELSEWHERE, 80, internet, label="example"))
    metadata = serve(TcpServer(METADATA, 80, netns=internet))

    # apt-get update, git clone, pip download: allowed
    apt = http_request(DEBIAN, 80, get("deb.debian.org"), netns=netns)
    assert apt.status == 200, apt
    for host, name in ((GITHUB, "github.com"), (PYPI, "pypi.org"),
                       (FILES, "files.pythonhosted.org")):
        assert tls_client(host, 443, name, netns=netns).received == b"ping", name
    # The README's denied commands, with the names resolved to the stand-in
    errors = [
        client(netns, "curl", "-sS", "--resolve", f"example.com:443:{ELSEWHERE}",
               "https://example.com/"),
        client(netns, "curl", "-sS", "--resolve", f"example.com:80:{ELSEWHERE}",
               "http://example.com/"),
        client(netns, "curl", "-sS", f"http://{METADATA}/latest/meta-data/"),
        client(netns, "git", "-c", f"http.curloptResolve=gitlab.com:443:{ELSEWHERE}", "clone",
               "https://gitlab.com/gitlab-org/cli.git", str(tmp / "cli")),
    ]

    assert debian.hosts == ["deb.debian.org"]
    assert (github.snis, pypi.snis, files.snis) == (["github.com"], ["pypi.org"],
                                                    ["files.pythonhosted.org"])
    assert all(data == b"" for s in (elsewhere, elsewhere_http) for data in s.received)
    assert metadata.connections == 0
    assert all_decisions(envoy) == {("allow", "rule"): 4, ("deny", "no_match"): 3,
                                    ("deny", "deny_rule"): 1}
    assert sniffed(envoy, "inspector_sni") == 5 and sniffed(envoy, "http_host") == 2

    # What the README shows is what this run printed (addresses aside).
    shown_errors = readme_client_errors()
    assert len(shown_errors) == 4, shown_errors
    printed = "\n".join(errors).splitlines()
    for line in shown_errors:
        assert line in printed, (line, printed)
    logged = [normalised(e) for e in decision_log(envoy, 8)]
    shown = readme_log_lines()
    assert len(shown) == 9, shown
    for line in shown:
        assert line in logged, (line, logged)
    assert policy_of(demo_envoy())["log"] == "all"
