"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua 5.1 (lupa),
the version Argo CD's gopher-lua implements, against sample DTRTrusts."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import yaml
from deployhelpers import DEPLOY

lupa = pytest.importorskip("lupa.lua51", reason="pip install lupa")

ARGOCD = DEPLOY / "argocd"
LUA = (ARGOCD / "health.lua").read_text()
KEY = "resource.customizations.health.dtrtrust.io_DTRTrust"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check as Argo CD does: ``obj`` is a global, the chunk returns a table."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(LUA)
    return str(result["status"]), str(result["message"])


def cond(
    type_: str, status: str, reason: str, message: str = "", gen: int | None = 3
) -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if gen is not None:
        c["observedGeneration"] = gen
    return c


def trust(
    conditions: list[dict[str, Any]] | None, *, generation: int = 3, observed: int | None = 3
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "dtrtrust.io/v1alpha1",
        "kind": "DTRTrust",
        "metadata": {"name": "dtr-prod", "generation": generation},
        "spec": {"registry": "dtr.example.com:4443"},
    }
    if conditions is not None:
        obj["status"] = {"conditions": conditions}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


OK = [
    cond("CAAvailable", "True", "Fetched"),
    cond("BundleValid", "True", "Valid"),
    cond("RegistryVerified", "True", "Verified"),
    cond("NodesSynced", "True", "Synced"),
    cond("Ready", "True", "Ready", "The bundle is published and every selected node has it."),
]


def replaced(conditions: list[dict[str, Any]], *changes: dict[str, Any]) -> list[dict[str, Any]]:
    by_type = {c["type"]: c for c in changes}
    return [by_type.get(c["type"], c) for c in conditions]


SYNCING = replaced(
    OK,
    cond("NodesSynced", "False", "Progressing", "1 of 3 nodes have the bundle."),
    cond("Ready", "False", "Progressing", "NodesSynced: 1 of 3 nodes have the bundle."),
)
PIN_MISMATCH = replaced(
    OK,
    cond("CAAvailable", "False", "FingerprintMismatch", "the /ca certificate is not pinned"),
    cond("Ready", "False", "FingerprintMismatch", "CAAvailable: the /ca certificate is not pinned"),
)

# A registry outage with an unchanged spec: the last good bundle serves every node.
OUTAGE = replaced(
    OK,
    cond("CAAvailable", "False", "FetchFailed", "connection refused (refresh failing since T)"),
    cond("Ready", "True", "Ready", "The last good bundle is published; its refresh is failing."),
)

CASES = [
    pytest.param(
        trust(OUTAGE),
        "Healthy",
        "CAAvailable: connection refused (refresh failing since T)",
        id="registry-outage-with-the-last-good-bundle-on-every-node",
    ),
    pytest.param(trust(None), "Progressing", "report a status", id="no-status-yet"),
    pytest.param(trust([]), "Progressing", "report a status", id="no-conditions-yet"),
    pytest.param(trust(OK), "Healthy", "every selected node has it", id="ready-current"),
    pytest.param(
        trust(OK, generation=4, observed=3), "Progressing", "generation 4", id="status-of-old-spec"
    ),
    pytest.param(
        trust(OK, observed=None), "Progressing", "generation 3", id="no-observed-generation"
    ),
    pytest.param(
        trust(replaced(OK, cond("Ready", "True", "Ready", "old", gen=2))),
        "Progressing",
        "Ready condition of generation 3",
        id="ready-condition-of-old-generation",
    ),
    pytest.param(
        trust(replaced(OK, cond("Ready", "True", "Ready", "ok", gen=None))),
        "Healthy",
        "ok",
        id="ready-condition-without-generation-trusts-status",
    ),
    pytest.param(
        trust([c for c in OK if c["type"] != "Ready"]),
        "Progressing",
        "Ready condition",
        id="no-ready-condition",
    ),
    pytest.param(trust(SYNCING), "Progressing", "1 of 3 nodes", id="nodes-syncing"),
    pytest.param(
        trust(
            replaced(
                OK,
                cond("NodesSynced", "False", "NodeErrors", "node-2: read-only file system"),
                cond("Ready", "False", "NodeErrors", "NodesSynced: node-2: read-only file system"),
            )
        ),
        "Degraded",
        "NodesSynced: node-2: read-only file system",
        id="node-errors",
    ),
    pytest.param(
        trust(PIN_MISMATCH),
        "Degraded",
        "CAAvailable: the /ca certificate is not pinned",
        id="wrong-pin",
    ),
    pytest.param(
        trust(
            replaced(
                SYNCING,
                cond("RegistryVerified", "False", "HostnameMismatch", "valid for x, not y"),
            )
        ),
        "Degraded",
        "NodesSynced: 1 of 3 nodes",
        id="failure-while-nodes-sync-is-degraded",
    ),
    pytest.param(
        trust(
            replaced(
                OK,
                cond("NodesSynced", "Unknown", "NotPublished", "No bundle has been published yet."),
                cond("Ready", "False", "NotPublished", "NodesSynced: No bundle yet."),
            )
        ),
        "Progressing",
        "No bundle yet",
        id="unknown-condition-is-not-a-failure",
    ),
    pytest.param(
        trust([cond("Ready", "False", "InvalidSpec", "spec.registry: uppercase is not allowed")]),
        "Degraded",
        "spec.registry: uppercase",
        id="invalid-spec-only-ready",
    ),
    pytest.param(
        trust([cond("Ready", "Unknown", "Reconciling", "working")]),
        "Progressing",
        "working",
        id="ready-unknown",
    ),
    pytest.param(
        trust(
            [
                cond("CAAvailable", "False", "FetchFailed", "connection refused"),
                cond("Ready", "False", "FetchFailed", ""),
            ]
        ),
        "Degraded",
        "CAAvailable: connection refused",
        id="empty-ready-message-falls-back-to-the-failing-condition",
    ),
]


@pytest.mark.parametrize(("obj", "status", "message"), CASES)
def test_health_of_sample_dtrtrusts(obj: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = health(obj)
    assert got_status == status
    assert message in got_message


def test_old_failure_is_not_reported_once_the_spec_changed() -> None:
    """A fixed spec must not show the previous generation's failure as Degraded."""
    assert health(trust(PIN_MISMATCH, generation=4, observed=3))[0] == "Progressing"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("argocd_generate", ARGOCD / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_inlines_health_lua_byte_for_byte() -> None:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"][KEY] == LUA


def test_argocd_cm_is_what_generate_py_writes() -> None:
    generate = _generator()
    assert (ARGOCD / "argocd-cm.yaml").read_text() == generate.render(LUA)


def test_generate_refuses_lua_that_yaml_would_change() -> None:
    generate = _generator()
    for bad in ("return 1  \n", "return 1", "return 1\n\n", "\treturn 1\n"):
        with pytest.raises(ValueError, match=r"health\.lua"):
            generate.render(bad)
