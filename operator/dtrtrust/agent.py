"""The node agent (``dtrtrust agent --node-name N --host-root DIR``).

One process per node (the DaemonSet). It keeps an in-memory view of the bundle
Secrets (``dtrtrust-<trust>`` in the operator namespace) and of its own Node's
labels, both by list + watch, and on every change, and every resync period to
repair drift, makes the node's files match:

* a trust whose ``nodeSelector`` (plus ``kubernetes.io/os=linux``) selects the node
  is synced through :func:`dtrtrust.node.writer.sync_trust`, which writes nothing when
  nothing differs;
* a trust the node owns files of (the writer's ownership record) but which no
  longer selects the node is removed;
* a trust whose Secret is gone is removed with deletionPolicy ``Delete`` and kept
  with ``Retain``. The policy is the one of the last Secret seen, remembered in
  ``<host root>/var/lib/dtrtrust/agent.json`` so a restart after the deletion still knows.
  At start the agent reconciles every trust in the ownership record, so trusts
  deleted while it was down are cleaned up.

Nothing is removed before the first complete list of Secrets: an API outage at any
time keeps every file, and the agent retries with backoff.

The result per trust goes into one ``DTRTrustNode`` object named after the node,
written only when its content changes. SIGTERM stops the loop after the current
write. Only pykube-ng talks to the API (:mod:`dtrtrust.kube.node`, imported lazily);
this module must not import the operator's modules (kopf, the kubernetes client,
cryptography), which keeps the agent under 40 MB resident.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtrtrust import __version__, layout
from dtrtrust.node import fs, writer

if TYPE_CHECKING:
    from dtrtrust.kube.node import NodeApi

log = logging.getLogger("dtrtrust.agent")

# The bundle Secret's contract (written by dtrtrust.objects on the operator side; a
# unit test checks both sides agree). Repeated here so the agent never imports the
# operator's modules and their dependencies.
MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=dtrtrust"
TRUST_LABEL = "dtrtrust.io/trust"
HASH_ANNOTATION = "dtrtrust.io/content-hash"
ADDRESSES_ANNOTATION = "dtrtrust.io/registries"
TARGETS_ANNOTATION = "dtrtrust.io/targets"
SELECTOR_ANNOTATION = "dtrtrust.io/node-selector"
POLICY_ANNOTATION = "dtrtrust.io/deletion-policy"
CA_KEY, CLIENT_CERT_KEY, CLIENT_KEY_KEY = "ca.crt", "client.cert", "client.key"

DEFAULT_SELECTOR = {"kubernetes.io/os": "linux"}
POLICIES = ("Delete", "Retain")

# Per-trust states in the DTRTrustNode report (the CRD enumerates them).
SYNCED, CONFLICT, NOT_EFFECTIVE, ERROR, REMOVED, RETAINED = (
    "Synced",
    "Conflict",
    "NotEffective",
    "Error",
    "Removed",
    "Retained",
)
# How long a "Removed" entry of a trust whose Secret is gone stays in the report, so
# the operator and `kubectl get dtrtn` can see it happened without the list growing.
REMOVED_TTL_SECONDS = 600.0

AGENT_STATE_FILE = "agent.json"  # under writer.STATE_DIR
CONTAINERD_CONFIG = "etc/containerd/config.toml"
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"

# containerd's CRI registry table per config version: v1 (containerd 1.x short
# names), v2 (containerd 1.x), v3 (containerd 2.x, images split out of CRI).
_CRI_REGISTRY_TABLES = {
    1: ("plugins", "cri", "registry"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}


@dataclass(frozen=True)
class Config:
    """Agent settings, from flags and the environment; logged once at start."""

    node_name: str
    host_root: Path
    # Namespace of the bundle Secrets and of the DTRTrustNode reports.
    namespace: str = "dtrtrust-system"
    # Every trust is reconciled this often even without a change (repairs drift).
    resync_seconds: float = 60.0
    # First retry delay after an API error; doubles up to max_backoff_seconds.
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        node = args.node_name or env.get("NODE_NAME") or ""
        if not node:
            raise SystemExit("dtrtrust agent: give --node-name or set NODE_NAME")
        return cls(
            node_name=node,
            host_root=Path(args.host_root),
            namespace=args.namespace,
            resync_seconds=float(env.get("DTRTRUST_AGENT_RESYNC_SECONDS", cls.resync_seconds)),
            backoff_seconds=float(env.get("DTRTRUST_AGENT_BACKOFF_SECONDS", cls.backoff_seconds)),
            max_backoff_seconds=float(
                env.get("DTRTRUST_AGENT_MAX_BACKOFF_SECONDS", cls.max_backoff_seconds)
            ),
        )


# --------------------------------------------------------------------------- pure core


class BundleError(ValueError):
    """A bundle Secret the agent cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class Bundle:
    """What a bundle Secret asks of the nodes."""

    trust: str
    content_hash: str
    addresses: tuple[str, ...]
    targets: tuple[str, ...]
    selector: Mapping[str, str]
    policy: str
    ca: bytes
    client: tuple[bytes, bytes] | None

    def dirs(self) -> list[layout.DesiredDir]:
        return layout.desired_dirs(self.addresses, self.targets, self.ca, self.client)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def trust_of(secret: Mapping[str, Any]) -> str | None:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    name = labels.get(TRUST_LABEL)
    return str(name) if name else None


