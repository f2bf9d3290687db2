"""HTTPS_PROXY / NO_PROXY: the CA fetch, the verification and ``inspect`` go through a
real local CONNECT proxy to real TLS servers (tests/connectproxy.py, tests/tlsserver.py).

The registry is named ``registry.proxy.test``, which does not resolve on this machine: only
the proxy knows where it is, so a call that reaches the server went through the proxy.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest

from certfactory import make_ca, make_leaf
from connectproxy import ConnectProxy
from dtrtrust.cli.inspect import inspect_registry
from dtrtrust.core.network import CLIENT_CERT_AUTHN, FetchError, VerifyError
from dtrtrust.net.fetch import fetch_ca
from dtrtrust.net.proxy import ProxyError, parse_proxy, proxy_for
from dtrtrust.net.verify import verify_registry
from tlsserver import Response, TLSServer, basic_info_route, valid_now

NAME = "registry.proxy.test"
ROOT = make_ca("proxy Root CA")
SERVER = make_leaf(NAME, ROOT, sans=[NAME], ip_sans=["127.0.0.1"], **valid_now())
CLIENT = make_leaf("proxy node client", ROOT, sans=[], eku=["clientAuth"], **valid_now())
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def _clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES + NO_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def registry() -> Iterator[TLSServer]:
    routes = {"/ca": Response(body=ROOT.cert_pem), "/basic_info": basic_info_route()}
    with TLSServer(
        chain_pem=SERVER.cert_pem,
        key_pem=SERVER.key_pem,
        routes=routes,
        client_ca_pem=ROOT.cert_pem,
    ) as server:
        yield server


@pytest.fixture
def proxy(registry: TLSServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    with ConnectProxy(routes={f"{NAME}:443": registry.address}) as running:
        monkeypatch.setenv("HTTPS_PROXY", running.url)
        yield running


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ca_fetch_goes_through_the_https_proxy(proxy: ConnectProxy) -> None:
    fetched = fetch_ca(f"https://{NAME}/ca", pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert fetched.pem == ROOT.cert_pem
    assert proxy.targets == [f"{NAME}:443"]


def test_verification_and_client_auth_probe_go_through_the_proxy_end_to_end(
    proxy: ConnectProxy, registry: TLSServer
) -> None:
    result = verify_registry(
        NAME, ROOT.cert_pem, (CLIENT.cert_pem, CLIENT.key_pem), probe_client_auth=True
    )

    assert result.authn_method == CLIENT_CERT_AUTHN  # the client certificate reached the server
    assert set(proxy.targets) == {f"{NAME}:443"}
    assert any(r.path == "/basic_info" and r.client_cert for r in registry.requests)


def test_inspect_goes_through_the_proxy(proxy: ConnectProxy) -> None:
    report = inspect_registry(NAME, None, timeout=10)

    assert report.ca_error is None
    assert report.connect_error is None
    assert report.verdict.ok
    assert report.pin_line is not None
    assert ROOT.fingerprint in report.pin_line


def test_no_proxy_sends_the_host_direct(
    proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost,.proxy.test")

    with pytest.raises(VerifyError) as info:
        verify_registry(NAME, ROOT.cert_pem, None, probe_client_auth=False, timeout=5)

    assert info.value.reason == "Unreachable"
    assert "cannot resolve" in info.value.message  # tried directly, not through the proxy
    assert proxy.targets == []


def test_loopback_registry_is_never_proxied(
    registry: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in Go's net/http (docker): localhost and 127.0.0.0/8 go direct even with a proxy set.
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")

    result = verify_registry(registry.address, ROOT.cert_pem, None, probe_client_auth=False)

    assert result.chain[0] == SERVER.subject


def test_proxy_credentials_are_sent_and_never_shown(
    registry: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = "Basic " + base64.b64encode(b"ops:s3cret pass").decode()
    with ConnectProxy(routes={f"{NAME}:443": registry.address}, require_auth=expected) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://ops:s3cret%20pass@127.0.0.1:{proxy.port}")
        fetched = fetch_ca(
            f"https://{NAME}/ca", pins=(ROOT.fingerprint,), insecure_skip_pinning=False
        )

        monkeypatch.setenv("HTTPS_PROXY", f"http://ops:wrong@127.0.0.1:{proxy.port}")
        with pytest.raises(FetchError) as info:
            fetch_ca(f"https://{NAME}/ca", pins=(ROOT.fingerprint,), insecure_skip_pinning=False)

    assert fetched.pem == ROOT.cert_pem
    assert "requires authentication (407)" in info.value.message
    assert "HTTPS_PROXY" in info.value.message
    assert "wrong" not in info.value.message
    assert "ops" not in info.value.message


def test_an_unreachable_proxy_is_named_with_the_variable_that_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", f"http://user:hunter2@127.0.0.1:{closed_port()}")

    with pytest.raises(VerifyError) as info:
        verify_registry(NAME, ROOT.cert_pem, None, probe_client_auth=False, timeout=5)

    assert info.value.reason == "Unreachable"
    assert "proxy 127.0.0.1:" in info.value.message
    assert "(https_proxy) is unreachable" in info.value.message
    assert "hunter2" not in info.value.message


def test_a_proxy_that_refuses_the_tunnel_says_so(
    registry: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy(refuse=403) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        with pytest.raises(VerifyError) as info:
            verify_registry(NAME, ROOT.cert_pem, None, probe_client_auth=False, timeout=5)

    assert f"refused to connect to {NAME}:443 (HTTP 403)" in info.value.message


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "proxied"),
    [
        ("dtr.example.com", 443, "", True),
        ("dtr.example.com", 443, "*", False),
        ("dtr.example.com", 443, "example.com", False),  # the domain and its subdomains
        ("example.com", 443, "example.com", False),
        ("example.com", 443, ".example.com", True),  # subdomains only
        ("dtr.example.com", 443, ".example.com", False),
        ("dtr.example.com", 443, "*.example.com", False),
        ("notexample.com", 443, "example.com", True),
        ("dtr.example.com", 4443, "dtr.example.com:443", True),  # that port only
        ("dtr.example.com", 443, "dtr.example.com:443", False),
        ("10.1.2.3", 443, "10.0.0.0/8", False),
        ("10.1.2.3", 443, "10.1.2.3", False),
        ("11.1.2.3", 443, "10.0.0.0/8", True),
        ("fd00::5", 443, "fd00::/8", False),
        ("DTR.Example.COM", 443, " other.org , example.com ", False),
        ("localhost", 443, "", False),
        ("127.0.0.5", 443, "", False),
        ("::1", 443, "", False),
    ],
)
def test_no_proxy_rules_match_go(host: str, port: int, no_proxy: str, proxied: bool) -> None:
    environ = {"HTTPS_PROXY": "proxy.corp:3128", "NO_PROXY": no_proxy}

    proxy = proxy_for(host, port, tls=True, environ=environ)

    assert (proxy is not None) == proxied
    if proxy is not None:
        assert (proxy.host, proxy.port) == ("proxy.corp", 3128)


def test_upper_case_variable_wins_and_plain_http_uses_http_proxy() -> None:
    environ = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert proxy_for("r.example", 443, tls=True, environ=environ) == parse_proxy(
        "http://upper:1", "HTTPS_PROXY"
    )
    assert proxy_for("r.example", 80, tls=False, environ=environ) is None
    plain = proxy_for("r.example", 80, tls=False, environ={"http_proxy": "http://p:8080"})
    assert plain is not None
    assert (plain.host, plain.port, plain.variable) == ("p", 8080, "http_proxy")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("socks5://p:1080", "uses socks5://, which dtrtrust does not support"),
        ("https://p:443", "uses https://, which dtrtrust does not support"),
        ("http://:3128", "is not a proxy address"),
        ("http://p:99999", "is not a proxy address"),
    ],
)
def test_unsupported_proxy_values_say_what_to_give(value: str, message: str) -> None:
    with pytest.raises(ProxyError, match=message):
        parse_proxy(value, "HTTPS_PROXY")
