#!/usr/bin/env python3
"""The transcript behind docs/rollout.md: audit -> suggest -> review -> replay -> enforce on a real
Envoy, the shipped sidecar config with iptables REDIRECT in a network namespace (root), its
destinations stand-ins on the namespace's loopback (140.82.112.3:443, 151.101.2.132:80, ...).

    make venv build cli
    sudo .venv/bin/python scripts/rollout-transcript.py   # writes target/rollout/transcript.txt
    sudo .venv/bin/python scripts/rollout-transcript.py --write-doc   # and docs/rollout.md's output

Every command of the walk-through runs in a temporary directory (kept as target/rollout/work)
with the CLI of target/release on PATH; the transcript has each command, its standard output
and error, and its exit code. The traffic's outcomes are checked against what the doc says.
"""
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/integration"))
from harness import (Envoy, NetNS, TcpServer, TlsServer, HttpServer, find_envoy, make_cert, share,
                     tls_client, http_request, tcp_exchange)
from egress import set_module, set_policy, shipped, PG_SSL_REQUEST, get

CLI = os.environ.get("EGRESS_GUARD_CLI") or str(REPO / "target/release/egress-guard")
root = Path(tempfile.mkdtemp(prefix="rollout-")); root.chmod(0o755)
work = root / "work"; work.mkdir()
wasm = share(REPO / "target/wasm32-wasip1/release/egress_guard.wasm", root / "module")
cert = make_cert(root / "cert", ["*.github.com", "github.com", "pypi.org", "*.pythonhosted.org", "localhost"])
transcript = []

def sh(cmd, stdin=None):
    out = subprocess.run(cmd, shell=True, cwd=work, capture_output=True, text=True, input=stdin,
                         env={**os.environ, "PATH": f"{Path(CLI).parent}:{os.environ['PATH']}"})
    transcript.append((cmd, out.stdout, out.stderr, out.returncode))
    return out

TLS = {"140.82.112.3": ["github.com"], "140.82.112.6": ["api.github.com", "api.github.com"],
       "140.82.112.9": ["codeload.github.com"], "140.82.112.10": ["uploads.github.com"],
       "151.101.0.223": ["pypi.org"], "151.101.64.223": ["files.pythonhosted.org"]}
HTTP = {"151.101.2.132": ["deb.debian.org"], "151.101.130.132": ["security.debian.org"]}
DB = "203.0.113.10"
METADATA = "169.254.169.254"

AUDIT = """{
  "mode": "audit",
  "allow": [
    {"name": "github", "hosts": ["github.com", "api.github.com"]}
  ],
  "deny": [
    {"name": "cloud-metadata", "cidrs": ["169.254.169.254/32"]}
  ],
  "log": "all"
}
"""

def traffic(ns):
    res = {}
    for ip, names in TLS.items():
        for n in names:
            r = tls_client(ip, 443, n, netns=ns)
            res[f"{n} {ip}:443"] = r.received == b"ping"
    for ip, names in HTTP.items():
        for n in names:
            r = http_request(ip, 80, get(n), netns=ns)
            res[f"{n} {ip}:80"] = r.status == 200
    r = tcp_exchange(DB, 5432, PG_SSL_REQUEST, until=8, netns=ns)
    res[f"{DB}:5432"] = r.received == PG_SSL_REQUEST
    r = http_request(METADATA, 80, get(METADATA), netns=ns)
    res[f"{METADATA}:80"] = r.status == 200
    return res

def start(ns, policy_text, name):
    cfg = set_module(shipped("sidecar-outbound.yaml"), wasm)
    set_policy(cfg, policy_text)
    d = root / name; d.mkdir(); d.chmod(0o755)
    envoy = Envoy(cfg, d, netns=ns, uid=1337, envoy_cmd=find_envoy()).start()
    return envoy

