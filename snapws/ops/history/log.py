"""``snapws log``, ``show`` and ``reflog``: reading history."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from snapws.ids import SnapshotId
from snapws.model import ReflogEntry, SnapshotRecord
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class LogEntry:
    id: SnapshotId
    record: SnapshotRecord
    refs: tuple[str, ...]  # branch and tag names pointing here ("tag: v1")
    forgotten: tuple[SnapshotId, ...] = ()  # parents deleted by `snapws prune`


def ref_names(store: Store) -> dict[SnapshotId, list[str]]:
    out: dict[SnapshotId, list[str]] = {}
    for name, sid in store.list_refs("heads").items():
        out.setdefault(sid, []).append(name)
    for name, sid in store.list_refs("tags").items():
        out.setdefault(sid, []).append(f"tag: {name}")
    return out


def log(store: Store, starts: list[SnapshotId], limit: int | None = None) -> list[LogEntry]:
    """Snapshots reachable from ``starts``, newest first (by time, then id),
    each once; at most ``limit`` of them. History stops at parents that
    ``snapws prune`` forgot (listed in each entry's ``forgotten``)."""
    names = ref_names(store)
    seen: set[SnapshotId] = set()
    heap: list[tuple[int, str, SnapshotId]] = []
    cache: dict[SnapshotId, SnapshotRecord] = {}

    def push(sid: SnapshotId) -> None:
        if sid in seen:
            return
        seen.add(sid)
        rec = store.read_snapshot(sid)
        cache[sid] = rec
        heapq.heappush(heap, (-rec.time_ns, sid.hex, sid))

    for s in starts:
        push(s)
    out: list[LogEntry] = []
    while heap and (limit is None or len(out) < limit):
        _, _, sid = heapq.heappop(heap)
        rec = cache[sid]
        gone = tuple(p for p in rec.parents if not store.has_snapshot(p) and store.is_forgotten(p))
        out.append(LogEntry(sid, rec, tuple(names.get(sid, ())), gone))
        for p in rec.parents:
            if p not in gone:
                push(p)
    return out


def all_ref_heads(store: Store, extra: list[SnapshotId]) -> list[SnapshotId]:
    """Every branch, tag and workspace HEAD of the store's branch namespace
    (for ``log --all``)."""
    heads = set(extra)
    heads.update(store.list_refs("heads").values())
    heads.update(store.list_refs("tags").values())
    heads.update(ws.head for ws in store.workspaces() if ws.namespace == store.namespace)
    return sorted(heads)


def reflog(store: Store, ref: str) -> list[ReflogEntry]:
    """Moves of ``ref``, newest first."""
    return list(reversed(store.read_reflog(ref)))
