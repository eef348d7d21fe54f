"""The two renderings of a diff that read file contents: git's diffstat
and git's patch (``diff --stat``/``-p``, ``show --stat``/``-p``)."""

from __future__ import annotations

from snapws.cli import gitformat
from snapws.cli.app import emit_bytes
from snapws.model import Change, ChangeType, Kind
from snapws.ops.worktree.diff import DiffResult


def content(result: DiffResult, c: Change, side: str) -> bytes | None:
    e = c.old if side == "old" else c.new
    if e is None or e.kind not in (Kind.FILE, Kind.SYMLINK):
        return None
    if e.kind is Kind.SYMLINK:
        return e.target
    return result.read_old(c.path) if side == "old" else result.read_new(c.path)


def emit_stat(result: DiffResult) -> None:
    """Write git's diffstat of ``result`` (``diff --stat``, ``show --stat``)."""
    from snapws.textdiff import LineStat, StatRow, format_stat, is_binary, line_stat  # start-up

    rows = []
    for c in result.changes:
        e_old, e_new = c.old, c.new
        if all(e is None or e.kind is Kind.DIR for e in (e_old, e_new)):
            continue  # a directory (a file that replaced one still counts)
        content_changed = c.type is not ChangeType.MODIFIED or any(
            w in ("content", "target") for w in c.what
        )
        st = None
        if content_changed:
            old = content(result, c, "old")
            if old is not None and is_binary(old):  # binary either side: no need of the other
                st = LineStat(0, 0, binary=True)
            else:
                st = line_stat(old, content(result, c, "new"))
        rows.append(
            StatRow(
                gitformat.quote_path(c.path),
                st,
                e_old.size if e_old else 0,
                e_new.size if e_new else 0,
            )
        )
    text = "".join(line + "\n" for line in format_stat(rows))  # names quoted: ASCII
    emit_bytes(text.encode("utf-8", errors="surrogateescape"))


def emit_patch(result: DiffResult) -> None:
    """Write git's patch of ``result`` (``diff -p``, ``show -p``)."""
    from snapws.cli.gitpatch import patch_lines  # only here: start-up

    out: list[str] = []  # written a batch at a time, not a change at a time
    size = 0
    for c in result.changes:  # the bytes of the files: a patch must apply
        lines = patch_lines(c, lambda c, side: content(result, c, side))
        if lines:
            out.append("\n".join(lines) + "\n")
            size += len(out[-1])
        if size >= 1 << 16:
            emit_bytes("".join(out).encode("utf-8", errors="surrogateescape"))
            out, size = [], 0
    if out:
        emit_bytes("".join(out).encode("utf-8", errors="surrogateescape"))
