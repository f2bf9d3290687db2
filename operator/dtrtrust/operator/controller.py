"""The operator's reconcile of one DTRTrust, and the resync of all of them.

:class:`Controller` is what the kopf handlers (``dtrtrust.operator``) call: read the
trust and its sources through :mod:`dtrtrust.kube.cluster`, decide with the pure
:func:`dtrtrust.core.reconcile.reconcile`, write the bundle Secret only when its content
hash differs, assemble the status with :mod:`dtrtrust.core.status` and patch it only when
it differs, post events on transitions, update metrics. The blocking part runs in a
worker thread; the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dtrtrust.contract import (
    AGENT_DAEMONSET,
    CA_KEY,
    CONFLICT,
    ERROR,
    HASH_ANNOTATION,
    NOT_EFFECTIVE,
    SYNCED,
    secret_name,
)
from dtrtrust.core import conditions
from dtrtrust.core.backoff import exponential
from dtrtrust.core.conditions import Condition
from dtrtrust.core.network import FetchedCA, Network, VerifyResult
from dtrtrust.core.reconcile import Previous, reconcile, summarize
from dtrtrust.core.spec import SpecError, TrustSpec, parse_trust
from dtrtrust.core.status import (
    invalid_spec_status,
    is_ready,
    nodes_status,
    nodes_verified,
    trust_status,
)
from dtrtrust.kube.cluster import ApiUnavailable, Kube, NodeReports
from dtrtrust.net.live import LiveNetwork
from dtrtrust.operator import daemonset, metrics, objects
from dtrtrust.operator.config import Config

log = logging.getLogger("dtrtrust.operator")


@dataclass
class _Cache:
    """Successful fetches and probes, reused until the trust's refreshInterval passes."""

    entries: dict[tuple[Any, ...], tuple[float, Any]] = field(default_factory=dict)
    max_entries: int = 1000

    def get(self, key: tuple[Any, ...], ttl: float) -> Any:
        hit = self.entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
        return None

    def put(self, key: tuple[Any, ...], value: Any) -> Any:
        now = time.monotonic()
        if len(self.entries) > self.max_entries:  # forget what no trust asked for in a day
            self.entries = {k: v for k, v in self.entries.items() if now - v[0] < 86400}
        self.entries[key] = (now, value)
        return value


@dataclass
class CachedNetwork:
    live: Network
    cache: _Cache
    ttl: float

    def fetch_ca(
        self, url: str, *, pins: tuple[str, ...], insecure_skip_pinning: bool
    ) -> FetchedCA:
        key = ("fetch", url, pins, insecure_skip_pinning)
        hit = self.cache.get(key, self.ttl)
        if isinstance(hit, FetchedCA):
            return hit
        started = time.monotonic()
        try:
            got = self.live.fetch_ca(url, pins=pins, insecure_skip_pinning=insecure_skip_pinning)
        finally:
            metrics.CA_FETCH_DURATION.observe(time.monotonic() - started)
        return self.cache.put(key, got)  # type: ignore[no-any-return]

    def verify_registry(
        self,
        registry: str,
        ca_pem: bytes,
        client: tuple[bytes, bytes] | None,
        *,
        probe_client_auth: bool,
    ) -> VerifyResult:
        digest = hashlib.sha256(ca_pem + b"\0" + b"\0".join(client or ())).hexdigest()
        key = ("verify", registry, digest, probe_client_auth)
        hit = self.cache.get(key, self.ttl)
        if isinstance(hit, VerifyResult):
            return hit
        got = self.live.verify_registry(
            registry, ca_pem, client, probe_client_auth=probe_client_auth
        )
        return self.cache.put(key, got)  # type: ignore[no-any-return]


# Agent report states that keep a node out of sync, and the NodesSynced reason for each.
NODE_PROBLEMS = {CONFLICT: "Conflict", NOT_EFFECTIVE: "NotEffective", ERROR: "NodeErrors"}


