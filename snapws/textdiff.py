"""Line diffs of file contents, printed the way git prints them.

Pure functions on ``bytes``; standard library only, and no imports from the
package. Callers (``snapws diff``) add the ``diff --git`` / ``index`` / mode
header lines themselves; this module produces everything below them, plus the
``--numstat`` counts and the ``--stat`` block.

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

Differences from git
    git uses Myers' algorithm plus its "indent heuristic" to choose where an
    ambiguous block of added/removed lines is placed. Here, a pure block of
    added (or removed) lines is slid as far down as the surrounding identical
    lines allow, which is git's placement without that heuristic and usually
    with it (a new function after an existing one, a duplicated line). The
    heuristic sometimes moves such a block up instead, e.g. an indented line
    pasted twice right after a less indented one; and for complicated edits
    the hunks may be cut differently, and :func:`line_stat` may count a few more
    lines than ``git diff --numstat`` (``added - removed`` is always exact).
    Hunk headers use git's default function-name rule only (no
    ``.gitattributes`` diff drivers). Labels and ``--stat`` paths are printed
    verbatim: quoting unusual paths is the caller's job.
"""

from __future__ import annotations

import difflib
import unicodedata
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BINARY_SNIFF_BYTES",
    "DIRECT_MATCH_CELLS",
    "MAX_ANCHOR_DEPTH",
    "LineStat",
    "StatRow",
    "format_stat",
    "format_stat_summary",
    "is_binary",
    "line_stat",
    "unified_diff",
]

BINARY_SNIFF_BYTES = 8000
"""git looks for a NUL byte in this many leading bytes to call a file binary."""

DIRECT_MATCH_CELLS = 4_000_000
"""Largest ``len(old_piece) * len(new_piece)`` handed to SequenceMatcher as is."""

MAX_ANCHOR_DEPTH = 8
"""How many times a large piece may be re-cut at unique lines before giving up."""

DEV_NULL = "/dev/null"
NO_NEWLINE = "\\ No newline at end of file"
_FUNCNAME_MAX_BYTES = 80  # git's buffer for the text after "@@ ... @@"
_FUNCNAME_FIRST = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$")
_GIT_SPACE = b" \t\n\r"


# --------------------------------------------------------------------------- basics


def is_binary(data: bytes) -> bool:
    """git's heuristic: binary when a NUL byte occurs in the first 8000 bytes."""
    return b"\0" in data[:BINARY_SNIFF_BYTES]


@dataclass(frozen=True)
class LineStat:
    """Lines added and removed in one file, as ``git diff --numstat`` counts them.

    ``binary`` is true when either side is binary; the counts are then 0 (git
    prints ``-`` for them).
    """

    added: int
    removed: int
    binary: bool


def _split_lines(data: bytes) -> list[bytes]:
    """Split on ``\\n`` only, keeping it; a last line without newline is kept."""
    if not data:
        return []
    lines = data.split(b"\n")
    last = lines.pop()
    out = [line + b"\n" for line in lines]
    if last:
        out.append(last)
    return out


# --------------------------------------------------------------------- line matching

# A change is (i1, i2, j1, j2): old lines [i1, i2) were replaced by new lines
# [j1, j2); at least one side is non-empty. Consecutive changes in a list are
# separated by at least one unchanged line (the unchanged runs are implicit).
_Change = tuple[int, int, int, int]
_Block = tuple[int, int, int]  # matching run: old[i:i+n] == new[j:j+n]


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


def _changes_from_blocks(blocks: list[_Block], len_a: int, len_b: int) -> list[_Change]:
    changes: list[_Change] = []
    i = j = 0
    for bi, bj, n in [*blocks, (len_a, len_b, 0)]:
        if bi > i or bj > j:
            changes.append((i, bi, j, bj))
        i, j = bi + n, bj + n
    return changes


def _slide_down(changes: list[_Change], a: list[bytes], b: list[bytes]) -> list[_Change]:
    """Move each pure insertion/deletion as far down as identical lines allow.

    A block of removed lines ``a[i1:i2]`` followed by an unchanged ``a[i2]``
    equal to ``a[i1]`` says the same as the block ``a[i1+1:i2+1]``; git prefers
    the lower position. A block that slides into the next change merges with it.
    """
    out: list[_Change] = []
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


def _changes(a: list[bytes], b: list[bytes]) -> list[_Change]:
    return _changes_from_blocks(_match_blocks(a, b), len(a), len(b))


# --------------------------------------------------------------------------- numstat


