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

The data does not go through the pipe (copying a gigabyte into a pipe
cost the unpacking thread 1.5 s): the parent copies each file's bytes
into a ring of shared memory (a memfd both map, :data:`RING` bytes) and
sends only where they are; the child writes them to the file from there.
The child's results tell the parent which part of the ring is free again.

The parent never waits for the child while it unpacks: its end of the pipe
does not block, and while the child is behind (:meth:`FileWriterChild.busy`:
no room in the ring, or a full pipe and a batch waiting) the parent writes
the next small files itself, so that neither process idles and the child
has no backlog left when the last header is read.

Protocol (a pipe each way, both ends ours): records ``F`` (a file: a
fixed header with where its data lies in the ring, then the path), ``S``
(sync: answer with the results so far), and the end of the input (answer,
then exit). The child reports results as it goes, in frames: ``D`` and a
length, then the results of the files written since the last frame (every
:data:`REPORT` files or an eighth of the ring), and, to ``S``
or the end, ``A`` and a length, then a pickle of ``(results, error)``.
Results are one fixed-size record (:data:`RECORD`) a file, in the order
the files were sent: the fields the manifest and dedup need, not a pickled
``os.stat_result`` (unpickling 100,000 of those cost the importer 1.5
s). The parent takes the ``D`` frames while it unpacks
(:meth:`FileWriterChild.collect`), so little is left when the tar ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
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

