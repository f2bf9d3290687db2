"""The agent DaemonSet: a pure builder from the packaged template, and drift checks.

The operator keeps exactly one DaemonSet (``dtrtrust-agent``) in its namespace,
whatever the number of DTRTrusts. :func:`build` fills the template shipped in
``dtrtrust/operator/templates/daemonset.yaml`` with the image and namespace and stamps a hash
of the result into an annotation; :func:`needs_update` tells whether a live object
differs from it: either the hash (what we want changed) or any field we set (someone
edited the live object). Fields the API server defaults are not compared.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from dtrtrust.contract import DEFAULT_NAMESPACE, SPEC_HASH_ANNOTATION

DEFAULT_IMAGE = "ghcr.io/dtrtrust/dtrtrust:0.1.0"
IMAGE_ENV = "DTRTRUST_AGENT_IMAGE"


@dataclass(frozen=True)
class Settings:
    """What varies per installation."""

    namespace: str = DEFAULT_NAMESPACE
    # The agent image (same image as the operator, another entry point).
    image: str = DEFAULT_IMAGE

    @classmethod
    def from_env(cls, namespace: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(namespace=namespace, image=env.get(IMAGE_ENV) or DEFAULT_IMAGE)


def template() -> dict[str, Any]:
    text = (
        resources.files(__package__ or "dtrtrust.operator")
        .joinpath("templates/daemonset.yaml")
        .read_text()
    )
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError("templates/daemonset.yaml does not hold one object")
    return doc


def spec_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 over the parts we own (labels, spec), canonical JSON."""
    meta = body.get("metadata") or {}
    owned = {"labels": meta.get("labels") or {}, "spec": body.get("spec") or {}}
    digest = hashlib.sha256(json.dumps(owned, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + digest.hexdigest()


def build(settings: Settings) -> dict[str, Any]:
    """The desired DaemonSet."""
    if not settings.image or any(c.isspace() for c in settings.image):
        raise ValueError(f"{IMAGE_ENV} must name one image, e.g. registry.example/dtrtrust:1.0")
    body = template()
    body["metadata"]["namespace"] = settings.namespace
    for container in body["spec"]["template"]["spec"]["containers"]:
        container["image"] = settings.image
    body["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = spec_hash(body)
    return body


def _differs(want: Any, live: Any) -> bool:
    """Whether ``live`` differs from ``want`` in anything ``want`` sets. Dicts compare
    only the keys we set (the API server adds defaults); lists compare item by item
    and must have the same length."""
    if isinstance(want, Mapping):
        if not isinstance(live, Mapping):
            return True
        return any(_differs(v, live.get(k)) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(live, list) or len(live) != len(want):
            return True
        return any(_differs(w, x) for w, x in zip(want, live, strict=True))
    return bool(want != live)


def needs_update(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """Why the live DaemonSet must be replaced by ``desired``, or None."""
    want_hash = (desired.get("metadata") or {}).get("annotations", {}).get(SPEC_HASH_ANNOTATION)
    live_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if want_hash != live_hash:
        return "the desired agent DaemonSet changed"
    if _differs(
        (desired.get("metadata") or {}).get("labels") or {}, live["metadata"].get("labels")
    ):
        return "its labels were edited"
    if _differs(desired.get("spec") or {}, live.get("spec") or {}):
        return "its spec was edited"
    return None


def for_replace(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """``desired`` with the live object's resourceVersion, so a concurrent edit
    makes the replace fail instead of being overwritten blindly."""
    body = copy.deepcopy(dict(desired))
    rv = (live.get("metadata") or {}).get("resourceVersion")
    if rv:
        body["metadata"]["resourceVersion"] = rv
    return body
