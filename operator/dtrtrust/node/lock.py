"""The per-host-root writer lock: the agent and ``dtrtrust apply`` never write the
same tree at once. An ``flock`` on ``<state dir>/lock``; the kernel drops it when the
holder dies (SIGKILL included), so there is never a stale lock to clean up."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

LOCK_FILE = "lock"


@contextlib.contextmanager
def locked(state_fd: int) -> Iterator[None]:
    """Hold the exclusive lock of the state directory ``state_fd`` (blocks until free)."""
    fd = os.open(
        LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=state_fd
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
