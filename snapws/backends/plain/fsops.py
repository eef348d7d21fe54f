"""File-level operations the plain backend shares between commit (working
tree -> staging tree) and checkout (layer tree -> working tree): copying
data, creating nodes, setting metadata as far as this user may, and the
overlay marks (whiteouts, opaque directories) of a layer tree."""

from __future__ import annotations

import errno
import os
import stat

import xxhash

from snapws.backends.plain.owners import Owners
from snapws.beneath import CREATE_FLAGS, Beneath, NodeRef
from snapws.deeppath import open_fd, reach
from snapws.errors import UnsupportedError
from snapws.ids import ContentHash
from snapws.layers.entries import Node
from snapws.layers.materialise import copy_into
from snapws.model import Kind

CHUNK = 1 << 20


def is_root() -> bool:
    """True when this process may chown and set trusted.* attributes."""
    return os.geteuid() == 0


_NOT_SUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)


def copy_with_hash(src: bytes, dst: bytes) -> ContentHash:
    """Copy regular file ``src`` to the new file ``dst`` (mode 0600; runs of
    zeros become holes) and return the XXH3-128 of the bytes copied, read
    once. Raises OSError (FileExistsError if ``dst`` exists)."""
    fout = open_fd(dst, CREATE_FLAGS, 0o600)
    try:
        return copy_with_hash_into(src, fout)
    finally:
        os.close(fout)


