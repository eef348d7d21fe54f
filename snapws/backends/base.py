"""The contract every backend keeps, and the pieces they share.

A backend decides how a workspace's directory shows HEAD's layer chain plus
the workspace's upperdir U. The upper-based backends (kernel, rootless,
fuse) mount an overlay of the chain below U on the workspace path; they
differ only in who performs the mount and in the on-disk form U takes. The
plain backend mounts nothing (the workspace is an ordinary directory; its
operations live in :mod:`snapws.backends.plain`), and is represented here by
:class:`NoMountBackend` so that generic code can ask any workspace's backend
the same questions.

Ops code never calls :mod:`snapws.mounts` for a workspace: it asks
``backend_for(state)`` (see :mod:`snapws.backends`), which performs mounts
through the mounts package, the one place that mounts.

Every method states its contract: preconditions, effects, errors raised.
"""

from __future__ import annotations

import abc
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from snapws.ids import WorkspaceId
from snapws.model import WorkspaceState
from snapws.mounts import busy, mounter
from snapws.mounts.mounter import BeneathUnsupportedError, MountBusyError
from snapws.mounts.plan import MountPlan
from snapws.store.store import Store

#: What :meth:`Backend.mount_state` finds on a workspace path:
#: ``mounted`` (read-write, with the recorded upperdir), ``frozen`` (the same,
#: read-only: left by an interrupted command), ``stale`` (a mount of this
#: workspace with another upperdir, or one whose server died), ``foreign``
#: (something else is mounted there) or ``unmounted``; ``plain`` for a
#: workspace whose backend mounts nothing.
MountStatus = Literal["mounted", "frozen", "stale", "foreign", "unmounted", "plain"]

#: How U encodes deletions and opaque directories: ``overlay`` (the kernel's
#: form: 0/0 character devices, an ``overlay.opaque`` xattr) or ``fuse``
#: (fuse-overlayfs's, see :mod:`snapws.layers.fuseform`).
UpperForm = Literal["overlay", "fuse"]

#: How long :meth:`Backend.freeze` waits for files open for writing to be closed.
FREEZE_WAIT = 1.0


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


