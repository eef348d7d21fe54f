"""git's machine formats for lists of changes (docs/formats-output.md).

``status --porcelain`` (porcelain v1, everything unstaged: snapws has no
index), ``--name-status``, ``--name-only``; names quoted as git quotes them
with ``core.quotePath`` at its default (true); ``-z`` records end in NUL and
carry names unquoted. Pure functions from changes to bytes: the commands
write what they return.
"""

from __future__ import annotations

from collections.abc import Iterable

from snapws.model import Change, ChangeType, Kind

#: git's named C escapes (quote.c, cq_lookup); other bytes below 0x20 and
#: 0x7f are written as three octal digits, as are all bytes >= 0x80
#: (core.quotePath=true).
_NAMED_ESCAPES = {
    0x07: "\\a",
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0B: "\\v",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}

#: the two-letter porcelain v1 status of each change type: nothing is
#: staged, so the index column (X) is blank and a new path is untracked
PORCELAIN_CODES = {
    ChangeType.MODIFIED: " M",
    ChangeType.DELETED: " D",
    ChangeType.TYPE_CHANGED: " T",
    ChangeType.ADDED: "??",
}


def _must_quote(b: int, quote_space: bool) -> bool:
    return b < 0x20 or b in (0x22, 0x5C) or b >= 0x7F or (quote_space and b == 0x20)


_PLAIN = bytes(b for b in range(256) if not _must_quote(b, True))
_PLAIN_OR_SPACE = bytes(b for b in range(256) if not _must_quote(b, False))


def quote_path(path: bytes, quote_space: bool = False) -> str:
    """``path`` as git prints it: unchanged when every byte is printable
    ASCII other than ``"`` and ``\\``, else in double quotes with C escapes
    (``\\t``, ``\\n``, ``\\"``, ``\\\\``, octal ``\\303\\251`` for the rest).
    ``quote_space`` also quotes names with a space, as ``git status
    --porcelain`` does (``--name-status`` and ``--name-only`` do not)."""
    if not path.translate(None, _PLAIN if quote_space else _PLAIN_OR_SPACE):
        return path.decode("ascii")  # every byte is one that _must_quote lets through
    out = []
    for b in path:
        if b in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[b])
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return '"' + "".join(out) + '"'


def change_name(c: Change) -> bytes:
    """The path of ``c`` relative to the workspace root, with a trailing
    ``/`` when it is a directory (git lists an untracked directory so)."""
    entry = c.new or c.old
    return c.path + b"/" if entry is not None and entry.kind is Kind.DIR else c.path


def _field(name: bytes, nul: bool, quote_space: bool = False) -> bytes:
    return name if nul else quote_path(name, quote_space).encode("ascii")


def _end(nul: bool) -> bytes:
    return b"\0" if nul else b"\n"


def porcelain(changes: Iterable[Change], nul: bool = False) -> bytes:
    """``git status --porcelain[=v1] [-z]`` of a working tree with nothing
    staged: `` M``, `` D``, `` T`` lines in path order, then ``??`` lines
    for new paths in path order (git lists untracked paths last)."""
    ordered = sorted(changes, key=lambda c: (c.type is ChangeType.ADDED, c.path))
    return b"".join(
        PORCELAIN_CODES[c.type].encode("ascii")
        + b" "
        + _field(change_name(c), nul, quote_space=True)
        + _end(nul)
        for c in ordered
    )


def ignored_lines(ignored: Iterable[tuple[bytes, bool]], nul: bool = False) -> bytes:
    """``git status --porcelain --ignored`` lines for ignored paths (each
    with whether it is a directory, shown with a trailing ``/``): ``!! path``."""
    return b"".join(
        b"!! " + _field(p + b"/" if is_dir else p, nul, quote_space=True) + _end(nul)
        for p, is_dir in sorted(ignored)
    )


def name_status(changes: Iterable[Change], nul: bool = False) -> bytes:
    """``git diff --name-status [-z]``: ``X<TAB>path`` (``X<NUL>path<NUL>``)."""
    sep = b"\0" if nul else b"\t"
    return b"".join(
        c.type.value.encode("ascii") + sep + _field(change_name(c), nul) + _end(nul)
        for c in changes
    )


def name_only(changes: Iterable[Change], nul: bool = False) -> bytes:
    """``git diff --name-only [-z]``: one path per line (per NUL)."""
    return b"".join(_field(change_name(c), nul) + _end(nul) for c in changes)
