"""Store files (refs, reflogs) opened beneath the store, never through a symbolic link.

A path below a store directory is reached one component at a time, each
directory opened with ``openat(parent, name, O_NOFOLLOW | O_DIRECTORY)``
relative to the one before (:func:`snapws.beneath.open_subdir`, the step
:class:`snapws.beneath.Beneath` walks with too), and the file itself opened
relative to its directory with ``O_NOFOLLOW``. A symbolic link anywhere on the way, or a file
that is not what it should be, is an error naming the relative path; it is
never followed, so nothing outside the directory is read or written. Callers
turn these errors into :class:`snapws.errors.StoreCorruptError`.

The top directory itself (the store's root) is trusted: it was named by the
user. Unlike :mod:`snapws.beneath` (writes inside workspaces and trees, which
refuses anything unexpected with exit 12), this tells the store's readers
what it found (missing, a file where a directory should be, a link), so that
a missing ref is "no such ref" and a link is damage to report. Imports
only :mod:`snapws.beneath` and :mod:`snapws.store.atomic` from the package.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from snapws.beneath import EntryNotADirectoryError, open_subdir
from snapws.store.atomic import fsync_fd, write_synced

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeEntryError(OSError):
    """An entry on the way to a store file is a symbolic link, or the file is
    not a regular file. ``path`` is relative to the top directory; ``what``
    says what was found ("a symbolic link", "a FIFO", ...)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(errno.ELOOP, f"{path} is {what}")
        self.path = path
        self.what = what


def describe_mode(mode: int) -> str:
    """What a file of mode ``mode`` is, for messages ("a symbolic link")."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device node"


def _open_dir(dir_fd: int, name: str, rel: str, create: bool) -> int:
    try:
        return open_subdir(dir_fd, name, os.O_RDONLY, create=create, mode=0o755, made=fsync_fd)
    except EntryNotADirectoryError as e:
        if e.is_symlink:
            raise UnsafeEntryError(rel, "a symbolic link") from None
        raise NotADirectoryError(errno.ENOTDIR, f"{rel} is {describe_mode(e.mode)}") from None


@contextmanager
def open_dirs(top: Path, parts: Sequence[str], create: bool = False) -> Iterator[list[int]]:
    """Yield descriptors of ``top`` and of each directory ``top/parts[0]/.../parts[i]``
    (``len(parts) + 1`` of them, ``top`` first), each opened relative to the one
    before without following links; all are closed on exit.

    ``parts`` must be plain names (no ``/``, ``.``, ``..``). With ``create``,
    missing directories are made (mode 0755, their parent fsynced). Raises
    FileNotFoundError (a directory is missing), NotADirectoryError (one is a
    file), UnsafeEntryError (one is a symbolic link)."""
    for part in parts:
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"not a plain name: {part!r}")
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for i, part in enumerate(parts):
            fds.append(_open_dir(fds[-1], part, "/".join(parts[: i + 1]), create))
        yield fds
    finally:
        for fd in reversed(fds):
            os.close(fd)


def entry_mode(dir_fd: int, name: str) -> int | None:
    """The mode of entry ``name`` of ``dir_fd`` (a link is not followed); None if absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def open_regular(
    dir_fd: int, name: str, rel: str, flags: int = _READ_FLAGS, mode: int = 0o644
) -> int:
    """A descriptor of the regular file ``name`` in ``dir_fd`` (``O_NOFOLLOW`` is
    always added to ``flags``); the caller closes it. ``rel`` names it in errors.
    Raises FileNotFoundError, UnsafeEntryError (a link, a directory, a FIFO...)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeEntryError(rel, "a symbolic link") from None
        if e.errno == errno.EISDIR:
            raise UnsafeEntryError(rel, "a directory") from None
        raise
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise UnsafeEntryError(rel, describe_mode(st_mode))
    return fd


def read_regular(dir_fd: int, name: str, rel: str, limit: int | None = None) -> bytes:
    """The bytes (the first ``limit`` of them) of the regular file ``name`` in
    ``dir_fd``, opened without following a link. Raises as :func:`open_regular`."""
    fd = open_regular(dir_fd, name, rel)
    try:
        if limit is not None:
            return os.read(fd, limit)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def replace_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace entry ``name`` of ``dir_fd`` by a regular file holding ``data``,
    atomically and durably: a temp file beside it (never through a link),
    fsync, rename, fsync the directory. A directory in the way raises
    IsADirectoryError (or another OSError); no temp file is left behind."""
    tmp = f".{name}.tmp-{os.getpid()}"
    with suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # a crash's leftover (a link there is not followed)
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dir_fd,
    )
    try:
        write_synced(fd, data)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    fsync_fd(dir_fd)
