"""Prometheus metrics of the operator (names fixed by DESIGN.md).

The per-trust gauges are computed at scrape time from the current status of every trust
(:class:`TrustCollector`), never set and left behind: a deleted trust, or a client
certificate removed from a spec, takes its series with it, so no expiry alert fires for a
certificate nobody uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dtrtrust.core.times import parse_rfc3339
from dtrtrust.kube.cluster import REQUESTS

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

CERT_EXPIRY = "dtrtrust_certificate_expiry_timestamp_seconds"
NODES_DESIRED = "dtrtrust_nodes_desired"
NODES_SYNCED = "dtrtrust_nodes_synced"
TRUST_CONDITION = "dtrtrust_trust_condition"

# trust name -> its current status
Statuses = Mapping[str, Mapping[str, Any]]
CONDITION_STATUSES = ("True", "False", "Unknown")


def _timestamp(text: str) -> float:
    return parse_rfc3339(text).timestamp()


def trust_metrics(statuses: Statuses) -> list[Metric]:
    """The per-trust gauges of the current statuses: from what is published
    (status.bundle), not from a failed attempt."""
    expiry = GaugeMetricFamily(
        CERT_EXPIRY,
        "Earliest notAfter (Unix time) of the published CA bundle (kind=ca) or client "
        "certificate (kind=client) of a DTRTrust.",
        labels=["trust", "kind"],
    )
    desired = GaugeMetricFamily(NODES_DESIRED, "Nodes selected by a DTRTrust.", labels=["trust"])
    synced = GaugeMetricFamily(
        NODES_SYNCED,
        "Selected nodes that hold a DTRTrust's current bundle.",
        labels=["trust"],
    )
    condition = GaugeMetricFamily(
        TRUST_CONDITION,
        "1 for the current status of each condition of a DTRTrust, 0 for the others.",
        labels=["trust", "type", "status"],
    )
    for name, status in sorted(statuses.items()):
        bundle = status.get("bundle") or {}
        cas = [c for c in bundle.get("certificates") or [] if c.get("notAfter")]
        if cas:
            expiry.add_metric([name, "ca"], min(_timestamp(c["notAfter"]) for c in cas))
        client = bundle.get("clientCertificate") or {}
        if client.get("notAfter"):
            expiry.add_metric([name, "client"], _timestamp(client["notAfter"]))
        nodes = status.get("nodes") or {}
        if "desired" in nodes:
            desired.add_metric([name], nodes["desired"])
            synced.add_metric([name], nodes.get("synced", 0))
        for cond in status.get("conditions") or []:
            for value in CONDITION_STATUSES:
                condition.add_metric(
                    [name, str(cond.get("type")), value],
                    1.0 if cond.get("status") == value else 0.0,
                )
    return [expiry, desired, synced, condition]


def request_metrics() -> Metric:
    """Kubernetes API requests this operator sent (its kopf watches not included)."""
    family = CounterMetricFamily(
        "dtrtrust_api_requests",
        "Kubernetes API requests sent by the operator's reconciles, by client method "
        "(watches and kopf's own bookkeeping not included).",
        labels=["method"],
    )
    for method, count in sorted(dict(REQUESTS).items()):
        family.add_metric([method], count)
    return family


class TrustCollector(Collector):
    """Collects :func:`trust_metrics` from a source of the current statuses."""

    def __init__(self) -> None:
        self.source: Callable[[], Statuses] = dict

    def collect(self) -> Iterator[Metric]:
        yield from trust_metrics(dict(self.source()))
        yield request_metrics()


COLLECTOR = TrustCollector()
REGISTRY.register(COLLECTOR)


def describe(source: Callable[[], Statuses]) -> None:
    """Scrapes describe the statuses ``source`` returns (the controller's current ones)."""
    COLLECTOR.source = source


def serve(port: int) -> None:
    start_http_server(port)
