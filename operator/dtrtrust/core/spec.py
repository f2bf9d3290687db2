"""The DTRTrust spec as typed, validated values.

Pure: parses the ``spec`` mapping of a manifest (as the API server or a YAML file
gives it) into frozen dataclasses, applying the same defaults as the CRD. The CRD in
``crds/`` validates at admission; this module validates again so that ``dtrtrust
apply`` (no API server) and the agent never act on an invalid spec.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dtrtrust.contract import (
    API_VERSION,
    DEFAULT_SOURCE_KEY,
    DEFAULT_TARGETS,
    DELETION_POLICIES,
    KIND,
    SECRET_PREFIX,
    TARGETS,
)
from dtrtrust.core.addresses import validate_address
from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import parse_fingerprint
from dtrtrust.core.labels import selector_problem

DEFAULT_REFRESH = dt.timedelta(hours=1)
MIN_REFRESH = dt.timedelta(minutes=1)
DEFAULT_ROTATION_OVERLAP = dt.timedelta(days=7)
# Inline PEM stays small enough that two copies of the spec (kubectl's last-applied
# annotation, kopf's diff base) fit in the API server's 256 KiB for all annotations.
MAX_INLINE_PEM = 64 * 1024
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class SpecError(ValueError):
    """An invalid spec. ``field`` is the JSON path (``spec.ca.fetch.url``); the message
    says what is wrong and what to write instead."""

    reason = "InvalidSpec"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


@dataclass(frozen=True)
class Ref:
    name: str
    key: str


@dataclass(frozen=True)
class FetchSpec:
    url: str
    pins: tuple[str, ...]  # canonical "sha256:<hex>"
    insecure_skip_pinning: bool = False
    refresh_interval: dt.timedelta = DEFAULT_REFRESH
    rotation_overlap: dt.timedelta = DEFAULT_ROTATION_OVERLAP


@dataclass(frozen=True)
class CASpec:
    fetch: FetchSpec | None = None
    pem: str | None = None
    secret_refs: tuple[Ref, ...] = ()
    config_map_refs: tuple[Ref, ...] = ()


@dataclass(frozen=True)
class TrustSpec:
    name: str
    registry: str
    aliases: tuple[str, ...] = ()
    ca: CASpec = field(default_factory=CASpec)
    client_secret: str | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS
    node_selector: Mapping[str, str] = field(default_factory=dict)
    verify_tls: bool = True
    verify_client_auth: bool = True
    # Each node's agent probes the registry with exactly the files it wrote (NodesVerified).
    verify_nodes: bool = True
    deletion_policy: str = "Delete"
    generation: int = 0

    @property
    def addresses(self) -> tuple[str, ...]:
        """The registry first, then aliases, without duplicates."""
        return tuple(dict.fromkeys((self.registry, *self.aliases)))

    @property
    def refresh_interval(self) -> dt.timedelta:
        return self.ca.fetch.refresh_interval if self.ca.fetch else DEFAULT_REFRESH


def parse_duration(text: str, path: str) -> dt.timedelta:
    """Go-style durations as kubectl users write them: ``90s``, ``30m``, ``1h30m``."""
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not m or not any(m.groups()):
        raise SpecError(path, f"{text!r} is not a duration; write it like 1h, 30m or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be a mapping")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(path, "must be a list")
    return value


def _str(value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise SpecError(path, "must be a non-empty string")
    return value


def _bool(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


def _address(value: Any, path: str) -> str:
    text = _str(value, path, required=True)
    assert text is not None
    try:
        return validate_address(text)
    except ValueError as exc:
        raise SpecError(path, str(exc)) from None


def _refs(value: Any, path: str) -> tuple[Ref, ...]:
    refs = []
    for i, item in enumerate(_list(value, path)):
        item = _mapping(item, f"{path}[{i}]")
        name = _str(item.get("name"), f"{path}[{i}].name", required=True)
        key = _str(item.get("key"), f"{path}[{i}].key") or DEFAULT_SOURCE_KEY
        assert name is not None
        if not _NAME_RE.match(name):
            raise SpecError(f"{path}[{i}].name", f"{name!r} is not a valid object name")
        if not _KEY_RE.match(key):
            raise SpecError(f"{path}[{i}].key", f"{key!r} is not a valid data key")
        refs.append(Ref(name=name, key=key))
    return tuple(refs)


def _fetch(value: Any, registry: str, path: str) -> FetchSpec | None:
    if value is None:
        return None
    value = _mapping(value, path)
    url = _str(value.get("url"), f"{path}.url") or f"https://{registry}/ca"
    if not url.startswith(("https://", "http://")):
        raise SpecError(f"{path}.url", f"{url!r} must be an https:// URL")
    pins = []
    for i, pin in enumerate(_list(value.get("pinnedSHA256"), f"{path}.pinnedSHA256")):
        try:
            pins.append(parse_fingerprint(str(pin)))
        except CertError as exc:
            raise SpecError(f"{path}.pinnedSHA256[{i}]", exc.message) from None
    refresh = DEFAULT_REFRESH
    if value.get("refreshInterval") is not None:
        refresh = parse_duration(value["refreshInterval"], f"{path}.refreshInterval")
        if refresh < MIN_REFRESH:
            raise SpecError(f"{path}.refreshInterval", "must be at least 1m")
    overlap = DEFAULT_ROTATION_OVERLAP
    if value.get("rotationOverlap") is not None:
        overlap = parse_duration(value["rotationOverlap"], f"{path}.rotationOverlap")
    return FetchSpec(
        url=url,
        pins=tuple(dict.fromkeys(pins)),
        insecure_skip_pinning=_bool(
            value.get("insecureSkipPinning"), f"{path}.insecureSkipPinning", False
        ),
        refresh_interval=refresh,
        rotation_overlap=overlap,
    )


def parse_trust(manifest: Mapping[str, Any]) -> TrustSpec:
    """Parse a whole DTRTrust manifest (apiVersion, kind, metadata, spec)."""
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise SpecError(
            "apiVersion/kind",
            f"expected {API_VERSION} {KIND}, got "
            f"{manifest.get('apiVersion')} {manifest.get('kind')}",
        )
    meta = _mapping(manifest.get("metadata"), "metadata")
    name = check_name(meta.get("name"))
    generation = meta.get("generation") or 0
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise SpecError("metadata.generation", "must be a non-negative integer")
    return parse_spec(name, _mapping(manifest.get("spec"), "spec"), generation=generation)


def check_name(value: Any) -> str:
    """A DTRTrust's ``metadata.name``: a DNS subdomain short enough for its Secret name."""
    name = _str(value, "metadata.name", required=True)
    assert name is not None
    if not _NAME_RE.match(name) or len(name) > 253 - len(SECRET_PREFIX):
        raise SpecError("metadata.name", f"{name!r} is not a valid object name")
    return name


