"""Fingerprints and content hashes (pure, standard library only).

No ``cryptography`` here: the agent checks a bundle Secret's data against its content
hash with this module and must not load the certificate stack.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from dtrtrust.core.errors import CertError

OPENSSL_FINGERPRINT_HINT = "openssl x509 -in ca.crt -noout -fingerprint -sha256"

_SHA256_FORM = re.compile(r"sha256:([0-9a-f]{64})")
_OPENSSL_FORM = re.compile(r"(?:sha256 fingerprint=)?((?:[0-9a-f]{2}:){31}[0-9a-f]{2})")


def fingerprint_der(der: bytes) -> str:
    """Canonical "sha256:<hex>" of DER bytes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def openssl_fingerprint(fingerprint: str) -> str:
    """A canonical "sha256:<hex>" in the form openssl prints: "AB:CD:..."."""
    digest = parse_fingerprint(fingerprint).removeprefix("sha256:").upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


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


def pin_line(fingerprints: Sequence[str]) -> str:
    """The YAML line to paste: ``pinnedSHA256: ["sha256:..", ...]``."""
    return "pinnedSHA256: [" + ", ".join(f'"{fp}"' for fp in fingerprints) + "]"
