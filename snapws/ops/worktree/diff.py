"""``snapws status`` and ``snapws diff``: changes between the working tree and
a snapshot, or between two snapshots, at the cost of the layers in between."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from snapws import deeppath
from snapws.backends import backend_for
from snapws.errors import StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.layers.entries import is_under
from snapws.layers.manifestdiff import ManifestChain, SortedManifest, diff_chains
from snapws.layers.view import ChainView
from snapws.model import Change, Kind, classify
from snapws.session import Session
from snapws.store.manifests import manifest_chain
from snapws.store.store import Store


class LayerFiles:
    """The files of one snapshot, read where its manifests say they are: the
    layer that shows a path holds the file at that path in its tree, so a
    read costs a manifest lookup (already made by the diff) and one open,
    not a probe of every layer directory on the way."""

    def __init__(
        self, store: Store, sid: SnapshotId, shared: dict[LayerId, SortedManifest] | None = None
    ) -> None:
        """Raises as :func:`manifest_chain` (``shared`` as there)."""
        self.chain = manifest_chain(store, sid, shared)
        self.trees = [os.fsencode(store.layer_tree(lid)) for lid, _ in self.chain.layers]

    def read(self, path: bytes) -> bytes | None:
        """The content of regular file ``path``, or None if the snapshot has
        no regular file there. Raises OSError (a layer tree damaged)."""
        loc = self.chain.locate(path)
        if loc is None or loc[1].kind is not Kind.FILE:
            return None
        # a layer's files never change: a read short of one byte more than
        # the manifest's size is the whole file, with no second read for EOF
        return _read_file(self.trees[loc[0]] + b"/" + path, loc[1].size, short_is_end=True)


@dataclass(slots=True)
class DiffResult:
    """Changes plus the two sides, so that callers can read file contents;
    against the working tree, also its topmost ignored paths (not in
    ``changes``). ``old_files``/``new_files``: the side's snapshot read
    through its manifests (None: through the view)."""

    changes: list[Change]
    old: ChainView
    new: ChainView
    old_label: str
    new_label: str
    ignored: list[bytes] = field(default_factory=list)
    old_files: LayerFiles | None = None
    new_files: LayerFiles | None = None

    def read_old(self, path: bytes) -> bytes | None:
        """The content of regular file ``path`` on the old side, or None."""
        if self.old_files is not None:
            return self.old_files.read(path)
        return _read(self.old, path)

    def read_new(self, path: bytes) -> bytes | None:
        """The content of regular file ``path`` on the new side, or None."""
        if self.new_files is not None:
            return self.new_files.read(path)
        return _read(self.new, path)


def _read(view: ChainView, path: bytes) -> bytes | None:
    loc = view.locate(path)
    if loc is None or loc.node.kind is not Kind.FILE:
        return None
    return _read_file(loc.node.abspath, loc.node.st.st_size)


def _read_file(abspath: bytes, size: int, short_is_end: bool = False) -> bytes:
    """The content of the file at ``abspath`` (however long), ``size`` bytes
    expected: one read of that, one to see the end (none when
    ``short_is_end`` and the first read returned fewer bytes than asked: a
    regular file on a local filesystem). Raises OSError."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    fd = deeppath.open_fd(abspath, flags) if deeppath.is_long(abspath) else os.open(abspath, flags)
    try:
        data = os.read(fd, size + 1)
        if short_is_end and len(data) <= size:
            return data
        more = os.read(fd, 1 << 20) if data else b""
        if not more:
            return data
        parts = [data, more]  # longer than expected: all of it
        while more := os.read(fd, 1 << 20):
            parts.append(more)
        return b"".join(parts)
    finally:
        os.close(fd)


def status(session: Session) -> list[Change]:
    """Uncommitted changes: HEAD against the working tree (a scan of U).
    Raises NotMountedError when the workspace is not mounted (never "clean"
    then), BadPathError naming entries written into its bare directory."""
    backend_for(session.state).check_shown(session.store, session.state)
    return diff(session, None, None).changes


