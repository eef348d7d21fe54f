"""The only module of snapws that mounts (with its syscall bindings,
:mod:`snapws.mounts.syscalls`, the new mount API path,
:mod:`snapws.mounts.newapi`, and the legacy mount(2) path,
:mod:`snapws.mounts.legacy`); what is mounted where is read by
:mod:`snapws.mounts.mountinfo`, re-exported here.

Never runs the ``mount``/``umount`` programs. Every failing syscall becomes a
:class:`~snapws.errors.MountError` (or a subclass) whose message names the
target, the step and the errno text, and whose hint says what to do; when the
kernel explained itself (the fs context's log of the new mount API, or
``overlayfs:`` lines that appeared in the kernel log during the call) that
text is part of the message too.

Facts this module relies on (checked on Linux 6.18 by tests/mounts):

* ``lowerdir+`` (new mount API, Linux >= 6.8) appends one layer per call; the
  FIRST call is the TOPMOST layer, the same order as ``lowerdir=a:b:c``.
* A lowerdir-only overlay with a single lower is refused (EINVAL, the kernel
  logs "at least 2 lowerdir are needed while upperdir nonexistent").
* ``mount(2)`` with ``MS_REMOUNT|MS_RDONLY`` works on a mount made with
  ``fsmount(2)``: it makes the overlay superblock read-only (and the mount's
  own flag too), fails with EBUSY while any file of the overlay is open for
  writing, mapped shared-writable, or deleted but still open; a process whose
  cwd is inside does not block it.
* The kernel shows ``redirect_dir``/``metacopy``/``index`` in mountinfo only
  when they differ from the module's defaults (``/sys/module/overlay/parameters``).
"""

from __future__ import annotations

import ctypes
import errno
import os
from contextlib import suppress
from pathlib import Path
from typing import Literal

from snapws.errors import MountError
from snapws.mounts.legacy import MAX_LEGACY_OPTIONS
from snapws.mounts.legacy import mount_legacy as _mount_legacy
from snapws.mounts.mountinfo import (
    MountInfo,
    is_readonly,
    mount_at,
    mounts_at,
    parse_mountinfo,
    read_mountinfo,
)
from snapws.mounts.newapi import EmptyLayerRefused, mount_new, move_beneath
from snapws.mounts.newapi import absolute as _abs
from snapws.mounts.plan import MountPlan
from snapws.mounts.syscalls import (
    _MNT_DETACH,
    _MOUNT_FLAG_BITS,
    _MS_BIND,
    _MS_PRIVATE,
    _MS_RDONLY,
    _MS_REC,
    _MS_REMOUNT,
    _MS_STRICTATIME,
    _SUPER_FLAG_BITS,
    _UMOUNT_NOFOLLOW,
    BeneathUnsupportedError,
    MountBusyError,
)
from snapws.mounts.syscalls import FallBack as _FallBack
from snapws.mounts.syscalls import fs as _fs
from snapws.mounts.syscalls import libc as _libc
from snapws.mounts.syscalls import mount_call as _mount_call
from snapws.mounts.syscalls import mount_error as _mount_error
from snapws.mounts.syscalls import raise_errno as _raise_errno

__all__ = [
    "MAX_LEGACY_OPTIONS",
    "Api",
    "BeneathUnsupportedError",
    "MountBusyError",
    "MountInfo",
    "detach",
    "is_readonly",
    "make_mounts_private",
    "mount_at",
    "mount_overlay",
    "mounts_at",
    "move_beneath",
    "parse_mountinfo",
    "read_mountinfo",
    "remount_readonly",
    "remount_readwrite",
    "remount_superblock",
    "unmount",
]

Api = Literal["auto", "new", "legacy"]


# --------------------------------------------------------------------------- mounting


