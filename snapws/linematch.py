"""Which lines of two texts match: the line matching behind
:mod:`snapws.textdiff` (git's diff output). Pure functions on lists of
lines; standard library only, and no imports from the package.

Matching lines
    Lines are split on ``\\n`` only, like git, and compared as raw bytes with
    their line ending, so ``"x"`` at the end of a file without a newline and
    ``"x\\n"`` are different lines (git's ``\\ No newline at end of file``).
    Both sides first lose their common leading and trailing lines. What is left
    in the middle is matched with :class:`difflib.SequenceMatcher`
    (``autojunk=False``) when that is cheap, i.e. while the product of the two
    line counts is at most :data:`DIRECT_MATCH_CELLS` (about 2,000 x 2,000
    lines; SequenceMatcher is quadratic on adversarial input and took ~20 s on
    20,000 lines). Larger middles are first cut at "anchor" lines that occur
    exactly once on each side (the patience-diff idea: the longest subsequence
    of such lines in the same order on both sides), each piece handled the same
    way, up to :data:`MAX_ANCHOR_DEPTH` rounds. A piece that is still too large
    and has no anchor (low-entropy data such as the same few lines repeated) is
    reported as wholly replaced: all its old lines removed, all its new lines
    added. So files of many MB diff in about a second at most, and ordinary
    edits get the same counts as git.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left

DIRECT_MATCH_CELLS = 4_000_000
"""Largest ``len(old_piece) * len(new_piece)`` handed to SequenceMatcher as is."""

MAX_ANCHOR_DEPTH = 8
"""How many times a large piece may be re-cut at unique lines before giving up."""

Change = tuple[int, int, int, int]
"""``(i1, i2, j1, j2)``: old lines ``[i1, i2)`` were replaced by new lines
``[j1, j2)``; at least one side is non-empty. Consecutive changes in a list
are separated by at least one unchanged line (the unchanged runs are implicit)."""
_Block = tuple[int, int, int]  # matching run: old[i:i+n] == new[j:j+n]


def split_lines(data: bytes) -> list[bytes]:
    """Split on ``\\n`` only, keeping it; a last line without newline is kept."""
    if not data:
        return []
    lines = data.split(b"\n")
    last = lines.pop()
    out = [line + b"\n" for line in lines]
    if last:
        out.append(last)
    return out


def _match_blocks(a: list[bytes], b: list[bytes]) -> list[_Block]:
    """Matching runs between ``a`` and ``b``, in order, not necessarily maximal."""
    blocks: list[_Block] = []
    _match_piece(a, 0, len(a), b, 0, len(b), 0, blocks)
    return blocks


def _match_piece(
    a: list[bytes],
    alo: int,
    ahi: int,
    b: list[bytes],
    blo: int,
    bhi: int,
    depth: int,
    out: list[_Block],
) -> None:
    """Append the matching runs of ``a[alo:ahi]`` and ``b[blo:bhi]`` to ``out``."""
    start_a, start_b = alo, blo
    while alo < ahi and blo < bhi and a[alo] == b[blo]:
        alo += 1
        blo += 1
    if alo > start_a:
        out.append((start_a, start_b, alo - start_a))
    suffix = 0
    while alo < ahi - suffix and blo < bhi - suffix and a[ahi - 1 - suffix] == b[bhi - 1 - suffix]:
        suffix += 1
    ahi -= suffix
    bhi -= suffix

    if alo < ahi and blo < bhi:
        if (ahi - alo) * (bhi - blo) <= DIRECT_MATCH_CELLS:
            matcher = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi], autojunk=False)
            for i, j, n in matcher.get_matching_blocks():
                if n:
                    out.append((alo + i, blo + j, n))
        elif depth < MAX_ANCHOR_DEPTH:
            anchors = _unique_anchors(a, alo, ahi, b, blo, bhi)
            if anchors:
                i_prev, j_prev = alo, blo
                for i, j in anchors:
                    _match_piece(a, i_prev, i, b, j_prev, j, depth + 1, out)
                    out.append((i, j, 1))
                    i_prev, j_prev = i + 1, j + 1
                _match_piece(a, i_prev, ahi, b, j_prev, bhi, depth + 1, out)
        # Otherwise give up: everything left in this piece is a change.

    if suffix:
        out.append((ahi, bhi, suffix))


def _unique_anchors(
    a: list[bytes], alo: int, ahi: int, b: list[bytes], blo: int, bhi: int
) -> list[tuple[int, int]]:
    """Lines occurring exactly once in each piece, longest same-order subsequence."""
    where_a: dict[bytes, int] = {}
    for i in range(alo, ahi):
        where_a[a[i]] = -1 if a[i] in where_a else i
    where_b: dict[bytes, int] = {}
    for j in range(blo, bhi):
        line = b[j]
        if where_a.get(line, -1) >= 0:
            where_b[line] = -1 if line in where_b else j
    pairs = sorted((where_a[line], j) for line, j in where_b.items() if j >= 0)
    if not pairs:
        return []
    # Longest increasing subsequence of the new-side indexes (patience sorting).
    tail_j: list[int] = []
    tail_at: list[int] = []
    back = [-1] * len(pairs)
    for k, (_, j) in enumerate(pairs):
        pos = bisect_left(tail_j, j)
        if pos:
            back[k] = tail_at[pos - 1]
        if pos == len(tail_j):
            tail_j.append(j)
            tail_at.append(k)
        else:
            tail_j[pos] = j
            tail_at[pos] = k
    chain: list[tuple[int, int]] = []
    k = tail_at[-1]
    while k >= 0:
        chain.append(pairs[k])
        k = back[k]
    chain.reverse()
    return chain


def _changes_from_blocks(blocks: list[_Block], len_a: int, len_b: int) -> list[Change]:
    changes: list[Change] = []
    i = j = 0
    for bi, bj, n in [*blocks, (len_a, len_b, 0)]:
        if bi > i or bj > j:
            changes.append((i, bi, j, bj))
        i, j = bi + n, bj + n
    return changes


def slide_down(changes: list[Change], a: list[bytes], b: list[bytes]) -> list[Change]:
    """Move each pure insertion/deletion as far down as identical lines allow.

    A block of removed lines ``a[i1:i2]`` followed by an unchanged ``a[i2]``
    equal to ``a[i1]`` says the same as the block ``a[i1+1:i2+1]``; git prefers
    the lower position. A block that slides into the next change merges with it.
    """
    out: list[Change] = []
    k = 0
    while k < len(changes):
        i1, i2, j1, j2 = changes[k]
        k += 1
        while i1 == i2 or j1 == j2:  # pure: only one side has lines
            next_i = changes[k][0] if k < len(changes) else len(a)
            if i2 == next_i:  # touching the next change: merge with it
                if k == len(changes):
                    break
                _, i2, _, j2 = changes[k]
                k += 1
                continue
            if j1 == j2:
                if a[i1] != a[i2]:
                    break
            elif b[j1] != b[j2]:
                break
            # One unchanged line moves from below the block to above it.
            i1, i2, j1, j2 = i1 + 1, i2 + 1, j1 + 1, j2 + 1
        out.append((i1, i2, j1, j2))
    return out


def find_changes(a: list[bytes], b: list[bytes]) -> list[Change]:
    """The changes that turn lines ``a`` into lines ``b`` (see :data:`Change`
    and the module docstring), in order; ``[]`` when they are equal."""
    return _changes_from_blocks(_match_blocks(a, b), len(a), len(b))
