"""Changes between two layer chains, read from their layers' manifests.

The same answer as :func:`snapws.layers.diff.diff_views` gives from the
layer trees, at the cost of what changed: the candidate paths are the
entries of the layers that one chain has and the other does not (plus the
subtrees below a whiteout, an opaque directory or a non-directory there,
which may hide or replace older content), and each candidate is looked up
in both chains by the overlayfs rules, in manifests. A manifest is sorted by
path, one JSON object a line (:func:`snapws.model.encode_manifest`), so a
big layer (the chain's base: the whole tree) is searched in place and never
read whole (:class:`SortedManifest` over an ``mmap``); the candidates are
looked up in path order, each from where the previous one ended, so a
lookup costs the logarithm of the distance to the previous one. Lines are
compared as bytes first and decoded only where they differ in more than the
mtime (which no change counts): a directory that a commit records because
files below it changed costs its lookups, not two decodes.

Pure: manifests in, changes out; nothing here touches a layer tree.
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from typing import Any

from snapws.ids import LayerId
from snapws.layers.entries import in_or_below_any, is_under, on_the_way
from snapws.layers.fences import Fences
from snapws.layers.fences import compute as compute_fences
from snapws.model import ROOT, Change, Entry, Kind, classify, decode_manifest, text_to_path

#: Manifests up to this size are decoded whole (one dict) once all their entries
#: are wanted; bigger ones are only searched.
SMALL_MANIFEST = 1 << 18
#: How far after the previous lookup a lookup in a searched manifest first probes.
SEARCH_WINDOW = 1 << 13
#: Brackets up to this size are searched for a path's line as a substring.
FIND_SPAN = 1 << 12
_PKEY = b'"p":"'


def _line_path(line: bytes) -> bytes:
    """The path of one manifest line, without decoding the whole line."""
    i = line.find(_PKEY)
    if i >= 0:
        j = i + len(_PKEY)
        end = line.find(b'"', j)
        text = line[j:end]
        if end > 0 and text.isascii() and b"\\" not in text:
            return text  # plain ASCII (manifests are ASCII): the path's own bytes
        while end > 0 and line[end - 1 : end] == b"\\":
            k = end - 1
            while k > j and line[k - 1 : k] == b"\\":
                k -= 1
            if (end - k) % 2 == 0:
                break  # an even run of backslashes: the quote ends the string
            end = line.find(b'"', end + 1)
        if end > 0:
            return text_to_path(json.loads(line[j - 1 : end + 1]))
    try:
        return text_to_path(json.loads(line)["p"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"manifest line {line[:200]!r}: no path: {e!r}") from e


#: A canonical line's path field holding no escape (within its line)
_PLAIN_PATH = re.compile(rb'"p":"([^"\\\n]*)"')


def _index_lines(data: bytes) -> dict[bytes, bytes]:
    """The lines of manifest ``data`` by path, blank ones left out: the paths
    found in one pass when every line holds one plain path field (a
    canonical manifest with no escaped byte in a path), else line by line."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if b"\\" not in data and data.count(_PKEY) == len(lines):
        paths = _PLAIN_PATH.findall(data)
        if len(paths) == len(lines):
            return dict(zip(paths, lines, strict=True))
    return {_line_path(line): line for line in lines if line.strip()}


#: The bytes a manifest writes as themselves in a JSON string (ensure_ascii:
#: printable ASCII but the quote and the backslash).
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def _needle(path: bytes) -> bytes | None:
    """``"p":"<path>"`` as a canonical manifest line holds it, for a path
    whose bytes all stand for themselves in JSON; None for other paths."""
    if path.translate(None, _PLAIN):
        return None
    return _PKEY + path + b'"'


