"""The on-disk store (format described in docs/format.md).

    <store>/snapws-store.json   format marker
    <store>/lock                flock(2) target
    <store>/journal.json        the interrupted operation, if any
    <store>/layers/<id>/        manifest + tree/ (overlay form), immutable
    <store>/snapshots/<id>.json snapshot records, immutable
    <store>/chains/<id>.json    layer chain to mount a snapshot (bottom first)
    <store>/refs/heads|tags/    one file per branch / tag
    <store>/refs/remotes/<r>/   remote-tracking refs: one file per tag fetched from r
    <store>/refs/ns/<ns>/       heads/, tags/, remotes/ of branch namespace <ns>
    <store>/logs/               reflogs (JSON lines)
    <store>/workspaces/<id>/    state.json, upper-N/, work-N/, ns/<pid> (rootless)
    <store>/staging/            layers and trees under construction
    <store>/trash/              things being deleted
    <store>/forgotten/<id>      tombstones of snapshots deleted by prune

Every record is published with write-temp, fsync, rename, fsync-dir. This
module (with :mod:`snapws.store.records`, its snapshot, workspace and journal
records, and :mod:`snapws.store.refs`, its refs and reflogs in branch
namespaces) is the only one that writes store records.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from snapws.beneath import remove_tree
from snapws.errors import (
    MissingLayerError,
    StoreCorruptError,
    StoreNotFoundError,
    permission_denied,
)
from snapws.ids import LayerId, SnapshotId
from snapws.model import manifest_id
from snapws.store.atomic import (
    DurableBatch,
    durable_batch,
    fsync_dir,
    rename_durable,
    write_atomic,
)
from snapws.store.lock import StoreLock
from snapws.store.records import RecordStore
from snapws.store.refs import RefStore

FORMAT = 1
MARKER = "snapws-store.json"
EMPTY_MANIFEST = b""
EMPTY_LAYER = manifest_id(EMPTY_MANIFEST)


XATTR_FORMS = ("trusted", "user")


def in_initial_user_namespace() -> bool:
    """True unless this process runs in a user namespace that maps only some
    ids (the identity map over all ids is the initial namespace's)."""
    try:
        with open("/proc/self/uid_map", "rb") as f:
            lines = f.read().split()
    except OSError:
        return True  # no /proc: assume the host
    return lines == [b"0", b"0", b"4294967295"]


def default_xattr_form() -> str:
    """The overlay xattr form of a store created by this process: "trusted"
    for real root, "user" otherwise (rootless mounts need ``userxattr``; a
    non-root user can neither read nor write trusted.* attributes)."""
    return "trusted" if os.geteuid() == 0 and in_initial_user_namespace() else "user"


class Store(RecordStore, RefStore):
    """An opened store, seen from one branch namespace (``namespace``, ""
    for the root namespace; :meth:`in_namespace`, :mod:`snapws.store.refs`).
    Methods raise StoreCorruptError for unreadable records and OSError for
    I/O failures not otherwise described.

    ``xattr_form`` is the namespace of the overlay attributes (opaque markers)
    in its layer trees, fixed when the store was made: "trusted" (made by
    root; read by the kernel's default mounts) or "user" (made by a non-root
    user; mounted with ``userxattr``, rootless or by root)."""

    def __init__(self, root: Path, xattr_form: str = "trusted", namespace: str = "") -> None:
        self.root = root
        self.xattr_form = xattr_form
        self.namespace = namespace

    # ---- opening -------------------------------------------------------
    @classmethod
    def open(cls, root: Path) -> Store:
        """Open an existing store; raises StoreNotFoundError,
        StorePermissionError (this user may not read it)."""
        root = root.absolute()
        try:
            found = (root / MARKER).is_file()
        except PermissionError as e:
            raise permission_denied(e, root) from e
        if not found:
            raise StoreNotFoundError(f"no snapws store at {root}")
        try:
            marker = json.loads((root / MARKER).read_bytes())
            fmt = marker.get("format")
            form = marker.get("xattrs", "trusted")  # stores made before the field: trusted
        except PermissionError as e:
            raise permission_denied(e, root) from e
        except (OSError, ValueError, AttributeError) as e:
            raise StoreCorruptError(f"unreadable store marker {root / MARKER}: {e}") from e
        if fmt != FORMAT:
            raise StoreCorruptError(
                f"store {root} has format {fmt}, this snapws reads format {FORMAT}",
                hint="upgrade snapws",
            )
        if form not in XATTR_FORMS:
            raise StoreCorruptError(
                f"store {root} names an unknown overlay xattr form {form!r}",
                hint="upgrade snapws",
            )
        return cls(root, form)

    @classmethod
    def create(cls, root: Path, xattr_form: str | None = None) -> Store:
        """Create a store (or open an existing one, whatever its form).

        ``xattr_form`` ("trusted" or "user") defaults to
        :func:`default_xattr_form`; it is recorded in the store marker and
        never changes. Raises ValueError for an unknown form."""
        root = root.absolute()
        if (root / MARKER).is_file():
            return cls.open(root)
        form = default_xattr_form() if xattr_form is None else xattr_form
        if form not in XATTR_FORMS:
            raise ValueError(f"unknown overlay xattr form {form!r}")
        root.mkdir(parents=True, exist_ok=True)
        for sub in (
            "layers",
            "snapshots",
            "chains",
            "refs/heads",
            "refs/tags",
            "logs",
            "workspaces",
            "staging",
            "trash",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
        store = cls(root, form)
        store._ensure_empty_layer()
        marker = {"format": FORMAT, "xattrs": form}
        write_atomic(root / MARKER, json.dumps(marker).encode() + b"\n")
        fsync_dir(root.parent)
        return store

    def lock(self, exclusive: bool, timeout: float) -> StoreLock:
        return StoreLock(self.root / "lock", exclusive, timeout, self.xattr_form)

    # ---- layers --------------------------------------------------------
    def layer_dir(self, lid: LayerId) -> Path:
        return self.root / "layers" / lid.hex

    def layer_tree(self, lid: LayerId) -> Path:
        return self.layer_dir(lid) / "tree"

    def has_layer(self, lid: LayerId) -> bool:
        return (self.layer_dir(lid) / "manifest").is_file()

    def read_manifest(self, lid: LayerId) -> bytes:
        try:
            return (self.layer_dir(lid) / "manifest").read_bytes()
        except OSError as e:
            raise StoreCorruptError(f"layer {lid.short()} is missing its manifest: {e}") from e

    def new_staging(self, prefix: str = "tx") -> Path:
        """A fresh directory under staging/ (same filesystem as layers/)."""
        path = self.root / "staging" / f"{prefix}-{os.urandom(8).hex()}"
        path.mkdir()
        return path

    def durable_batch(self) -> AbstractContextManager[DurableBatch]:
        """A durable batch on the store's filesystem (:func:`durable_batch`):
        the records, layers and renames written inside it skip their fsyncs
        and become durable together at its end, with one syncfs. Use it for
        steps that are safe to find half done after a power loss; write the
        step that publishes them (a ref, the journal's removal) after it."""
        return durable_batch(self.root)

    def publish_layer(self, staging: Path, manifest: bytes) -> LayerId:
        """Publish ``staging/tree`` as the layer whose manifest is ``manifest``.

        Writes the manifest into ``staging``, fsyncs it, and renames the
        directory into layers/. If the layer already exists (same content),
        ``staging`` is left for the caller to discard. Returns the layer id."""
        lid = manifest_id(manifest)
        if self.has_layer(lid):
            return lid
        write_atomic(staging / "manifest", manifest, mode=0o444)
        rename_durable(staging, self.layer_dir(lid))
        return lid

    def write_pending_manifest(self, staging: Path, manifest: bytes) -> None:
        """Record the manifest a staging dir will be published with (durable)."""
        write_atomic(staging / "manifest.pending", manifest)

    def publish_pending(self, staging: Path) -> LayerId:
        """Publish a staging dir prepared with :meth:`write_pending_manifest`
        and holding ``tree/``. Idempotent across crashes. Returns the layer id."""
        pending = staging / "manifest.pending"
        final = staging / "manifest"
        if pending.exists():
            os.chmod(pending, 0o444)
            rename_durable(pending, final)
        manifest = final.read_bytes()
        lid = manifest_id(manifest)
        if not self.has_layer(lid):
            rename_durable(staging, self.layer_dir(lid))
        return lid

    def _ensure_empty_layer(self) -> None:
        if self.has_layer(EMPTY_LAYER):
            return
        staging = self.new_staging("empty")
        (staging / "tree").mkdir()
        self.publish_layer(staging, EMPTY_MANIFEST)

    def layer_ids(self) -> list[LayerId]:
        out = []
        for p in (self.root / "layers").iterdir():
            try:
                out.append(LayerId(p.name))
            except ValueError:
                continue
        return sorted(out)

    # ---- the layers of a snapshot's chain -------------------------------
    def chain_layers(self, sid: SnapshotId) -> list[LayerId]:
        """The layers of ``sid``'s chain that hold anything (the empty layer
        left out), bottom first. Raises DamagedRecordError as :meth:`chain`."""
        return [lid for lid in self.chain(sid) if lid != EMPTY_LAYER]

    def layer_trees(self, sid: SnapshotId) -> list[Path]:
        """The tree directories of ``sid``'s chain, TOPMOST first (the order
        of an overlay's lower directories and of a ChainView). Raises
        DamagedRecordError (the chain) and MissingLayerError (a layer is gone)."""
        chain = self.chain_layers(sid)
        self.check_layers(sid, chain)
        return [self.layer_tree(lid) for lid in reversed(chain)]

    def unshared_layers(self, a: SnapshotId, b: SnapshotId) -> list[LayerId]:
        """The layers of the chains of ``a`` and ``b`` above their common
        base (``a``'s, then ``b``'s): what a diff between the two must read."""
        ca, cb = self.chain_layers(a), self.chain_layers(b)
        common = 0
        while common < min(len(ca), len(cb)) and ca[common] == cb[common]:
            common += 1
        return [*ca[common:], *cb[common:]]

    def check_layers(self, sid: SnapshotId, chain: list[LayerId]) -> None:
        """Raise MissingLayerError if a layer of ``chain`` (``sid``'s) has no
        tree in the store (one stat per layer)."""
        for lid in chain:
            if not self.layer_tree(lid).is_dir():
                raise MissingLayerError(
                    f"layer {lid.hex} of snapshot {sid.short()}'s chain is missing "
                    f"({self.layer_dir(lid)})"
                )

    # ---- deletion ------------------------------------------------------
    def discard(self, path: Path, durable: bool = True) -> None:
        """Move ``path`` (inside the store) to trash/ atomically, then delete it.
        A crash mid-delete leaves only trash, which :meth:`empty_trash` clears.
        ``durable=False``: the move is not synced, for what a sweep would
        discard again if a power loss undid the move (a dead upperdir or
        workdir, a staging directory no journal names): two fsyncs fewer."""
        dest = self.root / "trash" / f"{path.name}-{os.urandom(6).hex()}"
        if durable:
            rename_durable(path, dest)
        else:
            os.rename(path, dest)
        _rmtree(dest)

    def empty_trash(self) -> None:
        for p in (self.root / "trash").iterdir():
            _rmtree(p)

    def trash(self, path: Path) -> Path:
        """Move ``path`` (inside the store) into trash/ atomically; returns
        its new name there. :meth:`purge` or :meth:`empty_trash` deletes it."""
        dest = self.root / "trash" / f"{path.name}-{os.urandom(6).hex()}"
        rename_durable(path, dest)
        return dest

    def purge(self, trashed: Path) -> None:
        """Delete one entry of trash/ (see :meth:`trash`)."""
        _rmtree(trashed)

    def delete_layer(self, lid: LayerId) -> bool:
        """Delete a layer: rename it into trash/ (atomic), then remove it.
        The caller makes sure nothing uses it. False if it was not there."""
        if not self.layer_dir(lid).exists():
            return False
        self.purge(self.trash(self.layer_dir(lid)))
        return True

    def iter_staging(self) -> Iterator[Path]:
        yield from (self.root / "staging").iterdir()


def _rmtree(path: Path) -> None:
    """Remove a tree even where mode bits forbid it (rootless leftovers).

    Iterative, through directory descriptors (:func:`snapws.beneath.remove_tree`):
    depth is bounded neither by Python's recursion limit nor by PATH_MAX
    nor by RLIMIT_NOFILE. Entries already gone are skipped (a concurrent
    deleter, a crash)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink(missing_ok=True)
        return
    _chmod_quietly(path, 0o700)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        with suppress(FileNotFoundError):
            remove_tree(parent, os.fsencode(path.name), force=True)
    finally:
        os.close(parent)


def _chmod_quietly(path: Path, mode: int) -> None:
    with suppress(OSError):
        os.chmod(path, mode)
