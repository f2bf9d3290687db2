"""Status conditions in the metav1.Condition shape (pure).

Condition types are fixed by DESIGN.md. ``merge`` keeps ``lastTransitionTime`` unless
the status actually changed, so a level-triggered reconcile that recomputes every
condition on each run does not make the status churn.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dtrtrust.contract import (
    BUNDLE_VALID,
    CA_AVAILABLE,
    CLIENT_CERTIFICATE_VALID,
    NODES_SYNCED,
    NODES_VERIFIED,
    READY,
    REGISTRY_VERIFIED,
)
from dtrtrust.core.times import rfc3339

__all__ = [
    "BUNDLE_VALID",
    "CA_AVAILABLE",
    "CLIENT_CERTIFICATE_VALID",
    "FALSE",
    "NODES_SYNCED",
    "NODES_VERIFIED",
    "ORDER",
    "READY",
    "REGISTRY_VERIFIED",
    "TRUE",
    "UNKNOWN",
    "Condition",
    "failed",
    "find",
    "merge",
    "ok",
    "ready",
    "unknown",
]

# Order in status and in the choice of Ready's reason: the first failing one wins.
ORDER = (
    CA_AVAILABLE,
    BUNDLE_VALID,
    CLIENT_CERTIFICATE_VALID,
    REGISTRY_VERIFIED,
    NODES_SYNCED,
    NODES_VERIFIED,
    READY,
)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int = 0
    last_transition_time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": self.last_transition_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(data.get("type", "")),
            status=str(data.get("status", UNKNOWN)),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            observed_generation=int(data.get("observedGeneration") or 0),
            last_transition_time=str(data.get("lastTransitionTime", "")),
        )


def ok(type_: str, reason: str, message: str) -> Condition:
    return Condition(type_, TRUE, reason, message)


def failed(type_: str, reason: str, message: str) -> Condition:
    return Condition(type_, FALSE, reason, message)


def unknown(type_: str, reason: str, message: str) -> Condition:
    return Condition(type_, UNKNOWN, reason, message)


def ready(conditions: Iterable[Condition]) -> Condition:
    """Ready is True when every other condition is True; otherwise it carries the
    first failing condition's reason and message."""
    by_type = {c.type: c for c in conditions if c.type != READY}
    for type_ in ORDER:
        cond = by_type.get(type_)
        if cond is not None and cond.status != TRUE:
            return Condition(READY, FALSE, cond.reason, f"{type_}: {cond.message}")
    return Condition(
        READY, TRUE, "Ready", "The bundle is published and every selected node has it."
    )


def merge(
    previous: Sequence[Mapping[str, Any]] | None,
    current: Iterable[Condition],
    *,
    generation: int,
    now: dt.datetime,
) -> list[Condition]:
    """Stamp ``current`` with observedGeneration and a lastTransitionTime that moves
    only when a condition's status changes. Output is in the fixed ORDER."""
    before = {cond.type: cond for cond in map(Condition.from_dict, previous or [])}
    stamped: dict[str, Condition] = {}
    for cond in current:
        old = before.get(cond.type)
        when = (
            old.last_transition_time
            if old is not None and old.status == cond.status and old.last_transition_time
            else rfc3339(now)
        )
        stamped[cond.type] = replace(
            cond, observed_generation=generation, last_transition_time=when
        )
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(stamped.values(), key=lambda c: rank.get(c.type, len(ORDER)))


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
