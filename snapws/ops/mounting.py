"""``snapws mount``, ``umount`` and ``workspaces``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from snapws.model import WorkspaceState
from snapws.mounts import mounter
from snapws.ops.workspace import ensure_mounted, mounted_state
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    state: WorkspaceState
    mount: str  # mounted | frozen | stale | foreign | unmounted
    store: Path


def mount(store: Store, state: WorkspaceState) -> bool:
    """Mount the workspace if it is not; True if something was done."""
    Path(state.path).mkdir(parents=True, exist_ok=True)
    return ensure_mounted(store, state)


def umount(store: Store, state: WorkspaceState, lazy: bool = False) -> bool:
    """Unmount the workspace. Uncommitted changes stay in the store (its
    upperdir) and come back with ``snapws mount``. Raises MountBusyError
    when a process uses it (unless ``lazy``). True if it was mounted."""
    if mounted_state(state, store) == "unmounted":
        return False
    target = Path(state.path)
    if lazy:
        mounter.remount_readonly(target)
        mounter.detach(target)
    else:
        mounter.unmount(target)
    return True


def workspaces(store: Store) -> list[WorkspaceInfo]:
    return [WorkspaceInfo(s, mounted_state(s, store), store.root) for s in store.workspaces()]
