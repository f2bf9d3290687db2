"""Applies DesiredDirs under a host root: atomic, owned, reversible.

How a directory is committed
----------------------------
Every address directory (``etc/docker/certs.d/<addr>/``...) is replaced as a unit, so a
reader that opens the directory and then its files never sees a certificate without
its key, nor a partial file:

1. the new content is built in a staging directory on the same file system (under the
   private work directory, see below), every file written, ``fchmod``-ed and fsynced,
   then the directory itself fsynced;
2. ``renameat2(RENAME_EXCHANGE)`` swaps staging and live directory in one step (a
   plain ``rename`` with ``RENAME_NOREPLACE`` when the live one does not exist yet),
   then the parent is fsynced;
3. the previous generation (now at the staging path) is moved to ``old/`` and kept
   until the next write of the same directory, so a reader that opened the old
   directory fd can finish reading a consistent set. Readers that open files by path
   (``/etc/docker/certs.d/x/client.key``) are not protected across a rotation by any
   directory swap; the window is the time between two of their ``open`` calls.

Files that are not ours in a live directory are hard-linked into the staging
directory before the swap; entries that appear in the old directory meanwhile are
moved back afterwards. When the file system refuses ``RENAME_EXCHANGE`` (EINVAL,
ENOSYS) or the directory holds entries that cannot be hard-linked (sub-directories),
files are replaced one by one (temp file, fsync, ``rename``): key before certificate
when writing, certificate before key when removing; this is logged once per file
system.

Ownership
---------
``<host root>/.dtrtrust/state.json`` (written atomically) records which trust owns which
address directory, which files in it we wrote (with their SHA-256) and which foreign
files we backed up. A foreign file with a name we need is hard-linked to
``<work>/backup/`` before it is replaced, and put back when the trust goes away. A
foreign ``hosts.toml`` is never replaced (conflict). Before a swap the record is
written with both old and new hashes and the staging directory's inode, so a writer
killed at any point can tell on restart whether the swap happened.

The work directory (staging, old generations, backups) is ``<host root>/.dtrtrust/work``
when the target root is on the host root's file system, otherwise
``<target root>/.dtrtrust-work`` (a ``rename`` cannot cross file systems).

Nothing under the host root is followed when it is a symbolic link: every path is
walked with ``O_NOFOLLOW | O_DIRECTORY`` and all operations are relative to directory
file descriptors.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dtrtrust.contract import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, HOSTS_TOML_FILE
from dtrtrust.core.addresses import validate_address
from dtrtrust.core.layout import DIR_MODE, FILE_NAMES, DesiredDir, DesiredFile

log = logging.getLogger("dtrtrust.writer")

STATE_DIR = ".dtrtrust"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
WORK_DIR = "work"  # under STATE_DIR
FOREIGN_WORK_DIR = ".dtrtrust-work"  # inside a target root on another file system
STATE_VERSION = 1
_PRIVATE_MODE = 0o700
_TMP_SUFFIX = ".dtrtrust-new"

# Write order when files are replaced one by one: the key lands before the
# certificate that needs it, hosts.toml last because it names the others.
_WRITE_ORDER = (CLIENT_KEY_FILE, CLIENT_CERT_FILE, CA_FILE, HOSTS_TOML_FILE)
# Removal order: hosts.toml first, then the certificate before its key.
_REMOVE_ORDER = (HOSTS_TOML_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, CA_FILE)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@dataclass
class DirResult:
    target: str
    address: str
    action: str  # "written" | "unchanged" | "conflict" | "error"
    message: str = ""
    path: str = ""  # relative to the host root


@dataclass
class SyncResult:
    dirs: list[DirResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # relative paths removed or restored
    error: str = ""  # set when the host root itself could not be used

    @property
    def ok(self) -> bool:
        return not self.error and all(d.action in ("written", "unchanged") for d in self.dirs)


class WriterError(Exception):
    """A per-directory problem; the message is one line saying what to do."""


class ConflictError(WriterError):
    """The directory holds something we must not touch (foreign hosts.toml, other trust)."""


# --------------------------------------------------------------------------- syscalls


def _mount_key(fd: int) -> tuple[int, int]:
    """(device, mount id) of an open directory: two bind mounts of one file system share
    the device but not the mount id, and rename(2) between them fails with EXDEV."""
    mount_id = -1
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
            for line in info:
                if line.startswith("mnt_id:"):
                    mount_id = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return os.fstat(fd).st_dev, mount_id


_libc = ctypes.CDLL(None, use_errno=True)
_renameat2_c = getattr(_libc, "renameat2", None)  # glibc >= 2.28
if _renameat2_c is not None:
    _renameat2_c.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
    _renameat2_c.restype = ctypes.c_int

# Devices on which RENAME_EXCHANGE was refused; the fallback is logged once per device.
_NO_EXCHANGE_DEVS: set[int] = set()


def _renameat2(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, flags: int) -> None:
    """renameat2(2); raises OSError(ENOSYS) when the C library lacks it."""
    if _renameat2_c is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available in this C library")
    rc = _renameat2_c(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), flags)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dir_id(rel: str) -> str:
    return hashlib.sha256(rel.encode()).hexdigest()[:24]


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _is_symlink_or_not_dir(exc: OSError) -> bool:
    return exc.errno in (errno.ELOOP, errno.ENOTDIR)


def _refusal(parent_fd: int, name: str, rel: str) -> WriterError:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return WriterError(f"{rel} cannot be opened as a directory; check what is there")
    if stat.S_ISLNK(st.st_mode):
        return WriterError(
            f"{rel} is a symbolic link; dtrtrust never follows links under the host root: "
            "replace it with a real directory"
        )
    return WriterError(f"{rel} is not a directory; move it away so dtrtrust can create it")


def _open_dir(parent_fd: int, name: str, rel: str) -> int | None:
    """Open ``name`` below ``parent_fd`` without following links; None when absent."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _is_symlink_or_not_dir(exc):
            raise _refusal(parent_fd, name, rel) from None
        raise


