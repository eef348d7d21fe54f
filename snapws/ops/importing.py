"""``snapws import SRC`` and ``snapws init --from SRC DIR``.

``import`` reads an OCI image layout (directory or tar) or a docker archive
into the store: only layers the store lacks are unpacked; a snapws export
comes back as the same snapshot (same id), any other image as a new root
snapshot. It can name a branch or tag for the result. ``init --from`` starts
a workspace on the imported snapshot, through init's journal (the snapshot
is stored before the journal is written; recovery rolls forward).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snapws.config import Config
from snapws.errors import BadPathError, NameExistsError
from snapws.ids import SnapshotId, WorkspaceId
from snapws.model import WorkspaceState
from snapws.oci.importer import import_image
from snapws.oci.layout import open_source
from snapws.ops.export import locate_store
from snapws.ops.workspace import new_dir_names
from snapws.refnames import validate_ref_name
from snapws.store.store import EMPTY_LAYER, Store

KIND_DIR = {"branch": "heads", "tag": "tags"}


@dataclass(frozen=True, slots=True)
class ImportResult:
    snapshot: SnapshotId
    source: str  # the image, as described to people
    layers: int  # layers of its chain
    ref_kind: str | None  # "branch" / "tag" named for it, if any
    ref: str | None


def import_into(
    store: Store,
    src: str,
    config: Config,
    ref: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SnapshotId, str]:
    """Import image ``src`` (see :func:`snapws.oci.layout.open_source`)
    into ``store``. Returns the snapshot and the source's description.

    Precondition: the caller holds the store lock exclusively. Raises
    BadImageError, RevisionNotFoundError/AmbiguousRevisionError (``ref``),
    UnsupportedError, OSError."""
    with open_source(src, ref) as source:
        sid = import_image(
            store,
            source.manifest,
            source.open_blob,
            progress,
            source=source.name,
            threads=config.hash_threads,
            dedup=config.dedup,
        )
    return sid, source.name


def _check_new_ref(store: Store, kind: str, name: str, sid: SnapshotId | None) -> None:
    validate_ref_name(kind, name)
    old = store.read_ref(KIND_DIR[kind], name)
    if old is not None and old != sid:
        raise NameExistsError(
            f"a {kind} named {name!r} already exists (at {old.short()})",
            hint=f"choose another name, or delete it first (`snapws {kind} -d {name}`)",
        )


def import_source(
    cwd: Path,
    config: Config,
    store_path: Path | None,
    src: str,
    ref: str | None = None,
    branch: str | None = None,
    tag: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """``snapws import``: import ``src`` into the store (``store_path``, the
    configured store, else the workspace's; a missing ``store_path`` is
    created), then point ``branch`` or ``tag`` at the snapshot. Raises what
    :func:`import_into` raises, BadNameError, NameExistsError."""
    from snapws.ops.recovery import recover

    kind, name = ("branch", branch) if branch else ("tag", tag) if tag else (None, None)
    explicit = store_path or config.store
    if explicit is not None and not explicit.exists():
        from snapws.store.probe import check_store_filesystem

        explicit.mkdir(parents=True)
        check_store_filesystem(explicit)
        Store.create(explicit)
    store, _head = locate_store(cwd, config, store_path)
    with store.lock(True, config.lock_timeout):
        recover(store)
        if kind is not None and name is not None:
            _check_new_ref(store, kind, name, None)
        sid, described = import_into(store, src, config, ref, progress)
        if kind is not None and name is not None:
            _check_new_ref(store, kind, name, sid)
            if store.read_ref(KIND_DIR[kind], name) != sid:
                store.write_ref(KIND_DIR[kind], name, sid, config.author_or_default(), "import")
        chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    return ImportResult(sid, described, len(chain), kind, name)


def choose_new_backend(config: Config, store_root: Path, backend: str | None = None) -> str:
    """The backend of a workspace about to start on an imported snapshot
    (``backend``: a name, "auto", or None for ``config.backend``; see
    :func:`snapws.backends.choose_backend`), made ready in this process:
    for ``rootless`` the process moves into a private user namespace now,
    so call this before any thread starts and before importing (the layers
    are then unpacked as the user's namespace root). Raises
    UnsupportedError (the hint names a backend that works), ConfigError."""
    from snapws.backends import choose_backend, get_backend

    name, _why = choose_backend(config, store_root, backend)
    if name == "rootless":
        from snapws.backends.userns import enter_private_namespace

        enter_private_namespace(store_root)
    get_backend(name).check_privileges()
    return name


def init_on_snapshot(
    store: Store,
    path: Path,
    sid: SnapshotId,
    config: Config,
    branch: str,
    message: str,
    backend: str = "kernel",
    author: str | None = None,
) -> WorkspaceState:
    """Make ``path`` (an existing, empty directory, not a workspace) a
    workspace on the stored snapshot ``sid``, on the new branch ``branch``,
    shown by ``backend`` (a mounting one: kernel, rootless or fuse, made
    ready by :func:`choose_new_backend`). This is the one place that writes
    init's journal for a stored snapshot (``init --from``, a cache restore):
    the journal names the snapshot, then :func:`snapws.ops.init.finish_init`
    (which recovery runs again after a crash) makes the upperdir, branch,
    reflog and state, and mounts. ``message`` and ``author`` go into the
    journal (the snapshot keeps its own).

    Preconditions: the caller holds the store lock exclusively; ``sid`` and
    every layer of its chain are stored; ``branch`` is free. For the plain
    backend use :func:`start_plain_on_snapshot`. Raises MountError."""
    from snapws.ops.init import finish_init

    assert backend != "plain", "plain workspaces start through start_plain_on_snapshot"
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    upper, work = new_dir_names()
    j = {
        "op": "init",
        "ws": WorkspaceId(secrets.token_hex(16)).hex,
        "path": str(path),
        "staging": f"none-{secrets.token_hex(4)}",
        "branch": branch,
        "message": message,
        "author": author or config.author_or_default(),
        "time_ns": time.time_ns(),
        "tz": int(time.localtime().tm_gmtoff // 60),
        "upper": upper,
        "work": work,
        "layer": (chain[-1] if chain else EMPTY_LAYER).hex,
        "snapshot": sid.hex,  # finish_init starts the workspace on it
        "dedup": False,
        "backend": backend,
    }
    store.write_journal(j)
    return finish_init(store, j)


def start_plain_on_snapshot(
    path: Path,
    store_root: Path,
    sid: SnapshotId,
    config: Config,
    branch: str,
    message: str,
    who: str = "",
) -> tuple[Store, WorkspaceState]:
    """Make ``path`` (an existing, empty directory) a plain workspace on the
    stored snapshot ``sid``: ``init --backend plain`` of the empty directory
    (a first, empty snapshot on ``branch``), then ``reset --hard`` to
    ``sid``, which writes its files and moves ``branch`` there (the empty
    snapshot stays in the reflog only). Each step is journaled; a crash
    between them leaves a valid, empty workspace on ``branch`` that
    ``snapws reset --hard`` can finish.

    Preconditions: the store lock is NOT held (both steps take it);
    ``branch`` is free. Raises what init and reset raise."""
    from snapws.backends.plain.ops import init_plain
    from snapws.ops.checkout import reset
    from snapws.ops.session import open_session

    init_plain(path, store_root, config, branch, message)
    with open_session(path, config, store_root, exclusive=True) as s:
        reset(s, sid, hard=True, who=who or config.author_or_default(), label=message)
        return s.store, s.store.read_workspace(s.state.id)


def init_from(
    path: Path,
    store_root: Path,
    config: Config,
    src: str,
    ref: str | None = None,
    branch: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    backend: str | None = None,
) -> tuple[Store, WorkspaceState]:
    """``snapws init --from SRC DIR``: import ``src`` and make ``path`` (absent
    or empty) a workspace on the snapshot, on a new branch.

    ``backend`` (default: ``config.backend``) as for ``snapws init``: any
    backend this machine can run (rootless: the import runs in the user
    namespace). Raises BadPathError, UnsupportedError, NameExistsError,
    BadNameError, BadImageError, MountError."""

    def obtain(store: Store) -> tuple[SnapshotId, str]:
        return import_into(store, src, config, ref, progress)

    return start_on_import(path, store_root, config, obtain, branch, backend)


#: Brings the snapshot to start on into the (locked) store: its id and how
#: to describe where it came from ("import DESCRIBED" in the reflog).
Obtain = Callable[[Store], tuple[SnapshotId, str]]


def start_on_import(
    path: Path,
    store_root: Path,
    config: Config,
    obtain: Obtain,
    branch: str | None = None,
    backend: str | None = None,
    verb: str = "import",
) -> tuple[Store, WorkspaceState]:
    """Make ``path`` (absent or empty) a workspace on the snapshot that
    ``obtain`` stores (an import, a fetch), on the new branch ``branch``
    (default: ``config.default_branch``), shown by ``backend`` as for
    ``snapws init``. The store is made if missing. On an error before the
    workspace exists, a directory or store made for it is removed again.
    Raises BadPathError, UnsupportedError, NameExistsError, BadNameError,
    MountError, and what ``obtain`` raises."""
    from snapws.ops.recovery import recover

    path = Path(os.path.abspath(path))
    branch = validate_ref_name("branch", branch or config.default_branch)
    _validate_new_workspace(path, store_root)
    chosen = choose_new_backend(config, store_root, backend)
    created = not path.exists()
    store_created = not store_root.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        store = create_store_for(store_root, chosen)
        with store.lock(True, config.lock_timeout):
            recover(store)
            for ws in store.workspaces():
                if os.path.realpath(ws.path) == str(os.path.realpath(path)):
                    raise BadPathError(f"{path} is already a workspace of the store {store.root}")
            _check_new_ref(store, "branch", branch, None)
            sid, described = obtain(store)
            if chosen != "plain":
                return store, init_on_snapshot(
                    store, path, sid, config, branch, f"{verb} {described}", chosen
                )
    except BaseException:
        undo_new_workspace(path, store_root, created, store_created)
        raise
    return start_plain_on_snapshot(path, store_root, sid, config, branch, f"{verb} {described}")


def undo_new_workspace(path: Path, store_root: Path, created: bool, store_created: bool) -> None:
    """After a failed start on an imported snapshot, before the workspace
    exists: remove the directory if it was made for it (and is still empty
    and no mount), and the store if it was made for it and no journal
    awaits recovery."""
    if created and path.is_dir() and not os.path.ismount(path) and not any(path.iterdir()):
        path.rmdir()
    if store_created and not (store_root / "journal.json").exists():
        shutil.rmtree(store_root, ignore_errors=True)


def _validate_new_workspace(path: Path, store_root: Path) -> None:
    """Refuse a target that is not missing or empty, or badly placed.
    Raises BadPathError."""
    from snapws.ops.init import validate_init

    validate_init(path, store_root)
    if path.is_dir() and any(path.iterdir()):
        raise BadPathError(
            f"{path} is not empty: clone and init --from start a workspace in an empty directory",
            hint="give a new or empty directory (plain `snapws init` keeps a directory's content)",
        )


def create_store_for(store_root: Path, backend: str) -> Store:
    """Open or create the store at ``store_root`` for a workspace of
    ``backend`` (checked for it). Raises UnsupportedError."""
    from snapws.backends import get_backend

    store_root.mkdir(parents=True, exist_ok=True)
    if backend != "plain":
        get_backend(backend).check_store(store_root)
    return Store.create(store_root)
