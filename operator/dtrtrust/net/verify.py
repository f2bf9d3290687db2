"""Verify a registry the way docker and containerd (Go) do with ``certs.d/<addr>/ca.crt``.

Only the bundle as trust anchors, any certificate in it may anchor a chain (Go treats
every certificate in its root pool as a trust anchor, hence ``VERIFY_X509_PARTIAL_CHAIN``),
names only from subjectAltName (the legacy Common Name is ignored); then, with a client
pair, ``/basic_info`` must report ``AuthnMethod: TLSClientCertificate``.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl

from cryptography import x509

from dtrtrust.core.addresses import split_address
from dtrtrust.core.chain import (
    build_chain,
    certificate_names,
    hostname_mismatch_message,
    unknown_authority_message,
)
from dtrtrust.core.network import (
    BASIC_INFO_PATH,
    CLIENT_CERT_AUTHN,
    NO_BASIC_INFO,
    BasicInfo,
    FetchError,
    VerifyError,
    VerifyResult,
)
from dtrtrust.core.pem import parse_certificates
from dtrtrust.net.transport import (
    Deadline,
    connect,
    get,
    load_client_identity,
    network_cause,
    unverified_context,
    verifying_context,
)

MAX_BASIC_INFO_BYTES = 1 << 20
# OpenSSL verify codes (x509_vfy.h) behind ssl.SSLCertVerificationError.verify_code.
_HOSTNAME_CODES = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_UNKNOWN_ISSUER_CODES = frozenset({2, 18, 19, 20, 21})
_EXPIRY_CODES = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
# How a server that refuses our client certificate ends the conversation: a TLS alert, or
# (TLS 1.3, where its verdict comes after the handshake) a closed connection.
_REJECTION = (ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)


def peek_chain(registry: str, *, timeout: float = 10.0) -> list[x509.Certificate]:
    """The certificates the registry sends in its TLS handshake (leaf first), read
    without verifying anything. Raises OSError/ssl.SSLError on network failure."""
    host, port = split_address(registry)
    deadline = Deadline(timeout)
    with connect(host, port, unverified_context(), deadline) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        return _peer_chain(sock)


def _peer_chain(sock: ssl.SSLSocket, *, verified: bool = False) -> list[x509.Certificate]:
    """The peer's chain. CPython 3.10-3.12 have it as a private method of the SSL
    object (public from 3.13); without it only the leaf is known."""
    sslobj = getattr(sock, "_sslobj", None)
    getter = getattr(sslobj, "get_verified_chain" if verified else "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return [x509.load_der_x509_certificate(c.public_bytes(2)) for c in chain]  # 2: DER
    der = sock.getpeercert(binary_form=True)
    return [x509.load_der_x509_certificate(der)] if der else []


def _chain_from_bundle(leaf: x509.Certificate, ca_pem: bytes) -> list[x509.Certificate]:
    """leaf, then issuers found in the bundle (signature checked), up to a self-signed one."""
    pool = parse_certificates(ca_pem, source="CA bundle")
    return build_chain(leaf, pool, stop=lambda c: c.issuer == c.subject and c in pool)


def verify_registry(
    registry: str,
    ca_pem: bytes,
    client: tuple[bytes, bytes] | None,
    *,
    probe_client_auth: bool,
    timeout: float = 10.0,
) -> VerifyResult:
    """Validate the registry's TLS chain and name with ca_pem only (as docker does
    with certs.d), then with a client pair probe /basic_info and require
    AuthnMethod == TLSClientCertificate."""
    try:
        host, port = split_address(registry)
    except ValueError as err:
        raise VerifyError("Unreachable", f"registry address {err}") from None
    context = verifying_context(ca_pem)
    deadline = Deadline(timeout)
    if client is not None:
        load_client_identity(context, client)
    try:
        sock = connect(host, port, context, deadline)
    except ssl.SSLCertVerificationError as err:
        raise _verification_failure(err, registry, timeout) from None
    except ssl.SSLError as err:
        if _is_alert(err):
            raise _client_rejected(registry, client, err) from None
        raise _unreachable(registry, err, host, timeout) from None
    except OSError as err:
        raise _unreachable(registry, err, host, timeout) from None
    with sock:
        assert isinstance(sock, ssl.SSLSocket)
        chain = _peer_chain(sock, verified=True)
        if len(chain) <= 1 and chain:
            chain = _chain_from_bundle(chain[0], ca_pem)
        subjects = tuple(c.subject.rfc4514_string() for c in chain)
        names = tuple(certificate_names(chain[0])) if chain else ()
        if not (probe_client_auth and client is not None):
            return VerifyResult(chain=subjects, authn_method=None, names=names)
        try:
            info = _basic_info_over(sock, host, port, url=f"https://{registry}{BASIC_INFO_PATH}")
        except _REJECTION as err:
            # TLS 1.3: the server's verdict on our certificate arrives after the handshake.
            raise _client_rejected(registry, client, err) from None
        except (OSError, http.client.HTTPException) as err:
            raise _unreachable(registry, err, host, timeout) from None
        except FetchError as err:
            raise VerifyError("ClientAuthRejected", err.message) from None
    if info.status == 404 and info.authn_method is None:
        raise VerifyError(
            "ClientAuthRejected",
            f"{registry}{BASIC_INFO_PATH}: {NO_BASIC_INFO}. For such a registry set "
            "spec.verify.clientAuth: false (the TLS chain and name are still verified) and "
            "leave out spec.clientCertificate unless the registry asks for one",
        )
    if info.authn_method != CLIENT_CERT_AUTHN:
        reported = f'"{info.authn_method}"' if info.authn_method else "none"
        status = "" if info.status == 200 else f" (HTTP {info.status})"
        raise VerifyError(
            "ClientAuthRejected",
            f"{registry}{BASIC_INFO_PATH} reports AuthnMethod {reported}{status} with the "
            f"client certificate, not {CLIENT_CERT_AUTHN}: check that client certificate "
            "authentication is enabled in DTR and that its client CA "
            "(--client-cert-auth-ca) includes the client certificate's issuer",
        )
    return VerifyResult(chain=subjects, authn_method=info.authn_method, names=names)


def _is_alert(err: ssl.SSLError) -> bool:
    return "ALERT" in (err.reason or "").upper() or "alert" in str(err)


def _client_rejected(
    registry: str, client: tuple[bytes, bytes] | None, err: BaseException
) -> VerifyError:
    if isinstance(err, ssl.SSLError) and _is_alert(err):
        cause = f"TLS alert {err.reason}"
    else:
        cause = "the server closed the connection"
    if client is None:
        return VerifyError(
            "ClientAuthRejected",
            f"{registry} requires a client certificate ({cause}) and none is configured: "
            "set spec.clientCertificate",
        )
    return VerifyError(
        "ClientAuthRejected",
        f"{registry} rejected the client certificate during the TLS handshake ({cause}): "
        "check that DTR's client CA (--client-cert-auth-ca) includes its issuer",
    )


def _unreachable(registry: str, err: BaseException, host: str, timeout: float) -> VerifyError:
    return VerifyError(
        "Unreachable",
        f"cannot connect to {registry}: {network_cause(err, host, timeout)}: check that the "
        "registry is up and that the address (host and port) is the one in image references",
    )


def _verification_failure(
    err: ssl.SSLCertVerificationError, registry: str, timeout: float
) -> VerifyError:
    host, _ = split_address(registry)
    try:
        served = peek_chain(registry, timeout=timeout)
    except (OSError, ValueError):
        served = []
    leaf = served[0] if served else None
    code = err.verify_code
    if code in _HOSTNAME_CODES:
        return VerifyError("HostnameMismatch", hostname_mismatch_message(leaf, host))
    if code in _UNKNOWN_ISSUER_CODES:
        return VerifyError("UnknownAuthority", unknown_authority_message(served, registry))
    subject = leaf.subject.rfc4514_string() if leaf is not None else "the registry's certificate"
    if code in _EXPIRY_CODES:
        return VerifyError(
            "InvalidCertificate",
            f"x509: a certificate in {registry}'s chain ({subject} or an issuer) has expired "
            f"or is not yet valid ({err.verify_message}): renew it on the registry or in ca.pem",
        )
    return VerifyError(
        "InvalidCertificate",
        f"x509: {registry}'s certificate {subject} was rejected ({err.verify_message}): "
        "reissue it for TLS server use",
    )


def _basic_info_over(sock: socket.socket, host: str, port: int, *, url: str) -> BasicInfo:
    response, body = get(
        sock,
        host,
        port,
        BASIC_INFO_PATH,
        tls=True,
        max_bytes=MAX_BASIC_INFO_BYTES,
        url=url,
        accept="application/json",
    )
    return BasicInfo(status=response.status, authn_method=authn_method_of(body))


def authn_method_of(body: bytes) -> str | None:
    """``AuthnMethod`` from a /basic_info JSON body, top level or under ``User``."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    for holder in (document, document.get("User")):
        if isinstance(holder, dict):
            value = holder.get("AuthnMethod")
            if isinstance(value, str) and value:
                return value
    return None


def probe_basic_info(
    registry: str,
    *,
    client: tuple[bytes, bytes] | None,
    ca_pem: bytes | None = None,
    timeout: float = 10.0,
) -> BasicInfo:
    """GET /basic_info, with the client pair when given. ``ca_pem`` None: without
    verifying the server (diagnostics only: ``inspect``). Raises VerifyError."""
    host, port = split_address(registry)
    context = unverified_context() if ca_pem is None else verifying_context(ca_pem)
    if client is not None:
        load_client_identity(context, client)
    deadline = Deadline(timeout)
    try:
        with connect(host, port, context, deadline) as sock:
            return _basic_info_over(sock, host, port, url=f"https://{registry}{BASIC_INFO_PATH}")
    except ssl.SSLCertVerificationError as err:
        raise _verification_failure(err, registry, timeout) from None
    except _REJECTION as err:
        if isinstance(err, ssl.SSLError) and not _is_alert(err):
            raise _unreachable(registry, err, host, timeout) from None
        raise _client_rejected(registry, client, err) from None
    except (OSError, http.client.HTTPException) as err:
        raise _unreachable(registry, err, host, timeout) from None
    except FetchError as err:
        raise VerifyError("ClientAuthRejected", err.message) from None
