"""Test PKIs built with ``cryptography`` at fixed dates, shared by every test tier.

Everything is anchored on ``NOW`` (2030-01-01T00:00:00Z): roots are valid 2025..2035, leaves
2029-07-01..2030-07-01 unless a test passes other dates, so "valid now", "expired" and "not yet
valid" are decided by the dates a test chooses, never by the wall clock.

Keys are cached per process by ``(key_type, name)``: the same name always gets the same key
(useful for "renewed certificate, same key"), and RSA is generated only once per name.
Use different names when a test needs different keys. Serial numbers are derived from the
certificate's name and dates, so they are stable too. (ECDSA signatures are randomised, so two
calls with the same arguments give different certificate bytes: reuse the returned object when
a test needs the very same certificate twice.)

    root = make_ca("Test Root")
    inter = make_ca("Test Intermediate", parent=root, path_length=0)
    server = make_leaf("dtr.example.com", inter, sans=["dtr.example.com"], ip_sans=["127.0.0.1"])
    client = make_leaf("node client", inter, eku=["clientAuth"])
    server.chain_pem   # server cert + intermediate (what a TLS server sends)
    root.cert_pem      # what goes into ca.crt
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.UTC
NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)
ROOT_NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=UTC)
ROOT_NOT_AFTER = dt.datetime(2035, 1, 1, tzinfo=UTC)
LEAF_NOT_BEFORE = dt.datetime(2029, 7, 1, tzinfo=UTC)
LEAF_NOT_AFTER = dt.datetime(2030, 7, 1, tzinfo=UTC)

KeyType = Literal["ec", "rsa", "ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

EKU_OIDS = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}


@functools.cache
def make_key(key_type: KeyType = "ec", name: str = "") -> PrivateKey:
    """A private key, cached per process by ``(key_type, name)``."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


