"""The test bed itself behaves like DTR, proven with real clients only (curl, openssl, skopeo, ctr).

These tests do not use dtrtrust: they make sure that when a dtrtrust end-to-end test passes or
fails, it is because of the files dtrtrust wrote, not because of the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import dtrstack
from dtrstack import Stack, Tool

pytestmark = pytest.mark.registry

UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"


def _curl_status(curl: Tool, url: str, *args: str | Path) -> tuple[int, str]:
    """HTTP status and body of a GET; status 0 when the TLS handshake failed."""
    result = curl.run("-sS", "-o", "-", "-w", "\n%{http_code}", *args, url)
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), body


def _cert_dir(path: Path, ca: list[Path], pair: tuple[Path, Path] | None) -> Path:
    """A docker-style cert dir: ca.crt (the given PEMs concatenated), client.cert, client.key."""
    path.mkdir(parents=True)
    (path / "ca.crt").write_bytes(b"".join(p.read_bytes() for p in ca))
    if pair is not None:
        (path / "client.cert").write_bytes(pair[0].read_bytes())
        (path / "client.key").write_bytes(pair[1].read_bytes())
        (path / "client.key").chmod(0o600)
    return path


def test_ca_endpoint_serves_the_root_without_a_client_certificate(
    dtr_stack: Stack, curl: Tool
) -> None:
    status, body = _curl_status(curl, dtr_stack.url("/ca"), "--cacert", dtr_stack.root_ca)

    assert status == 200
    assert body.encode() == dtr_stack.root_ca.read_bytes()
    der = x509.load_pem_x509_certificate(body.encode()).public_bytes(serialization.Encoding.DER)
    assert dtr_stack.root_sha256 == "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(
    ("pair", "expect_status", "expect_authn"),
    [
        ("client", 200, "TLSClientCertificate"),
        (None, 401, "none"),
        # nginx's `ssl_verify_client optional` answers 400 to a certificate it cannot verify.
        ("rogue", 400, None),
    ],
)
def test_basic_info_reports_tls_client_certificate_only_for_the_trusted_client_pair(
    dtr_stack: Stack,
    curl: Tool,
    pair: str | None,
    expect_status: int,
    expect_authn: str | None,
) -> None:
    args: list[str | Path] = ["--cacert", dtr_stack.root_ca]
    if pair == "client":
        args += ["--cert", dtr_stack.client_cert, "--key", dtr_stack.client_key]
    elif pair == "rogue":
        args += ["--cert", dtr_stack.rogue_cert, "--key", dtr_stack.rogue_key]

    status, body = _curl_status(curl, dtr_stack.url("/basic_info"), *args)

    assert status == expect_status
    if expect_authn is None:
        assert "TLSClientCertificate" not in body
    else:
        info = json.loads(body)
        assert info["User"]["AuthnMethod"] == expect_authn
        assert info["CurrentVersion"]
        assert info["User"]["name"] == (dtrstack.CLIENT_CN if pair else "")


def test_registry_api_is_forbidden_without_a_client_certificate(
    dtr_stack: Stack, curl: Tool
) -> None:
    anonymous, _ = _curl_status(curl, dtr_stack.url("/v2/"), "--cacert", dtr_stack.root_ca)
    verified, tags = _curl_status(
        curl,
        dtr_stack.url(f"/v2/{dtr_stack.image_repository}/tags/list"),
        *("--cacert", dtr_stack.root_ca),
        *("--cert", dtr_stack.client_cert, "--key", dtr_stack.client_key),
    )

    assert anonymous == 403
    assert verified == 200
    assert json.loads(tags)["tags"] == [dtr_stack.image_tag]


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", dtrstack.SERVER_NAME])
def test_server_certificate_is_valid_for_every_advertised_name(
    dtr_stack: Stack, curl: Tool, name: str
) -> None:
    address = f"{name}:{dtr_stack.port}"
    status, _ = _curl_status(
        curl,
        dtr_stack.url("/ca", address),
        *("--cacert", dtr_stack.root_ca, "--resolve", f"{address}:127.0.0.1"),
    )

    assert status == 200


@pytest.mark.parametrize(("port_attr", "expected_certs"), [("port", 2), ("leaf_only_port", 1)])
def test_full_chain_port_sends_the_intermediate_and_leaf_only_port_does_not(
    dtr_stack: Stack, openssl: Tool, port_attr: str, expected_certs: int
) -> None:
    port = getattr(dtr_stack, port_attr)
    result = openssl.run("s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", timeout=10)

    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == expected_certs


@pytest.mark.parametrize(
    ("case", "ca", "pair", "leaf_only", "error"),
    [
        ("bundle, full chain", ["root_ca", "intermediate_ca"], "client", False, None),
        ("root only, full chain", ["root_ca"], "client", False, None),
        ("root only, leaf only", ["root_ca"], "client", True, UNKNOWN_AUTHORITY),
        ("bundle, leaf only", ["root_ca", "intermediate_ca"], "client", True, None),
        ("no client pair", ["root_ca", "intermediate_ca"], None, False, "403 (Forbidden)"),
        # Go does not offer a certificate whose issuer the server did not ask for.
        ("rogue pair", ["root_ca", "intermediate_ca"], "rogue", False, "403 (Forbidden)"),
    ],
)
def test_skopeo_pulls_only_with_a_trusted_chain_and_client_pair(
    dtr_stack: Stack,
    skopeo: Tool,
    tmp_path: Path,
    case: str,
    ca: list[str],
    pair: str | None,
    leaf_only: bool,
    error: str | None,
) -> None:
    pairs = {
        "client": (dtr_stack.client_cert, dtr_stack.client_key),
        "rogue": (dtr_stack.rogue_cert, dtr_stack.rogue_key),
    }
    certs = _cert_dir(
        tmp_path / "certs", [getattr(dtr_stack, a) for a in ca], pairs[pair] if pair else None
    )
    address = dtr_stack.leaf_only_address if leaf_only else dtr_stack.address

    result = skopeo.run("inspect", "--cert-dir", certs, f"docker://{dtr_stack.image_ref(address)}")

    if error is None:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["RepoTags"] == [dtr_stack.image_tag]
    else:
        assert result.returncode != 0
        assert error in result.stderr


def _hosts_toml(address: str) -> str:
    return (
        f'server = "https://{address}"\n\n'
        f'[host."https://{address}"]\n'
        'capabilities = ["pull", "resolve"]\n'
        'ca = "ca.crt"\n'
        'client = [["client.cert", "client.key"]]\n'
    )


@pytest.mark.parametrize("with_hosts_toml", [True, False])
def test_containerd_fetches_the_manifest_only_through_a_hosts_toml(
    dtr_stack: Stack, ctr: Tool, tmp_path: Path, with_hosts_toml: bool
) -> None:
    hosts_dir = tmp_path / "certs.d"
    host = _cert_dir(
        hosts_dir / dtr_stack.address,
        [dtr_stack.root_ca, dtr_stack.intermediate_ca],
        (dtr_stack.client_cert, dtr_stack.client_key),
    )
    if with_hosts_toml:
        (host / "hosts.toml").write_text(_hosts_toml(dtr_stack.address))

    result = ctr.run("content", "fetch-object", "--hosts-dir", hosts_dir, dtr_stack.image_ref())

    if with_hosts_toml:
        assert result.returncode == 0, result.stderr
        manifest = json.loads(result.stdout)
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert len(manifest["layers"]) == 1
    else:
        # Without hosts.toml containerd speaks plain HTTP to 127.x and nginx answers 400.
        assert result.returncode != 0
        assert "400 Bad Request" in result.stderr


def test_command_line_start_and_stop_leave_no_process_behind(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    # dtr_stack first: it makes sure the binaries are there (or skips / fails with the reason).
    script = Path(dtrstack.__file__)
    started = subprocess.run(
        [sys.executable, script, "start", "--dir", tmp_path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout)
    pids = list(state["pids"].values())
    try:
        assert all(dtrstack._alive(pid) for pid in pids)
        assert (tmp_path / dtrstack.STATE_FILE).exists()

        stopped = subprocess.run(
            [sys.executable, script, "stop", "--dir", tmp_path],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert stopped.returncode == 0, stopped.stderr
        assert not any(dtrstack._alive(pid) for pid in pids)
        assert not (tmp_path / dtrstack.STATE_FILE).exists()
    finally:
        for pid in pids:
            if dtrstack._alive(pid):
                os.kill(pid, signal.SIGKILL)
