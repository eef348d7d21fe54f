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
  equals its HEAD entry), and the directory's changes as that scan found
  them (replayed while the directory stays as recorded).

A scan trusts a recorded stat only while it is unchanged and not *racy*
(git's rule): an mtime or ctime not older than the index's reference time
(a timestamp of the store's filesystem taken before the stats were read,
less a slack when the workspace is on another filesystem) may hide an edit
made in the same clock tick, so such a child is hashed again. A child whose
stat is all zeros is *unverified* (never trusted).

On disk: ``MAGIC``, the lengths of the two sections (two little-endian
u64), the XXH3-64 of both sections (16 hex digits) and a newline; then the
records (``marshal``: head snapshot id, reference ns, slack ns, {dir: (head
map ref, scan record with refs)}) and the blob area the refs ((offset,
length)) point into. The file is mapped, not read: a status copies only the
blobs it uses (names and stats of each directory; head maps only where it
looks into a directory). A missing, damaged or foreign index is rebuilt
from HEAD's manifests (:func:`snapws.backends.plain.headtree.rebuild_index`).
"""

from __future__ import annotations

import bisect
import contextlib
import marshal
import mmap
import os
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import xxhash

from snapws.ids import ContentHash, SnapshotId
from snapws.model import ROOT, Entry, Kind

MAGIC = b"snapws-plain-index 4\n"
INDEX_NAME = "index"
TMP_PREFIX = ".index.tmp-"
VIRTUAL = b""  # the parent of the root: its only child is b"."
NFIELDS = 5
ZERO_STAT = (0,) * NFIELDS
RECORD_SIZE = 8 * NFIELDS  # bytes of one child's packed stats
ZERO_RECORD = bytes(RECORD_SIZE)
#: Added to racy checks when the workspace is on another filesystem than the
#: store (another timestamp granularity): covers up to 2 s granularity.
FOREIGN_SLACK_NS = 2_000_000_000
_M64 = 1 << 64
_H63 = 1 << 63

EntryTuple = tuple[Any, ...]
StatKey = tuple[int, ...]
#: Bulk data of the index: bytes, or a zero-copy view of the mapped file.
Blob = bytes | memoryview
_HEADER = struct.Struct("<QQ")  # lengths of the records section and of the blob area


# ---- entries and stats in compact form ---------------------------------------


def entry_tuple(e: Entry) -> EntryTuple:
    """The compact, marshal-able form of an entry (path, ``opaque`` and
    ``link`` are not kept: they do not make two trees differ)."""
    return (
        e.kind.value,
        e.mode,
        e.uid,
        e.gid,
        e.mtime_ns,
        e.size,
        e.hash.hex if e.hash is not None else None,
        e.target,
        e.rdev,
        tuple(sorted(e.xattrs.items())),
    )


def tuple_entry(path: bytes, t: EntryTuple) -> Entry:
    """Inverse of :func:`entry_tuple` for the entry at ``path``."""
    kind, mode, uid, gid, mtime_ns, size, digest, target, rdev, xattrs = t
    return Entry(
        path=path,
        kind=Kind(kind),
        mode=mode,
        uid=uid,
        gid=gid,
        mtime_ns=mtime_ns,
        size=size,
        hash=ContentHash(digest) if digest is not None else None,
        target=target,
        rdev=tuple(rdev) if rdev is not None else None,
        xattrs=dict(xattrs),
    )


def _signed(v: int) -> int:
    return ((v + _H63) % _M64) - _H63


def stat_key(st: os.stat_result) -> StatKey:
    """The five recorded stat fields of ``st`` (as :func:`unpack_stats` gives them back)."""
    return (
        _signed(st.st_size),
        _signed(st.st_mtime_ns),
        _signed(st.st_ctime_ns),
        _signed(st.st_ino),
        _signed(st.st_mode),
    )


def pack_stats(vals: list[int]) -> bytes:
    """Pack raw stat values (five per child) as signed 64-bit integers;
    values outside that range (huge inode numbers) wrap around."""
    try:
        return struct.pack(f"{len(vals)}q", *vals)
    except (struct.error, OverflowError):
        return struct.pack(f"{len(vals)}Q", *(v % _M64 for v in vals))


def unpack_stats(blob: Blob) -> list[StatKey]:
    """Inverse of :func:`pack_stats`: one 5-tuple per child."""
    flat = struct.unpack(f"{len(blob) // 8}q", blob)
    return [flat[i : i + NFIELDS] for i in range(0, len(flat), NFIELDS)]


def _plain(t: tuple[Any, ...]) -> tuple[Any, ...]:
    """Blobs as bytes (comparing views item by item is slow)."""
    return tuple(bytes(x) if isinstance(x, memoryview) else x for x in t)


def join_names(names: list[bytes]) -> bytes:
    """The recorded form of a directory's names (see the module docstring)."""
    return b"\0".join(names)


def split_names(blob: Blob) -> list[bytes]:
    """Inverse of :func:`join_names`."""
    return bytes(blob).split(b"\0") if blob else []


def child_path(parent: bytes, name: bytes) -> bytes:
    """Path of ``name`` in directory ``parent`` (``b""`` is the root's parent)."""
    if parent in (VIRTUAL, ROOT):
        return name
    return parent + b"/" + name


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """(parent directory, name) of ``path``; the root's parent is ``b""``."""
    if path == ROOT:
        return VIRTUAL, ROOT
    i = path.rfind(b"/")
    return (ROOT, path) if i < 0 else (path[:i], path[i + 1 :])


# ---- scan records --------------------------------------------------------------


class ScanRecord:
    """What the last scan saw in one directory (see the module docstring).

    ``changes``, when set, holds the directory's changes against HEAD as
    that scan found them (its children's, and the subtrees of children
    that are gone): a scan that finds the directory as recorded replays
    them instead of comparing child by child. Anything that moves HEAD's
    entries drops it (:meth:`Index.drop_replays`)."""

    __slots__ = ("changed", "changes", "dirty", "maxtime", "names", "stats")

    def __init__(
        self,
        names: Blob,
        stats: Blob,
        maxtime: int,
        dirty: Blob | None,
        changed: bool,
        changes: Blob | None = None,
    ) -> None:
        self.names = names
        self.stats = stats
        self.maxtime = maxtime
        self.dirty = dirty  # marshal blob of {name: work entry tuple}, or None
        self.changed = changed  # some child differs from HEAD (dirty or deleted)
        self.changes = changes  # marshal blob of change tuples (see scan.py), or None

    def to_tuple(self) -> tuple[Blob, Blob, int, Blob | None, bool, Blob | None]:
        return (self.names, self.stats, self.maxtime, self.dirty, self.changed, self.changes)

    def same(self, other: ScanRecord | None) -> bool:
        return other is not None and _plain(self.to_tuple()) == _plain(other.to_tuple())

    def matches(self, names: bytes, stats: bytes) -> bool:
        """True if the directory lists exactly ``names`` with ``stats``."""
        return bytes(self.stats) == stats and bytes(self.names) == names

    def dirty_map(self) -> dict[bytes, EntryTuple]:
        return marshal.loads(self.dirty) if self.dirty else {}

    @classmethod
    def build(
        cls,
        names: list[bytes],
        keys: list[StatKey],
        dirty: dict[bytes, EntryTuple],
        changed: bool,
    ) -> ScanRecord:
        """A record from per-child stat keys (``ZERO_STAT``: unverified),
        with no replayable changes."""
        flat = [v for k in keys for v in k]
        maxtime = max((max(k[1], k[2]) for k in keys if k != ZERO_STAT), default=0)
        return cls(
            join_names(names),
            pack_stats(flat),
            maxtime,
            marshal.dumps(dirty) if dirty else None,
            changed or bool(dirty),
        )


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

    def rebase(self, old_heads: dict[bytes, EntryTuple | None]) -> None:
        """After HEAD's entries of some paths changed (``old_heads``: what
        they were), keep what the last scan saw of them: a child recorded
        equal to its old HEAD entry, or recorded with its own working entry,
        is compared with the new HEAD entry. Stats stay, so nothing is read
        again (a commit of what the scan saw leaves the index clean)."""
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
                differs = new is None or (
                    classify(p, tuple_entry(p, new), tuple_entry(p, work)) is not None
                )
                if differs:
                    dirty[name] = work
                else:
                    dirty.pop(name, None)
            heads = self.head_map(d)
            changed = bool(dirty) or any(n not in where for n in heads)
            self.set_scan(d, ScanRecord.build(names, keys, dirty, changed))

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
            self.set_scan(d, ScanRecord.build(old_names, keys, dirty, True))

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
                )
            dirs[d] = (ref(blob), sref)
        records = marshal.dumps((self.head.hex, self.ref_ns, self.slack_ns, dirs))
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
        if len(view) < start or view[: len(MAGIC)] != MAGIC or view[start - 1] != 0x0A:
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
            head_hex, ref_ns, slack_ns, raw = marshal.loads(view[start : start + nrec])
            dirs: dict[bytes, list[Any]] = {}
            for d, (href, sref) in raw.items():
                scan = None
                if sref is not None:
                    names, stats, maxtime, dirty, changed, replay = sref
                    scan = ScanRecord(
                        at(names) or b"", at(stats) or b"", maxtime, at(dirty), changed, at(replay)
                    )
                dirs[d] = [at(href), scan]
            return cls(SnapshotId(head_hex), int(ref_ns), int(slack_ns), dirs)
        except (ValueError, TypeError, EOFError, IndexError):
            return None


