"""Fixtures shared by every tier: the DTR-like registry and the real clients that talk to it.

A missing prerequisite (a Debian package from `make system-deps`) skips these tests with the
reason, except with ``DTRTRUST_STRICT=1`` (CI, `make test`, `make e2e`), where it fails them: in CI
an end-to-end test must never be skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import dtrstack
from dtrstack import Stack, Tool

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


def _tool(name: str) -> Tool:
    require_binaries(name)
    path = dtrstack.find_binary(name)
    assert path is not None
    return Tool(path)


@pytest.fixture(scope="session")
def dtr_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The running DTR-like registry, one per test session, stopped by PID at the end."""
    require_binaries(*dtrstack.STACK_BINARIES)
    stack = dtrstack.start(tmp_path_factory.mktemp("dtr-stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def curl() -> Tool:
    return _tool("curl")


@pytest.fixture(scope="session")
def openssl() -> Tool:
    return _tool("openssl")


@pytest.fixture(scope="session")
def skopeo() -> Tool:
    return _tool("skopeo")


@pytest.fixture(scope="session")
def ctr() -> Tool:
    """containerd: `ctr content fetch-object --hosts-dir DIR ADDR/REPO:TAG` needs no daemon."""
    return _tool("ctr")
