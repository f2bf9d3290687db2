#!/usr/bin/env python3
"""Start or stop a test cluster by hand (the same harnesses the tests use).

    .venv/bin/python hack/kube/cluster.py start [--run-dir DIR]        # a real single node
    .venv/bin/python hack/kube/cluster.py start --api-only [--crds]    # API server only
    export KUBECONFIG=...                                              # printed by start
    .venv/bin/python hack/kube/cluster.py stop [--run-dir DIR]

``start`` brings up the single-node cluster of tests/cluster/nodeharness.py (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy on
the bridge dtrtrust0, 10.213.0.1) with the locally built dtrtrust and pause images imported
into its containerd; it needs root. ``--api-only`` is the API-server-only cluster of the
integration tests, on 127.0.0.1. The processes keep running after ``start`` returns;
``stop`` ends exactly the PIDs that ``start`` recorded in DIR and undoes its changes to the
host. Logs are in DIR/logs/ (and DIR/control-plane/logs/). Build first with ``make
kube-binaries node-images`` (``make kube-up`` does).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(ROOT / "tests" / "cluster"),
    str(ROOT / "tests" / "integration"),
    str(ROOT / "tests"),
    str(ROOT / "hack" / "image"),
]

import kubeharness  # noqa: E402
import nodeharness  # noqa: E402
import nodeimages  # noqa: E402

DEFAULT_RUN_DIR = ROOT / ".work" / "kube"


def start_api_only(run_dir: Path, install_crds: bool) -> int:
    cluster = kubeharness.LocalCluster(run_dir, kubeharness.find_binaries())
    installed: list[str] = []

    def crds(c: kubeharness.LocalCluster) -> None:
        # Before the controller-manager starts, so its GC watches these kinds at once.
        installed.extend(kubeharness.install_crds(c.kubeconfig, ROOT / "crds"))

    started = time.monotonic()
    cluster.start(tie_to_parent=False, before_controllers=crds if install_crds else None)
    print(
        f"cluster ready at {cluster.server} in {time.monotonic() - started:.1f}s", file=sys.stderr
    )
    if installed:
        print(f"CRDs installed from crds/: {', '.join(installed)}", file=sys.stderr)
    print(f"logs: {run_dir / 'logs'}", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def start_node(run_dir: Path) -> int:
    images = nodeimages.planned()
    if images.missing():
        print(
            f"cluster.py: images not built ({', '.join(images.missing())}): run `make node-images`",
            file=sys.stderr,
        )
        return 1
    cluster = nodeharness.NodeCluster(
        run_dir,
        kubeharness.find_binaries(),
        pause_image=images.pause_ref,
        import_archives=[images.pause_archive, images.project_archive],
    )
    started = time.monotonic()
    cluster.start(tie_to_parent=False)
    print(
        f"node {nodeharness.NODE_NAME} Ready, API server {cluster.server}, "
        f"in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    print(f"images in its containerd: {images.project_ref}, {images.pause_ref}", file=sys.stderr)
    print(f"the node's /etc/containerd, /var/lib, ...: {cluster.node_root}", file=sys.stderr)
    print(f"logs: {cluster.logs} and {cluster.control_plane.run_dir / 'logs'}", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def start(run_dir: Path, api_only: bool, install_crds: bool) -> int:
    if (run_dir / "cluster.json").exists() or (run_dir / "node.json").exists():
        print(f"a cluster is already recorded in {run_dir}: run `stop` first", file=sys.stderr)
        return 1
    shutil.rmtree(run_dir, ignore_errors=True)  # fresh data every time
    if api_only:
        return start_api_only(run_dir, install_crds)
    return start_node(run_dir)


def stop(run_dir: Path) -> int:
    if (run_dir / "node.json").exists():
        stopped = nodeharness.stop_from_state(run_dir)
    else:
        stopped = kubeharness.stop_from_state(run_dir)
    print(
        "stopped " + (", ".join(stopped) if stopped else "nothing (no cluster running)"),
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        help=f"where data, PKI, kubeconfigs and logs go (default {DEFAULT_RUN_DIR})",
    )
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="only etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 (no node)",
    )
    parser.add_argument("--crds", action="store_true", help="with --api-only: install crds/")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            return start(args.run_dir.resolve(), args.api_only, args.crds)
        return stop(args.run_dir.resolve())
    except (kubeharness.HarnessUnavailable, kubeharness.HarnessError) as exc:
        print(f"cluster.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
