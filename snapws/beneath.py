"""Writes beneath a directory opened once, never through a symlink.

A :class:`Beneath` holds a file descriptor of a root directory (a workspace,
a staging tree). Every path it is given is relative to that root and is
resolved from the descriptor, not from the root's name: with openat2(2)
and ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it
(Linux 5.6+), else one component at a time with
``openat(parent, component, O_NOFOLLOW | O_DIRECTORY)``. A component that
is a symlink or not a directory is refused (:class:`UnsafePathError`), never
followed, so a directory swapped for a symlink while snapws writes cannot
lead a write outside the root. The operations themselves (unlink, mkdir,
create, chmod, chown, utimens, xattrs...) act on the parent's descriptor and
the last name, without following a symlink there either; metadata of a
non-symlink is set through an ``O_PATH`` descriptor of the node (by its
``/proc/self/fd`` name: Linux has no lchmod), so it reaches exactly the
node that was opened.

This module imports nothing from the package but :mod:`snapws.errors`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from snapws.errors import UnsafePathError

#: openat2(2): syscall number on x86_64 and aarch64 (and every other arch
#: since 5.6, which share the generic table for new syscalls).
SYS_OPENAT2 = 437
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NODE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "mode", "resolve")]


class _Openat2:
    """openat2 through libc's ``syscall``; ``available`` turns False at the
    first ENOSYS (or when libc cannot be loaded)."""

    def __init__(self) -> None:
        self._syscall: Any = None
        with contextlib.suppress(OSError, AttributeError):
            self._syscall = ctypes.CDLL(None, use_errno=True).syscall
            self._syscall.restype = ctypes.c_long
        self.available = self._syscall is not None

    def open(self, dirfd: int, path: bytes, flags: int) -> int:
        """The descriptor, or raises OSError (ENOSYS: no openat2 here)."""
        how = _OpenHow(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
        while self._syscall is not None:
            fd = self._syscall(
                ctypes.c_long(SYS_OPENAT2),
                ctypes.c_int(dirfd),
                ctypes.c_char_p(path),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
            if fd >= 0:
                return int(fd)
            err = ctypes.get_errno()
            if err not in (errno.EINTR, errno.EAGAIN):  # EAGAIN: a rename raced: try again
                raise OSError(err, os.strerror(err))
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


_openat2 = _Openat2()


def use_openat2(enabled: bool) -> bool:
    """Turn openat2 on or off for this process (tests exercise the walk
    this way); returns the previous setting. It stays off where the kernel
    lacks it."""
    before = _openat2.available
    _openat2.available = enabled and _openat2._syscall is not None
    return before


def split_rel(rel: bytes) -> list[bytes]:
    """The components of a relative path. Raises UnsafePathError for an
    absolute path, an empty one, or one with ``..`` (``.`` and empty
    components are dropped)."""
    if rel.startswith(b"/"):
        raise UnsafePathError(f"refusing the absolute path {_show(rel)} (paths stay beneath)")
    parts = [p for p in rel.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise UnsafePathError(f"refusing the path {_show(rel)}: it climbs out with '..'")
    if b"\0" in rel:
        raise UnsafePathError(f"refusing the path {_show(rel)}: it holds a NUL byte")
    return parts


def _show(rel: bytes) -> str:
    return os.fsdecode(rel) or "."


def proc_path(fd: int, name: bytes = b"") -> bytes:
    """The ``/proc/self/fd`` name of ``fd`` (and ``name`` below it)."""
    base = b"/proc/self/fd/%d" % fd
    return base + b"/" + name if name else base


class EntryNotADirectoryError(NotADirectoryError):
    """What :func:`open_subdir` found where a directory should be: a symlink
    (never followed) or another non-directory; ``mode`` is its lstat mode."""

    def __init__(self, name: bytes | str, mode: int) -> None:
        self.mode, self.is_symlink = mode, stat.S_ISLNK(mode)
        self.what = "a symlink" if self.is_symlink else "not a directory"
        super().__init__(errno.ENOTDIR, f"{os.fsdecode(name)} is {self.what}")


def open_subdir(
    dirfd: int,
    name: bytes | str,
    flags: int = os.O_PATH,
    *,
    create: bool = False,
    mode: int = 0o700,
    made: Callable[[int], None] | None = None,
) -> int:
    """A descriptor (``flags`` | O_DIRECTORY | O_NOFOLLOW) of directory
    ``name`` of ``dirfd``, never through a symlink: the step of every walk
    beneath a descriptor (:class:`Beneath`, :mod:`snapws.store.nofollow`).
    ``create``: a missing one is made (``mode``), then ``made(dirfd)`` runs
    (to sync the parent, say). Raises FileNotFoundError, EntryNotADirectoryError
    (a symlink or another non-directory is there), OSError."""
    flags |= os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dirfd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        # O_NOFOLLOW|O_DIRECTORY on a symlink: ENOTDIR (O_PATH) or ELOOP
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise EntryNotADirectoryError(
            name, os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode
        ) from None
    try:
        os.mkdir(name, mode, dir_fd=dirfd)
    except FileExistsError:
        pass  # made meanwhile: open what is there (checked)
    else:
        if made is not None:
            made(dirfd)
    return open_subdir(dirfd, name, flags)


class SymlinkOnTheWayError(UnsafePathError):
    """The UnsafePathError of a symlink on the way (not another non-directory)."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    """One node pinned for metadata changes: ``path`` is a name path-based
    calls resolve to exactly that node (``follow`` says how to pass it:
    True for the ``/proc`` name of an ``O_PATH`` descriptor of a
    non-symlink, False for a symlink named beneath its parent's
    descriptor); ``st`` is its lstat."""

    path: bytes
    follow: bool
    st: os.stat_result

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    def chown(self, uid: int, gid: int) -> None:
        os.chown(self.path, uid, gid, follow_symlinks=self.follow)

    def chmod(self, mode: int) -> None:
        """No-op on a symlink (Linux ignores their modes)."""
        if not self.is_symlink:
            os.chmod(self.path, mode)

    def setxattr(self, name: str, value: bytes) -> None:
        os.setxattr(self.path, name, value, follow_symlinks=self.follow)

    def removexattr(self, name: str) -> None:
        os.removexattr(self.path, name, follow_symlinks=self.follow)

    def listxattr(self) -> list[str]:
        return os.listxattr(self.path, follow_symlinks=self.follow)

    def utime(self, mtime_ns: int) -> None:
        os.utime(self.path, ns=(mtime_ns, mtime_ns), follow_symlinks=self.follow)

    def set_meta(
        self,
        uid: int | None,
        gid: int | None,
        mode: int | None,
        xattrs: Mapping[str, bytes],
        mtime_ns: int | None,
    ) -> None:
        """Owner (if ``uid`` is not None), then mode (chown clears set-id
        bits; ignored for a symlink), xattrs, mtime."""
        if uid is not None and gid is not None:
            self.chown(uid, gid)
        if mode is not None:
            self.chmod(mode)
        for name, value in xattrs.items():
            self.setxattr(name, value)
        if mtime_ns is not None:
            self.utime(mtime_ns)


class Beneath:
    """A root directory opened once; every operation resolves beneath it
    (see the module docstring). Paths are relative bytes (``b""`` or
    ``b"."`` is the root itself). Close it (or use it as a context
    manager). Operations raise UnsafePathError when a parent of the path
    is a symlink or not a directory, OSError otherwise."""

    def __init__(self, root: bytes | str | os.PathLike[str] | os.PathLike[bytes]) -> None:
        self.root = os.fsencode(root)
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Beneath:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- resolution --
    def open_dir(self, rel: bytes, create: bool = False, mode: int = 0o700) -> int:
        """An ``O_PATH`` descriptor of directory ``rel`` (the caller closes
        it). ``create``: missing directories on the way are made (``mode``,
        no other metadata). Raises UnsafePathError (a component is a
        symlink or not a directory), FileNotFoundError (missing, not
        ``create``)."""
        parts = split_rel(rel)
        if not parts:
            return os.dup(self.fd)
        if _openat2.available:
            try:
                return _openat2.open(self.fd, b"/".join(parts), _DIR_FLAGS)
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    _openat2.available = False
                elif e.errno == errno.ENOENT and create:
                    pass  # walk, making what is missing
                elif e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    raise self._refused(parts) from None
                else:
                    raise
        return self._walk(parts, create, mode)

    def _walk(self, parts: list[bytes], create: bool, mode: int) -> int:
        fd = os.dup(self.fd)
        try:
            for n, part in enumerate(parts):
                try:
                    nxt = open_subdir(fd, part, _DIR_FLAGS, create=create, mode=mode)
                except EntryNotADirectoryError as e:
                    raise self._unsafe(parts[: n + 1], e) from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _unsafe(self, parts: list[bytes], found: EntryNotADirectoryError) -> UnsafePathError:
        error = SymlinkOnTheWayError if found.is_symlink else UnsafePathError
        return error(
            f"refusing to write below {_show(b'/'.join(parts))} in "
            f"{os.fsdecode(self.root)}: it is {found.what}"
        )

    def _refused(self, parts: list[bytes]) -> UnsafePathError:
        """Name the first component that is a symlink or not a directory."""
        try:
            os.close(self._walk(parts, False, 0o700))
        except UnsafePathError as e:
            return e
        except OSError:
            pass
        return UnsafePathError(
            f"refusing to write below {_show(b'/'.join(parts))} in {os.fsdecode(self.root)}: "
            "a component changed into a symlink or a non-directory"
        )

    @contextlib.contextmanager
    def parent(self, rel: bytes, create: bool = False) -> Iterator[tuple[int, bytes]]:
        """``(dirfd, name)``: the parent directory of ``rel``, opened
        beneath the root (``create``: made where missing, mode 0700), and
        the last component. Raises UnsafePathError (also for the root
        itself, which has no name in a parent)."""
        parts = split_rel(rel)
        if not parts:
            raise UnsafePathError("the root itself has no parent to write in")
        fd = self.open_dir(b"/".join(parts[:-1]), create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    # -- queries --
    def lstat(self, rel: bytes) -> os.stat_result | None:
        """lstat of ``rel``; None when it is missing or a parent is missing
        or not a directory. Raises UnsafePathError when a parent is a symlink."""
        parts = split_rel(rel)
        if not parts:
            return os.fstat(self.fd)
        try:
            with self.parent(rel) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except SymlinkOnTheWayError:
            raise
        except UnsafePathError:
            return None

    def is_dir(self, rel: bytes) -> bool:
        """True if ``rel`` is a directory itself (not a symlink to one)."""
        try:
            st = self.lstat(rel)
        except UnsafePathError:
            return False
        return st is not None and stat.S_ISDIR(st.st_mode)

    # -- making and removing --
    def mkdir(self, rel: bytes, mode: int = 0o700, parents: bool = False) -> None:
        with self.parent(rel, parents) as (fd, name):
            os.mkdir(name, mode, dir_fd=fd)

    def create(self, rel: bytes, mode: int = 0o600, parents: bool = False) -> int:
        """A new regular file opened for writing (``O_EXCL``, not through a
        symlink); the caller closes it. Raises FileExistsError."""
        with self.parent(rel, parents) as (fd, name):
            return os.open(name, CREATE_FLAGS, mode, dir_fd=fd)

    def symlink(self, target: bytes, rel: bytes) -> None:
        with self.parent(rel) as (fd, name):
            os.symlink(target, name, dir_fd=fd)

    def mknod(self, rel: bytes, mode: int, device: int = 0) -> None:
        """A fifo, device node or socket node (``mode`` has the type bits)."""
        with self.parent(rel) as (fd, name):
            if stat.S_ISFIFO(mode):
                os.mkfifo(name, stat.S_IMODE(mode), dir_fd=fd)
            else:
                os.mknod(name, mode, device, dir_fd=fd)

    def link(self, existing: bytes, rel: bytes) -> None:
        """Hardlink ``existing`` (not followed) at ``rel``, both beneath."""
        with self.parent(existing) as (sfd, sname), self.parent(rel) as (dfd, dname):
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def rename(self, old: bytes, new: bytes) -> None:
        with self.parent(old) as (sfd, sname), self.parent(new) as (dfd, dname):
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def unlink(self, rel: bytes) -> None:
        """Remove a non-directory. Raises FileNotFoundError, IsADirectoryError."""
        with self.parent(rel) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def remove(self, rel: bytes, force: bool = False) -> bool:
        """Remove whatever is at ``rel``, a directory with everything below
        it (walked by descriptors: a symlink inside is removed, never
        followed). ``force``: directories this user may not change are
        made writable first (not root). Absent is fine; returns True if
        something was removed."""
        try:
            with self.parent(rel) as (fd, name):
                return _remove_at(fd, name, force)
        except (FileNotFoundError, NotADirectoryError):
            return False

    # -- metadata --
    @contextlib.contextmanager
    def node(self, rel: bytes, kind: int | None = None) -> Iterator[NodeRef]:
        """Pin ``rel`` for metadata changes (see :class:`NodeRef`).
        ``kind``: the ``S_IFMT`` bits the node must have (a node swapped
        since it was made is refused). Raises UnsafePathError, OSError."""
        parts = split_rel(rel)
        if not parts:
            yield NodeRef(proc_path(self.fd), True, os.fstat(self.fd))
            return
        with self.parent(rel) as (dfd, name):
            fd = os.open(name, _NODE_FLAGS, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                if kind is not None and stat.S_IFMT(st.st_mode) != kind:
                    raise UnsafePathError(
                        f"refusing to change {_show(rel)} in {os.fsdecode(self.root)}: "
                        "it was replaced while snapws wrote it"
                    )
                if stat.S_ISLNK(st.st_mode):
                    yield NodeRef(proc_path(dfd, name), False, st)
                else:
                    yield NodeRef(proc_path(fd), True, st)
            finally:
                os.close(fd)

    def set_meta(
        self,
        rel: bytes,
        uid: int | None,
        gid: int | None,
        mode: int | None,
        xattrs: Mapping[str, bytes],
        mtime_ns: int | None,
        kind: int | None = None,
    ) -> None:
        """:meth:`NodeRef.set_meta` on ``rel`` itself."""
        with self.node(rel, kind) as ref:
            ref.set_meta(uid, gid, mode, xattrs, mtime_ns)


def set_meta_fd(
    fd: int,
    uid: int | None,
    gid: int | None,
    mode: int | None,
    xattrs: Mapping[str, bytes],
    mtime_ns: int | None,
) -> None:
    """:meth:`NodeRef.set_meta` on an open regular file (as created by
    :meth:`Beneath.create`)."""
    NodeRef(proc_path(fd), True, os.fstat(fd)).set_meta(uid, gid, mode, xattrs, mtime_ns)


def _remove_at(dirfd: int, name: bytes, force: bool) -> bool:
    """Remove ``name`` in ``dirfd`` (a tree for a directory) by descriptors."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(name, dir_fd=dirfd)
        except FileNotFoundError:
            return False
        except PermissionError:
            if not force:
                raise
            _make_writable(dirfd)
            os.unlink(name, dir_fd=dirfd)
        return True
    try:
        try:
            fd = open_subdir(dirfd, name, os.O_RDONLY)
        except PermissionError:
            if not force:
                raise
            pin = open_subdir(dirfd, name)
            try:
                os.chmod(proc_path(pin), 0o700)
            finally:
                os.close(pin)
            fd = open_subdir(dirfd, name, os.O_RDONLY)
    except EntryNotADirectoryError:
        return _remove_at(dirfd, name, force)  # swapped for a non-directory
    try:
        names = [de.name for de in os.scandir(fd)]
        for child in names:
            _remove_at(fd, os.fsencode(child), force)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dirfd)
    except PermissionError:
        if not force:
            raise
        _make_writable(dirfd)
        os.rmdir(name, dir_fd=dirfd)
    return True


def _make_writable(dirfd: int) -> None:
    st = os.fstat(dirfd)
    os.chmod(proc_path(dirfd), stat.S_IMODE(st.st_mode) | 0o700)
