"""From the record of older dtrtrust versions to the current one.

Older versions kept their state in ``<host root>/.dtrtrust`` (``/.dtrtrust`` for
``dtrtrust apply`` on a host, while the agent's pod mounted the host's
``/var/lib/dtrtrust`` there), and their writer swapped whole directories with
``RENAME_EXCHANGE``: its record (version 1) names a work directory per target root,
with staging directories, old generations and hard-linked backups of foreign files.

On first use under the lock, every version-1 record found (``.dtrtrust/state.json``, or
the one already in the state directory, as on an agent's node) is merged into the
version-2 record in ``var/lib/dtrtrust``:

* an interrupted swap is finished: entries that only exist in the previous generation
  (foreign files written during the swap) are moved back into the live directory;
* every backup of a foreign file moves to ``<target root>/.dtrtrust-backup`` (a hard
  link, so the same inode; a copy with mode, owner and times across file systems).
  A backup is deleted from its old place only after the new record naming its new
  place is on disk; one that cannot be placed is kept where it is and recorded as
  orphaned, never lost;
* a directory both records claim keeps the current record's entry; the legacy entry's
  backups that differ are recorded as orphaned;
* the other entries of ``.dtrtrust`` (``agent.json``, ``apply/``) move into the state
  directory unless it already holds them; then the legacy directories go when empty.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from dtrtrust.node import fs
from dtrtrust.node.lock import LOCK_FILE, locked
from dtrtrust.node.record import (
    LEGACY_VERSION,
    RECORD_FILE,
    DirRecord,
    Record,
    RecordFile,
    parse,
    unreadable,
)

log = logging.getLogger("dtrtrust.writer")

LEGACY_STATE_DIR = ".dtrtrust"
LEGACY_WORK_DIR = "work"
BACKUP_DIR = ".dtrtrust-backup"  # same as writer.BACKUP_DIR (the writer imports us)
_STATE_MODE = 0o700


def _read_legacy(legacy_fd: int) -> Record | None:
    try:
        raw = fs.read_at(legacy_fd, RECORD_FILE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise unreadable(f"{LEGACY_STATE_DIR}/{RECORD_FILE}", exc) from None
    return parse(raw, f"{LEGACY_STATE_DIR}/{RECORD_FILE}")


def legacy_trusts(root_fd: int) -> set[str]:
    """The trusts of a not yet migrated ``.dtrtrust/state.json`` (read without the lock)."""
    fd = fs.open_dir(root_fd, LEGACY_STATE_DIR, LEGACY_STATE_DIR)
    if fd is None:
        return set()
    with fs.closing(fd):
        rec = _read_legacy(fd)
    return rec.trusts() if rec is not None else set()


@dataclass
class _Migration:
    root_fd: int
    target: Record
    moved: list[str] = field(default_factory=list)  # old backup paths, deleted after the save
    work_dirs: set[str] = field(default_factory=set)


@dataclass
class _Map:
    """Paths in a version-1 record are relative to the host root as that writer saw it:
    ``.dtrtrust/...`` is wherever the record was found (``var/lib/dtrtrust`` on a node)."""

    source: str

    def __call__(self, path: str) -> str:
        if path == LEGACY_STATE_DIR or path.startswith(LEGACY_STATE_DIR + "/"):
            return self.source + path[len(LEGACY_STATE_DIR) :]
        return path


def _stat_at(root_fd: int, path: str) -> os.stat_result | None:
    rel = PurePosixPath(path)
    parent = fs.walk(root_fd, rel.parent)
    if parent is None:
        return None
    with fs.closing(parent):
        try:
            return os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None


def _taken(record: Record) -> set[str]:
    refs = set(record.orphaned_backups)
    for rec in record.dirs.values():
        refs |= {f.backup for f in rec.files.values() if f.backup}
    return refs


def _move_backup(m: _Migration, old: str, rec: DirRecord, name: str) -> str | None:
    """Place the backup ``old`` in the target root's backup directory; its new path
    (the old one when it cannot be placed; None when it is already gone)."""
    src = PurePosixPath(old)
    sfd = fs.walk(m.root_fd, src.parent)
    if sfd is None:
        log.warning("the backup %s of %s/%s is gone", old, rec.root, name)
        return None
    with fs.closing(sfd):
        try:
            os.stat(src.name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            log.warning("the backup %s of %s/%s is gone", old, rec.root, name)
            return None
        root_fd = fs.walk(m.root_fd, rec.root)
        if root_fd is None:
            return old
        with fs.closing(root_fd):
            brel = f"{rec.root}/{BACKUP_DIR}"
            bfd = fs.private_dir(root_fd, BACKUP_DIR, _STATE_MODE, brel)
            with fs.closing(bfd):
                taken = _taken(m.target)
                base = bname = f"{rec.address}.{name}"
                n = 0
                while f"{brel}/{bname}" in taken:
                    n += 1
                    bname = f"{base}.{n}"
                fs.unlink_quiet(bfd, bname)
                try:
                    os.link(src.name, bname, src_dir_fd=sfd, dst_dir_fd=bfd, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    fs.copy_file(sfd, src.name, bfd, bname)
                os.fsync(bfd)
    m.moved.append(old)
    log.info("moved the backup %s to %s/%s", old, brel, bname)
    return f"{brel}/{bname}"


def _finish_swap(m: _Migration, rel: str, rec: DirRecord, work: str) -> None:
    """A version-1 writer killed mid-swap: the previous generation may hold entries
    that appeared during the swap; they go back into the live directory."""
    sid = hashlib.sha256(rel.encode()).hexdigest()[:24]
    staging = fs.walk(m.root_fd, f"{work}/staging/{sid}")
    if staging is None:
        return
    with fs.closing(staging):
        if os.fstat(staging).st_ino == rec.legacy_staging_ino:
            return  # never swapped in; removed with the work directory
        live = fs.walk(m.root_fd, rel)
        if live is None:
            return
        with fs.closing(live):
            present = set(os.listdir(live)) | set(rec.files)
            for name in os.listdir(staging):
                if name not in present:
                    os.rename(name, name, src_dir_fd=staging, dst_dir_fd=live)
                    log.info("moved %s/%s back after an interrupted write", rel, name)
            os.fsync(live)


def _same_file(root_fd: int, a: str, b: str | None) -> bool:
    if b is None:
        return False
    sa, sb = _stat_at(root_fd, a), _stat_at(root_fd, b)
    if sa is None or sb is None:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    fa, fb = fs.walk(root_fd, pa.parent), fs.walk(root_fd, pb.parent)
    try:
        if fa is None or fb is None:
            return False
        return fs.read_at(fa, pa.name) == fs.read_at(fb, pb.name)
    finally:
        for fd in (fa, fb):
            if fd is not None:
                os.close(fd)


def _merge(m: _Migration, legacy: Record, source: str, *, in_place: bool) -> None:
    mapped = _Map(source)
    m.work_dirs.add(f"{source}/{LEGACY_WORK_DIR}")
    for rel, rec in legacy.dirs.items():
        if rec.legacy_work:
            m.work_dirs.add(mapped(rec.legacy_work))
        if not in_place and rel in m.target.dirs:
            current = m.target.dirs[rel]
            for name, frec in rec.files.items():
                if not frec.backup:
                    continue
                old = mapped(frec.backup)
                if _stat_at(m.root_fd, old) is None:
                    continue
                mine = current.files.get(name)
                if _same_file(m.root_fd, old, mine.backup if mine else None):
                    m.moved.append(old)  # already migrated by an interrupted earlier run
                elif old not in m.target.orphaned_backups:
                    m.target.orphaned_backups.append(old)
                    log.warning("%s is claimed twice; kept the backup %s as orphaned", rel, old)
            continue
        if rec.legacy_work and rec.legacy_staging_ino is not None:
            _finish_swap(m, rel, rec, mapped(rec.legacy_work))
        for name, frec in rec.files.items():
            if frec.backup:
                frec.backup = _move_backup(m, mapped(frec.backup), rec, name)
        rec.legacy_work = rec.legacy_staging_ino = None
        m.target.dirs[rel] = rec
    for path in legacy.created:
        if path not in m.target.created:
            m.target.created.append(path)
    for path in map(mapped, legacy.orphaned_backups):
        if path not in m.target.orphaned_backups:
            m.target.orphaned_backups.append(path)


def _move_entry(src_fd: int, name: str, dst_fd: int, where: str) -> None:
    """Move ``name`` (a file or a directory of files) into ``dst_fd``."""
    try:
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        sub = fs.open_dir(src_fd, name, where)
        assert sub is not None
        with fs.closing(sub):
            dsub = fs.private_dir(dst_fd, name, stat.S_IMODE(st.st_mode), where)
            with fs.closing(dsub):
                for entry in os.listdir(sub):
                    _move_entry(sub, entry, dsub, f"{where}/{entry}")
        os.rmdir(name, dir_fd=src_fd)
    elif stat.S_ISREG(st.st_mode):
        fs.copy_file(src_fd, name, dst_fd, name)
        os.unlink(name, dir_fd=src_fd)


def _remove_work(m: _Migration, work: str) -> None:
    fd = fs.walk(m.root_fd, work)
    if fd is None:
        return
    with fs.closing(fd):
        for sub in ("staging", "old"):
            fs.remove_tree(fd, sub)  # our generations and links of live foreign files
        with contextlib.suppress(OSError):
            os.rmdir("backup", dir_fd=fd)
    parent = fs.walk(m.root_fd, PurePosixPath(work).parent)
    if parent is not None:
        with fs.closing(parent):
            try:
                os.rmdir(PurePosixPath(work).name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except OSError:
                log.warning("kept %s: it still holds files (see its backup/)", work)


def migrate(root_fd: int, state_fd: int, state_rel: str, rf: RecordFile) -> None:
    """Bring the records of older versions into ``rf`` (its lock is held)."""
    in_place = rf.record.version == LEGACY_VERSION
    legacy_fd = fs.open_dir(root_fd, LEGACY_STATE_DIR, LEGACY_STATE_DIR)
    if not in_place and legacy_fd is None:
        return
    with contextlib.ExitStack() as stack:
        m = _Migration(root_fd, rf.record)
        if in_place:  # an agent's node: the version-1 record is already in the state dir
            legacy_here = rf.record
            rf.record = m.target = Record()
            _merge(m, legacy_here, state_rel, in_place=True)
        if legacy_fd is not None:
            stack.callback(os.close, legacy_fd)
            # An older `dtrtrust apply` holds this lock while it writes: wait for it.
            stack.enter_context(locked(legacy_fd))
            legacy = _read_legacy(legacy_fd)
            if legacy is not None:
                _merge(m, legacy, LEGACY_STATE_DIR, in_place=False)
        rf.dirty = True
        rf.save()  # from here on the record names every backup's new place
        log.info("migrated the ownership record to %s/%s", state_rel, RECORD_FILE)
        for old in m.moved:
            path = PurePosixPath(old)
            parent = fs.walk(root_fd, path.parent)
            if parent is not None:
                with fs.closing(parent):
                    fs.unlink_quiet(parent, path.name)
        for work in sorted(m.work_dirs):
            _remove_work(m, work)
        if legacy_fd is not None:
            _empty_legacy_dir(root_fd, legacy_fd, state_fd, state_rel)


def _empty_legacy_dir(root_fd: int, legacy_fd: int, state_fd: int, state_rel: str) -> None:
    for name in os.listdir(legacy_fd):
        if name in (RECORD_FILE, LOCK_FILE, LEGACY_WORK_DIR) or name.endswith(fs.TMP_SUFFIX):
            continue
        try:
            os.stat(name, dir_fd=state_fd, follow_symlinks=False)
        except FileNotFoundError:
            _move_entry(legacy_fd, name, state_fd, f"{LEGACY_STATE_DIR}/{name}")
            log.info("moved %s/%s to %s", LEGACY_STATE_DIR, name, state_rel)
        else:
            log.warning("kept %s/%s: %s already has one", LEGACY_STATE_DIR, name, state_rel)
    fs.unlink_quiet(legacy_fd, RECORD_FILE)
    fs.remove_tree(legacy_fd, fs.tmp_name(RECORD_FILE))
    rest = set(os.listdir(legacy_fd)) - {LOCK_FILE}
    if rest:
        log.warning("kept %s: it still holds %s", LEGACY_STATE_DIR, ", ".join(sorted(rest)))
        return
    fs.unlink_quiet(legacy_fd, LOCK_FILE)
    with contextlib.suppress(OSError):
        os.rmdir(LEGACY_STATE_DIR, dir_fd=root_fd)
