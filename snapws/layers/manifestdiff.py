"""Changes between two layer chains, read from their layers' manifests.

The same answer as :func:`snapws.layers.diff.diff_views` gives from the
layer trees, at the cost of what changed: the candidate paths are the
entries of the layers that one chain has and the other does not (plus the
subtrees below a whiteout, an opaque directory or a non-directory there,
which may hide or replace older content), and each candidate is looked up
in both chains by the overlayfs rules, in manifests. A manifest is sorted by
path, one JSON object a line (:func:`snapws.model.encode_manifest`), so a
big layer (the chain's base: the whole tree) is searched in place, a
binary search per lookup, and never read whole (:class:`SortedManifest`
over an ``mmap``).

Pure: manifests in, changes out; nothing here touches a layer tree.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace

from snapws.ids import LayerId
from snapws.layers.entries import in_or_below, is_under, on_the_way
from snapws.model import ROOT, Change, Entry, Kind, classify, decode_manifest, text_to_path

#: Manifests up to this size are decoded whole (one dict); bigger ones are searched.
SMALL_MANIFEST = 1 << 18
_PKEY = b'"p":"'


def _line_path(line: bytes) -> bytes:
    """The path of one manifest line, without decoding the whole line."""
    i = line.find(_PKEY)
    if i >= 0:
        j = i + len(_PKEY)
        end = line.find(b'"', j)
        while end > 0 and line[end - 1 : end] == b"\\":
            k = end - 1
            while k > j and line[k - 1 : k] == b"\\":
                k -= 1
            if (end - k) % 2 == 0:
                break  # an even run of backslashes: the quote ends the string
            end = line.find(b'"', end + 1)
        if end > 0:
            text = line[j:end]
            if b"\\" not in text:
                return text_to_path(text.decode("ascii"))
            return text_to_path(json.loads(line[j - 1 : end + 1]))
    return text_to_path(json.loads(line)["p"])


def _parse(line: bytes) -> Entry:
    return Entry.from_json(json.loads(line))


class SortedManifest:
    """One layer's manifest, looked up by path. Small manifests are decoded
    whole; big ones (``bytes`` or an ``mmap``) are binary-searched in place.
    ``small``: the size up to which a manifest is decoded whole. Raises
    ValueError on malformed lines it reads."""

    def __init__(self, data: bytes | mmap.mmap, small: int = SMALL_MANIFEST) -> None:
        self._buf = data
        self._size = len(data)
        self._all: dict[bytes, Entry] | None = None
        self._sorted: list[Entry] | None = None
        self._got: dict[bytes, Entry | None] = {}
        self._probes: dict[tuple[int, int], tuple[int, int, bytes]] = {}
        if self._size <= small:
            entries = decode_manifest(bytes(data))
            self._sorted = entries
            self._all = {e.path: e for e in entries}

    def entries(self) -> Iterator[Entry]:
        """Every entry, sorted by path."""
        if self._sorted is not None:
            yield from self._sorted
            return
        yield from self._scan(0, None)

    def get(self, path: bytes) -> Entry | None:
        """The entry of ``path`` in this layer, or None."""
        if self._all is not None:
            return self._all.get(path)
        try:
            return self._got[path]
        except KeyError:
            pass
        pos = self._lower_bound(path)
        found = None
        if pos < self._size:
            end = self._line_end(pos)
            line = self._buf[pos:end]
            if _line_path(line) == path:
                found = _parse(line)
        self._got[path] = found
        return found

    def below(self, path: bytes) -> Iterator[Entry]:
        """Every entry strictly below directory ``path``, sorted."""
        if path == ROOT:
            yield from (e for e in self.entries() if e.path != ROOT)
            return
        prefix = path + b"/"
        if self._sorted is not None:
            yield from (e for e in self._sorted if e.path.startswith(prefix))
            return
        yield from self._scan(self._lower_bound(prefix), prefix)

    def _scan(self, pos: int, prefix: bytes | None) -> Iterator[Entry]:
        while pos < self._size:
            end = self._line_end(pos)
            line = self._buf[pos:end]
            if line.strip():
                if prefix is not None and not _line_path(line).startswith(prefix):
                    return
                yield _parse(line)
            pos = end + 1

    def _line_end(self, start: int) -> int:
        end = self._buf.find(b"\n", start)
        return self._size if end < 0 else end

    def _lower_bound(self, key: bytes) -> int:
        """Offset of the first line whose path is >= ``key`` (the size if none)."""
        lo, hi = 0, self._size
        probes = self._probes
        while lo < hi:
            mid = (lo + hi) // 2
            probe = probes.get((lo, mid))  # the first probes are the same for every key
            if probe is None:
                start = max(self._buf.rfind(b"\n", lo, mid) + 1, lo)
                end = self._line_end(start)
                line = self._buf[start:end]
                probe = (start, end, _line_path(line) if line.strip() else b"")
                probes[(lo, mid)] = probe
            start, end, path = probe
            if path < key:
                lo = min(end + 1, self._size)
            else:
                hi = start
        return lo


class ManifestChain:
    """A chain of layers (``(id, manifest)``, TOPMOST first) looked up by the
    overlayfs rules, as :class:`snapws.layers.view.ChainView` does on trees:
    the topmost layer with the path wins, a whiteout deletes it, an opaque
    directory or a non-directory at an ancestor hides older layers."""

    def __init__(self, layers: Sequence[tuple[LayerId, SortedManifest]]) -> None:
        self.layers = list(layers)
        self._located: dict[bytes, tuple[int, Entry] | None] = {}

    def locate(self, path: bytes) -> tuple[int, Entry] | None:
        """(layer index, entry) that ``path`` shows, or None if absent."""
        try:
            return self._located[path]
        except KeyError:
            pass
        loc = self._locate(path)
        self._located[path] = loc
        return loc

    def _locate(self, path: bytes) -> tuple[int, Entry] | None:
        if path == ROOT:
            for i, (_, m) in enumerate(self.layers):
                e = m.get(ROOT)
                if e is not None:
                    return i, e
            return None
        parts = path.split(b"/")
        ancestors = [b"/".join(parts[: n + 1]) for n in range(len(parts) - 1)]
        for i, (_, m) in enumerate(self.layers):
            hidden = False
            reached = True
            for a in ancestors:
                e = m.get(a)
                if e is None:
                    reached = False
                    break
                if e.kind is not Kind.DIR:
                    return None  # deleted or replaced here: older layers are hidden
                if e.opaque:
                    hidden = True
            if reached:
                e = m.get(path)
                if e is not None:
                    return None if e.kind is Kind.WHITEOUT else (i, e)
            if hidden:
                return None
        return None

    def visible_below(self, path: bytes) -> Iterator[bytes]:
        """Paths strictly below ``path`` that this chain shows."""
        seen: set[bytes] = set()
        for _, m in self.layers:
            for e in m.below(path):
                if e.path not in seen:
                    seen.add(e.path)
                    if self.locate(e.path) is not None:
                        yield e.path


def _as_shown(e: Entry) -> Entry:
    """An entry as a tree read shows it: hardlink leaders are a layer's own
    bookkeeping, never part of a change."""
    return replace(e, link=None) if e.link is not None else e


def diff_chains(
    old: ManifestChain,
    new: ManifestChain,
    under: Sequence[bytes] = (),
    skip: Collection[bytes] = (),
) -> list[Change]:
    """Changes from ``old`` to ``new``: what :func:`snapws.layers.diff.diff_views`
    gives for the same chains. ``under`` restricts the result to paths at or
    below the given ones; paths at or below one of ``skip`` are left out.
    Sorted by path; directories appear as entries of their own. Reads the
    layers one chain has and the other lacks, and looks candidates up in
    the rest. Raises ValueError on a malformed manifest."""
    a = [lid for lid, _ in reversed(old.layers)]  # bottom first
    b = [lid for lid, _ in reversed(new.layers)]
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    unshared = [m for _, m in old.layers[: len(a) - common]]
    unshared += [m for _, m in new.layers[: len(b) - common]]
    candidates: set[bytes] = set()
    expand: set[bytes] = set()
    for m in unshared:
        candidates.add(ROOT)
        for e in m.entries():
            candidates.add(e.path)
            if e.kind is not Kind.DIR or e.opaque:
                expand.add(e.path)
    candidates = {p for p in candidates if on_the_way(p, under)}
    for top in expand:
        if not on_the_way(top, under):
            continue
        for chain in (old, new):
            loc = chain.locate(top)
            if loc is not None and loc[1].kind is Kind.DIR:
                candidates.update(p for p in chain.visible_below(top) if on_the_way(p, under))
    if skip:
        candidates = {p for p in candidates if not in_or_below(p, skip)}
    changes = []
    for p in sorted(candidates):
        if under and not any(is_under(p, u) for u in under):
            continue  # an ancestor of a selected path: only needed for the walk
        lo = old.locate(p)
        ln = new.locate(p)
        if lo is None and ln is None:
            continue
        if lo is not None and ln is not None and old.layers[lo[0]][0] == new.layers[ln[0]][0]:
            continue  # the very same entry of a layer both chains have
        c = classify(
            p, _as_shown(lo[1]) if lo is not None else None, _as_shown(ln[1]) if ln else None
        )
        if c is not None:
            changes.append(c)
    return changes
