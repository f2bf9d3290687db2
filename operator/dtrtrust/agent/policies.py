"""The agent's memory of each trust's deletion policy, across restarts.

A trust whose Secret is gone is removed with ``Delete`` and kept with ``Retain``: the
policy of the last Secret seen, remembered next to the writer's ownership record, so an
agent restarted after the deletion still knows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from dtrtrust.contract import DELETION_POLICIES
from dtrtrust.node import writer

log = logging.getLogger("dtrtrust.agent")

AGENT_STATE_FILE = "agent.json"  # under writer.STATE_DIR


def load_policies(host_root: Path) -> dict[str, str]:
    """Remembered deletion policies (trust -> Delete|Retain); {} when none."""
    path = host_root / writer.STATE_DIR / AGENT_STATE_FILE
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); assuming deletionPolicy Delete", path, exc)
        return {}
    policies = raw.get("policies") if isinstance(raw, dict) else None
    if not isinstance(policies, dict):
        return {}
    return {str(k): str(v) for k, v in policies.items() if v in DELETION_POLICIES}


def save_policies(host_root: Path, policies: Mapping[str, str]) -> None:
    """Atomically (temp file, fsync, rename) next to the writer's ownership record."""
    directory = host_root / writer.STATE_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / AGENT_STATE_FILE
    tmp = directory / f".{AGENT_STATE_FILE}.tmp"
    data = json.dumps({"version": 1, "policies": dict(sorted(policies.items()))}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
