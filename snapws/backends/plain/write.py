"""Rewriting paths of a plain workspace from a snapshot (checkout, reset,
restore): each path becomes what the snapshot's merged view shows, and
nothing else is touched. Idempotent: running it again after a crash
finishes the job."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Collection, Sequence

from snapws.backends.plain.fsops import apply_meta_at, create_node_at
from snapws.beneath import Beneath
from snapws.deeppath import anchored
from snapws.errors import StoreFullError, UnsupportedError
from snapws.layers.entries import Node, Tops, parent_of
from snapws.layers.materialise import temp_name
from snapws.layers.view import ChainView
from snapws.model import ROOT, Change, ChangeType, Kind, display_path


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
    keep: Collection[bytes] = (),
) -> None:
    """Make each of ``paths`` (relative to the workspace ``root``) what
    ``view`` shows there: absent, a directory (kept if it is one; its
    children are not touched unless listed), or a copy of the node; a path
    in ``meta_only`` (same kind and content) only gets the view's metadata.
    Directories listed get the view's metadata, deepest first; parents of
    changed paths get the view's mtime only (their other metadata may be an
    uncommitted change). A directory to remove that holds one of ``keep``
    (ignored paths) stays, with only its listed entries removed, as git
    leaves ignored files. ``halfway`` is called once half of the paths are
    done (crash tests). Every write is resolved beneath ``root``, opened
    once (:mod:`snapws.beneath`): a parent that is not a directory is
    replaced as the view says, and one that turns into a symlink meanwhile
    is refused, never followed. Raises OSError, UnsafePathError."""
    with Beneath(root) as dest, anchored():  # (layer paths beyond PATH_MAX share anchors)
        _rewrite(dest, view, paths, as_root, meta_only, halfway, keep)


def _rewrite(
    dest: Beneath,
    view: ChainView,
    paths: Sequence[bytes],
    as_root: bool,
    meta_only: Collection[bytes],
    halfway: Callable[[], None] | None,
    keep: Collection[bytes] = (),
) -> None:
    order = sorted(set(paths))
    holders = {parent_of(k) for k in keep}
    holders |= {a for h in list(holders) for a in _ancestors(h)}
    meta_only = set(meta_only)
    dirs: dict[bytes, Node] = {}
    unlocked: dict[bytes, int] = {}  # parents made writable: their modes before
    gone = Tops()  # removed paths and non-directories: nothing below is written
    for n, p in enumerate(order):
        if halfway is not None and n == len(order) // 2 and n:
            halfway()
        loc = view.locate(p)
        if loc is None and gone.below(p):
            continue
        cur = dest.lstat(p)
        if loc is None:
            if cur is not None and stat.S_ISDIR(cur.st_mode) and p in holders:
                continue  # holds ignored paths: stays
            if cur is not None:
                _unlock_parent(dest, p, as_root, unlocked)
                dest.remove(p, force=True)
            gone.add(p)
            continue
        node = loc.node
        if node.kind is Kind.DIR:
            if cur is None or not stat.S_ISDIR(cur.st_mode):
                _ensure_parents(dest, view, p, dirs, as_root, unlocked)
                if cur is not None:
                    dest.remove(p, force=True)
                dest.mkdir(p, 0o700)
            dirs[p] = node
            continue
        gone.add(p)  # a non-directory: nothing below it is written
        if p in meta_only and cur is not None and _same_kind(cur, node):
            apply_meta_at(dest, p, node, as_root, extra_xattrs=True)
            continue
        _ensure_parents(dest, view, p, dirs, as_root, unlocked)
        if node.kind is Kind.FILE:
            _replace_file(dest, p, cur, node, as_root)
            continue
        if cur is not None:
            dest.remove(p, force=True)
        create_node_at(dest, p, node)
        apply_meta_at(dest, p, node, as_root)
    for p, node in sorted(dirs.items(), key=lambda x: (-x[0].count(b"/"), x[0])):
        if dest.lstat(p) is not None:
            apply_meta_at(dest, p, node, as_root, extra_xattrs=True)
            unlocked.pop(p, None)
    for q, mode in unlocked.items():  # read-only parents this user opened
        with contextlib.suppress(FileNotFoundError), dest.node(q, stat.S_IFDIR) as ref:
            ref.chmod(mode)
    parents = {parent_of(p) for p in order if p != ROOT} - set(dirs)
    for q in sorted(parents, key=lambda x: (-x.count(b"/"), x)):
        loc = view.locate(q)
        if loc is not None and loc.node.kind is Kind.DIR and dest.is_dir(q):
            with dest.node(q, stat.S_IFDIR) as ref:
                ref.utime(loc.node.st.st_mtime_ns)


def _replace_file(
    dest: Beneath, p: bytes, cur: os.stat_result | None, node: Node, as_root: bool
) -> None:
    """Write the file ``node`` at ``p`` whole or not at all: under a name
    of its own beside it, then renamed over what is there (a directory is
    removed first), so a full disk or a kill never leaves a part of it
    under its name; a copy an earlier run left is replaced."""
    tmp = temp_name(p)
    try:
        try:
            create_node_at(dest, tmp, node)
        except FileExistsError:  # left by a killed run
            dest.remove(tmp, force=True)
            create_node_at(dest, tmp, node)
        apply_meta_at(dest, tmp, node, as_root)
        if cur is not None and stat.S_ISDIR(cur.st_mode):
            dest.remove(p, force=True)
        try:
            dest.rename(tmp, p)
        except OSError as e:  # (an immutable file, say): named by the file it replaces
            if e.filename2 is not None:
                e.filename, e.filename2 = e.filename2, None
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            dest.remove(tmp, force=True)
        raise


def _same_kind(st: os.stat_result, node: Node) -> bool:
    return stat.S_IFMT(st.st_mode) == stat.S_IFMT(node.st.st_mode)


def _ancestors(path: bytes) -> list[bytes]:
    out = []
    while b"/" in path:
        path = path[: path.rfind(b"/")]
        out.append(path)
    return out


def _ensure_parents(
    dest: Beneath,
    view: ChainView,
    path: bytes,
    dirs: dict[bytes, Node],
    as_root: bool,
    unlocked: dict[bytes, int],
) -> None:
    """Create missing parents of ``path`` as the view shows them (a parent
    that is a file or a symlink is replaced: never followed), and make the
    direct parent writable for this user."""
    missing = []
    p = parent_of(path)
    while p != ROOT and not dest.is_dir(p):
        missing.append(p)
        p = parent_of(p)
    for q in reversed(missing):
        loc = view.locate(q)
        if dest.lstat(q) is not None:
            _unlock_parent(dest, q, as_root, unlocked)
            dest.remove(q, force=True)
        _unlock_parent(dest, q, as_root, unlocked)
        dest.mkdir(q, 0o700)
        if loc is not None and loc.node.kind is Kind.DIR:
            dirs[q] = loc.node
    _unlock_parent(dest, path, as_root, unlocked)


def _unlock_parent(dest: Beneath, path: bytes, as_root: bool, unlocked: dict[bytes, int]) -> None:
    """Not root: a read-only directory (mode 0555 from a snapshot) must be
    writable to change its children; ``unlocked`` remembers its mode."""
    if as_root:
        return
    q = parent_of(path)
    if q in unlocked:
        return
    st = dest.lstat(q)
    if st is not None and stat.S_ISDIR(st.st_mode) and (st.st_mode & 0o300) != 0o300:
        unlocked[q] = stat.S_IMODE(st.st_mode)
        with dest.node(q, stat.S_IFDIR) as ref:
            ref.chmod(stat.S_IMODE(st.st_mode) | 0o700)


#: Room left free on top of what a rewrite writes (the filesystem's own
#: metadata, directories it makes): 16 MiB, or 5% of a smaller filesystem.
SPACE_MARGIN = 16 << 20


def bytes_written(between: list[Change], uncommitted: list[Change], same: Collection[bytes]) -> int:
    """About how many bytes a rewrite of these paths writes: the target's
    files (those of ``between``, else HEAD's of ``uncommitted``, which a
    discard brings back), but those in ``same`` (metadata only)."""
    size = {c.path: c.old.size if c.old is not None else 0 for c in uncommitted}
    size.update({c.path: c.new.size if c.new is not None else 0 for c in between})
    return sum(n for p, n in size.items() if p not in same)


def check_space(where: bytes | str, need: int, action: str) -> None:
    """Refuse, before anything changes, a rewrite that cannot fit: ``need``
    bytes (and :data:`SPACE_MARGIN`) on the filesystem of ``where``.
    Raises StoreFullError (exit 17)."""
    try:
        vfs = os.statvfs(where)
    except OSError:
        return  # (the rewrite reports what fails)
    free = (vfs.f_bfree if os.geteuid() == 0 else vfs.f_bavail) * vfs.f_frsize
    margin = min(SPACE_MARGIN, vfs.f_blocks * vfs.f_frsize // 20)
    if need + margin > free:
        raise StoreFullError(
            f"not enough space to {action}: it writes {_mib(need)} into the working tree, "
            f"and {_mib(free)} are free on its filesystem ({os.fsdecode(where)})",
            hint="free space there (delete large files you do not need: what a discard would "
            "free is not counted, as it may be written before it is freed), then run the "
            "command again; nothing was changed",
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def meta_only(between: list[Change], uncommitted: list[Change]) -> set[bytes]:
    """Paths whose content is the same in the working tree and the target,
    only metadata differs: rewritten by chmod/chown/xattrs, not copied."""

    def meta(c: Change) -> bool:
        return c.type is ChangeType.MODIFIED and not {"content", "target", "rdev"} & set(c.what)

    a = {c.path: meta(c) for c in between}
    b = {c.path: meta(c) for c in uncommitted}
    return {p for p, m in a.items() if m and p not in b} | {
        p for p, m in b.items() if m and p not in a
    }
