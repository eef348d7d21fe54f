"""The walk of a plain workspace's status shared among processes.

On trees big enough to pay for it, the walk runs in several processes
(forked, with :mod:`multiprocessing`'s fork context: each child walks some
subtrees and sends back only what differs from the index), since
lstat-bound Python does not scale with threads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

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
    without fork), up to four (the CPUs this process may use) above."""
    env = os.environ.get(PROCS_ENV)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    if not hasattr(os, "fork"):
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
    import multiprocessing
    import tempfile

    fork = multiprocessing.get_context("fork")
    children: list[tuple[Any, Any, list[Unit]]] = []
    for share in shares[1:]:
        if not share:
            continue
        out = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the child ends)
        child = fork.Process(target=_walk_share, args=(w, share, out), daemon=True)
        child.start()
        children.append((child, out, share))
    w.walk(shares[0])
    w.finish()
    for child, out, share in children:
        child.join()
        out.seek(0)
        data = out.read()
        out.close()
        if child.exitcode == 0 and data:
            w.absorb(data)
        else:  # the child failed: walk its share here
            w.walk(share)
            w.finish()


def _walk_share(w: Walker, share: list[Unit], out: Any) -> None:
    """In a forked process: walk ``share`` with a copy of the parent's
    walker and write the results to ``out`` (nothing if anything fails:
    the parent then walks the share itself)."""
    try:
        w.changes, w.records, w.visited, w.recreated, w.ignored = [], {}, [], [], []
        w.listed = w.reused = 0
        w.drop_pending()  # the parent finishes what it walked itself
        w.walk(share)
        w.finish()
        out.write(w.export())
        out.flush()
    except BaseException:  # reported by an empty result (never printed)
        out.truncate(0)
