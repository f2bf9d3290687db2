#!/usr/bin/env python3
"""Start or stop the test cluster by hand (the same harness the integration tests use).

    .venv/bin/python hack/kube/cluster.py start [--run-dir DIR] [--crds]
    export KUBECONFIG=DIR/admin.kubeconfig     # printed by start
    .venv/bin/python hack/kube/cluster.py stop [--run-dir DIR]

The processes keep running after ``start`` returns; ``stop`` ends exactly the PIDs that
``start`` recorded in DIR/cluster.json. Logs are in DIR/logs/. Build the binaries first with
``make kube-binaries``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

import kubeharness  # noqa: E402

DEFAULT_RUN_DIR = ROOT / ".work" / "kube"


def start(run_dir: Path, install_crds: bool) -> int:
    if (run_dir / "cluster.json").exists():
        print(f"a cluster is already recorded in {run_dir}: run `stop` first", file=sys.stderr)
        return 1
    shutil.rmtree(run_dir, ignore_errors=True)  # fresh data every time
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


def stop(run_dir: Path) -> int:
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
    parser.add_argument("--crds", action="store_true", help="also install crds/*.yaml")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            return start(args.run_dir.resolve(), args.crds)
        return stop(args.run_dir.resolve())
    except (kubeharness.HarnessUnavailable, kubeharness.HarnessError) as exc:
        print(f"cluster.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
