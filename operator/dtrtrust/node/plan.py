"""What writing a layout would change on a host, without writing (``apply --dry-run``).

Compares the desired directories (``core.layout.desired_dirs``) with the files under the
host root, read without following any symbolic link (every path component is opened with
``O_NOFOLLOW``, relative to its parent's descriptor, as the writer walks them), by content
and mode. ``recorded`` is the set of files dtrtrust put in place before (relative paths,
from apply's state): a recorded file that is no longer desired would be removed, and an
existing ``hosts.toml`` that is not recorded belongs to another tool, which the writer
never replaces.

This module only reads; it does not know the writer's own record, so it describes the
outcome the writer aims at (the writer also restores foreign files it had backed up when
it removes its own).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dtrtrust.contract import HOSTS_TOML_FILE
from dtrtrust.core.layout import DesiredDir

ADD, REPLACE, REMOVE, UNCHANGED, CONFLICT, REFUSED = (
    "add",
    "replace",
    "remove",
    "unchanged",
    "conflict",
    "refused",
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class Change:
    action: str  # add, replace, remove, unchanged, conflict, refused
    path: str  # relative to the host root
    detail: str = ""  # why, for replace / conflict / refused

    def to_dict(self) -> dict[str, str]:
        out = {"action": self.action, "path": self.path}
        if self.detail:
            out["detail"] = self.detail
        return out


class _Symlink(Exception):
    pass


@dataclass(frozen=True)
class _Found:
    content: bytes
    mode: int


def read_nofollow(host_root: Path, rel: str) -> _Found | None:
    """The file at ``rel`` under ``host_root`` (content and permission bits), or None
    when it does not exist. Raises _Symlink when a component is a symbolic link or not
    what it should be (a directory on the way, a regular file at the end)."""
    parts = PurePosixPath(rel).parts
    fd = os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Symlink(part) from None
                raise
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Symlink(parts[-1]) from None
            raise
        try:
            info = os.fstat(file_fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Symlink(parts[-1])
            chunks = []
            while chunk := os.read(file_fd, 1 << 16):
                chunks.append(chunk)
            return _Found(b"".join(chunks), stat.S_IMODE(info.st_mode))
        finally:
            os.close(file_fd)
    finally:
        os.close(fd)


def plan(host_root: Path, dirs: Sequence[DesiredDir], recorded: Iterable[str] = ()) -> list[Change]:
    """Every desired file as add / replace / unchanged / conflict / refused, then every
    recorded file that is no longer desired and still there as remove; sorted by path
    within each group."""
    recorded_set = set(recorded)
    changes: list[Change] = []
    wanted: set[str] = set()
    for d in dirs:
        for f in d.files:
            rel = str(d.path / f.name)
            wanted.add(rel)
            try:
                found = read_nofollow(host_root, rel)
            except _Symlink as exc:
                changes.append(
                    Change(REFUSED, rel, f"{exc.args[0]} is a symbolic link or not a plain entry")
                )
                continue
            if found is None:
                changes.append(Change(ADD, rel))
            elif found.content == f.content and found.mode == f.mode:
                changes.append(Change(UNCHANGED, rel))
            elif f.name == HOSTS_TOML_FILE and rel not in recorded_set:
                changes.append(Change(CONFLICT, rel, "another tool's hosts.toml: never replaced"))
            elif found.content == f.content:
                changes.append(Change(REPLACE, rel, f"mode {found.mode:04o} -> {f.mode:04o}"))
            else:
                changes.append(Change(REPLACE, rel, "content differs"))
    changes.sort(key=lambda c: c.path)
    changes += removals(host_root, sorted(recorded_set - wanted))
    return changes


def removals(host_root: Path, recorded: Iterable[str]) -> list[Change]:
    """``remove`` for each of these recorded files that is still there."""
    out = []
    for rel in sorted(recorded):
        try:
            if read_nofollow(host_root, rel) is not None:
                out.append(Change(REMOVE, rel))
        except _Symlink:
            continue  # not ours any more: the writer leaves it alone
    return out


def dir_files(dirs: Sequence[DesiredDir]) -> list[str]:
    """The relative paths of every file of ``dirs`` (what apply records)."""
    return sorted(str(d.path / f.name) for d in dirs for f in d.files)
