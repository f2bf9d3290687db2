"""The agent's per-node probe (standard library only) against real TLS servers on
127.0.0.1, with the files laid out as the agent writes them."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfactory import make_ca, make_leaf
from dtrtrust.node.probe import probe
from tlsserver import Response, TLSServer, basic_info_route, valid_now

ROOT = make_ca("probe Root CA")
INTER = make_ca("probe Intermediate CA", parent=ROOT, path_length=0)
SERVER = make_leaf(
    "registry.test",
    INTER,
    sans=["registry.test", "localhost"],
    ip_sans=["127.0.0.1"],
    **valid_now(),
)
WRONG_NAME = make_leaf("other.test", INTER, sans=["other.test"], **valid_now())
CLIENT = make_leaf("probe node client", INTER, sans=[], eku=["clientAuth"], **valid_now())
ROGUE_ROOT = make_ca("probe Rogue Root CA")
ROGUE = make_leaf("probe rogue client", ROGUE_ROOT, sans=[], eku=["clientAuth"], **valid_now())


def files(tmp_path: Path, *, ca: bytes = ROOT.cert_pem, client: object = CLIENT) -> Path:
    d = tmp_path / "certs.d" / "addr"
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(ca)
    if client is not None:
        (d / "client.cert").write_bytes(client.chain_pem)  # type: ignore[attr-defined]
        (d / "client.key").write_bytes(client.key_pem)  # type: ignore[attr-defined]
    return d


def serve(leaf: object = SERVER, **kwargs: object) -> TLSServer:
    return TLSServer(
        chain_pem=leaf.chain_pem,  # type: ignore[attr-defined]
        key_pem=leaf.key_pem,  # type: ignore[attr-defined]
        routes={"/basic_info": basic_info_route()},
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def dtr() -> Iterator[TLSServer]:
    with serve(client_ca_pem=ROOT.cert_pem) as server:
        yield server


def test_probe_with_the_written_files_passes_and_the_client_cert_is_accepted(
    dtr: TLSServer, tmp_path: Path
) -> None:
    got = probe(dtr.address, files(tmp_path), with_client=True)
    assert got.ok, got.message
    assert (got.reachable, got.tls_verified, got.client_certificate) == (True, True, "Accepted")
    assert dtr.requests[-1].client_cert is not None


def test_intermediate_alone_in_ca_crt_anchors_the_chain_as_in_go(
    dtr: TLSServer, tmp_path: Path
) -> None:
    got = probe(dtr.address, files(tmp_path, ca=INTER.cert_pem), with_client=True)
    assert got.ok, got.message


def test_unrelated_ca_is_unknown_authority(dtr: TLSServer, tmp_path: Path) -> None:
    got = probe(dtr.address, files(tmp_path, ca=ROGUE_ROOT.cert_pem), with_client=True)
    assert (got.reason, got.reachable, got.tls_verified) == ("UnknownAuthority", True, False)


def test_name_not_in_the_sans_is_hostname_mismatch(tmp_path: Path) -> None:
    with serve(WRONG_NAME) as server:
        got = probe(server.address, files(tmp_path, client=None), with_client=False)
    assert got.reason == "HostnameMismatch"


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_rogue_client_certificate_is_rejected(tmp_path: Path, version: ssl.TLSVersion) -> None:
    with serve(client_ca_pem=ROOT.cert_pem, require_client_cert=True, maximum_version=version) as s:
        got = probe(s.address, files(tmp_path, client=ROGUE), with_client=True)
    assert got.reason == "ClientAuthRejected"
    assert got.tls_verified
    key_lines = [line for line in ROGUE.key_pem.decode().splitlines() if "-----" not in line]
    assert all(line not in got.message for line in key_lines)


def test_registry_that_ignores_the_client_certificate_is_rejected(tmp_path: Path) -> None:
    with serve() as server:  # never asks for a client certificate: AuthnMethod absent
        got = probe(server.address, files(tmp_path), with_client=True)
    assert got.reason == "ClientAuthRejected"
    assert "AuthnMethod" in got.message


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_without_a_client_pair_a_registry_requiring_one_is_named(
    tmp_path: Path, version: ssl.TLSVersion
) -> None:
    with serve(client_ca_pem=ROOT.cert_pem, require_client_cert=True, maximum_version=version) as s:
        got = probe(s.address, files(tmp_path, client=None), with_client=False)
    assert got.reason == "ClientAuthRejected"
    assert "spec.clientCertificate" in got.message


def test_without_a_client_pair_a_registry_not_requiring_one_passes(tmp_path: Path) -> None:
    with serve() as server:
        server.routes["/v2/"] = lambda request: Response.json({})
        got = probe(server.address, files(tmp_path, client=None), with_client=False)
    assert got.ok, got.message
    assert got.client_certificate == "NotConfigured"


def test_plain_registry_without_basic_info_accepts_the_pair_on_v2(tmp_path: Path) -> None:
    with serve(client_ca_pem=ROOT.cert_pem, require_client_cert=True) as server:
        server.routes = {"/v2/": lambda request: Response.json({})}
        got = probe(server.address, files(tmp_path), with_client=True)
    assert got.ok, got.message
    assert got.client_certificate == "Accepted"


def test_closed_port_is_unreachable_never_fine(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got = probe(f"127.0.0.1:{port}", files(tmp_path), with_client=True, timeout=2)
    assert (got.reachable, got.reason) == (False, "Unreachable")
    assert "spec.verify.nodes: false" in got.message


def test_missing_files_are_reported_not_raised(tmp_path: Path) -> None:
    got = probe("127.0.0.1:1", tmp_path / "nowhere", with_client=True)
    assert got.reason == "InvalidCertificate"


@pytest.mark.parametrize("status", [401, 403])
def test_without_a_client_pair_an_anonymous_refusal_is_named_but_not_a_failure(
    tmp_path: Path, status: int
) -> None:
    with serve() as server:
        server.routes["/v2/"] = lambda request: Response.json({}, status=status)
        got = probe(server.address, files(tmp_path, client=None), with_client=False)
    assert got.ok
    assert f"HTTP {status}" in got.message
    assert "spec.clientCertificate" in got.message
