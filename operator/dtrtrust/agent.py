"""The node agent (``dtrtrust agent``): placeholder until the agent lands."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    raise SystemExit("dtrtrust agent: not implemented yet")
