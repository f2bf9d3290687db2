"""Scale benchmark (not a test): 1,000 DTRTrusts, 2 real agents, 1,000 simulated nodes.

Starts the integration tests' real control plane (tests/integration/kubeharness.py; the
DaemonSet controller is left out, so no pods are created for the fake Nodes), then in
one run measures:

1. the API-write floor: a 16-thread client creating N Secrets and N status patches;
2. cold start with the operator already running: create N trusts -> all Ready;
3. cold start with the operator started after them (no status, no bundle Secrets);
4. 2 real ``dtrtrust agent`` processes (Node objects + host roots in a temporary
   directory): agents start -> all Ready with 2/2 nodes;
5. steady state over two resync periods: the operator's API requests per resync (its
   own client counter, ``dtrtrust_api_requests_total``), files written by the agents,
   CPU and RSS of operator and agents;
6. a trust's PEM changed with N trusts present -> the new ca.crt on both agents' disks;
7. N simulated nodes (Node objects plus DTRTrustNode reports written by a 16-thread
   simulator) -> all Ready with N/N nodes.

Prints a Markdown table. Bounded: every wait has a deadline; not part of ``make test``.

    .venv/bin/python bench/scale.py [--trusts 1000] [--nodes 1000] [--changes 20]
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

import kubeharness  # noqa: E402

import certfactory  # noqa: E402
from operatorproc import free_port, terminate  # noqa: E402

NS = "dtrtrust-system"
GROUP, VERSION, PLURAL = "dtrtrust.io", "v1alpha1", "dtrtrusts"
THREADS = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOW = dt.datetime.now(dt.UTC)
CA_A = certfactory.make_ca("Bench Root A", not_before=NOW - dt.timedelta(days=1))
CA_B = certfactory.make_ca("Bench Root B", not_before=NOW - dt.timedelta(days=1))


def log(message: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def parallel(fn: Callable[[int], object], items: Iterable[int]) -> None:
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(fn, items):
            pass


def trust_name(i: int) -> str:
    return f"t{i:04d}"


def trust_body(i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DTRTrust",
        "metadata": {"name": trust_name(i)},
        "spec": {
            "registry": f"r{i}.bench.example",
            "ca": {"pem": CA_A.cert_pem.decode()},
            # No registry traffic: neither the operator's check nor the nodes' probe
            # (the simulated nodes never probe; with it on no trust would be Ready).
            "verify": {"tls": False, "nodes": False},
        },
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, kubeconfig: Path) -> None:
        from kubernetes import client

        self.args = args
        self.work = work
        self.kubeconfig = kubeconfig
        self.admin = kubeharness.api_client(kubeconfig)
        self.admin.configuration.connection_pool_maxsize = THREADS * 2
        self.core = client.CoreV1Api(self.admin)
        self.custom = client.CustomObjectsApi(self.admin)
        self.client = client
        self.operator: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self.port = free_port()
        self.rows: list[tuple[str, str]] = []

    def row(self, what: str, value: str) -> None:
        log(f"{what}: {value}")
        self.rows.append((what, value))

    # --- processes -------------------------------------------------------------------

    def start_operator(self) -> float:
        env = os.environ | {
            "KUBECONFIG": str(self.kubeconfig),
            "DTRTRUST_NAMESPACE": NS,
            "DTRTRUST_METRICS_PORT": str(self.port),
            "DTRTRUST_RESYNC_SECONDS": str(self.args.resync),
        }
        started = time.monotonic()
        out = (self.work / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "dtrtrust.cli", "operator"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        return started

    def stop_operator(self) -> None:
        if self.operator is not None:
            terminate(self.operator)
            self.operator = None

    def start_agents(self) -> float:
        started = time.monotonic()
        for i in range(2):
            host = self.work / f"host-{i}"
            host.mkdir(exist_ok=True)
            env = os.environ | {"KUBECONFIG": str(self.kubeconfig), "DTRTRUST_NAMESPACE": NS}
            argv = [sys.executable, "-m", "dtrtrust.cli", "agent", "--node-name", f"agent-{i}"]
            argv += ["--host-root", str(host)]
            self.agents.append(
                subprocess.Popen(
                    argv,
                    stdout=(self.work / f"agent-{i}.log").open("ab"),
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=ROOT,
                )
            )
        return started

    def wait_healthy(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.port + 1}/healthz"
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the operator's /healthz did not answer within {deadline} s")

    def operator_requests(self) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics"
        total = 0.0
        for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            if line.startswith("dtrtrust_api_requests_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    # --- API helpers -------------------------------------------------------------------

    def wait_ready(self, count: int, nodes: int | None, deadline: float) -> float:
        """Seconds until ``count`` trusts are Ready (and, with ``nodes``, report
        nodes synced == desired == nodes), or raise."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            items = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
            ready = 0
            for item in items:
                status = item.get("status") or {}
                if status.get("observedGeneration") != item["metadata"]["generation"]:
                    continue
                conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
                if conds.get("Ready") != "True":
                    continue
                got = status.get("nodes") or {}
                if nodes is not None and (got.get("desired"), got.get("synced")) != (nodes, nodes):
                    continue
                ready += 1
            if ready >= count:
                return time.monotonic()
            time.sleep(1.0)
        raise SystemExit(f"not all {count} trusts became Ready within {deadline} s")

    def create_node(self, name: str) -> Any:
        client = self.client
        return self.core.create_node(
            client.V1Node(
                metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/os": "linux"})
            )
        )

    # --- phases ------------------------------------------------------------------------

    def floor(self) -> float:
        """A 16-thread client writing N Secrets and N status patches (no operator)."""
        n = self.args.trusts
        self.core.create_namespace(
            self.client.V1Namespace(metadata=self.client.V1ObjectMeta(name="bench-floor"))
        )
        parallel(
            lambda i: self.custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, {**trust_body(i), "metadata": {"name": f"floor-{i}"}}
            ),
            range(n),
        )
        status = {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": "Bench",
                    "message": "a message of a typical length for a condition of a trust",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
                for t in ("CAAvailable", "BundleValid", "RegistryVerified", "NodesSynced", "Ready")
            ],
            "bundle": {"sha256": "sha256:" + "0" * 64, "secretName": "x"},
            "nodes": {"desired": 0, "synced": 0, "summary": "0/0", "outOfSync": []},
        }
        data = {"ca.crt": base64.b64encode(CA_A.cert_pem).decode()}

        def write(i: int) -> None:
            self.core.create_namespaced_secret(
                "bench-floor", {"metadata": {"name": f"floor-{i}"}, "data": data}
            )
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, f"floor-{i}", {"status": status}
            )

        started = time.monotonic()
        parallel(write, range(n))
        took = time.monotonic() - started
        parallel(
            lambda i: self.custom.delete_cluster_custom_object(
                GROUP, VERSION, PLURAL, f"floor-{i}"
            ),
            range(n),
        )
        self.core.delete_namespace("bench-floor")
        return took

    def run(self) -> None:
        n = self.args.trusts
        self.row("machine load (1/5/15 min) at start", load())
        floor = self.floor()
        self.row(f"API-write floor: {n} Secrets + {n} status patches, 16 threads", f"{floor:.1f} s")

        # 2. operator running (its /healthz answers), then N trusts
        self.start_operator()
        self.wait_healthy(120)
        started = time.monotonic()
        parallel(
            lambda i: self.custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, trust_body(i)
            ),
            range(n),
        )
        created = time.monotonic() - started
        took = self.wait_ready(n, None, 900) - started
        self.row(
            f"cold start, operator running: create {n} trusts -> all Ready",
            f"{took:.1f} s ({took / floor:.1f}x floor; the creates alone took {created:.1f} s)",
        )

        # 3. operator started after the trusts
        self.stop_operator()
        self.core.delete_collection_namespaced_secret(NS, label_selector="dtrtrust.io/trust")
        parallel(
            lambda i: self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, trust_name(i), {"status": None}
            ),
            range(n),
        )
        started = self.start_operator()
        took = self.wait_ready(n, None, 900) - started
        self.row(
            f"cold start, operator started after {n} trusts -> all Ready",
            f"{took:.1f} s ({took / floor:.1f}x floor)",
        )

        # 4. two real agents
        for i in range(2):
            self.create_node(f"agent-{i}")
        started = self.start_agents()
        took = self.wait_ready(n, 2, 900) - started
        self.row(f"2 agents start -> all {n} trusts Ready with 2/2 nodes", f"{took:.1f} s")

        # 5. steady state
        time.sleep(self.args.resync * 1.5)
        procs = {"operator": self.operator, "agent-0": self.agents[0], "agent-1": self.agents[1]}
        cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items() if p}
        req0 = self.operator_requests()
        files0 = self.mtimes()
        wall0 = time.monotonic()
        time.sleep(self.args.resync * 2)
        wall = time.monotonic() - wall0
        req = self.operator_requests() - req0
        changed = sum(1 for k, v in self.mtimes().items() if files0.get(k) != v)
        self.row("steady state: operator API requests per resync (2 periods)", f"{req / 2:.0f}")
        self.row("steady state: files written by the agents in 2 resync periods", str(changed))
        for k, p in procs.items():
            if p:
                cpu = (cpu_seconds(p.pid) - cpu0[k]) / wall * 100
                self.row(
                    f"steady state: {k} CPU / RSS",
                    f"{cpu:.1f} % of a core / {rss_mb(p.pid):.0f} MB",
                )

        # 6. change -> file
        lat = []
        for i in range(self.args.changes):
            name, address = trust_name(i), f"r{i}.bench.example"
            targets = [
                self.work / f"host-{a}/etc/docker/certs.d/{address}/ca.crt" for a in range(2)
            ]
            body_line = CA_B.cert_pem.decode().splitlines()[1].encode()
            self.custom.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, {"spec": {"ca": {"pem": CA_B.cert_pem.decode()}}}
            )
            sent = time.monotonic()
            end = sent + 60
            pending = list(targets)
            while pending and time.monotonic() < end:
                pending = [t for t in pending if body_line not in _read(t)]
                if pending:
                    time.sleep(0.002)
            if pending:
                raise SystemExit(f"{pending} did not get the change within 60 s")
            lat.append((time.monotonic() - sent) * 1000)
        ranked = sorted(lat)
        p95 = ranked[max(0, math.ceil(0.95 * len(ranked)) - 1)]
        self.row(
            f"PEM change -> ca.crt on both agents ({n} trusts present), p50 / p95 / max",
            f"{statistics.median(lat):.0f} / {p95:.0f} / {max(lat):.0f} ms",
        )

        # 7. simulated nodes
        sims = self.args.nodes - 2
        hashes = {
            s.metadata.labels["dtrtrust.io/trust"]: s.metadata.annotations[
                "dtrtrust.io/content-hash"
            ]
            for s in self.core.list_namespaced_secret(NS, label_selector="dtrtrust.io/trust").items
        }
        entries = [
            {"name": t, "contentHash": h, "state": "Synced"} for t, h in sorted(hashes.items())
        ]

        def simulate(i: int) -> None:
            node = self.create_node(f"sim-{i:04d}")
            self.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NS,
                "dtrtrustnodes",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "DTRTrustNode",
                    "metadata": {
                        "name": node.metadata.name,
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": node.metadata.name,
                                "uid": node.metadata.uid,
                            }
                        ],
                    },
                    "status": {"nodeName": node.metadata.name, "trusts": entries},
                },
            )

        started = time.monotonic()
        parallel(simulate, range(sims))
        written = time.monotonic() - started
        took = self.wait_ready(n, self.args.nodes, 1200) - started
        self.row(f"{sims} simulated nodes + reports written (16 threads)", f"{written:.1f} s")
        self.row(
            f"{self.args.nodes} nodes: reports start -> all {n} trusts Ready, "
            f"{self.args.nodes}/{self.args.nodes} nodes",
            f"{took:.1f} s",
        )
        if self.operator:
            time.sleep(self.args.resync)
            self.row("operator RSS at the end", f"{rss_mb(self.operator.pid):.0f} MB")
        self.row("machine load (1/5/15 min) at the end", load())

    def mtimes(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for i in range(2):
            for path in (self.work / f"host-{i}").rglob("*"):
                if path.is_file():
                    found[str(path)] = path.stat().st_mtime_ns
        return found

    def stop(self) -> None:
        for agent in self.agents:
            terminate(agent)
        self.stop_operator()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trusts", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--resync", type=float, default=30.0, help="operator resync period (s)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dtrtrust-scale-"))
    # No DaemonSet controller: it would create a pod per fake Node.
    kubeharness.CONTROLLERS = "garbagecollector,namespace,serviceaccount-token,serviceaccount"
    cluster = kubeharness.LocalCluster(work / "kube", kubeharness.find_binaries())

    def crds(c: kubeharness.LocalCluster) -> None:
        kubeharness.install_crds(c.kubeconfig, ROOT / "crds", [])

    cluster.start(before_controllers=crds)
    bench = Bench(args, work, cluster.kubeconfig)
    try:
        bench.core.create_namespace(
            bench.client.V1Namespace(metadata=bench.client.V1ObjectMeta(name=NS))
        )
        bench.run()
    finally:
        bench.stop()
        cluster.stop()
    print(
        f"| measure ({args.trusts} trusts, {args.nodes} nodes, "
        f"resync {args.resync:.0f} s) | value |"
    )
    print("|---|---|")
    for what, value in bench.rows:
        print(f"| {what} | {value} |")
    log(f"logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
