"""Writing nodes of a layer view into an ordinary directory tree, with every
attribute a manifest records (used by restore; export and the plain backend
will use it too)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from snapws.layers.entries import Node
from snapws.model import Kind

_COPY_CHUNK = 1 << 20


def copy_file_data(src: bytes, dst: bytes, mode: int) -> None:
    """Copy a regular file's bytes, keeping holes (sparse files stay sparse)."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o777)
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
                os.lseek(fin, data_at, os.SEEK_SET)
                os.lseek(fout, data_at, os.SEEK_SET)
                left = hole_at - data_at
                while left > 0:
                    buf = os.read(fin, min(_COPY_CHUNK, left))
                    if not buf:
                        break
                    os.write(fout, buf)
                    left -= len(buf)
                pos = hole_at
            os.ftruncate(fout, size)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def apply_meta(node: Node, dst: bytes) -> None:
    """Owner, mode, xattrs and mtime of ``node`` onto ``dst`` (not followed)."""
    st = node.st
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if node.kind is not Kind.SYMLINK:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name, value in node.xattrs.items():
        os.setxattr(dst, name, value, follow_symlinks=False)
    os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)


def materialise(nodes: Iterable[Node], dest_root: bytes, strip: bytes = b"") -> int:
    """Create every node under ``dest_root`` (parents listed before children;
    a node's path, less the prefix ``strip``, is relative to ``dest_root``).
    Hardlinked files among ``nodes`` stay hardlinked. Returns the count.
    Raises OSError; whiteouts are ignored."""
    links: dict[tuple[int, int, bytes], bytes] = {}
    dirs: list[tuple[Node, bytes]] = []
    count = 0
    for node in nodes:
        rel = node.path
        if strip and rel.startswith(strip):
            rel = rel[len(strip) :].lstrip(b"/")
        dst = dest_root if rel in (b"", b".") else dest_root + b"/" + rel
        kind = node.kind
        st = node.st
        if kind is Kind.WHITEOUT:
            continue
        if kind is Kind.DIR:
            if not os.path.isdir(dst):
                os.mkdir(dst, 0o700)
            dirs.append((node, dst))
            count += 1
            continue
        if kind is Kind.FILE:
            # one inode in two layers is no hardlink (dedup shares inodes
            # between layers): only names in one tree are
            key = (st.st_dev, st.st_ino, _tree_of(node))
            if st.st_nlink > 1 and key in links:
                os.link(links[key], dst)
                count += 1
                continue
            copy_file_data(node.abspath, dst, 0o600)
            links[key] = dst
        elif kind is Kind.SYMLINK:
            assert node.target is not None
            os.symlink(node.target, dst)
        elif kind is Kind.FIFO:
            os.mkfifo(dst, 0o600)
        elif kind in (Kind.CHARDEV, Kind.BLOCKDEV, Kind.SOCKET):
            os.mknod(dst, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        apply_meta(node, dst)
        count += 1
    for node, dst in reversed(dirs):
        apply_meta(node, dst)
    return count


def _tree_of(node: Node) -> bytes:
    """The tree (layer) ``node`` was read from: its abspath less its path."""
    if node.path in (b"", b"."):
        return node.abspath
    return node.abspath[: -len(node.path)].rstrip(b"/")
