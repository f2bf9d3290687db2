"""A minimal registry (and the shared steps) for the real-daemon tests.

One docker schema2 image served by tests/tlsserver.py, requiring a client certificate
issued by ROOT. Enough for dockerd's and containerd's pull (``/v2/``, the manifest by
tag and digest, two blobs)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from certfactory import make_ca, make_leaf
from strictmode import STRICT, require_binaries
from tlsserver import Response, TLSServer, valid_now

REPO, TAG = "dtrtrust/demo", "1"
ROOT = make_ca("real-daemon test root")
CLIENT = make_leaf("real-daemon test node", ROOT, sans=[], eku=["clientAuth"], **valid_now())
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image() -> dict[str, tuple[str, bytes]]:
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
            "mediaType": MANIFEST_V2,
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
    return {
        f"/v2/{REPO}/manifests/{TAG}": (MANIFEST_V2, manifest),
        f"/v2/{REPO}/manifests/sha256:{_sha(manifest)}": (MANIFEST_V2, manifest),
        f"/v2/{REPO}/blobs/sha256:{_sha(config)}": ("application/octet-stream", config),
        f"/v2/{REPO}/blobs/sha256:{_sha(layer)}": ("application/octet-stream", layer),
    }


def serve(host: str) -> TLSServer:
    """The registry on ``host`` (a free port), its certificate valid for that IP."""
    leaf = make_leaf("real-daemon test registry", ROOT, sans=[], ip_sans=[host], **valid_now())
    api = {"Docker-Distribution-API-Version": "registry/2.0"}
    routes: dict[str, Any] = {"/v2/": Response(body=b"{}", headers=api)}
    for path, (kind, data) in image().items():
        headers = {**api, "Content-Type": kind, "Docker-Content-Digest": f"sha256:{_sha(data)}"}
        routes[path] = Response(body=data, headers=headers)
    return TLSServer(
        chain_pem=leaf.chain_pem,
        key_pem=leaf.key_pem,
        routes=routes,
        client_ca_pem=ROOT.cert_pem,
        require_client_cert=True,
        host=host,
    )


BOUNDED_WAIT = 60.0


def wait(check: Any, what: str, deadline: float = BOUNDED_WAIT) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {deadline:.0f} s", pytrace=False)


def root_or_skip() -> None:
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("the real-daemon tests need root (network and mount namespaces)")
        pytest.skip("needs root (network and mount namespaces)")


def trust_manifests(tmp_path: Path, address: str, targets: list[str]) -> Path:
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
            "metadata": {"name": "real-daemon"},
            "spec": {
                "registry": address,
                "ca": {"pem": ROOT.cert_pem.decode()},
                "clientCertificate": {"secretRef": {"name": "node-client"}},
                "targets": targets,
                # This registry has no DTR /basic_info; the node probe falls back to /v2/.
                "verify": {"tls": True, "clientAuth": False},
            },
        },
    ]
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def conditions(stdout: str) -> dict[str, dict[str, str]]:
    [doc] = list(yaml.safe_load_all(stdout))
    return {c["type"]: c for c in doc["status"]["conditions"]}


@pytest.fixture
def veth_address() -> Iterator[str]:
    """A non-loopback address of this host on a veth pair created here (and removed)."""
    root_or_skip()
    require_binaries("ip")
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