def _owner_of(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_uid, st.st_gid


def _inherit_owner(fd: int, owner: tuple[int, int]) -> None:
    """New files and directories belong to whoever owns the directory they go into
    (root under /etc; the user under a home directory) when we run as root."""
    if os.geteuid() != 0:
        return
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != owner:
        os.fchown(fd, *owner)


def _mkdir_private(parent_fd: int, name: str, mode: int, rel: str) -> int:
    """Open (creating if needed) a directory of ours; ``mode`` is enforced."""
    fd = _open_dir(parent_fd, name, rel)
    if fd is None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent_fd)
        fd = _open_dir(parent_fd, name, rel)
        if fd is None:
            raise WriterError(f"{rel} vanished while being created; retry")
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    chunks: list[bytes] = []
    with _closing(fd):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def _write_new(dir_fd: int, name: str, content: bytes, mode: int, owner: tuple[int, int]) -> None:
    """Create ``name`` (must not exist), write, set mode and owner, fsync."""
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    with _closing(fd):
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # independent of the umask
        _inherit_owner(fd, owner)
        os.fsync(fd)


def _scan(dir_fd: int) -> dict[str, os.stat_result]:
    return {
        name: os.stat(name, dir_fd=dir_fd, follow_symlinks=False) for name in os.listdir(dir_fd)
    }


