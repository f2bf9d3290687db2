"""The certificate core: pure functions over bytes, ``now`` passed in.

Imports only ``cryptography`` and the standard library (import-linter keeps it so).
Everything that the operator, the agent and ``dtrtrust apply`` decide about
certificates is decided here.

INTERFACE (implemented by the core helper; keep names and signatures, extend freely):
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_BUNDLE_BYTES = 1 << 20  # 1 MiB of PEM for one composed bundle
EXPIRY_WARNING = dt.timedelta(days=30)


class CertError(ValueError):
    """Invalid certificate input. ``reason`` is a CamelCase condition reason
    (InvalidPEM, NotACA, Expired, Empty, TooLarge, KeyMismatch, NotClientAuth,
    EncryptedKey, InvalidKey, InvalidFingerprint). ``str()`` is one line that says
    what is wrong and what to do, and never contains key material."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CertSummary:
    subject: str  # RFC 4514 string
    issuer: str
    sha256: str  # "sha256:<64 lowercase hex>" of the DER
    not_before: dt.datetime  # timezone-aware UTC
    not_after: dt.datetime
    is_ca: bool

    def to_status(self) -> dict[str, object]:
        """camelCase dict for status.bundle.certificates (times RFC 3339, 'Z')."""
        raise NotImplementedError


@dataclass(frozen=True)
class Bundle:
    pem: bytes  # canonical bytes: deterministic order, deduplicated, one trailing newline per cert
    sha256: str  # "sha256:<hex>" of ``pem``
    certificates: tuple[CertSummary, ...]
    warnings: tuple[str, ...]  # e.g. dropped non-CA / expired certs, not-yet-valid certs

    @property
    def not_after(self) -> dt.datetime:
        """Earliest notAfter of the certificates in the bundle."""
        raise NotImplementedError


@dataclass(frozen=True)
class ClientPair:
    cert_pem: bytes  # normalised PEM (leaf first, then any chain certs given)
    key_pem: bytes  # normalised unencrypted PKCS#8 PEM
    summary: CertSummary  # of the leaf
    warnings: tuple[str, ...]  # e.g. expires within 30 days


def parse_certificates(data: bytes, *, source: str) -> list[object]:
    """Strict PEM: only CERTIFICATE blocks, no PEM headers, nothing but whitespace
    between blocks. Returns cryptography x509.Certificate objects. ``source`` names
    the input in error messages. A private key block is rejected without echoing it."""
    raise NotImplementedError


def compose_bundle(sources: Sequence[tuple[str, bytes]], *, now: dt.datetime,
                   max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Compose a CA bundle from (source name, PEM bytes) pairs: strict parse, keep
    only CA certificates, drop expired ones (warning), dedupe by DER SHA-256, sort
    deterministically. Empty result -> CertError(Empty/NotACA/Expired)."""
    raise NotImplementedError


def validate_client_pair(cert_pem: bytes, key_pem: bytes, *, now: dt.datetime) -> ClientPair:
    """Key matches cert, key unencrypted, cert valid now, clientAuth allowed by EKU
    when an EKU is present; warning inside EXPIRY_WARNING of notAfter."""
    raise NotImplementedError


def parse_fingerprint(text: str) -> str:
    """Accept "sha256:<64 hex>" or openssl's "AB:CD:..." (32 octets), any case.
    Returns the canonical "sha256:<lowercase hex>"."""
    raise NotImplementedError


def fingerprint_der(der: bytes) -> str:
    """Canonical "sha256:<hex>" of DER bytes."""
    raise NotImplementedError


def content_hash(files: Mapping[str, bytes]) -> str:
    """"sha256:<hex>" over sorted (name, bytes) pairs, unambiguous framing."""
    raise NotImplementedError


def to_pkcs12(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None, *,
              password: bytes, name: str) -> bytes:
    """PKCS#12 for browser / keychain import."""
    raise NotImplementedError
