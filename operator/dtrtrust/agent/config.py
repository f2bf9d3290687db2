"""The agent's settings: one object, from flags and the environment, logged once at start."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dtrtrust.contract import DEFAULT_NAMESPACE, NOT_READY_TAINT


@dataclass(frozen=True)
class Config:
    """Agent settings, from flags and the environment; logged once at start."""

    node_name: str
    host_root: Path
    # Namespace of the bundle Secrets and of the DTRTrustNode reports.
    namespace: str = DEFAULT_NAMESPACE
    # Every trust is reconciled this often even without a change (repairs drift).
    resync_seconds: float = 60.0
    # First retry delay after an API error; doubles up to max_backoff_seconds.
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    # How often the runtimes' config files are stat()ed; a change re-runs the
    # effective-trust checks at once instead of at the next resync.
    config_poll_seconds: float = 5.0
    # The startup taint this agent removes from its Node once every trust selecting the
    # node is synced, effective (and verified); "" turns it off. Opt-in on the node side:
    # only nodes registered with the taint have one to remove.
    startup_taint: str = NOT_READY_TAINT
    # One probe of the registry (connect, TLS, /basic_info) must finish within this.
    probe_timeout_seconds: float = 5.0

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        node = args.node_name or env.get("NODE_NAME") or ""
        if not node:
            raise SystemExit("dtrtrust agent: give --node-name or set NODE_NAME")
        return cls(
            node_name=node,
            host_root=Path(args.host_root),
            namespace=args.namespace,
            resync_seconds=float(env.get("DTRTRUST_AGENT_RESYNC_SECONDS", cls.resync_seconds)),
            backoff_seconds=float(env.get("DTRTRUST_AGENT_BACKOFF_SECONDS", cls.backoff_seconds)),
            max_backoff_seconds=float(
                env.get("DTRTRUST_AGENT_MAX_BACKOFF_SECONDS", cls.max_backoff_seconds)
            ),
            probe_timeout_seconds=float(
                env.get("DTRTRUST_AGENT_PROBE_TIMEOUT_SECONDS", cls.probe_timeout_seconds)
            ),
            startup_taint=env.get("DTRTRUST_AGENT_STARTUP_TAINT", cls.startup_taint),
            config_poll_seconds=float(
                env.get("DTRTRUST_AGENT_CONFIG_POLL_SECONDS", cls.config_poll_seconds)
            ),
        )
