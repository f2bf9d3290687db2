"""``dtrtrust operator`` as a real process, for the integration tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class OperatorProcess:
    """``dtrtrust operator`` running as a real process under the dtrtrust-operator
    ServiceAccount (exactly the RBAC in deploy/)."""

    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    kubeconfig: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean stop is part of what is tested), SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the operator exited with {proc.returncode}:\n{log.read_text()[-4000:]}",
                pytrace=False,
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(
        f"the operator did not serve /metrics within 60 s:\n{log.read_text()[-4000:]}",
        pytrace=False,
    )
