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
from dtrtrust.node import nofollow, writer

log = logging.getLogger("dtrtrust.agent")

AGENT_STATE_FILE = "agent.json"  # under writer.STATE_DIR


def load_policies(host_root: Path) -> dict[str, str]:
    """Remembered deletion policies (trust -> Delete|Retain); {} when none. Read
    without following links (a planted link is logged and ignored)."""
    rel = f"{writer.STATE_DIR}/{AGENT_STATE_FILE}"
    try:
        data = nofollow.read_file(host_root, rel)
        if data is None:
            return {}
        raw = json.loads(data)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, writer.WriterError) as exc:
        log.warning("cannot read %s (%s); assuming deletionPolicy Delete", host_root / rel, exc)
        return {}
    policies = raw.get("policies") if isinstance(raw, dict) else None
    if not isinstance(policies, dict):
        return {}
    return {str(k): str(v) for k, v in policies.items() if v in DELETION_POLICIES}


def save_policies(host_root: Path, policies: Mapping[str, str]) -> None:
    """Atomically (temp file, fsync, rename) next to the writer's ownership record,
    through the no-follow walk: a link planted there is refused (OSError), never
    followed."""
    data = json.dumps({"version": 1, "policies": dict(sorted(policies.items()))}).encode()
    try:
        nofollow.write_file(
            host_root, f"{writer.STATE_DIR}/{AGENT_STATE_FILE}", data, 0o600, dir_mode=0o700
        )
    except writer.WriterError as exc:
        raise OSError(str(exc)) from None
