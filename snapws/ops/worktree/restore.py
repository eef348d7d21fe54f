"""``snapws restore``: bring paths back from a snapshot into the working tree,
as git's ``restore`` (its default no-overlay mode) does: what the paths
select becomes as it is in the source snapshot, paths HEAD has and the
source does not are removed, and untracked paths (in neither: new files)
are left alone.

For every backend it writes into the workspace's directory (through the
mount, where there is one: the changes land in the upperdir like any edit),
every write resolved beneath it (:mod:`snapws.beneath`). Only the paths that
differ from the source are touched (a diff of the source against the working
tree), so restoring a large directory, or ``.`` at the root, costs its
changes, not its size.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from snapws.beneath import Beneath
from snapws.errors import BadPathError
from snapws.ids import SnapshotId
from snapws.layers.entries import Node, parent_of
from snapws.layers.materialise import materialise
from snapws.layers.view import ChainView
from snapws.model import ROOT, Change, ChangeType, Kind, display_path
from snapws.ops.worktree.diff import diff
from snapws.pathspec import Pathspec, has_glob
from snapws.session import Session


def restore(session: Session, source: SnapshotId, paths: list[bytes]) -> list[bytes]:
    """Make what ``paths`` (pathspecs relative to the workspace root, globs
    as git's: :mod:`snapws.pathspec`) select in the working tree as it is in
    ``source``: paths that differ are replaced by the source's, paths in
    the source but not in the working tree are created, paths the
    working tree has and the source does not are removed if HEAD has them
    (tracked) and left alone if not (untracked), as git's restore does.
    A pathspec that selects nothing in ``source`` or HEAD is an error
    (git's "did not match any file(s) known to git") and nothing is
    changed. Returns the paths written or removed, sorted. Raises
    BadPathError, UnsafePathError (a path changed into a symlink while
    restoring: refused, never followed)."""
    spec = Pathspec(tuple(paths))
    view = session.chain_view(source)
    head = session.chain_view(session.state.head)
    missing = [p for p in paths if not (_known(view, p) or _known(head, p))]
    if missing:
        where = "(HEAD)" if source == session.state.head else "or in HEAD"
        raise BadPathError(
            f"did not match any path in snapshot {source.short()} {where}: "
            + ", ".join(display_path(p) for p in missing),
            hint="paths are relative to the current directory (shown here from the "
            "workspace root); `snapws show REV --name-only` lists what a snapshot changed",
        )
    changes = diff(session, source, None, spec.roots).changes
    selected = [c for c in changes if c.path != ROOT and spec.matches(c.path)]
    tracked_only = [
        c.path for c in selected if c.type is ChangeType.ADDED and head.locate(c.path) is not None
    ]
    wanted = [c for c in selected if c.type is not ChangeType.ADDED]
    done: list[bytes] = []
    with Beneath(session.path) as root:
        for p in reversed(tracked_only):  # children first: a directory may keep untracked ones
            if _remove_tracked(root, p):
                done.append(p)
        nodes = []
        for c in wanted:
            loc = view.locate(c.path)
            assert loc is not None  # (not ADDED: the source has it)
            if not _both_dirs(c) and not _file_over_file(c):
                root.remove(c.path)
            _ensure_parents(root, view, c.path)
            nodes.append(loc.node)
            done.append(c.path)
        # a file is written beside its path and renamed over it: a full disk
        # or a kill leaves the working tree's file, never a part of the source's
        materialise(_parents_first(nodes), root, whole=True)
    return sorted(done)


def _known(view: ChainView, item: bytes) -> bool:
    """Whether pathspec ``item`` selects something in ``view``'s tree."""
    if item == ROOT or view.locate(item) is not None:
        return True
    if not has_glob(item):
        return False
    spec = Pathspec((item,))
    (top,) = spec.roots
    return any(spec.matches(loc.node.path) for loc in view.walk(top))


def _both_dirs(change: Change) -> bool:
    """A directory in both trees: only its metadata is restored (it may
    hold untracked paths)."""
    return (
        change.old is not None
        and change.new is not None
        and change.old.kind is Kind.DIR
        and change.new.kind is Kind.DIR
    )


def _file_over_file(change: Change) -> bool:
    """A regular file of the source where the working tree has a file (or
    a symlink, a fifo): renamed over it whole, not removed first."""
    return (
        change.old is not None
        and change.old.kind is Kind.FILE
        and change.new is not None
        and change.new.kind is not Kind.DIR
    )


def _remove_tracked(root: Beneath, path: bytes) -> bool:
    """Remove ``path`` (a non-directory, or a directory once empty: one
    holding untracked paths stays). Returns whether it was removed."""
    if not root.is_dir(path):
        return root.remove(path)
    try:
        with root.parent(path) as (fd, name):
            os.rmdir(name, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            return False
        raise
    return True


def _parents_first(nodes: list[Node]) -> Iterator[Node]:
    """``nodes`` (each path once) with parents before children."""
    return iter(sorted(nodes, key=lambda n: n.path.split(b"/")))


def _ensure_parents(root: Beneath, view: ChainView, path: bytes) -> None:
    """Recreate missing parent directories with the source's metadata; a
    parent that is not a directory (a file, a symlink: never followed) is
    replaced by the source's directory."""
    chain = []
    p = parent_of(path)
    while p != ROOT and not root.is_dir(p):
        chain.append(p)
        p = parent_of(p)
    for q in reversed(chain):
        loc = view.locate(q)
        if loc is None or loc.node.kind is not Kind.DIR:
            raise BadPathError(
                f"cannot restore {display_path(path)}: {display_path(q)} is not a directory",
                hint=f"restore {display_path(q)} itself",
            )
        root.remove(q)
        materialise([loc.node], root)