def node_progress(
    desired: list[str], reports: NodeReports, trust: str, published_hash: str
) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """(synced nodes, node -> (reason, message)) of ``desired`` for one trust: a node
    is synced when its agent reports the published hash in state Synced."""
    synced: list[str] = []
    problems: dict[str, tuple[str, str]] = {}
    for node in desired:
        entry = reports.get(node, {}).get(trust)
        if entry is None:
            continue
        content_hash, state, message = entry
        if state == SYNCED and content_hash == published_hash:
            synced.append(node)
        elif state in NODE_PROBLEMS:
            problems[node] = (NODE_PROBLEMS[state], message or state)
    return synced, problems


@dataclass(frozen=True)
class Result:
    kind: str  # "ready" | "waiting" | "temporary" | "permanent"
    message: str


class Controller:
    """Everything the handlers share: the API, the caches, one lock per trust."""

    def __init__(self, config: Config, kube: Kube, network: Network | None = None) -> None:
        self.config = config
        self.kube = kube
        self.network = network or LiveNetwork(timeout=config.registry_timeout)
        self.cache = _Cache()
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, int] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def backoff(self, name: str) -> float:
        """kopf's retry delay: doubled once per temporary failure so far."""
        return exponential(
            self._failures.get(name, 0),
            self.config.backoff_seconds,
            self.config.max_backoff_seconds,
        )

    async def reconcile(self, name: str, *, fresh: bool = False) -> Result:
        """``fresh``: re-check the registry now (a change of the object) instead of
        reusing a fetch or probe younger than refreshInterval (the periodic resync)."""
        async with self._lock(name):
            result = await asyncio.to_thread(self._reconcile_sync, name, fresh)
        metrics.RECONCILE_TOTAL.labels(result=result.kind).inc()
        if result.kind == "temporary":
            self._failures[name] = self._failures.get(name, 0) + 1
        else:
            self._failures.pop(name, None)
        return result

    def forget(self, name: str) -> None:
        self._locks.pop(name, None)
        self._failures.pop(name, None)
        metrics.forget(name)

    # The blocking part runs in a worker thread.
    def _reconcile_sync(self, name: str, fresh: bool = False) -> Result:
        now = dt.datetime.now(dt.UTC)
        try:
            body = self.kube.get_trust(name)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return Result("ready", "gone")
            return self._reconcile_body(body, now, fresh)
        except ApiUnavailable as exc:
            log.warning("DTRTrust %s: %s; will retry", name, exc)
            return Result("temporary", str(exc))

    def _reconcile_body(
        self, body: Mapping[str, Any], now: dt.datetime, fresh: bool = False
    ) -> Result:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        previous_status: Mapping[str, Any] = body.get("status") or {}
        try:
            spec = parse_trust(body)
        except SpecError as exc:
            status = invalid_spec_status(
                previous_status,
                int(meta.get("generation") or 0),
                exc.reason,
                exc.message,
                now=now,
            )
            self._publish_status(body, previous_status, status, now)
            return Result("permanent", exc.message)

        existing = self.kube.bundle_secret(secret_name(name))
        previous = Previous.from_status(
            previous_status.get("bundle"), existing.data.get(CA_KEY) if existing else None
        )
        ttl = 0.0 if fresh else spec.refresh_interval.total_seconds()
        network = CachedNetwork(self.network, self.cache, ttl)
        outcome = reconcile(spec, sources=self.kube, now=now, previous=previous, network=network)
        for warning in outcome.warnings:
            log.info("DTRTrust %s: %s", name, warning)

        published_hash = existing.annotations.get(HASH_ANNOTATION) if existing else None
        if outcome.publish is not None and outcome.content_hash is not None:
            wanted = objects.bundle_secret(
                spec,
                str(meta.get("uid")),
                outcome.publish,
                outcome.content_hash,
                self.config.namespace,
            )
            if not objects.secret_is_current(existing, wanted):
                self.kube.write_bundle_secret(wanted, exists=existing is not None)
                log.info(
                    "DTRTrust %s: published %s (%s)", name, secret_name(name), outcome.content_hash
                )
                self.kube.post_event(
                    body,
                    "Normal",
                    "Published",
                    f"Published bundle {outcome.content_hash} to Secret "
                    f"{self.config.namespace}/{secret_name(name)}.",
                    now=now,
                )
            published_hash = outcome.content_hash

        nodes_cond, node_counts, verified = self._nodes(spec, published_hash)
        status = trust_status(
            spec, outcome, nodes_cond, node_counts, previous_status, now=now, verified=verified
        )
        self._publish_status(body, previous_status, status, now)
        metrics.observe_trust(name, status, outcome)

        failed = outcome.failed
        if failed is not None:
            kind = "temporary" if outcome.temporary else "permanent"
            return Result(kind, f"{failed.type} {failed.reason}: {failed.message}")
        if not is_ready(status):
            return Result(
                "waiting", summarize([Condition.from_dict(c) for c in status["conditions"]])
            )
        return Result("ready", "Ready")

    def _nodes(
        self, spec: TrustSpec, published_hash: str | None
    ) -> tuple[Condition | None, dict[str, Any] | None, Condition | None]:
        if published_hash is None:
            return None, None, None
        desired = self.kube.node_names(spec.node_selector)
        reports, probes = self.kube.node_reports_and_probes()
        synced, problems = node_progress(desired, reports, spec.name, published_hash)
        counts, cond = nodes_status(desired, synced, problems)
        if not spec.verify_nodes:
            return cond, counts, None
        current = {
            node: found
            for node in desired
            if (found := probes.get(node, {}).get(spec.name))
            and found.get("contentHash") == published_hash
        }
        count, verified = nodes_verified(desired, current)
        return cond, {**counts, "verified": count}, verified

    def ensure_daemonset(self) -> None:
        """Keep the one agent DaemonSet in place (create, or replace on drift)."""
        body = daemonset.build(daemonset.Settings.from_env(self.config.namespace))
        try:
            live = self.kube.read_daemonset(AGENT_DAEMONSET)
            if live is None:
                self.kube.write_daemonset(body, exists=False)
                done = "created"
            else:
                why = daemonset.needs_update(body, live)
                if why is None:
                    return
                self.kube.write_daemonset(daemonset.for_replace(body, live), exists=True)
                done = f"replaced ({why})"
        except ApiUnavailable as exc:
            log.warning("agent DaemonSet: %s; will retry at the next resync", exc)
            return
        log.info("agent DaemonSet %s/%s %s", self.config.namespace, AGENT_DAEMONSET, done)

    def _publish_status(
        self,
        body: Mapping[str, Any],
        before: Mapping[str, Any],
        status: Mapping[str, Any],
        now: dt.datetime,
    ) -> None:
        name = str((body.get("metadata") or {}).get("name"))
        if dict(status) == dict(before):
            return  # nothing changed: no write
        self.kube.patch_trust_status(name, status)
        old = {c.get("type"): c for c in before.get("conditions") or []}.get(conditions.READY)
        new = {c.get("type"): c for c in status.get("conditions") or []}.get(conditions.READY)
        if new and (
            old is None
            or (old.get("status"), old.get("reason")) != (new.get("status"), new.get("reason"))
        ):
            if new.get("status") != conditions.TRUE:
                self.kube.post_event(
                    body, "Warning", str(new.get("reason")), str(new.get("message")), now=now
                )
            else:
                self.kube.post_event(body, "Normal", "Ready", str(new.get("message")), now=now)

    async def resync_forever(self) -> None:
        """Reconcile every DTRTrust periodically (level-triggered safety net). The loop
        never ends on an error: a failed round is logged and the next one runs."""
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            try:
                await self.resync_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "resync round failed; the next one runs in %ss", self.config.resync_seconds
                )

    async def resync_once(self) -> None:
        await asyncio.to_thread(self.ensure_daemonset)
        try:
            items = await asyncio.to_thread(self.kube.list_trusts)
        except ApiUnavailable as exc:
            log.warning("resync: %s; will retry", exc)
            return
        names = {str(i["metadata"]["name"]) for i in items}
        for gone in set(self._locks) - names:
            self.forget(gone)
        for name in sorted(names):
            result = await self.reconcile(name)
            if result.kind == "temporary":
                log.info("DTRTrust %s: %s", name, result.message)
