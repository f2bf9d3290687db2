"""The insecure-registry rule with the real dockerd: it ignores certs.d for a registry it
treats as insecure, and dtrtrust apply says NotEffective exactly then.

dockerd treats every loopback address as insecure, so the registry listens on a
non-loopback address: one end of a veth pair this test creates (a /30 in 10.213.0.0/16,
the other end inside a network namespace of its own); nothing else is reachable. dockerd
is our own instance (its own data-root, exec-root, pidfile and socket under tmp_path, no
iptables, no bridge), started in a private mount namespace where ``/etc/docker`` is the
``etc/docker`` of the host root ``dtrtrust apply`` writes: the daemon reads exactly the
files apply wrote, and the machine's /etc/docker is never touched. The registry is a
small one on tests/tlsserver.py that requires a client certificate issued by the test CA.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_dtrtrust

from certfactory import make_ca, make_leaf
from conftest import STRICT, require_binaries
from tlsserver import Response, TLSServer, valid_now

pytestmark = [pytest.mark.registry, pytest.mark.slow]

DOCKER = "/usr/bin/docker"
REPO, TAG = "dtrtrust/demo", "1"
BOUNDED_WAIT = 60.0


def _wait(check: Any, what: str, deadline: float = BOUNDED_WAIT) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {deadline:.0f} s", pytrace=False)


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("the real-dockerd test needs root (network and mount namespaces)")
        pytest.skip("needs root (network and mount namespaces)")


# ------------------------------------------------------------------------- the network


@pytest.fixture
def address() -> Iterator[str]:
    """A non-loopback address of this host on a veth pair created here (and removed)."""
    _root_or_skip()
    require_binaries("ip", "unshare", "dockerd")
    tag = f"{random.randrange(16**6):06x}"
    netns, here, there = f"dtrt-{tag}", f"dtrt{tag}a", f"dtrt{tag}b"
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    subnets = [n for n in range(0, 256, 4) if f"10.213.{n // 4}." not in used]
    third = random.choice(subnets) // 4
    mine, peer = f"10.213.{third}.1", f"10.213.{third}.2"
    steps = [
        ["ip", "netns", "add", netns],
        ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
        ["ip", "link", "set", there, "netns", netns],
        ["ip", "addr", "add", f"{mine}/30", "dev", here],
        ["ip", "link", "set", here, "up"],
        ["ip", "-n", netns, "addr", "add", f"{peer}/30", "dev", there],
        ["ip", "-n", netns, "link", "set", there, "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield mine
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


# ------------------------------------------------------------------------ the registry

ROOT = make_ca("dockerd test root")
CLIENT = make_leaf("dockerd test node", ROOT, sans=[], eku=["clientAuth"], **valid_now())


def _image() -> dict[str, tuple[str, bytes]]:
    """A one-layer docker schema2 image: path -> (media type, bytes)."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tar:
        body = b"pulled through certs.d\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(body), 0
        tar.addfile(info, io.BytesIO(body))
    layer_tar = tar_buf.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(layer_tar)}"]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": f"sha256:{_sha(config)}",
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": f"sha256:{_sha(layer)}",
                }
            ],
        }
    ).encode()
    kind = "application/vnd.docker.distribution.manifest.v2+json"
    return {
        f"/v2/{REPO}/manifests/{TAG}": (kind, manifest),
        f"/v2/{REPO}/manifests/sha256:{_sha(manifest)}": (kind, manifest),
        f"/v2/{REPO}/blobs/sha256:{_sha(config)}": ("application/octet-stream", config),
        f"/v2/{REPO}/blobs/sha256:{_sha(layer)}": ("application/octet-stream", layer),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(address: str) -> Iterator[TLSServer]:
    leaf = make_leaf("dockerd test registry", ROOT, sans=[], ip_sans=[address], **valid_now())
    api = {"Docker-Distribution-API-Version": "registry/2.0"}
    routes: dict[str, Any] = {"/v2/": Response(body=b"{}", headers=api)}
    for path, (kind, data) in _image().items():
        digest = f"sha256:{_sha(data)}"
        headers = {**api, "Content-Type": kind, "Docker-Content-Digest": digest}
        routes[path] = Response(body=data, headers=headers)
    with TLSServer(
        chain_pem=leaf.chain_pem,
        key_pem=leaf.key_pem,
        routes=routes,
        client_ca_pem=ROOT.cert_pem,
        require_client_cert=True,
        host=address,
    ) as server:
        yield server


# -------------------------------------------------------------------------- the daemon


@dataclass
class Dockerd:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKER, "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ | {"DOCKER_CONFIG": str(self.socket.parent / "client"), "NO_PROXY": "*"},
            check=False,
        )

    def reload(self) -> None:
        """SIGHUP: dockerd reads daemon.json again (insecure-registries is reloadable)."""
        os.kill(self.proc.pid, signal.SIGHUP)


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    (root / "etc" / "docker").mkdir(parents=True)
    (root / "etc" / "docker" / "daemon.json").write_text("{}\n")
    return root


