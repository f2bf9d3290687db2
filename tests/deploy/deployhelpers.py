"""Helpers for the tests of deploy/ (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STRICT = os.environ.get("DTRTRUST_STRICT") == "1"

Doc = dict[str, Any]


def unavailable(reason: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"{reason} (DTRTRUST_STRICT=1: a missing tool fails)", pytrace=False)
    pytest.skip(reason)


def find_tool(name: str, env: str, *extra: Path) -> Path | None:
    """``$env``, else beside this Python (the venv), else ``extra``, else PATH."""
    candidates: list[str | Path | None] = [
        os.environ.get(env),
        Path(sys.executable).parent / name,
        *extra,
        shutil.which(name),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def require_tool(name: str, env: str, hint: str, *extra: Path) -> Path:
    found = find_tool(name, env, *extra)
    if found is None:
        unavailable(f"{name} not found: {hint}")
    return found


def run(argv: Iterable[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )


def find(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def operator_container(docs: Iterable[Doc]) -> Doc:
    deployment = find(docs, "Deployment", "dtrtrust-operator")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def env_value(container: Doc, name: str) -> Any:
    entries = [e for e in container.get("env") or [] if e["name"] == name]
    assert len(entries) == 1, f"expected one env {name}"
    return entries[0].get("value", entries[0].get("valueFrom"))


def project_version() -> str:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])
