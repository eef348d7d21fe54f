"""Which processes use files under a directory: a read-only scan of /proc.

Used to explain an EBUSY from :func:`snapws.mounts.mounter.remount_readonly`
or :func:`~snapws.mounts.mounter.unmount`. Nothing here mounts anything.

Paths are compared as the kernel prints them in /proc (as seen from the
caller's root): a file opened through another mount of the same overlay (a
bind mount elsewhere) is not found under ``root``. Processes that vanish
during the scan, or whose /proc entries cannot be read (EACCES), are skipped
silently; the calling process is included like any other. Only
``/proc/PID/fd`` is read, not the descriptor tables of threads created
without CLONE_FILES (rare).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from snapws.errors import WorkspaceBusyError

__all__ = ["Holder", "busy_error", "find_cwd_users", "find_users", "find_writers"]

_DELETED = " (deleted)"


@dataclass(frozen=True, slots=True)
class Holder:
    """A process that uses ``path``.

    ``how`` is ``"write"`` (a descriptor open O_WRONLY or O_RDWR),
    ``"mmap-write"`` (a shared writable mapping), ``"deleted-open"`` (a
    descriptor on a deleted file, any access mode, even O_PATH: it too makes a
    read-only remount fail with EBUSY), ``"cwd"`` (its working directory) or ``"root"``
    (its root directory, chroot); of :func:`find_users` also ``"open"`` (a
    descriptor of any mode) and ``"mmap"`` (a mapping).
    """

    pid: int
    command: str
    path: Path
    how: str


def _pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as fh:
            return os.fsdecode(fh.read().rstrip(b"\n"))
    except OSError:
        return "?"


def _under(path: str, root: str) -> bool:
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def _real_root(root: Path) -> str:
    return os.path.realpath(root)


def _strip_deleted(target: str) -> tuple[str, bool]:
    if target.endswith(_DELETED):
        return target[: -len(_DELETED)], True
    return target, False


def _fd_flags(pid: int, fd: str) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as fh:
            for line in fh:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _dirs_of(pid: int) -> Iterator[tuple[str, str]]:
    """(how, path) of ``pid``'s current directory and root."""
    for how in ("cwd", "root"):
        try:
            target = os.readlink(f"/proc/{pid}/{how}")
        except OSError:
            continue
        yield how, _strip_deleted(target)[0]


def _open_files_of(pid: int) -> Iterator[tuple[str, str, bool]]:
    """(fd, path, deleted) of each descriptor ``pid`` holds."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        path, deleted = _strip_deleted(target)
        yield fd, path, deleted


def _mappings_of(pid: int, needle: bytes = b"") -> Iterator[tuple[bytes, str]]:
    """(permissions, path) of each file ``pid`` has mapped; none if the
    table does not contain ``needle`` (a cheap test before parsing it)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as fh:
            data = fh.read()
    except OSError:
        return
    if needle not in data:
        return
    for raw in data.splitlines():
        fields = raw.split(maxsplit=5)
        if len(fields) == 6:
            # /proc/PID/maps escapes only the newline, as \012
            yield fields[1], _strip_deleted(os.fsdecode(fields[5].replace(b"\\012", b"\n")))[0]


def _scan_fds(pid: int, root: str, found: set[tuple[int, str, str]]) -> None:
    for fd, path, deleted in _open_files_of(pid):
        if not _under(path, root):
            continue
        flags = _fd_flags(pid, fd)
        if flags is None:
            continue
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            found.add((pid, path, "write"))
        if deleted:
            found.add((pid, path, "deleted-open"))


def _scan_maps(pid: int, root: str, found: set[tuple[int, str, str]]) -> None:
    for perms, path in _mappings_of(pid):
        if len(perms) >= 4 and perms[1:2] == b"w" and perms[3:4] == b"s" and _under(path, root):
            found.add((pid, path, "mmap-write"))


def _holders(found: set[tuple[int, str, str]]) -> list[Holder]:
    commands: dict[int, str] = {}
    result = []
    for pid, path, how in sorted(found):
        if pid not in commands:
            commands[pid] = _command(pid)
        result.append(Holder(pid=pid, command=commands[pid], path=Path(path), how=how))
    return result


