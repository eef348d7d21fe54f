"""The plain backend: the workspace is an ordinary directory, nothing is
mounted; any user, any POSIX filesystem, the store anywhere.

- changes come from a scan of the directory against a stat cache of HEAD
  (the index, :mod:`.index`, :mod:`.scan`): only files whose stat changed
  are read;
- a commit copies the changed paths into the new layer's tree
  (:mod:`.stage`), in the form an overlay upperdir would have; the
  directory is only read;
- a snapshot is shown by rewriting the paths that differ (:mod:`.write`),
  and the index follows HEAD.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from snapws.backends.base import (
    Adopted,
    Availability,
    Backend,
    JournalPart,
    MountStatus,
    WorkChanges,
    nearest_existing,
    writable_here,
)
from snapws.backends.plain.adopt import copy_tree
from snapws.backends.plain.fsops import is_root
from snapws.backends.plain.headtree import rebuild_index, seed_hashes
from snapws.backends.plain.index import Index
from snapws.backends.plain.indexfile import IndexWriter, load_index, save_index, sweep_tmp
from snapws.backends.plain.stage import Stager
from snapws.backends.plain.status import refresh_index, scan_workspace
from snapws.backends.plain.workentry import WorkRules
from snapws.backends.plain.workview import WorkingView
from snapws.backends.plain.write import (
    bytes_written,
    check_space,
    check_writable,
    meta_only,
    rewrite_paths,
)
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.errors import permission_denied
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.diff import diff_views
from snapws.layers.entries import opaque_xattr
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView, HashCache
from snapws.model import ROOT, Change, Entry, WorkspaceState, decode_manifest
from snapws.session import Session
from snapws.store.atomic import drop_torn_copies
from snapws.store.store import EMPTY_LAYER, Store

#: What a plain workspace records as its upper and work directories (none exist).
NO_UPPER = "plain"


@dataclass(slots=True)
class _Held:
    """What a scan learnt, kept for the rest of an operation: the index and
    its writer (opened before the scan: its time is the racy reference),
    and, once planned, the switch's ``between`` changes and target view."""

    index: Index
    writer: IndexWriter | None
    recreated: set[bytes]
    staged: list[Entry] | None = None
    between: list[Change] | None = None
    view: ChainView | None = None

    def give_up(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


class PlainBackend(Backend):
    """A workspace that is an ordinary directory (see the module docstring)."""

    name: ClassVar[str] = "plain"
    replaces_mount: ClassVar[bool] = False

    def probe(self, store_root: Path) -> Availability:
        """Available wherever the store's directory (or its nearest existing
        ancestor) is writable: any POSIX filesystem, any user."""
        where = nearest_existing(store_root)
        why = writable_here(where)
        if why:
            return Availability(
                self.name,
                False,
                f"cannot write in {where}: {why}",
                "put the store in a writable directory (--store PATH)",
            )
        return Availability(self.name, True, "needs no mount: works on any filesystem, as any user")

    def reach_hint(self, path: Path) -> str:
        """Nothing to run: the directory is the workspace."""
        return f"use {path} as it is"

    # ---- what the directory shows ------------------------------------------------

    def mount_state(self, store: Store, state: WorkspaceState) -> MountStatus:
        """Always ``plain``: the directory is the working tree."""
        return "plain"

    def ensure_shown(self, store: Store, state: WorkspaceState, crash_step: str = "") -> bool:
        """The directory shows the workspace by being it: nothing to do."""
        return False

    def check_shown(self, store: Store, state: WorkspaceState) -> None:
        """The directory is the working tree; a missing one is reported by
        the scan (:meth:`changes`)."""
        return

    def hide(self, store: Store, state: WorkspaceState, lazy: bool = False) -> bool:
        """A plain directory cannot be hidden: False (``snapws eject`` leaves it)."""
        return False

    def check_dirs(self, store: Store, state: WorkspaceState) -> list[str]:
        """A plain workspace has no directories of its own in the store
        (its index is a cache, rebuilt when missing): nothing can be wrong."""
        return []

    def rebuild_dirs(
        self,
        store: Store,
        wid: WorkspaceId,
        recorded: tuple[object, object],
        mounted: tuple[str, str] | None,
    ) -> tuple[str, str]:
        """None to have: :data:`NO_UPPER` for both."""
        return NO_UPPER, NO_UPPER

    def sweep(self, store: Store, state: WorkspaceState) -> None:
        """Index and record writes a crash cut short."""
        sweep_tmp(store.workspace_dir(state.id))
        drop_torn_copies(store.workspace_dir(state.id) / "state.json")

    # ---- around a change --------------------------------------------------------

    def quiesce(self, store: Store, state: WorkspaceState, action: str) -> None:
        """A plain directory cannot be frozen: programs go on writing while
        the operation reads it (a commit copies each file once, hashing
        what it copied, so the layer is always what its manifest says)."""
        return

    def release(self, store: Store, state: WorkspaceState, work: WorkChanges | None) -> None:
        """Save what the scan learnt into the index (a cache: failing to
        save costs the next status time, nothing else)."""
        held = _held(work) if work is not None and work.memo is not None else None
        if held is not None:
            refresh_index(held.index, held.writer)
            held.writer = None

    def changes(self, session: Session, hold: bool = False) -> WorkChanges:
        """The stat-cache scan of the directory against HEAD (:mod:`.scan`)."""
        result, index, writer = scan_workspace(session)
        # deleted or replaced paths hide what another snapshot adds below them
        hiding = {
            c.path
            for c in result.changes
            if c.new is None or (c.old is not None and c.old.kind is not c.new.kind)
        } | result.recreated
        if not hold:
            refresh_index(index, writer)
            return WorkChanges(result.changes, list(result.ignored), hiding)
        held = _Held(index, writer, set(result.recreated))
        return WorkChanges(result.changes, list(result.ignored), hiding, held)

    def working_view(self, session: Session) -> ChainView:
        """The directory itself, its entries read as status reads them
        (owners a commit by this user can record, :mod:`.workview`)."""
        root = os.fsencode(session.path)
        head = session.chain_view(session.state.head)
        return WorkingView(root, head, session.hashes, WorkRules.for_workspace(root))

    def copy_tree(self, session: Session, tree: Path) -> int | None:
        """None: the directory is the working tree."""
        return None

    # ---- commit ------------------------------------------------------------------

    def stage_layer(self, session: Session, work: WorkChanges, tree: Path) -> list[Entry]:
        """The changed paths are copied into ``tree`` (hashed while copied)."""
        held = _held(work)
        tree.mkdir()
        stager = Stager(
            os.fsencode(session.path),
            os.fsencode(tree),
            opaque_xattr(session.store.xattr_form),
            is_root(),
        )
        stager.stage(work.changes, held.recreated, work.ignored)
        stager.finish()
        entries = entries_of(
            read_tree(os.fsencode(tree)), session.config.hash_threads, known=stager.hashes
        )
        held.staged = entries
        return entries

    def commit_part(self, session: Session, work: WorkChanges) -> JournalPart:
        """Nothing: the layer's tree is staged already."""
        return {}

    def finish_layer(
        self,
        store: Store,
        old: WorkspaceState,
        new: WorkspaceState,
        part: JournalPart,
        tree: Path | None,
        manifest: bytes,
        work: WorkChanges | None = None,
    ) -> None:
        """Nothing: :meth:`stage_layer` wrote the tree into the staging
        directory, which the caller publishes or discards."""
        return

    # ---- showing another snapshot ---------------------------------------------------

    def next_state(
        self,
        state: WorkspaceState,
        head: SnapshotId,
        branch: str | None,
        keep: bool,
        work: WorkChanges | None = None,
    ) -> WorkspaceState:
        """Only HEAD and the branch change."""
        return replace(state, head=head, branch=branch)

    def plan_switch(
        self,
        session: Session,
        work: WorkChanges,
        target: SnapshotId,
        between: Callable[[], list[Change]],
        keep: bool,
    ) -> JournalPart:
        """The paths to rewrite: those that differ between HEAD and the
        target, and the uncommitted ones unless kept; those whose content is
        the same only get metadata. Refuses device nodes when not root."""
        view = session.chain_view(target)
        mine = [] if keep else work.changes
        changed = between()
        paths = {c.path for c in changed} | {c.path for c in mine}
        check_writable(view, sorted(paths), is_root())
        same = meta_only(changed, mine)
        check_space(
            os.fsencode(session.path), bytes_written(changed, mine, same), "switch snapshots"
        )
        held = _held(work)
        held.between, held.view = changed, view
        return {
            "paths": [os.fsdecode(p) for p in sorted(paths)],
            "meta_only": [os.fsdecode(p) for p in sorted(same)],
            "keep": [os.fsdecode(p) for p in work.ignored],
        }

    def show(
        self,
        store: Store,
        old: WorkspaceState,
        new: WorkspaceState,
        part: JournalPart,
        work: WorkChanges | None,
        done: Callable[[], None],
    ) -> None:
        """A switch rewrites the journaled paths from the new HEAD, then
        says ``done`` (it must not run again over later edits); a commit
        changes nothing in the directory. Then the index follows HEAD."""
        held = _held(work) if work is not None and work.memo is not None else None
        paths = [os.fsencode(p) for p in part.get("paths", ())]
        try:
            if "paths" in part:
                view = held.view if held is not None and held.view is not None else None
                if view is None:
                    view = ChainView([os.fsencode(p) for p in store.layer_trees(new.head)])
                rewrite_paths(
                    os.fsencode(new.path),
                    view,
                    paths,
                    is_root(),
                    [os.fsencode(p) for p in part.get("meta_only", ())],
                    halfway=lambda: crashpoint("checkout:rewriting"),
                    keep=[os.fsencode(p) for p in part.get("keep", ())],
                )
                done()
            _follow_head(store, old, new, paths, held, committed="paths" not in part)
        finally:
            if held is not None:
                held.give_up()

    # ---- starting a workspace --------------------------------------------------------

    def adopt(
        self,
        store: Store,
        path: Path,
        tree: Path,
        config: Config,
        progress: Callable[[int], None] | None,
    ) -> Adopted:
        """The directory is copied into ``tree`` (hashed while copied) and
        left as it is; the index of what was copied is staged beside."""
        index_dir = store.new_staging("plain-index")
        writer = IndexWriter.begin(index_dir, path)
        if writer is None:
            store.discard(index_dir)
            raise permission_denied(
                PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(index_dir)),
                store.root,
            )
        try:
            entries, records = copy_tree(os.fsencode(path), os.fsencode(tree), config, progress)
            index = Index.from_entries(_UNKNOWN_HEAD, entries)
            for d, rec in records.items():
                index.set_scan(d, rec)
            index.ref_ns, index.slack_ns = writer.ref_ns, writer.slack_ns
            writer.commit(index)
        except BaseException:
            writer.abort()
            store.discard(index_dir)
            raise
        return Adopted(entries, {"index_staging": index_dir.name})

    def unadopt(self, path: Path, tree: Path) -> None:
        """Nothing: the directory was only read."""
        return

    def first_state(
        self, wid: WorkspaceId, path: Path, head: SnapshotId, branch: str | None
    ) -> WorkspaceState:
        """No upper or work directory."""
        return WorkspaceState(wid, str(path), head, branch, NO_UPPER, NO_UPPER, self.name)

    def plan_start(self, path: Path, store: Store, head: SnapshotId) -> JournalPart:
        """HEAD's files are written into the (empty) directory: refuse device
        nodes when not root."""
        view = ChainView([os.fsencode(p) for p in store.layer_trees(head)])
        check_writable(view, [c.path for c in _all_of(store, head, view)], is_root())
        return {"fill": True}

    def install(
        self,
        store: Store,
        state: WorkspaceState,
        part: JournalPart,
        fill: bool,
        done: Callable[[], None],
    ) -> None:
        """The staged index goes into place (init), or HEAD's tree is written
        into the directory and its index built from the manifests (a start
        on a stored snapshot)."""
        wsdir = store.workspace_dir(state.id)
        wsdir.mkdir(parents=True, exist_ok=True)
        staged = part.get("index_staging")
        if staged:
            index_dir = store.root / "staging" / staged
            if (index_dir / "index").exists():
                index = Index.decode((index_dir / "index").read_bytes())
                if index is not None:
                    index.head = state.head
                    save_index(wsdir, index, durable=False)
            if index_dir.exists():
                store.discard(index_dir)
        if fill:
            view = ChainView([os.fsencode(p) for p in store.layer_trees(state.head)])
            paths = sorted(c.path for c in _all_of(store, state.head, view) if c.path != ROOT)
            rewrite_paths(os.fsencode(state.path), view, paths, is_root())
            done()
            save_index(wsdir, rebuild_index(store, state.head))


