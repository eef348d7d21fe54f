"""``snapws verify``: re-hash layers against their manifests and check that
the store's records hang together.

Two passes over the layers (:mod:`snapws.ops.maintenance.layercheck`). The *scan* walks
every chosen layer tree and compares each node's metadata and size with the
layer's manifest; it costs one lstat per node. The *hash* pass then reads
the files whose size matched (all of them, or a deterministic subset) in
the shared hashing pool, each inode once. Structural checks (here) cover the
records: a snapshot record hashes to its name, its chain and parents exist,
refs and workspace HEADs point at snapshots; workspace records, the journal,
remotes and the blob cache are :mod:`snapws.ops.maintenance.storecheck`'s.

Read-only: the caller holds the store lock (shared is enough).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from snapws.errors import StoreCorruptError
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.layers.equivalence import covers
from snapws.layers.hashing import DEFAULT_THREADS
from snapws.model import SnapshotRecord, decode_manifest
from snapws.ops.maintenance.layercheck import HashJobs, check_layer, hash_pass
from snapws.ops.maintenance.verifyreport import (
    FILE_KINDS,
    RECORD_KINDS,
    DataSubset,
    Findings,
    Problem,
    Progress,
    ProgressFn,
    VerifyReport,
)
from snapws.store.refs import ref_problems
from snapws.store.store import EMPTY_LAYER, Store

__all__ = [
    "FILE_KINDS",
    "RECORD_KINDS",
    "DataSubset",
    "Problem",
    "Progress",
    "ProgressFn",
    "VerifyReport",
    "verify",
]

# ---- the check -------------------------------------------------------------------


def verify(
    store: Store,
    snapshots: list[SnapshotId] | None = None,
    subset: DataSubset | None = None,
    max_duration: float | None = None,
    threads: int = DEFAULT_THREADS,
    progress: ProgressFn | None = None,
) -> VerifyReport:
    """Check the layers of ``snapshots``' chains (None: every layer, every
    record and every ref of the store) and return what is wrong.

    ``subset`` limits which files are re-hashed (metadata and sizes of all
    are checked); ``max_duration`` (seconds from the start) stops the hash
    pass early, leaving ``complete`` False. Precondition: the caller holds the
    store lock. Reads only; never raises for damage it finds (it reports it);
    raises OSError only if the store's directories cannot be listed."""
    started = time.monotonic()
    report = VerifyReport(subset=subset.text if subset else None)
    run = Findings(store, report)
    everything = snapshots is None
    all_sids = store.snapshot_ids()
    check = set(all_sids if everything else snapshots or ())
    chains = _read_chains(run, all_sids, check)
    for sid, chain in chains.items():
        for lid in chain:
            run.users.setdefault(lid, []).append(sid)
    _check_snapshots(run, chains, check)
    if everything:
        _check_refs(run)
        _check_other_records(run)
        layers = sorted(set(store.layer_ids()) | {lid for c in chains.values() for lid in c})
    else:
        layers = _unique(lid for sid in snapshots or () for lid in chains.get(sid, ()))
    layers = [lid for lid in layers if (store.layer_dir(lid)).is_dir()]
    jobs: HashJobs = {}
    for n, lid in enumerate(layers, 1):
        check_layer(run, lid, subset, jobs)
        if progress is not None:
            progress(Progress("scan", n, len(layers)))
    report.layers_checked = len(layers)
    report.snapshots_checked = len(all_sids) if everything else len(snapshots or ())
    deadline = started + max_duration if max_duration is not None else None
    hash_pass(run, jobs, threads, deadline, progress)
    report.problems.sort(key=_problem_order)
    report.seconds = time.monotonic() - started
    return report


def _unique(items: Iterable[LayerId]) -> list[LayerId]:
    return list(dict.fromkeys(items))


def _problem_order(p: Problem) -> tuple[str, bytes, str]:
    return (p.layer.hex if p.layer else "", p.path or b"", p.kind)


