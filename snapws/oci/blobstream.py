"""Reading a layer blob for import: verified, decompressed and hashed
beside the unpacking.

One background thread feeds the thread that unpacks the tar
(:class:`LayerBlobStream`): it reads the raw blob in large chunks, counts
it and hashes it (sha256, checked against the descriptor at the end)
unless the remote verified it already, finds the format from the first bytes (gzip, zstd, or a plain
tar, whatever the media type claims), decompresses, and hashes the tar
(sha256: the image config's ``diff_id``).

hashlib, the inflater and zstandard release the GIL, so the unpacking
thread seldom waits: it only parses headers and writes files. (A second
stage thread, reading apart from decompressing, measured no faster: the
unpacking thread is the bottleneck.) Errors of the codecs become
BadImageError; any error of the background thread reaches the unpacking
thread through :meth:`LayerBlobStream.read`.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from snapws.errors import BadImageError
from snapws.ids import BlobDigest
from snapws.oci.compress import GZIP, GZIP_MAGIC, NONE, ZSTD, ZSTD_MAGIC, zstd_module
from snapws.oci.inflate import INFLATE_ERRORS, gzip_inflater

# Large chunks: each one costs the threads a few hand-overs of the GIL
# (reading, hashing, inflating, queueing), and while the unpacking thread
# runs Python, a thread that wants the GIL back waits up to the switch
# interval (5 ms) for it.
RAW_CHUNK = 4 << 20  # bytes of the blob read at once
OUT_CHUNK = 4 << 20  # decompressed bytes handed over at once (bounds memory)
DEPTH = 4  # decompressed chunks waiting for the unpacking thread


class _Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Stop(Exception):
    """The unpacking thread closed the stream: the background thread ends."""


class LayerBlobStream:
    """``read(n)`` over the decompressed tar of a layer blob (see the module
    docstring). ``raw`` is the blob, ``size`` its size from the descriptor
    (more bytes raise BadImageError), ``hash_raw`` False when the remote
    checked the digest already, ``progress(n)`` is called (from the background thread) with each
    chunk's size. Call :meth:`finish` once the tar and its trailer are
    read: it returns the digests; :meth:`close` (in a ``finally``) stops
    the thread."""

    def __init__(
        self,
        raw: _Source,
        what: str,
        size: int,
        *,
        hash_raw: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.what = what
        self.format = NONE
        self.raw_size = 0
        self._raw = raw
        self._progress = progress
        self._limit = size
        self._raw_hash = hashlib.sha256() if hash_raw else None
        self._diff = hashlib.sha256()
        self._stop = threading.Event()
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(DEPTH)
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="layer-blob", daemon=True)
        self._thread.start()

    def _bad(self, why: str) -> BadImageError:
        return BadImageError(f"{self.what}: {why}")

    # ---- the background thread -----------------------------------------------------------
    def _put(self, item: bytes | BaseException) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _next_raw(self) -> bytes:
        """The next chunk of the blob (b"" at its end), counted, hashed."""
        if self._stop.is_set():
            raise _Stop
        data = self._raw.read(RAW_CHUNK)
        if data:
            self.raw_size += len(data)
            if self.raw_size > self._limit:
                raise self._bad(
                    f"the blob is longer than the {self._limit} bytes its descriptor says"
                )
            if self._raw_hash is not None:
                self._raw_hash.update(data)
            if self._progress is not None:
                self._progress(len(data))
        return data

    def _emit(self, data: bytes) -> None:
        if data:
            self._diff.update(data)
            self._put(data)

    def _run(self) -> None:
        try:
            head = self._next_raw()
            while head and len(head) < 4:
                more = self._next_raw()
                if not more:
                    break
                head += more
            if head.startswith(GZIP_MAGIC):
                self.format = GZIP
                self._gunzip(head)
            elif head.startswith(ZSTD_MAGIC):
                self.format = ZSTD
                self._unzstd(head)
            else:
                data = head
                while data:
                    self._emit(data)
                    data = self._next_raw()
            self._put(b"")
        except _Stop:
            return
        except INFLATE_ERRORS as e:
            self._hand_on(self._bad(f"corrupt gzip data: {e}"))
        except BaseException as e:  # handed to the unpacking thread
            if type(e).__name__ == "ZstdError":
                e = self._bad(f"corrupt zstd data: {e}")
            self._hand_on(e)

    def _hand_on(self, e: BaseException) -> None:
        with contextlib.suppress(_Stop):
            self._put(e)

    def _gunzip(self, data: bytes) -> None:
        """Gzip members one after the other (zero bytes may pad the end, as
        gzip(1) allows); the inflater (:mod:`snapws.oci.inflate`) checks each
        member's header, CRC-32 and size."""
        d = gzip_inflater()
        while True:
            while data:
                if d.eof:  # a member ended: zero padding, or the next member
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    d = gzip_inflater()
                self._emit(d.decompress(data, OUT_CHUNK))
                data = d.unused_data if d.eof else d.unconsumed_tail
            data = self._next_raw()
            if not data:
                while not d.eof:  # output zlib still holds
                    out = d.decompress(b"", OUT_CHUNK)
                    if not out:
                        raise self._bad("truncated gzip data (the stream ends early)")
                    self._emit(out)
                return

    def _unzstd(self, head: bytes) -> None:
        z = zstd_module()
        blob = self

        class Feed:
            def __init__(self) -> None:
                self.pending = head

            def read(self, n: int = -1, /) -> bytes:
                if self.pending:
                    out, self.pending = self.pending, b""
                    return out
                return blob._next_raw()

        reader = z.ZstdDecompressor().stream_reader(
            Feed(), read_across_frames=True, read_size=RAW_CHUNK
        )
        while data := reader.read(OUT_CHUNK):
            self._emit(data)

    # ---- the unpacking thread's side -------------------------------------------------
    def _get(self) -> bytes:
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes (fewer only at the end). Raises
        BadImageError, OSError (reading the blob), what
        the blob's reader raises."""
        if self._pos + n <= len(self._buf):  # the common case: one slice
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out
        parts = []
        need = n
        while need > 0:
            if self._pos >= len(self._buf):
                if self._eof:
                    break
                item = self._get()
                if not item:
                    self._eof = True
                    break
                self._buf, self._pos = item, 0
            take = self._buf[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            parts.append(take)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> tuple[BlobDigest | None, BlobDigest]:
        """After :meth:`read` returned b"": wait for the background thread
        and return the blob's sha256 (None when not hashed here) and the
        tar's (``diff_id``). Raises BadImageError when
        the stream was not read to its end."""
        if not self._eof:
            raise self._bad("the decompressed stream was not read to its end")
        self._thread.join()
        raw = BlobDigest(self._raw_hash.hexdigest()) if self._raw_hash is not None else None
        return raw, BlobDigest(self._diff.hexdigest())

    def close(self) -> None:
        """Stop the background thread (idempotent)."""
        self._stop.set()
        self._thread.join()
