"""The journals of the working-tree verbs, typed: what ``journal.json`` holds
while an init, commit or switch (checkout, reset, flatten's and repair's
remount) is on its way, for every backend. Each has ``to_json`` and
``from_json`` like the snapshot record; a damaged journal is an error naming
the file, never a TypeError. docs/format.md lists the fields.

``part`` is the workspace backend's own part (JSON values only: see
:meth:`snapws.backends.base.Backend.commit_part`, ``plan_switch``, ``adopt``
and ``plan_start``); ``shown`` says the backend's :meth:`show` (or
:meth:`install`) changed the working tree in place already, so that a
finish run again after a crash does not write over later edits.

Journals written by snapws before one flow served every backend (an
upgrade with an operation pending) are read too: their fields are mapped
onto these (:func:`from_legacy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapws.errors import DamagedRecordError
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.model import SnapshotRecord, WorkspaceState
from snapws.store.store import Store


@dataclass(slots=True)
class CommitJournal:
    """A commit: the layer ``layer`` staged in ``staging`` becomes snapshot
    ``record`` on ``chain``; ``new_state`` is what the workspace records
    after it (HEAD moved; the backend's new directories named)."""

    ws: WorkspaceId
    staging: str
    layer: LayerId
    record: SnapshotRecord
    chain: list[LayerId]
    branch: str | None
    old_head: SnapshotId
    #: None only in a journal of an earlier snapws (see :func:`from_legacy`)
    new_state: WorkspaceState | None
    max_depth: int
    dedup: bool
    part: dict[str, Any] = field(default_factory=dict)
    shown: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "commit",
            "ws": self.ws.hex,
            "staging": self.staging,
            "layer": self.layer.hex,
            "record": self.record.canonical().decode(),
            "chain": [x.hex for x in self.chain],
            "branch": self.branch,
            "old_head": self.old_head.hex,
            "new_state": self.new_state.to_json() if self.new_state else None,
            "max_depth": self.max_depth,
            "dedup": self.dedup,
            "part": self.part,
            "shown": self.shown,
        }

    @classmethod
    def from_json(cls, j: dict[str, Any]) -> CommitJournal:
        return cls(
            WorkspaceId(j["ws"]),
            _name(j["staging"]),
            LayerId(j["layer"]),
            SnapshotRecord.from_canonical(j["record"].encode()),
            [LayerId(x) for x in j["chain"]],
            _opt_str(j["branch"]),
            SnapshotId(j["old_head"]),
            WorkspaceState.from_json(j["new_state"]) if j["new_state"] is not None else None,
            int(j.get("max_depth") or 0),
            bool(j.get("dedup")),
            _part(j.get("part", {})),
            bool(j.get("shown", False)),
        )


@dataclass(slots=True)
class SwitchJournal:
    """A switch of the workspace to ``new_state`` (checkout, reset, or a
    remount on an equivalent chain): refs to create or move, HEAD's reflog
    entry (none when not ``log``)."""

    ws: WorkspaceId
    old_head: SnapshotId
    new_state: WorkspaceState
    who: str
    message: str
    time_ns: int
    create_ref: tuple[str, SnapshotId] | None = None
    move_ref: tuple[str, SnapshotId] | None = None
    log: bool = True
    part: dict[str, Any] = field(default_factory=dict)
    shown: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "switch",
            "ws": self.ws.hex,
            "old_head": self.old_head.hex,
            "new_state": self.new_state.to_json(),
            "who": self.who,
            "message": self.message,
            "time_ns": self.time_ns,
            "create_ref": [self.create_ref[0], self.create_ref[1].hex] if self.create_ref else None,
            "move_ref": [self.move_ref[0], self.move_ref[1].hex] if self.move_ref else None,
            "log": self.log,
            "part": self.part,
            "shown": self.shown,
        }

    @classmethod
    def from_json(cls, j: dict[str, Any]) -> SwitchJournal:
        return cls(
            WorkspaceId(j["ws"]),
            SnapshotId(j["old_head"]),
            WorkspaceState.from_json(j["new_state"]),
            str(j["who"]),
            str(j["message"]),
            int(j.get("time_ns") or 0),
            _ref(j.get("create_ref")),
            _ref(j.get("move_ref")),
            bool(j.get("log", True)),
            _part(j.get("part", {})),
            bool(j.get("shown", False)),
        )


