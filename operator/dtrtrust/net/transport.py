"""The network edge: fetch a registry's /ca, verify its TLS chain, probe /basic_info.

Standard library only (http.client + ssl): full control over timeouts, body cap,
redirects and verification, and no extra dependency. Certificates are read with
``dtrtrust.certs`` (strict PEM, canonical fingerprints) and ``cryptography``.

Decisions worth knowing:

* One ``timeout`` is a *total* deadline for a whole operation (connect, TLS
  handshake, headers, body, every redirect hop). Each socket read gets only the
  time that is left, so a server that dribbles one byte a second cannot hold a
  reconcile for longer than ``timeout``.
* ``fetch_ca`` does not verify the server's TLS certificate (as ``curl -k``): the
  pin is the trust. At least one served certificate must match a pin and only the
  certificates that match a pin are returned, so a compromised or spoofed /ca
  cannot smuggle an extra root in next to the pinned one. Pins, when given, are
  always enforced; ``insecure_skip_pinning`` only allows a fetch without pins.
* ``verify_registry`` verifies the way docker and containerd (Go) do with
  ``certs.d/<addr>/ca.crt``: only the bundle as trust anchors, any certificate in
  it may anchor a chain (Go treats every certificate in its root pool as a trust
  anchor, hence ``VERIFY_X509_PARTIAL_CHAIN``), names only from subjectAltName
  (the legacy Common Name is ignored).
* No message ever contains key material: the client key only goes into a 0600
  file in a private temporary directory, long enough for ``ssl`` to load it.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from dtrtrust.certs import CertError, fingerprint_der, parse_certificates, parse_fingerprint

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BASIC_INFO_PATH = "/basic_info"
CLIENT_CERT_AUTHN = "TLSClientCertificate"
MAX_BASIC_INFO_BYTES = 1 << 20
USER_AGENT = "dtrtrust"

# OpenSSL verify codes (x509_vfy.h) behind ssl.SSLCertVerificationError.verify_code.
_HOSTNAME_CODES = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_UNKNOWN_ISSUER_CODES = frozenset({2, 18, 19, 20, 21})
_EXPIRY_CODES = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED


class FetchError(Exception):
    """``reason``: FetchFailed | FingerprintMismatch | Unpinned | InvalidPEM (CAAvailable
    reasons), or InvalidFingerprint for a malformed pin. Message: one line, what is
    wrong and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class VerifyError(Exception):
    """``reason``: HostnameMismatch | UnknownAuthority | ClientAuthRejected | Unreachable
    (RegistryVerified reasons), or InvalidCertificate when the registry's chain is
    rejected for another cause (expired, wrong key usage, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class FetchedCA:
    url: str
    pem: bytes  # the certificates that matched a pin (all of them when unpinned), PEM
    fingerprints: tuple[str, ...]  # "sha256:.." of each certificate served, in served order
    pinned: bool  # False only with insecure_skip_pinning
    accepted: tuple[str, ...] = ()  # fingerprints of the certificates in ``pem``
    final_url: str = ""  # where the body came from after same-host redirects


@dataclass(frozen=True)
class VerifyResult:
    chain: tuple[str, ...]  # subjects of the verified chain, leaf first
    authn_method: str | None  # from /basic_info when probed
    names: tuple[str, ...] = ()  # the leaf's subjectAltName DNS names and IPs


@dataclass(frozen=True)
class BasicInfo:
    """What ``/basic_info`` said. ``authn_method`` None: no AuthnMethod reported."""

    status: int
    authn_method: str | None


def default_ca_url(registry: str) -> str:
    return f"https://{registry}/ca"


# --- addresses ---------------------------------------------------------------------------


def split_address(address: str, default_port: int = 443) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host without brackets, port)."""
    text = address.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{address!r}: unclosed '[' in an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{address!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host, port_text = text, ""  # a bare IPv6 address
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{address!r}: no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{address!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- sockets with a total deadline -----------------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.seconds:g}s")
        return left


class _DeadlineSSLSocket(ssl.SSLSocket):
    """Every read may only wait for what is left of the deadline."""

    deadline: _Deadline | None = None

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSocket(socket.socket):
    deadline: _Deadline | None = None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _verifying_context(ca_pem: bytes) -> ssl.SSLContext:
    """Trust exactly ``ca_pem``, check names like Go: SANs only, any bundle cert anchors."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.hostname_checks_common_name = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as err:
        raise VerifyError(
            "UnknownAuthority", f"the CA bundle cannot be used as trust anchors ({err})"
        ) from None
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _load_client_identity(context: ssl.SSLContext, client: tuple[bytes, bytes]) -> None:
    """Load the client pair into ``context`` from 0600 files in a private temporary
    directory (ssl reads only files), removed as soon as they are loaded."""
    directory = tempfile.mkdtemp(prefix="dtrtrust-client-")
    try:
        paths = []
        for name, data in (("client.cert", client[0]), ("client.key", client[1])):
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths.append(path)
        try:
            context.load_cert_chain(paths[0], paths[1])
        except (ssl.SSLError, ValueError) as err:
            reason = getattr(err, "reason", None) or type(err).__name__
            raise VerifyError(
                "ClientAuthRejected",
                f"the client certificate and key cannot be used for TLS ({reason}): "
                "check that the key belongs to the certificate",
            ) from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _connect(
    host: str, port: int, context: ssl.SSLContext | None, deadline: _Deadline
) -> socket.socket:
    """TCP (and TLS when ``context``) to host:port, all within ``deadline``."""
    raw = socket.create_connection((host, port), timeout=deadline.remaining())
    try:
        if context is None:
            plain = _DeadlineSocket(fileno=raw.detach())
            plain.deadline = deadline
            return plain
        raw.settimeout(deadline.remaining())
        # server_hostname: SNI for names (ssl sends no SNI for IP literals) and the name
        # that check_hostname verifies.
        tls = context.wrap_socket(raw, server_hostname=host)
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.deadline = deadline
        return tls
    except BaseException:
        raw.close()
        raise


def _get(
    sock: socket.socket,
    host: str,
    port: int,
    target: str,
    *,
    tls: bool,
    max_bytes: int,
    url: str,
    accept: str,
) -> tuple[http.client.HTTPResponse, bytes]:
    """One GET over a connected socket: (response, body). Body capped at max_bytes
    (FetchError FetchFailed); a redirect's body is not read."""
    connection = http.client.HTTPConnection(host, port)
    connection.default_port = 443 if tls else 80  # Host header without the default port
    connection.sock = sock
    connection.putrequest("GET", target, skip_accept_encoding=True)
    connection.putheader("Accept", accept)
    connection.putheader("User-Agent", USER_AGENT)
    connection.putheader("Connection", "close")
    connection.endheaders()
    response = connection.getresponse()
    try:
        return response, _read_body(response, max_bytes=max_bytes, url=url)
    finally:
        # Status and headers stay readable; the socket's file object is released so
        # closing the socket really closes it.
        response.close()


def _read_body(response: http.client.HTTPResponse, *, max_bytes: int, url: str) -> bytes:
    if response.status in REDIRECT_STATUSES:
        return b""
    announced = response.getheader("Content-Length")
    if announced is not None and announced.isdigit() and int(announced) > max_bytes:
        raise FetchError("FetchFailed", _too_large(url, max_bytes))
    chunks: list[bytes] = []
    total = 0
    while True:
        # read1: at most one socket read per call, so the deadline is checked often.
        chunk = response.read1(64 * 1024)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise FetchError("FetchFailed", _too_large(url, max_bytes))
        chunks.append(chunk)
    if response.length:  # the peer hung up before the announced length
        raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return b"".join(chunks)


def _too_large(url: str, max_bytes: int) -> str:
    return (
        f"{url} sent more than {max_bytes} bytes, the limit for a CA bundle: "
        "is ca.fetch.url the registry's /ca endpoint?"
    )


def network_cause(err: BaseException, host: str, timeout: float) -> str:
    """A short, human cause for a network failure."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve host {host!r}"
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(err, ssl.SSLError):
        reason = err.reason or str(err)
        if reason in {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"}:
            return "TLS handshake failed: the server does not speak TLS on this port"
        return f"TLS failed ({reason})"
    if isinstance(err, http.client.IncompleteRead):
        return "the connection closed before the whole body arrived"
    if isinstance(err, http.client.HTTPException):
        return f"not an HTTP answer ({type(err).__name__})"
    if isinstance(err, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    return type(err).__name__


# --- fetch_ca ------------------------------------------------------------------------------


def fetch_ca(
    url: str,
    *,
    pins: tuple[str, ...],
    insecure_skip_pinning: bool,
    timeout: float = 10.0,
    max_bytes: int = 1 << 20,
) -> FetchedCA:
    """GET ``url`` without verifying TLS (the pin is the trust), within ``timeout``
    seconds in total, at most ``max_bytes`` of body, following at most three
    redirects to the same host; the body must be strict PEM certificates. At least
    one served certificate must match a pin; only those are returned."""
    wanted: list[str] = []
    for pin in pins:
        try:
            wanted.append(parse_fingerprint(pin))
        except CertError as err:
            raise FetchError(err.reason, f"ca.fetch.pinnedSHA256: {err.message}") from None
    body, content_type, final_url = _download(url, timeout=timeout, max_bytes=max_bytes)
    certificates = _certificates_from_body(url, body, content_type)
    served = [
        (fingerprint_der(c.public_bytes(serialization.Encoding.DER)), c) for c in certificates
    ]
    fingerprints = tuple(fp for fp, _ in served)

    if not wanted:
        if not insecure_skip_pinning:
            raise FetchError(
                "Unpinned",
                f"{url} is not pinned, so its certificates are not trusted: it served "
                f"{_describe_served(served)}; check the fingerprint out of band "
                "(openssl x509 -in ca.crt -noout -fingerprint -sha256) and set "
                f"ca.fetch.{pin_line(fingerprints)}, or set insecureSkipPinning: true",
            )
        accepted = served
    else:
        accepted = [(fp, c) for fp, c in served if fp in wanted]
        if not accepted:
            raise FetchError(
                "FingerprintMismatch",
                f"no certificate served by {url} matches ca.fetch.pinnedSHA256: it served "
                f"{_describe_served(served)}; if the registry's CA was replaced on purpose, "
                "check the new fingerprint out of band and update pinnedSHA256",
            )
    return FetchedCA(
        url=url,
        pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for _, c in accepted),
        fingerprints=fingerprints,
        pinned=bool(wanted),
        accepted=tuple(fp for fp, _ in accepted),
        final_url=final_url,
    )


def pin_line(fingerprints: Sequence[str]) -> str:
    """The YAML line to paste: ``pinnedSHA256: ["sha256:..", ...]``."""
    return "pinnedSHA256: [" + ", ".join(f'"{fp}"' for fp in fingerprints) + "]"


def _describe_served(served: Sequence[tuple[str, x509.Certificate]]) -> str:
    parts = [f"{c.subject.rfc4514_string() or '(empty subject)'} {fp}" for fp, c in served]
    return "; ".join(parts)


def _download(url: str, *, timeout: float, max_bytes: int) -> tuple[bytes, str, str]:
    """(body, content type, final URL) of a 200 answer, following same-host redirects."""
    deadline = _Deadline(timeout)
    current = url
    first_host: str | None = None
    for hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in {"https", "http"}:
            raise FetchError(
                "FetchFailed", f"{current}: ca.fetch.url must start with https:// (or http://)"
            )
        try:
            host = parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise FetchError("FetchFailed", f"{current}: the port is not a number") from None
        if not host:
            raise FetchError("FetchFailed", f"{current}: no host in ca.fetch.url")
        if first_host is None:
            first_host = host.lower()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            context = _unverified_context() if scheme == "https" else None
            with _connect(host, port, context, deadline) as sock:
                response, body = _get(
                    sock,
                    host,
                    port,
                    target,
                    tls=context is not None,
                    max_bytes=max_bytes,
                    url=url,
                    accept="application/x-pem-file, text/plain, */*",
                )
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as err:
            cause = network_cause(err, host, timeout)
            raise FetchError(
                "FetchFailed",
                f"cannot fetch {url}: {cause}: check that the registry is up and that "
                "ca.fetch.url (host, port, scheme) is right",
            ) from None
        if response.status in REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise FetchError(
                    "FetchFailed", f"{current} answered {response.status} without a Location"
                )
            if hop == MAX_REDIRECTS:
                break
            following = urljoin(current, location)
            _check_redirect(url, current, following, first_host)
            current = following
            continue
        if response.status != 200:
            raise FetchError(
                "FetchFailed",
                f"{url} answered HTTP {response.status} {response.reason}: "
                "check ca.fetch.url (the registry serves its CA at /ca)",
            )
        return body, response.getheader("Content-Type") or "", current
    raise FetchError(
        "FetchFailed",
        f"{url} redirected more than {MAX_REDIRECTS} times: set ca.fetch.url to the final URL",
    )


def _check_redirect(url: str, current: str, following: str, first_host: str) -> None:
    target = urlsplit(following)
    scheme = target.scheme.lower()
    host = (target.hostname or "").lower()
    if host != first_host:
        raise FetchError(
            "FetchFailed",
            f"refused the cross-host redirect from {url} to {following}: "
            "set ca.fetch.url to the final URL if that host is the right one",
        )
    if scheme != "https" and not (scheme == "http" and urlsplit(current).scheme == "http"):
        raise FetchError(
            "FetchFailed",
            f"refused the redirect from {current} to {following}: it leaves https; "
            "set ca.fetch.url to the final URL if that is intended",
        )


def _certificates_from_body(url: str, body: bytes, content_type: str) -> list[x509.Certificate]:
    head = body.lstrip()[:512].lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype", b"<html", b"<")):
        raise FetchError(
            "FetchFailed",
            f"{url} returned HTML, not a PEM certificate: is the URL the registry's /ca "
            "endpoint (and not a login page or a proxy's error page)?",
        )
    if not head:
        raise FetchError("FetchFailed", f"{url} returned an empty body, not a PEM certificate")
    if b"-----begin" not in head and body[:1] == b"\x30":
        raise FetchError(
            "InvalidPEM",
            f"{url} returned a binary (DER) certificate, not PEM: convert it with "
            "openssl x509 -inform der and put it in ca.pem instead",
        )
    try:
        parsed = parse_certificates(body, source=url)
    except CertError as err:
        raise FetchError("InvalidPEM", err.message) from None
    certificates = [c for c in parsed if isinstance(c, x509.Certificate)]
    if not certificates:
        raise FetchError("FetchFailed", f"{url} returned no certificate")
    return certificates


# --- verify_registry -------------------------------------------------------------------------


def peek_chain(registry: str, *, timeout: float = 10.0) -> list[x509.Certificate]:
    """The certificates the registry sends in its TLS handshake (leaf first), read
    without verifying anything. Raises OSError/ssl.SSLError on network failure."""
    host, port = split_address(registry)
    deadline = _Deadline(timeout)
    with _connect(host, port, _unverified_context(), deadline) as sock:
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


def certificate_names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses of a certificate's subjectAltName, in order."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(sans.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return names


def common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _chain_from_bundle(leaf: x509.Certificate, ca_pem: bytes) -> list[x509.Certificate]:
    """leaf, then issuers found in the bundle (signature checked), up to an anchor."""
    pool = [
        c for c in parse_certificates(ca_pem, source="CA bundle") if isinstance(c, x509.Certificate)
    ]
    chain = [leaf]
    while len(chain) < 10:
        current = chain[-1]
        if current.issuer == current.subject and current in pool:
            break
        issuer = next((c for c in pool if issued_by(current, c) and c not in chain), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):  # wrong key, unsupported key type
        return False
    return True


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
    context = _verifying_context(ca_pem)
    deadline = _Deadline(timeout)
    if client is not None:
        _load_client_identity(context, client)
    try:
        sock = _connect(host, port, context, deadline)
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
        except (
            ssl.SSLError,
            ConnectionResetError,
            BrokenPipeError,
            http.client.RemoteDisconnected,
        ) as err:
            # TLS 1.3: the server's verdict on our certificate arrives after the handshake.
            raise _client_rejected(registry, client, err) from None
        except (OSError, http.client.HTTPException) as err:
            raise _unreachable(registry, err, host, timeout) from None
        except FetchError as err:
            raise VerifyError("ClientAuthRejected", err.message) from None
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


def hostname_mismatch_message(leaf: x509.Certificate | None, host: str) -> str:
    if leaf is None:
        return f"the registry's certificate is not valid for {host}"
    names = certificate_names(leaf)
    if not names:
        cn = common_name(leaf)
        return (
            f"x509: the registry's certificate has no subjectAltName, only the legacy Common "
            f"Name {cn!r}, which docker and containerd (Go) ignore: reissue it with {host} "
            "in its subjectAltName"
        )
    return (
        f"x509: certificate is valid for {', '.join(names)}, not {host}: add the address to "
        "the certificate's SANs or use one of these names"
    )


def unknown_authority_message(served: Sequence[x509.Certificate], registry: str) -> str:
    if not served:
        return (
            f"x509: certificate signed by unknown authority: the CA bundle does not anchor "
            f"{registry}'s chain: add the missing root or intermediate to ca.pem"
        )
    top = served[-1]
    leaf = served[0]
    if len(served) == 1 and leaf.issuer != leaf.subject:
        return (
            f"x509: certificate signed by unknown authority: {registry} sends only its own "
            f"certificate ({leaf.subject.rfc4514_string()}), issued by "
            f"{leaf.issuer.rfc4514_string()}, and the CA bundle does not contain that issuer: "
            "add the intermediate to ca.pem"
        )
    return (
        f"x509: certificate signed by unknown authority: {registry}'s chain ends at "
        f"{top.subject.rfc4514_string()}, issued by {top.issuer.rfc4514_string()}, which the "
        "CA bundle does not contain: add that CA (and any intermediate) to ca.pem"
    )


# --- /basic_info -------------------------------------------------------------------------


def _basic_info_over(sock: socket.socket, host: str, port: int, *, url: str) -> BasicInfo:
    response, body = _get(
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
    context = _unverified_context() if ca_pem is None else _verifying_context(ca_pem)
    if client is not None:
        _load_client_identity(context, client)
    deadline = _Deadline(timeout)
    try:
        with _connect(host, port, context, deadline) as sock:
            return _basic_info_over(sock, host, port, url=f"https://{registry}{BASIC_INFO_PATH}")
    except ssl.SSLCertVerificationError as err:
        raise _verification_failure(err, registry, timeout) from None
    except (
        ssl.SSLError,
        ConnectionResetError,
        BrokenPipeError,
        http.client.RemoteDisconnected,
    ) as err:
        if isinstance(err, ssl.SSLError) and not _is_alert(err):
            raise _unreachable(registry, err, host, timeout) from None
        raise _client_rejected(registry, client, err) from None
    except (OSError, http.client.HTTPException) as err:
        raise _unreachable(registry, err, host, timeout) from None
    except FetchError as err:
        raise VerifyError("ClientAuthRejected", err.message) from None


__all__ = [
    "BasicInfo",
    "FetchError",
    "FetchedCA",
    "VerifyError",
    "VerifyResult",
    "authn_method_of",
    "certificate_names",
    "default_ca_url",
    "fetch_ca",
    "peek_chain",
    "pin_line",
    "probe_basic_info",
    "split_address",
    "verify_registry",
]