def _rmtree_at(parent_fd: int, name: str) -> None:
    """Remove ``name`` and everything below it, never following links."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if _is_symlink_or_not_dir(exc):
            os.unlink(name, dir_fd=parent_fd)
            return
        raise
    with _closing(fd):
        for entry, st in _scan(fd).items():
            if stat.S_ISDIR(st.st_mode):
                _rmtree_at(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    os.rmdir(name, dir_fd=parent_fd)


def _fsync_dir(fd: int) -> None:
    os.fsync(fd)


# ------------------------------------------------------------------------------ state


@dataclass
class FileRecord:
    hashes: list[str]  # SHA-256 of what we wrote (old and new while a swap is pending)
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
    work: str  # work directory relative to the host root
    files: dict[str, FileRecord] = field(default_factory=dict)
    staging_ino: int | None = None  # set while a swap is pending

    def to_json(self) -> dict[str, Any]:
        return {
            "trust": self.trust,
            "target": self.target,
            "root": self.root,
            "address": self.address,
            "created": self.created,
            "work": self.work,
            "files": {n: f.to_json() for n, f in sorted(self.files.items())},
            "staging_ino": self.staging_ino,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirRecord:
        return cls(
            trust=str(data["trust"]),
            target=str(data["target"]),
            root=str(data["root"]),
            address=str(data["address"]),
            created=bool(data["created"]),
            work=str(data["work"]),
            files={n: FileRecord.from_json(f) for n, f in data.get("files", {}).items()},
            staging_ino=data.get("staging_ino"),
        )


@dataclass
class State:
    dirs: dict[str, DirRecord] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # parent dirs we created
    orphaned_backups: list[str] = field(default_factory=list)  # backups we could not restore

    def dump(self) -> bytes:
        data = {
            "version": STATE_VERSION,
            "dirs": {rel: rec.to_json() for rel, rec in sorted(self.dirs.items())},
            "created": sorted(set(self.created)),
            "orphaned_backups": sorted(set(self.orphaned_backups)),
        }
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def load(cls, raw: bytes) -> State:
        data = json.loads(raw)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return cls(
            dirs={rel: DirRecord.from_json(r) for rel, r in data.get("dirs", {}).items()},
            created=list(data.get("created", [])),
            orphaned_backups=list(data.get("orphaned_backups", [])),
        )


# ------------------------------------------------------------------------- the root


@dataclass
class _Work:
    rel: str
    fd: int
    staging: int
    old: int
    backup: int

    def close(self) -> None:
        for fd in (self.staging, self.old, self.backup, self.fd):
            os.close(fd)


@dataclass
class _Plan:
    """What a sync of one directory must do, decided before anything is written."""

    writes: dict[str, DesiredFile] = field(default_factory=dict)
    backups: list[str] = field(default_factory=list)  # foreign names to back up first
    drops: list[str] = field(default_factory=list)  # owned names no longer wanted
    chmods: dict[str, int] = field(default_factory=dict)  # owned files with only a wrong mode
    claims: dict[str, FileRecord] = field(default_factory=dict)  # record after the commit

    @property
    def changes_content(self) -> bool:
        return bool(self.writes or self.drops)


class _Root:
    """An open host root: its fd, the lock, the ownership record."""

    def __init__(self, host_root: Path) -> None:
        self.path = host_root
        self._fds: list[int] = []
        self._works: dict[str, _Work] = {}
        self._saved = b""
        try:
            self.fd = self._keep(os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            self.state_fd = self._keep(_mkdir_private(self.fd, STATE_DIR, _PRIVATE_MODE, STATE_DIR))
            self.lock_fd = self._keep(
                os.open(
                    LOCK_FILE,
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=self.state_fd,
                )
            )
            # One writer per host root at a time (agent and `dtrtrust apply` may meet).
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            self.state = self._load()
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        for work in self._works.values():
            work.close()
        self._works.clear()
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()

    # ---- state

    def _load(self) -> State:
        try:
            raw = _read_at(self.state_fd, STATE_FILE)
        except FileNotFoundError:
            return State()
        try:
            state = State.load(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise WriterError(
                f"{STATE_DIR}/{STATE_FILE} under {self.path} cannot be read ({exc}); "
                "restore or move it away: without it dtrtrust cannot tell its files from others'"
            ) from None
        self._saved = raw
        return state

    def save(self) -> None:
        raw = self.state.dump()
        if raw == self._saved:
            return
        tmp = STATE_FILE + _TMP_SUFFIX
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.state_fd)
        _write_new(self.state_fd, tmp, raw, 0o600, _owner_of(self.state_fd))
        os.rename(tmp, STATE_FILE, src_dir_fd=self.state_fd, dst_dir_fd=self.state_fd)
        _fsync_dir(self.state_fd)
        self._saved = raw

    # ---- paths

    def open_path(self, rel: PurePosixPath, *, create: bool) -> int | None:
        """Walk ``rel`` from the host root without following links. Missing parts are
        created (and recorded) when ``create``; otherwise None is returned."""
        fd = os.dup(self.fd)
        done = PurePosixPath()
        try:
            for part in rel.parts:
                done = done / part
                child = _open_dir(fd, part, str(done))
                if child is None:
                    if not create:
                        os.close(fd)
                        return None
                    # Record first: a crash then leaves a record of a missing dir, which
                    # is harmless, never an unrecorded dir of ours.
                    if str(done) not in self.state.created:
                        self.state.created.append(str(done))
                        self.save()
                    owner = _owner_of(fd)
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, DIR_MODE, dir_fd=fd)
                    child = _open_dir(fd, part, str(done))
                    if child is None:
                        raise WriterError(f"{done} vanished while being created; retry")
                    os.fchmod(child, DIR_MODE)
                    _inherit_owner(child, owner)
                    _fsync_dir(fd)
                    log.info("created directory %s", done)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def work_for(self, root: PurePosixPath, root_fd: int) -> _Work:
        """The work directory on the same mount as ``root`` (a rename cannot cross
        mounts, not even two bind mounts of one file system, as in the agent's pod)."""
        if _mount_key(root_fd) == _mount_key(self.state_fd):
            rel = f"{STATE_DIR}/{WORK_DIR}"
            base_fd, name = self.state_fd, WORK_DIR
        else:
            rel = f"{root}/{FOREIGN_WORK_DIR}"
            base_fd, name = root_fd, FOREIGN_WORK_DIR
        return self._work(rel, base_fd, name)

    def work_at(self, rel: str) -> _Work | None:
        """An existing work directory from a record; None when it is gone."""
        if rel in self._works:
            return self._works[rel]
        path = PurePosixPath(rel)
        parent = self.open_path(path.parent, create=False)
        if parent is None:
            return None
        with _closing(parent):
            fd = _open_dir(parent, path.name, rel)
            if fd is None:
                return None
            os.close(fd)
            return self._work(rel, parent, path.name)

    def _work(self, rel: str, base_fd: int, name: str) -> _Work:
        if rel in self._works:
            return self._works[rel]
        fd = _mkdir_private(base_fd, name, _PRIVATE_MODE, rel)
        subs = [
            _mkdir_private(fd, sub, _PRIVATE_MODE, f"{rel}/{sub}")
            for sub in ("staging", "old", "backup")
        ]
        work = _Work(rel, fd, *subs)
        self._works[rel] = work
        return work


@contextlib.contextmanager
def _open_root(host_root: Path) -> Iterator[_Root]:
    root = _Root(host_root)
    try:
        _recover(root)
        yield root
    finally:
        root.close()


# -------------------------------------------------------------------- validation


def _check_trust(trust: str) -> None:
    if not trust or not isinstance(trust, str) or any(c.isspace() or c == "/" for c in trust):
        raise ValueError(f"invalid trust name {trust!r}")


def _check_dir(d: DesiredDir) -> None:
    """Defence in depth: the layout validated this already."""
    validate_address(d.address)
    root = PurePosixPath(d.root)
    if root.is_absolute() or not root.parts or any(p in ("", ".", "..") for p in root.parts):
        raise WriterError(f"target root {str(d.root)!r} must be a plain path below the host root")
    names = [f.name for f in d.files]
    if len(set(names)) != len(names) or not set(names) <= set(FILE_NAMES):
        raise WriterError(f"{d.path}: unexpected file names {sorted(names)}")
    for f in d.files:
        if f.mode & ~0o777 or f.mode & 0o022:
            raise WriterError(f"{d.path}/{f.name}: refusing mode {oct(f.mode)}")


# --------------------------------------------------------------------- the writing


def _backup_name(sid: str, name: str) -> str:
    return f"{sid}.{name}"


def _backup(root: _Root, work: _Work, sid: str, live_fd: int, name: str, rel: str) -> str:
    """Keep a foreign file before it is replaced: a hard link (same inode, mode, owner,
    times), a copy only if the link is refused."""
    bname = _backup_name(sid, name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(bname, dir_fd=work.backup)  # a stale one from a crash before the record
    try:
        os.link(name, bname, src_dir_fd=live_fd, dst_dir_fd=work.backup, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV):
            raise
        st = os.stat(name, dir_fd=live_fd, follow_symlinks=False)
        _write_new(
            work.backup,
            bname,
            _read_at(live_fd, name),
            stat.S_IMODE(st.st_mode),
            (st.st_uid, st.st_gid),
        )
    _fsync_dir(work.backup)
    log.info("backed up foreign file %s/%s before replacing it", rel, name)
    return f"{work.rel}/backup/{bname}"


def _plan_sync(
    rel: str,
    rec: DirRecord | None,
    d: DesiredDir,
    live_fd: int | None,
    entries: dict[str, os.stat_result],
    backup_path: dict[str, str],
) -> _Plan:
    plan = _Plan()
    owned = rec.files if rec else {}
    for f in d.files:
        want = _sha256(f.content)
        st = entries.get(f.name)
        mine = owned.get(f.name)
        if st is None:
            plan.writes[f.name] = f
            plan.claims[f.name] = FileRecord([want], mine.backup if mine else None)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise WriterError(
                f"{rel}/{f.name} is a symbolic link or not a regular file; "
                "remove it so dtrtrust can write the file"
            )
        assert live_fd is not None
        have = _sha256(_read_at(live_fd, f.name))
        mode_ok = stat.S_IMODE(st.st_mode) == f.mode
        if mine is not None:
            plan.claims[f.name] = FileRecord([want], mine.backup)
            if have != want:
                if have not in mine.hashes:
                    log.warning("%s/%s was changed by someone else; replacing it", rel, f.name)
                plan.writes[f.name] = f
            elif not mode_ok:
                plan.chmods[f.name] = f.mode
        elif have == want and mode_ok:
            continue  # someone else's identical file: leave it, claim nothing
        elif f.name == HOSTS_TOML_FILE:
            raise ConflictError(
                f"{rel}/{HOSTS_TOML_FILE} was not written by dtrtrust and is never replaced: "
                "move it away (or merge our ca.crt and client pair into it and drop "
                "containerd from this DTRTrust's targets)"
            )
        else:
            plan.backups.append(f.name)
            plan.writes[f.name] = f
            plan.claims[f.name] = FileRecord([want], backup_path[f.name])
    wanted = {f.name for f in d.files}
    plan.drops = [name for name in owned if name not in wanted]
    return plan


def _drop_outcome(
    rel: str,
    name: str,
    frec: FileRecord,
    live_fd: int,
    entries: dict[str, os.stat_result],
    work: _Work | None,
    sid: str,
) -> str:
    """What to do with a file we own and no longer want:
    "remove", "restore" (put the backup back), "keep" (not ours any more), "gone"."""
    st = entries.get(name)
    bst: os.stat_result | None = None
    if frec.backup and work is not None:
        with contextlib.suppress(FileNotFoundError):
            bst = os.stat(_backup_name(sid, name), dir_fd=work.backup, follow_symlinks=False)
    if st is None:
        return "restore" if bst is not None else "gone"
    if bst is not None and (bst.st_dev, bst.st_ino) == (st.st_dev, st.st_ino):
        return "keep-original"  # the foreign original is still live (swap never happened)
    if not stat.S_ISREG(st.st_mode):
        log.warning("%s/%s is no longer a file dtrtrust wrote; leaving it", rel, name)
        return "keep"
    if _sha256(_read_at(live_fd, name)) not in frec.hashes:
        log.warning("%s/%s was changed by someone else; leaving it in place", rel, name)
        return "keep"
    return "restore" if bst is not None else "remove"


def _build_staging(
    work: _Work,
    sid: str,
    owner: tuple[int, int],
    live_fd: int | None,
    entries: dict[str, os.stat_result],
    writes: dict[str, DesiredFile],
    outcomes: dict[str, str],
) -> tuple[int, dict[str, tuple[int, int]]]:
    """The new directory content at staging/<sid>. Returns its inode and the
    (dev, ino) of every entry it took over from the live directory."""
    _rmtree_at(work.staging, sid)
    os.mkdir(sid, _PRIVATE_MODE, dir_fd=work.staging)
    sfd = os.open(sid, _DIR_FLAGS, dir_fd=work.staging)
    linked: dict[str, tuple[int, int]] = {}
    with _closing(sfd):
        os.fchmod(sfd, DIR_MODE)
        _inherit_owner(sfd, owner)
        for name, st in entries.items():
            if name in writes or outcomes.get(name) in ("remove", "restore"):
                continue
            assert live_fd is not None
            os.link(name, name, src_dir_fd=live_fd, dst_dir_fd=sfd, follow_symlinks=False)
            linked[name] = (st.st_dev, st.st_ino)
        for name, outcome in outcomes.items():
            if outcome == "restore":
                os.link(
                    _backup_name(sid, name),
                    name,
                    src_dir_fd=work.backup,
                    dst_dir_fd=sfd,
                    follow_symlinks=False,
                )
        for name in _WRITE_ORDER:
            if name in writes:
                f = writes[name]
                _write_new(sfd, name, f.content, f.mode, owner)
        _fsync_dir(sfd)
        return os.fstat(sfd).st_ino, linked


def _move_back(
    old_fd: int, live_fd: int, known: set[str], linked: dict[str, tuple[int, int]], rel: str
) -> None:
    """After a swap: entries that appeared (or were replaced) in the old directory
    while we built the new one go back into the live directory."""
    for name, st in _scan(old_fd).items():
        if name in known and linked.get(name, (st.st_dev, st.st_ino)) == (st.st_dev, st.st_ino):
            continue
        if name in known and name not in linked:
            continue  # one of ours from the previous generation
        os.rename(name, name, src_dir_fd=old_fd, dst_dir_fd=live_fd)
        log.info("moved %s/%s, which appeared during the swap, back into place", rel, name)
    _fsync_dir(live_fd)


def _retire(work: _Work, sid: str) -> None:
    """staging/<sid> (the previous generation after a swap) -> old/<sid>, replacing
    the generation before it."""
    _rmtree_at(work.old, sid)
    os.rename(sid, sid, src_dir_fd=work.staging, dst_dir_fd=work.old)
    _fsync_dir(work.staging)
    _fsync_dir(work.old)


def _swap_in(
    root: _Root,
    rec: DirRecord,
    rel: str,
    work: _Work,
    sid: str,
    root_fd: int,
    address: str,
    live_fd: int | None,
    entries: dict[str, os.stat_result],
    writes: dict[str, DesiredFile],
    outcomes: dict[str, str],
) -> bool:
    """Build and swap a new generation. False when the file system refuses
    RENAME_EXCHANGE (the caller then falls back to per-file replacement)."""
    owner = _owner_of(root_fd)
    ino, linked = _build_staging(work, sid, owner, live_fd, entries, writes, outcomes)
    rec.staging_ino = ino
    root.state.dirs[rel] = rec
    root.save()
    if live_fd is None:
        try:
            _renameat2(work.staging, sid, root_fd, address, RENAME_NOREPLACE)
        except OSError as exc:
            if not _unsupported(exc):
                raise
            os.rename(sid, address, src_dir_fd=work.staging, dst_dir_fd=root_fd)
        _fsync_dir(root_fd)
        _fsync_dir(work.staging)
        return True
    try:
        _renameat2(work.staging, sid, root_fd, address, RENAME_EXCHANGE)
    except OSError as exc:
        if not _unsupported(exc):
            raise
        _rmtree_at(work.staging, sid)
        dev = os.fstat(root_fd).st_dev
        if dev not in _NO_EXCHANGE_DEVS:
            _NO_EXCHANGE_DEVS.add(dev)
            log.warning(
                "the file system of %s does not support RENAME_EXCHANGE; replacing files "
                "one by one there (key before certificate)",
                rel,
            )
        return False
    _fsync_dir(root_fd)
    _fsync_dir(work.staging)
    known = set(entries) | set(writes)
    new_fd = _open_dir(root_fd, address, rel)
    if new_fd is not None:
        with _closing(new_fd):
            old_fd = os.open(sid, _DIR_FLAGS, dir_fd=work.staging)
            with _closing(old_fd):
                _move_back(old_fd, new_fd, known, linked, rel)
    _retire(work, sid)
    return True


def _replace_per_file(
    root: _Root,
    rec: DirRecord,
    rel: str,
    work: _Work,
    sid: str,
    root_fd: int,
    live_fd: int,
    writes: dict[str, DesiredFile],
    outcomes: dict[str, str],
) -> None:
    """The fallback: temp file + fsync + rename per file, in a safe order."""
    rec.staging_ino = None
    root.state.dirs[rel] = rec
    root.save()
    owner = _owner_of(root_fd)
    for name in _REMOVE_ORDER:
        outcome = outcomes.get(name)
        if outcome == "remove":
            os.unlink(name, dir_fd=live_fd)
        elif outcome == "restore":
            tmp = f".{name}{_TMP_SUFFIX}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=live_fd)
            os.link(_backup_name(sid, name), tmp, src_dir_fd=work.backup, dst_dir_fd=live_fd)
            os.rename(tmp, name, src_dir_fd=live_fd, dst_dir_fd=live_fd)
    for name in _WRITE_ORDER:
        if name in writes:
            tmp = f".{name}{_TMP_SUFFIX}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=live_fd)
            f = writes[name]
            _write_new(live_fd, tmp, f.content, f.mode, owner)
            os.rename(tmp, name, src_dir_fd=live_fd, dst_dir_fd=live_fd)
    _fsync_dir(live_fd)


def _fix_modes(root_fd: int, address: str, rel: str, chmods: dict[str, int]) -> None:
    """Modes of files whose content is already right, and the directory's own mode:
    fixed in place (no rewrite, the inode stays)."""
    live_fd = _open_dir(root_fd, address, rel)
    if live_fd is None:
        return
    with _closing(live_fd):
        for name, mode in chmods.items():
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=live_fd)
            with _closing(fd):
                if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                    os.fchmod(fd, mode)
                    log.info("fixed the mode of %s/%s", rel, name)
        if stat.S_IMODE(os.fstat(live_fd).st_mode) != DIR_MODE:
            os.fchmod(live_fd, DIR_MODE)
            log.info("fixed the mode of %s", rel)


def _clean_tmp(live_fd: int, entries: dict[str, os.stat_result]) -> None:
    """Temp files of an interrupted per-file replacement are ours: remove them."""
    for name in list(entries):
        if (
            name.startswith(".")
            and name.endswith(_TMP_SUFFIX)
            and name[1 : -len(_TMP_SUFFIX)] in (FILE_NAMES)
        ):
            os.unlink(name, dir_fd=live_fd)
            del entries[name]


def _sync_dir(root: _Root, trust: str, d: DesiredDir) -> DirResult:
    rel = str(d.path)
    result = DirResult(d.target, d.address, "unchanged", path=rel)
    _check_dir(d)
    rec = root.state.dirs.get(rel)
    if rec is not None and rec.trust != trust:
        raise ConflictError(
            f"{rel} is already managed by DTRTrust {rec.trust!r}; "
            "give each registry address to one DTRTrust only"
        )
    root_fd = root.open_path(PurePosixPath(d.root), create=True)
    assert root_fd is not None
    with _closing(root_fd):
        work = root.work_for(PurePosixPath(d.root), root_fd)
        sid = _dir_id(rel)
        live_fd = _open_dir(root_fd, d.address, rel)
        with contextlib.ExitStack() as stack:
            if live_fd is not None:
                stack.callback(os.close, live_fd)
            entries = _scan(live_fd) if live_fd is not None else {}
            if live_fd is not None:
                _clean_tmp(live_fd, entries)
            backup_path = {
                f.name: f"{work.rel}/backup/{_backup_name(sid, f.name)}" for f in d.files
            }
            plan = _plan_sync(rel, rec, d, live_fd, entries, backup_path)
            outcomes: dict[str, str] = {}
            if live_fd is not None and rec is not None:
                for name in plan.drops:
                    outcomes[name] = _drop_outcome(
                        rel, name, rec.files[name], live_fd, entries, work, sid
                    )
            effective = plan.writes or any(o in ("remove", "restore") for o in outcomes.values())
            new_rec = DirRecord(
                trust=trust,
                target=d.target,
                root=str(d.root),
                address=d.address,
                created=rec.created if rec is not None else live_fd is None,
                work=work.rel,
                files=dict(plan.claims),
            )
            if not effective:
                _fix_modes(root_fd, d.address, rel, plan.chmods)
                _finish_drops(root, rel, sid, work, outcomes, rec)
                root.state.dirs[rel] = new_rec
                root.save()
                log.debug("%s unchanged", rel)
                return result

            # Foreign files we replace are kept first: a crash after this leaves at worst
            # an unreferenced backup, which the next run replaces.
            for name in plan.backups:
                assert live_fd is not None
                _backup(root, work, sid, live_fd, name, rel)
            # Intent: claim the union of old and new so a crash at any point leaves a
            # record that covers whatever is live.
            intent = dataclasses.replace(new_rec, files={})
            for name, frec in (rec.files if rec else {}).items():
                intent.files[name] = FileRecord(list(frec.hashes), frec.backup)
            for name, frec in plan.claims.items():
                prev = intent.files.get(name)
                hashes = frec.hashes + (prev.hashes if prev else [])
                intent.files[name] = FileRecord(
                    hashes, frec.backup or (prev.backup if prev else None)
                )
            root.state.dirs[rel] = intent
            root.save()

            linkable = all(
                not stat.S_ISDIR(st.st_mode)
                for name, st in entries.items()
                if name not in plan.writes
            )
            dev = os.fstat(root_fd).st_dev
            swapped = False
            if live_fd is None or (linkable and dev not in _NO_EXCHANGE_DEVS):
                swapped = _swap_in(
                    root,
                    intent,
                    rel,
                    work,
                    sid,
                    root_fd,
                    d.address,
                    live_fd,
                    entries,
                    plan.writes,
                    outcomes,
                )
            if not swapped:
                assert live_fd is not None
                _replace_per_file(
                    root, intent, rel, work, sid, root_fd, live_fd, plan.writes, outcomes
                )
            _fix_modes(root_fd, d.address, rel, plan.chmods)
            _finish_drops(root, rel, sid, work, outcomes, rec)
            root.state.dirs[rel] = new_rec
            root.save()
    names = ", ".join(sorted(plan.writes)) or "removals only"
    log.info("wrote %s (%s)%s", rel, names, "" if swapped else ", file by file")
    result.action = "written"
    return result


def _finish_drops(
    root: _Root,
    rel: str,
    sid: str,
    work: _Work | None,
    outcomes: dict[str, str],
    rec: DirRecord | None,
) -> list[str]:
    """After a commit: delete the backups that went back into place, remember the
    ones we could not put back. Returns the relative paths restored or removed."""
    done: list[str] = []
    for name, outcome in outcomes.items():
        frec = rec.files.get(name) if rec else None
        if outcome in ("restore", "keep-original") and work is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_backup_name(sid, name), dir_fd=work.backup)
            if outcome == "restore":
                log.info("restored foreign file %s/%s", rel, name)
                done.append(f"{rel}/{name}")
        elif outcome == "remove":
            log.info("removed %s/%s", rel, name)
            done.append(f"{rel}/{name}")
        elif outcome == "keep" and frec is not None and frec.backup:
            root.state.orphaned_backups.append(frec.backup)
            log.warning(
                "kept the backup %s: %s/%s changed since dtrtrust wrote it", frec.backup, rel, name
            )
    return done


