"""inspect_registry + render against real local TLS servers: what an admin reads."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from certfactory import Issued, make_ca, make_leaf
from dtrtrust.cli.inspect import healthy, inspect_registry, render
from dtrtrust.core.chain import hostname_matches
from tlsserver import Response, TLSServer, basic_info_route, valid_now

ROOT = make_ca("inspect Root CA")
INTER = make_ca("inspect Intermediate CA", parent=ROOT, path_length=0)
SERVER = make_leaf(
    "registry.test",
    INTER,
    sans=["registry.test", "localhost"],
    ip_sans=["127.0.0.1"],
    **valid_now(),
)
CLIENT = make_leaf("inspect node client", INTER, sans=[], eku=["clientAuth"], **valid_now())
CLIENT_PAIR = (CLIENT.chain_pem, CLIENT.key_pem)


def serve(
    server: Issued = SERVER, *, send_intermediate: bool = True, ca: bytes = ROOT.cert_pem
) -> TLSServer:
    chain = server.chain_pem if send_intermediate else server.cert_pem
    return TLSServer(
        chain_pem=chain,
        key_pem=server.key_pem,
        client_ca_pem=ROOT.cert_pem,
        routes={"/ca": Response(body=ca), "/basic_info": basic_info_route()},
    )


@pytest.fixture
def registry() -> Iterator[TLSServer]:
    with serve() as server:
        yield server


def test_healthy_registry_report_shows_ca_chain_checks_and_pin_line(registry: TLSServer) -> None:
    report = inspect_registry(registry.address, CLIENT_PAIR, timeout=5)
    text = render(report)

    assert healthy(report)
    assert [c.summary.sha256 for c in report.ca_certificates] == [ROOT.fingerprint]
    assert [c.summary.subject for c in report.served_chain] == [SERVER.subject, INTER.subject]
    assert report.hostname.ok
    assert report.chain.ok
    assert report.verdict.ok
    assert f'pinnedSHA256: ["{ROOT.fingerprint}"]' in text
    assert SERVER.fingerprint in text
    assert INTER.fingerprint in text
    assert "registry.test, localhost, 127.0.0.1" in text
    assert "without a client certificate: AuthnMethod none" in text
    assert "with the client certificate: AuthnMethod TLSClientCertificate" in text
    assert "FAIL" not in text


def test_url_with_scheme_is_accepted_and_ca_url_derived(registry: TLSServer) -> None:
    report = inspect_registry(f"https://{registry.address}/", None, timeout=5)

    assert report.registry == registry.address
    assert report.ca_url == registry.url("/ca")
    assert report.ca_error is None


def test_without_client_pair_the_report_says_how_to_test_client_auth(registry: TLSServer) -> None:
    report = inspect_registry(registry.address, None, timeout=5)

    assert healthy(report)
    assert "--client-cert" in render(report)


def test_missing_intermediate_says_it_must_be_added_via_ca_pem() -> None:
    with serve(send_intermediate=False) as server:
        report = inspect_registry(server.address, None, timeout=5)
    text = render(report)

    assert not healthy(report)
    assert report.chain.ok is False
    assert INTER.subject in report.chain.message
    assert "this intermediate is missing; add it to the trust's ca.pem" in text
    assert "UnknownAuthority" in text


def test_hostname_mismatch_lists_the_valid_names() -> None:
    leaf = make_leaf(
        "inspect other", INTER, sans=["other.test"], ip_sans=["10.0.0.9"], **valid_now()
    )
    with serve(leaf) as server:
        report = inspect_registry(server.address, None, timeout=5)

    assert report.hostname.ok is False
    assert "valid for other.test, 10.0.0.9, not 127.0.0.1" in render(report)
    assert not healthy(report)


def test_rejected_client_certificate_is_a_failure() -> None:
    rogue_root = make_ca("inspect Rogue Root CA")
    rogue = make_leaf(
        "inspect rogue client", rogue_root, sans=[], eku=["clientAuth"], **valid_now()
    )
    with serve() as server:
        report = inspect_registry(server.address, (rogue.cert_pem, rogue.key_pem), timeout=5)

    assert not healthy(report)
    assert "FAIL  /basic_info with the client certificate" in render(report)


def test_html_at_ca_is_reported_and_no_pin_is_offered() -> None:
    with serve(ca=b"<html>login</html>") as server:
        report = inspect_registry(server.address, None, timeout=5)
    text = render(report)

    assert "returned HTML" in text
    assert report.pin_line is None
    assert "Pin: none" in text


def test_unreachable_registry_is_reported_not_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = inspect_registry(f"127.0.0.1:{port}", None, timeout=2)
    text = render(report)

    assert not healthy(report)
    assert "connection refused" in text
    assert report.served_chain == ()


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("registry.test", "registry.test", True),
        ("Registry.Test", "registry.test", True),
        ("*.example.com", "dtr.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("10.0.0.9", "10.0.0.9", True),
        ("*.0.0.9", "10.0.0.9", False),
        ("other.test", "registry.test", False),
    ],
)
def test_name_matching_follows_go(pattern: str, host: str, matches: bool) -> None:
    assert hostname_matches(host, [pattern]) is matches