@dataclass(frozen=True)
class Issued:
    """One certificate with its key, and the issuer it chains to (None when self-signed)."""

    name: str
    cert: x509.Certificate
    key: PrivateKey
    parent: Issued | None

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY")."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def traditional_key_pem(self) -> bytes:
        """Unencrypted PKCS#1 ("BEGIN RSA PRIVATE KEY") or SEC1 ("BEGIN EC PRIVATE KEY")
        PEM; RSA and EC keys only (Ed25519 has no traditional form)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def encrypted_key_pem(self, password: bytes = b"secret", *, traditional: bool = False) -> bytes:
        """Password-protected key: PKCS#8 "ENCRYPTED PRIVATE KEY", or with ``traditional`` the
        legacy OpenSSL form with a ``Proc-Type: 4,ENCRYPTED`` header."""
        fmt = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if traditional
            else serialization.PrivateFormat.PKCS8
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(password)
        )

    @property
    def fingerprint(self) -> str:
        """ "sha256:<64 lowercase hex>" of the DER (the ``pinnedSHA256`` form)."""
        return "sha256:" + hashlib.sha256(self.der).hexdigest()

    @property
    def openssl_fingerprint(self) -> str:
        """The same digest as openssl prints it: "AB:CD:..."."""
        digest = hashlib.sha256(self.der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, 64, 2))

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def issuers(self) -> list[Issued]:
        """The issuers above this certificate, nearest first, up to and including the root."""
        out: list[Issued] = []
        node = self.parent
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    @property
    def chain_pem(self) -> bytes:
        """This certificate then its intermediates, without the self-signed root: what a TLS
        server (or a client) sends."""
        return self.cert_pem + b"".join(i.cert_pem for i in self.issuers if i.parent is not None)

    @property
    def full_chain_pem(self) -> bytes:
        """This certificate then every issuer up to and including the root."""
        return self.cert_pem + b"".join(i.cert_pem for i in self.issuers)

    @property
    def root(self) -> Issued:
        return self.issuers[-1] if self.parent is not None else self


def pem_join(*parts: Issued | bytes) -> bytes:
    """Concatenate certificates (or raw PEM bytes) into one PEM document."""
    return b"".join(p.cert_pem if isinstance(p, Issued) else p for p in parts)


def _serial(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:16], "big") >> 1 or 1  # positive, at most 127 bits


DEFAULT_ORGANIZATION = "dtrtrust tests"


def _name(cn: str, organization: str | None = DEFAULT_ORGANIZATION) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _sign(builder: x509.CertificateBuilder, issuer_key: PrivateKey) -> x509.Certificate:
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def _base_builder(
    name: str,
    key: PrivateKey,
    parent: Issued | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    organization: str | None = DEFAULT_ORGANIZATION,
) -> x509.CertificateBuilder:
    subject = _name(name, organization)
    issuer = parent.cert.subject if parent is not None else subject
    issuer_key = parent.key if parent is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(_serial(name, issuer.rfc4514_string(), not_before, not_after))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    return builder


def make_ca(
    name: str,
    *,
    parent: Issued | None = None,
    path_length: int | None = None,
    not_before: dt.datetime = ROOT_NOT_BEFORE,
    not_after: dt.datetime = ROOT_NOT_AFTER,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    organization: str | None = DEFAULT_ORGANIZATION,
) -> Issued:
    """A CA certificate (basicConstraints CA:TRUE, keyCertSign): self-signed root when
    ``parent`` is None, otherwise an intermediate signed by ``parent``. ``organization``
    is the subject's O (None: CN only)."""
    key = key if key is not None else make_key(key_type, name)
    builder = (
        _base_builder(name, key, parent, not_before, not_after, organization)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    cert = _sign(builder, parent.key if parent is not None else key)
    return Issued(name=name, cert=cert, key=key, parent=parent)


def make_leaf(
    name: str,
    parent: Issued | None,
    *,
    sans: Sequence[str] | None = None,
    ip_sans: Iterable[str] = (),
    eku: Sequence[str] | None = ("serverAuth",),
    not_before: dt.datetime = LEAF_NOT_BEFORE,
    not_after: dt.datetime = LEAF_NOT_AFTER,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    basic_constraints: bool = True,
    organization: str | None = DEFAULT_ORGANIZATION,
) -> Issued:
    """An end-entity certificate signed by ``parent`` (self-signed when None).

    ``sans`` defaults to ``[name]``; pass ``[]`` for no DNS names. ``eku`` takes names from
    ``EKU_OIDS`` ("serverAuth", "clientAuth", "any", ...); ``None`` leaves the extension out
    (any use allowed). ``basic_constraints=False`` leaves out basicConstraints entirely.
    """
    key = key if key is not None else make_key(key_type, name)
    builder = _base_builder(name, key, parent, not_before, not_after, organization)
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
    names: list[x509.GeneralName] = [
        x509.DNSName(s) for s in (sans if sans is not None else [name])
    ]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if eku is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([EKU_OIDS[e] for e in eku]), critical=False
        )
    cert = _sign(builder, parent.key if parent is not None else key)
    return Issued(name=name, cert=cert, key=key, parent=parent)


@dataclass(frozen=True)
class PKI:
    """A typical registry PKI: root -> intermediate -> server and client leaves."""

    root: Issued
    intermediate: Issued
    server: Issued
    client: Issued


def make_pki(
    registry: str = "dtr.example.com", *, ip_sans: Iterable[str] = ("127.0.0.1",), prefix: str = ""
) -> PKI:
    """Root, intermediate (pathlen 0), a server cert for ``registry`` (and ``ip_sans``,
    "localhost"), and a clientAuth client cert. ``prefix`` keeps keys of several PKIs apart."""
    root = make_ca(f"{prefix}Test Root CA")
    intermediate = make_ca(f"{prefix}Test Intermediate CA", parent=root, path_length=0)
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    ips = list(ip_sans)
    try:
        ips.append(str(ipaddress.ip_address(host)))
        dns = ["localhost"]
    except ValueError:
        dns = [host, "localhost"]
    server = make_leaf(
        f"{prefix}{host}", intermediate, sans=dns, ip_sans=dict.fromkeys(ips), eku=["serverAuth"]
    )
    client = make_leaf(f"{prefix}node client", intermediate, sans=[], eku=["clientAuth"])
    return PKI(root=root, intermediate=intermediate, server=server, client=client)
