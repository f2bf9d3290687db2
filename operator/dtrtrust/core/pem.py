"""The certificate core: pure functions over bytes, ``now`` passed in.

Imports only ``cryptography`` and the standard library (import-linter keeps it so).
Everything that the operator, the agent and ``dtrtrust apply`` decide about
certificates is decided here.

Decisions (also in ARCHITECTURE.md):

* **Strict PEM.** Only ``CERTIFICATE`` blocks, no PEM headers, nothing but whitespace
  around and between blocks, valid base64, DER that parses. Line endings (CRLF, CR) and
  indentation are normalised first, and a leading UTF-8 byte-order mark is ignored (editors
  on Windows add one); everything else is an error naming the source and the block (or line).
  A private key anywhere in a CA source is reported first and its text is never echoed.
* **Bundle order: by subject (RFC 4514 string), then by SHA-256 of the DER.** Adding or
  removing one certificate changes one place in the file, and a renewed CA sits next to the
  one it replaces, so diffs of ``ca.crt`` stay small and readable. Chain order does not matter
  in a trust bundle (Go, OpenSSL and containerd build a pool from it).
* **Canonical bytes.** Every certificate is re-encoded from its DER (64-column base64, ``\\n``
  line endings, one newline after each ``END`` line), so identical certificate sets give
  byte-identical bundles, whatever the input order, duplicates, whitespace or line endings.
* **Client key kept as given.** A valid client key is passed on in the format the user chose
  (PKCS#1, SEC1 or PKCS#8): same label, same base64 lines; only line endings, indentation and
  surrounding whitespace are normalised. We never silently change a user's key format.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

MAX_BUNDLE_BYTES = 1 << 20  # 1 MiB of PEM for one composed bundle
EXPIRY_WARNING = dt.timedelta(days=30)
PKCS12_KDF_ROUNDS = 600_000  # PBKDF2-HMAC-SHA256 iterations (OWASP 2023 recommendation)

OPENSSL_FINGERPRINT_HINT = "openssl x509 -in ca.crt -noout -fingerprint -sha256"

_BEGIN = re.compile(r"-----BEGIN ([^-]*)-----")
_END = re.compile(r"-----END ([^-]*)-----")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_SHA256_FORM = re.compile(r"sha256:([0-9a-f]{64})")
_OPENSSL_FORM = re.compile(r"(?:sha256 fingerprint=)?((?:[0-9a-f]{2}:){31}[0-9a-f]{2})")
_CLIENT_AUTH_OIDS = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


class CertError(ValueError):
    """Invalid certificate input. ``reason`` is a CamelCase condition reason
    (InvalidPEM, NotACA, Expired, NotYetValid, Empty, TooLarge, KeyMismatch, NotClientAuth,
    EncryptedKey, InvalidKey, InvalidFingerprint, InvalidPassword). ``str()`` is one line that
    says what is wrong and what to do, and never contains key material."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
            "notBefore": _rfc3339(self.not_before),
            "notAfter": _rfc3339(self.not_after),
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


@dataclass(frozen=True)
class ClientPair:
    cert_pem: bytes  # normalised PEM (leaf first, then any chain certs given)
    key_pem: bytes  # the key as given (PKCS#1, SEC1 or PKCS#8), whitespace/line endings normalised
    summary: CertSummary  # of the leaf
    warnings: tuple[str, ...]  # e.g. expires within 30 days


# --------------------------------------------------------------------------- strict PEM


@dataclass(frozen=True)
class _Block:
    number: int  # 1-based position in the source
    label: str
    lines: tuple[str, ...]  # base64 body lines, stripped
    headers: bool  # the block had RFC 1421 headers (e.g. Proc-Type:)


