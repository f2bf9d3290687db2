"""A host that cannot take the files: `dtrtrust apply` says so in one line and exits 3.

A disk that fills up (a small tmpfs) and a read-only host root (a read-only bind mount)
are real mounts made for the test (root only) and unmounted in ``finally``; the writer is
the real one. The previous files must stay exactly as they were (bytes, inode, mtime).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CONTAINERD_CONFIG, Host, pinned_trust, tls_secret, write_manifest

from dtrstack import Stack

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

EXIT_HOST = 3


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def _mounted(target: Path, *args: str) -> Iterator[Path]:
    _mount(*args, str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=30)


def _prepared(root: Path) -> Host:
    """A host root like a prepared node (containerd reads certs.d), as new_host makes it."""
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_CONFIG)
    return Host(root)


def _manifests(stack: Stack, work: Path) -> tuple[Path, Path]:
    """A good trust, and the same trust with one more CA (so the files must change)."""
    client = tls_secret(stack.client_cert, stack.client_key)
    good = write_manifest(work / "good.yaml", pinned_trust(stack, "dtr"), client)
    more = pinned_trust(stack, "dtr", pem=stack.rogue_ca.read_text())
    changed = write_manifest(work / "changed.yaml", more, client)
    return good, changed


def _fill(directory: Path) -> None:
    """Write into ``directory`` until its file system is full (ENOSPC)."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 4096
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return
    finally:
        os.close(fd)


def _assert_host_problem(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == EXIT_HOST, result.stdout + result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("dtrtrust: ")]
    assert len(summary) == 1, result.stderr
    assert "unexpected error" not in result.stderr
    for word in words:
        assert word in summary[0], summary[0]


def test_a_disk_that_fills_during_the_write_exits_3_and_keeps_the_previous_files(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    root.mkdir()
    with _mounted(root, "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"):
        host = _prepared(root)
        good, changed = _manifests(dtr_stack, tmp_path)
        first = host.apply(good)
        assert first.returncode == 0, first.stdout + first.stderr
        before = host.node_files()
        _fill(root)

        result = host.apply(changed)

        _assert_host_problem(result, "NodeErrors", "space", str(root))
        assert host.node_files() == before


def test_a_read_only_host_root_exits_3_and_keeps_the_previous_files(
    dtr_stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "host").mkdir()
    host = _prepared(tmp_path / "host")
    good, changed = _manifests(dtr_stack, tmp_path)
    first = host.apply(good)
    assert first.returncode == 0, first.stdout + first.stderr
    before = host.node_files()
    with _mounted(host.root, "--bind", str(host.root)):
        _mount("-o", "remount,bind,ro", str(host.root))

        result = host.apply(changed)

        _assert_host_problem(result, "read-only", "remount", str(host.root))
        assert host.node_files() == before
