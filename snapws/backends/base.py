"""The contract every backend keeps, in full.

A backend decides how a workspace's directory shows HEAD's tree plus the
uncommitted changes, and so three things, which are all the backends differ
in (containerd's Snapshotter has the same shape: one interface, every
snapshotter implements all of it):

- **where changes come from**: the overlay backends (kernel, rootless,
  fuse) scan the workspace's upperdir U; the plain backend compares the
  directory with a stat cache of HEAD (:meth:`Backend.changes`);
- **how a new layer's tree is staged**: the frozen U becomes it by a rename
  vs the changed paths are copied (:meth:`Backend.stage_layer`,
  :meth:`Backend.finish_layer`);
- **how a snapshot is shown**: a new U and a mount of the new chain vs the
  differing paths rewritten in place (:meth:`Backend.plan_switch`,
  :meth:`Backend.show`, :meth:`Backend.ensure_shown`);

plus probing, quiescing the working tree around a change and releasing it.
The operations in :mod:`snapws.ops` run one flow per verb for every backend
(validation, refusals, journal, publication, dedup, records, refs, reflog,
state, compaction, recovery) and never ask which backend they have.

Every method states its contract: preconditions, effects, errors raised.
Hooks that run inside a journaled operation's finish are idempotent: the
finish runs again after a crash.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from snapws.config import Config
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.view import ChainView
from snapws.model import Change, Entry, WorkspaceState
from snapws.session import Session
from snapws.store.store import Store

#: :meth:`Backend.quiesce`'s action for a switch that rewrites no path of the
#: working tree: to HEAD itself, keeping the uncommitted changes (``checkout``
#: of the branch it is on, ``checkout -b``, ``reset`` to HEAD)
NO_REWRITE = "move HEAD"

#: What :meth:`Backend.mount_state` finds on a workspace path:
#: ``mounted`` (read-write, with the recorded upperdir), ``frozen`` (the same,
#: read-only: left by an interrupted command), ``stale`` (a mount of this
#: workspace with another upperdir, or one whose server died), ``foreign``
#: (something else is mounted there) or ``unmounted``; ``plain`` for a
#: workspace whose directory is the working tree itself (nothing mounted).
MountStatus = Literal["mounted", "frozen", "stale", "foreign", "unmounted", "plain"]

#: How a layer tree being staged encodes deletions and opaque directories:
#: ``overlay`` (the kernel's form: 0/0 character devices, an
#: ``overlay.opaque`` xattr) or ``fuse`` (fuse-overlayfs's, see
#: :mod:`snapws.layers.fuseform`).
UpperForm = Literal["overlay", "fuse"]

#: A backend's own part of a journal: JSON values only.
JournalPart = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a backend can run here, for this user and store.

    ``reason`` says what was found (why it works, or the first thing that
    stops it); ``fix`` what to do about it (empty when it works).
    """

    backend: str
    ok: bool
    reason: str
    fix: str = ""


@dataclass(slots=True)
class WorkChanges:
    """The working tree against HEAD, as :meth:`Backend.changes` found it.

    ``changes``: the uncommitted changes (ignored paths are none);
    ``ignored``: the topmost ignored paths present in the working tree;
    ``hiding``: paths whose uncommitted state hides what another snapshot
    has below them (deleted paths, non-directories, opaque or re-made
    directories): a ``reset --keep`` must not move anything under them;
    ``memo``: what the backend learnt while looking, for its later hooks in
    the same operation (None after a crash: hooks then read the store)."""

    changes: list[Change]
    ignored: list[bytes] = field(default_factory=list)
    hiding: set[bytes] = field(default_factory=set)
    memo: Any = None


@dataclass(slots=True)
class Adopted:
    """What :meth:`Backend.adopt` staged of a new workspace's directory:
    the base layer's manifest entries (None: hash the staged tree), and
    the backend's journal part (what :meth:`Backend.install` needs)."""

    entries: list[Entry] | None
    part: JournalPart = field(default_factory=dict)


