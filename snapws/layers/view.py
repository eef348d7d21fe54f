"""The merged view of a chain of layer trees, read without mounting.

Implements overlayfs lookup rules in user space: the topmost layer that has a
path wins; a whiteout deletes it; an opaque directory, or a non-directory at an
ancestor, hides everything below it in older layers. Used for status (lower
side), diffs between snapshots, and restore, and costs a few ``lstat`` per
layer per path, never a walk of the whole tree unless asked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from snapws.deeppath import anchored, lstat, open_fd
from snapws.layers import fuseform
from snapws.layers.entries import (
    Node,
    child,
    has_opaque_marker,
    is_whiteout,
    join,
    node_entry,
    parent_of,
    read_node,
)
from snapws.layers.hashcache import HashCache as HashCache
from snapws.model import ROOT, Entry, Kind

_OPEN, _ABSENT, _BLOCKED = 0, 1, 2  # what a lookup of a directory meets (ChainView._way)


@dataclass(frozen=True, slots=True)
class Located:
    """Where a path of the merged view lives: layer index (0 = topmost) and node."""

    layer: int
    node: Node


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


class ChainView:
    """Read-only merged view of layer tree directories, ``layers[0]`` topmost."""

    def __init__(
        self,
        layers: Sequence[bytes | str],
        hashes: HashCache | None = None,
        upper_form: str = "overlay",
    ) -> None:
        """``upper_form`` "fuse": ``layers[0]`` is an upperdir of
        fuse-overlayfs, whose ``.wh.`` bookkeeping names are not part of the
        view (see :mod:`snapws.layers.fuseform`)."""
        self.layers = [os.fsencode(p) for p in layers]
        self.hashes = hashes if hashes is not None else HashCache()
        self._fuse_top = upper_form == fuseform.FORM
        # Lookups of ancestors repeat for every path below them: remember
        # (layer, directory) -> what the way down to it meets, and whole
        # results. A view is used for one operation, so its layers do not
        # change under it.
        self._ways: dict[tuple[int, bytes], tuple[int, bool]] = {}
        self._located: dict[bytes, Located | None] = {}

    def locate(self, path: bytes) -> Located | None:
        """The node that ``path`` shows in the merged view, or None if absent."""
        try:
            return self._located[path]
        except KeyError:
            pass
        loc = self._locate(path)
        self._located[path] = loc
        return loc

    def _locate(self, path: bytes) -> Located | None:
        if path == ROOT:
            if not self.layers:
                return None
            top = self.layers[0]
            return Located(0, read_node(ROOT, top))
        name = path[path.rfind(b"/") + 1 :]
        for i, layer in enumerate(self.layers):
            if i == 0 and self._fuse_top and fuseform.is_bookkeeping(name):
                continue
            found, stop = self._probe(i, path)
            if found is not None:
                if is_whiteout(found):
                    return None
                return Located(i, read_node(path, join(layer, path), found))
            if stop:
                return None
        return None

    def _way(self, i: int, rel: bytes) -> tuple[int, bool]:
        """What looking directory ``rel`` up in layer ``i`` meets:
        (:data:`_OPEN`, :data:`_ABSENT` or :data:`_BLOCKED`, hidden), where
        _OPEN means ``rel`` and its ancestors are directories there, _ABSENT
        that one is missing, _BLOCKED that one is a whiteout or not a
        directory; hidden that one of those met is opaque. Each directory is
        read once per layer (remembered), so a path costs its parent's
        lookup, not one per level."""
        ways = self._ways
        pending = []
        cur = rel
        while cur != ROOT and (i, cur) not in ways:
            pending.append(cur)
            cur = parent_of(cur)
        state, hidden = (_OPEN, False) if cur == ROOT else ways[(i, cur)]
        for d in reversed(pending):
            if state == _OPEN:
                abspath = self.layers[i] + b"/" + d
                st = _lstat(abspath)
                if st is None:
                    state = _ABSENT
                elif is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    state, hidden = _BLOCKED, True
                elif _is_opaque(abspath):
                    hidden = True
            ways[(i, d)] = (state, hidden)
        return state, hidden

    def _probe(self, i: int, path: bytes) -> tuple[os.stat_result | None, bool]:
        """Look ``path`` (not the root) up in layer ``i``. Returns (stat of
        the path or None, hidden) where hidden means older layers cannot show
        this path (an ancestor here is opaque, deleted, or not a directory)."""
        parent = parent_of(path)
        state, hidden = (_OPEN, False) if parent == ROOT else self._way(i, parent)
        if state == _ABSENT:
            return None, hidden
        if state == _BLOCKED:
            return None, True
        return _lstat(self.layers[i] + b"/" + path), hidden

    def reaches(self, path: bytes) -> bool:
        """True if looking ``path`` up through the layers meets an entry or a
        whiteout (a directory made there through an overlay of these layers
        would be made opaque). ``path`` is not the root."""
        for i in range(len(self.layers)):
            found, stop = self._probe(i, path)
            if found is not None:
                return True
            if stop:
                return False
        return False

    def entry(self, path: bytes) -> Entry | None:
        """The manifest-style entry of ``path`` (files hashed, cached)."""
        loc = self.locate(path)
        if loc is None:
            return None
        return self.entry_of(loc)

    def entry_of(self, loc: Located) -> Entry:
        node = loc.node
        digest = self.hashes.get(node.abspath) if node.kind is Kind.FILE else None
        return node_entry(node, digest)

    def listdir(self, path: bytes) -> dict[bytes, Located]:
        """Children of directory ``path`` in the merged view, sorted by name
        (empty if ``path`` is not a directory)."""
        loc = self.locate(path)
        if loc is None or loc.node.kind is not Kind.DIR:
            return {}
        seen: dict[bytes, Located | None] = {}
        for i in range(loc.layer, len(self.layers)):
            layer = self.layers[i]
            hidden = False
            st: os.stat_result | None
            if path == ROOT:
                st = os.lstat(layer)
            elif i == loc.layer:
                st = loc.node.st
                _, hidden = self._probe(i, path)
            else:
                st, hidden = self._probe(i, path)
            if st is None:
                if hidden:
                    break
                continue
            if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                break
            d = join(layer, path)
            fd = open_fd(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for entry in os.listdir(fd):
                    name = os.fsencode(entry)
                    if name in seen or (
                        i == 0 and self._fuse_top and fuseform.is_bookkeeping(name)
                    ):
                        continue
                    cst = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                    if is_whiteout(cst):
                        seen[name] = None
                    else:
                        seen[name] = Located(i, read_node(child(path, name), d + b"/" + name, cst))
                opaque = path != ROOT and has_opaque_marker(fd)
            finally:
                os.close(fd)
            if hidden or opaque:
                break
        return {k: v for k, v in sorted(seen.items()) if v is not None}

    def walk(self, path: bytes = ROOT) -> Iterator[Located]:
        """Every node at or below ``path``, parents before children."""
        loc = self.locate(path)
        if loc is None:
            return
        stack = [loc]
        with anchored():
            while stack:
                cur = stack.pop()
                yield cur
                if cur.node.kind is Kind.DIR:
                    kids = list(self.listdir(cur.node.path).values())
                    stack.extend(reversed(kids))


def _is_opaque(abspath: bytes) -> bool:
    return has_opaque_marker(abspath)  # trusted.* or user.* form
