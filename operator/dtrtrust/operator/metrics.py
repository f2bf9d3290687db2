"""Prometheus metrics of the operator (names fixed by DESIGN.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from dtrtrust.core.reconcile import Outcome
from dtrtrust.core.times import parse_rfc3339

CERT_EXPIRY = Gauge(
    "dtrtrust_certificate_expiry_timestamp_seconds",
    "Earliest notAfter (Unix time) of the published CA bundle (kind=ca) or client "
    "certificate (kind=client) of a DTRTrust.",
    ["trust", "kind"],
)
RECONCILE_TOTAL = Counter(
    "dtrtrust_reconcile_total",
    "Reconciles by result: ready, waiting (nodes syncing), temporary (will retry), permanent "
    "(needs a fix in the spec or its sources).",
    ["result"],
)
CA_FETCH_DURATION = Histogram(
    "dtrtrust_ca_fetch_duration_seconds",
    "Time to fetch a registry's /ca, successful or not.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
NODES_DESIRED = Gauge("dtrtrust_nodes_desired", "Nodes selected by a DTRTrust.", ["trust"])
NODES_SYNCED = Gauge(
    "dtrtrust_nodes_synced", "Selected nodes that hold a DTRTrust's current bundle.", ["trust"]
)


def serve(port: int) -> None:
    start_http_server(port)


def _timestamp(text: str) -> float:
    return parse_rfc3339(text).timestamp()


def observe_trust(name: str, status: Mapping[str, Any], outcome: Outcome) -> None:
    """Gauges from what is published (status.bundle), not from a failed attempt."""
    bundle = status.get("bundle") or {}
    cas = [c for c in bundle.get("certificates") or [] if c.get("notAfter")]
    if cas:
        CERT_EXPIRY.labels(trust=name, kind="ca").set(min(_timestamp(c["notAfter"]) for c in cas))
    client = bundle.get("clientCertificate") or {}
    if client.get("notAfter"):
        CERT_EXPIRY.labels(trust=name, kind="client").set(_timestamp(client["notAfter"]))
    nodes = status.get("nodes") or {}
    if "desired" in nodes:
        NODES_DESIRED.labels(trust=name).set(nodes["desired"])
        NODES_SYNCED.labels(trust=name).set(nodes.get("synced", 0))


def forget(name: str) -> None:
    for gauge, labels in (
        (CERT_EXPIRY, {"trust": name, "kind": "ca"}),
        (CERT_EXPIRY, {"trust": name, "kind": "client"}),
        (NODES_DESIRED, {"trust": name}),
        (NODES_SYNCED, {"trust": name}),
    ):
        try:
            gauge.remove(*labels.values())
        except KeyError:
            continue
