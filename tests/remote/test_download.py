"""StreamingBlob: the bytes of a blob being downloaded reach the reader in
memory, a bounded buffer's worth at most ahead of it."""

from __future__ import annotations

import threading

import pytest

from snapws.errors import RemoteError
from snapws.ids import BlobDigest
from snapws.remote.download import DownloadStopped, StreamingBlob

DIGEST = BlobDigest.of(b"unused")


def test_the_download_waits_while_the_reader_is_a_buffer_behind() -> None:
    """However slow the reader, no more than the buffer (plus one block)
    waits for it; it reads every byte, in order."""
    data = bytes(range(256)) * 40
    block, limit, step = 64, 200, 7
    lock = threading.Lock()
    consumed = 0
    ahead: list[int] = []
    blob = StreamingBlob(DIGEST, buffer=limit)

    def fetch() -> None:
        blob.answered()
        appended = 0
        for i in range(0, len(data), block):
            blob.append(data[i : i + block])
            appended += len(data[i : i + block])
            with lock:  # consumed lags by at most the read in progress
                ahead.append(appended - consumed)

    blob.start(fetch)
    got = []
    with blob:
        while True:
            piece = blob.read(step)
            with lock:
                consumed += len(piece)
            if not piece:
                break
            got.append(piece)
    assert b"".join(got) == data
    assert len(ahead) == len(data) // block
    assert max(ahead) < limit + block + step


def test_closing_stops_a_download_that_waits_for_the_reader() -> None:
    stopped = threading.Event()
    blob = StreamingBlob(DIGEST, buffer=100)

    def fetch() -> None:
        blob.answered()
        try:
            while True:  # an endless blob: only close ends it
                blob.append(b"x" * 50)
        except DownloadStopped:
            stopped.set()
            raise

    blob.start(fetch)
    assert blob.read(10) == b"x" * 10
    closer = threading.Thread(target=blob.close)
    closer.start()
    closer.join(60)  # a liveness bound, not a speed check
    assert not closer.is_alive() and stopped.is_set()


def test_a_failed_download_is_reported_at_its_end_only() -> None:
    blob = StreamingBlob(DIGEST)

    def fetch() -> None:
        blob.answered()
        blob.append(b"abc")
        raise RemoteError("blob does not match its digest")

    blob.start(fetch)
    with blob:
        assert blob.read(2) == b"ab"
        with pytest.raises(RemoteError, match="does not match"):
            blob.read(10)
