"""The per-node probe: connect to the registry with exactly the files written here.

Standard library only (``ssl``, ``http.client``), so the agent stays light: no
``cryptography``. The checks mirror what docker and containerd (Go) do with
``certs.d/<addr>/``: ``ca.crt`` is the only trust anchor and any certificate in it may
anchor a chain (``VERIFY_X509_PARTIAL_CHAIN``, like Go's cert pool), names come from
subjectAltName only (``hostname_checks_common_name = False``). Then, with the client
pair, ``GET /basic_info`` must report ``AuthnMethod: TLSClientCertificate`` (DTR); a
registry without ``/basic_info`` (404) passes when ``GET /v2/`` is answered without a
TLS-level refusal. Every step shares one deadline.

Reasons are the ``NodesVerified`` reasons of DESIGN.md: ``Unreachable``,
``HostnameMismatch``, ``UnknownAuthority``, ``ClientAuthRejected``; a certificate that is
expired or unfit is ``InvalidCertificate``.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from dtrtrust.core.addresses import split_address

BASIC_INFO_PATH = "/basic_info"
CLIENT_CERT_AUTHN = "TLSClientCertificate"
MAX_BODY = 64 * 1024
_HOSTNAME_CODES = frozenset({62, 64})
_UNKNOWN_ISSUER_CODES = frozenset({2, 18, 19, 20, 21})
# nginx answers 400 ("No required SSL certificate was sent", "The SSL certificate
# error") when ssl_verify_client refuses a certificate after the handshake.
_REFUSED_STATUSES = frozenset({400, 495, 496})

ACCEPTED = "Accepted"
REJECTED = "Rejected"
NOT_CONFIGURED = "NotConfigured"
NOT_TESTED = "NotTested"


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    tls_verified: bool
    client_certificate: str  # Accepted | Rejected | NotConfigured | NotTested
    reason: str = ""  # "" when the probe passed
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def to_dict(self, checked_at: str) -> dict[str, object]:
        out: dict[str, object] = {
            "reachable": self.reachable,
            "tlsVerified": self.tls_verified,
            "clientCertificate": self.client_certificate,
            "checkedAt": checked_at,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message[:1024]
        return out


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the probe's time is up")
        return left


def _context(ca_file: Path, client: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.hostname_checks_common_name = False
    ctx.check_hostname = True
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


def _connect(host: str, port: int, ctx: ssl.SSLContext, deadline: _Deadline) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=deadline.left())
    try:
        raw.settimeout(deadline.left())
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def _get(sock: ssl.SSLSocket, address: str, path: str, deadline: _Deadline) -> tuple[int, bytes]:
    sock.settimeout(deadline.left())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n"
        "User-Agent: dtrtrust-agent\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(request.encode("ascii"))
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read(MAX_BODY)
    return response.status, body


def _authn_method(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    for holder in (doc, doc.get("User")):
        if isinstance(holder, dict) and isinstance(holder.get("AuthnMethod"), str):
            return str(holder["AuthnMethod"])
    return None


def _is_alert(err: ssl.SSLError) -> bool:
    return "ALERT" in (err.reason or "").upper() or "alert" in str(err)


_REJECTION = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)


def _rejected(message: str) -> ProbeResult:
    """The registry was reached and its TLS verified, but it refused this node's client."""
    return ProbeResult(True, True, REJECTED, "ClientAuthRejected", message)


def probe(
    address: str,
    directory: Path,
    *,
    with_client: bool,
    timeout: float = 5.0,
) -> ProbeResult:
    """Probe ``address`` with the files in ``directory`` (``ca.crt``, and with
    ``with_client`` ``client.cert`` + ``client.key``). Never raises for the registry's
    or the network's faults; the result says what failed and what to do."""
    host, port = split_address(address)
    deadline = _Deadline(timeout)
    ca_file = directory / "ca.crt"
    pair = (directory / "client.cert", directory / "client.key") if with_client else None
    try:
        ca_only = _context(ca_file, None)
        full = _context(ca_file, pair) if pair else ca_only
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(
            False, False, NOT_TESTED, "InvalidCertificate",
            f"the files in {directory} cannot be loaded ({exc}): the agent will rewrite them "
            "at its next sync",
        )  # fmt: skip

    # 1. TLS chain and name with only ca.crt.
    try:
        with _connect(host, port, ca_only, deadline) as sock:
            if pair is None:
                return _without_client(sock, address, deadline)
    except ssl.SSLCertVerificationError as exc:
        return _verification_failure(exc, address, directory)
    except ssl.SSLError as exc:
        if not _is_alert(exc):
            return _unreachable(address, exc)
        # The server's chain passed; it then refused us for sending no certificate.
        if pair is None:
            return _rejected(
                f"{address} requires a client certificate (TLS alert {exc.reason}) and this "
                "trust has none: set spec.clientCertificate",
            )  # fmt: skip
    except _REJECTION:
        if pair is None:
            return _rejected(
                f"{address} closed the connection without a client certificate: it requires "
                "one; set spec.clientCertificate",
            )  # fmt: skip
    except OSError as exc:
        return _unreachable(address, exc)

    # 2. The client pair: /basic_info (DTR), else /v2/.
    assert pair is not None
    try:
        status, body = _request(host, port, full, address, BASIC_INFO_PATH, deadline)
        authn = _authn_method(body)
        if status == 200 and authn == CLIENT_CERT_AUTHN:
            return ProbeResult(True, True, ACCEPTED)
        if status == 200 or authn:
            return _rejected(
                f"{address}{BASIC_INFO_PATH} reports AuthnMethod {authn or 'none'} with the "
                f"client certificate written on this node, not {CLIENT_CERT_AUTHN}: check "
                "that DTR's client CA includes the certificate's issuer",
            )  # fmt: skip
        status, _ = _request(host, port, full, address, "/v2/", deadline)
    except _Refused as exc:
        return _rejected(
            f"{address} rejected the client certificate written on this node ({exc}): check "
            "that the registry's client CA includes its issuer",
        )  # fmt: skip
    except ssl.SSLCertVerificationError as exc:
        return _verification_failure(exc, address, directory)
    except (OSError, http.client.HTTPException) as exc:
        return _unreachable(address, exc)
    if status in _REFUSED_STATUSES:
        return _rejected(
            f"{address} answered HTTP {status} to the client certificate written on this "
            "node: check the registry's client CA",
        )  # fmt: skip
    return ProbeResult(True, True, ACCEPTED)


