"""The only module of snapws that performs mount syscalls (through ctypes on libc).

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
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from snapws.errors import MountError, UnsupportedError
from snapws.mounts.plan import MountPlan

__all__ = [
    "LEGACY_FD_PATHS",
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
    "syncfs",
    "unmount",
]

Api = Literal["auto", "new", "legacy"]

#: mount(2) copies its option string into one page: at most 4095 bytes + NUL.
MAX_LEGACY_OPTIONS = 4095

#: Legacy fallback: when the option string with paths relative to the layers'
#: common parent is still too long, name each layer by an O_PATH descriptor
#: ("lowerdir=5:6:7", resolved from cwd ``/proc/self/fd``). Tests switch it off
#: to exercise the "too many layers" error.
LEGACY_FD_PATHS = True

# Syscall numbers: the same on x86_64 and aarch64 (the common table from 424 on).
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432

_FSOPEN_CLOEXEC = 0x1
_FSMOUNT_CLOEXEC = 0x1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_SET_FD = 5
_FSCONFIG_CMD_CREATE = 6
_MOUNT_ATTR_RDONLY = 0x1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_BENEATH = 0x200  # Linux >= 6.5
_SYS_OPEN_TREE = 428
_OPEN_TREE_CLONE = 0x1
_AT_FDCWD = -100

_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_SYNCHRONOUS = 0x10
_MS_REMOUNT = 0x20
_MS_DIRSYNC = 0x80
_MS_NOSYMFOLLOW = 0x100
_MS_NOATIME = 0x400
_MS_NODIRATIME = 0x800
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MS_RELATIME = 0x200000
_MS_STRICTATIME = 0x1000000
_MS_LAZYTIME = 0x2000000

_MNT_DETACH = 0x2
_UMOUNT_NOFOLLOW = 0x8

# Per-mount flags (mountinfo field 6) and superblock flags (super options) that
# a remount must pass again, or the kernel would clear them.
_MOUNT_FLAG_BITS = {
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "nosymfollow": _MS_NOSYMFOLLOW,
    "noatime": _MS_NOATIME,
    "nodiratime": _MS_NODIRATIME,
    "relatime": _MS_RELATIME,
}
_SUPER_FLAG_BITS = {"sync": _MS_SYNCHRONOUS, "dirsync": _MS_DIRSYNC, "lazytime": _MS_LAZYTIME}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.syncfs.restype = ctypes.c_int


class MountBusyError(MountError):
    """A remount or unmount failed with EBUSY: files are in use under the target.

    Callers that want the culprits call :func:`snapws.mounts.busy.find_writers`.
    """

    default_hint = (
        "close the files open for writing there (or stop the processes) and retry; "
        "`snapws` names them in its busy report"
    )


class BeneathUnsupportedError(MountError):
    """The kernel cannot put a mount beneath another (``MOVE_MOUNT_BENEATH``,
    Linux >= 6.5), or not on this mount point (it is the caller's root, or
    mount propagation would cover it). Nothing was mounted: callers fall back
    to detach-then-mount (see :meth:`snapws.backends.base.Backend.replace`)."""

    default_hint = "Linux 6.5 or newer replaces a mount without a gap"


class _FallBack(Exception):
    """Internal: the new mount API is missing (or lacks ``lowerdir+``)."""


# --------------------------------------------------------------------------- syscalls


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _syscall(what: str, *args: int | bytes | None) -> int:
    cargs: list[ctypes.c_long | ctypes.c_char_p | None] = []
    for arg in args:
        if isinstance(arg, int):
            cargs.append(ctypes.c_long(arg))
        elif isinstance(arg, bytes):
            cargs.append(ctypes.c_char_p(arg))
        else:
            cargs.append(None)
    ret = int(_libc.syscall(*cargs))
    if ret < 0:
        _raise_errno(what)
    return ret


def _mount_call(
    source: bytes | None,
    target: bytes,
    fstype: bytes | None,
    flags: int,
    data: bytes | None,
    what: str,
) -> None:
    if int(_libc.mount(source, target, fstype, flags, data)) != 0:
        _raise_errno(what)


def _fs(path: Path | str) -> bytes:
    return os.fsencode(os.fspath(path))


def _fc_log(fd: int) -> list[str]:
    """Drain the fs context's message log ("e overlay: ..." lines)."""
    lines: list[str] = []
    while len(lines) < 64:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        lines.append(chunk.decode("utf-8", "replace").rstrip("\n"))
    return lines