def copy_with_hash_into(src: bytes, fout: int) -> ContentHash:
    """:func:`copy_with_hash` into the open, empty file ``fout``."""
    h = xxhash.xxh3_128()
    fin = open_fd(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = 0
        holes = False
        while True:
            buf = os.read(fin, CHUNK)
            if not buf:
                break
            h.update(buf)
            size += len(buf)
            if len(buf) == CHUNK and buf.count(0) == CHUNK:
                os.lseek(fout, CHUNK, os.SEEK_CUR)
                holes = True
                continue
            view = memoryview(buf)
            while view:
                view = view[os.write(fout, view) :]
        if holes:
            os.ftruncate(fout, size)
    finally:
        os.close(fin)
    return ContentHash(h.hexdigest())


def _split(path: bytes) -> tuple[bytes, bytes]:
    parent, _, name = path.rstrip(b"/").rpartition(b"/")
    return parent or b"/", name


def create_node(node: Node, dst: bytes, hashed: bool = False) -> ContentHash | None:
    """:func:`create_node_at` for the path ``dst`` (its parent trusted: a
    staging tree of the store)."""
    parent, name = _split(dst)
    with Beneath(parent) as dest:
        return create_node_at(dest, name, node, hashed)


def create_node_at(
    dest: Beneath, rel: bytes, node: Node, hashed: bool = False
) -> ContentHash | None:
    """Create ``rel`` beneath ``dest`` as a copy of ``node`` (not a
    directory), without its metadata (see :func:`apply_meta_at`); a parent
    that is a symlink is refused (UnsafePathError). ``hashed``: a regular
    file's content hash is computed while copying and returned. Raises
    OSError."""
    kind = node.kind
    st = node.st
    if kind is Kind.FILE:
        fd = dest.create(rel, 0o600)
        try:
            if hashed:
                return copy_with_hash_into(node.abspath, fd)
            copy_into(node.abspath, fd)
        finally:
            os.close(fd)
    elif kind is Kind.SYMLINK:
        assert node.target is not None
        dest.symlink(node.target, rel)
    elif kind is Kind.FIFO:
        dest.mknod(rel, stat.S_IFIFO | 0o600)
    elif kind in (Kind.CHARDEV, Kind.BLOCKDEV, Kind.SOCKET):
        dest.mknod(rel, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
    else:
        raise ValueError(f"cannot create a {kind.name.lower()} node")
    return None


def apply_meta(node: Node, dst: bytes, as_root: bool, extra_xattrs: bool = False) -> None:
    """:func:`apply_meta_at` for the path ``dst`` (its parent trusted: a
    staging tree of the store)."""
    parent, name = _split(dst)
    with Beneath(parent) as dest:
        apply_meta_at(dest, name, node, as_root, extra_xattrs)


def apply_meta_at(
    dest: Beneath, rel: bytes, node: Node, as_root: bool, extra_xattrs: bool = False
) -> None:
    """Give ``rel`` beneath ``dest`` (the node itself, never followed; one
    of another type than ``node`` is refused with UnsafePathError) the owner
    (as root; otherwise the one this user can give it,
    :meth:`~snapws.backends.plain.owners.Owners.settable`), mode, extended
    attributes and mtime of ``node``. ``extra_xattrs``: also remove
    attributes ``rel`` has and ``node`` lacks (an existing node kept).
    Attributes this user cannot set are skipped (the next status shows the
    difference), and so is an owner she cannot change (a node of another
    user kept); a filesystem without xattrs skips them all. Raises OSError."""
    st = node.st
    with dest.node(rel, stat.S_IFMT(st.st_mode)) as ref:
        cur = ref.st
        owner = (
            (st.st_uid, st.st_gid)
            if as_root
            else Owners.of_process().settable(st.st_uid, st.st_gid)
        )
        if (cur.st_uid, cur.st_gid) != owner:
            try:
                ref.chown(*owner)
            except PermissionError:
                if as_root:
                    raise
        if node.kind is not Kind.SYMLINK and stat.S_IMODE(cur.st_mode) != stat.S_IMODE(st.st_mode):
            ref.chmod(stat.S_IMODE(st.st_mode))
        set_xattrs(ref, node.xattrs, as_root, extra_xattrs)
        ref.utime(st.st_mtime_ns)


def set_xattrs(ref: NodeRef, xattrs: dict[str, bytes], as_root: bool, remove_others: bool) -> None:
    """Set ``xattrs`` on the pinned node ``ref`` (see :func:`apply_meta_at`)."""
    from snapws.layers.entries import is_overlay_xattr

    if remove_others:
        try:
            names = ref.listxattr()
        except OSError as e:
            if e.errno in _NOT_SUPPORTED:
                return
            raise
        for name in names:
            if name not in xattrs and not is_overlay_xattr(name):
                try:
                    ref.removexattr(name)
                except OSError as e:
                    if not _skippable(e, name, as_root):
                        raise
    for name, value in xattrs.items():
        try:
            ref.setxattr(name, value)
        except OSError as e:
            if e.errno in _NOT_SUPPORTED:
                return
            if not _skippable(e, name, as_root):
                raise


def _skippable(e: OSError, name: str, as_root: bool) -> bool:
    if e.errno in _NOT_SUPPORTED or e.errno == errno.ENODATA:
        return True
    # not root: trusted.* and security.* are not ours to set; user.* cannot
    # go on symlinks and special files (EPERM)
    return e.errno in (errno.EPERM, errno.EACCES) and (not as_root or not name.startswith("user."))


def make_whiteout(path: bytes) -> None:
    """Mark a deletion the way overlayfs does: a 0/0 character device.
    Raises UnsupportedError where the store's filesystem refuses it (it is
    itself an overlay, or the kernel is older than 5.8 and this is not root)."""
    try:
        with reach(path) as short:
            os.mknod(short, stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError as e:
        raise UnsupportedError(
            f"cannot record a deletion in the store: creating a whiteout (a 0/0 character "
            f"device) at {os.fsdecode(path)} was refused ({e.strerror})",
            hint="keep the store on a real filesystem (ext4, xfs, btrfs, tmpfs; not an "
            "overlay) with Linux 5.8 or later, or run as root",
        ) from None


def mark_opaque(path: bytes, xattr: str) -> None:
    """Mark directory ``path`` opaque with the store's attribute ``xattr``.
    Raises UnsupportedError where the store's filesystem refuses it."""
    try:
        with reach(path) as short:
            os.setxattr(short, xattr, b"y", follow_symlinks=False)
    except OSError as e:
        raise UnsupportedError(
            f"cannot mark a replaced directory in the store: setting {xattr} on "
            f"{os.fsdecode(path)} failed ({e.strerror})",
            hint="keep the store on a filesystem with extended attributes (ext4, xfs, btrfs, "
            "tmpfs), as the user who made it",
        ) from None
