"""``snapws export REV -o DIR|FILE.tar``: a snapshot as an OCI image layout.

Works on the store of the workspace around the current directory, or on the
store given by ``--store`` (no workspace needed). Reads the store under the
shared lock; compressed layers are kept in the store's blob cache
(:mod:`snapws.oci.blobcache`), so exporting again costs a copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from snapws.config import Config
from snapws.errors import BadNameError, NotAWorkspaceError
from snapws.ids import BlobDigest, SnapshotId
from snapws.oci.export import build_image
from snapws.oci.layout import DEFAULT_REF, write_layout_dir, write_layout_tar
from snapws.ops.history.revs import resolve_rev
from snapws.ops.workspace import find_workspace, open_named_store
from snapws.store.lock import check_store_owner
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class ExportResult:
    snapshot: SnapshotId
    dest: Path
    ref: str
    manifest_digest: BlobDigest
    layers: int
    bytes: int  # blobs of the image (layers, config, manifest)


def locate_store(
    cwd: Path, config: Config, store_path: Path | None
) -> tuple[Store, SnapshotId | None]:
    """The store to use (``--store``, ``store =``, else the workspace's) and
    the HEAD of the workspace around ``cwd`` if there is one. Raises
    StoreNotFoundError, NotAWorkspaceError."""
    explicit = store_path or config.store
    if explicit is None:
        store, state = find_workspace(cwd, config, None)
        return store, state.head
    store = open_named_store(explicit, config)
    try:
        found, state = find_workspace(cwd, config, explicit)
        return found, state.head
    except NotAWorkspaceError:
        return store, None


@contextmanager
def shared_store(
    cwd: Path, config: Config, store_path: Path | None
) -> Iterator[tuple[Store, SnapshotId | None]]:
    """:func:`locate_store` under the shared lock."""
    store, head = locate_store(cwd, config, store_path)
    with store.lock(False, config.lock_timeout):
        yield store, head


_REF_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._:@+/-]{0,254}[A-Za-z0-9])?$")


def validate_layout_ref(name: str) -> str:
    """``name`` if it can name an image in an OCI layout (``--tag``), else
    BadNameError."""
    if not _REF_RE.match(name) or "//" in name:
        raise BadNameError(
            f"invalid image name {name!r}",
            hint="use letters, digits and . _ - : @ + / (starting and ending with a "
            "letter or digit), e.g. latest or v1.2",
        )
    return name


def export_snapshot(
    store: Store,
    sid: SnapshotId,
    dest: Path,
    compression: str = "gzip",
    ref: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write snapshot ``sid`` as an OCI image layout: a directory, or a tar
    if ``dest`` ends in ``.tar``. ``ref`` names the image in the layout
    (default ``latest``). Precondition: the store lock is held (shared).
    Raises UnsupportedError, BadPathError (``dest`` is a non-empty
    directory that is not a layout), BadNameError, StoreCorruptError, OSError."""
    name = validate_layout_ref(ref or DEFAULT_REF)
    image = build_image(store, sid, compression, progress)
    if dest.suffix == ".tar" and not dest.is_dir():
        write_layout_tar(image, dest, name)
    else:
        write_layout_dir(image, dest, name)
    size = len(image.manifest) + image.config.descriptor.size
    size += sum(b.descriptor.size for b in image.layers)
    return ExportResult(sid, dest, name, image.manifest_digest, len(image.layers), size)


def export_rev(
    cwd: Path,
    config: Config,
    store_path: Path | None,
    rev: str,
    dest: Path,
    compression: str = "gzip",
    ref: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Resolve ``rev`` (HEAD is the workspace's, if any) and export it."""
    with shared_store(cwd, config, store_path) as (store, head):
        # it keeps the compressed layers in the store's blob cache: files of
        # this user's in another user's store, which its owner could not remove
        check_store_owner(store.root, store.xattr_form)
        sid = resolve_rev(store, head, rev)
        return export_snapshot(store, sid, dest, compression, ref, progress)
