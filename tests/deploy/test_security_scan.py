"""A security scan (checkov) of exactly what ``kubectl apply -k deploy/`` creates: no
finding is left, and every deliberate exception is justified on its object.

checkov lives in a venv of its own (``.venv/checkov``: its pinned dependencies would
downgrade the project's); ``$DTRTRUST_CHECKOV`` or PATH work too. ``--skip-download``
keeps it offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployhelpers import ROOT, Doc, find, require_tool, run

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
# CKV_K8S_38=why (checkov's syntax); the reason must say something.
SKIP_VALUE = re.compile(r"^(CKV2?_K8S_\d+)=(.{20,})$", re.DOTALL)


@pytest.fixture(scope="module")
def checkov() -> Path:
    return require_tool(
        "checkov",
        "DTRTRUST_CHECKOV",
        "python3 -m venv .venv/checkov && .venv/checkov/bin/pip install checkov",
        ROOT / ".venv" / "checkov" / "bin" / "checkov",
    )


def scan(checkov: Path, docs: list[Doc], directory: Path) -> dict[str, Any]:
    directory.mkdir()
    for i, doc in enumerate(docs):
        name = f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        (directory / name).write_text(yaml.safe_dump(doc))
    done = run(
        [
            checkov,
            "--directory",
            directory,
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
            "--quiet",
        ],
        timeout=300,
    )
    assert done.stdout.strip(), f"checkov printed nothing: {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    assert isinstance(report, dict), "one framework, one report"
    return report


def _describe(check: dict[str, Any]) -> str:
    return f"{check['check_id']} {check['check_name']}: {check['resource']}"


def test_rendered_manifests_have_no_unjustified_security_finding(
    checkov: Path, rendered: list[Doc], tmp_path: Path
) -> None:
    report = scan(checkov, rendered, tmp_path / "rendered")
    summary = report["summary"]
    failed = report["results"].get("failed_checks", [])
    assert not failed, "\n".join(_describe(c) for c in failed)
    assert summary["parsing_errors"] == 0
    # Every object was scanned, not silently dropped (checkov counts a workload's pod
    # template as one more resource).
    assert summary["resource_count"] >= len(rendered)
    assert summary["passed"] > 100


def test_every_skipped_check_is_justified_on_its_object(rendered: list[Doc]) -> None:
    skips = {}
    for doc in rendered:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if not SKIP_ANNOTATION.match(key):
                continue
            match = SKIP_VALUE.match(value)
            where = f"{doc['kind']}/{doc['metadata']['name']} {key}"
            assert match, f"{where}: want CKV_K8S_nn=<reason>, got {value!r}"
            skips[(doc["kind"], doc["metadata"]["name"], match[1])] = match[2]
    # Deliberate and reviewed: a new exception must be added here on purpose.
    assert set(skips) == {
        ("Deployment", "dtrtrust-operator", "CKV_K8S_15"),
        ("Deployment", "dtrtrust-operator", "CKV_K8S_38"),
        ("Deployment", "dtrtrust-operator", "CKV_K8S_43"),
        ("Role", "dtrtrust-operator-events", "CKV_K8S_21"),
        ("RoleBinding", "dtrtrust-operator-events", "CKV_K8S_21"),
    }


def test_scan_reports_a_privileged_pod(checkov: Path, rendered: list[Doc], tmp_path: Path) -> None:
    """The scan above can fail: the operator made privileged is caught."""
    bad = yaml.safe_load(yaml.safe_dump(find(rendered, "Deployment", "dtrtrust-operator")))
    bad["metadata"]["annotations"] = {}
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    report = scan(checkov, [bad], tmp_path / "bad")
    failed = {c["check_id"] for c in report["results"].get("failed_checks", [])}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed, failed
