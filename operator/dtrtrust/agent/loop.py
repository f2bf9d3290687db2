"""The node agent (``dtrtrust agent --node-name N --host-root DIR``).

One process per node (the DaemonSet). It keeps an in-memory view of the bundle
Secrets (``dtrtrust-<trust>`` in the operator namespace) and of its own Node's
labels, both by list + watch, and on every change, and every resync period to
repair drift, makes the node's files match:

* a trust whose ``nodeSelector`` (plus ``kubernetes.io/os=linux``) selects the node
  is synced through :func:`dtrtrust.node.writer.sync_trust`, which writes nothing when
  nothing differs;
* a trust the node owns files of (the writer's ownership record) but which no
  longer selects the node is removed with deletionPolicy ``Delete`` and kept with
  ``Retain`` (the same meaning as for a deleted trust);
* a Node the agent cannot see (deleted, not yet created) is unknown, not unlabelled:
  nothing is written or removed until it is back;
* after each sync the runtimes' config files are checked
  (:mod:`dtrtrust.node.effective`); a runtime that would ignore the files makes the
  trust ``NotEffective``, and a change of those files re-runs the checks at once;
* with the probe on (``dtrtrust.io/node-probe``), the registry is probed with exactly the
  files written (:mod:`dtrtrust.node.probe`), once per content hash and probe interval;
* once every trust selecting the node is synced, effective and verified, the opt-in
  startup taint ``dtrtrust.io/not-ready`` is removed from the Node;
* a trust that is gone (its DTRTrust no longer exists, or exists with another uid)
  is removed with deletionPolicy ``Delete`` and kept with ``Retain``. The policy is
  the one of the last Secret seen, remembered in
  ``<host root>/var/lib/dtrtrust/agent.json`` so a restart after the deletion still
  knows. A bundle Secret that is missing while its DTRTrust exists (or while the
  DTRTrusts cannot be read) removes nothing: the files stay and the report says why.
  The DTRTrusts are listed and watched too (read-only) for that answer.
  At start the agent reconciles every trust in the ownership record, so trusts
  deleted while it was down are cleaned up.

Nothing is removed before the first complete list of Secrets: an API outage at any
time keeps every file, and the agent retries with backoff.

The decisions are pure (:mod:`dtrtrust.agent.decisions`), the report is built by
:mod:`dtrtrust.agent.report`, the deletion policies are remembered by
:mod:`dtrtrust.agent.policies`; this module is the loop around them. The result per trust
goes into one ``DTRTrustNode`` object named after the node, written only when its
content changes. SIGTERM stops the loop after the current
write. Only pykube-ng talks to the API (:mod:`dtrtrust.kube.node`, imported lazily);
this module must not import the operator's modules (kopf, the kubernetes client,
cryptography), which keeps the agent under 40 MB resident.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dtrtrust import __version__
from dtrtrust.agent.config import Config
from dtrtrust.agent.decisions import (
    Action,
    Bundle,
    BundleError,
    decide,
    parse_bundle,
    sync_state,
    taint_blockers,
    trust_of,
)
from dtrtrust.agent.policies import load_policies, save_policies
from dtrtrust.agent.report import TrustReport, report_body, same_report
from dtrtrust.contract import (
    ERROR,
    MANAGED_BY_SELECTOR,
    NOT_EFFECTIVE,
    REMOVED,
    RETAINED,
    SYNCED,
    secret_name,
)
from dtrtrust.core.backoff import exponential, jittered
from dtrtrust.core.times import now_rfc3339
from dtrtrust.node import effective, probe, writer

if TYPE_CHECKING:
    from dtrtrust.kube.node import NodeApi

log = logging.getLogger("dtrtrust.agent")
_LIBC = ctypes.CDLL(None)

# How long a "Removed" entry of a trust whose Secret is gone stays in the report, so
# the operator and `kubectl get dtrtn` can see it happened without the list growing.
REMOVED_TTL_SECONDS = 600.0


def backoff(failures: int, base: float, cap: float) -> float:
    """The agent's retry delay: doubling from ``base`` (first failure) to ``cap``, +-20 %."""
    return jittered(exponential(failures - 1, base, cap))


