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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snapws.config import Config
from snapws.errors import BadPathError, NameExistsError
from snapws.ids import SnapshotId
from snapws.model import WorkspaceState
from snapws.oci.imagesource import open_source
from snapws.oci.importer import import_image
from snapws.ops.transfer.export import locate_store
from snapws.ops.workspace import new_workspace_namespace
from snapws.ops.worktree.init import (
    check_new_workspace,
    make_room,
    ready_backend,
    start_on_snapshot,
    undo_new_workspace,
    validate_init,
)
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
    """Import image ``src`` (see :func:`snapws.oci.imagesource.open_source`)
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
    validate_new_workspace(path, store_root)
    chosen = ready_backend(config, store_root, backend)
    store, created, store_created = make_room(path, store_root, chosen)
    try:
        with store.lock(True, config.lock_timeout):
            recover(store)
            store = store.in_namespace(new_workspace_namespace(store, path, config.namespace))
            check_new_workspace(store, path, branch)
            sid, described = obtain(store)
            return store, start_on_snapshot(
                store, path, sid, config, branch, f"{verb} {described}", chosen.name
            )
    except BaseException:
        undo_new_workspace(path, store_root, created, store_created)
        raise


def validate_new_workspace(path: Path, store_root: Path) -> None:
    """Refuse a target that is not missing or empty, or badly placed.
    Raises BadPathError."""
    validate_init(path, store_root)
    if path.is_dir() and any(path.iterdir()):
        raise BadPathError(
            f"{path} is not empty: clone and init --from start a workspace in an empty directory",
            hint="give a new or empty directory (plain `snapws init` keeps a directory's content)",
        )
