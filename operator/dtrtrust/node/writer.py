"""Applies DesiredDirs under a host root: atomic per file, owned, reversible.

How a directory is written
--------------------------
The address directory (``etc/docker/certs.d/<addr>/``...) keeps its inode for ever, so
a bind mount of it (a DinD sidecar's ``certs.d/<addr>``) sees every rewrite:

1. every file that changes is staged as ``.<name>.dtrtrust-new`` in the directory
   itself (written, ``fchmod``-ed, fsynced), so no rename ever crosses a mount;
2. the staged files are renamed over their names back to back, in the order a path
   reader reads them (``ca.crt``, ``client.cert``, ``client.key``; ``hosts.toml`` last
   because it names the others), then files no longer wanted are removed
   (``hosts.toml`` first, the certificate before its key) and the directory fsynced;
3. a directory that does not exist yet is built whole as ``.<addr>.dtrtrust-new`` next
   to it and appears with one ``rename`` (RENAME_NOREPLACE).

Every reader of certs.d files (dockerd, containerd, containers/image, notary) opens
them by path; none reads through a directory fd, so swapping the whole directory
bought them nothing (measured: docs/BENCHMARKS.md, "Node file writer under SIGKILL")
and stranded bind mounts of the directory. A reader never sees a partial file; a
path reader that reads the certificate before a rotation's renames and the key after
them sees a mismatched pair for that one read, as it would with any scheme.

Ownership and crash safety
--------------------------
``<host root>/var/lib/dtrtrust/state.json`` (:mod:`dtrtrust.node.record`) says which
trust owns which directory, which files in it we wrote (SHA-256) and which foreign
files we backed up. Before any rename the record claims both the old and the new hash
of every file about to change, so a writer killed at any point leaves a record that
covers whatever is on disk; the next run rewrites what is not yet new and removes the
temp files. Foreign files with a name we need are hard-linked into
``<target root>/.dtrtrust-backup/`` first (same file system, so the restore is one
``rename`` of the very same inode) and put back when the trust goes. A foreign
``hosts.toml`` is never replaced (conflict). Other entries in the directory are never
touched.

The record is loaded once per call (and not parsed again while it is unchanged on
disk) and written at most twice per call (intent, outcome), never when nothing
changed. All paths are walked without following links (:mod:`dtrtrust.node.fs`); the
lock (:mod:`dtrtrust.node.lock`) keeps the agent and ``dtrtrust apply`` apart. The
record of older versions (``<host root>/.dtrtrust``) is migrated on first use
(:mod:`dtrtrust.node.migrate`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dtrtrust.contract import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, HOSTS_TOML_FILE
from dtrtrust.core.addresses import validate_address
from dtrtrust.core.layout import DIR_MODE, FILE_NAMES, DesiredDir, DesiredFile
from dtrtrust.node import fs, migrate
from dtrtrust.node.errors import ConflictError, WriterError
from dtrtrust.node.lock import locked
from dtrtrust.node.record import RECORD_FILE, DirRecord, FileRecord, Record, RecordFile

__all__ = [
    "STATE_DIR",
    "ConflictError",
    "DirResult",
    "SyncResult",
    "WriterError",
    "owned_trusts",
    "remove_trust",
    "sync_trust",
    "sync_trusts",
]

log = logging.getLogger("dtrtrust.writer")

# Where the record, the lock and the agent's and apply's own state live, relative to
# the host root: /var/lib/dtrtrust on a real host, for the agent and `apply` alike.
STATE_DIR = "var/lib/dtrtrust"
STATE_MODE = 0o700
# Directories prepared (two fds open each) before their intent is saved and they are
# committed: bounds the fds of a batch well below the usual limit of 1,024.
MAX_OPEN_JOBS = 128
BACKUP_DIR = ".dtrtrust-backup"  # in each target root: same file system as the files

# A path reader (dockerd's ReadCertsDirectory) lists the directory and reads ca.crt,
# client.cert, client.key in that order; renaming in the same order means a reader can
# only pair an old certificate with a new key when its two opens straddle both renames.
# hosts.toml last: it names the others.
RENAME_ORDER: tuple[str, ...] = (CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, HOSTS_TOML_FILE)
# Removal: hosts.toml first (stops naming the files), then the certificate before its key.
REMOVE_ORDER = (HOSTS_TOML_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, CA_FILE)


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------- the root


class _Root:
    """An open, locked host root and its ownership record."""

    def __init__(self, fd: int, state_fd: int, rf: RecordFile) -> None:
        self.fd = fd
        self.state_fd = state_fd
        self.rf = rf

    @property
    def record(self) -> Record:
        return self.rf.record

    def set_dir(self, rel: str, rec: DirRecord) -> None:
        old = self.record.dirs.get(rel)
        if old is None or old.to_json() != rec.to_json():
            self.rf.dirty = True
        self.record.dirs[rel] = rec

    def drop_dir(self, rel: str) -> None:
        if self.record.dirs.pop(rel, None) is not None:
            self.rf.dirty = True

    def orphan(self, backup: str) -> None:
        if backup not in self.record.orphaned_backups:
            self.record.orphaned_backups.append(backup)
            self.rf.dirty = True

    def save(self) -> None:
        self.rf.save()

    def referenced_backups(self) -> set[str]:
        refs = set(self.record.orphaned_backups)
        for rec in self.record.dirs.values():
            refs |= {f.backup for f in rec.files.values() if f.backup}
        return refs

    def open_target_root(self, root: str, *, create: bool) -> int | None:
        def remember(rel: str) -> None:
            # Recorded before the mkdir: a crash leaves a record of a missing directory
            # (harmless), never an unrecorded directory of ours.
            if rel not in self.record.created:
                self.record.created.append(rel)
                self.rf.dirty = True
                self.save()
            log.info("created directory %s", rel)

        return fs.walk(
            self.fd, root, create=create, mode=DIR_MODE, before_create=remember, inherit=True
        )

    def open_backup(self, path: str) -> tuple[int, str] | None:
        """(fd of the backup's directory, its name); None when the directory is gone."""
        rel = PurePosixPath(path)
        fd = fs.walk(self.fd, rel.parent)
        return None if fd is None else (fd, rel.name)


def open_state_dir(root_fd: int) -> int:
    """``<host root>/var/lib/dtrtrust``, created 0700 (its parents 0755) if absent."""
    rel = PurePosixPath(STATE_DIR)
    parent = fs.walk(root_fd, rel.parent, create=True)
    assert parent is not None
    with fs.closing(parent):
        return fs.private_dir(parent, rel.name, STATE_MODE, STATE_DIR)


@contextlib.contextmanager
def _open_root(host_root: Path) -> Iterator[_Root]:
    with contextlib.ExitStack() as stack:
        root_fd = stack.enter_context(fs.closing(fs.open_root(host_root)))
        state_fd = stack.enter_context(fs.closing(open_state_dir(root_fd)))
        stack.enter_context(locked(state_fd))
        rf = RecordFile(state_fd, f"{STATE_DIR}/{RECORD_FILE}")
        try:
            migrate.migrate(root_fd, state_fd, STATE_DIR, rf)
            yield _Root(root_fd, state_fd, rf)
            rf.save()
        finally:
            rf.close()


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


# --------------------------------------------------------------------- planning


@dataclass
class _Plan:
    """What a sync of one directory must do, decided before anything is written."""

    writes: dict[str, DesiredFile] = field(default_factory=dict)
    backups: list[str] = field(default_factory=list)  # foreign names to back up first
    drops: list[str] = field(default_factory=list)  # owned names no longer wanted
    chmods: dict[str, int] = field(default_factory=dict)  # owned files with only a wrong mode
    claims: dict[str, FileRecord] = field(default_factory=dict)  # record after the commit


def _plan_sync(
    rel: str,
    rec: DirRecord | None,
    d: DesiredDir,
    live_fd: int | None,
    entries: dict[str, os.stat_result],
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
        have = _sha256(fs.read_at(live_fd, f.name))
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
            plan.claims[f.name] = FileRecord([want])
    wanted = {f.name for f in d.files}
    plan.drops = [name for name in owned if name not in wanted]
    return plan


def _backup_stat(root: _Root, path: str | None) -> os.stat_result | None:
    if not path:
        return None
    opened = root.open_backup(path)
    if opened is None:
        return None
    fd, name = opened
    with fs.closing(fd):
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def _drop_outcome(
    root: _Root,
    rel: str,
    name: str,
    frec: FileRecord,
    live_fd: int,
    entries: dict[str, os.stat_result],
) -> str:
    """What to do with a file we own and no longer want:
    "remove", "restore" (put the backup back), "keep-original" (the backup is what is
    live: we never replaced it), "keep" (not ours any more), "gone"."""
    st = entries.get(name)
    bst = _backup_stat(root, frec.backup)
    if st is None:
        return "restore" if bst is not None else "gone"
    if bst is not None and (bst.st_dev, bst.st_ino) == (st.st_dev, st.st_ino):
        return "keep-original"
    if not stat.S_ISREG(st.st_mode):
        log.warning("%s/%s is no longer a file dtrtrust wrote; leaving it", rel, name)
        return "keep"
    if _sha256(fs.read_at(live_fd, name)) not in frec.hashes:
        log.warning("%s/%s was changed by someone else; leaving it in place", rel, name)
        return "keep"
    return "restore" if bst is not None else "remove"


# --------------------------------------------------------------------- backups


def _backup(root: _Root, d: DesiredDir, root_fd: int, live_fd: int, name: str) -> str:
    """Keep a foreign file before it is replaced: a hard link in the target root's
    backup directory (same inode, mode, owner, times); a copy if the link is refused.
    Returns its path relative to the host root."""
    brel = f"{d.root}/{BACKUP_DIR}"
    bfd = fs.private_dir(root_fd, BACKUP_DIR, STATE_MODE, brel)
    with fs.closing(bfd):
        taken = root.referenced_backups()
        base = bname = f"{d.address}.{name}"
        n = 0
        while f"{brel}/{bname}" in taken:  # never overwrite a backup the record knows
            n += 1
            bname = f"{base}.{n}"
        # Not in the record: a leftover of a writer killed before it saved its intent,
        # a second link to a foreign file that was never replaced.
        fs.unlink_quiet(bfd, bname)
        try:
            os.link(name, bname, src_dir_fd=live_fd, dst_dir_fd=bfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV):
                raise
            fs.copy_file(live_fd, name, bfd, bname)
        os.fsync(bfd)
    log.info("backed up foreign file %s/%s before replacing it", d.path, name)
    return f"{brel}/{bname}"


def _put_back(root: _Root, backup: str, live_fd: int, name: str) -> None:
    """The backup goes back under ``name``: the same inode when it is a hard link."""
    opened = root.open_backup(backup)
    if opened is None:
        raise WriterError(f"the backup {backup} vanished while being restored; retry")
    bfd, bname = opened
    with fs.closing(bfd):
        tmp = fs.tmp_name(name)
        fs.remove_tree(live_fd, tmp)
        try:
            os.link(bname, tmp, src_dir_fd=bfd, dst_dir_fd=live_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV):
                raise
            fs.copy_file(bfd, bname, live_fd, tmp)
        os.rename(tmp, name, src_dir_fd=live_fd, dst_dir_fd=live_fd)


def _discard_backup(root: _Root, backup: str) -> None:
    opened = root.open_backup(backup)
    if opened is None:
        return
    bfd, bname = opened
    with fs.closing(bfd):
        fs.unlink_quiet(bfd, bname)
        os.fsync(bfd)
    # The backup directory goes with its last backup.
    path = PurePosixPath(backup).parent
    if path.name == BACKUP_DIR:
        parent = fs.walk(root.fd, path.parent)
        if parent is not None:
            with fs.closing(parent), contextlib.suppress(OSError):
                os.rmdir(BACKUP_DIR, dir_fd=parent)


def _finish_drops(
    root: _Root, rel: str, outcomes: dict[str, str], rec: DirRecord | None
) -> list[str]:
    """After the renames: discard the backups that went back into place, remember the
    ones we could not put back. Returns the relative paths restored or removed."""
    done: list[str] = []
    for name, outcome in outcomes.items():
        frec = rec.files.get(name) if rec else None
        backup = frec.backup if frec else None
        if outcome in ("restore", "keep-original") and backup:
            _discard_backup(root, backup)
            if outcome == "restore":
                log.info("restored foreign file %s/%s", rel, name)
                done.append(f"{rel}/{name}")
        elif outcome == "remove":
            log.info("removed %s/%s", rel, name)
            done.append(f"{rel}/{name}")
        elif outcome == "keep" and backup and _backup_stat(root, backup) is not None:
            root.orphan(backup)
            log.warning(
                "kept the backup %s: %s/%s changed since dtrtrust wrote it", backup, rel, name
            )
    return done


def _apply_drops(root: _Root, live_fd: int, outcomes: dict[str, str], rec: DirRecord) -> None:
    for name in REMOVE_ORDER:
        outcome = outcomes.get(name)
        if outcome == "remove":
            fs.unlink_quiet(live_fd, name)
        elif outcome == "restore":
            backup = rec.files[name].backup
            assert backup is not None
            _put_back(root, backup, live_fd, name)


# --------------------------------------------------------------------- the writing


def _clean_tmp(live_fd: int, entries: dict[str, os.stat_result]) -> None:
    """Temp files of a writer killed mid-way are ours: remove them."""
    for name in FILE_NAMES:
        tmp = fs.tmp_name(name)
        if tmp in entries:
            fs.remove_tree(live_fd, tmp)
            del entries[tmp]


def _fix_modes(live_fd: int, rel: str, chmods: dict[str, int]) -> None:
    """Modes of files whose content is already right, and the directory's own mode:
    fixed in place (no rewrite, the inode stays)."""
    for name, mode in chmods.items():
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=live_fd)
        with fs.closing(fd):
            if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                os.fchmod(fd, mode)
                log.info("fixed the mode of %s/%s", rel, name)
    if stat.S_IMODE(os.fstat(live_fd).st_mode) != DIR_MODE:
        os.fchmod(live_fd, DIR_MODE)
        log.info("fixed the mode of %s", rel)


@dataclass
class _Job:
    """A directory with changes, its intent already in the record."""

    d: DesiredDir
    result: DirResult
    root_fd: int
    live_fd: int | None
    plan: _Plan
    outcomes: dict[str, str]
    old: DirRecord | None
    new: DirRecord

    def close(self) -> None:
        if self.live_fd is not None:
            os.close(self.live_fd)
        os.close(self.root_fd)


def _prepare(root: _Root, trust: str, d: DesiredDir) -> tuple[DirResult, _Job | None]:
    """Compare one directory with what is wanted. Unchanged: fix modes, return no job.
    Changed: back up foreign files, put the intent into the record, return the job."""
    rel = str(d.path)
    result = DirResult(d.target, d.address, "unchanged", path=rel)
    _check_dir(d)
    rec = root.record.dirs.get(rel)
    if rec is not None and rec.trust != trust:
        raise ConflictError(
            f"{rel} is already managed by DTRTrust {rec.trust!r}; "
            "give each registry address to one DTRTrust only"
        )
    root_fd = root.open_target_root(str(d.root), create=True)
    assert root_fd is not None
    live_fd: int | None = None
    try:
        fs.remove_tree(root_fd, fs.tmp_name(d.address))  # a new directory a kill interrupted
        live_fd = fs.open_dir(root_fd, d.address, rel)
        entries = fs.scan(live_fd) if live_fd is not None else {}
        if live_fd is not None:
            _clean_tmp(live_fd, entries)
        plan = _plan_sync(rel, rec, d, live_fd, entries)
        outcomes: dict[str, str] = {}
        if live_fd is not None and rec is not None:
            for name in plan.drops:
                outcomes[name] = _drop_outcome(root, rel, name, rec.files[name], live_fd, entries)
        effective = plan.writes or any(o in ("remove", "restore") for o in outcomes.values())
        new = DirRecord(
            trust=trust,
            target=d.target,
            root=str(d.root),
            address=d.address,
            created=rec.created if rec is not None else live_fd is None,
            files=dict(plan.claims),
        )
        if not effective:
            if live_fd is not None:
                _fix_modes(live_fd, rel, plan.chmods)
            _finish_drops(root, rel, outcomes, rec)
            root.set_dir(rel, new)
            if live_fd is not None:
                os.close(live_fd)
            os.close(root_fd)
            return result, None
        # Foreign files we replace are kept first: a crash after this leaves at worst
        # an extra link to a file that was never replaced.
        for name in plan.backups:
            assert live_fd is not None
            new.files[name].backup = _backup(root, d, root_fd, live_fd, name)
        # Intent: claim the union of old and new, so a crash at any point leaves a
        # record that covers whatever is live.
        intent = DirRecord(trust, d.target, str(d.root), d.address, new.created)
        for name, frec in (rec.files if rec else {}).items():
            intent.files[name] = FileRecord(list(frec.hashes), frec.backup)
        for name, frec in new.files.items():
            prev = intent.files.get(name)
            intent.files[name] = FileRecord(
                frec.hashes + (prev.hashes if prev else []),
                frec.backup or (prev.backup if prev else None),
            )
        root.set_dir(rel, intent)
        return result, _Job(d, result, root_fd, live_fd, plan, outcomes, rec, new)
    except BaseException:
        if live_fd is not None:
            os.close(live_fd)
        os.close(root_fd)
        raise


def _create_dir(job: _Job) -> None:
    """A directory new to the host: built whole next to its place, then one rename."""
    d, root_fd = job.d, job.root_fd
    owner = fs.owner_of(root_fd)
    tmp = fs.tmp_name(d.address)
    fs.remove_tree(root_fd, tmp)
    os.mkdir(tmp, 0o700, dir_fd=root_fd)
    sfd = os.open(tmp, fs.DIR_FLAGS, dir_fd=root_fd)
    with fs.closing(sfd):
        for name in RENAME_ORDER:
            if name in job.plan.writes:
                f = job.plan.writes[name]
                fs.write_new(sfd, name, f.content, f.mode, owner)
        os.fchmod(sfd, DIR_MODE)
        fs.inherit_owner(sfd, owner)
        os.fsync(sfd)
    try:
        fs.rename_noreplace(root_fd, tmp, root_fd, d.address)
    except FileExistsError:
        fs.remove_tree(root_fd, tmp)
        raise WriterError(
            f"{d.path} appeared while dtrtrust was creating it; it is retried at the next sync"
        ) from None
    os.fsync(root_fd)


def _rewrite_dir(root: _Root, job: _Job) -> None:
    """Stage every changed file, then rename them back to back; then the removals."""
    live_fd = job.live_fd
    assert live_fd is not None
    owner = fs.owner_of(job.root_fd)
    staged = [
        (
            name,
            fs.stage(
                live_fd, name, job.plan.writes[name].content, job.plan.writes[name].mode, owner
            ),
        )
        for name in RENAME_ORDER
        if name in job.plan.writes
    ]
    _renames(live_fd, staged)
    if job.old is not None:
        _apply_drops(root, live_fd, job.outcomes, job.old)
    os.fsync(live_fd)
    _fix_modes(live_fd, str(job.d.path), job.plan.chmods)


def _renames(live_fd: int, staged: list[tuple[str, str]]) -> None:
    """The commit: nothing but renames, back to back (a separate function so the
    tests can stop a writer between any two of them).

    The files being replaced are held open meanwhile: otherwise each rename also frees
    the replaced inode's blocks (ext4: ~200 us for a 20 KB ca.crt), which widens the
    window in which a path reader can pair a new certificate with an old key; held,
    the gap between two renames is ~8 us and the freeing happens after the last one."""
    pins: list[int] = []
    try:
        for name, _ in staged:
            with contextlib.suppress(OSError):
                pins.append(
                    os.open(
                        name,
                        os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                        dir_fd=live_fd,
                    )
                )
        for name, tmp in staged:
            os.rename(tmp, name, src_dir_fd=live_fd, dst_dir_fd=live_fd)
    finally:
        for fd in pins:
            os.close(fd)


def _commit(root: _Root, job: _Job) -> None:
    rel = str(job.d.path)
    if job.live_fd is None:
        _create_dir(job)
    else:
        _rewrite_dir(root, job)
    _finish_drops(root, rel, job.outcomes, job.old)
    root.set_dir(rel, job.new)
    names = ", ".join(sorted(job.plan.writes)) or "removals only"
    log.info("wrote %s (%s)", rel, names)
    job.result.action = "written"


def _remove_dir(root: _Root, rel: str, rec: DirRecord) -> list[str]:
    """Remove what ``rec`` owns in one address directory; restore backups."""
    root_fd = root.open_target_root(rec.root, create=False)
    with contextlib.ExitStack() as stack:
        live_fd = None
        if root_fd is not None:
            stack.callback(os.close, root_fd)
            fs.remove_tree(root_fd, fs.tmp_name(rec.address))
            live_fd = fs.open_dir(root_fd, rec.address, rel)
        if root_fd is None or live_fd is None:
            for frec in rec.files.values():
                if frec.backup and _backup_stat(root, frec.backup) is not None:
                    root.orphan(frec.backup)
                    log.warning(
                        "%s is gone; kept the backup %s of a foreign file", rel, frec.backup
                    )
            root.drop_dir(rel)
            return []
        stack.callback(os.close, live_fd)
        entries = fs.scan(live_fd)
        _clean_tmp(live_fd, entries)
        outcomes = {
            name: _drop_outcome(root, rel, name, frec, live_fd, entries)
            for name, frec in rec.files.items()
        }
        _apply_drops(root, live_fd, outcomes, rec)
        os.fsync(live_fd)
        done = _finish_drops(root, rel, outcomes, rec)
        if rec.created:
            try:
                os.rmdir(rec.address, dir_fd=root_fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                log.info("kept %s: it holds files dtrtrust did not write", rel)
            else:
                os.fsync(root_fd)
                log.info("removed %s", rel)
                done = [rel]
    root.drop_dir(rel)
    return done


def _tidy(root: _Root) -> None:
    """After removals: drop the parent directories we created once they are empty."""
    for rel in sorted(root.record.created, key=lambda p: p.count("/"), reverse=True):
        path = PurePosixPath(rel)
        parent = fs.walk(root.fd, path.parent)
        if parent is None:
            root.record.created.remove(rel)
            root.rf.dirty = True
            continue
        with fs.closing(parent):
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
            root.record.created.remove(rel)
            root.rf.dirty = True


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, WriterError | ValueError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; check the host directory and retry"
    return f"unexpected {type(exc).__name__}: {exc}"


def _remove_many(root: _Root, rels: Sequence[str], result: SyncResult) -> None:
    for rel in rels:
        rec = root.record.dirs[rel]
        try:
            result.removed += _remove_dir(root, rel, rec)
        except (OSError, WriterError, ValueError) as exc:
            msg = _error_message(exc)
            log.error("could not remove %s: %s", rel, msg)
            result.dirs.append(DirResult(rec.target, rec.address, "error", msg, rel))
    if rels:
        _tidy(root)


# ------------------------------------------------------------------------ public API


def sync_trust(host_root: Path, trust: str, dirs: Sequence[DesiredDir]) -> SyncResult:
    """Make the node hold exactly ``dirs`` for trust ``trust``: write what differs,
    remove what this trust owned before and no longer wants (restoring backups)."""
    return sync_trusts(host_root, {trust: dirs})[trust]


def sync_trusts(
    host_root: Path, wanted: Mapping[str, Sequence[DesiredDir]]
) -> dict[str, SyncResult]:
    """:func:`sync_trust` for several trusts at once, under one lock, with one load of
    the record and one write of the intent per :data:`MAX_OPEN_JOBS` directories about
    to change, then one of the outcome: the record names every directory of the node,
    so writing it per trust made a first sync of 1,000 trusts serialise it 2,000 times.
    A failure of one directory is that trust's result, never another's."""
    for trust in wanted:
        _check_trust(trust)
    results = {trust: SyncResult() for trust in wanted}
    try:
        with _open_root(Path(host_root)) as root:
            jobs: list[_Job] = []

            def commit_jobs() -> None:
                try:
                    if jobs:
                        root.save()  # the intent of every directory about to change
                    for job in jobs:
                        try:
                            _commit(root, job)
                        except (OSError, WriterError, ValueError) as exc:
                            msg = _error_message(exc)
                            log.error("could not write %s: %s", job.d.path, msg)
                            job.result.action, job.result.message = "error", msg
                finally:
                    for job in jobs:
                        job.close()
                    jobs.clear()

            try:
                for trust, dirs in wanted.items():
                    for d in dirs:
                        try:
                            dir_result, job = _prepare(root, trust, d)
                        except ConflictError as exc:
                            log.warning("conflict in %s: %s", d.path, exc)
                            dir_result = DirResult(
                                d.target, d.address, "conflict", str(exc), str(d.path)
                            )
                            job = None
                        except (OSError, WriterError, ValueError) as exc:
                            msg = _error_message(exc)
                            log.error("could not write %s: %s", d.path, msg)
                            dir_result = DirResult(d.target, d.address, "error", msg, str(d.path))
                            job = None
                        results[trust].dirs.append(dir_result)
                        if job is not None:
                            jobs.append(job)
                    if len(jobs) >= MAX_OPEN_JOBS:  # each holds two directory fds
                        commit_jobs()
                commit_jobs()
            finally:
                for job in jobs:  # prepared, never committed (an unexpected error)
                    job.close()
            for trust, dirs in wanted.items():
                keep = {str(d.path) for d in dirs}
                stale = [
                    rel
                    for rel, rec in root.record.dirs.items()
                    if rec.trust == trust and rel not in keep
                ]
                _remove_many(root, stale, results[trust])
    except (OSError, WriterError) as exc:
        message = _error_message(exc)
        log.error("cannot use host root %s: %s", host_root, message)
        for result in results.values():
            result.error = message
    return results


def remove_trust(host_root: Path, trust: str, roots: Sequence[str] | None = None) -> SyncResult:
    """Remove everything ``trust`` owns (restoring backed-up foreign files).
    ``roots`` limits the removal to those target roots (e.g. ``etc/docker/certs.d``)."""
    _check_trust(trust)
    result = SyncResult()
    try:
        with _open_root(Path(host_root)) as root:
            rels = [
                rel
                for rel, rec in root.record.dirs.items()
                if rec.trust == trust and (roots is None or rec.root in roots)
            ]
            _remove_many(root, rels, result)
    except (OSError, WriterError) as exc:
        result.error = _error_message(exc)
        log.error("cannot use host root %s: %s", host_root, result.error)
    return result


def owned_trusts(host_root: Path) -> set[str]:
    """Names of the trusts that own files under host_root (from the ownership record,
    and from a not yet migrated record of an older version). Reads only."""
    try:
        with fs.closing(fs.open_root(Path(host_root))) as root_fd:
            trusts = migrate.legacy_trusts(root_fd)
            state_fd = fs.walk(root_fd, STATE_DIR)
            if state_fd is None:
                return trusts
            with fs.closing(state_fd):
                rf = RecordFile(state_fd, f"{STATE_DIR}/{RECORD_FILE}")
                rf.close()
                return trusts | rf.record.trusts()
    except FileNotFoundError:
        return set()
