"""Status and working-tree diffs of a plain workspace (the scan of
:mod:`snapws.backends.plain.scan`, with the index refreshed when it learnt
something), and the changes between two snapshots as the other verbs need
them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from snapws.backends.plain.index import Index, IndexWriter, load_index
from snapws.backends.plain.scan import ScanResult, WorkRules, scan
from snapws.errors import BadPathError
from snapws.ids import SnapshotId
from snapws.layers.diff import diff_views, touched_paths
from snapws.layers.entries import is_under
from snapws.layers.ignore import IgnoreRules
from snapws.layers.view import ChainView
from snapws.model import Change, Kind, classify
from snapws.ops.workspace import Session

if TYPE_CHECKING:  # the generic modules import this package lazily
    from snapws.ops.diff import DiffResult


def scan_workspace(
    session: Session, write: bool = True
) -> tuple[ScanResult, Index, IndexWriter | None]:
    """Scan the working tree against HEAD. The index writer (if the store
    is writable) is opened first: its timestamp is the racy reference of the
    stats this scan records."""
    state = session.state
    writer = IndexWriter.begin(session.wsdir, session.path) if write else None
    try:
        index = load_index(session.wsdir, state.head)
        if index is None:
            from snapws.backends.plain.headtree import rebuild_index

            index = rebuild_index(session.store, state.head)
        root = os.fsencode(state.path)
        if not os.path.isdir(root):
            raise BadPathError(
                f"the workspace directory {state.path} is gone",
                hint=f"make it again (mkdir {state.path}), then `snapws reset --hard HEAD` "
                "brings HEAD back into it",
            )
        result = scan(
            index,
            root,
            WorkRules.for_workspace(os.fsencode(state.path)),
            session.config.hash_threads,
            IgnoreRules.for_tree(root, session.config.ignore),
        )
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        index.ref_ns, index.slack_ns = writer.ref_ns, writer.slack_ns
    return result, index, writer


def refresh_index(index: Index, writer: IndexWriter | None) -> None:
    """Write the index back if the scan learnt something (a cache: a failure
    to write it costs the next status time, nothing else)."""
    if writer is None:
        return
    if not index.modified:
        writer.abort()
        return
    try:
        writer.commit(index)
    except OSError:
        writer.abort()


def status(session: Session) -> list[Change]:
    """Uncommitted changes: HEAD against the working directory."""
    result, index, writer = scan_workspace(session)
    refresh_index(index, writer)
    return result.changes


def uncommitted(session: Session) -> list[Change]:
    """The working tree's changes against HEAD (same as :func:`status`)."""
    return status(session)


def diff(session: Session, old: SnapshotId | None, paths: tuple[bytes, ...] = ()) -> DiffResult:
    """Changes from ``old`` (default HEAD) to the working directory,
    restricted to ``paths`` if given (paths relative to the root)."""
    from snapws.ops.diff import DiffResult

    head = session.state.head
    old_sid = old if old is not None else head
    result, index, writer = scan_workspace(session)
    refresh_index(index, writer)
    changes = result.changes
    old_view = session.chain_view(old_sid)
    if old_sid != head:
        between, _ = snapshot_changes(session, old_sid, head, paths)
        work = {c.path: c.new for c in changes}
        out = []
        for p in sorted({c.path for c in between} | set(work)):
            eo = old_view.entry(p)
            en = work[p] if p in work else index.head_entry(p)
            c = classify(p, eo, en)
            if c is not None:
                out.append(c)
        changes = out
    if paths:
        changes = [c for c in changes if any(is_under(c.path, u) for u in paths)]
    work_view = ChainView([os.fsencode(session.path)], session.hashes)
    ignored = result.ignored
    if paths:
        ignored = [p for p in ignored if any(is_under(p, u) for u in paths)]
    return DiffResult(changes, old_view, work_view, old_sid.short(), "working tree", ignored)


def snapshot_changes(
    session: Session,
    a: SnapshotId,
    b: SnapshotId,
    under: tuple[bytes, ...] = (),
    index: Index | None = None,
) -> tuple[list[Change], ChainView]:
    """Changes from snapshot ``a`` to ``b`` (restricted to ``under``), and
    ``b``'s view. Costs the layers the two chains do not share. Files of
    those layers are hashed from their manifests; with an ``index`` of
    ``a``, ``a``'s side is read from it instead of the layer trees."""
    store = session.store
    view_b = session.chain_view(b)
    if a == b:
        return [], view_b
    differing = store.unshared_layers(a, b)
    from snapws.backends.plain.headtree import seed_hashes

    seed_hashes(store, differing, session.hashes)
    dirs = [os.fsencode(store.layer_tree(x)) for x in differing]
    if index is None or index.head != a:
        return diff_views(session.chain_view(a), view_b, dirs, under), view_b
    return _changes_from_index(index, view_b, dirs, under), view_b


def _changes_from_index(
    index: Index, view: ChainView, dirs: list[bytes], under: tuple[bytes, ...]
) -> list[Change]:
    """:func:`diff_views` with the old side read from ``index`` (HEAD's
    entries, hashes included): the candidates are the paths the differing
    layers touch, and the subtrees below their whiteouts, opaque
    directories and non-directories, on both sides."""

    def selected(p: bytes) -> bool:
        return not under or any(is_under(p, u) or is_under(u, p) for u in under)

    paths, expand = touched_paths(dirs)
    candidates = {p for p in paths if selected(p)}
    for top in expand:
        if not selected(top):
            continue
        candidates.update(p for p, _ in index.head_subtree(top) if selected(p))
        loc = view.locate(top)
        if loc is not None and loc.node.kind is Kind.DIR:
            candidates.update(w.node.path for w in view.walk(top) if selected(w.node.path))
    changes = []
    for p in sorted(candidates):
        if under and not any(is_under(p, u) for u in under):
            continue
        c = classify(p, index.head_entry(p), view.entry(p))
        if c is not None:
            changes.append(c)
    return changes
