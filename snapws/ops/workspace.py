"""Finding a workspace and its store, planning its mount, keeping it mounted."""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from snapws.backends import BACKEND_NAMES, backend_for, get_backend
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.errors import (
    BadPathError,
    MountError,
    NotAWorkspaceError,
    NotMountedError,
    StoreNotFoundError,
)
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.view import ChainView, HashCache
from snapws.model import WorkspaceState
from snapws.mounts import mounter
from snapws.mounts.plan import MountPlan
from snapws.store.store import EMPTY_LAYER, Store

STORE_DIRNAME = ".snapws"


def default_store_for(workspace: Path) -> Path:
    """The default store of a workspace: ``.snapws`` beside it (same filesystem)."""
    return workspace.parent / STORE_DIRNAME


@dataclass(slots=True)
class Session:
    """An opened workspace: its store, its recorded state and the settings."""

    store: Store
    state: WorkspaceState
    config: Config
    hashes: HashCache

    @property
    def path(self) -> Path:
        return Path(self.state.path)

    @property
    def wsdir(self) -> Path:
        return self.store.workspace_dir(self.state.id)

    @property
    def upper(self) -> Path:
        return self.wsdir / self.state.upper

    @property
    def upper_form(self) -> str:
        """How the upperdir encodes changes: "overlay" or "fuse" (its backend's)."""
        return backend_for(self.state).upper_form

    def head_ref(self) -> str:
        return f"workspaces/{self.state.id.hex}/HEAD"

    def chain_view(self, sid: SnapshotId) -> ChainView:
        return ChainView([os.fsencode(p) for p in self.store.layer_trees(sid)], self.hashes)

    def working_view(self) -> ChainView:
        """The working tree as U over HEAD's chain, read without the mount."""
        return ChainView(
            [
                os.fsencode(self.upper),
                *[os.fsencode(p) for p in self.store.layer_trees(self.state.head)],
            ],
            self.hashes,
            upper_form=self.upper_form,
        )

    def reload(self) -> None:
        self.state = self.store.read_workspace(self.state.id)


def plan_mount(store: Store, state: WorkspaceState, readonly: bool = False) -> MountPlan:
    """The mount that shows ``state``: HEAD's chain below its upperdir."""
    lowers = store.layer_trees(state.head) or [store.layer_tree(EMPTY_LAYER)]
    wsdir = store.workspace_dir(state.id)
    return MountPlan(
        target=Path(state.path),
        lowers=tuple(lowers),
        upper=wsdir / state.upper,
        work=wsdir / state.work,
        userxattr=store.xattr_form == "user",
        readonly=readonly,
    )


def new_dir_names() -> tuple[str, str]:
    token = secrets.token_hex(4)
    return f"upper-{token}", f"work-{token}"


def make_upper(store: Store, state: WorkspaceState, root_from: Path) -> None:
    """Create ``state``'s empty upper and work dirs (idempotent). The upper's
    root takes mode, owner and xattrs of ``root_from`` (the merged root), since
    overlay shows the upper root as the workspace root."""
    wsdir = store.workspace_dir(state.id)
    upper = wsdir / state.upper
    work = wsdir / state.work
    wsdir.mkdir(parents=True, exist_ok=True)
    if not upper.exists():
        tmp = wsdir / f".{state.upper}.tmp"
        if tmp.exists():
            os.rmdir(tmp)
        tmp.mkdir()
        copy_dir_meta(root_from, tmp)
        os.rename(tmp, upper)
    work.mkdir(exist_ok=True)


