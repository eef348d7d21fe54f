"""``snapws restore``: bring paths back from a snapshot into the working tree,
for every backend by writing into the workspace's directory (through the
mount, where there is one: the changes land in the upperdir like any
edit), every write resolved beneath it (:mod:`snapws.beneath`)."""

from __future__ import annotations

from snapws.beneath import Beneath
from snapws.errors import BadPathError
from snapws.ids import SnapshotId
from snapws.layers.entries import parent_of
from snapws.layers.materialise import materialise
from snapws.layers.view import ChainView
from snapws.model import ROOT, Kind, display_path
from snapws.session import Session


def restore(session: Session, source: SnapshotId, paths: list[bytes]) -> list[bytes]:
    """Replace each of ``paths`` (relative to the workspace root) in the
    working tree by its state in ``source``; the rest is untouched. A path
    absent from ``source`` is an error and nothing is changed. Returns the
    paths restored. Raises BadPathError, UnsafePathError (a path changed
    into a symlink while restoring: refused, never followed)."""
    if ROOT in paths:
        raise BadPathError(
            "cannot restore the whole workspace",
            hint="`snapws reset --hard REV` or `snapws checkout --discard REV` does that",
        )
    view = session.chain_view(source)
    missing = [p for p in paths if view.locate(p) is None]
    if missing:
        raise BadPathError(
            f"not in snapshot {source.short()}: " + ", ".join(display_path(p) for p in missing),
            hint="`snapws show REV --name-only` lists a snapshot's changed paths; "
            "check the spelling relative to the workspace root",
        )
    with Beneath(session.path) as root:
        for p in paths:
            _ensure_parents(root, view, p)
            root.remove(p)
            materialise([loc.node for loc in view.walk(p)], root)
    return paths


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
