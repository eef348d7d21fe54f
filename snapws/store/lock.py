"""The store lock: flock(2) on ``<store>/lock``, shared for readers,
exclusive for writers, with a timeout. Released by the kernel if the process
dies, so a crash never leaves a stale lock.

A reader needs no write access: on a read-only store (a read-only bind
mount, a store the user cannot write) the shared lock is taken on a
read-only descriptor, and flock(2) works on it. It still excludes writers
working through another, writable path to the same store (one inode).

Only the store's owner may take the lock exclusively (change the store),
except in a store of root's form ("trusted" xattrs): files another user
(root too) wrote there would be theirs, and the owner could not remove them
later (:func:`check_store_owner`).

The exclusive holder writes who it is into the lock file (:class:`Holder`:
its pid, the start time of that process and its command line; one write of
a fixed-size record at offset 0, cleared before the lock is let go), so
that a command waiting for the lock can say what it waits for. A record
left by a process that died (no clearing), or one read half-written, is
ignored: the waiter then only says that another snapws command holds it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from snapws.errors import ForeignStoreError, StoreLockedError, permission_denied, user_name

#: Size of the holder record written at the start of the lock file.
HOLDER_SIZE = 512
#: After this many seconds of waiting, the waiter is told (:func:`set_wait_notice`).
NOTICE_AFTER = 1.0

_wait_notice: Callable[[str], None] | None = None


def set_wait_notice(notice: Callable[[str], None] | None) -> None:
    """Have ``notice(text)`` called once when a lock was waited for
    :data:`NOTICE_AFTER` seconds (the CLI prints it on stderr); None: no
    notice."""
    global _wait_notice
    _wait_notice = notice


@dataclass(frozen=True, slots=True)
class Holder:
    """The process holding the lock exclusively, as its record says."""

    pid: int
    start: str  # field 22 of /proc/PID/stat: tells a reused pid apart
    command: str

    def describe(self) -> str:
        return f"pid {self.pid}: {self.command}" if self.command else f"pid {self.pid}"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None
    when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) "
    return fields[19].decode() if len(fields) > 19 else None


def _this_command() -> str:
    import shlex  # (here: only a writer's lock needs it, not every command's start-up)

    words = ["snapws", *sys.argv[1:]]
    text = " ".join(shlex.quote(w) for w in words)
    return text if len(text) <= 200 else text[:197] + "..."


def _holder_record() -> bytes:
    pid = os.getpid()
    command = _this_command()
    while True:
        data = json.dumps({"pid": pid, "start": _start_time(pid) or "", "command": command})
        raw = data.encode() + b"\n"
        if len(raw) <= HOLDER_SIZE:
            return raw.ljust(HOLDER_SIZE, b" ")
        command = command[: len(command) // 2] + "..."


def read_holder(path: Path) -> Holder | None:
    """The live exclusive holder the lock file ``path`` names, or None (no
    record, a cleared or damaged one, or its process is gone)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HOLDER_SIZE)
        rec = json.loads(raw.strip() or b"null")
        holder = Holder(int(rec["pid"]), str(rec["start"]), str(rec["command"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if holder.pid == os.getpid() or _start_time(holder.pid) != holder.start:
        return None  # a stale record: that process is gone (or the pid is reused)
    return holder


def check_store_owner(root: Path, xattr_form: str) -> None:
    """Raise :class:`ForeignStoreError` when this user does not own the
    store ``root`` and it is not of root's form ("trusted"): files written
    there would belong to this user, not to the owner, who could not remove
    them later. A store this process cannot stat passes (the OS refuses
    then, named by :func:`permission_denied`)."""
    if xattr_form == "trusted":
        return
    try:
        owner = os.stat(root).st_uid
    except OSError:
        return
    me = os.geteuid()
    if owner == me:
        return
    try:
        import pwd

        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = f"#{owner}"
    raise ForeignStoreError(
        f"the store {root} belongs to {user_name(owner)}, and this command would change "
        f"it as {user_name(me)}: files made there would not be its owner's, who could then "
        "not remove them (nothing was changed)",
        hint=f"run the command as the store's owner: `runuser -u {name} -- snapws ...` "
        f"(or `sudo -u {name} snapws ...`); commands that only read (status, log, diff, "
        "show, verify, du) work as any user who may read the store",
    )


#: The most entries :func:`foreign_entry` looks at (it runs after a
#: permission error only; layer trees are not entered).
FOREIGN_SCAN_LIMIT = 100_000


def foreign_entry(root: Path, named: str | None = None) -> tuple[Path, int] | None:
    """The first path in the store ``root`` (which this user owns) that
    another user owns, and that user's id; None if none is found (or this
    user does not own ``root``). ``named`` (the path an OS error named, if
    any) is looked at first: its highest ancestor below ``root`` of another
    user. Else the store's directories and their entries (each layer's
    directory, not its tree), and everything in ``staging``, ``trash`` and
    ``workspaces``, at most :data:`FOREIGN_SCAN_LIMIT` entries."""
    me = os.geteuid()
    try:
        if os.stat(root).st_uid != me:
            return None
    except OSError:
        return None
    if named:
        path = Path(os.path.abspath(named))
        if root in path.parents:
            chain = [p for p in reversed(path.parents) if root in p.parents] + [path]
            for p in chain:
                try:
                    uid = os.lstat(p).st_uid
                except OSError:
                    break
                if uid != me:
                    return p, uid
    seen = 0
    deep = ("staging", "trash", "workspaces", "refs", "logs")
    stack = [root]
    while stack and seen < FOREIGN_SCAN_LIMIT:
        top = stack.pop()
        try:
            entries = sorted(os.scandir(top), key=lambda d: d.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            path = Path(entry.path)
            if st.st_uid != me:
                return path, st.st_uid
            below_root = path.parent == root
            if entry.is_dir(follow_symlinks=False) and (
                below_root or path.relative_to(root).parts[0] in deep
            ):
                stack.append(path)
    return None


class StoreLock:
    """Context manager: ``with StoreLock(path, exclusive=True, timeout=60):``.
    ``xattr_form`` is the store's (:func:`check_store_owner`)."""

    def __init__(
        self, path: Path, exclusive: bool, timeout: float, xattr_form: str = "trusted"
    ) -> None:
        self.path = path
        self.exclusive = exclusive
        self.timeout = timeout
        self.xattr_form = xattr_form
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds (after
        :data:`NOTICE_AFTER` s, the wait notice is given once, naming the
        holder if known). Raises ForeignStoreError for an exclusive lock on
        a store of another user's (:func:`check_store_owner`), before
        anything is written; StoreLockedError on timeout, naming the holder
        if known; StorePermissionError when this user may not open the lock
        file; OSError when it cannot be opened otherwise (a writer on a
        read-only store). A reader on a read-only store whose lock file was
        never made (no snapws command ever wrote it) proceeds without a
        lock: nothing writes that store."""
        if self.exclusive:
            check_store_owner(self.path.parent, self.xattr_form)
        fd = self._open()
        if fd is None:
            return
        op = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        start = time.monotonic()
        deadline = start + self.timeout
        delay = 0.01
        told = False
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    os.close(fd)
                    raise StoreLockedError(
                        f"the store is locked by {self._holder_text()} ({self.path}); "
                        f"gave up after {self.timeout:g} s"
                    ) from None
                if not told and now - start >= NOTICE_AFTER and _wait_notice is not None:
                    told = True
                    _wait_notice(f"waiting for the store lock (held by {self._holder_text()})")
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        self._fd = fd
        if self.exclusive:
            self._write_holder(_holder_record())

    def _holder_text(self) -> str:
        holder = read_holder(self.path)
        return holder.describe() if holder is not None else "another snapws command"

    def _write_holder(self, record: bytes) -> None:
        """Write ``record`` at the start of the lock file (best effort: a
        waiter without it only says less)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, record, 0)

    def _open(self) -> int | None:
        """The lock file's descriptor. Raises StorePermissionError when this
        user may not open it (another user's store)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        if not self.exclusive and not owned_here(self.path.parent):
            flags = os.O_RDONLY | os.O_CLOEXEC  # never make a file in another's store
        try:
            return os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            if self.exclusive or flags & os.O_CREAT:
                raise
            return None
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) and self.exclusive:
                raise permission_denied(e, self.path.parent) from e
            if self.exclusive or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise permission_denied(e, self.path.parent) from e

    def release(self) -> None:
        if self._fd is not None:
            if self.exclusive:  # while it is still held: the next holder's is not touched
                self._write_holder(b" " * HOLDER_SIZE)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def owned_here(root: Path) -> bool:
    """Whether this user owns ``root`` (True if it cannot be stat'ed): where
    it does not (another user's store, read by root), nothing is written,
    caches neither."""
    try:
        return os.stat(root).st_uid == os.geteuid()
    except OSError:
        return True
