"""Opening a workspace for an operation: find it, lock the store, recover an
interrupted operation, make sure it is mounted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from snapws.backends import backend_for
from snapws.config import Config
from snapws.errors import MountError, NotAWorkspaceError
from snapws.layers.hashcache import HashCache
from snapws.model import WorkspaceState
from snapws.ops.recovery import recover
from snapws.ops.workspace import find_workspace, mounted_state
from snapws.session import Session
from snapws.store.lock import owned_here
from snapws.store.store import Store

#: The workspace's cache of file hashes, in its directory of the store
#: (:class:`snapws.layers.hashcache.HashCache`).
HASHES_FILE = "hashes"


@contextmanager
def open_session(
    start: Path,
    config: Config,
    store_path: Path | None = None,
    exclusive: bool = True,
    mount: bool = True,
) -> Iterator[Session]:
    """Yield the workspace containing ``start`` with the store locked.

    Exclusive sessions first finish any interrupted operation and (if
    ``mount``) make sure the workspace is mounted. Shared sessions only read;
    if a journal is pending, or a crash left the mount frozen (read-only) or
    a staged layer no journal names, they take the exclusive lock briefly to
    recover.
    Raises NotAWorkspaceError, StoreLockedError, MountError, UnsupportedError
    (the workspace's backend cannot run in this process: the kernel's as
    non-root)."""
    store, _state = find_workspace(start, config, store_path)
    if exclusive:
        backend_for(_state).check_privileges()  # e.g. the kernel backend needs root
    if not exclusive and (
        store.read_journal() is not None
        or mounted_state(_state, store) == "frozen"
        or _staging_left(store)
    ):
        with store.lock(True, config.lock_timeout):
            recover(store)
            _check_still_a_workspace(store, _state, start)
            state = store.read_workspace(_state.id)
            if mounted_state(state, store) == "frozen":  # a crash left it read-only
                with suppress(MountError):  # (not root: it stays read-only)
                    backend_for(state).ensure_shown(store, state)
    with store.lock(exclusive, config.lock_timeout):
        if exclusive:
            recover(store)
            _check_still_a_workspace(store, _state, start)
        state = store.read_workspace(_state.id)
        if exclusive and mount:
            backend_for(state).ensure_shown(store, state)
            from snapws.ops.worktree.checkout import settle

            state = settle(store, state)
        # the hashes of files earlier commands read (by inode and stamp), so
        # that status and diff hash what changed since, not all of U; commands
        # that change something only record them
        hashes_file = store.workspace_dir(state.id) / HASHES_FILE
        hashes = HashCache.load(hashes_file, trust=not exclusive)  # (see hashcache)
        yield Session(store, state, config, hashes)
        if owned_here(hashes_file.parent):  # (never a file of ours in another's store)
            hashes.save(hashes_file)


def _staging_left(store: Store) -> bool:
    """Whether the store's staging or trash directory holds anything (an
    operation killed before its journal, or during its last deletions, or
    one running now: then the exclusive lock waits for it). Compaction jobs
    (``staging/compact-*``) stay between commits: they do not count."""
    try:
        staged = any(not p.name.startswith("compact-") for p in store.iter_staging())
        return staged or any(True for _ in (store.root / "trash").iterdir())
    except OSError:
        return False


def _check_still_a_workspace(store: Store, state: WorkspaceState, start: Path) -> None:
    """Raise NotAWorkspaceError when the recovery just run finished an
    ``eject`` of this workspace (its record is gone)."""
    if not (store.workspace_dir(state.id) / "state.json").exists():
        raise NotAWorkspaceError(
            f"{start} is not inside a snapws workspace: {state.path} was ejected "
            "(an interrupted `snapws eject` was just finished)"
        )
