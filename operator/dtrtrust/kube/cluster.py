"""The one module that talks to the Kubernetes API for the operator.

Thin and synchronous (the ``kubernetes`` client); the operator calls it through
``asyncio.to_thread`` so the event loop never blocks. Everything here is I/O: what
to write is decided in :mod:`dtrtrust.core` and :mod:`dtrtrust.operator.objects`.
API errors are never swallowed: a 404 that means "absent" becomes None, anything
else raises :class:`ApiUnavailable` (the caller turns it into a retry).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import functools
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from dtrtrust.contract import (
    API_GROUP,
    API_VERSION,
    EVENTS_NAMESPACE,
    KIND,
    NODE_REPORT_PLURAL,
    PLURAL,
    VERSION,
)
from dtrtrust.core.times import rfc3339

log = logging.getLogger("dtrtrust.kube")

# node -> trust -> (content hash, state, message), from the agents' DTRTrustNode reports.
NodeReports = dict[str, dict[str, tuple[str, str, str]]]
# node -> trust -> the report's probe entry (reachable, tlsVerified, ..., contentHash).
NodeProbes = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class ExistingSecret:
    """A bundle Secret as the API server has it."""

    data: Mapping[str, bytes]
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    owner_uids: tuple[str, ...]


class ApiUnavailable(Exception):
    """The API server refused or failed a call that should have worked (retry)."""


class ApiRejected(ApiUnavailable):
    """The API server rejected a call for good (a 4xx other than 404, 409 and 429):
    retrying the same request will not help; the message carries the server's text."""


# 4xx answers that a retry can fix: 404 (callers treat as absent), conflict, throttled.
RETRYABLE_4XX = frozenset({404, 408, 409, 429})

# (connect, read) seconds for every call: a half-open connection cannot hold a reconcile.
DEFAULT_TIMEOUT = (5.0, 30.0)


def _server_text(exc: ApiException) -> str:
    """The API server's own message (a Status object's ``message``), else its reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:1000]
    return str(exc.reason or "")


def _api_error(exc: ApiException, what: str) -> ApiUnavailable:
    status = int(exc.status or 0)
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return ApiRejected(
            f"{what}: API server rejected it ({status}): {_server_text(exc)}; "
            "fix the object or the operator's RBAC, retrying will not help"
        )
    return ApiUnavailable(f"{what}: API server answered {exc.status} {exc.reason}")


P = ParamSpec("P")
R = TypeVar("R")


def _transport_errors(method: Callable[P, R]) -> Callable[P, R]:
    """An unreachable API server (refused, reset, timed out) is ApiUnavailable too, so
    callers retry instead of dying on a urllib3 exception."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnavailable(
                f"{method.__name__}: API server unreachable ({type(exc).__name__})"
            ) from None

    return call


def load_client(connections: int = 10) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG), with
    a pool of ``connections`` (one per reconcile in flight; urllib3 would otherwise
    open and drop a connection per call beyond its pool)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = max(connections, 1)
    return client.ApiClient(configuration)


# Requests this process sent through Kube, per API method (read by /metrics and the
# scale benchmark: a resync with nothing changed must not add per-trust requests).
REQUESTS: collections.Counter[str] = collections.Counter()
_REQUESTS_LOCK = threading.Lock()


