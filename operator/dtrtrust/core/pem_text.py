"""A structural check of PEM certificate text (pure, standard library only).

The agent must not load ``cryptography`` (it stays small on every node), yet must never
write a ``ca.crt`` that is not PEM certificates. This checks the shape only: one or more
``CERTIFICATE`` blocks, each with matching BEGIN/END lines and a base64 body, and nothing
else but whitespace. The operator parses every certificate with ``cryptography`` before it
publishes (:mod:`dtrtrust.core.pem`); this is the agent's second line of defence against a
Secret someone edited by hand.
"""

from __future__ import annotations

import base64
import binascii
import re

_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(?P<body>[A-Za-z0-9+/=\r\n]*?)-----END CERTIFICATE-----"
)


def certificate_text_problem(data: bytes) -> str | None:
    """None when ``data`` is only PEM CERTIFICATE blocks (and whitespace); otherwise what
    is wrong, in words that never quote the data."""
    blocks = 0
    pos = 0
    for match in _BLOCK.finditer(data):
        if data[pos : match.start()].strip():
            return "it holds text outside the PEM CERTIFICATE blocks"
        body = b"".join(match.group("body").split())
        if not body:
            return f"certificate block {blocks + 1} is empty"
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return f"certificate block {blocks + 1} is not valid base64"
        blocks += 1
        pos = match.end()
    if data[pos:].strip():
        return "it holds text outside the PEM CERTIFICATE blocks"
    if not blocks:
        return "it holds no PEM CERTIFICATE block"
    return None