class _KernelLog:
    """Collects ``overlayfs:`` lines the kernel logs while a mount call runs.

    The overlay reports most reasons with ``pr_err`` (kernel log), not in the fs
    context's log. Best effort: without read access to /dev/kmsg it collects nothing.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            return
        self._fd = fd

    def lines(self) -> list[str]:
        out: list[str] = []
        if self._fd is None:
            return out
        for _ in range(256):
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records were overwritten; go on
                    continue
                break
            if not record:
                break
            text = record.decode("utf-8", "replace").split("\n", 1)[0]
            message = text.split(";", 1)[-1]
            if message.startswith(("overlayfs:", "overlay:")):
                out.append(message)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_HINTS: dict[int, str] = {
    errno.ENOENT: "check that the directory named above exists",
    errno.ENOTDIR: "every layer, upper, work and target path must be a directory",
    errno.EPERM: "mounting needs root (CAP_SYS_ADMIN)",
    errno.EACCES: "mounting needs root (CAP_SYS_ADMIN)",
    errno.EBUSY: "the mount is in use; close its files (or `cd` out of it) and retry",
    errno.EROFS: "the upper directory's filesystem is read-only",
    errno.ELOOP: "layers, upper and work directories must not overlap or be reused",
}


def _mount_error(
    exc: OSError,
    action: str,
    target: Path | str,
    details: Sequence[str] = (),
    hint: str | None = None,
    *,
    busy: bool = False,
) -> MountError:
    """The MountError for a failed syscall; a MountBusyError on EBUSY when ``busy``."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    text = exc.strerror or os.strerror(code)
    message = f"{action} {os.fspath(target)!r} failed: {text} ({name})"
    extra = [d for d in details if d]
    if extra:
        message += "; kernel says: " + " | ".join(extra)
    chosen = hint if hint is not None else _HINTS.get(code)
    if busy and code == errno.EBUSY:
        return MountBusyError(message, chosen)
    return MountError(message, chosen)


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
            _mount_new(plan, target, allow_bind=api == "auto" and not beneath, beneath=beneath)
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
    _mount_legacy(plan, target)


def _abs(path: Path) -> str:
    return os.path.abspath(os.fspath(path))


