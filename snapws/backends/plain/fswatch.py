"""A file-system watcher for a plain workspace (opt-in: ``plain_watch =
true``), so that status costs what changed, as git's fsmonitor daemon makes
``git status`` cost.

``python -m snapws.backends.plain.fswatch ROOT WSDIR FD`` watches every
directory of the working tree ROOT with inotify and serves, on the socket
``WSDIR/watch.sock``, which directories saw an event since a *token* an
earlier answer gave. A token is (generation, sequence number): the
generation is random per daemon, the sequence number counts the events it
read. The answer is either the directories whose children (or themselves)
changed since the token, or *full*: the token is of another daemon, or
events may have been lost since (``IN_Q_OVERFLOW``; a directory moved, whose
watches then name stale paths; an ignore file changed, which changes what
other directories hold; a watch that could not be added): the caller then
scans everything, as without a watcher. Before answering, the daemon reads
every event queued: inotify queues an event before the system call that
caused it returns, so whatever changed before the question is in the answer.

What inotify does not see, status cannot learn from it: writes through a
shared memory mapping, and files changed through a hard link from outside
the working tree (or changed on another machine, for a network filesystem).
That is why the watcher is opt-in. Directories that hold a file with
several links are scanned every time (see :mod:`.scan`).

The daemon exits after :data:`IDLE_SECONDS` without a question
(``$SNAPWS_PLAIN_WATCH_IDLE``), when the working tree's root is deleted or
moved, when WSDIR is gone, or when asked to (:func:`stop_watcher`). One
daemon per workspace: it holds ``WSDIR/watch.lock`` (open as FD), which
the status that starts it takes first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

from snapws.layers.ignore import IGNORE_FILE
from snapws.model import ROOT

SOCKET_NAME = "watch.sock"
LOCK_NAME = "watch.lock"
#: A daemon without a question for this long exits.
IDLE_SECONDS = 3600.0
IDLE_ENV = "SNAPWS_PLAIN_WATCH_IDLE"

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then the name)

#: A token: (generation, sequence number).
Token = tuple[str, int]


@dataclass(frozen=True, slots=True)
class WatchAnswer:
    """What changed since a token: ``dirs`` (directory paths, ``b"."`` the
    root), or None for everything; ``token`` is the one to ask with next."""

    token: Token
    dirs: frozenset[bytes] | None


class WatchState:
    """The daemon's bookkeeping, without inotify (testable alone): the
    directories each watch descriptor stands for, and the sequence number
    at which each directory last saw an event."""

    def __init__(self, generation: str) -> None:
        self.generation = generation
        self.seq = 0
        self.full_seq = 0  # a token older than this gets "full"
        self.dirty: dict[bytes, int] = {}
        self.paths: dict[int, bytes] = {}  # watch descriptor -> directory

    def lost(self) -> None:
        """Events may have been lost: every older token gets "full"."""
        self.seq += 1
        self.full_seq = self.seq
        self.dirty.clear()

    def touched(self, d: bytes) -> None:
        self.seq += 1
        self.dirty[d] = self.seq

    def event(self, wd: int, mask: int, name: bytes) -> tuple[str, bytes] | None:
        """Take one event. Returns what the daemon must do besides:
        ("rewatch", b"") (watches are stale: add them all again), ("add",
        dir) (a new directory: watch its subtree), ("exit", b"") (the root
        is gone), or None."""
        if mask & IN_Q_OVERFLOW:
            self.lost()
            return ("rewatch", b"")
        d = self.paths.get(wd)
        if d is None:
            return None  # a watch already removed
        if mask & IN_IGNORED:
            del self.paths[wd]
            return ("exit", b"") if d == ROOT else None
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            if d == ROOT:
                self.lost()
                return ("exit", b"")
            self.touched(d)
            return None
        path = d if not name else (name if d == ROOT else d + b"/" + name)
        if name == IGNORE_FILE:
            self.lost()  # the rules of the whole subtree may have changed
            return None
        self.touched(d)
        if mask & IN_ISDIR and mask & (IN_MOVED_FROM | IN_MOVED_TO):
            self.lost()  # watches below it name stale paths
            return ("rewatch", b"")
        if mask & IN_ISDIR and mask & IN_CREATE:
            return ("add", path)
        return None

    def answer(self, since: Token | None) -> WatchAnswer:
        """The directories that saw an event after ``since`` (None: full)."""
        token = (self.generation, self.seq)
        if since is None or since[0] != self.generation or since[1] < self.full_seq:
            return WatchAnswer(token, None)
        n = since[1]
        return WatchAnswer(token, frozenset(d for d, s in self.dirty.items() if s > n))


# ---- the daemon -------------------------------------------------------------------


class _Inotify:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        self.fd = fd

    def add(self, path: bytes) -> int:
        wd = int(self._add(self.fd, path, WATCH_MASK))
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), os.fsdecode(path))
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)

    def read(self) -> list[tuple[int, int, bytes]]:
        """The events queued now (none if there are none)."""
        out: list[tuple[int, int, bytes]] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            i = 0
            while i + _EVENT.size <= len(data):
                wd, mask, _, n = _EVENT.unpack_from(data, i)
                name = data[i + _EVENT.size : i + _EVENT.size + n].rstrip(b"\0")
                out.append((wd, mask, name))
                i += _EVENT.size + n


class Daemon:
    """The watcher of one working tree (see the module docstring)."""

    def __init__(self, root: bytes, wsdir: bytes) -> None:
        self.root = root
        self.wsdir = wsdir
        self.state = WatchState(os.urandom(8).hex())
        self.ino = _Inotify()
        self.running = True

    def abspath(self, d: bytes) -> bytes:
        return self.root if d == ROOT else self.root + b"/" + d

    def watch_tree(self, top: bytes, new: bool = False) -> None:
        """Watch ``top`` and every directory below it (each watched before
        it is listed, so a directory made meanwhile is seen one way or the
        other); a watch that cannot be added makes every answer full.
        ``new``: the subtree was just made, so what was made in it before
        its watches were added is unseen: each of its directories counts
        as changed."""
        todo = [top]
        while todo:
            d = todo.pop()
            if new:
                self.state.touched(d)
            try:
                wd = self.ino.add(self.abspath(d))
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR) and d != ROOT:
                    continue  # gone meanwhile (its parent saw it go)
                self.state.lost()
                self.state.full_seq = 1 << 62  # (no token is ever good again)
                continue
            self.state.paths[wd] = d
            try:
                with os.scandir(self.abspath(d)) as it:
                    for de in it:
                        if de.is_dir(follow_symlinks=False):
                            todo.append(de.name if d == ROOT else d + b"/" + de.name)
            except OSError:
                continue

    def rewatch(self) -> None:
        for wd in list(self.state.paths):
            self.ino.remove(wd)
        self.ino.read()  # (the IN_IGNORED of the removed watches)
        self.state.paths.clear()
        self.watch_tree(ROOT)

    def pump(self) -> None:
        """Read and take every queued event."""
        while True:
            events = self.ino.read()
            if not events:
                return
            for wd, mask, name in events:
                todo = self.state.event(wd, mask, name)
                if todo is None:
                    continue
                if todo[0] == "rewatch":
                    self.rewatch()
                elif todo[0] == "add":
                    self.watch_tree(todo[1], new=True)
                else:
                    self.running = False

    def serve(self, listener: socket.socket, idle: float) -> None:
        last = time.monotonic()
        while self.running:
            ready, _, _ = select.select([self.ino.fd, listener], [], [], 30.0)
            if self.ino.fd in ready:
                self.pump()
            if listener in ready:
                last = time.monotonic()
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    with conn:
                        self.reply(conn)
            if time.monotonic() - last > idle or not os.path.isdir(self.wsdir):
                return

    def reply(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid not in (0, os.geteuid()):
            return
        request = conn.makefile("rb").readline().split()
        if request[:1] == [b"STOP"]:
            self.running = False
            conn.sendall(b"OK\n")
            return
        since = None
        if len(request) == 3 and request[0] == b"Q" and request[2].isdigit():
            since = (request[1].decode("ascii", "replace"), int(request[2]))
        self.pump()  # everything that happened before the question
        ans = self.state.answer(since)
        gen, seq = ans.token
        if ans.dirs is None:
            conn.sendall(b"F %s %d\n" % (gen.encode(), seq))
        else:
            conn.sendall(b"D %s %d\n" % (gen.encode(), seq) + b"\0".join(sorted(ans.dirs)))


def run_daemon(root: bytes, wsdir: bytes, lock: int) -> None:
    """The daemon's body (the process exits when it returns); ``lock``:
    the descriptor of ``WSDIR/watch.lock``, locked by whoever started it
    (:func:`start_watcher`)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (held already, or free)
    except OSError:
        return  # another daemon watches this workspace
    try:
        idle = float(os.environ.get(IDLE_ENV, IDLE_SECONDS))
    except ValueError:
        idle = IDLE_SECONDS
    daemon = Daemon(root, wsdir)
    daemon.watch_tree(ROOT)
    dfd = os.open(wsdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    sock_path = f"/proc/self/fd/{dfd}/{SOCKET_NAME}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET_NAME, dir_fd=dfd)
    old = os.umask(0o077)
    try:
        listener.bind(sock_path)
    finally:
        os.umask(old)
    listener.listen(16)
    try:
        daemon.serve(listener, idle)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(SOCKET_NAME, dir_fd=dfd)
        listener.close()


# ---- the client -------------------------------------------------------------------


def _connect(wsdir: bytes, timeout: float) -> socket.socket | None:
    try:
        dfd = os.open(wsdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(f"/proc/self/fd/{dfd}/{SOCKET_NAME}")
    except OSError:
        s.close()
        return None
    finally:
        os.close(dfd)
    return s


def ask_watcher(wsdir: bytes, since: Token | None, timeout: float = 2.0) -> WatchAnswer | None:
    """What changed since ``since``, from the workspace's watcher; None if
    no watcher answers (start one: :func:`start_watcher`)."""
    s = _connect(wsdir, timeout)
    if s is None:
        return None
    with s:
        try:
            gen, seq = since if since is not None else ("-", 0)
            s.sendall(b"Q %s %d\n" % (gen.encode("ascii", "replace"), seq))
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
        except OSError:
            return None
    head, _, body = b"".join(chunks).partition(b"\n")
    fields = head.split()
    if len(fields) != 3 or fields[0] not in (b"F", b"D") or not fields[2].isdigit():
        return None
    token = (fields[1].decode("ascii", "replace"), int(fields[2]))
    if fields[0] == b"F":
        return WatchAnswer(token, None)
    return WatchAnswer(token, frozenset(body.split(b"\0")) if body else frozenset())


def start_watcher(root: bytes, wsdir: bytes) -> None:
    """Start the workspace's watcher in the background (it detaches: a
    session of its own, no standard streams), unless one holds its lock
    (one runs, or is starting: it answers once it watches the whole tree).
    The lock is taken here and handed down, so that two statuses never
    start two watchers."""
    try:
        lock = os.open(os.path.join(wsdir, LOCK_NAME.encode()), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        subprocess.Popen(
            # -P: "/" (its directory) is not searched for modules
            [sys.executable, "-P", "-m", "snapws.backends.plain.fswatch", root, wsdir, str(lock)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(lock,),
            cwd="/",  # (holds no directory of the workspace)
        )
    except OSError:
        return  # one runs (or none can start: status looks at everything)
    finally:
        os.close(lock)  # (the watcher's copy holds the lock)


def stop_watcher(wsdir: bytes) -> bool:
    """Ask the workspace's watcher to exit; False if none answered."""
    s = _connect(wsdir, 5.0)
    if s is None:
        return False
    with s:
        try:
            s.sendall(b"STOP\n")
            s.shutdown(socket.SHUT_WR)
            return s.recv(16) == b"OK\n"
        except OSError:
            return False


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[3].isdigit():
    run_daemon(os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]), int(sys.argv[3]))
