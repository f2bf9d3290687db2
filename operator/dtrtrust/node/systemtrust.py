"""The OS trust store (``dtrtrust apply --system-trust``): Debian/Ubuntu layout."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger("dtrtrust.systemtrust")

SYSTEM_TRUST_DIR = "usr/local/share/ca-certificates"


def install(host_root: Path, trust: str, ca_pem: bytes) -> list[str]:
    """Install ``ca_pem`` for ``trust``; returns the files it owns, relative to the root."""
    return _sync(host_root, trust, ca_pem)


def remove(host_root: Path, trust: str) -> list[str]:
    return _sync(host_root, trust, None)


def _sync(host_root: Path, trust: str, ca_pem: bytes | None) -> list[str]:
    """Install (or with ca_pem None remove) the bundle in the Debian/Ubuntu trust store.
    Returns the files it now owns, relative to the host root."""
    directory = host_root / SYSTEM_TRUST_DIR
    prefix = f"dtrtrust-{trust}"
    owned = sorted(directory.glob(f"{prefix}*.crt")) if directory.is_dir() else []
    want: dict[str, bytes] = {}
    if ca_pem is not None:
        blocks = [b for b in ca_pem.split(b"-----END CERTIFICATE-----") if b.strip()]
        for i, block in enumerate(blocks):
            want[f"{prefix}-{i}.crt"] = block.strip() + b"\n-----END CERTIFICATE-----\n"
    changed = False
    for path in owned:
        if path.name not in want:
            path.unlink()
            changed = True
    if want:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    for fname, content in want.items():
        path = directory / fname
        if path.exists() and path.read_bytes() == content:
            continue
        tmp = path.with_name(f".{fname}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(0o644)
        os.replace(tmp, path)
        changed = True
    if changed and host_root == Path("/"):
        subprocess.run(["update-ca-certificates"], check=False, capture_output=True)
    elif changed:
        log.info(
            "system trust written under %s; run update-ca-certificates on that host", host_root
        )
    return [str(Path(SYSTEM_TRUST_DIR) / f) for f in want]
