"""fetch_ca against real local TLS servers: pins, body checks, redirects, deadlines."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from certfactory import Issued, make_ca, make_leaf
from dtrtrust.core.addresses import split_address
from dtrtrust.core.fingerprints import pin_line
from dtrtrust.core.network import FetchError
from dtrtrust.net.fetch import fetch_ca
from tlsserver import Response, SilentServer, TLSServer, ipv6_loopback_available, valid_now

ROOT = make_ca("fetch Root CA")
OTHER_ROOT = make_ca("fetch Other Root CA")
INTER = make_ca("fetch Intermediate CA", parent=ROOT, path_length=0)
SERVER = make_leaf(
    "registry.test",
    INTER,
    sans=["registry.test", "localhost"],
    ip_sans=["127.0.0.1"],
    **valid_now(),
)


def serve(routes: dict[str, Response], server: Issued = SERVER, **kwargs: object) -> TLSServer:
    return TLSServer(chain_pem=server.chain_pem, key_pem=server.key_pem, routes=routes, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Iterator[TLSServer]:
    with serve({"/ca": Response(body=ROOT.cert_pem)}) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- pins ---------------------------------------------------------------------------------


def test_pinned_fetch_returns_the_pinned_certificate(registry: TLSServer) -> None:
    got = fetch_ca(registry.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert got.pinned
    assert got.pem == ROOT.cert_pem
    assert got.fingerprints == (ROOT.fingerprint,)
    assert got.accepted == (ROOT.fingerprint,)


def test_openssl_form_pin_is_accepted(registry: TLSServer) -> None:
    got = fetch_ca(
        registry.url("/ca"), pins=(ROOT.openssl_fingerprint.lower(),), insecure_skip_pinning=False
    )

    assert got.accepted == (ROOT.fingerprint,)


def test_only_pinned_certificates_are_returned_so_extra_roots_cannot_be_smuggled_in() -> None:
    body = OTHER_ROOT.cert_pem + ROOT.cert_pem
    with serve({"/ca": Response(body=body)}) as server:
        got = fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert got.pem == ROOT.cert_pem
    assert got.fingerprints == (OTHER_ROOT.fingerprint, ROOT.fingerprint)
    assert got.accepted == (ROOT.fingerprint,)


def test_wrong_pin_is_refused_listing_the_served_fingerprints(registry: TLSServer) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_ca(registry.url("/ca"), pins=(OTHER_ROOT.fingerprint,), insecure_skip_pinning=False)

    assert caught.value.reason == "FingerprintMismatch"
    assert ROOT.fingerprint in caught.value.message
    assert "CN=fetch Root CA" in caught.value.message
    assert "update pinnedSHA256" in caught.value.message


def test_unpinned_fetch_is_refused_with_the_pin_line_to_paste(registry: TLSServer) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_ca(registry.url("/ca"), pins=(), insecure_skip_pinning=False)

    assert caught.value.reason == "Unpinned"
    assert f'pinnedSHA256: ["{ROOT.fingerprint}"]' in caught.value.message
    assert "insecureSkipPinning: true" in caught.value.message


def test_unpinned_fetch_is_allowed_with_insecure_skip_pinning(registry: TLSServer) -> None:
    got = fetch_ca(registry.url("/ca"), pins=(), insecure_skip_pinning=True)

    assert not got.pinned
    assert got.pem == ROOT.cert_pem


def test_pins_are_enforced_even_with_insecure_skip_pinning(registry: TLSServer) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_ca(registry.url("/ca"), pins=(OTHER_ROOT.fingerprint,), insecure_skip_pinning=True)

    assert caught.value.reason == "FingerprintMismatch"


def test_malformed_pin_is_rejected_before_any_connection() -> None:
    url = f"https://127.0.0.1:{closed_port()}/ca"
    with pytest.raises(FetchError) as caught:
        fetch_ca(url, pins=("sha256:abc",), insecure_skip_pinning=False)

    assert caught.value.reason == "InvalidFingerprint"
    assert "pinnedSHA256" in caught.value.message


def test_pin_line_is_valid_yaml_flow_list() -> None:
    assert pin_line(["sha256:aa", "sha256:bb"]) == 'pinnedSHA256: ["sha256:aa", "sha256:bb"]'


# --- what the body must be ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reason", "expected"),
    [
        pytest.param(
            Response(
                body=b"<!DOCTYPE html><html><body>Login</body></html>",
                headers={"Content-Type": "text/html"},
            ),
            "FetchFailed",
            "returned HTML, not a PEM certificate",
            id="html-login-page",
        ),
        pytest.param(
            Response(body=b"  <html>sign in</html>"),
            "FetchFailed",
            "returned HTML",
            id="html-without-content-type",
        ),
        pytest.param(Response(body=b""), "FetchFailed", "empty body", id="empty"),
        pytest.param(Response(body=ROOT.der), "InvalidPEM", "DER", id="der-instead-of-pem"),
        pytest.param(
            Response(body=b"hello\n" + ROOT.cert_pem), "InvalidPEM", "", id="garbage-before-pem"
        ),
        pytest.param(
            Response(status=404, body=b"404 page not found"),
            "FetchFailed",
            "answered HTTP 404",
            id="not-found",
        ),
        pytest.param(
            Response(status=503, body=b"down"), "FetchFailed", "answered HTTP 503", id="unavailable"
        ),
    ],
)
def test_body_that_is_not_pem_certificates_is_refused(
    response: Response, reason: str, expected: str
) -> None:
    with serve({"/ca": response}) as server, pytest.raises(FetchError) as caught:
        fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert caught.value.reason == reason
    assert expected in caught.value.message


def test_private_key_in_ca_body_is_rejected_without_echoing_it() -> None:
    key_pem = SERVER.key_pem
    key_body = b"".join(line for line in key_pem.splitlines() if not line.startswith(b"-----"))
    with (
        serve({"/ca": Response(body=ROOT.cert_pem + key_pem)}) as server,
        pytest.raises(FetchError) as caught,
    ):
        fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert caught.value.reason == "InvalidPEM"
    assert key_body[:24].decode() not in caught.value.message
    assert key_body[:24].decode() not in str(caught.value)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(Response(body=b"A" * 5000), id="announced-length-over-cap"),
        pytest.param(Response(body=b"A" * 5000, close_delimited=True), id="streamed-over-cap"),
    ],
)
def test_oversized_body_is_refused_naming_the_cap(response: Response) -> None:
    with serve({"/ca": response}) as server, pytest.raises(FetchError) as caught:
        fetch_ca(server.url("/ca"), pins=(), insecure_skip_pinning=True, max_bytes=4096)

    assert caught.value.reason == "FetchFailed"
    assert "more than 4096 bytes" in caught.value.message


def test_body_exactly_at_the_cap_is_accepted() -> None:
    body = ROOT.cert_pem
    with serve({"/ca": Response(body=body, close_delimited=True)}) as server:
        got = fetch_ca(server.url("/ca"), pins=(), insecure_skip_pinning=True, max_bytes=len(body))

    assert got.pem == ROOT.cert_pem


# --- redirects ----------------------------------------------------------------------------


def test_same_host_redirect_is_followed() -> None:
    routes = {"/ca": Response.redirect("/api/v0/ca"), "/api/v0/ca": Response(body=ROOT.cert_pem)}
    with serve(routes) as server:
        got = fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert got.pem == ROOT.cert_pem
    assert got.final_url == server.url("/api/v0/ca")


def test_redirect_to_another_port_of_the_same_host_is_followed() -> None:
    with (
        serve({"/ca": Response(body=ROOT.cert_pem)}) as target,
        serve({"/ca": Response.redirect(target.url("/ca"), 301)}) as front,
    ):
        got = fetch_ca(front.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert got.final_url == target.url("/ca")


@pytest.mark.parametrize("other_host", ["localhost", "127.0.0.2"])
def test_cross_host_redirect_is_refused_telling_to_set_the_final_url(other_host: str) -> None:
    with serve({"/ca": Response(body=ROOT.cert_pem)}) as server:
        server.routes["/start"] = Response.redirect(server.url("/ca", host=other_host))
        with pytest.raises(FetchError) as caught:
            fetch_ca(server.url("/start"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert caught.value.reason == "FetchFailed"
    assert "refused the cross-host redirect" in caught.value.message
    assert "ca.fetch.url" in caught.value.message
    assert [r.path for r in server.requests] == ["/start"]


def test_redirect_from_https_to_plain_http_is_refused() -> None:
    with serve({}) as server:
        server.routes["/ca"] = Response.redirect(server.url("/plain", scheme="http"))
        with pytest.raises(FetchError) as caught:
            fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert "leaves https" in caught.value.message


def test_more_than_three_redirects_are_refused() -> None:
    routes = {f"/r{i}": Response.redirect(f"/r{i + 1}") for i in range(5)}
    routes["/r5"] = Response(body=ROOT.cert_pem)
    with serve(routes) as server:
        with pytest.raises(FetchError) as caught:
            fetch_ca(server.url("/r1"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)
        assert len(server.requests) == 4  # the first request and three redirects

    assert "redirected more than 3 times" in caught.value.message


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_url_is_fetched() -> None:
    with serve({"/ca": Response(body=ROOT.cert_pem)}, host="::1") as server:
        got = fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert got.url.startswith("https://[::1]:")
    assert got.pem == ROOT.cert_pem
    assert server.requests[0].headers["Host"] == f"[::1]:{server.port}"


def test_three_redirects_are_followed() -> None:
    routes = {f"/r{i}": Response.redirect(f"/r{i + 1}") for i in range(1, 4)}
    routes["/r4"] = Response(body=ROOT.cert_pem)
    with serve(routes) as server:
        got = fetch_ca(server.url("/r1"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert got.final_url.endswith("/r4")


# --- transport ----------------------------------------------------------------------------


def test_plain_http_is_used_only_when_the_url_says_http() -> None:
    with serve({"/ca": Response(body=ROOT.cert_pem)}, tls=False) as server:
        got = fetch_ca(server.url("/ca"), pins=(ROOT.fingerprint,), insecure_skip_pinning=False)
        with pytest.raises(FetchError) as caught:
            fetch_ca(
                server.url("/ca", scheme="https"),
                pins=(ROOT.fingerprint,),
                insecure_skip_pinning=False,
                timeout=2,
            )

    assert got.pem == ROOT.cert_pem
    assert "does not speak TLS" in caught.value.message


def test_other_schemes_are_refused() -> None:
    with pytest.raises(FetchError) as caught:
        fetch_ca("ftp://registry.test/ca", pins=(), insecure_skip_pinning=True)

    assert "https://" in caught.value.message


def test_slow_dribbling_server_hits_the_total_deadline() -> None:
    # One byte every 50 ms: each read succeeds well within the timeout, so only a
    # deadline over the whole response can stop it.
    slow = Response(body=ROOT.cert_pem, dribble=0.05)
    with serve({"/ca": slow}) as server:
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetch_ca(server.url("/ca"), pins=(), insecure_skip_pinning=True, timeout=1)
        elapsed = time.monotonic() - started

    assert caught.value.reason == "FetchFailed"
    assert "timed out after 1s" in caught.value.message
    assert elapsed < 2.0


def test_server_that_never_answers_the_handshake_times_out() -> None:
    with SilentServer() as silent:
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetch_ca(silent.url("/ca"), pins=(), insecure_skip_pinning=True, timeout=0.5)
        elapsed = time.monotonic() - started

    assert "timed out after 0.5s" in caught.value.message
    assert elapsed < 1.5


def test_connection_refused_says_so_and_what_to_check() -> None:
    with pytest.raises(FetchError) as caught:
        fetch_ca(f"https://127.0.0.1:{closed_port()}/ca", pins=(), insecure_skip_pinning=True)

    assert caught.value.reason == "FetchFailed"
    assert "connection refused" in caught.value.message
    assert "check that the registry is up" in caught.value.message


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("dtr.example.com", ("dtr.example.com", 443)),
        ("dtr.example.com:4443", ("dtr.example.com", 4443)),
        ("10.0.0.5:4443", ("10.0.0.5", 4443)),
        ("[::1]", ("::1", 443)),
        ("[fd00::5]:4443", ("fd00::5", 4443)),
    ],
)
def test_registry_address_is_split_into_host_and_port(
    address: str, expected: tuple[str, int]
) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["", ":443", "[::1", "host:0", "host:99999", "host:x"])
def test_bad_registry_address_is_rejected(address: str) -> None:
    with pytest.raises(ValueError, match=r"port|host|IPv6"):
        split_address(address)
