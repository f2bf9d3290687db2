"""The node's report: one ``DTRTrustNode`` per node, what each trust's files are there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtrtrust import __version__
from dtrtrust.contract import (
    API_VERSION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NODE_REPORT_KIND,
    SYNCED,
)


@dataclass(frozen=True)
class TrustReport:
    name: str
    content_hash: str
    state: str
    message: str = ""
    # The per-node probe with exactly these files (node.probe.ProbeResult.to_dict),
    # None when the probe is off or has not run for this content.
    probe: Mapping[str, object] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Empty fields are left out (as the API server would drop them)."""
        out: dict[str, Any] = {"name": self.name, "state": self.state}
        if self.content_hash:
            out["contentHash"] = self.content_hash
        if self.message:
            out["message"] = self.message[:1024]
        if self.probe is not None:
            out["probe"] = dict(self.probe)
        return out


def report_body(
    *,
    node_name: str,
    node_uid: str | None,
    namespace: str,
    trusts: Sequence[TrustReport],
    last_change: str,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """The DTRTrustNode object: one per node, owned by the Node so garbage
    collection removes it with the node."""
    meta: dict[str, Any] = {
        "name": node_name,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
    }
    if node_uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": node_uid,
                "blockOwnerDeletion": False,
            }
        ]
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": API_VERSION,
        "kind": NODE_REPORT_KIND,
        "metadata": meta,
        "status": report_status(node_name, trusts, last_change),
    }


def report_status(
    node_name: str, trusts: Sequence[TrustReport], last_change: str
) -> dict[str, Any]:
    return {
        "nodeName": node_name,
        "agentVersion": __version__,
        "synced": f"{sum(t.state == SYNCED for t in trusts)}/{len(trusts)}",
        "trusts": [t.to_dict() for t in sorted(trusts, key=lambda t: t.name)],
        "lastChange": last_change,
    }


def same_report(live: Mapping[str, Any] | None, trusts: Sequence[TrustReport]) -> bool:
    """Whether the live report already says this (lastChange aside): no write then."""
    if live is None:
        return False
    status = live.get("status") or {}
    return bool(
        status.get("agentVersion") == __version__
        and status.get("trusts") == [t.to_dict() for t in sorted(trusts, key=lambda t: t.name)]
    )
