"""Pure builders of the bundle Secret the operator writes, and its freshness check.

The bundle Secret carries everything an agent needs in its annotations (addresses,
targets, node selector, deletion policy, content hash): agents write nothing they
did not get from it, and read DTRTrusts only to learn whether each still exists.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from dtrtrust.contract import (
    ADDRESSES_ANNOTATION,
    API_VERSION,
    HASH_ANNOTATION,
    KIND,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NODE_PROBE_ANNOTATION,
    NODE_PROBE_OFF,
    POLICY_ANNOTATION,
    SELECTOR_ANNOTATION,
    TARGETS_ANNOTATION,
    TRUST_LABEL,
    secret_name,
)
from dtrtrust.core.fingerprints import content_hash
from dtrtrust.core.spec import TrustSpec
from dtrtrust.kube.cluster import ExistingSecret


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
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, TRUST_LABEL: spec.name},
            "annotations": {
                HASH_ANNOTATION: content_hash,
                ADDRESSES_ANNOTATION: ",".join(spec.addresses),
                TARGETS_ANNOTATION: ",".join(spec.targets),
                SELECTOR_ANNOTATION: json.dumps(dict(spec.node_selector), sort_keys=True),
                POLICY_ANNOTATION: spec.deletion_policy,
                NODE_PROBE_ANNOTATION: (
                    str(int(spec.refresh_interval.total_seconds()))
                    if spec.verify_nodes
                    else NODE_PROBE_OFF
                ),
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
        and content_hash(existing.data) == meta["annotations"][HASH_ANNOTATION]
    )
