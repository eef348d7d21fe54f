"""The kernel backend: a real overlayfs mount, made by root (CAP_SYS_ADMIN).

Mounts through :mod:`snapws.mounts.mounter` (the new mount API, one
``lowerdir+`` per layer). Freezing is ``MS_REMOUNT|MS_RDONLY`` on the overlay
superblock, which fails with EBUSY while a file is open for writing.
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from snapws.backends.base import Availability, MountStatus, nearest_existing
from snapws.backends.overlay import OverlayBackend
from snapws.errors import SnapwsError, UnsupportedError
from snapws.ids import WorkspaceId
from snapws.model import WorkspaceState
from snapws.mounts import mounter
from snapws.mounts.plan import MountPlan
from snapws.store.probe import check_store_filesystem
from snapws.store.store import MARKER, Store


class KernelBackend(OverlayBackend):
    """overlayfs mounted by root in the caller's mount namespace."""

    name: ClassVar[str] = "kernel"
    can_hold: ClassVar[bool] = True

    def probe(self, store_root: Path) -> Availability:
        """Root, an overlay-capable store filesystem, and a real test mount
        (an overlay with an upperdir in a temporary directory beside the
        store, unmounted and removed at once)."""
        if os.geteuid() != 0:
            return Availability(
                self.name,
                False,
                f"needs root (CAP_SYS_ADMIN); this is uid {os.geteuid()}",
                "run snapws with sudo, or use a backend that works without root",
            )
        where = nearest_existing(store_root)
        try:
            check_store_filesystem(where)
        except UnsupportedError as exc:
            return Availability(self.name, False, exc.message, exc.hint or "")
        except OSError as exc:
            return Availability(self.name, False, f"cannot probe {where}: {exc}", "")
        error = probe_mount(where, userxattr=False)
        if error:
            return Availability(
                self.name,
                False,
                f"a test overlay mount failed: {error}",
                "load overlayfs (`modprobe overlay`); inside a container, run it with "
                "CAP_SYS_ADMIN or use the fuse or plain backend",
            )
        return Availability(
            self.name, True, "root, and a test overlay mount on the store's filesystem worked"
        )

    def check_privileges(self) -> None:
        """Raise :class:`UnsupportedError` unless running as root."""
        if os.geteuid() != 0:
            raise UnsupportedError(
                "snapws needs root to mount overlay workspaces (kernel backend)",
                hint="run it with sudo; a workspace made with `snapws init --backend "
                "rootless|plain` works without root (fuse needs root too; see docs/guide.md, "
                "Backends)",
            )

    def check_filesystem(self, store_root: Path) -> None:
        """overlayfs needs d_type and trusted.* xattrs, and refuses an
        upperdir on an overlay or a FUSE filesystem. Raises UnsupportedError."""
        check_store_filesystem(store_root)

    def mount_state(self, store: Store, state: WorkspaceState) -> MountStatus:
        """See :meth:`Backend.mount_state`: compares the overlay's upperdir
        (from mountinfo) with the one ``state`` records."""
        info = mounter.mount_at(Path(state.path))
        if info is None:
            return "unmounted"
        if info.fstype != "overlay":
            return "foreign"
        upper = info.super_options.get("upperdir")
        if upper is None:
            return "foreign"  # a read-only view, not a workspace mount
        wsdir = store.workspace_dir(state.id)
        if os.path.realpath(upper) != os.path.realpath(wsdir / state.upper):
            mine = os.path.realpath(wsdir)
            if not os.path.realpath(upper).startswith(mine + os.sep):
                return "foreign"
            return "stale"
        work = info.super_options.get("workdir")
        if work is not None and os.path.realpath(work) != os.path.realpath(wsdir / state.work):
            return "stale"  # the same upperdir on an older chain (reset, flatten)
        return "frozen" if mounter.is_readonly(info) else "mounted"

    def owner_of(self, path: Path) -> tuple[Path, WorkspaceId] | None:
        """From the overlay's upperdir: ``STORE/workspaces/<id>/<upper>``."""
        info = mounter.mount_at(path)
        if info is None or info.fstype != "overlay":
            return None
        upper = info.super_options.get("upperdir")
        if not upper:
            return None
        return store_of_upper(Path(upper))

    def mount(self, plan: MountPlan) -> None:
        """:func:`snapws.mounts.mounter.mount_overlay`."""
        mounter.mount_overlay(plan)

    def mount_beneath(self, plan: MountPlan) -> None:
        """:func:`snapws.mounts.mounter.mount_overlay` with ``beneath``."""
        mounter.mount_overlay(plan, beneath=True)

    def _remount(self, target: Path, readonly: bool) -> None:
        if readonly:
            mounter.remount_readonly(target)
        else:
            mounter.remount_readwrite(target)

    def detach(self, target: Path) -> None:
        """``umount2(MNT_DETACH)``."""
        mounter.detach(target)

    def unmount(self, target: Path, lazy: bool = False) -> None:
        """``umount2`` (busy while used), or read-only remount plus detach."""
        if lazy:
            mounter.remount_readonly(target)
            mounter.detach(target)
        else:
            mounter.unmount(target)


def store_of_upper(upper: Path) -> tuple[Path, WorkspaceId] | None:
    """(store root, workspace id) of an upperdir ``STORE/workspaces/<id>/<name>``,
    or None when ``upper`` is not laid out so or the store has no marker."""
    try:
        wid = WorkspaceId(upper.parent.name)
    except ValueError:
        return None
    root = upper.parent.parent.parent
    if (root / MARKER).is_file():
        return root, wid
    return None


