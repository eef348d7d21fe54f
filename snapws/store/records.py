"""The records of a store, other than refs (format: docs/format.md).

    <store>/snapshots/<id>.json snapshot records, immutable
    <store>/chains/<id>.json    layer chain to mount a snapshot (bottom first)
    <store>/forgotten/<id>      tombstones of snapshots deleted by prune
    <store>/workspaces/<id>/    state.json (the workspace record), ns/<pid> (rootless)
    <store>/journal.json        the interrupted operation, if any

Every record is published with write-temp, fsync, rename, fsync-dir, and
validated when read: a damaged record is a DamagedRecordError naming the file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from snapws.errors import DamagedRecordError, StoreCorruptError
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.model import SnapshotRecord, WorkspaceState
from snapws.store.atomic import fsync_dir, write_atomic
from snapws.store.journal import journal_problem


class RecordStore:
    """The snapshot, chain, tombstone, workspace, namespace and journal
    records of a store. Mixed into :class:`snapws.store.store.Store`."""

    root: Path

    def discard(self, path: Path) -> None:  # pragma: no cover - Store's
        raise NotImplementedError

    # ---- snapshots -----------------------------------------------------
    def write_snapshot(self, rec: SnapshotRecord, chain: list[LayerId]) -> SnapshotId:
        """Publish a snapshot record and its chain (idempotent)."""
        sid = rec.id
        path = self.root / "snapshots" / f"{sid.hex}.json"
        if path.exists():
            return sid  # its chain may have been flattened since: keep that
        self.write_chain(sid, chain)
        write_atomic(path, rec.canonical(), mode=0o444)
        return sid

    def write_chain(self, sid: SnapshotId, chain: list[LayerId]) -> None:
        """Replace the chain used to mount ``sid`` by an equivalent one."""
        write_atomic(
            self.root / "chains" / f"{sid.hex}.json",
            json.dumps([lid.hex for lid in chain]).encode(),
        )

    def has_snapshot(self, sid: SnapshotId) -> bool:
        return (self.root / "snapshots" / f"{sid.hex}.json").is_file()

    def read_snapshot(self, sid: SnapshotId) -> SnapshotRecord:
        path = self.root / "snapshots" / f"{sid.hex}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise StoreCorruptError(f"snapshot {sid.short()} is missing ({path})") from e
        try:
            rec = SnapshotRecord.from_canonical(data)
        except (ValueError, UnicodeError) as e:
            raise DamagedRecordError(f"snapshot record {path} is unreadable: {_reason(e)}") from e
        if rec.id != sid:
            raise DamagedRecordError(f"snapshot record {path} does not hash to its name")
        return rec

    def chain(self, sid: SnapshotId) -> list[LayerId]:
        """The layers to mount for ``sid``, bottom first. Raises
        DamagedRecordError naming the file if it is missing, not a JSON list
        of layer ids, or empty."""
        path = self.root / "chains" / f"{sid.hex}.json"
        try:
            obj = json.loads(path.read_bytes())
            if not isinstance(obj, list) or not obj:
                raise ValueError("not a non-empty JSON list of layer ids")
            return [_layer_id(x) for x in obj]
        except (OSError, ValueError) as e:
            raise DamagedRecordError(
                f"chain of snapshot {sid.short()} ({path}) is unreadable: {_reason(e)}"
            ) from e

    def snapshot_ids(self) -> list[SnapshotId]:
        out = []
        for p in (self.root / "snapshots").iterdir():
            if p.suffix == ".json":
                try:
                    out.append(SnapshotId(p.stem))
                except ValueError:
                    continue
        return sorted(out)

    def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
        return [s for s in self.snapshot_ids() if s.hex.startswith(prefix)]

    # ---- forgetting (snapws prune) ---------------------------------------
    def delete_snapshot(self, sid: SnapshotId) -> bool:
        """Forget ``sid``: write its tombstone ``forgotten/<id>``, then move
        its record (the commit point: from then on the snapshot is gone)
        and its chain into trash/ and delete them. Layers stay (gc's job).
        Idempotent: finishes a half-done deletion. Returns True if the
        record was still there."""
        tomb = self.root / "forgotten" / sid.hex
        if not tomb.parent.is_dir():
            tomb.parent.mkdir(exist_ok=True)
            fsync_dir(self.root)
        if not tomb.exists():
            write_atomic(tomb, json.dumps({"forgotten_ns": time.time_ns()}).encode())
        record = self.root / "snapshots" / f"{sid.hex}.json"
        chain = self.root / "chains" / f"{sid.hex}.json"
        had = record.exists()
        for path in (record, chain):
            if path.exists():
                self.discard(path)
        return had

    def is_forgotten(self, sid: SnapshotId) -> bool:
        """True if ``sid`` was deleted by :meth:`delete_snapshot`."""
        return (self.root / "forgotten" / sid.hex).is_file() and not self.has_snapshot(sid)

    def forgotten_with_prefix(self, prefix: str) -> list[SnapshotId]:
        try:
            names = os.listdir(self.root / "forgotten")
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(prefix):
                try:
                    out.append(SnapshotId(name))
                except ValueError:
                    continue
        return sorted(out)

    # ---- workspaces ----------------------------------------------------
    def workspace_dir(self, wid: WorkspaceId) -> Path:
        return self.root / "workspaces" / wid.hex

    def read_workspace(self, wid: WorkspaceId) -> WorkspaceState:
        """The record of workspace ``wid``. Raises DamagedRecordError naming
        the file if it is missing, unparsable, breaks a rule of the format
        (types, ids, ``upper``/``work`` single names inside its directory) or
        names another workspace."""
        path = self.workspace_dir(wid) / "state.json"
        try:
            state = WorkspaceState.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError) as e:
            raise DamagedRecordError(f"workspace record {path} is unreadable: {_reason(e)}") from e
        if state.id != wid:
            raise DamagedRecordError(
                f"workspace record {path} names another workspace ({state.id.short()})"
            )
        return state

    def write_workspace(self, state: WorkspaceState) -> None:
        path = self.workspace_dir(state.id) / "state.json"
        write_atomic(path, json.dumps(state.to_json(), sort_keys=True, indent=1).encode())

    def workspace_records(self) -> tuple[list[WorkspaceState], list[DamagedRecordError]]:
        """Every readable workspace record, and an error for each damaged one."""
        out, damaged = [], []
        for p in sorted((self.root / "workspaces").iterdir()):
            if (p / "state.json").is_file():
                try:
                    wid = WorkspaceId(p.name)
                except ValueError:
                    continue
                try:
                    out.append(self.read_workspace(wid))
                except DamagedRecordError as e:
                    damaged.append(e)
        return out, damaged

    def workspaces(self) -> list[WorkspaceState]:
        """Every workspace record. Raises DamagedRecordError for a damaged one."""
        out, damaged = self.workspace_records()
        if damaged:
            raise damaged[0]
        return out

    # ---- rootless namespaces (see snapws.backends.userns) ----------------
    def namespace_records(self, wid: WorkspaceId) -> dict[int, dict[str, Any]]:
        """The user+mount namespaces recorded for a rootless workspace, by the
        pid that made each one (``workspaces/<id>/ns/<pid>``). Unreadable
        records (a crash while writing) are skipped."""
        base = self.workspace_dir(wid) / "ns"
        out: dict[int, dict[str, Any]] = {}
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            try:
                obj = json.loads((base / name).read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(obj, dict):
                out[int(name)] = obj
        return dict(sorted(out.items()))

    def write_namespace_record(self, wid: WorkspaceId, pid: int, obj: dict[str, Any]) -> None:
        """Record the namespace that process ``pid`` made (caller holds the lock)."""
        base = self.workspace_dir(wid) / "ns"
        if not base.is_dir():
            base.mkdir(exist_ok=True)
            fsync_dir(base.parent)
        write_atomic(base / str(pid), json.dumps(obj, sort_keys=True).encode())

    def remove_namespace_record(self, wid: WorkspaceId, pid: int) -> None:
        """Forget the namespace record of ``pid`` (its namespace is gone)."""
        (self.workspace_dir(wid) / "ns" / str(pid)).unlink(missing_ok=True)

    def remove_workspace_record(self, wid: WorkspaceId) -> None:
        d = self.workspace_dir(wid)
        if d.exists():
            self.discard(d)

    # ---- journal -------------------------------------------------------
    def write_journal(self, obj: dict[str, Any]) -> None:
        write_atomic(self.root / "journal.json", json.dumps(obj, sort_keys=True).encode())

    def read_journal(self) -> dict[str, Any] | None:
        try:
            data = (self.root / "journal.json").read_bytes()
        except FileNotFoundError:
            return None
        path = self.root / "journal.json"
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise DamagedRecordError(
                f"journal {path} is unreadable: {_reason(e)}", hint=JOURNAL_HINT
            ) from e
        problem = journal_problem(obj)
        if problem is not None:
            raise DamagedRecordError(f"journal {path} is damaged: {problem}", hint=JOURNAL_HINT)
        assert isinstance(obj, dict)
        return obj

    def journal_namespace(self, j: dict[str, Any]) -> str:
        """The branch namespace the journaled operation ``j`` moves refs in:
        its ``namespace`` field (init writes one: its workspace has no
        record yet), else that of the workspace record it names (``ws``),
        else the root namespace ("": store-wide operations, journals
        written before namespaces)."""
        ns = j.get("namespace")
        if isinstance(ns, str):
            return ns
        try:
            return self.read_workspace(WorkspaceId(j["ws"])).namespace
        except (KeyError, TypeError, ValueError, DamagedRecordError):
            return ""

    def clear_journal(self) -> None:
        """Remove the journal of a finished operation. Not synced: a power
        loss that brings it back only makes the next command finish that
        operation again, which every journal's recovery does idempotently
        (what the operation published was durable before this), and the
        next journal's durable write orders this removal before it."""
        try:
            (self.root / "journal.json").unlink()
        except FileNotFoundError:
            return


JOURNAL_HINT = (
    "the interrupted operation cannot be finished from it: move the journal out of the "
    "store (nothing is deleted), then `snapws verify` and `snapws verify --repair`"
)


def _layer_id(x: object) -> LayerId:
    if not isinstance(x, str):
        raise ValueError(f"a layer id is {type(x).__name__}, not a string")
    return LayerId(x)


def _reason(e: Exception) -> str:
    """An exception as a short reason (OS errors without the path: the
    message names the file)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)
