"""verify_registry against real local TLS servers, mapped the way docker reports it."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfactory import Issued, make_ca, make_leaf
from dtrtrust.core.network import CLIENT_CERT_AUTHN, VerifyError
from dtrtrust.net.verify import authn_method_of, verify_registry
from tlsserver import SilentServer, TLSServer, basic_info_route, ipv6_loopback_available, valid_now

ROOT = make_ca("verify Root CA")
INTER = make_ca("verify Intermediate CA", parent=ROOT, path_length=0)
SERVER = make_leaf(
    "registry.test",
    INTER,
    sans=["registry.test", "localhost"],
    ip_sans=["127.0.0.1"],
    **valid_now(),
)
CLIENT = make_leaf("verify node client", INTER, sans=[], eku=["clientAuth"], **valid_now())
ROGUE_ROOT = make_ca("verify Rogue Root CA")
ROGUE_CLIENT = make_leaf(
    "verify rogue client", ROGUE_ROOT, sans=[], eku=["clientAuth"], **valid_now()
)

CLIENT_PAIR = (CLIENT.chain_pem, CLIENT.key_pem)
ROGUE_PAIR = (ROGUE_CLIENT.cert_pem, ROGUE_CLIENT.key_pem)


def serve(
    server: Issued = SERVER, *, send_intermediate: bool = True, **kwargs: object
) -> TLSServer:
    chain = server.chain_pem if send_intermediate else server.cert_pem
    routes = {"/basic_info": basic_info_route()}
    return TLSServer(chain_pem=chain, key_pem=server.key_pem, routes=routes, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Iterator[TLSServer]:
    with serve(client_ca_pem=ROOT.cert_pem) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- chain and name -----------------------------------------------------------------------


def test_chain_sent_with_intermediate_validates_against_the_root(registry: TLSServer) -> None:
    result = verify_registry(registry.address, ROOT.cert_pem, None, probe_client_auth=False)

    assert result.chain == (SERVER.subject, INTER.subject, ROOT.subject)
    assert result.authn_method is None


def test_address_by_dns_name_is_checked_against_dns_sans(registry: TLSServer) -> None:
    result = verify_registry(
        f"localhost:{registry.port}", ROOT.cert_pem, None, probe_client_auth=False
    )

    assert result.chain[0] == SERVER.subject


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_registry_address_in_brackets_is_verified_against_ip_sans() -> None:
    leaf = make_leaf("verify v6", INTER, sans=[], ip_sans=["::1"], **valid_now())
    with serve(leaf, host="::1") as server:
        result = verify_registry(server.address, ROOT.cert_pem, None, probe_client_auth=False)

    assert server.address.startswith("[::1]:")
    assert result.chain[0] == leaf.subject


def test_missing_intermediate_is_unknown_authority_naming_the_issuer() -> None:
    with serve(send_intermediate=False) as server, pytest.raises(VerifyError) as caught:
        verify_registry(server.address, ROOT.cert_pem, None, probe_client_auth=False)

    assert caught.value.reason == "UnknownAuthority"
    assert "signed by unknown authority" in caught.value.message
    assert INTER.subject in caught.value.message
    assert "add the intermediate to ca.pem" in caught.value.message


def test_intermediate_in_the_bundle_repairs_a_server_that_omits_it() -> None:
    with serve(send_intermediate=False) as server:
        result = verify_registry(
            server.address, ROOT.cert_pem + INTER.cert_pem, None, probe_client_auth=False
        )

    # Every bundle certificate is a trust anchor (as in Go): the chain ends at the
    # first one reached.
    assert result.chain == (SERVER.subject, INTER.subject)


def test_intermediate_alone_in_the_bundle_anchors_the_chain_as_in_go() -> None:
    with serve(send_intermediate=False) as server:
        result = verify_registry(server.address, INTER.cert_pem, None, probe_client_auth=False)

    assert result.chain == (SERVER.subject, INTER.subject)


def test_unrelated_root_is_unknown_authority_naming_the_missing_ca(registry: TLSServer) -> None:
    with pytest.raises(VerifyError) as caught:
        verify_registry(registry.address, ROGUE_ROOT.cert_pem, None, probe_client_auth=False)

    assert caught.value.reason == "UnknownAuthority"
    assert ROOT.subject in caught.value.message


def test_san_mismatch_names_the_names_the_certificate_is_valid_for() -> None:
    leaf = make_leaf(
        "verify other.test",
        INTER,
        sans=["other.test", "localhost"],
        ip_sans=["10.0.0.9"],
        **valid_now(),
    )
    with serve(leaf) as server, pytest.raises(VerifyError) as caught:
        verify_registry(server.address, ROOT.cert_pem, None, probe_client_auth=False)

    assert caught.value.reason == "HostnameMismatch"
    assert (
        "certificate is valid for other.test, localhost, 10.0.0.9, not 127.0.0.1"
        in caught.value.message
    )
    assert "add the address to the certificate's SANs" in caught.value.message


def test_common_name_only_certificate_is_rejected_like_go() -> None:
    leaf = make_leaf("localhost", INTER, sans=[], **valid_now())
    with serve(leaf) as server, pytest.raises(VerifyError) as caught:
        verify_registry(f"localhost:{server.port}", ROOT.cert_pem, None, probe_client_auth=False)

    assert caught.value.reason == "HostnameMismatch"
    assert "legacy Common Name 'localhost'" in caught.value.message
    assert "subjectAltName" in caught.value.message


def test_expired_server_certificate_is_reported_as_invalid() -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    leaf = make_leaf(
        "verify expired",
        INTER,
        sans=["localhost"],
        ip_sans=["127.0.0.1"],
        not_before=now - dt.timedelta(days=60),
        not_after=now - dt.timedelta(days=1),
    )
    with serve(leaf) as server, pytest.raises(VerifyError) as caught:
        verify_registry(server.address, ROOT.cert_pem, None, probe_client_auth=False)

    assert caught.value.reason == "InvalidCertificate"
    assert "expired" in caught.value.message


# --- reachability -------------------------------------------------------------------------


def test_closed_port_is_unreachable_with_a_short_cause() -> None:
    with pytest.raises(VerifyError) as caught:
        verify_registry(f"127.0.0.1:{closed_port()}", ROOT.cert_pem, None, probe_client_auth=False)

    assert caught.value.reason == "Unreachable"
    assert "connection refused" in caught.value.message


def test_registry_that_hangs_is_unreachable_after_the_timeout() -> None:
    with SilentServer() as silent:
        started = time.monotonic()
        with pytest.raises(VerifyError) as caught:
            verify_registry(
                silent.address, ROOT.cert_pem, None, probe_client_auth=False, timeout=0.5
            )

    assert caught.value.reason == "Unreachable"
    assert "timed out after 0.5s" in caught.value.message
    assert time.monotonic() - started < 1.5


# --- client certificate authentication ----------------------------------------------------


def test_client_certificate_accepted_reports_tls_client_certificate(registry: TLSServer) -> None:
    result = verify_registry(registry.address, ROOT.cert_pem, CLIENT_PAIR, probe_client_auth=True)

    assert result.authn_method == CLIENT_CERT_AUTHN
    assert registry.requests[-1].client_cert is not None


def test_authn_method_nested_under_user_is_found() -> None:
    with serve(client_ca_pem=ROOT.cert_pem) as server:
        server.routes["/basic_info"] = basic_info_route(nested=True)
        result = verify_registry(server.address, ROOT.cert_pem, CLIENT_PAIR, probe_client_auth=True)

    assert result.authn_method == CLIENT_CERT_AUTHN


def test_probe_without_a_client_pair_leaves_the_decision_to_the_caller(
    registry: TLSServer,
) -> None:
    result = verify_registry(registry.address, ROOT.cert_pem, None, probe_client_auth=True)

    assert result.authn_method is None
    assert registry.requests == []


@pytest.mark.parametrize(
    ("anonymous", "reported"),
    [(None, "AuthnMethod none"), ("password", 'AuthnMethod "password"')],
)
def test_client_certificate_not_used_by_the_registry_is_rejected(
    anonymous: str | None, reported: str
) -> None:
    # The registry does not ask for client certificates at all: /basic_info reports
    # no (or password) authentication.
    with serve() as server:
        server.routes["/basic_info"] = basic_info_route(anonymous=anonymous)
        with pytest.raises(VerifyError) as caught:
            verify_registry(server.address, ROOT.cert_pem, CLIENT_PAIR, probe_client_auth=True)

    assert caught.value.reason == "ClientAuthRejected"
    assert reported in caught.value.message
    assert "--client-cert-auth-ca" in caught.value.message


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_rogue_client_certificate_is_rejected_without_leaking_the_key(
    version: ssl.TLSVersion,
) -> None:
    with (
        serve(client_ca_pem=ROOT.cert_pem, maximum_version=version) as server,
        pytest.raises(VerifyError) as caught,
    ):
        verify_registry(server.address, ROOT.cert_pem, ROGUE_PAIR, probe_client_auth=True)

    assert caught.value.reason == "ClientAuthRejected"
    assert "client" in caught.value.message
    key_lines = [line for line in ROGUE_CLIENT.key_pem.decode().splitlines() if "-----" not in line]
    assert all(line not in caught.value.message for line in key_lines)


def test_client_key_files_are_private_and_removed_after_use(
    registry: TLSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[tuple[str, int]] = []
    real_load = ssl.SSLContext.load_cert_chain

    def recording_load(self: ssl.SSLContext, certfile: str, keyfile: str | None = None) -> None:
        for path in (certfile, keyfile):
            assert path is not None
            seen.append((path, os.stat(path).st_mode & 0o777))
        seen.append((os.path.dirname(certfile), os.stat(os.path.dirname(certfile)).st_mode & 0o777))
        real_load(self, certfile, keyfile)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", recording_load)
    verify_registry(registry.address, ROOT.cert_pem, CLIENT_PAIR, probe_client_auth=True)

    assert [mode for _, mode in seen] == [0o600, 0o600, 0o700]
    assert list(tmp_path.iterdir()) == []


def test_unusable_client_pair_is_reported_without_key_material(registry: TLSServer) -> None:
    mismatched = (CLIENT.cert_pem, ROGUE_CLIENT.key_pem)
    with pytest.raises(VerifyError) as caught:
        verify_registry(registry.address, ROOT.cert_pem, mismatched, probe_client_auth=True)

    assert caught.value.reason == "ClientAuthRejected"
    assert "key belongs to the certificate" in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"AuthnMethod": "TLSClientCertificate"}', "TLSClientCertificate"),
        (b'{"User": {"name": "admin", "AuthnMethod": "password"}}', "password"),
        (b'{"AuthnMethod": ""}', None),
        (b'{"User": null}', None),
        (b"[]", None),
        (b"<html>", None),
    ],
)
def test_authn_method_is_read_from_top_level_or_user(body: bytes, expected: str | None) -> None:
    assert authn_method_of(body) == expected
