"""Applies DesiredDirs under a host root: atomic, owned, reversible.

INTERFACE (implemented by the files helper; keep names and signatures, extend freely):
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dtrtrust.layout import DesiredDir


@dataclass
class DirResult:
    target: str
    address: str
    action: str  # "written" | "unchanged" | "conflict" | "error"
    message: str = ""


@dataclass
class SyncResult:
    dirs: list[DirResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # relative paths removed or restored

    @property
    def ok(self) -> bool:
        return all(d.action in ("written", "unchanged") for d in self.dirs)


def sync_trust(host_root: Path, trust: str, dirs: Sequence[DesiredDir]) -> SyncResult:
    """Make the node hold exactly ``dirs`` for trust ``trust``: write what differs,
    remove what this trust owned before and no longer wants (restoring backups)."""
    raise NotImplementedError


def remove_trust(host_root: Path, trust: str, roots: Sequence[str] | None = None) -> SyncResult:
    """Remove everything ``trust`` owns (restoring backed-up foreign files)."""
    raise NotImplementedError


def owned_trusts(host_root: Path) -> set[str]:
    """Names of the trusts that own files under host_root (from the ownership records)."""
    raise NotImplementedError
