"""The fuse backend: the overlay served by fuse-overlayfs, for root where the
kernel overlay cannot be used (a store on an overlay, as inside containers;
a kernel without overlayfs) but /dev/fuse can.

Needs euid 0: real root, or root in a container's user namespace. (As a
non-root user fuse-overlayfs could mount, but nothing could freeze the mount
for a commit: a read-only remount needs CAP_SYS_ADMIN. The rootless backend
is the way for non-root users.)

Mounts are named ``snapws-<workspace id>-<upper dir>`` (the server's argv[0],
see :mod:`snapws.mounts.fuse`): mountinfo then shows fstype
``fuse.snapws-<id>-<upper>``, which tells which workspace and upperdir a mount
belongs to; the server's open directories tell which store.

What fuse-overlayfs writes into U differs from the kernel's form in ways
:mod:`snapws.layers.fuseform` describes; commit turns U into the store's form
before it becomes a layer, so layers and snapshot ids are the same whichever
backend made them.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from snapws.backends.base import Availability, MountStatus, nearest_existing
from snapws.backends.kernel import _remove_probe_dir, store_of_upper
from snapws.backends.overlay import OverlayBackend
from snapws.errors import SnapwsError, UnsupportedError
from snapws.ids import WorkspaceId
from snapws.model import WorkspaceState
from snapws.mounts import fuse, mounter
from snapws.mounts.plan import MountPlan
from snapws.store import probe
from snapws.store.store import Store

#: mount name prefix: ``snapws-<32 hex workspace id>-<upper dir name>[.<work dir name>]``
NAME_PREFIX = "snapws-"
_NAME = re.compile(r"^snapws-([0-9a-f]{32})-([^.]+)(?:\.(.+))?$")


def mount_name(upper: Path, work: Path | None = None) -> str:
    """The name of the fuse mount of upperdir ``STORE/workspaces/<id>/<upper>``
    with work dir ``work`` (a new work dir for each mount tells a mount of
    the same upperdir on an older chain from the current one)."""
    name = f"{NAME_PREFIX}{upper.parent.name}-{upper.name}"
    return f"{name}.{work.name}" if work is not None else name


#: where :meth:`FuseBackend.mount_beneath` mounts first (inside the workspace's store dir)
STAGING_MOUNT_PREFIX = ".mnt-"


class FuseBackend(OverlayBackend):
    """fuse-overlayfs mounts, made and frozen by root."""

    name: ClassVar[str] = "fuse"
    upper_form = "fuse"
    can_hold = True  # fuse-overlayfs reads the kernel's whiteouts and opaque markers too

    def probe(self, store_root: Path) -> Availability:
        """euid 0, fuse-overlayfs installed, /dev/fuse usable, and a real
        test mount (lower, upper, work in a temporary directory beside the
        store; unmounted and removed at once)."""
        program = fuse.find_program()
        if program is None:
            return Availability(
                self.name,
                False,
                "fuse-overlayfs is not installed",
                "apt-get install fuse-overlayfs (or dnf install fuse-overlayfs)",
            )
        if os.geteuid() != 0:
            return Availability(
                self.name,
                False,
                f"needs root (or root in a container), to freeze its mounts; this is uid "
                f"{os.geteuid()}",
                "use the rootless backend (or plain) as a non-root user",
            )
        problem = fuse.device_problem()
        if problem:
            return Availability(
                self.name,
                False,
                problem,
                "modprobe fuse; in a container, pass the device (docker run --device /dev/fuse)",
            )
        where = nearest_existing(store_root)
        try:
            self.check_filesystem(where)
        except UnsupportedError as exc:
            return Availability(self.name, False, exc.message, exc.hint or "")
        except OSError as exc:
            return Availability(self.name, False, f"cannot probe {where}: {exc}", "")
        error = probe_fuse_mount(where, program)
        if error:
            return Availability(
                self.name,
                False,
                f"a test fuse-overlayfs mount failed: {error}",
                "check /dev/fuse and that FUSE mounts are allowed here",
            )
        version = fuse.program_version(program) or "?"
        return Availability(
            self.name,
            True,
            f"fuse-overlayfs {version} and /dev/fuse work (a test mount succeeded)",
        )

    def check_privileges(self) -> None:
        """Raise :class:`UnsupportedError` unless euid is 0."""
        if os.geteuid() != 0:
            raise UnsupportedError(
                "the fuse backend needs root (or root in a container): only root can freeze "
                "its mount for a commit",
                hint="run snapws with sudo; as a non-root user, make workspaces with "
                "`snapws init --backend rootless` (or plain)",
            )

    def check_filesystem(self, store_root: Path) -> None:
        """The store's filesystem must report d_type and hold whiteouts (0/0
        character devices): layers keep deletions so, and fuse-overlayfs
        writes them so only where it can (an overlay refuses them: there it
        writes ``.wh.`` files, which snapws layers do not hold). Raises
        UnsupportedError, OSError (the directory is not writable)."""
        if not probe.has_d_type(store_root):
            raise UnsupportedError(
                f"the filesystem of {store_root} does not report file types (d_type), "
                "which fuse-overlayfs requires",
                hint="use another filesystem for the store (xfs needs ftype=1)",
            )
        if not can_make_whiteout(store_root):
            on_overlay = probe.fs_magic(store_root) == probe.OVERLAYFS_MAGIC
            raise UnsupportedError(
                f"the filesystem of {store_root} refuses whiteouts (0/0 character devices)"
                + (", as an overlay does" if on_overlay else ""),
                hint="put the store on a volume or bind mount of a real filesystem "
                "(--store PATH); the plain backend works anywhere",
            )

    def mount_state(self, store: Store, state: WorkspaceState) -> MountStatus:
        """See :meth:`Backend.mount_state`: by the mount's name; a mount whose
        server died (ENOTCONN) is ``stale``."""
        target = Path(state.path)
        info = mounter.mount_at(target)
        if info is None:
            return "unmounted"
        wsdir = store.workspace_dir(state.id)
        if fuse.is_fuse_mount(info, mount_name(wsdir / state.upper, wsdir / state.work)):
            if not fuse.server_alive(target):
                return "stale"
            return "frozen" if mounter.is_readonly(info) else "mounted"
        if info.fstype.startswith(f"{fuse.FUSE_FSTYPE}{NAME_PREFIX}{state.id.hex}-"):
            return "stale"  # this workspace, with an older upperdir
        return "foreign"

    def owner_of(self, path: Path) -> tuple[Path, WorkspaceId] | None:
        """From the mount's name and its server's open upperdir."""
        info = mounter.mount_at(path)
        if info is None or not fuse.is_fuse_mount(info):
            return None
        name = info.fstype[len(fuse.FUSE_FSTYPE) :]
        m = _NAME.match(name)
        if m is None:
            return None
        wid, upper_name, _work = m.groups()
        for server in fuse.servers(name):
            for d in server.dirs:
                if d.name == upper_name and d.parent.name == wid:
                    found = store_of_upper(d)
                    if found is not None:
                        return found
        return None

    def mount(self, plan: MountPlan) -> None:
        """Run fuse-overlayfs for ``plan``, named after its upper and work dirs."""
        name = mount_name(plan.upper, plan.work) if plan.upper is not None else f"{NAME_PREFIX}view"
        fuse.mount_fuse_overlay(replace(plan, source=name, userxattr=False))

    def mount_beneath(self, plan: MountPlan) -> None:
        """fuse-overlayfs mounts on a path only: mount ``plan`` on a new
        directory beside its upperdir, put a copy of that mount beneath the
        target (:func:`snapws.mounts.mounter.move_beneath`: the same FUSE
        connection, so the server keeps serving it), detach the first one."""
        base = plan.upper.parent if plan.upper is not None else Path(tempfile.gettempdir())
        point = Path(tempfile.mkdtemp(prefix=STAGING_MOUNT_PREFIX, dir=base))
        try:
            self.mount(replace(plan, target=point))
            try:
                mounter.move_beneath(point, plan.target)
            finally:
                mounter.detach(point)
        finally:
            os.rmdir(point)

    def _remount(self, target: Path, readonly: bool) -> None:
        fuse.remount(target, readonly)

    def detach(self, target: Path) -> None:
        """Lazy unmount; the server exits once the last user has left."""
        fuse.unmount(target, lazy=True)

    def unmount(self, target: Path, lazy: bool = False) -> None:
        """Unmount (busy while used), or read-only remount plus detach."""
        if lazy:
            fuse.remount(target, readonly=True)
            fuse.unmount(target, lazy=True)
        else:
            fuse.unmount(target)


def can_make_whiteout(directory: Path) -> bool:
    """True if a 0/0 character device can be made in ``directory`` (Linux >=
    5.8 lets any user; an overlay refuses it). Raises OSError when the
    directory is not writable."""
    tmp = Path(tempfile.mkdtemp(prefix=".snapws-probe-", dir=directory))
    try:
        os.mknod(tmp / "w", stat.S_IFCHR | 0o600, os.makedev(0, 0))
        return True
    except PermissionError:
        return False
    finally:
        _remove_probe_dir(tmp)


def probe_fuse_mount(where: Path, program: str) -> str:
    """Mount a tiny overlay with fuse-overlayfs in a temporary directory in
    ``where``, write through it, unmount it, remove everything. Returns ""
    when it worked, else what failed. Never raises."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".snapws-probe-", dir=where))
    except OSError as exc:
        return f"cannot create a probe directory in {where}: {exc.strerror}"
    target = tmp / "m"
    try:
        for name in ("l", "u", "w", "m"):
            (tmp / name).mkdir()
        (tmp / "l" / "f").write_bytes(b"")
        plan = MountPlan(
            target=target,
            lowers=(tmp / "l",),
            upper=tmp / "u",
            work=tmp / "w",
            source=f"{NAME_PREFIX}probe",
        )
        try:
            fuse.mount_fuse_overlay(plan, program)
        except SnapwsError as exc:
            return exc.message
        try:
            (target / "g").write_bytes(b"x")
            os.unlink(target / "f")
        except OSError as exc:
            return f"writing through the test mount failed: {exc.strerror}"
        finally:
            try:
                fuse.unmount(target)
            except SnapwsError:
                fuse.unmount(target, lazy=True)
        return ""
    except (OSError, SnapwsError) as exc:
        return str(exc)
    finally:
        _remove_probe_dir(tmp)
