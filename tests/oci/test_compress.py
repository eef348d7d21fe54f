"""Layer compression: gzip made of segments that are stored, run-length
coded or LZ77-compressed by their content, the same bytes whatever the
threads and write sizes; and its reading back."""

from __future__ import annotations

import gzip
import random

import pytest

from snapws.errors import BadImageError
from snapws.oci.blobstream import LayerBlobStream
from snapws.oci.compress import SEGMENT, compressor


def content() -> bytes:
    rng = random.Random(7)
    words = [b"alpha", b"beta", b"gamma", b"int", b"return", b"{", b"}"]
    text = b" ".join(rng.choice(words) for _ in range(200_000))[: 3 * SEGMENT]
    noise = rng.randbytes(5 * SEGMENT)
    padded = b"".join(rng.randbytes(3000) + bytes(1100) for _ in range(200))  # tar-like
    return text + noise + padded + text[:1000] + b"\0" * 70_000 + noise[:12_345]


def gzip_of(data: bytes, threads: int, step: int) -> bytes:
    c = compressor("gzip", threads)
    out = [c.compress(data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out) + c.flush()


def test_gzip_is_reproducible_and_fits_the_content() -> None:
    data = content()
    first = gzip_of(data, 1, 1 << 20)
    assert gzip_of(data, 3, 77_777) == first == gzip_of(data, 2, len(data) + 1)
    assert gzip.decompress(first) == data
    text, noise = data[: 3 * SEGMENT], data[3 * SEGMENT : 8 * SEGMENT]
    assert len(gzip_of(text, 1, 1 << 20)) < 0.3 * len(text)  # LZ77
    assert len(gzip_of(noise, 1, 1 << 20)) < 1.001 * len(noise)  # stored
    padded = data[8 * SEGMENT : 8 * SEGMENT + 200 * 4100]
    packed = gzip_of(padded, 1, 1 << 20)
    assert len(packed) < 0.8 * len(padded)  # the runs of zeros coded...
    # ...the rest stored (random stretches that lie whole in a stored block)
    assert sum(padded[i : i + 3000] in packed for i in range(0, len(padded), 4100)) > 150
    assert gzip.decompress(gzip_of(b"", 2, 10)) == b""


@pytest.mark.parametrize(
    "layout",
    [
        [0, 5000, 63, 5000, 64, 5000, 65],  # zero runs (even) and random stretches (odd)
        [200_000, 9000, 1, 9000, 300_000],  # runs across segments, to the end
        [64, SEGMENT - 64, 64, 3, 70_000],
        [0, 3 * SEGMENT + 17],
    ],
)
def test_stored_segments_with_runs_of_zeros_read_back(layout: list[int]) -> None:
    """Incompressible stretches between runs of zeros of any length (below,
    at and above the shortest run coded; at a segment's start and end)
    come back as they went in, through gzip(1)'s reader and ours."""
    rng = random.Random(len(layout))
    data = b"".join(bytes(n) if i % 2 == 0 else rng.randbytes(n) for i, n in enumerate(layout))
    blob = gzip_of(data, 2, 50_000)
    assert blob == gzip_of(data, 1, len(data) + 1)
    assert gzip.decompress(blob) == data
    assert read_all(blob) == data
    assert len(blob) < len(data) - sum(layout[::2]) + 20_000


class _Chunks:
    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int = -1, /) -> bytes:
        out = self.data[self.pos : self.pos + min(n, self.step)]
        self.pos += len(out)
        return out


def read_all(blob: bytes, step: int = 4096) -> bytes:
    s = LayerBlobStream(_Chunks(blob, step), "test", len(blob))
    try:
        out = []
        while data := s.read(100_000):
            out.append(data)
        s.finish()
        return b"".join(out)
    finally:
        s.close()


def test_reading_gzip_members_padding_and_damage() -> None:
    data = content()
    one = gzip_of(data, 2, 1 << 20)
    assert read_all(one) == data
    two = gzip.compress(b"first member ", mtime=0) + gzip.compress(b"second", mtime=0)
    assert read_all(two + bytes(700), step=5) == b"first member second"
    with pytest.raises(BadImageError, match="truncated gzip"):
        read_all(one[:-9])
    with pytest.raises(BadImageError, match="corrupt gzip"):
        read_all(one[:-8] + b"\0\0\0\0" + one[-4:])  # a wrong CRC-32
    with pytest.raises(BadImageError, match="corrupt gzip"):
        read_all(two + b"trailing garbage")
