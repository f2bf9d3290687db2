"""The agent's memory of each trust's deletion policy, across restarts.

A trust whose Secret is gone is removed with ``Delete`` and kept with ``Retain``: the
policy of the last Secret seen, remembered next to the writer's ownership record, so an
agent restarted after the deletion still knows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from dtrtrust.contract import DELETION_POLICIES
from dtrtrust.node import fs, writer

log = logging.getLogger("dtrtrust.agent")

AGENT_STATE_FILE = "agent.json"  # under writer.STATE_DIR


def load_policies(host_root: Path) -> dict[str, str]:
    """Remembered deletion policies (trust -> Delete|Retain); {} when none."""
    rel = f"{writer.STATE_DIR}/{AGENT_STATE_FILE}"
    try:
        data = fs.read_file(host_root, rel)
        if data is None:
            return {}
        raw = json.loads(data)
    except (OSError, ValueError, writer.WriterError) as exc:
        log.warning("cannot read %s (%s); assuming deletionPolicy Delete", rel, exc)
        return {}
    policies = raw.get("policies") if isinstance(raw, dict) else None
    if not isinstance(policies, dict):
        return {}
    return {str(k): str(v) for k, v in policies.items() if v in DELETION_POLICIES}


def save_policies(host_root: Path, policies: Mapping[str, str]) -> None:
    """Atomically, next to the writer's ownership record, never through a link."""
    data = json.dumps({"version": 1, "policies": dict(sorted(policies.items()))}).encode()
    fs.ensure_dir(host_root, writer.STATE_DIR, writer.STATE_MODE)
    fs.write_file(host_root, f"{writer.STATE_DIR}/{AGENT_STATE_FILE}", data, 0o600)