@dataclass(slots=True)
class InitJournal:
    """A new workspace ``state``: on the base layer ``layer`` staged in
    ``staging`` from its directory (None until hashed: a crash before
    rolls back), or on the stored snapshot ``snapshot`` (``init --from``,
    clone, a cache restore)."""

    state: WorkspaceState
    staging: str
    message: str
    author: str
    time_ns: int
    tz: int
    dedup: bool
    layer: LayerId | None = None
    snapshot: SnapshotId | None = None
    part: dict[str, Any] = field(default_factory=dict)
    shown: bool = False

    @property
    def path(self) -> str:
        return self.state.path

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "init",
            "ws": self.state.id.hex,
            "path": self.state.path,  # discovery finds an unfinished init by it
            "state": self.state.to_json(),
            "staging": self.staging,
            "message": self.message,
            "author": self.author,
            "time_ns": self.time_ns,
            "tz": self.tz,
            "dedup": self.dedup,
            "layer": self.layer.hex if self.layer else None,
            "snapshot": self.snapshot.hex if self.snapshot else None,
            "namespace": self.state.namespace,
            "part": self.part,
            "shown": self.shown,
        }

    @classmethod
    def from_json(cls, j: dict[str, Any]) -> InitJournal:
        return cls(
            WorkspaceState.from_json(j["state"]),
            _name(j["staging"]),
            str(j["message"]),
            str(j["author"]),
            int(j["time_ns"]),
            int(j["tz"]),
            bool(j.get("dedup")),
            LayerId(j["layer"]) if j.get("layer") else None,
            SnapshotId(j["snapshot"]) if j.get("snapshot") else None,
            _part(j.get("part", {})),
            bool(j.get("shown", False)),
        )


Journal = CommitJournal | SwitchJournal | InitJournal


def mark_shown(store: Store, j: Journal) -> None:
    """Record in ``j`` and in the store's journal that the backend changed the
    working tree in place (a finish run again must not write over edits
    made since)."""
    j.shown = True
    store.write_journal(j.to_json())


def parse(j: dict[str, Any], where: Path) -> Journal | None:
    """The typed journal of an init, commit or switch (None for the other
    operations' journals). Raises DamagedRecordError naming ``where``."""
    op = j.get("op")
    try:
        j = from_legacy(j)
        if op == "init":
            return InitJournal.from_json(j)
        if op in ("commit", "plain-commit"):
            return CommitJournal.from_json(j)
        if op in ("switch", "plain-switch"):
            return SwitchJournal.from_json(j)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DamagedRecordError(f"the journal {where} is damaged: {op} {e!r}") from None
    return None


def from_legacy(j: dict[str, Any]) -> dict[str, Any]:
    """Map a journal of the earlier per-backend flows onto today's fields
    (unchanged when it is of today's form)."""
    op = j.get("op")
    if "part" in j:
        return j
    part: dict[str, Any]
    if op == "init" and "state" not in j:
        name = j.get("backend", "kernel")
        state = {
            "id": j["ws"],
            "path": j["path"],
            "head": j.get("snapshot") or "0" * 32,
            "branch": j["branch"],
            "upper": j.get("upper", "plain"),
            "work": j.get("work", "plain"),
            "backend": name,
        }
        if j.get("namespace"):
            state["namespace"] = j["namespace"]
        part = {"index_staging": j["index_staging"]} if j.get("index_staging") else {}
        return {**j, "state": state, "part": part}
    if op == "commit":  # an overlay commit: U's fields at the top
        keys = ("upper", "prune", "carry", "upper_form", "new_upper", "new_work")
        part = {k: j[k] for k in keys if k in j}
        return {**j, "part": part, "new_state": None}
    if op == "plain-commit":
        return {**j, "part": {}, "new_state": None}
    if op == "switch":
        part = {}
        if j.get("prune"):
            part["prune_kept"] = j["prune"]
        if j.get("carry"):
            part.update(carry_from=j["old_upper"], carry=j["carry"])
        return {**j, "part": part}
    if op == "plain-switch":
        part = {k: j[k] for k in ("paths", "meta_only", "keep") if k in j}
        message = j.get("message")  # None: a restore, which moved no HEAD
        return {
            **j,
            "part": part,
            "shown": bool(j.get("rewritten")),
            "message": message or "",
            "log": message is not None,
        }
    return j


def _name(v: object) -> str:
    if not isinstance(v, str) or not v or "/" in v or v in (".", ".."):
        raise ValueError(f"not a single path component: {v!r}")
    return v


def _opt_str(v: object) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError(f"not a string: {v!r}")
    return v


def _part(v: object) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"the backend's part is not an object: {v!r}")
    return v


def _ref(v: object) -> tuple[str, SnapshotId] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], str):
        raise ValueError(f"not a [name, snapshot] pair: {v!r}")
    return v[0], SnapshotId(v[1])
