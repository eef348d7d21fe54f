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

A path longer than PATH_MAX (a tree 10,000 levels deep) is resolved in
steps of about :data:`snapws.deeppath.STEP` bytes from *anchors*:
descriptors of the directories where a step ends, each opened beneath the
one before (with the same checks) and kept while the :class:`Beneath` is
open (a removed one is opened again; :meth:`Beneath.remove` and
:meth:`Beneath.rename` forget those below the path they change). So an
operation on a deep path costs one resolution of at most one step, not one
of every level.

This module imports nothing from the package but :mod:`snapws.errors` and
:mod:`snapws.deeppath` (which imports nothing).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from snapws.deeppath import LIMIT, STEP, open_fd
from snapws.errors import UnsafePathError

#: openat2(2): syscall number on x86_64 and aarch64 (and every other arch
#: since 5.6, which share the generic table for new syscalls).
SYS_OPENAT2 = 437
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NODE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_ANCHORS = 320  # anchors a Beneath keeps open at most (64 KiB paths need 256)
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


def _joined(rel: bytes) -> bytes:
    """``b"/".join(split_rel(rel))`` (``b""`` for the root), at the cost of
    a few searches when ``rel`` is in that form already (a deep path has
    10,000 components). Raises UnsafePathError as :func:`split_rel`."""
    if (
        rel
        and not rel.startswith(b"/")
        and not rel.endswith(b"/")
        and b"//" not in rel
        and b"\0" not in rel
        and (b"." not in rel or not _DOT_PART.search(rel))
    ):
        return rel
    return b"/".join(split_rel(rel))


