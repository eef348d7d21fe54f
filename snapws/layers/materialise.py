"""Writing nodes of a layer view into an ordinary directory tree, with every
attribute a manifest records (used by restore; export and the plain backend
will use it too)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import zlib
from collections.abc import Iterable

from snapws.beneath import CREATE_FLAGS, Beneath, set_meta_fd
from snapws.deeppath import anchored, open_fd
from snapws.layers.entries import Node
from snapws.model import Kind

_COPY_CHUNK = 1 << 20
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_SUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)


def copy_file_data(src: bytes, dst: bytes, mode: int) -> None:
    """Copy a regular file's bytes to the new file ``dst`` (not through a
    symlink), keeping holes (sparse files stay sparse)."""
    fout = open_fd(dst, CREATE_FLAGS, mode & 0o777)
    try:
        copy_into(src, fout)
    finally:
        os.close(fout)


def copy_into(src: bytes, fout: int) -> None:
    """Copy the bytes of regular file ``src`` (opened without following a
    symlink) into the open, empty file ``fout``, keeping holes, in the
    kernel where it can (``copy_file_range``, which may share blocks), else
    by reads and writes. Raises OSError."""
    fin = open_fd(src, _READ)
    try:
        size = os.fstat(fin).st_size
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fin, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break  # only a hole remains
                raise
            hole_at = os.lseek(fin, data_at, os.SEEK_HOLE)
            _copy_range(fin, fout, data_at, hole_at)
            pos = hole_at
        os.ftruncate(fout, size)
    finally:
        os.close(fin)


def _copy_range(fin: int, fout: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        try:
            n = os.copy_file_range(fin, fout, end - pos, pos, pos)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, *_NOT_SUPPORTED):
                raise
            n = 0
        if n == 0:  # not supported here (or a file that shrank): plain reads
            while pos < end:
                buf = os.pread(fin, min(_COPY_CHUNK, end - pos), pos)
                if not buf:
                    return
                view = memoryview(buf)
                at = pos
                while view:
                    w = os.pwrite(fout, view, at)
                    view = view[w:]
                    at += w
                pos = at
            return
        pos += n


def apply_meta(node: Node, dest: Beneath, rel: bytes) -> None:
    """Owner, mode, xattrs and mtime of ``node`` onto ``rel`` beneath
    ``dest`` (the node itself: never through a symlink; a node of another
    type than ``node`` there is refused with UnsafePathError)."""
    st = node.st
    mode = None if node.kind is Kind.SYMLINK else stat.S_IMODE(st.st_mode)
    dest.set_meta(
        rel, st.st_uid, st.st_gid, mode, node.xattrs, st.st_mtime_ns, stat.S_IFMT(st.st_mode)
    )


def materialise(
    nodes: Iterable[Node], dest: bytes | Beneath, strip: bytes = b"", whole: bool = False
) -> int:
    """Create every node under ``dest`` (a directory, or one opened as a
    :class:`~snapws.beneath.Beneath`; parents listed before children; a
    node's path, less the prefix ``strip``, is relative to ``dest``). Every
    write is resolved beneath ``dest``: a parent that is a symlink or not a
    directory is refused (UnsafePathError), never followed. Hardlinked files
    among ``nodes`` stay hardlinked. ``whole``: a regular file is written
    under :func:`temp_name` and renamed over what is at its path (a file of
    the working tree), so that it is there whole or not at all. Returns the
    count. Raises OSError, UnsafePathError; whiteouts are ignored."""
    with anchored():  # source paths may be longer than PATH_MAX
        if isinstance(dest, Beneath):
            return _materialise(nodes, dest, strip, whole)
        with contextlib.suppress(FileExistsError):
            os.mkdir(dest, 0o700)  # the root node's metadata comes with it
        with Beneath(dest) as b:
            return _materialise(nodes, b, strip, whole)


def temp_name(path: bytes) -> bytes:
    """Where a whole-file write (:func:`materialise` with ``whole``; the
    plain backend's rewrites) writes ``path`` first: a hidden name in the
    same directory, the same on every run (a rerun finds what a killed one
    left), short whatever the name's length. Two names may share it: a file
    is written and renamed before the next, and a copy found there is
    replaced, never used."""
    parent, _, name = path.rpartition(b"/")
    tmp = b".snapws-tmp-%08x" % zlib.crc32(name)
    return parent + b"/" + tmp if parent else tmp


def _materialise(nodes: Iterable[Node], dest: Beneath, strip: bytes, whole: bool = False) -> int:
    links: dict[tuple[int, int, bytes], bytes] = {}
    dirs: list[tuple[Node, bytes]] = []
    count = 0
    for node in nodes:
        rel = node.path
        if strip and rel.startswith(strip):
            rel = rel[len(strip) :].lstrip(b"/")
        if rel in (b"", b"."):
            rel = b""
        kind = node.kind
        st = node.st
        if kind is Kind.WHITEOUT:
            continue
        if kind is Kind.DIR:
            if not dest.is_dir(rel):
                dest.mkdir(rel, 0o700)
            dirs.append((node, rel))
            count += 1
            continue
        if kind is Kind.FILE:
            # one inode in two layers is no hardlink (dedup shares inodes
            # between layers): only names in one tree are
            key = (st.st_dev, st.st_ino, _tree_of(node))
            if st.st_nlink > 1 and key in links:
                if whole:
                    dest.remove(rel)
                dest.link(links[key], rel)
                count += 1
                continue
            target = temp_name(rel) if whole else rel
            try:
                try:
                    fd = dest.create(target, 0o600)
                except FileExistsError:
                    if not whole:
                        raise
                    dest.remove(target)  # a copy a killed run left
                    fd = dest.create(target, 0o600)
                try:
                    copy_into(node.abspath, fd)
                    set_meta_fd(
                        fd,
                        st.st_uid,
                        st.st_gid,
                        stat.S_IMODE(st.st_mode),
                        node.xattrs,
                        st.st_mtime_ns,
                    )
                finally:
                    os.close(fd)
                if whole:
                    dest.rename(target, rel)
            except BaseException:
                if whole:
                    with contextlib.suppress(OSError):
                        dest.remove(target)
                raise
            links[key] = rel
            count += 1
            continue
        if kind is Kind.SYMLINK:
            assert node.target is not None
            dest.symlink(node.target, rel)
        elif kind is Kind.FIFO:
            dest.mknod(rel, stat.S_IFIFO | 0o600)
        elif kind in (Kind.CHARDEV, Kind.BLOCKDEV, Kind.SOCKET):
            dest.mknod(rel, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        apply_meta(node, dest, rel)
        count += 1
    for node, rel in reversed(dirs):
        apply_meta(node, dest, rel)
    return count


def _tree_of(node: Node) -> bytes:
    """The tree (layer) ``node`` was read from: its abspath less its path."""
    if node.path in (b"", b"."):
        return node.abspath
    return node.abspath[: -len(node.path)].rstrip(b"/")
