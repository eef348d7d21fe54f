"""What the overlay backends (kernel, rootless, fuse) share: the workspace
is a mount of HEAD's layer chain below an upperdir U.

- changes come from a scan of U (O(changes): U holds only what changed);
- a commit freezes the mount, and U itself becomes the new layer's tree (a
  rename), ignored paths moved out into the next U first;
- a snapshot is shown by a new (or kept, pruned) U and a new mount, put in
  place of the old one without a gap (:meth:`OverlayBackend.replace`).

Subclasses supply the mount primitives: who mounts (the kernel as root, in
a user namespace, fuse-overlayfs) and how U encodes deletions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from snapws.backends import heldclean
from snapws.backends.base import (
    NO_REWRITE,
    Adopted,
    Backend,
    JournalPart,
    UpperForm,
    WorkChanges,
)
from snapws.backends.swap import MountSwapper, stray_entries, stray_entries_error
from snapws.backends.upperdir import (
    adopt_entries,
    carriable,
    carry_ignored,
    make_upper,
    new_dir_names,
    plan_mount,
    prepare_layer_tree,
    rebuild_names,
    refuse_foreign_opaque,
    return_entries,
    sweep_workspace_dir,
    top_root,
)
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.errors import (
    MountError,
    NotMountedError,
    StoreCorruptError,
    UnsupportedError,
    WorkspaceBusyError,
)
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.entries import Node, in_or_below_any
from snapws.layers.ignore import drop_ignored
from snapws.layers.materialise import materialise
from snapws.layers.scan import (
    CommitPlan,
    entries_of,
    ignored_in_upper,
    plan_upper,
    prune_upper,
)
from snapws.layers.upperdiff import diff_upper
from snapws.layers.view import ChainView
from snapws.model import Change, Entry, Kind, WorkspaceState
from snapws.mounts import mounter
from snapws.session import Session
from snapws.store.atomic import syncfs
from snapws.store.store import Store

#: How long a commit waits for programs to close the files they write before
#: it copies the changes through the live mount (:meth:`OverlayBackend.quiesce`).
LIVE_AFTER = 0.1

#: The workspaces whose commit :meth:`OverlayBackend.quiesce` left live (not
#: frozen) in this process: :meth:`OverlayBackend.changes` then copies
#: through the mount, whatever holds it by then. Set again by every quiesce,
#: so nothing of an earlier command carries over.
_LIVE_COMMITS: set[WorkspaceId] = set()

#: A commit through the live mount that this process is making: U's nodes as
#: it read them, the ignored paths among them, when it began reading (for
#: the memo its new HEAD gets, :func:`_remember_committed_clean`), the
#: ignore settings.
_CommittedClean = tuple[list[Node], list[bytes], int, tuple[str, ...]]
_COMMITTED_CLEAN: dict[WorkspaceId, _CommittedClean] = {}


class OverlayBackend(MountSwapper, Backend):
    """A workspace shown by an overlay mount of HEAD's chain below U."""

    #: the form of U this backend's mounts write (what the scan of U reads)
    upper_form: ClassVar[UpperForm] = "overlay"
    #: True when a change of a workspace that running programs hold goes
    #: through its live mount instead of a remount (see :meth:`holds`)
    can_hold: ClassVar[bool] = False

    # ---- what the directory shows ------------------------------------------------

    def ensure_shown(self, store: Store, state: WorkspaceState, crash_step: str = "") -> bool:
        """Mount the workspace read-write as ``state`` says. A frozen mount
        is thawed; an older mount of this workspace (a commit, checkout or
        flatten on its way, or interrupted) is replaced without a gap, and
        one a crash left stacked on top of the right one is peeled off.
        Raises MountError, BadPathError (entries written into the bare
        directory), WorkspaceBusyError."""
        status = self.mount_state(store, state)
        if status == "mounted":
            return False
        path = Path(state.path)
        while status == "stale" and len(mounter.mounts_at(path)) > 1:
            self.detach(path)
            status = self.mount_state(store, state)
        if status == "mounted":
            return True
        if status == "frozen":
            self.thaw(path)
            return True
        if status == "stale":
            make_upper(store, state, top_root(store, state.mounted_head))
            self.replace(plan_mount(store, state), after_beneath=lambda: crashpoint(crash_step))
            return True
        if status == "foreign":
            raise MountError(
                f"something else is mounted on the workspace {path}",
                hint=f"unmount it (umount {path}), then run `snapws mount`",
            )
        stray = stray_entries(path)
        if stray:
            raise stray_entries_error(path, stray, self.mount_is_shared, self.reach_hint(path))
        path.mkdir(parents=True, exist_ok=True)
        make_upper(store, state, top_root(store, state.mounted_head))
        self.mount(plan_mount(store, state))
        return True

    def check_shown(self, store: Store, state: WorkspaceState) -> None:
        """NotMountedError when the workspace is not mounted (``unmounted``,
        or ``foreign``), BadPathError naming entries written into the bare
        directory. A rootless workspace not mounted in this command's own
        namespace is fine when its directory is empty (every command mounts
        it for itself)."""
        status = self.mount_state(store, state)
        if status in ("mounted", "frozen", "stale"):
            return
        path = Path(state.path)
        if status == "foreign":
            raise NotMountedError(
                f"the workspace {path} is not mounted: something else is mounted there",
                hint=f"unmount it (umount {path}), then run {self.reach_hint(path)}",
            )
        stray = stray_entries(path)
        if stray:
            raise stray_entries_error(path, stray, self.mount_is_shared, self.reach_hint(path))
        if not self.mount_is_shared:
            return
        raise NotMountedError(
            f"the workspace {path} is not mounted: its directory is empty, and its files and "
            "uncommitted changes are in the store (git has no such state)",
            hint=f"mount it with {self.reach_hint(path)}; nothing is lost",
        )

    def hide(self, store: Store, state: WorkspaceState, lazy: bool = False) -> bool:
        """Unmount; U stays in the store and comes back with the next mount."""
        if self.mount_state(store, state) == "unmounted":
            return False
        self.unmount(Path(state.path), lazy)
        return True

    def check_dirs(self, store: Store, state: WorkspaceState) -> list[str]:
        """The upperdir the state names must exist."""
        wsdir = store.workspace_dir(state.id)
        if (wsdir / state.upper).is_dir():
            return []
        return [
            f"the upperdir {wsdir / state.upper} named by workspace record "
            f"{wsdir / 'state.json'} is missing"
        ]

    def rebuild_dirs(
        self,
        store: Store,
        wid: WorkspaceId,
        recorded: tuple[object, object],
        mounted: tuple[str, str] | None,
    ) -> tuple[str, str]:
        """:func:`~snapws.backends.upperdir.rebuild_names`."""
        return rebuild_names(store.workspace_dir(wid), recorded, mounted)

    def sweep(self, store: Store, state: WorkspaceState) -> None:
        """Old upper and work directories, staging mount points."""
        sweep_workspace_dir(store, state)

    # ---- around a change --------------------------------------------------------

    def quiesce(self, store: Store, state: WorkspaceState, action: str) -> None:
        """Freeze the mount (see :meth:`freeze`), except for a commit of a
        :data:`can_hold` backend's workspace that programs hold (:meth:`holds`):
        that commit copies the changed paths through the live mount, as the
        plain backend's does, so no program in it ever meets a read-only
        tree (EROFS) or waits. The same when a program holds a file open for
        writing (a server's log) that is still open after :data:`LIVE_AFTER`
        seconds: the freeze is refused, the commit goes on live (held: a
        live commit is recorded in :data:`_LIVE_COMMITS` for
        :meth:`changes`). A file written
        meanwhile is recorded as far as it was written when copied, and
        nothing of the working tree is lost (U stays, under the live mount).
        A free workspace is frozen: its U becomes the layer. A checkout or
        reset freezes (or refuses, exit 6): rewriting paths that programs
        are changing could overwrite what they wrote; one that rewrites no
        path (:data:`NO_REWRITE`) of a held workspace does not."""
        live = _LIVE_COMMITS
        live.discard(state.id)
        if action == NO_REWRITE and self.can_hold and self.holds(store, state):
            live.add(state.id)  # (goes through the live mount, as a held commit)
            return
        if action == "commit" and self.can_hold:
            if self.holds(store, state):
                live.add(state.id)
                return
            try:
                self.freeze(Path(state.path), action, wait=LIVE_AFTER)
            except WorkspaceBusyError:
                live.add(state.id)
            return
        self.freeze(Path(state.path), action)

    def release(self, store: Store, state: WorkspaceState, work: WorkChanges | None) -> None:
        """Thaw the mount if it is (still) frozen."""
        if self.mount_state(store, state) == "frozen":
            self.thaw(Path(state.path))

    def changes(self, session: Session, hold: bool = False) -> WorkChanges:
        """The scan of U against the chain below it (:func:`plan_upper`);
        for a held workspace (its mount on an older chain than HEAD's), U
        over that chain compared with HEAD on the paths U holds and those
        that differ between the two chains. With ``hold``, also whether the
        change to come goes through the live mount (:meth:`holds`)."""
        store, state = session.store, session.state
        began = time.time_ns()
        rules = session.ignore_rules()
        upper = os.fsencode(session.upper)
        lower = session.manifest_chain(state.mounted_head)
        held = state.base is not None  # U is compared with HEAD below, not with its chain
        head = session.manifest_chain(state.head) if held else lower
        # a held command that changes nothing compares only what moved since
        # the last such one (heldclean), and reads no more of what did not
        memo = None
        if held and not hold and session.hashes.trusted:
            key = heldclean.memo_key(
                state.head.hex, state.mounted_head.hex, state.upper, session.config.ignore
            )
            memo = heldclean.load(session.wsdir, key)
        plan = plan_upper(
            upper,
            session.chain_view(state.mounted_head),
            self.upper_form,
            rules,
            lower,
            compare=not held,
            tracked=lambda p: head.locate(p) is not None,  # (ignore rules: HEAD's paths)
            known=memo.known if memo is not None and memo.nodes else None,
        )
        through = hold and (state.id in _LIVE_COMMITS or self.holds(store, state))
        _COMMITTED_CLEAN.pop(state.id, None)  # (one a checkout's changes left)
        if not held:
            if through:  # a commit through the live mount leaves U equal to its new HEAD
                _COMMITTED_CLEAN[state.id] = (
                    plan.nodes,
                    plan.ignored,
                    began,
                    session.config.ignore,
                )
            hiding = {n.path for n in plan.keep if n.kind is not Kind.DIR or n.opaque}
            return WorkChanges(plan.changes, plan.ignored, hiding, _Work(plan, through))
        tops = plan.tops
        try:
            focus, below = memo.focus(plan.nodes) if memo is not None and memo.nodes else (None, ())
            found = diff_upper(plan.nodes, lower, head, session.hashes, set(tops), focus, below)
        except ValueError as e:  # a manifest line read on the way
            raise StoreCorruptError(f"a layer has a damaged manifest: {e}") from e
        if through:
            _COMMITTED_CLEAN[state.id] = (plan.nodes, tops, began, session.config.ignore)
        if memo is not None:
            later = memo.after(plan.nodes, focus, found, in_or_below_any(set(tops)), began)
            if later != memo:
                heldclean.save(session.wsdir, later)
        changes, ignored = drop_ignored(found, tops)
        # a switch of a held workspace rewrites paths through the live mount,
        # so what U's opaque directories hide of its older chain is no matter:
        # only what the changes delete or replace hides paths of the target
        hiding = {
            c.path
            for c in changes
            if c.new is None or (c.old is not None and c.old.kind is not c.new.kind)
        }
        return WorkChanges(changes, ignored, hiding, _Work(plan, through))

    def holds(self, store: Store, state: WorkspaceState) -> bool:
        """Whether a change of the workspace goes through its live mount
        (:data:`can_hold` backends): it is held already (on an older chain
        than HEAD's), or a process other than this one has its current
        directory, an open file or a mapping inside (it would be left on the
        old, frozen mount by a remount)."""
        if not self.can_hold:
            return False
        return state.base is not None or mounter.used_by_others(Path(state.path))

    def working_view(self, session: Session) -> ChainView:
        """U over HEAD's chain, read without the mount."""
        return ChainView(
            [
                os.fsencode(session.upper),
                *[os.fsencode(p) for p in session.store.layer_trees(session.state.mounted_head)],
            ],
            session.hashes,
            upper_form=self.upper_form,
        )

    def copy_tree(self, session: Session, tree: Path) -> int | None:
        """The merged tree (U over HEAD's chain), read without the mount."""
        nodes = (loc.node for loc in self.working_view(session).walk())
        return materialise(nodes, os.fsencode(tree))

    # ---- commit ------------------------------------------------------------------

    def stage_layer(self, session: Session, work: WorkChanges, tree: Path) -> list[Entry]:
        """Zero-copy: nothing is copied, the frozen U becomes ``tree`` in the
        finish (:meth:`finish_layer`); its data is synced now, before the
        journal claims it; the entries are those of the nodes that stay in
        it. Held (:meth:`holds`): the changed paths are copied from the
        live mount into ``tree`` (O(changed bytes)) and the mount stays."""
        memo = _memo(work)
        plan = memo.plan
        refuse_foreign_opaque(plan.keep, self.upper_form, session.store.xattr_form)
        if not memo.through:
            syncfs(session.upper)
            return entries_of(plan.keep, session.config.hash_threads, known=session.hashes)
        from snapws.backends.held import stage_copied  # (held only: status never needs it)

        recreated = {n.path for n in plan.keep if n.opaque and n.path != b"."}
        return stage_copied(
            session.path,
            tree,
            work.changes,
            recreated,
            work.ignored,
            session.store.xattr_form,
            session.config.hash_threads,
        )

    def commit_part(self, session: Session, work: WorkChanges) -> JournalPart:
        """U's name, its no-op copy-ups to prune, its ignored paths to carry;
        or, held, only that (the tree is staged, U stays)."""
        memo = _memo(work)
        if memo.through:
            return {"held": True}
        plan = memo.plan
        assert plan.compared, "a workspace whose U is not compared is held"
        return {
            "upper": session.state.upper,
            "prune": [os.fsdecode(p) for p in plan.prune],
            "carry": [os.fsdecode(p) for p in plan.ignored],
            "upper_form": self.upper_form,
        }

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
        """Ignored paths move from U into the next upperdir (made now);
        then U, pruned to its manifest, is renamed to ``tree``, or dropped
        when ``tree`` is None (the same layer is stored already). Held:
        nothing (the tree was staged by copying; U stays). With ``work``,
        the nodes its scan read (U frozen since) are not read again."""
        if part.get("held"):
            _remember_committed_clean(store, old, new)
            return
        wsdir = store.workspace_dir(old.id)
        upper = wsdir / part["upper"]
        if old.upper != part["upper"] or not upper.exists():
            return  # done by an earlier run
        if part.get("carry"):
            make_upper(store, new, upper)
            carry_ignored(upper, wsdir / new.upper, part["carry"])
        if tree is None:
            store.discard(upper)
            return
        prune = [os.fsencode(p) for p in part["prune"]]
        form = part.get("upper_form", "overlay")
        read = _memo(work).plan.keep if work is not None else None
        prepare_layer_tree(upper, prune, manifest, form, store.xattr_form, read)
        os.rename(upper, tree)

    # ---- showing another snapshot ---------------------------------------------------

    def next_state(
        self,
        state: WorkspaceState,
        head: SnapshotId,
        branch: str | None,
        keep: bool,
        work: WorkChanges | None = None,
    ) -> WorkspaceState:
        """A new upperdir (the kept one when ``keep``) and always a new work
        directory: the new mount is told from the old one by it. Held
        (``work`` found the change goes through the live mount): the same
        upper and work directories on the same chain, which becomes the
        ``base`` below the new HEAD."""
        if work is not None and _memo(work).through:
            return replace(state, head=head, branch=branch, base=state.mounted_head)
        upper, workdir = new_dir_names()
        return replace(
            state,
            head=head,
            branch=branch,
            upper=state.upper if keep else upper,
            work=workdir,
            base=state.base if keep else None,  # a remount keeps what is mounted
        )

    def plan_switch(
        self,
        session: Session,
        work: WorkChanges,
        target: SnapshotId,
        between: Callable[[], list[Change]],
        keep: bool,
    ) -> JournalPart:
        """Kept U: its no-op copy-ups would show HEAD's content over the
        target's, so they are pruned (not those holding ignored paths).
        Discarded U: its ignored paths go into the new U, unless the target
        has something there (its tracked path wins, as in git). Held: the
        paths that differ (and the uncommitted ones unless kept) are to be
        rewritten through the live mount, as the plain backend does."""
        if _memo(work).through:
            from snapws.backends.held import switch_part

            upper = os.fsencode(session.upper)
            return switch_part(work.changes, between(), work.ignored, keep, upper)
        if keep:
            return {"prune_kept": [os.fsdecode(p) for p in _plan(work).prune_around_ignored()]}
        upper = os.fsencode(session.upper)
        head_view = session.chain_view(session.state.head)
        tops = ignored_in_upper(upper, head_view, self.upper_form, session.ignore_rules())
        carry = carriable(upper, tops, session.chain_view(target))
        return {"carry_from": session.state.upper, "carry": [os.fsdecode(p) for p in carry]}

    def show(
        self,
        store: Store,
        old: WorkspaceState,
        new: WorkspaceState,
        part: JournalPart,
        work: WorkChanges | None,
        done: Callable[[], None],
    ) -> None:
        """Prepare the upperdir ``new`` names (pruned if kept, made if new,
        with the ignored paths carried into it); :meth:`ensure_shown` then
        mounts it. Nothing once ``new`` is recorded: the upperdir may be in
        use since. Held: a switch's paths are rewritten through the live
        mount (thawed first), then ``done``. A settle (:meth:`settle`): the
        new upperdir is built from the working tree's changes against HEAD,
        read through the frozen mount."""
        if part.get("held"):
            if "paths" in part:
                from snapws.backends.held import rewrite_live

                if self.mount_state(store, old) == "frozen":
                    self.thaw(Path(new.path))
                rewrite_live(store, new, part)
                done()
            return
        if part.get("settle"):
            from snapws.backends.held import build_settled_upper

            build_settled_upper(store, old, new, self.upper_form)
            return
        if old == new:
            return
        wsdir = store.workspace_dir(new.id)
        if part.get("prune_kept"):
            prune_upper(
                os.fsencode(wsdir / new.upper), [os.fsencode(p) for p in part["prune_kept"]]
            )
        make_upper(store, new, top_root(store, new.head))
        if part.get("carry_from"):
            carry_ignored(wsdir / part["carry_from"], wsdir / new.upper, part["carry"])

    def settle(self, store: Store, state: WorkspaceState) -> JournalPart | None:
        """A held workspace that no process holds any more: the part of a
        switch to the same HEAD that mounts HEAD's chain below a new
        upperdir holding only the changes against HEAD (built by
        :meth:`show`). None otherwise."""
        if state.base is None or mounter.used_by_others(Path(state.path)):
            return None
        if self.mount_state(store, state) != "mounted":
            return None
        return {"settle": True}

    # ---- starting a workspace --------------------------------------------------------

    def check_filesystem(self, store_root: Path) -> None:
        """Raise UnsupportedError when the filesystem of the existing
        directory ``store_root`` cannot hold this backend's layers and
        upperdirs. Default: any will do."""
        return

    def check_store(self, store_root: Path, workspace: Path) -> None:
        """The store's filesystem (:meth:`check_filesystem`), and the
        workspace's: a commit renames U into the store."""
        self.check_filesystem(store_root)
        if os.stat(store_root).st_dev != os.stat(workspace).st_dev:
            raise UnsupportedError(
                f"the store {store_root} and the workspace {workspace} are on different "
                "filesystems",
                hint="keep them on one filesystem, so that a commit is a rename "
                "(--store PATH or SNAPWS_STORE)",
            )

    def adopt(
        self,
        store: Store,
        path: Path,
        tree: Path,
        config: Config,
        progress: Callable[[int], None] | None,
    ) -> Adopted:
        """The directory's entries move into ``tree`` (renames: one
        filesystem); the directory becomes the mount point. Ignored paths
        (``.snapwsignore``, ``ignore =``) are never in a layer: they move on
        into a directory beside the staging one (:func:`_ignored_side`),
        whence :meth:`install` puts them into the first upperdir."""
        ignored_from, ignored = adopt_entries(path, tree, config.ignore)
        if not ignored:
            return Adopted(None)
        return Adopted(None, {"ignored_from": ignored_from, "ignored": ignored})

    def unadopt(self, path: Path, tree: Path) -> None:
        """Every entry goes back into the directory (ignored ones too)."""
        return_entries(path, tree)

    def first_state(
        self, wid: WorkspaceId, path: Path, head: SnapshotId, branch: str | None
    ) -> WorkspaceState:
        """A new, empty upperdir."""
        upper, work = new_dir_names()
        return WorkspaceState(wid, str(path), head, branch, upper, work, self.name)

    def plan_start(self, path: Path, store: Store, head: SnapshotId) -> JournalPart:
        """The mount shows the stored chain: nothing to write."""
        return {}

    def install(
        self,
        store: Store,
        state: WorkspaceState,
        part: JournalPart,
        fill: bool,
        done: Callable[[], None],
    ) -> None:
        """The empty upperdir, its root as HEAD's; an init's ignored paths
        move into it (they stay in the working tree, in no layer)."""
        make_upper(store, state, top_root(store, state.head))
        side = part.get("ignored_from")
        if side:
            staged = store.root / "staging" / side
            if staged.is_dir():
                upper = store.workspace_dir(state.id) / state.upper
                carry_ignored(staged, upper, part["ignored"])
                store.discard(staged)