def _read_chains(
    run: Findings, all_sids: list[SnapshotId], check: set[SnapshotId]
) -> dict[SnapshotId, list[LayerId]]:
    """Chains of every snapshot whose chain is readable (problems for those
    in ``check`` whose chain is not)."""
    chains: dict[SnapshotId, list[LayerId]] = {}
    for sid in all_sids:
        try:
            chains[sid] = run.store.chain(sid)
        except StoreCorruptError as e:
            if sid in check:
                run.add("bad-chain", e.message, snapshot=sid)
    return chains


def _check_snapshots(
    run: Findings, chains: dict[SnapshotId, list[LayerId]], check: set[SnapshotId]
) -> None:
    """Records of the snapshots in ``check``: readable, hashing to their
    name, with existing parents and chain layers."""
    store = run.store
    for sid in sorted(check):
        try:
            rec = store.read_snapshot(sid)
        except StoreCorruptError as e:
            run.add("bad-snapshot", e.message, snapshot=sid)
            continue
        for parent in rec.parents:
            if not store.has_snapshot(parent) and not store.is_forgotten(parent):
                run.add(
                    "missing-parent",
                    f"snapshot {sid.short()} names parent {parent.short()}, which is missing",
                    snapshot=sid,
                )
        for lid in chains.get(sid, ()):
            if not store.has_layer(lid) and not store.layer_dir(lid).is_dir():
                run.add(
                    "missing-layer",
                    f"the chain of snapshot {sid.short()} names layer {lid.short()}, "
                    "which is missing",
                    layer=lid,
                    snapshot=sid,
                )
        _check_chain_matches(run, sid, rec, chains.get(sid))


def _check_chain_matches(
    run: Findings, sid: SnapshotId, rec: SnapshotRecord, chain: list[LayerId] | None
) -> None:
    """The chain shows the record's layer on top: its top layer is that
    layer, or a merged layer (compaction) that holds it (:func:`covers`).
    Skipped while a layer or manifest is missing or unreadable (reported
    elsewhere), and when the record's layer is gone (a gc older than the rule
    that keeps it): nothing then says what the top should hold."""
    store = run.store
    ch = [lid for lid in chain or () if lid != EMPTY_LAYER]
    top = ch[-1] if ch else EMPTY_LAYER
    if chain is None or rec.layer in (top, EMPTY_LAYER) or not store.has_layer(rec.layer):
        return
    try:
        top_entries = decode_manifest(store.read_manifest(top))
        own = decode_manifest(store.read_manifest(rec.layer))
    except (StoreCorruptError, ValueError):
        return
    if not covers(top_entries, own, len(ch) == 1):
        run.add(
            "chain-mismatch",
            f"the chain of snapshot {sid.short()} does not show its record's layer "
            f"{rec.layer.short()}: its top layer {top.short()} lacks or changes entries of it",
            layer=top,
            snapshot=sid,
        )


def _check_refs(run: Findings) -> None:
    store = run.store
    for kind, message, ref in ref_problems(store):  # the refs of every branch namespace
        run.add(kind, message, ref=ref)
    for p in sorted((store.root / "workspaces").iterdir()):
        if not (p / "state.json").is_file():
            continue
        ref = f"workspaces/{p.name}/HEAD"
        try:
            state = store.read_workspace(WorkspaceId(p.name))
        except (StoreCorruptError, ValueError):
            continue  # reported by _check_other_records
        if not store.has_snapshot(state.head):
            run.add(
                "dangling-ref",
                f"the HEAD of workspace {state.path} points to missing snapshot "
                f"{state.head.short()}",
                ref=ref,
            )
        if state.base is not None and not store.has_snapshot(state.base):
            run.add(
                "dangling-ref",
                f"workspace {state.path} is held on missing snapshot {state.base.short()} "
                "(the chain its mount shows)",
                ref=ref,
            )


def _check_other_records(run: Findings) -> None:
    """Workspace records, journal, remotes and blob cache (ops.storecheck)."""
    from snapws.ops.maintenance.storecheck import other_record_problems

    for p in other_record_problems(run.store):
        run.add(p.kind, p.message, ref=p.ref)
