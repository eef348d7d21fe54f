"""The plain backend's stat cache: ``<store>/workspaces/<id>/index``.

It holds, per directory of the workspace (``b"."`` is the root; ``b""`` is
a virtual parent whose only child ``b"."`` is the root itself):

- the **head map**: HEAD's entries of the directory's children (name ->
  compact entry tuple), so that status never decodes a manifest;
- the **scan record** of the last scan that looked at the directory: its
  names in the order the directory listed them (NUL-separated), their stats
  packed (size, mtime_ns, ctime_ns, inode, mode: five signed 64-bit integers
  each; a change of owner, mode or xattrs moves the ctime), the newest
  mtime/ctime among them, the children whose working entry differs from
  HEAD's (the *dirty* map: name -> working entry tuple; a child not in it
  equals its HEAD entry), the directory's changes as that scan found
  them (replayed while the directory stays as recorded), whether the
  names are the whole listing (no ignored entry left out: see below), and
  the children deleted and made again since HEAD (committed opaque).

A scan trusts a recorded stat only while it is unchanged and not *racy*
(git's rule): an mtime or ctime not older than the index's reference time
(a timestamp of the store's filesystem taken before the stats were read,
less a slack when the workspace is on another filesystem) may hide an edit
made in the same clock tick, so such a child is hashed again. A child whose
stat is all zeros is *unverified* (never trusted).

A directory whose own stat (in its parent's record) is unchanged and not
racy has the names of its record, if they are its whole listing: adding,
removing or renaming an entry moves the directory's mtime and ctime (and
replacing the directory moves its inode), so the scan lstats the recorded
names without reading the directory (git's untracked cache).

On disk: ``MAGIC``, the lengths of the two sections (two little-endian
u64), the XXH3-64 of both sections (16 hex digits) and a newline; then the
records (``marshal``: head snapshot id, reference ns, slack ns, {dir: (head
map ref, scan record with refs)}, and the watcher's token if any) and the
blob area the refs ((offset, length)) point into. The file is mapped, not
read: a status copies only the blobs it uses (names and stats of each
directory; head maps only where it looks into a directory). A missing,
damaged or foreign index is rebuilt from HEAD's manifests
(:func:`snapws.backends.plain.headtree.rebuild_index`).
"""

from __future__ import annotations

import bisect
import marshal
import mmap
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import xxhash

from snapws.backends.plain.records import (
    VIRTUAL,
    ZERO_STAT,
    Blob,
    EntryTuple,
    ScanRecord,
    child_path,
    entry_tuple,
    split_names,
    split_path,
    tuple_entry,
    unpack_stats,
)
from snapws.backends.plain.workentry import WorkRules, as_recorded
from snapws.ids import SnapshotId
from snapws.model import ROOT, Entry, Kind

MAGIC = b"snapws-plain-index 8\n"
#: Earlier forms still read (their scan records lack the newer fields: the
#: names of form 4 count as not the whole listing, as if an ignored entry
#: had been left out), so that an upgrade does not hash the tree again.
#: Before form 7, a user who is not root recorded owners she cannot give as
#: they are (:attr:`Index.older_form`, :meth:`Index.forget_dirty`).
_OLDER = {
    b"snapws-plain-index 4\n": 6,
    b"snapws-plain-index 5\n": 7,
    b"snapws-plain-index 6\n": 8,
    b"snapws-plain-index 7\n": 8,  # (no watcher token)
}
_FORM_7 = b"snapws-plain-index 7\n"
_FIELDS = 8  # of a scan record on disk
_HEADER = struct.Struct("<QQ")  # lengths of the records section and of the blob area


#: A watcher token as the index keeps it: (generation, sequence number,
#: ignore settings key, directories holding files with several links).
WatchToken = tuple[str, int, str, tuple[bytes, ...]]


def _watch_token(t: Any) -> WatchToken | None:
    """A recorded watcher token, if it has the right shape (else none)."""
    if (
        isinstance(t, tuple)
        and len(t) == 4
        and isinstance(t[0], str)
        and isinstance(t[1], int)
        and isinstance(t[2], str)
        and isinstance(t[3], tuple)
        and all(isinstance(d, bytes) for d in t[3])
    ):
        return (t[0], t[1], t[2], t[3])
    return None


# ---- the index ---------------------------------------------------------------


