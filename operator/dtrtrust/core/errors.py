"""The error every certificate-core function raises for bad input (no imports)."""

from __future__ import annotations


class CertError(ValueError):
    """Invalid certificate input. ``reason`` is a CamelCase condition reason
    (InvalidPEM, NotACA, Expired, NotYetValid, Empty, TooLarge, KeyMismatch, NotClientAuth,
    EncryptedKey, InvalidKey, InvalidFingerprint, InvalidPassword). ``str()`` is one line that
    says what is wrong and what to do, and never contains key material."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
