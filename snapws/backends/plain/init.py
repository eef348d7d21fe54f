"""``snapws init --backend plain``: the directory is copied (hashed while
copied) into the base layer and left as it is; journaled as ``init`` with
``"backend": "plain"``, rolled forward by recovery."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapws.backends.plain.fsops import apply_meta, create_node, is_root
from snapws.backends.plain.index import (
    VIRTUAL,
    Index,
    IndexWriter,
    ScanRecord,
    entry_tuple,
    stat_key,
)
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.errors import BadPathError, NameExistsError
from snapws.ids import LayerId, WorkspaceId
from snapws.layers.entries import join, node_entry, read_node
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import HashCache
from snapws.model import (
    ROOT,
    Entry,
    Kind,
    SnapshotRecord,
    WorkspaceState,
    classify,
    encode_manifest,
    manifest_id,
)
from snapws.refnames import validate_ref_name
from snapws.store.dedup import dedup_staging
from snapws.store.store import Store

if TYPE_CHECKING:  # the generic modules import this package lazily
    pass


#: What a plain workspace records as its upper and work directories (none exist).
NO_UPPER = "plain"


def validate_plain_init(path: Path, store_root: Path) -> None:
    """Refuse bad targets before anything changes. Raises BadPathError."""
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


def init_plain(
    path: Path,
    store_root: Path,
    config: Config,
    branch: str | None = None,
    message: str = "initial snapshot",
    progress: Callable[[int], None] | None = None,
) -> tuple[Store, WorkspaceState]:
    """Make ``path`` a plain workspace whose base layer is a copy of its
    current content (the directory itself is not changed). Any user; the
    store need not be on the same filesystem.

    Raises BadPathError, NameExistsError, BadNameError, UnsupportedError."""
    path = Path(os.path.abspath(path))
    branch = validate_ref_name("branch", branch or config.default_branch)
    validate_plain_init(path, store_root)
    created = not path.exists()
    store_created = not store_root.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
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
                        hint="use it as it is",
                    )
            if store.read_ref("heads", branch) is not None:
                raise NameExistsError(
                    f"branch {branch!r} already exists in the store {store.root}",
                    hint="pass --branch NAME for this workspace's first branch",
                )
        except BaseException:
            if created:
                path.rmdir()
            raise
        wid = WorkspaceId(secrets.token_hex(16))
        staging = store.new_staging("init")
        index_dir = store.new_staging("plain-index")
        writer = IndexWriter.begin(index_dir, path)
        try:
            if writer is None:
                raise PermissionError(f"cannot write in the store {store.root}")
            entries, records = _copy_tree(
                os.fsencode(path), os.fsencode(staging / "tree"), config, progress
            )
            manifest = encode_manifest(entries)
            lid = manifest_id(manifest)
            store.write_pending_manifest(staging, manifest)
            author = config.author_or_default()
            now = time.time_ns()
            tz = int(time.localtime().tm_gmtoff // 60)
            record = SnapshotRecord((), lid, message, author, now, tz)
            index = Index.from_entries(record.id, entries)
            for d, rec in records.items():
                index.set_scan(d, rec)
            index.ref_ns, index.slack_ns = writer.ref_ns, writer.slack_ns
            writer.commit(index)
            writer = None
        except BaseException:
            if writer is not None:
                writer.abort()
            store.discard(staging)
            store.discard(index_dir)
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()  # made here, and never written to
            raise
        j = {
            "op": "init",
            "backend": "plain",
            "ws": wid.hex,
            "path": str(path),
            "staging": staging.name,
            "index_staging": index_dir.name,
            "branch": branch,
            "message": message,
            "author": author,
            "time_ns": now,
            "tz": tz,
            "layer": lid.hex,
            "dedup": config.dedup,
        }
        store.write_journal(j)
        crashpoint("plain-init:journaled")
        state = finish_init(store, j, entries)
    return store, state


def _copy_tree(
    root: bytes, tree: bytes, config: Config, progress: Callable[[int], None] | None
) -> tuple[list[Entry], dict[bytes, ScanRecord]]:
    """Copy the working tree at ``root`` into ``tree`` (hashing files while
    copying); returns the staged tree's manifest entries and the scan
    records of the working tree (what was copied, with its stats)."""
    as_root = is_root()
    hashes = HashCache()
    dirs_meta: list[tuple[Any, bytes]] = []
    seen: dict[bytes, tuple[list[bytes], list[tuple[int, ...]], list[Entry]]] = {}
    st_root = os.lstat(root)
    rnode = read_node(ROOT, root, st_root)
    os.mkdir(tree, 0o700)
    dirs_meta.append((rnode, tree))
    seen[VIRTUAL] = ([ROOT], [stat_key(st_root)], [node_entry(rnode, None)])
    stack = [ROOT]
    count = 0
    while stack:
        rel = stack.pop()
        src_dir = join(root, rel)
        names: list[bytes] = []
        keys: list[tuple[int, ...]] = []
        works: list[Entry] = []
        with os.scandir(src_dir) as it:
            listing = list(it)
        for de in listing:
            p = de.name if rel == ROOT else rel + b"/" + de.name
            try:
                st = de.stat(follow_symlinks=False)
                node = read_node(p, de.path, st)
                dst = join(tree, p)
                if node.kind is Kind.DIR:
                    os.mkdir(dst, 0o700)
                    dirs_meta.append((node, dst))
                    stack.append(p)
                    digest = None
                else:
                    digest = create_node(node, dst, hashed=True)
                    if digest is not None:
                        hashes.put(dst, digest)
                    apply_meta(node, dst, as_root)
            except FileNotFoundError:
                continue  # removed while we copied: not part of the snapshot
            names.append(de.name)
            keys.append(stat_key(st))
            works.append(node_entry(node, digest))
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(count)
        seen[rel] = (names, keys, works)
    for node, dst in reversed(dirs_meta):
        apply_meta(node, dst, as_root)
    entries = entries_of(read_tree(tree), config.hash_threads, known=hashes)
    staged = {e.path: e for e in entries}
    records: dict[bytes, ScanRecord] = {}
    for rel, (names, keys, works) in seen.items():
        dirty = {}
        for name, w in zip(names, works, strict=True):
            e = staged.get(w.path)
            if e is None or classify(w.path, e, w) is not None:
                dirty[name] = entry_tuple(w)  # the copy differs (an xattr it could not take)
        records[rel] = ScanRecord.build(names, keys, dirty, False)
    return entries, records


def finish_init(
    store: Store, j: dict[str, Any], entries: list[Entry] | None = None
) -> WorkspaceState:
    """Roll a journaled plain init forward (idempotent; run by recovery too)."""
    lid = LayerId(j["layer"])
    staging = store.root / "staging" / j["staging"]
    if not store.has_layer(lid):
        if j.get("dedup"):
            dedup_staging(store, staging, lid, entries)
        store.publish_pending(staging)
    if staging.exists():
        store.discard(staging)  # the same layer was stored already
    crashpoint("plain-init:layer-published")
    record = SnapshotRecord((), lid, j["message"], j["author"], j["time_ns"], j["tz"])
    sid = store.write_snapshot(record, [lid])
    crashpoint("plain-init:snapshot-written")
    if store.read_ref("heads", j["branch"]) is None:
        store.write_ref("heads", j["branch"], sid, j["author"], "init")
    state = WorkspaceState(
        id=WorkspaceId(j["ws"]),
        path=j["path"],
        head=sid,
        branch=j["branch"],
        upper=NO_UPPER,
        work=NO_UPPER,
        backend="plain",
    )
    wsdir = store.workspace_dir(state.id)
    wsdir.mkdir(parents=True, exist_ok=True)
    index_dir = store.root / "staging" / j["index_staging"]
    if (index_dir / "index").exists():
        os.rename(index_dir / "index", wsdir / "index")
    if index_dir.exists():
        store.discard(index_dir)
    store.append_reflog_once(
        f"workspaces/{state.id.hex}/HEAD", None, sid, j["author"], "init", j["time_ns"]
    )
    store.write_workspace(state)
    crashpoint("plain-init:state-written")
    store.clear_journal()
    return state
