"""Paths longer than PATH_MAX, for syscalls that take a path.

A tree 10,000 levels deep has paths of ~20,000 bytes; the kernel refuses
any path string over PATH_MAX (4096 bytes) with ENAMETOOLONG. :func:`reach`
names the same file by a short path: ``/proc/self/fd/N/rest``, where ``N``
is an ``O_PATH`` descriptor of an ancestor directory (an *anchor*) and
``rest`` is at most about :data:`STEP` bytes. The kernel follows the magic
link ``/proc/self/fd/N`` to the anchor and walks ``rest`` from there, as
``openat(N, rest)`` would; every path-based call (``open``, ``lstat``,
``listxattr``, ``utime``, ``rmdir``, ...) then works unchanged.

Anchors are cut at multiples of :data:`STEP` bytes, so the entries of one
directory, and its deeper neighbours, share them. Inside an
:func:`anchored` block (a walk) anchors are kept, so a walk of a deep tree
opens each anchor once (O(entries) syscalls, as fts); outside one, each
:func:`reach` opens the anchors it needs and closes them. An anchor deeper
than PATH_MAX is itself opened through the anchor before it. At most
:data:`MAX_ANCHORS` stay open (least recently used are closed first), far
below RLIMIT_NOFILE whatever the depth; an anchor is pinned (never closed)
while a :func:`reach` block uses it, so threads may share them. A kept
anchor whose directory was removed is opened again; a directory on the way
must not be *renamed* inside an :func:`anchored` block that then uses the
old path.

Paths of at most :data:`LIMIT` bytes are used as they are, at no cost.
Semantics are those of the long path: symlinks on the way are followed as
the kernel would follow them in the long path (callers that must not follow
any use :mod:`snapws.beneath`). An OSError raised inside the block names the
long path, not the short one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

_P = TypeVar("_P", bytes, str)

#: Paths up to this long go to syscalls as they are.
LIMIT = 3072
#: Anchors are cut about every STEP bytes of a path: the kernel then walks
#: at most about STEP / 2 components per call (one-letter names).
STEP = 256
#: Anchors kept open at most (pinned ones excepted): enough for the longest
#: path a layer tar may hold (64 KiB), far below RLIMIT_NOFILE.
MAX_ANCHORS = 320

_lock = threading.Lock()
_anchors: OrderedDict[bytes, list[int]] = OrderedDict()  # path -> [fd, pins]
_scopes = 0  # anchored() blocks open


def is_long(path: str | bytes) -> bool:
    """True if ``path`` is too long to be given to a syscall as it is."""
    return len(path) > LIMIT


def _cut(path: bytes) -> int:
    """Where to split ``path`` into anchor and rest: a ``/`` at or before
    the last multiple of STEP below its length (never 0, never the end)."""
    target = ((len(path) - 1) // STEP) * STEP
    cut = path.rfind(b"/", 1, target + 1)
    if cut <= 0:
        cut = path.rfind(b"/", 1)
    return cut


def _open_anchor(anchor: bytes) -> int:
    """A new descriptor of directory ``anchor``: from its own anchor when
    that is open (a walk goes down one anchor at a time), else down from a
    prefix short enough, in steps (no recursion, whatever the depth)."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    if len(anchor) <= LIMIT:
        return os.open(anchor, flags)
    up = anchor[: _cut(anchor)]
    base = _pin_if_open(up)
    if base is not None:
        try:
            return os.open(anchor[len(up) + 1 :], flags, dir_fd=base)
        finally:
            _unpin(up)
    steps = []
    while len(anchor) > LIMIT:
        cut = _cut(anchor)
        steps.append(anchor[cut + 1 :])
        anchor = anchor[:cut]
    fd = os.open(anchor, flags)
    try:
        for step in reversed(steps):
            nfd = os.open(step, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _pin_if_open(anchor: bytes) -> int | None:
    """Pin ``anchor`` if it is open (and not removed): its descriptor."""
    with _lock:
        held = _anchors.get(anchor)
        if held is None or (held[1] == 0 and os.fstat(held[0]).st_nlink == 0):
            return None
        held[1] += 1
        return held[0]


def _pin(anchor: bytes) -> int:
    with _lock:
        held = _anchors.get(anchor)
        if held is not None and held[1] == 0 and os.fstat(held[0]).st_nlink == 0:
            _anchors.pop(anchor)  # removed since (and perhaps made again)
            os.close(held[0])
            held = None
        if held is not None:
            held[1] += 1
            _anchors.move_to_end(anchor)
            return held[0]
    fd = _open_anchor(anchor)  # outside the lock: may pin the anchor before it
    with _lock:
        held = _anchors.get(anchor)
        if held is not None:  # another thread opened it meanwhile
            os.close(fd)
            held[1] += 1
            _anchors.move_to_end(anchor)
            return held[0]
        _anchors[anchor] = [fd, 1]
        _evict()
        return fd


def _unpin(anchor: bytes) -> None:
    with _lock:
        held = _anchors.get(anchor)
        if held is not None:
            held[1] -= 1
        _evict()


def _evict() -> None:
    """Close the least recently used unpinned anchors beyond MAX_ANCHORS,
    or all unpinned ones outside an anchored block (called with the lock
    held)."""
    keep = MAX_ANCHORS if _scopes else 0
    if len(_anchors) <= keep:
        return
    for key in [k for k, (_, pins) in _anchors.items() if pins == 0]:
        if len(_anchors) <= keep:
            break
        fd, _ = _anchors.pop(key)
        os.close(fd)


@contextmanager
def _pinned(path: bytes) -> Iterator[bytes]:
    cut = _cut(path)
    anchor = path[:cut]
    fd = _pin(anchor)
    try:
        yield b"/proc/self/fd/%d/%s" % (fd, path[cut + 1 :])
    finally:
        _unpin(anchor)


class _AsItIs(AbstractContextManager[_P]):
    """:func:`reach` of a path short enough already: the path itself, at
    the cost of a plain object (status and commit reach thousands)."""

    __slots__ = ("path",)
    path: _P

    def __init__(self, path: _P) -> None:
        self.path = path

    def __enter__(self) -> _P:
        return self.path

    def __exit__(self, *exc: object) -> None:
        return None


def reach(path: _P) -> AbstractContextManager[_P]:
    """A path naming the same file as the absolute ``path`` and short
    enough for any syscall, valid inside the block (``path`` itself when it
    is at most :data:`LIMIT` bytes). An OSError raised in the block carries
    ``path`` as its filename. Raises OSError if an ancestor of ``path``
    cannot be opened."""
    if len(path) <= LIMIT:
        return _AsItIs(path)
    return _reach_long(path)


@contextmanager
def _reach_long(path: _P) -> Iterator[_P]:
    raw = os.fsencode(path).rstrip(b"/")
    try:
        with _pinned(raw) as short:
            yield short if isinstance(path, bytes) else os.fsdecode(short)
    except OSError as e:
        if isinstance(e.filename, bytes | str) and os.fsencode(e.filename).startswith(
            b"/proc/self/fd/"
        ):
            e.filename = path
        raise


@contextmanager
def anchored() -> Iterator[None]:
    """Keep anchors open for the block (a walk over one tree), closing them
    at its end (at the end of the outermost block, when nested). Inside,
    directories on the way of the paths reached must not be renamed."""
    global _scopes
    with _lock:
        _scopes += 1
    try:
        yield
    finally:
        with _lock:
            _scopes -= 1
            _evict()


def open_anchors() -> int:
    """How many anchors are open (0 outside every :func:`anchored` block)."""
    with _lock:
        return len(_anchors)


def open_fd(path: bytes | str, flags: int, mode: int = 0o777) -> int:
    """``os.open`` of ``path``, however long. Raises OSError."""
    if len(path) <= LIMIT:  # the usual case, without a context manager's cost
        return os.open(path, flags, mode)
    with reach(os.fsencode(path)) as short:
        return os.open(short, flags, mode)


def lstat(path: bytes | str) -> os.stat_result:
    """``os.lstat`` of ``path``, however long. Raises OSError."""
    if len(path) <= LIMIT:
        return os.lstat(path)
    with reach(os.fsencode(path)) as short:
        return os.lstat(short)


def lexists(path: bytes | str) -> bool:
    """``os.path.lexists`` of ``path``, however long."""
    try:
        lstat(path)
    except OSError:
        return False
    return True
