"""The client certificate and key: validate the pair a node presents (pure, ``now`` passed in).

**The key is kept as given.** A valid client key is passed on in the format the user chose
(PKCS#1, SEC1 or PKCS#8): same label, same base64 lines; only line endings, indentation and
surrounding whitespace are normalised. We never silently change a user's key format.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from dtrtrust.core.bundle import EXPIRY_WARNING, CertSummary, describe, require_aware
from dtrtrust.core.errors import CertError
from dtrtrust.core.pem import (
    canonical_pem,
    decode_body,
    parse_certs,
    safe_label,
    scan,
    text_lines,
)
from dtrtrust.core.times import rfc3339

_CLIENT_AUTH_OIDS = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@dataclass(frozen=True)
class ClientPair:
    cert_pem: bytes  # normalised PEM (leaf first, then any chain certs given)
    key_pem: bytes  # the key as given (PKCS#1, SEC1 or PKCS#8), whitespace/line endings normalised
    summary: CertSummary  # of the leaf
    warnings: tuple[str, ...]  # e.g. expires within 30 days


def load_key(key_pem: bytes, source: str) -> tuple[PrivateKey, bytes]:
    """Strict-parse one unencrypted private key. Returns the key and its normalised PEM."""
    lines = text_lines(key_pem, source, "InvalidKey")
    blocks = scan(lines, source, "InvalidKey")
    if not blocks:
        raise CertError(
            "InvalidKey", f"{source} holds no PEM private key: give the client key in PEM form"
        )
    for block in blocks:
        if block.label == "CERTIFICATE":
            raise CertError(
                "InvalidKey",
                f"{source} holds a certificate (block {block.number}): give only the private "
                "key here, and the certificate separately",
            )
    if len(blocks) > 1:
        raise CertError(
            "InvalidKey",
            f"{source} holds {len(blocks)} PEM blocks: give exactly one private key",
        )
    block = blocks[0]
    decrypt = (
        "decrypt it first, e.g. `openssl pkey -in client.key -out client-plain.key` "
        "(the node daemon cannot ask for a passphrase)"
    )
    if block.label == "ENCRYPTED PRIVATE KEY" or (block.headers and block.label in _KEY_LABELS):
        raise CertError("EncryptedKey", f"the private key in {source} is encrypted: {decrypt}")
    if block.label == "OPENSSH PRIVATE KEY":
        raise CertError(
            "InvalidKey",
            f"the private key in {source} is in OpenSSH format: convert it to PEM with "
            "`ssh-keygen -p -m PKCS8 -f KEYFILE`",
        )
    if block.label not in _KEY_LABELS:
        raise CertError(
            "InvalidKey",
            f"{source} holds a {safe_label(block.label)} block, not a private key: give a "
            "PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )
    decode_body(block, source, "InvalidKey", block.label)
    normalised = "\n".join(
        [f"-----BEGIN {block.label}-----", *block.lines, f"-----END {block.label}-----", ""]
    ).encode("ascii")
    try:
        key = serialization.load_pem_private_key(normalised, password=None)
    except TypeError:
        raise CertError(
            "EncryptedKey", f"the private key in {source} is encrypted: {decrypt}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertError(
            "InvalidKey",
            f"the private key in {source} cannot be read (damaged, or an unsupported "
            "algorithm): give an RSA, EC or Ed25519 key in PEM",
        ) from None
    if not isinstance(key, PrivateKey):
        raise CertError(
            "InvalidKey",
            f"the private key in {source} is of a type TLS client authentication cannot use: "
            "give an RSA, EC or Ed25519 key",
        )
    return key, normalised


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def leaf_and_chain(cert_pem: bytes, source: str) -> list[x509.Certificate]:
    certs = parse_certs(
        cert_pem,
        source,
        "give only certificates here and the private key separately "
        "(and never put a key into a CA source)",
    )
    if not certs:
        raise CertError(
            "InvalidPEM",
            f"{source} holds no certificate: give the client certificate in PEM",
        )
    unique: dict[bytes, x509.Certificate] = {}
    for cert in certs:
        unique.setdefault(cert.public_bytes(serialization.Encoding.DER), cert)
    return list(unique.values())


def check_match(leaf: x509.Certificate, key: PrivateKey, cert_source: str, key_source: str) -> None:
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise CertError(
            "KeyMismatch",
            f"the private key in {key_source} does not belong to the certificate in "
            f"{cert_source} (the first certificate must be the client's own): give the key "
            "the certificate was issued for",
        )


def validate_client_pair(
    cert_pem: bytes,
    key_pem: bytes,
    *,
    now: dt.datetime,
    cert_source: str = "the client certificate file",
    key_source: str = "the client key file",
) -> ClientPair:
    """Key matches cert, key unencrypted, cert valid now, clientAuth allowed by EKU
    when an EKU is present; warning inside EXPIRY_WARNING of notAfter.

    ``cert_pem`` is the leaf, optionally followed by chain certificates (kept, leaf first,
    exact duplicates dropped). ``key_pem`` is kept in the format given (see module doc)."""
    require_aware(now)
    certs = leaf_and_chain(cert_pem, cert_source)
    leaf = certs[0]
    key, normalised_key = load_key(key_pem, key_source)
    check_match(leaf, key, cert_source, key_source)
    summary = describe(leaf)
    if now > summary.not_after:
        raise CertError(
            "Expired",
            f"the client certificate {summary.label} expired at {rfc3339(summary.not_after)}: "
            "renew it and update the Secret",
        )
    if now < summary.not_before:
        raise CertError(
            "NotYetValid",
            f"the client certificate {summary.label} is not valid until "
            f"{rfc3339(summary.not_before)}: check the issuer's clock or wait until then",
        )
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and not any(oid in usages for oid in _CLIENT_AUTH_OIDS):
        raise CertError(
            "NotClientAuth",
            f"the client certificate {summary.label} does not allow TLS client authentication "
            "(its extendedKeyUsage lacks clientAuth): issue one with clientAuth",
        )
    warnings: list[str] = []
    if summary.not_after - now <= EXPIRY_WARNING:
        warnings.append(
            f"the client certificate {summary.label} expires at {rfc3339(summary.not_after)}, "
            f"within {EXPIRY_WARNING.days} days: renew it"
        )
    return ClientPair(
        cert_pem=canonical_pem(certs),
        key_pem=normalised_key,
        summary=summary,
        warnings=tuple(warnings),
    )
