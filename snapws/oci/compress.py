"""Layer compression: reproducible gzip, and zstd where ``zstandard`` is installed.

gzip output is byte-for-byte reproducible: a fixed 10-byte header (no name,
mtime 0, OS "unknown"), raw deflate at a fixed level, CRC-32 and size.
zstd needs the optional ``zstandard`` package (``pip install 'snapws[zstd]'``):
the standard library has no zstd before Python 3.14. Reading detects the
format from the first bytes (gzip, zstd, or a plain tar), whatever the media
type claims.
"""

from __future__ import annotations

import gzip
import os
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import BinaryIO, Protocol

from snapws.errors import BadImageError, UnsupportedError

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


def _deflate_block(block: bytes, zdict: bytes, final: bool) -> bytes:
    """Raw deflate of one block, primed with the 32 KiB before it, ending
    byte-aligned (sync flush) or with the final block."""
    if zdict:
        c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 8)
    return c.compress(block) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class _Gzip:
    """One gzip member with a fixed header, its deflate stream made of
    independent 1 MiB blocks (as pigz does: each primed with the 32 KiB
    before it) compressed in parallel. Block boundaries are fixed, so the
    bytes do not depend on the number of threads: reproducible."""

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


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class DecompressedReader:
    """``read(n)`` over the decompressed bytes of a raw stream, the format
    found by its magic bytes; errors of the codec become BadImageError."""

    def __init__(self, raw: BinaryIO, what: str) -> None:
        self.what = what
        head = raw.read(4)
        self._raw = raw
        self.format = NONE
        stream: _Reader
        if head.startswith(GZIP_MAGIC):
            self.format = GZIP
            stream = gzip.GzipFile(fileobj=_Prepend(head, raw), mode="rb")  # type: ignore[call-overload]
        elif head.startswith(ZSTD_MAGIC):
            self.format = ZSTD
            z = zstd_module()
            stream = z.ZstdDecompressor().stream_reader(
                _Prepend(head, raw), read_across_frames=True, read_size=1 << 17
            )
        else:
            stream = _Prepend(head, raw)
        self._stream = stream

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end). Raises BadImageError."""
        try:
            out = self._stream.read(n)
            while 0 < len(out) < n:
                more = self._stream.read(n - len(out))
                if not more:
                    break
                out += more
            return out
        except (EOFError, OSError, zlib.error) as e:
            raise BadImageError(f"{self.what}: corrupt or truncated {self.format} data: {e}") from e
        except Exception as e:  # zstandard.ZstdError
            if type(e).__name__ == "ZstdError":
                raise BadImageError(f"{self.what}: corrupt zstd data: {e}") from e
            raise


class _Prepend:
    """A stream with some bytes already read put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            if n < 0:
                out = self._head + self._raw.read()
                self._head = b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            if len(out) < n:
                out += self._raw.read(n - len(out))
            return out
        return self._raw.read(n)

    def readable(self) -> bool:
        return True


class Prefetcher:
    """``read(n)`` over ``source`` read ahead by a thread, in chunks (up to
    ``depth`` of them waiting), so decompressing and hashing a layer runs
    beside unpacking it. An error of ``source`` is raised by ``read``.
    :meth:`close` stops the thread (call it in a ``finally``)."""

    def __init__(self, source: Callable[[int], bytes], chunk: int = 1 << 20, depth: int = 8):
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(source, chunk), daemon=True)
        self._thread.start()

    def _run(self, source: Callable[[int], bytes], chunk: int) -> None:
        try:
            while not self._stop.is_set():
                data = source(chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as e:  # handed to the reader
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end)."""
        out = []
        need = n
        while need > 0:
            if self._pos >= len(self._buf):
                if self._eof:
                    break
                item = self._q.get()
                if isinstance(item, BaseException):
                    self._eof = True
                    raise item
                if not item:
                    self._eof = True
                    break
                self._buf, self._pos = item, 0
            take = self._buf[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            out.append(take)
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