def parse_spec(name: str, spec: Mapping[str, Any], *, generation: int = 0) -> TrustSpec:
    registry = _address(spec.get("registry"), "spec.registry")
    aliases = tuple(
        _address(a, f"spec.aliases[{i}]")
        for i, a in enumerate(_list(spec.get("aliases"), "spec.aliases"))
    )

    ca_raw = _mapping(spec.get("ca"), "spec.ca")
    pem = _str(ca_raw.get("pem"), "spec.ca.pem")
    if pem is not None and len(pem) > MAX_INLINE_PEM:
        raise SpecError(
            "spec.ca.pem",
            f"is larger than {MAX_INLINE_PEM} bytes; use configMapRefs for large bundles "
            "(kubectl and the operator keep a copy of the spec in annotations, which the "
            "API server caps at 256 KiB in all)",
        )
    ca = CASpec(
        fetch=_fetch(ca_raw.get("fetch"), registry, "spec.ca.fetch"),
        pem=pem or None,
        secret_refs=_refs(ca_raw.get("secretRefs"), "spec.ca.secretRefs"),
        config_map_refs=_refs(ca_raw.get("configMapRefs"), "spec.ca.configMapRefs"),
    )
    if not (ca.fetch or ca.pem or ca.secret_refs or ca.config_map_refs):
        raise SpecError(
            "spec.ca", "needs at least one source: fetch, pem, secretRefs or configMapRefs"
        )

    client_secret = None
    client_raw = spec.get("clientCertificate")
    if client_raw is not None:
        ref = _mapping(
            _mapping(client_raw, "spec.clientCertificate").get("secretRef"),
            "spec.clientCertificate.secretRef",
        )
        client_secret = _str(
            ref.get("name"), "spec.clientCertificate.secretRef.name", required=True
        )

    targets_raw = _list(spec.get("targets"), "spec.targets") or list(DEFAULT_TARGETS)
    for i, t in enumerate(targets_raw):
        if t not in TARGETS:
            raise SpecError(f"spec.targets[{i}]", f"{t!r} is not one of {', '.join(TARGETS)}")
    targets = tuple(dict.fromkeys(targets_raw))

    selector = _mapping(spec.get("nodeSelector"), "spec.nodeSelector")
    for k, v in selector.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError("spec.nodeSelector", "keys and values must be strings")
    problem = selector_problem(selector)
    if problem:
        raise SpecError("spec.nodeSelector", problem)

    verify = _mapping(spec.get("verify"), "spec.verify")
    policy = spec.get("deletionPolicy") or "Delete"
    if policy not in DELETION_POLICIES:
        raise SpecError("spec.deletionPolicy", f"{policy!r} must be Delete or Retain")

    return TrustSpec(
        name=name,
        registry=registry,
        aliases=aliases,
        ca=ca,
        client_secret=client_secret,
        targets=targets,
        node_selector=dict(selector),
        verify_tls=_bool(verify.get("tls"), "spec.verify.tls", True),
        verify_client_auth=_bool(verify.get("clientAuth"), "spec.verify.clientAuth", True),
        verify_nodes=_bool(verify.get("nodes"), "spec.verify.nodes", True),
        deletion_policy=policy,
        generation=generation,
    )
