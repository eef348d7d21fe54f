"""``snapws init DIR``: DIR's content becomes the base layer; and starting a
workspace on a stored snapshot (``init --from``, ``clone``, a cache
restore). One flow for every backend.

Steps: validate (nothing changes on bad input), journal, the backend stages
DIR's content as the base layer's tree (:meth:`~snapws.backends.base.Backend.adopt`:
moved by renames for the overlay backends, copied by the plain one), hash
it into a manifest, publish the layer, write the root snapshot, the branch,
the backend's own directories (:meth:`install`) and the workspace state,
then show it. Until the layer is hashed a crash rolls back (what was moved
goes back into DIR); after it, recovery rolls forward.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from snapws.backends import choose_backend, get_backend
from snapws.backends.base import Backend
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.deeppath import lstat
from snapws.errors import BadPathError, NameExistsError
from snapws.ids import SnapshotId, WorkspaceId
from snapws.interrupts import deferred_signals
from snapws.layers.scan import entries_of, read_tree
from snapws.model import Entry, SnapshotRecord, WorkspaceState, encode_manifest, manifest_id
from snapws.mounts import busy, mounter
from snapws.ops.journals import InitJournal, mark_shown
from snapws.ops.workspace import new_workspace_namespace
from snapws.ops.worktree.commit import tz_offset_min
from snapws.ops.worktree.outside_links import (
    drop_outside_links,
    restore_outside_links,
    unshare_outside_links,
)
from snapws.refnames import validate_ref_name
from snapws.store.atomic import syncfs
from snapws.store.dedup import dedup_staging
from snapws.store.store import MARKER, Store

#: The head a new workspace's journal records until its base snapshot is written.
PENDING_HEAD = SnapshotId("0" * 32)


@dataclass(frozen=True, slots=True)
class Initialized:
    """What :func:`init` made: the store (in the workspace's namespace),
    the workspace, and the processes left behind: those other than this one
    that used the directory (their current directory, a file open or
    mapped in it) when init moved its content and mounted the workspace
    over it. They go on seeing the directory below the mount (empty now),
    and what they write there is hidden by the mount, until they change
    directory (``cd .``) or restart."""

    store: Store
    state: WorkspaceState
    left_behind: list[busy.Holder]


def check_root() -> None:
    """Raise UnsupportedError unless root: what the kernel backend needs
    (:meth:`snapws.backends.kernel.KernelBackend.check_privileges`)."""
    get_backend("kernel").check_privileges()


def validate_init(path: Path, store_root: Path) -> None:
    """Refuse bad targets before anything changes. Raises BadPathError,
    UnsupportedError."""
    if path.exists() and not path.is_dir():
        raise BadPathError(f"{path} is not a directory", hint="give a directory (or a new path)")
    if path == Path("/"):
        raise BadPathError("refusing to make / a workspace", hint="choose a directory below /")
    real = Path(os.path.realpath(path))
    sreal = Path(os.path.realpath(store_root))
    if sreal == real or real in sreal.parents:
        raise BadPathError(
            f"the store {store_root} would be inside the workspace {path}",
            hint="put the store outside the directory (--store PATH)",
        )
    if sreal in real.parents:
        raise BadPathError(
            f"the workspace {path} would be inside the store {store_root}",
            hint="choose a directory outside the store",
        )
    check_store_dir(store_root)
    info = mounter.mount_at(real)
    if info is not None:
        if info.fstype == "overlay" or info.fstype.startswith("fuse.snapws-"):
            raise BadPathError(
                f"{path} is already a mounted workspace (or another overlay)",
                hint="use it as it is, or `snapws umount` it first",
            )
        raise BadPathError(
            f"{path} is a mount point ({info.fstype}); its content cannot move into the store",
            hint="use a directory inside it instead",
        )
    inner = sorted(
        str(m.mountpoint)
        for m in mounter.read_mountinfo()
        if str(m.mountpoint).startswith(str(real).rstrip("/") + "/")
    )
    if inner:
        raise BadPathError(
            f"{path} has file systems mounted inside it ({', '.join(inner[:5])}); "
            "their content cannot move into the store",
            hint="unmount them first, or make a workspace of a directory without mounts",
        )


#: What a store holds at its top (:meth:`Store.create`): a directory
#: holding only these (a store whose creation was interrupted) is one.
STORE_ENTRIES = frozenset(
    {"layers", "snapshots", "chains", "refs", "logs", "workspaces", "staging", "trash", "lock"}
)


def _check_store_owner(store_root: Path) -> None:
    """Refuse an existing store directory that another user owns, or that
    group or others may write: whoever can rename its entries can change
    what the workspace shows (a store another user made in /tmp before root
    ran ``snapws init /tmp/x`` is the case). Raises BadPathError."""
    st = os.stat(store_root)
    if st.st_uid != os.geteuid():
        who = f"uid {st.st_uid}"
        raise BadPathError(
            f"the store directory {store_root} belongs to {who}, not to this user "
            f"(uid {os.geteuid()}): its owner could change what the workspace shows",
            hint="give the workspace a store of your own (`snapws --store PATH init DIR`), "
            "or have its owner run snapws",
        )
    if st.st_mode & 0o022:
        raise BadPathError(
            f"the store directory {store_root} is writable by group or others "
            f"(mode {st.st_mode & 0o7777:o}): they could change what the workspace shows",
            hint=f"chmod go-w {store_root}, or give the workspace another store (--store PATH)",
        )


def check_store_dir(store_root: Path) -> None:
    """Refuse a store directory that exists, is not empty and is not a
    snapws store (no ``snapws-store.json``, entries a store does not
    have): a venv, a project, anything whose owner may delete or recreate
    it with the workspace's state inside. Missing, empty and existing
    stores (also one whose creation was interrupted) pass, if they belong to
    this user and group and others cannot write them. Raises BadPathError
    naming the directory and what is in it, or whose it is."""
    try:
        names = sorted(os.listdir(store_root))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        names = None
    if names is not None:
        _check_store_owner(store_root)
    if names is not None and (
        MARKER in names or all(n in STORE_ENTRIES or n.startswith(".") for n in names)
    ):
        return
    shown = "a file" if names is None else "; it holds " + ", ".join(names[:5])
    if names is not None and len(names) > 5:
        shown += f" ... and {len(names) - 5} more"
    raise BadPathError(
        f"the store directory {store_root} is not a snapws store and not empty"
        + (f": it is {shown}" if names is None else shown),
        hint="give the workspace a store of its own: a new or empty directory "
        "(`snapws --store PATH init DIR`, SNAPWS_STORE or `store =` in snapws.toml)",
    )


def init(
    path: Path,
    store_root: Path,
    config: Config,
    branch: str | None = None,
    message: str = "initial snapshot",
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
) -> Initialized:
    """Make ``path`` a workspace whose base layer is its current content.

    ``backend`` (default: ``config.backend``) is a backend name or "auto";
    :func:`snapws.backends.choose_backend` resolves it (probing this machine)
    and the workspace records the result for life. Raises BadPathError,
    UnsupportedError (e.g. the requested backend cannot run here: the hint
    names one that can), NameExistsError, BadNameError, MountError."""
    path = Path(os.path.abspath(path))
    branch = validate_ref_name("branch", branch or config.default_branch)
    validate_init(path, store_root)
    chosen = ready_backend(config, store_root, backend)
    store, created, _ = make_room(path, store_root, chosen)
    with store.lock(True, config.lock_timeout):
        from snapws.ops.recovery import recover

        recover(store)
        try:
            store = store.in_namespace(new_workspace_namespace(store, path, config.namespace))
            check_new_workspace(store, path, branch)
        except BaseException:
            if created:
                path.rmdir()  # nothing changes on bad input
            raise
        state = replace(
            chosen.first_state(WorkspaceId(secrets.token_hex(16)), path, PENDING_HEAD, branch),
            namespace=store.namespace,
        )
        staging = store.new_staging("init")
        j = InitJournal(
            state,
            staging.name,
            message,
            config.author_or_default(),
            time.time_ns(),
            tz_offset_min(),
            config.dedup,
        )
        store.write_journal(j.to_json())
        crashpoint("init:journaled")
        left_behind = left_behind_by(chosen, path)
        written = written_inodes(path) if left_behind else frozenset()
        try:
            adopted = chosen.adopt(store, path, staging / "tree", config, progress)
            crashpoint("init:moved")
            entries = adopted.entries
            if entries is None:
                nodes = read_tree(os.fsencode(staging / "tree"))
                if unshare_outside_links(staging / "tree", nodes, written):  # see outside_links
                    nodes = read_tree(os.fsencode(staging / "tree"))
                entries = entries_of(nodes, config.hash_threads, progress)
            manifest = encode_manifest(entries)
        except BaseException:
            rollback_init(store, j)  # what was moved goes back into DIR
            raise
        store.write_pending_manifest(staging, manifest)
        syncfs(store.root)  # the staged tree is durable before roll-forward
        j.layer, j.part = manifest_id(manifest), adopted.part
        with deferred_signals("the init was finished first"):  # the point of no return
            store.write_journal(j.to_json())
            state = finish_init(store, j, entries)
    return Initialized(store, state, left_behind)


def left_behind_by(chosen: Backend, path: Path) -> list[busy.Holder]:
    """The processes other than this one that a mount of ``chosen`` on
    ``path`` would leave on the directory below it (read before its content
    moves: /proc names their files by their paths in it): none for a
    backend that changes the directory in place (plain), or whose mount
    only its own namespace sees (rootless: every other program sees the
    directory below, which the CLI says apart). Reads /proc only."""
    if not (chosen.replaces_mount and chosen.mount_is_shared):
        return []
    return busy.find_users(path)


def written_inodes(path: Path) -> frozenset[tuple[int, int]]:
    """(device, inode) of the files below ``path`` that programs hold open
    for writing or map shared and writable: moved into the layer, they
    would take those writes (init copies them instead). Reads /proc only."""
    out = set()
    for h in busy.find_writers(path):
        if h.how in ("write", "mmap-write"):
            with suppress(OSError):
                st = lstat(os.fsencode(h.path))
                out.add((st.st_dev, st.st_ino))
    return frozenset(out)


def ready_backend(config: Config, store_root: Path, backend: str | None = None) -> Backend:
    """The backend of a new workspace (``backend``: a name, "auto", or None
    for ``config.backend``; see :func:`snapws.backends.choose_backend`),
    made ready in this process (:meth:`~snapws.backends.base.Backend.prepare_process`:
    rootless enters a private user namespace now, so call this before any
    thread starts). Raises UnsupportedError (the hint names a backend that
    works), ConfigError."""
    name, _why = choose_backend(config, store_root, backend)
    chosen = get_backend(name)
    chosen.prepare_process(store_root)
    chosen.check_privileges()
    return chosen


def create_store_for(store_root: Path, backend: str, path: Path) -> Store:
    """Open or create the store at ``store_root`` for a workspace of
    ``backend`` at ``path`` (checked for it). Raises UnsupportedError."""
    store_root.mkdir(parents=True, exist_ok=True)
    get_backend(backend).check_store(store_root, path)
    return Store.create(store_root)


def make_room(path: Path, store_root: Path, backend: Backend) -> tuple[Store, bool, bool]:
    """Make the directory of a new workspace of ``backend`` and its store,
    where missing; returns the store and whether the directory and the store
    were made here. On an error, removes what it made. Raises
    UnsupportedError (a store ``backend`` cannot use), OSError."""
    created = not path.exists()
    store_created = not store_root.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        return create_store_for(store_root, backend.name, path), created, store_created
    except BaseException:
        undo_new_workspace(path, store_root, created, store_created)
        raise


def check_new_workspace(store: Store, path: Path, branch: str) -> None:
    """Refuse a second workspace at ``path`` and a first branch that exists
    already. Raises BadPathError, NameExistsError."""
    for ws in store.workspaces():
        if os.path.realpath(ws.path) == str(os.path.realpath(path)):
            raise BadPathError(
                f"{path} is already a workspace of the store {store.root}",
                hint=f"to show it again: {get_backend(ws.backend).reach_hint(path)}",
            )
    if store.read_ref("heads", branch) is not None:
        raise NameExistsError(
            f"branch {branch!r} already exists in the store {store.root}",
            hint="pass --branch NAME for this workspace's first branch",
        )


def undo_new_workspace(path: Path, store_root: Path, created: bool, store_created: bool) -> None:
    """After a failed start, before the workspace exists: remove the
    directory if it was made for it (and is still empty and no mount), and
    the store if it was made for it and no journal awaits recovery."""
    if created and path.is_dir() and not os.path.ismount(path) and not any(path.iterdir()):
        path.rmdir()
    if store_created and not (store_root / "journal.json").exists():
        shutil.rmtree(store_root, ignore_errors=True)


def start_on_snapshot(
    store: Store,
    path: Path,
    sid: SnapshotId,
    config: Config,
    branch: str,
    message: str,
    backend: str,
    author: str | None = None,
) -> WorkspaceState:
    """Make ``path`` (an existing, empty directory, not a workspace) a
    workspace on the stored snapshot ``sid``, on the new branch ``branch``,
    shown by ``backend`` (made ready by :func:`ready_backend`): the one
    way every verb starts a workspace on a stored snapshot (``init
    --from``, ``clone``, a cache restore). The journal names the snapshot;
    :func:`finish_init` (which recovery runs again) makes the branch, the
    backend's directories (and for the plain backend, HEAD's files), the
    reflog and the state, and shows it. ``message`` and ``author`` go into
    the journal (the snapshot keeps its own).

    Preconditions: the caller holds the store lock exclusively, the store
    is in the new workspace's namespace; ``sid`` and every layer of its
    chain are stored; ``branch`` is free. Raises BadPathError,
    UnsupportedError (checked before anything is written), MountError."""
    chosen = get_backend(backend)
    part = chosen.plan_start(path, store, sid)
    state = replace(
        chosen.first_state(WorkspaceId(secrets.token_hex(16)), path, sid, branch),
        namespace=store.namespace,
    )
    j = InitJournal(
        state,
        f"none-{secrets.token_hex(4)}",
        message,
        author or config.author_or_default(),
        time.time_ns(),
        tz_offset_min(),
        False,
        snapshot=sid,
        part=part,
    )
    with deferred_signals("the workspace was made first"):
        store.write_journal(j.to_json())
        return finish_init(store, j)


def finish_init(store: Store, j: InitJournal, entries: list[Entry] | None = None) -> WorkspaceState:
    """Roll a journaled init forward once its layer is hashed (or it
    starts on a stored snapshot). Idempotent."""
    staging = store.root / "staging" / j.staging
    if j.snapshot is not None:
        sid = j.snapshot
    else:
        assert j.layer is not None
        if not store.has_layer(j.layer):
            drop_outside_links(staging)  # the originals of copied files: in no layer
            if j.dedup:
                dedup_staging(store, staging, j.layer, entries)
            store.publish_pending(staging)
        if staging.exists():
            store.discard(staging)  # the same layer was already stored
        crashpoint("init:layer-published")
        record = SnapshotRecord((), j.layer, j.message, j.author, j.time_ns, j.tz)
        sid = store.write_snapshot(record, [j.layer])
    crashpoint("init:snapshot-written")
    branch = j.state.branch
    if branch is not None and store.read_ref("heads", branch) is None:
        store.write_ref("heads", branch, sid, j.author, "init")
    state = replace(j.state, head=sid)
    backend = get_backend(state.backend)
    if not j.shown:
        backend.install(store, state, j.part, j.snapshot is not None, lambda: mark_shown(store, j))
    store.append_reflog_once(
        f"workspaces/{state.id.hex}/HEAD", None, sid, j.author, "init", j.time_ns
    )
    store.write_workspace(state)
    crashpoint("init:state-written")
    backend.ensure_shown(store, state)
    backend.sweep(store, state)  # while the journal is there (see finish_commit)
    store.clear_journal()
    return state


def rollback_init(store: Store, j: InitJournal) -> None:
    """Undo a journaled init whose layer was not hashed: what the backend
    staged goes back (:meth:`~snapws.backends.base.Backend.unadopt`)."""
    staging = store.root / "staging" / j.staging
    restore_outside_links(staging / "tree")  # copied files get their hardlinks back
    get_backend(j.state.backend).unadopt(Path(j.path), staging / "tree")
    if staging.exists():
        store.discard(staging)
    store.clear_journal()
