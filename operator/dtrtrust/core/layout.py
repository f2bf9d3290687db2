"""Node file layout: a pure function from a bundle to the files a node needs.

No I/O. The writer (``dtrtrust.node.writer``) applies the result under a host root.

The layout is **fixed** by DESIGN.md ("Node files"): per target and per address one
directory holding ``ca.crt`` and, with a client certificate, ``client.cert`` and
``client.key``; containerd's directory also gets a ``hosts.toml`` that names those
files by paths relative to its own directory. containerd resolves relative ``ca`` and
``client`` paths against the directory holding ``hosts.toml`` (``makeAbsPath(p,
baseDir)`` in ``remotes/docker/config/hosts.go``) and accepts ``client`` as a list of
``[cert, key]`` pairs, so the files work wherever the directory is mounted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import tomli_w

from dtrtrust.contract import (
    CA_FILE,
    CLIENT_CERT_FILE,
    CLIENT_KEY_FILE,
    HOSTS_TOML_FILE,
    TARGETS,
)
from dtrtrust.core.addresses import validate_address

# Target -> certs.d-style root, relative to the host root. "notary" lives under a home.
TARGET_ROOTS = {
    "docker": "etc/docker/certs.d",
    "containers": "etc/containers/certs.d",
    "containerd": "etc/containerd/certs.d",
    "notary": "{home}/.docker/tls",
}

# Every file name the layout can produce; the writer refuses anything else.
FILE_NAMES = (CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, HOSTS_TOML_FILE)

KEY_MODE = 0o600
FILE_MODE = 0o644
DIR_MODE = 0o755

# What containerd may do with the registry: everything a client-cert DTR allows.
HOSTS_CAPABILITIES = ("pull", "resolve", "push")


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


def validate_home(home: str) -> PurePosixPath:
    """A home directory relative to the host root (``root``, ``home/alice``)."""
    path = PurePosixPath(home)
    if not home or path.is_absolute():
        raise ValueError(
            f"home {home!r} must be a path relative to the host root, e.g. 'root' or 'home/alice'"
        )
    if any(part in ("", ".", "..") for part in home.split("/")):
        raise ValueError(f"home {home!r} must not contain '.', '..' or empty parts")
    return path


def target_root(target: str, *, home: str = "root") -> PurePosixPath:
    """The directory under the host root that holds ``target``'s address directories."""
    if target not in TARGET_ROOTS:
        raise ValueError(f"unknown target {target!r}; use any of {', '.join(TARGETS)}")
    if target == "notary":
        return validate_home(home) / ".docker" / "tls"
    return PurePosixPath(TARGET_ROOTS[target])


def hosts_toml(address: str, *, client: bool) -> bytes:
    """containerd's hosts.toml for ``address``: paths relative to its own directory."""
    url = f"https://{validate_address(address)}"
    host: dict[str, object] = {"capabilities": list(HOSTS_CAPABILITIES), "ca": CA_FILE}
    if client:
        host["client"] = [[CLIENT_CERT_FILE, CLIENT_KEY_FILE]]
    return tomli_w.dumps({"server": url, "host": {url: host}}).encode()


def desired_dirs(
    addresses: Sequence[str],
    targets: Sequence[str],
    ca_pem: bytes,
    client: tuple[bytes, bytes] | None,
    *,
    home: str = "root",
) -> list[DesiredDir]:
    """Every (target, address) directory with its files. containerd gets a hosts.toml
    (tomli_w) with server = "https://<addr>" and a [host."https://<addr>"] table naming
    ca = "ca.crt" and client = [["client.cert", "client.key"]] relative to its dir.

    Duplicate addresses and targets are dropped (first one wins), so the result is a
    deterministic function of the inputs."""
    if not ca_pem:
        raise ValueError("the CA bundle is empty; nothing to install")
    if client is not None and (not client[0] or not client[1]):
        raise ValueError("the client certificate and its key must both be non-empty")
    unique_addresses = list(dict.fromkeys(validate_address(a) for a in addresses))
    if not unique_addresses:
        raise ValueError("no registry address given")
    unique_targets = list(dict.fromkeys(targets))
    roots = {t: target_root(t, home=home) for t in unique_targets}

    common = [DesiredFile(CA_FILE, ca_pem, FILE_MODE)]
    if client is not None:
        common.append(DesiredFile(CLIENT_CERT_FILE, client[0], FILE_MODE))
        common.append(DesiredFile(CLIENT_KEY_FILE, client[1], KEY_MODE))

    result: list[DesiredDir] = []
    for target in unique_targets:
        for address in unique_addresses:
            files = list(common)
            if target == "containerd":
                toml = hosts_toml(address, client=client is not None)
                files.append(DesiredFile(HOSTS_TOML_FILE, toml, FILE_MODE))
            result.append(DesiredDir(target, roots[target], address, tuple(files)))
    return result
