"""Ignored paths of an overlay workspace: the rules of its working tree,
and carrying ignored entries from an upperdir that is about to become a
layer (commit) or be discarded (checkout, reset --hard) into the next one,
so that they stay where they are, as git's ignored files do."""

from __future__ import annotations

import os
from pathlib import Path

from snapws.crash import crashpoint
from snapws.layers.ignore import IgnoreRules
from snapws.layers.view import ChainView
from snapws.model import Kind
from snapws.ops.workspace import Session, copy_dir_meta


def ignore_rules(session: Session) -> IgnoreRules:
    """The rules of the session's working tree: its ``.snapwsignore`` files
    (read through the workspace path) below the configuration's ``ignore``."""
    return IgnoreRules.for_tree(os.fsencode(session.path), session.config.ignore)


def fits(view: ChainView, path: bytes) -> bool:
    """Whether an ignored ``path`` can be carried onto ``view`` (the new
    chain) unchanged: the view has nothing there and no non-directory above
    it. Otherwise the view's tracked path wins, as git's checkout overwrites
    ignored files."""
    if view.locate(path) is not None:
        return False
    while b"/" in path:
        path = path[: path.rfind(b"/")]
        loc = view.locate(path)
        if loc is not None:
            return loc.node.kind is Kind.DIR
    return True


def carriable(upper: bytes, tops: list[bytes], view: ChainView) -> list[bytes]:
    """The ignored paths of upperdir ``upper`` (``tops``, topmost) that can
    go onto ``view`` (:func:`fits`); of an ignored directory the view has a
    directory at, the entries below that fit, at any depth. Raises OSError."""
    out = []
    todo = list(tops)
    while todo:
        p = todo.pop()
        if fits(view, p):
            out.append(p)
            continue
        loc = view.locate(p)
        src = upper + b"/" + p
        is_dir = os.path.isdir(src) and not os.path.islink(src)
        if loc is not None and loc.node.kind is Kind.DIR and is_dir:
            todo.extend(p + b"/" + name for name in os.listdir(src))
    return sorted(out)


def carry_ignored(src: Path, dst: Path, paths: list[str]) -> None:
    """Move each of ``paths`` (relative) from upperdir ``src`` to upperdir
    ``dst`` (both on one filesystem, ``dst`` existing), making its
    directories in ``dst`` with the metadata of those in ``src``; both
    parents keep their mtimes. Idempotent: a path gone from ``src`` was
    moved already (a run after a crash; crash step ``carry:moved:N`` after
    the N-th move). Raises OSError."""
    moved = 0
    for rel in paths:
        source = src / rel
        if not os.path.lexists(source):
            continue
        target = dst / rel
        _make_parents(src, dst, Path(rel).parent)
        times = [os.lstat(source.parent).st_mtime_ns, os.lstat(target.parent).st_mtime_ns]
        os.rename(source, target)
        os.utime(source.parent, ns=(times[0], times[0]), follow_symlinks=False)
        os.utime(target.parent, ns=(times[1], times[1]), follow_symlinks=False)
        moved += 1
        crashpoint("carry:moved", moved)


def _make_parents(src: Path, dst: Path, rel: Path) -> None:
    """Make directory ``dst/rel`` and its missing parents as copies of the
    directories of ``src``."""
    missing = []
    d = rel
    while str(d) != "." and not (dst / d).is_dir():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        # made whole under a temporary name, then renamed: a crash never
        # leaves a directory without its metadata (a mode change to show)
        tmp = dst / d.parent / f".{d.name}.snapws-tmp"
        if tmp.exists():
            tmp.rmdir()
        tmp.mkdir()
        copy_dir_meta(src / d, tmp)
        os.rename(tmp, dst / d)
