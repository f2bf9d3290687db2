"""The ownership record: which trust owns which address directory, which files in it
dtrtrust wrote (with their SHA-256) and which foreign files it backed up.

One JSON file, ``<state dir>/state.json``, replaced atomically. A ``RecordFile`` is
loaded once per writer call, and kept in memory between calls: the next call only
``stat``s the file and parses it again when its (inode, size, mtime, ctime) changed.
The cache keeps the file it read open, so its inode number cannot be reused by another
file while the cache trusts it. ``save`` writes only when the serialised record
differs from what is on disk, so a call that changes nothing writes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from dtrtrust.node import fs
from dtrtrust.node.errors import WriterError

RECORD_FILE = "state.json"
VERSION = 2
LEGACY_VERSION = 1  # the RENAME_EXCHANGE writer's record (work dirs, staging inodes)


@dataclass
class FileRecord:
    hashes: list[str]  # SHA-256 of what we wrote (old and new while a write is pending)
    backup: str | None = None  # the foreign file we replaced, relative to the host root

    def to_json(self) -> dict[str, Any]:
        return {"hashes": sorted(set(self.hashes)), "backup": self.backup}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileRecord:
        return cls(hashes=list(data.get("hashes", [])), backup=data.get("backup"))


@dataclass
class DirRecord:
    trust: str
    target: str
    root: str
    address: str
    created: bool  # we created the address directory (remove it once empty)
    files: dict[str, FileRecord] = field(default_factory=dict)
    # Only in records of the legacy writer, read by the migration: where its work
    # directory was and the inode of a staging directory while a swap was pending.
    legacy_work: str | None = None
    legacy_staging_ino: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trust": self.trust,
            "target": self.target,
            "root": self.root,
            "address": self.address,
            "created": self.created,
            "files": {n: f.to_json() for n, f in sorted(self.files.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirRecord:
        work = data.get("work")
        return cls(
            trust=str(data["trust"]),
            target=str(data["target"]),
            root=str(data["root"]),
            address=str(data["address"]),
            created=bool(data["created"]),
            files={n: FileRecord.from_json(f) for n, f in data.get("files", {}).items()},
            legacy_work=str(work) if work is not None else None,
            legacy_staging_ino=data.get("staging_ino"),
        )


@dataclass
class Record:
    dirs: dict[str, DirRecord] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # parent dirs we created
    orphaned_backups: list[str] = field(default_factory=list)  # backups we could not restore
    version: int = VERSION  # LEGACY_VERSION when read from the old writer's file

    def dump(self) -> bytes:
        data = {
            "version": VERSION,
            "dirs": {rel: rec.to_json() for rel, rec in sorted(self.dirs.items())},
            "created": sorted(set(self.created)),
            "orphaned_backups": sorted(set(self.orphaned_backups)),
        }
        # One line: json's C encoder only serves indent=None, and the record names every
        # directory of the node (15 ms -> 3 ms per write at 1,000 trusts; `jq .` reads it).
        return (json.dumps(data, sort_keys=True) + "\n").encode()

    @classmethod
    def load(cls, raw: bytes) -> Record:
        data = json.loads(raw)
        version = data.get("version") if isinstance(data, dict) else None
        if version not in (VERSION, LEGACY_VERSION):
            raise ValueError(f"unknown version {version!r}")
        return cls(
            dirs={rel: DirRecord.from_json(r) for rel, r in data.get("dirs", {}).items()},
            created=list(data.get("created", [])),
            orphaned_backups=list(data.get("orphaned_backups", [])),
            version=int(version),
        )

    def trusts(self) -> set[str]:
        return {rec.trust for rec in self.dirs.values()}


def unreadable(where: str, exc: Exception) -> WriterError:
    return WriterError(
        f"{where} cannot be read ({exc}); restore or move it away: without it dtrtrust "
        "cannot tell its files from others'"
    )


def parse(raw: bytes, where: str) -> Record:
    try:
        return Record.load(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise unreadable(where, exc) from None


_Key = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns


def _key(st: os.stat_result) -> _Key:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass
class _Cached:
    key: _Key
    raw: bytes
    record: Record
    pin: int  # an open fd of the file the key describes: its inode cannot be reused


# (device, inode) of a state directory -> what we last read or wrote there. A process
# uses one host root (the agent) or a few (tests): a handful of entries is plenty.
_CACHE: dict[tuple[int, int], _Cached] = {}
_CACHE_SIZE = 4


def _remember(dir_key: tuple[int, int], cached: _Cached) -> None:
    while len(_CACHE) >= _CACHE_SIZE:
        oldest = next(iter(_CACHE))
        os.close(_CACHE.pop(oldest).pin)
    _CACHE[dir_key] = cached


def forget_all() -> None:
    """Drop every cached record (tests; a process that hands a host root to another)."""
    for cached in _CACHE.values():
        os.close(cached.pin)
    _CACHE.clear()


class RecordFile:
    """The record of one state directory, for the duration of one locked writer call."""

    def __init__(self, state_fd: int, where: str) -> None:
        self.state_fd = state_fd
        self.where = where  # for messages: the record's path relative to the host root
        st = os.fstat(state_fd)
        self._dir_key = (st.st_dev, st.st_ino)
        self._saved = b""
        self.loads = 0  # parses from disk, for tests and the benchmark
        self.saves = 0
        self.record = self._load()
        # Set by every change to ``record``; the cached object may be shared with the
        # next call, so an unsaved change must drop the cache (``close``).
        self.dirty = self.record.version != VERSION

    def _load(self) -> Record:
        try:
            st = os.stat(RECORD_FILE, dir_fd=self.state_fd, follow_symlinks=False)
        except FileNotFoundError:
            self._drop_cache()
            return Record()
        cached = _CACHE.get(self._dir_key)
        if cached is not None and cached.key == _key(st):
            self._saved = cached.raw
            return cached.record
        self._drop_cache()
        try:
            fd = os.open(
                RECORD_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.state_fd
            )
        except OSError as exc:
            raise unreadable(self.where, exc) from None
        try:
            st = os.fstat(fd)
            raw = b""
            while chunk := os.read(fd, 1 << 20):
                raw += chunk
            record = parse(raw, self.where)
        except BaseException:
            os.close(fd)
            raise
        self.loads += 1
        self._saved = raw
        if record.version == VERSION:
            _remember(self._dir_key, _Cached(_key(st), raw, record, fd))
        else:
            os.close(fd)  # a legacy record is migrated and saved before it is reused
        return record

    def _drop_cache(self) -> None:
        cached = _CACHE.pop(self._dir_key, None)
        if cached is not None:
            os.close(cached.pin)

    def invalidate(self) -> None:
        """The in-memory record may differ from the file (an error mid-call): read it
        again next time."""
        self._drop_cache()

    def close(self) -> None:
        """End of the call: a change that was not saved must not survive in the cache."""
        if self.dirty:
            self._drop_cache()

    def save(self) -> bool:
        """Write the record when it changed and differs from the file; True when it wrote."""
        if not self.dirty:
            return False
        raw = self.record.dump()
        if raw == self._saved and self.record.version == VERSION:
            self.dirty = False
            return False
        tmp = fs.stage(self.state_fd, RECORD_FILE, raw, 0o600, fs.owner_of(self.state_fd))
        os.rename(tmp, RECORD_FILE, src_dir_fd=self.state_fd, dst_dir_fd=self.state_fd)
        os.fsync(self.state_fd)
        self.record.version = VERSION
        self._saved = raw
        self.saves += 1
        self._drop_cache()
        fd = os.open(RECORD_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.state_fd)
        _remember(self._dir_key, _Cached(_key(os.fstat(fd)), raw, self.record, fd))
        self.dirty = False
        return True
