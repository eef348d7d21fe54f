"""The ``snapws`` console script: hand the command to this user's command
server, or run it here.

Python and click take 40-50 ms to start, more than git's whole ``status`` on
an ordinary tree. So the everyday commands (:data:`SERVED`) go to a server
that has imported snapws once (:mod:`snapws.cli.server`, as Mercurial's chg
or the Gradle daemon): this process passes its arguments, environment,
umask, current directory and standard streams over a Unix socket, and a
worker forked from the server runs the command as this process would have,
then reports the exit status. This module imports only what Python has
loaded already (``os``, ``sys``) and two C modules, so that the client costs
little more than the interpreter's start.

Anything else runs here, in this process, exactly as ``python -m snapws``:
a command not served, ``SNAPWS_SERVER=0``, no server yet (one is started in
the background for the next command, unless ``$CI`` is set), a server that
declines (another user, other groups, capabilities, namespaces, limits, or
code changed since it started), or any failure before the worker started.
"""

import _socket
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs 2 ms
if TYPE_CHECKING:
    import signal as _signal
else:
    import _signal

#: The commands a server runs: short, run many times a day, no terminal of
#: their own (``shell`` and ``run`` need job control; long transfers gain
#: nothing from 40 ms).
SERVED = frozenset(
    {
        "status",
        "diff",
        "commit",
        "log",
        "show",
        "reflog",
        "checkout",
        "reset",
        "branch",
        "tag",
        "restore",
    }
)

#: Global options that take a value (``-C DIR``, ``--store DIR``).
_WITH_VALUE = frozenset({"-C", "--store"})

#: Environment variables that change how Python starts (the standard streams'
#: encoding, the import path, hashing): a server serves only clients whose
#: values are its own, by keying the socket's name on them.
_STARTUP_ENV = ("PYTHON", "LC_", "LANG")

#: Signals the client passes on to the worker (Ctrl-C, kill, a closed
#: terminal, Ctrl-\\); SIGTSTP (Ctrl-Z) stops both.
_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)

#: Message kinds from the worker: running (its pid follows), declined, exit.
RUNNING, DECLINED, EXITED = b"R", b"F", b"X"


def main() -> None:
    """Console-script entry point."""
    status = _via_server(sys.argv[1:]) if _wants_server(sys.argv[1:]) else None
    if status is not None:
        _exit_as(status)
    from snapws.cli.main import main as run_here

    run_here()


def _wants_server(args: list[str]) -> bool:
    """Whether ``args`` name a served command (after the global options
    ``-C DIR``, ``--store DIR`` and ``-q``) and the user has not turned the
    server off."""
    if os.environ.get("SNAPWS_SERVER", "1") in ("0", "no", "false", "off"):
        return False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _WITH_VALUE:
            i += 2
        elif arg.startswith(("--store=", "-C")) or arg in ("-q", "--quiet"):
            i += 1
        else:
            return arg in SERVED
    return False


def runtime_dir() -> str:
    """This user's directory for the server's socket:
    ``$XDG_RUNTIME_DIR/snapws`` (systemd's per-user tmpfs), else
    ``/tmp/snapws-UID`` as tmux does."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base):
        try:
            if os.stat(base).st_uid == os.getuid():  # not another user's (sudo -E)
                return os.path.join(base, "snapws")
        except OSError:
            pass
    return f"/tmp/snapws-{os.getuid()}"


def server_key() -> str:
    """The name of the server for this Python, this snapws and this start-up
    environment (FNV-1a of them, in hex)."""
    parts = [sys.executable, os.path.dirname(os.path.abspath(__file__))]
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(_STARTUP_ENV))
    h = 0xCBF29CE484222325
    for byte in "\0".join(parts).encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def private_dir(path: str) -> bool:
    """Whether ``path`` is a directory of this user that nobody else may
    enter or write (mode 0700, not a symlink); made so if missing."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        st.st_uid == os.getuid()
        and (st.st_mode & 0o170000) == 0o040000
        and (st.st_mode & 0o077) == 0
    )


def _via_server(args: list[str]) -> int | None:
    """Run the command in a server's worker: its exit status (a negative
    number: the signal it died of), or None to run it here."""
    if not _plain_process():
        return None
    where = runtime_dir()
    if not private_dir(where):
        return None
    # a signal before the worker runs is held, then passed on to it, or, if
    # the command is to run here, ends this process as it would have
    pending: list[int] = []
    previous = {}
    for signum in _FORWARDED:
        handler = _signal.getsignal(signum)
        if handler != _signal.SIG_IGN:
            previous[signum] = handler
            _signal.signal(signum, lambda signum, frame: pending.append(signum))
    key = server_key()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.path.join(where, f"{key}.sock"))
    except OSError:
        _start_server(where, key)
        status = None
    else:
        status = _request(sock, args, pending)
    finally:
        sock.close()
    if status is None:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)
        if pending:
            return -pending[0]
    return status