def mount_overlay(plan: MountPlan, *, api: Api = "auto", beneath: bool = False) -> None:
    """Mount the overlay described by ``plan`` on ``plan.target``.

    ``beneath``: put the new mount BENEATH the mount now on ``plan.target``
    (``MOVE_MOUNT_BENEATH``), so that the path keeps showing the old mount
    until the caller detaches it, and never the directory below. Only with
    the new mount API; raises :class:`BeneathUnsupportedError` (nothing
    mounted) when the kernel cannot do it, including the legacy path.

    ``api``: ``"new"`` uses only fsopen/fsconfig/fsmount/move_mount, with one
    ``lowerdir+`` per layer, topmost first (no length limit on paths, up to
    the kernel's 500 layers). ``"legacy"`` uses only ``mount(2)``, whose option
    string is limited to 4095 bytes; paths are made short by ``chdir`` into the
    layers' common parent (the process cwd is restored afterwards, so this is
    not safe against other threads using relative paths at that moment), and
    when that is still too long, by naming each layer by an O_PATH descriptor
    (see :data:`LEGACY_FD_PATHS`). ``"auto"`` (default) uses the new API and
    falls back to legacy when fsopen gives ENOSYS or ``lowerdir+`` is unknown.

    A view (no upper) of a single lower, which the kernel refuses as an
    overlay, is mounted as an overlay of that lower over an empty, detached,
    read-only tmpfs (mountinfo then lists ``lowerdir+=/`` as the second layer).
    Kernels that refuse detached layers (before 6.15), and the legacy path,
    get a read-only bind mount of the lower instead: fstype and source in
    mountinfo are then the lower's filesystem, and whiteouts in that layer show
    as what they are (a bottom layer has no business holding any).

    ``plan.readonly`` mounts read-only from the start. Views are read-only anyway.

    Raises :class:`UnsupportedError` when the kernel has no overlay filesystem,
    :class:`MountError` for every other failure (the message carries the
    kernel's explanation when it gave one), including a legacy option string
    that cannot fit (the message says how many layers fit).
    """
    target = Path(os.path.abspath(plan.target))
    if api not in ("auto", "new", "legacy"):
        raise ValueError(f"api must be 'auto', 'new' or 'legacy', not {api!r}")
    if beneath and api == "legacy":
        raise BeneathUnsupportedError(f"cannot mount beneath {os.fspath(target)!r} with mount(2)")
    if api != "legacy":
        try:
            mount_new(plan, target, beneath=beneath)
            return
        except EmptyLayerRefused as refused:
            if api == "new" or beneath:
                raise refused.error from None
            try:
                _bind_readonly(plan.lowers[0], target)
            except MountError:
                raise refused.error from None
            return
        except _FallBack as why:
            if beneath:
                raise BeneathUnsupportedError(
                    f"cannot mount beneath {os.fspath(target)!r}: {why}"
                ) from None
            if api == "new":
                raise MountError(
                    f"cannot mount overlay on {os.fspath(target)!r} with the new mount API: {why}",
                    "this kernel lacks the new mount API with lowerdir+ (Linux >= 6.8); "
                    "use the legacy mount(2) path",
                ) from None
    if plan.is_view and len(plan.lowers) == 1:
        _bind_readonly(plan.lowers[0], target)  # the kernel refuses a one-layer overlay
        return
    _mount_legacy(plan, target)


def _bind_readonly(lower: Path, target: Path) -> None:
    """Read-only bind mount of ``lower`` on ``target`` (MS_BIND, then MS_REMOUNT|MS_RDONLY)."""
    src = _fs(_abs(lower))
    dst = _fs(target)
    try:
        _mount_call(src, dst, None, _MS_BIND, None, "bind mount")
    except OSError as exc:
        raise _mount_error(exc, f"bind mounting {_abs(lower)!r} on", target) from None
    try:
        _mount_call(None, dst, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None, "remount ro")
    except OSError as exc:
        with suppress(OSError):
            _umount(target, _MNT_DETACH)
        raise _mount_error(exc, "making the bind mount read-only on", target) from None


# --------------------------------------------------------------------------- remount


def _require_mount(target: Path) -> MountInfo:
    info = mount_at(target)
    if info is None:
        raise MountError(
            f"nothing is mounted on {os.fspath(target)!r}",
            "`snapws mount` mounts the workspace",
        )
    return info


