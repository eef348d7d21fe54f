"""The compaction a commit runs: which layers to merge, and a merge spread
over commits so that no commit waits for much more than its own change.

Policy: size-tiered (:func:`next_run`)
--------------------------------------

The chain is ``[B, L1 .. Lk, N]``: the bottom layer ``B`` (the whole
tree), older layers, and ``N``, the layer the commit just made, which stays
separate (a diff against the parent costs ``N`` alone). Sizes are manifest
sizes in bytes (a stat per layer; proportional to entries). From the
parent's top layer down, a run gathers every layer that is at most as big
as all the layers above it in the run together (RATIO 1); when the run has
FANOUT (4) layers or more, it is merged. So layers of about the same size
are merged once there are four of them, and a layer much bigger than what
came after it (the base, an older merge) is never rewritten for a few
changes: an entry is merged again only when the layers above it have
grown to its own size, about once per level (``log4`` of the history),
where the previous leveled policy (a layer joined once the layers above
reached a quarter of it) merged it about five times per level. Each merged
layer stays in the store (older snapshots' chains use it) and holds its
own copy of every directory it touches (4 KiB each on ext4), so the store
grows with the number of merges an entry goes through: modelled for 1,000
commits of 3 changes on 100,000 files (1,000 directories), merged layers
hold 18,000 directories instead of 46,000 (the commits' own layers 9,700),
at an average depth of 7.7 (14 at most) instead of 4.8 (6). Measured
(bench/bench_depth.py, the same case): the store grew by 49.7x the changed
bytes (91.3x with the leveled policy, 37.8x without compaction); depth
9.0 on average, 21 at most while jobs ran; the slowest commit 6.9x the
median (22x before), in CPU time 7.6x: planning a job (its run's
manifests merged at once). Planned by halves (below), the slowest is
about 3.3x in CPU time; what remains is a publication's fsyncs and a
budget's steps, not planning.

Chains of at most MIN_DEPTH (5) layers are left alone. ``max_depth`` stays
a hard cap: a chain deeper than that is flattened whole below ``N``, in
one go. ``max_depth`` at :data:`NO_COMPACTION` (400) turns the policy off.

Cost: a budget per commit (:func:`compact`)
-------------------------------------------

A commit may spend on merging ``max(MIN_STEP, STEP_FACTOR x its own
layer)`` manifest bytes of entries (24 KiB: about 150 entries, a few ms).
A merge within that is done at once, as before
(:func:`snapws.ops.maintenance.flatten.merge_run`). A bigger one becomes a
job in ``staging/compact-*``, planned over two commits: the first merges
the run's manifests (:func:`snapws.layers.merge.merge_manifest`; it does
nothing else), the next finds the inode groups, an ``lstat`` per file
(:func:`snapws.layers.merge.key_manifest`), and builds half a budget.
Then a budget's worth of entries is built per commit (``job.json`` holds
the phase and position), and the commit that completes it publishes it,
through the same plan-and-rewrite steps as any merge. One job at a time;
smaller merges above its run go on meanwhile (they rewrite what lies above
the job's prefix, which the job's own rewrite keeps). Planning in one go
was the slowest commit of 1,000 (a 14-layer run of 4,700 entries: 80 ms of
CPU, 6.6x the median commit); by halves, reading lines rather than
entries, the first costs about 8 ms, the second about 10.

Crash safety: a job is unpublished work in staging/ (recovery's sweep of
staging/ leaves ``compact-*`` alone; ``gc`` drops one older than its grace).
Making a step again replaces what an interrupted try made; a torn
``job.json``, or a torn first half of its plan, drops the job, and a later
commit plans afresh. The publication is
the merge steps of :mod:`snapws.ops.maintenance.flatten` (``flatten:staged``, plan,
``flatten:published``, ``flatten:chain-rewritten``), finished by
:func:`snapws.ops.maintenance.flatten.resume_pending` after a crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from snapws.errors import StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.layers.merge import BuildStep, TreeBuilder, key_manifest, merge_manifest
from snapws.model import Entry, manifest_id
from snapws.store.store import Store

#: A layer joins the run if it is at most RATIO times the layers above it in the run.
RATIO = 1
#: A run is merged once it has this many layers.
FANOUT = 4
#: Chains of at most this many layers are left alone (unless ``max_depth`` is lower).
MIN_DEPTH = 5
#: ``max_depth`` from this value on (the configuration's maximum) disables compaction.
NO_COMPACTION = 400
#: Manifest bytes of merging a commit may always spend (about 150 entries) ...
MIN_STEP = 24 * 1024
#: ... or this many times its own layer, if more.
STEP_FACTOR = 8
_JOB = "compact"

Job = tuple[Path, dict[str, Any]]  # a merge in progress: its staging directory, its state


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
    floor: int = MIN_DEPTH,
    lowest: int = 0,
) -> tuple[int, int] | None:
    """The run ``[start, end)`` of a chain (bottom first, with these layer
    sizes) to merge next, or None. The newest layer is never part of it.

    ``tiered``: the size-tiered policy (see the module docstring) if the
    chain is deeper than ``floor``, on layers from ``lowest`` up; then, if
    the chain is still deeper than ``max_depth``, everything below the
    newest layer (a full flatten)."""
    n = len(sizes)
    top = n - 2  # the parent's top layer; n - 1 is the newest
    if top < 0:
        return None
    if tiered and n > floor and top > lowest:
        j, acc = top, sizes[top]
        while j > lowest and sizes[j - 1] <= RATIO * acc:
            j -= 1
            acc += sizes[j]
        if top + 1 - j >= FANOUT:
            return (j, top + 1)
    if n > max_depth and top >= 1:
        return (0, top + 1)
    return None


def compact(store: Store, sid: SnapshotId, max_depth: int) -> list[tuple[LayerId, int, int]]:
    """Compaction after a commit made ``sid``: finish a merge a crash
    interrupted, take a step of the pending job, then merge what the policy
    asks for within the commit's budget (a bigger merge becomes the job).
    Returns (layer, layers merged, chains rewritten) of each merge
    published. Raises OSError, StoreCorruptError."""
    from snapws.ops.maintenance.flatten import merge_run, resume_pending

    resume_pending(store)
    chain = store.chain_layers(sid)
    sizes = layer_sizes(store, chain)
    full = max(MIN_STEP, STEP_FACTOR * sizes[-1]) if sizes else MIN_STEP
    budget = full
    done: list[tuple[LayerId, int, int]] = []
    job = _pending_job(store)
    if job is not None and not _wanted(store, job, chain):
        store.discard(job[0])  # its chains moved on (a flatten, a prune): nothing to shorten
        job = None
    tiered = max_depth < NO_COMPACTION
    wanted: tuple[int, int] | None = None  # a run too big for this commit
    for _ in range(64):  # each merge makes the chain shorter: a few at most
        lowest = 0
        if job is not None:
            prefix = [LayerId(x) for x in job[1]["prefix"]]
            lowest = len(prefix) if chain[: len(prefix)] == prefix else 0
        run = next_run(sizes, max_depth, tiered, lowest=lowest)
        if run is None:
            break
        start, end = run
        cost = sum(sizes[start:end])
        capped = len(chain) > max_depth
        if cost > budget and not capped:
            wanted = run
            break
        if capped and job is not None:
            store.discard(job[0])  # the full flatten replaces what it was merging
            job = None
        lid, rewritten = merge_run(store, chain, start, end, tip=sid)
        done.append((lid, end - start, rewritten))
        budget -= cost
        chain = store.chain_layers(sid)
        sizes = layer_sizes(store, chain)
    if job is None and wanted is not None:
        start, end = wanted
        _start_job(store, chain, start, end, sid)  # this commit's share: the job starts next time
    elif job is not None:
        # at least half the budget goes to the job, so that it ends
        _, published = _advance(store, job, max(budget, full // 2))
        if published is not None:
            done.append(published)
    return done


# --------------------------------------------------------------------------- jobs


def _pending_job(store: Store) -> Job | None:
    """The merge in progress (its staging directory and state), if any;
    torn or extra ones are discarded."""
    found: Job | None = None
    for path in sorted((store.root / "staging").glob(_JOB + "-*")):
        try:
            state = json.loads((path / "job.json").read_bytes())
            if not isinstance(state, dict) or found is not None:
                raise ValueError("not the first job")
            for lid in state["prefix"]:
                if not store.has_layer(LayerId(lid)):
                    raise ValueError("a layer of the run is gone")
            found = (path, state)
        except (OSError, ValueError, KeyError, TypeError):
            with suppress(OSError):
                store.discard(path)
    return found


def _start_job(
    store: Store, chain: Sequence[LayerId], start: int, end: int, tip: SnapshotId
) -> Job:
    """Plan the merge of ``chain[start:end]`` as a job, its first half: the
    run's manifests merged (:func:`snapws.layers.merge.merge_manifest`).
    The second half, the inode groups, is the job's first step
    (:func:`_plan_steps`); nothing is built yet."""
    run = chain[start:end]
    try:
        merged, sources = merge_manifest(
            [store.read_manifest(lid) for lid in reversed(run)], start == 0
        )
    except ValueError as e:
        raise StoreCorruptError(
            f"a layer of {run[0].short()}..{run[-1].short()} has an unreadable manifest: {e}"
        ) from e
    staging = store.new_staging(_JOB)
    (staging / "merged").write_bytes(merged)
    (staging / "sources").write_bytes(b"".join(b"%d\n" % source for source in sources))
    (staging / "tree").mkdir(mode=0o700)
    state = {
        "prefix": [lid.hex for lid in chain[:end]],
        "start": start,
        "layer": None,  # the merged manifest's id, once its hardlink groups are known
        "tip": tip.hex,
        "phase": "keys",
        "offset": 0,
        "manifest_offset": 0,
        "copies": {},
    }
    _save(staging, state)
    return staging, state


def _plan_steps(store: Store, staging: Path, state: dict[str, Any], trees: Sequence[bytes]) -> None:
    """The job's second half of planning (phase ``keys``): the merged
    entries' inode groups (:func:`snapws.layers.merge.key_manifest`) and
    the manifest it publishes, written as ``steps`` (a line of "source key
    alias" for each manifest line: built in the manifest's order, sorted by
    path, parents first) and ``dirs`` (manifest offsets of directories,
    children first). Raises ValueError (a damaged plan), OSError."""
    sources = [int(x) for x in (staging / "sources").read_bytes().split()]
    manifest, keyed = key_manifest(trees, (staging / "merged").read_bytes(), sources)
    meta, dirs, at = [], [], 0
    for line, k in zip(manifest.splitlines(keepends=True), keyed, strict=True):
        meta.append(b"%d %d %d\n" % (k.source, k.key, k.alias))
        if k.is_dir:
            dirs.append(b"%d\n" % at)
        at += len(line)
    (staging / "steps").write_bytes(b"".join(meta))
    (staging / "dirs").write_bytes(b"".join(reversed(dirs)))
    store.write_pending_manifest(staging, manifest)
    state.update(layer=manifest_id(manifest).hex, phase="steps", offset=0, manifest_offset=0)
    _save(staging, state)  # ("merged" and "sources" go with steps/ at the publication)


def _wanted(store: Store, job: Job, chain: Sequence[LayerId]) -> bool:
    """True if the chain being compacted, or the one the job was planned
    on, still starts with the job's prefix."""
    prefix = [LayerId(x) for x in job[1]["prefix"]]
    if list(chain[: len(prefix)]) == prefix:
        return True
    try:
        return store.chain_layers(SnapshotId(job[1]["tip"]))[: len(prefix)] == prefix
    except (StoreCorruptError, ValueError, KeyError):
        return False


