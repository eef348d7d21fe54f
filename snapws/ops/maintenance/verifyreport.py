"""What ``snapws verify`` checks and finds: the data subset to re-hash, the
problem kinds, the report, progress, and :class:`Findings`, the collector
the checks (:mod:`snapws.ops.maintenance.layercheck`, :mod:`snapws.ops.maintenance.verify`) add
problems to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import xxhash

from snapws.ids import LayerId, SnapshotId
from snapws.model import path_to_text
from snapws.store.store import Store

# ---- choosing the files to hash (restic's --read-data-subset) ---------------


@dataclass(frozen=True, slots=True)
class DataSubset:
    """Which files the hash pass reads: slice ``n`` of ``m`` (``n/m``) or a
    fraction (``p%``). A file belongs to a slice by the hash of its layer id
    and path, so the slices ``1/m`` .. ``m/m`` cover every file exactly once
    and a given ``p%`` picks the same files on every run."""

    text: str
    slice_no: int = 1
    slices: int = 1
    permille: int | None = None  # parts per million when given as p%

    @classmethod
    def parse(cls, text: str) -> DataSubset:
        """``"n/m"`` (1 <= n <= m) or ``"p%"`` (0 < p <= 100). Raises ValueError."""
        t = text.strip()
        if t.endswith("%"):
            try:
                pct = float(t[:-1])
            except ValueError:
                raise ValueError(f"{text!r} is not a percentage (e.g. 10%)") from None
            if not 0 < pct <= 100:
                raise ValueError(f"{text!r}: the percentage must be above 0 and at most 100")
            return cls(t, permille=round(pct * 10_000))
        n, sep, m = t.partition("/")
        if not sep or not n.isdigit() or not m.isdigit():
            raise ValueError(f"{text!r} is neither N/M (e.g. 1/5) nor N% (e.g. 10%)")
        if not 1 <= int(n) <= int(m):
            raise ValueError(f"{text!r}: N/M needs 1 <= N <= M")
        return cls(t, slice_no=int(n), slices=int(m))

    def selects(self, lid: LayerId, path: bytes) -> bool:
        h = xxhash.xxh3_64_intdigest(lid.hex.encode() + b"/" + path)
        if self.permille is not None:
            return h % 1_000_000 < self.permille
        return h % self.slices == self.slice_no - 1


# ---- results -------------------------------------------------------------------

#: Problem kinds, for people and for --json. File problems name a layer and a path.
FILE_KINDS = (
    "corrupted",
    "truncated",
    "grown",
    "missing",
    "extra",
    "metadata",
    "unreadable",
    "overlay-xattr",  # an overlayfs attribute snapws never writes (a redirect...)
)
RECORD_KINDS = (
    "bad-snapshot",  # record unreadable or not hashing to its name
    "bad-chain",  # chain file unreadable
    "chain-mismatch",  # the chain's top neither is nor holds the record's layer
    "missing-layer",  # a chain names a layer the store lacks
    "missing-parent",
    "bad-ref",  # unreadable ref or workspace record
    "dangling-ref",  # a ref or workspace HEAD names a missing snapshot
    "bad-manifest",  # missing, unparsable, or not hashing to its layer id
    "bad-workspace",  # workspace record unreadable, breaking the format, or its upperdir gone
    "bad-journal",  # journal.json unparsable or breaking the format
    "bad-remotes",  # remotes.json unparsable or breaking the format
    "bad-cache",  # a blob cache entry that does not parse (rebuilt when used)
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the store. ``affected`` lists the snapshots whose
    chain uses ``layer``; ``what`` names the metadata that differs."""

    kind: str
    message: str
    layer: LayerId | None = None
    path: bytes | None = None
    snapshot: SnapshotId | None = None
    ref: str | None = None
    what: tuple[str, ...] = ()
    affected: tuple[SnapshotId, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "layer": self.layer.hex if self.layer else None,
            "path": path_to_text(self.path) if self.path is not None else None,
            "snapshot": self.snapshot.hex if self.snapshot else None,
            "ref": self.ref,
            "what": list(self.what),
            "affected": [s.hex for s in self.affected],
        }


@dataclass(slots=True)
class VerifyReport:
    """What verify checked and found. ``complete`` is False when
    ``max_duration`` stopped the hash pass early."""

    problems: list[Problem] = field(default_factory=list)
    snapshots_checked: int = 0
    layers_checked: int = 0
    entries_checked: int = 0
    files_checked: int = 0  # regular files whose metadata and size were checked
    files_to_hash: int = 0
    bytes_to_hash: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    complete: bool = True
    subset: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def bytes_per_second(self) -> float:
        return self.bytes_hashed / self.seconds if self.seconds > 0 else 0.0

    def files_per_second(self) -> float:
        return self.files_checked / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "complete": self.complete,
            "subset": self.subset,
            "problems": [p.to_json() for p in self.problems],
            "snapshots_checked": self.snapshots_checked,
            "layers_checked": self.layers_checked,
            "entries_checked": self.entries_checked,
            "files_checked": self.files_checked,
            "files_to_hash": self.files_to_hash,
            "bytes_to_hash": self.bytes_to_hash,
            "files_hashed": self.files_hashed,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
            "throughput": {
                "mb_per_s": round(self.bytes_per_second() / 1e6, 1),
                "files_per_s": round(self.files_per_second(), 1),
            },
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported to the caller's callback: ``phase`` is ``scan`` (counting
    layers) or ``hash`` (counting files and bytes)."""

    phase: str
    done: int
    total: int
    bytes_done: int = 0
    bytes_total: int = 0


ProgressFn = Callable[[Progress], None]


@dataclass(slots=True)
class Findings:
    """The problems of one verify run, as they are found. ``users`` maps a
    layer to the snapshots whose chain uses it (a problem of the layer
    names them as ``affected``)."""

    store: Store
    report: VerifyReport
    users: dict[LayerId, list[SnapshotId]] = field(default_factory=dict)

    def add(
        self,
        kind: str,
        message: str,
        layer: LayerId | None = None,
        path: bytes | None = None,
        **kw: Any,
    ) -> None:
        affected = tuple(self.users.get(layer, ())) if layer is not None else ()
        self.report.problems.append(Problem(kind, message, layer, path, affected=affected, **kw))
