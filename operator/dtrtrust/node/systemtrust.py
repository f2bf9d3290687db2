"""The OS trust store (``dtrtrust apply --system-trust``): Debian/Ubuntu and RHEL/Fedora.

Which store a host has is told by the directory its ca-certificates package creates:
``usr/local/share/ca-certificates`` (Debian/Ubuntu, rebuilt by ``update-ca-certificates``)
or ``etc/pki/ca-trust/source/anchors`` (RHEL/Fedora/CentOS, ``update-ca-trust extract``).
Any other host is named as unsupported; dtrtrust never creates a store directory.

One file per CA certificate, ``dtrtrust-<trust>-<first 16 hex of its SHA-256>.crt``
(the tools want one certificate per file; a fingerprint name keeps files stable when
a CA is added). Ownership is exact: the caller passes the files it recorded for this
trust (name -> SHA-256 of the content written), and only those are ever removed or
rewritten; another trust's files (``dtrtrust-<trust>-prod-...``), a foreign file with the
same name, or one of ours changed by hand are left alone. Every file goes through the
no-follow walk (:mod:`dtrtrust.node.fs`). The update command runs on the host
itself (host root ``/``) when something changed or an earlier run failed to run it;
its failure or absence is reported, never ignored.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dtrtrust.node import fs

log = logging.getLogger("dtrtrust.systemtrust")

_UPDATE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Store:
    name: str  # "debian" | "rhel"
    label: str  # what a user calls it
    directory: str  # relative to the host root
    command: tuple[str, ...]


STORES = (
    Store(
        "debian",
        "Debian/Ubuntu",
        "usr/local/share/ca-certificates",
        ("update-ca-certificates",),
    ),
    Store("rhel", "RHEL/Fedora", "etc/pki/ca-trust/source/anchors", ("update-ca-trust", "extract")),
)


@dataclass
class Result:
    """What install/remove did, for the status and apply's ownership record."""

    store: Store | None
    files: dict[str, str] = field(default_factory=dict)  # rel path -> sha256 of content
    removed: list[str] = field(default_factory=list)  # rel paths removed
    changed: bool = False
    # None: the store is rebuilt (or nothing had to be); False: still to do (the
    # command failed, is missing, or cannot run for a host root other than /).
    updated: bool | None = None
    problem: str = ""  # set when the OS store does not hold what it should
    note: str = ""  # e.g. "run update-ca-certificates on that host"

    def to_status(self) -> dict[str, object]:
        out: dict[str, object] = {
            "store": self.store.label if self.store else "unsupported",
            "files": sorted(self.files),
        }
        if self.store is not None:
            out["directory"] = "/" + self.store.directory
            out["updateCommand"] = " ".join(self.store.command)
            out["updated"] = self.updated is not False
        if self.problem or self.note:
            out["message"] = self.problem or self.note
        return out


def detect(host_root: Path) -> Store | None:
    """The trust store of the host under ``host_root``; None when unsupported."""
    for store in STORES:
        if (host_root / store.directory).is_dir():
            return store
    return None


def unsupported_message(host_root: Path) -> str:
    known = "; ".join(f"{s.label}: /{s.directory} with {' '.join(s.command)}" for s in STORES)
    return (
        f"no supported OS trust store under {host_root} (looked for {known}); other "
        "systems are not supported: install the CA bundle by hand, or drop --system-trust"
    )


def file_name(trust: str, fingerprint: str) -> str:
    return f"dtrtrust-{trust}-{fingerprint.removeprefix('sha256:')[:16]}.crt"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def install(
    host_root: Path,
    trust: str,
    certificates: Sequence[tuple[str, bytes]],
    owned: Mapping[str, str],
    *,
    pending: bool = False,
    command_override: Sequence[str] | None = None,
) -> Result:
    """Make the OS store hold ``certificates`` ((fingerprint, PEM of one certificate))
    for ``trust``. ``owned`` are the files recorded for it before; ``pending`` says the
    last update command did not succeed. Raises OSError / WriterError for a host
    problem (the caller reports it)."""
    store = detect(host_root)
    if store is None:
        return Result(None, dict(owned), problem=unsupported_message(host_root))
    wanted = {f"{store.directory}/{file_name(trust, fp)}": pem for fp, pem in certificates}
    result = _sync(host_root, store, wanted, owned)
    return _update(host_root, store, result, pending, command_override)


def remove(
    host_root: Path,
    owned: Mapping[str, str],
    *,
    pending: bool = False,
    command_override: Sequence[str] | None = None,
) -> Result:
    """Remove the recorded files (only those still holding what was written)."""
    store = detect(host_root)
    result = _sync(host_root, store, {}, owned)
    if store is None:
        return result
    return _update(host_root, store, result, pending and bool(owned), command_override)


def _sync(
    host_root: Path, store: Store | None, wanted: Mapping[str, bytes], owned: Mapping[str, str]
) -> Result:
    result = Result(store)
    for rel, digest in sorted(owned.items()):
        if rel in wanted:
            continue
        current = fs.read_file(host_root, rel)
        if current is None:
            continue
        if _sha256(current) != digest:
            log.warning("%s was changed since dtrtrust wrote it; leaving it in place", rel)
            continue
        fs.remove_file(host_root, rel)
        log.info("removed %s", rel)
        result.removed.append(rel)
        result.changed = True
    for rel, pem in sorted(wanted.items()):
        current = fs.read_file(host_root, rel)
        if current is not None and rel not in owned and current != pem:
            result.problem = (
                f"/{rel} exists and was not written by dtrtrust; move it away and run "
                "apply again (it is left as it is)"
            )
            continue
        if fs.write_file(host_root, rel, pem, 0o644):
            log.info("wrote %s", rel)
            result.changed = True
        result.files[rel] = _sha256(pem)
    return result


def _update(
    host_root: Path,
    store: Store,
    result: Result,
    pending: bool,
    command_override: Sequence[str] | None,
) -> Result:
    if not (result.changed or pending):
        return result
    command = list(command_override or store.command)
    name = " ".join(store.command)
    if host_root != Path("/") and command_override is None:
        result.updated = False
        result.note = f"written under {host_root}; run {name} on that host"
        log.info("system trust %s", result.note)
        return result
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_UPDATE_TIMEOUT, check=False
        )
    except FileNotFoundError:
        result.updated = False
        result.problem = (
            f"{command[0]} is not installed, so the OS trust store was not rebuilt: install "
            f"the ca-certificates package and run apply again"
        )
        return result
    except (OSError, subprocess.TimeoutExpired) as exc:
        result.updated = False
        result.problem = f"{name} could not run ({exc}); run it by hand, then apply again"
        return result
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        why = f": {lines[-1][:200]}" if lines else ""
        result.updated = False
        result.problem = (
            f"{name} failed (exit {done.returncode}){why}; the files are in "
            f"/{store.directory} but the OS trust store was not rebuilt: fix that and run "
            "apply again"
        )
        return result
    log.info("ran %s", name)
    result.updated = None
    return result


__all__ = [
    "STORES",
    "Result",
    "Store",
    "detect",
    "file_name",
    "install",
    "remove",
    "unsupported_message",
]
