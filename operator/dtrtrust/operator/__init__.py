"""The kopf operator: thin handlers around :class:`Controller`.

Run as ``dtrtrust operator`` or ``kopf run -m dtrtrust.operator``. create, update and
resume call one idempotent :meth:`Controller.reconcile`; a resync task started at
start-up calls the same function for every DTRTrust (refreshInterval is honoured by
caching fetches and probes), instead of kopf timers, because kopf adds a finalizer
for timers and a finalizer deadlocks GitOps deletions when the operator is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from dtrtrust import conditions, daemonset, metrics, objects
from dtrtrust.conditions import Condition
from dtrtrust.fetch import FetchedCA, VerifyResult
from dtrtrust.kube.cluster import (
    NODE_REPORT_PLURAL,
    PLURAL,
    VERSION,
    ApiUnavailable,
    Kube,
    NodeReports,
    load_client,
)
from dtrtrust.reconcile import (
    CA_KEY,
    LiveNetwork,
    Network,
    Previous,
    reconcile,
    secret_name,
    summarize,
)
from dtrtrust.spec import API_GROUP, SpecError, TrustSpec, parse_trust

log = logging.getLogger("dtrtrust.operator")


@dataclass(frozen=True)
class Config:
    """Operator settings, from flags and the environment; logged once at start."""

    # Namespace of the bundle Secrets, the source refs, node reports and the agent.
    namespace: str = "dtrtrust-system"
    # Port of /metrics (Prometheus); kopf's /healthz liveness endpoint is on port + 1.
    metrics_port: int = 8080
    # How often every DTRTrust is reconciled again (fetches honour refreshInterval).
    resync_seconds: float = 60.0
    # Connect/read timeout for the registry (CA fetch, TLS verification, /basic_info).
    registry_timeout: float = 10.0
    # First retry delay after a temporary failure; doubles up to max_backoff_seconds.
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            namespace=env.get("DTRTRUST_NAMESPACE", cls.namespace),
            metrics_port=int(env.get("DTRTRUST_METRICS_PORT", cls.metrics_port)),
            resync_seconds=float(env.get("DTRTRUST_RESYNC_SECONDS", cls.resync_seconds)),
            registry_timeout=float(env.get("DTRTRUST_REGISTRY_TIMEOUT", cls.registry_timeout)),
            backoff_seconds=float(env.get("DTRTRUST_BACKOFF_SECONDS", cls.backoff_seconds)),
            max_backoff_seconds=float(
                env.get("DTRTRUST_MAX_BACKOFF_SECONDS", cls.max_backoff_seconds)
            ),
        )


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
NODE_PROBLEMS = {"Conflict": "Conflict", "NotEffective": "NotEffective", "Error": "NodeErrors"}


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
        if state == "Synced" and content_hash == published_hash:
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
        n = self._failures.get(name, 0)
        return float(min(self.config.backoff_seconds * (2**n), self.config.max_backoff_seconds))

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
            cond = conditions.failed(conditions.READY, exc.reason, exc.message)
            merged = conditions.merge(
                previous_status.get("conditions"),
                [cond],
                generation=int(meta.get("generation") or 0),
                now=now,
            )
            status = {
                **previous_status,
                "observedGeneration": meta.get("generation"),
                "conditions": [c.to_dict() for c in merged],
            }
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

        published_hash = existing.annotations.get(objects.HASH_ANNOTATION) if existing else None
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

        nodes_cond, node_counts = self._nodes(spec, published_hash)
        status = objects.trust_status(
            spec, outcome, nodes_cond, node_counts, previous_status, now=now
        )
        self._publish_status(body, previous_status, status, now)
        metrics.observe_trust(name, status, outcome)

        failed = outcome.failed
        if failed is not None:
            kind = "temporary" if outcome.temporary else "permanent"
            return Result(kind, f"{failed.type} {failed.reason}: {failed.message}")
        ready = conditions.find(
            [Condition.from_dict(c) for c in status["conditions"]], conditions.READY
        )
        if ready is None or ready.status != conditions.TRUE:
            return Result(
                "waiting", summarize([Condition.from_dict(c) for c in status["conditions"]])
            )
        return Result("ready", "Ready")

    def _nodes(
        self, spec: TrustSpec, published_hash: str | None
    ) -> tuple[Condition | None, dict[str, Any] | None]:
        if published_hash is None:
            return None, None
        desired = self.kube.node_names(spec.node_selector)
        synced, problems = node_progress(
            desired, self.kube.node_reports(), spec.name, published_hash
        )
        counts, cond = objects.nodes_status(desired, synced, problems)
        return cond, counts

    def ensure_daemonset(self) -> None:
        """Keep the one agent DaemonSet in place (create, or replace on drift)."""
        body = daemonset.build(daemonset.Settings.from_env(self.config.namespace))
        try:
            done = self.kube.apply_daemonset(body)
        except ApiUnavailable as exc:
            log.warning("agent DaemonSet: %s; will retry at the next resync", exc)
            return
        if done != "unchanged":
            log.info("agent DaemonSet %s/%s %s", self.config.namespace, daemonset.NAME, done)

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


# --- kopf wiring -------------------------------------------------------------------


def _controller(memo: kopf.Memo) -> Controller:
    ctrl = memo.get("controller")
    if not isinstance(ctrl, Controller):
        raise kopf.PermanentError("the operator did not start up properly")
    return ctrl


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    config = Config.from_env()
    # Own prefix for kopf's bookkeeping annotations; never spec or labels (Argo CD sees no drift).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"  # no handler requires it
    # Reconnect watches regularly so a silently dropped connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf would turn its own log lines into Events in the pod's namespace; the operator
    # posts its own, deliberate events (Published, failures) where RBAC allows.
    settings.posting.enabled = False
    settings.execution.max_workers = 4

    kube = Kube(load_client(), config.namespace)
    ctrl = Controller(config, kube)
    memo["controller"] = ctrl
    await asyncio.to_thread(ctrl.ensure_daemonset)
    metrics.serve(config.metrics_port)
    memo["resync"] = asyncio.get_running_loop().create_task(ctrl.resync_forever())
    logger.info("dtrtrust operator: %s", dataclasses.asdict(config))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.resume(API_GROUP, VERSION, PLURAL)
@kopf.on.create(API_GROUP, VERSION, PLURAL)
@kopf.on.update(API_GROUP, VERSION, PLURAL)
async def reconcile_trust(name: str, memo: kopf.Memo, **_: Any) -> None:
    ctrl = _controller(memo)
    result = await ctrl.reconcile(name, fresh=True)
    if result.kind == "temporary":
        raise kopf.TemporaryError(result.message, delay=ctrl.backoff(name))
    if result.kind == "permanent":
        raise kopf.PermanentError(result.message)


@kopf.on.delete(API_GROUP, VERSION, PLURAL, optional=True)
async def forget_trust(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Optional: no finalizer. The Secret goes by garbage collection (owner reference)."""
    _controller(memo).forget(name)


@kopf.on.event(API_GROUP, VERSION, NODE_REPORT_PLURAL)
async def node_report_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An agent's report changed: reconcile the trusts it names, so NodesSynced and
    Ready follow within a second instead of at the next resync."""
    ctrl = memo.get("controller")
    if not isinstance(ctrl, Controller):
        return  # an event before start-up finished; the resync covers it
    if (body.get("metadata") or {}).get("namespace") != ctrl.config.namespace:
        return  # only our agents report, in our namespace
    names = {str(t.get("name")) for t in (body.get("status") or {}).get("trusts") or []}
    for name in sorted(n for n in names if n and n != "None"):
        await ctrl.reconcile(name)


def run(args: argparse.Namespace) -> int:
    """``dtrtrust operator``: kopf with the project's settings, all DTRTrusts."""
    os.environ.setdefault("DTRTRUST_NAMESPACE", args.namespace)
    os.environ.setdefault("DTRTRUST_METRICS_PORT", str(args.metrics_port))
    kopf.configure(verbose=bool(getattr(args, "verbose", False)))
    kopf.run(
        clusterwide=True,
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{int(args.metrics_port) + 1}/healthz",
    )
    return 0
