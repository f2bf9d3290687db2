"""Benchmark (not a test): how fast a bundle Secret change reaches a node's files.

Starts the integration tests' real control plane (tests/integration/kubeharness.py), one
Node object and one ``dtrtrust agent`` process under the dtrtrust-agent ServiceAccount
(deploy/ RBAC), then changes the bundle Secret N times and measures, for each change, the
time from the API call returning to the new ca.crt being on disk. Also reports the agent's
resident memory (VmRSS / VmHWM from /proc) and its start-up time (process start to the
first file written). Prints a Markdown table.

With ``--probe`` the bundle turns the per-node probe on and the registry is a real TLS
server on 127.0.0.1 (tests/tlsserver.py) requiring a client certificate: every change
is then probed with the files just written (the probe's ssl/http.client cost shows in
RSS and start-up).

    .venv/bin/python bench/agent_latency.py [--changes 300] [--probe]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

import kubeharness  # noqa: E402

NS = "dtrtrust-system"
NODE = "bench-node"
TRUST = "bench"
ADDRESS = "dtr.bench.example:4443"


# The agent's entry point without dtrtrust.cli (see --direct).
DIRECT = """
import argparse, logging, sys
from dtrtrust.agent.loop import run
p = argparse.ArgumentParser()
p.add_argument("cmd"); p.add_argument("--node-name"); p.add_argument("--host-root")
p.add_argument("--namespace", default="dtrtrust-system")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
sys.exit(run(p.parse_args()))
"""


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    return 0


# --probe: real PEM (two alternating bundles, so each change has a new content hash),
# the registry's address and the client pair.
PROBE: dict[str, Any] = {}


def secret_body(n: int) -> dict[str, Any]:
    ca = f"-----BEGIN CERTIFICATE-----\nbench change {n}\n-----END CERTIFICATE-----\n".encode()
    if PROBE:
        ca = PROBE["bundles"][n % 2]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"dtrtrust-{TRUST}",
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "dtrtrust", "dtrtrust.io/trust": TRUST},
            "annotations": {
                "dtrtrust.io/content-hash": f"sha256:{n:064x}",
                "dtrtrust.io/registries": ADDRESS,
                "dtrtrust.io/targets": "docker",
                "dtrtrust.io/node-selector": "{}",
                "dtrtrust.io/deletion-policy": "Delete",
            },
        },
        "data": {"ca.crt": base64.b64encode(ca).decode()},
    }
    if PROBE:
        notes = body["metadata"]["annotations"]
        notes["dtrtrust.io/registries"] = PROBE["address"]
        notes["dtrtrust.io/node-probe"] = "3600"
        body["data"]["client.cert"] = base64.b64encode(PROBE["cert"]).decode()
        body["data"]["client.key"] = base64.b64encode(PROBE["key"]).decode()
    return body


def wait_for(path: Path, want: bytes, timeout: float = 10.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if path.read_bytes() == want:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.001)
    raise SystemExit(f"{path} did not get the new content within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument(
        "--direct",
        action="store_true",
        help="start the agent without the dtrtrust command line module (which imports the "
        "certificate core, i.e. cryptography), to show what that import costs",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="turn the per-node probe on against a real TLS registry on 127.0.0.1",
    )
    args = parser.parse_args()
    from kubernetes import client

    server = None
    if args.probe:
        from certfactory import make_ca, make_leaf
        from tlsserver import TLSServer, basic_info_route, valid_now

        root, other = make_ca("bench probe root"), make_ca("bench other root")
        leaf = make_leaf("bench", root, sans=["localhost"], ip_sans=["127.0.0.1"], **valid_now())
        client_pair = make_leaf("bench node", root, sans=[], eku=["clientAuth"], **valid_now())
        server = TLSServer(
            chain_pem=leaf.chain_pem,
            key_pem=leaf.key_pem,
            routes={"/basic_info": basic_info_route()},
            client_ca_pem=root.cert_pem,
        ).start()
        PROBE.update(
            address=server.address,
            bundles=(root.cert_pem, root.cert_pem + other.cert_pem),
            cert=client_pair.chain_pem,
            key=client_pair.key_pem,
        )

    work = Path(tempfile.mkdtemp(prefix="dtrtrust-bench-"))
    cluster = kubeharness.LocalCluster(work / "kube", kubeharness.find_binaries())
    cluster.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        crds = sorted((ROOT / "crds").glob("dtrtrust.io_*.yaml"))
        kubeharness.apply_manifests(cluster.kubeconfig, crds)
        admin = kubeharness.api_client(cluster.kubeconfig)
        kubeharness.wait_for_crds_established(admin, kubeharness.crd_names(crds))
        core = client.CoreV1Api(admin)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        kubeharness.apply_manifests(cluster.kubeconfig, [ROOT / "deploy" / "rbac-agent.yaml"])
        kubeconfig = kubeharness.service_account_kubeconfig(admin, NS, "dtrtrust-agent", work)
        core.create_node(
            client.V1Node(
                metadata=client.V1ObjectMeta(name=NODE, labels={"kubernetes.io/os": "linux"})
            )
        )
        core.create_namespaced_secret(NS, secret_body(0))
        host = work / "host"
        host.mkdir()
        ca_file = host / "etc/docker/certs.d" / PROBE.get("address", ADDRESS) / "ca.crt"
        env = os.environ | {"KUBECONFIG": str(kubeconfig), "DTRTRUST_NAMESPACE": NS}
        started = time.monotonic()
        argv = [sys.executable, "-m", "dtrtrust.cli", "agent"]
        if args.direct:
            argv = [sys.executable, "-c", DIRECT, "agent"]
        argv += ["--node-name", NODE, "--host-root", str(host)]
        agent = subprocess.Popen(
            argv,
            stdout=(work / "agent.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        first = base64.b64decode(secret_body(0)["data"]["ca.crt"])
        startup = wait_for(ca_file, first, timeout=30) - started
        latencies: list[float] = []
        for n in range(1, args.changes + 1):
            body = secret_body(n)
            core.replace_namespaced_secret(f"dtrtrust-{TRUST}", NS, body)
            sent = time.monotonic()
            arrived = wait_for(ca_file, base64.b64decode(body["data"]["ca.crt"]))
            latencies.append((arrived - sent) * 1000)
        time.sleep(1)
        rss = proc_status(agent.pid, "VmRSS") / 1024
        hwm = proc_status(agent.pid, "VmHWM") / 1024
        q = statistics.quantiles(latencies, n=100)
        what = f"{args.changes} Secret changes, 1 agent, 1 trust, docker target"
        if args.probe:
            probes = sum(r.path == "/basic_info" for r in server.requests) if server else 0
            what += f", probe on ({probes} probes)"
        print(f"| metric ({what}) | value |")
        print("|---|---|")
        print(f"| change -> file on disk, p50 | {q[49]:.1f} ms |")
        print(f"| change -> file on disk, p95 | {q[94]:.1f} ms |")
        print(f"| change -> file on disk, max | {max(latencies):.1f} ms |")
        print(f"| agent resident memory (VmRSS) after the run | {rss:.1f} MB |")
        print(f"| agent peak resident memory (VmHWM) | {hwm:.1f} MB |")
        print(f"| agent start-up to first file written | {startup * 1000:.0f} ms |")
        return 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=20)
        cluster.stop()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
