"""A blob read while it downloads (:meth:`RegistryRemote.stream_blob`).

A thread fetches the blob into a private file (resuming by Range after a
failure, as a whole download does) while the reader consumes the bytes that
have arrived, so unpacking a layer overlaps its transfer. The blob is
verified (size, sha256) by the fetching thread at its end: the reader's last
:meth:`StreamingBlob.read` (the one that would return ``b""``) raises the
RemoteError of a blob that does not match, so a reader that reads to the
end has read verified bytes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from snapws.ids import BlobDigest


class DownloadStopped(Exception):
    """The reader closed the blob: the fetching thread ends quietly."""


class StreamingBlob:
    """A blob being downloaded into the private file ``path`` (an open
    read-write ``fd``, owned from now on); ``verified_digest``: its bytes
    are checked against this digest before :meth:`read` reports the end.
    ``path`` names the file until :meth:`close`, which deletes it (a store
    on the same filesystem may hardlink it meanwhile)."""

    def __init__(self, fd: int, path: Path, digest: BlobDigest) -> None:
        self.path = path
        self.verified_digest = digest
        self.stop = threading.Event()  # set by close: the fetcher gives up
        self._fd = fd
        self._cond = threading.Condition()
        self._written = 0
        self._pos = 0
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
        view = memoryview(data)
        at = self._written
        while view:
            n = os.pwrite(self._fd, view, at)
            at += n
            view = view[n:]
        with self._cond:
            self._written = at
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
                while self._written <= self._pos and not self._done:
                    self._cond.wait()
                avail = self._written - self._pos
                if avail <= 0:
                    if self._error is not None:
                        raise self._error
                    break
            data = os.pread(self._fd, min(want, avail, 16 << 20), self._pos)
            self._pos += len(data)
            want -= len(data)
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Stop the download (if it still runs), delete the file."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> StreamingBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
