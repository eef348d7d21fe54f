"""The new mount API path (fsopen, fsconfig, fsmount, move_mount, open_tree)
of :func:`snapws.mounts.mounter.mount_overlay`, which chooses between it and
the legacy mount(2) path (:mod:`snapws.mounts.legacy`).

One ``lowerdir+`` per layer, topmost first (Linux >= 6.8): no limit on the
length of paths, up to the kernel's 500 layers. A view of a single lower,
which the kernel refuses as an overlay, gets an empty, detached, read-only
tmpfs as its bottom layer. ``MOVE_MOUNT_BENEATH`` (Linux >= 6.5) puts a new
mount beneath the one on a path, so that the path never shows the directory
below while one replaces the other.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from snapws.errors import MountError
from snapws.mounts.plan import MountPlan
from snapws.mounts.syscalls import (
    _AT_FDCWD,
    _FSCONFIG_CMD_CREATE,
    _FSCONFIG_SET_FD,
    _FSCONFIG_SET_FLAG,
    _FSCONFIG_SET_STRING,
    _FSMOUNT_CLOEXEC,
    _FSOPEN_CLOEXEC,
    _MOUNT_ATTR_RDONLY,
    _MOVE_MOUNT_BENEATH,
    _MOVE_MOUNT_F_EMPTY_PATH,
    _OPEN_TREE_CLONE,
    _SYS_FSCONFIG,
    _SYS_FSMOUNT,
    _SYS_FSOPEN,
    _SYS_MOVE_MOUNT,
    _SYS_OPEN_TREE,
    BeneathUnsupportedError,
    FallBack,
    KernelLog,
    fc_log,
    fs,
    mount_error,
    overlay_missing,
    syscall,
)


class EmptyLayerRefused(Exception):
    """A view of a single lower could not get its empty bottom layer: before
    Linux 6.15 an overlay refuses a detached mount as a layer (EINVAL);
    without tmpfs there is none (ENODEV). Nothing was mounted; ``error`` is
    the MountError to raise when the caller has no other way (a bind mount)."""

    def __init__(self, error: MountError) -> None:
        super().__init__(str(error))
        self.error = error


def absolute(path: Path | str) -> str:
    return os.path.abspath(os.fspath(path))


def mount_new(plan: MountPlan, target: Path, *, beneath: bool = False) -> None:
    """Mount ``plan`` on ``target`` with the new mount API (beneath the mount
    there when ``beneath``).

    Raises FallBack (fsopen is not implemented or the overlay has no
    ``lowerdir+``: nothing mounted), EmptyLayerRefused (see there),
    BeneathUnsupportedError, UnsupportedError (no overlay filesystem),
    MountError (the message carries the kernel's explanation)."""
    klog = KernelLog()
    try:
        try:
            fd = syscall("fsopen overlay", _SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                raise FallBack("fsopen(2) is not implemented") from None
            if exc.errno == errno.ENODEV:
                raise overlay_missing() from None
            raise mount_error(exc, "mounting overlay on", target) from None
        try:
            _configure_and_mount(fd, plan, target, klog, beneath=beneath)
        finally:
            os.close(fd)
    finally:
        klog.close()


def _configure_and_mount(
    fd: int, plan: MountPlan, target: Path, klog: KernelLog, *, beneath: bool
) -> None:
    step = "setting the overlay source of"

    def set_string(key: str, value: str) -> None:
        syscall(
            f"fsconfig {key}",
            _SYS_FSCONFIG,
            fd,
            _FSCONFIG_SET_STRING,
            key.encode(),
            os.fsencode(value),
            0,
        )

    empty_fd: int | None = None
    single_view = False
    fc_lines: list[str] = []
    try:
        set_string("source", plan.source)
        for index, lower in enumerate(plan.lowers):
            step = f"adding lower layer {absolute(lower)!r} for"
            try:
                set_string("lowerdir+", absolute(lower))
            except OSError as exc:
                if index == 0 and exc.errno == errno.EINVAL:
                    fc_lines += fc_log(fd)
                    if any("nknown parameter" in line for line in fc_lines):
                        raise FallBack("the overlay has no 'lowerdir+' parameter") from None
                raise
        if plan.upper is not None and plan.work is not None:
            # upperdir/workdir values are unescaped by the kernel, lowerdir+ ones are not
            step = "setting the upper directory of"
            set_string("upperdir", absolute(plan.upper).replace("\\", "\\\\"))
            step = "setting the work directory of"
            set_string("workdir", absolute(plan.work).replace("\\", "\\\\"))
        elif len(plan.lowers) == 1:
            step = "adding an empty bottom layer for"
            single_view = True
            empty_fd = _empty_tree()
            try:
                syscall(
                    "fsconfig lowerdir+ (fd)",
                    _SYS_FSCONFIG,
                    fd,
                    _FSCONFIG_SET_FD,
                    b"lowerdir+",
                    None,
                    empty_fd,
                )
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                fc_log(fd)
                set_string("lowerdir+", f"/proc/self/fd/{empty_fd}")
        for key, value in plan.options():
            step = f"setting option {key} of"
            if value is None:
                syscall(
                    f"fsconfig {key}", _SYS_FSCONFIG, fd, _FSCONFIG_SET_FLAG, key.encode(), None, 0
                )
            else:
                set_string(key, value)
        step = "creating the overlay for"
        syscall("fsconfig create", _SYS_FSCONFIG, fd, _FSCONFIG_CMD_CREATE, None, None, 0)
        step = "mounting overlay on"
        attrs = _MOUNT_ATTR_RDONLY if plan.readonly else 0
        mfd = syscall("fsmount", _SYS_FSMOUNT, fd, _FSMOUNT_CLOEXEC, attrs)
        try:
            if beneath:
                step = "mounting overlay beneath the mount on"
            move_mount_fd(mfd, target, beneath=beneath)
        finally:
            os.close(mfd)
    except OSError as exc:
        details = fc_lines + fc_log(fd) + klog.lines()
        error = mount_error(exc, step, target, details)
        if single_view and exc.errno in (errno.EINVAL, errno.ENODEV):
            raise EmptyLayerRefused(error) from None
        raise error from None
    finally:
        if empty_fd is not None:
            os.close(empty_fd)


def move_mount_fd(mfd: int, target: Path, *, beneath: bool) -> None:
    """Attach the detached mount ``mfd`` on ``target`` (beneath the mount
    there when ``beneath``). EINVAL/ENOSYS for ``beneath`` become
    :class:`BeneathUnsupportedError`; other failures raise OSError."""
    flags = _MOVE_MOUNT_F_EMPTY_PATH | (_MOVE_MOUNT_BENEATH if beneath else 0)
    try:
        syscall("move_mount", _SYS_MOVE_MOUNT, mfd, b"", _AT_FDCWD, fs(target), flags)
    except OSError as exc:
        if beneath and exc.errno in (errno.EINVAL, errno.ENOSYS):
            raise BeneathUnsupportedError(
                f"cannot mount beneath the mount on {os.fspath(target)!r}: "
                f"move_mount: {os.strerror(exc.errno)}"
            ) from None
        raise


def move_beneath(source: Path, target: Path) -> None:
    """Put a copy of the mount on ``source`` beneath the mount on ``target``
    (``open_tree(OPEN_TREE_CLONE)`` then ``move_mount(MOVE_MOUNT_BENEATH)``):
    afterwards both show the same filesystem (the same superblock, so a FUSE
    server keeps serving it), ``target`` still shows its old top mount until
    that is detached, and the caller may detach ``source``.

    Raises :class:`BeneathUnsupportedError` when the kernel cannot (nothing
    changed), :class:`MountError` on other failures.
    """
    try:
        tfd = syscall(
            "open_tree",
            _SYS_OPEN_TREE,
            _AT_FDCWD,
            fs(absolute(source)),
            _OPEN_TREE_CLONE | os.O_CLOEXEC,
        )
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise BeneathUnsupportedError("open_tree(2) is not implemented") from None
        raise mount_error(exc, "cloning the mount on", source) from None
    try:
        move_mount_fd(tfd, Path(absolute(target)), beneath=True)
    except OSError as exc:
        raise mount_error(exc, "mounting beneath the mount on", target) from None
    finally:
        os.close(tfd)


def _empty_tree() -> int:
    """An O_PATH-like fd on the root of a new, empty, detached, read-only tmpfs."""
    tfd = syscall("fsopen tmpfs", _SYS_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC)
    try:
        syscall("fsconfig tmpfs", _SYS_FSCONFIG, tfd, _FSCONFIG_SET_STRING, b"size", b"4k", 0)
        syscall("fsconfig tmpfs", _SYS_FSCONFIG, tfd, _FSCONFIG_CMD_CREATE, None, None, 0)
        return syscall("fsmount tmpfs", _SYS_FSMOUNT, tfd, _FSMOUNT_CLOEXEC, _MOUNT_ATTR_RDONLY)
    finally:
        os.close(tfd)
