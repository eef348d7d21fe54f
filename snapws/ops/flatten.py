"""``snapws flatten`` and the compaction that keeps chains shallow.

Every commit adds a layer, and every layer costs lookups in the directories
it holds. Merging consecutive layers of a chain into one equivalent layer
(:mod:`snapws.layers.merge`: hardlinks, manifests reused) and rewriting the
chains of the snapshots that contain them and that commits build on (ids,
history and content do not change; see :func:`rewrite_chains`) keeps chains
short.

Compaction policy (after each commit; :func:`compact`)
-------------------------------------------------------

A geometric ("leveled by size") scheme. The chain is ``[B, L1 .. Lk, N]``:
the bottom layer ``B`` (the whole tree), older merged layers, and ``N``, the
layer the commit just made, which always stays separate (a diff against the
parent then costs ``N`` alone). Sizes are manifest sizes in bytes (a stat per
layer; proportional to entries). The invariant, from the top down:

    every layer below N is more than RATIO (4) times bigger than all the
    layers between it and N together.

After a commit, the layers just below ``N`` that break it are merged, in one
run ending at the parent's top layer: starting from ``Lk``, accumulate while
the next older layer is at most ``RATIO`` times the accumulated size.

- Depth: sizes grow by a factor RATIO + 1 per layer going down, so a chain
  has at most about ``2 + log5(tree / smallest commit)`` layers. Measured
  (bench/bench_depth.py: 1,000 commits of 3 files on 100,000 files): 4.9 on
  average, 6 at most, against 17 / 32 for full flattens past max_depth 32.
- Cost: a merge reads and links only the layers it merges. An entry is
  merged again only when the layers above it have grown to a quarter of
  its layer's size, so merges cost a small multiple of the entries
  committed, times the number of levels (O(changes x log)), and the big
  merges are rare.
- The bottom layer (cost: the whole tree) is merged only when the layers
  above it together reach a quarter of its size: after changes of the order
  of the tree, never for a few files a commit. Measured: the slowest of the
  1,000 commits took 0.18 s (full flattens: 3.5 s every 32 commits).
- Store: every merged layer stays (the snapshots whose chains it ended
  when it was made still use it), so the store grows by the merges'
  metadata: directories (4 KiB each) and manifests; files are hardlinks.
  Measured: 261 MiB for the 1,000 commits, against 114 MiB without any
  merging and 620 MiB with full flattens.

Why not size-tiered (merge K similar layers)? It needs up to (K - 1) layers
per level for the same write cost, so deeper chains; and why not full flattens
(the previous scheme)? A merge of the whole tree each ``max_depth`` commits,
and an average depth of ``max_depth / 2``.

Chains of at most MIN_DEPTH (5) layers are left alone: lookups through a
few layers cost little more than through one (a warm ``find`` of 100,000
files through the compacted chains: 1.12x one layer), while a merge has
fixed costs (a new layer directory and manifest, chain files rewritten), and
short histories keep sharing their layers with their older snapshots.

The run always ends at the parent's top layer, so the parent (and every
snapshot whose chain starts like it: siblings, the new snapshot) is rewritten
with the merged layer too, and diffs between neighbours keep a long common
chain prefix (:mod:`snapws.ops.diff` costs only the layers after it).

``max_depth`` stays a hard cap, as before: a chain still deeper than that
is flattened whole below ``N`` (``snapws flatten``). With the policy on and
the default of 32 that does not happen (chains stay far shallower), unless
``max_depth`` is set below the policy's depth. ``max_depth`` at its maximum
(:data:`NO_COMPACTION`, 400) turns the policy off and leaves only the cap
(the previous behaviour).

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
from snapws.layers.merge import RunLayer, build_merged_tree
from snapws.model import Entry, decode_manifest, manifest_id
from snapws.ops.workspace import Session
from snapws.store.atomic import fsync_dir, write_atomic
from snapws.store.store import EMPTY_LAYER, Store

#: Each layer must be more than RATIO times the layers above it (below the newest).
RATIO = 4
#: Chains of at most this many layers are left alone (unless ``max_depth`` is lower).
MIN_DEPTH = 5
#: ``max_depth`` from this value on (the configuration's maximum) disables compaction.
NO_COMPACTION = 400
_PLAN_SUFFIX = ".plan"


@dataclass(frozen=True, slots=True)
class FlattenResult:
    layer: LayerId | None  # None: nothing to do
    merged: int  # how many layers became one
    depth_before: int
    depth_after: int
    chains_rewritten: int


# --------------------------------------------------------------------------- policy


def layer_sizes(store: Store, chain: Sequence[LayerId]) -> list[int]:
    """Manifest size in bytes of each layer (a stat each)."""
    out = []
    for lid in chain:
        try:
            out.append(os.stat(store.layer_dir(lid) / "manifest").st_size)
        except OSError as e:
            raise StoreCorruptError(f"layer {lid.short()} is missing its manifest: {e}") from e
    return out


def next_run(
    sizes: Sequence[int],
    max_depth: int,
    tiered: bool = True,
    ratio: int = RATIO,
    floor: int = MIN_DEPTH,
) -> tuple[int, int] | None:
    """The run ``[start, end)`` of a chain (bottom first, with these layer
    sizes) to merge next, or None. The newest layer is never part of it.

    ``tiered``: restore the geometric invariant (see the module docstring)
    if the chain is deeper than ``floor``; then, if it is still deeper than
    ``max_depth``, everything below the newest layer (a full flatten)."""
    n = len(sizes)
    top = n - 2  # the parent's top layer; n - 1 is the newest
    if top < 0:
        return None
    if tiered and top >= 1 and n > floor:
        j, acc = top, sizes[top]
        while j > 0 and sizes[j - 1] <= ratio * acc:
            j -= 1
            acc += sizes[j]
        if j < top:
            return (j, top + 1)
    if n > max_depth and top >= 1:
        return (0, top + 1)
    return None


def compact(store: Store, sid: SnapshotId, max_depth: int) -> list[FlattenResult]:
    """Compaction after a commit made ``sid`` (see the module docstring):
    finish a merge a crash interrupted, then merge what the policy asks for.
    Idempotent. Raises OSError, StoreCorruptError."""
    resume_pending(store)
    tiered = max_depth < NO_COMPACTION
    results = []
    for _ in range(64):  # each merge makes the chain shorter: a few at most
        chain = store.chain_layers(sid)
        run = next_run(layer_sizes(store, chain), max_depth, tiered)
        if run is None:
            break
        start, end = run
        lid, rewritten = merge_run(store, chain, start, end, tip=sid)
        results.append(
            FlattenResult(lid, end - start, len(chain), len(chain) - (end - start) + 1, rewritten)
        )
    return results


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
    crashpoint("flatten:staged")
    plan = {
        "prefix": [lid.hex for lid in chain[:end]],
        "start": start,
        "layer": manifest_id(manifest).hex,
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
    rewritten = rewrite_chains(store, prefix, lid, int(plan["start"]), tips)
    path = _plan_path(store, plan["staging"])
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
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
    tips = {*store.list_refs("heads").values(), *store.list_refs("tags").values()}
    tips.update(ws.head for ws in store.workspaces())
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
    from snapws.ops.checkout import finish_switch, remount_journal

    store, state = session.store, session.state
    backend = backend_for(state)
    before = store.chain(state.head)
    j = remount_journal(state, session.config.author_or_default(), "flatten")
    if not backend.mounts:  # nothing to remount: the journal only marks the merge
        j["new_state"] = state.to_json()
    store.write_journal(j)
    frozen = False
    try:
        result = flatten(store, sid, keep, progress)
        if store.chain(state.head) == before or not backend.mounts:
            store.clear_journal()
            return result
        backend.freeze(session.path, "remount the flattened workspace")
        frozen = True
        crashpoint("flatten:frozen")
    except BaseException:
        if frozen:
            backend.thaw(session.path)
        store.clear_journal()
        raise
    finish_switch(store, j)  # the new mount in place of the frozen one; clear the journal
    session.reload()
    return result