class _Refused(Exception):
    """The server ended the conversation over our client certificate: a TLS alert in
    the handshake, or (TLS 1.3, where its verdict comes after the handshake) any TLS
    error or closed connection once the handshake is done."""


def _request(
    host: str, port: int, ctx: ssl.SSLContext, address: str, path: str, deadline: _Deadline
) -> tuple[int, bytes]:
    try:
        sock = _connect(host, port, ctx, deadline)
    except ssl.SSLCertVerificationError:
        raise
    except ssl.SSLError as exc:
        if _is_alert(exc):
            raise _Refused(f"TLS alert {exc.reason}") from None
        raise
    with sock:
        try:
            return _get(sock, address, path, deadline)
        except (ssl.SSLError, *_REJECTION) as exc:
            cause = f"TLS alert {exc.reason}" if isinstance(exc, ssl.SSLError) else ""
            raise _Refused(cause or "the server closed the connection") from None


def _without_client(sock: ssl.SSLSocket, address: str, deadline: _Deadline) -> ProbeResult:
    """No client pair configured: TLS passed; tell whether the registry wants one."""
    try:
        status, _ = _get(sock, address, "/v2/", deadline)
    except ssl.SSLError as exc:  # after the handshake: the server's verdict (TLS 1.3)
        return _rejected(
            f"{address} requires a client certificate (TLS alert {exc.reason}) and this "
            "trust has none: set spec.clientCertificate",
        )  # fmt: skip
    except _REJECTION:
        return _rejected(
            f"{address} closed the connection without a client certificate: it requires one; "
            "set spec.clientCertificate",
        )  # fmt: skip
    except (OSError, http.client.HTTPException) as exc:
        return _unreachable(address, exc)
    if status in _REFUSED_STATUSES:
        return _rejected(
            f"{address} answered HTTP {status} without a client certificate: it requires "
            "one; set spec.clientCertificate",
        )  # fmt: skip
    if status in (401, 403):
        # Token or password auth answers 401 as well, so this is not a failure; but say
        # it, so an admin can tell "not needed" from "wanted" (nginx's optional client
        # verification answers 403 without one).
        return ProbeResult(
            True, True, NOT_CONFIGURED, "",
            f"no client certificate is configured and {address}/v2/ answered HTTP {status} "
            "without one: if pulls are refused, the registry may want spec.clientCertificate",
        )  # fmt: skip
    return ProbeResult(
        True, True, NOT_CONFIGURED, "",
        f"no client certificate is configured and {address} does not ask for one",
    )  # fmt: skip


def _verification_failure(
    exc: ssl.SSLCertVerificationError, address: str, directory: Path
) -> ProbeResult:
    code = exc.verify_code
    if code in _HOSTNAME_CODES:
        reason, hint = "HostnameMismatch", "reissue it with the address as a subjectAltName"
    elif code in _UNKNOWN_ISSUER_CODES:
        reason, hint = "UnknownAuthority", "add the missing root or intermediate to the trust"
    else:
        reason, hint = "InvalidCertificate", "renew or reissue it"
    return ProbeResult(
        True, False, NOT_TESTED, reason,
        f"x509: {address}'s certificate does not verify with {directory}/ca.crt on this node "
        f"({exc.verify_message}): {hint}",
    )  # fmt: skip


def _unreachable(address: str, exc: BaseException) -> ProbeResult:
    cause = str(exc) or type(exc).__name__
    return ProbeResult(
        False, False, NOT_TESTED, "Unreachable",
        f"cannot connect to {address} from this node ({cause}): check the node's network "
        "path to the registry (firewall, proxy, DNS), or set spec.verify.nodes: false",
    )  # fmt: skip