#: json.loads without its wrapping (encoding sniffing, whitespace, end check)
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse(line: bytes) -> Entry:
    """The entry of one manifest line. Raises ValueError on a malformed line."""
    try:
        text = line.decode("ascii")
        obj, end = _scan_json(text, 0)
    except (UnicodeDecodeError, StopIteration):
        end = -1
    try:
        if end != len(line) or not isinstance(obj, dict):
            obj = json.loads(line)  # a line in another form, or the error it gives
        return Entry.from_json(obj)
    except (KeyError, TypeError) as e:
        raise ValueError(f"manifest line {line[:200]!r}: {e!r}") from e


_KIND_OF = {k.value.encode(): k for k in Kind}
#: Fields as a canonical line holds them (a JSON string holds no bare quote,
#: so they are found only where they are fields; xattr names aside)
_KEY_K = b'"k":"'
_WHITEOUT_K = b'"k":"w"'
_DIR_K = b'"k":"d"'
_OPAQUE_K = b'"o":true'
_XATTRS_K = b'"x":'


def line_kind(line: bytes) -> tuple[Kind, bool]:
    """(kind, opaque) of one manifest line, read from its ``"k"`` and ``"o"``
    fields without decoding the line when it has no xattrs (a JSON string
    holds no bare quote, so ``"k":"`` there is the key). Raises ValueError
    on a malformed line it has to decode."""
    if _XATTRS_K not in line:
        i = line.find(_KEY_K)
        if i >= 0 and line[i + 6 : i + 7] == b'"':
            kind = _KIND_OF.get(line[i + 5 : i + 6])
            if kind is not None:
                return kind, kind is Kind.DIR and _OPAQUE_K in line
    e = _parse(line)
    return e.kind, e.opaque


def _is_whiteout(line: bytes) -> bool:
    """Whether a manifest line is a whiteout's (:func:`line_kind`, cheaper)."""
    if _WHITEOUT_K in line:
        return True
    if _KEY_K in line and _XATTRS_K not in line:
        return False
    return _parse(line).kind is Kind.WHITEOUT


#: A line's mtime field: lines equal but for it are entries equal but for
#: mtime, which no change counts (as git)
_MTIME = re.compile(rb'"t":-?[0-9]+')


def _decode_all(data: bytes) -> list[Entry]:
    """:func:`snapws.model.decode_manifest`, read as one JSON array. Raises
    ValueError as that does."""
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        objs = json.loads(b"[" + body.replace(b"\n", b",") + b"]") if body else []
        if len(objs) == body.count(b"\n") + bool(body):  # one object a line
            return [Entry.from_json(obj) for obj in objs]
    except (KeyError, TypeError, ValueError):
        pass
    return decode_manifest(data)  # blank lines, or the error it names