class Backend(abc.ABC):
    """How workspaces of one kind are shown, mounted, frozen and unmounted.

    Implementations are stateless singletons (one per name, see
    :func:`snapws.backends.get_backend`); every method takes what it acts on.
    Targets are workspace paths; plans come from
    :func:`snapws.ops.workspace.plan_mount`.
    """

    #: the name recorded in WorkspaceState.backend and accepted by --backend
    name: ClassVar[str]
    #: False for the plain backend: nothing to mount, freeze or detach
    mounts: ClassVar[bool] = True
    #: the form of U this backend's mounts write (what commit's scan reads)
    upper_form: ClassVar[UpperForm] = "overlay"
    #: True when a mount made by one command stays and every process of the
    #: machine sees it (kernel, fuse); False for rootless, whose mount lives
    #: in a user namespace: a lone command's mount dies with it
    mount_is_shared: ClassVar[bool] = True

    def reach_hint(self, path: Path) -> str:
        """How a user makes ``path`` show its workspace (for error hints):
        a command to run."""
        return f"`snapws -C {path} mount`"

    def shown_after_exit(self, store: Store, state: WorkspaceState) -> bool:
        """Whether the workspace's directory goes on showing the workspace
        to other processes once this command exits. Default: the workspace
        is mounted (:meth:`mount_state` says ``mounted``)."""
        return self.mount_state(store, state) == "mounted"

    @abc.abstractmethod
    def probe(self, store_root: Path) -> Availability:
        """Whether this backend can run here for a store at ``store_root``
        (which may not exist yet: its nearest existing ancestor is probed).

        May perform a real test mount in a temporary directory beside the
        store and removes it again. Never raises for a negative answer.
        """

    def check_privileges(self) -> None:
        """Raise :class:`UnsupportedError` when this process cannot operate
        this backend's workspaces (e.g. the kernel backend as non-root).
        Default: any user can."""
        return

    def check_store(self, store_root: Path) -> None:
        """Raise :class:`UnsupportedError` when the existing directory
        ``store_root`` is on a filesystem this backend cannot use for layers
        and upperdirs. Default: every filesystem will do."""
        return

    @abc.abstractmethod
    def mount_state(self, store: Store, state: WorkspaceState) -> MountStatus:
        """What is mounted on ``state.path`` as seen from this process
        (``mounted``, ``frozen``, ``stale``, ``foreign``, ``unmounted``; see
        :data:`MountStatus`). Reads only; raises MountError when /proc is
        unreadable."""

    @abc.abstractmethod
    def owner_of(self, path: Path) -> tuple[Path, WorkspaceId] | None:
        """The (store root, workspace id) of the mount of this backend whose
        mount point is exactly ``path``, or None when ``path`` is not such a
        mount (or its owner cannot be told). Reads only."""

    @abc.abstractmethod
    def mount(self, plan: MountPlan) -> None:
        """Mount ``plan`` (lower chain below ``plan.upper``) on ``plan.target``.

        Precondition: nothing of this workspace is mounted there and the
        upper and work directories exist (work empty, or left by a previous
        mount of the same upper). Raises :class:`MountError` (the message
        says why), :class:`UnsupportedError` when the machine lacks what the
        backend needs."""

    @abc.abstractmethod
    def mount_beneath(self, plan: MountPlan) -> None:
        """Mount ``plan`` BENEATH the mount now on ``plan.target``: the path
        keeps showing the old mount until it is detached, then shows the new
        one, and never the directory below.

        Precondition: a mount of this backend is on ``plan.target``; as for
        :meth:`mount`, the upper and work directories exist. Raises
        :class:`~snapws.mounts.mounter.BeneathUnsupportedError` (nothing
        mounted) when the kernel cannot, :class:`MountError` on failures."""

    def replace(
        self,
        plan: MountPlan,
        action: str = "remount",
        after_beneath: Callable[[], None] | None = None,
    ) -> int:
        """Show ``plan`` on ``plan.target`` in place of the mount there now (an
        older mount of the same workspace), with no moment at which the path
        resolves to the directory below it: a write that succeeds lands in
        the old (then frozen) mount's upperdir or in the new one's.

        Freezes the old mount first if it is writable (refusing, changing
        nothing, while files are open for writing: WorkspaceBusyError naming
        ``action``), mounts ``plan`` beneath it (:meth:`mount_beneath`), then
        detaches it. Where the kernel cannot mount beneath (before Linux
        6.5), detaches first, mounts, and moves whatever was written into the
        directory below in between into the new mount. Returns how many
        entries it so moved (0 with mount-beneath). ``after_beneath`` is
        called between mounting beneath and detaching (crash tests).
        Raises MountError."""
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
        """Detach, mount, then move into the new mount what was written into
        the bare directory in between (the fallback of :meth:`replace`)."""
        target = plan.target
        self.detach(target)
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self.mount(plan)
            return move_into_mount(fd, target)
        finally:
            os.close(fd)

    def freeze(self, target: Path, action: str) -> None:
        """Make the mount on ``target`` read-only so that U stops changing:
        afterwards, until :meth:`thaw` or :meth:`detach`, no process can write
        to U through it, and U's data is in the upper filesystem (not yet
        synced to disk: syncfs does that).

        While some process holds a file of the workspace open for writing
        (or mapped shared-writable, or open after deletion), retries for up
        to :data:`FREEZE_WAIT` seconds (a program writing file after file
        closes each soon), then refuses, changing nothing: raises
        :class:`WorkspaceBusyError` naming the processes, ``action`` (e.g.
        "commit") saying what was refused. A process whose cwd is inside
        does not block it. Raises :class:`MountError` on other failures."""
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
        """Undo :meth:`freeze`: make the mount on ``target`` writable again.
        Raises :class:`MountError` (nothing mounted there, or it failed)."""
        self._remount(target, readonly=False)

    @abc.abstractmethod
    def _remount(self, target: Path, readonly: bool) -> None:
        """Remount the workspace mount on ``target`` read-only or read-write
        (the superblock: every mount of it). Raises a MountError, whose class
        is ``MountBusyError`` when files are open for writing."""

    @abc.abstractmethod
    def detach(self, target: Path) -> None:
        """Lazily unmount ``target``: the path shows the directory below at
        once; processes inside keep the old (frozen) view until they leave it.
        Never busy. Precondition: frozen (read-only), so U no longer changes.
        Raises :class:`MountError` when nothing is mounted there."""

    @abc.abstractmethod
    def unmount(self, target: Path, lazy: bool = False) -> None:
        """Unmount the workspace on ``target``. Not ``lazy``: only when no
        process uses it (raises ``MountBusyError`` naming the reason
        otherwise). ``lazy``: freeze (refusing while files are open for
        writing, :class:`WorkspaceBusyError`), then detach. Raises
        :class:`MountError` when nothing is mounted there."""


