"""What the reconcile reads about the cluster: from kopf's indexes (the watches kopf
keeps anyway), or, without them, from the API.

:class:`IndexedState` is what the running operator uses: the DTRTrusts, the Secrets and
ConfigMaps of the operator namespace, the Nodes' labels and the agents' reports, each
kept current by one watch (``@kopf.index`` in :mod:`dtrtrust.operator`). A reconcile
and a resync round read only these and issue no request unless they write; so a resync
with nothing changed costs no API request however many trusts and nodes there are.

:class:`ApiState` reads the same through :class:`~dtrtrust.kube.cluster.Kube` (LISTs and
GETs): the fallback when the controller runs without kopf (unit tests, tools).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dtrtrust.core.labels import selects
from dtrtrust.kube.cluster import ExistingSecret, Kube, NodeReport

# trust -> node -> (content hash, state, message)
TrustReports = Mapping[str, tuple[str, str, str]]
# trust -> node -> the probe entry of the node's report (with its contentHash)
TrustProbes = Mapping[str, Mapping[str, Any]]

# One value per key: what an index function returns for one object.
Index = Mapping[Any, Iterable[Any]]


class State(Protocol):
    """The read side of a reconcile (and :class:`dtrtrust.core.reconcile.Sources`)."""

    def trust(self, name: str) -> Mapping[str, Any] | None: ...

    def trust_names(self) -> list[str]: ...

    def secret(self, name: str) -> Mapping[str, bytes] | None: ...

    def config_map(self, name: str) -> Mapping[str, str] | None: ...

    def bundle_secret(self, name: str) -> ExistingSecret | None: ...

    def node_names(self, selector: Mapping[str, str]) -> list[str]: ...

    def trust_reports(self, trust: str) -> TrustReports: ...

    def trust_probes(self, trust: str) -> TrustProbes: ...


def _one(index: Index, key: Any) -> Any:
    """The value an index holds for ``key`` (one object per key), or None."""
    store = index.get(key)
    if store is None:
        return None
    for value in store:
        return value
    return None


@dataclass
class IndexedState:
    """Reads kopf's indexes; no API request."""

    trusts: Index  # name -> body
    secrets: Index  # name -> ExistingSecret (operator namespace)
    config_maps: Index  # name -> data (operator namespace)
    nodes: Index  # name -> labels
    reports: Index  # node -> NodeReport (entries and probes per trust)
    # Desired nodes per selector, valid while ``nodes_version`` is unchanged.
    nodes_version: int = 0
    _desired: dict[tuple[tuple[str, str], ...], tuple[int, list[str]]] = field(default_factory=dict)

    def trust(self, name: str) -> Mapping[str, Any] | None:
        found = _one(self.trusts, name)
        return found if isinstance(found, Mapping) else None

    def trust_names(self) -> list[str]:
        return sorted(str(name) for name in self.trusts)

    def secret(self, name: str) -> Mapping[str, bytes] | None:
        found = _one(self.secrets, name)
        return found.data if isinstance(found, ExistingSecret) else None

    def config_map(self, name: str) -> Mapping[str, str] | None:
        found = _one(self.config_maps, name)
        return found if isinstance(found, Mapping) else None

    def bundle_secret(self, name: str) -> ExistingSecret | None:
        found = _one(self.secrets, name)
        return found if isinstance(found, ExistingSecret) else None

    def node_names(self, selector: Mapping[str, str]) -> list[str]:
        key = tuple(sorted(selector.items()))
        hit = self._desired.get(key)
        if hit is not None and hit[0] == self.nodes_version:
            return hit[1]
        version = self.nodes_version
        names = sorted(
            str(name) for name in self.nodes if selects(selector, _one(self.nodes, name) or {})
        )
        self._desired[key] = (version, names)
        return names

    def _node_reports(self) -> Iterable[tuple[str, NodeReport]]:
        for node in self.reports:
            report = _one(self.reports, node)
            if isinstance(report, NodeReport):
                yield str(node), report

    def trust_reports(self, trust: str) -> TrustReports:
        found: dict[str, tuple[str, str, str]] = {}
        for node, report in self._node_reports():
            entry = report.entries.get(trust)
            if entry is not None:
                found[node] = entry
        return found

    def trust_probes(self, trust: str) -> TrustProbes:
        found: dict[str, Mapping[str, Any]] = {}
        for node, report in self._node_reports():
            probe = report.probes.get(trust)
            if probe is not None:
                found[node] = probe
        return found


@dataclass
class ApiState:
    """Reads through the API (LIST and GET per call): for use without kopf."""

    kube: Kube

    def trust(self, name: str) -> Mapping[str, Any] | None:
        return self.kube.get_trust(name)

    def trust_names(self) -> list[str]:
        return sorted(str(i["metadata"]["name"]) for i in self.kube.list_trusts())

    def secret(self, name: str) -> Mapping[str, bytes] | None:
        return self.kube.secret(name)

    def config_map(self, name: str) -> Mapping[str, str] | None:
        return self.kube.config_map(name)

    def bundle_secret(self, name: str) -> ExistingSecret | None:
        return self.kube.bundle_secret(name)

    def node_names(self, selector: Mapping[str, str]) -> list[str]:
        return self.kube.node_names(selector)

    def trust_reports(self, trust: str) -> TrustReports:
        return {
            node: entries[trust]
            for node, entries in self.kube.node_reports().items()
            if trust in entries
        }

    def trust_probes(self, trust: str) -> TrustProbes:
        _reports, probes = self.kube.node_reports_and_probes()
        return {node: found[trust] for node, found in probes.items() if trust in found}