def _kept_flags(info: MountInfo) -> int:
    flags = 0
    for name, bit in _MOUNT_FLAG_BITS.items():
        if name in info.mount_options:
            flags |= bit
    if not {"noatime", "relatime"} & set(info.mount_options):
        flags |= _MS_STRICTATIME
    for name, bit in _SUPER_FLAG_BITS.items():
        if name in info.super_options:
            flags |= bit
    return flags


def remount_readonly(target: Path) -> None:
    """Make the overlay mounted on ``target`` read-only: ``mount -o remount,ro``.

    Uses ``mount(2)`` with ``MS_REMOUNT|MS_RDONLY`` (other per-mount and
    superblock flags are kept), which makes the overlay SUPERBLOCK read-only:
    no process can modify the upperdir through any mount of that overlay until
    :func:`remount_readwrite`. The kernel syncs the upper filesystem first.
    Idempotent. A read-only bind view (see :func:`mount_overlay`) is left as is.

    Raises :class:`MountBusyError` (EBUSY) while a file of the overlay is open
    for writing, mapped shared-writable, or deleted but still open
    (:func:`snapws.mounts.busy.find_writers` names the processes); a process
    whose cwd is inside does not block it. :class:`MountError` when nothing or
    something other than an overlay is mounted there, or on any other failure.
    """
    info = _require_mount(target)
    if info.fstype != "overlay":
        if is_readonly(info):
            return
        raise MountError(
            f"{os.fspath(target)!r} is a {info.fstype} mount, not an overlay; "
            "refusing to remount it",
            "`snapws mount` mounts the workspace",
        )
    _remount(info, _MS_RDONLY, "remounting read-only")


def remount_readwrite(target: Path) -> None:
    """Make the overlay on ``target`` writable again (``mount -o remount,rw``).

    Raises :class:`MountError` when nothing is mounted there, when it is not
    an overlay with an upper directory (a view cannot become writable), or on
    any failure of the syscall.
    """
    info = _require_mount(target)
    if info.fstype != "overlay" or "upperdir" not in info.super_options:
        raise MountError(
            f"{os.fspath(target)!r} is a read-only view, it cannot be made writable",
            "mount the workspace with an upper directory (`snapws mount`)",
        )
    _remount(info, 0, "remounting read-write")


def remount_superblock(target: Path, readonly: bool) -> None:
    """``MS_REMOUNT`` (with ``MS_RDONLY`` when ``readonly``) of whatever is
    mounted on ``target``, keeping its other flags: for FUSE mounts, whose
    superblock becomes read-only (or writable) as an overlay's does.

    Raises :class:`MountBusyError` (EBUSY: a file is open for writing),
    :class:`MountError` when nothing is mounted there or on other failures.
    """
    info = _require_mount(target)
    if readonly:
        _remount(info, _MS_RDONLY, "remounting read-only")
    else:
        _remount(info, 0, "remounting read-write")


def _remount(info: MountInfo, rdonly: int, action: str) -> None:
    flags = _MS_REMOUNT | rdonly | _kept_flags(info)
    try:
        _mount_call(None, _fs(info.mountpoint), None, flags, None, "remount")
    except OSError as exc:
        hint = None
        if exc.errno == errno.EBUSY:
            hint = (
                f"files under {os.fspath(info.mountpoint)!r} are open for writing (or deleted "
                "while still open); close them or stop those processes, then retry"
            )
        raise _mount_error(exc, action, info.mountpoint, hint=hint, busy=True) from None


# --------------------------------------------------------------------------- unmount


def _umount(target: Path, flags: int) -> None:
    # resolved like mount_at() does; then the last component is not followed again
    if int(_libc.umount2(_fs(os.path.realpath(target)), flags | _UMOUNT_NOFOLLOW)) != 0:
        _raise_errno("umount2")


