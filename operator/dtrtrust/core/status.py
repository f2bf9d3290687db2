"""The one status assembler: ``status`` of a DTRTrust, for the operator and ``apply`` (pure).

Both front ends run :func:`dtrtrust.core.reconcile.reconcile`, measure node sync their
own way (agents' reports, or the files ``apply`` just wrote) and hand both here, so the
same case gives the same keys: ``observedGeneration``, ``conditions`` (in the fixed order,
``lastTransitionTime`` moving only on a status change), ``bundle`` (what is published:
a bundle that failed a check is not), ``nodes`` and ``warnings``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from dtrtrust.core import conditions
from dtrtrust.core.conditions import Condition
from dtrtrust.core.reconcile import Outcome
from dtrtrust.core.spec import TrustSpec

MAX_OUT_OF_SYNC = 10


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
    now: dt.datetime,
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


def invalid_spec_status(
    previous_status: Mapping[str, Any],
    generation: int,
    reason: str,
    message: str,
    *,
    now: dt.datetime,
) -> dict[str, Any]:
    """An invalid spec: Ready False with the reason; what is published (bundle, nodes)
    stays as it was, because nothing was touched."""
    merged = conditions.merge(
        previous_status.get("conditions"),
        [conditions.failed(conditions.READY, reason, message)],
        generation=generation,
        now=now,
    )
    return {
        **previous_status,
        "observedGeneration": generation,
        "conditions": [c.to_dict() for c in merged],
    }


def is_ready(status: Mapping[str, Any]) -> bool:
    ready = conditions.find(
        [Condition.from_dict(c) for c in status.get("conditions") or []], conditions.READY
    )
    return ready is not None and ready.status == conditions.TRUE


def status_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns status ``before`` into ``after``.

    A merge patch never removes a key by itself: a key of ``before`` that ``after`` lacks
    is sent as None, recursively through objects, so that (for instance)
    ``bundle.clientCertificate`` disappears once the spec stops naming one. Lists are
    replaced whole, as a merge patch does."""
    patch: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            inner = status_patch(old, value)
            if inner:
                patch[key] = inner
        elif key not in before or old != value:
            patch[key] = value
    for key in before:
        if key not in after:
            patch[key] = None
    return patch
