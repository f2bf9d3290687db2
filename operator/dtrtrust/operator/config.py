"""The operator's settings: one object, from flags and the environment, logged once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dtrtrust.contract import DEFAULT_NAMESPACE


@dataclass(frozen=True)
class Config:
    """Operator settings, from flags and the environment; logged once at start."""

    # Namespace of the bundle Secrets, the source refs, node reports and the agent.
    namespace: str = DEFAULT_NAMESPACE
    # Port of /metrics (Prometheus); kopf's /healthz liveness endpoint is on port + 1.
    metrics_port: int = 8080
    # How often every DTRTrust is reconciled again (fetches honour refreshInterval).
    resync_seconds: float = 60.0
    # Connect/read timeout for the registry (CA fetch, TLS verification, /basic_info).
    registry_timeout: float = 10.0
    # Trusts reconciled at once (worker threads of the queue and of a resync round; each
    # reconcile mostly waits for the API server, so this is how many writes are in flight).
    concurrency: int = 16
    # Connect and read timeout (seconds) of every Kubernetes API call.
    api_connect_timeout: float = 5.0
    api_read_timeout: float = 30.0
    # First retry delay after a temporary failure; doubles up to max_backoff_seconds.
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            namespace=env.get("DTRTRUST_NAMESPACE", cls.namespace),
            metrics_port=int(env.get("DTRTRUST_METRICS_PORT", cls.metrics_port)),
            resync_seconds=float(env.get("DTRTRUST_RESYNC_SECONDS", cls.resync_seconds)),
            registry_timeout=float(env.get("DTRTRUST_REGISTRY_TIMEOUT", cls.registry_timeout)),
            concurrency=max(1, int(env.get("DTRTRUST_CONCURRENCY", cls.concurrency))),
            api_connect_timeout=float(
                env.get("DTRTRUST_API_CONNECT_TIMEOUT", cls.api_connect_timeout)
            ),
            api_read_timeout=float(env.get("DTRTRUST_API_READ_TIMEOUT", cls.api_read_timeout)),
            backoff_seconds=float(env.get("DTRTRUST_BACKOFF_SECONDS", cls.backoff_seconds)),
            max_backoff_seconds=float(
                env.get("DTRTRUST_MAX_BACKOFF_SECONDS", cls.max_backoff_seconds)
            ),
        )
