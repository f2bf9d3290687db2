"""The agent runs on every node: its entry point must not load the heavy libraries."""

from __future__ import annotations

import subprocess
import sys


def test_dtrtrust_agent_entry_point_loads_neither_kubernetes_nor_kopf_nor_cryptography() -> None:
    code = (
        "import sys, dtrtrust.cli, dtrtrust.agent\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'kubernetes', 'kopf', 'cryptography', 'prometheus_client'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
