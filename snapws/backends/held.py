"""A workspace *held* by running programs (their current directory, open
files or memory maps inside it), changed through its live mount instead of
a remount, so that they are never left on a frozen one (issue 10):

- a commit copies the changed paths from the live mount (never frozen:
  programs in it go on writing) into the new layer's tree
  (:func:`stage_copied`), as the plain backend's commit does;
- a checkout or reset rewrites the paths that differ through the mount
  (:func:`switch_part`, :func:`rewrite_live`);
- the mount then stays on its chain, recorded as the state's ``base``,
  until nothing holds the workspace: then a new upperdir holding only the
  changes against HEAD is built from the frozen mount
  (:func:`build_settled_upper`) and the mount is replaced as usual.

Used by :class:`snapws.backends.overlay.OverlayBackend`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from snapws.backends.plain.stage import Stager
from snapws.backends.plain.write import bytes_written, check_space, meta_only, rewrite_paths
from snapws.backends.upperdir import copy_dir_meta
from snapws.crash import crashpoint
from snapws.errors import StoreCorruptError
from snapws.ids import LayerId
from snapws.layers.entries import opaque_xattr
from snapws.layers.manifestdiff import SortedManifest
from snapws.layers.scan import entries_of, plan_upper, read_tree
from snapws.layers.upperdiff import diff_upper
from snapws.layers.view import ChainView, HashCache
from snapws.model import Change, Entry, WorkspaceState
from snapws.store.manifests import manifest_chain
from snapws.store.store import Store


def stage_copied(
    mount: Path,
    tree: Path,
    changes: list[Change],
    recreated: set[bytes],
    ignored: list[bytes],
    xattr_form: str,
    hash_threads: int,
) -> list[Entry]:
    """Copy the changed paths from the live ``mount`` into the new layer
    tree ``tree`` (whiteouts for deletions, opaque directories for the
    ``recreated`` ones; ``ignored`` never), hashing while copying (a file
    written meanwhile is recorded as copied, one removed meanwhile as
    deleted); returns the tree's manifest entries. Raises OSError,
    LayerRejectedError (a directory on the way replaced meanwhile)."""
    tree.mkdir()
    stager = Stager(os.fsencode(mount), os.fsencode(tree), opaque_xattr(xattr_form), True)
    stager.stage(changes, recreated, ignored)
    stager.finish()
    return entries_of(read_tree(os.fsencode(tree)), hash_threads, known=stager.hashes)


def switch_part(
    changes: list[Change],
    between: list[Change],
    ignored: list[bytes],
    keep: bool,
    upper: bytes,
) -> dict[str, Any]:
    """The journal part of a switch through the live mount: the paths that
    differ between HEAD and the target (``between``), and the uncommitted
    ones unless ``keep``; those whose content is the same get metadata only;
    ignored paths stay. Raises StoreFullError, before anything changes, if
    what it writes does not fit beside the upperdir ``upper``."""
    mine = [] if keep else changes
    paths = {c.path for c in between} | {c.path for c in mine}
    same = meta_only(between, mine)
    check_space(upper, bytes_written(between, mine, same), "switch snapshots")
    return {
        "held": True,
        "paths": [os.fsdecode(p) for p in sorted(paths)],
        "meta_only": [os.fsdecode(p) for p in sorted(same)],
        "keep": [os.fsdecode(p) for p in ignored],
    }


def rewrite_live(store: Store, new: WorkspaceState, part: dict[str, Any]) -> None:
    """Rewrite the journaled paths from ``new.head`` through the (thawed)
    mount on ``new.path``. Idempotent. Raises OSError, UnsafePathError."""
    view = ChainView([os.fsencode(p) for p in store.layer_trees(new.head)])
    rewrite_paths(
        os.fsencode(new.path),
        view,
        [os.fsencode(p) for p in part["paths"]],
        True,
        [os.fsencode(p) for p in part.get("meta_only", ())],
        halfway=lambda: crashpoint("checkout:rewriting"),
        keep=[os.fsencode(p) for p in part.get("keep", ())],
    )


def build_settled_upper(
    store: Store,
    old: WorkspaceState,
    new: WorkspaceState,
    upper_form: str,
) -> None:
    """Make ``new``'s upperdir hold the working tree's changes against
    HEAD, in overlay form (whiteouts, opaque directories), copied from the
    frozen mount of the held ``old``; built under a temporary name, then
    renamed (idempotent: a finished one is kept). Raises OSError."""
    wsdir = store.workspace_dir(new.id)
    target = wsdir / new.upper
    if target.exists():
        return
    tmp = wsdir / f".{new.upper}.build"
    if tmp.exists():
        store.discard(tmp)
    assert old.base is not None
    upper = os.fsencode(wsdir / old.upper)
    base = [os.fsencode(p) for p in store.layer_trees(old.base)]
    shared: dict[LayerId, SortedManifest] = {}
    lower = manifest_chain(store, old.base, shared)
    plan = plan_upper(upper, ChainView(base), upper_form, manifests=lower)
    try:
        changes = diff_upper(
            plan.nodes, lower, manifest_chain(store, old.head, shared), HashCache()
        )
    except ValueError as e:  # a manifest line read on the way
        raise StoreCorruptError(f"a layer has a damaged manifest: {e}") from e
    recreated = {n.path for n in plan.keep if n.opaque and n.path != b"."}
    tmp.mkdir()
    stager = Stager(os.fsencode(old.path), os.fsencode(tmp), opaque_xattr(store.xattr_form), True)
    stager.stage(changes, recreated, [])
    stager.finish()
    copy_dir_meta(Path(old.path), tmp)
    os.rename(tmp, target)
    (wsdir / new.work).mkdir(exist_ok=True)
