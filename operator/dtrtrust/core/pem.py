"""Strict PEM: the scanner every certificate and key input goes through (pure).

Imports only ``cryptography`` and the standard library (import-linter keeps it so).

* Only ``CERTIFICATE`` blocks in a certificate source, no PEM headers, nothing but
  whitespace around and between blocks, valid base64, DER that parses. Line endings (CRLF,
  CR) and indentation are normalised first, and a leading UTF-8 byte-order mark is ignored
  (editors on Windows add one); everything else is an error naming the source and the block
  (or line), never its content.
* A private key anywhere in a CA source is reported first and its text is never echoed.
* Canonical bytes: every certificate is re-encoded from its DER (64-column base64, ``\\n``
  line endings, one newline after each ``END`` line), so identical certificate sets give
  byte-identical output whatever the input's whitespace or line endings.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtrtrust.core.errors import CertError

_BEGIN = re.compile(r"-----BEGIN ([^-]*)-----")
_END = re.compile(r"-----END ([^-]*)-----")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True)
class Block:
    number: int  # 1-based position in the source
    label: str
    lines: tuple[str, ...]  # base64 body lines, stripped
    headers: bool  # the block had RFC 1421 headers (e.g. Proc-Type:)


def text_lines(data: bytes, source: str, reason: str) -> list[str]:
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


def scan(lines: list[str], source: str, reason: str) -> list[Block]:
    """Split normalised lines into PEM blocks. Structure errors raise ``reason``; the error
    names the block or line, never its content."""
    blocks: list[Block] = []
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
                    f"{safe_label(label)} ends with END {safe_label(end.group(1))}): "
                    "paste the whole block again",
                )
            blocks.append(Block(number, label, tuple(body), headers))
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
            f"block {len(blocks) + 1} in {source} is truncated (no -----END {safe_label(label)}"
            "----- line): paste the whole block again",
        )
    return blocks


def safe_label(label: str) -> str:
    cleaned = "".join(ch for ch in label if ch.isalnum() or ch in " ._")[:40]
    return cleaned or "(empty)"


def decode_body(block: Block, source: str, reason: str, what: str) -> bytes:
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


def parse_certs(data: bytes, source: str, key_advice: str) -> list[x509.Certificate]:
    lines = text_lines(data, source, "InvalidPEM")
    key_block = _private_key_block(lines)
    if key_block is not None:
        raise CertError(
            "InvalidPEM",
            f"a private key was found in {source} (block {key_block}); {key_advice}",
        )
    certs: list[x509.Certificate] = []
    for block in scan(lines, source, "InvalidPEM"):
        if block.label != "CERTIFICATE":
            raise CertError(
                "InvalidPEM",
                f"block {block.number} in {source} is a {safe_label(block.label)} block: only "
                "CERTIFICATE blocks are allowed; remove it",
            )
        der = decode_body(block, source, "InvalidPEM", "CERTIFICATE")
        try:
            cert = x509.load_der_x509_certificate(der)
            # Parse the fields we rely on now, so a malformed certificate fails here, not later.
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            is_ca(cert)
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
    return parse_certs(data, source, _CA_KEY_ADVICE)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def canonical_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
