"""Reading one on-disk node of a layer tree (overlay form) into an :class:`Entry`.

The overlay form: a deletion is a 0/0 character device (a whiteout), a
directory that hides older layers carries ``trusted.overlay.opaque=y``. All
other ``trusted.overlay.*`` attributes are kernel bookkeeping and are never
recorded; ``redirect`` and ``metacopy`` mean U alone is not a complete diff.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from snapws.ids import ContentHash
from snapws.model import Entry, Kind

OVERLAY_NS = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"
#: Attributes whose presence means the upperdir is not a self-contained diff.
FORBIDDEN_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")

_KIND_BY_FMT = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFCHR: Kind.CHARDEV,
    stat.S_IFBLK: Kind.BLOCKDEV,
    stat.S_IFSOCK: Kind.SOCKET,
}


def is_whiteout(st: os.stat_result) -> bool:
    """A 0/0 character device: overlay's mark for a deleted path."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def kind_of(st: os.stat_result) -> Kind:
    if is_whiteout(st):
        return Kind.WHITEOUT
    return _KIND_BY_FMT[stat.S_IFMT(st.st_mode)]


def list_xattrs(path: bytes) -> dict[str, bytes]:
    """Every extended attribute of ``path`` (not following symlinks),
    overlay bookkeeping included. Filesystems without xattrs give {}."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return out


def user_xattrs(all_xattrs: dict[str, bytes]) -> dict[str, bytes]:
    """The attributes a manifest records: everything but overlay bookkeeping."""
    return {k: v for k, v in all_xattrs.items() if not k.startswith(OVERLAY_NS)}


@dataclass(frozen=True, slots=True)
class Node:
    """A node read from disk, before content hashing."""

    path: bytes
    abspath: bytes
    st: os.stat_result
    kind: Kind
    xattrs: dict[str, bytes]
    opaque: bool
    forbidden: tuple[str, ...]
    target: bytes | None


def read_node(path: bytes, abspath: bytes, st: os.stat_result | None = None) -> Node:
    """lstat + xattrs + symlink target of one node. Raises OSError."""
    if st is None:
        st = os.lstat(abspath)
    kind = kind_of(st)
    if kind is Kind.WHITEOUT:
        return Node(path, abspath, st, kind, {}, False, (), None)
    allx = list_xattrs(abspath)
    opaque = kind is Kind.DIR and allx.get(OPAQUE_XATTR) == b"y"
    forbidden = tuple(k for k in FORBIDDEN_XATTRS if k in allx)
    target = os.readlink(abspath) if kind is Kind.SYMLINK else None
    return Node(path, abspath, st, kind, user_xattrs(allx), opaque, forbidden, target)


def node_entry(node: Node, digest: ContentHash | None) -> Entry:
    """The manifest entry for ``node``; ``digest`` is required for files."""
    st = node.st
    if node.kind is Kind.WHITEOUT:
        return Entry(path=node.path, kind=Kind.WHITEOUT)
    rdev = (
        (os.major(st.st_rdev), os.minor(st.st_rdev))
        if node.kind in (Kind.CHARDEV, Kind.BLOCKDEV)
        else None
    )
    return Entry(
        path=node.path,
        kind=node.kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if node.kind is Kind.FILE else 0,
        hash=digest if node.kind is Kind.FILE else None,
        target=node.target,
        rdev=rdev,
        xattrs=node.xattrs,
        opaque=node.opaque,
    )


def join(root: bytes, rel: bytes) -> bytes:
    """Absolute path of ``rel`` (``b"."`` is the root) under ``root``."""
    return root if rel == b"." else root + b"/" + rel


def child(parent: bytes, name: bytes) -> bytes:
    return name if parent == b"." else parent + b"/" + name


def parent_of(path: bytes) -> bytes:
    i = path.rfind(b"/")
    return b"." if i < 0 else path[:i]


def is_under(path: bytes, top: bytes) -> bool:
    """True if ``path`` is ``top`` or below it."""
    return top == b"." or path == top or path.startswith(top + b"/")
