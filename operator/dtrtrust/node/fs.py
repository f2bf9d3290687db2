"""No-follow, dir-fd-relative file primitives under a host root.

Every path below the host root is walked one component at a time with
``O_NOFOLLOW | O_DIRECTORY`` and every operation is relative to the directory fd of
its parent, so a symbolic link planted anywhere (a path component, a file name, a
temp file name) is refused, never followed: nothing dtrtrust writes can be redirected
outside the host root. The host root itself is opened as given (it is the operator's
choice, e.g. ``/host`` in the agent's pod).

Modes are exact whatever the umask (``fchmod`` after creation). A file is replaced
atomically: a temp file ``.<name>.dtrtrust-new`` in the same directory (created with
``O_EXCL | O_NOFOLLOW`` after removing any leftover), written, ``fchmod``-ed, fsynced,
renamed over the name, then the directory fsynced. The temp name never ends in
``.crt``, ``.cert`` or ``.key``, so the runtimes that pick certs.d files by suffix
ignore it, and a leftover of a killed writer is recognisable and removed next time.

The public helpers at the end (:func:`write_file`, :func:`read_file`,
:func:`remove_file`, :func:`ensure_dir`) are what every module uses for a file it
writes under a host root (state, backups, remembered policies, the system trust
store).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from dtrtrust.node.errors import WriterError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_SUFFIX = ".dtrtrust-new"
DEFAULT_DIR_MODE = 0o755

RENAME_NOREPLACE = 1

Owner = tuple[int, int]


def tmp_name(name: str) -> str:
    """The temp file (or directory) that stands in for ``name`` until its rename."""
    return f".{name}{TMP_SUFFIX}"


def is_tmp_for(entry: str, name: str) -> bool:
    return entry == tmp_name(name)


@contextlib.contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


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


def _file_refusal(rel: str) -> WriterError:
    return WriterError(
        f"{rel} is a symbolic link or not a regular file; dtrtrust never follows links "
        "under the host root: remove it"
    )


def open_root(host_root: Path) -> int:
    return os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(parent_fd: int, name: str, rel: str) -> int | None:
    """Open directory ``name`` below ``parent_fd`` without following links; None when absent."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refusal(parent_fd, name, rel) from None
        raise


def owner_of(fd: int) -> Owner:
    st = os.fstat(fd)
    return st.st_uid, st.st_gid


def inherit_owner(fd: int, owner: Owner | None) -> None:
    """Give ``fd`` to ``owner`` (when we run as root and it differs)."""
    if owner is None or os.geteuid() != 0:
        return
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != owner:
        os.fchown(fd, *owner)


