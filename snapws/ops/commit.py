"""``snapws commit``: freeze the upperdir into a layer, remount with the grown
chain and an empty upperdir.

Steps (each named for crash tests, see :mod:`snapws.crash`):

1. freeze: remount the workspace read-only (fails if a file is open for
   writing: nothing changes then); plan the layer from U (O(changes));
2. journal: write the planned record and staging dir;
3. finish (idempotent, also run by recovery): move ignored paths (see
   :mod:`snapws.ops.ignoring`) into the new upperdir, prune no-op copy-ups, publish
   the layer (rename U into the store: the frozen mount keeps showing it),
   write the snapshot, move the branch, create a new upperdir, write the
   workspace state, then put the new mount in place of the frozen one
   without a gap (mounted beneath it, then the frozen one detached: see
   :meth:`snapws.backends.base.Backend.replace`), and clear the journal.

The workspace path shows a mount at every moment: writes during the freeze
fail with EROFS, and none lands in the directory under the mount.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from snapws.backends import backend_for, get_backend
from snapws.crash import crashpoint
from snapws.errors import LayerRejectedError, SnapwsError
from snapws.ids import LayerId, SnapshotId
from snapws.layers import fuseform
from snapws.layers.entries import Node, opaque_xattr
from snapws.layers.scan import entries_of, plan_upper, prune_upper, strip_overlay_xattrs
from snapws.model import (
    Change,
    Kind,
    SnapshotRecord,
    decode_manifest,
    display_path,
    encode_manifest,
    manifest_id,
)
from snapws.ops.ignoring import carry_ignored, ignore_rules
from snapws.ops.workspace import (
    Session,
    ensure_mounted,
    make_upper,
    new_dir_names,
    sweep_workspace_dir,
    top_root,
)
from snapws.store.atomic import syncfs
from snapws.store.dedup import dedup_tree
from snapws.store.store import EMPTY_LAYER, Store


@dataclass(frozen=True, slots=True)
class CommitResult:
    snapshot: SnapshotId | None  # None: nothing to commit
    layer: LayerId | None
    changes: list[Change]
    branch: str | None


def freeze(target: Path, action: str) -> None:
    """Remount the kernel overlay on ``target`` read-only; raises
    WorkspaceBusyError naming the writers. (Ops freeze through the
    workspace's backend: ``backend_for(state).freeze``.)"""
    get_backend("kernel").freeze(target, action)


def commit(session: Session, message: str, author: str, allow_empty: bool = False) -> CommitResult:
    """Record the working tree as a new snapshot on top of HEAD.

    Precondition: the caller holds the store lock exclusively and the workspace
    is mounted. Nothing changed (and not ``allow_empty``): returns a result with
    ``snapshot=None`` and changes nothing. Raises WorkspaceBusyError if a file
    is open for writing, LayerRejectedError, MountError."""
    if session.state.backend == "plain":
        from snapws.backends.plain import ops as plain_ops

        return plain_ops.commit(session, message, author, allow_empty)
    store, state = session.store, session.state
    target = session.path
    backend = backend_for(state)
    backend.freeze(target, "commit")
    crashpoint("commit:frozen")
    staging: Path | None = None
    try:
        syncfs(session.upper)
        plan = plan_upper(
            os.fsencode(session.upper),
            session.chain_view(state.head),
            backend.upper_form,
            ignore_rules(session),
        )
        _refuse_foreign_opaque(plan.keep, backend.upper_form, store.xattr_form)
        if not plan.changes and not allow_empty:
            backend.thaw(target)
            return CommitResult(None, None, [], state.branch)
        if plan.changes:
            entries = entries_of(plan.keep, session.config.hash_threads, known=session.hashes)
            manifest = encode_manifest(entries)
        else:
            manifest = b""
        lid = manifest_id(manifest)
        parent_chain = store.chain(state.head)
        chain = parent_chain if lid == EMPTY_LAYER else [*parent_chain, lid]
        now = time.time_ns()
        record = SnapshotRecord(
            parents=(state.head,),
            layer=lid,
            message=message,
            author=author,
            time_ns=now,
            tz_offset_min=_tz_offset_min(),
        )
        staging = store.new_staging("commit")
        store.write_pending_manifest(staging, manifest)
        new_upper, new_work = new_dir_names()
        journal = {
            "op": "commit",
            "ws": state.id.hex,
            "upper": state.upper,
            "new_upper": new_upper,
            "new_work": new_work,
            "staging": staging.name,
            "layer": lid.hex,
            "prune": [os.fsdecode(p) for p in plan.prune],
            "carry": [os.fsdecode(p) for p in plan.ignored],
            "record": record.canonical().decode(),
            "chain": [x.hex for x in chain],
            "branch": state.branch,
            "old_head": state.head.hex,
            "max_depth": session.config.max_depth,
            "dedup": session.config.dedup,
            "upper_form": backend.upper_form,
        }
        store.write_journal(journal)
    except BaseException:
        if backend.mount_state(store, state) == "frozen":
            backend.thaw(target)
        if staging is not None and not _journaled(store, staging):
            # not journaled (a full disk, say): nothing refers to it
            with suppress(OSError):
                store.discard(staging)
        raise
    crashpoint("commit:journaled")
    sid = finish_commit(store, journal)
    session.reload()
    return CommitResult(sid, lid, plan.changes, state.branch)


def finish_commit(store: Store, j: dict[str, Any]) -> SnapshotId:
    """Complete a journaled commit (idempotent; run again after a crash)."""
    from snapws.ids import WorkspaceId

    wid = WorkspaceId(j["ws"])
    state = store.read_workspace(wid)
    wsdir = store.workspace_dir(wid)
    backend = backend_for(state)
    if state.upper == j["upper"] and backend.mount_state(store, state) == "mounted":
        # a crash left the journal but the mount was thawed since (cannot
        # happen through snapws): freeze it again before U becomes a layer
        backend.freeze(Path(state.path), "commit")
    lid = LayerId(j["layer"])
    staging = store.root / "staging" / j["staging"]
    upper = wsdir / j["upper"]
    record = SnapshotRecord.from_canonical(j["record"].encode())
    # Everything up to the workspace record is idempotent under the journal
    # (durable since commit() wrote it): it may reach the disk in any order,
    # so it shares one syncfs, at the batch's end, instead of an fsync per
    # file and directory. That syncfs is the barrier before the record.
    new_state = state
    with store.durable_batch():
        if j.get("carry") and upper.exists() and state.upper == j["upper"]:
            # ignored paths stay in the working tree: into the next upperdir
            # (made now, its root as U's) before U becomes a layer or is dropped
            next_state = replace(state, upper=j["new_upper"], work=j["new_work"])
            make_upper(store, next_state, upper)
            carry_ignored(upper, wsdir / j["new_upper"], j["carry"])
        if not store.has_layer(lid):
            pending = staging / "manifest.pending"
            manifest = (pending if pending.exists() else staging / "manifest").read_bytes()
            if upper.exists() and state.upper == j["upper"]:
                _prepare_layer_tree(
                    upper,
                    [os.fsencode(p) for p in j["prune"]],
                    manifest,
                    j.get("upper_form", "overlay"),
                    store.xattr_form,
                )
                crashpoint("commit:pruned")
                if j.get("dedup"):
                    dedup_tree(store, upper, lid, manifest)
                os.rename(upper, staging / "tree")
            if not (staging / "tree").exists():
                (staging / "tree").mkdir()  # an --allow-empty commit
            store.publish_pending(staging)
        elif upper.exists() and state.upper == j["upper"]:
            store.discard(upper)  # identical layer already stored
        crashpoint("commit:layer-published")
        sid = store.write_snapshot(record, [LayerId(x) for x in j["chain"]])
        crashpoint("commit:snapshot-written")
        who = record.author
        summary = "commit: " + record.message.splitlines()[0] if record.message else "commit"
        if state.upper == j["upper"]:
            branch = j["branch"]
            if branch is not None and store.read_ref("heads", branch) != sid:
                store.write_ref("heads", branch, sid, who, summary)
            crashpoint("commit:ref-moved")
            new_state = replace(state, head=sid, upper=j["new_upper"], work=j["new_work"])
            make_upper(store, new_state, top_root(store, sid))
            store.append_reflog_once(
                f"workspaces/{wid.hex}/HEAD",
                SnapshotId(j["old_head"]),
                sid,
                who,
                summary,
                record.time_ns,
            )
            crashpoint("commit:logged")
    if state.upper == j["upper"]:
        store.write_workspace(new_state)
        state = new_state
    crashpoint("commit:state-written")
    max_depth = j.get("max_depth")
    if max_depth:
        from snapws.ops.flatten import compact

        compact(store, sid, int(max_depth))
    ensure_mounted(store, state, crash_step="commit:beneath")
    crashpoint("commit:mounted")
    store.clear_journal()
    if staging.exists():
        store.discard(staging)
    sweep_workspace_dir(store, state)
    return sid


def _refuse_foreign_opaque(nodes: list[Node], upper_form: str, xattr_form: str) -> None:
    """Refuse (LayerRejectedError) an opaque marker of the other xattr form in
    an overlay upperdir: anyone who can write the workspace can set
    ``user.overlay.opaque=y`` through a trusted-form mount; the kernel ignores
    it, so recording the directory as opaque would make the layer differ from
    what the mount showed. (fuse-overlayfs's form is made canonical apart.)"""
    if upper_form == fuseform.FORM:
        return
    own = opaque_xattr(xattr_form)
    for node in nodes:
        foreign = [name for name, _ in node.overlay if name.endswith(".opaque") and name != own]
        if foreign:
            raise LayerRejectedError(
                f"{display_path(node.path)} carries {foreign[0]}, an opaque marker this "
                f"workspace's mounts ignore (they use {own}): refusing to record it",
                hint=f"remove it (setfattr -x {foreign[0]} PATH), then commit again",
            )


def _prepare_layer_tree(
    upper: Path, prune: list[bytes], manifest: bytes, upper_form: str, xattr_form: str
) -> None:
    """Make the frozen upperdir equal to its manifest: drop no-op copy-ups,
    strip overlay bookkeeping, restore directory mtimes changed by pruning.
    An upperdir of fuse-overlayfs (``upper_form`` "fuse") first loses its
    ``.wh.`` bookkeeping and opaque markers the manifest does not record, and
    its opaque directories get the marker of the store's ``xattr_form``."""
    from snapws.layers.entries import read_node

    root = os.fsencode(upper)
    entries = decode_manifest(manifest)
    if upper_form == fuseform.FORM:
        fuseform.canonicalise_upper(root, entries)
    prune_upper(root, prune)
    nodes = [read_node(e.path, root if e.path == b"." else root + b"/" + e.path) for e in entries]
    strip_overlay_xattrs(nodes, xattr_form if upper_form == fuseform.FORM else None)
    for e in entries:
        if e.kind is Kind.DIR:
            p = root if e.path == b"." else root + b"/" + e.path
            os.utime(p, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


def _journaled(store: Store, staging: Path) -> bool:
    """Whether the store's journal names ``staging`` (then recovery owns it)."""
    try:
        j = store.read_journal()
    except (OSError, SnapwsError):
        return True  # unsure: leave it to the next command's recovery
    return j is not None and j.get("staging") == staging.name


def _tz_offset_min() -> int:
    lt = time.localtime()
    return int(lt.tm_gmtoff // 60)