def detach(target: Path) -> None:
    """Lazily unmount ``target`` (``umount2(MNT_DETACH)``): it vanishes from the
    namespace at once and is freed when the last user goes; never busy.

    Removes only the topmost mount on ``target``. Raises :class:`MountError`
    when nothing is mounted there (EINVAL) or on any other failure.
    """
    try:
        _umount(target, _MNT_DETACH)
    except OSError as exc:
        hint = "nothing is mounted there" if exc.errno == errno.EINVAL else None
        raise _mount_error(exc, "detaching", target, hint=hint) from None


def unmount(target: Path) -> None:
    """Unmount ``target`` (``umount2(0)``): only when nothing uses it.

    Raises :class:`MountBusyError` (EBUSY) when a process has its cwd or an
    open file inside (hint: ``cd`` out of the workspace), :class:`MountError`
    when nothing is mounted there or on any other failure.
    """
    try:
        _umount(target, 0)
    except OSError as exc:
        hint = None
        if exc.errno == errno.EBUSY:
            hint = (
                "a process uses the workspace: `cd` out of it (shells too) and close its "
                "files, then retry"
            )
        elif exc.errno == errno.EINVAL:
            hint = "nothing is mounted there"
        raise _mount_error(exc, "unmounting", target, hint=hint, busy=True) from None


_MNT_EXPIRE = 0x4


def used_by_others(target: Path) -> bool:
    """Whether a process other than this one uses the mount on ``target``.
    Free when the kernel says nothing holds it (:func:`in_use`, a syscall:
    the usual case of a script or CI job); otherwise (or when this process
    uses it, or the kernel does not tell) a scan of /proc decides
    (:func:`snapws.mounts.busy.is_held`, ~0.1 ms a process): the kernel
    counts lookups in flight too (a program creating files in a loop), and
    the scan goes by what stays (a cwd, an open file, a mapping). Callers
    hold the store's lock exclusively (see :func:`in_use`)."""
    from snapws.mounts import busy

    if not busy.used_by_me(target) and in_use(target) is False:
        return False
    return busy.is_held(target)


def in_use(target: Path) -> bool | None:
    """Whether anything besides its attachment holds the mount on ``target``
    (a process's current directory or root, an open file, a mapping, a mount
    below it), in any process of any namespace, as the kernel counts it:
    ``umount2(MNT_EXPIRE)``, which never unmounts on a first call. It fails
    with EBUSY when the mount has users, else marks it "expired" and fails
    with EAGAIN; any later access of the mount clears the mark (and only a
    second call on a still-marked mount unmounts it). So the mark is cleared
    before (a killed caller may have left one) and after, by opening the
    mount point. None when the kernel does not tell this process (EPERM: a
    FUSE mount of an ordinary user; EINVAL: not a mount point): then scan
    /proc (:func:`snapws.mounts.busy.is_held`).

    Callers hold the store's lock exclusively: two calls at once on one
    unused mount could unmount it. Raises MountError if the mount went all
    the same (another program marked it between the clearing and the call)."""
    real = os.path.realpath(target)

    def clear_mark() -> None:
        with suppress(OSError):
            os.close(os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    clear_mark()
    if int(_libc.umount2(_fs(real), _MNT_EXPIRE | _UMOUNT_NOFOLLOW)) == 0:
        raise _mount_error(
            OSError(errno.EAGAIN, "unmounted by a concurrent MNT_EXPIRE"),
            "checking whether a process uses",
            target,
            hint="run `snapws mount` to mount it again",
        )
    err = ctypes.get_errno()
    if err == errno.EBUSY:
        return True
    if err == errno.EAGAIN:
        clear_mark()
        return False
    return None


def make_mounts_private() -> None:
    """Make every mount of this process's mount namespace private
    (``mount --make-rprivate /``): mounts made here then stay here, and the
    parent namespace's later mounts do not show. Called right after
    unshare(CLONE_NEWNS) by :mod:`snapws.backends.userns`.

    Raises :class:`MountError` on failure.
    """
    try:
        _mount_call(None, b"/", None, _MS_REC | _MS_PRIVATE, None, "make-rprivate")
    except OSError as exc:
        raise _mount_error(exc, "making the mounts private under", Path("/")) from None
