"""What the reconcile needs from the network, as types (pure).

:func:`dtrtrust.core.reconcile.reconcile` takes a :class:`Network`; the real one is
:class:`dtrtrust.net.live.LiveNetwork`, tests pass their own (or the live one pointed at
real local TLS servers). The results and errors are plain values, so the decision never
depends on how the network was reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

BASIC_INFO_PATH = "/basic_info"
# Harbor-based MSR 4 serves its CA here (DTR and MSR 2.9/3.x at /ca) and has no /basic_info
# and no client-certificate authentication.
HARBOR_CA_PATH = "/api/v2.0/systeminfo/getcert"
NO_BASIC_INFO = (
    "the registry has no /basic_info (HTTP 404): it is not DTR or MSR 2/3 (Harbor-based "
    "MSR 4 has neither /basic_info nor client-certificate authentication)"
)
CLIENT_CERT_AUTHN = "TLSClientCertificate"


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


def harbor_ca_url(registry: str) -> str:
    """Where Harbor-based MSR 4 serves its CA (when it uses its own)."""
    return f"https://{registry}{HARBOR_CA_PATH}"


class Network(Protocol):
    def fetch_ca(
        self, url: str, *, pins: tuple[str, ...], insecure_skip_pinning: bool
    ) -> FetchedCA: ...

    def verify_registry(
        self,
        registry: str,
        ca_pem: bytes,
        client: tuple[bytes, bytes] | None,
        *,
        probe_client_auth: bool,
    ) -> VerifyResult: ...