def line_stat(old: bytes | None, new: bytes | None) -> LineStat:
    """Count lines added and removed between two versions (``None``: file absent).

    Same counts as ``git diff --numstat`` for ordinary edits (see the module
    docstring for how large or pathological inputs are matched). Binary on
    either side gives ``LineStat(0, 0, binary=True)``.
    """
    old_data = old or b""
    new_data = new or b""
    if is_binary(old_data) or is_binary(new_data):
        return LineStat(0, 0, binary=True)
    if old_data == new_data:
        return LineStat(0, 0, binary=False)
    added = removed = 0
    for i1, i2, j1, j2 in _changes(_split_lines(old_data), _split_lines(new_data)):
        removed += i2 - i1
        added += j2 - j1
    return LineStat(added, removed, binary=False)


# ------------------------------------------------------------------------ unified diff


def _label(label: str) -> str:
    # git ends a ---/+++ file name containing a space with a TAB, so that patch
    # tools can tell the name from a timestamp.
    return label + "\t" if " " in label and label != DEV_NULL else label


def _text(line: bytes) -> str:
    if line.endswith(b"\n"):
        line = line[:-1]
    return line.decode("utf-8", errors="replace")


def _funcname(line: bytes) -> bytes | None:
    """git's default hunk-header text: a line starting with a letter, ``_`` or ``$``."""
    if not line or line[0] not in _FUNCNAME_FIRST:
        return None
    return line[:_FUNCNAME_MAX_BYTES].rstrip(_GIT_SPACE)


def _range(start: int, count: int) -> str:
    # 1-based first line; an empty range names the line before it; ",1" omitted.
    if count == 0:
        return f"{start},0"
    if count == 1:
        return f"{start + 1}"
    return f"{start + 1},{count}"


def unified_diff(
    old: bytes | None,
    new: bytes | None,
    old_label: str,
    new_label: str,
    context: int = 3,
    *,
    funcname: bool = True,
) -> list[str]:
    """The lines git prints for one file after its ``diff --git`` header.

    ``old``/``new`` are the file contents, ``None`` when the file is absent on
    that side (its label is then ``/dev/null`` whatever is passed). Returns
    ``["--- <old>", "+++ <new>", "@@ -l,s +l,s @@ <funcname>", " ctx", "-old",
    "+new", "\\\\ No newline at end of file", ...]`` without line terminators,
    or ``["Binary files <old> and <new> differ"]`` when either side is binary,
    or ``[]`` when there is no line to show (equal contents, or an empty file
    added/deleted: git prints no ``---``/``+++`` for those either).

    ``context`` is git's ``-U``. With ``funcname`` (git's default) a hunk header
    ends with the nearest old line above the hunk that starts with a letter,
    ``_`` or ``$``, cut to 80 bytes. Text is decoded as UTF-8, undecodable
    bytes shown as U+FFFD.
    """
    if context < 0:
        raise ValueError("context must be >= 0")
    old_data = old or b""
    new_data = new or b""
    if old_data == new_data:
        return []
    a_name = DEV_NULL if old is None else old_label
    b_name = DEV_NULL if new is None else new_label
    if is_binary(old_data) or is_binary(new_data):
        return [f"Binary files {a_name} and {b_name} differ"]

    a = _split_lines(old_data)
    b = _split_lines(new_data)
    changes = _slide_down(_changes(a, b), a, b)
    out = [f"--- {_label(a_name)}", f"+++ {_label(b_name)}"]

    func_scan = 0  # old lines before this index were searched for a funcname
    func_text: bytes | None = None
    k = 0
    while k < len(changes):
        first = k
        # A hunk takes following changes while the unchanged gap is <= 2*context.
        while k + 1 < len(changes) and changes[k + 1][0] - changes[k][1] <= 2 * context:
            k += 1
        last = k
        k += 1

        a_start = max(changes[first][0] - context, 0)
        b_start = changes[first][2] - (changes[first][0] - a_start)
        a_end = min(changes[last][1] + context, len(a))
        b_end = changes[last][3] + (a_end - changes[last][1])

        header = f"@@ -{_range(a_start, a_end - a_start)} +{_range(b_start, b_end - b_start)} @@"
        if funcname:
            for i in range(func_scan, a_start):
                found = _funcname(a[i])
                if found is not None:
                    func_text = found
            func_scan = max(func_scan, a_start)
            if func_text:
                header += " " + func_text.decode("utf-8", errors="replace")
        out.append(header)

        i = a_start
        for i1, i2, j1, j2 in changes[first : last + 1]:
            _emit(out, " ", a, i, i1)
            _emit(out, "-", a, i1, i2)
            _emit(out, "+", b, j1, j2)
            i = i2
        _emit(out, " ", a, i, a_end)
    return out


def _emit(out: list[str], mark: str, lines: list[bytes], start: int, end: int) -> None:
    for line in lines[start:end]:
        out.append(mark + _text(line))
        if not line.endswith(b"\n"):
            out.append(NO_NEWLINE)


# ------------------------------------------------------------------------------ stat