class Index:
    """HEAD's tree by directory plus the last scan's records.

    ``ref_ns``/``slack_ns``: a recorded stat with an mtime or ctime at or
    after ``ref_ns - slack_ns`` is racy. ``modified`` is set by any change
    that should be written back."""

    def __init__(
        self,
        head: SnapshotId,
        ref_ns: int = 0,
        slack_ns: int = 0,
        dirs: dict[bytes, list[Any]] | None = None,
    ) -> None:
        self.head = head
        self.ref_ns = ref_ns
        self.slack_ns = slack_ns
        # dir -> [head map blob or None, ScanRecord or None]
        self.dirs: dict[bytes, list[Any]] = dirs if dirs is not None else {}
        self._heads: dict[bytes, dict[bytes, EntryTuple]] = {}  # decoded (maybe edited)
        self._edited: set[bytes] = set()  # head maps to encode again on save
        self._keys: list[bytes] | None = None  # sorted dir keys (subtree queries)
        self.modified = False
        self.older_form = False  # read from a file of an earlier form
        #: The watcher's token the scan records are current at, with the
        #: ignore settings and the directories holding files with several
        #: links (:mod:`snapws.backends.plain.fswatch`); None: none. Any
        #: change of the records but a scan's drops it.
        self.watch: WatchToken | None = None

    @property
    def racy_from(self) -> int:
        """Stats with an mtime or ctime at or after this are racy."""
        return self.ref_ns - self.slack_ns if self.ref_ns else 1 << 62

    # -- head maps ---------------------------------------------------------
    def head_map(self, d: bytes) -> dict[bytes, EntryTuple]:
        """HEAD's children of directory ``d`` (name -> entry tuple); do not
        change the result (use :meth:`set_head`)."""
        m = self._heads.get(d)
        if m is not None:
            return m
        rec = self.dirs.get(d)
        blob = rec[0] if rec is not None else None
        m = marshal.loads(blob) if blob else {}
        self._heads[d] = m
        return m

    def _edit_map(self, d: bytes) -> dict[bytes, EntryTuple]:
        m = self.head_map(d)
        self.watch = None
        if d not in self.dirs:
            self.dirs[d] = [None, None]
            self._keys = None
        self._edited.add(d)
        self.modified = True
        return m

    def head_tuple(self, path: bytes) -> EntryTuple | None:
        d, name = split_path(path)
        return self.head_map(d).get(name)

    def head_entry(self, path: bytes) -> Entry | None:
        t = self.head_tuple(path)
        return tuple_entry(path, t) if t is not None else None

    def _sorted_keys(self) -> list[bytes]:
        if self._keys is None:
            self._keys = sorted(self.dirs)
        return self._keys

    def subdirs_of(self, path: bytes) -> list[bytes]:
        """Directory keys at or below ``path`` (``b"."``: every directory)."""
        if path == ROOT:
            return [k for k in self._sorted_keys() if k != VIRTUAL]
        keys = self._sorted_keys()
        prefix = path + b"/"
        out = []
        i = bisect.bisect_left(keys, path)
        if i < len(keys) and keys[i] == path:
            out.append(path)
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            out.append(keys[i])
            i += 1
        return out

    def head_subtree(self, path: bytes) -> Iterator[tuple[bytes, EntryTuple]]:
        """HEAD's entries strictly below directory ``path``."""
        for d in self.subdirs_of(path):
            for name, t in self.head_map(d).items():
                yield child_path(d, name), t

    def _drop_head_maps(self, path: bytes) -> None:
        """Forget HEAD's children at and below directory ``path``."""
        for d in self.subdirs_of(path):
            rec = self.dirs[d]
            rec[0] = None
            self._heads[d] = {}
            self._edited.discard(d)
            if rec[1] is None:
                del self.dirs[d]
                self._heads.pop(d, None)
                self._keys = None
        self.modified = True

    def set_head(self, path: bytes, e: Entry | EntryTuple | None) -> None:
        """Make HEAD's entry at ``path`` ``e`` (None: absent). A directory
        that stops being one takes its subtree with it; children of a
        directory are set one by one."""
        t = entry_tuple(e) if isinstance(e, Entry) else e
        old = self.head_tuple(path)
        if old is not None and old[0] == Kind.DIR.value and (t is None or t[0] != Kind.DIR.value):
            self._drop_head_maps(path)
        d, name = split_path(path)
        m = self._edit_map(d)
        if t is None:
            m.pop(name, None)
        else:
            m[name] = t

    def apply_layer(self, entries: Iterable[Entry]) -> dict[bytes, EntryTuple | None]:
        """Stack a layer (its manifest entries) on HEAD's tree by overlay
        rules: a whiteout deletes, an opaque directory replaces its subtree,
        other entries replace what was at their path. Returns HEAD's former
        entry of every path whose entry may have changed (for :meth:`rebase`)."""
        entries = sorted(entries, key=lambda x: x.path)
        old: dict[bytes, EntryTuple | None] = {}
        for e in entries:
            t = self.head_tuple(e.path)
            old.setdefault(e.path, t)
            hides = e.kind is Kind.WHITEOUT or e.opaque or e.kind is not Kind.DIR
            if t is not None and t[0] == Kind.DIR.value and hides and e.path != ROOT:
                for p, sub in self.head_subtree(e.path):
                    old.setdefault(p, sub)
        for e in entries:
            if e.kind is Kind.WHITEOUT:
                self.set_head(e.path, None)
                continue
            if e.kind is Kind.DIR and e.opaque and e.path != ROOT:
                self.set_head(e.path, None)
            self.set_head(e.path, e)
        return old

    def rebase(
        self, old_heads: dict[bytes, EntryTuple | None], rules: WorkRules | None = None
    ) -> None:
        """After HEAD's entries of some paths changed (``old_heads``: what
        they were), keep what the last scan saw of them: a child recorded
        equal to its old HEAD entry, or recorded with its own working entry,
        is compared with the new HEAD entry, read under ``rules`` (as the
        scan reads the working tree: :func:`as_recorded`; None: as it is).
        Stats stay, so nothing is read again (a commit of what the scan saw
        leaves the index clean)."""
        from snapws.model import classify

        self.drop_replays(old_heads)
        by_dir: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for p in old_heads:
            d, name = split_path(p)
            by_dir.setdefault(d, []).append((name, p))
        for d, kids in by_dir.items():
            scan = self.scan_record(d)
            if scan is None:
                continue
            names = split_names(scan.names)
            keys = unpack_stats(scan.stats)
            dirty = scan.dirty_map()
            where = {n: i for i, n in enumerate(names)}
            for name, p in kids:
                i = where.get(name)
                if i is None or keys[i] == ZERO_STAT:
                    continue
                work = dirty.get(name, old_heads[p])
                if work is None:  # recorded equal to an entry that did not exist
                    keys[i] = ZERO_STAT
                    dirty.pop(name, None)
                    continue
                new = self.head_tuple(p)
                if new is None:
                    differs = True
                else:
                    h, w = tuple_entry(p, new), tuple_entry(p, work)
                    if rules is not None:  # (an old HEAD entry may hold owners she cannot give)
                        w = as_recorded(w, h, rules)
                        work = entry_tuple(w)
                    differs = classify(p, h, w) is not None
                if differs:
                    dirty[name] = work
                else:
                    dirty.pop(name, None)
            heads = self.head_map(d)
            changed = bool(dirty) or any(n not in where for n in heads)
            self.set_scan(d, ScanRecord.build(names, keys, dirty, changed, scan.full))

    # -- scan records ------------------------------------------------------
    def scan_record(self, d: bytes) -> ScanRecord | None:
        rec = self.dirs.get(d)
        return rec[1] if rec is not None else None

    def set_scan(self, d: bytes, scan: ScanRecord | None) -> None:
        rec = self.dirs.get(d)
        if rec is None:
            if scan is None:
                return
            rec = self.dirs[d] = [None, None]
            self._keys = None
        rec[1] = scan
        self.watch = None  # (a scan sets its own after)
        if rec[0] is None and scan is None and d not in self._edited:
            del self.dirs[d]
            self._heads.pop(d, None)
            self._keys = None
        self.modified = True

    def drop_replays(self, paths: Iterable[bytes]) -> None:
        """HEAD's entries of ``paths`` changed (or what the scan saw of them
        is forgotten): the recorded changes of their directories and of every
        directory above them are no longer to be replayed."""
        seen: set[bytes] = set()
        for p in paths:
            d = p
            while d != VIRTUAL:
                d = split_path(d)[0]
                if d in seen:
                    break
                seen.add(d)
                scan = self.scan_record(d)
                if scan is not None and scan.changes is not None:
                    scan.changes = None
                    scan.changed = True
                    self.modified = True
                    self.watch = None

    def invalidate(self, paths: Iterable[bytes]) -> None:
        """Forget what the last scan saw of ``paths`` (they were rewritten,
        or HEAD's entry for them changed): the next scan looks at them again."""
        paths = list(paths)
        self.drop_replays(paths)
        by_dir: dict[bytes, set[bytes]] = {}
        for p in paths:
            d, name = split_path(p)
            by_dir.setdefault(d, set()).add(name)
        for d, names in by_dir.items():
            scan = self.scan_record(d)
            if scan is None:
                continue
            old_names = split_names(scan.names)
            keys = unpack_stats(scan.stats)
            dirty = scan.dirty_map()
            keys = [ZERO_STAT if n in names else k for n, k in zip(old_names, keys, strict=True)]
            for n in names:
                dirty.pop(n, None)
            self.set_scan(d, ScanRecord.build(old_names, keys, dirty, True, scan.full))

    def forget_dirty(self) -> None:
        """Forget what the last scan saw of every child it recorded as
        differing from HEAD (:meth:`invalidate`): the next scan reads them
        again. For an index of an earlier form read by a user who is not
        root, whose working entries took owners as they are
        (:mod:`snapws.backends.plain.owners`)."""
        paths = []
        for d, rec in self.dirs.items():
            scan = rec[1]
            if scan is not None and scan.dirty:
                paths += [child_path(d, name) for name in scan.dirty_map()]
        if paths:
            self.invalidate(paths)

    # -- building ------------------------------------------------------------
    @classmethod
    def from_entries(cls, head: SnapshotId, entries: Iterable[Entry]) -> Index:
        """An index of HEAD's full tree ``entries`` and no scan records."""
        index = cls(head)
        for e in entries:
            if e.kind is Kind.WHITEOUT:
                continue
            d, name = split_path(e.path)
            m = index._heads.get(d)
            if m is None:
                m = index._heads[d] = {}
                index.dirs[d] = [None, None]
                index._edited.add(d)
            m[name] = entry_tuple(e)
        index.modified = True
        return index

    # -- on disk -------------------------------------------------------------
    def encode(self) -> bytes:
        """The file: MAGIC, the two section lengths, the XXH3-64 of both
        sections (16 hex digits, newline), the records (marshal: head id,
        reference and slack ns, {dir: (head map ref, scan record with refs)})
        and the blob area the refs ((offset, length)) point into."""
        blobs: list[Blob] = []
        size = 0

        def ref(b: Blob | None) -> tuple[int, int] | None:
            nonlocal size
            if b is None:
                return None
            blobs.append(b)
            size += len(b)
            return (size - len(b), len(b))

        dirs: dict[bytes, tuple[Any, Any]] = {}
        for d, (blob, scan) in self.dirs.items():
            if d in self._edited:
                m = self._heads.get(d) or {}
                blob = marshal.dumps(m) if m else None
            if blob is None and scan is None:
                continue
            sref = None
            if scan is not None:
                sref = (
                    ref(scan.names),
                    ref(scan.stats),
                    scan.maxtime,
                    ref(scan.dirty),
                    scan.changed,
                    ref(scan.changes),
                    scan.full,
                    ref(scan.recreated),
                )
            dirs[d] = (ref(blob), sref)
        top: tuple[Any, ...] = (self.head.hex, self.ref_ns, self.slack_ns, dirs)
        if self.watch is not None:
            top += (self.watch,)
        records = marshal.dumps(top)
        h = xxhash.xxh3_64(records)
        for b in blobs:
            h.update(b)
        return b"".join(
            [
                MAGIC,
                _HEADER.pack(len(records), size),
                h.hexdigest().encode(),
                b"\n",
                records,
                *blobs,
            ]
        )

    @classmethod
    def decode(cls, data: bytes | mmap.mmap) -> Index | None:
        """Parse :meth:`encode` output (bytes, or a view of the mapped file:
        blobs stay views into it); None if it is not a sound index."""
        view = memoryview(data)
        start = len(MAGIC) + _HEADER.size + 17
        if len(view) < start or view[start - 1] != 0x0A:
            return None
        magic = bytes(view[: len(MAGIC)])
        fields = _FIELDS if magic == MAGIC else _OLDER.get(magic)
        if fields is None:
            return None
        nrec, nblobs = _HEADER.unpack(view[len(MAGIC) : len(MAGIC) + _HEADER.size])
        if len(view) != start + nrec + nblobs:
            return None
        h = xxhash.xxh3_64(view[start : start + nrec])
        h.update(view[start + nrec :])
        if h.hexdigest().encode() != view[start - 17 : start - 1]:
            return None
        area = view[start + nrec :]

        def at(r: Any) -> Blob | None:
            return None if r is None else area[r[0] : r[0] + r[1]]

        try:
            top = marshal.loads(view[start : start + nrec])
            head_hex, ref_ns, slack_ns, raw = top[:4]
            watch = _watch_token(top[4]) if len(top) == 5 else None
            dirs: dict[bytes, list[Any]] = {}
            for d, (href, sref) in raw.items():
                scan = None
                if sref is not None:
                    if len(sref) != fields:
                        return None
                    sref = (*sref, *(False, None)[fields - 6 :])  # (older forms)
                    names, stats, maxtime, dirty, changed, replay, full, made_again = sref
                    scan = ScanRecord(
                        at(names) or b"",
                        at(stats) or b"",
                        maxtime,
                        at(dirty),
                        changed,
                        at(replay),
                        bool(full),
                        at(made_again),
                    )
                dirs[d] = [at(href), scan]
            index = cls(SnapshotId(head_hex), int(ref_ns), int(slack_ns), dirs)
            index.older_form = magic not in (MAGIC, _FORM_7)
            index.watch = watch
            return index
        except (ValueError, TypeError, EOFError, IndexError):
            return None
