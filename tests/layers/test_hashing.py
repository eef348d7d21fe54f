"""snapws.layers.hashing: the one hashing pool (layer scans and verify):
hashes in input order, counts bytes, stops on a cancel, a deadline, an
error or an interrupt, with its workers joined before it returns or raises.

Endless input (``/dev/zero``) makes a pool that ignored a stop hang; each
such call runs in a helper thread given a minute, so that a hang fails the
test instead of stalling the suite (no speed is asserted)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snapws.ids import ContentHash
from snapws.layers import hashing
from snapws.layers.hashing import HashPool, HashProgress, HashRun, hash_file, hash_files

ENDLESS = b"/dev/zero"
LIVENESS = 60.0  # seconds a stopped pool gets to return before the test calls it hung


def make_files(root: Path, n: int, size: Callable[[int], int] = lambda i: 100 + i) -> list[bytes]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"f{i:05}"
        p.write_bytes(bytes([i % 251]) * size(i))
        out.append(os.fsencode(p))
    return out


def hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("snapws-hash-")]


@pytest.fixture(autouse=True)
def no_workers_left() -> Iterator[None]:
    assert hash_threads() == []
    yield
    assert hash_threads() == [], "the pool left worker threads running"


def within_a_minute(fn: Callable[[], HashRun]) -> HashRun | BaseException:
    """``fn()`` in a helper thread; what it returned or raised. Fails the
    test if it has not returned after :data:`LIVENESS` seconds."""
    box: list[HashRun | BaseException] = []

    def call() -> None:
        try:
            box.append(fn())
        except BaseException as e:
            box.append(e)

    t = threading.Thread(target=call)
    t.start()
    t.join(LIVENESS)
    assert not t.is_alive(), "the pool did not stop"
    return box[0]


# ---- results ------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_hashes_in_input_order(tmp_path: Path, threads: int) -> None:
    paths = make_files(tmp_path, 300)
    got = hash_files(paths, threads)
    assert got == [hash_file(p) for p in paths]
    assert got[7] == ContentHash.of(bytes([7]) * 107)


def test_no_files(tmp_path: Path) -> None:
    seen: list[HashProgress] = []
    run = HashPool(4, seen.append).hash([], [])
    assert run.outcomes == [] and run.complete
    assert seen[-1] == HashProgress(0, 0, 0, 0)


# ---- byte counts and progress --------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 3])
def test_progress_counts_files_and_bytes(tmp_path: Path, threads: int) -> None:
    paths = make_files(tmp_path, 400, size=lambda i: 1000 * (i % 7))
    sizes = [os.lstat(p).st_size for p in paths]
    seen: list[HashProgress] = []
    run = HashPool(threads, seen.append).hash(paths, sizes)
    assert run.complete and run.files_done == 400 and run.bytes_done == sum(sizes)
    assert seen[0] == HashProgress(0, 400, 0, sum(sizes))
    assert seen[-1] == HashProgress(400, 400, sum(sizes), sum(sizes))
    files = [p.files_done for p in seen]
    done = [p.bytes_done for p in seen]
    assert files == sorted(files) and done == sorted(done)
    assert len(set(files)) > 2  # reported between batches, not only at the ends


def test_bytes_read_are_counted_not_the_sizes_given(tmp_path: Path) -> None:
    (p,) = make_files(tmp_path, 1, size=lambda i: 5000)
    run = HashPool(2).hash([p], [10])  # the file grew since the caller's stat
    assert run.bytes_done == 5000 and run.outcomes == [hash_file(p)]


def test_files_progress_of_hash_files(tmp_path: Path) -> None:
    paths = make_files(tmp_path, 600)
    seen: list[int] = []
    hash_files(paths, 4, seen.append)
    assert seen[0] == 0 and seen[-1] == 600 and seen == sorted(set(seen))


def test_batches_cover_every_file_once_and_split_by_bytes() -> None:
    sizes = [1, 2, hashing.BATCH_BYTES, 3] + [1] * 600
    batches = hashing._batches(len(sizes), sizes, threads=2)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert [2] in batches  # the large file is alone
    assert max(len(b) for b in batches) <= hashing.BATCH_FILES


# ---- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
def test_an_unreadable_file_raises(tmp_path: Path, threads: int) -> None:
    paths = make_files(tmp_path, 200)
    paths.insert(150, os.fsencode(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError):
        hash_files(paths, threads)


@pytest.mark.parametrize("threads", [1, 4])
def test_kept_errors_are_outcomes(tmp_path: Path, threads: int) -> None:
    paths = make_files(tmp_path, 200)
    paths.insert(150, os.fsencode(tmp_path / "gone"))
    paths.insert(20, os.fsencode(tmp_path))  # a directory: EISDIR on read
    run = HashPool(threads).hash(paths, keep_errors=True)
    assert run.complete
    assert isinstance(run.outcomes[151], FileNotFoundError)
    assert isinstance(run.outcomes[20], IsADirectoryError)
    good = [i for i in range(len(paths)) if i not in (20, 151)]
    assert all(run.outcomes[i] == hash_file(paths[i]) for i in good)


def test_a_failing_worker_stops_the_others_and_its_error_is_raised(tmp_path: Path) -> None:
    # endless files, and one whose name is not a path: a TypeError in a
    # worker, not an OSError, raised even when errors are kept
    paths: list[bytes] = [ENDLESS] * 8
    paths.insert(3, 42)  # type: ignore[arg-type]
    sizes = [hashing.BATCH_BYTES] * len(paths)  # one file a batch
    got = within_a_minute(lambda: HashPool(4).hash(paths, sizes, keep_errors=True))
    assert isinstance(got, TypeError)


def test_an_error_in_progress_stops_the_workers(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    def progress(p: HashProgress) -> None:
        if p.bytes_done > 0:
            raise Boom

    sizes = [hashing.BATCH_BYTES] * 4
    got = within_a_minute(lambda: HashPool(2, progress).hash([ENDLESS] * 4, sizes))
    assert isinstance(got, Boom)


# ---- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [2, 4])
def test_cancel_stops_endless_reads(threads: int) -> None:
    seen: list[HashProgress] = []
    pool = HashPool(threads, None)

    def progress(p: HashProgress) -> None:
        seen.append(p)
        if p.bytes_done >= 8 * hashing.CHUNK:
            pool.cancel()

    pool.progress = progress
    sizes = [hashing.BATCH_BYTES] * 6
    got = within_a_minute(lambda: pool.hash([ENDLESS] * 6, sizes))
    assert isinstance(got, HashRun)
    assert not got.complete and got.files_done == 0 and got.outcomes == [None] * 6
    assert got.bytes_done >= 8 * hashing.CHUNK  # partial reads are counted
    assert pool.cancelled


def test_cancel_from_another_thread_stops_the_callers_own_reads(tmp_path: Path) -> None:
    done = make_files(tmp_path, 3)
    shared = threading.Event()
    pool = HashPool(1, cancel=shared)  # one thread: the caller's
    threading.Timer(0.3, shared.set).start()
    got = within_a_minute(lambda: pool.hash([*done, ENDLESS, *done]))
    assert isinstance(got, HashRun) and not got.complete
    assert got.files_done <= 3 and got.outcomes[3:] == [None] * 4
    hashed = got.outcomes[: got.files_done]
    assert hashed == [hash_file(p) for p in done[: got.files_done]]


def test_a_cancelled_pool_hashes_nothing_more(tmp_path: Path) -> None:
    pool = HashPool(4)
    pool.cancel()
    run = pool.hash(make_files(tmp_path, 100))
    assert run.files_done == 0 and run.bytes_done == 0 and not run.complete


@pytest.mark.parametrize("threads", [1, 3])
def test_a_passed_deadline_stops_it(tmp_path: Path, threads: int) -> None:
    paths = [ENDLESS] * 5
    sizes = [hashing.BATCH_BYTES] * 5
    deadline = time.monotonic() + 0.3
    got = within_a_minute(lambda: HashPool(threads).hash(paths, sizes, deadline=deadline))
    assert isinstance(got, HashRun) and not got.complete
    run = HashPool(threads).hash(make_files(tmp_path, 50), deadline=time.monotonic() - 1)
    assert run.files_done == 0 and not run.complete


def test_keyboard_interrupt_joins_the_workers_then_propagates() -> None:
    # a real SIGINT, delivered to the main thread while it waits for workers
    assert threading.current_thread() is threading.main_thread()
    pool = HashPool(3)
    sizes = [hashing.BATCH_BYTES] * 6
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.hash([ENDLESS] * 6, sizes)
    finally:
        timer.cancel()
    # the fixture checks that no worker outlived the call


def test_keyboard_interrupt_in_progress_is_raised_after_the_join() -> None:
    alive_at_raise: list[int] = []

    def progress(p: HashProgress) -> None:
        if p.bytes_done > 0:
            raise KeyboardInterrupt

    def call() -> HashRun:
        try:
            return HashPool(3, progress).hash([ENDLESS] * 3, [hashing.BATCH_BYTES] * 3)
        finally:
            alive_at_raise.append(len(hash_threads()))

    got = within_a_minute(call)
    assert isinstance(got, KeyboardInterrupt)
    assert alive_at_raise == [0]
