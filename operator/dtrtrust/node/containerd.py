"""Will containerd's CRI read ``/etc/containerd/certs.d``? (its ``config.toml``)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONTAINERD_CONFIG = "etc/containerd/config.toml"
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"


# containerd's CRI registry table per config version: v1 (containerd 1.x short
# names), v2 (containerd 1.x), v3 (containerd 2.x, images split out of CRI).
_CRI_REGISTRY_TABLES = {
    1: ("plugins", "cri", "registry"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}


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


def read_containerd_config(host_root: Path) -> str | None:
    path = host_root / CONTAINERD_CONFIG
    try:
        if not path.is_file():
            return None  # absent (or an empty hostPath placeholder directory)
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
