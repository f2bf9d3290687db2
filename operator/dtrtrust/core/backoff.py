"""Retry delays: the one backoff of the project (pure)."""

from __future__ import annotations

import random


def exponential(doublings: int, base: float, cap: float) -> float:
    """``base`` doubled ``doublings`` times, at most ``cap``."""
    return float(min(base * (2 ** max(doublings, 0)), cap))


def jittered(delay: float, spread: float = 0.2) -> float:
    """``delay`` +- ``spread`` (a fraction), so the agents of many nodes spread out."""
    return float(delay * random.uniform(1 - spread, 1 + spread))  # noqa: S311 - jitter, not crypto
