"""The network edge: fetch a registry's /ca, verify its TLS chain, probe /basic_info.

Standard library only (http.client + ssl): full control over timeouts, body cap,
redirects and verification, and no extra dependency.

INTERFACE (implemented by the network helper; keep names and signatures, extend freely):
"""

from __future__ import annotations

from dataclasses import dataclass


class FetchError(Exception):
    """``reason``: FetchFailed | FingerprintMismatch | Unpinned | InvalidPEM (CAAvailable
    reasons). Message: one line, what is wrong and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class VerifyError(Exception):
    """``reason``: HostnameMismatch | UnknownAuthority | ClientAuthRejected | Unreachable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class FetchedCA:
    url: str
    pem: bytes  # the body as served (strict PEM, checked)
    fingerprints: tuple[str, ...]  # "sha256:.." of each certificate in the body
    pinned: bool  # False only with insecure_skip_pinning


def default_ca_url(registry: str) -> str:
    return f"https://{registry}/ca"


def fetch_ca(url: str, *, pins: tuple[str, ...], insecure_skip_pinning: bool,
             timeout: float = 10.0, max_bytes: int = 1 << 20) -> FetchedCA:
    """GET url without verifying TLS (the pin is the trust), bounded timeouts, body cap,
    same-host redirects only, strict PEM body; every served cert... at least one
    must match a pin (canonical fingerprints from certs.parse_fingerprint)."""
    raise NotImplementedError


@dataclass(frozen=True)
class VerifyResult:
    chain: tuple[str, ...]  # subjects of the verified chain, leaf first
    authn_method: str | None  # from /basic_info when probed


def verify_registry(registry: str, ca_pem: bytes, client: tuple[bytes, bytes] | None, *,
                    probe_client_auth: bool, timeout: float = 10.0) -> VerifyResult:
    """Validate the registry's TLS chain and name with ca_pem only (as docker does
    with certs.d), then with a client pair probe /basic_info and require
    AuthnMethod == TLSClientCertificate."""
    raise NotImplementedError
