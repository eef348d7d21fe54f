"""Durable, atomic publication: write to a temp name, fsync, rename, fsync dir.

Durable batches (:func:`durable_batch`): inside one, the writes of this module
(and of :mod:`snapws.store.nofollow` and :mod:`snapws.store.reffiles`, which
sync through :func:`fsync_fd`) on the batch's filesystem skip their per-file
and per-directory fsync; the batch ends with one ``syncfs`` of that
filesystem, which makes every file, directory entry and rename made inside it
durable at once, as OSTree commits objects before it writes the ref. A commit
then costs a constant number of syncs, whatever number of records it writes.

What a batch does not give: order inside it. After a power loss any subset
of its writes may be on disk, so a batch holds only steps that are safe to
find half done (content-addressed objects, records that nothing refers to
yet, idempotent steps a journal will redo), and the step that makes them
visible (a ref, the journal's removal) goes after the batch or after a
:meth:`DurableBatch.barrier`. A process crash loses nothing: unsynced writes
are in the page cache, which the kernel writes back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path


class DurableBatch:
    """The state of one :func:`durable_batch`: the filesystem it covers and
    the syncs it made (``syncs``: barriers and the final one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dev = os.stat(root).st_dev
        self.syncs = 0
        self.skipped = 0  # fsyncs left to the batch's syncfs

    def covers(self, fd: int) -> bool:
        """Whether ``fd``'s file lives on the batch's filesystem (then the
        batch's syncfs makes it durable)."""
        return os.fstat(fd).st_dev == self.dev

    def barrier(self) -> None:
        """Make everything written so far durable (one ``syncfs``), so that
        a later write never reaches the disk without the earlier ones.
        Raises OSError if syncfs fails (an I/O error: nothing is durable)."""
        syncfs(self.root)
        self.syncs += 1


_ACTIVE: ContextVar[DurableBatch | None] = ContextVar("snapws_durable_batch", default=None)


@contextmanager
def durable_batch(root: Path) -> Iterator[DurableBatch]:
    """Defer the fsyncs of writes on ``root``'s filesystem to one ``syncfs``
    when the block ends (also when it raises: what was written stays as
    durable as it would have been). Writes to other filesystems sync as
    usual. Batches nest; each one's end is a barrier. See the module's
    docstring for what may go in a batch. Raises OSError if the final syncfs
    fails and the block itself did not raise."""
    batch = DurableBatch(root)
    token = _ACTIVE.set(batch)
    ok = False
    try:
        yield batch
        ok = True
    finally:
        _ACTIVE.reset(token)
        if ok:
            batch.barrier()
        else:
            with suppress(OSError):  # the block's own exception is the one to report
                batch.barrier()


def active_batch() -> DurableBatch | None:
    """The innermost durable batch of this thread (or task), if any."""
    return _ACTIVE.get()


def fsync_fd(fd: int) -> None:
    """fsync ``fd``, unless a durable batch covers its filesystem (then the
    batch's final syncfs does it)."""
    batch = _ACTIVE.get()
    if batch is not None and batch.covers(fd):
        batch.skipped += 1
        return
    os.fsync(fd)


_syncfs: Callable[[int], int] | None = None


def syncfs(path: Path) -> None:
    """syncfs(2) the filesystem holding ``path``: write back every dirty
    file, directory and rename on it. Raises OSError (the path cannot be
    opened, or writeback failed)."""
    global _syncfs
    if _syncfs is None:
        import ctypes  # only when a batch ends: start-up stays lean

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int

        def call(fd: int) -> int:
            if fn(fd) != 0:
                return ctypes.get_errno()
            return 0

        _syncfs = call
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        err = _syncfs(fd)
    finally:
        os.close(fd)
    if err:
        raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and creations inside it are durable
    (left to the syncfs of a durable batch that covers it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync_fd(fd)
    finally:
        os.close(fd)


def write_synced(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, then fsync it (:func:`fsync_fd`)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    fsync_fd(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new
    content, never a mix. Creates missing parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        write_synced(fd, data)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. ``path`` is a directory: leave no litter
        raise
    fsync_dir(path.parent)


def drop_torn_copies(path: Path) -> None:
    """Remove the temporary copies :func:`write_atomic` left beside
    ``path`` when killed before its rename. Only for a file written under a
    lock the caller holds (no write of it is on its way). Never raises."""
    prefix = f".{path.name}.tmp-"
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            with suppress(OSError):
                os.unlink(path.parent / name)


def append_durable(path: Path, line: bytes) -> None:
    """Append one line (O_APPEND, fsync). A crash may leave a torn last line,
    which readers must skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        append_line_fd(fd, line)
    finally:
        os.close(fd)


def append_line_fd(fd: int, line: bytes) -> None:
    """Append one line to ``fd`` (opened O_RDWR | O_APPEND), then fsync it;
    a line torn by a crash is ended first, so that it stays unreadable alone."""
    if not line.endswith(b"\n"):
        line += b"\n"
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line
    os.write(fd, line)
    fsync_fd(fd)


def rename_durable(src: Path, dst: Path) -> None:
    """rename(2) then fsync both parent directories."""
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
