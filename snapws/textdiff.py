"""Line diffs of file contents, printed the way git prints them.

Pure functions on ``bytes``; which lines match is :mod:`snapws.linematch`'s
business (and how large inputs stay fast), the output format this module's.
Callers (``snapws diff``) add the ``diff --git`` / ``index`` / mode header
lines themselves; this module produces everything below them, plus the
``--numstat`` counts and the ``--stat`` block.

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

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from snapws.linematch import find_changes, slide_down, split_lines

__all__ = [
    "BINARY_SNIFF_BYTES",
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
    for i1, i2, j1, j2 in find_changes(split_lines(old_data), split_lines(new_data)):
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
    return line.decode("utf-8", errors="surrogateescape")


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

    a = split_lines(old_data)
    b = split_lines(new_data)
    changes = slide_down(find_changes(a, b), a, b)
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
                header += " " + func_text.decode("utf-8", errors="surrogateescape")
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
    if text.isascii():
        return len(text)  # no ASCII character is wide, combining or a format character
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
