"""Sockets with one total deadline, TLS contexts, and one GET (standard library only).

One ``timeout`` is a *total* deadline for a whole operation (connect, TLS handshake,
headers, body, every redirect hop). Each socket read gets only the time that is left, so
a server that dribbles one byte a second cannot hold a reconcile for longer than
``timeout``. No message ever contains key material: the client key only goes into a 0600
file in a private temporary directory, long enough for ``ssl`` to load it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import tempfile
import time
from typing import Any

from dtrtrust.core.network import FetchError, VerifyError
from dtrtrust.net.proxy import ProxyError, proxy_for, tunnel

USER_AGENT = "dtrtrust"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Deadline:
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

    deadline: Deadline | None = None

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSocket(socket.socket):
    deadline: Deadline | None = None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)


def unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def verifying_context(ca_pem: bytes) -> ssl.SSLContext:
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


def load_client_identity(context: ssl.SSLContext, client: tuple[bytes, bytes]) -> None:
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


def connect(
    host: str, port: int, context: ssl.SSLContext | None, deadline: Deadline
) -> socket.socket:
    """TCP (and TLS when ``context``) to host:port, all within ``deadline``; through an
    HTTP CONNECT tunnel when HTTPS_PROXY (HTTP_PROXY without TLS) says so and NO_PROXY
    does not exempt the host (``net.proxy``)."""
    proxy = proxy_for(host, port, tls=context is not None)
    if proxy is None:
        raw = socket.create_connection((host, port), timeout=deadline.remaining())
    else:
        raw = tunnel(proxy, host, port, deadline.remaining)
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


def get(
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
        return response, read_body(response, max_bytes=max_bytes, url=url)
    finally:
        # Status and headers stay readable; the socket's file object is released so
        # closing the socket really closes it.
        response.close()


def read_body(response: http.client.HTTPResponse, *, max_bytes: int, url: str) -> bytes:
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
    if isinstance(err, ProxyError):
        return str(err)
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
