"""The CRDs as people use them with kubectl, on the real API server: every name of a
DTRTrust (singular, plural, short, qualified) works with get, describe, wait, patch and
delete; both documented ways of installing crds/ work; ``-o wide`` and ``kubectl get dtrtn``
show the columns; conditions merge per type under server-side apply.

No operator runs here: the tests write ``status`` themselves (as the operator would, through
the status subresource), so what is proven is the CRD and kubectl, not the reconcile.
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

pytestmark = pytest.mark.kube

CRDS = kubeharness.PROJECT_ROOT / "crds"
NAMES = ["dtrtrust", "dtrtrusts", "dtrt", "dtrtrust.dtrtrust.io"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def trust(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": name},
        "spec": {
            "registry": "dtr.example.com:4443",
            "ca": {"fetch": {"pinnedSHA256": ["sha256:" + "ab" * 32]}},
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


def apply_status(
    kubeconfig: Path, name: str, status: dict[str, Any], manager: str = "dtrtrust-tests"
) -> None:
    """Server-side apply of ``status`` through the status subresource, as ``manager``."""
    doc = {"apiVersion": "dtrtrust.io/v1alpha1", "kind": "DTRTrust", "metadata": {"name": name}}
    kubeharness.kubectl(
        kubeconfig,
        *("apply", "--server-side", "--subresource=status", "--validate=false"),
        *(f"--field-manager={manager}", "-f", "-"),
        input_text=yaml.safe_dump({**doc, "status": status}),
    )


@pytest.fixture
def make_trust(kubeconfig_path: Path) -> Iterator[Callable[[], str]]:
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
    apply_status(
        kubeconfig_path,
        name,
        {"conditions": [condition("Ready", "True", "Ready", "every node holds the bundle")]},
    )

    got = kubeharness.kubectl(kubeconfig_path, "get", resource, name, "-o", "name")
    described = kubeharness.kubectl(kubeconfig_path, "describe", resource, name)
    waited = kubeharness.kubectl(
        kubeconfig_path, "wait", "--for=condition=Ready", f"{resource}/{name}", "--timeout=30s"
    )
    kubeharness.kubectl(
        kubeconfig_path,
        *("patch", resource, name, "--type=merge"),
        *("-p", json.dumps({"spec": {"aliases": ["10.0.0.5:4443"]}})),
    )
    patched = json.loads(kubeharness.kubectl(kubeconfig_path, "get", resource, name, "-o", "json"))
    deleted = kubeharness.kubectl(kubeconfig_path, "delete", resource, name)
    remaining = kubeharness.kubectl(
        kubeconfig_path, "get", resource, name, "--ignore-not-found", "-o", "name"
    )

    assert got.strip() == f"dtrtrust.dtrtrust.io/{name}"
    assert f"Name:         {name}" in described
    assert "Kind:         DTRTrust" in described
    assert "condition met" in waited
    assert patched["spec"]["aliases"] == ["10.0.0.5:4443"]
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
    message = "2 of 3 nodes hold the current bundle: wait, or see kubectl get dtrtn"
    apply_status(
        kubeconfig_path,
        name,
        {
            "conditions": [condition("Ready", "False", "Progressing", message)],
            "bundle": {"secretName": f"dtrtrust-{name}", "notAfter": "2027-01-01T00:00:00Z"},
            "nodes": {"desired": 3, "synced": 2, "summary": "2/3"},
        },
    )

    plain = _table(kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust", name))
    wide = _table(kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust", name, "-o", "wide"))

    assert list(plain[0]) == ["NAME", "REGISTRY", "READY", "NODES", "EXPIRES", "AGE"]
    assert {k: wide[0][k] for k in ("READY", "NODES", "REASON", "MESSAGE", "SECRET")} == {
        "READY": "False",
        "NODES": "2/3",
        "REASON": "Progressing",
        "MESSAGE": message,
        "SECRET": f"dtrtrust-{name}",
    }


def test_conditions_merge_per_type_under_server_side_apply(
    kubeconfig_path: Path, make_trust: Callable[[], str]
) -> None:
    # Two managers each own one condition: a keyed list keeps both (an atomic list would
    # let the second apply replace the first's), and Argo CD diffs them per type.
    name = make_trust()
    apply_status(kubeconfig_path, name, {"conditions": [condition("Ready", "True", "Ready", "ok")]})
    apply_status(
        kubeconfig_path,
        name,
        {"conditions": [condition("NodesSynced", "True", "Synced", "ok")]},
        manager="someone-else",
    )
    apply_status(
        kubeconfig_path,
        name,
        {"conditions": [condition("Ready", "False", "NodeErrors", "see dtrtn")]},
    )

    got = json.loads(kubeharness.kubectl(kubeconfig_path, "get", "dtrtrust", name, "-o", "json"))

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
