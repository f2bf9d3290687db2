"""containerd reads certs.d only with config_path, proven through its CRI PullImage (the
call the kubelet makes), and dtrtrust apply says NotEffective exactly then.

Our own containerd 1.6 (Debian's package): its own root, state and socket under a short
temporary directory, started in a private mount namespace where ``/etc/containerd`` is
the ``etc/containerd`` of the host root ``dtrtrust apply`` writes, so the daemon reads
exactly the config.toml and certs.d that apply checked and wrote, and the machine's
/etc/containerd is never touched. The CRI client is raw gRPC (grpcio) with the two
protobuf messages encoded by hand; the registry (tests/e2e/miniregistry.py) listens on
a veth address the test creates and requires a client certificate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import miniregistry
import pytest
from helpers import run_dtrtrust
from miniregistry import REPO, TAG, conditions, root_or_skip, trust_manifests, wait

from strictmode import require_binaries
from tlsserver import TLSServer

pytestmark = [pytest.mark.registry, pytest.mark.slow]

CONFIG_WITHOUT_CONFIG_PATH = """version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
CONFIG_PATH_LINES = """[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def pull_request(image: str) -> bytes:
    """PullImageRequest{image: ImageSpec{image}} (both field 1), the CRI's wire format."""
    return _field(1, _field(1, image.encode()))


@dataclass
class Containerd:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def pull(self, image: str) -> tuple[bool, str]:
        """CRI PullImage, as the kubelet calls it: (ok, image ref or the error)."""
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            call = channel.unary_unary("/runtime.v1.ImageService/PullImage")
            try:
                answer: bytes = call(pull_request(image), timeout=60)
            except grpc.RpcError as exc:
                return False, f"{exc.code()}: {exc.details()}"
        return True, answer.decode(errors="replace")


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    (root / "etc" / "containerd").mkdir(parents=True)
    return root


@pytest.fixture
def start_containerd(tmp_path: Path, host_root: Path) -> Iterator[object]:
    """start() -> a running containerd reading host_root/etc/containerd/config.toml as
    /etc/containerd/config.toml; each start stops the previous one (a config change
    needs a restart)."""
    root_or_skip()
    require_binaries("containerd", "unshare")
    # Short: unix socket paths are limited to 104 bytes (pytest's tmp paths are longer).
    run = Path(tempfile.mkdtemp(prefix="dtrt-ctrd-", dir="/tmp"))
    running: list[Containerd] = []

    def stop() -> None:
        for daemon in running:
            daemon.proc.terminate()
            try:
                daemon.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait(timeout=10)
        running.clear()

    def start(*, with_config_path: bool) -> Containerd:
        stop()
        sock = run / "c.sock"
        text = CONFIG_WITHOUT_CONFIG_PATH.format(root=run / "root", state=run / "state", sock=sock)
        if with_config_path:
            text += CONFIG_PATH_LINES
        (host_root / "etc/containerd/config.toml").write_text(text)
        log = tmp_path / f"containerd-{len(list(tmp_path.glob('containerd-*.log')))}.log"
        script = 'mount --bind "$1" /etc/containerd && shift && exec "$@"'
        cmd = [
            "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            str(host_root / "etc" / "containerd"),
            "containerd", "--config", "/etc/containerd/config.toml",
        ]  # fmt: skip
        env = os.environ | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        daemon = Containerd(proc, sock, log)
        running.append(daemon)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"containerd exited:\n{log.read_text()[-3000:]}", pytrace=False)
            return sock.exists() and "serving..." in log.read_text(errors="replace")

        wait(up, "containerd serving on its socket")
        return daemon

    try:
        yield start
    finally:
        stop()
        shutil.rmtree(run, ignore_errors=True)


# Not 127.0.0.1: containerd falls back to plain HTTP for localhost registries, which would
# hide what matters here (whether it read certs.d) behind an unrelated error.
address = miniregistry.veth_address


@pytest.fixture
def registry(address: str) -> Iterator[TLSServer]:
    with miniregistry.serve(address) as server:
        yield server


def test_containerd_cri_ignores_certs_d_without_config_path_and_uses_it_with_it(
    tmp_path: Path, host_root: Path, registry: TLSServer, start_containerd: object
) -> None:
    address = registry.address
    image = f"{address}/{REPO}:{TAG}"
    manifests = trust_manifests(tmp_path, address, ["containerd"])
    start = start_containerd

    # The config has a CRI section but no config_path: apply writes the files and says
    # NotEffective (exit 1); CRI PullImage does not use them (the registry CA is unknown to
    # it and no client certificate is sent).
    daemon = start(with_config_path=False)  # type: ignore[operator]
    result = run_dtrtrust("apply", "-f", manifests, "--host-root", host_root)
    assert result.returncode == 1, result.stdout + result.stderr
    synced = conditions(result.stdout)["NodesSynced"]
    assert synced["reason"] == "NotEffective"
    assert "config_path" in synced["message"]
    assert (host_root / "etc/containerd/certs.d" / address / "hosts.toml").is_file()
    with_cert = sum(r.client_cert is not None for r in registry.requests)  # apply's own probe
    ok, said = daemon.pull(image)
    assert not ok, said
    assert "x509" in said  # it used neither ca.crt nor the client pair
    assert sum(r.client_cert is not None for r in registry.requests) == with_cert

    # config_path set, containerd restarted: apply is Ready and the same PullImage works
    # with exactly the hosts.toml, ca.crt and client pair apply wrote.
    daemon = start(with_config_path=True)  # type: ignore[operator]
    result = run_dtrtrust("apply", "-f", manifests, "--host-root", host_root)
    assert result.returncode == 0, result.stdout + result.stderr
    with_cert = sum(r.client_cert is not None for r in registry.requests)
    ok, said = daemon.pull(image)
    assert ok, said
    assert "sha256:" in said
    assert sum(r.client_cert is not None for r in registry.requests) > with_cert
