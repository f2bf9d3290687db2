"""Helpers of the end-to-end tests that run ``dtrtrust`` exactly as a user would.

``dtrtrust`` runs as a real subprocess (the venv's console script), reads manifests from
files and writes under a temporary ``--host-root``; real clients (skopeo, ctr, openssl) then
use exactly the files it wrote. Nothing here imports the product: what a test sees is what a
user would see.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtrstack import Stack, Tool

#: The console script installed next to the interpreter running the tests (.venv/bin/dtrtrust).
DTRTRUST = Path(sys.executable).with_name("dtrtrust")
#: ``--home`` given to apply: a path on the host, so its notary files land under the host root.
HOME = "/home/node"
ALL_TARGETS = ("docker", "containers", "containerd", "notary")
#: The targets whose clients read certs.d for the stack's loopback address. dockerd does not
#: (every 127.0.0.0/8 registry is insecure to it), so apply rightly reports docker
#: NotEffective there; dockerd is proven on a non-loopback address in test_real_dockerd.py.
LOOPBACK_TARGETS = ("containers", "containerd", "notary")
#: What a node set up as the README asks has in /etc/containerd/config.toml.
CONTAINERD_CONFIG = (
    'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
    '  config_path = "/etc/containerd/certs.d"\n'
)
CLIENT_SECRET = "node-client"
UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
FORBIDDEN = "403 (Forbidden)"
#: Condition types every apply reports (ClientCertificateValid only with a client certificate).
CONDITION_TYPES = (
    "CAAvailable",
    "BundleValid",
    "RegistryVerified",
    "NodesSynced",
    "NodesVerified",  # the probe with exactly the files written (verify.nodes, default on)
    "Ready",
)


def run_dtrtrust(
    *args: str | Path, timeout: float = 60, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    """Run ``dtrtrust ARGS`` and return the result; a traceback on stderr fails the test.

    A user must never see a traceback, whatever went wrong, so every call checks it.
    """
    assert DTRTRUST.exists(), f"{DTRTRUST} missing: run `make .venv/.installed`"
    env = os.environ | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("DTRTRUST_DEBUG", None)
    result = subprocess.run(
        [str(DTRTRUST), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        umask=umask,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


# --------------------------------------------------------------------------- manifests


def trust(
    name: str,
    registry: str,
    *,
    pins: Sequence[str] | None = (),
    fetch_url: str | None = None,
    fetch: bool = True,
    pem: str | None = None,
    client: bool = True,
    targets: Sequence[str] = LOOPBACK_TARGETS,
    verify: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """A DTRTrust manifest. ``pins=None`` leaves pinnedSHA256 out (an unpinned fetch)."""
    ca: dict[str, Any] = {}
    if fetch:
        spec_fetch: dict[str, Any] = {}
        if fetch_url:
            spec_fetch["url"] = fetch_url
        if pins is not None:
            spec_fetch["pinnedSHA256"] = list(pins)
        ca["fetch"] = spec_fetch
    if pem is not None:
        ca["pem"] = pem
    spec: dict[str, Any] = {"registry": registry, "ca": ca, "targets": list(targets)}
    if client:
        spec["clientCertificate"] = {"secretRef": {"name": CLIENT_SECRET}}
    if verify is not None:
        spec["verify"] = dict(verify)
    return {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": name},
        "spec": spec,
    }


def pinned_trust(stack: Stack, name: str, address: str | None = None, **kw: Any) -> dict[str, Any]:
    """A DTRTrust that fetches the stack's /ca pinned to its root, as `make demo` writes it."""
    kw.setdefault("pins", [stack.root_sha256])
    return trust(name, address or stack.address, **kw)


def tls_secret(cert: Path, key: Path, name: str = CLIENT_SECRET) -> dict[str, Any]:
    """The node's client pair as `kubectl create secret tls` would make it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "dtrtrust-system"},
        "stringData": {"tls.crt": cert.read_text(), "tls.key": key.read_text()},
    }


def write_manifest(path: Path, *docs: Mapping[str, Any]) -> Path:
    """Write ``docs`` as one multi-document YAML file, 0600 (it may hold a key)."""
    path.write_text(yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- status


def status(stdout: str, name: str | None = None) -> dict[str, Any]:
    """The status of trust ``name`` (or of the only trust) from apply's YAML output."""
    docs = [d for d in yaml.safe_load_all(stdout) if d]
    if name is not None:
        docs = [d for d in docs if d["metadata"]["name"] == name]
    assert len(docs) == 1, stdout
    result: dict[str, Any] = docs[0]["status"]
    return result


def conditions(stdout: str, name: str | None = None) -> dict[str, dict[str, Any]]:
    """type -> condition, from apply's YAML output."""
    return {c["type"]: c for c in status(stdout, name)["conditions"]}


