"""The walk of a plain workspace's status shared among processes.

On trees big enough to pay for it, the walk runs in several processes
(forked: each child walks some subtrees and sends back, through an
anonymous file, only what differs from the index), since lstat-bound
Python does not scale with threads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from snapws.backends.plain.index import Index
from snapws.backends.plain.records import NFIELDS, VIRTUAL
from snapws.model import ROOT

if TYPE_CHECKING:
    from snapws.backends.plain.scan import Unit, Walker

#: Below this many recorded entries the walk stays in one process.
PARALLEL_MIN_ENTRIES = 20_000
#: Environment override of the number of walking processes (1: no fork).
PROCS_ENV = "SNAPWS_PLAIN_SCAN_PROCS"


def walking_procs(index: Index) -> int:
    """How many processes walk ``index``'s tree: ``$SNAPWS_PLAIN_SCAN_PROCS``
    if set; else one below :data:`PARALLEL_MIN_ENTRIES` recorded entries (or
    without fork and memfd_create), up to four (the CPUs this process may use) above."""
    env = os.environ.get(PROCS_ENV)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    if not hasattr(os, "fork") or not hasattr(os, "memfd_create"):
        return 1
    entries = sum(len(r[1].stats) for r in index.dirs.values() if r[1] is not None) // (8 * NFIELDS)
    if entries < PARALLEL_MIN_ENTRIES:
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _subtree_sizes(index: Index) -> dict[bytes, int]:
    """Recorded entries at and below each directory (an estimate of walking cost)."""
    sizes: dict[bytes, int] = {}
    for d, r in index.dirs.items():
        if r[1] is None or d == VIRTUAL:
            continue
        n = 1 + len(r[1].stats) // (8 * NFIELDS)
        p = d
        while True:
            sizes[p] = sizes.get(p, 0) + n
            if p == ROOT:
                break
            i = p.rfind(b"/")
            p = ROOT if i < 0 else p[:i]
    return sizes


def walk_parallel(w: Walker, units: list[Unit], procs: int) -> None:
    """Walk the top directories here until there are enough subtrees, then
    share the subtrees between this process and ``procs - 1`` forked ones."""
    sizes = _subtree_sizes(w.index)
    frontier = list(units)
    done_shallow = 0
    while frontier and len(frontier) < 8 * procs and done_shallow < 64:
        frontier.sort(key=lambda u: sizes.get(u[0], 1))
        big = frontier.pop()
        frontier += w.walk([big], recurse=False)
        done_shallow += 1
    shares: list[list[Unit]] = [[] for _ in range(procs)]
    loads = [0] * procs
    for u in sorted(frontier, key=lambda u: -sizes.get(u[0], 1)):
        k = loads.index(min(loads))
        shares[k].append(u)
        loads[k] += sizes.get(u[0], 1)
    children: list[tuple[int, int, list[Unit]]] = []  # (pid, result fd, share)
    try:
        for share in shares[1:]:
            if share:
                children.append(_fork_walker(w, share))
        w.walk(shares[0])
        w.finish()
    except BaseException:
        for pid, fd, _ in children:  # no child outlives the scan
            _wait(pid)
            os.close(fd)
        raise
    for pid, fd, share in children:
        try:
            data = _read_all(fd) if _wait(pid) else b""
        finally:
            os.close(fd)
        if data:
            w.absorb(data)
        else:  # the child failed: walk its share here
            w.walk(share)
            w.finish()


def _fork_walker(w: Walker, share: list[Unit]) -> tuple[int, int, list[Unit]]:
    """Fork a process that walks ``share`` with a copy of ``w`` and writes
    :meth:`Walker.export`'s bytes into an anonymous file (nothing if
    anything fails: the parent then walks the share itself). The child
    leaves by ``os._exit``: it never returns into the caller, never runs
    exit handlers and never flushes the parent's buffered output."""
    fd = os.memfd_create("snapws-walk", os.MFD_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        os.close(fd)
        raise
    if pid == 0:  # the child
        code = 1
        try:
            w.changes, w.records, w.visited, w.recreated, w.ignored = [], {}, [], [], []
            w.listed = w.reused = w.replayed = 0
            w.multilink = []
            w.drop_pending()  # the parent finishes what it walked itself
            w.walk(share)
            w.finish()
            view = memoryview(w.export())
            while view:
                view = view[os.write(fd, view) :]
            code = 0
        except BaseException:  # reported by the exit code (never printed)
            code = 1
        finally:
            os._exit(code)
    return pid, fd, share


def _wait(pid: int) -> bool:
    """Reap child ``pid``; True if it exited 0."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return False
        return os.waitstatus_to_exitcode(status) == 0


def _read_all(fd: int) -> bytes:
    """The whole content of the anonymous file ``fd``, from its start."""
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
