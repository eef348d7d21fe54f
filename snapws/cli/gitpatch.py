"""git's patch format for snapws changes (``diff -p``, docs/formats-output.md).

git records regular files (mode 100644 or 100755) and symlinks (120000),
nothing else. A change is shown as git would show the same change in a
repository: names quoted as git quotes them (``diff --git "a/caf\\303\\251"
"b/caf\\303\\251"``), canonical modes, a file that became a symlink (or the
reverse) as a deletion then an addition, a file that replaced a directory as
an added file. What git cannot record (owners, xattrs, permission bits other
than the owner's execute bit, directories' metadata, FIFOs and devices) is
given on ``# PATH: ...`` lines before the path's patch, outside every patch,
where ``git apply`` and ``patch`` skip them as they skip an e-mail's text.

Pure functions from a change and its contents to lines (``str``, no line
ends); the caller prints them.
"""

from __future__ import annotations

from collections.abc import Callable

from snapws.cli.gitformat import quote_path
from snapws.model import Change, Entry, Kind
from snapws.textdiff import unified_diff

#: the kinds of entry git records
GIT_KINDS = (Kind.FILE, Kind.SYMLINK)

#: ``read(change, side)``: the bytes of ``change``'s file (or symlink target)
#: on ``side`` ("old" or "new"), None when that side has no file
ReadSide = Callable[[Change, str], "bytes | None"]


def git_mode(e: Entry) -> str:
    """The mode git records for ``e``: ``120000`` for a symlink, ``100755``
    for a file its owner may execute, else ``100644``."""
    if e.kind is Kind.SYMLINK:
        return "120000"
    return "100755" if e.mode & 0o100 else "100644"


def _git_entry(e: Entry | None) -> Entry | None:
    return e if e is not None and e.kind in GIT_KINDS else None


def quoted_pair(path: bytes) -> tuple[str, str]:
    """``a/PATH`` and ``b/PATH`` as git prints them: each quoted whole when
    the name needs it (git's quote_two), e.g. ``"a/caf\\303\\251.txt"``."""
    return quote_path(b"a/" + path), quote_path(b"b/" + path)


def notes(c: Change) -> list[str]:
    """``# PATH: ...`` lines for what ``c`` changed that git's patch format
    cannot carry (empty when git's patch shows all of it)."""
    name = quote_path(c.path)
    out: list[str] = []
    old, new = c.old, c.new
    if old is not None and new is not None:
        if "mode" in c.what and not (
            old.kind is new.kind and old.kind in GIT_KINDS and git_mode(old) != git_mode(new)
        ):
            out.append(f"# {name}: mode {old.mode:04o} -> {new.mode:04o}")
        if "owner" in c.what:
            out.append(f"# {name}: owner {old.uid}:{old.gid} -> {new.uid}:{new.gid}")
        if "xattrs" in c.what:
            out.append(f"# {name}: extended attributes changed")
        if "rdev" in c.what:
            out.append(f"# {name}: device number changed")
    for e, verb in ((old, "deleted"), (new, "added")):
        if e is not None and e.kind not in (*GIT_KINDS, Kind.DIR):
            if old is not None and new is not None and old.kind is new.kind:
                continue  # the same special file, changed: said above
            out.append(f"# {name}: {e.kind.name.lower()} {verb}")
    return out


def _section(path: bytes, head: list[str], old: bytes | None, new: bytes | None) -> list[str]:
    a, b = quoted_pair(path)
    body = unified_diff(old, new, a, b) if old != new else []
    if not head[1:] and not body:
        return []  # nothing git would show
    return head + body


def patch_lines(c: Change, read: ReadSide) -> list[str]:
    """The lines of ``git diff`` for ``c``: :func:`notes`, then git's
    ``diff --git`` section(s). Directories give no section (git lists the
    files below them)."""
    out = notes(c)
    a, b = quoted_pair(c.path)
    header = f"diff --git {a} {b}"
    old, new = _git_entry(c.old), _git_entry(c.new)
    if old is not None and new is not None and old.kind is not new.kind:
        # git shows a type change as a deletion, then an addition
        out += _section(
            c.path, [header, f"deleted file mode {git_mode(old)}"], read(c, "old"), None
        )
        out += _section(c.path, [header, f"new file mode {git_mode(new)}"], None, read(c, "new"))
    elif old is not None and new is not None:
        head = [header]
        if git_mode(old) != git_mode(new):
            head += [f"old mode {git_mode(old)}", f"new mode {git_mode(new)}"]
        out += _section(c.path, head, read(c, "old"), read(c, "new"))
    elif old is not None:
        out += [header, f"deleted file mode {git_mode(old)}"]
        out += unified_diff(read(c, "old"), None, a, b)
    elif new is not None:
        out += [header, f"new file mode {git_mode(new)}"]
        out += unified_diff(None, read(c, "new"), a, b)
    return out
