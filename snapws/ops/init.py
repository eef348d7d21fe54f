"""``snapws init DIR``: DIR's content becomes the base layer, DIR the mount.

Steps: validate (nothing changes on bad input), journal, move DIR's entries
into a staging tree (renames: same filesystem), hash it into a manifest,
publish the layer, write the root snapshot, the branch and the workspace
state, mount. Until the layer is published a crash rolls back (the entries
go back into DIR); after it, recovery rolls forward.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snapws.backends import choose_backend, get_backend
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.errors import BadPathError, NameExistsError, UnsupportedError
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.layers.scan import entries_of, read_tree
from snapws.model import Entry, SnapshotRecord, WorkspaceState, encode_manifest, manifest_id
from snapws.mounts import mounter
from snapws.ops.workspace import (
    copy_dir_meta,
    ensure_mounted,
    make_upper,
    new_dir_names,
    top_root,
)
from snapws.refnames import validate_ref_name
from snapws.store.atomic import syncfs
from snapws.store.dedup import dedup_staging
from snapws.store.store import MARKER, Store


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
) -> tuple[Store, WorkspaceState]:
    """Make ``path`` a workspace whose base layer is its current content.

    ``backend`` (default: ``config.backend``) is a backend name or "auto";
    :func:`snapws.backends.choose_backend` resolves it (probing this machine)
    and the workspace records the result for life. Raises BadPathError,
    UnsupportedError (e.g. the requested backend cannot run here: the hint
    names one that can), NameExistsError, BadNameError, MountError."""
    path = Path(os.path.abspath(path))
    branch = validate_ref_name("branch", branch or config.default_branch)
    validate_init(path, store_root)
    backend_name, _why = choose_backend(config, store_root, backend)
    if backend_name == "rootless":  # mount in a user namespace of this process
        from snapws.backends.userns import enter_private_namespace

        enter_private_namespace(store_root)
    if backend_name == "plain":  # mounts nothing: copies the directory into a layer
        from snapws.backends.plain.ops import init_plain

        return init_plain(path, store_root, config, branch, message, progress)
    chosen = get_backend(backend_name)
    chosen.check_privileges()
    created = not path.exists()
    store_created = not store_root.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        store_root.mkdir(parents=True, exist_ok=True)
        chosen.check_store(store_root)
        if os.stat(store_root).st_dev != os.stat(path).st_dev:
            raise UnsupportedError(
                f"the store {store_root} and the workspace {path} are on different filesystems",
                hint="keep them on one filesystem, so that a commit is a rename "
                "(--store PATH or SNAPWS_STORE)",
            )
        store = Store.create(store_root)
    except BaseException:
        if created:
            path.rmdir()
        if store_created:
            shutil.rmtree(store_root, ignore_errors=True)
        raise
    with store.lock(True, config.lock_timeout):
        from snapws.ops.recovery import recover

        recover(store)
        try:
            for ws in store.workspaces():
                if os.path.realpath(ws.path) == str(os.path.realpath(path)):
                    raise BadPathError(
                        f"{path} is already a workspace of the store {store.root}",
                        hint="`snapws mount` mounts it again",
                    )
            if store.read_ref("heads", branch) is not None:
                raise NameExistsError(
                    f"branch {branch!r} already exists in the store {store.root}",
                    hint="pass --branch NAME for this workspace's first branch",
                )
        except BaseException:
            if created:
                path.rmdir()  # nothing changes on bad input
            raise
        wid = WorkspaceId(secrets.token_hex(16))
        staging = store.new_staging("init")
        upper, work = new_dir_names()
        j = {
            "op": "init",
            "ws": wid.hex,
            "path": str(path),
            "staging": staging.name,
            "branch": branch,
            "message": message,
            "author": config.author_or_default(),
            "time_ns": time.time_ns(),
            "tz": int(time.localtime().tm_gmtoff // 60),
            "upper": upper,
            "work": work,
            "layer": None,
            "dedup": config.dedup,
            "backend": backend_name,
        }
        store.write_journal(j)
        crashpoint("init:journaled")
        tree = staging / "tree"
        tree.mkdir()
        copy_dir_meta(path, tree)
        try:
            for name in os.listdir(os.fsencode(path)):
                os.rename(os.fsencode(path) + b"/" + name, os.fsencode(tree) + b"/" + name)
            copy_dir_meta(path, tree)  # renames changed the mtimes
            crashpoint("init:moved")
            nodes = read_tree(os.fsencode(tree))
            entries = entries_of(nodes, config.hash_threads, progress)
            manifest = encode_manifest(entries)
        except BaseException:
            rollback_init(store, j)  # every entry goes back into DIR
            raise
        store.write_pending_manifest(staging, manifest)
        syncfs(store.root)  # the moved entries are durable before roll-forward
        j["layer"] = manifest_id(manifest).hex
        store.write_journal(j)
        state = finish_init(store, j, entries)
    return store, state


def finish_init(
    store: Store, j: dict[str, Any], entries: list[Entry] | None = None
) -> WorkspaceState:
    """Roll a journaled init forward once its layer is published."""
    lid = LayerId(j["layer"])
    staging = store.root / "staging" / j["staging"]
    if not store.has_layer(lid):
        if j.get("dedup"):
            dedup_staging(store, staging, lid, entries)
        store.publish_pending(staging)
    if staging.exists():
        store.discard(staging)  # the same layer was already stored
    crashpoint("init:layer-published")
    record = SnapshotRecord(
        parents=(),
        layer=lid,
        message=j["message"],
        author=j["author"],
        time_ns=j["time_ns"],
        tz_offset_min=j["tz"],
    )
    # init --from: the imported snapshot is stored already
    sid = SnapshotId(j["snapshot"]) if j.get("snapshot") else store.write_snapshot(record, [lid])
    crashpoint("init:snapshot-written")
    if store.read_ref("heads", j["branch"]) is None:
        store.write_ref("heads", j["branch"], sid, j["author"], "init")
    state = WorkspaceState(
        id=WorkspaceId(j["ws"]),
        path=j["path"],
        head=sid,
        branch=j["branch"],
        upper=j["upper"],
        work=j["work"],
        backend=j.get("backend", "kernel"),
    )
    make_upper(store, state, top_root(store, sid))
    store.append_reflog_once(
        f"workspaces/{state.id.hex}/HEAD", None, sid, j["author"], "init", j["time_ns"]
    )
    store.write_workspace(state)
    crashpoint("init:state-written")
    ensure_mounted(store, state)
    store.clear_journal()
    return state


def rollback_init(store: Store, j: dict[str, Any]) -> None:
    """Undo a journaled init whose layer was not published: entries go back."""
    staging = store.root / "staging" / j["staging"]
    tree = staging / "tree"
    path = os.fsencode(j["path"])
    if tree.is_dir():
        for name in os.listdir(os.fsencode(tree)):
            os.rename(os.fsencode(tree) + b"/" + name, path + b"/" + name)
    if staging.exists():
        store.discard(staging)
    store.clear_journal()
