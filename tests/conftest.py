"""Fixtures shared by every tier: the DTR-like registry and the real clients that talk to it.

A missing prerequisite (a Debian package from `make system-deps`) skips these tests with the
reason, except with ``DTRTRUST_STRICT=1`` (CI, `make test`, `make e2e`), where it fails them: in CI
an end-to-end test must never be skipped silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dtrstack
from dtrstack import Stack, Tool
from operatorproc import OperatorProcess, free_port, wait_listening
from strictmode import require_binaries


def _tool(name: str) -> Tool:
    require_binaries(name)
    path = dtrstack.find_binary(name)
    assert path is not None
    return Tool(path)


@pytest.fixture(scope="session")
def dtr_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The running DTR-like registry, one per test session, stopped by PID at the end."""
    require_binaries(*dtrstack.STACK_BINARIES)
    stack = dtrstack.start(tmp_path_factory.mktemp("dtr-stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def curl() -> Tool:
    return _tool("curl")


@pytest.fixture(scope="session")
def openssl() -> Tool:
    return _tool("openssl")


@pytest.fixture(scope="session")
def skopeo() -> Tool:
    return _tool("skopeo")


@pytest.fixture(scope="session")
def ctr() -> Tool:
    """containerd: `ctr content fetch-object --hosts-dir DIR ADDR/REPO:TAG` needs no daemon."""
    return _tool("ctr")


# --------------------------------------------------------------------------- the operator process

OPERATOR_NAMESPACE = "dtrtrust-system"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def operator_namespace(kube_admin: Any, apply_manifests: Any) -> str:
    """The operator namespace with the RBAC of deploy/ applied."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_admin)
    try:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    apply_manifests([ROOT / "deploy" / "rbac-operator.yaml", ROOT / "deploy" / "rbac-agent.yaml"])
    return OPERATOR_NAMESPACE


@pytest.fixture(scope="session")
def dtrtrust_operator(
    operator_namespace: str,
    service_account_kubeconfig: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """One operator for the session, stopped by PID. Its log must hold no 403."""
    kubeconfig = service_account_kubeconfig(operator_namespace, "dtrtrust-operator")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    port = free_port()
    env = os.environ | {
        "KUBECONFIG": str(kubeconfig),
        "DTRTRUST_NAMESPACE": operator_namespace,
        "DTRTRUST_METRICS_PORT": str(port),
        "DTRTRUST_RESYNC_SECONDS": "3",
        "DTRTRUST_BACKOFF_SECONDS": "1",
        "DTRTRUST_MAX_BACKOFF_SECONDS": "5",
        "DTRTRUST_REGISTRY_TIMEOUT": "5",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dtrtrust.cli", "--verbose", "operator"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    operator = OperatorProcess(proc, log, port, kubeconfig)
    try:
        wait_listening(port, proc, log)
        yield operator
    finally:
        operator.stop()
    forbidden = [
        line for line in operator.log_text().splitlines() if " 403" in line or "Forbidden" in line
    ]
    assert forbidden == [], "the operator hit RBAC denials:\n" + "\n".join(forbidden[:20])
