"""``snapws restore``: bring paths back from a snapshot into the working tree,
through the mount (so the changes land in the upperdir like any edit)."""

from __future__ import annotations

import os
import shutil

from snapws.errors import BadPathError
from snapws.ids import SnapshotId
from snapws.layers.entries import parent_of
from snapws.layers.materialise import materialise
from snapws.model import ROOT, Kind, display_path
from snapws.ops.workspace import Session


def restore(session: Session, source: SnapshotId, paths: list[bytes]) -> list[bytes]:
    """Replace each of ``paths`` (relative to the workspace root) in the
    working tree by its state in ``source``; the rest is untouched. A path
    absent from ``source`` is an error and nothing is changed. Returns the
    paths restored. Raises BadPathError."""
    if session.state.backend == "plain":
        from snapws.backends.plain import ops as plain_ops

        return plain_ops.restore(session, source, paths)
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
    root = os.fsencode(session.path)
    for p in paths:
        dst = root + b"/" + p
        _ensure_parents(session, view, p)
        if os.path.lexists(dst):
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            else:
                os.unlink(dst)
        nodes = [loc.node for loc in view.walk(p)]
        parent = parent_of(p)
        materialise(
            nodes,
            root if parent == ROOT else root + b"/" + parent,
            strip=b"" if parent == ROOT else parent,
        )
    return paths


def _ensure_parents(session: Session, view: object, path: bytes) -> None:
    """Recreate missing parent directories with the source's metadata."""
    from snapws.layers.view import ChainView

    assert isinstance(view, ChainView)
    root = os.fsencode(session.path)
    chain = []
    p = parent_of(path)
    while p != ROOT and not os.path.isdir(root + b"/" + p):
        chain.append(p)
        p = parent_of(p)
    for q in reversed(chain):
        loc = view.locate(q)
        if loc is None or loc.node.kind is not Kind.DIR:
            raise BadPathError(
                f"cannot restore {display_path(path)}: {display_path(q)} is not a directory",
                hint=f"restore {display_path(q)} itself",
            )
        dst = root + b"/" + q
        if os.path.lexists(dst):
            os.unlink(dst)
        parent = parent_of(q)
        materialise(
            [loc.node],
            root if parent == ROOT else root + b"/" + parent,
            strip=b"" if parent == ROOT else parent,
        )
