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

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import miniregistry
import pytest
from helpers import run_dtrtrust
from miniregistry import REPO, TAG, conditions, root_or_skip, trust_manifests, wait

from tlsserver import TLSServer

pytestmark = [pytest.mark.registry, pytest.mark.slow]

DOCKER = "/usr/bin/docker"


# ------------------------------------------------------------------------- the network


# A non-loopback address on a veth pair this test creates (dockerd's loopback rule).
address = miniregistry.veth_address


# ------------------------------------------------------------------------ the registry


@pytest.fixture
def registry(address: str) -> Iterator[TLSServer]:
    with miniregistry.serve(address) as server:
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
    root_or_skip()
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

        wait(up, "dockerd answering on its socket")
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


def test_dockerd_uses_certs_d_for_a_secure_registry_and_ignores_it_for_an_insecure_one(
    tmp_path: Path, host_root: Path, registry: TLSServer, dockerd: Dockerd
) -> None:
    address = registry.address
    image = f"{address}/{REPO}:{TAG}"
    manifests = trust_manifests(tmp_path, address, ["docker"])

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
    synced = conditions(result.stdout)["NodesSynced"]
    assert synced["reason"] == "NotEffective"
    assert "/etc/docker/daemon.json" in synced["message"]
    dockerd.reload()
    wait(lambda: address in dockerd.docker("info").stdout, "dockerd reloaded daemon.json")
    with_cert = sum(r.client_cert is not None for r in registry.requests)
    refused = dockerd.docker("pull", image)
    assert refused.returncode != 0, refused.stdout
    assert sum(r.client_cert is not None for r in registry.requests) == with_cert
    assert (host_root / "etc/docker/certs.d" / address / "client.cert").is_file()
