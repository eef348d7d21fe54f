"""``snapws commit`` in a plain workspace: stage only the changed paths
(:mod:`snapws.backends.plain.stage`), journal ``plain-commit``, publish,
then move refs, log, update the index and the state (:func:`finish_commit`,
idempotent, run again by recovery). The directory is only read."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from snapws.backends.plain.fsops import is_root
from snapws.backends.plain.index import Index, IndexWriter, load_index, save_index
from snapws.backends.plain.stage import Stager
from snapws.backends.plain.status import refresh_index, scan_workspace
from snapws.crash import crashpoint
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.layers.entries import opaque_xattr
from snapws.layers.scan import entries_of, read_tree
from snapws.model import (
    Entry,
    SnapshotRecord,
    WorkspaceState,
    decode_manifest,
    encode_manifest,
    manifest_id,
)
from snapws.ops.workspace import Session
from snapws.store.dedup import dedup_staging
from snapws.store.store import EMPTY_LAYER, Store

if TYPE_CHECKING:  # the generic modules import this package lazily
    from snapws.ops.commit import CommitResult


def commit(session: Session, message: str, author: str, allow_empty: bool = False) -> CommitResult:
    """Record the working directory as a new snapshot on top of HEAD: only
    the changed paths are copied into the new layer. The directory is not
    changed. Nothing changed (and not ``allow_empty``): returns a result
    with ``snapshot=None``. Raises LayerRejectedError, UnsupportedError."""
    from snapws.ops.commit import CommitResult, _tz_offset_min

    store, state = session.store, session.state
    result, index, writer = scan_workspace(session)
    changes = result.changes
    if not changes and not allow_empty:
        refresh_index(index, writer)
        return CommitResult(None, None, [], state.branch)
    staging = store.new_staging("commit")
    j: dict[str, Any] = {
        "op": "plain-commit",
        "ws": state.id.hex,
        "staging": staging.name,
        "layer": None,  # staging: a crash now is rolled back
        "old_head": state.head.hex,
    }
    try:
        store.write_journal(j)
        tree = staging / "tree"
        tree.mkdir()
        entries: list[Entry] = []
        if changes:
            stager = Stager(
                os.fsencode(state.path),
                os.fsencode(tree),
                opaque_xattr(store.xattr_form),
                is_root(),
            )
            stager.stage(changes, result.recreated, result.ignored)
            stager.finish()
            crashpoint("plain-commit:staged")
            entries = entries_of(
                read_tree(os.fsencode(tree)), session.config.hash_threads, known=stager.hashes
            )
            manifest = encode_manifest(entries)
        else:
            manifest = b""
        lid = manifest_id(manifest)
        parent_chain = store.chain(state.head)
        chain = parent_chain if lid == EMPTY_LAYER else [*parent_chain, lid]
        record = SnapshotRecord(
            parents=(state.head,),
            layer=lid,
            message=message,
            author=author,
            time_ns=time.time_ns(),
            tz_offset_min=_tz_offset_min(),
        )
        store.write_pending_manifest(staging, manifest)
        j.update(
            layer=lid.hex,
            record=record.canonical().decode(),
            chain=[x.hex for x in chain],
            branch=state.branch,
            max_depth=session.config.max_depth,
            dedup=session.config.dedup,
        )
        store.write_journal(j)
    except BaseException:
        if writer is not None:
            writer.abort()
        rollback_commit(store, j)
        raise
    crashpoint("plain-commit:journaled")
    sid = finish_commit(store, j, index, writer, entries)
    session.reload()
    return CommitResult(sid, lid, changes, state.branch)


def rollback_commit(store: Store, j: dict[str, Any]) -> None:
    """Undo a plain commit journaled while staging (nothing was published)."""
    staging = store.root / "staging" / j["staging"]
    if staging.exists():
        store.discard(staging)
    store.clear_journal()


def finish_commit(
    store: Store,
    j: dict[str, Any],
    index: Index | None = None,
    writer: IndexWriter | None = None,
    entries: list[Entry] | None = None,
) -> SnapshotId:
    """Complete a journaled plain commit (idempotent; run by recovery too).
    ``index``/``writer``/``entries``: what the committing process has in
    memory (recovery reads them from the store)."""
    wid = WorkspaceId(j["ws"])
    state = store.read_workspace(wid)
    lid = LayerId(j["layer"])
    staging = store.root / "staging" / j["staging"]
    record = SnapshotRecord.from_canonical(j["record"].encode())
    old_head = SnapshotId(j["old_head"])
    try:
        if not store.has_layer(lid):
            if j.get("dedup") and lid != EMPTY_LAYER:
                dedup_staging(store, staging, lid, entries)
            store.publish_pending(staging)
        crashpoint("plain-commit:layer-published")
        sid = store.write_snapshot(record, [LayerId(x) for x in j["chain"]])
        crashpoint("plain-commit:snapshot-written")
        if state.head == old_head:
            summary = "commit: " + record.message.splitlines()[0] if record.message else "commit"
            branch = j["branch"]
            if branch is not None and store.read_ref("heads", branch) != sid:
                store.write_ref("heads", branch, sid, record.author, summary)
            crashpoint("plain-commit:ref-moved")
            store.append_reflog_once(
                f"workspaces/{wid.hex}/HEAD", old_head, sid, record.author, summary, record.time_ns
            )
            crashpoint("plain-commit:logged")
            _index_after_commit(store, state, old_head, sid, lid, index, writer, entries)
            writer = None
            crashpoint("plain-commit:indexed")
            store.write_workspace(replace(state, head=sid))
        crashpoint("plain-commit:state-written")
    finally:
        if writer is not None:
            writer.abort()
    max_depth = j.get("max_depth")
    if max_depth:
        from snapws.ops.flatten import compact

        compact(store, sid, int(max_depth))
    store.clear_journal()
    if staging.exists():
        store.discard(staging)
    return sid


def _index_after_commit(
    store: Store,
    state: WorkspaceState,
    old_head: SnapshotId,
    sid: SnapshotId,
    lid: LayerId,
    index: Index | None,
    writer: IndexWriter | None,
    entries: list[Entry] | None,
) -> None:
    """Stack the new layer on the index's HEAD tree; what the scan saw of
    the committed paths is compared with their new HEAD entries."""
    wsdir = store.workspace_dir(state.id)
    if index is None:
        index = load_index(wsdir, old_head)
    if index is None or index.head != old_head:
        if writer is not None:
            writer.abort()
        return  # already updated, or missing: the next status rebuilds it
    if entries is None:
        entries = decode_manifest(store.read_manifest(lid)) if lid != EMPTY_LAYER else []
    index.rebase(index.apply_layer(entries))
    index.head = sid
    save_index(wsdir, index, writer)
