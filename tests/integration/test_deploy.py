"""deploy/ on a real API server: ``kubectl apply -k deploy/`` is accepted as it is, and
the ServiceAccounts it creates can do what the operator and the agent need and nothing
more, proven with ``kubectl auth can-i`` acting as those ServiceAccounts (real tokens).

No kubelet runs in the harness, so the operator Deployment is stored but never started;
the operator's own integration tests run it under exactly this RBAC.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubeharness
import pytest
from kubernetes import client

pytestmark = pytest.mark.kube

DEPLOY = kubeharness.PROJECT_ROOT / "deploy"
NAMESPACE = "dtrtrust-system"
# Granted to every authenticated user (system:basic-user): asking what one may do.
SELF_REVIEWS = {
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


@pytest.fixture(scope="module")
def installed(apply_manifests: Callable[[Any], str]) -> str:
    """``kubectl apply --server-side -k deploy/`` as the cluster admin."""
    return apply_manifests(DEPLOY)


@pytest.fixture(scope="module")
def as_operator(installed: str, service_account_kubeconfig: Callable[[str, str], Path]) -> Path:
    return service_account_kubeconfig(NAMESPACE, "dtrtrust-operator")


@pytest.fixture(scope="module")
def as_agent(installed: str, service_account_kubeconfig: Callable[[str, str], Path]) -> Path:
    return service_account_kubeconfig(NAMESPACE, "dtrtrust-agent")


def can_i(kubeconfig: Path, verb: str, resource: str, where: str) -> str:
    """``kubectl auth can-i``; ``where`` is a namespace, ``cluster`` or ``all``."""
    args = ["auth", "can-i", verb]
    resource, _, subresource = resource.partition("/")
    args.append(resource)
    if subresource:
        args.append(f"--subresource={subresource}")
    if where == "all":
        args.append("--all-namespaces")
    elif where != "cluster":
        args += ["-n", where]
    return kubeharness.kubectl(kubeconfig, *args, check=False).strip().splitlines()[-1]


def written_resources(kubeconfig: Path, namespace: str) -> dict[str, set[str]]:
    """Resources with a write verb in ``kubectl auth can-i --list``, and those verbs."""
    table = kubeharness.kubectl(kubeconfig, "auth", "can-i", "--list", "-n", namespace)
    result: dict[str, set[str]] = {}
    for line in table.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[.*?\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        if not match:
            continue
        resource, names, verbs = match[1], match[2], set(match[3].split())
        assert not names or resource in SELF_REVIEWS, f"unexpected resourceNames: {line}"
        if verbs & WRITE_VERBS:
            result.setdefault(resource, set()).update(verbs & WRITE_VERBS)
    return result


def test_rendered_manifests_apply_and_keep_their_security_settings(
    installed: str, kube_admin: Any
) -> None:
    apps, core = client.AppsV1Api(kube_admin), client.CoreV1Api(kube_admin)
    namespace = core.read_namespace(NAMESPACE)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "privileged"
    deployment = apps.read_namespaced_deployment("dtrtrust-operator", NAMESPACE)
    pod = deployment.spec.template.spec
    container = pod.containers[0]
    # Fields the API server would silently drop if it did not know them.
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert deployment.spec.strategy.type == "Recreate"
    service = core.read_namespaced_service("dtrtrust-operator-metrics", NAMESPACE)
    assert service.spec.ports[0].target_port == "metrics"
    for name in ("dtrtrust-operator", "dtrtrust-agent"):
        assert core.read_namespaced_service_account(name, NAMESPACE)


def test_applying_again_changes_nothing(installed: str, kubeconfig_path: Path) -> None:
    """No field is defaulted away or fought over: a second apply is a no-op (what Argo CD
    sees as "no drift" for the manifests themselves)."""
    done = subprocess.run(
        [
            str(kubeharness.find_kubectl()),
            f"--kubeconfig={kubeconfig_path}",
            "diff",
            "--server-side",
            "--force-conflicts",
            "--field-manager=dtrtrust-tests",
            "-k",
            str(DEPLOY),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # kubectl diff: 0 no differences, 1 differences, more for an error.
    assert done.returncode == 0, done.stdout + done.stderr


def test_trust_overlay_is_accepted_by_the_crd(installed: str, kubeconfig_path: Path) -> None:
    out = kubeharness.kubectl(
        kubeconfig_path, "apply", "--server-side", "--dry-run=server",
        "-k", str(DEPLOY / "overlays" / "trust"),
    )  # fmt: skip
    assert "dtrtrust.dtrtrust.io/dtr-prod serverside-applied (server dry run)" in out


OPERATOR_CAN = [
    # What it needs.
    ("get", "secrets", NAMESPACE, "yes"),
    ("create", "secrets", NAMESPACE, "yes"),
    ("update", "secrets", NAMESPACE, "yes"),
    ("list", "configmaps", NAMESPACE, "yes"),
    ("create", "daemonsets.apps", NAMESPACE, "yes"),
    ("list", "dtrtrustnodes.dtrtrust.io", NAMESPACE, "yes"),
    ("watch", "dtrtrusts.dtrtrust.io", "cluster", "yes"),
    ("patch", "dtrtrusts.dtrtrust.io/status", "cluster", "yes"),
    ("list", "nodes", "cluster", "yes"),
    ("create", "events", "default", "yes"),
    ("delete", "events", "default", "no"),
    # What it must not do.
    ("get", "secrets", "kube-system", "no"),
    ("list", "secrets", "default", "no"),
    ("list", "secrets", "all", "no"),
    ("delete", "secrets", NAMESPACE, "no"),
    ("get", "configmaps", "kube-system", "no"),
    ("create", "daemonsets.apps", "kube-system", "no"),
    ("create", "pods", NAMESPACE, "no"),
    ("create", "dtrtrusts.dtrtrust.io", "cluster", "no"),
    ("delete", "dtrtrusts.dtrtrust.io", "cluster", "no"),
    ("create", "dtrtrustnodes.dtrtrust.io", NAMESPACE, "no"),
    ("patch", "nodes", "cluster", "no"),
    ("create", "events", "kube-system", "no"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "cluster", "no"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "cluster", "no"),
    ("create", "rolebindings.rbac.authorization.k8s.io", NAMESPACE, "no"),
]

AGENT_CAN = [
    # What it needs.
    ("list", "secrets", NAMESPACE, "yes"),
    ("watch", "secrets", NAMESPACE, "yes"),
    ("watch", "nodes", "cluster", "yes"),
    ("get", "dtrtrustnodes.dtrtrust.io", NAMESPACE, "yes"),
    ("create", "dtrtrustnodes.dtrtrust.io", NAMESPACE, "yes"),
    ("update", "dtrtrustnodes.dtrtrust.io", NAMESPACE, "yes"),
    # What it must not do.
    ("create", "secrets", NAMESPACE, "no"),
    ("update", "secrets", NAMESPACE, "no"),
    ("patch", "secrets", NAMESPACE, "no"),
    ("delete", "secrets", NAMESPACE, "no"),
    ("get", "secrets", "kube-system", "no"),
    ("list", "secrets", "all", "no"),
    ("create", "dtrtrusts.dtrtrust.io", "cluster", "no"),
    ("patch", "dtrtrusts.dtrtrust.io", "cluster", "no"),
    ("update", "dtrtrusts.dtrtrust.io", "cluster", "no"),
    ("patch", "dtrtrusts.dtrtrust.io/status", "cluster", "no"),
    ("create", "dtrtrustnodes.dtrtrust.io", "default", "no"),
    ("patch", "nodes", "cluster", "yes"),  # only to remove its startup taint
    ("update", "nodes", "cluster", "no"),
    ("delete", "nodes", "cluster", "no"),
    ("patch", "nodes/status", "cluster", "no"),
    ("patch", "daemonsets.apps", NAMESPACE, "no"),
    ("patch", "configmaps", NAMESPACE, "no"),
    ("create", "pods", NAMESPACE, "no"),
    ("create", "events", NAMESPACE, "no"),
]


@pytest.mark.parametrize(("verb", "resource", "where", "expected"), OPERATOR_CAN)
def test_operator_service_account_can_exactly_what_it_needs(
    as_operator: Path, verb: str, resource: str, where: str, expected: str
) -> None:
    assert can_i(as_operator, verb, resource, where) == expected


@pytest.mark.parametrize(("verb", "resource", "where", "expected"), AGENT_CAN)
def test_agent_service_account_can_exactly_what_it_needs(
    as_agent: Path, verb: str, resource: str, where: str, expected: str
) -> None:
    assert can_i(as_agent, verb, resource, where) == expected


def test_agent_writes_nothing_but_its_per_node_reports_and_node_taints(as_agent: Path) -> None:
    written = written_resources(as_agent, NAMESPACE)
    assert set(written) - SELF_REVIEWS == {"dtrtrustnodes.dtrtrust.io", "nodes"}
    assert "delete" not in written["dtrtrustnodes.dtrtrust.io"]
    # Nodes (cluster-scoped, listed with every namespace): patch only, for the startup taint.
    assert set(written["nodes"]) == {"patch"}
    for namespace in ("default", "kube-system"):
        assert set(written_resources(as_agent, namespace)) - SELF_REVIEWS <= {"nodes"}


def test_operator_writes_only_bundle_secrets_the_agent_daemonset_events_and_status(
    as_operator: Path,
) -> None:
    # Cluster-scoped grants show in every namespace's list.
    trusts = {"dtrtrusts.dtrtrust.io", "dtrtrusts.dtrtrust.io/status"}
    written = written_resources(as_operator, NAMESPACE)
    assert set(written) - SELF_REVIEWS == {"secrets", "daemonsets.apps", *trusts}
    assert "delete" not in written["secrets"]
    # kopf's bookkeeping annotations only; spec and status are not written with it.
    assert written["dtrtrusts.dtrtrust.io"] == {"patch"}
    # Events about cluster-scoped DTRTrusts must be in "default": create, nothing else.
    in_default = written_resources(as_operator, "default")
    assert set(in_default) - SELF_REVIEWS == {"events", *trusts}
    assert in_default["events"] == {"create"}
    assert set(written_resources(as_operator, "kube-system")) - SELF_REVIEWS == trusts
