"""XXH3-128 content hashing of files, and the one pool that hashes many.

:class:`HashPool` serves every caller that hashes files in bulk: a layer's
scan (:func:`snapws.layers.scan.entries_of`, through :func:`hash_files`) and
``snapws verify``. It hashes in worker threads, in batches of files (one task
per small file costs more in thread hand-offs than hashing it), counts the
bytes it reads, reports progress from the calling thread, and stops promptly
(between two reads of :data:`CHUNK` bytes) when cancelled, when a deadline
passes, when a file fails, or when the caller is interrupted
(KeyboardInterrupt): the workers are joined before it returns or raises.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import xxhash

from snapws.deeppath import anchored, open_fd
from snapws.ids import ContentHash

CHUNK = 1 << 20
DEFAULT_THREADS = 8
#: A batch (one task of a worker) holds up to this many files or bytes.
BATCH_FILES = 256
BATCH_BYTES = 16 << 20
#: Fewer files than this, together smaller than a batch, are hashed in the
#: caller's thread: starting workers would cost more than it saves.
FEW_FILES = 64
#: Seconds between progress reports while workers are busy.
TICK = 0.2


def hash_file(path: bytes | str) -> ContentHash:
    """XXH3-128 of the bytes of the regular file at ``path`` (not followed if a
    symlink: callers pass regular files). Raises OSError."""
    h = xxhash.xxh3_128()
    fd = open_fd(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            buf = os.read(fd, CHUNK)
            if not buf:
                break
            h.update(buf)
    finally:
        os.close(fd)
    return ContentHash(h.hexdigest())


@dataclass(frozen=True, slots=True)
class HashProgress:
    """How far a :meth:`HashPool.hash` call is. ``bytes_total`` is the sum
    of the sizes the caller gave (0 if it gave none); ``bytes_done`` counts
    bytes read, files not finished included."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


HashProgressFn = Callable[[HashProgress], None]

#: What hashing one file gave: its hash, the OSError reading it raised (when
#: the caller keeps errors), or None when the pool stopped before its end.
Outcome = ContentHash | OSError | None


@dataclass(slots=True)
class HashRun:
    """The result of :meth:`HashPool.hash`: ``outcomes[i]`` is for the i-th
    path. ``complete`` is False when a cancel or the deadline stopped it."""

    outcomes: list[Outcome]
    files_done: int
    bytes_done: int

    @property
    def complete(self) -> bool:
        return self.files_done == len(self.outcomes)


