"""Rewriting paths of a plain workspace from a snapshot (checkout, reset,
restore): each path becomes what the snapshot's merged view shows, and
nothing else is touched. Idempotent: running it again after a crash
finishes the job."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Collection, Sequence

from snapws.backends.plain.fsops import apply_meta, create_node, remove_path
from snapws.errors import UnsupportedError
from snapws.layers.entries import Node, join, parent_of
from snapws.layers.view import ChainView
from snapws.model import ROOT, Kind, display_path


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_writable(view: ChainView, paths: Sequence[bytes], as_root: bool) -> None:
    """Refuse, before anything changes, what this user cannot create: device
    nodes when not root. Raises UnsupportedError."""
    if as_root:
        return
    bad = []
    for p in paths:
        loc = view.locate(p)
        if loc is not None and loc.node.kind in (Kind.CHARDEV, Kind.BLOCKDEV):
            bad.append(display_path(p))
    if bad:
        raise UnsupportedError(
            "only root can create device nodes: " + ", ".join(bad[:10]),
            hint="run this command as root",
        )


def rewrite_paths(
    root: bytes,
    view: ChainView,
    paths: Sequence[bytes],
    as_root: bool,
    meta_only: Collection[bytes] = (),
    halfway: Callable[[], None] | None = None,
) -> None:
    """Make each of ``paths`` (relative to the workspace ``root``) what
    ``view`` shows there: absent, a directory (kept if it is one; its
    children are not touched unless listed), or a copy of the node; a path
    in ``meta_only`` (same kind and content) only gets the view's metadata.
    Directories listed get the view's metadata, deepest first; parents of
    changed paths get the view's mtime only (their other metadata may be an
    uncommitted change). ``halfway`` is called once half of the paths are
    done (crash tests). Raises OSError."""
    order = sorted(set(paths))
    meta_only = set(meta_only)
    dirs: dict[bytes, Node] = {}
    unlocked: dict[bytes, int] = {}  # parents made writable: their modes before
    gone: set[bytes] = set()  # removed paths: nothing below them is written
    for n, p in enumerate(order):
        if halfway is not None and n == len(order) // 2 and n:
            halfway()
        loc = view.locate(p)
        if loc is None and gone and _below(p, gone):
            continue
        dst = join(root, p)
        cur = _lstat(dst)
        if loc is None:
            if cur is not None:
                _unlock_parent(root, p, as_root, unlocked)
                remove_path(dst)
            gone.add(p)
            continue
        node = loc.node
        if node.kind is Kind.DIR:
            if cur is None or not stat.S_ISDIR(cur.st_mode):
                _ensure_parents(root, view, p, dirs, as_root, unlocked)
                if cur is not None:
                    remove_path(dst)
                os.mkdir(dst, 0o700)
            dirs[p] = node
            continue
        if p in meta_only and cur is not None and _same_kind(cur, node):
            apply_meta(node, dst, as_root, extra_xattrs=True)
            continue
        _ensure_parents(root, view, p, dirs, as_root, unlocked)
        if cur is not None:
            remove_path(dst)
        create_node(node, dst)
        apply_meta(node, dst, as_root)
    for p, node in sorted(dirs.items(), key=lambda x: (-x[0].count(b"/"), x[0])):
        dst = join(root, p)
        if _lstat(dst) is not None:
            apply_meta(node, dst, as_root, extra_xattrs=True)
            unlocked.pop(p, None)
    for q, mode in unlocked.items():  # read-only parents this user opened
        with contextlib.suppress(FileNotFoundError):
            os.chmod(join(root, q), mode)
    parents = {parent_of(p) for p in order if p != ROOT} - set(dirs)
    for q in sorted(parents, key=lambda x: (-x.count(b"/"), x)):
        loc = view.locate(q)
        dst = join(root, q)
        if loc is not None and loc.node.kind is Kind.DIR and os.path.isdir(dst):
            t = loc.node.st.st_mtime_ns
            os.utime(dst, ns=(t, t), follow_symlinks=False)


def _same_kind(st: os.stat_result, node: Node) -> bool:
    return stat.S_IFMT(st.st_mode) == stat.S_IFMT(node.st.st_mode)


def _below(path: bytes, tops: set[bytes]) -> bool:
    while path != ROOT:
        path = parent_of(path)
        if path in tops:
            return True
    return False


def _ensure_parents(
    root: bytes,
    view: ChainView,
    path: bytes,
    dirs: dict[bytes, Node],
    as_root: bool,
    unlocked: dict[bytes, int],
) -> None:
    """Create missing parents of ``path`` as the view shows them, and make
    the direct parent writable for this user."""
    missing = []
    p = parent_of(path)
    while p != ROOT and not os.path.isdir(join(root, p)):
        missing.append(p)
        p = parent_of(p)
    for q in reversed(missing):
        loc = view.locate(q)
        dst = join(root, q)
        if os.path.lexists(dst):
            _unlock_parent(root, q, as_root, unlocked)
            remove_path(dst)
        _unlock_parent(root, q, as_root, unlocked)
        os.mkdir(dst, 0o700)
        if loc is not None and loc.node.kind is Kind.DIR:
            dirs[q] = loc.node
    _unlock_parent(root, path, as_root, unlocked)


def _unlock_parent(root: bytes, path: bytes, as_root: bool, unlocked: dict[bytes, int]) -> None:
    """Not root: a read-only directory (mode 0555 from a snapshot) must be
    writable to change its children; ``unlocked`` remembers its mode."""
    if as_root:
        return
    q = parent_of(path)
    if q in unlocked:
        return
    st = _lstat(join(root, q))
    if st is not None and stat.S_ISDIR(st.st_mode) and (st.st_mode & 0o300) != 0o300:
        unlocked[q] = stat.S_IMODE(st.st_mode)
        os.chmod(join(root, q), stat.S_IMODE(st.st_mode) | 0o700)