def _advance(store: Store, job: Job, budget: int) -> tuple[int, tuple[LayerId, int, int] | None]:
    """Build up to ``budget`` bytes of the job's entries; publish it when
    built. Returns (budget left, the merge if published)."""
    from snapws.ops.maintenance.flatten import publish_staged

    staging, state = job
    prefix = [LayerId(x) for x in state["prefix"]]
    start = int(state["start"])
    trees = [os.fsencode(store.layer_tree(lid)) for lid in reversed(prefix[start:])]
    if state["phase"] == "keys":  # the second half of planning, and half the budget's steps
        try:
            _plan_steps(store, staging, state, trees)
        except (ValueError, FileNotFoundError):  # torn by a crash: a later commit plans afresh
            store.discard(staging)
            return budget, None
        budget //= 2
    copies = {int(k): os.fsencode(v) for k, v in state["copies"].items()}
    builder = TreeBuilder(trees, os.fsencode(staging / "tree"), store.xattr_form, copies)
    while budget > 0 and state["phase"] != "built":
        name = state["phase"]
        with open(staging / name, "rb") as f, open(staging / "manifest.pending", "rb") as m:
            f.seek(int(state["offset"]))
            m.seek(int(state["manifest_offset"]))
            steps: list[BuildStep] = []
            while budget > 0 and (line := f.readline()):
                if name == "dirs":
                    m.seek(int(line))
                entry = m.readline()
                budget -= len(entry)
                steps.append(_step(entry, line if name == "steps" else None))
            offset, manifest_offset = f.tell(), m.tell()
            at_end = not f.read(1)
        if name == "steps":
            builder.make(steps)
        else:
            builder.finish_dirs(step.entry for step in steps)
        state["offset"], state["manifest_offset"] = offset, manifest_offset
        if at_end:
            state["phase"] = "dirs" if name == "steps" else "built"
            state["offset"] = state["manifest_offset"] = 0
    state["copies"] = {str(k): os.fsdecode(v) for k, v in builder.copies.items()}
    if state["phase"] != "built":
        _save(staging, state)
        return budget, None
    for name in ("steps", "dirs", "merged", "sources", "job.json"):
        (staging / name).unlink(missing_ok=True)
    tip = SnapshotId(state["tip"])
    lid, rewritten = publish_staged(store, staging, LayerId(state["layer"]), prefix, start, tip)
    return budget, (lid, len(prefix) - start, rewritten)


def _save(staging: Path, state: dict[str, Any]) -> None:
    """The job's state, replaced atomically, not synced: after a crash a
    torn state drops the job, and an older one makes its steps again."""
    tmp = staging / "job.json.tmp"
    tmp.write_bytes(json.dumps(state).encode())
    os.replace(tmp, staging / "job.json")


def _step(entry_line: bytes, meta: bytes | None) -> BuildStep:
    """A step from its manifest line and its line of steps/ (None: a
    directory's attributes, in the dirs phase)."""
    try:
        entry = Entry.from_json(json.loads(entry_line))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise StoreCorruptError(f"a merge in progress has an unreadable line: {e}") from e
    if meta is None:
        return BuildStep(entry, None)
    source, key, alias = (int(x) for x in meta.split())
    return BuildStep(entry, None if source < 0 else source, key, alias == 1)