with NetNS() as ns:
    for ip in [*TLS, *HTTP, DB, METADATA]:
        ns.run("ip", "addr", "add", f"{ip}/32", "dev", "lo")
    servers = []
    for ip in TLS:
        servers.append(TlsServer(ip, 443, ns, certfile=cert.certfile, keyfile=cert.keyfile).start())
    for ip in HTTP:
        servers.append(HttpServer(ip, 80, ns, label=ip).start())
    servers.append(TcpServer(DB, 5432, ns).start())
    servers.append(HttpServer(METADATA, 80, ns, label="metadata").start())
    try:
        (work / "audit.json").write_text(AUDIT)
        sh("cat audit.json")
        sh("egress-guard check audit.json")
        envoy = start(ns, (work / "audit.json").read_text(), "audit")
        ns.install_redirect(15001, exempt_uid=1337, exclude_ports=[15000], intercept_loopback=True)
        seen = traffic(ns)
        print("audit", seen)
        assert {k for k, ok in seen.items() if not ok} == {f"{METADATA}:80"}, seen
        time.sleep(1)
        shutil.copy(envoy.log_path, work / "envoy.log")
        envoy.stop()
        # The same audit with the GitHub rule on port 443 only (the pitfall in the doc).
        ns.run("iptables", "-t", "nat", "-F")
        envoy = start(ns, AUDIT.replace('"api.github.com"]}', '"api.github.com"], "ports": [443]}'),
                      "audit-443")
        ns.install_redirect(15001, exempt_uid=1337, exclude_ports=[15000], intercept_loopback=True)
        print("audit, ports 443", traffic(ns))
        time.sleep(1)
        shutil.copy(envoy.log_path, work / "envoy-443.log")
        envoy.stop()
        sh("egress-guard suggest envoy-443.log 2>/dev/null | grep cidrs-80")
        sh("grep -c '\"decision\"' envoy.log")
        sh("grep '\"decision\"' envoy.log | head -n 3")
        sh("egress-guard suggest envoy.log > suggested.json")
        sh("cat suggested.json")
        sh("egress-guard suggest envoy.log --format istio 2>/dev/null | head -n 20")
        sh("egress-guard check suggested.json")
        sh("egress-guard explain suggested.json --sni gist.github.com --port 443")
        # review
        sug = json.loads((work / "suggested.json").read_text())
        allow = [r for r in sug["allow"] if r["name"] not in ("pypi-org", "pythonhosted-org")]
        lines = ",\n".join("    " + json.dumps(r) for r in allow)
        reviewed = ('{\n  "mode": "allowlist",\n  "allow": [\n' + lines + '\n  ],\n'
                    '  "deny": [\n    {"name": "cloud-metadata", "cidrs": ["169.254.169.254/32"]}\n  ]\n}\n')
        (work / "reviewed.json").write_text(reviewed)
        sh("cat reviewed.json")
        sh("egress-guard check reviewed.json")
        sh("egress-guard replay envoy.log --policy reviewed.json")
        sh("egress-guard replay envoy.log --policy suggested.json")
        # enforce
        ns.run("iptables", "-t", "nat", "-F")
        envoy = start(ns, reviewed, "enforce")
        ns.install_redirect(15001, exempt_uid=1337, exclude_ports=[15000], intercept_loopback=True)
        seen = traffic(ns)
        print("enforce", seen)
        assert {k for k, ok in seen.items() if not ok} == {
            "pypi.org 151.101.0.223:443", "files.pythonhosted.org 151.101.64.223:443",
            f"{METADATA}:80"}, seen
        time.sleep(1)
        shutil.copy(envoy.log_path, work / "enforce.log")
        prom = envoy.prometheus()
        (work / "metrics.txt").write_text(prom)
        envoy.stop()
        sh("grep '\"decision\"' enforce.log | sed 's/.*egress-guard: //'")
        sh("grep '^egress_guard_decisions_total' metrics.txt | grep -v ' 0$'")
        sh("grep '^egress_guard_rule_matches_total' metrics.txt")
        sh("egress-guard render reviewed.json --istio --out istio --image oci://registry.example.com/egress-guard:0.1.0")
        sh("ls istio")
        sh("egress-guard check istio/egress-guard-network.yaml istio/egress-guard-http.yaml")
    finally:
        for s in servers:
            s.stop()

out_dir = REPO / "target/rollout"
if out_dir.exists():
    shutil.rmtree(out_dir)
shutil.copytree(work, out_dir / "work")
shutil.rmtree(root, ignore_errors=True)
with open(out_dir / "transcript.txt", "w") as f:
    for cmd, out, err, rc in transcript:
        f.write(f"$ {cmd}\n{out}")
        if err:
            f.write(f"[stderr]\n{err}")
        f.write(f"[exit {rc}]\n\n")
print(out_dir / "transcript.txt")


def write_doc(doc: Path) -> None:
    """Replaces the output under each ``$ command`` of the doc's console blocks with what the
    command printed in this run (``echo $?``: the previous command's exit code). A command the
    run did not make is an error: the doc shows only real output."""
    ran = {cmd: (out + err, rc) for cmd, out, err, rc in transcript}
    lines = doc.read_text().splitlines()
    result, in_console, last_rc = [], False, None
    i = 0
    while i < len(lines):
        line = lines[i]
        result.append(line)
        i += 1
        text = line.lstrip()
        indent = line[:len(line) - len(text)]
        if text.startswith("```"):
            in_console = text == "```console" and not in_console
            continue
        if not (in_console and text.startswith("$ ")):
            continue
        cmd = text[2:]
        if cmd == "echo $?":
            output = f"{last_rc}\n"
        elif cmd in ran:
            output, last_rc = ran[cmd]
        else:
            sys.exit(f"{doc}: `{cmd}` was not run by this script")
        while i < len(lines) and not lines[i].lstrip().startswith(("$ ", "```")):
            i += 1                      # the old output
        result.extend(indent + out_line for out_line in output.splitlines())
    doc.write_text("\n".join(result) + "\n")


if "--write-doc" in sys.argv:
    write_doc(REPO / "docs/rollout.md")
    print("updated docs/rollout.md")