def _remove_dir(root: _Root, rel: str, rec: DirRecord) -> list[str]:
    """Remove what ``rec`` owns in one address directory; restore backups."""
    sid = _dir_id(rel)
    work = root.work_at(rec.work)
    root_fd = root.open_path(PurePosixPath(rec.root), create=False)
    live_fd = _open_dir(root_fd, rec.address, rel) if root_fd is not None else None
    done: list[str] = []
    with contextlib.ExitStack() as stack:
        if root_fd is not None:
            stack.callback(os.close, root_fd)
        if live_fd is not None:
            stack.callback(os.close, live_fd)
        if live_fd is None or root_fd is None:
            for frec in rec.files.values():
                if frec.backup:
                    root.state.orphaned_backups.append(frec.backup)
                    log.warning(
                        "%s is gone; kept the backup %s of a foreign file", rel, frec.backup
                    )
            del root.state.dirs[rel]
            root.save()
            return done
        entries = _scan(live_fd)
        _clean_tmp(live_fd, entries)
        outcomes = {
            name: _drop_outcome(rel, name, frec, live_fd, entries, work, sid)
            for name, frec in rec.files.items()
        }
        remaining = {n for n in entries if outcomes.get(n) not in ("remove", "restore")} | {
            n for n, o in outcomes.items() if o == "restore"
        }
        effective = any(o in ("remove", "restore") for o in outcomes.values())
        if not remaining and rec.created:
            if work is None:
                work = root.work_for(PurePosixPath(rec.root), root_fd)
            # The whole directory disappears in one rename; it is the old generation.
            _rmtree_at(work.old, sid)
            os.rename(rec.address, sid, src_dir_fd=root_fd, dst_dir_fd=work.old)
            _fsync_dir(root_fd)
            _fsync_dir(work.old)
            late = _open_dir(work.old, sid, f"{work.rel}/old/{sid}")
            if late is not None:
                with _closing(late):
                    strays = set(os.listdir(late)) - set(entries)
                    if strays:
                        os.mkdir(rec.address, DIR_MODE, dir_fd=root_fd)
                        nfd = os.open(rec.address, _DIR_FLAGS, dir_fd=root_fd)
                        with _closing(nfd):
                            os.fchmod(nfd, DIR_MODE)
                            _move_back(late, nfd, set(entries), {}, rel)
            _finish_drops(root, rel, sid, work, outcomes, rec)
            log.info("removed %s", rel)
            done.append(rel)
        elif effective:
            if work is None:
                work = root.work_for(PurePosixPath(rec.root), root_fd)
            swapped = False
            linkable = all(
                not stat.S_ISDIR(st.st_mode)
                for n, st in entries.items()
                if outcomes.get(n) not in ("remove", "restore")
            )
            if linkable and os.fstat(root_fd).st_dev not in _NO_EXCHANGE_DEVS:
                swapped = _swap_in(
                    root,
                    rec,
                    rel,
                    work,
                    sid,
                    root_fd,
                    rec.address,
                    live_fd,
                    entries,
                    {},
                    outcomes,
                )
            if not swapped:
                _replace_per_file(root, rec, rel, work, sid, root_fd, live_fd, {}, outcomes)
            done += _finish_drops(root, rel, sid, work, outcomes, rec)
        else:
            done += _finish_drops(root, rel, sid, work, outcomes, rec)
    del root.state.dirs[rel]
    root.save()
    return done


