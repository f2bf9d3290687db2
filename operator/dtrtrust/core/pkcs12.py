"""PKCS#12 for importing a client pair into a browser or keychain (pure)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from dtrtrust.core.client import check_match, leaf_and_chain, load_key
from dtrtrust.core.errors import CertError
from dtrtrust.core.pem import parse_certificates

PKCS12_KDF_ROUNDS = 600_000  # PBKDF2-HMAC-SHA256 iterations (OWASP 2023 recommendation)


def to_pkcs12(
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes | None,
    *,
    password: bytes,
    name: str,
    kdf_rounds: int = PKCS12_KDF_ROUNDS,
) -> bytes:
    """PKCS#12 for browser / keychain import: the leaf and key, plus the chain certificates
    given after the leaf and those in ``ca_pem`` (deduplicated, in that order). Encrypted
    with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and a SHA-256 MAC. The key must match the
    leaf; validity dates are not checked here (``validate_client_pair`` does that)."""
    if not password:
        raise CertError(
            "InvalidPassword",
            "a PKCS#12 file needs a non-empty password: browsers and keychains ask for it on "
            "import",
        )
    certs = leaf_and_chain(cert_pem, "the certificate file")
    leaf = certs[0]
    key, _ = load_key(key_pem, "the key file")
    check_match(leaf, key, "the certificate file", "the key file")
    extra = certs[1:] + (parse_certificates(ca_pem, source="the CA file") if ca_pem else [])
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    cas: dict[bytes, x509.Certificate] = {}
    for cert in extra:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der != leaf_der:
            cas.setdefault(der, cert)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(kdf_rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"), key, leaf, list(cas.values()) or None, encryption
    )
