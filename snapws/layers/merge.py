"""Merging a contiguous run of layers into one equivalent layer.

A run is some consecutive layers of a chain, given topmost first. The merged
layer, stacked on the layers below the run, shows exactly what the run showed
there. It is computed from the run's manifests alone (no tree walk, no
re-hashing), by the overlayfs lookup rules:

- the topmost layer of the run that has a path decides what it is;
- a whiteout, a non-directory, or an opaque directory in the run hides the
  older layers' content at that path (a non-directory hides a whole subtree);
- a directory's entries merge through the run's layers until one of them
  stops the merge (opaque, or a whiteout / non-directory at that path).

What the merged layer must say about the layers BELOW the run:

- a path deleted in the run (a whiteout wins) stays a whiteout: it may exist
  below. Whiteouts inside a directory that already hides everything below
  (see next point) are dropped, as are entries hidden within the run;
- a directory whose merge stopped inside the run (it replaced an older
  directory or file, or it was opaque) becomes opaque
  (``trusted.overlay.opaque=y``, or ``user.overlay.opaque=y`` in a store of
  the "user" form), unless its parent already hides everything below, in
  which case the marker would say nothing.

A run that includes the chain's bottom layer (``bottom=True``) has nothing
below it: no whiteouts and no opaque markers remain.

Non-directories of the merged tree are hardlinks of the source layers' inodes
(layers are immutable), so a merge costs metadata, not data: one ``link`` per
entry, one ``mkdir`` and a few attribute calls per directory, one ``mknod``
per whiteout. A file whose inode reached the filesystem's hardlink limit is
copied instead. Hardlink groups of a source layer stay groups (``link`` names
the smallest surviving path of the group).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from snapws.layers.entries import join, ns_ids, opaque_xattr, parent_of, read_node
from snapws.layers.materialise import materialise
from snapws.model import ROOT, Entry, Kind, encode_manifest


@dataclass(frozen=True, slots=True)
class RunLayer:
    """One layer of a run: its tree (overlay form) and its manifest entries."""

    tree: bytes
    entries: Sequence[Entry]


@dataclass(frozen=True, slots=True)
class MergedEntry:
    """An entry of the merged layer and the index (in the run, 0 = topmost)
    of the layer whose node it is (None for directories and whiteouts, which
    are made anew)."""

    entry: Entry
    source: int | None


class _Index:
    """A layer's manifest by path, and the names below each directory."""

    __slots__ = ("by_path", "kids")

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.by_path: dict[bytes, Entry] = {}
        self.kids: dict[bytes, list[bytes]] = {}
        for e in entries:
            self.by_path[e.path] = e
            if e.path != ROOT:
                self.kids.setdefault(parent_of(e.path), []).append(e.path)


def merge_entries(layers: Sequence[Sequence[Entry]], bottom: bool) -> list[MergedEntry]:
    """The entries of the layer equal to ``layers`` (manifests, topmost
    first), parents before children. ``bottom``: the run includes the chain's
    bottom layer (nothing below it: no whiteouts or opaque markers needed).
    Hardlink leaders (``link``) are recomputed for the merged layer."""
    idx = [_Index(entries) for entries in layers]
    roots = [i for i, ix in enumerate(idx) if ROOT in ix.by_path]
    if not roots:
        return []
    out: list[MergedEntry] = [MergedEntry(replace(idx[roots[0]].by_path[ROOT], opaque=False), None)]
    # (directory, the layers that show it (topmost first), whether the layers
    # below the run still show through it)
    stack: list[tuple[bytes, list[int], bool]] = [(ROOT, roots, not bottom)]
    while stack:
        path, shown_by, below = stack.pop()
        first: dict[bytes, int] = {}  # child path -> position in shown_by of its topmost layer
        for pos, li in enumerate(shown_by):
            for p in idx[li].kids.get(path, ()):
                first.setdefault(p, pos)
        subdirs: list[tuple[bytes, list[int], bool]] = []
        for p in sorted(first):
            pos = first[p]
            li = shown_by[pos]
            e = idx[li].by_path[p]
            if e.kind is Kind.WHITEOUT:
                if below:
                    out.append(MergedEntry(e, None))
                continue
            if e.kind is not Kind.DIR:
                out.append(MergedEntry(e, li))
                continue
            layers_of_p = [li]
            stopped = e.opaque
            if not stopped:
                for lj in shown_by[pos + 1 :]:
                    f = idx[lj].by_path.get(p)
                    if f is None:
                        continue
                    if f.kind is not Kind.DIR:  # a whiteout or a non-directory
                        stopped = True
                        break
                    layers_of_p.append(lj)
                    if f.opaque:
                        stopped = True
                        break
            out.append(MergedEntry(replace(e, opaque=below and stopped), None))
            subdirs.append((p, layers_of_p, below and not stopped))
        stack.extend(reversed(subdirs))
    return _relink(out)