def _counted(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with _REQUESTS_LOCK:
            REQUESTS[name] += 1
        return method(*args, **kwargs)

    return call


def _discarding(method: Callable[..., Any]) -> Callable[..., Any]:
    """A write whose answer is not needed: not decoded into the client's models (the
    biggest CPU cost of a write at 1,000 trusts); errors still raise ApiException."""

    def call(*args: Any, **kwargs: Any) -> None:
        response = method(*args, _preload_content=False, **kwargs)
        response.read()
        response.release_conn()

    return call


class _Timed:
    """An API object whose every call carries ``_request_timeout`` (connect, read) and
    is counted in :data:`REQUESTS`; with ``discard``, answers are drained, not decoded."""

    def __init__(self, api: Any, timeout: tuple[float, float], discard: bool = False) -> None:
        self._api = api
        self._timeout = timeout
        self._discard = discard

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if callable(attr) and not name.startswith("_"):
            call = functools.partial(attr, _request_timeout=self._timeout)
            return _counted(_discarding(call) if self._discard else call, name)
        return attr


@dataclass
class Kube:
    api: client.ApiClient
    namespace: str
    # (connect, read) seconds for every call; see DEFAULT_TIMEOUT.
    timeout: tuple[float, float] = DEFAULT_TIMEOUT

    # Made once: ``client.CoreV1Api`` is a lazy attribute of the kubernetes package,
    # resolved through the import system (under its module lock) on every access;
    # per call, that serialised the operator's reconcile threads (15 % of a cold start).

    @functools.cached_property
    def core(self) -> Any:
        return _Timed(client.CoreV1Api(self.api), self.timeout)

    @functools.cached_property
    def custom(self) -> Any:
        return _Timed(client.CustomObjectsApi(self.api), self.timeout)

    @functools.cached_property
    def core_writes(self) -> Any:
        return _Timed(client.CoreV1Api(self.api), self.timeout, discard=True)

    @functools.cached_property
    def custom_writes(self) -> Any:
        return _Timed(client.CustomObjectsApi(self.api), self.timeout, discard=True)

    @functools.cached_property
    def apps(self) -> Any:
        return _Timed(client.AppsV1Api(self.api), self.timeout)

    # --- sources (reconcile.Sources) -------------------------------------------------

    @_transport_errors
    def secret(self, name: str) -> Mapping[str, bytes] | None:
        found = self._get_secret(name)
        if found is None:
            return None
        return {k: base64.b64decode(v) for k, v in (found.data or {}).items()}

    @_transport_errors
    def config_map(self, name: str) -> Mapping[str, str] | None:
        try:
            cm = self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading ConfigMap {self.namespace}/{name}") from None
        return dict(cm.data or {})

    def _get_secret(self, name: str) -> Any:
        try:
            return self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading Secret {self.namespace}/{name}") from None

    # --- the bundle Secret ----------------------------------------------------------

    @_transport_errors
    def bundle_secret(self, name: str) -> ExistingSecret | None:
        """What a bundle Secret holds now, or None."""
        found = self._get_secret(name)
        if found is None:
            return None
        meta = found.metadata
        return ExistingSecret(
            data={k: base64.b64decode(v) for k, v in (found.data or {}).items()},
            annotations=dict(meta.annotations or {}),
            labels=dict(meta.labels or {}),
            owner_uids=tuple(str(o.uid) for o in meta.owner_references or ()),
        )

    @_transport_errors
    def write_bundle_secret(self, body: Mapping[str, Any], *, exists: bool) -> None:
        """Create the Secret, or replace it when it exists (the caller compared hashes)."""
        name = body["metadata"]["name"]
        try:
            if exists:
                self.core_writes.replace_namespaced_secret(name, self.namespace, body)
            else:
                try:
                    self.core_writes.create_namespaced_secret(self.namespace, body)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    # It exists already (what we read lagged behind): replace it.
                    self.core_writes.replace_namespaced_secret(name, self.namespace, body)
        except ApiException as exc:
            raise _api_error(exc, f"writing Secret {self.namespace}/{name}") from None

    # --- DTRTrust objects -----------------------------------------------------------

    @_transport_errors
    def list_trusts(self) -> list[dict[str, Any]]:
        try:
            result = self.custom.list_cluster_custom_object(API_GROUP, VERSION, PLURAL)
        except ApiException as exc:
            raise _api_error(exc, "listing DTRTrusts") from None
        return list(result.get("items") or [])

    @_transport_errors
    def get_trust(self, name: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_cluster_custom_object(API_GROUP, VERSION, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading DTRTrust {name}") from None
        return dict(obj)

    @_transport_errors
    def patch_trust_status(self, name: str, patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of ``status``; a key that went away must be in ``patch``
        as None (:func:`dtrtrust.core.status.status_patch`), or it stays for ever."""
        try:
            self.custom_writes.patch_cluster_custom_object_status(
                API_GROUP, VERSION, PLURAL, name, {"status": dict(patch)}
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing to report on
            raise _api_error(exc, f"patching DTRTrust {name} status") from None

    # --- nodes ----------------------------------------------------------------------

    @_transport_errors
    def node_names(self, selector: Mapping[str, str]) -> list[str]:
        """Linux nodes matching ``selector``."""
        labels = {"kubernetes.io/os": "linux", **selector}
        # "k=" is "k equals the empty string", as in a Pod's nodeSelector.
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            nodes = self.core.list_node(label_selector=label_selector)
        except ApiException as exc:
            raise _api_error(exc, "listing Nodes") from None
        return sorted(n.metadata.name for n in nodes.items)

    def node_reports(self) -> NodeReports:
        """Every agent's report: node -> trust -> (content hash, state, message)."""
        return self.node_reports_and_probes()[0]

    @_transport_errors
    def node_reports_and_probes(self) -> tuple[NodeReports, NodeProbes]:
        """Every agent's report (as :meth:`node_reports`) and, from the same list,
        node -> trust -> the probe entry of that trust (only where one was reported)."""
        try:
            result = self.custom.list_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, NODE_REPORT_PLURAL
            )
        except ApiException as exc:
            raise _api_error(exc, f"listing DTRTrustNodes in {self.namespace}") from None
        reports: NodeReports = {}
        probes: NodeProbes = {}
        for item in result.get("items") or []:
            node, report = report_entries(item)
            reports[node] = report.entries
            probes[node] = report.probes
        return reports, probes

    # --- the agent DaemonSet ----------------------------------------------------------

    @_transport_errors
    def read_daemonset(self, name: str) -> dict[str, Any] | None:
        """The live DaemonSet as a plain dict (camelCase, as kubectl shows it), or None."""
        try:
            live = self.apps.read_namespaced_daemon_set(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading DaemonSet {self.namespace}/{name}") from None
        return dict(self.api.sanitize_for_serialization(live))

    @_transport_errors
    def write_daemonset(self, body: Mapping[str, Any], *, exists: bool) -> None:
        """Create the DaemonSet, or replace it (``body`` carries the live resourceVersion,
        so a concurrent edit makes the replace fail instead of being overwritten)."""
        apps = self.apps
        name = body["metadata"]["name"]
        try:
            if exists:
                apps.replace_namespaced_daemon_set(name, self.namespace, dict(body))
            else:
                apps.create_namespaced_daemon_set(self.namespace, dict(body))
        except ApiException as exc:
            raise _api_error(exc, f"writing DaemonSet {self.namespace}/{name}") from None

    # --- events ---------------------------------------------------------------------

    @_transport_errors
    def post_event(
        self, trust: Mapping[str, Any], type_: str, reason: str, message: str, *, now: dt.datetime
    ) -> None:
        """An Event on the DTRTrust. The API server requires events about a
        cluster-scoped object to live in ``default``; ``kubectl describe dtrtrust``
        finds them there."""
        meta = trust.get("metadata") or {}
        stamp = rfc3339(now)
        event = {  # a plain body: the client's models cost more CPU than the call
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'dtrtrust')}."},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta.get("name"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": "dtrtrust-operator"},
            "reportingComponent": "dtrtrust.io/operator",
            "reportingInstance": "dtrtrust-operator",
        }
        try:
            self.core_writes.create_namespaced_event(EVENTS_NAMESPACE, event)
        except ApiException as exc:
            # An event is best effort by nature, but say so instead of hiding it.
            log.warning(
                "could not post event %s on DTRTrust %s: %s %s",
                reason,
                meta.get("name"),
                exc.status,
                exc.reason,
            )


# --- raw objects (as watches deliver them) ------------------------------------------


# Equal report entries are one object: with 1,000 nodes x 1,000 trusts, the reports
# are a million entries but only as many distinct ones as trusts x states.
_ENTRIES: dict[tuple[str, str, str], tuple[str, str, str]] = {}
_ENTRIES_MAX = 200_000


def _shared(entry: tuple[str, str, str]) -> tuple[str, str, str]:
    found = _ENTRIES.get(entry)
    if found is not None:
        return found
    if len(_ENTRIES) >= _ENTRIES_MAX:
        _ENTRIES.clear()  # old hashes; live reports keep their own references
    _ENTRIES[entry] = entry
    return entry


@dataclass(frozen=True)
class NodeReport:
    """One agent's DTRTrustNode report as the operator keeps it (the report index's
    value per node)."""

    # trust -> (content hash, state, message)
    entries: dict[str, tuple[str, str, str]]
    # trust -> the entry's probe (reachable, tlsVerified, ..., with the entry's
    # contentHash), only where the agent reported one
    probes: dict[str, dict[str, Any]]


def report_entries(body: Mapping[str, Any]) -> tuple[str, NodeReport]:
    """A DTRTrustNode report: (node, its entries and probes)."""
    status = body.get("status") or {}
    node = sys.intern(str(status.get("nodeName") or (body.get("metadata") or {}).get("name")))
    entries: dict[str, tuple[str, str, str]] = {}
    probes: dict[str, dict[str, Any]] = {}
    for t in status.get("trusts") or []:
        if not t.get("name"):
            continue
        name = sys.intern(str(t.get("name")))
        entry = _shared(
            (
                str(t.get("contentHash") or ""),
                str(t.get("state") or ""),
                str(t.get("message") or ""),
            )
        )
        entries[name] = entry
        if isinstance(t.get("probe"), dict):
            probes[name] = {**t["probe"], "contentHash": entry[0]}
    return node, NodeReport(entries, probes)


def existing_secret(body: Mapping[str, Any]) -> ExistingSecret:
    """A Secret as a watch delivers it (base64 data, camelCase metadata)."""
    meta = body.get("metadata") or {}
    return ExistingSecret(
        data={k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()},
        annotations=dict(meta.get("annotations") or {}),
        labels=dict(meta.get("labels") or {}),
        owner_uids=tuple(str(o.get("uid")) for o in meta.get("ownerReferences") or ()),
    )
