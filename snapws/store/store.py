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
module (with :mod:`snapws.store.refs`, its refs and reflogs in branch
namespaces) is the only one that writes store records.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

from snapws.errors import (
    DamagedRecordError,
    MissingLayerError,
    StoreCorruptError,
    StoreNotFoundError,
    permission_denied,
)
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.model import SnapshotRecord, WorkspaceState, manifest_id
from snapws.store.atomic import (
    DurableBatch,
    durable_batch,
    fsync_dir,
    rename_durable,
    write_atomic,
)
from snapws.store.journal import journal_problem
from snapws.store.lock import StoreLock
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


class Store(RefStore):
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
        return StoreLock(self.root / "lock", exclusive, timeout)

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

    # ---- snapshots -----------------------------------------------------
    def write_snapshot(self, rec: SnapshotRecord, chain: list[LayerId]) -> SnapshotId:
        """Publish a snapshot record and its chain (idempotent)."""
        sid = rec.id
        path = self.root / "snapshots" / f"{sid.hex}.json"
        if path.exists():
            return sid  # its chain may have been flattened since: keep that
        self.write_chain(sid, chain)
        write_atomic(path, rec.canonical(), mode=0o444)
        return sid

    def write_chain(self, sid: SnapshotId, chain: list[LayerId]) -> None:
        """Replace the chain used to mount ``sid`` by an equivalent one."""
        write_atomic(
            self.root / "chains" / f"{sid.hex}.json",
            json.dumps([lid.hex for lid in chain]).encode(),
        )

    def has_snapshot(self, sid: SnapshotId) -> bool:
        return (self.root / "snapshots" / f"{sid.hex}.json").is_file()

    def read_snapshot(self, sid: SnapshotId) -> SnapshotRecord:
        path = self.root / "snapshots" / f"{sid.hex}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise StoreCorruptError(f"snapshot {sid.short()} is missing ({path})") from e
        try:
            rec = SnapshotRecord.from_canonical(data)
        except (ValueError, UnicodeError) as e:
            raise DamagedRecordError(f"snapshot record {path} is unreadable: {_reason(e)}") from e
        if rec.id != sid:
            raise DamagedRecordError(f"snapshot record {path} does not hash to its name")
        return rec

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

    def chain(self, sid: SnapshotId) -> list[LayerId]:
        """The layers to mount for ``sid``, bottom first. Raises
        DamagedRecordError naming the file if it is missing, not a JSON list
        of layer ids, or empty."""
        path = self.root / "chains" / f"{sid.hex}.json"
        try:
            obj = json.loads(path.read_bytes())
            if not isinstance(obj, list) or not obj:
                raise ValueError("not a non-empty JSON list of layer ids")
            return [_layer_id(x) for x in obj]
        except (OSError, ValueError) as e:
            raise DamagedRecordError(
                f"chain of snapshot {sid.short()} ({path}) is unreadable: {_reason(e)}"
            ) from e

    def check_layers(self, sid: SnapshotId, chain: list[LayerId]) -> None:
        """Raise MissingLayerError if a layer of ``chain`` (``sid``'s) has no
        tree in the store (one stat per layer)."""
        for lid in chain:
            if not self.layer_tree(lid).is_dir():
                raise MissingLayerError(
                    f"layer {lid.hex} of snapshot {sid.short()}'s chain is missing "
                    f"({self.layer_dir(lid)})"
                )

    def snapshot_ids(self) -> list[SnapshotId]:
        out = []
        for p in (self.root / "snapshots").iterdir():
            if p.suffix == ".json":
                try:
                    out.append(SnapshotId(p.stem))
                except ValueError:
                    continue
        return sorted(out)

    def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
        return [s for s in self.snapshot_ids() if s.hex.startswith(prefix)]

    # ---- forgetting (snapws prune) ---------------------------------------
    def delete_snapshot(self, sid: SnapshotId) -> bool:
        """Forget ``sid``: write its tombstone ``forgotten/<id>``, then move
        its record (the commit point: from then on the snapshot is gone)
        and its chain into trash/ and delete them. Layers stay (gc's job).
        Idempotent: finishes a half-done deletion. Returns True if the
        record was still there."""
        tomb = self.root / "forgotten" / sid.hex
        if not tomb.parent.is_dir():
            tomb.parent.mkdir(exist_ok=True)
            fsync_dir(self.root)
        if not tomb.exists():
            write_atomic(tomb, json.dumps({"forgotten_ns": time.time_ns()}).encode())
        record = self.root / "snapshots" / f"{sid.hex}.json"
        chain = self.root / "chains" / f"{sid.hex}.json"
        had = record.exists()
        for path in (record, chain):
            if path.exists():
                self.discard(path)
        return had

    def is_forgotten(self, sid: SnapshotId) -> bool:
        """True if ``sid`` was deleted by :meth:`delete_snapshot`."""
        return (self.root / "forgotten" / sid.hex).is_file() and not self.has_snapshot(sid)

    def forgotten_with_prefix(self, prefix: str) -> list[SnapshotId]:
        try:
            names = os.listdir(self.root / "forgotten")
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(prefix):
                try:
                    out.append(SnapshotId(name))
                except ValueError:
                    continue
        return sorted(out)

    # ---- workspaces ----------------------------------------------------
    def workspace_dir(self, wid: WorkspaceId) -> Path:
        return self.root / "workspaces" / wid.hex

    def read_workspace(self, wid: WorkspaceId) -> WorkspaceState:
        """The record of workspace ``wid``. Raises DamagedRecordError naming
        the file if it is missing, unparsable, breaks a rule of the format
        (types, ids, ``upper``/``work`` single names inside its directory) or
        names another workspace."""
        path = self.workspace_dir(wid) / "state.json"
        try:
            state = WorkspaceState.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError) as e:
            raise DamagedRecordError(f"workspace record {path} is unreadable: {_reason(e)}") from e
        if state.id != wid:
            raise DamagedRecordError(
                f"workspace record {path} names another workspace ({state.id.short()})"
            )
        return state

    def write_workspace(self, state: WorkspaceState) -> None:
        path = self.workspace_dir(state.id) / "state.json"
        write_atomic(path, json.dumps(state.to_json(), sort_keys=True, indent=1).encode())

    def workspace_records(self) -> tuple[list[WorkspaceState], list[DamagedRecordError]]:
        """Every readable workspace record, and an error for each damaged one."""
        out, damaged = [], []
        for p in sorted((self.root / "workspaces").iterdir()):
            if (p / "state.json").is_file():
                try:
                    wid = WorkspaceId(p.name)
                except ValueError:
                    continue
                try:
                    out.append(self.read_workspace(wid))
                except DamagedRecordError as e:
                    damaged.append(e)
        return out, damaged

    def workspaces(self) -> list[WorkspaceState]:
        """Every workspace record. Raises DamagedRecordError for a damaged one."""
        out, damaged = self.workspace_records()
        if damaged:
            raise damaged[0]
        return out

    # ---- rootless namespaces (see snapws.backends.userns) ----------------
    def namespace_records(self, wid: WorkspaceId) -> dict[int, dict[str, Any]]:
        """The user+mount namespaces recorded for a rootless workspace, by the
        pid that made each one (``workspaces/<id>/ns/<pid>``). Unreadable
        records (a crash while writing) are skipped."""
        base = self.workspace_dir(wid) / "ns"
        out: dict[int, dict[str, Any]] = {}
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            try:
                obj = json.loads((base / name).read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(obj, dict):
                out[int(name)] = obj
        return dict(sorted(out.items()))

    def write_namespace_record(self, wid: WorkspaceId, pid: int, obj: dict[str, Any]) -> None:
        """Record the namespace that process ``pid`` made (caller holds the lock)."""
        base = self.workspace_dir(wid) / "ns"
        if not base.is_dir():
            base.mkdir(exist_ok=True)
            fsync_dir(base.parent)
        write_atomic(base / str(pid), json.dumps(obj, sort_keys=True).encode())

    def remove_namespace_record(self, wid: WorkspaceId, pid: int) -> None:
        """Forget the namespace record of ``pid`` (its namespace is gone)."""
        (self.workspace_dir(wid) / "ns" / str(pid)).unlink(missing_ok=True)

    def remove_workspace_record(self, wid: WorkspaceId) -> None:
        d = self.workspace_dir(wid)
        if d.exists():
            self.discard(d)

    # ---- journal -------------------------------------------------------
    def write_journal(self, obj: dict[str, Any]) -> None:
        write_atomic(self.root / "journal.json", json.dumps(obj, sort_keys=True).encode())

    def read_journal(self) -> dict[str, Any] | None:
        try:
            data = (self.root / "journal.json").read_bytes()
        except FileNotFoundError:
            return None
        path = self.root / "journal.json"
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise DamagedRecordError(
                f"journal {path} is unreadable: {_reason(e)}", hint=JOURNAL_HINT
            ) from e
        problem = journal_problem(obj)
        if problem is not None:
            raise DamagedRecordError(f"journal {path} is damaged: {problem}", hint=JOURNAL_HINT)
        assert isinstance(obj, dict)
        return obj

    def journal_namespace(self, j: dict[str, Any]) -> str:
        """The branch namespace the journaled operation ``j`` moves refs in:
        its ``namespace`` field (init writes one: its workspace has no
        record yet), else that of the workspace record it names (``ws``),
        else the root namespace ("": store-wide operations, journals
        written before namespaces)."""
        ns = j.get("namespace")
        if isinstance(ns, str):
            return ns
        try:
            return self.read_workspace(WorkspaceId(j["ws"])).namespace
        except (KeyError, TypeError, ValueError, DamagedRecordError):
            return ""

    def clear_journal(self) -> None:
        try:
            (self.root / "journal.json").unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.root)

    # ---- deletion ------------------------------------------------------
    def discard(self, path: Path) -> None:
        """Move ``path`` (inside the store) to trash/ atomically, then delete it.
        A crash mid-delete leaves only trash, which :meth:`empty_trash` clears."""
        dest = self.root / "trash" / f"{path.name}-{os.urandom(6).hex()}"
        rename_durable(path, dest)
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


