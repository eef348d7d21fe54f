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
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from snapws.deeppath import anchored, lstat, reach
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


class _Node(Protocol):
    """What a merge reads of an entry: an :class:`Entry`, or a
    :class:`_Line` of a manifest read without building entries."""

    @property
    def path(self) -> bytes: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def opaque(self) -> bool: ...


N = TypeVar("N", bound=_Node)
_KINDS = {kind.value: kind for kind in Kind}


class _Index(Generic[N]):
    """A layer's manifest by path, and the names below each directory."""

    __slots__ = ("by_path", "kids")

    def __init__(self, entries: Sequence[N]) -> None:
        self.by_path: dict[bytes, N] = {}
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
    return _relink(_merged_entries(layers, bottom))


def _merged_entries(layers: Sequence[Sequence[Entry]], bottom: bool) -> list[MergedEntry]:
    """:func:`merge_entries` without recomputing hardlink leaders."""
    return [MergedEntry(e, source) for e, source in _merge(layers, bottom, _with_opaque)]


def _merge(
    layers: Sequence[Sequence[N]], bottom: bool, with_opaque: Callable[[N, bool], N]
) -> list[tuple[N, int | None]]:
    """The merge of :func:`merge_entries`, hardlink leaders left as they
    are: each entry and the layer whose node it is (None: made anew).
    Entries that need no change are the source layers' own objects; one
    whose opaque marker changes is ``with_opaque(entry, marker)``."""
    idx = [_Index(entries) for entries in layers]
    roots = [i for i, ix in enumerate(idx) if ROOT in ix.by_path]
    if not roots:
        return []
    root = idx[roots[0]].by_path[ROOT]
    out: list[tuple[N, int | None]] = [(with_opaque(root, False) if root.opaque else root, None)]
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
                    out.append((e, None))
                continue
            if e.kind is not Kind.DIR:
                out.append((e, li))
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
            opaque = below and stopped
            out.append((e if e.opaque == opaque else with_opaque(e, opaque), None))
            subdirs.append((p, layers_of_p, below and not stopped))
        stack.extend(reversed(subdirs))
    return out


def _with_opaque(e: Entry, opaque: bool) -> Entry:
    return replace(e, opaque=opaque)


@dataclass(slots=True)  # not frozen: made for every line of a run, and never changed
class _Line:
    """An entry as a merge reads it, from a line of a canonical manifest:
    its JSON object, and the line itself (empty: to be written anew)."""

    path: bytes
    kind: Kind
    opaque: bool
    obj: dict[str, Any]
    line: bytes

    def with_opaque(self, opaque: bool) -> _Line:
        obj = dict(self.obj)
        obj.pop("o", None)
        if opaque:
            obj["o"] = True
        return _Line(self.path, self.kind, opaque, obj, b"")

    def encoded(self) -> bytes:
        return self.line or encode_manifest([Entry.from_json(self.obj)])[:-1]


def _lines_of(manifest: bytes) -> list[_Line]:
    """A canonical manifest's lines, read as JSON objects (one ``json.loads``),
    no entry built. Raises ValueError."""
    lines = manifest.split(b"\n")[:-1]
    try:
        objs = json.loads(b"[" + b",".join(lines) + b"]")
        if len(objs) != len(lines) or (manifest and not manifest.endswith(b"\n")):
            raise ValueError("not one JSON object a line")
        return [
            _Line(os.fsencode(obj["p"]), _KINDS[obj["k"]], obj.get("o") is True, obj, line)
            for obj, line in zip(objs, lines, strict=True)
        ]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"not a canonical manifest: {e}") from e


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


@dataclass(frozen=True, slots=True)
class BuildStep:
    """One entry of a merged tree to make, parents before children.
    ``source``: the run's layer (0 = topmost) whose node a non-directory
    links; ``key``: its inode group in the tree made (-1 for directories and
    whiteouts); ``alias``: the source inode is another group's too (store
    dedup), so this group gets a copy of its own."""

    entry: Entry
    source: int | None
    key: int = -1
    alias: bool = False