#: The head an adopted index is staged with, until the base snapshot's id is known.
_UNKNOWN_HEAD = SnapshotId("0" * 32)


def _held(work: WorkChanges) -> _Held:
    held = work.memo
    assert isinstance(held, _Held), "changes(hold=True) of this backend made the memo"
    return held


def _all_of(store: Store, head: SnapshotId, view: ChainView) -> list[Change]:
    """Everything in ``head``'s tree, as additions."""
    dirs = [os.fsencode(store.layer_tree(x)) for x in store.chain_layers(head)]
    return diff_views(ChainView([]), view, dirs)


def _follow_head(
    store: Store,
    old: WorkspaceState,
    new: WorkspaceState,
    rewritten: list[bytes],
    held: _Held | None,
    committed: bool,
) -> None:
    """Move the index's HEAD tree from ``old.head`` to ``new.head`` and
    forget what the last scan saw of the ``rewritten`` paths. A commit
    (``committed``) stacks its layer (what the scan saw of the committed paths is then
    compared with their new HEAD entries); a switch applies the changes
    between the two. An index already moved (an earlier run) or missing
    (the next status rebuilds it) is left."""
    if new.head == old.head and not rewritten:
        return  # a remount on an equivalent chain: the tree is the same
    wsdir = store.workspace_dir(new.id)
    index = held.index if held is not None else load_index(wsdir, old.head)
    if index is None or index.head != old.head:
        return
    writer = held.writer if held is not None else None
    if held is not None:
        held.writer = None
    if new.head != old.head:
        if committed:
            record = store.read_snapshot(new.head)
            if record.layer == EMPTY_LAYER:
                entries: list[Entry] = []
            elif held is not None and held.staged is not None:
                entries = held.staged
            else:
                entries = decode_manifest(store.read_manifest(record.layer))
            rules = WorkRules.for_workspace(os.fsencode(new.path))
            index.rebase(index.apply_layer(entries), rules)
        else:
            between = held.between if held is not None else None
            if between is None:
                between = _changes_between(store, old.head, new.head)
            for c in sorted(between, key=lambda c: c.path):
                index.set_head(c.path, c.new)
        index.head = new.head
    index.invalidate(rewritten)
    try:
        save_index(wsdir, index, writer)
    except OSError:  # a cache: the next status rebuilds what it lacks
        if writer is not None:
            writer.abort()


def _changes_between(store: Store, a: SnapshotId, b: SnapshotId) -> list[Change]:
    hashes = HashCache()
    differing = store.unshared_layers(a, b)
    seed_hashes(store, differing, hashes)
    return diff_views(
        ChainView([os.fsencode(p) for p in store.layer_trees(a)], hashes),
        ChainView([os.fsencode(p) for p in store.layer_trees(b)], hashes),
        [os.fsencode(store.layer_tree(x)) for x in differing],
    )
