"""RFC 3339 timestamps, the one formatter and parser of the project (pure).

Kubernetes writes ``2026-12-01T21:36:01Z``: UTC, whole seconds, a ``Z``. Status fields,
conditions, reports and messages all use this form.
"""

from __future__ import annotations

import datetime as dt


def rfc3339(when: dt.datetime) -> str:
    """``when`` (timezone-aware) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    """The inverse of :func:`rfc3339` (also accepts an offset). Raises ValueError."""
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def now_rfc3339() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))
