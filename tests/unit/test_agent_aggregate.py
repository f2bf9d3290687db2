"""How the operator turns the agents' per-node reports into NodesSynced (pure part)."""

from __future__ import annotations

import pytest

from dtrtrust.core.status import nodes_status
from dtrtrust.kube.cluster import NodeReports
from dtrtrust.operator.controller import node_progress

H = "sha256:current"

REPORTS: NodeReports = {
    "n1": {"prod": (H, "Synced", "")},
    "n2": {"prod": ("sha256:old", "Synced", "")},  # not caught up yet
    "n3": {"prod": (H, "Conflict", "hosts.toml belongs to another tool")},
    "n4": {"prod": (H, "NotEffective", "add config_path")},
    "n5": {"prod": (H, "Error", "read-only file system")},
    "n6": {"other": (H, "Synced", "")},  # reports, but not for this trust
    "gone": {"prod": (H, "Synced", "")},  # not desired (deselected or deleted node)
}
PROD = {node: entries["prod"] for node, entries in REPORTS.items() if "prod" in entries}


@pytest.mark.parametrize(
    ("desired", "synced", "problems"),
    [
        (["n1"], ["n1"], {}),
        (["n1", "n2", "n6", "n7"], ["n1"], {}),
        (["n3"], [], {"n3": ("Conflict", "hosts.toml belongs to another tool")}),
        (["n4"], [], {"n4": ("NotEffective", "add config_path")}),
        (["n5"], [], {"n5": ("NodeErrors", "read-only file system")}),
    ],
)
def test_node_synced_only_with_the_published_hash_and_state_synced(
    desired: list[str], synced: list[str], problems: dict[str, tuple[str, str]]
) -> None:
    assert node_progress(desired, PROD, H) == (synced, problems)


def test_nodes_synced_condition_names_the_reported_problem() -> None:
    desired = ["n1", "n3"]
    synced, problems = node_progress(desired, PROD, H)
    counts, cond = nodes_status(desired, synced, problems)
    assert counts["synced"] == 1
    assert counts["desired"] == 2
    assert cond.status == "False"
    assert cond.reason == "Conflict"
    assert "n3" in cond.message


def test_all_desired_nodes_synced_makes_the_condition_true() -> None:
    synced, problems = node_progress(["n1"], PROD, H)
    _, cond = nodes_status(["n1"], synced, problems)
    assert cond.status == "True"


# --------------------------------------------------------------------- NodesVerified

OK_PROBE = {"reachable": True, "tlsVerified": True, "clientCertificate": "Accepted",
            "checkedAt": "2026-01-01T00:00:00Z"}  # fmt: skip
DOWN = {**OK_PROBE, "reachable": False, "tlsVerified": False, "reason": "Unreachable",
        "message": "cannot connect"}  # fmt: skip


@pytest.mark.parametrize(
    ("probes", "status", "reason", "count"),
    [
        ({"n1": OK_PROBE, "n2": OK_PROBE}, "True", "Verified", 2),
        ({"n1": OK_PROBE}, "False", "Progressing", 1),  # n2 has not probed yet
        ({"n1": OK_PROBE, "n2": DOWN}, "False", "Unreachable", 1),  # never "fine"
    ],
)
def test_nodes_verified_counts_only_passed_probes(
    probes: dict[str, dict[str, object]], status: str, reason: str, count: int
) -> None:
    from dtrtrust.core.status import nodes_verified

    got, cond = nodes_verified(["n1", "n2"], probes)
    assert (cond.status, cond.reason, got) == (status, reason, count)
    assert cond.type == "NodesVerified"
    if reason == "Unreachable":
        assert "n2" in cond.message
        assert "cannot connect" in cond.message


def test_nodes_verified_false_makes_ready_false() -> None:
    from dtrtrust.core import conditions
    from dtrtrust.core.status import nodes_verified

    _, cond = nodes_verified(["n1"], {"n1": DOWN})
    ready = conditions.ready([conditions.ok(conditions.NODES_SYNCED, "Synced", ""), cond])
    assert (ready.status, ready.reason) == ("False", "Unreachable")


def test_a_passed_probe_note_reaches_the_nodes_verified_message() -> None:
    from dtrtrust.core.status import nodes_verified

    note = {**OK_PROBE, "clientCertificate": "NotConfigured", "message": "v2 answered 403"}
    _, cond = nodes_verified(["n1"], {"n1": note})
    assert cond.status == "True"
    assert "node n1: v2 answered 403" in cond.message
