"""Fence pointers of a big manifest: the offset and path of a line about
every :data:`STRIDE` bytes, so that looking a path up costs a bisection of
that short list (in C) and a substring search of one stretch, whatever the
manifest's size (LSM-tree stores keep such a sparse index beside each
sorted run for the same reason).

Without them a lookup in the chain's base, the whole tree, probes its way
to the path line by line in Python: about ten probes a lookup at 1,000,000
files, so status, commit and diff grew with the tree. Computing them probes
once per :data:`STRIDE` (about 25 ms at 1,000,000 files), so the store
keeps them as a cache (:mod:`snapws.store.manifests`), checked by a digest.

Pure: a manifest's bytes in, fences out, and their file form both ways.
"""

from __future__ import annotations

import bisect
import mmap
import struct
from array import array
from collections.abc import Callable

import xxhash

#: About one fence this many bytes of manifest (a stretch searched as a substring).
STRIDE = 1 << 14
_MAGIC = b"snapws-fences-1\n"
_HEAD = struct.Struct("<QII8s")  # manifest size, stride, fences, XXH3-64 of the rest


class Fences:
    """Ascending line starts of a manifest (the first is 0) and the path of
    each line there."""

    def __init__(self, size: int, offsets: array[int], paths: list[bytes]) -> None:
        self.size = size
        self.offsets = offsets
        self.paths = paths

    def bracket(self, path: bytes) -> tuple[int, int]:
        """Line starts ``(lo, hi)``: if ``path`` has a line, it starts in
        ``[lo, hi)``, and the first line at or above ``path`` starts in
        ``[lo, hi]``; ``lo == hi == 0`` when ``path`` sorts before every line."""
        i = bisect.bisect_right(self.paths, path) - 1
        if i < 0:
            return 0, 0
        hi = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.size
        return self.offsets[i], hi

    def encode(self) -> bytes:
        body = self.offsets.tobytes() + b"\n".join(self.paths)
        digest = xxhash.xxh3_64_digest(body)
        return _MAGIC + _HEAD.pack(self.size, STRIDE, len(self.offsets), digest) + body


def compute(
    buf: bytes | mmap.mmap, size: int, line_path: Callable[[bytes], bytes]
) -> Fences | None:
    """The fences of the manifest ``buf`` (``bytes`` or an ``mmap``) of
    ``size`` bytes, ``line_path`` reading a line's path; None if its lines
    are not in ascending order of path (no fence may be trusted then).
    Raises ValueError on a malformed line at a fence."""
    find = buf.find
    offsets: array[int] = array("Q")
    paths: list[bytes] = []
    pos = 0
    while pos < size:
        start = 0 if pos == 0 else find(b"\n", pos - 1) + 1
        if pos and start == 0:
            break  # no line starts after ``pos``
        end = find(b"\n", start)
        end = size if end < 0 else end
        line = buf[start:end]
        pos = max(pos + STRIDE, end + 1)
        if not line.strip():
            continue
        path = line_path(line)
        if b"\n" in path:
            continue  # (a name with a newline: not a fence, the file keeps one a line)
        if paths and path <= paths[-1]:
            return None
        offsets.append(start)
        paths.append(path)
    if not offsets or offsets[0] != 0:
        return None  # (a first line with no fence: lookups below it would miss it)
    return Fences(size, offsets, paths)


def decode(data: bytes, size: int) -> Fences | None:
    """Fences from their file form, for a manifest of ``size`` bytes; None
    if the file is damaged, of another form or of another manifest."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _HEAD.size:
        return None
    msize, stride, count, digest = _HEAD.unpack_from(data, len(_MAGIC))
    body = data[len(_MAGIC) + _HEAD.size :]
    if msize != size or stride != STRIDE or xxhash.xxh3_64_digest(body) != digest:
        return None
    offsets: array[int] = array("Q")
    cut = 8 * count
    if count == 0 or len(body) < cut:
        return None
    offsets.frombytes(body[:cut])
    paths = body[cut:].split(b"\n")
    if len(paths) != count or offsets[0] != 0 or offsets[-1] >= size:
        return None
    return Fences(size, offsets, paths)
