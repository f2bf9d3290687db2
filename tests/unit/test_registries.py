"""Registries besides DTR, against local stubs of their endpoints (real TLS servers):
DTR and MSR 2.9/3.x serve ``/ca`` and ``/basic_info``; Harbor-based MSR 4 serves its CA at
``/api/v2.0/systeminfo/getcert`` and has no ``/basic_info`` (and no client-certificate
authentication)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certfactory import make_ca, make_leaf
from dtrtrust.cli.inspect import healthy, inspect_registry, render
from dtrtrust.core.network import HARBOR_CA_PATH, VerifyError
from dtrtrust.net.fetch import fetch_ca
from dtrtrust.net.verify import verify_registry
from tlsserver import Response, TLSServer, basic_info_route, valid_now

ROOT = make_ca("registries Root CA")
SERVER = make_leaf("msr.test", ROOT, sans=["msr.test"], ip_sans=["127.0.0.1"], **valid_now())
CLIENT = make_leaf("registries client", ROOT, sans=[], eku=["clientAuth"], **valid_now())
PAIR = (CLIENT.cert_pem, CLIENT.key_pem)
# Harbor answers getcert as a file download.
GETCERT = Response(
    body=ROOT.cert_pem,
    headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="ca.crt"',
    },
)


def _serve(routes: dict[str, Response | object]) -> TLSServer:
    return TLSServer(
        chain_pem=SERVER.cert_pem,
        key_pem=SERVER.key_pem,
        routes=routes,  # type: ignore[arg-type]
        client_ca_pem=ROOT.cert_pem,
    )


@pytest.fixture
def msr3() -> Iterator[TLSServer]:
    with _serve({"/ca": Response(body=ROOT.cert_pem), "/basic_info": basic_info_route()}) as s:
        yield s


@pytest.fixture
def msr4() -> Iterator[TLSServer]:
    with _serve({HARBOR_CA_PATH: GETCERT, "/api/v2.0/systeminfo": Response.json({})}) as s:
        yield s


def _paste_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Pin ("))
    return [line.strip() for line in lines[start + 2 :] if line.strip()]


def test_dtr_and_msr3_inspect_prints_only_the_pin_for_the_default_ca_url(
    msr3: TLSServer,
) -> None:
    report = inspect_registry(msr3.address, PAIR, timeout=5)

    assert healthy(report)
    assert _paste_block(render(report)) == [f'pinnedSHA256: ["{ROOT.fingerprint}"]']


def test_msr4_inspect_by_address_finds_the_harbor_ca_and_prints_the_url_line(
    msr4: TLSServer,
) -> None:
    report = inspect_registry(msr4.address, None, timeout=5)

    assert report.ca_error is None
    assert report.verdict.ok
    assert _paste_block(render(report)) == [
        f"url: https://{msr4.address}{HARBOR_CA_PATH}",
        f'pinnedSHA256: ["{ROOT.fingerprint}"]',
    ]


def test_inspect_given_the_ca_url_prints_the_url_line_to_paste(msr4: TLSServer) -> None:
    url = f"https://{msr4.address}{HARBOR_CA_PATH}"

    report = inspect_registry(url, None, timeout=5)

    assert _paste_block(render(report))[0] == f"url: {url}"


def test_inspect_with_a_client_pair_against_msr4_explains_the_missing_basic_info(
    msr4: TLSServer,
) -> None:
    report = inspect_registry(msr4.address, PAIR, timeout=5)
    text = render(report)

    assert not healthy(report)
    assert "has no /basic_info (HTTP 404)" in text
    assert "Harbor-based MSR 4" in text
    assert "verify.clientAuth: false" in text
    assert "--client-cert-auth-ca" not in text  # no DTR-specific advice


def test_client_auth_verification_against_msr4_says_what_that_means_and_what_to_set(
    msr4: TLSServer,
) -> None:
    with pytest.raises(VerifyError) as info:
        verify_registry(msr4.address, ROOT.cert_pem, PAIR, probe_client_auth=True, timeout=5)

    assert info.value.reason == "ClientAuthRejected"
    assert "has no /basic_info (HTTP 404)" in info.value.message
    assert "set spec.verify.clientAuth: false" in info.value.message
    assert "--client-cert-auth-ca" not in info.value.message


def test_msr4_trust_works_with_the_getcert_url_pinned_and_client_auth_off(
    msr4: TLSServer,
) -> None:
    fetched = fetch_ca(
        f"https://{msr4.address}{HARBOR_CA_PATH}",
        pins=(ROOT.fingerprint,),
        insecure_skip_pinning=False,
        timeout=5,
    )
    result = verify_registry(msr4.address, fetched.pem, PAIR, probe_client_auth=False, timeout=5)

    assert fetched.pem == ROOT.cert_pem
    assert result.chain[0] == SERVER.subject


def test_a_missing_ca_endpoint_names_where_each_registry_serves_it(msr4: TLSServer) -> None:
    from dtrtrust.core.network import FetchError

    with pytest.raises(FetchError) as info:
        fetch_ca(
            f"https://{msr4.address}/ca", pins=(ROOT.fingerprint,), insecure_skip_pinning=False
        )

    assert "HTTP 404" in info.value.message
    assert HARBOR_CA_PATH in info.value.message
