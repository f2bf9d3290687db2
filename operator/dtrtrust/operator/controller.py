"""The operator's reconcile of one DTRTrust, and the resync of all of them.

:class:`Controller` is what the kopf handlers (``dtrtrust.operator``) call: read the
trust and its sources from :mod:`dtrtrust.operator.state` (kopf's indexes in the running
operator; no LIST inside a reconcile), decide with the pure
:func:`dtrtrust.core.reconcile.reconcile`, write the bundle Secret only when its content
hash differs, assemble the status with :mod:`dtrtrust.core.status` and patch it only when
it differs, post events on transitions (Normal ones within a budget). The blocking part
runs on the controller's own thread pool; the event loop never blocks.

Work is queued per trust, like a controller's work queue: a DTRTrust event with a new
generation, or a report, Node or Secret event, marks the trusts it concerns dirty
(:meth:`Controller.trust_changed`, :meth:`Controller.mark_dirty`) and ``concurrency``
workers (:meth:`Controller.work_forever`) reconcile each dirty trust once, oldest first,
however many events named it meanwhile, never one trust on two workers; a temporary
failure is queued again after its backoff. Resync rounds run a bounded number of trusts
at once too, and both catch per trust, so one stuck trust never stops the others. The
queue is touched only from the event loop (kopf's handlers are async).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dtrtrust.contract import (
    AGENT_DAEMONSET,
    CA_KEY,
    CONFLICT,
    ERROR,
    HASH_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NOT_EFFECTIVE,
    SYNCED,
    TRUST_LABEL,
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
    status_patch,
    trust_status,
)
from dtrtrust.kube.cluster import ApiRejected, ApiUnavailable, Kube, NodeReport, report_entries
from dtrtrust.net.live import LiveNetwork
from dtrtrust.operator import daemonset, metrics, objects
from dtrtrust.operator.config import Config
from dtrtrust.operator.state import ApiState, State, TrustReports

log = logging.getLogger("dtrtrust.operator")

# Normal events per second (and burst) the operator posts; Warnings always go out.
EVENT_RATE = 5.0
EVENT_BURST = 100


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


class EventBudget:
    """A token bucket for Normal events (Warnings are never held back): Events are
    best effort by Kubernetes' own definition, and 1,000 trusts applied at once would
    otherwise post 2,000 "Published" and "Ready" events, half the operator's writes,
    while status says the same. Like client-go's event spam filter, per operator."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.at = clock()
        self.suppressed = 0
        self.reported_at = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            self.suppressed += 1
            if now - self.reported_at >= 10.0:
                self.reported_at = now
                log.info(
                    "posting at most %.0f Normal events per second: %d held back so far "
                    "(the trusts' status carries the same)",
                    self.rate,
                    self.suppressed,
                )
            return False


# Agent report states that keep a node out of sync, and the NodesSynced reason for each.
NODE_PROBLEMS = {CONFLICT: "Conflict", NOT_EFFECTIVE: "NotEffective", ERROR: "NodeErrors"}


def node_progress(
    desired: list[str], reports: TrustReports, published_hash: str
) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """(synced nodes, node -> (reason, message)) of ``desired`` for one trust, from the
    agents' entries for it (node -> entry): a node is synced when its agent reports the
    published hash in state Synced."""
    synced: list[str] = []
    problems: dict[str, tuple[str, str]] = {}
    for node in desired:
        entry = reports.get(node)
        if entry is None:
            continue
        content_hash, state, message = entry
        if state == SYNCED and content_hash == published_hash:
            synced.append(node)
        elif state in NODE_PROBLEMS:
            problems[node] = (NODE_PROBLEMS[state], message or state)
    return synced, problems


def _probe_result(probe: Mapping[str, Any] | None) -> Any:
    """What NodesVerified depends on in a report's probe entry: everything but when it
    ran (a periodic re-probe with the same result queues nothing)."""
    if probe is None:
        return None
    rest = sorted((k, str(v)) for k, v in probe.items() if k != "checkedAt")
    return (bool(probe.get("checkedAt")), tuple(rest))


@dataclass(frozen=True)
class Result:
    kind: str  # "ready" | "waiting" | "temporary" | "permanent"
    message: str