@dataclass
class _View:
    """What the watchers saw; guarded by Agent.lock."""

    bundles: dict[str, Bundle | BundleError] = field(default_factory=dict)
    labels: dict[str, str] | None = None  # None until the Node was read
    # name -> uid of every DTRTrust; None until listed (then a missing Secret removes
    # nothing: only a trust known to be gone does).
    trusts: dict[str, str] | None = None
    node_uid: str | None = None
    kubelet_version: str | None = None  # status.nodeInfo: tells k3s / RKE2 apart
    taints: list[dict[str, Any]] | None = None  # spec.taints as last seen (None: no Node)
    secrets_listed: bool = False
    dirty: set[str] = field(default_factory=set)
    all_dirty: bool = True


# Trusts per writer call in a pass (one lock and one record write for all of them).
SYNC_BATCH = 100


@dataclass(frozen=True)
class _PendingSync:
    """A sync that needs the writer: what to write and what proves it later."""

    bundle: Bundle
    findings: list[effective.Finding]
    dirs: list[Any]  # layout.DesiredDir
    inputs: tuple[Any, ...]


class Agent:
    def __init__(self, config: Config, api: NodeApi, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.api = api
        self.clock = clock
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.view = _View()
        self.policies = load_policies(config.host_root)
        self.reports: dict[str, TrustReport] = {}
        # uid of the DTRTrust each trust's files were last written for (from the Secret's
        # owner reference); in memory only: after a restart, unknown means "keep".
        self.file_uids: dict[str, str] = {}
        self.removed_at: dict[str, float] = {}
        self.live_report: dict[str, Any] | None = None
        self.report_loaded = False
        self.report_failures = 0
        self.report_retry_at = 0.0
        self.ready_at: float | None = None
        # The runtimes' config files as of the last reconcile (path, mtime, size): the
        # effective-trust checks run again as soon as one of them changes.
        self.config_signature: tuple[tuple[str, int, int], ...] = ()
        # trust -> (content hash, probe result, when the next probe is due)
        self.probes: dict[str, tuple[str, Mapping[str, object], float]] = {}
        self.taint_kept_for: list[str] = []  # why the startup taint stays (logged on change)
        # trust -> (what its layout depends on, file paths, their lstat) of its last Synced
        # write: a resync that finds the same inputs and stats skips it (no lock, no reads).
        self.steady: dict[str, tuple[tuple[Any, ...], list[str], list[Any]]] = {}

    # --- watchers (threads) ----------------------------------------------------------

    def _mark(self, trusts: Iterable[str] = (), *, everything: bool = False) -> None:
        with self.lock:
            self.view.dirty.update(trusts)
            self.view.all_dirty = self.view.all_dirty or everything
        self.changed.set()

    def _set_secret(self, secret: Mapping[str, Any], deleted: bool = False) -> str | None:
        trust = trust_of(secret)
        if not trust:
            return None
        with self.lock:
            if deleted:
                self.view.bundles.pop(trust, None)
            else:
                try:
                    self.view.bundles[trust] = parse_bundle(secret)
                except BundleError as exc:
                    self.view.bundles[trust] = exc
        return trust

    def _loop_with_backoff(self, what: str, body: Callable[[], None]) -> None:
        from dtrtrust.kube.node import ApiUnavailable, Gone

        failures = 0
        while not self.stopping.is_set():
            try:
                body()
                failures = 0
            except Gone:
                log.info("%s: resourceVersion expired; listing again", what)
                failures = 0
            except ApiUnavailable as exc:
                failures += 1
                delay = backoff(
                    failures, self.config.backoff_seconds, self.config.max_backoff_seconds
                )
                log.warning("%s: %s; keeping every file, retrying in %.1fs", what, exc, delay)
                self.stopping.wait(delay)
            except Exception as exc:  # a watcher must never die silently
                failures += 1
                delay = backoff(
                    failures, self.config.backoff_seconds, self.config.max_backoff_seconds
                )
                log.error(
                    "%s: unexpected %s: %s; retrying in %.1fs", what, type(exc).__name__, exc, delay
                )
                self.stopping.wait(delay)

    def _secrets_once(self) -> None:
        """List, then watch until the watch ends or fails."""
        listing = self.api.list_secrets(MANAGED_BY_SELECTOR)
        fresh: dict[str, Bundle | BundleError] = {}
        for item in listing:  # page by page; only the parsed bundle is kept
            trust = trust_of(item)
            if not trust:
                continue
            try:
                fresh[trust] = parse_bundle(item)
            except BundleError as exc:
                fresh[trust] = exc
        rv = listing.resource_version
        with self.lock:
            before = self.view.bundles
            changed = {t for t in set(before) | set(fresh) if before.get(t) != fresh.get(t)}
            self.view.bundles = fresh
            first = not self.view.secrets_listed
            self.view.secrets_listed = True
        log.info("listed %d bundle Secret(s) in %s", len(fresh), self.config.namespace)
        self._mark(changed, everything=first)
        while not self.stopping.is_set():
            for event in self.api.watch_secrets(MANAGED_BY_SELECTOR, rv):
                if event.resource_version:
                    rv = event.resource_version
                if event.type == "BOOKMARK":
                    continue
                trust = self._set_secret(event.object, deleted=event.type == "DELETED")
                if trust:
                    log.debug("Secret event %s for trust %s", event.type, trust)
                    self._mark([trust])

    def _trusts_once(self) -> None:
        """List the DTRTrusts (only names and uids matter), then watch them."""
        listing = self.api.list_trusts()
        fresh = {name: uid for name, uid in map(_name_uid, listing) if name}
        rv = listing.resource_version
        with self.lock:
            before = self.view.trusts
            self.view.trusts = fresh
        old = before or {}
        changed = {t for t in set(old) | set(fresh) if old.get(t) != fresh.get(t)}
        log.info("listed %d DTRTrust(s)", len(fresh))
        self._mark(changed, everything=before is None)
        while not self.stopping.is_set():
            for event in self.api.watch_trusts(rv):
                if event.resource_version:
                    rv = event.resource_version
                if event.type == "BOOKMARK":
                    continue
                name, uid = _name_uid(event.object)
                if not name:
                    continue
                with self.lock:
                    trusts = self.view.trusts if self.view.trusts is not None else {}
                    if event.type == "DELETED":
                        trusts.pop(name, None)
                    else:
                        trusts[name] = uid
                    self.view.trusts = trusts
                log.debug("DTRTrust event %s for %s", event.type, name)
                self._mark([name])

    def _node_once(self) -> None:
        node, rv = self.api.list_node()
        self._set_node(node)
        while not self.stopping.is_set():
            for event in self.api.watch_node(rv):
                if event.resource_version:
                    rv = event.resource_version
                if event.type == "BOOKMARK":
                    continue
                self._set_node(None if event.type == "DELETED" else event.object)

    def _set_node(self, node: Mapping[str, Any] | None) -> None:
        meta = (node or {}).get("metadata") or {}
        labels: dict[str, str] | None = {
            str(k): str(v) for k, v in (meta.get("labels") or {}).items()
        }
        uid = str(meta["uid"]) if meta.get("uid") else None
        info = ((node or {}).get("status") or {}).get("nodeInfo") or {}
        kubelet = str(info.get("kubeletVersion") or "") or None
        taints = [dict(t) for t in ((node or {}).get("spec") or {}).get("taints") or []]
        if node is None:
            # Unknown is not empty: without the Node its labels are unknown, not absent;
            # "no labels" would deselect every trust and remove its files.
            log.warning(
                "Node %s does not exist (or was deleted); touching no files until it is back",
                self.config.node_name,
            )
            labels = None
        with self.lock:
            changed = labels != self.view.labels or uid != self.view.node_uid
            self.view.labels = labels
            self.view.node_uid = uid
            self.view.kubelet_version = kubelet
            taints_changed = self.view.taints != (taints if node is not None else None)
            self.view.taints = taints if node is not None else None
        if taints_changed:
            self.changed.set()  # the startup taint may be there to remove now
        if changed and labels is not None:
            log.info("Node %s labels: %d", self.config.node_name, len(labels))
            self._mark(everything=True)

    # --- reconcile (main thread) ----------------------------------------------------

    def reconcile(self, *, everything: bool) -> None:
        with self.lock:
            if not self.view.secrets_listed or self.view.labels is None:
                return  # no complete view yet: touch nothing
            bundles = dict(self.view.bundles)
            labels = dict(self.view.labels)
            existing = dict(self.view.trusts) if self.view.trusts is not None else None
            kubelet = self.view.kubelet_version
            dirty = set(self.view.dirty)
            everything = everything or self.view.all_dirty
            self.view.dirty.clear()
            self.view.all_dirty = False
        host_root = self.config.host_root
        try:
            owned = writer.owned_trusts(host_root)
        except writer.WriterError as exc:
            log.error("%s", exc)
            owned = set()
        self._remember_policies(bundles)
        files = effective.HostFiles(host_root)
        self.config_signature = files.signature()
        considered = set(bundles) | owned if everything else dirty
        actions = decide(
            bundles, labels, owned, self.policies, considered, existing, self.file_uids
        )
        # Syncs go to the writer in batches (one lock, one record write for many trusts);
        # any other action first flushes the batch, so the order of actions holds.
        batch: list[_PendingSync] = []
        for done, action in enumerate(actions):
            if len(batch) >= SYNC_BATCH or (batch and action.kind != "sync"):
                self._sync_batch(batch)
                batch = []
            if self.stopping.is_set():
                # SIGTERM: the write under way has finished; the rest waits for the next
                # start, which reconciles everything (a pass over many trusts must not
                # outlast the pod's termination grace period).
                log.info(
                    "stopping: %d of %d trust(s) left for the next start",
                    len(actions) - done,
                    len(actions),
                )
                return
            if action.kind == "sync" and action.bundle is not None:
                findings = effective.check(
                    files, action.bundle.targets, action.bundle.addresses, kubelet_version=kubelet
                )
                pending = self._sync_needed(action, findings)
                if pending is not None:
                    batch.append(pending)
            else:
                self._apply(action, bundles)
        if batch:
            self._sync_batch(batch)
        # Trusts with nothing to do (gone and not on the node, or not selecting it and
        # owning nothing) leave the report; a "Removed" entry stays for a while first.
        now = self.clock()
        for name in considered - {a.trust for a in actions}:
            removed = self.removed_at.get(name)
            if removed is not None and now - removed <= REMOVED_TTL_SECONDS:
                continue
            self.removed_at.pop(name, None)
            self.reports.pop(name, None)
        if everything:
            for name in set(self.reports) - considered:
                self.reports.pop(name, None)

    def _remember_policies(self, bundles: Mapping[str, Bundle | BundleError]) -> None:
        wanted = dict(self.policies)
        for name, bundle in bundles.items():
            if isinstance(bundle, Bundle):
                wanted[name] = bundle.policy
        if wanted != self.policies:
            try:
                save_policies(self.config.host_root, wanted)
            except (OSError, writer.WriterError) as exc:
                log.error(
                    "cannot record deletion policies under %s: %s", self.config.host_root, exc
                )
                return
            self.policies = wanted

    def _forget_policy(self, trust: str) -> None:
        if trust in self.policies:
            wanted = {k: v for k, v in self.policies.items() if k != trust}
            try:
                save_policies(self.config.host_root, wanted)
            except (OSError, writer.WriterError) as exc:
                log.error("cannot record deletion policies: %s", exc)
                return
            self.policies = wanted

    def _sync_needed(
        self, action: Action, findings: list[effective.Finding]
    ) -> _PendingSync | None:
        """The write a sync action needs, or None: unchanged since its files were proven
        (no lock, no file read), or its layout cannot be built (reported here)."""
        assert action.bundle is not None
        bundle, trust = action.bundle, action.trust
        known = self.steady.get(trust)
        report_now = self.reports.get(trust)
        # The content hash covers the data only: addresses and targets change the
        # directories without changing it; the effective-trust findings and the probe
        # setting change the report.
        inputs = (
            bundle.content_hash,
            bundle.addresses,
            bundle.targets,
            tuple(findings),
            bundle.probe_interval,
        )
        if (
            known is not None
            and known[0] == inputs
            and report_now is not None
            and report_now.state == SYNCED
            and not self._probe_due(bundle)
            and _stats(self.config.host_root, known[1]) == known[2]
        ):
            self._slim(bundle)
            return None
        self.steady.pop(trust, None)
        if bundle.is_slim:
            full = self._read_again(bundle)
            if full is None:
                return None
            if full != bundle:  # a newer Secret than the one proven: decide again for it
                self._mark([trust])
                return None
            bundle = full
        try:
            dirs = bundle.dirs()
        except ValueError as exc:
            self.reports[trust] = TrustReport(trust, bundle.content_hash, ERROR, str(exc))
            log.error("trust %s: %s", trust, exc)
            return None
        return _PendingSync(bundle, findings, dirs, inputs)

    def _sync_batch(self, batch: list[_PendingSync]) -> None:
        """Write the trusts of ``batch`` with one writer call, then report each."""
        host_root = self.config.host_root
        results = writer.sync_trusts(host_root, {p.bundle.trust: p.dirs for p in batch})
        for pending in batch:
            bundle, trust = pending.bundle, pending.bundle.trust
            result = results[trust]
            report = sync_state(bundle, result, pending.findings)
            written = [d.path for d in result.dirs if d.action == "written"]
            if written or result.removed:
                log.info(
                    "trust %s (%s): wrote %s%s",
                    trust,
                    bundle.content_hash,
                    ", ".join(written) or "nothing",
                    f"; removed {', '.join(result.removed)}" if result.removed else "",
                )
            else:
                log.debug("trust %s: %d directories unchanged", trust, len(result.dirs))
            report = self._with_probe(bundle, report)
            if report.state != SYNCED and self.reports.get(trust) != report:
                log.warning("trust %s: %s: %s", trust, report.state, report.message)
            self.reports[trust] = report
            self.removed_at.pop(trust, None)
            if bundle.owner_uid:
                self.file_uids[trust] = bundle.owner_uid
            if report.state == SYNCED:
                paths = [f"{d.root}/{d.address}/{f.name}" for d in pending.dirs for f in d.files]
                self.steady[trust] = (pending.inputs, paths, _stats(host_root, paths))
                self._slim(bundle)

    def _slim(self, bundle: Bundle) -> None:
        """The files of ``bundle`` are in place: keep it without its bytes, unless a
        newer Secret replaced it in the view meanwhile."""
        with self.lock:
            if self.view.bundles.get(bundle.trust) is bundle and not bundle.is_slim:
                self.view.bundles[bundle.trust] = bundle.slim()

    def _read_again(self, bundle: Bundle) -> Bundle | None:
        """The bytes of a slim bundle whose files need writing again (drift, or a
        runtime config change): GET its Secret. None when that fails; the files stay as
        they are and the report says why."""
        from dtrtrust.kube.node import ApiUnavailable

        trust = bundle.trust
        try:
            secret = self.api.get_secret(secret_name(trust))
            if secret is None:
                raise BundleError(f"Secret {secret_name(trust)} is gone")
            full = parse_bundle(secret)
        except (ApiUnavailable, BundleError) as exc:
            message = f"cannot read the bundle again to repair the files: {exc}"
            self._note(trust, ERROR, message, logging.WARNING, f"{message}; will retry")
            return None
        with self.lock:  # the view keeps the newest; a watch event may have come first
            if self.view.bundles.get(trust) is bundle:
                self.view.bundles[trust] = full
        return full

    def _apply(self, action: Action, bundles: Mapping[str, object]) -> None:
        """A remove, retain, missing or error action (syncs: :meth:`_sync_needed`)."""
        host_root = self.config.host_root
        trust = action.trust
        if action.kind == "remove":
            self.steady.pop(trust, None)
            previous = self.reports.get(trust)
            content_hash = previous.content_hash if previous else ""
            result = writer.remove_trust(host_root, trust)
            if result.error or not result.ok:
                message = result.error or "; ".join(d.message for d in result.dirs if d.message)
                self.reports[trust] = TrustReport(trust, content_hash, ERROR, message)
                log.error("trust %s: could not remove its files: %s", trust, message)
                return
            log.info(
                "trust %s: %s; removed %s",
                trust,
                action.reason,
                ", ".join(result.removed) or "nothing (already gone)",
            )
            self.reports[trust] = TrustReport(trust, content_hash, REMOVED, action.reason)
            self.removed_at[trust] = self.clock()
            self.file_uids.pop(trust, None)
            if trust not in bundles:
                self._forget_policy(trust)
        elif action.kind == "retain":
            self._note(trust, RETAINED, action.reason, logging.INFO, action.reason)
        elif action.kind == "missing":
            self._note(trust, ERROR, action.reason, logging.WARNING, action.reason)
        else:
            message = f"{action.reason}; its files are left as they are"
            self._note(trust, ERROR, action.reason, logging.ERROR, message)

    def _note(self, trust: str, state: str, reason: str, level: int, message: str) -> None:
        """Report ``state`` for a trust whose files stay as they are (logged on change)."""
        previous = self.reports.get(trust)
        report = TrustReport(trust, previous.content_hash if previous else "", state, reason)
        if previous != report:
            log.log(level, "trust %s: %s", trust, message)
        self.reports[trust] = report

    def _with_probe(self, bundle: Bundle, report: TrustReport) -> TrustReport:
        """``report`` with the per-node probe's result: run with exactly the files just
        written, at most once per content hash and per the trust's probe interval (with
        jitter, so the nodes of a cluster do not probe in step), and only when the files
        are in place and the probe is on."""
        if bundle.probe_interval is None or report.state not in (SYNCED, NOT_EFFECTIVE):
            self.probes.pop(bundle.trust, None)
            return report
        now = self.clock()
        previous = self.probes.get(bundle.trust)
        if previous is not None and previous[0] == bundle.content_hash and now < previous[2]:
            return replace(report, probe=previous[1])
        first = bundle.dirs()[0]
        directory = self.config.host_root / str(first.path)
        result = probe.probe(
            first.address,
            directory,
            with_client=bundle.has_client,
            timeout=self.config.probe_timeout_seconds,
        )
        if result.ok:
            log.info("trust %s: probe of %s from this node passed", bundle.trust, first.address)
        else:
            log.warning("trust %s: probe: %s: %s", bundle.trust, result.reason, result.message)
        found = result.to_dict(now_rfc3339())
        self.probes[bundle.trust] = (
            bundle.content_hash,
            found,
            now + jittered(bundle.probe_interval),
        )
        return replace(report, probe=found)

    def _probe_due(self, bundle: Bundle) -> bool:
        """Whether :meth:`_with_probe` would run the probe for ``bundle`` now."""
        if bundle.probe_interval is None:
            return False
        previous = self.probes.get(bundle.trust)
        return previous is None or previous[0] != bundle.content_hash or self.clock() >= previous[2]

    def verified(self) -> dict[str, bool]:
        """Per trust with the probe on: whether its last probe passed."""
        return {trust: "reason" not in found for trust, (_hash, found, _at) in self.probes.items()}

    def untaint(self) -> bool:
        """Remove the startup taint from this Node once every trust that selects it is
        synced and effective here (see :func:`taint_blockers`). True when it was removed.
        The patch is guarded by a ``test`` of the taints last seen, so a concurrent
        change of the node's taints is never lost: on a conflict the Node is read again
        and the next loop decides again."""
        key = self.config.startup_taint
        from dtrtrust.kube.node import ApiUnavailable, Conflict

        with self.lock:
            taints = None if self.view.taints is None else list(self.view.taints)
            labels = None if self.view.labels is None else dict(self.view.labels)
            bundles = dict(self.view.bundles)
            listed = self.view.secrets_listed
        if not key or taints is None or labels is None or not listed:
            return False
        if not any(t.get("key") == key for t in taints):
            return False
        blockers = taint_blockers(bundles, labels, self.reports, verified=self.verified())
        if blockers:
            if blockers != self.taint_kept_for:
                log.info("keeping the startup taint %s: %s", key, "; ".join(blockers))
            self.taint_kept_for = blockers
            return False
        try:
            self.api.remove_taint(taints, key)
        except Conflict as exc:
            log.info("%s; reading the Node again", exc)
            try:
                node, _rv = self.api.list_node()
                self._set_node(node)
            except ApiUnavailable as again:
                log.warning("%s", again)
            return False
        except ApiUnavailable as exc:
            log.warning("%s; will retry", exc)
            return False
        log.info("every trust selecting this node is in place: removed the startup taint %s", key)
        with self.lock:
            if self.view.taints == taints:
                self.view.taints = [t for t in taints if t.get("key") != key]
        self.taint_kept_for = []
        return True

    def runtime_configs_changed(self) -> bool:
        """Whether a runtime's config file (daemon.json, config.toml, registries.conf)
        changed since the last reconcile: the effective-trust checks must run again."""
        changed = effective.HostFiles(self.config.host_root).signature() != self.config_signature
        if changed:
            log.info("a runtime config file changed; checking every trust again")
        return changed

    # --- the report -------------------------------------------------------------------

    def publish_report(self) -> bool:
        """Write the DTRTrustNode when its content differs. False on an API error."""
        from dtrtrust.kube.node import ApiUnavailable, Conflict

        trusts = list(self.reports.values())
        try:
            if not self.report_loaded:
                self.live_report = self.api.get_report()
                self.report_loaded = True
            if same_report(self.live_report, trusts):
                return True
            with self.lock:
                uid = self.view.node_uid
            body = report_body(
                node_name=self.config.node_name,
                node_uid=uid,
                namespace=self.config.namespace,
                trusts=trusts,
                last_change=now_rfc3339(),
                resource_version=_rv(self.live_report),
            )
            if self.live_report is None:
                self.live_report = self.api.create_report(body)
            else:
                self.live_report = self.api.replace_report(body)
            log.info(
                "reported %s",
                ", ".join(f"{t.name}={t.state}" for t in sorted(trusts, key=lambda t: t.name))
                or "no trusts",
            )
            return True
        except Conflict:
            self.report_loaded = False  # somebody else wrote it: read again, retry soon
            return False
        except ApiUnavailable as exc:
            log.warning("could not write the DTRTrustNode report: %s; will retry", exc)
            return False

    # --- main loop ----------------------------------------------------------------------

    def start_watchers(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(
                target=self._loop_with_backoff,
                args=("Secrets", self._secrets_once),
                name="secrets",
                daemon=True,
            ),
            threading.Thread(
                target=self._loop_with_backoff,
                args=("DTRTrusts", self._trusts_once),
                name="trusts",
                daemon=True,
            ),
            threading.Thread(
                target=self._loop_with_backoff,
                args=(f"Node {self.config.node_name}", self._node_once),
                name="node",
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        return threads

    def run(self, started: float) -> None:
        self.start_watchers()
        next_resync = self.clock() + self.config.resync_seconds
        while not self.stopping.is_set():
            now = self.clock()
            wake = next_resync
            if self.report_retry_at:
                wake = min(wake, self.report_retry_at)
            wake = min(wake, now + self.config.config_poll_seconds)
            self.changed.wait(timeout=max(0.0, wake - now))
            if self.stopping.is_set():
                break
            self.changed.clear()
            resync = self.clock() >= next_resync or self.runtime_configs_changed()
            if resync:
                next_resync = self.clock() + self.config.resync_seconds
                self.report_loaded = False  # read it again: someone may have deleted it
            self.reconcile(everything=resync)
            if resync or self.ready_at is None:
                _trim_heap()
            with self.lock:
                ready = self.view.secrets_listed and self.view.labels is not None
            if not ready:
                continue
            if self.ready_at is None:
                self.ready_at = self.clock()
                log.info("first sync done %.2fs after start", self.ready_at - started)
            self.untaint()
            if self.report_retry_at and self.clock() < self.report_retry_at and not resync:
                continue
            if self.publish_report():
                self.report_failures = 0
                self.report_retry_at = 0.0
            else:
                self.report_failures += 1
                self.report_retry_at = self.clock() + backoff(
                    self.report_failures,
                    self.config.backoff_seconds,
                    self.config.max_backoff_seconds,
                )
        log.info("stopped")

    def stop(self) -> None:
        self.stopping.set()
        self.changed.set()


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``) after a
    full pass: the pages of a list and a first sync of 1,000 trusts stay resident
    otherwise, though nothing uses them. A no-op where the C library lacks it."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _name_uid(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or ""), str(meta.get("uid") or "")


def _stats(host_root: str | os.PathLike[str], paths: Iterable[str]) -> list[Any]:
    """(inode, size, mtime, mode) of each file, without following symlinks; None when
    missing. The writer replaces files by rename, so any write changes the inode."""
    found: list[Any] = []
    for path in paths:
        try:
            st = os.lstat(os.path.join(host_root, path))
        except OSError:
            found.append(None)
            continue
        found.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode))
    return found


def _rv(obj: Mapping[str, Any] | None) -> str | None:
    if not obj:
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def run(args: argparse.Namespace) -> int:
    """``dtrtrust agent``: run until SIGTERM/SIGINT; the current write finishes first."""
    started = time.monotonic()
    config = Config.from_args(args)
    root_logger = logging.getLogger()
    if root_logger.level > logging.INFO:
        root_logger.setLevel(logging.INFO)  # a daemon says what it wrote, skipped, removed
    if not config.host_root.is_dir():
        raise SystemExit(f"dtrtrust agent: host root {config.host_root} is not a directory")
    from dtrtrust.kube.node import ApiUnavailable, NodeApi

    try:
        api = NodeApi(config.namespace, config.node_name)
    except ApiUnavailable as exc:
        raise SystemExit(f"dtrtrust agent: {exc}") from None
    agent = Agent(config, api)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping after the current write", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "dtrtrust agent %s: %s",
        __version__,
        {k: str(v) for k, v in config.__dict__.items()},
    )
    with contextlib.suppress(KeyboardInterrupt):
        agent.run(started)
    return 0