# ------------------------------------------------------------------------ recovery


def _recover(root: _Root) -> None:
    """Finish or undo what a writer killed mid-way left behind."""
    for rel, rec in list(root.state.dirs.items()):
        if rec.staging_ino is None:
            continue
        sid = _dir_id(rel)
        work = root.work_at(rec.work)
        if work is not None:
            x = _open_dir(work.staging, sid, f"{rec.work}/staging/{sid}")
            if x is not None:
                with _closing(x):
                    swapped = os.fstat(x).st_ino != rec.staging_ino
                    if swapped:
                        root_fd = root.open_path(PurePosixPath(rec.root), create=False)
                        live = _open_dir(root_fd, rec.address, rel) if root_fd is not None else None
                        if root_fd is not None:
                            os.close(root_fd)
                        if live is not None:
                            with _closing(live):
                                live_names = set(os.listdir(live))
                                _move_back(x, live, live_names | set(rec.files), {}, rel)
                if swapped:
                    _retire(work, sid)
                else:
                    _rmtree_at(work.staging, sid)
                log.info("recovered %s after an interrupted write", rel)
        rec.staging_ino = None
    root.save()
    # Staging dirs no record points at were never swapped in: drop them. Old
    # generations of directories that no longer exist have outlived their grace.
    live_ids = {_dir_id(rel) for rel in root.state.dirs}
    for work_rel in {rec.work for rec in root.state.dirs.values()} | {f"{STATE_DIR}/{WORK_DIR}"}:
        work = root.work_at(work_rel)
        if work is None:
            continue
        for name in os.listdir(work.staging):
            _rmtree_at(work.staging, name)
        for name in os.listdir(work.old):
            if name not in live_ids:
                _rmtree_at(work.old, name)


