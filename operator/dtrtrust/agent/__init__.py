"""The node agent: the same package, another entry point (``dtrtrust agent``).

``config`` (settings), ``decisions`` (pure: what to sync, remove or keep), ``report``
(the DTRTrustNode), ``policies`` (deletion policies remembered across restarts) and
``loop`` (watches, the sync loop, SIGTERM). It never loads kopf, the ``kubernetes``
client, the operator's modules or ``cryptography`` (import-linter contract), which keeps
it small on every node.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """``dtrtrust agent``: run until SIGTERM/SIGINT."""
    from dtrtrust.agent import loop

    return loop.run(args)
