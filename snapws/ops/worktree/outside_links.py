"""``snapws init``: files of the adopted tree that have hardlinks outside
the directory get inodes of their own before the base layer is hashed.

A file moved into the store keeps its inode, so a name of it outside the
directory (``cp -al``, a local ``git clone`` hardlinking ``.git/objects``)
would go on sharing it with the layer: a write or ``chmod`` there would
change the stored snapshot, and the store's changes would reach the other
name. So a regular file whose link count is larger than its names in the
staged tree is copied (content, mode, owner, xattrs, mtime) and the copy
is renamed over each of its names in the tree; the names outside keep the
original inode, untouched. So too a file another program holds open for
writing (or maps shared and writable) when init starts: its writes go on to
the original, never into the layer.

Crash safety (the staging directory, beside ``tree/``)::

    outside-links.list   NUL-separated: index, path, index, path, ... (written first)
    outside-links/<i>    a hardlink of the original inode of group i
    outside-links/c<i>   the copy being made; t<i>: a link of it being renamed

Until the layer is hashed, :func:`restore_outside_links` puts the original
inodes back over the copies (an init that rolls back leaves the directory
as it was, hardlinks included); after it, :func:`drop_outside_links`
removes the side directory before the staging directory is published.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from snapws.beneath import set_meta_fd
from snapws.crash import crashpoint
from snapws.deeppath import anchored, lstat, open_fd, reach
from snapws.layers.entries import Node, list_xattrs, parent_of
from snapws.layers.materialise import copy_into
from snapws.model import ROOT, Kind
from snapws.store.atomic import write_synced

SIDE = "outside-links"
LIST = "outside-links.list"


def linked_outside(
    nodes: list[Node], written: frozenset[tuple[int, int]] = frozenset()
) -> list[list[Node]]:
    """The regular files of ``nodes`` (one whole tree) that have names
    outside it, or whose (device, inode) is in ``written`` (held open for
    writing by another program): groups of the names of one inode, in path
    order. Pure."""
    groups: dict[tuple[int, int], list[Node]] = {}
    for n in nodes:
        key = (n.st.st_dev, n.st.st_ino)
        if n.kind is Kind.FILE and (n.st.st_nlink > 1 or key in written):
            groups.setdefault(key, []).append(n)
    out = [g for key, g in groups.items() if g[0].st.st_nlink > len(g) or key in written]
    return sorted((sorted(g, key=lambda n: n.path) for g in out), key=lambda g: g[0].path)


def unshare_outside_links(
    tree: Path, nodes: list[Node], written: frozenset[tuple[int, int]] = frozenset()
) -> int:
    """Give each file of ``tree`` (``nodes``: read from it) that has names
    outside it an inode of its own (see the module docstring); so too the
    files whose (device, inode) is in ``written``: a program that holds one
    open for writing would otherwise write into the stored layer (it writes
    to the original, which no layer keeps: that program is left behind
    anyway, see :func:`snapws.ops.worktree.init.left_behind_by`). Returns how
    many inodes were copied (0: nothing changed, ``nodes`` still hold).
    Directory mtimes in the tree are kept. Raises OSError (the caller rolls
    back: :func:`restore_outside_links`)."""
    groups = linked_outside(nodes, written)
    if not groups:
        return 0
    staging = tree.parent
    side = os.fsencode(staging / SIDE)
    listing = b"".join(
        str(i).encode() + b"\0" + n.path + b"\0" for i, g in enumerate(groups) for n in g
    )
    _write_durable(staging / LIST, listing)
    os.mkdir(side, 0o700)
    root = os.fsencode(tree)
    with anchored():  # paths may be longer than PATH_MAX
        for i, group in enumerate(groups):
            first = group[0]
            keep = side + b"/" + str(i).encode()
            with reach(first.abspath) as short:
                os.link(short, keep)  # the original stays reachable until the end
            copy = side + b"/c" + str(i).encode()
            _copy_file(keep, copy, first.st)
            for n in group:
                _rename_link_over(copy, side + b"/t" + str(i).encode(), _abspath(root, n.path))
            os.unlink(copy)
            crashpoint("init:unshared", i + 1)
    return len(groups)


def restore_outside_links(tree: Path) -> None:
    """Undo :func:`unshare_outside_links` (before the layer is hashed):
    every name it copied gets the original inode back. Idempotent; nothing
    to do without the list."""
    staging = tree.parent
    try:
        listing = (staging / LIST).read_bytes()
    except FileNotFoundError:
        return
    side = os.fsencode(staging / SIDE)
    root = os.fsencode(tree)
    fields = listing.split(b"\0")[:-1]
    with anchored():
        for index, path in zip(fields[::2], fields[1::2], strict=True):
            keep = side + b"/" + index
            try:
                original = lstat(keep)
            except FileNotFoundError:
                continue  # killed before the link: the tree still has it
            dst = _abspath(root, path)
            try:
                if lstat(dst).st_ino == original.st_ino:
                    continue
            except FileNotFoundError:
                pass
            _rename_link_over(keep, side + b"/r" + index, dst)
    drop_outside_links(staging)


def drop_outside_links(staging: Path) -> None:
    """Remove the side directory and list of :func:`unshare_outside_links`
    from ``staging`` (before it is published). Idempotent."""
    shutil.rmtree(staging / SIDE, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging / LIST)


def _abspath(root: bytes, rel: bytes) -> bytes:
    return root if rel == ROOT else root + b"/" + rel


def _rename_link_over(src: bytes, tmp: bytes, dst: bytes) -> None:
    """Make ``dst`` (in the tree) a name of ``src``'s inode, atomically
    (a link ``tmp`` renamed over it), keeping the mtime of its directory."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a link a killed run left
    os.link(src, tmp)
    parent = parent_of(dst)
    with reach(parent) as short_parent:
        mtime = os.lstat(short_parent).st_mtime_ns
    with reach(dst) as short:
        os.rename(tmp, short)
    with reach(parent) as short_parent:
        os.utime(short_parent, ns=(mtime, mtime), follow_symlinks=False)


def _copy_file(src: bytes, dst: bytes, st: os.stat_result) -> None:
    """A new file ``dst`` with the content, mode, owner, xattrs and mtime
    of ``src`` (whose lstat was ``st``), written to disk."""
    fd = open_fd(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        copy_into(src, fd)
        mine = os.fstat(fd)
        owner = (st.st_uid, st.st_gid) != (mine.st_uid, mine.st_gid)
        set_meta_fd(
            fd,
            st.st_uid if owner else None,
            st.st_gid if owner else None,
            stat.S_IMODE(st.st_mode),
            list_xattrs(src),
            st.st_mtime_ns,
        )
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_synced(fd, data)
    finally:
        os.close(fd)