def _plain_process() -> bool:
    """Whether a worker can stand in for this process at all: its standard
    streams are open (else the socket would take the place of one), and it
    is in the initial user namespace (a ``snapws run`` or ``shell`` of a
    rootless workspace is not: a server started there would live in that
    namespace)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return False
    try:
        with open("/proc/self/uid_map", "rb") as fh:
            return fh.read().split() == [b"0", b"0", b"4294967295"]
    except OSError:
        return False


def _request(sock: _socket.socket, args: list[str], pending: list[int]) -> int | None:
    try:
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # a vanished current directory: main() says what to do
        return None
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        fields = [str(umask), str(len(args)), *args]
        fields += [f"{k}={v}" for k, v in os.environ.items()]
        payload = b"\0".join(os.fsencode(f) for f in fields)
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, cwd))
        message = len(payload).to_bytes(4, "little") + payload
        sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        while sent < len(message):  # a big request goes in parts
            sent += sock.send(message[sent:])
    except OSError:  # a standard stream is closed, the server went away
        return None
    finally:
        os.close(cwd)
    try:
        reply = _recv_exact(sock, 5)
    except OSError:
        return None
    if reply is None or reply[:1] != RUNNING:
        return None  # declined, or gone before it started: run it here
    return _wait(sock, int.from_bytes(reply[1:], "little"), pending)


def _wait(sock: _socket.socket, worker: int, pending: list[int]) -> int:
    """Pass signals on to the worker until it reports its exit status."""

    forwarded: list[int] = list(pending)

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        _kill(worker, signum)

    def stop(signum: int, frame: object) -> None:  # Ctrl-Z: stop both, then go on
        _kill(worker, _signal.SIGSTOP)
        _signal.signal(_signal.SIGTSTP, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGTSTP)
        _signal.signal(_signal.SIGTSTP, stop)  # continued
        _kill(worker, _signal.SIGCONT)

    for signum in _FORWARDED:
        if _signal.getsignal(signum) != _signal.SIG_IGN:
            _signal.signal(signum, forward)
    _signal.signal(_signal.SIGTSTP, stop)
    for held in pending:
        _kill(worker, held)
    try:
        reply = _recv_exact(sock, 5)
    except OSError:
        reply = None
    if reply is None or reply[:1] != EXITED:
        # the worker died of a signal: the one passed on to it, else a kill
        return -(forwarded[-1] if forwarded else int(_signal.SIGKILL))
    return int.from_bytes(reply[1:], "little", signed=True)


def _kill(pid: int, signum: int) -> None:
    try:  # noqa: SIM105 (contextlib costs an import)
        os.kill(pid, signum)
    except OSError:  # it has ended
        pass


def _recv_exact(sock: _socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _exit_as(status: int) -> None:
    """End as the worker ended: its exit code, or death by its signal."""
    if status >= 0:
        os._exit(status)
    signum = -status
    if signum not in (_signal.SIGKILL, _signal.SIGSTOP):  # (those have no handler)
        _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)


#: The module a server runs as (``python -P -m SERVER_MODULE DIR KEY``).
SERVER_MODULE = "snapws.cli.server"


def server_pids(where: str) -> list[int]:
    """The processes serving (or starting to serve) from the runtime
    directory ``where``, found by their command line: for whoever must end
    them (a test, a benchmark), those without a pid in a lock file yet
    too."""
    mine = SERVER_MODULE.encode() + b"\0" + os.fsencode(where) + b"\0"
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if mine in f.read():
                    pids.append(int(name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


def _start_server(where: str, key: str) -> None:
    """Start this user's server in the background, for the next command: a
    child of its own session, in ``/`` at once (a process whose directory is
    in the workspace would hold it, for the command this process runs
    next), no terminal, standard streams on /dev/null, no inherited
    descriptor. Never fails the command: a server that cannot start is not
    used."""
    if os.environ.get("CI", "") not in ("", "0", "false"):
        return  # a CI job runs each command once: a server would only linger
    argv = [sys.executable, "-P", "-m", SERVER_MODULE, where, key]
    try:
        pid = os.fork()
    except OSError:
        return
    if pid:
        return
    try:  # the child: nothing here may return into the command
        os.chdir("/")
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1 << 16)
        os.execv(sys.executable, argv)
    finally:
        os._exit(127)
