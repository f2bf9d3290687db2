"""No-follow, dir-fd-relative file helpers for what ``apply`` writes beside the writer.

apply's own state and the OS trust store files are written through these, so a
symbolic link planted anywhere below the host root (a directory, the file, its temp
name) is refused, never followed: nothing can be redirected outside the host root.
Every path is walked one component at a time with ``O_NOFOLLOW | O_DIRECTORY``, every
operation is relative to its parent's directory fd, a file is replaced atomically
(temp file ``.<name>.dtrtrust-new`` created with ``O_EXCL | O_NOFOLLOW``, fsync, rename,
fsync of the directory) and gets exactly its mode whatever the umask. The host root
itself is opened as given and never created.

The signatures are those of the public helpers of the writer's file layer
(``write_file``, ``read_file``, ``remove_file``), so callers can move to it unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from dtrtrust.node.writer import WriterError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_SUFFIX = ".dtrtrust-new"


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _link_refusal(rel: str) -> WriterError:
    return WriterError(
        f"{rel} is a symbolic link or not what dtrtrust expects there; dtrtrust never "
        "follows links under the host root: remove it"
    )


def _split(rel: PurePosixPath | str) -> tuple[tuple[str, ...], str]:
    path = PurePosixPath(rel)
    parts = path.parts
    if not parts or path.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{rel!r} must be a plain relative path")
    return parts[:-1], parts[-1]


def _walk(root_fd: int, parts: tuple[str, ...], *, create: bool, mode: int) -> int | None:
    """The fd of directory ``parts`` below ``root_fd`` (None when absent and not
    ``create``); created with exactly ``mode`` when missing."""
    fd = os.dup(root_fd)
    done: list[str] = []
    for part in parts:
        done.append(part)
        try:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                os.close(fd)
                return None
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=fd)
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _link_refusal("/".join(done)) from None
                raise
            os.fchmod(nfd, mode)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _link_refusal("/".join(done)) from None
            raise
        os.close(fd)
        fd = nfd
    return fd


def _read_at(dir_fd: int, name: str, rel: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_refusal(rel) from None
        raise
    with _closing(fd):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _link_refusal(rel)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)


def read_file(host_root: Path, rel: PurePosixPath | str) -> bytes | None:
    """The bytes of ``<host_root>/<rel>``; None when it (or a parent) is absent.
    Raises WriterError when a link or a non-file is in the way."""
    parents, name = _split(rel)
    with _closing(os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as root_fd:
        pfd = _walk(root_fd, parents, create=False, mode=0)
        if pfd is None:
            return None
        with _closing(pfd):
            return _read_at(pfd, name, str(rel))


def write_file(
    host_root: Path,
    rel: PurePosixPath | str,
    data: bytes,
    mode: int,
    *,
    dir_mode: int = 0o755,
) -> bool:
    """Atomically make ``<host_root>/<rel>`` hold ``data`` with exactly ``mode``;
    missing parent directories are created with ``dir_mode``. False (nothing written)
    when it already does. Raises WriterError when a link or a non-file is in the way."""
    parents, name = _split(rel)
    with _closing(os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as root_fd:
        pfd = _walk(root_fd, parents, create=True, mode=dir_mode)
        assert pfd is not None
        with _closing(pfd):
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if not stat.S_ISREG(st.st_mode):
                    raise _link_refusal(str(rel))
                if stat.S_IMODE(st.st_mode) == mode and _read_at(pfd, name, str(rel)) == data:
                    return False
            tmp = f".{name}{_TMP_SUFFIX}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=pfd)  # a leftover (or a planted link): never followed
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=pfd,
            )
            try:
                with _closing(fd):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=pfd)
                raise
            os.fsync(pfd)
            return True


def remove_file(host_root: Path, rel: PurePosixPath | str) -> bool:
    """Remove ``<host_root>/<rel>`` (a file or a link, never what a link points at).
    False when it was not there."""
    parents, name = _split(rel)
    with _closing(os.open(host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as root_fd:
        pfd = _walk(root_fd, parents, create=False, mode=0)
        if pfd is None:
            return False
        with _closing(pfd):
            try:
                os.unlink(name, dir_fd=pfd)
            except FileNotFoundError:
                return False
            os.fsync(pfd)
            return True
