"""Swapping a workspace's mounts without a gap: the mount primitives every
mounting backend supplies, freezing, and putting a new mount in place of
the old one (:class:`MountSwapper`); moving what landed in the directory
under a mount into it (the fallback on kernels without mount-beneath); and
naming what an unmounted workspace directory holds that a mount would
hide."""

from __future__ import annotations

import abc
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from snapws.errors import BadPathError
from snapws.mounts import busy, mounter
from snapws.mounts.mounter import BeneathUnsupportedError, MountBusyError
from snapws.mounts.plan import MountPlan

#: How long a freeze waits for files open for writing to be closed.
FREEZE_WAIT = 1.0


#: How many stray entries an error names before "... and N more".
STRAY_SHOWN = 10


def stray_entries(path: Path) -> list[str]:
    """The entries in the (unmounted) directory ``path``, sorted: what a
    mount on it would hide. Empty when it is missing or no directory."""
    try:
        return sorted(os.fsdecode(n) for n in os.listdir(os.fsencode(path)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def stray_entries_error(path: Path, stray: list[str], shared: bool, reach: str) -> BadPathError:
    """The error for an unmounted workspace directory holding ``stray``
    entries (written while it was unmounted, or from outside a rootless
    workspace's namespace): names up to :data:`STRAY_SHOWN` of them, and
    says how to bring them into the workspace (``reach``: how to reach it;
    ``shared``: whether its mount is seen by every process)."""
    shown = ", ".join(stray[:STRAY_SHOWN])
    if len(stray) > STRAY_SHOWN:
        shown += f" ... and {len(stray) - STRAY_SHOWN} more"
    where = (
        "written there while it was unmounted"
        if shared
        else "written there from outside the workspace's namespace, where its mount is not seen"
    )
    return BadPathError(
        f"the unmounted workspace directory {path} is not empty: mounting would hide "
        f"{len(stray)} {'entry' if len(stray) == 1 else 'entries'} {where}: {shown}",
        hint=f"move them elsewhere, then copy them into the workspace through {reach}",
    )


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
    import shutil  # a rescue only: start-up stays lean

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


class MountSwapper(abc.ABC):
    """What a backend that mounts supplies (the primitives) and what it gets
    from them: freezing, thawing, and a gapless replace."""

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

    def freeze(self, target: Path, action: str, wait: float = FREEZE_WAIT) -> None:
        """Make the mount on ``target`` read-only so that U stops changing.
        While a process holds a file open for writing (or mapped
        shared-writable), retries for up to ``wait`` seconds, then refuses,
        changing nothing: WorkspaceBusyError naming the processes and
        ``action``. A process whose cwd is inside does not block it. Raises
        MountError on other failures."""
        deadline = time.monotonic() + wait
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