def parse_bundle(secret: Mapping[str, Any]) -> Bundle:
    """A Bundle from the Secret's labels, annotations and data. Raises BundleError
    (never with key material in the message)."""
    meta = secret.get("metadata") or {}
    where = f"Secret {meta.get('name')}"
    trust = trust_of(secret)
    if not trust:
        raise BundleError(f"{where} has no {TRUST_LABEL} label")
    notes = meta.get("annotations") or {}
    content_hash = str(notes.get(HASH_ANNOTATION) or "")
    if not content_hash:
        raise BundleError(f"{where} has no {HASH_ANNOTATION} annotation")
    addresses = _split(notes.get(ADDRESSES_ANNOTATION))
    if not addresses:
        raise BundleError(f"{where} names no registry in {ADDRESSES_ANNOTATION}")
    for address in addresses:
        try:
            layout.validate_address(address)
        except ValueError as exc:
            raise BundleError(f"{where}: {exc}") from None
    targets = _split(notes.get(TARGETS_ANNOTATION)) or ("docker",)
    unknown = [t for t in targets if t not in layout.TARGETS]
    if unknown:
        raise BundleError(
            f"{where}: unknown target {unknown[0]!r} in {TARGETS_ANNOTATION}; "
            "this agent may be older than the operator"
        )
    try:
        selector = json.loads(notes.get(SELECTOR_ANNOTATION) or "{}")
    except ValueError:
        raise BundleError(f"{where}: {SELECTOR_ANNOTATION} is not JSON") from None
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise BundleError(f"{where}: {SELECTOR_ANNOTATION} must map label names to values")
    policy = str(notes.get(POLICY_ANNOTATION) or "Delete")
    if policy not in POLICIES:
        raise BundleError(f"{where}: {POLICY_ANNOTATION} must be Delete or Retain")
    data = secret.get("data") or {}
    try:
        decoded = {k: base64.b64decode(v, validate=True) for k, v in data.items()}
    except (binascii.Error, TypeError):
        raise BundleError(f"{where}: its data is not valid base64") from None
    ca = decoded.get(CA_KEY, b"")
    if not ca:
        raise BundleError(f"{where} has no {CA_KEY}")
    cert, key = decoded.get(CLIENT_CERT_KEY), decoded.get(CLIENT_KEY_KEY)
    if bool(cert) != bool(key):
        raise BundleError(f"{where} holds only one of {CLIENT_CERT_KEY} and {CLIENT_KEY_KEY}")
    return Bundle(
        trust=trust,
        content_hash=content_hash,
        addresses=addresses,
        targets=targets,
        selector=dict(selector),
        policy=policy,
        ca=ca,
        client=(cert, key) if cert and key else None,
    )


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a trust's nodeSelector (plus kubernetes.io/os=linux) selects a node with
    ``labels``. An empty value means "the label exists", as the operator counts
    desired nodes (``Kube.node_names``), so both sides agree."""
    wanted = {**DEFAULT_SELECTOR, **selector}
    for key, value in wanted.items():
        if key not in labels:
            return False
        if value and labels[key] != value:
            return False
    return True


def _cri_registry(doc: Mapping[str, Any], version: int) -> Mapping[str, Any]:
    table: Any = doc
    for part in _CRI_REGISTRY_TABLES[version]:
        table = table.get(part) if isinstance(table, Mapping) else None
        if table is None:
            return {}
    return table if isinstance(table, Mapping) else {}


def containerd_problem(config_text: str | None) -> str | None:
    """Why containerd's CRI will not read ``/etc/containerd/certs.d`` with this
    config.toml, or None when it will (or when there is no config.toml to judge:
    the node may not run containerd). The message says what to add."""
    if config_text is None:
        return None
    try:
        doc = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        return (
            f"/etc/containerd/config.toml cannot be parsed ({exc}); fix it so containerd reads "
            f"registry config_path = {CONTAINERD_CERTS_D!r}"
        )
    version = doc.get("version", 1)
    if version not in _CRI_REGISTRY_TABLES:
        return None  # a config format this agent does not know: do not guess
    registry = _cri_registry(doc, version)
    raw = registry.get("config_path")
    paths = [p.rstrip("/") for p in str(raw or "").split(":") if p]
    if CONTAINERD_CERTS_D in paths:
        return None
    if raw is None and doc.get("imports"):
        return None  # config_path may be set in an imported file we cannot see
    table = f'[plugins."{_CRI_REGISTRY_TABLES[version][1]}".registry]'
    if version == 1:
        table = "[plugins.cri.registry]"
    now = f"config_path is {raw!r}" if raw else "no config_path is set"
    return (
        f"containerd will not read {CONTAINERD_CERTS_D}: in /etc/containerd/config.toml "
        f"(version {version}) {now}; add {CONTAINERD_CERTS_D} to config_path under {table} "
        "and restart containerd"
    )


@dataclass(frozen=True)
class Action:
    trust: str
    kind: str  # "sync" | "remove" | "retain" | "error"
    reason: str = ""
    bundle: Bundle | None = None


def decide(
    bundles: Mapping[str, Bundle | BundleError],
    labels: Mapping[str, str],
    owned: Iterable[str],
    policies: Mapping[str, str],
    trusts: Iterable[str] | None = None,
) -> list[Action]:
    """What to do for each trust (all of ``bundles`` and ``owned``, or only ``trusts``).

    - Secret present and the node selected: sync.
    - Secret present, node not selected, files owned: remove ("not selected").
    - Secret gone, files owned: remove with policy Delete (the default when the
      policy was never seen), keep with Retain.
    - Secret unusable: report the error and touch nothing."""
    owned_set = set(owned)
    names = set(bundles) | owned_set if trusts is None else set(trusts)
    actions: list[Action] = []
    for trust in sorted(names):
        bundle = bundles.get(trust)
        if isinstance(bundle, BundleError):
            actions.append(Action(trust, "error", str(bundle)))
        elif bundle is not None:
            if selects(bundle.selector, labels):
                actions.append(Action(trust, "sync", bundle=bundle))
            elif trust in owned_set:
                actions.append(Action(trust, "remove", "the node is no longer selected"))
        elif trust in owned_set:
            if policies.get(trust, "Delete") == "Retain":
                actions.append(
                    Action(trust, "retain", "the trust is gone; deletionPolicy Retain keeps files")
                )
            else:
                actions.append(Action(trust, "remove", "the trust is gone (deletionPolicy Delete)"))
    return actions


@dataclass(frozen=True)
class TrustReport:
    name: str
    content_hash: str
    state: str
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        """Empty fields are left out (as the API server would drop them)."""
        out = {"name": self.name, "state": self.state}
        if self.content_hash:
            out["contentHash"] = self.content_hash
        if self.message:
            out["message"] = self.message[:1024]
        return out


def sync_state(bundle: Bundle, result: writer.SyncResult, containerd: str | None) -> TrustReport:
    """The report for a synced trust from the writer's result; ``containerd`` is
    :func:`containerd_problem` for this node."""
    if result.error:
        return TrustReport(bundle.trust, bundle.content_hash, ERROR, result.error)
    conflicts = [d for d in result.dirs if d.action == "conflict"]
    if conflicts:
        first = conflicts[0]
        return TrustReport(
            bundle.trust, bundle.content_hash, CONFLICT, f"{first.path}: {first.message}"
        )
    errors = [d for d in result.dirs if d.action == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return TrustReport(
            bundle.trust, bundle.content_hash, ERROR, f"{first.path}: {first.message}{more}"
        )
    if "containerd" in bundle.targets and containerd:
        return TrustReport(bundle.trust, bundle.content_hash, NOT_EFFECTIVE, containerd)
    return TrustReport(bundle.trust, bundle.content_hash, SYNCED)


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
        "labels": {"app.kubernetes.io/managed-by": "dtrtrust"},
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
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrustNode",
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


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with +-20 % jitter so agents of many nodes spread out."""
    delay = min(base * (2 ** max(failures - 1, 0)), cap)
    return float(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto


# ---------------------------------------------------------------------- agent state


def load_policies(host_root: Path) -> dict[str, str]:
    """Remembered deletion policies (trust -> Delete|Retain); {} when none."""
    rel = f"{writer.STATE_DIR}/{AGENT_STATE_FILE}"
    try:
        data = fs.read_file(host_root, rel)
        if data is None:
            return {}
        raw = json.loads(data)
    except (OSError, ValueError, writer.WriterError) as exc:
        log.warning("cannot read %s (%s); assuming deletionPolicy Delete", rel, exc)
        return {}
    policies = raw.get("policies") if isinstance(raw, dict) else None
    if not isinstance(policies, dict):
        return {}
    return {str(k): str(v) for k, v in policies.items() if v in POLICIES}


def save_policies(host_root: Path, policies: Mapping[str, str]) -> None:
    """Atomically, next to the writer's ownership record, never through a link."""
    data = json.dumps({"version": 1, "policies": dict(sorted(policies.items()))}).encode()
    fs.ensure_dir(host_root, writer.STATE_DIR, writer.STATE_MODE)
    fs.write_file(host_root, f"{writer.STATE_DIR}/{AGENT_STATE_FILE}", data, 0o600)


def read_containerd_config(host_root: Path) -> str | None:
    path = host_root / CONTAINERD_CONFIG
    try:
        if not path.is_file():
            return None  # absent (or an empty hostPath placeholder directory)
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# ------------------------------------------------------------------------- the agent


@dataclass
class _View:
    """What the watchers saw; guarded by Agent.lock."""

    bundles: dict[str, Bundle | BundleError] = field(default_factory=dict)
    labels: dict[str, str] | None = None  # None until the Node was read
    node_uid: str | None = None
    secrets_listed: bool = False
    dirty: set[str] = field(default_factory=set)
    all_dirty: bool = True


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
        self.removed_at: dict[str, float] = {}
        self.live_report: dict[str, Any] | None = None
        self.report_loaded = False
        self.report_failures = 0
        self.report_retry_at = 0.0
        self.ready_at: float | None = None

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
        items, rv = self.api.list_secrets(MANAGED_BY_SELECTOR)
        fresh: dict[str, Bundle | BundleError] = {}
        for item in items:
            trust = trust_of(item)
            if not trust:
                continue
            try:
                fresh[trust] = parse_bundle(item)
            except BundleError as exc:
                fresh[trust] = exc
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
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        uid = str(meta["uid"]) if meta.get("uid") else None
        if node is None:
            log.warning("Node %s does not exist; treating it as unlabelled", self.config.node_name)
        with self.lock:
            changed = labels != self.view.labels or uid != self.view.node_uid
            self.view.labels = labels
            self.view.node_uid = uid
        if changed:
            log.info("Node %s labels: %d", self.config.node_name, len(labels))
            self._mark(everything=True)

    # --- reconcile (main thread) ----------------------------------------------------

    def reconcile(self, *, everything: bool) -> None:
        with self.lock:
            if not self.view.secrets_listed or self.view.labels is None:
                return  # no complete view yet: touch nothing
            bundles = dict(self.view.bundles)
            labels = dict(self.view.labels)
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
        containerd = read_containerd_config(host_root)
        problem = containerd_problem(containerd)
        considered = set(bundles) | owned if everything else dirty
        actions = decide(bundles, labels, owned, self.policies, considered)
        for action in actions:
            self._apply(action, problem, bundles)
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

    def _apply(self, action: Action, containerd: str | None, bundles: Mapping[str, object]) -> None:
        host_root = self.config.host_root
        trust = action.trust
        if action.kind == "sync":
            assert action.bundle is not None
            try:
                dirs = action.bundle.dirs()
            except ValueError as exc:
                self.reports[trust] = TrustReport(
                    trust, action.bundle.content_hash, ERROR, str(exc)
                )
                log.error("trust %s: %s", trust, exc)
                return
            result = writer.sync_trust(host_root, trust, dirs)
            report = sync_state(action.bundle, result, containerd)
            written = [d.path for d in result.dirs if d.action == "written"]
            if written or result.removed:
                log.info(
                    "trust %s (%s): wrote %s%s",
                    trust,
                    action.bundle.content_hash,
                    ", ".join(written) or "nothing",
                    f"; removed {', '.join(result.removed)}" if result.removed else "",
                )
            else:
                log.debug("trust %s: %d directories unchanged", trust, len(result.dirs))
            if report.state != SYNCED and self.reports.get(trust) != report:
                log.warning("trust %s: %s: %s", trust, report.state, report.message)
            self.reports[trust] = report
            self.removed_at.pop(trust, None)
        elif action.kind == "remove":
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
            if trust not in bundles:
                self._forget_policy(trust)
        elif action.kind == "retain":
            previous = self.reports.get(trust)
            report = TrustReport(
                trust, previous.content_hash if previous else "", RETAINED, action.reason
            )
            if self.reports.get(trust) != report:
                log.info("trust %s: %s", trust, action.reason)
            self.reports[trust] = report
        else:
            previous = self.reports.get(trust)
            report = TrustReport(
                trust, previous.content_hash if previous else "", ERROR, action.reason
            )
            if self.reports.get(trust) != report:
                log.error("trust %s: %s; its files are left as they are", trust, action.reason)
            self.reports[trust] = report

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
                last_change=_now_rfc3339(),
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
            self.changed.wait(timeout=max(0.0, wake - now))
            if self.stopping.is_set():
                break
            self.changed.clear()
            resync = self.clock() >= next_resync
            if resync:
                next_resync = self.clock() + self.config.resync_seconds
            self.reconcile(everything=resync)
            with self.lock:
                ready = self.view.secrets_listed and self.view.labels is not None
            if not ready:
                continue
            if self.ready_at is None:
                self.ready_at = self.clock()
                log.info("first sync done %.2fs after start", self.ready_at - started)
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


def _rv(obj: Mapping[str, Any] | None) -> str | None:
    if not obj:
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