def probe_mount(where: Path, *, userxattr: bool) -> str:
    """Mount a tiny overlay (one lower, an upper, a work dir) in a temporary
    directory created in ``where``, write through it, unmount it and remove
    everything. Returns "" when it worked, else what failed. Never raises."""
    import tempfile  # a probe only: start-up stays lean

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
            userxattr=userxattr,
            source="snapws-probe",
        )
        try:
            mounter.mount_overlay(plan)
        except SnapwsError as exc:
            return exc.message
        try:
            (target / "g").write_bytes(b"x")
            os.unlink(target / "f")
        except OSError as exc:
            return f"writing through the test mount failed: {exc.strerror}"
        finally:
            try:
                mounter.unmount(target)
            except SnapwsError:
                mounter.detach(target)
        return ""
    except (OSError, SnapwsError) as exc:
        return str(exc)
    finally:
        _remove_probe_dir(tmp)


def _remove_probe_dir(tmp: Path) -> None:
    """Remove a probe directory (work/work may be mode 000)."""
    import shutil

    for dirpath, dirnames, _ in os.walk(tmp):
        for d in dirnames:
            with suppress(OSError):
                os.chmod(os.path.join(dirpath, d), 0o700)
    shutil.rmtree(tmp, ignore_errors=True)


class RootlessBackend(KernelBackend):
    """The kernel overlay inside a user + mount namespace of a non-root user,
    mounted with ``userxattr`` (Linux >= 5.11).

    The process enters the workspace's namespace before any command work
    (:mod:`snapws.backends.userns`); there it is uid 0 and every method of
    the kernel backend works as is, on mounts only that namespace sees.
    """

    name: ClassVar[str] = "rootless"
    can_hold: ClassVar[bool] = True  # (in its namespace, mknod of a whiteout is allowed)
    mount_is_shared: ClassVar[bool] = False

    def prepare_process(self, store_root: Path) -> None:
        """Enter a private user namespace (this process becomes its root)."""
        from snapws.backends.userns import enter_private_namespace

        enter_private_namespace(store_root)

    def reach_hint(self, path: Path) -> str:
        """A rootless mount is seen only in its namespace: the shell."""
        return f"`snapws shell {path}` (or `snapws -C {path} run -- CMD`), which see its mount"

    def shown_after_exit(self, store: Store, state: WorkspaceState) -> bool:
        """Mounted here, and another process lives in this namespace (a
        ``snapws shell`` or ``run``): otherwise the mount dies with this
        command, and no other process ever saw it."""
        from snapws.backends.userns import namespace_shared

        return self.mount_state(store, state) == "mounted" and namespace_shared()

    def probe(self, store_root: Path) -> Availability:
        """Not real root; a store (if it exists) of the "user" xattr form;
        and a real test: a child process makes a user + mount namespace and
        mounts a small overlay with ``userxattr`` beside the store."""
        from snapws.backends.userns import is_real_root, rootless_unavailable
        from snapws.errors import StoreCorruptError, StoreNotFoundError

        if is_real_root():
            return Availability(
                self.name,
                False,
                "is for users who are not root (root uses the kernel backend)",
                "run snapws as the user who will own the workspace",
            )
        try:
            existing: Store | None = Store.open(store_root)
        except (StoreNotFoundError, StoreCorruptError, OSError):
            existing = None
        if existing is not None and existing.xattr_form != "user":
            return Availability(
                self.name,
                False,
                f"the store {store_root} was made by root (trusted.* overlay attributes)",
                "give the workspace a store of its own (--store PATH)",
            )
        where = nearest_existing(store_root)
        why = rootless_unavailable(where)
        if why is not None:
            return Availability(
                self.name,
                False,
                f"a test mount in a user namespace failed: {why}",
                "enable unprivileged user namespaces (sysctl user.max_user_namespaces>0; "
                "Debian/Ubuntu: kernel.unprivileged_userns_clone=1, "
                "kernel.apparmor_restrict_unprivileged_userns=0), Linux >= 5.11",
            )
        return Availability(
            self.name,
            True,
            "user namespaces work, and a test overlay mount with userxattr succeeded",
        )

    def check_privileges(self) -> None:
        """Raise :class:`UnsupportedError` unless this process is uid 0 of a
        user namespace (entered by :mod:`snapws.backends.userns`)."""
        from snapws.backends.userns import inside_user_namespace

        if not inside_user_namespace():
            raise UnsupportedError(
                "a rootless workspace is mounted inside its user namespace, which this "
                "process has not entered",
                hint="run snapws as the user who owns the workspace (not as root)",
            )

    def check_filesystem(self, store_root: Path) -> None:
        """As the kernel backend, with user.* xattrs instead of trusted.*."""
        check_store_filesystem(store_root, "user")

    def mount(self, plan: MountPlan) -> None:
        """:func:`snapws.mounts.mounter.mount_overlay` with ``userxattr``."""
        mounter.mount_overlay(replace(plan, userxattr=True))

    def mount_beneath(self, plan: MountPlan) -> None:
        """As :meth:`mount`, beneath the mount on the target."""
        mounter.mount_overlay(replace(plan, userxattr=True), beneath=True)
