"""The single-host commands a person or a script runs day to day, against the DTR-like
registry: ``apply --dry-run``, ``apply -o json``, ``apply -v`` after the subcommand,
``status``, ``inspect -o json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import new_host, pinned_trust, run_dtrtrust, tls_secret, write_manifest

from dtrstack import Stack

pytestmark = pytest.mark.registry


def _manifest(stack: Stack, tmp_path: Path) -> Path:
    return write_manifest(
        tmp_path / "trust.yaml",
        # Not docker: dockerd never reads certs.d for a loopback registry (NotEffective).
        pinned_trust(stack, "dtr", targets=["containers", "containerd"]),
        tls_secret(stack.client_cert, stack.client_key),
    )


def test_dry_run_lists_the_files_it_would_add_then_nothing_once_applied(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    manifest = _manifest(dtr_stack, tmp_path)
    host = new_host(tmp_path)

    before = host.apply(manifest, "--dry-run")
    files_after_dry_run = host.node_files()
    applied = host.apply(manifest)
    again = host.apply(manifest, "--dry-run")

    assert before.returncode == 0, before.stdout + before.stderr
    added = re.findall(r"^  add\s+(\S+)$", before.stdout, re.MULTILINE)
    assert f"etc/containers/certs.d/{dtr_stack.address}/client.key" in added
    assert f"etc/containerd/certs.d/{dtr_stack.address}/hosts.toml" in added
    assert len(added) == 7
    assert files_after_dry_run == {}
    assert applied.returncode == 0, applied.stderr
    assert "  nothing to change" in again.stdout
    assert "(7 file(s) already as they should be)" in again.stdout


def test_apply_json_output_and_status_table_for_scripts_and_people(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    manifest = _manifest(dtr_stack, tmp_path)
    host = new_host(tmp_path)

    applied = host.apply(manifest, "-o", "json", "-v")
    table = run_dtrtrust("status", "--host-root", host.root)

    assert applied.returncode == 0, applied.stderr
    (item,) = json.loads(applied.stdout)["items"]
    ready = {c["type"]: c["status"] for c in item["status"]["conditions"]}["Ready"]
    assert ready == "True"
    # -v after the subcommand: INFO lines on stderr, each with a UTC timestamp.
    info = [line for line in applied.stderr.splitlines() if " INFO " in line]
    assert info
    assert all(re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO ", line) for line in info)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "REGISTRY", "READY", "REASON", "FILES", "EXPIRES"]
    assert row.split()[:5] == ["dtr", dtr_stack.address, "True", "Ready", "7"]


def test_inspect_json_carries_the_pin_to_paste_and_the_verdict(dtr_stack: Stack) -> None:
    result = run_dtrtrust("inspect", dtr_stack.address, "-o", "json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fetch"] == {"pinnedSHA256": [dtr_stack.root_sha256]}
    assert report["checks"]["docker"]["ok"] is True
    assert report["healthy"] is True