class NoMountBackend(Backend):
    """The plain backend as the mount-level code sees it: nothing to mount.

    Its workspaces are ordinary directories; its operations are in
    :mod:`snapws.backends.plain`. Every mount-level method is a no-op, and
    :meth:`mount_state` says ``plain``.
    """

    name: ClassVar[str] = "plain"
    mounts: ClassVar[bool] = False

    def probe(self, store_root: Path) -> Availability:
        """Available wherever the store's directory (or its nearest existing
        ancestor) is writable: any POSIX filesystem, any user."""
        where = nearest_existing(store_root)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".snapws-probe-", dir=where))
        except OSError as exc:
            return Availability(
                self.name,
                False,
                f"cannot write in {where}: {exc.strerror}",
                "put the store in a writable directory (--store PATH)",
            )
        return Availability(self.name, True, "needs no mount: works on any filesystem, as any user")

    def mount_state(self, store: Store, state: WorkspaceState) -> MountStatus:
        """Always ``plain``."""
        return "plain"

    def reach_hint(self, path: Path) -> str:
        """Nothing to run: the directory is the workspace."""
        return f"use {path} as it is"

    def shown_after_exit(self, store: Store, state: WorkspaceState) -> bool:
        """Always: the directory is the workspace."""
        return True

    def owner_of(self, path: Path) -> tuple[Path, WorkspaceId] | None:
        """Never a mount: None."""
        return None

    def mount(self, plan: MountPlan) -> None:
        """Nothing to do."""

    def mount_beneath(self, plan: MountPlan) -> None:
        """Nothing to do."""

    def freeze(self, target: Path, action: str) -> None:
        """Nothing to do."""

    def thaw(self, target: Path) -> None:
        """Nothing to do."""

    def _remount(self, target: Path, readonly: bool) -> None:
        """Nothing to do."""

    def detach(self, target: Path) -> None:
        """Nothing to do."""

    def unmount(self, target: Path, lazy: bool = False) -> None:
        """Nothing to do."""


def move_into_mount(below_fd: int, target: Path) -> int:
    """Move every entry of the directory ``below_fd`` (the directory under a
    mount) into the mount on ``target``, entries of the same name replaced
    (what was written below is the newer). Returns the number of entries
    moved. Copies (a rename cannot cross the mount), then removes; a file
    is copied once no process holds it open for writing any more (a
    program that opened it below may still be writing it)."""
    below = f"/proc/self/fd/{below_fd}"  # a magic link: the directory itself
    return _move_tree(below, os.fspath(target))


def _move_tree(src_dir: str, dst_dir: str) -> int:
    moved = 0
    for name in os.listdir(src_dir):
        src = os.path.join(src_dir, name)
        dst = os.path.join(dst_dir, name)
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(dst) and not os.path.isdir(dst):
                os.unlink(dst)
            if not os.path.lexists(dst):
                os.mkdir(dst, stat.S_IMODE(st.st_mode))
                shutil.copystat(src, dst, follow_symlinks=False)
            moved += _move_tree(src, dst)
            os.rmdir(src)
            continue
        if stat.S_ISREG(st.st_mode):
            deadline = time.monotonic() + FREEZE_WAIT * 10
            while busy.inode_open_for_writing(st.st_dev, st.st_ino):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        elif os.path.lexists(dst):
            os.unlink(dst)
        shutil.copy2(src, dst, follow_symlinks=False)
        os.unlink(src)
        moved += 1
    return moved


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (probes run there)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
