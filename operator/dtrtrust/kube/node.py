"""The agent's API layer (pykube-ng): placeholder until the agent lands."""

from __future__ import annotations