def _tidy(root: _Root) -> None:
    """After removals: drop work directories nothing refers to any more and the
    parent directories we created once they are empty."""
    used = {rec.work for rec in root.state.dirs.values()}
    orphans = set(root.state.orphaned_backups)
    for rel in list(root._works):
        if rel in used or any(o.startswith(rel + "/") for o in orphans):
            continue
        work = root._works.pop(rel)
        work.close()
        path = PurePosixPath(rel)
        parent = root.open_path(path.parent, create=False)
        if parent is not None:
            with _closing(parent):
                _rmtree_at(parent, path.name)
    for rel in sorted(root.state.created, key=lambda p: p.count("/"), reverse=True):
        path = PurePosixPath(rel)
        parent = root.open_path(path.parent, create=False) if path.parent.parts else os.dup(root.fd)
        if parent is None:
            root.state.created.remove(rel)
            continue
        with _closing(parent):
            try:
                os.rmdir(path.name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EBUSY):
                    continue
                raise
            else:
                log.info("removed directory %s, which dtrtrust had created", rel)
            root.state.created.remove(rel)
    root.save()


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, WriterError | ValueError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; check the host directory and retry"
    return f"unexpected {type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------ public API


def sync_trust(host_root: Path, trust: str, dirs: Sequence[DesiredDir]) -> SyncResult:
    """Make the node hold exactly ``dirs`` for trust ``trust``: write what differs,
    remove what this trust owned before and no longer wants (restoring backups)."""
    _check_trust(trust)
    result = SyncResult()
    try:
        with _open_root(Path(host_root)) as root:
            wanted: set[str] = set()
            for d in dirs:
                wanted.add(str(d.path))
                try:
                    result.dirs.append(_sync_dir(root, trust, d))
                except ConflictError as exc:
                    log.warning("conflict in %s: %s", d.path, exc)
                    result.dirs.append(
                        DirResult(d.target, d.address, "conflict", str(exc), str(d.path))
                    )
                except (OSError, WriterError, ValueError) as exc:
                    msg = _error_message(exc)
                    log.error("could not write %s: %s", d.path, msg)
                    result.dirs.append(DirResult(d.target, d.address, "error", msg, str(d.path)))
            stale = [
                rel
                for rel, rec in root.state.dirs.items()
                if rec.trust == trust and rel not in wanted
            ]
            _remove_many(root, stale, result)
    except (OSError, WriterError) as exc:
        result.error = _error_message(exc)
        log.error("cannot use host root %s: %s", host_root, result.error)
    return result