@dataclass(frozen=True)
class StatRow:
    """One file of a ``--stat`` block.

    ``stat`` is ``None`` when the file changed without a content change (mode
    only): git shows it as ``path | 0``. For a binary ``stat``, ``old_size`` and
    ``new_size`` (bytes; 0 for an absent side) give ``Bin 12 -> 34 bytes``; they
    are ignored for text. ``path`` is shown verbatim (a rename can pass
    ``"old => new"``).
    """

    path: str
    stat: LineStat | None
    old_size: int = 0
    new_size: int = 0


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Cf", "Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(text: str) -> int:
    return sum(_char_width(char) for char in text)


def _fit_name(name: str, width: int) -> str:
    """git's path shortening: ``...`` + the tail, cut back to a ``/`` if any."""
    if _width(name) <= width:
        return name + " " * (width - _width(name))
    room = max(width - 3, 0)
    cut = 0
    used = _width(name)
    while used > room:
        used -= _char_width(name[cut])
        cut += 1
    tail = name[cut:]
    slash = tail.find("/")
    if slash >= 0:
        tail = tail[slash:]
    return "..." + tail + " " * max(room - _width(tail), 0)


def _scale(value: int, graph_width: int, max_change: int) -> int:
    # Linear, but anything non-zero gets at least one column.
    if not value:
        return 0
    return 1 + value * (graph_width - 1) // max_change


def format_stat(rows: Sequence[StatRow], width: int = 80) -> list[str]:
    """git's ``--stat`` block (``--stat=<width>``): one line per row + summary.

    ``" path | 12 +++++-----"`` with the ``+``/``-`` bar scaled so the lines fit
    in ``width`` columns (long paths are shortened to ``...tail`` like git),
    ``" img.png | Bin 120 -> 4096 bytes"`` for binary files, and the summary
    line of :func:`format_stat_summary`. Rows are printed in the given order.
    No rows give no lines, as ``git diff --stat`` prints nothing then.
    """
    if not rows:
        return []
    max_change = 0
    name_len = 0
    bin_width = 0
    number_width = 0
    for row in rows:
        name_len = max(name_len, _width(row.path))
        if row.stat is None:
            continue
        if row.stat.binary:
            bin_width = max(bin_width, 14 + len(str(row.old_size)) + len(str(row.new_size)))
            number_width = 3  # "Bin" sits in the number column
        else:
            max_change = max(max_change, row.stat.added + row.stat.removed)
    number_width = max(number_width, len(str(max_change)))

    # Columns: " " name " | " number " " graph, i.e. name + number + graph + 5,
    # and git keeps one more free at the right edge.
    width = max(width, 16 + 6 + number_width)
    graph_width = max_change if max_change + 4 > bin_width else bin_width - 4
    name_width = name_len
    if name_width + number_width + 6 + graph_width > width:
        graph_limit = width * 3 // 8 - number_width - 6
        if graph_width > graph_limit:
            graph_width = max(graph_limit, 6)
        if name_width > width - number_width - 6 - graph_width:
            name_width = width - number_width - 6 - graph_width
        else:
            graph_width = width - number_width - 6 - name_width

    out: list[str] = []
    for row in rows:
        name = _fit_name(row.path, name_width)
        stat = row.stat
        if stat is not None and stat.binary:
            line = f" {name} | {'Bin':>{number_width}}"
            if row.old_size or row.new_size:
                line += f" {row.old_size} -> {row.new_size} bytes"
            out.append(line)
            continue
        added = stat.added if stat else 0
        removed = stat.removed if stat else 0
        total = added + removed
        plus, minus = added, removed
        if graph_width <= max_change:
            bar = _scale(total, graph_width, max_change)
            if bar < 2 and added and removed:
                bar = 2
            if added < removed:
                plus = _scale(added, graph_width, max_change)
                minus = bar - plus
            else:
                minus = _scale(removed, graph_width, max_change)
                plus = bar - minus
        line = f" {name} | {total:>{number_width}}"
        if total:
            line += " " + "+" * plus + "-" * minus
        out.append(line)
    out.append(format_stat_summary(rows))
    return out


def format_stat_summary(rows: Sequence[StatRow]) -> str:
    """git's ``" 2 files changed, 3 insertions(+), 1 deletion(-)"`` line.

    The file count is always shown; insertions are left out when zero unless
    deletions are zero too, and vice versa (binary rows count as files only).
    """
    files = len(rows)
    if not files:
        return " 0 files changed"
    added = sum(r.stat.added for r in rows if r.stat and not r.stat.binary)
    removed = sum(r.stat.removed for r in rows if r.stat and not r.stat.binary)
    parts = [f" {files} file{'' if files == 1 else 's'} changed"]
    if added or not removed:
        parts.append(f"{added} insertion{'' if added == 1 else 's'}(+)")
    if removed or not added:
        parts.append(f"{removed} deletion{'' if removed == 1 else 's'}(-)")
    return ", ".join(parts)
