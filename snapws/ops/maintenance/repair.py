"""``snapws verify --repair``: mend what can be mended from what is on disk,
never deleting user data, and name what cannot be mended.

- A damaged (or missing) workspace record is rewritten from what is on disk:
  the workspace's directory in the store (its ``upper-*`` and ``work-*``
  directories), the overlay mounted from them (its path and upperdir), the
  workspace's HEAD reflog (its last snapshot) and what the damaged record
  still says where that is valid. Upperdirs the new record does not name are
  renamed ``kept-upper-*`` (never swept), so no uncommitted file is dropped.
- Blob cache entries that do not parse are removed (a cache: rebuilt when
  used).
- A layer that chains name but the store lacks is fetched back from a
  configured remote whose image holds it (:mod:`snapws.ops.transfer.refetch`).

Everything else (snapshot records, chains, the journal, the remotes file) is
reported as not repairable: restore it from a backup.

Precondition: the caller holds the store lock exclusively.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapws.backends import BACKEND_NAMES, get_backend
from snapws.errors import SnapwsError, StoreCorruptError
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.model import WorkspaceState, dir_name_problem, namespace_problem
from snapws.mounts import mounter
from snapws.ops.maintenance.storecheck import cache_problems, store_damage
from snapws.store.store import EMPTY_LAYER, Store


@dataclass(slots=True)
class RepairReport:
    """What was repaired, and what could not be (each a sentence naming the
    file or layer)."""

    repaired: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"repaired": self.repaired, "unrepairable": self.unrepairable}


class _CannotRepair(Exception):
    pass


def repair(store: Store, fetch_layers: bool = True) -> RepairReport:
    """Repair ``store`` as the module says. Returns what was done and what
    was not. Raises OSError only if the store cannot be listed or written."""
    report = RepairReport()
    for wsdir in sorted((store.root / "workspaces").iterdir()):
        _repair_workspace_dir(store, wsdir, report)
    for p in cache_problems(store):
        assert p.path is not None
        p.path.unlink(missing_ok=True)
        report.repaired.append(f"removed the damaged blob cache entry {p.path}")
    missing = _missing_layers(store)
    if missing and fetch_layers:
        from snapws.ops.transfer.refetch import refetch_layers

        fetched = refetch_layers(store, set(missing))
        for lid, source in fetched.items():
            report.repaired.append(f"fetched layer {lid.short()} back from {source}")
        if fetched:
            _remount_users(store, set(fetched), report)
    for message in store_damage(store):
        report.unrepairable.append(message)
    return report


def _remount_users(store: Store, layers: set[LayerId], report: RepairReport) -> None:
    """Mount again the workspaces whose HEAD's chain holds one of ``layers``
    (their mount still shows the deleted directory), keeping their upperdir:
    a switch to the same record with a new workdir, journaled as flatten's."""
    from snapws.backends import backend_for
    from snapws.ops.worktree.checkout import finish_switch, remount_journal

    states, _ = store.workspace_records()
    for state in states:
        backend = backend_for(state)
        try:
            uses = layers & set(store.chain(state.head))
        except StoreCorruptError:
            continue
        if not uses or backend.mount_state(store, state) != "mounted":
            continue  # (a directory that is the working tree shows no layer)
        j = remount_journal(state, "snapws verify --repair", "repair")
        store.write_journal(j.to_json())
        try:
            backend.quiesce(store, state, "mount it again on the fetched layers")
        except BaseException:
            store.clear_journal()
            raise
        finish_switch(store, j)
        report.repaired.append(f"mounted {state.path} again on the fetched layers")


def _missing_layers(store: Store) -> dict[LayerId, list[SnapshotId]]:
    out: dict[LayerId, list[SnapshotId]] = {}
    for sid in store.snapshot_ids():
        try:
            chain = store.chain(sid)
        except StoreCorruptError:
            continue
        for lid in chain:
            if lid != EMPTY_LAYER and not store.layer_tree(lid).is_dir():
                out.setdefault(lid, []).append(sid)
    return out


