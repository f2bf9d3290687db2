"""Fixtures for tests against a real Kubernetes API server (see kubeharness.py).

Session-wide: one cluster per test run, started on first use, with every CRD in the project's
``crds/`` installed and Established.

- ``kube_cluster``: the cluster (server URL, admin kubeconfig, installed CRD names).
  Set ``DTRTRUST_TEST_KUBECONFIG`` to an existing cluster's kubeconfig (kind, k3d) to use it
  instead of starting one.
- ``kubeconfig_path``: the admin kubeconfig (``system:masters``).
- ``kube_admin``: a ``kubernetes.client.ApiClient`` for the admin.
- ``service_account_kubeconfig(namespace, name)``: a kubeconfig acting as that ServiceAccount
  (created if missing; token from the TokenRequest API), to test RBAC for real.
- ``apply_manifests(paths_or_docs)``: server-side apply of files, directories or documents
  (e.g. the RBAC in ``deploy/``) as the admin, with kubectl.
- ``kube_namespace``: a fresh namespace for one test, deleted after it.

Missing prerequisites (binaries not built, kubectl not installed) skip these tests, or fail
them when ``DTRTRUST_STRICT=1`` (``make test`` and CI set it). A cluster that does not start
is always a failure, with the component's log tail.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import kubeharness
import pytest

STRICT = os.environ.get("DTRTRUST_STRICT") == "1"
_timings: dict[str, float] = {}


def _unavailable(reason: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"{reason} (DTRTRUST_STRICT=1: a missing test server fails)", pytrace=False)
    pytest.skip(reason)


@dataclass
class KubeCluster:
    server: str
    kubeconfig: Path
    crds: list[str] = field(default_factory=list)
    local: kubeharness.LocalCluster | None = None  # None for an existing cluster

    @property
    def run_dir(self) -> Path | None:
        """Where logs and the PKI are, for a cluster the harness started."""
        return self.local.run_dir if self.local else None


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    external = os.environ.get("DTRTRUST_TEST_KUBECONFIG")
    missing = None
    binaries = None
    try:
        kubeharness.find_kubectl()
        binaries = None if external else kubeharness.find_binaries()
    except kubeharness.HarnessUnavailable as exc:
        missing = str(exc)
    if missing:  # outside the except: the report shows one line, not a chained traceback
        _unavailable(missing)

    crds_dir = kubeharness.PROJECT_ROOT / "crds"
    installed: list[str] = []

    def install(kubeconfig: Path) -> None:
        started = time.monotonic()
        installed.extend(kubeharness.install_crds(kubeconfig, crds_dir, [kubeharness.SELFTEST_CRD]))
        _timings["CRDs established"] = time.monotonic() - started

    local: kubeharness.LocalCluster | None = None
    failure = None
    try:
        if external:
            kubeconfig = Path(external)
            if not kubeconfig.is_file():
                missing = f"DTRTRUST_TEST_KUBECONFIG={external} is not a file"
            else:
                with kubeharness.api_client(kubeconfig) as admin:
                    server = str(admin.configuration.host)
                install(kubeconfig)
        else:
            assert binaries is not None
            local = kubeharness.LocalCluster(tmp_path_factory.mktemp("kube"), binaries)
            started = time.monotonic()
            # CRDs go in before the controller-manager starts, so its GC watches them at once.
            local.start(before_controllers=lambda c: install(c.kubeconfig))
            _timings["cluster start (with CRDs)"] = time.monotonic() - started
            kubeconfig, server = local.kubeconfig, local.server
    except kubeharness.HarnessError as exc:
        failure = str(exc)
    if missing:
        _unavailable(missing)
    if failure:  # outside the except: one clear report, not a chained traceback
        pytest.fail(failure, pytrace=False)

    try:
        yield KubeCluster(server=server, kubeconfig=kubeconfig, crds=installed, local=local)
    finally:
        if local is not None:
            local.stop()


@pytest.fixture(scope="session")
def kubeconfig_path(kube_cluster: KubeCluster) -> Path:
    return kube_cluster.kubeconfig


@pytest.fixture(scope="session")
def kube_admin(kube_cluster: KubeCluster) -> Iterator[Any]:
    client = kubeharness.api_client(kube_cluster.kubeconfig)
    yield client
    client.close()


@pytest.fixture(scope="session")
def service_account_kubeconfig(
    kube_admin: Any, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Path]:
    directory = tmp_path_factory.mktemp("sa-kubeconfigs")

    def make(namespace: str, name: str) -> Path:
        return kubeharness.service_account_kubeconfig(kube_admin, namespace, name, directory)

    return make


@pytest.fixture(scope="session")
def apply_manifests(
    kube_cluster: KubeCluster,
) -> Callable[[kubeharness.Manifest | Iterable[kubeharness.Manifest]], str]:
    def apply(manifests: kubeharness.Manifest | Iterable[kubeharness.Manifest]) -> str:
        return kubeharness.apply_manifests(kube_cluster.kubeconfig, manifests)

    return apply


@pytest.fixture
def kube_namespace(kube_admin: Any) -> Iterator[str]:
    """A fresh namespace for one test; deleted (not awaited) afterwards."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timings:
        terminalreporter.write_sep("-", "kube harness timings")
        for what, seconds in _timings.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f}s")
