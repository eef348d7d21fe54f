"""A blob read while it downloads (:meth:`RegistryRemote.stream_blob`).

A thread fetches the blob (resuming by Range after a failure, as a whole
download does) and hands its bytes over in memory to the reader, which
consumes them as they arrive, so unpacking a layer overlaps its transfer.
Nothing is written to disk: at most :data:`BUFFER` bytes wait for the
reader, and the fetching thread waits (and with it the connection) while
they do. The blob is verified (size, sha256) by the fetching thread at its
end: the reader's last :meth:`StreamingBlob.read` (the one that would
return ``b""``) raises the RemoteError of a blob that does not match, so a
reader that reads to the end has read verified bytes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from snapws.ids import BlobDigest

#: bytes that arrived and wait for the reader, at most (a little more by one block)
BUFFER = 32 << 20


class DownloadStopped(Exception):
    """The reader closed the blob: the fetching thread ends quietly."""


class StreamingBlob:
    """A blob being downloaded; ``verified_digest``: its bytes are checked
    against this digest before :meth:`read` reports the end."""

    def __init__(self, digest: BlobDigest, buffer: int = BUFFER) -> None:
        self.verified_digest = digest
        self.stop = threading.Event()  # set by close: the fetcher gives up
        self._limit = buffer
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._waiting = 0  # bytes in _chunks
        self._answered = False
        self._done = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.closed = False

    # ---- the fetching thread ---------------------------------------------------------
    def start(self, fetch: Callable[[], None]) -> None:
        """Run ``fetch`` (which calls :meth:`answered`, then :meth:`append`
        with the bytes in order, and raises on failure) in a thread; return
        once the remote has answered with the blob. Raises what ``fetch``
        raised before that (a missing blob, refused credentials), after
        closing this blob."""

        def run() -> None:
            error: BaseException | None = None
            try:
                fetch()
            except DownloadStopped:
                pass
            except BaseException as e:  # the reader raises it
                error = e
            with self._cond:
                self._done = True
                self._error = error
                self._cond.notify_all()

        self._thread = threading.Thread(target=run, name="blob-download", daemon=True)
        self._thread.start()
        with self._cond:
            while not (self._answered or self._done):
                self._cond.wait()
            error = self._error if not self._answered else None
        if error is not None:
            self.close()
            raise error

    def answered(self) -> None:
        with self._cond:
            self._answered = True
            self._cond.notify_all()

    def append(self, data: bytes) -> None:
        """Hand ``data`` to the reader, once fewer than the buffer's bytes
        wait. Raises DownloadStopped when the reader closed the blob."""
        if not data:
            return
        with self._cond:
            while self._waiting >= self._limit and not self.stop.is_set():
                self._cond.wait()
            if self.stop.is_set():
                raise DownloadStopped
            self._chunks.append(bytes(data))
            self._waiting += len(data)
            self._cond.notify_all()

    # ---- the reader --------------------------------------------------------------------
    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (all the rest if ``n`` < 0), waiting for them;
        fewer only at the end, which is reported only once the blob is
        verified. Raises RemoteError (a failed or mismatching download)."""
        parts = []
        want = n if n >= 0 else 1 << 62
        while want > 0:
            with self._cond:
                while not self._chunks and not self._done:
                    self._cond.wait()
                if not self._chunks:
                    if self._error is not None:
                        raise self._error
                    break
                chunk = self._chunks[0]
                if len(chunk) <= want:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = chunk[want:]
                    chunk = chunk[:want]
                self._waiting -= len(chunk)
                self._cond.notify_all()
            want -= len(chunk)
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Stop the download (if it still runs) and drop what waits."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._chunks.clear()

    def __enter__(self) -> StreamingBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