class SortedManifest:
    """One layer's manifest (``bytes`` or an ``mmap``), looked up by path. A
    big manifest is searched in place; a small one (up to ``small`` bytes)
    has its lines indexed by path, and is decoded whole once all its entries
    are asked for. Raises ValueError on malformed lines it reads.

    Lookups in increasing path order (a diff's sorted candidates) cost the
    logarithm of the distance between them, not of the manifest: each goes
    on from where the previous one ended (:meth:`_forward`); a path out of
    order is binary-searched from the start. ``window`` (bytes) is the first
    step of that walk, ``span`` the bracket short enough to search as a
    substring; both only change the speed."""

    def __init__(
        self,
        data: bytes | mmap.mmap,
        small: int = SMALL_MANIFEST,
        window: int = SEARCH_WINDOW,
        span: int = FIND_SPAN,
        fences: Fences | None = None,
    ) -> None:
        self._buf = data
        self._fences = fences if fences is not None and fences.size == len(data) else None
        self._size = len(data)
        self._window = max(window, 1)
        self._span = span
        self._all: dict[bytes, Entry] | None = None
        self._sorted: list[Entry] | None = None
        self._got: dict[bytes, Entry | None] = {}
        self._got_lines: dict[bytes, bytes | None] = {}
        self._probes: dict[tuple[int, int], tuple[int, int, bytes]] = {}
        # Every line before offset ``_cursor`` has a path below ``_cursor_key``,
        # and the line at ``_cursor`` (if any) one at or above it.
        self._cursor = 0
        self._cursor_key = b""
        self._small = self._size <= small
        self._lines: dict[bytes, bytes] | None = None

    def _decoded(self) -> list[Entry] | None:
        """A small manifest's entries, decoded whole the first time they are
        all wanted (a layer whose paths are only looked up is not)."""
        if self._sorted is None and self._small:
            self._sorted = _decode_all(bytes(self._buf))
            self._all = {e.path: e for e in self._sorted}
        return self._sorted

    def _line_of(self, path: bytes) -> bytes | None:
        """A small manifest's line of ``path``: its lines are indexed by path
        (not parsed) at the first lookup, so that a layer of a long chain
        answers "not here" at the cost of a dictionary lookup."""
        if self._lines is None:
            self._lines = _index_lines(bytes(self._buf))
        return self._lines.get(path)

    def entries(self) -> Iterator[Entry]:
        """Every entry, sorted by path."""
        decoded = self._decoded()
        if decoded is not None:
            yield from decoded
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
        line = self.get_line(path)
        found = _parse(line) if line is not None else None
        self._got[path] = found
        return found

    def get_line(self, path: bytes) -> bytes | None:
        """The manifest line of ``path`` in this layer (not parsed), or None."""
        if self._small:
            lines = self._lines
            return lines.get(path) if lines is not None else self._line_of(path)
        try:
            return self._got_lines[path]
        except KeyError:
            pass
        if self._fences is not None:
            found = self._fenced(path)
        elif path > self._cursor_key:
            found = self._forward(path)
        else:
            found = self._search(path, 0, self._cursor)
        self._got_lines[path] = found
        return found

    def outline(self) -> Iterator[tuple[bytes, bytes, bool]]:
        """Every ``(path, line, hides)``, sorted by path: ``hides`` when the
        entry is no plain directory (a non-directory, a whiteout or an opaque
        directory: what may hide older layers' content below it). A small
        manifest's lines are not decoded (:func:`line_kind`; a line a diff
        reports, or finds to differ from another, is decoded then); a big
        one's are, a line at a time. Raises ValueError on a malformed line
        it decodes."""
        if not self._small:
            for e in self.entries():
                yield e.path, b"", e.kind is not Kind.DIR or e.opaque
            return
        if self._lines is None:
            self._lines = _index_lines(bytes(self._buf))
        for path, line in self._lines.items():  # in the manifest's order
            if _KEY_K in line and _XATTRS_K not in line:  # a canonical line: its kind
                yield path, line, _DIR_K not in line or _OPAQUE_K in line
            else:
                kind, opaque = line_kind(line)
                yield path, line, kind is not Kind.DIR or opaque

    def _forward(self, path: bytes) -> bytes | None:
        """:meth:`get_line` for a path above the cursor. Gallops from it (probes
        ``window`` bytes on, then twice as far, ...) until a line at or above
        ``path`` brackets it, bisects the bracket down to ``span`` bytes and
        searches that for ``"p":"<path>"``, the path field a canonical line
        (:func:`snapws.model.encode_manifest`) holds for a path of plain
        bytes. A hit counts once the line's own path field says so; a miss
        counts only where every line of the bracket has a path field and no
        escaped byte; else (and for a path with bytes JSON escapes) the
        bisection decides."""
        buf, size = self._buf, self._size
        start = self._cursor
        step = self._window
        while True:
            probe = start + step
            if probe >= size:
                hi = size
                break
            line_start = max(buf.rfind(b"\n", start, probe) + 1, start)
            line_end = self._line_end(probe)
            line = buf[line_start:line_end]
            here = _line_path(line) if line.strip() else b""
            if here < path:
                start = min(line_end + 1, size)
                step *= 2
                continue
            if here == path:
                self._cursor, self._cursor_key = line_start, path
                return line
            hi = line_start
            break
        needle = _needle(path)
        if needle is None:
            return self._search(path, start, hi)
        while hi - start > self._span:  # bisect down to a short bracket
            mid = max(buf.rfind(b"\n", start, (start + hi) // 2) + 1, start)
            line_end = self._line_end(mid)
            line = buf[mid:line_end]
            here = _line_path(line) if line.strip() else b""
            if here < path:
                start = min(line_end + 1, size)
            elif here == path:
                self._cursor, self._cursor_key = mid, path
                return line
            else:
                hi = mid
        chunk = buf[start:hi]  # the lines that start in [start, hi)
        found = _find_line(chunk, needle, path)
        if isinstance(found, tuple):
            self._cursor, self._cursor_key = start + found[0], path
            return found[1]
        if found:
            # Every line there has its path field and escapes no byte: the
            # path's line would hold the needle. Absent. The cursor stays at
            # the bracket's first line, keyed by that line's path (lines of
            # the bracket may sort below ``path``: a later lookup of one of
            # them must not be searched for before the cursor only)
            self._cursor = start
            if start < size:
                line = buf[start : self._line_end(start)]
                self._cursor_key = _line_path(line) if line.strip() else path
            else:
                self._cursor_key = path
            return None
        return self._search(path, start, hi)  # not in canonical form: bisect

    def fences(self) -> Fences | None:
        """This manifest's fences (:mod:`snapws.layers.fences`), computed
        now if it was given none; None if its lines are out of order.
        Raises ValueError on a malformed line at a fence."""
        if self._fences is None:
            self._fences = compute_fences(self._buf, self._size, _line_path)
        return self._fences

    def _fenced(self, path: bytes) -> bytes | None:
        """:meth:`get_line` through the fences: the stretch between two of
        them searched for ``"p":"<path>"`` (as :meth:`_forward` searches its
        last bracket), else bisected."""
        assert self._fences is not None
        lo, hi = self._fences.bracket(path)
        if lo >= hi:
            return None
        needle = _needle(path)
        if needle is not None:
            found = _find_line(self._buf[lo:hi], needle, path)
            if isinstance(found, tuple):
                return found[1]
            if found:
                return None  # absent
        return self._search(path, lo, hi)

    def _search(self, path: bytes, lo: int, hi: int) -> bytes | None:
        """Binary search for ``path`` between line starts ``lo`` and ``hi``
        (the lower bound is known to lie there); the cursor moves to it."""
        pos = self._lower_bound(path, lo, hi)
        self._cursor, self._cursor_key = pos, path
        if pos < self._size:
            line = self._buf[pos : self._line_end(pos)]
            if _line_path(line) == path:
                return line
        return None

    def below(self, path: bytes) -> Iterator[Entry]:
        """Every entry strictly below directory ``path``, sorted."""
        if path == ROOT:
            yield from (e for e in self.entries() if e.path != ROOT)
            return
        prefix = path + b"/"
        if self._sorted is not None:
            yield from (e for e in self._sorted if e.path.startswith(prefix))
            return
        yield from self._scan(self._lower_bound(prefix, 0, self._size), prefix)

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

    def _lower_bound(self, key: bytes, lo: int, hi: int) -> int:
        """Offset of the first line whose path is >= ``key``, between line
        starts ``lo`` and ``hi`` (``hi`` if none before it)."""
        if self._fences is not None and lo == 0 and hi == self._size:
            lo, hi = self._fences.bracket(key)
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


def _find_line(chunk: bytes, needle: bytes, path: bytes) -> tuple[int, bytes] | bool:
    """``path``'s line among the whole lines of ``chunk``, searched for as
    ``needle`` (its path field): (offset in ``chunk``, line); or True
    (absent) when every line there has a plain path field (the line would
    hold the needle); else False (not sure: bisect instead)."""
    hit = chunk.find(needle)
    if hit >= 0:
        line_start = chunk.rfind(b"\n", 0, hit) + 1
        line_end = chunk.find(b"\n", hit)
        line = chunk[line_start : len(chunk) if line_end < 0 else line_end]
        return (line_start, line) if _line_path(line) == path else False
    return b"\\" not in chunk and chunk.count(b"\n") == chunk.count(_PKEY)


_REACHED, _MISSING, _BLOCKED, _HIDDEN = 0, 1, 2, 4


class ManifestChain:
    """A chain of layers (``(id, manifest)``, TOPMOST first) looked up by the
    overlayfs rules, as :class:`snapws.layers.view.ChainView` does on trees:
    the topmost layer with the path wins, a whiteout deletes it, an opaque
    directory or a non-directory at an ancestor hides older layers."""

    def __init__(self, layers: Sequence[tuple[LayerId, SortedManifest]]) -> None:
        self.layers = list(layers)
        self._located: dict[bytes, tuple[int, Entry] | None] = {}
        self._located_lines: dict[bytes, tuple[int, bytes] | None] = {}
        # (layer index, directory) -> what looking below it meets in that layer
        self._dirs: dict[tuple[int, bytes], int] = {}

    def locate(self, path: bytes) -> tuple[int, Entry] | None:
        """(layer index, entry) that ``path`` shows, or None if absent."""
        try:
            return self._located[path]
        except KeyError:
            pass
        found = self.locate_line(path)
        loc = None
        if found is not None:
            e = self.layers[found[0]][1].get(path)  # parsed once per layer
            assert e is not None  # the line just found
            loc = (found[0], e)
        self._located[path] = loc
        return loc

    def locate_line(self, path: bytes) -> tuple[int, bytes] | None:
        """(layer index, manifest line) that ``path`` shows, or None if
        absent: :meth:`locate` without parsing the line."""
        try:
            return self._located_lines[path]
        except KeyError:
            pass
        loc = self._locate(path)
        self._located_lines[path] = loc
        return loc

    def _locate(self, path: bytes) -> tuple[int, bytes] | None:
        if path == ROOT:
            for i, (_, m) in enumerate(self.layers):
                line = m.get_line(ROOT)
                if line is not None:
                    return i, line
            return None
        parent = path.rpartition(b"/")[0]
        dirs = self._dirs
        last = len(self.layers) - 1
        for i, (_, m) in enumerate(self.layers):
            way = dirs.get((i, parent), -1) if parent else _REACHED
            if way < 0 and (m._small or i == last):
                # A layer is a tree: a path it holds has directories all the
                # way to it there, so the path's own line (a cheap lookup, or
                # the last layer's) decides first; the way only says whether
                # older layers show through.
                line = m.get_line(path)
                if line is not None:
                    if _WHITEOUT_K in line or (_KEY_K not in line and _is_whiteout(line)):
                        return None
                    return i, line
                if i == last or self._way(i, m, parent) & (_BLOCKED | _HIDDEN):
                    return None
                continue
            if way < 0:
                way = self._way(i, m, parent)
            if way & _BLOCKED:
                return None  # deleted or replaced here: older layers are hidden
            if not way & _MISSING:
                line = m.get_line(path)
                if line is not None:  # (a whiteout's line, if canonical, says "k":"w")
                    if _WHITEOUT_K in line or (_KEY_K not in line and _is_whiteout(line)):
                        return None
                    return i, line
            if way & _HIDDEN:
                return None
        return None

    def _way(self, i: int, m: SortedManifest, d: bytes) -> int:
        """What the path to directory ``d`` meets in layer ``i`` (``m``):
        _REACHED (every directory on the way and ``d`` itself are directories
        of the layer), or _MISSING (one is absent there) or _BLOCKED (one is
        a non-directory there), either with _HIDDEN if an opaque directory
        came first."""
        way = self._dirs.get((i, d))
        if way is not None:
            return way
        todo = [d]  # from d up to the nearest directory already known
        up = d
        while True:
            up = up.rpartition(b"/")[0]
            if not up:
                way = _REACHED
                break
            known = self._dirs.get((i, up))
            if known is not None:
                way = known
                break
            todo.append(up)
        for a in reversed(todo):
            if not way & (_MISSING | _BLOCKED):
                line = m.get_line(a)
                if line is None:
                    way |= _MISSING
                elif _DIR_K in line and _XATTRS_K not in line:  # a canonical directory's
                    if _OPAQUE_K in line:
                        way |= _HIDDEN
                else:
                    kind, opaque = line_kind(line)
                    if kind is not Kind.DIR:
                        way |= _BLOCKED
                    elif opaque:
                        way |= _HIDDEN
            self._dirs[(i, a)] = way
        return way

    def visible_below(self, path: bytes) -> Iterator[bytes]:
        """Paths strictly below ``path`` that this chain shows."""
        seen: set[bytes] = set()
        for _, m in self.layers:
            for e in m.below(path):
                if e.path not in seen:
                    seen.add(e.path)
                    if self.locate_line(e.path) is not None:
                        yield e.path


def as_shown(e: Entry) -> Entry:
    """An entry as a tree read shows it: hardlink leaders are a layer's own
    bookkeeping, never part of a change."""
    return replace(e, link=None) if e.link is not None else e


def unshared_manifests(a: ManifestChain, b: ManifestChain) -> list[SortedManifest]:
    """The manifests of the layers above the bottom run the two chains share:
    ``a``'s, then ``b``'s (what a diff between them reads whole)."""
    bottom_a = [lid for lid, _ in reversed(a.layers)]
    bottom_b = [lid for lid, _ in reversed(b.layers)]
    common = 0
    while common < min(len(bottom_a), len(bottom_b)) and bottom_a[common] == bottom_b[common]:
        common += 1
    return [m for _, m in a.layers[: len(a.layers) - common]] + [
        m for _, m in b.layers[: len(b.layers) - common]
    ]


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
    unshared = unshared_manifests(old, new)
    candidates: set[bytes] = set()
    expand: set[bytes] = set()
    for m in unshared:
        candidates.add(ROOT)
        for path, _, hides in m.outline():  # lines not decoded: most are no change
            candidates.add(path)
            if hides:
                expand.add(path)
    if under:
        candidates = {p for p in candidates if on_the_way(p, under)}
    for top in sorted(expand):  # in path order: the manifests are searched forward
        if not on_the_way(top, under):
            continue
        for chain in (old, new):
            loc = chain.locate_line(top)
            if loc is not None and line_kind(loc[1])[0] is Kind.DIR:
                candidates.update(p for p in chain.visible_below(top) if on_the_way(p, under))
    if skip:
        skipped = in_or_below_any(skip)
        candidates = {p for p in candidates if not skipped(p)}
    changes = []
    for p in sorted(candidates):
        if under and not any(is_under(p, u) for u in under):
            continue  # an ancestor of a selected path: only needed for the walk
        lo = old.locate_line(p)
        ln = new.locate_line(p)
        if lo is None:
            if ln is None:
                continue
        elif ln is not None:
            if old.layers[lo[0]][0].hex == new.layers[ln[0]][0].hex:
                continue  # the very same entry of a layer both chains have
            if lo[1] == ln[1] or _MTIME.sub(b"", lo[1]) == _MTIME.sub(b"", ln[1]):
                continue  # equal but for mtime (a directory whose files changed)
        eo = old.locate(p)
        en = new.locate(p)
        c = classify(
            p, as_shown(eo[1]) if eo is not None else None, as_shown(en[1]) if en else None
        )
        if c is not None:
            changes.append(c)
    return changes