class HashPool:
    """Hashes files in ``threads`` worker threads (in the caller's thread
    when ``threads`` <= 1 or the files are few and small).

    ``progress`` is called in the caller's thread: at the start, after each
    batch, every :data:`TICK` seconds while workers read, and at the end.
    ``cancel`` is the flag :meth:`cancel` sets (pass one to share it); once
    set, every later :meth:`hash` call stops at once. The pool holds no
    threads between calls."""

    def __init__(
        self,
        threads: int = DEFAULT_THREADS,
        progress: HashProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.threads = max(1, threads)
        self.progress = progress
        self._cancel = cancel if cancel is not None else threading.Event()

    def cancel(self) -> None:
        """Stop the running :meth:`hash` (its workers finish the chunk they
        read and quit). Safe from any thread and from a signal handler."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def hash(
        self,
        paths: Sequence[bytes],
        sizes: Sequence[int] | None = None,
        *,
        keep_errors: bool = False,
        deadline: float | None = None,
    ) -> HashRun:
        """Hash the regular files ``paths`` (``sizes``: their expected sizes,
        for byte progress and batching).

        ``keep_errors``: an OSError reading a file is its outcome; otherwise
        the first one stops the pool and is raised. ``deadline`` (a
        :func:`time.monotonic` reading) stops the pool like :meth:`cancel`.
        Any other exception of a worker, or of ``progress``, and a
        KeyboardInterrupt in the caller's thread stop the workers; it is
        raised once they are joined."""
        if sizes is not None and len(sizes) != len(paths):
            raise ValueError("paths and sizes differ in length")
        run = _Run(self, paths, sizes, keep_errors, deadline)
        with anchored():  # paths beyond PATH_MAX share their anchors
            return run.go()


def hash_files(
    paths: Sequence[bytes],
    threads: int = DEFAULT_THREADS,
    progress: Callable[[int], None] | None = None,
    sizes: Sequence[int] | None = None,
) -> list[ContentHash]:
    """Hash many files with a :class:`HashPool`; results in input order.
    Threads help on a cold cache (the design brief measured 7.0 s -> 2.4 s
    with 8 threads on 100,000 files). ``progress`` is called with the number
    of files finished so far. Raises the first OSError a file raised."""
    report = None
    if progress is not None:
        report = _files_only(progress)
    run = HashPool(threads, report).hash(paths, sizes)
    out: list[ContentHash] = []
    for outcome in run.outcomes:
        assert isinstance(outcome, ContentHash)  # no cancel, no deadline, errors raised
        out.append(outcome)
    return out


def _files_only(progress: Callable[[int], None]) -> HashProgressFn:
    last = -1

    def report(p: HashProgress) -> None:
        nonlocal last
        if p.files_done != last:
            last = p.files_done
            progress(p.files_done)

    return report


# ---- one call of HashPool.hash ------------------------------------------------------


class _Stopped(Exception):
    """Raised inside a worker when the run stops while it reads a file."""


_Batch = list[int]  # indices into the paths
_Done = tuple[_Batch, list[Outcome]]
_WORKER_EXIT = None  # what a worker puts on the queue last


class _Run:
    def __init__(
        self,
        pool: HashPool,
        paths: Sequence[bytes],
        sizes: Sequence[int] | None,
        keep_errors: bool,
        deadline: float | None,
    ) -> None:
        self.pool = pool
        self.paths = paths
        self.sizes = sizes
        self.keep_errors = keep_errors
        self.deadline = deadline
        self.halt = threading.Event()  # set when this run must stop (error, interrupt)
        self.outcomes: list[Outcome] = [None] * len(paths)
        self.files_done = 0
        self.bytes_done = 0
        self.bytes_total = sum(sizes) if sizes is not None else 0
        self.lock = threading.Lock()  # guards bytes_done and the batch iterator
        self.batches = _batches(len(paths), sizes, pool.threads)
        self.n_batches = len(self.batches)
        self.next_batch: Iterator[_Batch] = iter(self.batches)
        self.results: queue.SimpleQueue[_Done | BaseException | None] = queue.SimpleQueue()

    # -- shared by the workers and the caller's thread

    def stopping(self) -> bool:
        return (
            self.halt.is_set()
            or self.pool.cancelled
            or (self.deadline is not None and time.monotonic() >= self.deadline)
        )

    def hash_one(self, path: bytes) -> ContentHash:
        """XXH3-128 of ``path``, counting bytes. Raises OSError, _Stopped."""
        h = xxhash.xxh3_128()
        fd = open_fd(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while True:
                if self.stopping():
                    raise _Stopped
                buf = os.read(fd, CHUNK)
                if not buf:
                    break
                h.update(buf)
                with self.lock:
                    self.bytes_done += len(buf)
        finally:
            os.close(fd)
        return ContentHash(h.hexdigest())

    def hash_batch(self, batch: _Batch) -> list[Outcome]:
        """Outcomes of the files of ``batch``, in order, up to where the run
        stopped. Raises OSError (unless errors are kept)."""
        out: list[Outcome] = []
        for i in batch:
            if self.stopping():
                break
            try:
                out.append(self.hash_one(self.paths[i]))
            except _Stopped:
                break
            except OSError as e:
                if not self.keep_errors:
                    raise
                out.append(e)
        return out

    def take(self) -> _Batch | None:
        with self.lock:
            return next(self.next_batch, None)

    # -- the caller's thread

    def go(self) -> HashRun:
        self.tell()
        few = len(self.paths) < FEW_FILES and self.bytes_total < BATCH_BYTES
        if self.pool.threads <= 1 or self.n_batches <= 1 or few:
            self.inline()
        else:
            self.threaded()
        self.tell()
        return HashRun(self.outcomes, self.files_done, self.bytes_done)

    def settle(self, batch: _Batch, outs: list[Outcome]) -> None:
        for i, outcome in zip(batch, outs, strict=False):
            self.outcomes[i] = outcome
        self.files_done += len(outs)

    def tell(self) -> None:
        if self.pool.progress is not None:
            self.pool.progress(
                HashProgress(self.files_done, len(self.paths), self.bytes_done, self.bytes_total)
            )

    def inline(self) -> None:
        while not self.stopping():
            batch = self.take()
            if batch is None:
                return
            self.settle(batch, self.hash_batch(batch))
            self.tell()

    def threaded(self) -> None:
        n = min(self.pool.threads, self.n_batches)
        workers = [
            threading.Thread(target=self.work, name=f"snapws-hash-{k}", daemon=True)
            for k in range(n)
        ]
        failure: BaseException | None = None
        try:
            for w in workers:
                w.start()
            running = n
            while running:
                try:
                    item = self.results.get(timeout=TICK)
                except queue.Empty:
                    self.tell()
                    continue
                if item is _WORKER_EXIT:
                    running -= 1
                elif isinstance(item, BaseException):
                    failure = failure or item
                    self.halt.set()
                else:
                    self.settle(*item)
                    self.tell()
        except BaseException:
            self.halt.set()
            raise
        finally:
            for w in workers:
                if w.ident is not None:
                    w.join()
            while True:  # results that came in after an interrupt: keep them
                try:
                    item = self.results.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    self.settle(*item)
        if failure is not None:
            raise failure

    # -- a worker thread

    def work(self) -> None:
        try:
            while not self.stopping():
                batch = self.take()
                if batch is None:
                    break
                self.results.put((batch, self.hash_batch(batch)))
        except BaseException as e:  # handed to the caller's thread, raised there
            self.halt.set()
            self.results.put(e)
        finally:
            self.results.put(_WORKER_EXIT)


def _batches(n: int, sizes: Sequence[int] | None, threads: int) -> list[_Batch]:
    """Indices 0..n-1 in batches of at most :data:`BATCH_FILES` files
    (fewer when there are few files, so that every thread gets some) and
    :data:`BATCH_BYTES` bytes (a larger file makes a batch of its own)."""
    most = max(1, min(BATCH_FILES, -(-n // (threads * 4))))
    out: list[_Batch] = []
    batch: _Batch = []
    nbytes = 0
    for i in range(n):
        size = sizes[i] if sizes is not None else 0
        if batch and (len(batch) >= most or nbytes + size > BATCH_BYTES):
            out.append(batch)
            batch, nbytes = [], 0
        batch.append(i)
        nbytes += size
    if batch:
        out.append(batch)
    return out