_DOT_PART = re.compile(rb"(?:^|/)\.\.?(?:/|$)")


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
        self.fd = open_fd(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._anchors: dict[bytes, int] = {}  # deep directories, see the module docstring

    def close(self) -> None:
        self._forget(b"")
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
        path = _joined(rel)
        if not path:
            return os.dup(self.fd)
        if len(path) > LIMIT:
            return self._open_deep(path, create, mode)
        return self._open_from(self.fd, path, path, create, mode)

    def _open_from(self, base: int, sub: bytes, whole: bytes, create: bool, mode: int) -> int:
        """Directory ``sub`` beneath descriptor ``base`` (which is ``whole``
        less ``sub``, for error messages)."""
        if _openat2.available:
            try:
                return _openat2.open(base, sub, _DIR_FLAGS)
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    _openat2.available = False
                elif e.errno == errno.ENOENT and create:
                    pass  # walk, making what is missing
                elif e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    raise self._refused(whole.split(b"/")) from None
                else:
                    raise
        if base == self.fd:
            return self._walk(sub.split(b"/"), create, mode)
        try:
            return self._walk(sub.split(b"/"), create, mode, base)
        except UnsafePathError:  # (named from the anchor: name it from the root)
            raise self._refused(whole.split(b"/")) from None

    def _open_deep(self, path: bytes, create: bool, mode: int) -> int:
        """:meth:`open_dir` of a path longer than PATH_MAX: from the
        deepest anchor on its way, opening (and keeping) the anchors
        missing before it. An anchor ends at the last ``/`` before each
        multiple of STEP bytes, so paths that share a directory share them."""
        cuts: list[int] = []  # where anchors end: path[:cut]
        for m in range(STEP, len(path), STEP):
            cut = path.rfind(b"/", 0, m + 1)
            if cut > (cuts[-1] if cuts else 0):
                cuts.append(cut)
        k = len(cuts)  # find the deepest anchor open (and not removed since)
        base, at = self.fd, -1
        while k:
            key = path[: cuts[k - 1]]
            fd = self._anchors.get(key)
            if fd is not None and os.fstat(fd).st_nlink == 0:
                self._forget(key)
                fd = None
            if fd is not None:
                base, at = fd, cuts[k - 1]
                break
            k -= 1
        for cut in cuts[k:]:
            fd = self._open_from(base, path[at + 1 : cut], path, create, mode)
            if len(self._anchors) >= _MAX_ANCHORS:
                self._forget(b"")
            self._anchors[path[:cut]] = fd
            base, at = fd, cut
        return self._open_from(base, path[at + 1 :], path, create, mode)

    def _forget(self, rel: bytes) -> None:
        """Close the anchors at or below ``rel`` (``b""``: all)."""
        prefix = rel + b"/"
        for key in [k for k in self._anchors if not rel or k == rel or k.startswith(prefix)]:
            os.close(self._anchors.pop(key))

    def _walk(self, parts: list[bytes], create: bool, mode: int, base: int | None = None) -> int:
        fd = os.dup(self.fd if base is None else base)
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
        path = _joined(rel)
        if not path:
            raise UnsafePathError("the root itself has no parent to write in")
        i = path.rfind(b"/")
        fd = self.open_dir(path[:i] if i >= 0 else b"", create)
        try:
            yield fd, path[i + 1 :]
        except OSError as e:  # named by the path, not by its last component
            self._name_error(e, path[i + 1 :], path)
            raise
        finally:
            os.close(fd)

    def _name_error(self, e: OSError, short: bytes, path: bytes) -> None:
        """Replace ``short`` (a name relative to a descriptor, or a
        ``/proc/self/fd`` name) as ``e``'s filename (or filename2) by the
        full path of ``path`` beneath the root, for messages."""
        full = os.fsdecode(os.path.join(self.root, path) if path else self.root)
        for attr in ("filename", "filename2"):
            value = getattr(e, attr)
            if isinstance(value, bytes | str) and os.fsencode(value) == short:
                setattr(e, attr, full)

    # -- queries --
    def lstat(self, rel: bytes) -> os.stat_result | None:
        """lstat of ``rel``; None when it is missing or a parent is missing
        or not a directory. Raises UnsafePathError when a parent is a symlink."""
        if not _joined(rel):
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
        if self._anchors:
            self._forget(_joined(old))
            self._forget(_joined(new))

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
        if self._anchors:
            self._forget(_joined(rel))
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
        since it was made is refused). Raises UnsafePathError, OSError (its
        filename the node's path, not its ``/proc`` name)."""
        try:
            with self._pinned(rel, kind) as ref:
                yield ref
        except OSError as e:
            if isinstance(e.filename, bytes | str) and os.fsencode(e.filename).startswith(
                b"/proc/self/fd/"
            ):
                self._name_error(e, os.fsencode(e.filename), _joined(rel))
            raise

    @contextlib.contextmanager
    def _pinned(self, rel: bytes, kind: int | None) -> Iterator[NodeRef]:
        if not _joined(rel):
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


#: A removal keeps the descriptors of the last KEEP_LEVELS directories it
#: is in, and of every KEEP_LEVELS-th above them; the others are opened again
#: (from the nearest one kept) when the walk comes back up. So a tree 10,000
#: levels deep is removed with a few hundred descriptors, far below
#: RLIMIT_NOFILE, at O(entries) syscalls.
KEEP_LEVELS = 64


def remove_tree(dirfd: int, name: bytes, force: bool = False) -> bool:
    """Remove ``name`` in directory ``dirfd``, a directory with everything
    below it, by descriptors (a symlink inside is removed, never followed),
    at any depth with a bounded number of descriptors (:data:`KEEP_LEVELS`).
    ``force``: directories this user may not change are made writable
    first. Absent is fine; returns True if something was removed. Raises
    OSError."""
    return _remove_at(dirfd, name, force)


def _remove_at(dirfd: int, name: bytes, force: bool) -> bool:
    """Remove ``name`` in ``dirfd`` (a tree for a directory) by descriptors,
    iteratively: neither Python's recursion limit nor PATH_MAX nor
    RLIMIT_NOFILE bounds the depth (see :data:`KEEP_LEVELS`)."""
    top = _open_for_removal(dirfd, name, force)
    if top is None:
        return _unlink_at(dirfd, name, force)
    if top < 0:
        return False
    # per directory entered: [its descriptor or -1 (closed), its name, the
    # subdirectories still to remove (its other entries are gone)]
    stack: list[list[Any]] = [[top, name, _clear_files_at(top, force)]]
    try:
        while stack:
            level = stack[-1]
            if level[2]:
                sub = level[2].pop()
                fd = _reopen(stack, len(stack) - 1, force)
                child = _open_for_removal(fd, sub, force)
                if child is None:
                    _unlink_at(fd, sub, force)  # swapped for a non-directory
                elif child >= 0:
                    stack.append([child, sub, _clear_files_at(child, force)])
                    far = len(stack) - 1 - KEEP_LEVELS
                    if far > 0 and far % KEEP_LEVELS and stack[far][0] >= 0:
                        os.close(stack[far][0])
                        stack[far][0] = -1
                continue
            stack.pop()
            if level[0] >= 0:
                os.close(level[0])
            parent = _reopen(stack, len(stack) - 1, force) if stack else dirfd
            _rmdir_at(parent, level[1], force)
    finally:
        for level in stack:
            if level[0] >= 0:
                os.close(level[0])
    return True


def _reopen(stack: list[list[Any]], at: int, force: bool) -> int:
    """The descriptor of ``stack[at]``'s directory, opened again (with the
    closed ones between) from the nearest one still open."""
    if stack[at][0] >= 0:
        return int(stack[at][0])
    k = at
    while stack[k][0] < 0:
        k -= 1
    for n in range(k + 1, at + 1):
        fd = _open_for_removal(stack[n - 1][0], stack[n][1], force)
        if fd is None or fd < 0:
            raise FileNotFoundError(errno.ENOENT, "a directory being removed went away")
        stack[n][0] = fd
    return int(stack[at][0])


def _open_for_removal(dirfd: int, name: bytes, force: bool) -> int | None:
    """Directory ``name`` in ``dirfd`` opened for listing (``force``: made
    searchable first if it is not); None if it is not a directory, -1 if it
    is gone."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return -1
    if not stat.S_ISDIR(st.st_mode):
        return None
    try:
        try:
            return open_subdir(dirfd, name, os.O_RDONLY)
        except PermissionError:
            if not force:
                raise
            pin = open_subdir(dirfd, name)
            try:
                os.chmod(proc_path(pin), 0o700)
            finally:
                os.close(pin)
            return open_subdir(dirfd, name, os.O_RDONLY)
    except EntryNotADirectoryError:
        return None  # swapped for a non-directory
    except FileNotFoundError:
        return -1


def _clear_files_at(fd: int, force: bool) -> list[bytes]:
    """Unlink every non-directory in directory ``fd``; its subdirectories."""
    subdirs = []
    with os.scandir(fd) as it:
        entries = [(os.fsencode(de.name), de.is_dir(follow_symlinks=False)) for de in it]
    for name, is_dir in entries:
        if is_dir:
            subdirs.append(name)
        else:
            _unlink_at(fd, name, force)
    return subdirs


def _unlink_at(dirfd: int, name: bytes, force: bool) -> bool:
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


def _rmdir_at(dirfd: int, name: bytes, force: bool) -> None:
    try:
        os.rmdir(name, dir_fd=dirfd)
    except FileNotFoundError:
        pass
    except PermissionError:
        if not force:
            raise
        _make_writable(dirfd)
        os.rmdir(name, dir_fd=dirfd)


def _make_writable(dirfd: int) -> None:
    st = os.fstat(dirfd)
    os.chmod(proc_path(dirfd), stat.S_IMODE(st.st_mode) | 0o700)