def _text_lines(data: bytes, source: str, reason: str) -> list[str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise CertError(
            reason,
            f"{source} is not PEM text (it holds non-ASCII bytes): give the PEM file, "
            "not a DER or binary file (convert with `openssl x509 -inform der -in FILE`)",
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip() for line in text.split("\n")]


def _scan(lines: list[str], source: str, reason: str) -> list[_Block]:
    """Split normalised lines into PEM blocks. Structure errors raise ``reason``; the error
    names the block or line, never its content."""
    blocks: list[_Block] = []
    label: str | None = None
    body: list[str] = []
    headers = False
    for lineno, line in enumerate(lines, start=1):
        if label is None:
            if not line:
                continue
            begin = _BEGIN.fullmatch(line)
            if begin is None:
                raise CertError(
                    reason,
                    f"{source} has text outside PEM blocks at line {lineno}: only "
                    "-----BEGIN/END----- blocks and whitespace are allowed; remove comments "
                    "and other text",
                )
            label, body, headers = begin.group(1), [], False
            continue
        number = len(blocks) + 1
        end = _END.fullmatch(line)
        if end is not None:
            if end.group(1) != label:
                raise CertError(
                    reason,
                    f"block {number} in {source} is truncated or mismatched (BEGIN "
                    f"{_safe_label(label)} ends with END {_safe_label(end.group(1))}): "
                    "paste the whole block again",
                )
            blocks.append(_Block(number, label, tuple(body), headers))
            label = None
        elif _BEGIN.fullmatch(line):
            raise CertError(
                reason,
                f"block {number} in {source} is truncated (a new BEGIN line at line {lineno} "
                "comes before its END line): paste the whole block again",
            )
        elif "-----" in line:
            raise CertError(
                reason,
                f"block {number} in {source} has a malformed line {lineno}: each -----BEGIN and "
                "-----END line must stand on a line of its own",
            )
        elif ":" in line:
            headers = True
        elif line:
            body.append(line)
    if label is not None:
        raise CertError(
            reason,
            f"block {len(blocks) + 1} in {source} is truncated (no -----END {_safe_label(label)}"
            "----- line): paste the whole block again",
        )
    return blocks


def _safe_label(label: str) -> str:
    cleaned = "".join(ch for ch in label if ch.isalnum() or ch in " ._")[:40]
    return cleaned or "(empty)"


def _decode_body(block: _Block, source: str, reason: str, what: str) -> bytes:
    if block.headers:
        raise CertError(
            reason,
            f"block {block.number} in {source} has PEM headers (such as Proc-Type:), which are "
            f"not allowed: give a plain {what} block",
        )
    ok = bool(block.lines) and all(_BASE64_LINE.fullmatch(line) for line in block.lines)
    joined = "".join(block.lines)
    if ok and "=" in joined.rstrip("="):
        ok = False  # padding in the middle
    try:
        der = base64.b64decode(joined, validate=True) if ok else b""
    except binascii.Error:
        der = b""
    if not der:
        raise CertError(
            reason,
            f"block {block.number} in {source} is not valid base64 (damaged or truncated): "
            "copy the block again from the original file",
        )
    return der


def _private_key_block(lines: list[str]) -> int | None:
    """Number of the first block whose label names a private key, if any."""
    number = 0
    for line in lines:
        begin = _BEGIN.search(line)
        if begin is not None:
            number += 1
            if "PRIVATE KEY" in begin.group(1).upper():
                return number
    return None


def _parse_certs(data: bytes, source: str, key_advice: str) -> list[x509.Certificate]:
    lines = _text_lines(data, source, "InvalidPEM")
    key_block = _private_key_block(lines)
    if key_block is not None:
        raise CertError(
            "InvalidPEM",
            f"a private key was found in {source} (block {key_block}); {key_advice}",
        )
    certs: list[x509.Certificate] = []
    for block in _scan(lines, source, "InvalidPEM"):
        if block.label != "CERTIFICATE":
            raise CertError(
                "InvalidPEM",
                f"block {block.number} in {source} is a {_safe_label(block.label)} block: only "
                "CERTIFICATE blocks are allowed; remove it",
            )
        der = _decode_body(block, source, "InvalidPEM", "CERTIFICATE")
        try:
            cert = x509.load_der_x509_certificate(der)
            # Parse the fields we rely on now, so a malformed certificate fails here, not later.
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            _is_ca(cert)
        except (ValueError, x509.DuplicateExtension):
            raise CertError(
                "InvalidPEM",
                f"block {block.number} in {source} is not a parseable X.509 certificate: "
                "check it with `openssl x509 -noout -text`",
            ) from None
        certs.append(cert)
    return certs


_CA_KEY_ADVICE = (
    "a private key must not be in a CA bundle: remove it (and treat that key as exposed)"
)


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Strict PEM: only CERTIFICATE blocks, no PEM headers, nothing but whitespace
    between blocks. Returns cryptography x509.Certificate objects. ``source`` names
    the input in error messages. A private key block is rejected without echoing it."""
    return _parse_certs(data, source, _CA_KEY_ADVICE)


# --------------------------------------------------------------------------- summaries


def hostname_matches(host: str, names: Sequence[str]) -> bool:
    """Whether a certificate valid for ``names`` (its subjectAltName DNS names and IPs)
    is valid for ``host``, by the rules Go's crypto/x509 applies for docker and
    containerd: IPs match IP entries only; DNS names case-insensitively; a wildcard
    only as the whole leftmost label, standing for exactly one label."""
    host = host.strip().rstrip(".").lower()
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for name in names:
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                pass
            continue
        name = name.strip().rstrip(".").lower()
        if name == host:
            return True
        label, _, rest = host.partition(".")
        if name.startswith("*.") and label and rest and rest == name[2:]:
            return True
    return False


def fingerprint_der(der: bytes) -> str:
    """Canonical "sha256:<hex>" of DER bytes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def openssl_fingerprint(fingerprint: str) -> str:
    """A canonical "sha256:<hex>" in the form openssl prints: "AB:CD:..."."""
    digest = parse_fingerprint(fingerprint).removeprefix("sha256:").upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def describe(cert: x509.Certificate) -> CertSummary:
    """The status summary of one certificate."""
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sha256=fingerprint_der(cert.public_bytes(serialization.Encoding.DER)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=_is_ca(cert),
    )


def summaries_from_pem(data: bytes, source: str) -> list[CertSummary]:
    """Strict-parse ``data`` and summarise every certificate, in input order, unfiltered."""
    return [describe(c) for c in parse_certificates(data, source=source)]


def _canonical_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# --------------------------------------------------------------------------- bundle


def _require_aware(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise TypeError("now must be a timezone-aware datetime (e.g. datetime.now(UTC))")


def _check_size(what: str, size: int, max_bytes: int, advice: str) -> None:
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
    """Compose a CA bundle from (source name, PEM bytes) pairs: strict parse, keep
    only CA certificates, drop expired ones (warning), dedupe by DER SHA-256, sort
    deterministically (subject, then SHA-256). Empty result -> CertError(Empty/NotACA/Expired):
    Expired when at least one CA certificate was found but every one had expired, NotACA when
    only non-CA certificates were found, Empty when there were no certificates at all."""
    _require_aware(now)
    total = sum(len(data) for _, data in sources)
    _check_size(
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
    kept: list[tuple[x509.Certificate, CertSummary]] = []
    warnings: list[str] = []
    non_ca = expired = 0
    for cert, s in ordered:
        where = _from(origins[s.sha256])
        if not s.is_ca:
            non_ca += 1
            warnings.append(
                f"dropped {s.label} from {where}: not a CA certificate (no basicConstraints "
                "CA:TRUE); a trust bundle holds only CA certificates"
            )
        elif now > s.not_after:
            expired += 1
            warnings.append(
                f"dropped {s.label} from {where}: expired at {_rfc3339(s.not_after)}; "
                "replace it with the renewed CA certificate"
            )
        else:
            kept.append((cert, s))
            if now < s.not_before:
                warnings.append(
                    f"{s.label} from {where} is not valid yet (from {_rfc3339(s.not_before)}); "
                    "kept, but clients will reject chains through it until then"
                )
            elif s.not_after - now <= EXPIRY_WARNING:
                warnings.append(
                    f"{s.label} from {where} expires at {_rfc3339(s.not_after)}, within "
                    f"{EXPIRY_WARNING.days} days: add its renewal to the sources"
                )

    names = _from(name for name, _ in sources) or "(no sources)"
    if not kept:
        if expired:
            extra = f" (and {non_ca} non-CA certificate(s) were dropped)" if non_ca else ""
            raise CertError(
                "Expired",
                f"every CA certificate in {names} has expired{extra}: add the current CA "
                "certificate; the last good bundle stays in place",
            )
        if non_ca:
            raise CertError(
                "NotACA",
                f"{names} hold(s) no CA certificate, only {non_ca} non-CA certificate(s) "
                "(e.g. a server certificate): give the CA that issued them (basicConstraints "
                "CA:TRUE)",
            )
        raise CertError(
            "Empty",
            f"{names} hold(s) no certificate at all: give at least one CA certificate in PEM",
        )

    pem = _canonical_pem(cert for cert, _ in kept)
    _check_size(
        "the composed CA bundle", len(pem), max_bytes, "remove certificates you do not need"
    )
    return Bundle(
        pem=pem,
        sha256="sha256:" + hashlib.sha256(pem).hexdigest(),
        certificates=tuple(s for _, s in kept),
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- client pair


def _load_key(key_pem: bytes, source: str) -> tuple[PrivateKey, bytes]:
    """Strict-parse one unencrypted private key. Returns the key and its normalised PEM."""
    lines = _text_lines(key_pem, source, "InvalidKey")
    blocks = _scan(lines, source, "InvalidKey")
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
            f"{source} holds a {_safe_label(block.label)} block, not a private key: give a "
            "PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )
    _decode_body(block, source, "InvalidKey", block.label)
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


def _leaf_and_chain(cert_pem: bytes, source: str) -> list[x509.Certificate]:
    certs = _parse_certs(
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


def _check_match(
    leaf: x509.Certificate, key: PrivateKey, cert_source: str, key_source: str
) -> None:
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
    _require_aware(now)
    certs = _leaf_and_chain(cert_pem, cert_source)
    leaf = certs[0]
    key, normalised_key = _load_key(key_pem, key_source)
    _check_match(leaf, key, cert_source, key_source)
    summary = describe(leaf)
    if now > summary.not_after:
        raise CertError(
            "Expired",
            f"the client certificate {summary.label} expired at {_rfc3339(summary.not_after)}: "
            "renew it and update the Secret",
        )
    if now < summary.not_before:
        raise CertError(
            "NotYetValid",
            f"the client certificate {summary.label} is not valid until "
            f"{_rfc3339(summary.not_before)}: check the issuer's clock or wait until then",
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
            f"the client certificate {summary.label} expires at {_rfc3339(summary.not_after)}, "
            f"within {EXPIRY_WARNING.days} days: renew it"
        )
    return ClientPair(
        cert_pem=_canonical_pem(certs),
        key_pem=normalised_key,
        summary=summary,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- fingerprints, hashes


def parse_fingerprint(text: str) -> str:
    """Accept "sha256:<64 hex>" or openssl's "AB:CD:..." (32 octets), any case, with
    surrounding whitespace; also the whole line openssl prints ("sha256 Fingerprint=AB:..").
    Returns the canonical "sha256:<lowercase hex>"."""
    cleaned = text.strip().lower()
    m = _SHA256_FORM.fullmatch(cleaned)
    if m is not None:
        return "sha256:" + m.group(1)
    m = _OPENSSL_FORM.fullmatch(cleaned)
    if m is not None:
        return "sha256:" + m.group(1).replace(":", "")
    raise CertError(
        "InvalidFingerprint",
        'invalid SHA-256 fingerprint: use "sha256:<64 hex digits>" or openssl\'s '
        '"AB:CD:..." form (32 colon-separated octets); get it with '
        f"`{OPENSSL_FINGERPRINT_HINT}`",
    )


_CONTENT_HASH_TAG = b"dtrtrust-content-v1\0"


def content_hash(files: Mapping[str, bytes]) -> str:
    """ "sha256:<hex>" over sorted (name, bytes) pairs, unambiguous framing:
    a version tag, the file count, then per file (sorted by name) the 8-byte big-endian
    length and UTF-8 bytes of the name, and the 8-byte length and bytes of the content."""
    h = hashlib.sha256(_CONTENT_HASH_TAG)
    h.update(len(files).to_bytes(8, "big"))
    for name in sorted(files):
        encoded = name.encode("utf-8")
        data = files[name]
        h.update(len(encoded).to_bytes(8, "big"))
        h.update(encoded)
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------- PKCS#12


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
    certs = _leaf_and_chain(cert_pem, "the certificate file")
    leaf = certs[0]
    key, _ = _load_key(key_pem, "the key file")
    _check_match(leaf, key, "the certificate file", "the key file")
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