def status_ignored(session: Session) -> tuple[list[Change], list[tuple[bytes, bool]]]:
    """:func:`status`, and the working tree's topmost ignored paths, each
    with whether it is a directory (``status --ignored``). Raises as
    :func:`status` does."""
    import stat

    backend_for(session.state).check_shown(session.store, session.state)
    result = diff(session, None, None)
    root = os.fsencode(session.path)
    ignored = []
    for p in result.ignored:
        try:
            is_dir = stat.S_ISDIR(os.lstat(root + b"/" + p).st_mode)
        except OSError:
            is_dir = False
        ignored.append((p, is_dir))
    return result.changes, ignored


def diff(
    session: Session,
    old: SnapshotId | None,
    new: SnapshotId | None,
    paths: tuple[bytes, ...] = (),
) -> DiffResult:
    """Changes from ``old`` (default HEAD) to ``new`` (default: the working
    tree), restricted to ``paths`` if given. Costs the layers that differ
    between the two chains, not the size of the tree."""
    store = session.store
    head = session.state.head
    old_sid = old if old is not None else head
    shared: dict[LayerId, SortedManifest] = {}  # a layer both chains have: read once
    if new is not None:
        a, b = LayerFiles(store, old_sid, shared), LayerFiles(store, new, shared)
        changes = _diff_chains(a.chain, b.chain, paths)
        old_view, new_view = ChainView(a.trees, session.hashes), ChainView(b.trees, session.hashes)
        return DiffResult(changes, old_view, new_view, old_sid.short(), new.short(), [], a, b)
    old_view = session.chain_view(old_sid)
    backend = backend_for(session.state)
    work = backend.changes(session)
    work_view = backend.working_view(session)
    changes = work.changes
    if old_sid != head:
        # HEAD's changes since ``old``, then the working tree's over them
        between = _diff_chains(
            manifest_chain(store, old_sid, shared), manifest_chain(store, head, shared), paths
        )
        candidates = sorted({c.path for c in between} | {c.path for c in changes})
        changes = [
            c
            for c in (classify(p, old_view.entry(p), work_view.entry(p)) for p in candidates)
            if c is not None
        ]
    ignored = work.ignored
    if paths:
        changes = [c for c in changes if any(is_under(c.path, u) for u in paths)]
        ignored = [p for p in ignored if any(is_under(p, u) for u in paths)]
    return DiffResult(changes, old_view, work_view, old_sid.short(), "working tree", ignored)


def snapshot_changes(session: Session, a: SnapshotId, b: SnapshotId) -> list[Change]:
    """Changes from snapshot ``a`` to ``b``, read from the manifests of the
    layers the two chains do not share. Raises StoreCorruptError (a damaged
    manifest), as :func:`manifest_chain` does."""
    if a == b:
        return []
    return _diff_chains(session.manifest_chain(a), session.manifest_chain(b))


def diff_from_nothing(session: Session, sid: SnapshotId) -> list[Change]:
    """Everything in a root snapshot, as additions (``show`` of a first snapshot)."""
    changes = _diff_chains(ManifestChain([]), manifest_chain(session.store, sid))
    return [c for c in changes if c.path != b"."]


def shown_diff(session: Session, sid: SnapshotId, parent: SnapshotId | None) -> DiffResult:
    """What snapshot ``sid`` changed: against ``parent``, or (None: a root
    snapshot, or one whose parent was pruned) its whole tree as additions,
    with both sides readable (``show --stat``, ``show -p``)."""
    if parent is not None:
        return diff(session, parent, sid)
    files = LayerFiles(session.store, sid)
    changes = diff_from_nothing(session, sid)
    new_view = ChainView(files.trees, session.hashes)
    return DiffResult(changes, ChainView([]), new_view, "nothing", sid.short(), [], None, files)


def _diff_chains(
    old: ManifestChain, new: ManifestChain, paths: tuple[bytes, ...] = ()
) -> list[Change]:
    try:
        return diff_chains(old, new, paths)
    except ValueError as e:  # a manifest line read on the way
        raise StoreCorruptError(f"a layer has a damaged manifest: {e}") from e