def _mount_new(plan: MountPlan, target: Path, *, allow_bind: bool, beneath: bool = False) -> None:
    klog = _KernelLog()
    try:
        try:
            fd = _syscall("fsopen overlay", _SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                raise _FallBack("fsopen(2) is not implemented") from None
            if exc.errno == errno.ENODEV:
                raise UnsupportedError(
                    "this kernel has no overlay filesystem", "load it: `modprobe overlay`"
                ) from None
            raise _mount_error(exc, "mounting overlay on", target) from None
        try:
            _configure_and_mount(fd, plan, target, klog, allow_bind=allow_bind, beneath=beneath)
        finally:
            os.close(fd)
    finally:
        klog.close()


def _configure_and_mount(
    fd: int,
    plan: MountPlan,
    target: Path,
    klog: _KernelLog,
    *,
    allow_bind: bool,
    beneath: bool = False,
) -> None:
    step = "setting the overlay source of"

    def set_string(key: str, value: str) -> None:
        _syscall(
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
            step = f"adding lower layer {_abs(lower)!r} for"
            try:
                set_string("lowerdir+", _abs(lower))
            except OSError as exc:
                if index == 0 and exc.errno == errno.EINVAL:
                    fc_lines += _fc_log(fd)
                    if any("nknown parameter" in line for line in fc_lines):
                        raise _FallBack("the overlay has no 'lowerdir+' parameter") from None
                raise
        if plan.upper is not None and plan.work is not None:
            # upperdir/workdir values are unescaped by the kernel, lowerdir+ ones are not
            step = "setting the upper directory of"
            set_string("upperdir", _abs(plan.upper).replace("\\", "\\\\"))
            step = "setting the work directory of"
            set_string("workdir", _abs(plan.work).replace("\\", "\\\\"))
        elif len(plan.lowers) == 1:
            step = "adding an empty bottom layer for"
            single_view = True
            empty_fd = _empty_tree()
            try:
                _syscall(
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
                _fc_log(fd)
                set_string("lowerdir+", f"/proc/self/fd/{empty_fd}")
        for key, value in plan.options():
            step = f"setting option {key} of"
            if value is None:
                _syscall(
                    f"fsconfig {key}", _SYS_FSCONFIG, fd, _FSCONFIG_SET_FLAG, key.encode(), None, 0
                )
            else:
                set_string(key, value)
        step = "creating the overlay for"
        _syscall("fsconfig create", _SYS_FSCONFIG, fd, _FSCONFIG_CMD_CREATE, None, None, 0)
        step = "mounting overlay on"
        attrs = _MOUNT_ATTR_RDONLY if plan.readonly else 0
        mfd = _syscall("fsmount", _SYS_FSMOUNT, fd, _FSMOUNT_CLOEXEC, attrs)
        try:
            if beneath:
                step = "mounting overlay beneath the mount on"
            _move_mount_fd(mfd, target, beneath=beneath)
        finally:
            os.close(mfd)
    except OSError as exc:
        details = fc_lines + _fc_log(fd) + klog.lines()
        error = _mount_error(exc, step, target, details)
        if single_view and allow_bind and exc.errno in (errno.EINVAL, errno.ENODEV):
            # Before Linux 6.15 an overlay refuses a detached mount as a layer
            # (EINVAL); without tmpfs there is no empty layer (ENODEV).
            try:
                _bind_readonly(plan.lowers[0], target)
            except MountError:
                raise error from None
            return
        raise error from None
    finally:
        if empty_fd is not None:
            os.close(empty_fd)


def _move_mount_fd(mfd: int, target: Path, *, beneath: bool) -> None:
    """Attach the detached mount ``mfd`` on ``target`` (beneath the mount
    there when ``beneath``). EINVAL/ENOSYS for ``beneath`` become
    :class:`BeneathUnsupportedError`; other failures raise OSError."""
    flags = _MOVE_MOUNT_F_EMPTY_PATH | (_MOVE_MOUNT_BENEATH if beneath else 0)
    try:
        _syscall("move_mount", _SYS_MOVE_MOUNT, mfd, b"", _AT_FDCWD, _fs(target), flags)
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
        tfd = _syscall(
            "open_tree",
            _SYS_OPEN_TREE,
            _AT_FDCWD,
            _fs(_abs(source)),
            _OPEN_TREE_CLONE | os.O_CLOEXEC,
        )
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise BeneathUnsupportedError("open_tree(2) is not implemented") from None
        raise _mount_error(exc, "cloning the mount on", source) from None
    try:
        _move_mount_fd(tfd, Path(_abs(target)), beneath=True)
    except OSError as exc:
        raise _mount_error(exc, "mounting beneath the mount on", target) from None
    finally:
        os.close(tfd)


def _empty_tree() -> int:
    """An O_PATH-like fd on the root of a new, empty, detached, read-only tmpfs."""
    tfd = _syscall("fsopen tmpfs", _SYS_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC)
    try:
        _syscall("fsconfig tmpfs", _SYS_FSCONFIG, tfd, _FSCONFIG_SET_STRING, b"size", b"4k", 0)
        _syscall("fsconfig tmpfs", _SYS_FSCONFIG, tfd, _FSCONFIG_CMD_CREATE, None, None, 0)
        return _syscall("fsmount tmpfs", _SYS_FSMOUNT, tfd, _FSMOUNT_CLOEXEC, _MOUNT_ATTR_RDONLY)
    finally:
        os.close(tfd)


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


def _escape_legacy(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _legacy_data(
    lowers: Sequence[str], upper: str | None, work: str | None, plan: MountPlan
) -> str:
    parts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None and work is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    for key, value in plan.options():
        parts.append(key if value is None else f"{key}={value}")
    return ",".join(parts)


def _fitting_layers(
    lowers: Sequence[str], upper: str | None, work: str | None, plan: MountPlan
) -> int:
    """How many of ``lowers`` (topmost first) fit in the option string."""
    budget = MAX_LEGACY_OPTIONS - len(os.fsencode(_legacy_data([], upper, work, plan)))
    count = 0
    for i, lower in enumerate(lowers):
        budget -= len(os.fsencode(lower)) + (1 if i else 0)
        if budget < 0:
            break
        count += 1
    return count


@contextmanager
def _cwd(path: str) -> Iterator[None]:
    """chdir into ``path``; restore the previous cwd (by descriptor) afterwards."""
    saved = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(path)
        try:
            yield
        finally:
            os.fchdir(saved)
    finally:
        os.close(saved)


def _mount_legacy(plan: MountPlan, target: Path) -> None:
    if plan.is_view and len(plan.lowers) == 1:
        _bind_readonly(plan.lowers[0], target)
        return
    lowers = [_abs(p) for p in plan.lowers]
    upper = _abs(plan.upper) if plan.upper is not None else None
    work = _abs(plan.work) if plan.work is not None else None
    every = lowers + [p for p in (upper, work) if p is not None]
    base = os.path.commonpath(every)

    def rel(path: str) -> str:
        return _escape_legacy(os.path.relpath(path, base))

    rel_lowers = [rel(p) for p in lowers]
    rel_upper = rel(upper) if upper is not None else None
    rel_work = rel(work) if work is not None else None
    data = _legacy_data(rel_lowers, rel_upper, rel_work, plan)
    flags = _MS_RDONLY if plan.readonly else 0
    if len(os.fsencode(data)) <= MAX_LEGACY_OPTIONS:
        _legacy_mount_in(base, data, flags, plan, target)
        return
    size = len(os.fsencode(data))
    fits = _fitting_layers(rel_lowers, rel_upper, rel_work, plan)
    if LEGACY_FD_PATHS:
        fds: list[int] = []
        try:
            for path in every:
                try:
                    fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
                except OSError as exc:
                    raise _mount_error(exc, f"opening layer {path!r} to mount on", target) from None
            names = [str(fd) for fd in fds]
            n = len(lowers)
            fd_upper = names[n] if upper is not None else None
            fd_work = names[n + 1] if work is not None else None
            data = _legacy_data(names[:n], fd_upper, fd_work, plan)
            if len(data) <= MAX_LEGACY_OPTIONS:
                _legacy_mount_in("/proc/self/fd", data, flags, plan, target)
                return
            fits = max(fits, _fitting_layers(names[:n], fd_upper, fd_work, plan))
        finally:
            for fd in fds:
                os.close(fd)
    raise MountError(
        f"cannot mount overlay on {os.fspath(target)!r} with mount(2): its option string "
        f"for {len(lowers)} layers is {size} bytes, more than the "
        f"kernel's {MAX_LEGACY_OPTIONS}; at most {fits} layers fit with these paths",
        "`snapws flatten` reduces the number of layers (or use a kernel >= 6.8, "
        "whose lowerdir+ has no such limit)",
    )


def _legacy_mount_in(base: str, data: str, flags: int, plan: MountPlan, target: Path) -> None:
    klog = _KernelLog()
    try:
        try:
            with _cwd(base):
                _mount_call(
                    plan.source.encode(),
                    _fs(target),
                    b"overlay",
                    flags,
                    os.fsencode(data),
                    "mount overlay",
                )
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise UnsupportedError(
                    "this kernel has no overlay filesystem", "load it: `modprobe overlay`"
                ) from None
            raise _mount_error(exc, "mounting overlay on", target, klog.lines()) from None
    finally:
        klog.close()


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


def syncfs(path: Path) -> None:
    """Write the dirty data of the filesystem holding directory ``path`` to disk.

    Raises :class:`MountError` when ``path`` cannot be opened or syncfs fails.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _mount_error(exc, "opening for syncfs", path) from None
    try:
        if int(_libc.syncfs(fd)) != 0:
            _raise_errno("syncfs")
    except OSError as exc:
        raise _mount_error(exc, "syncing the filesystem of", path) from None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- mountinfo


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of /proc/self/mountinfo, unescaped.

    ``mount_options`` are the per-mount flags (``rw``/``ro``, ``nosuid``,
    ``relatime``...). ``super_options`` are the superblock's: ``rw``/``ro``
    then the filesystem's own, each ``name -> value`` (None for a flag).

    For an overlay the kernel lists the layers as given: a mount made with
    the new API shows one ``lowerdir+`` per layer, topmost first (the dict keeps
    only the last: read them with :meth:`super_values`), plus ``upperdir`` and
    ``workdir`` as absolute paths. A legacy mount shows ``lowerdir=a:b:c`` with
    the (relative, or descriptor-number) strings it was given, which are
    meaningless afterwards. ``redirect_dir``, ``metacopy``, ``index`` appear
    only when they differ from the module's defaults: with the defaults of
    Linux 6.18 a snapws mount lists none of them, except ``redirect_dir=on``
    on views (the kernel shows "follow" as "on" without upper; it creates no
    redirect there) and ``redirect_dir=nofollow`` with ``userxattr``.
    """

    mount_id: int
    parent_id: int
    mountpoint: Path
    fstype: str
    source: str
    mount_options: tuple[str, ...]
    super_options: dict[str, str | None]
    super_items: tuple[tuple[str, str | None], ...] = ()

    def super_values(self, name: str) -> list[str | None]:
        """Every value of super option ``name``, in order (``lowerdir+`` repeats)."""
        return [value for key, value in self.super_items if key == name]


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(raw: bytes) -> str:
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw))


def parse_mountinfo(data: bytes) -> list[MountInfo]:
    """Parse the bytes of a mountinfo file (see proc(5)); malformed lines are skipped."""
    result: list[MountInfo] = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) < 10:
            continue
        try:
            sep = fields.index(b"-", 6)
            mount_id = int(fields[0])
            parent_id = int(fields[1])
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        supers = fields[sep + 3] if len(fields) > sep + 3 else b""
        items: list[tuple[str, str | None]] = []
        for opt in supers.split(b","):
            if not opt:
                continue
            key, eq, value = opt.partition(b"=")
            items.append((_unescape(key), _unescape(value) if eq else None))
        result.append(
            MountInfo(
                mount_id=mount_id,
                parent_id=parent_id,
                mountpoint=Path(_unescape(fields[4])),
                fstype=_unescape(fields[sep + 1]),
                source=_unescape(fields[sep + 2]),
                mount_options=tuple(o.decode() for o in fields[5].split(b",") if o),
                super_options=dict(items),
                super_items=tuple(items),
            )
        )
    return result


def read_mountinfo() -> list[MountInfo]:
    """The mounts of this process's mount namespace, in /proc/self/mountinfo order.

    Raises :class:`MountError` when /proc is not readable.
    """
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise _mount_error(exc, "reading", "/proc/self/mountinfo", hint="mount /proc") from None
    return parse_mountinfo(data)


def mounts_at(path: Path) -> list[MountInfo]:
    """The stack of mounts whose mountpoint is the realpath of ``path``,
    topmost first (what the path shows) down to the bottom one.

    Ordered by parentage, not by mountinfo order: a mount put beneath
    another (``MOVE_MOUNT_BENEATH``) is listed after it in mountinfo but is
    its parent."""
    real = Path(os.path.realpath(path))
    here = [info for info in read_mountinfo() if info.mountpoint == real]
    if len(here) <= 1:
        return here
    ids = {info.mount_id for info in here}
    by_parent = {info.parent_id: info for info in here if info.parent_id in ids}
    bottom = [info for info in here if info.parent_id not in ids]
    if len(bottom) != 1:  # not one stack (cannot happen in one namespace)
        return list(reversed(here))
    stack = [bottom[0]]
    while stack[-1].mount_id in by_parent and len(stack) <= len(here):
        stack.append(by_parent[stack[-1].mount_id])
    return list(reversed(stack))


def mount_at(path: Path) -> MountInfo | None:
    """The topmost mount whose mountpoint is the realpath of ``path``, or None."""
    stack = mounts_at(path)
    return stack[0] if stack else None


def is_readonly(info: MountInfo) -> bool:
    """True when writes through this mount fail with EROFS (mount or superblock ro)."""
    return "ro" in info.mount_options or "ro" in info.super_options
