"""Layer compression: reproducible gzip, and zstd where ``zstandard`` is installed.

gzip output is byte-for-byte reproducible: a fixed 10-byte header (no name,
mtime 0, OS "unknown"), raw deflate at a fixed level (segments whose bytes
other than runs of zeros would not shrink are stored with those runs
run-length coded, segments only runs shrink are run-length coded: the
choice depends on the bytes only), CRC-32 and size.
zstd needs the optional ``zstandard`` package (``pip install
'snapws[zstd]'``): the standard library has no zstd before Python 3.14.
Reading (:mod:`snapws.oci.blobstream`) detects the format from the first
bytes (gzip, zstd, or a plain tar), whatever the media type claims.
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Protocol

from snapws.errors import UnsupportedError

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"
COMPRESSIONS = (GZIP, ZSTD)
GZIP_LEVEL = 6  # zlib's default, as docker and containerd use
ZSTD_LEVEL = 3  # zstd's default

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def zstd_module() -> ModuleType:
    """The ``zstandard`` module. Raises UnsupportedError if it is missing."""
    try:
        import zstandard
    except ImportError:
        raise UnsupportedError(
            "zstd needs the Python package zstandard, which is not installed",
            hint="pip install 'snapws[zstd]' (or use --compression gzip)",
        ) from None
    return zstandard


SEGMENT = 128 << 10  # deflate chooses its method per segment, as pigz's blocks
_PROBE = 2048  # bytes of each of three samples a segment's choice looks at
_STORE = 0.97  # samples (runs of zeros left out) that shrink less than this are stored
_RUNS = 0.05  # run-length coding within this of LZ77 on the samples: runs suffice
_MIN_RUN = 64  # zero bytes in a row that a stored segment codes as a run (tar padding, holes)
_NONZERO = re.compile(rb"[^\0]")
_STORED_MAX = 0xFFFF  # bytes of one stored deflate block

_SPARSE, _RUNLENGTH, _DEFLATE = 0, 1, 2


def _method(seg: bytes) -> int:
    """How to deflate ``seg``, from three 2 KiB samples (start, middle,
    end): stored, runs of zeros run-length coded (:func:`_sparse`), when
    nothing else in the samples shrinks (random or already compressed data,
    with tar headers and padding: nearly free to write and to read),
    run-length coding when runs are all that shrink it, else LZ77 at
    :data:`GZIP_LEVEL`. A function of the bytes only: reproducible."""
    n = len(seg)
    if n < 4 * _PROBE:
        return _DEFLATE
    mid = n // 2 - _PROBE // 2
    sample = seg[:_PROBE] + seg[mid : mid + _PROBE] + seg[n - _PROBE :]
    dense = b"".join(sample[a:b] for a, b in _between_zero_runs(sample))
    if len(dense) >= _PROBE and len(_raw_deflate(dense, 1, zlib.Z_RLE)) > _STORE * len(dense):
        return _SPARSE
    runs = len(_raw_deflate(sample, 1, zlib.Z_RLE)) / len(sample)
    lz = len(_raw_deflate(sample, 1, zlib.Z_DEFAULT_STRATEGY)) / len(sample)
    return _RUNLENGTH if runs <= lz + _RUNS else _DEFLATE


@functools.lru_cache(maxsize=4096)
def _zeros_deflated(n: int) -> bytes:
    """``n`` zero bytes as raw deflate that needs no window (a literal,
    then matches one byte back), ending byte-aligned (sync flush)."""
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
    return c.compress(bytes(n)) + c.flush(zlib.Z_SYNC_FLUSH)


def _sparse(seg: bytes, final: bool) -> bytes:
    """Raw deflate of ``seg`` as stored blocks, its runs of 64 or more zero
    bytes run-length coded, ending byte-aligned (with the final block if
    ``final``). Written by hand (no compressor state to set up): reading it
    back is a copy, save the runs."""
    out: list[bytes] = []
    pos = 0
    for start, end in _between_zero_runs(seg):
        if start > pos:
            out.append(_zeros_deflated(start - pos))
        _stored(seg, start, end, out)
        pos = end
    if pos < len(seg):
        out.append(_zeros_deflated(len(seg) - pos))
    if final:
        out.append(b"\x01\x00\x00\xff\xff")  # an empty final stored block
    return b"".join(out)


def _between_zero_runs(data: bytes) -> Iterator[tuple[int, int]]:
    """The (start, end) of each stretch of ``data`` between its runs of
    :data:`_MIN_RUN` or more zero bytes, in order (empty stretches left out)."""
    zeros = bytes(_MIN_RUN)
    pos = 0
    while pos < len(data):
        run = data.find(zeros, pos)
        if run < 0:
            yield pos, len(data)
            return
        if run > pos:
            yield pos, run
        after = _NONZERO.search(data, run + _MIN_RUN)
        if after is None:
            return
        pos = after.start()


def _stored(seg: bytes, start: int, end: int, out: list[bytes]) -> None:
    """Append ``seg[start:end]`` as stored blocks (byte-aligned: the header
    bits BFINAL=0, BTYPE=00 fill a byte, then LEN and its complement)."""
    for i in range(start, end, _STORED_MAX):
        n = min(_STORED_MAX, end - i)
        out.append(b"\x00" + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little"))
        out.append(seg[i : i + n])


def _raw_deflate(data: bytes, level: int, strategy: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
    return c.compress(data) + c.flush()


def _deflate_block(block: bytes, zdict: bytes, final: bool) -> bytes:
    """Raw deflate of one block, in segments of :data:`SEGMENT` bytes, each
    by its :func:`_method`, primed with the 32 KiB before it, and ending
    byte-aligned (sync flush), the block's last one with the final block
    if ``final``."""
    out = []
    history = zdict + block  # the window of each segment lies in it
    base = len(zdict)
    starts = range(0, len(block), SEGMENT) if block else range(1)
    for start in starts:
        seg = block[start : start + SEGMENT]
        last = start + SEGMENT >= len(block)
        method = _method(seg)
        if method == _SPARSE:
            out.append(_sparse(seg, final and last))
            continue
        window = history[max(0, base + start - 32768) : base + start]
        strategy = zlib.Z_RLE if method == _RUNLENGTH else zlib.Z_DEFAULT_STRATEGY
        if window:
            c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 8, strategy, window)
        else:
            c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 8, strategy)
        out.append(c.compress(seg))
        out.append(c.flush(zlib.Z_FINISH if final and last else zlib.Z_SYNC_FLUSH))
    return b"".join(out)


class _Gzip:
    """One gzip member with a fixed header, its deflate stream made of
    1 MiB blocks compressed in parallel, each in 128 KiB segments (as pigz
    does: each primed with the 32 KiB before it; incompressible ones
    stored but for their runs of zeros, those only runs shrink run-length
    coded). Boundaries are
    fixed, so the bytes do not depend on the number of threads:
    reproducible."""

    BLOCK = 1 << 20

    def __init__(self, threads: int) -> None:
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self._threads) if self._threads > 1 else None
        self._buf = bytearray()
        self._window = b""  # the last 32 KiB handed to a block
        self._pending: deque[Future[bytes]] = deque()
        self._crc = 0
        self._size = 0
        self._head = _GZIP_HEADER

    def _submit(self, block: bytes, final: bool) -> None:
        zdict = self._window
        self._window = (self._window + block)[-32768:]
        fut: Future[bytes]
        if self._pool is not None:
            fut = self._pool.submit(_deflate_block, block, zdict, final)
        else:
            fut = Future()
            fut.set_result(_deflate_block(block, zdict, final))
        self._pending.append(fut)

    def _collect(self, keep: int) -> bytes:
        out = [self._head]
        self._head = b""
        while self._pending and (len(self._pending) > keep or self._pending[0].done()):
            out.append(self._pending.popleft().result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        while len(self._buf) >= self.BLOCK:
            self._submit(bytes(self._buf[: self.BLOCK]), False)
            del self._buf[: self.BLOCK]
        return self._collect(2 * self._threads)

    def flush(self) -> bytes:
        self._submit(bytes(self._buf), True)
        self._buf.clear()
        try:
            body = self._collect(0)
        finally:
            if self._pool is not None:
                self._pool.shutdown()
        trailer = self._crc.to_bytes(4, "little") + (self._size & 0xFFFFFFFF).to_bytes(4, "little")
        return body + trailer


class _Zstd:
    def __init__(self, threads: int) -> None:
        z = zstd_module()
        # threads >= 1: zstd's multi-threaded format, the same bytes for any
        # number of threads (0 would be the single-threaded one, which differs)
        self._c = z.ZstdCompressor(
            level=ZSTD_LEVEL, write_checksum=True, threads=max(1, threads)
        ).compressobj()

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._c.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._c.flush()
        return out


def compressor(name: str, threads: int | None = None) -> Compressor:
    """A fresh compressor for ``name`` (``gzip`` or ``zstd``) using
    ``threads`` (default: one per CPU); the output does not depend on it.
    Call ``flush`` once at the end. Raises UnsupportedError (zstd without
    zstandard), ValueError (unknown name)."""
    n = threads if threads is not None else (os.cpu_count() or 1)
    if name == GZIP:
        return _Gzip(n)
    if name == ZSTD:
        return _Zstd(n)
    raise ValueError(f"unknown compression {name!r}")