class Controller:
    """Everything the handlers share: the API, the caches, one lock per trust, the queue."""

    def __init__(
        self,
        config: Config,
        kube: Kube,
        network: Network | None = None,
        state: State | None = None,
    ) -> None:
        self.config = config
        self.kube = kube
        self.state: State = state if state is not None else ApiState(kube)
        self.network = network or LiveNetwork(timeout=config.registry_timeout)
        self.cache = _Cache()
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # reconciles holding or waiting for a lock
        self._failures: dict[str, int] = {}
        # The work queue: trusts to reconcile, oldest first (a dict as an ordered set);
        # those a worker holds; those to re-check with the registry now (a spec change).
        self._dirty: dict[str, None] = {}
        self._processing: set[str] = set()
        self._fresh: set[str] = set()
        self._generations: dict[str, int | None] = {}
        self._wake = asyncio.Event()
        # The blocking part of a reconcile runs here, ``concurrency`` at a time (asyncio's
        # default executor has min(32, cores + 4) threads and is shared with kopf).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.concurrency, thread_name_prefix="reconcile"
        )
        # What this operator last wrote, until its watch shows it (the index may lag).
        self._written: dict[str, dict[str, Any]] = {}
        # The last bundle Secret published per trust: republished at once when the
        # Secret is deleted or edited, even while the registry cannot be reached.
        self._published: dict[str, dict[str, Any]] = {}
        self._warned: dict[str, tuple[str, ...]] = {}
        self._node_labels: dict[str, frozenset[tuple[str, str]]] = {}
        # node -> its report as last seen (entries and probes per trust)
        self._reports: dict[str, NodeReport] = {}
        # The current status per trust: what /metrics describes at scrape time.
        self.statuses: dict[str, dict[str, Any]] = {}
        self.last_resync = time.monotonic()
        self.events = EventBudget(rate=EVENT_RATE, burst=EVENT_BURST)

    def _event(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str, *, now: dt.datetime
    ) -> None:
        if type_ == "Normal" and not self.events.allow():
            return
        self.kube.post_event(body, type_, reason, message, now=now)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def backoff(self, name: str) -> float:
        """The retry delay of a temporary failure: doubled once per failure so far."""
        return exponential(
            self._failures.get(name, 0),
            self.config.backoff_seconds,
            self.config.max_backoff_seconds,
        )

    async def reconcile(self, name: str, *, fresh: bool = False) -> Result:
        """``fresh``: re-check the registry now (a change of the object) instead of
        reusing a fetch or probe younger than refreshInterval (the periodic resync)."""
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with self._lock(name):
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._executor, self._reconcile_sync, name, fresh
                )
        finally:
            self._users[name] -= 1
            if not self._users[name]:
                del self._users[name]
        metrics.RECONCILE_TOTAL.labels(result=result.kind).inc()
        if result.kind == "temporary":
            self._failures[name] = self._failures.get(name, 0) + 1
        else:
            self._failures.pop(name, None)
        return result

    def forget(self, name: str) -> None:
        """A trust is gone. Its lock stays while a reconcile holds or awaits it: a new
        lock next to a held one would let two reconciles of one trust run at once."""
        if name not in self._users:
            self._locks.pop(name, None)
        for memory in (
            self._failures,
            self._written,
            self._published,
            self._warned,
            self._generations,
            self._dirty,
        ):
            memory.pop(name, None)
        self.statuses.pop(name, None)
        self._fresh.discard(name)

    # --- the work queue -----------------------------------------------------------

    def mark_dirty(self, names: Iterable[str]) -> None:
        """Queue trusts for one reconcile each (coalesced: a trust queued twice before
        a worker picks it up is reconciled once)."""
        for name in names:
            if name:
                self._dirty[name] = None
        if self._dirty:
            self._wake.set()

    def trust_changed(self, name: str, generation: int | None) -> None:
        """A DTRTrust event: queue the trust when its spec changed (a new generation)
        or it is new to this operator, and re-check its registry then. Events of its
        own status patches (same generation) queue nothing; the resync catches
        anything else. Level-triggered: kopf keeps no record of what it handled on the
        object (no annotation, no patch per change)."""
        if self._generations.get(name, -1) == generation:
            return
        self._generations[name] = generation
        self._fresh.add(name)
        self.mark_dirty([name])

    def _next_dirty(self) -> str | None:
        """The oldest queued trust that no worker holds (a trust is never reconciled
        by two workers at once; queued again meanwhile, it waits for the first)."""
        for name in self._dirty:
            if name not in self._processing:
                del self._dirty[name]
                return name
        return None

    async def work_forever(self) -> None:
        """``concurrency`` workers take trusts off the queue, oldest first."""
        await asyncio.gather(*(self._worker() for _ in range(self.config.concurrency)))

    async def _worker(self) -> None:
        while True:
            name = self._next_dirty()
            if name is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._processing.add(name)
            try:
                await self._reconcile_logged(name, fresh=name in self._fresh)
            finally:
                self._processing.discard(name)
                if self._dirty:
                    self._wake.set()  # a trust queued while this one held it

    async def _reconcile_logged(self, name: str, *, fresh: bool = False) -> None:
        """Reconcile ``name``; an error is logged and never reaches the caller. A
        temporary failure queues the trust again after its backoff."""
        try:
            result = await self.reconcile(name, fresh=fresh)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("DTRTrust %s: reconcile failed; it is retried later", name)
            return
        if result.kind == "temporary":
            delay = self.backoff(name)
            log.info("DTRTrust %s: %s; retrying in %.0f s", name, result.message, delay)
            asyncio.get_running_loop().call_later(delay, self.mark_dirty, [name])
        else:
            self._fresh.discard(name)
            if result.kind == "permanent":
                log.warning("DTRTrust %s: %s", name, result.message)

    async def reconcile_many(self, names: Iterable[str]) -> None:
        """Reconcile ``names``, ``config.concurrency`` at a time; an error of one trust
        is logged and never stops the others."""
        limit = asyncio.Semaphore(self.config.concurrency)

        async def one(name: str) -> None:
            async with limit:
                await self._reconcile_logged(name, fresh=name in self._fresh)

        await asyncio.gather(*(one(n) for n in names))

    def report_changed(self, body: Mapping[str, Any], *, deleted: bool = False) -> NodeReport:
        """An agent's report changed: queue only the trusts whose entry or probe result
        changed. Returns the parsed report (the report index keeps this very object: no
        second copy)."""
        node, report = report_entries(body)
        old = self._reports.pop(node, None)
        if not deleted and report.entries:
            # The very object the report index keeps: no second copy of a million
            # entries at 1,000 x 1,000 (entries are shared tuples, see report_entries).
            self._reports[node] = report
        new = None if deleted else report
        old_entries = old.entries if old else {}
        new_entries = new.entries if new else {}
        old_probes = {t: _probe_result(p) for t, p in old.probes.items()} if old else {}
        new_probes = {t: _probe_result(p) for t, p in new.probes.items()} if new else {}
        self.mark_dirty(
            t
            for t in old_entries.keys() | new_entries.keys()
            if old_entries.get(t) != new_entries.get(t)
        )
        self.mark_dirty(
            t
            for t in old_probes.keys() | new_probes.keys()
            if old_probes.get(t) != new_probes.get(t)
        )
        return report

    def node_changed(self, name: str, labels: Mapping[str, str] | None) -> None:
        """A Node appeared, went or changed labels: every trust's desired set may
        change. A heartbeat (same labels) queues nothing."""
        new = None if labels is None else frozenset(labels.items())
        if self._node_labels.get(name) == new:
            return
        if new is None:
            self._node_labels.pop(name, None)
        else:
            self._node_labels[name] = new
        bump = getattr(self.state, "nodes_version", None)
        if isinstance(bump, int):
            self.state.nodes_version = bump + 1  # type: ignore[attr-defined]
        self.mark_dirty(self.state.trust_names())

    def secret_changed(self, name: str, labels: Mapping[str, str]) -> None:
        """A Secret or ConfigMap of the operator namespace changed or went: queue its
        trust (a bundle Secret: repair a deletion or hand edit at once) and every trust
        that names it as a source."""
        if labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:  # a bundle Secret, never a source
            self.mark_dirty([labels.get(TRUST_LABEL) or ""])
            return
        names: set[str] = set()
        for candidate in self.state.trust_names():
            body = self.state.trust(candidate) or {}
            if name in _referenced(body):
                names.add(candidate)
        self.mark_dirty(names)

    def progress_problem(self) -> str | None:
        """Why the operator is not making progress (for the liveness probe), or None:
        the last completed resync round is older than three resync periods."""
        age = time.monotonic() - self.last_resync
        limit = 3 * self.config.resync_seconds
        if age > limit:
            return (
                f"no resync round completed for {age:.0f} s (limit {limit:.0f} s): "
                "reconciliation is stuck; restarting the operator"
            )
        return None

    # The blocking part runs in a worker thread.
    def _reconcile_sync(self, name: str, fresh: bool = False) -> Result:
        now = dt.datetime.now(dt.UTC)
        try:
            body = self.state.trust(name)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                self.statuses.pop(name, None)  # its series leave /metrics with it
                return Result("ready", "gone")
            return self._reconcile_body(body, now, fresh)
        except ApiRejected as exc:
            log.error("DTRTrust %s: %s", name, exc)
            return Result("permanent", str(exc))
        except ApiUnavailable as exc:
            log.warning("DTRTrust %s: %s; will retry", name, exc)
            return Result("temporary", str(exc))

    def _reconcile_body(
        self, body: Mapping[str, Any], now: dt.datetime, fresh: bool = False
    ) -> Result:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        previous_status = self._status_before(name, body.get("status") or {})
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

        existing = self.state.bundle_secret(secret_name(name))
        previous = Previous.from_status(
            previous_status.get("bundle"), existing.data.get(CA_KEY) if existing else None
        )
        ttl = 0.0 if fresh else spec.refresh_interval.total_seconds()
        network = CachedNetwork(self.network, self.cache, ttl)
        outcome = reconcile(spec, sources=self.state, now=now, previous=previous, network=network)
        if self._warned.get(name) != tuple(outcome.warnings):  # once, not every resync
            self._warned[name] = tuple(outcome.warnings)
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
                self._published[name] = wanted
                log.info(
                    "DTRTrust %s: published %s (%s)", name, secret_name(name), outcome.content_hash
                )
                self._event(
                    body,
                    "Normal",
                    "Published",
                    f"Published bundle {outcome.content_hash} to Secret "
                    f"{self.config.namespace}/{secret_name(name)}.",
                    now=now,
                )
            self._published[name] = wanted
            published_hash = outcome.content_hash
        elif name in self._published:
            published_hash = self._republish(body, existing, now) or published_hash

        nodes_cond, node_counts, verified = self._nodes(spec, published_hash)
        status = trust_status(
            spec, outcome, nodes_cond, node_counts, previous_status, now=now, verified=verified
        )
        self._publish_status(body, previous_status, status, now)

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
        desired = self.state.node_names(spec.node_selector)
        synced, problems = node_progress(
            desired, self.state.trust_reports(spec.name), published_hash
        )
        counts, cond = nodes_status(desired, synced, problems)
        if not spec.verify_nodes:
            return cond, counts, None
        probes = self.state.trust_probes(spec.name)
        current = {
            node: found
            for node in desired
            if (found := probes.get(node)) and found.get("contentHash") == published_hash
        }
        count, verified = nodes_verified(desired, current)
        return cond, {**counts, "verified": count}, verified

    def _republish(self, body: Mapping[str, Any], existing: Any, now: dt.datetime) -> str | None:
        """Nothing new to publish (a check failed, e.g. the registry is down), but the
        bundle Secret was deleted or edited: put back what was last published, without
        a new fetch. Returns its content hash."""
        wanted = self._published[str((body.get("metadata") or {}).get("name"))]
        content = str(wanted["metadata"]["annotations"][HASH_ANNOTATION])
        if objects.secret_is_current(existing, wanted):
            return content
        self.kube.write_bundle_secret(wanted, exists=existing is not None)
        log.info("DTRTrust %s: restored %s (%s)", wanted["metadata"]["name"], content, content)
        self._event(
            body,
            "Normal",
            "Restored",
            f"Restored the last published bundle {content} to Secret "
            f"{self.config.namespace}/{wanted['metadata']['name']}.",
            now=now,
        )
        return content

    def _status_before(self, name: str, seen: Mapping[str, Any]) -> Mapping[str, Any]:
        """The trust's current status: what this operator last wrote while the watch
        has not delivered it yet, else what the watch shows."""
        written = self._written.get(name)
        if written is None:
            return seen
        if dict(seen) == written:
            del self._written[name]
            return seen
        return written

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
        self.statuses[name] = dict(status)
        if dict(status) == dict(before):
            return  # nothing changed: no write
        was = {c.get("type"): c for c in before.get("conditions") or []}
        now_ = {c.get("type"): c for c in status.get("conditions") or []}
        self.kube.patch_trust_status(name, status_patch(before, status))
        self._written[name] = dict(status)
        old, new = was.get(conditions.READY), now_.get(conditions.READY)
        ca_was, ca_now = was.get(conditions.CA_AVAILABLE) or {}, now_.get(conditions.CA_AVAILABLE)
        if (
            ca_now is not None
            and ca_now.get("status") == conditions.FALSE
            and ca_was.get("status") != conditions.FALSE
            and new is not None
            and new.get("status") == conditions.TRUE
        ):  # Ready stays True; the failing refresh still deserves a Warning
            self._event(
                body, "Warning", str(ca_now.get("reason")), str(ca_now.get("message")), now=now
            )
        if new and (
            old is None
            or (old.get("status"), old.get("reason")) != (new.get("status"), new.get("reason"))
        ):
            if new.get("status") != conditions.TRUE:
                self._event(
                    body, "Warning", str(new.get("reason")), str(new.get("message")), now=now
                )
            else:
                self._event(body, "Normal", "Ready", str(new.get("message")), now=now)

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
            names = await asyncio.to_thread(self.state.trust_names)
        except ApiUnavailable as exc:
            log.warning("resync: %s; will retry", exc)
            return
        for gone in (set(self._locks) | set(self.statuses)) - set(names):
            self.forget(gone)
        await self.reconcile_many(names)
        self.last_resync = time.monotonic()


def _referenced(body: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets and ConfigMaps a DTRTrust's spec refers to."""
    spec = body.get("spec") or {}
    ca = spec.get("ca") or {}
    names = {
        str(r.get("name")) for r in (ca.get("secretRefs") or []) + (ca.get("configMapRefs") or [])
    }
    client = ((spec.get("clientCertificate") or {}).get("secretRef") or {}).get("name")
    if client:
        names.add(str(client))
    return names
