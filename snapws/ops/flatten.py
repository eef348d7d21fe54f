"""``snapws flatten`` and the automatic bound on chain depth.

Merges the bottom layers of a snapshot's chain into one equivalent layer and
rewrites the chain of every snapshot that starts with those layers. Snapshot
ids, history and content do not change; lookups get cheaper (the kernel
stacks at most 500 layers, and each layer costs every lookup in directories
it holds). Each step is atomic (publish the layer, then replace chain files
one by one), so a crash leaves valid chains: old or flattened.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from snapws.ids import LayerId, SnapshotId
from snapws.layers.merge import build_flat_tree, known_hashes
from snapws.mounts import mounter
from snapws.ops.commit import freeze
from snapws.ops.workspace import Session, ensure_mounted
from snapws.store.store import EMPTY_LAYER, Store


@dataclass(frozen=True, slots=True)
class FlattenResult:
    layer: LayerId | None  # None: nothing to do
    merged: int  # how many layers became one
    depth_before: int
    depth_after: int
    chains_rewritten: int


def flatten_prefix(
    store: Store, prefix: list[LayerId], progress: Callable[[int], None] | None = None
) -> LayerId:
    """Publish one layer equal to the chain ``prefix`` (bottom first, starting
    at a bottom layer). Raises OSError, StoreCorruptError."""
    ordered = list(reversed(prefix))
    trees = [os.fsencode(store.layer_tree(lid)) for lid in ordered]
    hashes = known_hashes(trees, [store.read_manifest(lid) for lid in ordered])
    staging = store.new_staging("flatten")
    manifest = build_flat_tree(trees, os.fsencode(staging / "tree"), hashes, progress)
    store.write_pending_manifest(staging, manifest)
    lid = store.publish_pending(staging)
    if staging.exists():
        store.discard(staging)  # the same layer exists already
    return lid


def rewrite_chains(store: Store, prefix: list[LayerId], layer: LayerId) -> int:
    """Replace ``prefix`` by ``[layer]`` at the start of every chain that
    begins with it. Returns how many chains changed."""
    n = len(prefix)
    changed = 0
    for sid in store.snapshot_ids():
        chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
        if len(chain) >= n and chain[:n] == prefix:
            store.write_chain(sid, [layer, *chain[n:]])
            changed += 1
    return changed


def flatten(
    store: Store,
    sid: SnapshotId,
    keep: int = 1,
    progress: Callable[[int], None] | None = None,
) -> FlattenResult:
    """Merge all but the newest ``keep`` layers of ``sid``'s chain.

    Keeping the newest layer (the default) keeps diffs against the parent
    snapshot cheap. The caller remounts workspaces whose chain changed."""
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    upto = len(chain) - max(keep, 0)
    if upto < 2:
        return FlattenResult(None, 0, len(chain), len(chain), 0)
    prefix = chain[:upto]
    lid = flatten_prefix(store, prefix, progress)
    rewritten = rewrite_chains(store, prefix, lid)
    return FlattenResult(lid, len(prefix), len(chain), 1 + len(chain) - upto, rewritten)


def flatten_in_workspace(
    session: Session,
    sid: SnapshotId,
    keep: int = 1,
    progress: Callable[[int], None] | None = None,
) -> FlattenResult:
    """:func:`flatten`, then remount the workspace on its shorter chain if
    its HEAD was affected (uncommitted changes stay: the upperdir is kept on
    an equivalent lower stack). Raises WorkspaceBusyError, MountError."""
    store = session.store
    before = store.chain(session.state.head)
    result = flatten(store, sid, keep, progress)
    if store.chain(session.state.head) != before:
        freeze(session.path, "remount the flattened workspace")
        mounter.detach(session.path)
        ensure_mounted(store, session.state)
    return result
