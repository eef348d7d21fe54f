"""Probing the filesystem that holds a store: d_type, xattrs, not overlay."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from snapws.errors import UnsupportedError

OVERLAYFS_MAGIC = 0x794C7630
FUSE_MAGIC = 0x65735546
DT_UNKNOWN = 0

_libc = ctypes.CDLL(None, use_errno=True)


class _Dirent(ctypes.Structure):
    _fields_ = (
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    )


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = (ctypes.c_char_p,)
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = (ctypes.c_void_p,)
_libc.closedir.argtypes = (ctypes.c_void_p,)


def fs_magic(path: Path) -> int:
    """statfs(2) f_type of the filesystem holding ``path``."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    return int.from_bytes(buf.raw[:8], "little", signed=False) & 0xFFFFFFFF


def has_d_type(directory: Path) -> bool:
    """True if readdir(3) reports entry types in ``directory``'s filesystem
    (overlayfs needs it; xfs made with ftype=0 lacks it)."""
    probe = directory / f".snapws-probe-{os.getpid()}"
    probe.write_bytes(b"")
    try:
        d = _libc.opendir(os.fsencode(directory))
        if not d:
            return False
        try:
            while True:
                ent = _libc.readdir(d)
                if not ent:
                    return False
                if ent.contents.d_name == probe.name.encode():
                    return int(ent.contents.d_type) != DT_UNKNOWN
        finally:
            _libc.closedir(d)
    finally:
        probe.unlink()


def has_trusted_xattrs(directory: Path) -> bool:
    """True if trusted.* attributes can be set (root on a filesystem that has them)."""
    return _can_set_xattr(directory, "trusted.snapws.probe")


def has_user_xattrs(directory: Path) -> bool:
    """True if user.* attributes can be set on directories (rootless overlay
    keeps its opaque markers there)."""
    return _can_set_xattr(directory, "user.snapws.probe", is_dir=True)


def _can_set_xattr(directory: Path, name: str, is_dir: bool = False) -> bool:
    probe = directory / f".snapws-xattr-{os.getpid()}"
    if is_dir:
        probe.mkdir()
    else:
        probe.write_bytes(b"")
    try:
        os.setxattr(probe, name, b"1")
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise
    finally:
        if is_dir:
            probe.rmdir()
        else:
            probe.unlink()


def check_store_filesystem(directory: Path, xattr_form: str | None = None) -> None:
    """Refuse a store directory that overlayfs cannot use as layers and upperdirs.

    ``xattr_form`` is the store's ("trusted" or "user"; default: what a store
    made by this process gets, :func:`snapws.store.store.default_xattr_form`).
    Raises UnsupportedError naming the problem and the fix."""
    magic = fs_magic(directory)
    if magic == OVERLAYFS_MAGIC:
        raise UnsupportedError(
            f"the store {directory} is on an overlay filesystem (as inside a container); "
            "overlayfs refuses an upperdir there",
            hint="put the store on a volume or bind mount (--store PATH or SNAPWS_STORE) "
            "on a real filesystem such as ext4, xfs or tmpfs",
        )
    if magic == FUSE_MAGIC:
        raise UnsupportedError(
            f"the store {directory} is on a FUSE filesystem, which overlayfs cannot use",
            hint="put the store on ext4, xfs, btrfs or tmpfs (--store PATH)",
        )
    if not has_d_type(directory):
        raise UnsupportedError(
            f"the filesystem of {directory} does not report file types (d_type), "
            "which overlayfs requires",
            hint="use another filesystem for the store (xfs needs ftype=1)",
        )
    if xattr_form is None:
        from snapws.store.store import default_xattr_form

        xattr_form = default_xattr_form()
    if xattr_form == "user":
        if not has_user_xattrs(directory):
            raise UnsupportedError(
                f"the filesystem of {directory} does not support user.* extended attributes, "
                "which rootless overlay mounts need",
                hint="use ext4, xfs, btrfs or tmpfs (Linux 6.6+) for the store",
            )
    elif not has_trusted_xattrs(directory):
        raise UnsupportedError(
            f"the filesystem of {directory} does not support trusted.* extended attributes",
            hint="use ext4, xfs, btrfs or tmpfs for the store (and run as root)",
        )
