"""Scanning a layer tree into manifest entries, and planning a commit of an
upperdir (which copy-ups changed nothing and can be dropped)."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from snapws.deeppath import anchored, lexists, lstat, open_fd, reach
from snapws.errors import LayerRejectedError, StoreCorruptError
from snapws.ids import ContentHash
from snapws.layers import fuseform
from snapws.layers.entries import (
    OPAQUE_XATTRS,
    Node,
    child,
    is_overlay_xattr,
    join,
    node_entry,
    opaque_xattr,
    parent_of,
    read_node,
)
from snapws.layers.hashing import hash_files
from snapws.layers.ignore import IgnoreRules, Visit, drop_ignored, ignored_tops
from snapws.layers.manifestdiff import ManifestChain
from snapws.layers.upperdiff import diff_upper
from snapws.layers.view import ChainView, HashCache
from snapws.model import ROOT, Change, Entry, Kind, display_path

#: For :func:`read_tree`: the node at (path, absolute path, lstat) as a
#: caller already knows it (a partial :class:`Node`), or None to read it.
Known = Callable[[bytes, bytes, os.stat_result], Node | None]


def read_tree(root: bytes, form: str = "overlay", known: Known | None = None) -> list[Node]:
    """Every node of the tree at ``root`` (root included as ``b"."``), parents
    before children. ``form`` "fuse": an upperdir of fuse-overlayfs, whose
    ``.wh.`` bookkeeping entries are left out (see
    :mod:`snapws.layers.fuseform`). An entry that vanishes while it is
    read (the upperdir of a live mount, see
    :meth:`snapws.backends.overlay.OverlayBackend.quiesce`) is left out.
    ``known``: a node it returns is taken as it is, its attributes and
    target unread (:attr:`Node.partial`). Raises OSError, LayerRejectedError."""
    with anchored():
        nodes = [read_node(ROOT, root)]
        stack = [(ROOT, root)]
        while stack:
            rel, abspath = stack.pop()
            dirs = []
            for name, st in _entries(abspath, rel == ROOT):
                p = child(rel, name)
                if form == fuseform.FORM and fuseform.is_bookkeeping(name):
                    fuseform.check_bookkeeping(name, st, p)
                    continue
                node = known(p, abspath + b"/" + name, st) if known is not None else None
                if node is None:
                    try:
                        node = read_node(p, abspath + b"/" + name, st)
                    except FileNotFoundError:
                        continue  # removed since it was listed
                nodes.append(node)
                if node.kind is Kind.DIR:
                    dirs.append((p, node.abspath))
            stack.extend(reversed(dirs))
    return nodes


def _entries(abspath: bytes, root: bool = True) -> list[tuple[bytes, os.stat_result]]:
    """The entries of directory ``abspath`` (however long), sorted by name,
    with their lstat; those removed meanwhile are left out, and so is the
    whole directory unless it is the ``root``. Raises OSError."""
    try:
        fd = open_fd(abspath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        if root:
            raise
        return []  # removed (or replaced) since it was listed
    try:
        names = sorted(os.fsencode(n) for n in os.listdir(fd))
        out = []
        for n in names:
            try:
                out.append((n, os.stat(n, dir_fd=fd, follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed since it was listed
        return out
    finally:
        os.close(fd)


def entries_of(
    nodes: list[Node],
    threads: int = 8,
    progress: Callable[[int], None] | None = None,
    known: HashCache | None = None,
) -> list[Entry]:
    """Manifest entries for ``nodes``: files hashed (in parallel; hashes in
    ``known`` are reused), hardlink groups recorded (the smallest path of a
    group is its leader; whiteouts, which the kernel hardlinks to one inode,
    never count as links). Raises OSError."""
    files = [n for n in nodes if n.kind is Kind.FILE]
    digests: dict[bytes, ContentHash] = {}
    todo = []
    for n in files:
        h = known.known_for(n.abspath, n.st) if known is not None else None
        if h is None:
            todo.append(n)
        else:
            digests[n.path] = h
    hashed_at = time.time_ns()
    hashed = hash_files([n.abspath for n in todo], threads, progress, [n.st.st_size for n in todo])
    for n, h in zip(todo, hashed, strict=True):
        digests[n.path] = h
        if known is not None:
            known.learn(n.abspath, n.st, h, hashed_at)
    leaders: dict[tuple[int, int], bytes] = {}
    for n in sorted(files, key=lambda n: n.path):
        if n.st.st_nlink > 1:
            leaders.setdefault((n.st.st_dev, n.st.st_ino), n.path)
    out = []
    for n in nodes:
        e = node_entry(n, digests.get(n.path))
        if n.kind is Kind.FILE and n.st.st_nlink > 1:
            lead = leaders[(n.st.st_dev, n.st.st_ino)]
            if lead != n.path:
                e = replace(e, link=lead)
        out.append(e)
    return out


@dataclass(slots=True)
class CommitPlan:
    """What committing an upperdir means, computed without changing anything.

    ``prune`` lists upper paths (deepest first) that are copy-ups equal to what
    lies below and can be removed (directories holding ignored paths among
    them: they are empty once those are moved out); ``changes`` is what a
    user would see; ``keep`` are the nodes that stay and make the new layer;
    ``ignored`` the topmost ignored paths (untracked, excluded by the ignore
    rules), which are in none of the others, ``tops`` the same before added
    directories holding only ignored paths are counted; ``nodes`` every node of U
    (parents before children). Not ``compared`` (:func:`plan_upper`): no
    changes, no prune, and ``keep`` only what shapes the tree whatever
    changed (whiteouts, opaque directories and all below them, their
    parents)."""

    compared: bool = True
    changes: list[Change] = field(default_factory=list)
    prune: list[bytes] = field(default_factory=list)
    keep: list[Node] = field(default_factory=list)
    forbidden: list[tuple[bytes, str]] = field(default_factory=list)
    ignored: list[bytes] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    tops: list[bytes] = field(default_factory=list)

    def prune_around_ignored(self) -> list[bytes]:
        """``prune`` without the directories that hold ignored paths (for an
        upperdir that stays, ignored paths included)."""
        assert self.compared, "a plan made without comparing has no prune"
        holders = {a for p in self.ignored for a in _ancestors(p)}
        return [p for p in self.prune if p not in holders]


def _ancestors(path: bytes) -> list[bytes]:
    out = []
    while b"/" in path:
        path = path[: path.rfind(b"/")]
        out.append(path)
    return out


def plan_upper(
    upper: bytes,
    lower: ChainView,
    form: str = "overlay",
    ignore: IgnoreRules | None = None,
    manifests: ManifestChain | None = None,
    compare: bool = True,
    tracked: Callable[[bytes], bool] | None = None,
    known: Known | None = None,
) -> CommitPlan:
    """Compare the upperdir ``upper`` with the merged ``lower`` view.

    With ``ignore``, paths of U that are not in ``lower`` (HEAD) and that
    the rules exclude are no change: they are listed in ``ignored`` (see
    :mod:`snapws.layers.ignore`), unread beyond their names.

    ``form`` is how U encodes its changes: "overlay" (the kernel's) or
    "fuse" (fuse-overlayfs's: bookkeeping names are skipped and opaque
    markers that hide nothing are not kept, see :mod:`snapws.layers.fuseform`).
    Raises LayerRejectedError if U carries redirect, metacopy or whiteout
    attributes, or an opaque attribute other than ``y`` (see
    :data:`snapws.layers.entries.FORBIDDEN_XATTRS`).

    ``manifests``: ``lower``'s chain as its layers' manifests, which then
    stand for the layer trees (:func:`snapws.layers.upperdiff.diff_upper`:
    no layer below U is probed or hashed); raises StoreCorruptError if one
    is damaged.

    ``compare`` False (with ``manifests``): U is read and checked, its
    ignored paths found, but not compared (a held workspace compares U with
    HEAD, not with the chain below it, :mod:`snapws.backends.held`): the
    plan is not ``compared``.

    ``tracked``: which paths the ignore rules leave alone, as tracked
    (default: those in ``lower``); ``plan.tops`` are the topmost ignored
    paths it found. ``known``: nodes of U taken as known (:func:`read_tree`),
    for a caller that compares none of them."""
    with anchored():  # paths may be longer than PATH_MAX
        return _plan_upper(upper, lower, form, ignore, manifests, compare, tracked, known)


def _plan_upper(
    upper: bytes,
    lower: ChainView,
    form: str,
    ignore: IgnoreRules | None,
    manifests: ManifestChain | None,
    compare: bool = True,
    tracked: Callable[[bytes], bool] | None = None,
    known: Known | None = None,
) -> CommitPlan:
    from snapws.layers.diff import diff_views  # local: diff imports view too

    nodes = read_tree(upper, form, known)
    if form == fuseform.FORM:
        shows = {n.path: lower.reaches(n.path) for n in nodes if n.opaque and n.path != ROOT}
        nodes = fuseform.canonical_opaque(nodes, shows)
    plan = CommitPlan(nodes=nodes)
    for n in nodes:
        for name in n.forbidden:
            plan.forbidden.append((n.path, name))
    if plan.forbidden:
        path, name = plan.forbidden[0]
        raise LayerRejectedError(
            f"the upperdir has {name} on {display_path(path)}: an overlayfs attribute "
            "snapws never writes (left by a mount with redirect_dir or metacopy on, "
            "or planted), so the upperdir is not a complete diff"
        )
    tops: list[bytes] = []
    if manifests is None:
        if ignore is not None:
            in_lower = tracked or (lambda p: lower.locate(p) is not None)
            tops = ignored_tops(visits_of(nodes), in_lower, ignore)
        merged = ChainView([upper, *lower.layers], lower.hashes, upper_form=form)
        plan.changes = diff_views(lower, merged, [upper], skip=set(tops))
    else:
        chain = manifests
        try:
            if ignore is not None:
                in_chain = tracked or (lambda p: chain.locate(p) is not None)
                tops = ignored_tops(visits_of(nodes), in_chain, ignore)
            if compare:
                plan.changes = diff_upper(nodes, chain, chain, lower.hashes, set(tops))
            else:
                plan.compared = False
        except ValueError as e:  # a manifest line read on the way
            raise StoreCorruptError(f"a layer has a damaged manifest: {e}") from e
    plan.tops = tops
    if tops:
        plan.changes, plan.ignored = drop_ignored(plan.changes, tops)
    ignored = set(plan.ignored)  # and, below, everything under them
    changed = {c.path for c in plan.changes}
    # a node must stay if it changed, or is a directory holding a kept node,
    # or is an opaque directory / whiteout (they change what lies below), or
    # lies below an opaque directory (removing it would not expose the lower
    # copy, which the opaque directory hides: it would delete the path)
    keep_paths: set[bytes] = {ROOT}
    hiding: set[bytes] = set()  # opaque directories of U and all below them
    for n in nodes:  # parents come before children
        if ignored and n.path != ROOT and (n.path in ignored or parent_of(n.path) in ignored):
            ignored.add(n.path)
            continue
        if n.opaque or (n.path != ROOT and parent_of(n.path) in hiding):
            hiding.add(n.path)
        if n.path in changed or n.kind is Kind.WHITEOUT or n.path in hiding:
            keep_paths.add(n.path)
    for p in list(keep_paths):
        while p != ROOT:
            i = p.rfind(b"/")
            p = ROOT if i < 0 else p[:i]
            if p in keep_paths:
                break
            keep_paths.add(p)
    for n in nodes:
        if n.path in keep_paths:
            plan.keep.append(n)
    if plan.compared:
        plan.prune = sorted(
            (n.path for n in nodes if n.path not in keep_paths and n.path not in ignored),
            key=lambda p: (-p.count(b"/"), p),
        )
    return plan


def visits_of(nodes: list[Node]) -> Iterator[Visit]:
    """The nodes of :func:`read_tree` as :func:`ignored_tops` takes them."""
    return (Visit(n.path, n.kind) for n in nodes)


def ignored_in_upper(upper: bytes, lower: ChainView, form: str, ignore: IgnoreRules) -> list[bytes]:
    """The topmost ignored paths of upperdir ``upper`` over HEAD's view
    ``lower`` (what :func:`plan_upper` puts in ``ignored``, without
    collapsing directories that hold only ignored paths, and without
    comparing anything). Raises OSError, LayerRejectedError."""
    return ignored_tops(_visits(upper, form), lambda p: lower.locate(p) is not None, ignore)


def _visits(root: bytes, form: str) -> Iterator[Visit]:
    """The entries of upperdir ``root``, parents before children, by name
    and kind only (a cheap walk: no attributes read); fuse-overlayfs
    bookkeeping names are skipped."""
    stack = [(ROOT, root)]
    with anchored():
        while stack:
            rel, abspath = stack.pop()
            fd = open_fd(abspath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with os.scandir(fd) as it:
                    ents = sorted(it, key=lambda d: os.fsencode(d.name))
                dirs = []
                kinds = []
                for de in ents:
                    name = os.fsencode(de.name)
                    if form == fuseform.FORM and fuseform.is_bookkeeping(name):
                        continue
                    p = child(rel, name)
                    kind = Kind.FILE  # (or any other kind: only directories and whiteouts matter)
                    if de.is_dir(follow_symlinks=False):
                        kind = Kind.DIR
                        dirs.append((p, abspath + b"/" + name))
                    elif not de.is_file(follow_symlinks=False) and not de.is_symlink():
                        st = de.stat(follow_symlinks=False)
                        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                            kind = Kind.WHITEOUT
                    kinds.append(Visit(p, kind))
            finally:
                os.close(fd)
            yield from kinds  # (no descriptor held while the caller runs)
            stack.extend(reversed(dirs))


def prune_upper(upper: bytes, paths: list[bytes]) -> None:
    """Remove the given copy-ups from a frozen, unmounted upperdir (deepest
    first; directories must be empty by then). Paths already gone are
    skipped (a run after a crash); the directories that stay keep their
    mtimes. Raises OSError."""
    with anchored():
        paths = [p for p in paths if lexists(upper + b"/" + p)]
        gone = set(paths)
        times = {}
        for d in {parent_of(p) for p in paths} - gone:
            times[d] = lstat(join(upper, d)).st_mtime_ns
        for p in paths:
            with reach(upper + b"/" + p) as short:
                st = os.lstat(short)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(short)
                else:
                    os.unlink(short)
        for d, t in times.items():
            with reach(join(upper, d)) as short:
                os.utime(short, ns=(t, t), follow_symlinks=False)


def strip_overlay_xattrs(nodes: list[Node], form: str | None = None) -> None:
    """Remove overlay bookkeeping (origin, impure, ...; any form) from kept
    nodes; only the opaque marker stays, since it is part of the layer's
    meaning. With ``form`` ("trusted" or "user", the store's), an opaque
    directory ends up with exactly the marker of that form (fuse-overlayfs
    writes its own); without it, opaque markers stay as they are (a kernel
    mount writes the store's form already). Raises OSError."""
    keep = opaque_xattr(form) if form is not None else None
    with anchored():
        for n in nodes:
            if n.kind is not Kind.WHITEOUT:
                with reach(n.abspath) as short:
                    _strip_node(short, n.opaque, keep)


def strip_known_overlay_xattrs(nodes: Sequence[Node]) -> None:
    """:func:`strip_overlay_xattrs` (the kernel's form) of nodes read
    whole (:func:`read_tree`) from an upperdir that has not changed since:
    the overlay attributes they were read with are removed, but the opaque
    markers, and no attribute is listed again. Raises OSError."""
    with anchored():
        for n in nodes:
            names = [k for k, _ in n.overlay if k not in OPAQUE_XATTRS]
            if names:
                with reach(n.abspath) as short:
                    for name in names:
                        try:
                            os.removexattr(short, name, follow_symlinks=False)
                        except OSError as e:
                            if e.errno != errno.ENODATA:  # (gone already is fine)
                                raise


def _strip_node(path: bytes, opaque: bool, keep: str | None) -> None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return
    if keep is not None and opaque and keep not in names:
        os.setxattr(path, keep, b"y", follow_symlinks=False)
    for name in names:
        if not is_overlay_xattr(name) or name == keep:
            continue
        if keep is None and name in OPAQUE_XATTRS:
            continue
        os.removexattr(path, name, follow_symlinks=False)
