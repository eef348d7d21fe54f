"""``snapws flatten`` and the compaction that keeps chains shallow.

Every commit adds a layer, and every layer costs lookups in the directories
it holds. Merging consecutive layers of a chain into one equivalent layer
(:mod:`snapws.layers.merge`: hardlinks, manifests reused) and rewriting the
chains of the snapshots that contain them and that commits build on (ids,
history and content do not change; see :func:`rewrite_chains`) keeps chains
short.

Compaction (after each commit; :func:`compact`): which runs to merge, and
the budget that spreads a big merge over commits, are in
:mod:`snapws.ops.maintenance.compaction`. The run always ends at the parent's top
layer, so the parent (and every snapshot whose chain starts like it:
siblings, the new snapshot) is rewritten with the merged layer too, and
diffs between neighbours keep a long common chain prefix.

Crash safety. A merge is: build the tree in ``staging/flatten-*`` with its
manifest as ``manifest.pending`` (step ``flatten:staged``); write a plan
(``staging/flatten-*.plan``: the chain prefix, the run, the layer id);
publish the layer (``flatten:published``); replace the chain files one by
one, each atomically (``flatten:chain-rewritten`` after the first); delete the
plan. Every chain is valid at every moment (old or merged, equivalent). A
commit's compaction runs under the commit journal, so recovery runs
:func:`compact` again, which first finishes a pending plan
(:func:`resume_pending`). ``snapws flatten`` runs under a journal of its own
(a switch to the same state): recovery sweeps staging/ (chains the
interrupted merge did not reach keep their old, equivalent layers) and
mounts the workspace again if the remount was interrupted (steps
``flatten:frozen``, ``flatten:detached``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapws.backends import backend_for
from snapws.crash import crashpoint
from snapws.errors import StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.interrupts import deferred_signals
from snapws.layers.merge import RunLayer, build_merged_tree
from snapws.model import Entry, decode_manifest, manifest_id
from snapws.ops.maintenance.compaction import NO_COMPACTION as NO_COMPACTION
from snapws.session import Session
from snapws.store.atomic import active_batch, write_atomic
from snapws.store.store import EMPTY_LAYER, Store

_PLAN_SUFFIX = ".plan"


@dataclass(frozen=True, slots=True)
class FlattenResult:
    layer: LayerId | None  # None: nothing to do
    merged: int  # how many layers became one
    depth_before: int
    depth_after: int
    chains_rewritten: int


def compact(store: Store, sid: SnapshotId, max_depth: int) -> list[FlattenResult]:
    """Compaction after a commit made ``sid`` (:func:`snapws.ops.maintenance.compaction.compact`):
    finish a merge a crash interrupted, then merge within the commit's
    budget. Idempotent. Raises OSError, StoreCorruptError."""
    from snapws.ops.maintenance.compaction import compact as compact_within_budget

    return [
        FlattenResult(lid, merged, 0, 0, rewritten)
        for lid, merged, rewritten in compact_within_budget(store, sid, max_depth)
    ]


# --------------------------------------------------------------------------- merging


def _entries(store: Store, lid: LayerId) -> list[Entry]:
    try:
        return decode_manifest(store.read_manifest(lid))
    except ValueError as e:
        raise StoreCorruptError(f"layer {lid.short()} has an unreadable manifest: {e}") from e


def merge_run(
    store: Store,
    chain: Sequence[LayerId],
    start: int,
    end: int,
    progress: Callable[[int], None] | None = None,
    tip: SnapshotId | None = None,
) -> tuple[LayerId, int]:
    """Publish one layer equal to ``chain[start:end]`` (bottom first) and put
    it in place of those layers in the chains that start with
    ``chain[:end]`` (see :func:`rewrite_chains`; ``tip``, the snapshot whose
    chain this is, counts as a tip). Returns (the layer, how many chains
    changed).
    Raises OSError, StoreCorruptError."""
    if not 0 <= start < end - 1 < len(chain):
        raise ValueError(f"bad run [{start}, {end}) of a chain of {len(chain)}")
    run = chain[start:end]
    layers = [
        RunLayer(os.fsencode(store.layer_tree(lid)), _entries(store, lid)) for lid in reversed(run)
    ]
    staging = store.new_staging("flatten")
    try:
        manifest = build_merged_tree(
            layers, os.fsencode(staging / "tree"), start == 0, progress, store.xattr_form
        )
        store.write_pending_manifest(staging, manifest)
    except Exception:
        with suppress(OSError):
            store.discard(staging)
        raise
    return publish_staged(store, staging, manifest_id(manifest), chain[:end], start, tip)


def publish_staged(
    store: Store,
    staging: Path,
    lid: LayerId,
    prefix: Sequence[LayerId],
    start: int,
    tip: SnapshotId | None,
) -> tuple[LayerId, int]:
    """Publish ``staging`` (its ``tree`` built, its ``manifest.pending``
    written: the layer ``lid``, equal to ``prefix[start:]``) and put it in
    place of that run in the chains that start with ``prefix``; crash-safe
    through a plan that :func:`resume_pending` finishes. Returns (the layer,
    how many chains changed)."""
    crashpoint("flatten:staged")
    plan = {
        "prefix": [x.hex for x in prefix],
        "start": start,
        "layer": lid.hex,
        "staging": staging.name,
        "tip": tip.hex if tip is not None else None,
    }
    write_atomic(_plan_path(store, staging.name), json.dumps(plan).encode())
    return _finish(store, plan)


def _plan_path(store: Store, staging_name: str) -> Path:
    return store.root / "staging" / (staging_name + _PLAN_SUFFIX)


def _finish(store: Store, plan: dict[str, Any]) -> tuple[LayerId, int]:
    """Publish the planned layer (if not yet), rewrite the chains, drop the
    plan. Idempotent."""
    staging = store.root / "staging" / plan["staging"]
    lid = LayerId(plan["layer"])
    if not store.has_layer(lid):
        got = store.publish_pending(staging)
        if got != lid:
            raise StoreCorruptError(
                f"a flatten plan names layer {lid.short()}, staged {got.short()}"
            )
    if staging.exists():
        store.discard(staging)  # the same layer existed already
    crashpoint("flatten:published")
    prefix = [LayerId(x) for x in plan["prefix"]]
    tips = [SnapshotId(plan["tip"])] if plan.get("tip") else []
    outer = active_batch()
    if outer is not None:
        outer.barrier()  # the layer is durable before any chain names it
    # each chain file is replaced atomically, old and new both valid: they
    # may reach the disk in any order, so they share one syncfs
    with store.durable_batch():
        rewritten = rewrite_chains(store, prefix, lid, int(plan["start"]), tips)
    # not synced: a plan that comes back after a power loss is finished again
    _plan_path(store, plan["staging"]).unlink(missing_ok=True)
    return lid, rewritten


def resume_pending(store: Store) -> int:
    """Finish the merges whose plan a crash left in staging/ (their layer
    is staged or published; chains may be half rewritten). Returns how many."""
    done = 0
    for path in sorted((store.root / "staging").glob("*" + _PLAN_SUFFIX)):
        try:
            plan = json.loads(path.read_bytes())
            staged = store.root / "staging" / plan["staging"]
            lid = LayerId(plan["layer"])
        except (OSError, ValueError, KeyError, TypeError):
            store.discard(path)  # a torn plan: nothing was published after it
            continue
        if not store.has_layer(lid) and not (
            (staged / "manifest.pending").exists() or (staged / "manifest").exists()
        ):
            store.discard(path)
            continue
        _finish(store, plan)
        done += 1
    return done


def rewrite_chains(
    store: Store,
    prefix: list[LayerId],
    layer: LayerId,
    start: int = 0,
    extra_tips: Sequence[SnapshotId] = (),
) -> int:
    """Replace ``prefix[start:]`` by ``[layer]`` in the chains that start with
    ``prefix`` among the snapshots a commit or checkout can build on: every
    branch, tag and workspace HEAD, and their ancestors while their chains
    start with ``prefix`` (older ones have shorter chains). Other snapshots
    keep their equivalent, longer chains. Costs those snapshots, not the
    history. Returns how many chains changed."""
    n = len(prefix)
    tips = set(store.every_ref(("heads", "tags")).values())  # of every branch namespace
    tips.update(s for ws in store.workspaces() for s in (ws.head, ws.mounted_head))
    tips.update(extra_tips)
    seen: set[SnapshotId] = set()
    todo = sorted(tips)
    changed = 0
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        try:
            chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
            parents = store.read_snapshot(sid).parents
        except StoreCorruptError:
            continue  # forgotten or being deleted (prune): nothing to shorten
        if chain[:n] == prefix:
            store.write_chain(sid, [*chain[:start], layer, *chain[n:]])
            changed += 1
            if changed == 1:
                crashpoint("flatten:chain-rewritten")
        elif chain[: start + 1] != [*prefix[:start], layer]:
            continue  # neither the old run nor the merged layer: stop here
        todo.extend(parents)
    return changed


# --------------------------------------------------------------------------- snapws flatten


def flatten(
    store: Store,
    sid: SnapshotId,
    keep: int = 1,
    progress: Callable[[int], None] | None = None,
) -> FlattenResult:
    """Merge all but the newest ``keep`` layers of ``sid``'s chain into one
    (a full flatten: the bottom layer included).

    Keeping the newest layer (the default) keeps diffs against the parent
    snapshot cheap. The caller remounts workspaces whose chain changed."""
    resume_pending(store)
    chain = store.chain_layers(sid)
    upto = len(chain) - max(keep, 0)
    if upto < 2:
        return FlattenResult(None, 0, len(chain), len(chain), 0)
    lid, rewritten = merge_run(store, chain, 0, upto, progress, tip=sid)
    return FlattenResult(lid, upto, len(chain), 1 + len(chain) - upto, rewritten)


def flatten_in_workspace(
    session: Session,
    sid: SnapshotId,
    keep: int = 1,
    progress: Callable[[int], None] | None = None,
) -> FlattenResult:
    """:func:`flatten`, then remount the workspace on its shorter chain if
    its HEAD was affected (uncommitted changes stay: the upperdir is kept on
    an equivalent lower stack).

    Journaled as a switch to the same state (same HEAD, same upperdir): after
    a crash, the next command (any command: a journal makes even read-only
    ones recover) sweeps the unpublished layer and mounts the workspace if a
    crash left it frozen or detached. Raises WorkspaceBusyError, MountError."""
    from snapws.ops.worktree.checkout import finish_switch, remount_journal

    store, state = session.store, session.state
    backend = backend_for(state)
    before = store.chain(state.mounted_head)
    j = remount_journal(state, session.config.author_or_default(), "flatten")
    store.write_journal(j.to_json())
    try:
        result = flatten(store, sid, keep, progress)
        if store.chain(state.mounted_head) == before or backend.holds(store, state):
            # (held: the mount keeps its equivalent older chain, whose layers
            # gc keeps while mounted, until the workspace settles)
            store.clear_journal()
            return result
        backend.quiesce(store, state, "remount the flattened workspace")
        crashpoint("flatten:frozen")
    except BaseException:
        backend.release(store, state, None)
        store.clear_journal()
        raise
    with deferred_signals("the flattened workspace was mounted first"):
        finish_switch(store, j)  # the new mount in place of the frozen one; clear the journal
    session.reload()
    return result