JOURNAL_HINT = (
    "the interrupted operation cannot be finished from it: move the journal out of the "
    "store (nothing is deleted), then `snapws verify` and `snapws verify --repair`"
)


def _layer_id(x: object) -> LayerId:
    if not isinstance(x, str):
        raise ValueError(f"a layer id is {type(x).__name__}, not a string")
    return LayerId(x)


def _reason(e: Exception) -> str:
    """An exception as a short reason (OS errors without the path: the
    message names the file)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _rmtree(path: Path) -> None:
    """Remove a tree even where mode bits forbid it (rootless leftovers).

    Iterative, through directory descriptors: depth is bounded neither by
    Python's recursion limit nor by PATH_MAX. Entries already gone are
    skipped (a concurrent deleter, a crash)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink(missing_ok=True)
        return
    _chmod_quietly(path, 0o700)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        top = os.open(path, flags)
    except FileNotFoundError:
        return
    # per open directory: its fd, its name in the parent (the entry below),
    # and its subdirectories still to remove (its other entries are gone)
    stack: list[tuple[int, str, list[str]]] = [(top, "", _clear_files(top))]
    try:
        while stack:
            fd, name, subdirs = stack[-1]
            if subdirs:
                sub = subdirs.pop()
                with suppress(OSError):
                    os.chmod(sub, 0o700, dir_fd=fd, follow_symlinks=False)
                try:
                    child = os.open(sub, flags, dir_fd=fd)
                except FileNotFoundError:
                    continue
                stack.append((child, sub, _clear_files(child)))
                continue
            stack.pop()
            os.close(fd)
            if stack:
                with suppress(FileNotFoundError):
                    os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    with suppress(FileNotFoundError):
        os.rmdir(path)


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in the directory ``fd``; return the names
    of its subdirectories."""
    subdirs = []
    with os.scandir(fd) as it:
        for de in it:
            if de.is_dir(follow_symlinks=False):
                subdirs.append(de.name)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(de.name, dir_fd=fd)
    return subdirs


def _chmod_quietly(path: Path, mode: int) -> None:
    with suppress(OSError):
        os.chmod(path, mode)
