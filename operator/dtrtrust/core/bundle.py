"""The CA bundle: compose, validate and summarise trust anchors (pure, ``now`` passed in).

* **Order: by subject (RFC 4514 string), then by SHA-256 of the DER.** Adding or removing
  one certificate changes one place in the file, and a renewed CA sits next to the one it
  replaces, so diffs of ``ca.crt`` stay small and readable. Chain order does not matter in a
  trust bundle (Go, OpenSSL and containerd build a pool from it).
* **Canonical bytes** (see :mod:`dtrtrust.core.pem`): identical certificate sets give
  byte-identical bundles, whatever the input order, duplicates, whitespace or line endings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import fingerprint_der
from dtrtrust.core.pem import canonical_pem, is_ca, parse_certificates
from dtrtrust.core.times import rfc3339

MAX_BUNDLE_BYTES = 1 << 20  # 1 MiB of PEM for one composed bundle
EXPIRY_WARNING = dt.timedelta(days=30)


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
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sha256": self.sha256,
            "notBefore": rfc3339(self.not_before),
            "notAfter": rfc3339(self.not_after),
            "isCA": self.is_ca,
        }

    @property
    def label(self) -> str:
        """How warnings and errors name a certificate: subject and a short fingerprint."""
        return f'"{self.subject or "(empty subject)"}" ({self.sha256[:19]}…)'


@dataclass(frozen=True)
class Bundle:
    pem: bytes  # canonical bytes: deterministic order, deduplicated, one trailing newline per cert
    sha256: str  # "sha256:<hex>" of ``pem``
    certificates: tuple[CertSummary, ...]
    warnings: tuple[str, ...]  # e.g. dropped non-CA / expired certs, not-yet-valid certs

    @property
    def not_after(self) -> dt.datetime:
        """Earliest notAfter of the certificates in the bundle."""
        return min(c.not_after for c in self.certificates)


def describe(cert: x509.Certificate) -> CertSummary:
    """The status summary of one certificate."""
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sha256=fingerprint_der(cert.public_bytes(serialization.Encoding.DER)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca(cert),
    )


def summaries_from_pem(data: bytes, source: str) -> list[CertSummary]:
    """Strict-parse ``data`` and summarise every certificate, in input order, unfiltered."""
    return [describe(c) for c in parse_certificates(data, source=source)]


def require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise TypeError("now must be a timezone-aware datetime (e.g. datetime.now(UTC))")


def check_size(what: str, size: int, max_bytes: int, advice: str) -> None:
    if size > max_bytes:
        raise CertError(
            "TooLarge", f"{what} is {size} bytes, over the limit of {max_bytes} bytes: {advice}"
        )


def _from(sources: Iterable[str]) -> str:
    return ", ".join(sorted(set(sources)))


def compose_bundle(
    sources: Sequence[tuple[str, bytes]],
    *,
    now: dt.datetime,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> Bundle:
    """Compose a CA bundle from (source name, PEM bytes) pairs: strict parse, refuse any
    certificate that is not a CA (CertError NotACA, naming it and its source: a trust
    bundle holds only CA certificates, as the contract's BundleValid says), drop expired
    CAs (warning), dedupe by DER SHA-256, sort deterministically (subject, then SHA-256).
    Empty result -> CertError(Empty/Expired): Expired when at least one CA certificate was
    found but every one had expired, Empty when there were no certificates at all."""
    require_aware(now)
    total = sum(len(data) for _, data in sources)
    check_size(
        "the CA input (all sources together)",
        total,
        max_bytes,
        "remove certificates you do not need from the sources",
    )
    found: dict[str, tuple[x509.Certificate, CertSummary]] = {}
    origins: dict[str, list[str]] = {}
    for source, data in sources:
        for cert in parse_certificates(data, source=source):
            summary = describe(cert)
            found.setdefault(summary.sha256, (cert, summary))
            origins.setdefault(summary.sha256, []).append(source)

    ordered = sorted(found.values(), key=lambda cs: (cs[1].subject, cs[1].sha256))
    leaves = [s for _, s in ordered if not s.is_ca]
    if leaves:
        first = leaves[0]
        more = f" (and {len(leaves) - 1} more)" if len(leaves) > 1 else ""
        raise CertError(
            "NotACA",
            f"{first.label} in {_from(origins[first.sha256])} is not a CA certificate "
            f"(no basicConstraints CA:TRUE; e.g. a server certificate){more}: remove it "
            "and give the CA that issued it; a trust bundle holds only CA certificates. "
            "The last good bundle stays in place",
        )
    kept: list[tuple[x509.Certificate, CertSummary]] = []
    warnings: list[str] = []
    expired = 0
    for cert, s in ordered:
        where = _from(origins[s.sha256])
        if now > s.not_after:
            expired += 1
            warnings.append(
                f"dropped {s.label} from {where}: expired at {rfc3339(s.not_after)}; "
                "replace it with the renewed CA certificate"
            )
        else:
            kept.append((cert, s))
            if now < s.not_before:
                warnings.append(
                    f"{s.label} from {where} is not valid yet (from {rfc3339(s.not_before)}); "
                    "kept, but clients will reject chains through it until then"
                )
            elif s.not_after - now <= EXPIRY_WARNING:
                warnings.append(
                    f"{s.label} from {where} expires at {rfc3339(s.not_after)}, within "
                    f"{EXPIRY_WARNING.days} days: add its renewal to the sources"
                )

    names = _from(name for name, _ in sources) or "(no sources)"
    if not kept:
        if expired:
            raise CertError(
                "Expired",
                f"every CA certificate in {names} has expired: add the current CA "
                "certificate; the last good bundle stays in place",
            )
        raise CertError(
            "Empty",
            f"{names} hold(s) no certificate at all: give at least one CA certificate in PEM",
        )

    pem = canonical_pem(cert for cert, _ in kept)
    check_size("the composed CA bundle", len(pem), max_bytes, "remove certificates you do not need")
    return Bundle(
        pem=pem,
        sha256="sha256:" + hashlib.sha256(pem).hexdigest(),
        certificates=tuple(s for _, s in kept),
        warnings=tuple(warnings),
    )