def condition(stdout: str, kind: str) -> tuple[str, str]:
    """(status, reason) of condition ``kind``."""
    found = conditions(stdout).get(kind)
    assert found is not None, f"no {kind} condition in:\n{stdout}"
    return found["status"], found["reason"]


# --------------------------------------------------------------------------- the host


@dataclass(frozen=True)
class FileState:
    """What a reader could notice about a file: content, mode, identity and modification."""

    data: bytes
    mode: int
    inode: int
    mtime_ns: int


@dataclass(frozen=True)
class Host:
    """A temporary host root that ``dtrtrust apply --host-root`` writes into."""

    root: Path
    home: str = HOME

    def apply(
        self, manifest: Path, *extra: str | Path, umask: int = -1
    ) -> subprocess.CompletedProcess[str]:
        return run_dtrtrust(
            "apply",
            "-f",
            manifest,
            "--host-root",
            self.root,
            "--home",
            self.home,
            *extra,
            umask=umask,
        )

    def delete(self, manifest: Path) -> subprocess.CompletedProcess[str]:
        return run_dtrtrust(
            "apply", "--delete", "-f", manifest, "--host-root", self.root, "--home", self.home
        )

    def cert_dir(self, target: str, address: str) -> Path:
        """Where ``target``'s files for ``address`` go (the fixed layout of DESIGN.md)."""
        bases = {
            "docker": self.root / "etc/docker/certs.d",
            "containers": self.root / "etc/containers/certs.d",
            "containerd": self.root / "etc/containerd/certs.d",
            "notary": self.root / self.home.strip("/") / ".docker/tls",
        }
        return bases[target] / address

    @property
    def hosts_dir(self) -> Path:
        """containerd's ``--hosts-dir``."""
        return self.root / "etc/containerd/certs.d"

    def node_files(self) -> dict[str, FileState]:
        """Every file a client could read (under etc/ and the home), by path under the root;
        containerd's config.toml (new_host's setup, never written by dtrtrust) aside."""
        found: dict[str, FileState] = {}
        for top in (self.root / "etc", self.root / self.home.strip("/")):
            if not top.exists():
                continue
            for path in sorted(top.rglob("*")):
                if path.is_file() and path != self.root / "etc/containerd/config.toml":
                    st = path.lstat()
                    found[str(path.relative_to(self.root))] = FileState(
                        path.read_bytes(), st.st_mode & 0o7777, st.st_ino, st.st_mtime_ns
                    )
        return found


def new_host(tmp_path: Path) -> Host:
    root = tmp_path / "host"
    root.mkdir()  # stands for the host's /, which always exists
    # containerd configured to read /etc/containerd/certs.d, as on a prepared node.
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_CONFIG)
    return Host(root)


# --------------------------------------------------------------------------- certificates


def sha256_fingerprints(pem: bytes) -> set[str]:
    """``sha256:<hex>`` of the DER of every certificate in ``pem``."""
    return {
        "sha256:" + hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
        for c in x509.load_pem_x509_certificates(pem)
    }


def fingerprint(path: Path) -> str:
    (only,) = sha256_fingerprints(path.read_bytes())
    return only


def public_key_der(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_public_key_der(cert_pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------- real clients


def skopeo_policy(directory: Path) -> Path:
    """A signature policy that accepts anything (the test image is unsigned)."""
    policy = directory / "policy.json"
    if not policy.exists():
        policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}\n')
    return policy


def skopeo_inspect(skopeo: Tool, cert_dir: Path, ref: str) -> subprocess.CompletedProcess[str]:
    return skopeo.run("inspect", "--cert-dir", cert_dir, f"docker://{ref}")


def skopeo_pull(
    skopeo: Tool, cert_dir: Path, ref: str, work: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, bytes]]:
    """``skopeo copy`` the image into an OCI layout; return the result and its layer's files."""
    dest = work / "pulled"
    result = skopeo.run(
        "--policy",
        skopeo_policy(work),
        "copy",
        "--quiet",
        "--src-cert-dir",
        cert_dir,
        f"docker://{ref}",
        f"oci:{dest}:pulled",
        timeout=60,
    )
    if result.returncode != 0:
        return result, {}
    return result, layer_files(dest)


def layer_files(layout: Path) -> dict[str, bytes]:
    """name -> content of the regular files in the first layer of an OCI layout's image."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    files: dict[str, bytes] = {}
    with tarfile.open(layer) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            if data is not None:
                files[member.name] = data.read()
    return files


def ctr_fetch_manifest(ctr: Tool, hosts_dir: Path, ref: str) -> subprocess.CompletedProcess[str]:
    """containerd, no daemon: resolve and fetch the manifest through ``hosts_dir``'s hosts.toml."""
    return ctr.run("content", "fetch-object", "--hosts-dir", hosts_dir, ref)