#: mode, create mode, uid, gid, mtime_ns, size, flags, path length, data's start in the ring
_HEAD = struct.Struct("<IIIIqQIIQ")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PIPE_SIZE = 1 << 20
_BATCH = 32 << 10  # bytes of records gathered before one write to the pipe
_BATCH_PART = 16  # or a sixteenth of the ring's bytes put in it
RING = 32 << 20  # shared memory holding the data of files on their way to the child
REPORT = 256  # files written between two result frames of the child
REPORT_PART = 8  # or an eighth of the ring's bytes written
_BUSY_SKIP = 8  # small files the parent writes itself before it asks again
_FRAME = struct.Struct("<cQ")  # a result frame's kind (D, A) and length
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

    def __init__(self, root: bytes, ring_size: int = RING) -> None:
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[2])  # the snapws package's directory
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
        mapped: mmap.mmap | None = None
        try:
            ring = os.memfd_create("snapws-filewriter", os.MFD_CLOEXEC)
            try:
                os.ftruncate(ring, ring_size)
                self._ring = mapped = mmap.mmap(ring, ring_size)
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "snapws.oci.filewriter", os.fsdecode(root), str(ring)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                    close_fds=True,
                    pass_fds=(ring,),
                )
            finally:
                os.close(ring)
        except (OSError, AttributeError) as e:  # (no memfd_create: not Linux)
            if mapped is not None:
                mapped.close()
            raise ChildFailed(f"cannot start the file writer: {e}") from e
        self._size = ring_size
        self._head = 0  # bytes of the ring handed out so far (a running count)
        self._tail = 0  # of them, how many the child is done with
        self._ends: list[int] = []  # for each path of _sent: _head after its data
        self._unsent = 0  # bytes of data in the ring whose record is still in _buf
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in: IO[bytes] = self._proc.stdin
        self._out: IO[bytes] = self._proc.stdout
        # both ends used with os.read/os.write, not blocking (see busy, collect)
        self._fd = self._in.fileno()
        self._rfd = self._out.fileno()
        with contextlib.suppress(OSError):  # a smaller pipe only means more switches
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._buf = bytearray()  # queued for the child
        self._rbuf = bytearray()  # read from the child, not parsed yet
        self._eof = False  # the child's output ended
        self._sent: list[bytes] = []  # paths queued since the last sync, in order
        self._matched = 0  # of them, how many have their result
        self._ready: list[Record] = []  # results not collected yet
        self._answer: bytes | None = None  # the pickle of an A frame
        self._since = 0  # files queued since the last look for results
        self._skip = 0  # calls of busy() left to answer True without looking
        try:
            started = os.read(self._rfd, 1) == b"R"
        except OSError:
            started = False
        if not started:
            self.close()
            raise ChildFailed("the file writer did not start")
        os.set_blocking(self._fd, False)
        os.set_blocking(self._rfd, False)

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
        """Queue file ``rel`` (its parent directory exists) with ``data``.
        Precondition: :meth:`busy` said False for its size (ChildFailed if
        the ring has no room)."""
        n = len(data)
        start = self._start(n)
        if start is None:
            raise ChildFailed("no room in the file writer's ring (busy was not asked)")
        self._ring[start : start + n] = data
        self._head += n
        self._ends.append(self._head)
        self._unsent += n
        self._buf += b"F"
        self._buf += _HEAD.pack(mode, create_mode, uid, gid, mtime_ns, n, flags, len(rel), start)
        self._buf += rel
        self._sent.append(rel)
        self._since += 1
        if len(self._buf) >= _BATCH or self._unsent * _BATCH_PART >= self._size:
            self._flush(wait=False)

    def _start(self, n: int) -> int | None:
        """Where in the ring ``n`` more bytes go, contiguous (skipping the
        rest of the ring if they do not fit before its end: ``_head`` moves
        on), or None if the child has not freed room enough."""
        size = self._size
        start = self._head % size
        pad = size - start if start + n > size else 0
        if self._head + pad + n - self._tail > size:
            return None
        self._head += pad
        return 0 if pad else start

    def collect(self) -> list[Record]:
        """The results the child has reported since the last call (or
        sync), without waiting (see :data:`Record`). Raises ChildFailed."""
        if self._since >= REPORT // 4 and (  # a frame may have come
            len(self._sent) - self._matched >= REPORT
            or (self._head - self._tail) * REPORT_PART >= self._size
        ):
            self._since = 0
            self._read()
        out, self._ready = self._ready, []
        return out

    def _read(self) -> None:
        """Read what the child wrote, without waiting; parse whole frames."""
        while not self._eof:
            try:
                data = os.read(self._rfd, 1 << 16)  # (a 1 MB buffer costs an mmap a call)
            except BlockingIOError:
                break
            if not data:
                self._eof = True
            self._rbuf += data
        rbuf = self._rbuf
        while len(rbuf) >= _FRAME.size:
            kind, n = _FRAME.unpack_from(rbuf)
            if len(rbuf) < _FRAME.size + n:
                break
            body = bytes(rbuf[_FRAME.size : _FRAME.size + n])
            del rbuf[: _FRAME.size + n]
            if kind == b"D":
                self._match(body)
            elif kind == b"A" and self._answer is None:
                self._answer = body
            else:
                raise ChildFailed("the file writer answered nonsense")

    def _match(self, blob: object) -> None:
        """Pair the records of ``blob`` with the paths they are for."""
        if not isinstance(blob, bytes) or len(blob) % RECORD.size:
            raise ChildFailed("the file writer answered nonsense")
        if self._matched + len(blob) // RECORD.size > len(self._sent):
            raise ChildFailed("the file writer answered for files it was not sent")
        sent, i = self._sent, self._matched
        self._ready += [(sent[i + k], *rec) for k, rec in enumerate(RECORD.iter_unpack(blob))]
        self._matched += len(blob) // RECORD.size
        if self._matched:
            self._tail = self._ends[self._matched - 1]  # their data is written: room again

    def busy(self, size: int) -> bool:
        """True while the child is behind: the ring has no room for a
        file of ``size`` bytes, or a batch is waiting and the pipe is full
        (the caller had better write the next file itself)."""
        if self._room(size) and (len(self._buf) < _BATCH or self._flush(wait=False)):
            self._skip = 0
            return False
        if self._skip:  # asked a moment ago: no system call for each file
            self._skip -= 1
            return True
        self._read()  # results free room, and the child may wait for them to be read
        if self._buf:
            self._flush(wait=False)
        if self._room(size) and len(self._buf) < _BATCH:
            return False
        self._skip = _BUSY_SKIP
        return True

    def _room(self, n: int) -> bool:
        size = self._size
        start = self._head % size
        pad = size - start if start + n > size else 0
        return self._head + pad + n - self._tail <= size

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
                # the child may wait for its results to be read
                if select.select([self._rfd], [self._fd], [])[0]:
                    self._read()
                continue
            except (BrokenPipeError, ValueError) as e:
                raise ChildFailed("the file writer died") from e
            del buf[:n]
        self._unsent = 0
        return True

    @property
    def pending(self) -> int:
        """Files queued since the last sync."""
        return len(self._sent)

    def _ask(self, kind: bytes) -> list[Record]:
        self._buf += kind
        self._flush()
        while self._answer is None:
            self._read()
            if self._answer is None:
                if self._eof:
                    raise ChildFailed("the file writer died")
                select.select([self._rfd], [], [])
        blob, failure = pickle.loads(self._answer)
        self._answer = None
        self._match(blob)
        out, self._ready = self._ready, []
        sent, matched = len(self._sent), self._matched
        self._sent, self._ends, self._matched, self._since = [], [], 0, 0
        self._tail = self._head
        if failure is not None:
            rel, code, text, what = failure
            error = OSError(code, text)
            error.filename = os.fsdecode(rel)
            error.failed_step = what  # type: ignore[attr-defined]
            raise error
        if matched != sent:
            raise ChildFailed("the file writer left files out")
        return out

    def sync(self) -> list[Record]:
        """Wait until every queued file is written; the results not
        collected yet (in the order the files were queued; see
        :data:`Record`). Raises OSError (the first failure), ChildFailed."""
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
        self._ring.close()
        for f in (self._in, self._out):
            with contextlib.suppress(OSError):
                f.close()