@dataclass(slots=True)
class _Work:
    """What :meth:`OverlayBackend.changes` found: the plan of U against
    the chain below it, and whether the change goes through the live mount."""

    plan: CommitPlan
    through: bool = False


def _remember_committed_clean(store: Store, old: WorkspaceState, new: WorkspaceState) -> None:
    """After a commit through the live mount (by this process: a commit
    finished by a later one remembers nothing), every node of U it read is
    what the new HEAD holds, except one changed since it was read (its
    stamp moved): so the next status compares only what moves from now on
    (:mod:`snapws.backends.heldclean`). Ignored paths were not committed and
    are not remembered."""
    taken = _COMMITTED_CLEAN.pop(old.id, None)
    if taken is None or new.base is None or new.upper != old.upper:
        return
    nodes, tops, began, ignore = taken
    key = heldclean.memo_key(new.head.hex, new.mounted_head.hex, new.upper, ignore)
    memo = heldclean.HeldClean(key).after(nodes, None, [], in_or_below_any(set(tops)), began)
    heldclean.save(store.workspace_dir(new.id), memo)


def _memo(work: WorkChanges) -> _Work:
    memo = work.memo
    assert isinstance(memo, _Work), "changes() of this backend made the memo"
    return memo


def _plan(work: WorkChanges) -> CommitPlan:
    return _memo(work).plan
