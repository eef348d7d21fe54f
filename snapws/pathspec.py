"""Pathspecs as git's default ones (no ``:(magic)``): which paths of a tree a
list of command-line paths selects.

A pathspec without glob characters (``*``, ``?``, ``[``) selects that path
and everything below it (``src`` selects ``src/a``, not ``srcs``). One with
them is matched as git matches it, by fnmatch on the whole path without
``FNM_PATHNAME``: ``*`` and ``?`` also match ``/``, so ``*.bin`` selects
``.bin`` files at any depth and ``src/*.bin`` those anywhere below ``src``;
the pathspec taken literally (a file named ``[x]``) still selects, as in
git. Matching a directory by a glob does not select what is below it
(git: ``'sub?'`` selects the entry ``sub1``, not ``sub1/f``).

Items are relative to the workspace root (``.`` is the root), as
:meth:`snapws.cli.app.App.rel_paths` makes them. Pure; imports nothing
from snapws.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

ROOT = b"."
_GLOB_CHARS = frozenset(b"*?[")


def has_glob(item: str | bytes) -> bool:
    """True if ``item`` has a glob character (``*``, ``?``, ``[``)."""
    raw = item.encode("utf-8", "surrogateescape") if isinstance(item, str) else item
    return any(c in _GLOB_CHARS for c in raw)


def _under(path: bytes, top: bytes) -> bool:
    return top == ROOT or path == top or path.startswith(top + b"/")


def _literal_root(item: bytes) -> bytes:
    """The deepest directory below which every path ``item`` can match
    lies: the part before its first glob character, up to a ``/``."""
    first = min(i for i, c in enumerate(item) if c in _GLOB_CHARS)
    head = item[:first].rpartition(b"/")[0]
    return head or ROOT


@dataclass(frozen=True, slots=True)
class Pathspec:
    """The pathspecs of one command; none selects every path."""

    items: tuple[bytes, ...]

    @property
    def globs(self) -> bool:
        """True if one of the items has glob characters."""
        return any(has_glob(i) for i in self.items)

    @property
    def roots(self) -> tuple[bytes, ...]:
        """Paths (no globs) below which all selected paths lie: each literal
        item, and each glob's leading directory, for a cheap first cut
        (:func:`snapws.ops.worktree.diff.diff`'s ``paths``); empty when
        there are no items."""
        return tuple(dict.fromkeys(_literal_root(i) if has_glob(i) else i for i in self.items))

    def item_matches(self, item: bytes, path: bytes) -> bool:
        """Whether ``item`` (one of :attr:`items`) selects ``path``."""
        if _under(path, item):
            return True
        return has_glob(item) and fnmatchcase(path, item)

    def matches(self, path: bytes) -> bool:
        """Whether ``path`` (relative to the root) is selected."""
        return not self.items or any(self.item_matches(i, path) for i in self.items)

    def select(self, paths: Iterable[bytes]) -> list[bytes]:
        """The selected ones of ``paths``, in their order."""
        return [p for p in paths if self.matches(p)]
