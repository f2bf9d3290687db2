"""Ready through a registry outage when the nodes probe too (issues 12.9 and 14.2 together):
a registry the operator cannot fetch from is one the nodes cannot reach either, and that
is an outage, not a trust problem; a node that reaches the registry and is refused is."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dtrtrust.core import conditions
from dtrtrust.core.reconcile import Outcome
from dtrtrust.core.spec import TrustSpec, parse_trust
from dtrtrust.core.status import nodes_verified, trust_status

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
PIN = "sha256:" + "ab" * 32


def spec() -> TrustSpec:
    return parse_trust(
        {
            "apiVersion": "dtrtrust.io/v1alpha1",
            "kind": "DTRTrust",
            "metadata": {"name": "dtr", "generation": 3},
            "spec": {"registry": "dtr.example.com", "ca": {"fetch": {"pinnedSHA256": [PIN]}}},
        }
    )


def ready_before() -> dict[str, Any]:
    """The status of generation 3 while everything worked."""
    good = [
        conditions.ok(t, "Verified", "fine")
        for t in (
            conditions.CA_AVAILABLE,
            conditions.BUNDLE_VALID,
            conditions.REGISTRY_VERIFIED,
            conditions.NODES_SYNCED,
            conditions.NODES_VERIFIED,
            conditions.READY,
        )
    ]
    merged = conditions.merge(None, good, generation=3, now=NOW - dt.timedelta(hours=2))
    return {
        "observedGeneration": 3,
        "conditions": [c.to_dict() for c in merged],
        "bundle": {"sha256": "sha256:" + "cd" * 32},
    }


def failing_fetch() -> Outcome:
    return Outcome(
        conditions=[
            conditions.failed(conditions.CA_AVAILABLE, "FetchFailed", "connection refused"),
            conditions.unknown(conditions.BUNDLE_VALID, "SourcesUnavailable", "waiting"),
            conditions.unknown(conditions.REGISTRY_VERIFIED, "NotChecked", "waiting"),
        ],
        temporary=True,
    )


def probe(reason: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {"checkedAt": "2026-12-01T11:59:00Z"}
    if reason:
        found.update(reason=reason, message=f"{reason} from here")
    return found


def status_with(outcome: Outcome, probes: dict[str, dict[str, Any]]) -> dict[str, str]:
    synced = conditions.ok(conditions.NODES_SYNCED, "Synced", "all nodes hold it")
    _, verified = nodes_verified(sorted(probes), probes)
    status = trust_status(spec(), outcome, synced, None, ready_before(), now=NOW, verified=verified)
    return {c["type"]: f"{c['status']} {c['reason']}" for c in status["conditions"]}


def test_an_outage_that_the_nodes_see_too_keeps_ready_true_and_says_so() -> None:
    got = status_with(failing_fetch(), {"a": probe("Unreachable"), "b": probe("Unreachable")})
    assert got["Ready"] == "True Ready"
    assert got["NodesVerified"] == "False Unreachable"  # still reported, truthfully
    assert got["CAAvailable"] == "False FetchFailed"


def test_a_node_that_reaches_the_registry_and_is_refused_turns_ready_false_in_an_outage() -> None:
    got = status_with(
        failing_fetch(), {"a": probe("Unreachable"), "b": probe("ClientAuthRejected")}
    )
    assert got["NodesVerified"] == "False ClientAuthRejected"
    assert got["Ready"] == "False ClientAuthRejected"


def test_nodes_that_cannot_reach_a_registry_the_operator_reaches_are_not_ready() -> None:
    fine = Outcome(
        conditions=[
            conditions.ok(conditions.CA_AVAILABLE, "Resolved", "fetched"),
            conditions.ok(conditions.BUNDLE_VALID, "Valid", "1 CA"),
            conditions.ok(conditions.REGISTRY_VERIFIED, "Verified", "chain and name"),
        ]
    )
    got = status_with(fine, {"a": probe(None), "b": probe("Unreachable")})
    assert got["Ready"] == "False Unreachable"  # a firewall in front of the nodes