def copy_dir_meta(src: Path, dst: Path) -> None:
    """Mode, owner, user xattrs and mtime of directory ``src`` onto ``dst``."""
    from snapws.layers.entries import list_xattrs, user_xattrs

    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)
    for name, value in user_xattrs(list_xattrs(os.fsencode(src))).items():
        os.setxattr(dst, name, value, follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def top_root(store: Store, sid: SnapshotId) -> Path:
    """The directory whose metadata is the root of ``sid``'s tree."""
    trees = store.layer_trees(sid)
    return trees[0] if trees else store.layer_tree(EMPTY_LAYER)


def mounted_state(state: WorkspaceState, store: Store) -> str:
    """``mounted``, ``frozen`` (read-only, left by an interrupted command),
    ``stale`` (mounted with another upperdir), ``foreign`` (something else is
    mounted there), ``unmounted``, or ``plain`` (a workspace of the plain
    backend: nothing to mount). Asks the workspace's backend."""
    return backend_for(state).mount_state(store, state)


def ensure_mounted(store: Store, state: WorkspaceState, crash_step: str | None = None) -> bool:
    """Make the workspace mounted read-write as ``state`` says, by its
    backend. Returns True if it had to do anything (never for the plain
    backend).

    An older mount of this workspace on the path (``stale``: a commit,
    checkout or flatten on its way, or interrupted) is replaced without a
    gap (:meth:`~snapws.backends.base.Backend.replace`); ``crash_step`` names
    the crash-test step between mounting beneath it and detaching it.
    Raises MountError, BadPathError, WorkspaceBusyError (a stale mount that
    is still writable while files are open for writing)."""
    backend = backend_for(state)
    if not backend.mounts:
        return False
    status = backend.mount_state(store, state)
    if status == "mounted":
        return False
    path = Path(state.path)
    # A crash between mounting beneath and detaching leaves an older mount of
    # this workspace on top of the right one: peel it off (something stays
    # mounted below it, so the path never shows the bare directory).
    while status == "stale" and len(mounter.mounts_at(path)) > 1:
        backend.detach(path)
        status = backend.mount_state(store, state)
    if status == "mounted":
        return True
    if status == "frozen":
        backend.thaw(path)
        return True
    if status == "stale":
        # an older mount of this workspace (a commit, switch or flatten on
        # its way): the new one goes in place of it, without a gap
        make_upper(store, state, top_root(store, state.head))
        backend.replace(
            plan_mount(store, state), after_beneath=lambda: crashpoint(crash_step or "")
        )
        return True
    if status == "foreign":
        raise MountError(
            f"something else is mounted on the workspace {path}",
            hint=f"unmount it (umount {path}), then run `snapws mount`",
        )
    stray = stray_entries(path)
    if stray:
        raise stray_entries_error(state, stray)
    make_upper(store, state, top_root(store, state.head))
    backend.mount(plan_mount(store, state))
    return True


#: How many stray entries an error names before "... and N more".
STRAY_SHOWN = 10


def stray_entries(path: Path) -> list[str]:
    """The entries in the (unmounted) directory ``path``, sorted: what a
    mount on it would hide. Empty when it is missing or no directory."""
    try:
        return sorted(os.fsdecode(n) for n in os.listdir(os.fsencode(path)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def stray_entries_error(state: WorkspaceState, stray: list[str]) -> BadPathError:
    """The error for an unmounted workspace directory holding ``stray``
    entries (written while it was unmounted, or from outside a rootless
    workspace's namespace): names up to :data:`STRAY_SHOWN` of them, and
    says how to bring them into the workspace with its backend."""
    path = Path(state.path)
    shown = ", ".join(stray[:STRAY_SHOWN])
    if len(stray) > STRAY_SHOWN:
        shown += f" ... and {len(stray) - STRAY_SHOWN} more"
    backend = backend_for(state)
    where = (
        "written there while it was unmounted"
        if backend.mount_is_shared
        else "written there from outside the workspace's namespace, where its mount is not seen"
    )
    return BadPathError(
        f"the unmounted workspace directory {path} is not empty: mounting would hide "
        f"{len(stray)} {'entry' if len(stray) == 1 else 'entries'} {where}: {shown}",
        hint=f"move them elsewhere, then copy them into the workspace through "
        f"{backend.reach_hint(path)}",
    )


def check_shown(store: Store, state: WorkspaceState) -> None:
    """Raise unless the workspace's directory shows the workspace to this
    process, so that what is read from it (status, a cache save) is the
    workspace: :class:`NotMountedError` when a mounting backend's workspace
    is not mounted (``unmounted``, or ``foreign``: something else is), with
    a hint saying how to mount it; :class:`BadPathError` naming the entries
    written into the bare directory. A rootless workspace not mounted in
    this command's own namespace is fine when its directory is empty (every
    command mounts it for itself). Reads only."""
    backend = backend_for(state)
    if not backend.mounts:
        return
    status = backend.mount_state(store, state)
    if status in ("mounted", "frozen", "stale"):
        return
    path = Path(state.path)
    if status == "foreign":
        raise NotMountedError(
            f"the workspace {path} is not mounted: something else is mounted there",
            hint=f"unmount it (umount {path}), then run {backend.reach_hint(path)}",
        )
    stray = stray_entries(path)
    if stray:
        raise stray_entries_error(state, stray)
    if not backend.mount_is_shared:
        return
    raise NotMountedError(
        f"the workspace {path} is not mounted: its directory is empty, and its files and "
        "uncommitted changes are in the store (git has no such state)",
        hint=f"mount it with {backend.reach_hint(path)}; nothing is lost",
    )


def sweep_workspace_dir(store: Store, state: WorkspaceState) -> None:
    """Discard old upper/work dirs that ``state`` no longer names."""
    wsdir = store.workspace_dir(state.id)
    for p in wsdir.iterdir():
        if p.name in (state.upper, state.work, "state.json") or p.name.startswith(".state"):
            continue
        if p.name.startswith(("upper-", "work-", ".upper-")):
            with suppress(OSError):
                store.discard(p)
        elif p.name.startswith(".mnt-"):  # a staging mount point left by a crash
            with suppress(OSError):
                if mounter.mount_at(p) is not None:
                    mounter.detach(p)
                os.rmdir(p)


# ---- finding the workspace --------------------------------------------------


def _store_from_mount(path: Path) -> tuple[Path, WorkspaceId] | None:
    """(store root, workspace id) of the workspace mounted on ``path``, as
    its mount tells (any backend that mounts), or None."""
    for name in BACKEND_NAMES:
        backend = get_backend(name)
        if backend.mounts and name != "rootless":  # rootless mounts look like kernel ones
            found = backend.owner_of(path)
            if found is not None:
                return found
    return None


def find_workspace(
    start: Path, config: Config, store_path: Path | None = None
) -> tuple[Store, WorkspaceState]:
    """The workspace that contains ``start`` (itself or an ancestor).

    Looks at mounts first (the mount names its store), then at the given store,
    the configured one, and the default store beside each ancestor.
    Raises NotAWorkspaceError."""
    real = Path(os.path.realpath(start))
    ancestors = [real, *real.parents]
    explicit = store_path or config.store
    for anc in ancestors:
        found = _store_from_mount(anc)
        if found is not None:
            root, wid = found
            if explicit is None or Path(os.path.realpath(explicit)) == Path(os.path.realpath(root)):
                store = Store.open(root)
                return store, store.read_workspace(wid)
    stores: list[Path] = []
    if explicit is not None:
        stores.append(explicit)
    else:
        stores.extend(default_store_for(a) for a in ancestors if a != a.parent)
    for sp in stores:
        try:
            store = Store.open(sp)
        except StoreNotFoundError:
            if sp == explicit:
                raise
            continue
        states, damaged = store.workspace_records()
        by_path = {os.path.realpath(s.path): s for s in states}
        for anc in ancestors:
            st = by_path.get(str(anc))
            if st is not None:
                return store, st
        if _recover_interrupted_init(store, ancestors, config):
            return find_workspace(start, config, store_path)
        if damaged:  # perhaps the record of this very workspace
            raise damaged[0]
    raise NotAWorkspaceError(f"{start} is not inside a snapws workspace")


def find_store(start: Path, config: Config, store_path: Path | None = None) -> Store:
    """The store of the workspace around ``start`` without reading any
    workspace record (for verify, repair and doctor, which must work when a
    record is damaged): the given or configured store, the store a mount on
    an ancestor names, or the default store beside an ancestor. Raises
    NotAWorkspaceError, StoreNotFoundError."""
    explicit = store_path or config.store
    if explicit is not None:
        return Store.open(explicit)
    real = Path(os.path.realpath(start))
    ancestors = [real, *real.parents]
    for anc in ancestors:
        found = _store_from_mount(anc)
        if found is not None:
            return Store.open(found[0])
    for anc in ancestors:
        if anc != anc.parent:
            try:
                return Store.open(default_store_for(anc))
            except StoreNotFoundError:
                continue
    raise NotAWorkspaceError(f"{start} is not inside a snapws workspace")


def _recover_interrupted_init(store: Store, ancestors: list[Path], config: Config) -> bool:
    """Finish or roll back a crashed ``init`` or ``eject`` of one of
    ``ancestors``: until init records the workspace, and once eject removed
    the record, only the journal knows it. True if one was."""
    from snapws.ops.recovery import recover

    j = store.read_journal()
    if j is None or j.get("op") not in ("init", "eject"):  # both before/after a record
        return False
    if Path(os.path.realpath(j["path"])) not in ancestors:
        return False
    with store.lock(True, config.lock_timeout):
        recover(store)
    return True


def resolve_store(path_hint: Path, config: Config, store_path: Path | None) -> Path:
    """The store to use for a new workspace at ``path_hint``."""
    if store_path is not None:
        return store_path.absolute()
    if config.store is not None:
        return config.store
    return default_store_for(path_hint)
