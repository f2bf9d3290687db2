"""The agent's API layer: pykube-ng (requests), nothing else.

The agent runs on every node, so it stays small: no ``kubernetes`` client, no kopf.
This module only moves JSON: list and watch the bundle Secrets, the DTRTrusts (whether
each exists, read-only) and the agent's own Node, read/write its DTRTrustNode report,
and remove the Node's startup taint (a JSON patch guarded by a ``test`` op). What the
agent does with them is in :mod:`dtrtrust.agent`.

Watches are resourceVersion based: list once, then watch from the list's version;
a ``410 Gone`` (the version is too old) raises :class:`Gone` and the caller lists
again. Every other failure raises :class:`ApiUnavailable` with one line saying what
failed; the caller keeps its view and retries with backoff. Nothing here polls.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# pykube imports requests_oauthlib (73 modules of oauthlib, ~1.5 MB resident) only to
# refresh OIDC tokens of a kubeconfig's auth-provider; the agent authenticates with its
# ServiceAccount token (or a kubeconfig's certificate or token). Without the import,
# pykube's OIDC support is off, nothing else changes.
if "requests_oauthlib" not in sys.modules:
    sys.modules["requests_oauthlib"] = None  # type: ignore[assignment]

import pykube
import requests

from dtrtrust.contract import API_VERSION, NODE_REPORT_PLURAL, PLURAL

log = logging.getLogger("dtrtrust.kube.node")


# Seconds the API server keeps a watch open before it ends it (we then resume from the
# last resourceVersion); the client read timeout is a little longer so a silently
# dropped connection is noticed too.
WATCH_SECONDS = 240
_READ_SLACK = 30
_CONNECT_TIMEOUT = 10.0
_REQUEST_TIMEOUT = 15.0
# Items per page of a list (client-go's informers use 500; the agent is smaller).
PAGE_SIZE = 100
# The DTRTrusts as metadata only (PartialObjectMetadata): the agent needs each trust's
# name and uid, not its spec (inline PEM up to 64 KiB) or status.
_METADATA_LIST = {
    "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
}
_METADATA_WATCH = {
    "Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
}


class ApiUnavailable(Exception):
    """The API server could not be reached or refused a call that should work."""


class Gone(ApiUnavailable):
    """410: the resourceVersion is too old; list again."""


class Conflict(ApiUnavailable):
    """409: the object changed (update) or exists already (create)."""


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


class Listing:
    """The items of a list, fetched in pages of :data:`PAGE_SIZE` (``limit`` +
    ``continue``: one consistent snapshot) while it is iterated, so at most one page is
    in memory: one answer of 1,000 Secrets is ~5 MB of JSON, and CPython keeps the
    arenas of a parse that size for the life of the process. Iterate once; then
    :attr:`resource_version` is the version a watch resumes from. An expired continue
    token (410) raises :class:`Gone`: the caller lists again."""

    def __init__(self, page: Callable[[str], dict[str, Any]]) -> None:
        self._page = page
        self.resource_version = ""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            data = self._page(token)
            meta = data.get("metadata") or {}
            items = data.get("items") or []
            del data
            items.reverse()
            while items:  # hand each item over and drop it: the caller keeps what it needs
                yield items.pop()
            token = str(meta.get("continue") or "")
            if not token:
                self.resource_version = str(meta.get("resourceVersion") or "")
                return


def load_config() -> Any:
    """In-cluster ServiceAccount when running in a pod, else KUBECONFIG / ~/.kube/config."""
    try:
        return pykube.KubeConfig.from_env()
    except Exception as exc:  # pykube raises several types for a missing/bad config
        raise ApiUnavailable(
            f"no Kubernetes configuration: not in a pod and no usable kubeconfig ({exc}); "
            "set KUBECONFIG"
        ) from None


def _describe(resp: requests.Response) -> str:
    try:
        message = str(resp.json().get("message") or "")
    except ValueError:
        message = ""
    return f"{resp.status_code} {resp.reason}" + (f": {message}" if message else "")


class NodeApi:
    """The calls the agent makes, as plain dicts."""

    def __init__(self, namespace: str, node_name: str, config: Any | None = None) -> None:
        self.namespace = namespace
        self.node_name = node_name
        self.http = pykube.HTTPClient(config or load_config(), timeout=_REQUEST_TIMEOUT)

    # --- plumbing -------------------------------------------------------------------

    def _call(self, method: str, what: str, **kwargs: Any) -> requests.Response:
        try:
            resp: requests.Response = getattr(self.http, method)(**kwargs)
        except requests.RequestException as exc:
            raise ApiUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 410:
            raise Gone(f"{what}: {_describe(resp)}")
        if resp.status_code == 409:
            raise Conflict(f"{what}: {_describe(resp)}")
        return resp

    def _json(self, resp: requests.Response, what: str) -> dict[str, Any]:
        if resp.status_code >= 400:
            raise ApiUnavailable(f"{what}: API server answered {_describe(resp)}")
        data = resp.json()
        if not isinstance(data, dict):
            raise ApiUnavailable(f"{what}: unexpected answer from the API server")
        return data

    def _list(
        self,
        what: str,
        *,
        namespace: str | None,
        url: str,
        params: Mapping[str, str],
        version: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Listing:
        kwargs: dict[str, Any] = {"url": url}
        if namespace is not None:
            kwargs["namespace"] = namespace
        if version is not None:
            kwargs["version"] = version
        if headers:
            kwargs["headers"] = dict(headers)

        def page(token: str) -> dict[str, Any]:
            query = {**params, "limit": str(PAGE_SIZE)}
            if token:
                query["continue"] = token
            return self._json(self._call("get", what, params=query, **kwargs), what)

        return Listing(page)

    def _watch(
        self,
        what: str,
        *,
        namespace: str | None,
        url: str,
        params: Mapping[str, str],
        resource_version: str,
        version: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[WatchEvent]:
        query = {
            **params,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        kwargs: dict[str, Any] = {
            "url": url,
            "params": query,
            "stream": True,
            "timeout": (_CONNECT_TIMEOUT, WATCH_SECONDS + _READ_SLACK),
        }
        if namespace is not None:
            kwargs["namespace"] = namespace
        if version is not None:
            kwargs["version"] = version
        if headers:
            kwargs["headers"] = dict(headers)
        resp = self._call("get", what, **kwargs)
        with resp:
            if resp.status_code >= 400:
                raise ApiUnavailable(f"{what}: API server answered {_describe(resp)}")
            try:
                for line in resp.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        code = obj.get("code")
                        message = f"{what}: {code} {obj.get('reason')}: {obj.get('message')}"
                        if code == 410:
                            raise Gone(message)
                        raise ApiUnavailable(message)
                    yield WatchEvent(kind, obj)
            except (requests.RequestException, ValueError) as exc:
                raise ApiUnavailable(f"{what}: watch broke: {type(exc).__name__}") from None

    # --- bundle Secrets -------------------------------------------------------------

    def list_secrets(self, label_selector: str) -> Listing:
        """The bundle Secrets of the namespace, page by page."""
        return self._list(
            f"listing Secrets in {self.namespace}",
            namespace=self.namespace,
            url="secrets",
            params={"labelSelector": label_selector},
        )

    def watch_secrets(self, label_selector: str, resource_version: str) -> Iterator[WatchEvent]:
        return self._watch(
            f"watching Secrets in {self.namespace}",
            namespace=self.namespace,
            url="secrets",
            params={"labelSelector": label_selector},
            resource_version=resource_version,
        )

    def get_secret(self, name: str) -> dict[str, Any] | None:
        """One Secret of the namespace (None when it does not exist)."""
        what = f"reading Secret {self.namespace}/{name}"
        resp = self._call("get", what, namespace=self.namespace, url=f"secrets/{name}")
        if resp.status_code == 404:
            return None
        return self._json(resp, what)

    # --- DTRTrusts (cluster-scoped, read-only) --------------------------------------
    # Only whether each trust exists and its uid matter: a missing bundle Secret removes
    # files only when its DTRTrust is really gone.

    def list_trusts(self) -> Listing:
        """Every DTRTrust's metadata, page by page."""
        return self._list(
            "listing DTRTrusts",
            namespace=None,
            url=PLURAL,
            params={},
            version=API_VERSION,
            headers=_METADATA_LIST,
        )

    def watch_trusts(self, resource_version: str) -> Iterator[WatchEvent]:
        return self._watch(
            "watching DTRTrusts",
            namespace=None,
            url=PLURAL,
            params={},
            resource_version=resource_version,
            version=API_VERSION,
            headers=_METADATA_WATCH,
        )

    # --- the agent's own Node -------------------------------------------------------

    def list_node(self) -> tuple[dict[str, Any] | None, str]:
        """This node (None when it does not exist) and the list's resourceVersion."""
        listing = self._list(
            f"reading Node {self.node_name}",
            namespace=None,
            url="nodes",
            params={"fieldSelector": f"metadata.name={self.node_name}"},
        )
        items = list(listing)
        return (items[0] if items else None), listing.resource_version

    def watch_node(self, resource_version: str) -> Iterator[WatchEvent]:
        return self._watch(
            f"watching Node {self.node_name}",
            namespace=None,
            url="nodes",
            params={"fieldSelector": f"metadata.name={self.node_name}"},
            resource_version=resource_version,
        )

    def remove_taint(self, taints: list[dict[str, Any]], key: str) -> None:
        """Remove every taint with ``key`` from this Node with a JSON patch whose first op
        tests that ``spec.taints`` is still exactly ``taints`` (what the agent last saw):
        a concurrent change of the node's taints (another controller adding or removing
        one) fails the patch with Conflict instead of being overwritten; the caller reads
        the Node again and retries."""
        what = f"removing taint {key} from Node {self.node_name}"
        keep = [t for t in taints if t.get("key") != key]
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/spec/taints", "value": taints}]
        if keep:
            ops.append({"op": "replace", "path": "/spec/taints", "value": keep})
        else:
            ops.append({"op": "remove", "path": "/spec/taints"})
        resp = self._call(
            "patch",
            what,
            url=f"nodes/{self.node_name}",
            data=json.dumps(ops),
            headers={"Content-Type": "application/json-patch+json"},
        )
        if resp.status_code == 422:  # the test op failed: the taints changed meanwhile
            raise Conflict(f"{what}: the node's taints changed meanwhile")
        self._json(resp, what)

    # --- the DTRTrustNode report ----------------------------------------------------

    def get_report(self) -> dict[str, Any] | None:
        what = f"reading DTRTrustNode {self.namespace}/{self.node_name}"
        resp = self._call(
            "get",
            what,
            version=API_VERSION,
            namespace=self.namespace,
            url=f"{NODE_REPORT_PLURAL}/{self.node_name}",
        )
        if resp.status_code == 404:
            return None
        return self._json(resp, what)

    def create_report(self, body: Mapping[str, Any]) -> dict[str, Any]:
        what = f"creating DTRTrustNode {self.namespace}/{self.node_name}"
        resp = self._call(
            "post",
            what,
            version=API_VERSION,
            namespace=self.namespace,
            url=NODE_REPORT_PLURAL,
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return self._json(resp, what)

    def replace_report(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent change raises Conflict."""
        what = f"updating DTRTrustNode {self.namespace}/{self.node_name}"
        resp = self._call(
            "put",
            what,
            version=API_VERSION,
            namespace=self.namespace,
            url=f"{NODE_REPORT_PLURAL}/{self.node_name}",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return self._json(resp, what)
