"""This user's command server: snapws imported once, a worker forked per
command (the client side is :mod:`snapws.cli.launch`).

``python -m snapws.cli.server DIR KEY`` imports the CLI and the library,
listens on ``DIR/KEY.sock`` (DIR is private to the user; ``DIR/KEY.lock``
makes it one server per key) and, for each client, forks a worker. The
worker checks that it may stand in for the client, becomes it (standard
streams, current directory, environment, umask, resource limits) and runs
the command through the same entry as ``python -m snapws``, then reports
the exit status. The server holds no state between commands: a worker is a
fresh process that finds its modules imported, nothing more.

A worker declines, and the client runs the command itself, when the
client differs in what a fork cannot take from it: user, groups,
capabilities, no_new_privs, seccomp, namespaces, root directory. When the
client is killed, its worker is killed too (SIGKILL on the socket's
hangup), so that ``kill -9`` or ``timeout`` stop the command as they would
stop a process of its own: the store's crash safety covers both alike.

The server exits after :data:`IDLE_SECONDS` without a command, or as soon as
the files of snapws or click change (an upgrade, an edit): it never runs
code older than what is installed.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import importlib
import io
import os
import pkgutil
import resource
import select
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import click

import snapws
from snapws.cli import launch
from snapws.mounts import busy

#: A server without a command for this long exits (Gradle's daemon: 3 hours;
#: a quarter of an hour keeps a lunch break from holding memory);
#: ``SNAPWS_SERVER_IDLE`` (seconds) when it starts says otherwise.
IDLE_SECONDS = 900.0

#: Lines of /proc/PID/status a worker and its client must share.
_SAME_STATUS = (
    b"Uid:", b"Gid:", b"Groups:", b"CapInh:", b"CapPrm:", b"CapEff:", b"CapBnd:",
    b"CapAmb:", b"NoNewPrivs:", b"Seccomp:",
)  # fmt: skip

#: Namespaces a worker and its client must share.
_NAMESPACES = ("mnt", "user", "pid", "net", "ipc", "uts", "cgroup")

#: F_SETSIG: the signal sent on a socket's O_ASYNC events (linux/fcntl.h).
_F_SETSIG = 10

#: Modules not imported ahead: scripts run as ``__main__``, and the client.
_NOT_PRELOADED = ("snapws.__main__", "snapws.oci.filewriter", "snapws.cli.server")


def idle_seconds() -> float:
    """:data:`IDLE_SECONDS`, or ``SNAPWS_SERVER_IDLE`` when it is a positive number."""
    try:
        value = float(os.environ.get("SNAPWS_SERVER_IDLE", ""))
    except ValueError:
        return IDLE_SECONDS
    return value if 0 < value < 1e9 else IDLE_SECONDS


def serve(where: str, key: str) -> None:
    """Listen on ``where/key.sock`` until idle, retired (SIGTERM) or the code
    changed; a worker forked for each client (:func:`_work`) never returns
    here."""
    lock = os.open(os.path.join(where, f"{key}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server of this key runs
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    path = os.path.join(where, f"{key}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    bound = os.stat(path).st_ino
    listener.listen(64)
    watch = CodeWatch.start()
    fingerprint = code_fingerprint() if watch is None else []
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    signal.signal(signal.SIGTERM, _retire)
    server = os.getpid()
    idle = idle_seconds()
    waits = [listener.fileno()] if watch is None else [watch.fd, listener.fileno()]
    try:
        while True:
            ready, _, _ = select.select(waits, [], [], idle)
            if not ready:
                return
            if watch is not None and watch.fd in ready and watch.changed():
                return
            if listener.fileno() not in ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:  # the client left, or no descriptor to spare
                continue
            stale = watch.changed() if watch is not None else code_fingerprint() != fingerprint
            if stale:
                conn.close()  # the client runs the command itself
                return
            try:
                pid = os.fork()
            except OSError:
                pid = -1  # the client runs the command itself
            if pid == 0:
                try:  # nothing may return from here into the server's loop
                    listener.close()
                    os.close(lock)
                    if watch is not None:
                        os.close(watch.fd)
                    _work(conn, server)
                finally:
                    os._exit(70)
            conn.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == bound:  # not a later server's
                os.unlink(path)


def _retire(signum: int, frame: object) -> None:
    """SIGTERM: leave the loop, taking the socket away (see :func:`serve`)."""
    raise SystemExit(0)


def code_dirs() -> list[str]:
    """The directories of snapws and click (not their bytecode caches)."""
    out = []
    for package in (snapws, click):
        for root in package.__path__:
            for dirpath, dirnames, _files in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                out.append(dirpath)
    return out


class CodeWatch:
    """inotify on :func:`code_dirs`: :meth:`changed` says whether a Python
    file (or a directory) there was written, replaced, moved or removed
    since the watch began. One descriptor, no cost per command."""

    _MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
    # IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO,
    # IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF
    _SELF_GONE = 0x400 | 0x800 | 0x8000  # ... and IN_IGNORED
    _ISDIR = 0x40000000

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._seen = False

    @classmethod
    def start(cls) -> CodeWatch | None:
        """A watch, or None where inotify is not to be had (then the files'
        times are compared for each command)."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK))
        if fd < 0:
            return None
        for d in code_dirs():
            if int(libc.inotify_add_watch(fd, os.fsencode(d), cls._MASK)) < 0:
                os.close(fd)
                return None
        return cls(fd)

    def changed(self) -> bool:
        while not self._seen:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return False
            self._seen = self._relevant(data)
        return True

    def _relevant(self, data: bytes) -> bool:
        i = 0
        while i + 16 <= len(data):
            mask = int.from_bytes(data[i + 4 : i + 8], sys.byteorder)
            size = int.from_bytes(data[i + 12 : i + 16], sys.byteorder)
            name = data[i + 16 : i + 16 + size].rstrip(b"\0")
            i += 16 + size
            if mask & self._SELF_GONE or name.endswith(b".py"):
                return True
            if mask & self._ISDIR and name != b"__pycache__":
                return True
        return False


