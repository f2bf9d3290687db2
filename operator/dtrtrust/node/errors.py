"""The node package's two error types; every message is one line saying what to do."""

from __future__ import annotations


class WriterError(Exception):
    """A per-directory (or per-file) problem under the host root."""


class ConflictError(WriterError):
    """The directory holds something we must not touch (foreign hosts.toml, other trust)."""
