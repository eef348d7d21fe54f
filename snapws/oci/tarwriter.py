"""A stored layer as an OCI layer tar (see :mod:`snapws.oci.tarextractor`
for the way back).

Writing follows the layer's manifest, in its (sorted) order: a deletion is an
empty ``DIR/.wh.NAME``; an opaque directory is the directory followed by
``DIR/.wh..wh..opq``; hardlinks are the groups the manifest records (``hl``;
files deduplicated across layers share inodes but are not hardlinks of the
layer); owners are numeric with empty names; see :mod:`snapws.oci.tarformat`
for the headers. The same layer gives the same bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from itertools import accumulate
from pathlib import Path

from snapws.deeppath import anchored, open_fd
from snapws.errors import StoreCorruptError, UnsupportedError
from snapws.layers.entries import parent_of
from snapws.model import ROOT, Entry, Kind, display_path
from snapws.oci import tarformat as tf

#: OCI whiteouts: ``DIR/.wh.NAME`` deletes NAME of the layers below, and
#: ``DIR/.wh..wh..opq`` hides all of DIR's lower content
WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
CHUNK = 1 << 20

_TYPE_OF_KIND = {
    Kind.DIR: tf.DIRECTORY,
    Kind.SYMLINK: tf.SYMLINK,
    Kind.FIFO: tf.FIFO,
    Kind.CHARDEV: tf.CHARDEV,
    Kind.BLOCKDEV: tf.BLOCKDEV,
}


# ---- writing ------------------------------------------------------------------------


class ReadAhead:
    """Asks the kernel for the next files of a tar while the current one is
    read and compressed: a thread opens each file ahead (``O_NOFOLLOW``)
    and advises ``POSIX_FADV_WILLNEED`` on its first :data:`PER_FILE`
    bytes, at most :data:`FILES` files and :data:`BYTES` bytes ahead of
    :meth:`reached`. On a cold page cache the inode lookups and reads of
    many small files then overlap instead of each waiting for the disk.
    A file whose first page is cached already (``RWF_NOWAIT`` read) gets
    no advice, and after :data:`WARM` such files in a row the tree is taken
    for warm and the thread ends (it would only cost an open per file).
    Advice only: its errors are ignored."""

    FILES = 512
    BYTES = 64 << 20
    PER_FILE = 8 << 20
    WARM = 256

    def __init__(self, files: list[tuple[bytes, int]]) -> None:
        self._files = files
        self._ends = list(accumulate(min(size, self.PER_FILE) for _p, size in files))
        self._at = 0  # the file the writer reads now
        self._stop = False
        self.advised = 0  # files advised (for tests)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tar-readahead", daemon=True)
        self._thread.start()

    def reached(self, index: int) -> None:
        """The writer now reads file ``index`` (of the list given)."""
        with self._cond:
            self._at = index
            self._cond.notify()

    def _far(self, i: int) -> bool:
        at = self._at
        before = self._ends[at - 1] if at else 0
        return i - at > self.FILES or (i > at and self._ends[i] - before > self.BYTES)

    def _run(self) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        cached = 0  # files in a row found in the page cache
        probe = [bytearray(1)]
        for i, (path, size) in enumerate(self._files):
            with self._cond:
                while not self._stop and self._far(i):
                    self._cond.wait()
                if self._stop:
                    return
            try:
                fd = open_fd(path, flags)
            except OSError:
                continue
            try:
                try:
                    os.preadv(fd, probe, 0, os.RWF_NOWAIT)
                    cached += 1
                    if cached >= self.WARM:
                        return
                    continue
                except OSError:
                    cached = 0  # not cached (EAGAIN), or no way to tell
                os.posix_fadvise(fd, 0, min(size, self.PER_FILE), os.POSIX_FADV_WILLNEED)
                self.advised += 1
            except OSError:
                pass
            finally:
                os.close(fd)

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()


def tar_name(path: bytes, kind: Kind) -> bytes:
    """The name of a manifest path in a layer tar (``./`` for the root,
    a trailing ``/`` for directories)."""
    if path == ROOT:
        return b"./"
    return path + b"/" if kind is Kind.DIR else path


def _whiteout_name(path: bytes) -> bytes:
    parent = parent_of(path)
    base = path.rsplit(b"/", 1)[-1]
    return WHITEOUT_PREFIX + base if parent == ROOT else parent + b"/" + WHITEOUT_PREFIX + base


def write_layer_tar(
    tree: Path,
    entries: Iterable[Entry],
    emit: Callable[[bytes], None],
    progress: Callable[[int], None] | None = None,
    read_ahead: bool = True,
) -> int:
    """Write the layer tar of ``entries`` (a manifest), reading file content
    from ``tree`` (the layer's tree), to ``emit``. ``progress`` gets the
    file bytes read so far; ``read_ahead``: a :class:`ReadAhead` asks for
    the next files meanwhile. Returns the tar's size.

    Raises UnsupportedError (a socket: tar cannot hold one),
    StoreCorruptError (a file whose size differs from its manifest), OSError."""
    root = os.fsencode(tree)
    ordered = sorted(entries, key=lambda e: e.path)
    data_files = [
        (root + b"/" + e.path, e.size)
        for e in ordered
        if e.kind is Kind.FILE and e.link is None and e.size and e.path != ROOT
    ]
    with anchored():  # paths may be longer than PATH_MAX
        ahead = ReadAhead(data_files) if read_ahead and len(data_files) > 1 else None
        try:
            return _write_tar(tree, root, ordered, emit, progress, ahead)
        finally:
            if ahead is not None:
                ahead.close()


def _write_tar(
    tree: Path,
    root: bytes,
    ordered: list[Entry],
    emit: Callable[[bytes], None],
    progress: Callable[[int], None] | None,
    ahead: ReadAhead | None,
) -> int:
    buf = bytearray()
    total = 0
    done = 0
    index = 0  # of the next file with data (ReadAhead's list)
    files: set[bytes] = set()  # regular files written so far (hardlink targets)

    def flush() -> None:
        nonlocal total
        if buf:
            emit(bytes(buf))
            total += len(buf)
            buf.clear()

    for e in ordered:
        if e.kind is Kind.WHITEOUT:
            buf += tf.encode_header(tf.Header(_whiteout_name(e.path), tf.REGULAR, mode=0o644))
            continue
        if e.kind is Kind.SOCKET:
            raise UnsupportedError(
                f"{display_path(e.path)} is a socket: OCI layer tars cannot hold sockets",
                hint="delete the socket and commit, then export again",
            )
        h = tf.Header(
            name=tar_name(e.path, e.kind),
            type=tf.REGULAR,
            mode=e.mode,
            uid=e.uid,
            gid=e.gid,
            mtime_ns=e.mtime_ns,
            xattrs=dict(e.xattrs),
        )
        if e.kind is Kind.FILE and e.link is not None:
            if e.link not in files:
                raise StoreCorruptError(
                    f"{display_path(e.path)} in the manifest of {tree} is a hardlink of "
                    f"{display_path(e.link)}, which is no earlier file of the layer"
                )
            h.type, h.linkname = tf.HARDLINK, e.link
        elif e.kind is Kind.FILE:
            h.size = e.size
            files.add(e.path)
        else:
            h.type = _TYPE_OF_KIND[e.kind]
            if e.kind is Kind.SYMLINK:
                h.linkname = e.target or b""
            if e.rdev is not None:
                h.devmajor, h.devminor = e.rdev
        buf += tf.encode_header(h)
        if e.kind is Kind.DIR and e.opaque:
            marker = OPAQUE_MARKER if e.path == ROOT else e.path + b"/" + OPAQUE_MARKER
            buf += tf.encode_header(tf.Header(marker, tf.REGULAR, mode=0o644))
        if h.type == tf.REGULAR and h.size:
            flush()
            if ahead is not None:
                ahead.reached(index)
            index += 1
            src = root if e.path == ROOT else root + b"/" + e.path
            left = e.size
            fd = open_fd(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                while left:
                    data = os.read(fd, min(CHUNK, left))
                    if not data:
                        break
                    left -= len(data)
                    emit(data)
                    done += len(data)
                    if progress is not None:
                        progress(done)
                if left or os.read(fd, 1):
                    raise StoreCorruptError(
                        f"{display_path(e.path)} in layer tree {tree} does not have the "
                        f"{e.size} bytes its manifest records",
                        hint="`snapws verify` names every damaged file",
                    )
            finally:
                os.close(fd)
            total += e.size
            buf += tf.padding(e.size)
        if len(buf) >= CHUNK:
            flush()
    buf += tf.END_OF_ARCHIVE
    flush()
    return total