def code_fingerprint() -> list[tuple[str, int, int]]:
    """(path, mtime, size) of each Python file of snapws and click: a
    server whose code changed on disk is not used."""
    out = []
    for dirpath in code_dirs():
        for name in sorted(os.listdir(dirpath)):
            if name.endswith(".py"):
                p = os.path.join(dirpath, name)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                out.append((p, st.st_mtime_ns, st.st_size))
    return out


def preload() -> None:
    """Import the CLI and every library module a command may import."""
    importlib.import_module("snapws.cli.main")
    for info in pkgutil.walk_packages(snapws.__path__, "snapws."):
        if info.name not in _NOT_PRELOADED:
            importlib.import_module(info.name)


def _work(conn: socket.socket, server: int) -> None:
    """A worker: read the request, become the client, run the command,
    report its exit status; exits the process."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        request = _receive(conn)
        ignored = None if request is None else _may_stand_in(request.pid, server)
    except OSError:
        os._exit(0)
    if ignored is None or request is None:
        _reply(conn, launch.DECLINED, 0)
        os._exit(0)
    try:
        _become(request)
    except OSError:  # e.g. its directory cannot be entered: the client runs it
        _reply(conn, launch.DECLINED, 0)
        os._exit(0)
    _take_signals(ignored)
    busy.count_as_this_command(request.pid)
    _die_with_client(conn)
    _reply(conn, launch.RUNNING, os.getpid())
    status = _run(request.argv)
    _finish()
    with contextlib.suppress(OSError):
        conn.sendall(launch.EXITED + status.to_bytes(4, "little", signed=True))
    os._exit(0)


def _die_with_client(conn: socket.socket) -> None:
    """From now on the client's death (its socket's hangup) sends SIGKILL
    to this worker; if the client is gone already, exit now."""
    fd = conn.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, _F_SETSIG, signal.SIGKILL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    hangup = select.poll()
    hangup.register(fd, select.POLLRDHUP | select.POLLHUP)
    if hangup.poll(0):
        os._exit(0)


class _Request:
    def __init__(self, pid: int, fds: list[int], umask: int, argv: list[str], env: list[bytes]):
        self.pid, self.fds, self.umask, self.argv, self.env = pid, fds, umask, argv, env


def _receive(conn: socket.socket) -> _Request | None:
    """The client's request: its pid (from the kernel), standard streams
    and current directory (descriptors), umask, arguments, environment."""
    pid, uid, _gid = _peer(conn)
    if uid != os.getuid():
        return None
    head, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(4 * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    if len(head) != 4 or len(fds) != 4:
        return None
    size = int.from_bytes(head, "little")
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(min(size - len(payload), 1 << 20))
        if not chunk:
            return None
        payload += chunk
    fields = payload.split(b"\0")
    nargs = int(fields[1])
    args = [os.fsdecode(a) for a in fields[2 : 2 + nargs]]
    return _Request(pid, fds, int(fields[0]), ["snapws", *args], fields[2 + nargs :])


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return (
        int.from_bytes(creds[0:4], sys.byteorder),
        int.from_bytes(creds[4:8], sys.byteorder),
        int.from_bytes(creds[8:12], sys.byteorder),
    )


def _may_stand_in(pid: int, server: int) -> int | None:
    """Whether this worker is the client ``pid`` in all a fork cannot
    change: the same credentials, namespaces and root, and resource limits
    and priority it can take (taken now). The signals the client ignores
    (a mask, /proc's SigIgn), or None if it may not. A client this worker
    cannot follow because the server is more restricted (started by a
    ``nice`` or ``ulimit``-ed command) makes the server retire: the next
    command starts another."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            status = fh.read().splitlines()
        with open("/proc/self/status", "rb") as fh:
            own = fh.read().splitlines()
        theirs = [ln for ln in status if ln.startswith(_SAME_STATUS)]
        mine = [ln for ln in own if ln.startswith(_SAME_STATUS)]
        if theirs != mine or len(mine) != len(_SAME_STATUS):
            return None
        for ns in _NAMESPACES:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                return None
        root, top = os.stat(f"/proc/{pid}/root/"), os.stat("/")
        if (root.st_dev, root.st_ino) != (top.st_dev, top.st_ino):
            return None
        ignored = next(int(ln.split()[1], 16) for ln in status if ln.startswith(b"SigIgn:"))
    except (OSError, ValueError, StopIteration):
        return None
    try:
        for name in dir(resource):
            if name.startswith("RLIMIT_"):
                which = getattr(resource, name)
                limits = resource.prlimit(pid, which)
                if limits != resource.getrlimit(which):
                    resource.setrlimit(which, limits)
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, pid))
    except (OSError, ValueError):
        if os.getppid() == server:  # (not whoever adopted this worker)
            os.kill(server, signal.SIGTERM)  # retire (see above)
        return None
    return ignored


