"""``snapws status`` and ``snapws diff``: changes between the working tree and
a snapshot, or between two snapshots, at the cost of the layers in between."""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

from snapws.errors import StoreCorruptError
from snapws.ids import SnapshotId
from snapws.layers.diff import diff_views
from snapws.layers.ignore import drop_ignored
from snapws.layers.manifestdiff import SMALL_MANIFEST, ManifestChain, SortedManifest, diff_chains
from snapws.layers.view import ChainView
from snapws.model import Change, Kind
from snapws.ops.workspace import Session, check_shown
from snapws.store.store import Store


@dataclass(slots=True)
class DiffResult:
    """Changes plus the two sides, so that callers can read file contents;
    against the working tree, also its topmost ignored paths (not in
    ``changes``)."""

    changes: list[Change]
    old: ChainView
    new: ChainView
    old_label: str
    new_label: str
    ignored: list[bytes] = field(default_factory=list)

    def read_old(self, path: bytes) -> bytes | None:
        return _read(self.old, path)

    def read_new(self, path: bytes) -> bytes | None:
        return _read(self.new, path)


def _read(view: ChainView, path: bytes) -> bytes | None:
    loc = view.locate(path)
    if loc is None or loc.node.kind is not Kind.FILE:
        return None
    with open(loc.node.abspath, "rb") as f:
        return f.read()


def status(session: Session) -> list[Change]:
    """Uncommitted changes: HEAD against the working tree (a scan of U).
    Raises NotMountedError when the workspace is not mounted (never "clean"
    then), BadPathError naming entries written into its bare directory."""
    check_shown(session.store, session.state)
    return diff(session, None, None).changes


def status_ignored(session: Session) -> tuple[list[Change], list[tuple[bytes, bool]]]:
    """:func:`status`, and the working tree's topmost ignored paths, each
    with whether it is a directory (``status --ignored``). Raises as
    :func:`status` does."""
    import stat

    check_shown(session.store, session.state)
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
    if new is None and session.state.backend == "plain":
        from snapws.backends.plain import ops as plain_ops

        return plain_ops.diff(session, old, paths)
    store = session.store
    head = session.state.head
    old_sid = old if old is not None else head
    old_view = session.chain_view(old_sid)
    extra: list[bytes] = []
    tops: list[bytes] = []
    if new is None:
        from snapws.layers.scan import ignored_in_upper
        from snapws.ops.ignoring import ignore_rules

        unshared = store.unshared_layers(old_sid, head)
        new_view = session.working_view()
        upper = os.fsencode(session.upper)
        extra.append(upper)
        rules = ignore_rules(session)
        tops = ignored_in_upper(upper, session.chain_view(head), session.upper_form, rules)
    else:
        new_view = session.chain_view(new)
        changes = diff_chains(manifest_chain(store, old_sid), manifest_chain(store, new), paths)
        return DiffResult(changes, old_view, new_view, old_sid.short(), new.short())
    dirs = [os.fsencode(store.layer_tree(x)) for x in unshared]
    changes = diff_views(old_view, new_view, [*dirs, *extra], paths, skip=set(tops))
    changes, ignored = drop_ignored(changes, tops)
    return DiffResult(changes, old_view, new_view, old_sid.short(), "working tree", ignored)


def diff_from_nothing(session: Session, sid: SnapshotId) -> list[Change]:
    """Everything in a root snapshot, as additions (``show`` of a first snapshot)."""
    changes = diff_chains(ManifestChain([]), manifest_chain(session.store, sid))
    return [c for c in changes if c.path != b"."]


def manifest_chain(store: Store, sid: SnapshotId) -> ManifestChain:
    """``sid``'s chain, topmost first, as manifests searched in place (a big
    layer's manifest is mapped, never read whole). Raises DamagedRecordError,
    MissingLayerError, StoreCorruptError."""
    chain = store.chain_layers(sid)
    store.check_layers(sid, chain)
    layers = []
    for lid in reversed(chain):
        path = store.layer_dir(lid) / "manifest"
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > SMALL_MANIFEST:
                    data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                else:
                    data = f.read()
            layers.append((lid, SortedManifest(data)))
        except (OSError, ValueError) as e:
            raise StoreCorruptError(f"layer {lid.short()} has an unreadable manifest: {e}") from e
    return ManifestChain(layers)