def plan_merged_tree(layers: Sequence[RunLayer], bottom: bool) -> tuple[list[BuildStep], bytes]:
    """What :func:`build_merged_tree` makes for the run ``layers`` (topmost
    first), without making it: the steps, and the canonical manifest of the
    tree they make. Costs the run's entries and an ``lstat`` per
    non-directory (inode groups). Raises OSError."""
    merged = _merged_entries([layer.entries for layer in layers], bottom)  # leaders: below
    items = [(m.entry.path, m.entry.kind, m.entry.link, m.source) for m in merged]
    keyed, relinked = _inode_groups([layer.tree for layer in layers], items)
    steps: list[BuildStep] = []
    for n, (m, (key, alias)) in enumerate(zip(merged, keyed, strict=True)):
        e = m.entry if n not in relinked else replace(m.entry, link=relinked[n])
        steps.append(BuildStep(e, None) if key < 0 else BuildStep(e, m.source, key, alias))
    return steps, encode_manifest(step.entry for step in steps)


def merge_manifest(manifests: Sequence[bytes], bottom: bool) -> tuple[bytes, list[int]]:
    """The first half of :func:`plan_merged_tree`, for a plan spread over
    two calls (a compaction job), from the run's canonical manifests
    (topmost first): the merged layer's manifest, its hardlink leaders not
    yet recomputed (see :func:`key_manifest`), and each line's source layer
    (-1: none, a directory or a whiteout). No entry is built: a line that
    needs no change is the source's own line. Costs the run's lines, no
    system call. Raises ValueError (a manifest that is not canonical)."""
    layers = [_lines_of(data) for data in manifests]
    merged = sorted(_merge(layers, bottom, _Line.with_opaque), key=_node_path)
    out = b"".join(node.encoded() + b"\n" for node, _ in merged)
    return out, [-1 if source is None else source for _, source in merged]


@dataclass(frozen=True, slots=True)
class KeyedLine:
    """A line of the merged manifest made by :func:`key_manifest`: what
    :class:`BuildStep` says about its entry, without the entry."""

    source: int  # -1: made anew (a directory, a whiteout)
    key: int
    alias: bool
    is_dir: bool


def key_manifest(
    trees: Sequence[bytes], manifest: bytes, sources: Sequence[int]
) -> tuple[bytes, list[KeyedLine]]:
    """The second half of :func:`plan_merged_tree`: given what
    :func:`merge_manifest` returned and the run's trees (topmost first),
    the canonical manifest of the merged tree (hardlink leaders of the
    tree made) and the inode group of each of its lines. Costs an
    ``lstat`` per non-directory; entries are read as JSON objects, never
    built, but for the few whose leader changes. Raises ValueError (a
    manifest that does not match ``sources``), OSError."""
    lines = manifest.split(b"\n")[:-1]
    items: list[tuple[bytes, Kind, bytes | None, int | None]] = []
    try:
        objs = json.loads(b"[" + b",".join(lines) + b"]")
        if len(objs) != len(lines) or len(sources) != len(lines):
            raise ValueError("not a line for each source")
        for obj, layer in zip(objs, sources, strict=True):
            link = obj.get("hl")
            items.append(
                (
                    os.fsencode(obj["p"]),
                    Kind(obj["k"]),
                    None if link is None else os.fsencode(link),
                    None if layer < 0 else layer,
                )
            )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"a merged manifest that its sources do not match: {e}") from e
    keyed, relinked = _inode_groups(trees, items)
    for n, want in relinked.items():
        lines[n] = encode_manifest([replace(Entry.from_json(objs[n]), link=want)])[:-1]
    out = []
    for (_, kind, _, source), (key, alias) in zip(items, keyed, strict=True):
        linked = -1 if key < 0 or source is None else source  # -1: made anew
        out.append(KeyedLine(linked, key, alias, kind is Kind.DIR))
    return (b"\n".join(lines) + b"\n" if lines else b""), out