def _take_signals(ignored: int) -> None:
    """The signal dispositions the client's own process would have: those
    it ignores ignored (a background job's SIGINT, nohup's SIGHUP), Python's
    at start for the rest (SIGINT raises KeyboardInterrupt; SIGPIPE and
    SIGXFSZ are ignored, and so the client ignores them too)."""
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if ignored & (1 << (signum - 1)):
            handler: Any = signal.SIG_IGN
        elif signum == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, handler)


def _become(request: _Request) -> None:
    """Take the client's streams, directory, environment and umask, and set
    up Python's state that depends on them, as at a process's start."""
    for target, fd in enumerate(request.fds[:3]):
        os.dup2(fd, target)
    os.fchdir(request.fds[3])
    for fd in request.fds:
        os.close(fd)
    os.umask(request.umask)
    os.environ.clear()
    for item in request.env:
        name, sep, value = item.partition(b"=")
        if sep and name:
            os.environb[name] = value
    tempfile.tempdir = None
    time.tzset()
    sys.stdin = _stream(0, sys.stdin, "r")
    sys.stdout = _stream(1, sys.stdout, "w")
    sys.stderr = _stream(2, sys.stderr, "w", line_buffered=True)
    sys.argv = request.argv


def _stream(fd: int, old: object, mode: str, line_buffered: bool = False) -> io.TextIOWrapper:
    """A text stream on ``fd`` as Python makes one at start (line-buffered
    on a terminal; stderr always), in the encoding this server started with
    (clients with another start-up environment have another server)."""
    encoding = getattr(old, "encoding", None) or "utf-8"
    errors = getattr(old, "errors", None) or "strict"
    binary: io.BufferedIOBase
    if mode == "r":
        binary = io.BufferedReader(io.FileIO(fd, "r", closefd=False))
    else:
        binary = io.BufferedWriter(io.FileIO(fd, "w", closefd=False))
    return io.TextIOWrapper(
        binary,
        encoding=encoding,
        errors=errors,
        line_buffering=line_buffered or os.isatty(fd),
    )


def _run(argv: list[str]) -> int:
    """Run the command as ``python -m snapws`` would: its exit status, or
    minus the signal it ends with (a closed output pipe)."""
    from snapws.cli.main import CLOSED_PIPE, cli

    try:
        cli.main(args=argv[1:], prog_name="snapws")
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # as the interpreter reports an uncaught exception
        import traceback

        traceback.print_exc()
        status = 1
    return -signal.SIGPIPE if status == CLOSED_PIPE else status


def _finish() -> None:
    """What the interpreter does at exit (threads joined, atexit handlers,
    streams flushed), then let go of the client's directory and streams, so
    that nothing waits for this process once the client has its status."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _reply(conn: socket.socket, kind: bytes, value: int) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(kind + value.to_bytes(4, "little"))


def main(argv: list[str]) -> None:
    """``python -m snapws.cli.server DIR KEY``, as the client starts it."""
    os.closerange(3, 1 << 16)  # the client's inherited descriptors (a pipe's reader waits)
    os.chdir("/")  # hold no directory: a workspace must stay free to unmount
    where, key = argv
    if not launch.private_dir(where):
        return
    preload()
    # what was imported stays out of every worker's garbage collections: a
    # collection would touch each object, copying the server's pages
    gc.freeze()
    serve(where, key)


if __name__ == "__main__":
    main(sys.argv[1:])
