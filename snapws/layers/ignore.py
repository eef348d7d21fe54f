"""Ignore rules: ``.snapwsignore`` files in gitignore syntax, and the
``ignore`` patterns of the configuration.

Semantics are git's (checked against ``git check-ignore`` in the tests):
blank lines and ``#`` comments are skipped, trailing unescaped spaces
dropped, ``!`` negates, a pattern with a slash before its end is anchored to
the directory of its file (a leading ``/`` only anchors), otherwise it
matches a name at any depth below that directory; a trailing ``/`` matches
directories only; ``*``, ``?`` and ``[...]`` never match ``/``; ``**/``,
``/**/`` and ``/**`` span directories. A file in a subdirectory applies
below it and wins over its parents' files, a later pattern wins over an
earlier one, and nothing below an excluded directory can be re-included.
The configuration's patterns count as a file at the root read before the
root's own (git's ``core.excludesFile``).

Ignoring applies to untracked paths only (paths not in HEAD), as in git;
:func:`ignored_tops` applies that rule to a top-down walk, and
:func:`drop_ignored` takes ignored paths (and untracked directories holding
only ignored paths, which git lists as ignored directories) out of a list
of changes. Pure code: files are read through the ``read`` callable a
caller gives :class:`IgnoreRules` (see :func:`file_reader`).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from snapws.deeppath import anchored, open_fd
from snapws.model import ROOT, Change, ChangeType, Kind

#: The name of an ignore file in any directory of a working tree.
IGNORE_FILE = b".snapwsignore"
#: An ignore file larger than this is not read (as if absent).
MAX_IGNORE_BYTES = 1 << 20

_CLASSES = {
    b"alnum": b"a-zA-Z0-9",
    b"alpha": b"a-zA-Z",
    b"blank": b" \\t",
    b"cntrl": b"\\x00-\\x1f\\x7f",
    b"digit": b"0-9",
    b"graph": b"!-~",
    b"lower": b"a-z",
    b"print": b" -~",
    b"punct": b"!-/:-@\\[-`{-~",
    b"space": b" \\t\\n\\r\\f\\v",
    b"upper": b"A-Z",
    b"xdigit": b"0-9A-Fa-f",
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """One pattern line: ``regex`` matches the path relative to ``base``
    (the directory of its file, ``b"."`` for the root) if ``anchored``,
    else the last name of the path."""

    regex: re.Pattern[bytes]
    negate: bool
    dir_only: bool
    anchored: bool
    base: bytes

    def matches(self, path: bytes, name: bytes, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if not self.anchored:
            return self.regex.fullmatch(name) is not None
        if self.base != ROOT:
            if not path.startswith(self.base + b"/"):
                return False
            path = path[len(self.base) + 1 :]
        return self.regex.fullmatch(path) is not None


def parse_patterns(data: bytes, base: bytes = ROOT) -> list[Pattern]:
    """The patterns of an ignore file's bytes (``base``: its directory,
    relative to the root). Lines that cannot match anything are skipped."""
    out = []
    for line in data.split(b"\n"):
        p = _parse_line(line.removesuffix(b"\r"), base)
        if p is not None:
            out.append(p)
    return out


def _parse_line(line: bytes, base: bytes) -> Pattern | None:
    line = _strip_trailing_spaces(line)
    if not line or line.startswith(b"#"):
        return None
    negate = line.startswith(b"!")
    if negate:
        line = line[1:]
    dir_only = line.endswith(b"/") and not line.endswith(b"\\/")
    if dir_only:
        line = line.rstrip(b"/")
    if not line:
        return None
    anchored = b"/" in line
    if line.startswith(b"/"):
        line = line[1:]
    try:
        regex = re.compile(_translate(line), re.DOTALL)
    except (re.error, ValueError):
        return None
    return Pattern(regex, negate, dir_only, anchored, base)


def _strip_trailing_spaces(line: bytes) -> bytes:
    end = len(line)
    while end > 0 and line[end - 1 : end] == b" ":
        # a space escaped by an odd number of backslashes stays
        k = end - 1
        while k > 0 and line[k - 1 : k] == b"\\":
            k -= 1
        if (end - 1 - k) % 2 == 1:
            break
        end -= 1
    return line[:end]


def _translate(pat: bytes) -> bytes:
    """A regex for git's wildmatch of ``pat`` with WM_PATHNAME."""
    out = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i : i + 1]
        if c == b"*":
            j = i
            while j < n and pat[j : j + 1] == b"*":
                j += 1
            starts = i == 0 or pat[i - 1 : i] == b"/"
            ends = j == n or pat[j : j + 1] == b"/"
            if j - i >= 2 and starts and ends:
                if j == n:  # "/**" at the end (or "**" alone): anything, any depth
                    out.append(b".*")
                else:  # "**/": zero or more directories
                    out.append(b"(?:.*/)?")
                    j += 1
            else:
                out.append(b"[^/]*")
            i = j
        elif c == b"?":
            out.append(b"[^/]")
            i += 1
        elif c == b"[":
            cls, i = _bracket(pat, i)
            out.append(cls)
        elif c == b"\\":
            if i + 1 < n:
                out.append(re.escape(pat[i + 1 : i + 2]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return b"".join(out)


def _bracket(pat: bytes, i: int) -> tuple[bytes, int]:
    """The regex of the bracket expression at ``pat[i]`` (``[``) and the
    index after it. Raises ValueError if it is not closed (git's wildmatch
    then matches nothing)."""
    n = len(pat)
    j = i + 1
    neg = j < n and pat[j : j + 1] in (b"!", b"^")
    if neg:
        j += 1
    items: list[bytes] = []
    first = True
    while j < n:
        c = pat[j : j + 1]
        if c == b"]" and not first:
            body = b"".join(items)
            return (b"[^/" if neg else b"(?!/)[") + body + b"]", j + 1
        first = False
        if c == b"[" and pat[j + 1 : j + 2] == b":":
            end = pat.find(b":]", j + 2)
            if end >= 0:
                name = pat[j + 2 : end]
                if name not in _CLASSES:
                    raise ValueError("unknown character class")
                items.append(_CLASSES[name])
                j = end + 2
                continue
        if c == b"\\" and j + 1 < n:
            j += 1
            c = pat[j : j + 1]
        if pat[j + 1 : j + 2] == b"-" and j + 2 < n and pat[j + 2 : j + 3] != b"]":
            hi = pat[j + 2 : j + 3]
            k = j + 3
            if hi == b"\\" and j + 3 < n:
                hi = pat[j + 3 : j + 4]
                k = j + 4
            items.append(re.escape(c) + b"-" + re.escape(hi))
            j = k
            continue
        items.append(re.escape(c))
        j += 1
    raise ValueError("unclosed bracket")


def file_reader(root: bytes) -> Callable[[bytes], bytes | None]:
    """A reader of ``<dir>/.snapwsignore`` below ``root`` (a directory of
    the working tree, relative): the bytes, or None when it is absent, not
    a regular file (a symlink is not followed, as git does), unreadable or
    larger than :data:`MAX_IGNORE_BYTES`."""

    def read(d: bytes) -> bytes | None:
        path = (root if d == ROOT else root + b"/" + d) + b"/" + IGNORE_FILE
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = open_fd(path, flags)  # (however deep)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_IGNORE_BYTES:
                return None
            return os.read(fd, MAX_IGNORE_BYTES + 1)[:MAX_IGNORE_BYTES]
        except OSError:
            return None
        finally:
            os.close(fd)

    return read


class IgnoreRules:
    """The rules of one working tree: configuration patterns, then each
    directory's ignore file, read (once) when a path below it is asked
    about."""

    def __init__(
        self, read: Callable[[bytes], bytes | None] | None, config: Sequence[str] = ()
    ) -> None:
        self._read = read
        self._config = parse_patterns("\n".join(config).encode("utf-8", "surrogateescape"))
        self._stacks: dict[bytes, list[Pattern]] = {}
        self._absent: set[bytes] = set()  # directories known to have no ignore file

    @classmethod
    def for_tree(cls, root: bytes, config: Sequence[str] = ()) -> IgnoreRules:
        """The rules of the working tree at ``root`` (an absolute path)."""
        return cls(file_reader(root), config)

    def _stack(self, d: bytes) -> list[Pattern]:
        """Every pattern that applies below directory ``d``, lowest priority first."""
        got = self._stacks.get(d)
        if got is not None:
            return got
        todo = [d]  # d and its directories not read yet, deepest first (no recursion:
        while todo[-1] != ROOT:  # a tree may be 10,000 levels deep)
            i = todo[-1].rfind(b"/")
            up = ROOT if i < 0 else todo[-1][:i]
            if up in self._stacks:
                break
            todo.append(up)
        for q in reversed(todo):
            if q == ROOT:
                parent = self._config
            else:
                i = q.rfind(b"/")
                parent = self._stacks[ROOT if i < 0 else q[:i]]
            data = self._read(q) if self._read is not None and q not in self._absent else None
            self._stacks[q] = parent + parse_patterns(data, q) if data else parent
        return self._stacks[d]

    def listed(self, d: bytes, has_file: bool) -> None:
        """Tell the rules whether directory ``d`` holds an ignore file (a
        walk that listed it saves the attempt to read one)."""
        if not has_file:
            self._absent.add(d)

    def applies(self, d: bytes) -> bool:
        """Whether any pattern applies to the entries of directory ``d``."""
        return bool(self._stack(d))

    def match(self, path: bytes, is_dir: bool) -> bool:
        """Whether the rules exclude ``path`` itself (its directories are
        not looked at: callers walk from the top, see :meth:`excluded`)."""
        i = path.rfind(b"/")
        d, name = (ROOT, path) if i < 0 else (path[:i], path[i + 1 :])
        for p in reversed(self._stack(d)):
            if p.matches(path, name, is_dir):
                return not p.negate
        return False

    def excluded(self, path: bytes, is_dir: bool) -> bool:
        """Whether ``path`` or one of its directories is excluded (git's
        ``check-ignore``, tracked or not)."""
        parts = path.split(b"/")
        for k in range(1, len(parts)):
            if self.match(b"/".join(parts[:k]), True):
                return True
        return self.match(path, is_dir)


def _listing(path: bytes) -> list[tuple[bytes, bool]]:
    """(name, is a directory) of each entry of directory ``path``, however
    deep. Raises OSError."""
    fd = open_fd(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with os.scandir(fd) as it:
            return [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]
    finally:
        os.close(fd)


def ignored_in_tree(root: bytes, rules: IgnoreRules) -> list[bytes]:
    """The topmost paths the ``rules`` exclude in the directory tree at
    ``root`` (nothing tracked yet: a directory about to become a base
    layer), sorted; excluded directories are not walked into. A directory
    holding only excluded entries (at any depth) counts as excluded itself,
    as a commit counts a new one (:func:`drop_ignored`). Raises OSError."""
    with anchored():  # paths may be longer than PATH_MAX
        return _ignored_in_tree(root, rules)


def _ignored_in_tree(root: bytes, rules: IgnoreRules) -> list[bytes]:
    mine: dict[bytes, list[bytes]] = {}  # directory -> its excluded entries
    subdirs: dict[bytes, list[bytes]] = {}  # directory -> its other directories
    has_files: set[bytes] = set()  # directories with a file (etc.) not excluded
    order: list[bytes] = []
    todo = [ROOT]
    while todo:
        d = todo.pop()
        order.append(d)
        entries = _listing(root if d == ROOT else root + b"/" + d)
        rules.listed(d, any(name == IGNORE_FILE for name, _ in entries))
        mine[d], subdirs[d] = [], []
        for name, is_dir in entries:
            p = name if d == ROOT else d + b"/" + name
            if rules.match(p, is_dir):
                mine[d].append(p)
            elif is_dir:
                subdirs[d].append(p)
                todo.append(p)
            else:
                has_files.add(d)
    tops: dict[bytes, list[bytes]] = {}
    whole: set[bytes] = set()
    for d in reversed(order):  # children before parents
        if (
            d != ROOT
            and d not in has_files
            and (mine[d] or subdirs[d])
            and all(sub in whole for sub in subdirs[d])
        ):
            whole.add(d)
            tops[d] = [d]
        else:
            tops[d] = mine[d] + [p for sub in subdirs[d] for p in tops[sub]]
    return sorted(tops[ROOT])


@dataclass(frozen=True, slots=True)
class Visit:
    """A path met on a top-down walk: ``kind`` of the working tree's node."""

    path: bytes
    kind: Kind


def ignored_tops(
    visits: Iterable[Visit], tracked: Callable[[bytes], bool], rules: IgnoreRules
) -> list[bytes]:
    """The topmost ignored paths among ``visits`` (parents before children,
    root skipped): a path is ignored if it is not ``tracked`` (in HEAD) and
    it or one of its directories is excluded. Whiteouts (deletions) are
    never ignored."""
    excluded: set[bytes] = set()
    ignored: set[bytes] = set()
    tops = []
    for v in visits:
        p = v.path
        if p == ROOT:
            continue
        i = p.rfind(b"/")
        parent = ROOT if i < 0 else p[:i]
        if parent in ignored:
            ignored.add(p)
            continue
        ex = parent in excluded or rules.match(p, v.kind is Kind.DIR)
        if not ex or v.kind is Kind.WHITEOUT:
            continue
        excluded.add(p)
        if not tracked(p):
            ignored.add(p)
            tops.append(p)
    return tops


def drop_ignored(changes: list[Change], tops: Sequence[bytes]) -> tuple[list[Change], list[bytes]]:
    """``changes`` without the ignored paths (``tops`` and below), and the
    topmost ignored paths: ``tops`` plus each added directory that holds
    ignored paths and nothing else (git lists it as one ignored directory).
    Both sorted by path."""
    top_set = set(tops)

    def under_top(p: bytes) -> bool:
        while True:
            if p in top_set:
                return True
            i = p.rfind(b"/")
            if i < 0:
                return False
            p = p[:i]

    kept = [c for c in changes if not under_top(c.path)] if top_set else list(changes)
    holders = {_parent(p) for p in top_set}
    kids: dict[bytes, list[bytes]] = {}
    for c in kept:
        if c.path != ROOT:
            kids.setdefault(_parent(c.path), []).append(c.path)
    added_dirs = [
        c.path
        for c in kept
        if c.type is ChangeType.ADDED and c.new is not None and c.new.kind is Kind.DIR
    ]
    collapsed: set[bytes] = set()
    for d in sorted(added_dirs, key=lambda p: -p.count(b"/")):
        mine = kids.get(d, [])
        if all(k in collapsed for k in mine) and (d in holders or mine):
            collapsed.add(d)
    if collapsed:
        top_set |= collapsed
        kept = [c for c in kept if not under_top(c.path)]
    out = sorted(p for p in top_set if not _below_any(p, top_set))
    return kept, out


def _parent(p: bytes) -> bytes:
    i = p.rfind(b"/")
    return ROOT if i < 0 else p[:i]


def _below_any(p: bytes, tops: set[bytes]) -> bool:
    while True:
        i = p.rfind(b"/")
        if i < 0:
            return False
        p = p[:i]
        if p in tops:
            return True
