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

import abc
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from snapws.backends.base import (
    Adopted,
    Backend,
    JournalPart,
    UpperForm,
    WorkChanges,
)
from snapws.backends.swap import (
    FREEZE_WAIT,
    move_into_mount,
    stray_entries,
    stray_entries_error,
)
from snapws.backends.upperdir import (
    carriable,
    carry_ignored,
    copy_dir_meta,
    make_upper,
    new_dir_names,
    plan_mount,
    prepare_layer_tree,
    refuse_foreign_opaque,
    sweep_workspace_dir,
    top_root,
)
from snapws.config import Config
from snapws.crash import crashpoint
from snapws.errors import MountError, NotMountedError, UnsupportedError
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.materialise import materialise
from snapws.layers.scan import CommitPlan, entries_of, ignored_in_upper, plan_upper, prune_upper
from snapws.layers.view import ChainView
from snapws.model import Change, Entry, Kind, WorkspaceState, dir_name_problem
from snapws.mounts import busy, mounter
from snapws.mounts.mounter import BeneathUnsupportedError, MountBusyError
from snapws.mounts.plan import MountPlan
from snapws.session import Session
from snapws.store.atomic import syncfs
from snapws.store.store import Store


class OverlayBackend(Backend):
    """A workspace shown by an overlay mount of HEAD's chain below U."""

    #: the form of U this backend's mounts write (what the scan of U reads)
    upper_form: ClassVar[UpperForm] = "overlay"

    # ---- mount primitives, per backend ----------------------------------------

    @abc.abstractmethod
    def mount(self, plan: MountPlan) -> None:
        """Mount ``plan`` (lower chain below ``plan.upper``) on ``plan.target``.
        Precondition: nothing of this workspace is mounted there; the upper
        and work directories exist. Raises MountError, UnsupportedError."""

    @abc.abstractmethod
    def mount_beneath(self, plan: MountPlan) -> None:
        """Mount ``plan`` BENEATH the mount now on ``plan.target``: the path
        keeps showing the old mount until it is detached, then the new one,
        never the directory below. Raises BeneathUnsupportedError (nothing
        mounted) when the kernel cannot, MountError on failures."""

    @abc.abstractmethod
    def _remount(self, target: Path, readonly: bool) -> None:
        """Remount the workspace mount on ``target`` read-only or read-write
        (every mount of its superblock). Raises MountError, MountBusyError
        while files are open for writing."""

    @abc.abstractmethod
    def detach(self, target: Path) -> None:
        """Lazily unmount ``target``; processes inside keep the old (frozen)
        view until they leave it. Never busy. Raises MountError."""

    @abc.abstractmethod
    def unmount(self, target: Path, lazy: bool = False) -> None:
        """Unmount the workspace on ``target``: only when unused (raises
        MountBusyError naming why), or ``lazy``: freeze, then detach."""

    # ---- freezing and swapping mounts ----------------------------------------

    def freeze(self, target: Path, action: str) -> None:
        """Make the mount on ``target`` read-only so that U stops changing.
        While a process holds a file open for writing (or mapped
        shared-writable), retries for up to :data:`FREEZE_WAIT` seconds,
        then refuses, changing nothing: WorkspaceBusyError naming the
        processes and ``action``. A process whose cwd is inside does not
        block it. Raises MountError on other failures."""
        deadline = time.monotonic() + FREEZE_WAIT
        pause = 0.001
        while True:
            try:
                self._remount(target, readonly=True)
                return
            except MountBusyError:
                if time.monotonic() >= deadline:
                    raise busy.busy_error(target, action) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def thaw(self, target: Path) -> None:
        """Undo :meth:`freeze`. Raises MountError."""
        self._remount(target, readonly=False)

    def replace(
        self,
        plan: MountPlan,
        action: str = "remount",
        after_beneath: Callable[[], None] | None = None,
    ) -> int:
        """Show ``plan`` on ``plan.target`` in place of the older mount of the
        same workspace there, with no moment at which the path resolves to
        the directory below: freeze the old mount if writable, mount
        ``plan`` beneath it, detach it. Before Linux 6.5 (no mount-beneath):
        detach, mount, and move what was written below in between into the
        new mount; returns how many entries were so moved (0 otherwise).
        ``after_beneath`` runs between mounting beneath and detaching (crash
        tests). Raises MountError, WorkspaceBusyError."""
        target = plan.target
        top = mounter.mount_at(target)
        if top is not None and not mounter.is_readonly(top):
            self.freeze(target, action)
        try:
            self.mount_beneath(plan)
        except BeneathUnsupportedError:
            return self._replace_with_sweep(plan)
        if after_beneath is not None:
            after_beneath()
        self.detach(target)
        return 0

    def _replace_with_sweep(self, plan: MountPlan) -> int:
        target = plan.target
        self.detach(target)
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self.mount(plan)
            return move_into_mount(fd, target)
        finally:
            os.close(fd)

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
            make_upper(store, state, top_root(store, state.head))
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
        make_upper(store, state, top_root(store, state.head))
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
        """The mounted upperdir, else the recorded one if it exists, else the
        newest ``upper-*``, else a new one; its work directory, made if
        missing."""
        wsdir = store.workspace_dir(wid)
        uppers = sorted(
            (p for p in wsdir.iterdir() if p.name.startswith("upper-") and p.is_dir()),
            key=lambda p: p.stat().st_mtime_ns,
        )
        rec_upper, rec_work = recorded
        if mounted is not None:
            upper, work = mounted
        elif _valid_name(rec_upper) and (wsdir / str(rec_upper)).is_dir():
            upper, work = str(rec_upper), str(rec_work) if _valid_name(rec_work) else ""
        elif uppers:
            upper, work = uppers[-1].name, ""  # the newest
        else:
            upper, work = new_dir_names()
            (wsdir / upper).mkdir()
        if not (_valid_name(work) and (wsdir / work).is_dir()):
            work = "work-" + upper[len("upper-") :] if upper.startswith("upper-") else ""
            if not _valid_name(work) or ((wsdir / work).exists() and not (wsdir / work).is_dir()):
                work = new_dir_names()[1]
            (wsdir / work).mkdir(exist_ok=True)
        return upper, work

    def sweep(self, store: Store, state: WorkspaceState) -> None:
        """Old upper and work directories, staging mount points."""
        sweep_workspace_dir(store, state)

    # ---- around a change --------------------------------------------------------

    def quiesce(self, store: Store, state: WorkspaceState, action: str) -> None:
        """Freeze the mount (see :meth:`freeze`)."""
        self.freeze(Path(state.path), action)

    def release(self, store: Store, state: WorkspaceState, work: WorkChanges | None) -> None:
        """Thaw the mount if it is (still) frozen."""
        if self.mount_state(store, state) == "frozen":
            self.thaw(Path(state.path))

    def changes(self, session: Session, hold: bool = False) -> WorkChanges:
        """The scan of U against HEAD's chain (:func:`plan_upper`)."""
        plan = plan_upper(
            os.fsencode(session.upper),
            session.chain_view(session.state.head),
            self.upper_form,
            session.ignore_rules(),
        )
        hiding = {n.path for n in plan.keep if n.kind is not Kind.DIR or n.opaque}
        return WorkChanges(plan.changes, plan.ignored, hiding, plan)

    def working_view(self, session: Session) -> ChainView:
        """U over HEAD's chain, read without the mount."""
        return ChainView(
            [
                os.fsencode(session.upper),
                *[os.fsencode(p) for p in session.store.layer_trees(session.state.head)],
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
        """Nothing is copied: the frozen U becomes ``tree`` in the finish
        (:meth:`finish_layer`). Its data is synced now, before the journal
        claims it; the entries are those of the nodes that stay in it."""
        plan = _plan(work)
        refuse_foreign_opaque(plan.keep, self.upper_form, session.store.xattr_form)
        syncfs(session.upper)
        return entries_of(plan.keep, session.config.hash_threads, known=session.hashes)

    def commit_part(self, session: Session, work: WorkChanges) -> JournalPart:
        """U's name, its no-op copy-ups to prune, its ignored paths to carry."""
        plan = _plan(work)
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
    ) -> None:
        """Ignored paths move from U into the next upperdir (made now);
        then U, pruned to its manifest, is renamed to ``tree``, or dropped
        when ``tree`` is None (the same layer is stored already)."""
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
        prepare_layer_tree(upper, prune, manifest, form, store.xattr_form)
        os.rename(upper, tree)

    # ---- showing another snapshot ---------------------------------------------------

    def next_state(
        self, state: WorkspaceState, head: SnapshotId, branch: str | None, keep: bool
    ) -> WorkspaceState:
        """A new upperdir (the kept one when ``keep``) and always a new work
        directory: the new mount is told from the old one by it."""
        upper, work = new_dir_names()
        return replace(
            state, head=head, branch=branch, upper=state.upper if keep else upper, work=work
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
        has something there (its tracked path wins, as in git)."""
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
        use since."""
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
        filesystem); the directory becomes the mount point."""
        tree.mkdir()
        copy_dir_meta(path, tree)
        src, dst = os.fsencode(path), os.fsencode(tree)
        for name in os.listdir(src):
            os.rename(src + b"/" + name, dst + b"/" + name)
        copy_dir_meta(path, tree)  # renames changed the mtimes
        return Adopted(None)

    def unadopt(self, path: Path, tree: Path) -> None:
        """Every entry goes back into the directory."""
        if tree.is_dir():
            src, dst = os.fsencode(tree), os.fsencode(path)
            for name in os.listdir(src):
                os.rename(src + b"/" + name, dst + b"/" + name)

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
        """The empty upperdir, its root as HEAD's."""
        make_upper(store, state, top_root(store, state.head))


def _valid_name(v: object) -> bool:
    return isinstance(v, str) and dir_name_problem(v) is None


def _plan(work: WorkChanges) -> CommitPlan:
    plan = work.memo
    assert isinstance(plan, CommitPlan), "changes() of this backend made the memo"
    return plan
