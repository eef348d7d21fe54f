"""``snapws mount``, ``umount`` and ``workspaces``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from snapws.backends import backend_for
from snapws.model import WorkspaceState
from snapws.ops.workspace import mounted_state
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    state: WorkspaceState
    mount: str  # mounted | frozen | stale | foreign | unmounted | plain
    store: Path


def mount(store: Store, state: WorkspaceState) -> bool:
    """Show the workspace in its directory if it is not (by its backend: a
    mount, or nothing for a directory that is the working tree), and settle
    a held workspace that nothing holds any more
    (:func:`snapws.ops.worktree.checkout.settle`); True if something was done."""
    from snapws.ops.worktree.checkout import settle

    Path(state.path).mkdir(parents=True, exist_ok=True)
    did = backend_for(state).ensure_shown(store, state)
    return settle(store, state) != state or did


def umount(store: Store, state: WorkspaceState, lazy: bool = False) -> bool:
    """Unmount the workspace. Uncommitted changes stay in the store (its
    upperdir) and come back with ``snapws mount``. Raises MountBusyError
    when a process uses it (unless ``lazy``). True if it was mounted."""
    return backend_for(state).hide(store, state, lazy)


def workspaces(store: Store) -> list[WorkspaceInfo]:
    return [WorkspaceInfo(s, mounted_state(s, store), store.root) for s in store.workspaces()]
