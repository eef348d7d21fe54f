"""A command's standard output and error, guarded: a failed write to them
is reported as what it is (:class:`~snapws.errors.OutputError`, exit 74),
never taken for an error of the store.

Python raises the same OSError, without a file name, for a full disk under
the store as for ``snapws log >/dev/full``; so the streams' errors are
tagged where they enter: :func:`guarded` puts each stream's writes through
a layer that turns an OSError into an OutputError naming the stream. A
closed pipe (EPIPE, BrokenPipeError) is left as it is: the reader went away,
which is no error (snapws.cli.main ends by SIGPIPE, as git).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, TextIO

from snapws.errors import OutputError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["flush", "guarded"]


class _GuardedBuffer(io.BufferedIOBase):
    """The binary layer of a guarded text stream: writes and flushes go to
    ``target`` (the original stream's binary layer, which keeps buffering as
    it did). After a failure, its descriptor is pointed at /dev/null (what
    ``target`` still holds must not fail again at exit) and later writes are
    dropped: the command is failing, and nothing more can be shown there."""

    def __init__(self, target: IO[bytes], stream: str) -> None:
        super().__init__()
        self._target = target
        self._stream = stream
        self.failed = False

    @property
    def name(self) -> object:
        return getattr(self._target, "name", self._stream)

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        if self.failed:
            return view.nbytes
        done = 0
        with self._tagged():
            while done < view.nbytes:  # an unbuffered target (python -u) may write part
                n = self._target.write(view[done:])
                if not n:
                    raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
                done += n
        return view.nbytes

    def flush(self) -> None:
        if not self.failed and not self.closed:
            with self._tagged():
                self._target.flush()

    def fileno(self) -> int:
        return self._target.fileno()

    def isatty(self) -> bool:
        return self._target.isatty()

    @contextlib.contextmanager
    def _tagged(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as e:
            self.failed = True
            error = OutputError(
                f"cannot write to {self._stream}: {e.strerror or e}",
                hint=_hint(self._stream, self._where()),
            )
            self._point_at_devnull()
            raise error from e

    def _where(self) -> str | None:
        try:
            return os.readlink(f"/proc/self/fd/{self._target.fileno()}")
        except (OSError, ValueError):
            return None

    def _point_at_devnull(self) -> None:
        try:
            fd = self._target.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):  # no descriptor (click's test runner)
            return
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
        os.close(null)


def _hint(stream: str, where: str | None) -> str:
    goes = f"{stream} is {where}" if where else f"{stream} goes to a full or failing file"
    return (
        f"{goes}: free space there, or send the output elsewhere, then run the command "
        "again; this is no error of the store"
    )


def _guard(stream: TextIO, name: str) -> TextIO:
    """A text stream writing through ``stream``'s binary layer, guarded;
    ``stream`` itself when it has no binary layer."""
    target = getattr(stream, "buffer", None)
    if target is None:  # none (a StringIO), or None for a stream closed at start
        return stream
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
    return io.TextIOWrapper(
        _GuardedBuffer(target, name),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=bool(getattr(stream, "line_buffering", False)),
        write_through=bool(getattr(stream, "write_through", False)),
    )


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Within: ``sys.stdout`` and ``sys.stderr`` raise OutputError for a
    failed write (BrokenPipeError for a closed pipe). After, the original
    streams are back (what was written is passed on to them)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _guard(saved[0], "standard output")
    sys.stderr = _guard(saved[1], "standard error")
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OutputError, OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = saved


def flush() -> None:
    """Flush standard output and error: OutputError if that fails (a closed
    pipe is no failure here: the command reported it already)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