# ---- the child ------------------------------------------------------------------------


def _parent(rel: bytes) -> tuple[bytes, bytes]:
    i = rel.rfind(b"/")
    return (b".", rel) if i < 0 else (rel[:i], rel[i + 1 :])


def _write_file(dfd: int, name: bytes, head: tuple[int, ...], data: memoryview) -> bytes:
    """Create and fill one file; its :data:`RECORD`. Raises OSError with
    ``failed_step`` set."""
    mode, create_mode, uid, gid, mtime_ns, size, flags, _n, _start = head
    step = "create"
    try:
        fd = os.open(name, _CREATE, create_mode, dir_fd=dfd)
    except OSError as e:
        e.failed_step = step  # type: ignore[attr-defined]
        raise
    try:
        # one chunk (at most SMALL bytes): all zeros is a hole, as in tarextractor
        if size and data[0] == 0 and data[-1] == 0 and not bytes(data).strip(b"\0"):
            os.ftruncate(fd, size)
        else:
            view = data
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


def _report(out: BinaryIO, kind: bytes, body: bytes) -> None:
    out.write(_FRAME.pack(kind, len(body)) + body)
    out.flush()


def serve(root: bytes, ring_fd: int, inp: BinaryIO, out: BinaryIO) -> None:
    """The child's loop (see the module docstring)."""
    ring = mmap.mmap(ring_fd, 0, prot=mmap.PROT_READ)  # (its whole size)
    ring_size = len(ring)
    os.close(ring_fd)
    view = memoryview(ring)
    written = 0  # bytes of data since the last frame
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
                size, start = head[5], head[8]
                if failure is not None:
                    continue
                if start + size > ring_size:
                    failure = (rel, errno.EINVAL, "data outside the ring", "create")
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
                    results.append(_write_file(dfd, name, head, view[start : start + size]))
                    written += size
                    if len(results) >= REPORT or written * REPORT_PART >= ring_size:
                        _report(out, b"D", b"".join(results))
                        results = []
                        written = 0
                except Exception as e:  # (UnsafePathError too: the parent made these dirs)
                    step = getattr(e, "failed_step", "create")
                    err = getattr(e, "errno", None) or errno.EIO
                    failure = (rel, err, getattr(e, "strerror", None) or str(e), step)
                continue
            body = pickle.dumps((b"".join(results), failure), pickle.HIGHEST_PROTOCOL)
            _report(out, b"A", body)
            results = []
            if kind != b"S":  # end, or the parent went away
                return
    finally:
        for fd in dirs.values():
            os.close(fd)
        dest.close()
        view.release()
        ring.close()


if __name__ == "__main__":
    # the parent decides when to stop (it kills this process, or its end of
    # the pipe closes): a Ctrl-C reaching the whole process group is its to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):  # the parent went away
        serve(os.fsencode(sys.argv[1]), int(sys.argv[2]), sys.stdin.buffer, sys.stdout.buffer)
