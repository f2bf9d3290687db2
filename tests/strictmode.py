"""``DTRTRUST_STRICT=1`` (CI, ``make test``): a missing tool or server fails a test instead of
skipping it, so a green CI can never hide a tier that did not run.

A module of its own (not ``conftest``): every tier has a ``conftest.py``, and ``import
conftest`` would get whichever of them pytest loaded first."""

from __future__ import annotations

import os

import pytest

import dtrstack

STRICT = os.environ.get("DTRTRUST_STRICT") == "1"


def require_binaries(*names: str) -> None:
    """Skip (or, with DTRTRUST_STRICT=1, fail) the test when one of ``names`` is not installed."""
    missing = dtrstack.missing_binaries(names)
    if not missing:
        return
    reason = f"missing {', '.join(missing)}: run `make system-deps` (hack/install-system-deps.sh)"
    if STRICT:
        pytest.fail(f"{reason}; DTRTRUST_STRICT=1 makes this a failure, not a skip", pytrace=False)
    pytest.skip(reason)
