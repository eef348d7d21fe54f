"""Bindings of the mount syscalls (ctypes on libc) and the MountErrors they
raise, for :mod:`snapws.mounts.mounter` and :mod:`snapws.mounts.legacy`,
the only modules that call them.

Every failing call becomes an OSError (errno set) that the callers turn into
a :class:`~snapws.errors.MountError` with :func:`mount_error`: the message
names the target, the step and the errno text, the hint what to do, and the
kernel's own explanation (the fs context's log, ``overlayfs:`` lines of the
kernel log) is added when it gave one.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from snapws.errors import MountError, UnsupportedError

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

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
libc.mount.restype = ctypes.c_int
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.umount2.restype = ctypes.c_int


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


def overlay_missing() -> UnsupportedError:
    """The error for ENODEV from the overlay's fsopen or mount(2)."""
    return UnsupportedError("this kernel has no overlay filesystem", "load it: `modprobe overlay`")


class FallBack(Exception):
    """Internal to snapws.mounts: the new mount API is missing (or lacks ``lowerdir+``)."""


def raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def syscall(what: str, *args: int | bytes | None) -> int:
    cargs: list[ctypes.c_long | ctypes.c_char_p | None] = []
    for arg in args:
        if isinstance(arg, int):
            cargs.append(ctypes.c_long(arg))
        elif isinstance(arg, bytes):
            cargs.append(ctypes.c_char_p(arg))
        else:
            cargs.append(None)
    ret = int(libc.syscall(*cargs))
    if ret < 0:
        raise_errno(what)
    return ret


def mount_call(
    source: bytes | None,
    target: bytes,
    fstype: bytes | None,
    flags: int,
    data: bytes | None,
    what: str,
) -> None:
    if int(libc.mount(source, target, fstype, flags, data)) != 0:
        raise_errno(what)


def fs(path: Path | str) -> bytes:
    return os.fsencode(os.fspath(path))


def fc_log(fd: int) -> list[str]:
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


class KernelLog:
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


def mount_error(
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