def _relink(merged: list[MergedEntry]) -> list[MergedEntry]:
    """Hardlink leaders of the merged layer: files that were one inode in a
    source layer are one inode in the merged tree; the smallest path of each
    surviving group leads it."""
    groups: dict[tuple[int, bytes], list[int]] = {}
    for n, m in enumerate(merged):
        e = m.entry
        if e.kind is Kind.FILE and m.source is not None:
            key = (m.source, e.link if e.link is not None else e.path)
            groups.setdefault(key, []).append(n)
    out = list(merged)
    for members in groups.values():
        leader = min(merged[n].entry.path for n in members)
        for n in members:
            e = merged[n].entry
            want = None if e.path == leader else leader
            if e.link != want:
                out[n] = MergedEntry(replace(e, link=want), merged[n].source)
    return out


def build_merged_tree(
    layers: Sequence[RunLayer],
    dest: bytes,
    bottom: bool,
    progress: Callable[[int], None] | None = None,
    xattr_form: str = "trusted",
) -> bytes:
    """Write the layer equal to the run ``layers`` (topmost first) as a tree
    in overlay form at ``dest`` (must not exist; same filesystem as the
    source trees). Returns its canonical manifest. Raises OSError.

    Opaque directories get the marker of ``xattr_form``, the store's form
    ("trusted" or "user", see :func:`snapws.layers.entries.opaque_xattr`).

    Hardlink groups (``link``) are those of the tree made: names that got
    one inode. That is a source layer's groups only: files of different
    layers that store deduplication made one inode are no hardlinks, so each
    group after the first of such an inode gets a copy of its own."""
    merged = merge_entries([layer.entries for layer in layers], bottom)
    os.mkdir(dest, 0o700)
    dirs: list[tuple[bytes, Entry]] = []
    copies: dict[tuple[object, ...], bytes] = {}  # source inode -> its copy here
    inodes: dict[tuple[object, ...], list[int]] = {}  # source inode -> files (index in merged)
    owners: dict[tuple[object, ...], tuple[int, bytes]] = {}  # source inode -> its group
    for count, m in enumerate(merged, 1):
        e = m.entry
        dst = join(dest, e.path)
        if e.kind is Kind.DIR:
            if e.path != ROOT:
                os.mkdir(dst, 0o700)
            dirs.append((dst, e))
        elif e.kind is Kind.WHITEOUT:
            os.mknod(dst, stat.S_IFCHR | 0o600, 0)
        else:
            assert m.source is not None
            src = join(layers[m.source].tree, e.path)
            st = os.lstat(src)
            key: tuple[object, ...] = (st.st_dev, st.st_ino)
            alias = False
            if e.kind is Kind.FILE:
                group = (m.source, e.link or e.path)
                if owners.setdefault(key, group) != group:
                    # store dedup made files of two layers one inode: they are
                    # no hardlinks, so this group gets a copy of its own
                    key, alias = group, True
                inodes.setdefault(key, []).append(count - 1)
            made = copies.get(key)
            if made is not None:
                os.link(made, dst, follow_symlinks=False)
            elif alias:
                materialise([read_node(e.path, src)], dest)
                copies[key] = dst
            elif not _link(src, dst, dest, e.path):
                copies[key] = dst
        if progress is not None and count % 1000 == 0:
            progress(count)
    marker = opaque_xattr(xattr_form)
    for dst, e in reversed(dirs):  # children before parents: mtimes stay
        _dir_meta(dst, e, marker)
    entries = [m.entry for m in merged]
    for members in inodes.values():
        leader = min(entries[n].path for n in members)
        for n in members:
            want = None if entries[n].path == leader else leader
            if entries[n].link != want:
                entries[n] = replace(entries[n], link=want)
    return encode_manifest(entries)


def _link(src: bytes, dst: bytes, dest: bytes, path: bytes) -> bool:
    """Hardlink ``src`` at ``dst``; at the filesystem's hardlink limit, copy
    it instead (with its attributes). False if it had to copy."""
    try:
        os.link(src, dst, follow_symlinks=False)
        return True
    except OSError as e:
        if e.errno != errno.EMLINK:
            raise
    materialise([read_node(path, src)], dest)
    return False


def _dir_meta(dst: bytes, e: Entry, marker: str) -> None:
    os.chown(dst, *ns_ids(e.uid, e.gid))  # recorded ids are real ids (rootless: mapped)
    os.chmod(dst, e.mode)
    for name, value in e.xattrs.items():
        os.setxattr(dst, name, value)
    if e.opaque:
        os.setxattr(dst, marker, b"y")
    os.utime(dst, ns=(e.mtime_ns, e.mtime_ns))
