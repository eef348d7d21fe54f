"""Changes between two merged views, at the cost of what the layers between
them touched, not of the size of the tree."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable, Sequence

from snapws.deeppath import anchored, open_fd
from snapws.layers.entries import (
    child,
    has_opaque_marker,
    in_or_below_any,
    is_under,
    is_whiteout,
    on_the_way,
)
from snapws.layers.view import ChainView
from snapws.model import ROOT, Change, Kind, classify


def touched_paths(layer_dirs: Iterable[bytes]) -> tuple[set[bytes], set[bytes]]:
    """Walk layer trees (overlay form). Returns (every path present in any of
    them, the paths below which older content may vanish: whiteouts and opaque
    directories)."""
    paths: set[bytes] = set()
    expand: set[bytes] = set()
    with anchored():
        for layer in layer_dirs:
            paths.add(ROOT)
            stack = [(ROOT, layer)]
            while stack:
                rel, abspath = stack.pop()
                fd = open_fd(abspath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    for name in os.listdir(fd):
                        bname = os.fsencode(name)
                        p = child(rel, bname)
                        paths.add(p)
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        if is_whiteout(st):
                            expand.add(p)
                        elif stat.S_ISDIR(st.st_mode):
                            if _opaque(fd, name):
                                expand.add(p)
                            stack.append((p, abspath + b"/" + bname))
                        else:
                            expand.add(p)  # may replace an older directory
                finally:
                    os.close(fd)
    return paths, expand


def _opaque(dir_fd: int, name: str) -> bool:
    return has_opaque_marker(b"/proc/self/fd/%d/%s" % (dir_fd, os.fsencode(name)))  # any form


def diff_views(
    old: ChainView,
    new: ChainView,
    layer_dirs: Sequence[bytes],
    under: Sequence[bytes] = (),
    skip: Collection[bytes] = (),
) -> list[Change]:
    """Changes from ``old`` to ``new``, given every layer tree that is in one
    chain but not the other (``layer_dirs``). ``under`` restricts the result
    to paths at or below the given ones; paths at or below one of ``skip``
    (ignored paths) are left out unread. Sorted by path; directories appear
    as entries of their own. Raises OSError on unreadable layers."""
    with anchored():  # paths beyond PATH_MAX share their anchors
        return _diff_views(old, new, layer_dirs, under, skip)


def _diff_views(
    old: ChainView,
    new: ChainView,
    layer_dirs: Sequence[bytes],
    under: Sequence[bytes],
    skip: Collection[bytes],
) -> list[Change]:
    paths, expand = touched_paths(layer_dirs)
    candidates = {p for p in paths if on_the_way(p, under)}
    for top in expand:
        if not on_the_way(top, under):
            continue
        for view in (old, new):
            loc = view.locate(top)
            if loc is not None and loc.node.kind is Kind.DIR:
                candidates.update(
                    w.node.path for w in view.walk(top) if on_the_way(w.node.path, under)
                )
    if skip:
        skipped = in_or_below_any(skip)
        candidates = {p for p in candidates if not skipped(p)}
    changes = []
    for p in sorted(candidates):
        if under and not any(is_under(p, u) for u in under):
            continue  # an ancestor of a selected path: only needed for the walk
        lo = old.locate(p)
        ln = new.locate(p)
        if lo is None and ln is None:
            continue
        if lo is not None and ln is not None and lo.node.abspath == ln.node.abspath:
            continue  # the very same file of a shared layer
        eo = old.entry_of(lo) if lo is not None else None
        en = new.entry_of(ln) if ln is not None else None
        c = classify(p, eo, en)
        if c is not None:
            changes.append(c)
    return changes
