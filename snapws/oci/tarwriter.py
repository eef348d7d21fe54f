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
from collections.abc import Callable, Iterable
from pathlib import Path

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
) -> int:
    """Write the layer tar of ``entries`` (a manifest), reading file content
    from ``tree`` (the layer's tree), to ``emit``. ``progress`` gets the
    file bytes read so far. Returns the tar's size.

    Raises UnsupportedError (a socket: tar cannot hold one),
    StoreCorruptError (a file whose size differs from its manifest), OSError."""
    root = os.fsencode(tree)
    buf = bytearray()
    total = 0
    done = 0
    files: set[bytes] = set()  # regular files written so far (hardlink targets)

    def flush() -> None:
        nonlocal total
        if buf:
            emit(bytes(buf))
            total += len(buf)
            buf.clear()

    for e in sorted(entries, key=lambda e: e.path):
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
            src = root if e.path == ROOT else root + b"/" + e.path
            left = e.size
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