def _repair_workspace_dir(store: Store, wsdir: Path, report: RepairReport) -> None:
    try:
        wid = WorkspaceId(wsdir.name)
    except ValueError:
        return  # not a workspace's directory: verify names it
    record = wsdir / "state.json"
    if not record.exists() and not any(p.name.startswith("upper-") for p in wsdir.iterdir()):
        return
    try:
        store.read_workspace(wid)
        return  # sound
    except StoreCorruptError:
        pass
    try:
        state, kept = rebuild_workspace_record(store, wid)
    except _CannotRepair as e:
        report.unrepairable.append(f"workspace record {record}: {e}")
        return
    if record.exists():
        saved = wsdir / f"state.json.damaged-{os.getpid()}"
        os.rename(record, saved)
        report.repaired.append(f"kept the damaged record as {saved}")
    store.write_workspace(state)
    report.repaired.append(
        f"rewrote workspace record {record}: {state.path} at {state.head.short()} "
        f"({'branch ' + state.branch if state.branch else 'detached'}), upperdir {state.upper}"
    )
    for name in kept:
        report.repaired.append(
            f"kept the upperdir {wsdir / name} that the record does not name "
            "(its files are not in the workspace: copy what you need from it)"
        )


def rebuild_workspace_record(store: Store, wid: WorkspaceId) -> tuple[WorkspaceState, list[str]]:
    """A workspace record for ``wid`` from what is on disk, and the names of
    upperdirs it does not use, renamed ``kept-upper-*`` so that nothing sweeps
    them. Raises _CannotRepair saying what is unknown."""
    wsdir = store.workspace_dir(wid)
    old = _loose_record(wsdir / "state.json")
    mount = _mount_of(wsdir)
    uppers = sorted(
        (p for p in wsdir.iterdir() if p.name.startswith("upper-") and p.is_dir()),
        key=lambda p: p.stat().st_mtime_ns,
    )
    backend = old.get("backend") if old.get("backend") in BACKEND_NAMES else None
    if backend is None:  # the backend whose mount it is (kernel: none is)
        owners = [n for n in BACKEND_NAMES if mount and get_backend(n).owner_of(mount.mountpoint)]
        backend = owners[0] if owners else BACKEND_NAMES[0]
    mounted = None
    if mount is not None and mount.super_options.get("upperdir"):
        mounted = (
            os.path.basename(str(mount.super_options["upperdir"])),
            os.path.basename(str(mount.super_options.get("workdir") or "")),
        )
    recorded = (old.get("upper"), old.get("work"))
    upper, work = get_backend(backend).rebuild_dirs(store, wid, recorded, mounted)
    head = _head(store, wid, old)
    path = _path(mount, old)
    ns = old.get("namespace")
    ns = ns if isinstance(ns, str) and namespace_problem(ns) is None else ""
    branch = _branch(store.in_namespace(ns), head, old.get("branch"))
    state = WorkspaceState(wid, path, head, branch, upper, work, backend, ns)
    kept = []
    for p in uppers:
        if p.name != upper:
            os.rename(p, wsdir / f"kept-{p.name}")
            kept.append(f"kept-{p.name}")
    return state, kept


def _valid_name(v: object) -> bool:
    return isinstance(v, str) and dir_name_problem(v) is None


def _loose_record(path: Path) -> dict[str, Any]:
    """Whatever of a damaged record still parses ({} if nothing)."""
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _mount_of(wsdir: Path) -> mounter.MountInfo | None:
    """The topmost mount whose upperdir lies in ``wsdir`` (overlay)."""
    real = os.path.realpath(wsdir)
    found = None
    for info in mounter.read_mountinfo():
        upper = info.super_options.get("upperdir")
        if upper and os.path.dirname(os.path.realpath(upper)) == real:
            found = info  # later lines are newer mounts
    return found


def _head(store: Store, wid: WorkspaceId, old: dict[str, Any]) -> SnapshotId:
    last = store.last_reflog(f"workspaces/{wid.hex}/HEAD")
    if last is not None and last.new is not None and store.has_snapshot(last.new):
        return last.new
    try:
        sid = SnapshotId(old["head"])
    except (KeyError, TypeError, ValueError):
        sid = None
    if sid is not None and store.has_snapshot(sid):
        return sid
    raise _CannotRepair("its HEAD is unknown (no reflog entry names an existing snapshot)")


def _path(mount: mounter.MountInfo | None, old: dict[str, Any]) -> str:
    if mount is not None:
        return str(mount.mountpoint)
    path = old.get("path")
    if isinstance(path, str) and path.startswith("/") and "\0" not in path:
        return os.path.normpath(path)
    raise _CannotRepair(
        "its path is unknown (not mounted, and the record does not say); "
        "write the record by hand (docs/format.md) or make a new workspace"
    )


def _branch(store: Store, head: SnapshotId, old: object) -> str | None:
    """The old record's branch if it points at ``head``, else the one branch
    that does, else None (detached)."""
    try:
        if isinstance(old, str) and store.read_ref("heads", old) == head:
            return old
        at_head = [n for n, s in store.list_refs("heads").items() if s == head]
    except SnapwsError:
        return None
    return at_head[0] if len(at_head) == 1 else None