def mkdir_exact(
    parent_fd: int, name: str, mode: int, rel: str, *, owner: Owner | None = None
) -> tuple[int, bool]:
    """Open directory ``name``, creating it with exactly ``mode`` if absent.
    Returns (fd, created). An existing directory keeps its mode."""
    fd = open_dir(parent_fd, name, rel)
    if fd is not None:
        return fd, False
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = open_dir(parent_fd, name, rel)
    if fd is None:
        raise WriterError(f"{rel} vanished while being created; retry")
    try:
        os.fchmod(fd, mode)  # independent of the umask
        inherit_owner(fd, owner)
        os.fsync(parent_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, True


def private_dir(parent_fd: int, name: str, mode: int, rel: str) -> int:
    """A directory of ours: created if absent, and ``mode`` enforced either way."""
    fd, _ = mkdir_exact(parent_fd, name, mode, rel)
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def walk(
    root_fd: int,
    rel: PurePosixPath | str,
    *,
    create: bool = False,
    mode: int = DEFAULT_DIR_MODE,
    before_create: Callable[[str], None] | None = None,
    inherit: bool = False,
) -> int | None:
    """Open ``rel`` below ``root_fd`` component by component without following links.
    Missing parts are created with ``mode`` when ``create`` (``before_create(path)``
    is called first, so a caller can record what it creates; ``inherit`` gives each new
    directory the owner of its parent); otherwise None is returned when a part is absent."""
    path = PurePosixPath(rel)
    if path.is_absolute() or any(p in ("", ".", "..") for p in path.parts):
        raise WriterError(f"{str(rel)!r} must be a plain path below the host root")
    fd = os.dup(root_fd)
    done = PurePosixPath()
    try:
        for part in path.parts:
            done = done / part
            child = open_dir(fd, part, str(done))
            if child is None:
                if not create:
                    os.close(fd)
                    return None
                if before_create is not None:
                    before_create(str(done))
                child, _ = mkdir_exact(
                    fd, part, mode, str(done), owner=owner_of(fd) if inherit else None
                )
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at(dir_fd: int, name: str) -> bytes:
    """Read a regular file relative to ``dir_fd``; a symlink is refused (ELOOP)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    with closing(fd):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def write_new(dir_fd: int, name: str, content: bytes, mode: int, owner: Owner | None) -> None:
    """Create ``name`` (must not exist; never through a link), write, set mode and
    owner, fsync."""
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    with closing(fd):
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # independent of the umask
        inherit_owner(fd, owner)
        os.fsync(fd)


def copy_file(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """Copy with mode, owner and times (when a hard link is impossible)."""
    st = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False)
    write_new(
        dst_dir_fd, dst, read_at(src_dir_fd, src), stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    )
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir_fd, follow_symlinks=False)


def unlink_quiet(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def stage(dir_fd: int, name: str, content: bytes, mode: int, owner: Owner | None) -> str:
    """Write ``content`` to the temp file for ``name`` (fsynced); returns its name.
    A leftover (or a planted link) at the temp name is removed first, never followed."""
    tmp = tmp_name(name)
    remove_tree(dir_fd, tmp)
    write_new(dir_fd, tmp, content, mode, owner)
    return tmp


def write_atomic(
    dir_fd: int, name: str, content: bytes, mode: int, owner: Owner | None = None
) -> None:
    """Replace ``name`` in ``dir_fd`` atomically: stage, rename, fsync the directory."""
    tmp = stage(dir_fd, name, content, mode, owner)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def scan(dir_fd: int) -> dict[str, os.stat_result]:
    return {
        name: os.stat(name, dir_fd=dir_fd, follow_symlinks=False) for name in os.listdir(dir_fd)
    }


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove ``name`` and everything below it, never following links."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            unlink_quiet(parent_fd, name)
            return
        raise
    with closing(fd):
        for entry, st in scan(fd).items():
            if stat.S_ISDIR(st.st_mode):
                remove_tree(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    os.rmdir(name, dir_fd=parent_fd)


_libc = ctypes.CDLL(None, use_errno=True)
_renameat2_c = getattr(_libc, "renameat2", None)  # glibc >= 2.28
if _renameat2_c is not None:
    _renameat2_c.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
    _renameat2_c.restype = ctypes.c_int


def rename_noreplace(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """rename(2) that fails with FileExistsError when ``dst`` exists (renameat2
    RENAME_NOREPLACE; a checked plain rename where the kernel or libc lacks it)."""
    if _renameat2_c is not None:
        rc = _renameat2_c(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), 1)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


# ------------------------------------------------------------------ public helpers


def _split(rel: PurePosixPath | str) -> tuple[PurePosixPath, str]:
    path = PurePosixPath(rel)
    if not path.parts or path.is_absolute() or any(p in ("", ".", "..") for p in path.parts):
        raise WriterError(f"{str(rel)!r} must be a plain path below the host root")
    return path.parent, path.name


def ensure_dir(host_root: Path, rel: PurePosixPath | str, mode: int = DEFAULT_DIR_MODE) -> None:
    """Make ``rel`` a directory under ``host_root``: missing parents are created 0755,
    ``rel`` itself gets exactly ``mode`` (also when it exists). Links are refused."""
    parent, name = _split(rel)
    with closing(open_root(host_root)) as root_fd:
        pfd = walk(root_fd, parent, create=True)
        assert pfd is not None
        with closing(pfd):
            os.close(private_dir(pfd, name, mode, str(rel)))


def write_file(
    host_root: Path,
    rel: PurePosixPath | str,
    data: bytes,
    mode: int,
    *,
    dir_mode: int = DEFAULT_DIR_MODE,
) -> bool:
    """Atomically make ``<host_root>/<rel>`` hold ``data`` with exactly ``mode``.
    Missing parent directories are created with ``dir_mode``. Returns False (and
    writes nothing) when the file already holds ``data`` with ``mode``. Raises
    WriterError when a link or a non-file is in the way."""
    parent, name = _split(rel)
    with closing(open_root(host_root)) as root_fd:
        pfd = walk(root_fd, parent, create=True, mode=dir_mode)
        assert pfd is not None
        with closing(pfd):
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if not stat.S_ISREG(st.st_mode):
                    raise _file_refusal(str(rel))
                if stat.S_IMODE(st.st_mode) == mode and read_at(pfd, name) == data:
                    return False
            write_atomic(pfd, name, data, mode)
            return True


def read_file(host_root: Path, rel: PurePosixPath | str) -> bytes | None:
    """The bytes of ``<host_root>/<rel>``; None when it (or a parent) is absent.
    Raises WriterError when a link or a non-file is in the way."""
    parent, name = _split(rel)
    with closing(open_root(host_root)) as root_fd:
        pfd = walk(root_fd, parent)
        if pfd is None:
            return None
        with closing(pfd):
            try:
                return read_at(pfd, name)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EINVAL):
                    raise _file_refusal(str(rel)) from None
                raise


def remove_file(host_root: Path, rel: PurePosixPath | str) -> bool:
    """Remove ``<host_root>/<rel>`` (a file or a link, never what a link points at).
    Returns False when it was not there."""
    parent, name = _split(rel)
    with closing(open_root(host_root)) as root_fd:
        pfd = walk(root_fd, parent)
        if pfd is None:
            return False
        with closing(pfd):
            try:
                os.unlink(name, dir_fd=pfd)
            except FileNotFoundError:
                return False
            unlink_quiet(pfd, tmp_name(name))
            os.fsync(pfd)
            return True
