"""Pure builders of the Kubernetes objects the operator writes.

The bundle Secret carries everything an agent needs in its annotations (addresses,
targets, node selector, deletion policy, content hash), so agents read Secrets and
Nodes only, never DTRTrusts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtrtrust import certs, conditions
from dtrtrust.conditions import Condition
from dtrtrust.reconcile import Outcome, secret_name
from dtrtrust.spec import API_GROUP, API_VERSION, KIND, TrustSpec

MANAGED_BY = {"app.kubernetes.io/managed-by": "dtrtrust"}
TRUST_LABEL = "dtrtrust.io/trust"  # fixed
HASH_ANNOTATION = f"{API_GROUP}/content-hash"
ADDRESSES_ANNOTATION = f"{API_GROUP}/registries"
TARGETS_ANNOTATION = f"{API_GROUP}/targets"
SELECTOR_ANNOTATION = f"{API_GROUP}/node-selector"
POLICY_ANNOTATION = f"{API_GROUP}/deletion-policy"
MAX_OUT_OF_SYNC = 10


def bundle_secret(
    spec: TrustSpec, uid: str, data: Mapping[str, bytes], content_hash: str, namespace: str
) -> dict[str, Any]:
    """The Secret ``dtrtrust-<name>``: owned by the DTRTrust so garbage collection
    removes it with the trust (no finalizer needed)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(spec.name),
            "namespace": namespace,
            "labels": {**MANAGED_BY, TRUST_LABEL: spec.name},
            "annotations": {
                HASH_ANNOTATION: content_hash,
                ADDRESSES_ANNOTATION: ",".join(spec.addresses),
                TARGETS_ANNOTATION: ",".join(spec.targets),
                SELECTOR_ANNOTATION: json.dumps(dict(spec.node_selector), sort_keys=True),
                POLICY_ANNOTATION: spec.deletion_policy,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": spec.name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(data.items())},
    }


@dataclass(frozen=True)
class ExistingSecret:
    """A bundle Secret as the API server has it."""

    data: Mapping[str, bytes]
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    owner_uids: tuple[str, ...]


def secret_is_current(existing: ExistingSecret | None, wanted: Mapping[str, Any]) -> bool:
    """Whether the existing Secret already holds what we would write. Decided by hashes
    and the few fields that matter (agent-facing annotations, the labels agents select
    by, the owner reference GC relies on), never by comparing whole objects; a hand
    edit of the data is caught because its hash no longer matches the annotation."""
    if existing is None:
        return False
    meta = wanted["metadata"]
    return (
        all(existing.annotations.get(k) == v for k, v in meta["annotations"].items())
        and all(existing.labels.get(k) == v for k, v in meta["labels"].items())
        and meta["ownerReferences"][0]["uid"] in existing.owner_uids
        and certs.content_hash(existing.data) == meta["annotations"][HASH_ANNOTATION]
    )


def nodes_status(
    desired: Sequence[str], synced: Sequence[str], problems: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, Any], Condition]:
    """``status.nodes`` and the NodesSynced condition.

    ``problems`` maps a node to (reason, message) reported by its agent
    (Conflict, NotEffective, NodeErrors)."""
    synced_set = set(synced)
    out_of_sync = [n for n in desired if n not in synced_set]
    status = {
        "desired": len(desired),
        "synced": len(desired) - len(out_of_sync),
        "summary": f"{len(desired) - len(out_of_sync)}/{len(desired)}",
        "outOfSync": out_of_sync[:MAX_OUT_OF_SYNC],
    }
    if not out_of_sync:
        message = (
            f"All {len(desired)} selected node(s) hold the current bundle."
            if desired
            else "No node is selected (0/0)."
        )
        return status, conditions.ok(conditions.NODES_SYNCED, "Synced", message)
    reported = [(n, problems[n]) for n in out_of_sync if n in problems]
    if reported:
        node, (reason, message) = reported[0]
        more = f" ({len(reported) - 1} more node(s) report problems)" if len(reported) > 1 else ""
        return status, conditions.failed(
            conditions.NODES_SYNCED, reason, f"node {node}: {message}{more}"
        )
    return status, conditions.failed(
        conditions.NODES_SYNCED,
        "Progressing",
        f"{len(out_of_sync)} of {len(desired)} node(s) do not hold the current bundle yet: "
        + ", ".join(out_of_sync[:MAX_OUT_OF_SYNC]),
    )


def trust_status(
    spec: TrustSpec,
    outcome: Outcome,
    nodes: Condition | None,
    node_counts: Mapping[str, Any] | None,
    previous_status: Mapping[str, Any],
    *,
    now: Any,
) -> dict[str, Any]:
    """The whole ``status`` to compare with the current one (no patch when equal)."""
    conds = list(outcome.conditions)
    if nodes is not None:
        conds.append(nodes)
    else:
        conds.append(
            conditions.unknown(
                conditions.NODES_SYNCED, "NotPublished", "No bundle has been published yet."
            )
        )
    conds.append(conditions.ready(conds))
    merged = conditions.merge(
        previous_status.get("conditions"), conds, generation=spec.generation, now=now
    )
    status: dict[str, Any] = {
        "observedGeneration": spec.generation,
        "conditions": [c.to_dict() for c in merged],
    }
    # status.bundle describes what is published: a bundle that failed a check is not.
    published = outcome.bundle_status(spec) if outcome.publish is not None else None
    bundle = published or previous_status.get("bundle")
    if bundle:
        status["bundle"] = bundle
    if node_counts is not None:
        status["nodes"] = dict(node_counts)
    elif previous_status.get("nodes"):
        status["nodes"] = previous_status["nodes"]
    status["warnings"] = list(outcome.warnings)
    return status