class Backend(abc.ABC):
    """How workspaces of one kind show their snapshots and yield their changes.

    Implementations are stateless singletons (one per name, see
    :func:`snapws.backends.get_backend`); every method takes what it acts on.
    """

    #: the name recorded in WorkspaceState.backend and accepted by --backend
    name: ClassVar[str]
    #: True when what one command shows stays shown to every process of the
    #: machine (kernel, fuse, plain); False for rootless, whose mount lives
    #: in a user namespace: a lone command's mount dies with it
    mount_is_shared: ClassVar[bool] = True
    #: True when showing another state replaces what is mounted on the
    #: path: a process whose current directory is inside stays on the old
    #: (frozen) view until it changes directory (``cd .``); False when the
    #: directory itself is changed in place
    replaces_mount: ClassVar[bool] = True

    # ---- probing ---------------------------------------------------------

    @abc.abstractmethod
    def probe(self, store_root: Path) -> Availability:
        """Whether this backend can run here for a store at ``store_root``
        (which may not exist yet: its nearest existing ancestor is probed).
        May perform a real test mount in a temporary directory beside the
        store and removes it again. Never raises for a negative answer."""

    def prepare_process(self, store_root: Path) -> None:
        """Make this process ready to operate a new workspace of this
        backend with its store at ``store_root``, before any thread starts
        (rootless enters a private user namespace). Default: nothing is
        needed. Raises UnsupportedError."""
        return

    def check_privileges(self) -> None:
        """Raise :class:`UnsupportedError` when this process cannot operate
        this backend's workspaces (e.g. the kernel backend as non-root).
        Default: any user can."""
        return

    def check_store(self, store_root: Path, workspace: Path) -> None:
        """Raise :class:`UnsupportedError` when the existing directory
        ``store_root`` cannot hold the layers of a workspace at
        ``workspace`` (a filesystem the backend cannot use, or another one
        than the workspace's when the backend moves files between them).
        Default: any will do."""
        return

    def reach_hint(self, path: Path) -> str:
        """How a user makes ``path`` show its workspace (for error hints)."""
        return f"`snapws -C {path} mount`"

    # ---- what the directory shows -------------------------------------------

    @abc.abstractmethod
    def mount_state(self, store: Store, state: WorkspaceState) -> MountStatus:
        """What shows on ``state.path`` as seen from this process (see
        :data:`MountStatus`). Reads only; raises MountError when /proc is
        unreadable."""

    def owner_of(self, path: Path) -> tuple[Path, WorkspaceId] | None:
        """The (store root, workspace id) of this backend's workspace shown
        exactly on ``path`` when the directory itself tells (a mount names
        its store), else None. Reads only. Default: None."""
        return None

    def shown_after_exit(self, store: Store, state: WorkspaceState) -> bool:
        """Whether the directory goes on showing the workspace to other
        processes once this command exits."""
        return self.mount_state(store, state) in ("mounted", "plain")

    @abc.abstractmethod
    def ensure_shown(self, store: Store, state: WorkspaceState, crash_step: str = "") -> bool:
        """Make the directory show ``state`` (writable), repairing what an
        interrupted command left. Returns True if it had to do anything.
        ``crash_step`` names the crash-test step inside a gapless swap.
        Raises MountError, BadPathError (entries that showing would hide),
        WorkspaceBusyError."""

    @abc.abstractmethod
    def check_shown(self, store: Store, state: WorkspaceState) -> None:
        """Raise unless the directory shows the workspace to this process,
        so that what is read from it is the workspace: NotMountedError with
        a hint, BadPathError naming entries that do not belong. Reads only."""

    @abc.abstractmethod
    def hide(self, store: Store, state: WorkspaceState, lazy: bool = False) -> bool:
        """Stop showing the workspace on its directory, keeping uncommitted
        changes in the store (``snapws umount``). Returns False when there
        is nothing to stop (not shown, or the directory is the working tree
        itself). Raises MountBusyError while used (unless ``lazy``)."""

    @abc.abstractmethod
    def check_dirs(self, store: Store, state: WorkspaceState) -> list[str]:
        """What is wrong with the workspace's own directories in the store
        (``verify``): missing upper or work directories, for instance.
        Empty when all is well. Reads only."""

    @abc.abstractmethod
    def rebuild_dirs(
        self,
        store: Store,
        wid: WorkspaceId,
        recorded: tuple[object, object],
        mounted: tuple[str, str] | None,
    ) -> tuple[str, str]:
        """``verify --repair`` of a damaged workspace record: the upper and
        work directory names to record, from what a damaged record still
        says (``recorded``, unchecked values), what is mounted (the mount's
        own names) and what is on disk; makes what is missing. Raises
        OSError."""

    @abc.abstractmethod
    def sweep(self, store: Store, state: WorkspaceState) -> None:
        """Remove the workspace's leftovers in the store that ``state`` no
        longer names (old upperdirs, temporary files). Never raises for
        what it cannot remove."""

    # ---- around a change ---------------------------------------------------

    @abc.abstractmethod
    def quiesce(self, store: Store, state: WorkspaceState, action: str) -> None:
        """Make the working tree stop changing under this process for the
        length of an operation, so that what :meth:`changes` sees is what
        the operation records. Raises WorkspaceBusyError naming the writers
        (``action`` says what was refused; :data:`NO_REWRITE` for a switch
        that rewrites no path), changing nothing."""

    @abc.abstractmethod
    def release(self, store: Store, state: WorkspaceState, work: WorkChanges | None) -> None:
        """Undo :meth:`quiesce` when the operation stops without changing
        anything (nothing to commit, a refusal, an error), and let go of
        what :meth:`changes` held in ``work``. Never raises for a cache it
        could not save."""

    @abc.abstractmethod
    def changes(self, session: Session, hold: bool = False) -> WorkChanges:
        """The working tree's changes against HEAD. O(changes) where the
        backend can (an upperdir holds only changes; a stat cache skips
        unchanged directories). ``hold``: the caller goes on to change the
        workspace and calls :meth:`release` or a finish hook with the result;
        otherwise the backend keeps what it learnt now (a stat cache).
        Raises BadPathError (the directory is gone, a path unreadable),
        LayerRejectedError (something a layer cannot record)."""

    @abc.abstractmethod
    def working_view(self, session: Session) -> ChainView:
        """The working tree, to read contents and entries from (``diff``)."""

    @abc.abstractmethod
    def copy_tree(self, session: Session, tree: Path) -> int | None:
        """``snapws eject``, the working tree quiesced: copy it into ``tree``
        (a new path in a staging directory) when the directory does not hold
        it by itself (a mount shows it from the store); returns how many
        entries were copied, None when the directory is the working tree
        already. Raises OSError (a full disk)."""

    # ---- commit ------------------------------------------------------------

    @abc.abstractmethod
    def stage_layer(self, session: Session, work: WorkChanges, tree: Path) -> list[Entry]:
        """Before the commit is journaled: the manifest entries of the new
        layer holding ``work``'s changes, its tree either written now into
        ``tree`` (a new directory in the operation's staging directory) or
        left where :meth:`finish_layer` finds it. Raises LayerRejectedError,
        OSError (a full disk: the caller discards the staging directory)."""

    @abc.abstractmethod
    def commit_part(self, session: Session, work: WorkChanges) -> JournalPart:
        """The backend's part of the commit journal (what the finish hooks
        need after a crash)."""

    @abc.abstractmethod
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
        """In the commit's finish (idempotent): make ``tree`` hold the new
        layer, described by ``manifest``, if :meth:`stage_layer` left it
        elsewhere; ``tree`` None: the same layer is stored already, drop
        what was left elsewhere. ``old`` is the workspace as recorded now
        (before the commit unless an earlier run got further), ``new`` the
        state the commit records. ``work``: what :meth:`changes` found in
        the committing process (None when a later command finishes the
        commit), which it may take instead of reading the tree again."""

    # ---- showing another snapshot -------------------------------------------

    @abc.abstractmethod
    def next_state(
        self,
        state: WorkspaceState,
        head: SnapshotId,
        branch: str | None,
        keep: bool,
        work: WorkChanges | None = None,
    ) -> WorkspaceState:
        """The state that shows ``head`` on ``branch``: with the uncommitted
        changes kept on top (``keep``: reset --keep, flatten) or with none
        (after a commit, checkout, reset --hard). ``work``: what the
        operation's :meth:`changes` found (how the change is made may depend
        on it). Pure."""

    @abc.abstractmethod
    def plan_switch(
        self,
        session: Session,
        work: WorkChanges,
        target: SnapshotId,
        between: Callable[[], list[Change]],
        keep: bool,
    ) -> JournalPart:
        """Before a switch to ``target`` is journaled (the tree quiesced):
        what :meth:`show` must do, given the uncommitted ``work``, the
        changes from HEAD to ``target`` (``between()``: computed when first
        asked for, at the cost of the layers in between), and whether the
        uncommitted changes are kept. Raises UnsupportedError (a path this
        user cannot write), changing nothing."""

    @abc.abstractmethod
    def show(
        self,
        store: Store,
        old: WorkspaceState,
        new: WorkspaceState,
        part: JournalPart,
        work: WorkChanges | None,
        done: Callable[[], None],
    ) -> None:
        """In a commit's or switch's finish (idempotent, before ``new`` is
        written): prepare what :meth:`ensure_shown` then shows, from
        ``part`` (the commit's or switch's journal part). A backend that
        changes the working tree in place calls ``done`` once it has (the
        caller then marks the journal, so a later run does not write over
        edits made since). ``work``: what the operation's own
        :meth:`changes` found (None in recovery)."""

    def holds(self, store: Store, state: WorkspaceState) -> bool:
        """Whether a change of the workspace now goes through what running
        programs see in place (a process inside would be left behind by a
        remount: see :class:`~snapws.backends.overlay.OverlayBackend`).
        Reads only. Default: False."""
        return False

    def settle(self, store: Store, state: WorkspaceState) -> JournalPart | None:
        """When the workspace can now be shown in a cheaper form than it is
        (an overlay workspace changed through its live mount while programs
        held it, free now), the journal part of a switch to the same HEAD
        (with the uncommitted changes) that does it; else None. Reads only.
        Default: None."""
        return None

    # ---- starting a workspace -------------------------------------------

    @abc.abstractmethod
    def adopt(
        self,
        store: Store,
        path: Path,
        tree: Path,
        config: Config,
        progress: Callable[[int], None] | None,
    ) -> Adopted:
        """``snapws init``: stage the directory ``path``'s current content
        as the base layer's tree in ``tree`` (a new path in a staging
        directory of ``store``). Raises OSError; the caller then calls
        :meth:`unadopt`."""

    @abc.abstractmethod
    def unadopt(self, path: Path, tree: Path) -> None:
        """Undo :meth:`adopt` before the base layer is published: ``path``
        holds its content again. Idempotent."""

    @abc.abstractmethod
    def first_state(
        self, wid: WorkspaceId, path: Path, head: SnapshotId, branch: str | None
    ) -> WorkspaceState:
        """The state of a new workspace at ``path`` showing ``head``. Pure."""

    @abc.abstractmethod
    def install(
        self,
        store: Store,
        state: WorkspaceState,
        part: JournalPart,
        fill: bool,
        done: Callable[[], None],
    ) -> None:
        """In the finish of an init or a start on a stored snapshot
        (idempotent, before ``state`` is written): make the workspace's own
        directories in the store, with ``part`` from :meth:`adopt` or
        :meth:`plan_start`. ``fill``: the directory does not hold HEAD's
        tree yet (a start on a stored snapshot); a backend that writes it in
        place calls ``done`` once it has."""

    @abc.abstractmethod
    def plan_start(self, path: Path, store: Store, head: SnapshotId) -> JournalPart:
        """Before a workspace is started on the stored snapshot ``head``
        (``init --from``, ``clone``, ``cache restore``): check that ``path``
        can take it (raises BadPathError, UnsupportedError) and return the
        journal part :meth:`install` needs."""


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (probes run there)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_here(where: Path) -> str:
    """Empty if a directory can be made in ``where``; else why not."""
    try:
        import tempfile  # a probe only: start-up stays lean

        os.rmdir(tempfile.mkdtemp(prefix=".snapws-probe-", dir=where))
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


__all__ = [
    "Adopted",
    "Availability",
    "Backend",
    "JournalPart",
    "MountStatus",
    "UpperForm",
    "WorkChanges",
    "nearest_existing",
    "writable_here",
]
