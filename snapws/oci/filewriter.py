"""Small files of a layer tar written by a helper process, beside the unpacking.

Unpacking a layer of many small files costs as much in the kernel
(creating inodes: ``open`` with ``O_CREAT``, then ``write``, ``utime``,
``close``) as in Python (reading and checking tar headers). One process
does them one after the other; a thread cannot take the system calls off
it, as each of them hands the GIL back and forth. So
:class:`LayerExtractor <snapws.oci.tarextractor.LayerExtractor>` hands the
small files (at most :data:`SMALL` bytes, no xattrs) to a child process
(:class:`FileWriterChild`, this module run as ``python -m``) and goes on
with the next headers: the two run on two cores.

Nothing is decided in the child: the parent has checked every name (and
made every directory) before it sends a file; the child creates it, below
the same root, in its parent directory opened beneath the root
(:class:`~snapws.beneath.Beneath`: no symlink is followed) with
``O_EXCL``/``O_NOFOLLOW``, writes the data (zero chunks left as holes),
sets owner and mode when the parent asks, then the mtime, and hashes the
data (XXH3-128, for the manifest). It reports, when the parent asks
(:meth:`FileWriterChild.sync`), each file's hash and ``fstat``, or the first
error (errno, and which step failed); after an error it writes nothing more.

The parent never waits for the child while it unpacks: its end of the pipe
does not block, and while the child is behind (:meth:`FileWriterChild.busy`:
a full pipe and a batch waiting) the parent writes the next small files
itself, so that neither process idles and the child has no backlog left
when the last header is read.

Protocol (a pipe each way, both ends ours): records ``F`` (a file: a
fixed header, the path, the data), ``S`` (sync: answer with the results so
far), and the end of the input (answer, then exit); answers are a length
and a pickle of ``(results, error)``, ``results`` one fixed-size record
(:data:`RECORD`) a file in the order they were sent: the fields the
manifest and dedup need, not a pickled ``os.stat_result`` (unpickling
100,000 of those cost the importer 1.5 s).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, BinaryIO

import xxhash

from snapws.beneath import Beneath

SMALL = 1 << 20  # larger files are written by the unpacking process itself
CHOWN = 1
CHMOD = 2
STAT = 4

_HEAD = struct.Struct("<IIIIqQII")  # mode, create mode, uid, gid, mtime_ns, size, flags, path len
_LEN = struct.Struct("<Q")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PIPE_SIZE = 1 << 20
_BATCH = 256 << 10  # bytes of records gathered before one write to the pipe
MAX_DIR_FDS = 64

#: a file's result record: XXH3-128 (16 bytes), 1 if the fstat fields follow
#: (else 0 and zeros), st_mode, st_uid, st_gid, st_size, st_mtime_ns, st_ino,
#: st_nlink, st_blocks
RECORD = struct.Struct("<16sBIIIqqQQQ")
_NO_STAT = (0, 0, 0, 0, 0, 0, 0, 0, 0)
#: a file's result: its path, XXH3-128 (hex) and fstat (None: not asked)
Result = tuple[bytes, str, os.stat_result | None]
#: a file's result as :data:`RECORD` unpacks it, after its path
Record = tuple[bytes, bytes, int, int, int, int, int, int, int, int, int]
#: the first failure: path, errno, strerror, the step ("create", "set the owner of")
Failure = tuple[bytes, int, str, str]


class ChildFailed(Exception):
    """The helper process died or answered nonsense."""


class FileWriterChild:
    """The parent's side: :meth:`add` queues a file, :meth:`sync` waits
    until every file queued is written and returns the results (or raises
    the child's first error as OSError, with ``what`` in ``failed_step``).
    :meth:`close` (idempotent) ends the child. Raises ChildFailed when the
    child cannot be started or dies."""

    def __init__(self, root: bytes) -> None:
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[2])  # the snapws package's directory
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "snapws.oci.filewriter", os.fsdecode(root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
            )
        except OSError as e:
            raise ChildFailed(f"cannot start the file writer: {e}") from e
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in: IO[bytes] = self._proc.stdin
        self._fd = self._in.fileno()  # written with os.write, not blocking (see busy)
        self._out: IO[bytes] = self._proc.stdout
        with contextlib.suppress(OSError):  # a smaller pipe only means more switches
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        os.set_blocking(self._fd, False)
        self._buf = bytearray()
        self._sent: list[bytes] = []  # paths queued since the last sync, in order
        if self._out.read(1) != b"R":
            self.close()
            raise ChildFailed("the file writer did not start")

    def add(
        self,
        rel: bytes,
        data: bytes,
        mode: int,
        create_mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        flags: int,
    ) -> None:
        """Queue file ``rel`` (its parent directory exists) with ``data``."""
        self._buf += b"F"
        self._buf += _HEAD.pack(mode, create_mode, uid, gid, mtime_ns, len(data), flags, len(rel))
        self._buf += rel
        self._buf += data
        self._sent.append(rel)
        if len(self._buf) >= _BATCH:
            self._flush(wait=False)

    def busy(self) -> bool:
        """True while the child is behind: a batch is waiting and the pipe
        is full (the caller had better write the next file itself)."""
        return len(self._buf) >= _BATCH and not self._flush(wait=False)

    def _flush(self, wait: bool = True) -> bool:
        """Hand what is queued to the pipe; without ``wait``, only as much
        as fits. Returns True if nothing remains queued."""
        buf = self._buf
        while buf:
            try:
                n = os.write(self._fd, buf)
            except BlockingIOError:
                if not wait:
                    return False
                select.select([], [self._fd], [])
                continue
            except (BrokenPipeError, ValueError) as e:
                raise ChildFailed("the file writer died") from e
            del buf[:n]
        return True

    @property
    def pending(self) -> int:
        """Files queued since the last sync."""
        return len(self._sent)

    def _ask(self, kind: bytes) -> list[Record]:
        self._buf += kind
        self._flush()
        try:
            head = self._out.read(_LEN.size)
            if len(head) != _LEN.size:
                raise ChildFailed("the file writer died")
            body = self._out.read(_LEN.unpack(head)[0])
        except BrokenPipeError as e:
            raise ChildFailed("the file writer died") from e
        blob, failure = pickle.loads(body)
        sent, self._sent = self._sent, []
        if not isinstance(blob, bytes) or len(blob) % RECORD.size:
            raise ChildFailed("the file writer answered nonsense")
        out: list[Record] = [
            (rel, *rec) for rel, rec in zip(sent, RECORD.iter_unpack(blob), strict=False)
        ]
        if failure is not None:
            rel, code, text, what = failure
            error = OSError(code, text)
            error.filename = os.fsdecode(rel)
            error.failed_step = what  # type: ignore[attr-defined]
            raise error
        if len(out) != len(sent):
            raise ChildFailed("the file writer left files out")
        return out

    def sync(self) -> list[Record]:
        """Wait until every queued file is written; their results (in the
        order they were queued; see :data:`Record`). Raises OSError (the
        first failure), ChildFailed."""
        return self._ask(b"S")

    @staticmethod
    def result(record: Record) -> Result:
        """A record as (path, hash hex, fstat or None); the fstat holds
        the fields :data:`RECORD` carries (the others are 0)."""
        rel, digest, has_stat, mode, uid, gid, size, mtime_ns, ino, nlink, blocks = record
        st = None
        if has_stat:
            st = os.stat_result(
                (mode, ino, 0, nlink, uid, gid, size, 0, mtime_ns // 1_000_000_000, 0),
                {"st_mtime_ns": mtime_ns, "st_blocks": blocks},
            )
        return rel, digest.hex(), st

    def close(self) -> None:
        """End the child (killed if it is still working)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for f in (self._in, self._out):
            with contextlib.suppress(OSError):
                f.close()


# ---- the child ------------------------------------------------------------------------


def _parent(rel: bytes) -> tuple[bytes, bytes]:
    i = rel.rfind(b"/")
    return (b".", rel) if i < 0 else (rel[:i], rel[i + 1 :])


def _write_file(dfd: int, name: bytes, head: tuple[int, ...], data: bytes) -> bytes:
    """Create and fill one file; its :data:`RECORD`. Raises OSError with
    ``failed_step`` set."""
    mode, create_mode, uid, gid, mtime_ns, size, flags, _n = head
    step = "create"
    try:
        fd = os.open(name, _CREATE, create_mode, dir_fd=dfd)
    except OSError as e:
        e.failed_step = step  # type: ignore[attr-defined]
        raise
    try:
        # one chunk (at most SMALL bytes): all zeros is a hole, as in tarextractor
        if data[:1] == b"\0" and data[-1:] == b"\0" and not data.strip(b"\0"):
            os.ftruncate(fd, size)
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        if flags & CHOWN:
            step = "set the owner of"
            os.fchown(fd, uid, gid)
            step = "create"
        if flags & CHMOD:
            os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        if flags & STAT:
            st = os.fstat(fd)
            fields: tuple[int, ...] = (
                1,
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                st.st_nlink,
                st.st_blocks,
            )
        else:
            fields = _NO_STAT
    except OSError as e:
        e.failed_step = step  # type: ignore[attr-defined]
        raise
    finally:
        os.close(fd)
    return RECORD.pack(xxhash.xxh3_128_digest(data), *fields)


def serve(root: bytes, inp: BinaryIO, out: BinaryIO) -> None:
    """The child's loop (see the module docstring)."""
    dest = Beneath(root)
    dirs: dict[bytes, int] = {}
    results: list[bytes] = []  # RECORDs
    failure: Failure | None = None
    out.write(b"R")
    out.flush()
    try:
        while True:
            kind = inp.read(1)
            if kind == b"F":
                head = _HEAD.unpack(inp.read(_HEAD.size))
                rel = inp.read(head[7])
                data = inp.read(head[5])
                if failure is not None:
                    continue
                parent, name = _parent(rel)
                try:
                    dfd = dirs.get(parent)
                    if dfd is None:
                        if len(dirs) >= MAX_DIR_FDS:
                            for fd in dirs.values():
                                os.close(fd)
                            dirs.clear()
                        dfd = dirs[parent] = dest.open_dir(parent)
                    results.append(_write_file(dfd, name, head, data))
                except Exception as e:  # (UnsafePathError too: the parent made these dirs)
                    step = getattr(e, "failed_step", "create")
                    err = getattr(e, "errno", None) or errno.EIO
                    failure = (rel, err, getattr(e, "strerror", None) or str(e), step)
                continue
            body = pickle.dumps((b"".join(results), failure), pickle.HIGHEST_PROTOCOL)
            out.write(_LEN.pack(len(body)) + body)
            out.flush()
            results = []
            if kind != b"S":  # end, or the parent went away
                return
    finally:
        for fd in dirs.values():
            os.close(fd)
        dest.close()


if __name__ == "__main__":
    # the parent decides when to stop (it kills this process, or its end of
    # the pipe closes): a Ctrl-C reaching the whole process group is its to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):  # the parent went away
        serve(os.fsencode(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)
