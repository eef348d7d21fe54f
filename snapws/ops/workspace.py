"""Finding a workspace and its store, planning its mount, keeping it mounted."""

from __future__ import annotations

import os
import re
from pathlib import Path

from snapws.backends import BACKEND_NAMES, backend_for, get_backend
from snapws.config import SHARED_NAMESPACE, Config
from snapws.errors import (
    BadNameError,
    BadPathError,
    NotAWorkspaceError,
    SnapwsError,
    StoreNotFoundError,
    user_name,
)
from snapws.ids import WorkspaceId
from snapws.model import WorkspaceState, namespace_problem
from snapws.store.location import (
    STORE_DIRNAME,
    default_store_for,
    other_user_stores,
    private_dir_problem,
    store_candidates,
    topdir_store_name,
    user_data_store,
)
from snapws.store.store import Store


def new_workspace_namespace(store: Store, path: Path, requested: str) -> str:
    """The branch namespace of a new workspace at ``path`` in ``store``
    (``requested`` as ``Config.namespace``): "" (the root namespace) for
    ``shared``; ``requested`` itself for any other name (joining that
    namespace's branches on purpose); for "" the root namespace while it is
    unused (no workspace has it, no branch or tag is in it: the first
    workspace of a store keeps its refs where every store before namespaces
    kept them), else a namespace of its own, named after the directory and
    not used yet in the store by refs or a workspace (``app``, ``app-2``,
    ...). Raises BadNameError (an invalid name)."""
    if requested == SHARED_NAMESPACE:
        return ""
    if requested:
        problem = namespace_problem(requested)
        if problem is not None:
            raise BadNameError(f"{requested!r} is not a namespace name: {problem}")
        return requested
    states, damaged = store.workspace_records()
    root = store.in_namespace("")
    unused = not root.list_refs("heads") and not root.list_refs("tags")
    if unused and not damaged and all(s.namespace for s in states):
        return ""  # (refs left by an ejected workspace keep it taken)
    base = re.sub(r"\.\.+", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", path.name))
    base = base.removesuffix(".lock").strip(".-")[:90].rstrip(".-")
    if not base or namespace_problem(base) is not None:
        base = "ws"
    used = {*store.namespaces(), *(s.namespace for s in states), SHARED_NAMESPACE}
    name, n = base, 2
    while name in used:
        name, n = f"{base}-{n}", n + 1
    return name


def mounted_state(state: WorkspaceState, store: Store) -> str:
    """``mounted``, ``frozen`` (read-only, left by an interrupted command),
    ``stale`` (mounted with another upperdir), ``foreign`` (something else is
    mounted there), ``unmounted``, or ``plain`` (the directory is the working
    tree itself). Asks the workspace's backend."""
    return backend_for(state).mount_state(store, state)


# ---- finding the workspace --------------------------------------------------


def _store_from_mount(path: Path) -> tuple[Path, WorkspaceId] | None:
    """(store root, workspace id) of the workspace mounted on ``path``, as
    its mount tells (any backend that mounts), or None."""
    for name in BACKEND_NAMES:  # (rootless mounts look like kernel ones: found as those)
        found = get_backend(name).owner_of(path)
        if found is not None:
            return found
    return None


def find_workspace(
    start: Path, config: Config, store_path: Path | None = None
) -> tuple[Store, WorkspaceState]:
    """The workspace that contains ``start`` (itself or an ancestor), and its
    store seen from the workspace's branch namespace.

    Looks at mounts first (the mount names its store), then at the given store,
    the configured one, or else at the default stores of each ancestor
    (:func:`store_candidates`: the per-user store of its filesystem and the
    older ``.snapws`` beside it), which finds workspaces of every backend,
    mounted or not. Raises NotAWorkspaceError."""
    real = Path(os.path.realpath(start))
    ancestors = [real, *real.parents]
    explicit = store_path or config.store
    for anc in ancestors:
        found = _store_from_mount(anc)
        if found is not None:
            root, wid = found
            if explicit is None or Path(os.path.realpath(explicit)) == Path(os.path.realpath(root)):
                store = Store.open(root)
                state = store.read_workspace(wid)
                return store.in_namespace(state.namespace), state
    stores = [explicit] if explicit is not None else store_candidates(ancestors)
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
                return store.in_namespace(st.namespace), st
        if _recover_interrupted_init(store, ancestors, config):
            return find_workspace(start, config, store_path)
        if damaged:  # perhaps the record of this very workspace
            raise damaged[0]
    if explicit is None:
        _refuse_other_users_workspace(start, ancestors)
    raise NotAWorkspaceError(f"{start} is not inside a snapws workspace")


def _refuse_other_users_workspace(start: Path, ancestors: list[Path]) -> None:
    """Raise NotAWorkspaceError naming the store and its owner when one of
    ``ancestors`` is a workspace in another user's default store (root ran
    ``snapws -C ~user/proj status``: root's default stores are elsewhere)."""
    me = os.geteuid()
    for anc in ancestors:
        try:
            uid = os.stat(anc).st_uid
        except OSError:
            continue
        if uid == me:
            continue
        for root in other_user_stores(uid, ancestors):
            try:
                store = Store.open(root)
                states, _ = store.workspace_records()
            except (SnapwsError, OSError):
                continue
            paths = {os.path.realpath(s.path) for s in states}
            if any(str(a) in paths for a in ancestors):
                name = user_name(uid)
                login = name.split(" ")[0] if not name.startswith("uid ") else f"#{uid}"
                raise NotAWorkspaceError(
                    f"{start} is inside a snapws workspace of {name}, in its store {root}, "
                    f"which is not one of this user's ({user_name(me)})",
                    hint=f"name the store to read it (`SNAPWS_STORE={root} snapws ...` or "
                    f"--store {root}: status, log, diff, show, verify, du), or run the command "
                    f"as its owner (`runuser -u {login} -- snapws ...`), as commands that change "
                    "it must be",
                )
        return  # only the first other user's stores: one look, no walk over every user


def find_store(start: Path, config: Config, store_path: Path | None = None) -> Store:
    """The store of the workspace around ``start`` without reading any
    workspace record (for verify, repair and doctor, which must work when a
    record is damaged): the given or configured store, the store a mount on
    an ancestor names, or a default store of an ancestor
    (:func:`store_candidates`); seen from the root namespace. Raises
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
    candidates = store_candidates(ancestors)
    for sp in candidates:  # first the one that records a workspace around start
        try:
            store = Store.open(sp)
            states, _ = store.workspace_records()
        except (StoreNotFoundError, OSError):
            continue
        if any(Path(os.path.realpath(s.path)) in ancestors for s in states):
            return store
    for sp in candidates:
        try:
            return Store.open(sp)
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


def open_named_store(root: Path, config: Config) -> Store:
    """The store ``root`` (``--store``, ``store =``) for a command run outside
    any workspace, seen from the namespace ``namespace =`` or
    ``SNAPWS_NAMESPACE`` names (the root namespace when it is unset or
    ``shared``). Raises StoreNotFoundError."""
    store = Store.open(root)
    named = config.namespace if config.namespace != SHARED_NAMESPACE else ""
    return store.in_namespace(named)


def workspaces_store(start: Path, config: Config) -> Store:
    """The store ``snapws workspaces`` lists when none is named: that of the
    workspace around ``start``, else this user's default store (where a new
    workspace's store goes by default). Raises NotAWorkspaceError when
    neither exists, with a hint naming --store."""
    try:
        return find_workspace(start, config)[0]
    except NotAWorkspaceError:
        pass
    for root in (default_store_for(start), user_data_store()):
        try:
            return Store.open(root)
        except StoreNotFoundError:
            continue
    raise NotAWorkspaceError(
        f"{start} is not inside a snapws workspace, and this user's default store "
        f"({user_data_store()}) does not exist",
        hint="pass the store to list: `snapws --store PATH workspaces`",
    )


def resolve_store(path_hint: Path, config: Config, store_path: Path | None) -> Path:
    """The store to use for a new workspace at ``path_hint``: ``store_path``
    (``--store``), the configured one (``SNAPWS_STORE``, ``store =``), else
    :func:`default_store_for`. A default store is made here if missing
    (mode 0700, as the trash spec's directories). An existing
    ``.snapws-<uid>`` at the top of a filesystem that is a link, another
    user's or writable by group or others is refused (BadPathError; an
    override is the way out); any store directory is checked again by
    :func:`snapws.ops.worktree.init.check_store_dir`."""
    if store_path is not None:
        return store_path.absolute()
    if config.store is not None:
        return config.store
    path = default_store_for(path_hint)
    if path.name == STORE_DIRNAME:
        return path  # the old default: where the top of the filesystem is not this user's
    if not os.path.lexists(path):
        top = path
        while not os.path.lexists(top.parent) and top.parent != top.parent.parent:
            top = top.parent
        _MADE[path] = top  # what a failed init removes again (forget_unused_store)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile: checked below
        except OSError as e:
            raise BadPathError(
                f"cannot make the default store {path}: {e.strerror}",
                hint="give the workspace a store (`snapws --store PATH init DIR`, "
                "SNAPWS_STORE or `store =` in snapws.toml)",
            ) from e
    if path.name == topdir_store_name():
        problem = private_dir_problem(path)
        if problem is not None:
            raise BadPathError(
                f"the default store {path} {problem}: it cannot hold this user's workspaces",
                hint=f"remove {path} if nobody uses it, or give the workspace a store "
                "(`snapws --store PATH init DIR`, SNAPWS_STORE or `store =` in snapws.toml)",
            )
    return path


#: Default store directories :func:`resolve_store` made, with the highest
#: directory it made for each (``~/.local`` when even that was missing).
_MADE: dict[Path, Path] = {}


def forget_unused_store(path: Path) -> None:
    """Remove the default store directory ``path`` and the directories above
    it that :func:`resolve_store` made, if they are (still) empty: a failed
    ``init`` leaves nothing behind. Anything else is left alone."""
    top = _MADE.pop(path, None)
    here = path
    while top is not None:
        try:
            os.rmdir(here)
        except OSError:
            return
        if here == top:
            return
        here = here.parent
