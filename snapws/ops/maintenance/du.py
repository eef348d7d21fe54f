"""``snapws du``: how much disk the snapshots use, as ``zfs list -o
used,refer`` or ``restic stats`` show it.

Sizes are real disk usage: ``st_blocks * 512`` of each inode under
``layers/<id>/`` (the directory, its manifest and tree), an inode counted
once however many paths or layers link it (flatten hardlinks files of old
layers into the new one). A snapshot *refers* to the inodes of its chain's
layers; its *own* bytes are those of inodes that no other counted snapshot's
chain holds (what deleting it alone would free); the rest is *shared*.
Without hardlinks between layers, own bytes are the sizes of the layers only
that snapshot uses.

Read-only: the caller holds the store lock (shared is enough).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from snapws.ids import LayerId, SnapshotId
from snapws.model import SnapshotRecord
from snapws.ops.history.log import log, ref_names
from snapws.store.store import Store

LayerSet = frozenset[LayerId]


@dataclass(frozen=True, slots=True)
class SnapshotUsage:
    """Disk usage of one snapshot, in bytes."""

    id: SnapshotId
    record: SnapshotRecord
    refs: tuple[str, ...]
    own: int
    refer: int
    layers: int  # layers in its chain

    @property
    def shared(self) -> int:
        return self.refer - self.own

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex,
            "refs": list(self.refs),
            "message": self.record.message,
            "own_bytes": self.own,
            "referenced_bytes": self.refer,
            "shared_bytes": self.shared,
            "layers": self.layers,
        }


@dataclass(frozen=True, slots=True)
class LayerUsage:
    """One layer: its size (inodes shared with other layers included) and
    how many of the counted snapshots use it."""

    id: LayerId
    size: int
    snapshots: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id.hex, "bytes": self.size, "snapshots": self.snapshots}


@dataclass(slots=True)
class UsageReport:
    """``snapshots`` in the order counted; ``total`` is the real usage of
    ``layers/``; ``used`` that of the counted snapshots' layers, ``unused``
    the rest (``total == used + unused``)."""

    snapshots: list[SnapshotUsage] = field(default_factory=list)
    layers: list[LayerUsage] = field(default_factory=list)
    total: int = 0
    used: int = 0
    used_layers: int = 0
    unused: int = 0
    unused_layers: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshots": [s.to_json() for s in self.snapshots],
            "store": {
                "total_bytes": self.total,
                "layers": len(self.layers),
                "used_bytes": self.used,
                "used_layers": self.used_layers,
                "unused_bytes": self.unused,
                "unused_layers": self.unused_layers,
            },
            "layers": [lu.to_json() for lu in self.layers],
        }


class LayerSizes:
    """Disk usage of layers, grouped by the set of layers that hold each
    inode. Each layer is walked once (layers never change)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._inodes: dict[tuple[int, int], tuple[int, LayerSet]] = {}
        self._walked: set[LayerId] = set()

    def add(self, lids: Iterable[LayerId]) -> None:
        """Walk the layers not walked yet. Raises OSError."""
        for lid in lids:
            if lid in self._walked:
                continue
            self._walked.add(lid)
            for key, blocks in _disk_inodes(os.fsencode(self.store.layer_dir(lid))):
                got = self._inodes.get(key)
                holders = frozenset((lid,)) if got is None else got[1] | {lid}
                self._inodes[key] = (blocks, holders)

    def by_layer_set(self) -> dict[LayerSet, int]:
        """Bytes of the inodes held by exactly each set of layers."""
        out: dict[LayerSet, int] = {}
        for blocks, holders in self._inodes.values():
            out[holders] = out.get(holders, 0) + blocks
        return out


def _disk_inodes(top: bytes) -> Iterable[tuple[tuple[int, int], int]]:
    """``((dev, ino), st_blocks * 512)`` of ``top`` and everything below it
    (nothing if it is missing)."""
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    yield (st.st_dev, st.st_ino), st.st_blocks * 512
    stack = [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for de in it:
                st = de.stat(follow_symlinks=False)
                yield (st.st_dev, st.st_ino), st.st_blocks * 512
                if de.is_dir(follow_symlinks=False):
                    stack.append(de.path)


def reachable_snapshots(store: Store) -> list[SnapshotId]:
    """Every snapshot reachable from a branch or tag (of any branch namespace:
    they share the store's disk) or a workspace HEAD, newest first."""
    tips = {
        *store.every_ref(("heads", "tags")).values(),
        *(s for ws in store.workspaces() for s in (ws.head, ws.mounted_head)),
    }
    return [e.id for e in log(store, sorted(tips))]


def disk_usage(store: Store, snapshots: list[SnapshotId] | None = None) -> UsageReport:
    """Usage of ``snapshots`` (None: every reachable snapshot), each byte
    being *own* to a snapshot when no other of them refers to it.

    Precondition: the caller holds the store lock. Raises StoreCorruptError
    for unreadable records, OSError if a layer cannot be walked."""
    sids = list(dict.fromkeys(reachable_snapshots(store) if snapshots is None else snapshots))
    chains = {sid: set(store.chain(sid)) for sid in sids}
    users: dict[LayerId, set[SnapshotId]] = {}
    for sid, chain in chains.items():
        for lid in chain:
            users.setdefault(lid, set()).add(sid)
    all_layers = store.layer_ids()
    sizes = LayerSizes(store)
    sizes.add([*all_layers, *users])
    groups = sizes.by_layer_set()
    report = UsageReport()
    own: dict[SnapshotId, int] = {}
    for holders, nbytes in groups.items():
        report.total += nbytes
        snaps: set[SnapshotId] = set()
        for lid in holders:
            snaps |= users.get(lid, set())
        if snaps:
            report.used += nbytes
        else:
            report.unused += nbytes
        if len(snaps) == 1:
            (only,) = snaps
            own[only] = own.get(only, 0) + nbytes
    names = ref_names(store)
    for sid in sids:
        chain = chains[sid]
        report.snapshots.append(
            SnapshotUsage(
                id=sid,
                record=store.read_snapshot(sid),
                refs=tuple(names.get(sid, ())),
                own=own.get(sid, 0),
                refer=sum(n for holders, n in groups.items() if not holders.isdisjoint(chain)),
                layers=len(chain),
            )
        )
    layer_bytes: dict[LayerId, int] = {}
    for holders, nbytes in groups.items():
        for lid in holders:
            layer_bytes[lid] = layer_bytes.get(lid, 0) + nbytes
    for lid in sorted(set(all_layers) | set(users)):
        report.layers.append(LayerUsage(lid, layer_bytes.get(lid, 0), len(users.get(lid, ()))))
    report.used_layers = len(users)
    report.unused_layers = sum(1 for lu in report.layers if lu.snapshots == 0)
    return report