def index_path(wsdir: Path) -> Path:
    return wsdir / INDEX_NAME


def load_index(wsdir: Path, head: SnapshotId) -> Index | None:
    """The workspace's index if it is readable and describes ``head``. The
    file is mapped, not read: a status touches only the pages it compares."""
    try:
        with open(index_path(wsdir), "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    index = Index.decode(data)
    if index is None or index.head != head:
        return None
    return index


class IndexWriter:
    """One write of the index: the temp file is created first, so that its
    timestamp (the store filesystem's clock, before any stat is read) is the
    reference time of the stats the coming scan records."""

    def __init__(self, wsdir: Path, fd: int, tmp: Path, ref_ns: int, slack_ns: int) -> None:
        self.wsdir = wsdir
        self.fd = fd
        self.tmp = tmp
        self.ref_ns = ref_ns
        self.slack_ns = slack_ns

    @classmethod
    def begin(cls, wsdir: Path, workspace: Path) -> IndexWriter | None:
        """Create the temp file and take the reference time. None when the
        store is not writable here (a read-only status: no refresh)."""
        tmp = wsdir / f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        st = os.fstat(fd)
        try:
            same_fs = os.stat(workspace).st_dev == st.st_dev
        except OSError:
            same_fs = False
        ref = max(st.st_mtime_ns, st.st_ctime_ns)
        return cls(wsdir, fd, tmp, ref, 0 if same_fs else FOREIGN_SLACK_NS)

    def commit(self, index: Index, durable: bool = False) -> None:
        """Write ``index`` and rename it into place (fsync'd if ``durable``)."""
        try:
            view = memoryview(index.encode())
            while view:
                view = view[os.write(self.fd, view) :]
            if durable:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
        os.rename(self.tmp, index_path(self.wsdir))
        if durable:
            dfd = os.open(self.wsdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        index.modified = False
        _sweep_tmp(self.wsdir)

    def abort(self) -> None:
        """Drop the temp file (nothing is written)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def save_index(
    wsdir: Path, index: Index, writer: IndexWriter | None = None, durable: bool = False
) -> None:
    """Write ``index`` (atomically; fsync'd only if ``durable``: an index
    lost to a power failure, or older than the workspace's HEAD, is rebuilt
    from the manifests, so it is a cache), through ``writer`` if the caller
    scanned (opened before the scan), else keeping the index's own
    reference time. Raises OSError (PermissionError where the store is not
    writable)."""
    if writer is None:
        wsdir.mkdir(parents=True, exist_ok=True)
        writer = IndexWriter.begin(wsdir, wsdir)
        if writer is None:
            raise PermissionError(f"cannot write the index in {wsdir}")
    writer.commit(index, durable)


def _sweep_tmp(wsdir: Path, age_s: float = 600.0) -> None:
    """Remove temp files of index writes that a crash left (older than ``age_s``)."""
    now = time.time()
    try:
        names = os.listdir(wsdir)
    except OSError:
        return
    for name in names:
        if name.startswith(TMP_PREFIX):
            p = wsdir / name
            try:
                if now - p.stat().st_mtime > age_s:
                    p.unlink()
            except OSError:
                continue