def _remove_many(root: _Root, rels: Sequence[str], result: SyncResult) -> None:
    for rel in rels:
        rec = root.state.dirs[rel]
        try:
            result.removed += _remove_dir(root, rel, rec)
        except (OSError, WriterError, ValueError) as exc:
            msg = _error_message(exc)
            log.error("could not remove %s: %s", rel, msg)
            result.dirs.append(DirResult(rec.target, rec.address, "error", msg, rel))
    if rels:
        _tidy(root)


def remove_trust(host_root: Path, trust: str, roots: Sequence[str] | None = None) -> SyncResult:
    """Remove everything ``trust`` owns (restoring backed-up foreign files).
    ``roots`` limits the removal to those target roots (e.g. ``etc/docker/certs.d``)."""
    _check_trust(trust)
    result = SyncResult()
    try:
        with _open_root(Path(host_root)) as root:
            rels = [
                rel
                for rel, rec in root.state.dirs.items()
                if rec.trust == trust and (roots is None or rec.root in roots)
            ]
            _remove_many(root, rels, result)
    except (OSError, WriterError) as exc:
        result.error = _error_message(exc)
        log.error("cannot use host root %s: %s", host_root, result.error)
    return result


def owned_trusts(host_root: Path) -> set[str]:
    """Names of the trusts that own files under host_root (from the ownership records)."""
    state_fd = None
    try:
        root_fd = os.open(Path(host_root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with _closing(root_fd):
            state_fd = _open_dir(root_fd, STATE_DIR, STATE_DIR)
            if state_fd is None:
                return set()
            with _closing(state_fd):
                raw = _read_at(state_fd, STATE_FILE)
        return {rec.trust for rec in State.load(raw).dirs.values()}
    except FileNotFoundError:
        return set()
    except (ValueError, KeyError, TypeError) as exc:
        raise WriterError(
            f"{STATE_DIR}/{STATE_FILE} under {host_root} cannot be read ({exc}); "
            "restore or move it away"
        ) from None