@pytest.fixture
def dockerd(tmp_path: Path, host_root: Path) -> Iterator[Dockerd]:
    _root_or_skip()
    # Short: containerd's sockets live under the exec-root, and a unix socket path is
    # limited to 104 bytes (pytest's tmp paths are longer).
    run = Path(tempfile.mkdtemp(prefix="dtrt-dockerd-", dir="/tmp"))
    sock, log = run / "docker.sock", tmp_path / "dockerd.log"
    script = 'mount --bind "$1" /etc/docker && shift && exec "$@"'
    cmd = [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
        str(host_root / "etc" / "docker"),
        "dockerd",
        "--data-root", str(run / "data"),
        "--exec-root", str(run / "exec"),
        "--pidfile", str(run / "dockerd.pid"),
        "--host", f"unix://{sock}",
        "--config-file", "/etc/docker/daemon.json",
        "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false",
        "--storage-driver", "vfs",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    daemon = Dockerd(proc, sock, log)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited:\n{log.read_text()[-3000:]}", pytrace=False)
            return sock.exists() and daemon.docker("version", timeout=10).returncode == 0

        _wait(up, "dockerd answering on its socket")
        yield daemon
    finally:
        # exec: the PID we started is dockerd itself; it stops its managed containerd.
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(run, ignore_errors=True)


def _manifests(tmp_path: Path, address: str) -> Path:
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "node-client"},
            "data": {
                "tls.crt": base64.b64encode(CLIENT.chain_pem).decode(),
                "tls.key": base64.b64encode(CLIENT.key_pem).decode(),
            },
        },
        {
            "apiVersion": "dtrtrust.io/v1alpha1",
            "kind": "DTRTrust",
            "metadata": {"name": "dockerd"},
            "spec": {
                "registry": address,
                "ca": {"pem": ROOT.cert_pem.decode()},
                "clientCertificate": {"secretRef": {"name": "node-client"}},
                "targets": ["docker"],
                # This registry has no DTR /basic_info; the node probe falls back to /v2/.
                "verify": {"tls": True, "clientAuth": False},
            },
        },
    ]
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _conditions(stdout: str) -> dict[str, dict[str, str]]:
    [doc] = list(yaml.safe_load_all(stdout))
    return {c["type"]: c for c in doc["status"]["conditions"]}


def test_dockerd_uses_certs_d_for_a_secure_registry_and_ignores_it_for_an_insecure_one(
    tmp_path: Path, host_root: Path, registry: TLSServer, dockerd: Dockerd
) -> None:
    address = registry.address
    image = f"{address}/{REPO}:{TAG}"
    manifests = _manifests(tmp_path, address)

    # Secure (daemon.json without insecure-registries): apply is Ready, dockerd pulls with
    # the client certificate from /etc/docker/certs.d/<address>/.
    result = run_dtrtrust("apply", "-f", manifests, "--host-root", host_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (host_root / "etc/docker/certs.d" / address / "client.cert").is_file()
    pulled = dockerd.docker("pull", image)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert any(r.client_cert is not None for r in registry.requests)
    assert dockerd.docker("rmi", image).returncode == 0

    # The admin lists the registry as insecure and reloads dockerd: apply says
    # NotEffective (exit 1), and dockerd, which now skips certs.d, is refused.
    daemon_json = host_root / "etc/docker/daemon.json"
    daemon_json.write_text(json.dumps({"insecure-registries": [address]}) + "\n")
    result = run_dtrtrust("apply", "-f", manifests, "--host-root", host_root)
    assert result.returncode == 1, result.stdout + result.stderr
    synced = _conditions(result.stdout)["NodesSynced"]
    assert synced["reason"] == "NotEffective"
    assert "/etc/docker/daemon.json" in synced["message"]
    dockerd.reload()
    _wait(lambda: address in dockerd.docker("info").stdout, "dockerd reloaded daemon.json")
    with_cert = sum(r.client_cert is not None for r in registry.requests)
    refused = dockerd.docker("pull", image)
    assert refused.returncode != 0, refused.stdout
    assert sum(r.client_cert is not None for r in registry.requests) == with_cert
    assert (host_root / "etc/docker/certs.d" / address / "client.cert").is_file()
