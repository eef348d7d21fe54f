"""``snapws eject``: turn a workspace back into an ordinary directory.

The directory keeps its current tree, uncommitted changes included; it is
no longer mounted and the store no longer knows it as a workspace (its
record, upperdir and index are removed). The store keeps every snapshot,
branch and tag.

For a mounting backend (kernel, rootless, fuse): freeze the mount, copy the
merged view (U over HEAD's chain, read from the store, written path-safe)
into a staging directory of the store (same filesystem), sync, journal,
unmount (not lazily: a process using the workspace makes eject refuse,
naming it, and roll back), move the staged entries into the directory (now
the empty directory below the mount), remove the record. Until the unmount
a crash rolls back (the mount is thawed, the staging dropped); after it,
recovery rolls forward. For the plain backend the directory already holds
the tree: journal, remove the record and index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapws.backends import backend_for
from snapws.backends.upperdir import copy_dir_meta
from snapws.crash import crashpoint
from snapws.errors import BadPathError
from snapws.ids import WorkspaceId
from snapws.interrupts import deferred_signals
from snapws.mounts import busy
from snapws.mounts.mounter import MountBusyError
from snapws.session import Session
from snapws.store.atomic import syncfs
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class EjectResult:
    path: str
    backend: str
    entries: int  # entries of the tree written (0 for plain: nothing moved)

    def to_json(self) -> dict[str, object]:
        return {"workspace": self.path, "backend": self.backend, "entries": self.entries}


def eject(session: Session) -> EjectResult:
    """Make the session's workspace an ordinary directory holding its
    current tree (see the module docstring).

    Preconditions: the session is exclusive and the workspace mounted (a
    mounting backend). Raises WorkspaceBusyError (a process writes in it),
    MountError/MountBusyError (a process uses it: nothing changed), and OS
    errors of the copy (nothing changed)."""
    store, state = session.store, session.state
    backend = backend_for(state)
    path = Path(state.path)
    j: dict[str, Any] = {"op": "eject", "ws": state.id.hex, "path": state.path}
    backend.quiesce(store, state, "eject")
    staging = store.new_staging("eject")
    try:
        count = backend.copy_tree(session, staging / "tree")
        syncfs(store.root)
    except BaseException:
        store.discard(staging)
        backend.release(store, state, None)
        raise
    if count is None:  # the directory is the working tree: nothing to move back
        store.discard(staging)
    else:
        j["staging"] = staging.name
    store.write_journal(j)
    crashpoint("eject:journaled")
    try:
        backend.hide(store, state, lazy=False)
    except MountBusyError as e:
        rollback_eject(store, j)
        raise _busy_with_holders(path, e) from None
    except BaseException:
        rollback_eject(store, j)
        raise
    crashpoint("eject:unmounted")
    with deferred_signals("the eject was finished first"):
        finish_eject(store, j)
    return EjectResult(state.path, state.backend, count or 0)


def _busy_with_holders(path: Path, error: MountBusyError) -> MountBusyError:
    """``error`` with the processes that use the workspace named (their
    current directory or an open file inside), as the busy report of a
    freeze names its writers."""
    holders = busy.find_cwd_users(path) + busy.find_writers(path)
    lines = [f"  pid {h.pid} ({h.command}): {h.how} {h.path}" for h in holders]
    message = f"cannot eject {path}: processes use the workspace"
    if lines:
        message += "\n" + "\n".join(lines)
    return MountBusyError(
        message,
        "`cd` out of the workspace in those shells and close its files (or stop the "
        "processes), then run `snapws eject` again; nothing was changed",
    )


def rollback_eject(store: Store, j: dict[str, Any]) -> None:
    """Undo a journaled eject whose workspace is still mounted: drop the
    staged copy, make the mount writable again, clear the journal."""
    staging = store.root / "staging" / j["staging"]
    if staging.exists():
        store.discard(staging)
    state = store.read_workspace(WorkspaceId(j["ws"]))
    backend_for(state).ensure_shown(store, state)  # writable again
    store.clear_journal()


def recover_eject(store: Store, j: dict[str, Any]) -> str:
    """Finish a journaled eject once the workspace is unmounted (its staged
    copy is complete: it was synced before the journal), else roll it back.
    Returns what was done."""
    record = store.workspace_dir(WorkspaceId(j["ws"])) / "state.json"
    if j.get("staging") is not None and record.exists():
        state = store.read_workspace(WorkspaceId(j["ws"]))
        backend = backend_for(state)
        if backend.mount_state(store, state) in ("mounted", "frozen", "stale"):
            rollback_eject(store, j)
            return "rolled back an interrupted eject"
    finish_eject(store, j)
    return "finished an interrupted eject"


def finish_eject(store: Store, j: dict[str, Any]) -> None:
    """Roll a journaled eject forward (idempotent): move the staged entries
    into the directory (those still in staging), give it the tree root's
    metadata, remove the workspace record, clear the journal."""
    path = os.fsencode(j["path"])
    if j.get("staging") is not None:
        staging = store.root / "staging" / j["staging"]
        tree = staging / "tree"
        if tree.is_dir():
            os.makedirs(path, exist_ok=True)
            for name in sorted(os.listdir(os.fsencode(tree))):
                dst = path + b"/" + name
                if os.path.lexists(dst):
                    raise BadPathError(
                        f"cannot finish ejecting {j['path']}: {os.fsdecode(dst)} exists "
                        "(written into the directory while the eject was interrupted)",
                        hint=f"move it elsewhere, then run any snapws command; the tree is in "
                        f"{tree}",
                    )
                os.rename(os.fsencode(tree) + b"/" + name, dst)
            copy_dir_meta(tree, Path(os.fsdecode(path)))
            syncfs(store.root)  # the moves are durable before the record goes
            crashpoint("eject:moved")
            store.discard(staging)
    store.remove_workspace_record(WorkspaceId(j["ws"]))
    crashpoint("eject:record-removed")
    store.clear_journal()
