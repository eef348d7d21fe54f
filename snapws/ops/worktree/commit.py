"""``snapws commit``: the working tree's changes become a new layer and a new
snapshot on top of HEAD; one flow for every backend.

Steps (each named for crash tests, see :mod:`snapws.crash`):

1. quiesce the working tree (an overlay mount is frozen: a file open for
   writing refuses the commit, changing nothing) (``commit:frozen``); find
   the changes (:meth:`~snapws.backends.base.Backend.changes`) and stage
   the layer (:meth:`~snapws.backends.base.Backend.stage_layer`: the
   changed paths copied, or the frozen upperdir named) (``commit:staged``);
2. journal: the planned record, chain and new state (``commit:journaled``);
3. finish (idempotent, also run by recovery, :func:`finish_commit`): the
   layer's tree completed by the backend, deduplicated and published
   (``commit:layer-published``), the snapshot written, the branch moved,
   the backend's new state prepared (:meth:`show`), HEAD's reflog, the
   workspace state (``commit:state-written``); compaction; the new state
   shown (an overlay mount replaced without a gap, ``commit:beneath``)
   (``commit:shown``); the journal cleared.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from snapws.backends import backend_for
from snapws.backends.base import WorkChanges
from snapws.crash import crashpoint
from snapws.errors import SnapwsError
from snapws.ids import LayerId, SnapshotId
from snapws.interrupts import deferred_signals
from snapws.model import Change, SnapshotRecord, WorkspaceState, encode_manifest, manifest_id
from snapws.ops.journals import CommitJournal, mark_shown
from snapws.ops.recovery import finishing
from snapws.session import Session
from snapws.store.dedup import dedup_staging
from snapws.store.store import EMPTY_LAYER, Store


@dataclass(frozen=True, slots=True)
class CommitResult:
    snapshot: SnapshotId | None  # None: nothing to commit
    layer: LayerId | None
    changes: list[Change]
    branch: str | None


def commit(session: Session, message: str, author: str, allow_empty: bool = False) -> CommitResult:
    """Record the working tree as a new snapshot on top of HEAD.

    Precondition: the caller holds the store lock exclusively and the
    workspace is shown. Nothing changed (and not ``allow_empty``): returns a
    result with ``snapshot=None`` and changes nothing. Raises
    WorkspaceBusyError (a file open for writing), LayerRejectedError,
    MountError, and OSError-based errors of a full or unwritable store
    (nothing is then half-written)."""
    store, state = session.store, session.state
    backend = backend_for(state)
    work = None
    staging: Path | None = None
    # from the journal on, an interrupt waits for the commit to be finished
    # (else the workspace stays frozen until the next command finishes it);
    # before it, one thaws the working tree and nothing is committed
    with ExitStack() as critical:
        try:
            backend.quiesce(store, state, "commit")  # (release thaws only what is frozen)
            crashpoint("commit:frozen")
            work = backend.changes(session, hold=True)
            if not work.changes and not allow_empty:
                backend.release(store, state, work)
                return CommitResult(None, None, [], state.branch)
            staging = store.new_staging("commit")
            if work.changes:
                manifest = encode_manifest(backend.stage_layer(session, work, staging / "tree"))
            else:
                manifest = b""
            crashpoint("commit:staged")
            lid = manifest_id(manifest)
            parent_chain = store.chain(state.head)
            record = SnapshotRecord(
                parents=(state.head,),
                layer=lid,
                message=message,
                author=author,
                time_ns=time.time_ns(),
                tz_offset_min=tz_offset_min(),
            )
            store.write_pending_manifest(staging, manifest)
            journal = CommitJournal(
                ws=state.id,
                staging=staging.name,
                layer=lid,
                record=record,
                chain=parent_chain if lid == EMPTY_LAYER else [*parent_chain, lid],
                branch=state.branch,
                old_head=state.head,
                new_state=backend.next_state(state, record.id, state.branch, keep=False, work=work),
                max_depth=session.config.max_depth,
                dedup=session.config.dedup,
                part=backend.commit_part(session, work),
            )
            critical.enter_context(deferred_signals("the commit was finished first"))
            store.write_journal(journal.to_json())
        except BaseException:
            backend.release(store, state, work)
            if staging is not None and not _journaled(store, staging):
                # not journaled (a full disk, say): nothing refers to it
                with suppress(OSError):
                    store.discard(staging)
            raise
        crashpoint("commit:journaled")
        with finishing(store, journal.to_json()):  # a failure says the journal is pending
            sid = finish_commit(store, journal, work)
        session.reload()
    return CommitResult(sid, lid, work.changes, state.branch)


def finish_commit(store: Store, j: CommitJournal, work: WorkChanges | None = None) -> SnapshotId:
    """Complete a journaled commit (idempotent; run again after a crash).
    ``work``: what the committing process's backend found (None in
    recovery)."""
    state = store.read_workspace(j.ws)
    backend = backend_for(state)
    new = j.new_state or _legacy_new_state(state, j)
    staging = store.root / "staging" / j.staging
    tree = staging / "tree"
    current = state.head == j.old_head  # not recorded yet
    # Everything up to the workspace record is idempotent under the journal
    # (durable since commit() wrote it): it may reach the disk in any order,
    # so it shares one syncfs, at the batch's end, instead of an fsync per
    # file and directory. That syncfs is the barrier before the record.
    with store.durable_batch():
        if not store.has_layer(j.layer):
            pending = staging / "manifest.pending"
            manifest = (pending if pending.exists() else staging / "manifest").read_bytes()
            backend.finish_layer(store, state, new, j.part, tree, manifest, work)
            if not tree.exists():
                tree.mkdir()  # an --allow-empty commit
            if j.dedup and j.layer != EMPTY_LAYER:
                dedup_staging(store, staging, j.layer)
            store.publish_pending(staging)
        else:
            backend.finish_layer(store, state, new, j.part, None, b"")
        crashpoint("commit:layer-published")
        sid = store.write_snapshot(j.record, j.chain)
        crashpoint("commit:snapshot-written")
        if current:
            who = j.record.author
            summary = (
                "commit: " + j.record.message.splitlines()[0] if j.record.message else "commit"
            )
            if j.branch is not None and store.read_ref("heads", j.branch) != sid:
                store.write_ref("heads", j.branch, sid, who, summary)
            crashpoint("commit:ref-moved")
            if not j.shown:
                backend.show(store, state, new, j.part, work, lambda: mark_shown(store, j))
            store.append_reflog_once(
                f"workspaces/{j.ws.hex}/HEAD", j.old_head, sid, who, summary, j.record.time_ns
            )
            crashpoint("commit:logged")
    if current:
        store.write_workspace(new)
        state = new
    crashpoint("commit:state-written")
    if j.max_depth:
        from snapws.ops.maintenance.flatten import compact

        # maintenance, not the commit (made above): a merge that fails (a
        # full disk, a path it cannot make) must not keep the commit from
        # finishing; its steps are crash-safe, the next commit tries again
        with suppress(OSError, SnapwsError):
            compact(store, sid, j.max_depth)
    backend.ensure_shown(store, state, crash_step="commit:beneath")
    crashpoint("commit:shown")
    # leftovers go while the journal is there: a kill before the end leaves
    # it for the next command to finish, never old dirs nothing would sweep
    if staging.exists():
        store.discard(staging)
    backend.sweep(store, state)
    store.clear_journal()
    return sid


def _legacy_new_state(state: WorkspaceState, j: CommitJournal) -> WorkspaceState:
    """The state a commit journal of an earlier snapws left to be derived."""
    return replace(
        state,
        head=j.record.id,
        upper=j.part.get("new_upper", state.upper),
        work=j.part.get("new_work", state.work),
    )


def _journaled(store: Store, staging: Path) -> bool:
    """Whether the store's journal names ``staging`` (then recovery owns it)."""
    try:
        j = store.read_journal()
    except (OSError, SnapwsError):
        return True  # unsure: leave it to the next command's recovery
    return j is not None and j.get("staging") == staging.name


def tz_offset_min() -> int:
    """This machine's offset from UTC now, in minutes (for records)."""
    lt = time.localtime()
    return int(lt.tm_gmtoff // 60)
