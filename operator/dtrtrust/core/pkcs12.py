"""PKCS#12 for importing a client pair into a browser or keychain (pure)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from dtrtrust.core.client import check_match, leaf_and_chain, load_key
from dtrtrust.core.errors import CertError
from dtrtrust.core.pem import parse_certificates

PKCS12_KDF_ROUNDS = 600_000  # PBKDF2-HMAC-SHA256 iterations (OWASP 2023 recommendation)
# The legacy format's PKCS#12 KDF rounds: what openssl's -legacy writes (macOS Keychain and
# older Windows read nothing newer than 3DES with a SHA-1 MAC).
LEGACY_KDF_ROUNDS = 2048


def to_pkcs12(
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes | None,
    *,
    password: bytes,
    name: str,
    kdf_rounds: int | None = None,
    legacy: bool = False,
) -> bytes:
    """PKCS#12 for browser / keychain import: the leaf and key, plus the chain certificates
    given after the leaf and those in ``ca_pem`` (deduplicated, in that order). Encrypted
    with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and a SHA-256 MAC. The key must match the
    leaf; validity dates are not checked here (``validate_client_pair`` does that).

    ``legacy``: the older format that macOS Keychain (and Windows before Server 2019)
    imports: PBE-SHA1-3DES for key and certificates and a SHA-1 MAC. Weaker: keep such a
    file only as long as the import takes."""
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
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (
            builder.kdf_rounds(kdf_rounds or LEGACY_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the MAC Keychain verifies
        )
    else:
        builder = (
            builder.kdf_rounds(kdf_rounds or PKCS12_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    encryption = builder.build(password)
    return pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"), key, leaf, list(cas.values()) or None, encryption
    )
