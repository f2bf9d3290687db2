"""Node file layout: a pure function from a bundle to the files a node needs.

No I/O. The writer (``dtrtrust.writer``) applies the result under a host root.

INTERFACE (implemented by the files helper; keep names and signatures, extend freely):
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

TARGETS = ("docker", "containers", "containerd", "notary")

# Target -> certs.d-style root, relative to the host root. "notary" lives under a home.
TARGET_ROOTS = {
    "docker": "etc/docker/certs.d",
    "containers": "etc/containers/certs.d",
    "containerd": "etc/containerd/certs.d",
    "notary": "{home}/.docker/tls",
}


@dataclass(frozen=True)
class DesiredFile:
    name: str  # "ca.crt", "client.cert", "client.key", "hosts.toml"
    content: bytes
    mode: int  # 0o600 for keys, 0o644 otherwise


@dataclass(frozen=True)
class DesiredDir:
    """One address directory under one target root, with all its files.
    The writer commits a DesiredDir as a unit (never a cert without its key)."""
    target: str
    root: PurePosixPath  # relative to host root, e.g. etc/docker/certs.d
    address: str  # host or host:port, validated
    files: tuple[DesiredFile, ...]

    @property
    def path(self) -> PurePosixPath:
        return self.root / self.address


def validate_address(address: str) -> str:
    """host or host:port as in image references; lowercase DNS name or IPv4 (or
    [IPv6]); no '/', '..', empty labels, uppercase, > 253 chars, bad port.
    Raises ValueError with a clear message. Returns the address unchanged."""
    raise NotImplementedError


def desired_dirs(addresses: Sequence[str], targets: Sequence[str], ca_pem: bytes,
                 client: tuple[bytes, bytes] | None, *, home: str = "root") -> list[DesiredDir]:
    """Every (target, address) directory with its files. containerd gets a hosts.toml
    (tomli_w) with server = "https://<addr>" and a [host."https://<addr>"] table naming
    ca = "ca.crt" and client = [["client.cert", "client.key"]] relative to its dir."""
    raise NotImplementedError