def find_writers(root: Path) -> list[Holder]:
    """Processes that keep ``root`` (or anything below it) from becoming read-only.

    Reports descriptors open for writing (``write``), shared writable mappings
    (``mmap-write``) and descriptors on deleted files (``deleted-open``).
    One entry per (pid, path, how), sorted by pid, then path. Never raises for
    vanished or unreadable processes.
    """
    real = _real_root(root)
    found: set[tuple[int, str, str]] = set()
    for pid in _pids():
        _scan_fds(pid, real, found)
        _scan_maps(pid, real, found)
    return _holders(found)


def find_cwd_users(root: Path) -> list[Holder]:
    """Processes whose working directory (``cwd``) or root (``root``) is ``root`` or below.

    Sorted by pid. Never raises for vanished or unreadable processes.
    """
    real = _real_root(root)
    found: set[tuple[int, str, str]] = set()
    for pid in _pids():
        for how, path in _dirs_of(pid):
            if _under(path, real):
                found.add((pid, path, how))
    return _holders(found)


def _use_of(pid: int, real: str) -> tuple[str, str] | None:
    """How ``pid`` uses ``real`` or anything below it, the first found:
    ``cwd``, ``root``, ``open`` (a descriptor of any mode) or ``mmap`` (a
    mapping), with the path; None if it does not."""
    uses = itertools.chain(
        _dirs_of(pid),
        (("open", p) for _fd, p, _deleted in _open_files_of(pid)),
        (("mmap", p) for _perms, p in _mappings_of(pid, os.fsencode(real))),
    )
    return next(((how, p) for how, p in uses if _under(p, real)), None)


#: Processes that are this command besides this one: the ``snapws`` client
#: whose request a command server's worker runs (:mod:`snapws.cli.server`).
#: It waits for the command, as this process does, so it holds nothing back.
_SAME_COMMAND: set[int] = set()


def count_as_this_command(pid: int) -> None:
    """Leave ``pid`` out of :func:`is_held` and :func:`find_users`, as this
    process is: it is part of the command that runs here."""
    _SAME_COMMAND.add(pid)


def _this_command() -> set[int]:
    return {os.getpid(), *_SAME_COMMAND}


def used_by_me(root: Path) -> bool:
    """Whether this process uses ``root`` (or anything below it): its
    current directory or root, a descriptor or a mapping there (a library
    caller, or a test standing in for a shell). The kernel's count of a
    mount's users (:func:`snapws.mounts.mounter.in_use`) includes it, so such
    a caller asks :func:`is_held`, which leaves it out."""
    return _use_of(os.getpid(), _real_root(root)) is not None


def is_held(root: Path) -> bool:
    """Whether a process other than this one uses ``root`` (or anything below
    it): its current directory or root is there, or it holds a descriptor
    (any mode) or a mapping of a file there. Such a process would be left on
    the old mount by a remount. Never raises for vanished or unreadable
    processes."""
    real = _real_root(root)
    me = _this_command()
    return any(_use_of(pid, real) is not None for pid in _pids() if pid not in me)


def find_users(root: Path) -> list[Holder]:
    """Processes other than this one that use ``root`` (or anything below
    it), as :func:`is_held` counts them, one entry per process: how it
    does (``cwd``, ``root``, ``open``: a descriptor of any mode, ``mmap``:
    a mapping) and where, the first found in that order. Sorted by pid.
    Never raises for vanished or unreadable processes."""
    real = _real_root(root)
    me = _this_command()
    found: set[tuple[int, str, str]] = set()
    for pid in _pids():
        use = _use_of(pid, real) if pid not in me else None
        if use is not None:
            found.add((pid, use[1], use[0]))
    return _holders(found)


def inode_open_for_writing(dev: int, ino: int) -> bool:
    """True when some process (that this one can inspect) holds the file
    with device ``dev`` and inode ``ino`` open for writing. Identifies the
    file by inode, not by path: what is under a mount has the same path as
    what the mount shows."""
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != (dev, ino):
                continue
            flags = _fd_flags(pid, fd)
            if flags is not None and flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


def busy_error(root: Path, doing: str) -> WorkspaceBusyError:
    """A :class:`WorkspaceBusyError` for ``doing`` (e.g. "commit") naming the writers.

    ``holders`` are ``(pid, command, path)`` triples from :func:`find_writers`.
    """
    holders = find_writers(root)
    lines = [f"  pid {h.pid} ({h.command}): {h.how} {h.path}" for h in holders]
    message = f"cannot {doing}: files under {os.fspath(root)!r} are in use"
    if lines:
        message += "\n" + "\n".join(lines)
    return WorkspaceBusyError(message, [(h.pid, h.command, os.fspath(h.path)) for h in holders])
