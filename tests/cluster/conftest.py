"""Fixtures of the real-node tier: one single-node cluster (nodeharness.py) for the whole
tier, the DTR-like registry on the node's bridge with the workload image in it, and
dtrtrust installed the way a user installs it, ``kubectl apply -k`` of a kustomization
that uses ``deploy/`` with the image component pointing at the locally built image.

Missing prerequisites (not root, binaries or images not built, Debian packages not
installed) skip the tier, or fail it under ``DTRTRUST_STRICT=1`` (``make test``, CI).
Everything is stopped when the tier ends, before the other tiers run.

Timings (node start, install, Ready, pulls) are printed at the end of the run and written
to ``$DTRTRUST_CACHE/node-tier-timings.json`` (the numbers in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "hack" / "image")]

import kubeharness  # noqa: E402
import nodeharness  # noqa: E402
import nodeimages  # noqa: E402

import dtrstack  # noqa: E402

STRICT = os.environ.get("DTRTRUST_STRICT") == "1"
TIMINGS: dict[str, float] = {}
TIMINGS_NOTES: dict[str, str] = {}
NAMESPACE = "dtrtrust-system"


def _unavailable(reason: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"{reason} (DTRTRUST_STRICT=1: a missing prerequisite fails)", pytrace=False)
    pytest.skip(reason)


def timed(name: str, started: float) -> float:
    TIMINGS[name] = round(time.monotonic() - started, 1)
    return TIMINGS[name]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("real-node tier timings (s)")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:<52} {seconds:7.1f}")
    for name, note in TIMINGS_NOTES.items():
        terminalreporter.write_line(f"{name}: {note}")
    out = kubeharness.cache_dir() / "node-tier-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TIMINGS, indent=2) + "\n")


@dataclass
class Node:
    """The running cluster, the images, and what the tests need to find things."""

    cluster: nodeharness.NodeCluster
    images: nodeimages.NodeImages
    project_digest: str
    egress: nodeharness.EgressWatch
    run_dir: Path
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> str:
        return kubeharness.kubectl(self.kubeconfig, *args, check=check, input_text=input_text)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))


@pytest.fixture(scope="package")
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        _unavailable("the real-node tier needs root (a bridge, iptables, mounts, a kubelet)")
    problem = None
    try:
        kubeharness.find_kubectl()
        kube = kubeharness.find_binaries()
        nodeharness.find_node_binaries(kube)
        images = nodeimages.planned()
        if images.missing():
            problem = (
                f"node images not built ({', '.join(images.missing())}): run `make node-images`"
            )
    except kubeharness.HarnessUnavailable as exc:
        problem = str(exc)
    if problem:
        _unavailable(problem)

    # Not under pytest's basetemp, which other pytest runs on the machine may prune while
    # this node runs; a short path, since containerd's socket paths must stay under 108
    # bytes. Kept after the run for its logs, without the node's images.
    run_dir = Path(tempfile.mkdtemp(prefix="dtrtrust-node-"))
    TIMINGS_NOTES["run dir (logs)"] = str(run_dir)
    cluster = nodeharness.NodeCluster(
        run_dir,
        kube,
        pause_image=images.pause_ref,
        import_archives=[images.pause_archive],
    )
    egress = nodeharness.EgressWatch(cluster.network, lambda: nodeharness.node_pids(cluster))
    egress.start()
    failure = None
    started = time.monotonic()
    try:
        cluster.start()
        timed("node start (control plane, containerd, kubelet Ready)", started)
        for name, seconds in cluster.timings.items():
            TIMINGS[f"  {name}"] = round(seconds, 1)
        t = time.monotonic()
        _, digest = cluster.import_image(images.project_archive)
        timed("import the dtrtrust image into containerd", t)
    except kubeharness.HarnessError as exc:
        failure = str(exc)
    if failure:
        egress.stop()
        cluster.stop()
        pytest.fail(f"{failure}\n(logs in {run_dir})", pytrace=False)
    try:
        yield Node(cluster, images, digest, egress, run_dir)
    finally:
        egress.stop()
        cluster.stop()
        # Keep the logs; the images and etcd's data (hundreds of MB) go.
        shutil.rmtree(cluster.node_root / "var/lib/containerd", ignore_errors=True)
        shutil.rmtree(cluster.control_plane.run_dir / "etcd", ignore_errors=True)


@pytest.fixture(scope="package")
def registry(node: Node) -> Iterator[dtrstack.Stack]:
    """The DTR-like registry on the node's bridge address, with the workload image."""
    missing = dtrstack.missing_binaries()
    if missing:
        _unavailable(f"missing {', '.join(missing)}: run `make system-deps`")
    stack = dtrstack.start(node.run_dir / "dtr", host=node.cluster.network.node_ip)
    try:
        stack.push(node.images.workload_layout, node.images.workload_repository)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
def installed(node: Node) -> Node:
    """dtrtrust installed with ``kubectl apply -k``, its operator Deployment Available."""
    repository = node.images.project_ref.rpartition(":")[0]
    install = nodeharness.install_kustomization(
        node.run_dir / "kustomize", repository, node.project_digest
    )
    started = time.monotonic()
    node.notes["apply"] = node.kubectl("apply", "-k", str(install))
    node.kubectl(
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=Available",
        "deployment/dtrtrust-operator",
        "--timeout=180s",
    )
    timed("kubectl apply -k -> operator Available", started)
    return node


@dataclass(frozen=True)
class Trust:
    name: str
    address: str
    stack: dtrstack.Stack


@pytest.fixture(scope="package")
def trust(installed: Node, registry: dtrstack.Stack) -> Trust:
    """A DTRTrust for the registry (pinned /ca fetch, client certificate, docker and
    containerd targets), Ready on the node."""
    node = installed
    node.kubectl(
        "-n",
        NAMESPACE,
        "create",
        "secret",
        "tls",
        "dtr-node-client",
        f"--cert={registry.client_cert}",
        f"--key={registry.client_key}",
    )
    manifest = {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": "dtr-node-tier"},
        "spec": {
            "registry": registry.address,
            "ca": {"fetch": {"pinnedSHA256": [registry.root_sha256]}},
            "clientCertificate": {"secretRef": {"name": "dtr-node-client"}},
            "targets": ["docker", "containerd"],
        },
    }
    started = time.monotonic()
    node.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifest))
    node.kubectl("wait", "--for=condition=Ready", "dtrtrust/dtr-node-tier", "--timeout=180s")
    timed("DTRTrust applied -> Ready", started)
    return Trust("dtr-node-tier", registry.address, registry)