def _inode_groups(
    trees: Sequence[bytes], items: Sequence[tuple[bytes, Kind, bytes | None, int | None]]
) -> tuple[list[tuple[int, bool]], dict[int, bytes | None]]:
    """Inode groups of a merged tree's entries, given as (path, kind,
    hardlink leader, source layer): each one's (key, alias) (key -1 for
    directories, whiteouts and entries without source), and the files whose
    leader (``link``) changes, by index. Files that were one inode in a
    source layer stay one (the group's smallest path leads it); one that
    shares its inode with another group (store dedup) is an alias: a copy."""
    keys: dict[tuple[object, ...], int] = {}
    owners: dict[tuple[object, ...], tuple[int, bytes]] = {}
    groups: dict[int, list[int]] = {}  # key -> files (index in items)
    out: list[tuple[int, bool]] = []
    for n, (path, kind, link, source) in enumerate(items):
        if kind is Kind.DIR or kind is Kind.WHITEOUT or source is None:
            out.append((-1, False))
            continue
        st = lstat(join(trees[source], path))
        ident: tuple[object, ...] = (st.st_dev, st.st_ino)
        alias = False
        if kind is Kind.FILE:
            group = (source, link or path)
            if owners.setdefault(ident, group) != group:
                ident, alias = ("group", *group), True
        key = keys.setdefault(ident, len(keys))
        if kind is Kind.FILE:
            groups.setdefault(key, []).append(n)
        out.append((key, alias))
    relinked: dict[int, bytes | None] = {}
    for members in groups.values():
        leader = min(items[n][0] for n in members)
        for n in members:
            want = None if items[n][0] == leader else leader
            if items[n][2] != want:
                relinked[n] = want
    return out, relinked


def _node_path(item: tuple[_Line, int | None]) -> bytes:
    return item[0].path


class TreeBuilder:
    """Makes a merged tree at ``dest`` from :class:`BuildStep` s, in as many
    calls as the caller likes (a compaction spreads a big merge over
    commits): :meth:`make` the steps in order, then :meth:`finish_dirs`
    with the directories children first. ``copies`` (inode group -> path
    made, for groups that got a copy) is the state between calls. Making a
    step again (after a crash) replaces what an earlier try made."""

    def __init__(
        self,
        trees: Sequence[bytes],
        dest: bytes,
        xattr_form: str = "trusted",
        copies: dict[int, bytes] | None = None,
    ) -> None:
        self.trees = list(trees)
        self.dest = dest
        self.marker = opaque_xattr(xattr_form)
        self.copies: dict[int, bytes] = dict(copies or {})

    def make(self, steps: Iterable[BuildStep]) -> None:
        """Make these steps' entries (directories bare: see
        :meth:`finish_dirs`). Raises OSError."""
        with anchored():  # paths beyond PATH_MAX share their anchors
            for step in steps:
                dst = join(self.dest, step.entry.path)
                if step.entry.kind is Kind.DIR:
                    with suppress(FileExistsError), reach(dst) as d:  # (an earlier try's)
                        os.mkdir(d, 0o700)
                    continue
                try:
                    self._make(step, dst)
                except FileExistsError:  # made by an interrupted earlier try
                    with reach(dst) as d:
                        os.unlink(d)
                    self._make(step, dst)

    def _make(self, step: BuildStep, dst: bytes) -> None:
        e = step.entry
        if e.kind is Kind.WHITEOUT:
            with reach(dst) as d:
                os.mknod(d, stat.S_IFCHR | 0o600, 0)
            return
        assert step.source is not None
        src = join(self.trees[step.source], e.path)
        made = self.copies.get(step.key)
        if made is not None:
            with reach(join(self.dest, made)) as a, reach(dst) as b:
                os.link(a, b, follow_symlinks=False)
        elif step.alias:
            materialise([read_node(e.path, src)], self.dest)
            self.copies[step.key] = e.path
        elif not _link(src, dst, self.dest, e.path):
            self.copies[step.key] = e.path

    def finish_dirs(self, dirs: Iterable[Entry]) -> None:
        """Owner, mode, xattrs, opaque marker and mtime of these directories
        (give children before parents: mtimes stay). Raises OSError."""
        with anchored():
            for e in dirs:
                with reach(join(self.dest, e.path)) as d:
                    _dir_meta(d, e, self.marker)


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
    steps, manifest = plan_merged_tree(layers, bottom)
    os.mkdir(dest, 0o700)
    builder = TreeBuilder([layer.tree for layer in layers], dest, xattr_form)
    for at in range(0, len(steps), 1000):
        builder.make(steps[at : at + 1000])
        if progress is not None and at + 1000 <= len(steps):
            progress(at + 1000)
    builder.finish_dirs(reversed([s.entry for s in steps if s.entry.kind is Kind.DIR]))
    return manifest


def _link(src: bytes, dst: bytes, dest: bytes, path: bytes) -> bool:
    """Hardlink ``src`` at ``dst``; at the filesystem's hardlink limit, copy
    it instead (with its attributes). False if it had to copy."""
    try:
        with reach(src) as a, reach(dst) as b:
            os.link(a, b, follow_symlinks=False)
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
