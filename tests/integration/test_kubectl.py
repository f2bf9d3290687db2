"""The CRDs as people use them with kubectl, on the real API server: every name of a
DTRTrust (singular, plural, short, qualified) works with get, describe, wait, patch and
delete; both documented ways of installing crds/ work; ``-o wide`` and ``kubectl get dtrtn``
show the columns; conditions merge per type under server-side apply.

The DTRTrusts here are reconciled by the real operator (inline CA, no registry to reach), so
``kubectl wait`` waits for a real Ready. The keyed-list test writes conditions itself, with
two field managers, on a copy of the DTRTrust CRD under a group of its own, so the operator
does not write the same status meanwhile.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubeharness
import pytest
import yaml

import certfactory
from operatorproc import OperatorProcess

pytestmark = pytest.mark.kube

CRDS = kubeharness.PROJECT_ROOT / "crds"
NAMES = ["dtrtrust", "dtrtrusts", "dtrt", "dtrtrust.dtrtrust.io"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


CA = certfactory.make_ca("kubectl test root")
COPY_GROUP = "kubectl-test.dtrtrust.io"


def trust(name: str) -> dict[str, Any]:
    """A trust the operator makes Ready without a registry: inline CA, no TLS check."""
    return {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": name},
        "spec": {
            "registry": "dtr.kubectl-test.example:4443",
            "ca": {"pem": CA.cert_pem.decode()},
            "verify": {"tls": False},
        },
    }


def condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


@pytest.fixture(scope="module")
def crd_copy(kube_admin: Any, kubeconfig_path: Path) -> Iterator[str]:
    """The DTRTrust CRD of crds/ under another group (schema untouched): its plural."""
    crd = yaml.safe_load((CRDS / "dtrtrust.io_dtrtrusts.yaml").read_text())
    crd["metadata"] = {"name": f"dtrtrusts.{COPY_GROUP}"}
    crd["spec"]["group"] = COPY_GROUP
    crd["spec"]["names"].pop("shortNames", None)
    crd["spec"]["names"].pop("categories", None)
    kubeharness.kubectl(kubeconfig_path, "create", "-f", "-", input_text=json.dumps(crd))
    try:
        kubeharness.wait_for_crds_established(kube_admin, [crd["metadata"]["name"]])
        yield f"dtrtrusts.{COPY_GROUP}"
    finally:
        kubeharness.kubectl(kubeconfig_path, "delete", "crd", crd["metadata"]["name"])


def apply_status(
    kubeconfig: Path, resource: str, name: str, status: dict[str, Any], manager: str
) -> None:
    """Server-side apply of ``status`` through the status subresource, as ``manager``."""
    group = resource.split(".", 1)[1]
    doc = {"apiVersion": f"{group}/v1alpha1", "kind": "DTRTrust", "metadata": {"name": name}}
    kubeharness.kubectl(
        kubeconfig,
        *("apply", "--server-side", "--subresource=status", "--validate=false"),
        *(f"--field-manager={manager}", "-f", "-"),
        input_text=yaml.safe_dump({**doc, "status": status}),
    )


@pytest.fixture
def make_trust(
    kubeconfig_path: Path, dtrtrust_operator: OperatorProcess
) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = unique("kt")
        kubeharness.kubectl(
            kubeconfig_path, "create", "-f", "-", input_text=json.dumps(trust(name))
        )
        created.append(name)
        return name

    yield make
    for name in created:
        kubeharness.kubectl(
            kubeconfig_path, "delete", "dtrtrusts.dtrtrust.io", name, "--ignore-not-found"
        )


def wait_ready(kubeconfig: Path, resource: str, name: str) -> str:
    return kubeharness.kubectl(
        kubeconfig, "wait", "--for=condition=Ready", f"{resource}/{name}", "--timeout=60s"
    )


@pytest.mark.parametrize("how", ["-f", "-k"])
def test_crds_install_with_apply_f_and_apply_k_of_the_crds_directory(
    kube_cluster: Any, how: str
) -> None:
    # The session already installed them; a server dry run proves the command is accepted
    # as it stands (the kustomization read as a manifest made -f exit 1).
    out = kubeharness.kubectl(
        kube_cluster.kubeconfig, "apply", "--server-side", "--dry-run=server", how, str(CRDS)
    )
    applied = sorted(line.split()[0] for line in out.splitlines() if line.strip())
    assert applied == [
        "customresourcedefinition.apiextensions.k8s.io/dtrtrustnodes.dtrtrust.io",
        "customresourcedefinition.apiextensions.k8s.io/dtrtrusts.dtrtrust.io",
    ]


@pytest.mark.parametrize("resource", NAMES)
def test_every_name_of_a_dtrtrust_works_with_get_describe_wait_patch_and_delete(
    kubeconfig_path: Path, make_trust: Callable[[], str], resource: str
) -> None:
    name = make_trust()

    waited = wait_ready(kubeconfig_path, resource, name)
    got = kubeharness.kubectl(kubeconfig_path, "get", resource, name, "-o", "name")
    described = kubeharness.kubectl(kubeconfig_path, "describe", resource, name)
    kubeharness.kubectl(
        kubeconfig_path,
        *("patch", resource, name, "--type=merge"),
        *("-p", json.dumps({"metadata": {"labels": {"team": "registry"}}})),
    )
    patched = json.loads(kubeharness.kubectl(kubeconfig_path, "get", resource, name, "-o", "json"))
    deleted = kubeharness.kubectl(kubeconfig_path, "delete", resource, name)
    remaining = kubeharness.kubectl(
        kubeconfig_path, "get", resource, name, "--ignore-not-found", "-o", "name"
    )

    assert "condition met" in waited
    assert got.strip() == f"dtrtrust.dtrtrust.io/{name}"
    assert f"Name:         {name}" in described
    assert "Kind:         DTRTrust" in described
    assert patched["metadata"]["labels"] == {"team": "registry"}
    assert f'"{name}" deleted' in deleted
    assert remaining == ""


def test_the_category_lists_both_kinds(
    kubeconfig_path: Path, make_trust: Callable[[], str], kube_namespace: str
) -> None:
    name = make_trust()
    report = {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrustNode",
        "metadata": {"name": "node-a", "namespace": kube_namespace},
        "status": {"nodeName": "node-a", "synced": "0/0", "trusts": []},
    }
    kubeharness.kubectl(kubeconfig_path, "create", "-f", "-", input_text=json.dumps(report))

    out = kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust-all", "-A", "-o", "name")

    assert f"dtrtrust.dtrtrust.io/{name}" in out.split()
    assert "dtrtrustnode.dtrtrust.io/node-a" in out.split()


def _table(out: str) -> list[dict[str, str]]:
    """kubectl's table as dicts, cut at the header's column starts."""
    header, *rows = out.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [{n: row[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for row in rows]


def test_wide_output_shows_readys_reason_message_and_the_bundle_secret(
    kubeconfig_path: Path, make_trust: Callable[[], str]
) -> None:
    name = make_trust()
    wait_ready(kubeconfig_path, "dtrtrust", name)
    ready = next(
        c
        for c in json.loads(
            kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust", name, "-o", "json")
        )["status"]["conditions"]
        if c["type"] == "Ready"
    )

    plain = _table(kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust", name))
    wide = _table(kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust", name, "-o", "wide"))

    assert list(plain[0]) == ["NAME", "REGISTRY", "READY", "NODES", "EXPIRES", "AGE"]
    assert {k: wide[0][k] for k in ("READY", "REASON", "MESSAGE", "SECRET")} == {
        "READY": "True",
        "REASON": ready["reason"],
        "MESSAGE": ready["message"],
        "SECRET": f"dtrtrust-{name}",
    }
    assert ready["message"]


def test_conditions_merge_per_type_under_server_side_apply(
    kubeconfig_path: Path, crd_copy: str
) -> None:
    # Two managers each own one condition: a keyed list keeps both (an atomic list would
    # let the second apply replace the first's), and Argo CD diffs them per type.
    name = unique("kt")
    body = trust(name) | {"apiVersion": f"{COPY_GROUP}/v1alpha1"}
    kubeharness.kubectl(kubeconfig_path, "create", "-f", "-", input_text=json.dumps(body))
    try:
        ready = condition("Ready", "True", "Ready", "ok")
        synced = condition("NodesSynced", "True", "Synced", "ok")
        failed = condition("Ready", "False", "NodeErrors", "see dtrtn")
        apply_status(kubeconfig_path, crd_copy, name, {"conditions": [ready]}, "operator")
        apply_status(kubeconfig_path, crd_copy, name, {"conditions": [synced]}, "someone-else")
        apply_status(kubeconfig_path, crd_copy, name, {"conditions": [failed]}, "operator")

        got = json.loads(kubeharness.kubectl(kubeconfig_path, "get", crd_copy, name, "-o", "json"))
    finally:
        kubeharness.kubectl(kubeconfig_path, "delete", crd_copy, name, "--ignore-not-found")

    by_type = {c["type"]: (c["status"], c["reason"]) for c in got["status"]["conditions"]}
    assert by_type == {"Ready": ("False", "NodeErrors"), "NodesSynced": ("True", "Synced")}


def test_dtrtn_table_shows_each_nodes_sync_count_and_the_trusts_that_need_attention(
    kubeconfig_path: Path, kube_namespace: str
) -> None:
    from dtrtrust.agent.report import TrustReport, report_body

    trusts = [
        TrustReport("prod", "sha256:aa", "Synced"),
        TrustReport("test", "", "Conflict", "another tool's hosts.toml is in the way"),
    ]
    body = report_body(
        node_name="node-b",
        node_uid=None,
        namespace=kube_namespace,
        trusts=trusts,
        last_change="2026-01-01T00:00:00Z",
    )
    kubeharness.kubectl(kubeconfig_path, "create", "-f", "-", input_text=json.dumps(body))

    wide = _table(
        kubeharness.kubectl(kubeconfig_path, "-n", kube_namespace, "get", "dtrtn", "-o", "wide")
    )

    assert len(wide) == 1
    row = wide[0]
    assert (row["NAME"], row["SYNCED"], row["PROBLEMS"]) == ("node-b", "1/2", "test: Conflict")
    assert row["MESSAGE"] == "another tool's hosts.toml is in the way"
    assert row["AGENT"]
