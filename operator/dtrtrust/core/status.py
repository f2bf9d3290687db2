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
from dataclasses import replace
from typing import Any

from dtrtrust.core import conditions
from dtrtrust.core.conditions import Condition
from dtrtrust.core.reconcile import Outcome
from dtrtrust.core.spec import TrustSpec
from dtrtrust.core.times import rfc3339

MAX_OUT_OF_SYNC = 10
# The probe reason of a node that could not connect to the registry at all.
UNREACHABLE = "Unreachable"


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


def nodes_verified(
    desired: Sequence[str], probes: Mapping[str, Mapping[str, Any] | None]
) -> tuple[int, Condition]:
    """(verified count, NodesVerified) from each desired node's probe of the current
    content (``probes``: node -> the probe entry of its report, None or absent while it
    has not probed the current content). A node that cannot reach the registry is
    reported as Unreachable, never as verified."""
    verified = [n for n in desired if (probes.get(n) or {}).get("checkedAt")]
    verified = [n for n in verified if not (probes.get(n) or {}).get("reason")]
    summary = f"{len(verified)}/{len(desired)}"
    if len(verified) == len(desired):
        # A passed probe can still carry a note (no client certificate, and the registry
        # refuses anonymous requests): the admin should see which case it is.
        notes = [
            f"node {n}: {found['message']}"
            for n in verified
            if (found := probes.get(n) or {}).get("message")
        ]
        return len(verified), conditions.ok(
            conditions.NODES_VERIFIED,
            "Verified",
            f"{summary} node(s) reached the registry with exactly the files they hold."
            + (f" Note: {notes[0]}." if notes else ""),
        )
    failed = [(n, probes.get(n) or {}) for n in desired if (probes.get(n) or {}).get("reason")]
    # A node that reached the registry and was refused names the problem to fix; a node
    # that could not reach it at all comes last, so the reason is Unreachable only when
    # every failing node is unreachable (which a registry outage is: see trust_status).
    failed.sort(key=lambda item: item[1].get("reason") == UNREACHABLE)
    if failed:
        node, found = failed[0]
        more = f" ({len(failed) - 1} more node(s) fail)" if len(failed) > 1 else ""
        return len(verified), conditions.failed(
            conditions.NODES_VERIFIED,
            str(found.get("reason")),
            f"{summary} verified; node {node}: {found.get('message') or found.get('reason')}{more}",
        )
    waiting = [n for n in desired if n not in verified]
    return len(verified), conditions.failed(
        conditions.NODES_VERIFIED,
        "Progressing",
        f"{summary} verified; waiting for the probe of " + ", ".join(waiting[:MAX_OUT_OF_SYNC]),
    )


def trust_status(
    spec: TrustSpec,
    outcome: Outcome,
    nodes: Condition | None,
    node_counts: Mapping[str, Any] | None,
    previous_status: Mapping[str, Any],
    *,
    now: dt.datetime,
    verified: Condition | None = None,
) -> dict[str, Any]:
    """The whole ``status`` to compare with the current one (no patch when equal).
    ``verified`` is NodesVerified (absent when the probe is off).

    A failing periodic refresh (the registry's /ca unreachable) with an unchanged spec,
    while this generation's last good bundle is published: CAAvailable reports the
    failure (since when, what still serves), the other checks keep their last known
    result and Ready stays True when the nodes hold that bundle (and, with the probe on,
    verified it); Ready means "bundle published and all selected nodes synced", which is
    still so."""
    refresh = _failing_refresh(spec, outcome, previous_status, now)
    conds = list(outcome.conditions) if refresh is None else refresh
    if verified is not None:
        conds.append(verified)
    if nodes is not None:
        conds.append(nodes)
    else:
        conds.append(
            conditions.unknown(
                conditions.NODES_SYNCED, "NotPublished", "No bundle has been published yet."
            )
        )
    if refresh is None:
        conds.append(conditions.ready(conds))
    else:
        # The registry is down for the operator too: nodes that cannot reach it either
        # (their probe says Unreachable, and NodesVerified keeps saying so) still hold
        # this generation's verified trust; an outage is not a trust problem.
        unreachable = verified is not None and verified.reason == UNREACHABLE
        ready = conditions.ready(
            [
                c
                for c in conds
                if c.type != conditions.CA_AVAILABLE
                and not (unreachable and c.type == conditions.NODES_VERIFIED)
            ]
        )
        if ready.status == conditions.TRUE:
            ready = conditions.ok(
                conditions.READY,
                "Ready",
                "The last good bundle is published and every selected node has it; "
                "its refresh is failing (see CAAvailable)"
                + (
                    " and the nodes cannot reach the registry (see NodesVerified)."
                    if unreachable
                    else "."
                ),
            )
        conds.append(ready)
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


def _failing_refresh(
    spec: TrustSpec, outcome: Outcome, previous: Mapping[str, Any], now: dt.datetime
) -> list[Condition] | None:
    """The conditions for a failing refresh (see trust_status), or None when this is not
    one: something new to publish, a failure other than fetching /ca, a changed spec
    (a change that cannot be verified is not Ready), or nothing valid published yet."""
    failed = outcome.failed
    if (
        outcome.publish is not None
        or failed is None
        or failed.type != conditions.CA_AVAILABLE
        or failed.reason != "FetchFailed"
        or previous.get("observedGeneration") != spec.generation
        or not (previous.get("bundle") or {}).get("sha256")
    ):
        return None
    before = {c.type: c for c in map(Condition.from_dict, previous.get("conditions") or [])}
    kept = [
        before[t]
        for t in conditions.ORDER[1:4]  # BundleValid, ClientCertificateValid, RegistryVerified
        if t in before and (t != conditions.CLIENT_CERTIFICATE_VALID or spec.client_secret)
    ]
    if not any(c.type == conditions.BUNDLE_VALID for c in kept) or any(
        c.status != conditions.TRUE for c in kept
    ):
        return None
    was = before.get(conditions.CA_AVAILABLE)
    since = (
        was.last_transition_time
        if was is not None and was.status == conditions.FALSE and was.last_transition_time
        else rfc3339(now)
    )
    sha = previous["bundle"]["sha256"]
    failing = conditions.failed(
        conditions.CA_AVAILABLE,
        failed.reason,
        f"{failed.message} (refresh failing since {since}; the last good bundle {sha} "
        "stays published and the nodes keep it)",
    )
    return [failing, *[replace(c, observed_generation=0, last_transition_time="") for c in kept]]


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
