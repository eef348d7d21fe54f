"""``snapws mount``, ``umount`` and ``workspaces``."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from snapws.backends import backend_for
from snapws.errors import SnapwsError
from snapws.model import WorkspaceState
from snapws.mounts import busy, mounter
from snapws.ops.workspace import mounted_state
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    state: WorkspaceState
    mount: str  # mounted | frozen | stale | foreign | unmounted | plain
    store: Path
    #: a held workspace (``state.base`` set) that a process other than this
    #: one still uses; False once nothing does (the next change settles it)
    held: bool = False


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
    """The store's workspaces, how each is shown, and whether a held one
    (``base`` set: the record keeps it until the next change settles it)
    is still held by a process now (:func:`held_now`)."""
    out = []
    for s in store.workspaces():
        mount = mounted_state(s, store)
        out.append(WorkspaceInfo(s, mount, store.root, held_now(store, s, mount)))
    return out


def held_now(store: Store, state: WorkspaceState, mount: str | None = None) -> bool:
    """Whether the workspace is held now: its record says a change went
    through its live mount (``base`` set), and that mount (``mount``: its
    :func:`~snapws.ops.workspace.mounted_state`, read if not given) is still
    used by a process other than this one (:func:`_still_held`)."""
    if state.base is None:
        return False
    if mount is None:
        mount = mounted_state(state, store)
    return mount in ("mounted", "frozen") and _still_held(store, state)


def _still_held(store: Store, state: WorkspaceState) -> bool:
    """Whether a process other than this one uses the workspace's mount.
    The kernel's count of the mount's users (a syscall, which needs the
    store lock exclusively: taken only if free now) says "nobody" in the
    usual case; otherwise a scan of /proc decides (~0.1 ms a process),
    leaving out this process (run from inside the workspace) and lookups
    in flight, as a commit's check does."""
    path = Path(state.path)
    if busy.used_by_me(path):
        return busy.is_held(path)
    with suppress(SnapwsError, OSError), store.lock(True, 0):
        return mounter.used_by_others(path)
    return busy.is_held(path)  # the lock is taken: the scan alone
